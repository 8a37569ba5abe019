"""What a stage's `init:` and `teacher:` may name: a stage of the same recipe (a plain string), a stage of another
recipe file, or a checkpoint file."""
from .sections import Strict


class OtherRecipe(Strict):
    """A stage of another recipe file (trained as part of this run unless the store already holds it)."""
    recipe: str  # its path, e.g. recipes/digits.yaml
    stage: str
    variant: str | None = None  # which sweep variant, where that recipe has several (e.g. "size=S")


class CheckpointFile(Strict):
    """A training checkpoint of scm-bench: its EMA weights are read (built with this recipe's network)."""
    checkpoint: str


StageRef = str | OtherRecipe | CheckpointFile

OUTSIDE_FORMS = "{recipe: FILE, stage: NAME} or {checkpoint: FILE}"
REF_FORMS = f"a stage of this recipe, {OUTSIDE_FORMS}"


def local(ref) -> str | None:
    """The stage name a reference gives within its own recipe, or None for an outside one (or none)."""
    return ref if isinstance(ref, str) else None

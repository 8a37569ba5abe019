"""A run's folder, runs/<recipe name>/: its manifest, run.json (written by the recipe layer: the typed plan), and
what the readers that need no method (the report) take from it: which evaluations the run planned, with their
labels. A recipe name belongs to one recipe file: a second file with the same name is refused with the fix."""
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from .atomic import read_json

MANIFEST = "run.json"


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DataIndex(_View):
    name: str  # the recipe's data.name (digits, cifar10, imagenet64, imagenet512-latents, folder, synthetic)


class TrainedIndex(_View):
    id: str
    stage: str
    size: str | None = None
    data: DataIndex | None = None  # manifests always had it; None only for a hand-written one


class EvaluationIndex(_View):
    """An evaluation the run planned: where its rows are and the run's labels for them."""
    id: str
    variant: str
    folder: str
    train: TrainedIndex
    stage: str | None = None  # the stage that asked for it (manifests written before it was recorded: None)

    @property
    def path(self) -> Path:
        return Path(self.folder)


class PlanIndex(_View):
    evaluate: list[EvaluationIndex]


class RunIndex(_View):
    """The part of a run manifest that says what the run evaluated (the full, typed plan: recipe/manifest.py)."""
    recipe: str
    source: str
    smoke: bool = False
    plan: PlanIndex


class RunError(ValueError):
    """A run folder that cannot be used as asked; the message is one line with the fix."""


def manifest_path(runs_root: Path, name: str) -> Path:
    return Path(runs_root) / name / MANIFEST


def read_index(runs_root: Path, name: str) -> RunIndex | None:
    """What the run named `name` evaluated, or None when it never ran under this runs folder."""
    data = read_json(manifest_path(runs_root, name))
    if data is None:
        return None
    try:
        return RunIndex.model_validate(data)
    except ValidationError as error:
        raise RunError(f"{manifest_path(runs_root, name)}: cannot be read ({error.errors()[0]['msg']}); run the "
                       "recipe again to rewrite it") from None


def check_owner(runs_root: Path, name: str, source: Path) -> None:
    """Refuse a recipe file whose name already belongs to another file's runs."""
    owner = (read_json(manifest_path(runs_root, name)) or {}).get("source")
    if owner and Path(owner) != Path(source).resolve():
        raise RunError(f"{source}: the recipe name {name!r} already belongs to the runs of {owner} "
                       f"({manifest_path(runs_root, name)}); give this recipe its own name: (e.g. name: "
                       f"{name}-copy), or use another --runs-dir")


def manifests(runs_root: Path) -> list[str]:
    """The names of every recipe with a manifest under the runs folder."""
    return sorted(path.parent.name for path in Path(runs_root).glob(f"*/{MANIFEST}"))

"""A recipe's sweep: the grid of variants it expands to (sizes, methods, guidance scales, seeds, ...).

    sweep:
      network.size: [S, M]            # one dotted key, one value per variant
      seed: [0, 1]
      size:                           # an axis whose entries change several keys together (named by
        - {network.size: S, stages.student.dropout: 0.25}     # their first value, or by a `label:` key)
        - {network.size: M, stages.student.dropout: 0.35}
      objective:                      # a stage's method too; a key set to null takes its default (here:
        - {stages.student.method: sct}                 # unsets sCT's tangent, which discrete-time CT lacks)
        - {stages.student.method: discrete-ct, stages.student.discrete_steps: 64, stages.student.tangent: null}

The variants are the Cartesian product of the axes, in the order written.
"""
import copy
import itertools

from pydantic import ValidationError

from .load import first_error
from .schema import Recipe
from .text import RecipeError, set_dotted


def value_label(value) -> str:
    """A value as a variant label shows it: lists without commas (labels are joined by commas)."""
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(value_label(v) for v in value) + "]"
    return str(value)


def entry_label(entry: dict) -> str:
    """An axis entry's name: its `label` if given, else its first value (`{network.size: S, ...}` -> S)."""
    return value_label(entry["label"] if "label" in entry else next(iter(entry.values())))


def _axis_entries(axis: str, values: list) -> list[tuple[str, dict]]:
    """(label, {dotted key: value}) for each entry of one axis; two entries with one label are refused."""
    if not values:
        raise RecipeError(f"sweep.{axis}: empty list; give at least one value")
    entries = []
    for value in values:
        if isinstance(value, dict):
            changes = {k: v for k, v in value.items() if k != "label"}
            if not changes and "label" not in value:
                raise RecipeError(f"sweep.{axis}: an entry is an empty mapping; give dotted keys and values")
            entries.append((f"{axis}={entry_label(value)}", changes))
        else:
            entries.append((f"{axis}={value_label(value)}", {axis: value}))
    labels = [label for label, _ in entries]
    twice = next((label for label in labels if labels.count(label) > 1), None)
    if twice is not None:
        raise RecipeError(f"sweep.{axis}: two entries are labelled {twice.split('=', 1)[1]!r}; give each entry its "
                          "own label: (e.g. {label: small, ...})")
    return entries


def axis_values(variant: str) -> dict[str, str]:
    """{axis: entry label} of a variant label such as "size=S,seed=1"."""
    return dict(part.split("=", 1) for part in variant.split(",") if "=" in part)


def expand_sweep(recipe: Recipe) -> list[Recipe]:
    """Every variant of the recipe, validated; a recipe without a sweep is its own single variant."""
    if not recipe.sweep:
        return [recipe]
    # only what the recipe sets: defaults would carry one method's keys into a variant with another method
    base = recipe.model_dump(exclude={"sweep", "variant"}, exclude_unset=True)
    axes = [_axis_entries(axis, values) for axis, values in recipe.sweep.items()]
    variants = []
    for combination in itertools.product(*axes):
        raw = copy.deepcopy(base)
        label = ",".join(name for name, _ in combination)
        for _, changes in combination:
            for key, value in changes.items():
                set_dotted(raw, key, value, f"{recipe.name}: sweep {label}")
        try:
            variants.append(Recipe.model_validate({**raw, "variant": label}))
        except ValidationError as e:
            raise RecipeError(f"{recipe.name}: sweep variant {label}: {first_error(e)}") from None
    return variants

"""A recipe's sweep: the grid of variants it expands to (sizes, methods, guidance scales, seeds, ...).

    sweep:
      network.size: [S, M]            # one dotted key, one value per variant
      seed: [0, 1]
      size:                           # an axis whose entries change several keys together (named by
        - {network.size: S, stages.sct.dropout: 0.25}     # their first value, or by a `label:` key)
        - {network.size: M, stages.sct.dropout: 0.35}
      method: [sct, scd]              # which student stage a variant trains

The variants are the Cartesian product of the axes, in the order written.
"""
import copy
import itertools

from pydantic import ValidationError

from .recipe import Recipe, RecipeError, _first_error
from .recipe_yaml import set_dotted

STUDENTS = ("sct", "scd")


def entry_label(entry: dict) -> str:
    """An axis entry's name: its `label` if given, else its first value (`{network.size: S, ...}` -> S)."""
    return str(entry["label"]) if "label" in entry else str(next(iter(entry.values())))


def _axis_entries(axis: str, values: list) -> list[tuple[str, dict]]:
    """(label, {dotted key: value}) for each entry of one axis."""
    if not values:
        raise RecipeError(f"sweep.{axis}: empty list; give at least one value")
    entries = []
    for value in values:
        if axis == "method":
            if value not in STUDENTS:
                raise RecipeError(f"sweep.method: {value!r} is not a student method; use sct or scd")
            entries.append((f"method={value}", {f"stages.{other}": None for other in STUDENTS if other != value}))
        elif isinstance(value, dict):
            changes = {k: v for k, v in value.items() if k != "label"}
            if not changes and "label" not in value:
                raise RecipeError(f"sweep.{axis}: an entry is an empty mapping; give dotted keys and values")
            entries.append((f"{axis}={entry_label(value)}", changes))
        else:
            entries.append((f"{axis}={value}", {axis: value}))
    return entries


def expand_sweep(recipe: Recipe) -> list[Recipe]:
    """Every variant of the recipe, validated; a recipe without a sweep is its own single variant."""
    if not recipe.sweep:
        return [recipe]
    base = recipe.model_dump(exclude={"sweep", "variant"})
    # the method axis goes last: it removes a student stage that other axes may still set keys in
    ordered = sorted(recipe.sweep.items(), key=lambda item: item[0] == "method")
    axes = [_axis_entries(axis, values) for axis, values in ordered]
    variants = []
    for combination in itertools.product(*axes):
        raw = copy.deepcopy(base)
        label = ",".join(name for name, _ in combination)
        for _, changes in combination:
            for key, value in changes.items():
                set_dotted(raw, key, value, f"{recipe.name}: sweep {label}")
        if recipe.sweep.get("method") and not any(raw["stages"].get(m) for m in STUDENTS):
            method = label.split("method=")[1].split(",")[0]
            raise RecipeError(f"{recipe.name}: sweep {label}: the recipe has no stages.{method}")
        try:
            variants.append(Recipe.model_validate({**raw, "variant": label}))
        except ValidationError as e:
            raise RecipeError(f"{recipe.name}: sweep variant {label}: {_first_error(e)}") from None
    return variants

"""Loading a recipe file: text (text.py) -> `--set` overrides -> the schema, with one-line errors that name the file
and the field (and a "did you mean" for a misspelt key)."""
import difflib
import re
from pathlib import Path

from pydantic import BaseModel, ValidationError

from scm.methods import BUILT_IN

from .schema import Recipe, Stage
from .text import RecipeError, apply_overrides, parse_yaml

RECIPES = Path(__file__).resolve().parents[2] / "recipes"  # the shipped recipes: examples that errors point to


def _model_fields(model, seen: set) -> set[str]:
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for sub in getattr(info.annotation, "__args__", None) or (info.annotation,):
            if isinstance(sub, type) and issubclass(sub, BaseModel) and sub not in seen:
                seen.add(sub)
                names |= _model_fields(sub, seen)
    return names


def field_names() -> set[str]:
    """Every field name of the schema and of the built-in methods' settings (for "did you mean")."""
    seen: set = set()
    names = _model_fields(Recipe, seen) | _model_fields(Stage, seen)
    for method in BUILT_IN.values():
        names |= _model_fields(method.Settings, seen) | _model_fields(method.Sampling, seen)
    return names - {"settings"}


def _methods_with(key: str) -> list[str]:
    """The built-in methods whose own settings have this key."""
    return sorted(name for name, method in BUILT_IN.items() if key in method.Settings.model_fields)


def _example(key: str) -> str:
    """A shipped recipe that sets this key (digits.yaml when none does)."""
    pattern = re.compile(rf"[\s.{{]{re.escape(key)}:")
    found = [path for path in sorted(RECIPES.glob("*.yaml")) if pattern.search(path.read_text())]
    return f"recipes/{found[0].name if found else 'digits.yaml'}"


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    key = str(error["loc"][-1]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        owners = _methods_with(key)
        if owners and error["loc"][0] == "stages":
            return (f"{where}: unknown field for this stage's method ({key} is a setting of {', '.join(owners)}); "
                    "remove it or change the stage's method")
        close = difflib.get_close_matches(key, sorted(field_names()), n=1)
        hint = f"did you mean {close[0]}?" if close else "check its spelling against recipes/digits.yaml"
        return f"{where}: unknown field ({hint})"
    if error["type"] == "missing":
        return f"{where}: required field is missing; add it (see {_example(key)} for an example)"
    if error["type"] in ("literal_error", "enum") and "input" in error:
        return f"{where}: {error['input']!r} is not allowed; {message[0].lower()}{message[1:]}"
    return f"{where}: {message}" if where else message


def first_error(e: ValidationError) -> str:
    """The most useful error first: a misspelt key explains the 'missing' error it causes."""
    errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return _describe(errors[0]) + more


def validate(raw: dict, where: str) -> Recipe:
    """A recipe from its fields, or RecipeError naming `where` and the field."""
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(f"{where}: {first_error(e)}") from None


def read_raw(path: str | Path, overrides: list[str] = ()) -> dict:
    """A recipe file's fields with `--set` overrides applied (not yet validated); RecipeError on any problem."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory, not a recipe file; give a YAML file such as recipes/digits.yaml")
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found; give a path such as recipes/digits.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file; give a YAML recipe such as recipes/digits.yaml") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raise RecipeError(f"{path}: the file is empty; a recipe is a YAML mapping of fields, e.g. recipes/digits.yaml")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of fields, got {type(raw).__name__}; "
                          "see recipes/digits.yaml")
    raw.setdefault("name", path.stem)
    return apply_overrides(raw, list(overrides), path)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Parse and validate a recipe file (with `--set` overrides applied first); RecipeError with a one-line message
    on any problem."""
    return validate(read_raw(path, overrides), str(path))

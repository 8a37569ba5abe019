"""Reading a recipe's text: safe YAML that refuses duplicate keys and gives the line of an error, and `--set`
overrides of dotted keys. What the values mean is the schema's business (schema.py)."""
from pathlib import Path

import yaml


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is one line naming the file, the field and the fix."""


class _RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader (plain values only, no tags that build objects) that also refuses a key given twice, which
    plain YAML would let the last one win silently."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_yaml(text: str, where: str):
    """Safe YAML (as yaml.safe_load, plus no duplicate keys), with errors that give the line and a fix."""
    loader = None
    try:  # the reader already refuses control characters (a NUL byte, say) when it is made
        loader = _RecipeLoader(text)
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        line = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
        problem = e.problem or str(e).splitlines()[0]
        if "!!python" in problem or "constructor for the tag" in problem:
            fix = "tags such as !!python/... are refused; use plain numbers, strings, lists and mappings"
        elif "\\t" in problem or "\t" in problem:
            fix = "use spaces to indent, not tabs"
        elif "twice" in problem:
            fix = "remove the duplicate"
        else:
            fix = "check the syntax there (indent with spaces; quote values that contain ': ' or ' #')"
        raise RecipeError(f"{where}: not valid YAML{line}: {problem}; {fix}") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise RecipeError(f"{where}: not valid YAML at line {line}: it holds the control character "
                          f"{chr(e.character)!r}; remove it (a recipe is plain text)") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{where}: not valid YAML ({str(e).splitlines()[0]}); check its syntax") from None
    finally:
        if loader is not None:
            loader.dispose()


def set_dotted(raw: dict, key: str, value, where: str) -> None:
    """raw["a"]["b"]["c"] = value for key "a.b.c", making the mappings on the way; a null value removes the key,
    so it takes its default (a sweep that changes a stage's method unsets the old method's keys this way)."""
    *parents, leaf = key.split(".")
    node = raw
    for depth, part in enumerate(parents):
        if node.get(part) is None:  # absent or null (an optional section left out): start it
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise RecipeError(f"{where}: {'.'.join(parents[:depth + 1])} is not a mapping; set that key itself, "
                              f"e.g. --set {'.'.join(parents[:depth + 1])}=VALUE")
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def apply_overrides(raw: dict, overrides: list[str], path: Path) -> dict:
    """`--set stages.teacher.steps=500`: dotted key, YAML value (so 1e-4, [1, 2] and true parse as such)."""
    given = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise RecipeError(f"{path}: --set {item!r}: expected key=value with a dotted key, "
                              "e.g. --set stages.teacher.steps=500")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise RecipeError(f"{path}: --set {item!r}: the value is not valid YAML; quote it, "
                              f"e.g. --set '{key}=\"{text}\"'") from None
        if key in given and given[key] != value:
            raise RecipeError(f"{path}: --set {key} is given twice ({given[key]!r} and {value!r}); give it once")
        clash = next((k for k in _swept_keys(raw.get("sweep")) if _overlaps(key, k)), None)
        if clash is not None:
            raise RecipeError(f"{path}: --set {key} conflicts with the recipe's sweep, which sets {clash} in every "
                              f"variant; remove the --set, or change the sweep itself (--set sweep...)")
        given[key] = value
        set_dotted(raw, key, value, f"{path}: --set {item!r}")
    return raw


def _swept_keys(sweep) -> list[str]:
    """The dotted keys a sweep sets: plain axes name their key, named axes the keys of their entries."""
    if not isinstance(sweep, dict):
        return []
    keys = []
    for axis, values in sweep.items():
        entries = [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []
        keys += sorted({k for entry in entries for k in entry if k != "label"}) if entries else [str(axis)]
    return keys


def _overlaps(key: str, swept: str) -> bool:
    if key.startswith("sweep.") or key == "sweep":
        return False
    return key == swept or key.startswith(swept + ".") or swept.startswith(key + ".")

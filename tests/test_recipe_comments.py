"""Every number in a recipe says where it comes from: each recipes/*.yaml line that holds a number carries a comment.

The rule that test_every_numeric_recipe_line_is_commented enforces:

- A line holds a number when a YAML scalar that starts on it is a number: an int or a float as YAML resolves it
  (`steps: 1200`, `lr: 2.0e-3`, `p_mean: -0.8`), or a plain (unquoted) scalar that Python's float() reads (`1e-4`,
  which PyYAML keeps as a string). Scalars inside a flow mapping or list count for the line they are on
  (`optimizer: {name: adam, lr: 2.0e-3}`, `channel_mult: [1, 2]`). Booleans, null and names with digits
  (`cifar10`, `refs/img512.npz`) are not numbers.
- Such a line must carry a comment on that same line: a `#` after its last YAML token (YAML's comment syntax; a `#`
  inside a quoted or plain scalar does not count). A comment line above it does not count.
- Sweep entries (the items of an axis under the top-level `sweep:`): an entry written on one line (a flow mapping of
  overrides, `- {label: w8, network.channels: 8}`, or a scalar item) is covered by a comment on its axis's key line
  (`size:  # four widths ...`), which speaks for all of that axis's one-line entries; without that comment each
  such entry needs its own. The lines of an entry written over several lines (a block mapping, `- network.size: S`
  then `  stages.teacher.steps: ...`: a bundle whose values have different sources) each need their own comment,
  whatever the axis line says.
- Comment lines, blank lines and lines without a number are free.
"""
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


def _is_number(node: yaml.ScalarNode) -> bool:
    if node.tag in NUMBER_TAGS:
        return True
    if node.tag != "tag:yaml.org,2002:str" or node.style is not None:  # quoted strings are strings
        return False
    try:
        float(node.value)
    except ValueError:
        return False
    return node.value.strip().lower().lstrip("+-") not in ("nan", "inf", "infinity")  # words, not numbers


def _numeric_lines(node: yaml.Node, lines: set[int]) -> set[int]:
    """The (0-based) lines on which a numeric scalar of `node` starts."""
    if isinstance(node, yaml.ScalarNode):
        if _is_number(node):
            lines.add(node.start_mark.line)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _numeric_lines(item, lines)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _numeric_lines(key, lines)
            _numeric_lines(value, lines)
    return lines


def _commented_lines(text: str) -> set[int]:
    """The (0-based) lines with a comment after their last YAML token (a comment-only line counts too)."""
    last_end: dict[int, int] = {}
    for token in yaml.scan(text):
        end = token.end_mark
        last_end[end.line] = max(last_end.get(end.line, 0), end.column)
    return {i for i, line in enumerate(text.splitlines()) if line[last_end.get(i, 0):].lstrip().startswith("#")}


def _sweep_exempt_lines(root: yaml.Node, commented: set[int]) -> set[int]:
    """The lines of one-line sweep entries whose axis key line carries a comment (see the module docstring)."""
    exempt: set[int] = set()
    if not isinstance(root, yaml.MappingNode):
        return exempt
    for key, value in root.value:
        if not (isinstance(key, yaml.ScalarNode) and key.value == "sweep" and isinstance(value, yaml.MappingNode)):
            continue
        for axis, entries in value.value:
            if axis.start_mark.line not in commented or not isinstance(entries, yaml.SequenceNode):
                continue
            for entry in entries.value:
                one_line = entry.start_mark.line == entry.end_mark.line
                if one_line and (isinstance(entry, yaml.ScalarNode) or entry.flow_style):
                    exempt.add(entry.start_mark.line)
    return exempt


def uncommented_numeric_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) of every line that holds a number but carries no comment, under the rule above."""
    root = yaml.compose(text)
    if root is None:
        return []
    commented = _commented_lines(text)
    numeric = _numeric_lines(root, set())
    exempt = _sweep_exempt_lines(root, commented)
    lines = text.splitlines()
    return [(i + 1, lines[i]) for i in sorted(numeric - commented - exempt)]


def test_the_rule_on_examples():
    text = """\
name: cifar10_run          # digits in a name are not a number
seed: 0
steps: 1200  # ok
lr: 1e-4
label: "1.5"
flag: true
optimizer: {name: adam, lr: 2.0e-3}
channel_mult: [1, 2]   # ok
note: a # hash inside text, then a comment
url: http://x#y
# commented: 3
sweep:
  width:                 # widths of the toy U-Net
    - {label: w8, network.channels: 8}
    - 16
  seed:
    - {label: 0, stages.a.seed: 0}
  size:                  # per-size bundles: each line its own source
    - network.size: S    # ok
      stages.teacher.steps: 100
"""
    offenders = uncommented_numeric_lines(text)
    assert [number for number, _ in offenders] == [2, 4, 7, 17, 20]
    assert offenders[0] == (2, "seed: 0")


def test_the_rule_reads_a_hash_only_after_the_last_token():
    assert uncommented_numeric_lines("a: 'x # y'\nb: 2 # fine\nc: [1, '#']\n") == [(3, "c: [1, '#']")]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_numeric_recipe_line_is_commented(path):
    offenders = uncommented_numeric_lines(path.read_text())
    where = "\n".join(f"  {path.relative_to(ROOT)}:{number}: {line.strip()}" for number, line in offenders)
    assert not offenders, f"numeric lines without a comment (say where the number comes from):\n{where}"

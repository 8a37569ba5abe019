"""The shape of the house, read from the source with ast: no import cycles, scm/ never imports harness/, the
harness's layers import only downward, internal imports inside functions only where the CLI keeps torch off its
fast path, short modules and functions, and the built-in methods' names never used as branches in harness/."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the harness's layers, bottom first: a module may import its own layer and the layers below it
LAYERS = ["store", "data", "recipe", "compute", "evaluation", "run", "report", "tools", "cli"]
BUILT_IN_NAMES = {"diffusion", "sct", "scd", "discrete-ct", "teacher"}
# internal imports a function may make: the CLI's commands load the layers (and torch) only when they run; the
# attention op loads its Triton kernel only on CUDA
FUNCTION_IMPORTS_ALLOWED = ("harness/cli/", "scm/kernels/attention.py")


def _modules() -> dict[str, Path]:
    paths = sorted([*ROOT.glob("scm/**/*.py"), *ROOT.glob("harness/**/*.py")])
    names = {}
    for path in paths:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported internal module, line, inside a function) for every import of the file."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            base = ".".join(part for part in (base, node.module or "") if part)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved and resolved != module and not module.startswith(resolved + "."):
                found.append((resolved, node.lineno, id(node) in inside))
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _, _ in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "harness" and len(parts) > 1 else None


def test_the_graph_is_read():
    """The reader sees what is there (so the checks below can fail): the CLI imports the run layer, in a function."""
    assert len(MODULES) > 60
    assert ("harness.run.runner", True) in {(target, inner) for target, _, inner in GRAPH["harness.cli.run"]}


def test_no_import_cycles():
    assert _cycles() == []


def test_scm_never_imports_the_harness():
    assert [(m, t) for m, edges in GRAPH.items() if m.startswith("scm") for t, _, _ in edges
            if t.startswith("harness")] == []


def test_every_harness_module_is_in_a_layer():
    assert {_layer(m) for m in MODULES if m.startswith("harness.")} == set(LAYERS)


def test_the_layers_import_only_downward():
    upward = [f"{m} -> {t} (line {line})" for m, edges in GRAPH.items() for t, line, _ in edges
              if _layer(m) and _layer(t) and LAYERS.index(_layer(t)) > LAYERS.index(_layer(m))]
    assert upward == []


def test_internal_imports_inside_functions_only_in_the_cli():
    inner = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}" for m, edges in GRAPH.items()
             for t, line, in_function in edges if in_function
             and not str(MODULES[m].relative_to(ROOT)).startswith(FUNCTION_IMPORTS_ALLOWED)]
    assert inner == []


@pytest.mark.parametrize("limit, what", [(400, "lines per module"), (60, "lines per function")])
def test_modules_and_functions_are_short(limit, what):
    long = []
    for module, path in MODULES.items():
        text = path.read_text()
        if what.endswith("module") and len(text.splitlines()) > limit:
            long.append(f"{module}: {len(text.splitlines())}")
        if what.endswith("function"):
            long += [f"{module}.{f.name}: {f.end_lineno - f.lineno + 1}" for f in ast.walk(ast.parse(text))
                     if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.end_lineno - f.lineno >= limit]
    assert long == []


def _names_in(node) -> list[str]:
    """The built-in method names among a node's string constants (in a tuple, list or set too)."""
    values = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return sorted({v.value for v in values if isinstance(v, ast.Constant) and v.value in BUILT_IN_NAMES})


def method_name_branches(source: str) -> list[str]:
    """Comparisons, `in` tests, match cases and subscripts with a built-in method's name: code that would treat
    that method specially. Names as data (a dict of labels or styles, a recipe) are not branches."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [f"line {node.lineno}: compares with {name!r}" for name in _names_in(operand)]
        elif isinstance(node, ast.MatchValue):
            found += [f"line {node.lineno}: matches {name!r}" for name in _names_in(node.value)]
        elif isinstance(node, ast.Subscript):
            found += [f"line {node.lineno}: subscript {name!r}" for name in _names_in(node.slice)]
    return found


def test_the_finder_of_method_name_branches_finds_them():
    assert method_name_branches('if method == "teacher":\n    pass') == ["line 1: compares with 'teacher'"]
    assert method_name_branches('ok = m in ("sct", "scd")') == ["line 1: compares with 'scd'",
                                                               "line 1: compares with 'sct'"]
    assert method_name_branches('x = recipe.stages["scd"]') == ["line 1: subscript 'scd'"]
    assert method_name_branches('LABELS = {"sct": "sCT"}\nlabel = LABELS.get(method, method)') == []


def test_the_harness_never_branches_on_a_built_in_method_name():
    found = [f"{path.relative_to(ROOT)} {where}" for path in sorted(ROOT.glob("harness/**/*.py"))
             for where in method_name_branches(path.read_text())]
    assert found == []

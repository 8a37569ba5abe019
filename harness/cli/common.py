"""What every command shares: one-line errors with exit code 2, the common options, and the one path that loads a
recipe for every command (text -> --set -> schema -> --smoke -> every sweep variant validated)."""
from pathlib import Path

import typer

RUNS = typer.Option(Path("runs"), "--runs-dir", help="Where jobs write checkpoints, samples and metrics.")
RESULTS = typer.Option(Path("results"), "--results-dir", help="Where report writes tables and sample grids.")
SMOKE = typer.Option(False, "--smoke", help="The recipe at toy scale on this CPU (2 steps per stage, tiny network, "
                                            "synthetic data of its shape); runs under NAME-smoke.")
SET = typer.Option([], "--set", help="Override a recipe field: key.path=value (YAML), e.g. --set "
                                     "stages.teacher.steps=500; repeatable.")
EXECUTORS = ("local", "debug", "slurm")


def fail(message: str) -> None:
    """Print `error: MESSAGE` (its first line) on stderr and exit with code 2."""
    typer.echo(f"error: {str(message).splitlines()[0]}", err=True)
    raise typer.Exit(2)


def load(path: Path, overrides: list[str] = (), smoke: bool = False):
    """The validated recipe (every sweep variant checked), at toy scale with --smoke; a bad one ends the command."""
    from ..recipe.load import load_recipe  # torch: not on --help's path
    from ..recipe.smoke import smoke_recipe
    from ..recipe.sweep import expand_sweep
    from ..recipe.text import RecipeError

    try:
        recipe = load_recipe(path, overrides)
        recipe = smoke_recipe(recipe) if smoke else recipe
        expand_sweep(recipe)
        return recipe
    except (RecipeError, ValueError) as error:
        message = str(error).splitlines()[0]
        fail(message if message.startswith(str(path)) else f"{path}: {message}")


def run_of(recipe: Path, runs_dir: Path, smoke: bool, full: bool = True):
    """The run a recipe file made (its name read from the file): its manifest (`full`: the typed plan, for status
    and cancel; else what it evaluated, for the report), or a one-line error."""
    from ..recipe.text import RecipeError
    from ..report.rows import find_manifest, recipe_name
    from ..store.runs import check_owner

    try:
        name = recipe_name(recipe) + ("-smoke" if smoke else "")
        check_owner(runs_dir, name, recipe)
        index = find_manifest(name, runs_dir)
        if not full:
            return index
        from ..recipe.manifest import read_manifest  # the typed plan needs the methods, and so torch

        return read_manifest(runs_dir, index.recipe)
    except (RecipeError, ValueError) as error:
        fail(str(error))


def executor_of(option: str | None, recipe) -> str:
    kind = option or recipe.executor
    if kind not in EXECUTORS:
        fail(f"--executor {kind!r} is not available; use local, debug or slurm")
    return kind

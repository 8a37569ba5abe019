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
    from ..recipe import RecipeError, expand_sweep, load_recipe, smoke_recipe  # torch: not on --help's path

    try:
        recipe = load_recipe(path, overrides)
        recipe = smoke_recipe(recipe) if smoke else recipe
        expand_sweep(recipe)
        return recipe
    except (RecipeError, ValueError) as error:
        message = str(error).splitlines()[0]
        fail(message if message.startswith(str(path)) else f"{path}: {message}")


def manifest_of(recipe: Path, runs_dir: Path, smoke: bool):
    """The manifest of the run a recipe file made (its name read from the file), or a one-line error."""
    from ..recipe import RecipeError, check_owner, read_raw
    from ..report.rows import find_manifest

    try:
        name = str(read_raw(recipe).get("name", recipe.stem))
        check_owner(runs_dir, name + ("-smoke" if smoke else ""), recipe)
        return find_manifest(name, runs_dir, smoke)
    except (RecipeError, ValueError) as error:
        fail(str(error))


def executor_of(option: str | None, recipe) -> str:
    kind = option or recipe.executor
    if kind not in EXECUTORS:
        fail(f"--executor {kind!r} is not available; use local, debug or slurm")
    return kind

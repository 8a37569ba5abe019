"""`scm-bench report`: each recipe's finished jobs beside the sCM paper's numbers, printed with rich.

Light to import (the CLI loads every command module): pandas and matplotlib load inside the command.
"""
from pathlib import Path

import typer


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _recipe(path: Path, smoke: bool):
    """The validated recipe (every sweep variant), smoke-scaled with --smoke; a bad one ends the command."""
    from .recipe import RecipeError, load_recipe
    from .smoke import smoke_recipe
    from .sweep import expand_sweep

    try:
        recipe = load_recipe(path)
        recipe = smoke_recipe(recipe) if smoke else recipe
        expand_sweep(recipe)
        return recipe
    except (RecipeError, ValueError) as error:
        _fail(str(error).splitlines()[0])


def _check_compare(names: list[str], smoke: bool) -> None:
    """Every --compare NAME must name a valid recipe (recipes/NAME.yaml or a path) before anything is written."""
    from .recipe import RecipeError
    from .report import compare_recipe

    for name in names:
        try:
            compare_recipe(name, smoke)
        except (RecipeError, ValueError) as error:
            _fail(f"--compare {name}: {str(error).splitlines()[0]}")


def _print_table(console, table, title: str) -> None:
    """The table without the columns a terminal has least room for (table.md has them all); cells fold, never cut."""
    from rich import box
    from rich.table import Table
    from .report import display_table

    shown = display_table(table)
    shown = shown.drop(columns=[c for c in ("params (M)", "sampler", "train min") if c in shown])
    view = Table(title=title, box=box.SIMPLE_HEAD)
    for column in shown.columns:
        view.add_column(column, justify="left" if column in ("source", "setting", "method") else "right",
                        overflow="fold")
    for row in shown.itertuples(index=False):
        view.add_row(*row)
    console.print(view)


def report_command(
        recipes: list[Path] = typer.Argument(None, help="Recipe files (default: every recipes/*.yaml with runs)."),
        compare: list[str] = typer.Option([], "--compare", help="Another recipe's runs beside ours and the paper's, "
                                                                "labelled NAME: recipes/NAME.yaml (or a path), runs "
                                                                "under runs/NAME; repeatable."),
        smoke: bool = typer.Option(False, "--smoke", help="Report the recipes' --smoke runs (runs/NAME-smoke)."),
        runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where jobs wrote their metrics."),
        results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Where the report goes.")):
    """Compile each recipe's finished jobs beside the sCM paper's numbers into results/<recipe>/: table.md, table.csv,
    table.tex, sample grids and plots (FID against model size and NFE); prints the table."""
    suffix = "-smoke" if smoke else ""
    paths = recipes or [p for p in sorted(Path("recipes").glob("*.yaml")) if (runs_dir / f"{p.stem}{suffix}").is_dir()]
    if not paths:
        _fail(f"no runs found under {runs_dir}; run a recipe first: scm-bench run recipes/digits.yaml")
    specs = [_recipe(path, smoke) for path in paths]  # all valid before any report is written
    _check_compare(compare, smoke)
    from rich.console import Console
    from .recipe import RecipeError
    from .report import OURS, write_report

    console = Console()
    for spec in specs:
        try:
            table = write_report(spec, runs_dir, results_dir, compare)
        except (RecipeError, ValueError, OSError) as error:
            _fail(f"{spec.name}: {str(error).splitlines()[0]}")
        if table is None:
            console.print(f"{spec.name}: no finished jobs under {runs_dir / spec.name}")
            continue
        if not (table.source == OURS).any():
            console.print(f"{spec.name}: no finished jobs of its own; showing the --compare runs")
        for name in compare:
            if not (table.source == Path(name).stem).any():
                console.print(f"--compare {name}: no finished jobs to show beside {spec.name}")
        _print_table(console, table, f"{spec.name} ({results_dir / spec.name / 'table.md'})")

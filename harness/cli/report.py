"""`scm-bench report`: each run's evaluations (read from its manifest) beside the sCM paper's numbers, printed
with rich and written under results/<recipe>/."""
from pathlib import Path

import typer

from .common import RESULTS, RUNS, fail, run_of


def _print_table(console, table, title: str) -> None:
    """The table without the columns a terminal has least room for (table.md has them all); cells fold, never cut."""
    from rich import box
    from rich.table import Table

    from ..report.tables import display_table

    shown = display_table(table)
    shown = shown.drop(columns=[c for c in ("params (M)", "sampler", "train min") if c in shown])
    view = Table(title=title, box=box.SIMPLE_HEAD)
    for column in shown.columns:
        view.add_column(column, justify="left" if column in ("source", "setting", "stage", "method") else "right",
                        overflow="fold")
    for row in shown.itertuples(index=False):
        view.add_row(*row)
    console.print(view)


def _manifests(recipes: list[Path], runs_dir: Path, smoke: bool) -> list:
    """The runs to report (what each evaluated): those of the recipes named, else every run under the runs
    folder."""
    from ..store.runs import RunError, manifests, read_index

    if recipes:
        return [run_of(path, runs_dir, smoke, full=False) for path in recipes]
    names = [name for name in manifests(runs_dir) if name.endswith("-smoke") == smoke]
    if not names:
        fail(f"no runs found under {runs_dir}; run a recipe first: scm-bench run recipes/digits.yaml")
    try:
        return [read_index(runs_dir, name) for name in names]
    except RunError as error:
        fail(str(error))


def report(recipes: list[Path] = typer.Argument(None, help="Recipe files (default: every run under --runs-dir)."),
           compare: list[str] = typer.Option([], "--compare", help="Another run beside ours and the paper's, by "
                                                                   "its recipe's name (or recipe file); "
                                                                   "repeatable."),
           smoke: bool = typer.Option(False, "--smoke", help="Report the recipes' --smoke runs (runs/NAME-smoke)."),
           runs_dir: Path = RUNS, results_dir: Path = RESULTS):
    """Compile each run's finished evaluations beside the sCM paper's numbers into results/<recipe>/: table.md,
    table.csv, table.tex, sample grids and plots; prints the table. Exit code 1 when nothing has finished."""
    runs = _manifests(recipes, runs_dir, smoke)  # every run found before any report is written
    from rich.console import Console

    from ..recipe.text import RecipeError
    from ..report.report import write_report
    from ..report.rows import OURS, find_manifest, source_label

    labels = {}
    for name in compare:
        try:
            labels[name] = source_label(find_manifest(name, runs_dir, smoke))
        except RecipeError as error:
            fail(f"--compare {name}: {error}")
    console, written = Console(), 0
    for manifest in runs:
        try:
            table = write_report(manifest, runs_dir, results_dir, compare)
        except (RecipeError, ValueError, OSError) as error:
            fail(f"{manifest.recipe}: {error}")
        if table is None:
            typer.echo(f"{manifest.recipe}: no finished evaluations yet (see scm-bench status)", err=True)
            continue
        written += 1
        if not (table.source == OURS).any():
            console.print(f"{manifest.recipe}: no finished evaluations of its own; showing the --compare runs")
        for name in compare:
            if not (table.source == labels[name]).any():
                console.print(f"--compare {name}: no finished evaluations to show beside {manifest.recipe}")
        _print_table(console, table, f"{manifest.recipe} ({results_dir / manifest.recipe / 'table.md'})")
    if not written:
        raise typer.Exit(1)

"""`scm-bench baselines list | show NAME | save RECIPE --as NAME`: the stored baseline sets (results/baselines/
NAME.csv), and a run's finished rows frozen as one, to compare later methods with (`report --compare NAME`)."""
from pathlib import Path

import typer

from .common import RUNS, SMOKE, fail

baselines_app = typer.Typer(no_args_is_help=True,
                            help="Stored baseline sets (results/baselines/NAME.csv): the paper's, other methods', and "
                                 "runs saved to compare later methods with (scm-bench report RECIPE --compare NAME).")
BASELINES_DIR = typer.Option(None, "--baselines-dir", help="Where the sets are kept (default: results/baselines of "
                                                           "this checkout, beside the paper's).")
WIDTH = 100  # columns, where the output is not a terminal


def _folder(option: Path | None) -> Path:
    from ..report.paper import BASELINES

    return option or BASELINES


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = WIDTH
    return console


def _table(columns: list[str], rows, title: str | None = None):
    from rich import box
    from rich.table import Table

    view = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*[str(cell) for cell in row])
    return view


@baselines_app.command("list")
def list_command(baselines_dir: Path = BASELINES_DIR):
    """Every stored set: name, rows, data sets, metrics, source."""
    from ..report.baseline_sets import list_sets
    from ..report.baseline_view import summary

    folder = _folder(baselines_dir)
    try:
        summaries = [summary(baseline) for baseline in list_sets(folder)]
    except ValueError as error:
        fail(str(error))
    if not summaries:
        fail(f"no baseline sets in {folder}; save one: scm-bench baselines save RECIPE --as NAME")
    rows = [(s.name, s.rows, s.datasets, s.metrics, s.source) for s in summaries]
    _console().print(_table(["name", "rows", "data sets", "metrics", "source"], rows))


@baselines_app.command("show")
def show(name: str = typer.Argument(..., help="A set's name (scm-bench baselines list)."),
         baselines_dir: Path = BASELINES_DIR):
    """A set's rows: one table per (table, data set), a column per metric; the sources as notes, a saved set's
    provenance under each heading."""
    from ..report.baseline_sets import read_set
    from ..report.baseline_view import group_views

    try:
        views = group_views(read_set(_folder(baselines_dir), name))
    except ValueError as error:
        fail(str(error))
    console = _console()
    for view in views:
        console.print(f"[bold]{view.title}[/bold]", highlight=False)
        for line in view.details:
            console.print(line, markup=False, highlight=False)
        console.print(_table(list(view.cells.columns), view.cells.itertuples(index=False)))
        for note in view.notes:
            console.print(note, markup=False, highlight=False)
        console.print()


@baselines_app.command("save")
def save(recipe: str = typer.Argument(..., help="The run to freeze: its recipe file, or its recipe's name."),
         as_name: str = typer.Option(..., "--as", help="The set's name: letters, digits, '_', '-', '.' (a file "
                                                       "stem); saved as results/baselines/NAME.csv."),
         overwrite: bool = typer.Option(False, "--overwrite", help="Replace a set of that name."),
         smoke: bool = SMOKE, runs_dir: Path = RUNS, baselines_dir: Path = BASELINES_DIR):
    """Freeze a run's finished rows (over seeds: mean, std, n) with their provenance as a baseline set."""
    from ..recipe.text import RecipeError
    from ..report.baseline_sets import check_set_name, set_path, write_set
    from ..report.freeze import frozen_rows
    from ..report.rows import find_manifest
    from ..store.runs import read_index

    folder = _folder(baselines_dir)
    try:
        path = set_path(folder, check_set_name(as_name))
        if path.exists() and not overwrite:
            fail(f"baseline set {as_name!r} exists ({path}); choose another --as name, or add --overwrite to "
                 "replace it")
        manifest = find_manifest(recipe, runs_dir, smoke)
        rows = frozen_rows(manifest, as_name)
        write_set(folder, as_name, rows, overwrite)
    except (RecipeError, ValueError, OSError) as error:
        fail(str(error))
    typer.echo(f"saved {len(rows)} rows of {manifest.recipe} ({', '.join(sorted(set(rows.dataset)))}) as "
               f"{as_name}: {path}")
    if read_index(runs_dir, as_name) is not None:
        typer.echo(f"note: {as_name} is also a run under {runs_dir}, so --compare {as_name} is ambiguous; compare "
                   f"with --compare {path}", err=True)

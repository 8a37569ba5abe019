"""`scm-bench report`: each run's evaluations (read from its manifest) beside the sCM paper's numbers, printed
with rich and written under results/<recipe>/."""
from pathlib import Path

import typer

from .common import RESULTS, RUNS, fail, run_of


def _print_table(console, table, recipe: str, where: Path) -> None:
    """The table at the terminal's width, every cell whole (harness/report/terminal.py; table.md has it all)."""
    from ..report.terminal import print_report_table, title_of

    print_report_table(console, table, f"{title_of(recipe, table)} ({where})")


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
           compare: list[str] = typer.Option([], "--compare", help="Another run, or a stored baseline set, beside "
                                             "ours and the paper's; repeatable. A recipe file (.yaml) is a run, a "
                                             ".csv file a set; a bare NAME is the run of that recipe under --runs-dir "
                                             "or the set --baselines-dir/NAME.csv, an error when it is both (then "
                                             "give the file). A set's rows pair with ours by data set, metric, NFE "
                                             "and guidance."),
           smoke: bool = typer.Option(False, "--smoke", help="Report the recipes' --smoke runs (runs/NAME-smoke)."),
           runs_dir: Path = RUNS, results_dir: Path = RESULTS,
           baselines_dir: Path = typer.Option(None, "--baselines-dir", help="Where --compare finds baseline sets "
                                                                          "(default: results/baselines of this "
                                                                          "checkout).")):
    """Compile each run's finished evaluations beside the sCM paper's numbers into results/<recipe>/: table.md,
    table.csv, table.tex, sample grids and plots; prints the table. Exit code 1 when nothing has finished."""
    runs = _manifests(recipes, runs_dir, smoke)  # every run found before any report is written
    from rich.console import Console

    from ..recipe.text import RecipeError
    from ..report.baseline_sets import resolve_compare
    from ..report.paper import BASELINES
    from ..report.report import write_report
    from ..report.rows import OURS

    baselines_dir = baselines_dir or BASELINES
    try:
        compared = resolve_compare(compare, runs_dir, smoke, baselines_dir)
    except ValueError as error:
        fail(str(error))
    sets = {baseline.name for baseline in compared.sets}
    console, written = Console(), 0
    for manifest in runs:
        try:
            table = write_report(manifest, runs_dir, results_dir, compare, baselines_dir)
        except (RecipeError, ValueError, OSError) as error:
            fail(f"{manifest.recipe}: {error}")
        if table is None:
            typer.echo(f"{manifest.recipe}: no finished evaluations yet (see scm-bench status)", err=True)
            continue
        written += 1
        if not (table.source == OURS).any():
            console.print(f"{manifest.recipe}: no finished evaluations of its own; showing the --compare runs")
        for name, label in compared.labels.items():
            if not (table.source == label).any():
                missing = "rows on its data sets" if label in sets else "finished evaluations"
                console.print(f"--compare {name}: no {missing} to show beside {manifest.recipe}")
        _print_table(console, table, manifest.recipe, results_dir / manifest.recipe / "table.md")
    if not written:
        raise typer.Exit(1)

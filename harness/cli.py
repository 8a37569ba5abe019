"""The scm-bench command line. Thin: parse, call, print. Heavy imports (torch) happen inside commands."""
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reproduce and benchmark continuous-time consistency models (sCM: TrigFlow, sCT, sCD).")

RUNS = typer.Option(Path("runs"), "--runs-dir", help="Where jobs write checkpoints, samples and metrics.")
RESULTS = typer.Option(Path("results"), "--results-dir", help="Where report writes tables and sample grids.")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _load(path: Path):
    from .recipe import RecipeError, load_recipe

    try:
        return load_recipe(path)
    except RecipeError as error:
        _fail(str(error))


class ProgressView:
    """One rich progress bar per job, fed from the jobs' progress.json files."""

    def __init__(self, progress):
        self.progress, self.tasks = progress, {}

    def update(self, name: str, info: dict) -> None:
        if not info:
            return
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=info.get("total", 1), loss=float("nan"), it_s=0.0,
                                                      state="")
        self.progress.update(self.tasks[name], completed=info.get("step", 0), loss=info.get("loss", float("nan")),
                             it_s=info.get("it_s", 0.0), state=info.get("state", ""))


@app.command()
def run(recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/digits.yaml."),
        executor: str = typer.Option(None, help="local | debug (default: the recipe's)."),
        runs_dir: Path = RUNS):
    """Train the recipe's teacher, then sCT and sCD from its EMA weights, and evaluate each at its NFEs."""
    spec = _load(recipe)
    kind = executor or spec.executor
    if kind not in ("local", "debug"):
        _fail(f"--executor {kind!r} is not available; use local or debug")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from .launch import run_recipe

    console = Console()
    columns = [TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[it_s]:.1f} it/s"),
               TimeElapsedColumn(), TextColumn("{task.fields[state]}")]
    try:
        with Progress(*columns, console=console) as progress:
            rows = run_recipe(spec, runs_dir, kind, ProgressView(progress))
    except (RuntimeError, OSError, ValueError) as error:
        _fail(str(error))
    console.print(f"{len(rows)} metrics rows in {runs_dir / spec.name}; next: scm-bench report {recipe}")


@app.command()
def report(recipes: list[Path] = typer.Argument(None, help="Recipe files (default: every recipes/*.yaml with runs)."),
           runs_dir: Path = RUNS, results_dir: Path = RESULTS):
    """Compile each recipe's finished jobs into results/<recipe>/table.md, table.csv and sample grids."""
    from rich.console import Console
    from rich.table import Table
    from .report import write_report

    paths = recipes or [p for p in sorted(Path("recipes").glob("*.yaml")) if (runs_dir / p.stem).is_dir()]
    if not paths:
        _fail(f"no runs found under {runs_dir}; run a recipe first: scm-bench run recipes/digits.yaml")
    console = Console()
    for path in paths:
        spec = _load(path)
        table = write_report(spec, runs_dir, results_dir)
        if table is None:
            console.print(f"{spec.name}: no finished jobs under {runs_dir / spec.name}")
            continue
        view = Table(title=f"{spec.name} ({results_dir / spec.name / 'table.md'})")
        for column in table.columns:
            view.add_column(column, justify="right")
        for row in table.itertuples(index=False):
            view.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
        console.print(view)


if __name__ == "__main__":
    app()

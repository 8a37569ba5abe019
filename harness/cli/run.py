"""`scm-bench run`, `status` and `cancel`."""
import os
from contextlib import contextmanager
from pathlib import Path

import typer

from .common import RUNS, SET, SMOKE, executor_of, fail, load, run_of
from .live import PlainProgress


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


@contextmanager
def _progress_view(console):
    """Rich bars on a terminal; elsewhere (CI, a pipe, a Slurm log) plain lines every ~30 s (live.py)."""
    if not console.is_terminal:
        with PlainProgress() as plain:
            yield plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[it_s]:.1f} it/s"),
               TimeElapsedColumn(), TextColumn("{task.fields[state]}")]
    with Progress(*columns, console=console) as progress:
        yield ProgressView(progress)


def _smoke_note(recipe_path: Path, overrides: list[str], smoke: bool) -> None:
    """Say which --set values a smoke run does not use (it fixes them at toy scale)."""
    from ..recipe.load import load_recipe
    from ..recipe.smoke import replaced_by_smoke

    if not smoke or not overrides:
        return
    keys = [item.partition("=")[0] for item in overrides]
    replaced = replaced_by_smoke(keys, load_recipe(recipe_path, overrides).network.name)
    if replaced:
        typer.echo(f"note: --smoke sets {', '.join(replaced)} at toy scale; the --set value(s) for them are not "
                   "used", err=True)


def _next_hint(recipe: Path, runs_dir: Path, smoke: bool) -> str:
    flags = (" --smoke" if smoke else "") + (f" --runs-dir {runs_dir}" if runs_dir != Path("runs") else "")
    return f"scm-bench report {recipe}{flags}"


def run(recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/digits.yaml."),
        executor: str = typer.Option(None, help="local | debug | slurm (default: the recipe's)."),
        overrides: list[str] = SET, smoke: bool = SMOKE,
        wait: bool = typer.Option(True, "--wait/--no-wait", help="Slurm: follow the jobs to the end (default), or "
                                                                 "submit them and return (then: scm-bench status)."),
        runs_dir: Path = RUNS):
    """Train every stage of the recipe (each after the stages it starts from and reads) and evaluate each, for
    every variant of its sweep. Jobs the store already holds are reused; interrupted ones resume."""
    spec = load(recipe, overrides, smoke)
    kind = executor_of(executor, spec)
    if kind == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            fail("--executor slurm but sbatch is not on PATH; run on a Slurm login node "
                 "(or start one here: scripts/slurm-local.sh start)")
    _smoke_note(recipe, overrides, smoke)
    from rich.console import Console

    from ..recipe.text import RecipeError
    from ..run.launch import Stopped
    from ..run.preflight import Missing
    from ..run.runner import run_recipe
    from ..run.stopping import StopRequests

    console = Console()
    try:
        with StopRequests() as stop, _progress_view(console) as view:
            rows = run_recipe(spec, recipe, runs_dir, kind, view, stop, overrides,
                              wait=wait or kind != "slurm", launcher_pid=os.getpid() if wait else None)
    except Stopped as stopped:
        typer.echo(f"interrupted by {stopped}: jobs stopped (training saved its step); run the same command again "
                   "to resume", err=True)
        raise typer.Exit(130)
    except Missing as missing:  # every missing prerequisite at once, one line each
        typer.echo(f"error: {recipe}: {missing}", err=True)
        raise typer.Exit(2)
    except (RecipeError, ValueError) as error:  # about the recipe: named with it
        message = str(error)
        fail(message if message.startswith(str(recipe)) else f"{recipe}: {message}")
    except (RuntimeError, OSError) as error:  # a job that failed, a disk that is full: their own message
        fail(str(error))
    if kind == "slurm" and not wait:
        console.print(f"submitted; follow with: scm-bench status {recipe}{' --smoke' if smoke else ''}")
        return
    for job, message in sorted({(r["job"], r.get("diverged_message", "")) for r in rows if r.get("diverged")}):
        console.print(f"[bold yellow]diverged[/]: {job}: {message} (its rows are marked diverged in the report)")
    during = sum(bool(r.get("intermediate")) for r in rows)
    console.print(f"{len(rows)} metrics rows" + (f" ({during} at checkpoints during training)" if during else "") +
                  f" in {runs_dir}; next: {_next_hint(recipe, runs_dir, smoke)}", soft_wrap=True)


def status(recipe: Path = typer.Argument(..., help="Recipe YAML whose run to show."), smoke: bool = SMOKE,
           runs_dir: Path = RUNS):
    """Every job the recipe's run planned, by variant: work, state, step / total, last loss, executor, job ids,
    log path."""
    from rich.console import Console
    from rich.table import Table

    from ..run.status import job_rows

    manifest = run_of(recipe, runs_dir, smoke)
    view = Table(title=f"{manifest.recipe} ({runs_dir / manifest.recipe})")
    for column in ("job", "stage", "variant", "work", "state", "step", "loss", "executor", "job ids", "log"):
        view.add_column(column)
    for r in job_rows(manifest):
        step = f"{r['step']} / {r['total']}" if r["total"] else str(r["step"])
        loss = f"{r['loss']:.4f}" if isinstance(r["loss"], (int, float)) else ""
        view.add_row(r["job"], r["stage"], r["variant"], r["work"], r["state"], step, loss, r["executor"],
                     r["job_id"], r["log"])
    Console(width=200).print(view)


def cancel(recipe: Path = typer.Argument(..., help="Recipe YAML whose run to stop."), smoke: bool = SMOKE,
           runs_dir: Path = RUNS):
    """Stop the recipe's run: its launcher and its unfinished jobs (Slurm or local); checkpoints stay, so a later
    run resumes them."""
    from ..run.status import cancel_run

    stopped = cancel_run(run_of(recipe, runs_dir, smoke))
    typer.echo(f"cancelled {len(stopped)}: {', '.join(stopped)}" if stopped else "nothing was running")

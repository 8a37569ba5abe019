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


SMOKE = typer.Option(False, "--smoke", help="The recipe at toy scale on this CPU (2 steps per stage, tiny network, "
                                            "synthetic data of its shape); runs under NAME-smoke.")


def _load(path: Path, overrides: list[str] = (), smoke: bool = False):
    from .recipe import RecipeError, load_recipe
    from .sweep import expand_sweep

    try:
        recipe = load_recipe(path, overrides)
        if smoke:
            from .smoke import smoke_recipe

            recipe = smoke_recipe(recipe)
        expand_sweep(recipe)  # every variant must validate before anything runs
        return recipe
    except (RecipeError, ValueError) as error:
        message = str(error).splitlines()[0]
        _fail(message if message.startswith(str(path)) else f"{path}: {message}")


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
        executor: str = typer.Option(None, help="local | debug | slurm (default: the recipe's)."),
        overrides: list[str] = typer.Option([], "--set", help="Override a recipe field: key.path=value (YAML), "
                                                              "e.g. --set stages.teacher.steps=500; repeatable."),
        smoke: bool = SMOKE,
        wait: bool = typer.Option(True, "--wait/--no-wait", help="Slurm: follow the jobs to the end (default), or "
                                                                 "submit them and return (then: scm-bench status)."),
        runs_dir: Path = RUNS):
    """Train the recipe's teacher, then sCT and sCD from its EMA weights, and evaluate each at its NFEs
    (every variant of its sweep). Finished jobs are reused; interrupted ones resume."""
    spec = _load(recipe, overrides, smoke)
    kind = executor or spec.executor
    if kind not in ("local", "debug", "slurm"):
        _fail(f"--executor {kind!r} is not available; use local, debug or slurm")
    if kind == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            _fail("--executor slurm but sbatch is not on PATH; run on a Slurm login node "
                  "(or start one here: scripts/slurm-local.sh start)")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from .launch import run_recipe

    console = Console()
    columns = [TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[it_s]:.1f} it/s"),
               TimeElapsedColumn(), TextColumn("{task.fields[state]}")]
    import signal

    def terminated(signum, frame):  # kill or a batch system's stop: stop the local jobs as Ctrl-C does
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, terminated)
    try:
        with Progress(*columns, console=console) as progress:
            rows = run_recipe(spec, runs_dir, kind, ProgressView(progress), wait=wait or kind != "slurm")
    except (RuntimeError, OSError, ValueError) as error:
        _fail(str(error))
    except KeyboardInterrupt:
        typer.echo("interrupted: jobs stopped (training saves its step); run the same command again to resume",
                   err=True)
        raise typer.Exit(130)
    finally:
        signal.signal(signal.SIGTERM, before)
    flags = " --smoke" if smoke else ""
    if kind == "slurm" and not wait:
        console.print(f"submitted; follow with: scm-bench status {recipe}{flags}")
        return
    for job, message in sorted({(r["job"], r.get("diverged_message", "")) for r in rows if r.get("diverged")}):
        console.print(f"[bold yellow]diverged[/]: {job}: {message} (its rows are marked diverged in the report)")
    during = sum(bool(r.get("intermediate")) for r in rows)
    console.print(f"{len(rows)} metrics rows" + (f" ({during} at checkpoints during training)" if during else "") +
                  f" in {runs_dir / spec.name}; next: scm-bench report {recipe}{flags}")


@app.command()
def status(recipe: Path = typer.Argument(..., help="Recipe YAML whose jobs to show."), smoke: bool = SMOKE,
           runs_dir: Path = RUNS):
    """Each job of the recipe: state, step / total, last loss, executor and job ids, log path."""
    from rich.console import Console
    from rich.table import Table
    from .status import job_rows

    spec = _load(recipe, smoke=smoke)
    rows = job_rows(runs_dir, spec.name)
    if not rows:
        _fail(f"no jobs of {spec.name} under {runs_dir}; start them with scm-bench run {recipe}")
    view = Table(title=f"{spec.name} ({runs_dir / spec.name})")
    for column in ("job", "variant", "state", "step", "loss", "executor", "job ids", "log"):
        view.add_column(column)
    for r in rows:
        step = f"{r['step']} / {r['total']}" if r["total"] else str(r["step"])
        loss = f"{r['loss']:.4f}" if isinstance(r["loss"], (int, float)) else ""
        view.add_row(r["job"], r["variant"], r["state"], step, loss, r["executor"], r["job_id"], r["log"])
    Console(width=200).print(view)


@app.command()
def cancel(recipe: Path = typer.Argument(..., help="Recipe YAML whose unfinished jobs to cancel."),
           smoke: bool = SMOKE, runs_dir: Path = RUNS):
    """Cancel the recipe's unfinished jobs (Slurm or local); checkpoints stay, so a later run resumes them."""
    from .status import cancel_jobs

    spec = _load(recipe, smoke=smoke)
    cancelled = cancel_jobs(runs_dir, spec.name)
    typer.echo(f"cancelled {len(cancelled)} job(s){': ' + ', '.join(cancelled) if cancelled else ''}")


from .plan import plan_command  # noqa: E402  (both light: torch loads inside the commands)
from .prepare import prepare_command  # noqa: E402

app.command("plan", help="Expanded jobs of a recipe with resources, GPU-hours (from FLOPs at a stated throughput), "
                         "memory per GPU and the sbatch settings; submits and writes nothing.")(plan_command)

app.command("prepare", help="Prepare a data set from your own copy: cifar10 (the python archive), imagenet64 or "
                            "imagenet512-latents (an ImageNet training folder; latents with the SD VAE).")(prepare_command)

from .refs import refs_app  # noqa: E402
from .report_cli import report_command  # noqa: E402

app.command("report", help="Compile each recipe's finished jobs into results/<recipe>/: table.md, table.csv, "
                           "table.tex beside the paper's numbers, plots and sample grids.")(report_command)

app.add_typer(refs_app, name="refs")

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print ratios measured side by side in one run.")
app.add_typer(bench_app, name="bench")
findings_app = typer.Typer(no_args_is_help=True, help="Measurements behind the paper's findings (results/README.md).")
app.add_typer(findings_app, name="findings")


@findings_app.command("tangent-terms")
def findings_tangent_terms(recipe: Path = typer.Argument(..., help="A teacher recipe, e.g. recipes/fig4_stability.yaml"),
                           samples: int = typer.Option(256, min=1, help="Real images x0 averaged over."),
                           smoke: bool = SMOKE, runs_dir: Path = RUNS, results_dir: Path = RESULTS):
    """sCM Fig. 4: the x-part and t-part of df/dt against t for each trained teacher of the recipe's sweep."""
    from .tangent_terms import write

    spec = _load(recipe, smoke=smoke)
    try:
        paths = write(spec, runs_dir, results_dir, samples)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


@bench_app.command("jvp")
def bench_jvp(network: list[str] = typer.Option(["toy", "S"], "--network", "-n",
                                                help="toy (the digits U-Net, batch 128) and/or S (EDM2-S at 16x16)."),
              batch: int = typer.Option(None, min=1, help="Batch size (default: each network's own)."),
              repeats: int = typer.Option(7, min=1, help="Timed rounds; each round runs every case once."),
              guidance: float = typer.Option(1.0, min=1.0, help="sCD teacher CFG scale (> 1: two teacher passes)."),
              threads: int = typer.Option(None, min=1, help="torch threads (default: all cores)."),
              csv: Path = typer.Option(None, help="Also write the rows to this CSV file.")):
    """Forward vs JVP (torch.func reference and our dual pass) vs sCT / sCD training steps: time and peak memory."""
    from .bench import NETWORKS, run_jvp_bench

    unknown = [n for n in network if n not in NETWORKS]
    if unknown:
        _fail(f"unknown --network {unknown[0]!r}; choose from {list(NETWORKS)}")
    import pandas as pd
    import torch
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    if threads:
        torch.set_num_threads(threads)
    console = Console()
    rows = []
    for name in network:
        part = run_jvp_bench(name, batch, repeats, guidance,
                             lambda it, name=name: track(it, description=f"{name}: timing", console=console))
        rows += part
        first = part[0]
        view = Table(title=f"{name}: {first['name']}, {first['params'] / 1e6:.1f} M params, batch {first['batch']} "
                           f"x {'x'.join(map(str, first['shape']))}, {first['device']}, {first['threads']} threads")
        for column in ("case", "median ms", "ratio", "vs", "peak MB", "peak ratio", "target"):
            view.add_column(column, justify="left" if column in ("case", "vs") else "right")
        for r in part:
            met = "" if r["target"] is None else (" ok" if r["ratio"] <= r["target"] else " MISSED")
            view.add_row(r["case"], f"{r['ms']:.1f}", f"{r['ratio']:.2f}x", r["baseline"], f"{r['peak_mb']:.1f}",
                         f"{r['peak_ratio']:.2f}x", "" if r["target"] is None else f"<= {r['target']}x{met}")
        console.print(view)
    if csv:
        pd.DataFrame(rows).to_csv(csv, index=False)
        console.print(f"rows written to {csv}")


@bench_app.command("precision")
def bench_precision(csv: Path = typer.Option(None, help="Also write the rows to this CSV file.")):
    """Half-precision (bf16, fp16 autocast) tangent vs float64 across t in [0, t_max]: rearranged vs naive tangent,
    c_noise = t vs EDM's log-sigma, on a tiny EDM2-style U-Net."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table
    from .precision import precision_rows

    console = Console(width=200)
    with console.status("float64 references and bf16 / fp16 tangents ..."):
        rows = pd.DataFrame(precision_rows())
    table = rows.pivot_table(index=["network", "form", "dtype"], columns="t", values="relative_error", sort=False,
                             dropna=False)
    view = Table(title="relative error of sd cos(t) sin(t) dF/dt vs float64 (inf: overflow / non-finite; "
                       "nan: the float64 reference itself is undefined)")
    for column in ("network", "form", "dtype", *[f"t={t:.4g}" for t in table.columns]):
        view.add_column(column, justify="left" if not column.startswith("t=") else "right")
    for (network, form, dtype), values in table.iterrows():
        view.add_row(network, form, dtype, *[f"{v:.1e}" for v in values])
    console.print(view)
    if csv:
        rows.to_csv(csv, index=False)


if __name__ == "__main__":
    app()

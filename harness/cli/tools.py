"""The tool commands: `plan`, `prepare`, `refs import`, `bench jvp`, `bench precision`, `findings tangent-terms`."""
from pathlib import Path

import typer

from .common import RESULTS, RUNS, SET, SMOKE, executor_of, fail, load, run_of

refs_app = typer.Typer(no_args_is_help=True, help="Reference statistics for FID.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print ratios measured side by side in one run.")
findings_app = typer.Typer(no_args_is_help=True, help="Measurements behind the paper's findings (results/README.md).")
DATASETS = ("cifar10", "imagenet64", "imagenet512-latents")


def plan(recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/digits.yaml."),
         overrides: list[str] = SET,
         tflops: float = typer.Option(155.0, "--tflops", min=1e-6, help="Achieved TFLOP/s per GPU (default: what "
                                                                        "EDM2-S sCD reached on an H200)."),
         executor: str = typer.Option(None, help="local | debug | slurm (default: the recipe's)."),
         sbatch: bool = typer.Option(True, "--sbatch/--no-sbatch", help="Print the #SBATCH lines (slurm)."),
         details: bool = typer.Option(False, "--details", help="Every estimate of every job in one wide table "
                                                                "(about 200 columns)."),
         smoke: bool = SMOKE, runs_dir: Path = RUNS):
    """Estimate FLOPs, GPU-hours and memory per GPU of every job (a job the store already holds costs nothing);
    submits and writes nothing."""
    spec = load(recipe, overrides, smoke)
    kind = executor_of(executor, spec)
    from rich.console import Console

    from ..recipe.planner import plan_jobs
    from ..recipe.text import RecipeError
    from ..tools.plan import plan_rows, plan_warnings, print_plan, print_sbatch

    try:
        rows = plan_rows(plan_jobs(spec, runs_dir), tflops)
    except (RecipeError, ValueError, OSError) as error:
        fail(str(error))
    console = Console()
    if not console.is_terminal:  # piped or captured: the terminal layout's 100 columns (--details: 200)
        console.width = 200 if details else 100
    print_plan(console, spec, rows, tflops, details)
    for warning in plan_warnings(rows):
        console.print(f"warning: {warning}", markup=False, highlight=False)
    if sbatch:
        print_sbatch(console, spec.name, rows, kind)


def prepare(name: str = typer.Argument(..., help="Data set: cifar10 | imagenet64 | imagenet512-latents."),
            source: Path = typer.Option(..., "--source", help="cifar10: cifar-10-python.tar.gz or its extracted "
                                                              "cifar-10-batches-py folder; imagenet*: the ImageNet "
                                                              "training folder (one subfolder per class)."),
            out: Path = typer.Option(None, "--out", help="Output folder (default: data/NAME)."),
            vae: str = typer.Option(None, "--vae", help="imagenet512-latents: VAE folder or Hugging Face id in the "
                                                        "local cache (default stabilityai/sd-vae-ft-mse); never "
                                                        "downloaded."),
            resolution: int = typer.Option(None, "--resolution", help="imagenet*: pixel size of the center crop "
                                                                      "(default 64 / 512)."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder.")):
    """Convert a downloaded data set into a prepared folder (images.npy, labels.npy, dataset.json) for training."""
    if name not in DATASETS:
        fail(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if vae is not None and name != "imagenet512-latents":
        fail(f"--vae applies to imagenet512-latents only, not {name}")
    if resolution is not None and name == "cifar10":
        fail("--resolution does not apply to cifar10, which is always 32x32")
    from ..data.prepared import META
    from ..store import read_json
    from ..tools import prepare as preparers

    out = out or Path("data") / name
    try:
        if name == "cifar10":
            preparers.prepare_cifar10(source, out, overwrite)
        elif name == "imagenet64":
            preparers.prepare_imagenet64(source, out, resolution or 64, overwrite)
        else:
            preparers.prepare_imagenet512_latents(source, out, vae or preparers.DEFAULT_VAE, resolution or 512,
                                                  overwrite=overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        fail(str(error))
    meta = read_json(out / META)
    typer.echo(f"prepared {name}: {meta['count']} {meta['kind']} of shape {'x'.join(map(str, meta['shape']))} "
               f"in {out}")


@refs_app.command("import")
def refs_import(source: Path = typer.Argument(..., help="EDM2 reference pickle, e.g. img512.pkl."),
                out: Path = typer.Option(None, "--out", help="Output .npz (default: refs/<name>.npz).")):
    """Convert EDM2's reference statistics into an .npz for evaluation.reference."""
    from ..tools.refs import import_reference

    target = out or Path("refs") / f"{source.stem}.npz"
    try:
        import_reference(source, target)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    typer.echo(f"wrote {target}; use it with --set evaluation.reference={target}")


@findings_app.command("tangent-terms")
def findings_tangent_terms(recipe: Path = typer.Argument(..., help="A recipe whose run trained the networks, e.g. "
                                                                   "recipes/fig4_stability.yaml"),
                           stage: list[str] = typer.Option([], "--stage", help="Stages to measure (default: every "
                                                                               "stage trained from scratch)."),
                           samples: int = typer.Option(256, min=1, help="Real images x0 averaged over."),
                           smoke: bool = SMOKE, runs_dir: Path = RUNS, results_dir: Path = RESULTS):
    """sCM Fig. 4: the x-part and t-part of df/dt against t for each trained network of the recipe's run."""
    manifest = run_of(recipe, runs_dir, smoke)
    from ..tools.tangent_terms import write

    try:
        paths = write(manifest, results_dir, samples, stage)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


@bench_app.command("jvp")
def bench_jvp(network: list[str] = typer.Option(["toy", "S"], "--network", "-n",
                                                help="toy (the digits U-Net, batch 128), S (EDM2-S at 32x32); "
                                                     "on a GPU S-512 / XXL-512 (EDM2 at 4x64x64)."),
              batch: int = typer.Option(None, min=1, help="Batch size (default: each network's own)."),
              repeats: int = typer.Option(7, min=1, help="Timed rounds; each round runs every case once."),
              guidance: float = typer.Option(1.0, min=1.0, help="sCD teacher CFG scale (> 1: two teacher passes)."),
              threads: int = typer.Option(None, min=1, help="torch threads (default: all cores)."),
              precision: str = typer.Option("fp32", help="Autocast: fp32 (none), bf16 or fp16."),
              csv: Path = typer.Option(None, help="Also write the rows to this CSV file.")):
    """Forward vs JVP (torch.func reference and our dual pass) vs sCT / sCD training steps: time and peak memory."""
    from ..tools.bench import AUTOCAST, NETWORKS, run_jvp_bench

    unknown = [n for n in network if n not in NETWORKS]
    if unknown:
        fail(f"unknown --network {unknown[0]!r}; choose from {list(NETWORKS)}")
    if precision not in AUTOCAST:
        fail(f"unknown --precision {precision!r}; choose from {list(AUTOCAST)}")
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
                             lambda it, name=name: track(it, description=f"{name}: timing", console=console), precision)
        rows += part
        first = part[0]
        view = Table(title=f"{name}: {first['name']}, {first['params'] / 1e6:.1f} M params, batch {first['batch']} "
                           f"x {'x'.join(map(str, first['shape']))}, {first['device']}, {precision}, "
                           f"{first['threads']} threads")
        for column in ("case", "median ms", "ratio", "vs", "peak MB", "peak ratio", "target"):
            view.add_column(column, justify="left" if column in ("case", "vs") else "right")
        for r in part:
            if r["ms"] is None:
                view.add_row(r["case"], "failed", "", r["baseline"], "", "", r["error"])
                continue
            ratio, peak = (f"{r[key]:.2f}x" if r[key] is not None else "-" for key in ("ratio", "peak_ratio"))
            met = "" if r["target"] is None or r["ratio"] is None else (" ok" if r["ratio"] <= r["target"]
                                                                           else " MISSED")
            view.add_row(r["case"], f"{r['ms']:.1f}", ratio, r["baseline"], f"{r['peak_mb']:.1f}", peak,
                         "" if r["target"] is None else f"<= {r['target']}x{met}")
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
    from ..tools.precision import precision_rows

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

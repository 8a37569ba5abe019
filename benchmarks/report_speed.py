"""How long `scm-bench report` takes on 10,000 metrics rows (target: under 2 s).

The rows are written as real runs would leave them: a run manifest and a metrics.json (long format) in every
evaluation of fig6_scaling_512 with a seed axis added and 8 consistency NFEs, so one recipe has 5 sizes x 20 seeds x
(teacher 4 + sCT 32 + sCD 64) rows = 10,000 rows in 300 evaluation folders, each row pointing at a sample grid. Then:
  cold: write_report in a fresh Python process, imports included (pandas, matplotlib, the harness), as the CLI runs
  warm: the same call again in this process, and its parts: gather (the manifest, 300 metrics.json), tables (seeds
        averaged, the paper joined, Markdown / LaTeX / CSV text), plots (2 figures, PNG + PDF each)
  import: matplotlib (Figure, Agg and PDF backends) alone, in a fresh process
Usage: python benchmarks/report_speed.py [--seeds 20] [--nfe 8] [--repeats 3]
"""
import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
METRICS = ("fid", "kid", "class_accuracy", "fd_dinov2")
RECIPE = ROOT / "recipes" / "fig6_scaling_512.yaml"
TARGET_S = 2.0


def build_recipe(seeds: int, nfe: int):
    from harness.recipe.load import load_recipe

    steps = list(range(1, nfe + 1))
    return load_recipe(RECIPE, [f"sweep.seed={list(range(seeds))}", f"stages.sct.sampling.steps={steps}",
                                f"stages.scd.sampling.steps={steps}"])


def write_runs(recipe, runs: Path, grid: Path) -> int:
    """The manifest and a metrics.json for every evaluation, as a run leaves them; returns the number of rows."""
    from harness.recipe.manifest import write_manifest
    from harness.recipe.planner import plan_jobs

    rng, count = random.Random(0), 0
    plan = plan_jobs(recipe, runs)
    write_manifest(runs, RECIPE, plan, [], False, "slurm")
    for job in plan.evaluate:
        train = job.train
        common = dict(recipe=recipe.name, variant=job.variant, stage=train.stage, job=train.id, evaluation=job.id,
                      teacher_job=train.parent_id, method=train.method_class.name,
                      method_label=train.method_class.label, size=train.size, params_m=280.2, seed=train.seed,
                      ema="power sigma_rel=0.05", checkpoint_step=100000, num_samples=50000,
                      reference="fid-refs.npz", reference_hash="0123456789", features="inception-legacy_tensorflow",
                      code_version="c6a30c5", date="2025-01-02T03:04:05", grid=str(grid), train_seconds=3600.0,
                      real_vs_real_half_fid=None, diverged=rng.random() < 0.01)
        rows = [{**common, "sampler": setting.sampler, "nfe": setting.nfe(True), "guidance": setting.guidance,
                 "metric": metric, "value": rng.uniform(2, 10)}
                for setting in train.method().sample_settings(job.sampling) for metric in METRICS]
        job.path.mkdir(parents=True, exist_ok=True)
        (job.path / "metrics.json").write_text(json.dumps({"key": {}, "rows": rows}))
        count += len(rows)
    return count


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cold_seconds(seeds: int, nfe: int, runs: Path, results: Path) -> float:
    """write_report in a fresh process: what a user waits for, imports included."""
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); t = time.perf_counter(); "
            "from harness.report.report import write_report; from harness.store.runs import read_index; "
            f"write_report(read_index({str(runs)!r}, 'fig6_scaling_512'), {str(runs)!r}, {str(results)!r}); "
            "print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(done.stdout.split()[-1])


def matplotlib_import_seconds() -> float:
    code = ("import time; t = time.perf_counter(); from matplotlib.figure import Figure; "
            "import matplotlib.backends.backend_agg, matplotlib.backends.backend_pdf; print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def parts(recipe, runs: Path, results: Path, repeats: int) -> dict:
    """Warm seconds of each part of write_report (median of repeats)."""
    from harness.report import paper, render, report, rows, tables
    from harness.report.plots import write_plots
    from harness.store.runs import read_index

    manifest = read_index(runs, recipe.name)
    frame = rows.gather_sources(manifest, runs)
    baselines = paper.paper_rows(recipe.name, paper.load_baselines())

    def compiled():
        table = tables.compile_table(tables.with_paper(tables.aggregate(frame), baselines))
        shown = tables.display_table(table)
        return render.markdown_table(shown), render.latex_table(shown, "x"), table.to_csv()

    table = tables.compile_table(tables.with_paper(tables.aggregate(frame), baselines))
    return {"rows": len(frame), "settings": len(table),
            "gather": timed(lambda: rows.gather_sources(manifest, runs), repeats),
            "tables": timed(compiled, repeats),
            "grids": timed(lambda: render.copy_grids(table, results / "parts"), repeats),
            "plots": timed(lambda: write_plots(table, baselines, results / "parts", recipe.name), repeats),
            "write_report": timed(lambda: report.write_report(manifest, runs, results), repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--nfe", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        grid = tmp / "grid.png"
        grid.write_bytes(bytes(20_000))  # a sample grid's size; copied, never decoded
        recipe = build_recipe(args.seeds, args.nfe)
        count = write_runs(recipe, tmp / "runs", grid)
        cold = cold_seconds(args.seeds, args.nfe, tmp / "runs", tmp / "results")
        warm = parts(recipe, tmp / "runs", tmp / "results", args.repeats)
        mpl = matplotlib_import_seconds()
    print(f"{count} metrics rows in {warm['settings']} table rows (recipe {recipe.name}, {args.seeds} seeds, "
          f"NFE 1..{args.nfe})")
    print(f"cold write_report, fresh process, imports included: {cold:.2f} s "
          f"({'met' if cold < TARGET_S else 'MISSED'}: target < {TARGET_S:.0f} s)")
    print(f"warm write_report: {warm['write_report']:.2f} s  (median of {args.repeats})")
    for part in ("gather", "tables", "grids", "plots"):
        print(f"  {part:<7} {warm[part]:.3f} s")
    print(f"matplotlib import alone (Figure, Agg, PDF; fresh process): {mpl:.2f} s")


if __name__ == "__main__":
    main()

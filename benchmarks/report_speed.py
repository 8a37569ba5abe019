"""How long `scm-bench report` takes on 10,000 metrics rows (target: under 2 s).

The rows are written as real runs would leave them: metrics.json files (long format) for every job of
fig6_scaling_512 with a seed axis added and 8 consistency NFEs, so one recipe has 5 sizes x 20 seeds x (teacher 4 +
sCT 32 + sCD 64) rows = 10,000 rows in 300 job folders, each row pointing at a sample grid. Then:
  cold: write_report in a fresh Python process, imports included (pandas, matplotlib, the harness), as the CLI runs
  warm: the same call again in this process, and its parts: gather (expand_jobs, 300 metrics.json, evaluation keys),
        tables (seeds averaged, the paper joined, Markdown / LaTeX / CSV text), plots (2 figures, PNG + PDF each)
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
TARGET_S = 2.0


def build_recipe(seeds: int, nfe: int):
    from harness.recipe import load_recipe

    return load_recipe(ROOT / "recipes" / "fig6_scaling_512.yaml",
                       [f"sweep.seed={list(range(seeds))}", f"evaluation.consistency_nfe={list(range(1, nfe + 1))}"])


def write_runs(recipe, runs: Path, grid: Path) -> int:
    """metrics.json for every job, as harness/evaluate.py writes them; returns the number of rows."""
    from harness.evaluate import evaluation_key, sample_settings
    from harness.launch import expand_jobs
    from harness.recipe import Recipe

    rng, count = random.Random(0), 0
    for job in expand_jobs(recipe, runs):
        variant = Recipe.model_validate(job["recipe"])
        run_dir = Path(job["run_dir"])
        common = dict(recipe=recipe.name, variant=job["variant"], job=run_dir.name,
                      teacher_job=job.get("teacher", run_dir.name), method=job["method"], size=variant.network.size,
                      params_m=280.2, seed=variant.seed, ema="power sigma_rel=0.05", checkpoint_step=100000,
                      num_samples=50000, reference="fid-refs.npz", reference_hash="0123456789",
                      features="inception-legacy_tensorflow", code_version="c6a30c5", date="2025-01-02T03:04:05",
                      grid=str(grid), train_seconds=3600.0, real_vs_real_half_fid=None,
                      diverged=rng.random() < 0.01)
        rows = [{**common, "sampler": sampler, "nfe": steps if sampler == "consistency" else 2 * steps - 1,
                 "guidance": guidance, "metric": metric, "value": rng.uniform(2, 10)}
                for sampler, steps, guidance in sample_settings(variant, job["method"]) for metric in METRICS]
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps({"key": {"evaluation": evaluation_key(variant)},
                                                          "rows": rows}))
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
            "from harness.report import write_report; "
            "from benchmarks.report_speed import build_recipe; "
            f"write_report(build_recipe({seeds}, {nfe}), {str(runs)!r}, {str(results)!r}); "
            "print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(done.stdout.split()[-1])


def matplotlib_import_seconds() -> float:
    code = ("import time; t = time.perf_counter(); from matplotlib.figure import Figure; "
            "import matplotlib.backends.backend_agg, matplotlib.backends.backend_pdf; print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def parts(recipe, runs: Path, results: Path, repeats: int) -> dict:
    """Warm seconds of each part of write_report (median of repeats)."""
    from harness import report
    from harness.plots import write_plots

    frame = report.gather_sources(recipe, runs)
    paper = report.paper_rows(recipe.name, report.load_baselines())

    def tables():
        table = report.compile_table(report.with_paper(report.aggregate(frame), paper))
        shown = report.display_table(table)
        return report.markdown_table(shown), report.latex_table(shown, "x"), table.to_csv()

    table = report.compile_table(report.with_paper(report.aggregate(frame), paper))
    return {"rows": len(frame), "settings": len(table),
            "gather": timed(lambda: report.gather_sources(recipe, runs), repeats),
            "tables": timed(tables, repeats),
            "grids": timed(lambda: report.copy_grids(table, results / "parts"), repeats),
            "plots": timed(lambda: write_plots(table, paper, results / "parts", recipe.name), repeats),
            "write_report": timed(lambda: report.write_report(recipe, runs, results), repeats)}


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

"""Gather the metrics rows of a recipe's jobs with pandas and write results/<recipe>/table.{md,csv} and grids."""
import shutil
from pathlib import Path

from . import store
from .evaluate import evaluation_key
from .launch import expand_jobs
from .recipe import Recipe

COLUMNS = ["method", "sampler", "nfe", "guidance", "fid", "fid_ratio", "class_accuracy", "train_minutes"]
METHOD_NAMES = {"teacher": "TrigFlow teacher (diffusion)", "sct": "sCT", "scd": "sCD"}


def gather(recipe: Recipe, runs_root: Path):
    """One DataFrame row per (job, NFE) of this recipe's current jobs; empty when nothing has finished."""
    import pandas as pd

    rows = []
    for job in expand_jobs(recipe, runs_root):
        metrics = store.read_json(Path(job["run_dir"]) / "metrics.json")
        current = evaluation_key(Recipe.model_validate(job["recipe"]))  # a sweep variant may evaluate differently
        if metrics and metrics.get("key", {}).get("evaluation") == current:  # rows of other settings are stale
            rows.extend(metrics["rows"])
    return pd.DataFrame(rows)


def compile_table(frame):
    """Teacher first, then sCT and sCD by NFE (per sweep variant); FID ratio to the FID of each row's teacher."""
    if "variant" not in frame:
        frame = frame.assign(variant="", teacher_job=frame.job.where(frame.method == "teacher"))
    teacher_fid = frame[frame.method == "teacher"].groupby("job").fid.first()
    table = frame.assign(
        fid_ratio=frame.fid / frame.teacher_job.map(teacher_fid),
        train_minutes=frame.train_seconds / 60,
        order=frame.method.map({"teacher": 0, "sct": 1, "scd": 2}),
    ).sort_values(["variant", "order", "nfe", "guidance"], kind="stable")
    columns = COLUMNS if frame.variant.eq("").all() else ["variant", *COLUMNS]
    return table[columns].reset_index(drop=True)


def markdown_table(frame) -> str:
    """A pipe table (pandas' to_markdown needs the extra `tabulate` package)."""
    def cell(v):
        if isinstance(v, float):
            return "" if v != v else f"{v:.3f}"
        return str(v)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _markdown(recipe: Recipe, table, frame, grids: dict) -> str:
    variants = table.variant if "variant" in table else [""] * len(table)
    shown = table.assign(method=table.method.map(METHOD_NAMES),
                         grid=[f"[samples]({grids[key]})" for key in zip(variants, table.method, table.nfe,
                                                                          table.guidance)])
    first = frame.iloc[0]
    return "\n".join([
        f"# {recipe.name}: TrigFlow teacher, sCT and sCD", "",
        markdown_table(shown), "",
        "Protocol: FID in the 64-d penultimate feature space of the shipped digits classifier "
        "(harness/assets/digits_classifier.pt), features through clean-fid's folder pipeline; "
        f"{int(first.num_samples)} generated samples ({recipe.evaluation.samples_per_class} per class, fixed seeds, "
        f"the same noise for every method) against all {int(first.reference_count)} real images. "
        f"Real-vs-real floor: FID between two random halves of the real data = {first.real_vs_real_half_fid:.3f} "
        "(half-size sets, so this floor is biased upwards relative to the full-size comparison). "
        "class_accuracy: share of samples the classifier assigns to their conditioning label. "
        f"Guidance scale {first.guidance}. train_minutes: wall time of the stage's training on this machine.", "",
    ])


def write_report(recipe: Recipe, runs_root: Path, results_root: Path):
    """Write the recipe's tables and sample grids; return the compiled table (None when no job has finished)."""
    frame = gather(recipe, runs_root)
    if frame.empty:
        return None
    out = Path(results_root) / recipe.name
    (out / "samples").mkdir(parents=True, exist_ok=True)
    grids, table = {}, compile_table(frame)
    for row in frame.itertuples():
        variant = getattr(row, "variant", "")
        told = f"-guidance-{row.guidance:g}" if row.method != "teacher" and row.guidance != 1.0 else ""
        name = f"{row.method}-nfe-{row.nfe}{told}{'-' + variant.replace(',', '-') if variant else ''}.png"
        if Path(row.grid).is_file():
            shutil.copyfile(row.grid, out / "samples" / name)
        grids[(variant if "variant" in table else "", row.method, row.nfe, row.guidance)] = f"samples/{name}"
    store.write_bytes_atomic(out / "table.csv", table.to_csv(index=False, float_format="%.4f").encode())
    store.write_bytes_atomic(out / "table.md", _markdown(recipe, table, frame, grids).encode())
    return table

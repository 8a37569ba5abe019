"""Metrics rows: one per (evaluated checkpoint, sampling setting, metric), each with where it came from (recipe,
variant, stage, training job, its parent job, method, size, seed, EMA, checkpoint step, code version, date, and the
machines that trained and evaluated it: GPU name or CPU model, torch threads and version). An
evaluation's rows are cached in its metrics.json, keyed by the checkpoint they were made from (or, for a job that
diverged, by its divergence record), so a rerun reuses them and a retrained checkpoint is evaluated again."""
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from .. import store
from ..compute import machine
from ..recipe.jobs import EvalJob
from .train import diverged_record


def code_version() -> str:
    """The git commit of this code (with +dirty when the tree has changes), or "unknown"."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("+dirty" if dirty else "")) or "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def metrics_key(job: EvalJob) -> dict:
    """What the rows are made from: the final checkpoint (its size and time) or, for a diverged job, its record."""
    diverged = diverged_record(job.train)
    if diverged is not None:
        return {"diverged": diverged}
    stat = job.train.final_checkpoint.stat()
    return {"checkpoint": str(job.train.final_checkpoint), "stamp": [stat.st_size, stat.st_mtime_ns]}


def finished_rows(job: EvalJob) -> list[dict] | None:
    """The evaluation's rows if its checkpoint (or divergence) was evaluated already, else None."""
    cached = store.read_json(job.path / "metrics.json")
    if not cached or not (job.train.final_checkpoint.is_file() or diverged_record(job.train)):
        return None
    return cached["rows"] if cached.get("key") == metrics_key(job) else None


def write_rows(job: EvalJob, rows: list[dict]) -> None:
    store.write_json(job.path / "metrics.json", {"key": metrics_key(job), "rows": rows})


def job_context(job: EvalJob) -> dict:
    """What every row of the evaluation records besides its checkpoint, setting, metric and value."""
    train = job.train
    return {"recipe": job.recipe, "variant": job.variant, "stage": job.stage, "job": train.id,
            "evaluation": job.id, "teacher_job": train.parent_id, "method": train.method_class.name,
            "method_label": train.method_class.label, "size": train.size, "seed": train.seed,
            "code_version": code_version(), "date": _now(), **machine()}


def checkpoint_context(job: EvalJob, state: dict, checkpoint: Path, net) -> dict:
    """Where the rows' checkpoint came from, and what it cost: training compute in forward-equivalents (steps x
    batch x the method's cost per step, as `scm-bench plan` counts) and the measured seconds per step."""
    ema, steps = job.train.spec.ema, int(state["step"])
    return {"params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "train_compute": steps * job.train.spec.batch_size * job.train.method().cost_per_step(),
            "seconds_per_step": state["elapsed"] / max(steps, 1),
            "ema": (f"power sigma_rel={ema.sigma_rel}" if ema.kind == "power"
                    else f"halflife {ema.halflife_images:g} images"),
            "checkpoint_step": int(state["step"]), "checkpoint": checkpoint.name, "train_seconds": state["elapsed"],
            "intermediate": int(state["step"]) < job.train.steps, "diverged": False,
            **{f"train_{key}": value for key, value in state.get("machine", {}).items()}}


def diverged_rows(job: EvalJob, conditional: bool) -> list[dict]:
    """A diverged job's rows: every setting and metric it would have had, value NaN, marked diverged with the step
    and the term, so the report counts it and never shows a number for it."""
    cached = finished_rows(job)
    if cached is not None:
        return cached
    record = diverged_record(job.train)
    metrics = ["fid", "kid", "precision", "recall"] + (["fd_dinov2"] if job.evaluation.fd_dinov2 else [])
    context = {**job_context(job), "checkpoint_step": record["step"], "features": job.evaluation.features,
               "intermediate": False, "diverged": True, "diverged_step": record["step"],
               "diverged_term": record["term"], "diverged_message": record["message"]}
    rows = [{**context, "sampler": setting.sampler, "nfe": setting.nfe(conditional), "guidance": setting.guidance,
             "num_samples": 0, "metric": metric, "value": float("nan")}
            for setting in job.train.method().sample_settings(job.sampling) for metric in metrics]
    write_rows(job, rows)
    return rows

"""`scm-bench status` and `scm-bench cancel`: what each job of a recipe is doing, read from its run directory."""
import os
import signal
import subprocess
from pathlib import Path

from . import store


def job_rows(runs_root: Path, recipe_name: str) -> list[dict]:
    """One row per job folder under runs/<recipe>/: state, step / total, last loss, executor, job ids (training
    and evaluation), log path."""
    rows = []
    for run_dir in sorted((Path(runs_root) / recipe_name).glob("*-*")):
        if not (run_dir / "job.json").is_file():
            continue
        progress = store.read_json(run_dir / "progress.json", {})
        submitted = store.read_json(run_dir / "submitted.json", {})
        latest = submitted.get("evaluate") or submitted.get("train") or {}
        state = "finished" if (run_dir / "metrics.json").is_file() else progress.get("state", "submitted")
        diverged = store.read_json(run_dir / "diverged.json")
        if diverged:
            state = f"diverged at step {diverged['step']} ({diverged['term']})"
        rows.append({"job": run_dir.name, "state": state, "step": progress.get("step", 0),
                     "total": progress.get("total"), "loss": progress.get("loss"),
                     "variant": store.read_json(run_dir / "job.json", {}).get("variant", ""),
                     "executor": latest.get("executor", "?"),
                     "job_id": " ".join(s["job_id"] for s in submitted.values()),
                     "submissions": list(submitted.values()),
                     "log": latest.get("stderr", str(run_dir / "logs"))})
    return rows


def cancel_jobs(runs_root: Path, recipe_name: str) -> list[str]:
    """Cancel every unfinished job of the recipe (scancel on Slurm, SIGTERM to a local job's process); returns
    the jobs cancelled. Their checkpoints stay: a later `scm-bench run` resumes them."""
    cancelled = []
    for row in job_rows(runs_root, recipe_name):
        if row["state"] == "finished" or row["state"].startswith("diverged"):
            continue
        hit = False
        for submission in row["submissions"]:
            if submission["executor"] == "slurm":
                done = subprocess.run(["scancel", submission["job_id"]], check=False, capture_output=True)
                hit = hit or done.returncode == 0
            elif submission["executor"] == "local":
                try:
                    os.kill(int(submission["job_id"]), signal.SIGTERM)
                    hit = True
                except (ProcessLookupError, ValueError):
                    continue  # already gone
        if hit:
            cancelled.append(row["job"])
    return cancelled

"""`scm-bench status` and `scm-bench cancel`, from the run manifest: every job the run planned (pending ones too),
by variant, with what its folder says of it; and stopping a run: its launcher, its running jobs and what they
would have started."""
import os
import signal
import socket
import subprocess
from pathlib import Path

from .. import store
from ..recipe.jobs import EvalJob, TrainJob
from ..recipe.manifest import Launcher, RunManifest
from .rows import finished_rows
from .submission import submitted
from .train import diverged_record


def _train_state(job: TrainJob, progress: dict) -> str:
    diverged = diverged_record(job)
    if diverged:
        return f"diverged at step {diverged['step']} ({diverged['term']})"
    if store.checkpoint_complete(job.final_checkpoint):
        return "trained"
    return progress.get("state") or ("submitted" if submitted(job.path) else "pending")


def _evaluation_state(job: EvalJob) -> str:
    if finished_rows(job) is not None:
        return "finished"
    return store.read_json(job.path / "progress.json", {}).get("state") or (
        "submitted" if submitted(job.path) else "pending")


def _row(job, work: str, state: str, progress: dict) -> dict:
    records = submitted(job.path)
    latest = records.get(work) or next(iter(records.values()), {})
    train = job if isinstance(job, TrainJob) else job.train
    return {"job": job.id if work == "train" else f"{train.id}/{job.id}", "stage": job.stage,
            "variant": job.variant, "work": work, "state": state, "step": progress.get("step", 0),
            "total": progress.get("total", train.steps), "loss": progress.get("loss"),
            "executor": latest.get("executor", ""), "job_id": " ".join(r["job_id"] for r in records.values()),
            "submissions": list(records.values()), "log": latest.get("stderr", "")}


def job_rows(manifest: RunManifest) -> list[dict]:
    """One row per training job and evaluation of the run, by variant (then in plan order)."""
    rows = []
    for job in manifest.plan.train:
        progress = store.read_json(job.path / "progress.json", {})
        rows.append(_row(job, "train", _train_state(job, progress), progress))
    for job in manifest.plan.evaluate:
        progress = store.read_json(job.train.path / "progress.json", {})
        rows.append(_row(job, "evaluate", _evaluation_state(job), progress))
    order = {variant: i for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows))}
    return sorted(rows, key=lambda r: order[r["variant"]])


LAUNCHER_MARKS = ("harness.cli", "scm-bench")  # what a launcher's command line names


def _ours(pid: int, marks: tuple[str, ...]) -> bool:
    """Whether a pid (still) runs one of our processes (its command line names one of `marks`)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: trust the record
        return True
    return any(mark in command for mark in marks)


def _terminate(pid: int, marks: tuple[str, ...]) -> bool:
    if not _ours(pid, marks):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
        return True
    except ProcessLookupError:
        return False


def live_launcher(manifest: RunManifest | None) -> Launcher | None:
    """The `scm-bench run` process still following this run on this machine (not this process), or None."""
    launcher = manifest.launcher if manifest else None
    if launcher is None or launcher.host != socket.gethostname() or launcher.pid == os.getpid():
        return None
    return launcher if _ours(launcher.pid, LAUNCHER_MARKS) else None


def cancel_run(manifest: RunManifest) -> list[str]:
    """Stop the run: its launcher (which stops its local jobs and submits nothing more), then every unfinished job
    it submitted directly (scancel on Slurm, SIGTERM locally); a shared job another recipe's run submitted is left
    to that run. Returns what was stopped. Checkpoints stay: a later run resumes."""
    stopped = []
    launcher = manifest.launcher
    if launcher and launcher.host == socket.gethostname() and _terminate(launcher.pid, LAUNCHER_MARKS):
        stopped.append(f"launcher (pid {launcher.pid})")
    for row in job_rows(manifest):
        if row["state"] in ("trained", "finished") or row["state"].startswith("diverged"):
            continue
        hit = False
        for record in row["submissions"]:
            if record.get("run") not in (None, manifest.recipe):  # another recipe's run submitted it
                continue
            if record["executor"] == "slurm":
                done = subprocess.run(["scancel", record["job_id"]], check=False, capture_output=True)
                hit = hit or done.returncode == 0
            elif record["executor"] == "local" and record["job_id"].isdigit():
                hit = _terminate(int(record["job_id"]), ("submitit",)) or hit
        if hit:
            stopped.append(row["job"])
    return stopped

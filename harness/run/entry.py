"""The entry point of every submitted job: a `Task` (train a job, generate a share of an evaluation's samples, or
evaluate) run by `JobEntry` inside a submitit task.

A lock on the job's folder keeps a second copy of the same work from running at once (two writers would interleave
checkpoints or rows): it waits for the first to end, then finds its work done or resumes it; in a multi-task job
only rank 0 holds it. Stopping: training ends its step, saves and stops on SIGTERM / SIGINT (stopping.py);
generation and evaluation stop at once on SIGTERM (every file they write is atomic, so a rerun resumes at the
first missing shard) instead of submitit's default of ignoring it.
"""
import fcntl
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Literal

import submitit

from ..compute import job_task
from ..recipe.jobs import EvalJob, TrainJob
from .. import store
from .evaluate import evaluate, generate_part
from .rows import diverged_rows
from .train import diverged_record, train_stage

LOCK_WAIT_S = 1800  # a rerun while an earlier copy still runs (its launcher was killed): wait for it this long


@dataclass(frozen=True)
class Task:
    """One piece of submitted work; `part` = (task, tasks) of a generation array."""
    kind: Literal["train", "generate", "evaluate"]
    job: TrainJob | EvalJob
    threads: int = 1
    part: tuple[int, int] | None = None
    lock_wait_s: float = LOCK_WAIT_S

    @property
    def train_job(self) -> TrainJob:
        return self.job if isinstance(self.job, TrainJob) else self.job.train

    @property
    def key(self) -> tuple:
        """Names this piece of work among everything a run submits."""
        return self.kind, self.job.id, self.part[0] if self.part else 0

    @property
    def record_name(self) -> str:
        """Its entry in the folder's submitted.json."""
        return self.kind + (f"-{self.part[0]}" if self.part else "")


class JobEntry(submitit.helpers.Checkpointable):
    """When Slurm signals preemption or the time limit, submitit calls checkpoint(), whose default resubmits this
    same call: a requeued training job resumes from its newest checkpoint, and since resume is exact it ends where
    an uninterrupted run would."""

    def __call__(self, task: Task):
        return run_task(task)


def _stop_now(signum, frame):
    raise InterruptedError(f"stopped by {signal.Signals(signum).name}; a rerun resumes from the saved shards")


def run_task(task: Task):
    """Train (returns the final checkpoint, or None when diverged), generate (returns nothing) or evaluate (returns
    the metrics rows; a diverged job's rows say so)."""
    task.job.path.mkdir(parents=True, exist_ok=True)
    if task.kind != "train":
        if os.environ.get("SUBMITIT_EXECUTOR") in ("local", "slurm"):  # a job's own process (not debug's)
            signal.signal(signal.SIGTERM, _stop_now)
        if diverged_record(task.train_job):  # nothing to sample: rows that say so
            return [] if task.kind == "generate" else diverged_rows(task.job, task.train_job.data.class_conditional)
        _check_final(task.train_job)
    if task.kind == "generate":  # a share of the shards; several tasks write different files, so no lock
        return generate_part(task.job, task.part, task.threads)
    work = train_stage if task.kind == "train" else evaluate
    if job_task()[0] > 0:  # the other ranks of a data-parallel job: rank 0 holds the lock for them
        return work(task.job, task.threads)
    with open(task.job.path / ".lock", "w") as lock:
        _wait_for_lock(lock, task.job.id, task.lock_wait_s)
        return work(task.job, task.threads)


def _check_final(job: TrainJob) -> None:
    problem = store.checkpoint_problem(job.final_checkpoint)
    if problem is not None:
        raise FileNotFoundError(f"{job.id}: final checkpoint {job.final_checkpoint.name} is {problem}; rerun to "
                                "train it")


def _wait_for_lock(lock, name: str, wait_s: float) -> None:
    """Take the folder's lock. Another process holding it runs this work (an earlier run whose launcher was killed,
    or a duplicate submission): wait for it to finish, then go on; give up with a clear error after wait_s."""
    deadline = time.time() + wait_s
    told = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.time() >= deadline:
                raise RuntimeError(f"{name} is still running in another process after {wait_s:g} s; wait for it or "
                                   "stop it (scm-bench cancel RECIPE), then run again") from None
            if not told:
                print(f"{name} is running in another process; waiting for it", file=sys.stderr, flush=True)
                told = True
            time.sleep(1.0)

"""Running a plan: every training job after the jobs it starts from and reads, each evaluation after its training
(and after its generation array, with evaluation.array_tasks > 1).

On Slurm everything is submitted at once: per level of the job graph and kind of work, one array per resources
setting, each waiting for the arrays it needs through `afterok`. Locally (and in-process with debug) the levels run
one after the other, a level's work in waves of one job per core (more would only fight over the cores and the
memory), jobs of a method together. Work the store already holds (a teacher another recipe trained, an evaluation
made before) is skipped; interrupted work resumes.

Stopping is deterministic: SIGTERM or SIGINT to the launcher (or `scm-bench cancel`) only records the request; the
waiting loop then sends SIGTERM to each local job (its submitit controller forwards it to the tasks: training ends
its step and saves, evaluation stops at once), repeats it until they end or STOP_WAIT_S passes, and only then
lets submitit kill what is left. Slurm jobs are cancelled with scancel.
"""
import os
import signal
import time
from pathlib import Path

import submitit

from .. import store
from ..recipe.jobs import EvalJob, Plan, TrainJob
from .entry import Task
from .rows import finished_rows
from .submission import job_error, result, still_queued, submit_array
from .train import diverged_record

STOP_WAIT_S = 30  # how long stopped local jobs get to save and exit
RESEND_S = 5.0  # a job that has not yet set up its stop handler is sent SIGTERM again after this long
KINDS = ("train", "generate", "evaluate")


class Stopped(Exception):
    """The run was asked to stop (a signal, or scm-bench cancel); its local jobs were stopped with it."""


def levels(plan: Plan) -> list[list[TrainJob]]:
    """The training jobs by depth in the graph of init and teacher references: roots first."""
    depth: dict[str, int] = {}
    for job in plan.train:  # parents come first in plan.train
        depth[job.id] = 1 + max((depth.get(parent.id, -1) for parent in job.parents), default=-1)
    return [[job for job in plan.train if depth[job.id] == d] for d in range(max(depth.values(), default=-1) + 1)]


def _pending(kind: str, train: list[TrainJob], evaluations: list[EvalJob], rows: dict) -> list[Task]:
    """This level's `kind` work that is not done yet; finished evaluations put their rows in `rows`. A diverged job
    is done training (a rerun would diverge again: resume is exact) and is evaluated as diverged."""
    if kind == "train":
        return [Task("train", job) for job in train
                if not (diverged_record(job) or store.checkpoint_complete(job.final_checkpoint))]
    tasks = []
    for job in evaluations:
        cached = finished_rows(job)
        if cached is not None:
            rows[job.id] = cached
        elif kind == "evaluate":
            tasks.append(Task("evaluate", job))
        elif job.evaluation.array_tasks > 1 and not diverged_record(job.train):
            tasks += [Task("generate", job, part=(p, job.evaluation.array_tasks))
                      for p in range(job.evaluation.array_tasks)]
    return tasks


def _resources(task: Task):
    return task.job.resources


def _needs(task: Task) -> list[tuple[str, str]]:
    """The (kind, job id) whose submissions this task waits for."""
    if task.kind == "train":
        return [("train", parent.id) for parent in task.job.parents]
    return [("train", task.job.train.id)] + ([("generate", task.job.id)] if task.kind == "evaluate" else [])


class Launcher:
    def __init__(self, executor: str, logs: Path, progress_view, stop, run: str | None = None):
        self.executor, self.logs, self.view, self.stop, self.run = executor, Path(logs), progress_view, stop, run
        self.on_slurm, self.cores = executor == "slurm", os.cpu_count() or 1
        self.handles: dict[tuple, list] = {}
        self.submitted: list[tuple[Task, object]] = []

    def submit_group(self, tasks: list[Task]) -> None:
        """Tasks of one kind and level: an array per resources setting (Slurm), else waves of one per core."""
        groups: dict[str, list[Task]] = {}
        for task in tasks:
            groups.setdefault(_resources(task).model_dump_json(), []).append(task)
        for members in groups.values():
            resources = _resources(members[0])
            after = sorted({str(h.job_id) for t in members for need in _needs(t) for h in self.handles.get(need, [])})
            per_wave = len(members) if self.on_slurm else max(1, self.cores // resources.tasks)
            if not self.on_slurm:  # a wave's jobs take about as long when they share a method
                members.sort(key=lambda t: t.train_job.spec.method)
            threads = (resources.cpus_per_task if self.on_slurm else
                       max(1, self.cores // (min(len(members), per_wave) * resources.tasks)))
            members = [Task(t.kind, t.job, threads, t.part) for t in members]
            for first in range(0, len(members), per_wave):
                wave = self.submit_wave(members[first:first + per_wave], resources, after)
                if not self.on_slurm:
                    self.wait(wave)

    def submit_wave(self, tasks: list[Task], resources, after: list[str]) -> list[tuple[Task, object]]:
        queued = {task.key: still_queued(task) for task in tasks} if self.on_slurm else {}
        fresh = [task for task in tasks if queued.get(task.key) is None]
        handles = submit_array(fresh, self.executor, resources, after, self.logs, self.run) if fresh else []
        new = dict(zip((t.key for t in fresh), handles))
        wave = [(task, queued.get(task.key) or new[task.key]) for task in tasks]
        for task, handle in wave:
            self.handles.setdefault((task.kind, task.job.id), []).append(handle)
        self.submitted += wave
        return wave

    def _show(self, pairs: list[tuple[Task, object]]) -> None:
        """One update per job: a job's work comes training first, so its last task's progress is the furthest
        along (a plain view, unlike the bars, would print each of a job's tasks' states in turn)."""
        shown = {task.train_job.label: _progress(task) for task, _ in pairs}
        for label, info in shown.items():
            self.view.update(label, info)

    def wait(self, pairs: list[tuple[Task, object]]) -> dict[tuple, object]:
        """Poll until every job ends, showing progress; a stop request stops them all (then Stopped), a failure
        stops the rest (then RuntimeError naming the job and its log)."""
        results = {}
        while len(results) < len(pairs):
            if self.stop is not None and self.stop.requested:
                self.stop_all()
                raise Stopped(self.stop.requested)
            self._show(pairs)
            for task, handle in pairs:
                if task.key not in results and handle.done():
                    try:
                        results[task.key] = result(handle)
                    except Exception as error:  # noqa: BLE001 - any job failure ends the run the same way
                        self.stop_all()
                        raise RuntimeError(f"{task.train_job.label} {task.kind} job failed: {job_error(error)} "
                                           f"(full log: {handle.paths.stderr})") from None
            if len(results) < len(pairs):
                time.sleep(0.5)
        self._show(pairs)
        return results

    def stop_all(self) -> None:
        """SIGTERM to every running local job (again every RESEND_S) until all end or STOP_WAIT_S passes, then
        submitit's own cancel for what is left; scancel for Slurm jobs."""
        local = [handle for _, handle in self.submitted if isinstance(handle, submitit.LocalJob)]
        for _, handle in self.submitted:
            if not isinstance(handle, submitit.LocalJob):
                handle.cancel(check=False)
        deadline, resend = time.time() + STOP_WAIT_S, 0.0
        while time.time() < deadline and not all(handle.done() for handle in local):
            if time.time() >= resend:
                for handle in local:
                    if not handle.done():
                        _signal(int(handle.job_id), signal.SIGTERM)
                resend = time.time() + RESEND_S
            time.sleep(0.2)
        for handle in local:
            if not handle.done():
                handle.cancel(check=False)


def _progress(task: Task) -> dict:
    """What the job's progress.json says, with its evaluation's state once training is done."""
    info = store.read_json(task.train_job.path / "progress.json", {})
    if task.kind != "train" and info.get("state") in ("trained", None):
        info = {**info, "state": store.read_json(task.job.path / "progress.json", {}).get("state", "evaluating")}
    return info


def _signal(pid: int, signum) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def run_plan(plan: Plan, executor: str, logs: Path, progress_view, stop=None, wait: bool = True) -> list[dict]:
    """Submit every level's work and (with `wait`) return every metrics row, in plan order."""
    launcher, rows = Launcher(executor, logs, progress_view, stop, plan.recipe), {}
    for level in levels(plan):
        ids = {job.id for job in level}
        evaluations = [job for job in plan.evaluate if job.train.id in ids]
        for kind in KINDS:
            tasks = _pending(kind, level, evaluations, rows if kind == "evaluate" else {})
            if tasks:
                launcher.submit_group(tasks)
    if not wait:
        return []
    results = (launcher.wait(launcher.submitted) if launcher.on_slurm else
               {task.key: result(handle) for task, handle in launcher.submitted})
    for (kind, job_id, _), value in results.items():
        if kind == "evaluate":
            rows[job_id] = value
    return [row for job in plan.evaluate for row in rows.get(job.id, [])]

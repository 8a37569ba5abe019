"""Submitting tasks through submitit (Slurm, local processes, or in-process for debugging), and what each
submission leaves in its job's folder: job.json (the typed job) and submitted.json (per piece of work: executor,
job id, log paths), which `status` and `cancel` read. On Slurm a rerun follows work still queued from an earlier
submission (e.g. with --no-wait) instead of submitting it twice."""
import subprocess
from pathlib import Path

import submitit

from .. import store
from ..recipe.sections import ResourcesConfig
from .entry import JobEntry, Task

SLURM_ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED",
                "REQUEUE_HOLD", "REQUEUE_FED"}


def make_executor(kind: str, folder: Path, resources: ResourcesConfig | None = None, after: list[str] = (),
                  name: str = "scm-bench"):
    r = resources or ResourcesConfig()
    if kind == "debug":
        return submitit.DebugExecutor(folder=str(folder))
    if kind == "slurm":
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        wanted = dict(name=name, timeout_min=r.time_min, nodes=r.nodes, tasks_per_node=r.tasks,
                      cpus_per_task=r.cpus_per_task, mem_gb=r.mem_gb, gpus_per_node=r.gpus_per_node or None,
                      slurm_partition=r.partition, slurm_account=r.account, slurm_qos=r.qos,
                      slurm_constraint=r.constraint,
                      # one failed rank ends the job instead of leaving the others waiting in a collective
                      slurm_srun_args=["--kill-on-bad-exit=1"] if r.world_size > 1 else None,
                      # a job whose dependency failed is cancelled instead of pending forever
                      slurm_additional_parameters={"dependency": "afterok:" + ":".join(after),
                                                   "kill-on-invalid-dep": "yes"} if after else None)
        executor.update_parameters(**{key: value for key, value in wanted.items() if value is not None})
        return executor
    executor = submitit.LocalExecutor(folder=str(folder))
    executor.update_parameters(timeout_min=24 * 60, tasks_per_node=r.tasks)
    return executor


def submitted(folder: Path) -> dict:
    """What submitted.json records of a job folder: {work name: {executor, job_id, stdout, stderr}}."""
    return store.read_json(Path(folder) / "submitted.json", {})


def _record(task: Task, handle, executor: str, run: str | None) -> None:
    path = task.job.path / "submitted.json"
    record = store.read_json(path, {})
    record[task.record_name] = {"executor": executor, "job_id": str(handle.job_id), "run": run,
                                "stdout": str(handle.paths.stdout), "stderr": str(handle.paths.stderr)}
    store.write_json(path, record)


def still_queued(task: Task):
    """The Slurm job already doing this work (a run submitted earlier, e.g. with --no-wait, still queued or
    running), so a rerun follows it instead of submitting a duplicate; None when there is none."""
    record = submitted(task.job.path).get(task.record_name)
    if not record or record.get("executor") != "slurm":
        return None
    try:
        state = subprocess.run(["squeue", "-h", "-j", record["job_id"], "-o", "%T"], capture_output=True, text=True,
                               timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if not state or state[0] not in SLURM_ACTIVE:
        return None
    return submitit.SlurmJob(folder=Path(record["stdout"]).parent, job_id=record["job_id"])


def submit_array(tasks: list[Task], executor: str, resources: ResourcesConfig, after: list[str],
                 logs: Path, run: str | None = None) -> list:
    """One submission (a Slurm array where there are several) of these tasks; each job's folder gets job.json and
    its submitted.json entry, which names the run (recipe name) that submitted it: a job shared by two recipes'
    runs is cancelled only by the run that submitted it."""
    ex = make_executor(executor, logs, resources, after, name=f"scm-{tasks[0].kind}")
    for task in tasks:
        task.job.path.mkdir(parents=True, exist_ok=True)
        store.write_json(task.job.path / "job.json", task.job.model_dump(mode="json"))
    if len(tasks) == 1:
        handles = [ex.submit(JobEntry(), tasks[0])]
    else:
        with ex.batch():
            handles = [ex.submit(JobEntry(), task) for task in tasks]
    for task, handle in zip(tasks, handles):
        _record(task, handle, executor, run)
    return handles


def submit_one(task: Task, executor: str, resources: ResourcesConfig | None = None):
    """One task on its own (tests and tools); logs in its job's folder."""
    return submit_array([task], executor, resources or ResourcesConfig(), [], task.job.path / "logs")[0]


def result(handle):
    """A job's result; a multi-task (data-parallel) job returns one per task, all the same: rank 0's."""
    return handle.results()[0]


def job_error(error: Exception) -> str:
    """The job's own exception line out of submitit's wrapper (which ends with log paths)."""
    text = str(error)
    if "----------------------" in text:
        trace = text.split("----------------------")[1]
        text = [line for line in trace.splitlines() if line.strip()][-1]
    elif not isinstance(error, RuntimeError) or "Job" not in text:
        text = f"{type(error).__name__}: {text}"
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__

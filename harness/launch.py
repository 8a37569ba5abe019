"""Turn a recipe into stage jobs and run them through submitit (Slurm, local processes, or in-process for debugging).

teacher -> (sCT, sCD), the students initialised from the teacher's EMA. Each job's folder name carries a hash of
everything it depends on, so re-running a recipe reuses finished jobs and resumes interrupted ones.
"""
import os
import time
from pathlib import Path

import submitit

from . import store
from .recipe import Recipe, config_hash

STUDENTS = ("sct", "scd")


def plan_jobs(recipe: Recipe, runs_root: Path) -> dict[str, dict]:
    """The job specs of every stage the recipe enables, keyed by method."""
    base = recipe.model_dump(exclude={"stages", "executor", "resources", "evaluation"})
    teacher_id = config_hash(base, recipe.stages.teacher.model_dump())
    jobs = {"teacher": {"method": "teacher", "id": f"teacher-{teacher_id}"}}
    for method in STUDENTS:
        if recipe.stage(method) is not None:
            student_id = config_hash(teacher_id, method, recipe.stage(method).model_dump())
            jobs[method] = {"method": method, "id": f"{method}-{student_id}"}
    recipe_dict = recipe.model_dump(mode="json")
    for job in jobs.values():
        job.update(recipe=recipe_dict, runs_root=str(runs_root),
                   run_dir=str(Path(runs_root) / recipe.name / job["id"]))
    return jobs


def _executor(kind: str, folder: Path, resources=None):
    if kind == "debug":
        return submitit.DebugExecutor(folder=str(folder))
    if kind == "slurm":
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        r = resources
        wanted = dict(timeout_min=r.time_min, cpus_per_task=r.cpus_per_task, mem_gb=r.mem_gb,
                      gpus_per_node=r.gpus_per_node or None, slurm_partition=r.partition, slurm_account=r.account,
                      slurm_qos=r.qos, slurm_constraint=r.constraint)
        executor.update_parameters(**{key: value for key, value in wanted.items() if value is not None})
        return executor
    executor = submitit.LocalExecutor(folder=str(folder))
    executor.update_parameters(timeout_min=24 * 60)
    return executor


class StageJob(submitit.helpers.Checkpointable):
    """A stage's job: train (resuming from its newest checkpoint) then evaluate. When Slurm signals preemption or
    the time limit, submitit calls checkpoint(), whose default resubmits this same call: the requeued job resumes
    from the newest checkpoint, and since resume is exact it ends where an uninterrupted run would."""

    def __call__(self, job: dict) -> list[dict]:
        from .evaluate import run_job

        return run_job(job)


def _submit(job: dict, kind: str, resources=None):
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    store.write_json(run_dir / "job.json", job)
    handle = _executor(kind, run_dir / "logs", resources).submit(StageJob(), job)
    store.write_json(run_dir / "submitted.json", {"executor": kind, "job_id": str(handle.job_id),
                                                  "stdout": str(handle.paths.stdout),
                                                  "stderr": str(handle.paths.stderr)})
    return handle


def job_error(error: Exception) -> str:
    """The job's own exception line out of submitit's wrapper (which ends with log paths)."""
    text = str(error)
    if "----------------------" in text:
        trace = text.split("----------------------")[1]
        text = [line for line in trace.splitlines() if line.strip()][-1]
    elif not isinstance(error, RuntimeError) or "Job" not in text:
        text = f"{type(error).__name__}: {text}"
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def _wait(submitted: dict, progress_view) -> dict[str, list[dict]]:
    """Poll the jobs' progress files into the progress bars until all end; raise on the first failure.

    Ctrl-C cancels the jobs (local jobs would otherwise outlive the command); a re-run resumes them.
    """
    results, method = {}, None

    def cancel_all():
        for _, handle in submitted.values():
            handle.cancel(check=False)

    try:
        while len(results) < len(submitted):
            for method, (job, handle) in submitted.items():
                progress_view.update(method, store.read_json(Path(job["run_dir"]) / "progress.json", {}))
                if method not in results and handle.done():
                    results[method] = handle.result()
            time.sleep(0.5)
    except KeyboardInterrupt:
        cancel_all()
        raise
    except Exception as error:
        cancel_all()
        log = Path(submitted[method][0]["run_dir"]) / "logs"
        raise RuntimeError(f"{method} job failed: {job_error(error)} (full log: {log})") from None
    for method, (job, _) in submitted.items():
        progress_view.update(method, store.read_json(Path(job["run_dir"]) / "progress.json", {}))
    return results


def preflight(recipe: Recipe) -> None:
    """Fail before anything is submitted when the data cannot feed the network (one-line errors)."""
    from .data import load_data

    data = load_data(recipe.data)
    levels = len(recipe.network.channel_mult or (1, 2))  # (1, 2): ToyUNet's default
    if recipe.network.name == "toy-unet" and data.shape[-1] % 2 ** (levels - 1):
        raise ValueError(f"images are {data.shape[-1]}x{data.shape[-1]} but network.channel_mult has {levels} levels; "
                         f"the resolution must be divisible by {2 ** (levels - 1)}")
    if data.num_classes == 0 and recipe.evaluation.guidance != 1.0:
        raise ValueError("evaluation.guidance > 1 needs class labels; give data.labels or set guidance: 1.0")


def run_recipe(recipe: Recipe, runs_root: Path, executor: str, progress_view) -> list[dict]:
    """Run teacher, then the students side by side; return every metrics row."""
    preflight(recipe)
    jobs = plan_jobs(recipe, runs_root)
    cores = os.cpu_count() or 1
    teacher = jobs.pop("teacher")
    on_slurm = executor == "slurm"  # each job gets its own cpus_per_task there, not a share of this machine
    teacher["threads"] = recipe.resources.cpus_per_task if on_slurm else cores
    rows = _wait({"teacher": (teacher, _submit(teacher, executor, recipe.resources))}, progress_view)["teacher"]
    init = str(store.checkpoint_path(Path(teacher["run_dir"]), recipe.stages.teacher.steps))
    submitted = {}
    for method, job in jobs.items():
        job.update(init=init, threads=recipe.resources.cpus_per_task if on_slurm else max(1, cores // len(jobs)))
        submitted[method] = (job, _submit(job, executor, recipe.resources))
    results = _wait(submitted, progress_view) if submitted else {}
    for method in submitted:  # recipe order, not completion order, so reruns list rows identically
        rows.extend(results[method])
    return rows

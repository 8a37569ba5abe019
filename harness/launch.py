"""Turn a recipe into stage jobs and run them through submitit (local processes, or in-process for debugging).

teacher -> (sCT, sCD), the students initialised from the teacher's EMA. Each job's folder name carries a hash of
everything it depends on, so re-running a recipe reuses finished jobs and resumes interrupted ones.
"""
import os
import time
from pathlib import Path

from . import store
from .recipe import Recipe, config_hash

STUDENTS = ("sct", "scd")


def plan_jobs(recipe: Recipe, runs_root: Path) -> dict[str, dict]:
    """The job specs of every stage the recipe enables, keyed by method."""
    base = recipe.model_dump(exclude={"stages", "executor", "evaluation"})
    teacher_id = config_hash(base, recipe.stages.teacher.model_dump())
    jobs = {"teacher": {"method": "teacher", "id": f"teacher-{teacher_id}"}}
    for method in STUDENTS:
        if recipe.stage(method) is not None:
            jobs[method] = {"method": method, "id": f"{method}-{config_hash(teacher_id, method, recipe.stage(method).model_dump())}"}
    recipe_dict = recipe.model_dump(mode="json")
    for job in jobs.values():
        job.update(recipe=recipe_dict, runs_root=str(runs_root),
                   run_dir=str(Path(runs_root) / recipe.name / job["id"]))
    return jobs


def _executor(kind: str, folder: Path, threads: int):
    import submitit

    if kind == "debug":
        return submitit.DebugExecutor(folder=str(folder))
    executor = submitit.LocalExecutor(folder=str(folder))
    executor.update_parameters(timeout_min=24 * 60, cpus_per_task=threads)
    return executor


def _submit(job: dict, kind: str):
    from .evaluate import run_job

    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    store.write_json(run_dir / "job.json", {k: v for k, v in job.items()})
    return _executor(kind, run_dir / "logs", job["threads"]).submit(run_job, job)


def _wait(submitted: dict, progress_view) -> dict[str, list[dict]]:
    """Poll the jobs' progress files into the progress bars until all end; raise on the first failure."""
    while True:
        for method, (job, handle) in submitted.items():
            progress_view.update(method, store.read_json(Path(job["run_dir"]) / "progress.json", {}))
        if all(handle.done() for _, handle in submitted.values()):
            break
        time.sleep(0.5)
    results = {}
    for method, (job, handle) in submitted.items():
        try:
            results[method] = handle.result()
        except Exception as error:  # submitit wraps the job's traceback; point at the log
            log = Path(job["run_dir"]) / "logs"
            raise RuntimeError(f"{method} job failed: {str(error).strip().splitlines()[-1]} (logs: {log})") from None
    return results


def run_recipe(recipe: Recipe, runs_root: Path, executor: str, progress_view) -> list[dict]:
    """Run teacher, then the students side by side; return every metrics row."""
    jobs = plan_jobs(recipe, runs_root)
    cores = os.cpu_count() or 1
    teacher = jobs.pop("teacher")
    teacher["threads"] = cores
    rows = _wait({"teacher": (teacher, _submit(teacher, executor))}, progress_view)["teacher"]
    init = str(store.checkpoint_path(Path(teacher["run_dir"]), recipe.stages.teacher.steps))
    submitted = {}
    for method, job in jobs.items():
        job.update(init=init, threads=max(1, cores // len(jobs)))
        submitted[method] = (job, _submit(job, executor))
    for result in _wait(submitted, progress_view).values() if submitted else []:
        rows.extend(result)
    return rows

"""Turn a recipe into jobs and run them through submitit (Slurm, local processes, or in-process for debugging).

Stages: teacher training -> (teacher evaluation, sCT / sCD training from the teacher's EMA) -> student evaluation;
with evaluation.array_tasks > 1, an array of generation tasks runs before each evaluation and shares its shards.
A sweep multiplies the jobs; jobs of one stage with the same resources go out as one array, and on Slurm each
array waits for the arrays it needs through `afterok` dependencies. Each job's folder name carries a hash of
everything it depends on, so re-running a recipe skips finished jobs and resumes interrupted ones.
"""
import os
import time
from pathlib import Path

import submitit

from . import store
from .recipe import Recipe, RecipeError, ResourcesConfig, config_hash
from .sweep import STUDENTS, expand_sweep

STOP_WAIT_S = 30  # Ctrl-C: how long to wait for cancelled jobs to save and exit

# (what the job does, whose job): the order stages are submitted in; each waits only for what it needs
STAGES = (("train", "teacher"), ("generate", "teacher"), ("evaluate", "teacher"),
          ("train", "student"), ("generate", "student"), ("evaluate", "student"))


def plan_jobs(recipe: Recipe, runs_root: Path) -> dict[str, dict]:
    """The training jobs of one recipe variant, keyed by method; students name their teacher's job."""
    # settings left at their defaults are not hashed, so a field added to the schema later keeps existing job ids
    hashed = recipe.model_dump(exclude={"stages", "executor", "resources", "evaluation", "sweep", "variant"},
                               exclude_defaults=True)
    stage_settings = {m: recipe.stage(m).model_dump(exclude={"resources"}, exclude_defaults=True)
                      for m in ("teacher", *STUDENTS)
                      if recipe.stage(m) is not None}
    teacher_id = f"teacher-{config_hash(hashed, stage_settings['teacher'])}"
    jobs = {"teacher": {"method": "teacher", "id": teacher_id}}
    for method in STUDENTS:
        if method in stage_settings:
            jobs[method] = {"method": method, "id": f"{method}-{config_hash(teacher_id, method, stage_settings[method])}",
                            "teacher": teacher_id}
    recipe_dict = recipe.model_dump(mode="json")
    run_root = Path(runs_root) / recipe.name
    for job in jobs.values():
        job.update(recipe=recipe_dict, runs_root=str(runs_root), run_dir=str(run_root / job["id"]),
                   variant=recipe.variant, resources=recipe.stage_resources(job["method"]).model_dump())
        if "teacher" in job:
            job["init"] = str(store.checkpoint_path(run_root / teacher_id, recipe.stages.teacher.steps))
    return jobs


def expand_jobs(recipe: Recipe, runs_root: Path) -> list[dict]:
    """Every training job of every sweep variant, each once (variants may share a teacher), teachers first."""
    from .evaluate import evaluation_key

    unique, keys = {}, {}
    for variant in expand_sweep(recipe):
        for job in plan_jobs(variant, runs_root).values():
            first = unique.setdefault(job["id"], job)
            key = evaluation_key(variant, job["method"])
            if keys.setdefault(job["id"], key) != key:
                raise RecipeError(f"{recipe.name}: sweep variants {first['variant']} and {job['variant']} share the "
                                  f"{job['method']} job but evaluate it differently; a sweep must change training "
                                  "settings (evaluation lists such as student_guidance give several rows per job)")
    return sorted(unique.values(), key=lambda job: job["method"] != "teacher")


def job_label(job: dict) -> str:
    return f"{job['method']} {job['variant']}".strip()


def evaluation_resources(job: dict) -> ResourcesConfig:
    """Evaluation runs on one node as evaluation.ranks tasks (one GPU each where training had GPUs)."""
    train = ResourcesConfig.model_validate(job["resources"])
    ranks = job["recipe"]["evaluation"]["ranks"]
    gpus = ranks if train.gpus_per_node else 0
    return train.model_copy(update={"nodes": 1, "tasks_per_node": None if gpus else ranks, "gpus_per_node": gpus})


def _executor(kind: str, folder: Path, resources: ResourcesConfig | None = None, after: list[str] = (),
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


class StageJob(submitit.helpers.Checkpointable):
    """A stage's job: train (resuming from its newest checkpoint) or evaluate. When Slurm signals preemption or
    the time limit, submitit calls checkpoint(), whose default resubmits this same call: the requeued job resumes
    from the newest checkpoint, and since resume is exact it ends where an uninterrupted run would."""

    def __call__(self, job: dict):
        from .evaluate import run_job

        return run_job(job)


def _record_key(kind: str, job: dict) -> str:
    return kind + (f"-{job['part'][0]}" if "part" in job else "")


def _record(job: dict, kind: str, handle, executor: str) -> None:
    """submitted.json: per kind of work, where it runs and its logs (read by `scm-bench status` and `cancel`)."""
    path = Path(job["run_dir"]) / "submitted.json"
    record = store.read_json(path, {})
    record[_record_key(kind, job)] = {"executor": executor, "job_id": str(handle.job_id),
                                      "stdout": str(handle.paths.stdout), "stderr": str(handle.paths.stderr)}
    store.write_json(path, record)


SLURM_ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED",
                "REQUEUE_HOLD", "REQUEUE_FED"}


def _still_queued(job: dict, kind: str):
    """The Slurm job already doing this work (a run submitted earlier, e.g. with --no-wait, still queued or
    running), so a rerun follows it instead of submitting a duplicate; None when there is none."""
    import subprocess

    record = store.read_json(Path(job["run_dir"]) / "submitted.json", {}).get(_record_key(kind, job))
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


def _submit_array(jobs: list[dict], kind: str, executor: str, resources: ResourcesConfig, after: list[str],
                  folder: Path) -> list:
    """One submission (a Slurm array where there are several) of `kind` work for these jobs."""
    ex = _executor(executor, folder, resources, after, name=f"scm-{kind}")
    specs = []
    for job in jobs:
        Path(job["run_dir"]).mkdir(parents=True, exist_ok=True)
        store.write_json(Path(job["run_dir"]) / "job.json", {k: v for k, v in job.items() if k != "part"})
        specs.append({**job, "kind": kind})
    if len(specs) == 1:
        handles = [ex.submit(StageJob(), specs[0])]
    else:
        with ex.batch():
            handles = [ex.submit(StageJob(), spec) for spec in specs]
    for job, handle in zip(jobs, handles):
        _record(job, kind, handle, executor)
    return handles


def _submit_wave(jobs: list[dict], kind: str, executor: str, resources: ResourcesConfig, after: list[str],
                 folder: Path, handles: dict) -> list[tuple[str, dict, object]]:
    """Submit these jobs' `kind` work (on Slurm, following any that are still queued from an earlier run instead);
    record each handle under (kind, job id); return (kind, job, handle) for each."""
    on_slurm = executor == "slurm"
    queued = {_key(kind, job): _still_queued(job, kind) for job in jobs} if on_slurm else {}
    fresh = [job for job in jobs if queued.get(_key(kind, job)) is None]
    new = dict(zip((_key(kind, job) for job in fresh),
                   _submit_array(fresh, kind, executor, resources, after, folder) if fresh else []))
    wave = []
    for job in jobs:
        handle = queued.get(_key(kind, job)) or new[_key(kind, job)]
        handles.setdefault((kind, job["id"]), []).append(handle)
        wave.append((kind, job, handle))
    return wave


def _submit(job: dict, executor: str, resources: ResourcesConfig | None = None, kind: str = "train"):
    """One job on its own (tests and tools); logs in the job's folder."""
    job.setdefault("threads", (resources or ResourcesConfig()).cpus_per_task)
    return _submit_array([job], kind, executor, resources or ResourcesConfig(), [], Path(job["run_dir"]) / "logs")[0]


def _key(kind: str, job: dict) -> tuple:
    """Names one submitted piece of work: a generation task is one part of its job's array."""
    return kind, job["id"], job.get("part", [0])[0]


def _result(handle):
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


def _wait(submitted: list[tuple[str, dict, object]], progress_view) -> dict[tuple, object]:
    """Poll the jobs' progress files into the progress bars until all end; raise on the first failure.

    Ctrl-C cancels the jobs (local jobs would otherwise outlive the command); a re-run resumes them.
    """
    results, current = {}, None

    def cancel_all():
        for _, _, handle in submitted:
            handle.cancel(check=False)

    def stop_all():  # local jobs save a checkpoint at the end of their step; a rerun must not find them running
        cancel_all()
        local = [handle for _, _, handle in submitted if isinstance(handle, submitit.LocalJob)]
        deadline = time.time() + STOP_WAIT_S
        while time.time() < deadline and not all(handle.done() for handle in local):
            time.sleep(0.2)

    try:
        while len(results) < len(submitted):
            for current in submitted:
                kind, job, handle = current
                progress_view.update(job_label(job), store.read_json(Path(job["run_dir"]) / "progress.json", {}))
                if _key(kind, job) not in results and handle.done():
                    results[_key(kind, job)] = _result(handle)
            if len(results) < len(submitted):
                time.sleep(0.5)
    except KeyboardInterrupt:
        stop_all()
        raise
    except Exception as error:
        cancel_all()
        kind, job, handle = current
        raise RuntimeError(f"{job_label(job)} {kind} job failed: {job_error(error)} "
                           f"(full log: {handle.paths.stderr})") from None
    for _, job, _ in submitted:
        progress_view.update(job_label(job), store.read_json(Path(job["run_dir"]) / "progress.json", {}))
    return results


def preflight(recipe: Recipe, runs_root: Path | None = None) -> None:
    """Fail before anything is submitted when the data cannot feed the network, a file the evaluation needs is
    missing, or a job's folder holds checkpoints of another network (one-line errors)."""
    from .data import load_data

    data = load_data(recipe.data)
    for variant in expand_sweep(recipe):
        levels = len(variant.network.channel_mult or (1, 2))  # (1, 2): ToyUNet's default
        if variant.network.name == "toy-unet" and data.shape[-1] % 2 ** (levels - 1):
            raise ValueError(f"images are {data.shape[-1]}x{data.shape[-1]} but network.channel_mult has {levels} "
                             f"levels; the resolution must be divisible by {2 ** (levels - 1)}")
    from .reference import check_reference
    from .features import check_inception

    if recipe.evaluation.features == "inception":
        check_inception()
    if recipe.evaluation.fd_dinov2:
        from .dinov2 import check_dinov2

        check_dinov2(recipe.evaluation.dinov2_repo)
    check_reference(recipe, data.shape)
    if data.num_classes == 0 and recipe.evaluation.guidance != 1.0:
        raise ValueError("evaluation.guidance > 1 needs class labels; give data.labels or set guidance: 1.0")
    if runs_root is not None:
        from .train import checkpoint_mismatch

        for job in expand_jobs(recipe, runs_root):
            problem = checkpoint_mismatch(Recipe.model_validate(job["recipe"]), job, data.shape, data.num_classes)
            if problem:
                raise ValueError(problem)


def _pending(kind: str, jobs: list[dict], rows: dict) -> list[dict]:
    """The jobs whose `kind` work is not done yet; finished evaluations put their rows in `rows`. A diverged job
    is done training (a rerun would diverge again: resume is exact) and is evaluated as diverged."""
    from .evaluate import finished_rows
    from .train import diverged_record

    pending = []
    for job in jobs:
        final = store.checkpoint_path(Path(job["run_dir"]), job["recipe"]["stages"][job["method"]]["steps"])
        diverged = diverged_record(Path(job["run_dir"])) is not None
        trained = diverged or store.checkpoint_complete(final)
        if kind in ("train", "generate") and (trained if kind == "train" else diverged):
            continue
        if kind == "evaluate" and trained:
            cached = finished_rows(job, None if diverged else str(final))
            if cached is not None:
                rows[job["id"]] = cached
                continue
        pending.append(job)
    return pending


def run_recipe(recipe: Recipe, runs_root: Path, executor: str, progress_view, wait: bool = True) -> list[dict]:
    """Submit every stage of every variant and (with `wait`) return every metrics row, in recipe order.

    Local and debug executors run stage after stage on this machine, a stage's jobs in waves of one per core; on
    Slurm every array is submitted at once and dependencies order them."""
    preflight(recipe, runs_root)
    store.ensure_writable(Path(runs_root) / recipe.name)
    jobs = expand_jobs(recipe, runs_root)
    on_slurm, cores = executor == "slurm", os.cpu_count() or 1
    rows, handles, submitted = {}, {}, []
    for kind, role in STAGES:
        group = [job for job in jobs if (job["method"] == "teacher") == (role == "teacher")]
        pending = _pending(kind, group, rows if kind == "evaluate" else {})
        if kind == "generate":
            pending = [{**job, "part": [p, tasks]} for job in pending
                       for tasks in [job["recipe"]["evaluation"]["array_tasks"]] if tasks > 1 for p in range(tasks)]
        by_resources = {}
        for job in pending:
            resources = (evaluation_resources(job) if kind != "train"
                         else ResourcesConfig.model_validate(job["resources"]))
            by_resources.setdefault(resources.model_dump_json(), (resources, []))[1].append(job)
        for resources, members in by_resources.values():
            needs = ({("train", job["id"]) for job in members} if kind != "train" else
                     {("train", job["teacher"]) for job in members if "teacher" in job})
            if kind == "evaluate":
                needs |= {("generate", job["id"]) for job in members}
            after = sorted({str(handle.job_id) for need in needs for handle in handles.get(need, [])})
            # no scheduler here: the stage's jobs run in waves of one per core (more would only fight over the
            # cores and the memory), each wave to its end before the next, jobs of a method together (so a wave's
            # jobs take about as long); on Slurm everything is submitted now
            per_wave = len(members) if on_slurm else max(1, cores // resources.tasks)
            if not on_slurm:
                members.sort(key=lambda job: job["method"])
            for job in members:
                job["threads"] = (resources.cpus_per_task if on_slurm else
                                  max(1, cores // (min(len(members), per_wave) * resources.tasks)))
            for first in range(0, len(members), per_wave):
                this_wave = _submit_wave(members[first:first + per_wave], kind, executor, resources, after,
                                         Path(runs_root) / recipe.name / "logs", handles)
                submitted += this_wave
                if not on_slurm:
                    _wait(this_wave, progress_view)
    if not wait:
        return []
    results = _wait(submitted, progress_view) if on_slurm else {
        _key(kind, job): _result(handle) for kind, job, handle in submitted}
    for (kind, job_id, _), result in results.items():
        if kind == "evaluate":
            rows[job_id] = result
    return [row for job in jobs if job["id"] in rows for row in rows[job["id"]]]

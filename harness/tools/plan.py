"""`scm-bench plan RECIPE`: what the recipe's jobs will cost (tools/cost.py), before anything is submitted or
written; a job the store already holds costs nothing and says which recipe made it. Then the #SBATCH lines of each
submission, rendered by the same executor `scm-bench run` builds."""
import contextlib
import tempfile
from pathlib import Path
from unittest import mock

from rich.table import Table
from submitit.slurm.slurm import SlurmExecutor

from .. import store
from ..recipe.jobs import EvalJob, Plan, TrainJob
from ..recipe.sections import ResourcesConfig
from ..run.rows import finished_rows
from ..run.submission import make_executor
from ..run.train import diverged_record
from .cost import DEFAULT_TFLOPS_PER_GPU, evaluation_estimate, stage_estimate
from .plan_view import print_jobs, print_variants


@contextlib.contextmanager
def _slurm_assumed_present():
    """submitit's SlurmExecutor refuses to be built where `srun` is not on PATH; the preview only renders text."""
    with mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 2)):
        yield


def _submitit_sbatch_text(resources: ResourcesConfig, name: str, log_folder: str) -> str:
    """The sbatch file submitit would write, from the same executor `scm-bench run` builds. Uses submitit's private
    `_make_submission_file_text`; the temporary folder (removed at once) stands in for the log folder."""
    with tempfile.TemporaryDirectory() as folder, _slurm_assumed_present():
        executor = make_executor("slurm", Path(folder), resources, name=name)
        text = executor._executor._make_submission_file_text("true", "preview")
    return text.replace(str(Path(folder).resolve()), log_folder).replace(folder, log_folder)


def _sbatch_lines_by_hand(resources: ResourcesConfig, name: str) -> list[str]:
    """The main #SBATCH lines from the parameters alone: the fallback should submitit's private API change."""
    r = resources
    mem = None if r.mem_gb is None else (f"{int(r.mem_gb)}GB" if r.mem_gb == int(r.mem_gb)
                                         else f"{int(r.mem_gb * 1024)}MB")
    flags = {"job-name": name, "time": r.time_min, "nodes": r.nodes, "ntasks-per-node": r.tasks,
             "cpus-per-task": r.cpus_per_task, "mem": mem, "gpus-per-node": r.gpus_per_node or None,
             "partition": r.partition, "account": r.account, "qos": r.qos, "constraint": r.constraint}
    return [f"#SBATCH --{key}={value}" for key, value in sorted(flags.items()) if value is not None]


def sbatch_preview(resources: ResourcesConfig, name: str = "scm-train", log_folder: str = "<log folder>") -> str:
    """The #SBATCH lines of a job with these resources (dependencies and array ranges come at submission)."""
    try:
        text = _submitit_sbatch_text(resources, name, log_folder)
        lines = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    except (ImportError, AttributeError, TypeError, RuntimeError, ValueError):
        lines = []
    return "\n".join(lines or _sbatch_lines_by_hand(resources, name))


# ---- the plan ------------------------------------------------------------------------------------------------------

def _made_by(folder: Path) -> str:
    """Which recipe's stage put a job in the store (its job.json), for a reused job."""
    made = store.read_json(Path(folder) / "job.json", {})
    return f"{made.get('recipe', '?')}/{made.get('stage', '?')}"


def _row(job: TrainJob | EvalJob, kind: str, resources: ResourcesConfig) -> dict:
    train = job if isinstance(job, TrainJob) else job.train
    return {"label": f"{job.stage} {job.variant}".strip(), "job": job.id, "kind": kind, "method": train.spec.method,
            "nodes": resources.nodes, "gpus_per_node": resources.gpus_per_node, "ranks": resources.world_size,
            "time_min": resources.time_min, "partition": resources.partition, "resources": resources, "reused": ""}


def _reused(row: dict, made_by: str) -> dict:
    return {**row, "reused": made_by, "gpu_hours": 0.0, "wall_hours": 0.0, "total_flops": 0.0}


def _train_row(job: TrainJob, tflops_per_gpu: float) -> dict:
    row = {**_row(job, "train", job.resources), **stage_estimate(job, tflops_per_gpu)}
    done = diverged_record(job) or store.checkpoint_complete(job.final_checkpoint)
    return _reused(row, _made_by(job.path)) if done else row


def _evaluation_rows(job: EvalJob, tflops_per_gpu: float) -> list[dict]:
    """An evaluation's row; with evaluation.array_tasks > 1 its generation array first, which does the sampling
    (the evaluation then reads the shards' features and computes the metrics)."""
    estimate = evaluation_estimate(job, tflops_per_gpu)
    tasks = job.evaluation.array_tasks
    row = {**_row(job, "evaluate", job.resources), **estimate, "wall_hours": estimate["gpu_hours"],
           "batch_size": job.evaluation.batch_size, "memory_gb": None, "fits": None, "array_tasks": tasks}
    rows = [row]
    if tasks > 1:
        rows = [{**row, "kind": "generate", "wall_hours": row["gpu_hours"] / tasks},
                {**row, "gpu_hours": 0.0, "wall_hours": 0.0, "total_flops": 0.0}]
    return [_reused(r, job.recipe) for r in rows] if finished_rows(job) is not None else rows


def plan_rows(plan: Plan, tflops_per_gpu: float = DEFAULT_TFLOPS_PER_GPU) -> list[dict]:
    """One row per training job (those of other recipes it starts from included), then per evaluation (and its
    generation array)."""
    return [_train_row(job, tflops_per_gpu) for job in plan.train] + \
           [row for job in plan.evaluate for row in _evaluation_rows(job, tflops_per_gpu)]


def hours_by_stage(rows: list[dict]) -> dict[str, float]:
    """GPU-hours per kind of work: train per method, evaluate."""
    totals: dict[str, float] = {}
    for row in rows:
        key = f"{row['kind']} {row['method']}" if row["kind"] == "train" else row["kind"]
        totals[key] = totals.get(key, 0.0) + row["gpu_hours"]
    return totals


def plan_warnings(rows: list[dict]) -> list[str]:
    """Estimates that exceed the GPU's memory, and training that outlasts the job's time limit (it is requeued)."""
    warnings = []
    long = [row for row in rows if row["kind"] == "train" and row["gpus_per_node"]
            and row["wall_hours"] * 60 > row["time_min"]]
    for row in rows:
        if row["fits"] is False:
            fitting = row["largest_fitting_micro_batch"]
            fix = (f"set micro_batch {fitting} (a divisor of the per-rank batch {row['per_rank_batch']})" if fitting
                   else "even micro_batch 1 does not fit; use more GPUs (sharding is not implemented) or a smaller "
                        "network")
            warnings.append(f"{row['label']}: ~{row['memory_gb']:.1f} GB per GPU exceeds gpu_memory_gb "
                            f"{row['gpu_memory_gb']:g}; {fix}")
    if long:
        longest = max(long, key=lambda row: row["wall_hours"])
        warnings.append(f"{len(long)} training job(s) outlast their time_min (longest: {longest['label']}, "
                        f"~{longest['wall_hours']:.1f} h against {longest['time_min']} min); Slurm stops them and "
                        "submitit requeues them from their checkpoints")
    return warnings


COLUMNS = ("job", "id", "kind", "nodes x gpus", "ranks", "batch", "work", "params M", "GFLOPs/fwd", "PFLOPs",
           "GPU-h", "mem GB", "fits", "time min", "partition")


def _batch_cell(row: dict) -> str:
    if row["kind"] != "train":
        return str(row["batch_size"])
    return f"{row['batch_size']} / {row['per_rank_batch']} / {row['micro_batch']} x{row['passes']}"


def _work_cell(row: dict) -> str:
    if row["kind"] != "train":
        return f"{row['samples']} samples x {row['nfe']} NFE"
    return f"{row['steps']} steps x{row['multiplier']}"


def _fits_cell(row: dict) -> str:
    return {True: "yes", False: "NO", None: "-"}[row["fits"]]


def _cells(row: dict) -> list[str]:
    memory = "-" if row["memory_gb"] is None else f"{row['memory_gb']:.1f}"
    return [row["label"], row["job"], row["kind"], f"{row['nodes']} x {row['gpus_per_node']}", str(row["ranks"]),
            _batch_cell(row), _work_cell(row), f"{row['params'] / 1e6:.1f}", f"{row['forward_flops'] / 1e9:.3g}",
            f"{row['total_flops'] / 1e15:.3g}", "0 (reused)" if row["reused"] else f"{row['gpu_hours']:.3g}", memory,
            _fits_cell(row),
            str(row["time_min"]), row["partition"] or "-"]


def print_plan(console, recipe, rows: list[dict], tflops: float, details: bool = False) -> None:
    """What the variants change, the jobs (in 80-100 columns; `details`: the wide table of every estimate), the
    reused jobs and the GPU-hours."""
    if details:
        print_details(console, recipe.name, rows, tflops)
    else:
        print_variants(console, recipe)
        print_jobs(console, recipe.name, rows, tflops)
    for row in rows:
        if row["reused"]:
            console.print(f"reused: {row['label']} ({row['kind']}) is in the store already, made by {row['reused']}",
                          markup=False, highlight=False)
    totals = hours_by_stage(rows)
    console.print("GPU-hours: " + ", ".join(f"{key} {hours:.3g}" for key, hours in totals.items())
                  + f"; total {sum(totals.values()):.3g}")


def print_details(console, name: str, rows: list[dict], tflops: float) -> None:
    jobs = len(rows)
    title = (f"{name}: {jobs} jobs ({sum(r['kind'] == 'train' for r in rows)} train, "
             f"{sum(r['kind'] == 'evaluate' for r in rows)} evaluate), assuming {tflops:g} TFLOP/s per GPU achieved")
    table = Table(title=title, caption="batch: global / per rank / micro x passes; work x forward-equivalents "
                                       "per sample; mem: estimate per GPU")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("job", "id", "kind", "partition") else "right")
    for row in rows:
        table.add_row(*_cells(row))
    console.print(table)


def print_sbatch(console, name: str, rows: list[dict], executor: str) -> None:
    if executor != "slurm":
        console.print(f"executor {executor}: the jobs run on this machine; --executor slurm previews #SBATCH lines")
        return
    groups: dict[tuple, list[dict]] = {}  # one submission per kind of work and resources (run_recipe's arrays)
    for row in rows:
        groups.setdefault((row["kind"], row["resources"].model_dump_json()), []).append(row)
    for members in groups.values():
        first = members[0]
        methods = ", ".join(sorted({r["method"] for r in members}))
        count = f"{len(members)} job(s)" if first["kind"] != "generate" else \
            f"{len(members)} array(s) of {first['array_tasks']} tasks, each with these lines"
        console.print(f"\n# {first['kind']} {methods} ({count})", markup=False)
        console.print(sbatch_preview(first["resources"], f"scm-{first['kind']}", f"runs/{name}/logs"),
                      markup=False, highlight=False)



"""`scm-bench plan RECIPE`: what the recipe's jobs will cost, before anything is submitted or written.

The network of each stage is built on the meta device (shapes only, no memory, no arithmetic; the toy U-Net, whose
ops have no meta kernel, runs for real on the CPU) and measured for one sample: parameters, forward FLOPs (torch's
FlopCounterMode: convolutions, matmuls and attention) and the bytes autograd saves for the backward pass. Training FLOPs per step = batch_size x forward FLOPs x the method's multiplier:

| method  | multiplier (in forwards)                  | why                                                        |
|---------|-------------------------------------------|------------------------------------------------------------|
| teacher | 3                                         | forward 1 + backward 2 (the backward costs about 2x)       |
| sCT     | 5                                         | forward + backward 3, plus the JVP pass 2 (our benchmark,  |
|         |                                           | `scm-bench bench jvp`, measured it at 1.65-2.0x a forward) |
| sCD     | 6, or 7 with guidance > 1                 | sCT + the teacher's forward (two with classifier-free      |
|         |                                           | guidance: conditional and unconditional)                   |

GPU-hours = total FLOPs / (TFLOP/s per GPU x 1e12 x 3600); wall hours = GPU-hours / ranks. Memory per GPU = 4 bytes
per parameter for weights, gradients, Adam's two moments and the EMA copy (and the teacher's weights for sCD), plus
the saved activations of one pass (micro_batch samples). All of it is an estimate from the model of costs above,
not a measurement of a run: utilisation, communication and the allocator's slack are in the TFLOP/s assumption only.
"""
import contextlib
import tempfile
from pathlib import Path
from unittest import mock

import typer

from .recipe import PREPARED_DATASETS, Recipe, RecipeError, ResourcesConfig

# Achieved, not peak: ~30% of an H100's 989 dense bf16/fp16 TFLOP/s. EDM2-style U-Nets (many small convolutions,
# normalizations, a JVP pass) do not reach the ~40-50% utilisation of large LLM matmuls. Override with --tflops.
DEFAULT_TFLOPS_PER_GPU = 300.0

TRAIN_MULTIPLIER = {"teacher": 3, "sct": 5}  # forward-equivalents per sample and step (table above)
ADAM_STATE_COPIES = 1 + 1 + 2 + 1  # fp32 weights, gradients, Adam's two moments, the EMA copy
BYTES_PER_FP32 = 4
GB = 2 ** 30  # GPU memory sizes (80 GB H100) are binary gigabytes
DIGITS_SHAPE = ((1, 8, 8), 10)  # sklearn's 8x8 digits, 10 classes
PLAN_RUNS_ROOT = Path("runs")  # only names job folders; plan never creates it

_COST_CACHE: dict[tuple, dict] = {}


# ---- what the data and network are -------------------------------------------------------------------------------

def data_shape(recipe: Recipe) -> tuple[tuple[int, ...], int]:
    """([C, H, W], number of classes) of the recipe's data, without loading the data set."""
    shape, classes = _data_shape(recipe)
    return shape, classes if recipe.data.class_conditional else 0


def _data_shape(recipe: Recipe) -> tuple[tuple[int, ...], int]:
    data = recipe.data
    if data.name == "digits":
        return DIGITS_SHAPE
    if data.name in PREPARED_DATASETS:
        shape, classes = PREPARED_DATASETS[data.name]
        return tuple(shape), classes
    if data.name == "synthetic":
        return tuple(data.shape), data.num_classes
    return _folder_shape(Path(data.path), data.labels)


def _folder_shape(folder: Path, labels: str | None) -> tuple[tuple[int, ...], int]:
    """Peek at the first PNG (the loader needs all images the same size) and the labels file."""
    from PIL import Image

    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise ValueError(f"data folder {folder} has no *.png images; plan needs one to know the image shape")
    with Image.open(files[0]) as pic:
        channels = 1 if pic.mode in ("L", "1") else 3
        shape = (channels, pic.height, pic.width)
    if labels is None:
        return shape, 0
    classes = [int(line) for line in Path(labels).read_text().split()]
    return shape, max(classes) + 1 if classes else 0


def _example_inputs(net, batch: int, shape, num_classes: int) -> tuple[tuple, dict]:
    """(x, t, labels) and the guidance scale where the network takes one: what training passes it."""
    import torch

    x, t = torch.zeros(batch, *shape), torch.full((batch,), 0.5)
    labels = torch.zeros(batch, dtype=torch.long) if num_classes else None
    extra = {"guidance": torch.ones(batch)} if getattr(net, "takes_guidance", False) else {}
    return (x, t, labels), extra


def _traced_forward(net, batch: int, shape, num_classes: int, count_flops: bool = True) -> tuple[int, dict, int]:
    """One training-mode forward with grad enabled: (FLOPs, FLOPs per aten op, bytes saved for backward).

    FLOPs from FlopCounterMode (1 multiply-add = 2 FLOPs): convolutions, matmuls, and attention, which under the
    counter runs scaled_dot_product_attention's math form (bmm) and so is counted. Saved bytes: numel x element
    size of every tensor autograd packs (saved_tensors_hooks). This over-counts a tensor saved twice (meta tensors
    have no storage to tell them apart) and skips the parameters, which the weight memory counts separately."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    parameters, saved = {id(p) for p in net.parameters()}, 0

    def pack(tensor):
        nonlocal saved
        if id(tensor) not in parameters:
            saved += tensor.numel() * tensor.element_size()
        return tensor

    args, kwargs = _example_inputs(net, batch, shape, num_classes)
    counter = FlopCounterMode(display=False) if count_flops else contextlib.nullcontext()
    with counter, torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        net(*args, **kwargs)
    if not count_flops:
        return 0, {}, saved
    by_op = {str(op): count for op, count in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops(), by_op, saved


def _measure_on(device: str, recipe: Recipe, method: str, shape, num_classes: int) -> dict:
    import torch
    from .train import build_model

    with torch.device(device):
        net = build_model(recipe, shape, num_classes, recipe.stage(method), method).train()
        flops, by_op, one = _traced_forward(net, 1, shape, num_classes)
        two = _traced_forward(net, 2, shape, num_classes, count_flops=False)[2]
    # The slope between batch 1 and 2 is what each sample adds; the rest is saved once per pass whatever the batch
    # (e.g. EDM2's normalized weights w / ||w||, recomputed in every forward and kept for its backward).
    return {"params": sum(p.numel() for p in net.parameters()), "forward_flops": flops, "flops_by_op": by_op,
            "saved_bytes_per_sample": two - one, "saved_bytes_per_pass": max(0, 2 * one - two),
            "data_shape": tuple(shape), "num_classes": num_classes, "device": device}


def _measure(recipe: Recipe, method: str, shape, num_classes: int) -> dict:
    """On the meta device (shapes only: EDM2-XXL costs no memory and no arithmetic), else for real on the CPU:
    ToyUNet's batched modulation uses repeat_interleave by a tensor of sizes, whose output size depends on data
    and so has no meta kernel; toy networks are cheap to run at batch 1 and 2."""
    try:
        return _measure_on("meta", recipe, method, shape, num_classes)
    except (RuntimeError, NotImplementedError):
        return _measure_on("cpu", recipe, method, shape, num_classes)


def network_cost(recipe: Recipe, method: str) -> dict:
    """One sample through the stage's network: params, forward FLOPs, saved-for-backward bytes (per sample and the
    batch-independent part per pass). Cached per network settings and data shape, so a sweep measures each once."""
    shape, num_classes = data_shape(recipe)
    stage = recipe.stage(method)
    # dropout changes saved bytes only by whether masks are kept, not by its rate (label dropout's mask is one
    # value per sample: left out of the key)
    key = (recipe.network.model_dump_json(), shape, num_classes, stage.dropout > 0,
           recipe.network.guidance_input and method == "scd")  # only the sCD student takes a guidance input
    if key not in _COST_CACHE:
        _COST_CACHE[key] = _measure(recipe, method, shape, num_classes)
    return dict(_COST_CACHE[key])


# ---- what a stage costs --------------------------------------------------------------------------------------------

def flops_multiplier(method: str, stage) -> int:
    """Forward-equivalents per sample and training step (the module's table)."""
    if method == "scd":
        return TRAIN_MULTIPLIER["sct"] + (2 if stage.max_guidance > 1.0 else 1)  # the teacher, twice with CFG
    return TRAIN_MULTIPLIER[method]


def gpu_hours(flops: float, tflops_per_gpu: float) -> float:
    return flops / (tflops_per_gpu * 1e12 * 3600)


def weight_bytes(params: int, method: str) -> int:
    """fp32 weights + gradients + Adam's two moments + EMA, and the frozen teacher for sCD."""
    copies = ADAM_STATE_COPIES + (1 if method == "scd" else 0)
    return BYTES_PER_FP32 * copies * params


def activation_bytes(cost: dict, micro_batch: int, precision: str) -> float:
    """Saved activations of one pass. Autocast keeps activations in half precision, so bf16 / fp16 halve the
    per-sample part; the per-pass part (fp32 weight copies) stays."""
    per_sample = cost["saved_bytes_per_sample"] * (0.5 if precision in ("bf16", "fp16") else 1.0)
    return cost["saved_bytes_per_pass"] + micro_batch * per_sample


def memory_gb(cost: dict, method: str, micro_batch: int, precision: str) -> float:
    return (weight_bytes(cost["params"], method) + activation_bytes(cost, micro_batch, precision)) / GB


def largest_fitting_micro_batch(cost: dict, method: str, per_rank: int, precision: str, limit_gb: float) -> int | None:
    """The largest divisor of the per-rank batch whose pass fits the GPU; None when not even 1 sample fits."""
    divisors = [d for d in range(per_rank, 0, -1) if per_rank % d == 0]
    return next((d for d in divisors if memory_gb(cost, method, d, precision) <= limit_gb), None)


def stage_estimate(recipe: Recipe, method: str, tflops_per_gpu: float = DEFAULT_TFLOPS_PER_GPU) -> dict:
    """FLOPs, GPU-hours, wall hours and memory per GPU of one training stage of one recipe variant."""
    stage, resources = recipe.stage(method), recipe.stage_resources(method)
    cost = network_cost(recipe, method)
    ranks = resources.world_size
    per_rank = stage.batch_size // ranks
    micro = stage.micro_batch or per_rank
    multiplier = flops_multiplier(method, stage)
    step_flops = stage.batch_size * cost["forward_flops"] * multiplier
    total = stage.steps * step_flops
    hours = gpu_hours(total, tflops_per_gpu)
    memory = memory_gb(cost, method, micro, stage.precision)
    has_gpus = resources.gpus_per_node > 0
    fits = memory <= resources.gpu_memory_gb if has_gpus else None
    fitting = None if fits in (None, True) else largest_fitting_micro_batch(cost, method, per_rank, stage.precision,
                                                                            resources.gpu_memory_gb)
    return {"method": method, "params": cost["params"], "forward_flops": cost["forward_flops"],
            "multiplier": multiplier, "steps": stage.steps, "batch_size": stage.batch_size, "ranks": ranks,
            "per_rank_batch": per_rank, "micro_batch": micro, "passes": per_rank // micro,
            "flops_per_step": step_flops, "total_flops": total, "gpu_hours": hours, "wall_hours": hours / ranks,
            "weights_gb": weight_bytes(cost["params"], method) / GB,
            "activations_gb": activation_bytes(cost, micro, stage.precision) / GB, "memory_gb": memory,
            "gpu_memory_gb": resources.gpu_memory_gb, "fits": fits, "largest_fitting_micro_batch": fitting,
            "precision": stage.precision}


def evaluation_nfe(recipe: Recipe, method: str, num_classes: int) -> int:
    """Network evaluations per sample over every sampler setting the evaluation job runs (harness.evaluate)."""
    ev = recipe.evaluation
    if method != "teacher":
        told = recipe.network.guidance_input and method == "scd"  # one sampling pass per scale told
        checkpoints = 1 + len(ev.during_training)  # FID over training samples each of those checkpoints too
        return sum(ev.consistency_nfe) * (len(ev.student_guidance) if told else 1) * checkpoints
    nfe = sum(2 * n - 1 if ev.teacher_sampler == "dpm-solver-2s" else n for n in ev.teacher_step_list)
    return nfe * (2 if ev.guidance > 1.0 and num_classes else 1)  # CFG: conditional + unconditional


def evaluation_estimate(recipe: Recipe, method: str, tflops_per_gpu: float = DEFAULT_TFLOPS_PER_GPU) -> dict:
    """Sampling FLOPs of one evaluation job; feature extraction (Inception, VAE decoding) is not counted."""
    cost = network_cost(recipe, method)
    classes = cost["num_classes"]
    samples = recipe.evaluation.samples_per_class * max(1, classes)
    nfe = evaluation_nfe(recipe, method, classes)
    total = samples * nfe * cost["forward_flops"]
    return {"params": cost["params"], "forward_flops": cost["forward_flops"], "samples": samples, "nfe": nfe,
            "total_flops": total, "gpu_hours": gpu_hours(total, tflops_per_gpu)}


# ---- the sbatch lines --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _slurm_assumed_present():
    """submitit's SlurmExecutor refuses to be built where `srun` is not on PATH; the preview only renders text."""
    from submitit.slurm.slurm import SlurmExecutor

    with mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 2)):
        yield


def _submitit_sbatch_text(resources: ResourcesConfig, name: str, log_folder: str) -> str:
    """The sbatch file submitit would write, from the same executor `scm-bench run` builds. Uses submitit's private
    `_make_submission_file_text`; the temporary folder (removed at once) stands in for the log folder."""
    from .launch import _executor

    with tempfile.TemporaryDirectory() as folder, _slurm_assumed_present():
        executor = _executor("slurm", Path(folder), resources, name=name)
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

def _job_variant(job: dict) -> Recipe:
    return Recipe.model_validate(job["recipe"])


def _row(job: dict, kind: str, resources: ResourcesConfig) -> dict:
    from .launch import job_label

    return {"label": job_label(job), "job": job["id"], "kind": kind, "method": job["method"],
            "nodes": resources.nodes, "gpus_per_node": resources.gpus_per_node, "ranks": resources.world_size,
            "time_min": resources.time_min, "partition": resources.partition, "resources": resources}


def _train_row(job: dict, tflops_per_gpu: float) -> dict:
    estimate = stage_estimate(_job_variant(job), job["method"], tflops_per_gpu)
    return {**_row(job, "train", ResourcesConfig.model_validate(job["resources"])), **estimate}


def _evaluation_row(job: dict, tflops_per_gpu: float) -> dict:
    from .launch import evaluation_resources

    resources = evaluation_resources(job)
    estimate = evaluation_estimate(_job_variant(job), job["method"], tflops_per_gpu)
    return {**_row(job, "evaluate", resources), **estimate, "wall_hours": estimate["gpu_hours"],
            "batch_size": _job_variant(job).evaluation.batch_size, "memory_gb": None, "fits": None}


def plan_rows(recipe: Recipe, tflops_per_gpu: float = DEFAULT_TFLOPS_PER_GPU) -> list[dict]:
    """One row per training job of every sweep variant (teachers shared by variants once), then one per evaluation
    job. The runs folder only names the jobs; nothing is created."""
    from .launch import expand_jobs

    jobs = expand_jobs(recipe, PLAN_RUNS_ROOT)
    return [_train_row(job, tflops_per_gpu) for job in jobs] + [_evaluation_row(job, tflops_per_gpu) for job in jobs]


def hours_by_stage(rows: list[dict]) -> dict[str, float]:
    """GPU-hours per kind of work: train teacher / sct / scd, evaluate."""
    totals: dict[str, float] = {}
    for row in rows:
        key = f"{row['kind']} {row['method']}" if row["kind"] == "train" else "evaluate"
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


# ---- printing ------------------------------------------------------------------------------------------------------

COLUMNS = ("job", "id", "kind", "nodes x gpus", "ranks", "batch", "work", "params M", "GFLOPs/fwd", "PFLOPs",
           "GPU-h", "mem GB", "fits", "time min", "partition")


def _batch_cell(row: dict) -> str:
    if row["kind"] == "evaluate":
        return str(row["batch_size"])
    return f"{row['batch_size']} / {row['per_rank_batch']} / {row['micro_batch']} x{row['passes']}"


def _work_cell(row: dict) -> str:
    if row["kind"] == "evaluate":
        return f"{row['samples']} samples x {row['nfe']} NFE"
    return f"{row['steps']} steps x{row['multiplier']}"


def _fits_cell(row: dict) -> str:
    return {True: "yes", False: "NO", None: "-"}[row["fits"]]


def _cells(row: dict) -> list[str]:
    memory = "-" if row["memory_gb"] is None else f"{row['memory_gb']:.1f}"
    return [row["label"], row["job"], row["kind"], f"{row['nodes']} x {row['gpus_per_node']}", str(row["ranks"]),
            _batch_cell(row), _work_cell(row), f"{row['params'] / 1e6:.1f}", f"{row['forward_flops'] / 1e9:.3g}",
            f"{row['total_flops'] / 1e15:.3g}", f"{row['gpu_hours']:.3g}", memory, _fits_cell(row),
            str(row["time_min"]), row["partition"] or "-"]


def _print_plan(console, recipe: Recipe, rows: list[dict], tflops: float) -> None:
    from rich.table import Table

    jobs = len(rows)
    title = (f"{recipe.name}: {jobs} jobs ({sum(r['kind'] == 'train' for r in rows)} train, "
             f"{sum(r['kind'] == 'evaluate' for r in rows)} evaluate), assuming {tflops:g} TFLOP/s per GPU achieved")
    table = Table(title=title, caption="batch: global / per rank / micro x passes; work x forward-equivalents "
                                       "per sample; mem: estimate per GPU")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("job", "id", "kind", "partition") else "right")
    for row in rows:
        table.add_row(*_cells(row))
    console.print(table)
    totals = hours_by_stage(rows)
    console.print("GPU-hours: " + ", ".join(f"{key} {hours:.3g}" for key, hours in totals.items())
                  + f"; total {sum(totals.values()):.3g}")


def _print_sbatch(console, recipe: Recipe, rows: list[dict], executor: str) -> None:
    if executor != "slurm":
        console.print(f"executor {executor}: the jobs run on this machine; --executor slurm previews #SBATCH lines")
        return
    groups: dict[tuple, list[dict]] = {}  # one submission per kind of work and resources (run_recipe's arrays)
    for row in rows:
        groups.setdefault((row["kind"], row["resources"].model_dump_json()), []).append(row)
    for members in groups.values():
        first = members[0]
        methods = ", ".join(sorted({r["method"] for r in members}))
        console.print(f"\n# {first['kind']} {methods} ({len(members)} job(s))", markup=False)
        console.print(sbatch_preview(first["resources"], f"scm-{first['kind']}", f"runs/{recipe.name}/logs"),
                      markup=False, highlight=False)


def plan_command(recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/digits.yaml."),
                 overrides: list[str] = typer.Option([], "--set", help="Override a recipe field: key.path=value "
                                                                       "(YAML); repeatable."),
                 tflops: float = typer.Option(DEFAULT_TFLOPS_PER_GPU, "--tflops", min=1e-6,
                                              help="Achieved TFLOP/s per GPU (default: ~30% of an H100's dense "
                                                   "bf16 peak)."),
                 executor: str = typer.Option(None, help="local | debug | slurm (default: the recipe's)."),
                 sbatch: bool = typer.Option(True, "--sbatch/--no-sbatch", help="Print the #SBATCH lines (slurm)."),
                 smoke: bool = typer.Option(False, "--smoke", help="Plan the recipe's toy-scale smoke run instead.")):
    """Estimate FLOPs, GPU-hours and memory per GPU of every job; submits and writes nothing."""
    from rich.console import Console
    from .recipe import load_recipe

    try:
        spec = load_recipe(recipe, overrides)
        if smoke:
            from .smoke import smoke_recipe

            spec = smoke_recipe(spec)
        kind = executor or spec.executor
        if kind not in ("local", "debug", "slurm"):
            raise RecipeError(f"--executor {kind!r} is not available; use local, debug or slurm")
        rows = plan_rows(spec, tflops)
    except (RecipeError, ValueError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console.width = 200
    _print_plan(console, spec, rows, tflops)
    for warning in plan_warnings(rows):
        console.print(f"warning: {warning}", markup=False, highlight=False)
    if sbatch:
        _print_sbatch(console, spec, rows, kind)


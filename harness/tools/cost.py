"""What a job costs, estimated before anything runs: its network measured for one sample, then FLOPs, GPU-hours and
memory per GPU of its training, and the sampling work of its evaluation.

The network is built on the meta device (shapes only, no memory, no arithmetic; the toy U-Net, whose ops have no
meta kernel, runs for real on the CPU) and measured: parameters, forward FLOPs (torch's FlopCounterMode:
convolutions, matmuls and attention) and the bytes autograd saves for the backward pass. Training FLOPs per step =
batch_size x forward FLOPs x the method's cost per step in forward passes (`Method.cost_per_step`: TrigFlow
diffusion 3 = forward + backward; sCT 5 = that + the JVP pass, which `scm-bench bench jvp` measured at 1.65-2.0x a
forward; sCD 6, or 7 with guidance > 1: sCT + the teacher, twice with CFG; discrete-time CT 4).

GPU-hours = total FLOPs / (TFLOP/s per GPU x 1e12 x 3600); wall hours = GPU-hours / ranks. Memory per GPU = 4 bytes
per parameter for each trained network's weights, gradients, Adam's two moments and EMA copy (and the teacher's
weights where the method reads one), plus the saved activations of one pass (micro_batch samples). All of it is an
estimate from the model of costs above, not a measurement of a run: utilisation, communication and the allocator's
slack are in the TFLOP/s assumption only.
"""
import contextlib

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..compute import training_network
from ..data import data_shape
from ..recipe.jobs import EvalJob, TrainJob

# Achieved, not peak: measured by `make gpu-check` on an H200 (results/gpu/nvidia-h200-2026-11-29.md): 50 fp16 sCD
# steps of EDM2-S at batch 64 ran 155 TFLOP/s by this module's FLOP count, ~16% of the 989 dense TFLOP/s (the
# earlier guess, 300, was off by 1.9x). EDM2-style U-Nets (small convolutions, normalizations, a JVP pass) stay far
# from the utilisation of large LLM matmuls. Override with --tflops.
DEFAULT_TFLOPS_PER_GPU = 155.0
ADAM_STATE_COPIES = 1 + 1 + 2 + 1  # fp32 weights, gradients, Adam's two moments, the EMA copy
BYTES_PER_FP32 = 4
GB = 2 ** 30  # GPU memory sizes (80 GB H100) are binary gigabytes

_COST_CACHE: dict[tuple, dict] = {}


def _example_inputs(net, batch: int, shape, num_classes: int) -> tuple[tuple, dict]:
    """(x, t, labels), the guidance scale and the second time r where the network takes them: what training
    passes it."""
    x, t = torch.zeros(batch, *shape), torch.full((batch,), 0.5)
    labels = torch.zeros(batch, dtype=torch.long) if num_classes else None
    extra = {"guidance": torch.ones(batch)} if getattr(net, "takes_guidance", False) else {}
    if getattr(net, "takes_interval", False):
        extra["r"] = torch.full((batch,), 0.25)
    return (x, t, labels), extra


def _traced_forward(net, batch: int, shape, num_classes: int, count_flops: bool = True) -> tuple[int, dict, int]:
    """One training-mode forward with grad enabled: (FLOPs, FLOPs per aten op, bytes saved for backward).

    FLOPs from FlopCounterMode (1 multiply-add = 2 FLOPs): convolutions, matmuls, and attention, which under the
    counter runs scaled_dot_product_attention's math form (bmm) and so is counted. Saved bytes: numel x element
    size of every tensor autograd packs (saved_tensors_hooks). This over-counts a tensor saved twice (meta tensors
    have no storage to tell them apart) and skips the parameters, which the weight memory counts separately."""
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


def _measure_on(device: str, job: TrainJob, shape, num_classes: int) -> dict:
    with torch.device(device):
        net = training_network(job, shape, num_classes).train()
        flops, by_op, one = _traced_forward(net, 1, shape, num_classes)
        two = _traced_forward(net, 2, shape, num_classes, count_flops=False)[2]
    # The slope between batch 1 and 2 is what each sample adds; the rest is saved once per pass whatever the batch
    # (e.g. EDM2's normalized weights w / ||w||, recomputed in every forward and kept for its backward).
    return {"params": sum(p.numel() for p in net.parameters()), "forward_flops": flops, "flops_by_op": by_op,
            "saved_bytes_per_sample": two - one, "saved_bytes_per_pass": max(0, 2 * one - two),
            "data_shape": tuple(shape), "num_classes": num_classes, "device": device}


def _measure(job: TrainJob, shape, num_classes: int) -> dict:
    """On the meta device (shapes only: EDM2-XXL costs no memory and no arithmetic), else for real on the CPU:
    ToyUNet's batched modulation uses repeat_interleave by a tensor of sizes, whose output size depends on data
    and so has no meta kernel; toy networks are cheap to run at batch 1 and 2."""
    try:
        return _measure_on("meta", job, shape, num_classes)
    except (RuntimeError, NotImplementedError):
        return _measure_on("cpu", job, shape, num_classes)


def network_cost(job: TrainJob) -> dict:
    """One sample through the job's network: params, forward FLOPs, saved-for-backward bytes (per sample and the
    batch-independent part per pass). Cached per network settings and data shape, so a sweep measures each once."""
    shape, num_classes = data_shape(job.data)
    # dropout changes saved bytes only by whether masks are kept, not by its rate (label dropout's mask is one
    # value per sample: left out of the key)
    method = job.method()
    key = (job.network.model_dump_json(), shape, num_classes, job.spec.dropout > 0, method.takes_guidance(),
           method.takes_interval())
    if key not in _COST_CACHE:
        _COST_CACHE[key] = _measure(job, shape, num_classes)
    return dict(_COST_CACHE[key])


def gpu_hours(flops: float, tflops_per_gpu: float) -> float:
    return flops / (tflops_per_gpu * 1e12 * 3600)


def weight_bytes(params: int, job: TrainJob) -> int:
    """fp32 weights + gradients + Adam's two moments + EMA of each trained network, and a teacher it reads."""
    method = job.method_class
    copies = ADAM_STATE_COPIES * len(method.networks) + (1 if method.reads_teacher else 0)
    return BYTES_PER_FP32 * copies * params


def activation_bytes(cost: dict, micro_batch: int, precision: str) -> float:
    """Saved activations of one pass. Autocast keeps activations in half precision, so bf16 / fp16 halve the
    per-sample part; the per-pass part (fp32 weight copies) stays."""
    per_sample = cost["saved_bytes_per_sample"] * (0.5 if precision in ("bf16", "fp16") else 1.0)
    return cost["saved_bytes_per_pass"] + micro_batch * per_sample


def memory_gb(cost: dict, job: TrainJob, micro_batch: int) -> float:
    return (weight_bytes(cost["params"], job) + activation_bytes(cost, micro_batch, job.spec.precision)) / GB


def largest_fitting_micro_batch(cost: dict, job: TrainJob, per_rank: int, limit_gb: float) -> int | None:
    """The largest divisor of the per-rank batch whose pass fits the GPU; None when not even 1 sample fits."""
    divisors = [d for d in range(per_rank, 0, -1) if per_rank % d == 0]
    return next((d for d in divisors if memory_gb(cost, job, d) <= limit_gb), None)


def stage_estimate(job: TrainJob, tflops_per_gpu: float = DEFAULT_TFLOPS_PER_GPU) -> dict:
    """FLOPs, GPU-hours, wall hours and memory per GPU of one training job."""
    stage, resources = job.spec, job.resources
    cost = network_cost(job)
    ranks = resources.world_size
    per_rank = stage.batch_size // ranks
    micro = stage.micro_batch or per_rank
    multiplier = job.method().cost_per_step()
    step_flops = stage.batch_size * cost["forward_flops"] * multiplier
    total = stage.steps * step_flops
    hours = gpu_hours(total, tflops_per_gpu)
    memory = memory_gb(cost, job, micro)
    fits = memory <= resources.gpu_memory_gb if resources.gpus_per_node > 0 else None
    fitting = None if fits in (None, True) else largest_fitting_micro_batch(cost, job, per_rank,
                                                                            resources.gpu_memory_gb)
    return {"params": cost["params"], "forward_flops": cost["forward_flops"], "multiplier": multiplier,
            "steps": stage.steps, "batch_size": stage.batch_size, "ranks": ranks, "per_rank_batch": per_rank,
            "micro_batch": micro, "passes": per_rank // micro, "flops_per_step": step_flops, "total_flops": total,
            "gpu_hours": hours, "wall_hours": hours / ranks, "weights_gb": weight_bytes(cost["params"], job) / GB,
            "activations_gb": activation_bytes(cost, micro, stage.precision) / GB, "memory_gb": memory,
            "gpu_memory_gb": resources.gpu_memory_gb, "fits": fits, "largest_fitting_micro_batch": fitting,
            "precision": stage.precision}


def evaluation_nfe(job: EvalJob, num_classes: int) -> int:
    """Network evaluations per sample over every setting the evaluation samples, at every checkpoint it evaluates
    (FID over training samples each of those checkpoints too)."""
    settings = job.train.method().sample_settings(job.sampling)
    return sum(setting.nfe(num_classes > 0) for setting in settings) * len(job.checkpoint_steps())


def evaluation_estimate(job: EvalJob, tflops_per_gpu: float = DEFAULT_TFLOPS_PER_GPU) -> dict:
    """Sampling FLOPs of one evaluation job; feature extraction (Inception, VAE decoding) is not counted."""
    cost = network_cost(job.train)
    classes = cost["num_classes"]
    samples = job.evaluation.samples_per_class * max(1, classes)
    nfe = evaluation_nfe(job, classes)
    total = samples * nfe * cost["forward_flops"]
    return {"params": cost["params"], "forward_flops": cost["forward_flops"], "samples": samples, "nfe": nfe,
            "total_flops": total, "gpu_hours": gpu_hours(total, tflops_per_gpu)}

"""The parts of `make gpu-check` (benchmarks/gpu_check.py says what each measures and why in that order).

Each part runs in a process of its own under its own time limit and appends its rows, one JSON object per line, to a
file as it goes: a part stopped at its limit keeps what it had measured. `Context.tiny` shrinks every size so the
same code runs on a CPU in seconds (Triton under its interpreter), which is how the test suite keeps it from rotting.
"""
import contextlib
import json
import math
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from harness.compute.distributed import Ranks
from harness.compute.networks import build, training_network
from harness.data import load_data
from harness.recipe.load import load_recipe
from harness.recipe.planner import plan_jobs
from harness.run.state import TrainState
from harness.run.train import accumulate_gradients
from harness.tools import bench, precision
from harness.tools.cost import DEFAULT_TFLOPS_PER_GPU, GB, stage_estimate
from scm.kernels import attention_jvp_math
from scm.kernels.triton_attention import fused_attention_jvp
from scm.methods import Networks
from scm.nets import build_network
from scm.trigflow import t_max

ANCHOR = dict(ms=1.19, mb=66.0, math_ms=16.2, math_mb=2052.0)  # public Triton forward+JVP kernel: fp16, d 64, L 2048
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# ||ours - float64|| / ||float64|| may exceed the same-dtype math path's error by this factor, or this floor
ACCURACY_FLOOR = {"fp16": 2e-3, "bf16": 1.6e-2}


class Context:
    def __init__(self, rows: Path, tiny: bool, seconds: float):
        self.rows, self.tiny, self.deadline = rows, tiny, time.time() + seconds
        self.device = torch.device("cpu" if tiny else "cuda")

    def emit(self, part: str, **row) -> None:
        with open(self.rows, "a") as out:
            out.write(json.dumps({"part": part, **row}) + "\n")
        print(f"[{part}] " + ", ".join(f"{k}={_short(v)}" for k, v in row.items()), flush=True)

    def time_left(self) -> float:
        return self.deadline - time.time()


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else value


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, device, warmup: int = 3, reps: int = 10) -> float:
    """Median over `reps` calls after `warmup` (CUDA events on a GPU, the host clock on a CPU)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_mb(fn, device) -> float | None:
    """Peak allocated memory during one call above what was allocated before it (outputs count); None on a CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    del out
    return (torch.cuda.max_memory_allocated() - before) / 2 ** 20


def or_none_on_oom(fn):
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def relative_error(low, ref) -> float:
    low, ref = low.double(), ref.double()
    if not torch.isfinite(low).all():
        return math.inf
    return ((low - ref).norm() / ref.norm().clamp_min(1e-300)).item()


# ---- 1. the Triton attention forward+JVP kernel ----------------------------------------------------------------------

def _math_jvp(q, k, v, tq, tk, tv):
    attention = lambda a, b, c: torch.softmax(a @ b.transpose(-1, -2) * a.shape[-1] ** -0.5, dim=-1) @ c  # noqa: E731
    return torch.func.jvp(attention, (q, k, v), (tq, tk, tv))


def attention_case(ctx: Context, fused, name: str, d: int, length: int, batch: int, heads: int) -> dict:
    dtype, device = DTYPES[name], ctx.device
    g = torch.Generator(device=device).manual_seed(length * 1000 + d)
    inputs = [torch.randn(batch, heads, length, d, device=device, dtype=dtype, generator=g) for _ in range(6)]
    with torch.no_grad():
        y, ty = fused(*inputs)
        head = [t[:1, :2] for t in inputs]  # the float64 reference on 2 heads: each (batch, head) is independent
        exact = attention_jvp_math(*(t.double() for t in head[:3]), *(t.double() for t in head[3:]))
        math_low = _math_jvp(*head[:3], *head[3:])
        row = dict(dtype=name, d=d, L=length, batch=batch, heads=heads,
                   err_y=relative_error(y[:1, :2], exact[0]), err_ty=relative_error(ty[:1, :2], exact[1]),
                   err_math_y=relative_error(math_low[0], exact[0]), err_math_ty=relative_error(math_low[1], exact[1]))
        del y, ty, exact, math_low
        ours = max(row["err_y"], row["err_ty"])
        row["accurate"] = ours <= max(2 * max(row["err_math_y"], row["err_math_ty"]), ACCURACY_FLOOR[name])
        reps = (1, 2) if ctx.tiny else (3, 10)
        row["ours_ms"] = median_ms(lambda: fused(*inputs), device, *reps)  # the warm-up also runs the autotuner
        row["ours_mb"] = peak_mb(lambda: fused(*inputs), device)
        row["math_ms"] = or_none_on_oom(lambda: median_ms(lambda: _math_jvp(*inputs[:3], *inputs[3:]), device, *reps))
        row["math_mb"] = or_none_on_oom(lambda: peak_mb(lambda: _math_jvp(*inputs[:3], *inputs[3:]), device))
        sdpa = lambda: F.scaled_dot_product_attention(*inputs[:3])  # noqa: E731  (the forward alone)
        row["sdpa_ms"] = median_ms(sdpa, device, *reps)
        row["sdpa_mb"] = peak_mb(sdpa, device)
    return row


def attention_part(ctx: Context) -> None:
    """Accuracy against float64, then time and memory against torch.func.jvp of math attention and SDPA's forward."""
    if ctx.tiny:  # the interpreter runs every program in Python
        torch.set_num_threads(1)
        grid, lengths, batch, heads = [("fp16", 16)], [24, 32], 1, 2
    else:  # most valuable first: the anchor's case (fp16, d 64) over every length
        grid = [("fp16", 64), ("bf16", 64), ("fp16", 128), ("bf16", 128)]
        lengths, batch, heads = [256, 1000, 2048, 4096, 8192], 2, 12  # 1000: not a multiple of any block
    for name, d in grid:
        for length in lengths:
            if ctx.time_left() < 10:
                ctx.emit("attention", dtype=name, d=d, L=length, skipped="the part's time limit")
                continue
            ctx.emit("attention", **attention_case(ctx, fused_attention_jvp, name, d, length, batch, heads))
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()


# ---- 2. `scm-bench bench jvp` at ImageNet 512 latent size ---------------------------------------------------------

def bench_part(ctx: Context) -> None:
    networks = [("toy", 8)] if ctx.tiny else [("S-512", None), ("XXL-512", None)]
    for network, batch in networks:
        if ctx.time_left() < 20:
            ctx.emit("bench", network=network, skipped="the part's time limit")
            continue
        rows = bench.run_jvp_bench(network, batch, 1 if ctx.tiny else 5, 1.0, lambda it: it, precision="bf16")
        for row in rows:
            ctx.emit("bench", **row)
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


# ---- 3. real sCD training steps of EDM2-S against `scm-bench plan` ------------------------------------------------

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "table2_scd.yaml"
TINY_NETWORK = ["sweep=null", "network.size=S", "network.channels=32", "network.channel_mult=[1,2]",
                "network.blocks_per_level=1", "network.attn_resolutions=[4]"]


def scd_job(tiny: bool, batch: int, runs: Path):
    """table2_scd's sCD stage of size S on synthetic latents, one GPU, `batch` per step (the recipe under --set)."""
    shape, classes = ("[4,8,8]", 10) if tiny else ("[4,64,64]", 1000)
    sets = ["data.name=synthetic", f"data.shape={shape}", f"data.num_classes={classes}", "data.count=256",
            "data.latents=true", "resources.nodes=1", "resources.gpus_per_node=1", f"stages.scd.batch_size={batch}",
            "stages.scd.steps=50", *(TINY_NETWORK if tiny else [])]
    plan = plan_jobs(load_recipe(RECIPE, sets), runs)
    return next(job for job in plan.train if job.stage == "scd" and job.size in ("S", None)), sets


def training_setup(job, device):
    """(method, data, state) as the training worker builds them, with a freshly initialised teacher (no checkpoint)."""
    method = job.method()
    torch.manual_seed(job.seed)
    data = load_data(job.data).to(device)
    with torch.device(device):
        trained = {spec.role: training_network(job, data.shape, data.num_classes).train().to(device)
                   for spec in method.networks}
        teacher = None
        if method.reads_teacher:
            source = job.teacher
            teacher = build(source.network, data.shape, data.num_classes,
                            takes_guidance=source.method().takes_guidance()).to(device).eval().requires_grad_(False)
    modules = {name: module.to(device) for name, module in method.auxiliary_modules().items()}
    return method, data, TrainState(job.seed, job.spec, Networks(trained, modules, teacher))


def _autocast(job, device):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(job.spec.precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def _step(job, method, data, state, autocast) -> None:
    _, term = accumulate_gradients(job, method, state, data, Ranks(), autocast)
    state.step += 1
    if term is None:
        state.update(job.spec)


def training_part(ctx: Context) -> None:
    """Fifty steps through the training worker's own step; time, FLOPs and peak memory against the plan's figures."""
    batch, warmup = (4, 2) if ctx.tiny else (64, 5)
    with tempfile.TemporaryDirectory() as runs:
        job, sets = scd_job(ctx.tiny, batch, Path(runs))
        estimate = stage_estimate(job, DEFAULT_TFLOPS_PER_GPU)
    method, data, state = training_setup(job, ctx.device)
    autocast = _autocast(job, ctx.device)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    while state.step < job.steps and ctx.time_left() > 15:
        _sync(ctx.device)
        start = time.perf_counter()
        _step(job, method, data, state, autocast)
        _sync(ctx.device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / GB if ctx.device.type == "cuda" else None
    counter = FlopCounterMode(display=False)
    with counter:  # executed FLOPs of one step (the Triton attention JVP kernel is invisible to the counter)
        _step(job, method, data, state, autocast)
    timed = times[warmup:] or times
    seconds = statistics.median(timed)
    predicted = estimate["flops_per_step"] / (DEFAULT_TFLOPS_PER_GPU * 1e12)
    ctx.emit("training", method=job.spec.method, network=f"{job.network.name} {job.size}", batch=batch,
             precision=job.spec.precision, steps=len(times), timed_steps=len(timed), s_per_step=seconds,
             images_per_s=batch / seconds, plan_flops_per_step=estimate["flops_per_step"],
             counted_flops_per_step=counter.get_total_flops(), plan_tflops=DEFAULT_TFLOPS_PER_GPU,
             achieved_tflops=estimate["flops_per_step"] / seconds / 1e12, plan_s_per_step=predicted,
             time_ratio=seconds / predicted, plan_memory_gb=estimate["memory_gb"], peak_memory_gb=peak,
             memory_ratio=None if peak is None else peak / estimate["memory_gb"], overrides=" ".join(sets))


# ---- 4. half-precision tangents of EDM2-S at real size ------------------------------------------------------------

def tangents_part(ctx: Context) -> None:
    """The scaled tangent sd cos t sin t dF/dt in fp16 / bf16 autocast against float32, across t in [0, t_max]."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # a true float32 reference
    if ctx.tiny:
        net, shape, classes = precision.tiny_unet(), (3, 8, 8), 10
    else:
        torch.manual_seed(0)
        with torch.device(ctx.device):
            net = build_network_s512()
        shape, classes = (4, 64, 64), 1000
    net = net.to(ctx.device).eval()
    with torch.no_grad():
        net.out_gain.fill_(1.0)  # F = 0 at init otherwise
    g = torch.Generator(device=ctx.device).manual_seed(0)
    x0 = torch.randn(4, *shape, device=ctx.device, generator=g) * 0.5
    z = torch.randn(4, *shape, device=ctx.device, generator=g) * 0.5
    labels = torch.randint(classes, (4,), device=ctx.device, generator=g)
    for t in (*precision.T_GRID, t_max()):
        if ctx.time_left() < 5:
            ctx.emit("tangents", t=t, skipped="the part's time limit")
            continue
        for form in ("rearranged", "naive"):
            ref = precision.scaled_tangent(net, x0, z, labels, t, form, torch.float32)
            for name, dtype in DTYPES.items():
                low = precision.scaled_tangent(net, x0, z, labels, t, form, dtype)
                finite = bool(torch.isfinite(low[1]).all() and torch.isfinite(low[0]).all())
                ctx.emit("tangents", dtype=name, form=form, t=t, finite=finite,
                         relative_error=precision.pair_relative_error(low, ref))


def build_network_s512():
    """EDM2-S as table2 builds it (c_noise = t, positional time, double normalisation, attention at 16 and 8)."""
    return build_network("unet-edm2", size="S", resolution=64, channels=4, num_classes=1000,
                         attn_resolutions=(16, 8))


# ---- 5. data-parallel gradient over two ranks ---------------------------------------------------------------------

def _gradients(ranks: Ranks, tiny: bool, device) -> list[torch.Tensor]:
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    with tempfile.TemporaryDirectory() as runs:
        job, _ = scd_job(tiny, 8, Path(runs))
    job = job.model_copy(update={"spec": job.spec.model_copy(update={"precision": "fp32"})})
    method, data, state = training_setup(job, device)
    accumulate_gradients(job, method, state, data, ranks, contextlib.nullcontext())
    return [p.grad.detach().cpu().clone() for p in state.parameters() if p.grad is not None]


def _rank(rank: int, port: int, tiny: bool, out: str) -> None:
    backend = "gloo" if tiny else "nccl"
    device = torch.device("cpu") if tiny else torch.device("cuda", rank)
    if not tiny:
        torch.cuda.set_device(rank)
    torch.distributed.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        grads = _gradients(Ranks(rank, 2, rank), tiny, device)
        if rank == 0:
            torch.save(grads, out)
    finally:
        torch.distributed.destroy_process_group()


def ddp_part(ctx: Context) -> None:
    """The gradient of the whole batch summed over 2 ranks (nccl; gloo on a CPU) against one process's."""
    if not ctx.tiny and torch.cuda.device_count() < 2:
        ctx.emit("ddp", skipped=f"{torch.cuda.device_count()} GPU: a 2-rank nccl step needs two")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "rank0.pt")
        torch.multiprocessing.spawn(_rank, args=(port, ctx.tiny, out), nprocs=2)
        ranked = torch.load(out, weights_only=True)
    single = _gradients(Ranks(), ctx.tiny, ctx.device)
    error = max(relative_error(a, b) for a, b in zip(ranked, single))
    ctx.emit("ddp", backend="gloo" if ctx.tiny else "nccl", tensors=len(single), relative_error=error,
             equal=len(ranked) == len(single) and error < 1e-4)


PARTS = {"attention": attention_part, "bench": bench_part, "training": training_part, "tangents": tangents_part,
         "ddp": ddp_part}

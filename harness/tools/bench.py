"""`scm-bench bench jvp`: what the tangent costs, measured side by side in one run on one network and batch.

Times are medians of interleaved repeats (every case once per round, so a slow spell hits all cases alike). Peak
memory is the most bytes held at once above what was live before the case: on CUDA from the allocator's counter,
on the CPU from the profiler's allocation events (tensor memory; allocator caching not counted).
"""
import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from scm import TangentSettings, consistency_loss, diffusion_loss
from scm.jvp import jvp_dual, jvp_reference
from scm.nets import build_network
from scm.weighting import AdaptiveWeight

NETWORKS = {
    # the digits recipe's network and batch
    "toy": dict(name="toy-unet", settings=dict(resolution=8, in_channels=1, channels=32, channel_mult=(1, 2),
                                               blocks_per_level=2, attn_resolutions=(4,), num_classes=10),
                shape=(1, 8, 8), num_classes=10, batch=128),
    # EDM2 config G at size S (ImageNet 512 latents: 4 channels), at 32x32 instead of 64x64 so a CPU can run it
    "S": dict(name="unet-edm2", settings=dict(size="S", resolution=32, channels=4, num_classes=1000),
              shape=(4, 32, 32), num_classes=1000, batch=4),
    # EDM2 config G at ImageNet 512's real latent size 4x64x64 (sCM Table 2): sizes for a GPU
    "S-512": dict(name="unet-edm2", settings=dict(size="S", resolution=64, channels=4, num_classes=1000),
                  shape=(4, 64, 64), num_classes=1000, batch=32),
    "XXL-512": dict(name="unet-edm2", settings=dict(size="XXL", resolution=64, channels=4, num_classes=1000),
                    shape=(4, 64, 64), num_classes=1000, batch=16),
}
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TARGETS = {"jvp-dual": 2.0, "sct": 1.9, "scd": 2.3}  # issue targets, as ratios to forward / diffusion step


@dataclass
class Case:
    label: str
    fn: Callable[[], object]
    baseline: str  # the case this one's ratio is taken against
    target_key: str | None = None
    prepare: Callable[[], object] = lambda: None  # run before each timed / measured call, not counted


def _clear_grads(*modules):
    def clear():
        for module in modules:
            module.zero_grad(set_to_none=True)
    return clear


def _peak_bytes(case: Case, device) -> int:
    case.prepare()
    gc.collect()
    fn = case.fn
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:  # allocations attributed to the op that made them, frees as "[memory]" events
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _runnable(cases: list[Case]) -> tuple[list[Case], dict[str, str]]:
    """The cases that run, and the error of each that does not (torch.func.jvp under CPU autocast, say); one call
    each, which also warms up the allocator, the kernels and first-touch pages."""
    failed = {}
    for case in cases:
        try:
            case.prepare()
            case.fn()
        except RuntimeError as error:
            failed[case.label] = str(error).splitlines()[0][:200]
    return [case for case in cases if case.label not in failed], failed


def _median_times(cases: list[Case], repeats: int, device, progress) -> dict[str, float]:
    times = {case.label: [] for case in cases}
    for _ in progress(range(repeats)):
        for case in cases:
            case.prepare()
            _sync(device)
            start = time.perf_counter()
            case.fn()
            _sync(device)
            times[case.label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def _under_autocast(fn, device, precision: str):
    dtype = AUTOCAST[precision]
    if dtype is None:
        return fn

    def run():
        with torch.autocast(device.type, dtype=dtype):
            return fn()
    return run


def jvp_cases(network: str, batch: int | None = None, guidance: float = 1.0, device=None, precision: str = "fp32"):
    """The network, its batch, and every case of the benchmark as a closure (under autocast to `precision`)."""
    spec = NETWORKS[network]
    device = device or torch.device("cpu")
    batch = batch or spec["batch"]
    torch.manual_seed(0)
    with torch.device(device):  # built where they run: EDM2-XXL's 1.5 B parameters are not initialised on a CPU
        net = build_network(spec["name"], **spec["settings"])
        teacher = build_network(spec["name"], **spec["settings"], label_dropout=0.1).eval()
    net, teacher = net.to(device), teacher.to(device)  # any buffer made on the CPU explicitly
    teacher.requires_grad_(False)
    for module in (net, teacher):  # non-zero outputs, so no branch of the computation is trivially zero
        _randomize_output(module)
    weight = AdaptiveWeight().to(device)
    x0 = torch.randn(batch, *spec["shape"], device=device) * 0.5
    labels = torch.randint(spec["num_classes"], (batch,), device=device)
    t = torch.rand(batch, device=device) * 1.5 + 0.02
    x, dx, dt = torch.randn_like(x0), torch.randn_like(x0), torch.randn_like(t)
    doubled = (torch.cat([x, dx]), torch.cat([t, t]), torch.cat([labels, labels]))
    F = lambda a, b: net(a, b, labels)  # noqa: E731

    def step(loss_fn):
        def run():
            loss, _ = loss_fn()
            loss.backward()
        return run

    def consistency(method, with_teacher):
        settings = TangentSettings(jvp_method=method, warmup_steps=0)  # r = 1: the full tangent
        return step(lambda: consistency_loss(net, weight, x0, labels, 1, -0.8, 1.6, settings,
                                             teacher if with_teacher else None, guidance))

    cases = [
        Case("forward (no grad)", torch.no_grad()(lambda: F(x, t)), "forward (no grad)"),
        Case("forward on doubled batch (the limit)", torch.no_grad()(lambda: net(*doubled)), "forward (no grad)"),
        Case("JVP torch.func.jvp (reference)", lambda: jvp_reference(F, x, t, dx, dt), "forward (no grad)"),
        Case("JVP dual (ours)", lambda: jvp_dual(F, x, t, dx, dt), "forward (no grad)", "jvp-dual"),
        Case("diffusion step", step(lambda: diffusion_loss(net, weight, x0, labels, -0.8, 1.6)), "diffusion step"),
        Case("sCT step, reference JVP", consistency("torch-func", False), "diffusion step"),
        Case("sCT step, dual JVP", consistency("dual", False), "diffusion step", "sct"),
        Case("sCD step, dual JVP" + (f", CFG {guidance}" if guidance != 1.0 else ""), consistency("dual", True),
             "diffusion step", "scd"),
    ]
    for case in cases[4:]:  # every step starts without gradients, as after the optimizer's zero_grad
        case.prepare = _clear_grads(net, weight)
    for case in cases:
        case.fn = _under_autocast(case.fn, device, precision)
    params = sum(p.numel() for p in net.parameters())
    return cases, dict(network=network, name=spec["name"], batch=batch, shape=spec["shape"], params=params,
                       device=str(device), precision=precision)


def _randomize_output(net):
    with torch.no_grad():
        if hasattr(net, "out_gain"):
            net.out_gain.fill_(1.0)
        else:
            out = net.conv_out if hasattr(net, "conv_out") else net.out
            out.weight.normal_(0, 0.05)


def run_jvp_bench(network: str, batch: int | None, repeats: int, guidance: float, progress,
                  precision: str = "fp32") -> list[dict]:
    """Rows: case, median ms, ratio to its baseline, peak MB, the target where the issue set one."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cases, info = jvp_cases(network, batch, guidance, device, precision)
    runnable, failed = _runnable(cases)
    medians = _median_times(runnable, repeats, device, progress)
    peaks = {case.label: _peak_bytes(case, device) for case in runnable}
    rows = []
    for case in cases:
        row = {**info, "case": case.label, "baseline": case.baseline, "target": TARGETS.get(case.target_key),
               "threads": torch.get_num_threads(), "ms": None, "ratio": None, "peak_mb": None, "peak_ratio": None,
               "error": failed.get(case.label)}
        if case.label in medians:
            row.update(ms=medians[case.label] * 1e3, peak_mb=peaks[case.label] / 2 ** 20)
        if case.label in medians and case.baseline in medians:
            row.update(ratio=medians[case.label] / medians[case.baseline],
                       peak_ratio=peaks[case.label] / max(peaks[case.baseline], 1))
        rows.append(row)
    return rows

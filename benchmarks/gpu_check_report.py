"""The page and the printed summary of `make gpu-check`: every figure beside the goal the issue set for it."""
from gpu_check_parts import ANCHOR

GOALS = {"jvp_vs_doubled": 1.1, "scd_vs_diffusion": 2.0, "plan_tolerance": 0.25}


def _fmt(value, spec=".3g") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _table(columns: list[tuple[str, str, str]], rows: list[dict]) -> str:
    """columns: (header, key, format spec)."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(key), spec) for _, key, spec in columns) + " |" for row in rows]
    return "\n".join(lines)


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _of(rows, part):
    return [r for r in rows if r["part"] == part and "skipped" not in r]


def attention_goals(rows: list[dict]) -> list[str]:
    done = _of(rows, "attention")
    if not done:
        return ["attention: no case ran"]
    lines = [f"accuracy: {sum(r['accurate'] for r in done)} of {len(done)} cases within max(2 x the same-dtype "
             "math path's error, the floor) of float64"]
    anchor = [r for r in done if r["dtype"] == "fp16" and r["d"] == 64 and r["L"] == 2048]
    if anchor and anchor[0]["ours_mb"] is not None:
        r = anchor[0]
        lines.append(f"anchor case (fp16, d 64, L 2048, B 2, H 12): ours {r['ours_ms']:.3g} ms, {r['ours_mb']:.0f} MB; "
                     f"math path {_fmt(r['math_ms'])} ms, {_fmt(r['math_mb'], '.0f')} MB; public anchor "
                     f"{ANCHOR['ms']} ms, {ANCHOR['mb']:.0f} MB (math {ANCHOR['math_ms']} ms, {ANCHOR['math_mb']:.0f} "
                     f"MB): faster than the anchor: {_fmt(r['ours_ms'] < ANCHOR['ms'])}; against the math path "
                     f"{_fmt(_ratio(r['math_ms'], r['ours_ms']))}x faster, {_fmt(_ratio(r['math_mb'], r['ours_mb']))}x "
                     f"less memory; {_fmt(_ratio(r['ours_ms'], r['sdpa_ms']))}x the time of SDPA's forward alone")
    for dtype, d in sorted({(r["dtype"], r["d"]) for r in done}):
        by_length = {r["L"]: r["ours_mb"] for r in done if r["dtype"] == dtype and r["d"] == d}
        if by_length.get(4096) and by_length.get(8192):
            growth = by_length[8192] / by_length[4096]
            lines.append(f"memory {dtype} d {d}: L 8192 / L 4096 = {growth:.2f} (2.0 = linear in L): "
                         f"linear: {_fmt(growth < 2.2)}")
    return lines


def bench_goals(rows: list[dict]) -> list[str]:
    lines = []
    for network in dict.fromkeys(r["network"] for r in _of(rows, "bench")):
        ms = {r["case"]: r["ms"] for r in _of(rows, "bench") if r["network"] == network}
        batch = next(r["batch"] for r in _of(rows, "bench") if r["network"] == network)
        jvp = _ratio(ms.get("JVP dual (ours)"), ms.get("forward on doubled batch (the limit)"))
        scd = _ratio(next((v for k, v in ms.items() if k.startswith("sCD step")), None), ms.get("diffusion step"))
        steps = ", ".join(f"{k.split(',')[0]} {batch / (v / 1e3):.0f}" for k, v in ms.items() if "step" in k
                          and "reference" not in k)
        lines.append(f"{network}: dual JVP / doubled-batch forward = {_fmt(jvp)} (goal <= "
                     f"{GOALS['jvp_vs_doubled']}: {_fmt(jvp is not None and jvp <= GOALS['jvp_vs_doubled'])}); "
                     f"sCD step / diffusion step = {_fmt(scd)} (goal <= {GOALS['scd_vs_diffusion']}: "
                     f"{_fmt(scd is not None and scd <= GOALS['scd_vs_diffusion'])}); images/s: {steps}")
    return lines or ["bench: no network ran"]


def training_goals(rows: list[dict]) -> list[str]:
    done = _of(rows, "training")
    if not done:
        return ["training: did not finish"]
    r, tol = done[0], GOALS["plan_tolerance"]
    lines = [f"sCD EDM2-S, batch {r['batch']}, {r['precision']}: {r['s_per_step']:.3g} s/step ({r['images_per_s']:.0f} "
             f"images/s) against plan's {r['plan_s_per_step']:.3g} s/step at its {r['plan_tflops']:g} TFLOP/s: ratio "
             f"{r['time_ratio']:.2f}; achieved {r['achieved_tflops']:.0f} TFLOP/s by plan's FLOP count "
             f"(within {tol:.0%}: {_fmt(abs(r['time_ratio'] - 1) <= tol)})",
             f"FLOPs per step: plan {r['plan_flops_per_step'] / 1e12:.3g} T, counted "
             f"{r['counted_flops_per_step'] / 1e12:.3g} T "
             f"(ratio {_ratio(r['counted_flops_per_step'], r['plan_flops_per_step']):.2f})"]
    if r.get("peak_memory_gb") is not None:
        lines.append(f"peak memory {r['peak_memory_gb']:.1f} GB against plan's {r['plan_memory_gb']:.1f} GB: ratio "
                     f"{r['memory_ratio']:.2f} (within {tol:.0%}: {_fmt(abs(r['memory_ratio'] - 1) <= tol)})")
    return lines


def tangent_goals(rows: list[dict]) -> list[str]:
    done = _of(rows, "tangents")
    lines = []
    for dtype, form in sorted({(r["dtype"], r["form"]) for r in done}):
        mine = [r for r in done if r["dtype"] == dtype and r["form"] == form]
        worst = max(mine, key=lambda r: r["relative_error"])
        lines.append(f"{dtype} {form}: finite at {sum(r['finite'] for r in mine)} of {len(mine)} t; largest relative "
                     f"error vs float32 {worst['relative_error']:.3g} at t = {worst['t']:.4g}")
    return lines or ["tangents: no t ran"]


def ddp_goals(rows: list[dict]) -> list[str]:
    row = next((r for r in rows if r["part"] == "ddp"), None)
    if row is None:
        return ["ddp: did not finish"]
    if "skipped" in row:
        return [f"ddp: skipped ({row['skipped']})"]
    return [f"ddp ({row['backend']}, 2 ranks): largest relative gradient difference {row['relative_error']:.3g} over "
            f"{row['tensors']} tensors; equal: {_fmt(row['equal'])}"]


def summary(rows: list[dict], statuses: list[dict]) -> str:
    lines = [f"{s['part']}: {s['status']} ({s['seconds']} s)" for s in statuses]
    lines += attention_goals(rows) + bench_goals(rows) + training_goals(rows) + tangent_goals(rows) + ddp_goals(rows)
    return "\n".join(lines)


ATTENTION = [("dtype", "dtype", ""), ("d", "d", ""), ("L", "L", ""), ("err y", "err_y", ".2e"),
             ("err ty", "err_ty", ".2e"), ("math err ty", "err_math_ty", ".2e"), ("accurate", "accurate", ""),
             ("ours ms", "ours_ms", ".3g"), ("math ms", "math_ms", ".3g"), ("SDPA fwd ms", "sdpa_ms", ".3g"),
             ("ours MB", "ours_mb", ".4g"), ("math MB", "math_mb", ".4g"), ("SDPA MB", "sdpa_mb", ".4g")]
BENCH = [("network", "network", ""), ("batch", "batch", ""), ("case", "case", ""), ("ms", "ms", ".4g"),
         ("ratio", "ratio", ".3g"), ("vs", "baseline", ""), ("peak MB", "peak_mb", ".5g"), ("error", "error", "")]
TANGENTS = [("dtype", "dtype", ""), ("form", "form", ""), ("t", "t", ".4g"), ("finite", "finite", ""),
            ("relative error", "relative_error", ".3g")]


def render(card: str, date: str, environment: str, rows: list[dict], statuses: list[dict]) -> str:
    parts = _table([("part", "part", ""), ("status", "status", ""), ("seconds", "seconds", "")], statuses)
    training, attention = _of(rows, "training"), _of(rows, "attention")
    heads = f"B {attention[0]['batch']}, H {attention[0]['heads']}" if attention else "no case ran"
    shapes = ", ".join(sorted({"x".join(map(str, r["shape"])) for r in _of(rows, "bench") if "shape" in r})) or "-"
    sections = [
        f"# GPU check: {card}, {date}\n\n`make gpu-check` (benchmarks/gpu_check.py); {environment}.\n\n{parts}",
        f"## 1. Triton attention forward+JVP ({heads})\n\nerr: ||x - float64|| / ||float64|| on 2 heads; math: "
        "torch.func.jvp of math attention in the same dtype; SDPA: F.scaled_dot_product_attention's forward alone; "
        "MB: peak allocated above the inputs, outputs included.\n\n" + _bullets(attention_goals(rows)) + "\n\n"
        + _table(ATTENTION, _of(rows, "attention")),
        f"## 2. `scm-bench bench jvp`, bf16 autocast, {shapes}\n\n" + _bullets(bench_goals(rows)) + "\n\n"
        + _table(BENCH, _of(rows, "bench")),
        "## 3. sCD training steps of EDM2-S against `scm-bench plan`\n\n" + _bullets(training_goals(rows))
        + ("\n\nRecipe: `recipes/table2_scd.yaml --set " + training[0]["overrides"] + "`" if training else ""),
        "## 4. Half-precision tangents of EDM2-S (4x64x64; --cpu-tiny: a tiny U-Net at 3x8x8) against float32\n\n"
        + _bullets(tangent_goals(rows)) + "\n\n" + _table(TANGENTS, _of(rows, "tangents")),
        "## 5. Data-parallel step\n\n" + _bullets(ddp_goals(rows)),
    ]
    return "\n\n".join(sections) + "\n"


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)

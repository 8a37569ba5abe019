"""Time and memory of the fused Triton attention forward + JVP against torch.func.jvp of math attention (CUDA only).

For each dtype, head dim and length (batch 2, 12 heads by default) it reports the median time over CUDA events, the
peak memory above the inputs, their ratios reference / ours, and the max abs error of both against a float32
torch.func.jvp reference (where that fits). Usage:
    python benchmarks/attention_jvp_gpu.py            # full sweep: fp16, bf16 x d 64, 128 x L 256 .. 8192
    python benchmarks/attention_jvp_gpu.py --quick    # fp16, d 64, L 1024 and 2048
Anchor (a public Triton JVP kernel, fp16, B 2, H 12, d 64, L 2048): 1.19 ms vs 16.2 ms, 66 MB vs 2052 MB.
"""
import argparse
import statistics
import sys

import torch

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
ANCHOR = dict(ours_ms=1.19, ref_ms=16.2, ours_mb=66.0, ref_mb=2052.0)  # fp16, B 2, H 12, d 64, L 2048


def math_attention(q, k, v):
    return torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1) @ v


def reference_jvp(q, k, v, tq, tk, tv):
    return torch.func.jvp(math_attention, (q, k, v), (tq, tk, tv))


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_mb(fn):
    """Peak allocated memory during one call, minus what was allocated before it (the inputs); outputs count."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del out
    return peak / 2**20


def try_cuda(fn):
    """fn() or None on CUDA out-of-memory (memory is released before returning)."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def run_case(fused, dtype, d, length, args):
    g = torch.Generator(device="cuda").manual_seed(length * 1000 + d)
    shape = (args.batch, args.heads, length, d)
    inputs = [torch.randn(shape, device="cuda", dtype=dtype, generator=g) for _ in range(6)]
    row = dict(dtype=dtype, d=d, L=length)
    with torch.no_grad():
        row["ours_ms"] = median_ms(lambda: fused(*inputs), args.warmup, args.reps)  # warmup also runs the autotuner
        row["ours_mb"] = peak_mb(lambda: fused(*inputs))
        y, ty = fused(*inputs)
        row["ref_ms"] = try_cuda(lambda: median_ms(lambda: reference_jvp(*inputs), args.warmup, args.reps))
        row["ref_mb"] = try_cuda(lambda: peak_mb(lambda: reference_jvp(*inputs))) if row["ref_ms"] else None
        small = length <= args.fp32_ref_max_len
        exact = try_cuda(lambda: reference_jvp(*(t.float() for t in inputs))) if small else None
        if exact is not None:
            row["err_ours"] = max((a.float() - b).abs().max().item() for a, b in zip((y, ty), exact))
            ref = try_cuda(lambda: reference_jvp(*inputs)) if row["ref_ms"] else None
            if ref is not None:
                row["err_ref"] = max((a.float() - b).abs().max().item() for a, b in zip(ref, exact))
            del ref
        del exact, y, ty
    best = getattr(fused_kernel(), "best_config", None)
    row["config"] = "" if best is None else (f"{best.kwargs['BLOCK_M']}x{best.kwargs['BLOCK_N']} w{best.num_warps} "
                                             f"s{best.num_stages}")
    torch.cuda.empty_cache()
    return row


def fused_kernel():
    from scm.kernels import triton_attention
    return triton_attention._kernel(False)


def fmt(value, spec, missing="OOM"):
    return missing if value is None else format(value, spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short sweep: fp16, d 64, L 1024 and 2048")
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--head-dims", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--fp32-ref-max-len", type=int, default=4096,
                        help="compare against a float32 torch.func.jvp reference up to this length")
    args = parser.parse_args(argv)
    if args.quick:
        args.dtypes, args.head_dims, args.lengths, args.warmup, args.reps = ["fp16"], [64], [1024, 2048], 3, 10
    if not torch.cuda.is_available():
        print("attention_jvp_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
        return 1
    from scm.kernels.triton_attention import fused_attention_jvp

    print(f"card: {torch.cuda.get_device_name()}   torch {torch.__version__}   batch {args.batch}, heads {args.heads}")
    header = (f"{'dtype':>5} {'d':>4} {'L':>5} | {'ours ms':>8} {'ref ms':>8} {'ref/ours':>8} | {'ours MB':>8} "
              f"{'ref MB':>8} {'ref/ours':>8} | {'err ours':>9} {'err ref':>9} | config")
    print(header + "\n" + "-" * len(header))
    rows = []
    for name in args.dtypes:
        for d in args.head_dims:
            for length in args.lengths:
                row = run_case(fused_attention_jvp, DTYPES[name], d, length, args)
                rows.append(row)
                t_ratio = f"{row['ref_ms'] / row['ours_ms']:.1f}x" if row["ref_ms"] else "-"
                m_ratio = f"{row['ref_mb'] / row['ours_mb']:.1f}x" if row["ref_mb"] and row["ours_mb"] > 0 else "-"
                print(f"{name:>5} {d:>4} {length:>5} | {row['ours_ms']:8.3f} {fmt(row['ref_ms'], '8.3f'):>8} "
                      f"{t_ratio:>8} | {row['ours_mb']:8.1f} {fmt(row['ref_mb'], '8.1f'):>8} "
                      f"{m_ratio:>8} | {fmt(row.get('err_ours'), '9.2e', '-'):>9} "
                      f"{fmt(row.get('err_ref'), '9.2e', '-'):>9} | {row['config']}", flush=True)
    print("err: max abs error of y and ty against torch.func.jvp in float32; ref = torch.func.jvp of math attention "
          "in the same dtype; MB = peak allocated minus inputs (outputs included)")
    anchor = [r for r in rows if r["dtype"] == torch.float16 and r["d"] == 64 and r["L"] == 2048]
    if anchor:
        r = anchor[0]
        print(f"anchor (public Triton JVP kernel, fp16 d64 L2048): {ANCHOR['ours_ms']} ms vs {ANCHOR['ref_ms']} ms, "
              f"{ANCHOR['ours_mb']:.0f} MB vs {ANCHOR['ref_mb']:.0f} MB;  ours here: {r['ours_ms']:.3f} ms vs "
              f"{fmt(r['ref_ms'], '.3f')} ms, {r['ours_mb']:.0f} MB vs {fmt(r['ref_mb'], '.0f')} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

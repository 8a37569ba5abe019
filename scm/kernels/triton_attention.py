"""Fused softmax attention and its forward-mode JVP in one flash-style pass (sCM, Lu & Song 2025, appendix F).

For s = scale * q k^T, p = softmax(s), y = p v and tangents (tq, tk, tv), the JVP is
    ts = scale * (tq k^T + q tk^T),   ty_i = sum_j p_ij tv_j + sum_j p_ij (ts_ij - mu_i) v_j,   mu_i = sum_j p_ij ts_ij.
Each row keeps the running max m and, with e_j = exp(s_j - m), the sums l = sum e_j, acc = sum e_j v_j and three more:
g = sum e_j ts_j v_j, mu = sum e_j ts_j, acc_t = sum e_j tv_j; then y = acc / l, ty = g / l - (mu / l) y + acc_t / l.
g and acc_t share one accumulator, as only their sum is used. Nothing of size Lq x Lk reaches memory, so peak memory
is linear in the length. Forward only: it serves the stop-gradient JVP pass.
"""
from __future__ import annotations  # keeps the `tl.constexpr` annotations unevaluated, so no triton is needed to import

import math

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the module must import on machines without triton; the function then raises a clear error
    triton = tl = None

__all__ = ["fused_attention_jvp"]


def _attn_jvp_kernel(Q, K, V, TQ, TK, TV, Y, TY, Lq, Lk, D, qk_scale,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr):
    # One program: BLOCK_M query rows of one (batch, head); inputs contiguous [BH, L, D], D padded to BLOCK_D by masks.
    # Only builtins here, no @jit library helpers (tl.max, tl.sum, tl.zeros): those are decorated when triton.language
    # is imported, so if that happened without TRITON_INTERPRET=1 the interpreter cannot call them. Row reductions go
    # through tl.reduce with the library's own combine functions, which the interpreter maps to numpy max / sum.
    start_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64 so bh * L * D cannot overflow at long lengths
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_off = bh * Lq * D + offs_m[:, None] * D + offs_d[None, :]
    q_ok = (offs_m[:, None] < Lq) & d_ok[None, :]
    q = tl.load(Q + q_off, mask=q_ok, other=0.0)
    tq = tl.load(TQ + q_off, mask=q_ok, other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max m, kept as m * log2 e
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)  # l = sum_j e_j
    mu_i = tl.full([BLOCK_M], 0.0, tl.float32)  # mu = sum_j e_j ts_j
    acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)  # acc = sum_j e_j v_j
    # g and acc_t are rescaled alike and only g + acc_t enters ty, so one accumulator holds both (saves registers)
    g_t = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)  # g + acc_t = sum_j e_j (ts_j v_j + tv_j)
    kv_base = bh * Lk * D
    for start_n in range(0, Lk, BLOCK_N):
        cols = start_n + offs_n
        kv_off = kv_base + cols[:, None] * D + offs_d[None, :]
        kv_ok = (cols[:, None] < Lk) & d_ok[None, :]
        kt = tl.trans(tl.load(K + kv_off, mask=kv_ok, other=0.0))
        # s * log2 e, so that e_j = exp(s_j - m) = exp2(s_j log2 e - m log2 e): exp2 is the fast GPU instruction
        s = tl.dot(q, kt, input_precision=DOT_PREC) * (qk_scale * 1.4426950408889634)
        s = tl.where(cols[None, :] < Lk, s, float("-inf"))  # padded keys get e_j = 0
        # m_new is finite: every key block holds at least one real key
        m_new = tl.maximum(m_i, tl.reduce(s, 1, tl.standard._elementwise_max))
        alpha = tl.exp2(m_i - m_new)  # exp(m_old - m_new) rescales every sum (0 on the first block)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.reduce(p, 1, tl.standard._sum_combine)
        # ts only now, once s is dead: fewer [BLOCK_M, BLOCK_N] tiles live at a time, fewer register spills
        tkt = tl.trans(tl.load(TK + kv_off, mask=kv_ok, other=0.0))
        ts = tl.dot(tq, kt, tl.dot(q, tkt, input_precision=DOT_PREC), input_precision=DOT_PREC) * qk_scale
        pts = p * ts
        mu_i = mu_i * alpha + tl.reduce(pts, 1, tl.standard._sum_combine)
        v = tl.load(V + kv_off, mask=kv_ok, other=0.0)
        tv = tl.load(TV + kv_off, mask=kv_ok, other=0.0)
        p_lo = p.to(v.dtype)  # like flash attention, P goes into the tensor-core dot in the input dtype
        acc = tl.dot(p_lo, v, acc * alpha[:, None], input_precision=DOT_PREC)
        g_t = tl.dot(p_lo, tv, g_t * alpha[:, None], input_precision=DOT_PREC)
        g_t = tl.dot(pts.to(v.dtype), v, g_t, input_precision=DOT_PREC)
        m_i = m_new

    inv_l = 1.0 / l_i
    y = acc * inv_l[:, None]  # y = acc / l
    ty = g_t * inv_l[:, None] - (mu_i * inv_l)[:, None] * y  # ty = (g + acc_t) / l - (mu / l) y
    tl.store(Y + q_off, y.to(Y.dtype.element_ty), mask=q_ok)
    tl.store(TY + q_off, ty.to(TY.dtype.element_ty), mask=q_ok)


def _interpreting() -> bool:
    # Triton 3.8 reads TRITON_INTERPRET from os.environ on every access of knobs.runtime.interpret, and @triton.jit
    # picks JITFunction vs InterpretedFunction at decoration time, so we decorate lazily, once per mode, at launch.
    return bool(triton.knobs.runtime.interpret)


_KERNELS: dict = {}


# (BLOCK_M, BLOCK_N, num_warps, num_stages) tried by the autotuner on the GPU. Picked from offline sm_90 builds (ptxas
# register / spill counts): q, tq, two fp32 [BLOCK_M, BLOCK_D] accumulators and the s, p, ts tiles share the registers,
# so d = 128 wants narrower key blocks, and fp32 (3xTF32 dots) narrower still.
_CONFIGS = {
    "d<=64": [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 2), (64, 64, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2)],
    "d>64": [(128, 32, 8, 2), (128, 32, 8, 3), (64, 32, 4, 2), (64, 32, 4, 3), (64, 64, 4, 2), (32, 32, 4, 1)],
    "fp32": [(64, 32, 4, 2), (64, 16, 4, 2), (64, 32, 8, 2), (32, 32, 4, 1)],
}


def _prune(configs, named_args, **kwargs):
    group = "fp32" if named_args["Q"].dtype == torch.float32 else ("d<=64" if kwargs["BLOCK_D"] <= 64 else "d>64")
    wanted = set(_CONFIGS[group])
    return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in wanted]


def _kernel(interpret: bool):
    if interpret not in _KERNELS:
        jitted = triton.jit(_attn_jvp_kernel)  # must run while TRITON_INTERPRET has the wanted value (see above)
        if not interpret:
            configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)
                       for bm, bn, w, st in sorted(set().union(*_CONFIGS.values()))]
            jitted = triton.autotune(configs, key=["Lq", "Lk", "BLOCK_D"],
                                     prune_configs_by={"early_config_prune": _prune})(jitted)
        _KERNELS[interpret] = jitted
    return _KERNELS[interpret]


@torch.no_grad()
def fused_attention_jvp(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tq: torch.Tensor, tk: torch.Tensor,
                        tv: torch.Tensor, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, ty) = attention(q, k, v) and its JVP along (tq, tk, tv); q, tq: [..., Lq, d], k, v, tk, tv: [..., Lk, d].

    Runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1. Accumulates in fp32 and returns q's dtype
    (fp16 / bf16 / fp32 run natively, other float dtypes in fp32). No gradient flows through the outputs.
    """
    if triton is None:
        raise RuntimeError("fused_attention_jvp needs the `triton` package, which is not installed")
    interpret = _interpreting()
    if not (q.is_cuda or interpret):
        raise RuntimeError("fused_attention_jvp needs CUDA tensors; on the CPU set TRITON_INTERPRET=1 to run it "
                           "through Triton's (slow) interpreter")
    if q.shape != tq.shape or not (k.shape == v.shape == tk.shape == tv.shape):
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, tq {tuple(tq.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}, tk {tuple(tk.shape)}, tv {tuple(tv.shape)}")
    if q.dim() < 2 or q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must be [..., L, d] with equal leading dims and d")
    if len({t.dtype for t in (q, k, v, tq, tk, tv)}) != 1 or not q.dtype.is_floating_point:
        raise ValueError("q, k, v, tq, tk, tv must share one floating dtype")
    if len({t.device for t in (q, k, v, tq, tk, tv)}) != 1:
        raise ValueError("q, k, v, tq, tk, tv must be on one device")
    *lead, lq, d = q.shape
    lk = k.shape[-2]
    if lk == 0:
        raise ValueError("softmax over zero keys is undefined (Lk == 0)")
    scale = d ** -0.5 if scale is None else float(scale)
    bh = math.prod(lead)
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32  # fp64 -> fp32
    if interpret and dtype == torch.bfloat16:  # the interpreter's tl.dot multiplies raw bf16 bits (triton#11584)
        dtype = torch.float32
    q3, tq3 = (t.reshape(bh, lq, d).to(dtype).contiguous() for t in (q, tq))
    k3, v3, tk3, tv3 = (t.reshape(bh, lk, d).to(dtype).contiguous() for t in (k, v, tk, tv))
    y, ty = torch.empty_like(q3), torch.empty_like(q3)
    if y.numel() == 0:
        return y.reshape(q.shape).to(q.dtype), ty.reshape(q.shape).to(q.dtype)
    block_d = max(16, triton.next_power_of_2(d))  # tl.dot needs power-of-two blocks of at least 16
    # fp32 inputs: 3xTF32 tensor-core dots keep ~fp32 accuracy (plain "ieee" FMA dots spill badly); fp16/bf16 ignore it
    dot_prec = "tf32x3" if dtype == torch.float32 else "tf32"
    args = (q3, k3, v3, tq3, tk3, tv3, y, ty, lq, lk, d, scale)
    kernel = _kernel(interpret)
    if interpret:  # the interpreter runs every program in Python: small blocks keep the tests short
        kernel[(triton.cdiv(lq, 16), bh)](*args, BLOCK_M=16, BLOCK_N=16, BLOCK_D=block_d, DOT_PREC=dot_prec)
    else:
        with torch.cuda.device(q.device):  # launch on the inputs' GPU, not the current one
            kernel[lambda meta: (triton.cdiv(lq, meta["BLOCK_M"]), bh)](*args, BLOCK_D=block_d, DOT_PREC=dot_prec)
    return y.reshape(q.shape).to(q.dtype), ty.reshape(q.shape).to(q.dtype)

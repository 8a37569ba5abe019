"""Softmax attention y = softmax(s) v, s = q k^T / sqrt(d), with both backward (for F) and forward-mode AD (for F-).

PyTorch's fused SDPA kernels have no forward-AD rule on the CPU, so `attention` is an autograd.Function with explicit
backward and jvp rules; it works under `torch.func.jvp` and under plain autograd. `attention_jvp` returns (y, dy) in
one call: the fused Triton kernel on CUDA, the math form elsewhere.
"""
import os

import torch
import torch.nn.functional as F


def _scores(q, k):
    return torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # s


def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the last two dims; q: [..., Lq, d], k, v: [..., Lk, d]."""
    return torch.matmul(torch.softmax(_scores(q, k), dim=-1), v)


def _tangent(q, k, v, p, dq, dk, dv, out=None):
    """dy = p dv + p (ds - mu) v with ds = (dq k^T + q dk^T) / sqrt(d), mu = sum_j p ds (the softmax JVP)."""
    scale = q.shape[-1] ** -0.5
    ds = torch.zeros_like(p)
    if dq is not None:
        ds = ds + torch.matmul(dq, k.transpose(-1, -2))
    if dk is not None:
        ds = ds + torch.matmul(q, dk.transpose(-1, -2))
    ds *= scale
    dp = p * (ds - (p * ds).sum(-1, keepdim=True))
    dy = torch.matmul(dp, v, out=out)
    return dy.add_(torch.matmul(p, dv)) if dv is not None else dy


def attention_jvp_math(q, k, v, dq, dk, dv, out=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, dy) in plain PyTorch: O(L^2) memory, any device and dtype; `out` = (y, dy) buffers to write into."""
    p = torch.softmax(_scores(q, k), dim=-1)
    y = torch.matmul(p, v, out=out[0] if out is not None else None)
    return y, _tangent(q, k, v, p, dq, dk, dv, out[1] if out is not None else None)


class Attention(torch.autograd.Function):
    """softmax attention with explicit backward and jvp; p is recomputed rather than stored."""

    @staticmethod
    def forward(q, k, v):
        if q.dtype == torch.float64:  # fused SDPA backends are float32/16 only; the math form is exact here
            return attention_math(q, k, v)
        return F.scaled_dot_product_attention(q, k, v)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v = inputs
        ctx.save_for_backward(q, k, v)
        ctx.save_for_forward(q, k, v)

    @staticmethod
    def backward(ctx, dy):
        q, k, v = ctx.saved_tensors
        dy = dy.to(v.dtype)  # under autocast SDPA answers in half precision for float32 q, k, v
        scale = q.shape[-1] ** -0.5
        p = torch.softmax(_scores(q, k), dim=-1)
        dv = torch.matmul(p.transpose(-1, -2), dy)
        dp = torch.matmul(dy, v.transpose(-1, -2))
        ds = p * (dp - (dp * p).sum(-1, keepdim=True))
        return torch.matmul(ds, k) * scale, torch.matmul(ds.transpose(-1, -2), q) * scale, dv

    @staticmethod
    def jvp(ctx, dq, dk, dv):
        q, k, v = ctx.saved_tensors
        return attention_jvp_math(q, k, v, dq, dk, dv)[1]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return Attention.apply(q, k, v)


FUSED_MAX_HEAD_DIM = 128  # the Triton kernel's block configurations are tuned up to d = 128


def fused_enabled() -> bool:
    """SCM_FUSED_ATTENTION=0 turns the Triton kernel off (the math form everywhere): to compare, or to carry on
    where the kernel fails to build."""
    return os.environ.get("SCM_FUSED_ATTENTION", "1") != "0"


def attention_jvp(q, k, v, dq, dk, dv, out=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, dy) for the tangent pass: one fused forward+JVP kernel on CUDA (Triton), the math form elsewhere.
    `out` = (y, dy) buffers shaped like q to write into."""
    if q.is_cuda and q.shape[-1] <= FUSED_MAX_HEAD_DIM and fused_enabled():
        from . import triton_attention

        if triton_attention.triton is not None:
            y, dy = triton_attention.fused_attention_jvp(q, k, v, dq, dk, dv)
            if out is None:
                return y, dy
            return out[0].copy_(y), out[1].copy_(dy)
    return attention_jvp_math(q, k, v, dq, dk, dv, out)

"""Softmax attention that forward-mode AD can pass through on every device.

PyTorch's fused SDPA kernels have no forward-AD rule on the CPU, so the math form is the default here.
"""
import torch


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the last two dims; q, k, v: [..., L, d]."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.matmul(torch.softmax(scores, dim=-1), v)

"""Building blocks shared by the networks: time embedding, adaptive double norm, attention, residual block."""
import math

import torch
from torch import nn
import torch.nn.functional as F

from ..kernels import attention


class PositionalEmbedding(nn.Module):
    """EDM-style sinusoidal embedding of c_noise = t: [cos(t w_i), sin(t w_i)], w_i = (1/max_positions)^(i/half)."""

    def __init__(self, channels: int, max_positions: int = 10000):
        super().__init__()
        half = channels // 2
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None] * self.freqs.to(t.dtype)[None, :]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def pixel_norm(x: torch.Tensor, dim: int = 1, eps: float = 1e-4) -> torch.Tensor:
    """pnorm: rescale to unit RMS along `dim` (EDM2's normalize)."""
    return x / torch.sqrt(x.pow(2).mean(dim=dim, keepdim=True) + eps)


class AdaptiveDoubleNorm(nn.Module):
    """y = norm(x) * pnorm(s(emb)) + pnorm(b(emb)) (sCM, Sec. 4.1)."""

    def __init__(self, channels: int, emb_channels: int, groups: int = 8):
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(groups, channels), channels, affine=False)
        self.scale = nn.Linear(emb_channels, channels)
        self.shift = nn.Linear(emb_channels, channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        s = pixel_norm(self.scale(emb))[:, :, None, None]
        b = pixel_norm(self.shift(emb))[:, :, None, None]
        return self.norm(x) * s + b


class ResBlock(nn.Module):
    """Pre-activation residual block conditioned on the embedding through adaptive double norm."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm0 = AdaptiveDoubleNorm(in_channels, emb_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = AdaptiveDoubleNorm(out_channels, emb_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.dropout = dropout
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x, emb)))
        h = F.silu(self.norm1(h, emb))
        h = F.dropout(h, p=self.dropout, training=self.training)
        return (self.skip(x) + self.conv1(h)) / math.sqrt(2)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over pixels, through the forward-AD-capable attention op."""

    def __init__(self, channels: int, head_channels: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = nn.GroupNorm(math.gcd(8, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # [b, heads, hw, d]
        y = attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(y)) / math.sqrt(2)

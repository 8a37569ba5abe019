"""Building blocks shared by the networks, written in `ops` so each also carries a tangent.

Time embeddings (positional, Fourier with a scale), c_noise choices (t, EDM's log-sigma), adaptive double norm,
attention and the residual block of the toy U-Net.
"""
import math

import torch
from torch import nn

from . import ops
from ..trigflow import SIGMA_DATA

C_NOISE = ("t", "log-sigma")
TIME_EMBEDDINGS = ("positional", "fourier")


def c_noise(t: ops.Value, kind: str = "t", sigma_data: float = SIGMA_DATA) -> ops.Value:
    """The network's noise input: TrigFlow's t itself, or EDM's ln(sigma) / 4 with sigma = sd tan t."""
    if kind == "t":
        return t
    if kind == "log-sigma":  # d/dt ln(sd tan t) / 4 = 1 / (4 sin t cos t): unbounded at both ends
        return ops.unary(t, lambda a: torch.log(sigma_data * torch.tan(a)) / 4,
                         lambda a: 1 / (4 * torch.sin(a) * torch.cos(a)))
    raise ValueError(f"unknown c_noise {kind!r}; choose one of {C_NOISE}")


class Linear(nn.Linear):
    def forward(self, x: ops.Value) -> ops.Value:
        return ops.linear(x, self.weight, self.bias)


class Conv2d(nn.Conv2d):
    def forward(self, x: ops.Value, gain: float = 1.0) -> ops.Value:
        return ops.conv2d(x, self.weight, self.bias, padding=self.padding[0], gain=gain)


def _cos_sin(angles: ops.Value) -> ops.Value:
    cos = ops.unary(angles, torch.cos, lambda a: -torch.sin(a))
    sin = ops.unary(angles, torch.sin, torch.cos)
    return ops.cat([cos, sin], dim=1)


class PositionalEmbedding(nn.Module):
    """EDM-style sinusoidal embedding: [cos(c w_i), sin(c w_i)], w_i = (1/max_positions)^(i/half)."""

    def __init__(self, channels: int, max_positions: int = 10000):
        super().__init__()
        half = channels // 2
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, c: ops.Value) -> ops.Value:
        return _cos_sin(ops.linear_map(c, lambda a: a[:, None] * self.freqs.to(a.dtype)))


class FourierEmbedding(nn.Module):
    """Random Fourier features [cos(2 pi c f_i), sin(2 pi c f_i)], f_i ~ N(0, scale^2) (EDM's NCSN++ uses 16)."""

    def __init__(self, channels: int, scale: float = 16.0, generator: torch.Generator | None = None):
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2, generator=generator) * scale)

    def forward(self, c: ops.Value) -> ops.Value:
        return _cos_sin(ops.linear_map(c, lambda a: a[:, None] * (2 * math.pi * self.freqs.to(a.dtype))))


def time_embedding(kind: str, channels: int, fourier_scale: float = 16.0) -> nn.Module:
    if kind == "positional":
        return PositionalEmbedding(channels)
    if kind == "fourier":
        return FourierEmbedding(channels, fourier_scale)
    raise ValueError(f"unknown time embedding {kind!r}; choose one of {TIME_EMBEDDINGS}")


class IntervalEmbedding(nn.Module):
    """A second time input r (MeanFlow's u(z, r, t)): embed(t - r) [-> SiLU MLP] -> Linear, summed into the time
    embedding, so the network is conditioned on (t, t - r) (MeanFlow Sec. 4.3, Tab. 1c: the best of the variants).
    The last Linear starts at zero: a fresh two-time network is the one-time network for every r."""

    def __init__(self, channels: int, out_channels: int, kind: str = "positional", fourier_scale: float = 16.0,
                 hidden: bool = False):
        super().__init__()
        self.embed = time_embedding(kind, channels, fourier_scale)
        self.hidden = Linear(channels, channels) if hidden else None
        self.out = Linear(channels, out_channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, t: ops.Value, r: ops.Value) -> ops.Value:
        h = self.embed(ops.add(t, r, alpha=-1.0))  # t - r: both may carry a tangent
        if self.hidden is not None:
            h = ops.silu(self.hidden(h))
        return self.out(h)


def check_interval(r, takes_interval: bool) -> None:
    """r= is given exactly when the network was built with interval_input=True."""
    if takes_interval and r is None:
        raise ValueError("this network takes a second time (interval_input=True): pass r=, the interval's start")
    if not takes_interval and r is not None:
        raise ValueError("this network has no second time input: build it with interval_input=True to pass r=")


def resample(x: ops.Value, mode: str) -> ops.Value:
    """EDM's / EDM2's [1, 1] filter: 2x2 average down, nearest-neighbour up (both linear); "keep" is identity."""
    if mode == "down":
        return ops.linear_map(x, lambda a: nn.functional.avg_pool2d(a, 2))
    if mode == "up":
        return ops.linear_map(x, lambda a: nn.functional.interpolate(a, scale_factor=2, mode="nearest"))
    return x


def guidance_scales(guidance, like: torch.Tensor) -> torch.Tensor:
    """The CFG scale s given to a network with a guidance input, one per sample."""
    if guidance is None:
        raise ValueError("this network takes the guidance scale as an input: pass guidance=")
    return torch.as_tensor(guidance, dtype=like.dtype, device=like.device).expand(like.shape[0])


def run_unet(enc: nn.ModuleDict, dec: nn.ModuleDict, x: ops.Value, emb: ops.Value, concat) -> ops.Value:
    """EDM's U-Net walk: every encoder output is kept as a skip; each decoder "block" first takes the latest one."""
    skips = []
    for name, layer in enc.items():
        x = layer(x) if name.endswith("_conv") else layer(x, emb)
        skips.append(x)
    for name, layer in dec.items():
        if "block" in name:
            x = concat(x, skips.pop())
        x = layer(x, emb)
    return x


def norm_module(norm: nn.GroupNorm, x: ops.Value) -> ops.Value:
    """An nn.GroupNorm's settings and affine applied through ops (so Duals pass)."""
    return ops.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)


def double_norm_scale_shift(sb: ops.Value) -> tuple[ops.Value, ops.Value]:
    """[B, 2C] = [s(emb), b(emb)] -> pnorm(s), pnorm(b) as [B, C, 1, 1] each (adaptive double norm)."""
    sb = ops.pixel_norm(ops.linear_map(sb, lambda a: a.unflatten(1, (2, -1))), dim=2)
    return tuple(per_channel(ops.linear_map(sb, lambda a, i=i: a[:, i])) for i in range(2))


def per_channel(x: ops.Value) -> ops.Value:
    """[B, C] -> [B, C, 1, 1] so an embedding broadcasts over pixels."""
    return ops.linear_map(x, lambda a: a[:, :, None, None])


class AdaptiveDoubleNorm(nn.Module):
    """y = norm(x) * pnorm(s(emb)) + pnorm(b(emb)) (sCM, Sec. 4.1)."""

    def __init__(self, channels: int, emb_channels: int, groups: int = 8):
        super().__init__()
        self.groups = math.gcd(groups, channels)
        self.scale = Linear(emb_channels, channels)
        self.shift = Linear(emb_channels, channels)

    def forward(self, x: ops.Value, emb: "ops.Value | Modulations") -> ops.Value:
        if isinstance(emb, Modulations):
            s, b = emb.of(self)
        else:
            s, b = (per_channel(ops.pixel_norm(linear(emb))) for linear in (self.scale, self.shift))
        return ops.adaptive_group_norm(x, self.groups, s, b)


class Modulations:
    """pnorm(s(emb)), pnorm(b(emb)) of every AdaptiveDoubleNorm of a network from one matmul and one segmented
    pixel norm: the same numbers as each norm computing its own, in a handful of ops instead of ~10 per norm."""

    def __init__(self, norms: list[AdaptiveDoubleNorm], emb: ops.Value):
        linears = [linear for norm in norms for linear in (norm.scale, norm.shift)]
        device = linears[0].weight.device
        sizes = torch.tensor([linear.out_features for linear in linears], device=device)
        segment = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)  # column -> its linear
        weight = torch.cat([linear.weight for linear in linears])
        bias = torch.cat([linear.bias for linear in linears])
        self.normed = ops.segment_pixel_norm(ops.linear(emb, weight, bias), segment, sizes)
        offsets = torch.cumsum(sizes, 0)[::2].tolist()
        self.slices = {norm: (offset - norm.scale.out_features, norm.scale.out_features)
                       for norm, offset in zip(norms, offsets)}

    def of(self, norm: AdaptiveDoubleNorm) -> tuple[ops.Value, ops.Value]:
        offset, c = self.slices[norm]
        s = ops.linear_map(self.normed, lambda a: a[:, offset:offset + c, None, None])
        b = ops.linear_map(self.normed, lambda a: a[:, offset + c:offset + 2 * c, None, None])
        return s, b


class ResBlock(nn.Module):
    """Pre-activation residual block conditioned on the embedding through adaptive double norm."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm0 = AdaptiveDoubleNorm(in_channels, emb_channels)
        self.conv0 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = AdaptiveDoubleNorm(out_channels, emb_channels)
        self.conv1 = Conv2d(out_channels, out_channels, 3, padding=1)
        self.dropout = dropout
        self.skip = Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: ops.Value, emb: ops.Value) -> ops.Value:
        h = self.conv0(ops.silu(self.norm0(x, emb), consume=True))
        h = ops.silu(self.norm1(h, emb), consume=True)
        h = ops.dropout(h, self.dropout, self.training)
        half = math.sqrt(0.5)  # (skip + residual) / sqrt(2), the scale folded into the convs' weights
        if self.skip is None:
            return ops.add(self.conv1(h, gain=half), x, alpha=half)
        return ops.add(self.conv1(h, gain=half), self.skip(x, gain=half))


def split_heads(qkv: ops.Value, heads: int) -> list[ops.Value]:
    """[B, 3C, H, W] -> q, k, v as [B, heads, HW, C / heads] views. Channels are read as (head, channel, q|k|v),
    EDM's order: then each of q, k, v is a plain strided matrix per (sample, head) and the matmuls copy nothing."""
    def part(i):
        def pick(a):
            b, c3, h, w = a.shape
            return a.reshape(b, heads, c3 // 3 // heads, 3, h * w)[:, :, :, i].transpose(-1, -2)
        return ops.linear_map(qkv, pick)
    return [part(i) for i in range(3)]


def merge_heads(y: ops.Value, like_shape) -> ops.Value:
    """[B, heads, HW, d] -> [B, C, H, W]."""
    _, c, h, w = like_shape
    return ops.linear_map(y, lambda a: a.transpose(-1, -2).reshape(a.shape[0], c, h, w))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over pixels, through the forward-AD-capable attention op."""

    def __init__(self, channels: int, head_channels: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = nn.GroupNorm(math.gcd(8, channels), channels)
        self.qkv = Conv2d(channels, 3 * channels, 1)
        self.proj = Conv2d(channels, channels, 1)

    def forward(self, x: ops.Value) -> ops.Value:
        h = norm_module(self.norm, x)
        q, k, v = split_heads(self.qkv(h), self.heads)
        y = merge_heads(ops.attention(q, k, v), ops.primal(x).shape)
        half = math.sqrt(0.5)
        return ops.add(self.proj(y, gain=half), x, alpha=half)

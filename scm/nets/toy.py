"""Small networks for the CPU: a class-conditional U-Net for 8x8..32x32 images and an MLP for 2-D data.

Both compute F(x, t) of TrigFlow: x is x_t / sd, t is the TrigFlow time (c_noise = t unless chosen otherwise).
Written in `ops`, so passing `ops.Dual` inputs yields F and its JVP in one pass.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

from . import ops
from .layers import (AdaptiveDoubleNorm, AttentionBlock, norm_module, Conv2d, IntervalEmbedding, Linear, Modulations,
                     ResBlock, c_noise, check_interval, guidance_scales, time_embedding)


def onehot_labels(class_labels: torch.Tensor, num_classes: int, label_dropout: float, training: bool,
                  dtype: torch.dtype) -> torch.Tensor:
    """One-hot labels; a dropped label is the zero vector, which is also CFG's null class."""
    onehot = F.one_hot(class_labels, num_classes).to(dtype)
    if training and label_dropout > 0:
        keep = torch.rand(onehot.shape[0], 1, device=onehot.device) >= label_dropout
        onehot = onehot * keep.to(dtype)
    return onehot


class ConditionEmbedding(nn.Module):
    """emb = SiLU(MLP(embed(c_noise(t))) + W onehot(label) + guidance term [+ interval term]); the guidance scale s
    enters as positional(s) -> linear, added to the time embedding (sCD on ImageNet 512); the interval term is the
    network's embedding of t - r (a two-time network, `IntervalEmbedding`)."""

    def __init__(self, emb_channels: int, num_classes: int = 0, label_dropout: float = 0.0,
                 time_embedding_kind: str = "positional", fourier_scale: float = 16.0, c_noise_kind: str = "t",
                 guidance_input: bool = False):
        super().__init__()
        self.time = time_embedding(time_embedding_kind, emb_channels, fourier_scale)
        self.c_noise_kind = c_noise_kind
        self.mlp0, self.mlp1 = Linear(emb_channels, emb_channels), Linear(emb_channels, emb_channels)
        self.num_classes = num_classes
        self.label_dropout = label_dropout
        self.label = nn.Linear(num_classes, emb_channels, bias=False) if num_classes else None
        self.guidance = nn.Sequential(time_embedding("positional", emb_channels),
                                      nn.Linear(emb_channels, emb_channels)) if guidance_input else None

    def forward(self, t: ops.Value, class_labels: torch.Tensor | None, guidance: torch.Tensor | None = None,
                interval: ops.Value | None = None):
        emb = self.mlp1(ops.silu(self.mlp0(self.time(c_noise(t, self.c_noise_kind)))))
        dtype = ops.primal(emb).dtype
        if self.label is not None and class_labels is not None:
            emb = ops.add(emb, self.label(onehot_labels(class_labels, self.num_classes, self.label_dropout,
                                                        self.training, dtype)))
        if self.guidance is not None:
            emb = ops.add(emb, self.guidance(guidance_scales(guidance, ops.primal(emb))))
        if interval is not None:
            emb = ops.add(emb, interval)
        return ops.silu(emb)


class ToyUNet(nn.Module):
    """EDM-style U-Net at toy scale: residual blocks with adaptive double norm, attention at chosen resolutions."""

    def __init__(self, resolution: int = 8, in_channels: int = 1, channels: int = 32,
                 channel_mult: tuple[int, ...] = (1, 2), blocks_per_level: int = 2,
                 attn_resolutions: tuple[int, ...] = (4,), num_classes: int = 0,
                 label_dropout: float = 0.0, dropout: float = 0.0, time_embedding: str = "positional",
                 fourier_scale: float = 16.0, c_noise: str = "t", guidance_input: bool = False,
                 interval_input: bool = False):
        super().__init__()
        emb_channels = 4 * channels
        self.resolution, self.in_channels, self.takes_guidance = resolution, in_channels, guidance_input
        self.embed = ConditionEmbedding(emb_channels, num_classes, label_dropout, time_embedding, fourier_scale,
                                        c_noise, guidance_input)
        self.conv_in = Conv2d(in_channels, channels, 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips, ch, res = [channels], channels, resolution
        for level, mult in enumerate(channel_mult):
            if level > 0:
                self.down.append(nn.AvgPool2d(2))
                res //= 2
                skips.append(ch)
            for _ in range(blocks_per_level):
                self.down.append(self._block(ch, channels * mult, emb_channels, dropout, res in attn_resolutions))
                ch = channels * mult
                skips.append(ch)
        self.mid = nn.ModuleList([self._block(ch, ch, emb_channels, dropout, True),
                                  self._block(ch, ch, emb_channels, dropout, False)])
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(blocks_per_level + 1):
                self.up.append(self._block(ch + skips.pop(), channels * mult, emb_channels, dropout,
                                           res in attn_resolutions))
                ch = channels * mult
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                res *= 2
        self.norm_out = nn.GroupNorm(math.gcd(8, ch), ch)
        self.conv_out = Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.adaptive_norms = [m for m in self.modules() if isinstance(m, AdaptiveDoubleNorm)]  # a plain list
        # built last, so the other weights draw the same numbers as without it
        self.takes_interval = interval_input
        self.interval = IntervalEmbedding(emb_channels, emb_channels, time_embedding, fourier_scale, hidden=True) \
            if interval_input else None

    @staticmethod
    def _block(cin, cout, emb, dropout, attn):
        return nn.ModuleList([ResBlock(cin, cout, emb, dropout)] + ([AttentionBlock(cout)] if attn else []))

    @staticmethod
    def _run(block, x, emb):
        x = block[0](x, emb)
        return block[1](x) if len(block) > 1 else x

    def forward(self, x: ops.Value, t: ops.Value, class_labels: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None, r: ops.Value | None = None) -> ops.Value:
        check_interval(r, self.takes_interval)
        interval = self.interval(t, r) if self.interval is not None else None
        emb = Modulations(self.adaptive_norms, self.embed(t, class_labels, guidance, interval))
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = ops.linear_map(h, layer) if isinstance(layer, nn.AvgPool2d) else self._run(layer, h, emb)
            skips.append(h)
        for block in self.mid:
            h = self._run(block, h, emb)
        for layer in self.up:
            if isinstance(layer, nn.Upsample):
                h = ops.linear_map(h, layer)
            else:
                h = self._run(layer, ops.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(ops.silu(norm_module(self.norm_out, h)))


class MLP(nn.Module):
    """F(x, t) for low-dimensional data (e.g. 2-D): residual SiLU MLP with the time embedding added per layer."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 4, num_classes: int = 0,
                 label_dropout: float = 0.0, time_embedding: str = "positional", fourier_scale: float = 16.0,
                 c_noise: str = "t", guidance_input: bool = False, interval_input: bool = False):
        super().__init__()
        self.takes_guidance = guidance_input
        self.embed = ConditionEmbedding(hidden, num_classes, label_dropout, time_embedding, fourier_scale, c_noise,
                                        guidance_input)
        self.inp = Linear(dim, hidden)
        self.layers = nn.ModuleList([Linear(hidden, hidden) for _ in range(depth)])
        self.out = Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.takes_interval = interval_input  # built last, as in ToyUNet
        self.interval = IntervalEmbedding(hidden, hidden, time_embedding, fourier_scale, hidden=True) \
            if interval_input else None

    def forward(self, x: ops.Value, t: ops.Value, class_labels: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None, r: ops.Value | None = None) -> ops.Value:
        check_interval(r, self.takes_interval)
        emb = self.embed(t, class_labels, guidance, self.interval(t, r) if self.interval is not None else None)
        shape = ops.primal(x).shape[1:]
        h = self.inp(ops.linear_map(x, lambda a: a.flatten(1)))  # images are flattened: a pixel-space baseline too
        for layer in self.layers:
            h = ops.add(h, layer(ops.silu(ops.add(h, emb))))
        return ops.linear_map(self.out(ops.silu(h)), lambda a: a.reshape(a.shape[0], *shape))

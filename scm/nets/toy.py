"""Small networks for the CPU: a class-conditional U-Net for 8x8..32x32 images and an MLP for 2-D data.

Both compute F(x, t) of TrigFlow: x is x_t / sd, t is the TrigFlow time itself (c_noise = t).
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

from .layers import AttentionBlock, PositionalEmbedding, ResBlock


class ConditionEmbedding(nn.Module):
    """emb = MLP(positional(t)) + W onehot(label); a dropped or missing label is the zero vector (CFG's null class)."""

    def __init__(self, emb_channels: int, num_classes: int = 0, label_dropout: float = 0.0):
        super().__init__()
        self.time = PositionalEmbedding(emb_channels)
        self.mlp = nn.Sequential(nn.Linear(emb_channels, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels))
        self.num_classes = num_classes
        self.label_dropout = label_dropout
        self.label = nn.Linear(num_classes, emb_channels, bias=False) if num_classes else None

    def forward(self, t: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        emb = self.mlp(self.time(t))
        if self.label is not None and class_labels is not None:
            onehot = F.one_hot(class_labels, self.num_classes).to(emb.dtype)
            if self.training and self.label_dropout > 0:
                keep = torch.rand(onehot.shape[0], 1, device=onehot.device) >= self.label_dropout
                onehot = onehot * keep.to(onehot.dtype)
            emb = emb + self.label(onehot)
        return F.silu(emb)


class ToyUNet(nn.Module):
    """EDM-style U-Net at toy scale: residual blocks with adaptive double norm, attention at chosen resolutions."""

    def __init__(self, resolution: int = 8, in_channels: int = 1, channels: int = 32,
                 channel_mult: tuple[int, ...] = (1, 2), blocks_per_level: int = 2,
                 attn_resolutions: tuple[int, ...] = (4,), num_classes: int = 0,
                 label_dropout: float = 0.0, dropout: float = 0.0):
        super().__init__()
        emb_channels = 4 * channels
        self.resolution, self.in_channels = resolution, in_channels
        self.embed = ConditionEmbedding(emb_channels, num_classes, label_dropout)
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
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
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _block(cin, cout, emb, dropout, attn):
        return nn.ModuleList([ResBlock(cin, cout, emb, dropout)] + ([AttentionBlock(cout)] if attn else []))

    @staticmethod
    def _run(block, x, emb):
        x = block[0](x, emb)
        return block[1](x) if len(block) > 1 else x

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, class_labels)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h) if isinstance(layer, nn.AvgPool2d) else self._run(layer, h, emb)
            skips.append(h)
        for block in self.mid:
            h = self._run(block, h, emb)
        for layer in self.up:
            if isinstance(layer, nn.Upsample):
                h = layer(h)
            else:
                h = self._run(layer, torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class MLP(nn.Module):
    """F(x, t) for low-dimensional data (e.g. 2-D): residual SiLU MLP with the time embedding added per layer."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 4, num_classes: int = 0,
                 label_dropout: float = 0.0):
        super().__init__()
        self.embed = ConditionEmbedding(hidden, num_classes, label_dropout)
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, class_labels)
        h = self.inp(x.flatten(1))  # images are flattened, so the MLP also serves as a pixel-space baseline
        for layer in self.layers:
            h = h + layer(F.silu(h + emb))
        return self.out(F.silu(h)).reshape(x.shape)

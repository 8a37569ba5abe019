"""DDPM++ for CIFAR-10 as configured in EDM (Karras et al. 2022, the "ddpmpp" SongUNet), with sCM's changes:

1. TrigFlow parameterization: the network is F itself, fed x_t / sd and c_noise(t) (no EDM preconditioning).
2. Time embedding positional or Fourier, of c_noise = t (default) or EDM's ln(sigma) / 4.
3. Adaptive double normalization in every block: h = silu(norm(h) * pnorm(s(emb)) + pnorm(b(emb))), with s and b
   the two halves of the block's affine Linear(emb, 2 C) (sCM, Sec. 4.1). `modulation="edm"` keeps EDM's DDPM++
   block instead, h = silu(GroupNorm(h + affine(emb))) with affine Linear(emb, C): the exact EDM architecture, whose
   parameter count the tests compare with the published one.

Layout (EDM): encoder and decoder of UNetBlocks with 1x1-conv skips on every resampling block (resample_proj),
[1, 1] resample filter (2x2 average down, nearest up), one attention head, GroupNorm with min(32, C/4) groups and
eps 1e-6, residual sums scaled by sqrt(1/2), output through GroupNorm + SiLU + 3x3 conv at full resolution.
Written in `ops`, so Dual inputs give F and its JVP in one pass.
"""
import math

import torch
from torch import nn

from . import layers, ops
from .layers import (C_NOISE, Conv2d, IntervalEmbedding, Linear, PositionalEmbedding, check_interval,
                     double_norm_scale_shift, guidance_scales, merge_heads, norm_module, per_channel, resample,
                     run_unet, split_heads)
from .toy import onehot_labels

EPS = 1e-6
SKIP_SCALE = math.sqrt(0.5)  # (residual + skip) / sqrt(2) keeps unit variance when both are unit and independent
MODULATIONS = ("double-norm", "edm")


def group_norm(channels: int, affine: bool = True) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels, eps=EPS, affine=affine)


def xavier_(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """EDM's init for DDPM++: xavier-uniform weights scaled by `gain`, zero bias."""
    nn.init.xavier_uniform_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class Block(nn.Module):
    """EDM's UNetBlock: h = conv0(resample(silu(norm0(x)))), modulated by emb, dropout, conv1, skip; then attention."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, resample_mode: str = "keep",
                 attention: bool = False, dropout: float = 0.0, modulation: str = "double-norm"):
        super().__init__()
        self.out_channels, self.resample_mode, self.dropout = out_channels, resample_mode, dropout
        self.double_norm = modulation == "double-norm"
        self.norm0 = group_norm(in_channels)
        self.conv0 = xavier_(Conv2d(in_channels, out_channels, 3, padding=1))
        self.affine = xavier_(Linear(emb_channels, out_channels * (2 if self.double_norm else 1)))
        self.norm1 = group_norm(out_channels, affine=not self.double_norm)  # pnorm(s), pnorm(b) replace its affine
        self.conv1 = xavier_(Conv2d(out_channels, out_channels, 3, padding=1), 1e-5)  # residual starts near zero
        self.skip = xavier_(Conv2d(in_channels, out_channels, 1)) \
            if in_channels != out_channels or resample_mode != "keep" else None
        self.attention = attention
        if attention:
            self.norm2 = group_norm(out_channels)
            self.qkv = xavier_(Conv2d(out_channels, 3 * out_channels, 1), math.sqrt(0.2))
            self.proj = xavier_(Conv2d(out_channels, out_channels, 1), 1e-5)

    def forward(self, x: ops.Value, emb: ops.Value) -> ops.Value:
        h = self.conv0(resample(ops.silu(norm_module(self.norm0, x)), self.resample_mode))
        if self.double_norm:  # [s, b] = affine(emb); pnorm over channels, separately for s and for b
            s, b = double_norm_scale_shift(self.affine(emb))
            h = ops.adaptive_group_norm(h, self.norm1.num_groups, s, b, EPS)
        else:  # EDM's DDPM++ (adaptive_scale=False): the embedding is added before the affine group norm
            h = norm_module(self.norm1, ops.add(h, per_channel(self.affine(emb))))
        h = ops.dropout(ops.silu(h), self.dropout, self.training)
        if self.skip is None:  # (conv1(h) + x) sqrt(1/2), the scale folded into conv1's weights
            x = ops.add(self.conv1(h, gain=SKIP_SCALE), x, alpha=SKIP_SCALE)
        else:
            x = ops.add(self.conv1(h, gain=SKIP_SCALE), self.skip(resample(x, self.resample_mode), gain=SKIP_SCALE))
        if not self.attention:
            return x
        # One head; EDM orders the qkv channels as (head, C / head, 3), hence qkv_dim=2.
        q, k, v = split_heads(self.qkv(norm_module(self.norm2, x)), 1)
        a = merge_heads(ops.attention(q, k, v), ops.primal(x).shape)  # softmax(q k^T / sqrt(C)) v
        return ops.add(self.proj(a, gain=SKIP_SCALE), x, alpha=SKIP_SCALE)


class DDPMpp(nn.Module):
    """F(x_t / sd, t, label[, guidance scale s]) for 3x32x32 CIFAR-10 (EDM's DDPM++, ~60 M parameters)."""

    def __init__(self, resolution: int = 32, channels: int = 3, num_classes: int = 10, model_channels: int = 128,
                 channel_mult: tuple[int, ...] = (2, 2, 2), channel_mult_emb: int = 4, channel_mult_noise: int = 1,
                 num_blocks: int = 4, attn_resolutions: tuple[int, ...] = (16,), dropout: float = 0.13,
                 dropout_max_resolution: int | None = None, label_dropout: float = 0.0,
                 time_embedding: str = "positional", fourier_scale: float = 16.0, c_noise: str = "t",
                 guidance_input: bool = False, modulation: str = "double-norm", interval_input: bool = False):
        super().__init__()
        if c_noise not in C_NOISE:
            raise ValueError(f"unknown c_noise {c_noise!r}; choose one of {C_NOISE}")
        if modulation not in MODULATIONS:
            raise ValueError(f"unknown modulation {modulation!r}; choose one of {MODULATIONS}")
        cemb, cnoise = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        self.resolution, self.in_channels, self.num_classes = resolution, channels, num_classes
        self.label_dropout, self.c_noise_kind = label_dropout, c_noise

        # Mapping: embed(c_noise(t)) [+ W_l onehot * sqrt(classes)] [+ W_g positional(s)] -> two SiLU layers.
        self.emb_time = layers.time_embedding(time_embedding, cnoise, fourier_scale)
        self.emb_label = xavier_(Linear(num_classes, cnoise)) if num_classes else None
        self.emb_guidance = nn.ModuleDict({"embed": PositionalEmbedding(cnoise),
                                           "linear": xavier_(Linear(cnoise, cnoise))}) if guidance_input else None
        self.map0, self.map1 = xavier_(Linear(cnoise, cemb)), xavier_(Linear(cemb, cemb))

        def block(cin, cout, res, **kw):
            drop = dropout if dropout_max_resolution is None or res <= dropout_max_resolution else 0.0
            return Block(cin, cout, cemb, dropout=drop, modulation=modulation, **kw)

        self.enc = nn.ModuleDict()
        cout = channels
        for level, mult in enumerate(channel_mult):
            res = resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = xavier_(Conv2d(cout, model_channels, 3, padding=1))
                cout = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = block(cout, cout, res, resample_mode="down")
            for idx in range(num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = block(cout, model_channels * mult, res,
                                                             attention=res in attn_resolutions)
                cout = model_channels * mult
        skips = [model_channels] + [b.out_channels for b in list(self.enc.values())[1:]]
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = block(cout, cout, res, attention=True)
                self.dec[f"{res}x{res}_in1"] = block(cout, cout, res)
            else:
                self.dec[f"{res}x{res}_up"] = block(cout, cout, res, resample_mode="up")
            for idx in range(num_blocks + 1):  # attention only in the last block of a level (EDM)
                self.dec[f"{res}x{res}_block{idx}"] = block(cout + skips.pop(), model_channels * mult, res,
                                                             attention=idx == num_blocks and res in attn_resolutions)
                cout = model_channels * mult
        self.norm_out = group_norm(cout)  # EDM's level-0 aux_norm / aux_conv
        self.conv_out = Conv2d(cout, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # F = 0 at initialization (EDM: xavier * 1e-5)
        nn.init.zeros_(self.conv_out.bias)
        # a second time r: embed(t - r) -> linear, added like the label (built last: the rest draws as without it)
        self.takes_interval = interval_input
        self.emb_interval = IntervalEmbedding(cnoise, cnoise, time_embedding, fourier_scale) if interval_input else None

    def embedding(self, t: ops.Value, class_labels: torch.Tensor | None, guidance, r=None) -> ops.Value:
        emb = self.emb_time(layers.c_noise(t, self.c_noise_kind))
        p = ops.primal(emb)
        if self.emb_label is not None:  # no label (unconditional, CFG's null class) or a dropped one: zero one-hot
            onehot = torch.zeros(p.shape[0], self.num_classes, dtype=p.dtype, device=p.device) \
                if class_labels is None else \
                onehot_labels(class_labels, self.num_classes, self.label_dropout, self.training, p.dtype)
            emb = ops.add(emb, self.emb_label(onehot * math.sqrt(self.num_classes)))
        if self.emb_guidance is not None:  # guidance scale s: positional(s) -> linear, added like the label
            s = guidance_scales(guidance, p)
            emb = ops.add(emb, self.emb_guidance["linear"](self.emb_guidance["embed"](s)))
        if self.emb_interval is not None:
            emb = ops.add(emb, self.emb_interval(t, r))
        return ops.silu(self.map1(ops.silu(self.map0(emb))))

    def forward(self, x: ops.Value, t: ops.Value, class_labels: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None, r: ops.Value | None = None) -> ops.Value:
        check_interval(r, self.takes_interval)
        emb = self.embedding(t, class_labels, guidance, r)
        x = run_unet(self.enc, self.dec, x, emb, lambda h, skip: ops.cat([h, skip], dim=1))
        return self.conv_out(ops.silu(norm_module(self.norm_out, x)))

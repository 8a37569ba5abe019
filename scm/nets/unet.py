"""EDM2's config-G U-Net (Karras et al. 2024) with sCM's three changes (Sec. 4.1, App. G):

1. TrigFlow parameterization: the network is F itself, fed x_t / sd and t (no EDM preconditioning).
2. Positional time embedding of c_noise = t (instead of EDM2's magnitude-preserving Fourier features).
3. Adaptive double normalization y = pnorm(x) * pnorm(s(emb)) + pnorm(b(emb)) in every residual block, in place of
   EDM2's scale-only modulation y * (1 + c(emb)) (`modulation="edm2"` keeps the original, e.g. for ablations).

Magnitude-preserving layers as in EDM2, written in `ops` so Dual inputs yield the JVP in the same pass. EDM2
re-normalizes the stored weights inside `forward`; here that in-place step is `normalize_weights_()`, which the
trainer calls after each optimizer step, because writing to parameters inside forward breaks forward-mode AD.
"""
import math

import torch
from torch import nn

from . import layers, ops
from .layers import (C_NOISE, PositionalEmbedding, check_interval, double_norm_scale_shift, guidance_scales,
                     per_channel, resample, run_unet)
from .toy import onehot_labels

SIZES = {"S": 192, "M": 256, "L": 320, "XL": 384, "XXL": 448}  # model channels (EDM2 Table 2, sCM Table 3)
MP_SILU_GAIN = 1 / 0.596  # silu(x) / 0.596 has unit magnitude for unit-normal x (EDM2)


def mp_weight(w: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Each output filter scaled to unit RMS: w / (eps + rms(w_o)). Functional, so autograd sees through it."""
    rms = torch.linalg.vector_norm(w.flatten(1), dim=1).div(math.sqrt(w[0].numel()))
    return w / (eps + rms).view(-1, *[1] * (w.dim() - 1))


def mp_sum_weights(t: float) -> tuple[float, float]:
    """mp_sum(a, b, t) = ((1 - t) a + t b) / sqrt((1 - t)^2 + t^2): the weights of a and b."""
    norm = math.sqrt((1 - t) ** 2 + t ** 2)
    return (1 - t) / norm, t / norm


class MPConv(nn.Module):
    """Magnitude-preserving conv (kernel k x k) or linear (kernel 0): unit-norm filters, gain / sqrt(fan_in)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        super().__init__()
        shape = (out_channels, in_channels) + ((kernel, kernel) if kernel else ())
        self.weight = nn.Parameter(torch.randn(shape))

    def forward(self, x: ops.Value, gain: float | torch.Tensor = 1.0) -> ops.Value:
        weight = self.weight if self.weight.dtype == torch.float64 else self.weight.float()
        w = (mp_weight(weight) * (gain / math.sqrt(self.weight[0].numel()))).to(ops.primal(x).dtype)
        if w.dim() == 2:
            return ops.linear(x, w)
        return ops.conv2d(x, w, padding=w.shape[-1] // 2)

    @torch.no_grad()
    def normalize_weights_(self):
        """Forced weight normalization (EDM2 Sec. 2.4), outside forward: call after each optimizer step."""
        self.weight.copy_(mp_weight(self.weight.float()).to(self.weight.dtype))


class Block(nn.Module):
    """EDM2's residual block (encoder or decoder flavour) with optional self-attention."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, flavor: str = "enc",
                 resample_mode: str = "keep", attention: bool = False, channels_per_head: int = 64,
                 dropout: float = 0.0, res_balance: float = 0.3, attn_balance: float = 0.3,
                 clip_act: float = 256.0, modulation: str = "double-norm"):
        super().__init__()
        if modulation not in ("double-norm", "edm2"):
            raise ValueError(f"unknown modulation {modulation!r}; choose double-norm or edm2")
        self.out_channels, self.flavor, self.resample_mode = out_channels, flavor, resample_mode
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout, self.res_balance, self.attn_balance, self.clip_act = dropout, res_balance, attn_balance, clip_act
        self.modulation = modulation
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, 3)
        self.emb_linear = MPConv(emb_channels, out_channels * (2 if modulation == "double-norm" else 1), 0)
        self.emb_gain = nn.Parameter(torch.zeros([])) if modulation == "edm2" else None
        self.conv_res1 = MPConv(out_channels, out_channels, 3)
        self.conv_skip = MPConv(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, 1) if self.num_heads else None
        self.attn_proj = MPConv(out_channels, out_channels, 1) if self.num_heads else None

    def _modulate(self, y: ops.Value, emb: ops.Value) -> ops.Value:
        if self.modulation == "edm2":  # y * (1 + c(emb)), c starts at 0 through emb_gain
            c = per_channel(self.emb_linear(emb, gain=self.emb_gain))
            return ops.scale_shift(y, ops.add(c, 1.0), 0.0)
        s, b = double_norm_scale_shift(self.emb_linear(emb))  # pnorm(s(t)), pnorm(b(t))
        return ops.scale_shift(ops.pixel_norm(y), s, b)  # adaptive double norm

    def forward(self, x: ops.Value, emb: ops.Value) -> ops.Value:
        x = resample(x, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = ops.pixel_norm(x)
        y = self.conv_res0(ops.silu(x), gain=MP_SILU_GAIN)  # conv(mp_silu(x)), the 1/0.596 folded into the weights
        y = ops.silu(self._modulate(y, emb))
        y = ops.dropout(y, self.dropout, self.training)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        w_x, w_y = mp_sum_weights(self.res_balance)
        x = ops.add(self.conv_res1(y, gain=MP_SILU_GAIN * w_y), x, alpha=w_x)  # mp_sum(x, y, res_balance)
        if self.num_heads:
            x = self._attention(x)
        return ops.clamp(x, self.clip_act) if self.clip_act is not None else x

    def _attention(self, x: ops.Value) -> ops.Value:
        b, c, h, w = ops.primal(x).shape
        qkv = ops.linear_map(self.attn_qkv(x), lambda a: a.reshape(a.shape[0], self.num_heads, -1, 3, h * w))
        qkv = ops.pixel_norm(qkv, dim=2)  # each head's q, k, v to unit magnitude (EDM2)
        q, k, v = (ops.linear_map(qkv, lambda a, i=i: a[:, :, :, i].transpose(-1, -2)) for i in range(3))
        y = ops.linear_map(ops.attention(q, k, v), lambda a: a.transpose(-1, -2).reshape(a.shape[0], c, h, w))
        w_x, w_y = mp_sum_weights(self.attn_balance)
        return ops.add(self.attn_proj(y, gain=w_y), x, alpha=w_x)  # mp_sum(x, attn, attn_balance)


class MPIntervalEmbedding(nn.Module):
    """A second time r (MeanFlow's u(z, r, t)): embed(t - r) -> MP linear, times a gain that starts at 0, so a fresh
    two-time network is the one-time network; added to the time embedding like the guidance scale. The network
    builds it last, so its other weights draw the same numbers as without it."""

    def __init__(self, channels: int, out_channels: int, kind: str = "positional", fourier_scale: float = 16.0):
        super().__init__()
        self.embed = layers.time_embedding(kind, channels, fourier_scale)
        self.linear = MPConv(channels, out_channels, 0)
        self.gain = nn.Parameter(torch.zeros([]))

    def forward(self, t: ops.Value, r: ops.Value) -> ops.Value:
        return self.linear(self.embed(ops.add(t, r, alpha=-1.0)), gain=self.gain)  # (t, t - r), MeanFlow Sec. 4.3


def mp_cat(a: ops.Value, b: ops.Value, t: float = 0.5) -> ops.Value:
    """EDM2's magnitude-preserving concatenation along channels."""
    na, nb = ops.primal(a).shape[1], ops.primal(b).shape[1]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2))
    wa, wb = c / math.sqrt(na) * (1 - t), c / math.sqrt(nb) * t
    return ops.cat([ops.linear_map(a, lambda v: v * wa), ops.linear_map(b, lambda v: v * wb)], dim=1)


class UNetEDM2(nn.Module):
    """F(x_t / sd, t, label[, guidance scale]) for 3x64x64 pixels (ImageNet 64) or 4x64x64 latents (ImageNet 512)."""

    def __init__(self, size: str | None = "S", resolution: int = 64, channels: int = 4, num_classes: int = 1000,
                 model_channels: int | None = None, channel_mult: tuple[int, ...] = (1, 2, 3, 4),
                 num_blocks: int = 3, attn_resolutions: tuple[int, ...] = (16, 8), label_balance: float = 0.5,
                 concat_balance: float = 0.5, dropout: float = 0.0, dropout_max_resolution: int | None = None,
                 label_dropout: float = 0.0, time_embedding: str = "positional", fourier_scale: float = 16.0,
                 c_noise: str = "t", guidance_input: bool = False, modulation: str = "double-norm",
                 channels_per_head: int = 64, interval_input: bool = False):
        super().__init__()
        if model_channels is None:
            if size not in SIZES:
                raise ValueError(f"unknown U-Net size {size!r}; choose one of {list(SIZES)} or give model_channels")
            model_channels = SIZES[size]
        if c_noise not in C_NOISE:
            raise ValueError(f"unknown c_noise {c_noise!r}; choose one of {C_NOISE}")
        cblock = [model_channels * m for m in channel_mult]
        cnoise, cemb = cblock[0], max(cblock)
        self.resolution, self.in_channels, self.num_classes = resolution, channels, num_classes
        self.label_balance, self.concat_balance, self.label_dropout = label_balance, concat_balance, label_dropout
        self.c_noise_kind, self.takes_guidance = c_noise, guidance_input
        self.out_gain = nn.Parameter(torch.zeros([]))  # F = 0 at initialization

        self.emb_time = layers.time_embedding(time_embedding, cnoise, fourier_scale)
        self.emb_noise = MPConv(cnoise, cemb, 0)
        self.emb_guidance = nn.ModuleDict({"embed": PositionalEmbedding(cnoise), "linear": MPConv(cnoise, cemb, 0)}) \
            if guidance_input else None
        self.emb_label = MPConv(num_classes, cemb, 0) if num_classes else None

        def block(cin, cout, res, **kw):
            drop = dropout if dropout_max_resolution is None or res <= dropout_max_resolution else 0.0
            return Block(cin, cout, cemb, dropout=drop, modulation=modulation, channels_per_head=channels_per_head,
                         **kw)

        self.enc = nn.ModuleDict()
        cout = channels + 1  # + a constant-ones channel (EDM2)
        for level, ch in enumerate(cblock):
            res = resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = MPConv(cout, ch, 3)
                cout = ch
            else:
                self.enc[f"{res}x{res}_down"] = block(cout, cout, res, flavor="enc", resample_mode="down")
            for idx in range(num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = block(cout, ch, res, flavor="enc",
                                                             attention=res in attn_resolutions)
                cout = ch
        skips = [cblock[0]] + [m.out_channels for m in list(self.enc.values())[1:]]
        self.dec = nn.ModuleDict()
        for level, ch in reversed(list(enumerate(cblock))):
            res = resolution >> level
            if level == len(cblock) - 1:
                self.dec[f"{res}x{res}_in0"] = block(cout, cout, res, flavor="dec", attention=True)
                self.dec[f"{res}x{res}_in1"] = block(cout, cout, res, flavor="dec")
            else:
                self.dec[f"{res}x{res}_up"] = block(cout, cout, res, flavor="dec", resample_mode="up")
            for idx in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{idx}"] = block(cout + skips.pop(), ch, res, flavor="dec",
                                                             attention=res in attn_resolutions)
                cout = ch
        self.out_conv = MPConv(cout, channels, 3)
        self.emb_interval = MPIntervalEmbedding(cnoise, cemb, time_embedding, fourier_scale) if interval_input else None

    @property
    def takes_interval(self) -> bool:
        return self.emb_interval is not None

    def embedding(self, t: ops.Value, class_labels: torch.Tensor | None, guidance, r=None) -> ops.Value:
        emb = self.emb_noise(self.emb_time(layers.c_noise(t, self.c_noise_kind)))
        dtype = ops.primal(emb).dtype
        if self.emb_guidance is not None:  # guidance scale s: positional(s) -> linear, added to the time embedding
            s = guidance_scales(guidance, ops.primal(emb))
            emb = ops.add(emb, self.emb_guidance["linear"](self.emb_guidance["embed"](s)))
        if self.emb_interval is not None:  # (t, t - r), MeanFlow Sec. 4.3
            emb = ops.add(emb, self.emb_interval(t, r))
        if self.emb_label is not None and class_labels is not None:
            onehot = onehot_labels(class_labels, self.num_classes, self.label_dropout, self.training, dtype)
            w_t, w_l = mp_sum_weights(self.label_balance)
            emb = ops.add(ops.linear_map(emb, lambda a: a * w_t), self.emb_label(onehot * math.sqrt(self.num_classes)),
                          alpha=w_l)
        return ops.linear_map(ops.silu(emb), lambda a: a * MP_SILU_GAIN)

    def forward(self, x: ops.Value, t: ops.Value, class_labels: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None, r: ops.Value | None = None) -> ops.Value:
        check_interval(r, self.takes_interval)
        emb = self.embedding(t, class_labels, guidance, r)
        p = ops.primal(x)
        x = ops.cat([x, torch.ones_like(p[:, :1])], dim=1)
        x = run_unet(self.enc, self.dec, x, emb, lambda h, skip: mp_cat(h, skip, t=self.concat_balance))
        return self.out_conv(x, gain=self.out_gain)

    def normalize_weights_(self):
        for module in self.modules():
            if isinstance(module, MPConv):
                module.normalize_weights_()

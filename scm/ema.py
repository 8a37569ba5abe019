"""Exponential moving averages of the weights: EDM2's power-function EMA and the half-life EMA.

Both keep a copy of the network (its dtype); `update(net, step)` is called after each optimizer step.
"""
import copy

import numpy as np
import torch
from torch import nn


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """EDM2 (Karras et al. 2024), Eq. 3 inverted: the power-function exponent gamma for a relative std sigma_rel."""
    t = sigma_rel ** -2
    roots = np.roots([1, 7, 16 - t, 12 - t])
    return float(roots.real[np.isreal(roots)].max())


class _EMA(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.ema = copy.deepcopy(net).eval().requires_grad_(False)

    def beta(self, step: int) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """Blend in `net` after optimizer step `step` (1-based)."""
        beta = self.beta(step)
        for p_ema, p in zip(self.ema.parameters(), net.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)
        for b_ema, b in zip(self.ema.buffers(), net.buffers()):
            b_ema.copy_(b)


class PowerEMA(_EMA):
    """beta_t = (1 - 1/t)^(gamma + 1): an average whose width grows with training (EDM2, Sec. 3.1)."""

    def __init__(self, net: nn.Module, sigma_rel: float = 0.05):
        super().__init__(net)
        self.sigma_rel = sigma_rel
        self.gamma = sigma_rel_to_gamma(sigma_rel)

    def beta(self, step: int) -> float:
        return (1.0 - 1.0 / step) ** (self.gamma + 1) if step > 0 else 0.0


class HalfLifeEMA(_EMA):
    """beta = 0.5^(batch / half-life in images), with EDM's ramp-up: half-life <= rampup * images seen."""

    def __init__(self, net: nn.Module, halflife_images: float, batch_size: int, rampup: float | None = 0.05):
        super().__init__(net)
        self.halflife_images, self.batch_size, self.rampup = halflife_images, batch_size, rampup

    def beta(self, step: int) -> float:
        halflife = self.halflife_images
        if self.rampup is not None:
            halflife = min(halflife, step * self.batch_size * self.rampup)
        return 0.5 ** (self.batch_size / max(halflife, 1e-8))

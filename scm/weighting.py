"""The adaptive weight w(t) (EDM2-style: features of t -> linear -> 1), learned jointly with the network; and the
uniform weight w = 0 that an ablation puts in its place.

Two feature families. "positional": sinusoids of t itself with frequencies <= 1, what we had first; over the
training proposal they cannot follow a curve like log(1/sigma), which diverges as t -> 0 (a least-squares fit misses
it by 1.6 nats, tests/test_weighting.py). "log-sigma": EDM2's choice (training/networks_edm2.py: MPFourier of
c_noise = ln(sigma) / 4 feeding the logvar linear layer): random Fourier features of ln(sigma) / 4 with frequencies
~ N(0, 1), where sigma = sd tan t is the EDM noise level of TrigFlow's x_t; they fit that curve to 4e-11 nats.
"""
from typing import Literal

import torch
from torch import nn

from .nets.layers import FourierEmbedding, PositionalEmbedding
from .trigflow import SIGMA_DATA

WeightFeatures = Literal["positional", "log-sigma"]
FEATURE_SEED = 0  # the log-sigma frequencies come from their own generator, not from torch's


class AdaptiveWeight(nn.Module):
    """w_phi(t); starts at 0 so the first steps weight every t equally."""

    def __init__(self, channels: int = 128, features: WeightFeatures = "positional", sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.features, self.sigma_data = features, sigma_data
        if features == "positional":
            self.embed = PositionalEmbedding(channels)
        elif features == "log-sigma":
            self.embed = FourierEmbedding(channels, scale=1.0, generator=torch.Generator().manual_seed(FEATURE_SEED))
        else:
            raise ValueError(f"unknown w(t) features {features!r}; use positional or log-sigma")
        self.linear = nn.Linear(channels, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def embedding_input(self, t: torch.Tensor) -> torch.Tensor:
        """What the features are of: t, or EDM2's c_noise = ln(sigma) / 4 with sigma = sd tan t."""
        if self.features == "positional":
            return t
        return torch.log((self.sigma_data * torch.tan(t)).clamp_min(1e-20)) / 4

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.linear.weight.dtype)  # w(t) is computed in the module's own precision
        return self.linear(self.embed(self.embedding_input(t))).squeeze(1)


class UniformWeight(nn.Module):
    """w(t) = 0: the loss is the plain mean squared error at every t (sCM Fig. 5, without adaptive weighting)."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)


def loss_weight(adaptive: bool, features: WeightFeatures = "positional", sigma_data: float = SIGMA_DATA) -> nn.Module:
    """w(t) of a loss: learned (adaptive weighting, on `features` of t) or w = 0."""
    return AdaptiveWeight(features=features, sigma_data=sigma_data) if adaptive else UniformWeight()

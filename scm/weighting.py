"""The adaptive weight w(t) (EDM2-style: embedding of t -> linear -> 1), learned jointly with the network; and the
uniform weight w = 0 that an ablation puts in its place."""
import torch
from torch import nn

from .nets.layers import PositionalEmbedding


class AdaptiveWeight(nn.Module):
    """w_phi(t); starts at 0 so the first steps weight every t equally."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.embed = PositionalEmbedding(channels)
        self.linear = nn.Linear(channels, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.linear.weight.dtype)  # w(t) is computed in the module's own precision
        return self.linear(self.embed(t)).squeeze(1)


class UniformWeight(nn.Module):
    """w(t) = 0: the loss is the plain mean squared error at every t (sCM Fig. 5, without adaptive weighting)."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)


def loss_weight(adaptive: bool) -> nn.Module:
    """w(t) of a loss: learned (adaptive weighting) or w = 0."""
    return AdaptiveWeight() if adaptive else UniformWeight()

"""Consistency training with a uniform time proposal: sCT (sCM Alg. 1), but with t ~ U[t_low, t_high] in TrigFlow
time instead of the log-normal proposal ln(sd tan t) ~ N(P_mean, P_std^2).

An example of a method that lives outside scm-bench: this one file, registered under the entry-point group
`scm_bench.methods` (pyproject.toml beside it), then named in a recipe as `method: uniform-ct`.
"""
import math

import torch
from pydantic import Field, model_validator

from scm.methods import SCT, MethodSettings
from scm.methods.sct import TangentConfig
from scm.objectives import Noise, consistency_loss


class UniformTimeSettings(MethodSettings):
    t_low: float = Field(0.05, ge=0.0)  # the proposal's range in TrigFlow time t (sigma = sd tan t)
    t_high: float = Field(1.5, le=math.pi / 2)
    adaptive_weighting: bool = True  # learn w(t), as sCT does
    tangent: TangentConfig = TangentConfig()  # normalization, c, warmup H: sCT's stabilizers

    @model_validator(mode="after")
    def _a_range(self):
        if not self.t_low < self.t_high:
            raise ValueError(f"t_low {self.t_low} must be below t_high {self.t_high}")
        return self


class UniformCT(SCT):
    """sCT's loss, networks, weighting and sampling; only the draw of t differs."""
    name = "uniform-ct"
    label = "sCT, uniform t"
    Settings = UniformTimeSettings

    def draw(self, shape, generator, device):
        s = self.settings
        t = s.t_low + (s.t_high - s.t_low) * torch.rand(shape[0], generator=generator, device=device)
        z = torch.randn(shape, generator=generator, device=device) * self.sigma_data
        return Noise(t, z)

    def loss(self, nets, x0, labels, draws, step):
        # the proposal's P_mean and P_std are not used: the draws are given
        return consistency_loss(nets.net, nets.modules["weight"], x0, labels, step, 0.0, 1.0, self.tangent(),
                                None, 1.0, self.sigma_data, noise=draws)

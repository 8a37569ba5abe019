"""Discrete-time consistency training on N steps of [0, t_max]: the baseline the continuous-time objective replaces
(the loss: `scm.discrete.discrete_consistency_loss`; its gradient tends to sCT's as N grows)."""
from pydantic import Field

from ..discrete import discrete_consistency_loss
from ..objectives import draw_noise
from ..weighting import loss_weight
from .base import MethodSettings
from .consistency import ConsistencyModel


class DiscreteSettings(MethodSettings):
    discrete_steps: int = Field(gt=1)  # N: the grid t_i = i t_max / N
    p_mean: float = -1.0  # the proposal drawn before moving t up to its grid point
    p_std: float = Field(1.4, gt=0)
    adaptive_weighting: bool = True


class DiscreteCT(ConsistencyModel):
    name = "discrete-ct"
    label = "discrete-time CT"
    Settings = DiscreteSettings

    def auxiliary_modules(self):
        return {"weight": loss_weight(self.settings.adaptive_weighting)}

    def draw(self, shape, generator, device):
        return draw_noise(shape, self.settings.p_mean, self.settings.p_std, self.sigma_data, generator, None, device)

    def loss(self, nets, x0, labels, draws, step):
        s = self.settings
        return discrete_consistency_loss(nets.net, nets.modules["weight"], x0, labels, s.discrete_steps, s.p_mean,
                                         s.p_std, self.sigma_data, noise=draws)

    def cost_per_step(self) -> float:
        return 4.0  # the target's forward 1 (no grad) + forward and backward 3

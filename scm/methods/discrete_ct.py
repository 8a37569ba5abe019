"""Discrete-time consistency training on N steps of [0, t_max]: the baseline the continuous-time objective replaces
(the loss: `scm.discrete.discrete_consistency_loss`; its gradient tends to sCT's as N grows)."""
from pydantic import Field

from ..discrete import discrete_consistency_loss
from .consistency import ConsistencyModel
from .proposal import LogNormalProposal, ProposalSettings


class DiscreteSettings(ProposalSettings):
    discrete_steps: int = Field(gt=1)  # N: the grid t_i = i t_max / N (t is drawn, then moved up to its grid point)


class DiscreteCT(LogNormalProposal, ConsistencyModel):
    name = "discrete-ct"
    label = "discrete-time CT"
    Settings = DiscreteSettings

    def loss(self, nets, x0, labels, draws, step):
        s = self.settings
        return discrete_consistency_loss(nets.net, nets.modules["weight"], x0, labels, s.discrete_steps, s.p_mean,
                                         s.p_std, self.sigma_data, noise=draws)

    def cost_per_step(self) -> float:
        return 4.0  # the target's forward 1 (no grad) + forward and backward 3

"""Discrete-time consistency training on N steps of [0, t_max]: the baseline the continuous-time objective replaces
(the loss: `scm.discrete.discrete_consistency_loss`; its gradient tends to sCT's as N grows). With `ect:` the step
from t to t' follows ECT's schedule instead of a fixed grid (Geng et al. 2024), which shrinks as training goes on:
sCM Table 3 (ECT vs sCT) as a like-for-like recipe. Only the schedule is ECT's; the loss keeps sCM's adaptive weight
in F's space (App. E), where ECT weights ||f - f-|| by 1 / (t - r) in its own code.
"""
import functools

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..discrete import discrete_consistency_loss, ect_previous_time
from .consistency import ConsistencyModel
from .proposal import LogNormalProposal, ProposalSettings


class ECTSchedule(BaseModel):
    """r = sigma (1 - n(sigma) / q^(stage + 1)), n = 1 + k sigmoid(-b sigma); the stage grows every stage_steps.
    Defaults: ECT's CIFAR-10 code (locuslab/ect: q 2, k 8, b 1; `--double 250` ticks of 100 iterations)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    q: float = Field(2.0, gt=1)  # ImageNet 64: 4
    k: float = Field(8.0, ge=0)
    b: float = Field(1.0, ge=0)
    stage_steps: int = Field(25_000, gt=0)


class DiscreteSettings(ProposalSettings):
    discrete_steps: int | None = Field(None, gt=1)  # N: the grid t_i = i t_max / N (t is moved up to its grid point)
    ect: ECTSchedule | None = None  # ECT's shrinking step instead of the grid

    @model_validator(mode="after")
    def _one_schedule(self):
        if self.discrete_steps is None and self.ect is None:
            raise ValueError("discrete_steps: missing; give the grid's N (e.g. discrete_steps: 64, as "
                             "recipes/findings_discrete.yaml) or ECT's shrinking step instead (ect: {q: 2}, as "
                             "recipes/methods_digits.yaml)")
        if self.discrete_steps is not None and self.ect is not None:
            raise ValueError("give one of discrete_steps (a fixed grid of N steps) and ect (ECT's shrinking "
                             "step), not both")
        return self


class DiscreteCT(LogNormalProposal, ConsistencyModel):
    name = "discrete-ct"
    label = "discrete-time CT"
    Settings = DiscreteSettings

    def loss(self, nets, x0, labels, draws, step):
        s = self.settings
        previous = None
        if s.ect is not None:
            previous = functools.partial(ect_previous_time, stage=step // s.ect.stage_steps, q=s.ect.q, k=s.ect.k,
                                         b=s.ect.b, sigma_data=self.sigma_data)
        return discrete_consistency_loss(nets.net, nets.modules["weight"], x0, labels, s.discrete_steps, s.p_mean,
                                         s.p_std, self.sigma_data, noise=draws, previous_time=previous)

    def cost_per_step(self) -> float:
        return 4.0  # the target's forward 1 (no grad) + forward and backward 3

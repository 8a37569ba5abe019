"""TrigFlow diffusion (the teacher): F(x_t / sd, t) regresses dx_t/dt / sd with the adaptive weight w(t), sampled
by an ODE solver (DPM-Solver-2S or Euler) with classifier-free guidance."""
from typing import Literal

from pydantic import field_validator

from ..objectives import diffusion_loss
from ..sampling import guided, teacher_sample
from .base import Method, SamplingSettings, Setting, ends
from .proposal import LogNormalProposal, ProposalSettings


class DiffusionSettings(ProposalSettings):
    """The proposal and w(t) only (ProposalSettings)."""


class DiffusionSampling(SamplingSettings):
    sampler: Literal["dpm-solver-2s", "euler"] = "dpm-solver-2s"
    # DPM-Solver-2S: NFE = 2 steps - 1 (35 for 18, sCM App. G.1); a list gives one row per step count (FID vs NFE)
    steps: int | list[int] = 18
    guidance: float | list[float] = 1.0  # classifier-free guidance scale(s); > 1 needs label dropout in training

    @field_validator("steps")
    @classmethod
    def _at_least_two(cls, v):
        if not (v if isinstance(v, list) else [v]) or any(n < 2 for n in (v if isinstance(v, list) else [v])):
            raise ValueError("steps must be >= 2 (or a list of such), e.g. 18 or [3, 6, 18]")
        return v

    @field_validator("guidance")
    @classmethod
    def _at_least_one(cls, v):
        if any(s < 1.0 for s in (v if isinstance(v, list) else [v])):
            raise ValueError("guidance must be >= 1 (1: no guidance), e.g. 1.4")
        return v

    @property
    def step_list(self) -> list[int]:
        return self.steps if isinstance(self.steps, list) else [self.steps]

    @property
    def guidance_list(self) -> list[float]:
        return self.guidance if isinstance(self.guidance, list) else [self.guidance]

    def at_toy_scale(self) -> "DiffusionSampling":
        return self.model_copy(update={"steps": [2, 3] if len(self.step_list) > 1 else 2,
                                       "guidance": ends(self.guidance_list) if len(self.guidance_list) > 1
                                       else self.guidance})


class Diffusion(LogNormalProposal, Method):
    name = "diffusion"
    label = "TrigFlow diffusion"
    Settings = DiffusionSettings
    Sampling = DiffusionSampling

    def loss(self, nets, x0, labels, draws, step):
        s = self.settings
        return diffusion_loss(nets.net, nets.modules["weight"], x0, labels, s.p_mean, s.p_std, self.sigma_data,
                              noise=draws)

    def cost_per_step(self) -> float:
        return 3.0  # forward 1 + backward 2

    def sample_settings(self, sampling: DiffusionSampling) -> list[Setting]:
        per_step = 2 if sampling.sampler == "dpm-solver-2s" else 1  # DPM-Solver-2S: 2 steps - 1 evaluations
        return [Setting(sampling.sampler, n, per_step * n - (per_step - 1), guidance=g, cfg=g)
                for n in sampling.step_list for g in sampling.guidance_list]

    def sample(self, net, z, labels, setting: Setting, noises: list):
        return teacher_sample(guided(net, labels, setting.cfg), z, setting.sampler, setting.steps,
                              self.sigma_data)[0]

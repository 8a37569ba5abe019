"""Multistep sCD: sCD with [0, t_max] cut into M segments, the consistency function of each mapping to its start
(multistep consistency models, Heek et al. 2024; the rows "multistep sCD, M = 2, 4, 8, 16" of sCM Table 6).

For t in (s_k, s_{k+1}] the student is f(x_t, t) = cos(t - s_k) x_t - sin(t - s_k) sd F(x_t / sd, t): on each
segment the DDIM step to s_k with a learned F, so f(x, s_k) = x at the segment's start, exactly as f(x, 0) = x in
sCM. The consistency condition df/dt = 0 along the teacher's ODE inside each segment gives Algorithm 1 with every
cos t, sin t replaced by cos(t - s_k), sin(t - s_k) (`scm.objectives.consistency_loss(segment_start=...)`). Sampling
takes M steps (its `steps`, if given, must be [M]): from t_max, each step jumps to the start of the current
segment, deterministically (NFE = M).

What sCM does not state, and what we chose: where the boundaries lie (`spacing`: "cosine" = equal steps of u in
[0, 1] under the variance-preserving cosine schedule, t = arctan(tan(pi u / 2) / sd), the usual time of Heek et
al.; "uniform" = equal steps of TrigFlow t up to t_max); whether sampling re-noises between segments (we do not:
Heek et al.'s deterministic sampler); and the training iterations per M (we take sCD's).
"""
import math
from typing import Literal

import torch
from pydantic import Field, field_validator

from .. import trigflow
from ..objectives import consistency_loss
from ..sampling import guided
from .base import SamplingError, Setting
from .consistency import ConsistencySampling
from .scd import SCD, DistillationSettings


class MultistepSettings(DistillationSettings):
    segments: int = Field(2, ge=1)  # M: the sampling steps it is trained for (Table 6: 2, 4, 8, 16)
    spacing: Literal["cosine", "uniform"] = "cosine"  # where the M - 1 inner boundaries lie (not in sCM)


class MultistepSampling(ConsistencySampling):
    steps: list[int] | None = None  # None: M, one step per segment (the only step count it is trained for)

    @field_validator("steps")
    @classmethod
    def _positive(cls, v):
        if v is not None and (not v or any(n < 1 for n in v)):
            raise ValueError("steps must list step counts >= 1; leave it out to sample in M steps")
        return v


def segment_starts(segments: int, spacing: str, sigma_data: float = trigflow.SIGMA_DATA) -> list[float]:
    """s_0 = 0 < s_1 < ... < s_{M-1}: the lower end of each segment, in TrigFlow time."""
    if spacing == "cosine":
        return [math.atan(math.tan(math.pi * k / segments / 2) / sigma_data) for k in range(segments)]
    return [k * trigflow.t_max(sigma_data=sigma_data) / segments for k in range(segments)]


def segment_start(t: torch.Tensor, starts: list[float]) -> torch.Tensor:
    """The start s_k of each t's segment (s_k, s_{k+1}]: a boundary itself belongs to the segment below it."""
    bounds = torch.tensor(starts, dtype=t.dtype, device=t.device)
    index = torch.searchsorted(bounds, t.contiguous(), right=False) - 1
    return bounds[index.clamp(min=0)]


class MultistepSCD(SCD):
    name = "multistep-scd"
    label = "multistep sCD"
    Settings = MultistepSettings
    Sampling = MultistepSampling

    def starts(self) -> list[float]:
        return segment_starts(self.settings.segments, self.settings.spacing, self.sigma_data)

    def loss(self, nets, x0, labels, draws, step):
        s = self.settings
        return consistency_loss(nets.net, nets.modules["weight"], x0, labels, step, s.p_mean, s.p_std,
                                self.tangent(), nets.teacher, s.guidance, self.sigma_data, noise=draws,
                                segment_start=segment_start(draws.t, self.starts()))

    def sample_settings(self, sampling):
        M = self.settings.segments
        if sampling.steps not in (None, [M]):
            raise SamplingError("steps", f"{sampling.steps}: multistep sCD with segments: {M} samples in exactly "
                                         f"{M} steps (one per segment); use steps: [{M}]")
        if self.takes_guidance():
            return [Setting("multistep", M, M, guidance=g, told=g) for g in sampling.guidance]
        return [Setting("multistep", M, M, guidance=self.distilled_guidance())]

    def later_noises(self, setting: Setting) -> int:
        return 0  # deterministic between segments

    @torch.no_grad()
    def sample(self, net, z, labels, setting: Setting, noises: list):
        sd = self.sigma_data
        F = (lambda x, t: net(x, t, labels, guidance=setting.told)) if setting.told is not None else \
            guided(net, labels, setting.cfg)
        x, t = z, trigflow.t_max(sigma_data=sd)
        for start in reversed(self.starts()):  # t_max lies in the top segment
            angle = torch.full((z.shape[0],), t - start, dtype=z.dtype, device=z.device)
            F_out = F(x / sd, torch.full_like(angle, t))
            x = trigflow.consistency_function(F_out, x, angle, sd)  # cos(t - s) x - sin(t - s) sd F
            t = start
        return x

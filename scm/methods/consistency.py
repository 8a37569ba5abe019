"""What every consistency model shares: sampling in one or a few steps from t_max (then t = 1.1, ...).

A consistency model is sampled with NFE = steps; a network that takes the guidance scale as an input is told each
scale of `guidance`; one that does not samples without guidance (its guidance, if any, was distilled in).
"""
from pydantic import Field, field_validator

from ..sampling import consistency_sample, consistency_times, guided
from .base import Method, SamplingError, SamplingSettings, Setting, ends


class ConsistencySampling(SamplingSettings):
    steps: list[int] = [1, 2]  # NFE; 2 steps go through t = 1.1 (sCM Sec. 5)
    guidance: list[float] = Field([1.0], min_length=1)  # scales told to a network with a guidance input

    @field_validator("steps")
    @classmethod
    def _positive(cls, v):
        if not v or any(n < 1 for n in v):
            raise ValueError("steps must list step counts >= 1, e.g. [1, 2]")
        return v

    @field_validator("guidance")
    @classmethod
    def _at_least_one(cls, v):
        if any(s < 1.0 for s in v):
            raise ValueError("guidance scales must be >= 1, e.g. [1.3, 1.5]")
        return v

    def at_toy_scale(self) -> "ConsistencySampling":
        return self.model_copy(update={"guidance": ends(self.guidance)})


class ConsistencyModel(Method):
    """Sampling of a consistency model f(x_t, t) = cos t x_t - sin t sd F(x_t / sd, t); subclasses train it."""
    Sampling = ConsistencySampling

    def distilled_guidance(self) -> float:
        """The guidance scale a network without a guidance input samples at (what its rows report)."""
        return 1.0

    def sample_settings(self, sampling: ConsistencySampling) -> list[Setting]:
        if self.takes_guidance():
            return [Setting("consistency", n, n, guidance=s, told=s) for n in sampling.steps
                    for s in sampling.guidance]
        if sampling.guidance != [1.0]:
            raise SamplingError("guidance", f"{sampling.guidance}: the network of {self.name} has no guidance input "
                                            "to be told a scale; remove it (scales are told to a student with a "
                                            "guidance input, e.g. scd with guidance_input: true)")
        return [Setting("consistency", n, n, guidance=self.distilled_guidance()) for n in sampling.steps]

    def later_noises(self, setting: Setting) -> int:
        return len(consistency_times(setting.steps)) - 1

    def sample(self, net, z, labels, setting: Setting, noises: list):
        if setting.told is not None:
            def F(x, t):
                return net(x, t, labels, guidance=setting.told)
        else:
            F = guided(net, labels, setting.cfg)
        return consistency_sample(F, z, setting.steps, sigma_data=self.sigma_data, noises=noises)[0]

"""sCD: continuous-time consistency distillation (sCM Algorithm 1 with dx_t/dt = sd F_teacher, with CFG).

The teacher runs with classifier-free guidance at `guidance`; a range [lo, hi] draws s per sample and tells it to
a student built with a guidance input (sCD on ImageNet 512, App. G).
"""
from pydantic import ValidationInfo, field_validator

from ..objectives import consistency_loss, draw_noise
from .sct import SCT, ConsistencySettings


def checked_guidance(v, guidance_input: bool):
    """A teacher's CFG scale >= 1, or a range [lo, hi] drawn per sample for a student told the scale."""
    low, high = (v, v) if isinstance(v, (int, float)) else v
    if low < 1.0 or high < low:
        raise ValueError("guidance must be a scale >= 1 or a range [lo, hi] with 1 <= lo <= hi")
    if low != high and not guidance_input:
        raise ValueError(f"[{low:g}, {high:g}] is a range but the student cannot be told the scale; set "
                         "guidance_input: true beside it, or give one scale")
    return v if low != high or isinstance(v, (int, float)) else float(low)  # [s, s] is the scale s


class DistillationSettings(ConsistencySettings):
    guidance_input: bool = False  # the student takes the scale s as an input (sCD, ImageNet 512)
    guidance: float | tuple[float, float] = 1.0  # the teacher's CFG scale, or a range [lo, hi] drawn per sample

    @field_validator("guidance")
    @classmethod
    def _at_least_one(cls, v, info: ValidationInfo):
        return checked_guidance(v, info.data.get("guidance_input"))


class GuidedTeacher:
    """A mixin for methods that read a teacher run with CFG at `guidance` (a scale, or a range drawn per sample for
    a student told it through `guidance_input`): sCD, VSD and what builds on them."""
    reads_teacher = True

    def takes_guidance(self) -> bool:
        return self.settings.guidance_input

    def teacher_guidance(self) -> float:
        g = self.settings.guidance
        return g if isinstance(g, (int, float)) else g[1]

    def distilled_guidance(self) -> float:
        return self.settings.guidance  # one scale: the range needs a guidance input


class SCD(GuidedTeacher, SCT):
    name = "scd"
    label = "sCD"
    Settings = DistillationSettings

    def draw(self, shape, generator, device):
        s = self.settings
        return draw_noise(shape, s.p_mean, s.p_std, self.sigma_data, generator, s.guidance, device,
                          sigma_max=getattr(s, "sigma_max", None))

    def loss(self, nets, x0, labels, draws, step):
        s = self.settings
        return consistency_loss(nets.net, nets.modules["weight"], x0, labels, step, s.p_mean, s.p_std,
                                self.tangent(), nets.teacher, s.guidance, self.sigma_data, noise=draws)

    def cost_per_step(self) -> float:
        return super().cost_per_step() + (2.0 if self.teacher_guidance() > 1.0 else 1.0)  # the teacher, x2 with CFG

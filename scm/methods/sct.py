"""sCT: continuous-time consistency training (sCM Algorithm 1 without a teacher: dx_t/dt = cos t z - sin t x0).

The loss itself is `scm.objectives.consistency_loss`, written beside Algorithm 1; this file is the method around
it: its settings, its draws, its cost, and consistency sampling.
"""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..objectives import TangentSettings, consistency_loss, draw_noise
from ..weighting import loss_weight
from .base import MethodSettings
from .consistency import ConsistencyModel


class TangentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    normalization: Literal["norm", "clip", "none"] = "norm"  # g / (||g|| + c), Alg. 1; or clamp to [-1, 1]
    norm_constant: float = Field(0.1, gt=0)  # c, Alg. 1
    warmup_steps: int = Field(10_000, ge=0)  # H, Alg. 1
    jvp_method: Literal["dual", "torch-func"] = "dual"  # dual: one pass with tangent rules; torch-func: reference


class ConsistencySettings(MethodSettings):
    p_mean: float = -1.0  # the training proposal: ln(sd tan t) ~ N(P_mean, P_std^2)
    p_std: float = Field(1.4, gt=0)
    adaptive_weighting: bool = True  # learn w(t) (Alg. 1); false: w = 0, every t weighted equally (Fig. 5)
    tangent: TangentConfig = TangentConfig()


class SCT(ConsistencyModel):
    name = "sct"
    label = "sCT"
    Settings = ConsistencySettings
    watched = {"tangent_norm": "tangent"}  # df/dt before normalization: where instability shows first (Sec. 4)

    def auxiliary_modules(self):
        return {"weight": loss_weight(self.settings.adaptive_weighting)}

    def tangent(self) -> TangentSettings:
        return TangentSettings(**self.settings.tangent.model_dump())

    def draw(self, shape, generator, device):
        return draw_noise(shape, self.settings.p_mean, self.settings.p_std, self.sigma_data, generator, None, device)

    def loss(self, nets, x0, labels, draws, step):
        s = self.settings
        return consistency_loss(nets.net, nets.modules["weight"], x0, labels, step, s.p_mean, s.p_std,
                                self.tangent(), None, 1.0, self.sigma_data, noise=draws)

    def cost_per_step(self) -> float:
        return 5.0  # forward + backward 3, and the JVP pass 2 (`scm-bench bench jvp`: 1.65-2.0x a forward)

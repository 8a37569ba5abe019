"""sCT: continuous-time consistency training (sCM Algorithm 1 without a teacher: dx_t/dt = cos t z - sin t x0).

The loss itself is `scm.objectives.consistency_loss`, written beside Algorithm 1; this file is the method around
it: its settings, its draws, its cost, and consistency sampling.
"""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..objectives import TangentSettings, consistency_loss
from .consistency import ConsistencyModel
from .proposal import LogNormalProposal, ProposalSettings


class TangentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # g / (||g|| + c) as sCM Alg. 1 writes it (the paper's text gives the norm); rms: g / (||g|| / sqrt(D) + c), the
    # RMS form other code bases use; clip: clamp to [-1, 1]
    normalization: Literal["norm", "rms", "clip", "none"] = "norm"
    norm_constant: float = Field(0.1, gt=0)  # c, Alg. 1
    warmup_steps: int = Field(10_000, ge=0)  # H, Alg. 1
    jvp_method: Literal["dual", "torch-func"] = "dual"  # dual: one pass with tangent rules; torch-func: reference


class ConsistencySettings(ProposalSettings):
    tangent: TangentConfig = TangentConfig()


class SCT(LogNormalProposal, ConsistencyModel):
    name = "sct"
    label = "sCT"
    Settings = ConsistencySettings
    watched = {"tangent_norm": "tangent"}  # df/dt before normalization: where instability shows first (Sec. 4)

    def tangent(self) -> TangentSettings:
        return TangentSettings(**self.settings.tangent.model_dump())

    def loss(self, nets, x0, labels, draws, step):
        s = self.settings
        return consistency_loss(nets.net, nets.modules["weight"], x0, labels, step, s.p_mean, s.p_std,
                                self.tangent(), None, 1.0, self.sigma_data, noise=draws)

    def cost_per_step(self) -> float:
        return 5.0  # forward + backward 3, and the JVP pass 2 (`scm-bench bench jvp`: 1.65-2.0x a forward)

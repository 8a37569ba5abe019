"""sCD+VSD: "a combination of sCD and VSD (by simply adding the two losses)" (sCM Sec. 5; Table 5 "sCD with adaptive
VSD", Table 7).

The student is trained by sCD's loss (Algorithm 1) plus lambda_VSD times the VSD loss of its one-step samples
g_theta(z') = f_theta(z', t_max), each with its own adaptive weight; a fake-score network learns the diffusion of
those samples as in VSD (scm/methods/vsd.py). It samples as a consistency model, in one step or two.
"""
from dataclasses import dataclass

from ..objectives import Noise, consistency_loss
from .scd import SCD, DistillationSettings
from .vsd import VSD_COST, VSD_NETWORKS, VSDDraws, VSDTermSettings, draw_vsd, vsd_terms


class SCDVSDSettings(DistillationSettings, VSDTermSettings):
    """sCD's settings (proposal, tangent, guidance) and the VSD terms' (their proposals, lambda_VSD)."""


@dataclass
class SCDVSDDraws:
    consistency: Noise
    vsd: VSDDraws

    def __getitem__(self, part: slice) -> "SCDVSDDraws":
        return SCDVSDDraws(self.consistency[part], self.vsd[part])


class SCDVSD(SCD):
    name = "scd-vsd"
    label = "sCD+VSD"
    Settings = SCDVSDSettings
    networks = VSD_NETWORKS

    def auxiliary_modules(self):
        return {"weight": self.weight(), "vsd_weight": self.weight(), "fake_weight": self.weight()}

    def draw(self, shape, generator, device):
        consistency = super().draw(shape, generator, device)
        vsd = draw_vsd(self.settings, shape, self.sigma_data, generator, device)
        # one CFG scale per sample for both terms, so a student told s learns one target per s
        vsd.vsd.s = vsd.fake.s = consistency.s
        return SCDVSDDraws(consistency, vsd)

    def loss(self, nets, x0, labels, draws, step):
        s = self.settings
        loss_cd, diagnostics = consistency_loss(nets.net, nets.modules["weight"], x0, labels, step, s.p_mean,
                                                s.p_std, self.tangent(), nets.teacher, s.guidance, self.sigma_data,
                                                noise=draws.consistency)
        loss_vsd, loss_fake, vsd_diagnostics = vsd_terms(nets, labels, draws.vsd, s, self.takes_guidance(),
                                                         self.sigma_data, vsd_weight="vsd_weight")
        loss = loss_cd + s.vsd_weight * loss_vsd + loss_fake
        return loss, {**diagnostics, "loss": loss.detach(), "scd_loss": loss_cd.detach(), **vsd_diagnostics}

    def cost_per_step(self) -> float:
        return super().cost_per_step() + VSD_COST + (1.0 if self.teacher_guidance() > 1.0 else 0.0)

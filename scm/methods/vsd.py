"""VSD as the sCM paper applies it: one-step generation from t_max, "adaptive VSD" in TrigFlow (App. C, Table 5).

The generator is a consistency model sampled in one step, g_theta(z') = f_theta(z', t_max) with z' ~ N(0, sd^2 I)
(App. C writes f_theta(z', pi/2); Table 5 starts one-step sampling at t_max = arctan(80 / sd), which we follow).
A fake-score network F_phi, initialised from the teacher, learns the diffusion of the generator's samples,

    L_Diff(phi) = E w(t) ||sd F_phi(x_t / sd, t) - v_t||^2,  x_t = cos t sg(g_theta(z')) + sin t z,

and the generator follows teacher score minus fake score on its noised samples (App. C.2), with EDM2's adaptive
weight w_psi(t) in place of the hand-made one and its own log-normal proposal of t:

    L_VSD(theta, psi) = E e^{w_psi(t)} / D ||g_theta - sg(g_theta) + F_pretrain(x_t / sd, t) - F_phi(x_t / sd, t)||^2
                        - w_psi(t).

Both networks train in the same step from the same parameters (Table 5: one update of phi per update of theta);
each has its own optimizer and EMA, and the loss uses the raw F_phi, not its EMA (App. G.2, "VSD experiments").
The teacher runs with classifier-free guidance at `guidance` (the scale Fig. 7 sweeps).
"""
import functools
from dataclasses import dataclass

import torch
from pydantic import Field, ValidationInfo, field_validator

from .. import trigflow
from ..objectives import Noise, weighted_mse, diffusion_loss, draw_noise
from ..sampling import guided
from ..weighting import WeightFeatures, loss_weight
from .base import MethodSettings, SamplingError, Trained
from .consistency import ConsistencyModel, ConsistencySampling
from .scd import GuidedTeacher, checked_guidance


class VSDTermSettings(MethodSettings):
    """What the VSD terms need, shared by VSD and sCD+VSD (values: sCM Table 5, "sCD with adaptive VSD")."""
    vsd_p_mean: float = 0.4  # proposal of t for L_VSD(theta): ln(sd tan t) ~ N(0.4, 2.0^2)
    vsd_p_std: float = Field(2.0, gt=0)
    fake_p_mean: float = -0.8  # proposal of t for L_Diff(phi)
    fake_p_std: float = Field(1.6, gt=0)
    vsd_weight: float = Field(1.0, gt=0)  # lambda_VSD: the weight of L_VSD beside another loss


class VSDSettings(VSDTermSettings):
    adaptive_weighting: bool = True  # learn w_psi(t) and the fake score's w(t); false: w = 0
    weight_features: WeightFeatures = "positional"  # what each w(t) is a linear function of (scm/weighting.py)
    guidance_input: bool = False  # the generator (and fake score) take the teacher's scale s as an input
    guidance: float | tuple[float, float] = 1.0  # the teacher's CFG scale, or a range drawn per sample

    @field_validator("guidance")
    @classmethod
    def _at_least_one(cls, v, info: ValidationInfo):
        return checked_guidance(v, info.data.get("guidance_input"))


@dataclass
class VSDDraws:
    """z' for the generator; (t, z) noising its samples for L_VSD; (t, z) for the fake score's L_Diff; s."""
    z_gen: torch.Tensor
    vsd: Noise
    fake: Noise

    def __getitem__(self, part: slice) -> "VSDDraws":
        return VSDDraws(self.z_gen[part], self.vsd[part], self.fake[part])


def draw_vsd(settings, shape, sigma_data, generator, device) -> VSDDraws:
    """The VSD draws of one batch, in a fixed order (z', then L_VSD's t, z, s, then L_Diff's t, z)."""
    z_gen = torch.randn(shape, generator=generator, device=device) * sigma_data
    vsd = draw_noise(shape, settings.vsd_p_mean, settings.vsd_p_std, sigma_data, generator, settings.guidance,
                     device)
    fake = draw_noise(shape, settings.fake_p_mean, settings.fake_p_std, sigma_data, generator, None, device)
    return VSDDraws(z_gen, vsd, Noise(fake.t, fake.z, vsd.s))


def vsd_terms(nets, labels, draws: VSDDraws, settings, takes_guidance: bool, sigma_data: float,
              vsd_weight: str = "weight"):
    """(L_VSD, L_Diff, diagnostics) of one batch (see the module docstring). `vsd_weight`: the module holding
    w_psi(t) (sCD+VSD keeps sCD's own w(t) under "weight")."""
    sd, s = sigma_data, draws.vsd.s
    told = {"guidance": s} if takes_guidance else {}
    generator, fake = nets.net, nets.trained["fake_score"]
    t_gen = torch.full_like(draws.vsd.t, trigflow.t_max(sigma_data=sd))
    x_gen = trigflow.consistency_function(generator(draws.z_gen / sd, t_gen, labels, **told), draws.z_gen, t_gen, sd)

    x_t = trigflow.interpolate(x_gen.detach(), draws.vsd.z, draws.vsd.t)
    with torch.no_grad():  # y = F_pretrain - F_phi: a fixed direction for theta, no gradient into phi
        y = guided(nets.teacher, labels, s)(x_t / sd, draws.vsd.t) - fake(x_t / sd, draws.vsd.t, labels, **told)
    w = nets.modules[vsd_weight](draws.vsd.t)
    loss_vsd = weighted_mse(x_gen, x_gen.detach() - y, w)  # ||g - sg(g) + y||^2: gradient y dg/dtheta

    fake_told = functools.partial(fake, **told)
    loss_fake, fake_diagnostics = diffusion_loss(fake_told, nets.modules["fake_weight"], x_gen.detach(), labels,
                                                 settings.fake_p_mean, settings.fake_p_std, sd, noise=draws.fake)
    diagnostics = {"vsd_loss": loss_vsd.detach(), "score_gap": y.flatten(1).norm(dim=1).mean(),
                   "fake_loss": loss_fake.detach(), "fake_mse": fake_diagnostics["mse"],
                   "vsd_w_mean": w.detach().mean()}
    return loss_vsd, loss_fake, diagnostics


class OneStepSampling(ConsistencySampling):
    steps: list[int] = [1]  # a one-step generator: NFE 1


# The fake score starts from the teacher (sCM Sec. 5, DMD2); the generator from the stage's init (the teacher).
VSD_NETWORKS = (Trained("net"), Trained("fake_score", start="teacher"))
VSD_COST = 9.0  # generator forward + backward 3, teacher 1, fake score 1 (no grad), fake score's L_Diff 3, w 1


class VSD(GuidedTeacher, ConsistencyModel):
    name = "vsd"
    label = "VSD"
    Settings = VSDSettings
    Sampling = OneStepSampling
    networks = VSD_NETWORKS

    def auxiliary_modules(self):
        return {"weight": self.weight(), "fake_weight": self.weight()}

    def weight(self):
        """A fresh w(t) as the settings ask for it."""
        return loss_weight(self.settings.adaptive_weighting, self.settings.weight_features, self.sigma_data)

    def draw(self, shape, generator, device):
        return draw_vsd(self.settings, shape, self.sigma_data, generator, device)

    def loss(self, nets, x0, labels, draws, step):
        # x0 is not used: VSD learns from the teacher and its own samples only (data-free, as in the paper)
        loss_vsd, loss_fake, diagnostics = vsd_terms(nets, labels, draws, self.settings, self.takes_guidance(),
                                                     self.sigma_data)
        loss = loss_vsd + loss_fake
        return loss, {"loss": loss.detach(), **diagnostics}

    def cost_per_step(self) -> float:
        return VSD_COST + (1.0 if self.teacher_guidance() > 1.0 else 0.0)

    def sample_settings(self, sampling):
        if sampling.steps != [1]:
            raise SamplingError("steps", f"{sampling.steps}: a VSD generator maps t_max to data in one step and "
                                         "was never trained at other times; use steps: [1]")
        return super().sample_settings(sampling)

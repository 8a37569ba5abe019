"""MeanFlow (Geng et al. 2025, "Mean Flows for One-step Generative Modeling", arXiv 2505.13447).

The network models the average velocity u(z_t, r, t) = 1 / (t - r) int_r^t v(z_s, s) ds (Eq. 3). Differentiating
(t - r) u in t gives the MeanFlow identity u = v - (t - r) du/dt (Eq. 6), du/dt = v d_z u + d_t u: the JVP of u
along the tangent (v, 0, 1) of (z, r, t) (Eq. 8). Training regresses u_theta on sg(u_tgt), u_tgt = v_t - (t - r)
du_theta/dt (Eq. 10-11), weighted by sg(w) = 1 / (||Delta||^2 + c)^p (Eq. 22); sampling steps z_r = z_t - (t - r)
u(z_t, r, t) (Eq. 12), in one step x = eps - u(eps, 0, 1).

Time convention. MeanFlow's path is z_tau = (1 - tau) x + tau eps, eps ~ N(0, I), tau in [0, 1], tau = 1 noise
(the paper's t; called tau here, so that t stays TrigFlow's). Our networks take (x_t / sd, t), x_t = cos t x +
sin t z, z = sd eps, t in [0, pi/2]. With N(tau) = sqrt(sd^2 (1 - tau)^2 + tau^2) and tan t = tau / (sd (1 - tau)),
that is cos t = sd (1 - tau) / N and sin t = tau / N:

    z_tau / N = (1 - tau) / N x + tau / N eps = cos t x / sd + sin t eps = x_t / sd,

so the input z_tau / N has unit variance for data of std sd, as every TrigFlow network's input, and t =
atan2(tau, sd (1 - tau)) is finite at tau = 1 (t = pi/2, where z_1 = eps = z / sd). Also sd tan t = tau / (1 - tau):
MeanFlow's logit-normal times, logit(tau) ~ N(mu, sigma^2), are sCM's proposal ln(sd tan t) ~ N(P_mean, P_std^2)
with the same numbers. So

    u_theta(z, r, t) = net(z_tau / N(tau_t), t(tau_t), r = t(tau_r))   (the net embeds (t, t - r), TrigFlow times)

with no output scale: u is in z_tau units, as the paper's network, which has no preconditioner (Tab. 3); the target
u = eps - x at r = t has per-dimension std sqrt(1 + sd^2) ~ 1.1 for such data, already about the unit scale the
networks start at. The one-pass JVP's input tangents follow by the chain rule (`input_tangents`).
"""
import contextlib
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from pydantic import Field, field_validator

from ..nets.ops import Dual
from ..objectives import rng_state, set_rng_state
from ..trigflow import expand
from .base import Method, MethodSettings, Setting
from .consistency import ConsistencySampling

UFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # u(z_tau, tau_r, tau_t), z_tau units


# ---- the tau <-> t map (module docstring) ---------------------------------------------------------------------------

def trig_time(tau: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """t = atan2(tau, sd (1 - tau)): tan t = tau / (sd (1 - tau)); t(0) = 0, t(1) = pi/2."""
    return torch.atan2(tau, sigma_data * (1 - tau))


def linear_time(t: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """tau = sd sin t / (cos t + sd sin t): the inverse of `trig_time`."""
    return sigma_data * torch.sin(t) / (torch.cos(t) + sigma_data * torch.sin(t))


def input_norm(tau: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """N(tau) = sqrt(sd^2 (1 - tau)^2 + tau^2), so that x_t / sd = z_tau / N."""
    return torch.hypot(sigma_data * (1 - tau), tau)


def network_inputs(z, tau_r, tau_t, sigma_data: float):
    """(z_tau / N(tau_t), t(tau_t), t(tau_r)): what the network is given for u(z, r, t)."""
    return z / expand(input_norm(tau_t, sigma_data), z), trig_time(tau_t, sigma_data), trig_time(tau_r, sigma_data)


def input_tangents(z, v, tau_t, sigma_data: float):
    """The tangents of (z / N, t) along (dz, dtau_r, dtau_t) = (v, 0, 1) (Eq. 8), by the chain rule:
    d(z / N) = (v - z N' / N) / N with N' = (tau - sd^2 (1 - tau)) / N, and dt/dtau = sd / N^2 (finite on [0, 1])."""
    N = input_norm(tau_t, sigma_data)
    dN = (tau_t - sigma_data ** 2 * (1 - tau_t)) / N
    n, dn = expand(N, z), expand(dN, z)
    return (v - z * dn / n) / n, sigma_data / N ** 2


# ---- u, its time derivative and the target ----------------------------------------------------------------------

def average_velocity(net, labels, z, tau_r, tau_t, sigma_data: float):
    """u_theta(z, r, t) in z_tau units (module docstring)."""
    x, t, r = network_inputs(z, tau_r, tau_t, sigma_data)
    return net(x, t, labels, r=r)


def jvp_of(u: UFn, z, tau_r, tau_t, v) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, du/dt) for any u(z, tau_r, tau_t) through torch.func.jvp along (v, 0, 1) (Eq. 8); no graph is kept."""
    with torch.no_grad():
        return torch.func.jvp(u, (z, tau_r, tau_t), (v, torch.zeros_like(tau_r), torch.ones_like(tau_t)))


def jvp_reference(net, labels, z, tau_r, tau_t, v, sigma_data: float):
    """(u_theta, du_theta/dt) by torch.func.jvp through the time map and the network: the reference."""
    return jvp_of(lambda zz, a, b: average_velocity(net, labels, zz, a, b, sigma_data), z, tau_r, tau_t, v)


def jvp_dual(net, labels, z, tau_r, tau_t, v, sigma_data: float):
    """(u_theta, du_theta/dt) in one pass of `ops.Dual` values: input tangents by the chain rule, r without one."""
    x, t, r = network_inputs(z, tau_r, tau_t, sigma_data)
    dx, dt = input_tangents(z, v, tau_t, sigma_data)
    with torch.no_grad():
        out = net(Dual.of(x, dx), Dual.of(t, dt), labels, r=r)
    if not isinstance(out, Dual):
        raise TypeError("the network returned a plain tensor for Dual inputs: it is not written in scm.nets.ops; "
                        "use jvp_method: torch-func")
    return out.primal, out.tangent


JVP_METHODS = {"dual": jvp_dual, "torch-func": jvp_reference}


def meanflow_target(v, tau_r, tau_t, du_dt):
    """u_tgt = v - (t - r) du/dt (Eq. 10-11)."""
    return v - expand(tau_t - tau_r, v) * du_dt


def guided_velocity(v, u_cond, u_uncond, omega, kappa):
    """v~ = omega v_t + kappa u(z_t, t, t | c) + (1 - omega - kappa) u(z_t, t, t) (Eq. 21; kappa = 0: Eq. 19)."""
    omega, kappa = expand(omega, v), expand(kappa, v)
    return omega * v + kappa * u_cond + (1 - omega - kappa) * u_uncond


def adaptive_loss(u, u_tgt, power: float, constant: float):
    """(mean of sg(w) ||Delta||^2, ||Delta||^2, w) with Delta = u - sg(u_tgt), w = 1 / (||Delta||^2 + c)^p (Eq. 22);
    ||.||^2 sums over a sample's dimensions, as the official code does."""
    se = (u - u_tgt.detach()).flatten(1).pow(2).sum(1)
    w = 1 / (se.detach() + constant) ** power
    return (w * se).mean(), se, w


@contextlib.contextmanager
def evaluating(net):
    """The net in eval mode for a while: the guidance terms of the target are read without dropout (the official
    code evaluates them with train=False)."""
    was = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was)


# ---- draws ------------------------------------------------------------------------------------------------------

@dataclass
class IntervalNoise:
    """The draws of one batch: the interval's end tau_t and start tau_r (tau_r <= tau_t) and eps ~ N(0, I)."""
    tau_t: torch.Tensor
    tau_r: torch.Tensor
    eps: torch.Tensor

    def __getitem__(self, part: slice) -> "IntervalNoise":
        return IntervalNoise(self.tau_t[part], self.tau_r[part], self.eps[part])


def draw_interval(shape, settings, generator=None, device=None, dtype=torch.float32) -> IntervalNoise:
    """Two independent times, the larger one t (Sec. 4.3), r = t for a fraction 1 - interval_fraction of the
    samples (the official PyTorch code's sampler v0, the paper's), then eps; in that order from `generator`."""
    def time():
        if settings.time_sampler == "uniform":  # U(0, 1), Tab. 1d
            return torch.rand(shape[0], generator=generator, device=device, dtype=dtype)
        normal = torch.randn(shape[0], generator=generator, device=device, dtype=dtype)
        return torch.sigmoid(normal * settings.p_std + settings.p_mean)  # lognorm(mu, sigma), Tab. 1d

    a, b = time(), time()
    tau_t, tau_r = torch.maximum(a, b), torch.minimum(a, b)
    equal = torch.rand(shape[0], generator=generator, device=device, dtype=dtype) < 1 - settings.interval_fraction
    tau_r = torch.where(equal, tau_t, tau_r)
    eps = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return IntervalNoise(tau_t, tau_r, eps)


# ---- the method -------------------------------------------------------------------------------------------------

class MeanFlowSettings(MethodSettings):
    # defaults: the ImageNet ablation's (Tab. 4, B/4); recipes/meanflow_cifar10.yaml sets CIFAR-10's (App. A)
    time_sampler: Literal["logit-normal", "uniform"] = "logit-normal"  # Tab. 1d
    p_mean: float = -0.4  # logit(tau) ~ N(p_mean, p_std^2): lognorm(-0.4, 1.0), Tab. 4 (= sCM's ln(sd tan t))
    p_std: float = Field(1.0, gt=0)  # Tab. 4
    interval_fraction: float = Field(0.25, ge=0, le=1)  # the "ratio of r != t", Tab. 1a / Tab. 4
    adaptive_power: float = Field(1.0, ge=0)  # p of w = 1 / (||Delta||^2 + c)^p, Eq. 22, Tab. 1e / Tab. 4
    adaptive_constant: float = Field(1e-3, gt=0)  # c, Sec. 4.3 ("e.g. 10^-3"); py-meanflow's norm_eps default
    guidance_scale: float = Field(1.0, gt=0)  # omega, Eq. 21 (1 with guidance_mix 0: no CFG)
    guidance_mix: float = Field(0.0, ge=0, lt=1)  # kappa, Eq. 21; effective scale omega' = omega / (1 - kappa)
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # CFG only where tau_t is in it ("CFG triggered if t is in")
    jvp_method: Literal["dual", "torch-func"] = "dual"  # dual: one pass with tangent rules; torch-func: reference

    @field_validator("guidance_interval")
    @classmethod
    def _ordered(cls, v):
        if not 0.0 <= v[0] <= v[1] <= 1.0:
            raise ValueError(f"{list(v)}: give [lo, hi] with 0 <= lo <= hi <= 1 (MeanFlow time, 1 = noise)")
        return v


class MeanFlowSampling(ConsistencySampling):
    """steps: NFE = steps (Tab. 2: 1 and 2 NFE), from tau = 1 in equal steps of tau; guidance: CFG at sampling
    (2 NFE per step; 1: none, the paper's, whose CFG is trained in: guidance_scale, guidance_mix)."""


class MeanFlow(Method):
    name = "meanflow"
    label = "MeanFlow"
    Settings = MeanFlowSettings
    Sampling = MeanFlowSampling
    watched = {"dudt_norm": "tangent"}  # du/dt: the JVP term, where a two-time network blows up first

    def takes_interval(self) -> bool:
        return True

    def guided(self) -> bool:
        return self.settings.guidance_scale != 1.0 or self.settings.guidance_mix != 0.0

    def trained_guidance(self) -> float:
        """omega' = omega / (1 - kappa) (App. B.1): the CFG scale the network samples at, with 1 NFE."""
        return self.settings.guidance_scale / (1 - self.settings.guidance_mix)

    def draw(self, shape, generator, device):
        return draw_interval(shape, self.settings, generator, device)

    def target_velocity(self, net, z, tau_t, labels, v):
        """v_t, or with CFG v~_t (Eq. 21) where tau_t is in the guidance interval (omega = 1, kappa = 0 outside)."""
        s = self.settings
        if not self.guided():
            return v
        if labels is None:
            raise ValueError("meanflow: guidance_scale / guidance_mix guide with class labels, but the batch has "
                             "none; set data.class_conditional: true, or guidance_scale: 1 and guidance_mix: 0")
        lo, hi = s.guidance_interval
        on = ((tau_t >= lo) & (tau_t <= hi)).to(v.dtype)
        omega, kappa = 1 + on * (s.guidance_scale - 1), on * s.guidance_mix
        with torch.no_grad(), evaluating(net):
            u_uncond = average_velocity(net, None, z, tau_t, tau_t, self.sigma_data)  # u(z_t, t, t)
            u_cond = average_velocity(net, labels, z, tau_t, tau_t, self.sigma_data) if s.guidance_mix else 0.0
        return guided_velocity(v, u_cond, u_uncond, omega, kappa)

    def loss(self, nets, x0, labels, draws, step):
        """Alg. 1 with Eq. 21-22. Labels are dropped by the network (the stage's label_dropout); for a dropped one
        the target keeps v~ where the official code uses v_t: the same in expectation given z_t, since
        E[v~ | z_t] = v(z_t) when the net sees no label (footnote 3), only noisier."""
        s, sd, net = self.settings, self.sigma_data, nets.net
        tau_t, tau_r, eps = (a.to(x0) for a in (draws.tau_t, draws.tau_r, draws.eps))
        T = expand(tau_t, x0)
        z = (1 - T) * x0 + T * eps  # z_t, Alg. 1
        v = self.target_velocity(net, z, tau_t, labels, eps - x0)  # v_t = eps - x (Eq. 11), or v~_t (Eq. 21)
        rng = rng_state(x0.device)  # the JVP pass and the gradient pass see the same dropout masks
        _, du_dt = JVP_METHODS[s.jvp_method](net, labels, z, tau_r, tau_t, v, sd)
        u_tgt = meanflow_target(v, tau_r, tau_t, du_dt)
        set_rng_state(x0.device, rng)
        u = average_velocity(net, labels, z, tau_r, tau_t, sd)
        loss, se, w = adaptive_loss(u, u_tgt, s.adaptive_power, s.adaptive_constant)
        dudt_norm = torch.linalg.vector_norm(du_dt.flatten(1), dim=1).mean()
        return loss, {"loss": loss.detach(), "mse": se.detach().mean() / x0[0].numel(), "w_mean": w.mean(),
                      "dudt_norm": dudt_norm}

    def cost_per_step(self) -> float:
        # forward + backward 3 and the dual JVP pass 2, as sCT; CFG adds u(z, t, t) without (and with) the label
        return 5.0 + ((1.0 + (self.settings.guidance_mix != 0)) if self.guided() else 0.0)

    # ---- sampling ------------------------------------------------------------------------------------------------

    def sample_settings(self, sampling: MeanFlowSampling) -> list[Setting]:
        return [Setting("meanflow", n, n, guidance=self.trained_guidance(), cfg=g)
                for n in sampling.steps for g in sampling.guidance]

    @torch.no_grad()
    def sample(self, net, z, labels, setting: Setting, noises: list):
        """z_r = z_t - (t - r) u(z_t, r, t) (Eq. 12) from z_1 = eps = z / sd down to tau = 0 in `steps` equal steps
        (2 steps go through tau = 0.5); sampling CFG (cfg > 1) combines u with and without the label."""
        def u(zz, r, t):
            r, t = (torch.full((zz.shape[0],), tau, dtype=zz.dtype, device=zz.device) for tau in (r, t))
            cond = average_velocity(net, labels, zz, r, t, self.sigma_data)
            if setting.cfg == 1.0 or labels is None:
                return cond
            uncond = average_velocity(net, None, zz, r, t, self.sigma_data)
            return uncond + setting.cfg * (cond - uncond)

        taus = torch.linspace(1.0, 0.0, setting.steps + 1, dtype=torch.float64).tolist()
        x = z / self.sigma_data
        for t, r in zip(taus[:-1], taus[1:]):
            x = x - (t - r) * u(x, r, t)
        return x

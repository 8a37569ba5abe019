"""Training objectives: the TrigFlow diffusion loss (teacher) and sCT / sCD as Algorithm 1 of the sCM paper.

Each returns (loss, diagnostics); diagnostics are detached per-batch means for logging.
"""
from dataclasses import dataclass
from typing import Callable

import torch

from . import trigflow
from .jvp import network_tangent
from .sampling import guided
from .trigflow import expand


@dataclass
class TangentSettings:
    # "norm": g / (||g|| + c), sCM Alg. 1 and Sec. 4.2's text; "rms": g / (||g|| / sqrt(D) + c), the norm over the
    # root mean square (c weighs sqrt(D) times more: 55x on CIFAR-10); "clip": clamp to [-1, 1]; "none"
    normalization: str = "norm"
    norm_constant: float = 0.1  # c, Alg. 1
    warmup_steps: int = 10_000  # H, Alg. 1 / Sec. 4.3
    jvp_method: str = "dual"  # "dual": one pass through the network's ops; "torch-func": the reference


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def weighted_mse(F_out: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """e^{w(t)} / D ||F - target||^2 - w(t), averaged over the batch (adaptive weighting, Alg. 1)."""
    D = F_out[0].numel()
    se = (F_out - target).flatten(1).pow(2).sum(1)
    return (torch.exp(w) / D * se - w).mean()


@dataclass
class Noise:
    """The random draws of one batch: time t, noise z ~ N(0, sd^2 I), and per-sample CFG scales s (or one scale).
    Drawn for a whole batch and sliced, a batch split over ranks or accumulation passes sees the same draws."""
    t: torch.Tensor
    z: torch.Tensor
    s: torch.Tensor | float = 1.0

    def __getitem__(self, part: slice) -> "Noise":
        return Noise(self.t[part], self.z[part], self.s[part] if torch.is_tensor(self.s) else self.s)


def draw_noise(shape, p_mean, p_std, sigma_data=trigflow.SIGMA_DATA, generator=None, guidance=None,
               device=None, dtype=torch.float32, sigma_max: float | None = None) -> Noise:
    """For a batch of `shape`: t ~ the proposal (log-normal in tan t, truncated at sigma_max if given),
    z ~ N(0, sd^2 I), then s where guidance is a range (in that order)."""
    t = trigflow.sample_time(shape[0], p_mean, p_std, sigma_data, generator, device, dtype, sigma_max)
    z = torch.randn(shape, generator=generator, device=device, dtype=dtype) * sigma_data
    s = _guidance_scales(guidance, shape[0], generator, t) if guidance is not None else 1.0
    return Noise(t, z, s)


def diffusion_loss(net, weight, x0, class_labels, p_mean, p_std, sigma_data=trigflow.SIGMA_DATA,
                   generator=None, noise: Noise | None = None):
    """TrigFlow diffusion: F(x_t / sd, t) regresses (dx_t/dt) / sd with the adaptive weight w(t)."""
    noise = noise or draw_noise(x0.shape, p_mean, p_std, sigma_data, generator, None, x0.device, x0.dtype)
    t, z = noise.t, noise.z
    x_t = trigflow.interpolate(x0, z, t)
    target = trigflow.velocity_target(x0, z, t) / sigma_data
    F_out = net(x_t / sigma_data, t, class_labels)
    w = weight(t)
    loss = weighted_mse(F_out, target, w)
    mse = (F_out - target).pow(2).mean()
    return loss, {"loss": loss.detach(), "mse": mse.detach(), "w_mean": w.detach().mean()}


def rng_state(device):
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def set_rng_state(device, state):
    (torch.cuda.set_rng_state(state, device) if device.type == "cuda" else torch.set_rng_state(state))


def normalize_tangent(g: torch.Tensor, g_norm: torch.Tensor, tangent: TangentSettings) -> torch.Tensor:
    """Tangent normalization (sCM Sec. 4.2): g / (||g|| + c); or over the RMS, g / (||g|| / sqrt(D) + c); or clipped."""
    c = tangent.norm_constant
    if tangent.normalization == "norm":
        return g / expand(g_norm + c, g)
    if tangent.normalization == "rms":
        return g / expand(g_norm / g[0].numel() ** 0.5 + c, g)
    if tangent.normalization == "clip":
        return g.clamp(-1.0, 1.0)
    if tangent.normalization == "none":
        return g
    raise ValueError(f"unknown tangent normalization {tangent.normalization!r}; use norm, rms, clip or none")


def _guidance_scales(guidance, batch: int, generator, like: torch.Tensor):
    """One CFG scale, or s ~ U[lo, hi] per sample for a student that takes s as an input (sCD, ImageNet 512)."""
    if isinstance(guidance, (tuple, list)):
        lo, hi = guidance
        u = torch.rand(batch, generator=generator, device=like.device, dtype=like.dtype)
        return lo + (hi - lo) * u
    return guidance


def consistency_loss(net, weight, x0, class_labels, step: int, p_mean: float, p_std: float,
                     tangent: TangentSettings = TangentSettings(), teacher: Callable | None = None,
                     guidance: float | tuple[float, float] = 1.0, sigma_data: float = trigflow.SIGMA_DATA,
                     generator=None, noise: Noise | None = None, segment_start: torch.Tensor | None = None):
    """sCT (teacher=None: dx_t/dt = cos t z - sin t x0) or sCD (dx_t/dt from the teacher), Algorithm 1.

    sCD's teacher runs with CFG at `guidance`; a (lo, hi) range draws s per sample, and a student built with a
    guidance input (`net.takes_guidance`) is told s. `noise`: this batch's draws (default: drawn here).
    `segment_start` (multistep): f(x_t, t) = cos(t - s) x_t - sin(t - s) sd F maps to the start s of t's segment,
    and every cos t, sin t of Algorithm 1 becomes cos(t - s), sin(t - s) (s = 0: Algorithm 1 itself)."""
    sd = sigma_data
    noise = noise or draw_noise(x0.shape, p_mean, p_std, sd, generator, guidance, x0.device, x0.dtype)
    t, z, s = noise.t, noise.z, noise.s
    x_t = trigflow.interpolate(x0, z, t)
    student_kwargs = {"guidance": s} if getattr(net, "takes_guidance", False) else {}
    if teacher is None:
        dxt_dt = trigflow.velocity_target(x0, z, t)
    else:
        with torch.no_grad():
            dxt_dt = sd * guided(teacher, class_labels, s)(x_t / sd, t)  # sCD: sd F_pretrain, with CFG

    # The JVP pass and the gradient pass must see the same dropout masks: replay the RNG.
    rng = rng_state(x0.device)
    angle = t if segment_start is None else t - segment_start
    F_minus, sd_cs_dF_dt = network_tangent(lambda x, tt: net(x, tt, class_labels, **student_kwargs), x_t, t,
                                           dxt_dt, sd, tangent.jvp_method, angle)
    r = min(1.0, step / tangent.warmup_steps) if tangent.warmup_steps > 0 else 1.0  # tangent warmup
    T = expand(angle, x_t)
    g = -torch.cos(T) ** 2 * (sd * F_minus - dxt_dt) - r * (torch.cos(T) * torch.sin(T) * x_t + sd_cs_dF_dt)  # g
    g_norm = _per_sample_norm(g)
    g = normalize_tangent(g, g_norm, tangent)

    set_rng_state(x0.device, rng)
    F_out = net(x_t / sd, t, class_labels, **student_kwargs)
    w = weight(t)
    loss = weighted_mse(F_out, F_minus + g, w)
    return loss, {"loss": loss.detach(), "tangent_norm": g_norm.mean(), "w_mean": w.detach().mean(),
                  "warmup_r": torch.tensor(r)}

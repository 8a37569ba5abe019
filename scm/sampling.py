"""Samplers: consistency sampling (1, 2, N steps) and the teacher's PF-ODE solvers in TrigFlow time.

`F` is a callable (x_t / sd, t) -> F; `guided` wraps a class-conditional network with classifier-free guidance.
All samplers start from x_{t_max} = z, z ~ N(0, sd^2 I), and return (x0, nfe).
"""
import math

import torch

from . import trigflow
from .trigflow import consistency_function

INTERMEDIATE_T = 1.1  # 2-step sampling, "t = 1.1 for every experiment" (Sec. 5)


def guided(net, class_labels=None, guidance: float | torch.Tensor = 1.0):
    """F with classifier-free guidance: F_u + s (F_c - F_u); s = 1 (or no labels) is the plain conditional F.
    `guidance` is one scale or one per sample (sCD on ImageNet 512 draws s ~ U[1, 2] per sample)."""
    if class_labels is None or (not torch.is_tensor(guidance) and guidance == 1.0):
        return lambda x, t: net(x, t, class_labels)

    def F(x, t):
        uncond = net(x, t, None)
        s = trigflow.expand(guidance, x) if torch.is_tensor(guidance) else guidance
        return uncond + s * (net(x, t, class_labels) - uncond)
    return F


def consistency_times(steps: int, t_start: float | None = None) -> list[float]:
    """[t_max, 1.1, ...]: 2 steps use the paper's t = 1.1; more steps split [0, 1.1] evenly below it."""
    t_start = trigflow.t_max() if t_start is None else t_start
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [t_start] + torch.linspace(INTERMEDIATE_T, 0.0, steps, dtype=torch.float64)[:-1].tolist()


def _full(t: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full((like.shape[0],), t, dtype=like.dtype, device=like.device)


@torch.no_grad()
def consistency_sample(F, z: torch.Tensor, steps: int = 1, times: list[float] | None = None,
                       sigma_data: float = trigflow.SIGMA_DATA, generator=None, noises=None):
    """x0 = f(z, t_max), then x = cos(t) x0 + sin(t) z' and x0 = f(x, t) at each later time.

    z' ~ N(0, sd^2 I) is drawn from `generator`, or taken from `noises` (one standard-normal tensor per later
    step), which lets a caller fix every sample's noise by its own seed."""
    times = consistency_times(steps) if times is None else times
    x = z
    for i, t in enumerate(times):
        if i > 0:
            fresh = (noises[i - 1].to(z) if noises is not None else
                     torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)) * sigma_data
            x = math.cos(t) * x0 + math.sin(t) * fresh
        tt = _full(t, x)
        x0 = consistency_function(F(x / sigma_data, tt), x, tt, sigma_data)
    return x0, len(times)


def edm_time_grid(steps: int, sigma_min: float = 0.002, sigma_max: float = trigflow.SIGMA_MAX, rho: float = 7.0,
                  sigma_data: float = trigflow.SIGMA_DATA) -> list[float]:
    """EDM's rho-spaced sigmas mapped to t = arctan(sigma / sd), followed by t = 0: `steps` intervals."""
    i = torch.arange(steps, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + i / max(steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.atan(sigmas / sigma_data).tolist() + [0.0]


@torch.no_grad()
def euler_sample(F, z: torch.Tensor, steps: int = 18, sigma_data: float = trigflow.SIGMA_DATA, times=None):
    """Euler on dx/dt = sd F(x / sd, t) from t_max to 0; NFE = steps."""
    times = edm_time_grid(steps, sigma_data=sigma_data) if times is None else times
    x = z
    for t, s in zip(times[:-1], times[1:]):
        x = x + (s - t) * sigma_data * F(x / sigma_data, _full(t, x))
    return x, len(times) - 1


def _rotate(x, x0_hat, t, s):
    """DDIM step t -> s given a data prediction: x_s = cos(s) x0 + sin(s) z, z = (x_t - cos t x0) / sin t."""
    z_hat = (x - math.cos(t) * x0_hat) / math.sin(t)
    return math.cos(s) * x0_hat + math.sin(s) * z_hat


@torch.no_grad()
def dpm_solver_2s_sample(F, z: torch.Tensor, steps: int = 18, sigma_data: float = trigflow.SIGMA_DATA, times=None):
    """DPM-Solver-2S (data prediction, midpoint in lambda = log cot t); the last step to t = 0 is first order.

    NFE = 2 steps - 1: 35 for 18 steps, 63 for 32 (the paper's teacher budgets).
    """
    times = edm_time_grid(steps, sigma_data=sigma_data) if times is None else times
    x, nfe = z, 0

    def data_prediction(x, t):
        tt = _full(t, x)
        return consistency_function(F(x / sigma_data, tt), x, tt, sigma_data)

    for t, s in zip(times[:-1], times[1:]):
        x0_t = data_prediction(x, t)
        nfe += 1
        if s == 0.0:
            x = x0_t
            continue
        lam_t, lam_s = -math.log(math.tan(t)), -math.log(math.tan(s))
        t_mid = math.atan(math.exp(-(lam_t + lam_s) / 2))
        u = _rotate(x, x0_t, t, t_mid)
        x = _rotate(x, data_prediction(u, t_mid), t, s)
        nfe += 1
    return x, nfe


TEACHER_SAMPLERS = {"dpm-solver-2s": dpm_solver_2s_sample, "euler": euler_sample}


def teacher_sample(F, z, sampler: str = "dpm-solver-2s", steps: int = 18, sigma_data: float = trigflow.SIGMA_DATA):
    if sampler not in TEACHER_SAMPLERS:
        raise ValueError(f"unknown teacher sampler {sampler!r}; choose one of {sorted(TEACHER_SAMPLERS)}")
    return TEACHER_SAMPLERS[sampler](F, z, steps, sigma_data)


__all__ = ["guided", "consistency_sample", "consistency_times", "euler_sample", "dpm_solver_2s_sample",
           "teacher_sample", "edm_time_grid"]

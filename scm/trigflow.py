"""TrigFlow: x_t = cos(t) x0 + sin(t) z, z ~ N(0, sd^2 I), t in [0, pi/2] (sCM paper, Sec. 2-3).

Every function takes `t` as a tensor of shape [B] and broadcasts it over the sample dimensions.
"""
import math

import torch

SIGMA_DATA = 0.5  # sd, Sec. 3 (ImageNet 512 stated; EDM default elsewhere)
SIGMA_MAX = 80.0  # EDM's sigma_max; t_max = arctan(80 / sd) = 1.5645


def expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample t [B] to broadcast against x [B, ...]."""
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def interpolate(x0: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = cos(t) x0 + sin(t) z (z already has std sd)."""
    t = expand(t, x0)
    return torch.cos(t) * x0 + torch.sin(t) * z


def velocity_target(x0: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dx_t/dt = cos(t) z - sin(t) x0."""
    t = expand(t, x0)
    return torch.cos(t) * z - torch.sin(t) * x0


def sample_time(batch: int, p_mean: float, p_std: float, sigma_data: float = SIGMA_DATA,
                generator: torch.Generator | None = None, device=None, dtype=None,
                sigma_max: float | None = None) -> torch.Tensor:
    """Training-time proposal: tau ~ N(P_mean, P_std^2), t = arctan(exp(tau) / sd) (Alg. 1). With `sigma_max`, tau
    is drawn from that normal truncated at ln(sigma_max), so t <= arctan(sigma_max / sd), by inverting its CDF."""
    if sigma_max is None:
        tau = torch.randn(batch, generator=generator, device=device, dtype=dtype) * p_std + p_mean
    else:
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        upper = torch.special.ndtr(torch.tensor((math.log(sigma_max) - p_mean) / p_std, dtype=torch.float64))
        tau = (torch.special.ndtri(u * upper) * p_std + p_mean).clamp_max(math.log(sigma_max)).to(dtype)
    return torch.atan(torch.exp(tau) / sigma_data)


def t_from_sigma(sigma, sigma_data: float = SIGMA_DATA):
    """EDM sigma -> TrigFlow t = arctan(sigma / sd); x_t = cos(t) x_sigma."""
    return torch.atan(torch.as_tensor(sigma) / sigma_data)


def sigma_from_t(t, sigma_data: float = SIGMA_DATA):
    """TrigFlow t -> EDM sigma = sd tan(t)."""
    return sigma_data * torch.tan(torch.as_tensor(t))


def t_max(sigma_max: float = SIGMA_MAX, sigma_data: float = SIGMA_DATA) -> float:
    """Sampling start, arctan(sigma_max / sd) = 1.5645 for the defaults."""
    return math.atan(sigma_max / sigma_data)


def velocity(F_out: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """Diffusion model v(x_t, t) = sd F(x_t / sd, t)."""
    return sigma_data * F_out


def consistency_function(F_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                         sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """f(x_t, t) = cos(t) x_t - sin(t) sd F(x_t / sd, t); f(x, 0) = x by construction."""
    t = expand(t, x_t)
    return torch.cos(t) * x_t - torch.sin(t) * sigma_data * F_out


"""Closed forms for Gaussian data x0 ~ N(mu, s^2 I) under TrigFlow: the reference every objective is checked against.

x_t ~ N(cos t mu, var_t I), var_t = cos^2 t s^2 + sin^2 t sd^2. The PF-ODE is affine per dimension, so it maps the
standardized coordinate unchanged: f(x_t, t) = mu + s (x_t - cos t mu) / sqrt(var_t).
"""
import torch

from .trigflow import SIGMA_DATA, expand


class GaussianData:
    def __init__(self, mu: torch.Tensor, s: float, sigma_data: float = SIGMA_DATA):
        self.mu, self.s, self.sd = mu, s, sigma_data

    def var(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        t = expand(t, like)
        return torch.cos(t) ** 2 * self.s ** 2 + torch.sin(t) ** 2 * self.sd ** 2

    def sample(self, n: int, generator=None) -> torch.Tensor:
        eps = torch.randn((n, *self.mu.shape), generator=generator, dtype=self.mu.dtype)
        return self.mu + self.s * eps

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """PF-ODE velocity E[dx_t/dt | x_t] = cos t E[z|x_t] - sin t E[x0|x_t]."""
        T = expand(t, x_t)
        resid = (x_t - torch.cos(T) * self.mu) / self.var(t, x_t)
        x0_mean = self.mu + torch.cos(T) * self.s ** 2 * resid
        z_mean = torch.sin(T) * self.sd ** 2 * resid
        return torch.cos(T) * z_mean - torch.sin(T) * x0_mean

    def consistency(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact consistency function: the PF-ODE's endpoint at t = 0."""
        T = expand(t, x_t)
        return self.mu + self.s * (x_t - torch.cos(T) * self.mu) / torch.sqrt(self.var(t, x_t))

    def ode_point(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Where the PF-ODE path that ends at x0 passes at time t (the inverse of `consistency`)."""
        T = expand(t, x0)
        return torch.cos(T) * self.mu + torch.sqrt(self.var(t, x0)) * (x0 - self.mu) / self.s

    def F_diffusion(self, x: torch.Tensor, t: torch.Tensor, class_labels=None) -> torch.Tensor:
        """F of the exact diffusion model, with the network's signature (x = x_t / sd)."""
        return self.velocity(x * self.sd, t) / self.sd

    def F_consistency(self, x: torch.Tensor, t: torch.Tensor, class_labels=None) -> torch.Tensor:
        """F of the exact consistency model: solves f = cos t x_t - sin t sd F for F (t > 0)."""
        x_t = x * self.sd
        T = expand(t, x_t)
        return (torch.cos(T) * x_t - self.consistency(x_t, t)) / (torch.sin(T) * self.sd)


class LinearPathGaussian:
    """Data x ~ N(mu, diag(s^2)) under MeanFlow's linear path z_tau = (1 - tau) x + tau eps, eps ~ N(0, I), tau = 1
    noise. z_tau ~ N((1 - tau) mu, diag(std_tau^2)), std_tau^2 = (1 - tau)^2 s^2 + tau^2: the marginal velocity is
    affine in z, so the ODE keeps each standardized coordinate (z - (1 - tau) mu) / std_tau, and the flow map and
    the average velocity u(z, r, t) = (z_t - z_r) / (t - r) (MeanFlow Eq. 3) are closed forms."""

    def __init__(self, mu: torch.Tensor, s: torch.Tensor):
        self.mu, self.s = mu, s

    def std(self, tau: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        tau = expand(tau, like)
        return torch.sqrt((1 - tau) ** 2 * self.s ** 2 + tau ** 2)

    def flow(self, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """z_r from z_t along the ODE: (1 - r) mu + std_r / std_t (z_t - (1 - t) mu)."""
        T, R = expand(t, z), expand(r, z)
        return (1 - R) * self.mu + self.std(r, z) / self.std(t, z) * (z - (1 - T) * self.mu)

    def velocity(self, z: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """The marginal velocity v(z, tau) = E[eps - x | z_tau = z] = -mu + std'/std (z - (1 - tau) mu)."""
        T, std = expand(tau, z), self.std(tau, z)
        d_std = (T - (1 - T) * self.s ** 2) / std
        return -self.mu + d_std / std * (z - (1 - T) * self.mu)

    def average_velocity(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """u*(z, r, t) = (z_t - z_r) / (t - r) with z_t = z (MeanFlow Eq. 3); v(z, t) where r = t."""
        h = t - r
        safe = torch.where(h > 0, h, torch.ones_like(h))  # the r = t branch divides nothing
        u = (z - self.flow(z, t, r)) / expand(safe, z)
        return torch.where(expand(h, z) > 0, u, self.velocity(z, t))

    def sample(self, n: int, generator=None) -> torch.Tensor:
        eps = torch.randn((n, *self.mu.shape), generator=generator, dtype=self.mu.dtype)
        return self.mu + self.s * eps

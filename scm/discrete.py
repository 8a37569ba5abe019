"""Discrete-time consistency training in TrigFlow: the baseline the sCM paper's continuous-time objective replaces.

Time lives on N steps of [0, t_max]: t_i = i t_max / N. A proposal draw t is moved up to its grid point t_i, and
the student at (x_{t_i}, t_i) is pulled towards a stop-gradient copy of itself one step earlier, at
x_{t_{i-1}} = cos t_{i-1} x0 + sin t_{i-1} z (the same x0 and z: consistency training; f(x, 0) = x). In F's space,

    F_target = (cos t x_t - f-(x_{t'}, t')) / (sd sin t),   L = e^{w(t)} / D ||F(x_t / sd, t) - F_target||^2 - w(t)

since f = cos t x_t - sin t sd F. As N grows, F - F_target = -(f(x_t, t) - f-(x_{t'}, t')) / (sd sin t) tends to
-(t_max / N) df-/dt / (sd sin t) and sCT's F - F- - g to -cos t df-/dt (g = cos t df-/dt without normalization or
warmup): the gradients agree up to the factor t_max / (N sd sin t cos t), which the tests check.
"""
import torch

from . import trigflow
from .objectives import Noise, rng_state, set_rng_state, weighted_mse, draw_noise
from .trigflow import expand


def snap_to_grid(t: torch.Tensor, steps: int, t_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_i, t_{i-1}): each t moved up to the next of the N grid points (at least the first)."""
    dt = t_max / steps
    i = torch.clamp(torch.ceil(t / dt - 1e-9), 1, steps)
    return i * dt, (i - 1) * dt


def ect_previous_time(t: torch.Tensor, stage: int, q: float, k: float, b: float,
                      sigma_data: float = trigflow.SIGMA_DATA) -> torch.Tensor:
    """ECT's shrinking step (Geng et al. 2024, the mapping of their code `t_to_r_sigmoid`), in EDM's sigma = sd tan t:
    r = sigma (1 - n(sigma) / q^(stage + 1)), n(sigma) = 1 + k sigmoid(-b sigma), r >= 0; back to TrigFlow time."""
    sigma = sigma_data * torch.tan(t)
    n = 1 + k * torch.sigmoid(-b * sigma)
    r = (sigma * (1 - n / q ** (stage + 1))).clamp(min=0)
    return torch.atan(r / sigma_data)


def discrete_consistency_loss(net, weight, x0, class_labels, steps: int | None, p_mean, p_std,
                              sigma_data=trigflow.SIGMA_DATA, generator=None, noise: Noise | None = None,
                              t_max: float | None = None, previous_time=None):
    """Discrete-time consistency training with `steps` steps (see the module docstring); (loss, diagnostics).
    `previous_time`: t -> t' instead of the grid (ECT's schedule); t itself is then not moved."""
    sd = sigma_data
    t_max = trigflow.t_max(sigma_data=sd) if t_max is None else t_max
    noise = noise or draw_noise(x0.shape, p_mean, p_std, sd, generator, None, x0.device, x0.dtype)
    if previous_time is None:
        t, t_prev = snap_to_grid(noise.t, steps, t_max)
    else:
        t, t_prev = noise.t, previous_time(noise.t)
    T, T_prev = expand(t, x0), expand(t_prev, x0)
    x_t = torch.cos(T) * x0 + torch.sin(T) * noise.z
    x_prev = torch.cos(T_prev) * x0 + torch.sin(T_prev) * noise.z
    # the same dropout masks for both passes, as sCT's JVP and gradient passes
    rng = rng_state(x0.device)
    with torch.no_grad():
        f_prev = torch.cos(T_prev) * x_prev - torch.sin(T_prev) * sd * net(x_prev / sd, t_prev, class_labels)
    set_rng_state(x0.device, rng)
    target = (torch.cos(T) * x_t - f_prev) / (sd * torch.sin(T))
    F_out = net(x_t / sd, t, class_labels)
    w = weight(t)
    loss = weighted_mse(F_out, target, w)
    gap = (F_out.detach() - target).flatten(1).norm(dim=1).mean()
    return loss, {"loss": loss.detach(), "target_gap": gap, "w_mean": w.detach().mean(),
                  "step_size": torch.tensor(t_max / steps) if previous_time is None else (t - t_prev).mean()}

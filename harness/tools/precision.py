"""`scm-bench bench precision`: the tangent sd cos(t) sin(t) dF-/dt in bf16 / fp16 autocast against float64.

Two ways to get it (sCM Sec. 4.2), both JVPs of F at (x_t / sd, t):
- rearranged: along (cos t sin t dx_t/dt, cos t sin t sd), which is the scaled tangent itself; every tangent input
  is bounded, so nothing grows large in half precision;
- naive: along (dx_t/dt / sd, 1), which is dF/dt, multiplied by sd cos t sin t afterwards.
With c_noise = t both are tame; with EDM's c_noise = ln(sd tan t) / 4, dc_noise/dt = 1 / (4 sin t cos t) blows up
at both ends of [0, pi/2], and high-frequency time features (Fourier scale 16) multiply it further.
"""
import math

import torch

from scm.jvp import jvp_dual
from scm.nets import build_network
from scm.trigflow import SIGMA_DATA, t_max

T_GRID = (0.0, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0, 1.4, 1.5, 1.55)  # plus t_max = arctan(80 / sd)
NETWORKS = {  # a tiny EDM2-style U-Net (8x8, 3 channels) under each time conditioning
    "c_noise=t, positional": dict(c_noise="t"),
    "c_noise=log-sigma, positional": dict(c_noise="log-sigma"),
    "c_noise=log-sigma, Fourier 16": dict(c_noise="log-sigma", time_embedding="fourier", fourier_scale=16.0),
}


def tiny_unet(seed: int = 0, **settings):
    torch.manual_seed(seed)
    net = build_network("unet-edm2", model_channels=16, channel_mult=(1, 2), resolution=8, channels=3,
                        attn_resolutions=(4,), num_classes=10, channels_per_head=8, num_blocks=1, **settings)
    with torch.no_grad():
        net.out_gain.fill_(1.0)  # F = 0 at init otherwise
    return net.eval()


def pair_relative_error(low, ref) -> float:
    """||low - ref|| / ||ref|| of (F, tangent) pairs; nan when the float64 F itself is not finite (log-sigma at
    t = 0); inf when the half-precision F or tangent is not; 0 when both tangents are exactly 0 (t = 0)."""
    (F_low, J_low), (F_ref, J_ref) = low, ref
    if not (torch.isfinite(F_ref).all() and torch.isfinite(J_ref).all()):
        return math.nan
    if not (torch.isfinite(F_low).all() and torch.isfinite(J_low).all()):
        return math.inf
    scale = J_ref.norm().item()
    if scale == 0:
        return 0.0 if J_low.abs().max().item() == 0 else math.inf
    return (J_low - J_ref).norm().item() / scale


def scaled_tangent(net, x0, z, labels, t: float, form: str, dtype, sigma_data: float = SIGMA_DATA):
    """(F, sd cos t sin t dF/dt) along the PF-ODE at x_t, by the rearranged or the naive tangent, in `dtype`
    autocast (float64 and float32: plain arithmetic in that dtype, a reference)."""
    tt = torch.full((x0.shape[0],), t, dtype=torch.float64, device=x0.device)
    T = tt.view(-1, *[1] * (x0.dim() - 1))
    x_t = torch.cos(T) * x0 + torch.sin(T) * z
    dxt_dt = torch.cos(T) * z - torch.sin(T) * x0  # sCT's dx_t/dt; any bounded field shows the same effect
    cs = torch.cos(tt) * torch.sin(tt)
    if form == "rearranged":
        x_tan, t_tan = cs.view_as(T) * dxt_dt, cs * sigma_data  # JVP = sd cos t sin t dF/dt directly
    else:
        x_tan, t_tan = dxt_dt / sigma_data, torch.ones_like(tt)  # JVP = dF/dt, scaled below
    work = torch.float64 if dtype == torch.float64 else torch.float32
    model = net.to(work)
    F = lambda a, b: model(a, b, labels)  # noqa: E731
    args = [v.to(work) for v in (x_t / sigma_data, tt, x_tan, t_tan)]
    if dtype in (torch.float64, torch.float32):
        F_out, J = jvp_dual(F, *args)
    else:
        with torch.autocast("cpu" if x0.device.type == "cpu" else "cuda", dtype=dtype):
            F_out, J = jvp_dual(F, *args)
    J = J.to(torch.float64)
    return F_out, (J if form == "rearranged" else (sigma_data * cs).view_as(T) * J)


def precision_rows(dtypes=("bfloat16", "float16"), batch: int = 4, seed: int = 0) -> list[dict]:
    """One row per (network, dtype, form, t): relative error of the half-precision tangent vs float64."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, 3, 8, 8, generator=g, dtype=torch.float64) * SIGMA_DATA
    z = torch.randn(batch, 3, 8, 8, generator=g, dtype=torch.float64) * SIGMA_DATA
    labels = torch.randint(10, (batch,), generator=g)
    rows = []
    for name, settings in NETWORKS.items():
        net = tiny_unet(seed, **settings)
        for t in (*T_GRID, t_max()):
            for form in ("rearranged", "naive"):
                ref = scaled_tangent(net, x0, z, labels, t, form, torch.float64)
                for dtype in dtypes:
                    low = scaled_tangent(net, x0, z, labels, t, form, getattr(torch, dtype))
                    rows.append({"network": name, "dtype": dtype, "form": form, "t": t,
                                 "relative_error": pair_relative_error(low, ref)})
    return rows

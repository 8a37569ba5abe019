"""The tangent of F- along the PF-ODE: JVP of F-(x_t / sd, t) with the rearranged tangent (sCM, Sec. 4.2).

With tangents (cos t sin t dx_t/dt, cos t sin t sd) at (x_t / sd, t) the JVP equals sd cos(t) sin(t) dF-/dt,
because d(x_t / sd)/dt = (dx_t/dt) / sd. Scaling both tangents by cos t sin t keeps them finite near t = pi/2.
"""
from typing import Callable

import torch

from .nets.ops import Dual
from .trigflow import expand

NetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t / sd, t) -> F


def rearranged_tangents(dxt_dt: torch.Tensor, t: torch.Tensor, sigma_data: float):
    """(cos t sin t dx_t/dt, cos t sin t sd): the tangents for the inputs (x_t / sd, t)."""
    cs = torch.cos(t) * torch.sin(t)
    return expand(cs, dxt_dt) * dxt_dt, cs * sigma_data


def jvp_reference(F: NetFn, x: torch.Tensor, t: torch.Tensor, x_tangent: torch.Tensor,
                  t_tangent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F(x, t), dF[x_tangent, t_tangent]) through torch.func.jvp; no graph is kept for either output."""
    with torch.no_grad():
        return torch.func.jvp(F, (x, t), (x_tangent, t_tangent))


def jvp_dual(F: NetFn, x: torch.Tensor, t: torch.Tensor, x_tangent: torch.Tensor,
             t_tangent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F(x, t), dF[x_tangent, t_tangent]) in one pass of `ops.Dual` values through a network written in `ops`:
    each conv / linear runs once on [primal; tangent], each nonlinearity applies its tangent rule."""
    with torch.no_grad():
        out = F(Dual.of(x, x_tangent), Dual.of(t, t_tangent))
    if not isinstance(out, Dual):
        raise TypeError("the network returned a plain tensor for Dual inputs: it is not written in scm.nets.ops; "
                        "use jvp_method: torch-func")
    return out.primal, out.tangent


JVP_METHODS = {"torch-func": jvp_reference, "dual": jvp_dual}


def network_tangent(F: NetFn, x_t: torch.Tensor, t: torch.Tensor, dxt_dt: torch.Tensor,
                    sigma_data: float, method: str = "torch-func",
                    angle: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (F-(x_t / sd, t), sd cos(a) sin(a) dF-/dt) under no grad, by the chosen JVP method; the angle a is
    t, or t - s for a consistency function that maps to a segment's start s (multistep)."""
    if method not in JVP_METHODS:
        raise ValueError(f"unknown JVP method {method!r}; choose one of {sorted(JVP_METHODS)}")
    x_tangent, t_tangent = rearranged_tangents(dxt_dt, t if angle is None else angle, sigma_data)
    return JVP_METHODS[method](F, x_t / sigma_data, t, x_tangent, t_tangent)

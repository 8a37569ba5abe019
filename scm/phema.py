"""EDM2's post-hoc EMA (Karras et al. 2024, Sec. 3 and App. C): the EMA of any length, reconstructed after training
from snapshots of a few power-function EMAs.

A power-function EMA with exponent gamma (`scm.ema.PowerEMA`), read at step t, averages the weights theta(tau) of
the steps tau in [0, t] with the profile

    p_{gamma,t}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1)

(its beta_k = (1 - 1/k)^(gamma + 1) gives step k the weight (k^(gamma+1) - (k-1)^(gamma+1)) / t^(gamma+1): exactly
p integrated over (k-1, k]). A sum of snapshots sum_i x_i theta_i averages with sum_i x_i p_i, so the target
profile p* = p_{gamma*,t*} is matched in L2 by the least-squares x of A x = b, A_ij = <p_i, p_j>, b_i = <p_i, p*>,
and the reconstruction is sum_i x_i theta_i. The inner products are closed form (`PowerProfile.dot`); time may be
in any unit (steps here), since scaling it scales A and b alike.
"""
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PowerProfile:
    """The averaging profile of a power-function EMA with exponent `gamma` read at time `t` (> 0)."""
    gamma: float
    t: float

    def dot(self, other: "PowerProfile") -> float:
        """<p_a, p_b> = int_0^min(ta, tb) (ga + 1)(gb + 1) tau^(ga + gb) / (ta^(ga+1) tb^(gb+1)) dtau, written with
        the ratio of the times (<= 1) so no power overflows: (ga+1)(gb+1) / ((ga+gb+1) t_long) (t_short/t_long)^g_long,
        g_long being the exponent of the profile with the later time."""
        short, long = sorted((self, other), key=lambda p: p.t)
        scale = (self.gamma + 1) * (other.gamma + 1) / ((self.gamma + other.gamma + 1) * long.t)
        return scale * (short.t / long.t) ** long.gamma


def _gram(snapshots: Sequence[PowerProfile], target: PowerProfile) -> tuple[np.ndarray, np.ndarray]:
    A = np.array([[a.dot(b) for b in snapshots] for a in snapshots], dtype=np.float64)
    b = np.array([a.dot(target) for a in snapshots], dtype=np.float64)
    return A, b


def post_hoc_coefficients(snapshots: Sequence[PowerProfile], target: PowerProfile) -> np.ndarray:
    """x minimising || sum_i x_i p_i - p* ||: the weight of each snapshot in the reconstruction of `target`.
    Least squares (not a plain solve): snapshots of nearby profiles make A nearly singular."""
    if not snapshots:
        raise ValueError("no snapshots to reconstruct from")
    A, b = _gram(snapshots, target)
    return np.linalg.lstsq(A, b, rcond=None)[0]


def profile_fit_error(snapshots: Sequence[PowerProfile], target: PowerProfile, coefficients) -> float:
    """|| sum_i x_i p_i - p* || / || p* ||: how far the reconstruction's averaging profile is from the target's."""
    A, b = _gram(snapshots, target)
    x = np.asarray(coefficients, dtype=np.float64)
    squared = x @ A @ x - 2 * x @ b + target.dot(target)
    return float(np.sqrt(max(squared, 0.0) / target.dot(target)))


def blend(states: Iterable[dict], coefficients) -> dict:
    """sum_i x_i state_i, entry by entry (summed in float64, returned in each entry's dtype). Give the parameters
    only: an EMA copies buffers rather than averaging them. `states` may be a generator: one is held at a time."""
    coefficients = [float(x) for x in coefficients]
    total, dtypes, count = {}, {}, 0
    for x, state in zip(coefficients, states):
        for key, value in state.items():
            total[key] = total.get(key, 0) + x * value.to(torch.float64)
            dtypes[key] = value.dtype
        count += 1
    if count != len(coefficients):
        raise ValueError(f"{count} snapshots for {len(coefficients)} coefficients; give one snapshot per coefficient")
    return {key: value.to(dtypes[key]) for key, value in total.items()}

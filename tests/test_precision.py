"""Half-precision tangents (sCM Sec. 4.2): bf16 / fp16 autocast against float64 across t in [0, t_max].

Stated tolerances (relative L2 error of sd cos t sin t dF/dt on a tiny EDM2-style U-Net): bf16 <= 3e-2 (unit roundoff
3.9e-3; observed <= 1.3e-2), fp16 <= 5e-3 (unit roundoff 4.9e-4; observed <= 3e-3).
"""
import math

import pytest

from harness.tools.precision import precision_rows

TOLERANCE = {"bfloat16": 3e-2, "float16": 5e-3}


@pytest.fixture(scope="module")
def rows(single_thread_module):
    return precision_rows()


@pytest.fixture(scope="module")
def single_thread_module():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def select(rows, network, form, dtype):
    return {r["t"]: r["relative_error"] for r in rows
            if r["network"] == network and r["form"] == form and r["dtype"] == dtype}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_rearranged_trigflow_tangent_is_finite_and_accurate_everywhere(rows, dtype):
    errors = select(rows, "c_noise=t, positional", "rearranged", dtype)
    assert len(errors) == 11 and min(errors.keys()) == 0.0 and max(errors.keys()) > 1.56  # t = 0 ... t_max
    assert all(math.isfinite(e) and e <= TOLERANCE[dtype] for e in errors.values()), errors
    assert max(errors.values()) > 1e-4  # it really ran in half precision


def test_naive_tangent_with_edm_c_noise_overflows_in_fp16_near_t_zero(rows):
    """dc_noise/dt = 1 / (4 sin t cos t) ~ 2500 at t = 1e-4, times Fourier-16 frequencies: beyond fp16's 65504.
    The rearranged tangent of the same network stays finite and within tolerance there."""
    naive = select(rows, "c_noise=log-sigma, Fourier 16", "naive", "float16")
    rearranged = select(rows, "c_noise=log-sigma, Fourier 16", "rearranged", "float16")
    assert naive[1e-4] == math.inf and naive[1e-3] == math.inf
    assert all(rearranged[t] <= TOLERANCE["float16"] for t in (1e-4, 1e-3))
    assert math.isnan(naive[0.0]) and math.isnan(rearranged[0.0])  # ln(sd tan 0): F itself is undefined at t = 0

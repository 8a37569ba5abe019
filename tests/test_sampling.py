"""Samplers (scm/sampling.py) against the Gaussian closed forms: consistency sampling, teacher ODE solvers, CFG."""
import math

import pytest
import torch

from conftest import F64, make_mlp
from scm import sampling, trigflow
from scm.gaussian import GaussianData

pytestmark = pytest.mark.usefixtures("single_thread")

SD = trigflow.SIGMA_DATA
N = 20_000
T_MAX = trigflow.t_max()


@pytest.fixture(scope="module")
def z():
    """Starting noise z ~ N(0, sd^2 I), D = 3, shared by the sampler tests."""
    return torch.randn(N, 3, generator=torch.Generator().manual_seed(100), dtype=F64) * SD


def gaussian():
    return GaussianData(torch.tensor([0.6, -0.4, 1.1], dtype=F64), 0.2)


def start_pushforward_moments(data: GaussianData, t: float):
    """Mean and std of f(z, t) for z ~ N(0, sd^2): the samplers start from N(0, sd^2), not the exact marginal at t_max
    (mean cos t mu, var var_t), so the exact flow map leaves a small known bias: mean mu - s cos t mu / sqrt(var_t)
    (0.25% of mu at t_max) and std s sd / sqrt(var_t)."""
    var_t = math.cos(t) ** 2 * data.s ** 2 + math.sin(t) ** 2 * SD ** 2
    return data.mu - data.s * math.cos(t) * data.mu / math.sqrt(var_t), data.s * SD / math.sqrt(var_t)


def assert_gaussian_moments(x, mean, std, extra_mean_tol=0.0):
    """Sample mean / covariance of x against N(mean, std^2 I), 5 standard errors each.

    SE(mean) = std / sqrt(N) (1.4e-3 here), SE(var) = std^2 sqrt(2 / N) (4e-4), SE(cov_ij) = std^2 / sqrt(N) (2.8e-4).
    """
    n = x.shape[0]
    assert (x.mean(0) - mean).abs().max() < 5 * std / math.sqrt(n) + extra_mean_tol
    cov = torch.cov(x.T)
    D = x.shape[1]
    eye = torch.eye(D, dtype=torch.bool)
    assert (cov.diagonal() - std ** 2).abs().max() < 5 * std ** 2 * math.sqrt(2 / n)
    assert cov[~eye].abs().max() < 5 * std ** 2 / math.sqrt(n)


# ---------------------------------------------------------------------------------------------------------------
# Consistency sampling
# ---------------------------------------------------------------------------------------------------------------

def test_consistency_times():
    times = sampling.consistency_times(2)
    assert len(times) == 2
    assert times[0] == T_MAX
    # The paper's intermediate t = 1.1 (float32 linspace in scm.sampling rounds it to 1.1000000238: 1e-6 allows that;
    # see test_consistency_times_exact_in_float64).
    assert times[1] == pytest.approx(1.1, abs=1e-6)
    assert sampling.consistency_times(1) == [T_MAX]
    t4 = sampling.consistency_times(4)
    assert len(t4) == 4 and t4[0] == T_MAX and all(a > b > 0 for a, b in zip(t4, t4[1:]))
    with pytest.raises(ValueError):
        sampling.consistency_times(0)


def test_consistency_times_exact_in_float64():
    assert sampling.consistency_times(2) == [T_MAX, 1.1]


def test_one_step_consistency_sampling(z):
    data = gaussian()
    x, nfe = sampling.consistency_sample(data.F_consistency, z, steps=1)
    assert nfe == 1
    # Deterministic: the 1-step sample is the exact flow map f(z, t_max) (float64, affine maps -> 1e-12).
    torch.testing.assert_close(x, data.consistency(z, torch.full((N,), T_MAX, dtype=F64)), rtol=0, atol=1e-12)
    mean, std = start_pushforward_moments(data, T_MAX)
    assert std == pytest.approx(data.s, rel=1e-4)  # the start mismatch barely changes the std
    assert_gaussian_moments(x, mean, std)
    # And against the data distribution itself: the known start bias (<= 2.8e-3) is added to the mean tolerance.
    assert_gaussian_moments(x, data.mu, data.s, extra_mean_tol=float((mean - data.mu).abs().max()))


def test_two_step_consistency_sampling(z):
    data = gaussian()
    x, nfe = sampling.consistency_sample(data.F_consistency, z, steps=2, generator=torch.Generator().manual_seed(101))
    assert nfe == 2
    # Rebuild: x0 = f(z, t_max); x = cos(1.1) x0 + sin(1.1) z', z' the generator's first draw; x0 = f(x, 1.1).
    g = torch.Generator().manual_seed(101)
    fresh = torch.randn(z.shape, generator=g, dtype=F64) * SD
    x0 = data.consistency(z, torch.full((N,), T_MAX, dtype=F64))
    x1 = math.cos(1.1) * x0 + math.sin(1.1) * fresh
    rebuilt = data.consistency(x1, torch.full((N,), 1.1, dtype=F64))
    # 1e-6 covers scm's float32-rounded t = 1.1000000238 (|d f / d t| = O(1) times 2.4e-8); a wrong t or a reused z
    # would be off by O(0.1).
    torch.testing.assert_close(x, rebuilt, rtol=0, atol=1e-6)
    # The second step re-noises to the exact-marginal at t = 1.1 up to the first step's small bias, which it shrinks
    # by s cos(1.1) / sqrt(var_1.1) ~ 0.2; 1e-3 covers it.
    assert_gaussian_moments(x, data.mu, data.s, extra_mean_tol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Teacher ODE solvers
# ---------------------------------------------------------------------------------------------------------------

def _exact_endpoint(data, z):
    return data.consistency(z, torch.full((z.shape[0],), T_MAX, dtype=F64))


def test_nfe_counts(z):
    data = gaussian()
    zz = z[:16]
    assert sampling.teacher_sample(data.F_diffusion, zz, "dpm-solver-2s", 18)[1] == 35
    assert sampling.teacher_sample(data.F_diffusion, zz, "dpm-solver-2s", 32)[1] == 63
    assert sampling.teacher_sample(data.F_diffusion, zz, "euler", 18)[1] == 18
    assert sampling.consistency_sample(data.F_consistency, zz, 1)[1] == 1
    assert sampling.consistency_sample(data.F_consistency, zz, 2)[1] == 2
    with pytest.raises(ValueError, match="unknown teacher sampler"):
        sampling.teacher_sample(data.F_diffusion, zz, "heun", 18)


def test_nfe_counts_match_calls(z):
    """The reported NFE is the number of times F was actually evaluated."""
    data = gaussian()
    calls = {"n": 0}

    def counting(x, t):
        calls["n"] += 1
        return data.F_diffusion(x, t)
    for sampler, steps in [("dpm-solver-2s", 18), ("euler", 18), ("dpm-solver-2s", 5)]:
        calls["n"] = 0
        _, nfe = sampling.teacher_sample(counting, z[:4], sampler, steps)
        assert nfe == calls["n"], (sampler, steps)


def test_edm_time_grid():
    times = sampling.edm_time_grid(18)
    assert len(times) == 19 and times[-1] == 0.0
    assert times[0] == pytest.approx(T_MAX, abs=1e-12)
    assert times[-2] == pytest.approx(math.atan(0.002 / SD), abs=1e-12)
    assert all(a > b for a, b in zip(times, times[1:]))


def test_dpm_solver_2s_matches_exact_flow(z):
    data = gaussian()
    exact = _exact_endpoint(data, z)
    x, nfe = sampling.teacher_sample(data.F_diffusion, z, "dpm-solver-2s", 64)
    assert nfe == 127
    # 64 steps of a 2nd-order solver: observed relative std error 0.26%, mean error 1e-5 of mu; 1% as required.
    assert ((x.mean(0) - exact.mean(0)) / exact.std(0)).abs().max() < 0.01
    assert (x.std(0) / exact.std(0) - 1).abs().max() < 0.01
    # Against the data distribution (statistical, plus the start bias as in the consistency test).
    mean, _ = start_pushforward_moments(data, T_MAX)
    assert (x.mean(0) - data.mu).abs().max() < 5 * data.s / math.sqrt(N) + float((mean - data.mu).abs().max())
    assert (x.std(0) / data.s - 1).abs().max() < 0.01 + 5 * math.sqrt(1 / (2 * N))
    # Convergence order: doubling the steps divides the pathwise error by ~4 (observed 3.9). Range [3.3, 4.7].
    e32 = (sampling.teacher_sample(data.F_diffusion, z, "dpm-solver-2s", 32)[0] - exact).abs().max()
    e64 = (x - exact).abs().max()
    assert 3.3 < e32 / e64 < 4.7


def test_euler_matches_exact_flow_with_more_steps(z):
    data = gaussian()
    exact = _exact_endpoint(data, z)
    x, nfe = sampling.teacher_sample(data.F_diffusion, z, "euler", 256)
    assert nfe == 256
    # First order: at 256 steps the mean is within 1% of mu (observed 0.5%) and the std within 1% (observed 0.15%).
    assert ((x.mean(0) - exact.mean(0)) / data.mu).abs().max() < 0.01
    assert (x.std(0) / exact.std(0) - 1).abs().max() < 0.01
    # ...whereas 64 Euler steps are not yet there (observed 2% mean error): Euler needs more steps than DPM-Solver-2S.
    x64, _ = sampling.teacher_sample(data.F_diffusion, z, "euler", 64)
    assert ((x64.mean(0) - exact.mean(0)) / data.mu).abs().max() > 0.01
    # Convergence order: doubling the steps halves the pathwise error (observed 1.93). Range [1.7, 2.3].
    e128 = (sampling.teacher_sample(data.F_diffusion, z, "euler", 128)[0] - exact).abs().max()
    e256 = (x - exact).abs().max()
    assert 1.7 < e128 / e256 < 2.3


# ---------------------------------------------------------------------------------------------------------------
# Classifier-free guidance
# ---------------------------------------------------------------------------------------------------------------

def test_guided_cfg_formula():
    net = make_mlp(seed=110, num_classes=10).eval()
    g = torch.Generator().manual_seed(111)
    x = torch.randn(8, 2, generator=g, dtype=F64)
    t = torch.rand(8, generator=g, dtype=F64) * 1.5
    labels = torch.arange(8)
    with torch.no_grad():
        F_c, F_u = net(x, t, labels), net(x, t, None)
        assert (F_c - F_u).abs().max() > 1e-3  # labels matter, so the checks below can fail
        assert torch.equal(sampling.guided(net, labels, 1.0)(x, t), F_c)
        assert torch.equal(sampling.guided(net, None, 2.0)(x, t), F_u)
        for s in (0.0, 1.3, 2.0, 4.0):
            # Same float64 arithmetic up to operation order: 1e-12.
            torch.testing.assert_close(sampling.guided(net, labels, s)(x, t), F_u + s * (F_c - F_u),
                                       rtol=0, atol=1e-12)
        torch.testing.assert_close(sampling.guided(net, labels, 0.0)(x, t), F_u, rtol=0, atol=1e-12)

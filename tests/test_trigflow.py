"""TrigFlow primitives (scm/trigflow.py) and the Gaussian closed forms (scm/gaussian.py)."""
import math

import pytest
import torch
from scipy import stats

from conftest import F64, central_difference
from scm import trigflow
from scm.gaussian import GaussianData
from scm.methods import method_class

pytestmark = pytest.mark.usefixtures("single_thread")

SD = trigflow.SIGMA_DATA


def test_velocity_target_is_time_derivative_of_interpolate():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, 4, 4, generator=g, dtype=F64)
    z = torch.randn(16, 3, 4, 4, generator=g, dtype=F64) * SD
    t = torch.linspace(0.0, math.pi / 2, 16, dtype=F64)
    fd = central_difference(lambda h: trigflow.interpolate(x0, z, t + h), 1e-5)
    # h = 1e-5: truncation |x'''| h^2 / 6 ~ 1e-11, rounding ~ 1e-16 / 1e-5 = 1e-11 -> 1e-8 is a safe bound.
    torch.testing.assert_close(trigflow.velocity_target(x0, z, t), fd, rtol=0, atol=1e-8)
    # Boundary values: x_0 = x0 exactly and x_{pi/2} = z up to cos(pi/2) ~ 6e-17.
    assert torch.equal(trigflow.interpolate(x0, z, torch.zeros(16, dtype=F64)), x0)
    torch.testing.assert_close(trigflow.interpolate(x0, z, torch.full((16,), math.pi / 2, dtype=F64)), z,
                               rtol=0, atol=1e-15)


def test_sample_time_is_lognormal_in_sigma():
    n, p_mean, p_std = 200_000, -1.0, 1.4
    t = trigflow.sample_time(n, p_mean, p_std, SD, generator=torch.Generator().manual_seed(1))
    assert t.shape == (n,) and bool((t > 0).all()) and bool((t < math.pi / 2).all())
    tau = torch.log(SD * torch.tan(t.double()))
    # Standard errors: mean P_std / sqrt(n) = 3.1e-3, std P_std / sqrt(2n) = 2.2e-3; 5 sigma -> 1.6e-2 / 1.1e-2.
    assert abs(tau.mean().item() - p_mean) < 5 * p_std / math.sqrt(n)
    assert abs(tau.std().item() - p_std) < 5 * p_std / math.sqrt(2 * n)
    # Median of tau is P_mean: fraction below is Binomial(n, 1/2)/n with sd 1.1e-3; 5 sigma.
    assert abs((tau < p_mean).double().mean().item() - 0.5) < 5 * 0.5 / math.sqrt(n)


def test_sigma_t_conversions_are_inverse():
    sigma = torch.logspace(-3, math.log10(80.0), 50, dtype=F64)
    t = trigflow.t_from_sigma(sigma)
    assert bool((t > 0).all()) and bool((t < math.pi / 2).all())
    # float64 atan/tan round trip: relative error a few ulp times the condition number 1/(sin t cos t) <~ 200.
    torch.testing.assert_close(trigflow.sigma_from_t(t), sigma, rtol=1e-12, atol=0)
    tt = torch.linspace(0.01, 1.56, 50, dtype=F64)
    torch.testing.assert_close(trigflow.t_from_sigma(trigflow.sigma_from_t(tt)), tt, rtol=1e-13, atol=0)
    # Definition check, independent of the inverse: t = arctan(sigma / sd).
    torch.testing.assert_close(t, torch.atan(sigma / SD), rtol=0, atol=0)


def test_t_max():
    assert trigflow.t_max() == math.atan(80.0 / 0.5)
    assert trigflow.t_max() == pytest.approx(1.5645, abs=5e-5)  # paper's rounded value


def test_consistency_function_boundary_is_identity():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, 5, generator=g, dtype=F64)
    t0 = torch.zeros(8, dtype=F64)
    for F_out in (torch.randn(8, 3, 5, generator=g, dtype=F64) * 1e6, torch.zeros(8, 3, 5, dtype=F64), -x):
        # cos 0 = 1 and sin 0 = 0 exactly, so f(x, 0) = x bit for bit for any finite F.
        assert torch.equal(trigflow.consistency_function(F_out, x, t0), x)
    x32 = x.float()
    assert torch.equal(trigflow.consistency_function(torch.randn_like(x32), x32, t0.float()), x32)


def test_gaussian_consistency_is_constant_on_ode_paths(gaussian3: GaussianData):
    g = torch.Generator().manual_seed(3)
    x0 = gaussian3.sample(5, generator=g)  # 5 paths
    ts = torch.linspace(0.0, trigflow.t_max(), 200, dtype=F64)
    for i in range(x0.shape[0]):
        path = gaussian3.ode_point(x0[i].expand(len(ts), -1), ts)
        f = gaussian3.consistency(path, ts)
        # Affine maps with O(1) coefficients: float64 rounding ~1e-15, so 1e-10 leaves lots of room.
        torch.testing.assert_close(f, x0[i].expand_as(f), rtol=0, atol=1e-10)
        # The path starts at x0 and is the TrigFlow marginal's standardized point (it moves: not a trivial path).
        torch.testing.assert_close(path[0], x0[i], rtol=0, atol=1e-14)
        assert (path[-1] - path[0]).abs().max() > 0.1


def test_gaussian_velocity_is_time_derivative_along_ode_path(gaussian3: GaussianData):
    g = torch.Generator().manual_seed(4)
    x0 = gaussian3.sample(64, generator=g)
    t = torch.linspace(0.02, 1.55, 64, dtype=F64)
    fd = central_difference(lambda h: gaussian3.ode_point(x0, t + h), 1e-5)
    v = gaussian3.velocity(gaussian3.ode_point(x0, t), t)
    # Central difference, h = 1e-5: truncation ~h^2 * O(1) = 1e-10, rounding ~1e-11 -> 1e-8.
    torch.testing.assert_close(v, fd, rtol=0, atol=1e-8)


def test_gaussian_path_transports_data_marginal(gaussian3: GaussianData):
    """ode_point maps data samples to the TrigFlow marginal cos t x0 + sin t z (compared statistically)."""
    n = 100_000
    g = torch.Generator().manual_seed(5)
    t_val = 0.9
    t = torch.full((n,), t_val, dtype=F64)
    pushed = gaussian3.ode_point(gaussian3.sample(n, generator=g), t)
    direct = trigflow.interpolate(gaussian3.sample(n, generator=g),
                                  torch.randn(n, 3, generator=g, dtype=F64) * SD, t)
    var_t = math.cos(t_val) ** 2 * gaussian3.s ** 2 + math.sin(t_val) ** 2 * SD ** 2
    # Two independent sample means: sd of the difference sqrt(2 var_t / n) ~ 2e-3; 5 sigma.
    tol_mean = 5 * math.sqrt(2 * var_t / n)
    assert (pushed.mean(0) - direct.mean(0)).abs().max() < tol_mean
    # Sample variances: sd of each ~ var_t sqrt(2/n); the difference sqrt(2) times that; 5 sigma.
    tol_var = 5 * var_t * math.sqrt(2 / n) * math.sqrt(2)
    assert (pushed.var(0) - direct.var(0)).abs().max() < tol_var


def test_gaussian_velocity_is_conditional_mean_of_target(gaussian3: GaussianData):
    """E[cos t z - sin t x0 | x_t] = velocity(x_t): the regression of the target on x_t matches the closed form."""
    n, t_val = 200_000, 0.7
    g = torch.Generator().manual_seed(6)
    x0 = gaussian3.sample(n, generator=g)
    z = torch.randn(n, 3, generator=g, dtype=F64) * SD
    t = torch.full((n,), t_val, dtype=F64)
    x_t = trigflow.interpolate(x0, z, t)
    resid = trigflow.velocity_target(x0, z, t) - gaussian3.velocity(x_t, t)
    # If velocity is the conditional mean, resid is uncorrelated with x_t and has zero mean. Its conditional std is
    # s sd / sqrt(var_t) ~ 0.21 here, so sample moments have sd ~ 0.21 * 0.5 / sqrt(n) ~ 2.4e-4; 1.5e-3 is 6 sigma.
    assert resid.mean(0).abs().max() < 1.5e-3
    xc = x_t - x_t.mean(0)
    assert (resid * xc).mean(0).abs().max() < 1.5e-3
    # The residual variance equals the closed form s^2 sd^2 / var_t (sd of the estimate ~ var * sqrt(2/n)).
    var_t = math.cos(t_val) ** 2 * gaussian3.s ** 2 + math.sin(t_val) ** 2 * SD ** 2
    expected = gaussian3.s ** 2 * SD ** 2 / var_t
    assert (resid.var(0) - expected).abs().max() < 6 * expected * math.sqrt(2 / n)


def test_gaussian_F_forms_match_their_definitions(gaussian3: GaussianData):
    g = torch.Generator().manual_seed(7)
    x_t = torch.randn(32, 3, generator=g, dtype=F64)
    t = torch.linspace(0.05, 1.5, 32, dtype=F64)
    # v = sd F_diffusion(x_t / sd, t)
    torch.testing.assert_close(trigflow.velocity(gaussian3.F_diffusion(x_t / SD, t)), gaussian3.velocity(x_t, t),
                               rtol=1e-13, atol=1e-13)
    # f = cos t x_t - sin t sd F_consistency(x_t / sd, t)
    f = trigflow.consistency_function(gaussian3.F_consistency(x_t / SD, t), x_t, t)
    torch.testing.assert_close(f, gaussian3.consistency(x_t, t), rtol=1e-12, atol=1e-12)


def test_truncated_proposal_is_the_normal_truncated_at_ln_sigma_max():
    """sigma_max truncates ln(sigma) ~ N(P_mean, P_std^2) at ln(sigma_max): every t <= arctan(sigma_max / sd), and
    the draws follow the truncated normal (Kolmogorov-Smirnov against its CDF)."""
    p_mean, p_std, sd, sigma_max = 0.4, 2.0, 0.5, 80.0
    t = trigflow.sample_time(50_000, p_mean, p_std, sd, torch.Generator().manual_seed(0), dtype=torch.float64,
                             sigma_max=sigma_max)
    assert float(t.max()) <= math.atan(sigma_max / sd) and float(t.min()) > 0
    log_sigma = torch.log(sd * torch.tan(t)).numpy()
    upper = (math.log(sigma_max) - p_mean) / p_std
    truncated = stats.truncnorm(-math.inf, upper, loc=p_mean, scale=p_std)
    assert stats.kstest(log_sigma, truncated.cdf).pvalue > 1e-3
    assert stats.kstest(log_sigma, stats.norm(p_mean, p_std).cdf).pvalue < 1e-6  # tells the two apart
    untruncated = trigflow.sample_time(5, p_mean, p_std, sd, torch.Generator().manual_seed(1))
    assert torch.equal(untruncated, trigflow.sample_time(5, p_mean, p_std, sd, torch.Generator().manual_seed(1),
                                                         sigma_max=None))


def test_methods_draw_from_the_truncated_proposal():
    for name in ("diffusion", "sct", "scd", "discrete-ct"):
        cls = method_class(name)
        extra = {"discrete_steps": 64} if name == "discrete-ct" else {}
        draws = cls(cls.Settings(p_mean=2.0, p_std=2.0, sigma_max=10.0, **extra)).draw((4096, 1, 2, 2),
                                                                             torch.Generator().manual_seed(0), "cpu")
        assert float(draws.t.max()) <= math.atan(10.0 / 0.5), name

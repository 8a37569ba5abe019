"""EMA of the weights (scm/ema.py): EDM2's power-function EMA and the half-life EMA."""
import math

import pytest
import torch
from torch import nn

from conftest import F64
from scm.ema import HalfLifeEMA, PowerEMA, sigma_rel_to_gamma


class Vector(nn.Module):
    """A 'network' that is one float64 parameter vector plus a buffer."""

    def __init__(self, value):
        super().__init__()
        self.p = nn.Parameter(torch.as_tensor(value, dtype=F64).clone())
        self.register_buffer("count", torch.zeros((), dtype=F64))


def sigma_rel_of_gamma(gamma):
    """EDM2 Eq. 3: sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def test_sigma_rel_to_gamma_edm2_values():
    # EDM2 quotes gamma = 16.97 for sigma_rel = 0.05 and 6.94 for 0.10 (two decimals -> 0.005 tolerance).
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.005)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.005)
    for s in (0.01, 0.05, 0.075, 0.1, 0.2):
        # Root of a cubic by numpy.roots: ~1e-12 relative after the round trip.
        assert sigma_rel_of_gamma(sigma_rel_to_gamma(s)) == pytest.approx(s, rel=1e-10)


def _sequence(T):
    steps = torch.arange(1, T + 1, dtype=F64)[:, None]
    return torch.cat([torch.sin(0.1 * steps), 0.01 * steps, torch.cos(0.37 * steps) + 0.002 * steps ** 1.5], dim=1)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.10])
def test_power_ema_equals_closed_form_average(sigma_rel):
    T = 300
    theta0 = torch.tensor([5.0, -3.0, 2.0], dtype=F64)
    seq = _sequence(T)
    net = Vector(theta0)
    ema = PowerEMA(net, sigma_rel=sigma_rel)
    for step in range(1, T + 1):
        with torch.no_grad():
            net.p.copy_(seq[step - 1])
            net.count.fill_(step)
        ema.update(net, step)

    gamma = sigma_rel_to_gamma(sigma_rel)
    beta = [(1 - 1 / k) ** (gamma + 1) for k in range(1, T + 1)]  # beta_1 = 0: the first update copies theta_1
    weights = []
    for t in range(1, T + 1):
        tail = math.prod(beta[t:])  # prod_{k = t+1}^{T} beta_k
        weights.append((1 - beta[t - 1]) * tail)
    w0 = math.prod(beta)  # weight left on theta0: 0 because beta_1 = 0
    weights = torch.tensor(weights, dtype=F64)
    assert w0 == 0.0
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    expected = (weights[:, None] * seq).sum(0) + w0 * theta0
    # float64 lerps over 300 steps accumulate ~T * eps ~ 1e-13; 1e-10.
    torch.testing.assert_close(ema.ema.p, expected, rtol=0, atol=1e-10)
    # The product telescopes to the power function: prod_{k=t+1}^T (1 - 1/k)^(gamma+1) = (t / T)^(gamma+1).
    t = 120
    assert math.prod(beta[t:]) == pytest.approx((t / T) ** (gamma + 1), rel=1e-10)
    assert float(ema.ema.count) == T  # buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.ema.parameters())


def test_half_life_ema_absorbs_half_a_step_change():
    halflife_images, batch = 6400, 64  # 100 steps per half-life
    net = Vector([0.0, 0.0])
    ema = HalfLifeEMA(net, halflife_images=halflife_images, batch_size=batch, rampup=None)
    with torch.no_grad():
        net.p.fill_(1.0)  # a step change 0 -> 1
    for step in range(1, halflife_images // batch + 1):
        ema.update(net, step)
    # 0.5^(64/6400) raised to the 100th power is 0.5 up to float64 rounding of ~100 products: 1e-12.
    torch.testing.assert_close(ema.ema.p, torch.full((2,), 0.5, dtype=F64), rtol=0, atol=1e-12)
    for step in range(101, 201):
        ema.update(net, step)
    torch.testing.assert_close(ema.ema.p, torch.full((2,), 0.75, dtype=F64), rtol=0, atol=1e-12)


def test_half_life_ema_rampup_limits_early_half_life():
    ema = HalfLifeEMA(Vector([0.0]), halflife_images=500_000, batch_size=64, rampup=0.05)
    # Step 10: images seen 640, ramped half-life = 0.05 * 640 = 32 images -> beta = 0.5^(64 / 32) = 0.25.
    assert ema.beta(10) == pytest.approx(0.25, rel=1e-12)
    # Late in training the configured half-life wins: 0.5^(64 / 500000).
    assert ema.beta(10**7) == pytest.approx(0.5 ** (64 / 500_000), rel=1e-12)

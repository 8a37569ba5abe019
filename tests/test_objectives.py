"""The sCM objectives (scm/objectives.py), the rearranged JVP (scm/jvp.py) and the attention op's forward AD.

g below always means the paper's tangent (Algorithm 1):
    g = -cos^2 t (sd F- - dx_t/dt) - r cos t sin t (x_t + sd dF-/dt)
consistency_loss only reports mean ||g|| (before normalization) in its diagnostics, so tests that need g itself rebuild
it from the public pieces (trigflow, jvp.network_tangent) with the same seeded generator, and first check that the
rebuilt loss equals the returned one (so the rebuild is known to see the same t, z and g).
"""
import math

import pytest
import torch

from conftest import (F64, central_difference, float64_weight, make_mlp, make_toy_unet, replay_time_and_noise,
                      time_in_input_dtype)
from scm import trigflow
from scm.gaussian import GaussianData
from scm.jvp import network_tangent
from scm.kernels import attention
from scm.objectives import TangentSettings, consistency_loss, diffusion_loss, normalize_tangent

CLOSED_FORM_JVP = "torch-func"  # the Gaussian closed forms are plain functions, not networks written in scm.nets.ops
from scm.trigflow import expand
from scm.weighting import AdaptiveWeight

pytestmark = pytest.mark.usefixtures("single_thread")

SD = trigflow.SIGMA_DATA
P_MEAN, P_STD = -1.0, 1.4


def paper_g(F_minus, sd_cs_dF_dt, x_t, t, dxt_dt, r, sd=SD):
    """Algorithm 1's tangent, written out from the paper (sd_cs_dF_dt = sd cos t sin t dF-/dt)."""
    T = expand(t, x_t)
    c, s = torch.cos(T), torch.sin(T)
    return -c ** 2 * (sd * F_minus - dxt_dt) - r * (c * s * x_t + sd_cs_dF_dt)


def rebuild_sct(net_fn, x0, seed, r, labels=None):
    """(t, x_t, F-, g) for sCT exactly as consistency_loss sees them with generator seed `seed`."""
    t, z = replay_time_and_noise(x0, P_MEAN, P_STD, seed)
    x_t = trigflow.interpolate(x0, z, t)
    dxt_dt = trigflow.velocity_target(x0, z, t)
    F_minus, J = network_tangent(lambda x, tt: net_fn(x, tt, labels), x_t, t, dxt_dt, SD)
    return t, x_t, F_minus, paper_g(F_minus, J, x_t, t, dxt_dt, r)


def per_sample_sq(x):
    return x.flatten(1).pow(2).sum(1)


# ---------------------------------------------------------------------------------------------------------------
# The rearranged JVP
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["toy-unet", "mlp"])
def test_network_tangent_equals_finite_difference(kind):
    g = torch.Generator().manual_seed(10)
    if kind == "toy-unet":
        net = make_toy_unet(seed=11)
        shape, labels = (3, 1, 8, 8), torch.tensor([1, 4, 7])
    else:
        net = make_mlp(seed=12, num_classes=10)
        shape, labels = (3, 2), torch.tensor([0, 5, 9])
    net.eval()
    x_t = torch.randn(shape, generator=g, dtype=F64) * 0.8
    dxt_dt = torch.randn(shape, generator=g, dtype=F64) * 0.5
    t = torch.tensor([0.2, 0.8, 1.4], dtype=F64)
    fn = lambda x, tt: net(x, tt, labels)  # noqa: E731

    F_minus, J = network_tangent(fn, x_t, t, dxt_dt, SD)
    with torch.no_grad():
        torch.testing.assert_close(F_minus, fn(x_t / SD, t), rtol=1e-12, atol=1e-12)

        # d/dt F(x(t) / sd, t) along x(t + h) = x_t + h dx_t/dt, by central differences in float64.
        dF_dt = central_difference(lambda h: fn((x_t + h * dxt_dt) / SD, t + h), 1e-5)
        expected = SD * expand(torch.cos(t) * torch.sin(t), x_t) * dF_dt
        # FD error with h = 1e-5: truncation ~h^2 |F'''| ~ 1e-10, rounding ~1e-16 |F| / h ~ 1e-11: 1e-6 relative is
        # far above both and far below any real mistake (a missing cos t sin t or sd factor is O(1)).
        rel = (J - expected).norm() / expected.norm()
        assert rel < 1e-6, f"relative error {rel:.3e}"

        # The t-tangent matters: dropping the explicit t dependence changes J by much more than the tolerance, so a
        # wrong or missing time tangent cannot pass the check above.
        dF_dt_x_only = central_difference(lambda h: fn((x_t + h * dxt_dt) / SD, t), 1e-5)
        only_x = SD * expand(torch.cos(t) * torch.sin(t), x_t) * dF_dt_x_only
        assert (only_x - expected).norm() / expected.norm() > 1e-3


def test_network_tangent_is_finite_near_pi_over_2():
    """The rearranged tangents stay finite at t = pi/2 where 1/cos t would blow up (the point of the rearrangement)."""
    net = make_mlp(seed=13)
    x = torch.randn(4, 2, dtype=F64)
    t = torch.full((4,), math.pi / 2, dtype=F64)
    F_minus, J = network_tangent(lambda a, b: net(a, b), x, t, torch.randn(4, 2, dtype=F64), SD)
    assert torch.isfinite(F_minus).all() and torch.isfinite(J).all()
    assert J.abs().max() < 1e-10  # cos(pi/2) sin(pi/2) ~ 6e-17 times an O(1) derivative


def test_network_tangent_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown JVP method"):
        network_tangent(lambda a, b: a, torch.zeros(1, 2), torch.zeros(1), torch.zeros(1, 2), SD, method="nope")


def test_attention_primal_and_jvp():
    g = torch.Generator().manual_seed(20)
    q, k, v, tq, tk, tv = (torch.randn(2, 3, 6, 4, generator=g, dtype=F64) for _ in range(6))
    out, tangent = torch.func.jvp(attention, (q, k, v), (tq, tk, tv))
    # Primal: softmax(q k^T / sqrt(d)) v written out, float64 -> 1e-12.
    scores = q @ k.transpose(-1, -2) / 2.0
    ref = torch.exp(scores - scores.amax(-1, keepdim=True))
    ref = (ref / ref.sum(-1, keepdim=True)) @ v
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    fd = central_difference(lambda h: attention(q + h * tq, k + h * tk, v + h * tv), 1e-5)
    # h = 1e-5 in float64: truncation ~1e-10 * |third derivative| (O(10) here), rounding ~1e-11 -> 1e-7.
    torch.testing.assert_close(tangent, fd, rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# sCD / sCT with the analytic Gaussian teacher and consistency model
# ---------------------------------------------------------------------------------------------------------------

def test_exact_consistency_pair_has_zero_tangent_float64(gaussian3: GaussianData):
    """g = cos t * d/dt f(x_t, t) along the teacher's ODE: zero for the exact f, checked in float64 without the loss."""
    g = torch.Generator().manual_seed(30)
    x_t = torch.randn(512, 3, generator=g, dtype=F64) * 0.6
    t = torch.rand(512, generator=g, dtype=F64) * 1.55 + 0.01
    dxt_dt = gaussian3.velocity(x_t, t)
    F_minus, J = network_tangent(gaussian3.F_consistency, x_t, t, dxt_dt, SD)
    tangent = paper_g(F_minus, J, x_t, t, dxt_dt, r=1.0)
    scale = (expand(torch.cos(t) * torch.sin(t), x_t) * x_t).norm(dim=1).mean()  # a term that must cancel
    # Exact cancellation up to float64 rounding: eps ~ 1e-16 amplified by the 1/sin t >= 1/0.01 divisions inside
    # F_consistency gives <~ 1e-14; observed ~1e-15. 1e-12 relative to the cancelling terms' size.
    assert tangent.norm(dim=1).max() < 1e-12 * scale
    # With r < 1 (warmup) the exact pair is no longer stationary: g != 0 there, as the formula says.
    tangent_half = paper_g(F_minus, J, x_t, t, dxt_dt, r=0.5)
    assert tangent_half.norm(dim=1).mean() > 1e-2 * scale


def test_scd_tangent_vanishes_for_exact_teacher_and_student(gaussian3: GaussianData):
    x0 = gaussian3.sample(256, generator=torch.Generator().manual_seed(31))
    settings = TangentSettings(normalization="none", jvp_method=CLOSED_FORM_JVP)
    teacher = time_in_input_dtype(gaussian3.F_diffusion)

    def run(F, teacher=teacher):
        return consistency_loss(time_in_input_dtype(F), float64_weight(), x0, None, step=settings.warmup_steps,
                                p_mean=P_MEAN, p_std=P_STD, tangent=settings, teacher=teacher,
                                generator=torch.Generator().manual_seed(32))

    t, z = replay_time_and_noise(x0, P_MEAN, P_STD, 32)
    x_t = trigflow.interpolate(x0, z, t)
    scale = (expand(torch.cos(t) * torch.sin(t), x_t) * x_t).norm(dim=1).mean().item()  # ~0.33

    loss, diag = run(gaussian3.F_consistency)
    assert diag["warmup_r"].item() == 1.0
    # t is drawn in float32 and cos t sin t of the JVP tangent is rounded in float32 (scm.jvp.rearranged_tangents
    # computes it in t's dtype), so the cancellation is only ~1e-7 relative here; 1e-5 relative still separates the
    # exact pair from the perturbed ones below by > 3 orders of magnitude.
    assert diag["tangent_norm"].item() < 1e-5 * scale
    assert loss.item() < 1e-10  # w = 0 and F == F-: loss = mean ||g||^2 / D

    perturbed = {
        "F x 1.05": lambda x, tt, c=None: 1.05 * gaussian3.F_consistency(x, tt),
        "F + 0.1 x": lambda x, tt, c=None: gaussian3.F_consistency(x, tt) + 0.1 * x,
    }
    for name, F in perturbed.items():
        _, d = run(F)
        assert d["tangent_norm"].item() > 1e-2 * scale, name
    # A wrong teacher (velocity scaled by 1.05) also leaves a non-zero tangent for the exact student.
    _, d = run(gaussian3.F_consistency,
               teacher=time_in_input_dtype(lambda x, tt, c=None: 1.05 * gaussian3.F_diffusion(x, tt)))
    assert d["tangent_norm"].item() > 1e-2 * scale


def test_scd_tangent_matches_paper_formula(gaussian3: GaussianData):
    """For a non-exact student, the reported mean ||g|| equals the paper's g rebuilt with the teacher velocity."""
    x0 = gaussian3.sample(128, generator=torch.Generator().manual_seed(33))
    F = lambda x, tt, c=None: gaussian3.F_consistency(x, tt) + 0.1 * x  # noqa: E731
    for step, r in [(0, 0.0), (2_500, 0.25), (50_000, 1.0)]:
        loss, diag = consistency_loss(time_in_input_dtype(F), float64_weight(), x0, None, step, P_MEAN, P_STD,
                                      TangentSettings(normalization="none", jvp_method=CLOSED_FORM_JVP),
                                      teacher=time_in_input_dtype(gaussian3.F_diffusion),
                                      generator=torch.Generator().manual_seed(34))
        t, z = replay_time_and_noise(x0, P_MEAN, P_STD, 34)
        x_t = trigflow.interpolate(x0, z, t)
        dxt_dt = gaussian3.velocity(x_t, t)  # sd F_diffusion(x_t / sd, t)
        F_minus, J = network_tangent(time_in_input_dtype(F), x_t, t, dxt_dt, SD)
        tangent = paper_g(F_minus, J, x_t, t, dxt_dt, r)
        assert diag["warmup_r"].item() == pytest.approx(r, abs=1e-12)
        # Same float64 arithmetic on the same inputs: agreement to rounding, 1e-10 relative.
        assert diag["tangent_norm"].item() == pytest.approx(tangent.norm(dim=1).mean().item(), rel=1e-10)
        assert loss.item() == pytest.approx((per_sample_sq(tangent) / 3).mean().item(), rel=1e-10)


def test_sct_tangent_is_zero_only_in_expectation(gaussian3: GaussianData):
    """sCT with the exact F: g is affine in dx_t/dt and vanishes at its conditional mean, so E[g h(x_t)] = 0.

    The per-sample g is not small (it carries the noise of cos t z - sin t x0), so only moments are checked.
    """
    n = 20_000
    x0 = gaussian3.sample(n, generator=torch.Generator().manual_seed(35))
    loss, diag = consistency_loss(time_in_input_dtype(gaussian3.F_consistency), float64_weight(), x0, None,
                                  step=10_000, p_mean=P_MEAN, p_std=P_STD,
                                  tangent=TangentSettings(normalization="none", jvp_method=CLOSED_FORM_JVP),
                                  generator=torch.Generator().manual_seed(36))
    t, x_t, F_minus, tangent = rebuild_sct(time_in_input_dtype(gaussian3.F_consistency), x0, 36, r=1.0)
    assert diag["tangent_norm"].item() == pytest.approx(tangent.norm(dim=1).mean().item(), rel=1e-10)
    assert diag["tangent_norm"].item() > 0.05  # not ~0 per sample (~0.3 here)

    # Moments: |mean| < 5 standard errors (each sample is independent).
    se = tangent.std(0) / math.sqrt(n)
    assert bool(((tangent.mean(0)).abs() < 5 * se).all()), (tangent.mean(0), se)
    xc = x_t - x_t.mean(0)
    prod = tangent * xc
    assert bool((prod.mean(0).abs() < 5 * prod.std(0) / math.sqrt(n)).all())

    # Negative control: a perturbed F gives a g whose correlation with x_t is many standard errors from zero.
    bad = time_in_input_dtype(lambda x, tt, c=None: gaussian3.F_consistency(x, tt) + 0.1 * x)
    _, x_t_b, _, tangent_b = rebuild_sct(bad, x0, 36, r=1.0)
    prod_b = tangent_b * (x_t_b - x_t_b.mean(0))
    assert bool((prod_b.mean(0).abs() > 10 * prod_b.std(0) / math.sqrt(n)).all())


# ---------------------------------------------------------------------------------------------------------------
# Gradients, normalization, warmup
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalization,step", [("none", 10_000), ("none", 3_000), ("norm", 10_000)])
def test_mse_gradient_equals_continuous_time_gradient(normalization, step):
    """d/dtheta mean ||F - sg(F) - sg(g)||^2 / D = d/dtheta mean(-2/D F . sg(g)) (F == F- numerically)."""
    net = make_mlp(seed=40, dim=2, hidden=32, depth=2)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(41), dtype=F64) * 0.7 + 0.3
    fn = time_in_input_dtype(net)
    settings = TangentSettings(normalization=normalization)
    loss, diag = consistency_loss(fn, float64_weight(), x0, None, step, P_MEAN, P_STD, settings,
                                  generator=torch.Generator().manual_seed(42))
    grads_mse = torch.autograd.grad(loss, list(net.parameters()))

    r = min(1.0, step / settings.warmup_steps)
    t, x_t, F_minus, tangent = rebuild_sct(fn, x0, 42, r)
    if normalization == "norm":
        tangent = tangent / (tangent.norm(dim=1, keepdim=True) + settings.norm_constant)
    D = x0[0].numel()
    assert loss.item() == pytest.approx((per_sample_sq(tangent) / D).mean().item(), rel=1e-10)  # rebuild check

    F_out = fn(x_t / SD, t)
    surrogate = (-2.0 / D * (F_out * tangent).flatten(1).sum(1)).mean()
    grads_ct = torch.autograd.grad(surrogate, list(net.parameters()))
    scale = max(gr.abs().max().item() for gr in grads_ct)
    assert scale > 1e-4  # a non-trivial gradient
    for gm, gc in zip(grads_mse, grads_ct):
        # Identical float64 quantities up to (F - F-) ~ 0 and summation order: 1e-10 relative to the largest entry.
        torch.testing.assert_close(gm, gc, rtol=0, atol=1e-10 * scale)


def _loss_and_rebuilt_g(normalization, step=10_000, out_std=0.2, batch=16, warmup_steps=10_000):
    net = make_mlp(seed=50, dim=2, hidden=32, depth=2)
    if out_std != 0.2:
        with torch.no_grad():
            net.out.weight.mul_(out_std / 0.2)
            net.out.bias.mul_(out_std / 0.2)
    x0 = torch.randn(batch, 2, generator=torch.Generator().manual_seed(51), dtype=F64) * 2.0
    fn = time_in_input_dtype(net)
    settings = TangentSettings(normalization=normalization, warmup_steps=warmup_steps)
    loss, diag = consistency_loss(fn, float64_weight(), x0, None, step, P_MEAN, P_STD, settings,
                                  generator=torch.Generator().manual_seed(52))
    r = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    _, _, _, tangent = rebuild_sct(fn, x0, 52, r)
    return loss, diag, tangent


def test_tangent_normalization_norm():
    loss, diag, tangent = _loss_and_rebuilt_g("norm", out_std=3.0)
    n = tangent.norm(dim=1)
    assert diag["tangent_norm"].item() == pytest.approx(n.mean().item(), rel=1e-10)  # reported before normalization
    assert n.min() > 0.1  # normalization actually changes the scale here
    used_norm = n / (n + 0.1)  # ||g / (||g|| + c)||
    assert bool((used_norm < 1).all())
    # loss = mean ||g_used||^2 / D with w = 0 and F == F-; float64 -> 1e-10.
    assert loss.item() == pytest.approx((used_norm ** 2 / 2).mean().item(), rel=1e-10)
    assert loss.item() < 0.5  # < 1 / D


def test_tangent_normalization_clip():
    loss, diag, tangent = _loss_and_rebuilt_g("clip", out_std=3.0)
    assert tangent.abs().max() > 1.5  # clipping bites
    clipped = tangent.clamp(-1.0, 1.0)
    assert loss.item() == pytest.approx((per_sample_sq(clipped) / 2).mean().item(), rel=1e-10)
    assert loss.item() <= 1.0  # every |g_i| <= 1 -> ||g||^2 / D <= 1
    loss_none, _, _ = _loss_and_rebuilt_g("none", out_std=3.0)
    assert loss_none.item() > loss.item()


def test_tangent_normalization_none_and_unknown():
    loss, _, tangent = _loss_and_rebuilt_g("none")
    assert loss.item() == pytest.approx((per_sample_sq(tangent) / 2).mean().item(), rel=1e-10)
    with pytest.raises(ValueError, match="normalization"):
        _loss_and_rebuilt_g("bogus")


@pytest.mark.parametrize("step,warmup,r", [(0, 10_000, 0.0), (2_500, 10_000, 0.25), (10_000, 10_000, 1.0),
                                           (30_000, 10_000, 1.0), (50, 100, 0.5), (7, 0, 1.0)])
def test_tangent_warmup(step, warmup, r):
    loss, diag, tangent = _loss_and_rebuilt_g("none", step=step, warmup_steps=warmup)
    assert diag["warmup_r"].item() == pytest.approx(r, abs=1e-12)
    # r enters g: the loss matches the rebuilt g with this r (rebuild_sct uses the paper's r = min(1, step / H)).
    assert loss.item() == pytest.approx((per_sample_sq(tangent) / 2).mean().item(), rel=1e-10)


def test_default_warmup_is_paper_value():
    assert TangentSettings().warmup_steps == 10_000 and TangentSettings().norm_constant == 0.1
    assert TangentSettings().normalization == "norm"


# ---------------------------------------------------------------------------------------------------------------
# Dropout RNG replay
# ---------------------------------------------------------------------------------------------------------------

def _dropout_setup():
    net = make_toy_unet(seed=60, dropout=0.3, label_dropout=0.5).train()
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(61), dtype=F64) * 0.5
    labels = torch.tensor([2, 3, 5, 7])
    return net, x0, labels


def _sct_step0(fn, x0, labels, gen_seed=62, rng_seed=99):
    weight = float64_weight()  # built before seeding: nn.Linear's init draws from the global RNG
    torch.manual_seed(rng_seed)
    return consistency_loss(fn, weight, x0, labels, 0, P_MEAN, P_STD,
                            TangentSettings(normalization="none"), generator=torch.Generator().manual_seed(gen_seed))


def test_dropout_masks_replayed_between_jvp_and_gradient_pass():
    """At r = 0, g = -cos^2 t (sd F- - dx_t/dt); if F and F- share masks, loss = mean ||g||^2 / D exactly."""
    net, x0, labels = _dropout_setup()
    fn = time_in_input_dtype(net)
    loss, _ = _sct_step0(fn, x0, labels)

    # Rebuild F- with a plain forward from the same global RNG state (t, z come from the generator, not the global
    # RNG, so the state at the JVP pass is the one set by manual_seed).
    t, z = replay_time_and_noise(x0, P_MEAN, P_STD, 62)
    x_t = trigflow.interpolate(x0, z, t)
    torch.manual_seed(99)
    with torch.no_grad():
        F_minus = fn(x_t / SD, t, labels)
        F_other = fn(x_t / SD, t, labels)  # the next draw: different masks
    assert (F_minus - F_other).abs().max() > 1e-3  # dropout is active, masks matter
    T = expand(t, x_t)
    tangent = -torch.cos(T) ** 2 * (SD * F_minus - trigflow.velocity_target(x0, z, t))
    D = x0[0].numel()
    expected = (per_sample_sq(tangent) / D).mean()
    # Same masks -> F - F- == 0 -> equality to float64 rounding: 1e-12 relative.
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)

    # Negative control: a network that consumes one extra random number before its second call (the gradient pass)
    # sees different masks, and the same comparison fails by far more than the tolerance.
    calls = {"n": 0}

    def desync(x, tt, c=None):
        calls["n"] += 1
        if calls["n"] == 2:
            torch.rand(1)
        return fn(x, tt, c)
    loss_bad, _ = _sct_step0(desync, x0, labels)
    assert calls["n"] == 2
    assert abs(loss_bad.item() - expected.item()) > 1e-6 * expected.item()


def test_dropout_loss_is_reproducible_and_gradient_finite():
    net, x0, labels = _dropout_setup()
    fn = time_in_input_dtype(net)
    results = []
    for _ in range(2):
        loss, _ = _sct_step0(fn, x0, labels)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        results.append((loss.detach(), grads))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)
        assert torch.isfinite(a).all()
    assert sum(g.abs().sum() for g in results[0][1]) > 0


# ---------------------------------------------------------------------------------------------------------------
# Diffusion loss
# ---------------------------------------------------------------------------------------------------------------

def test_diffusion_loss_with_exact_velocity(gaussian3: GaussianData):
    n = 20_000
    x0 = gaussian3.sample(n, generator=torch.Generator().manual_seed(70))

    def run(F, weight=None):
        return diffusion_loss(time_in_input_dtype(F), weight or float64_weight(), x0, None, P_MEAN, P_STD,
                              generator=torch.Generator().manual_seed(71))

    loss, diag = run(gaussian3.F_diffusion)
    t, z = replay_time_and_noise(x0, P_MEAN, P_STD, 71)
    x_t = trigflow.interpolate(x0, z, t)
    target = trigflow.velocity_target(x0, z, t) / SD
    F_out = gaussian3.F_diffusion(x_t / SD, t.double())
    D = 3
    per_sample = per_sample_sq(F_out - target) / D
    # w = 0: loss = mean_b (1/D) ||F - target||^2, same float64 arithmetic -> 1e-10.
    assert loss.item() == pytest.approx(per_sample.mean().item(), rel=1e-10)
    assert diag["mse"].item() == pytest.approx(loss.item(), rel=1e-10)

    # Closed form: E[(1/D)||F* - target||^2 | t] = Var(v | x_t) / sd^2 = s^2 / var_t. Given t the per-sample value is
    # (that) * chi^2_3 / 3, relative sd sqrt(2/3); over 20000 samples the mean's relative sd is 0.6%; 3% = 5 sigma.
    var_t = torch.cos(t.double()) ** 2 * gaussian3.s ** 2 + torch.sin(t.double()) ** 2 * SD ** 2
    assert loss.item() == pytest.approx((gaussian3.s ** 2 / var_t).mean().item(), rel=0.03)

    wrong = {
        "scaled": lambda x, tt, c=None: 1.1 * gaussian3.F_diffusion(x, tt),
        "shifted": lambda x, tt, c=None: gaussian3.F_diffusion(x, tt) + 0.1 * x,
        "zero": lambda x, tt, c=None: torch.zeros_like(x),
    }
    for name, F in wrong.items():
        loss_wrong, _ = run(F)
        assert loss_wrong.item() > loss.item() * 1.01, name

    # Non-zero adaptive weight: loss = mean(e^w / D ||F - target||^2 - w).
    weight = float64_weight()
    with torch.no_grad():
        weight.module.linear.bias.fill_(0.3)
    loss_w, diag_w = run(gaussian3.F_diffusion, weight)
    assert loss_w.item() == pytest.approx((math.exp(0.3) * per_sample - 0.3).mean().item(), rel=1e-10)
    assert diag_w["w_mean"].item() == pytest.approx(0.3, rel=1e-12)


def test_objectives_accept_float64_networks():
    net = make_mlp(seed=80)
    x0 = torch.randn(8, 2, dtype=F64)
    g = torch.Generator().manual_seed(0)
    losses = [diffusion_loss(net, AdaptiveWeight(), x0, None, P_MEAN, P_STD, generator=g)[0],
              consistency_loss(net, AdaptiveWeight(), x0, None, 100, P_MEAN, P_STD, generator=g)[0]]
    assert all(loss.dtype == F64 and loss.ndim == 0 and torch.isfinite(loss) for loss in losses)


def test_scd_guidance_range_draws_one_scale_per_sample_and_tells_the_student():
    """guidance=(lo, hi): s ~ U[lo, hi] per sample (drawn after t and z), the teacher runs CFG at each sample's s,
    and a student built with a guidance input receives that same s (sCD on ImageNet 512, s ~ U[1, 2])."""
    from scm.sampling import guided

    seen = {}

    class Student(torch.nn.Module):
        takes_guidance = True

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))

        def forward(self, x, t, class_labels=None, guidance=None):
            seen.setdefault("guidance", []).append(guidance)
            return self.scale * x * torch.cos(t).view(-1, 1) + 0.1 * guidance.view(-1, 1)

    def teacher(x, t, class_labels=None):
        return 0.5 * x if class_labels is None else 0.8 * x  # CFG: 0.5 x + s (0.3 x)

    x0 = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(40))
    labels = torch.arange(6) % 3
    consistency_loss(Student(), float64_weight(), x0, labels, 10, P_MEAN, P_STD,
                     TangentSettings(jvp_method=CLOSED_FORM_JVP), teacher=teacher, guidance=(1.0, 2.0),
                     generator=torch.Generator().manual_seed(41))
    g = torch.Generator().manual_seed(41)  # the objective's draws: t, then z, then s
    t = trigflow.sample_time(6, P_MEAN, P_STD, SD, g, x0.device, x0.dtype)
    torch.randn(x0.shape, generator=g, dtype=F64)
    s = 1.0 + torch.rand(6, generator=g, dtype=F64)
    assert len(seen["guidance"]) == 2  # the tangent pass and the gradient pass
    for got in seen["guidance"]:
        torch.testing.assert_close(got, s)
    x = torch.randn(6, 3, dtype=F64)
    torch.testing.assert_close(guided(teacher, labels, s)(x, t), 0.5 * x + s.view(-1, 1) * 0.3 * x)


def test_rms_tangent_normalization_is_the_norm_form_with_c_scaled_by_sqrt_d():
    """g / (||g|| / sqrt(D) + c) = sqrt(D) g / (||g|| + sqrt(D) c): the RMS form weighs c sqrt(D) times more, and a
    large tangent comes out with unit RMS per sample instead of unit norm."""
    scale = torch.tensor([1e-3, 0.1, 1.0, 1e4], dtype=torch.float64).view(4, 1, 1, 1)
    g = torch.randn(4, 3, 8, 8, dtype=torch.float64) * scale
    norm = torch.linalg.vector_norm(g.flatten(1), dim=1)
    D = g[0].numel()
    rms = normalize_tangent(g, norm, TangentSettings(normalization="rms", norm_constant=0.1))
    scaled = normalize_tangent(g, norm, TangentSettings(normalization="norm", norm_constant=0.1 * D ** 0.5))
    torch.testing.assert_close(rms, D ** 0.5 * scaled, rtol=1e-14, atol=0)
    assert abs(float(rms[3].pow(2).mean().sqrt()) - 1.0) < 1e-4
    plain = normalize_tangent(g, norm, TangentSettings(normalization="norm", norm_constant=0.1))
    assert abs(float(torch.linalg.vector_norm(plain[3])) - 1.0) < 1e-4
    with pytest.raises(ValueError, match="norm, rms, clip or none"):
        normalize_tangent(g, norm, TangentSettings(normalization="l1"))

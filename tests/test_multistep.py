"""Multistep sCD and ECT's step schedule against closed forms: the exact multistep consistency function of Gaussian
data has zero tangent under the multistep loss and samples the ODE's endpoint in M steps; M = 1 is sCD itself."""
import math

import pytest
import torch

from scm import trigflow
from scm.discrete import ect_previous_time
from scm.gaussian import GaussianData
from scm.methods import SCD, DiscreteCT, MultistepSCD, Networks, SamplingError
from scm.methods.multistep_scd import segment_start, segment_starts
from scm.trigflow import expand

SD = 0.5
DATA = GaussianData(torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=torch.float64), 0.35, SD)


def exact_multistep_F(starts):
    """F with cos(t - s) x_t - sin(t - s) sd F = x_s, the PF-ODE's point at the start s of t's segment."""
    def F(x, t, class_labels=None, **_):
        x_t, s = x * SD, segment_start(t, starts)
        x_s = DATA.ode_point(DATA.consistency(x_t, t), s)
        U = expand(t - s, x_t)
        return (torch.cos(U) * x_t - x_s) / (torch.sin(U) * SD)
    return F


def _tangent_norm(method, F, batch=2048):
    nets = Networks({"net": F}, {"weight": lambda t: torch.zeros_like(t)}, DATA.F_diffusion)
    draws = method.draw((batch, 4), torch.Generator().manual_seed(0), "cpu")
    draws.t, draws.z = draws.t.double(), draws.z.double()
    x0 = DATA.sample(batch, torch.Generator().manual_seed(1))
    _, diagnostics = method.loss(nets, x0, None, draws, step=1)
    return float(diagnostics["tangent_norm"])


def _method(segments, **tangent):
    return MultistepSCD(MultistepSCD.Settings(segments=segments, tangent={"warmup_steps": 0, "normalization": "none",
                                                                          "jvp_method": "torch-func", **tangent}),
                        sigma_data=SD)


@pytest.mark.parametrize("segments, spacing", [(2, "cosine"), (4, "uniform")])
def test_the_exact_multistep_function_has_zero_tangent(segments, spacing):
    method = MultistepSCD(MultistepSCD.Settings(segments=segments, spacing=spacing, tangent={
        "warmup_steps": 0, "normalization": "none", "jvp_method": "torch-func"}), sigma_data=SD)
    exact = _tangent_norm(method, exact_multistep_F(method.starts()))
    one_segment = _tangent_norm(method, exact_multistep_F([0.0]))  # sCD's exact F is not a multistep solution
    print(f"\nmultistep sCD M={segments} ({spacing}): mean ||g|| exact {exact:.1e}, single-segment F {one_segment:.1e}")
    assert exact < 1e-9 and one_segment > 1e-2


def test_m_steps_with_the_exact_function_reach_the_ode_endpoint():
    method = _method(4)
    z = torch.randn(5000, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * SD
    setting = method.sample_settings(MultistepSCD.Sampling(steps=[4]))[0]
    x = method.sample(exact_multistep_F(method.starts()), z, None, setting, [])
    endpoint = DATA.consistency(z, torch.full((5000,), trigflow.t_max(sigma_data=SD), dtype=torch.float64))
    gap = float((x - endpoint).abs().max())
    print(f"\nmultistep sCD, 4 steps with the exact function: max |x - ODE endpoint| = {gap:.1e}")
    assert setting.passes == 4 and gap < 1e-10
    assert torch.allclose(x.mean(0), DATA.mu, atol=0.02) and float((x.std(0) - DATA.s).abs().max()) < 0.01


def test_one_segment_is_scd_exactly():
    from scm.nets import build_network
    torch.manual_seed(0)
    net = build_network("mlp", dim=4, hidden=32, depth=2, num_classes=0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    teacher = DATA.F_diffusion
    x0 = DATA.sample(64, torch.Generator().manual_seed(3)).float()
    losses = []
    for method in (_method(1), SCD(SCD.Settings(tangent={"warmup_steps": 0}), sigma_data=SD)):
        if isinstance(method, SCD) and not isinstance(method, MultistepSCD):
            method.settings = method.settings.model_copy(update={"tangent": _method(1).settings.tangent})
        draws = method.draw((64, 4), torch.Generator().manual_seed(4), "cpu")
        nets = Networks({"net": net}, {"weight": lambda t: torch.zeros_like(t)},
                        lambda x, t, labels: teacher(x.double(), t.double()).float())
        losses.append(method.loss(nets, x0, None, draws, step=1)[0])
    assert torch.equal(losses[0], losses[1])


def test_segments_and_their_boundaries():
    starts = segment_starts(2, "cosine", SD)
    assert starts[0] == 0.0 and abs(starts[1] - math.atan(2.0)) < 1e-12  # u = 1/2: sigma = 1 = 2 sd
    t = torch.tensor([0.01, starts[1], starts[1] + 1e-6, 1.56], dtype=torch.float64)
    assert segment_start(t, starts).tolist() == [0.0, 0.0, starts[1], starts[1]]  # a boundary belongs below
    with pytest.raises(SamplingError, match="steps"):
        _method(2).sample_settings(MultistepSCD.Sampling(steps=[1, 2]))
    assert [s.steps for s in _method(4).sample_settings(MultistepSCD.Sampling())] == [4]


def test_ect_step_halves_each_stage_in_sigma():
    """r = sigma (1 - n(sigma) / q^(stage+1)): sigma - r halves per stage with q = 2; r >= 0; r < t."""
    t = torch.linspace(0.05, 1.55, 50, dtype=torch.float64)
    sigma = SD * torch.tan(t)
    steps = [sigma - SD * torch.tan(ect_previous_time(t, stage, 2.0, 8.0, 1.0, SD)) for stage in range(2, 5)]
    assert torch.allclose(steps[1] / steps[0], torch.full_like(t, 0.5)) and torch.allclose(steps[2] / steps[1],
                                                                                           torch.full_like(t, 0.5))
    r0 = ect_previous_time(torch.tensor([math.atan(1 / SD)]), 0, 2.0, 8.0, 1.0, SD)  # sigma 1, stage 0: r < 0 -> 0
    r2 = SD * torch.tan(ect_previous_time(torch.tensor([math.atan(1 / SD)], dtype=torch.float64), 2, 2.0, 8.0, 1.0,
                                          SD))
    n = 1 + 8 / (1 + math.e)  # 1 + k sigmoid(-b sigma) at sigma = 1
    assert float(r0) == 0.0 and abs(float(r2) - (1 - n / 8)) < 1e-12


def test_discrete_ct_takes_one_schedule():
    assert DiscreteCT.Settings(ect={"q": 4}).ect.q == 4 and DiscreteCT.Settings(discrete_steps=64).ect is None
    with pytest.raises(ValueError, match="discrete_steps: missing"):
        DiscreteCT.Settings()
    with pytest.raises(ValueError, match="not both"):
        DiscreteCT.Settings(discrete_steps=8, ect={})


def test_multistep_gradient_matches_a_float64_reference_from_the_definition():
    """The method's float32 gradient (one-pass dual JVP, rearranged tangent) against float64: -(2/D) E[g . dF/dtheta]
    with g = cos(t - s) df-/dt, df-/dt taken by torch.func.jvp of f(x_t, t) = cos(t - s) x_t - sin(t - s) sd F
    itself along (dx_t/dt, 1) (no rearrangement, no dual numbers)."""
    from scm.nets import build_network
    torch.manual_seed(0)
    net = build_network("mlp", dim=4, hidden=32, depth=2, num_classes=0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    method = MultistepSCD(MultistepSCD.Settings(segments=2, tangent={"warmup_steps": 0, "normalization": "none"}),
                          sigma_data=SD)
    draws = method.draw((256, 4), torch.Generator().manual_seed(5), "cpu")
    x0 = DATA.sample(256, torch.Generator().manual_seed(6)).float()
    teacher = lambda x, t, labels: DATA.F_diffusion(x.double(), t.double()).to(x.dtype)  # noqa: E731
    nets = Networks({"net": net}, {"weight": lambda t: torch.zeros_like(t)}, teacher)
    loss, _ = method.loss(nets, x0, None, draws, step=1)
    ours = torch.autograd.grad(loss, list(net.parameters()))

    net64 = net.double()
    t, z, x0 = draws.t.double(), draws.z.double(), x0.double()
    s = segment_start(t, method.starts())
    x_t = trigflow.interpolate(x0, z, t)
    dxt_dt = SD * DATA.F_diffusion(x_t / SD, t)

    def f(x, tt):  # the multistep consistency function, with the network's frozen weights
        U = expand(tt - s, x)
        with torch.no_grad():
            return torch.cos(U) * x - torch.sin(U) * SD * net64(x / SD, tt, None)

    _, df_dt = torch.func.jvp(f, (x_t, t), (dxt_dt, torch.ones_like(t)))
    g = expand(torch.cos(t - s), x_t) * df_dt
    F = net64(x_t / SD, t, None)
    reference = torch.autograd.grad(-(2.0 / 4) * (g * F).sum(1).mean(), list(net64.parameters()))
    error = max(float((a.double() - b).norm() / b.norm()) for a, b in zip(ours, reference))
    print(f"\nmultistep sCD gradient vs float64 reference from the definition: relative error {error:.1e}")
    assert error < 1e-4

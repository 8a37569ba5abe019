"""MeanFlow (scm/methods/meanflow.py) against closed forms and references; `pytest -s` prints the measured errors.

(a) Gaussian data under the linear path: the exact average velocity u* satisfies the MeanFlow identity through the
method's own target code, and samples from u* have the data's mean and covariance; (b) the loss gradient against an
independent float64 torch.func reference; (c) r = t is flow matching exactly; (d) the one-pass JVP of every
two-time network (with a tangent on r too) against torch.func.jvp, and what interval_input=False keeps; (e) the
tau <-> t map; (f) settings errors name their field.
"""
import math

import pytest
import torch
from pydantic import ValidationError

from conftest import F64
from harness.recipe.load import validate
from harness.recipe.text import RecipeError
from scm.gaussian import LinearPathGaussian
from scm.methods import Networks, method_class
from scm.methods.meanflow import (IntervalNoise, MeanFlow, MeanFlowSampling, adaptive_loss, average_velocity,
                                  draw_interval, input_norm, input_tangents, jvp_dual, jvp_of, linear_time,
                                  meanflow_target, network_inputs, trig_time)
from scm.nets import build_network
from scm.nets.ops import Dual
from scm.trigflow import expand

pytestmark = pytest.mark.usefixtures("single_thread")
SD = 0.5
TINY = {
    "mlp": ("mlp", dict(dim=2, hidden=16, depth=2, num_classes=3), (2,)),
    "toy-unet": ("toy-unet", dict(resolution=8, channels=16, num_classes=3), (1, 8, 8)),
    "toy-unet fourier, label dropout": ("toy-unet", dict(resolution=8, channels=16, num_classes=3, label_dropout=0.3,
                                                         time_embedding="fourier", fourier_scale=0.5), (1, 8, 8)),
    "unet-edm2": ("unet-edm2", dict(model_channels=16, channel_mult=(1, 2), resolution=8, channels=3, num_classes=3,
                                    attn_resolutions=(4,), channels_per_head=8, num_blocks=1), (3, 8, 8)),
    "ddpmpp, dropout": ("ddpmpp", dict(model_channels=16, channel_mult=(1, 2), resolution=8, num_blocks=1,
                                       attn_resolutions=(4,), dropout=0.2, num_classes=3), (3, 8, 8)),
}


def two_time(config: str, dtype=F64, seed: int = 0, interval_input: bool = True):
    """The network with every parameter random (zero-initialized outputs and interval layers would make u = 0 or
    independent of r, and derivative checks pass trivially)."""
    name, settings, shape = TINY[config]
    torch.manual_seed(seed)
    net = build_network(name, **settings, interval_input=interval_input).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.7 if p.dim() == 0 else p + 0.2 * torch.randn(p.shape, generator=g, dtype=dtype))
    net.train(any(settings.get(k, 0) > 0 for k in ("dropout", "label_dropout")))
    return net, shape


def relative(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def gaussian():
    return LinearPathGaussian(torch.tensor([0.3, -0.5], dtype=F64), torch.tensor([0.4, 0.7], dtype=F64))


class GaussianNet:
    """u* behind the network interface: (z_tau / N, t, r in TrigFlow time) -> u* in z_tau units."""

    def __init__(self, data):
        self.data = data

    def __call__(self, x, t, labels=None, r=None):
        tau_t, tau_r = linear_time(t, SD), linear_time(r, SD)
        return self.data.average_velocity(x * expand(input_norm(tau_t, SD), x), tau_r, tau_t)


# ---- (a) closed-form Gaussian ------------------------------------------------------------------------------------

def test_exact_average_velocity_satisfies_the_meanflow_identity():
    data, g = gaussian(), torch.Generator().manual_seed(0)
    a, b = torch.rand(256, generator=g, dtype=F64), torch.rand(256, generator=g, dtype=F64)
    tau_t, tau_r = torch.maximum(a, b), torch.minimum(a, b)
    z = data.flow(torch.randn(256, 2, generator=g, dtype=F64), torch.ones(256, dtype=F64), tau_t)  # z_t ~ p_t
    v = data.velocity(z, tau_t)  # the marginal velocity (Eq. 10)
    u, du_dt = jvp_of(data.average_velocity, z, tau_r, tau_t, v)
    residual = (u - meanflow_target(v, tau_r, tau_t, du_dt)).abs().max().item()
    # mutation: the instantaneous velocity in place of u* violates the identity
    u_v, dv_dt = jvp_of(lambda zz, r, t: data.velocity(zz, t), z, tau_r, tau_t, v)
    wrong = (u_v - meanflow_target(v, tau_r, tau_t, dv_dt)).abs().max().item()
    print(f"\nMeanFlow residual of the exact u*: max |u* - u_tgt(u*)| = {residual:.2e} (u = v instead: {wrong:.2e})")
    assert residual < 1e-12 and wrong > 1e-2


@pytest.mark.parametrize("steps", [1, 2])
def test_sampling_the_exact_average_velocity_gives_the_data(steps):
    data, n = gaussian(), 200_000
    method = MeanFlow(sigma_data=SD)
    (setting,) = [s for s in method.sample_settings(MeanFlowSampling()) if s.steps == steps]
    eps = torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    x = method.sample(GaussianNet(data), SD * eps, None, setting, [])
    pointwise = (x - (data.mu + data.s * eps)).abs().max().item()  # the exact flow map: x = mu + s eps
    mean_err, var = (x.mean(0) - data.mu).abs(), x.var(0)
    mean_z, var_z = mean_err / (data.s / math.sqrt(n)), (var - data.s ** 2).abs() / (data.s ** 2 * math.sqrt(2 / n))
    print(f"\n{steps}-NFE from u*: max |x - (mu + s eps)| = {pointwise:.2e}; mean off by {mean_z.max():.2f} SE, "
          f"variance by {var_z.max():.2f} SE (n = {n})")
    assert setting.nfe(False) == steps and pointwise < 1e-12
    assert mean_z.max() < 5 and var_z.max() < 5  # 5 standard errors of the Monte Carlo estimate
    assert abs(torch.corrcoef(x.T)[0, 1].item()) < 5 / math.sqrt(n)  # diagonal covariance


# ---- (b) the loss gradient -----------------------------------------------------------------------------------------

def reference_loss(net, x0, draws, p: float, c: float):
    """Alg. 1 + Eq. 22 written from the paper alone: u(z, r, t) = net(z / N, atan2(t, sd (1 - t)), r = ...)."""
    def u(z, r, t):
        N = torch.sqrt(SD ** 2 * (1 - t) ** 2 + t ** 2)
        return net(z / N[:, None], torch.atan2(t, SD * (1 - t)), None, r=torch.atan2(r, SD * (1 - r)))

    t, r, e = draws.tau_t, draws.tau_r, draws.eps
    z, v = (1 - t[:, None]) * x0 + t[:, None] * e, e - x0
    with torch.no_grad():
        _, du_dt = torch.func.jvp(u, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    err = (u(z, r, t) - (v - (t - r)[:, None] * du_dt)).pow(2).sum(1)
    return (err / (err.detach() + c) ** p).mean()


def gradients(net, loss):
    net.zero_grad()
    loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in net.parameters()])


def test_loss_gradient_matches_a_float64_torch_func_reference():
    method = MeanFlow(MeanFlow.Settings(interval_fraction=0.75, adaptive_power=0.75, p_mean=-0.5, p_std=1.5))
    g = torch.Generator().manual_seed(2)
    x0 = (torch.randn(64, 2, generator=g, dtype=F64) * 0.4 + 0.2)
    draws = draw_interval(x0.shape, method.settings, g, dtype=F64)
    assert (draws.tau_r < draws.tau_t).any() and (draws.tau_r == draws.tau_t).any()
    net64 = two_time("mlp")[0].eval()
    reference = gradients(net64, reference_loss(net64, x0, draws, 0.75, 1e-3))
    errors = {}
    for jvp in ("dual", "torch-func"):
        for dtype in (F64, torch.float32):
            m = MeanFlow(method.settings.model_copy(update={"jvp_method": jvp}))
            net = two_time("mlp")[0].to(dtype).eval()  # the same weights, rounded
            loss, diagnostics = m.loss(Networks({"net": net}, {}), x0.to(dtype), None, draws, 0)
            errors[jvp, str(dtype)[6:]] = relative(gradients(net, loss).to(F64), reference)
    print("\nloss gradient vs the float64 torch.func reference, relative: "
          + ", ".join(f"{j} {d} {e:.1e}" for (j, d), e in errors.items()))
    assert errors["dual", "float64"] < 1e-12 and errors["torch-func", "float64"] < 1e-12
    assert errors["dual", "float32"] < 1e-4 and errors["torch-func", "float32"] < 1e-4
    assert math.isfinite(diagnostics["dudt_norm"]) and diagnostics["dudt_norm"] > 0


# ---- (c) r = t is flow matching ----------------------------------------------------------------------------------

def test_r_equal_t_is_flow_matching_with_the_same_weighting():
    net = two_time("toy-unet", torch.float32)[0].eval()
    g = torch.Generator().manual_seed(3)
    x0, labels = torch.randn(6, 1, 8, 8, generator=g) * 0.5, torch.tensor([0, 1, 2, 0, 1, 2])
    tau = torch.rand(6, generator=g)
    draws = IntervalNoise(tau, tau.clone(), torch.randn(x0.shape, generator=g))
    method = MeanFlow(MeanFlow.Settings(adaptive_power=0.75))
    loss, _ = method.loss(Networks({"net": net}, {}), x0, labels, draws, 0)
    z = (1 - expand(tau, x0)) * x0 + expand(tau, x0) * draws.eps
    fm, _, _ = adaptive_loss(average_velocity(net, labels, z, tau, tau, SD), draws.eps - x0, 0.75, 1e-3)
    grads = gradients(net, loss), gradients(net, fm)
    print(f"\nr = t: MeanFlow loss {loss.item():.6f}, flow matching {fm.item():.6f}, |difference| "
          f"{(loss - fm).abs().item():.1e}")
    assert torch.equal(loss, fm) and torch.equal(*grads)


# ---- (d) the two-time networks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("config", list(TINY))
def test_one_pass_jvp_equals_torch_func_with_a_tangent_on_r(config):
    net, shape = two_time(config)
    g = torch.Generator().manual_seed(4)
    x, dx = torch.randn(3, *shape, generator=g, dtype=F64), torch.randn(3, *shape, generator=g, dtype=F64)
    t, dt, r, dr = (torch.rand(3, generator=g, dtype=F64) * 1.4 + 0.05 for _ in range(4))
    labels = torch.tensor([0, 2, 1])

    def F(xx, tt, rr):
        return net(xx, tt, labels, r=rr)

    torch.manual_seed(5)  # dropout masks: the same draws in both passes
    with torch.no_grad():
        u_ref, J_ref = torch.func.jvp(F, (x, t, r), (dx, dt, dr))
    torch.manual_seed(5)
    with torch.no_grad():
        out = F(Dual.of(x, dx), Dual.of(t, dt), Dual.of(r, dr))
    torch.manual_seed(5)
    with torch.no_grad():
        J_r = torch.func.jvp(F, (x, t, r), (0 * dx, 0 * dt, dr))[1]  # r alone moves u
    err = max(relative(out.primal, u_ref), relative(out.tangent, J_ref))
    print(f"\n{config}: one-pass JVP vs torch.func.jvp (float64), relative {err:.1e}; |du/dr . dr| {J_r.norm():.2e}")
    assert err < 1e-10 and J_r.norm() > 1e-3


@pytest.mark.parametrize("config", list(TINY))
def test_a_fresh_two_time_network_is_the_one_time_network(config):
    """Built under one seed, the two-time network holds the one-time network's weights (its own built last) and,
    with its interval output at zero, computes the same u for every r; without interval_input, r= is refused."""
    name, settings, shape = TINY[config]
    torch.manual_seed(0)
    one = build_network(name, **settings).eval()
    torch.manual_seed(0)
    two = build_network(name, **settings, interval_input=True).eval()
    ones, twos = one.state_dict(), two.state_dict()
    assert all(torch.equal(ones[k], twos[k]) for k in ones) and set(twos) - set(ones)
    assert all("interval" in k for k in set(twos) - set(ones))
    with torch.no_grad():
        for p in one.parameters():  # non-zero outputs, the same in both
            p.add_(0.1)
        two.load_state_dict({**two.state_dict(), **one.state_dict()})
        x, t, labels = torch.randn(2, *shape), torch.tensor([0.3, 1.2]), torch.tensor([1, 2])
        assert torch.equal(one(x, t, labels), two(x, t, labels, r=torch.tensor([0.1, 0.0])))
    with pytest.raises(ValueError, match="interval_input"):
        one(x, t, labels, r=t)
    with pytest.raises(ValueError, match="pass r="):
        two(x, t, labels)


def test_dual_jvp_of_the_method_equals_torch_func_through_the_time_map():
    net = two_time("ddpmpp, dropout")[0]
    g = torch.Generator().manual_seed(6)
    z, v = torch.randn(3, 3, 8, 8, generator=g, dtype=F64), torch.randn(3, 3, 8, 8, generator=g, dtype=F64)
    tau_t = torch.tensor([0.3, 0.9, 1.0], dtype=F64)  # tau = 1: t = pi/2, finite tangents
    tau_r = torch.tensor([0.1, 0.9, 0.0], dtype=F64)
    torch.manual_seed(7)
    u_ref, du_ref = jvp_of(lambda zz, a, b: average_velocity(net, None, zz, a, b, SD), z, tau_r, tau_t, v)
    torch.manual_seed(7)
    u, du = jvp_dual(net, None, z, tau_r, tau_t, v, SD)
    err = max(relative(u, u_ref), relative(du, du_ref))
    print(f"\nmethod's dual du/dt (chain rule through tau -> t) vs torch.func.jvp: relative {err:.1e}")
    assert err < 1e-10 and torch.isfinite(du).all()


# ---- (e) the time map, (f) settings, draws --------------------------------------------------------------------

def test_tau_to_t_map():
    tau = torch.tensor([0.0, 1e-6, 0.2, 0.5, 0.9, 1 - 1e-9, 1.0], dtype=F64)
    t = trig_time(tau, SD)
    assert t[0] == 0 and t[-1] == math.pi / 2 and (t.diff() > 0).all()
    assert torch.allclose(linear_time(t, SD), tau, atol=1e-15, rtol=0)
    inner = slice(1, -1)  # logit(tau) = ln(sd tan t): MeanFlow's logit-normal is sCM's log-normal proposal
    assert torch.allclose(torch.logit(tau[inner]), torch.log(SD * torch.tan(t[inner])), atol=1e-9)
    g = torch.Generator().manual_seed(8)
    x, eps = torch.randn(7, 3, generator=g, dtype=F64) * SD, torch.randn(7, 3, generator=g, dtype=F64)
    T = expand(tau, x)
    z_tau = (1 - T) * x + T * eps
    x_t = torch.cos(expand(t, x)) * x + torch.sin(expand(t, x)) * SD * eps  # TrigFlow with z = sd eps
    inputs, t_in, _ = network_inputs(z_tau, tau, tau, SD)
    err = (inputs - x_t / SD).abs().max().item()
    v = torch.randn(7, 3, generator=g, dtype=F64)
    (_, (dx_ref, dt_ref)) = torch.func.jvp(lambda zz, b: network_inputs(zz, b, b, SD)[:2], (z_tau, tau),
                                           (v, torch.ones_like(tau)))
    dx, dt = input_tangents(z_tau, v, tau, SD)
    tangent_err = max((dx - dx_ref).abs().max().item(), (dt - dt_ref).abs().max().item())
    print(f"\ntau <-> t: max |z_tau / N - x_t / sd| = {err:.1e}; chain-rule tangents vs torch.func {tangent_err:.1e}")
    assert err < 1e-14 and tangent_err < 1e-12 and torch.equal(t_in, t)


def test_draws_order_the_times_and_slice():
    settings = MeanFlow.Settings(interval_fraction=0.75, p_mean=-2.0, p_std=2.0)
    draws = draw_interval((20_000, 3), settings, torch.Generator().manual_seed(9))
    equal = (draws.tau_r == draws.tau_t).double().mean().item()
    assert (draws.tau_r <= draws.tau_t).all() and ((draws.tau_t > 0) & (draws.tau_t < 1)).all()
    assert abs(equal - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 20_000)  # r = t for 1 - 0.75 of the samples
    part = draws[2:5]
    assert torch.equal(part.eps, draws.eps[2:5]) and torch.equal(part.tau_r, draws.tau_r[2:5])


@pytest.mark.parametrize("key, value, field", [("p_std", 0.0, "p_std"), ("interval_fraction", 1.5, "interval_fraction"),
                                               ("guidance_interval", [0.8, 0.2], "guidance_interval"),
                                               ("ratio", 0.75, "ratio"), ("jvp_method", "forward", "jvp_method")])
def test_settings_errors_name_the_field(key, value, field):
    with pytest.raises(ValidationError) as error:
        MeanFlow.Settings.model_validate({key: value})
    assert error.value.errors()[0]["loc"][0] == field
    recipe = {"name": "mf", "stages": {"mf": {"method": "meanflow", "steps": 2, key: value}}}
    with pytest.raises(RecipeError, match=f"stages.mf.{field}"):
        validate(recipe, "test")


def test_method_interface():
    method = method_class("meanflow")(MeanFlow.Settings(guidance_scale=1.0, guidance_mix=0.5))
    assert method.takes_interval() and method.trained_guidance() == 2.0 and method.cost_per_step() == 7.0
    assert MeanFlow().cost_per_step() == 5.0 and MeanFlow().takes_guidance() is False
    with pytest.raises(ValidationError, match="steps"):
        MeanFlowSampling(steps=[0])
    names = [s.name for s in MeanFlow().sample_settings(MeanFlowSampling(steps=[1, 2], guidance=[1.0, 1.5]))]
    assert names == ["meanflow-1", "meanflow-1-cfg-1.5", "meanflow-2", "meanflow-2-cfg-1.5"]


def test_guided_target_follows_eq_21():
    net = two_time("mlp", dtype=torch.float32)[0].train()
    g = torch.Generator().manual_seed(10)
    z, v, labels = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g), torch.tensor([0, 1, 2, 0, 1])
    tau = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.95])
    method = MeanFlow(MeanFlow.Settings(guidance_scale=1.5, guidance_mix=0.4, guidance_interval=(0.2, 0.8)))
    target = method.target_velocity(net, z, tau, labels, v)
    assert net.training  # restored after the eval-mode guidance terms
    net.eval()
    with torch.no_grad():
        cond, uncond = (average_velocity(net, c, z, tau, tau, SD) for c in (labels, None))
    on = torch.tensor([False, True, True, True, False])[:, None]
    expected = torch.where(on, 1.5 * v + 0.4 * cond + (1 - 1.5 - 0.4) * uncond, v)
    assert torch.allclose(target, expected, atol=1e-6)
    with pytest.raises(ValueError, match="class labels"):
        method.target_velocity(net, z, tau, None, v)


def test_a_batch_cut_into_parts_gives_the_whole_batch_gradient():
    """What the trainer does over ranks and accumulation passes: each part's mean loss weighted by its share."""
    method = MeanFlow(MeanFlow.Settings(interval_fraction=0.75, adaptive_power=0.75))
    net = two_time("mlp")[0].eval()
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(12, 2, generator=g, dtype=F64) * 0.5
    draws = draw_interval(x0.shape, method.settings, g, dtype=F64)
    whole = gradients(net, method.loss(Networks({"net": net}, {}), x0, None, draws, 0)[0])
    parts = sum(gradients(net, method.loss(Networks({"net": net}, {}), x0[p], None, draws[p], 0)[0] * 4 / 12)
                for p in (slice(0, 4), slice(4, 8), slice(8, 12)))
    assert relative(parts, whole) < 1e-12

"""The built-in methods behind `scm.methods.Method`: each is the objective it wraps (same draws, same loss, bit for
bit), samples with the sampler and NFE its sampling block says, and declares what the harness asks of it."""
import pytest
import torch

from conftest import make_toy_unet
from scm.methods import (BUILT_IN, SCD, SCT, Diffusion, DiscreteCT, Method, Networks, UnknownMethod, available,
                         method_class)
from scm.discrete import discrete_consistency_loss
from scm.objectives import TangentSettings, consistency_loss, diffusion_loss, draw_noise
from scm.weighting import AdaptiveWeight, UniformWeight

SHAPE = (6, 1, 8, 8)


def _networks(teacher: bool = False):
    torch.manual_seed(0)
    net = make_toy_unet(dtype=torch.float32)
    return Networks({"net": net}, {"weight": AdaptiveWeight()}, make_toy_unet(seed=1, dtype=torch.float32)
                    if teacher else None)


def test_the_registry_names_every_built_in_and_refuses_what_is_not_a_method():
    assert sorted(BUILT_IN) == ["diffusion", "discrete-ct", "meanflow", "multistep-scd", "scd", "scd-vsd", "sct",
                                "vsd"]
    assert all(method_class(name) is cls and cls.name == name for name, cls in BUILT_IN.items())
    assert set(BUILT_IN) <= set(available())
    with pytest.raises(UnknownMethod, match="is not a subclass of scm.methods.Method"):
        method_class("scm.objectives:TangentSettings")
    with pytest.raises(UnknownMethod, match="cannot import no_such_module"):
        method_class("no_such_module:Method")

    class Half(Method):  # an interface left half written
        name, label = "half", "half"

    import types
    import sys

    sys.modules["half_method"] = types.SimpleNamespace(Half=Half)
    try:
        with pytest.raises(UnknownMethod, match="does not implement cost_per_step, draw, loss, sample, "
                                                "sample_settings"):
            method_class("half_method:Half")
    finally:
        del sys.modules["half_method"]


@pytest.mark.parametrize("method, objective", [
    (Diffusion(Diffusion.Settings(p_mean=-0.8, p_std=1.6)),
     lambda nets, x0, y, noise: diffusion_loss(nets.net, nets.modules["weight"], x0, y, -0.8, 1.6, noise=noise)),
    (SCT(SCT.Settings(tangent={"warmup_steps": 10, "normalization": "clip"})),
     lambda nets, x0, y, noise: consistency_loss(nets.net, nets.modules["weight"], x0, y, 3, -1.0, 1.4,
                                                 TangentSettings("clip", 0.1, 10), noise=noise)),
    (SCD(SCD.Settings(guidance=1.5)),
     lambda nets, x0, y, noise: consistency_loss(nets.net, nets.modules["weight"], x0, y, 3, -1.0, 1.4,
                                                 TangentSettings(), nets.teacher, 1.5, noise=noise)),
    (DiscreteCT(DiscreteCT.Settings(discrete_steps=16)),
     lambda nets, x0, y, noise: discrete_consistency_loss(nets.net, nets.modules["weight"], x0, y, 16, -1.0, 1.4,
                                                          noise=noise)),
], ids=["diffusion", "sct", "scd", "discrete-ct"])
def test_a_method_is_the_objective_it_wraps(method, objective):
    """Its draws are draw_noise's (t, z in that order; s where scD's guidance is a range), and its loss on them
    equals the objective's on the same draws and the same dropout state."""
    settings = method.settings
    generator, again = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    draws = method.draw(SHAPE, generator, "cpu")
    expected = draw_noise(SHAPE, settings.p_mean, settings.p_std, 0.5, again, None)
    assert torch.equal(draws.t, expected.t) and torch.equal(draws.z, expected.z)
    nets = _networks(teacher=method.reads_teacher)
    x0, labels = torch.randn(SHAPE), torch.arange(6)
    torch.manual_seed(7)
    mine = method.loss(nets, x0, labels, draws, 3)
    torch.manual_seed(7)
    theirs = objective(nets, x0, labels, draws)
    assert torch.equal(mine[0], theirs[0]) and mine[1].keys() == theirs[1].keys()


def test_scd_draws_a_scale_per_sample_for_a_student_told_it():
    method = SCD(SCD.Settings(guidance=(1.0, 2.0), guidance_input=True))
    draws = method.draw(SHAPE, torch.Generator().manual_seed(0), "cpu")
    assert draws.s.shape == (6,) and bool(((1.0 <= draws.s) & (draws.s <= 2.0)).all())
    assert method.takes_guidance() and method.teacher_guidance() == 2.0
    with pytest.raises(ValueError, match="range but the student cannot be told the scale; set guidance_input"):
        SCD.Settings(guidance=(1.0, 2.0))


def test_what_a_method_declares_for_the_harness():
    assert [m.reads_teacher for m in (Diffusion(), SCT(), SCD(), DiscreteCT(DiscreteCT.Settings(discrete_steps=4)))] \
        == [False, False, True, False]
    assert [m.cost_per_step() for m in (Diffusion(), SCT(), SCD(), SCD(SCD.Settings(guidance=1.5)))] == [3, 5, 6, 7]
    assert SCT.watched == {"tangent_norm": "tangent"} and Diffusion.watched == {}
    assert isinstance(SCT(SCT.Settings(adaptive_weighting=False)).auxiliary_modules()["weight"], UniformWeight)
    assert [(t.role, t.start) for t in SCT.networks] == [("net", "init")]


def test_sampling_settings_and_what_nfe_means_for_each():
    ode = Diffusion().sample_settings(Diffusion.Sampling(steps=[2, 18], guidance=[1.0, 1.5]))
    assert [(s.sampler, s.steps, s.nfe(True), s.nfe(False), s.guidance) for s in ode] == [
        ("dpm-solver-2s", 2, 3, 3, 1.0), ("dpm-solver-2s", 2, 6, 3, 1.5), ("dpm-solver-2s", 18, 35, 35, 1.0),
        ("dpm-solver-2s", 18, 70, 35, 1.5)]  # 2 steps - 1; classifier-free guidance doubles a conditional pass
    euler = Diffusion().sample_settings(Diffusion.Sampling(sampler="euler", steps=10))
    assert [(s.nfe(True), s.name) for s in euler] == [(10, "euler-10")]
    told = SCD(SCD.Settings(guidance=(1.0, 2.0), guidance_input=True))
    assert [(s.steps, s.nfe(True), s.told, s.name) for s in told.sample_settings(SCD.Sampling(guidance=[1.5]))] == [
        (1, 1, 1.5, "consistency-1-guidance-1.5"), (2, 2, 1.5, "consistency-2-guidance-1.5")]
    distilled = SCD(SCD.Settings(guidance=1.5)).sample_settings(SCD.Sampling())
    assert [(s.guidance, s.cfg, s.told) for s in distilled] == [(1.5, 1.0, None)] * 2  # its rows say 1.5
    assert [SCT().later_noises(s) for s in SCT().sample_settings(SCT.Sampling(steps=[1, 2, 4]))] == [0, 1, 3]
    assert Diffusion.Sampling(steps=[3, 5, 18]).at_toy_scale().steps == [2, 3]


def test_a_consistency_model_samples_one_step_as_its_consistency_function():
    """One step: x0 = f(z, t_max) = cos t z - sin t sd F(z / sd, t)."""
    from scm.trigflow import consistency_function, t_max

    net = make_toy_unet(dtype=torch.float32).eval()
    (setting,) = SCT().sample_settings(SCT.Sampling(steps=[1]))
    z, labels = torch.randn(SHAPE) * 0.5, torch.arange(6)
    t = torch.full((6,), t_max())
    with torch.no_grad():
        expected = consistency_function(net(z / 0.5, t, labels), z, t)
        assert torch.allclose(SCT().sample(net, z, labels, setting, []), expected)

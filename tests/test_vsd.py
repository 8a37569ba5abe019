"""VSD and sCD+VSD against closed forms (Gaussian data: the exact teacher F, the exact fake score of a Gaussian
generator), a float64 torch.func reference of the generator's gradient, and exact resume of two trained networks."""
import pytest
import torch
import yaml
from torch import nn

from scm import trigflow
from scm.gaussian import GaussianData
from scm.methods import SCDVSD, VSD, Networks
from scm.methods.vsd import vsd_terms
from scm.objectives import diffusion_loss
from scm.trigflow import expand

from helpers import stage_job, tiny_recipe

SD, DIM, BATCH = 0.5, 6, 4096


class AffineGenerator(nn.Module):
    """g(z') = a z' + b written as a consistency model's F at t (f = cos t z' - sin t sd F): samples
    N(b, (a sd)^2 I)."""

    def __init__(self, a: float, b: torch.Tensor):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(a, dtype=b.dtype)), nn.Parameter(b.clone())

    def forward(self, x, t, class_labels=None):
        z, T = x * SD, expand(t, x)
        return (torch.cos(T) * z - (self.a * z + self.b)) / (torch.sin(T) * SD)

    def distribution(self) -> GaussianData:
        return GaussianData(self.b.detach(), abs(float(self.a.detach())) * SD, SD)


class ExactFakeScore(nn.Module):
    """The exact diffusion F of the generator's current distribution: what a perfectly trained F_phi would be."""

    def __init__(self, generator: AffineGenerator):
        super().__init__()
        self.generator = [generator]  # not a submodule: its parameters stay the generator's

    def forward(self, x, t, class_labels=None):
        return self.generator[0].distribution().F_diffusion(x, t)


def _nets(method, data: GaussianData, a: float, b: torch.Tensor) -> tuple[Networks, AffineGenerator]:
    generator = AffineGenerator(a, b)
    return Networks({"net": generator, "fake_score": ExactFakeScore(generator)}, method.auxiliary_modules(),
                    data.F_diffusion), generator


def _vsd_gradient(data, a, b, seed=0):
    method = VSD(VSD.Settings(adaptive_weighting=False), sigma_data=SD)
    nets, generator = _nets(method, data, a, b)
    draws = method.draw((BATCH, DIM), torch.Generator().manual_seed(seed), "cpu")
    draws.z_gen, draws.vsd.z, draws.fake.z = (v.to(b.dtype) for v in (draws.z_gen, draws.vsd.z, draws.fake.z))
    draws.vsd.t, draws.fake.t = draws.vsd.t.to(b.dtype), draws.fake.t.to(b.dtype)
    loss_vsd, _, diagnostics = vsd_terms(nets, None, draws, method.settings, False, SD)
    loss_vsd.backward()
    return generator.a.grad, generator.b.grad, diagnostics, draws


def test_vsd_gradient_vanishes_when_the_generator_already_makes_the_data():
    mu, s = torch.linspace(-0.6, 0.4, DIM, dtype=torch.float64), 0.3
    data = GaussianData(mu, s, SD)
    grad_a, grad_b, diagnostics, _ = _vsd_gradient(data, s / SD, mu)
    print(f"\nVSD at the data distribution: max |F_pretrain - F_phi| = {float(diagnostics['score_gap']):.1e}, "
          f"|grad a| = {abs(float(grad_a)):.1e}, |grad b| = {float(grad_b.abs().max()):.1e}")
    assert float(diagnostics["score_gap"]) < 1e-12 and abs(float(grad_a)) < 1e-12 and grad_b.abs().max() < 1e-12
    # and a generator off the data gets a gradient that moves it towards the data (a descent direction of the KL)
    grad_a, grad_b, _, _ = _vsd_gradient(data, 1.5 * s / SD, mu + 0.2)
    assert float(grad_a) > 1e-3 and bool((grad_b > 1e-3).all())


def test_vsd_generator_gradient_matches_a_float64_torch_func_reference():
    """The method's float32 gradient of L_VSD against E[2/D (F_pretrain - F_phi)(x_t) . dg/dtheta] by torch.func."""
    mu, s = torch.linspace(-0.6, 0.4, DIM, dtype=torch.float64), 0.3
    data = GaussianData(mu, s, SD)
    a, b = 0.9, (mu + 0.15).float()
    grad_a, grad_b, _, draws = _vsd_gradient(GaussianData(mu.float(), s, SD), a, b, seed=1)

    z_gen, z, t = draws.z_gen.double(), draws.vsd.z.double(), draws.vsd.t.double()
    fake = GaussianData(b.double(), a * SD, SD)

    def surrogate(params):
        g = params["a"] * z_gen + params["b"]  # g(z') = f(z', t_max) of the affine generator
        x_t = trigflow.interpolate(g.detach(), z, t)
        y = data.F_diffusion(x_t / SD, t) - fake.F_diffusion(x_t / SD, t)
        return (2.0 / DIM) * (y * g).sum() / BATCH

    reference = torch.func.grad(surrogate)({"a": torch.tensor(a, dtype=torch.float64), "b": b.double()})
    error = max(abs(float(grad_a) - float(reference["a"])) / abs(float(reference["a"])),
                float((grad_b.double() - reference["b"]).norm() / reference["b"].norm()))
    print(f"\nVSD generator gradient vs float64 torch.func: relative error {error:.1e}")
    assert error < 1e-5


def test_the_exact_fake_score_is_a_stationary_point_of_its_diffusion_loss():
    """L_Diff(phi) on the generator's samples: the exact F of N(b, s^2) has zero expected gradient; off it, not."""
    b, s = torch.tensor([0.2, -0.1, 0.4]), 0.3
    x0 = b + s * torch.randn(200_000, 3, generator=torch.Generator().manual_seed(2))

    def gradient(mu_phi, s_phi):
        params = torch.cat([mu_phi, torch.tensor([s_phi])]).requires_grad_()
        net = lambda x, t, labels: GaussianData(params[:3], params[3], SD).F_diffusion(x, t)  # noqa: E731
        loss, _ = diffusion_loss(net, lambda t: torch.zeros_like(t), x0, None, -0.8, 1.6, SD,
                                 generator=torch.Generator().manual_seed(3))
        return torch.autograd.grad(loss, params)[0].norm()

    at_exact, off = gradient(b, s), gradient(b + 0.1, s * 1.3)
    print(f"\nfake score's L_Diff gradient: exact {float(at_exact):.1e}, perturbed {float(off):.1e}")
    assert at_exact < 0.02 * off


def _perturbed(net: nn.Module, seed: int) -> nn.Module:
    """A toy network whose output is not identically zero (fresh ones zero their last layer)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return net


def test_scd_vsd_is_the_sum_and_each_network_gets_only_its_own_loss():
    from scm.nets import build_network

    def net(seed):
        torch.manual_seed(seed)
        return _perturbed(build_network("toy-unet", resolution=8, in_channels=1, channels=16, channel_mult=(1, 2),
                                        blocks_per_level=1, attn_resolutions=(), num_classes=10), seed)

    method = SCDVSD(SCDVSD.Settings(vsd_weight=0.5, tangent={"warmup_steps": 0}), sigma_data=SD)
    nets = Networks({"net": net(0), "fake_score": net(1)}, method.auxiliary_modules(), net(2).eval())
    x0, labels = torch.randn(8, 1, 8, 8) * SD, torch.arange(8)
    draws = method.draw((8, 1, 8, 8), torch.Generator().manual_seed(4), "cpu")

    def grads(which):
        for module in (*nets.trained.values(), *nets.modules.values()):
            module.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        loss, diagnostics = method.loss(nets, x0, labels, draws, step=10)
        parts = {"all": loss, "generator": diagnostics["scd_loss"], "fake": diagnostics["fake_loss"]}
        return loss, diagnostics, parts[which]

    loss, diagnostics, _ = grads("all")
    expected = diagnostics["scd_loss"] + 0.5 * diagnostics["vsd_loss"] + diagnostics["fake_loss"]
    assert torch.allclose(loss.detach(), expected, rtol=1e-6) and diagnostics["score_gap"] > 0
    loss.backward()
    together = {role: [p.grad.clone() for p in n.parameters()] for role, n in nets.trained.items()}
    # the fake score's gradient is that of L_Diff(phi) alone: nothing leaks in from L_VSD through F_phi
    torch.manual_seed(5)
    for module in nets.trained.values():
        module.zero_grad(set_to_none=True)
    _, fake_loss, _ = vsd_terms(nets, labels, draws.vsd, method.settings, False, SD, vsd_weight="vsd_weight")
    fake_loss.backward()
    alone = [p.grad for p in nets.trained["fake_score"].parameters()]
    assert all(torch.allclose(g, h, atol=1e-7) for g, h in zip(together["fake_score"], alone))
    assert all(p.grad is None or not p.grad.any() for p in nets.trained["net"].parameters())


def _vsd_recipe(tmp_path):
    path = tiny_recipe(tmp_path)
    recipe = yaml.safe_load(path.read_text())
    scd = recipe["stages"].pop("scd")
    recipe["stages"].pop("sct")
    recipe["stages"]["vsd"] = {**{k: scd[k] for k in ("init", "teacher", "steps", "batch_size", "optimizer", "ema",
                                                     "checkpoint_every")},
                               "method": "vsd", "sampling": {"steps": [1]}}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_vsd_trains_two_networks_and_resumes_exactly(tmp_path):
    """Generator and fake score: each its own optimizer and EMA in the checkpoint; a run cut after its step-4
    checkpoint and resumed ends bitwise as an unbroken one."""
    from harness import store
    from harness.run.train import train_stage

    ends = []
    for name in ("a", "b"):
        path = _vsd_recipe(tmp_path / name)
        train_stage(stage_job(path, tmp_path / name / "runs", "teacher"), threads=1)
        job = stage_job(path, tmp_path / name / "runs", "vsd")
        ends.append((job, torch.load(train_stage(job, threads=1), weights_only=True)))
    unbroken = ends[0][1]
    assert set(unbroken["networks"]) == set(unbroken["optimizers"]) == set(unbroken["ema"]) == {"net", "fake_score"}
    assert set(unbroken["modules"]) == {"weight", "fake_weight"}
    job = ends[1][0]
    store.checkpoint_path(job.path, 6).unlink()
    resumed = torch.load(train_stage(job, threads=1), weights_only=True)
    for key in ("networks", "ema", "modules"):
        for part in unbroken[key]:
            assert all(torch.equal(unbroken[key][part][k], resumed[key][part][k]) for k in unbroken[key][part]), \
                (key, part)


@pytest.mark.parametrize("settings, field", [({"guidance": [1.0, 2.0]}, "guidance"), ({"vsd_p_std": 0}, "vsd_p_std"),
                                             ({"p_mean": -1.0}, "p_mean")])
def test_vsd_settings_errors_name_the_field(settings, field):
    with pytest.raises(ValueError, match=field):
        VSD.Settings(**settings)

"""Shared fixtures and helpers for the sCM math tests (TrigFlow, objectives, samplers, nets, EMA).

Everything numerical runs in float64 where the check is about exactness; networks get a random (non-zero) output
layer because ToyUNet / MLP zero-initialize it, which would make F == 0 and every derivative check trivially pass.
"""
import pytest
import torch
from torch import nn

from scm.gaussian import GaussianData
from scm.nets import build_network
from scm.trigflow import SIGMA_DATA

F64 = torch.float64


def randomize_output_layer(net: nn.Module, seed: int, std: float = 0.2) -> nn.Module:
    """Give the zero-initialized last layer random weights so F(x, t) is a non-trivial function."""
    out = net.conv_out if hasattr(net, "conv_out") else net.out
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out.weight.copy_(torch.randn(out.weight.shape, generator=g, dtype=out.weight.dtype) * std)
        out.bias.copy_(torch.randn(out.bias.shape, generator=g, dtype=out.bias.dtype) * std)
    return net


def make_toy_unet(seed: int = 0, dtype=F64, **overrides) -> nn.Module:
    """The tiny class-conditional ToyUNet of the brief (8x8, 16 channels, 10 classes), float64, random output."""
    settings = dict(resolution=8, channels=16, num_classes=10)
    settings.update(overrides)
    torch.manual_seed(seed)
    net = build_network("toy-unet", **settings).to(dtype)
    return randomize_output_layer(net, seed + 1000)


def make_mlp(seed: int = 0, dtype=F64, **overrides) -> nn.Module:
    settings = dict(dim=2, hidden=32, depth=2)
    settings.update(overrides)
    torch.manual_seed(seed)
    net = build_network("mlp", **settings).to(dtype)
    return randomize_output_layer(net, seed + 1000)


def central_difference(fn, h: float):
    """(fn(+h) - fn(-h)) / (2h): truncation error O(h^2 f'''), rounding error O(eps / h)."""
    return (fn(h) - fn(-h)) / (2 * h)


def replay_time_and_noise(x0: torch.Tensor, p_mean: float, p_std: float, seed: int, sd: float = SIGMA_DATA):
    """Redraw (t, z) the way the objectives do from a generator seeded with `seed`: t first, then z ~ N(0, sd^2).

    Tests that rebuild internal quantities with this also check that the rebuilt loss equals the returned loss, so a
    change of the draw order inside scm.objectives shows up as a clear mismatch, not as a silently wrong test.
    """
    from scm import trigflow

    g = torch.Generator().manual_seed(seed)
    t = trigflow.sample_time(x0.shape[0], p_mean, p_std, sd, g, x0.device, x0.dtype)
    z = torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype) * sd
    return t, z


@pytest.fixture
def gaussian3() -> GaussianData:
    """Gaussian data in D = 3 with a non-zero mean and s = 0.2 != sd, so no closed form degenerates."""
    return GaussianData(torch.tensor([0.6, -0.4, 1.1], dtype=F64), 0.2)



def time_in_input_dtype(net):
    """Call `net` with t cast to x's dtype.

    scm.trigflow.sample_time always draws t in float32, and the time embedding returns t's dtype, so a float64
    network fed straight from the objectives raises a dtype error (see test_objectives_accept_float64_networks).
    Casting t inside the wrapper keeps the float64 checks exact; the cast is part of the function, so torch.func.jvp
    carries the t-tangent through it.
    """
    def F(x, t, class_labels=None):
        return net(x, t.to(x.dtype), class_labels)
    return F


def float64_weight(weight=None):
    """An AdaptiveWeight evaluated in float64 (t cast up first, for the same reason as `time_in_input_dtype`).

    A float32 w makes exp(w) / D round 1/D to float32 (3e-8 relative for D = 3), which would hide behind any 1e-10
    comparison of losses.
    """
    from scm.weighting import AdaptiveWeight

    weight = (AdaptiveWeight() if weight is None else weight).double()

    def w(t):
        return weight(t.double())
    w.module = weight
    return w


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread, then restore the previous setting.

    These tests use tiny tensors; on a small shared CPU, OpenMP's thread hand-off made each conv / group-norm call
    take ~10 ms with 2 threads against ~0.1 ms with 1 (measured: ToyUNet forward 0.75 s vs 0.006 s). Opt-in per module
    via `pytestmark = pytest.mark.usefixtures("single_thread")` so other test files keep their own setting.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

"""Networks (scm/nets): shapes, label dropout as CFG's null class, forward-mode AD, registry errors."""
import pytest
import torch

from conftest import F64, make_mlp, make_toy_unet, randomize_output_layer
from scm.nets import NETWORKS, build_network

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("resolution", [8, 16, 32])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_toy_unet_shapes(resolution, in_channels):
    torch.manual_seed(0)
    net = build_network("toy-unet", resolution=resolution, in_channels=in_channels, channels=16, num_classes=10)
    randomize_output_layer(net, 1)
    x = torch.randn(2, in_channels, resolution, resolution)
    t = torch.tensor([0.3, 1.2])
    with torch.no_grad():
        out = net(x, t, torch.tensor([3, 9]))
        out_uncond = net(x, t)
    assert out.shape == x.shape and out_uncond.shape == x.shape
    assert torch.isfinite(out).all()
    assert (out - out_uncond).abs().max() > 1e-4  # class conditioning reaches the output


def test_toy_unet_output_starts_at_zero():
    """conv_out is zero-initialized (F = 0 at init): this is why the other tests randomize it."""
    net = build_network("toy-unet", resolution=8, channels=16)
    with torch.no_grad():
        assert torch.equal(net(torch.randn(2, 1, 8, 8), torch.rand(2)), torch.zeros(2, 1, 8, 8))


def test_label_dropout_one_equals_unconditional():
    net = make_toy_unet(seed=1, label_dropout=1.0, dtype=torch.float32).train()
    x, t, labels = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 0.7, 1.5]), torch.tensor([0, 4, 9])
    with torch.no_grad():
        dropped = net(x, t, labels)
        uncond = net(x, t, None)
        # Dropped labels are the zero one-hot; the label map has no bias, so this is the same computation bit for bit
        # (dropout = 0 here, so train mode adds no other randomness).
        assert torch.equal(dropped, uncond)
        net.eval()  # label dropout is a training-time operation only
        assert (net(x, t, labels) - uncond).abs().max() > 1e-4


def test_label_dropout_rate_is_respected():
    """With label_dropout = 0.5 in train mode about half the samples come out unconditional."""
    net = make_mlp(seed=2, num_classes=10, label_dropout=0.5).train()
    n = 4000
    x = torch.randn(1, 2, dtype=F64).expand(n, -1)
    t = torch.full((n,), 0.8, dtype=F64)
    labels = torch.full((n,), 3)
    torch.manual_seed(3)
    with torch.no_grad():
        out = net(x, t, labels)
        uncond = net(x[:1], t[:1], None)
    frac = (out - uncond).abs().amax(1).lt(1e-12).double().mean().item()
    # Binomial(4000, 0.5) / 4000 has sd 0.008; 5 sigma = 0.04.
    assert abs(frac - 0.5) < 0.04


def test_jvp_through_toy_unet_on_cpu():
    net = make_toy_unet(seed=4, dropout=0.0, dtype=torch.float32).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.4, 1.1])
    labels = torch.tensor([1, 2])
    out, tangent = torch.func.jvp(lambda a, b: net(a, b, labels), (x, t), (torch.randn_like(x), torch.ones_like(t)))
    assert out.shape == x.shape and tangent.shape == x.shape
    assert torch.isfinite(tangent).all() and tangent.abs().max() > 0
    with torch.no_grad():
        torch.testing.assert_close(out, net(x, t, labels))  # the primal is the plain forward (float32 default tol)


def test_mlp_on_2d():
    net = make_mlp(seed=5, dim=2, hidden=64, depth=3)
    x, t = torch.randn(7, 2, dtype=F64), torch.rand(7, dtype=F64)
    out = net(x, t)
    assert out.shape == (7, 2) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    _, tangent = torch.func.jvp(lambda a, b: net(a, b), (x, t), (torch.ones_like(x), torch.ones_like(t)))
    assert tangent.shape == (7, 2)


def test_build_network_unknown_name():
    with pytest.raises(ValueError, match="unknown network 'resnet-9000'") as info:
        build_network("resnet-9000")
    for name in NETWORKS:  # the message lists what is available
        assert name in str(info.value)

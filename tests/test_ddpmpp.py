"""DDPM++ (EDM's CIFAR-10 network with sCM's changes): size, shapes, F = 0 at init, one-pass JVP == torch.func.jvp."""
import pytest
import torch

from scm.jvp import jvp_dual, jvp_reference
from scm.nets.ddpmpp import DDPMpp

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
TINY = dict(model_channels=16, channel_mult=(1, 2), resolution=8, num_blocks=1, attn_resolutions=(4,))

# EDM's DDPM++ for CIFAR-10 has 55.7 M parameters: "Model capacity (Mparams) 55.7" for the EDM base model on
# unconditional CIFAR-10 in Table 6 of the ADCM paper ("Adaptive Discretization for Consistency Models"), which
# fine-tunes EDM's released checkpoint. (EDM's own table was not retrievable to cite its extra digits.)
PUBLISHED_EDM_DDPMPP = 55.7e6


def count(net) -> int:
    return sum(p.numel() for p in net.parameters())


def block_params(cin: int, cout: int, emb: int, skip: bool, attn: bool, double_norm: bool) -> int:
    """One UNetBlock by hand: norm0, conv0 3x3, affine, [norm1 affine], conv1 3x3, [1x1 skip], [attention]."""
    n = 2 * cin + (9 * cin * cout + cout)
    n += (emb * 2 * cout + 2 * cout) if double_norm else (emb * cout + cout) + 2 * cout
    n += 9 * cout * cout + cout
    n += (cin * cout + cout) if skip else 0
    n += (2 * cout + 3 * cout * cout + 3 * cout + cout * cout + cout) if attn else 0  # norm2, qkv 1x1, proj 1x1
    return n


def hand_count(double_norm: bool, num_classes: int) -> int:
    """The default config (128 channels, mult 2,2,2 so C = 256 at 32, 16, 8; 4 blocks; attention at 16) by hand."""
    N, E, C = 128, 512, 256  # noise-embedding, embedding and block widths
    mapping = (N * E + E) + (E * E + E) + (num_classes * N + N if num_classes else 0)
    conv_in, out = 9 * 3 * N + N, 2 * C + (9 * C * 3 + 3)  # enc 32x32_conv; aux GroupNorm + 3x3 conv to RGB

    def b(cin, skip=True, attn=False):
        return block_params(cin, C, E, skip, attn, double_norm)
    blocks = (
        b(N) + 3 * b(C, skip=False)                 # enc 32x32: 128 -> 256, then 3 x 256 -> 256
        + b(C) + 4 * b(C, skip=False, attn=True)    # enc 16x16: down (1x1 skip as in EDM), 4 blocks with attention
        + b(C) + 4 * b(C, skip=False)               # enc 8x8: down, 4 blocks
        + b(C, skip=False, attn=True) + b(C, skip=False)  # dec 8x8: in0 (attention), in1
        + 5 * b(2 * C)                              # dec 8x8: 5 blocks on [x, skip]
        + b(C) + 4 * b(2 * C) + b(2 * C, attn=True)  # dec 16x16: up, 5 blocks, attention in the last
        + b(C) + 4 * b(2 * C) + b(C + N)            # dec 32x32: up, 5 blocks, the last one takes the conv's skip
    )
    return mapping + conv_in + blocks + out


def test_parameter_count_matches_hand_count_and_edm():
    with torch.device("meta"):
        ours, edm = DDPMpp(), DDPMpp(modulation="edm", num_classes=0)
    n_ours, n_edm = count(ours), count(edm)
    print(f"\nDDPM++ (sCM double norm, 10 classes): {n_ours:,} params; EDM's DDPM++ block, unconditional: {n_edm:,}; "
          f"published EDM DDPM++ CIFAR-10: {PUBLISHED_EDM_DDPMPP / 1e6:.1f} M")
    assert n_ours == hand_count(double_norm=True, num_classes=10) == 60_051_075
    assert n_edm == hand_count(double_norm=False, num_classes=0) == 55_732_739
    assert abs(n_edm / PUBLISHED_EDM_DDPMPP - 1) < 0.01
    # EDM's DDPM++ block adds Linear(emb, C) before an affine GroupNorm (adaptive_scale=False); double norm needs
    # s and b, so each of the 33 blocks has Linear(emb, 2C) and no norm1 affine: E C + C - 2C more each, +7.7 %.
    with torch.device("meta"):
        assert n_ours - count(DDPMpp(modulation="edm")) == 33 * (512 * 256 - 256)


def tiny(seed: int, **overrides) -> DDPMpp:
    """Tiny float64 DDPM++ with every parameter random (non-zero output conv, O(1) residual branches and norms)."""
    torch.manual_seed(seed)
    net = DDPMpp(**{**TINY, **overrides}).to(F64)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for p in net.parameters():
            scale = p[0].numel() ** -0.5 if p.dim() > 1 else 0.3
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * scale)
    return net


def inputs(seed: int, batch: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 8, 8, generator=g, dtype=F64)
    t = 0.1 + 1.3 * torch.rand(batch, generator=g, dtype=F64)
    dx, dt = torch.randn(x.shape, generator=g, dtype=F64), torch.randn(batch, generator=g, dtype=F64)
    return x, t, dx, dt


def test_output_shape_and_zero_at_init():
    torch.manual_seed(0)
    net = DDPMpp(**TINY).to(F64)
    x, t, _, _ = inputs(0)
    out = net(x, t, torch.tensor([0, 3, 9]))
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0
    assert tiny(0)(x, t, None).shape == x.shape  # class_labels=None: the null (zero one-hot) label


def rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("case, settings, train", [
    ("default", {}, False),
    ("fourier + log-sigma", dict(time_embedding="fourier", c_noise="log-sigma"), False),
    ("guidance input", dict(guidance_input=True), False),
    ("train, dropout + label dropout", dict(dropout=0.3, label_dropout=0.5), True),
    ("EDM block", dict(modulation="edm"), False),
])
def test_dual_jvp_equals_torch_func(case, settings, train):
    net = tiny(1, **settings).train(train)
    x, t, dx, dt = inputs(2)
    labels = torch.tensor([1, 4, 7])
    guidance = torch.tensor([1.0, 1.5, 3.0], dtype=F64) if settings.get("guidance_input") else None

    def F(a, b):
        return net(a, b, labels, guidance)

    torch.manual_seed(5)  # the same dropout masks and label drops in both passes
    out_d, tan_d = jvp_dual(F, x, t, dx, dt)
    torch.manual_seed(5)
    out_r, tan_r = jvp_reference(F, x, t, dx, dt)
    assert out_r.norm() > 0.1 and tan_r.norm() > 0.1, "F and its JVP must be non-trivial"
    assert rel(out_d, out_r) < 1e-10 and rel(tan_d, tan_r) < 1e-10, case
    if train:  # the masks really act: another seed gives another F
        torch.manual_seed(6)
        assert rel(F(x, t), out_r) > 1e-3

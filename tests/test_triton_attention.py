"""scm.kernels.triton_attention on the CPU through Triton's interpreter (TRITON_INTERPRET=1).

The kernel is decorated lazily, once per mode, when it is launched (Triton 3.8 picks interpreter vs compiler at
decoration time), so setting the variable per test with monkeypatch is enough, whatever was imported before.
Every output is checked against two float64 references: the explicit softmax-JVP formula and torch.func.jvp of
plain math attention.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

triton = pytest.importorskip("triton")

from scm.kernels import triton_attention as ta  # noqa: E402  (after the importorskip)
from scm.kernels.triton_attention import fused_attention_jvp  # noqa: E402

F64 = torch.float64


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; the interpreter is pure Python
    yield
    torch.set_num_threads(previous)


def explicit_reference(q, k, v, tq, tk, tv, scale):
    """ts = scale (tq k^T + q tk^T), mu_i = sum_j p_ij ts_ij, ty = p tv + (p * (ts - mu)) v, all in float64."""
    q, k, v, tq, tk, tv = (t.to(F64) for t in (q, k, v, tq, tk, tv))
    p = torch.softmax(scale * q @ k.transpose(-1, -2), dim=-1)
    ts = scale * (tq @ k.transpose(-1, -2) + q @ tk.transpose(-1, -2))
    mu = (p * ts).sum(-1, keepdim=True)
    return p @ v, p @ tv + (p * (ts - mu)) @ v


def jvp_reference(q, k, v, tq, tk, tv, scale):
    def attention(q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v
    return torch.func.jvp(attention, tuple(t.to(F64) for t in (q, k, v)), tuple(t.to(F64) for t in (tq, tk, tv)))


def make_inputs(lead, lq, lk, d, seed, dtype=torch.float32, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(*lead, n, d) for n in (lq, lk, lk, lq, lk, lk)]
    q, k, v, tq, tk, tv = (torch.randn(s, generator=g, dtype=F64) for s in shapes)
    return tuple(t.to(dtype) for t in (q * spread, k * spread, v, tq, tk, tv))


def assert_close_rel(actual, expected, rel):
    """Elementwise rtol = rel, and atol = rel * max|expected| so entries near zero do not dominate."""
    torch.testing.assert_close(actual.to(F64), expected, rtol=rel, atol=rel * expected.abs().max().item())


def check(inputs, rel, scale=None):
    y, ty = fused_attention_jvp(*inputs, scale=scale)
    assert y.dtype == ty.dtype == inputs[0].dtype and y.shape == ty.shape == inputs[0].shape
    s = inputs[0].shape[-1] ** -0.5 if scale is None else scale
    y_ex, ty_ex = explicit_reference(*inputs, s)
    y_jvp, ty_jvp = jvp_reference(*inputs, s)
    torch.testing.assert_close(y_ex, y_jvp, rtol=1e-12, atol=1e-12)  # the two references agree
    torch.testing.assert_close(ty_ex, ty_jvp, rtol=1e-12, atol=1e-12)
    for ref_y, ref_ty in ((y_ex, ty_ex), (y_jvp, ty_jvp)):
        assert_close_rel(y, ref_y, rel)
        assert_close_rel(ty, ref_ty, rel)


SHAPES = [  # (leading dims, Lq, Lk, d): lengths below / across / not multiples of the 16-row interpreter blocks
    ((1, 1), 1, 1, 16),
    ((1, 2), 5, 5, 32),
    ((2, 1), 17, 17, 64),
    ((1, 1), 33, 33, 24),
    ((2, 2), 70, 70, 16),
    ((1, 2), 17, 70, 32),
    ((2, 1), 70, 5, 64),
    ((1, 1), 33, 17, 80),
    ((1, 1), 20, 40, 128),
]


@pytest.mark.parametrize("lead, lq, lk, d", SHAPES)
def test_fp32_matches_float64_references(interpret, lead, lq, lk, d):
    check(make_inputs(lead, lq, lk, d, seed=lq * 1000 + lk * 10 + d), rel=1e-5)


def test_peaked_softmax_and_late_row_max(interpret):
    """Large logits, and a row max that keeps moving to later key blocks, exercise the exp(m_old - m_new) rescale."""
    q, k, v, tq, tk, tv = make_inputs((1, 2), 33, 70, 16, seed=3, spread=2.5)
    q[..., 0] = 6.0
    k[..., 0] = torch.linspace(-2.0, 2.0, 70)  # s_ij grows with j: each new key block raises m
    check((q, k, v, tq, tk, tv), rel=1e-5)


def test_custom_scale_and_layouts(interpret):
    """An explicit scale, 2-D and 4-D-lead inputs, and non-contiguous (transposed) views."""
    check(make_inputs((), 17, 9, 32, seed=4), rel=1e-5, scale=0.3)
    check(make_inputs((2, 1, 2), 5, 18, 16, seed=5), rel=1e-5)
    g = torch.Generator().manual_seed(6)
    views = tuple(torch.randn(2, n, 3, 32, generator=g).transpose(1, 2) for n in (17, 33, 33, 17, 33, 33))
    assert not views[0].is_contiguous()
    check(views, rel=1e-5)


@pytest.mark.parametrize("dtype, rel", [(torch.float16, 4e-3), (torch.bfloat16, 2e-2), (F64, 1e-5)])
def test_other_dtypes(interpret, dtype, rel):
    """fp16 runs natively (P rounded to fp16 for the p v dots); bf16 runs in fp32 under the interpreter; fp64 in fp32."""
    check(make_inputs((1, 2), 33, 17, 64, seed=7, dtype=dtype), rel=rel)


def test_outputs_carry_no_gradient(interpret):
    inputs = [t.requires_grad_() for t in make_inputs((1, 1), 5, 5, 16, seed=8)]
    y, ty = fused_attention_jvp(*inputs)
    assert not y.requires_grad and not ty.requires_grad


def test_empty_queries_and_bad_arguments(interpret):
    q, k, v, tq, tk, tv = make_inputs((1, 1), 0, 5, 16, seed=9)
    y, ty = fused_attention_jvp(q, k, v, tq, tk, tv)
    assert y.shape == ty.shape == (1, 1, 0, 16)
    q, k, v, tq, tk, tv = make_inputs((1, 1), 5, 0, 16, seed=9)
    with pytest.raises(ValueError, match="zero keys"):
        fused_attention_jvp(q, k, v, tq, tk, tv)
    q, k, v, tq, tk, tv = make_inputs((1, 1), 5, 7, 16, seed=9)
    with pytest.raises(ValueError, match="shape mismatch"):
        fused_attention_jvp(q, k, v, tq, tk[..., :6, :], tv)
    with pytest.raises(ValueError, match="dtype"):
        fused_attention_jvp(q, k, v.double(), tq, tk, tv)


def test_cpu_without_interpreter_errors_then_interpreter_works(monkeypatch):
    """Order independence: a call in compiled mode first must not pin the kernel to that mode."""
    inputs = make_inputs((1, 1), 5, 5, 16, seed=10)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="CUDA.*TRITON_INTERPRET=1"):
        fused_attention_jvp(*inputs)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    check(inputs, rel=1e-5)


def test_module_imports_without_triton(monkeypatch):
    """With triton unimportable the module still imports, and calling it says that triton is missing."""
    for name in [m for m in sys.modules if m == "triton" or m.startswith("triton.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    spec = importlib.util.spec_from_file_location("_ta_without_triton", ta.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.triton is None
    with pytest.raises(RuntimeError, match="triton"):
        module.fused_attention_jvp(*make_inputs((1, 1), 2, 2, 16, seed=11))


def test_interpreter_set_before_triton_import():
    """The other order: TRITON_INTERPRET=1 already set when triton is first imported (fresh interpreter process)."""
    code = textwrap.dedent("""
        import torch
        from scm.kernels.triton_attention import fused_attention_jvp
        g = torch.Generator().manual_seed(0)
        q, k, v, tq, tk, tv = (torch.randn(1, 2, n, 24, generator=g, dtype=torch.float64) for n in (17, 9, 9, 17, 9, 9))
        y, ty = fused_attention_jvp(*(t.float() for t in (q, k, v, tq, tk, tv)))
        f = lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2) * 24 ** -0.5, dim=-1) @ v
        y_ref, ty_ref = torch.func.jvp(f, (q, k, v), (tq, tk, tv))
        err = max(((a.double() - b).abs().max() / b.abs().max()).item() for a, b in ((y, y_ref), (ty, ty_ref)))
        assert err < 1e-5, err
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]

"""The functional ops every network here is written in; each takes a tensor or a `Dual` (primal + tangent).

On plain tensors they are ordinary PyTorch calls (autograd and `torch.func.jvp` see nothing special). On a `Dual` they
carry the tangent by explicit rules, so one forward pass yields F and its JVP at about the cost of a forward on a
doubled batch: primal and tangent sit in one [2B, ...] tensor, so a conv or linear layer runs once on both (the bias
only on the primal half), and each nonlinearity adds one fused kernel for its tangent (PyTorch's backward kernels,
which equal the JVP wherever the Jacobian is symmetric: elementwise maps, group norm). The tangent pass runs under
no grad, so in-place writes are safe there.
"""
from typing import Callable

import torch
import torch.nn.functional as F

from .. import kernels

aten = torch.ops.aten


class Dual:
    """A primal x and its tangent dx stored as one batch [x; dx] of size 2B."""

    __slots__ = ("both", "batch", "_halves")

    def __init__(self, both: torch.Tensor):
        self.both, self.batch, self._halves = both, both.shape[0] // 2, None

    @classmethod
    def of(cls, primal: torch.Tensor, tangent: torch.Tensor) -> "Dual":
        return cls(torch.cat([primal, tangent.to(primal.dtype)]))

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._halves is None:  # made once: small ops dominate the tangent pass's overhead
            self._halves = (self.both[: self.batch], self.both[self.batch:])
        return self._halves

    @property
    def primal(self) -> torch.Tensor:
        return self._views()[0]

    @property
    def tangent(self) -> torch.Tensor:
        return self._views()[1]

    @property
    def shape(self) -> torch.Size:
        return self.primal.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.both.dtype

    def to(self, *args, **kwargs) -> "Dual":
        return Dual(self.both.to(*args, **kwargs))



Value = torch.Tensor | Dual


def is_dual(x) -> bool:
    return isinstance(x, Dual)


def primal(x: Value) -> torch.Tensor:
    return x.primal if is_dual(x) else x


def _empty_pair(p: torch.Tensor) -> Dual:
    """An uninitialized Dual shaped like p, to be written half by half."""
    return Dual(torch.empty((2 * p.shape[0], *p.shape[1:]), dtype=p.dtype, device=p.device))


def _as_dual(x: Value) -> Dual:
    return x if is_dual(x) else Dual.of(x, torch.zeros_like(x))


# ---- linear maps: applied once to [x; dx] ---------------------------------------------------------------------

def linear_map(x: Value, fn: Callable[[torch.Tensor], torch.Tensor]) -> Value:
    """Any map linear in x that treats batch entries independently (pooling, resampling, reshapes, constant scales)."""
    return Dual(fn(x.both)) if is_dual(x) else fn(x)


def _add_bias_to_primal(y: torch.Tensor, bias: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    if bias is not None:
        y[: y.shape[0] // 2] += bias.to(y.dtype).view(shape)
    return y


def linear(x: Value, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Value:
    if not is_dual(x):
        return F.linear(x, weight, bias)
    return Dual(_add_bias_to_primal(F.linear(x.both, weight), bias, (-1,)))


def conv2d(x: Value, weight: torch.Tensor, bias: torch.Tensor | None = None, padding: int = 0,
           gain: float = 1.0) -> Value:
    """conv(x, gain w) + gain b: a constant output scale folded into the (small) weights, not the activations."""
    if gain != 1.0:
        weight, bias = weight * gain, (bias * gain if bias is not None else None)
    if not is_dual(x):
        return F.conv2d(x, weight, bias, padding=padding)
    return Dual(_add_bias_to_primal(F.conv2d(x.both, weight, padding=padding), bias, (-1, 1, 1)))


def add(a: Value, b: Value, alpha: float = 1.0) -> Value:
    """a + alpha b in one pass; a Python number is a constant (zero tangent)."""
    if not is_dual(a) and not is_dual(b):
        return torch.add(a, b, alpha=alpha) if isinstance(a, torch.Tensor) else a + alpha * b
    if isinstance(b, (int, float)) or isinstance(a, (int, float)):
        dual, const = (a, alpha * b) if is_dual(a) else (b, a)
        both = dual.both.clone() if is_dual(a) else dual.both * alpha
        both[: dual.batch] += const
        return Dual(both)
    return Dual(torch.add(_as_dual(a).both, _as_dual(b).both, alpha=alpha))


def cat(xs: list[Value], dim: int = 1) -> Value:
    """Concatenate along a non-batch dim; plain inputs get a zero tangent."""
    assert dim != 0, "cat along the batch would mix primal and tangent"
    if not any(is_dual(x) for x in xs):
        return torch.cat(xs, dim)
    return Dual(torch.cat([_as_dual(x).both for x in xs], dim))


# ---- products and nonlinearities: explicit tangent rules ------------------------------------------------------

def mul(x: Value, factor: torch.Tensor) -> Value:
    """x times a per-sample constant (no tangent of its own, e.g. a dropout mask): the same factor on both halves."""
    if not is_dual(x):
        return x * factor
    both = x.both.view(2, x.batch, *x.both.shape[1:]) * factor  # [2, B, ...]: factor [B, ...] broadcasts
    return Dual(both.flatten(0, 1))


def silu(x: Value, consume: bool = False) -> Value:
    """silu; `consume=True` lets the tangent pass overwrite x (a temporary nobody reads again), saving two buffers."""
    if not is_dual(x):
        return F.silu(x)
    p, out = x.primal, (x if consume else _empty_pair(x.primal))
    aten.silu_backward.grad_input(x.tangent, p, grad_input=out.tangent)  # silu'(x) dx, one fused kernel
    aten.silu.out(p, out=out.primal)
    return out


def unary(x: Value, fn: Callable, derivative: Callable) -> Value:
    """An elementwise fn with its derivative, for the small tensors of the time embedding."""
    if not is_dual(x):
        return fn(x)
    return Dual(torch.cat([fn(x.primal), derivative(x.primal) * x.tangent]))


def _group_norm_pair(x: Dual, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm(x), its tangent) for a group norm without affine."""
    p = x.primal
    n, c, hw = p.shape[0], p.shape[1], p[0, 0].numel()
    y, mean, rstd = torch.native_group_norm(p, None, None, n, c, hw, groups, eps)
    # The Jacobian of (x - mean) / std within a group is symmetric, so its backward kernel gives the JVP.
    dy = aten.native_group_norm_backward(x.tangent, p, mean, rstd, None, n, c, hw, groups, [True, False, False])[0]
    return y, dy


def group_norm(x: Value, groups: int, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-5) -> Value:
    if not is_dual(x):
        return F.group_norm(x, groups, weight, bias, eps)
    y, dy = _group_norm_pair(x, groups, eps)
    if weight is None:
        return Dual(torch.cat([y, dy]))
    shape = (-1,) + (1,) * (y.dim() - 2)
    s = _per_sample(weight.to(y.dtype).view(shape), y)
    b = _per_sample(bias.to(y.dtype).view(shape) if bias is not None else 0, y)
    return _scale_shift_into(_empty_pair(y), y, dy, s, b)


def _scale_shift_into(out: Dual, y: torch.Tensor, dy: torch.Tensor, s: Dual, b: Dual) -> Dual:
    torch.addcmul(b.primal, y, s.primal, out=out.primal)
    torch.addcmul(b.tangent, y, s.tangent, out=out.tangent).addcmul_(dy, s.primal)
    return out


def _per_sample(v: Value, like: torch.Tensor) -> Dual:
    """A per-sample or per-channel scale / shift as a Dual of batch B (a constant gets a zero tangent)."""
    if is_dual(v):
        return v
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    v = v.view((1,) * (like.dim() - v.dim()) + tuple(v.shape))
    v = v.expand(like.shape[0], *v.shape[1:])
    return Dual.of(v, torch.zeros_like(v))


def scale_shift(x: Value, s: Value, b: Value) -> Value:
    """x * s + b with s, b per sample or per channel; d = dx s + x ds + db into one output buffer."""
    if not any(is_dual(v) for v in (x, s, b)):
        return torch.addcmul(torch.as_tensor(b, dtype=x.dtype, device=x.device), x, s)
    x = _as_dual(x)
    return _scale_shift_into(_empty_pair(x.primal), x.primal, x.tangent,
                             _per_sample(s, x.primal), _per_sample(b, x.primal))


def adaptive_group_norm(x: Value, groups: int, s: Value, b: Value, eps: float = 1e-5) -> Value:
    """norm(x) * s + b with s, b per sample and channel (adaptive norms).

    The tangent folds the group norm's JVP dy = r (dx - mean(dx) - y mean(y dx)) (r = 1 / std, per group) into
    per-(sample, channel) coefficients: d out = dx (s r) + y (ds - s r mean(y dx)) + (db - s r mean(dx)), two fused
    multiply-adds after two reductions, with no buffer for dy.
    """
    if not is_dual(x):
        return scale_shift(F.group_norm(x, groups, eps=eps), s, b)
    p, dp = x.primal, x.tangent
    s, b = _per_sample(s, p), _per_sample(b, p)
    n, c = p.shape[:2]
    y, _, r = torch.native_group_norm(p, None, None, n, c, p[0, 0].numel(), groups, eps)
    yg, tg = y.reshape(n * groups, -1), dp.reshape(n * groups, -1)
    mean_t, mean_yt = tg.mean(1), (yg * tg).mean(1)

    def per_channel(v):  # [n * groups] -> [n, c, 1, 1]
        return v.reshape(n, groups, 1).expand(n, groups, c // groups).reshape(n, c, *[1] * (p.dim() - 2)).to(p.dtype)

    A = s.primal * per_channel(r)  # s r
    out = _empty_pair(p)
    torch.addcmul(b.primal, y, s.primal, out=out.primal)
    torch.addcmul(b.tangent - A * per_channel(mean_t), y, s.tangent - A * per_channel(mean_yt),
                  out=out.tangent).addcmul_(dp, A)
    return out


def pixel_norm(x: Value, dim: int = 1, eps: float = 1e-4) -> Value:
    """pnorm: x / r with r = sqrt(mean(x^2) + eps) along `dim`; tangent (dx - y mean(y dx)) / r."""
    if not is_dual(x):
        return x / torch.sqrt(x.pow(2).mean(dim=dim, keepdim=True) + eps)
    p, dp, out = x.primal, x.tangent, _empty_pair(x.primal)
    r = torch.sqrt(p.pow(2).mean(dim=dim, keepdim=True) + eps)
    y = torch.div(p, r, out=out.primal)
    torch.div(dp - y * (y * dp).mean(dim=dim, keepdim=True), r, out=out.tangent)
    return out


def clamp(x: Value, limit: float) -> Value:
    """clip to [-limit, limit]; the tangent is zero where the clip is active."""
    if not is_dual(x):
        return x.clamp(-limit, limit)
    out = _empty_pair(x.primal)
    torch.clamp(x.primal, -limit, limit, out=out.primal)
    aten.hardtanh_backward.grad_input(x.tangent, x.primal, -limit, limit, grad_input=out.tangent)
    return out


def segment_pixel_norm(x: Value, segment: torch.Tensor, sizes: torch.Tensor, eps: float = 1e-4) -> Value:
    """pnorm over consecutive segments of the last dim of a [B, N] tensor (segment[i] = the segment of column i):
    every adaptive norm's s(t) and b(t) normalized in a few ops instead of a few ops per norm."""
    def segment_mean(a):  # [B, N] -> [B, segments]
        sums = torch.zeros(a.shape[0], len(sizes), dtype=a.dtype, device=a.device).index_add_(1, segment, a)
        return sums / sizes.to(a.dtype)

    def rms(a):  # back to one value per column
        return torch.sqrt(segment_mean(a * a) + eps).index_select(1, segment)

    if not is_dual(x):
        return x / rms(x)
    p, dp, out = x.primal, x.tangent, _empty_pair(x.primal)
    r = rms(p)
    y = torch.div(p, r, out=out.primal)
    torch.div(dp - y * segment_mean(y * dp).index_select(1, segment), r, out=out.tangent)
    return out


def dropout(x: Value, p: float, training: bool) -> Value:
    """Inverted dropout whose mask comes from one `bernoulli_` over the primal's shape in both modes, so replaying
    the RNG state gives the tangent pass and the gradient pass the same mask."""
    if not training or p == 0:
        return x
    shape = primal(x).shape
    ref = primal(x)
    keep = torch.empty(shape, dtype=ref.dtype, device=ref.device).bernoulli_(1 - p) / (1 - p)
    return mul(x, keep)


def attention(q: Value, k: Value, v: Value) -> Value:
    """softmax(q k^T / sqrt(d)) v over [..., L, d]; on Duals the fused forward+JVP (Triton on CUDA)."""
    if not any(is_dual(x) for x in (q, k, v)):
        return kernels.attention(q, k, v)
    q, k, v = (_as_dual(x) for x in (q, k, v))
    out = _empty_pair(q.primal)
    kernels.attention_jvp(q.primal, k.primal, v.primal, q.tangent, k.tangent, v.tangent, (out.primal, out.tangent))
    return out

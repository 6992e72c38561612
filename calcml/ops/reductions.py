"""Reductions and normalisations: sum, mean, var, std, max, min, prod, logsumexp, softmax,
log_softmax.

Axes are normalised to negative numbers before binding, so that the same rule serves tangents
with extra leading batch axes.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from .._core.registry import Sample, defprim, register
from ._base import (
    _EMPTY,
    Box,
    Tensor,
    call,
    const_as,
    ndim_of,
    norm_axes,
    op_error,
    raw,
    shape_of,
    tensor_call,
    tensor_call1,
)
from .elementwise import exp, sqrt, where

__all__ = ["sum", "mean", "var", "std", "max", "min", "prod", "logsumexp", "softmax",
           "log_softmax", "sum_to", "softmax_cross_entropy"]


def _kshape(x, axis):
    """Shape of ``x`` with the reduced axes kept as length 1."""
    s = list(shape_of(x))
    for a in axis:
        s[a] = 1
    return tuple(s)


def _keep(g, x, axis, keepdims):
    """Reshape a reduced value back to keepdims form (a full reduction's scalar broadcasts
    as it is)."""
    if keepdims or len(axis) == ndim_of(x):
        return g
    return reshape(g, _kshape(x, axis))


def _reduce_wrapper(prim, name, np_fn, doc):
    method = np_fn.__name__
    direct = prim.impl_saving is None
    full = {}  # ndim -> the params of a reduction over every axis (never mutated)

    def op(x, axis=None, keepdims=False):
        if not isinstance(x, Box):
            try:
                if type(x) is np.ndarray:
                    return getattr(x, method)(axis=axis, keepdims=keepdims)
                return np_fn(x, axis=axis, keepdims=keepdims)
            except (ValueError, TypeError) as e:
                raise op_error(name, (x,), e) from None
        if type(x) is Tensor and direct:
            if axis is None and keepdims is False:  # the usual full reduction: shared params
                n = x._value.ndim
                params = full.get(n)
                if params is None:
                    params = full[n] = {"axis": tuple(range(-n, 0)), "keepdims": False}
            else:
                params = {"axis": norm_axes(axis, x._value.ndim, name),
                          "keepdims": bool(keepdims)}
            return tensor_call1(prim, x, params)
        axes = norm_axes(axis, ndim_of(x), name)
        return call(prim, (x,), {"axis": axes, "keepdims": bool(keepdims)})

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    return op


def _red_samples(rng, pos=False):
    gen = (lambda s: rng.uniform(0.5, 1.5, size=s)) if pos else (lambda s: rng.normal(size=s))
    return [
        Sample((gen((3, 4)),)),
        Sample((gen((3, 4)),), {"axis": 0}),
        Sample((gen((2, 3, 4)),), {"axis": (0, 2), "keepdims": True}),
        Sample((gen((2, 3, 4)),), {"axis": -1}),
    ]


# --- sum ----------------------------------------------------------------------------------

def _sum_vjp(g, out, x, axis, keepdims):
    if type(g) is np.ndarray and g.ndim == 0 and type(x) is np.ndarray:
        return backend.broadcast_to(g, x.shape)  # a full sum, plain arrays: one view
    return broadcast_to(_keep(g, x, axis, keepdims), shape_of(x))


_sum = defprim(
    "sum", lambda x, axis, keepdims: x.sum(axis=axis, keepdims=keepdims),
    vjps=(_sum_vjp,),
    jvps=(lambda t, out, x, axis, keepdims: sum(t, axis=axis, keepdims=keepdims),),
)
sum = register("sum", _reduce_wrapper(_sum, "sum", np.sum, """Sum over ``axis`` (all by default).

Notes
-----
The derivative of a sum with respect to each summand is 1: the reverse rule broadcasts the
cotangent back over the reduced axes.
"""), _red_samples)


_add_reduce = np.add.reduce
_max_reduce = np.maximum.reduce


def sum_to(g, shape):
    """Sum ``g`` down to ``shape`` (the adjoint of broadcasting ``shape`` up to ``g.shape``)."""
    if type(g) is np.ndarray:  # the common case: leading axes summed away (a bias)
        gs = g.shape
        if gs == shape:
            return g
        n = len(gs) - len(shape)
        if n > 0 and gs[n:] == shape:  # (add.reduce is what ndarray.sum calls, one frame less)
            return _add_reduce(g, 0) if n == 1 else _add_reduce(g, tuple(range(n)))
    gs = tuple(shape_of(g))
    shape = tuple(shape)
    if gs == shape:
        return g
    n = len(gs) - len(shape)
    axes = tuple(range(n)) + tuple(n + i for i, s in enumerate(shape) if s == 1 and gs[n + i] != 1)
    if not isinstance(g, Box):  # plain values: straight to the array's own methods
        r = g.sum(axis=axes, keepdims=True) if axes else g
        return r.reshape(shape) if r.shape != shape else r
    if axes:
        g = sum(g, axis=axes, keepdims=True)
    return reshape(g, shape) if tuple(shape_of(g)) != shape else g


def _reciprocal(n):
    """1/n, and NumPy's answer (nan, through inf·0) for an empty reduction or ddof ≥ n."""
    return 1.0 / n if n > 0 else math.inf


def _count(x, axis):
    s = shape_of(x)
    return math.prod(s[a] for a in axis)


def _mean_vjp(g, out, x, axis, keepdims):
    if type(g) is np.ndarray and g.ndim == 0 and type(x) is np.ndarray and x.size:
        # a full mean, plain arrays: g/n (in g's dtype, NumPy's scalar rules) seen as x's shape
        return backend.broadcast_to(g * _reciprocal(x.size), x.shape)
    return broadcast_to(_keep(g, x, axis, keepdims) * _reciprocal(_count(x, axis)), shape_of(x))


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _mean_impl(x, axis, keepdims):
    """NumPy's mean.  For float32/float64 arrays it is the sum over the axes divided by the
    count, which is all ``ndarray.mean`` computes for them; called directly, without NumPy's
    Python-level bookkeeping, which costs several times the arithmetic on small arrays."""
    if type(x) is np.ndarray and x.dtype in _FLOATS and x.size:  # (empty: NumPy's warning)
        s = _add_reduce(x, axis, None, None, keepdims)
        return s / (x.size // s.size)  # the count of each mean: the product of reduced axes
    return x.mean(axis=axis, keepdims=keepdims)


_mean = defprim(
    "mean", _mean_impl,
    vjps=(_mean_vjp,),
    jvps=(lambda t, out, x, axis, keepdims: mean(t, axis=axis, keepdims=keepdims),),
)


def mean(x, axis=None, keepdims=False):
    """Arithmetic mean over ``axis``.

    Notes
    -----
    mean = sum / n, so each element's derivative is 1/n: the reverse rule broadcasts g/n back
    over the reduced axes.  A primitive of its own (one node, where sum-then-scale would record
    two): every batch-mean loss ends in one.
    """
    if not isinstance(x, Box):
        try:
            if type(x) is np.ndarray:
                return _mean_impl(x, axis, keepdims)
            return np.mean(x, axis=axis, keepdims=keepdims)
        except (ValueError, TypeError) as e:  # AxisError is a ValueError
            raise op_error("mean", (x,), e) from None
    axes = norm_axes(axis, ndim_of(x), "mean")
    return call(_mean, (x,), {"axis": axes, "keepdims": bool(keepdims)})


register("mean", mean, _red_samples)


def var(x, axis=None, ddof=0, keepdims=False):
    """Variance over ``axis`` with ``ddof`` delta degrees of freedom, like ``numpy.var``.

    Notes
    -----
    var = Σ (x - x̄)² / (n - ddof); d var / d x_i = 2 (x_i - x̄) / (n - ddof) (the terms
    through x̄ cancel because Σ (x - x̄) = 0).
    """
    if not isinstance(x, Box):
        try:
            return np.var(x, axis=axis, ddof=ddof, keepdims=keepdims)
        except (ValueError, TypeError) as e:
            raise op_error("var", (x,), e) from None
    axes = norm_axes(axis, ndim_of(x), "var")
    d = x - mean(x, axis=axes, keepdims=True)
    return sum(d * d, axis=axes, keepdims=keepdims) * _reciprocal(_count(x, axes) - ddof)


register("var", var, lambda rng: _red_samples(rng) + [
    Sample((rng.normal(size=(5, 3)),), {"axis": 0, "ddof": 1})], primitive=False)


def std(x, axis=None, ddof=0, keepdims=False):
    """Standard deviation: ``sqrt(var(x, axis, ddof))``.

    Notes
    -----
    d std = d var / (2 std); infinite where all values along the axis are equal.
    """
    if not isinstance(x, Box):
        try:
            return np.std(x, axis=axis, ddof=ddof, keepdims=keepdims)
        except (ValueError, TypeError) as e:
            raise op_error("std", (x,), e) from None
    axis = norm_axes(axis, ndim_of(x), "std")  # checked here, so an error names std
    return sqrt(var(x, axis=axis, ddof=ddof, keepdims=keepdims))


register("std", std, _red_samples, primitive=False)


# --- max, min: the derivative is shared equally among tied extreme values -------------------

def _tie_weights(x, out, axis, keepdims):
    hit = x == (out if keepdims else reshape(out, _kshape(x, axis)))
    return const_as(hit / sum(hit, axis=axis, keepdims=True), x)


def _extreme(name, np_fn):
    prim = defprim(
        name, lambda x, axis, keepdims: getattr(x, name)(axis=axis, keepdims=keepdims),
        vjps=(lambda g, out, x, axis, keepdims:
              _keep(g, x, axis, keepdims) * _tie_weights(x, out, axis, keepdims),),
        jvps=(lambda t, out, x, axis, keepdims:
              sum(t * _tie_weights(x, out, axis, keepdims), axis=axis, keepdims=keepdims),),
    )
    doc = f"""The {name}imum over ``axis`` (NumPy's ``{name}``/``a{name}``).

    Notes
    -----
    The derivative is 1 at the extreme element and 0 elsewhere; when several elements tie,
    each gets 1/(number tied).
    """
    return _reduce_wrapper(prim, name, np_fn, doc)


max = register("max", _extreme("max", np.max), _red_samples)
min = register("min", _extreme("min", np.min), _red_samples)


# --- prod ---------------------------------------------------------------------------------

def _prod_others(x, out, axis, keepdims):
    """d prod / d x_i = the product of the *other* entries along ``axis`` (exclusive product).

    ``prod / x_i`` when no entry is zero.  Otherwise the zeros are set aside: the product of the
    other non-zero entries (a product without zeros, divided by the entry) times the product of
    the other zero entries, kept as expressions in those entries so the rule differentiates
    again: 1 if there is none, the one other zero itself (its sum) if there is one, else 0.
    Exact to second order for any number of zeros per reduced slice.
    """
    zero = raw(x) == 0
    if not zero.any():
        return _keep(out, x, axis, keepdims) / x
    n0 = zero.sum(axis=axis, keepdims=True)  # zeros per reduced slice (a constant)
    safe = where(zero, 1.0, x)
    rest = prod(safe, axis=axis, keepdims=True) / safe  # the other non-zero entries
    zs = sum(where(zero, x, 0.0), axis=axis, keepdims=True)  # the zeros (value 0, with derivative)
    others0 = where(zero, where(n0 == 1, 1.0, where(n0 == 2, zs - x, 0.0)),  # the other zeros
                    where(n0 == 0, 1.0, where(n0 == 1, zs, 0.0)))
    return rest * others0


_prod = defprim(
    "prod", lambda x, axis, keepdims: x.prod(axis=axis, keepdims=keepdims),
    vjps=(lambda g, out, x, axis, keepdims:
          _keep(g, x, axis, keepdims) * _prod_others(x, out, axis, keepdims),),
    jvps=(lambda t, out, x, axis, keepdims:
          sum(t * _prod_others(x, out, axis, keepdims), axis=axis, keepdims=keepdims),),
)
prod = register("prod", _reduce_wrapper(_prod, "prod", np.prod, """Product over ``axis``.

Notes
-----
d prod / d x_i = ∏_{j≠i} x_j, the product of the other entries: prod / x_i when no entry is
zero; with zeros, the rule multiplies the other entries instead of dividing, so the gradient is
finite (at [0, 2, 3] it is [6, 0, 0]) and second derivatives are exact too.
"""), lambda rng: _red_samples(rng, pos=True))


# --- logsumexp, softmax, log_softmax (fused for stability) --------------------------------

def _lse_impl(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    s = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return s if keepdims else np.squeeze(s, axis=axis)


_lse = defprim(
    "logsumexp", _lse_impl,
    vjps=(lambda g, out, x, axis, keepdims:
          _keep(g, x, axis, keepdims) * exp(x - _keep(out, x, axis, keepdims)),),
    jvps=(lambda t, out, x, axis, keepdims:
          sum(t * exp(x - _keep(out, x, axis, keepdims)), axis=axis, keepdims=keepdims),),
)


def logsumexp(x, axis=None, keepdims=False):
    """log Σ exp(x) over ``axis``, without overflow (the maximum is subtracted first).

    Notes
    -----
    d/dx_i logsumexp(x) = softmax(x)_i.
    """
    x_ = x if isinstance(x, Box) else backend.asarray(x)
    axes = norm_axes(axis, ndim_of(x_), "logsumexp")
    return call(_lse, (x_,), {"axis": axes, "keepdims": bool(keepdims)})


register("logsumexp", logsumexp, lambda rng: _red_samples(rng) + [
    Sample((np.array([1000.0, 1001.0, 999.0]),))])


def _one_axis(axis, x, name):
    return norm_axes(axis, ndim_of(x), name)


def _softmax_impl(x, axis):
    e = backend.get_xp(x).exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)  # e is a fresh array
    return e


_softmax = defprim(
    "softmax", _softmax_impl,
    vjps=(lambda g, out, x, axis: out * (g - sum(g * out, axis=axis, keepdims=True)),),
    jvps=(lambda t, out, x, axis: out * (t - sum(t * out, axis=axis, keepdims=True)),),
)


def softmax(x, axis=-1):
    """exp(x) / Σ exp(x) along ``axis``, computed with the maximum subtracted.

    Notes
    -----
    With s = softmax(x): ds_i/dx_j = s_i (δ_ij - s_j), so the VJP is s ⊙ (g - ⟨g, s⟩).
    """
    x_ = x if isinstance(x, Box) else backend.asarray(x)
    return call(_softmax, (x_,), {"axis": _one_axis(axis, x_, "softmax")})


def _log_softmax_impl(x, axis):
    # (x - m) - log Σ exp(x - m): subtracting the maximum first keeps large logits exact
    # (x - (m + log Σ) would round m + log Σ, e.g. 1e4 + log 2 in float32).
    if type(x) is np.ndarray and x.size:  # the reductions np.max/np.sum make, called directly
        m = _max_reduce(x, axis, None, None, True)
        z = x - np.where(np.isfinite(m), m, 0.0)
        return z - np.log(_add_reduce(np.exp(z), axis, None, None, True))
    m = np.max(x, axis=axis, keepdims=True)
    z = x - np.where(np.isfinite(m), m, 0.0)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def _log_softmax_vjp(g, out, x, axis):
    if type(g) is np.ndarray and type(out) is np.ndarray:  # plain arrays: the same, directly
        return g - np.exp(out) * _add_reduce(g, axis, None, None, True)
    return g - exp(out) * sum(g, axis=axis, keepdims=True)


_log_softmax = defprim(
    "log_softmax", _log_softmax_impl,
    vjps=(_log_softmax_vjp,),
    jvps=(lambda t, out, x, axis: t - sum(t * exp(out), axis=axis, keepdims=True),),
)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis``: log-probabilities, finite for any finite logits.

    Notes
    -----
    d/dx_j log softmax(x)_i = δ_ij - softmax(x)_j.
    """
    x_ = x if isinstance(x, Box) else backend.asarray(x)
    return call(_log_softmax, (x_,), {"axis": _one_axis(axis, x_, "log_softmax")})


def _sm_samples(rng):
    return [Sample((rng.normal(size=(3, 4)),)), Sample((rng.normal(size=(3, 4)),), {"axis": 0}),
            Sample((rng.normal(size=(2, 3, 4)),), {"axis": (1,)})]


register("softmax", softmax, _sm_samples)
register("log_softmax", log_softmax, _sm_samples)


# --- softmax cross-entropy with integer labels (fused) ---------------------------------------
# The classifier's loss on every training step: one primitive instead of a one-hot matrix, a
# product, a sum and a scaling, each with a node and a backward step.

def _one_hot(labels, like):
    """The constant one-hot matrix of ``labels`` over the last axis of ``like``, in its dtype."""
    z = raw(like)
    xp = backend.get_xp(z)
    return (raw(labels)[..., None] == xp.arange(z.shape[-1])).astype(z.dtype)


def _sce_limit_logits(z):
    """``z`` shifted row by row for the guarded path: finite row maxima subtracted, and a row
    whose maximum is +inf replaced by its limit (0 at the +inf entries, -inf elsewhere).

    Notes
    -----
    As z_j → +inf for the k entries j ∈ K of a row (at one rate, the others fixed),
    softmax(z) → 1/k on K and 0 elsewhere, so log softmax(z) → -log k on K and -inf elsewhere:
    exactly log softmax of this replacement row.  A row of -inf only has no limit (0/0) and
    stays -inf, giving NaN; NaN logits stay NaN.
    """
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        zz = z - np.where(np.isfinite(m), m, 0.0)
    top = m == np.inf
    if top.any():
        limit = np.where(z == np.inf, 0.0, -np.inf).astype(z.dtype)
        zz = np.where(top, limit, zz)
    return zz


_UNSIGNED = {np.dtype(s): np.dtype(u) for s, u in
             ((np.int8, np.uint8), (np.int16, np.uint16), (np.int32, np.uint32),
              (np.int64, np.uint64))}


def labels_below(v, C):
    """Whether every integer label in ``v`` lies in 0..C-1, with one reduction: read as
    unsigned, a negative label is huge (at least 2^(bits-1)).  When C is larger than that
    (int8 labels for 200 classes), every non-negative label is below C and only the sign
    is checked."""
    dt = v.dtype
    if dt.kind == "i":
        if C > (1 << (8 * dt.itemsize - 1)):
            return int(v.min()) >= 0
        v = v.view(_UNSIGNED.get(dt) or dt.str.replace("i", "u"))
    if type(v) is np.ndarray:  # what ndarray.max calls, without its Python wrapper
        return int(_max_reduce(v, axis=None)) < C
    return int(v.max()) < C


def _sce_flat_labels(z, labels):
    """The positions of the labelled logits in ``z.reshape(-1)``: label + C·row, after
    checking that every label is in 0..C-1 (an ``IndexError`` naming the range if not; the
    loss functions check first and say more)."""
    C = z.shape[-1]
    lab = labels.reshape(-1)
    if lab.dtype.kind not in "iu":
        raise IndexError(f"labels must be integers, got dtype {lab.dtype}")
    if lab.size and not labels_below(lab, C):
        raise IndexError(f"labels must be in 0..{C - 1} for {C} classes")
    if lab.dtype != np.intp:
        lab = lab.astype(np.intp)
    if type(lab) is np.ndarray and lab.size <= 8192:  # a mini-batch: C·arange(rows) kept
        key = (lab.size, C)
        starts = _ROW_STARTS.get(key)
        if starts is None:
            if len(_ROW_STARTS) >= 64:
                _ROW_STARTS.clear()
            starts = _ROW_STARTS[key] = np.arange(0, lab.size * C, C, dtype=np.intp)
            starts.flags.writeable = False
        return lab + starts
    return lab + backend.get_xp(lab).arange(0, lab.size * C, C, dtype=lab.dtype)


#: (rows, C) -> C·arange(rows) for _sce_flat_labels: at most 64 arrays of at most 8,192
#: entries (4 MiB), emptied when full.
_ROW_STARTS: dict = {}


def _row_max(z):
    """max(z, axis=-1, keepdims=True).  With a few classes, the maxima of a 2-D NumPy ``z``
    are taken down the rows of a contiguous copy of zᵀ: one vectorised pass instead of one
    short reduction per row (3x faster at 64 x 10), and the same numbers (a maximum does not
    depend on the order of comparison)."""
    if type(z) is np.ndarray:
        if z.ndim == 2 and z.shape[-1] <= 32:
            return _max_reduce(z.T.copy(), 0).reshape(-1, 1)
        return _max_reduce(z, -1, None, None, True)
    return z.max(axis=-1, keepdims=True)


def _sce_impl(z, labels):
    """Mean over rows of logsumexp(z_r) - z_{r, y_r}; see :func:`softmax_cross_entropy`."""
    xp = backend.get_xp(z)
    M = labels.size
    flat = _sce_flat_labels(z, labels)
    zz = z - _row_max(z)
    lse = xp.log(xp.exp(zz).sum(axis=-1))
    picked = zz.reshape(-1)[flat]
    out = (lse.sum() - picked.sum()) * (1.0 / (M or 1))
    if not math.isfinite(out):  # an infinite logit: the limit, row by row (_sce_limit_logits)
        zz = _sce_limit_logits(z)
        with np.errstate(divide="ignore", invalid="ignore"):
            lse = np.log(np.sum(np.exp(zz), axis=-1))
            picked = np.take_along_axis(zz, labels[..., None], axis=-1)[..., 0]
            out = np.sum(lse - picked) * (1.0 / (M or 1))
    return out


def _sce_saving(z, labels):
    """``_sce_impl`` that also keeps (e, s, flat), e = exp(z - max z) and s = Σ e along the
    last axis, from which the backward step forms softmax(z) = e / s without recomputing
    it, and the labels' positions in the flattened logits."""
    xp = backend.get_xp(z)
    M = labels.size
    flat = _sce_flat_labels(z, labels)
    zz = z - _row_max(z)
    if xp is np:  # the reductions ndarray.sum makes, without its Python wrapper
        e = np.exp(zz)
        s = _add_reduce(e, -1, None, None, True)
    else:
        e = xp.exp(zz)
        s = e.sum(axis=-1, keepdims=True)
    picked = zz.reshape(-1)[flat]
    out = (xp.log(s).sum() - picked.sum()) * (1.0 / (M or 1))
    if not math.isfinite(out):  # an infinite logit: the guarded path, nothing kept
        return _sce_impl(z, labels), None
    return out, (e, s, flat)


def _sce_grad_from_saved(e, s, flat):
    """(softmax(z) - onehot(labels)) / M from the forward's e, s and label positions (a
    fresh array)."""
    out = e / s  # (in z's memory order: made row-major, so that the flat view below is one)
    if not out.flags.c_contiguous:
        out = backend.get_xp(out).ascontiguousarray(out)
    out.reshape(-1)[flat] -= 1.0
    out *= 1.0 / (flat.size or 1)
    return out


def _sce_vjp(g, out, z, labels, _saved=None):
    if _saved is None:  # higher order, or a direct call: in calcml operations
        return g * softmax_cross_entropy_grad(z, labels)
    # first order over plain arrays: z is a constant to every trace, and so is its softmax
    d = _sce_grad_from_saved(*_saved)
    if type(g) is np.ndarray and g.shape == () and g.dtype == d.dtype and g.item() == 1.0:
        return d  # the seed of loss.backward(): x * 1 is x exactly, skip the product
    return g * d


def _sce_grad_impl(z, labels):
    """(softmax(z) - onehot(labels)) / M; rows with a +inf logit take the limit softmax."""
    xp = backend.get_xp(z)
    M = labels.size
    flat = _sce_flat_labels(z, labels)
    m = _row_max(z)
    if not bool(xp.isfinite(m).all()):  # a +inf (or NaN, or all -inf) row: the guarded path
        e = np.exp(_sce_limit_logits(z))
        with np.errstate(invalid="ignore"):
            e /= e.sum(axis=-1, keepdims=True)  # a row of -inf only: 0/0, NaN
    else:
        e = xp.exp(z - m)
        e /= e.sum(axis=-1, keepdims=True)  # softmax(z), a fresh contiguous array
    if not e.flags.c_contiguous:  # z in column order: the flat view below must be a view
        e = xp.ascontiguousarray(e)
    e.reshape(-1)[flat] -= 1.0
    e *= 1.0 / (M or 1)
    return e


def _sce_grad_vjp(g, out, z, labels):
    # out = (s - T)/M with s = softmax(z): its VJP is softmax's, scaled by 1/M.
    s = softmax(z, axis=-1)
    return s * (g - sum(g * s, axis=-1, keepdims=True)) * (1.0 / (raw(labels).size or 1))


_sce_grad = defprim(
    "softmax_cross_entropy_grad", _sce_grad_impl,
    vjps=(_sce_grad_vjp, None),
    jvps=(_sce_grad_vjp, None),  # the Jacobian is symmetric: the same map takes tangents
)


def softmax_cross_entropy_grad(z, labels):
    """d/dz of :func:`softmax_cross_entropy`: (softmax(z) - onehot(labels)) / M.

    Notes
    -----
    A primitive of its own so that the backward step of the classifier's loss is one NumPy
    pass (softmax, subtract 1 at the labels, scale); its own derivative is softmax's Jacobian
    s_i (δ_ij - s_j) / M, symmetric, so one rule serves both modes.
    """
    return call(_sce_grad, (z, labels), _EMPTY)


_sce = defprim(
    "softmax_cross_entropy", _sce_impl,
    vjps=(_sce_vjp, None),
    jvps=(lambda t, out, z, labels: sum(softmax_cross_entropy_grad(z, labels) * t,
                                        axis=tuple(range(-ndim_of(z), 0))), None),
    impl_saving=_sce_saving,  # the backward step reuses the forward's exponentials
)


def softmax_cross_entropy(z, labels):
    """Mean over rows of -log softmax(z)[label]: logits ``z`` (..., C), integer ``labels`` (...).

    Notes
    -----
    L = (1/M) Σ_i (logsumexp(z_i) - z_i,y_i), computed with the row maximum subtracted;
    ∂L/∂z = (softmax(z) - onehot(y)) / M.  A label outside 0..C-1 raises an ``IndexError``
    (``calcml.losses.cross_entropy`` checks the labels first and names the range it found).

    Infinite logits take the limit (a guarded path, run only when the fast one is not
    finite).  A -inf logit has probability 0: its row's term is +inf if it is the label's,
    and its gradient entry is 0 otherwise.  In a row with k logits at +inf, softmax is 1/k on
    them and 0 elsewhere, so the row's term is log k when the label is one of them (0 for
    k = 1) and +inf otherwise, and its gradient row (softmax - onehot)/M stays finite.  A row
    of -inf only (0/0) and NaN logits give NaN.
    """
    if type(z) is Tensor:  # an eager model's logits: recorded directly
        t = tensor_call(_sce, (z, labels), _EMPTY)
        if t is not None:
            return t
    z_ = z if isinstance(z, Box) else backend.asarray(z)
    return call(_sce, (z_, labels), {})


def _sce_samples(rng):
    return [
        Sample((rng.normal(size=(5, 4)), rng.integers(0, 4, size=5))),
        Sample((rng.normal(size=(2, 3, 4)), rng.integers(0, 4, size=(2, 3)))),
        Sample((np.array([[1e4, 0.0, -1e4], [0.0, 1.0, 2.0]]), np.array([1, 2]))),
    ]


register("softmax_cross_entropy", softmax_cross_entropy, _sce_samples, public=False)
register("softmax_cross_entropy_grad", softmax_cross_entropy_grad, _sce_samples, public=False)

from .shape import broadcast_to, reshape  # noqa: E402  (mutual use with the shape ops)

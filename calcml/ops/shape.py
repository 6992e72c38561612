"""Shape operations: reshape, transpose, broadcast_to, expand_dims, squeeze, concatenate,
stack, indexing (``x[index]``), its adjoint scatter-add, and take.

Every JVP rule here treats the leading axes of a tangent beyond the primal's rank as batch
axes, so a batch of tangents goes through in one call.
"""

from __future__ import annotations

import builtins
import math
import operator

import numpy as np

from .. import backend
from .._core.registry import Sample, defprim, register
from ._base import Box, call, dtype_of, lead, ndim_of, norm_axes, op_error, raw, shape_of

__all__ = ["reshape", "transpose", "swapaxes", "moveaxis", "broadcast_to", "expand_dims",
           "squeeze", "concatenate", "stack", "getitem", "take"]


# --- axis checks ---------------------------------------------------------------------------

def _axes(axis, ndim, name, x):
    """``axis`` (an int or a sequence) as a tuple of non-negative axes of an ``ndim``-D array.

    An axis outside ``[-ndim, ndim)`` raises NumPy's ``AxisError`` (a ValueError and an
    IndexError) naming the operation, the axis and ``x``'s shape, rather than wrapping around.
    Each op checks against the rank of the value it is given, so the negative axes that rules
    pass for tangents with leading batch axes keep working.
    """
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in items:
        try:
            a = operator.index(raw(a))
        except TypeError:
            raise TypeError(f"calcml.{name}: an axis must be an integer, got "
                            f"{type(a).__name__} {a!r}") from None
        if not -ndim <= a < ndim:
            xs = tuple(shape_of(x))
            what = (f"an array of shape {xs}" if ndim == len(xs) else
                    f"a result of dimension {ndim} from an array of shape {xs}")
            raise np.exceptions.AxisError(
                f"calcml.{name}: axis {a} is out of bounds for {what} "
                f"(valid axes: -{ndim} to {ndim - 1})"
            )
        out.append(a + ndim if a < 0 else a)
    if len(set(out)) != len(out):
        raise ValueError(f"calcml.{name}: repeated axis in {axis!r} for an array of shape "
                         f"{tuple(shape_of(x))}")
    return tuple(out)


# --- reshape ------------------------------------------------------------------------------

def _resolve_shape(shape, size, name):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ValueError(f"calcml.{name}: can only specify one unknown dimension in {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or size % known:
            raise ValueError(f"calcml.{name}: cannot reshape an array of size {size} into {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    return shape


_reshape = defprim(
    "reshape", lambda x, shape: x.reshape(shape),
    vjps=(lambda g, out, x, shape: reshape(g, shape_of(x)),),
    jvps=(lambda t, out, x, shape: reshape(t, lead(t, x) + shape),),
)


def reshape(x, shape):
    """Give ``x`` a new shape with the same data (one entry may be -1), like ``numpy.reshape``.

    Notes
    -----
    Linear: the derivative reshapes the cotangent back.
    """
    if not isinstance(x, Box):
        try:
            return x.reshape(shape) if type(x) is np.ndarray else np.reshape(x, shape)
        except (ValueError, TypeError) as e:
            raise op_error("reshape", (x,), e) from None
    if type(shape) is tuple and -1 not in shape:
        return x if shape == x.shape else x._trace.process(_reshape, (x,), {"shape": shape})
    s = _resolve_shape(shape, math.prod(shape_of(x)), "reshape")
    if s == tuple(shape_of(x)):
        return x
    return call(_reshape, (x,), {"shape": s})


register("reshape", reshape, lambda rng: [Sample((rng.normal(size=(3, 4)),), {"shape": (2, -1)}),
                                          Sample((rng.normal(size=(6,)),), {"shape": (3, 2, 1)})])


# --- transpose ----------------------------------------------------------------------------

_transpose = defprim(
    "transpose", lambda x, axes: x.transpose(axes),
    vjps=(lambda g, out, x, axes: transpose(g, _inverse(axes)),),
    jvps=(lambda t, out, x, axes: transpose(t, _batched_perm(t, x, axes)),),
)


def _inverse(axes):
    """The inverse permutation (its own inverse for the common 2-D swap)."""
    if axes == (1, 0):
        return axes
    inv = [0] * len(axes)
    for i, a in enumerate(axes):
        inv[a] = i
    return tuple(inv)


def _batched_perm(t, x, axes):
    nb = ndim_of(t) - ndim_of(x)
    return tuple(range(nb)) + tuple(a + nb for a in axes)


def transpose(x, axes=None):
    """Permute the axes of ``x`` (reverse them by default), like ``numpy.transpose``.

    Notes
    -----
    Linear: the derivative applies the inverse permutation.
    """
    if not isinstance(x, Box):
        try:
            return x.transpose(axes) if type(x) is np.ndarray else np.transpose(x, axes)
        except (ValueError, TypeError) as e:
            if isinstance(axes, (tuple, list)):  # the same message as under a transform
                _permutation(axes, ndim_of(x), "transpose", x)
            raise op_error("transpose", (x,), e) from None
    n = ndim_of(x)
    if n == 2 and axes is None:
        return x._trace.process(_transpose, (x,), _T2)
    if axes is None:
        axes = tuple(range(n - 1, -1, -1))
    axes = _permutation(axes, n, "transpose", x)
    if axes == tuple(range(n)):
        return x
    return call(_transpose, (x,), {"axes": axes})


def _permutation(axes, n, name, x):
    """``axes`` checked as a permutation of the ``n`` axes of ``x`` (negative ones allowed)."""
    axes = _axes(tuple(axes), n, name, x)
    if sorted(axes) != list(range(n)):
        raise ValueError(f"calcml.{name}: axes {axes} are not a permutation of the axes of "
                         f"an array of shape {tuple(shape_of(x))}")
    return axes


register("transpose", transpose, lambda rng: [
    Sample((rng.normal(size=(3, 4)),)), Sample((rng.normal(size=(2, 3, 4)),), {"axes": (1, 2, 0)})])


_T2 = {"axes": (1, 0)}


def swapaxes(x, axis1, axis2):
    """Interchange two axes of ``x``."""
    if not isinstance(x, Box):
        try:
            if type(x) is np.ndarray:
                return x.swapaxes(axis1, axis2)
            return np.swapaxes(x, axis1, axis2)
        except (ValueError, TypeError) as e:  # AxisError is a ValueError
            for a in (axis1, axis2):  # the same message as under a transform
                _axes(a, ndim_of(x), "swapaxes", x)
            raise op_error("swapaxes", (x,), e) from None
    n = ndim_of(x)
    axis1, axis2 = (_axes(a, n, "swapaxes", x)[0] for a in (axis1, axis2))
    if n == 2 and axis1 != axis2:  # the two axes of a matrix, in either order
        return x._trace.process(_transpose, (x,), _T2)
    perm = list(range(n))
    perm[axis1], perm[axis2] = perm[axis2], perm[axis1]
    return transpose(x, tuple(perm))


def moveaxis(x, source, destination):
    """Move axis ``source`` of ``x`` to position ``destination``."""
    n = ndim_of(x)
    src, dst = (_axes(a, n, "moveaxis", x)[0] for a in (source, destination))
    perm = [a for a in range(n) if a != src]
    perm.insert(dst, src)
    return transpose(x, tuple(perm))


# --- broadcast_to -------------------------------------------------------------------------

def _bt_jvp(t, out, x, shape):
    ld = lead(t, x)
    xs = tuple(shape_of(x))
    if len(xs) < len(shape):
        t = reshape(t, ld + (1,) * (len(shape) - len(xs)) + xs)
    return broadcast_to(t, ld + shape)


_broadcast_to = defprim(
    "broadcast_to", backend.broadcast_to,
    vjps=(lambda g, out, x, shape: sum_to(g, shape_of(x)),),
    jvps=(_bt_jvp,),
)


def broadcast_to(x, shape):
    """Broadcast ``x`` to ``shape`` (NumPy rules).

    Notes
    -----
    The adjoint of broadcasting is summing over the broadcast axes.
    """
    if type(shape) is not tuple:
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(map(int, shape))
    if not isinstance(x, Box):
        try:
            return backend.broadcast_to(x if hasattr(x, "shape") else np.asarray(x), shape)
        except (ValueError, TypeError) as e:
            raise op_error("broadcast_to", (x,), e) from None
    if tuple(shape_of(x)) == shape:
        return x
    return call(_broadcast_to, (x,), {"shape": shape})


register("broadcast_to", broadcast_to, lambda rng: [
    Sample((rng.normal(size=(3, 1)),), {"shape": (2, 3, 4)}), Sample((rng.normal(size=()),),
                                                                     {"shape": (3,)})])


# --- expand_dims, squeeze (composites of reshape) -----------------------------------------

def expand_dims(x, axis):
    """Insert unit axes at the positions ``axis`` (an int or a tuple), like NumPy."""
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    s = list(shape_of(x))
    for a in sorted(_axes(axes, len(s) + len(axes), "expand_dims", x)):
        s.insert(a, 1)
    return reshape(x, tuple(s))


register("expand_dims", expand_dims, lambda rng: [
    Sample((rng.normal(size=(3, 4)),), {"axis": 1}), Sample((rng.normal(size=(3,)),),
                                                            {"axis": (0, -1)})], primitive=False)


def squeeze(x, axis=None):
    """Remove unit axes (all of them, or those in ``axis``), like ``numpy.squeeze``."""
    s = tuple(shape_of(x))
    if axis is None:
        axes = tuple(i for i, d in enumerate(s) if d == 1)
    else:
        axes = tuple(a % len(s) for a in norm_axes(axis, len(s), "squeeze"))
        bad = [a for a in axes if s[a] != 1]
        if bad:
            raise ValueError(f"calcml.squeeze: axis {bad[0]} of shape {s} does not have length 1")
    return reshape(x, tuple(d for i, d in enumerate(s) if i not in axes))


register("squeeze", squeeze, lambda rng: [
    Sample((rng.normal(size=(3, 1, 4)),)), Sample((rng.normal(size=(1, 3, 1)),), {"axis": 0})],
    primitive=False)


# --- concatenate, stack ---------------------------------------------------------------------

def _concat_vjp(i, g, out, vals, params):
    axis = params["axis"]
    start = builtins.sum(shape_of(v)[axis] for v in vals[:i])
    stop = start + shape_of(vals[i])[axis]
    return getitem(g, (Ellipsis, slice(start, stop)) + (slice(None),) * (-axis - 1))


def _concat_jvp_joint(tans, out, vals, params):
    k = next(i for i, t in enumerate(tans) if t is not None)
    ld = lead(tans[k], vals[k])
    ref = tans[k]
    parts = [
        t if t is not None else backend.zeros(ld + tuple(shape_of(v)), dtype_of(out), raw(ref))
        for t, v in zip(tans, vals)
    ]
    return concatenate(parts, axis=params["axis"])


_concatenate = defprim(
    "concatenate", lambda *arrays, axis: np.concatenate(arrays, axis=axis),
    vjp_every=_concat_vjp, jvp_every=lambda i, t, out, vals, params: None,
    jvp_joint=_concat_jvp_joint,
)


def concatenate(arrays, axis=0):
    """Join a sequence of arrays along an existing ``axis``, like ``numpy.concatenate``.

    Notes
    -----
    The derivative slices the cotangent back into the pieces.
    """
    arrays = tuple(arrays)
    if not arrays:
        raise ValueError("calcml.concatenate: need at least one array")
    if not any(isinstance(a, Box) for a in arrays):
        try:
            return np.concatenate(arrays, axis=axis)
        except (ValueError, TypeError) as e:
            raise op_error("concatenate", arrays, e) from None
    if axis is None:  # NumPy: flatten every array first
        arrays, axis = tuple(reshape(a, (-1,)) for a in arrays), 0
    ax = norm_axes(axis, ndim_of(arrays[0]), "concatenate")[0]
    return call(_concatenate, arrays, {"axis": ax})


register("concatenate", lambda *a, axis=0: concatenate(a, axis=axis), lambda rng: [
    Sample((rng.normal(size=(2, 3)), rng.normal(size=(4, 3))), argnums=(0, 1)),
    Sample((rng.normal(size=(2, 3)), rng.normal(size=(2, 1))), {"axis": 1}, argnums=(0, 1))])


def stack(arrays, axis=0):
    """Join arrays of one shape along a new ``axis``, like ``numpy.stack``."""
    arrays = tuple(arrays)
    if not arrays:
        raise ValueError("calcml.stack: need at least one array")
    shapes = {tuple(shape_of(a)) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"calcml.stack: all input arrays must have the same shape, got "
                         f"{sorted(shapes)}")
    ax = _axes(axis, ndim_of(arrays[0]) + 1, "stack", arrays[0])[0]
    if not any(isinstance(a, Box) for a in arrays):
        return np.stack(arrays, axis=ax)
    return concatenate([expand_dims(a, ax) for a in arrays], axis=ax)


register("stack", lambda *a, axis=0: stack(a, axis=axis), lambda rng: [
    Sample((rng.normal(size=(2, 3)), rng.normal(size=(2, 3))), {"axis": 1}, argnums=(0, 1))],
    primitive=False)


# --- indexing and its adjoint -------------------------------------------------------------

def _norm_index(index):
    items = index if isinstance(index, tuple) else (index,)
    out = []
    for it in items:
        it = raw(it)
        if isinstance(it, list):
            it = np.asarray(it)
        out.append(it)
    return tuple(out)


def _probe_shape(shape, index):
    """The shape ``x[index]`` has for ``x`` of ``shape``, computed without data."""
    host = tuple(backend.to_numpy(i) if hasattr(i, "shape") else i for i in index)
    return np.broadcast_to(np.zeros((), np.int8), shape)[host].shape


def _lead_position(ld, shape, index, out_shape):
    """Where NumPy puts the batch axes ``ld`` in ``t[(:,)*len(ld) + index]``.

    Usually first; but when ``index`` has advanced indices that are not next to each other,
    their broadcast axes come first of all.  Returns the number of axes before the batch axes.
    The probe's batch axes get a length no other axis has, so that they cannot be mistaken for
    an axis of the result of the same length.
    """
    m = builtins.max((*shape, *out_shape, 1)) + 1
    probe = (m,) * len(ld)
    full = _probe_shape(probe + tuple(shape), (slice(None),) * len(ld) + index)
    for k in range(len(out_shape) + 1):
        if full == tuple(out_shape[:k]) + probe + tuple(out_shape[k:]):
            return k
    raise AssertionError("calcml: unexpected indexing layout")  # pragma: no cover


def _getitem_jvp(t, out, x, index):
    ld = lead(t, x)
    if not ld:
        return getitem(t, index)
    r = getitem(t, (slice(None),) * len(ld) + index)
    k = _lead_position(ld, shape_of(x), index, shape_of(out))
    if k:
        nb, n = len(ld), ndim_of(r)
        r = transpose(r, tuple(range(k, k + nb)) + tuple(range(k)) + tuple(range(k + nb, n)))
    return r


_getitem = defprim(
    "getitem", lambda x, index: x[index],
    vjps=(lambda g, out, x, index: scatter_add(g, index, shape_of(x)),),
    jvps=(_getitem_jvp,),
)


def getitem(x, index):
    """``x[index]`` with NumPy's basic and advanced indexing.

    Notes
    -----
    Linear: the derivative scatter-adds the cotangent into zeros of ``x``'s shape, so
    repeated indices add up.
    """
    index = _norm_index(index)
    if not isinstance(x, Box):
        return x[index]
    return call(_getitem, (x,), {"index": index})


def _scatter_jvp(t, out, g, index, shape):
    ld = lead(t, g)
    if not ld:
        return scatter_add(t, index, shape)
    k = _lead_position(ld, shape, index, shape_of(g))
    if k:
        nb, n = len(ld), ndim_of(t)
        t = transpose(t, tuple(range(nb, nb + k)) + tuple(range(nb)) + tuple(range(nb + k, n)))
    return scatter_add(t, (slice(None),) * len(ld) + index, ld + tuple(shape))


_scatter = defprim(
    "scatter_add", lambda g, index, shape: backend.scatter_add(shape, g.dtype, index, g),
    vjps=(lambda c, out, g, index, shape: getitem(c, index),),
    jvps=(_scatter_jvp,),
)


def scatter_add(values, index, shape):
    """Zeros of ``shape`` with ``values`` added at ``index`` (the adjoint of indexing)."""
    if isinstance(values, Box):
        return call(_scatter, (values,), {"index": _norm_index(index), "shape": tuple(shape)})
    values = backend.asarray(values)  # plain values (a first-order backward step): directly
    index = _norm_index(index)
    try:
        return backend.scatter_add(tuple(shape), values.dtype, index, values)
    except (IndexError, ValueError, TypeError) as e:
        raise op_error("scatter_add", (values,), e) from None


def _index_samples(rng):
    x = rng.normal(size=(4, 5))
    return [
        Sample((x, (slice(1, 3), 2))),
        Sample((x, (np.array([0, 2, 2]),))),  # repeated rows add up in the gradient
        Sample((x, (x > 0,))),
        Sample((rng.normal(size=(3, 4, 5)), (np.array([0, 2]), slice(None), np.array([1, 4])))),
        # the indices' broadcast axis (3) as long as the tests' batch of 3 tangents
        Sample((rng.normal(size=(3, 4, 5)), (np.array([0, 2, 1]), slice(None), np.array([1, 4, 0])))),
        Sample((rng.normal(size=(3, 4)), (Ellipsis, None, 1))),
    ]


register("getitem", getitem, _index_samples, public=False)
register("scatter_add", scatter_add, lambda rng: [
    Sample((rng.normal(size=(3,)), (np.array([0, 2, 0]),), (4,))),
    Sample((rng.normal(size=(2, 4)), (np.array([0, 2]), slice(None), np.array([1, 0])), (3, 4, 2))),
    Sample((rng.normal(size=(3, 4)), (np.array([0, 2, 1]), slice(None), np.array([1, 0, 1])),
            (3, 4, 2))),
], public=False)


def take(a, indices, axis=None):
    """Elements of ``a`` at ``indices`` along ``axis`` (of the flattened array if None).

    Notes
    -----
    A composite of indexing: the derivative scatter-adds, so repeated indices add up.
    """
    indices = backend.asarray(raw(indices))
    if not isinstance(a, Box):
        try:
            return np.take(a, indices, axis=axis)
        except (IndexError, ValueError, TypeError) as e:
            if axis is not None:  # the same message as under a transform
                _axes(axis, ndim_of(a), "take", a)
            raise op_error("take", (a, indices), e) from None
    if axis is None:
        return getitem(reshape(a, (-1,)), (indices,))
    ax = _axes(axis, ndim_of(a), "take", a)[0]
    return getitem(a, (slice(None),) * ax + (indices,))


register("take", take, lambda rng: [
    Sample((rng.normal(size=(3, 4)), np.array([0, 5, 5]))),
    Sample((rng.normal(size=(3, 4)), np.array([[0, 3], [1, 1]])), {"axis": 1})], primitive=False)

from .reductions import sum_to  # noqa: E402  (mutual use with the reductions)

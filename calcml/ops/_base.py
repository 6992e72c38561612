"""Helpers shared by the operation modules: fast wrappers, clear errors, axis handling."""

from __future__ import annotations

import numpy as np

from .. import tensor as _tensor_mod
from .._core.reverse import ReverseBox
from .._core.trace import Box, bind, bind2, describe, new_seq, op_error, unbox_all
from ..tensor import TENSOR_TRACE, Tensor

__all__ = [
    "Box", "bind", "unary", "binary", "op_error", "describe", "norm_axes", "lead", "shape_of",
    "ndim_of", "dtype_of", "const_as", "raw", "call", "tensor_call1", "tensor_call", "Tensor",
]


raw = unbox_all  # the plain array under any number of boxes


def shape_of(x):
    try:
        return x.shape
    except AttributeError:  # a Python number or list
        return np.shape(x)


def ndim_of(x):
    try:
        return x.ndim
    except AttributeError:
        return np.ndim(x)


def dtype_of(x):
    x = raw(x)
    dt = getattr(x, "dtype", None)
    return dt if dt is not None else np.result_type(x)


_KINDS = (IndexError, ValueError, TypeError)
_EMPTY: dict = {}  # shared empty params (never mutated)
call = bind  # binding already turns a NumPy refusal into a clear calcml error


_new = object.__new__
_grad_on = _tensor_mod._grad_enabled  # [bool]: recording of tensor operations (no_grad)


def tensor_call1(prim, x, params):
    """``prim(x, **params)`` for a :class:`~calcml.Tensor` ``x``: exactly what the tensor
    trace's ``process`` does for one argument, without its general dispatch (the per-op cost
    of small eager models).  For primitives without ``impl_saving``."""
    v = x._value  # a tensor holds a plain array: it is the lowest trace
    try:
        out = prim.impl(v, **params)
    except _KINDS as e:
        raise op_error(prim.name, (v,), e) from None
    t = _new(Tensor)
    t._value = out
    t._trace = TENSOR_TRACE
    node = x._node
    vjps = prim.vjps
    t._node = None if node is None or vjps is None or vjps[0] is None or not _grad_on[0] \
        else (new_seq(), prim, (v,), params, out, ((0, node),))
    return t


def tensor_call(prim, args, params):
    """``prim(*args, **params)`` when every argument is a :class:`~calcml.Tensor` or a plain
    value (no transform's box): what the tensor trace's ``process`` does, without its general
    dispatch, including ``impl_saving``.  Returns None when an argument is a transform's box
    (the caller then takes the general path)."""
    vals = []
    parents = []
    vjps = prim.vjps
    record = vjps is not None and _grad_on[0]
    i = 0
    for a in args:
        if type(a) is Tensor:
            vals.append(a._value)
            if record and a._node is not None and vjps[i] is not None:
                parents.append((i, a._node))
        elif isinstance(a, Box):
            return None
        else:
            vals.append(a)
        i += 1
    try:
        if parents and prim.impl_saving is not None:
            out, saved = prim.impl_saving(*vals, **params)
            params = {**params, "_saved": saved}  # see Primitive.impl_saving
        else:
            out = prim.impl(*vals, **params)
    except _KINDS as e:
        raise op_error(prim.name, vals, e) from None
    t = _new(Tensor)
    t._value = out
    t._trace = TENSOR_TRACE
    t._node = (new_seq(), prim, vals, params, out, parents) if parents else None
    return t


def unary(prim, doc=None):
    """The public function for a one-argument primitive.

    Three fast paths, because this is where small models spend their time: no box at all
    (the NumPy implementation), a :class:`~calcml.Tensor` (what ``tensor_call1`` does,
    inlined), and a reverse-mode box over a plain array (the node is recorded here, without
    going through ``ReverseTrace.process``).
    """
    impl, name = prim.impl, prim.name
    recorded = prim.vjps is not None and prim.vjps[0] is not None
    direct = prim.impl_saving is None

    def op(x):
        if isinstance(x, Box):
            tx = type(x)
            if tx is Tensor and direct:
                v = x._value
                try:
                    out = impl(v)
                except _KINDS as e:
                    raise op_error(name, (v,), e) from None
                t = _new(Tensor)
                t._value = out
                t._trace = TENSOR_TRACE
                node = x._node
                t._node = None if node is None or not recorded or not _grad_on[0] \
                    else (new_seq(), prim, (v,), _EMPTY, out, ((0, node),))
                return t
            if tx is ReverseBox and recorded:
                v = x._value
                if not isinstance(v, Box):
                    try:
                        out = impl(v)
                    except _KINDS as e:
                        raise op_error(name, (v,), e) from None
                    b = _new(ReverseBox)
                    b._value = out
                    b._trace = x._trace
                    b._node = (new_seq(), prim, (v,), _EMPTY, out, ((0, x._node),))
                    return b
            return x._trace.process(prim, (x,), _EMPTY)
        try:
            return impl(x)
        except _KINDS as e:
            raise op_error(name, (x,), e) from None

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    return op


def binary(prim, doc=None):
    """The public function for a two-argument primitive, with a no-box fast path."""
    impl, name = prim.impl, prim.name

    def op(x, y):
        if isinstance(x, Box) or isinstance(y, Box):
            return bind2(prim, x, y, _EMPTY)
        try:
            return impl(x, y)
        except _KINDS as e:
            raise op_error(name, (x, y), e) from None

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    return op


def norm_axes(axis, ndim, name):
    """``axis`` (None, int or tuple) as a sorted tuple of *negative* axes.

    Negative axes stay correct when a tangent carries extra leading batch axes.
    """
    if axis is None:
        return tuple(range(-ndim, 0))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(
                f"calcml.{name}: axis {a} is out of bounds for an array of dimension {ndim}"
            )
        out.append(a - ndim if a >= 0 else a)
    if len(set(out)) != len(out):
        raise ValueError(f"calcml.{name}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def lead(t, x):
    """The leading batch axes of tangent ``t`` beyond the shape of primal ``x``."""
    ts = tuple(shape_of(t))
    n = len(ts) - len(shape_of(x))
    return ts[:n] if n > 0 else ()


def const_as(c, like):
    """A constant (mask, weights) computed from raw values, cast to ``like``'s dtype."""
    c = raw(c)
    dt = dtype_of(like)
    if getattr(c, "dtype", None) == dt:
        return c
    return c.astype(dt) if hasattr(c, "astype") else np.asarray(c, dtype=dt)

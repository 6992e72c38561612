"""Array behaviour for boxes: operators, NumPy-style methods and properties, and the NumPy
protocols, so that code written for arrays runs unchanged on traced values.

Comparisons return plain boolean arrays (they have no derivative).  NumPy functions applied to
a box dispatch to calcml's operation of the same name; one calcml does not provide raises a
``TypeError`` that names it, instead of silently dropping the derivative.
"""

from __future__ import annotations

import numpy as np

from .._core.registry import PRIMITIVES
from .._core.reverse import ReverseBox
from .._core.trace import Box, bind2, new_seq, op_error
from ..tensor import TENSOR_TRACE
from . import elementwise as E
from . import linalg as L
from . import reductions as R
from . import shape as S
from ._base import _KINDS, Tensor, _grad_on, describe, raw, tensor_call1
from .linalg import affine_node

_add, _sub, _mul, _div = (PRIMITIVES[n] for n in ("add", "subtract", "multiply", "divide"))
_pow, _neg, _mm = PRIMITIVES["power"], PRIMITIVES["negative"], PRIMITIVES["matmul"]
_EMPTY: dict = {}
_new = object.__new__


def _shape(self):
    return self._value.shape


def _ndim(self):
    try:
        return self._value.ndim
    except AttributeError:  # a Python number
        return np.ndim(self._value)


def _cmp(op):
    def f(self, other):
        return op(raw(self), raw(other))

    return f


def _reshape(self, *shape):
    return S.reshape(self, shape[0] if len(shape) == 1 else shape)


def _transpose(self, *axes):
    if not axes:
        return S.transpose(self)
    return S.transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list))
                       else axes)


def _iter(self):
    n = self.shape[0] if self.shape else None
    if n is None:
        raise TypeError("calcml: iteration over a 0-d value")
    return (S.getitem(self, i) for i in range(n))


def _len(self):
    if not self.shape:
        raise TypeError("calcml: len() of a 0-d value")
    return self.shape[0]


def _float(self):
    raise TypeError(
        "calcml: a traced value cannot become a Python number inside a differentiated "
        "function (its derivative would be lost); keep it an array, or compare it "
        "(comparisons give plain booleans)"
    )


def _array(self, dtype=None, copy=None):
    raise TypeError(
        "calcml: a traced value cannot become a NumPy array inside a differentiated function "
        "(its derivative would be lost); use calcml's operations (cm.exp, cm.sum, ...) on it"
    )


# NumPy ufuncs and functions that calcml provides, by NumPy's object.
UFUNCS = {
    np.add: E.add, np.subtract: E.subtract, np.multiply: E.multiply, np.divide: E.divide,
    np.negative: E.negative, np.power: E.power, np.exp: E.exp, np.log: E.log,
    np.log1p: E.log1p, np.expm1: E.expm1, np.sqrt: E.sqrt, np.absolute: E.abs, np.sign: E.sign,
    np.sin: E.sin, np.cos: E.cos, np.tan: E.tan, np.tanh: E.tanh, np.arctan: E.arctan,
    np.maximum: E.maximum, np.minimum: E.minimum, np.matmul: L.matmul, np.square: E.square,
    np.positive: lambda x: x,
}
_COMPARE = {np.greater, np.greater_equal, np.less, np.less_equal, np.equal, np.not_equal,
            np.isfinite, np.isnan, np.isinf, np.signbit, np.logical_and, np.logical_or,
            np.logical_not}
FUNCTIONS = {
    np.sum: R.sum, np.mean: R.mean, np.var: R.var, np.std: R.std, np.max: R.max, np.min: R.min,
    np.amax: R.max, np.amin: R.min, np.prod: R.prod, np.where: E.where, np.clip: E.clip,
    np.dot: L.dot, np.einsum: L.einsum, np.transpose: S.transpose, np.reshape: S.reshape,
    np.concatenate: S.concatenate, np.stack: S.stack, np.broadcast_to: S.broadcast_to,
    np.expand_dims: S.expand_dims, np.squeeze: S.squeeze, np.take: S.take,
    np.swapaxes: S.swapaxes, np.moveaxis: S.moveaxis, np.matmul: L.matmul,
    np.shape: lambda a: a.shape, np.ndim: lambda a: a.ndim, np.size: lambda a: a.size,
    np.zeros_like: lambda a, dtype=None: np.zeros_like(raw(a), dtype=dtype),
    np.ones_like: lambda a, dtype=None: np.ones_like(raw(a), dtype=dtype),
}


def _array_ufunc(self, ufunc, method, *inputs, **kwargs):
    if ufunc in _COMPARE and method == "__call__":
        return getattr(ufunc, method)(*[raw(i) for i in inputs], **kwargs)
    fn = UFUNCS.get(ufunc)
    if fn is None or method != "__call__" or kwargs:
        what = f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        if fn is not None and method == "__call__":
            what += f" with keyword arguments ({', '.join(kwargs)})"
        raise TypeError(
            f"calcml: {what} is not differentiable by calcml (arguments {describe(inputs)}). "
            f"Use calcml's operations (see calcml.OPERATIONS) or write it from them."
        )
    return fn(*inputs)


def _array_function(self, func, types, args, kwargs):
    fn = FUNCTIONS.get(func)
    if fn is None:
        name = f"{getattr(func, '__module__', None) or 'numpy'}.{func.__name__}"
        raise TypeError(
            f"calcml: {name} is not differentiable by calcml (arguments {describe(args)}). "
            f"Use calcml's operations (see calcml.OPERATIONS) or write it from them."
        )
    return fn(*args, **kwargs)


def _operator(prim, reflected=False, same=None):
    """``self <op> other`` for a box ``self``: the higher of the two traces processes it.

    The common case of small models, a reverse-mode box over a plain array with a constant or
    another such box of the same trace, records its node here (the primitive's rules take
    both arguments)."""
    impl, name = prim.impl, prim.name
    me = 1 if reflected else 0  # the argument position of ``self``

    def method(s, o):
        if o is s and same is not None:  # x * x: one rule (2x), not two products and a sum
            return same(s)
        if type(s) is ReverseBox:
            v = s._value
            t = s._trace
            if not isinstance(v, Box):
                if not isinstance(o, Box):
                    parents = ((me, s._node),)
                    w = o
                elif type(o) is ReverseBox and o._trace is t and not isinstance(o._value, Box):
                    parents = ((0, s._node), (1, o._node))  # never reflected: o would lead
                    w = o._value
                else:
                    parents = None
                if parents is not None:
                    vals = (w, v) if reflected else (v, w)
                    try:
                        out = impl(*vals)
                    except (IndexError, ValueError, TypeError) as e:
                        raise op_error(name, vals, e) from None
                    b = _new(ReverseBox)
                    b._value = out
                    b._trace = t
                    b._node = (new_seq(), prim, vals, _EMPTY, out, parents)
                    return b
        else:
            t = s._trace
        if isinstance(o, Box) and o._trace.level > t.level:
            t = o._trace
        return t.process(prim, (o, s) if reflected else (s, o), _EMPTY)

    return method




_METHODS = dict(
    __add__=_operator(_add), __radd__=_operator(_add, True),
    __sub__=_operator(_sub), __rsub__=_operator(_sub, True),
    __mul__=_operator(_mul, same=E.square), __rmul__=_operator(_mul, True),
    __truediv__=_operator(_div), __rtruediv__=_operator(_div, True),
    __pow__=lambda s, o: E.power(s, o),
    __rpow__=lambda s, o: bind2(_pow, o, s, _EMPTY),
    __matmul__=lambda s, o: L.matmul(s, o),
    __rmatmul__=lambda s, o: L.matmul(o, s),
    __neg__=lambda s: s._trace.process(_neg, (s,), _EMPTY),
    __pos__=lambda s: s,
    __abs__=lambda s: E.abs(s),
    __getitem__=lambda s, i: S.getitem(s, i),
    __lt__=_cmp(np.less), __le__=_cmp(np.less_equal), __gt__=_cmp(np.greater),
    __ge__=_cmp(np.greater_equal), __eq__=_cmp(np.equal), __ne__=_cmp(np.not_equal),
    __hash__=object.__hash__,
    __len__=_len, __iter__=_iter, __bool__=lambda s: bool(raw(s)),
    __float__=_float, __int__=_float, __array__=_array,
    __array_ufunc__=_array_ufunc, __array_function__=_array_function,
    shape=property(_shape),
    ndim=property(_ndim),
    dtype=property(lambda s: s._value.dtype),
    size=property(lambda s: int(np.prod(s.shape))),
    T=property(lambda s: S.transpose(s)),
    mT=property(lambda s: S.swapaxes(s, -1, -2)),
    sum=lambda s, axis=None, keepdims=False: R.sum(s, axis=axis, keepdims=keepdims),
    mean=lambda s, axis=None, keepdims=False: R.mean(s, axis=axis, keepdims=keepdims),
    var=lambda s, axis=None, ddof=0, keepdims=False: R.var(s, axis, ddof, keepdims),
    std=lambda s, axis=None, ddof=0, keepdims=False: R.std(s, axis, ddof, keepdims),
    max=lambda s, axis=None, keepdims=False: R.max(s, axis=axis, keepdims=keepdims),
    min=lambda s, axis=None, keepdims=False: R.min(s, axis=axis, keepdims=keepdims),
    prod=lambda s, axis=None, keepdims=False: R.prod(s, axis=axis, keepdims=keepdims),
    reshape=_reshape, transpose=_transpose,
    swapaxes=lambda s, a, b: S.swapaxes(s, a, b),
    squeeze=lambda s, axis=None: S.squeeze(s, axis),
    clip=lambda s, a_min=None, a_max=None: E.clip(s, a_min, a_max),
    dot=lambda s, o: L.dot(s, o),
    take=lambda s, indices, axis=None: S.take(s, indices, axis),
)


def install(cls=Box):
    """Give ``cls`` (Box, so every box and Tensor) its array behaviour."""
    for name, value in _METHODS.items():
        setattr(cls, name, value)
    cls.__array_priority__ = 1000


install()


# --- tensors ------------------------------------------------------------------------------
# A Tensor's operators record their node directly, as the tensor trace's ``process`` would:
# the hot path of eager small models, one Python frame per operation instead of three.

def _tensor_operator(prim, reflected=False, same=None):
    """``self <op> other`` for a :class:`~calcml.Tensor` ``self``: a tensor or a constant
    ``other`` is recorded here (with ``x @ W.T + b`` as one ``linear`` node, see
    :func:`calcml.ops.linalg.affine_node`); a transform's box goes the general way."""
    impl, name = prim.impl, prim.name
    general = _operator(prim, reflected, same)
    fuse = prim is _add
    if prim.impl_saving is not None or prim.vjps[0] is None or prim.vjps[1] is None:
        raise AssertionError(f"calcml: no tensor fast path for {name}")  # pragma: no cover
    trace = TENSOR_TRACE

    def method(s, o):
        if type(o) is Tensor:
            if o is s and same is not None:
                return same(s)
            w, on = o._value, o._node
        elif isinstance(o, Box):
            return general(s, o)
        else:
            w, on = o, None
        v, sn = s._value, s._node
        if reflected:
            vals, an, cn = (w, v), on, sn
        else:
            vals, an, cn = (v, w), sn, on
        try:
            out = impl(*vals)
        except _KINDS as e:
            raise op_error(name, vals, e) from None
        t = _new(Tensor)
        t._value = out
        t._trace = trace
        if (an is None and cn is None) or not _grad_on[0]:
            t._node = None
            return t
        parents = ((1, cn),) if an is None else ((0, an),) if cn is None else ((0, an), (1, cn))
        seq = new_seq()
        if fuse:
            node = affine_node(seq, vals, parents, out)
            if node is not None:
                t._node = node
                return t
        t._node = (seq, prim, vals, _EMPTY, out, parents)
        return t

    return method


def _tensor_getitem(self, index):
    return tensor_call1(S._getitem, self, {"index": S._norm_index(index)})


_T, _T2 = S._transpose, S._T2


def _tensor_T(self):
    v = self._value
    if v.ndim != 2:
        return S.transpose(self)
    out = v.transpose(1, 0)  # what tensor_call1(_transpose, self, _T2) does, inlined
    t = _new(Tensor)
    t._value = out
    t._trace = TENSOR_TRACE
    node = self._node
    t._node = None if node is None or not _grad_on[0] \
        else (new_seq(), _T, (v,), _T2, out, ((0, node),))
    return t


for _name, _method in dict(
    __add__=_tensor_operator(_add), __radd__=_tensor_operator(_add, True),
    __sub__=_tensor_operator(_sub), __rsub__=_tensor_operator(_sub, True),
    __mul__=_tensor_operator(_mul, same=E.square), __rmul__=_tensor_operator(_mul, True),
    __truediv__=_tensor_operator(_div), __rtruediv__=_tensor_operator(_div, True),
    __matmul__=_tensor_operator(_mm), __rmatmul__=_tensor_operator(_mm, True),
    __getitem__=_tensor_getitem, T=property(_tensor_T),
).items():
    setattr(Tensor, _name, _method)

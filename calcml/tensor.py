"""Tensors: PyTorch-style eager differentiation on the same engine as the transforms.

A :class:`Tensor` is a box of the level-0 *tensor trace*: every operation on tensors that
require a gradient records a node, and ``loss.backward()`` runs the same backward pass as
``cm.grad``, accumulating into the ``.grad`` of the leaf tensors.  Inside ``with
cm.no_grad():`` nothing is recorded.

Calling ``backward()`` twice through the same graph is allowed: the graph is kept as long as a
tensor refers to it, and the second call *adds* the same gradients to ``.grad`` again (PyTorch
would refuse unless ``retain_graph=True``).  Call ``zero_grad()`` (on an optimizer) or set
``p.grad = None`` between steps.  The graph keeps references to the arrays it was built from:
an optimizer step updates parameters in place, so a ``backward()`` through a graph recorded
before the step mixes old activations with new weights; record a new forward pass instead.
The graph is freed as soon as the last tensor referring to it goes.
"""

from __future__ import annotations

from operator import attrgetter

import numpy as np

from . import backend
from ._core.reverse import backward_pass
from ._core.trace import Box, leaf_node, op_error

__all__ = ["Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled"]

_grad_enabled = [True]


class _TensorTrace:
    """The eager trace at level 0, below every transform."""

    __slots__ = ()
    level = 0

    def process(self, prim, args, params):
        vjps = prim.vjps
        record = vjps is not None and _grad_enabled[0]
        n = len(args)
        if n == 1:  # the hot paths of small models, spelled out
            a = args[0]
            vals = (a._value,)
            parents = ((0, a._node),) if record and a._node is not None and vjps[0] is not None \
                else None
        elif n == 2:
            a, c = args
            if isinstance(a, Tensor):
                va = a._value
                pa = record and a._node is not None and vjps[0] is not None
            else:
                va, pa = a, False
            if isinstance(c, Tensor):
                vc = c._value
                pc = record and c._node is not None and vjps[1] is not None
            else:
                vc, pc = c, False
            vals = (va, vc)
            if pa:
                parents = ((0, a._node), (1, c._node)) if pc else ((0, a._node),)
            else:
                parents = ((1, c._node),) if pc else None
        elif n == 3 and type(args[0]) is Tensor and type(args[1]) is Tensor \
                and type(args[2]) is Tensor:  # a dense layer: linear(x, W, b)
            a, c, d = args
            vals = (a._value, c._value, d._value)
            parents = None
            if record:
                if a._node is not None and vjps[0] is not None:
                    parents = [(0, a._node)]
                if c._node is not None and vjps[1] is not None:
                    parents = [(1, c._node)] if parents is None else parents + [(1, c._node)]
                if d._node is not None and vjps[2] is not None:
                    parents = [(2, d._node)] if parents is None else parents + [(2, d._node)]
        else:
            vals = [a._value if isinstance(a, Tensor) else a for a in args]
            parents = [(i, a._node) for i, a in enumerate(args) if isinstance(a, Tensor)
                       and a._node is not None and vjps[i] is not None] if record else None
            if not parents:
                parents = None
        try:
            if parents is None or prim.impl_saving is None:
                out = prim.impl(*vals, **params)
            else:  # keep what the reverse rules can reuse (see Primitive.impl_saving)
                out, saved = prim.impl_saving(*vals, **params)
                params = {**params, "_saved": saved}
        except (IndexError, ValueError, TypeError) as exc:
            raise op_error(prim.name, vals, exc) from None
        t = _new(Tensor)
        t._value = out
        t._trace = TENSOR_TRACE
        if parents is None:
            t._node = None
        else:
            seq = next_seq()
            node = _affine_node(seq, vals, parents, out) if prim is _fused_add else None
            # (x @ W.T + b: one linear node, see calcml.ops.linalg.affine_node)
            t._node = (seq, prim, vals, params, out, parents) if node is None else node
        return t


TENSOR_TRACE = _TensorTrace()
# Installed by calcml.ops: the add primitive and the function that records ``x @ W.T + b`` as
# one ``linear`` node.
_fused_add = None
_affine_node = None
_new = object.__new__
from ._core.trace import new_seq as next_seq  # noqa: E402

#: dtype -> the read-only 0-d array 1 that seeds ``backward()`` of a scalar loss.  No rule
#: writes into a cotangent it is given, and a leaf gradient that would be this very array is
#: copied first (``taken`` in ``Tensor.backward``).
_UNIT_SEEDS: dict = {}
_HOST = (np.ndarray, np.generic)


class Tensor(Box):
    """An array that records the operations applied to it, for ``backward()``.

    Attributes
    ----------
    data : array
        The values (a NumPy or CuPy array).  Assigning replaces them without recording.
    grad : array or None
        The accumulated gradient of a leaf tensor after ``backward()``.
    requires_grad : bool
    """

    __slots__ = ("_node",)

    def __init__(self, data, requires_grad=False):
        self._value = data
        self._trace = TENSOR_TRACE
        self._node = _leaf(data) if requires_grad else None

    # --- state ---------------------------------------------------------------------------
    def _set_data(self, value):
        if value is self._value:  # ``t.data -= u`` assigns back the array it updated in place
            return
        self._value = value
        node = self._node
        if node is not None and node[1] is None:  # a leaf: its .grad follows the new dtype
            node[2][1] = getattr(value, "dtype", None)

    # (the getter is a C-level attribute read: no Python frame on the hot path of a step)
    data = property(attrgetter("_value"), _set_data, doc="The values (a NumPy or CuPy "
                    "array).  Assigning replaces them without recording.")

    @property
    def requires_grad(self):
        return self._node is not None

    @requires_grad.setter
    def requires_grad(self, flag):
        if flag and self._node is None:
            _check_float(self._value, "Tensor.requires_grad")
            self._node = _leaf(self._value)
        elif not flag and self._node is not None:
            if self._node[1] is not None:
                raise RuntimeError("calcml.Tensor: requires_grad can only be turned off on a "
                                   "leaf tensor; use .detach()")
            self._node = None

    def requires_grad_(self, flag=True):
        self.requires_grad = flag
        return self

    @property
    def is_leaf(self):
        return self._node is None or self._node[1] is None

    @property
    def grad(self):
        node = self._node
        return node[2][0] if node is not None and node[1] is None else None

    @grad.setter
    def grad(self, value):
        if self._node is None or self._node[1] is not None:
            raise RuntimeError("calcml.Tensor: .grad can only be set on a leaf that requires "
                               "a gradient")
        self._node[2][0] = value

    # --- differentiation -----------------------------------------------------------------
    def backward(self, gradient=None):
        """Accumulate d(self)/d(leaf), times ``gradient``, into every leaf's ``.grad``.

        ``gradient`` may be omitted for a scalar; otherwise it has this tensor's shape.
        """
        if self._node is None:
            raise RuntimeError("calcml.Tensor.backward: this tensor does not require a gradient "
                               "(no input had requires_grad=True, or it was made under no_grad)")
        v = self._value
        if gradient is None:
            if v.size != 1:
                raise RuntimeError(
                    f"calcml.Tensor.backward: a gradient can be implied only for a scalar; "
                    f"this tensor has shape {tuple(v.shape)}: pass gradient=")
            if v.shape == () and isinstance(v, _HOST):  # a scalar loss: a shared read-only 1
                seed = _UNIT_SEEDS.get(v.dtype)
                if seed is None:
                    seed = _UNIT_SEEDS[v.dtype] = np.ones((), v.dtype)
                    seed.flags.writeable = False
            else:
                seed = backend.ones(v.shape, v.dtype, like=v)
        else:
            seed = gradient._value if isinstance(gradient, Tensor) else gradient
            seed = backend.get_xp(seed, v).asarray(seed)
            if tuple(seed.shape) != tuple(v.shape):
                raise ValueError(f"calcml.Tensor.backward: gradient of shape "
                                 f"{tuple(seed.shape)} for a tensor of shape {tuple(v.shape)}")
            if seed.dtype != v.dtype:  # float32 stays float32
                seed = seed.astype(v.dtype)
        node = self._node
        if node[1] is None:
            leaves = {node[0]: (node, seed)}
        else:
            leaves = backward_pass(node, seed)
        # A leaf's .grad must share memory with nothing else the user holds: not the seed,
        # not another leaf's gradient (add's rule hands one cotangent to both inputs).
        taken = {id(backend.owner(seed))}
        ndarray = np.ndarray
        for leaf, g in leaves.values():
            holder = leaf[2]
            prev = holder[0]
            # the usual case in one test: a fresh array of the leaf's dtype, no .grad yet
            if (prev is None and type(g) is ndarray and g.base is None
                    and g.dtype is holder[-1] and g.flags.writeable and id(g) not in taken):
                taken.add(id(g))
                holder[0] = g
                continue
            if type(g) is ndarray:
                if len(holder) > 1 and g.dtype is not holder[1]:
                    dt = holder[1]
                    if dt is not None and g.dtype != dt:
                        g = g.astype(dt)  # a float32 leaf gets a float32 .grad, as in PyTorch
                if prev is None and g.base is None:  # the usual fresh result: keep it
                    if not g.flags.writeable or id(g) in taken:
                        g = g.copy()
                    taken.add(id(g))
                    holder[0] = g
                    continue
            else:
                dt = holder[1] if len(holder) > 1 else None
                if dt is not None:
                    gd = getattr(g, "dtype", dt)
                    if gd is not dt and gd != dt:
                        g = g.astype(dt)
                if isinstance(g, np.generic):
                    g = np.asarray(g)  # a 0-d leaf: an array, not a NumPy scalar
            if prev is None:
                if type(g) is np.ndarray and g.base is None:
                    if not g.flags.writeable or id(g) in taken:
                        g = g.copy()
                    own = g
                else:
                    if not backend.writeable(g) or id(backend.owner(g)) in taken:
                        g = g.copy()
                    own = backend.owner(g)
                taken.add(id(own))
                holder[0] = g
            else:
                holder[0] = prev + g

    def detach(self):
        """A tensor with the same data that records nothing."""
        return Tensor(self._value)

    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self._value)

    def item(self):
        """The single value as a Python number."""
        return self._value.item()

    def __float__(self):
        return float(self._value)

    def __int__(self):
        return int(self._value)

    def __array__(self, dtype=None, copy=None):
        v = backend.to_numpy(self._value)
        return v if dtype is None else v.astype(dtype)

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self._value), prefix="tensor(")
        extra = ", requires_grad=True" if self._node is not None else ""
        return f"tensor({body}{extra})"


def _leaf(value):
    """A leaf node whose gradient holder also records the dtype ``.grad`` is kept in."""
    node = leaf_node()
    node[2].append(getattr(value, "dtype", None))
    return node


def _check_float(v, fname):
    if np.dtype(v.dtype).kind not in "fc":
        raise TypeError(f"calcml.{fname}: only floating-point tensors can require a gradient; "
                        f"this one has dtype {v.dtype}")


def tensor(data, requires_grad=False, dtype=None):
    """Make a :class:`Tensor` from array-like ``data`` (copied), NumPy's dtype rules.

    With ``requires_grad=True`` (a parameter) the copy's data start at a 64-byte boundary
    (:func:`calcml.backend.empty_aligned`), which makes the products and updates that read
    it faster.

    Examples
    --------
    >>> import calcml as cm
    >>> w = cm.tensor([1.0, 2.0], requires_grad=True)
    >>> (w * w).sum().backward()
    >>> w.grad
    array([2., 4.])
    """
    if isinstance(data, Tensor):
        data = data._value
    if isinstance(data, Box):
        raise TypeError("calcml.tensor: cannot make a tensor from a value traced by a transform")
    xp = backend.get_xp(data)
    arr = xp.array(data, dtype=dtype)
    if requires_grad:
        _check_float(arr, "tensor")
        # a parameter: its copy starts on a cache line (see calcml.backend.ALIGNMENT)
        arr = backend.aligned_copy(arr)
    return Tensor(arr, requires_grad)


class no_grad:
    """Context manager (and decorator) under which tensor operations record nothing."""

    def __enter__(self):
        self._prev = _grad_enabled[0]
        _grad_enabled[0] = False
        return self

    def __exit__(self, *exc):
        _grad_enabled[0] = self._prev
        return False

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        wrapped.__name__ = getattr(fn, "__name__", "wrapped")
        wrapped.__doc__ = fn.__doc__
        return wrapped


class enable_grad(no_grad):
    """Context manager that turns recording back on inside ``no_grad``."""

    def __enter__(self):
        self._prev = _grad_enabled[0]
        _grad_enabled[0] = True
        return self


def is_grad_enabled():
    """Whether tensor operations are being recorded."""
    return _grad_enabled[0]

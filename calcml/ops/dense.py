"""A stack of dense layers as one primitive: what ``nn.Sequential`` runs for its runs of
``Linear`` layers and element-wise activations.

    h₀ = x,   z_k = h_{k-1} W_kᵀ + b_k,   h_k = σ_k(z_k)   (k = 1..L),   output h_L

with σ_k one of ``identity``, ``relu``, ``tanh``, ``sigmoid``.  Computed layer by layer this is
2L nodes and 2L backward steps; as one node it is one forward call and one backward step
whose joint rule walks the layers backwards:

    ∂L/∂z_k = ∂L/∂h_k ⊙ σ_k'(z_k),   ∂L/∂W_k = Σ (∂L/∂z_k)ᵀ h_{k-1},   ∂L/∂b_k = Σ ∂L/∂z_k,
    ∂L/∂h_{k-1} = (∂L/∂z_k) W_k

(sums over the leading axes).  Each step uses the very rules of ``linear`` and of the
activation's primitive, so the fused stack gives the numbers of the layer-by-layer graph
bit for bit.  At first order over plain arrays the forward pass keeps the h_k and z_k for the
backward step (``impl_saving``); at higher order, and in forward mode, the rules recompute
them in calcml operations, so the stack differentiates to any order like any primitive.
"""

from __future__ import annotations

import numpy as np

from .._core.registry import PRIMITIVES, Sample, defprim, register
from ._base import Tensor, call, shape_of, tensor_call
from .elementwise import add, relu, sigmoid, tanh
from .linalg import (
    _lin_jvp_b,
    _lin_jvp_w,
    _lin_vjp_w,
    _lin_vjp_w_array,
    _linear_impl,
    linear,
    matmul,
)
from .reductions import sum_to
from .shape import swapaxes

__all__ = ["dense_stack", "ACTIVATIONS"]

#: The activations a stack can hold: name -> (calcml operation, its primitive), None for
#: the identity.
ACTIVATIONS = {
    "identity": None,
    "relu": (relu, PRIMITIVES["relu"]),
    "tanh": (tanh, PRIMITIVES["tanh"]),
    "sigmoid": (sigmoid, PRIMITIVES["sigmoid"]),
}


def _impl(x, *wb, activations):
    h = x
    for k, act in enumerate(activations):
        h = _linear_impl(h, wb[2 * k], wb[2 * k + 1])
        if act != "identity":
            h = ACTIVATIONS[act][1].impl(h)
    return h


def _impl_saving(x, *wb, activations):
    """``_impl`` that also keeps (hs, zs): every layer's input h_{k-1} (hs[0] = x, hs[L] the
    output) and pre-activation z_k, which the backward step needs."""
    hs, zs = _layers(x, wb, activations, _linear_impl, 1)
    return hs[-1], (hs, zs)


def _forward_ops(x, wb, activations):
    """(hs, zs) of ``_impl_saving``, in calcml operations (a lower trace records them)."""
    return _layers(x, wb, activations, linear, 0)


def _layers(x, wb, activations, affine, raw):
    """(hs, zs) with ``affine`` for x Wᵀ + b and each activation's primitive implementation
    (``raw=1``) or calcml operation (``raw=0``)."""
    hs, zs = [x], []
    h = x
    for k, act in enumerate(activations):
        h = affine(h, wb[2 * k], wb[2 * k + 1])
        zs.append(h)
        if act != "identity":
            op, prim = ACTIVATIONS[act]
            h = prim.impl(h) if raw else op(h)
        hs.append(h)
    return hs, zs


def _vjp_joint(g, out, vals, params, wanted):
    """The cotangents of ``vals[i]`` for i in ``wanted`` (x is 0; W_k, b_k are 2k+1, 2k+2)."""
    acts = params["activations"]
    x, wb = vals[0], vals[1:]
    saved = params.get("_saved")
    if saved is None:  # higher order, forward mode, a direct call: recompute, in calcml ops
        hs, zs = _forward_ops(x, wb, acts)
        mm, dw = matmul, _lin_vjp_w
    else:
        hs, zs = saved
        # First order: x, the W_k, b_k and the kept hs, zs are plain arrays.  With a plain
        # NumPy cotangent too, nothing is traced, and the products go to NumPy directly: the
        # very calls that ``matmul`` and linear's rule make, so the same numbers bit for bit.
        raw = type(g) is np.ndarray
        if raw and type(x) is np.ndarray:
            return _vjp_arrays(g, wb, acts, hs, zs, wanted)
        mm, dw = (np.matmul, _lin_vjp_w_array) if raw else (matmul, _lin_vjp_w)
    want = set(wanted)
    first = 0 if 0 in want else (min(wanted) - 1) // 2  # the earliest layer needed
    res = {}
    for k in range(len(acts) - 1, first - 1, -1):
        w, b = wb[2 * k], wb[2 * k + 1]
        act = ACTIVATIONS[acts[k]]
        # ∂L/∂z_k by the activation's own rule (vjp(g, out, x)), then linear's rules
        gz = g if act is None else act[1].vjps[0](g, hs[k + 1], zs[k])
        if 2 * k + 1 in want:
            res[2 * k + 1] = dw(gz, zs[k], hs[k], w, b)
        if 2 * k + 2 in want:
            res[2 * k + 2] = sum_to(gz, shape_of(b))
        if k > first or 0 in want:
            g = mm(gz, w)
    if 0 in want:
        xs = tuple(shape_of(x))
        res[0] = g if tuple(shape_of(g)) == xs else sum_to(g, xs)
    return [res[i] for i in wanted]


def _vjp_arrays(g, wb, acts, hs, zs, wanted):
    """``_vjp_joint`` at first order on NumPy arrays (the forward's hs, zs kept), in one
    frame: the same NumPy calls as the general loop (the activation's rule, then linear's
    rules: gᵀh, the sum over the leading axes, g W), so the same numbers bit for bit."""
    want = set(wanted)
    first = min(wanted)
    need_x = first == 0
    first = 0 if need_x else (first - 1) // 2  # the earliest layer needed
    res = [None] * (len(wb) + 1)
    matmul_, vjp_w = np.matmul, _lin_vjp_w_array
    for k in range(len(acts) - 1, first - 1, -1):
        w, b = wb[2 * k], wb[2 * k + 1]
        act = _ACT_RULES[acts[k]]
        gz = g if act is None else act(g, hs[k + 1], zs[k])
        if 2 * k + 1 in want:
            h = hs[k]
            if gz.ndim == 2 and h.ndim == 2:
                res[2 * k + 1] = matmul_(gz.swapaxes(-1, -2), h)
            else:
                res[2 * k + 1] = vjp_w(gz, zs[k], h, w, b)
        if 2 * k + 2 in want:
            bs = shape_of(b)
            # a bias (out,) under a 2-D gz: the one reduction sum_to makes, called directly
            res[2 * k + 2] = _add_reduce(gz, 0) if gz.ndim == 2 and bs == gz.shape[1:] \
                else sum_to(gz, bs)
        if k > first or need_x:
            g = matmul_(gz, w)
    if need_x:
        xs = hs[0].shape
        res[0] = g if g.shape == xs else sum_to(g, xs)
    return [res[i] for i in wanted]


_add_reduce = np.add.reduce
#: Each activation's reverse rule vjp(g, out, x) by name (None: the identity).
_ACT_RULES = {name: (None if a is None else a[1].vjps[0]) for name, a in ACTIVATIONS.items()}


def _jvp_joint(tans, out, vals, params):
    """The output tangent from the arguments' tangents (None: not perturbed), layer by layer;
    tangents may carry leading batch axes (linear's rules handle them)."""
    acts = params["activations"]
    x, wb = vals[0], vals[1:]
    h, th = x, tans[0]
    last = len(acts) - 1
    for k, name in enumerate(acts):
        w, b = wb[2 * k], wb[2 * k + 1]
        tw, tb = tans[2 * k + 1], tans[2 * k + 2]
        z = linear(h, w, b)
        tz = None if th is None else matmul(th, swapaxes(w, -1, -2))
        if tw is not None:
            t = _lin_jvp_w(tw, z, h, w, b)
            tz = t if tz is None else add(tz, t)
        if tb is not None:
            t = _lin_jvp_b(tb, z, h, w, b)
            tz = t if tz is None else add(tz, t)
        act = ACTIVATIONS[name]
        a = out if k == last else (z if act is None else act[0](z))
        th = tz if tz is None or act is None else act[1].jvps[0](tz, a, z)
        h = a
    return th


_dense = defprim(
    "dense_stack", _impl,
    vjp_every=lambda i, g, out, vals, params: _vjp_joint(g, out, vals, params, [i])[0],
    jvp_every=lambda i, t, out, vals, params: _jvp_joint(
        [t if j == i else None for j in range(len(vals))], out, vals, params),
    vjp_joint=_vjp_joint, jvp_joint=_jvp_joint, impl_saving=_impl_saving, broadcasts=False,
)

_PARAMS: dict = {}  # activations tuple -> the params dict its nodes share (never mutated)


def dense_stack(x, *weights_and_biases, activations):
    r"""Dense layers applied one after the other, as one primitive.

    Parameters
    ----------
    x : array (..., in)
    *weights_and_biases : arrays
        ``W_1, b_1, W_2, b_2, ...``: W_k of shape (out_k, in_k), b_k of shape (out_k,).
    activations : sequence of str
        σ_k for each layer: ``"identity"``, ``"relu"``, ``"tanh"`` or ``"sigmoid"``.

    Returns
    -------
    array (..., out_L)
        h_L, where h_k = σ_k(h_{k-1} W_kᵀ + b_k) and h_0 = x.

    Notes
    -----
    The same numbers as ``linear`` and the activations applied one by one, bit for bit, as
    one node of the graph: one backward step walks the layers with
    ∂L/∂z_k = ∂L/∂h_k ⊙ σ_k'(z_k), ∂L/∂W_k = Σ (∂L/∂z_k)ᵀ h_{k-1}, ∂L/∂b_k = Σ ∂L/∂z_k and
    ∂L/∂h_{k-1} = (∂L/∂z_k) W_k.  ``nn.Sequential`` uses it for its runs of ``Linear``
    layers and activations.
    """
    acts = tuple(activations)
    params = _PARAMS.get(acts)
    if params is None:
        bad = [a for a in acts if a not in ACTIVATIONS]
        if bad or not acts:
            raise ValueError(f"calcml.dense_stack: activations must be a non-empty sequence of "
                             f"{sorted(ACTIVATIONS)}, got {activations!r}")
        params = _PARAMS[acts] = {"activations": acts}
    if len(weights_and_biases) != 2 * len(acts):
        raise ValueError(f"calcml.dense_stack: {len(acts)} activations need {2 * len(acts)} "
                         f"weights and biases (W_1, b_1, ...), got {len(weights_and_biases)}")
    args = (x, *weights_and_biases)
    if type(x) is Tensor or type(weights_and_biases[0]) is Tensor:  # an eager model
        t = tensor_call(_dense, args, params)
        if t is not None:
            return t
    return call(_dense, args, params)


def _samples(rng):
    n = rng.normal
    return [
        Sample((n(size=(5, 3)), n(size=(4, 3)), n(size=4), n(size=(2, 4)), n(size=2)),
               {"activations": ("tanh", "identity")}, argnums=(0, 1, 2, 3, 4)),
        Sample((n(size=(3,)), n(size=(4, 3)), n(size=4), n(size=(4, 4)), n(size=4),
                n(size=(2, 4)), n(size=2)),
               {"activations": ("sigmoid", "tanh", "sigmoid")}, argnums=(0, 1, 2, 3, 4, 5, 6)),
        Sample((n(size=(2, 3, 3)), n(size=(4, 3)), n(size=4), n(size=(2, 4)), n(size=2)),
               {"activations": ("relu", "tanh")}, argnums=(1, 2, 3, 4)),
    ]


register("dense_stack", dense_stack, _samples, public=False)

"""Products: matmul (the ``@`` operator), dot and einsum."""

from __future__ import annotations

import numpy as np

from .. import backend
from .._core.registry import Sample, defprim, register
from ._base import Box, call, dtype_of, lead, ndim_of, raw, shape_of
from .elementwise import multiply
from .reductions import sum_to
from .shape import _transpose as _TRANSPOSE
from .shape import broadcast_to, expand_dims, reshape, squeeze, swapaxes

__all__ = ["matmul", "dot", "einsum", "linear"]

_EMPTY: dict = {}
_add_reduce = np.add.reduce


# --- matmul -------------------------------------------------------------------------------
# 1-D operands follow NumPy: a vector on the left is a row, on the right a column, and the
# added axis is removed from the result.  The reverse rules return gradients shaped like the
# broadcast operands; the backward pass sums the batch axes away.

def _mm_vjp_x(g, out, x, y):
    if type(g) is np.ndarray and type(y) is np.ndarray and g.ndim == 2 and y.ndim == 2:
        return np.matmul(g, y.swapaxes(-1, -2))  # plain matrices: the calls below, made directly
    xn, yn = ndim_of(x), ndim_of(y)
    if yn == 1:
        return g * y if xn == 1 else expand_dims(g, -1) * y
    if xn == 1:
        if yn == 2:
            return matmul(y, g)
        return squeeze(matmul(y, expand_dims(g, -1)), -1)
    return matmul(g, swapaxes(y, -1, -2))


def _mm_vjp_y(g, out, x, y):
    if type(g) is np.ndarray and type(x) is np.ndarray and g.ndim == 2 and x.ndim == 2:
        # plain matrices (first order, nothing traced): the calls below, made directly
        if _column_major(y):
            return np.matmul(g.swapaxes(-1, -2), x).swapaxes(-1, -2)
        return np.matmul(x.swapaxes(-1, -2), g)
    xn, yn = ndim_of(x), ndim_of(y)
    if xn == 1:
        return g * x if yn == 1 else expand_dims(x, -1) * expand_dims(g, -2)
    if yn == 1:
        if xn == 2:
            return matmul(g, x)
        return squeeze(matmul(swapaxes(x, -1, -2), expand_dims(g, -1)), -1)
    if xn == 2 and yn == 2 and _column_major(y):
        # y is a transposed view (x @ w.T, w stored (out, in)): form the gradient as (gᵀx)ᵀ so
        # that, seen through the transpose, w's gradient comes out row-major like w itself.
        return swapaxes(matmul(swapaxes(g, -1, -2), x), -1, -2)
    return matmul(swapaxes(x, -1, -2), g)


def _column_major(a):
    """True for a plain array stored column-major only (a layout hint; boxes say no)."""
    flags = getattr(a, "flags", None)
    return flags is not None and not isinstance(a, Box) and flags.f_contiguous and not flags.c_contiguous


def _align(t, ld, x, rank):
    """Insert unit axes after the batch axes so that ``t`` has ``len(ld) + rank`` axes."""
    xs = tuple(shape_of(x))
    if len(xs) < rank:
        t = reshape(t, ld + (1,) * (rank - len(xs)) + xs)
    return t


def _mm_jvp_x(t, out, x, y):
    xn = ndim_of(x)
    if ndim_of(t) == xn:  # one tangent, no batch axes
        return matmul(t, y)
    ld = lead(t, x)
    yn = ndim_of(y)
    if yn == 1:
        return matmul(t, y)
    if xn == 1:  # row vector against a stack of matrices
        k = shape_of(x)[0]
        return squeeze(matmul(reshape(t, ld + (1,) * (yn - 2) + (1, k)), y), -2)
    return matmul(_align(t, ld, x, max(xn, yn)), y)


def _mm_jvp_y(t, out, x, y):
    yn = ndim_of(y)
    if ndim_of(t) == yn:  # one tangent, no batch axes
        return matmul(x, t)
    ld = lead(t, y)
    xn = ndim_of(x)
    if yn == 1:  # column vector: make it a matrix so the batch axes stay in front
        k = shape_of(y)[0]
        return squeeze(matmul(x, reshape(t, ld + (1,) * max(xn - 2, 0) + (k, 1))), -1)
    if xn == 1:
        return matmul(x, t)
    return matmul(x, _align(t, ld, y, max(xn, yn)))


_matmul = defprim("matmul", np.matmul, vjps=(_mm_vjp_x, _mm_vjp_y), jvps=(_mm_jvp_x, _mm_jvp_y),
                  broadcasts=True)


def matmul(x, y):
    """Matrix product with NumPy's broadcasting over leading axes (the ``@`` operator).

    Notes
    -----
    For C = A B: dL/dA = G Bᵀ and dL/dB = Aᵀ G; batch axes that were broadcast are summed.
    """
    if isinstance(x, Box) or isinstance(y, Box):
        return call(_matmul, (x, y), _EMPTY)
    try:
        return np.matmul(x, y)
    except (ValueError, TypeError) as e:
        from ._base import op_error

        raise op_error("matmul", (x, y), e) from None


def _mm_samples(rng):
    n = rng.normal
    return [
        Sample((n(size=(3, 4)), n(size=(4, 2))), argnums=(0, 1)),
        Sample((n(size=(4,)), n(size=(4, 2))), argnums=(0, 1)),
        Sample((n(size=(3, 4)), n(size=(4,))), argnums=(0, 1)),
        Sample((n(size=(4,)), n(size=(4,))), argnums=(0, 1)),
        Sample((n(size=(2, 3, 4)), n(size=(4, 2))), argnums=(0, 1)),
        Sample((n(size=(3, 4)), n(size=(2, 4, 2))), argnums=(0, 1)),
        Sample((n(size=(4,)), n(size=(2, 4, 3))), argnums=(0, 1)),
        Sample((n(size=(2, 3, 4)), n(size=(4,))), argnums=(0, 1)),
    ]


register("matmul", matmul, _mm_samples)


# --- linear: x Wᵀ + b (fused) ---------------------------------------------------------------
# The affine map of every dense layer as one primitive instead of three (transpose, matmul,
# add): one node and one backward step per layer.  x (..., in), W (out, in), b (out,).

def _linear_impl(x, w, b):
    y = np.matmul(x, w.T)
    y += b  # y is a fresh array
    return y


def _lin_vjp_w(g, out, x, w, b):
    # dL/dW = Σ over the leading axes of gᵀ x: the leading axes are folded into one first.
    if type(g) is np.ndarray and type(x) is np.ndarray:  # plain arrays: the same calls, direct
        return _lin_vjp_w_array(g, out, x, w, b)
    if ndim_of(g) == 2 and ndim_of(x) == 2:
        return matmul(swapaxes(g, -1, -2), x)
    n_out, n_in = shape_of(w)
    return matmul(swapaxes(reshape(g, (-1, n_out)), -1, -2), reshape(x, (-1, n_in)))


def _lin_vjp_w_array(g, out, x, w, b):
    """``_lin_vjp_w`` on plain NumPy arrays: the NumPy calls its calcml operations make."""
    if g.ndim == 2 and x.ndim == 2:
        return np.matmul(g.swapaxes(-1, -2), x)
    n_out, n_in = w.shape
    return np.matmul(g.reshape(-1, n_out).swapaxes(-1, -2), x.reshape(-1, n_in))


def _lin_vjp_x(g, out, x, w, b):
    if type(g) is np.ndarray and type(w) is np.ndarray:
        return np.matmul(g, w)  # plain arrays: the call matmul makes, direct
    return matmul(g, w)


def _lin_jvp_w(t, out, x, w, b):
    # t has shape ld + (out, in) (ld: batch axes of the tangent); x @ tᵀ with x's own leading
    # axes kept behind ld.
    ld = lead(t, w)
    tt = swapaxes(t, -1, -2)
    xn = ndim_of(x)
    if ld and xn > 2:
        tt = reshape(tt, ld + (1,) * (xn - 2) + tuple(shape_of(tt))[-2:])
    return matmul(x, tt)


def _lin_jvp_b(t, out, x, w, b):
    ld = lead(t, b)
    os = tuple(shape_of(out))
    t = reshape(t, ld + (1,) * (len(os) - 1) + os[-1:])
    return broadcast_to(t, ld + os)


def _lin_vjp_b(g, out, x, w, b):
    return sum_to(g, shape_of(b))  # Σ G over the leading axes


def _lin_vjp_joint(g, out, vals, params, wanted):
    """The cotangents of x, W, b in one call (one backward step per layer).  On plain 2-D
    NumPy arrays (a first-order step) the NumPy calls of the three rules, made directly."""
    x, w, b = vals
    if type(g) is np.ndarray and type(x) is np.ndarray and type(w) is np.ndarray \
            and g.ndim == 2 and x.ndim == 2:
        res = []
        for i in wanted:
            if i == 0:
                res.append(np.matmul(g, w))
            elif i == 1:
                res.append(np.matmul(g.swapaxes(-1, -2), x))
            else:
                res.append(_add_reduce(g, 0))
        return res
    rules = _linear.vjps
    return [rules[i](g, out, x, w, b) for i in wanted]


_linear = defprim(
    "linear", _linear_impl,
    vjps=(_lin_vjp_x, _lin_vjp_w, _lin_vjp_b),
    jvps=(lambda t, out, x, w, b: matmul(t, swapaxes(w, -1, -2)), _lin_jvp_w, _lin_jvp_b),
    vjp_joint=_lin_vjp_joint,
    broadcasts=False,  # every rule gives its argument's own shape
)


def linear(x, w, b):
    """The affine map ``x @ w.T + b`` of a dense layer, as one primitive.

    Parameters
    ----------
    x : array (..., in)
    w : array (out, in)
    b : array (out,)

    Notes
    -----
    y = x Wᵀ + b.  ∂L/∂x = G W, ∂L/∂W = Σ Gᵀ x over the leading axes, ∂L/∂b = Σ G over the
    leading axes.
    """
    if not (isinstance(x, Box) or isinstance(w, Box) or isinstance(b, Box)):
        try:
            return _linear_impl(x, w, b)
        except (ValueError, TypeError) as e:
            from ._base import op_error

            raise op_error("linear", (x, w, b), e) from None
    return call(_linear, (x, w, b), _EMPTY)


def affine_node(seq, vals, parents, out):
    """The ``linear`` node for ``add(x @ W.T, b)`` just computed, or None.

    Called by the tensor trace when it records an ``add`` (``vals``: the two added values,
    ``parents``: their recorded nodes by argument index, ``out``: the sum).  When one addend
    was recorded as ``matmul(x, transpose(W))`` with W a matrix, and the other is a bias
    vector of W's output size that broadcasts over it without changing its shape or dtype,
    the sum is recorded as one ``linear(x, W, b)`` node in place of the add, its parents
    being those of x, W and b.  The value is the one already computed; the backward pass
    then makes one step for the layer instead of three, with linear's rules, which form the
    same products as matmul's and transpose's (so the same gradients).  A matmul node that
    something else also uses stays in the graph and gets its own cotangent there; the sum
    does not go through it.  Only plain NumPy arrays (the first-order eager case) fuse.
    """
    k, m = parents[0]
    if m[1] is not _matmul:
        if len(parents) == 1:
            return None
        k, m = parents[1]
        if m[1] is not _matmul:
            return None
    mp = m[5]
    if len(mp) == 2:
        xp, (_, t) = mp
    elif mp[0][0] == 1:
        xp, t = None, mp[0][1]
    else:
        return None
    if t[1] is not _TRANSPOSE:
        return None
    wv = t[2][0]
    xv, tv = m[2]
    bv = vals[1 - k]
    mo = m[4]
    dt = out.dtype
    if not (t[4] is tv and type(bv) is np.ndarray and type(xv) is np.ndarray
            and type(wv) is np.ndarray and type(out) is np.ndarray
            and bv.dtype is dt and mo.dtype is dt and wv.dtype is dt and xv.dtype is dt
            and wv.ndim == 2 and bv.ndim == 1 and bv.shape[0] == wv.shape[0]
            and out.shape == mo.shape and t[3].get("axes") == (1, 0)):
        return None
    wp = (1, t[5][0][1])  # a transpose is recorded only with its parent
    if len(parents) == 2:  # ((0, ·), (1, ·)): the other one is the bias
        bp = (2, parents[1 - k][1])
        ps = (wp, bp) if xp is None else (xp, wp, bp)
    else:
        ps = (wp,) if xp is None else (xp, wp)
    return (seq, _linear, (xv, wv, bv), _EMPTY, out, ps)


register("linear", linear, lambda rng: [
    Sample((rng.normal(size=(5, 3)), rng.normal(size=(4, 3)), rng.normal(size=4)),
           argnums=(0, 1, 2)),
    Sample((rng.normal(size=(2, 5, 3)), rng.normal(size=(4, 3)), rng.normal(size=4)),
           argnums=(0, 1, 2)),
    Sample((rng.normal(size=3), rng.normal(size=(4, 3)), rng.normal(size=4)),
           argnums=(0, 1, 2)),
], public=False)


# --- dot (a composite) --------------------------------------------------------------------

def dot(a, b):
    """NumPy's ``dot``: products of scalars, vectors and matrices; for N-D arrays a sum over
    the last axis of ``a`` and the second-to-last of ``b``.

    Notes
    -----
    Built from ``matmul``/``einsum``/``multiply``, so its derivatives come from theirs.
    """
    an, bn = ndim_of(a), ndim_of(b)
    if an == 0 or bn == 0:
        return multiply(a, b)
    if an <= 2 and bn <= 2:
        return matmul(a, b)
    la = _LETTERS[:an]
    if bn == 1:
        lb = la[-1]
        lo = la[:-1]
    else:
        lb = _LETTERS[an:an + bn - 2] + la[-1] + _LETTERS[an + bn - 2]
        lo = la[:-1] + lb[:-2] + lb[-1]
    return einsum(f"{la},{lb}->{lo}", a, b)


register("dot", dot, lambda rng: [
    Sample((rng.normal(size=(3, 4)), rng.normal(size=(4, 2))), argnums=(0, 1)),
    Sample((rng.normal(size=(4,)), rng.normal(size=(4,))), argnums=(0, 1)),
    Sample((rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 4, 2))), argnums=(0, 1)),
    Sample((rng.normal(size=()), rng.normal(size=(3,))), argnums=(0, 1)),
], primitive=False)


# --- einsum -------------------------------------------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _parse_einsum(subscripts, shapes):
    """Explicit subscripts: ellipses replaced by letters, the output spelled out."""
    s = subscripts.replace(" ", "")
    if "->" in s:
        ins, outs = s.split("->")
    else:
        ins, outs = s, None
    specs = ins.split(",")
    if len(specs) != len(shapes):
        raise ValueError(f"calcml.einsum: {len(specs)} operand subscripts for {len(shapes)} "
                         f"operands in {subscripts!r}")
    used = set(c for c in s if c.isalpha())
    free = [c for c in _LETTERS if c not in used]
    ell_rank = 0
    for sp, sh in zip(specs, shapes):
        if "..." in sp:
            ell_rank = max(ell_rank, len(sh) - (len(sp) - 3))
    ell = "".join(free[:ell_rank])
    new_specs = []
    for sp, sh in zip(specs, shapes):
        if "..." in sp:
            e = len(sh) - (len(sp) - 3)
            sp = sp.replace("...", ell[ell_rank - e:] if e else "")
        if len(sp) != len(sh):
            raise ValueError(f"calcml.einsum: subscripts {sp!r} do not match an operand of "
                             f"shape {tuple(sh)}")
        new_specs.append(sp)
    if outs is None:
        counts = {}
        for sp in new_specs:
            for c in sp:
                counts[c] = counts.get(c, 0) + 1
        outs = ell + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ell))
    else:
        outs = outs.replace("...", ell)
    return new_specs, outs


def _einsum_impl(*operands, specs, output):
    subs = ",".join(specs) + "->" + output
    return np.einsum(subs, *operands, optimize=len(operands) > 2)


def _einsum_vjp(i, g, out_val, vals, params):
    specs, out = params["specs"], params["output"]
    target = specs[i]
    # A repeated letter in the target ('ii') is a diagonal: give each repeat a fresh letter
    # and put an identity between the two.
    free = [c for c in _LETTERS if c not in "".join(specs) + out]
    renamed, eyes, seen = [], [], set()
    xshape = shape_of(vals[i])
    for pos, c in enumerate(target):
        if c in seen:
            f = free.pop(0)
            renamed.append(f)
            eyes.append((c + f, xshape[pos]))
        else:
            seen.add(c)
            renamed.append(c)
    others = [sp for j, sp in enumerate(specs) if j != i] + [out]
    # a repeated letter stays even when nothing else has it: its identity factor needs it
    present = set("".join(others)) | {e[0] for e, _ in eyes}
    uniq = "".join(dict.fromkeys(target))
    keep = "".join(c for c in uniq if c in present)
    ops = [v for j, v in enumerate(vals) if j != i] + [g]
    dt = dtype_of(vals[i])
    eye_ops = [backend.eye(n, dt, raw(g)) for _, n in eyes]
    subs = ",".join(others + [e for e, _ in eyes]) + "->" + keep + "".join(e[1] for e, _ in eyes)
    r = einsum(subs, *ops, *eye_ops)
    cur = keep + "".join(e[1] for e, _ in eyes)
    want = "".join(renamed)
    # letters summed only inside operand i: their gradient is constant along them
    missing = [c for c in want if c not in cur]
    if missing:
        r = reshape(r, tuple(shape_of(r)) + (1,) * len(missing))
        cur = cur + "".join(missing)
    perm = tuple(cur.index(c) for c in want)
    if perm != tuple(range(len(perm))):
        from .shape import transpose

        r = transpose(r, perm)
    if missing:
        size = {c: xshape[p] for p, c in enumerate(want)}
        r = broadcast_to(r, tuple(size[c] if c in missing else shape_of(r)[k]
                                  for k, c in enumerate(want)))
    return r


def _einsum_jvp(i, t, out_val, vals, params):
    specs, out = params["specs"], params["output"]
    ld = lead(t, vals[i])
    free = [c for c in _LETTERS if c not in "".join(specs) + out]
    b = "".join(free[:len(ld)])
    new = list(specs)
    new[i] = b + specs[i]
    ops = list(vals)
    ops[i] = t
    return einsum(",".join(new) + "->" + b + out, *ops)


_einsum = defprim("einsum", _einsum_impl, vjp_every=_einsum_vjp, jvp_every=_einsum_jvp)


def einsum(subscripts, *operands):
    """Einstein summation, like ``numpy.einsum`` (ellipses and implicit output included).

    Notes
    -----
    einsum is multilinear: the derivative with respect to one operand is the einsum of the
    cotangent with the other operands, written to that operand's subscripts.
    """
    if not isinstance(subscripts, str):
        raise TypeError("calcml.einsum: the first argument must be a subscripts string")
    if not any(isinstance(o, Box) for o in operands):
        try:
            return np.einsum(subscripts, *operands, optimize=len(operands) > 2)
        except (ValueError, TypeError) as e:
            from ._base import op_error

            raise op_error("einsum", operands, e) from None
    specs, out = _parse_einsum(subscripts, [shape_of(o) for o in operands])
    return call(_einsum, operands, {"specs": tuple(specs), "output": out})


register("einsum", lambda *ops, subscripts: einsum(subscripts, *ops), lambda rng: [
    Sample((rng.normal(size=(3, 4)), rng.normal(size=(4, 2))), {"subscripts": "ij,jk->ik"},
           argnums=(0, 1)),
    Sample((rng.normal(size=(3, 4)),), {"subscripts": "ij->"}),
    Sample((rng.normal(size=(3, 3)),), {"subscripts": "ii->i"}),
    Sample((rng.normal(size=(2, 3, 4)), rng.normal(size=(4,))), {"subscripts": "...j,j->..."},
           argnums=(0, 1)),
    Sample((rng.normal(size=(3,)), rng.normal(size=(4,))), {"subscripts": "i,j->ij"},
           argnums=(0, 1)),
    Sample((rng.normal(size=(3, 4)), rng.normal(size=(3,))), {"subscripts": "ij,i"},
           argnums=(0, 1)),
    Sample((rng.normal(size=(3, 3)),), {"subscripts": "ii"}),  # the trace
    Sample((rng.normal(size=(3, 3, 2)),), {"subscripts": "iij->j"}),
])

"""The transforms: grad, value_and_grad, vjp, jvp, jacobian, hessian, hvp (JAX's vocabulary).

Each transform opens a trace of a fresh level (see ``calcml._core.trace``), boxes the inputs it
differentiates with respect to, runs the function and reads the derivative off the boxes.
Because levels nest, the transforms compose: ``grad(grad(f))``, ``jacobian(grad(f))`` (the
Hessian, forward-over-reverse), ``grad`` of a function that calls ``jvp``.

Arguments differentiated may be arrays or lists/tuples/dicts of arrays; the derivative has the
same structure.  Inputs must be floating point; float32 stays float32.
"""

from __future__ import annotations

import math

import numpy as np

from . import backend
from ._core.forward import ForwardBox, ForwardTrace
from ._core.reverse import ReverseBox, ReverseTrace, backward_pass
from ._core.trace import Box, leaf_node, new_level
from ._core.trace import unbox_all as _raw
from ._core.tree import flatten, unflatten
from .ops import reshape, stack, transpose
from .tensor import Tensor

__all__ = ["grad", "value_and_grad", "vjp", "jvp", "jacobian", "hessian", "hvp"]


# --- input handling -----------------------------------------------------------------------

def _as_float(x, fname, where):
    """``x`` as a floating-point array (boxes of outer transforms pass through)."""
    if isinstance(x, Box):
        dt = x.dtype
    else:
        if not hasattr(x, "dtype") or not hasattr(x, "shape"):
            try:
                x = np.asarray(x)
            except Exception as e:  # pragma: no cover - exotic input
                raise TypeError(f"calcml.{fname}: {where} is not an array ({e})") from None
            if x.dtype.kind in "iub":
                x = x.astype(np.float64)
        dt = x.dtype
    if np.dtype(dt).kind not in "fc":
        raise TypeError(
            f"calcml.{fname}: {where} has dtype {dt}; derivatives need floating-point inputs "
            f"(convert with x.astype(np.float64) or np.float32)"
        )
    return x


def _argnums(argnums, nargs, fname):
    if type(argnums) is int and 0 <= argnums < nargs:  # the common case
        return True, (argnums,)
    single = isinstance(argnums, (int, np.integer))
    nums = (int(argnums),) if single else tuple(int(a) for a in argnums)
    if not nums:
        raise ValueError(f"calcml.{fname}: argnums must name at least one argument")
    for a in nums:
        if not -nargs <= a < nargs:
            raise ValueError(
                f"calcml.{fname}: argnums={argnums!r} but the function was called with "
                f"{nargs} positional argument(s)"
            )
    return single, tuple(a % nargs for a in nums)


def _plain(x):
    """A tensor that records nothing (the constants of a model under a transform) is handed
    back as its array; a box of a live trace or a tensor that records stays as it is."""
    return x._value if type(x) is Tensor and x._node is None else x


def _finish(g, like, taken):
    """A gradient as the user receives it: an array of ``like``'s shape and dtype that shares
    memory with nothing else handed out (``taken``: ids of the owners of the seed and of the
    gradients already returned; a rule such as add's passes one cotangent to two inputs)."""
    if (type(g) is np.ndarray and g.base is None and g.dtype == like.dtype
            and g.shape == like.shape and g.flags.writeable and id(g) not in taken):
        # the common case, a fresh array that owns its memory: the checks below, without
        # their calls (a gradient is finished once per argument on every call)
        taken.add(id(g))
        return g
    g = _plain(g)
    if isinstance(g, Box):
        return g
    if type(g) is not np.ndarray:
        g = backend.get_xp(g, like).asarray(g)
    if (g.dtype != like.dtype or not backend.writeable(g) or g.shape != like.shape
            or id(backend.owner(g)) in taken):
        out = backend.get_xp(g).empty(like.shape, like.dtype)
        out[...] = g
        g = out
    taken.add(id(backend.owner(g)))
    return g


def _zeros_like(v):
    """Zeros shaped like ``v``, of its dtype, on its backend (also for a traced ``v``)."""
    if isinstance(v, Box):
        r = _raw(v)
        return backend.zeros(tuple(r.shape), r.dtype, like=r)
    return backend.get_xp(v).zeros_like(v)


def _box_args(args, nums, trace, fname, make):
    """Box the leaves of ``args[n]`` for n in ``nums``; returns new args and leaf records."""
    args = list(args)
    records = []
    for n in nums:
        a = args[n]
        if (type(a) is np.ndarray or isinstance(a, Box)) and a.dtype.kind == "f":
            b = make(a)  # the common case: one array, no tree walk
            args[n] = b
            records.append((_LEAF_TD, [a], [b]))
            continue
        leaves, td = flatten(a)
        if not leaves:
            raise ValueError(f"calcml.{fname}: argument {n} holds no array to differentiate")
        vals = [_as_float(v, fname, f"argument {n}") for v in leaves]
        boxes = [make(v) for v in vals]
        args[n] = unflatten(td, boxes)
        records.append((td, vals, boxes))
    return args, records


_LEAF_TD = flatten(0)[1]
_F64 = np.dtype(np.float64)


def _own(x, trace):
    """The value under ``x`` if ``x`` is a box of ``trace``, else ``x`` itself."""
    return x._value if isinstance(x, Box) and x._trace is trace else x


def _check_scalar(out, fname):
    if isinstance(out, tuple):
        raise TypeError(
            f"calcml.{fname}: the function returned a tuple; to return auxiliary data with "
            f"the value, pass has_aux=True and return (value, aux)"
        )
    shape = getattr(out, "shape", None)
    if shape is None:
        if isinstance(out, (int, float)):
            return
        raise TypeError(f"calcml.{fname}: the function must return a scalar array, it "
                        f"returned {type(out).__name__}")
    if tuple(shape) != ():
        dt = getattr(out, "dtype", "")
        raise ValueError(
            f"calcml.{fname}: the function must return a scalar, it returned an array of "
            f"shape {tuple(shape)} ({dt}); use cm.jacobian or cm.vjp for non-scalar outputs, "
            f"or reduce it (e.g. cm.sum)"
        )


def _split_aux(out, has_aux, fname):
    if not has_aux:
        return out, None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"calcml.{fname}: with has_aux=True the function must return "
                        f"(value, aux)")
    return out[0], out[1]


def _strip(tree, trace):
    leaves, td = flatten(tree)
    return unflatten(td, [_own(v, trace) for v in leaves])


def _scalar_and_seed(out, trace, fname, needs):
    """The value of ``out``, the function's output under ``trace``, checked to be a
    floating-point scalar (the errors of ``_check_scalar``; ``needs`` ends the dtype error),
    and the seed d out / d out = 1 for the backward pass."""
    r = out
    while isinstance(r, Box):
        r = r._value
    if (isinstance(r, (np.ndarray, np.generic)) and r.shape == () and r.dtype.kind in "fc"
            and isinstance(out, ReverseBox) and out._trace is trace):
        # the common case, a NumPy scalar that depends on the argument: every check below
        # passes, and the seed is the one _seed_like makes
        return out._value, np.array(1.0, dtype=r.dtype)
    _check_scalar(out, fname)
    value = _own(out, trace)
    if getattr(value, "dtype", _F64).kind not in "fc":
        raise TypeError(f"calcml.{fname}: the function returned dtype {value.dtype}; {needs}")
    return value, _seed_like(value)


def _seed_like(out):
    """d out / d out = 1, in the output's dtype and on its backend."""
    r = _raw(out)
    dt = getattr(r, "dtype", np.float64)
    if type(r) is np.ndarray or isinstance(r, (np.generic, int, float)):
        return np.array(1.0, dtype=dt)
    return backend.ones((), dt, like=r)



# --- reverse mode -------------------------------------------------------------------------

def _reverse(f, args, kwargs, nums, fname):
    trace = ReverseTrace(new_level())
    args, records = _box_args(args, nums, trace, fname,
                              lambda v: ReverseBox(v, trace, leaf_node()))
    return trace, f(*args, **kwargs), records


def _value_and_grad_one(f, args, kwargs, n):
    """``value_and_grad(f, n)`` for one floating-point array (or box) at ``args[n]``: the
    same passes and checks without the argument handling of the general path, which costs
    several times what a small function does (a training step calls this thousands of
    times)."""
    x = args[n]
    trace = ReverseTrace(new_level())
    leaf = ReverseBox(x, trace, leaf_node())
    out = f(*args[:n], leaf, *args[n + 1:], **kwargs)
    value, seed = _scalar_and_seed(out, trace, "grad", _GRAD_NEEDS)
    if not (isinstance(out, ReverseBox) and out._trace is trace):
        return value, _zeros_like(x)
    hit = backward_pass(out._node, seed).get(leaf._node[0])
    if hit is None:
        return value, _zeros_like(x)
    return value, _finish(hit[1], x, {id(backend.owner(seed))})


def _one_float_arg(args, n):
    """Whether ``args[n]`` exists and is a floating-point array or box (``_value_and_grad_one``
    applies)."""
    if 0 <= n < len(args):
        a = args[n]
        return (type(a) is np.ndarray or isinstance(a, Box)) and a.dtype.kind == "f"
    return False


_GRAD_NEEDS = "a gradient needs a floating-point output"
_HESS_NEEDS = "a Hessian needs a floating-point output"


def _gradients(trace, out, seed, records):
    grads = {}
    if isinstance(out, ReverseBox) and out._trace is trace:
        grads = backward_pass(out._node, seed)
    return _collect(grads, records, (seed,))


def _collect(grads, records, seeds):
    """The gradient of each boxed argument, from the leaves' entries of a backward pass
    started from ``seeds`` (never handed back as a gradient themselves)."""
    taken = {id(backend.owner(s)) for s in seeds}
    result = []
    for td, vals, boxes in records:
        gs = []
        for v, b in zip(vals, boxes):
            hit = grads.get(b._node[0])
            gs.append(_finish(hit[1], v, taken) if hit is not None else _zeros_like(v))
        result.append(gs[0] if td is _LEAF_TD else unflatten(td, gs))
    return result


def value_and_grad(f, argnums=0, has_aux=False):
    """Return a function computing ``(f(*args), ∇f(*args))`` in one forward and backward pass.

    Parameters
    ----------
    f : callable
        A scalar-valued function written with calcml's operations.
    argnums : int or tuple of int
        Which positional arguments to differentiate; a tuple gives a tuple of gradients.
    has_aux : bool
        ``f`` returns ``(value, aux)``; the result is then ``((value, aux), gradient)``.

    Notes
    -----
    If ``f`` uses tensors that require a gradient (a module's parameters), the gradient depends
    on them too and comes back as a :class:`~calcml.Tensor` that records, so that it can be
    differentiated again with ``backward()`` (a gradient penalty, say); under
    ``cm.no_grad()``, or with no such tensor, it is a plain array.

    Reverse mode: the forward pass records each primitive; the backward pass applies the
    chain rule ∂L/∂x = Σ ∂L/∂y · ∂y/∂x from the output to the inputs, in reverse
    topological order.  One backward pass gives the whole gradient, whatever the number of
    inputs.

    Examples
    --------
    >>> import calcml as cm, numpy as np
    >>> cm.value_and_grad(lambda x: cm.sum(x ** 2))(np.array([1.0, 2.0]))
    (np.float64(5.0), array([2., 4.]))
    """

    one = type(argnums) is int and not has_aux  # _value_and_grad_one may apply

    def wrapped(*args, **kwargs):
        if one and _one_float_arg(args, argnums):
            return _value_and_grad_one(f, args, kwargs, argnums)
        single, nums = _argnums(argnums, len(args), "grad")
        trace, out, records = _reverse(f, args, kwargs, nums, "grad")
        out, aux = _split_aux(out, has_aux, "grad")
        value, seed = _scalar_and_seed(out, trace, "grad", _GRAD_NEEDS)
        gs = _gradients(trace, out, seed, records)
        g = gs[0] if single else tuple(gs)
        if has_aux:
            return (value, _strip(aux, trace)), g
        return value, g

    wrapped.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    wrapped.__doc__ = f.__doc__
    return wrapped


def grad(f, argnums=0, has_aux=False):
    """Return a function computing the gradient of scalar ``f`` with respect to ``argnums``.

    See :func:`value_and_grad` for the parameters.  With ``has_aux=True`` the result is
    ``(gradient, aux)``.

    Examples
    --------
    >>> import calcml as cm, numpy as np
    >>> cm.grad(lambda x: cm.sum(cm.sin(x)))(np.array([0.0]))
    array([1.])
    """
    vg = value_and_grad(f, argnums, has_aux)
    one = type(argnums) is int and not has_aux

    def wrapped(*args, **kwargs):
        if one and _one_float_arg(args, argnums):  # as vg would, one call less
            return _value_and_grad_one(f, args, kwargs, argnums)[1]
        value, g = vg(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    wrapped.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    wrapped.__doc__ = f.__doc__
    return wrapped


def vjp(f, *primals, has_aux=False):
    """Run ``f(*primals)`` and return ``(out, vjp_fn)``; ``vjp_fn(cotangent)`` gives
    ``cotangentᵀ J``, one array (or tree) per primal, as a tuple.

    Notes
    -----
    For y = f(x) with Jacobian J = ∂y/∂x, the vector-Jacobian product uᵀJ is what one backward
    pass computes; ``vjp_fn`` may be called many times on the one recorded graph.
    """
    if not primals:
        raise TypeError("calcml.vjp: give at least one primal argument")
    nums = tuple(range(len(primals)))
    trace, out, records = _reverse(f, primals, {}, nums, "vjp")
    out, aux = _split_aux(out, has_aux, "vjp")
    out_leaves, out_td = flatten(out)
    out_vals = [_own(o, trace) for o in out_leaves]

    def vjp_fn(cotangent):
        ct_leaves, ct_td = flatten(cotangent)
        if ct_td != out_td:
            raise ValueError(f"calcml.vjp: the cotangent's structure {ct_td!r} does not match "
                             f"the output's {out_td!r}")
        total = None
        for o, v, c in zip(out_leaves, out_vals, ct_leaves):
            if tuple(getattr(c, "shape", ())) != tuple(getattr(v, "shape", ())):
                raise ValueError(
                    f"calcml.vjp: cotangent of shape {tuple(getattr(c, 'shape', ()))} for an "
                    f"output of shape {tuple(getattr(v, 'shape', ()))}")
            if not (isinstance(o, ReverseBox) and o._trace is trace):
                continue
            grads = backward_pass(o._node, c)
            if total is None:
                total = grads
            else:
                for k, (node, g) in grads.items():
                    prev = total.get(k)
                    total[k] = (node, g if prev is None else prev[1] + g)
        return tuple(_collect(total or {}, records, ct_leaves))

    value = unflatten(out_td, out_vals)
    if has_aux:
        return value, vjp_fn, _strip(aux, trace)
    return value, vjp_fn


# --- forward mode -------------------------------------------------------------------------

def _forward(f, primals, tangents, batch_shape, fname):
    trace = ForwardTrace(new_level(), batch_shape)
    boxed = []
    for i, (p, t) in enumerate(zip(primals, tangents)):
        if (type(p) is np.ndarray and type(t) is np.ndarray and p.dtype.kind == "f"
                and t.dtype == p.dtype and t.shape == tuple(batch_shape) + p.shape):
            boxed.append(ForwardBox(p, trace, t))  # the common case, no tree walk
            continue
        pl, ptd = flatten(p)
        tl, ttd = flatten(t)
        if ptd != ttd:
            raise ValueError(f"calcml.{fname}: tangent {i} has structure {ttd!r} but primal "
                             f"{i} has {ptd!r}")
        leaves = []
        for pv, tv in zip(pl, tl):
            pv = _as_float(pv, fname, f"primal {i}")
            tv = _as_float(tv, fname, f"tangent {i}")
            want = tuple(batch_shape) + tuple(pv.shape)
            if tuple(tv.shape) != want:
                lead = (f"; batch axis {tuple(batch_shape)}, from the first tangent"
                        if batch_shape else "")
                raise ValueError(f"calcml.{fname}: tangent {i} has shape {tuple(tv.shape)} but "
                                 f"its primal needs {want} (primal {pv.dtype} "
                                 f"{tuple(pv.shape)}, tangent {tv.dtype}{lead})")
            if tv.dtype != pv.dtype and not isinstance(tv, Box):
                tv = tv.astype(pv.dtype)
            leaves.append(ForwardBox(pv, trace, tv))
        boxed.append(unflatten(ptd, leaves))
    out = f(*boxed)
    if isinstance(out, ForwardBox) and out._trace is trace:
        return _plain(out._value), _plain(out._tangent)
    out_leaves, out_td = flatten(out)
    vals, tans = [], []
    for o in out_leaves:
        if isinstance(o, ForwardBox) and o._trace is trace:
            vals.append(o._value)
            tans.append(o._tangent)
        else:
            vals.append(o)
            oshape = tuple(getattr(o, "shape", ()))
            dt = getattr(o, "dtype", np.float64)
            tans.append(backend.zeros(tuple(batch_shape) + oshape, dt, like=_raw(o)))
    return (unflatten(out_td, [_plain(v) for v in vals]),
            unflatten(out_td, [_plain(t) for t in tans]))


def jvp(f, primals, tangents, batched=False):
    """Forward mode: return ``(f(*primals), J·tangents)`` without recording a graph.

    Parameters
    ----------
    f : callable
    primals, tangents : tuple or list
        One tangent per primal, of the same shape (and structure).
    batched : bool
        Each tangent carries one leading batch axis: ``J`` is applied to all of them in the
        same pass, and the output tangent has the same leading axis.

    Notes
    -----
    Each value carries its directional derivative: for y = g(x), ẏ = g'(x)·ẋ.  The cost is a
    small multiple of evaluating ``f``, for one input direction (or one batch of directions).
    """
    if not isinstance(primals, (tuple, list)):
        raise TypeError(f"calcml.jvp: primals must be a tuple or list of arguments, got "
                        f"{type(primals).__name__}; write cm.jvp(f, (x,), (v,))")
    if not isinstance(tangents, (tuple, list)):
        raise TypeError(f"calcml.jvp: tangents must be a tuple or list, got "
                        f"{type(tangents).__name__}; write cm.jvp(f, (x,), (v,))")
    if len(primals) != len(tangents):
        raise ValueError(f"calcml.jvp: {len(primals)} primals but {len(tangents)} tangents")
    batch = ()
    if batched:
        first = flatten(tangents)[0]
        if not first or not getattr(first[0], "shape", ()):
            got = f"shape {tuple(getattr(first[0], 'shape', ()))}" if first else "no array"
            raise ValueError("calcml.jvp: batched=True needs tangents with a leading batch "
                             f"axis, shaped (batch,) + primal.shape; tangent 0 has {got}")
        batch = (first[0].shape[0],)
    return _forward(f, tuple(primals), tuple(tangents), batch, "jvp")


# --- Jacobians and Hessians ---------------------------------------------------------------

def _arg_leaves(arg, fname, n):
    """The floating-point leaves of argument ``n``, its structure, each leaf's size."""
    leaves, td = flatten(arg)
    if not leaves:
        raise ValueError(f"calcml.{fname}: argument {n} holds no array to differentiate")
    leaves = [_as_float(v, fname, f"argument {n}") for v in leaves]
    return leaves, td, [math.prod(tuple(v.shape)) for v in leaves]


def _in_dtype_of(j, v):
    """A Jacobian block in its argument's dtype, as reverse mode (and ``grad``) gives it."""
    if isinstance(j, Box) or isinstance(v, Box) or j.dtype == v.dtype:
        return j
    return j.astype(v.dtype)


def _split_columns(j, oshape, leaves, sizes, td):
    """Columns of an (m, n) Jacobian block per argument leaf, each shaped oshape + leaf.shape
    and in the leaf's dtype, rebuilt into the argument's structure."""
    if len(leaves) == 1:
        j = _in_dtype_of(reshape(j, oshape + tuple(leaves[0].shape)), leaves[0])
        return j if td.kind == "leaf" else unflatten(td, [j])
    parts, off = [], 0
    for v, s in zip(leaves, sizes):
        parts.append(_in_dtype_of(reshape(j[:, off:off + s], oshape + tuple(v.shape)), v))
        off += s
    return parts[0] if td.kind == "leaf" else unflatten(td, parts)


def _jac_fwd(f, args, kwargs, n):
    """Per output leaf, the Jacobian w.r.t. argument ``n``: all n input directions carried at
    once as one batch of tangents (one basis vector of the flattened argument each)."""
    leaves, td, sizes = _arg_leaves(args[n], "jacobian", n)
    size = sum(sizes)
    basis, off = [], 0
    for v, s in zip(leaves, sizes):
        b = backend.zeros((size, s), v.dtype, like=_raw(v))
        idx = backend.get_xp(b).arange(s)
        b[off + idx, idx] = 1
        basis.append(reshape(b, (size,) + tuple(v.shape)))
        off += s
    primals = list(args)

    def g(xx):
        primals[n] = xx
        return f(*primals, **kwargs)

    out, tans = _forward(g, (unflatten(td, leaves),), (unflatten(td, basis),), (size,),
                         "jacobian")
    ol, otd = flatten(out)
    tl, _ = flatten(tans)
    jacs = []
    for t, o in zip(tl, ol):
        oshape = tuple(getattr(o, "shape", ()))
        m = math.prod(oshape)
        jacs.append(_split_columns(transpose(reshape(t, (size, m))), oshape, leaves, sizes, td))
    return jacs, otd


def _jac_rev(f, args, kwargs, n):
    """Per output leaf, the Jacobian w.r.t. argument ``n``: one backward pass per output
    element, on the one recorded graph."""
    trace, out, records = _reverse(f, args, kwargs, (n,), "jacobian")
    td, vals, boxes = records[0]
    leaves = vals
    ol, otd = flatten(out)
    jacs = []
    for o in ol:
        ov = _own(o, trace)
        oshape = tuple(getattr(ov, "shape", ()))
        m = math.prod(oshape)
        if m == 0 or not (isinstance(o, ReverseBox) and o._trace is trace):
            # independent of the argument, or no output element to pull back (size 0)
            parts = [backend.zeros(oshape + tuple(v.shape), v.dtype, like=_raw(v))
                     for v in leaves]
            jacs.append(parts[0] if td.kind == "leaf" else unflatten(td, parts))
            continue
        eye = backend.eye(m, getattr(ov, "dtype", leaves[0].dtype), like=_raw(ov))
        rows = [[] for _ in leaves]
        for i in range(m):  # one backward pass per output element, on the one graph
            grads = backward_pass(o._node, eye[i].reshape(oshape))
            for k, (v, b) in enumerate(zip(leaves, boxes)):
                hit = grads.get(b._node[0])
                rows[k].append(_finish(hit[1], v, set()) if hit is not None
                               else _zeros_like(v))
        parts = [reshape(stack(r), oshape + tuple(v.shape)) for r, v in zip(rows, leaves)]
        jacs.append(parts[0] if td.kind == "leaf" else unflatten(td, parts))
    return jacs, otd


def jacobian(f, argnums=0, mode="rev"):
    """Return a function computing the full Jacobian of ``f``, shape ``out.shape + arg.shape``.

    Parameters
    ----------
    f : callable
    argnums : int or tuple of int
        A tuple gives a tuple of Jacobians, one per argument (for an output that is a
        container, one such tuple at each of its leaves).  An argument may be a list, tuple
        or dict of arrays: its Jacobian then has the argument's structure, holding at each
        leaf the block ``out.shape + leaf.shape`` (JAX's layout).
    mode : {"rev", "fwd"}
        ``"rev"``: one backward pass per output element (m VJPs on one recorded graph), best
        when outputs are few.  ``"fwd"``: one forward pass carrying all n input basis vectors
        at once as a batch of tangents, best when inputs are few.

    Notes
    -----
    J_ij = ∂f_i/∂x_j.  Both modes give the same matrix, in the argument's dtype (as
    ``grad`` does); they differ in cost.  A container
    argument is differentiated as the vector of all its leaves' entries, and the columns
    of that Jacobian are handed back leaf by leaf.

    Examples
    --------
    >>> import calcml as cm, numpy as np
    >>> J = cm.jacobian(lambda p: p["w"] * p["b"])({"w": np.ones(2), "b": np.array(3.0)})
    >>> J["w"], J["b"]
    (array([[3., 0.],
           [0., 3.]]), array([1., 1.]))
    """
    if mode not in ("rev", "fwd"):
        raise ValueError(f"calcml.jacobian: mode must be 'rev' or 'fwd', got {mode!r}")

    def wrapped(*args, **kwargs):
        single, nums = _argnums(argnums, len(args), "jacobian")
        one = _jac_fwd if mode == "fwd" else _jac_rev
        per_arg = []
        out_td = None
        for n in nums:
            jacs, out_td = one(f, args, kwargs, n)
            per_arg.append(jacs)
        if single:
            return unflatten(out_td, per_arg[0])
        # JAX's layout: the output's structure outside, a tuple over ``argnums`` at each of its
        # leaves, so that hessian(f, (0, 1))[i][j] = ∂²f/∂x_i∂x_j, shaped x_i.shape + x_j.shape.
        return unflatten(out_td, [tuple(p[k] for p in per_arg) for k in range(len(per_arg[0]))])

    wrapped.__name__ = f"jacobian({getattr(f, '__name__', 'f')})"
    return wrapped


def hessian(f, argnums=0):
    """Return a function computing the Hessian of scalar ``f``, shape ``arg.shape + arg.shape``.

    Notes
    -----
    H_ij = ∂²f/∂x_i∂x_j, computed forward-over-reverse: the forward-mode Jacobian of the
    reverse-mode gradient, all n directions in one batched pass.  With a tuple ``argnums``
    the result is nested as ``H[i][j]``, of shape ``args[i].shape + args[j].shape``; for an
    argument that is a container, ``H[a][b]`` is the block ∂²f/∂a∂b of its leaves ``a`` and
    ``b``, shaped ``a.shape + b.shape``.

    Examples
    --------
    >>> import calcml as cm, numpy as np
    >>> H = cm.hessian(lambda p: cm.sum(p[0] ** 2 * p[1]))([np.ones(2), np.array(3.0)])
    >>> H[0][0], H[0][1], H[1][1]
    (array([[6., 0.],
           [0., 6.]]), array([2., 2.]), array(0.))
    """
    return jacobian(grad(f, argnums), argnums, mode="fwd")


def hvp(f, primals, tangents):
    """The Hessian-vector product H·v of scalar ``f`` at ``primals``, without forming H.

    Returns one array per primal (a single array when there is one primal).

    Notes
    -----
    H v = d/dε ∇f(x + εv) at ε = 0: forward mode (``jvp``) through the reverse-mode gradient,
    at the cost of a few gradient evaluations, whatever the dimension.
    """
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("calcml.hvp: primals and tangents must be tuples, "
                        "e.g. cm.hvp(f, (x,), (v,))")
    if len(primals) == 1 and len(tangents) == 1:
        x, v = primals[0], tangents[0]
        if (type(x) is np.ndarray and type(v) is np.ndarray and x.dtype.kind == "f"
                and v.dtype == x.dtype and v.shape == x.shape):
            return _hvp_array(f, x, v)
    if len(primals) != len(tangents):
        raise ValueError(f"calcml.hvp: {len(primals)} primals but {len(tangents)} tangents")
    if not primals:
        raise ValueError("calcml.hvp: needs at least one primal, e.g. cm.hvp(f, (x,), (v,))")
    nums = tuple(range(len(primals)))

    def gradient(*xs):  # grad(f, nums), with its errors naming hvp
        trace, out, records = _reverse(f, xs, {}, nums, "hvp")
        _, seed = _scalar_and_seed(out, trace, "hvp", _HESS_NEEDS)
        return tuple(_gradients(trace, out, seed, records))

    _, ts = _forward(gradient, tuple(primals), tuple(tangents), (), "hvp")
    # H·v in each primal's dtype, as grad and the one-array path give it (a float64 constant
    # in f may have promoted the tangent of a float32 gradient)
    res = []
    for i, (p, t) in enumerate(zip(primals, ts)):
        pl = flatten(p)[0]
        tl, ttd = flatten(t)
        res.append(unflatten(ttd, [_in_dtype_of(tv, _as_float(pv, "hvp", f"primal {i}"))
                                   for pv, tv in zip(pl, tl)]))
    return res[0] if len(primals) == 1 else tuple(res)


def _hvp_array(f, x, v):
    """``hvp`` for one array argument: the same forward-over-reverse passes as
    ``jvp(grad(f), (x,), (v,))``, without the argument handling of two transforms."""
    outer = ForwardTrace(new_level())
    inner = ReverseTrace(new_level())
    leaf = ReverseBox(ForwardBox(x, outer, v), inner, leaf_node())
    out = f(leaf)
    _, seed = _scalar_and_seed(out, inner, "hvp", _HESS_NEEDS)
    if not (isinstance(out, ReverseBox) and out._trace is inner):
        return _zeros_like(x)
    hit = backward_pass(out._node, seed).get(leaf._node[0])
    if hit is None:
        return _zeros_like(x)
    g = _plain(hit[1])
    if not (isinstance(g, ForwardBox) and g._trace is outer):
        return _zeros_like(x)  # the gradient does not depend on x: H = 0
    return _finish(g._tangent, x, set())

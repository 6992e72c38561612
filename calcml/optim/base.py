"""The shape of every optimizer: a :class:`GradientTransformation` and :func:`apply_updates`.

Learned from optax.  A *gradient transformation* is a pair of pure functions

* ``init(params) -> state``: a NamedTuple of arrays (per-parameter buffers mirror the
  parameter tree; step counts are 0-d ``int64`` arrays);
* ``update(updates, state, params=None) -> (updates, new_state)``: turns a gradient tree into
  an update tree of the same structure.

Transforms are links in a chain (:func:`calcml.optim.chain`): clipping, regularization, the
adaptive scalings and the learning rate are separate links, never flags on an optimizer.  The
learning rate is negated inside :func:`calcml.optim.scale_by_learning_rate`, so
:func:`apply_updates` always *adds*: ``θ ← θ + u``.

Ownership (why the transforms are fast and still functional)
-----------------------------------------------------------
``update`` never writes into its arguments (the gradients, the old state, the parameters), so
an old state stays valid and may be reused, compared or saved.  Inside one ``update`` a
transform writes with ``out=`` only into arrays it has just allocated itself (the new state,
a scratch buffer that becomes the returned update), which removes most temporaries of the
naive expressions without giving up purity.  An update may be the very array stored in the
new state (``trace`` returns its buffer), so callers must not modify updates in place either.

Doing the work in place where nobody can tell
---------------------------------------------
In optax every link of a chain writes a new tree: ``adam = chain(scale_by_adam(),
scale_by_learning_rate(lr))`` spends a whole extra pass over the parameters just to multiply
by ``-lr``, and every step allocates new state buffers.  Each transform here is written once,
as ``run(updates, state, params, own_updates, own_state) -> (updates, state, fresh)``
(see :func:`transformation`):

* ``own_updates``: the caller owns the incoming update arrays (nobody else refers to them), so
  the link may overwrite them;
* ``own_state``: the caller owns the state's arrays exclusively, so the link may update its
  buffers in place (the new state then holds the same arrays);
* ``fresh`` (returned): the outgoing arrays are owned by the caller in the same sense.

The public ``update`` is ``run`` with both flags False: pure, as above.
:func:`~calcml.optim.chain` passes each link's ``fresh`` on as the next link's
``own_updates``, so the learning rate, ``scale``, the clippings and ``proximal_l1`` cost no
allocation after Adam, RMSprop, AdaGrad or a penalty; everything overwritten was allocated
inside the same call.  :class:`~calcml.optim.Optimizer`, which holds its state privately,
calls ``run`` with ``own_state=True`` and so updates the moment buffers in place, like a
hand-written NumPy loop (its ``state_dict()`` returns copies).

One leaf at a time
------------------
Most links treat every leaf on its own (all but :func:`~calcml.optim.clip_by_global_norm`).
They are written once, as a per-leaf *kernel* (see :func:`leafwise`), and their ``run`` maps
the kernel over the leaves.  A whole chain of such links is leafwise too, which lets
:class:`~calcml.optim.Optimizer` finish each parameter (every link, then ``θ += u``) before
it starts the next: the temporaries of one leaf are freed while they are still in cache,
as in a NumPy loop ``for p, g in ...: p -= lr * g``, instead of a whole tree of updates
being alive at once.  The step count advances once per step, in the kernel's ``finish``.

The helpers below (validation of hyperparameters, matching a gradient tree against the tree
a state was built for) are shared by all the transforms and give their error messages one
shape: ``calcml.optim.<transform>: <what> must be ..., got <value>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .. import backend
from .._core.tree import flatten as _flatten
from .._core.tree import unflatten as _unflatten

__all__ = [
    "GradientTransformation",
    "transformation",
    "leafwise",
    "run_update",
    "EmptyState",
    "apply_updates",
    "identity",
    "current_learning_rate",
    "step_count",
]


class GradientTransformation(NamedTuple):
    """A pair of pure functions ``(init, update)``: one link of an optimizer.

    Attributes
    ----------
    init : callable
        ``init(params) -> state``; ``params`` is an array or a list/tuple/dict of arrays.
    update : callable
        ``update(updates, state, params=None) -> (updates, new_state)``.  ``updates`` is the
        gradient tree (or the output of the previous link of a chain); ``params`` is needed by
        the links that look at the parameters (``l2``, ``l1``, ``elastic_net``,
        ``proximal_l1``).

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> opt = cm.optim.sgd(0.1)
    >>> params = np.array([1.0, -2.0])
    >>> state = opt.init(params)
    >>> updates, state = opt.update(2 * params, state, params)
    >>> cm.optim.apply_updates(params, updates)
    array([ 0.8, -1.6])
    """

    init: Callable[[Any], Any]
    update: Callable[..., Any]


def transformation(init, run, start=None):
    """Make a :class:`GradientTransformation` from ``init`` and an ownership-aware ``run``.

    Parameters
    ----------
    init : callable
        ``init(params) -> state``.
    run : callable
        ``run(updates, state, params, own_updates, own_state) -> (updates, state, fresh)``;
        see the module docstring for the meaning of the flags.
    start : callable, optional
        The per-leaf form of the same transform (see :func:`leafwise`), when it has one.

    Returns
    -------
    GradientTransformation
        Its ``update(updates, state, params=None)`` is ``run`` with both flags False (pure);
        ``update.run`` keeps ``run`` for :func:`run_update` and ``update.start`` keeps
        ``start`` (or None).
    """

    def update(updates, state, params=None):
        u, s, _ = run(updates, state, params, False, False)
        return u, s

    update.run = run
    update.start = start
    return GradientTransformation(init, update)


def leafwise(name, init, start):
    """Make a :class:`GradientTransformation` that treats every leaf on its own.

    Parameters
    ----------
    name : str
        The transform's name, for error messages.
    init : callable
        ``init(params) -> state``.
    start : callable
        ``start(state, params, own_state) -> (kernel, finish, ref)``, called once per update:
        it checks the state and computes what the step shares across leaves (the step count,
        a scheduled rate, bias corrections).

        * ``kernel(i, g, p, own) -> (u, fresh)`` turns leaf ``i`` of the incoming updates
          ``g`` (with ``p`` the matching parameter when ``ref`` is the parameters, else
          None) into its outgoing update; ``own``
          and ``fresh`` have the meaning of ``own_updates`` and ``fresh`` in ``run``.  With
          ``own_state`` it updates the state's buffers of leaf ``i`` in place.
        * ``finish() -> new_state``, once every leaf went through the kernel.
        * ``ref``: ``(leaves, treedef, what)``, the tree the updates must match (the state's
          buffers, ``what="state"``, or the parameters, ``what="params"``), or None.

    Returns
    -------
    GradientTransformation
        ``update.run`` maps the kernel over the leaves; ``update.start`` is ``start``, which
        :func:`~calcml.optim.chain` and :class:`~calcml.optim.Optimizer` use to run a whole
        chain one parameter at a time.
    """

    def run(updates, state, params, own_updates, own_state):
        kernel, finish, ref = start(state, params, own_state)
        if ref is None:
            leaves, td = flatten(updates)
        else:
            leaves = match_tree(name, updates, ref[0], ref[1], what=ref[2])
            td = ref[1]
        # the kernels that read the parameters are those matched against them
        p_leaves = ref[0] if ref is not None and ref[2] == "params" else (None,) * len(leaves)
        out = []
        fresh = True
        for i, (g, p) in enumerate(zip(leaves, p_leaves)):
            u, f = kernel(i, g, p, own_updates)
            out.append(u)
            fresh = fresh and f
        return unflatten(td, out), finish(), fresh

    return transformation(init, run, start)


def run_update(transform, updates, state, params=None, own_updates=False, own_state=False):
    """Call a transform's ``run`` with ownership flags: ``(updates, state, fresh)``.

    A transform built as a plain ``GradientTransformation(init, update)`` (a user's own) is
    called through ``update``, which is always safe: its output counts as not fresh.
    """
    run = getattr(transform.update, "run", None)
    if run is None:
        u, s = transform.update(updates, state, params)
        return u, s, False
    return run(updates, state, params, own_updates, own_state)


class EmptyState(NamedTuple):
    """The state of a stateless transform."""


def identity():
    """The transform that returns the updates unchanged (a neutral link of a chain).

    Returns
    -------
    GradientTransformation
    """

    def init(params):
        return EmptyState()

    def run(updates, state, params, own_updates, own_state):
        return updates, state, own_updates  # passes owned arrays through

    def start(state, params, own_state):
        return _pass_through, lambda: state, None

    return transformation(init, run, start)


def _pass_through(i, g, p, own):
    return g, own


def apply_updates(params, updates):
    """Return ``params + updates``, leaf by leaf, keeping each parameter's dtype.

    Parameters
    ----------
    params : array or pytree of arrays
    updates : pytree of the same structure and shapes (from a transform's ``update``)

    Returns
    -------
    pytree
        New arrays; ``params`` is not modified.

    Raises
    ------
    ValueError
        If the two trees differ in structure or in a leaf's shape.

    Notes
    -----
    ``θ ← θ + u``.  The update already carries the sign (``scale_by_learning_rate`` negates
    the learning rate), so this always adds.
    """
    p_leaves, p_td = flatten(params)
    u_leaves = match_tree("apply_updates", updates, p_leaves, p_td, what="params",
                          label="updates")
    out = []
    for i, (p, u) in enumerate(zip(p_leaves, u_leaves)):
        if type(p) is np.ndarray and p.ndim:
            r = p + u
            if r.dtype is not p.dtype and r.dtype != p.dtype:  # rare: NumPy's casting rules
                r = _add_in_dtype(i, p, u)
        else:  # 0-d leaves and other backends
            r = _add_in_dtype(i, p, u)
        out.append(r)
    return unflatten(p_td, out)


def _add_in_dtype(i, p, u):
    """``p + u`` in ``p``'s dtype (``out=`` also keeps a 0-d leaf an array, not a scalar)."""
    kind = np.dtype(getattr(p, "dtype", np.float64)).kind
    if kind not in "fc":
        raise TypeError(f"calcml.optim.apply_updates: parameter leaf {i} has dtype "
                        f"{p.dtype} and shape {tuple(np.shape(p))}; parameters must be "
                        f"floating point (cast them, e.g. x.astype(float))")
    return np.add(p, u, out=empty_like(p))


# --- reading the state --------------------------------------------------------------------

def _find_field(state, field):
    """The first value of ``field`` in a (nested) state, depth first in chain order."""
    stack = [state]
    while stack:
        s = stack.pop()
        if isinstance(s, tuple):
            if hasattr(s, "_fields") and field in s._fields:
                return getattr(s, field)
            stack.extend(reversed([c for c in s if isinstance(c, tuple)]))
    return None


def current_learning_rate(state):
    """The learning rate held in an optimizer's state.

    Parameters
    ----------
    state : the state of a transform or chain that contains a ``scale_by_learning_rate`` link

    Returns
    -------
    float
        The rate used by the most recent ``update`` (right after ``init``: the rate the first
        update will use, ``schedule(0)``).

    Raises
    ------
    ValueError
        If no link of the state carries a learning rate.
    """
    lr = _find_field(state, "learning_rate")
    if lr is None:
        raise ValueError("calcml.optim.current_learning_rate: this state has no learning_rate "
                         "field (no scale_by_learning_rate link in the chain)")
    return float(lr)


def step_count(state):
    """The number of updates applied so far, read from the first ``count`` in the state.

    Raises
    ------
    ValueError
        If no link of the state counts steps.
    """
    c = _find_field(state, "count")
    if c is None:
        raise ValueError("calcml.optim.step_count: this state has no count field")
    return int(c)


# --- helpers shared by the transforms -----------------------------------------------------

# Trees flatten and unflatten several times per update; the common shapes (one array, a flat
# list or tuple of NumPy arrays) skip the general recursive walk.  The TreeDefs they return
# are the ones calcml._core.tree builds (made by it once and cached), so both mix freely.
_LEAF_DEF = _flatten(0.0)[1]
_SEQ_DEFS = {}
_SEQ_KIND = {}


def flatten(tree):
    """``calcml._core.tree.flatten`` with fast paths for an array and a flat list/tuple."""
    t = type(tree)
    if t is np.ndarray:
        return [tree], _LEAF_DEF
    if t is list or t is tuple:
        for x in tree:
            if type(x) is not np.ndarray:
                return _flatten(tree)
        key = (t, len(tree))
        td = _SEQ_DEFS.get(key)
        if td is None:
            td = _SEQ_DEFS[key] = _flatten(tree)[1]
            _SEQ_KIND[id(td)] = t
        return list(tree), td
    return _flatten(tree)


def unflatten(td, leaves):
    """``calcml._core.tree.unflatten`` with the fast paths of :func:`flatten`."""
    if td is _LEAF_DEF:
        return leaves[0]
    t = _SEQ_KIND.get(id(td))
    if t is list:
        return list(leaves)
    if t is tuple:
        return tuple(leaves)
    return _unflatten(td, leaves)


def zero_count():
    """A fresh step count, 0 (a 0-d int64 array, on the host whatever the backend)."""
    return np.zeros((), dtype=np.int64)


def next_count(k):
    """The step count ``k + 1`` as a new 0-d int64 array."""
    return np.array(k + 1, dtype=np.int64)


def out_for(x, own):
    """Where a ufunc writes its result: into ``x`` itself if owned, else a new array."""
    return x if own else empty_like(x)


def empty_like(x):
    """An uninitialised array like ``x`` (shape, dtype, backend), for a ufunc's ``out=``.

    Giving every ufunc an explicit ``out`` makes 0-d leaves stay 0-d arrays (a ufunc on 0-d
    arrays returns a NumPy scalar, which cannot serve as ``out`` of the next call).
    """
    if type(x) is np.ndarray:
        return np.empty_like(x)
    return backend.get_xp(x).empty_like(x)


def zeros_like_tree(params, initial=0.0):
    """Arrays of ``initial`` shaped and typed like each leaf, on that leaf's own backend."""
    leaves, td = flatten(params)
    out = []
    for p in leaves:
        shape, dt = np.shape(p), getattr(p, "dtype", np.float64)
        if np.dtype(dt).kind not in "fc":
            dt = np.float64
        z = backend.zeros_aligned(shape, dt, like=p)  # lives as long as the optimizer
        if initial:
            z += initial
        out.append(z)
    return unflatten(td, out)


def _shapes(leaves):
    return [tuple(np.shape(x)) for x in leaves]


def match_tree(name, tree, ref_leaves, ref_td, what="state", label="gradient"):
    """The leaves of ``tree``, after checking its structure and shapes against a reference.

    Raises ``ValueError`` naming both structures (or both lists of shapes) on a mismatch.
    """
    leaves, td = flatten(tree)
    if td is not ref_td and td != ref_td:
        raise ValueError(f"calcml.optim.{name}: the {label} tree {td!r} does not match the "
                         f"tree of the {what} {ref_td!r}")
    for g, r in zip(leaves, ref_leaves):
        try:
            same = g.shape == r.shape
        except AttributeError:  # a Python number as a leaf
            same = np.shape(g) == np.shape(r)
        if not same:
            raise ValueError(f"calcml.optim.{name}: the {label} shapes {_shapes(leaves)} do not "
                             f"match the shapes of the {what} {_shapes(ref_leaves)}")
    return leaves


def need_params(name, params):
    if params is None:
        raise ValueError(f"calcml.optim.{name}: update needs params (call "
                         f"update(grads, state, params))")


def check_state(name, state, cls):
    if not isinstance(state, cls):
        raise TypeError(f"calcml.optim.{name}: expected a {cls.__name__}, got "
                        f"{type(state).__name__} (was this state made by another transform?)")


def as_dtype(g, dt):
    """``g`` in dtype ``dt`` (a no-op in the usual case where they already agree)."""
    gd = getattr(g, "dtype", None)
    if gd is None:
        return np.asarray(g, dtype=dt)
    return g if gd == dt else g.astype(dt)


def real(name, what, value):
    """``value`` as a Python float (so that float32 arrays stay float32), or TypeError."""
    if (isinstance(value, (bool, np.bool_, str, bytes)) or callable(value)
            or np.ndim(value) != 0):
        raise TypeError(f"calcml.optim.{name}: {what} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"calcml.optim.{name}: {what} must be a real number, "
                        f"got {value!r}") from None
    if math.isnan(v):
        raise ValueError(f"calcml.optim.{name}: {what} must be a number, got {value!r}")
    return v


def nonneg(name, what, value, allow_inf=False):
    """A real ``value`` >= 0 (finite unless ``allow_inf``), else ValueError."""
    v = real(name, what, value)
    if v < 0 or (math.isinf(v) and not allow_inf):
        bound = ">= 0" if allow_inf else "finite and >= 0"
        raise ValueError(f"calcml.optim.{name}: {what} must be {bound}, got {value!r}")
    return v


def unit(name, what, value):
    """A real ``value`` in [0, 1), else ValueError."""
    v = real(name, what, value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"calcml.optim.{name}: {what} must be in [0, 1), got {value!r}")
    return v


def rate(name, learning_rate):
    """A learning rate: a float >= 0, or a schedule (a callable ``k -> rate``) kept as is."""
    if callable(learning_rate):
        return learning_rate
    return nonneg(name, "learning_rate", learning_rate)


def rate_at(name, lr, k):
    """The rate at step ``k``: the constant, or the schedule's value checked to be >= 0."""
    if not callable(lr):
        return lr
    r = lr(k)
    try:
        v = float(r)
    except (TypeError, ValueError):
        raise TypeError(f"calcml.optim.{name}: the learning-rate schedule returned {r!r} at "
                        f"step {k}; it must return a number") from None
    if not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"calcml.optim.{name}: the learning-rate schedule returned {v!r} at "
                         f"step {k}; a rate must be finite and >= 0")
    return v

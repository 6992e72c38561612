"""The optimizers users ask for by name, each only a :func:`~calcml.optim.chain` of links.

Hyperparameters are checked here first, so that an error names the optimizer the user
called (``calcml.optim.adam: b2 must be in [0, 1), got 1.0``), then again by the links.
"""

from __future__ import annotations

import numpy as np

from .base import (
    as_dtype,
    empty_like,
    flatten,
    next_count,
    nonneg,
    rate,
    rate_at,
    transformation,
    unit,
)
from .combine import chain
from .regularization import proximal_l1
from .transforms import (
    ScaleByAdamState,
    ScaleByLearningRateState,
    TraceState,
    adam_leaf,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)

__all__ = ["sgd", "adam", "rmsprop", "adagrad", "proximal_gradient"]


def sgd(learning_rate, momentum=0.0, nesterov=False):
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Parameters
    ----------
    learning_rate : float >= 0 or schedule ``k -> rate``
    momentum : float >= 0, default 0
    nesterov : bool, default False

    Returns
    -------
    GradientTransformation
        ``chain(scale_by_learning_rate(lr))``, or ``chain(trace(momentum, nesterov),
        scale_by_learning_rate(lr))`` when ``momentum > 0`` or ``nesterov``.

    Notes
    -----
    Plain: ``θ_{k+1} = θ_k - α_k g_k`` (chapter 9.1).  With momentum μ (PyTorch's form):
    ``b_k = μ b_{k-1} + g_k``, ``θ_{k+1} = θ_k - α_k b_k``; Nesterov:
    ``θ_{k+1} = θ_k - α_k (g_k + μ b_k)``.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> opt = cm.optim.sgd(0.1, momentum=0.9)
    >>> x = np.array(1.0); state = opt.init(x)
    >>> for _ in range(2):
    ...     u, state = opt.update(2 * x, state, x)   # f(x) = x²
    ...     x = cm.optim.apply_updates(x, u)
    >>> round(float(x), 12)    # 1 - 0.1·2, then 0.8 - 0.1·(0.9·2 + 1.6)
    0.46
    """
    lr = rate("sgd", learning_rate)
    mu = nonneg("sgd", "momentum", momentum)
    if mu == 0.0 and not nesterov:
        return chain(scale_by_learning_rate(lr))
    t = chain(trace(mu, nesterov=nesterov), scale_by_learning_rate(lr))
    return transformation(t.init, t.update.run,
                          _momentum_start(t.update.start, mu, bool(nesterov), lr))


def _momentum_leaf(b, g, mu, step, nesterov):
    """One leaf of ``chain(trace(mu, nesterov), scale_by_learning_rate)``: b <- mu b + g in
    place, then the update ``step·b`` (or ``step·(g + mu b)`` with Nesterov) as a new array."""
    gd = getattr(g, "dtype", None)
    if gd is not b.dtype and gd != b.dtype:
        g = as_dtype(g, b.dtype)
    b *= mu  # trace: b <- mu b + g, in place
    b += g
    if nesterov:  # trace's g + mu b, then the rate, in place on that fresh array
        u = np.multiply(b, mu, out=empty_like(b))
        u += g
        return np.multiply(u, step, out=u)
    if b.ndim:
        return b * step
    return np.multiply(b, step, out=empty_like(b))  # a 0-d leaf stays 0-d


def _momentum_start(general, mu, nesterov, lr):
    """The per-leaf form of ``chain(trace(mu, nesterov), scale_by_learning_rate(lr))`` with
    the two links in one kernel, for an :class:`~calcml.optim.Optimizer` that owns the state
    (its in-place path, once per training step): the same operations in the same order, so
    the same numbers, one Python call per parameter instead of three.  Anything else (a
    state made elsewhere, the pure ``update``) goes through the chain itself.

    ``start.step_in_place(state, grads, params, on_error)`` is the whole of such a step in
    one call: every leaf's update, θ += u in place, and the new state (None when the state
    is not this chain's own; a parameter that refuses ``+=`` goes to
    ``on_error(i, θ, u, exc)``)."""
    lr_name = "scale_by_learning_rate"

    def own(state):
        return (type(state) is tuple and len(state) == 2 and type(state[0]) is TraceState
                and type(state[1]) is ScaleByLearningRateState)

    def start(state, params, own_state):
        if not (own_state and own(state)):
            return general(state, params, own_state)
        ts, ss = state
        b_leaves, td = flatten(ts.trace)
        k = int(ss.count)
        a = rate_at(lr_name, lr, k)
        step = -a

        def kernel(i, g, p, own):
            return _momentum_leaf(b_leaves[i], g, mu, step, nesterov), True

        def finish():  # the buffers were updated in place: the trace state is the same tree
            return ts, ScaleByLearningRateState(next_count(k), np.asarray(a))

        return kernel, finish, (b_leaves, td, "state")

    def step_in_place(state, grads, params, on_error):
        if not own(state):
            return None
        ts, ss = state
        k = int(ss.count)
        a = rate_at(lr_name, lr, k)
        step = -a
        i = 0
        for b, g, d in zip(flatten(ts.trace)[0], grads, params):
            u = _momentum_leaf(b, g, mu, step, nesterov)
            try:
                d += u  # in place; same_kind casting keeps d's dtype
            except ValueError as exc:
                on_error(i, d, u, exc)
            del u  # freed before the next leaf's update, which reuses it while in cache
            i += 1
        return ts, ScaleByLearningRateState(next_count(k), np.asarray(a))

    start.step_in_place = step_in_place
    return start


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    """Adam: momentum and per-coordinate scaling, with bias correction.

    Parameters
    ----------
    learning_rate : float >= 0 or schedule
    b1, b2 : float in [0, 1), default 0.9, 0.999
    eps : float >= 0, default 1e-8 (outside the square root)

    Returns
    -------
    GradientTransformation
        ``chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate))``.

    Notes
    -----
    Chapter 9.5, ``k`` from 1: ``m_k = β₁m_{k-1} + (1-β₁)g_k``, ``v_k = β₂v_{k-1} + (1-β₂)g_k²``,
    ``m̂_k = m_k/(1-β₁^k)``, ``v̂_k = v_k/(1-β₂^k)``, ``θ_k = θ_{k-1} - α m̂_k/(√v̂_k + ε)``.
    """
    lr = rate("adam", learning_rate)
    b1, b2 = unit("adam", "b1", b1), unit("adam", "b2", b2)
    eps = nonneg("adam", "eps", eps)
    t = chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(lr))
    t.update.start.step_in_place = _adam_step_in_place(b1, b2, eps, lr)
    return t


def _adam_step_in_place(b1, b2, eps, lr):
    """``Optimizer.step``'s in-place path for ``adam`` in one call (see
    :func:`_momentum_start`): for every leaf the operations of ``scale_by_adam``'s kernel
    (:func:`~calcml.optim.transforms.adam_leaf`), then ``scale_by_learning_rate``'s product,
    in place on that fresh update, then θ += u; so the numbers of the chain, bit for bit."""
    lr_name = "scale_by_learning_rate"

    def step_in_place(state, grads, params, on_error):
        if not (type(state) is tuple and len(state) == 2 and type(state[0]) is ScaleByAdamState
                and type(state[1]) is ScaleByLearningRateState):
            return None
        sa, ss = state
        k = int(sa.count) + 1
        bc1, bc2 = 1.0 - b1**k, 1.0 - b2**k
        kl = int(ss.count)
        a = rate_at(lr_name, lr, kl)
        step = -a
        i = 0
        for m, v, g, d in zip(flatten(sa.mu)[0], flatten(sa.nu)[0], grads, params):
            u = adam_leaf(m, v, g, m, v, b1, b2, eps, bc1, bc2)
            np.multiply(u, step, out=u)
            try:
                d += u  # in place; same_kind casting keeps d's dtype
            except ValueError as exc:
                on_error(i, d, u, exc)
            del u
            i += 1
        return (ScaleByAdamState(next_count(k - 1), sa.mu, sa.nu),
                ScaleByLearningRateState(next_count(kl), np.asarray(a)))

    return step_in_place


def rmsprop(learning_rate, decay=0.9, eps=1e-8):
    """RMSprop: divide by a moving root mean square of the gradients.

    Parameters
    ----------
    learning_rate : float >= 0 or schedule
    decay : float in [0, 1), default 0.9
    eps : float >= 0, default 1e-8 (outside the square root)

    Returns
    -------
    GradientTransformation
        ``chain(scale_by_rms(decay, eps), scale_by_learning_rate(learning_rate))``.

    Notes
    -----
    Chapter 9.5: ``v_k = β v_{k-1} + (1-β) g_k²``, ``θ_k = θ_{k-1} - α g_k/(√v_k + ε)``.
    """
    lr = rate("rmsprop", learning_rate)
    decay = unit("rmsprop", "decay", decay)
    eps = nonneg("rmsprop", "eps", eps)
    return chain(scale_by_rms(decay, eps), scale_by_learning_rate(lr))


def adagrad(learning_rate, eps=1e-10):
    """AdaGrad: divide by the root of the sum of all squared gradients so far.

    Parameters
    ----------
    learning_rate : float >= 0 or schedule
    eps : float >= 0, default 1e-10 (outside the square root)

    Returns
    -------
    GradientTransformation
        ``chain(scale_by_adagrad(eps), scale_by_learning_rate(learning_rate))``.

    Notes
    -----
    Chapter 9.5: ``v_k = v_{k-1} + g_k²``, ``θ_k = θ_{k-1} - α g_k/(√v_k + ε)``.
    """
    lr = rate("adagrad", learning_rate)
    eps = nonneg("adagrad", "eps", eps)
    return chain(scale_by_adagrad(eps), scale_by_learning_rate(lr))


def proximal_gradient(learning_rate, l1_weight):
    """Proximal gradient descent (ISTA) for ``L(θ) + λ‖θ‖₁``: a Lasso solver with exact zeros.

    Parameters
    ----------
    learning_rate : float >= 0 or schedule
        α; converges for ``α <= 1/L`` (L the Lipschitz constant of ∇L).
    l1_weight : float >= 0
        λ.

    Returns
    -------
    GradientTransformation
        ``chain(scale_by_learning_rate(α), proximal_l1(λ, α))``.

    Notes
    -----
    ``θ_{k+1} = sign(z) max(|z| - α λ, 0)`` with ``z = θ_k - α ∇L(θ_k)``.
    """
    lr = rate("proximal_gradient", learning_rate)
    w = nonneg("proximal_gradient", "l1_weight", l1_weight)
    return chain(scale_by_learning_rate(lr), proximal_l1(w, lr))

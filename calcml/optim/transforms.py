"""The scaling links of a chain: scale, learning rate, momentum, Adam, RMSprop, AdaGrad.

Each function returns a :class:`~calcml.optim.GradientTransformation`.  ``g`` below is the
incoming update (the gradient, or what earlier links of a chain made of it), ``u`` the
outgoing one.  Only :func:`scale_by_learning_rate` multiplies by the learning rate (and flips
the sign), so the adaptive links are written without ``α``; the aliases in
:mod:`calcml.optim.alias` put the two together (``adam = chain(scale_by_adam(...),
scale_by_learning_rate(lr))``).

Every update works leaf by leaf on flattened trees, written once as an ownership-aware
``run`` (see :mod:`calcml.optim.base`): each ufunc writes with ``out=`` into a new array, or
into the input/state array when the caller owns it.  Hyperparameters are stored as Python
floats, so float32 parameters, gradients and state stay float32.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .base import (
    EmptyState,
    as_dtype,
    check_state,
    empty_like,
    flatten,
    leafwise,
    next_count,
    nonneg,
    out_for,
    rate,
    rate_at,
    real,
    unflatten,
    unit,
    zero_count,
    zeros_like_tree,
)

__all__ = [
    "ScaleByLearningRateState",
    "TraceState",
    "ScaleByAdamState",
    "ScaleByRmsState",
    "ScaleByAdagradState",
    "scale",
    "scale_by_learning_rate",
    "trace",
    "momentum",
    "scale_by_adam",
    "scale_by_rms",
    "scale_by_adagrad",
]


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate`.

    Attributes
    ----------
    count : 0-d int64 array
        Updates done so far (the schedule is called with this ``k``, from 0).
    learning_rate : 0-d float64 array
        The rate used by the latest update (right after ``init``: ``schedule(0)``, the rate
        the first update will use).
    """

    count: Any
    learning_rate: Any


class TraceState(NamedTuple):
    """State of :func:`trace`: the momentum buffer, a tree like the parameters."""

    trace: Any


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`: step count and the two moment estimates."""

    count: Any
    mu: Any
    nu: Any


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: the moving average of squared gradients."""

    nu: Any


class ScaleByAdagradState(NamedTuple):
    """State of :func:`scale_by_adagrad`: the running sum of squared gradients."""

    sum_of_squares: Any


def scale(step_size):
    """Multiply the updates by a constant.

    Parameters
    ----------
    step_size : float
        Any real number (negative flips the direction).

    Returns
    -------
    GradientTransformation

    Notes
    -----
    ``u = step_size · g``.  Stateless.
    """
    c = real("scale", "step_size", step_size)

    def init(params):
        return EmptyState()

    def kernel(i, g, p, own):
        return np.multiply(g, c, out=out_for(g, own)), True

    def start(state, params, own_state):
        return kernel, lambda: state, None

    return leafwise("scale", init, start)


def scale_by_learning_rate(learning_rate, *, flip_sign=True):
    """Multiply the updates by ``-learning_rate`` (the descent step).

    Parameters
    ----------
    learning_rate : float or callable
        A rate >= 0, or a schedule ``k -> rate`` called with the step count ``k = 0, 1, …``
        read from the state (see :mod:`calcml.optim.schedules`).
    flip_sign : bool, default True
        Negate the rate, so that :func:`~calcml.optim.apply_updates` (which adds) descends.

    Returns
    -------
    GradientTransformation
        State: :class:`ScaleByLearningRateState` ``(count, learning_rate)``.

    Raises
    ------
    ValueError
        At construction for a negative rate; at ``update`` if a schedule returns a negative
        or non-finite rate.

    Notes
    -----
    ``u_k = -α_k · g_k`` with ``α_k = learning_rate`` or ``schedule(k)``, ``k`` counted from 0.
    The rate used is stored in the state (:func:`~calcml.optim.current_learning_rate`).
    """
    name = "scale_by_learning_rate"
    lr = rate(name, learning_rate)
    sign = -1.0 if flip_sign else 1.0

    def init(params):
        return ScaleByLearningRateState(zero_count(), np.asarray(rate_at(name, lr, 0)))

    def start(state, params, own_state):
        check_state(name, state, ScaleByLearningRateState)
        k = int(state.count)
        a = rate_at(name, lr, k)
        step = sign * a

        def kernel(i, g, p, own):
            if own:
                return np.multiply(g, step, out=g), True
            if getattr(g, "ndim", 0):
                return g * step, True
            # a 0-d leaf through ``out=``, or NumPy would return a scalar
            return np.multiply(g, step, out=empty_like(g)), True

        return kernel, lambda: ScaleByLearningRateState(next_count(k), np.asarray(a)), None

    return leafwise(name, init, start)


def trace(decay, nesterov=False):
    """Heavy-ball momentum (PyTorch's SGD buffer), optionally Nesterov's.

    Parameters
    ----------
    decay : float
        The momentum coefficient μ >= 0.
    nesterov : bool, default False

    Returns
    -------
    GradientTransformation
        State: :class:`TraceState` ``(trace,)``, zeros at ``init``.

    Notes
    -----
    ``b_k = μ · b_{k-1} + g_k``, ``u_k = b_k``; with Nesterov ``u_k = g_k + μ · b_k``.
    Followed by ``scale_by_learning_rate(α)`` this is ``θ ← θ - α b_k`` (resp.
    ``θ ← θ - α (g_k + μ b_k)``), the ``sgd`` of API.md §4.
    """
    name = "trace"
    mu = nonneg(name, "decay (momentum)", decay)
    nesterov = bool(nesterov)

    def init(params):
        return TraceState(zeros_like_tree(params))

    def start(state, params, own_state):
        check_state(name, state, TraceState)
        b_leaves, td = flatten(state.trace)
        new_b = list(b_leaves)

        def kernel(i, g, p, own):
            b = b_leaves[i]
            gd = getattr(g, "dtype", None)
            if gd is not b.dtype and gd != b.dtype:
                g = as_dtype(g, b.dtype)
            if own_state:
                b *= mu
            else:
                b = new_b[i] = np.multiply(b, mu, out=empty_like(b))
            b += g
            if nesterov:
                u = np.multiply(b, mu, out=empty_like(b))
                u += g
                return u, True
            return b, False  # the update is the new buffer itself: not fresh

        if own_state:  # the buffers were updated in place: the state is the same tree
            return kernel, lambda: state, (b_leaves, td, "state")
        return kernel, lambda: TraceState(unflatten(td, new_b)), (b_leaves, td, "state")

    return leafwise(name, init, start)


#: ``momentum(decay, nesterov=False)`` is :func:`trace` under the name users look for.
momentum = trace


def adam_leaf(m0, v0, g, m, v, b1, b2, eps, bc1, bc2):
    """One leaf of :func:`scale_by_adam` at step k: the moments β₁m₀ + (1-β₁)g and
    β₂v₀ + (1-β₂)g² written into ``m`` and ``v`` (``m0`` and ``v0`` themselves when the state
    is updated in place), and the update m̂/(√v̂ + ε) returned as a new array, with
    ``bc1 = 1 - β₁^k``, ``bc2 = 1 - β₂^k``."""
    g = as_dtype(g, m0.dtype)
    np.multiply(m0, b1, out=m)
    t = np.multiply(g, 1.0 - b1, out=empty_like(m0))
    m += t                         # m_k
    np.multiply(v0, b2, out=v)
    np.multiply(g, g, out=t)
    t *= 1.0 - b2
    v += t                         # v_k
    np.divide(v, bc2, out=t)       # v̂_k
    np.sqrt(t, out=t)
    t += eps
    np.divide(m, t, out=t)
    t /= bc1                       # m̂_k / (√v̂_k + ε)
    return t


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8):
    """Adam's scaling (Kingma & Ba), without the learning rate.

    Parameters
    ----------
    b1, b2 : float in [0, 1)
        Decay rates of the first and second moment estimates.
    eps : float >= 0
        Added to the square root (outside it).

    Returns
    -------
    GradientTransformation
        State: :class:`ScaleByAdamState` ``(count, mu, nu)``.

    Notes
    -----
    With ``k`` counted from 1 (the state's count + 1), as in the chapter (9.5):

    .. math::

        m_k = β_1 m_{k-1} + (1-β_1) g_k, \\qquad v_k = β_2 v_{k-1} + (1-β_2) g_k^2,

        \\hat m_k = m_k / (1 - β_1^k), \\qquad \\hat v_k = v_k / (1 - β_2^k),

        u_k = \\hat m_k / (\\sqrt{\\hat v_k} + ε).

    ``adam(α)`` follows this by ``scale_by_learning_rate(α)``: ``θ ← θ - α u_k``.
    """
    name = "scale_by_adam"
    b1 = unit(name, "b1", b1)
    b2 = unit(name, "b2", b2)
    eps = nonneg(name, "eps", eps)

    def init(params):
        return ScaleByAdamState(zero_count(), zeros_like_tree(params), zeros_like_tree(params))

    def start(state, params, own_state):
        check_state(name, state, ScaleByAdamState)
        m_leaves, td = flatten(state.mu)
        v_leaves = flatten(state.nu)[0]
        new_m, new_v = list(m_leaves), list(v_leaves)
        k = int(state.count) + 1
        bc1 = 1.0 - b1**k
        bc2 = 1.0 - b2**k

        def kernel(i, g, p, own):
            m0, v0 = m_leaves[i], v_leaves[i]
            m = new_m[i] = out_for(m0, own_state)
            v = new_v[i] = out_for(v0, own_state)
            return adam_leaf(m0, v0, g, m, v, b1, b2, eps, bc1, bc2), True

        def finish():
            return ScaleByAdamState(next_count(k - 1), unflatten(td, new_m), unflatten(td, new_v))

        return kernel, finish, (m_leaves, td, "state")

    return leafwise(name, init, start)


def scale_by_rms(decay=0.9, eps=1e-8, initial_scale=0.0):
    """RMSprop's scaling (Hinton), without the learning rate.

    Parameters
    ----------
    decay : float in [0, 1)
        Decay rate β of the moving average of squared gradients.
    eps : float >= 0
        Added to the square root (outside it).
    initial_scale : float >= 0, default 0
        Initial value of the average.

    Returns
    -------
    GradientTransformation
        State: :class:`ScaleByRmsState` ``(nu,)``.

    Notes
    -----
    As in the chapter (9.5): ``v_k = β v_{k-1} + (1-β) g_k²``, ``u_k = g_k / (√v_k + ε)``;
    ``rmsprop(α)`` then steps ``θ ← θ - α u_k``.  No bias correction.
    """
    name = "scale_by_rms"
    decay = unit(name, "decay", decay)
    eps = nonneg(name, "eps", eps)
    v_init = nonneg(name, "initial_scale", initial_scale)
    c = 1.0 - decay

    def init(params):
        return ScaleByRmsState(zeros_like_tree(params, v_init))

    def start(state, params, own_state):
        check_state(name, state, ScaleByRmsState)
        v_leaves, td = flatten(state.nu)
        new_v = list(v_leaves)

        def kernel(i, g, p, own):
            v0 = v_leaves[i]
            g = as_dtype(g, v0.dtype)
            v = new_v[i] = np.multiply(v0, decay, out=out_for(v0, own_state))
            t = np.multiply(g, g, out=empty_like(v0))
            t *= c
            v += t                         # v_k
            np.sqrt(v, out=t)
            t += eps
            np.divide(g, t, out=t)         # g / (√v_k + ε)
            return t, True

        return kernel, lambda: ScaleByRmsState(unflatten(td, new_v)), (v_leaves, td, "state")

    return leafwise(name, init, start)


def scale_by_adagrad(eps=1e-10, initial_accumulator_value=0.0):
    """AdaGrad's scaling (Duchi, Hazan & Singer), without the learning rate.

    Parameters
    ----------
    eps : float >= 0
        Added to the square root (outside it).
    initial_accumulator_value : float >= 0, default 0

    Returns
    -------
    GradientTransformation
        State: :class:`ScaleByAdagradState` ``(sum_of_squares,)``.

    Notes
    -----
    As in the chapter (9.5): ``v_k = v_{k-1} + g_k²``, ``u_k = g_k / (√v_k + ε)``;
    ``adagrad(α)`` then steps ``θ ← θ - α u_k``.  The effective rate ``α/√v_k`` only shrinks.
    """
    name = "scale_by_adagrad"
    eps = nonneg(name, "eps", eps)
    v_init = nonneg(name, "initial_accumulator_value", initial_accumulator_value)

    def init(params):
        return ScaleByAdagradState(zeros_like_tree(params, v_init))

    def start(state, params, own_state):
        check_state(name, state, ScaleByAdagradState)
        v_leaves, td = flatten(state.sum_of_squares)
        new_v = list(v_leaves)

        def kernel(i, g, p, own):
            v0 = v_leaves[i]
            g = as_dtype(g, v0.dtype)
            t = np.multiply(g, g, out=empty_like(v0))
            v = new_v[i] = np.add(v0, t, out=out_for(v0, own_state))  # v_k
            np.sqrt(v, out=t)
            t += eps
            np.divide(g, t, out=t)         # g / (√v_k + ε)
            return t, True

        def finish():
            return ScaleByAdagradState(unflatten(td, new_v))

        return kernel, finish, (v_leaves, td, "state")

    return leafwise(name, init, start)

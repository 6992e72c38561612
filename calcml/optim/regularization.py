"""Regularization as links of a chain (chapter 9.4): L2, L1, elastic net, and the proximal L1.

``l2``, ``l1`` and ``elastic_net`` add the (sub)gradient of a penalty to the incoming
gradient, so they go *before* the optimizer's scaling::

    sgd_l2 = chain(l2(1e-4), sgd(0.1))          # θ ← θ - α (∇L + λ θ)

The L1 subgradient step never lands on an exact zero: a coefficient whose optimum is 0 keeps
jumping over it by about ``α λ``.  The *proximal* step does what the chapter promises for the
Lasso (exact zeros): take the gradient step on the smooth loss, then soft-threshold,

.. math::

    θ_{k+1} = \\operatorname{prox}_{αλ\\|\\cdot\\|_1}(θ_k - α ∇L(θ_k)),
    \\qquad \\operatorname{prox}_t(z) = \\operatorname{sign}(z) \\max(|z| - t, 0).

Because :func:`~calcml.optim.apply_updates` always adds, :func:`proximal_l1` is a link that
goes *after* the learning rate and turns the update ``u = -α ∇L`` into
``prox(θ + u) - θ``; adding it to ``θ`` gives the thresholded point, and a thresholded entry
becomes ``θ + (0 - θ) = 0`` exactly (``x + (-x)`` is exactly 0 in IEEE arithmetic)::

    ista = chain(scale_by_learning_rate(α), proximal_l1(λ, α))   # = proximal_gradient(α, λ)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .base import (
    EmptyState,
    check_state,
    empty_like,
    flatten,
    leafwise,
    need_params,
    next_count,
    nonneg,
    out_for,
    rate,
    rate_at,
    zero_count,
)

__all__ = ["l2", "l1", "elastic_net", "soft_threshold", "proximal_l1", "ProximalL1State"]


def _penalty(name, w1, w2):
    """The transform adding ``w1·sign(θ) + w2·θ`` to the updates (terms with weight 0 skipped)."""

    def init(params):
        return EmptyState()

    def kernel(i, g, p, own):
        if p.dtype.kind not in "fc":
            raise TypeError(f"calcml.optim.{name}: parameter leaf {i} has dtype {p.dtype} and "
                            f"shape {tuple(p.shape)}; parameters must be floating point (cast "
                            f"them, e.g. x.astype(float))")
        if w1:
            u = np.sign(p, out=empty_like(p))
            u *= w1
            if w2:
                u += np.multiply(p, w2, out=empty_like(p))
        else:
            u = np.multiply(p, w2, out=empty_like(p))
        u += g
        return u, True

    def start(state, params, own_state):
        need_params(name, params)
        p_leaves, td = flatten(params)
        p_leaves = [p if hasattr(p, "dtype") else np.asarray(p) for p in p_leaves]
        return kernel, lambda: state, (p_leaves, td, "params")

    return leafwise(name, init, start)


def l2(weight):
    """Add the gradient of the L2 penalty (ridge, weight decay).

    Parameters
    ----------
    weight : float >= 0
        λ in ``R(θ) = (λ/2) ‖θ‖²``.

    Returns
    -------
    GradientTransformation
        Stateless; ``update`` needs ``params``.

    Notes
    -----
    ``u = g + λ θ`` (∇R = λθ).  In ``chain(l2(λ), sgd(α))``: ``θ ← θ - α (∇L + λ θ)``.
    """
    w = nonneg("l2", "weight", weight)
    return _penalty("l2", 0.0, w)


def l1(weight):
    """Add the subgradient of the L1 penalty (lasso).

    Parameters
    ----------
    weight : float >= 0
        λ in ``R(θ) = λ ‖θ‖₁``.

    Returns
    -------
    GradientTransformation
        Stateless; ``update`` needs ``params``.

    Notes
    -----
    ``u = g + λ sign(θ)`` (``sign(0) = 0``).  The subgradient method does not produce exact
    zeros; use :func:`proximal_l1` for that.
    """
    w = nonneg("l1", "weight", weight)
    return _penalty("l1", w, 0.0)


def elastic_net(l1_weight, l2_weight):
    """Add the (sub)gradient of the elastic-net penalty.

    Parameters
    ----------
    l1_weight, l2_weight : float >= 0
        λ₁, λ₂ in ``R(θ) = λ₁ ‖θ‖₁ + (λ₂/2) ‖θ‖²``.

    Returns
    -------
    GradientTransformation
        Stateless; ``update`` needs ``params``.

    Notes
    -----
    ``u = g + λ₁ sign(θ) + λ₂ θ``.  (The chapter writes the L2 term as λ₂‖θ‖², whose
    gradient is 2λ₂θ; the weight here multiplies θ directly, like :func:`l2`.)
    """
    w1 = nonneg("elastic_net", "l1_weight", l1_weight)
    w2 = nonneg("elastic_net", "l2_weight", l2_weight)
    return _penalty("elastic_net", w1, w2)


def soft_threshold(x, threshold):
    """The proximal operator of ``t‖·‖₁``: ``sign(x) · max(|x| - t, 0)``, entry by entry.

    Parameters
    ----------
    x : array
    threshold : float >= 0

    Returns
    -------
    array
        Same dtype as ``x`` when it is floating point, float64 for integer or boolean ``x``;
        entries with ``|x| <= t`` are exactly 0.
    """
    t = nonneg("soft_threshold", "threshold", threshold)
    x = np.asarray(x) if not hasattr(x, "dtype") else x
    if x.dtype.kind not in "fc":
        x = x.astype(np.float64)
    a = np.abs(x, out=empty_like(x))
    a -= t
    np.maximum(a, 0.0, out=a)
    a *= np.sign(x)
    return a


class ProximalL1State(NamedTuple):
    """State of :func:`proximal_l1`: its step count and the rate it used last."""

    count: Any
    learning_rate: Any


def proximal_l1(weight, learning_rate):
    """Turn a gradient step into a proximal-gradient (ISTA) step for ``λ‖θ‖₁``: exact zeros.

    Parameters
    ----------
    weight : float >= 0
        λ of the L1 penalty.
    learning_rate : float or callable
        The step size α of the gradient step this link follows (the same number or schedule
        given to ``scale_by_learning_rate``); the threshold is ``α_k λ``.

    Returns
    -------
    GradientTransformation
        State: :class:`ProximalL1State` ``(count, learning_rate)``; ``update`` needs
        ``params``.  It must be the *last* link, after the learning rate, since it receives
        the step ``u`` that will be added to θ.

    Notes
    -----
    With ``z = θ + u`` the point the plain step would reach,

    .. math:: u' = \\operatorname{sign}(z)\\max(|z| - α_k λ, 0) - θ,

    so that ``apply_updates`` gives ``θ + u' = prox(z)``; thresholded entries are exactly 0.
    After an SGD step this is the proximal-gradient method (ISTA), which converges to the
    Lasso solution for ``α <= 1/L``.  After an adaptive step (Adam, ...) it is a heuristic:
    the per-coordinate step sizes differ from α.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> opt = cm.optim.chain(cm.optim.scale_by_learning_rate(0.1),
    ...                      cm.optim.proximal_l1(1.0, 0.1))
    >>> theta = np.array([0.05, 2.0])
    >>> state = opt.init(theta)
    >>> u, state = opt.update(np.zeros(2), state, theta)
    >>> cm.optim.apply_updates(theta, u)
    array([0. , 1.9])
    """
    name = "proximal_l1"
    w = nonneg(name, "weight", weight)
    lr = rate(name, learning_rate)

    def init(params):
        return ProximalL1State(zero_count(), np.asarray(rate_at(name, lr, 0)))

    def start(state, params, own_state):
        check_state(name, state, ProximalL1State)
        need_params(name, params)
        k = int(state.count)
        a = rate_at(name, lr, k)
        thr = a * w
        p_leaves, td = flatten(params)

        def kernel(i, u, p, own):
            z = np.add(p, u, out=out_for(u, own))  # the plain step's point
            m = np.abs(z, out=empty_like(z))
            m -= thr
            np.maximum(m, 0.0, out=m)
            np.sign(z, out=z)
            z *= m                         # prox(z)
            z -= p                         # the update that apply_updates adds to θ
            return z, True

        def finish():
            return ProximalL1State(next_count(k), np.asarray(a))

        return kernel, finish, (p_leaves, td, "params")

    return leafwise(name, init, start)

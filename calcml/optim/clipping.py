"""Gradient clipping (chapter 9.4): by the global norm of the whole tree, or entry by entry.

Both are links of a chain, placed before the optimizer's scaling:
``chain(clip_by_global_norm(1.0), adam(1e-3))``.
"""

from __future__ import annotations

import math

import numpy as np

from .base import EmptyState, flatten, leafwise, nonneg, out_for, transformation, unflatten

__all__ = ["global_norm", "clip_by_global_norm", "clip_by_value"]


def _sumsq(g):
    r = g.ravel()
    return float(np.dot(r, r))  # BLAS: no temporary, unlike (g * g).sum()


def global_norm(tree):
    """The Euclidean norm of all the leaves of a tree taken together.

    Parameters
    ----------
    tree : array or pytree of arrays

    Returns
    -------
    float
        ``‖g‖ = sqrt(Σ_leaves Σ_i g_i²)``.  Finite whenever every entry is finite: if the sum
        of squares overflows (float32 gradients above ~1e19) it is recomputed with each leaf
        scaled by its largest magnitude first.
    """
    leaves = flatten(tree)[0]
    s = 0.0
    with np.errstate(over="ignore"):  # an overflow is handled below
        for g in leaves:
            s += _sumsq(g)
    if math.isfinite(s):
        return math.sqrt(s)
    # Overflow (or a non-finite entry): scale by the largest magnitude, in float64.
    big = max((float(np.max(np.abs(g))) if np.size(g) else 0.0) for g in leaves)
    if not math.isfinite(big):
        return big if not math.isnan(big) else math.nan
    s = 0.0
    for g in leaves:
        s += _sumsq(np.divide(g, big, dtype=np.float64))
    return big * math.sqrt(s)


def clip_by_global_norm(max_norm):
    """Rescale the whole update tree so that its global norm is at most ``max_norm``.

    Parameters
    ----------
    max_norm : float >= 0 (``inf`` allowed: no clipping)

    Returns
    -------
    GradientTransformation
        Stateless.

    Raises
    ------
    ValueError
        For a negative ``max_norm``.

    Notes
    -----
    ``u = g · min(1, c / ‖g‖)`` with ``‖g‖`` the norm over all leaves (:func:`global_norm`).
    The direction is kept.  When ``‖g‖ <= c`` (in particular ``‖g‖ = 0``) the updates are
    returned unchanged, so a zero gradient gives zeros, never ``0/0 = NaN``.  A NaN in the
    gradient propagates (it is not hidden by the clipping).
    """
    name = "clip_by_global_norm"
    c = nonneg(name, "max_norm", max_norm, allow_inf=True)

    def init(params):
        return EmptyState()

    def run(updates, state, params, own_updates, own_state):
        norm = global_norm(updates)
        if norm <= c:
            return updates, state, own_updates  # unchanged: as owned as they came
        factor = c / norm  # NaN if the norm is NaN: the NaN propagates
        leaves, td = flatten(updates)
        out = [np.multiply(g, factor, out=out_for(g, own_updates)) for g in leaves]
        return unflatten(td, out), state, True

    return transformation(init, run)


def clip_by_value(max_value):
    """Clip every entry of the updates to ``[-max_value, max_value]``.

    Parameters
    ----------
    max_value : float >= 0 (``inf`` allowed)

    Returns
    -------
    GradientTransformation
        Stateless.

    Raises
    ------
    ValueError
        For a negative ``max_value``.

    Notes
    -----
    ``u_i = sign(g_i) · min(|g_i|, c)`` (chapter 9.4, per-parameter clipping).  Unlike the
    global norm, this changes the direction of the update.
    """
    name = "clip_by_value"
    c = nonneg(name, "max_value", max_value, allow_inf=True)

    def init(params):
        return EmptyState()

    def kernel(i, g, p, own):
        return np.clip(g, -c, c, out=out_for(g, own)), True

    def start(state, params, own_state):
        return kernel, lambda: state, None

    return leafwise(name, init, start)

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
    """``Σ_i |g_i|²`` of one leaf, as a Python float.

    Integer and boolean leaves are summed in float64 (an integer dot product wraps around
    silently: ``[2**40, 0]`` would give 0); complex leaves use ``|g_i|² = g_i conj(g_i)``.
    """
    if not hasattr(g, "ravel"):  # a Python number as a leaf
        g = np.asarray(g)
    kind = g.dtype.kind
    if kind not in "fc":
        g = g.astype(np.float64)
    r = g.ravel()
    if kind == "c":
        return float(np.vdot(r, r).real)
    return float(np.dot(r, r))  # BLAS: no temporary, unlike (g * g).sum()


def _check_floating(name, i, g):
    """Refuse, by name, an update leaf that is not floating point: clipped values are not
    integers, and NumPy cannot write them back into an integer array."""
    dt = getattr(g, "dtype", None)
    if dt is None:
        dt = np.result_type(g)
    if dt.kind not in "fc":
        raise TypeError(f"calcml.optim.{name}: update leaf {i} has dtype {dt} and shape "
                        f"{tuple(np.shape(g))}; gradients must be floating point (cast them, "
                        f"e.g. g.astype(float))")


def global_norm(tree):
    """The Euclidean norm of all the leaves of a tree taken together.

    Parameters
    ----------
    tree : array or pytree of arrays

    Returns
    -------
    float
        ``‖g‖ = sqrt(Σ_leaves Σ_i |g_i|²)``; the leaves' sums are added in float64, integer
        leaves are summed in float64 (never wrapping around).  Finite whenever every entry is
        finite: if the sum of squares overflows (float32 gradients above ~1e19) it is
        recomputed with each leaf scaled by its largest magnitude first.  NaN if any entry
        is NaN, else ``inf`` if any entry is infinite, whatever the order of the leaves.
    """
    leaves = flatten(tree)[0]
    s = 0.0
    with np.errstate(over="ignore"):  # an overflow is handled below
        for g in leaves:
            s += _sumsq(g)
    if math.isfinite(s):
        return math.sqrt(s)
    # Overflow (or a non-finite entry): scale by the largest magnitude, in float64.
    mags = [float(np.max(np.abs(g))) if np.size(g) else 0.0 for g in leaves]
    if any(math.isnan(m) for m in mags):  # (max() of a list with NaN depends on its order)
        return math.nan
    big = max(mags)
    if not math.isfinite(big):
        return big
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
        For a negative or NaN ``max_norm``.
    TypeError
        At ``update``, for an update leaf that is not floating point (integer or boolean).

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
        leaves, td = flatten(updates)
        for i, g in enumerate(leaves):
            _check_floating(name, i, g)
        norm = global_norm(updates)
        if norm <= c:
            return updates, state, own_updates  # unchanged: as owned as they came
        factor = c / norm  # NaN if the norm is NaN: the NaN propagates
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
        For a negative or NaN ``max_value``.
    TypeError
        At ``update``, for an update leaf that is not floating point (integer or boolean).

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
        _check_floating(name, i, g)
        return np.clip(g, -c, c, out=out_for(g, own)), True

    def start(state, params, own_state):
        return kernel, lambda: state, None

    return leafwise(name, init, start)

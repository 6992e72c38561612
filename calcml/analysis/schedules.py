"""The Robbins–Monro conditions of a learning-rate schedule, measured numerically.

Stochastic approximation converges (Robbins and Monro, 1951) when the steps satisfy

    Σ_k α_k = ∞    (the steps can travel any distance)   and   Σ_k α_k² < ∞   (the noise they
    inject, Σ α_k² σ², stays finite).

A computer cannot sum to infinity, so the decision is made on the asymptotic exponent: if
α_k ≈ C k^{−p}, then Σ α_k diverges iff p ≤ 1 and Σ α_k² converges iff p > 1/2.  The local
exponent p(k) = −log(α_{10k}/α_k)/log 10 is measured decade by decade out to a far horizon
(by evaluating the schedule at single points, which costs nothing), and the partial sums
Σ_{k<N} α_k and Σ_{k<N} α_k² are reported exactly up to a horizon N as the evidence.  The
three schedules of section 9.1: constant (p = 0: Σα² = ∞, fails), α₀/(1 + βk) (p = 1: passes),
α₀/√(k + 1) (p = 1/2: Σα² grows like log N, fails).

Limits: a finite horizon cannot see a time scale beyond it (α₀/(1 + βk) looks constant until
k ≈ 1/β, so the exponent is read far beyond that), and slowly varying factors such as
1/log k are invisible to an exponent (1/(k log k) reads as p = 1, "diverges", correctly, while
1/(k log² k), whose sum converges, reads as p ≈ 1 too, within the tolerance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["RobbinsMonroCheck", "robbins_monro"]


@dataclass
class RobbinsMonroCheck:
    """The verdict on Σα_k = ∞ and Σα_k² < ∞ for a schedule, with the numbers behind it.

    Attributes
    ----------
    exponent : float
        p, the local decay exponent of α_k ≈ C k^{−p} at the far end of ``exponent_horizon``
        (inf when α_k reaches 0, faster than any power).
    exponents : dict
        {k: p(k)} per decade, the local exponent between k and 10k.
    sum_diverges : bool
        Σα_k = ∞ (p ≤ 1 + tol).
    sum_sq_converges : bool
        Σα_k² < ∞ (p > 1/2 + tol).
    satisfied : bool
        Both: the Robbins–Monro conditions hold.
    horizon : int
        N, the last partial sum computed exactly.
    checkpoints : ndarray
        The N' ≤ N at which partial sums are reported (powers of ten, and N).
    partial_sums, partial_sums_sq : ndarray
        Σ_{k<N'} α_k and Σ_{k<N'} α_k².
    note : str
        How the decision was made.
    """

    exponent: float
    exponents: dict = field(repr=False)
    sum_diverges: bool = False
    sum_sq_converges: bool = False
    satisfied: bool = False
    horizon: int = 0
    checkpoints: np.ndarray = field(default=None, repr=False)
    partial_sums: np.ndarray = field(default=None, repr=False)
    partial_sums_sq: np.ndarray = field(default=None, repr=False)
    note: str = field(default="", repr=False)

    def table(self):
        """Rows ``(N, Σ_{k<N} α_k, Σ_{k<N} α_k²)`` at the checkpoints."""
        return [(int(n), float(s), float(q)) for n, s, q in
                zip(self.checkpoints, self.partial_sums, self.partial_sums_sq)]

    def to_dict(self) -> dict:
        """The verdict and the partial sums, for a metrics file."""
        return {"exponent": self.exponent, "sum_diverges": self.sum_diverges,
                "sum_sq_converges": self.sum_sq_converges, "satisfied": self.satisfied,
                "horizon": self.horizon,
                "partial_sums": {str(n): s for n, s, _ in self.table()},
                "partial_sums_sq": {str(n): q for n, _, q in self.table()}}


def _values(schedule, N):
    """α_0 … α_{N-1}: one vectorised call when the schedule takes arrays, else a loop."""
    ks = np.arange(N)
    try:
        v = np.asarray(schedule(ks), dtype=np.float64)
        probe = [0, 1, N // 2, N - 1]
        if v.shape == (N,) and all(math.isclose(v[i], float(schedule(i)), rel_tol=1e-12,
                                                abs_tol=0.0) for i in probe):
            return v
    except Exception:  # noqa: BLE001 - a scalar-only schedule: fall back to the loop
        pass
    return np.fromiter((float(schedule(int(k))) for k in range(N)), dtype=np.float64, count=N)


def _local_exponent(schedule, k):
    a, b = abs(float(schedule(k))), abs(float(schedule(10 * k)))
    if a == 0.0 or b == 0.0:
        return math.inf
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    return -math.log10(b / a) + 0.0  # + 0.0: no -0.0 for a constant


def robbins_monro(schedule, horizon=10**6, exponent_horizon=10**15, tol=1e-3):
    """Decide the Robbins–Monro conditions Σα_k = ∞, Σα_k² < ∞ of a schedule numerically.

    Parameters
    ----------
    schedule : callable or float
        ``k -> α_k`` for k = 0, 1, … (a ``cm.optim`` schedule), or a constant.
    horizon : int
        N: the partial sums Σ_{k<N} α_k, Σ_{k<N} α_k² are computed exactly up to it (one
        vectorised call when the schedule accepts an array of k, else N calls).
    exponent_horizon : int
        The local exponent is measured at k = 10, 100, …, up to this k (single evaluations).
    tol : float
        Slack at the boundaries p = 1 and p = 1/2, which both belong to the divergent side
        (Σ 1/k = ∞, Σ (1/√k)² = ∞).

    Returns
    -------
    RobbinsMonroCheck

    Notes
    -----
    For α_k ∼ C k^{−p}: Σ α_k = ∞ ⇔ p ≤ 1, Σ α_k² < ∞ ⇔ 2p > 1 (p-series), so the conditions
    hold iff 1/2 < p ≤ 1.  p is the last local exponent, −log₁₀(α_{10k}/α_k) at
    k = exponent_horizon/10.

    Examples
    --------
    >>> from calcml.analysis import robbins_monro
    >>> robbins_monro(lambda k: 0.1 / (1 + 0.01 * k), horizon=10**4).satisfied
    True
    >>> robbins_monro(lambda k: 0.1 / (k + 1) ** 0.5, horizon=10**4).sum_sq_converges
    False
    """
    if not callable(schedule):
        c = float(schedule)
        schedule = lambda k: c * np.ones_like(k, dtype=np.float64) if np.ndim(k) else c
    horizon = int(horizon)
    if horizon < 10:
        raise ValueError(f"robbins_monro: horizon must be at least 10, got {horizon}")
    alphas = _values(schedule, horizon)
    if not np.all(np.isfinite(alphas)):
        bad = int(np.argmax(~np.isfinite(alphas)))
        raise ValueError(f"robbins_monro: the schedule is not finite at k = {bad}")
    cs = np.cumsum(alphas)
    cs2 = np.cumsum(alphas ** 2)
    checkpoints = [10 ** j for j in range(1, int(math.log10(horizon)) + 1) if 10 ** j <= horizon]
    if checkpoints[-1] != horizon:
        checkpoints.append(horizon)
    checkpoints = np.asarray(checkpoints)
    exponents = {}
    k = 10
    while 10 * k <= exponent_horizon:
        exponents[k] = _local_exponent(schedule, k)
        k *= 10
    p = exponents[max(exponents)] if exponents else math.nan
    diverges = bool(p <= 1 + tol)
    sq_converges = bool(p > 0.5 + tol)
    last = max(exponents) if exponents else 0
    note = (f"α_k ≈ C k^(−p) with p = {p:.6g}, read between k = {last:g} and {10 * last:g}; "
            "Σα_k = ∞ iff p ≤ 1, Σα_k² < ∞ iff p > 1/2.  Partial sums up to N = "
            f"{horizon}: Σα_k = {cs[-1]:.6g}, Σα_k² = {cs2[-1]:.6g}.")
    return RobbinsMonroCheck(float(p), exponents, diverges, sq_converges,
                             diverges and sq_converges, horizon, checkpoints,
                             cs[checkpoints - 1], cs2[checkpoints - 1], note)

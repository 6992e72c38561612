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

Slowly varying factors.  A factor (log k)^{−q} bends the local exponent only slowly,
p(10^j) = p + q·log₁₀((j + 1)/j), so 1/(k log k) reads p ≈ 1.03 at k = 10¹⁴ although Σα_k = ∞.
The decision therefore fits α_k ≈ C k^{−p} (ln k)^{−q} to the last three decades: when the two
values of q that consecutive pairs of local exponents give agree (the log model describes the
tail), p and q are read from it and the boundary cases are decided as for Bertrand's series
(Σ 1/(k (log k)^q) = ∞ iff q ≤ 1): 1/(k log k) reads p = 1, q = 1, "diverges", and
1/(k log² k) reads p = 1, q = 2, "converges", both correctly.  Otherwise (a pure power, whose
q is 0, or a tail still in transition) the last local exponent decides alone.

Limits: a finite horizon cannot see a time scale beyond it (α₀/(1 + βk) looks constant until
k ≈ 1/β, so the exponent is read far beyond that), and iterated logarithms are beyond the fit:
for 1/(k log k log log k) it is only approximate (p ≈ 0.997, q ≈ 1.37 at k = 10¹⁴), and a
verdict resting on such a tail, this close to the boundary, is not to be trusted.
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
        p, the decay exponent of α_k ≈ C k^{−p} (ln k)^{−q} at the far end of
        ``exponent_horizon``: the last local exponent when the tail is a pure power (inf when
        α_k reaches 0, faster than any power), the fitted p when a log factor was detected.
    exponents : dict
        {k: p(k)} per decade, the local exponent between k and 10k.
    sum_diverges : bool
        Σα_k = ∞: p ≤ 1 + tol, except that p within tol of 1 with q > 1 + tol converges.
    sum_sq_converges : bool
        Σα_k² < ∞: p > 1/2 + tol, or p within tol of 1/2 with 2q > 1 + tol.
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
    log_exponent : float
        q, the power of the slowly varying factor (ln k)^{−q} fitted to the last three decades
        (0.0 when the tail reads as a pure power).
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
    log_exponent: float = 0.0

    def table(self):
        """Rows ``(N, Σ_{k<N} α_k, Σ_{k<N} α_k²)`` at the checkpoints."""
        return [(int(n), float(s), float(q)) for n, s, q in
                zip(self.checkpoints, self.partial_sums, self.partial_sums_sq)]

    def to_dict(self) -> dict:
        """The verdict and the partial sums, for a metrics file."""
        return {"exponent": self.exponent, "log_exponent": self.log_exponent,
                "sum_diverges": self.sum_diverges,
                "sum_sq_converges": self.sum_sq_converges, "satisfied": self.satisfied,
                "horizon": self.horizon,
                "partial_sums": {str(n): s for n, s, _ in self.table()},
                "partial_sums_sq": {str(n): q for n, _, q in self.table()}}


_NAME = "calcml.analysis.robbins_monro"


def _alpha(schedule, k):
    """α_k as a float; a negative, non-finite or non-numeric value is refused, naming k."""
    raw = schedule(k)
    try:
        a = float(raw)
    except (TypeError, ValueError):
        raise TypeError(f"{_NAME}: the schedule must return a real number, got {raw!r} "
                        f"at k = {k}") from None
    if not np.isfinite(a):
        raise ValueError(f"{_NAME}: the schedule must be finite, got α_k = {a} at k = {k}")
    if a < 0.0:
        raise ValueError(f"{_NAME}: the learning rate must be >= 0, got α_k = {a} at k = {k}")
    return a


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
    return np.fromiter((_alpha(schedule, int(k)) for k in range(N)), dtype=np.float64, count=N)


def _local_exponent(schedule, k):
    a, b = _alpha(schedule, k), _alpha(schedule, 10 * k)
    if a == 0.0 or b == 0.0:
        return math.inf
    return -math.log10(b / a) + 0.0  # + 0.0: no -0.0 for a constant


# three decades of local exponents: k = 10, 100, 1000 (reading α up to 10⁴) at the least
_MIN_EXPONENT_HORIZON = 10**4


def _log_fit(exponents):
    """(p, q) of α_k ≈ C k^{−p} (ln k)^{−q} from the last three local exponents.

    For that α, p(10^j) = p + q·g_j with g_j = log₁₀((j + 1)/j), so consecutive pairs give
    q = (p(10^j) − p(10^{j+1}))/(g_j − g_{j+1}).  The fit is kept only when the two pairs agree
    (within 5 %) on a q that is not zero; else the last local exponent stands alone, q = 0.
    """
    ks = sorted(exponents)[-3:]
    js = [round(math.log10(k)) for k in ks]
    ps = [exponents[k] for k in ks]
    p_last = ps[-1]
    if not all(math.isfinite(x) for x in ps):
        return p_last, 0.0
    g = [math.log10((j + 1) / j) for j in js]
    qa = (ps[0] - ps[1]) / (g[0] - g[1])
    qb = (ps[1] - ps[2]) / (g[1] - g[2])
    if abs(qb) <= 1e-6 or abs(qa - qb) > 0.05 * max(abs(qa), abs(qb)):
        return p_last, 0.0
    return p_last - qb * g[2], qb


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
        The local exponent is measured at k = 10, 100, …, up to this k (single evaluations);
        at least 10⁴, the three decades the log-factor fit needs.
    tol : float
        Slack (finite, ≥ 0) at the boundaries p = 1 and p = 1/2, which both belong to the
        divergent side (Σ 1/k = ∞, Σ (1/√k)² = ∞), and at q = 1, 2q = 1 there.

    Returns
    -------
    RobbinsMonroCheck

    Notes
    -----
    For α_k ∼ C k^{−p}: Σ α_k = ∞ ⇔ p ≤ 1, Σ α_k² < ∞ ⇔ 2p > 1 (p-series), so the conditions
    hold iff 1/2 < p ≤ 1.  p is the last local exponent, −log₁₀(α_{10k}/α_k) at
    k = exponent_horizon/10, unless the last three local exponents fit
    p(10^j) = p + q·log₁₀((j + 1)/j), the signature of α_k ∼ C k^{−p} (ln k)^{−q}: then p and q
    are the fitted ones and, at the boundaries, Σ α_k = ∞ ⇔ q ≤ 1 (p = 1) and
    Σ α_k² < ∞ ⇔ 2q > 1 (p = 1/2), Bertrand's series.

    Raises
    ------
    TypeError
        ``schedule`` is neither callable nor a number, or returns a non-number.
    ValueError
        A negative or non-finite α_k (the first such k is named), ``horizon`` < 10,
        ``exponent_horizon`` < 10⁴, or a negative or non-finite ``tol``.

    Examples
    --------
    >>> from calcml.analysis import robbins_monro
    >>> robbins_monro(lambda k: 0.1 / (1 + 0.01 * k), horizon=10**4).satisfied
    True
    >>> robbins_monro(lambda k: 0.1 / (k + 1) ** 0.5, horizon=10**4).sum_sq_converges
    False
    """
    if not callable(schedule):
        if isinstance(schedule, (str, bytes)):
            raise TypeError(f"{_NAME}: schedule must be a callable k -> α_k or a number, "
                            f"got {schedule!r}")
        try:
            c = float(schedule)
        except (TypeError, ValueError):
            raise TypeError(f"{_NAME}: schedule must be a callable k -> α_k or a number, "
                            f"got {schedule!r}") from None
        schedule = lambda k: c * np.ones_like(k, dtype=np.float64) if np.ndim(k) else c
    horizon = int(horizon)
    if horizon < 10:
        raise ValueError(f"{_NAME}: horizon must be at least 10, got {horizon}")
    exponent_horizon = int(exponent_horizon)
    if exponent_horizon < _MIN_EXPONENT_HORIZON:
        raise ValueError(f"{_NAME}: exponent_horizon must be at least {_MIN_EXPONENT_HORIZON} "
                         "(three decades of local exponents, between k = 10 and 10^4), "
                         f"got {exponent_horizon}")
    tol = float(tol)
    if not (math.isfinite(tol) and tol >= 0.0):
        raise ValueError(f"{_NAME}: tol must be a finite number >= 0, got {tol}")
    alphas = _values(schedule, horizon)
    if not np.all(np.isfinite(alphas)):
        bad = int(np.argmax(~np.isfinite(alphas)))
        raise ValueError(f"{_NAME}: the schedule must be finite, got α_k = {alphas[bad]} "
                         f"at k = {bad}")
    if np.any(alphas < 0.0):
        bad = int(np.argmax(alphas < 0.0))
        raise ValueError(f"{_NAME}: the learning rate must be >= 0, got α_k = {alphas[bad]} "
                         f"at k = {bad}")
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
    p, q = _log_fit(exponents)
    # Σ k^{−p} (ln k)^{−q} = ∞ iff p < 1, or p = 1 and q ≤ 1 (Bertrand); squared, 2p and 2q
    at_one, at_half = abs(p - 1) <= tol, abs(p - 0.5) <= tol
    diverges = bool(p <= 1 + tol and not (at_one and q > 1 + tol))
    sq_converges = bool(p > 0.5 + tol or (at_half and 2 * q > 1 + tol))
    last = max(exponents)
    shape = f"C k^(−p) (ln k)^(−q) with p = {p:.6g}, q = {q:.6g}" if q else \
        f"C k^(−p) with p = {p:.6g}"
    note = (f"α_k ≈ {shape}, read between k = {last:g} and {10 * last:g}; "
            "Σα_k = ∞ iff p < 1 or (p = 1, q ≤ 1), Σα_k² < ∞ iff p > 1/2 or (p = 1/2, "
            "q > 1/2).  Partial sums up to N = "
            f"{horizon}: Σα_k = {cs[-1]:.6g}, Σα_k² = {cs2[-1]:.6g}.")
    return RobbinsMonroCheck(float(p), exponents, diverges, sq_converges,
                             diverges and sq_converges, horizon, checkpoints,
                             cs[checkpoints - 1], cs2[checkpoints - 1], note, float(q))

"""Section 9.1's convergence rates of gradient descent, predicted and measured.

Two guarantees, for x_{k+1} = x_k − α∇f(x_k) and a minimiser x*:

* **Linear rate** (f μ-strongly convex and L-smooth): ‖x_k − x*‖ ≤ (1 − αμ)^k ‖x₀ − x*‖.
  Write x_{k+1} − x* = (I − αH̄_k)(x_k − x*) with H̄_k = ∫₀¹ ∇²f(x* + t(x_k − x*)) dt, whose
  spectrum lies in [μ, L]; hence the exact worst-case factor per step is
  ρ(α) = max(|1 − αμ|, |1 − αL|), attained on a quadratic with eigenvalues μ and L.  It equals
  the chapter's 1 − αμ when α ≤ 1/L (then 0 ≤ 1 − αλ ≤ 1 − αμ for every λ ∈ [μ, L]), and indeed
  for all α ≤ 2/(L + μ); beyond that the factor is αL − 1 > 1 − αμ and the chapter's bound
  fails, and for α ≥ 2/L GD no longer converges.
* **Sublinear rate** (f convex and L-smooth, α ≤ 1/L): f(x_k) − f* ≤ ‖x₀ − x*‖²/(2αk), which
  at α = 1/L is the chapter's L‖x₀ − x*‖²/(2k).  With α < 1/L the chapter's form is no longer
  implied (it is smaller than the guarantee by the factor αL).

The checks take a run (a :class:`calcml.optimize.OptimizeResult`, or the iterates) and return
small dataclasses with the predicted and the observed numbers side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import backend
from .._core.tree import flatten

__all__ = ["LinearRateCheck", "ConvexRateCheck", "GDAnalysis", "check_linear_rate",
           "check_convex_rate", "contraction_factor", "analyze_gradient_descent"]


# -- helpers ---------------------------------------------------------------------------------------

def _flat(x):
    leaves, _ = flatten(x)
    return np.concatenate([np.asarray(backend.to_numpy(a), dtype=np.float64).reshape(-1)
                           for a in leaves])


def _iterates(run):
    """The iterates of a run: an OptimizeResult's trajectory, a stacked array or a list."""
    traj = run.get("trajectory") if isinstance(run, dict) else run
    if traj is None:
        raise ValueError("the run kept no trajectory (minimize(..., keep_trajectory=True))")
    if isinstance(traj, np.ndarray) or hasattr(traj, "__array_priority__"):
        return [traj[k] for k in range(len(traj))]
    return list(traj)


def _errors(run, x_star):
    xs = _flat(x_star)
    return np.array([np.linalg.norm(_flat(x) - xs) for x in _iterates(run)])


def _learning_rate(run, learning_rate, fname):
    if learning_rate is None and isinstance(run, dict):
        learning_rate = run.get("learning_rate")
    if learning_rate is None or callable(learning_rate):
        raise ValueError(f"{fname}: give the constant learning_rate α the run used")
    return float(learning_rate)


def contraction_factor(learning_rate, L, mu):
    """The exact worst-case contraction factor of gradient descent per step.

    Parameters
    ----------
    learning_rate : float
        α.
    L, mu : float
        Bounds on the Hessian's spectrum, μI ⪯ ∇²f ⪯ LI.

    Returns
    -------
    float
        ρ(α) = max(|1 − αμ|, |1 − αL|): ‖x_{k+1} − x*‖ ≤ ρ(α)‖x_k − x*‖, with equality on a
        quadratic for the worst starting point.  It is < 1 iff 0 < α < 2/L (μ > 0), smallest
        at α = 2/(L + μ), where it is (κ − 1)/(κ + 1), κ = L/μ.

    Examples
    --------
    >>> from calcml.analysis import contraction_factor
    >>> contraction_factor(0.1, L=10.0, mu=1.0)   # α = 1/L: 1 - αμ
    0.9
    >>> round(contraction_factor(0.19, L=10.0, mu=1.0), 6)  # α > 2/(L+μ): αL - 1 wins
    0.9
    """
    a, L, mu = float(learning_rate), float(L), float(mu)
    return max(abs(1.0 - a * mu), abs(1.0 - a * L))


@dataclass
class LinearRateCheck:
    """The linear rate of gradient descent on a strongly convex f, predicted and observed.

    Attributes
    ----------
    learning_rate, L, mu : float
        α and the constants the prediction used.
    predicted_factor : float
        The chapter's 1 − αμ.
    exact_factor : float
        max(|1 − αμ|, |1 − αL|), the exact worst-case factor (= 1 − αμ when α ≤ 2/(L + μ), in
        particular when α ≤ 1/L).
    observed_factor : float
        max over k of (‖x_k − x*‖/‖x₀ − x*‖)^{1/k}, over the k whose error is above the
        floating-point floor: the smallest ρ with ‖x_k − x*‖ ≤ ρ^k ‖x₀ − x*‖ along the run.
    mean_factor : float
        (‖x_K − x*‖/‖x₀ − x*‖)^{1/K} at the last k above the floor: the average factor.
    chapter_applies : bool
        α ≤ 2/(L + μ) (which includes the chapter's α ≤ 1/L): the chapter's bound is a theorem.
    holds : bool
        ‖x_k − x*‖ ≤ (1 − αμ)^k ‖x₀ − x*‖ (up to ``rtol`` and the floor) for every k.
    holds_exact : bool
        The same with ``exact_factor``.
    errors, predicted, exact : ndarray
        ‖x_k − x*‖, (1 − αμ)^k ‖x₀ − x*‖ and ρ(α)^k ‖x₀ − x*‖ for k = 0 … K.
    floor : float
        Errors below it are rounding, not rate, and are left out of the factors.
    note : str
        The assumptions, in words.
    """

    learning_rate: float
    L: float
    mu: float
    predicted_factor: float
    exact_factor: float
    observed_factor: float
    mean_factor: float
    chapter_applies: bool
    holds: bool
    holds_exact: bool
    errors: np.ndarray = field(repr=False)
    predicted: np.ndarray = field(repr=False)
    exact: np.ndarray = field(repr=False)
    floor: float = 0.0
    note: str = field(default="", repr=False)

    def to_dict(self) -> dict:
        """The scalar fields, for a metrics file."""
        return {k: getattr(self, k) for k in (
            "learning_rate", "L", "mu", "predicted_factor", "exact_factor", "observed_factor",
            "mean_factor", "chapter_applies", "holds", "holds_exact")}


def check_linear_rate(run, x_star, *, L, mu, learning_rate=None, rtol=1e-9, floor=None):
    """Hold a gradient-descent run against the linear rate ‖x_k − x*‖ ≤ (1 − αμ)^k ‖x₀ − x*‖.

    Parameters
    ----------
    run : OptimizeResult, ndarray or list
        A run of ``cm.optimize.minimize(..., method="gd")`` (its ``trajectory`` and constant
        ``learning_rate``), or the iterates x_0 … x_K (stacked, or a list of pytrees).
    x_star : array or pytree
        The minimiser.
    L, mu : float or EigenEstimate
        The smoothness and strong-convexity constants (e.g. from :func:`estimate_L`,
        :func:`estimate_mu`).
    learning_rate : float, optional
        α (read from the result when omitted).
    rtol : float
        Relative slack on the bound, for rounding.
    floor : float, optional
        Errors below ``floor`` count as converged: they are excluded from the observed factors
        and always pass.  Default: 1000 · eps(float64) · (‖x*‖ + ‖x₀ − x*‖), or with float32
        eps when the iterates are float32.

    Returns
    -------
    LinearRateCheck

    Notes
    -----
    Assumes f is μ-strongly convex and L-smooth (μI ⪯ ∇²f ⪯ LI) and x_{k+1} = x_k − α∇f(x_k)
    with a constant α.  Then ‖x_{k+1} − x*‖ ≤ ρ(α)‖x_k − x*‖ with ρ(α) = max(|1 − αμ|,
    |1 − αL|), so ‖x_k − x*‖ ≤ ρ(α)^k ‖x₀ − x*‖; ρ(α) = 1 − αμ for α ≤ 1/L (and up to
    α = 2/(L + μ)), which is the chapter's statement.  On a quadratic the bound is tight.
    """
    alpha = _learning_rate(run, learning_rate, "check_linear_rate")
    L, mu = float(L), float(mu)
    e = _errors(run, x_star)
    k = np.arange(len(e), dtype=np.float64)
    rho_ch = 1.0 - alpha * mu
    rho_ex = contraction_factor(alpha, L, mu)
    with np.errstate(over="ignore", under="ignore"):
        pred = e[0] * np.abs(rho_ch) ** k
        exact = e[0] * rho_ex ** k
    if floor is None:
        first = _iterates(run)[0]
        leaves, _ = flatten(first)
        dt = np.result_type(*[np.asarray(backend.to_numpy(a)).dtype for a in leaves])
        eps = np.finfo(dt if dt.kind == "f" else np.float64).eps
        floor = 1000.0 * eps * (np.linalg.norm(_flat(x_star)) + e[0])
    above = np.nonzero(e[1:] > floor)[0] + 1
    if e[0] > 0 and len(above):
        factors = (e[above] / e[0]) ** (1.0 / k[above])
        observed, mean = float(np.max(factors)), float(factors[-1])
    else:
        observed = mean = 0.0
    holds = bool(np.all((e <= pred * (1 + rtol)) | (e <= floor)))
    holds_exact = bool(np.all((e <= exact * (1 + rtol)) | (e <= floor)))
    applies = alpha <= 2.0 / (L + mu) * (1 + 1e-12) and mu > 0
    note = ("Assumes μI ⪯ ∇²f ⪯ LI with μ > 0 and a constant step α.  The chapter's factor "
            "1 − αμ is proved for α ≤ 1/L (and holds up to α = 2/(L+μ)); the exact worst-case "
            "factor is max|1 − αλ| over λ ∈ [μ, L], tight on a quadratic.  Here α = "
            f"{alpha:.6g}, 1/L = {1 / L:.6g}, 2/(L+μ) = {2 / (L + mu):.6g}.")
    return LinearRateCheck(alpha, L, mu, rho_ch, rho_ex, observed, mean, bool(applies), holds,
                           holds_exact, e, pred, exact, float(floor), note)


@dataclass
class ConvexRateCheck:
    """The O(1/k) rate of gradient descent on a convex f, predicted and observed.

    Attributes
    ----------
    learning_rate, L : float
        α and the smoothness constant.
    R : float
        ‖x₀ − x*‖.
    f_star : float
        f(x*).
    gaps : ndarray
        f(x_k) − f* for k = 0 … K.
    predicted : ndarray
        The chapter's L R²/(2k) for k = 0 … K (inf at k = 0).
    predicted_alpha : ndarray
        R²/(2αk), the theorem for the step actually used (= ``predicted`` at α = 1/L).
    worst_ratio : float
        max over k ≥ 1 of gap_k / (L R²/(2k)).
    applies : bool
        α ≤ 1/L: the bound R²/(2αk) is a theorem, and the chapter's form is implied when
        α = 1/L.
    holds, holds_alpha : bool
        gap_k ≤ bound_k (up to ``rtol`` and ``atol``) for every k ≥ 1, chapter's form and α form.
    note : str
        The assumptions, in words.
    """

    learning_rate: float
    L: float
    R: float
    f_star: float
    gaps: np.ndarray = field(repr=False)
    predicted: np.ndarray = field(repr=False)
    predicted_alpha: np.ndarray = field(repr=False)
    worst_ratio: float = math.nan
    applies: bool = False
    holds: bool = False
    holds_alpha: bool = False
    note: str = field(default="", repr=False)

    def to_dict(self) -> dict:
        """The scalar fields, for a metrics file."""
        return {"learning_rate": self.learning_rate, "L": self.L, "R": self.R,
                "f_star": self.f_star, "final_gap": float(self.gaps[-1]),
                "final_bound": float(self.predicted[-1]), "worst_ratio": self.worst_ratio,
                "applies": self.applies, "holds": self.holds, "holds_alpha": self.holds_alpha}


def check_convex_rate(run, x_star, f_star=None, *, L, learning_rate=None, f=None, rtol=1e-9,
                      atol=None):
    """Hold a gradient-descent run against f(x_k) − f* ≤ L‖x₀ − x*‖²/(2k).

    Parameters
    ----------
    run : OptimizeResult, ndarray or list
        A deterministic run of ``cm.optimize.minimize`` (its ``losses`` are f(x_k)), or the
        iterates (then ``f`` is needed).
    x_star : array or pytree
        The minimiser.
    f_star : float, optional
        f(x*) (computed with ``f`` when omitted).
    L : float or EigenEstimate
        The smoothness constant.
    learning_rate : float, optional
        α (read from the result when omitted).
    f : callable, optional
        The objective, to evaluate f(x_k) and f* when the run does not carry them.
    rtol, atol : float
        Slack on the bound, for rounding (default ``atol``: 100 · eps · (1 + |f*|)).

    Returns
    -------
    ConvexRateCheck

    Notes
    -----
    Assumes f convex and L-smooth and a constant α ≤ 1/L.  The descent lemma gives
    f(x_{k+1}) ≤ f(x_k) − (α/2)‖∇f(x_k)‖², convexity f(x_k) − f* ≤ ∇f(x_k)ᵀ(x_k − x*); together
    f(x_{k+1}) − f* ≤ (‖x_k − x*‖² − ‖x_{k+1} − x*‖²)/(2α), and summing over k (the gaps are
    non-increasing) f(x_k) − f* ≤ ‖x₀ − x*‖²/(2αk), the chapter's L‖x₀ − x*‖²/(2k) at α = 1/L.
    """
    alpha = _learning_rate(run, learning_rate, "check_convex_rate")
    L = float(L)
    if f_star is None:
        if f is None:
            raise ValueError("check_convex_rate: give f_star, or f to compute it")
        f_star = float(f(x_star))
    f_star = float(f_star)
    if f is not None:
        values = np.array([float(f(x)) for x in _iterates(run)])
    elif isinstance(run, dict) and run.get("losses") is not None:
        values = np.asarray(run["losses"], dtype=np.float64)
    else:
        raise ValueError("check_convex_rate: give f to evaluate the iterates")
    gaps = values - f_star
    R = float(_errors(run, x_star)[0])
    k = np.arange(len(gaps), dtype=np.float64)
    with np.errstate(divide="ignore"):
        pred = np.where(k > 0, L * R ** 2 / (2 * np.maximum(k, 1)), np.inf)
        pred_a = np.where(k > 0, R ** 2 / (2 * alpha * np.maximum(k, 1)), np.inf)
    if atol is None:
        atol = 100 * np.finfo(np.float64).eps * (1 + abs(f_star))
    ok = gaps[1:] <= pred[1:] * (1 + rtol) + atol
    ok_a = gaps[1:] <= pred_a[1:] * (1 + rtol) + atol
    worst = float(np.max(gaps[1:] / pred[1:])) if len(gaps) > 1 and R > 0 else 0.0
    note = ("Assumes f convex and L-smooth and a constant step α ≤ 1/L; then f(x_k) − f* ≤ "
            "‖x₀ − x*‖²/(2αk), the chapter's L‖x₀ − x*‖²/(2k) at α = 1/L.  Here α = "
            f"{alpha:.6g}, 1/L = {1 / L:.6g}.")
    return ConvexRateCheck(alpha, L, R, f_star, gaps, pred, pred_a, worst,
                           bool(alpha <= (1 + 1e-12) / L), bool(np.all(ok)), bool(np.all(ok_a)),
                           note)


@dataclass
class GDAnalysis:
    """Everything :func:`analyze_gradient_descent` measured: constants, run, both rate checks."""

    L: object  # EigenEstimate
    mu: object  # EigenEstimate
    learning_rate: float
    x_star: object = field(repr=False)
    f_star: float = math.nan
    result: dict = field(default=None, repr=False)
    linear: LinearRateCheck = None
    convex: ConvexRateCheck = None

    def to_dict(self) -> dict:
        """The scalar results, for a metrics file."""
        return {"L": self.L.value, "L_residual": self.L.residual, "mu": self.mu.value,
                "mu_residual": self.mu.residual, "learning_rate": self.learning_rate,
                "f_star": self.f_star,
                "linear": None if self.linear is None else self.linear.to_dict(),
                "convex": None if self.convex is None else self.convex.to_dict()}


def analyze_gradient_descent(f, x0, *args, x_star=None, learning_rate=None, n_iter=200,
                             tol=1e-10, rng=0):
    """Estimate L and μ, pick α = 1/L, run gradient descent and check both rates of 9.1.

    Parameters
    ----------
    f : callable
        Scalar ``f(x, *args)``.
    x0 : array or pytree
        The starting point.
    *args
        Further arguments of ``f``, held fixed.
    x_star : array or pytree, optional
        The minimiser; found by gradient descent to ‖∇f‖ < 1e-12 from ``x0`` when omitted.
    learning_rate : float, optional
        α; 1/L when omitted.
    n_iter : int
        The gradient-descent steps to measure.
    tol : float
        Tolerance of the eigenvalue estimates.
    rng : int or numpy.random.Generator
        Seed of the eigenvalue estimates.

    Returns
    -------
    GDAnalysis
        ``L``, ``mu`` (EigenEstimates at x*), ``learning_rate``, ``result`` (the run),
        ``linear`` (:class:`LinearRateCheck`, when μ > 0), ``convex`` (:class:`ConvexRateCheck`).

    Notes
    -----
    L and μ are the extreme Hessian eigenvalues at x* (exact constants for a quadratic; local
    ones otherwise, which the rates need only near x*).
    """
    from ..optimize import minimize
    from .spectrum import estimate_L, estimate_mu

    obj = (lambda x: f(x, *args)) if args else f
    gen = backend.rng(rng)
    if x_star is None:
        L0 = estimate_L(obj, x0, tol=tol, rng=gen).value
        x_star = minimize(obj, x0, "gd", learning_rate=1.0 / L0, tol=1e-12, stop="gradient",
                          max_iter=1_000_000, keep_trajectory=False).x
    L = estimate_L(obj, x_star, tol=tol, rng=gen)
    mu = estimate_mu(obj, x_star, tol=tol, rng=gen)
    alpha = 1.0 / L.value if learning_rate is None else float(learning_rate)
    res = minimize(obj, x0, "gd", learning_rate=alpha, tol=None, max_iter=n_iter)
    f_star = float(obj(x_star))
    lin = (check_linear_rate(res, x_star, L=L.value, mu=mu.value) if mu.value > 0 else None)
    cvx = check_convex_rate(res, x_star, f_star, L=L.value)
    return GDAnalysis(L, mu, alpha, x_star, f_star, res, lin, cvx)

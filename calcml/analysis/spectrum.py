"""The curvature constants of convergence theory, from Hessian-vector products.

Section 9.1's guarantees are stated with two numbers: the smoothness constant L (the gradient is
L-Lipschitz, ‖∇f(x) − ∇f(y)‖ ≤ L‖x − y‖; for a twice-differentiable f, L = sup λ_max(∇²f)) and
the strong-convexity constant μ (∇²f ⪰ μI).  At a point x both are eigenvalues of the Hessian
H = ∇²f(x), and both can be found without ever forming H: every method here touches H only
through the product v ↦ Hv, which :func:`calcml.hvp` gives (forward mode over the reverse-mode
gradient) for a few gradient evaluations whatever the dimension.

* Power iteration: v ← Hv/‖Hv‖ converges to the eigenvector of the eigenvalue largest in
  magnitude (λ_max = L when H ⪰ 0) at the rate |λ₂/λ₁| per step, and the Rayleigh quotient
  vᵀHv at the rate |λ₂/λ₁|².  Applied to the shifted operator L·I − H (eigenvalues
  L − λ_i ≥ 0 for L ≥ λ_max) it gives L − μ, hence μ; applied to H + sI with s ≥ ρ(H) it
  gives λ_max + s, which is how L is found when the dominant eigenvalue is negative.
* Lanczos (ARPACK's implicitly restarted Lanczos through :func:`scipy.sparse.linalg.eigsh`, on
  a :class:`scipy.sparse.linalg.LinearOperator` whose ``matvec`` is the HVP): the extreme
  eigenvalues of a Krylov space, far fewer products than power iteration when the spectrum is
  clustered, and the smallest eigenvalue directly (``which="SA"``).

Every estimate carries its residual r = ‖Hv − λv‖ for the unit vector v it returns.  For a
symmetric H this is a certificate: some eigenvalue of H lies in [λ − r, λ + r] (and within
r²/gap when the gap to the rest of the spectrum is known).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import backend
from .._core.tree import flatten, unflatten
from ..autodiff import hvp

__all__ = ["EigenEstimate", "HessianOperator", "estimate_L", "estimate_mu",
           "recommend_learning_rate"]


@dataclass
class EigenEstimate:
    """An eigenvalue of the Hessian ∇²f(x), estimated from Hessian-vector products.

    Attributes
    ----------
    value : float
        The estimate λ (the Rayleigh quotient vᵀHv of the returned vector).
    residual : float
        ‖Hv − λv‖₂ for the unit vector v: an eigenvalue of H lies within ``residual`` of
        ``value``.
    vector : ndarray
        The unit eigenvector estimate v, flattened over the leaves of x (float64).
    which : str
        ``"largest"`` (L) or ``"smallest"`` (μ).
    method : str
        ``"power"``, ``"lanczos"`` or ``"exact"`` (a one-dimensional x).
    n_iter : int
        Iterations of the method (ARPACK's count for Lanczos).
    n_hvp : int
        Hessian-vector products spent, the residual check included.
    converged : bool
        Whether ``residual <= tol * |value|`` (or ARPACK converged) within the budget.
    tol : float
        The relative tolerance asked for.
    """

    value: float
    residual: float
    vector: np.ndarray = field(repr=False)
    which: str
    method: str
    n_iter: int
    n_hvp: int
    converged: bool
    tol: float

    @property
    def relative_residual(self) -> float:
        """``residual / |value|``: a bound on the relative error of ``value`` (H symmetric)."""
        return self.residual / abs(self.value) if self.value else float("inf")

    @property
    def interval(self) -> tuple[float, float]:
        """``(value - residual, value + residual)``: it contains an eigenvalue of H."""
        return (self.value - self.residual, self.value + self.residual)

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict:
        """The scalar fields, for a metrics file."""
        return {"value": self.value, "residual": self.residual, "which": self.which,
                "method": self.method, "n_iter": self.n_iter, "n_hvp": self.n_hvp,
                "converged": self.converged}


class HessianOperator:
    """The map v ↦ ∇²f(x) v on flat float64 vectors, through :func:`calcml.hvp`.

    Parameters
    ----------
    f : callable
        Scalar function ``f(x, *args)`` written with calcml's math.
    x : array_like or pytree
        The point; a pytree is flattened leaf by leaf (in ``cm.tree_flatten`` order).
    *args
        Further arguments of ``f``, held fixed (data, targets).

    Notes
    -----
    Each product is one ``cm.hvp`` call, H v = d/dε ∇f(x + εv)|_{ε=0}, in the dtype of x (the
    flat vector is cast to each leaf's dtype and the product back to float64).  The Hessian is
    never formed.  ``n_matvec`` counts the products.
    """

    def __init__(self, f, x, *args):
        def leaf(a):
            a = backend.get_xp(a).asarray(a)
            return a if a.dtype.kind in "fc" else a.astype(np.float64)

        leaves, self.treedef = flatten(x)
        if not leaves:
            raise ValueError("HessianOperator: x holds no arrays")
        self.leaves = [leaf(a) for a in leaves]
        self.x = unflatten(self.treedef, self.leaves)
        self.shapes = [a.shape for a in self.leaves]
        self.sizes = [int(a.size) for a in self.leaves]
        self.n = int(sum(self.sizes))
        self._f, self._args = f, args
        self.n_matvec = 0

    def _objective(self, p):
        return self._f(p, *self._args)

    def unflatten(self, v):
        """The pytree (with x's structure, dtypes and backend) of the flat vector ``v``."""
        out, start = [], 0
        for a, shape, size in zip(self.leaves, self.shapes, self.sizes):
            piece = np.asarray(v[start:start + size]).reshape(shape)
            out.append(backend.get_xp(a).asarray(piece, dtype=a.dtype))
            start += size
        return unflatten(self.treedef, out)

    def matvec(self, v):
        """H v for a flat vector ``v`` of length ``n``, as a flat float64 NumPy array."""
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        hv = hvp(self._objective, (self.x,), (self.unflatten(v),))
        self.n_matvec += 1
        leaves, _ = flatten(hv)
        return np.concatenate([np.asarray(backend.to_numpy(a), dtype=np.float64).reshape(-1)
                               for a in leaves])

    def as_linear_operator(self):
        """A :class:`scipy.sparse.linalg.LinearOperator` of shape (n, n) (symmetric)."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator((self.n, self.n), matvec=self.matvec, rmatvec=self.matvec,
                              dtype=np.float64)


_ROUNDING = 100 * np.finfo(np.float64).eps  # residuals below ~eps·‖H‖ are rounding


def _unit(v):
    return v / np.linalg.norm(v)


def _power(matvec, n, tol, max_iter, gen):
    """Power iteration on a symmetric operator: (λ, v, residual, iterations, converged).

    λ is the Rayleigh quotient vᵀAv of the current unit vector, the residual ‖Av − λv‖, and the
    loop stops once residual ≤ tol·|λ| (the unshifted case of :func:`_shifted_power`).
    """
    return _shifted_power(matvec, n, 0.0, 1.0, tol, max_iter, gen)


def _shifted_power(matvec, n, shift, sign, tol, max_iter, gen):
    """Power iteration on A = shift·I + sign·H, reported for H: (λ, v, residual, it, converged).

    With shift ≥ ρ(H) (the spectral radius) every eigenvalue shift + sign·λ_i of A is ≥ 0, so
    the one largest in magnitude is the largest algebraically: λ_max(H) for sign = +1,
    λ_min(H) for sign = −1.  λ = vᵀHv and the residual ‖Hv − λv‖ are those of H itself
    (= ‖Av − (vᵀAv)v‖), and the loop stops once residual ≤ max(tol·|λ|, 100·eps·|shift|)
    (tol at least 100·eps), the floor being the rounding level of the shifted products (so
    that λ = 0 can converge).
    """
    v = _unit(gen.standard_normal(n))
    lam, r, it = 0.0, np.inf, 0
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported
        hv = matvec(v)
        lam = float(v @ hv)
        r = float(np.linalg.norm(hv - lam * v))
        if r <= max(max(tol, _ROUNDING) * abs(lam), _ROUNDING * abs(shift)) or r == 0.0:
            return lam, v, r, it, True
        w = shift * v + sign * hv
        nw = np.linalg.norm(w)
        if nw == 0.0:  # Av = 0: v is an eigenvector of H for λ = −sign·shift
            return lam, v, r, it, True
        v = w / nw
    return lam, v, r, it, False


def _check_method(method, which):
    if method not in ("power", "lanczos"):
        raise ValueError(f"estimate_{which}: method must be 'power' or 'lanczos', got {method!r}")


def _exact_1d(op, which, tol):
    hv = op.matvec(np.ones(1))
    lam = float(hv[0])
    return EigenEstimate(lam, 0.0, np.ones(1), which, "exact", 1, 1, True, tol)


def _lanczos(op, which_arpack, which, tol, max_iter, gen):
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

    start = op.n_matvec
    v0 = gen.standard_normal(op.n)
    try:
        _, vecs = eigsh(op.as_linear_operator(), k=1, which=which_arpack, tol=tol,
                        maxiter=max_iter, v0=v0)
        converged = True
    except ArpackNoConvergence as e:  # keep the best Ritz pair it had
        if len(e.eigenvalues) == 0:
            raise
        vecs, converged = e.eigenvectors, False
    except ArpackError:
        # ARPACK's "starting vector is zero" (info −9) when H v0 = 0 for the random v0, i.e.
        # H = 0 (a linear f): then every eigenvalue is 0, certified by the zero residual
        v = _unit(v0)
        w = op.matvec(v)
        if np.linalg.norm(w) != 0.0:
            raise
        n_hvp = op.n_matvec - start
        return EigenEstimate(0.0, 0.0, v, which, "lanczos", n_hvp - 1, n_hvp, True, tol)
    v = _unit(np.asarray(vecs[:, 0], dtype=np.float64))
    w = op.matvec(v)
    lam = float(v @ w)
    r = float(np.linalg.norm(w - lam * v))
    n_hvp = op.n_matvec - start
    return EigenEstimate(lam, r, v, which, "lanczos", n_hvp - 1, n_hvp, converged, tol)


def estimate_L(f, x, *args, method="power", tol=1e-8, max_iter=1000, rng=0):
    """Estimate L = λ_max(∇²f(x)), the local smoothness constant, from Hessian-vector products.

    Parameters
    ----------
    f : callable
        Scalar function ``f(x, *args)`` written with calcml's math.
    x : array_like or pytree
        The point at which the Hessian is taken (any point for a quadratic).
    *args
        Further arguments of ``f`` (e.g. the data ``X, y``), held fixed.
    method : {"power", "lanczos"}
        Power iteration on v ↦ Hv, or Lanczos (``scipy.sparse.linalg.eigsh``, ``which="LA"``)
        on a ``LinearOperator`` built from the same products.
    tol : float
        Relative tolerance: power iteration stops once ‖Hv − λv‖ ≤ tol·|λ|; for Lanczos it is
        ARPACK's relative accuracy of the Ritz value.
    max_iter : int
        The most iterations (ARPACK's ``maxiter`` for Lanczos).
    rng : int or numpy.random.Generator, default 0
        Seed or generator for the random starting vector (a fixed default: the estimate
        is the same on every call).

    Returns
    -------
    EigenEstimate
        ``value`` (L), ``residual`` ‖Hv − Lv‖, ``vector``, ``n_hvp``, ``converged``…

    Notes
    -----
    Power iteration: v_{t+1} = Hv_t/‖Hv_t‖, λ_t = v_tᵀHv_t.  The error of λ_t falls like
    (λ₂/λ₁)^{2t}.  It finds the eigenvalue largest in *magnitude*: for convex f (H ⪰ 0) that is
    L.  When that eigenvalue λ is negative (a non-convex f whose most negative curvature
    outweighs λ_max), or when a pair ±ρ keeps the iterate from settling (unconverged, with a
    residual above |λ|), a second power iteration runs on the shifted operator H + sI with
    s = |λ| + ‖Hv − λv‖ ≥ ‖Hv‖ ≈ ρ(H): its eigenvalues λ_i + s are ≥ 0, the largest is
    λ_max + s, and the value reported is λ_max itself (``n_iter`` and ``n_hvp`` count both
    runs, ``max_iter`` bounds each).  For f convex and L-smooth, gradient descent with
    α ≤ 1/L converges (section 9.1); the value here is the
    curvature at ``x`` only, a global L for a quadratic (constant Hessian), a local one
    otherwise.

    Examples
    --------
    >>> import calcml as cm, numpy as np
    >>> A = np.diag([1.0, 4.0, 9.0])
    >>> est = cm.analysis.estimate_L(lambda x: 0.5 * x @ (A @ x), np.zeros(3), rng=0)
    >>> round(est.value, 6)
    9.0
    """
    _check_method(method, "L")
    op = HessianOperator(f, x, *args)
    gen = backend.rng(rng)
    if op.n == 1:
        return _exact_1d(op, "largest", tol)
    if method == "lanczos":
        return _lanczos(op, "LA", "largest", tol, max_iter, gen)
    lam, v, r, it, ok = _power(op.matvec, op.n, tol, max_iter, gen)
    if lam < 0.0 or (not ok and r > abs(lam)):
        # the eigenvalue largest in magnitude is negative (H indefinite or negative definite,
        # λ_max is elsewhere), or the iterate swings between ±ρ and never settles (λ ≈ 0
        # with a residual ≈ ρ).  |λ| + r ≥ ‖Hv‖ ≈ ρ(H), so H + (|λ| + r)·I ⪰ 0 and its
        # dominant eigenvalue is λ_max + |λ| + r: iterate on it from a fresh vector.
        shift = abs(lam) + r
        lam, v, r, it2, ok = _shifted_power(op.matvec, op.n, shift, 1.0, tol, max_iter, gen)
        it += it2
    return EigenEstimate(lam, r, v, "largest", "power", it, op.n_matvec, ok, tol)


def estimate_mu(f, x, *args, method="lanczos", L=None, tol=1e-8, max_iter=None, rng=0):
    """Estimate μ = λ_min(∇²f(x)), the strong-convexity constant, from Hessian-vector products.

    Parameters
    ----------
    f, x, *args
        As for :func:`estimate_L`.
    method : {"lanczos", "power"}
        Lanczos (``scipy.sparse.linalg.eigsh(..., which="SA")`` on a ``LinearOperator`` of
        HVPs, the default), or power iteration on the shifted operator L·I − H.
    L : float or EigenEstimate, optional
        The shift for ``method="power"``, which must be ≥ λ_max(H).  An ``EigenEstimate``
        gives ``value + residual`` (its Rayleigh quotient is ≤ λ_max, and λ_max lies within the
        residual); omitted, it is estimated with :func:`estimate_L` (power iteration) in the
        same way.
    tol : float
        Relative tolerance on the residual ‖Hv − μv‖ ≤ tol·|μ| (power iteration, with a floor
        of 100·eps·L, the rounding level of the products, so that μ = 0 can converge), or
        ARPACK's.
    max_iter : int, optional
        The most iterations (default 10,000 for power iteration, ARPACK's own for Lanczos).
    rng : int or numpy.random.Generator, default 0
        Seed or generator for the random starting vector (a fixed default: the estimate
        is the same on every call).

    Returns
    -------
    EigenEstimate
        ``value`` (μ), ``residual`` ‖Hv − μv‖, …

    Notes
    -----
    With L ≥ λ_max the eigenvalues of L·I − H are L − λ_i ≥ 0, so the one largest in magnitude
    is L − μ, whatever the signs of the λ_i (an indefinite H gives μ < 0); power iteration finds
    it at the rate (L − λ_{n−1})/(L − μ) per step, slow when the small eigenvalues cluster,
    which is why Lanczos is the default.  μ > 0 certifies strong convexity at x (a
    μ-strongly convex f has ∇²f ⪰ μI everywhere); μ ≤ 0 means f is not strongly convex there
    and the linear rate of section 9.1 does not apply.

    Examples
    --------
    >>> import calcml as cm, numpy as np
    >>> A = np.diag([1.0, 4.0, 9.0])
    >>> est = cm.analysis.estimate_mu(lambda x: 0.5 * x @ (A @ x), np.zeros(3), rng=0)
    >>> round(est.value, 6)
    1.0
    """
    _check_method(method, "mu")
    op = HessianOperator(f, x, *args)
    gen = backend.rng(rng)
    if op.n == 1:
        return _exact_1d(op, "smallest", tol)
    if method == "lanczos":
        return _lanczos(op, "SA", "smallest", tol, max_iter, gen)
    if L is None:
        L = estimate_L(f, x, *args, method="power", tol=tol, rng=gen)
    # the shift must bound the spectrum above: an estimate's Rayleigh quotient is ≤ λ_max, so
    # add its residual (λ_max lies within it), which makes L·I − H ⪰ 0
    shift = float(L.value + L.residual) if isinstance(L, EigenEstimate) else float(L)
    if not np.isfinite(shift):
        raise ValueError(f"calcml.analysis.estimate_mu: L must be finite, got {shift}")
    max_iter = 10_000 if max_iter is None else max_iter
    # Stop on the residual of H itself, relative to μ (not to L − μ): ‖Hv − μv‖ ≤ tol·|μ|,
    # with a floor at the rounding level of the products (~eps·L), which is all that can be
    # asked when μ = 0 (convex but not strongly convex).
    lam, v, r, it, ok = _shifted_power(op.matvec, op.n, shift, -1.0, tol, max_iter, gen)
    return EigenEstimate(lam, r, v, "smallest", "power", it, op.n_matvec, ok, tol)


def recommend_learning_rate(f=None, x=None, *args, L=None, mu=None, rule="1/L", **kwargs):
    """The step size the theory of section 9.1 recommends: α = 1/L.

    Parameters
    ----------
    f, x, *args
        The objective and the point, to estimate L (and μ) with :func:`estimate_L`
        (:func:`estimate_mu`); not needed when ``L`` (and ``mu``) are given.
    L, mu : float or EigenEstimate, optional
        Known constants.
    rule : {"1/L", "2/(L+mu)"}
        ``"1/L"``: the chapter's rule, the largest step for which the descent lemma
        f(x − α∇f) ≤ f(x) − (α/2)‖∇f‖² holds, and with which GD converges on any convex
        L-smooth f.  ``"2/(L+mu)"``: the step that minimises the worst contraction factor
        max|1 − αλ| over λ ∈ [μ, L] of GD on a strongly convex quadratic, giving
        (κ − 1)/(κ + 1) with κ = L/μ instead of 1 − 1/κ.
    **kwargs
        Passed to the estimators (``tol``, ``rng``, ``method``…).

    Returns
    -------
    float
        α.

    Examples
    --------
    >>> import calcml as cm
    >>> cm.analysis.recommend_learning_rate(L=4.0)
    0.25
    """
    if rule not in ("1/L", "2/(L+mu)"):
        raise ValueError(f"recommend_learning_rate: rule must be '1/L' or '2/(L+mu)', got {rule!r}")
    if L is None:
        if f is None or x is None:
            raise ValueError("recommend_learning_rate: give L, or f and x to estimate it")
        L = estimate_L(f, x, *args, **kwargs)
    L = float(L)
    if not L > 0:
        raise ValueError(f"recommend_learning_rate: needs L > 0, got L = {L}")
    if rule == "1/L":
        return 1.0 / L
    if mu is None:
        if f is None or x is None:
            raise ValueError("recommend_learning_rate: rule '2/(L+mu)' needs mu, or f and x")
        mu = estimate_mu(f, x, *args, **kwargs)
    return 2.0 / (L + float(mu))

"""Test problems whose constants are known exactly: quadratics with a chosen spectrum."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import backend

__all__ = ["Quadratic", "make_quadratic"]


@dataclass
class Quadratic:
    """f(x) = ½ xᵀAx − bᵀx with A symmetric positive definite and a known spectrum.

    Attributes
    ----------
    A : ndarray, shape (n, n)
        U diag(eigenvalues) Uᵀ, U a random orthogonal matrix.
    b : ndarray, shape (n,)
    eigenvalues : ndarray
        The spectrum of A = ∇²f, sorted ascending: μ = eigenvalues[0], L = eigenvalues[-1].
    x_star : ndarray
        The minimiser A⁻¹b (∇f(x) = Ax − b = 0).
    f_star : float
        f(x*) = −½ bᵀx*.

    Notes
    -----
    Called as ``q(x)`` it evaluates f with calcml's math, so ``cm.grad(q)``, ``cm.hvp`` and
    ``cm.optimize.minimize(q, x0)`` all work on it.
    """

    A: np.ndarray = field(repr=False)
    b: np.ndarray = field(repr=False)
    eigenvalues: np.ndarray
    x_star: np.ndarray = field(repr=False)
    f_star: float

    @property
    def L(self) -> float:
        """The largest eigenvalue of A: the smoothness constant."""
        return float(self.eigenvalues[-1])

    @property
    def mu(self) -> float:
        """The smallest eigenvalue of A: the strong-convexity constant."""
        return float(self.eigenvalues[0])

    @property
    def condition_number(self) -> float:
        """κ = L/μ."""
        return self.L / self.mu

    def __call__(self, x):
        return 0.5 * (x @ (self.A @ x)) - self.b @ x


def make_quadratic(eigenvalues, rng=0, dtype=np.float64):
    """A quadratic ½ xᵀAx − bᵀx whose Hessian A has exactly the given eigenvalues.

    Parameters
    ----------
    eigenvalues : array_like
        The spectrum (positive for a strongly convex f).
    rng : int or numpy.random.Generator, default 0
        For the random rotation U (QR of a Gaussian matrix) and b ~ N(0, I).
    dtype : dtype
        Of A and b (float32 gives a float32 objective).

    Returns
    -------
    Quadratic

    Examples
    --------
    >>> from calcml.analysis import make_quadratic
    >>> q = make_quadratic([1.0, 10.0], rng=0)
    >>> q.L, q.mu, q.condition_number
    (10.0, 1.0, 10.0)
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64).reshape(-1))
    n = lam.size
    gen = backend.rng(rng)
    Q, R = np.linalg.qr(gen.standard_normal((n, n)))
    Q = Q * np.sign(np.diag(R))
    A = (Q * lam) @ Q.T
    A = 0.5 * (A + A.T)
    b = gen.standard_normal(n)
    x_star = np.linalg.solve(A, b) if np.all(lam != 0) else np.linalg.lstsq(A, b, rcond=None)[0]
    f_star = float(-0.5 * b @ x_star)
    return Quadratic(A.astype(dtype), b.astype(dtype), lam, x_star, f_star)

r"""Data for the generative models: a ring of Gaussians (2-D) and scikit-learn's digits.

Everything is generated or bundled with scikit-learn; nothing is downloaded, and every draw
comes from an explicit ``numpy.random.Generator`` or seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validate import as_generator, float_dtype, positive_float, positive_int

__all__ = ["RingOfGaussians", "ring_of_gaussians", "DigitsSplit", "load_digits_split"]


@dataclass(frozen=True)
class RingOfGaussians:
    r"""A mixture of ``n_modes`` isotropic Gaussians with equal weights, centred on a circle.

    Parameters
    ----------
    n_modes : int
        K, the number of components (8 in the usual benchmark).
    radius : float
        r, the radius of the circle of centres.
    std : float
        σ, the standard deviation of every component (per coordinate).

    Notes
    -----
    .. math:: p(x) = \frac1K \sum_{k=0}^{K-1} \mathcal N\big(x;\ \mu_k,\ \sigma^2 I_2\big),
              \qquad \mu_k = r\,(\cos(2\pi k/K),\ \sin(2\pi k/K)).

    The centres are :math:`2r\sin(\pi/K)` apart (1.53 for K = 8, r = 2), far more than σ, so
    the density has K separate peaks: the standard test of *mode collapse* (a generator that
    produces only some of the peaks).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import RingOfGaussians
    >>> ring = RingOfGaussians()
    >>> x, k = ring.sample(5, np.random.default_rng(0))
    >>> x.shape, k.shape, ring.centers.shape
    ((5, 2), (5,), (8, 2))
    """

    n_modes: int = 8
    radius: float = 2.0
    std: float = 0.05

    def __post_init__(self):
        positive_int("RingOfGaussians", "n_modes", self.n_modes)
        positive_float("RingOfGaussians", "radius", self.radius)
        positive_float("RingOfGaussians", "std", self.std)

    @property
    def centers(self):
        """The (K, 2) array of component means, float64."""
        t = 2.0 * math.pi * np.arange(self.n_modes) / self.n_modes
        return self.radius * np.stack([np.cos(t), np.sin(t)], axis=1)

    @property
    def min_center_distance(self):
        """The distance between neighbouring centres, 2 r sin(π/K) (for K ≥ 2)."""
        return 2.0 * self.radius * math.sin(math.pi / self.n_modes) if self.n_modes > 1 \
            else math.inf

    def sample(self, n, rng, dtype=np.float64):
        """Draw ``n`` points: ``(x of shape (n, 2), component labels of shape (n,))``.

        The component of each point is drawn uniformly (so the counts vary, multinomially),
        then the point from that component.
        """
        n = positive_int("RingOfGaussians.sample", "n", n)
        gen = as_generator("RingOfGaussians.sample", rng)
        dt = float_dtype("RingOfGaussians.sample", dtype)
        k = gen.integers(0, self.n_modes, size=n)
        x = self.centers[k] + self.std * gen.standard_normal((n, 2))
        return x.astype(dt, copy=False), k

    def __call__(self, n, rng, dtype=np.float64):
        """``sample(n, rng, dtype)[0]``: the points only (a *data sampler* for the trainers)."""
        return self.sample(n, rng, dtype)[0]


def ring_of_gaussians(n, rng, n_modes=8, radius=2.0, std=0.05, dtype=np.float64):
    """Draw ``n`` points of :class:`RingOfGaussians` ``(n_modes, radius, std)``.

    Returns
    -------
    x : ndarray of shape (n, 2)
    labels : ndarray of shape (n,)
        The component each point was drawn from.

    Examples
    --------
    >>> from calcml.generative import ring_of_gaussians
    >>> x, k = ring_of_gaussians(1000, rng=0)
    >>> bool(abs(abs(x).max() - 2.0) < 0.5)
    True
    """
    return RingOfGaussians(n_modes, radius, std).sample(n, rng, dtype)


@dataclass
class DigitsSplit:
    """scikit-learn's 8×8 digits scaled to [0, 1], split once into train and test.

    Attributes
    ----------
    X_train, X_test : ndarray of shape (n, 64)
        Pixel intensities / 16, in [0, 1] (17 grey levels).
    y_train, y_test : ndarray of int
        The digit classes (used only to colour plots: the models are unsupervised).
    """

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def load_digits_split(test_fraction=0.25, seed=0, dtype=np.float64):
    """The digits (1797 images), scaled to [0, 1], in a fixed stratified train/test split.

    Parameters
    ----------
    test_fraction : float in (0, 1)
        Share of the images held out (default a quarter: 1347 train, 450 test).
    seed : int
        Seed of the split (the same seed gives the same split).
    dtype : float32 or float64

    Returns
    -------
    DigitsSplit

    Notes
    -----
    The split is stratified: each class keeps its proportion in both parts.  The data come
    from ``sklearn.datasets.load_digits``, bundled with scikit-learn (no download).

    Examples
    --------
    >>> from calcml.generative import load_digits_split
    >>> d = load_digits_split()
    >>> d.X_train.shape, d.X_test.shape, float(d.X_train.max())
    ((1347, 64), (450, 64), 1.0)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not (isinstance(test_fraction, (int, float)) and 0.0 < float(test_fraction) < 1.0):
        raise ValueError(f"calcml.generative.load_digits_split: test_fraction must be in (0, 1), "
                         f"got {test_fraction!r}")
    dt = float_dtype("load_digits_split", dtype)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dt)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=float(test_fraction),
                                          random_state=int(seed), stratify=y)
    return DigitsSplit(Xtr, Xte, ytr, yte)

r"""How good is a sample? Maximum mean discrepancy, mode coverage, exact empirical W₁.

* :func:`mmd2` — the unbiased estimate of the squared maximum mean discrepancy with a
  Gaussian kernel (Gretton et al. 2012), and :func:`mmd2_noise_floor`, the same statistic
  between two independent samples of the *data*: the value a perfect generator would get.
* :func:`mode_coverage` — which components of a Gaussian mixture a sample covers, and what
  share of it is of high quality (close to some component's centre).
* :func:`wasserstein1` — the exact Wasserstein-1 distance between two equal-size point
  clouds (an optimal assignment), against which a WGAN critic's estimate can be compared.

These are measurements, not training objectives: they run in NumPy (float64 inside) and
return numbers of the inputs' floating dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import as_generator, desc, float_array, positive_float, positive_int

__all__ = ["mmd2", "median_bandwidth", "mmd2_noise_floor", "NoiseFloor", "ModeCoverage",
           "mode_coverage", "wasserstein1"]


def _sqdist(a, b):
    """Pairwise squared Euclidean distances, float64, clipped at 0 (rounding)."""
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def median_bandwidth(x, y=None):
    """The median heuristic: the median pairwise distance of the pooled sample (off-diagonal).

    Parameters
    ----------
    x : array of shape (n, d)
    y : array of shape (m, d), optional
        Pooled with ``x`` when given.

    Returns
    -------
    float
    """
    x = float_array("median_bandwidth", "x", x, ndim=2, min_rows=2)
    z = x if y is None else np.concatenate(
        [x, float_array("median_bandwidth", "y", y, ndim=2, last=x.shape[1])])
    d = _sqdist(z, z)
    iu = np.triu_indices(len(z), 1)
    return float(np.sqrt(np.median(d[iu])))


def _bandwidths(fname, bandwidth, x, y):
    if bandwidth is None:
        h = median_bandwidth(x, y)
        if not h > 0:
            raise ValueError(f"calcml.generative.{fname}: the median heuristic gives bandwidth 0 "
                             f"(more than half of the pooled points coincide: x {desc(x)}, y "
                             f"{desc(y)}); pass bandwidth= explicitly")
        return (h,)
    bws = np.atleast_1d(np.asarray(bandwidth, dtype=np.float64))
    if bws.ndim != 1 or bws.size == 0 or not np.all(np.isfinite(bws)) or np.any(bws <= 0):
        raise ValueError(f"calcml.generative.{fname}: bandwidth must be a positive number or a "
                         f"non-empty sequence of them, got {bandwidth!r}")
    return tuple(float(b) for b in bws)


def _kernel(d2, bws):
    k = np.zeros_like(d2)
    for h in bws:
        k += np.exp(d2 * (-0.5 / (h * h)))
    return k / len(bws)


def mmd2(x, y, bandwidth=None):
    r"""The unbiased estimate of the squared maximum mean discrepancy, Gaussian kernel.

    Parameters
    ----------
    x : array of shape (m, d)
        A sample of P (e.g. generated points), m ≥ 2.
    y : array of shape (n, d)
        A sample of Q (e.g. the data), n ≥ 2.
    bandwidth : float or sequence of float, optional
        The kernel width h, or several widths whose kernels are averaged (a kernel that looks
        at several scales at once).  Default: the median heuristic on the pooled sample.

    Returns
    -------
    numpy floating scalar
        MMD²_u, of the inputs' (promoted) floating dtype.  It is an *unbiased* estimate of
        MMD²(P, Q) ≥ 0, so it scatters around 0, and may be negative, when P = Q.

    Notes
    -----
    With k(a, b) = exp(-‖a - b‖² / (2h²)) (averaged over the widths h),

    .. math:: \mathrm{MMD}^2_u = \frac{1}{m(m-1)}\sum_{i\ne j} k(x_i, x_j)
              + \frac{1}{n(n-1)}\sum_{i\ne j} k(y_i, y_j)
              - \frac{2}{mn}\sum_{i,j} k(x_i, y_j).

    MMD(P, Q) = ‖E_P φ(x) − E_Q φ(y)‖ in the kernel's feature space; the Gaussian kernel is
    characteristic, so MMD = 0 only for P = Q.  The diagonal terms k(x_i, x_i) = 1 are left
    out, which is what removes the bias (Gretton et al., JMLR 2012, eq. 3).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import mmd2
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
    >>> bool(abs(mmd2(a, b, 1.0)) < 0.01), bool(mmd2(a, b + 1.0, 1.0) > 0.1)
    (True, True)
    """
    x = float_array("mmd2", "x", x, ndim=2, min_rows=2)
    y = float_array("mmd2", "y", y, ndim=2, min_rows=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"calcml.generative.mmd2: x and y must have the same number of "
                         f"columns, got x {desc(x)} and y {desc(y)}")
    bws = _bandwidths("mmd2", bandwidth, x, y)
    m, n = len(x), len(y)
    kxx = _kernel(_sqdist(x, x), bws)
    kyy = _kernel(_sqdist(y, y), bws)
    kxy = _kernel(_sqdist(x, y), bws)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    val = sxx + syy - 2.0 * kxy.mean()
    return np.result_type(x.dtype, y.dtype).type(val)


@dataclass
class NoiseFloor:
    """MMD²_u between independent samples of the data (what a perfect generator scores).

    Attributes
    ----------
    values : ndarray
        One MMD²_u per repetition.
    mean, std : float
        Their mean (≈ 0: the estimator is unbiased) and standard deviation.
    q95 : float
        The 95th percentile: a generated sample scoring below it cannot be told from the data
        by this statistic at this sample size.
    """

    values: np.ndarray
    mean: float
    std: float
    q95: float


def mmd2_noise_floor(sample_data, n, rng, repeats=20, bandwidth=None):
    """The distribution of :func:`mmd2` between two independent samples of the data.

    Parameters
    ----------
    sample_data : callable
        ``sample_data(n, rng) -> array (n, d)`` (e.g. a :class:`RingOfGaussians`).
    n : int
        The size of each sample (use the size the generator is measured at).
    rng : numpy.random.Generator or int
    repeats : int
    bandwidth : as in :func:`mmd2`

    Returns
    -------
    NoiseFloor

    Examples
    --------
    >>> from calcml.generative import RingOfGaussians, mmd2_noise_floor
    >>> nf = mmd2_noise_floor(RingOfGaussians(), 200, rng=0, repeats=5, bandwidth=0.5)
    >>> bool(abs(nf.mean) < 3 * nf.std + 1e-3)
    True
    """
    if not callable(sample_data):
        raise TypeError(f"calcml.generative.mmd2_noise_floor: sample_data must be a callable "
                        f"(n, rng) -> array, got {type(sample_data).__name__}")
    n = positive_int("mmd2_noise_floor", "n", n, minimum=2)
    repeats = positive_int("mmd2_noise_floor", "repeats", repeats, minimum=2)
    gen = as_generator("mmd2_noise_floor", rng)
    vals = np.array([float(mmd2(sample_data(n, gen), sample_data(n, gen), bandwidth))
                     for _ in range(repeats)])
    return NoiseFloor(vals, float(vals.mean()), float(vals.std(ddof=1)),
                      float(np.quantile(vals, 0.95)))


@dataclass
class ModeCoverage:
    r"""Which mixture components a sample covers.

    Attributes
    ----------
    counts : ndarray of int, shape (K,)
        High-quality samples nearest to each centre.
    covered : ndarray of bool, shape (K,)
        ``counts >= min_count``.
    n_covered : int
        How many modes are covered (K when none is missed).
    high_quality_fraction : float
        Share of all samples within ``n_std``·σ of their nearest centre.
    min_count : float
        The coverage threshold, ``min_fraction · n / K``.
    kl_to_uniform : float
        KL(counts/Σcounts ‖ uniform) in nats: 0 when the high-quality samples are spread
        evenly over the modes, log K when they all sit on one.
    n_samples : int
    """

    counts: np.ndarray
    covered: np.ndarray
    n_covered: int
    high_quality_fraction: float
    min_count: float
    kl_to_uniform: float
    n_samples: int


def mode_coverage(samples, centers, std, n_std=3.0, min_fraction=0.25):
    r"""Count the modes of a Gaussian mixture that a sample covers, and its quality.

    Parameters
    ----------
    samples : array of shape (n, d)
    centers : array of shape (K, d)
        The means of the components.
    std : float
        σ, the components' standard deviation (isotropic).
    n_std : float
        A sample is of *high quality* if it lies within ``n_std``·σ (Euclidean) of its nearest
        centre.
    min_fraction : float in (0, 1]
        A mode is *covered* if it receives at least ``min_fraction`` of its fair share n/K of
        the samples, counting high-quality samples only.

    Returns
    -------
    ModeCoverage

    Notes
    -----
    For data drawn from the mixture itself (2-D), the chance of a point lying within 3σ of
    its own centre is P(χ²₂ ≤ 9) = 1 − e^{−9/2} = 0.989, so the data score a high-quality
    fraction of 0.989 and about n/K high-quality points per mode (provided the centres are
    more than 6σ apart, so that the 3σ discs do not overlap).  The definitions follow the
    mode-collapse benchmarks of Metz et al. (2017) and Srivastava et al. (2017).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import RingOfGaussians, mode_coverage
    >>> ring = RingOfGaussians()
    >>> x, _ = ring.sample(2000, np.random.default_rng(0))
    >>> cov = mode_coverage(x, ring.centers, ring.std)
    >>> cov.n_covered, round(cov.high_quality_fraction, 2)
    (8, 0.99)
    >>> mode_coverage(np.tile(ring.centers[:1], (100, 1)), ring.centers, ring.std).n_covered
    1
    """
    x = float_array("mode_coverage", "samples", samples, ndim=2, min_rows=1)
    c = float_array("mode_coverage", "centers", centers, ndim=2, last=x.shape[1], min_rows=1)
    std = positive_float("mode_coverage", "std", std)
    n_std = positive_float("mode_coverage", "n_std", n_std)
    min_fraction = positive_float("mode_coverage", "min_fraction", min_fraction)
    if min_fraction > 1.0:
        raise ValueError(f"calcml.generative.mode_coverage: min_fraction must be in (0, 1], "
                         f"got {min_fraction!r}")
    d2 = _sqdist(x, c)
    nearest = d2.argmin(axis=1)
    good = d2[np.arange(len(x)), nearest] <= (n_std * std) ** 2
    K = len(c)
    counts = np.bincount(nearest[good], minlength=K)
    min_count = min_fraction * len(x) / K
    covered = counts >= min_count
    total = counts.sum()
    if total:
        p = counts / total
        nz = p > 0
        kl = float(np.sum(p[nz] * np.log(p[nz] * K)))
    else:
        kl = float("inf")
    return ModeCoverage(counts, covered, int(covered.sum()), float(good.mean()), float(min_count),
                        kl, len(x))


def wasserstein1(x, y):
    r"""The exact Wasserstein-1 distance between two point clouds of the same size.

    Parameters
    ----------
    x, y : arrays of shape (n, d)

    Returns
    -------
    numpy floating scalar
        :math:`W_1 = \min_\pi \frac1n \sum_i \lVert x_i - y_{\pi(i)}\rVert_2` over
        permutations π (an optimal assignment, ``scipy.optimize.linear_sum_assignment``;
        O(n³), fine up to a few thousand points).

    Notes
    -----
    For equal-weight empirical measures of the same size, optimal transport is a
    permutation (Birkhoff–von Neumann), so the assignment gives the exact W₁ between the two
    samples.  By Kantorovich–Rubinstein duality W₁ = sup over 1-Lipschitz f of
    E_x f − E_y f: a WGAN critic that is 1-Lipschitz estimates it from below.  Between finite
    samples it is biased upward compared with the distance between the distributions.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import wasserstein1
    >>> float(wasserstein1(np.zeros((3, 2)), np.ones((3, 2))))  # every point moves by √2
    1.4142135623730951
    """
    from scipy.optimize import linear_sum_assignment

    x = float_array("wasserstein1", "x", x, ndim=2, min_rows=1)
    y = float_array("wasserstein1", "y", y, ndim=2, min_rows=1)
    if x.shape != y.shape:
        raise ValueError(f"calcml.generative.wasserstein1: x and y must have the same shape, got "
                         f"x {desc(x)} and y {desc(y)}")
    cost = np.sqrt(_sqdist(x, y))
    r, c = linear_sum_assignment(cost)
    return np.result_type(x.dtype, y.dtype).type(cost[r, c].mean())

r"""Variational autoencoders (chapter 9.8): the ELBO, the reparameterization trick, training.

An encoder maps an image x to the parameters (μ(x), log σ²(x)) of a diagonal Gaussian
q_φ(z | x); a decoder maps a latent z to the logits of p_θ(x | z).  Training maximises the
evidence lower bound (ELBO), per image

.. math:: \mathcal L(x) = \mathbb E_{q_\phi(z|x)}\big[\log p_\theta(x|z)\big]
          - D_{\rm KL}\big(q_\phi(z|x)\,\|\,p(z)\big) \;\le\; \log p_\theta(x),
          \qquad p(z) = \mathcal N(0, I),

with the expectation estimated by one sample z = μ + σ ⊙ ε, ε ~ N(0, I) (the
reparameterization trick: the randomness moves into ε, so z is a differentiable function of
φ and ``cm.value_and_grad`` gives an unbiased estimate of ∇_φ 𝓛), and the KL term in closed
form (:func:`gaussian_kl`).

The likelihood is named by ``likelihood=``:

* ``"bernoulli"`` (default): log p(x|z) = Σ_j x_j log σ(ℓ_j) + (1 − x_j) log(1 − σ(ℓ_j)),
  ℓ the decoder's logits, computed as Σ_j x_j ℓ_j − softplus(ℓ_j).  For the digits' grey
  levels x_j ∈ [0, 1] (not only {0, 1}) this is the usual choice (Kingma & Welling 2014 on
  MNIST intensities) but it is *not* a normalised density over [0, 1] (the continuous
  Bernoulli of Loaiza-Ganem & Cunningham 2019 is), so the ELBO is a bound on a Bernoulli
  "log-likelihood" of the intensities, not on a density of the images.
* ``"gaussian"``: log p(x|z) = Σ_j log N(x_j; σ(ℓ_j), s²) with a fixed s (``obs_std``): a
  proper density on the reals.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

import calcml as cm

from ._validate import (
    as_generator,
    choice,
    desc,
    float_array,
    float_dtype,
    positive_float,
    positive_int,
)

__all__ = [
    "VAE", "reparameterize", "gaussian_kl", "kl_monte_carlo", "bernoulli_log_likelihood",
    "gaussian_log_likelihood", "ElboTerms", "elbo", "ElboEstimate", "evaluate_elbo",
    "importance_weighted_bound", "GradientEstimate", "reparameterized_gradient",
    "score_function_gradient", "VAEResult", "train_vae",
]

nn = cm.nn
LIKELIHOODS = ("bernoulli", "gaussian")
_LOG_2PI = math.log(2.0 * math.pi)


# --- the model ------------------------------------------------------------------------------

class VAE(nn.Module):
    r"""A VAE with MLP encoder and decoder (one hidden ReLU layer each by default).

    Parameters
    ----------
    in_features : int
        Size of x (64 for the 8×8 digits).
    latent_dim : int
        Size of z.
    hidden : int
        Width of the hidden layers.
    depth : int
        Hidden layers in the encoder and in the decoder.
    rng : numpy.random.Generator or int
    dtype : float32 or float64

    Attributes
    ----------
    encoder : Sequential
        x → h.
    mu_head, log_var_head : Linear
        h → μ, h → log σ² (the log-variance: σ = exp(½ log σ²) is positive without a
        constraint).
    decoder : Sequential
        z → logits of p(x | z).

    Notes
    -----
    ``model(x, eps)`` returns ``(logits, mu, log_var)`` with z = μ + σ ⊙ ε (so it is a pure
    function of its parameters and of ε: see :func:`calcml.nn.functional_call`).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import VAE
    >>> m = VAE(64, 2, hidden=32, rng=0)
    >>> logits, mu, log_var = m(np.zeros((5, 64)), np.zeros((5, 2)))
    >>> logits.shape, mu.shape, log_var.shape
    ((5, 64), (5, 2), (5, 2))
    """

    def __init__(self, in_features=64, latent_dim=8, hidden=128, depth=1, *, rng,
                 dtype=np.float64):
        super().__init__()
        for name, v in (("in_features", in_features), ("latent_dim", latent_dim),
                        ("hidden", hidden), ("depth", depth)):
            positive_int("VAE", name, v)
        gen = as_generator("VAE", rng)
        dt = float_dtype("VAE", dtype)
        self.in_features, self.latent_dim, self.hidden = in_features, latent_dim, hidden
        enc = []
        width = in_features
        for _ in range(depth):
            enc += [nn.Linear(width, hidden, rng=gen, dtype=dt, init="he_uniform"), nn.ReLU()]
            width = hidden
        self.encoder = nn.Sequential(*enc)
        self.mu_head = nn.Linear(hidden, latent_dim, rng=gen, dtype=dt, init="xavier_uniform")
        self.log_var_head = nn.Linear(hidden, latent_dim, rng=gen, dtype=dt,
                                      init="xavier_uniform")
        dec = []
        width = latent_dim
        for _ in range(depth):
            dec += [nn.Linear(width, hidden, rng=gen, dtype=dt, init="he_uniform"), nn.ReLU()]
            width = hidden
        dec.append(nn.Linear(hidden, in_features, rng=gen, dtype=dt, init="xavier_uniform"))
        self.decoder = nn.Sequential(*dec)
        self.dtype = dt

    def encode(self, x):
        """``(mu, log_var)`` of q(z | x)."""
        h = self.encoder(x)
        return self.mu_head(h), self.log_var_head(h)

    def decode(self, z):
        """The logits ℓ of p(x | z) (probabilities / means σ(ℓ))."""
        return self.decoder(z)

    def forward(self, x, eps):
        mu, log_var = self.encode(x)
        z = reparameterize(mu, log_var, eps)
        return self.decode(z), mu, log_var

    def extra_repr(self):
        return (f"in_features={self.in_features}, latent_dim={self.latent_dim}, "
                f"hidden={self.hidden}")


def _arrays(model):
    return {n: p.data for n, p in model.named_parameters()}


class _MethodView(nn.Module):
    """A module whose forward is one method of ``model`` (sharing its parameters), so that
    :func:`calcml.nn.functional_call` can run ``encode`` or ``decode`` alone."""

    def __init__(self, model, method):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args):
        return getattr(self.model, self.method)(*args)


def _call(model, params, method, *args):
    """``model.<method>(*args)`` with the parameters ``params`` (arrays, or traced values)."""
    if params is None:
        params = _arrays(model)
    view = _MethodView(model, method)
    return nn.functional_call(view, {f"model.{k}": v for k, v in params.items()}, *args)


def _check_model(fname, model):
    if not isinstance(model, VAE):
        raise TypeError(f"calcml.generative.{fname}: model must be a calcml.generative.VAE, got "
                        f"{type(model).__name__}")


def _images(fname, model, x, likelihood="gaussian"):
    a = float_array(fname, "x", x, ndim=2, last=model.in_features, min_rows=1)
    if likelihood == "bernoulli" and (a.min() < 0.0 or a.max() > 1.0):
        raise ValueError(f"calcml.generative.{fname}: the Bernoulli likelihood needs x in [0, 1], "
                         f"got values in [{a.min():g}, {a.max():g}] ({desc(a)})")
    return a.astype(model.dtype, copy=False)


# --- the pieces of the ELBO -----------------------------------------------------------------

def _same(fname, a, b, na, nb):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"calcml.generative.{fname}: {na} and {nb} must have the same shape, "
                         f"got {na} {desc(a)} and {nb} {desc(b)}")


def _traced_or_array(fname, name, v):
    if hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, np.ndarray):
        return v  # a Tensor or a traced value
    return float_array(fname, name, v, finite=False)


def reparameterize(mu, log_var, eps):
    r"""The reparameterization trick: z = μ + σ ⊙ ε with σ = exp(½ log σ²).

    Parameters
    ----------
    mu, log_var : arrays (or Tensors, or traced values) of the same shape
    eps : array of that shape
        Standard normal noise ε ~ N(0, I), drawn by the caller.

    Returns
    -------
    z, of the shape of ``mu``.

    Notes
    -----
    z ~ N(μ, σ²) exactly, but as a deterministic, differentiable function of (μ, σ) given ε:
    ∂z/∂μ = 1, ∂z/∂σ = ε, so for any f,
    ∇_{μ,σ} E_{z~N(μ,σ²)} f(z) = E_ε[f′(μ + σε) (1, ε)], which one sample estimates without
    bias (chapter 9.8).  With the log-variance v = log σ², ∂z/∂v = ½ σ ε.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import reparameterize
    >>> reparameterize(np.array([1.0]), np.array([np.log(4.0)]), np.array([0.5]))
    array([2.])
    """
    mu = _traced_or_array("reparameterize", "mu", mu)
    log_var = _traced_or_array("reparameterize", "log_var", log_var)
    eps = _traced_or_array("reparameterize", "eps", eps)
    _same("reparameterize", mu, log_var, "mu", "log_var")
    _same("reparameterize", mu, eps, "mu", "eps")
    return mu + cm.exp(0.5 * log_var) * eps


def gaussian_kl(mu, log_var):
    r"""KL(N(μ, diag σ²) ‖ N(0, I)) in closed form, summed over the last axis.

    Parameters
    ----------
    mu, log_var : arrays (or Tensors, traced values) of shape (..., k)

    Returns
    -------
    array of shape (...): one KL per row (nats).

    Notes
    -----
    .. math:: D_{\rm KL} = \tfrac12 \sum_{j=1}^k \big(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2\big)

    (Kingma & Welling 2014, appendix B), from E_q[log q − log p] with
    E_q[(z − μ)²/σ²] = 1 and E_q[z²] = μ² + σ².  It is ≥ 0, 0 only at μ = 0, σ = 1;
    ∂/∂μ_j = μ_j and ∂/∂(log σ_j²) = ½(σ_j² − 1).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import gaussian_kl
    >>> gaussian_kl(np.array([[0.0, 0.0], [1.0, 0.0]]), np.zeros((2, 2)))
    array([0. , 0.5])
    """
    mu = _traced_or_array("gaussian_kl", "mu", mu)
    log_var = _traced_or_array("gaussian_kl", "log_var", log_var)
    _same("gaussian_kl", mu, log_var, "mu", "log_var")
    if len(mu.shape) == 0:
        raise ValueError(f"calcml.generative.gaussian_kl: mu must have at least one axis, got "
                         f"{desc(mu)}")
    return 0.5 * cm.sum(mu * mu + cm.exp(log_var) - 1.0 - log_var, axis=-1)


def kl_monte_carlo(mu, log_var, n_samples, rng):
    r"""Monte Carlo estimate of KL(N(μ, diag σ²) ‖ N(0, I)), with its standard error.

    Parameters
    ----------
    mu, log_var : arrays of shape (..., k)
    n_samples : int
    rng : numpy.random.Generator or int

    Returns
    -------
    estimate, stderr : arrays of shape (...)

    Notes
    -----
    KL = E_q[log q(z) − log p(z)], estimated by the mean over z_s = μ + σ ε_s of

    .. math:: \log q(z) - \log p(z) = \sum_j \Big(-\tfrac12\varepsilon_j^2
              - \tfrac12\log\sigma_j^2 + \tfrac12 z_j^2\Big),

    and the standard error is the sample standard deviation / √n.  An independent check of
    :func:`gaussian_kl`.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import kl_monte_carlo
    >>> est, se = kl_monte_carlo(np.array([1.0]), np.array([0.0]), 100_000, rng=0)
    >>> bool(abs(est - 0.5) < 4 * se)
    True
    """
    m = float_array("kl_monte_carlo", "mu", mu)
    lv = float_array("kl_monte_carlo", "log_var", log_var)
    _same("kl_monte_carlo", m, lv, "mu", "log_var")
    if m.ndim == 0:
        raise ValueError(f"calcml.generative.kl_monte_carlo: mu must have at least one axis "
                         f"(the latent dimensions), got {desc(m)}")
    n = positive_int("kl_monte_carlo", "n_samples", n_samples, minimum=2)
    gen = as_generator("kl_monte_carlo", rng)
    dt = np.result_type(m, lv)
    eps = gen.standard_normal((n,) + m.shape).astype(dt, copy=False)
    z = m + np.exp(0.5 * lv) * eps
    terms = np.sum(-0.5 * eps * eps - 0.5 * lv + 0.5 * z * z, axis=-1)
    return terms.mean(axis=0), terms.std(axis=0, ddof=1) / math.sqrt(n)  # a float keeps float32


def bernoulli_log_likelihood(x, logits):
    r"""Σ_j x_j log σ(ℓ_j) + (1 − x_j) log(1 − σ(ℓ_j)) per row, from logits, stably.

    Parameters
    ----------
    x : array of shape (n, d), values in [0, 1]
    logits : array, Tensor or traced value of shape (n, d)

    Returns
    -------
    shape (n,)

    Notes
    -----
    Since log σ(ℓ) = ℓ − softplus(ℓ) and log(1 − σ(ℓ)) = −softplus(ℓ), the sum is
    Σ_j x_j ℓ_j − softplus(ℓ_j), finite for any logits; ∂/∂ℓ_j = x_j − σ(ℓ_j).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import bernoulli_log_likelihood
    >>> round(float(bernoulli_log_likelihood(np.array([[1.0, 0.0]]), np.zeros((1, 2)))[0]), 6)
    -1.386294
    """
    xa = float_array("bernoulli_log_likelihood", "x", x, ndim=2)
    logits = _traced_or_array("bernoulli_log_likelihood", "logits", logits)
    _same("bernoulli_log_likelihood", xa, logits, "x", "logits")
    xa = xa.astype(logits.dtype, copy=False)
    return cm.sum(xa * logits - cm.softplus(logits), axis=-1)


def gaussian_log_likelihood(x, mean, std):
    r"""Σ_j log N(x_j; m_j, s²) per row, with a fixed standard deviation s.

    Notes
    -----
    −½ Σ_j ((x_j − m_j)/s)² − d log s − (d/2) log 2π.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import gaussian_log_likelihood
    >>> round(float(gaussian_log_likelihood(np.zeros((1, 1)), np.zeros((1, 1)), 1.0)[0]), 6)
    -0.918939
    """
    xa = float_array("gaussian_log_likelihood", "x", x, ndim=2)
    mean = _traced_or_array("gaussian_log_likelihood", "mean", mean)
    _same("gaussian_log_likelihood", xa, mean, "x", "mean")
    s = positive_float("gaussian_log_likelihood", "std", std)
    xa = xa.astype(mean.dtype, copy=False)
    d = xa.shape[-1]
    r = (xa - mean) * (1.0 / s)
    return -0.5 * cm.sum(r * r, axis=-1) - d * (math.log(s) + 0.5 * _LOG_2PI)


@dataclass
class ElboTerms:
    """The per-image pieces of one ELBO sample.

    Attributes
    ----------
    elbo : shape (n,)
        ``log_likelihood - kl``.
    log_likelihood : shape (n,)
        log p(x | z) at the sampled z (the reconstruction term).
    kl : shape (n,)
        KL(q(z|x) ‖ p(z)), closed form.
    mu, log_var : shape (n, k)
        q's parameters.
    logits : shape (n, d)
        The decoder's output at z.
    """

    elbo: object
    log_likelihood: object
    kl: object
    mu: object
    log_var: object
    logits: object


def _log_lik(x, logits, likelihood, obs_std):
    if likelihood == "bernoulli":
        return bernoulli_log_likelihood(x, logits)
    return gaussian_log_likelihood(x, cm.sigmoid(logits), obs_std)


def elbo(model, x, eps, likelihood="bernoulli", obs_std=0.1, params=None):
    r"""One-sample ELBO of each image: log p(x | z) − KL(q(z|x) ‖ p(z)), z = μ + σ ⊙ ε.

    Parameters
    ----------
    model : VAE
    x : array of shape (n, in_features)
    eps : array of shape (n, latent_dim)
        Standard normal noise for the reparameterization.
    likelihood : {"bernoulli", "gaussian"}
        See the module docstring.
    obs_std : float
        s of the Gaussian likelihood.
    params : dict, optional
        The model's parameters by name (arrays or values traced by ``cm.grad``); by default
        the model's own (Tensors: the result then records for ``backward()``).

    Returns
    -------
    ElboTerms

    Notes
    -----
    E_ε[ELBO sample] = 𝓛(x) = E_q[log p(x|z)] − KL ≤ log p(x): the gap is
    KL(q(z|x) ‖ p(z|x)).  The KL term is exact (:func:`gaussian_kl`); only the
    reconstruction term is sampled.  Its gradient with respect to the parameters (through
    z = μ + σ ⊙ ε) is the reparameterization-trick estimator of ∇𝓛.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import VAE, elbo
    >>> m = VAE(4, 2, hidden=8, rng=0)
    >>> t = elbo(m, np.full((3, 4), 0.5), np.zeros((3, 2)), params={
    ...     n: p.data for n, p in m.named_parameters()})
    >>> t.elbo.shape, bool(np.all(t.kl >= 0))
    ((3,), True)
    """
    _check_model("elbo", model)
    choice("elbo", "likelihood", likelihood, LIKELIHOODS)
    xa = _images("elbo", model, x, likelihood)
    e = float_array("elbo", "eps", eps, ndim=2, last=model.latent_dim)
    if e.shape[0] != xa.shape[0]:
        raise ValueError(f"calcml.generative.elbo: eps must have one row per image "
                         f"({xa.shape[0]}), got {desc(e)}")
    e = e.astype(model.dtype, copy=False)
    if params is None:
        logits, mu, lv = model(xa, e)
    else:
        logits, mu, lv = nn.functional_call(model, params, xa, e)
    ll = _log_lik(xa, logits, likelihood, obs_std)
    kl = gaussian_kl(mu, lv)
    return ElboTerms(ll - kl, ll, kl, mu, lv, logits)


@dataclass
class ElboEstimate:
    """The ELBO of a data set: mean per image (nats) and its standard error over images.

    Attributes
    ----------
    elbo, stderr : float
    log_likelihood, kl : float
        Means of the two terms (``elbo = log_likelihood - kl``).
    per_image : ndarray of shape (n,)
        Each image's ELBO, averaged over the noise samples.
    """

    elbo: float
    stderr: float
    log_likelihood: float
    kl: float
    per_image: np.ndarray


def evaluate_elbo(model, x, rng, n_samples=1, likelihood="bernoulli", obs_std=0.1):
    r"""The average ELBO per image of a data set (no gradients), with its standard error.

    Parameters
    ----------
    model : VAE
    x : array of shape (n, in_features)
    rng : numpy.random.Generator or int
        Source of ε.
    n_samples : int
        Noise samples per image (the reconstruction term is averaged over them).
    likelihood, obs_std : see :func:`elbo`

    Returns
    -------
    ElboEstimate

    Notes
    -----
    The standard error is std(per-image ELBO)/√n over the images: the spread of the test
    set, which dominates the noise of the Monte Carlo term.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import VAE, evaluate_elbo
    >>> est = evaluate_elbo(VAE(4, 2, hidden=8, rng=0), np.full((10, 4), 0.5), rng=0)
    >>> bool(est.elbo <= 0), est.per_image.shape
    (True, (10,))
    """
    _check_model("evaluate_elbo", model)
    xa = _images("evaluate_elbo", model, x, likelihood)
    n_samples = positive_int("evaluate_elbo", "n_samples", n_samples)
    gen = as_generator("evaluate_elbo", rng)
    p = _arrays(model)
    per, ll_sum, kl = 0.0, 0.0, None
    for _ in range(n_samples):
        e = gen.standard_normal((len(xa), model.latent_dim)).astype(model.dtype)
        t = elbo(model, xa, e, likelihood, obs_std, params=p)
        per = per + np.asarray(t.elbo)
        ll_sum = ll_sum + np.asarray(t.log_likelihood)
        kl = np.asarray(t.kl)
    per = per / n_samples
    se = float(per.std(ddof=1) / math.sqrt(len(per))) if len(per) > 1 else float("nan")
    return ElboEstimate(float(per.mean()), se, float(np.mean(ll_sum / n_samples)),
                        float(kl.mean()), per)


def importance_weighted_bound(model, x, rng, k=100, likelihood="bernoulli", obs_std=0.1):
    r"""The importance-weighted bound log (1/K) Σ_k p(x, z_k)/q(z_k|x), per image (mean).

    Parameters
    ----------
    model : VAE
    x : array of shape (n, in_features)
    rng : numpy.random.Generator or int
    k : int
        K, samples per image (K = 1 gives the ELBO; K → ∞ gives log p(x)).

    Returns
    -------
    float
        The mean over images, nats.

    Notes
    -----
    Burda et al. (2016): E log (1/K) Σ w_k ≥ E log w_1 = ELBO, increasing in K and tending to
    log p(x), with w = p(x|z) p(z) / q(z|x) and z_k ~ q(z|x) independent.  Computed with
    ``logsumexp``; shows how much of the gap log p(x) − ELBO the KL to the true posterior
    takes.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import VAE, importance_weighted_bound
    >>> m, x = VAE(4, 2, hidden=8, rng=0), np.full((6, 4), 0.5)
    >>> bool(importance_weighted_bound(m, x, rng=0, k=50) >= -10)
    True
    """
    _check_model("importance_weighted_bound", model)
    choice("importance_weighted_bound", "likelihood", likelihood, LIKELIHOODS)
    xa = _images("importance_weighted_bound", model, x, likelihood)
    k = positive_int("importance_weighted_bound", "k", k)
    gen = as_generator("importance_weighted_bound", rng)
    p = _arrays(model)
    mu, lv = _call(model, p, "encode", xa)
    mu, lv = np.asarray(mu), np.asarray(lv)
    logw = np.empty((k, len(xa)))
    for i in range(k):
        e = gen.standard_normal(mu.shape).astype(model.dtype)
        z = mu + np.exp(0.5 * lv) * e
        logits = np.asarray(_call(model, p, "decode", z))
        ll = np.asarray(_log_lik(xa, logits, likelihood, obs_std))
        log_pz = -0.5 * np.sum(z * z, axis=1) - 0.5 * z.shape[1] * _LOG_2PI
        log_qz = np.sum(-0.5 * e * e - 0.5 * lv, axis=1) - 0.5 * z.shape[1] * _LOG_2PI
        logw[i] = ll + log_pz - log_qz
    m = logw.max(axis=0)
    return float(np.mean(m + np.log(np.mean(np.exp(logw - m), axis=0))))


# --- gradients of expectations --------------------------------------------------------------

@dataclass
class GradientEstimate:
    """A Monte Carlo estimate of ∇_{(μ, σ)} E_{z~N(μ,σ²)} f(z).

    Attributes
    ----------
    mean : ndarray of shape (2,)
        (∂/∂μ, ∂/∂σ), averaged over the samples.
    stderr : ndarray of shape (2,)
        Their standard errors (sample std / √n).
    samples : ndarray of shape (n, 2)
        The per-sample gradient estimates.
    """

    mean: np.ndarray
    stderr: np.ndarray
    samples: np.ndarray

    def z_scores(self, exact):
        """(mean − exact) / stderr, entry by entry."""
        return (self.mean - np.asarray(exact, dtype=np.float64)) / self.stderr


def _scalar(fname, name, v, positive=False):
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"calcml.generative.{fname}: {name} must be a real number, got "
                        f"{v!r}") from None
    if not math.isfinite(f) or (positive and f <= 0):
        raise ValueError(f"calcml.generative.{fname}: {name} must be a finite"
                         f"{' positive' if positive else ''} number, got {v!r}")
    return f


def _estimate(samples):
    n = len(samples)
    return GradientEstimate(samples.mean(axis=0), samples.std(axis=0, ddof=1) / math.sqrt(n),
                            samples)


def reparameterized_gradient(f, mu, sigma, n_samples, rng):
    r"""The reparameterization estimator of ∇_{μ,σ} E_{z~N(μ,σ²)} f(z), one dimension.

    Parameters
    ----------
    f : callable
        Element-wise f(z) written with calcml's operations (``cm.sin``, ``**``, ...).
    mu, sigma : float
        The Gaussian's mean and standard deviation (σ > 0).
    n_samples : int
    rng : numpy.random.Generator or int

    Returns
    -------
    GradientEstimate

    Notes
    -----
    With z = μ + σε, ε ~ N(0, 1): ∇_{μ,σ} E f(z) = E_ε[f′(μ + σε)·(1, ε)].  Each sample's
    (f′(z), f′(z)ε) is computed by ``cm.grad`` of Σ_s f(μ_s + σ_s ε_s) with respect to the
    vectors (μ_s) and (σ_s) (all equal to μ, σ): one backward pass gives every per-sample
    gradient.

    Examples
    --------
    >>> import calcml as cm
    >>> from calcml.generative import reparameterized_gradient
    >>> g = reparameterized_gradient(lambda z: z ** 2, 1.0, 0.5, 20_000, rng=0)
    >>> bool(max(abs(g.z_scores([2.0, 1.0]))) < 4)   # ∇(μ² + σ²) = (2μ, 2σ)
    True
    """
    if not callable(f):
        raise TypeError(f"calcml.generative.reparameterized_gradient: f must be callable, got "
                        f"{type(f).__name__}")
    mu = _scalar("reparameterized_gradient", "mu", mu)
    sigma = _scalar("reparameterized_gradient", "sigma", sigma, positive=True)
    n = positive_int("reparameterized_gradient", "n_samples", n_samples, minimum=2)
    gen = as_generator("reparameterized_gradient", rng)
    eps = gen.standard_normal(n)
    gm, gs = cm.grad(lambda m, s: cm.sum(f(m + s * eps)), argnums=(0, 1))(
        np.full(n, mu), np.full(n, sigma))
    return _estimate(np.stack([np.asarray(gm), np.asarray(gs)], axis=1))


def score_function_gradient(f, mu, sigma, n_samples, rng):
    r"""The score-function (REINFORCE) estimator of ∇_{μ,σ} E_{z~N(μ,σ²)} f(z).

    Parameters and return as in :func:`reparameterized_gradient` (f needs no derivative).

    Notes
    -----
    ∇ E f(z) = E[f(z) ∇ log N(z; μ, σ²)], with ∂/∂μ log N = (z − μ)/σ² and
    ∂/∂σ log N = ((z − μ)² − σ²)/σ³.  Unbiased too, but typically of much higher variance
    than the reparameterized estimator, which uses f′ (the point of the trick).

    Examples
    --------
    >>> from calcml.generative import score_function_gradient
    >>> g = score_function_gradient(lambda z: z ** 2, 1.0, 0.5, 50_000, rng=0)
    >>> bool(max(abs(g.z_scores([2.0, 1.0]))) < 4)
    True
    """
    if not callable(f):
        raise TypeError(f"calcml.generative.score_function_gradient: f must be callable, got "
                        f"{type(f).__name__}")
    mu = _scalar("score_function_gradient", "mu", mu)
    sigma = _scalar("score_function_gradient", "sigma", sigma, positive=True)
    n = positive_int("score_function_gradient", "n_samples", n_samples, minimum=2)
    gen = as_generator("score_function_gradient", rng)
    eps = gen.standard_normal(n)
    z = mu + sigma * eps
    fz = np.asarray(f(z), dtype=np.float64)
    if fz.shape != (n,):
        raise ValueError(f"calcml.generative.score_function_gradient: f must act element-wise, "
                         f"mapping the samples of shape ({n},) to the same shape, got shape "
                         f"{fz.shape}")
    samples = np.stack([fz * eps / sigma, fz * (eps * eps - 1.0) / sigma], axis=1)
    return _estimate(samples)


# --- training -------------------------------------------------------------------------------

@dataclass
class VAEResult:
    """What :func:`train_vae` returns.

    Attributes
    ----------
    model : VAE
    history : dict of list
        ``"epoch"``; ``"train_objective"``: the mean one-sample ELBO of the epoch's batches
        (what the optimiser climbed, with the parameters changing during the epoch); and,
        every ``eval_every`` epochs, ``"eval_epoch"``, ``"train_elbo"`` and ``"test_elbo"``
        (per image, with fixed evaluation noise, the parameters frozen).
    wall_time_s : float
    config : dict
    """

    model: VAE
    history: dict
    wall_time_s: float
    config: dict = field(default_factory=dict)

    def reconstruct(self, x):
        """σ(decoder(μ(x))): the mean of p(x|z) at the posterior mean (no sampling)."""
        xa = _images("VAEResult.reconstruct", self.model, x)
        p = _arrays(self.model)
        mu, _ = _call(self.model, p, "encode", xa)
        return _sigmoid(np.asarray(_call(self.model, p, "decode", np.asarray(mu))))

    def sample(self, n, rng):
        """``n`` images σ(decoder(z)), z ~ N(0, I) (the means of p(x|z))."""
        n = positive_int("VAEResult.sample", "n", n)
        gen = as_generator("VAEResult.sample", rng)
        z = gen.standard_normal((n, self.model.latent_dim)).astype(self.model.dtype)
        return _sigmoid(np.asarray(_call(self.model, _arrays(self.model), "decode", z)))

    def encode(self, x):
        """μ(x): the posterior means (n, latent_dim)."""
        return self.posterior(x)[0]

    def posterior(self, x):
        """``(mu, log_var)`` of q(z | x), as arrays (n, latent_dim)."""
        xa = _images("VAEResult.posterior", self.model, x)
        mu, lv = _call(self.model, _arrays(self.model), "encode", xa)
        return np.asarray(mu), np.asarray(lv)

    def decode(self, z):
        """σ(decoder(z)): the means of p(x | z) for latent points z (n, latent_dim)."""
        za = float_array("VAEResult.decode", "z", z, ndim=2, last=self.model.latent_dim)
        za = za.astype(self.model.dtype, copy=False)
        return _sigmoid(np.asarray(_call(self.model, _arrays(self.model), "decode", za)))


def _sigmoid(a):
    return np.asarray(cm.sigmoid(a))


def train_vae(X_train, X_test=None, *, latent_dim=8, hidden=128, depth=1, epochs=100,
              batch_size=64, learning_rate=1e-3, likelihood="bernoulli", obs_std=0.1,
              eval_every=5, rng=0, dtype=np.float64, model=None, progress=False):
    r"""Train a :class:`VAE` by maximising the ELBO with Adam on mini-batches.

    Parameters
    ----------
    X_train : array of shape (n, d)
    X_test : array of shape (m, d), optional
        Evaluated every ``eval_every`` epochs (never trained on).
    latent_dim, hidden, depth : int
        The model's sizes (ignored when ``model`` is given).
    epochs, batch_size : int
    learning_rate : float or schedule
    likelihood : {"bernoulli", "gaussian"}
    obs_std : float
        s of the Gaussian likelihood.
    eval_every : int
    rng : numpy.random.Generator or int
        Source of the initial weights, the batch order and ε.
    dtype : float32 or float64
    model : VAE, optional
        A model to continue training.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    VAEResult

    Notes
    -----
    Each step minimises −(1/B) Σ_{x in batch} [log p(x|z) − KL(q(z|x)‖p(z))],
    z = μ(x) + σ(x) ⊙ ε with a fresh ε: the gradient is the reparameterized, unbiased estimate
    of −∇ (mean ELBO).  Evaluations use a separate generator seeded once, so the train and
    test curves are computed with the same noise at every evaluation (common random numbers)
    and move only because the parameters do.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import train_vae
    >>> X = np.random.default_rng(0).random((40, 6))
    >>> res = train_vae(X, X, latent_dim=2, hidden=8, epochs=2, batch_size=20, eval_every=1)
    >>> len(res.history["test_elbo"])
    3
    """
    fname = "train_vae"
    choice(fname, "likelihood", likelihood, LIKELIHOODS)
    dt = float_dtype(fname, dtype)
    Xtr = float_array(fname, "X_train", X_train, ndim=2, min_rows=2)
    epochs = positive_int(fname, "epochs", epochs)
    batch_size = positive_int(fname, "batch_size", batch_size)
    eval_every = positive_int(fname, "eval_every", eval_every)
    if not callable(learning_rate):
        positive_float(fname, "learning_rate", learning_rate)
    obs_std = positive_float(fname, "obs_std", obs_std)
    gen = as_generator(fname, rng)
    if model is None:
        model = VAE(Xtr.shape[1], latent_dim, hidden, depth, rng=gen, dtype=dt)
    _check_model(fname, model)
    Xtr = _images(fname, model, Xtr, likelihood)
    Xte = None if X_test is None else _images(fname, model, X_test, likelihood)
    eval_seed = int(gen.integers(2**31))
    k = model.latent_dim
    params = _arrays(model)
    opt = cm.optim.adam(learning_rate)
    state = opt.init(params)

    def loss(p, xb, eps):
        t = elbo(model, xb, eps, likelihood, obs_std, params=p)
        return -cm.mean(t.elbo)

    step = cm.value_and_grad(loss)
    history = {"epoch": [], "train_objective": [], "eval_epoch": [], "train_elbo": [],
               "test_elbo": []}

    def evaluate(epoch):
        _store(model, params)
        history["eval_epoch"].append(epoch)
        history["train_elbo"].append(evaluate_elbo(model, Xtr, eval_seed, 1, likelihood,
                                                   obs_std).elbo)
        if Xte is not None:
            history["test_elbo"].append(evaluate_elbo(model, Xte, eval_seed + 1, 1, likelihood,
                                                      obs_std).elbo)

    evaluate(0)
    n = len(Xtr)
    n_batches = max(1, math.ceil(n / batch_size))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, desc="VAE", leave=False)
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        perm = gen.permutation(n)
        total = 0.0
        for b in range(n_batches):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            xb = Xtr[idx]
            eps = gen.standard_normal((len(idx), k)).astype(dt, copy=False)
            val, g = step(params, xb, eps)
            if not math.isfinite(float(val)):
                raise FloatingPointError(f"calcml.generative.train_vae: the loss became "
                                         f"non-finite in epoch {epoch}, batch {b}")
            u, state = opt.update(g, state, params)
            params = cm.optim.apply_updates(params, u)
            total += -float(val) * len(idx)
        history["epoch"].append(epoch)
        history["train_objective"].append(total / n)
        if epoch % eval_every == 0 or epoch == epochs:
            evaluate(epoch)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(elbo=f"{total / n:.2f}", refresh=False)
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    _store(model, params)
    config = dict(latent_dim=k, hidden=model.hidden, epochs=epochs, batch_size=batch_size,
                  learning_rate=learning_rate, likelihood=likelihood, obs_std=obs_std, dtype=dt)
    return VAEResult(model, history, wall, config)


def _store(model, params):
    for n, p in model.named_parameters():
        p.data = params[n]

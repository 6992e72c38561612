r"""Generative adversarial networks (chapter 9.8): the GAN and the Wasserstein GAN.

A generator G maps noise z ~ N(0, I) to samples; a discriminator (a *critic* in the WGAN)
D scores samples.  Both are :class:`calcml.nn.Module` multilayer perceptrons, trained
alternately through :mod:`calcml.optim`.  Training is written in the functional style:
:func:`calcml.nn.functional_call` makes each network a pure function of its parameter dict,
and ``cm.value_and_grad`` differentiates each player's loss with respect to its own
parameters only (the other player's parameters enter as constants).  That is also what makes
the gradient penalty possible: it contains ∇ₓD, and the critic's update needs the gradient of
that gradient's norm, i.e. ``cm.grad`` inside a function that ``cm.value_and_grad``
differentiates again.

Losses, all computed from logits or scores (never from probabilities, so that they stay
finite and accurate when D is sure of itself):

=================================  ================================================================
:func:`discriminator_loss`         −E log D(x) − E log(1 − D(G(z))),  D = σ(logit)
:func:`generator_loss` ``"minimax"``  E log(1 − D(G(z)))   (the game's own objective, minimised)
:func:`generator_loss` ``"non_saturating"``  −E log D(G(z))   (the chapter's L_G; the default)
:func:`critic_loss`                E D(G(z)) − E D(x)   (the negated Wasserstein estimate)
:func:`wasserstein_generator_loss`  −E D(G(z))
:func:`gradient_penalty`           E (‖∇ₓ D(x̂)‖₂ − 1)²,  x̂ = αx + (1 − α)G(z),  α ~ U(0, 1)
=================================  ================================================================
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
    nonneg_float,
    positive_float,
    positive_int,
    unit_interval,
)

__all__ = [
    "mlp", "make_generator", "make_discriminator",
    "discriminator_loss", "generator_loss", "critic_loss", "wasserstein_generator_loss",
    "gradient_penalty", "input_gradient_norms", "clip_weights",
    "GANResult", "train_gan", "train_wgan",
]

nn = cm.nn
GENERATOR_LOSSES = ("non_saturating", "minimax")
WGAN_MODES = ("gp", "clip")


# --- the networks ---------------------------------------------------------------------------

def mlp(in_features, out_features, hidden=128, depth=3, *, rng, dtype=np.float64):
    """A ReLU multilayer perceptron: ``depth`` Linear layers, ReLU between them.

    Parameters
    ----------
    in_features, out_features, hidden : int
    depth : int >= 1
        Number of Linear layers (``depth - 1`` hidden layers of width ``hidden``).
    rng : numpy.random.Generator or int
        Source of the initial weights (He-uniform weights, zero biases).
    dtype : float32 or float64

    Returns
    -------
    calcml.nn.Sequential

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import mlp
    >>> net = mlp(2, 1, hidden=16, depth=3, rng=0)
    >>> net(np.zeros((4, 2))).shape
    (4, 1)
    """
    for name, v in (("in_features", in_features), ("out_features", out_features),
                    ("hidden", hidden), ("depth", depth)):
        positive_int("mlp", name, v)
    gen = as_generator("mlp", rng)
    dt = float_dtype("mlp", dtype)
    sizes = [in_features] + [hidden] * (depth - 1) + [out_features]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, rng=gen, dtype=dt, init="he_uniform"))
        if i < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def make_generator(latent_dim=2, out_features=2, hidden=128, depth=3, *, rng,
                   dtype=np.float64):
    """The generator G: z (latent_dim) → x (out_features), an :func:`mlp`."""
    return mlp(latent_dim, out_features, hidden, depth, rng=rng, dtype=dtype)


def make_discriminator(in_features=2, hidden=128, depth=3, *, rng, dtype=np.float64):
    """The discriminator (or critic) D: x → one logit (or score) per row, an :func:`mlp`."""
    return mlp(in_features, 1, hidden, depth, rng=rng, dtype=dtype)


# --- the losses -----------------------------------------------------------------------------

def _scores(fname, name, s):
    if not hasattr(s, "shape") or not hasattr(s, "dtype"):
        s = float_array(fname, name, s, finite=False)
    if np.dtype(s.dtype).kind != "f":
        raise TypeError(f"calcml.generative.{fname}: {name} must be floating point, got "
                        f"{desc(s)}")
    if len(s.shape) == 0 or s.shape[0] == 0:
        raise ValueError(f"calcml.generative.{fname}: {name} must be a non-empty batch of "
                         f"scores, got {desc(s)}")
    return s


def _ones(s):
    return np.ones(tuple(s.shape), dtype=s.dtype)


def discriminator_loss(real_logits, fake_logits):
    r"""The discriminator's loss of the chapter, from logits: −E log D(x) − E log(1 − D(G(z))).

    Parameters
    ----------
    real_logits : array or Tensor, shape (n, 1) or (n,)
        D's logits on data, D(x) = σ(logit).
    fake_logits : array or Tensor, shape (m, 1) or (m,)
        D's logits on generated samples.

    Returns
    -------
    scalar (array or Tensor; works inside ``cm.grad``)

    Notes
    -----
    With ℓ the logit and σ the sigmoid, −log σ(ℓ) = softplus(−ℓ) and
    −log(1 − σ(ℓ)) = softplus(ℓ), so

    .. math:: L_D = \frac1n\sum_i \operatorname{softplus}(-\ell^{\rm real}_i)
              + \frac1m\sum_j \operatorname{softplus}(\ell^{\rm fake}_j),

    the sum of two binary cross-entropies (labels 1 for data, 0 for fakes), computed by
    ``cm.losses.binary_cross_entropy_with_logits``: finite for logits of any size.
    Minimising L_D is the discriminator's *maximisation* of
    E log D(x) + E log(1 − D(G(z))); its optimum for a fixed G is
    D*(x) = p_data(x) / (p_data(x) + p_G(x)), where L_D = log 4 − 2 JS(p_data ‖ p_G).
    ∂L_D/∂ℓ^fake_j = σ(ℓ^fake_j)/m.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import discriminator_loss
    >>> round(float(discriminator_loss(np.zeros((4, 1)), np.zeros((4, 1)))), 6)  # 2 log 2
    1.386294
    """
    r = _scores("discriminator_loss", "real_logits", real_logits)
    f = _scores("discriminator_loss", "fake_logits", fake_logits)
    bce = cm.losses.binary_cross_entropy_with_logits
    return bce(_ones(r), r) + bce(0.0 * _ones(f), f)


def generator_loss(fake_logits, kind="non_saturating"):
    r"""The generator's loss, from D's logits on generated samples.

    Parameters
    ----------
    fake_logits : array or Tensor, shape (m, 1) or (m,)
    kind : {"non_saturating", "minimax"}
        ``"non_saturating"`` (default): L_G = −E log D(G(z)), the chapter's generator loss.
        ``"minimax"``: L_G = E log(1 − D(G(z))), the generator's side of the minimax game
        min_G max_D E log D(x) + E log(1 − D(G(z))).

    Returns
    -------
    scalar

    Notes
    -----
    With ℓ the logit of a fake, per sample:

    * minimax: log(1 − σ(ℓ)) = −softplus(ℓ), ∂/∂ℓ = −σ(ℓ);
    * non-saturating: −log σ(ℓ) = softplus(−ℓ), ∂/∂ℓ = −(1 − σ(ℓ)).

    Both push ℓ up (towards "real") and have the same fixed points, but early in training D
    rejects the fakes easily (ℓ ≪ 0, D(G(z)) ≈ 0): the minimax gradient −σ(ℓ) ≈ −e^ℓ then
    vanishes (it *saturates*), while the non-saturating one is ≈ −1.  Goodfellow et al.
    (2014) proposed the non-saturating loss for this reason; the chapter's L_G is this one,
    although it is not the minimax objective.  It is the default here.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> from calcml.generative import generator_loss
    >>> l = np.array([[-10.0]])      # D rejects the fake: D(G(z)) = 4.5e-5
    >>> print(f'{cm.grad(lambda v: generator_loss(v, "minimax"))(l)[0, 0]:.4e}')  # -σ(-10)
    -4.5398e-05
    >>> round(float(cm.grad(generator_loss)(l)[0, 0]), 6)                 # ≈ -1
    -0.999955
    """
    f = _scores("generator_loss", "fake_logits", fake_logits)
    choice("generator_loss", "kind", kind, GENERATOR_LOSSES)
    bce = cm.losses.binary_cross_entropy_with_logits
    if kind == "non_saturating":
        return bce(_ones(f), f)
    return -bce(0.0 * _ones(f), f)


def critic_loss(real_scores, fake_scores):
    r"""The WGAN critic's loss: E D(G(z)) − E D(x) (minimised).

    Parameters
    ----------
    real_scores, fake_scores : array or Tensor, shape (n, 1) or (n,)
        The critic's (unbounded, no sigmoid) scores on data and on generated samples.

    Returns
    -------
    scalar

    Notes
    -----
    Kantorovich–Rubinstein duality: :math:`W_1(p, q) = \sup_{\lVert f\rVert_L \le 1}
    \mathbb E_p f - \mathbb E_q f`.  The critic *maximises* E D(x) − E D(G(z)) over
    (approximately) 1-Lipschitz D, i.e. minimises this loss, and −loss estimates W₁ from
    below.  The chapter writes L_D = E D(x) − E D(G(z)); as a loss to minimise that is the
    wrong sign (a critic minimising it scores fakes *above* data, and the generator, which
    minimises −E D(G(z)), is then pushed away from the data).  Without a constraint on the
    Lipschitz constant the supremum is +∞: see :func:`gradient_penalty` and
    :func:`clip_weights`.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import critic_loss
    >>> float(critic_loss(np.array([[2.0], [4.0]]), np.array([[1.0], [1.0]])))
    -2.0
    """
    r = _scores("critic_loss", "real_scores", real_scores)
    f = _scores("critic_loss", "fake_scores", fake_scores)
    return cm.mean(f) - cm.mean(r)


def wasserstein_generator_loss(fake_scores):
    r"""The WGAN generator's loss: −E D(G(z)) (the chapter's L_G of the WGAN).

    Notes
    -----
    Only the term of the Wasserstein estimate E D(x) − E D(G(z)) that depends on G; its
    gradient is −E[J_G(z)ᵀ ∇ₓD(G(z))], which does not vanish where D is confident, as long
    as ∇ₓD does not (hence the Lipschitz constraint, which keeps ‖∇ₓD‖ near 1).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import wasserstein_generator_loss
    >>> float(wasserstein_generator_loss(np.array([[1.0], [3.0]])))
    -2.0
    """
    f = _scores("wasserstein_generator_loss", "fake_scores", fake_scores)
    return -cm.mean(f)


def _critic_fn(critic, params):
    if isinstance(critic, nn.Module):
        if params is None:
            return critic
        return lambda x: nn.functional_call(critic, params, x)
    if not callable(critic):
        raise TypeError(f"calcml.generative: critic must be a calcml.nn.Module or a callable "
                        f"x -> scores, got {type(critic).__name__}")
    if params is not None:
        raise TypeError("calcml.generative: params can only be given with a Module critic")
    return critic


def _input_gradients(fn, x):
    """∇ₓ Σ_i D(x)_i: row i is ∇D(x_i), since D acts row by row."""
    return cm.grad(lambda xx: cm.sum(fn(xx)))(x)


def gradient_penalty(critic, real, fake, alpha, params=None, eps=1e-12):
    r"""The WGAN-GP penalty E (‖∇ₓ D(x̂)‖₂ − 1)² on interpolates x̂ = αx + (1 − α)x̃.

    Parameters
    ----------
    critic : calcml.nn.Module or callable
        D, mapping (n, d) to scores (n, 1) or (n,), row by row.
    real, fake : arrays of shape (n, d)
        Data x and generated samples x̃ (constants: the penalty is differentiated with respect
        to the critic's parameters).
    alpha : array of shape (n, 1)
        Interpolation weights, α ~ U(0, 1) in WGAN-GP (drawn by the caller, so that the
        penalty is a deterministic function that can be checked by finite differences).
    params : dict, optional
        Parameters of a Module critic, name → array (possibly traced by ``cm.grad``): the
        penalty is then computed with them (:func:`calcml.nn.functional_call`).
    eps : float
        Added under the square root, so that a zero input gradient (a dead ReLU region) gives
        a finite derivative of the norm; it changes ‖∇D‖ by at most √eps = 1e-6.

    Returns
    -------
    scalar
        Not yet multiplied by the weight λ (10 in Gulrajani et al. 2017).

    Notes
    -----
    A differentiable D is 1-Lipschitz iff ‖∇ₓD‖ ≤ 1 everywhere, and the optimal critic has
    ‖∇ₓD‖ = 1 on the segments between coupled points of p_data and p_G; WGAN-GP enforces this
    softly there.  The critic's update needs

    .. math:: \nabla_\theta \big(\lVert \nabla_x D_\theta(\hat x)\rVert - 1\big)^2
              = 2\big(\lVert g\rVert - 1\big)\, \frac{g^\top}{\lVert g\rVert}\,
              \nabla_\theta g, \qquad g = \nabla_x D_\theta(\hat x),

    a mixed second derivative ∂²D/∂θ∂x.  Here ∇ₓD is ``cm.grad`` of ΣD(x̂) (row i of the result
    is ∇D(x̂_i) because D acts row by row), taken inside the function that the caller
    differentiates with respect to θ: the engine's nested traces make that exact
    (tests/test_generative.py checks it against central differences).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import gradient_penalty
    >>> D = lambda x: 3.0 * x[:, :1]            # ‖∇D‖ = 3 everywhere
    >>> x, y = np.ones((4, 2)), np.zeros((4, 2))
    >>> round(float(gradient_penalty(D, x, y, np.full((4, 1), 0.5))), 6)   # (3 - 1)²
    4.0
    """
    fn = _critic_fn(critic, params)
    x = float_array("gradient_penalty", "real", real, ndim=2, min_rows=1)
    y = float_array("gradient_penalty", "fake", fake, ndim=2)
    a = float_array("gradient_penalty", "alpha", alpha, ndim=2)
    if y.shape != x.shape:
        raise ValueError(f"calcml.generative.gradient_penalty: real and fake must have the same "
                         f"shape, got real {desc(x)} and fake {desc(y)}")
    if a.shape != (x.shape[0], 1):
        raise ValueError(f"calcml.generative.gradient_penalty: alpha must have shape "
                         f"({x.shape[0]}, 1), got {desc(a)}")
    eps = nonneg_float("gradient_penalty", "eps", eps)
    xhat = (a * x + (1.0 - a) * y).astype(np.result_type(x, y), copy=False)
    g = _input_gradients(fn, xhat)
    norm = cm.sqrt(cm.sum(g * g, axis=1) + eps)
    return cm.mean(cm.square(norm - 1.0))


def input_gradient_norms(critic, x, params=None):
    r"""‖∇ₓ D(x_i)‖₂ for every row x_i (a NumPy array of shape (n,)).

    Parameters
    ----------
    critic : calcml.nn.Module or callable
    x : array of shape (n, d)
    params : dict, optional
        As in :func:`gradient_penalty`.

    Notes
    -----
    The local Lipschitz constant of D at x_i.  A 1-Lipschitz critic has all of them ≤ 1;
    WGAN-GP drives them to ≈ 1 between data and samples, weight clipping only bounds them by
    a constant that depends on c and the architecture.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import input_gradient_norms
    >>> input_gradient_norms(lambda x: 3.0 * x[:, :1] + 4.0 * x[:, 1:], np.zeros((2, 2)))
    array([5., 5.])
    """
    if isinstance(critic, nn.Module) and params is None:
        # the parameters' arrays, not the Tensors: a plain array comes back, nothing records
        params = {n: t.data for n, t in critic.named_parameters()}
    fn = _critic_fn(critic, params)
    x = float_array("input_gradient_norms", "x", x, ndim=2, min_rows=1)
    g = np.asarray(_input_gradients(fn, x))
    return np.sqrt(np.sum(g * g, axis=1))


def clip_weights(params, c):
    r"""Project every parameter onto [−c, c] (the original WGAN's Lipschitz constraint).

    Parameters
    ----------
    params : dict of name → array
    c : float > 0

    Returns
    -------
    dict
        New arrays, ``clip(θ, −c, c)`` entry by entry, dtypes kept.

    Notes
    -----
    Arjovsky et al. (2017) clip the critic's weights after each RMSprop step: a network whose
    weights are bounded is K-Lipschitz for some K(c, architecture), so the critic estimates
    K·W₁.  The projection is applied to the parameters, not to the gradient (unlike
    ``cm.optim.clip_by_value``, which clips updates).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml.generative import clip_weights
    >>> clip_weights({"w": np.array([-1.0, 0.005, 2.0])}, 0.01)["w"]
    array([-0.01 ,  0.005,  0.01 ])
    """
    c = positive_float("clip_weights", "c", c)
    return {k: np.clip(v, -c, c) for k, v in params.items()}


# --- training -------------------------------------------------------------------------------

@dataclass
class GANResult:
    """What :func:`train_gan` and :func:`train_wgan` return.

    Attributes
    ----------
    generator, discriminator : calcml.nn.Module
        The trained networks (``discriminator`` is the critic of a WGAN).
    history : dict of list
        Per generator step: ``"step"``, ``"d_loss"`` (the discriminator's / critic's loss of
        the last inner step, penalty included), ``"g_loss"``; for a WGAN also
        ``"w_estimate"`` (E D(x) − E D(G(z)) on the last critic batch, the critic's estimate
        of W₁ up to the Lipschitz constant) and, with ``mode="gp"``, ``"gradient_penalty"``.
    snapshots : dict of int → ndarray
        Generated samples, from a fixed batch of noise, at the requested steps (0 = before
        training).
    wall_time_s : float
        Wall-clock time of the training loop.
    config : dict
        The settings used.
    """

    generator: nn.Module
    discriminator: nn.Module
    history: dict
    snapshots: dict
    wall_time_s: float
    config: dict = field(default_factory=dict)

    def sample(self, n, rng):
        """``n`` samples G(z), z ~ N(0, I), as a NumPy array (no gradient recorded)."""
        n = positive_int("GANResult.sample", "n", n)
        gen = as_generator("GANResult.sample", rng)
        return _generate(self.generator, n, gen, self.config["latent_dim"],
                         self.config["dtype"])


def _params(module):
    return {n: p.data for n, p in module.named_parameters()}


def _store(module, params):
    for n, p in module.named_parameters():
        p.data = params[n]


def _generate(G, n, gen, latent_dim, dtype, params=None):
    z = gen.standard_normal((n, latent_dim)).astype(dtype, copy=False)
    return np.asarray(nn.functional_call(G, _params(G) if params is None else params, z))


def _data_sampler(fname, sample_data, dtype):
    """A function (n, rng) -> array from a callable or from an array (draws with
    replacement)."""
    if callable(sample_data):
        def draw(n, gen):
            x = np.asarray(sample_data(n, gen))
            if x.ndim != 2 or x.shape[0] != n or x.dtype.kind not in "biuf" \
                    or not np.all(np.isfinite(x)):
                raise ValueError(f"calcml.generative.{fname}: sample_data(n, rng) must return a "
                                 f"finite real array of shape (n, d) = ({n}, d), got {desc(x)}")
            return x.astype(dtype, copy=False)
        return draw
    data = float_array(fname, "sample_data", sample_data, ndim=2, min_rows=2).astype(dtype)

    def draw_rows(n, gen):
        return data[gen.integers(0, len(data), size=n)]
    return draw_rows


def _progress(progress, total, desc_):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc_, leave=False)


def _check_common(fname, steps, batch_size, latent_dim, hidden, depth, lr, snapshot_steps):
    steps = positive_int(fname, "steps", steps)
    positive_int(fname, "batch_size", batch_size)
    positive_int(fname, "latent_dim", latent_dim)
    positive_int(fname, "hidden", hidden)
    positive_int(fname, "depth", depth)
    if not callable(lr):
        positive_float(fname, "learning_rate", lr)
    snaps = sorted({int(s) for s in snapshot_steps})
    bad = [s for s in snaps if not 0 <= s <= steps]
    if bad:
        raise ValueError(f"calcml.generative.{fname}: snapshot_steps must lie in [0, steps="
                         f"{steps}], got {bad}")
    return snaps


def _networks(fname, gen, dim, latent_dim, hidden, depth, dt, generator, discriminator):
    G = generator if generator is not None else \
        make_generator(latent_dim, dim, hidden, depth, rng=gen, dtype=dt)
    D = discriminator if discriminator is not None else \
        make_discriminator(dim, hidden, depth, rng=gen, dtype=dt)
    for name, m in (("generator", G), ("discriminator", D)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"calcml.generative.{fname}: {name} must be a calcml.nn.Module, got "
                            f"{type(m).__name__}")
    return G, D


def train_gan(sample_data, *, steps=2000, batch_size=256, latent_dim=2, hidden=64, depth=3,
              learning_rate=1e-3, b1=0.5, b2=0.999, generator_loss_kind="non_saturating",
              rng=0, dtype=np.float64, snapshot_steps=(), n_snapshot=1000, generator=None,
              discriminator=None, progress=False):
    r"""Train a GAN (Goodfellow et al. 2014) with the chapter's losses, Adam for both players.

    Parameters
    ----------
    sample_data : callable ``(n, rng) -> array (n, d)`` or array (N, d)
        The data: a sampler (e.g. :class:`RingOfGaussians`) or a fixed data set (batches are
        drawn from it with replacement).
    steps : int
        Number of generator updates (one discriminator update before each).
    batch_size : int
        Data and noise samples per update.
    latent_dim, hidden, depth : int
        z's dimension; width and number of Linear layers of both networks.
    learning_rate, b1, b2 : float
        Adam's α, β₁, β₂ for both players (β₁ = 0.5 as in DCGAN); β₁, β₂ in [0, 1).
    generator_loss_kind : {"non_saturating", "minimax"}
        See :func:`generator_loss`.
    rng : numpy.random.Generator or int
        Source of the initial weights, the noise and the batches.
    dtype : float32 or float64
    snapshot_steps : iterable of int
        Steps after which to keep ``n_snapshot`` generated samples (from fixed noise).
    generator, discriminator : calcml.nn.Module, optional
        Networks to continue training (by default new ones from ``rng``).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    GANResult

    Notes
    -----
    Step k: draw x ~ p_data and z ~ N(0, I); update D by one Adam step on
    :func:`discriminator_loss` (G fixed); draw new z; update G by one Adam step on
    :func:`generator_loss` (D fixed).  This is simultaneous gradient play on the minimax game
    :math:`\min_G \max_D\ \mathbb E \log D(x) + \mathbb E \log(1 - D(G(z)))`, with the
    non-saturating generator loss by default.

    Examples
    --------
    >>> from calcml.generative import RingOfGaussians, train_gan
    >>> res = train_gan(RingOfGaussians(), steps=20, batch_size=64, hidden=16, rng=0)
    >>> len(res.history["g_loss"]), res.sample(5, rng=1).shape
    (20, (5, 2))
    """
    fname = "train_gan"
    snaps = _check_common(fname, steps, batch_size, latent_dim, hidden, depth, learning_rate,
                          snapshot_steps)
    n_snapshot = positive_int(fname, "n_snapshot", n_snapshot, minimum=0)
    choice(fname, "generator_loss_kind", generator_loss_kind, GENERATOR_LOSSES)
    b1, b2 = unit_interval(fname, "b1", b1), unit_interval(fname, "b2", b2)
    gen = as_generator(fname, rng)
    dt = float_dtype(fname, dtype)
    draw = _data_sampler(fname, sample_data, dt)
    dim = draw(2, gen).shape[1]
    G, D = _networks(fname, gen, dim, latent_dim, hidden, depth, dt, generator, discriminator)
    pG, pD = _params(G), _params(D)
    opt_g = cm.optim.adam(learning_rate, b1=b1, b2=b2)
    opt_d = cm.optim.adam(learning_rate, b1=b1, b2=b2)
    sG, sD = opt_g.init(pG), opt_d.init(pD)
    z_fixed = gen.standard_normal((n_snapshot, latent_dim)).astype(dt)

    def d_loss(pD, x, fake):
        return discriminator_loss(nn.functional_call(D, pD, x), nn.functional_call(D, pD, fake))

    def g_loss(pG, pD, z):
        fake = nn.functional_call(G, pG, z)
        return generator_loss(nn.functional_call(D, pD, fake), generator_loss_kind)

    d_step = cm.value_and_grad(d_loss)
    g_step = cm.value_and_grad(g_loss)
    history = {"step": [], "d_loss": [], "g_loss": []}
    snapshots = {}
    if 0 in snaps:
        snapshots[0] = np.asarray(nn.functional_call(G, pG, z_fixed))
    bar = _progress(progress, steps, "GAN")
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        x = draw(batch_size, gen)
        z = gen.standard_normal((batch_size, latent_dim)).astype(dt, copy=False)
        fake = np.asarray(nn.functional_call(G, pG, z))
        ld, gD = d_step(pD, x, fake)
        u, sD = opt_d.update(gD, sD, pD)
        pD = cm.optim.apply_updates(pD, u)
        z = gen.standard_normal((batch_size, latent_dim)).astype(dt, copy=False)
        lg, gG = g_step(pG, pD, z)
        u, sG = opt_g.update(gG, sG, pG)
        pG = cm.optim.apply_updates(pG, u)
        history["step"].append(k)
        history["d_loss"].append(float(ld))
        history["g_loss"].append(float(lg))
        if not (math.isfinite(history["d_loss"][-1]) and math.isfinite(history["g_loss"][-1])):
            raise FloatingPointError(f"calcml.generative.train_gan: the loss became non-finite "
                                     f"at step {k} (d_loss {float(ld)}, g_loss {float(lg)})")
        if k in snaps:
            snapshots[k] = np.asarray(nn.functional_call(G, pG, z_fixed))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(d_loss=f"{float(ld):.3f}", g_loss=f"{float(lg):.3f}", refresh=False)
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    _store(G, pG)
    _store(D, pD)
    config = dict(kind="gan", steps=steps, batch_size=batch_size, latent_dim=latent_dim,
                  hidden=hidden, depth=depth, learning_rate=learning_rate, b1=b1, b2=b2,
                  generator_loss_kind=generator_loss_kind, dtype=dt)
    return GANResult(G, D, history, snapshots, wall, config)


def train_wgan(sample_data, *, mode="gp", steps=1000, n_critic=5, batch_size=256, latent_dim=2,
               hidden=64, depth=3, learning_rate=None, critic_learning_rate=None,
               clip_value=0.01, gp_weight=10.0, optimizer=None, b1=0.5, b2=0.9,
               rng=0, dtype=np.float64, snapshot_steps=(), n_snapshot=1000, generator=None,
               discriminator=None, sign="correct", progress=False):
    r"""Train a Wasserstein GAN, with weight clipping or with a gradient penalty.

    Parameters
    ----------
    sample_data : callable ``(n, rng) -> array`` or array (N, d)
    mode : {"gp", "clip"}
        ``"gp"``: WGAN-GP (Gulrajani et al. 2017), Adam(α, β₁ = 0.5, β₂ = 0.9) for both,
        critic loss + λ·:func:`gradient_penalty`.  ``"clip"``: the original WGAN (Arjovsky et
        al. 2017), RMSprop for both and the critic's weights clipped to [−c, c] after every
        step (:func:`clip_weights`).
    steps : int
        Generator updates; the critic takes ``n_critic`` updates before each.
    learning_rate : float or schedule, optional
        The generator's.  Default 2e-4 with ``"gp"``, 5e-4 with ``"clip"`` (the papers' 1e-4
        and 5e-5 are made for image models trained for 10⁵ steps; this 2-D problem takes a
        few thousand).
    critic_learning_rate : float or schedule, optional
        The critic's.  Default 1e-3 with ``"gp"`` (a critic faster than the generator: with
        equal rates the samples of the ring benchmark oscillated instead of settling), the
        generator's rate with ``"clip"``.
    clip_value : float
        c, for ``"clip"`` (0.01 in the paper; the tour uses 0.1 for its 64-wide critic).
    gp_weight : float
        λ, for ``"gp"``.
    optimizer : {"adam", "rmsprop"}, optional
        Of both players; by default Adam for ``"gp"`` and RMSprop for ``"clip"``, as in the
        papers (Arjovsky et al. found momentum unstable with clipping).
    b1, b2 : float in [0, 1)
        Adam's β₁, β₂ (default 0.5, 0.9 as in WGAN-GP); checked even when the optimizer is
        RMSprop, which ignores them.
    sign : {"correct", "chapter"}
        ``"chapter"`` trains the critic on the chapter's L_D = E D(x) − E D(G(z)) (the
        opposite sign of :func:`critic_loss`), to show what that sign does.
    Other parameters as in :func:`train_gan`.

    Returns
    -------
    GANResult

    Notes
    -----
    Critic step: minimise E D(G(z)) − E D(x) [+ λ E(‖∇ₓD(x̂)‖ − 1)²] over D's parameters;
    generator step: minimise −E D(G(z)).  With the Lipschitz constraint the critic's value
    E D(x) − E D(G(z)) (``history["w_estimate"]``) tracks W₁(p_data, p_G) (times the
    unknown Lipschitz bound K(c) under clipping), so, unlike the GAN's losses, it is a
    meaningful learning curve.

    Examples
    --------
    >>> from calcml.generative import RingOfGaussians, train_wgan
    >>> res = train_wgan(RingOfGaussians(), steps=5, n_critic=2, batch_size=32, hidden=16)
    >>> sorted(res.history)
    ['d_loss', 'g_loss', 'gradient_penalty', 'step', 'w_estimate']
    """
    fname = "train_wgan"
    choice(fname, "mode", mode, WGAN_MODES)
    choice(fname, "sign", sign, ("correct", "chapter"))
    if learning_rate is None:
        learning_rate = 2e-4 if mode == "gp" else 5e-4
    if critic_learning_rate is None:
        critic_learning_rate = 1e-3 if mode == "gp" else learning_rate
    elif not callable(critic_learning_rate):
        positive_float(fname, "critic_learning_rate", critic_learning_rate)
    snaps = _check_common(fname, steps, batch_size, latent_dim, hidden, depth, learning_rate,
                          snapshot_steps)
    n_snapshot = positive_int(fname, "n_snapshot", n_snapshot, minimum=0)
    n_critic = positive_int(fname, "n_critic", n_critic)
    clip_value = positive_float(fname, "clip_value", clip_value)
    gp_weight = nonneg_float(fname, "gp_weight", gp_weight)
    b1, b2 = unit_interval(fname, "b1", b1), unit_interval(fname, "b2", b2)
    gen = as_generator(fname, rng)
    dt = float_dtype(fname, dtype)
    draw = _data_sampler(fname, sample_data, dt)
    dim = draw(2, gen).shape[1]
    G, D = _networks(fname, gen, dim, latent_dim, hidden, depth, dt, generator, discriminator)
    pG, pD = _params(G), _params(D)
    if optimizer is None:
        optimizer = "adam" if mode == "gp" else "rmsprop"
    choice(fname, "optimizer", optimizer, ("adam", "rmsprop"))
    if optimizer == "adam":
        opt_g = cm.optim.adam(learning_rate, b1=b1, b2=b2)
        opt_d = cm.optim.adam(critic_learning_rate, b1=b1, b2=b2)
    else:
        opt_g = cm.optim.rmsprop(learning_rate)
        opt_d = cm.optim.rmsprop(critic_learning_rate)
    if mode == "clip":
        pD = clip_weights(pD, clip_value)
    sG, sD = opt_g.init(pG), opt_d.init(pD)
    z_fixed = gen.standard_normal((n_snapshot, latent_dim)).astype(dt)
    s = 1.0 if sign == "correct" else -1.0

    def c_loss(pD, x, fake, alpha):
        dr = nn.functional_call(D, pD, x)
        df = nn.functional_call(D, pD, fake)
        w = cm.mean(dr) - cm.mean(df)
        loss = s * critic_loss(dr, df)
        if mode == "gp":
            gp = gradient_penalty(D, x, fake, alpha, params=pD)
            return loss + gp_weight * gp, (w, gp)
        return loss, (w, 0.0)

    def g_loss(pG, pD, z):
        return wasserstein_generator_loss(nn.functional_call(D, pD, nn.functional_call(G, pG, z)))

    c_step = cm.value_and_grad(c_loss, has_aux=True)
    g_step = cm.value_and_grad(g_loss)
    history = {"step": [], "d_loss": [], "g_loss": [], "w_estimate": []}
    if mode == "gp":
        history["gradient_penalty"] = []
    snapshots = {}
    if 0 in snaps:
        snapshots[0] = np.asarray(nn.functional_call(G, pG, z_fixed))
    bar = _progress(progress, steps, f"WGAN-{mode.upper()}")
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        for _ in range(n_critic):
            x = draw(batch_size, gen)
            z = gen.standard_normal((batch_size, latent_dim)).astype(dt, copy=False)
            fake = np.asarray(nn.functional_call(G, pG, z))
            alpha = gen.random((batch_size, 1)).astype(dt, copy=False)
            (lc, (w, gp)), gD = c_step(pD, x, fake, alpha)
            u, sD = opt_d.update(gD, sD, pD)
            pD = cm.optim.apply_updates(pD, u)
            if mode == "clip":
                pD = clip_weights(pD, clip_value)
        z = gen.standard_normal((batch_size, latent_dim)).astype(dt, copy=False)
        lg, gG = g_step(pG, pD, z)
        u, sG = opt_g.update(gG, sG, pG)
        pG = cm.optim.apply_updates(pG, u)
        history["step"].append(k)
        history["d_loss"].append(float(lc))
        history["g_loss"].append(float(lg))
        history["w_estimate"].append(float(w))
        if mode == "gp":
            history["gradient_penalty"].append(float(gp))
        if not (math.isfinite(float(lc)) and math.isfinite(float(lg))):
            raise FloatingPointError(f"calcml.generative.train_wgan: the loss became non-finite "
                                     f"at step {k} (critic {float(lc)}, generator {float(lg)})")
        if k in snaps:
            snapshots[k] = np.asarray(nn.functional_call(G, pG, z_fixed))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(w=f"{float(w):.3f}", refresh=False)
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    _store(G, pG)
    _store(D, pD)
    config = dict(kind=f"wgan-{mode}", mode=mode, steps=steps, n_critic=n_critic,
                  batch_size=batch_size, latent_dim=latent_dim, hidden=hidden, depth=depth,
                  learning_rate=learning_rate, critic_learning_rate=critic_learning_rate,
                  clip_value=clip_value, gp_weight=gp_weight, optimizer=optimizer, b1=b1,
                  b2=b2,
                  sign=sign, dtype=dt)
    return GANResult(G, D, history, snapshots, wall, config)

"""Generative models (chapter 9.8): GANs, Wasserstein GANs and variational autoencoders.

Built on calcml's public API only (``cm.nn`` modules, ``cm.optim`` transforms,
``cm.value_and_grad`` with ``cm.nn.functional_call``, ``cm.losses``), with the measurements
that say whether a generative model works:

* :mod:`~calcml.generative.data` — a ring of Gaussians (the mode-collapse benchmark) and
  scikit-learn's digits in a fixed split;
* :mod:`~calcml.generative.metrics` — unbiased MMD² with its noise floor, mode coverage, exact
  empirical W₁;
* :mod:`~calcml.generative.gan` — the chapter's GAN losses (stable, from logits; minimax and
  non-saturating generator), WGAN critic losses, the gradient penalty (a gradient of a
  gradient norm), weight clipping, and the training loops;
* :mod:`~calcml.generative.vae` — the VAE, the ELBO, the reparameterization trick, the
  closed-form Gaussian KL and Monte Carlo checks of both.

Every random draw comes from an explicit ``numpy.random.Generator`` or seed.
"""

from .data import DigitsSplit, RingOfGaussians, load_digits_split, ring_of_gaussians
from .gan import (
    GANResult,
    clip_weights,
    critic_loss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    input_gradient_norms,
    make_discriminator,
    make_generator,
    mlp,
    train_gan,
    train_wgan,
    wasserstein_generator_loss,
)
from .metrics import (
    ModeCoverage,
    NoiseFloor,
    median_bandwidth,
    mmd2,
    mmd2_noise_floor,
    mode_coverage,
    wasserstein1,
)
from .vae import (
    VAE,
    ElboEstimate,
    ElboTerms,
    GradientEstimate,
    VAEResult,
    bernoulli_log_likelihood,
    elbo,
    evaluate_elbo,
    gaussian_kl,
    gaussian_log_likelihood,
    importance_weighted_bound,
    kl_monte_carlo,
    reparameterize,
    reparameterized_gradient,
    score_function_gradient,
    train_vae,
)

__all__ = [
    # data
    "RingOfGaussians", "ring_of_gaussians", "DigitsSplit", "load_digits_split",
    # metrics
    "mmd2", "median_bandwidth", "mmd2_noise_floor", "NoiseFloor", "ModeCoverage",
    "mode_coverage", "wasserstein1",
    # GANs
    "mlp", "make_generator", "make_discriminator", "discriminator_loss", "generator_loss",
    "critic_loss", "wasserstein_generator_loss", "gradient_penalty", "input_gradient_norms",
    "clip_weights", "GANResult", "train_gan", "train_wgan",
    # VAEs
    "VAE", "reparameterize", "gaussian_kl", "kl_monte_carlo", "bernoulli_log_likelihood",
    "gaussian_log_likelihood", "ElboTerms", "elbo", "ElboEstimate", "evaluate_elbo",
    "importance_weighted_bound", "GradientEstimate", "reparameterized_gradient",
    "score_function_gradient", "VAEResult", "train_vae",
]

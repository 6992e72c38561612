"""Tour section ``vae`` (chapter 9.8, variational autoencoders).

A VAE on scikit-learn's 8×8 digits (scaled to [0, 1], a fixed stratified split): the ELBO of
the chapter, with the reparameterization trick z = μ + σ ⊙ ε and the Gaussian KL in closed
form; train and test ELBO curves; the test ELBO per image against the importance-weighted
bound; reconstructions, samples, and the latent space of a 2-D model coloured by digit.  Then
the two formulas the training rests on, checked by Monte Carlo: the closed-form KL against
E_q[log q − log p], and the reparameterized gradient of E f(z) against the exact gradient on a
1-D Gaussian (with the score-function estimator for comparison).
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from scipy.stats import norm
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

import calcml as cm
from calcml import generative as gm
from calcml import viz
from calcml.tour import section
from calcml.tour.context import least

LATENT = 8
HIDDEN = 128
BATCH = 64
LR = 1e-3
SEED = 0


def _bernoulli_floor(x):
    """−Σ_j H(x_j), the largest Bernoulli log-likelihood any model can give an image."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(x > 0, x * np.log(x), 0.0) + np.where(x < 1, (1 - x) * np.log1p(-x), 0.0))
    return float(-h.sum(axis=1).mean())


@section("vae", title="VAEs: the ELBO on digits, reparameterization, KL in closed form",
         chapter="9.8", rank=3,
         description="A VAE on scikit-learn's digits: train/test ELBO, reconstructions, samples, "
                     "a 2-D latent space; the closed-form KL against Monte Carlo and the "
                     "reparameterized gradient against the exact one.")
def run(ctx):
    """Chapter 9.8, VAEs."""
    with threadpool_limits(limits=1, user_api="blas"):
        d = gm.load_digits_split(test_fraction=0.25, seed=0, dtype=np.float32)
        epochs = ctx.size(150, 40)
        eval_every = ctx.size(5, 4)
        ctx.status(f"training the VAE (latent {LATENT}, {epochs} epochs)")
        res = gm.train_vae(d.X_train, d.X_test, latent_dim=LATENT, hidden=HIDDEN,
                           epochs=epochs, batch_size=BATCH, learning_rate=LR,
                           eval_every=eval_every, rng=SEED, dtype=np.float32)
        ctx.status(f"training the 2-D VAE ({epochs} epochs)")
        res2 = gm.train_vae(d.X_train, d.X_test, latent_dim=2, hidden=HIDDEN, epochs=epochs,
                            batch_size=BATCH, learning_rate=LR, eval_every=eval_every,
                            rng=SEED + 1, dtype=np.float32)
        ctx.metric("wall_time_s", {"latent_8": res.wall_time_s, "latent_2": res2.wall_time_s})
        ctx.metric("epochs", epochs)
        _elbo(ctx, d, res, res2, epochs)
        _pictures(ctx, d, res)
        _latent(ctx, d, res2)
        _kl_check(ctx, d, res)
        _reparam_check(ctx)


def _elbo(ctx, d, res, res2, epochs):
    ctx.status("test ELBO, importance-weighted bound")
    h = res.history
    n_mc = ctx.size(20, 5)
    est = gm.evaluate_elbo(res.model, d.X_test, rng=1, n_samples=n_mc)
    est_tr = gm.evaluate_elbo(res.model, d.X_train, rng=2, n_samples=n_mc)
    k_iw = ctx.size(500, 100)
    iw = gm.importance_weighted_bound(res.model, d.X_test, rng=3, k=k_iw)
    est2 = gm.evaluate_elbo(res2.model, d.X_test, rng=4, n_samples=n_mc)
    floor = _bernoulli_floor(d.X_test)
    mu, lv = (a.astype(np.float64) for a in res.posterior(d.X_test))
    kl_dim = np.mean(0.5 * (mu * mu + np.exp(lv) - 1.0 - lv), axis=0)  # per latent dimension
    active = int(np.sum(kl_dim > 0.05))
    ctx.metric("kl_per_latent_dimension", kl_dim.tolist())
    ctx.metric("active_latent_dimensions", active)
    ctx.metric("test_elbo", {"elbo": est.elbo, "stderr": est.stderr,
                             "log_likelihood": est.log_likelihood, "kl": est.kl,
                             "noise_samples_per_image": n_mc})
    ctx.metric("train_elbo", est_tr.elbo)
    ctx.metric("test_importance_weighted_bound", {"K": k_iw, "value": iw})
    ctx.metric("test_elbo_latent_2", {"elbo": est2.elbo, "stderr": est2.stderr})
    ctx.metric("bernoulli_entropy_floor", floor)
    ctx.text(
        f"The data: scikit-learn's 8×8 digits, pixel intensities / 16 in [0, 1], split once "
        f"(stratified, seed 0) into {len(d.X_train)} training and {len(d.X_test)} test images. "
        f"The model (`cm.generative.VAE`): encoder 64-{HIDDEN}-(μ, log σ²) with "
        f"{LATENT}-dimensional latent, decoder {LATENT}-{HIDDEN}-64 logits, ReLU, trained "
        f"by Adam (α = {LR:g}, batches of {BATCH}, {epochs} epochs, float32) on the chapter's "
        "ELBO 𝓛(x) = E_q[log p(x|z)] − KL(q(z|x) ‖ N(0, I)), with one reparameterized sample "
        "z = μ + σ ⊙ ε per image per step and the KL in closed form. The log-variance is the "
        "encoder's output (σ = exp(½ log σ²) > 0 without a constraint). The likelihood is "
        "Bernoulli on the grey levels: log p(x|z) = Σ_j x_j log p_j + (1 − x_j) log(1 − p_j), "
        "p = sigmoid(decoder logits), computed from the logits. For x_j strictly between 0 and "
        "1 this is not a normalised density of x (the usual choice nonetheless; the "
        "continuous Bernoulli would normalise it), so the numbers below are in nats of that "
        "Bernoulli likelihood, per image of 64 pixels, and cannot exceed "
        f"−Σ_j H(x_j) = {floor:.2f} (the entropy of the grey levels themselves, attained only "
        "by reconstructing every image exactly).")
    ctx.text(
        f"Result: test ELBO {est.elbo:.2f} ± {est.stderr:.2f} nats per image (mean over the "
        f"{len(d.X_test)} test images, {n_mc} noise samples each; ± one standard error over "
        f"images) = reconstruction {est.log_likelihood:.2f} − KL {est.kl:.2f}; training set "
        f"{est_tr.elbo:.2f} (the gap is small: the model barely overfits). The importance-"
        f"weighted bound with K = {k_iw} (Burda et al. 2016), a tighter lower bound on the "
        f"same log-likelihood, is {iw:.2f}: the ELBO's gap includes KL(q(z|x) ‖ p(z|x)), "
        f"at least {iw - est.elbo:.2f} nats here. The code is cheap: the KL per latent "
        f"dimension (nats, mean over test images) is {', '.join(f'{v:.2f}' for v in kl_dim)} "
        f"({active} of {LATENT} above 0.05), {est.kl:.1f} nats in all against a reconstruction "
        "term of "
        f"{est.log_likelihood:.1f}, most of which is the grey levels' own entropy; a 2-D latent "
        f"model is nearly as good ({est2.elbo:.2f}).")
    ctx.check("test ELBO rises during training by > 20 nats per image", 20.0,
              h["test_elbo"][-1] - h["test_elbo"][0], cmp=">")
    ctx.check("test ELBO per image after training (nats, Bernoulli)", ctx.size(-27.0, -30.0),
              est.elbo, cmp=">")
    ctx.check("train − test ELBO gap < 2 nats", 2.0, est_tr.elbo - est.elbo, cmp="<")
    ctx.check(f"importance-weighted bound (K = {k_iw}) ≥ ELBO", est.elbo, iw, cmp=">=")
    ctx.check("ELBO below the Bernoulli entropy floor −Σ H(x_j)", floor, est.elbo, cmp="<")

    fig, ax = viz.new_figure(size=(6.6, 4.2))
    ax.plot(h["epoch"], h["train_objective"], color="0.6", lw=1,
            label="training objective (batch mean, during the epoch)")
    ax.plot(h["eval_epoch"], h["train_elbo"], "o-", ms=3, color=viz.COLORS[0],
            label="train ELBO (fixed noise)")
    ax.plot(h["eval_epoch"], h["test_elbo"], "s-", ms=3, color=viz.COLORS[1],
            label="test ELBO (fixed noise)")
    ax.plot(res2.history["eval_epoch"], res2.history["test_elbo"], "--", color=viz.COLORS[2],
            label="test ELBO, 2-D latent model")
    ax.axhline(floor, color="k", ls=":", lw=1, label="−Σ H(x_j) (test)")
    ax.axhline(iw, color=viz.COLORS[3], ls="--", lw=1, label=f"importance-weighted, K = {k_iw}")
    lo = min(h["test_elbo"][1:] + res2.history["test_elbo"][1:]) - 3
    ax.set_ylim(lo, floor + 2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower right")
    ctx.figure(fig, "elbo", "ELBO per image during training (epoch 0, far below, is cut off).")


def _pictures(ctx, d, res):
    idx = [int(np.flatnonzero(d.y_test == c)[0]) for c in range(10)]
    x = d.X_test[idx]
    rec = res.reconstruct(x)
    samples = res.sample(20, rng=5)
    mse = float(np.mean((res.reconstruct(d.X_test) - d.X_test) ** 2))
    ctx.metric("test_reconstruction_mse", mse)
    fig, axes = viz.new_figure(4, 10, size=(9.0, 4.0))
    for j in range(10):
        for i, (img, lab) in enumerate(((x[j], "test"), (rec[j], "reconstruction"),
                                        (samples[j], "sample"), (samples[10 + j], "sample"))):
            ax = axes[i, j]
            ax.imshow(img.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(lab, fontsize=7)
    ctx.figure(fig, "images",
               "Row 1: a test image of each digit; row 2: its reconstruction σ(decoder(μ(x))); "
               "rows 3–4: samples σ(decoder(z)), z ~ N(0, I) (the means of p(x|z)).")
    ctx.check("reconstructions are closer to the test images than their mean image (MSE)",
              float(np.mean((d.X_test - d.X_test.mean(0)) ** 2)), mse, cmp="<")


def _latent(ctx, d, res2):
    mu_tr, mu_te = res2.encode(d.X_train), res2.encode(d.X_test)
    acc = float(KNeighborsClassifier(5).fit(mu_tr, d.y_train).score(mu_te, d.y_test))
    ctx.metric("latent_2d_knn_accuracy", acc)
    fig, axes = viz.new_figure(1, 2, size=(11.0, 4.8))
    ax = axes[0]
    cmap = matplotlib.colormaps["tab10"]
    for c in range(10):
        m = d.y_test == c
        ax.scatter(mu_te[m, 0], mu_te[m, 1], s=9, color=cmap(c), label=str(c))
    ax.set_xlabel("μ₁(x)")
    ax.set_ylabel("μ₂(x)")
    ax.legend(fontsize=7, ncol=2, markerscale=1.5)
    ax.set_title("test images in the latent plane (posterior means)", fontsize=9.5)
    # the decoder over a grid of the prior's quantiles
    q = norm.ppf(np.linspace(0.05, 0.95, 10))
    grid = np.array([[a, b] for b in q[::-1] for a in q], dtype=np.float32)
    dec = res2.decode(grid)
    canvas = np.zeros((10 * 9 - 1, 10 * 9 - 1))
    for i in range(10):
        for j in range(10):
            canvas[i * 9:i * 9 + 8, j * 9:j * 9 + 8] = dec[i * 10 + j].reshape(8, 8)
    axes[1].imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    axes[1].set_title("decoder means over a 10×10 grid of N(0, I) quantiles", fontsize=9.5)
    ctx.figure(fig, "latent",
               "A separate VAE with a 2-D latent space (same architecture and training, seed 1), "
               "so that the latent space can be drawn without a projection. Left: μ(x) of the "
               "test images, coloured by the digit (labels never used in training). Right: "
               "what the decoder makes of the latent plane.")
    ctx.text(
        "The latent space. The plot uses a second model trained with a 2-D latent (not a "
        "projection of the 8-D one). The digits form clusters although the labels are never "
        f"seen: a 5-nearest-neighbour classifier on the 2-D posterior means reaches "
        f"{100 * acc:.1f} % test accuracy (chance: 10 %).")
    ctx.check("2-D latent means separate the digits (5-NN test accuracy > 0.5)", 0.5, acc,
              cmp=">")


def _kl_check(ctx, d, res):
    ctx.status("KL: closed form against Monte Carlo")
    mu, lv = (a.astype(np.float64) for a in res.posterior(d.X_test[:6]))
    closed = np.asarray(gm.gaussian_kl(mu, lv))
    n = ctx.size(100_000, 20_000)
    est, se = gm.kl_monte_carlo(mu, lv, n, rng=6)
    z = (est - closed) / se
    ctx.metric("kl_check", {"closed_form": closed.tolist(), "monte_carlo": est.tolist(),
                            "stderr": se.tolist(), "z": z.tolist(), "samples": n})
    ctx.table(["test image", "closed form ½Σ(μ² + σ² − 1 − log σ²)", f"Monte Carlo (n = {n})",
               "standard error", "z"],
              [[i, closed[i], est[i], se[i], z[i]] for i in range(len(closed))],
              caption="KL(q(z|x) ‖ N(0, I)) for six test images (the trained encoder's μ, σ)")
    ctx.text(
        "The closed-form KL used in training, KL(N(μ, diag σ²) ‖ N(0, I)) = "
        "½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²), against a Monte Carlo estimate of its definition "
        f"E_q[log q(z) − log p(z)] ({n} samples z = μ + σε each) on the encoder's outputs for "
        f"six test images: all within {np.max(np.abs(z)):.1f} standard errors.")
    ctx.check("closed-form KL vs Monte Carlo: max |z| over six images", 4.0,
              float(np.max(np.abs(z))), cmp="<")


def _reparam_check(ctx):
    ctx.status("reparameterized gradient against the exact one")
    mu, sigma = 0.7, 1.3
    n = ctx.size(100_000, 20_000)
    e = math.exp(-sigma * sigma / 2)
    cases = [
        ("z²", lambda z: z ** 2, "μ² + σ²", (2 * mu, 2 * sigma)),
        ("(z − 2)²", lambda z: (z - 2.0) ** 2, "(μ − 2)² + σ²", (2 * (mu - 2), 2 * sigma)),
        ("sin z", cm.sin, "sin μ · e^(−σ²/2)", (math.cos(mu) * e, -sigma * math.sin(mu) * e)),
        ("exp z", cm.exp, "e^(μ + σ²/2)", (math.exp(mu + sigma ** 2 / 2),
                                            sigma * math.exp(mu + sigma ** 2 / 2))),
    ]
    rows, zs, ratio = [], {}, {}
    samples = {}
    for name, f, expect, exact in cases:
        rp = gm.reparameterized_gradient(f, mu, sigma, n, rng=7)
        sf = gm.score_function_gradient(f, mu, sigma, n, rng=7)
        z = rp.z_scores(exact)
        zs[name] = z.tolist()
        ratio[name] = (sf.stderr / rp.stderr).tolist()
        samples[name] = (rp.samples[:, 0], sf.samples[:, 0], exact[0])
        rows.append([f"f = {name}, E f = {expect}", f"({exact[0]:.4f}, {exact[1]:.4f})",
                     f"({rp.mean[0]:.4f}, {rp.mean[1]:.4f})",
                     f"({rp.stderr[0]:.4f}, {rp.stderr[1]:.4f})", f"({z[0]:.2f}, {z[1]:.2f})",
                     f"({ratio[name][0]:.1f}, {ratio[name][1]:.1f})"])
    ctx.metric("reparam_check", {"mu": mu, "sigma": sigma, "samples": n, "z": zs,
                                 "score_function_stderr_over_reparam": ratio})
    ctx.table(["function", "exact (∂/∂μ, ∂/∂σ)", "reparameterized mean", "standard error", "z",
               "score-function s.e. / reparam. s.e."], rows,
              caption=f"∇_(μ, σ) E_(z~N(μ, σ²)) f(z) at μ = {mu}, σ = {sigma}, {n} samples")
    worst = max(max(abs(v) for v in z) for z in zs.values())
    ctx.text(
        "The reparameterization trick, checked where the answer is known. For z ~ N(μ, σ²) "
        "and f with a closed-form expectation, the exact gradient of E f(z) is compared with "
        "the average of the reparameterized per-sample gradients f′(μ + σε)·(1, ε), each "
        f"computed by `cm.grad` (`cm.generative.reparameterized_gradient`): |z| ≤ {worst:.2f}. "
        "The score-function estimator f(z) ∇ log N(z; μ, σ²) (what one would use without the "
        "trick; it needs no f′) is unbiased too, but its standard error is larger by the "
        "factors in the last column for polynomials and the exponential — the reason VAEs "
        "reparameterize. (For a bounded f such as sin the score function can be competitive "
        "for ∂/∂μ: variance reduction is not a theorem for every f.)")
    ctx.check("reparameterized gradient vs exact: max |z| over 4 functions × (μ, σ)", 4.0,
              worst, cmp="<")
    ctx.check("score-function s.e. > 2 × reparameterized s.e. for (z − 2)² (both partials)",
              2.0, least(ratio["(z − 2)²"]), cmp=">")

    fig, axes = viz.new_figure(1, 2, size=(10.0, 3.8))
    for ax, name in zip(axes, ("(z − 2)²", "exp z")):
        rp, sf, ex = samples[name]
        lo, hi = np.quantile(np.concatenate([rp, sf]), [0.01, 0.99])
        bins = np.linspace(lo, hi, 80)
        ax.hist(sf, bins=bins, alpha=0.6, color=viz.COLORS[0], density=True,
                label="score function f(z)(z − μ)/σ²")
        ax.hist(rp, bins=bins, alpha=0.6, color=viz.COLORS[1], density=True,
                label="reparameterized f′(μ + σε)")
        ax.axvline(ex, color="k", ls="--", lw=1, label="exact ∂/∂μ E f")
        ax.set_title(f"f(z) = {name}", fontsize=9.5)
        ax.set_xlabel("per-sample estimate of ∂/∂μ E f(z)")
        ax.legend(fontsize=7.5)
    ctx.figure(fig, "reparameterization",
               "Per-sample gradient estimates of ∂/∂μ E f(z), z ~ N(0.7, 1.3²): both estimators "
               "are centred on the exact value, the reparameterized one is far narrower.")

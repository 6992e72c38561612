"""Tests of calcml.generative: metrics, GAN/WGAN losses and penalty, VAE pieces, training."""

import math
import re

import numpy as np
import pytest
from scipy import stats

import calcml as cm
from calcml import generative as gm

nn = cm.nn
RING = gm.RingOfGaussians()


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# --- data ------------------------------------------------------------------------------------

def test_ring_sampler_moments_and_reproducibility():
    x, k = RING.sample(4000, np.random.default_rng(0))
    assert x.shape == (4000, 2) and x.dtype == np.float64
    resid = x - RING.centers[k]
    assert abs(resid.std() - RING.std) < 0.05 * RING.std
    assert np.all(np.bincount(k, minlength=8) > 400)
    x2, _ = RING.sample(4000, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)
    assert RING(10, 1, dtype=np.float32).dtype == np.float32
    assert RING.min_center_distance == pytest.approx(2 * 2.0 * math.sin(math.pi / 8))


def test_digits_split_is_fixed_scaled_and_stratified():
    d = gm.load_digits_split()
    d2 = gm.load_digits_split()
    assert d.X_train.shape == (1347, 64) and d.X_test.shape == (450, 64)
    assert d.X_train.min() == 0.0 and d.X_train.max() == 1.0
    np.testing.assert_array_equal(d.X_test, d2.X_test)
    assert np.all(np.abs(np.bincount(d.y_test, minlength=10) - 45) <= 2)
    assert gm.load_digits_split(dtype=np.float32).X_train.dtype == np.float32


# --- metrics ---------------------------------------------------------------------------------

def test_mmd2_hand_computed_case():
    x = np.array([[0.0], [1.0]])
    y = np.array([[0.0], [2.0]])
    k = lambda d: math.exp(-d * d / 2.0)  # h = 1
    sxx = k(1.0)  # (k01 + k10) / (2·1)
    syy = k(2.0)
    sxy = (k(0.0) + k(2.0) + k(1.0) + k(1.0)) / 4.0
    assert float(gm.mmd2(x, y, 1.0)) == pytest.approx(sxx + syy - 2 * sxy, abs=1e-15)
    assert float(gm.mmd2(y, x, 1.0)) == pytest.approx(float(gm.mmd2(x, y, 1.0)), abs=1e-15)


def test_mmd2_zero_for_same_distribution_positive_for_shifted():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 2)), rng.normal(size=(600, 2))
    same = float(gm.mmd2(a, b, 1.0))
    shifted = float(gm.mmd2(a, b + 0.5, 1.0))
    nf = gm.mmd2_noise_floor(lambda n, g: g.normal(size=(n, 2)), 600, rng=1, repeats=10,
                             bandwidth=1.0)
    assert abs(same) < 4 * nf.std
    assert abs(nf.mean) < 3 * nf.std
    assert shifted > 20 * nf.std
    # several bandwidths: the average of the single-width statistics
    multi = float(gm.mmd2(a, b + 0.5, (0.5, 2.0)))
    assert multi == pytest.approx((float(gm.mmd2(a, b + 0.5, 0.5))
                                   + float(gm.mmd2(a, b + 0.5, 2.0))) / 2, rel=1e-12)
    # float32 in, float32 out; the median heuristic is used by default
    assert gm.mmd2(a.astype(np.float32), b.astype(np.float32)).dtype == np.float32
    assert float(gm.mmd2(a, b + 0.5)) > 0


def test_mode_coverage_counts():
    c = RING.centers
    rng = np.random.default_rng(0)
    # 100 points near each of modes 0..4, 10 near mode 5, 200 far from every mode
    parts = [c[m] + 0.01 * rng.standard_normal((100, 2)) for m in range(5)]
    parts.append(c[5] + 0.01 * rng.standard_normal((10, 2)))
    parts.append(rng.uniform(-0.3, 0.3, (200, 2)))
    x = np.concatenate(parts)
    cov = gm.mode_coverage(x, c, RING.std, n_std=3.0, min_fraction=0.25)
    assert cov.counts.tolist() == [100, 100, 100, 100, 100, 10, 0, 0]
    assert cov.n_covered == 5  # mode 5 has 10 < 0.25 · 710 / 8 = 22.2 samples
    assert cov.min_count == pytest.approx(0.25 * 710 / 8)
    assert cov.high_quality_fraction == pytest.approx(510 / 710)
    assert cov.covered.tolist() == [True] * 5 + [False] * 3
    # the data themselves: every mode covered, P(χ²₂ ≤ 9) = 1 − e^{−4.5} of high quality
    xd, _ = RING.sample(5000, rng)
    cd = gm.mode_coverage(xd, c, RING.std)
    assert cd.n_covered == 8 and cd.kl_to_uniform < 0.01
    assert abs(cd.high_quality_fraction - (1 - math.exp(-4.5))) < 0.005
    one = gm.mode_coverage(np.tile(c[:1], (50, 1)), c, RING.std)
    assert one.n_covered == 1 and one.kl_to_uniform == pytest.approx(math.log(8))


def test_wasserstein1_exact_cases():
    x = np.array([[0.0, 0.0], [1.0, 0.0]])
    y = np.array([[1.0, 1.0], [0.0, 1.0]])  # best assignment: straight up, cost 1 each
    assert float(gm.wasserstein1(x, y)) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 2))
    assert float(gm.wasserstein1(a, a + [3.0, 4.0])) == pytest.approx(5.0)  # a translation


# --- GAN losses --------------------------------------------------------------------------------

def test_gan_losses_equal_naive_formulas_at_moderate_logits():
    rng = np.random.default_rng(0)
    r, f = rng.normal(size=(16, 1)) * 3, rng.normal(size=(16, 1)) * 3
    Dr, Df = _sigmoid(r), _sigmoid(f)
    assert float(gm.discriminator_loss(r, f)) == pytest.approx(
        -np.mean(np.log(Dr)) - np.mean(np.log(1 - Df)), rel=1e-12)
    assert float(gm.generator_loss(f)) == pytest.approx(-np.mean(np.log(Df)), rel=1e-12)
    assert float(gm.generator_loss(f, "minimax")) == pytest.approx(np.mean(np.log(1 - Df)),
                                                                    rel=1e-12)
    assert float(gm.critic_loss(r, f)) == pytest.approx(f.mean() - r.mean())
    assert float(gm.wasserstein_generator_loss(f)) == pytest.approx(-f.mean())
    # gradients: ∂/∂ℓ of the non-saturating and minimax generator losses
    g_ns = cm.grad(gm.generator_loss)(f)
    g_mm = cm.grad(lambda v: gm.generator_loss(v, "minimax"))(f)
    np.testing.assert_allclose(g_ns, -(1 - Df) / 16, rtol=1e-12)
    np.testing.assert_allclose(g_mm, -Df / 16, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gan_losses_finite_at_extreme_logits(dtype):
    big = np.array([[1e4], [-1e4], [50.0], [-50.0]], dtype=dtype)
    for fn in (lambda v: gm.discriminator_loss(v, v), gm.generator_loss,
               lambda v: gm.generator_loss(v, "minimax")):
        val, g = cm.value_and_grad(fn)(big)
        assert np.isfinite(val) and np.all(np.isfinite(g))
        assert np.asarray(val).dtype == dtype and g.dtype == dtype
    # D sure and right: loss ≈ 0; sure and wrong: loss ≈ 1e4
    assert float(gm.discriminator_loss(np.array([[1e4]]), np.array([[-1e4]]))) == 0.0
    assert float(gm.discriminator_loss(np.array([[-1e4]]), np.array([[1e4]]))) == \
        pytest.approx(2e4)
    # saturation: when D rejects the fake, the minimax gradient vanishes, the other does not
    rejected = np.array([[-30.0]], dtype=dtype)
    assert abs(float(cm.grad(lambda v: gm.generator_loss(v, "minimax"))(rejected)[0, 0])) < 1e-12
    assert float(cm.grad(gm.generator_loss)(rejected)[0, 0]) == pytest.approx(-1.0, rel=1e-6)


def test_gan_losses_work_on_tensors():
    logits = cm.tensor(np.array([[0.5], [-1.0]]), requires_grad=True)
    gm.generator_loss(logits).backward()
    np.testing.assert_allclose(logits.grad, -(1 - _sigmoid(np.array([[0.5], [-1.0]]))) / 2)


# --- the gradient penalty ----------------------------------------------------------------------

def _smooth_critic(seed=0):
    g = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(2, 8, rng=g), nn.Tanh(), nn.Linear(8, 8, rng=g), nn.Tanh(),
                         nn.Linear(8, 1, rng=g))


def test_gradient_penalty_value_on_linear_critic():
    w = np.array([3.0, 4.0])
    D = lambda x: x @ w[:, None]  # ‖∇D‖ = 5 everywhere
    x, y = np.ones((6, 2)), np.zeros((6, 2))
    a = np.random.default_rng(0).random((6, 1))
    assert float(gm.gradient_penalty(D, x, y, a)) == pytest.approx(16.0, rel=1e-9)
    np.testing.assert_allclose(gm.input_gradient_norms(D, x), 5.0)


def test_gradient_penalty_gradient_matches_central_differences():
    D = _smooth_critic()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    a = rng.random((5, 1))
    params = {n: p.data.copy() for n, p in D.named_parameters()}

    def pen(p):
        return gm.gradient_penalty(D, x, y, a, params=p)

    g = cm.grad(pen)(params)
    h = 1e-6
    worst = 0.0
    for name, v in params.items():
        for idx in np.ndindex(v.shape):
            pp = {k: u.copy() for k, u in params.items()}
            pm = {k: u.copy() for k, u in params.items()}
            pp[name][idx] += h
            pm[name][idx] -= h
            fd = (float(pen(pp)) - float(pen(pm))) / (2 * h)
            worst = max(worst, abs(fd - g[name][idx]) / (abs(fd) + 1e-3))
    assert worst < 1e-5
    # the Tensor path (module parameters as leaves, backward()) gives the same gradient
    Dt = _smooth_critic()
    gm.gradient_penalty(Dt, x, y, a).backward()
    for n, p in Dt.named_parameters():
        # the last bias does not enter ∇ₓD: zero in the functional path, None for the tensor
        got = np.zeros_like(p.data) if p.grad is None else p.grad
        np.testing.assert_allclose(got, g[n], rtol=1e-9, atol=1e-12)
    assert np.all(g["4.bias"] == 0)


def test_clip_weights_and_input_gradient_norms_of_module():
    out = gm.clip_weights({"w": np.array([-1.0, 0.005, 2.0], dtype=np.float32)}, 0.01)["w"]
    assert out.dtype == np.float32 and out.tolist() == pytest.approx([-0.01, 0.005, 0.01])
    D = _smooth_critic()
    x = np.random.default_rng(0).normal(size=(4, 2))
    norms = gm.input_gradient_norms(D, x)
    assert norms.shape == (4,)
    pd = {n: p.data for n, p in D.named_parameters()}
    for i in range(4):
        gi = cm.grad(lambda v: cm.sum(nn.functional_call(D, pd, v)))(x[i:i + 1])
        assert norms[i] == pytest.approx(np.linalg.norm(gi))


# --- VAE pieces ----------------------------------------------------------------------------------

def test_gaussian_kl_closed_form_vs_monte_carlo():
    mu = np.array([[0.0, 0.0], [1.0, -0.5], [2.0, 0.3]])
    lv = np.array([[0.0, 0.0], [0.5, -1.0], [-2.0, 1.0]])
    closed = gm.gaussian_kl(mu, lv)
    assert closed[0] == 0.0
    est, se = gm.kl_monte_carlo(mu, lv, 200_000, rng=0)
    assert np.all(np.abs(est[1:] - closed[1:]) < 4 * se[1:])
    assert se[0] < 1e-12 and abs(est[0]) < 1e-12  # q = p: log q − log p = 0 for every z
    # the closed form's gradient: ∂/∂μ = μ, ∂/∂ log σ² = ½(σ² − 1)
    gmu, glv = cm.grad(lambda m, v: cm.sum(gm.gaussian_kl(m, v)), argnums=(0, 1))(mu, lv)
    np.testing.assert_allclose(gmu, mu)
    np.testing.assert_allclose(glv, 0.5 * (np.exp(lv) - 1))
    assert gm.gaussian_kl(mu.astype(np.float32), lv.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("f, exact", [
    (lambda z: z ** 2, lambda m, s: (2 * m, 2 * s)),                     # E = μ² + σ²
    (lambda z: 3 * z ** 2 - z + 1, lambda m, s: (6 * m - 1, 6 * s)),
    (cm.sin, lambda m, s: (math.cos(m) * math.exp(-s * s / 2),            # E = sin μ e^{−σ²/2}
                           -s * math.sin(m) * math.exp(-s * s / 2))),
])
def test_reparameterized_gradient_matches_exact(f, exact):
    mu, sigma = 0.7, 1.3
    g = gm.reparameterized_gradient(f, mu, sigma, 20_000, rng=0)
    z = g.z_scores(exact(mu, sigma))
    assert np.all(np.abs(z) < 4), z
    sf = gm.score_function_gradient(f, mu, sigma, 20_000, rng=0)
    assert np.all(np.abs(sf.z_scores(exact(mu, sigma))) < 4)


def test_reparameterized_gradient_has_less_variance_for_a_quadratic():
    f = lambda z: (z - 2.0) ** 2
    g = gm.reparameterized_gradient(f, 0.5, 1.0, 20_000, rng=0)
    sf = gm.score_function_gradient(f, 0.5, 1.0, 20_000, rng=0)
    assert np.all(sf.stderr > 2 * g.stderr)


def test_reparameterize_and_likelihoods():
    z = gm.reparameterize(np.array([1.0, -1.0]), np.log(np.array([4.0, 0.25])),
                          np.array([0.5, 2.0]))
    np.testing.assert_allclose(z, [2.0, 0.0])
    rng = np.random.default_rng(0)
    x = rng.random((3, 5))
    logits = rng.normal(size=(3, 5)) * 2
    p = _sigmoid(logits)
    naive = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=1)
    np.testing.assert_allclose(gm.bernoulli_log_likelihood(x, logits), naive, rtol=1e-12)
    assert np.all(np.isfinite(gm.bernoulli_log_likelihood(x, np.full((3, 5), 1e4))))
    m = rng.random((3, 5))
    np.testing.assert_allclose(gm.gaussian_log_likelihood(x, m, 0.3),
                               stats.norm.logpdf(x, m, 0.3).sum(axis=1), rtol=1e-12)


def test_elbo_pieces_and_bounds():
    d = gm.load_digits_split()
    model = gm.VAE(64, 4, hidden=32, rng=0)
    x = d.X_test[:20]
    eps = np.random.default_rng(0).standard_normal((20, 4))
    params = {n: p.data for n, p in model.named_parameters()}
    t = gm.elbo(model, x, eps, params=params)
    np.testing.assert_allclose(t.elbo, t.log_likelihood - t.kl)
    np.testing.assert_allclose(t.kl, gm.gaussian_kl(t.mu, t.log_var))
    z = gm.reparameterize(t.mu, t.log_var, eps)
    logits = nn.functional_call(model.decoder, {k[8:]: v for k, v in params.items()
                                                if k.startswith("decoder.")}, z)
    np.testing.assert_allclose(t.log_likelihood, gm.bernoulli_log_likelihood(x, logits))
    # the Tensor path records for backward()
    tt = gm.elbo(model, x, eps)
    (-cm.mean(tt.elbo)).backward()
    g = cm.grad(lambda p: -cm.mean(gm.elbo(model, x, eps, params=p).elbo))(params)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, g[n], rtol=1e-9, atol=1e-12)
    # ELBO ≤ importance-weighted bound (K = 200), both per image
    e = gm.evaluate_elbo(model, x, rng=1, n_samples=20)
    iw = gm.importance_weighted_bound(model, x, rng=2, k=200)
    assert iw > e.elbo
    assert e.elbo == pytest.approx(e.log_likelihood - e.kl)


# --- training ------------------------------------------------------------------------------------

def _mmd_to_data(samples, seed=5):
    return float(gm.mmd2(samples, RING(len(samples), seed), (0.1, 0.5)))


def test_gan_training_reduces_mmd_and_is_reproducible():
    kw = dict(steps=400, batch_size=128, hidden=32, rng=3, snapshot_steps=(0, 400),
              n_snapshot=500, dtype=np.float32)
    r = gm.train_gan(RING, **kw)
    before, after = _mmd_to_data(r.snapshots[0]), _mmd_to_data(r.snapshots[400])
    assert after < 0.5 * before
    assert r.snapshots[400].dtype == np.float32 and r.wall_time_s > 0
    assert len(r.history["d_loss"]) == 400 and np.all(np.isfinite(r.history["g_loss"]))
    r2 = gm.train_gan(RING, **kw)
    assert r.history["g_loss"] == r2.history["g_loss"]
    np.testing.assert_array_equal(r.sample(10, 0), r2.sample(10, 0))
    r3 = gm.train_gan(RING, **{**kw, "rng": 4})
    assert r3.history["g_loss"] != r.history["g_loss"]
    # the module holds the trained parameters
    z = np.random.default_rng(0).standard_normal((10, 2)).astype(np.float32)
    with cm.no_grad():
        np.testing.assert_allclose(r.generator(z).data, r.sample(10, 0), rtol=1e-6)


@pytest.mark.parametrize("mode", ["gp", "clip"])
def test_wgan_training_reduces_mmd(mode):
    kw = dict(mode=mode, steps=150, n_critic=3, batch_size=96, hidden=32, rng=0,
              snapshot_steps=(0, 150), n_snapshot=500, dtype=np.float32)
    if mode == "gp":
        kw.update(learning_rate=1e-3, critic_learning_rate=3e-3)
    else:
        kw.update(clip_value=0.1, learning_rate=2e-3)
    r = gm.train_wgan(RING, **kw)
    before, after = _mmd_to_data(r.snapshots[0]), _mmd_to_data(r.snapshots[150])
    assert after < 0.6 * before, (before, after)
    if mode == "clip":
        for p in r.discriminator.parameters():
            assert np.max(np.abs(p.data)) <= 0.1
    else:
        assert "gradient_penalty" in r.history
    r2 = gm.train_wgan(RING, **kw)
    assert r.history["w_estimate"] == r2.history["w_estimate"]


def test_wgan_chapter_sign_is_the_opposite_objective():
    kw = dict(steps=1, n_critic=1, batch_size=32, hidden=8, rng=0)
    a = gm.train_wgan(RING, **kw)
    b = gm.train_wgan(RING, sign="chapter", **kw)
    # same first batch: the chapter's critic loss is minus ours (plus the same penalty)
    assert a.history["w_estimate"][0] == pytest.approx(b.history["w_estimate"][0])
    pen = a.history["gradient_penalty"][0] * 10.0
    assert a.history["d_loss"][0] - pen == pytest.approx(-(b.history["d_loss"][0] - pen))


def test_vae_training_raises_elbo_and_is_reproducible():
    d = gm.load_digits_split(dtype=np.float32)
    kw = dict(latent_dim=4, hidden=64, epochs=6, batch_size=64, eval_every=3, rng=0,
              dtype=np.float32)
    r = gm.train_vae(d.X_train, d.X_test, **kw)
    h = r.history
    assert h["eval_epoch"] == [0, 3, 6]
    assert h["test_elbo"][-1] > h["test_elbo"][0] + 20  # nats per image
    assert h["train_objective"][-1] > h["train_objective"][0]
    assert r.sample(3, 0).shape == (3, 64) and r.sample(3, 0).dtype == np.float32
    mu, lv = r.posterior(d.X_test[:5])
    assert mu.shape == lv.shape == (5, 4) and mu.dtype == np.float32
    np.testing.assert_allclose(r.decode(mu), r.reconstruct(d.X_test[:5]), rtol=1e-6)
    rec = r.reconstruct(d.X_test[:50])
    assert np.mean((rec - d.X_test[:50]) ** 2) < np.mean((d.X_test[:50] - 0.3) ** 2)
    r2 = gm.train_vae(d.X_train, d.X_test, **kw)
    assert h["test_elbo"] == r2.history["test_elbo"]


# --- errors --------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"mmd2.*same number of columns.*\(5, 3\).*float64"):
        gm.mmd2(np.zeros((4, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"mmd2: bandwidth"):
        gm.mmd2(np.zeros((4, 2)), np.zeros((5, 2)), bandwidth=-1.0)
    with pytest.raises(ValueError, match=r"mmd2: x must have 2 dimension.*\(4,\)"):
        gm.mmd2(np.zeros(4), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"NaN"):
        gm.mmd2(np.full((4, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(TypeError, match=r"floating-point.*<U1"):
        gm.mode_coverage(np.array([["a", "b"]]), RING.centers, 0.1)
    with pytest.raises(ValueError, match=r"min_fraction"):
        gm.mode_coverage(np.zeros((3, 2)), RING.centers, 0.1, min_fraction=2.0)
    with pytest.raises(ValueError, match=r"generator_loss: kind.*'wasserstein'"):
        gm.generator_loss(np.zeros((2, 1)), "wasserstein")
    with pytest.raises(ValueError, match=r"gradient_penalty: alpha must have shape \(3, 1\)"):
        gm.gradient_penalty(lambda x: x, np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"gradient_penalty: real and fake"):
        gm.gradient_penalty(lambda x: x, np.zeros((3, 2)), np.zeros((4, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"train_gan: steps must be an integer >= 1, got 0"):
        gm.train_gan(RING, steps=0)
    with pytest.raises(ValueError, match=r"train_wgan: mode must be one of"):
        gm.train_wgan(RING, mode="spectral")
    with pytest.raises(TypeError, match=r"rng must be a numpy.random.Generator or an int"):
        gm.train_gan(RING, steps=1, rng=None)
    with pytest.raises(ValueError, match=r"snapshot_steps"):
        gm.train_gan(RING, steps=5, snapshot_steps=(10,))
    with pytest.raises(ValueError, match=r"Bernoulli likelihood needs x in \[0, 1\].*\(2, 64\)"):
        gm.train_vae(np.full((2, 64), 2.0), epochs=1)
    with pytest.raises(ValueError, match=r"train_vae: X_train must have 64 column|"
                                         r"train_vae: X_train must have 2 dimension"):
        gm.train_vae(np.zeros(64), epochs=1)
    with pytest.raises(ValueError, match=r"reparameterize: mu and eps must have the same shape"):
        gm.reparameterize(np.zeros(3), np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"sigma must be a finite positive number, got -1"):
        gm.reparameterized_gradient(cm.sin, 0.0, -1.0, 10, rng=0)
    with pytest.raises(ValueError, match=r"dtype must be float32 or float64, got int64"):
        gm.RingOfGaussians().sample(3, 0, dtype=np.int64)
    m = gm.VAE(64, 2, hidden=8, rng=0)
    with pytest.raises(ValueError, match=r"elbo: eps must have 2 column.*\(3, 5\)"):
        gm.elbo(m, np.zeros((3, 64)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"elbo: x must have 64 column.*\(3, 10\)"):
        gm.elbo(m, np.zeros((3, 10)), np.zeros((3, 2)))


@pytest.mark.parametrize("train", [gm.train_gan, gm.train_wgan])
@pytest.mark.parametrize(("name", "value"), [("b1", 1.0), ("b1", -0.1), ("b2", 1.5),
                                             ("b2", float("nan")), ("b1", "0.5"), ("b2", True)])
def test_bad_adam_betas_name_the_training_function(train, name, value):
    # checked at the entry, before any data is drawn or a network or an optimizer is built:
    # the error names the function the user called, not calcml.optim.adam
    def untouched(n, rng):
        raise AssertionError("sample_data was called before the betas were checked")

    fname = train.__name__
    with pytest.raises(ValueError, match=rf"^calcml\.generative\.{fname}: {name} must be a "
                                         rf"number in \[0, 1\), got {re.escape(repr(value))}$"):
        train(untouched, steps=1, batch_size=4, hidden=4, **{name: value})
    if train is gm.train_wgan:  # RMSprop ignores the betas; a bad one is still an error
        with pytest.raises(ValueError, match=rf"train_wgan: {name} must be a number in"):
            train(untouched, mode="clip", steps=1, batch_size=4, hidden=4, **{name: value})


def test_good_adam_betas_reach_the_optimizer():
    res = gm.train_gan(RING, steps=2, batch_size=8, hidden=4, b1=0.0, b2=np.float64(0.9))
    assert res.config["b1"] == 0.0 and res.config["b2"] == 0.9
    res = gm.train_wgan(RING, steps=1, n_critic=1, batch_size=8, hidden=4, b1=0, b2=0.5)
    assert res.config["b1"] == 0.0 and res.config["b2"] == 0.5


def test_degenerate_and_malformed_inputs_raise_clear_errors():
    # all pooled points equal: the median heuristic would divide by a zero bandwidth
    with pytest.raises(ValueError, match=r"mmd2: the median heuristic gives bandwidth 0"):
        gm.mmd2(np.zeros((5, 2)), np.zeros((5, 2)))
    assert np.isfinite(gm.mmd2(np.zeros((5, 2)), np.zeros((5, 2)), 1.0))
    with pytest.raises(ValueError, match=r"kl_monte_carlo: mu must have at least one axis"):
        gm.kl_monte_carlo(1.0, 0.0, 10, rng=0)
    est, se = gm.kl_monte_carlo(np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), 10,
                                rng=0)
    assert est.dtype == np.float32 and se.dtype == np.float32
    with pytest.raises(ValueError, match=r"train_gan: sample_data\(n, rng\) must return .*"
                                         r"\(2, d\), got shape \(2,\)"):
        gm.train_gan(lambda n, g: g.normal(size=n), steps=1, batch_size=4, hidden=4)
    with pytest.raises(ValueError, match=r"train_wgan: sample_data.*NaN|train_wgan: sample_data"):
        gm.train_wgan(lambda n, g: np.full((n, 2), np.nan), steps=1, batch_size=4, hidden=4)
    with pytest.raises(ValueError, match=r"score_function_gradient: f must act element-wise"):
        gm.score_function_gradient(lambda z: 1.0, 0.0, 1.0, 10, rng=0)
    with pytest.raises(ValueError, match=r"dtype must be float32 or float64, got 'nope'"):
        gm.RingOfGaussians().sample(3, 0, dtype="nope")


@pytest.mark.parametrize("module", ["data", "metrics", "gan", "vae"])
def test_docstring_examples(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"calcml.generative.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_negative_seeds_and_snapshot_counts_are_refused_by_name():
    from calcml import generative as gm

    def ring(n, rng):
        return rng.normal(size=(n, 2))

    with pytest.raises(ValueError, match="train_gan: an int seed must be >= 0"):
        gm.train_gan(ring, steps=2, rng=-1)
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="train_wgan: n_snapshot must be an integer >= 0"):
            gm.train_wgan(ring, steps=2, n_snapshot=bad)

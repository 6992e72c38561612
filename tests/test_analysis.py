"""Tests of ``cm.analysis``: L and μ from Hessian-vector products on known spectra and on
logistic regression, α = 1/L, the rates of section 9.1 predicted against measured runs, the SGD
bound over several seeds, and the Robbins–Monro conditions of the chapter's schedules."""

import numpy as np
import pytest

import calcml as cm
from calcml import analysis as an
from calcml.optimize import minimize

SPECTRA = {
    "spread": np.linspace(1.0, 10.0, 12),
    "ill_conditioned": np.geomspace(1e-2, 1e2, 15),
    "clustered_top": np.r_[1.0, 2.0, np.full(8, 50.0) - np.arange(8) * 1e-3, 50.1],
    "two": np.array([0.3, 7.0]),
}


# -- L and μ ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SPECTRA))
@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_L_on_known_spectra(name, method):
    q = an.make_quadratic(SPECTRA[name], rng=0)
    est = an.estimate_L(q, np.zeros(len(q.b)), method=method, tol=1e-10, max_iter=5000, rng=1)
    assert est.value == pytest.approx(q.L, rel=1e-6)
    assert est.which == "largest" and est.method == method
    lo, hi = est.interval
    assert lo <= q.L <= hi or abs(est.value - q.L) <= 1e-12 * q.L
    if method == "power" and name == "clustered_top":
        # λ₂/λ₁ = 50/50.1: the Rayleigh quotient converges like (λ₂/λ₁)^{2t}, the vector (and
        # so the residual certificate) only like (λ₂/λ₁)^t: the value is right, and the
        # estimate says honestly that the residual is not yet below tol·L
        assert not est.converged and est.residual > 1e-10 * q.L and est.n_iter == 5000
        return
    assert est.converged
    assert est.residual <= 1e-6 * q.L
    # the eigenvector is that of L: A v = L v
    np.testing.assert_allclose(q.A @ est.vector, q.L * est.vector, atol=1e-5 * q.L)


@pytest.mark.parametrize("name, method", [(n, m) for n in sorted(SPECTRA)
                                           for m in ("lanczos", "power")
                                           if (n, m) != ("ill_conditioned", "power")])
def test_mu_on_known_spectra(name, method):
    q = an.make_quadratic(SPECTRA[name], rng=2)
    est = an.estimate_mu(q, np.zeros(len(q.b)), method=method, tol=1e-10, rng=3)
    assert est.value == pytest.approx(q.mu, rel=1e-6)
    assert est.converged and est.which == "smallest"
    assert est.residual <= 1e-6 * q.L


def test_power_on_the_shift_is_slow_when_ill_conditioned_lanczos_is_not():
    # L·I − H has eigenvalues L − λ_i; power iteration converges at (L − λ_{n−1})/(L − μ),
    # 0.9999 for κ = 1e4 here, which is why Lanczos is estimate_mu's default
    q = an.make_quadratic(SPECTRA["ill_conditioned"], rng=2)
    slow = an.estimate_mu(q, np.zeros(15), method="power", L=q.L, tol=1e-10, max_iter=2000,
                          rng=3)
    fast = an.estimate_mu(q, np.zeros(15), method="lanczos", tol=1e-10, rng=3)
    assert not slow.converged and slow.n_hvp == 2000
    assert abs(slow.value - q.mu) > 1e-3 * q.mu
    assert fast.converged and fast.value == pytest.approx(q.mu, rel=1e-6) and fast.n_hvp < 200


def test_estimates_never_form_the_hessian(monkeypatch):
    import calcml.autodiff as ad

    def forbidden(*a, **k):
        raise AssertionError("the Hessian (or a Jacobian) was formed")

    monkeypatch.setattr(ad, "hessian", forbidden)
    monkeypatch.setattr(ad, "jacobian", forbidden)
    q = an.make_quadratic(np.linspace(1, 5, 30), rng=4)
    op = an.HessianOperator(q, np.zeros(30))
    est = an.estimate_L(q, np.zeros(30), rng=0)
    assert est.value == pytest.approx(5.0, rel=1e-6)
    v = np.random.default_rng(0).standard_normal(30)
    np.testing.assert_allclose(op.matvec(v), q.A @ v, rtol=1e-12, atol=1e-12)
    assert op.n_matvec == 1 and est.n_hvp >= est.n_iter


def test_estimates_on_a_pytree_and_with_extra_args():
    # f(p, s) = s·(½ aᵀDa + ½ c²·4): a block-diagonal Hessian with spectrum s·{1, 3, 4}
    D = np.diag([1.0, 3.0])

    def f(p, s):
        return s * (0.5 * p["a"] @ (D @ p["a"]) + 2.0 * p["c"] ** 2)

    x = {"a": np.array([0.3, -0.2]), "c": np.array(1.0)}
    assert an.estimate_L(f, x, 2.0, rng=0).value == pytest.approx(8.0, rel=1e-8)
    assert an.estimate_mu(f, x, 2.0, rng=0).value == pytest.approx(2.0, rel=1e-8)
    assert an.estimate_mu(f, x, 2.0, rng=0, method="power").value == pytest.approx(2.0, rel=1e-7)


def test_one_dimensional_and_float32():
    est = an.estimate_L(lambda x: 3.0 * x ** 2, 0.7)
    assert est.value == 6.0 and est.method == "exact" and est.residual == 0.0
    q = an.make_quadratic([1.0, 2.0, 4.0], rng=5, dtype=np.float32)
    e32 = an.estimate_L(q, np.zeros(3, np.float32), tol=1e-6, rng=0)
    assert e32.value == pytest.approx(4.0, rel=1e-5)
    m32 = an.estimate_mu(q, np.zeros(3, np.float32), tol=1e-6, rng=0)
    assert m32.value == pytest.approx(1.0, rel=1e-5)


def test_chapter_examples_constants():
    # f = x²: L = μ = 2; f = x² + y²: Hessian 2I
    assert an.estimate_L(lambda x: x ** 2, 1.0).value == 2.0
    p = np.array([1.0, -1.0])
    assert an.estimate_L(lambda v: cm.sum(v ** 2), p, rng=0).value == pytest.approx(2.0, rel=1e-12)
    assert an.estimate_mu(lambda v: cm.sum(v ** 2), p, rng=0).value == pytest.approx(2.0, rel=1e-12)
    assert an.recommend_learning_rate(lambda v: cm.sum(v ** 2), p, rng=0) == pytest.approx(0.5)


def test_mu_of_a_convex_but_not_strongly_convex_quadratic_is_zero():
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    A = (Q * np.array([0.0, 0.0, 0.5, 2.0, 4.0])) @ Q.T

    def f(x):
        return 0.5 * x @ (A @ x)

    for method in ("lanczos", "power"):
        est = an.estimate_mu(f, np.zeros(5), method=method, rng=0)
        assert abs(est.value) < 1e-10 and est.converged


def test_recommend_learning_rate():
    q = an.make_quadratic([1.0, 4.0, 9.0], rng=6)
    assert an.recommend_learning_rate(q, np.zeros(3), rng=0) == pytest.approx(1 / 9, rel=1e-8)
    assert an.recommend_learning_rate(L=4.0) == 0.25
    assert an.recommend_learning_rate(q, np.zeros(3), rule="2/(L+mu)", rng=0) == pytest.approx(
        0.2, rel=1e-8)
    with pytest.raises(ValueError, match="give L"):
        an.recommend_learning_rate()
    with pytest.raises(ValueError, match="L > 0"):
        an.recommend_learning_rate(L=-1.0)


# -- logistic regression -------------------------------------------------------------------------

def logistic_problem(n=300, seed=7):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)) * np.array([1.0, 2.0, 0.5, 1.5]) + np.array([0.5, 0, 0, 1])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ np.array([1.0, -1.0, 2.0, 0.3]))))).astype(float)
    A = np.hstack([X, np.ones((n, 1))])
    return X, y, A


def logistic_loss(p, X, y):
    z = X @ p["w"] + p["b"]
    return cm.mean(cm.softplus(z) - y * z)


def test_logistic_L_against_the_bound():
    X, y, A = logistic_problem()
    n = len(y)
    bound = np.linalg.eigvalsh(A.T @ A).max() / (4 * n)
    zero = {"w": np.zeros(4), "b": np.array(0.0)}
    # at w = 0 every σ'(z_i) = 1/4: the Hessian is AᵀA/(4n) and L reaches the bound exactly
    for method in ("power", "lanczos"):
        est = an.estimate_L(logistic_loss, zero, X, y, method=method, tol=1e-10, rng=0)
        assert est.value == pytest.approx(bound, rel=1e-6)
    # elsewhere σ' < 1/4: the local L is below the bound, and matches the dense Hessian
    w = {"w": np.array([1.0, -1.0, 2.0, 0.3]), "b": np.array(0.1)}
    est = an.estimate_L(logistic_loss, w, X, y, tol=1e-10, rng=0)
    z = A @ np.r_[w["w"], w["b"]]
    s = 1 / (1 + np.exp(-z))
    H = (A * (s * (1 - s))[:, None]).T @ A / n
    assert est.value == pytest.approx(np.linalg.eigvalsh(H).max(), rel=1e-6)
    assert est.value < bound
    mu = an.estimate_mu(logistic_loss, w, X, y, rng=0)
    assert mu.value == pytest.approx(np.linalg.eigvalsh(H).min(), rel=1e-6)


def test_logistic_convex_rate_with_alpha_one_over_bound():
    X, y, A = logistic_problem()
    bound = np.linalg.eigvalsh(A.T @ A).max() / (4 * len(y))
    f = lambda p: logistic_loss(p, X, y)
    x0 = {"w": np.zeros(4), "b": np.array(0.0)}
    ref = minimize(f, x0, learning_rate=1 / bound, tol=1e-12, stop="gradient", max_iter=100_000)
    assert ref.success
    run = minimize(f, x0, learning_rate=1 / bound, tol=None, max_iter=200)
    chk = an.check_convex_rate(run, ref.x, ref.fun, L=bound)
    assert chk.applies and chk.holds and chk.holds_alpha
    assert chk.worst_ratio < 1.0
    assert chk.gaps[-1] < chk.predicted[-1]


# -- the linear rate -----------------------------------------------------------------------------

def test_linear_rate_predicted_vs_observed():
    q = an.make_quadratic(np.linspace(1.0, 10.0, 8), rng=0)
    L = an.estimate_L(q, np.zeros(8), rng=0).value
    mu = an.estimate_mu(q, np.zeros(8), rng=0).value
    alpha = an.recommend_learning_rate(L=L)
    run = minimize(q, np.zeros(8), learning_rate=alpha, tol=None, max_iter=300)
    chk = an.check_linear_rate(run, q.x_star, L=L, mu=mu)
    assert chk.predicted_factor == pytest.approx(0.9, rel=1e-6)
    assert chk.exact_factor == pytest.approx(chk.predicted_factor)
    assert chk.chapter_applies and chk.holds and chk.holds_exact
    # observed ≤ predicted, and tight: the error along μ's eigenvector decays at 1 − αμ exactly
    assert chk.observed_factor <= chk.predicted_factor * (1 + 1e-9)
    assert chk.observed_factor > 0.99 * chk.predicted_factor
    assert np.all(chk.errors <= chk.predicted * (1 + 1e-9) + chk.floor)


def test_linear_rate_fails_beyond_two_over_L_plus_mu():
    # α = 0.19 > 2/(L+μ) = 0.1818 (L = 10, μ = 1): the factor is αL − 1 = 0.9 > 1 − αμ = 0.81
    q = an.make_quadratic([1.0, 4.0, 10.0], rng=1)
    run = minimize(q, np.zeros(3), learning_rate=0.19, tol=None, max_iter=200)
    chk = an.check_linear_rate(run, q.x_star, L=10.0, mu=1.0)
    assert not chk.chapter_applies
    assert not chk.holds and chk.holds_exact
    assert chk.exact_factor == pytest.approx(0.9) and chk.predicted_factor == pytest.approx(0.81)
    assert chk.predicted_factor < chk.observed_factor <= chk.exact_factor * (1 + 1e-9)
    assert an.contraction_factor(0.19, 10.0, 1.0) == pytest.approx(0.9)
    assert an.contraction_factor(2 / 11, 10.0, 1.0) == pytest.approx(9 / 11)


@pytest.mark.parametrize("alpha", [0.05, 0.25, 0.5])
def test_chapter_example_rate_is_exactly_one_minus_two_alpha(alpha):
    # f = x² + y²: x_k = (1 − 2α)^k x₀ exactly, so the observed factor is 1 − 2α = 1 − αμ
    run = minimize(lambda v: cm.sum(v ** 2), np.array([3.0, -4.0]), learning_rate=alpha,
                   tol=None, max_iter=30)
    chk = an.check_linear_rate(run, np.zeros(2), L=2.0, mu=2.0)
    if alpha < 0.5:
        assert chk.observed_factor == pytest.approx(1 - 2 * alpha, rel=1e-10)
        assert chk.mean_factor == pytest.approx(1 - 2 * alpha, rel=1e-10)
    else:  # α = 1/L = 1/2 lands on the minimum in one step
        assert chk.observed_factor == 0.0 and chk.errors[1] == 0.0
    assert chk.holds and chk.holds_exact


# -- the convex rate -----------------------------------------------------------------------------

def degenerate_quadratic():
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    A = (Q * np.array([0.0, 0.0, 0.5, 2.0, 4.0])) @ Q.T
    A = 0.5 * (A + A.T)
    b = A @ rng.standard_normal(5)  # in the range of A: f is bounded below
    x_star = np.linalg.lstsq(A, b, rcond=None)[0]  # the minimiser GD from 0 converges to
    return (lambda x: 0.5 * x @ (A @ x) - b @ x), x_star


def test_convex_rate_on_a_degenerate_quadratic():
    f, x_star = degenerate_quadratic()
    f_star = float(f(x_star))
    L = an.estimate_L(f, np.zeros(5), rng=0).value
    assert L == pytest.approx(4.0, rel=1e-6)
    run = minimize(f, np.zeros(5), learning_rate=1 / L, tol=None, max_iter=200)
    chk = an.check_convex_rate(run, x_star, f_star, L=L)
    assert chk.applies and chk.holds and chk.holds_alpha
    assert np.all(chk.gaps[1:] <= chk.predicted[1:] + 1e-12)
    assert chk.R == pytest.approx(np.linalg.norm(x_star))
    # the same from iterates and f rather than a result
    chk2 = an.check_convex_rate(run.trajectory, x_star, L=L, learning_rate=1 / L, f=f)
    np.testing.assert_allclose(chk2.gaps, chk.gaps, atol=1e-14)


def test_chapter_convex_form_needs_alpha_one_over_L():
    # with α = L⁻¹/10 the theorem gives R²/(2αk), ten times the chapter's L R²/(2k), which fails
    f, x_star = degenerate_quadratic()
    run = minimize(f, np.zeros(5), learning_rate=0.025, tol=None, max_iter=200)
    chk = an.check_convex_rate(run, x_star, float(f(x_star)), L=4.0)
    assert chk.applies and chk.holds_alpha and not chk.holds
    assert chk.worst_ratio > 1.0


def test_analyze_gradient_descent():
    q = an.make_quadratic([0.5, 1.0, 2.0, 5.0], rng=8)
    res = an.analyze_gradient_descent(q, np.zeros(4), n_iter=100)
    assert res.L.value == pytest.approx(5.0, rel=1e-6)
    assert res.mu.value == pytest.approx(0.5, rel=1e-6)
    assert res.learning_rate == pytest.approx(0.2, rel=1e-6)
    np.testing.assert_allclose(res.x_star, q.x_star, atol=1e-10)
    assert res.linear.holds and res.convex.holds
    assert res.linear.observed_factor <= res.linear.predicted_factor * (1 + 1e-9)
    d = res.to_dict()
    assert d["linear"]["predicted_factor"] == pytest.approx(0.9, rel=1e-6)


# -- SGD -------------------------------------------------------------------------------------------

def linreg(n=200, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    return X, y


def half_mse(w, batch):
    X, y = batch
    return 0.5 * cm.mean((X @ w - y) ** 2)


def test_gradient_variance_is_exact():
    X, y = linreg(n=60, d=3, seed=1)
    w = np.array([0.3, -0.2, 0.1])
    full = X.T @ (X @ w - y) / 60
    per = X * (X @ w - y)[:, None]
    s2 = np.mean(np.sum((per - full) ** 2, axis=1))
    assert an.gradient_variance(half_mse, w, (X, y)) == pytest.approx(s2, rel=1e-10)
    assert an.gradient_variance(half_mse, w, (X, y), 4) == pytest.approx(s2 / 4, rel=1e-10)
    # without replacement: the finite-population correction, checked by Monte Carlo
    rng = np.random.default_rng(0)
    devs = [np.sum((per[rng.choice(60, 20, replace=False)].mean(0) - full) ** 2)
            for _ in range(20_000)]
    pred = an.gradient_variance(half_mse, w, (X, y), 20, sampling="shuffle")
    assert pred == pytest.approx(s2 / 20 * 40 / 59, rel=1e-10)
    assert np.mean(devs) == pytest.approx(pred, rel=0.05)
    with pytest.raises(ValueError, match="mean"):
        an.gradient_variance(lambda w, b: 0.5 * cm.sum((b[0] @ w - b[1]) ** 2), w, (X, y))


def test_sgd_bound_holds_on_its_horizon():
    X, y = linreg()
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    chk = an.check_sgd_bound(half_mse, np.zeros(5), w_star, (X, y), learning_rate=0.05,
                             batch_size=1, n_iter=400, seeds=8)
    assert chk.L == pytest.approx(np.linalg.eigvalsh(X.T @ X / 200).max(), rel=1e-6)
    assert chk.sigma2 >= chk.sigma2_star > 0
    assert chk.holds_chapter and chk.holds_chapter_avg and chk.holds_standard
    assert chk.worst_ratio < 1.0
    assert chk.mean_gap[-1] < 0.05 * chk.mean_gap[0]
    # the chapter's bound would only meet the noise plateau far beyond this horizon
    assert chk.k_chapter_fails > chk.n_iter


def test_sgd_bound_meets_the_noise_floor():
    # a larger constant step: SGD plateaus at a gap of order ασ², which the chapter's
    # (R² + σ²)/(2αk) → 0 must cross, while the textbook bound (with its floor) still holds
    X, y = linreg()
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    chk = an.check_sgd_bound(half_mse, np.zeros(5), w_star, (X, y), learning_rate=0.2,
                             batch_size=1, n_iter=1200, seeds=6)
    assert chk.holds_standard
    assert not chk.holds_chapter
    assert chk.k_chapter_fails < chk.n_iter
    k_first = int(np.argmax(chk.mean_gap[1:] > chk.chapter_bound[1:])) + 1
    assert chk.plateau > 0 and k_first > 50


def test_sgd_with_a_decaying_schedule_beats_the_constant_floor():
    X, y = linreg()
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    f_star = float(half_mse(w_star, (X, y)))
    gaps = {}
    for name, lr in {"constant": 0.2, "decay": cm.optim.inverse_time_decay(0.2, 0.02)}.items():
        finals = [minimize(half_mse, np.zeros(5), "sgd", learning_rate=lr, data=(X, y),
                           batch_size=1, max_iter=1500, tol=None, rng=s).fun - f_star
                  for s in range(3)]
        gaps[name] = np.mean(finals)
    assert gaps["decay"] < 0.05 * gaps["constant"]


# -- Robbins–Monro -------------------------------------------------------------------------------

def test_robbins_monro_on_the_chapter_schedules():
    const = an.robbins_monro(cm.optim.constant(0.1))
    assert const.exponent == 0.0 and const.sum_diverges and not const.sum_sq_converges
    assert not const.satisfied
    np.testing.assert_allclose(const.partial_sums, 0.1 * const.checkpoints, rtol=1e-9)

    decay = an.robbins_monro(cm.optim.inverse_time_decay(0.1, 0.01))
    assert decay.exponent == pytest.approx(1.0, abs=1e-6)
    assert decay.sum_diverges and decay.sum_sq_converges and decay.satisfied
    # evidence: Σα grows by ≈ (α₀/β)·ln 10 a decade, Σα² levels off at ≈ α₀²/β
    steps = np.diff(decay.partial_sums)
    assert steps[-1] == pytest.approx(10 * np.log(10), rel=0.01)
    assert decay.partial_sums_sq[-1] == pytest.approx(0.1 ** 2 / 0.01 + 0.1 ** 2 / 2, rel=0.01)

    sqrt = an.robbins_monro(cm.optim.inverse_sqrt(0.1))
    assert sqrt.exponent == pytest.approx(0.5, abs=1e-6)
    assert sqrt.sum_diverges and not sqrt.sum_sq_converges and not sqrt.satisfied
    # Σα² = α₀² H_N grows like α₀² ln N: by α₀² ln 10 per decade
    assert np.diff(sqrt.partial_sums_sq)[-1] == pytest.approx(0.01 * np.log(10), rel=1e-3)


def test_robbins_monro_other_schedules_and_partial_sums():
    fast = an.robbins_monro(cm.optim.exponential_decay(0.1, 0.999), horizon=10**5)
    assert fast.exponent == np.inf and not fast.sum_diverges and not fast.satisfied
    assert fast.partial_sums[-1] == pytest.approx(100.0, rel=1e-3)  # α₀/(1 − 0.999)
    # a slow 1/(1 + βk) looks constant on a short window; the far horizon still reads p = 1
    slow = an.robbins_monro(lambda k: 0.1 / (1 + 1e-6 * k), horizon=1000)
    assert slow.satisfied and slow.exponent == pytest.approx(1.0, abs=1e-3)
    # a scalar-only schedule (math on Python ints) is evaluated term by term
    import math

    scalar = an.robbins_monro(lambda k: 0.5 / math.sqrt(k + 1) ** 1.5, horizon=1000)
    assert scalar.satisfied and scalar.exponent == pytest.approx(0.75, abs=1e-6)
    k = np.arange(1000)
    np.testing.assert_allclose(scalar.partial_sums[-1], np.sum(0.5 / (k + 1) ** 0.75),
                               rtol=1e-12)
    assert [row[0] for row in scalar.table()] == [10, 100, 1000]
    assert an.robbins_monro(0.1).sum_sq_converges is False


def test_default_seeds_make_estimates_and_runs_repeat_exactly():
    # No OS entropy behind a default: two calls give bit-identical results.
    A = np.diag([1.0, 3.0, 10.0])
    f = lambda x: 0.5 * (x @ (A @ x))  # noqa: E731
    x0 = np.ones(3)
    for est in (cm.analysis.estimate_L, cm.analysis.estimate_mu):
        a, b = est(f, x0), est(f, x0)
        assert a.value == b.value and np.array_equal(a.vector, b.vector)
    q1, q2 = cm.analysis.make_quadratic([1.0, 4.0]), cm.analysis.make_quadratic([1.0, 4.0])
    assert np.array_equal(q1.A, q2.A) and np.array_equal(q1.b, q2.b)
    X = np.random.default_rng(1).normal(size=(40, 2))
    y = X @ np.array([1.0, -2.0])

    def loss(w, batch):
        Xb, yb = batch
        return cm.mean((Xb @ w - yb) ** 2)

    runs = [cm.optimize.minimize(loss, np.zeros(2), "sgd", learning_rate=0.05, data=(X, y),
                                 batch_size=8, max_iter=30) for _ in range(2)]
    assert np.array_equal(runs[0].x, runs[1].x)


# -- regressions: indefinite and zero Hessians, Robbins–Monro edge cases -------------------------

@pytest.mark.parametrize("diag", [[2.0, -10.0, 1.0], [-10.0, -9.0, -1.0], [-3.0, 3.0, 1.0]])
def test_power_estimates_on_indefinite_and_negative_hessians(diag):
    # the eigenvalue largest in magnitude is negative (or ±ρ): power iteration alone would
    # report it as L, and L·I − H with that L as a shift is not ⪰ 0, so μ came out wrong
    H = np.diag(diag)
    f = lambda x: 0.5 * cm.sum(x * (H @ x))  # noqa: E731
    lam_max, lam_min = max(diag), min(diag)
    L = an.estimate_L(f, np.ones(3), method="power", rng=0)
    assert L.value == pytest.approx(lam_max, rel=1e-7) and L.converged
    np.testing.assert_allclose(H @ L.vector, lam_max * L.vector, atol=1e-6)
    assert L.n_hvp >= L.n_iter and L.residual <= 1e-6
    mu = an.estimate_mu(f, np.ones(3), method="power", rng=0)
    assert mu.value == pytest.approx(lam_min, rel=1e-7) and mu.converged
    np.testing.assert_allclose(H @ mu.vector, lam_min * mu.vector, atol=1e-6)
    # the same as Lanczos
    assert L.value == pytest.approx(an.estimate_L(f, np.ones(3), method="lanczos").value)
    assert mu.value == pytest.approx(an.estimate_mu(f, np.ones(3)).value)
    # an EigenEstimate passed as L is used as an upper bound (value + residual)
    mu2 = an.estimate_mu(f, np.ones(3), method="power", L=L, rng=1)
    assert mu2.value == pytest.approx(lam_min, rel=1e-7)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_zero_hessian_gives_zero_curvature(method):
    # a linear f: H = 0, so H v0 = 0 and ARPACK used to fail with "starting vector is zero"
    f = lambda x: cm.sum(x)  # noqa: E731
    for est in (an.estimate_mu(f, np.ones(3), method=method),
                an.estimate_L(f, np.ones(3), method=method)):
        assert est.value == 0.0 and est.residual == 0.0 and est.converged
        assert est.method == method and est.n_hvp >= 1
        assert np.linalg.norm(est.vector) == pytest.approx(1.0)


def test_robbins_monro_sees_log_factors():
    # 1/(k ln k): Σα = ∞ (Bertrand, q = 1), though the local exponent at 1e14 reads 1.03
    klogk = an.robbins_monro(lambda k: 1 / ((k + 2) * np.log(k + 2)), horizon=10**4)
    assert klogk.exponents[10**14] > 1.02  # what a plain exponent would decide on
    assert klogk.exponent == pytest.approx(1.0, abs=1e-6)
    assert klogk.log_exponent == pytest.approx(1.0, abs=1e-6)
    assert klogk.sum_diverges and klogk.sum_sq_converges and klogk.satisfied
    # 1/(k ln² k): Σα < ∞ (q = 2)
    klog2k = an.robbins_monro(lambda k: 1 / ((k + 2) * np.log(k + 2) ** 2), horizon=10**4)
    assert klog2k.log_exponent == pytest.approx(2.0, abs=1e-6)
    assert not klog2k.sum_diverges and not klog2k.satisfied
    # 1/(√k ln^{1/4} k): α² = 1/(k ln^{1/2} k), whose sum diverges
    sq = an.robbins_monro(lambda k: 1 / (np.sqrt(k + 2) * np.log(k + 2) ** 0.25), horizon=10**4)
    assert sq.exponent == pytest.approx(0.5, abs=1e-6) and sq.log_exponent == pytest.approx(0.25)
    assert sq.sum_diverges and not sq.sum_sq_converges and not sq.satisfied
    # a tail still in transition (βk ≈ 1 at 1e12) is not mistaken for a log factor
    slow = an.robbins_monro(lambda k: 0.1 / (1 + 1e-12 * k), horizon=100)
    assert slow.log_exponent == 0.0 and slow.satisfied
    assert slow.to_dict()["log_exponent"] == 0.0


def test_robbins_monro_refuses_bad_input():
    with pytest.raises(ValueError, match=r"calcml\.analysis\.robbins_monro: the learning rate "
                                         r"must be >= 0, got α_k = -0\.1 at k = 0"):
        an.robbins_monro(lambda k: -0.1 / (1 + k))
    # a sign flip beyond the exact horizon, seen by the exponent probes
    with pytest.raises(ValueError, match=r"robbins_monro: .* >= 0, .* at k = 1000000000$"):
        an.robbins_monro(lambda k: 0.1 if k < 10**9 else -0.1, horizon=100)
    with pytest.raises(ValueError, match=r"calcml\.analysis\.robbins_monro: exponent_horizon "
                                         r"must be at least 10000 .*got 50$"):
        an.robbins_monro(lambda k: 0.1 / (1 + k), exponent_horizon=50)
    assert an.robbins_monro(lambda k: 0.1 / (1 + k), horizon=100,
                            exponent_horizon=10**4).sum_diverges
    for bad in ("abc", None, [0.1]):
        with pytest.raises(TypeError, match=r"calcml\.analysis\.robbins_monro: schedule must "
                                            r"be a callable"):
            an.robbins_monro(bad)
    with pytest.raises(TypeError, match=r"robbins_monro: the schedule must return a real "
                                        r"number, got 'x' at k = 0"):
        an.robbins_monro(lambda k: "x", horizon=100)
    with pytest.raises(ValueError, match=r"robbins_monro: tol must be"):
        an.robbins_monro(0.1, tol=float("nan"))

"""Tests of ``cm.optimize.minimize``: the chapter's examples, stopping rules, every optimizer,
stochastic objectives, pytrees, dtypes, the non-finite guard, and agreement with scikit-learn
and least squares."""

import math

import numpy as np
import pytest

import calcml as cm
from calcml.optimize import METHODS, NonFiniteLossError, OptimizeResult, minimize


def quad_ex1(x):
    """Chapter 9.1, example 1: f(x) = x²."""
    return x ** 2


def quad_ex2(p):
    """Chapter 9.1, example 2: f(x, y) = x² + y²."""
    return cm.sum(p ** 2)


def linreg_data(n=200, d=5, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    y = X @ w + noise * rng.standard_normal(n)
    return X, y


def mse(w, batch):
    X, y = batch
    return 0.5 * cm.mean((X @ w - y) ** 2)


# -- the chapter's examples ------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.45, 0.75])
def test_example1_iterates_are_closed_form(alpha):
    res = minimize(quad_ex1, 2.0, "gd", learning_rate=alpha, max_iter=40, tol=None)
    k = np.arange(41)
    np.testing.assert_allclose(res.trajectory, 2.0 * (1 - 2 * alpha) ** k, rtol=1e-12,
                               atol=1e-300)
    assert res.nit == 40 and res.success
    np.testing.assert_allclose(res.losses, res.trajectory ** 2, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(res.grad_norms, np.abs(2 * res.trajectory), rtol=1e-12,
                               atol=1e-300)


def test_example2_iterates_are_closed_form():
    alpha, x0 = 0.1, np.array([3.0, -1.5])
    res = minimize(quad_ex2, x0, "gd", learning_rate=alpha, max_iter=30, tol=None)
    expected = x0[None, :] * (1 - 2 * alpha) ** np.arange(31)[:, None]
    assert res.trajectory.shape == (31, 2)
    np.testing.assert_allclose(res.trajectory, expected, rtol=1e-12)
    np.testing.assert_allclose(res.update_norms,
                               2 * alpha * np.linalg.norm(expected[:-1], axis=1), rtol=1e-12)


# -- stopping rules --------------------------------------------------------------------------------

def test_stop_on_update_norm_matches_prediction():
    # f = x²: ‖x_{k} − x_{k−1}‖ = 2α|x₀| r^{k−1}, r = 1 − 2α; stop after the first update < tol.
    alpha, x0, tol = 0.1, 2.0, 1e-6
    r = 1 - 2 * alpha
    expected = next(k for k in range(1, 10_000) if 2 * alpha * x0 * r ** (k - 1) < tol)
    res = minimize(quad_ex1, x0, learning_rate=alpha, tol=tol, stop="update")
    assert res.success and res.status == 0
    assert res.nit == expected
    assert res.update_norms[-1] < tol <= res.update_norms[-2]
    assert "‖x_" in res.message and str(expected) in res.message


def test_stop_on_gradient_norm_matches_prediction():
    # ‖∇f(x_k)‖ = 2|x₀| r^k: stop at the first k with it < tol, before updating.
    alpha, x0, tol = 0.1, 2.0, 1e-6
    r = 1 - 2 * alpha
    expected = next(k for k in range(10_000) if 2 * x0 * r ** k < tol)
    res = minimize(quad_ex1, x0, learning_rate=alpha, tol=tol, stop="gradient")
    assert res.success and res.nit == expected
    assert res.grad_norms[-1] < tol
    assert np.all(res.grad_norms[:-1] >= tol)
    # the two rules give different counts here: the update is α times the gradient
    res_u = minimize(quad_ex1, x0, learning_rate=alpha, tol=tol, stop="update")
    assert res_u.nit < res.nit


def test_max_iter_reached_is_not_success():
    res = minimize(quad_ex1, 2.0, learning_rate=0.01, tol=1e-12, max_iter=5)
    assert not res.success and res.status == 1 and res.nit == 5
    assert "max_iter" in res.message
    res = minimize(quad_ex1, 2.0, learning_rate=0.01, tol=None, max_iter=5)
    assert res.success and res.nit == 5


def _same_run(a, b):
    assert (a.nit, a.nfev, a.success, a.status, a.message) == (
        b.nit, b.nfev, b.success, b.status, b.message)
    for key in ("trajectory", "losses", "grad_norms", "update_norms", "x", "jac"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a.fun == b.fun


def test_gradient_rule_met_at_max_iter_is_success():
    # the free run stops at x_K; capping max_iter at K must give the same, successful run
    x0, tol = np.array([1.0, -2.0]), 1e-3
    free = minimize(quad_ex2, x0, learning_rate=0.1, tol=tol, stop="gradient")
    assert free.success and free.status == 0 and free.nit == 38
    capped = minimize(quad_ex2, x0, learning_rate=0.1, tol=tol, stop="gradient",
                      max_iter=free.nit)
    assert capped.grad_norms[-1] < tol
    assert capped.success and capped.status == 0 and "terminated successfully" in capped.message
    _same_run(capped, free)
    assert len(capped.trajectory) == len(capped.losses) == len(capped.grad_norms) == 39
    assert len(capped.update_norms) == 38 and capped.nfev == 39
    # one update short, the rule does not hold yet: max_iter is reported
    short = minimize(quad_ex2, x0, learning_rate=0.1, tol=tol, stop="gradient",
                     max_iter=free.nit - 1)
    assert short.grad_norms[-1] >= tol and not short.success and short.status == 1
    # starting at the minimiser with no updates allowed: converged at x_0
    res = minimize(quad_ex2, np.zeros(2), stop="gradient", max_iter=0)
    assert res.success and res.status == 0 and res.nit == 0 and res.nfev == 1
    assert res.losses.shape == res.grad_norms.shape == (1,) and res.update_norms.shape == (0,)
    assert res.trajectory.shape == (1, 2)
    # a mini-batch run: the final point's test is on all the data (its gradient is exactly 0)
    X, y = linreg_data(n=8, d=2, noise=0.0)
    w = np.linalg.lstsq(X, y, rcond=None)[0]
    res = minimize(mse, w, "sgd", data=(X, y), batch_size=2, learning_rate=1e-12, tol=1e-6,
                   stop="gradient", max_iter=0)
    assert res.success and res.status == 0


def test_update_rule_met_at_max_iter_is_success():
    x0, tol = np.array([1.0, -2.0]), 1e-3
    free = minimize(quad_ex2, x0, learning_rate=0.1, tol=tol, stop="update")
    assert free.success and free.update_norms[-1] < tol
    capped = minimize(quad_ex2, x0, learning_rate=0.1, tol=tol, stop="update",
                      max_iter=free.nit)
    _same_run(capped, free)
    short = minimize(quad_ex2, x0, learning_rate=0.1, tol=tol, stop="update",
                     max_iter=free.nit - 1)
    assert not short.success and short.status == 1
    # no update, nothing to test: the update rule cannot hold
    res = minimize(quad_ex2, np.zeros(2), stop="update", max_iter=0)
    assert not res.success and res.status == 1 and res.nit == 0


@pytest.mark.parametrize("tol", ["a", float("nan"), float("inf"), -1e-3, True, [1e-3],
                                 1 + 0j])
def test_bad_tol_is_refused(tol):
    with pytest.raises(ValueError, match=r"^minimize: tol must be a finite non-negative "
                                         r"number or None, got "):
        minimize(quad_ex1, 1.0, tol=tol)


@pytest.mark.parametrize("tol", [0, 0.0, 1e-3, np.float32(1e-3), np.int64(0)])
def test_good_tol_is_accepted(tol):
    res = minimize(quad_ex1, 1.0, learning_rate=0.1, tol=tol, max_iter=5)
    assert res.nit <= 5 and math.isfinite(res.fun)


@pytest.mark.parametrize("max_iter", [10.0, 2.7, "5", True, -1, None])
def test_bad_max_iter_is_refused(max_iter):
    with pytest.raises(ValueError, match=r"^minimize: max_iter must be a non-negative "
                                         r"integer, got "):
        minimize(quad_ex1, 1.0, max_iter=max_iter)


@pytest.mark.parametrize("batch_size", [2.7, 2.0, "2", True, 0, -1])
def test_bad_batch_size_is_refused(batch_size):
    data = (np.ones((4, 2)), np.ones(4))
    with pytest.raises(ValueError, match=r"^minimize: batch_size must be a positive integer "
                                         r"or None, got "):
        minimize(mse, np.zeros(2), "sgd", data=data, batch_size=batch_size)


def test_integer_batch_size_is_accepted():
    X, y = linreg_data(n=8, d=2)
    for batch_size in (2, np.int64(2)):
        res = minimize(mse, np.zeros(2), "sgd", data=(X, y), batch_size=batch_size,
                       learning_rate=0.1, tol=None, max_iter=3)
        assert res.nit == 3


def test_result_arrays_are_consistent():
    res = minimize(quad_ex2, np.array([1.0, 2.0]), learning_rate=0.2, tol=1e-9)
    assert isinstance(res, OptimizeResult)
    assert len(res.trajectory) == len(res.losses) == len(res.grad_norms) == res.nit + 1
    assert len(res.update_norms) == res.nit
    np.testing.assert_allclose(res.losses, [float(quad_ex2(x)) for x in res.trajectory])
    np.testing.assert_allclose(res.update_norms,
                               np.linalg.norm(np.diff(res.trajectory, axis=0), axis=1))
    assert res.fun == res.losses[-1] and res.x is res.trajectory[-1] or np.array_equal(
        res.x, res.trajectory[-1])
    assert res.nfev == res.nit + 1
    assert res["nit"] == res.nit and "trajectory" in repr(res)


def test_callback_can_stop_the_run():
    seen = []

    def cb(info):
        seen.append((info.nit, info.update_norm))
        return info.nit >= 3

    res = minimize(quad_ex1, 2.0, learning_rate=0.1, callback=cb)
    assert [s[0] for s in seen] == [1, 2, 3]
    assert res.nit == 3 and res.status == 2 and not res.success

    def cb2(info):
        raise StopIteration

    assert minimize(quad_ex1, 2.0, learning_rate=0.1, callback=cb2).nit == 1


def test_progress_bar(capsys):
    res = minimize(quad_ex1, 2.0, learning_rate=0.1, max_iter=50, tol=None, progress=True)
    err = capsys.readouterr().err
    assert "minimize (gd)" in err
    quiet = minimize(quad_ex1, 2.0, learning_rate=0.1, max_iter=50, tol=None)
    assert "minimize" not in capsys.readouterr().err
    np.testing.assert_array_equal(res.trajectory, quiet.trajectory)


# -- every optimizer -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["gd", "sgd", "momentum", "nesterov", "adam", "rmsprop",
                                    "adagrad"])
def test_every_method_converges_on_a_quadratic(method):
    q = cm.analysis.make_quadratic([1.0, 3.0, 5.0], rng=1)
    # RMSprop's step α g/√v does not shrink with g: a constant α ends in an orbit of size ~α,
    # so it gets a decaying schedule (Σα_k stays large enough to reach x*).
    lr = {"adam": 0.05, "rmsprop": cm.optim.exponential_decay(0.02, 0.998),
          "adagrad": 0.5}.get(method, 0.15)
    res = minimize(q, np.zeros(3), method, learning_rate=lr, max_iter=20_000, tol=1e-10,
                   stop="gradient")
    assert res.success, res.message
    np.testing.assert_allclose(res.x, q.x_star, atol=1e-8)
    assert res.method == method


def test_momentum_options_reach_the_optimizer():
    # one step of heavy ball from rest is a plain step; the second differs by μ·α·g₀
    f = quad_ex1
    a = minimize(f, 1.0, "momentum", learning_rate=0.1, momentum=0.5, max_iter=2, tol=None)
    # b₁ = g₀ = 2, x₁ = 0.8; g₁ = 1.6, b₂ = 0.5·2 + 1.6 = 2.6, x₂ = 0.8 − 0.26
    np.testing.assert_allclose(a.trajectory, [1.0, 0.8, 0.54])
    n = minimize(f, 1.0, "nesterov", learning_rate=0.1, momentum=0.5, max_iter=2, tol=None)
    # Nesterov: x₁ = 1 − 0.1(2 + 0.5·2) = 0.7; g₁ = 1.4, b₂ = 0.5·2 + 1.4 = 2.4,
    # x₂ = 0.7 − 0.1(1.4 + 0.5·2.4) = 0.44
    np.testing.assert_allclose(n.trajectory, [1.0, 0.7, 0.44])


def test_transformation_instance():
    opt = cm.optim.chain(cm.optim.clip_by_global_norm(0.5), cm.optim.sgd(0.1))
    res = minimize(quad_ex2, np.array([30.0, 40.0]), opt, max_iter=5000, tol=1e-10)
    assert res.success
    np.testing.assert_allclose(res.x, 0.0, atol=1e-9)
    # the clipped steps at the start are 0.1 · 0.5 long
    np.testing.assert_allclose(res.update_norms[:10], 0.05, rtol=1e-12)
    with pytest.raises(ValueError, match="own learning rate"):
        minimize(quad_ex2, np.ones(2), opt, learning_rate=0.1)


def test_proximal_gradient_gives_exact_zeros():
    X, y = linreg_data(n=100, d=6, seed=3)
    y = X[:, :2] @ np.array([2.0, -1.0]) + 0.1 * np.random.default_rng(0).standard_normal(100)
    res = minimize(mse, np.zeros(6), "proximal_gradient", learning_rate=0.3, l1_weight=0.3,
                   data=(X, y), max_iter=2000, tol=1e-12)
    assert res.success
    assert np.sum(res.x == 0.0) >= 3 and np.all(res.x[:2] != 0.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown method"):
        minimize(quad_ex1, 1.0, "newton")
    with pytest.raises(TypeError, match=r"cm.optim.adam, which takes \['b1', 'b2', 'eps'\]"):
        minimize(quad_ex1, 1.0, "adam", b3=0.1)
    with pytest.raises(ValueError, match="stop"):
        minimize(quad_ex1, 1.0, stop="loss")
    with pytest.raises(ValueError, match="full-batch"):
        minimize(mse, np.zeros(2), "gd", data=(np.ones((4, 2)), np.ones(4)), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        minimize(mse, np.zeros(2), "sgd", data=(np.ones((4, 2)), np.ones(4)), batch_size=5)
    with pytest.raises(ValueError, match="same leading"):
        minimize(mse, np.zeros(2), "sgd", data=(np.ones((4, 2)), np.ones(3)))
    assert set(METHODS) >= {"gd", "sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad"}


def test_auto_learning_rate_is_one_over_L():
    q = cm.analysis.make_quadratic([0.5, 2.0, 8.0], rng=2)
    res = minimize(q, np.zeros(3), learning_rate="auto", tol=1e-10)
    assert res.learning_rate == pytest.approx(1 / 8.0, rel=1e-8)
    np.testing.assert_allclose(res.x, q.x_star, atol=1e-8)
    with pytest.raises(ValueError, match="auto"):
        minimize(q, np.zeros(3), "adam", learning_rate="auto")


# -- non-finite losses -----------------------------------------------------------------------------

def test_nonfinite_loss_raises_with_iteration_and_last_values():
    # α = 1.5 on x² in float32: x_k = (−2)^k exactly; x² = 4^k overflows float32 at k = 64.
    x0 = np.array(1.0, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(NonFiniteLossError) as info:
            minimize(quad_ex1, x0, learning_rate=1.5, max_iter=1000)
    e = info.value
    msg = str(e)
    assert e.iteration == 64
    assert "iteration 64" in msg and "iteration 63" in msg
    assert "f(x_64) = inf" in msg and "learning_rate=1.5" in msg
    assert e.last_finite["iteration"] == 63
    assert e.last_finite["loss"] == 2.0 ** 126
    assert "8.50706e+37" in msg  # the last finite loss, 4^63
    assert e.result.nit == 63 and float(e.result.x) == (-2.0) ** 63
    assert isinstance(e, FloatingPointError)


def test_nonfinite_stop_mode_and_starting_point():
    x0 = np.array(1.0, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        res = minimize(quad_ex1, x0, learning_rate=1.5, max_iter=1000, on_nonfinite="stop")
    assert not res.success and res.status == 3 and res.nit == 63
    assert np.all(np.isfinite(res.losses)) and len(res.losses) == 64
    assert "non-finite" in res.message
    with np.errstate(over="ignore", invalid="ignore"):
        lean = minimize(quad_ex1, x0, learning_rate=1.5, max_iter=1000, on_nonfinite="stop",
                        keep_trajectory=False)
    assert lean.trajectory is None and lean.nit == 63 and float(lean.x) == (-2.0) ** 63
    with np.errstate(invalid="ignore", divide="ignore"):
        with pytest.raises(NonFiniteLossError, match="starting point"):
            minimize(lambda x: cm.log(x), -1.0)


# -- pytrees and dtypes ----------------------------------------------------------------------------

def test_pytree_x0_linear_regression():
    X, y = linreg_data(n=100, d=3, seed=4)
    y = y + 2.0
    A = np.hstack([X, np.ones((100, 1))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]

    def f(p):
        return 0.5 * cm.mean((X @ p["w"] + p["b"] - y) ** 2)

    x0 = {"w": np.zeros(3), "b": np.array(0.0)}
    res = minimize(f, x0, learning_rate=0.5, tol=1e-12, stop="gradient", max_iter=10_000)
    assert res.success and set(res.x) == {"w", "b"}
    np.testing.assert_allclose(res.x["w"], sol[:3], atol=1e-9)
    np.testing.assert_allclose(res.x["b"], sol[3], atol=1e-9)
    assert isinstance(res.trajectory, list) and len(res.trajectory) == res.nit + 1
    assert res.trajectory[0]["b"] == 0.0 and x0["w"] is not res.trajectory[0]["w"]
    assert set(res.jac) == {"w", "b"} and res.grad_norms[-1] < 1e-12


@pytest.mark.parametrize("method", ["gd", "momentum", "nesterov", "adam", "rmsprop", "adagrad"])
def test_float32_stays_float32(method):
    x0 = {"a": np.array([1.0, -2.0], dtype=np.float32), "b": np.float32(0.5) * np.ones(1,
                                                                                        np.float32)}

    def f(p):
        return cm.sum(p["a"] ** 2) + cm.sum((p["b"] - 1.0) ** 2)

    res = minimize(f, x0, method, learning_rate=0.05, max_iter=50, tol=None)
    assert res.x["a"].dtype == np.float32 and res.x["b"].dtype == np.float32
    assert all(t["a"].dtype == np.float32 for t in res.trajectory)
    assert res.jac["a"].dtype == np.float32
    assert res.fun < float(f(x0))

    r1 = minimize(quad_ex2, np.array([1.0, 2.0], np.float32), method, learning_rate=0.05,
                  max_iter=20, tol=None)
    assert r1.trajectory.dtype == np.float32 and r1.x.dtype == np.float32


def test_x0_is_not_modified_and_ints_become_float64():
    x0 = np.array([1.0, 2.0])
    minimize(quad_ex2, x0, learning_rate=0.1, max_iter=5, tol=None)
    np.testing.assert_array_equal(x0, [1.0, 2.0])
    res = minimize(quad_ex2, np.array([1, 2]), learning_rate=0.25, max_iter=3, tol=None)
    assert res.x.dtype == np.float64
    np.testing.assert_allclose(res.x, [0.125, 0.25])


# -- logistic regression against scikit-learn ------------------------------------------------------

def logistic_data(n=300, d=4, seed=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.array([1.0, 0.7, 1.3, 0.5])
    w = np.array([1.0, -2.0, 0.5, 0.0])
    p = 1 / (1 + np.exp(-(X @ w + 0.3)))
    y = (rng.random(n) < p).astype(np.float64)
    return X, y


def logistic_loss(p, batch):
    X, y = batch
    z = X @ p["w"] + p["b"]
    # mean log(1 + e^z) − y z, the negative log-likelihood, stably via softplus
    return cm.mean(cm.softplus(z) - y * z)


def test_logistic_regression_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    X, y = logistic_data()
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(X, y)
    x0 = {"w": np.zeros(4), "b": np.array(0.0)}
    res = minimize(logistic_loss, x0, "gd", learning_rate="auto", data=(X, y), tol=1e-9,
                   stop="gradient", max_iter=50_000)
    assert res.success, res.message
    np.testing.assert_allclose(res.x["w"], ref.coef_[0], atol=2e-6)
    np.testing.assert_allclose(res.x["b"], ref.intercept_[0], atol=2e-6)
    # Adam reaches the same point
    res_a = minimize(logistic_loss, x0, "adam", learning_rate=0.05, data=(X, y), tol=1e-7,
                     stop="gradient", max_iter=20_000)
    np.testing.assert_allclose(res_a.x["w"], ref.coef_[0], atol=1e-4)


# -- stochastic objectives -------------------------------------------------------------------------

def test_sgd_linear_regression_converges_to_lstsq():
    X, y = linreg_data()
    w_ls = np.linalg.lstsq(X, y, rcond=None)[0]
    sched = cm.optim.inverse_time_decay(0.1, 0.01)
    res = minimize(mse, np.zeros(5), "sgd", learning_rate=sched, data=(X, y), batch_size=10,
                   rng=0, max_iter=4000, tol=None)
    err0 = np.linalg.norm(w_ls)
    err = np.linalg.norm(res.x - w_ls)
    assert err < 1e-3 * err0
    assert res.fun == pytest.approx(float(mse(res.x, (X, y))), rel=1e-12)
    assert res.fun - float(mse(w_ls, (X, y))) < 1e-3
    # the losses recorded on the way are mini-batch losses: noisy, their late mean near f*
    f_star = float(mse(w_ls, (X, y)))
    assert np.mean(res.losses[-1000:-1]) == pytest.approx(f_star, rel=0.2)
    assert np.mean(res.losses[:5]) > 3 * f_star


def test_sgd_is_reproducible_from_its_seed_and_samples_as_asked():
    X, y = linreg_data(n=50)
    kw = dict(learning_rate=0.05, data=(X, y), batch_size=5, max_iter=30, tol=None)
    a = minimize(mse, np.zeros(5), "sgd", rng=7, **kw)
    b = minimize(mse, np.zeros(5), "sgd", rng=np.random.default_rng(7), **kw)
    c = minimize(mse, np.zeros(5), "sgd", rng=8, **kw)
    np.testing.assert_array_equal(a.trajectory, b.trajectory)
    assert not np.array_equal(a.trajectory, c.trajectory)

    # "shuffle": each epoch visits every row exactly once (n = 50, B = 5: 10 batches an epoch)
    seen = []

    def spy(w, batch):
        Xb, _ = batch
        seen.append(Xb[:, 0].copy())
        return mse(w, batch)

    minimize(spy, np.zeros(5), "sgd", rng=1, **{**kw, "max_iter": 10})
    rows = np.sort(np.concatenate(seen[:10]))
    np.testing.assert_array_equal(rows, np.sort(X[:, 0]))
    seen.clear()
    minimize(spy, np.zeros(5), "sgd", rng=1, sampling="replace", **{**kw, "max_iter": 200})
    assert all(len(s) == 5 for s in seen[:-1])
    assert any(len(np.unique(s)) < 5 for s in seen[:-1])  # with replacement, repeats happen


def test_sgd_default_batch_is_one_sample_and_full_batch_equals_gd():
    X, y = linreg_data(n=40)
    sizes = []

    def spy(w, batch):
        sizes.append(len(batch[1]))
        return mse(w, batch)

    minimize(spy, np.zeros(5), "sgd", learning_rate=0.01, data=(X, y), max_iter=3, tol=None,
             rng=0)
    assert sizes[:3] == [1, 1, 1] and sizes[3] == 40  # the last is the full-data evaluation
    full = minimize(mse, np.zeros(5), "sgd", learning_rate=0.1, data=(X, y), batch_size=40,
                    max_iter=20, tol=None, rng=0)
    gd = minimize(lambda w: mse(w, (X, y)), np.zeros(5), "gd", learning_rate=0.1, max_iter=20,
                  tol=None)
    np.testing.assert_allclose(full.trajectory, gd.trajectory, rtol=1e-12)


def test_nonfinite_in_sgd_names_the_iteration():
    X, y = linreg_data(n=50)
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(NonFiniteLossError) as info:
            minimize(mse, np.zeros(5), "sgd", learning_rate=5.0, data=(X * 10, y),
                     batch_size=5, rng=0, max_iter=10_000)
    e = info.value
    assert e.iteration > 1 and f"iteration {e.iteration}" in str(e)
    assert math.isfinite(e.last_finite["loss"])
    assert f"iteration {e.iteration - 1}" in str(e)

"""scikit-learn estimators trained by calcml: sklearn's own estimator checks, accuracy on
digits, LinearRegression against least squares, parameters and reproducibility."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

import calcml as cm
from calcml.estimators import LinearRegression, MLPClassifier, MLPRegressor


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # The matrices here are small: a multi-threaded BLAS gains nothing on them, and on a
    # loaded machine its spinning threads made the digits fit 10x slower.
    with threadpool_limits(limits=1, user_api="blas"):
        yield

# --- scikit-learn's checks, on the default parameters ----------------------------------------


@parametrize_with_checks([MLPClassifier(), MLPRegressor(), LinearRegression()])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_exported_as_cm_estimators():
    assert cm.estimators.MLPClassifier is MLPClassifier
    assert "estimators" in cm.__all__


# --- accuracy ---------------------------------------------------------------------------------


def test_mlp_classifier_digits_accuracy():
    # standardisation by a Pipeline (the estimator itself does not scale its inputs)
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,),
                                                        random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Xtr, ytr)
    acc = clf.score(Xte, yte)
    assert acc >= 0.97, acc
    mlp = clf[-1]
    assert mlp.coefs_[0].shape == (64, 64) and mlp.coefs_[1].shape == (64, 10)
    assert mlp.loss_curve_[-1] < 0.05 * mlp.loss_curve_[0]


def test_mlp_regressor_fits_a_nonlinear_function():
    X = np.linspace(-1, 1, 60)[:, None]
    y = np.sin(3 * X).ravel()
    reg = MLPRegressor((32,), activation="tanh", learning_rate_init=0.02, max_iter=1000,
                       n_iter_no_change=50, random_state=0).fit(X, y)
    assert reg.score(X, y) > 0.95
    assert reg.predict(X).shape == (60,)


def test_mlp_regressor_multioutput_and_column_y():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    Y = np.stack([X[:, 0] - X[:, 1], 2 * X[:, 2]], axis=1)
    reg = MLPRegressor((16,), learning_rate_init=0.01, max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert reg.fit(X, Y).predict(X).shape == (50, 2)
        assert reg.score(X, Y) > 0.9
        assert reg.fit(X, Y[:, :1]).predict(X).shape == (50, 1)


def test_classifier_string_labels_and_probabilities():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 2))
    y = np.array(["a", "b", "c"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)]
    clf = MLPClassifier((16,), learning_rate_init=0.02, max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert list(clf.classes_) == ["a", "b", "c"]
    P = clf.predict_proba(X)
    assert P.shape == (90, 3) and np.allclose(P.sum(axis=1), 1.0)
    assert np.allclose(np.exp(clf.predict_log_proba(X)), P)
    assert np.array_equal(clf.predict(X), clf.classes_[P.argmax(1)])
    assert clf.score(X, y) > 0.9


def test_to_module_reproduces_predictions():
    X, y = load_digits(return_X_y=True)
    X = X[:200] / 16.0
    clf = MLPClassifier((20, 10), activation="tanh", max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y[:200])
    model = clf.to_module()
    assert isinstance(model, cm.nn.Sequential)
    model.eval()
    with cm.no_grad():
        logits = model(X).data
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    np.testing.assert_allclose(P, clf.predict_proba(X), rtol=1e-12, atol=1e-15)


# --- LinearRegression against least squares ------------------------------------------------


def _linear_data(n=200, d=5, k=None, noise=0.1, seed=0, shift=3.0):
    # equicorrelated features (correlation 0.5: condition number 1 + d), then badly scaled and
    # shifted columns (which LinearRegression's standardisation undoes)
    rng = np.random.default_rng(seed)
    R = 0.5 * np.eye(d) + 0.5
    X = rng.normal(size=(n, d)) @ np.linalg.cholesky(R).T
    X = X * 10.0 ** rng.uniform(-3, 3, size=d) + rng.normal(size=d) * shift
    W = rng.normal(size=(d,) if k is None else (d, k))
    y = X @ W + 1.5 + noise * rng.normal(size=(n,) if k is None else (n, k))
    return X, y


def _lstsq(X, y, intercept=True):
    A = np.hstack([X, np.ones((len(X), 1))]) if intercept else X
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    return (sol[:-1], sol[-1]) if intercept else (sol, 0.0)


def test_linear_regression_gd_matches_lstsq():
    X, y = _linear_data()
    reg = LinearRegression(tol=1e-12, max_iter=5000).fit(X, y)
    coef, b = _lstsq(X, y)
    np.testing.assert_allclose(reg.coef_, coef, rtol=1e-8, atol=1e-10)
    assert reg.intercept_ == pytest.approx(b, rel=1e-8)
    assert reg.coef_.shape == (5,) and isinstance(reg.intercept_, float)
    assert 1 < reg.n_iter_ < 5000
    assert reg.loss_curve_[-1] < reg.loss_curve_[0]
    np.testing.assert_allclose(reg.predict(X), X @ coef + b, rtol=1e-8, atol=1e-8)


def test_linear_regression_multioutput_and_no_intercept():
    X, Y = _linear_data(k=3, seed=1)
    reg = LinearRegression(tol=1e-12, max_iter=5000).fit(X, Y)
    coef, b = _lstsq(X, Y)
    np.testing.assert_allclose(reg.coef_, coef.T, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(reg.intercept_, b, rtol=1e-7)
    # without an intercept the columns cannot be centred, only scaled: centred data
    X, y = _linear_data(seed=2, shift=0.0)
    reg = LinearRegression(fit_intercept=False, tol=1e-12, max_iter=5000).fit(X, y)
    coef, _ = _lstsq(X, y, intercept=False)
    np.testing.assert_allclose(reg.coef_, coef, rtol=1e-7, atol=1e-9)
    assert reg.intercept_ == 0.0


def test_linear_regression_sgd_converges_on_consistent_data():
    # without noise every sample agrees on the solution, and SGD with a constant step
    # converges to it linearly (the interpolation regime)
    X, y = _linear_data(noise=0.0, seed=3)
    reg = LinearRegression(solver="sgd", batch_size=16, max_iter=2000, tol=1e-10,
                           random_state=0).fit(X, y)
    coef, b = _lstsq(X, y)
    np.testing.assert_allclose(reg.coef_, coef, rtol=1e-6, atol=1e-8)
    assert reg.intercept_ == pytest.approx(b, rel=1e-6)


def test_linear_regression_warns_when_not_converged():
    X, y = _linear_data()
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        reg = LinearRegression(max_iter=3).fit(X, y)
    assert reg.n_iter_ == 3


def test_learning_rate_auto_is_one_over_lipschitz():
    X, y = _linear_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = LinearRegression(max_iter=2).fit(X, y)
    Z = (X - X.mean(0)) / X.std(0)
    Z1 = np.hstack([Z, np.ones((len(Z), 1))])
    L = 2 * np.linalg.eigvalsh(Z1.T @ Z1 / len(Z))[-1]
    assert reg.learning_rate_ == pytest.approx(1 / L, rel=1e-12)


# --- parameters, validation, reproducibility -------------------------------------------------


def test_get_params_set_params_and_clone():
    clf = MLPClassifier(hidden_layer_sizes=(7, 3), alpha=0.5, random_state=4)
    p = clf.get_params()
    assert p["hidden_layer_sizes"] == (7, 3) and p["alpha"] == 0.5 and p["random_state"] == 4
    assert {"activation", "solver", "learning_rate_init", "batch_size", "max_iter", "tol",
            "early_stopping", "validation_fraction", "dtype"} <= set(p)
    assert clf.set_params(alpha=0.1, activation="tanh") is clf
    assert clf.alpha == 0.1 and clf.activation == "tanh"
    c = clone(clf)
    assert c.get_params() == clf.get_params() and c is not clf
    with pytest.raises(ValueError, match="Invalid parameter"):
        clf.set_params(nope=1)
    assert set(LinearRegression().get_params()) >= {"fit_intercept", "solver", "learning_rate",
                                                     "max_iter", "tol", "random_state"}


def test_invalid_parameters_are_stored_then_refused_by_fit():
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    bad = MLPClassifier(activation="softsign")  # __init__ does not validate
    assert bad.activation == "softsign"
    with pytest.raises(ValueError, match="activation"):
        bad.fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(3, 0)).fit(X, y)
    with pytest.raises(ValueError, match="solver"):
        LinearRegression(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="2 classes"):
        MLPClassifier().fit(X, np.zeros(4))


def test_random_state_reproducibility():
    X, y = load_digits(return_X_y=True)
    X, y = X[:150] / 16.0, y[:150]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier((16,), max_iter=8, random_state=3).fit(X, y)
        b = MLPClassifier((16,), max_iter=8, random_state=3).fit(X, y)
        c = MLPClassifier((16,), max_iter=8, random_state=4).fit(X, y)
    assert all(np.array_equal(u, v) for u, v in zip(a.coefs_, b.coefs_))
    assert a.loss_curve_ == b.loss_curve_
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])
    # a Generator as random_state is accepted too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g1 = MLPClassifier((16,), max_iter=3, random_state=np.random.default_rng(1)).fit(X, y)
        g2 = MLPClassifier((16,), max_iter=3, random_state=np.random.default_rng(1)).fit(X, y)
    assert np.array_equal(g1.coefs_[1], g2.coefs_[1])


def test_early_stopping_uses_validation_and_stops():
    X, y = load_digits(return_X_y=True)
    X, y = X[:400] / 16.0, y[:400]
    clf = MLPClassifier((32,), learning_rate_init=0.01, early_stopping=True, tol=0.0,
                        n_iter_no_change=3, max_iter=300, random_state=0).fit(X, y)
    assert clf.n_iter_ < 300
    curve = clf.validation_loss_curve_
    assert len(curve) == clf.n_iter_
    # the weights kept are those of the best validation epoch, patience epochs before the end
    assert int(np.argmin(curve)) == clf.n_iter_ - 1 - 3


def test_sgd_solver_dtype_and_l2_penalty():
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16.0, y[:300]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sgd = MLPClassifier((32,), solver="sgd", learning_rate_init=0.1, max_iter=30,
                            random_state=0).fit(X, y)
        f32 = MLPClassifier((32,), max_iter=5, dtype=np.float32, random_state=0).fit(X, y)
        small = MLPClassifier((32,), alpha=0.0, max_iter=40, learning_rate_init=0.01,
                              random_state=0).fit(X, y)
        big = MLPClassifier((32,), alpha=10.0, max_iter=40, learning_rate_init=0.01,
                            random_state=0).fit(X, y)
    assert sgd.score(X, y) > 0.9
    assert sgd.loss_curve_[-1] < 0.5 * sgd.loss_curve_[0]
    assert all(c.dtype == np.float32 for c in f32.coefs_)
    assert f32.predict_proba(X).dtype == np.float32
    norm = lambda m: sum(float((c ** 2).sum()) for c in m.coefs_)
    assert norm(big) < 0.5 * norm(small)


def test_convergence_warning_and_n_iter():
    X, y = load_digits(return_X_y=True)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        clf = MLPClassifier((8,), max_iter=2, random_state=0).fit(X[:100] / 16, y[:100])
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2


def test_a_refused_fit_leaves_the_estimator_as_it_was():
    from sklearn.exceptions import NotFittedError

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    clf = MLPClassifier(alpha=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    # a fitted model refit with bad parameters on other data still predicts with its fit
    clf = MLPClassifier((4,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    before = clf.predict(X)
    clf.set_params(alpha=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        clf.fit(rng.normal(size=(40, 5)), y)
    np.testing.assert_array_equal(clf.predict(X), before)
    reg = LinearRegression(momentum=2.0)
    with pytest.raises(ValueError, match="momentum"):
        reg.fit(X, X[:, 0])
    with pytest.raises(NotFittedError):
        reg.predict(X)


def test_linear_regression_float32_converges_and_draws_no_shared_generator():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.25
    cm.nn.init.manual_seed(0)
    expected = cm.nn.Linear(2, 2).weight.data.copy()
    cm.nn.init.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        reg = LinearRegression(dtype=np.float32).fit(X, y)
    # the fit drew nothing from calcml.nn's default generator
    np.testing.assert_array_equal(cm.nn.Linear(2, 2).weight.data, expected)
    assert reg.n_iter_ < 1000
    np.testing.assert_allclose(reg.coef_, [1.0, -2.0, 0.5], atol=1e-4)
    pred = reg.predict(X.astype(np.float32))
    assert pred.dtype == np.float32
    np.testing.assert_allclose(pred, y, atol=1e-3)
    assert LinearRegression().fit(X, y).predict(X).dtype == np.float64

"""Tests of ``cm.losses`` (API.md §3).

Every loss is checked three or four ways: its hand-written closed form (``.derivative``), the
engine (``cm.grad``, ``cm.check_grad`` in both modes to second order, ``Tensor.backward``),
central differences of the loss's *value*, and, for one element or one row, SymPy's exact
derivative of the formula as API.md writes it.  Values are checked against independent
oracles (scikit-learn's metrics, SciPy, PyTorch when installed).  The extreme cases (logits of
±1e4, probabilities of exactly 0 and 1) must stay finite, and the chapter's per-sample
derivatives are shown to differ from the derivative of the mean loss by the factor N.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import scipy.special
import scipy.stats
import sklearn.metrics as skm
import sympy as sp
from fdcheck import assert_close, central_grad

import calcml as cm

L = cm.losses
DTYPES = (np.float32, np.float64)
F64 = np.float64
NAMES = (
    "mse", "mae", "huber", "log_cosh", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cross_entropy", "cross_entropy_soft",
    "categorical_cross_entropy", "hinge", "focal", "focal_frac", "kl_divergence", "triplet",
)


# --- the sample problems -------------------------------------------------------------------------

def _away(rng, shape, lo=0.2, hi=1.5):
    """Entries with lo <= |x| <= hi: differences of losses with kinks stay off the kinks."""
    return rng.uniform(lo, hi, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _case(name):
    """(loss, args (float64 / int arrays), kwargs, argnums of the differentiated arrays)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    shape = (3, 4)
    if name == "mse":
        return L.mse, (rng.normal(size=shape), rng.normal(size=shape)), {}, (1,)
    if name == "mae":
        y = rng.normal(size=shape)
        return L.mae, (y, y + _away(rng, shape)), {}, (1,)
    if name == "huber":
        y = rng.normal(size=shape)
        r = rng.choice([0.2, 0.5, 1.0, 1.6, 3.0], size=shape) * rng.choice([-1, 1], size=shape)
        r = r + rng.uniform(-0.05, 0.05, size=shape)  # both branches, away from |r| = δ = 0.7
        return L.huber, (y, y + r), {"delta": 0.7}, (1,)
    if name == "log_cosh":
        return L.log_cosh, (rng.normal(size=shape), 2.0 * rng.normal(size=shape)), {}, (1,)
    if name == "binary_cross_entropy":
        y = np.array([[1.0, 0.0, 0.3, 1.0], [0.0, 0.0, 1.0, 0.8], [1.0, 0.5, 0.0, 1.0]])
        return L.binary_cross_entropy, (y, rng.uniform(0.05, 0.95, size=shape)), {}, (1,)
    if name == "binary_cross_entropy_with_logits":
        y = (rng.uniform(size=shape) > 0.5).astype(F64)
        y[0, 0] = 0.25  # a soft label
        return L.binary_cross_entropy_with_logits, (y, 3.0 * rng.normal(size=shape)), {}, (1,)
    if name == "cross_entropy":
        return L.cross_entropy, (np.array([0, 3, 1]), 2.0 * rng.normal(size=shape)), {}, (1,)
    if name == "cross_entropy_soft":
        t = _softmax(rng.normal(size=shape))
        t[1] = [0.0, 0.0, 1.0, 0.0]
        t[2] *= 0.5  # a row summing to 0.5: dL/dz = (softmax(z) Σ_k t_k - t)/M in general
        return L.cross_entropy, (t, 2.0 * rng.normal(size=shape)), {}, (1,)
    if name == "categorical_cross_entropy":
        t = _softmax(rng.normal(size=shape))
        t[0] = [0.0, 1.0, 0.0, 0.0]
        return L.categorical_cross_entropy, (t, _softmax(rng.normal(size=shape))), {}, (1,)
    if name == "hinge":
        y = rng.choice([-1.0, 1.0], size=shape)
        m = rng.choice([-0.5, 0.4, 0.8, 1.3, 2.0], size=shape)  # margins y ŷ, off the kink 1
        return L.hinge, (y, y * (m + rng.uniform(-0.05, 0.05, size=shape))), {}, (1,)
    if name == "focal":
        y = (rng.uniform(size=shape) > 0.5).astype(F64)
        return (L.focal, (y, rng.uniform(0.05, 0.95, size=shape)),
                {"gamma": 2.0, "alpha": 0.25}, (1,))
    if name == "focal_frac":  # a non-integer γ, soft labels, no α
        y = rng.uniform(size=shape)
        return L.focal, (y, rng.uniform(0.05, 0.95, size=shape)), {"gamma": 0.5}, (1,)
    if name == "kl_divergence":
        p = _softmax(rng.normal(size=shape))
        p[2] = [0.0, 0.5, 0.5, 0.0]  # zero entries of p count 0
        return L.kl_divergence, (p, _softmax(rng.normal(size=shape))), {}, (1,)
    if name == "triplet":
        a = rng.normal(size=(5, 3))
        p = a + 0.5 * rng.normal(size=(5, 3))
        n = a + rng.normal(size=(5, 3))
        return L.triplet, (a, p, n), {"margin": 1.0}, (0, 1, 2)
    raise KeyError(name)


def _cast(args, dtype):
    return tuple(a.astype(dtype) if a.dtype.kind == "f" else a for a in args)


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _triplet_margins(a, p, n, margin):
    return np.linalg.norm(a - p, axis=-1) - np.linalg.norm(a - n, axis=-1) + margin


def test_triplet_sample_is_off_the_kink_and_has_both_branches():
    _, (a, p, n), kw, _ = _case("triplet")
    h = _triplet_margins(a, p, n, kw["margin"])
    assert np.all(np.abs(h) > 0.05)
    assert np.any(h > 0) and np.any(h < 0)


def test_every_api_loss_is_exported():
    names = {"mse", "mae", "binary_cross_entropy", "binary_cross_entropy_with_logits",
             "cross_entropy", "categorical_cross_entropy", "hinge", "huber", "log_cosh",
             "focal", "kl_divergence", "triplet"}
    assert "losses" in cm.__all__
    for n in names:
        loss = getattr(cm.losses, n)
        assert isinstance(loss, cm.losses.Loss) and loss.name == n
        assert callable(loss.derivative) and "Notes" in type(loss).__doc__
        assert "Examples" in type(loss).__doc__


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(cm.losses, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 36 and result.failed == 0


# --- closed form == autodiff == central differences ----------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", NAMES)
def test_closed_form_equals_autodiff_equals_central_differences(name, dtype):
    loss, args64, kw, nums = _case(name)
    args = _cast(args64, dtype)
    value = loss(*args, **kw)
    assert np.asarray(value).shape == () and np.asarray(value).dtype == dtype

    closed = _as_tuple(loss.derivative(*args, **kw))
    auto = cm.grad(lambda *a: loss(*a, **kw), argnums=nums)(*args)
    auto = _as_tuple(auto)
    # differences of the value, in float64, at the very same (rounded) inputs
    exact = tuple(a.astype(F64) if a.dtype.kind == "f" else a for a in args)

    def f(*xs):
        full = list(exact)
        for i, x in zip(nums, xs):
            full[i] = x
        return loss(*full, **kw)

    fd = central_grad(f, [exact[i] for i in nums])
    tight = 1e-12 if dtype == F64 else 2e-6
    loose = 1e-6 if dtype == F64 else 2e-5
    for c, g, d, i in zip(closed, auto, fd, nums):
        assert c.shape == args[i].shape and c.dtype == dtype, (c.shape, c.dtype)
        assert g.shape == args[i].shape and g.dtype == dtype
        assert np.all(np.isfinite(c))
        assert_close(g, c, rtol=tight, err_msg=f"{name}: autodiff vs closed form")
        assert_close(c, d, rtol=loose, err_msg=f"{name}: closed form vs central differences")
        assert np.max(np.abs(c)) > 0  # the sample exercises the derivative


@pytest.mark.parametrize("name", NAMES)
def test_check_grad_both_modes_to_second_order(name):
    loss, args, kw, nums = _case(name)
    report = cm.check_grad(lambda *a: loss(*a, **kw), *args, argnums=nums, order=2)
    assert report.max_rel_error < 1e-5


def test_second_derivatives_have_the_closed_forms():
    rng = np.random.default_rng(5)
    # BCE with logits: H = diag(σ(z)(1 - σ(z))) / N
    y, z = (rng.uniform(size=6) > 0.5).astype(F64), rng.normal(size=6)
    s = scipy.special.expit(z)
    h = cm.hessian(lambda q: L.binary_cross_entropy_with_logits(y, q))(z)
    assert_close(h, np.diag(s * (1 - s)) / 6, rtol=1e-12)
    # softmax cross-entropy of one row: H = diag(s) - s sᵀ
    z = rng.normal(size=4)
    s = _softmax(z)
    h = cm.hessian(lambda q: L.cross_entropy(np.array(2), q))(z)
    assert_close(h, np.diag(s) - np.outer(s, s), rtol=1e-12)
    # log-cosh: sech²(r)/N, including r = 0 exactly (where the |r| form would give 0)
    r = np.array([0.0, 0.5, -3.0, 40.0])
    h = cm.hessian(lambda q: L.log_cosh(np.zeros(4), q))(r)
    assert_close(h, np.diag(1.0 / np.cosh(r) ** 2) / 4, rtol=1e-10)
    assert h[0, 0] == pytest.approx(0.25)
    # MSE: 2/N I; Huber: 1/N inside δ, 0 outside
    h = cm.hessian(lambda q: L.huber(np.zeros(3), q, delta=1.0))(np.array([0.3, -2.0, 0.9]))
    assert_close(h, np.diag([1 / 3, 0.0, 1 / 3]), rtol=1e-12)


# --- SymPy: the formulas of API.md, differentiated exactly ---------------------------------------

def _sym_formulas():
    """name -> (sympy formula of the loss in x (ŷ, the prediction), y fixed, kwargs, y, points)."""
    x = sp.Symbol("x", real=True)
    sig = 1 / (1 + sp.exp(-x))
    d, g, a = sp.Rational(7, 10), 2, sp.Rational(1, 4)
    return x, {
        "mse": ((0.5 - x) ** 2, {}, 0.5, [-1.3, 0.2, 2.0]),
        "mae": (sp.Abs(0.5 - x), {}, 0.5, [-1.3, 0.2, 2.0]),
        "huber": (sp.Piecewise((sp.Rational(1, 2) * (x - 0.5) ** 2, sp.Abs(x - 0.5) <= d),
                               (d * sp.Abs(x - 0.5) - d**2 / 2, True)),
                  {"delta": 0.7}, 0.5, [-1.3, 0.2, 0.9, 2.0]),
        "log_cosh": (sp.log(sp.cosh(x - 0.5)), {}, 0.5, [-1.3, 0.2, 2.0]),
        "binary_cross_entropy": (-(0.3 * sp.log(x) + 0.7 * sp.log(1 - x)), {}, 0.3,
                                 [0.05, 0.3, 0.9]),
        "binary_cross_entropy_with_logits": (-(0.3 * sp.log(sig) + 0.7 * sp.log(1 - sig)),
                                             {}, 0.3, [-4.0, 0.1, 2.5]),
        "hinge": (sp.Max(0, 1 - (-1) * x), {}, -1.0, [-1.6, -0.4, 0.5]),
        "focal": (-(a * 1 * (1 - x) ** g * sp.log(x)), {"gamma": 2.0, "alpha": 0.25}, 1.0,
                  [0.05, 0.4, 0.9]),
        "focal_neg": (-((1 - a) * x**g * sp.log(1 - x)), {"gamma": 2.0, "alpha": 0.25}, 0.0,
                      [0.05, 0.4, 0.9]),
    }


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "log_cosh", "binary_cross_entropy",
                                  "binary_cross_entropy_with_logits", "hinge", "focal",
                                  "focal_neg"])
def test_scalar_case_matches_sympy(name):
    x, table = _sym_formulas()
    formula, kw, y, points = table[name]
    loss = getattr(L, name.replace("_neg", ""))
    exact = sp.lambdify(x, sp.diff(formula, x), "numpy")
    # calcml's loss run on a SymPy symbol, differentiated by SymPy (values only from calcml)
    traced = cm.symbolic.grad(lambda q: loss(np.array(y), q, **kw), [x])[0]
    for p in points:
        want = float(exact(p))
        closed = loss.derivative(np.array(y), np.array(p), **kw)
        assert closed.shape == () and closed.dtype == F64
        assert float(closed) == pytest.approx(want, rel=1e-12, abs=1e-14)
        assert float(traced.subs(x, p)) == pytest.approx(want, rel=1e-12, abs=1e-14)
        assert float(cm.grad(lambda q: loss(np.array(y), q, **kw))(np.array(p))) == (
            pytest.approx(want, rel=1e-12, abs=1e-14))


def test_row_losses_match_sympy():
    z = sp.symbols("z0:3", real=True)
    pts = np.array([0.3, -1.2, 2.0])
    t = np.array([0.2, 0.0, 0.8])
    lse = sp.log(sum(sp.exp(zi) for zi in z))
    forms = {
        "cross_entropy": (-(z[1] - lse), np.array(1), pts),
        "cross_entropy_soft": (-sum(ti * (zi - lse) for ti, zi in zip(t, z)), t, pts),
        "categorical_cross_entropy": (-sum(ti * sp.log(zi) for ti, zi in zip(t, z)), t,
                                      np.array([0.2, 0.3, 0.5])),
        "kl_divergence": (sum(ti * sp.log(ti / zi) for ti, zi in zip(t, z) if ti > 0), t,
                          np.array([0.2, 0.3, 0.5])),
    }
    for name, (formula, y, at) in forms.items():
        loss = getattr(L, name.replace("_soft", ""))
        want = np.array([float(sp.diff(formula, zi).subs(dict(zip(z, at)))) for zi in z])
        assert_close(loss.derivative(y, at), want, rtol=1e-12, err_msg=name)
        assert_close(cm.grad(lambda q: loss(y, q))(at), want, rtol=1e-12, err_msg=name)
        traced = cm.symbolic.grad(lambda q: loss(y, q), 3, vector=True)
        got = np.array([float(e.subs(dict(zip(cm.symbolic.symbols(3), at)))) for e in traced])
        assert_close(got, want, rtol=1e-12, err_msg=name)


def test_triplet_matches_sympy():
    v = sp.symbols("v0:6", real=True)
    a, p, n = v[0:2], v[2:4], v[4:6]
    dist = lambda u, w: sp.sqrt(sum((ui - wi) ** 2 for ui, wi in zip(u, w)))
    formula = sp.Max(0, dist(a, p) - dist(a, n) + 1)
    at = np.array([0.1, 0.2, 0.9, -0.3, 0.4, 1.5])
    want = np.array([float(sp.diff(formula, vi).subs(dict(zip(v, at)))) for vi in v])
    da, dp, dn = L.triplet.derivative(at[0:2], at[2:4], at[4:6])
    assert_close(np.concatenate([da, dp, dn]), want, rtol=1e-12)
    traced = cm.symbolic.grad(lambda w: L.triplet(w[0:2], w[2:4], w[4:6]), 6, vector=True)
    got = np.array([float(e.subs(dict(zip(cm.symbolic.symbols(6), at)))) for e in traced])
    assert_close(got, want, rtol=1e-12)


# --- Tensors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", NAMES)
def test_tensor_inputs_and_backward(name, dtype):
    loss, args, kw, nums = _case(name)
    args = _cast(args, dtype)
    tens = [cm.tensor(a, requires_grad=(i in nums)) for i, a in enumerate(args)]
    out = loss(*tens, **kw)
    assert isinstance(out, cm.Tensor) and out.shape == () and out.dtype == dtype
    assert float(out) == pytest.approx(float(loss(*args, **kw)), rel=1e-6)
    out.backward()
    closed = _as_tuple(loss.derivative(*tens, **kw))
    for i, c in zip(nums, closed):
        g = tens[i].grad
        assert g.dtype == dtype and g.shape == args[i].shape
        assert_close(g, c, rtol=1e-12 if dtype == F64 else 2e-6)


# --- stability: extreme logits and probabilities of 0 and 1 --------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_bce_with_logits_at_logits_of_1e4(dtype):
    z = np.array([1e4, -1e4, 1e4, -1e4], dtype=dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0], dtype=dtype)
    with np.errstate(all="ignore"):  # the naive form is what this loss exists to avoid
        s = 1 / (1 + np.exp(-z))
        naive = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    assert not np.isfinite(naive)
    val = L.binary_cross_entropy_with_logits(y, z)
    assert val.dtype == dtype and float(val) == 5000.0  # (0 + 0 + 1e4 + 1e4) / 4
    g = cm.grad(lambda q: L.binary_cross_entropy_with_logits(y, q))(z)
    d = L.binary_cross_entropy_with_logits.derivative(y, z)
    assert np.all(np.isfinite(g)) and g.dtype == dtype
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.25, -0.25])
    np.testing.assert_array_equal(d, g)
    h = cm.hessian(lambda q: L.binary_cross_entropy_with_logits(y, q))(z)
    assert np.all(np.isfinite(h)) and np.all(h == 0)  # σ'(±1e4) underflows to exactly 0


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_cross_entropy_at_logits_of_1e4(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [1e4, 0.0, 0.0]], dtype=dtype)
    labels = np.array([1, 0, 0])
    val = L.cross_entropy(labels, z)
    want = (2e4 + (2e4 + math.log(2.0)) + 0.0) / 3
    assert val.dtype == dtype and np.isfinite(val)
    assert float(val) == pytest.approx(want, rel=1e-6)
    g = cm.grad(lambda q: L.cross_entropy(labels, q))(z)
    d = L.cross_entropy.derivative(labels, z)
    assert g.dtype == dtype and np.all(np.isfinite(g)) and np.all(np.isfinite(d))
    exact = np.array([[1, -1, 0], [-1, 0.5, 0.5], [0, 0, 0]]) / 3
    np.testing.assert_allclose(d, exact, atol=1e-12)
    # float32 log_softmax near 1e4 is accurate to its rounding of 1e4 (ulp ≈ 1e-3)
    np.testing.assert_allclose(g, exact, atol=1e-12 if dtype == F64 else 1e-4)
    # probability targets at the same logits
    t = np.eye(3, dtype=dtype)[labels]
    assert float(L.cross_entropy(t, z)) == pytest.approx(want, rel=1e-6)
    h = cm.hessian(lambda q: L.cross_entropy(labels, q))(z)
    assert np.all(np.isfinite(h))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_log_cosh_at_residuals_of_1e4(dtype):
    r = np.array([1e4, -1e4, 0.0, 3.0], dtype=dtype)
    with np.errstate(over="ignore"):
        assert not np.all(np.isfinite(np.log(np.cosh(r))))
    val = L.log_cosh(np.zeros(4, dtype), r)
    want = (2 * (1e4 - math.log(2.0)) + 0.0 + math.log(math.cosh(3.0))) / 4
    assert val.dtype == dtype and float(val) == pytest.approx(want, rel=1e-6)
    g = cm.grad(lambda q: L.log_cosh(np.zeros(4, dtype), q))(r)
    np.testing.assert_allclose(g, np.tanh(r.astype(F64)) / 4, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["binary_cross_entropy", "focal", "categorical_cross_entropy",
                                  "kl_divergence"])
def test_probability_losses_are_finite_at_0_and_1(name, dtype):
    loss = getattr(L, name)
    eps = float(np.finfo(dtype).eps)
    if name in ("binary_cross_entropy", "focal"):
        y = np.array([1.0, 0.0, 1.0, 0.0], dtype=dtype)
        p = np.array([1.0, 0.0, 0.0, 1.0], dtype=dtype)  # two right, two wrong, all certain
        wrong = [2, 3]
    else:
        y = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
        p = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=dtype)  # row 1 right, row 2 wrong
        wrong = [(1, 1)]
    val = loss(y, p)
    assert np.isfinite(val) and val.dtype == dtype
    g = cm.grad(lambda q: loss(y, q))(p)
    d = loss.derivative(y, p)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(d)) and d.dtype == dtype
    assert_close(g, d, rtol=1e-6)
    # straight-through clipping: the confidently wrong entries get a large gradient pointing
    # the right way (towards the label), not the clip's zero
    for w in wrong:
        assert abs(d[w]) > 1e5 and np.sign(d[w]) == -np.sign(y[w] - 0.5)
    if name == "binary_cross_entropy":
        # value: two entries at -log(eps) out of four; scikit-learn clips the same way
        assert float(val) == pytest.approx(-2 * math.log(eps) / 4, rel=1e-5)
        assert float(val) == pytest.approx(skm.log_loss(y, p), rel=1e-5)
        # the gradient at ŷ = 0 with y = 1 is the formula's at eps: -1/(N eps (1 - eps))
        assert float(d[2]) == pytest.approx(-1 / (4 * eps * (1 - eps)), rel=1e-5)


def test_straight_through_gradient_moves_a_stuck_prediction():
    y, p = np.array([1.0]), np.array([0.0])
    g = cm.grad(lambda q: L.binary_cross_entropy(y, q))(p)
    assert g[0] < 0  # descent raises ŷ off 0
    p2 = p - 1e-18 * g
    assert 0 < p2[0] < 1 and L.binary_cross_entropy(y, p2) < L.binary_cross_entropy(y, p)


def test_triplet_at_zero_distance_is_finite():
    a = np.array([[0.0, 1.0], [2.0, 0.0]])
    p = a.copy()  # d(a, p) = 0: the norm's derivative must not be 0/0
    n = a + np.array([[0.3, 0.0], [0.0, 0.4]])
    g = cm.grad(lambda *x: L.triplet(*x), argnums=(0, 1, 2))(a, p, n)
    d = L.triplet.derivative(a, p, n)
    for gi, di in zip(g, d):
        assert np.all(np.isfinite(gi))
        assert_close(gi, di, rtol=1e-12)
    # dL/dn = u⁻/M with u⁻ = (a - n)/‖a - n‖: descent moves n away from a
    assert_close(d[2], np.array([[-0.5, 0.0], [0.0, -0.5]]), rtol=1e-12)
    h = cm.hessian(lambda q: L.triplet(q, p, n))(a)
    assert np.all(np.isfinite(h))


# --- independent oracles -------------------------------------------------------------------------

def test_values_match_scikit_learn():
    rng = np.random.default_rng(3)
    y, yh = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    assert float(L.mse(y, yh)) == pytest.approx(skm.mean_squared_error(y, yh), rel=1e-12)
    assert float(L.mae(y, yh)) == pytest.approx(skm.mean_absolute_error(y, yh), rel=1e-12)
    lab = rng.choice([-1.0, 1.0], size=20)
    s = 2 * rng.normal(size=20)
    assert float(L.hinge(lab, s)) == pytest.approx(skm.hinge_loss(lab, s), rel=1e-12)
    y01 = (rng.uniform(size=20) > 0.5).astype(F64)
    p = rng.uniform(0.01, 0.99, size=20)
    assert float(L.binary_cross_entropy(y01, p)) == pytest.approx(skm.log_loss(y01, p),
                                                                  rel=1e-12)
    z = 3 * rng.normal(size=20)
    assert float(L.binary_cross_entropy_with_logits(y01, z)) == pytest.approx(
        skm.log_loss(y01, scipy.special.expit(z)), rel=1e-10)
    assert float(L.focal(y01, p, gamma=0.0)) == pytest.approx(skm.log_loss(y01, p), rel=1e-12)
    labels = rng.integers(0, 4, size=10)
    labels[:4] = [0, 1, 2, 3]
    logits = 2 * rng.normal(size=(10, 4))
    P = _softmax(logits)
    ref = skm.log_loss(labels, P, labels=[0, 1, 2, 3])
    assert float(L.cross_entropy(labels, logits)) == pytest.approx(ref, rel=1e-10)
    onehot = np.eye(4)[labels]
    assert float(L.categorical_cross_entropy(onehot, P)) == pytest.approx(ref, rel=1e-10)


def test_values_match_scipy_and_numpy():
    rng = np.random.default_rng(4)
    y, yh = rng.normal(size=(5, 4)), 3 * rng.normal(size=(5, 4))
    for delta in (0.5, 1.0, 2.5):
        want = np.mean(scipy.special.huber(delta, yh - y))
        assert float(L.huber(y, yh, delta=delta)) == pytest.approx(want, rel=1e-12)
    assert float(L.log_cosh(y, yh)) == pytest.approx(np.mean(np.log(np.cosh(yh - y))),
                                                     rel=1e-12)
    p, q = _softmax(rng.normal(size=(5, 4))), _softmax(rng.normal(size=(5, 4)))
    want = np.mean(scipy.stats.entropy(p, q, axis=-1))
    assert float(L.kl_divergence(p, q)) == pytest.approx(want, rel=1e-12)
    assert float(L.kl_divergence(p, p)) == pytest.approx(0.0, abs=1e-15)
    a, pp, n = (rng.normal(size=(6, 3)) for _ in range(3))
    want = np.mean(np.maximum(0, np.linalg.norm(a - pp, axis=1) - np.linalg.norm(a - n, axis=1)
                              + 0.5))
    assert float(L.triplet(a, pp, n, margin=0.5)) == pytest.approx(want, rel=1e-12)
    # focal against the formula of Lin et al. written out in NumPy
    y01 = (rng.uniform(size=12) > 0.5).astype(F64)
    pr = rng.uniform(0.02, 0.98, size=12)
    g, al = 2.0, 0.25
    want = -np.mean(al * y01 * (1 - pr) ** g * np.log(pr)
                    + (1 - al) * (1 - y01) * pr**g * np.log(1 - pr))
    assert float(L.focal(y01, pr, gamma=g, alpha=al)) == pytest.approx(want, rel=1e-12)


def test_values_and_gradients_match_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(6)
    T = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)

    def check(ours, loss, args, ref_fn, rtol=1e-10):
        xs = [T(a) if i == len(args) - 1 else torch.tensor(a) for i, a in enumerate(args)]
        ref = ref_fn(*xs)
        ref.backward()
        assert float(ours) == pytest.approx(ref.item(), rel=rtol)
        assert_close(loss.derivative(*args), xs[-1].grad.numpy(), rtol=rtol)

    y, z = (rng.uniform(size=(4, 3)) > 0.5).astype(F64), 4 * rng.normal(size=(4, 3))
    check(L.binary_cross_entropy_with_logits(y, z), L.binary_cross_entropy_with_logits, (y, z),
          lambda t, q: F.binary_cross_entropy_with_logits(q, t))
    labels, logits = np.array([2, 0, 1, 2]), 3 * rng.normal(size=(4, 3))
    check(L.cross_entropy(labels, logits), L.cross_entropy, (labels, logits),
          lambda t, q: F.cross_entropy(q, t))
    soft = _softmax(rng.normal(size=(4, 3)))
    check(L.cross_entropy(soft, logits), L.cross_entropy, (soft, logits),
          lambda t, q: F.cross_entropy(q, t))
    y, yh = rng.normal(size=(4, 3)), 3 * rng.normal(size=(4, 3))
    check(L.huber(y, yh, delta=1.5), L.huber.with_params(delta=1.5), (y, yh),
          lambda t, p: F.huber_loss(p, t, delta=1.5))
    check(L.mse(y, yh), L.mse, (y, yh), lambda t, p: F.mse_loss(p, t))
    p, q = _softmax(rng.normal(size=(4, 3))), _softmax(rng.normal(size=(4, 3)))
    check(L.kl_divergence(p, q), L.kl_divergence, (p, q),
          lambda t, s: F.kl_div(torch.log(s), t, reduction="batchmean"))
    a, pp, n = (rng.normal(size=(5, 3)) for _ in range(3))
    ta, tp, tn = T(a), T(pp), T(n)
    ref = F.triplet_margin_loss(ta, tp, tn, margin=1.0, eps=0.0)
    ref.backward()
    assert float(L.triplet(a, pp, n)) == pytest.approx(ref.item(), rel=1e-10)
    for ours, t in zip(L.triplet.derivative(a, pp, n), (ta, tp, tn)):
        assert_close(ours, t.grad.numpy(), rtol=1e-10)


# --- the chapter's derivatives against the derivative of the mean loss ---------------------------

def test_chapter_per_sample_derivatives_lack_the_one_over_n():
    """Section 9.3 defines every loss as a mean (1/n Σ) but writes the derivatives of BCE,
    hinge and Huber per sample: they are n times dL/dŷ of the mean.  Its MSE (2/n (ŷ - y))
    and categorical cross-entropy (-y/(n ŷ)) derivatives do carry the 1/n and agree."""
    rng = np.random.default_rng(9)
    n = 8
    y, yh = rng.normal(size=n), rng.normal(size=n)
    yb, p = (rng.uniform(size=n) > 0.5).astype(F64), rng.uniform(0.1, 0.9, size=n)
    ys = rng.choice([-1.0, 1.0], size=n)
    s = ys * rng.choice([-0.5, 0.3, 0.7, 1.5, 2.0], size=n)
    r = rng.choice([0.3, 2.0], size=n) * rng.choice([-1, 1], size=n)
    fd = lambda f, x: central_grad(f, [x])[0]

    chapter = {
        "mse": (2.0 / n * (yh - y), fd(lambda q: L.mse(y, q), yh)),
        "bce": ((p - yb) / (p * (1 - p)), fd(lambda q: L.binary_cross_entropy(yb, q), p)),
        "hinge": (np.where(ys * s < 1, -ys, 0.0), fd(lambda q: L.hinge(ys, q), s)),
        "huber": (np.where(np.abs(r) <= 1.0, r, np.sign(r)),
                  fd(lambda q: L.huber(np.zeros(n), q), r)),
    }
    ratios = {}
    for name, (ch, num) in chapter.items():
        mask = np.abs(num) > 1e-9
        ratios[name] = ch[mask] / num[mask]
    np.testing.assert_allclose(ratios["mse"], 1.0, rtol=1e-6)  # the chapter is right
    for name in ("bce", "hinge", "huber"):  # the chapter is n times too large
        np.testing.assert_allclose(ratios[name], n, rtol=1e-6, err_msg=name)
    # ours agree with the differences in every case
    assert_close(L.binary_cross_entropy.derivative(yb, p), chapter["bce"][1], rtol=1e-6)
    assert_close(L.binary_cross_entropy.derivative(yb, p), chapter["bce"][0] / n, rtol=1e-12)
    assert_close(L.hinge.derivative(ys, s), chapter["hinge"][0] / n, rtol=1e-12)
    assert_close(L.huber.derivative(np.zeros(n), r), chapter["huber"][0] / n, rtol=1e-12)
    # categorical CE: the chapter's -y/(n ŷ) is right (n rows)
    t = np.eye(3)[rng.integers(0, 3, size=n)]
    q = _softmax(rng.normal(size=(n, 3)))
    num = fd(lambda w: L.categorical_cross_entropy(t, w), q)
    assert_close(-t / (n * q), num, rtol=1e-6)


def test_chapter_focal_loss_ignores_negatives():
    """The chapter's focal loss keeps only the positive term, so a negative example (y = 0)
    costs nothing however confidently it is misclassified; the two-sided loss (API.md, Lin et
    al.) charges it."""
    y = np.array([0.0])
    p = np.array([0.99])
    chapter = -np.mean(y * (1 - p) ** 2 * np.log(p))
    assert chapter == 0.0
    ours = float(L.focal(y, p, gamma=2.0))
    assert ours == pytest.approx(-(0.99**2) * math.log(0.01), rel=1e-12) and ours > 4


# --- reductions, hyper-parameters, dtypes --------------------------------------------------------

def test_reductions_follow_api():
    rng = np.random.default_rng(11)
    y, yh = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    assert float(L.mse(y, yh)) == pytest.approx(np.mean((y - yh) ** 2), rel=1e-12)
    z = rng.normal(size=(2, 3, 4))
    lab = rng.integers(0, 4, size=(2, 3))
    flat = float(L.cross_entropy(lab.reshape(6), z.reshape(6, 4)))
    assert float(L.cross_entropy(lab, z)) == pytest.approx(flat, rel=1e-12)
    d = L.cross_entropy.derivative(lab, z)
    assert_close(d.reshape(6, 4), L.cross_entropy.derivative(lab.reshape(6), z.reshape(6, 4)),
                 rtol=1e-12)
    # one row: the class losses sum over the classes (no mean over them)
    row = z[0, 0]
    assert float(L.cross_entropy(np.array(lab[0, 0]), row)) == pytest.approx(
        -(row[lab[0, 0]] - scipy.special.logsumexp(row)), rel=1e-12)
    p, q = _softmax(rng.normal(size=(2, 3, 4))), _softmax(rng.normal(size=(2, 3, 4)))
    assert float(L.kl_divergence(p, q)) == pytest.approx(
        np.sum(p * np.log(p / q)) / 6, rel=1e-12)
    assert float(L.categorical_cross_entropy(p, q)) == pytest.approx(
        -np.sum(p * np.log(q)) / 6, rel=1e-12)
    a, pp, n = (rng.normal(size=(2, 3, 5)) for _ in range(3))
    h = np.maximum(0, _triplet_margins(a, pp, n, 1.0))
    assert float(L.triplet(a, pp, n)) == pytest.approx(h.mean(), rel=1e-12)
    assert float(L.triplet(a[0, 0], pp[0, 0], n[0, 0])) == pytest.approx(h[0, 0], rel=1e-12)


def test_hyperparameter_forms_agree():
    rng = np.random.default_rng(12)
    y, yh = rng.normal(size=5), 3 * rng.normal(size=5)
    v = float(L.huber(y, yh, delta=2.0))
    assert float(L.huber(delta=2.0)(y, yh)) == v
    assert float(L.huber(y, yh, 2.0)) == v
    assert float(L.huber(y_true=y, y_pred=yh, delta=2.0)) == v
    assert v != float(L.huber(y, yh))  # the default δ = 1 differs
    assert repr(L.huber(delta=2.0)) == "calcml.losses.huber(delta=2.0)"
    assert_close(L.huber(delta=2.0).derivative(y, yh), L.huber.derivative(y, yh, delta=2.0),
                 rtol=0)
    # limits: a huge δ is half the MSE, a tiny δ is δ times the MAE (up to δ²/2)
    assert float(L.huber(y, yh, delta=1e6)) == pytest.approx(float(L.mse(y, yh)) / 2, rel=1e-12)
    assert float(L.huber(y, yh, delta=1e-6)) == pytest.approx(1e-6 * float(L.mae(y, yh)),
                                                              rel=1e-5)
    # focal: γ = 0, α = None is the BCE; α weighs the two terms
    yb, p = (rng.uniform(size=6) > 0.5).astype(F64), rng.uniform(0.1, 0.9, size=6)
    assert float(L.focal(yb, p, gamma=0.0)) == pytest.approx(
        float(L.binary_cross_entropy(yb, p)), rel=1e-12)
    pos = float(L.focal(np.ones(3), p[:3], alpha=0.3))
    assert pos == pytest.approx(0.3 * float(L.focal(np.ones(3), p[:3])), rel=1e-12)
    neg = float(L.focal(np.zeros(3), p[:3], alpha=0.3))
    assert neg == pytest.approx(0.7 * float(L.focal(np.zeros(3), p[:3])), rel=1e-12)
    a, pp, n = (rng.normal(size=(4, 3)) for _ in range(3))
    assert float(L.triplet(a, pp, n, margin=0.0)) <= float(L.triplet(a, pp, n, margin=2.0))
    assert float(L.triplet(margin=2.0)(a, pp, n)) == float(L.triplet(a, pp, n, margin=2.0))


def test_dtype_handling():
    y64, p32 = np.array([1.0, 0.0, 1.0]), np.array([0.7, 0.2, 0.9], dtype=np.float32)
    v = L.binary_cross_entropy(y64, p32)  # y_true is cast to ŷ's dtype
    assert v.dtype == np.float32
    assert L.binary_cross_entropy.derivative(y64, p32).dtype == np.float32
    assert L.mse([1, 2, 3], [1, 2, 5]).dtype == F64  # lists and integers become float64
    assert float(L.mse([1, 2, 3], [1, 2, 5])) == pytest.approx(4 / 3)
    d = L.mse.derivative(np.array(1.0), np.array(3.0, dtype=np.float32))
    assert isinstance(d, np.ndarray) and d.shape == () and d.dtype == np.float32 and d == 4.0
    assert L.cross_entropy(np.array([1], dtype=np.uint8), np.zeros((1, 3), np.float32)).dtype \
        == np.float32
    # bool 0/1 targets are accepted as numbers
    assert float(L.binary_cross_entropy(np.array([True, False]), np.array([0.5, 0.5]))) == \
        pytest.approx(math.log(2))


# --- bad input -----------------------------------------------------------------------------------

def _raises(kind, fn, *parts):
    with pytest.raises(kind) as info:
        fn()
    msg = str(info.value)
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def test_bad_input_errors_name_the_loss_shapes_and_dtypes():
    y3, y31 = np.zeros(3), np.zeros((3, 1), dtype=np.float32)
    for name in ("mse", "mae", "huber", "log_cosh", "hinge", "binary_cross_entropy",
                 "binary_cross_entropy_with_logits", "focal", "categorical_cross_entropy",
                 "kl_divergence"):
        loss = getattr(L, name)
        yt = -np.ones(3) if name == "hinge" else y3
        _raises(ValueError, lambda: loss(yt, y31 + 0.5), f"calcml.losses.{name}", "same shape",
                "float64 (3,)", "float32 (3, 1)")
        _raises(ValueError, lambda: loss.derivative(yt, y31 + 0.5), f"calcml.losses.{name}")
    z = np.zeros((4, 3))
    _raises(IndexError, lambda: L.cross_entropy(np.array([0, 1, 3, 2]), z),
            "calcml.losses.cross_entropy", "0..2", "3 classes", "[0, 3]", "(4, 3)")
    _raises(IndexError, lambda: L.cross_entropy(np.array([0, -1, 1, 2]), z), "labels")
    _raises(TypeError, lambda: L.cross_entropy(np.array([0.0, 1.0, 2.0, 1.0]), z),
            "cross_entropy", "integers", "float64 (4,)")
    _raises(ValueError, lambda: L.cross_entropy(np.array([0, 1]), z), "cross_entropy",
            "(4,)", "(4, 3)", "int64 (2,)")
    _raises(ValueError, lambda: L.cross_entropy(np.array(0), np.array(1.0)), "class axis")
    _raises(ValueError, lambda: L.hinge(np.array([0.0, 1.0]), np.zeros(2)), "hinge", "-1 or +1",
            "2*y - 1")
    _raises(ValueError, lambda: L.binary_cross_entropy(np.ones(2), np.array([0.5, 1.2])),
            "binary_cross_entropy", "[0, 1]", "1.2")
    _raises(ValueError, lambda: L.binary_cross_entropy(np.array([2.0, 0.0]), np.full(2, 0.5)),
            "y_true", "[0, 1]")
    _raises(ValueError, lambda: L.binary_cross_entropy_with_logits(np.array([-1.0]),
                                                                    np.zeros(1)), "y_true")
    _raises(ValueError, lambda: L.kl_divergence(np.array([-0.1, 1.1]), np.full(2, 0.5)),
            "non-negative")
    _raises(ValueError, lambda: L.categorical_cross_entropy(np.ones(2), np.array([0.5, -0.5])),
            "[0, 1]")
    _raises(ValueError, lambda: L.huber(delta=-1.0), "huber", "delta")
    _raises(ValueError, lambda: L.huber(y3, y3, delta=0.0), "delta")
    _raises(ValueError, lambda: L.focal(gamma=-1.0), "focal", "gamma")
    _raises(ValueError, lambda: L.focal(alpha=1.5), "focal", "alpha")
    _raises(ValueError, lambda: L.triplet(margin=-1.0), "triplet", "margin")
    _raises(ValueError, lambda: L.triplet(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 4))),
            "triplet", "anchor", "negative", "(2, 4)")
    _raises(ValueError, lambda: L.triplet(np.array(1.0), np.array(1.0), np.array(1.0)),
            "feature axis")
    _raises(ValueError, lambda: L.mse(np.zeros(0), np.zeros(0)), "mse", "empty")
    _raises(TypeError, lambda: L.mse(y3, np.array(["a", "b", "c"])), "mse", "floating point")
    _raises(TypeError, lambda: L.mse(y3), "mse", "missing", "y_pred")
    _raises(TypeError, lambda: L.mse(y3, y3, 1.0), "mse", "too many")
    _raises(TypeError, lambda: L.mse(y3, y3, delta=1.0), "mse", "delta")
    _raises(TypeError, lambda: L.mse(), "mse", "missing")
    _raises(TypeError, lambda: L.huber(y3, y3, 1.0, delta=2.0), "huber", "twice")
    _raises(TypeError, lambda: L.huber(scale=1.0), "huber", "scale")


def test_a_constant_integer_tensor_target_is_cast_like_an_array():
    yp = cm.tensor(np.array([1.0, 3.0], dtype=np.float32), requires_grad=True)
    loss = cm.losses.mse(cm.tensor(np.array([1, 2])), yp)
    assert loss.dtype == np.float32 and float(loss) == pytest.approx(0.5)
    loss.backward()
    np.testing.assert_allclose(yp.grad, [0.0, 1.0])

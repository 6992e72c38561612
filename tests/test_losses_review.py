"""Review tests of ``cm.losses``: infinite logits in ``cross_entropy`` and a user's checks.

Expected values come from closed forms (the limit of softmax as logits go to ±inf) or from
plain-NumPy central differences, never from calcml.  Infinite logits make the fused fast path
emit a RuntimeWarning before the guarded path takes over, hence the filter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import calcml as cm

L = cm.losses
DTYPES = (np.float32, np.float64)
INF = np.inf
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _central(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        a, b = x.copy(), x.copy()
        a[i] += h
        b[i] -= h
        g[i] = (f(a) - f(b)) / (2 * h)
    return g


def _grads(y, z):
    """(value, derivative, cm.grad, Tensor.backward) of cross_entropy at (y, z)."""
    ce = L.cross_entropy
    t = cm.Tensor(z, requires_grad=True)
    out = ce(y, t)
    out.backward()
    return ce(y, z), ce.derivative(y, z), np.asarray(cm.grad(lambda q: ce(y, q))(z)), t.grad, out


# --- +inf / -inf logits with integer labels ---------------------------------------------------
# Limit: with k logits of a row at +inf, softmax -> 1/k on them, 0 elsewhere.  Row term:
# log k if the label is one of them, +inf otherwise; gradient row (softmax - onehot)/M.
INF_CASES = [
    # logits, labels, expected loss, expected gradient
    ([[INF, 0.0, -1.0]], [0], 0.0, [[0.0, 0.0, 0.0]]),
    ([[INF, 0.0, -1.0]], [1], INF, [[1.0, -1.0, 0.0]]),
    ([[INF, INF, -1.0]], [0], math.log(2.0), [[-0.5, 0.5, 0.0]]),
    ([[INF, -INF]], [0], 0.0, [[0.0, 0.0]]),
    ([[INF, 0.0], [1.0, 2.0]], [0, 1],
     math.log1p(math.exp(-1.0)) / 2,
     [[0.0, 0.0], [(1 / (1 + math.e)) / 2, -(1 / (1 + math.e)) / 2]]),
]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("z, lab, value, grad", INF_CASES)
def test_cross_entropy_plus_inf_logit_takes_the_limit(dt, z, lab, value, grad):
    z, lab = np.array(z, dt), np.array(lab)
    v, d, g, bw, out = _grads(lab, z)
    tol = 1e-6 if dt == np.float32 else 1e-12
    assert np.asarray(v).dtype == dt and np.asarray(out.numpy()).dtype == dt
    if math.isinf(value):
        assert float(v) == INF
    else:
        assert float(v) == pytest.approx(value, abs=tol)
    for a in (d, g, bw):
        assert a.dtype == dt and a.shape == z.shape
        np.testing.assert_allclose(a, np.array(grad), atol=tol)


@pytest.mark.parametrize("dt", DTYPES)
def test_cross_entropy_minus_inf_logit(dt):
    z = np.array([[0.0, -INF, 1.0]], dt)
    s = np.array([1.0, 0.0, math.e]) / (1.0 + math.e)
    # the label on a finite entry: a finite loss, gradient softmax - onehot with 0 at -inf
    v, d, g, bw, _ = _grads(np.array([0]), z)
    assert float(v) == pytest.approx(math.log1p(math.e), rel=1e-6)
    for a in (d, g, bw):
        np.testing.assert_allclose(a, [s - [1, 0, 0]], atol=1e-6)
    # the label on the -inf entry: +inf loss, finite gradient
    v, d, g, bw, _ = _grads(np.array([1]), z)
    assert float(v) == INF
    for a in (d, g, bw):
        np.testing.assert_allclose(a, [s - [0, 1, 0]], atol=1e-6)


def test_cross_entropy_row_of_minus_inf_is_nan():
    v, d, g, bw, _ = _grads(np.array([0]), np.array([[-INF, -INF]]))
    assert math.isnan(float(v))
    for a in (d, g, bw):
        assert np.isnan(a).all()


@pytest.mark.parametrize("dt", DTYPES)
def test_cross_entropy_soft_targets_mask_minus_inf(dt):
    """0 log 0 = 0: a target of 0 on a -inf (masked) logit contributes nothing (was NaN)."""
    z = np.array([[0.0, 1.0, -INF]], dt)
    t = np.array([[0.5, 0.5, 0.0]], dt)
    s = np.array([1.0, math.e, 0.0]) / (1.0 + math.e)
    value = -(0.5 * math.log(s[0]) + 0.5 * math.log(s[1]))
    v, d, g, bw, _ = _grads(t, z)
    assert np.asarray(v).dtype == dt
    assert float(v) == pytest.approx(value, rel=1e-6)
    for a in (d, g, bw):
        assert a.dtype == dt
        np.testing.assert_allclose(a, [s - t[0]], atol=1e-6)


def test_cross_entropy_derivative_soft_targets_plus_inf():
    t = np.array([[0.0, 1.0, 0.0]])
    d = L.cross_entropy.derivative(t, np.array([[INF, 0.0, 1.0]]))
    np.testing.assert_allclose(d, [[1.0, -1.0, 0.0]])


# --- finite checks a user would run -------------------------------------------------------------

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("big", [1e4, 1e30])
def test_cross_entropy_huge_finite_logits(dt, big):
    z = np.array([[big, 0, -big], [-big, big, 0], [0, 0, 0]], dt)
    lab = np.array([0, 0, 2])
    s = np.array([[1, 0, 0], [0, 1, 0], [1 / 3, 1 / 3, 1 / 3]])
    value = (0.0 + 2 * float(dt(big)) + math.log(3)) / 3
    grad = (s - np.eye(3)[lab]) / 3
    for y in (lab, np.eye(3, dtype=dt)[lab]):
        v, d, g, bw, _ = _grads(y, z)
        assert float(v) == pytest.approx(value, rel=1e-6)
        for a in (d, g, bw):
            assert a.dtype == dt
            np.testing.assert_allclose(a, grad, atol=1e-6)


@pytest.mark.parametrize("dt", DTYPES)
def test_cross_entropy_unnormalised_soft_targets(dt):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2, 3, 4)).astype(dt)
    t = (2 * rng.random((2, 3, 4))).astype(dt)
    z64, t64 = z.astype(float), t.astype(float)
    grad = (_softmax(z64) * t64.sum(-1, keepdims=True) - t64) / 6
    np.testing.assert_allclose(
        grad, _central(lambda q: -np.sum(t64 * np.log(_softmax(q))) / 6, z64), atol=1e-8)
    v, d, g, bw, _ = _grads(t, z)
    assert float(v) == pytest.approx(-np.sum(t64 * np.log(_softmax(z64))) / 6, rel=1e-5)
    for a in (d, g, bw):
        assert a.dtype == dt
        np.testing.assert_allclose(a, grad, atol=1e-5 if dt == np.float32 else 1e-12)


@pytest.mark.parametrize("y, msg", [
    (np.array([0, 3]), "0..2"), (np.array([0, -1]), "0..2"), (np.array([0.0, 1.0]), "integers"),
])
def test_cross_entropy_bad_labels_name_loss_shapes_dtypes(y, msg):
    with pytest.raises((IndexError, TypeError), match=msg) as e:
        L.cross_entropy(y, np.zeros((2, 3)))
    assert "cross_entropy" in str(e.value) and "(2, 3)" in str(e.value)
    assert str(y.dtype) in str(e.value)


def test_batch_of_one_matches_chapter_per_sample():
    p, y = np.array([0.3]), np.array([1.0])
    np.testing.assert_allclose(L.binary_cross_entropy.derivative(y, p), (p - y) / (p * (1 - p)))
    np.testing.assert_allclose(L.hinge.derivative(np.array([-1.0]), np.array([0.3])), [1.0])
    np.testing.assert_allclose(L.huber.derivative(np.array([0.0]), np.array([3.0])), [1.0])
    np.testing.assert_allclose(L.huber.derivative(np.array([0.0]), np.array([0.4])), [0.4])
    np.testing.assert_allclose(
        L.categorical_cross_entropy.derivative(np.array([[0.0, 1.0]]), np.array([[0.6, 0.4]])),
        [[0.0, -1 / 0.4]])

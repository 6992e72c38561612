"""The fast paths of the transforms (one array argument, a NumPy scalar output) give what the
general paths give: the same numbers, dtypes and memory guarantees, and the same errors."""

import numpy as np
import pytest

import calcml as cm


def _problem(dtype):
    rng = np.random.default_rng(3)
    A = (rng.normal(size=(20, 20)) / np.sqrt(20)).astype(dtype)
    x = rng.normal(size=20).astype(dtype)
    v = rng.normal(size=20).astype(dtype)
    return A, x, v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hvp_matches_analytic_and_keeps_dtype(dtype):
    A, x, v = _problem(dtype)
    f = lambda x: cm.sum(cm.tanh(A @ x))
    t = np.tanh(A @ x)
    want = A.T @ (-2.0 * t * (1.0 - t * t) * (A @ v))
    got = cm.hvp(f, (x,), (v,))
    assert type(got) is np.ndarray and got.dtype == dtype and got.shape == x.shape
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    # the one-array fast path and the general (tuple-of-trees) path agree exactly
    general = cm.hvp(lambda p: f(p[0]), ([x],), ([v],))[0]
    np.testing.assert_array_equal(got, general)
    assert not np.shares_memory(got, x) and not np.shares_memory(got, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hessian_matches_analytic(dtype):
    A, x, _ = _problem(dtype)
    t = np.tanh(A @ x)
    H = cm.hessian(lambda x: cm.sum(cm.tanh(A @ x)))(x)
    assert H.dtype == dtype and H.shape == (20, 20)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(H, A.T @ ((-2.0 * t * (1.0 - t * t))[:, None] * A),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_of_sum_is_a_fresh_writable_array(dtype):
    h = np.arange(16, dtype=dtype)
    g = cm.grad(lambda h: cm.sum(h))(h)
    value, g2 = cm.value_and_grad(lambda h: cm.sum(h))(h)
    for gi in (g, g2):
        assert type(gi) is np.ndarray and gi.dtype == dtype and gi.shape == h.shape
        assert gi.flags.writeable and gi.flags.owndata
        np.testing.assert_array_equal(gi, np.ones(16, dtype))
        assert not np.shares_memory(gi, h)
    assert value == h.sum() and value.dtype == dtype
    g[0] = 5.0  # writing one gradient changes neither the input nor the other gradient
    assert g2[0] == 1.0 and h[0] == 0.0


def test_identity_gradient_does_not_alias_the_seed_or_each_other():
    x = np.array(2.0)
    f = lambda x: x  # the backward pass hands the seed itself to the leaf
    g1, g2 = cm.grad(f)(x), cm.grad(f)(x)
    assert g1 == 1.0 and not np.shares_memory(g1, g2)
    g1[...] = 7.0
    assert cm.grad(f)(x) == 1.0
    # add passes one cotangent to both arguments: the two gradients must not share memory
    ga, gb = cm.grad(lambda a, b: cm.sum(a + b), argnums=(0, 1))(np.ones(3), np.ones(3))
    assert not np.shares_memory(ga, gb)


def test_grad_fast_path_equals_general_path():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(5, 4))
    x = rng.normal(size=4)
    f = lambda x, W: cm.sum(cm.tanh(W @ x) ** 2)
    fast = cm.grad(f)(x, W)  # int argnums, one array: the fast path
    general = cm.grad(f, argnums=(0,))(x, W)[0]  # a tuple of argnums: the general path
    np.testing.assert_array_equal(fast, general)
    gW = cm.grad(f, argnums=1)(x, W)
    np.testing.assert_array_equal(gW, cm.grad(f, argnums=-1)(x, W))
    # an argument f does not use has a zero gradient, in its dtype
    z = cm.grad(lambda x, y: cm.sum(y * 2.0), argnums=0)(x.astype(np.float32), W)
    assert z.dtype == np.float32 and not z.any()


def test_fast_path_errors_are_kept():
    x = np.ones(3)
    with pytest.raises(ValueError, match="must return a scalar"):
        cm.grad(lambda x: x * 2.0)(x)
    with pytest.raises(TypeError, match="returned a tuple"):
        cm.grad(lambda x: (cm.sum(x), 1.0))(x)
    with pytest.raises(ValueError, match="must return a scalar"):
        cm.hvp(lambda x: x * 2.0, (x,), (x,))
    with pytest.raises(TypeError, match="floating-point"):
        cm.grad(lambda x: cm.sum(x))(np.arange(3))

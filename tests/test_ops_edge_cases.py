"""Edge cases of the shape, elementwise and reduction ops.

Out-of-range axes raise (never wrap around), on plain arrays and under every transform;
x**0 and prod have finite, exact derivatives at zero, to second order; mean, var and std name
themselves in their errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from fdcheck import assert_close, central_grad

import calcml as cm

X = np.ones((2, 3))
T = np.arange(6.0).reshape(2, 3)  # a tangent


# --- out-of-range axes ----------------------------------------------------------------------

def _plain(f):
    return f(X)


def _grad(f):
    return cm.grad(lambda x: cm.sum(f(x)))(X)


def _jvp(f):
    return cm.jvp(f, (X,), (T,))


def _jac_fwd(f):  # a batch of tangents: leading batch axes in forward mode
    return cm.jacobian(f, mode="fwd")(X)


def _hessian(f):
    return cm.hessian(lambda x: cm.sum(f(x) * f(x)))(X)


TRANSFORMS = [_plain, _grad, _jvp, _jac_fwd, _hessian]

BAD_AXES = [
    ("expand_dims", lambda x: cm.expand_dims(x, 5), 5),
    ("expand_dims", lambda x: cm.expand_dims(x, (0, -5)), -5),
    ("take", lambda x: cm.take(x, np.array([0]), axis=3), 3),
    ("take", lambda x: cm.take(x, np.array([0]), axis=-3), -3),
    ("stack", lambda x: cm.stack([x, x], axis=7), 7),
    ("stack", lambda x: cm.stack([x, x], axis=-4), -4),
    ("swapaxes", lambda x: cm.swapaxes(x, 0, 5), 5),
    ("swapaxes", lambda x: cm.swapaxes(x, -3, 1), -3),
    ("moveaxis", lambda x: cm.moveaxis(x, 4, 0), 4),
    ("moveaxis", lambda x: cm.moveaxis(x, 0, -3), -3),
    ("transpose", lambda x: cm.transpose(x, (0, 3)), 3),
]


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.__name__.strip("_"))
@pytest.mark.parametrize(("name", "f", "axis"), BAD_AXES,
                         ids=[f"{n}-{a}" for n, _, a in BAD_AXES])
def test_out_of_range_axis_raises(name, f, axis, transform):
    with pytest.raises(np.exceptions.AxisError,
                       match=rf"calcml\.{name}: .*axis {axis} .*\(2, 3\)") as info:
        transform(f)
    assert isinstance(info.value, ValueError) and isinstance(info.value, IndexError)


def test_out_of_range_axis_matches_numpy():
    """The same calls are refused by NumPy itself: nothing here is a calcml extension."""
    for f in (lambda: np.expand_dims(X, 5), lambda: np.take(X, [0], axis=3),
              lambda: np.stack([X, X], axis=7), lambda: np.swapaxes(X, 0, 5),
              lambda: np.moveaxis(X, 4, 0), lambda: np.transpose(X, (0, 3))):
        with pytest.raises(np.exceptions.AxisError):
            f()


def test_repeated_axis_in_expand_dims():
    with pytest.raises(ValueError, match=r"calcml\.expand_dims: repeated axis"):
        cm.expand_dims(X, (1, 1))


VALID = [
    (lambda x: cm.expand_dims(x, -1), lambda x: np.expand_dims(x, -1)),
    (lambda x: cm.expand_dims(x, (0, -1)), lambda x: np.expand_dims(x, (0, -1))),
    (lambda x: cm.take(x, np.array([2, 0]), axis=-1), lambda x: np.take(x, [2, 0], axis=-1)),
    (lambda x: cm.stack([x, 2.0 * x], axis=-1), lambda x: np.stack([x, 2.0 * x], axis=-1)),
    (lambda x: cm.stack([x, 2.0 * x], axis=2), lambda x: np.stack([x, 2.0 * x], axis=2)),
    (lambda x: cm.swapaxes(x, -1, 0), lambda x: np.swapaxes(x, -1, 0)),
    (lambda x: cm.swapaxes(x, 1, 1), lambda x: np.swapaxes(x, 1, 1)),
    (lambda x: cm.moveaxis(x, -1, 0), lambda x: np.moveaxis(x, -1, 0)),
    (lambda x: cm.transpose(x, (-1, 0)), lambda x: np.transpose(x, (-1, 0))),
]


@pytest.mark.parametrize(("f", "ref"), VALID)
def test_negative_and_edge_axes_still_work(f, ref):
    want = ref(T)
    assert_close(f(T), want, rtol=0)
    out, tan = cm.jvp(f, (T,), (T,))
    assert_close(out, want, rtol=0)
    assert_close(tan, want, rtol=0)  # linear ops: the tangent goes through the same way
    jac = cm.jacobian(f, mode="fwd")(T)  # batched tangents, leading axes
    assert_close(jac, cm.jacobian(f, mode="rev")(T), rtol=0)
    assert jac.shape == want.shape + T.shape


# --- x ** y at zero -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_power_zero_exponent_at_zero(dtype):
    x = np.zeros(2, dtype)
    g = cm.grad(lambda x: cm.sum(x ** 0.0))(x)
    assert g.dtype == dtype
    assert_close(g, np.zeros(2), rtol=0)
    _, t = cm.jvp(lambda x: x ** 0.0, (x,), (np.ones(2, dtype),))
    assert t.dtype == dtype
    assert_close(t, np.zeros(2), rtol=0)
    assert_close(cm.grad(lambda x: cm.sum(x ** 0.0))(np.array([0.0, 2.0, -1.0], dtype)),
                 np.zeros(3), rtol=0)


def test_power_both_zero():
    gx, gy = cm.grad(lambda x, y: cm.sum(x ** y), argnums=(0, 1))(np.zeros(2), np.zeros(2))
    assert_close(gx, np.zeros(2), rtol=0)
    assert_close(gy, np.zeros(2), rtol=0)
    _, t = cm.jvp(lambda x, y: x ** y, (np.zeros(2), np.zeros(2)), (np.ones(2), np.ones(2)))
    assert_close(t, np.zeros(2), rtol=0)


def test_power_second_order_at_zero():
    # x**1 and x**0 are linear and constant: their Hessians are 0, also at x = 0
    for p in (0.0, 1.0):
        h = cm.hessian(lambda x, p=p: cm.sum(x ** p))(np.array([0.0, 2.0]))
        assert_close(h, np.zeros((2, 2)), rtol=0)
    # where only y is 0 the rule is the usual one: d²/dx dy x**y = 1/x at y = 0
    h = cm.hessian(lambda v: v[0] ** v[1])(np.array([2.0, 0.0]))
    assert_close(h, np.array([[0.0, 0.5], [0.5, np.log(2.0) ** 2]]), rtol=1e-12)


# --- prod with zero entries -----------------------------------------------------------------

def _fd_hessian(f, x, h=1e-3):
    """Second differences of ``f`` (exact up to rounding for prod, linear in each entry)."""
    n = x.size
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            def at(si, sj):
                y = x.astype(np.float64).copy()
                y[i] += si * h
                y[j] += sj * h
                return float(f(y))
            H[i, j] = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / (4 * h * h)
    return H


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prod_gradient_with_a_zero(dtype):
    x = np.array([0.0, 2.0, 3.0], dtype)
    g = cm.grad(cm.prod)(x)
    assert g.dtype == dtype
    assert_close(g, np.array([6.0, 0.0, 0.0]), rtol=0)
    _, t = cm.jvp(cm.prod, (x,), (np.array([1.0, 1.0, 1.0], dtype),))
    assert_close(t, 6.0, rtol=0)


@pytest.mark.parametrize("x", [[0.0, 2.0, 3.0, -1.5], [1.5, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 2.0],
                               [0.5, 2.0, 3.0, -1.5]])
def test_prod_gradient_and_hessian_match_finite_differences(x):
    x = np.array(x)
    assert_close(cm.grad(cm.prod)(x), central_grad(np.prod, [x])[0], rtol=1e-7, atol=1e-8)
    want = _fd_hessian(np.prod, x)
    assert_close(cm.hessian(cm.prod)(x), want, rtol=1e-6, atol=1e-6)
    # forward over reverse, and reverse over forward
    assert_close(cm.jacobian(cm.grad(cm.prod), mode="fwd")(x), want, rtol=1e-6, atol=1e-6)
    assert_close(cm.jacobian(lambda v: cm.jacobian(cm.prod, mode="fwd")(v), mode="rev")(x),
                 want, rtol=1e-6, atol=1e-6)


def test_prod_along_an_axis_with_zeros():
    x = np.array([[0.0, 2.0, 3.0], [1.0, 0.0, 0.0], [2.0, 0.5, 4.0]])
    w = np.array([1.0, -2.0, 0.5])

    def f(x):
        return cm.sum(cm.prod(x, axis=1) * w)

    g = cm.grad(f)(x)
    assert np.all(np.isfinite(g))
    assert_close(g, central_grad(lambda x: np.sum(np.prod(x, axis=1) * w), [x])[0],
                 rtol=1e-7, atol=1e-8)
    # keepdims and a tuple of axes go through the same rule
    y = x.reshape(3, 3, 1)
    g2 = cm.grad(lambda y: cm.sum(cm.prod(y, axis=(1, 2), keepdims=True)[:, :, 0] * w[:, None]))(y)
    assert_close(g2.reshape(3, 3), g, rtol=1e-12)
    h = cm.hessian(lambda v: f(cm.reshape(v, (3, 3))))(x.ravel())
    assert_close(h, _fd_hessian(lambda v: np.sum(np.prod(v.reshape(3, 3), axis=1) * w),
                                x.ravel()), rtol=1e-6, atol=1e-6)


# --- mean, var, std name themselves ---------------------------------------------------------

@pytest.mark.parametrize("name", ["mean", "var", "std"])
def test_mean_var_std_errors_are_named(name):
    f = getattr(cm, name)
    for run in (lambda: f(X, axis=2), lambda: cm.grad(lambda x: cm.sum(f(x, axis=2)))(X)):
        with pytest.raises(np.exceptions.AxisError, match=rf"calcml\.{name}: .*axis 2"):
            run()
    with pytest.raises(np.exceptions.AxisError, match=r"\(2, 3\)"):
        f(X, axis=2)


# --- mean: NumPy's numbers, bit for bit -----------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_is_numpys_mean_bit_for_bit(dtype):
    # float32/float64 means are computed as the sum over the axes divided by the count,
    # without NumPy's Python-level bookkeeping: the same numbers and types as numpy.mean,
    # called directly and under a trace.
    rng = np.random.default_rng(7)
    for shape, axes in [((100,), [None, 0, -1]), ((7, 13), [None, 0, 1, (0, 1), -2]),
                        ((3, 4, 5), [None, (0, 2), -1, (-3, -1)])]:
        x = rng.normal(size=shape).astype(dtype)
        for axis in axes:
            for keepdims in (False, True):
                want = np.mean(x, axis=axis, keepdims=keepdims)
                got = cm.mean(x, axis=axis, keepdims=keepdims)
                assert type(got) is type(want) and got.dtype == want.dtype
                assert np.array_equal(got, want)
                traced = cm.mean(cm.tensor(x, requires_grad=True), axis=axis,
                                 keepdims=keepdims).data
                assert np.array_equal(traced, want) and traced.dtype == want.dtype


def test_mean_of_other_dtypes_and_of_nothing_is_numpys():
    ints = np.arange(6).reshape(2, 3)
    assert cm.mean(ints).dtype == np.float64 and cm.mean(ints, axis=0).tolist() == [1.5, 2.5, 3.5]
    half = np.ones(4, np.float16)
    assert cm.mean(half).dtype == np.float16
    with pytest.warns(RuntimeWarning):
        assert np.isnan(cm.mean(np.zeros((0,), np.float32)))
    with pytest.raises(ValueError, match=r"calcml\.mean: .*\(2, 3\)"):
        cm.mean(np.zeros((2, 3)), axis=(0, 0))


def test_scatter_add_of_plain_values_adds_repeats_and_names_itself():
    from calcml.ops.shape import scatter_add

    v = np.array([1.0, 2.0, 3.0], np.float32)
    out = scatter_add(v, (np.array([0, 2, 0]),), (4,))
    assert out.dtype == np.float32 and out.tolist() == [4.0, 0.0, 2.0, 0.0]
    assert scatter_add(v, (slice(1, 4),), (5,)).tolist() == [0.0, 1.0, 2.0, 3.0, 0.0]
    with pytest.raises(IndexError, match=r"calcml\.scatter_add: .*float32 \(3,\)"):
        scatter_add(v, (np.array([0, 5, 0]),), (4,))

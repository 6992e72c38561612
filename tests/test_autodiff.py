"""The transforms of calcml.autodiff: composition, argument handling, shapes and closed forms.

Expected values are closed-form derivatives written out in NumPy, or central differences;
none is computed by calcml.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from fdcheck import assert_close, central_grad

import calcml as cm

RNG = np.random.default_rng(20240601)
A = RNG.normal(size=(4, 3))
X = RNG.normal(size=3)
V = RNG.normal(size=3)


def f_tanh(x):
    """f(x) = Σ tanh(A x)."""
    return cm.sum(cm.tanh(A @ x))


def f_tanh_grad(x):
    t = np.tanh(A @ x)
    return A.T @ (1 - t**2)


def f_tanh_hess(x):
    t = np.tanh(A @ x)
    return A.T @ np.diag(-2 * t * (1 - t**2)) @ A


# --- nesting transforms ---------------------------------------------------------------------

@pytest.mark.parametrize("x", [-1.3, 0.2, 2.5])
def test_grad_of_grad_scalar_closed_form(x):
    def f(x):
        return x**3 * cm.sin(x)

    d1 = 3 * x**2 * np.sin(x) + x**3 * np.cos(x)
    d2 = 6 * x * np.sin(x) + 6 * x**2 * np.cos(x) - x**3 * np.sin(x)
    x = np.array(x)
    assert_close(cm.grad(f)(x), d1, 1e-12)
    assert_close(cm.grad(cm.grad(f))(x), d2, 1e-12)


def test_third_derivative():
    x = np.array(0.7)
    assert_close(cm.grad(cm.grad(cm.grad(cm.sin)))(x), -np.cos(0.7), 1e-12)
    assert_close(cm.grad(cm.grad(cm.grad(cm.exp)))(x), np.exp(0.7), 1e-12)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_jacobian_of_grad_is_the_hessian(mode):
    H = cm.jacobian(cm.grad(f_tanh), mode=mode)(X)
    assert H.shape == (3, 3)
    assert_close(H, f_tanh_hess(X), 1e-12)
    assert_close(cm.hessian(f_tanh)(X), f_tanh_hess(X), 1e-12)


def test_jacobian_of_jacobian_both_orders():
    def f(x):
        return x**3

    x = np.array([0.5, -1.0, 2.0])
    expected = np.zeros((3, 3, 3))
    for i in range(3):
        expected[i, i, i] = 6 * x[i]
    for outer in ("rev", "fwd"):
        for inner in ("rev", "fwd"):
            got = cm.jacobian(cm.jacobian(f, mode=inner), mode=outer)(x)
            assert_close(got, expected, 1e-12, err_msg=f"{outer} of {inner}")


def test_grad_of_a_function_that_calls_jvp():
    # d/dx <∇f(x), v> = H v
    def directional(x):
        return cm.jvp(f_tanh, (x,), (V,))[1]

    assert_close(cm.grad(directional)(X), f_tanh_hess(X) @ V, 1e-12)


def test_jvp_of_grad_and_jvp_of_jvp():
    _, hv = cm.jvp(cm.grad(f_tanh), (X,), (V,))
    assert_close(hv, f_tanh_hess(X) @ V, 1e-12)
    _, vhv = cm.jvp(lambda x: cm.jvp(f_tanh, (x,), (V,))[1], (X,), (V,))
    assert_close(vhv, V @ f_tanh_hess(X) @ V, 1e-12)


def test_grad_of_value_and_grad_value():
    def g(x):
        value, gradient = cm.value_and_grad(f_tanh)(x)
        return value + cm.sum(gradient * V)

    assert_close(cm.grad(g)(X), f_tanh_grad(X) + f_tanh_hess(X) @ V, 1e-12)


def test_derivatives_of_other_transforms():
    x = np.array([0.5, -1.0, 2.0])
    ones = np.ones(3)
    # d/dx Σ vjp(y ↦ y³)(1) = d/dx Σ 3x² = 6x
    assert_close(cm.grad(lambda x: cm.sum(cm.vjp(lambda y: y**3, x)[1](ones)[0]))(x), 6 * x,
                 1e-14)
    # d/dc Σ vjp(y ↦ y³)(c) = 3x²: the cotangent itself is differentiated
    assert_close(cm.grad(lambda c: cm.sum(cm.vjp(lambda y: y**3, x)[1](c)[0]))(ones), 3 * x**2,
                 1e-14)
    # d/dt jvp(Σ y³)(t) = 3x²: so is the tangent, batched or not
    assert_close(cm.grad(lambda t: cm.jvp(lambda y: cm.sum(y**3), (x,), (t,))[1])(ones),
                 3 * x**2, 1e-14)
    tb = cm.grad(lambda t: cm.sum(cm.jvp(lambda y: cm.sum(y**3), (x,), (t,), batched=True)[1]))(
        np.ones((2, 3)))
    assert_close(tb, np.tile(3 * x**2, (2, 1)), 1e-14)
    # d/dx Σ diag(jacobian(y ↦ y²)) and Σ hvp: reverse over the rev-mode Jacobian / the HVP
    assert_close(cm.grad(lambda x: cm.sum(cm.jacobian(lambda y: y**2)(x)))(x), 2 * ones, 1e-14)
    assert_close(cm.grad(lambda x: cm.sum(cm.hvp(lambda y: cm.sum(y**4), (x,), (ones,))))(x),
                 24 * x, 1e-14)
    # third order: the Jacobian of the Hessian
    T = cm.jacobian(cm.hessian(lambda y: cm.sum(y**4)), mode="fwd")(x)
    expected = np.zeros((3, 3, 3))
    expected[np.arange(3), np.arange(3), np.arange(3)] = 24 * x
    assert_close(T, expected, 1e-14)


# --- perturbation confusion -----------------------------------------------------------------

def test_perturbation_confusion_grad():
    # d/dx [x * d/dy (x + y)] = d/dx [x * 1] = 1; a confused engine gives 2.
    x0, y0 = np.array(2.0), np.array(5.0)
    got = cm.grad(lambda x: x * cm.grad(lambda y: x + y)(y0))(x0)
    assert_close(got, 1.0, 1e-15)


def test_perturbation_confusion_jvp():
    x0, y0, one = np.array(2.0), np.array(5.0), np.array(1.0)

    def outer(x):
        return x * cm.jvp(lambda y: x + y, (y0,), (one,))[1]

    value, tangent = cm.jvp(outer, (x0,), (one,))
    assert_close(value, 2.0, 1e-15)
    assert_close(tangent, 1.0, 1e-15)


@pytest.mark.parametrize("inner", ["grad", "jvp"])
@pytest.mark.parametrize("outer", ["grad", "jvp"])
def test_inner_derivative_closing_over_outer_variable(inner, outer):
    # d/dx [x * d/dy (x y)] = d/dx x² = 2x, whichever mode is inside or outside.
    x0, y0, one = np.array(1.5), np.array(-0.5), np.array(1.0)

    def h(x):
        if inner == "grad":
            d = cm.grad(lambda y: x * y)(y0)
        else:
            d = cm.jvp(lambda y: x * y, (y0,), (one,))[1]
        return x * d

    if outer == "grad":
        got = cm.grad(h)(x0)
    else:
        got = cm.jvp(h, (x0,), (one,))[1]
    assert_close(got, 2 * 1.5, 1e-15)


def test_inner_variable_fed_an_outer_value():
    # g(x) = d/dy (x y²) at y = x = 2x²; g'(x) = 4x.
    x0 = np.array(1.25)
    assert_close(cm.grad(lambda x: cm.grad(lambda y: x * y * y)(x))(x0), 4 * 1.25, 1e-14)


# --- argnums, has_aux, containers -----------------------------------------------------------

def _fxy(x, y):
    return cm.sum(x * x * y) + cm.sum(cm.sin(y))


def test_argnums_int_tuple_and_negative():
    x, y = RNG.normal(size=3), RNG.normal(size=3)
    gx, gy = 2 * x * y, x * x + np.cos(y)
    assert_close(cm.grad(_fxy)(x, y), gx, 1e-12)
    assert_close(cm.grad(_fxy, argnums=1)(x, y), gy, 1e-12)
    assert_close(cm.grad(_fxy, argnums=-1)(x, y), gy, 1e-12)
    both = cm.grad(_fxy, argnums=(0, 1))(x, y)
    assert isinstance(both, tuple) and len(both) == 2
    assert_close(both[0], gx, 1e-12)
    assert_close(both[1], gy, 1e-12)
    swapped = cm.grad(_fxy, argnums=(1, 0))(x, y)
    assert_close(swapped[0], gy, 1e-12)
    assert_close(swapped[1], gx, 1e-12)
    single = cm.grad(_fxy, argnums=(1,))(x, y)
    assert isinstance(single, tuple) and len(single) == 1
    value, g = cm.value_and_grad(_fxy, argnums=(0, 1))(x, y)
    assert_close(value, np.sum(x * x * y) + np.sum(np.sin(y)), 1e-12)
    assert_close(g[1], gy, 1e-12)


def test_keyword_arguments_are_passed_through_not_differentiated():
    x = RNG.normal(size=3)
    assert_close(cm.grad(lambda x, scale=1.0: cm.sum(x * x) * scale)(x, scale=3.0), 6 * x, 1e-12)


def test_has_aux():
    x = RNG.normal(size=3)

    def f(x):
        y = x * 3.0
        return cm.sum(y * y), {"y": y, "n": 7}

    g, aux = cm.grad(f, has_aux=True)(x)
    assert_close(g, 18 * x, 1e-12)
    assert type(aux["y"]) is np.ndarray  # stripped of the trace
    assert_close(aux["y"], 3 * x, 1e-15)
    assert aux["n"] == 7
    (value, aux2), g2 = cm.value_and_grad(f, has_aux=True)(x)
    assert_close(value, np.sum(9 * x * x), 1e-12)
    assert_close(g2, 18 * x, 1e-12)
    assert type(aux2["y"]) is np.ndarray

    out, vjp_fn, aux3 = cm.vjp(lambda x: (x * x, x + 1.0), x, has_aux=True)
    assert_close(out, x * x, 1e-15)
    assert type(aux3) is np.ndarray
    assert_close(aux3, x + 1.0, 1e-15)
    assert_close(vjp_fn(np.ones(3))[0], 2 * x, 1e-15)


def test_arguments_that_are_dicts_lists_and_tuples():
    W, b = RNG.normal(size=(2, 3)), RNG.normal(size=2)
    x, y = RNG.normal(size=3), RNG.normal(size=2)

    def loss(params):
        r = params["W"] @ x + params["b"] - y
        return cm.sum(r * r)

    r = W @ x + b - y
    g = cm.grad(loss)({"W": W, "b": b})
    assert isinstance(g, dict) and set(g) == {"W", "b"}
    assert_close(g["W"], 2 * np.outer(r, x), 1e-12)
    assert_close(g["b"], 2 * r, 1e-12)
    # key order does not matter
    g2 = cm.grad(loss)({"b": b, "W": W})
    assert_close(g2["W"], g["W"], 0)

    def loss_seq(params):
        w, (bb,) = params[0], params[1]
        r = w @ x + bb - y
        return cm.sum(r * r)

    gl = cm.grad(loss_seq)([W, (b,)])
    assert isinstance(gl, list) and isinstance(gl[1], tuple)
    assert_close(gl[0], 2 * np.outer(r, x), 1e-12)
    assert_close(gl[1][0], 2 * r, 1e-12)

    # an unused leaf gets zeros of its shape and dtype
    gu = cm.grad(lambda p: cm.sum(p["a"] * 2.0))({"a": x, "unused": np.ones((2, 2), np.float32)})
    assert_close(gu["a"], 2 * np.ones(3), 0)
    assert gu["unused"].shape == (2, 2) and gu["unused"].dtype == np.float32
    assert not gu["unused"].any()

    # forward mode and HVPs take the same containers
    tW, tb = RNG.normal(size=(2, 3)), RNG.normal(size=2)
    value, tangent = cm.jvp(loss, ({"W": W, "b": b},), ({"W": tW, "b": tb},))
    assert_close(value, np.sum(r * r), 1e-12)
    assert_close(tangent, np.sum(2 * r * (tW @ x + tb)), 1e-12)
    hv = cm.hvp(loss, ({"W": W, "b": b},), ({"W": tW, "b": tb},))
    dr = tW @ x + tb  # H v = 2 Jᵀ J v for a least-squares loss
    assert_close(hv["W"], 2 * np.outer(dr, x), 1e-12)
    assert_close(hv["b"], 2 * dr, 1e-12)


def test_python_numbers_and_int_lists_as_leaves():
    # A Python float is a 0-d float64 leaf; nested Python lists are containers of leaves.
    assert_close(cm.grad(lambda x: x * x * x)(2.0), 12.0, 1e-15)
    g = cm.grad(lambda xs: xs[0] * xs[1])([3.0, 4.0])
    assert_close(g[0], 4.0, 0)
    assert_close(g[1], 3.0, 0)


def test_constant_function_has_zero_gradient():
    x = np.ones((2, 3), np.float32)
    g = cm.grad(lambda x: np.float32(3.0))(x)
    assert g.shape == (2, 3) and g.dtype == np.float32 and not g.any()
    _, t = cm.jvp(lambda x: np.ones(4), (x,), (x,))
    assert t.shape == (4,) and not t.any()


def test_gradient_is_a_fresh_writable_array():
    x = RNG.normal(size=3)
    g = cm.grad(lambda x: cm.sum(x))(x)  # the gradient is the seed broadcast: must be copied
    assert g.flags.writeable
    g += 1.0
    assert_close(cm.grad(lambda x: cm.sum(x))(x), np.ones(3), 0)


def test_control_flow_on_comparisons():
    def f(x):
        return cm.sum(x * x) if cm.sum(x) > 0 else cm.sum(-x)

    assert_close(cm.grad(f)(np.array([1.0, 2.0])), [2.0, 4.0], 0)
    assert_close(cm.grad(f)(np.array([-1.0, -2.0])), [-1.0, -1.0], 0)


# --- vjp ------------------------------------------------------------------------------------

def test_vjp_called_many_times_on_one_graph():
    def f(x):
        return A @ cm.tanh(x)

    out, vjp_fn = cm.vjp(f, X)
    assert_close(out, A @ np.tanh(X), 1e-15)
    J = A * (1 - np.tanh(X) ** 2)
    us = [RNG.normal(size=4) for _ in range(3)]
    results = [vjp_fn(u) for u in us]
    for u, res in zip(us, results, strict=True):
        assert isinstance(res, tuple) and len(res) == 1
        assert_close(res[0], J.T @ u, 1e-12)
    # linear in the cotangent, and the graph is not consumed by a call
    assert_close(vjp_fn(us[0] + 2 * us[1])[0], results[0][0] + 2 * results[1][0], 1e-12)
    assert_close(vjp_fn(us[0])[0], results[0][0], 0)


def test_vjp_keeps_its_graph_exactly_as_long_as_vjp_fn():
    refs = []

    def f(x):
        y = cm.sin(x) * 2.0
        refs.append(weakref.ref(y._value))
        return cm.exp(y)

    out, vjp_fn = cm.vjp(f, X)
    assert refs[0]() is not None
    assert_close(vjp_fn(np.ones(3))[0], np.exp(2 * np.sin(X)) * 2 * np.cos(X), 1e-14)
    assert refs[0]() is not None  # kept for further calls
    del vjp_fn
    gc.collect()
    assert refs[0]() is None
    assert_close(out, np.exp(2 * np.sin(X)), 1e-15)


def _run_vjp(refs):
    def f(x):
        y = cm.sin(x) * 2.0
        refs.append(weakref.ref(y._value))
        return cm.exp(y)

    _, vjp_fn = cm.vjp(f, X)
    vjp_fn(np.ones(3))


def _run_jacobian_rev(refs):
    def f(x):
        y = cm.sin(x) * 2.0
        refs.append(weakref.ref(y._value))
        return cm.exp(y)

    cm.jacobian(f, mode="rev")(X)


@pytest.mark.parametrize("run", [_run_vjp, _run_jacobian_rev], ids=["vjp", "jacobian-rev"])
def test_graphs_are_freed_by_reference_counting(run):
    refs = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        run(refs)
        assert refs[0]() is None, "the recorded graph outlived the transform"
    finally:
        if enabled:
            gc.enable()


def test_vjp_many_primals_and_tuple_output():
    x, y = RNG.normal(size=3), RNG.normal(size=3)
    out, vjp_fn = cm.vjp(lambda x, y: (x * y, cm.sum(cm.exp(x))), x, y)
    assert_close(out[0], x * y, 1e-15)
    assert_close(out[1], np.sum(np.exp(x)), 1e-12)
    u, s = RNG.normal(size=3), np.array(0.5)
    gx, gy = vjp_fn((u, s))
    assert_close(gx, u * y + s * np.exp(x), 1e-12)
    assert_close(gy, u * x, 1e-12)


# --- Jacobians and Hessians -----------------------------------------------------------------

@pytest.mark.parametrize(
    "xshape,fn",
    [
        ((2, 3), lambda x: cm.matmul(np.arange(8.0).reshape(4, 2), x)),  # (2,3) -> (4,3)
        ((3,), lambda x: cm.sum(x * x)),  # -> scalar
        ((), lambda x: cm.stack([x, x * x, cm.sin(x)])),  # scalar -> (3,)
        ((2, 2), lambda x: cm.softmax(x, axis=0)[None] * np.ones((3, 1, 1))),  # -> (3,2,2)
    ],
)
def test_jacobian_shapes_and_modes_agree(xshape, fn):
    x = RNG.normal(size=xshape)
    out = np.asarray(fn(x))
    jr = cm.jacobian(fn, mode="rev")(x)
    jf = cm.jacobian(fn, mode="fwd")(x)
    assert jr.shape == out.shape + x.shape
    assert jf.shape == out.shape + x.shape
    assert_close(jr, jf, 1e-12)
    # each column is a central difference of the function along a basis vector
    flat = x.reshape(-1)
    for j in range(flat.size):
        e = np.zeros_like(flat)
        e[j] = 1e-6
        col = (np.asarray(fn((flat + e).reshape(xshape))) -
               np.asarray(fn((flat - e).reshape(xshape)))) / 2e-6
        assert_close(jr.reshape(out.shape + (-1,))[..., j], col, 1e-6)


def test_jacobian_closed_form_and_argnums_tuple():
    B = RNG.normal(size=(4, 2))
    x = RNG.normal(size=(2, 3))
    J = cm.jacobian(lambda b, x: b @ x, argnums=(0, 1))(B, x)
    assert isinstance(J, tuple) and len(J) == 2
    JB, Jx = J
    assert JB.shape == (4, 3, 4, 2) and Jx.shape == (4, 3, 2, 3)
    expect_B = np.einsum("ik,jl->ijkl", np.eye(4), x.T)  # d(Bx)_ij / dB_kl = δ_ik x_lj
    expect_x = np.einsum("ik,jl->ijkl", B, np.eye(3))  # d(Bx)_ij / dx_kl = B_ik δ_jl
    assert_close(JB, expect_B, 1e-15)
    assert_close(Jx, expect_x, 1e-15)
    JBf, Jxf = cm.jacobian(lambda b, x: b @ x, argnums=(0, 1), mode="fwd")(B, x)
    assert_close(JBf, expect_B, 1e-15)
    assert_close(Jxf, expect_x, 1e-15)


def test_jacobian_of_tuple_output_with_argnums_tuple():
    # JAX's layout: the output's structure outside, one Jacobian per argument inside.
    a, b = RNG.normal(size=2), RNG.normal(size=3)
    for mode in ("rev", "fwd"):
        (Jaa, Jab), (Jsa, Jsb) = cm.jacobian(
            lambda a, b: (a * 2.0, cm.sum(b) * a[0]), argnums=(0, 1), mode=mode)(a, b)
        assert_close(Jaa, 2 * np.eye(2), 0)
        assert Jab.shape == (2, 3) and not Jab.any()
        assert_close(Jsa, [np.sum(b), 0.0], 1e-15)
        assert_close(Jsb, np.full(3, a[0]), 1e-15)


@pytest.mark.parametrize("layout", ["C", "F"])
def test_matmul_derivatives_whatever_the_memory_layout(layout):
    # x @ w.T with w stored (out, in) hands matmul a column-major operand.
    x = RNG.normal(size=(5, 3))
    w = RNG.normal(size=(4, 3))
    G = RNG.normal(size=(5, 4))
    y = np.asfortranarray(w.T) if layout == "F" else np.ascontiguousarray(w.T)

    def f(x, y):
        return cm.sum(cm.tanh(x @ y) * G)

    t = np.tanh(x @ w.T)
    d = G * (1 - t**2)
    gx, gy = cm.grad(f, argnums=(0, 1))(x, y)
    assert_close(gx, d @ w, 1e-12)
    assert_close(gy, x.T @ d, 1e-12)
    vx, vy = RNG.normal(size=x.shape), RNG.normal(size=y.shape)
    hx, hy = cm.hvp(f, (x, y), (vx, vy))
    eps = 1e-6
    gp = cm.grad(f, argnums=(0, 1))(x + eps * vx, y + eps * vy)
    gm = cm.grad(f, argnums=(0, 1))(x - eps * vx, y - eps * vy)
    assert_close(hx, (gp[0] - gm[0]) / (2 * eps), 1e-6)
    assert_close(hy, (gp[1] - gm[1]) / (2 * eps), 1e-6)
    W = cm.tensor(w, requires_grad=True)
    cm.sum(cm.tanh(cm.tensor(x) @ W.T) * G).backward()
    assert_close(W.grad, (x.T @ d).T, 1e-12)
    assert W.grad.flags.c_contiguous  # seen through the transpose, laid out like W itself


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_first_order_rules_match_the_traced_rules(dtype):
    # On plain matrices the reverse rules call NumPy directly; under an outer trace they run
    # in calcml operations.  Both must give the same cotangents, in the operands' dtype.
    x = RNG.normal(size=(5, 3)).astype(dtype)
    w = RNG.normal(size=(4, 3)).astype(dtype)
    g = RNG.normal(size=(5, 4)).astype(dtype)
    for y in (w.T, np.ascontiguousarray(w.T)):
        _, pull = cm.vjp(lambda a, b: a @ b, x, y)
        gx, gy = pull(g)
        assert gx.dtype == dtype and gy.dtype == dtype
        assert_close(gx, g @ y.T, 1e-6 if dtype == np.float32 else 1e-14)
        assert_close(gy, x.T @ g, 1e-6 if dtype == np.float32 else 1e-14)
        # the same pull-back with the cotangent traced by an outer grad (the calcml-ops path)
        c = RNG.normal(size=(5, 3)).astype(dtype)
        dg = cm.grad(lambda g: cm.sum(pull(g)[0] * c))(g)
        assert_close(dg, c @ y, 1e-6 if dtype == np.float32 else 1e-14)


def test_batched_jvp_gives_the_jacobian():
    def f(x):
        return cm.sin(x) * cm.sum(x)

    x = RNG.normal(size=4)
    _, cols = cm.jvp(f, (x,), (np.eye(4),), batched=True)
    J = np.diag(np.cos(x)) * np.sum(x) + np.sin(x)[:, None]
    assert_close(cols.T, J, 1e-12)


def test_hessian_closed_forms():
    M = RNG.normal(size=(3, 3))
    b = RNG.normal(size=3)
    x = RNG.normal(size=3)
    assert_close(cm.hessian(lambda x: 0.5 * (x @ (M @ x)) + b @ x)(x), (M + M.T) / 2, 1e-12)
    assert_close(cm.hessian(lambda x: cm.sum(cm.exp(x)))(x), np.diag(np.exp(x)), 1e-12)
    p = np.exp(x) / np.sum(np.exp(x))
    assert_close(cm.hessian(cm.logsumexp)(x), np.diag(p) - np.outer(p, p), 1e-12)
    X2 = RNG.normal(size=(2, 3))
    H = cm.hessian(lambda x: cm.sum(x**3))(X2)
    assert H.shape == (2, 3, 2, 3)
    assert_close(H.reshape(6, 6), np.diag(6 * X2.reshape(-1)), 1e-12)
    # argnums picks the argument; the other is held fixed
    y = RNG.normal(size=3)
    assert_close(cm.hessian(lambda x, y: cm.sum(x * y**2), argnums=1)(x, y), np.diag(2 * x), 1e-12)


def test_hessian_argnums_tuple_blocks():
    # f = Σ a_i · Σ b_j²: H[i][j] = ∂²f/∂x_i∂x_j with shape x_i.shape + x_j.shape (as in JAX).
    a, b = RNG.normal(size=2), RNG.normal(size=3)
    H = cm.hessian(lambda a, b: cm.sum(a) * cm.sum(b * b), argnums=(0, 1))(a, b)
    assert [[h.shape for h in row] for row in H] == [[(2, 2), (2, 3)], [(3, 2), (3, 3)]]
    assert not H[0][0].any()
    assert_close(H[0][1], np.tile(2 * b, (2, 1)), 1e-15)
    assert_close(H[1][0], np.tile(2 * b[:, None], (1, 2)), 1e-15)
    assert_close(H[1][1], 2 * np.sum(a) * np.eye(3), 1e-15)


def _flat_f(f, template):
    """``f`` of a container, as a function of the vector of all its leaves' entries."""
    leaves, td = cm._core.tree.flatten(template)
    sizes = [v.size for v in leaves]

    def g(z):
        parts, off = [], 0
        for v, s in zip(leaves, sizes):
            parts.append(np.asarray(z[off:off + s]).reshape(v.shape))
            off += s
        return f(cm._core.tree.unflatten(td, parts))

    return g, np.concatenate([v.reshape(-1) for v in leaves])


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_jacobian_of_a_container_argument_matches_central_differences(mode):
    # JAX's layout: the argument's structure inside, each leaf a block out.shape + leaf.shape.
    W, b, c = RNG.normal(size=(2, 3)), RNG.normal(size=2), RNG.normal(size=())

    def f(p):
        return cm.tanh(p["W"] @ X + p["b"]) * p["c"]

    p = {"W": W, "b": b, "c": c}
    J = cm.jacobian(f, mode=mode)(p)
    assert set(J) == {"W", "b", "c"}
    assert J["W"].shape == (2, 2, 3) and J["b"].shape == (2, 2) and J["c"].shape == (2,)
    t = np.tanh(W @ X + b)
    d = (1 - t**2) * c
    assert_close(J["W"], np.einsum("ik,j->ikj", np.diag(d), X), 1e-12)
    assert_close(J["b"], np.diag(d), 1e-12)
    assert_close(J["c"], t, 1e-12)
    # a list argument, with a tuple output, against central differences of the flat function
    q = [W, (b, c)]

    def h(q):
        return (cm.sum(q[0] ** 2) * q[1][1], cm.sin(q[1][0]) * q[1][1])

    Jq = cm.jacobian(h, mode=mode)(q)
    for k in range(2):
        g, z = _flat_f(lambda q: np.asarray(h(q)[k]), q)
        eps = 1e-6
        cols = np.stack([(g(z + eps * e) - g(z - eps * e)) / (2 * eps)
                         for e in np.eye(z.size)], axis=-1)
        got = np.concatenate([Jq[k][0].reshape(cols.shape[:-1] + (-1,)),
                              Jq[k][1][0].reshape(cols.shape[:-1] + (-1,)),
                              Jq[k][1][1].reshape(cols.shape[:-1] + (-1,))], axis=-1)
        assert_close(got, cols, 1e-6)


def test_jacobian_of_a_container_keeps_each_leaf_dtype_and_modes_agree():
    p = (RNG.normal(size=3).astype(np.float32), RNG.normal(size=2))

    def f(p):
        return cm.concatenate([cm.exp(p[0]), p[1] * cm.sum(p[0])])

    Jr = cm.jacobian(f)(p)
    Jf = cm.jacobian(f, mode="fwd")(p)
    assert Jr[0].shape == (5, 3) and Jr[1].shape == (5, 2)
    # each block in its leaf's dtype, in both modes (as grad gives the gradient)
    assert Jr[0].dtype == Jf[0].dtype == np.float32
    assert Jr[1].dtype == Jf[1].dtype == np.float64
    for a, b in zip(Jr, Jf):
        assert_close(a, b, 1e-6)
    assert_close(Jr[0][:3], np.diag(np.exp(p[0].astype(np.float64))), 1e-6)
    assert_close(Jr[1][3:], np.sum(p[0]) * np.eye(2), 1e-6)
    J32 = cm.jacobian(lambda p: cm.exp(p[0]) * p[1], mode="fwd")(
        [np.ones(2, np.float32), np.ones(2, np.float32)])
    assert J32[0].dtype == np.float32 and J32[1].dtype == np.float32


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_jacobian_of_an_empty_output_is_an_empty_block(mode):
    # A size-0 output has no row to pull back: reverse mode must not stack zero rows.
    x = np.linspace(-1.0, 1.0, 3)
    J = cm.jacobian(lambda x: x[:0] * 2.0, mode=mode)(x)
    assert J.shape == (0, 3) and J.dtype == np.float64
    p = [x.astype(np.float32), np.zeros((0, 2))]
    Jp = cm.jacobian(lambda p: (p[0][:0] * 2.0, p[1] * cm.sum(p[0])), mode=mode)(p)
    assert [[b.shape for b in row] for row in Jp] == [[(0, 3), (0, 0, 2)],
                                                       [(0, 2, 3), (0, 2, 0, 2)]]
    assert [b.dtype for b in Jp[0]] == [np.float32, np.float64]


def test_hessian_of_a_container_argument_is_the_block_hessian():
    # f(w, b) = Σ tanh(A w + b) with w, b in a dict: the blocks of the full Hessian.
    w, b = RNG.normal(size=3), RNG.normal(size=4)

    def f(p):
        return cm.sum(cm.tanh(A @ p["w"] + p["b"]))

    H = cm.hessian(f)({"w": w, "b": b})
    t = np.tanh(A @ w + b)
    s = -2 * t * (1 - t**2)  # tanh''
    assert_close(H["w"]["w"], A.T @ np.diag(s) @ A, 1e-12)
    assert_close(H["w"]["b"], A.T @ np.diag(s), 1e-12)
    assert_close(H["b"]["w"], np.diag(s) @ A, 1e-12)
    assert_close(H["b"]["b"], np.diag(s), 1e-12)
    # with argnums a tuple and a container argument, JAX's layout: the gradient's structure
    # outside (a dict for p, a leaf for c), a tuple over argnums at each of its leaves
    H2 = cm.hessian(lambda p, c: f(p) * c, argnums=(0, 1))({"w": w, "b": b}, np.array(2.0))
    assert_close(H2[0]["b"][0]["b"], 2 * np.diag(s), 1e-12)
    assert_close(H2[0]["b"][0]["w"], 2 * np.diag(s) @ A, 1e-12)
    assert_close(H2[0]["w"][1], A.T @ (1 - t**2), 1e-12)
    assert_close(H2[1][0]["b"], 1 - t**2, 1e-12)
    assert H2[1][1].shape == () and H2[1][1] == 0


def test_hvp_equals_hessian_times_v():
    assert_close(cm.hvp(f_tanh, (X,), (V,)), f_tanh_hess(X) @ V, 1e-12)

    def g(x, y):
        return cm.sum(x * x * y) + cm.sum(cm.exp(y))

    x, y, vx, vy = (RNG.normal(size=3) for _ in range(4))
    hx, hy = cm.hvp(g, (x, y), (vx, vy))
    # H = [[diag(2y), diag(2x)], [diag(2x), diag(e^y)]]
    assert_close(hx, 2 * y * vx + 2 * x * vy, 1e-12)
    assert_close(hy, 2 * x * vx + np.exp(y) * vy, 1e-12)


@pytest.mark.parametrize("f", [
    f_tanh,
    lambda x: cm.sum(x) * 3.0,                   # linear: H = 0 (the gradient is a constant)
    lambda x: cm.sum(x * x) * cm.sum(cm.sin(x)),
    lambda x: cm.sum(cm.sigmoid(x[:2]) * x[1:]),  # indexing on the way
])
def test_hvp_of_one_array_equals_jvp_of_grad(f):
    # One array argument takes a direct path; it must agree with the general composition.
    direct = cm.hvp(f, (X,), (V,))
    composed = cm.jvp(cm.grad(f), (X,), (V,))[1]
    assert isinstance(direct, np.ndarray) and direct.shape == X.shape
    assert_close(direct, composed, 1e-14)
    assert_close(cm.hvp(f, [X], [V]), direct, 1e-15)


def test_hvp_refuses_non_scalar_and_integer_outputs():
    with pytest.raises(ValueError, match=r"calcml\.hvp: the function must return a scalar"):
        cm.hvp(lambda x: x * 2.0, (X,), (V,))
    with pytest.raises(TypeError, match=r"calcml\.hvp: .*dtype"):
        cm.hvp(lambda x: cm.sum(x > 0), (X,), (V,))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transforms_keep_the_dtype(dtype):
    x, v = X.astype(dtype), V.astype(dtype)
    A_ = A.astype(dtype)

    def f(x):
        return cm.sum(cm.tanh(A_ @ x) * 2.0) + cm.sum(x**2) / 3.0

    outs = {
        "grad": cm.grad(f)(x),
        "value": cm.value_and_grad(f)(x)[0],
        "jvp": cm.jvp(f, (x,), (v,))[1],
        "vjp": cm.vjp(lambda x: A_ @ x, x)[1](np.ones(4, dtype))[0],
        "jacobian rev": cm.jacobian(lambda x: A_ @ cm.sin(x))(x),
        "jacobian fwd": cm.jacobian(lambda x: A_ @ cm.sin(x), mode="fwd")(x),
        "hessian": cm.hessian(f)(x),
        "hvp": cm.hvp(f, (x,), (v,)),
        "grad of grad": cm.grad(lambda x: cm.sum(cm.grad(f)(x) * v))(x),
    }
    for name, val in outs.items():
        assert np.asarray(val).dtype == dtype, f"{name}: {np.asarray(val).dtype}"
    if dtype == np.float32:
        assert_close(outs["hessian"], f_tanh_hess(X) * 2 + np.eye(3) * 2 / 3, 1e-4)


# --- operators, NumPy dispatch and the composites outside the registry ----------------------

def test_operators_and_reflected_operators():
    x = np.array([0.5, 1.5, 2.0])
    M = RNG.normal(size=(2, 3))

    def f(x):
        return (cm.sum(2.0 ** x) + cm.sum(1.0 / x) + cm.sum(1.0 - x) + cm.sum(M @ x)
                + cm.sum(-x) + cm.sum(+x) + cm.sum(abs(x - 1.0)) + x[1] * x[2] + cm.sum(x / 4.0)
                + cm.sum(x - 3.0) + cm.sum(x**2))

    fd = central_grad(f, [x])[0]
    assert_close(cm.grad(f)(x), fd, 1e-6)
    _, t = cm.jvp(f, (x,), (np.ones(3),))
    assert_close(t, fd.sum(), 1e-6)


def test_numpy_functions_dispatch_to_calcml():
    x = RNG.normal(size=(2, 3))

    def via_numpy(x):
        return np.sum(np.exp(x) * np.tanh(x)) + np.mean(np.square(x)) + np.max(x @ np.ones(3))

    def via_calcml(x):
        return cm.sum(cm.exp(x) * cm.tanh(x)) + cm.mean(x * x) + cm.max(x @ np.ones(3))

    assert_close(cm.grad(via_numpy)(x), cm.grad(via_calcml)(x), 1e-14)
    assert_close(cm.grad(via_numpy)(x), central_grad(via_numpy, [x])[0], 1e-6)


@pytest.mark.parametrize(
    "fn,np_fn",
    [
        (lambda x: cm.swapaxes(x, 0, 2), lambda x: np.swapaxes(x, 0, 2)),
        (lambda x: cm.moveaxis(x, 0, -1), lambda x: np.moveaxis(x, 0, -1)),
        (lambda x: cm.square(x), np.square),
        (lambda x: x.T, lambda x: x.T),
        (lambda x: x.reshape(4, 6), lambda x: x.reshape(4, 6)),
    ],
)
def test_exported_helpers_outside_the_registry(fn, np_fn):
    x = RNG.normal(size=(2, 3, 4))
    W = RNG.normal(size=np_fn(x).shape)
    assert_close(fn(x), np_fn(x), 0)

    def F(x):
        return cm.sum(fn(x) * W)

    fd = central_grad(lambda x: np.sum(np_fn(x) * W), [x])[0]
    assert_close(cm.grad(F)(x), fd, 1e-6)
    t = RNG.normal(size=x.shape)
    assert_close(cm.jvp(fn, (x,), (t,))[1], (np_fn(x + t) - np_fn(x - t)) / 2, 1e-6)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4)])
def test_swapaxes_and_moveaxis_like_numpy_for_every_axis_pair(shape):
    x = RNG.normal(size=shape)
    t = RNG.normal(size=shape)
    n = len(shape)
    for a in range(-n, n):
        for b in range(-n, n):
            for fn, np_fn in ((cm.swapaxes, np.swapaxes), (cm.moveaxis, np.moveaxis)):
                value, tangent = cm.jvp(lambda x: fn(x, a, b), (x,), (t,))
                what = f"{fn.__name__}(x{shape}, {a}, {b})"
                assert_close(value, np_fn(x, a, b), 0, err_msg=what)
                assert_close(tangent, np_fn(t, a, b), 0, err_msg=what)
                assert_close(fn(x.tolist(), a, b), np_fn(x, a, b), 0, err_msg=what + " on lists")
    assert_close(cm.square(x.tolist()), x**2, 0)


# --- long chains ----------------------------------------------------------------------------

N_OPS = 100_000


def test_100k_op_chain_reverse_and_forward_and_graph_freed():
    refs = []

    def chain(x):
        for i in range(N_OPS // 2):
            x = x * 1.0000001 + 0.0
            if i == 10:
                refs.append(weakref.ref(x._value))
        return cm.sum(x)

    x = np.ones(4)
    expected = 1.0000001 ** (N_OPS // 2)
    assert_close(cm.grad(chain)(x), np.full(4, expected), 1e-12)
    # nothing outside the call keeps the recorded graph: freed by reference counting alone
    assert refs[0]() is None
    _, t = cm.jvp(chain, (x,), (np.ones(4),))
    assert_close(t, 4 * expected, 1e-12)


def test_100k_op_chain_of_transcendental_ops():
    # x ← x + 1e-3 sin(x): three primitives a step; the derivative is Π (1 + 1e-3 cos x_k).
    steps = N_OPS // 3 + 1

    def chain(x):
        for _ in range(steps):
            x = x + cm.sin(x) * 1e-3
        return cm.sum(x)

    x0 = np.array([0.3, -1.0, 2.0])
    x, d = x0.copy(), np.ones(3)
    for _ in range(steps):
        d = d * (1 + 1e-3 * np.cos(x))
        x = x + np.sin(x) * 1e-3
    assert_close(cm.grad(chain)(x0), d, 1e-10)


def test_gradients_through_model_parameters_are_tensors_only_while_recording():
    lin = cm.nn.Linear(3, 2, rng=0)
    x = np.array([0.5, -1.0, 2.0])

    def f(x):
        return cm.sum(cm.tanh(lin(x)) ** 2)

    g = cm.grad(f)(x)
    assert isinstance(g, cm.Tensor) and g.requires_grad  # depends on the weights: recordable
    cm.sum(g * g).backward()  # a gradient penalty reaches the parameters
    assert lin.weight.grad is not None and np.all(np.isfinite(lin.weight.grad))
    with cm.no_grad():
        g0 = cm.grad(f)(x)
        J = cm.jacobian(lambda x: lin(x), mode="fwd")(x)
        h = cm.hvp(f, (x,), (np.ones(3),))
    assert type(g0) is np.ndarray and type(J) is np.ndarray and type(h) is np.ndarray
    np.testing.assert_allclose(g0, g.data, rtol=1e-12)
    np.testing.assert_allclose(J, lin.weight.data, rtol=1e-12)


def test_returned_gradients_share_no_memory():
    # add's rule hands one cotangent to both inputs; the seed or cotangent is never returned
    g = cm.grad(lambda x, y: (x + y)[0], argnums=(0, 1))(np.ones(1), np.ones(1))
    assert not np.shares_memory(g[0], g[1])
    _, fn = cm.vjp(lambda x, y: x + y, np.ones(3), np.ones(3))
    c = np.ones(3)
    gx, gy = fn(c)
    assert gx is not c and not np.shares_memory(gx, c) and not np.shares_memory(gx, gy)
    a, b = cm.tensor([1.0], requires_grad=True), cm.tensor([2.0], requires_grad=True)
    (a + b).backward()
    a.grad *= 5.0
    np.testing.assert_array_equal(b.grad, [1.0])
    x = cm.tensor(np.zeros(3, np.float32), requires_grad=True)
    gr = np.ones((3, 1), np.float32)
    x.reshape(3, 1).backward(gr)
    gr[0, 0] = 100.0
    np.testing.assert_array_equal(x.grad, [1.0, 1.0, 1.0])


def test_dtype_kept_with_python_base_and_backward_gradient():
    x = np.array([0.5, 1.5], np.float32)
    assert cm.jvp(lambda x: 2.0**x, (x,), (np.ones_like(x),))[1].dtype == np.float32
    assert cm.hessian(lambda x: cm.sum(2.0**x))(x).dtype == np.float32
    t = cm.tensor(x, requires_grad=True)
    (2.0**t).sum().backward()
    assert t.grad.dtype == np.float32
    np.testing.assert_allclose(t.grad, np.log(2.0) * 2.0**x, rtol=1e-6)
    w = cm.tensor(np.ones(3, np.float32), requires_grad=True)
    (w * 2.0).backward(np.ones(3))
    assert w.grad.dtype == np.float32


def test_numpy_semantics_of_concatenate_none_bool_and_empty_reductions():
    a = np.arange(4.0).reshape(2, 2)
    assert cm.jacobian(lambda x: cm.concatenate([x, a], axis=None))(a).shape == (8, 2, 2)
    with pytest.raises(ValueError):
        bool(cm.tensor([0.0, 0.0]))
    assert bool(cm.tensor(0.0)) is False and bool(cm.tensor(2.0)) is True
    with np.errstate(invalid="ignore"):
        assert np.isnan(cm.grad(lambda x: cm.var(x, ddof=1))(np.array([1.0]))).all()


def test_batched_forward_mode_through_clip_with_bounds_that_widen_the_output():
    x = np.linspace(-2.0, 2.0, 5)
    lo = np.full((2, 1), -1.0)   # the output is (2, 5): the bounds broadcast x up

    def f(x):
        return cm.clip(x, lo, 1.0)

    np.testing.assert_array_equal(cm.jacobian(f, mode="fwd")(x), cm.jacobian(f, mode="rev")(x))
    H = cm.hessian(lambda x: cm.sum(cm.clip(x, lo, 1.0) ** 2))(x)
    np.testing.assert_allclose(H, np.diag([0.0, 4.0, 4.0, 4.0, 0.0]))


def test_docstring_examples_of_the_transforms_run():
    import doctest

    import calcml.autodiff

    result = doctest.testmod(calcml.autodiff, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0

"""SymPy agreement: calcml's reverse and forward mode against SymPy's exact derivatives.

``cm.symbolic`` evaluates a function on SymPy symbols (values only) and differentiates the
expression with SymPy's ``diff``, so its derivatives are independent of calcml's rules.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

import calcml as cm
from calcml._core.registry import PRIMITIVES, defprim
from calcml._core.trace import bind

S = cm.symbolic
A = np.array([[1.0, -0.5, 0.25], [0.3, 2.0, -1.0], [0.0, 0.7, 0.4]])
W3 = np.array([1.0, -2.0, 0.5])


def _normal(rng, n):
    return rng.normal(size=n)


def _positive(rng, n):
    return rng.uniform(0.5, 2.0, size=n)


# name: (f of one vector, its length, a sampler of points in the domain)
FUNCTIONS = {
    "sin_exp": (lambda v: cm.sin(v[0]) * cm.exp(v[1]), 2, _normal),
    "cos_tan": (lambda v: cm.cos(v[0] * v[1]) + cm.tan(v[0] / 3.0), 2, _normal),
    "tanh_square": (lambda v: cm.tanh(v[0]) ** 2 * v[1], 2, _normal),
    "log_log1p": (lambda v: cm.log(v[0]) + cm.log1p(v[1] ** 2) * v[0], 2, _positive),
    "expm1_division": (lambda v: cm.expm1(v[0] * v[1]) / (1.0 + v[1] ** 2), 2, _normal),
    "sqrt_norm": (lambda v: cm.sqrt(cm.sum(v * v) + 1.0), 3, _normal),
    "arctan": (lambda v: cm.arctan(v[0] - 2.0 * v[1]) * v[0], 2, _normal),
    "sigmoid_softplus": (lambda v: cm.sigmoid(v[0] * v[1]) + cm.softplus(v[0] - v[1]), 2,
                         _normal),
    "power": (lambda v: v[0] ** v[1] + v[1] ** 3.0, 2, _positive),
    "division": (lambda v: (v[0] ** 3 - v[1]) / (v[0] * v[1] + 4.0), 2, _positive),
    "logsumexp": (lambda v: cm.logsumexp(v) * v[0], 3, _normal),
    "softmax": (lambda v: cm.sum(cm.softmax(v) * W3), 3, _normal),
    "log_softmax": (lambda v: cm.sum(cm.log_softmax(v) * cm.sin(v)), 3, _normal),
    "mean_var_std": (lambda v: cm.mean(v ** 2) + cm.var(v) * cm.std(v), 3, _normal),
    "matmul_prod": (lambda v: v @ A @ v + cm.prod(v), 3, _normal),
    "mlp": (lambda v: cm.sum(cm.tanh(A @ v + 0.1) ** 2) + cm.einsum("i,ij,j->", v, A, v), 3,
            _normal),
}


def _sympy_numeric(f, n):
    g = S.grad(f, n, vector=True)
    h = S.hessian(f, n, vector=True)
    return S.lambdify(g, n, vector=True), S.lambdify(h, n, vector=True)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_sympy_agreement_on_scalar_functions(name):
    f, n, sample = FUNCTIONS[name]
    grad_s, hess_s = _sympy_numeric(f, n)
    rng = np.random.default_rng(sorted(FUNCTIONS).index(name))
    for _ in range(3):
        v = sample(rng, n)
        g_exact, h_exact = grad_s(v), hess_s(v)
        assert g_exact.shape == (n,) and h_exact.shape == (n, n)
        opts = dict(rtol=1e-9, atol=1e-11 * (1.0 + np.max(np.abs(h_exact))))
        np.testing.assert_allclose(cm.grad(f)(v), g_exact, **opts)
        np.testing.assert_allclose(cm.jacobian(f, mode="fwd")(v), g_exact, **opts)
        _, t = cm.jvp(f, (v,), (np.eye(n),), batched=True)
        np.testing.assert_allclose(t, g_exact, **opts)
        np.testing.assert_allclose(cm.hessian(f)(v), h_exact, **opts)
        np.testing.assert_allclose(cm.jacobian(cm.grad(f), mode="rev")(v), h_exact, **opts)
        u = rng.normal(size=n)
        np.testing.assert_allclose(cm.hvp(f, (v,), (u,)), h_exact @ u, **opts)


x, y = sp.symbols("x y", real=True)


def test_exact_gradient_and_hessian():
    f = lambda a, b: cm.sin(a) * cm.exp(b)
    assert S.grad(f, [x, y]) == [sp.exp(y) * sp.cos(x), sp.exp(y) * sp.sin(x)]
    assert S.expression(f, [x, y]) == sp.sin(x) * sp.exp(y)
    assert S.hessian(lambda a, b: a ** 2 * b, [x, y]) == sp.Matrix([[2 * y, 2 * x], [2 * x, 0]])
    # default symbols x0, x1, ... are real
    x0, x1 = S.symbols(2)
    assert x0.is_real and S.grad(f, 2) == [sp.exp(x1) * sp.cos(x0), sp.exp(x1) * sp.sin(x0)]


def test_exact_constants_and_vector_argument():
    assert S.expression(lambda a: 0.5 * a + 1.0, [x]) == x / 2 + 1
    assert S.expression(lambda a: cm.mean(cm.stack([a, a, 2.0 * a])), [x]) == sp.Rational(4, 3) * x
    x0, x1, x2 = S.symbols(3)
    assert S.grad(lambda v: cm.sum(v ** 2), 3, vector=True) == [2 * x0, 2 * x1, 2 * x2]
    assert S.expression(lambda v: cm.logsumexp(v), 3, vector=True) == sp.log(
        sp.exp(x0) + sp.exp(x1) + sp.exp(x2))
    assert S.jacobian(lambda v: v * v, 2, vector=True) == sp.Matrix([[2 * x0, 0], [0, 2 * x1]])


def test_piecewise_functions():
    leaky = lambda a: cm.where(a > 0, a, 0.1 * a)
    assert S.expression(leaky, [x]) == sp.Piecewise((x, x > 0), (x / 10, True))
    assert S.grad(leaky, [x])[0].subs(x, 2) == 1
    assert S.grad(leaky, [x])[0].subs(x, -2) == sp.Rational(1, 10)
    f = lambda v: cm.sum(cm.relu(v) ** 3) + cm.max(v) + cm.sum(cm.abs(v) * cm.clip(v, -1.0, 1.0))
    g = S.grad(f, 3, vector=True)
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = rng.normal(size=3)
        np.testing.assert_allclose(S.evaluate(g, 3, v, vector=True), cm.grad(f)(v), rtol=1e-12)


SMOOTH = [
    lambda a, b: cm.sin(a) * cm.exp(b) * a,
    lambda a, b: cm.tanh(a * b) / (1.0 + b ** 2),
    lambda a, b: cm.sigmoid(a) * cm.log1p(b ** 2) + cm.arctan(a - b),
    lambda a, b: cm.logsumexp(cm.stack([a, b, a * b])),
    lambda a, b: cm.sum(cm.softmax(cm.stack([a, 2.0 * b])) * cm.stack([a, b])),
]


@pytest.mark.parametrize("k", range(len(SMOOTH)))
def test_calcml_rules_written_out_equal_sympy_diff(k):
    """calcml's own reverse- and forward-mode derivatives, run on symbols, are SymPy's."""
    f = SMOOTH[k]
    exact = S.grad(f, [x, y])
    rev = S.expression(lambda a, b: cm.grad(f, argnums=(0, 1))(a, b), [x, y])
    fwd = [S.expression(lambda a, b, t=t: cm.jvp(f, (a, b), t)[1], [x, y])
           for t in ((np.array(1.0), np.array(0.0)), (np.array(0.0), np.array(1.0)))]
    for want, r, d in zip(exact, rev, fwd, strict=True):
        assert sp.simplify(r - want) == 0
        assert sp.simplify(d - want) == 0


_ids = itertools.count()


@pytest.fixture
def custom_prim():
    name = f"_test_symbolic_{next(_ids)}"
    prim = defprim(name, np.sinh, vjps=(lambda g, out, a: g * cm.sqrt(1.0 + out ** 2),),
                   jvps=(lambda t, out, a: t * cm.sqrt(1.0 + out ** 2),), elementwise=True)
    yield name, (lambda a: bind(prim, (a,), {}))
    PRIMITIVES.pop(name, None)
    S.SYMPY_FORMS.pop(name, None)


def test_missing_sympy_form_names_the_primitive(custom_prim):
    name, sinh = custom_prim
    with pytest.raises(S.SymbolicError, match=name):
        S.grad(lambda a: sinh(a) * 2.0, 1)
    S.register(name, sp.sinh, elementwise=True)
    assert S.grad(lambda a: sinh(a) * 2.0, [x]) == [2 * sp.cosh(x)]


def test_lambdify_and_evaluate_shapes():
    f = lambda a, b: a ** 2 * b
    assert S.evaluate(S.expression(f, 2), 2, 3.0, 2.0) == pytest.approx(18.0)
    np.testing.assert_allclose(S.evaluate(S.grad(f, 2), 2, 3.0, 2.0), [12.0, 9.0])
    np.testing.assert_allclose(S.lambdify(S.hessian(f, 2), 2)(3.0, 2.0), [[4.0, 6.0], [6.0, 0.0]])


def test_bad_input():
    with pytest.raises(TypeError, match="callable"):
        S.grad(3.0, 1)
    with pytest.raises(ValueError, match="scalar"):
        S.grad(lambda v: v * 2.0, 2, vector=True)
    with pytest.raises(TypeError, match="SymPy symbols"):
        S.grad(lambda a: a, ["x"])

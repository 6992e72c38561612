"""Hypothesis: random compositions of elementwise and reduction primitives, differentiated in
both modes, against central differences.

A program is a list of 2 to 5 steps applied to a running value ``y`` (starting at the input
``x``); a step is a smooth unary function, a binary operation with ``x`` (so broadcasting back
against the input is exercised), or a reduction that keeps its axes.  The output is weighted
by fixed random numbers and summed.
"""

from __future__ import annotations

import numpy as np
from fdcheck import assert_close, central_directional, central_grad
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import calcml as cm

# Each step: (name, f(y, x, axis)).  Only smooth operations: central differences must hold
# for any input Hypothesis finds, ties and zeros included.
UNARY = {
    "sin": lambda y, x, a: cm.sin(y),
    "cos": lambda y, x, a: cm.cos(y),
    "tanh": lambda y, x, a: cm.tanh(y),
    "arctan": lambda y, x, a: cm.arctan(y),
    "sigmoid": lambda y, x, a: cm.sigmoid(y),
    "softplus": lambda y, x, a: cm.softplus(y),
    "exp_tanh": lambda y, x, a: cm.exp(cm.tanh(y)),
    "square": lambda y, x, a: y * y,
    "pow3": lambda y, x, a: y**3.0,
    "sqrt1p": lambda y, x, a: cm.sqrt(y * y + 1.0),
    "log1p_sq": lambda y, x, a: cm.log1p(y * y),
    "log_cosh": lambda y, x, a: cm.log(cm.exp(y * 0.5) + cm.exp(y * -0.5)),
    "expm1_neg_sq": lambda y, x, a: cm.expm1(-(y * y)),
    "neg": lambda y, x, a: -y,
}
BINARY = {
    "add_x": lambda y, x, a: y + x,
    "sub_x": lambda y, x, a: x - y,
    "mul_x": lambda y, x, a: y * x,
    "div_x": lambda y, x, a: y / (x * x + 1.0),
    "where_x": lambda y, x, a: cm.where(x > 0, y, x * 2.0),
}
REDUCE = {
    "sum": lambda y, x, a: cm.sum(y, axis=a, keepdims=True),
    "mean": lambda y, x, a: cm.mean(y, axis=a, keepdims=True),
    "var": lambda y, x, a: cm.var(y, axis=a, keepdims=True),
    "logsumexp": lambda y, x, a: cm.logsumexp(y, axis=a, keepdims=True),
    "softmax": lambda y, x, a: cm.softmax(y, axis=a),
    "log_softmax": lambda y, x, a: cm.log_softmax(y, axis=a),
    "prod_sigmoid": lambda y, x, a: cm.prod(cm.sigmoid(y), axis=a, keepdims=True),
}
STEPS = {**UNARY, **BINARY, **REDUCE}

SHAPES = [(3,), (2, 3), (3, 1), (2, 2, 2)]


@st.composite
def programs(draw):
    shape = draw(st.sampled_from(SHAPES))
    x = draw(arrays(np.float64, shape, elements=st.floats(-2.0, 2.0, allow_subnormal=False)))
    names = draw(st.lists(st.sampled_from(sorted(STEPS)), min_size=2, max_size=5))
    axes = [draw(st.integers(-len(shape), len(shape) - 1)) for _ in names]
    seed = draw(st.integers(0, 2**16))
    return x, list(zip(names, axes, strict=True)), seed


def _build(program, x):
    def f(z):
        y = z
        for name, axis in program:
            y = STEPS[name](y, z, axis)
        return y

    out_shape = np.asarray(f(x)).shape
    return f, out_shape


def _well_conditioned(x, program, bound=20.0):
    """Central differences with a fixed step only resolve functions that do not oscillate or
    grow wildly: keep every intermediate value finite and within ``bound`` (x -> (2x)^9 then
    sin, say, has derivatives near 1e7 that no step size of 1e-6 can follow)."""
    y = x
    for name, axis in program:
        y = np.asarray(STEPS[name](y, x, axis))
        if not np.all(np.isfinite(y)) or np.max(np.abs(y), initial=0.0) > bound:
            return False
    return True


def _where_safe(x, program):
    """``where(x > 0, ...)`` has a jump in its value at x = 0: keep central differences off it."""
    if any(name == "where_x" for name, _ in program):
        return np.where(np.abs(x) < 1e-3, 0.5, x)
    return x


@settings(max_examples=50, deadline=None)
@given(programs())
def test_random_compositions_reverse_mode(case):
    x, program, seed = case
    x = _where_safe(x, program)
    assume(_well_conditioned(x, program))
    f, out_shape = _build(program, x)
    W = np.random.default_rng(seed).normal(size=out_shape)

    def F(z):
        return cm.sum(f(z) * W)

    g = cm.grad(F)(x)
    fd = central_grad(F, [x])[0]
    assert_close(g, fd, 1e-5, err_msg=f"program {program}")


@settings(max_examples=50, deadline=None)
@given(programs())
def test_random_compositions_forward_mode(case):
    x, program, seed = case
    x = _where_safe(x, program)
    assume(_well_conditioned(x, program))
    f, out_shape = _build(program, x)
    rng = np.random.default_rng(seed)
    t = rng.normal(size=x.shape)
    out, tangent = cm.jvp(f, (x,), (t,))
    assert_close(out, np.asarray(f(x)), 1e-12, err_msg=f"program {program}")
    assert tangent.shape == out_shape
    fd = central_directional(f, [x], [t])
    assert_close(tangent, fd, 1e-5, err_msg=f"program {program}")
    # a batch of tangents gives the same columns as one tangent at a time
    T = np.stack([t, rng.normal(size=x.shape)])
    _, tb = cm.jvp(f, (x,), (T,), batched=True)
    assert_close(tb[0], tangent, 1e-10, err_msg=f"program {program}")
    assert_close(tb[1], central_directional(f, [x], [T[1]]), 1e-5, err_msg=f"program {program}")


@settings(max_examples=25, deadline=None)
@given(programs())
def test_random_compositions_second_order(case):
    x, program, seed = case
    x = _where_safe(x, program)
    assume(_well_conditioned(x, program))
    f, out_shape = _build(program, x)
    rng = np.random.default_rng(seed)
    W, v = rng.normal(size=out_shape), rng.normal(size=x.shape)

    def F(z):
        return cm.sum(f(z) * W)

    hv = cm.hvp(F, (x,), (v,))
    eps = 1e-5
    gF = cm.grad(F)
    fd = (gF(x + eps * v) - gF(x - eps * v)) / (2 * eps)
    assert_close(hv, fd, 1e-4, err_msg=f"program {program}")

"""Review of the fused dense stack in nn.Sequential: regressions against the layer-by-layer path."""

import numpy as np
import pytest

import calcml as cm

nn = cm.nn


def _layer_by_layer(seq, x):
    for m in seq:
        x = m(x)
    return x


def _model():
    return nn.Sequential(nn.Linear(2, 3, rng=0), nn.Tanh(), nn.Linear(3, 1, rng=1))


def test_forward_assigned_after_first_call_is_used():
    seq = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Tanh(), nn.Linear(4, 2, rng=1))
    x = np.random.default_rng(0).normal(size=(5, 3))
    seq(x)  # the plan is made and cached here
    seq[2].forward = lambda h: h[..., :2] * 0 + 7.0
    np.testing.assert_array_equal(seq(x).data, _layer_by_layer(seq, x).data)
    np.testing.assert_array_equal(seq(x).data, np.full((5, 2), 7.0))


def test_symbolic_expression_of_sequential():
    pytest.importorskip("sympy")
    import calcml.symbolic as sym

    seq = _model()
    p = {n: v.data for n, v in seq.named_parameters()}

    def fused(x):
        return cm.sum(nn.functional_call(seq, p, x))

    def by_layer(x):
        h = cm.tanh(cm.ops.linear(x, p["0.weight"], p["0.bias"]))
        return cm.sum(cm.ops.linear(h, p["2.weight"], p["2.bias"]))

    e1 = sym.expression(fused, 2, vector=True)
    e2 = sym.expression(by_layer, 2, vector=True)
    assert (e1 - e2).simplify() == 0
    g1 = sym.expression(cm.grad(fused), 2, vector=True)
    g2 = sym.expression(cm.grad(by_layer), 2, vector=True)
    assert all((a - b).simplify() == 0 for a, b in zip(np.ravel(g1), np.ravel(g2)))

"""Primitives that keep forward intermediates for their reverse rules (``impl_saving``).

The softmax cross-entropy keeps e = exp(z - max z) and s = Σ e from its forward pass, so the
backward step forms softmax(z) = e / s without recomputing it.  What is checked: the saved
path gives the closed-form gradient, leaves the saved arrays untouched (a second backward
gives the same gradient again), falls back where nothing was saved, and stays invisible to
users (graphs, higher order).  Expected values are closed forms written in NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from fdcheck import assert_close

import calcml as cm
from calcml._core.registry import PRIMITIVES

RNG = np.random.default_rng(77)


def _closed_form(z, y):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    t = np.eye(z.shape[-1])[y]
    return (p - t) / y.size


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tensor_backward_uses_the_saved_softmax_and_can_run_twice(dtype):
    z = RNG.normal(size=(6, 4)).astype(dtype)
    y = RNG.integers(0, 4, size=6)
    Z = cm.tensor(z, requires_grad=True)
    loss = cm.losses.cross_entropy(y, Z)
    node = loss._node
    assert node[1] is PRIMITIVES["softmax_cross_entropy"]
    e, s = node[3]["_saved"]  # the forward's exponentials and their row sums
    e0, s0 = e.copy(), s.copy()
    loss.backward()
    assert Z.grad.dtype == dtype
    assert_close(Z.grad, _closed_form(z.astype(np.float64), y), 1e-6 if dtype == np.float32
                 else 1e-14)
    first = Z.grad.copy()
    loss.backward()  # the saved arrays were not overwritten: the same gradient is added again
    assert_close(Z.grad, 2 * first, 0)
    np.testing.assert_array_equal(e, e0)
    np.testing.assert_array_equal(s, s0)


def test_grad_transform_saves_at_first_order_and_second_order_is_exact():
    z = RNG.normal(size=(5, 3))
    y = RNG.integers(0, 3, size=5)

    def f(z):
        return cm.losses.cross_entropy(y, z)

    assert_close(cm.grad(f)(z), _closed_form(z, y), 1e-14)
    # the Hessian (the inner trace's values are boxes of the outer: nothing saved there) is
    # block diagonal with blocks (diag(p) - p pᵀ) / M, in both compositions
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    H = np.zeros((5, 3, 5, 3))
    for i in range(5):
        H[i, :, i, :] = (np.diag(p[i]) - np.outer(p[i], p[i])) / 5
    assert_close(cm.hessian(f)(z), H, 1e-12)
    assert_close(cm.jacobian(cm.grad(f))(z), H, 1e-12)


def test_infinite_logit_falls_back_to_recomputing():
    # an infinite logit takes the guarded forward path, which keeps nothing; the backward
    # step then recomputes, and the finite row's gradient is still exact
    z = np.array([[np.inf, 0.0, -1.0], [0.5, 0.2, -0.3]])
    y = np.array([1, 2])
    Z = cm.tensor(z, requires_grad=True)
    with np.errstate(invalid="ignore"):
        loss = cm.losses.cross_entropy(y, Z)
        assert loss._node[3]["_saved"] is None
        assert float(loss) == np.inf  # -log softmax(z)_1 = +inf: the label has probability 0
        loss.backward()
    assert_close(Z.grad[1], _closed_form(z[1:], y[1:])[0] / 2, 1e-14)


def test_saved_intermediates_are_not_shown_as_parameters():
    y = np.array([1, 0])
    g = cm.make_graph(lambda z: cm.losses.cross_entropy(y, z), np.zeros((2, 3)))
    ops = [n for n in g.nodes if n.kind == "op"]
    assert any(n.op == "softmax_cross_entropy" for n in ops)
    assert all("_saved" not in n.params for n in ops)

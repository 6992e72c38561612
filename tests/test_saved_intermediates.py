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
    e, s, flat = node[3]["_saved"]  # the forward's exponentials, their row sums, the labels
    e0, s0 = e.copy(), s.copy()
    np.testing.assert_array_equal(flat, y + 4 * np.arange(6))  # positions in z.reshape(-1)
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 10), (5, 1), (3, 32), (4, 33), (2, 3, 4), (0, 5),
                                   (7,)])
def test_row_max_is_numpys_bit_for_bit(dtype, shape):
    # the transposed reduction used for few classes gives NumPy's row maxima exactly,
    # including NaN, infinities and signed zeros, on contiguous and strided inputs
    from calcml.ops.reductions import _row_max

    z = RNG.normal(size=shape).astype(dtype)
    if z.size >= 8:
        flat = z.reshape(-1)
        flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    for v in (z, z[::-1], np.swapaxes(z, -1, -2) if z.ndim > 1 else z):
        if v.shape[-1] == 0:  # no class: NumPy's error, not an empty answer
            with pytest.raises(ValueError, match="zero-size array"):
                _row_max(v)
            continue
        got, want = _row_max(v), np.max(v, axis=-1, keepdims=True)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("ldtype", [np.int64, np.int32, np.uint8, np.uint64, np.int8])
def test_fused_loss_takes_every_integer_label_dtype(ldtype):
    z = RNG.normal(size=(9, 5))
    y = RNG.integers(0, 5, size=9)
    want = float(cm.losses.cross_entropy(y, z))
    Z = cm.tensor(z, requires_grad=True)
    loss = cm.losses.cross_entropy(y.astype(ldtype), Z)
    loss.backward()
    assert float(loss) == want
    np.testing.assert_array_equal(Z.grad, cm.losses.cross_entropy.derivative(y, z))


@pytest.mark.parametrize("bad", [-1, 5, 2**40])
def test_out_of_range_labels_are_refused_by_the_primitive_and_named_by_the_loss(bad):
    from calcml.ops.reductions import softmax_cross_entropy

    z = RNG.normal(size=(3, 5))
    y = np.array([0, bad, 2])
    for logits in (z, cm.tensor(z, requires_grad=True)):
        # the loss names the range it found, from its fast path (a Tensor) or not
        with pytest.raises(IndexError, match=r"cross_entropy: labels must be in 0\.\.4"):
            cm.losses.cross_entropy(y, logits)
        # the primitive called directly: an IndexError naming the op, never a wrapped row
        with pytest.raises(IndexError, match=r"softmax_cross_entropy.*labels must be in 0\.\.4"):
            softmax_cross_entropy(logits, y)
    with pytest.raises(IndexError, match=r"softmax_cross_entropy.*labels must be in 0\.\.4"):
        cm.grad(lambda v: softmax_cross_entropy(v, y))(z)


def test_row_starts_cache_stays_small():
    # the label positions' row offsets are kept for mini-batch sizes only, and at most 64
    import calcml.ops.reductions as R

    z = RNG.normal(size=(3, 4))
    for n in list(range(1, 150)) + [9000]:
        zn = RNG.normal(size=(n, 4))
        y = RNG.integers(0, 4, size=n)
        assert float(cm.losses.cross_entropy(y, zn)) == pytest.approx(
            float(np.mean(np.log(np.exp(zn).sum(1)) - zn[np.arange(n), y])), rel=1e-12)
        assert len(R._ROW_STARTS) <= 64
        assert all(k[0] <= 8192 for k in R._ROW_STARTS)
    assert float(cm.losses.cross_entropy(np.array([1, 0, 3]), z)) > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_in_column_order_get_the_label_term(dtype):
    # logits that are a transposed view (x Wᵀ computed as (W xᵀ)ᵀ, say) or Fortran-ordered:
    # the -1 at each label lands in the gradient, on every path
    z = RNG.normal(size=(5, 4)).astype(dtype)  # (classes, rows): logits are zᵀ
    y = np.array([0, 3, 1, 1])
    want = cm.losses.cross_entropy.derivative(y, np.ascontiguousarray(z.T))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    t = cm.tensor(z, requires_grad=True)
    cm.losses.cross_entropy(y, cm.ops.swapaxes(t, 0, 1)).backward()
    np.testing.assert_allclose(t.grad.T, want, atol=tol)
    got = cm.grad(lambda v: cm.losses.cross_entropy(y, v))(np.asfortranarray(z.T))
    np.testing.assert_allclose(got, want, atol=tol)
    hv = cm.hvp(lambda v: cm.losses.cross_entropy(y, v), (np.asfortranarray(z.T),),
                (np.ones_like(z.T),))  # second order: through softmax_cross_entropy_grad
    hv_c = cm.hvp(lambda v: cm.losses.cross_entropy(y, v), (np.ascontiguousarray(z.T),),
                  (np.ones_like(z.T),))
    np.testing.assert_allclose(hv, hv_c, atol=tol)
    z3 = np.asfortranarray(RNG.normal(size=(2, 3, 4)))
    y3 = RNG.integers(0, 4, size=(2, 3))
    np.testing.assert_allclose(cm.grad(lambda v: cm.losses.cross_entropy(y3, v))(z3),
                               cm.losses.cross_entropy.derivative(y3, np.ascontiguousarray(z3)),
                               atol=1e-14)


@pytest.mark.parametrize("ldtype,C", [(np.int8, 300), (np.int8, 100), (np.int16, 70000)])
def test_negative_small_int_labels_are_refused_for_many_classes(ldtype, C):
    # read as unsigned, -1 of an int8 is 255, below 300 classes: the sign is checked too
    z = RNG.normal(size=(2, C))
    y = np.array([1, -1], ldtype)
    for logits in (z, cm.tensor(z, requires_grad=True)):
        with pytest.raises(IndexError, match=rf"labels must be in 0\.\.{C - 1}"):
            cm.losses.cross_entropy(y, logits)
    y_ok = np.array([1, min(C - 1, np.iinfo(ldtype).max)], ldtype)
    want = float(np.mean(np.log(np.exp(z).sum(1)) - z[[0, 1], y_ok.astype(int)]))
    assert float(cm.losses.cross_entropy(y_ok, z)) == pytest.approx(want, rel=1e-12)


def test_the_primitive_refuses_float_labels():
    from calcml.ops.reductions import softmax_cross_entropy

    with pytest.raises(IndexError, match="labels must be integers, got dtype float64"):
        softmax_cross_entropy(RNG.normal(size=(2, 3)), np.array([1.7, 0.0]))

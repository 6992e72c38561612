"""Tensors (API.md §2): PyTorch-style eager differentiation on the same engine as cm.grad."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
from fdcheck import assert_close, central_grad

import calcml as cm

RNG = np.random.default_rng(7)


def test_tensor_construction_and_attributes():
    t = cm.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert isinstance(t, cm.Tensor)
    assert t.shape == (2, 3) and t.dtype == np.float64
    assert type(t.data) is np.ndarray
    assert not t.requires_grad and t.grad is None
    assert cm.tensor([1, 2]).dtype == np.int64  # NumPy's dtype rules
    assert cm.tensor([1, 2], dtype=np.float32).dtype == np.float32
    src = np.ones(3)
    c = cm.tensor(src)
    src[0] = 5.0  # tensor() copies
    assert c.data[0] == 1.0
    w = cm.tensor(np.zeros(2, np.float32), requires_grad=True)
    assert w.requires_grad and w.is_leaf and w.grad is None
    assert cm.tensor(w).shape == (2,)  # from another tensor: its data


def test_numpy_and_item():
    x = cm.tensor([[1.0, 2.0]], requires_grad=True)
    a = x.numpy()
    assert type(a) is np.ndarray
    np.testing.assert_array_equal(a, [[1.0, 2.0]])
    np.testing.assert_array_equal(np.asarray(x), [[1.0, 2.0]])
    assert cm.tensor(2.5).item() == 2.5
    assert float(cm.tensor(2.5)) == 2.5


def test_backward_matches_closed_form():
    W0, x0 = RNG.normal(size=(2, 3)), RNG.normal(size=3)
    W = cm.tensor(W0, requires_grad=True)
    x = cm.tensor(x0)
    loss = cm.sum(cm.tanh(W @ x) ** 2)
    loss.backward()
    t = np.tanh(W0 @ x0)
    assert_close(W.grad, np.outer(2 * t * (1 - t**2), x0), 1e-12)
    assert x.grad is None  # no requires_grad: nothing accumulated
    assert_close(loss.data, np.sum(t**2), 1e-12)


def test_grad_accumulates_across_backward_calls():
    x = cm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    assert_close(x.grad, [2.0, 4.0, 6.0], 0)
    # a second backward through the same graph adds the gradients again (tensor.py docstring)
    y.backward()
    assert_close(x.grad, [4.0, 8.0, 12.0], 0)
    # a new graph adds too
    (x * 3.0).sum().backward()
    assert_close(x.grad, [7.0, 11.0, 15.0], 0)
    x.grad = None
    (x * 3.0).sum().backward()
    assert_close(x.grad, [3.0, 3.0, 3.0], 0)


def test_leaf_used_twice_and_several_leaves():
    a = cm.tensor([1.0, -2.0], requires_grad=True)
    b = cm.tensor([0.5, 3.0], requires_grad=True)
    (a * b + a * a + cm.exp(b)).sum().backward()
    assert_close(a.grad, [0.5 + 2.0, 3.0 - 4.0], 1e-15)
    assert_close(b.grad, np.array([1.0, -2.0]) + np.exp([0.5, 3.0]), 1e-15)


def test_backward_with_gradient_argument():
    x = cm.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    seed = np.array([10.0, -1.0])
    y.backward(seed)
    assert_close(x.grad, [20.0, -4.0], 0)
    z = cm.tensor([3.0, 4.0], requires_grad=True)
    z.backward(seed)  # on a leaf: its gradient is the seed, copied
    seed[0] = 99.0
    assert_close(z.grad, [10.0, -1.0], 0)
    y2 = x * 2.0
    y2.backward(cm.tensor([1.0, 1.0]))  # a Tensor as the seed
    assert_close(x.grad, [22.0, -2.0], 0)


def test_no_grad_and_enable_grad():
    x = cm.tensor([1.0, 2.0], requires_grad=True)
    with cm.no_grad():
        assert not cm.is_grad_enabled()
        y = x * 2.0
        with cm.enable_grad():
            z = x * 3.0
        assert not cm.is_grad_enabled()
    assert cm.is_grad_enabled()
    assert not y.requires_grad
    assert z.requires_grad
    with pytest.raises(RuntimeError, match="does not require a gradient"):
        y.sum().backward()

    @cm.no_grad()
    def double(t):
        return t * 2.0

    assert not double(x).requires_grad
    assert cm.is_grad_enabled()
    # no_grad is restored when the block raises
    with pytest.raises(ZeroDivisionError):
        with cm.no_grad():
            raise ZeroDivisionError
    assert cm.is_grad_enabled()


def test_detach():
    x = cm.tensor([1.0, 2.0], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad
    np.testing.assert_array_equal(d.numpy(), [1.0, 2.0])
    y = (x * d).sum()  # d is a constant: dy/dx = d
    y.backward()
    assert_close(x.grad, [1.0, 2.0], 0)
    assert d.grad is None


def test_requires_grad_flags():
    x = cm.tensor([1.0, 2.0])
    x.requires_grad = True
    assert x.requires_grad and x.is_leaf
    y = x * 2.0
    assert y.requires_grad and not y.is_leaf
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad = False
    with pytest.raises(RuntimeError, match="leaf"):
        y.grad = np.zeros(2)
    assert x.requires_grad_(False) is x and not x.requires_grad
    i = cm.tensor([1, 2])
    with pytest.raises(TypeError, match="int64"):
        i.requires_grad = True


@pytest.mark.parametrize(
    "method,reference",
    [
        (lambda t: t.sum(axis=0), lambda a: a.sum(axis=0)),
        (lambda t: t.sum(), lambda a: a.sum()),
        (lambda t: t.mean(axis=1, keepdims=True), lambda a: a.mean(axis=1, keepdims=True)),
        (lambda t: t.var(axis=0), lambda a: a.var(axis=0)),
        (lambda t: t.std(), lambda a: a.std()),
        (lambda t: t.max(axis=1), lambda a: a.max(axis=1)),
        (lambda t: t.min(), lambda a: a.min()),
        (lambda t: t.prod(axis=0), lambda a: a.prod(axis=0)),
        (lambda t: t.T, lambda a: a.T),
        (lambda t: t.mT, lambda a: a.mT),
        (lambda t: t.reshape(6), lambda a: a.reshape(6)),
        (lambda t: t.reshape(3, 2), lambda a: a.reshape(3, 2)),
        (lambda t: t.reshape((1, -1)), lambda a: a.reshape((1, -1))),
        (lambda t: t.transpose(), lambda a: a.transpose()),
        (lambda t: t.transpose(1, 0), lambda a: a.transpose(1, 0)),
        (lambda t: t.swapaxes(0, 1), lambda a: a.swapaxes(0, 1)),
        (lambda t: t.reshape(2, 1, 3).squeeze(), lambda a: a.reshape(2, 1, 3).squeeze()),
        (lambda t: t.clip(-0.5, 0.5), lambda a: a.clip(-0.5, 0.5)),
        (lambda t: t.dot(np.arange(3.0)), lambda a: a.dot(np.arange(3.0))),
        (lambda t: t.take([0, 4]), lambda a: a.take([0, 4])),
        (lambda t: t[1], lambda a: a[1]),
        (lambda t: t[:, 1:], lambda a: a[:, 1:]),
        (lambda t: t[t > 0], lambda a: a[a > 0]),
        (lambda t: -t + abs(t) * 2.0 - 1.0 / (t * t + 1.0), lambda a: -a + abs(a) * 2.0 - 1.0 /
         (a * a + 1.0)),
        (lambda t: 2.0**t + t**3 + 1.0 - t, lambda a: 2.0**a + a**3 + 1.0 - a),
        (lambda t: t @ np.ones((3, 2)), lambda a: a @ np.ones((3, 2))),
        (lambda t: np.ones((4, 2)) @ t, lambda a: np.ones((4, 2)) @ a),
        (lambda t: cm.softmax(t, axis=-1), None),
        (lambda t: np.exp(t) + np.sum(t), lambda a: np.exp(a) + np.sum(a)),
    ],
)
def test_methods_and_operators_values_and_gradients(method, reference):
    a = np.array([[0.3, -1.2, 0.8], [1.5, 0.2, -0.7]])
    t = cm.tensor(a, requires_grad=True)
    out = method(t)
    assert isinstance(out, cm.Tensor) and out.requires_grad
    if reference is not None:
        assert_close(out.numpy(), reference(a), 1e-14)
    W = RNG.normal(size=out.shape)
    (out * W).sum().backward()
    fd = central_grad(lambda a: np.sum(method(cm.tensor(a)).numpy() * W), [a])[0]
    assert_close(t.grad, fd, 1e-6)


def test_shape_properties():
    t = cm.tensor(np.zeros((2, 3)), requires_grad=True)
    assert t.ndim == 2 and t.size == 6 and len(t) == 2
    assert [r.shape for r in t] == [(3,), (3,)]


def test_tensor_and_grad_agree():
    W0, b0 = RNG.normal(size=(4, 3)), RNG.normal(size=4)
    X0, y0 = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 4))

    def loss(W, b, X, y):
        z = cm.softplus(X @ W.T + b)
        return cm.mean((z - y) ** 2) + cm.sum(cm.logsumexp(z, axis=1))

    gW, gb = cm.grad(loss, argnums=(0, 1))(W0, b0, X0, y0)
    W, b = cm.tensor(W0, requires_grad=True), cm.tensor(b0, requires_grad=True)
    value = loss(W, b, cm.tensor(X0), cm.tensor(y0))
    value.backward()
    assert_close(value.data, loss(W0, b0, X0, y0), 1e-14)
    assert_close(W.grad, gW, 1e-13)
    assert_close(b.grad, gb, 1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_stays_float32(dtype):
    w = cm.tensor(np.array([0.5, -1.0, 2.0], dtype=dtype), requires_grad=True)
    y = (cm.tanh(w) * 2.0 + w**2 / 3.0).sum()
    assert y.dtype == dtype
    y.backward()
    assert w.grad.dtype == dtype
    assert_close(w.grad, 2 * (1 - np.tanh([0.5, -1.0, 2.0]) ** 2) + 2 * np.array([0.5, -1.0, 2.0])
                 / 3, 1e-6 if dtype == np.float32 else 1e-14)


def test_100k_op_tensor_chain_backward_and_graph_freed():
    x = cm.tensor(np.ones(4), requires_grad=True)
    y = x
    for i in range(50_000):
        y = y * 1.0000001 + 0.0
        if i == 10:
            ref = weakref.ref(y.data)
    y.sum().backward()
    assert_close(x.grad, np.full(4, 1.0000001**50_000), 1e-12)
    assert ref() is not None  # the graph is kept while y refers to it
    del y
    assert ref() is None  # and freed with the last tensor that refers to it


def test_grad_keeps_the_leaf_dtype_and_a_0d_grad_is_an_array():
    w = cm.tensor(np.ones(2, np.float32), requires_grad=True)
    (w * np.array([1.0, 2.0])).sum().backward()   # the product is float64 (NumPy promotion)
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, [1.0, 2.0])
    (w * np.array([1.0, 2.0])).sum().backward()   # accumulation keeps it too
    assert w.grad.dtype == np.float32
    w.data = np.zeros(2)                          # new data of another dtype: .grad follows
    w.grad = None
    (w * 3.0).sum().backward()
    assert w.grad.dtype == np.float64
    s = cm.tensor(3.0, requires_grad=True)
    (s * s).backward()
    assert type(s.grad) is np.ndarray and s.grad.shape == () and float(s.grad) == 6.0

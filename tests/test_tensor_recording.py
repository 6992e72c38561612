"""How tensors record their operations: the per-operator fast paths and the ``linear`` node
that ``x @ W.T + b`` becomes.  Every result is compared with ``cm.grad`` (the reverse trace,
which records op by op and fuses nothing), bit for bit where the same NumPy calls are made."""

from __future__ import annotations

import numpy as np
import pytest

import calcml as cm
from calcml._core.registry import PRIMITIVES

RNG = np.random.default_rng(11)
LINEAR, ADD = PRIMITIVES["linear"], PRIMITIVES["add"]


def _layer_data(dtype, n=5, n_in=3, n_out=4):
    return (RNG.normal(size=(n, n_in)).astype(dtype), RNG.normal(size=(n_out, n_in)).astype(dtype),
            RNG.normal(size=n_out).astype(dtype))


def _tensors(*arrays, grad=True):
    return [cm.tensor(a, requires_grad=grad) for a in arrays]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["xw+b", "b+xw"])
def test_affine_is_one_linear_node_with_the_unfused_gradients(dtype, order):
    x, w, b = _layer_data(dtype)

    def f(x, w, b):
        z = x @ w.T + b if order == "xw+b" else b + x @ w.T
        return cm.sum(cm.tanh(z) * z)

    xt, wt, bt = _tensors(x, w, b)
    z = xt @ wt.T + bt if order == "xw+b" else bt + xt @ wt.T
    assert z._node[1] is LINEAR
    assert [i for i, _ in z._node[5]] == [0, 1, 2]
    (cm.tanh(z) * z).sum().backward()
    ref = cm.grad(f, argnums=(0, 1, 2))(x, w, b)
    for t, r in zip((xt, wt, bt), ref):
        assert t.grad.dtype == dtype and t.grad.shape == r.shape
        np.testing.assert_array_equal(t.grad, r)  # the same NumPy products, bit for bit
    assert wt.grad.flags.c_contiguous


def test_affine_value_is_the_sum_computed():
    x, w, b = _layer_data(np.float64)
    xt, wt, bt = _tensors(x, w, b)
    np.testing.assert_array_equal((xt @ wt.T + bt).data, x @ w.T + b)


def test_a_reused_product_keeps_its_own_cotangent():
    x, w, b = _layer_data(np.float64)

    def f(x, w, b):
        z = x @ w.T
        y = z + b  # fused in the tensor trace; z is also used below
        return cm.sum(cm.sin(y)) + cm.sum(z * z * 0.5)

    xt, wt, bt = _tensors(x, w, b)
    z = xt @ wt.T
    y = z + bt
    assert y._node[1] is LINEAR
    (cm.sum(cm.sin(y)) + cm.sum(z * z * 0.5)).backward()
    for t, r in zip((xt, wt, bt), cm.grad(f, argnums=(0, 1, 2))(x, w, b)):
        np.testing.assert_allclose(t.grad, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["row bias", "full bias", "scalar", "no transpose",
                                  "promoting bias", "3-d weight"])
def test_what_is_not_an_affine_layer_stays_an_add(case):
    x, w, b = _layer_data(np.float32)
    if case == "row bias":
        b = b[None, :]
    elif case == "full bias":
        b = RNG.normal(size=(5, 4)).astype(np.float32)
    elif case == "scalar":
        b = np.float32(1.5)
    elif case == "promoting bias":
        b = b.astype(np.float64)
    elif case == "no transpose":
        w = np.ascontiguousarray(w.T)
    elif case == "3-d weight":
        x = RNG.normal(size=(2, 5, 3)).astype(np.float32)
        w = RNG.normal(size=(2, 4, 3)).astype(np.float32)

    def f(x, w, b):
        if case == "no transpose":
            return cm.sum(cm.tanh(x @ w + b))
        return cm.sum(cm.tanh(x @ cm.swapaxes(w, -1, -2) + b))

    xt, wt, bt = _tensors(x, w, b)
    z = xt @ wt + bt if case == "no transpose" else xt @ wt.mT + bt
    if case == "3-d weight":  # .mT is swapaxes, not the 2-d transpose: not fused either
        assert z._node[1] is ADD
    assert z._node[1] is ADD
    assert z.dtype == (np.float64 if case == "promoting bias" else np.float32)
    cm.sum(cm.tanh(z)).backward()
    for t, r in zip((xt, wt, bt), cm.grad(f, argnums=(0, 1, 2))(x, w, b)):
        np.testing.assert_allclose(t.grad, r, rtol=2e-5, atol=1e-6)


def test_affine_with_constant_input_or_constant_bias():
    x, w, b = _layer_data(np.float64)
    wt, bt = _tensors(w, b)
    z = x @ wt.T + bt  # data x: the node has W's and b's parents only
    assert z._node[1] is LINEAR and [i for i, _ in z._node[5]] == [1, 2]
    cm.sum(z * z).backward()
    gw, gb = cm.grad(lambda w, b: cm.sum((x @ w.T + b) ** 2), argnums=(0, 1))(w, b)
    np.testing.assert_allclose(wt.grad, gw, rtol=1e-12)
    np.testing.assert_allclose(bt.grad, gb, rtol=1e-12)
    wt2 = cm.tensor(w, requires_grad=True)
    z2 = x @ wt2.T + b  # a plain bias array
    assert z2._node[1] is LINEAR and [i for i, _ in z2._node[5]] == [1]
    cm.sum(z2 * z2).backward()
    np.testing.assert_allclose(wt2.grad, gw, rtol=1e-12)
    # W without a gradient: its transpose is not recorded, so nothing to fuse
    xt = cm.tensor(x, requires_grad=True)
    z3 = xt @ cm.tensor(w).T + cm.tensor(b)
    assert z3._node[1] is ADD


def test_higher_order_and_graphs_are_not_fused():
    x, w, b = _layer_data(np.float64)
    g = cm.make_graph(lambda x, w, b: x @ w.T + b, x, w, b)
    assert [n.op for n in g.ops] == ["transpose", "matmul", "add"]

    def f(w):
        return cm.sum(cm.tanh(x @ w.T + b))

    h = cm.hessian(f)(w)
    eps = 1e-6
    e = np.zeros_like(w)
    e[1, 2] = 1.0
    fd = (cm.grad(f)(w + eps * e) - cm.grad(f)(w - eps * e)) / (2 * eps)
    np.testing.assert_allclose(h[..., 1, 2], fd, rtol=1e-6, atol=1e-8)


def test_no_grad_records_nothing():
    x, w, b = _layer_data(np.float32)
    xt, wt, bt = _tensors(x, w, b)
    with cm.no_grad():
        for y in (xt @ wt.T + bt, xt * 2.0, 2.0 - xt, xt / xt, cm.relu(xt), xt[:, 0], wt.T,
                  cm.sum(xt), xt.mean(axis=0)):
            assert not y.requires_grad and y._node is None
    assert (xt * 2.0).requires_grad


OPERATORS = {
    "add": lambda a, c: a + c, "sub": lambda a, c: a - c, "mul": lambda a, c: a * c,
    "div": lambda a, c: a / c, "matmul": lambda a, c: a @ c,
}


@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("kind", ["tensor-tensor", "tensor-const", "const-tensor",
                                  "tensor-nograd", "nograd-tensor"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tensor_operators_match_the_reverse_trace(name, kind, dtype):
    op = OPERATORS[name]
    a = RNG.uniform(0.5, 1.5, size=(3, 4)).astype(dtype)
    c = RNG.uniform(0.5, 1.5, size=(4, 4) if name == "matmul" else (4,)).astype(dtype)
    ta = cm.tensor(a, requires_grad=kind in ("tensor-tensor", "tensor-const", "tensor-nograd"))
    tc = cm.tensor(c, requires_grad=kind in ("tensor-tensor", "const-tensor", "nograd-tensor"))
    left = a if kind == "const-tensor" else ta
    right = c if kind == "tensor-const" else tc
    y = op(left, right)
    assert type(y) is cm.Tensor and y.dtype == dtype
    np.testing.assert_array_equal(y.data, op(a, c))
    cm.sum(cm.sin(y)).backward()
    wrt = [i for i, t in enumerate((ta, tc)) if t.requires_grad]
    ref = cm.grad(lambda a, c: cm.sum(cm.sin(op(a, c))), argnums=tuple(wrt))(a, c)
    for i, r in zip(wrt, ref):
        got = (ta, tc)[i].grad
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, r)


def test_tensor_fast_paths_give_clear_errors():
    a = cm.tensor(np.ones(3), requires_grad=True)
    c = cm.tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"calcml\.add.*\(3,\).*\(4,\)"):
        a + c
    with pytest.raises(ValueError, match=r"calcml\.matmul.*\(3,\).*\(4,\)"):
        a @ c
    with pytest.raises(ValueError, match=r"calcml\.multiply.*\(3,\).*\(2,\)"):
        np.ones(2) * a
    with pytest.raises(IndexError, match=r"calcml\.getitem.*\(3,\)"):
        a[5]
    with pytest.raises(np.exceptions.AxisError, match=r"calcml\.sum"):
        cm.sum(a, axis=2)


def test_tensors_inside_a_transform_take_the_general_path():
    w = cm.tensor(RNG.normal(size=(3,)))
    x = RNG.normal(size=(3,))
    # a constant tensor times the transform's variable: the reverse trace is the higher one
    g = cm.grad(lambda x: cm.sum(w * x * x))(x)
    np.testing.assert_allclose(g, 2 * w.data * x, rtol=1e-12)
    g = cm.grad(lambda x: cm.sum(x @ w.T + w))(x)  # 1-d: .T is the identity; x·w + w
    np.testing.assert_allclose(g, 3 * w.data, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tensor_reductions_indexing_and_transpose(dtype):
    a = RNG.normal(size=(3, 4)).astype(dtype)

    def f(a):
        return (cm.sum(a) + cm.mean(a, axis=0)[1] + cm.sum(a.T[2] * a[:, 1])
                + cm.sum(cm.mean(a, axis=(0, 1), keepdims=True)))

    t = cm.tensor(a, requires_grad=True)
    y = f(t)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.data, f(a), rtol=1e-6)
    y.backward()
    np.testing.assert_array_equal(t.grad, cm.grad(f)(a))
    assert cm.sum(t)._node[3] is cm.sum(t)._node[3]  # a full reduction shares its params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wanted", [[0, 1, 2], [1, 2], [0], [2]])
@pytest.mark.parametrize("x_shape", [(5, 3), (2, 5, 3), (3,)])
def test_linear_joint_rule_is_the_three_rules(dtype, wanted, x_shape):
    # the backward pass takes linear's joint rule; it must give each rule's cotangent, shaped
    # like its argument (linear does not broadcast: no summing afterwards)
    x = RNG.normal(size=x_shape).astype(dtype)
    w = RNG.normal(size=(4, 3)).astype(dtype)
    b = RNG.normal(size=4).astype(dtype)
    out = x @ w.T + b
    g = RNG.normal(size=out.shape).astype(dtype)
    joint = LINEAR.vjp_joint(g, out, (x, w, b), {}, wanted)
    for i, got in zip(wanted, joint):
        want = LINEAR.vjps[i](g, out, x, w, b)
        assert got.shape == (x, w, b)[i].shape and got.dtype == dtype
        np.testing.assert_array_equal(got, want)
    ref = [(g.reshape(-1, 4) @ w).reshape(x_shape),
           g.reshape(-1, 4).T @ x.reshape(-1, 3), g.reshape(-1, 4).sum(0)]
    for i, got in zip(wanted, joint):
        np.testing.assert_allclose(got, ref[i], rtol=1e-5)


def test_assigning_data_keeps_the_grad_dtype_rule():
    t = cm.tensor(np.ones(3, np.float32), requires_grad=True)
    d = t.data
    t.data -= 0.5  # in place: the same array is assigned back
    assert t.data is d and np.all(d == 0.5)
    t.data = np.ones(3)  # a float64 array: .grad follows the new dtype
    cm.sum(t * t).backward()
    assert t.grad.dtype == np.float64


def test_dense_stack_and_classifier_loss_on_tensors_match_the_reverse_trace():
    from calcml.ops import dense_stack
    from calcml.ops.reductions import softmax_cross_entropy

    x = RNG.normal(size=(6, 3))
    w1, b1 = RNG.normal(size=(5, 3)), RNG.normal(size=5)
    w2, b2 = RNG.normal(size=(4, 5)), RNG.normal(size=4)
    labels = RNG.integers(0, 4, size=6)

    def f(x, w1, b1, w2, b2):
        z = dense_stack(x, w1, b1, w2, b2, activations=("tanh", "identity"))
        return softmax_cross_entropy(z, labels)

    ts = _tensors(w1, b1, w2, b2)
    loss = f(x, *ts)  # data x, tensor weights: recorded directly, one node each
    assert loss._node[1] is PRIMITIVES["softmax_cross_entropy"]
    assert loss._node[5][0][1][1] is PRIMITIVES["dense_stack"]
    loss.backward()
    ref = cm.grad(f, argnums=(1, 2, 3, 4))(x, w1, b1, w2, b2)
    for t, r in zip(ts, ref):
        np.testing.assert_array_equal(t.grad, r)
    with cm.no_grad():
        assert f(x, *ts)._node is None
    # constant tensors inside a transform: the transform's box takes the general path
    consts = [cm.tensor(a) for a in (w1, b1, w2, b2)]
    gx = cm.grad(lambda x: f(x, *consts))(x)
    np.testing.assert_allclose(gx, cm.grad(f)(x, w1, b1, w2, b2), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_shared_scalar_seed_never_becomes_a_gradient(dtype):
    # backward() of a scalar starts from one shared read-only 1 per dtype: a leaf whose
    # gradient would be that very array (the root itself, or a rule that passes the
    # cotangent on) gets its own writeable copy, and writing into it changes no later seed
    for make in (lambda w: w, lambda w: w + 0.0, lambda w: cm.sum(w), lambda w: w * 1.0):
        w = cm.tensor(np.array(2.0, dtype), requires_grad=True)
        make(w).backward()
        g = w.grad
        assert g.dtype == dtype and g.shape == () and g.flags.writeable and float(g) == 1.0
        g += 5.0
        v = cm.tensor(np.array(3.0, dtype), requires_grad=True)
        make(v).backward()
        assert float(v.grad) == 1.0 and float(w.grad) == 6.0


def test_a_numpy_scalar_loss_takes_the_shared_seed_and_trains_the_same():
    import sys

    seeds = sys.modules["calcml.tensor"]._UNIT_SEEDS
    z = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 2])
    for _ in range(2):
        Z = cm.tensor(z, requires_grad=True)
        loss = cm.losses.cross_entropy(y, Z)
        assert isinstance(loss.data, np.generic)  # the fused loss's value: a NumPy scalar
        loss.backward()
        np.testing.assert_allclose(Z.grad, cm.losses.cross_entropy.derivative(y, z), rtol=1e-6)
    seed = seeds[np.dtype(np.float32)]
    assert seed.shape == () and float(seed) == 1.0 and not seed.flags.writeable

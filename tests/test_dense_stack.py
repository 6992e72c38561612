"""The fused dense stack: ``ops.dense_stack`` and ``nn.Sequential``'s use of it.

A Sequential runs each run of Linear layers and activations as one ``dense_stack`` node.  It
must give the numbers of the module-by-module graph bit for bit (values and gradients), keep
every behaviour a user can see (subclasses, errors, dtype promotion, frozen parameters,
``functional_call`` and the transforms), and change nothing where it does not apply.  The
primitive's own derivatives, both modes to second order, are checked by the registry test.
"""

import numpy as np
import pytest

import calcml as cm
from calcml.ops.dense import dense_stack

nn = cm.nn
DTYPES = [np.float32, np.float64]


def _model(dtype, acts=("relu", "tanh"), sizes=(4, 8, 8, 3), seed=0):
    cls = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity}
    mods = []
    for k, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(nn.Linear(fi, fo, rng=seed + k, dtype=dtype))
        if k < len(acts):
            mods.append(cls[acts[k]]())
    return nn.Sequential(*mods)


def _one_by_one(model, x):
    for m in model:
        x = m(x)
    return x


def _grads_of(model, run, x):
    for p in model.parameters():
        p.grad = None
    y = run(x)
    cm.sum(y * y).backward()
    return y, [None if p.grad is None else p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("acts,shape", [
    (("relu", "tanh"), (6, 4)),
    (("sigmoid", "relu"), (4,)),
    (("tanh", "identity"), (2, 5, 4)),
])
def test_sequential_is_bit_identical_to_module_by_module(dtype, acts, shape):
    model = _model(dtype, acts)
    x = np.random.default_rng(1).normal(size=shape).astype(dtype)
    y1, g1 = _grads_of(model, model, x)
    assert y1._node[1].name == "dense_stack"  # one node for the whole stack
    y2, g2 = _grads_of(model, lambda v: _one_by_one(model, v), x)
    assert y2._node[1].name != "dense_stack"
    assert y1.dtype == dtype and y1.shape == y2.shape
    np.testing.assert_array_equal(y1.data, y2.data)
    for a, b in zip(g1, g2, strict=True):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


def test_plan_groups_runs_and_leaves_other_modules_alone():
    lin = [nn.Linear(3, 3, rng=k) for k in range(5)]
    drop = nn.Dropout(0.5, rng=0)
    model = nn.Sequential(lin[0], nn.ReLU(), nn.Identity(), lin[1], drop, lin[2], nn.Tanh(),
                          lin[3], nn.Sigmoid(), lin[4])
    plan = model._fused_plan()
    assert plan[0][1] == ("relu", "identity") and plan[0][0] == (lin[0], lin[1])
    assert plan[1] is drop
    assert plan[2][0] == (lin[2], lin[3], lin[4])
    assert plan[2][1] == ("tanh", "sigmoid", "identity")
    assert len(plan) == 3
    # a lone Linear, or a lone activation, stays a module
    single = nn.Sequential(nn.ReLU(), lin[0], drop)
    assert single._fused_plan() == [single[0], lin[0], drop]


def test_plan_follows_changes_to_the_module_list():
    model = _model(np.float64, ("relu",), sizes=(4, 5, 2))
    x = np.ones((3, 4))
    assert model(x).shape == (3, 2)
    model.append(nn.Tanh())
    model.append(nn.Linear(2, 6, rng=9))
    plan = model._fused_plan()
    assert len(plan) == 1 and plan[0][1] == ("relu", "tanh", "identity")
    np.testing.assert_array_equal(model(x).data, _one_by_one(model, x).data)


def test_subclasses_and_replaced_forward_are_not_fused():
    class Doubled(nn.ReLU):
        def forward(self, x):
            return 2.0 * super().forward(x)

    lin1, lin2 = nn.Linear(3, 4, rng=0), nn.Linear(4, 2, rng=1)
    model = nn.Sequential(lin1, Doubled(), lin2)
    x = np.random.default_rng(0).normal(size=(5, 3))
    want = lin2(2.0 * cm.relu(lin1(x)))
    np.testing.assert_allclose(model(x).data, want.data, rtol=1e-15)

    lin3 = nn.Linear(4, 2, rng=1)
    lin3.forward = lambda x: cm.nn.Linear.forward(lin3, x) + 1.0  # an instance's own forward
    model2 = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Tanh(), lin3)
    assert model2._fused_plan()[-1] is lin3
    np.testing.assert_allclose(model2(x).data,
                               lin3(cm.tanh(model2[0](x))).data + 0.0, rtol=1e-15)


def test_layers_without_bias_fall_back():
    model = nn.Sequential(nn.Linear(3, 4, bias=False, rng=0), nn.ReLU(), nn.Linear(4, 2, rng=1))
    x = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_array_equal(model(x).data, _one_by_one(model, x).data)
    fused = _model(np.float64, ("relu",), sizes=(3, 4, 2))
    before = fused(x).data.copy()
    fused[2].bias = None  # removed after the plan was made: the modules run one by one
    out = fused(x)
    assert out._node[1].name != "dense_stack"
    np.testing.assert_array_equal(out.data, _one_by_one(fused, x).data)
    assert not np.array_equal(out.data, before)


def test_bad_input_gets_the_layers_error():
    model = _model(np.float32)
    with pytest.raises(ValueError, match=r"calcml\.nn\.Linear: expected input of shape "
                                         r"\(\.\.\., 4\).*got shape \(2, 5\)"):
        model(np.ones((2, 5), np.float32))
    with pytest.raises(TypeError, match="real numbers"):
        model(np.array([["a", "b", "c", "d"]]))


def test_integer_input_and_dtype_promotion_match_the_layers():
    model = _model(np.float32)
    xi = np.arange(8).reshape(2, 4)
    assert model(xi).dtype == np.float32  # integers become the layer's dtype
    np.testing.assert_array_equal(model(xi).data, _one_by_one(model, xi).data)
    x64 = np.linspace(-1, 1, 8).reshape(2, 4)
    assert model(x64).dtype == np.float64  # NumPy's promotion, as layer by layer
    np.testing.assert_array_equal(model(x64).data, _one_by_one(model, x64).data)


def test_frozen_parameters_get_no_gradient():
    model = _model(np.float64)
    model[2].weight.requires_grad = False
    x = np.random.default_rng(3).normal(size=(4, 4))
    _, g1 = _grads_of(model, model, x)
    _, g2 = _grads_of(model, lambda v: _one_by_one(model, v), x)
    names = [n for n, _ in model.named_parameters()]
    assert "2.weight" not in names
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 4), (4,), (2, 3, 4)])
def test_a_frozen_first_layer_and_an_input_gradient(dtype, shape):
    # the backward step starts at the earliest layer it needs: with the first layer frozen
    # it stops before it, unless the input wants a gradient; bit for bit the layers' numbers
    model = _model(dtype)
    model[0].weight.requires_grad = False
    model[0].bias.requires_grad = False
    x = np.random.default_rng(5).normal(size=shape).astype(dtype)
    _, g1 = _grads_of(model, model, x)
    _, g2 = _grads_of(model, lambda v: _one_by_one(model, v), x)
    assert len(g1) == len(g2) == 4
    for a, b in zip(g1, g2, strict=True):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    xs = []
    for run in (model, lambda v: _one_by_one(model, v)):
        xt = cm.tensor(x, requires_grad=True)
        cm.sum(run(xt) * run(xt)).backward()
        xs.append(xt.grad)
    assert xs[0].dtype == dtype and xs[0].shape == shape
    np.testing.assert_array_equal(xs[0], xs[1])


def test_input_gradient_and_transforms_through_a_fused_model():
    model = _model(np.float64, ("tanh", "sigmoid"))
    x = np.random.default_rng(4).normal(size=(3, 4))

    def f(v):
        return cm.sum(model(v) ** 2)

    def f_ref(v):
        return cm.sum(_one_by_one(model, v) ** 2)

    np.testing.assert_allclose(cm.grad(f)(x), cm.grad(f_ref)(x), rtol=1e-12)
    v = np.random.default_rng(5).normal(size=x.shape)
    np.testing.assert_allclose(cm.hvp(f, (x,), (v,)), cm.hvp(f_ref, (x,), (v,)), rtol=1e-10)
    J = cm.jacobian(lambda v: model(v), mode="fwd")(x)
    np.testing.assert_allclose(J, cm.jacobian(lambda v: _one_by_one(model, v))(x),
                               rtol=1e-12, atol=1e-15)
    # a gradient penalty: the gradient with respect to x, differentiated again by backward()
    xt = cm.tensor(x, requires_grad=True)
    for p in model.parameters():
        p.grad = None
    gx = cm.grad(lambda v: cm.sum(model(v)))(xt)
    cm.sum(gx * gx).backward()
    fused = [p.grad for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    gx = cm.grad(lambda v: cm.sum(_one_by_one(model, v)))(xt)
    cm.sum(gx * gx).backward()
    # the last bias does not move the input gradient: no gradient either way
    assert [a is None for a in fused] == [p.grad is None for p in model.parameters()]
    assert sum(a is not None for a in fused) == 5
    for a, p in zip(fused, model.parameters(), strict=True):
        if a is not None:
            np.testing.assert_allclose(a, p.grad, rtol=1e-10, atol=1e-14)


def test_functional_call_with_traced_parameters():
    model = _model(np.float64, ("relu", "tanh"))
    x = np.random.default_rng(6).normal(size=(5, 4))
    params = {n: p.data.copy() for n, p in model.named_parameters()}
    g_fused = cm.grad(lambda p: cm.sum(cm.nn.functional_call(model, p, x) ** 2))(params)
    g_ref = cm.grad(lambda p: cm.sum(_swap_run(model, p, x) ** 2))(params)
    assert set(g_fused) == set(params)
    for k in params:
        np.testing.assert_allclose(g_fused[k], g_ref[k], rtol=1e-12, atol=1e-15)


def _swap_run(model, p, x):
    h = x
    for i, m in enumerate(model):
        sub = {k.split(".", 1)[1]: v for k, v in p.items() if k.split(".", 1)[0] == str(i)}
        h = cm.nn.functional_call(m, sub, h) if sub else m(h)
    return h


def test_dense_stack_errors_name_it():
    x, w, b = np.ones((2, 3)), np.ones((4, 3)), np.ones(4)
    with pytest.raises(ValueError, match=r"calcml\.dense_stack: activations must be"):
        dense_stack(x, w, b, activations=("softmax",))
    with pytest.raises(ValueError, match=r"calcml\.dense_stack: activations must be"):
        dense_stack(x, activations=())
    with pytest.raises(ValueError, match=r"calcml\.dense_stack: 1 activations need 2"):
        dense_stack(x, w, activations=("relu",))
    with pytest.raises(ValueError, match=r"calcml\.dense_stack.*float64 \(2, 3\), "
                                         r"float64 \(4, 2\)"):
        dense_stack(x, np.ones((4, 2)), b, activations=("relu",))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_stack_matches_closed_form_gradients(dtype):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 3)).astype(dtype)
    w1, b1 = rng.normal(size=(5, 3)).astype(dtype), rng.normal(size=5).astype(dtype)
    w2, b2 = rng.normal(size=(2, 5)).astype(dtype), rng.normal(size=2).astype(dtype)
    gw1, gb1, gw2, gb2 = cm.grad(
        lambda a, b, c, d: cm.sum(dense_stack(x, a, b, c, d, activations=("tanh", "identity"))),
        argnums=(0, 1, 2, 3))(w1, b1, w2, b2)
    h = np.tanh(x @ w1.T + b1)
    gz1 = (np.ones((6, 2), dtype) @ w2) * (1 - h * h)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gw2, np.ones((6, 2), dtype).T @ h, rtol=tol)
    np.testing.assert_allclose(gb2, np.full(2, 6.0, dtype), rtol=tol)
    np.testing.assert_allclose(gw1, gz1.T @ x, rtol=tol, atol=tol)
    np.testing.assert_allclose(gb1, gz1.sum(0), rtol=tol, atol=tol)
    assert {g.dtype for g in (gw1, gb1, gw2, gb2)} == {np.dtype(dtype)}


def test_a_second_backward_reuses_the_kept_intermediates_unchanged():
    model = _model(np.float64)
    x = np.random.default_rng(8).normal(size=(3, 4))
    loss = cm.sum(model(x) ** 2)
    loss.backward()
    first = [p.grad.copy() for p in model.parameters()]
    loss.backward()  # accumulates: exactly twice the first gradient
    for a, p in zip(first, model.parameters(), strict=True):
        np.testing.assert_array_equal(p.grad, 2 * a)


@pytest.mark.parametrize("bias", ["(1,)", "float", "0-d array", "0-d tensor"])
def test_unusual_biases_get_the_layers_gradients(bias):
    # a bias that broadcasts (shape (1,), a 0-d tensor) gets a gradient of its own shape, and
    # a constant bias (a Python float, a 0-d array) gets none and breaks nothing
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    make = {"(1,)": lambda: cm.tensor(rng.normal(size=(1,)), requires_grad=True),
            "float": lambda: 0.5, "0-d array": lambda: np.array(0.5),
            "0-d tensor": lambda: cm.tensor(0.5, requires_grad=True)}[bias]
    w1, b1 = rng.normal(size=(4, 3)), make()
    w2, b2 = rng.normal(size=(2, 4)), rng.normal(size=2)
    grads = []
    for fused in (True, False):
        W1, W2, B2 = (cm.tensor(a, requires_grad=True) for a in (w1, w2, b2))
        if isinstance(b1, cm.Tensor):
            b1.grad = None
        if fused:
            out = cm.ops.dense_stack(x, W1, b1, W2, B2, activations=("tanh", "identity"))
        else:
            out = cm.tanh(cm.tensor(x) @ W1.T + b1) @ W2.T + B2
        cm.sum(out * out).backward()
        gb = b1.grad.copy() if isinstance(b1, cm.Tensor) else None
        grads.append((W1.grad, W2.grad, B2.grad, gb))
    for a, b in zip(*grads, strict=True):
        if a is None:
            assert b is None
            continue
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)

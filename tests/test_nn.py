"""cm.nn: modules, Linear and activations, Dropout, Residual, initialisers, explicit backprop."""

import numpy as np
import pytest

import calcml as cm
from calcml import nn

RNG = np.random.default_rng(1234)


def _params(model):
    return {n: np.array(p.data) for n, p in model.named_parameters()}


def _mlp(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(3, 5, rng=rng, dtype=dtype), nn.Tanh(),
                         nn.Linear(5, 4, rng=rng, dtype=dtype), nn.ReLU(),
                         nn.Linear(4, 2, rng=rng, dtype=dtype))


class Block(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.scale = cm.tensor(np.ones(4), requires_grad=True)
        self.inner = nn.Sequential(nn.Linear(4, 4, rng=rng), nn.Tanh())
        self.norm = nn.BatchNorm1d(4)
        self.const = np.arange(3)  # a plain attribute: neither parameter nor buffer

    def forward(self, x):
        return self.norm(self.inner(x) * self.scale)


# --- Module ---------------------------------------------------------------------------------

def test_named_parameters_order_and_dotted_names():
    m = nn.Sequential(Block(0), nn.Linear(4, 2, rng=1))
    names = [n for n, _ in m.named_parameters()]
    assert names == ["0.scale", "0.inner.0.weight", "0.inner.0.bias", "0.norm.weight",
                     "0.norm.bias", "1.weight", "1.bias"]
    assert [id(p) for p in m.parameters()] == [id(p) for _, p in m.named_parameters()]
    assert m.num_parameters() == 4 + 20 + 8 + 10
    assert all(p.requires_grad and p.is_leaf for p in m.parameters())
    assert [n for n, _ in m.named_buffers()] == ["0.norm.running_mean", "0.norm.running_var"]
    assert [n for n, _ in m.named_modules()][:4] == ["", "0", "0.inner", "0.inner.0"]


def test_shared_parameter_listed_once_and_reassignment_unregisters():
    lin = nn.Linear(3, 3, rng=0)
    m = nn.Sequential(lin, nn.Tanh(), lin)
    assert len(m.parameters()) == 2
    assert m.num_parameters() == 12
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    assert lin(np.ones((1, 3))).shape == (1, 3)
    with pytest.raises(TypeError, match="parameter 'weight'"):
        lin.weight = np.zeros((3, 3))


def test_module_without_super_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = cm.tensor(1.0, requires_grad=True)

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Bad()


def test_non_leaf_parameter_refused_and_buffers_registered():
    m = nn.Module()
    w = cm.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="parameter 'v' of Module must be a leaf"):
        m.v = w * 2
    m.register_buffer("count", np.zeros(1))
    m.count = m.count + 1  # assigning to a buffer keeps it a buffer
    assert list(m.state_dict()) == ["count"]
    np.testing.assert_array_equal(m.state_dict()["count"], [1.0])
    assert m.parameters() == []


def test_forward_missing_is_named():
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        nn.Module()(1.0)


def test_train_eval_recursive():
    m = nn.Sequential(Block(0), nn.Dropout(0.5, rng=0))
    assert all(x.training for x in m.modules())
    assert m.eval() is m
    assert not any(x.training for x in m.modules())
    m[0].train()
    assert m[0].inner[0].training and not m.training and not m[1].training
    m.train()
    assert all(x.training for x in m.modules())


def test_state_dict_roundtrip_with_buffers(tmp_path):
    a, b = Block(0), Block(1)
    x = RNG.normal(size=(8, 4))
    a(x)  # moves the running statistics
    sd = a.state_dict()
    assert list(sd) == ["scale", "inner.0.weight", "inner.0.bias", "norm.weight", "norm.bias",
                        "norm.running_mean", "norm.running_var"]
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert not np.allclose(sd["norm.running_mean"], 0.0)
    sd["scale"][:] = 7.0  # a copy: the model is untouched
    assert np.all(a.scale.data == 1.0)
    sd["scale"][:] = 1.0
    np.savez(tmp_path / "m.npz", **sd)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        b.load_state_dict(f)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).data, b(x).data)


def test_load_state_dict_refuses_by_name_and_changes_nothing():
    m = _mlp()
    before = m.state_dict()
    good = m.state_dict()
    bad = dict(good)
    del bad["2.bias"]
    with pytest.raises(ValueError, match=r"missing entries \['2.bias'\]"):
        m.load_state_dict(bad)
    bad = dict(good, extra=np.zeros(1))
    with pytest.raises(ValueError, match=r"unexpected entries \['extra'\]"):
        m.load_state_dict(bad)
    bad = dict(good)
    bad["0.weight"] = np.zeros((3, 5))
    bad["4.bias"] = np.full(2, 9.0)  # valid, but must not be applied since another one fails
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(3, 5\)"):
        m.load_state_dict(bad)
    bad = dict(good)
    bad["2.weight"] = good["2.weight"].astype(np.float32)
    with pytest.raises(ValueError, match=r"'2.weight' .*dtype float32.*float64"):
        m.load_state_dict(bad)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # strict=False ignores missing/extra names but still checks shapes
    part = {"4.bias": np.full(2, 3.0), "nope": 1}
    m.load_state_dict(part, strict=False)
    np.testing.assert_array_equal(m[4].bias.data, [3.0, 3.0])


def test_load_state_dict_in_place_keeps_optimizer_binding():
    m, other = _mlp(0), _mlp(1)
    opt = cm.optim.Optimizer(m.parameters(), cm.optim.sgd(0.1))
    m.load_state_dict(other.state_dict())
    x = RNG.normal(size=(4, 3))
    cm.losses.mse(np.zeros((4, 2)), m(x)).backward()
    opt.step()
    assert not np.allclose(m[0].weight.data, other[0].weight.data)  # the bound tensors moved


def test_zero_grad_and_optimizer_training_reduces_loss():
    m = _mlp(0)
    x = RNG.normal(size=(32, 3))
    y = np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)
    opt = cm.optim.Optimizer(m.parameters(), cm.optim.adam(0.02))
    losses = []
    for _ in range(60):
        loss = cm.losses.mse(y, m(x))
        m.zero_grad()
        assert all(p.grad is None for p in m.parameters())
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_requires_grad_freeze_and_astype():
    m = _mlp(0)
    m[0].requires_grad_(False)
    assert [n for n, _ in m.named_parameters()] == ["2.weight", "2.bias", "4.weight", "4.bias"]
    assert "0.weight" in m.state_dict()
    m.astype(np.float32)
    assert all(v.dtype == np.float32 for v in m.state_dict().values())
    assert m(np.ones((2, 3), np.float32)).dtype == np.float32


def test_repr_names_children():
    text = repr(_mlp())
    assert "(0): Linear(in_features=3, out_features=5, bias=True)" in text
    assert "(1): Tanh()" in text


def test_sequential_indexing_and_iteration():
    m = _mlp()
    assert len(m) == 5
    assert isinstance(m[0], nn.Linear) and m[-1] is m[4]
    tail = m[2:]
    assert isinstance(tail, nn.Sequential) and len(tail) == 3 and tail[0] is m[2]
    x = RNG.normal(size=(4, 3))
    np.testing.assert_allclose(tail(m[1](m[0](x))).data, m(x).data, rtol=0, atol=0)
    assert [type(c).__name__ for c in m] == ["Linear", "Tanh", "Linear", "ReLU", "Linear"]
    with pytest.raises(TypeError, match="element 1"):
        nn.Sequential(nn.Tanh(), np.tanh)


def test_functional_call_restores_and_names_unknown():
    lin = nn.Linear(2, 1, rng=0)
    w0 = lin.weight
    p = {"weight": np.array([[1.0, 2.0]]), "bias": np.array([0.5])}
    np.testing.assert_allclose(nn.functional_call(lin, p, np.array([[1.0, 1.0]])), [[3.5]])
    assert lin.weight is w0
    with pytest.raises(ValueError, match="no parameter or buffer named \\['wieght'\\]"):
        nn.functional_call(lin, {"wieght": np.zeros((1, 2))}, np.ones((1, 2)))
    assert lin.weight is w0


# --- Linear and activations ---------------------------------------------------------------

def test_linear_matches_hand_written_forward_and_backward():
    lin = nn.Linear(4, 3, rng=0)
    W, b = lin.weight.data.copy(), lin.bias.data.copy()
    x = cm.tensor(RNG.normal(size=(6, 4)), requires_grad=True)
    G = RNG.normal(size=(6, 3))
    y = lin(x)
    np.testing.assert_allclose(y.data, x.data @ W.T + b, rtol=1e-14, atol=1e-14)
    y.backward(G)
    np.testing.assert_allclose(lin.weight.grad, G.T @ x.data, rtol=1e-13)
    np.testing.assert_allclose(lin.bias.grad, G.sum(0), rtol=1e-13)
    np.testing.assert_allclose(x.grad, G @ W, rtol=1e-13)


def test_linear_init_is_pytorch_default_and_reproducible():
    lin = nn.Linear(400, 300, rng=3)
    a = 1 / np.sqrt(400)
    w, b = lin.weight.data, lin.bias.data
    assert w.shape == (300, 400) and b.shape == (300,)
    assert np.abs(w).max() <= a and np.abs(b).max() <= a
    assert abs(w.var() - a * a / 3) < 0.02 * a * a / 3
    np.testing.assert_array_equal(nn.Linear(400, 300, rng=3).weight.data, w)
    np.testing.assert_array_equal(
        nn.Linear(400, 300, rng=np.random.default_rng(3)).weight.data, w)
    assert not np.array_equal(nn.Linear(400, 300, rng=4).weight.data, w)
    he = nn.Linear(400, 300, rng=3, init="he_normal")
    assert np.all(he.bias.data == 0) and abs(he.weight.data.var() - 2 / 400) < 0.03 * 2 / 400
    with pytest.raises(ValueError, match="init must be one of"):
        nn.Linear(2, 2, init="glorot")


def test_float32_model_stays_float32():
    m = _mlp(0, np.float32)
    x = RNG.normal(size=(5, 3)).astype(np.float32)
    y = m(x)
    assert y.dtype == np.float32
    cm.losses.mse(np.zeros((5, 2), np.float32), y).backward()
    assert all(p.grad.dtype == np.float32 for p in m.parameters())
    # integer input is converted to the layer's dtype
    assert m(np.ones((1, 3), dtype=int)).dtype == np.float32
    for layer in (nn.BatchNorm1d(3, dtype=np.float32), nn.LayerNorm(3, dtype=np.float32)):
        assert layer(x).dtype == np.float32
    mha = nn.MultiHeadAttention(4, 2, rng=0, dtype=np.float32)
    assert mha(RNG.normal(size=(2, 3, 4)).astype(np.float32)).dtype == np.float32


def test_activations_match_numpy_and_torch():
    x = RNG.normal(size=(4, 5)) * 2
    np.testing.assert_allclose(nn.ReLU()(x), np.maximum(x, 0))
    np.testing.assert_allclose(nn.Tanh()(x), np.tanh(x), rtol=1e-14)
    np.testing.assert_allclose(nn.Sigmoid()(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    e = np.exp(x - x.max(0))
    np.testing.assert_allclose(nn.Softmax(axis=0)(x), e / e.sum(0), rtol=1e-14)
    np.testing.assert_allclose(nn.LogSoftmax()(x), np.log(nn.Softmax()(x)), rtol=1e-12)
    np.testing.assert_allclose(nn.Identity()(x), x)
    assert nn.Flatten()(np.ones((2, 3, 4))).shape == (2, 12)
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.gelu(torch.tensor(x), approximate="tanh").numpy()
    np.testing.assert_allclose(nn.GELU()(x), ref, rtol=1e-12, atol=1e-15)
    exact = torch.nn.functional.gelu(torch.tensor(x)).numpy()
    assert 0 < np.abs(nn.GELU()(x) - exact).max() < 1e-3  # the approximation, measured


def _check_layer(layer, x, **kw):
    """check_grad of the layer's output w.r.t. its input and every parameter (functional)."""
    p = _params(layer)
    rep = cm.check_grad(lambda x, p: nn.functional_call(layer, p, x), x, p, **kw)
    assert rep.passed and rep.max_rel_error < 1e-5
    return rep


@pytest.mark.parametrize("make", [
    lambda: nn.Linear(3, 4, rng=0),
    lambda: nn.Linear(3, 4, bias=False, rng=0),
    lambda: nn.Tanh(), lambda: nn.Sigmoid(), lambda: nn.GELU(), lambda: nn.Softmax(),
    lambda: nn.LogSoftmax(), lambda: nn.ReLU(),
    lambda: nn.Sequential(nn.Linear(3, 4, rng=1), nn.GELU(), nn.Linear(4, 3, rng=2)),
    lambda: nn.Residual(nn.Sequential(nn.Linear(3, 3, rng=1), nn.Tanh())),
], ids=["linear", "linear-nobias", "tanh", "sigmoid", "gelu", "softmax", "logsoftmax", "relu",
        "sequential", "residual"])
def test_check_grad_every_layer(make):
    x = RNG.normal(size=(4, 3))
    x = np.where(np.abs(x) < 0.1, 0.5, x)  # keep away from ReLU's kink
    _check_layer(make(), x)


def test_functional_gradient_equals_tensor_backward():
    m = _mlp(3)
    x, y = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 2))
    g = cm.grad(lambda p: cm.losses.mse(y, nn.functional_call(m, p, x)))(_params(m))
    cm.losses.mse(y, m(x)).backward()
    assert set(g) == {n for n, _ in m.named_parameters()}
    for n, p in m.named_parameters():
        np.testing.assert_allclose(g[n], p.grad, rtol=1e-13, atol=1e-15)


def test_residual_gradient_is_dF_plus_identity():
    F = nn.Sequential(nn.Linear(3, 3, rng=5), nn.Tanh())
    res = nn.Residual(F)
    x = RNG.normal(size=(3,))
    JF = cm.jacobian(lambda x: nn.functional_call(F, _params(F), x))(x)
    JR = cm.jacobian(lambda x: nn.functional_call(res, _params(res), x))(x)
    np.testing.assert_allclose(JR, JF + np.eye(3), rtol=1e-13, atol=1e-15)
    g = RNG.normal(size=3)
    xt = cm.tensor(x, requires_grad=True)
    res(xt).backward(g)
    np.testing.assert_allclose(xt.grad, g @ (JF + np.eye(3)), rtol=1e-13)
    with pytest.raises(ValueError, match=r"maps an input of shape \(2, 3\) to shape \(2, 4\)"):
        nn.Residual(nn.Linear(3, 4, rng=0))(np.ones((2, 3)))


# --- Dropout --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["inverted", "classic"])
def test_dropout_expectation_equals_eval_output(mode):
    p, n = 0.3, 200_000
    a = RNG.normal(size=(n,)) + 2.0
    d = nn.Dropout(p, mode=mode, rng=0)
    train_out = np.asarray(d(a))
    eval_out = np.asarray(d.eval()(a))
    if mode == "inverted":
        np.testing.assert_array_equal(eval_out, a)
        assert set(np.unique(train_out / a).round(12)) == {0.0, round(1 / 0.7, 12)}
    else:
        np.testing.assert_allclose(eval_out, 0.7 * a)  # the KEEP probability, not p
        assert set(np.unique(train_out / a).round(12)) == {0.0, 1.0}
    # E[train] = eval, checked on the mean over units; standard error from the mask variance
    ratio = train_out / eval_out
    se = ratio.std() / np.sqrt(n)
    assert abs(ratio.mean() - 1.0) < 5 * se
    assert abs((train_out == 0).mean() - p) < 0.005
    # the chapter's literal rule (scale by the dropout probability p) would be off by 0.7/0.3
    if mode == "classic":
        assert abs(train_out.mean() / (p * a).mean() - 1) > 1.0


def test_dropout_reproducible_and_gradient_is_the_mask():
    x = RNG.normal(size=(5, 6))
    y1 = nn.Dropout(0.5, rng=42)(x)
    y2 = nn.Dropout(0.5, rng=42)(x)
    np.testing.assert_array_equal(y1, y2)
    d = nn.Dropout(0.5, rng=43)
    assert not np.array_equal(d(x), y1)
    d = nn.Dropout(0.25, rng=7)
    xt = cm.tensor(x, requires_grad=True)
    d(xt).sum().backward()
    np.testing.assert_allclose(xt.grad, d.last_mask / 0.75)
    assert nn.Dropout(0.0, rng=0)(x) is not None
    np.testing.assert_array_equal(nn.Dropout(0.0, rng=0)(x), x)
    np.testing.assert_array_equal(nn.Dropout(1.0, rng=0)(x), np.zeros_like(x))
    with pytest.raises(ValueError, match="p is a probability"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="mode must be"):
        nn.Dropout(0.5, mode="chapter")


# --- initialisers ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,var", [
    ("xavier_uniform", lambda fi, fo: 2 / (fi + fo)),
    ("xavier_normal", lambda fi, fo: 2 / (fi + fo)),
    ("he_uniform", lambda fi, fo: 2 / fi),
    ("he_normal", lambda fi, fo: 2 / fi),
])
def test_init_variance_within_sampling_error(name, var):
    fo, fi = 300, 500
    w = getattr(nn.init, name)((fo, fi), rng=0)
    target = var(fi, fo)
    n = w.size
    # Var of the sample variance: (m4 - σ⁴)/n; m4 = 9/5 σ⁴ (uniform) or 3 σ⁴ (normal)
    kurt = 1.8 if name.endswith("uniform") else 3.0
    se = target * np.sqrt((kurt - 1) / n)
    assert abs(w.var() - target) < 4 * se
    assert abs(w.mean()) < 4 * np.sqrt(target / n)
    np.testing.assert_array_equal(getattr(nn.init, name)((fo, fi), rng=0), w)
    assert getattr(nn.init, name)((3, 4), rng=0, dtype=np.float32).dtype == np.float32


def test_init_fans_zeros_ones_and_bad_rng():
    assert nn.init.fans((3, 5)) == (5, 3)
    assert nn.init.fans((8, 4, 3, 3)) == (36, 72)
    assert nn.init.fans((7,)) == (7, 7)
    a = np.sqrt(6 / 8)
    assert np.abs(nn.init.xavier_uniform((4, 4), rng=1)).max() <= a
    np.testing.assert_array_equal(nn.init.zeros((2, 2)), 0)
    assert nn.init.ones(3, dtype=np.float32).dtype == np.float32
    with pytest.raises(TypeError, match="rng must be"):
        nn.init.he_normal((2, 2), rng=np.random.RandomState(0))
    with pytest.raises(TypeError, match="floating point"):
        nn.init.zeros(3, dtype=int)


# --- backpropagation made visible -----------------------------------------------------------

@pytest.mark.parametrize("act,out_act", [("sigmoid", None), ("tanh", "identity"),
                                         ("relu", "identity")])
def test_delta_recursion_equals_engine(act, out_act):
    rng = np.random.default_rng(0)
    sizes = [4, 6, 5, 3]
    Ws = [rng.normal(size=(o, i)) for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [rng.normal(size=o) for o in sizes[1:]]
    x, y = rng.normal(size=(10, 4)), rng.normal(size=(10, 3))
    fn = {"sigmoid": cm.sigmoid, "tanh": cm.tanh, "relu": cm.relu}[act]

    def loss(Ws, bs):
        a = x
        for i, (W, b) in enumerate(zip(Ws, bs)):
            z = a @ W.T + b
            a = z if (i == len(Ws) - 1 and out_act == "identity") else fn(z)
        return cm.losses.mse(y, a)

    gW, gb = cm.grad(loss, argnums=(0, 1))(Ws, bs)
    r = nn.backprop(Ws, bs, x, lambda a: cm.losses.mse.derivative(y, a), activation=act,
                    output_activation=out_act)
    for a, b in zip(r.weight_grads + r.bias_grads, list(gW) + list(gb)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert max(np.abs(a - b).max() for a, b in zip(r.weight_grads, gW)) <= 1e-12
    # the recursion itself: δ_l = ∂L/∂z_l, checked against the engine at z_2
    assert [d.shape for d in r.deltas] == [(10, 6), (10, 5), (10, 3)]


def test_delta_recursion_softmax_cross_entropy_and_sequential():
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Linear(4, 8, rng=rng), nn.Sigmoid(), nn.Linear(8, 3, rng=rng),
                          nn.Softmax())
    x, labels = rng.normal(size=(12, 4)), rng.integers(0, 3, size=12)
    onehot = np.eye(3)[labels]
    loss = cm.losses.categorical_cross_entropy(onehot, model(x))
    loss.backward()
    spec = nn.mlp_from_sequential(model)
    assert spec["activation"] == ["sigmoid", "softmax"]
    r = nn.backprop(x=x, loss_grad=lambda a: cm.losses.categorical_cross_entropy.derivative(
        onehot, a), **spec)
    engine = [model[0].weight.grad, model[2].weight.grad]
    for a, b in zip(r.weight_grads, engine):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.bias_grads[1], model[2].bias.grad, rtol=1e-12, atol=1e-14)
    # softmax + cross-entropy: δ_L = (s - y)/n
    np.testing.assert_allclose(r.deltas[-1], (r.activations[-1] - onehot) / 12, atol=1e-15)
    # the chapter's element-wise δ_L = ∂L/∂a ⊙ σ'(z) has no meaning for softmax: refused
    with pytest.raises(ValueError, match="unknown activation 'softmax' for layer 1"):
        nn.backprop(spec["weights"], spec["biases"], x, np.zeros((12, 3)),
                    activation=["softmax", "softmax"])


def test_backprop_input_grad_and_errors():
    rng = np.random.default_rng(2)
    Ws, bs = [rng.normal(size=(3, 2)), rng.normal(size=(1, 3))], [None, np.zeros(1)]
    x = rng.normal(size=(5, 2))
    r = nn.backprop(Ws, bs, x, np.ones((5, 1)), activation="tanh")
    g = cm.grad(lambda x: cm.sum(cm.tanh(cm.tanh(x @ Ws[0].T) @ Ws[1].T + bs[1])))(x)
    np.testing.assert_allclose(r.input_grad, g, rtol=1e-12)
    assert r.bias_grads[0] is None
    with pytest.raises(ValueError, match=r"W_2 has shape \(1, 4\), expected \(out, 3\)"):
        nn.backprop([Ws[0], np.ones((1, 4))], bs, x, np.ones((5, 1)))


def test_lists_and_numbers_take_the_layer_dtype_and_complex_input_is_refused():
    lin = cm.nn.Linear(2, 3, rng=0, dtype=np.float32)
    assert lin([[1.0, 2.0]]).dtype == np.float32
    assert cm.nn.LayerNorm(2, dtype=np.float32)([[1.0, 2.0], [3.0, 5.0]]).dtype == np.float32
    assert lin(np.array([[1, 2]])).dtype == np.float32             # integers too
    assert lin(np.array([[1.0, 2.0]])).dtype == np.float64         # NumPy promotion for floats
    with pytest.raises(TypeError, match=r"calcml.nn: .*complex128.*\(1, 2\)"):
        lin(np.array([[1j, 2.0]]))


def test_functional_call_replaces_a_tied_weight_everywhere():
    a, b = cm.nn.Linear(2, 2, rng=0), cm.nn.Linear(2, 2, rng=1)
    b.weight = a.weight  # tied: named_parameters() lists it once, as "0.weight"
    model = cm.nn.Sequential(a, cm.nn.Tanh(), b)
    x = np.linspace(-1, 1, 6).reshape(3, 2)
    params = {n: t.data for n, t in model.named_parameters()}
    assert "2.weight" not in params
    g = cm.grad(lambda p: cm.sum(cm.nn.functional_call(model, p, x) ** 2))(params)
    cm.sum(model(x) ** 2).backward()
    assert type(g["0.weight"]) is np.ndarray
    np.testing.assert_allclose(g["0.weight"], a.weight.grad, rtol=1e-12)
    # naming both places also works, and the module is restored afterwards
    w = np.zeros((2, 2))
    out = cm.nn.functional_call(model, {"0.weight": w, "2.weight": w}, x)
    np.testing.assert_allclose(out, np.broadcast_to(b.bias.data, (3, 2)))
    assert model[2].weight is model[0].weight is a.weight

"""cm.nn.BatchNorm1d and LayerNorm: forward, running statistics, the full training gradient,
and the chapter's batch-norm formula (true only with frozen statistics)."""

import numpy as np
import pytest

import calcml as cm
from calcml import nn

RNG = np.random.default_rng(99)


def _params(model):
    return {n: np.array(p.data) for n, p in model.named_parameters()}


def _bn(n_features=5, seed=0, **kw):
    rng = np.random.default_rng(seed)
    bn = nn.BatchNorm1d(n_features, **kw)
    bn.weight.data[:] = rng.normal(size=n_features)
    bn.bias.data[:] = rng.normal(size=n_features)
    return bn


def _grad_x(module, x, G):
    xt = cm.tensor(x, requires_grad=True)
    module(xt).backward(G)
    return xt.grad


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --- BatchNorm1d ----------------------------------------------------------------------------

def test_batchnorm_running_stats_do_not_move_inside_a_transform():
    # cm.grad / cm.check_grad through functional_call with traced γ: not a training step
    bn = nn.BatchNorm1d(2)
    x = np.arange(8.0).reshape(4, 2)
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()

    def f(w):
        return cm.sum(cm.square(nn.functional_call(bn, {"weight": w}, x)))

    cm.grad(f)(np.ones(2))
    cm.check_grad(f, np.ones(2))
    np.testing.assert_array_equal(bn.running_mean, rm)
    np.testing.assert_array_equal(bn.running_var, rv)
    bn(x)  # an ordinary training-mode call still updates them
    assert not np.array_equal(bn.running_mean, rm)


def test_batchnorm_forward_and_running_stats_by_hand():
    bn = _bn(momentum=0.2)
    x1, x2 = RNG.normal(size=(8, 5)) * 2 + 1, RNG.normal(size=(8, 5)) - 3
    for x in (x1, x2):
        mu, var = x.mean(0), x.var(0)
        y = bn(x)
        expected = (x - mu) / np.sqrt(var + 1e-5) * bn.weight.data + bn.bias.data
        np.testing.assert_allclose(y.data, expected, rtol=1e-13, atol=1e-13)
    # PyTorch's convention: unbiased variance in the running estimate, momentum on the new batch
    rm = 0.8 * (0.8 * 0 + 0.2 * x1.mean(0)) + 0.2 * x2.mean(0)
    rv = 0.8 * (0.8 * 1 + 0.2 * x1.var(0, ddof=1)) + 0.2 * x2.var(0, ddof=1)
    np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-14)
    np.testing.assert_allclose(bn.running_var, rv, rtol=1e-14)
    bn.eval()
    x3 = RNG.normal(size=(3, 5))
    np.testing.assert_allclose(bn(x3).data, (x3 - rm) / np.sqrt(rv + 1e-5) * bn.weight.data
                               + bn.bias.data, rtol=1e-13)
    np.testing.assert_allclose(bn.running_mean, rm)  # eval does not move the statistics


def test_batchnorm_matches_torch_train_and_eval():
    torch = pytest.importorskip("torch")
    bn = _bn(4, momentum=0.3, eps=1e-3)
    tb = torch.nn.BatchNorm1d(4, eps=1e-3, momentum=0.3).double()
    with torch.no_grad():
        tb.weight.copy_(torch.tensor(bn.weight.data))
        tb.bias.copy_(torch.tensor(bn.bias.data))
    for step in range(3):
        x, G = RNG.normal(size=(10, 4)) * (step + 1), RNG.normal(size=(10, 4))
        xt, X = cm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        bn.zero_grad()
        bn(xt).backward(G)
        Y = tb(X)
        tb.zero_grad()
        Y.backward(torch.tensor(G))
        np.testing.assert_allclose(xt.grad, X.grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(bn.weight.grad, tb.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(bn.bias.grad, tb.bias.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(bn.running_mean, tb.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, tb.running_var.numpy(), rtol=1e-12)
    bn.eval(), tb.eval()
    x = RNG.normal(size=(6, 4))
    np.testing.assert_allclose(bn(x).data, tb(torch.tensor(x)).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_check_grad_input_and_parameters(training):
    bn = _bn(3)
    bn(RNG.normal(size=(20, 3)) + 2)  # non-trivial running statistics
    bn.train(training)
    x = RNG.normal(size=(6, 3))
    rep = cm.check_grad(lambda x, p: nn.functional_call(bn, p, x), x, _params(bn))
    assert rep.passed and rep.max_rel_error < 1e-5


def test_batchnorm_training_gradient_vs_central_differences():
    """The full gradient, through μ_B and σ²_B, against plain central differences."""
    bn = _bn(4)
    x, G = RNG.normal(size=(7, 4)), RNG.normal(size=(7, 4))
    g = _grad_x(bn, x, G)

    def L(x):
        with cm.no_grad():
            return float(np.sum(bn(x).data * G))

    h, num = 1e-6, np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        num[idx] = (L(x + e) - L(x - e)) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g, nn.batchnorm_train_grad(G, x, bn.weight.data), rtol=1e-12,
                               atol=1e-14)
    # properties of the true gradient: zero sum over the batch (shift invariance) and, up to
    # the ε/σ² that breaks scale invariance, orthogonal to x̂; the chapter's has neither
    xhat = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(g.sum(0), 0, atol=1e-12)
    assert np.abs((g * xhat).sum(0)).max() < 1e-3 * np.abs(g).sum()
    ch = nn.batchnorm_chapter_grad(G, x, bn.weight.data)
    assert np.abs(ch.sum(0)).max() > 0.1


def test_chapter_formula_is_the_eval_gradient_not_the_training_one():
    bn = _bn(5)
    for _ in range(5):
        bn(RNG.normal(size=(32, 5)) * 2 + 0.5)
    x, G = RNG.normal(size=(32, 5)) * 2 + 0.5, RNG.normal(size=(32, 5))
    gamma = bn.weight.data

    bn.eval()  # frozen statistics: the chapter's formula is exact
    g_eval = _grad_x(bn, x, G)
    chapter_eval = nn.batchnorm_chapter_grad(G, x, gamma, var=bn.running_var)
    np.testing.assert_allclose(chapter_eval, g_eval, rtol=1e-13, atol=1e-15)

    bn.train()  # batch statistics: it misses the terms through μ_B and σ²_B
    g_train = _grad_x(bn, x, G)
    chapter_train = nn.batchnorm_chapter_grad(G, x, gamma)
    err = _rel(chapter_train, g_train)
    # for a random ∂L/∂y the dropped components are 2 of m directions per feature, so the
    # relative error is about sqrt(2/(m-2)) = 0.26 for m = 32 (measured 0.19 here)
    assert 0.1 < err < 0.5, err
    # the missing part is exactly the batch mean of g and its projection on x̂
    np.testing.assert_allclose(nn.batchnorm_train_grad(G, x, gamma), g_train, rtol=1e-12,
                               atol=1e-14)

    # a loss through the batch mean only (∂L/∂y constant per feature): the true gradient is 0
    # (shifting the whole batch changes nothing), the chapter's formula is not
    G1 = np.ones_like(x) * RNG.normal(size=(1, 5))
    g1 = _grad_x(bn, x, G1)
    np.testing.assert_allclose(g1, 0, atol=1e-13)
    assert np.abs(nn.batchnorm_chapter_grad(G1, x, gamma)).max() > 0.1


def test_batchnorm_running_stats_skip_under_transforms_and_errors():
    bn = nn.BatchNorm1d(2)
    x = RNG.normal(size=(4, 2))
    cm.grad(lambda x: cm.sum(bn(x) ** 3))(x)  # traced: the numbers are not read
    np.testing.assert_array_equal(bn.running_mean, 0)
    bn(x)
    assert not np.allclose(bn.running_mean, 0)
    with pytest.raises(ValueError, match="more than one value per feature"):
        bn(np.ones((1, 2)))
    bn.eval()
    assert bn(np.ones((1, 2))).shape == (1, 2)  # eval with one example is fine
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 2\)"):
        bn(np.ones((4, 3)))


def test_batchnorm_3d_and_options():
    torch = pytest.importorskip("torch")
    x = RNG.normal(size=(4, 3, 6))
    bn = nn.BatchNorm1d(3)
    tb = torch.nn.BatchNorm1d(3).double()
    np.testing.assert_allclose(bn(x).data, tb(torch.tensor(x)).detach().numpy(), rtol=1e-12,
                               atol=1e-13)
    np.testing.assert_allclose(bn.running_var, tb.running_var.numpy(), rtol=1e-12)
    plain = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    assert plain.parameters() == [] and plain.state_dict() == {}
    plain.eval()
    y = np.asarray(plain(x[:, :, 0]))
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-12)  # batch statistics even in eval


# --- LayerNorm ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4,), (3, 4)])
def test_layernorm_matches_torch(shape):
    torch = pytest.importorskip("torch")
    x, G = RNG.normal(size=(2, 5) + shape) * 3, RNG.normal(size=(2, 5) + shape)
    ln = nn.LayerNorm(shape, eps=1e-4)
    ln.weight.data[...] = RNG.normal(size=shape)
    ln.bias.data[...] = RNG.normal(size=shape)
    tl = torch.nn.LayerNorm(shape, eps=1e-4).double()
    with torch.no_grad():
        tl.weight.copy_(torch.tensor(ln.weight.data))
        tl.bias.copy_(torch.tensor(ln.bias.data))
    xt, X = cm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, Y = ln(xt), tl(X)
    np.testing.assert_allclose(y.data, Y.detach().numpy(), rtol=1e-12, atol=1e-13)
    y.backward(G)
    Y.backward(torch.tensor(G))
    np.testing.assert_allclose(xt.grad, X.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ln.weight.grad, tl.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ln.bias.grad, tl.bias.grad.numpy(), rtol=1e-10)


def test_layernorm_by_hand_check_grad_and_errors():
    ln = nn.LayerNorm(4)
    x = RNG.normal(size=(3, 4))
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(ln(x).data, (x - mu) / np.sqrt(var + 1e-5), rtol=1e-13)
    ln.eval()
    np.testing.assert_allclose(ln(x).data, (x - mu) / np.sqrt(var + 1e-5), rtol=1e-13)
    ln.weight.data[:] = RNG.normal(size=4)
    rep = cm.check_grad(lambda x, p: nn.functional_call(ln, p, x), x, _params(ln))
    assert rep.passed and rep.max_rel_error < 1e-5
    with pytest.raises(ValueError, match=r"does not end in normalized_shape \(4,\)"):
        ln(np.ones((3, 5)))

"""Review of cm.nn attention, normalization and layers: input validation, dtypes, and
values/gradients against plain NumPy (closed forms and central differences)."""

import io

import numpy as np
import pytest
from fdcheck import central_grad

import calcml as cm
from calcml import nn

# --- layers.py ------------------------------------------------------------------------------

def test_linear_wrong_feature_size_names_layer_shape_and_dtype():
    lin = nn.Linear(3, 2, rng=0)
    for x in (np.ones((4, 5)), cm.tensor(np.ones((4, 5))), np.float64(1.0)):
        with pytest.raises(ValueError, match=r"calcml\.nn\.Linear.*\(\.\.\., 3\).*float64"):
            lin(x)


def test_flatten_refuses_too_few_axes_and_keeps_empty_batch():
    with pytest.raises(ValueError, match=r"calcml\.nn\.Flatten.*\(5,\)"):
        nn.Flatten()(np.ones(5))
    assert nn.Flatten()(np.ones((0, 3, 4))).shape == (0, 12)
    assert nn.Flatten(-2)(np.ones((2, 3, 4))).shape == (2, 12)


@pytest.mark.parametrize("p", [1.5, -0.5, float("nan")])
def test_dropout_function_validates_p(p):
    with pytest.raises(ValueError, match=r"calcml\.nn\.dropout: p is a probability"):
        nn.layers.dropout(np.ones(4), p)


def test_dropout_function_validates_mode():
    with pytest.raises(ValueError, match="mode must be"):
        nn.layers.dropout(np.ones(4), 0.5, mode="bogus")


def test_dropout_inverted_and_classic_use_keep_probability():
    x = np.full((400, 50), 3.0)
    q = 0.8  # p = 0.2 drops, keeps with q
    d = nn.Dropout(0.2, rng=0)
    y = np.asarray(d(x).data)
    np.testing.assert_allclose(y, d.last_mask * x / q)
    assert abs(d.last_mask.mean() - q) < 0.01
    np.testing.assert_array_equal(np.asarray(d.eval()(x)), x)
    c = nn.Dropout(0.2, mode="classic", rng=0)
    np.testing.assert_allclose(np.asarray(c.eval()(x)), q * x)
    # same seed, same masks; a float32 input stays float32 (output and gradient)
    a = nn.Dropout(0.5, rng=np.random.default_rng(4))
    b = nn.Dropout(0.5, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(np.asarray(a(x).data), np.asarray(b(x).data))
    xt = cm.tensor(np.ones((3, 4), np.float32), requires_grad=True)
    y32 = nn.Dropout(0.3, rng=1)(xt)
    y32.sum().backward()
    assert y32.dtype == np.float32 and xt.grad.dtype == np.float32


# --- attention.py ---------------------------------------------------------------------------

def _np_sdpa(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True) @ v


def test_sdpa_rejects_inputs_with_fewer_than_two_axes():
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: q needs at least two "
                                         r"axes.*\(3,\).*float64"):
        nn.scaled_dot_product_attention(np.ones(3), np.ones(3), np.ones(3))


def test_sdpa_masked_gradients_match_central_differences():
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 3))
    mask = rng.random((3, 5)) < 0.6
    mask[:, 0] = True
    G = rng.normal(size=(2, 3, 3))
    ts = [cm.tensor(a, requires_grad=True) for a in (q, k, v)]
    out, w = nn.scaled_dot_product_attention(*ts, mask=mask, need_weights=True)
    (out * G).sum().backward()
    np.testing.assert_allclose(np.asarray(w.data).sum(-1), 1.0, atol=1e-12)
    assert np.all(np.asarray(w.data)[:, ~mask] == 0.0)
    fd = central_grad(lambda a, b, c: (_np_sdpa(a, b, c, mask) * G).sum(), [q, k, v])
    for t, g in zip(ts, fd):
        np.testing.assert_allclose(t.grad, g, atol=1e-7)


def test_mha_refuses_batch_mismatch_instead_of_broadcasting():
    mha = nn.MultiHeadAttention(6, 2, rng=0)
    x = np.ones((2, 4, 6))
    with pytest.raises(ValueError, match=r"MultiHeadAttention: query, key and value.*\(1, 5, 6\)"):
        mha(x, np.ones((1, 5, 6)))
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*value \(2, 4, 6\)"):
        mha(x, np.ones((2, 5, 6)), x)


def test_mha_mask_errors_name_the_layer_and_refuse_non_boolean_masks():
    mha = nn.MultiHeadAttention(6, 2, rng=0)
    x = np.ones((2, 4, 6))
    with pytest.raises(TypeError, match=r"MultiHeadAttention: mask must be boolean.*float64"):
        mha(x, mask=np.ones((4, 4)), causal=True)  # was silently cast to bool
    with pytest.raises(ValueError, match=r"MultiHeadAttention: mask of shape \(3, 3\).*"
                                         r"\(2, 2, 4, 4\)"):
        mha(x, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match=r"MultiHeadAttention: mask of shape \(3, 4, 4\).*"
                                         r"\(batch, Lq, Lk\) = \(2, 4, 4\)"):
        mha(x, mask=np.ones((3, 4, 4), bool))


# --- norm.py --------------------------------------------------------------------------------

def test_norm_layers_without_affine_convert_integer_input_to_their_dtype():
    bn = nn.BatchNorm1d(3, affine=False, dtype=np.float32)
    x = np.arange(12).reshape(4, 3)
    assert bn(x).dtype == np.float32
    assert bn.eval()(x).dtype == np.float32
    ln = nn.LayerNorm(3, elementwise_affine=False, dtype=np.float32)
    assert ln(x).dtype == np.float32


def test_norm_layers_validate_eps_momentum_and_shape():
    with pytest.raises(ValueError, match=r"BatchNorm1d: eps .* >= 0, got -1"):
        nn.BatchNorm1d(3, eps=-1)
    with pytest.raises(ValueError, match=r"LayerNorm: eps"):
        nn.LayerNorm(3, eps=float("nan"))
    with pytest.raises(TypeError, match=r"BatchNorm1d: momentum must be a number"):
        nn.BatchNorm1d(3, momentum=None)
    with pytest.raises(ValueError, match=r"LayerNorm: normalized_shape must be positive"):
        nn.LayerNorm(0)
    with pytest.raises(ValueError, match=r"BatchNorm1d.*\(4, 2\) and dtype float64"):
        nn.BatchNorm1d(3)(np.ones((4, 2)))


def _np_bn(x, w, b, eps):
    axes, sh = ((0,), (1, -1)) if x.ndim == 2 else ((0, 2), (1, -1, 1))
    mu, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w.reshape(sh) + b.reshape(sh)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)])
def test_batchnorm_full_gradient_running_stats_and_eval(shape):
    rng = np.random.default_rng(2)
    bn = nn.BatchNorm1d(3, eps=1e-3, momentum=0.3)
    w, b = rng.normal(size=3), rng.normal(size=3)
    bn.weight.data[:], bn.bias.data[:] = w, b
    x, G = rng.normal(size=shape) * 3 + 1, rng.normal(size=shape)
    xt = cm.tensor(x, requires_grad=True)
    y = bn(xt)
    (y * G).sum().backward()
    np.testing.assert_allclose(np.asarray(y.data), _np_bn(x, w, b, 1e-3), atol=1e-12)
    fd = central_grad(lambda a, c, d: (_np_bn(a, c, d, 1e-3) * G).sum(), [x, w, b])
    for got, want in zip((xt.grad, bn.weight.grad, bn.bias.grad), fd):
        np.testing.assert_allclose(got, want, atol=1e-6)
    axes = (0,) if len(shape) == 2 else (0, 2)
    np.testing.assert_allclose(bn.running_mean, 0.3 * x.mean(axes))
    np.testing.assert_allclose(bn.running_var, 0.7 + 0.3 * x.var(axes, ddof=1))
    # save / load through .npz, then eval uses the running statistics
    buf = io.BytesIO()
    np.savez(buf, **bn.state_dict())
    buf.seek(0)
    bn2 = nn.BatchNorm1d(3, eps=1e-3)
    bn2.load_state_dict(dict(np.load(buf)))
    bn2.eval()
    sh = (1, -1) if len(shape) == 2 else (1, -1, 1)
    want = ((x - bn.running_mean.reshape(sh)) / np.sqrt(bn.running_var.reshape(sh) + 1e-3)
            * w.reshape(sh) + b.reshape(sh))
    np.testing.assert_allclose(np.asarray(bn2(x).data), want, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(bn2(x).data), np.asarray(bn2(x).data))


def test_layernorm_rows_have_mean_zero_variance_one_and_fd_gradient():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 4)) * 2 + 3
    y = np.asarray(nn.LayerNorm(4, eps=0.0, elementwise_affine=False)(x))
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1.0, atol=1e-12)
    ln = nn.LayerNorm((3, 4))
    w, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    ln.weight.data[:], ln.bias.data[:] = w, b
    G = rng.normal(size=x.shape)

    def f(a, c, d):
        mu, var = a.mean((-2, -1), keepdims=True), a.var((-2, -1), keepdims=True)
        return (((a - mu) / np.sqrt(var + 1e-5) * c + d) * G).sum()

    xt = cm.tensor(x, requires_grad=True)
    (ln(xt) * G).sum().backward()
    for got, want in zip((xt.grad, ln.weight.grad, ln.bias.grad), central_grad(f, [x, w, b])):
        np.testing.assert_allclose(got, want, atol=1e-6)

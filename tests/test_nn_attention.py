"""cm.nn attention: scaled dot-product attention, masks, MultiHeadAttention."""

import numpy as np
import pytest

import calcml as cm
from calcml import nn

RNG = np.random.default_rng(7)


def _params(model):
    return {n: np.array(p.data) for n, p in model.named_parameters()}


def _reference(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    w = e / e.sum(-1, keepdims=True)
    return w @ v, w


def _qkv(batch=(2, 3), Lq=4, Lk=5, d=6, dv=3):
    return (RNG.normal(size=batch + (Lq, d)), RNG.normal(size=batch + (Lk, d)),
            RNG.normal(size=batch + (Lk, dv)))


def test_sdpa_matches_numpy_reference_with_and_without_mask():
    q, k, v = _qkv()
    out, w = nn.scaled_dot_product_attention(q, k, v, need_weights=True)
    ref, wref = _reference(q, k, v)
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(w, wref, rtol=1e-13, atol=1e-15)
    mask = RNG.random((3, 4, 5)) < 0.7
    mask[..., 0] = True  # every row attends somewhere
    out, w = nn.scaled_dot_product_attention(q, k, v, mask=mask, need_weights=True)
    ref, wref = _reference(q, k, v, mask)
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-14)
    assert np.all(w[..., ~mask] == 0.0)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-14)


def test_sdpa_matches_torch_forward_and_gradients():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    q, k, v = _qkv()
    G = RNG.normal(size=(2, 3, 4, 3))
    mask = RNG.random((4, 5)) < 0.6
    mask[:, 1] = True
    for m in (None, mask):
        qt, kt, vt = (cm.tensor(a, requires_grad=True) for a in (q, k, v))
        out = nn.scaled_dot_product_attention(qt, kt, vt, mask=m)
        out.backward(G)
        Q, K, V = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
        ref = F.scaled_dot_product_attention(Q, K, V, attn_mask=None if m is None else
                                             torch.tensor(m))
        ref.backward(torch.tensor(G))
        np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
        for a, b in ((qt, Q), (kt, K), (vt, V)):
            np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_sdpa_check_grad_and_gradient_formulas():
    q, k, v = _qkv(batch=(2,), Lq=3, Lk=4, d=2, dv=2)
    mask = np.ones((3, 4), bool)
    mask[0, 2:] = False
    rep = cm.check_grad(lambda q, k, v: nn.scaled_dot_product_attention(q, k, v, mask), q, k, v)
    assert rep.passed and rep.max_rel_error < 1e-5
    # the closed forms of the module docstring (and the K the chapter's dAttention/dQ omits)
    G = RNG.normal(size=(2, 3, 2))
    _, vjp = cm.vjp(lambda q, k, v: nn.scaled_dot_product_attention(q, k, v), q, k, v)
    gq, gk, gv = vjp(G)
    _, P = _reference(q, k, v)
    dP = G @ np.swapaxes(v, -1, -2)
    dS = P * (dP - (dP * P).sum(-1, keepdims=True))
    d = np.sqrt(q.shape[-1])
    np.testing.assert_allclose(gv, np.swapaxes(P, -1, -2) @ G, rtol=1e-12)
    np.testing.assert_allclose(gq, dS @ k / d, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(gk, np.swapaxes(dS, -1, -2) @ q / d, rtol=1e-11, atol=1e-14)


def test_causal_mask_zero_weight_and_zero_gradient_to_future_keys():
    L = 5
    np.testing.assert_array_equal(nn.causal_mask(3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    assert nn.causal_mask(2, 4).shape == (2, 4)
    q, k, v = _qkv(batch=(2,), Lq=L, Lk=L)
    _, w = nn.scaled_dot_product_attention(q, k, v, mask=nn.causal_mask(L), need_weights=True)
    assert np.all(w[:, np.triu_indices(L, 1)[0], np.triu_indices(L, 1)[1]] == 0.0)
    assert np.all(w[:, np.tril_indices(L)[0], np.tril_indices(L)[1]] > 0.0)
    for i in range(L):
        def out_i(k, v, i=i):
            return cm.sum(nn.scaled_dot_product_attention(q, k, v, nn.causal_mask(L))[:, i])

        gk, gv = cm.grad(out_i, argnums=(0, 1))(k, v)
        assert np.all(gk[:, i + 1:] == 0.0) and np.all(gv[:, i + 1:] == 0.0)
        assert np.abs(gk[:, :i + 1]).max() > 0 or i == 0  # row 0 has one key: softmax is 1
        assert np.abs(gv[:, :i + 1]).max() > 0


def test_fully_masked_rows_give_zero_not_nan():
    q, k, v = _qkv(batch=(1,), Lq=3, Lk=4)
    mask = np.ones((3, 4), bool)
    mask[1] = False
    qt, kt, vt = (cm.tensor(a, requires_grad=True) for a in (q, k, v))
    out, w = nn.scaled_dot_product_attention(qt, kt, vt, mask=mask, need_weights=True)
    assert np.all(np.isfinite(out.data)) and np.all(out.data[:, 1] == 0.0)
    assert np.all(w.data[:, 1] == 0.0)
    np.testing.assert_allclose(w.data[:, [0, 2]].sum(-1), 1.0)
    out.sum().backward()
    for t in (qt, kt, vt):
        assert np.all(np.isfinite(t.grad))
    assert np.all(qt.grad[:, 1] == 0.0)
    # float32: the fill value is float32's most negative number, still no NaN and no upcast
    out32 = nn.scaled_dot_product_attention(*(a.astype(np.float32) for a in (q, k, v)), mask)
    assert out32.dtype == np.float32 and np.all(np.isfinite(out32))


def test_mask_errors():
    q, k, v = _qkv(batch=(1,), Lq=3, Lk=4)
    with pytest.raises(TypeError, match="mask must be boolean"):
        nn.scaled_dot_product_attention(q, k, v, mask=np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"mask of shape \(4, 3\) does not broadcast"):
        nn.scaled_dot_product_attention(q, k, v, mask=np.ones((4, 3), bool))
    with pytest.raises(ValueError, match="same number of keys"):
        nn.scaled_dot_product_attention(q, k, v[:, :2])


# --- MultiHeadAttention ---------------------------------------------------------------------

def test_mha_structure_and_reproducible_init():
    mha = nn.MultiHeadAttention(8, 2, rng=0)
    assert [n for n, _ in mha.named_children()] == ["q_proj", "k_proj", "v_proj", "out_proj"]
    assert all(isinstance(c, nn.Linear) for c in mha.children())
    assert mha.num_parameters() == 4 * (8 * 8 + 8)
    np.testing.assert_array_equal(nn.MultiHeadAttention(8, 2, rng=0).v_proj.weight.data,
                                  mha.v_proj.weight.data)
    assert not np.array_equal(mha.q_proj.weight.data, mha.k_proj.weight.data)
    with pytest.raises(ValueError, match="must be positive and divide embed_dim"):
        nn.MultiHeadAttention(8, 3)
    with pytest.raises(ValueError, match=r"query must have shape \(batch, seq, 8\)"):
        mha(np.ones((2, 3, 4)))


def test_mha_matches_torch():
    torch = pytest.importorskip("torch")
    E, H = 8, 2
    mha = nn.MultiHeadAttention(E, H, rng=1)
    tm = torch.nn.MultiheadAttention(E, H, batch_first=True).double()
    with torch.no_grad():
        tm.in_proj_weight.copy_(torch.tensor(np.concatenate(
            [mha.q_proj.weight.data, mha.k_proj.weight.data, mha.v_proj.weight.data])))
        tm.in_proj_bias.copy_(torch.tensor(np.concatenate(
            [mha.q_proj.bias.data, mha.k_proj.bias.data, mha.v_proj.bias.data])))
        tm.out_proj.weight.copy_(torch.tensor(mha.out_proj.weight.data))
        tm.out_proj.bias.copy_(torch.tensor(mha.out_proj.bias.data))
    xq, xkv = RNG.normal(size=(3, 4, E)), RNG.normal(size=(3, 6, E))
    G = RNG.normal(size=(3, 4, E))
    # self-attention, causal; torch's boolean attn_mask is True where attention is NOT allowed
    x = cm.tensor(xq, requires_grad=True)
    out, w = mha(x, causal=True, need_weights=True)
    X = torch.tensor(xq, requires_grad=True)
    ref, wref = tm(X, X, X, attn_mask=torch.tensor(~nn.causal_mask(4)),
                   average_attn_weights=False)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.data, wref.detach().numpy(), rtol=1e-10, atol=1e-12)
    out.backward(G)
    ref.backward(torch.tensor(G))
    np.testing.assert_allclose(x.grad, X.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mha.q_proj.weight.grad, tm.in_proj_weight.grad[:E].numpy(),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mha.out_proj.bias.grad, tm.out_proj.bias.grad.numpy(),
                               rtol=1e-9, atol=1e-12)
    # cross-attention with a per-batch key-padding style mask (batch, Lq, Lk)
    mask = np.ones((3, 4, 6), bool)
    mask[1, :, 4:] = False
    out = mha(xq, xkv, mask=mask)
    ref, _ = tm(torch.tensor(xq), torch.tensor(xkv), torch.tensor(xkv),
                attn_mask=torch.tensor(np.repeat(~mask, H, axis=0)))
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_mha_causal_past_outputs_ignore_future_tokens():
    mha = nn.MultiHeadAttention(6, 3, rng=2)
    x = RNG.normal(size=(2, 5, 6))
    y = np.asarray(mha(x, causal=True).data)
    x2 = x.copy()
    x2[:, 3:] = RNG.normal(size=(2, 2, 6))  # change the future
    y2 = np.asarray(mha(x2, causal=True).data)
    np.testing.assert_allclose(y2[:, :3], y[:, :3], rtol=1e-13, atol=1e-14)
    assert np.abs(y2[:, 3:] - y[:, 3:]).max() > 1e-3
    # gradient of output position 1 w.r.t. the inputs after it: zero
    g = cm.grad(lambda x: cm.sum(nn.functional_call(mha, _params(mha), x, causal=True)[:, 1]))(x)
    assert np.all(g[:, 2:] == 0.0) and np.abs(g[:, :2]).max() > 0


def test_mha_check_grad_and_unbatched():
    mha = nn.MultiHeadAttention(4, 2, rng=3)
    x = RNG.normal(size=(1, 3, 4))
    rep = cm.check_grad(lambda x, p: nn.functional_call(mha, p, x, causal=True), x,
                        _params(mha), order=1)
    assert rep.passed and rep.max_rel_error < 1e-5
    out = mha(x[0])
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out.data, mha(x).data[0], rtol=1e-14)

r"""Attention: ``scaled_dot_product_attention``, ``MultiHeadAttention``, ``causal_mask``.

.. math:: \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\Big(\frac{QK^\top}{\sqrt{d_k}}\Big) V

(chapter 9.6), written with calcml's ``matmul``, ``softmax`` and ``where``, so every gradient
(w.r.t. Q, K, V and the projections) comes from the engine.  With S = QKᵀ/√d, P = softmax(S)
(row-wise) and G = ∂L/∂out:

* ∂L/∂V = Pᵀ G;
* ∂L/∂P = G Vᵀ, ∂L/∂S = P ⊙ (∂L/∂P - rowsum(∂L/∂P ⊙ P)) (the softmax Jacobian);
* ∂L/∂Q = (∂L/∂S) K / √d and ∂L/∂K = (∂L/∂S)ᵀ Q / √d.

The chapter's "∂Attention/∂Q = (1/√d_k) softmax'(QKᵀ/√d_k) V" leaves out K: the derivative of
S = QKᵀ/√d w.r.t. Q is K/√d, and V enters through ∂L/∂P = G Vᵀ.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend, ops
from ..ops._base import raw
from .init import as_generator
from .layers import Linear
from .module import Module, as_input

__all__ = ["scaled_dot_product_attention", "MultiHeadAttention", "causal_mask"]


def causal_mask(L, Lk=None):
    """The boolean mask letting position i attend to positions j <= i: shape (L, Lk).

    ``Lk`` defaults to ``L``; the mask is ``numpy.tril`` of ones (aligned at the top left, as
    PyTorch's ``is_causal``), True where attention is allowed.

    Examples
    --------
    >>> causal_mask(3).astype(int)
    array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 1]])
    """
    Lk = L if Lk is None else Lk
    return np.tril(np.ones((int(L), int(Lk)), dtype=bool))


def _check_mask(mask, score_shape, who="scaled_dot_product_attention",
                what="the scores' shape"):
    mask = backend.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"calcml.nn.{who}: mask must be boolean (True where attention is "
                        f"allowed), got shape {mask.shape} and dtype {mask.dtype}")
    try:
        b = np.broadcast_shapes(mask.shape, tuple(score_shape))
    except ValueError:
        b = None
    if b != tuple(score_shape):
        raise ValueError(f"calcml.nn.{who}: mask of shape {mask.shape} does not broadcast to "
                         f"{what} {tuple(score_shape)}")
    return mask


def scaled_dot_product_attention(q, k, v, mask=None, need_weights=False):
    r"""softmax(q kᵀ / √d) v over the last two axes, with an optional boolean mask.

    Parameters
    ----------
    q : array (..., Lq, d)
    k : array (..., Lk, d)
    v : array (..., Lk, dv)
        Leading axes broadcast (NumPy's ``matmul`` rules).
    mask : bool array broadcastable to (..., Lq, Lk), optional
        True where query i may attend to key j.
    need_weights : bool
        Also return the attention weights P (..., Lq, Lk).

    Returns
    -------
    out : (..., Lq, dv), or ``(out, weights)`` with ``need_weights=True``.

    Notes
    -----
    Masked scores are replaced by the most negative finite number of the dtype before the
    softmax, so their weights are exactly 0 and no ``inf - inf`` arises.  A **fully masked
    row** (a query allowed to attend to nothing) gets all-zero weights, hence a zero output
    and zero gradients, instead of NaN (PyTorch's math backend gives NaN there): the weights
    are multiplied by the mask after the softmax.  The gradients are listed in the module
    docstring.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> q = k = np.eye(2)[None]; v = np.array([[[1.0], [2.0]]])
    >>> out, w = cm.nn.scaled_dot_product_attention(q, k, v, mask=cm.nn.causal_mask(2),
    ...                                             need_weights=True)
    >>> w[0, 0].tolist()
    [1.0, 0.0]
    """
    q, k, v = as_input(q), as_input(k), as_input(v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if len(t.shape) < 2:
            raise ValueError(f"calcml.nn.scaled_dot_product_attention: {name} needs at least "
                             f"two axes (..., L, d), got shape {tuple(t.shape)} and dtype "
                             f"{t.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"calcml.nn.scaled_dot_product_attention: q and k need the same last "
                         f"axis d, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"calcml.nn.scaled_dot_product_attention: k and v need the same "
                         f"number of keys Lk, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * scale
    if mask is None:
        weights = ops.softmax(scores, axis=-1)
    else:
        mask = _check_mask(mask, scores.shape, what="the scores' shape (..., Lq, Lk) =")
        mask = backend.on_backend_of(mask, raw(scores))  # a host mask for scores on the GPU
        dt = np.dtype(scores.dtype)
        fill = dt.type(np.finfo(dt).min)  # NumPy scalars: CuPy takes them, not host arrays
        weights = ops.softmax(ops.where(mask, scores, fill), axis=-1)
        weights = ops.where(mask, weights, dt.type(0))  # fully masked rows -> 0, not 1/Lk
    out = ops.matmul(weights, v)
    return (out, weights) if need_weights else out


class MultiHeadAttention(Module):
    r"""Multi-head attention with learned projections (chapter 9.6).

    Parameters
    ----------
    embed_dim : int
    num_heads : int
        Must divide ``embed_dim``; each head has ``head_dim = embed_dim // num_heads``.
    bias : bool
        Biases in the four projections.
    rng : numpy.random.Generator or int, optional
        Initialises ``q_proj, k_proj, v_proj, out_proj`` in that order.
    dtype : floating dtype
    init : str
        Passed to the four :class:`Linear` layers (default ``"xavier_uniform"``, as PyTorch's
        ``nn.MultiheadAttention`` uses for its input projections).

    Attributes
    ----------
    q_proj, k_proj, v_proj, out_proj : Linear (embed_dim -> embed_dim)

    Notes
    -----
    Q = X_q W_Qᵀ + b_Q (likewise K, V), split into h heads of size d_h = E/h;
    head_i = softmax(Q_i K_iᵀ/√d_h) V_i; the result is Concat(head_1, …, head_h) W_Oᵀ + b_O.
    """

    def __init__(self, embed_dim, num_heads, bias=True, *, rng=None, dtype=np.float64,
                 init="xavier_uniform"):
        super().__init__()
        embed_dim, num_heads = int(embed_dim), int(num_heads)
        if num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"calcml.nn.MultiHeadAttention: num_heads ({num_heads}) must be "
                             f"positive and divide embed_dim ({embed_dim})")
        gen = as_generator(rng)
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, Linear(embed_dim, embed_dim, bias, rng=gen, dtype=dtype,
                                       init=init))

    def _split(self, x):
        B, L, _ = x.shape
        return ops.swapaxes(ops.reshape(x, (B, L, self.num_heads, self.head_dim)), 1, 2)

    def forward(self, query, key=None, value=None, mask=None, causal=False, need_weights=False):
        r"""Attend from ``query`` to ``key``/``value``.

        Parameters
        ----------
        query : (batch, Lq, embed_dim), or (Lq, embed_dim) for one sequence
        key, value : (batch, Lk, embed_dim), optional
            Default ``query`` (self-attention); ``value`` defaults to ``key``.
        mask : bool array, optional
            True where attention is allowed: (Lq, Lk), (batch, Lq, Lk) (broadcast over
            heads), or (batch, num_heads, Lq, Lk).
        causal : bool
            Also apply :func:`causal_mask` (position i sees keys j <= i).
        need_weights : bool
            Also return the attention weights, per head: (batch, num_heads, Lq, Lk).

        Returns
        -------
        (batch, Lq, embed_dim), or ``(output, weights)``.

        Raises
        ------
        ValueError
            An input not (batch, seq, embed_dim); query, key and value with different batch
            sizes (no silent broadcasting), or key and value of different lengths; a mask that
            does not broadcast to (batch, num_heads, Lq, Lk) as described above.
        TypeError
            A mask that is not boolean (also with ``causal=True``).
        """
        dt = self.q_proj.weight.dtype
        query = as_input(query, dt)
        key = query if key is None else as_input(key, dt)
        value = key if value is None else as_input(value, dt)
        single = len(query.shape) == 2
        if single:
            query, key, value = (ops.expand_dims(t, 0) for t in (query, key, value))
        for name, t in (("query", query), ("key", key), ("value", value)):
            if len(t.shape) != 3 or t.shape[-1] != self.embed_dim:
                raise ValueError(f"calcml.nn.MultiHeadAttention: {name} must have shape "
                                 f"(batch, seq, {self.embed_dim}), got shape {tuple(t.shape)} "
                                 f"and dtype {t.dtype}")
        B, Lq, Lk = query.shape[0], query.shape[1], key.shape[1]
        if key.shape[0] != B or value.shape[0] != B or value.shape[1] != Lk:
            raise ValueError(f"calcml.nn.MultiHeadAttention: query, key and value need the same "
                             f"batch size and key and value the same length, got query "
                             f"{tuple(query.shape)}, key {tuple(key.shape)} and value "
                             f"{tuple(value.shape)}")
        if mask is not None:
            mask = backend.asarray(mask)
            if mask.ndim not in (2, 3, 4):
                raise ValueError(f"calcml.nn.MultiHeadAttention: mask must be (Lq, Lk), (batch, "
                                 f"Lq, Lk) or (batch, num_heads, Lq, Lk), got shape "
                                 f"{mask.shape} and dtype {mask.dtype}")
            full = (B, self.num_heads, Lq, Lk)
            what = "(batch, num_heads, Lq, Lk) ="
            if mask.ndim == 3:
                _check_mask(mask, (B, Lq, Lk), "MultiHeadAttention",
                            "(batch, Lq, Lk) =")
                mask = mask[:, None]
            mask = _check_mask(mask, full, "MultiHeadAttention", what)
        if causal:
            cm_ = causal_mask(Lq, Lk)
            mask = cm_ if mask is None else mask & backend.on_backend_of(cm_, mask)
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key))
        v = self._split(self.v_proj(value))
        out, w = scaled_dot_product_attention(q, k, v, mask=mask, need_weights=True)
        B = out.shape[0]
        out = ops.reshape(ops.swapaxes(out, 1, 2), (B, Lq, self.embed_dim))
        out = self.out_proj(out)
        if single:
            out, w = out[0], w[0]
        return (out, w) if need_weights else out

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"

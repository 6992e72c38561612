r"""Backpropagation made visible: the chapter's δ recursion (9.2), by hand, in NumPy.

For an MLP with layers l = 1..L, z_l = W_l a_{l-1} + b_l and a_l = σ_l(z_l) (a_0 = x):

.. math::
    \delta_L = \frac{\partial L}{\partial a_L} \odot \sigma_L'(z_L), \qquad
    \delta_l = (W_{l+1}^\top \delta_{l+1}) \odot \sigma_l'(z_l), \qquad
    \frac{\partial L}{\partial W_l} = \delta_l\, a_{l-1}^\top, \qquad
    \frac{\partial L}{\partial b_l} = \delta_l .

Here a batch is stored as rows (n, d), as everywhere in calcml, so the same formulas read
z_l = a_{l-1} W_lᵀ + b_l, δ_l = (δ_{l+1} W_{l+1}) ⊙ σ'(z_l), and the parameter gradients
are sums over the batch: ∂L/∂W_l = Σ_n δ_l^{(n)} a_{l-1}^{(n)ᵀ} = δ_lᵀ a_{l-1} and
∂L/∂b_l = Σ_n δ_l^{(n)}.  The mean over the batch, if the loss takes one, is already inside
∂L/∂a_L (e.g. ``cm.losses.mse.derivative``).

This module computes everything with plain NumPy, independently of the engine, so that
:func:`backprop` can be set against ``loss.backward()`` (they agree to rounding, ~1e-15).

Two caveats the chapter's formulas skip:

* δ_L = ∂L/∂a_L ⊙ σ'(z_L) holds for an *element-wise* output activation.  For softmax the
  Jacobian is not diagonal: δ_L = s ⊙ (∂L/∂a_L - ⟨∂L/∂a_L, s⟩) (``output_activation=
  "softmax"``); with cross-entropy this collapses to (s - y)/n.
* For a batch, ∂L/∂b_l = δ_l is per example; the gradient of the batch loss is its sum.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["backprop", "forward_pass", "mlp_from_sequential", "BackpropResult", "ACTIVATIONS"]


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1/(1+e^{-z}), without overflow


#: name -> (σ(z), σ'(z)), both NumPy functions of z.
ACTIVATIONS = {
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
}


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class BackpropResult(NamedTuple):
    """What :func:`backprop` computed, layer by layer (index 0 is layer 1).

    Attributes
    ----------
    weight_grads, bias_grads : list of array
        ∂L/∂W_l (shape of W_l, (out, in)) and ∂L/∂b_l.
    deltas : list of array
        δ_l = ∂L/∂z_l, shape (n, d_l).
    pre_activations : list of array
        z_l.
    activations : list of array
        a_0 = x, a_1, ..., a_L (one more than the layers).
    input_grad : array
        ∂L/∂x = δ_1 W_1 (one more step of the recursion).
    """

    weight_grads: list
    bias_grads: list
    deltas: list
    pre_activations: list
    activations: list
    input_grad: np.ndarray


def _layer_activations(n_layers, activation, output_activation):
    if isinstance(activation, str):
        acts = [activation] * n_layers
        if output_activation is not None:
            acts[-1] = output_activation
    else:
        acts = list(activation)
        if len(acts) != n_layers:
            raise ValueError(f"calcml.nn.backprop: {len(acts)} activations for {n_layers} "
                             f"layers")
        if output_activation is not None:
            raise ValueError("calcml.nn.backprop: give output_activation or a list of "
                             "activations, not both")
    for i, a in enumerate(acts):
        if a not in ACTIVATIONS and not (a == "softmax" and i == n_layers - 1):
            raise ValueError(f"calcml.nn.backprop: unknown activation {a!r} for layer {i + 1}; "
                             f"known: {sorted(ACTIVATIONS)} (and 'softmax' for the output)")
    return acts


def _check(weights, biases, x):
    weights = [np.asarray(w) for w in weights]
    if not weights:
        raise ValueError("calcml.nn.backprop: no layers")
    biases = [None if b is None else np.asarray(b) for b in biases]
    if len(biases) != len(weights):
        raise ValueError(f"calcml.nn.backprop: {len(weights)} weights but {len(biases)} biases")
    x = np.asarray(x)
    x = x[None] if x.ndim == 1 else x
    for i, w in enumerate(weights):
        prev = x.shape[-1] if i == 0 else weights[i - 1].shape[0]
        if w.ndim != 2 or w.shape[1] != prev:
            raise ValueError(f"calcml.nn.backprop: W_{i + 1} has shape {w.shape}, expected "
                             f"(out, {prev})")
    return weights, biases, x


def forward_pass(weights, biases, x, activation="sigmoid", output_activation=None):
    r"""The forward pass z_l = a_{l-1} W_lᵀ + b_l, a_l = σ_l(z_l).

    Returns
    -------
    (pre_activations, activations) : lists; ``activations[0]`` is x (as a 2-D batch).
    """
    weights, biases, x = _check(weights, biases, x)
    acts = _layer_activations(len(weights), activation, output_activation)
    zs, a_s = [], [x]
    a = x
    for w, b, name in zip(weights, biases, acts):
        z = a @ w.T if b is None else a @ w.T + b
        a = _softmax(z) if name == "softmax" else ACTIVATIONS[name][0](z)
        zs.append(z)
        a_s.append(a)
    return zs, a_s


def backprop(weights, biases, x, loss_grad, activation="sigmoid", output_activation=None):
    r"""Gradients of an MLP by the chapter's δ recursion, in NumPy.

    Parameters
    ----------
    weights : list of array
        W_1 ... W_L, each (out, in) (as :class:`~calcml.nn.Linear` stores them).
    biases : list of array or None
        b_1 ... b_L (None for a layer without bias).
    x : array (n, d_0) or (d_0,)
    loss_grad : callable or array
        ∂L/∂a_L: a function of the output a_L (e.g. ``lambda a: cm.losses.mse.derivative(y,
        a)``), or the array itself.
    activation : str or list of str
        σ for every layer (``"sigmoid"`` as in the chapter, ``"tanh"``, ``"relu"``,
        ``"identity"``), or one name per layer.
    output_activation : str, optional
        σ_L if it differs from the hidden layers' (may be ``"softmax"``).

    Returns
    -------
    BackpropResult

    Notes
    -----
    δ_L = ∂L/∂a_L ⊙ σ_L'(z_L) (softmax: s ⊙ (g - ⟨g, s⟩)); δ_l = (δ_{l+1} W_{l+1}) ⊙ σ_l'(z_l);
    ∂L/∂W_l = δ_lᵀ a_{l-1}; ∂L/∂b_l = Σ_batch δ_l.  Batch rows: see the module docstring.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> rng = np.random.default_rng(0)
    >>> W = [rng.normal(size=(3, 2)), rng.normal(size=(1, 3))]; b = [np.zeros(3), np.zeros(1)]
    >>> x, y = rng.normal(size=(4, 2)), rng.normal(size=(4, 1))
    >>> r = cm.nn.backprop(W, b, x, lambda a: cm.losses.mse.derivative(y, a))
    >>> [g.shape for g in r.weight_grads]
    [(3, 2), (1, 3)]
    """
    weights, biases, x = _check(weights, biases, x)
    acts = _layer_activations(len(weights), activation, output_activation)
    zs, a_s = forward_pass(weights, biases, x, acts)
    aL = a_s[-1]
    g = np.asarray(loss_grad(aL) if callable(loss_grad) else loss_grad)
    if g.shape != aL.shape:
        g = np.reshape(g, aL.shape)
    n_layers = len(weights)
    deltas = [None] * n_layers
    if acts[-1] == "softmax":
        deltas[-1] = aL * (g - (g * aL).sum(axis=-1, keepdims=True))
    else:
        deltas[-1] = g * ACTIVATIONS[acts[-1]][1](zs[-1])
    for i in range(n_layers - 2, -1, -1):
        deltas[i] = (deltas[i + 1] @ weights[i + 1]) * ACTIVATIONS[acts[i]][1](zs[i])
    wg = [d.T @ a for d, a in zip(deltas, a_s[:-1])]
    bg = [None if b is None else d.sum(axis=0) for d, b in zip(deltas, biases)]
    return BackpropResult(wg, bg, deltas, zs, a_s, deltas[0] @ weights[0])


def mlp_from_sequential(model):
    """Read an MLP out of a :class:`~calcml.nn.Sequential` of ``Linear`` and activation layers.

    Returns
    -------
    dict with ``weights``, ``biases`` (arrays, copies) and ``activation`` (one name per
    Linear layer; ``"identity"`` where none follows), ready for ``backprop(**d, x=...,
    loss_grad=...)``.
    """
    from .layers import Identity, Linear, ReLU, Sigmoid, Softmax, Tanh

    names = {ReLU: "relu", Tanh: "tanh", Sigmoid: "sigmoid", Identity: "identity",
             Softmax: "softmax"}
    weights, biases, acts = [], [], []
    for i, m in enumerate(model):
        if isinstance(m, Linear):
            weights.append(np.array(m.weight.data))
            biases.append(None if m.bias is None else np.array(m.bias.data))
            acts.append("identity")
        elif type(m) in names and weights and acts[-1] == "identity":
            acts[-1] = names[type(m)]
        else:
            raise ValueError(f"calcml.nn.mlp_from_sequential: layer {i} ({type(m).__name__}) "
                             f"is not a Linear or one activation after a Linear")
    return {"weights": weights, "biases": biases, "activation": acts}

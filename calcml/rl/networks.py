"""Networks for policies and values, and a fast no-graph forward pass for acting.

Acting needs one forward pass per environment step on a single observation, where the cost
is per-call overhead, not arithmetic.  :class:`NumpyForward` reads a ``Sequential`` of
``Linear`` layers and element-wise activations into plain NumPy arrays once per episode
(the weights do not change while an episode runs) and evaluates it with a handful of NumPy
calls: no Tensor, no graph.  Any other module falls back to ``module(x)`` under
``cm.no_grad()``.  Training then runs the same module once, with gradient, on the batch of
the episode's states.
"""

from __future__ import annotations

import numpy as np

import calcml as cm

from ._validate import as_generator, check_nonneg_int

__all__ = ["mlp", "NumpyForward"]

_ACTIVATIONS = {"tanh": cm.nn.Tanh, "relu": cm.nn.ReLU, "sigmoid": cm.nn.Sigmoid}


def mlp(in_features, out_features, hidden=(64,), *, activation="tanh", rng, dtype=np.float64):
    """A multilayer perceptron ``in → hidden… → out`` as a :class:`calcml.nn.Sequential`.

    Parameters
    ----------
    in_features, out_features : int
    hidden : sequence of int
        Widths of the hidden layers.
    activation : {"tanh", "relu", "sigmoid"}
        After every hidden layer (none after the last layer: it outputs logits or values).
    rng : numpy.random.Generator or int
        Seeds every layer's initialisation (PyTorch's default uniform rule).  Required, as
        in :func:`calcml.generative.mlp`: None (a generator seeded from the operating system,
        not reproducible) is refused with a TypeError.
    dtype : floating dtype

    Examples
    --------
    >>> from calcml import rl
    >>> net = rl.mlp(4, 2, hidden=(64,), rng=0)   # CartPole's 4 features, 2 actions
    >>> net.num_parameters()
    450
    """
    who = "mlp"
    if activation not in _ACTIVATIONS:
        raise ValueError(f"calcml.rl.{who}: activation must be one of {sorted(_ACTIVATIONS)}, "
                         f"got {activation!r}")
    sizes = [check_nonneg_int(who, "in_features", in_features, positive=True)]
    sizes += [check_nonneg_int(who, "hidden width", h, positive=True) for h in hidden]
    sizes.append(check_nonneg_int(who, "out_features", out_features, positive=True))
    gen = as_generator(who, rng)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(cm.nn.Linear(a, b, rng=gen, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return cm.nn.Sequential(*layers)


def _tanh(h):
    return np.tanh(h, out=h)


def _relu(h):
    return np.maximum(h, 0.0, out=h)


def _sigmoid(h):
    np.negative(h, out=h)
    np.exp(h, out=h)
    h += 1.0
    return np.reciprocal(h, out=h)


# in place: the array is a fresh product of the layer before
_NP_ACT = {cm.nn.Tanh: _tanh, cm.nn.ReLU: _relu, cm.nn.Sigmoid: _sigmoid, cm.nn.Identity: None}


class NumpyForward:
    """``module(x)`` for one observation ``x`` (1-D), without a graph, as a 1-D NumPy array.

    Parameters
    ----------
    module : calcml.nn.Module
        A ``Sequential`` of ``Linear``, ``Tanh``, ``ReLU``, ``Sigmoid`` and ``Identity``
        layers is compiled to NumPy; anything else runs under ``cm.no_grad()``.

    Notes
    -----
    Call :meth:`refresh` after the parameters change (the training loops do, once per
    episode): the compiled form holds transposed copies of the weights.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> net = rl.mlp(4, 2, rng=0)
    >>> fwd = rl.NumpyForward(net)
    >>> x = np.ones(4)
    >>> bool(np.allclose(fwd(x), net(x[None]).data[0]))
    True
    """

    def __init__(self, module):
        self.module = module
        self.layers = self._compile(module)
        self.refresh()

    @staticmethod
    def _compile(module):
        if not isinstance(module, cm.nn.Sequential):
            return None
        out = []
        for m in module:
            if isinstance(m, cm.nn.Linear):
                out.append(("linear", m))
            elif type(m) in _NP_ACT:
                if _NP_ACT[type(m)] is not None:
                    out.append(("act", _NP_ACT[type(m)]))
            else:
                return None
        return out

    @property
    def compiled(self):
        """Whether the module runs as plain NumPy (else under ``cm.no_grad()``)."""
        return self.layers is not None

    def refresh(self):
        """Re-read the weights (after an optimizer step)."""
        if self.layers is None:
            return
        self._ops = []
        for kind, m in self.layers:
            if kind == "linear":
                W = np.ascontiguousarray(np.asarray(m.weight.data).T)
                b = None if m.bias is None else np.array(m.bias.data)
                self._ops.append((W, b))
            else:
                self._ops.append(m)

    def __call__(self, x):
        if self.layers is None:
            with cm.no_grad():
                out = self.module(np.asarray(x)[None])
            return np.asarray(out.data if isinstance(out, cm.Tensor) else out)[0]
        # the activations work in place: one that comes first must not write into x (the
        # caller's observation, which play_episode keeps as a recorded state)
        h = x if self._ops and type(self._ops[0]) is tuple else np.array(x)
        for op in self._ops:
            if type(op) is tuple:
                W, b = op
                h = h @ W  # a new array: the in-place steps after it touch nothing else
                if b is not None:
                    h += b
            else:
                h = op(h)
        return h

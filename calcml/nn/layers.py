r"""Layers: ``Linear``, the activations, ``Dropout``.

Every layer computes with calcml's operations, so it works on plain arrays, on
:class:`calcml.Tensor` inputs (``loss.backward()`` fills the parameters' ``.grad``) and on
values traced by ``cm.grad`` & co. (see :func:`calcml.nn.functional_call`).
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend, ops
from ..ops._base import raw
from ..tensor import Tensor, tensor
from . import init as _init
from .module import Module, as_input

__all__ = ["Linear", "Identity", "ReLU", "Tanh", "Sigmoid", "GELU", "Softmax", "LogSoftmax",
           "Flatten", "Dropout", "gelu", "dropout"]

_INITS = ("torch", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal")


def _float_dtype(dtype, who):
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"calcml.nn.{who}: dtype must be floating point, got {dt}")
    return dt


def parameter(array):
    """A leaf :class:`calcml.Tensor` with ``requires_grad=True`` holding ``array``."""
    return tensor(array, requires_grad=True)


class Linear(Module):
    r"""An affine map ``y = x Wᵀ + b``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
        Whether to add a bias ``b``.
    rng : numpy.random.Generator or int, optional
        Source of the initial weights (None: calcml.nn's default generator, fixed seed at
        import; see :func:`calcml.nn.init.manual_seed`).
    dtype : floating dtype
        Of the parameters (default float64).  A float32 layer stays float32.
    init : {"torch", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal"}
        ``"torch"`` (default) is PyTorch's default initialisation: every entry of ``W`` *and*
        ``b`` from U(-1/√in, 1/√in) (Var = 1/(3·in)).  The others draw ``W`` by
        :mod:`calcml.nn.init` (Var 2/(in+out) or 2/in) and set ``b = 0``.  The weight is drawn
        first, then the bias, from the same generator.

    Attributes
    ----------
    weight : Tensor of shape (out_features, in_features)
    bias : Tensor of shape (out_features,) or None

    Notes
    -----
    For one example (a column) this is the chapter's z = W a + b; for a batch stored as rows
    (n, in) it is Z = A Wᵀ + b.  The gradients are ∂L/∂W = (∂L/∂Z)ᵀ A (summed over the batch),
    ∂L/∂b = Σ_rows ∂L/∂Z and ∂L/∂A = (∂L/∂Z) W.  Any number of leading axes is allowed.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> lin = cm.nn.Linear(3, 2, rng=0)
    >>> lin.weight.shape, lin.bias.shape
    ((2, 3), (2,))
    >>> lin(np.ones((4, 3))).shape
    (4, 2)
    """

    def __init__(self, in_features, out_features, bias=True, *, rng=None, dtype=np.float64,
                 init="torch"):
        super().__init__()
        in_features, out_features = int(in_features), int(out_features)
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"calcml.nn.Linear: in_features and out_features must be positive, "
                             f"got {in_features} and {out_features}")
        if init not in _INITS:
            raise ValueError(f"calcml.nn.Linear: init must be one of {_INITS}, got {init!r}")
        dt = _float_dtype(dtype, "Linear")
        gen = _init.as_generator(rng)
        self.in_features, self.out_features, self.init = in_features, out_features, init
        shape = (out_features, in_features)
        if init == "torch":
            a = 1.0 / math.sqrt(in_features)
            w = _init.uniform(shape, -a, a, rng=gen, dtype=dt)
            b = _init.uniform((out_features,), -a, a, rng=gen, dtype=dt) if bias else None
        else:
            w = getattr(_init, init)(shape, rng=gen, dtype=dt)
            b = _init.zeros((out_features,), dtype=dt) if bias else None
        self.weight = parameter(w)
        self.bias = parameter(b) if bias else None

    def forward(self, x):
        if type(x) is not Tensor:  # (every layer but the first gets a Tensor)
            x = as_input(x, self.weight.dtype)
        try:
            if self.bias is None:
                return ops.matmul(x, ops.transpose(self.weight))
            return ops.linear(x, self.weight, self.bias)  # x Wᵀ + b as one node
        except ValueError:  # checked only on failure: the hot path stays one call
            shape = tuple(x.shape)
            if not shape or shape[-1] != self.in_features:
                raise ValueError(f"calcml.nn.Linear: expected input of shape (..., "
                                 f"{self.in_features}) (in_features last), got shape {shape} "
                                 f"and dtype {x.dtype}") from None
            raise

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# --- activations --------------------------------------------------------------------------

class Identity(Module):
    """``y = x``."""

    def forward(self, x):
        return as_input(x)


class ReLU(Module):
    r"""``max(x, 0)``, element-wise; derivative 1 for x > 0, 0 for x < 0 (0 at x = 0)."""

    def forward(self, x):
        return ops.relu(as_input(x))


class Tanh(Module):
    r"""``tanh(x)``; derivative 1 - tanh²(x)."""

    def forward(self, x):
        return ops.tanh(as_input(x))


class Sigmoid(Module):
    r"""``σ(x) = 1 / (1 + e^{-x})``; derivative σ(x)(1 - σ(x))."""

    def forward(self, x):
        return ops.sigmoid(as_input(x))


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x):
    r"""GELU, tanh approximation: ½ x (1 + tanh(√(2/π) (x + 0.044715 x³))).

    Notes
    -----
    The exact GELU is x Φ(x) with Φ the normal CDF, which needs ``erf``; calcml has no ``erf``
    operation, so this is the tanh approximation (Hendrycks & Gimpel 2016; PyTorch's
    ``gelu(approximate="tanh")``), within about 1e-3 of the exact one.  Its derivative, with
    u = √(2/π)(x + 0.044715 x³) and t = tanh u, is ½(1 + t) + ½ x (1 - t²) √(2/π)(1 + 0.134145 x²).
    """
    x = as_input(x)
    u = (x + 0.044715 * (x * x * x)) * _GELU_C
    return 0.5 * x * (1.0 + ops.tanh(u))


class GELU(Module):
    """The Gaussian error linear unit, tanh approximation (see :func:`gelu`)."""

    def forward(self, x):
        return gelu(x)

    def extra_repr(self):
        return "approximate='tanh'"


class Softmax(Module):
    r"""``softmax(x, axis)``: exp(x_i) / Σ_j exp(x_j); derivative s_i(δ_ij - s_j)."""

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        return ops.softmax(as_input(x), axis=self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"


class LogSoftmax(Softmax):
    r"""``log_softmax(x, axis)`` = x - logsumexp(x), computed stably."""

    def forward(self, x):
        return ops.log_softmax(as_input(x), axis=self.axis)


class Flatten(Module):
    """Flatten every axis from ``start_axis`` on: (n, a, b) -> (n, a·b) by default.

    Parameters
    ----------
    start_axis : int
        The first axis merged (negative counts from the end).  The input needs at least
        ``start_axis + 1`` axes: a (n,) input with ``start_axis=1`` is an error, not (n, 1).

    Notes
    -----
    The output shape is ``shape[:start_axis] + (prod(shape[start_axis:]),)``, computed
    explicitly, so an empty batch (0, a, b) gives (0, a·b).  The gradient is the output's
    gradient reshaped back.
    """

    def __init__(self, start_axis=1):
        super().__init__()
        self.start_axis = int(start_axis)

    def forward(self, x):
        x = as_input(x)
        shape = tuple(x.shape)
        nd = len(shape)
        start = self.start_axis + nd if self.start_axis < 0 else self.start_axis
        if not 0 <= start < nd:
            raise ValueError(f"calcml.nn.Flatten: start_axis={self.start_axis} needs an input "
                             f"with more than {start} axes, got shape {shape} and "
                             f"dtype {x.dtype}")
        return ops.reshape(x, shape[:start] + (int(np.prod(shape[start:], dtype=np.int64)),))

    def extra_repr(self):
        return f"start_axis={self.start_axis}"


# --- dropout ------------------------------------------------------------------------------

def _check_dropout_args(p, mode, who):
    p = float(p)
    if not 0.0 <= p <= 1.0:  # (also refuses NaN)
        raise ValueError(f"calcml.nn.{who}: p is a probability in [0, 1] (of dropping a "
                         f"unit), got {p}")
    if mode not in ("inverted", "classic"):
        raise ValueError(f"calcml.nn.{who}: mode must be 'inverted' or 'classic', got {mode!r}")
    return p


def dropout(x, p, training=True, mode="inverted", rng=None):
    r"""Dropout as a function: see :class:`Dropout`.

    Parameters
    ----------
    x : array or Tensor
    p : float in [0, 1]
        The probability of *dropping* a unit; the keep probability is q = 1 - p.
    training : bool
    mode : {"inverted", "classic"}
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    ``(output, keep_mask)``, ``keep_mask`` None when nothing was drawn.

    Notes
    -----
    Inverted: training m ⊙ x / q, evaluation x.  Classic: training m ⊙ x, evaluation q · x.
    m_i ~ Bernoulli(q).  A ``p`` outside [0, 1] or an unknown ``mode`` raises ``ValueError``.
    """
    p = _check_dropout_args(p, mode, "dropout")
    x = as_input(x)
    keep = 1.0 - p
    if not training:
        if mode == "classic" and p > 0:
            return x * keep, None
        return x, None
    if p == 0:
        return x, None
    gen = _init.as_generator(rng)
    # drawn on the host from the generator, so a model on the GPU sees the same masks
    mask = backend.on_backend_of(gen.random(tuple(x.shape)) < keep, raw(x))
    dt = x.dtype if np.dtype(x.dtype).kind == "f" else np.float64
    if mode == "inverted":
        factor = mask.astype(dt) * (1.0 / keep) if keep > 0 else np.zeros(mask.shape, dt)
    else:
        factor = mask.astype(dt)
    return x * factor, mask


class Dropout(Module):
    r"""Dropout: during training, zero each activation independently with probability ``p``.

    Parameters
    ----------
    p : float in [0, 1]
        The probability of *dropping* a unit; a unit is kept with probability q = 1 - p.
    mode : {"inverted", "classic"}
        Where the correction for the dropped units goes (see Notes).
    rng : numpy.random.Generator or int, optional
        Source of the masks (kept as ``self.generator``), so runs are reproducible (None:
        calcml.nn's default generator).

    Attributes
    ----------
    last_mask : bool array or None
        The keep-mask drawn by the latest training-mode call.

    Notes
    -----
    With mask m_i ~ Bernoulli(q), q = 1 - p:

    * ``"inverted"`` (default, as in PyTorch): training gives m ⊙ a / q, evaluation gives a.
    * ``"classic"`` (Srivastava et al. 2014, and the chapter): training gives m ⊙ a,
      evaluation gives q · a.

    Either way E[training output] = evaluation output, since E[m_i] = q.  The chapter writes
    the inference rule as ``a = p · a`` and calls ``p`` "the dropout probability"; the factor
    must be the **keep** probability q = 1 - p (with p = 0.2, scaling by 0.2 instead of 0.8
    would shrink every activation fourfold at test time).  Inverted dropout puts the factor
    1/q in training so that inference is untouched.  The gradient is the same mask (and
    factor): ∂y/∂a = m/q (inverted) or m (classic); dropped units get no gradient.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> d = cm.nn.Dropout(0.5, rng=0)
    >>> y = d(np.ones(8))
    >>> sorted(set(y.tolist()))
    [0.0, 2.0]
    >>> d.eval()(np.ones(3))
    array([1., 1., 1.])
    """

    def __init__(self, p=0.5, mode="inverted", *, rng=None):
        super().__init__()
        p = _check_dropout_args(p, mode, "Dropout")
        self.p, self.mode = p, mode
        self.generator = _init.as_generator(rng)
        self.last_mask = None

    def forward(self, x):
        y, mask = dropout(x, self.p, self.training, self.mode, self.generator)
        if mask is not None:
            self.last_mask = mask
        return y

    def extra_repr(self):
        return f"p={self.p}, mode={self.mode!r}"

r"""Normalization: ``BatchNorm1d``, ``LayerNorm``, and the batch-norm gradient two ways.

Both layers are written with calcml's operations (``mean``, ``var``, ``sqrt``), so in training
the gradient flows through the batch mean and variance: the **full** gradient.  The chapter
(9.6) gives, "during training",

.. math:: \frac{\partial L}{\partial x_i} = \frac{\partial L}{\partial y_i}\,
          \frac{\gamma}{\sqrt{\sigma_B^2 + \epsilon}},

which is the derivative with μ_B and σ²_B held fixed.  That is the true gradient only when the
statistics do not depend on x: in evaluation mode (running statistics).  In training μ_B and
σ²_B are functions of every x_i in the batch, and the true gradient is

.. math:: \frac{\partial L}{\partial x_i} = \frac{\gamma}{\sqrt{\sigma_B^2+\epsilon}}
          \Big(g_i - \frac{1}{m}\sum_j g_j - \hat x_i\,\frac{1}{m}\sum_j g_j \hat x_j\Big),
          \qquad g = \frac{\partial L}{\partial y},

i.e. the chapter's formula with the batch mean of g and the projection of g on x̂ removed.
:func:`batchnorm_chapter_grad` and :func:`batchnorm_train_grad` compute the two in closed form
(NumPy), so tests and the tour can set them against the engine's gradient.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..tensor import Tensor
from .layers import parameter
from .module import Module, as_input, concrete

__all__ = ["BatchNorm1d", "LayerNorm", "batch_norm", "layer_norm", "batchnorm_chapter_grad",
           "batchnorm_train_grad"]


def _float_dtype(dtype, who):
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"calcml.nn.{who}: dtype must be floating point, got {dt}")
    return dt


def _check_eps(eps, who):
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"calcml.nn.{who}: eps must be a number, got {eps!r}") from None
    if not (np.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"calcml.nn.{who}: eps is added to the variance under the square "
                         f"root and must be finite and >= 0, got {eps}")
    return eps


def _module_dtype(module):
    """The dtype integer/list inputs are converted to: the parameters', else the buffers',
    else the ``dtype`` given at construction."""
    for t in (getattr(module, "weight", None), getattr(module, "running_mean", None)):
        if t is not None:
            return t.dtype
    return module._dtype


def _normalize(x, mean, var, eps, weight, bias):
    y = (x - mean) * (1.0 / ops.sqrt(var + eps))
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def batch_norm(x, weight=None, bias=None, eps=1e-5, running_mean=None, running_var=None):
    r"""Batch normalization of ``x`` of shape (batch, features) as a function.

    With ``running_mean``/``running_var`` given (evaluation), those are used and are
    constants; otherwise the batch's mean and biased variance over axis 0 are used and
    differentiated through.

    Notes
    -----
    x̂ = (x - μ) / √(σ² + ε), y = γ x̂ + β (γ = ``weight``, β = ``bias``, both optional).
    """
    x = as_input(x)
    if running_mean is None:
        mean = ops.mean(x, axis=0, keepdims=True)
        var = ops.var(x, axis=0, keepdims=True)
    else:
        mean, var = running_mean, running_var
    return _normalize(x, mean, var, eps, weight, bias)


class BatchNorm1d(Module):
    r"""Batch normalization over the batch axis of (batch, features) inputs.

    Parameters
    ----------
    num_features : int
    eps : float
        Added to the variance under the square root; finite and >= 0.
    momentum : float
        Weight of the newest batch in the running statistics (PyTorch's convention, the
        opposite of a decay rate): r ← (1 - momentum) r + momentum · batch statistic.
    affine : bool
        Learn ``weight`` γ (initialised to 1) and ``bias`` β (initialised to 0).
    track_running_stats : bool
        Keep ``running_mean`` and ``running_var`` for evaluation; without them evaluation also
        uses the batch's statistics.
    dtype : floating dtype
        Of the parameters and buffers; integer or list inputs are converted to it (also
        without affine parameters).  Floating inputs keep their dtype (NumPy promotion).

    Attributes
    ----------
    weight, bias : Tensor of shape (num_features,)
    running_mean, running_var : array of shape (num_features,), buffers (start at 0 and 1)

    Notes
    -----
    In training, with the batch's μ_B and *biased* σ²_B = (1/m) Σ (x_i - μ_B)²,
    y = γ (x - μ_B)/√(σ²_B + ε) + β, and the gradient flows through μ_B and σ²_B (see the
    module docstring for the closed form).  The running variance is updated with the
    *unbiased* estimate m/(m-1) σ²_B, as PyTorch does; the running mean with μ_B.  In
    evaluation y = γ (x - running_mean)/√(running_var + ε) + β, an affine map of x whose
    derivative is the chapter's γ/√(σ² + ε).

    A (batch, features, length) input is normalized over axes 0 and 2, as in PyTorch.  The
    running statistics move only in an ordinary training-mode call: not when the input is
    traced by a transform, and not when :func:`functional_call` puts arrays or traced values
    in place of γ and β (``cm.grad``, ``cm.check_grad`` and its finite differences evaluate
    the function many times, and must not move them).

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> bn = cm.nn.BatchNorm1d(2)
    >>> y = bn(np.array([[1.0, 10.0], [3.0, 30.0]]))
    >>> np.round(y.numpy(), 3)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> bn.running_mean
    array([0.2, 2. ])
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, dtype=np.float64):
        super().__init__()
        num_features = int(num_features)
        if num_features <= 0:
            raise ValueError(f"calcml.nn.BatchNorm1d: num_features must be positive, "
                             f"got {num_features}")
        try:
            mom = float(momentum)
        except (TypeError, ValueError):
            raise TypeError(f"calcml.nn.BatchNorm1d: momentum must be a number in [0, 1] (the "
                            f"weight of the newest batch; a cumulative average, PyTorch's "
                            f"momentum=None, is not supported), got {momentum!r}") from None
        if not 0.0 <= mom <= 1.0:
            raise ValueError(f"calcml.nn.BatchNorm1d: momentum must be in [0, 1], got {momentum}")
        eps = _check_eps(eps, "BatchNorm1d")
        dt = _float_dtype(dtype, "BatchNorm1d")
        self._dtype = dt
        self.num_features, self.eps, self.momentum = num_features, eps, mom
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if affine:
            self.weight = parameter(np.ones(num_features, dt))
            self.bias = parameter(np.zeros(num_features, dt))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dt))
            self.register_buffer("running_var", np.ones(num_features, dt))
        else:
            self.running_mean = self.running_var = None

    def _check(self, x):
        shape = tuple(x.shape)
        if len(shape) not in (2, 3) or shape[1] != self.num_features:
            raise ValueError(f"calcml.nn.BatchNorm1d: expected input of shape (batch, "
                             f"{self.num_features}) or (batch, {self.num_features}, length), "
                             f"got shape {shape} and dtype {x.dtype}")
        return (0,) if len(shape) == 2 else (0, 2)

    def forward(self, x):
        x = as_input(x, _module_dtype(self))
        axes = self._check(x)
        shape = (1, self.num_features) + ((1,) if len(axes) == 2 else ())
        w = b = None
        if self.affine:
            w = ops.reshape(self.weight, shape)
            b = ops.reshape(self.bias, shape)
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            m = int(np.prod([x.shape[a] for a in axes]))
            if self.training and m <= 1:
                raise ValueError(f"calcml.nn.BatchNorm1d: training needs more than one value "
                                 f"per feature to estimate a variance, got input of shape "
                                 f"{tuple(x.shape)} and dtype {x.dtype} (use eval() for a "
                                 f"single example)")
            mean = ops.mean(x, axis=axes, keepdims=True)
            var = ops.var(x, axis=axes, keepdims=True)
            if self.training and self.track_running_stats:
                self._update_running(x, axes, m)
        else:
            mean = np.reshape(self.running_mean, shape)
            var = np.reshape(self.running_var, shape)
        return _normalize(x, mean, var, self.eps, w, b)

    def _update_running(self, x, axes, m):
        xc = concrete(x)
        if xc is None or (self.affine and not (isinstance(self.weight, Tensor)
                                               and isinstance(self.bias, Tensor))):
            return  # γ, β replaced by functional_call (arrays or traced): not a training step
        mom = self.momentum
        rm, rv = self.running_mean, self.running_var
        bm = xc.mean(axis=axes)
        bv = xc.var(axis=axes, ddof=1)  # unbiased, m > 1 checked above
        self.running_mean = ((1.0 - mom) * rm + mom * bm).astype(rm.dtype, copy=False)
        self.running_var = ((1.0 - mom) * rv + mom * bv).astype(rv.dtype, copy=False)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    r"""Layer normalization over the trailing ``normalized_shape`` axes, as a function.

    Notes
    -----
    For each example, μ and the biased σ² over the last ``len(normalized_shape)`` axes;
    y = γ (x - μ)/√(σ² + ε) + β.  The gradient flows through μ and σ², as in training
    batch norm, but there is no train/eval difference: the statistics are per example.
    """
    x = as_input(x)
    ns = (int(normalized_shape),) if np.ndim(normalized_shape) == 0 else \
        tuple(int(s) for s in normalized_shape)
    if tuple(x.shape[len(x.shape) - len(ns):]) != ns or len(x.shape) < len(ns):
        raise ValueError(f"calcml.nn.LayerNorm: input of shape {tuple(x.shape)} and dtype "
                         f"{x.dtype} does not end in normalized_shape {ns}")
    axes = tuple(range(-len(ns), 0))
    mean = ops.mean(x, axis=axes, keepdims=True)
    var = ops.var(x, axis=axes, keepdims=True)
    return _normalize(x, mean, var, eps, weight, bias)


class LayerNorm(Module):
    r"""Layer normalization over the trailing ``normalized_shape`` axes.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The shape of the trailing axes normalized (e.g. ``embed_dim``).
    eps : float
        Added to the variance under the square root; finite and >= 0.
    elementwise_affine : bool
        Learn ``weight`` γ (ones) and ``bias`` β (zeros) of shape ``normalized_shape``.
    dtype : floating dtype
        Of the parameters and buffers; integer or list inputs are converted to it (also
        without affine parameters).  Floating inputs keep their dtype (NumPy promotion).

    Notes
    -----
    μ_l = (1/d) Σ x_i, σ²_l = (1/d) Σ (x_i - μ_l)² over the normalized axes of each example,
    x̂ = (x - μ_l)/√(σ²_l + ε), y = γ x̂ + β (chapter 9.6).  Same in training and evaluation.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> ln = cm.nn.LayerNorm(3)
    >>> np.round(ln(np.array([[1.0, 2.0, 3.0]])).numpy(), 4)
    array([[-1.2247,  0.    ,  1.2247]])
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, *,
                 dtype=np.float64):
        super().__init__()
        ns = (int(normalized_shape),) if np.ndim(normalized_shape) == 0 else \
            tuple(int(s) for s in normalized_shape)
        if not ns or any(s <= 0 for s in ns):
            raise ValueError(f"calcml.nn.LayerNorm: normalized_shape must be positive sizes, "
                             f"got {normalized_shape!r}")
        eps = _check_eps(eps, "LayerNorm")
        dt = _float_dtype(dtype, "LayerNorm")
        self._dtype = dt
        self.normalized_shape, self.eps = ns, eps
        self.elementwise_affine = bool(elementwise_affine)
        if elementwise_affine:
            self.weight = parameter(np.ones(ns, dt))
            self.bias = parameter(np.zeros(ns, dt))
        else:
            self.weight = self.bias = None

    def forward(self, x):
        return layer_norm(as_input(x, _module_dtype(self)), self.normalized_shape, self.weight,
                          self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


# --- the batch-norm gradient, two closed forms ---------------------------------------------

def _bn_stats(x, axes):
    x = np.asarray(x)
    return x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)


def batchnorm_chapter_grad(grad_output, x, weight=None, eps=1e-5, var=None):
    r"""The chapter's batch-norm gradient: ∂L/∂x = ∂L/∂y · γ / √(σ² + ε).

    Parameters
    ----------
    grad_output : array (batch, features)
        ∂L/∂y.
    x : array (batch, features)
        The layer's input.
    weight : array (features,), optional
        γ (default 1).
    eps : float
    var : array (features,), optional
        σ².  Default: the batch's biased variance (what the chapter's training formula
        uses); pass the running variance for evaluation mode.

    Returns
    -------
    array (batch, features)

    Notes
    -----
    This treats μ and σ² as constants.  It equals the gradient of evaluation-mode batch norm
    (running statistics) exactly, and is **not** the training-mode gradient, where μ_B and σ²_B
    depend on x: see :func:`batchnorm_train_grad`.
    """
    g = np.asarray(grad_output)
    if var is None:
        _, var = _bn_stats(x, (0,))
    gamma = 1.0 if weight is None else np.asarray(weight)
    return g * (gamma / np.sqrt(np.asarray(var) + eps))


def batchnorm_train_grad(grad_output, x, weight=None, eps=1e-5):
    r"""The true training-mode batch-norm gradient ∂L/∂x, in closed form.

    Notes
    -----
    With g = ∂L/∂y, x̂ = (x - μ_B)/√(σ²_B + ε) and means over the batch,

    .. math:: \frac{\partial L}{\partial x} = \frac{\gamma}{\sqrt{\sigma_B^2+\epsilon}}
              \big(g - \overline{g} - \hat x\,\overline{g \hat x}\big).

    The two subtracted terms come from ∂μ_B/∂x_i = 1/m and ∂σ²_B/∂x_i = 2(x_i - μ_B)/m.  The
    result sums to zero over the batch (shifting every x_i by the same amount changes
    nothing) and, for ε → 0, is orthogonal to x̂ (so does scaling them); the chapter's formula
    has neither property.
    """
    g = np.asarray(grad_output)
    mean, var = _bn_stats(x, (0,))
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (np.asarray(x) - mean) * inv
    gamma = 1.0 if weight is None else np.asarray(weight)
    return gamma * inv * (g - g.mean(axis=0, keepdims=True)
                          - xhat * (g * xhat).mean(axis=0, keepdims=True))

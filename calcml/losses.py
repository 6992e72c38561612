"""Loss functions: each a differentiable batch mean and its closed-form derivative.

Every loss is an object called as ``loss(y_true, y_pred, ...)`` (``triplet`` as
``triplet(anchor, positive, negative, ...)``).  The call is written in calcml operations, so it
runs on plain arrays (returning a NumPy scalar), on :class:`calcml.Tensor` (returning a 0-d
Tensor whose ``backward()`` fills ``y_pred.grad``) and inside every transform (``cm.grad``,
``cm.hessian``, ``cm.jvp``, ``cm.symbolic``).  ``loss.derivative(y_true, y_pred, ...)`` is the
closed form of dL/dŷ written out by hand in NumPy: an independent second opinion on the
engine, and a plain array of ŷ's shape and dtype.

Reduction (API.md §3).  Element-wise losses take the mean over *all* elements (N = ŷ.size);
losses over a class or feature axis (the last: ``cross_entropy``, ``categorical_cross_entropy``,
``kl_divergence``, ``triplet``) sum over it and take the mean over the other axes (M rows).
The derivative carries the same 1/N or 1/M.  The chapter (section 9.3) writes several of its
derivatives per sample, without it: its BCE, hinge and Huber derivatives are N times ours.

Stability.  ``binary_cross_entropy_with_logits`` is built from ``softplus`` and
``cross_entropy`` from ``log_softmax``: finite values and gradients for logits of any size.
The probability losses (``binary_cross_entropy``, ``categorical_cross_entropy``, ``focal``,
``kl_divergence``) clip ŷ to [eps, 1 - eps], eps = ``numpy.finfo(dtype).eps`` (as
``sklearn.metrics.log_loss`` does), so ŷ = 0 or 1 gives a finite value.  The clip is
*straight-through*: the gradient is the formula's derivative evaluated at the clipped value,
not the clip's own derivative (zero outside the interval), so a prediction stuck at exactly 0
or 1 still receives a finite gradient that points the right way.  ``derivative`` evaluates at
the same clipped value, so both agree everywhere.  ``log_cosh`` uses
log cosh r = r + softplus(-2r) - log 2, exact for every r and free of overflow.

Hyper-parameters (``huber``'s ``delta``, ``focal``'s ``gamma`` and ``alpha``, ``triplet``'s
``margin``) are keywords of the call (``cm.losses.huber(y, yhat, delta=2.0)``); called with
hyper-parameters only, a loss returns a copy with new defaults
(``cm.losses.huber(delta=2.0)(y, yhat)``).

Inputs: ``y_pred`` float32 or float64 (integer arrays and lists become float64); a plain
``y_true`` is cast to ``y_pred``'s dtype, so float32 stays float32.  Shapes must match exactly
(no silent broadcasting of (n,) against (n, 1)); mismatches, labels out of range, wrong label
dtypes and out-of-range targets raise an error naming the loss, the shapes and the dtypes.
"""

from __future__ import annotations

import math

import numpy as np

from . import backend
from .ops import (
    abs,
    log,
    log1p,
    log_softmax,
    mean,
    relu,
    softplus,
    sqrt,
    square,
    sum,
    where,
)
from .ops._base import Box, raw
from .ops.reductions import labels_below, softmax_cross_entropy
from .tensor import Tensor

__all__ = [
    "Loss", "MSE", "MAE", "BinaryCrossEntropy", "BinaryCrossEntropyWithLogits", "CrossEntropy",
    "CategoricalCrossEntropy", "Hinge", "Huber", "LogCosh", "Focal", "KLDivergence", "Triplet",
    "mse", "mae", "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
    "categorical_cross_entropy", "hinge", "huber", "log_cosh", "focal", "kl_divergence",
    "triplet",
]

_LOG2 = math.log(2.0)


# --- input handling -----------------------------------------------------------------------

def _desc(x):
    """``float32 (3, 4)``: an argument as error messages name it."""
    dt = getattr(x, "dtype", None)
    v = raw(x)
    shape = tuple(v.shape) if hasattr(v, "shape") else np.shape(v)
    return f"{dt if dt is not None else type(v).__name__} {shape}"


def _as_array(x):
    """``x`` unchanged if it is a box (traced value or Tensor) or an array; else an array."""
    if isinstance(x, Box) or (hasattr(x, "shape") and hasattr(x, "dtype")):
        return x
    return np.asarray(x)


def _values(x):
    """The numbers under ``x`` for validation, or None when they are symbolic (SymPy)."""
    v = raw(x)
    dt = getattr(v, "dtype", None)
    return None if dt is not None and dt.kind == "O" else v


def _float_pred(name, x, what="y_pred"):
    """``x`` as a floating-point prediction: float arrays and boxes kept, integers to float64."""
    x = _as_array(x)
    kind = np.dtype(x.dtype).kind
    if kind == "f":
        return x
    if kind in "iu" and not isinstance(x, Box):
        return x.astype(np.float64)
    raise TypeError(f"calcml.losses.{name}: {what} must be floating point (float32 or "
                    f"float64); got {_desc(x)}")


def _cast_like(name, y, like, what="y_true"):
    """A plain ``y`` cast to ``like``'s dtype (a traced or Tensor ``y`` is kept as it is)."""
    y = _as_array(y)
    if type(y) is Tensor and y._node is None:  # a constant tensor: its data, cast as usual
        y = y._value
    if isinstance(y, Box):
        if np.dtype(y.dtype).kind != "f":
            raise TypeError(f"calcml.losses.{name}: {what} must be floating point when it is "
                            f"traced or requires a gradient; got {_desc(y)}")
        return y
    if np.dtype(y.dtype).kind not in "biuf":
        raise TypeError(f"calcml.losses.{name}: {what} must be numeric; got {_desc(y)}")
    dt = like.dtype
    return y if y.dtype == dt else y.astype(dt)


def _same_shape(name, y_true, y_pred, names=("y_true", "y_pred")):
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(
            f"calcml.losses.{name}: {names[0]} and {names[1]} must have the same shape; got "
            f"{names[0]} {_desc(y_true)} and {names[1]} {_desc(y_pred)}")


def _nonempty(name, x, what="y_pred"):
    if math.prod(x.shape) == 0:
        raise ValueError(f"calcml.losses.{name}: {what} is empty ({_desc(x)}); the mean of no "
                         f"values is undefined")


def _in_unit_interval(name, x, what):
    v = _values(x)
    if v is None:
        return
    xp = backend.get_xp(v)
    if bool(xp.any(v < 0)) or bool(xp.any(v > 1)):
        raise ValueError(
            f"calcml.losses.{name}: {what} must hold probabilities in [0, 1]; got values in "
            f"[{float(xp.nanmin(v)):.6g}, {float(xp.nanmax(v)):.6g}] ({_desc(x)})")


def _nonnegative(name, x, what):
    v = _values(x)
    if v is None:
        return
    xp = backend.get_xp(v)
    if bool(xp.any(v < 0)):
        raise ValueError(f"calcml.losses.{name}: {what} must be non-negative (probabilities); "
                         f"got a minimum of {float(xp.nanmin(v)):.6g} ({_desc(x)})")


def _eps(x):
    """The clipping epsilon of ``x``'s dtype, as a Python float (keeps float32 float32)."""
    return float(np.finfo(x.dtype).eps)


def _clip_probs(p):
    """ŷ clipped to [eps, 1 - eps], straight-through: the value is clipped, the derivative
    passes unchanged (a constant is added to ``p``), so d/dŷ is the formula's derivative at
    the clipped value."""
    v = _values(p)
    if v is None:  # SymPy: exact arithmetic, nothing to guard
        return p
    eps = _eps(p)
    xp = backend.get_xp(v)
    if not isinstance(p, Box):
        return xp.clip(v, eps, 1.0 - eps)
    shift = xp.clip(v, eps, 1.0 - eps) - v
    return p + shift if bool(shift.any()) else p


def _np_like(y, like):
    v = raw(_as_array(y))
    return v if v.dtype == like.dtype else v.astype(like.dtype)


def _np_clip_probs(p):
    eps = _eps(p)
    return backend.get_xp(p).clip(p, eps, 1.0 - eps)


def _finish(d, like):
    """A derivative as returned: an array (not a NumPy scalar) of ``like``'s shape, dtype."""
    xp = backend.get_xp(d, like)
    d = xp.asarray(d)
    dt = like.dtype if np.dtype(like.dtype).kind == "f" else np.dtype(np.float64)
    if d.dtype != dt:
        d = d.astype(dt)
    return d if d.shape == like.shape else xp.broadcast_to(d, like.shape).copy()


def _rows(x):
    """The number of rows M: the product of all axes but the last."""
    return math.prod(x.shape[:-1])


# --- the base class -------------------------------------------------------------------------

class Loss:
    """A loss: ``loss(*arrays, **hyperparameters)`` and ``loss.derivative(...)``.

    Subclasses set ``name``, ``args`` (the names of the array arguments) and ``defaults`` (the
    hyper-parameters and their default values), and implement ``_check(params)``,
    ``_value(*arrays, **params)`` (calcml ops) and ``_derivative(*arrays, **params)`` (NumPy).
    """

    name = "loss"
    args = ("y_true", "y_pred")
    defaults: dict = {}

    def __init__(self, **params):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TypeError(f"calcml.losses.{self.name}: unknown hyper-parameter(s) "
                            f"{sorted(unknown)}; it takes {list(self.defaults) or 'none'}")
        self.params = {**self.defaults, **params}
        self._check(self.params)

    def _check(self, params):
        """Validate hyper-parameters (raise ValueError naming the loss)."""

    def with_params(self, **params):
        """A copy of this loss with new default hyper-parameters."""
        return type(self)(**{**self.params, **params})

    def _bind(self, args, kwargs):
        n = len(self.args)
        arrays = list(args[:n])
        extra = args[n:]
        names = list(self.defaults)
        if len(extra) > len(names):
            raise TypeError(f"calcml.losses.{self.name}: too many arguments; call it as "
                            f"{self._signature()}")
        kwargs = dict(kwargs)
        for k, v in zip(names, extra):
            if k in kwargs:
                raise TypeError(f"calcml.losses.{self.name}: {k} given twice")
            kwargs[k] = v
        for a in self.args[len(arrays):]:
            if a not in kwargs:
                raise TypeError(f"calcml.losses.{self.name}: missing argument {a!r}; call it "
                                f"as {self._signature()}")
            arrays.append(kwargs.pop(a))
        unknown = set(kwargs) - set(self.defaults)
        if unknown:
            raise TypeError(f"calcml.losses.{self.name}: unexpected argument(s) "
                            f"{sorted(unknown)}; call it as {self._signature()}")
        if kwargs:
            params = {**self.params, **kwargs}
            self._check(params)
        else:
            params = self.params
        return arrays, params

    def _signature(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({', '.join(self.args)}{extra})"

    def __call__(self, *args, **kwargs):
        if not kwargs and len(args) == len(self.args):  # the usual call: arrays only
            return self._value(*args, **self.params)
        if not args and not (set(kwargs) & set(self.args)):
            if not self.defaults:
                raise TypeError(f"calcml.losses.{self.name}: missing arguments; call it as "
                                f"{self._signature()}")
            return self.with_params(**kwargs)
        arrays, params = self._bind(args, kwargs)
        return self._value(*arrays, **params)

    def derivative(self, *args, **kwargs):
        """The closed-form derivative dL/dŷ, with the loss's reduction, as a plain array of
        ŷ's shape and dtype (never traced: it is the hand-written second opinion)."""
        arrays, params = self._bind(args, kwargs)
        out = self._derivative(*arrays, **params)
        if isinstance(out, tuple):
            return tuple(_finish(o, raw(_as_array(a))) for o, a in zip(out, arrays))
        return _finish(out, raw(_float_pred(self.name, arrays[-1])))

    def __repr__(self):
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"calcml.losses.{self.name}({ps})"

    # shared preparation of (y_true, y_pred) for element-wise losses
    def _pair(self, y_true, y_pred):
        y_pred = _float_pred(self.name, y_pred)
        y_true = _as_array(y_true)
        _same_shape(self.name, y_true, y_pred)  # before the cast: name the dtypes as given
        y_true = _cast_like(self.name, y_true, y_pred)
        _nonempty(self.name, y_pred)
        return y_true, y_pred

    def _np_pair(self, y_true, y_pred):
        yt, yp = self._pair(y_true, y_pred)
        yp = raw(yp)
        return _np_like(yt, yp), yp


# --- regression ---------------------------------------------------------------------------

class MSE(Loss):
    r"""Mean squared error: ``mse(y_true, y_pred)``.

    Parameters
    ----------
    y_true, y_pred : array_like or Tensor
        Targets and predictions of the same shape.

    Returns
    -------
    scalar (0-d Tensor or traced value when ``y_pred`` is one)

    Notes
    -----
    .. math:: L = \frac1N \sum_i (y_i - \hat y_i)^2, \qquad
              \frac{\partial L}{\partial \hat y_i} = \frac2N (\hat y_i - y_i)

    N is the number of elements.  The chapter's derivative carries the 2/N: it agrees.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> y, yhat = np.array([1.0, 2.0]), np.array([1.5, 1.0])
    >>> float(cm.losses.mse(y, yhat))
    0.625
    >>> cm.losses.mse.derivative(y, yhat)
    array([ 0.5, -1. ])
    """

    name = "mse"

    def _value(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        return mean(square(y_pred - y_true))

    def _derivative(self, y_true, y_pred):
        yt, yp = self._np_pair(y_true, y_pred)
        return (yp - yt) * (2.0 / yp.size)


class MAE(Loss):
    r"""Mean absolute error: ``mae(y_true, y_pred)``.

    Notes
    -----
    .. math:: L = \frac1N \sum_i |y_i - \hat y_i|, \qquad
              \frac{\partial L}{\partial \hat y_i} = \frac1N \operatorname{sign}(\hat y_i - y_i)

    At a tie (ŷ_i = y_i) the derivative is 0, the subgradient ``sign`` gives there.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> float(cm.losses.mae(np.array([1.0, 2.0]), np.array([1.5, 1.0])))
    0.75
    >>> cm.losses.mae.derivative(np.array([1.0, 2.0]), np.array([1.5, 1.0]))
    array([ 0.5, -0.5])
    """

    name = "mae"

    def _value(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        return mean(abs(y_pred - y_true))

    def _derivative(self, y_true, y_pred):
        yt, yp = self._np_pair(y_true, y_pred)
        return backend.get_xp(yp).sign(yp - yt) * (1.0 / yp.size)


class Huber(Loss):
    r"""Huber loss: ``huber(y_true, y_pred, delta=1.0)``.

    Parameters
    ----------
    y_true, y_pred : array_like or Tensor
        Same shape.
    delta : float, > 0
        Where the quadratic turns linear.

    Notes
    -----
    With r_i = y_i - ŷ_i:

    .. math:: L = \frac1N \sum_i \begin{cases} \tfrac12 r_i^2 & |r_i| \le \delta \\
              \delta |r_i| - \tfrac12 \delta^2 & \text{otherwise} \end{cases}, \qquad
              \frac{\partial L}{\partial \hat y_i} = \frac1N
              \operatorname{clip}(\hat y_i - y_i, -\delta, \delta)

    The chapter's derivative (section 9.3) is the per-sample one, without the 1/N.  Huber is
    C¹ but not C²: the second derivative jumps from 1/N to 0 at |r| = δ.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> y, yhat = np.array([0.0, 0.0]), np.array([0.5, 3.0])
    >>> float(cm.losses.huber(y, yhat))          # (0.125 + 2.5) / 2
    1.3125
    >>> cm.losses.huber.derivative(y, yhat, delta=1.0)
    array([0.25, 0.5 ])
    """

    name = "huber"
    defaults = {"delta": 1.0}

    def _check(self, params):
        d = params["delta"]
        if not (isinstance(d, (int, float, np.floating, np.integer)) and math.isfinite(d)
                and d > 0):
            raise ValueError(f"calcml.losses.huber: delta must be a positive finite number; "
                             f"got {d!r}")

    def _value(self, y_true, y_pred, delta):
        y_true, y_pred = self._pair(y_true, y_pred)
        delta = float(delta)
        r = y_pred - y_true
        a = abs(r)
        return mean(where(a <= delta, square(r) * 0.5, a * delta - 0.5 * delta * delta))

    def _derivative(self, y_true, y_pred, delta):
        yt, yp = self._np_pair(y_true, y_pred)
        delta = float(delta)
        return backend.get_xp(yp).clip(yp - yt, -delta, delta) * (1.0 / yp.size)


class LogCosh(Loss):
    r"""Log-cosh loss: ``log_cosh(y_true, y_pred)``.

    Notes
    -----
    With r_i = ŷ_i - y_i:

    .. math:: L = \frac1N \sum_i \log\cosh r_i, \qquad
              \frac{\partial L}{\partial \hat y_i} = \frac1N \tanh r_i

    Computed as log cosh r = r + softplus(-2r) - log 2, an identity for every r that never
    overflows (cosh does beyond |r| ≈ 710 in float64, 89 in float32) and stays smooth at r = 0,
    so ``cm.hessian`` gives sech² r there too (the |r| form would give 0 at r = 0).

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> round(float(cm.losses.log_cosh(np.zeros(1), np.array([1000.0]))), 6)
    999.306853
    >>> cm.losses.log_cosh.derivative(np.zeros(2), np.array([0.0, 1000.0]))
    array([0. , 0.5])
    """

    name = "log_cosh"

    def _value(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        r = y_pred - y_true
        return mean(r + softplus(r * -2.0)) - _LOG2

    def _derivative(self, y_true, y_pred):
        yt, yp = self._np_pair(y_true, y_pred)
        return backend.get_xp(yp).tanh(yp - yt) * (1.0 / yp.size)


# --- binary classification ------------------------------------------------------------------

class BinaryCrossEntropy(Loss):
    r"""Binary cross-entropy on probabilities: ``binary_cross_entropy(y_true, y_pred)``.

    Parameters
    ----------
    y_true : array_like
        Targets in [0, 1] (hard 0/1 labels or soft ones), the shape of ``y_pred``.
    y_pred : array_like or Tensor
        Predicted probabilities in [0, 1].

    Notes
    -----
    With p = clip(ŷ, eps, 1 - eps), eps = ``numpy.finfo(y_pred.dtype).eps``:

    .. math:: L = -\frac1N \sum_i \big[y_i \log p_i + (1 - y_i) \log(1 - p_i)\big], \qquad
              \frac{\partial L}{\partial \hat y_i} = \frac{p_i - y_i}{N\, p_i (1 - p_i)}

    The clip makes ŷ ∈ {0, 1} finite (value at most -log eps ≈ 36.0 in float64, 15.9 in
    float32); it is straight-through (see the module notes), and the derivative is evaluated
    at p.  The chapter's derivative (ŷ - y)/(ŷ(1 - ŷ)) is the per-sample one: N times this.
    Prefer :data:`binary_cross_entropy_with_logits` when you have logits.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> y, p = np.array([1.0, 0.0]), np.array([0.8, 0.4])
    >>> round(float(cm.losses.binary_cross_entropy(y, p)), 6)  # -(log .8 + log .6)/2
    0.366985
    >>> cm.losses.binary_cross_entropy.derivative(y, p)
    array([-0.625     ,  0.83333333])
    """

    name = "binary_cross_entropy"

    def _pair(self, y_true, y_pred):
        y_true, y_pred = super()._pair(y_true, y_pred)
        _in_unit_interval(self.name, y_true, "y_true")
        _in_unit_interval(self.name, y_pred, "y_pred")
        return y_true, y_pred

    def _value(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        p = _clip_probs(y_pred)
        return -mean(y_true * log(p) + (1.0 - y_true) * log1p(-p))

    def _derivative(self, y_true, y_pred):
        yt, yp = self._np_pair(y_true, y_pred)
        p = _np_clip_probs(yp)
        return (p - yt) / (p * (1.0 - p)) * (1.0 / yp.size)


class BinaryCrossEntropyWithLogits(Loss):
    r"""Binary cross-entropy from logits: ``binary_cross_entropy_with_logits(y_true, z)``.

    Parameters
    ----------
    y_true : array_like
        Targets in [0, 1], the shape of the logits.
    y_pred : array_like or Tensor
        Logits z (any real numbers); the probabilities are σ(z).

    Notes
    -----
    .. math:: L = \frac1N \sum_i \big[y_i\,\mathrm{softplus}(-z_i)
              + (1 - y_i)\,\mathrm{softplus}(z_i)\big], \qquad
              \frac{\partial L}{\partial z_i} = \frac{\sigma(z_i) - y_i}{N}

    This is the binary cross-entropy of ŷ = σ(z), since -log σ(z) = softplus(-z) and
    -log(1 - σ(z)) = softplus(z).  ``softplus`` = logaddexp(0, ·) never overflows and keeps
    full accuracy for hard labels in both tails: the value and the gradient are finite for
    logits of any size (±1e4 in float32 included), where log(σ(z)) would be log 0.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> y, z = np.array([1.0, 0.0]), np.array([1e4, 1e4])
    >>> float(cm.losses.binary_cross_entropy_with_logits(y, z))
    5000.0
    >>> cm.losses.binary_cross_entropy_with_logits.derivative(y, z)
    array([0. , 0.5])
    """

    name = "binary_cross_entropy_with_logits"

    def _pair(self, y_true, y_pred):
        y_true, y_pred = super()._pair(y_true, y_pred)
        _in_unit_interval(self.name, y_true, "y_true")
        return y_true, y_pred

    def _value(self, y_true, y_pred):
        y_true, z = self._pair(y_true, y_pred)
        return mean(y_true * softplus(-z) + (1.0 - y_true) * softplus(z))

    def _derivative(self, y_true, y_pred):
        yt, z = self._np_pair(y_true, y_pred)
        xp = backend.get_xp(z)
        sig = xp.exp(-xp.logaddexp(0.0, -z))  # σ(z) without overflow
        return (sig - yt) * (1.0 / z.size)


class Hinge(Loss):
    r"""Hinge loss: ``hinge(y_true, y_pred)``, labels in {-1, +1}.

    Parameters
    ----------
    y_true : array_like
        Labels -1 or +1 (0/1 labels are refused: map them with 2y - 1).
    y_pred : array_like or Tensor
        Decision values (scores), the shape of ``y_true``.

    Notes
    -----
    .. math:: L = \frac1N \sum_i \max(0, 1 - y_i \hat y_i), \qquad
              \frac{\partial L}{\partial \hat y_i} =
              \begin{cases} -y_i / N & y_i \hat y_i < 1 \\ 0 & \text{otherwise} \end{cases}

    At the kink y ŷ = 1 the subgradient 0 is taken, as the chapter does; the chapter's
    derivative lacks the 1/N.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> y, s = np.array([1.0, -1.0, 1.0]), np.array([2.0, 0.5, 0.0])
    >>> float(cm.losses.hinge(y, s))      # (0 + 1.5 + 1) / 3
    0.8333333333333334
    >>> cm.losses.hinge.derivative(y, s)
    array([ 0.        ,  0.33333333, -0.33333333])
    """

    name = "hinge"

    def _pair(self, y_true, y_pred):
        y_true, y_pred = super()._pair(y_true, y_pred)
        v = _values(y_true)
        if v is not None:
            xp = backend.get_xp(v)
            ok = (v == 1) | (v == -1)
            if not bool(xp.all(ok)):
                bad = backend.to_numpy(v[~ok])
                shown = ", ".join(f"{b:g}" for b in np.unique(bad)[:5])
                raise ValueError(
                    f"calcml.losses.hinge: y_true must hold labels -1 or +1; got {shown} "
                    f"({_desc(y_true)}); map 0/1 labels with 2*y - 1")
        return y_true, y_pred

    def _value(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        return mean(relu(1.0 - y_true * y_pred))

    def _derivative(self, y_true, y_pred):
        yt, yp = self._np_pair(y_true, y_pred)
        xp = backend.get_xp(yp)
        return xp.where(yt * yp < 1.0, -yt, 0.0).astype(yp.dtype) * (1.0 / yp.size)


class Focal(Loss):
    r"""Binary focal loss on probabilities: ``focal(y_true, y_pred, gamma=2.0, alpha=None)``.

    Parameters
    ----------
    y_true : array_like
        Targets in [0, 1], the shape of ``y_pred``.
    y_pred : array_like or Tensor
        Predicted probabilities in [0, 1].
    gamma : float, >= 0
        Focusing parameter; 0 gives the binary cross-entropy.
    alpha : float in [0, 1] or None
        Weight a₁ = α of the positive term and a₀ = 1 - α of the negative one; None weighs
        both 1.

    Notes
    -----
    With p = clip(ŷ, eps, 1 - eps) (straight-through, as for the cross-entropy):

    .. math:: L = -\frac1N \sum_i \big[a_1 y_i (1 - p_i)^\gamma \log p_i
              + a_0 (1 - y_i) p_i^\gamma \log(1 - p_i)\big]

    .. math:: \frac{\partial L}{\partial \hat y_i} = \frac1N \Big[
              a_1 y_i \big(\gamma (1 - p_i)^{\gamma - 1} \log p_i
              - \tfrac{(1 - p_i)^\gamma}{p_i}\big)
              + a_0 (1 - y_i) \big(\tfrac{p_i^\gamma}{1 - p_i}
              - \gamma p_i^{\gamma - 1} \log(1 - p_i)\big)\Big]

    The chapter (section 9.3) writes only the positive term, y (1 - ŷ)^γ log ŷ, under which a
    negative example (y = 0) costs nothing whatever is predicted; this is the two-sided loss
    of Lin et al. (2017).

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> y, p = np.array([1.0, 0.0]), np.array([0.9, 0.1])
    >>> round(float(cm.losses.focal(y, p, gamma=2.0)), 8)   # -(0.01 log 0.9)
    0.00105361
    >>> bool(np.isclose(cm.losses.focal(y, p, gamma=0.0), cm.losses.binary_cross_entropy(y, p)))
    True
    """

    name = "focal"
    defaults = {"gamma": 2.0, "alpha": None}

    def _check(self, params):
        g, a = params["gamma"], params["alpha"]
        if not (isinstance(g, (int, float, np.floating, np.integer)) and math.isfinite(g)
                and g >= 0):
            raise ValueError(f"calcml.losses.focal: gamma must be a finite number >= 0; "
                             f"got {g!r}")
        if a is not None and not (isinstance(a, (int, float, np.floating, np.integer))
                                  and 0 <= a <= 1):
            raise ValueError(f"calcml.losses.focal: alpha must be None or in [0, 1]; got {a!r}")

    def _pair(self, y_true, y_pred):
        y_true, y_pred = super()._pair(y_true, y_pred)
        _in_unit_interval(self.name, y_true, "y_true")
        _in_unit_interval(self.name, y_pred, "y_pred")
        return y_true, y_pred

    @staticmethod
    def _weights(alpha):
        return (1.0, 1.0) if alpha is None else (float(alpha), 1.0 - float(alpha))

    def _value(self, y_true, y_pred, gamma, alpha):
        y_true, y_pred = self._pair(y_true, y_pred)
        a1, a0 = self._weights(alpha)
        gamma = float(gamma)
        p = _clip_probs(y_pred)
        q = 1.0 - p
        lp, lq = log(p), log1p(-p)
        if gamma != 0.0:
            lp, lq = q**gamma * lp, p**gamma * lq
        return -mean(y_true * lp * a1 + (1.0 - y_true) * lq * a0)

    def _derivative(self, y_true, y_pred, gamma, alpha):
        yt, yp = self._np_pair(y_true, y_pred)
        a1, a0 = self._weights(alpha)
        gamma = float(gamma)
        xp = backend.get_xp(yp)
        p = _np_clip_probs(yp)
        q = 1.0 - p
        lp, lq = xp.log(p), xp.log1p(-p)
        pos = gamma * q ** (gamma - 1.0) * lp - q**gamma / p
        neg = p**gamma / q - gamma * p ** (gamma - 1.0) * lq
        return (a1 * yt * pos + a0 * (1.0 - yt) * neg) * (1.0 / yp.size)


# --- losses over a class axis ---------------------------------------------------------------

class CrossEntropy(Loss):
    r"""Softmax cross-entropy from logits: ``cross_entropy(y_true, logits)``.

    Parameters
    ----------
    y_true : array_like
        Either integer class labels of shape ``logits.shape[:-1]`` (``(n,)`` for ``(n, C)``
        logits), each in ``0 .. C-1``; or target probabilities of the logits' shape (one-hot,
        smoothed, ...).  Floating-point labels of shape ``(n,)`` are refused (cast them to
        int).
    y_pred : array_like or Tensor
        Logits z of shape ``(..., C)``; C is the last axis.

    Notes
    -----
    With M = the number of rows (all axes but the last) and T the one-hot labels or the
    target probabilities:

    .. math:: L = -\frac1M \sum_{r} \sum_j T_{rj} \log\mathrm{softmax}(z_r)_j, \qquad
              \frac{\partial L}{\partial z_{rj}} = \frac1M \big(\mathrm{softmax}(z_r)_j
              \textstyle\sum_k T_{rk} - T_{rj}\big)

    which is (softmax(z) - T)/M when each row of T sums to 1.  Computed through
    ``log_softmax`` (z - logsumexp(z)): finite value and gradient for logits of any size.

    Infinite logits.  A -inf logit has probability 0: a target of 0 there contributes
    0 log 0 = 0 (masking works), a label or positive target there makes the loss +inf, and
    the gradient stays (softmax(z)·ΣT - T)/M, finite.  With integer labels a row with k
    logits at +inf takes the limit softmax = 1/k on them and 0 elsewhere: its term is log k
    if the label is among them (0 for k = 1), +inf otherwise, and its gradient row is
    finite; ``derivative`` gives the same limit for probability targets too, while their
    value and autodiff gradient (through ``log_softmax``) are NaN in such a row.  A row of
    -inf only has no softmax (0/0) and gives NaN, as NaN logits do.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> z = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 1e4]])
    >>> round(float(cm.losses.cross_entropy(np.array([0, 0]), z)), 4)  # (0.2395 + 1e4)/2
    5000.1198
    >>> cm.losses.cross_entropy.derivative(np.array([0, 0]), z).round(4)
    array([[-0.1065,  0.0533,  0.0533],
           [-0.5   ,  0.    ,  0.5   ]])
    """

    name = "cross_entropy"

    def _target(self, y_true, z):
        """The target matrix T (a plain array, or the box of soft targets)."""
        name = self.name
        if len(z.shape) == 0:
            raise ValueError(f"calcml.losses.{name}: logits must have a class axis (the last); "
                             f"got y_pred {_desc(z)}")
        _nonempty(name, z)
        y = _as_array(y_true)
        kind = np.dtype(y.dtype).kind
        C = z.shape[-1]
        if tuple(y.shape) == tuple(z.shape):  # probabilities (labels have one axis fewer)
            y = _cast_like(name, y, z)
            _nonnegative(name, y, "y_true (target probabilities)")
            return y
        if tuple(y.shape) == tuple(z.shape[:-1]):
            if kind not in "iu":
                raise TypeError(
                    f"calcml.losses.{name}: y_true of shape {tuple(y.shape)} is read as class "
                    f"labels, which must be integers; got y_true {_desc(y)} for logits "
                    f"{_desc(z)} (cast with .astype(int), or pass probabilities of the "
                    f"logits' shape)")
            v = raw(y)
            if v.size and not labels_below(v, C):
                xp = backend.get_xp(v)
                lo, hi = int(xp.min(v)), int(xp.max(v))
                if lo < 0 or hi >= C:
                    raise IndexError(
                        f"calcml.losses.{name}: labels must be in 0..{C - 1} for {C} classes; "
                        f"got values in [{lo}, {hi}] (y_true {_desc(y)}, logits {_desc(z)})")
            return v  # integer labels: the fused primitive takes them as they are
        raise ValueError(
            f"calcml.losses.{name}: y_true must be integer labels of shape "
            f"{tuple(z.shape[:-1])} or probabilities of shape {tuple(z.shape)}; got y_true "
            f"{_desc(y)} for logits y_pred {_desc(z)}")

    def _value(self, y_true, y_pred):
        # The usual call of a training loop, decided in a few checks: integer labels (n,) as
        # a NumPy array for (n, C) float logits (a Tensor or an array).  The fused primitive
        # checks that every label is in 0..C-1 (an IndexError before anything is recorded).
        # Anything else, including every error, takes the general path below, which names
        # what is wrong.
        z = y_pred._value if type(y_pred) is Tensor else y_pred
        if (type(y_true) is np.ndarray and type(z) is np.ndarray and y_true.ndim == 1
                and z.ndim == 2 and y_true.dtype.kind in "iu" and z.dtype.kind == "f"
                and y_true.shape[0] == z.shape[0] and y_true.size and z.shape[1]):
            try:
                return softmax_cross_entropy(y_pred, y_true)
            except IndexError:
                pass
        z = _float_pred(self.name, y_pred)
        t = self._target(y_true, z)
        if tuple(t.shape) != tuple(z.shape):  # labels: one fused step, no one-hot matrix
            return softmax_cross_entropy(z, t)
        terms = t * log_softmax(z, axis=-1)
        zv, tv = _values(z), _values(t)
        if zv is not None and tv is not None and not bool(backend.get_xp(zv).isfinite(zv).all()):
            terms = where(tv != 0, terms, 0.0)  # 0 log 0 = 0 at a -inf logit with target 0
        return sum(terms) * (-1.0 / _rows(z))

    def _derivative(self, y_true, y_pred):
        z = _float_pred(self.name, y_pred)
        t = raw(self._target(y_true, z))
        z = raw(z)
        xp = backend.get_xp(z)
        if t.shape != z.shape:
            t = t[..., None] == xp.arange(z.shape[-1])
        m = xp.max(z, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            zz = z - xp.where(xp.isfinite(m), m, 0.0)
        # a row with +inf logits: its limit, softmax = 1/k on its k +inf entries, 0 elsewhere
        zz = xp.where(m == xp.inf, xp.where(z == xp.inf, 0.0, -xp.inf), zz).astype(z.dtype)
        e = xp.exp(zz)
        with np.errstate(invalid="ignore"):
            s = e / xp.sum(e, axis=-1, keepdims=True)  # a row of -inf only: 0/0, NaN
        t = t if t.dtype == z.dtype else t.astype(z.dtype)
        return (s * xp.sum(t, axis=-1, keepdims=True) - t) * (1.0 / _rows(z))


def _distributions(name, y_true, y_pred, true_label, pred_label):
    """Checks shared by the losses over a class axis of probabilities."""
    if len(y_pred.shape) == 0:
        raise ValueError(f"calcml.losses.{name}: y_pred must have a class axis (the last); "
                         f"got {_desc(y_pred)}")
    _nonnegative(name, y_true, true_label)
    _in_unit_interval(name, y_pred, pred_label)
    return y_true, y_pred


class CategoricalCrossEntropy(Loss):
    r"""Categorical cross-entropy on probabilities: ``categorical_cross_entropy(y_true, y_pred)``.

    Parameters
    ----------
    y_true : array_like
        Target probabilities (one-hot or soft), the shape of ``y_pred``.
    y_pred : array_like or Tensor
        Predicted probabilities of shape ``(..., C)``, classes on the last axis.

    Notes
    -----
    With p = clip(ŷ, eps, 1 - eps) (straight-through, see the module notes) and M rows:

    .. math:: L = -\frac1M \sum_r \sum_j y_{rj} \log p_{rj}, \qquad
              \frac{\partial L}{\partial \hat y_{rj}} = -\frac{y_{rj}}{M\, p_{rj}}

    (The chapter's derivative, -y/(n ŷ), agrees.)  ŷ is not renormalised; when you have
    logits, :data:`cross_entropy` is the stable choice.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> y = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> p = np.array([[0.5, 0.5], [0.2, 0.8]])
    >>> round(float(cm.losses.categorical_cross_entropy(y, p)), 6)   # -(log .5 + log .8)/2
    0.458145
    >>> cm.losses.categorical_cross_entropy.derivative(y, p)
    array([[-1.   , -0.   ],
           [-0.   , -0.625]])
    """

    name = "categorical_cross_entropy"

    def _pair(self, y_true, y_pred):
        return _distributions(self.name, *super()._pair(y_true, y_pred), "y_true", "y_pred")

    def _value(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        return sum(y_true * log(_clip_probs(y_pred))) * (-1.0 / _rows(y_pred))

    def _derivative(self, y_true, y_pred):
        yt, yp = self._np_pair(y_true, y_pred)
        return -yt / _np_clip_probs(yp) * (1.0 / _rows(yp))


class KLDivergence(Loss):
    r"""Kullback-Leibler divergence KL(p ‖ q): ``kl_divergence(p, q)`` = (y_true, y_pred).

    Parameters
    ----------
    y_true : array_like
        The reference distribution p, non-negative, shape ``(..., C)``.
    y_pred : array_like or Tensor
        The model's distribution q in [0, 1], the shape of p.

    Notes
    -----
    With q̃ = clip(q, eps, 1 - eps) (straight-through) and M rows, terms with p = 0 counting 0:

    .. math:: L = \frac1M \sum_r \sum_j p_{rj} \log\frac{p_{rj}}{\tilde q_{rj}}, \qquad
              \frac{\partial L}{\partial q_{rj}} = -\frac{p_{rj}}{M\, \tilde q_{rj}}

    Equal to the categorical cross-entropy of (p, q) minus the entropy of p (a constant in
    q), hence the same derivative.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.5, 0.25])
    >>> round(float(cm.losses.kl_divergence(p, q)), 6)   # 0.5 log 2
    0.346574
    >>> cm.losses.kl_divergence.derivative(p, q)
    array([-2., -1., -0.])
    """

    name = "kl_divergence"

    def _pair(self, y_true, y_pred):
        return _distributions(self.name, *super()._pair(y_true, y_pred), "y_true (p)",
                              "y_pred (q)")

    def _value(self, y_true, y_pred):
        p, q = self._pair(y_true, y_pred)
        pv = _values(p)
        if pv is None:  # symbolic p: exact log
            plogp = p * log(p)
        else:
            pos = pv > 0
            plogp = p * log(where(pos, p, 1.0))  # 0 where p = 0
        return sum(plogp - p * log(_clip_probs(q))) * (1.0 / _rows(q))

    def _derivative(self, y_true, y_pred):
        p, q = self._np_pair(y_true, y_pred)
        return -p / _np_clip_probs(q) * (1.0 / _rows(q))


# --- metric learning ------------------------------------------------------------------------

def _safe_norm(d):
    """‖d‖₂ over the last axis, with derivative 0 (not NaN) where d = 0."""
    s = sum(square(d), axis=-1)
    sv = _values(s)
    if sv is None:
        return sqrt(s)
    pos = sv > 0
    if bool(backend.get_xp(sv).all(pos)):
        return sqrt(s)
    return where(pos, sqrt(where(pos, s, 1.0)), 0.0)


class Triplet(Loss):
    r"""Triplet margin loss: ``triplet(anchor, positive, negative, margin=1.0)``.

    Parameters
    ----------
    anchor, positive, negative : array_like or Tensor
        Embeddings of the same shape ``(..., d)``; each row is one triplet.
    margin : float, >= 0
        The margin α by which the negative should be farther than the positive.

    Returns
    -------
    scalar
        The mean over rows (M of them) of the hinge.

    Notes
    -----
    With d⁺_r = ‖a_r - p_r‖₂, d⁻_r = ‖a_r - n_r‖₂, u⁺ = (a - p)/d⁺, u⁻ = (a - n)/d⁻ and
    h_r = d⁺_r - d⁻_r + margin:

    .. math:: L = \frac1M \sum_r \max(0, h_r)

    .. math:: \frac{\partial L}{\partial a_r} = \frac{[h_r > 0]}{M} (u^+_r - u^-_r), \quad
              \frac{\partial L}{\partial p_r} = -\frac{[h_r > 0]}{M} u^+_r, \quad
              \frac{\partial L}{\partial n_r} = \frac{[h_r > 0]}{M} u^-_r

    ``triplet.derivative(anchor, positive, negative)`` returns the **tuple** of these three
    arrays.  Where a distance is 0 its unit vector is taken as 0 (a subgradient), so the
    gradient stays finite; at h = 0 the subgradient 0 is taken.  The chapter writes the
    margin as α, the symbol it also uses for learning rates.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> a, p, n = np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.5])
    >>> float(cm.losses.triplet(a, p, n, margin=1.0))      # 1 - 1.5 + 1
    0.5
    >>> da, dp, dn = cm.losses.triplet.derivative(a, p, n)
    >>> da, dp, dn
    (array([-1.,  1.]), array([1., 0.]), array([ 0., -1.]))
    """

    name = "triplet"
    args = ("anchor", "positive", "negative")
    defaults = {"margin": 1.0}

    def _check(self, params):
        m = params["margin"]
        if not (isinstance(m, (int, float, np.floating, np.integer)) and math.isfinite(m)
                and m >= 0):
            raise ValueError(f"calcml.losses.triplet: margin must be a finite number >= 0; "
                             f"got {m!r}")

    def _triple(self, anchor, positive, negative):
        arrs = [_as_array(x) for x in (anchor, positive, negative)]
        for nm, x in zip(self.args, arrs):
            kind = np.dtype(x.dtype).kind
            if kind not in ("f" if isinstance(x, Box) else "iuf"):
                raise TypeError(f"calcml.losses.triplet: {nm} must be floating point; got "
                                f"{_desc(x)}")
        dt = np.result_type(*[np.dtype(x.dtype) if np.dtype(x.dtype).kind == "f"
                              else np.dtype(np.float64) for x in arrs])
        arrs = [x if isinstance(x, Box) or x.dtype == dt else x.astype(dt) for x in arrs]
        a = arrs[0]
        for nm, x in zip(self.args[1:], arrs[1:]):
            _same_shape(self.name, a, x, ("anchor", nm))
        if len(a.shape) == 0:
            raise ValueError(f"calcml.losses.triplet: embeddings need a feature axis (the "
                             f"last); got anchor {_desc(a)}")
        _nonempty(self.name, a, "anchor")
        return arrs

    def _value(self, anchor, positive, negative, margin):
        a, p, n = self._triple(anchor, positive, negative)
        h = _safe_norm(a - p) - _safe_norm(a - n) + float(margin)
        return mean(relu(h))

    def _derivative(self, anchor, positive, negative, margin):
        a, p, n = (raw(x) for x in self._triple(anchor, positive, negative))
        xp = backend.get_xp(a)
        dp, dn = a - p, a - n
        np_, nn_ = (xp.sqrt(xp.sum(d * d, axis=-1, keepdims=True)) for d in (dp, dn))
        up = xp.where(np_ > 0, dp / xp.where(np_ > 0, np_, 1.0), 0.0)
        un = xp.where(nn_ > 0, dn / xp.where(nn_ > 0, nn_, 1.0), 0.0)
        active = ((np_ - nn_ + float(margin)) > 0) * (1.0 / _rows(a))
        active = active.astype(a.dtype)
        da = (up - un) * active
        return da, 0.0 - up * active, un * active  # 0.0 - ...: no -0.0 entries


# --- the instances --------------------------------------------------------------------------

mse = MSE()
mae = MAE()
binary_cross_entropy = BinaryCrossEntropy()
binary_cross_entropy_with_logits = BinaryCrossEntropyWithLogits()
cross_entropy = CrossEntropy()
categorical_cross_entropy = CategoricalCrossEntropy()
hinge = Hinge()
huber = Huber()
log_cosh = LogCosh()
focal = Focal()
kl_divergence = KLDivergence()
triplet = Triplet()

r"""Initialisers: arrays of a given shape drawn from an explicit random generator.

Every function returns a new NumPy array of ``shape`` and ``dtype``; the random ones draw from
``rng``, a ``numpy.random.Generator`` or an integer seed, so an initialisation is reproducible.
``rng=None`` draws from calcml.nn's *default generator*, seeded with a fixed number when calcml
is imported (as PyTorch's default generator is): a script that builds its model without seeds
still builds the same model on every run, and two layers made one after the other still
differ.  :func:`manual_seed` restarts that generator.

Fans follow PyTorch: for a weight of shape ``(out, in)`` ``fan_in = in`` and ``fan_out = out``;
for more dimensions ``(out, in, *kernel)`` both are multiplied by the kernel size; a vector
``(n,)`` has ``fan_in = fan_out = n``.

=====================  ======================================  ===========================
initialiser            distribution                             variance
=====================  ======================================  ===========================
``xavier_uniform``     U(-a, a), a = g √(6 / (fan_in+fan_out))  g² · 2 / (fan_in + fan_out)
``xavier_normal``      N(0, g² · 2 / (fan_in + fan_out))        g² · 2 / (fan_in + fan_out)
``he_uniform``         U(-a, a), a = √(6 / fan_in)              2 / fan_in
``he_normal``          N(0, 2 / fan_in)                         2 / fan_in
``uniform``            U(low, high)                             (high - low)² / 12
``normal``             N(mean, std²)                            std²
=====================  ======================================  ===========================

Glorot and Bengio (2010) keep the variance of activations *and* of back-propagated gradients
roughly constant through a layer with a symmetric activation such as tanh: Var(W) = 2/(fan_in +
fan_out) is the compromise between 1/fan_in (forward) and 1/fan_out (backward).  He et al.
(2015) double 1/fan_in for ReLU, which zeroes half of its inputs: Var(W) = 2/fan_in.
``kaiming_uniform`` and ``kaiming_normal`` are aliases of the He initialisers.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend

__all__ = ["fans", "xavier_uniform", "xavier_normal", "glorot_uniform", "glorot_normal",
           "he_uniform", "he_normal", "kaiming_uniform", "kaiming_normal", "uniform", "normal",
           "zeros", "ones", "as_generator", "default_generator", "manual_seed"]

_DEFAULT_SEED = 20261125
_default = [np.random.default_rng(_DEFAULT_SEED)]


def default_generator() -> np.random.Generator:
    """The generator behind ``rng=None`` in calcml.nn (fixed seed at import)."""
    return _default[0]


def manual_seed(seed: int) -> np.random.Generator:
    """Restart calcml.nn's default generator from ``seed``; returns it.

    Examples
    --------
    >>> import calcml as cm
    >>> _ = cm.nn.init.manual_seed(0); a = cm.nn.Linear(2, 2).weight.data
    >>> _ = cm.nn.init.manual_seed(0); b = cm.nn.Linear(2, 2).weight.data
    >>> bool((a == b).all())
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"calcml.nn.init.manual_seed: seed must be an int >= 0, got {seed!r}")
    _default[0] = np.random.default_rng(int(seed))
    return _default[0]


def as_generator(rng=None) -> np.random.Generator:
    """``rng`` as a ``numpy.random.Generator``: a Generator is returned as is, an int seeds one,
    None gives calcml.nn's default generator (see :func:`manual_seed`)."""
    if rng is not None and not isinstance(rng, (np.random.Generator, int, np.integer)):
        raise TypeError(f"calcml.nn: rng must be a numpy.random.Generator, an int seed or None, "
                        f"got {type(rng).__name__}")
    if rng is None:
        return _default[0]
    return backend.rng(rng)


def _shape(shape):
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"calcml.nn.init: negative dimension in shape {shape}")
    return shape


def fans(shape):
    """``(fan_in, fan_out)`` of a weight of ``shape``, PyTorch's convention.

    Examples
    --------
    >>> fans((3, 5))
    (5, 3)
    """
    shape = _shape(shape)
    if len(shape) == 0:
        raise ValueError("calcml.nn.init: fans of a 0-d weight are undefined")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _float_dtype(dtype):
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"calcml.nn.init: dtype must be floating point, got {dt}")
    return dt


def uniform(shape, low=0.0, high=1.0, *, rng=None, dtype=np.float64):
    """Entries drawn from U(low, high)."""
    gen = as_generator(rng)
    return gen.uniform(low, high, size=_shape(shape)).astype(_float_dtype(dtype), copy=False)


def normal(shape, mean=0.0, std=1.0, *, rng=None, dtype=np.float64):
    """Entries drawn from N(mean, std²)."""
    gen = as_generator(rng)
    return gen.normal(mean, std, size=_shape(shape)).astype(_float_dtype(dtype), copy=False)


def xavier_uniform(shape, gain=1.0, *, rng=None, dtype=np.float64):
    r"""Glorot/Xavier uniform: U(-a, a) with a = gain · √(6 / (fan_in + fan_out)).

    Parameters
    ----------
    shape : tuple of int
        ``(out, in)`` for a :class:`~calcml.nn.Linear` weight.
    gain : float
        Scale for the nonlinearity (1 for tanh/sigmoid/linear in Glorot's analysis).
    rng : numpy.random.Generator or int, optional
    dtype : floating dtype

    Notes
    -----
    The variance of U(-a, a) is a²/3, so Var(W) = gain² · 2 / (fan_in + fan_out).

    Examples
    --------
    >>> w = xavier_uniform((200, 300), rng=0)
    >>> bool(abs(w.var() - 2 / 500) < 2e-4)
    True
    """
    fi, fo = fans(shape)
    a = gain * math.sqrt(6.0 / (fi + fo))
    return uniform(shape, -a, a, rng=rng, dtype=dtype)


def xavier_normal(shape, gain=1.0, *, rng=None, dtype=np.float64):
    r"""Glorot/Xavier normal: N(0, σ²) with σ = gain · √(2 / (fan_in + fan_out)).

    Notes
    -----
    Var(W) = gain² · 2 / (fan_in + fan_out), as for :func:`xavier_uniform`.
    """
    fi, fo = fans(shape)
    return normal(shape, 0.0, gain * math.sqrt(2.0 / (fi + fo)), rng=rng, dtype=dtype)


def he_uniform(shape, *, rng=None, dtype=np.float64):
    r"""He/Kaiming uniform (for ReLU): U(-a, a) with a = √(6 / fan_in).

    Notes
    -----
    Var(W) = a²/3 = 2 / fan_in.  A ReLU keeps half of a zero-mean input's second moment, so
    with Var(W) = 2/fan_in the second moment of the pre-activations stays constant with depth.
    """
    fi, _ = fans(shape)
    a = math.sqrt(6.0 / fi)
    return uniform(shape, -a, a, rng=rng, dtype=dtype)


def he_normal(shape, *, rng=None, dtype=np.float64):
    r"""He/Kaiming normal (for ReLU): N(0, 2 / fan_in).

    Notes
    -----
    Var(W) = 2 / fan_in, as for :func:`he_uniform`.
    """
    fi, _ = fans(shape)
    return normal(shape, 0.0, math.sqrt(2.0 / fi), rng=rng, dtype=dtype)


def zeros(shape, *, dtype=np.float64):
    """An array of zeros."""
    return np.zeros(_shape(shape), dtype=_float_dtype(dtype))


def ones(shape, *, dtype=np.float64):
    """An array of ones."""
    return np.ones(_shape(shape), dtype=_float_dtype(dtype))


glorot_uniform = xavier_uniform
glorot_normal = xavier_normal
kaiming_uniform = he_uniform
kaiming_normal = he_normal

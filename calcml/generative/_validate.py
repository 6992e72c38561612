"""Input checks shared by the generative modules: errors name the function, the value, the
shape and the dtype."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["as_generator", "desc", "float_array", "positive_int", "positive_float",
           "nonneg_float", "unit_interval", "choice", "float_dtype"]


def desc(x):
    """``shape (3, 2), dtype float64`` for an array, the type name otherwise."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None and dtype is not None:
        return f"shape {tuple(shape)}, dtype {dtype}"
    return f"type {type(x).__name__}"


def float_array(fname, name, x, ndim=None, last=None, finite=True, min_rows=0):
    """``x`` as a floating-point NumPy array (integers become float64), checked.

    Parameters
    ----------
    fname, name : str
        The public function and the argument, for the message.
    ndim : int, optional
        Required number of dimensions.
    last : int, optional
        Required size of the last axis.
    finite : bool
        Refuse NaN and infinities.
    min_rows : int
        Minimum size of the first axis.
    """
    try:
        a = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic input
        raise TypeError(f"calcml.generative.{fname}: {name} is not an array ({exc})") from None
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    if a.dtype.kind != "f":
        raise TypeError(f"calcml.generative.{fname}: {name} must be a floating-point array, "
                        f"got {desc(a)}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"calcml.generative.{fname}: {name} must have {ndim} dimension(s), "
                         f"got {desc(a)}")
    if last is not None and (a.ndim == 0 or a.shape[-1] != last):
        raise ValueError(f"calcml.generative.{fname}: {name} must have {last} column(s) "
                         f"(last axis), got {desc(a)}")
    if min_rows and (a.ndim == 0 or a.shape[0] < min_rows):
        raise ValueError(f"calcml.generative.{fname}: {name} needs at least {min_rows} rows, "
                         f"got {desc(a)}")
    if finite and not np.all(np.isfinite(a)):
        raise ValueError(f"calcml.generative.{fname}: {name} contains NaN or infinite values "
                         f"({desc(a)})")
    return a


def positive_int(fname, name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"calcml.generative.{fname}: {name} must be an integer >= {minimum}, "
                         f"got {v!r}")
    return int(v)


def positive_float(fname, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0 < float(v) < np.inf):
        raise ValueError(f"calcml.generative.{fname}: {name} must be a positive finite number, "
                         f"got {v!r}")
    return float(v)


def nonneg_float(fname, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0 <= float(v) < np.inf):
        raise ValueError(f"calcml.generative.{fname}: {name} must be a finite number >= 0, "
                         f"got {v!r}")
    return float(v)


def unit_interval(fname, name, v):
    """``v`` as a float in [0, 1) (Adam's β₁, β₂), checked here so that the error names the
    function the user called rather than ``calcml.optim.adam``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0 <= float(v) < 1):
        raise ValueError(f"calcml.generative.{fname}: {name} must be a number in [0, 1), "
                         f"got {v!r}")
    return float(v)


def choice(fname, name, v, options):
    if v not in options:
        raise ValueError(f"calcml.generative.{fname}: {name} must be one of {list(options)}, "
                         f"got {v!r}")
    return v


def as_generator(fname, rng):
    """A ``numpy.random.Generator`` from a Generator or an int seed (None is refused: every
    result of this package is reproducible)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"calcml.generative.{fname}: an int seed must be >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"calcml.generative.{fname}: rng must be a numpy.random.Generator or an int "
                    f"seed, got {rng!r}")


def float_dtype(fname, dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"calcml.generative.{fname}: dtype must be float32 or float64, "
                         f"got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"calcml.generative.{fname}: dtype must be float32 or float64, "
                         f"got {dt}")
    return dt

"""The one seam between NumPy and CuPy.

Primitive implementations call NumPy's functions; NumPy hands CuPy arrays on to CuPy through
the ``__array_ufunc__`` / ``__array_function__`` protocols, so one implementation serves both
backends at no per-op cost.  What those protocols cannot route (creating an array from a shape,
scatter-add, moving data to the host) goes through the functions here.
"""

from __future__ import annotations

import numpy as np

try:  # CuPy is an optional extra; import it only if it is installed and a device answers.
    import cupy as _cupy  # type: ignore

    try:
        _cupy.cuda.runtime.getDeviceCount()
    except Exception:  # pragma: no cover - CuPy without a usable GPU
        _cupy = None
except Exception:  # pragma: no cover - the usual case on a CPU machine
    _cupy = None

__all__ = ["cupy_available", "get_xp", "asarray", "writeable", "owner", "to_numpy", "to_backend",
           "on_backend_of", "scatter_add", "broadcast_to", "zeros", "ones", "eye", "rng",
           "ALIGNMENT", "empty_aligned", "zeros_aligned", "aligned_copy"]


def cupy_available() -> bool:
    """Whether CuPy is importable and sees a GPU."""
    return _cupy is not None


def get_xp(*arrays):
    """Return the array module (``numpy`` or ``cupy``) that owns ``arrays``.

    CuPy wins if any argument is a CuPy array; everything else (NumPy arrays, Python scalars)
    is NumPy.
    """
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def asarray(a):
    """``a`` as an array of its own backend: CuPy arrays stay on the GPU, the rest is NumPy."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return a
    return np.asarray(a)


def writeable(a) -> bool:
    """Whether ``a`` may be written in place (CuPy arrays always may; their flags omit it)."""
    return getattr(a.flags, "writeable", True)


def owner(a):
    """The array that owns the memory of ``a`` (``a`` itself unless it is a view)."""
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


def to_numpy(a):
    """Return ``a`` as a NumPy array (copying from the GPU if needed)."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def to_backend(a, name, where="calcml.backend.to_backend"):
    """``a`` on the backend called ``name`` (``"numpy"`` or ``"cupy"``), same dtype.

    An array already there is returned as it is (no copy).  ``where`` names the caller in the
    error raised for an unknown name or for ``"cupy"`` where CuPy sees no GPU.
    """
    if name == "numpy":
        return to_numpy(a)
    if name == "cupy":
        if _cupy is None:
            raise RuntimeError(f"{where}: 'cupy' needs CuPy and a GPU that it sees "
                               f"(calcml.backend.cupy_available() is False here)")
        return a if isinstance(a, _cupy.ndarray) else _cupy.asarray(a)
    raise ValueError(f"{where}: unknown backend {name!r}; expected 'numpy' or 'cupy'")


def on_backend_of(a, like):
    """``a`` moved to the backend of ``like`` (a host array drawn by a NumPy generator, say)."""
    if _cupy is not None and isinstance(like, _cupy.ndarray) and not isinstance(a, _cupy.ndarray):
        return _cupy.asarray(a)
    return a


def zeros(shape, dtype, like=None):
    """Zeros of ``shape`` and ``dtype`` on the backend of ``like``."""
    return get_xp(like).zeros(shape, dtype=dtype)


#: Bytes to which :func:`empty_aligned` aligns the first element of a NumPy array: one cache
#: line (PyTorch's CPU allocator uses the same).  NumPy's own allocations are only 16-byte
#: aligned, so a parameter whose rows straddle cache lines at random offsets makes every
#: product and in-place update that reads it slower; on the digits MLP of
#: ``benchmarks/bench_nn.py`` the same NumPy code ran 5-7 % faster with its parameters and
#: momentum buffers at 64-byte boundaries than at 16, 32 or 48 bytes past one.
ALIGNMENT = 64


def empty_aligned(shape, dtype, like=None):
    """An uninitialised array of ``shape`` and ``dtype`` whose data starts at a multiple of
    :data:`ALIGNMENT` bytes (NumPy; on CuPy a plain ``empty``, already 256-byte aligned).

    The result is a view of a slightly larger byte buffer (its ``base``); it is
    C-contiguous and writeable like any new array.  calcml uses it for what lives as long
    as a model: leaf tensors that require a gradient and the optimizers' state.
    """
    xp = get_xp(like)
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    dt = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    n = dt.itemsize
    for d in shape:
        n *= d
    buf = np.empty(n + ALIGNMENT, np.uint8)
    start = -buf.ctypes.data % ALIGNMENT
    return buf[start:start + n].view(dt).reshape(shape)


def zeros_aligned(shape, dtype, like=None):
    """Zeros like :func:`zeros`, aligned like :func:`empty_aligned`."""
    out = empty_aligned(shape, dtype, like)
    out[...] = 0
    return out


def aligned_copy(a):
    """A C-contiguous copy of the array ``a`` (same dtype, same backend), aligned like
    :func:`empty_aligned`."""
    out = empty_aligned(a.shape, a.dtype, like=a)
    out[...] = a
    return out


def ones(shape, dtype, like=None):
    """Ones of ``shape`` and ``dtype`` on the backend of ``like``."""
    xp = get_xp(like)
    if shape == () and xp is np:  # the seed of every scalar backward pass: 4x faster here
        return np.array(1, dtype=dtype)
    return xp.ones(shape, dtype=dtype)  # (on a GPU a fill, not a copy from the host)


def eye(n, dtype, like=None):
    """The ``n`` x ``n`` identity on the backend of ``like``."""
    return get_xp(like).eye(n, dtype=dtype)


def broadcast_to(a, shape):
    """A read-only view of ``a`` broadcast to ``shape`` (NumPy's rules).

    Same result as ``numpy.broadcast_to``, built directly from strides for contiguous NumPy
    arrays: on the small arrays of a backward pass ``numpy.broadcast_to`` costs more than the
    arithmetic around it.
    """
    if type(shape) is not tuple:
        shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    if isinstance(a, np.generic):  # a NumPy scalar (what a full reduction returns)
        a = np.asarray(a)
    if type(a) is np.ndarray and a.ndim == 0:
        # a full reduction's cotangent spread over the reduced array: every stride 0
        # (a negative length is refused by the constructor, as by numpy.broadcast_to)
        out = np.ndarray(shape, a.dtype, a, 0, (0,) * len(shape))
        out.flags.writeable = False
        return out
    if type(a) is np.ndarray and a.flags.c_contiguous:
        src, n = a.shape, len(shape)
        k = n - len(src)
        if k >= 0:
            strides = [0] * n
            ok = True
            for i, (d, st) in enumerate(zip(src, a.strides)):
                if d == shape[k + i]:
                    strides[k + i] = st if d != 1 else 0
                elif d != 1:
                    ok = False
                    break
            if ok and min(shape, default=0) >= 0:
                out = np.ndarray(shape, a.dtype, a, 0, tuple(strides))
                out.flags.writeable = False
                return out
    return get_xp(a).broadcast_to(a, shape)


def _is_basic_index(index) -> bool:
    """True when ``index`` uses only basic indexing (no integer or boolean arrays)."""
    items = index if isinstance(index, tuple) else (index,)
    for it in items:
        if not (it is None or it is Ellipsis or isinstance(it, (slice, int, np.integer))):
            return False
    return True


def scatter_add(shape, dtype, index, values):
    """Return zeros of ``shape`` with ``values`` added at ``index`` (repeated indices add up).

    This is the adjoint of ``a[index]``.  Basic indices never repeat an element, so a plain
    assignment does; advanced indices may, so they go through ``ufunc.at`` (NumPy) or
    ``cupyx.scatter_add`` (CuPy).
    """
    xp = get_xp(values)
    out = xp.zeros(shape, dtype=dtype)
    if _is_basic_index(index):
        out[index] = values
    elif xp is np:
        np.add.at(out, index, values)
    else:  # pragma: no cover - needs a GPU
        import cupyx  # type: ignore

        cupyx.scatter_add(out, index, values)
    return out


def rng(seed=None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a seed, or the generator itself if one is given."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)

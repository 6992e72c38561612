"""Central differences, independent of calcml's derivative machinery.

The functions here only *evaluate* the function under test (on plain NumPy arrays, so no
trace is involved); every derivative they return comes from finite differences.
"""

from __future__ import annotations

import numpy as np


def central_grad(f, args, eps=1e-6):
    """Gradient of scalar ``f(*args)`` with respect to every array in ``args``.

    The step is scaled to each entry's magnitude, so large inputs (logsumexp's 1000s) do not
    drown the difference in rounding error.
    """
    args = [np.array(a, dtype=np.float64) for a in args]
    grads = []
    for i, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            h = eps * max(1.0, abs(float(a[idx])))
            plus = [b.copy() for b in args]
            minus = [b.copy() for b in args]
            plus[i][idx] += h
            minus[i][idx] -= h
            g[idx] = (float(f(*plus)) - float(f(*minus))) / (2.0 * h)
        grads.append(g)
    return grads


def central_directional(f, args, tangents, eps=1e-6):
    """d/dε f(args + ε tangents) at ε = 0, for an array-valued ``f``."""
    args = [np.asarray(a, dtype=np.float64) for a in args]
    plus = [a + eps * t for a, t in zip(args, tangents, strict=True)]
    minus = [a - eps * t for a, t in zip(args, tangents, strict=True)]
    return (np.asarray(f(*plus), dtype=np.float64) - np.asarray(f(*minus), dtype=np.float64)) / (
        2.0 * eps
    )


def assert_close(actual, expected, rtol, atol=None, err_msg=""):
    """``assert_allclose`` with ``atol`` relative to the size of ``expected`` by default."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (
        f"{err_msg}: shape {actual.shape} != expected {expected.shape}"
    )
    if atol is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        atol = rtol * max(1.0, scale)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=err_msg)

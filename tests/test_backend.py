"""The backend seam (``calcml/backend.py``): NumPy always, CuPy where a GPU answers.

NumPy: ``get_xp``, ``to_numpy``, the creation helpers, ``broadcast_to`` (against
``numpy.broadcast_to`` over many shapes, size 0 and size 1 included, and over contiguous,
offset, strided, transposed, reversed and read-only inputs), ``scatter_add`` (against
``numpy.add.at``, repeated advanced indices included) and ``rng``.

CuPy (skipped unless CuPy is installed and ``calcml.backend.cupy_available()``): the same helpers
on CuPy arrays, then the engine: ``grad``, ``value_and_grad``, ``vjp``, ``jvp`` (single and
batched), ``jacobian``, ``hessian``, ``hvp`` and ``Tensor.backward`` on CuPy arrays return CuPy
arrays of the input's dtype that agree with the NumPy results; the registry's own sample
inputs run on CuPy for every operation; a ``cm.nn`` model moved with ``Module.to('cupy')``
trains along the same trajectory as on NumPy.
"""

from __future__ import annotations

import importlib.util
import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import calcml as cm
from calcml import backend
from calcml._core.registry import OPS
from calcml.optim.base import flatten

DTYPES = (np.float32, np.float64)


# --- get_xp, to_numpy, creation -------------------------------------------------------------

def test_get_xp_is_numpy_for_everything_but_cupy_arrays():
    assert backend.get_xp() is np
    assert backend.get_xp(np.ones(3)) is np
    assert backend.get_xp(np.ones(3), 2.0, 3, None) is np
    assert backend.get_xp(np.float32(1.0), [1.0, 2.0]) is np
    assert backend.get_xp(cm.tensor([1.0])) is np


def test_to_numpy():
    a = np.arange(6.0).reshape(2, 3)
    assert backend.to_numpy(a) is a  # already NumPy: no copy
    for value, want in [([1.0, 2.0], np.array([1.0, 2.0])), (3.5, np.array(3.5)),
                        (np.float32(2.0), np.array(2.0, np.float32)),
                        (cm.tensor([[1.0, 2.0]]), np.array([[1.0, 2.0]]))]:
        got = backend.to_numpy(value)
        assert type(got) is np.ndarray
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_creation_helpers(dtype):
    z = backend.zeros((2, 3), dtype)
    o = backend.ones((), dtype, like=np.ones(2))
    e = backend.eye(3, dtype, like=np.ones(2))
    for a, shape in [(z, (2, 3)), (o, ()), (e, (3, 3))]:
        assert type(a) is np.ndarray and a.dtype == dtype and a.shape == shape
        assert a.flags.writeable
    np.testing.assert_array_equal(z, 0.0)
    np.testing.assert_array_equal(o, 1.0)
    np.testing.assert_array_equal(e, np.eye(3))


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.int64, np.complex128))
@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 5), (7, 0, 2), 4])
def test_aligned_helpers_start_on_a_cache_line(dtype, shape):
    want = (shape,) if isinstance(shape, int) else shape
    for a in (backend.empty_aligned(shape, dtype), backend.zeros_aligned(shape, dtype)):
        assert type(a) is np.ndarray and a.dtype == dtype and a.shape == want
        assert a.size == 0 or a.ctypes.data % backend.ALIGNMENT == 0  # (empty: no data)
        assert a.flags.c_contiguous and a.flags.writeable
    np.testing.assert_array_equal(backend.zeros_aligned(shape, dtype), 0)
    src = np.arange(int(np.prod(want)), dtype=dtype).reshape(want)
    src = src.T if src.ndim == 2 else src  # a non-contiguous source too
    c = backend.aligned_copy(src)
    assert (c.size == 0 or c.ctypes.data % backend.ALIGNMENT == 0) and c.flags.c_contiguous
    assert c.dtype == src.dtype and c.shape == src.shape and not np.shares_memory(c, src)
    np.testing.assert_array_equal(c, src)


def test_parameters_and_optimizer_state_are_aligned():
    """Leaf tensors that require a gradient, the layers' parameters and the optimizers'
    buffers start on a cache line; a plain tensor is an ordinary copy."""
    rng = np.random.default_rng(0)
    for dt in DTYPES:
        src = rng.normal(size=(5, 3)).astype(dt)
        w = cm.tensor(src, requires_grad=True)
        assert w.data.ctypes.data % 64 == 0 and w.dtype == dt
        np.testing.assert_array_equal(w.data, src)
        assert not np.shares_memory(w.data, src)
        lin = cm.nn.Linear(3, 7, rng=0, dtype=dt)
        for p in lin.parameters():
            assert p.data.ctypes.data % 64 == 0
        for transform in (cm.optim.sgd(0.1, momentum=0.9), cm.optim.adam(1e-3),
                          cm.optim.rmsprop(1e-3), cm.optim.adagrad(0.1)):
            opt = cm.optim.Optimizer(lin.parameters(), transform)
            bufs = [a for a in flatten(opt.state)[0]
                    if isinstance(a, np.ndarray) and a.shape in ((7, 3), (7,))]
            assert len(bufs) >= 2
            assert all(b.ctypes.data % 64 == 0 and b.dtype == dt for b in bufs)
    # the aligned parameters train like any others: the updates land in them
    lin = cm.nn.Linear(3, 2, rng=0)
    before = lin.weight.data.copy()
    opt = cm.optim.Optimizer(lin.parameters(), cm.optim.sgd(0.1, momentum=0.9))
    cm.losses.mse(np.zeros((4, 2)), lin(np.ones((4, 3)))).backward()
    opt.step()
    assert lin.weight.data.ctypes.data % 64 == 0
    assert not np.array_equal(lin.weight.data, before)


def test_cupy_available_is_false_without_cupy():
    assert isinstance(backend.cupy_available(), bool)
    if importlib.util.find_spec("cupy") is None:
        assert not backend.cupy_available()


# --- broadcast_to ----------------------------------------------------------------------------

#: Target shapes, size 0 and size 1 included.
TARGETS = [(), (1,), (0,), (4,), (1, 1), (3, 1), (1, 4), (3, 4), (0, 4), (3, 0), (2, 1, 4),
           (2, 3, 4), (2, 0, 4), (1, 1, 1, 1), (2, 1, 3, 1)]


def _sources(target):
    """Every shape that broadcasts to ``target``: a suffix of it, some sides replaced by 1."""
    out = set()
    n = len(target)
    for k in range(n + 1):
        suffix = target[n - k:]
        for ones in itertools.product((False, True), repeat=k):
            out.add(tuple(1 if o else d for o, d in zip(ones, suffix, strict=True)))
    return sorted(out)


CASES = [(s, t) for t in TARGETS for s in _sources(t)]


def _layout(shape, layout, dtype=np.float64):
    """An array of ``shape`` with distinct values, in one of several memory layouts."""
    size = int(np.prod(shape))
    vals = (np.arange(size, dtype=np.float64) + 1.0).astype(dtype)
    if layout == "contiguous":
        return vals.reshape(shape)
    if layout == "offset":  # a C-contiguous view that does not start at its buffer's start
        return (np.arange(size + 3, dtype=np.float64) + 1.0).astype(dtype)[3:].reshape(shape)
    if layout == "strided":  # every other element: not contiguous (for a non-empty 1-D+ shape)
        if not shape:
            return vals.reshape(shape)
        base = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
        base[..., ::2] = vals.reshape(shape)
        return base[..., ::2]
    if layout == "fortran":  # (asfortranarray would turn a 0-d array into 1-d)
        a = vals.reshape(shape)
        return np.asfortranarray(a) if a.ndim else a
    if layout == "reversed":
        a = vals.reshape(shape)
        return a[..., ::-1] if shape else a
    if layout == "odd-unit-strides":  # C-contiguous, with arbitrary strides on the sides of 1
        a = vals.reshape(shape)
        strides = tuple(12345 * a.itemsize if d == 1 else s
                        for d, s in zip(shape, a.strides, strict=True))
        return np.lib.stride_tricks.as_strided(a, shape, strides)
    if layout == "readonly":
        a = vals.reshape(shape).copy()
        a.flags.writeable = False
        return a
    raise AssertionError(layout)


LAYOUTS = ["contiguous", "offset", "strided", "fortran", "reversed", "odd-unit-strides",
           "readonly"]


def _check_broadcast(a, target):
    want = np.broadcast_to(a, target)
    got = backend.broadcast_to(a, target)
    what = f"{a.shape} -> {target} (strides {a.strides})"
    assert type(got) is np.ndarray, what
    assert got.shape == want.shape == tuple(target), what
    assert got.dtype == a.dtype, what
    np.testing.assert_array_equal(got, want, err_msg=what)
    assert not got.flags.writeable, f"{what}: the result must be read-only"
    if got.size:
        assert np.shares_memory(got, a), f"{what}: the result must be a view, not a copy"
        with pytest.raises(ValueError):
            got[(0,) * got.ndim] = -1.0
    return got


@pytest.mark.parametrize("layout", LAYOUTS)
def test_broadcast_to_matches_numpy(layout):
    n = 0
    for src, target in CASES:
        a = _layout(src, layout)
        was_writeable = a.flags.writeable
        _check_broadcast(a, target)
        assert a.flags.writeable == was_writeable, "the input's flags must not change"
        n += 1
    assert n == len(CASES) > 80


def test_layouts_are_what_they_claim():
    a = _layout((3, 4), "strided")
    assert not a.flags.c_contiguous
    assert not _layout((3, 4), "fortran").flags.c_contiguous
    assert not _layout((3, 4), "reversed").flags.c_contiguous
    off = _layout((3, 4), "offset")
    assert off.flags.c_contiguous and off.base is not None
    odd = _layout((3, 1, 4), "odd-unit-strides")
    assert odd.flags.c_contiguous and odd.strides[1] == 12345 * 8


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int8, np.bool_,
                                   np.complex128, np.dtype(">f8")])
def test_broadcast_to_keeps_every_dtype(dtype):
    a = (np.arange(3) % 2).astype(dtype)
    got = _check_broadcast(a, (2, 3))
    assert got.dtype == np.dtype(dtype)


@pytest.mark.parametrize("src,target", [((3,), (2,)), ((2, 3), (2, 0)), ((3,), ()),
                                        ((1,), ()), ((2, 1), (2,)), ((3,), (-1, 3)),
                                        ((2, 3), (3, 2))])
def test_broadcast_to_refuses_what_numpy_refuses(src, target):
    a = np.zeros(src)
    with pytest.raises(ValueError):
        np.broadcast_to(a, target)
    with pytest.raises(ValueError):
        backend.broadcast_to(a, target)


def test_broadcast_to_accepts_lists_and_numpy_integers_as_shape():
    a = np.arange(3.0)
    for shape in ([2, 3], (np.int64(2), np.int64(3)), np.array([2, 3])):
        got = backend.broadcast_to(a, shape)
        assert got.shape == (2, 3)
        np.testing.assert_array_equal(got, np.broadcast_to(a, (2, 3)))


def test_broadcast_to_accepts_an_int_shape_like_numpy():
    for a, shape in [(np.array(1.5), 3), (np.arange(1.0), np.int64(4)), (np.zeros(1), 0)]:
        got = backend.broadcast_to(a, shape)
        want = np.broadcast_to(a, shape)
        assert got.shape == want.shape and not got.flags.writeable
        np.testing.assert_array_equal(got, want)


@st.composite
def _broadcast_case(draw):
    target = tuple(draw(st.lists(st.integers(0, 4), max_size=5)))
    k = draw(st.integers(0, len(target)))
    src = tuple(draw(st.sampled_from([d, 1])) for d in target[len(target) - k:])
    return src, target, draw(st.sampled_from(LAYOUTS))


@settings(max_examples=200, deadline=None)
@given(_broadcast_case())
def test_broadcast_to_matches_numpy_on_random_shapes(case):
    src, target, layout = case
    _check_broadcast(_layout(src, layout), target)


# --- scatter_add -----------------------------------------------------------------------------

#: (shape, index, shape of the values) with basic and advanced indices; many repeat elements.
SCATTER_CASES = [
    ((5,), (np.array([0, 2, 0, 4, 0]),), (5,)),
    ((5,), ([1, 1, 1],), (3,)),
    ((5,), (np.array([-1, 4, -1]),), (3,)),
    ((4, 3), (np.array([0, 0, 3]), np.array([1, 1, 2])), (3,)),
    ((4, 3), (np.array([0, 0, 3]), slice(None)), (3, 3)),
    ((4, 3), (slice(None), np.array([2, 2])), (4, 2)),
    ((4, 3), (np.array([[0, 1], [1, 0]]),), (2, 2, 3)),
    ((4, 3), (np.array([True, False, True, True]),), (3, 3)),
    ((4, 3), np.array([3, 3]), (2, 3)),
    ((4, 3), (Ellipsis, np.array([0, 0, 1])), (4, 3)),
    ((2, 3, 4), (np.array([0, 1, 0]), slice(None), np.array([1, 1, 1])), (3, 3)),
    ((2, 3, 4), (slice(None), np.array([0, 2, 0]), np.array([3, 3, 3])), (2, 3)),
    ((4, 3), (np.array(2),), (3,)),
    ((4, 3), (np.array([], dtype=np.int64),), (0, 3)),
    # basic indices: no element repeats, so plain assignment is used
    ((4, 3), (1, slice(0, 3, 2)), (2,)),
    ((4, 3), (slice(None, None, -1),), (4, 3)),
    ((4, 3), (None, 2), (1, 3)),
    ((4, 3), (Ellipsis, None), (4, 3, 1)),
    ((4, 3), 2, (3,)),
    ((4, 3), np.int64(-1), (3,)),
    ((0, 3), (slice(None),), (0, 3)),
]


def _reference(shape, dtype, index, values):
    ref = np.zeros(shape, dtype)
    np.add.at(ref, index, values)
    return ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(SCATTER_CASES)))
def test_scatter_add_matches_add_at(case, dtype):
    shape, index, vshape = SCATTER_CASES[case]
    values = np.random.default_rng(case).normal(size=vshape).astype(dtype)
    before = values.copy()
    got = backend.scatter_add(shape, dtype, index, values)
    assert type(got) is np.ndarray and got.shape == shape and got.dtype == dtype
    assert got.flags.writeable
    np.testing.assert_allclose(got, _reference(shape, dtype, index, values), rtol=1e-6)
    np.testing.assert_array_equal(values, before)  # the values are not modified
    if got.size and values.size:
        assert not np.shares_memory(got, values)


def test_scatter_add_repeated_indices_add_up():
    got = backend.scatter_add((3,), np.float64, (np.array([1, 1, 1, 0]),), np.ones(4))
    np.testing.assert_array_equal(got, [1.0, 3.0, 0.0])
    # a plain assignment would keep one of the repeated contributions only
    plain = np.zeros(3)
    plain[np.array([1, 1, 1, 0])] = np.ones(4)
    assert plain[1] == 1.0


def test_scatter_add_broadcasts_values_and_casts_to_dtype():
    got = backend.scatter_add((4,), np.float64, (np.array([0, 0, 1]),), np.array(2.0))
    np.testing.assert_array_equal(got, [4.0, 2.0, 0.0, 0.0])
    got = backend.scatter_add((2, 3), np.float32, (slice(None),), np.arange(3.0))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[0.0, 1.0, 2.0]] * 2)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_scatter_add_random_repeated_indices(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 5, size=rng.integers(1, 4)))
    n = int(rng.integers(0, 12))
    axis_index = tuple(rng.integers(-d, d, size=n) for d in shape[:1]) + (slice(None),) * (
        len(shape) - 1)
    full_index = tuple(rng.integers(-d, d, size=n) for d in shape)
    for index in (axis_index, full_index):
        vshape = np.zeros(shape)[index].shape
        values = rng.normal(size=vshape)
        got = backend.scatter_add(shape, np.float64, index, values)
        np.testing.assert_allclose(got, _reference(shape, np.float64, index, values),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.sum(), values.sum(), rtol=1e-9, atol=1e-9)


# --- rng -------------------------------------------------------------------------------------

def test_rng():
    g = backend.rng(0)
    assert isinstance(g, np.random.Generator)
    assert backend.rng(0).random() == backend.rng(0).random()
    assert backend.rng(0).random() != backend.rng(1).random()
    mine = np.random.default_rng(5)
    assert backend.rng(mine) is mine  # a generator passes through: its stream continues
    assert isinstance(backend.rng(None), np.random.Generator)
    assert isinstance(backend.rng(np.random.SeedSequence(3)), np.random.Generator)
    np.testing.assert_array_equal(backend.rng(7).normal(size=4),
                                  np.random.default_rng(7).normal(size=4))


# === CuPy ====================================================================================

@pytest.fixture(scope="module")
def cp():
    cupy = pytest.importorskip("cupy")
    if not backend.cupy_available():
        pytest.skip("CuPy is installed but no GPU answers (calcml.backend.cupy_available())")
    return cupy


def _is_cupy(cp, a):
    return isinstance(a, cp.ndarray)


def _tol(dtype):
    return dict(rtol=2e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-12)


def _agree(cp, got, want, dtype, what):
    """``got`` is a CuPy array of ``dtype`` equal to the NumPy result ``want``."""
    assert _is_cupy(cp, got), f"{what}: {type(got).__module__}.{type(got).__name__}, not CuPy"
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, not {np.dtype(dtype)}"
    assert type(want) is np.ndarray or np.isscalar(want), f"{what}: reference is not NumPy"
    np.testing.assert_allclose(cp.asnumpy(got), want, err_msg=what, **_tol(dtype))


def test_cupy_get_xp_and_to_numpy(cp):
    x = cp.arange(6.0).reshape(2, 3)
    assert backend.get_xp(x) is cp
    assert backend.get_xp(np.ones(2), x, 2.0) is cp
    assert backend.get_xp(np.ones(2)) is np
    h = backend.to_numpy(x)
    assert type(h) is np.ndarray
    np.testing.assert_array_equal(h, np.arange(6.0).reshape(2, 3))
    for make in (backend.zeros, backend.ones):
        a = make((2, 2), np.float32, like=x)
        assert _is_cupy(cp, a) and a.dtype == np.float32
    assert _is_cupy(cp, backend.eye(3, np.float64, like=x))


def test_cupy_broadcast_to(cp):
    for src, target in CASES[::3]:
        a = _layout(src, "contiguous")
        got = backend.broadcast_to(cp.asarray(a), target)
        assert _is_cupy(cp, got) and got.shape == tuple(target)
        np.testing.assert_array_equal(cp.asnumpy(got), np.broadcast_to(a, target))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_scatter_add_matches_add_at(cp, dtype):
    for case, (shape, index, vshape) in enumerate(SCATTER_CASES):
        values = np.random.default_rng(case).normal(size=vshape).astype(dtype)
        idx = index if isinstance(index, tuple) else (index,)
        dev_index = tuple(cp.asarray(i) if isinstance(i, (np.ndarray, list)) else i for i in idx)
        got = backend.scatter_add(shape, dtype, dev_index, cp.asarray(values))
        _agree(cp, got, _reference(shape, dtype, index, values), dtype,
               f"scatter_add case {case}")


def _f(x, W):
    return cm.sum(cm.tanh(W @ x) ** 2) + cm.sum(cm.exp(-x) * cm.sin(x)) + cm.logsumexp(x)


def _vec(x, W):
    return cm.softplus(W @ x) * cm.sigmoid(x[:3])


def _data(dtype):
    rng = np.random.default_rng(0)
    return (rng.normal(size=4).astype(dtype), rng.normal(size=(3, 4)).astype(dtype),
            rng.normal(size=4).astype(dtype), rng.normal(size=(5, 4)).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_grad_value_and_grad_vjp(cp, dtype):
    x, W, _, _ = _data(dtype)
    dx, dW = cp.asarray(x), cp.asarray(W)
    g = cm.grad(_f)(dx, dW)
    _agree(cp, g, cm.grad(_f)(x, W), dtype, "grad")
    v, (gx, gW) = cm.value_and_grad(_f, argnums=(0, 1))(dx, dW)
    v0, (gx0, gW0) = cm.value_and_grad(_f, argnums=(0, 1))(x, W)
    _agree(cp, v, v0, dtype, "value_and_grad value")
    _agree(cp, gx, gx0, dtype, "value_and_grad gradient 0")
    _agree(cp, gW, gW0, dtype, "value_and_grad gradient 1")
    out, fn = cm.vjp(_vec, dx, dW)
    out0, fn0 = cm.vjp(_vec, x, W)
    ct = np.arange(1.0, 4.0).astype(dtype)
    _agree(cp, out, out0, dtype, "vjp output")
    for i, (a, b) in enumerate(zip(fn(cp.asarray(ct)), fn0(ct), strict=True)):
        _agree(cp, a, b, dtype, f"vjp cotangent {i}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_jvp_single_and_batched(cp, dtype):
    x, W, t, T = _data(dtype)
    dx, dW = cp.asarray(x), cp.asarray(W)
    out, tan = cm.jvp(lambda x: _vec(x, dW), (dx,), (cp.asarray(t),))
    out0, tan0 = cm.jvp(lambda x: _vec(x, W), (x,), (t,))
    _agree(cp, out, out0, dtype, "jvp output")
    _agree(cp, tan, tan0, dtype, "jvp tangent")
    out, tans = cm.jvp(lambda x: _vec(x, dW), (dx,), (cp.asarray(T),), batched=True)
    _, tans0 = cm.jvp(lambda x: _vec(x, W), (x,), (T,), batched=True)
    assert tans.shape == (5, 3)
    _agree(cp, tans, tans0, dtype, "batched jvp tangents")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_jacobian_hessian_hvp(cp, dtype):
    x, W, t, _ = _data(dtype)
    dx, dW = cp.asarray(x), cp.asarray(W)
    for mode in ("rev", "fwd"):
        J = cm.jacobian(_vec, mode=mode)(dx, dW)
        _agree(cp, J, cm.jacobian(_vec, mode=mode)(x, W), dtype, f"jacobian {mode}")
    H = cm.hessian(_f)(dx, dW)
    assert H.shape == (4, 4)
    _agree(cp, H, cm.hessian(_f)(x, W), dtype, "hessian")
    hv = cm.hvp(lambda x: _f(x, dW), (dx,), (cp.asarray(t),))
    _agree(cp, hv, cm.hvp(lambda x: _f(x, W), (x,), (t,)), dtype, "hvp")
    gg = cm.grad(lambda s: cm.grad(lambda u: cm.sum(cm.tanh(u) ** 3))(s)[0])(dx)
    gg0 = cm.grad(lambda s: cm.grad(lambda u: cm.sum(cm.tanh(u) ** 3))(s)[0])(x)
    _agree(cp, gg, gg0, dtype, "grad of grad")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_indexing_gradient(cp, dtype):
    x, _, _, _ = _data(dtype)
    idx = np.array([0, 2, 2, 3])

    def f(x, idx):
        return cm.sum(x[idx] ** 2) + cm.sum(x[1:3] * 2.0)

    g = cm.grad(f)(cp.asarray(x), cp.asarray(idx))
    _agree(cp, g, cm.grad(f)(x, idx), dtype, "gradient through indexing")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_tensor_backward(cp, dtype):
    x, W, _, _ = _data(dtype)

    def run(xp_x, xp_W):
        w = cm.tensor(xp_x, requires_grad=True)
        M = cm.tensor(xp_W, requires_grad=True)
        loss = (cm.tanh(M @ w) ** 2).mean() + (w * w).sum()
        loss.backward()
        first = (w.grad, M.grad)
        assert first[0] is not None and first[1] is not None
        once = [a.copy() for a in first]
        loss.backward()  # a second backward adds the same gradients again
        return loss, once, (w.grad, M.grad)

    loss, once, twice = run(cp.asarray(x), cp.asarray(W))
    loss0, once0, twice0 = run(x, W)
    assert _is_cupy(cp, loss.data) and loss.dtype == dtype
    _agree(cp, loss.data, loss0.data, dtype, "loss")
    for k in range(2):
        _agree(cp, once[k], once0[k], dtype, f"Tensor.grad {k}")
        _agree(cp, twice[k], 2 * once0[k], dtype, f"Tensor.grad {k} after two backward()")
    with cm.no_grad():
        y = cm.tensor(cp.asarray(x)) * 2.0
    assert not y.requires_grad and _is_cupy(cp, y.data)
    assert type(y.numpy()) is np.ndarray


#: Every registry operation's sample inputs are also run on CuPy.
CUPY_OPS = sorted(OPS)


def _sample_rng(name):  # the registry test's generator (tests/test_ops_registry.py)
    return np.random.default_rng(zlib.crc32(name.encode()))


def _registry_cases():
    for name in CUPY_OPS:
        for k in range(len(OPS[name].samples(_sample_rng(name)))):
            yield pytest.param(name, k, id=f"{name}-{k}")


@pytest.mark.parametrize("name,k", list(_registry_cases()))
@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_registry_samples(cp, name, k, dtype):
    info = OPS[name]
    sample = info.samples(_sample_rng(name))[k]

    def host(a):
        if isinstance(a, (np.ndarray, np.floating)) and np.asarray(a).dtype.kind == "f":
            return np.asarray(a).astype(np.float32).astype(dtype)
        return a

    def device(a):
        return cp.asarray(a) if isinstance(a, (np.ndarray, np.floating)) else a

    args0 = [host(a) for a in sample.args]
    args1 = [device(a) for a in args0]
    nums = tuple(sample.argnums)
    what = f"{name} sample {k} ({np.dtype(dtype).name})"

    def make(args):
        def op(*xs):
            a = list(args)
            for i, x in zip(nums, xs, strict=True):
                a[i] = x
            return info.fn(*a, **sample.kwargs)
        return op

    op0, op1 = make(args0), make(args1)
    prim0 = tuple(args0[i] for i in nums)
    prim1 = tuple(args1[i] for i in nums)
    out0 = np.asarray(op0(*prim0))
    _agree(cp, op1(*prim1), out0, dtype, f"{what}: value")

    rng = np.random.default_rng(1000 + k)
    Wt = rng.normal(size=out0.shape).astype(dtype)
    ts = tuple(rng.normal(size=np.shape(p)).astype(dtype) for p in prim0)

    def F(op, W):
        return lambda *xs: cm.sum(op(*xs) * W)

    g1 = cm.grad(F(op1, cp.asarray(Wt)), argnums=tuple(range(len(nums))))(*prim1)
    g0 = cm.grad(F(op0, Wt), argnums=tuple(range(len(nums))))(*prim0)
    for i, (a, b) in enumerate(zip(g1, g0, strict=True)):
        _agree(cp, a, b, dtype, f"{what}: gradient {i}")
    _, t1 = cm.jvp(op1, prim1, tuple(cp.asarray(t) for t in ts))
    _, t0 = cm.jvp(op0, prim0, ts)
    _agree(cp, t1, t0, dtype, f"{what}: jvp")
    if sample.smooth:
        h1 = cm.hvp(F(op1, cp.asarray(Wt)), prim1, tuple(cp.asarray(t) for t in ts))
        h0 = cm.hvp(F(op0, Wt), prim0, ts)
        h1, h0 = (h1, h0) if len(nums) > 1 else ((h1,), (h0,))
        for i, (a, b) in enumerate(zip(h1, h0, strict=True)):
            _agree(cp, a, b, dtype, f"{what}: hvp {i}")


# --- Module.to ------------------------------------------------------------------------------

def _small_net(dtype):
    nn = cm.nn
    return nn.Sequential(nn.Linear(5, 8, rng=0, dtype=dtype), nn.BatchNorm1d(8, dtype=dtype),
                         nn.Tanh(), nn.Linear(8, 8, rng=1, dtype=dtype), nn.ReLU(),
                         nn.Dropout(0.25, rng=5),
                         nn.LayerNorm(8, dtype=dtype), nn.Linear(8, 3, rng=2, dtype=dtype))


def test_module_to_numpy_keeps_arrays_and_refuses_unknown_devices():
    m = _small_net(np.float32)
    before = m.state_dict()
    assert m.to("numpy") is m
    after = m.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert type(after[k]) is np.ndarray and after[k].dtype == before[k].dtype
        np.testing.assert_array_equal(after[k], before[k])
    with pytest.raises(ValueError, match=r"calcml\.nn\.Sequential\.to: unknown device 'gpu'"):
        m.to("gpu")
    if not backend.cupy_available():
        with pytest.raises(RuntimeError, match=r"Sequential\.to: 'cupy' needs CuPy"):
            m.to("cupy")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_module_to_trains_like_numpy(cp, dtype):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(4, 16, 5)).astype(dtype)
    y = rng.integers(0, 3, size=(4, 16))

    def run(device):
        m = _small_net(dtype).to(device)
        opt = cm.optim.Optimizer(m.parameters(), cm.optim.sgd(0.1, momentum=0.9))
        losses = []
        for xb, yb in zip(X, y):
            xb = cp.asarray(xb) if device == "cupy" else xb
            yb = cp.asarray(yb) if device == "cupy" else yb
            opt.zero_grad()
            loss = cm.losses.cross_entropy(yb, m(xb))
            loss.backward()
            opt.step()
            losses.append(loss)
        return m, losses

    m1, l1 = run("cupy")
    m0, l0 = run("numpy")
    for a, b in zip(l1, l0):
        _agree(cp, a.data, np.asarray(b.data), dtype, "loss")
    for (name, p1), (_, p0) in zip(m1.named_parameters(), m0.named_parameters()):
        _agree(cp, p1.data, p0.data, dtype, f"parameter {name}")
    s1 = m1.to("numpy").state_dict()
    for k, v in m0.state_dict().items():
        assert type(s1[k]) is np.ndarray
        np.testing.assert_allclose(s1[k], v, err_msg=k, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_attention_block_matches_numpy(cp, dtype):
    nn = cm.nn
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 8)).astype(dtype)
    user_mask = rng.random((2, 5, 5)) < 0.8

    def run(device):
        att = nn.MultiHeadAttention(8, 2, rng=0, dtype=dtype).to(device)
        norm = nn.LayerNorm(8, dtype=dtype).to(device)
        xs = cm.tensor(cp.asarray(x) if device == "cupy" else x, requires_grad=True)
        m = cp.asarray(user_mask) if device == "cupy" else user_mask
        out, w = att(xs, mask=m, causal=True, need_weights=True)
        loss = cm.sum(norm(xs + out) ** 2)
        loss.backward()
        return out.data, w.data, xs.grad, att.q_proj.weight.grad

    for got, want, what in zip(run("cupy"), run("numpy"),
                               ("output", "weights", "d/dx", "d/dW_q")):
        _agree(cp, got, want, dtype, f"attention block: {what}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_train_with_validation_and_checkpoint_matches_numpy(cp, dtype, tmp_path):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(48, 5)).astype(dtype)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
    Xv, yv = X[:16], y[:16]

    def run(device, **kw):
        m = _small_net(dtype).to(device)
        put = (lambda a: cp.asarray(a)) if device == "cupy" else (lambda a: a)
        hist = cm.train(m, cm.losses.cross_entropy, cm.optim.adam(1e-2), put(X), put(y),
                        epochs=3, batch_size=16, rng=0, metrics="accuracy",
                        validation_data=(put(Xv), put(yv)), progress=False, **kw)
        return m, hist

    m1, h1 = run("cupy", checkpoint=tmp_path / "gpu.npz")
    m0, h0 = run("numpy")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(h1.history[key], h0.history[key], err_msg=key,
                                   **_tol(dtype))
    for (name, p1), (_, p0) in zip(m1.named_parameters(), m0.named_parameters()):
        _agree(cp, p1.data, p0.data, dtype, f"parameter {name} after cm.train")
    # the checkpoint written from the GPU is plain NumPy and resumes on the host
    with np.load(tmp_path / "gpu.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    m2, h2 = run("numpy", resume=tmp_path / "gpu.npz")
    for (name, p2), (_, p0) in zip(m2.named_parameters(), m0.named_parameters()):
        np.testing.assert_allclose(p2.data, p0.data, err_msg=name, **_tol(dtype))

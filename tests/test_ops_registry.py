"""The registry-driven test: every operation in ``calcml._core.registry.OPS``, on every sample
input it declares, in float32 and float64, in both modes, to second order.

An operation is covered the moment it is registered (DESIGN.md, engine rule 1).  For each
(operation, sample, dtype) the output is projected to a scalar with fixed random weights W,
F(x) = Σ W ⊙ op(x), and:

(a) the reverse-mode gradient of F matches central differences (float64), or the float64
    result on the same values (float32, looser);
(b) the forward-mode output tangent J·t of the op, weighted by W, equals ⟨∇F, t⟩;
(c) a batch of three tangents pushed through at once gives the three single JVPs;
(d) the Hessian-vector product H·v by forward-over-reverse (``cm.hvp``) equals the one by
    reverse-over-reverse (the gradient of ⟨∇F, v⟩), the full Hessian (``cm.hessian``, all
    basis tangents in one batch) times v, and central differences of ∇F along v (skipped
    only for samples marked ``smooth=False``);
(e) float32 in gives float32 out: value, gradient, JVP, batched JVP, HVP and Hessian;
(f) the Tensor API (``backward()``) gives the same gradient as ``cm.grad``, in the same dtype.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from fdcheck import assert_close, central_directional, central_grad

import calcml as cm
from calcml._core.registry import OPS, PRIMITIVES

DTYPES = (np.float32, np.float64)


def _sample_rng(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def _cases():
    for name, info in OPS.items():
        for k in range(len(info.samples(_sample_rng(name)))):
            for dt in DTYPES:
                yield pytest.param(name, k, dt, id=f"{name}-{k}-{np.dtype(dt).name}")


def _cast(a, dtype):
    """Floating-point arrays to ``dtype``; indices, masks, shapes and Python numbers as they are."""
    if isinstance(a, (np.ndarray, np.floating)) and a.dtype.kind == "f":
        return np.asarray(a).astype(dtype)
    return a


class Problem:
    """One sample of one operation, in one dtype, with its weights and directions.

    Every random float is rounded to float32 first, so the float32 and float64 problems hold
    exactly the same numbers and differ only in the arithmetic.
    """

    def __init__(self, name, k, dtype):
        self.name, self.dtype = name, dtype
        info = OPS[name]
        self.sample = sample = info.samples(_sample_rng(name))[k]
        args = [_cast(_cast(a, np.float32), dtype) for a in sample.args]
        self.nums = tuple(sample.argnums)
        self.primals = tuple(args[i] for i in self.nums)

        def op(*xs):
            a = list(args)
            for i, x in zip(self.nums, xs, strict=True):
                a[i] = x
            return info.fn(*a, **sample.kwargs)

        self.op = op
        self.out = np.asarray(op(*self.primals))
        rng = np.random.default_rng(1000 + k)

        def rand(shape):
            return rng.normal(size=shape).astype(np.float32).astype(dtype)

        self.W = rand(self.out.shape)
        self.tangents = tuple(rand(p.shape) for p in self.primals)
        self.batch = tuple(rand((3,) + p.shape) for p in self.primals)
        self.vs = tuple(rand(p.shape) for p in self.primals)
        self.all = tuple(range(len(self.primals)))

    def F(self, *xs):
        return cm.sum(self.op(*xs) * self.W)

    def derivatives(self, second_order):
        """Everything the engine computes for this problem, by every route."""
        r = {}
        r["value"], r["grad"] = cm.value_and_grad(self.F, argnums=self.all)(*self.primals)
        r["jvp_out"], r["jvp"] = cm.jvp(self.op, self.primals, self.tangents)
        r["bjvp_out"], r["bjvp"] = cm.jvp(self.op, self.primals, self.batch, batched=True)
        # The same gradient through Tensors: backward() accumulates the rules' results as they
        # are, with no cast to the input's dtype, so it also shows a rule that upcasts.
        ts = [cm.tensor(x, requires_grad=True) for x in self.primals]
        y = self.F(*ts)
        if isinstance(y, cm.Tensor) and y.requires_grad:
            y.backward()
        r["tensor_grad"] = [np.zeros_like(x) if t.grad is None else t.grad
                            for t, x in zip(ts, self.primals, strict=True)]
        r["bjvp_single"] = [
            cm.jvp(self.op, self.primals, tuple(t[b] for t in self.batch))[1] for b in range(3)
        ]
        if second_order:
            h = cm.hvp(self.F, self.primals, self.vs)
            r["hvp"] = (h,) if len(self.primals) == 1 else h

            def grad_dot_v(*xs):
                gs = cm.grad(self.F, argnums=self.all)(*xs)
                total = 0.0
                for g, v in zip(gs, self.vs, strict=True):
                    total = total + cm.sum(g * v)
                return total

            r["rr_hvp"] = cm.grad(grad_dot_v, argnums=self.all)(*self.primals)
            # the full Hessian: forward-over-reverse with a batch of all basis tangents
            H = cm.hessian(self.F, argnums=self.all)(*self.primals)
            r["hessian_v"] = tuple(
                sum(np.tensordot(np.asarray(H[i][j], np.float64), np.asarray(v, np.float64),
                                 axes=np.ndim(v)) for j, v in enumerate(self.vs))
                for i in self.all
            )
            r["hessian_blocks"] = [(H[i][j], self.primals[i].shape + self.primals[j].shape)
                                   for i in self.all for j in self.all]
        return r


def _weighted(W, t):
    """⟨W, t⟩ over the output axes (the trailing ones), in float64."""
    W = np.asarray(W, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    return np.sum(W * t, axis=tuple(range(t.ndim - W.ndim, t.ndim)))


def _grad_dot(grads, tangents):
    return sum(np.sum(np.asarray(g, np.float64) * np.asarray(t, np.float64))
               for g, t in zip(grads, tangents, strict=True))


def test_registry_is_not_empty_and_covers_every_primitive():
    assert len(OPS) >= 40
    uncovered = sorted(set(PRIMITIVES) - set(OPS))
    assert not uncovered, f"primitives with no registered samples: {uncovered}"
    for name, info in OPS.items():
        samples = info.samples(_sample_rng(name))
        assert samples, f"{name} declares no samples"
        again = info.samples(_sample_rng(name))
        # samples depend only on the rng they are given
        for s, t in zip(samples, again, strict=True):
            for a, b in zip(s.args, t.args, strict=True):
                if isinstance(a, np.ndarray):
                    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name,k,dtype", list(_cases()))
def test_registered_operation(name, k, dtype):
    p = Problem(name, k, dtype)
    smooth = p.sample.smooth
    r = p.derivatives(second_order=smooth)
    what = f"{name} sample {k} ({np.dtype(dtype).name})"

    # The traced value is the plain value.
    exact = 1e-12 if dtype == np.float64 else 1e-5
    assert_close(r["jvp_out"], p.out, exact, err_msg=f"{what}: value under jvp")
    assert_close(r["bjvp_out"], p.out, exact, err_msg=f"{what}: value under batched jvp")
    assert_close(r["value"], np.sum(p.out.astype(np.float64) * p.W), 1e-4 if dtype ==
                 np.float32 else 1e-12, err_msg=f"{what}: value_and_grad value")

    # Shapes: gradients like the primals, tangents like the output.
    assert len(r["grad"]) == len(p.primals)
    for g, x in zip(r["grad"], p.primals, strict=True):
        assert g.shape == x.shape, f"{what}: gradient shape {g.shape} for {x.shape}"
    assert r["jvp"].shape == p.out.shape, f"{what}: jvp shape"
    assert r["bjvp"].shape == (3,) + p.out.shape, f"{what}: batched jvp shape"

    # (e) the dtype is kept everywhere.
    kept = [("value", r["value"]), ("jvp", r["jvp"]), ("batched jvp", r["bjvp"])]
    kept += [(f"gradient {i}", g) for i, g in enumerate(r["grad"])]
    kept += [(f"Tensor gradient {i}", g) for i, g in enumerate(r["tensor_grad"])]
    if smooth:
        kept += [(f"hvp {i}", h) for i, h in enumerate(r["hvp"])]
        kept += [(f"rev-over-rev hvp {i}", h) for i, h in enumerate(r["rr_hvp"])]
        kept += [("hessian", h) for h, _ in r["hessian_blocks"]]
        for h, shape in r["hessian_blocks"]:
            assert np.shape(h) == shape, f"{what}: hessian block {np.shape(h)}, not {shape}"
    for label, v in kept:
        assert np.asarray(v).dtype == dtype, f"{what}: {label} has dtype {np.asarray(v).dtype}"

    same = 1e-12 if dtype == np.float64 else 1e-5
    for i, (g, tg) in enumerate(zip(r["grad"], r["tensor_grad"], strict=True)):
        assert_close(tg, g, same, err_msg=f"{what}: Tensor.backward gradient {i} vs cm.grad")

    if dtype == np.float64:
        # (a) reverse mode against central differences.
        fd = central_grad(lambda *xs: p.F(*xs), p.primals)
        for i, (g, f) in enumerate(zip(r["grad"], fd, strict=True)):
            assert_close(g, f, 1e-5, err_msg=f"{what}: gradient {i} vs central differences")
        # The forward-mode tangent against central differences of the op itself.
        fd_t = central_directional(p.op, p.primals, p.tangents)
        assert_close(r["jvp"], fd_t, 1e-5, err_msg=f"{what}: jvp vs central differences")
        # (b) forward mode against reverse mode.
        assert_close(_weighted(p.W, r["jvp"]), _grad_dot(r["grad"], p.tangents), 1e-10,
                     err_msg=f"{what}: <W, J t> vs <grad, t>")
        # (c) batched forward mode against single tangents.
        for b in range(3):
            assert_close(r["bjvp"][b], r["bjvp_single"][b], 1e-10,
                         err_msg=f"{what}: batched jvp {b} vs single jvp")
        # (d) second order, three ways.
        if smooth:
            eps = 1e-5
            grad_F = cm.grad(p.F, argnums=p.all)
            plus = grad_F(*(x + eps * v for x, v in zip(p.primals, p.vs, strict=True)))
            minus = grad_F(*(x - eps * v for x, v in zip(p.primals, p.vs, strict=True)))
            rows = zip(r["hvp"], r["rr_hvp"], plus, minus, strict=True)
            for i, (h, hh, gp, gm) in enumerate(rows):
                assert_close(h, hh, 1e-9, err_msg=f"{what}: hvp {i} fwd-over-rev vs rev-over-rev")
                assert_close(r["hessian_v"][i], h, 1e-9, err_msg=f"{what}: (H v)_{i} vs hvp")
                assert_close(h, (gp - gm) / (2 * eps), 1e-5,
                             err_msg=f"{what}: hvp {i} vs central differences of the gradient")
    else:
        ref = Problem(name, k, np.float64).derivatives(second_order=smooth)
        tol = 2e-3
        for i, (g, g64) in enumerate(zip(r["grad"], ref["grad"], strict=True)):
            assert_close(g, g64, tol, err_msg=f"{what}: gradient {i} vs float64")
        assert_close(r["jvp"], ref["jvp"], tol, err_msg=f"{what}: jvp vs float64")
        assert_close(r["bjvp"], ref["bjvp"], tol, err_msg=f"{what}: batched jvp vs float64")
        for b in range(3):
            assert_close(r["bjvp"][b], r["bjvp_single"][b], 1e-4,
                         err_msg=f"{what}: batched jvp {b} vs single jvp")
        if smooth:
            for i, (h, hh, h64) in enumerate(zip(r["hvp"], r["rr_hvp"], ref["hvp"], strict=True)):
                assert_close(h, h64, tol, err_msg=f"{what}: hvp {i} vs float64")
                assert_close(hh, h64, tol, err_msg=f"{what}: rev-over-rev hvp {i} vs float64")
                assert_close(r["hessian_v"][i], h64, tol, err_msg=f"{what}: (H v)_{i} vs float64")


# --- the registered names are the documented names (DESIGN.md, engine rule 5) -----------------

#: API.md §1's list of math names, copied from the contract.
API_OPERATIONS = sorted("""
exp log log1p expm1 sqrt abs sign sin cos tan tanh arctan sigmoid relu softplus maximum
minimum where clip sum mean var std max min prod logsumexp softmax log_softmax matmul dot
einsum transpose reshape concatenate stack broadcast_to expand_dims squeeze take
""".split())

API_MD = Path(__file__).resolve().parents[1].parent / "shared" / "API.md"


def _api_md_names(text):
    """The names in §1's "`cm.exp log ... take`" list."""
    section = text.split("## 1.", 1)[1].split("## 2.", 1)[0]
    m = re.search(r"`cm\.([a-z0-9_\s]+)`", section)
    assert m, "API.md §1 has no `cm.<names>` list"
    return sorted(m.group(1).split())


def test_public_operations_are_exactly_the_documented_list():
    assert list(cm.OPERATIONS) == API_OPERATIONS
    assert len(set(API_OPERATIONS)) == len(API_OPERATIONS) == 40
    for name in API_OPERATIONS:
        assert OPS[name].public
        assert getattr(cm, name) is not None and name in cm.__all__


def test_hard_coded_list_matches_api_md():
    if not API_MD.exists():  # a checkout without ../shared: the hard-coded copy stands alone
        return
    assert _api_md_names(API_MD.read_text()) == API_OPERATIONS


@pytest.mark.parametrize("name", [n for n, info in OPS.items() if info.public])
def test_public_operations_accept_array_likes(name):
    """Like NumPy's functions, cm.<name> takes nested lists and Python numbers too."""
    info = OPS[name]
    for k, sample in enumerate(info.samples(_sample_rng(name))):
        expected = np.asarray(info.fn(*sample.args, **sample.kwargs))
        as_lists = [a.tolist() if isinstance(a, (np.ndarray, np.generic)) else a
                    for a in sample.args]
        got = np.asarray(info.fn(*as_lists, **sample.kwargs))
        assert got.shape == expected.shape, f"{name} sample {k}"
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0, err_msg=f"{name} {k}")

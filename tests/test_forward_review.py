"""Forward mode (``cm.jvp``, batched or not) and ``cm.hvp``, tried as a user would.

Expected values are closed forms or plain-NumPy central differences, never calcml itself
(the loop of unbatched jvps is compared with the batched pass, and both with NumPy).
"""

from __future__ import annotations

import numpy as np
import pytest

import calcml as cm

RNG = np.random.default_rng(7)
B = 3  # the batch size; equal to some array dimensions on purpose


def _fd_jvp(fn, xs, ts, eps=1e-6):
    """Central difference of a plain-NumPy function along the direction ``ts``."""
    xp = [x + eps * t for x, t in zip(xs, ts)]
    xm = [x - eps * t for x, t in zip(xs, ts)]
    return (np.asarray(fn(*xp)) - np.asarray(fn(*xm))) / (2 * eps)


def _softmax(a, axis=-1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


ONES234 = np.ones((2, 3, 4))
CASES = {
    "scalar*matrix": (lambda a, b: a * b, lambda a, b: a * b, [(), (3, 4)]),
    "(3,1)+(1,4)": (lambda a, b: a + b, lambda a, b: a + b, [(3, 1), (1, 4)]),
    "(3,1)/(1,4)": (lambda a, b: a / b, lambda a, b: a / b, [(3, 1), (1, 4)]),
    "(3,1)*const(2,3,4)": (lambda a: a * ONES234, lambda a: a * ONES234, [(3, 1)]),
    "sum axis keepdims": (lambda a: cm.sum(a, axis=1, keepdims=True),
                          lambda a: np.sum(a, axis=1, keepdims=True), [(3, 4)]),
    "mean tuple axis": (lambda a: cm.mean(a, axis=(0, 2)), lambda a: np.mean(a, axis=(0, 2)),
                        [(2, 3, 4)]),
    "max axis": (lambda a: cm.max(a, axis=0), lambda a: np.max(a, axis=0), [(3, 4)]),
    "var keepdims": (lambda a: cm.var(a, axis=-1, keepdims=True),
                     lambda a: np.var(a, axis=-1, keepdims=True), [(3, 4)]),
    "reshape": (lambda a: cm.reshape(a, (4, 3)), lambda a: np.reshape(a, (4, 3)), [(3, 4)]),
    "transpose axes": (lambda a: cm.transpose(a, (1, 0, 2)),
                       lambda a: np.transpose(a, (1, 0, 2)), [(2, 3, 4)]),
    "index slice": (lambda a: a[:, 1:3], lambda a: a[:, 1:3], [(3, 4)]),
    "index fancy": (lambda a: a[[0, 2, 0]], lambda a: a[[0, 2, 0]], [(3, 4)]),
    "index adv mid": (lambda a: a[:, [0, 1], [1, 2]], lambda a: a[:, [0, 1], [1, 2]],
                      [(2, 3, 4)]),
    "concatenate": (lambda a, b: cm.concatenate([a, b], axis=1),
                    lambda a, b: np.concatenate([a, b], axis=1), [(3, 4), (3, 2)]),
    "stack": (lambda a, b: cm.stack([a, b], axis=1), lambda a, b: np.stack([a, b], axis=1),
              [(3, 4), (3, 4)]),
    "matmul 1d@2d": (lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4, 2)]),
    "matmul 2d@1d": (lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4,)]),
    "matmul 1d@1d": (lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4,)]),
    "matmul batched bcast": (lambda a, b: a @ b, lambda a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)]),
    "clip": (lambda a: cm.clip(a, -0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), [(3, 4)]),
    "clip widening bounds": (lambda a: cm.clip(a, -0.5 * ONES234, 0.5),
                             lambda a: np.clip(a, -0.5 * ONES234, 0.5), [(3, 4)]),
    "where bcast": (lambda a, b: cm.where(np.arange(12).reshape(3, 4) > 4, a, b),
                    lambda a, b: np.where(np.arange(12).reshape(3, 4) > 4, a, b),
                    [(3, 1), (1, 4)]),
    "maximum bcast": (lambda a, b: cm.maximum(a, b), lambda a, b: np.maximum(a, b),
                      [(3, 1), (1, 4)]),
    "softmax axis 0": (lambda a: cm.softmax(a, axis=0), lambda a: _softmax(a, 0), [(3, 4)]),
    "logsumexp axis": (lambda a: cm.logsumexp(a, axis=1),
                       lambda a: np.log(np.sum(np.exp(a), axis=1)), [(3, 4)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_batched_jvp_matches_loop_and_central_differences(name):
    fc, fn, shapes = CASES[name]
    xs = [RNG.normal(size=s) for s in shapes]
    ts = [RNG.normal(size=(B,) + s) for s in shapes]
    out, tb = cm.jvp(fc, tuple(xs), tuple(ts), batched=True)
    loop = np.stack([np.asarray(cm.jvp(fc, tuple(xs), tuple(t[b] for t in ts))[1])
                     for b in range(B)])
    fd = np.stack([_fd_jvp(fn, xs, [t[b] for t in ts]) for b in range(B)])
    assert np.shape(tb) == fd.shape
    np.testing.assert_allclose(np.asarray(out), fn(*xs), atol=1e-12)
    np.testing.assert_allclose(tb, loop, atol=1e-10)
    np.testing.assert_allclose(tb, fd, atol=1e-5)


def test_jvp_float32_primal_with_float64_tangent_stays_float32():
    x = np.array([0.5, 1.0, 2.0], dtype=np.float32)
    for batched, t in ((False, np.ones(3)), (True, np.ones((2, 3)))):
        out, tan = cm.jvp(cm.sin, (x,), (t,), batched=batched)
        assert out.dtype == np.float32 and tan.dtype == np.float32
        np.testing.assert_allclose(tan, np.broadcast_to(np.cos(x.astype(np.float64)), t.shape),
                                   rtol=1e-6)


def test_jvp_rejects_integer_tangent_and_wrong_shape_clearly():
    with pytest.raises(TypeError, match=r"calcml\.jvp: tangent 0 has dtype int64"):
        cm.jvp(cm.sin, (np.ones(3),), (np.ones(3, dtype=np.int64),))
    with pytest.raises(ValueError, match=r"calcml\.jvp: tangent 0 has shape \(4,\)"):
        cm.jvp(cm.sin, (np.ones(3),), (np.ones(4),))


def test_batched_jvp_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"calcml\.jvp: .*tangent 0 has shape \(\)"):
        cm.jvp(cm.sin, (np.float64(1.0),), (np.float64(1.0),), batched=True)
    with pytest.raises(ValueError, match=r"tangent 1 has shape \(3, 4\) but its primal needs "
                                         r"\(2, 4\) \(primal float64 \(4,\).*batch axis \(2,\)"):
        cm.jvp(lambda a, b: a * b, (np.ones(4), np.ones(4)),
               (np.ones((2, 4)), np.ones((3, 4))), batched=True)


# --- hvp ------------------------------------------------------------------------------------

X = RNG.normal(size=4)
Y = RNG.normal(size=3)
VX = RNG.normal(size=4)
VY = RNG.normal(size=3)


def f2(x, y):
    """f = Σ sin(x) · Σ y³."""
    return cm.sum(cm.sin(x)) * cm.sum(y ** 3)


def f2_grad(x, y):
    return np.cos(x) * np.sum(y ** 3), np.sum(np.sin(x)) * 3 * y ** 2


def _fd_hvp2(eps=1e-6):
    gp = f2_grad(X + eps * VX, Y + eps * VY)
    gm = f2_grad(X - eps * VX, Y - eps * VY)
    return [(a - b) / (2 * eps) for a, b in zip(gp, gm)]


def test_hvp_several_and_container_primals_match_central_differences():
    want = _fd_hvp2()
    hx, hy = cm.hvp(f2, (X, Y), (VX, VY))
    np.testing.assert_allclose(hx, want[0], atol=1e-6)
    np.testing.assert_allclose(hy, want[1], atol=1e-6)
    h = cm.hvp(lambda p: f2(p["a"], p["b"]), ({"a": X, "b": Y},), ({"a": VX, "b": VY},))
    np.testing.assert_allclose(h["a"], want[0], atol=1e-6)
    np.testing.assert_allclose(h["b"], want[1], atol=1e-6)
    h = cm.hvp(lambda p: f2(p[0], p[1]), ([X, Y],), ([VX, VY],))
    np.testing.assert_allclose(h[1], want[1], atol=1e-6)


def test_hvp_matches_closed_form_hessian_times_v():
    a = RNG.normal(size=(4, 4))
    np.testing.assert_allclose(cm.hvp(lambda x: x @ a @ x, (X,), (VX,)), (a + a.T) @ VX,
                               atol=1e-12)
    # f = Σ sin(x) x²: H = diag(-sin x · x² + 4 x cos x + 2 sin x)
    h = -np.sin(X) * X ** 2 + 4 * X * np.cos(X) + 2 * np.sin(X)
    np.testing.assert_allclose(cm.hvp(lambda x: cm.sum(cm.sin(x) * x ** 2), (X,), (VX,)),
                               h * VX, atol=1e-12)


def test_hvp_is_zero_when_the_gradient_does_not_depend_on_x():
    r = cm.hvp(lambda x: cm.sum(x * 3.0), (X,), (VX,))
    assert isinstance(r, np.ndarray) and np.all(r == 0)
    rx, ry = cm.hvp(lambda x, y: cm.sum(x) + cm.sum(y ** 2), (X, Y), (VX, VY))
    assert np.all(rx == 0)
    np.testing.assert_allclose(ry, 2 * VY, atol=1e-12)
    t = cm.tensor(RNG.normal(size=(4, 4)))  # a constant Tensor: no requires_grad
    r = cm.hvp(lambda x: cm.sum(t @ x), (X,), (VX,))
    assert type(r) is np.ndarray and np.all(r == 0)
    r = cm.hvp(lambda x: cm.sum((t @ x) ** 2), (X,), (VX,))
    assert type(r) is np.ndarray
    np.testing.assert_allclose(r, 2 * t.data.T @ t.data @ VX, atol=1e-12)


def test_hvp_float32_keeps_float32_for_every_argument_form():
    # the float64 constant promotes f's value; the product still comes back in float32,
    # as grad gives it, whether there is one primal, several or a container
    w = np.linspace(1.0, 2.0, 4)  # float64
    x32, v32 = X.astype(np.float32), VX.astype(np.float32)
    want = 2 * w * VX
    one = cm.hvp(lambda x: cm.sum(x ** 2 * w), (x32,), (v32,))
    assert one.dtype == np.float32
    two = cm.hvp(lambda x, y: cm.sum(x ** 2 * w) + cm.sum(y ** 2 * w), (x32, x32), (v32, v32))
    assert [r.dtype for r in two] == [np.float32, np.float32]
    tree = cm.hvp(lambda p: cm.sum(p["a"] ** 2 * w), ({"a": x32},), ({"a": v32},))
    assert tree["a"].dtype == np.float32
    for r in (one, two[0], two[1], tree["a"]):
        np.testing.assert_allclose(r, want, rtol=1e-5)


def test_hvp_errors_name_hvp():
    with pytest.raises(ValueError, match=r"calcml\.hvp: tangent 0 has shape \(3,\)"):
        cm.hvp(lambda x: cm.sum(x ** 3), (X,), (np.ones(3),))
    with pytest.raises(ValueError, match=r"calcml\.hvp: the function must return a scalar"):
        cm.hvp(lambda x, y: x * y, (X, X), (VX, VX))
    with pytest.raises(ValueError, match=r"calcml\.hvp: 1 primals but 2 tangents"):
        cm.hvp(lambda x: cm.sum(x ** 3), (X,), (VX, VX))


# --- nesting --------------------------------------------------------------------------------

def test_perturbation_confusion_jvp_inside_jvp():
    # d/dx [x · d/dy (x + y)] = d/dx [x · 1] = 1
    y0 = np.float64(3.0)

    def outer(x):
        return x * cm.jvp(lambda y: x + y, (y0,), (np.float64(1.0),))[1]

    assert cm.jvp(outer, (np.float64(2.0),), (np.float64(1.0),))[1] == 1.0
    assert cm.grad(outer)(np.float64(2.0)) == 1.0


def test_jvp_of_grad_and_grad_of_jvp():
    # f = Σ x⁴/12: ∇f = x³/3, H v = x² v
    g = cm.grad(lambda x: cm.sum(x ** 4) / 12.0)
    np.testing.assert_allclose(cm.jvp(g, (X,), (VX,))[1], X ** 2 * VX, atol=1e-12)
    # jvp of z ↦ Σ z³ along x itself is 3 Σ x³, whose gradient is 9 x²
    h = cm.grad(lambda x: cm.jvp(lambda z: cm.sum(z ** 3), (x,), (x,))[1])
    np.testing.assert_allclose(h(X), 9 * X ** 2, atol=1e-12)
    # batched: the basis directions through z³ give 3x² on the diagonal; Σ of them: grad 6x
    h = cm.grad(lambda x: cm.sum(cm.jvp(lambda z: z ** 3, (x,), (np.eye(4),),
                                        batched=True)[1]))
    np.testing.assert_allclose(h(X), 6 * X, atol=1e-12)

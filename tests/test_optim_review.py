"""Review of cm.optim's penalties, clipping, schedules and chain against closed forms.

Every expected value below is written in plain NumPy (or plain Python math), never computed
by calcml.
"""

import math

import numpy as np
import pytest

import calcml as cm

O = cm.optim


# --- penalties and the proximal step ------------------------------------------------------

def test_penalties_and_soft_threshold_match_closed_forms():
    p = np.array([1.0, -2.0, 0.0, 0.5])
    g = np.array([0.1, 0.2, 0.3, -0.4])
    lam1, lam2 = 0.5, 0.25
    cases = [(O.l2(lam2), g + lam2 * p), (O.l1(lam1), g + lam1 * np.sign(p)),
             (O.elastic_net(lam1, lam2), g + lam1 * np.sign(p) + lam2 * p)]
    for t, want in cases:
        u, _ = t.update(g, t.init(p), p)
        np.testing.assert_allclose(u, want, rtol=1e-15)
    x = np.array([-3.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    np.testing.assert_array_equal(O.soft_threshold(x, 1.0),
                                  np.sign(x) * np.maximum(np.abs(x) - 1.0, 0.0))
    assert O.soft_threshold(x.astype(np.float32), 1.0).dtype == np.float32


def test_soft_threshold_accepts_integer_input():
    # before: NumPy's "Cannot cast ufunc 'subtract' output from float64 to int64"
    x = np.array([2, -3, 0, 1])
    r = O.soft_threshold(x, 0.5)
    assert r.dtype == np.float64
    np.testing.assert_array_equal(r, np.sign(x) * np.maximum(np.abs(x) - 0.5, 0.0))


@pytest.mark.parametrize("make, name", [(lambda: O.l2(0.1), "l2"), (lambda: O.l1(0.1), "l1"),
                                        (lambda: O.elastic_net(0.1, 0.1), "elastic_net")])
def test_penalties_name_integer_parameters(make, name):
    # before: a bare NumPy UFuncTypeError that named neither the transform nor the leaf
    t = make()
    params = [np.ones(2), np.array([1, 2])]
    with pytest.raises(TypeError, match=rf"calcml\.optim\.{name}: parameter leaf 1 has dtype "
                                        r"int64 and shape \(2,\)"):
        t.update([np.ones(2), np.ones(2)], t.init(params), params)


def test_proximal_gradient_is_ista():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 5))
    y = X @ np.array([1.0, 0.0, 0.0, -2.0, 0.0]) + 0.1 * rng.normal(size=20)
    lam, a = 0.5, 0.01
    opt = O.chain(O.scale_by_learning_rate(a), O.proximal_l1(lam, a))
    th, ref = np.zeros(5), np.zeros(5)
    state = opt.init(th)
    for _ in range(200):
        u, state = opt.update(X.T @ (X @ th - y), state, th)
        th = O.apply_updates(th, u)
        z = ref - a * (X.T @ (X @ ref - y))
        ref = np.sign(z) * np.maximum(np.abs(z) - a * lam, 0.0)
    np.testing.assert_allclose(th, ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(th == 0, ref == 0)
    assert (th == 0).sum() >= 2


# --- clipping -----------------------------------------------------------------------------

def test_clip_by_global_norm_closed_form_zero_and_float32():
    g = [np.array([3.0, 0.0]), np.array(4.0), np.array([[1.0, -2.0]])]
    n = np.sqrt(sum(float(np.sum(x * x)) for x in g))
    for c in (0.0, 1.0, n, 100.0):
        u, _ = O.clip_by_global_norm(c).update(g, O.EmptyState())
        for ui, gi in zip(u, g):
            np.testing.assert_allclose(ui, gi * min(1.0, c / n), rtol=1e-15)
    u, _ = O.clip_by_global_norm(0.0).update([np.zeros(3)], O.EmptyState())
    np.testing.assert_array_equal(u[0], np.zeros(3))       # no 0/0
    g32 = np.array([3.0, 4.0], dtype=np.float32)
    u, _ = O.clip_by_global_norm(1.0).update(g32, O.EmptyState())
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, [0.6, 0.8], rtol=1e-6)
    u, _ = O.clip_by_value(1.0).update(np.array([-3.0, 0.5, 2.0], np.float32), O.EmptyState())
    assert u.dtype == np.float32
    np.testing.assert_array_equal(u, [-1.0, 0.5, 1.0])


def test_global_norm_of_integer_leaves_does_not_wrap_around():
    # before: the integer dot product wrapped around: 5.66 for int8 [100, 100], 0 for 2**40
    assert O.global_norm(np.array([100, 100], dtype=np.int8)) == pytest.approx(
        100.0 * math.sqrt(2.0), rel=1e-15)
    assert O.global_norm(np.array([2 ** 40, 0])) == pytest.approx(2.0 ** 40, rel=1e-15)


def test_global_norm_of_python_numbers_and_complex_leaves():
    # before: AttributeError 'float' object has no attribute 'ravel'; complex: domain error
    assert O.global_norm([3.0, 4.0]) == pytest.approx(5.0)
    assert O.global_norm(np.array([3.0 + 4.0j])) == pytest.approx(5.0)
    u, _ = O.clip_by_global_norm(1.0).update([3.0, np.array([4.0])], O.EmptyState())
    np.testing.assert_allclose(u[0], 0.6)
    np.testing.assert_allclose(u[1], [0.8])


def test_global_norm_with_nan_is_nan_whatever_the_order():
    # before: max() over [inf, nan] gave inf, over [nan, inf] gave nan
    a, b = np.array([np.inf]), np.array([np.nan])
    assert math.isnan(O.global_norm([a, b]))
    assert math.isnan(O.global_norm([b, a]))
    assert O.global_norm([np.array([-np.inf]), np.ones(2)]) == math.inf


def test_clipping_names_integer_gradients():
    # before: clip_by_global_norm(100) returned int8 [100, 100] (norm 141) unclipped, and
    # clip_by_value raised NumPy's bare UFuncTypeError
    with pytest.raises(TypeError, match=r"calcml\.optim\.clip_by_global_norm: update leaf 0 "
                                        r"has dtype int8 and shape \(2,\)"):
        O.clip_by_global_norm(100.0).update(np.array([100, 100], np.int8), O.EmptyState())
    with pytest.raises(TypeError, match=r"calcml\.optim\.clip_by_value: update leaf 1 has "
                                        r"dtype int64 and shape \(2,\)"):
        O.clip_by_value(1.0).update([np.ones(2), np.array([5, -5])], O.EmptyState())


# --- schedules ----------------------------------------------------------------------------

def test_schedules_match_closed_forms():
    ks = [0, 1, 2, 5, 9, 10, 11, 25, 100, 10 ** 6]
    cos = math.cos
    checks = [
        (O.exponential_decay(1.0, 0.5, 10), lambda k: 0.5 ** (k / 10)),
        (O.exponential_decay(1.0, 0.5, 10, staircase=True), lambda k: 0.5 ** (k // 10)),
        (O.step_decay(2.0, 10, 0.5), lambda k: 2.0 * 0.5 ** (k // 10)),
        (O.piecewise_constant([10, 20], [1.0, 0.1, 0.01]),
         lambda k: 1.0 if k < 10 else (0.1 if k < 20 else 0.01)),
        (O.cosine_decay(1.0, 10, 0.1),
         lambda k: 0.9 * 0.5 * (1 + cos(math.pi * min(k, 10) / 10)) + 0.1),
        (O.linear_warmup(1.0, 10), lambda k: min(k, 10) / 10),
        (O.warmup_cosine_decay(1.0, 5, 15, 0.1, 0.01),
         lambda k: 0.1 + 0.9 * k / 5 if k < 5
         else 0.01 + 0.99 * 0.5 * (1 + cos(math.pi * min(k - 5, 10) / 10))),
        (O.inverse_time_decay(1.0, 0.5), lambda k: 1.0 / (1 + 0.5 * k)),
        (O.inverse_sqrt(2.0), lambda k: 2.0 / math.sqrt(k + 1)),
        (O.constant(0.3), lambda k: 0.3),
    ]
    for s, f in checks:
        got = [s(k) for k in ks]
        np.testing.assert_allclose(got, [f(k) for k in ks], rtol=1e-13, atol=1e-300,
                                   err_msg=repr(s))
        np.testing.assert_allclose(s(np.array(ks)), got, rtol=1e-15, atol=0)


def test_linear_warmup_errors_name_its_own_arguments():
    # before: "linear_warmup: end_value must be ..." and "transition_steps must be ..."
    with pytest.raises(ValueError, match=r"linear_warmup: peak_value must be .*-1"):
        O.linear_warmup(-1.0, 5)
    with pytest.raises(ValueError, match=r"linear_warmup: warmup_steps must be >= 0"):
        O.linear_warmup(1.0, -5)
    with pytest.raises(ValueError, match=r"linear_schedule: end_value must be"):
        O.linear_schedule(1.0, -1.0, 5)


# --- chain, Optimizer and resuming --------------------------------------------------------

def test_chain_order_matters():
    g = np.array([3.0, -0.2])
    a = O.chain(O.clip_by_value(1.0), O.sgd(0.5))
    b = O.chain(O.sgd(0.5), O.clip_by_value(0.1))
    np.testing.assert_allclose(a.update(g, a.init(g))[0], -0.5 * np.clip(g, -1, 1))
    np.testing.assert_allclose(b.update(g, b.init(g))[0], np.clip(-0.5 * g, -0.1, 0.1))


_A = [np.array([0.3, -1.2, 0.8]), np.array([[0.5, -0.1], [1.5, -0.7]]), np.array(0.7)]


def _grads(ps):
    return [p ** 2 + a for p, a in zip(ps, _A)]


_RULES = {
    "l2+sgd": lambda: O.chain(O.l2(0.1), O.sgd(O.warmup_cosine_decay(0.2, 3, 12, 0.01, 0.001),
                                                momentum=0.9)),
    "l1+adam": lambda: O.chain(O.l1(0.1), O.adam(O.cosine_decay(0.1, 8, 0.1))),
    "elastic_net+rmsprop": lambda: O.chain(O.elastic_net(0.05, 0.1),
                                           O.rmsprop(O.exponential_decay(0.05, 0.5, 4))),
    "global_norm+sgd": lambda: O.chain(O.clip_by_global_norm(0.5),
                                       O.sgd(O.inverse_time_decay(0.1, 0.3), momentum=0.5)),
    "value+adagrad": lambda: O.chain(O.clip_by_value(0.3), O.adagrad(O.step_decay(0.3, 3))),
    "prox": lambda: O.chain(O.scale_by_learning_rate(O.piecewise_constant([3, 6], [.2, .1, .05])),
                            O.proximal_l1(0.3, O.piecewise_constant([3, 6], [.2, .1, .05]))),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rule", sorted(_RULES))
def test_optimizer_matches_functional_path_and_resumes_exactly(rule, dtype):
    make = _RULES[rule]
    p0 = [(0.5 * a).astype(dtype) for a in _A]
    t = make()
    ps = [p.copy() for p in p0]
    state = t.init(ps)
    traj = []
    for _ in range(10):
        u, state = t.update([g.astype(dtype) for g in _grads(ps)], state, ps)
        ps = O.apply_updates(ps, u)
        traj.append([p.copy() for p in ps])
    assert all(p.dtype == dtype for p in ps)

    def run(tensors, opt, steps):
        for k in steps:
            for x, g in zip(tensors, _grads([x.data for x in tensors])):
                x.grad = g.astype(dtype)
            opt.step()
            for x, want in zip(tensors, traj[k]):
                assert x.data.dtype == dtype
                np.testing.assert_array_equal(x.data, want)

    ts = [cm.tensor(p.copy(), requires_grad=True) for p in p0]
    opt = O.Optimizer(ts, make())
    run(ts, opt, range(5))
    saved, data = opt.state_dict(), [x.data.copy() for x in ts]
    run(ts, opt, range(5, 10))
    ts2 = [cm.tensor(d, requires_grad=True) for d in data]
    opt2 = O.Optimizer(ts2, make())
    opt2.load_state_dict(saved)
    run(ts2, opt2, range(5, 10))

"""Tests of cm.optim: every update rule against the chapter's formula computed by hand, the
schedules, chains, clipping, regularization (with the proximal step's exact zeros), validation,
dtypes, the Optimizer over Tensors and resuming from a state_dict."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

import calcml as cm
from calcml import backend
from calcml._core.tree import flatten
from calcml.optim.base import run_update

O = cm.optim


# --- reference implementations, written from the chapter's formulas (9.1, 9.5) ---------------

def _tree(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((3, 2)).astype(dtype),
            "b": rng.standard_normal(2).astype(dtype)}


def _grad_seq(n, seed=1, dtype=np.float64):
    return [_tree(seed + 10 * i, dtype) for i in range(n)]


def ref_run(rule, theta0, grads, **hp):
    """θ after each step, one leaf at a time, by the chapter's formulas."""
    out = {}
    for key, th in theta0.items():
        th = th.copy()
        buf = np.zeros_like(th)
        m = np.zeros_like(th)
        v = np.zeros_like(th)
        traj = []
        for k, gt in enumerate(grads, start=1):
            g = gt[key]
            lr = hp["lr"]
            if rule == "sgd":
                th = th - lr * g
            elif rule == "momentum":
                buf = hp["mu"] * buf + g
                th = th - lr * buf
            elif rule == "nesterov":
                buf = hp["mu"] * buf + g
                th = th - lr * (g + hp["mu"] * buf)
            elif rule == "adam":
                b1, b2, eps = hp["b1"], hp["b2"], hp["eps"]
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g**2
                m_hat = m / (1 - b1**k)
                v_hat = v / (1 - b2**k)
                th = th - lr / (np.sqrt(v_hat) + eps) * m_hat
            elif rule == "rmsprop":
                beta, eps = hp["decay"], hp["eps"]
                v = beta * v + (1 - beta) * g**2
                th = th - lr / (np.sqrt(v) + eps) * g
            elif rule == "adagrad":
                v = v + g**2
                th = th - lr / (np.sqrt(v) + hp["eps"]) * g
            traj.append(th)
        out[key] = traj
    return [{k: out[k][i] for k in theta0} for i in range(len(grads))]


RULES = {
    "sgd": (lambda: O.sgd(0.1), dict(lr=0.1)),
    "momentum": (lambda: O.sgd(0.05, momentum=0.9), dict(lr=0.05, mu=0.9)),
    "nesterov": (lambda: O.sgd(0.05, momentum=0.8, nesterov=True), dict(lr=0.05, mu=0.8)),
    "adam": (lambda: O.adam(0.01, b1=0.8, b2=0.95, eps=1e-3),
             dict(lr=0.01, b1=0.8, b2=0.95, eps=1e-3)),
    "rmsprop": (lambda: O.rmsprop(0.01, decay=0.7, eps=1e-4), dict(lr=0.01, decay=0.7, eps=1e-4)),
    "adagrad": (lambda: O.adagrad(0.3, eps=1e-6), dict(lr=0.3, eps=1e-6)),
}


def _run(opt, theta0, grads):
    params = {k: v.copy() for k, v in theta0.items()}
    state = opt.init(params)
    traj = []
    for g in grads:
        updates, state = opt.update(g, state, params)
        params = O.apply_updates(params, updates)
        traj.append(params)
    return traj, state


@pytest.mark.parametrize("rule", sorted(RULES))
def test_update_rule_matches_chapter_formula(rule):
    make, hp = RULES[rule]
    theta0, grads = _tree(), _grad_seq(6)
    traj, _ = _run(make(), theta0, grads)
    ref = ref_run(rule, theta0, grads, **hp)
    for step, (a, b) in enumerate(zip(traj, ref)):
        for k in theta0:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-14,
                                       err_msg=f"{rule}, step {step + 1}, leaf {k}")
    # the steps really moved θ (a no-op optimizer would fail the comparison above anyway)
    assert not np.allclose(traj[-1]["w"], theta0["w"])


def test_adam_first_steps_by_hand():
    # g = 2 then 1 on θ = 0, b1 = 0.5, b2 = 0.5, eps = 0, lr = 1:
    # k=1: m = 1, v = 2, m̂ = 2, v̂ = 4 -> θ = -2/2 = -1
    # k=2: m = 1, v = 1.5, m̂ = 1/0.75, v̂ = 1.5/0.75 = 2 -> θ = -1 - (4/3)/√2
    opt = O.adam(1.0, b1=0.5, b2=0.5, eps=0.0)
    theta = np.array(0.0)
    state = opt.init(theta)
    u, state = opt.update(np.array(2.0), state, theta)
    theta = O.apply_updates(theta, u)
    assert float(theta) == pytest.approx(-1.0, abs=1e-15)
    u, state = opt.update(np.array(1.0), state, theta)
    theta = O.apply_updates(theta, u)
    assert float(theta) == pytest.approx(-1.0 - (4.0 / 3.0) / math.sqrt(2.0), abs=1e-14)
    assert O.step_count(state) == 2


def test_momentum_and_nesterov_by_hand():
    # g = 1 at every step, lr = 1, mu = 0.5: buffers 1, 1.5, 1.75
    for nesterov, expected in ((False, [-1.0, -2.5, -4.25]), (True, [-1.5, -3.25, -5.125])):
        opt = O.sgd(1.0, momentum=0.5, nesterov=nesterov)
        theta = np.array([0.0])
        state = opt.init(theta)
        got = []
        for _ in range(3):
            u, state = opt.update(np.array([1.0]), state, theta)
            theta = O.apply_updates(theta, u)
            got.append(float(theta[0]))
        assert got == pytest.approx(expected, abs=1e-15), nesterov


# chains whose links all work leaf by leaf (Optimizer.step runs them one parameter at a
# time), and one with a link that needs the whole tree (clip_by_global_norm)
CHAINS = {
    "l2+momentum": lambda: O.chain(O.l2(0.1), O.sgd(0.05, momentum=0.9)),
    "elastic_net+adam": lambda: O.chain(O.elastic_net(0.01, 0.1), O.adam(0.01)),
    "l1+clip_by_value+rmsprop": lambda: O.chain(O.l1(0.01), O.clip_by_value(0.5),
                                                O.rmsprop(0.01)),
    "scale+identity+schedule": lambda: O.chain(O.scale(0.5), O.identity(),
                                               O.scale_by_learning_rate(O.exponential_decay(
                                                   0.1, 0.5, 2))),
    "nested chains": lambda: O.chain(O.chain(O.trace(0.5), O.scale(2.0)),
                                     O.adagrad(O.inverse_sqrt(0.1))),
    "proximal_gradient": lambda: O.proximal_gradient(O.inverse_time_decay(0.1, 0.5), 0.3),
    "clip_by_global_norm+nesterov": lambda: O.chain(O.clip_by_global_norm(0.5),
                                                    O.sgd(0.05, momentum=0.8, nesterov=True)),
    # sgd with momentum runs its two links as one kernel per parameter in Optimizer.step
    "momentum+schedule": lambda: O.sgd(O.exponential_decay(0.1, 0.5, 2), momentum=0.9),
    "nesterov+schedule": lambda: O.sgd(O.inverse_time_decay(0.1, 0.5), momentum=0.7,
                                       nesterov=True),
    # and so does adam (scale_by_adam's kernel, the rate, θ += u: one call for the step)
    "adam+schedule": lambda: O.adam(O.exponential_decay(0.1, 0.5, 2), b1=0.7, b2=0.9),
}


@pytest.mark.parametrize("rule", sorted(RULES) + sorted(CHAINS))
def test_optimizer_binding_follows_the_functional_trajectory_bitwise(rule):
    # Optimizer.step updates its state buffers in place, one parameter at a time where every
    # link allows it; the numbers must not change.
    make = RULES[rule][0] if rule in RULES else CHAINS[rule]
    leafwise = "global_norm" not in rule
    assert (make().update.start is not None) == leafwise
    theta0, grads = _tree(), _grad_seq(5)
    traj, state = _run(make(), theta0, grads)
    keys = sorted(theta0)
    tensors = [cm.tensor(theta0[k], requires_grad=True) for k in keys]
    opt = O.Optimizer(tensors, make())
    for g in grads:
        for t, k in zip(tensors, keys):
            t.grad = g[k].copy()
        opt.step()
    for t, k in zip(tensors, keys):
        np.testing.assert_array_equal(t.data, traj[-1][k])
        assert not np.array_equal(t.data, theta0[k])
    # the step count advanced once per step, not once per parameter
    assert O.step_count(opt.state) == O.step_count(state) == 5
    # and the state holds the functional one's numbers (over a list of the dict's leaves,
    # in the dict's sorted key order)
    got, want = flatten(opt.state)[0], flatten(state)[0]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


# --- purity of the functional API ------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: O.sgd(0.1, momentum=0.9),
    lambda: O.adam(0.1),
    lambda: O.chain(O.clip_by_global_norm(1e9), O.scale(2.0)),     # passes grads through
    lambda: O.chain(O.clip_by_global_norm(0.5), O.l2(0.1), O.rmsprop(0.1)),
    lambda: O.chain(O.trace(0.9), O.clip_by_value(0.1), O.adagrad(0.1)),
    lambda: O.proximal_gradient(0.1, 0.5),
])
def test_update_never_writes_into_its_arguments(make):
    opt = make()
    params, g = _tree(0), _tree(5)
    state = opt.init(params)
    for _ in range(2):
        p_copy = {k: v.copy() for k, v in params.items()}
        g_copy = {k: v.copy() for k, v in g.items()}
        s_leaves = [np.array(x, copy=True) for x in cm.tree_flatten(state)[0]]
        updates, new_state = opt.update(g, state, params)
        for k in params:
            np.testing.assert_array_equal(params[k], p_copy[k])
            np.testing.assert_array_equal(g[k], g_copy[k])
        for a, b in zip(cm.tree_flatten(state)[0], s_leaves):
            np.testing.assert_array_equal(a, b)   # the old state is still valid
        params, state = O.apply_updates(params, updates), new_state
    assert not np.allclose(params["w"], _tree(0)["w"])


def test_chain_in_place_fusion_keeps_values():
    # chain(scale_by_adam, scale_by_learning_rate) scales Adam's fresh output in place: same
    # numbers as running the two links one after the other by hand.
    params, g = _tree(0), _tree(3)
    a, lr = O.scale_by_adam(), O.scale_by_learning_rate(0.1)
    sa, sl = a.init(params), lr.init(params)
    u1, sa = a.update(g, sa, params)
    u1_copy = {k: v.copy() for k, v in u1.items()}
    u2, sl = lr.update(u1, sl, params)
    for k in params:
        np.testing.assert_array_equal(u1[k], u1_copy[k])   # separately, no link wrote in place
    ch = O.adam(0.1)
    u3, _ = ch.update(g, ch.init(params), params)
    for k in params:
        np.testing.assert_array_equal(u3[k], u2[k])


# --- schedules --------------------------------------------------------------------------------

def test_schedules_values():
    assert O.constant(0.3)(0) == 0.3 and O.constant(0.3)(1000) == 0.3
    s = O.inverse_time_decay(1.0, 0.5)
    assert [s(k) for k in range(4)] == pytest.approx([1.0, 1 / 1.5, 0.5, 1 / 2.5])
    s = O.inverse_sqrt(2.0)
    assert [s(0), s(3), s(15)] == pytest.approx([2.0, 1.0, 0.5])
    s = O.exponential_decay(1.0, 0.5, transition_steps=2)
    assert [s(0), s(1), s(4)] == pytest.approx([1.0, 0.5**0.5, 0.25])
    s = O.exponential_decay(1.0, 0.5, transition_steps=2, staircase=True)
    assert [s(1), s(2), s(3)] == pytest.approx([1.0, 0.5, 0.5])
    s = O.step_decay(1.0, step_size=10, gamma=0.1)
    assert [s(9), s(10), s(25)] == pytest.approx([1.0, 0.1, 0.01])
    s = O.piecewise_constant([10, 20], [1.0, 0.1, 0.01])
    assert [s(0), s(9), s(10), s(19), s(20), s(99)] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    s = O.cosine_decay(1.0, 10)
    assert [s(0), s(5), s(10), s(20)] == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-15)
    s = O.cosine_decay(2.0, 10, alpha=0.1)
    assert [s(0), s(10)] == pytest.approx([2.0, 0.2])
    s = O.linear_warmup(1.0, 4)
    assert [s(0), s(1), s(4), s(100)] == pytest.approx([0.0, 0.25, 1.0, 1.0])
    s = O.linear_schedule(1.0, 0.0, 10)
    assert [s(0), s(5), s(10), s(11)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    s = O.warmup_cosine_decay(1.0, warmup_steps=5, decay_steps=15, end_value=0.1)
    assert [s(0), s(5), s(10), s(15), s(30)] == pytest.approx([0.0, 1.0, 0.55, 0.1, 0.1])
    assert isinstance(O.inverse_sqrt(1.0)(3), float)
    assert "inverse_time_decay(init_value=1.0, beta=0.5)" == repr(O.inverse_time_decay(1, 0.5))


@pytest.mark.parametrize("sched", [
    O.constant(0.1), O.inverse_time_decay(1.0, 0.3), O.inverse_sqrt(1.0),
    O.exponential_decay(1.0, 0.9, 3, staircase=True), O.step_decay(1.0, 4), O.cosine_decay(1.0, 7),
    O.piecewise_constant([3, 8], [1.0, 0.5, 0.1]), O.linear_warmup(1.0, 5),
    O.warmup_cosine_decay(1.0, 3, 12, init_value=0.1),
])
def test_schedules_accept_arrays(sched):
    k = np.arange(20)
    r = sched(k)
    assert isinstance(r, np.ndarray) and r.shape == (20,)
    np.testing.assert_allclose(r, [sched(int(i)) for i in k], rtol=1e-15)


def test_schedule_drives_the_step_and_is_readable_from_the_state():
    sched = O.inverse_time_decay(0.5, 1.0)
    opt = O.sgd(sched)
    theta = np.zeros(2)
    state = opt.init(theta)
    assert O.current_learning_rate(state) == 0.5            # the rate the first step will use
    g = np.array([1.0, -2.0])
    for k in range(4):
        u, state = opt.update(g, state, theta)
        np.testing.assert_allclose(u, -sched(k) * g, rtol=1e-15)
        assert O.current_learning_rate(state) == pytest.approx(sched(k))
        assert O.step_count(state) == k + 1
        theta = O.apply_updates(theta, u)
    bad = O.sgd(lambda k: 0.1 - 0.1 * k)                    # negative from k = 2
    s = bad.init(theta)
    for _ in range(2):
        _, s = bad.update(g, s, theta)
    with pytest.raises(ValueError, match=r"scale_by_learning_rate.*-0\.1"):
        bad.update(g, s, theta)


def test_schedule_validation():
    with pytest.raises(ValueError, match=r"inverse_time_decay.*beta.*-1"):
        O.inverse_time_decay(1.0, -1)
    with pytest.raises(ValueError, match="cosine_decay.*decay_steps"):
        O.cosine_decay(1.0, 0)
    with pytest.raises(ValueError, match="piecewise_constant"):
        O.piecewise_constant([5, 3], [1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="piecewise_constant"):
        O.piecewise_constant([5], [1.0])
    with pytest.raises(ValueError, match="warmup_cosine_decay"):
        O.warmup_cosine_decay(1.0, 10, 10)
    with pytest.raises(ValueError, match=r"inverse_sqrt.*-2"):
        O.inverse_sqrt(-2.0)


# --- chains -----------------------------------------------------------------------------------

def test_chain_order_matters():
    g = np.array([3.0, 0.2])
    a = O.chain(O.clip_by_value(1.0), O.scale(2.0))    # clip, then double: [2, 0.4]
    b = O.chain(O.scale(2.0), O.clip_by_value(1.0))    # double, then clip: [1, 0.4]
    ua, sa = a.update(g, a.init(g), g)
    ub, _ = b.update(g, b.init(g), g)
    np.testing.assert_allclose(ua, [2.0, 0.4])
    np.testing.assert_allclose(ub, [1.0, 0.4])
    assert isinstance(sa, tuple) and len(sa) == 2
    nested = O.chain(O.chain(O.clip_by_value(1.0)), O.identity(), O.scale(2.0))
    un, _ = nested.update(g, nested.init(g), g)
    np.testing.assert_array_equal(un, ua)


def test_chain_state_layout_and_errors():
    opt = O.chain(O.clip_by_global_norm(1.0), O.adam(1e-3))
    state = opt.init([np.zeros(2)])
    assert isinstance(state[0], O.EmptyState)
    assert isinstance(state[1][0], O.ScaleByAdamState)
    assert isinstance(state[1][1], O.ScaleByLearningRateState)
    assert O.current_learning_rate(state) == 1e-3
    with pytest.raises(ValueError, match="chain"):
        opt.update([np.zeros(2)], state[1], None)
    with pytest.raises(TypeError, match="chain: argument 1"):
        O.chain(O.scale(1.0), 0.1)


def test_ownership_flags_of_run_update():
    # own_updates: the link may write into the incoming arrays
    g = np.array([1.0, 2.0])
    t = O.scale(3.0)
    u, _, fresh = run_update(t, g, t.init(g), None, own_updates=True)
    assert u is g and fresh
    np.testing.assert_array_equal(g, [3.0, 6.0])
    # own_state: buffers are updated in place (what Optimizer does), same values as pure
    opt = O.sgd(0.1, momentum=0.9)
    theta = np.zeros(2)
    st = opt.init(theta)
    buf = st[0].trace
    pure_u, pure_st = opt.update(np.ones(2), st, theta)
    assert pure_st[0].trace is not buf and np.all(buf == 0.0)
    u, st2, fresh = run_update(opt, np.ones(2), st, theta, own_state=True)
    assert st2[0].trace is buf and np.all(buf == 1.0)
    np.testing.assert_array_equal(u, pure_u)
    assert fresh                      # the learning-rate link allocated the output
    # trace alone returns its own buffer: not fresh, so a chain never writes into it
    _, st3, fresh = run_update(O.trace(0.9), np.ones(2), O.trace(0.9).init(theta))
    assert not fresh


def test_user_transform_without_ownership_protocol_is_safe():
    # A plain GradientTransformation (no .run) in a chain: its output is never written to.
    keep = {}

    def update(u, s, p=None):
        keep["u"] = u
        return u, s

    mine = O.GradientTransformation(lambda p: O.EmptyState(), update)
    opt = O.chain(O.scale(3.0), mine, O.scale_by_learning_rate(0.5))
    g = np.array([1.0, 2.0])
    u, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(u, [-1.5, -3.0])
    np.testing.assert_allclose(keep["u"], [3.0, 6.0])    # not overwritten by the next link


# --- clipping ---------------------------------------------------------------------------------

def test_clip_by_global_norm():
    g = {"a": np.array([3.0]), "b": np.array([[4.0]])}             # ‖g‖ = 5 over both leaves
    assert O.global_norm(g) == pytest.approx(5.0)
    opt = O.clip_by_global_norm(1.0)
    u, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(u["a"], [0.6])
    np.testing.assert_allclose(u["b"], [[0.8]])
    assert O.global_norm(u) == pytest.approx(1.0)
    u, _ = O.clip_by_global_norm(10.0).update(g, O.EmptyState())   # below: unchanged
    np.testing.assert_array_equal(u["a"], g["a"])
    np.testing.assert_array_equal(u["b"], g["b"])


def test_clip_zero_gradient_gives_no_nan():
    z = [np.zeros(3), np.zeros((2, 2))]
    for c in (1.0, 0.0):
        u, _ = O.clip_by_global_norm(c).update(z, O.EmptyState())
        assert all(np.all(x == 0.0) and np.all(np.isfinite(x)) for x in u)
    opt = O.chain(O.clip_by_global_norm(1.0), O.adam(0.1))
    state = opt.init(z)
    u, state = opt.update(z, state, z)
    assert all(np.all(x == 0.0) for x in u)
    assert all(np.all(np.isfinite(x)) for x in cm.tree_flatten(state)[0])


def test_global_norm_survives_float32_overflow():
    g = np.full(4, 1e20, dtype=np.float32)          # Σg² overflows float32
    assert O.global_norm(g) == pytest.approx(2e20, rel=1e-6)
    u, _ = O.clip_by_global_norm(1.0).update(g, O.EmptyState())
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, 0.5, rtol=1e-6)


def test_clip_by_value():
    g = [np.array([-3.0, -0.5, 0.0, 0.7, 9.0])]
    u, _ = O.clip_by_value(1.0).update(g, O.EmptyState())
    np.testing.assert_array_equal(u[0], [-1.0, -0.5, 0.0, 0.7, 1.0])
    assert g[0][0] == -3.0


# --- regularization ---------------------------------------------------------------------------

def test_l2_l1_elastic_net_add_the_penalty_gradient():
    theta = np.array([2.0, -1.0, 0.0])
    g = np.array([0.5, 0.5, 0.5])
    cases = [
        (O.l2(0.1), g + 0.1 * theta),
        (O.l1(0.1), g + 0.1 * np.array([1.0, -1.0, 0.0])),
        (O.elastic_net(0.1, 0.3), g + 0.1 * np.sign(theta) + 0.3 * theta),
    ]
    for t, expected in cases:
        u, _ = t.update(g, t.init(theta), theta)
        np.testing.assert_allclose(u, expected, rtol=1e-15)
    # in a chain with sgd: θ ← θ - α (g + λθ), the chapter's L2 update rule
    opt = O.chain(O.l2(0.1), O.sgd(0.5))
    u, _ = opt.update(g, opt.init(theta), theta)
    np.testing.assert_allclose(O.apply_updates(theta, u), theta - 0.5 * (g + 0.1 * theta))
    with pytest.raises(ValueError, match="l2: update needs params"):
        O.l2(0.1).update(g, O.EmptyState())


def test_soft_threshold():
    x = np.array([-3.0, -0.5, 0.0, 0.2, 1.5])
    np.testing.assert_array_equal(O.soft_threshold(x, 1.0), [-2.0, 0.0, 0.0, 0.0, 0.5])


def _lasso_problem():
    rng = np.random.default_rng(0)
    n, d = 60, 10
    X = rng.standard_normal((n, d))
    beta = np.zeros(d)
    beta[[0, 3, 7]] = [2.0, -1.5, 1.0]
    y = X @ beta + 0.1 * rng.standard_normal(n)
    lam = 0.1
    L = np.linalg.eigvalsh(X.T @ X / n).max()
    return X, y, lam, 1.0 / L


def _lasso_grad(X, y, theta):
    return X.T @ (X @ theta - y) / len(y)     # f = ‖Xθ - y‖² / (2n)


def test_proximal_l1_gives_exact_zeros_where_subgradient_never_does():
    X, y, lam, alpha = _lasso_problem()
    d = X.shape[1]
    runs = {}
    for name, opt in (("subgradient", O.chain(O.l1(lam), O.sgd(alpha))),
                      ("proximal", O.proximal_gradient(alpha, lam))):
        theta = np.zeros(d)
        state = opt.init(theta)
        for _ in range(3000):
            u, state = opt.update(_lasso_grad(X, y, theta), state, theta)
            theta = O.apply_updates(theta, u)
        runs[name] = theta
    assert np.count_nonzero(runs["subgradient"] == 0.0) == 0          # never exactly zero
    zeros = runs["proximal"] == 0.0
    assert np.count_nonzero(zeros) >= 5                                # the true support is 3
    assert not zeros[[0, 3, 7]].any()
    # the proximal iterate is the Lasso solution (scikit-learn's objective is the same)
    from sklearn.linear_model import Lasso

    ref = Lasso(alpha=lam, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(X, y).coef_
    np.testing.assert_allclose(runs["proximal"], ref, atol=1e-6)
    np.testing.assert_array_equal(runs["proximal"] == 0.0, ref == 0.0)
    # the subgradient iterate hovers around the zeros with entries of size ~αλ
    assert np.abs(runs["subgradient"][zeros]).max() < 5 * alpha * lam


def test_proximal_l1_after_a_chain_and_in_place_path_agree():
    X, y, lam, alpha = _lasso_problem()
    opt = O.chain(O.scale_by_learning_rate(alpha), O.proximal_l1(lam, alpha))
    theta = np.zeros(X.shape[1])
    t = cm.tensor(theta, requires_grad=True)
    bound = O.Optimizer([t], opt)
    state = opt.init(theta)
    for _ in range(300):
        g = _lasso_grad(X, y, theta)
        u, state = opt.update(g, state, theta)
        theta = O.apply_updates(theta, u)
        t.grad = _lasso_grad(X, y, t.data)
        bound.step()
    np.testing.assert_array_equal(t.data, theta)
    assert np.count_nonzero(theta == 0.0) >= 5


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("make, pattern", [
    (lambda: O.sgd(-0.1), r"sgd: learning_rate .*-0\.1"),
    (lambda: O.sgd(0.1, momentum=-0.5), r"sgd: momentum .*-0\.5"),
    (lambda: O.adam(-1e-3), r"adam: learning_rate .*-0\.001"),
    (lambda: O.adam(1e-3, b1=1.0), r"adam: b1 must be in \[0, 1\), got 1\.0"),
    (lambda: O.adam(1e-3, b2=-0.1), r"adam: b2 .*-0\.1"),
    (lambda: O.adam(1e-3, eps=-1e-8), r"adam: eps .*-1e-08"),
    (lambda: O.rmsprop(1e-3, decay=1.5), r"rmsprop: decay .*1\.5"),
    (lambda: O.rmsprop(1e-3, eps=-1.0), r"rmsprop: eps .*-1\.0"),
    (lambda: O.adagrad(-2.0), r"adagrad: learning_rate .*-2\.0"),
    (lambda: O.adagrad(0.1, eps=-1.0), r"adagrad: eps .*-1\.0"),
    (lambda: O.clip_by_global_norm(-1.0), r"clip_by_global_norm: max_norm .*-1\.0"),
    (lambda: O.clip_by_value(-0.5), r"clip_by_value: max_value .*-0\.5"),
    (lambda: O.l2(-1e-4), r"l2: weight .*-0\.0001"),
    (lambda: O.l1(-1.0), r"l1: weight .*-1\.0"),
    (lambda: O.elastic_net(0.1, -0.2), r"elastic_net: l2_weight .*-0\.2"),
    (lambda: O.proximal_l1(-1.0, 0.1), r"proximal_l1: weight .*-1\.0"),
    (lambda: O.trace(-0.9), r"trace: decay .*-0\.9"),
    (lambda: O.scale_by_adam(b1=0.9, b2=1.0), r"scale_by_adam: b2 .*1\.0"),
    (lambda: O.scale_by_learning_rate(float("nan")), r"scale_by_learning_rate: learning_rate"),
    (lambda: O.scale_by_learning_rate(float("inf")), r"scale_by_learning_rate: learning_rate"),
])
def test_invalid_hyperparameters_are_refused_at_construction(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_non_numbers_are_refused():
    with pytest.raises(TypeError, match="adam: b1 must be a real number"):
        O.adam(1e-3, b1="0.9")
    with pytest.raises(TypeError, match="l2: weight"):
        O.l2(np.ones(2))


def test_tree_mismatch_is_refused_at_update():
    params = [np.zeros(3), np.zeros((2, 2))]
    opt = O.adam(1e-3)
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"scale_by_adam: the gradient tree \[\*\] .*\[\*, \*\]"):
        opt.update([np.zeros(3)], state, None)
    with pytest.raises(ValueError, match=r"\(3,\), \(2, 3\)\].*\(3,\), \(2, 2\)\]"):
        opt.update([np.zeros(3), np.zeros((2, 3))], state, None)
    with pytest.raises(ValueError, match=r"gradient tree \{'a': \*, 'b': \*\}"):
        opt.update({"a": np.zeros(3), "b": np.zeros((2, 2))}, state, None)
    # stateless links check against params; apply_updates checks too
    with pytest.raises(ValueError, match=r"l1: the gradient shapes"):
        O.l1(0.1).update([np.zeros(3), np.zeros(2)], O.EmptyState(), params)
    with pytest.raises(ValueError, match=r"apply_updates: the updates tree"):
        O.apply_updates(params, [np.zeros(3)])
    with pytest.raises(ValueError, match=r"apply_updates: the updates shapes"):
        O.apply_updates(params, [np.zeros(3), np.zeros(4)])
    with pytest.raises(TypeError, match="scale_by_adam: expected a ScaleByAdamState"):
        O.scale_by_adam().update(params, O.trace(0.9).init(params))


# --- dtypes, shapes, backends -----------------------------------------------------------------

ALL = {
    "sgd": lambda: O.sgd(0.1),
    "momentum": lambda: O.sgd(0.1, momentum=0.9),
    "nesterov": lambda: O.sgd(O.cosine_decay(0.1, 10), momentum=0.9, nesterov=True),
    "adam": lambda: O.adam(O.inverse_sqrt(1e-2)),
    "rmsprop": lambda: O.rmsprop(1e-2),
    "adagrad": lambda: O.adagrad(1e-2),
    "clip+adam": lambda: O.chain(O.clip_by_global_norm(0.1), O.adam(1e-2)),
    "clip_value+l2+sgd": lambda: O.chain(O.clip_by_value(0.1), O.l2(1e-2), O.sgd(0.1)),
    "elastic_net+rmsprop": lambda: O.chain(O.elastic_net(1e-3, 1e-3), O.rmsprop(1e-2)),
    "proximal": lambda: O.proximal_gradient(0.1, 0.5),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_float32_stays_float32(name):
    opt = ALL[name]()
    params, grads = _tree(0, np.float32), _grad_seq(3, dtype=np.float32)
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update(g, state, params)
        assert all(u.dtype == np.float32 for u in cm.tree_flatten(updates)[0])
        params = O.apply_updates(params, updates)
    assert all(p.dtype == np.float32 for p in params.values())
    for leaf in cm.tree_flatten(state)[0]:
        assert leaf.dtype in (np.float32, np.int64, np.float64)
        if leaf.ndim:   # per-parameter buffers are float32; counts and the rate are 0-d
            assert leaf.dtype == np.float32
    t = cm.tensor(np.ones(4, dtype=np.float32), requires_grad=True)
    bound = O.Optimizer([t], ALL[name]())
    t.grad = np.full(4, 0.5, dtype=np.float32)
    bound.step()
    assert t.data.dtype == np.float32 and not np.array_equal(t.data, np.ones(4))


@pytest.mark.parametrize("name", sorted(ALL))
def test_scalar_and_nested_trees(name):
    opt = ALL[name]()
    params = {"layer": [np.array(1.5), (np.ones((2, 1)),)], "bias": np.array(-0.5)}
    state = opt.init(params)
    g = cm.tree_map(lambda p: p * 0 + 0.3, params)
    for _ in range(2):
        u, state = opt.update(g, state, params)
        params = O.apply_updates(params, u)
    assert isinstance(params["layer"][1], tuple)
    assert isinstance(params["bias"], np.ndarray) and params["bias"].shape == ()
    if name != "proximal":   # (the proximal step also shrinks toward 0, against this)
        assert float(params["bias"]) < -0.5 - 1e-6    # moved against the gradient
    assert float(params["layer"][0]) != 1.5


@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a GPU")
@pytest.mark.parametrize("name", sorted(ALL))
def test_cupy_matches_numpy(name):  # pragma: no cover - needs a GPU
    import cupy

    params, grads = _tree(0), _grad_seq(3)
    traj, _ = _run(ALL[name](), params, grads)
    gpu_params = {k: cupy.asarray(v) for k, v in params.items()}
    opt = ALL[name]()
    state = opt.init(gpu_params)
    for g in grads:
        u, state = opt.update({k: cupy.asarray(v) for k, v in g.items()}, state, gpu_params)
        gpu_params = O.apply_updates(gpu_params, u)
    for k in params:
        assert isinstance(gpu_params[k], cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(gpu_params[k]), traj[-1][k], rtol=1e-10)


# --- the Optimizer over Tensors ---------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: O.sgd(0.1, momentum=0.9),
                                  lambda: O.adam(0.05),
                                  lambda: O.rmsprop(O.cosine_decay(0.02, 1500))])
def test_optimizer_trains_linear_regression_to_least_squares(make):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((100, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.7 + 0.1 * rng.standard_normal(100)
    w = cm.tensor(np.zeros(3), requires_grad=True)
    b = cm.tensor(0.0, requires_grad=True)
    opt = O.Optimizer([w, b], make())
    Xt, yt = cm.tensor(X), cm.tensor(y)
    for _ in range(1500):
        loss = ((Xt @ w + b - yt) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert w.grad is not None
    opt.zero_grad()
    assert w.grad is None and b.grad is None
    sol = np.linalg.lstsq(np.c_[X, np.ones(100)], y, rcond=None)[0]
    np.testing.assert_allclose(w.data, sol[:3], atol=1e-3)
    assert float(b.data) == pytest.approx(sol[3], abs=1e-3)
    assert opt.step_count == 1500
    assert opt.learning_rate > 0


def test_optimizer_errors_and_missing_grads():
    w = cm.tensor(np.ones(2), requires_grad=True)
    v = cm.tensor(np.ones(3), requires_grad=True)
    opt = O.Optimizer([w, v], O.sgd(0.5, momentum=0.5))
    with pytest.raises(RuntimeError, match="backward"):
        opt.step()
    w.grad = np.ones(2)                # v has no gradient: it counts as zero
    opt.step()
    np.testing.assert_allclose(w.data, [0.5, 0.5])
    np.testing.assert_array_equal(v.data, np.ones(3))
    with pytest.raises(TypeError, match="not a cm.Tensor"):
        O.Optimizer([np.ones(2)], O.sgd(0.1))
    with pytest.raises(ValueError, match="requires_grad"):
        O.Optimizer([cm.tensor(np.ones(2))], O.sgd(0.1))
    with pytest.raises(ValueError, match="twice"):
        O.Optimizer([w, w], O.sgd(0.1))
    with pytest.raises(TypeError, match="GradientTransformation"):
        O.Optimizer([w], O.constant(0.1))


def test_optimizer_parameter_frozen_after_binding_gets_no_gradient():
    # requires_grad turned off after the optimizer was made: the tensor has no .grad, so
    # step() treats it as a zero gradient (its momentum still moves it) and zero_grad skips it
    w = cm.tensor(np.ones(2), requires_grad=True)
    v = cm.tensor(np.ones(3), requires_grad=True)
    opt = O.Optimizer([w, v], O.sgd(0.5, momentum=0.5))
    (cm.sum(w * w) + cm.sum(v)).backward()
    opt.step()
    v.requires_grad = False
    opt.zero_grad()
    assert w.grad is None and v.grad is None
    cm.sum(w * w).backward()
    opt.step()
    # w: 1 - 0.5·2 = 0, then buffer 0.5·2 + 0 = 1, so 0 - 0.5·1; v: 1 - 0.5, then 0.5 - 0.5·0.5
    np.testing.assert_allclose(w.data, [-0.5, -0.5])
    np.testing.assert_allclose(v.data, np.full(3, 0.5 - 0.5 * 0.5 * 1.0))


def test_optimizer_step_reports_a_parameter_whose_shape_changed():
    w = cm.tensor(np.ones(3), requires_grad=True)
    opt = O.Optimizer([w], O.adam(0.1))
    w.data, w.grad = np.ones(4), np.ones(4)
    with pytest.raises(ValueError, match=r"scale_by_adam.*\(4,\).*\(3,\)"):
        opt.step()
    np.testing.assert_array_equal(w.data, np.ones(4))  # nothing was written
    assert opt.step_count == 0
    w.data, w.grad = np.ones(3), np.ones(4)           # a gradient of the wrong shape
    with pytest.raises(ValueError, match=r"\(4,\).*\(3,\)"):
        opt.step()
    # a stateless rule has nothing shaped to disagree with: the new shape is simply used
    v = cm.tensor(np.ones(2), requires_grad=True)
    opt = O.Optimizer([v], O.sgd(0.5))
    v.data, v.grad = np.ones(5), np.ones(5)
    opt.step()
    v.grad = np.ones(5)
    opt.step()
    np.testing.assert_array_equal(v.data, np.zeros(5))
    # ... but a gradient that would only broadcast into its parameter is refused
    c = cm.tensor(np.ones((2, 3)), requires_grad=True)
    opt = O.Optimizer([c], O.chain(O.clip_by_value(1.0), O.sgd(0.1)))
    c.grad = np.ones((2, 1))
    with pytest.raises(ValueError, match=r"Optimizer.step: the gradient shapes \[\(2, 1\)\]"):
        opt.step()
    np.testing.assert_array_equal(c.data, np.ones((2, 3)))


def test_optimizer_step_refuses_before_touching_any_parameter():
    # The parameter-by-parameter path must not leave some parameters (or buffers) updated
    # when another one is refused: what it cannot check goes through the whole-tree path.
    a = cm.tensor(np.ones(2), requires_grad=True)
    b = cm.tensor(np.ones(2), requires_grad=True)
    opt = O.Optimizer([a, b], O.chain(O.clip_by_value(0.5), O.sgd(0.1, momentum=0.9)))
    a.grad, b.grad = np.ones(2), np.array([1, 1])   # an integer gradient for b
    with pytest.raises(TypeError):
        opt.step()
    np.testing.assert_array_equal(a.data, np.ones(2))
    assert opt.step_count == 0 and not np.any(flatten(opt.state)[0][0])
    # a state assigned from outside is checked by name before anything moves
    opt = O.Optimizer([a, b], O.adam(0.1))
    good = opt.state
    opt.state = O.adam(0.1).init([np.ones(2), np.ones((2, 3))])
    a.grad, b.grad = np.ones(2), np.ones(2)
    with pytest.raises(ValueError, match=r"scale_by_adam.*\(2, 3\)"):
        opt.step()
    np.testing.assert_array_equal(a.data, np.ones(2))
    opt.state = good
    opt.step()
    assert opt.step_count == 1 and a.data[0] < 1.0
    # a new transform assigned to .transform is the one used
    opt.transform = O.adam(1.0)
    opt.state = opt.transform.init([a.data, b.data])
    before = a.data.copy()
    opt.step()
    np.testing.assert_allclose(before - a.data, 1.0, rtol=1e-6)


def test_optimizer_step_with_tensors_sharing_memory_matches_the_whole_tree_rule():
    # two tensors on one array: a penalty reads the parameters as they were before the step
    x = np.array([1.0, 2.0])
    t1, t2 = cm.Tensor(x, requires_grad=True), cm.Tensor(x, requires_grad=True)
    opt = O.Optimizer([t1, t2], O.chain(O.l2(1.0), O.sgd(0.5)))
    t1.grad, t2.grad = np.zeros(2), np.zeros(2)
    opt.step()
    # each tensor's update is -0.5 * 1.0 * x0, both added to the shared array
    np.testing.assert_array_equal(x, [0.0, 0.0])


@pytest.mark.parametrize("make", [
    lambda: O.adam(O.cosine_decay(0.05, 30)),
    lambda: O.chain(O.clip_by_global_norm(1.0), O.sgd(0.05, momentum=0.9, nesterov=True)),
    lambda: O.chain(O.l2(1e-2), O.adagrad(0.1)),
])
def test_state_dict_resume_is_bit_identical(make):
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((50, 4)), rng.standard_normal(50)
    Xt, yt = cm.tensor(X), cm.tensor(y)

    def loss_of(w):
        return ((Xt @ w - yt) ** 2).mean()

    def train(w, opt, n):
        traj = []
        for _ in range(n):
            opt.zero_grad()
            loss_of(w).backward()
            opt.step()
            traj.append(w.data.copy())
        return traj

    w = cm.tensor(np.zeros(4), requires_grad=True)
    opt = O.Optimizer([w], make())
    train(w, opt, 10)
    saved_w, saved = w.data.copy(), opt.state_dict()
    buf = io.BytesIO()
    np.savez(buf, **saved)                    # arrays only: no pickle needed
    reference = train(w, opt, 10)

    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    w2 = cm.tensor(saved_w, requires_grad=True)
    opt2 = O.Optimizer([w2], make())
    opt2.load_state_dict(loaded)
    assert opt2.step_count == 10
    resumed = train(w2, opt2, 10)
    for a, b in zip(reference, resumed):
        np.testing.assert_array_equal(a, b)
    # without the state the trajectory differs (the test can fail)
    w3 = cm.tensor(saved_w, requires_grad=True)
    fresh = train(w3, O.Optimizer([w3], make()), 10)
    assert not np.array_equal(fresh[-1], reference[-1])


def test_state_dict_is_a_snapshot_and_load_checks_it():
    w = cm.tensor(np.ones(3), requires_grad=True)
    opt = O.Optimizer([w], O.adam(0.1))
    w.grad = np.ones(3)
    opt.step()
    sd = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert "state.0.mu.0" in sd and "state.1.learning_rate" in sd
    before = sd["state.0.mu.0"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state.0.mu.0"], before)   # not aliased to the buffers
    bad = dict(sd)
    bad["state.0.mu.0"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"state\.0\.mu\.0.*\(4,\)"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="missing"):
        opt.load_state_dict({k: v for k, v in sd.items() if k != "state.0.count"})


def test_optimizer_step_replaces_a_read_only_parameter_array():
    # a parameter whose data is a read-only view (np.broadcast_to) is replaced, not written
    base = np.ones(3)
    p = cm.tensor(np.broadcast_to(base, (2, 3)), requires_grad=True)
    opt = cm.optim.Optimizer([p], cm.optim.sgd(0.5))
    p.grad = np.full((2, 3), 2.0)
    opt.step()
    assert np.array_equal(p.data, np.zeros((2, 3))) and np.array_equal(base, np.ones(3))
    q = cm.tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    opt = cm.optim.Optimizer([q], cm.optim.sgd(0.5))
    q.grad = np.ones(2, dtype=np.float32)
    opt.step()
    assert q.data.dtype == np.float32 and np.array_equal(q.data, [0.5, 0.5])


@pytest.mark.parametrize("make", [lambda: O.sgd(0.5, momentum=0.9),
                                  lambda: O.sgd(0.5, momentum=0.9, nesterov=True),
                                  lambda: O.adam(0.5)], ids=["momentum", "nesterov", "adam"])
def test_one_call_step_replaces_a_read_only_parameter_and_keeps_the_others(make):
    # the one-call paths of Optimizer.step (step_in_place): a read-only .data (a broadcast
    # view) is replaced by a new array, the other parameters are updated in place, and every
    # value is the functional chain's
    base = np.ones(3)
    p = cm.tensor(np.ones((2, 3)), requires_grad=True)
    q = cm.tensor(np.array([1.0, -1.0]), requires_grad=True)
    opt = cm.optim.Optimizer([p, q], make())
    assert hasattr(opt.transform.update.start, "step_in_place")
    p.data = np.broadcast_to(base, (2, 3))
    q_array = q.data
    tx = make()
    theta = [np.ones((2, 3)), np.array([1.0, -1.0])]
    state = tx.init(theta)
    for k in range(3):
        g = [np.full((2, 3), 2.0 + k), np.array([0.5, 0.25 * k])]
        p.grad, q.grad = g[0].copy(), g[1].copy()
        opt.step()
        u, state = tx.update(g, state, theta)
        theta = O.apply_updates(theta, u)
        assert np.array_equal(p.data, theta[0]) and np.array_equal(q.data, theta[1])
    assert np.array_equal(base, np.ones(3))  # the view's memory was never written
    assert p.data.flags.writeable and q.data is q_array  # replaced once; q in place


def test_step_counts_of_schedules_and_integer_parameters_get_named_errors():
    for bad in (float("nan"), float("inf"), 2.5):
        with pytest.raises(ValueError, match="step_decay: step_size must be an integer"):
            O.step_decay(0.1, bad)
    for bad in (None, "3"):
        with pytest.raises(TypeError, match="step_decay: step_size must be an integer"):
            O.step_decay(0.1, bad)
    assert O.step_decay(0.1, 3.0, gamma=0.5)(3) == pytest.approx(0.05)
    p = np.array([1, 2])
    opt = O.adam(0.1)
    u, _ = opt.update(np.ones(2), opt.init(p), p)
    with pytest.raises(TypeError, match=r"apply_updates: parameter leaf 0 has dtype int64"):
        O.apply_updates(p, u)


@pytest.mark.parametrize("make", [lambda: O.sgd(0.1, momentum=0.9),
                                  lambda: O.sgd(0.1, momentum=0.9, nesterov=True),
                                  lambda: O.adam(O.inverse_sqrt(0.1))],
                         ids=["momentum", "nesterov", "adam"])
def test_one_call_optimizers_on_float32_and_0d_tensors_follow_the_functional_rule(make):
    # Optimizer.step's one-call paths: dtype, 0-d leaves and values as the chain's
    theta0 = {"a": np.array(1.5, np.float32), "v": np.array([0.5, -2.0], np.float32)}
    grads = [{"a": np.array(0.1 * (i + 1), np.float32),
              "v": np.array([0.3, -0.2 * i], np.float32)} for i in range(4)]
    traj, _ = _run(make(), theta0, grads)
    tensors = [cm.tensor(theta0[k], requires_grad=True) for k in ("a", "v")]
    opt = O.Optimizer(tensors, make())
    for g in grads:
        for t, k in zip(tensors, ("a", "v")):
            t.grad = g[k].copy()
        opt.step()
    for t, k in zip(tensors, ("a", "v")):
        assert t.data.dtype == np.float32 and t.data.shape == theta0[k].shape
        assert type(t.data) is np.ndarray
        np.testing.assert_array_equal(t.data, traj[-1][k])
    assert O.step_count(opt.state) == 4

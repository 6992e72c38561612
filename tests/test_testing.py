"""cm.check_grad: it passes on correct derivatives and names the argument and the worst entry
when a derivative is wrong, at first and at second order.

The wrong derivatives come from primitives defined here (under unique names, removed from the
registry afterwards), so the engine's own rules are never touched.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import calcml as cm
from calcml._core.registry import PRIMITIVES, defprim
from calcml._core.trace import bind
from calcml.ops._base import raw

_ids = itertools.count()


@pytest.fixture
def make_prim():
    """defprim under a unique name; the primitives are unregistered after the test."""
    made = []

    def make(impl, vjp, jvp):
        name = f"_test_testing_{next(_ids)}"
        prim = defprim(name, impl, vjps=(vjp,), jvps=(jvp,), elementwise=True)
        made.append(name)
        return lambda x: bind(prim, (x,), {})

    yield make
    for name in made:
        PRIMITIVES.pop(name, None)


RNG = np.random.default_rng(1234)
A = RNG.normal(size=(3, 4))

CORRECT = {
    "scalar of two arrays": (lambda x, W: cm.sum(cm.tanh(W @ x)),
                             (RNG.normal(size=4), RNG.normal(size=(2, 4)))),
    "array output": (lambda x: cm.softmax(A @ x), (RNG.normal(size=4),)),
    "broadcasting": (lambda x, y: cm.log1p(cm.exp(x * y)) / (1.0 + y ** 2),
                     (RNG.normal(size=(3, 1)), RNG.normal(size=(4,)))),
    "reductions": (lambda x: cm.logsumexp(x, axis=0) * cm.mean(x ** 2) + cm.std(x),
                   (RNG.normal(size=(3, 4)),)),
    "scalar argument": (lambda s, x: cm.sum(cm.sin(s * x)) * s, (np.float64(0.7),
                                                                 RNG.normal(size=5))),
}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_passes_on_correct_functions(name):
    f, args = CORRECT[name]
    report = cm.check_grad(f, *args)
    assert report.passed
    assert report.max_rel_error < report.rtol
    assert report.rtol == 1e-5 and report.eps == 1e-6 and report.fd_dtype == "float64"
    labels = [f"args[{i}]" for i in range(len(args))]
    assert report.checked == labels
    for label in labels:
        assert set(report.errors[label]) == {1, 2}
    assert {c.order for c in report.comparisons} == {1, 2}
    assert all(c.passed for c in report.comparisons)


def test_trees_of_arrays_and_integer_leaves():
    params = {"W": RNG.normal(size=(3, 4)), "b": RNG.normal(size=3), "steps": 2}
    data = [RNG.normal(size=4), np.array([0, 2])]

    def f(p, d, unused):
        x, idx = d
        h = cm.tanh(p["W"] @ x + p["b"])
        return cm.sum(h[idx] ** 2) * p["steps"]

    report = cm.check_grad(f, params, data, np.array([1, 2, 3]))
    assert report.passed
    assert report.checked == ["args[0]['W']", "args[0]['b']", "args[1][0]"]
    assert report.skipped == ["args[2] (int64)"]
    assert set(report.errors) == set(report.checked)


def test_float32_arguments_use_float64_differences():
    x = RNG.normal(size=5).astype(np.float32)
    W = RNG.normal(size=(3, 5)).astype(np.float32)
    report = cm.check_grad(lambda x, W: cm.sum(cm.sigmoid(W @ x) * cm.sin(x[:3])), x, W)
    assert report.passed
    assert report.fd_dtype == "float64"
    assert report.rtol == 1e-3
    assert report.max_rel_error < 1e-3
    # A float32 derivative agrees with float64 differences only to float32 precision.
    assert report.max_rel_error > 1e-12


def test_float32_differences_when_f_refuses_float64():
    def f(x):
        if x.dtype != np.float32:
            raise TypeError("float32 only")
        return cm.sum(cm.tanh(x) * x)

    report = cm.check_grad(f, RNG.normal(size=4).astype(np.float32))
    assert report.passed
    assert report.fd_dtype == "float32"
    assert report.eps == pytest.approx(np.finfo(np.float32).eps ** (1 / 3))
    assert report.rtol == 3e-3


def test_tuple_output_and_python_float():
    report = cm.check_grad(lambda a, x: (cm.exp(a * x), cm.sum(x) * a), 0.5, RNG.normal(size=3))
    assert report.passed
    assert report.checked == ["args[0]", "args[1]"]


def test_argnums_and_modes_restrict_the_checks():
    x, W = RNG.normal(size=4), RNG.normal(size=(2, 4))
    report = cm.check_grad(lambda x, W: cm.sum(cm.tanh(W @ x)), x, W, argnums=1,
                           modes=("rev",), order=1)
    assert report.checked == ["args[1]"]
    assert {c.order for c in report.comparisons} == {1}
    assert all(set(c.methods) == {"rev", "num"} for c in report.comparisons)
    report = cm.check_grad(lambda x: cm.sum(cm.sin(x) ** 3), x, modes="fwd")
    assert all("rev" not in m for c in report.comparisons for m in c.methods)
    assert {c.order for c in report.comparisons} == {1, 2}


def test_report_is_reproducible_and_readable():
    f, args = CORRECT["scalar of two arrays"]
    r1 = cm.check_grad(f, *args, seed=3)
    r2 = cm.check_grad(f, *args, rng=np.random.default_rng(3))
    assert r1.max_rel_error == r2.max_rel_error
    assert r1.error(0, order=1) <= r1.max_rel_error
    assert r1.error(1) == max(r1.errors["args[1]"].values())
    assert r1.worst.rel_error == r1.max_rel_error
    text = str(r1)
    assert text.startswith("check_grad passed")
    assert "args[0]" in text and "args[1]" in text


def _sin_with_wrong_vjp(make_prim, wrong_at):
    """sin whose reverse rule is 3x too large at entry ``wrong_at`` (forward rule right)."""
    def vjp(g, out, x):
        w = np.ones(raw(x).shape)
        w[wrong_at] = 3.0
        return g * cm.cos(x) * w

    return make_prim(np.sin, vjp, lambda t, out, x: t * cm.cos(x))


def test_wrong_reverse_rule_names_argument_and_worst_entry(make_prim):
    bad = _sin_with_wrong_vjp(make_prim, wrong_at=2)
    x = np.linspace(0.1, 1.0, 5)
    a = 2.0
    with pytest.raises(cm.GradientCheckError) as info:
        cm.check_grad(lambda a, d: cm.sum(bad(d["q"]) * a), a, {"q": x, "n": 3})
    err = info.value
    msg = str(err)
    assert isinstance(err, AssertionError)
    assert "argument 1" in msg and "['q']" in msg and "order 1" in msg
    assert "args[1]['q'][2]" in msg
    assert "reverse mode" in msg
    c = err.comparison
    assert (c.argnum, c.path, c.order, c.index) == (1, "['q']", 1, (2,))
    assert "rev" in c.methods
    true = a * np.cos(x[2])
    values = dict(zip(c.methods, c.values, strict=True))
    np.testing.assert_allclose(values["rev"], 3 * true, rtol=1e-12)
    other = values["num"] if "num" in values else values["fwd"]
    np.testing.assert_allclose(other, true, rtol=1e-6)
    assert not err.report.passed
    # the first argument is right: none of its first-order comparisons failed
    assert all(c.passed for c in err.report.comparisons if c.argnum == 0 and c.order == 1)


def test_wrong_forward_rule_is_blamed_on_forward_mode(make_prim):
    bad = make_prim(np.exp, lambda g, out, x: g * out, lambda t, out, x: t * out * 1.5)
    report = cm.check_grad(lambda x: cm.sum(bad(x)), RNG.normal(size=4), order=1,
                           raise_on_failure=False)
    assert not report.passed
    assert report.failures
    assert all("fwd" in c.methods for c in report.failures)
    assert any(set(c.methods) == {"rev", "num"} and c.passed for c in report.comparisons)
    assert "FAILED" in str(report)


def test_large_argument_is_checked_on_a_sample_of_entries(make_prim):
    bad = make_prim(np.sin, lambda g, out, x: g * cm.cos(x) * 2.0, lambda t, out, x: t * cm.cos(x))
    x = RNG.normal(size=(10, 12))
    with pytest.raises(cm.GradientCheckError) as info:
        cm.check_grad(lambda x: cm.sum(bad(x)), x, max_entries=20, order=1)
    c = info.value.comparison
    assert c.kind == "entries" and len(c.index) == 2
    assert 0 <= c.index[0] < 10 and 0 <= c.index[1] < 12
    np.testing.assert_allclose(c.values[0], 2 * np.cos(x[c.index]), rtol=1e-10)


def test_second_order_error_is_found_only_at_order_two(make_prim):
    # x**3 with a right first derivative written in raw NumPy: it cannot be differentiated
    # again, so every second derivative through it is zero.
    bad = make_prim(lambda x: x ** 3, lambda g, out, x: g * (3.0 * raw(x) ** 2),
                    lambda t, out, x: t * (3.0 * raw(x) ** 2))
    x = np.linspace(0.5, 1.5, 4)
    y = np.array([0.3, -0.2])
    f = lambda x, y: cm.sum(bad(x)) * cm.sum(y ** 2)
    assert cm.check_grad(f, x, y, order=1).passed
    with pytest.raises(cm.GradientCheckError) as info:
        cm.check_grad(f, x, y, order=2)
    err = info.value
    c = err.comparison
    assert c.order == 2 and "order 2" in str(err)
    assert c.label == "args[0]" and c.along == "args[0]"
    i = c.index[0]
    true = 6 * x[i] * np.sum(y ** 2)  # d²f/dx_i² times the direction's entry: non-zero
    assert abs(true) > 0
    assert f"args[0][{i}]" in str(err)
    # fwd-over-rev, rev-over-rev, rev-over-fwd all inherit the zero second derivative;
    # finite differences of the gradient do not.
    failed = {c.methods for c in err.report.failures
              if c.label == "args[0]" and c.along == "args[0]"}
    assert ("rev(rev)", "num(rev)") in failed and ("fwd(rev)", "num(rev)") in failed
    # the cross derivative d/dy of the gradient in x is right (it does not go through bad')
    assert all(c.passed for c in err.report.comparisons if c.order == 2 and c.along == "args[1]"
               and c.label == "args[0]")


def test_bad_input_gives_clear_errors():
    x = RNG.normal(size=3)
    with pytest.raises(TypeError, match="callable"):
        cm.check_grad("not a function", x)
    with pytest.raises(TypeError, match="floating"):
        cm.check_grad(lambda n: cm.sum(n * 1.0), np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="argument 1"):
        cm.check_grad(lambda x, n: cm.sum(x * n), x, np.array([1, 2, 3]), argnums=(0, 1))
    with pytest.raises(ValueError, match="order"):
        cm.check_grad(lambda x: cm.sum(x), x, order=3)
    with pytest.raises(ValueError, match="modes"):
        cm.check_grad(lambda x: cm.sum(x), x, modes=("backward",))
    with pytest.raises(TypeError, match="floating-point"):
        cm.check_grad(lambda x: cm.sum(x) > 0, x)
    with pytest.raises(ValueError, match="finite"), np.errstate(invalid="ignore"):
        cm.check_grad(lambda x: cm.sum(cm.log(x)), -np.abs(x))


def _float32_only(fn):
    """``fn`` refusing float64 arguments, so that the differences are taken in float32."""
    def f(x):
        if x.dtype != np.float32:
            raise TypeError("float32 only")
        return fn(x)

    return f


def test_float32_differences_catch_an_error_of_one_percent(make_prim):
    # d/dx sin = cos; both modes claim 1.01 cos, wrong by 1e-2 relative.
    sin_off = make_prim(np.sin, lambda g, out, x: g * cm.cos(x) * 1.01,
                        lambda t, out, x: t * cm.cos(x) * 1.01)
    x = np.array([0.3, -0.8, 1.3], dtype=np.float32)
    with pytest.raises(cm.GradientCheckError, match="differences in float32") as err:
        cm.check_grad(_float32_only(lambda x: cm.sum(sin_off(x))), x, order=1)
    c = err.value.comparison
    assert c.order == 1 and "num" in c.methods
    assert c.rel_error == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("case", ["logsumexp, second order entries", "cancelling direction"])
def test_float32_differences_no_false_alarm(case):
    # Correct code, differences in float32: the rounding noise of a softmax gradient, and a
    # directional second derivative w^T H v near 0 whose terms (about 100 each) cancel.
    if case == "logsumexp, second order entries":
        f, x, seed = (lambda x: cm.logsumexp(x * 3.0),
                      np.random.default_rng(3003).normal(size=30).astype(np.float32), 3)
    else:
        f, x, seed = (lambda x: cm.sum(cm.sin(x * 10.0)),
                      np.random.default_rng(18).normal(size=2).astype(np.float32), 4)
    report = cm.check_grad(_float32_only(f), x, seed=seed, raise_on_failure=False)
    assert report.fd_dtype == "float32"
    assert report.passed, str(report)


def test_empty_and_non_finite_arguments_are_named():
    with pytest.raises(ValueError, match=r"empty \(args\[0\]: float64 of shape \(0, 3\)\)"):
        cm.check_grad(lambda x: cm.sum(cm.sin(x)), np.zeros((0, 3)))
    x = np.array([0.5, -1.0])
    report = cm.check_grad(lambda e, x: cm.sum(e) + cm.sum(x ** 3), np.zeros(0), x)
    assert report.passed and report.checked == ["args[1]"]
    assert report.skipped == ["args[0] (float64 (0,), empty)"]
    with pytest.raises(ValueError, match=r"1 of 2 entries of a float64 output of shape \(2,\) "
                                         r"are nan.*args\[0\] float64 \(2,\)"), \
            np.errstate(invalid="ignore"):
        cm.check_grad(lambda x: cm.log(x), np.array([-1.0, 2.0]))

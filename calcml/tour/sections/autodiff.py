"""Tour section ``autodiff`` (chapter 9.6, automatic differentiation).

One function, f(x, y) = sin(x)·y + exp(x·y), differentiated four ways: symbolically
(:mod:`calcml.symbolic`, SymPy), numerically (central differences, with the error against the
step size: truncation O(h²) against rounding O(ε/h)), in forward mode (:func:`calcml.jvp`) and
in reverse mode (:func:`calcml.grad`).  Then the cost of a full Jacobian by n JVPs or m VJPs
for a wide and a tall function, and the computational graph of f with a forward and a
backward sweep done by hand over it.
"""

from __future__ import annotations

import math

import numpy as np
import sympy

import calcml as cm
from calcml import viz
from calcml.tour import best_time, section

EPS = float(np.finfo(np.float64).eps)


def f(x, y):
    """The function of the section: f(x, y) = sin(x)·y + exp(x·y)."""
    return cm.sin(x) * y + cm.exp(x * y)


def df_hand(x, y):
    """∂f/∂x and ∂f/∂y by hand: (cos(x)·y + y·exp(xy), sin(x) + x·exp(xy))."""
    return (np.cos(x) * y + y * np.exp(x * y), np.sin(x) + x * np.exp(x * y))


# --- symbolic -----------------------------------------------------------------------------------

def symbolic_gradient(func):
    """``(symbols, expressions)``: the exact gradient of ``func(x, y)`` from
    :func:`calcml.symbolic.grad`, in the real symbols ``x`` and ``y``."""
    syms = list(sympy.symbols("x y", real=True))
    return syms, cm.symbolic.grad(func, syms)


# --- finite differences -------------------------------------------------------------------------

def central_diff_x(x, y, h):
    """(f(x + h, y) − f(x − h, y)) / 2h: error h²f'''/6 + O(ε|f|/h)."""
    return (f(x + h, y) - f(x - h, y)) / (2 * h)


def forward_diff_x(x, y, h):
    """(f(x + h, y) − f(x, y)) / h: error h f''/2 + O(ε|f|/h)."""
    return (f(x + h, y) - f(x, y)) / h


def loglog_slope(h, err, lo, hi):
    """Least-squares slope of log err against log h over lo ≤ h ≤ hi."""
    m = (h >= lo) & (h <= hi) & (err > 0)
    return float(np.polyfit(np.log(h[m]), np.log(err[m]), 1)[0])


# --- Jacobian cost ------------------------------------------------------------------------------

class Counted:
    """``func`` with a count of its calls (each call is one forward pass)."""

    def __init__(self, func):
        self.func = func
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return self.func(*args)


def make_mlp(n, m, rng, hidden=32):
    """R^n → R^m, x ↦ W2 tanh(W1 sin(x)): a small network of the given input/output sizes."""
    w1 = rng.standard_normal((hidden, n)) / math.sqrt(n)
    w2 = rng.standard_normal((m, hidden)) / math.sqrt(hidden)
    return lambda x: w2 @ cm.tanh(w1 @ cm.sin(x))


def jacobian_by_jvps(func, x):
    """The Jacobian column by column: one forward-mode pass (``cm.jvp``) per input."""
    n = x.size
    eye = np.eye(n)
    cols = [cm.jvp(func, (x,), (eye[j],))[1] for j in range(n)]
    return np.stack(cols, axis=-1)


def jacobian_by_vjps(func, x, count=None):
    """The Jacobian row by row: one forward pass, then one backward pass (``vjp_fn``) per
    output."""
    out, vjp_fn = cm.vjp(func, x)
    eye = np.eye(out.size)
    rows = []
    for i in range(out.size):
        if count is not None:
            count[0] += 1
        rows.append(vjp_fn(eye[i])[0])
    return np.stack(rows, axis=0)


# --- the section --------------------------------------------------------------------------------

@section("autodiff", title="Automatic differentiation: four ways, their cost, the graph",
         chapter="9.6",
         description="One gradient four ways (SymPy, differences, jvp, grad), Jacobian "
                     "cost by n JVPs vs m VJPs, the computational graph.")
def run(ctx):
    """Chapter 9.6: automatic differentiation."""
    x0, y0 = 0.5, 1.5
    X, Y = np.array(x0), np.array(y0)
    _four_ways(ctx, x0, y0, X, Y)
    _step_size(ctx)
    _jacobian_cost(ctx)
    _graph(ctx, X, Y)


def _four_ways(ctx, x0, y0, X, Y):
    ctx.status("four ways")
    syms, exprs = symbolic_gradient(f)
    sx, sy = syms
    hand = [sympy.cos(sx) * sy + sy * sympy.exp(sx * sy),
            sympy.sin(sx) + sx * sympy.exp(sx * sy)]
    same = all(sympy.simplify(e - h) == 0 for e, h in zip(exprs, hand, strict=True))
    exact = np.array([float(e.evalf(40, subs={sx: sympy.Rational(x0), sy: sympy.Rational(y0)}))
                      for e in exprs])
    sym64 = np.asarray(cm.symbolic.lambdify(exprs, syms)(x0, y0), dtype=float)
    # calcml's own modes run on SymPy symbols write their derivative out as a formula
    rev_expr = cm.symbolic.expression(cm.grad(f, argnums=(0, 1)), syms)
    fwd_expr = [cm.symbolic.expression(lambda a, b, t=t: cm.jvp(f, (a, b), t)[1], syms)
                for t in ((1.0, 0.0), (0.0, 1.0))]
    rev_same = all(sympy.simplify(a - b) == 0 for a, b in zip(rev_expr, exprs, strict=True))
    fwd_same = all(sympy.simplify(a - b) == 0 for a, b in zip(fwd_expr, exprs, strict=True))

    rev_fn = Counted(f)
    rev = np.array([float(g) for g in cm.grad(rev_fn, argnums=(0, 1))(X, Y)])
    fwd_fn = Counted(f)
    fwd = np.array([float(cm.jvp(fwd_fn, (X, Y), (np.array(1.0), np.array(0.0)))[1]),
                    float(cm.jvp(fwd_fn, (X, Y), (np.array(0.0), np.array(1.0)))[1])])
    h = EPS ** (1 / 3)
    num = np.array([(f(x0 + h, y0) - f(x0 - h, y0)) / (2 * h),
                    (f(x0, y0 + h) - f(x0, y0 - h)) / (2 * h)], dtype=float)
    rel = {k: float(np.max(np.abs(v - exact) / np.abs(exact)))
           for k, v in (("symbolic", sym64), ("central", num), ("forward", fwd),
                        ("reverse", rev))}
    report = cm.check_grad(f, X, Y, raise_on_failure=False)

    ctx.text(
        "§9.6 names the ways to differentiate a program. One function, f(x, y) = sin(x)·y + "
        f"exp(x·y), at (x, y) = ({x0}, {y0}), differentiated four ways. Symbolically: "
        "`cm.symbolic.grad` runs the very same Python function on SymPy symbols and returns "
        f"∂f/∂x = {sympy.sstr(exprs[0])} and ∂f/∂y = {sympy.sstr(exprs[1])}, evaluated to 40 "
        "digits as the reference. Numerically: central differences with h = ε^(1/3). Forward "
        "mode (`cm.jvp`): each value carries its derivative along one input direction, "
        "d/dt f(x(t)) = f'(x(t))·x'(t), so the gradient of f: R² → R takes two passes. Reverse "
        "mode (`cm.grad`): one forward pass records the graph, one backward pass applies "
        "∂L/∂x = ∂L/∂y·∂y/∂x and yields both partial derivatives at once. The modes can "
        "also run on symbols: `cm.symbolic.expression(cm.grad(f, argnums=(0, 1)), [x, y])` "
        f"writes calcml's reverse-mode gradient out as {sympy.sstr(rev_expr)}, which the "
        "checks compare with SymPy's own derivative.")
    ctx.table(["method", "passes", "∂f/∂x", "∂f/∂y", "max rel. error vs exact"], [
        ["exact (SymPy, 40 digits)", "-", exact[0], exact[1], 0.0],
        ["symbolic, evaluated in float64", "-", sym64[0], sym64[1], rel["symbolic"]],
        ["central differences, h = ε^(1/3)", "4 evaluations of f", num[0], num[1],
         rel["central"]],
        ["forward mode, cm.jvp", f"{fwd_fn.calls} forward (with tangent)", fwd[0], fwd[1],
         rel["forward"]],
        ["reverse mode, cm.grad", f"{rev_fn.calls} forward + 1 backward", rev[0], rev[1],
         rel["reverse"]],
    ], caption="One gradient, four ways")
    ctx.check("SymPy's gradient equals the hand-derived (cos x·y + y·e^{xy}, sin x + x·e^{xy})",
              True, bool(same), cmp="==")
    ctx.check("cm.grad run on SymPy symbols gives SymPy's formula (difference simplifies "
              "to 0)", True, bool(rev_same), cmp="==")
    ctx.check("cm.jvp run on SymPy symbols gives SymPy's formula (difference simplifies to 0)",
              True, bool(fwd_same), cmp="==")
    ctx.check("reverse mode (cm.grad) vs exact: max rel. error", 0.0, rel["reverse"], atol=1e-14)
    ctx.check("forward mode (cm.jvp) vs exact: max rel. error", 0.0, rel["forward"], atol=1e-14)
    ctx.check("forward mode vs reverse mode: max abs. difference", 0.0,
              float(np.max(np.abs(fwd - rev))), atol=1e-14)
    ctx.check("central differences (h = ε^(1/3)) vs exact: max rel. error ≲ ε^(2/3)", 0.0,
              rel["central"], atol=1e-9)
    ctx.check("forward mode takes n = 2 passes for the gradient of f: R² → R", 2,
              fwd_fn.calls, cmp="==")
    ctx.check("reverse mode takes 1 forward pass (then 1 backward) for the whole gradient", 1,
              rev_fn.calls, cmp="==")
    ctx.check("cm.check_grad (rev, fwd, differences, to order 2) passes", True,
              bool(report.passed), cmp="==")
    ctx.metric("exact_gradient", exact.tolist())
    ctx.metric("rel_error", rel)
    ctx.metric("check_grad_max_rel_error", float(report.max_rel_error))

    # higher derivatives compose: grad(grad(grad(f))) against SymPy
    d3 = cm.grad(cm.grad(cm.grad(f)))(X, Y)
    d3_exact = float(sympy.diff(exprs[0], sx, 2).evalf(40, subs={sx: sympy.Rational(x0),
                                                                  sy: sympy.Rational(y0)}))
    ctx.check("∂³f/∂x³ by cm.grad(cm.grad(cm.grad(f))) vs SymPy: rel. error", 0.0,
              abs(float(d3) - d3_exact) / abs(d3_exact), atol=1e-13)
    ctx.metric("d3f_dx3", float(d3))


def _step_size(ctx):
    ctx.status("step size")
    pts = [(0.5, 1.5), (-0.3, 0.8), (1.1, -0.6), (0.2, 2.0), (0.8, 0.4), (-0.9, -1.2)]
    pts = pts[: ctx.size(6, 3)]
    syms, exprs = symbolic_gradient(f)
    sx, sy = syms
    fx = exprs[0]
    fxx, fxxx = sympy.diff(fx, sx), sympy.diff(fx, sx, 2)
    hs = np.logspace(-1, -13, ctx.size(97, 49))
    err_c, err_f, m0, m2, m3 = [], [], [], [], []
    for px, py in pts:
        subs = {sx: sympy.Rational(px), sy: sympy.Rational(py)}
        exact = float(fx.evalf(40, subs=subs))
        err_c.append(central_diff_x(px, py, hs) - exact)
        err_f.append(forward_diff_x(px, py, hs) - exact)
        m0.append(abs(float(f(px, py))))
        m2.append(abs(float(fxx.evalf(30, subs=subs))))
        m3.append(abs(float(fxxx.evalf(30, subs=subs))))

    def rms(a):
        return np.sqrt(np.mean(np.square(np.asarray(a, dtype=float)), axis=0))

    e_c, e_f = rms(err_c), rms(err_f)
    M0, M2, M3 = rms(m0), rms(m2), rms(m3)
    model_c = M3 * hs ** 2 / 6 + EPS * M0 / hs
    model_f = M2 * hs / 2 + 2 * EPS * M0 / hs
    hstar_c = (3 * EPS * M0 / M3) ** (1 / 3)
    hstar_f = 2 * math.sqrt(EPS * M0 / M2)
    h_opt_c = float(hs[np.argmin(e_c)])
    h_opt_f = float(hs[np.argmin(e_f)])
    slopes = {
        "central_truncation": loglog_slope(hs, e_c, 1e-3, 1e-1),
        "central_rounding": loglog_slope(hs, e_c, 1e-13, 1e-9),
        "forward_truncation": loglog_slope(hs, e_f, 1e-5, 1e-2),
        "forward_rounding": loglog_slope(hs, e_f, 1e-13, 1e-10),
    }
    ctx.text(
        "The numerical derivative has two errors that pull in opposite directions. The central "
        "difference (f(x+h) − f(x−h))/2h differs from f'(x) by h²f'''(x)/6 + O(h⁴) "
        "(truncation), and the two values of f, each rounded to relative precision ε = "
        f"{EPS:.3g}, contribute about ε|f|/h (rounding). Their sum is smallest at "
        "h* = (3ε|f|/|f'''|)^(1/3) ∝ ε^(1/3), where the error is of order ε^(2/3) ≈ 4e-11; the "
        "forward difference (f(x+h) − f(x))/h has truncation h|f''|/2, optimum near ε^(1/2) "
        f"and error of order ε^(1/2). Measured on ∂f/∂x, as the RMS error over {len(pts)} "
        f"points, for {len(hs)} step sizes from 1e-1 to 1e-13: the V-curve.")
    ctx.check("central differences: slope of log error vs log h, truncation side (h ≥ 1e-3)",
              2.0, slopes["central_truncation"], atol=0.15)
    ctx.check("central differences: slope on the rounding side (h ≤ 1e-9)", -1.0,
              slopes["central_rounding"], atol=0.3)
    ctx.check("central differences: best h / ε^(1/3) within a factor 10 (log₁₀ in [−1, 1])",
              (-1.0, 1.0), math.log10(h_opt_c / EPS ** (1 / 3)), cmp="between")
    ctx.check("central differences: best h / h* = (3ε|f|/|f'''|)^(1/3), log₁₀ in [−1, 1]",
              (-1.0, 1.0), math.log10(h_opt_c / hstar_c), cmp="between")
    ctx.check("central differences: best error / ε^(2/3), log₁₀ in [−2, 1]", (-2.0, 1.0),
              math.log10(float(e_c.min()) / EPS ** (2 / 3)), cmp="between")
    ctx.check("forward differences: slope on the truncation side (1e-5 ≤ h ≤ 1e-2)", 1.0,
              slopes["forward_truncation"], atol=0.15)
    ctx.check("forward differences: slope on the rounding side (h ≤ 1e-10)", -1.0,
              slopes["forward_rounding"], atol=0.3)
    ctx.check("forward differences: best h / ε^(1/2), log₁₀ in [−1, 1]", (-1.0, 1.0),
              math.log10(h_opt_f / EPS ** 0.5), cmp="between")
    ctx.metric("vcurve_slopes", slopes)
    ctx.metric("central_best_h", h_opt_c)
    ctx.metric("central_h_star_theory", hstar_c)
    ctx.metric("central_best_error", float(e_c.min()))
    ctx.metric("forward_best_h", h_opt_f)
    ctx.metric("forward_h_star_theory", hstar_f)
    ctx.metric("forward_best_error", float(e_f.min()))
    ctx.metric("eps_cbrt", EPS ** (1 / 3))

    fig, ax = viz.new_figure(size=(7.4, 4.8))
    viz.line_plot(ax, hs, {"central difference": e_c, "forward difference": e_f}, logx=True,
                  logy=True, markersize=2.5, xlabel="step h",
                  ylabel="RMS error of ∂f/∂x", title="The V-curve: truncation vs rounding")
    viz.reference_line(ax, hs, model_c, label="h²|f'''|/6 + ε|f|/h", color=viz.COLORS[0])
    viz.reference_line(ax, hs, model_f, label="h|f''|/2 + 2ε|f|/h", color=viz.COLORS[1])
    ax.axvline(EPS ** (1 / 3), color=viz.COLORS[0], lw=0.8, ls=":")
    ax.axvline(EPS ** 0.5, color=viz.COLORS[1], lw=0.8, ls=":")
    ax.annotate("ε^(1/3)", (EPS ** (1 / 3), ax.get_ylim()[1]), fontsize=8, ha="left",
                va="top", color=viz.COLORS[0], xytext=(3, -3), textcoords="offset points")
    ax.annotate("ε^(1/2)", (EPS ** 0.5, ax.get_ylim()[1]), fontsize=8, ha="left", va="top",
                color=viz.COLORS[1], xytext=(3, -3), textcoords="offset points")
    ax.invert_xaxis()
    ax.legend(fontsize=8, loc="lower left")
    ctx.figure(fig, "step-size",
               "Error of finite differences against the step h (h decreasing to the right): "
               "the truncation error falls as h² (central) or h (forward) until rounding, "
               "growing as ε/h, takes over; the minimum lies near ε^(1/3) and ε^(1/2). Dashed: "
               "the error model; dotted: ε^(1/3), ε^(1/2).")


def _jacobian_cost(ctx):
    ctx.status("Jacobian cost")
    rng = np.random.default_rng(1)
    big = 200
    repeat = ctx.size(5, 2)
    problems = {"wide": (big, 2), "tall": (2, big)}
    passes, times, rows = {}, {}, []
    for kind, (n, m) in problems.items():
        func = make_mlp(n, m, rng)
        x = rng.standard_normal(n)
        counted = Counted(func)
        j_fwd_loop = jacobian_by_jvps(counted, x)
        fwd_passes = counted.calls
        counted = Counted(func)
        bwd = [0]
        j_rev_loop = jacobian_by_vjps(counted, x, bwd)
        rev_forward, rev_passes = counted.calls, bwd[0]
        j_fwd = cm.jacobian(func, mode="fwd")(x)
        j_rev = cm.jacobian(func, mode="rev")(x)
        h = 1e-6
        j_num = np.stack([(func(x + h * e) - func(x - h * e)) / (2 * h) for e in np.eye(n)],
                         axis=-1)
        agree = max(float(np.max(np.abs(a - j_rev))) for a in (j_fwd_loop, j_rev_loop, j_fwd))
        ctx.check(f"{kind} R^{n}→R^{m}: Jacobians by JVP loop, VJP loop, jacobian(fwd) and "
                  "jacobian(rev) agree (max abs. diff.)", 0.0, agree, atol=1e-12)
        ctx.check(f"{kind} R^{n}→R^{m}: Jacobian vs central differences (max abs. diff.)", 0.0,
                  float(np.max(np.abs(j_num - j_rev))), atol=1e-8)
        ctx.check(f"{kind}: forward mode needs n = {n} JVP passes", n, fwd_passes, cmp="==")
        ctx.check(f"{kind}: reverse mode needs 1 forward + m = {m} VJP passes", [1, m],
                  [rev_forward, rev_passes], cmp="==")
        passes[kind] = (fwd_passes, rev_passes)
        t = {
            "n JVPs (loop of cm.jvp)": best_time(lambda f=func, x=x: jacobian_by_jvps(f, x),
                                                repeat),
            "m VJPs (cm.vjp + loop)": best_time(lambda f=func, x=x: jacobian_by_vjps(f, x),
                                               repeat),
            "cm.jacobian fwd (batched)": best_time(
                lambda f=func, x=x: cm.jacobian(f, mode="fwd")(x), repeat),
            "cm.jacobian rev": best_time(lambda f=func, x=x: cm.jacobian(f, mode="rev")(x),
                                         repeat),
            "f alone": best_time(lambda f=func, x=x: f(x), repeat, number=20),
        }
        times[kind] = t
        rows.append([f"{kind}: R^{n} → R^{m}", fwd_passes, rev_passes]
                    + [t[k] * 1e3 for k in t])
    ctx.check("tall (n ≪ m): forward mode takes fewer passes than reverse", True,
              passes["tall"][0] < passes["tall"][1], cmp="==")
    ctx.check("wide (n ≫ m): reverse mode takes fewer passes than forward", True,
              passes["wide"][1] < passes["wide"][0], cmp="==")
    # timings: only the ordering, with a wide margin (expected ratios are ~ 30-100x)
    ctx.check("wide: time of n JVPs / time of m VJPs (expected ≫ 1; checked > 2)", 2.0,
              times["wide"]["n JVPs (loop of cm.jvp)"] / times["wide"]["m VJPs (cm.vjp + loop)"],
              cmp=">")
    ctx.check("tall: time of m VJPs / time of n JVPs (expected ≫ 1; checked > 2)", 2.0,
              times["tall"]["m VJPs (cm.vjp + loop)"] / times["tall"]["n JVPs (loop of cm.jvp)"],
              cmp=">")
    ctx.metric("time_ms", {kind: {k: round(v * 1e3, 4) for k, v in t.items()}
                           for kind, t in times.items()})
    ctx.metric("passes", {kind: {"jvp": p[0], "vjp": p[1]} for kind, p in passes.items()})
    ctx.text(
        "The cost of a full Jacobian J ∈ R^{m×n}. A JVP (forward mode) gives one column Jv per "
        "pass, a VJP (reverse mode) one row uᵀJ per backward pass: n passes against m. For a "
        f"wide function R^{big} → R² (a loss-like map: many inputs, few outputs) reverse mode "
        f"wins, for a tall one R² → R^{big} forward mode does. The function is x ↦ W₂ tanh(W₁ "
        "sin x) with 32 hidden units; the Jacobians of all four methods agree. `cm.jacobian` "
        "with mode=\"fwd\" pushes all n basis tangents through one batched pass, so its cost "
        "grows with n through array sizes rather than Python-level passes.")
    ctx.table(["function", "JVP passes", "VJP passes", "n JVPs (ms)", "m VJPs (ms)",
               "jacobian fwd (ms)", "jacobian rev (ms)", "f alone (ms)"], rows,
              caption="Jacobian cost (best of repeated runs)")

    # how the two loops scale with the input and the output dimension
    sizes = ctx.size([2, 8, 32, 128, 512], [2, 16, 128])
    scan = {"n JVPs": [], "m VJPs": [], "jacobian fwd": [], "jacobian rev": []}
    scan_t = {k: [] for k in scan}
    for s in sizes:
        fw = make_mlp(s, 2, rng)
        xw = rng.standard_normal(s)
        ft = make_mlp(2, s, rng)
        xt = rng.standard_normal(2)
        for store, func, x in ((scan, fw, xw), (scan_t, ft, xt)):
            store["n JVPs"].append(best_time(lambda f=func, x=x: jacobian_by_jvps(f, x), repeat))
            store["m VJPs"].append(best_time(lambda f=func, x=x: jacobian_by_vjps(f, x), repeat))
            store["jacobian fwd"].append(
                best_time(lambda f=func, x=x: cm.jacobian(f, mode="fwd")(x), repeat))
            store["jacobian rev"].append(
                best_time(lambda f=func, x=x: cm.jacobian(f, mode="rev")(x), repeat))
    ctx.metric("scan_sizes", sizes)
    ctx.metric("scan_wide_ms", {k: [round(v * 1e3, 4) for v in vs] for k, vs in scan.items()})
    ctx.metric("scan_tall_ms", {k: [round(v * 1e3, 4) for v in vs] for k, vs in scan_t.items()})

    fig, axes = viz.new_figure(1, 3, size=(15, 4.2))
    viz.bar_plot(axes[0], ["wide R^200→R^2", "tall R^2→R^200"],
                 {k: [times["wide"][k] * 1e3, times["tall"][k] * 1e3]
                  for k in list(times["wide"])[:4]},
                 logy=True, ylabel="time for the full Jacobian (ms)",
                 title="Jacobian cost", fmt="{:.2g}")
    viz.line_plot(axes[1], sizes, {k: np.array(v) * 1e3 for k, v in scan.items()}, logx=True,
                  logy=True, xlabel="input dimension n (m = 2)", ylabel="time (ms)",
                  title="wide: R^n → R^2")
    viz.line_plot(axes[2], sizes, {k: np.array(v) * 1e3 for k, v in scan_t.items()},
                  logx=True, logy=True, xlabel="output dimension m (n = 2)", ylabel="time (ms)",
                  title="tall: R^2 → R^m")
    ctx.figure(fig, "jacobian-cost",
               "Time for a full Jacobian: n JVPs against m VJPs. Left, the wide and the tall "
               "function; middle, wide functions of growing n (the JVP loop grows linearly, the "
               "VJP loop hardly at all); right, tall functions of growing m (the reverse).")


# Local derivatives ∂out/∂arg_i of the primitives in f, for the hand-made sweeps below.
_LOCAL = {
    "sin": lambda a, out: [np.cos(a[0])],
    "exp": lambda a, out: [out],
    "multiply": lambda a, out: [a[1], a[0]],
    "add": lambda a, out: [1.0, 1.0],
}


def _graph(ctx, X, Y):
    ctx.status("graph")
    g = cm.make_graph(f, X, Y)
    vals = {n.id: float(n.value) for n in g.nodes}
    out = g.outputs[0]

    def local(nid):
        node = g.nodes[nid]
        args = [vals[p] for p in g.parents(nid)]
        return _LOCAL[node.op](args, vals[nid])

    # forward sweep: tangents along x, in topological order (ẏ = Σ ∂y/∂a · ȧ)
    tangent = {nid: 0.0 for nid in vals}
    tangent[g.inputs[0]] = 1.0
    for node in g.ops:
        tangent[node.id] = sum(d * tangent[p] for d, p in zip(local(node.id),
                                                               g.parents(node.id),
                                                               strict=True))
    # backward sweep: adjoints, in reverse topological order (ā += ȳ · ∂y/∂a)
    adjoint = {nid: 0.0 for nid in vals}
    adjoint[out] = 1.0
    for node in reversed(g.ops):
        for d, p in zip(local(node.id), g.parents(node.id), strict=True):
            adjoint[p] += adjoint[node.id] * d
    by_graph = np.array([adjoint[i] for i in g.inputs])
    by_grad = np.array([float(v) for v in cm.grad(f, argnums=(0, 1))(X, Y)])
    by_jvp = float(cm.jvp(f, (X, Y), (np.array(1.0), np.array(0.0)))[1])

    ops = sorted(n.op for n in g.ops)
    ctx.check("graph of f: operations", sorted(["sin", "multiply", "multiply", "exp", "add"]),
              ops, cmp="==")
    ctx.check("graph of f: 2 inputs, 1 output, 8 edges", [2, 1, 8],
              [len(g.inputs), len(g.outputs), len(g.edges)], cmp="==")
    ctx.check("graph's output value equals f(x, y)", float(f(X, Y)), vals[out], atol=0.0)
    ctx.check("backward sweep over the graph by hand equals cm.grad (max abs. diff.)", 0.0,
              float(np.max(np.abs(by_graph - by_grad))), atol=1e-14)
    ctx.check("forward sweep over the graph by hand equals cm.jvp along x", 0.0,
              abs(tangent[out] - by_jvp), atol=1e-14)
    ctx.metric("graph_nodes", len(g.nodes))
    ctx.metric("graph_edges", len(g.edges))
    ctx.metric("graph_ops", ops)

    notes = {nid: f"v = {vals[nid]:.4g}\nv̄ = {adjoint[nid]:.4g}" for nid in vals}
    fig = viz.draw_graph(g, notes=notes,
                         title="f(x, y) = sin(x)·y + exp(x·y) at (0.5, 1.5): values v and "
                               "adjoints v̄ = ∂f/∂v")
    ctx.figure(fig, "graph",
               "The computational graph recorded by reverse mode (`cm.make_graph`): inputs "
               "(green), primitive operations (blue), output (orange border). Each node shows "
               "its value v from the forward pass and its adjoint v̄ = ∂f/∂v from the backward "
               "pass; the adjoints of x and y are the gradient.")
    ctx.text(
        "The computational graph of §9.6: nodes are the inputs and the operations, edges the "
        "dependencies. `cm.make_graph` records it with the reverse-mode machinery, exactly as "
        "`cm.grad` does. Walking it by hand with each operation's local derivative (sin → cos, "
        "exp → exp, a·b → (b, a), a + b → (1, 1)), forwards with tangents (forward mode) and "
        "backwards with adjoints (reverse mode, ā += ȳ·∂y/∂a), gives the same derivatives as "
        "`cm.jvp` and `cm.grad`.")
    ctx.code(g.to_dot(), caption="The same graph as Graphviz DOT text (`Graph.to_dot()`)")

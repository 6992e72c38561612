"""Tour section ``optimizers`` (chapter 9.5, advanced optimization algorithms).

SGD, momentum, Nesterov, Adam, RMSprop and AdaGrad (:mod:`calcml.optim`, run by
:func:`calcml.optimize.minimize`) on an ill-conditioned quadratic and on Rosenbrock's
function: trajectories over the level sets, the loss against the iteration, and the chapter's
comparison table filled with measured numbers (iterations to a tolerance, rates, the state's
size per parameter, the constructors' hyperparameters).  Theory checked against the runs: the
contraction factors of gradient descent, heavy-ball and Nesterov momentum on a quadratic
(spectral radii of their 2×2 recursions), Adam's bias-corrected first step, AdaGrad's
monotone effective rate, and the period-2 cycle in which RMSprop with a constant rate ends.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

import calcml as cm
from calcml import viz
from calcml.tour import section

#: The ill-conditioned quadratic f(x) = ½xᵀAx, A = R(30°) diag(1, 50) R(30°)ᵀ (κ = 50),
#: rotated so that the axes are not its eigenvectors (the adaptive methods scale per axis).
ANGLE = math.radians(30.0)
EIGENVALUES = np.array([1.0, 50.0])
_R = np.array([[math.cos(ANGLE), -math.sin(ANGLE)], [math.sin(ANGLE), math.cos(ANGLE)]])
A = _R @ np.diag(EIGENVALUES) @ _R.T
QUAD_X0 = np.array([-4.0, -1.0])
ROSEN_X0 = np.array([-1.2, 1.0])
TOL = 1e-8  # iterations are counted until f(x_k) − f* < TOL

#: name -> (minimize's method, constructor, its options beyond the defaults)
OPTIMIZERS = {
    "SGD": ("gd", cm.optim.sgd),
    "momentum": ("momentum", cm.optim.sgd),
    "Nesterov": ("nesterov", cm.optim.sgd),
    "Adam": ("adam", cm.optim.adam),
    "RMSprop": ("rmsprop", cm.optim.rmsprop),
    "AdaGrad": ("adagrad", cm.optim.adagrad),
}
#: Learning rates of the adaptive methods, from a sweep over 2^-10 … 2^3 (factors of 2) on
#: each problem: the fewest iterations to TOL (among rates whose loss stays below it), or the
#: lowest final loss when none reached it.  The gradient-descent family uses α = 1/L, L
#: estimated at the minimiser.
ADAPTIVE_RATES = {
    "quadratic": {"Adam": 1.0, "RMSprop": 2.0 ** -7, "AdaGrad": 2.0},
    "Rosenbrock": {"Adam": 2.0 ** -4, "RMSprop": 2.0 ** -9, "AdaGrad": 1.0},
}
#: The chapter's comparison table (9.5), and the hyperparameters it names.
CHAPTER_TABLE = {
    "SGD": ("Linear", "Low", ["learning_rate"]),
    "Adam": ("Fast", "Medium", ["learning_rate", "b1", "b2"]),
    "RMSprop": ("Medium", "Medium", ["learning_rate", "decay"]),
    "AdaGrad": ("Slow", "Medium", ["learning_rate"]),
}


def quadratic(x):
    """½xᵀAx, minimum 0 at the origin."""
    return 0.5 * (x @ (A @ x))


def rosenbrock(p):
    """(1 − x)² + 100(y − x²)², minimum 0 at (1, 1)."""
    return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


def state_size(opt, n):
    """The number of floats in ``opt.init`` of n parameters (all the state's leaves)."""
    leaves, _ = cm.tree_flatten(opt.init(np.zeros(n)))
    return int(sum(np.size(a) for a in leaves))


def memory_per_parameter(opt, n1=10, n2=1000):
    """(floats per parameter, floats independent of the size) of the optimizer's state."""
    s1, s2 = state_size(opt, n1), state_size(opt, n2)
    per = (s2 - s1) / (n2 - n1)
    return per, s1 - per * n1


def momentum_factor(alpha, lam, beta, nesterov=False):
    """Spectral radius per step of (Nesterov) momentum on one eigenvalue λ of a quadratic.

    With h = αλ, heavy ball (x_{k+1} = x_k − αg_k + β(x_k − x_{k−1}), which is
    ``cm.optim.sgd(α, momentum=β)``) has characteristic polynomial z² − (1 + β − h)z + β;
    Nesterov in PyTorch's form (``nesterov=True``) has z² − (1 + β)(1 − h)z + β(1 − h).
    """
    h = alpha * lam
    if nesterov:
        coeffs = [1.0, -(1.0 + beta) * (1.0 - h), beta * (1.0 - h)]
    else:
        coeffs = [1.0, -(1.0 + beta - h), beta]
    return float(np.max(np.abs(np.roots(coeffs))))


def tail_factor(errors):
    """exp of the least-squares slope of log ‖x_k − x*‖ over the second half of a run."""
    e = np.asarray(errors, dtype=float)
    k = np.arange(len(e) // 2, len(e))
    keep = e[k] > 0
    return float(np.exp(np.polyfit(k[keep], np.log(e[k][keep]), 1)[0]))


def iterations_to(gaps, tol):
    """The first k with gap_k < tol, or None."""
    hit = np.nonzero(np.asarray(gaps) < tol)[0]
    return int(hit[0]) if len(hit) else None


def rmsprop_cycle(alpha):
    """RMSprop's period-2 cycle on ½xᵀAx: (loss on the cycle, sign vector s).

    In a cycle x_{k+1} = −x_k the gradients alternate ±g, so v = g² and each step is
    −α·g/|g| = −α·sign(g) per coordinate: x = (α/2)s with s = sign(As), and the loss is
    (α²/8) sᵀAs (the ε of the denominator aside).
    """
    for s in ([1.0, 1.0], [1.0, -1.0]):
        s = np.array(s)
        if np.array_equal(np.sign(A @ s), s):
            return alpha ** 2 / 8.0 * float(s @ A @ s), s
    raise ValueError("no consistent sign pattern")


def run_all(f, x0, rates, budget):
    """Run every optimizer of the section on f from x0: name -> OptimizeResult."""
    out = {}
    with np.errstate(all="ignore"):
        for name, (method, _) in OPTIMIZERS.items():
            out[name] = cm.optimize.minimize(f, x0, method, learning_rate=rates[name],
                                             max_iter=budget, tol=None, on_nonfinite="stop")
    return out


def _paths_plot(ax, f, xlim, ylim, runs, show, levels, logscale, title, star, legend_loc):
    viz.contour_with_trajectory(ax, f, xlim, ylim, None, levels=levels, logscale=logscale,
                                title=title)
    for i, (name, res) in enumerate(runs.items()):
        path = np.asarray(res.trajectory)[: show + 1]
        c = viz.COLORS[i % len(viz.COLORS)]
        ax.plot(path[:, 0], path[:, 1], "-", color=c, lw=1.0, label=name, alpha=0.9)
        if show <= 200:
            ax.plot(path[:, 0], path[:, 1], ".", color=c, ms=2.5)
        ax.plot(path[-1, 0], path[-1, 1], "o", mfc="none", mec=c, ms=8, mew=1.5)
    ax.plot(*runs["SGD"].trajectory[0], "ks", ms=6, label="x₀")
    ax.plot(*star, "k*", ms=11, label="minimum")
    ax.legend(fontsize=7, loc=legend_loc, ncol=2)


def _loss_plot(ax, runs, title):
    viz.line_plot(ax, {n: np.arange(len(r.losses)) for n, r in runs.items()},
                  {n: r.losses for n, r in runs.items()}, marker=None, logy=True,
                  xlabel="iteration k", ylabel="f(x_k) − f*", title=title, lw=1.1)
    ax.axhline(TOL, color="0.4", lw=0.8, ls=":")
    ax.set_ylim(bottom=1e-20)


@section("optimizers", title="Optimizers: momentum, Nesterov, Adam, RMSprop, AdaGrad",
         chapter="9.5",
         description="SGD, momentum, Nesterov, Adam, RMSprop and AdaGrad on an ill-conditioned "
                     "quadratic and on Rosenbrock: trajectories, losses, the chapter's "
                     "comparison table with measured numbers, and the update rules' "
                     "predictions held against the runs.")
def run(ctx):
    """Chapter 9.5, Adam, RMSprop, AdaGrad and the comparison of optimizers."""
    # -- the problems and the learning rates ---------------------------------------------------
    ctx.status("constants")
    Lq = cm.analysis.estimate_L(quadratic, np.zeros(2), rng=0).value
    mq = cm.analysis.estimate_mu(quadratic, np.zeros(2), rng=0).value
    Lr = cm.analysis.estimate_L(rosenbrock, np.ones(2), rng=0).value
    mr = cm.analysis.estimate_mu(rosenbrock, np.ones(2), rng=0).value
    rates = {}
    for prob, L in (("quadratic", Lq), ("Rosenbrock", Lr)):
        rates[prob] = {"SGD": 1.0 / L, "momentum": 1.0 / L, "Nesterov": 1.0 / L,
                       **ADAPTIVE_RATES[prob]}
    ctx.metric("quadratic_L_mu", [Lq, mq])
    ctx.metric("rosenbrock_L_mu_at_minimum", [Lr, mr])
    ctx.metric("learning_rates", rates)
    ctx.text(
        "Two problems. An ill-conditioned quadratic f(x) = ½xᵀAx with eigenvalues 1 and 50 "
        "(κ = 50), its eigenvectors rotated by 30° from the axes (AdaGrad, RMSprop and Adam "
        "scale each coordinate separately, and an axis-aligned problem would flatter them), "
        f"from x₀ = {QUAD_X0.tolist()}; and Rosenbrock's f(x, y) = (1 − x)² + 100(y − x²)² "
        f"from {ROSEN_X0.tolist()}, minimum 0 at (1, 1), where the Hessian has L = {Lr:.5g} and "
        f"μ = {mr:.4g} (κ ≈ {Lr / mr:.0f}, estimated with `cm.analysis`). Every optimizer runs "
        "through `cm.optimize.minimize` with the defaults of `cm.optim` (momentum 0.9, "
        "β₁ = 0.9, β₂ = 0.999, RMSprop's decay 0.9, ε as in the constructors). Learning "
        "rates: SGD, momentum and Nesterov use the chapter's α = 1/L, L estimated at the "
        f"minimiser (1/{Lq:.4g} and 1/{Lr:.5g}); the adaptive methods, whose step does not "
        "scale with the gradient, were tuned by a sweep over 2⁻¹⁰ … 2³ in factors of 2 "
        "(fewest iterations to f − f* < 1e-8 among the rates whose loss stays there, else "
        "the lowest final loss): Adam 1 and 2⁻⁴, RMSprop 2⁻⁷ and 2⁻⁹, AdaGrad 2 and 1 "
        "(quadratic and Rosenbrock). The chapter's \"SGD\" row is run with the full gradient "
        "here, i.e. plain gradient descent. Adam at 2⁻³ reaches 1e-8 on Rosenbrock sooner, then "
        "leaves it again: a constant-rate Adam is not guaranteed to settle.")

    # -- the quadratic ---------------------------------------------------------------------------
    ctx.status("quadratic")
    Kq = ctx.size(800, 600)
    quad = run_all(quadratic, QUAD_X0, rates["quadratic"], Kq)
    q_iters = {n: iterations_to(r.losses, TOL) for n, r in quad.items()}
    q_factor = {n: tail_factor(np.linalg.norm(np.asarray(r.trajectory), axis=1))
                for n, r in quad.items()}
    alpha = rates["quadratic"]["SGD"]
    beta = 0.9
    predicted = {
        "SGD": max(abs(1.0 - alpha * lam) for lam in EIGENVALUES),
        "momentum": max(momentum_factor(alpha, lam, beta) for lam in EIGENVALUES),
        "Nesterov": max(momentum_factor(alpha, lam, beta, nesterov=True)
                        for lam in EIGENVALUES),
        "Adam": math.sqrt(0.9),
    }
    ctx.check("contraction factor per step, measured (slope of log‖x_k‖) = predicted: SGD "
              "max|1 − αλ|, momentum and Nesterov spectral radii of their recursions",
              [predicted[n] for n in ("SGD", "momentum", "Nesterov")],
              [q_factor[n] for n in ("SGD", "momentum", "Nesterov")], rtol=2e-3)
    ctx.check("momentum beats plain gradient descent at the same α = 1/L "
              "(iterations to f − f* < 1e-8)", q_iters["SGD"] or math.inf,
              q_iters["momentum"] or math.inf, cmp="<")
    ctx.check("Adam ends at rate √β₁ (heavy ball in its complex regime once v̂ settles)",
              predicted["Adam"], q_factor["Adam"], rtol=2e-3)
    ctx.text(
        f"On the quadratic with α = 1/L = 1/{Lq:.4g}: gradient descent contracts by "
        "max|1 − αλ| = 1 − 1/κ = 0.98 per step. Heavy-ball momentum with β = 0.9 has, on each "
        "eigenvalue, the recursion z² − (1 + β − αλ)z + β; for αλ in ((1 − √β)², (1 + √β)²), "
        "here all of [1/50, 1], its roots are complex with modulus √β = 0.949 whatever λ is, "
        "so momentum converges 2.6 times faster in the exponent at the same α. Nesterov's "
        "form in `cm.optim` (PyTorch's) has z² − (1 + β)(1 − αλ)z + β(1 − αλ): modulus "
        "√(β(1 − αλ)) = 0.939 on the slow direction. Adam ends in the same regime: once the "
        "second moment v̂ stops moving, it is heavy-ball momentum with β₁ on a rescaled "
        "problem, and the measured rate is √β₁.")

    # -- Rosenbrock ------------------------------------------------------------------------------
    ctx.status("Rosenbrock")
    Kr = ctx.size(2500, 1200)
    ros = run_all(rosenbrock, ROSEN_X0, rates["Rosenbrock"], Kr)
    r_iters = {n: iterations_to(r.losses, TOL) for n, r in ros.items()}

    # -- Adam's first step, AdaGrad's and RMSprop's effective rates ------------------------------
    ctx.status("adaptive rates")
    a_adam = rates["quadratic"]["Adam"]
    first = []
    for scale in (1e-3, 1.0, 1e3):
        opt = cm.optim.adam(a_adam)
        g0 = scale * cm.grad(quadratic)(QUAD_X0)
        u, _ = opt.update(g0, opt.init(QUAD_X0), QUAD_X0)
        first.append(np.abs(u) / a_adam)
    ctx.check("Adam's first step is α per coordinate (bias correction: m̂₁ = g, v̂₁ = g²), "
              "for gradients scaled by 1e-3, 1, 1e3", 1.0, np.array(first), rtol=1e-6)
    ctx.metric("adam_first_step_over_alpha", np.array(first))
    Ke = ctx.size(300, 200)
    eff = {}
    for name, ctor, lr in (("AdaGrad", cm.optim.adagrad, rates["quadratic"]["AdaGrad"]),
                           ("RMSprop", cm.optim.rmsprop, rates["quadratic"]["RMSprop"])):
        opt = ctor(lr)
        x, state, series = QUAD_X0.copy(), opt.init(QUAD_X0), []
        grad = cm.grad(quadratic)
        for _ in range(Ke):
            u, state = opt.update(grad(x), state, x)
            x = cm.optim.apply_updates(x, u)
            acc = state[0].sum_of_squares if name == "AdaGrad" else state[0].nu
            series.append(lr / (np.sqrt(acc) + (1e-10 if name == "AdaGrad" else 1e-8)))
        eff[name] = np.array(series)
    ctx.check("AdaGrad's effective rate α/(√v_k + ε) never increases (both coordinates)",
              0.0, float(np.max(np.diff(eff["AdaGrad"], axis=0))), cmp="<=")
    ctx.check("RMSprop's effective rate is not monotone: it rises again when the gradients "
              "shrink", True, bool(np.max(np.diff(eff["RMSprop"], axis=0)) > 0), cmp="==")

    # RMSprop's period-2 cycle: loss (α²/8)sᵀAs
    Kc = ctx.size(800, 500)
    cyc_alphas = [2.0 ** -6, 2.0 ** -5, 2.0 ** -4, 2.0 ** -3]
    cyc_meas, cyc_pred = [], []
    for a in cyc_alphas:
        res = cm.optimize.minimize(quadratic, QUAD_X0, "rmsprop", learning_rate=a, max_iter=Kc,
                                   tol=None)
        cyc_meas.append(float(np.mean(res.losses[-20:])))
        cyc_pred.append(rmsprop_cycle(a)[0])
    s_t = rmsprop_cycle(1.0)[1]
    ctx.check("RMSprop with constant α stalls on a period-2 cycle x = ±(α/2)s, s = sign(As): "
              "final loss = (α²/8)sᵀAs for α = 2⁻⁶ … 2⁻³", cyc_pred, cyc_meas, rtol=1e-5)
    ctx.metric("rmsprop_cycle", {"alphas": cyc_alphas, "measured": cyc_meas,
                                 "predicted": cyc_pred, "sign_vector": s_t})
    ctx.text(
        "Three predictions of the update rules. Adam's first step: with bias correction "
        "m̂₁ = g₁ and v̂₁ = g₁², so the step is α·g/(|g| + ε) = α per coordinate, whatever "
        "the scale of the gradient (without the correction it would be α(1 − β₁)/√(1 − β₂) "
        "≈ 3.2α). AdaGrad's effective rate α/(√v_k + ε) can only fall, v_k being a sum of "
        "squares: the chapter's \"learning rates only decrease\". RMSprop's v_k is a moving "
        "average, so its effective rate rises again as the gradients shrink, and with a "
        "constant α it never converges on a deterministic problem: near the minimum each "
        "step has size ≈ α per coordinate, and it settles on a period-2 cycle "
        "x = ±(α/2)s with s = sign(As) — here s = "
        f"{s_t.astype(int).tolist()} — at the loss (α²/8)sᵀAs, to four digits and more. "
        "That, not \"medium\" convergence, is what the chapter's table hides for RMSprop: it "
        "needs a decaying α (or Adam's long second-moment memory) to converge.")

    # -- the chapter's table, measured ---------------------------------------------------------
    ctx.status("table")
    mem, overhead, hyper = {}, {}, {}
    for name, (method, ctor) in OPTIMIZERS.items():
        used = cm.optimize.METHODS[method][1]  # what minimize passes beyond the defaults
        mem[name], overhead[name] = memory_per_parameter(ctor(0.1, **used))
        hyper[name] = []
        for p in inspect.signature(ctor).parameters.values():
            if p.default is inspect.Parameter.empty:
                hyper[name].append(p.name)
            elif p.name in used and used[p.name] != p.default:
                hyper[name].append(f"{p.name}={used[p.name]} (default {p.default})")
            else:
                hyper[name].append(f"{p.name}={p.default}")
    ctx.check("state floats per parameter, measured from opt.init: SGD 0, momentum 1, "
              "Nesterov 1, Adam 2, RMSprop 1, AdaGrad 1", [0, 1, 1, 2, 1, 1],
              [mem[n] for n in OPTIMIZERS], cmp="==")
    names_ok = all(set(CHAPTER_TABLE[n][2]) <= {h.split("=")[0] for h in hyper[n]}
                   for n in CHAPTER_TABLE)
    ctx.check("every hyperparameter the chapter's table names is a constructor argument",
              True, names_ok, cmp="==")

    def conv(name):
        qi, ri = q_iters[name], r_iters[name]
        qtxt = (f"quadratic: {qi} it, ρ = {q_factor[name]:.3f}" if qi is not None else
                f"quadratic: stalls at {quad[name].losses[-1]:.1e}")
        rtxt = (f"Rosenbrock: {ri} it" if ri is not None else
                f"Rosenbrock: {ros[name].losses[-1]:.1e} after {Kr}")
        return f"{qtxt}; {rtxt}"

    table = []
    for name in OPTIMIZERS:
        ch = CHAPTER_TABLE.get(name, ("—", "—", []))
        table.append([name, ch[0], conv(name), ch[1],
                      f"{mem[name]:g} per parameter (+{overhead[name]:g} scalars)",
                      ", ".join(ch[2]) or "—", ", ".join(hyper[name])])
    ctx.table(["optimizer", "convergence (chapter)", f"convergence (measured: iterations to "
               f"f − f* < {TOL:g})", "memory (chapter)", "memory (measured: state floats)",
               "hyperparameters (chapter)", "hyperparameters (constructor)"], table,
              caption="The chapter's comparison table (9.5), filled with measurements")
    detail = [[n, rates["quadratic"][n], q_iters[n], quad[n].losses[-1],
               q_factor[n] if q_iters[n] is not None else "stalls",
               predicted.get(n, "—"), rates["Rosenbrock"][n], r_iters[n], ros[n].losses[-1]]
              for n in OPTIMIZERS]
    ctx.table(["optimizer", "α (quadratic)", f"iterations to {TOL:g}", f"f after {Kq}",
               "measured factor ρ", "predicted ρ", "α (Rosenbrock)", f"iterations to {TOL:g}",
               f"f after {Kr}"], detail, caption="The runs behind the table (None: not reached)")
    ctx.metric("iterations_to_tol", {"quadratic": q_iters, "rosenbrock": r_iters})
    ctx.metric("final_loss", {"quadratic": {n: float(r.losses[-1]) for n, r in quad.items()},
                              "rosenbrock": {n: float(r.losses[-1]) for n, r in ros.items()}})
    ctx.metric("measured_factor_quadratic", q_factor)
    ctx.metric("state_floats_per_parameter", mem)
    ctx.text(
        "Reading the table against the chapter. Memory: the state of `opt.init` holds one "
        "array like the parameters for momentum, Nesterov, RMSprop and AdaGrad, two for Adam "
        "(m and v) and none for plain SGD, plus a step count and the current learning rate; "
        "the chapter's \"Medium\" for all three adaptive methods hides that Adam needs twice "
        "the memory of RMSprop or AdaGrad. Hyperparameters: the chapter leaves out ε, which "
        "all three adaptive constructors take, and momentum. Convergence: \"linear\" for SGD "
        "is right on a strongly convex problem with a good step (factor 1 − μ/L), and slow "
        "when κ is large: with κ ≈ 2500 at its minimum, Rosenbrock keeps gradient descent "
        "far from 1e-8 within the budget, while momentum at the same α gets there or much "
        "closer; Adam, tuned, is fast on both; AdaGrad's ever-falling rate makes it slow on "
        "Rosenbrock; RMSprop with a constant rate does not converge at all.")

    # -- figures ---------------------------------------------------------------------------------
    fig, axes = viz.new_figure(1, 2, size=(13, 5.0))
    _paths_plot(axes[0], lambda X, Y: 0.5 * (A[0, 0] * X * X + 2 * A[0, 1] * X * Y
                                             + A[1, 1] * Y * Y),
                (-4.6, 2.4), (-3.2, 1.8), quad, 150,
                [0.05, 0.3, 1, 3, 8, 15, 25, 40], False,
                "f = ½xᵀAx, κ = 50: the first 150 iterates", (0.0, 0.0), "lower right")
    _loss_plot(axes[1], quad, f"loss (dotted: {TOL:g}); α = 1/L for SGD, momentum, Nesterov")
    ctx.figure(fig, "quadratic",
               "The quadratic: paths of the six optimizers over the level sets (left; SGD "
               "creeps along the valley, momentum and Nesterov overshoot and spiral in, Adam "
               "and RMSprop move diagonally at first, since their steps are ≈ α·sign(g), and "
               "RMSprop ends bouncing across the minimum) and the loss on a log scale (right).")

    fig, axes = viz.new_figure(1, 2, size=(13, 5.0))
    _paths_plot(axes[0], lambda X, Y: (1 - X) ** 2 + 100 * (Y - X ** 2) ** 2,
                (-1.6, 1.5), (-0.6, 2.2), ros, Kr,
                [0.1, 1, 4, 16, 64, 256], False,
                f"Rosenbrock: all {Kr} iterates", (1.0, 1.0), "lower right")
    _loss_plot(axes[1], ros, "loss on Rosenbrock (dotted: 1e-8)")
    ctx.figure(fig, "rosenbrock",
               "Rosenbrock's banana valley: every method first drops into the valley, then "
               "follows it towards (1, 1) at very different speeds (right); circles mark "
               "where each run ended.")

    fig, axes = viz.new_figure(1, 2, size=(13, 4.2))
    kk = np.arange(1, Ke + 1)
    ys = {}
    for name in ("AdaGrad", "RMSprop"):
        for j in range(2):
            ys[f"{name}, coordinate {j + 1}"] = eff[name][:, j]
    viz.line_plot(axes[0], kk, ys, marker=None, logx=True, logy=True, xlabel="iteration k",
                  ylabel="α/(√v_k + ε)", title="effective per-coordinate rates (quadratic)")
    al = np.array(cyc_alphas)
    axes[1].plot(al, cyc_meas, "o", color=viz.COLORS[0], ms=6, label="measured final loss")
    fine = np.geomspace(al.min() / 1.5, al.max() * 1.5, 50)
    axes[1].plot(fine, [rmsprop_cycle(a)[0] for a in fine], "-", color="0.35", lw=1,
                 label="(α²/8)·sᵀAs")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("RMSprop learning rate α")
    axes[1].set_ylabel("loss where RMSprop stalls")
    axes[1].set_title("RMSprop's period-2 cycle: loss ∝ α²", fontsize=10)
    axes[1].grid(True, alpha=0.3)
    axes[1].legend(fontsize=8)
    ctx.figure(fig, "adaptive",
               "Left: AdaGrad's effective rates only fall, and after the first large "
               "gradients hardly move again; RMSprop's fall, then rise as the gradients "
               "shrink, until the iterates bounce. Right: the loss at which RMSprop "
               "with a constant α stalls, against the period-2 cycle's (α²/8)sᵀAs.")

"""Tour section ``clipping`` (chapter 9.4, gradient clipping).

Global-norm clipping (``cm.optim.clip_by_global_norm``) against per-value clipping
(``cm.optim.clip_by_value``) on two exploding-gradient problems: a valley with quartic walls
where plain gradient descent overshoots into ever steeper regions, and a deep scalar linear
chain (a 24-layer product) whose gradient is 10⁴ at the start.  Measured: divergence without
clipping, the bound αc on every clipped update, the direction (kept by the global norm,
changed per value), convergence, the range of learning rates that converge, and the
clipping formula itself on a handful of gradient trees.
"""

from __future__ import annotations

import math

import numpy as np

import calcml as cm
from calcml import viz
from calcml.tour import section
from calcml.tour.context import worst

O = cm.optim


def valley(w):
    """f(x, y) = ½(x² + 4y²) + ¼(x⁴ + y⁴): a valley with quartic walls, minimum 0 at 0.

    The Hessian at the minimum is diag(1, 4), so gradient descent is stable there for
    α < 2/4; far out the gradient grows like ‖w‖³ and a fixed step overshoots."""
    x, y = w[0], w[1]
    return 0.5 * (x * x + 4.0 * y * y) + 0.25 * (x ** 4 + y ** 4)


def valley_np(X, Y):
    return 0.5 * (X ** 2 + 4 * Y ** 2) + 0.25 * (X ** 4 + Y ** 4)


VALLEY_X0 = np.array([6.0, 4.0])
VALLEY_L_STAR = 4.0  # largest Hessian eigenvalue at the minimum

DEPTH = 24
CHAIN_X = np.array([1.0, -0.5, 0.8])
CHAIN_T = 0.5 * CHAIN_X  # the target map is x ↦ 0.5x: the product of the weights must be 0.5


def deep_chain(w):
    """½ mean((w_D ⋯ w_1 x − t)²): a depth-D scalar linear network on three samples.

    The gradient with respect to w_i is (P x − t)·x·P/w_i, P the product of the weights: with
    weights around 1.2 the product is ~10², and the gradient ~10⁴."""
    h = CHAIN_X
    for i in range(DEPTH):
        h = w[i] * h
    return 0.5 * cm.mean((h - CHAIN_T) ** 2)


def cosines(f, trajectory, clip, first=100):
    """cos(clip(∇f(x_k)), ∇f(x_k)) at the ``first`` iterates (where the clipping acts; later
    the gradient is small and the clip returns it unchanged), and whether the clip acted."""
    g_fn = cm.grad(f)
    state = clip.init(trajectory[0])
    cos, active = [], []
    for x in trajectory[:-1][:first]:
        g = g_fn(x)
        u, _ = clip.update(g, state, x)
        u = np.asarray(u)
        cos.append(float(np.dot(u, g) / (np.linalg.norm(u) * np.linalg.norm(g))))
        active.append(not np.array_equal(u, g))
    return np.array(cos), np.array(active)


def minimize(f, x0, opt, max_iter, tol=1e-10):
    with np.errstate(over="ignore", invalid="ignore"):  # the unclipped run overflows: expected
        return cm.optimize.minimize(f, x0, method=opt, max_iter=max_iter, tol=tol,
                                    stop="gradient", on_nonfinite="stop")


@section("clipping", title="Gradient clipping: global norm versus per value", chapter="9.4",
         description="Exploding gradients (a quartic valley, a deep linear chain): no "
                     "clipping diverges; global-norm clipping bounds the step and keeps the "
                     "direction, per-value clipping bends it.")
def run(ctx):
    """Chapter 9.4, gradient clipping."""
    _formula(ctx)
    _valley(ctx)
    _learning_rates(ctx)
    _deep_chain(ctx)


def _formula(ctx):
    ctx.status("the formula")
    rng = np.random.default_rng(0)
    c = 1.0
    clip = O.clip_by_global_norm(c)
    rows, rel_err, norm_err = [], [], []
    for scale in (1e-3, 0.2, 0.999, 1.001, 5.0, 1e3, 1e8):
        g = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
        norm = math.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
        g = {k: v * (scale / norm) for k, v in g.items()}
        gnorm = math.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
        u, _ = clip.update(g, clip.init(g))
        factor = min(1.0, c / gnorm)
        err = max(float(np.max(np.abs(u[k] - g[k] * factor) / np.max(np.abs(g[k] * factor))))
                  for k in g)
        unorm = math.sqrt(sum(float(np.sum(v * v)) for v in u.values()))
        rel_err.append(err)
        norm_err.append(abs(unorm - min(gnorm, c)) / min(gnorm, c))
        rows.append([gnorm, factor, unorm, err])
    zero = {"W": np.zeros((3, 4)), "b": np.zeros(4)}
    uz, _ = clip.update(zero, clip.init(zero))
    zero_ok = all(np.all(np.isfinite(v)) and not np.any(v) for v in uz.values())
    g32 = {"W": np.full((2, 2), 3.0, dtype=np.float32)}
    u32, _ = clip.update(g32, clip.init(g32))
    gv = rng.standard_normal(50) * 3
    cv = O.clip_by_value(1.5)
    uv, _ = cv.update(gv, cv.init(gv))
    ctx.text(
        "The chapter's two clipping rules. By the global norm, clip(g, c) = g·min(1, c/‖g‖), "
        "‖g‖ the norm over all parameters together (here a tree {W: 3×4, b: 4}): the update "
        "is left alone when ‖g‖ ≤ c and rescaled to norm c otherwise, direction unchanged. "
        "Per value, clipᵢ = sign(gᵢ)·min(|gᵢ|, c): each entry separately, which bounds each "
        "coordinate but changes the direction whenever some entries are clipped and others "
        "are not. Measured on gradients of norm 10⁻³ to 10⁸ with c = 1:")
    ctx.table(["‖g‖", "min(1, c/‖g‖)", "‖clip(g)‖", "max rel. |clip(g) − g·min(1, c/‖g‖)|"],
              rows, caption="clip_by_global_norm(1.0) on trees {W, b}")
    ctx.check("clip_by_global_norm: u = g·min(1, c/‖g‖) on 7 trees (max rel. error)", 0.0,
              worst(rel_err), atol=4e-16)
    ctx.check("clip_by_global_norm: ‖u‖ = min(‖g‖, c) (max rel. error)", 0.0, worst(norm_err),
              atol=1e-14)
    ctx.check("clip_by_global_norm at ‖g‖ = 0: zeros, no NaN (0/0 avoided)", True, zero_ok,
              cmp="==")
    ctx.check("clip_by_global_norm keeps float32 (and rescales it to norm c)", [True, True],
              [u32["W"].dtype == np.float32,
               abs(float(np.linalg.norm(u32["W"])) - c) < 1e-6], cmp="==")
    ctx.check("clip_by_value: u = sign(g)·min(|g|, c) exactly (max abs. diff.)", 0.0,
              float(np.max(np.abs(uv - np.sign(gv) * np.minimum(np.abs(gv), 1.5)))), atol=0.0)
    ctx.metric("formula_max_rel_error", worst(rel_err))


def _valley(ctx):
    ctx.status("quartic valley")
    alpha, c = 0.1, 10.0
    d = VALLEY_X0.size
    cv = c / math.sqrt(d)  # per-value bound with the same largest update norm αc
    max_iter = 2000
    runs = {
        "no clipping": O.sgd(alpha),
        f"clip_by_value({cv:.3g})": O.chain(O.clip_by_value(cv), O.sgd(alpha)),
        f"clip_by_global_norm({c:g})": O.chain(O.clip_by_global_norm(c), O.sgd(alpha)),
    }
    res = {k: minimize(valley, VALLEY_X0, opt, max_iter) for k, opt in runs.items()}
    none, val, glob = res.values()
    kv, kg = list(res)[1:]
    cos_g, act_g = cosines(valley, glob.trajectory, O.clip_by_global_norm(c))
    cos_v, act_v = cosines(valley, val.trajectory, O.clip_by_value(cv))
    growth = float(none.losses[-1] / none.losses[0])
    ctx.text(
        f"The valley f(x, y) = ½(x² + 4y²) + ¼(x⁴ + y⁴) from (6, 4), with α = {alpha}. Near "
        "the minimum the Hessian is diag(1, 4) and α = 0.1 is a comfortable step (stable "
        "for α < 2/4). But at the start ‖∇f‖ = 236: the first step lands at x = −16.2, where "
        "the gradient is 4 300, and each step overshoots further — the quartic wall makes the "
        "overshoot grow like x³: x_{k+1} ≈ −αx_k³. Without clipping the loss reaches "
        f"{none.losses[-1]:.3g} after {none.nit} steps and then overflows "
        "(`cm.optimize.minimize(..., on_nonfinite=\"stop\")` stops there). Global-norm "
        f"clipping with c = {c:g} caps every step at αc = {alpha * c:g}; per-value clipping "
        f"with c/√2 = {cv:.3g} caps it at the same αc but moves diagonally while both entries "
        "are clipped. Both walk down the wall in bounded steps until the gradient is smaller "
        "than the threshold, after which they are plain gradient descent and converge "
        f"linearly: in {val.nit} (per value) and {glob.nit} (global norm) steps to ‖∇f‖ < "
        "1e-10.")
    ctx.check("no clipping: the run goes non-finite (minimize status 3)", 3, none.status,
              cmp="==")
    ctx.check("no clipping: the loss grows by > 10²⁰ before overflowing", 1e20, growth,
              cmp=">")
    ctx.check(f"global norm: every update norm ≤ αc = {alpha * c:g} (measured max)",
              alpha * c * (1 + 1e-12), float(np.max(glob.update_norms)), cmp="<=")
    ctx.check(f"global norm: the largest update is exactly αc = {alpha * c:g}", alpha * c,
              float(np.max(glob.update_norms)), rtol=1e-12)
    ctx.check(f"per value: every update norm ≤ α·(c/√2)·√2 = {alpha * c:g}",
              alpha * c * (1 + 1e-12), float(np.max(val.update_norms)), cmp="<=")
    ctx.check("global norm: cos(clipped g, g) = 1 at every step (min over steps)", 1.0,
              float(np.min(cos_g)), atol=1e-12)
    ctx.check("per value: the direction changes while clipping (min cosine < 0.99)", 0.99,
              float(np.min(cos_v)), cmp="<")
    ctx.check("both clipped runs converge to the minimum 0 (‖x_K‖ ≤ 1e-9)", [True, True],
              [bool(r.success and np.linalg.norm(r.x) <= 1e-9) for r in (val, glob)],
              cmp="==")
    ctx.metric("valley_steps", {k: int(r.nit) for k, r in res.items()})
    ctx.metric("valley_no_clip_losses", none.losses.tolist())
    ctx.metric("valley_max_update_norm", {kv: float(np.max(val.update_norms)),
                                          kg: float(np.max(glob.update_norms))})
    ctx.metric("valley_min_cosine", {kv: float(np.min(cos_v)), kg: float(np.min(cos_g))})
    ctx.metric("valley_clipped_steps", {kv: int(act_v.sum()), kg: int(act_g.sum())})

    fig, axes = viz.new_figure(1, 3, size=(16, 4.8))
    fig.set_layout_engine(None)  # fixed: the constrained layout costs half a second here
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.11, top=0.93, wspace=0.2)
    paths = {"no clipping (2 steps)": none.trajectory[:3]}
    paths.update({k: r.trajectory[:40] for k, r in res.items() if k != "no clipping"})
    viz.contour_with_trajectory(axes[0], valley_np, (-17, 8), (-6, 6), paths,
                                levels=[1, 5, 20, 60, 150, 400, 1000, 3000, 10000], grid=120,
                                title="the valley: first steps (no clipping leaves the plot)")
    axes[0].set_aspect("auto")
    k = {n: np.arange(len(r.losses)) + 1.0 for n, r in res.items()}
    viz.line_plot(axes[1], k, {n: r.losses for n, r in res.items()}, logx=True, logy=True,
                  marker=None, xlabel="step k + 1", ylabel="f(x_k)",
                  title="loss: none diverges, both clipped runs converge")
    kk = np.arange(len(cos_v))
    axes[2].plot(kk, cos_v, "-o", ms=3, color=viz.COLORS[1], label=f"{kv}")
    axes[2].plot(np.arange(len(cos_g)), cos_g, "-s", ms=3, color=viz.COLORS[2], label=f"{kg}")
    axes[2].set_xlim(-0.5, 25)
    axes[2].set_xlabel("step k")
    axes[2].set_ylabel("cos(clip(∇f), ∇f)")
    axes[2].set_title("direction of the clipped gradient", fontsize=10)
    axes[2].grid(True, alpha=0.3)
    axes[2].legend(fontsize=8, loc="lower right")
    ctx.figure(fig, "valley",
               "Left: level sets of the valley and the first 40 iterates (squares: start, "
               "stars: last shown); global-norm clipping follows the gradient's direction in "
               "steps of length αc, per-value clipping first moves diagonally (both entries "
               "clipped), and the unclipped run "
               "jumps out of the picture at its first step. Middle: the loss (no clipping "
               "overflows after a few steps). Right: cosine between the clipped and the raw "
               "gradient: 1 for the global norm, below 1 per value while entries are clipped.")


def trap_threshold(c_eff):
    """The smallest α at which clipped gradient descent on the valley has period-2 orbits of
    clipped steps along an axis: α·c_eff ≥ 2r, r the distance from the minimum at which the
    axis gradient reaches c_eff (r³ + 4r = c_eff along y, r³ + r = c_eff along x).

    Such an orbit bounces between r₀ and r₀ − αc_eff with both points in the clipped region,
    a translation by ±αc_eff that neither grows nor shrinks: a neutral 2-cycle."""
    def root(k):
        r = np.roots([1.0, 0.0, k, -c_eff])
        return float(np.max(r[np.abs(r.imag) < 1e-12].real))

    return min(2 * root(4.0) / c_eff, 2 * root(1.0) / c_eff)


def _learning_rates(ctx):
    ctx.status("learning rates")
    alphas = ctx.size([0.05, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.55, 0.7],
                      [0.1, 0.2, 0.4, 0.55])
    c = 10.0
    cv = c / math.sqrt(2)
    max_iter = ctx.size(800, 400)
    methods = {"no clipping": (lambda a: O.sgd(a), None),
               "clip_by_value": (lambda a: O.chain(O.clip_by_value(cv), O.sgd(a)), cv),
               "clip_by_global_norm": (lambda a: O.chain(O.clip_by_global_norm(c), O.sgd(a)),
                                       c)}
    trap = {m: trap_threshold(ce) for m, (_, ce) in methods.items() if ce is not None}
    stable = 2 / VALLEY_L_STAR
    outcome = {m: [] for m in methods}
    steps = {m: [] for m in methods}
    cycles_ok = []
    for a in alphas:
        for m, (make, ce) in methods.items():
            r = minimize(valley, VALLEY_X0, make(a), max_iter)
            conv = bool(r.success)
            outcome[m].append("converged" if conv else
                              ("diverged" if r.status == 3 else "2-cycle"))
            steps[m].append(int(r.nit) if conv else np.nan)
            if ce is not None and not conv:
                # a neutral 2-cycle of clipped steps: x_K = x_{K−2}, each moving coordinate
                # moves by αc (per value) or the whole step has norm αc (global norm)
                t = r.trajectory
                du = t[-1] - t[-2]
                period2 = float(np.max(np.abs(t[-1] - t[-3]))) <= 1e-9
                if m == "clip_by_value":
                    moving = np.abs(du) > 1e-9
                    size_ok = bool(np.allclose(np.abs(du[moving]), a * ce, rtol=1e-9))
                else:
                    size_ok = abs(float(np.linalg.norm(du)) - a * ce) <= 1e-9 * a * ce
                cycles_ok.append(period2 and size_ok)
    rows = []
    for i, a in enumerate(alphas):
        theory = []
        for m in ("clip_by_value", "clip_by_global_norm"):
            theory.append("converges" if a < trap[m] else
                          ("fails" if a > stable else "may be trapped"))
        rows.append([a, *(outcome[m][i] for m in methods), *theory])
    ctx.text(
        "\"Robustness to the learning rate\" (the chapter's third benefit), measured: from "
        f"(6, 4), for each α, at most {max_iter} steps. Without clipping only the smallest "
        "step sizes survive the first steps. With clipping the far-out gradient no longer "
        "matters, and two thresholds decide. Once the gradient is below c the iteration is "
        "plain gradient descent, unstable at the minimum for α > 2/λ_max(∇²f(x*)) = "
        f"2/{VALLEY_L_STAR:g} = {stable:g}: clipping cannot fix that. And clipping itself "
        "creates traps: if two points r₀ > 0 and r₀ − αc on an axis both lie where the "
        "gradient exceeds c, the clipped steps carry the iterate from one to the other and "
        "back, forever — a neutral 2-cycle, possible as soon as αc ≥ 2r_c, r_c the distance "
        "at which the gradient reaches c (r³ + 4r = c along y). That threshold is α = "
        f"{trap['clip_by_global_norm']:.3f} for the global norm (c = {c:g}) and "
        f"{trap['clip_by_value']:.3f} per value (c/√2 = {cv:.3g}), below 2/L* because the "
        "quartic wall makes the gradient reach c closer to the minimum. Below it every "
        "clipped run converged; between it and 0.5 a run may or may not land in a cycle; "
        "every failed clipped run ended in exactly such a cycle.")
    ctx.table(["α", *methods, "theory, per value", "theory, global norm"], rows,
              caption="Outcome per learning rate on the valley")
    for m in ("clip_by_value", "clip_by_global_norm"):
        idx = [i for i, a in enumerate(alphas) if a < trap[m] or a > stable]
        ctx.check(f"{m}: converges for α < {trap[m]:.3f} (no 2-cycle possible) and fails "
                  f"for α > 2/L* = {stable:g}",
                  [bool(alphas[i] < trap[m]) for i in idx],
                  [outcome[m][i] == "converged" for i in idx], cmp="==")
    ctx.check("every failed clipped run ends in a 2-cycle of clipped steps (x_K = x_{K−2}, "
              "steps of size αc)", len(cycles_ok), sum(cycles_ok), cmp="==")
    ctx.check("no clipping converges for fewer step sizes than either clipping",
              min(sum(o == "converged" for o in outcome[m])
                  for m in ("clip_by_value", "clip_by_global_norm")),
              sum(o == "converged" for o in outcome["no clipping"]), cmp="<")
    ctx.metric("lr_alphas", alphas)
    ctx.metric("lr_outcome", outcome)
    ctx.metric("lr_trap_threshold", trap)
    ctx.metric("lr_steps", {m: [None if isinstance(v, float) else v for v in s]
                            for m, s in steps.items()})

    fig, ax = viz.new_figure(size=(7.6, 4.4))
    fig.set_layout_engine(None)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.12, top=0.93)
    for i, m in enumerate(methods):
        y = np.array(steps[m], dtype=float)
        ok = np.isfinite(y)
        ax.plot(np.array(alphas)[ok], y[ok], "-o", color=viz.COLORS[i], label=f"{m}: converged",
                ms=5)
        bad = [a for a, o in zip(alphas, outcome[m], strict=True) if o != "converged"]
        ax.plot(bad, [max_iter * 1.4 * (1.25 ** i)] * len(bad), "x", color=viz.COLORS[i],
                ms=8, mew=2, label=f"{m}: failed")
    ax.axvline(stable, color="0.3", ls="--", lw=1, label="2/L* = 0.5")
    for i, m in ((1, "clip_by_value"), (2, "clip_by_global_norm")):
        ax.axvline(trap[m], color=viz.COLORS[i], ls=":", lw=1.2,
                   label=f"{m}: 2-cycles possible from {trap[m]:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate α")
    ax.set_ylabel("steps to ‖∇f‖ < 1e-10 (× = failed)")
    ax.set_title("which step sizes converge from (6, 4)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper left", ncol=2)
    ax.set_ylim(10, max_iter * 40)
    ctx.figure(fig, "learning-rates",
               "Steps to convergence against α (crosses: failed; diverged without clipping, "
               "caught in a 2-cycle of clipped steps with it). Dotted: where clipped 2-cycles "
               "become possible; dashed: 2/L*, beyond which gradient descent is unstable at "
               "the minimum.")


def _deep_chain(ctx):
    ctx.status("deep chain")
    rng = np.random.default_rng(1)
    w0 = 1.2 + 0.15 * rng.standard_normal(DEPTH)
    alpha, c = 0.02, 1.0
    cv = c / math.sqrt(DEPTH)
    g0 = cm.grad(deep_chain)(w0)
    max_iter = ctx.size(3000, 1500)
    runs = {
        "no clipping": O.sgd(alpha),
        f"clip_by_value(1/√{DEPTH})": O.chain(O.clip_by_value(cv), O.sgd(alpha)),
        f"clip_by_global_norm({c:g})": O.chain(O.clip_by_global_norm(c), O.sgd(alpha)),
    }
    res = {k: minimize(deep_chain, w0, opt, max_iter) for k, opt in runs.items()}
    none, val, glob = res.values()
    kv, kg = list(res)[1:]
    cos_g, act_g = cosines(deep_chain, glob.trajectory, O.clip_by_global_norm(c))
    cos_v, act_v = cosines(deep_chain, val.trajectory, O.clip_by_value(cv))
    prod = {k: float(np.prod(r.x)) for k, r in res.items() if k != "no clipping"}
    ctx.text(
        f"An exploding gradient through depth: a scalar linear network of {DEPTH} layers, "
        "ŷ = w₂₄⋯w₁x, fitted to t = 0.5x on three samples. With weights drawn around 1.2 the "
        f"product is {np.prod(w0):.3g} and ‖∇f‖ = {np.linalg.norm(g0):.3g} (each ∂f/∂wᵢ "
        "carries the product of the other 23 weights). One step of α = 0.02 changes every "
        "weight by hundreds, after which the product and the gradient overflow. Clipped to "
        f"a global norm c = {c:g} (or to 1/√{DEPTH} per value, the same largest step), the "
        f"weights shrink by at most αc = {alpha * c:g} per step until the product is near "
        f"0.5; then the gradient falls below c and plain gradient descent converges. Here all "
        "the weights play nearly the same role, so their gradient entries are of similar "
        "size and per-value clipping bends the direction only slightly.")
    ctx.check("deep chain, no clipping: non-finite after the first step (status 3)", 3,
              none.status, cmp="==")
    ctx.check("deep chain: the initial gradient norm exceeds 10³·c", 1e3 * c,
              float(np.linalg.norm(g0)), cmp=">")
    ctx.check(f"deep chain, global norm: every update norm ≤ αc = {alpha * c:g}",
              alpha * c * (1 + 1e-12), float(np.max(glob.update_norms)), cmp="<=")
    ctx.check("deep chain, global norm: cos(clipped g, g) = 1 (min over steps)", 1.0,
              float(np.min(cos_g)), atol=1e-12)
    ctx.check("deep chain, per value: direction changed while clipping (min cos < 1 − 1e-6)",
              1 - 1e-6, float(np.min(cos_v)), cmp="<")
    ctx.check("deep chain: both clipped runs converge, product of weights = 0.5", [0.5, 0.5],
              [prod[kv], prod[kg]], atol=1e-8)
    ctx.check("deep chain: both clipped runs report success (‖∇f‖ < 1e-10)", [True, True],
              [bool(val.success), bool(glob.success)], cmp="==")
    ctx.metric("chain_initial_grad_norm", float(np.linalg.norm(g0)))
    ctx.metric("chain_steps", {k: int(r.nit) for k, r in res.items()})
    ctx.metric("chain_min_cosine", {kv: float(np.min(cos_v)), kg: float(np.min(cos_g))})
    ctx.metric("chain_clipped_steps", {kv: int(act_v.sum()), kg: int(act_g.sum())})

    fig, axes = viz.new_figure(1, 2, size=(12, 4.2))
    fig.set_layout_engine(None)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.22)
    k = {n: np.arange(len(r.losses)) for n, r in res.items()}
    viz.line_plot(axes[0], k, {n: r.losses for n, r in res.items()}, logy=True, marker=None,
                  xlabel="step k", ylabel="loss", title=f"depth-{DEPTH} linear chain: loss")
    none_k = np.arange(len(none.losses))
    axes[0].plot(none_k, none.losses, "o", color=viz.COLORS[0], ms=6)
    axes[0].annotate("no clipping: overflow\nafter this step", (none_k[-1], none.losses[-1]),
                     xytext=(30, -10), textcoords="offset points", fontsize=8,
                     arrowprops=dict(arrowstyle="->", color="0.3"))
    viz.line_plot(axes[1], {n: np.arange(len(r.grad_norms)) for n, r in res.items()},
                  {n: r.grad_norms for n, r in res.items()}, logy=True, marker=None,
                  xlabel="step k", ylabel="‖∇f(w_k)‖", title="gradient norm (dotted: c)")
    axes[1].plot(none_k, none.grad_norms, "o", color=viz.COLORS[0], ms=6)
    axes[1].axhline(c, color="0.4", ls=":", lw=1)
    ctx.figure(fig, "deep-chain",
               "The deep chain: without clipping the first step already overshoots and the "
               "next loss is astronomically large (then non-finite); both clippings descend "
               "in bounded steps while ‖∇f‖ > c (dotted) and converge linearly afterwards.")

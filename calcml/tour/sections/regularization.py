"""Tour section ``regularization`` (chapter 9.4, L1 and L2 regularization, elastic net).

Coefficient paths of a linear regression with correlated features under L2 (ridge), L1 by
the subgradient step of the chapter, L1 by the proximal step (soft-thresholding: ISTA) and
the elastic net, all run with :mod:`calcml.optim` links (``l2``, ``l1``, ``elastic_net``,
``proximal_l1``/``proximal_gradient``) over a grid of λ.  Measured: the count of exact zeros
per λ (only the proximal step produces them), the proximal Lasso and elastic net against
scikit-learn's coordinate descent, ridge against its closed form, and the parameterization of
the penalties (the chapter's λ₂‖θ‖² against the links' (λ₂/2)‖θ‖²).
"""

from __future__ import annotations

import numpy as np
import sympy
from matplotlib import colormaps
from sklearn.linear_model import ElasticNet, Lasso

import calcml as cm
from calcml import viz
from calcml.tour import section
from calcml.tour.context import worst

O = cm.optim

N_SAMPLES, N_FEATURES = 200, 10
#: (i, j, ρ): feature j is built with correlation ρ to feature i.
PAIRS = [(0, 1, 0.95), (2, 3, 0.8), (5, 6, 0.9)]
THETA_TRUE = np.array([2.0, 2.0, -2.5, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
NOISE = 1.0
EN_MIX = 0.5  # elastic net: λ₁ = EN_MIX·λ, λ₂ = (1 − EN_MIX)·λ


def make_data(seed=2024):
    """X (200 × 10) with correlated pairs (0, 1), (2, 3), (5, 6) and y = Xθ* + noise.

    θ* has four nonzeros: the pair (0, 1) both 2 (a correlated group), feature 2 (−2.5) with
    its correlated decoy 3 (0), and feature 4 (1); the pair (5, 6) is correlated noise."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((N_SAMPLES, N_FEATURES))
    X = Z.copy()
    for i, j, rho in PAIRS:
        X[:, j] = rho * X[:, i] + np.sqrt(1 - rho ** 2) * Z[:, j]
    y = X @ THETA_TRUE + NOISE * rng.standard_normal(N_SAMPLES)
    return X, y


class Problem:
    """f(θ) = mse(y, Xθ) = (1/n)‖Xθ − y‖², its gradient Aθ − b (A = 2XᵀX/n, b = 2Xᵀy/n) and
    its smoothness constant L = λ_max(A)."""

    def __init__(self, X, y):
        self.X, self.y = X, y
        n = len(y)
        self.A = 2.0 * X.T @ X / n
        self.b = 2.0 * X.T @ y / n
        eig = np.linalg.eigvalsh(self.A)
        self.L, self.mu = float(eig[-1]), float(eig[0])
        self.lambda_max = float(np.max(np.abs(self.b)))  # ‖∇f(0)‖∞: the Lasso's zero threshold

    def f(self, theta):
        return cm.losses.mse(self.y, self.X @ theta)

    def grad(self, theta):
        return self.A @ theta - self.b

    def run(self, opt, theta, max_iter, tol=None, trace=False):
        """Iterate ``opt`` (a cm.optim transformation) from ``theta``: (θ, iterations[, all θ_k]).

        Stops when the update is shorter than ``tol`` (or after ``max_iter`` updates)."""
        state = opt.init(theta)
        path = [theta] if trace else None
        k = 0
        for k in range(1, max_iter + 1):  # noqa: B007 (k is the count returned)
            u, state = opt.update(self.grad(theta), state, theta)
            theta = O.apply_updates(theta, u)
            if trace:
                path.append(theta)
            if tol is not None and float(np.linalg.norm(u)) < tol:
                break
        return (theta, k, np.array(path)) if trace else (theta, k)


def ridge_closed_form(X, y, lam):
    """argmin mse(y, Xθ) + (λ/2)‖θ‖²: (XᵀX + (nλ/2) I)⁻¹ Xᵀy."""
    n, p = X.shape
    return np.linalg.solve(X.T @ X + 0.5 * n * lam * np.eye(p), X.T @ y)


def sklearn_lasso(X, y, lam):
    """argmin mse + λ‖θ‖₁ by scikit-learn: its objective (1/2n)‖y − Xθ‖² + a‖θ‖₁ is ours
    divided by 2, so a = λ/2."""
    return Lasso(alpha=lam / 2, fit_intercept=False, tol=1e-13, max_iter=200_000).fit(X, y).coef_


def sklearn_elastic_net(X, y, l1, l2):
    """argmin mse + λ₁‖θ‖₁ + (λ₂/2)‖θ‖² by scikit-learn.

    Its objective (1/2n)‖y − Xθ‖² + a·r‖θ‖₁ + (a(1 − r)/2)‖θ‖² is ours divided by 2 when
    a·r = λ₁/2 and a(1 − r) = λ₂/2: a = (λ₁ + λ₂)/2, r = λ₁/(λ₁ + λ₂)."""
    a = (l1 + l2) / 2
    return ElasticNet(alpha=a, l1_ratio=l1 / (l1 + l2), fit_intercept=False, tol=1e-13,
                      max_iter=200_000).fit(X, y).coef_


def _features_cmap():
    cmap = colormaps["tab10"]
    return [cmap(i) for i in range(N_FEATURES)]


@section("regularization", title="L1, L2 and elastic net: coefficient paths and exact zeros",
         chapter="9.4",
         description="Ridge, L1 (subgradient and proximal) and elastic-net paths on correlated "
                     "features; exact zeros per λ; vs scikit-learn and the ridge closed form.")
def run(ctx):
    """Chapter 9.4, L1 and L2 regularization."""
    X, y = make_data()
    prob = Problem(X, y)
    _setup(ctx, prob)
    paths = _paths(ctx, prob)
    _zeros(ctx, prob, paths)
    _trace(ctx, prob, paths)
    _parameterization(ctx, prob)


def _setup(ctx, prob):
    ctx.status("setup")
    rng = np.random.default_rng(1)
    pts = [rng.standard_normal(N_FEATURES) for _ in range(3)]
    diff = max(float(np.max(np.abs(cm.grad(prob.f)(t) - prob.grad(t)))) for t in pts)
    corr = np.corrcoef(prob.X, rowvar=False)
    ctx.text(
        f"A regression with {N_SAMPLES} samples and {N_FEATURES} features, seeded: three "
        "correlated pairs, (0, 1) with ρ = 0.95, (2, 3) with 0.8 and (5, 6) with 0.9; the "
        "true coefficients θ* = (2, 2, −2.5, 0, 1, 0, 0, 0, 0, 0): a correlated group (0, 1), a "
        "relevant feature 2 with its correlated decoy 3, feature 4, and five pure-noise "
        "features. The loss is f(θ) = mse(y, Xθ) = (1/n)‖Xθ − y‖²; its gradient "
        "2Xᵀ(Xθ − y)/n is written by hand for speed (thousands of steps per λ) and checked "
        f"against `cm.grad` of `cm.losses.mse`. L = λ_max(∇²f) = {prob.L:.4g}, μ = "
        f"{prob.mu:.4g} (condition number {prob.L / prob.mu:.0f}, from the correlations).")
    ctx.check("hand-written ∇f = cm.grad(mse objective) at 3 points (max abs. diff.)", 0.0,
              diff, atol=1e-12)
    ctx.metric("L", prob.L)
    ctx.metric("mu", prob.mu)
    ctx.metric("lambda_max", prob.lambda_max)
    ctx.metric("sample_correlations", [round(float(corr[i, j]), 4) for i, j, _ in PAIRS])


def _paths(ctx, prob):
    ctx.status("paths")
    lams = prob.lambda_max * np.logspace(0.2, -3, ctx.size(25, 10))
    X, y, p = prob.X, prob.y, N_FEATURES
    alpha = 1.0 / prob.L
    alpha_sub = 0.1 / prob.L
    k_sub = 2000
    out = {k: [] for k in ("ridge", "l1_sub", "l1_prox", "en")}
    ref = {k: [] for k in ("ridge", "lasso", "en")}
    iters = {k: [] for k in ("ridge", "l1_prox", "en")}
    th = {k: np.zeros(p) for k in out}  # warm starts along the path (from large λ down)
    sub_starts = []
    for lam in lams:
        # ridge: chain(l2(λ), sgd(α)), α = 1/(L + λ)
        th["ridge"], k = prob.run(O.chain(O.l2(lam), O.sgd(1.0 / (prob.L + lam))),
                                  th["ridge"], 50_000, tol=1e-13)
        iters["ridge"].append(k)
        # L1 by the chapter's subgradient step: θ ← θ − α∇f − αλ sign θ (fixed step count)
        sub_starts.append(th["l1_sub"])
        th["l1_sub"], _ = prob.run(O.chain(O.l1(lam), O.sgd(alpha_sub)), th["l1_sub"], k_sub)
        # L1 by the proximal step (ISTA): proximal_gradient(α, λ)
        th["l1_prox"], k = prob.run(O.proximal_gradient(alpha, lam), th["l1_prox"], 50_000,
                                    tol=1e-13)
        iters["l1_prox"].append(k)
        # elastic net, proximal: the L2 part joins the smooth gradient, the L1 part the prox
        l1, l2 = EN_MIX * lam, (1 - EN_MIX) * lam
        a_en = 1.0 / (prob.L + l2)
        th["en"], k = prob.run(O.chain(O.l2(l2), O.scale_by_learning_rate(a_en),
                                       O.proximal_l1(l1, a_en)), th["en"], 50_000, tol=1e-13)
        iters["en"].append(k)
        for key in out:
            out[key].append(th[key])
        ref["ridge"].append(ridge_closed_form(X, y, lam))
        ref["lasso"].append(sklearn_lasso(X, y, lam))
        ref["en"].append(sklearn_elastic_net(X, y, l1, l2))
    out = {k: np.array(v) for k, v in out.items()}
    ref = {k: np.array(v) for k, v in ref.items()}
    d_ridge = float(np.max(np.abs(out["ridge"] - ref["ridge"])))
    d_lasso = float(np.max(np.abs(out["l1_prox"] - ref["lasso"])))
    d_en = float(np.max(np.abs(out["en"] - ref["en"])))
    ctx.text(
        f"The paths: {len(lams)} values of λ from {lams[0]:.3g} down to {lams[-1]:.3g} "
        "(log-spaced, warm-started from the previous λ), each run to convergence (update norm "
        "< 1e-13) except the subgradient method, which has no such stopping point and runs "
        f"{k_sub} steps. Ridge is `chain(l2(λ), sgd(1/(L + λ)))` for mse + (λ/2)‖θ‖², whose "
        "minimizer is (XᵀX + (nλ/2)I)⁻¹Xᵀy. L1 by the chapter's subgradient update θ ← θ − "
        f"α∇f − αλ·sign θ is `chain(l1(λ), sgd(α))`, with α = 0.1/L = {alpha_sub:.3g} (at "
        "α = 1/L its iterates hover too far from zero to show anything). L1 by the proximal "
        "step is `proximal_gradient(1/L, λ)`: θ ← S_{αλ}(θ − α∇f), S_t(z) = sign(z)·max(|z| − "
        "t, 0), exactly ISTA. The elastic net mse + λ₁‖θ‖₁ + (λ₂/2)‖θ‖² (λ₁ = λ₂ = λ/2) is "
        "run proximally as well, `chain(l2(λ₂), scale_by_learning_rate(α), "
        "proximal_l1(λ₁, α))`: the differentiable L2 term joins the gradient, the L1 term is "
        "soft-thresholded. scikit-learn's `Lasso` and `ElasticNet` minimize (1/2n)‖y − Xθ‖² + "
        "a·r‖θ‖₁ + (a(1 − r)/2)‖θ‖², our objective divided by 2: the match is a = λ/2 for the "
        "Lasso, and a = (λ₁ + λ₂)/2, r = λ₁/(λ₁ + λ₂) for the elastic net.")
    ctx.check("ridge by gradient descent (l2 link) = closed form (XᵀX + (nλ/2)I)⁻¹Xᵀy, max over "
              "the path", 0.0, d_ridge, atol=1e-9)
    ctx.check("proximal L1 (ISTA) = sklearn Lasso(alpha = λ/2), max abs. diff. over the path",
              0.0, d_lasso, atol=1e-8)
    ctx.check("proximal elastic net = sklearn ElasticNet(alpha = (λ₁+λ₂)/2, l1_ratio = "
              "λ₁/(λ₁+λ₂)), max abs. diff. over the path", 0.0, d_en, atol=1e-8)
    ctx.metric("lambdas", lams.tolist())
    ctx.metric("max_diff_ridge_closed_form", d_ridge)
    ctx.metric("max_diff_lasso_sklearn", d_lasso)
    ctx.metric("max_diff_elastic_net_sklearn", d_en)
    ctx.metric("iterations_per_lambda", iters)

    colors = _features_cmap()
    fig, axes = viz.new_figure(2, 2, size=(13.5, 9.0), sharex=True)
    fig.set_layout_engine(None)  # a fixed layout: the constrained one costs a second here
    fig.subplots_adjust(left=0.06, right=0.985, bottom=0.07, top=0.96, wspace=0.16, hspace=0.16)
    panels = [("ridge", "L2 (ridge): GD with l2(λ); × closed form", ref["ridge"]),
              ("l1_sub", f"L1, subgradient: chain(l1(λ), sgd({alpha_sub:.2g})), "
                         f"{k_sub} steps", None),
              ("l1_prox", "L1, proximal (ISTA); × sklearn Lasso", ref["lasso"]),
              ("en", "elastic net (λ₁ = λ₂ = λ/2), proximal; × sklearn ElasticNet", ref["en"])]
    for ax, (key, title, refv) in zip(axes.ravel(), panels, strict=True):
        for j in range(N_FEATURES):
            style = "-" if THETA_TRUE[j] != 0 else "--"
            ax.plot(lams, out[key][:, j], style, color=colors[j], lw=1.5 if style == "-" else 1,
                    label=f"θ{j} (true {THETA_TRUE[j]:g})")
            if refv is not None:
                ax.plot(lams[::2], refv[::2, j], "x", color=colors[j], ms=4)
        ax.axhline(0, color="0.4", lw=0.7)
        ax.axvline(prob.lambda_max, color="0.5", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9.5)
        ax.grid(True, alpha=0.3)
        ax.set_ylabel("coefficient")
    for ax in axes[1]:
        ax.set_xlabel("λ (dotted: λ_max = ‖∇f(0)‖∞)")
    axes[0, 0].legend(fontsize=7, ncol=2, loc="upper right")
    ctx.figure(fig, "paths",
               "Coefficient paths against λ (log scale): solid lines are the truly nonzero "
               "coefficients, dashed the truly zero ones; crosses are the references (closed "
               "form, scikit-learn). Ridge shrinks all coefficients smoothly and sets none to "
               "zero. The proximal Lasso zeroes coefficients one by one as λ grows, all of "
               "them beyond λ_max; the subgradient method follows it only roughly, with "
               "jittering coefficients where the Lasso has zeros. The elastic net shrinks the "
               "correlated pair (0, 1) together where the Lasso first picks feature 0 alone.")
    return {"lams": lams, "out": out, "ref": ref, "alpha": alpha, "alpha_sub": alpha_sub,
            "k_sub": k_sub, "sub_starts": np.array(sub_starts)}


def _zeros(ctx, prob, paths):
    ctx.status("zeros")
    lams, out, p = paths["lams"], paths["out"], N_FEATURES
    a_sub = paths["alpha_sub"]
    zeros = {k: [int(np.sum(v == 0.0)) for v in out[k]] for k in out}
    near = [int(np.sum(np.abs(v) <= 2 * a_sub * lam)) for v, lam in zip(out["l1_sub"], lams,
                                                                       strict=True)]
    lasso0 = out["l1_prox"] == 0.0
    hover = [float(np.max(np.abs(s[z])) / (a_sub * lam)) for s, z, lam in
             zip(out["l1_sub"], lasso0, lams, strict=True) if z.any()]
    # where the Lasso solution θ* has no zero, the signs settle and the subgradient step is
    # gradient descent on a quadratic: ‖θ_K − θ*‖ ≤ (1 − αμ)^K ‖θ_0 − θ*‖
    rate = (1.0 - a_sub * prob.mu) ** paths["k_sub"]
    conv, conv_ratio = [], []
    for s, q, z, s0 in zip(out["l1_sub"], out["l1_prox"], lasso0, paths["sub_starts"],
                           strict=True):
        if not z.any():
            conv.append(float(np.max(np.abs(s - q))))
            conv_ratio.append(float(np.linalg.norm(s - q) / (rate * np.linalg.norm(s0 - q))))
    all_zero_pred = [bool(lam >= prob.lambda_max) for lam in lams]
    all_zero_meas = [z == p for z in zeros["l1_prox"]]
    zp = zeros["l1_prox"]
    monotone = all(a >= b for a, b in zip(zp, zp[1:]))  # lams decrease along the list
    agree = sum(a == b for a, b in zip(near, zp, strict=True))
    rows = [[lam, *(zeros[k][i] for k in ("ridge", "l1_sub", "l1_prox", "en")), near[i]]
            for i, lam in enumerate(lams)]
    ctx.text(
        "Exact zeros, counted as θⱼ == 0.0 in floating point. The proximal step sets "
        "θⱼ = 0 exactly whenever |θⱼ − α∂ⱼf| ≤ αλ, and at the Lasso solution that is the "
        "optimality condition |∂ⱼf(θ)| ≤ λ for θⱼ = 0: the zeros are real, and θ = 0 is the "
        f"solution exactly when λ ≥ λ_max = ‖∇f(0)‖∞ = {prob.lambda_max:.4g}. The subgradient "
        "step never lands on 0: a coordinate whose optimum is 0 crosses it at every step, "
        "moving by α(λ ± ∂ⱼf), and keeps a magnitude of the order of αλ, "
        f"here at most {max(hover):.2f}·αλ (hovering, not converging): counting "
        "|θⱼ| ≤ 2αλ instead of θⱼ == 0 recovers the Lasso's count of zeros at "
        f"{agree} of the {len(lams)} values of λ (the others have a Lasso coefficient that is "
        "nonzero but smaller than 2αλ). Where the Lasso "
        "solution has no zero (the smallest λ), the objective is smooth near it and the "
        "subgradient method is gradient descent on a quadratic once the signs settle, with "
        "the linear rate ‖θ_K − θ*‖ ≤ (1 − αμ)^K‖θ₀ − θ*‖ (measured distance / bound: at "
        f"most {max(conv_ratio):.2g}; distance {max(conv):.1e}). "
        "Ridge shrinks but never zeroes. The chapter's promise \"many parameters become exactly "
        "zero\" holds for the Lasso *solution* and for the proximal method, not for its "
        "update rule θ − α∇L − αλ·sign θ.")
    ctx.table(["λ", "ridge", "L1 subgradient", "L1 proximal", "elastic net (prox.)",
               "subgradient |θ| ≤ 2αλ"], rows,
              caption="Exact zeros (θⱼ == 0) out of 10 along the path")
    ctx.check("proximal L1: all 10 coefficients exactly 0 iff λ ≥ λ_max = ‖∇f(0)‖∞ (per λ)",
              all_zero_pred, all_zero_meas, cmp="==")
    ctx.check("proximal L1: exact zeros at the largest λ > at the smallest", zp[-1], zp[0],
              cmp=">")
    ctx.check("proximal L1: the count of exact zeros never decreases as λ grows (on this "
              "data)", True, monotone, cmp="==")
    ctx.check("subgradient L1: exact zeros (|θ| == 0) over the whole path", 0,
              sum(zeros["l1_sub"]), cmp="==")
    ctx.check("ridge (L2): exact zeros over the whole path", 0, sum(zeros["ridge"]), cmp="==")
    ctx.check("subgradient L1 where the Lasso has zeros: max |θⱼ| / (αλ) ≤ 2.5 (hovering at "
              "the scale αλ)", 2.5, worst(hover), cmp="<=")
    ctx.check("subgradient L1 where the Lasso has no zero: ‖θ_K − θ*‖ / ((1 − αμ)^K ‖θ₀ − θ*‖) "
              "≤ 1 (linear rate of GD)", 1.0, worst(conv_ratio), cmp="<=")
    ctx.metric("exact_zeros", zeros)
    ctx.metric("subgradient_near_zero_count", near)
    ctx.metric("lambdas_where_near_zero_count_equals_lasso_zeros", agree)
    ctx.metric("subgradient_hover_over_alpha_lambda_max", worst(hover))
    ctx.metric("subgradient_rate_ratio", conv_ratio)

    # the correlated pair (0, 1): the Lasso picks one, the elastic net shares
    lasso_gap, en_gap = [], []
    for v, w in zip(out["l1_prox"], out["en"], strict=True):
        if abs(v[0]) + abs(v[1]) > 0 and abs(w[0]) + abs(w[1]) > 0:
            lasso_gap.append(abs(v[0] - v[1]) / (abs(v[0]) + abs(v[1])))
            en_gap.append(abs(w[0] - w[1]) / (abs(w[0]) + abs(w[1])))
    ctx.check("correlated pair (0, 1): mean |θ₀ − θ₁|/(|θ₀| + |θ₁|), elastic net < Lasso",
              float(np.mean(lasso_gap)), float(np.mean(en_gap)), cmp="<")
    ctx.metric("pair01_relative_gap", {"lasso": float(np.mean(lasso_gap)),
                                       "elastic_net": float(np.mean(en_gap))})

    fig, ax = viz.new_figure(size=(7.6, 4.4))
    viz.line_plot(ax, lams, {"ridge (L2)": zeros["ridge"], "L1 subgradient": zeros["l1_sub"],
                             "L1 proximal (ISTA)": zp, "elastic net, proximal": zeros["en"]},
                  logx=True, xlabel="λ", ylabel="exact zeros (θⱼ == 0) out of 10",
                  title="Exact zeros along the path", drawstyle="steps-mid")
    ax.lines[0].set(marker="s", markersize=7, mfc="none", lw=3)  # ridge, under the subgradient
    ax.plot(lams, near, ":", color=viz.COLORS[1], lw=1.3,
            label="L1 subgradient: |θⱼ| ≤ 2αλ (not 0)")
    ax.axvline(prob.lambda_max, color="0.5", lw=0.8, ls=":")
    ax.set_ylim(-0.5, N_FEATURES + 0.5)
    ax.legend(fontsize=8, loc="upper left")
    ctx.figure(fig, "zeros",
               "Count of exactly-zero coefficients per λ. Only the proximal methods produce "
               "them; the subgradient method (dotted: its coefficients smaller than 2αλ) has "
               "as many near-zeros as the Lasso has zeros, but none equal to 0.")


def _trace(ctx, prob, paths):
    ctx.status("one λ, iterate by iterate")
    lams, out = paths["lams"], paths["out"]
    # a λ where the Lasso has a mix of zeros and nonzeros
    mix = [i for i, v in enumerate(out["l1_prox"]) if 3 <= np.sum(v == 0) <= 7]
    i = mix[len(mix) // 2]
    lam = float(lams[i])
    zero_j = [j for j in range(N_FEATURES) if out["l1_prox"][i][j] == 0]
    j = 3 if 3 in zero_j else zero_j[0]  # the decoy of feature 2, if zero here
    start = np.full(N_FEATURES, 2.0)
    K = ctx.size(3000, 1200)
    a = paths["alpha"]
    runs = {
        "subgradient, α = 1/L": O.chain(O.l1(lam), O.sgd(a)),
        "subgradient, α = 0.1/L": O.chain(O.l1(lam), O.sgd(0.1 * a)),
        "subgradient, α_k = (1/L)/√(k+1)": O.chain(O.l1(lam), O.sgd(O.inverse_sqrt(a))),
        "proximal, α = 1/L": O.proximal_gradient(a, lam),
    }
    traces = {}
    for name, opt in runs.items():
        traces[name] = prob.run(opt, start, K, trace=True)[2]
    prox = traces["proximal, α = 1/L"]
    hit = int(np.argmax(prox[:, j] == 0.0))
    stays = bool(np.all(prox[hit:, j] == 0.0)) and prox[hit, j] == 0.0
    sub_zero = sum(int(np.sum(t == 0.0)) for n, t in traces.items() if n.startswith("sub"))
    final = {n: float(abs(t[-1, j])) for n, t in traces.items()}
    ctx.check(f"λ = {lam:.3g}: proximal step reaches θ{j} = 0 exactly at a finite step and "
              "stays there", True, stays, cmp="==")
    ctx.check("subgradient runs (3 step-size rules): entries exactly 0 over all iterates and "
              "coordinates", 0, sub_zero, cmp="==")
    ctx.metric("trace_lambda", lam)
    ctx.metric("trace_coordinate", j)
    ctx.metric("trace_proximal_zero_at_step", hit)
    ctx.metric("trace_final_abs_theta_j", final)
    ctx.text(
        f"One λ = {lam:.3g}, iterate by iterate, from θ₀ = (2, …, 2): "
        f"the coefficient θ{j}, zero at the Lasso solution. The proximal step sets it to 0 "
        f"exactly at step {hit} and it stays there. The subgradient step with a constant α "
        "keeps it at a magnitude of about αλ (smaller α, smaller jitter, slower progress); "
        "with the decaying α_k of the subgradient method's convergence theory the jitter "
        f"decays like α_k λ, yet after {K} steps |θ{j}| = "
        f"{final['subgradient, α_k = (1/L)/√(k+1)']:.1e}, still not 0.")
    fig, ax = viz.new_figure(size=(8.4, 4.6))
    fig.set_layout_engine(None)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.11, top=0.93)
    k1 = np.arange(K + 1) + 1.0
    for c, (name, t) in enumerate(traces.items()):
        v = np.abs(t[:, j])
        keep = v > 0
        ax.plot(k1[keep], v[keep], "-", lw=0.9, color=viz.COLORS[c], label=name)
    ax.set_yscale("log")
    lo = min(float(np.min(np.abs(t[:, j])[np.abs(t[:, j]) > 0])) for t in traces.values())
    ax.set_ylim(lo / 3, 5.0)
    ax.axvline(hit + 1, color=viz.COLORS[3], lw=0.9, ls="--")
    ax.plot([hit + 1], [lo / 3], "v", color=viz.COLORS[3], ms=10, clip_on=False, zorder=5,
            label=f"proximal: θ{j} = 0 exactly from step {hit} on")
    for c, f_ in ((0, 1.0), (1, 0.1)):
        ax.axhline(f_ * a * lam, color=viz.COLORS[c], lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("step k + 1")
    ax.set_ylabel(f"|θ{j}|")
    ax.set_title(f"λ = {lam:.3g}: a coefficient whose Lasso value is 0 (dotted: αλ)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ctx.figure(fig, "trace",
               "The subgradient step jitters around zero at the scale αλ (dotted) and never "
               "hits it; the proximal step (soft-thresholding) lands on 0 exactly, marked by "
               "the triangle, after which the curve stops on the log scale.")


def _parameterization(ctx, prob):
    ctx.status("parameterization")
    rng = np.random.default_rng(4)
    theta = rng.uniform(0.5, 2.0, N_FEATURES) * rng.choice([-1.0, 1.0], N_FEATURES)
    l1w, l2w = 0.3, 0.7
    zero = np.zeros(N_FEATURES)

    def added(transform):
        """What a penalty link adds to a zero gradient at θ."""
        u, _ = transform.update(zero, transform.init(theta), theta)
        return np.asarray(u)

    def norm1(t):
        return cm.sum(cm.abs(t))

    def sq(t):
        return cm.sum(t * t)

    forms = {
        "(λ/2)‖θ‖² (chapter's L2)": lambda t: sq(t) * (l2w / 2),
        "λ‖θ‖₁ (chapter's L1)": lambda t: norm1(t) * l1w,
        "λ₁‖θ‖₁ + (λ₂/2)‖θ‖² (API)": lambda t: norm1(t) * l1w + sq(t) * (l2w / 2),
        "λ₁‖θ‖₁ + λ₂‖θ‖² (chapter's elastic net)": lambda t: norm1(t) * l1w + sq(t) * l2w,
    }
    grads = {k: np.asarray(cm.grad(f)(theta)) for k, f in forms.items()}
    links = {"l2(λ)": added(O.l2(l2w)), "l1(λ)": added(O.l1(l1w)),
             "elastic_net(λ₁, λ₂)": added(O.elastic_net(l1w, l2w))}
    pairs = [("l2(λ)", "(λ/2)‖θ‖² (chapter's L2)"), ("l1(λ)", "λ‖θ‖₁ (chapter's L1)"),
             ("elastic_net(λ₁, λ₂)", "λ₁‖θ‖₁ + (λ₂/2)‖θ‖² (API)"),
             ("elastic_net(λ₁, λ₂)", "λ₁‖θ‖₁ + λ₂‖θ‖² (chapter's elastic net)")]
    rows, d = [], {}
    for link, form in pairs:
        d[(link, form)] = float(np.max(np.abs(links[link] - grads[form])))
        rows.append([link, form, d[(link, form)]])
    # SymPy: the gradient of the chapter's elastic net has 2λ₂θ
    t1, w1, w2 = sympy.symbols("theta lambda_1 lambda_2", positive=True)
    chap = sympy.diff(w1 * sympy.Abs(t1) + w2 * t1 ** 2, t1)
    ctx.check("l2(λ) adds ∇(λ/2)‖θ‖² = λθ (the chapter's L2 and its gradient agree)", 0.0,
              d[pairs[0]], atol=1e-15)
    ctx.check("l1(λ) adds ∇λ‖θ‖₁ = λ·sign θ (θ without zeros)", 0.0, d[pairs[1]], atol=1e-15)
    ctx.check("elastic_net(λ₁, λ₂) adds ∇[λ₁‖θ‖₁ + (λ₂/2)‖θ‖²]", 0.0, d[pairs[2]], atol=1e-15)
    ctx.check("... not ∇ of the chapter's λ₁‖θ‖₁ + λ₂‖θ‖² (differs by λ₂|θ|, max)",
              l2w * float(np.max(np.abs(theta))), d[pairs[3]], rtol=1e-12)
    ctx.check("SymPy: d/dθ[λ₁|θ| + λ₂θ²] = λ₁ + 2λ₂θ (θ > 0)", True,
              sympy.simplify(chap - (w1 + 2 * w2 * t1)) == 0, cmp="==")

    # what the reading changes: the elastic net solution under both readings
    lam = prob.lambda_max * 0.1
    l1, l2 = EN_MIX * lam, (1 - EN_MIX) * lam
    ours = sklearn_elastic_net(prob.X, prob.y, l1, l2)
    a_en = 1.0 / (prob.L + l2)
    run_en, _ = prob.run(O.chain(O.elastic_net(0.0, l2), O.scale_by_learning_rate(a_en),
                                 O.proximal_l1(l1, a_en)), np.zeros(N_FEATURES), 50_000,
                         tol=1e-13)
    # the chapter's reading of the same two numbers: mse + λ₁‖θ‖₁ + λ₂‖θ‖², i.e. our form
    # with an L2 weight 2λ₂
    chapter_reading = sklearn_elastic_net(prob.X, prob.y, l1, 2 * l2)
    ctx.check(f"λ = {lam:.3g}: elastic_net(0, λ₂) + proximal_l1(λ₁) = sklearn with the "
              "API's reading", 0.0, float(np.max(np.abs(run_en - ours))), atol=1e-8)
    ctx.check("the chapter's reading (λ₂‖θ‖², i.e. an L2 weight 2λ₂) gives another solution "
              "(max abs. diff. > 1e-3)", 1e-3, float(np.max(np.abs(chapter_reading - ours))),
              cmp=">")
    ctx.metric("reading_difference", float(np.max(np.abs(chapter_reading - ours))))
    ctx.text(
        "Parameterization. The chapter's L2 penalty is R = (λ/2)‖θ‖² with gradient λθ, and "
        "`cm.optim.l2(λ)` adds exactly λθ. Its elastic net, however, is written R = λ₁‖θ‖₁ + "
        "λ₂‖θ‖², without the 1/2: its gradient is λ₁·sign θ + 2λ₂θ (SymPy agrees), so with "
        "λ₁ = 0 the chapter's elastic net is its own ridge with weight 2λ₂, not λ₂ — the two "
        "definitions are inconsistent. API.md's `elastic_net(w1, w2)` adds w1·sign θ + w2·θ, "
        "the gradient of λ₁‖θ‖₁ + (λ₂/2)‖θ‖², consistent with `l2`; the table measures what "
        "each link adds to a zero gradient against `cm.grad` of each penalty. The reading "
        "matters: at λ = 0.1·λ_max the two readings of the same (λ₁, λ₂) give elastic-net "
        f"solutions that differ by up to {float(np.max(np.abs(chapter_reading - ours))):.3f}. "
        "For scikit-learn, whose ElasticNet penalty is a·r‖θ‖₁ + (a(1 − r)/2)‖θ‖² next to a "
        "(1/2n)‖y − Xθ‖² data term, our mse + λ₁‖θ‖₁ + (λ₂/2)‖θ‖² maps to a = (λ₁ + λ₂)/2, "
        "r = λ₁/(λ₁ + λ₂).")
    ctx.table(["link", "penalty differentiated by cm.grad", "max |added − ∇R|"], rows,
              caption=f"What each link adds to the gradient (λ = λ₁ = {l1w}, λ₂ = {l2w}; "
                      f"λ = λ₂ = {l2w} for l2)")

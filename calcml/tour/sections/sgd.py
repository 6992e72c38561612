"""Tour section ``sgd`` (chapter 9.1, stochastic gradient descent).

Mini-batch SGD for linear regression on synthetic data (an explicit seed) against the
least-squares solution, run through :func:`calcml.optimize.minimize`: the three step-size
schedules of 9.1 with their Robbins–Monro verdicts (:func:`calcml.analysis.robbins_monro`),
the variance of the mini-batch gradient against σ²/B (with replacement) and
σ²/B·(n − B)/(n − 1) (without), the chapter's bound E[f(θ_k) − f*] ≤ (R² + σ²)/(2αk) held
against mean-square measurements (:func:`calcml.analysis.check_sgd_bound`), and the noise
floor and the stability limit that bound leaves out, both predicted exactly from the
second-moment recursion of SGD on a quadratic.
"""

from __future__ import annotations

import math

import numpy as np

import calcml as cm
from calcml import viz
from calcml.tour import section

#: The data of the section: y = Xθ_true + noise, with an intercept column, from this seed.
DATA_SEED = 91
N_SAMPLES = 500
THETA_TRUE = np.array([2.0, -1.0, 0.5, 3.0, 1.0])  # four slopes, then the intercept
NOISE = 1.0


def regression_data(seed=DATA_SEED, n=N_SAMPLES):
    """The synthetic regression of this section: ``(X, y)``, X with a last column of ones.

    The features are standard normal, y = X θ_true + ε with ε ~ N(0, NOISE²).
    """
    gen = np.random.default_rng(seed)
    d = THETA_TRUE.size - 1
    X = np.hstack([gen.standard_normal((n, d)), np.ones((n, 1))])
    y = X @ THETA_TRUE + NOISE * gen.standard_normal(n)
    return X, y


def mse(theta, batch):
    """The chapter's loss for linear regression on a mini-batch: mean((X_B θ − y_B)²)."""
    Xb, yb = batch
    return cm.mean((Xb @ theta - yb) ** 2)


def full_losses(trajectory, X, y):
    """f(θ_k) on all the data for every iterate of a run (rows of ``trajectory``)."""
    r = np.asarray(trajectory) @ X.T - y
    return np.mean(r ** 2, axis=1)


class SecondMoments:
    """SGD on the MSE as a linear recursion for the second moments of e_k = θ_k − θ*.

    With a mini-batch of B rows drawn with replacement, one step is
    e_{k+1} = (I − αH_B)e_k − αξ_B, where H_B = (1/B)Σ 2x_i x_iᵀ and ξ_B is the mini-batch
    gradient at θ*.  The second moment P_k = E[e_k e_kᵀ] then follows
    P_{k+1} = P_k − T(P_k) + α²Σ_B (the cross terms vanish once E[e_k] = 0), with

        T(P) = α(HP + PH) − α²HPH − (α²/B)(E_i[H_i P H_i] − HPH),

    H = E_i H_i the Hessian and Σ_B = E_i[g_i g_iᵀ]/B the covariance of ξ_B.  The
    fourth-moment matrix E_i[H_i ⊗ H_i] and Σ₁ are computed once from the data.
    """

    def __init__(self, X, y, theta_star):
        n, p = X.shape
        self.p = p
        self.H = 2.0 * X.T @ X / n
        self.HH = np.kron(self.H, self.H)
        Z = np.einsum("ni,nj->nij", X, X).reshape(n, p * p)
        self.M4 = 4.0 * Z.T @ Z / n  # E_i[H_i ⊗ H_i]
        G = 2.0 * X * (X @ theta_star - y)[:, None]  # per-example gradients at θ*
        self.sigma1 = G.T @ G / n
        eye = np.eye(p)
        self.HI = np.kron(eye, self.H) + np.kron(self.H, eye)

    def operator(self, alpha, batch_size):
        """T as a (p², p²) matrix acting on P flattened row by row."""
        return (alpha * self.HI - alpha ** 2 * self.HH
                - alpha ** 2 / batch_size * (self.M4 - self.HH))

    def radius(self, alpha, batch_size):
        """Spectral radius of P ↦ P − T(P): < 1 iff SGD is stable in mean square."""
        T = self.operator(alpha, batch_size)
        return float(np.max(np.abs(np.linalg.eigvals(np.eye(T.shape[0]) - T))))

    def stationary(self, alpha, batch_size):
        """SGD's noise floor with a constant step, predicted exactly.

        Returns
        -------
        gap : float
            E[f(θ) − f*] = ½ tr(HP) at stationarity (nan when unstable).
        dist : float
            √E‖θ − θ*‖² = √tr(P) (nan when unstable).
        radius : float
            As :meth:`radius`.
        """
        radius = self.radius(alpha, batch_size)
        if radius >= 1.0:
            return math.nan, math.nan, radius
        rhs = alpha ** 2 * (self.sigma1 / batch_size).reshape(-1)
        P = np.linalg.solve(self.operator(alpha, batch_size), rhs).reshape(self.p, self.p)
        return (float(0.5 * np.trace(self.H @ P)), float(math.sqrt(max(np.trace(P), 0.0))),
                radius)

    def critical_step(self, batch_size, lo=1e-4, hi=None):
        """The largest constant step with which SGD is stable in mean square (bisection)."""
        hi = 2.0 / np.linalg.eigvalsh(self.H)[-1] if hi is None else hi  # GD's limit 2/L
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.radius(mid, batch_size) < 1.0 else (lo, mid)
        return 0.5 * (lo + hi)


def batch_means_stderr(x, n_batches=10):
    """Standard error of the mean of a correlated series, from the means of its batches."""
    x = np.asarray(x, dtype=float)
    m = len(x) // n_batches
    if m < 1:
        return float(np.std(x, ddof=1) / math.sqrt(len(x)))
    means = x[: m * n_batches].reshape(n_batches, m).mean(axis=1)
    return float(np.std(means, ddof=1) / math.sqrt(n_batches))


@section("sgd", title="Stochastic gradient descent: schedules, batch size, the SGD bound",
         chapter="9.1",
         description="Mini-batch SGD for linear regression against least squares; the three "
                     "schedules of 9.1 and Robbins–Monro; gradient variance against σ²/B; "
                     "the chapter's SGD bound against measurement, with the noise floor it "
                     "omits.")
def run(ctx):
    """Chapter 9.1, "Stochastic Gradient Descent" and "SGD for Linear Regression"."""
    X, y = regression_data()
    n, p = X.shape
    data = (X, y)
    theta_star = np.linalg.lstsq(X, y, rcond=None)[0]
    f_star = float(np.mean((X @ theta_star - y) ** 2))
    H = 2.0 * X.T @ X / n
    eig = np.linalg.eigvalsh(H)
    L, mu = float(eig[-1]), float(eig[0])
    moments = SecondMoments(X, y, theta_star)
    ctx.metric("n_samples", n)
    ctx.metric("L", L)
    ctx.metric("mu", mu)
    ctx.metric("f_star", f_star)
    ctx.text(
        f"The data: n = {n} rows, four standard-normal features and an intercept column, "
        f"y = Xθ_true + ε with θ_true = {THETA_TRUE.tolist()} and ε ~ N(0, {NOISE}²), drawn "
        f"from `numpy.random.default_rng({DATA_SEED})`. The loss is the chapter's "
        "L(θ) = (1/n)Σ(x_iᵀθ − y_i)², whose minimiser is the least-squares solution θ* "
        "(`np.linalg.lstsq`), L(θ*) = f*. Its Hessian is H = 2XᵀX/n, with "
        f"L = λ_max = {L:.4g} and μ = λ_min = {mu:.4g}. SGD is "
        "`cm.optimize.minimize(mse, θ₀, \"sgd\", data=(X, y), batch_size=B, "
        "sampling=\"replace\", rng=seed)`: each step draws B rows uniformly with replacement "
        "(the chapter's \"i randomly sampled from the dataset\", and the assumption of the "
        "theory below) and takes θ ← θ − α_k·(1/B)Σ_{i∈B_k}∇L_i(θ), gradients by `cm.grad`.")

    # -- the three schedules of 9.1 ---------------------------------------------------------
    ctx.status("schedules")
    K = ctx.size(1500, 600)
    B = 8
    a0, beta = 0.1, 0.02
    schedules = {
        "constant α₀": cm.optim.constant(a0),
        "α₀/(1+βk)": cm.optim.inverse_time_decay(a0, beta),
        "α₀/√(k+1)": cm.optim.inverse_sqrt(a0),
    }
    theta0 = np.zeros(p)
    runs, excess, rows, rm = {}, {}, [], {}
    dist_ok, dist_ratio = [], []
    tail = slice(K - K // 10, K + 1)
    for i, (name, sched) in enumerate(schedules.items()):
        res = cm.optimize.minimize(mse, theta0, "sgd", learning_rate=sched, data=data,
                                   batch_size=B, sampling="replace", rng=10 + i, max_iter=K,
                                   tol=None)
        fl = full_losses(res.trajectory, X, y)
        runs[name] = (res, fl)
        excess[name] = float(np.mean(fl[tail]) - f_star)
        alpha_K = float(sched(K - 1))
        floor_gap, floor_dist, _ = moments.stationary(alpha_K, B)
        dist = float(np.linalg.norm(res.x - theta_star))
        dist_ok.append(dist <= 3 * floor_dist)
        dist_ratio.append(dist / floor_dist)
        rm[name] = cm.analysis.robbins_monro(sched)
        rows.append([name, alpha_K, float(fl[-1]), excess[name], floor_gap, dist, floor_dist,
                     rm[name].exponent, rm[name].sum_diverges, rm[name].sum_sq_converges,
                     rm[name].satisfied])
    ctx.text(
        f"The three schedules of §9.1, each for K = {K} steps with B = {B}, α₀ = {a0}, "
        f"β = {beta}, from θ₀ = 0: constant α_k = α₀, decay α_k = α₀/(1 + βk), and the "
        "square-root schedule. The chapter writes the last as α₀/√k, which is undefined at "
        "the first step k = 0; `cm.optim.inverse_sqrt` (and this tour) use α₀/√(k + 1). "
        "A constant step stops improving at a noise floor: the iterates keep moving by "
        "α·(gradient noise). The floor is predicted exactly from the second moments of "
        "e_k = θ_k − θ* (see `SecondMoments` in this section's source): with H_B the "
        "mini-batch Hessian, P_{k+1} = E[(I − αH_B)P_k(I − αH_B)] + α²Σ_B, and the stationary "
        "P gives E[L(θ) − f*] = ½tr(HP) and E‖θ − θ*‖² = tr(P). For the decaying schedules "
        "the same formula at the current α_k is the floor they are sliding down.")
    ctx.table(["schedule", "α_{K−1}", "L(θ_K)", "excess L − f* (mean, last 10%)",
               "predicted floor at α_{K−1}", "‖θ_K − θ*‖", "predicted RMS ‖θ − θ*‖",
               "decay exponent p", "Σα_k = ∞", "Σα_k² < ∞", "Robbins–Monro"], rows,
              caption=f"Mini-batch SGD (B = {B}) against least squares: f* = {f_star:.6g}, "
                      f"‖θ*‖ = {np.linalg.norm(theta_star):.4g}")
    c_name, d_name, s_name = schedules
    ctx.check("least squares: ‖θ_K − θ*‖ ≤ 3 × predicted RMS distance at α_{K−1}, "
              "all three schedules", True, all(dist_ok), cmp="==")
    ctx.check("constant step: excess loss over the last 10% = predicted floor ½tr(HP) "
              "(± 4 standard errors)", rows[0][4], excess[c_name],
              atol=4 * batch_means_stderr(runs[c_name][1][tail] - f_star))
    ctx.check("decaying steps end below the constant step's floor (excess loss, last 10%)",
              excess[c_name], [excess[d_name], excess[s_name]], cmp="<")
    ctx.check("Robbins–Monro (Σα = ∞, Σα² < ∞): constant fails, α₀/(1+βk) holds, "
              "α₀/√(k+1) fails", [False, True, False],
              [rm[s].satisfied for s in schedules], cmp="==")
    ctx.check("decay exponents p of α_k ≈ Ck^(−p): 0, 1, 1/2", [0.0, 1.0, 0.5],
              [rm[s].exponent for s in schedules], atol=1e-3)
    ctx.metric("schedules", {s: {"final_loss": r[2], "excess_last10pct": r[3],
                                 "predicted_floor": r[4], "distance_to_lstsq": r[5],
                                 "robbins_monro": rm[s].satisfied}
                             for s, r in zip(schedules, rows)})
    ctx.metric("distance_over_predicted_rms", dist_ratio)
    ctx.text(
        "The Robbins–Monro conditions (Σα_k = ∞ so the steps can travel any distance, "
        "Σα_k² < ∞ so the injected noise stays finite) hold only for α₀/(1 + βk). They are "
        "sufficient, not necessary: α₀/√(k+1) violates Σα² < ∞, yet its floor falls with "
        "α_k and it ends about as close to θ* as the 1/k schedule — on this strongly "
        "convex problem E‖θ_k − θ*‖² tracks the floor ∝ α_k whenever α_k decays slowly "
        "against the mixing time 1/(α_k μ). The constant step stays on its floor forever.")

    fig, axes = viz.new_figure(1, 3, size=(15, 4.2))
    kk = np.arange(K + 1)
    res_c = runs[c_name][0]
    axes[0].plot(kk[:-1], res_c.losses[:-1], color="0.75", lw=0.6,
                 label="mini-batch loss (constant α₀)")
    viz.line_plot(axes[0], kk, {s: runs[s][1] for s in schedules}, marker=None,
                  xlabel="iteration k", ylabel="loss", title="loss history (full data)")
    viz.reference_line(axes[0], kk, np.full(K + 1, f_star), label="least squares f*")
    axes[0].set_ylim(0, 4)
    axes[0].legend(fontsize=8)
    viz.line_plot(axes[1], kk[1:], {s: runs[s][1][1:] - f_star for s in schedules},
                  marker=None, logx=True, logy=True, xlabel="iteration k",
                  ylabel="L(θ_k) − f*", title="excess loss; dashed: predicted floor at α_k",
                  lw=0.8)
    ks = np.unique(np.geomspace(1, K, 40).astype(int))
    for i, sched in enumerate(schedules.values()):
        floor = [moments.stationary(float(sched(k)), B)[0] for k in ks]
        axes[1].plot(ks, floor, "--", color=viz.COLORS[i], lw=1.6)
    viz.line_plot(axes[2], kk[:-1] + 1, {s: [float(sched(k)) for k in range(K)]
                                         for s, sched in schedules.items()},
                  marker=None, logx=True, logy=True, xlabel="k + 1", ylabel="α_k",
                  title="step sizes (Robbins–Monro: 1/2 < p ≤ 1)")
    ctx.figure(fig, "schedules",
               f"Mini-batch SGD (B = {B}) on the regression with three schedules: the loss on "
               "all the data (left, the chapter's loss history; grey: the noisy mini-batch "
               "losses the optimizer sees), the excess over the least-squares loss with the "
               "predicted noise floor ½tr(HP) at the current step (middle), and the steps "
               "(right, log-log slopes −p).")

    # -- batch size and gradient variance --------------------------------------------------------
    ctx.status("gradient variance")
    theta_v = theta0
    s2 = cm.analysis.gradient_variance(mse, theta_v, data, 1, "replace")
    full_grad = cm.grad(mse)(theta_v, data)
    g = cm.grad(mse)
    sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256, n]
    M = ctx.size(300, 150)
    # the sampling error of the measurement, from the theory: for B rows drawn with
    # replacement, d̄ = (1/B)Σd_j with d_j i.i.d. per-example deviations, and
    # E‖d̄‖⁴ = (B E‖d‖⁴ + B(B−1)((E‖d‖²)² + 2 tr C²))/B⁴, C = E[d dᵀ]
    D = 2.0 * X * (X @ theta_v - y)[:, None] - full_grad
    d2 = np.sum(D ** 2, axis=1)
    C = D.T @ D / n
    gen = np.random.default_rng(DATA_SEED + 1)
    meas = {"replace": [], "shuffle": []}
    ses = {"replace": [], "shuffle": []}
    z = {"replace": [], "shuffle": []}
    for Bv in sizes:
        e4 = (Bv * np.mean(d2 ** 2) + Bv * (Bv - 1) * (s2 ** 2 + 2 * np.trace(C @ C))) / Bv ** 4
        se_r = math.sqrt(max(e4 - (s2 / Bv) ** 2, 0.0) / M)
        for mode in ("replace", "shuffle"):
            sq = np.empty(M)
            for m in range(M):
                idx = (gen.integers(0, n, Bv) if mode == "replace"
                       else gen.choice(n, Bv, replace=False))
                sq[m] = np.sum((g(theta_v, (X[idx], y[idx])) - full_grad) ** 2)
            fpc = 1.0 if mode == "replace" else (n - Bv) / (n - 1)
            pred, se = s2 / Bv * fpc, se_r * fpc
            meas[mode].append(float(sq.mean()))
            ses[mode].append(se)
            if pred > 0:
                z[mode].append((float(sq.mean()) - pred) / se)
    pred_r = np.array([s2 / b for b in sizes])
    pred_s = np.array([s2 / b * (n - b) / (n - 1) for b in sizes])
    ctx.text(
        f"Batch size against gradient noise, at the fixed point θ = 0 (the start of the runs "
        f"above). The per-example variance σ² = (1/n)Σ‖∇L_i(θ) − ∇L(θ)‖² = {s2:.4g} comes from "
        "`cm.analysis.gradient_variance` (all n per-example gradients). The mini-batch "
        "gradient averages B of them: with replacement its variance is σ²/B; without "
        "replacement (B distinct rows, as in a shuffled epoch) it is σ²/B·(n − B)/(n − 1), "
        "the finite-population correction, which reaches 0 at B = n. Measured: the mean of "
        f"‖g_B − ∇L(θ)‖² over {M} mini-batches per B, gradients by `cm.grad`. Its standard "
        "error comes from the theory too (the fourth moments of the per-example deviations, "
        "exact with replacement, scaled by (n − B)/(n − 1) without, an approximation), "
        "since the sample standard deviation of a heavy-tailed ‖g_B − ∇L‖² underestimates "
        "it for small B. Quadrupling B halves the noise's standard deviation, at four "
        "times the cost per step.")
    ctx.table(["B", "σ²/B (with replacement)", "measured", "σ²/B·(n−B)/(n−1) (without)",
               "measured "],
              [[b, pr, mr, ps, ms] for b, pr, mr, ps, ms in
               zip(sizes, pred_r, meas["replace"], pred_s, meas["shuffle"])],
              caption=f"Variance of the mini-batch gradient at θ = 0 ({M} draws per cell)")
    ctx.check(f"with replacement: measured variance = σ²/B for B = {sizes[0]}…{sizes[-1]} "
              "(max |z-score| ≤ 4)", 4.0, float(np.max(np.abs(z["replace"]))), cmp="<=")
    ctx.check("without replacement: measured variance = σ²/B·(n−B)/(n−1) for B < n "
              "(max |z-score| ≤ 4)", 4.0, float(np.max(np.abs(z["shuffle"]))), cmp="<=")
    ctx.check("without replacement, B = n: the mini-batch gradient is the full gradient "
              "(variance / σ²)", 0.0, meas["shuffle"][-1] / s2, atol=1e-20)
    slope = float(np.polyfit(np.log(sizes), np.log(meas["replace"]), 1)[0])
    ctx.check("with replacement: log-log slope of variance against B = −1", -1.0, slope,
              atol=0.05)
    ctx.metric("per_example_variance_at_0", s2)
    ctx.metric("variance_slope_replace", slope)
    ctx.metric("variance_max_abs_z", {k: float(np.max(np.abs(v))) for k, v in z.items()})

    fig, ax = viz.new_figure(size=(6.6, 4.4))
    ax.errorbar(sizes, meas["replace"], yerr=2 * np.array(ses["replace"]), fmt="o",
                color=viz.COLORS[0], ms=5, capsize=2, label="measured, with replacement")
    keep = pred_s > 0  # B = n without replacement: variance 0, off the log scale
    ax.errorbar(np.array(sizes)[keep], np.array(meas["shuffle"])[keep],
                yerr=2 * np.array(ses["shuffle"])[keep], fmt="s", color=viz.COLORS[1], ms=4,
                capsize=2, label="measured, without replacement")
    fine = np.geomspace(1, n, 200)
    ax.plot(fine, s2 / fine, "-", color=viz.COLORS[0], lw=1, label="σ²/B")
    fine_s = fine[fine < n - 0.5]
    ax.plot(fine_s, s2 / fine_s * (n - fine_s) / (n - 1), "--", color=viz.COLORS[1], lw=1,
            label="σ²/B·(n−B)/(n−1)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(bottom=pred_s[keep].min() / 3)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("E‖g_B − ∇L(θ)‖²")
    ax.set_title(f"mini-batch gradient variance at θ = 0 (n = {n})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ctx.figure(fig, "variance",
               "Variance of the mini-batch gradient against the batch size: measured (dots, "
               "±2 standard errors) and predicted (lines). Without replacement the variance "
               "drops below σ²/B as B approaches n and vanishes at B = n (not drawn on the "
               "log scale).")

    # -- the SGD bound of 9.1 ----------------------------------------------------------------
    ctx.status("SGD bound")
    alpha, Bb = 0.1, 4
    Kb, seeds = ctx.size(1000, 700), ctx.size(5, 4)
    u = np.random.default_rng(DATA_SEED + 2).standard_normal(p)
    start = theta_star + u / np.linalg.norm(u)  # R = ‖θ₀ − θ*‖ = 1
    chk = cm.analysis.check_sgd_bound(mse, start, theta_star, data, learning_rate=alpha,
                                      batch_size=Bb, n_iter=Kb, seeds=seeds,
                                      sampling="replace", L=L, f_star=f_star,
                                      n_variance_points=3)
    plateau_pred = moments.stationary(alpha, Bb)[0]
    tail_b = chk.mean_gap[Kb - Kb // 5 + 1:]
    plateau_se = batch_means_stderr(tail_b, 8)
    ctx.text(
        "The chapter's SGD bound, E[f(θ_k) − f*] ≤ (R² + σ²)/(2αk), R = ‖θ₀ − θ*‖ and σ² the "
        "gradient variance. `cm.analysis.check_sgd_bound` runs mini-batch SGD from "
        f"{seeds} seeds (α = {alpha}, B = {Bb}, {Kb} steps, from a start at R = 1), averages "
        "f(θ_k) − f* over them as the expectation, measures σ² exactly (the largest "
        "mini-batch variance along the runs) and holds the runs against two bounds: the "
        "chapter's, and the textbook theorem for convex L-smooth f with α < 1/L, "
        "(1/k)Σ_{j<k}E[f(θ_j) − f*] ≤ R²/(2α(1−αL)k) + ασ²/(2(1−αL)). The chapter's bound "
        "decays to zero; SGD with a constant step does not: its expected gap settles at the "
        "noise floor ½tr(HP), so the chapter's bound must fail once (R² + σ²)/(2αk) drops "
        "below the floor. It also cannot be right as written: R² is a squared distance and "
        "σ² a squared gradient, so the sum changes meaning with the units of θ — rescaling "
        "θ = sφ leaves the runs unchanged but turns the bound into (R² + s⁴σ²)/(2αk). The "
        "theorem's ασ² has the units of f, and its floor term is what the chapter omits.")
    ctx.table(["quantity", "value"], [
        ["α, B, steps, seeds", f"{alpha}, {Bb}, {Kb}, {seeds}"],
        ["L, 1/L", f"{chk.L:.4g}, {1 / chk.L:.4g}"],
        ["R = ‖θ₀ − θ*‖", chk.R],
        ["σ² (largest mini-batch variance along the runs)", chk.sigma2],
        ["σ² at θ*", chk.sigma2_star],
        ["measured plateau (mean gap, last fifth)", chk.plateau],
        ["predicted floor ½tr(HP)", plateau_pred],
        ["chapter's bound fails beyond k ≈", chk.k_chapter_fails],
        ["chapter's bound holds at every k (last iterate)", chk.holds_chapter],
        ["chapter's bound holds for the running average", chk.holds_chapter_avg],
        ["theorem holds (running average)", chk.holds_standard],
        ["worst ratio gap / chapter's bound", chk.worst_ratio],
    ], caption="The SGD bound of 9.1 against measurement")
    ctx.check("theorem (1/k)ΣE[f(θ_j) − f*] ≤ R²/(2α(1−αL)k) + ασ²/(2(1−αL)) holds at every k",
              True, chk.holds_standard, cmp="==")
    ctx.check("chapter's (R² + σ²)/(2αk) fails within the run (it omits the noise floor)",
              False, chk.holds_chapter, cmp="==")
    ctx.check(f"the crossing k ≈ (R² + σ²)/(2α·plateau) lies inside the run (≤ {Kb})",
              float(Kb), chk.k_chapter_fails, cmp="<=")
    ctx.check("measured plateau = predicted noise floor ½tr(HP) (± 4 standard errors)",
              plateau_pred, chk.plateau, atol=4 * plateau_se)
    ctx.metric("sgd_bound", chk.to_dict())
    ctx.metric("sgd_bound_predicted_floor", plateau_pred)
    ctx.metric("sgd_bound_plateau_stderr", plateau_se)

    # -- the stability limit: α ≤ 1/L is not enough for single-sample SGD ------------------------
    ctx.status("stability")
    batch_sizes = [1, 2, 4, 16, 64]
    crit = {b: moments.critical_step(b) for b in batch_sizes}
    a_L = 1.0 / L
    steps_d = 300
    outcome, predicted = {}, {}
    with np.errstate(all="ignore"):
        for b in (1, 16):
            finals = []
            for s in range(3):
                r = cm.optimize.minimize(mse, start, "sgd", learning_rate=a_L, data=data,
                                         batch_size=b, sampling="replace", rng=100 + s,
                                         max_iter=steps_d, tol=None, on_nonfinite="stop",
                                         keep_trajectory=False)
                d = float(np.linalg.norm(r.x - theta_star))
                finals.append(d if r.status != 3 and math.isfinite(d) else math.inf)
            outcome[b] = finals
            predicted[b] = moments.radius(a_L, b) < 1.0
    diverged = {b: all(d > 1e3 for d in outcome[b]) for b in outcome}
    bounded = {b: all(d < 10.0 for d in outcome[b]) for b in outcome}
    ctx.text(
        "The chapter's step α = 1/L, proven for gradient descent, is not safe for SGD. The "
        "second-moment map P ↦ E[(I − αH_B)P(I − αH_B)] must contract (spectral radius < 1) "
        "for E‖θ_k − θ*‖² to stay bounded, and single rows have curvature 2‖x_i‖² far above "
        f"L = {L:.3g}. Bisection on that radius gives the largest stable step per batch size: "
        + ", ".join(f"B = {b}: α < {crit[b]:.3g}" for b in batch_sizes)
        + f", against 1/L = {a_L:.3g} and 2/L = {2 * a_L:.3g}. So at α = 1/L single-sample "
        "SGD diverges, and B = 16 is stable: "
        f"‖θ_{steps_d} − θ*‖ over three seeds was "
        f"{', '.join(f'{d:.3g}' for d in outcome[1])} (B = 1) and "
        f"{', '.join(f'{d:.3g}' for d in outcome[16])} (B = 16). The bound's assumption of a "
        "variance bounded along the iterates fails here: the noise grows with ‖θ − θ*‖.")
    ctx.check("α = 1/L: mean-square stability predicted for B = 1, B = 16", [False, True],
              [predicted[1], predicted[16]], cmp="==")
    ctx.check("α = 1/L: B = 1 diverges (‖θ − θ*‖ > 1e3, 3 seeds), B = 16 stays within 10",
              [True, True], [diverged[1], bounded[16]], cmp="==")
    ctx.metric("critical_step_by_batch_size", {str(b): crit[b] for b in batch_sizes})

    fig, axes = viz.new_figure(1, 2, size=(13, 4.4))
    kb = np.arange(Kb + 1)
    ax = axes[0]
    ax.plot(kb[1:], chk.mean_gap[1:], color=viz.COLORS[0], lw=1,
            label=f"E[f(θ_k) − f*] (mean of {seeds} runs)")
    low = np.maximum(chk.mean_gap[1:] - 2 * chk.stderr[1:], plateau_pred / 30)
    ax.fill_between(kb[1:], low,
                    chk.mean_gap[1:] + 2 * chk.stderr[1:], color=viz.COLORS[0], alpha=0.2,
                    lw=0)
    ax.plot(kb[1:], chk.avg_gap[1:], color=viz.COLORS[2], lw=1.2,
            label="running average (1/k)Σ_{j<k}")
    ax.plot(kb[1:], chk.chapter_bound[1:], "--", color=viz.COLORS[1], lw=1.4,
            label="chapter: (R² + σ²)/(2αk)")
    ax.plot(kb[1:], chk.standard_bound[1:], "-.", color=viz.COLORS[3], lw=1.4,
            label="theorem: R²/(2α(1−αL)k) + ασ²/(2(1−αL))")
    ax.axhline(plateau_pred, color="0.3", lw=1, ls=":", label="predicted floor ½tr(HP)")
    if math.isfinite(chk.k_chapter_fails):
        ax.axvline(chk.k_chapter_fails, color=viz.COLORS[1], lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("iteration k")
    ax.set_ylabel("f(θ_k) − f*")
    ax.set_ylim(bottom=plateau_pred / 30)
    ax.set_title(f"the SGD bound of 9.1 (α = {alpha}, B = {Bb}, R = 1)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[1]
    grid = np.linspace(0.01, 2.2 * a_L, 80)
    for i, b in enumerate([1, 4, 16]):
        rad = [moments.radius(a, b) for a in grid]
        ax.plot(grid, rad, color=viz.COLORS[i], lw=1.3, label=f"B = {b}")
    ax.axhline(1.0, color="0.4", lw=0.8)
    ax.axvline(a_L, color="0.3", ls="--", lw=0.9, label="α = 1/L")
    ax.axvline(2 * a_L, color="0.3", ls=":", lw=0.9, label="α = 2/L (GD's limit)")
    ax.set_ylim(0.4, 2.5)
    ax.set_xlabel("step size α")
    ax.set_ylabel("spectral radius of the second-moment map")
    ax.set_title("mean-square stability of SGD (radius < 1: stable)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ctx.figure(fig, "bound",
               "Left: the expected gap of SGD (shaded ±2 standard errors) against the chapter's "
               "bound, which dips below the measured noise floor at the dotted line, and the "
               "textbook theorem, which bounds the running average and keeps a floor ασ²/(2(1−αL)) "
               "(loose: σ² is the largest variance along the runs, taken near θ₀). Right: the "
               "radius of the second-moment recursion; SGD with one row per step is unstable "
               "well below 1/L.")

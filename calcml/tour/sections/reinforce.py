"""Tour section ``reinforce`` (chapter 9.7, policy gradients).

First the policy gradient theorem, checked exactly: on a small random episodic MDP with a
tabular softmax policy, J(θ) = ρ₀ᵀ(I − γP_π)⁻¹r_π is written in calcml operations and
differentiated by the engine; the chapter's REINFORCE estimate R(τ)∇log π_θ(τ), averaged over
many sampled trajectories, matches it within its standard errors (z-scores, χ²), as does the
reward-to-go form — while the form most code uses, which drops the γ^t weights, does not.
Then REINFORCE with a baseline (normalised returns) trains a 4-64-2 softmax policy on
CartPole-v1 to the "solved" criterion: mean return ≥ 475 over 100 consecutive episodes.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

import calcml as cm
from calcml import rl, viz
from calcml.tour import section

GAMMA_THEOREM = 0.9
GAMMA = 0.99
LR = 1e-2
HIDDEN = 64
TARGET = 475.0
LABELS = {"trajectory": "R(τ)·Σ∇log π (chapter)",
          "reward_to_go": "Σ γ^t G_t ∇log π",
          "undiscounted_weights": "Σ G_t ∇log π (γ^t dropped)"}


@section("reinforce", title="Policy gradients: the theorem checked, REINFORCE on CartPole",
         chapter="9.7", rank=1,
         description="∇J from the engine (exact J on a small MDP) against the REINFORCE "
                     "estimate over many trajectories, within standard errors; REINFORCE "
                     "with a baseline solves CartPole-v1 (≥ 475 over 100 episodes).")
def run(ctx):
    """Chapter 9.7, the policy gradient theorem and REINFORCE."""
    with threadpool_limits(limits=1, user_api="blas"):
        _theorem(ctx)
        _loss_gradient(ctx)
        _cartpole(ctx)


def _theorem(ctx):
    ctx.status("policy gradient theorem: exact ∇J vs Monte Carlo")
    n = ctx.size(400_000, 100_000)
    mdp = rl.random_episodic_mdp(3, 2, seed=0)
    theta = np.random.default_rng(1).standard_normal((3, 2))
    chk = rl.policy_gradient_check(mdp, theta, GAMMA_THEOREM, n=n, seed=0)
    fd = cm.check_grad(lambda th: rl.exact_objective(th, mdp, GAMMA_THEOREM), theta)
    ctx.check("J(θ) by Gauss–Jordan in calcml ops = numpy.linalg.solve", 1e-13,
              abs(chk.J - chk.J_numpy), cmp="<=")
    ctx.check("∇J from the engine against finite differences and forward mode (max rel. "
              "error)", 1e-6, fd.max_rel_error, cmp="<=")
    ctx.check(f"Monte Carlo mean of R(τ) within 4 standard errors of J ({n} trajectories)",
              4 * chk.J_std_error, abs(chk.J_mc - chk.J), cmp="<=")
    rows = []
    for name, e in chk.estimators.items():
        rows.append([LABELS[name], e.max_abs_z, e.chi2, e.dof, e.p_value,
                     float(np.mean(e.std_error))])
    for name in ("trajectory", "reward_to_go"):
        e = chk.estimators[name]
        ctx.check(f"{LABELS[name]}: every component of the mean within 4 standard errors of "
                  "∇J (max |z|)", 4.0, e.max_abs_z, cmp="<=")
        ctx.check(f"{LABELS[name]}: χ² test of mean = ∇J, p-value", 1e-3, e.p_value, cmp=">")
    ctx.check("reward-to-go has smaller standard errors than the chapter's R(τ) form (mean "
              "SE ratio)", 1.0, float(np.mean(chk.estimators["reward_to_go"].std_error
                                            / chk.estimators["trajectory"].std_error)),
              cmp="<")
    bad = chk.estimators["undiscounted_weights"]
    ctx.check("dropping γ^t gives a different vector: max |z| > 10", 10.0, bad.max_abs_z,
              cmp=">")
    ctx.metric("theorem_trajectories", n)
    ctx.metric("theorem_J", {"exact": chk.J, "monte_carlo": chk.J_mc,
                             "std_error": chk.J_std_error})
    ctx.metric("theorem_grad_exact", chk.grad)
    ctx.metric("theorem_z", {k: e.z for k, e in chk.estimators.items()})
    ctx.metric("theorem_chi2", {k: {"chi2": e.chi2, "dof": e.dof, "p": e.p_value}
                                for k, e in chk.estimators.items()})
    ctx.metric("wall_time_s", {"theorem_check": chk.wall_time_s})
    ctx.text(
        "The chapter's policy gradient theorem, ∇_θ J(θ) = E_τ[R(τ) ∇_θ log π_θ(τ)], checked "
        "where J is known exactly. A random MDP with 3 states and 2 actions in which every "
        "step ends the episode with probability 0.15–0.45, rewards R(s,a) ~ N(0,1), γ = "
        f"{GAMMA_THEOREM}, and a tabular softmax policy π_θ(a|s) = softmax(θ[s])_a with θ "
        "drawn at random. Then J(θ) = ρ₀ᵀV^π with (I − γP_π)V^π = r_π, a linear solve that "
        "`rl.exact_objective` writes in calcml operations (Gauss–Jordan elimination: I − γP_π "
        "is diagonally dominant, no pivoting needed), so `cm.grad` differentiates it; the "
        f"engine's gradient agrees with finite differences to {fd.max_rel_error:.1e}. Then "
        f"{n:,} trajectories, each giving one estimate of ∇J. In log π_θ(τ) = log ρ₀(s₀) + "
        "Σ_t [log π_θ(a_t|s_t) + log P(s_t+1|s_t,a_t)] only the policy terms depend on θ, so "
        "the chapter's estimate is R(τ) Σ_t ∇log π_θ(a_t|s_t), with R(τ) = Σ_t γ^t r_t.")
    ctx.table(["estimator", "max |z| over the 6 components", "χ²", "dof", "p-value",
               "mean standard error"], rows,
              caption=f"Mean of {n:,} per-trajectory estimates against the exact ∇J "
                      "(z = (mean − ∇J)/SE; χ² = N dᵀΣ⁺d with the sample covariance Σ, whose "
                      "rank is S(A − 1) = 3)")
    ctx.text(
        "Both unbiased forms pass: the chapter's, and the reward-to-go form Σ_t γ^t G_t "
        "∇log π(a_t|s_t) (rewards before a_t average out against its score, which has mean "
        "zero), whose standard errors are smaller. The form nearly every implementation uses "
        "— REINFORCE below included — weights step t by G_t without the γ^t: its mean is "
        f"{bad.max_abs_z:.0f} standard errors away from ∇J. It is not the gradient of the "
        "discounted objective (nor of any function: Nota & Thomas, 2020); it works in practice "
        "because it behaves like the gradient of the *undiscounted* return with γ as a variance "
        "reduction. The chapter's notation hides both points: ∇log π_θ(τ) must be read as the "
        "sum of the policy's scores, and R(τ) as the discounted return when J is discounted.")
    fig, ax = viz.new_figure(size=(8.0, 4.2))
    k = np.arange(6)
    labels = [f"θ[{s},{a}]" for s in range(3) for a in range(2)]
    ax.bar(k, chk.grad.ravel(), width=0.7, color="0.85", edgecolor="0.5",
           label="∇J exact (engine)")
    for i, (name, e) in enumerate(chk.estimators.items()):
        ax.errorbar(k + (i - 1) * 0.2, e.mean.ravel(), yerr=2 * e.std_error.ravel(), fmt="o",
                    ms=4, capsize=3, color=viz.COLORS[i], label=f"{LABELS[name]} ± 2 SE")
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_xticks(k, labels)
    ax.set_ylabel("∂J/∂θ")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ctx.figure(fig, "theorem",
               f"The exact policy gradient (bars) and three Monte Carlo estimates ({n:,} "
               "trajectories, ±2 standard errors). The γ^t-free form misses.")


def _loss_gradient(ctx):
    """The surrogate loss's gradient through the engine = the closed form, on one batch."""
    rng = np.random.default_rng(0)
    net = rl.mlp(4, 2, hidden=(HIDDEN,), rng=0)
    X, a, w = rng.standard_normal((50, 4)), rng.integers(0, 2, 50), rng.standard_normal(50)
    rl.reinforce_loss(net, X, a, w).backward()
    W1, b1, W2, b2 = (p.data for p in net.parameters())
    H = np.tanh(X @ W1.T + b1)
    Z = H @ W2.T + b2
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    dZ = P.copy()
    dZ[np.arange(50), a] -= 1
    dZ *= (w / 50)[:, None]
    dA = (dZ @ W2) * (1 - H ** 2)
    hand = [dA.T @ X, dA.sum(0), dZ.T @ H, dZ.sum(0)]
    err = max(float(np.max(np.abs(p.grad - g))) for p, g in zip(net.parameters(), hand))
    ctx.check("REINFORCE surrogate loss: engine gradient = closed form −(1/T)Σ w_t (e_a − π_t) "
              "chained by hand (max abs diff, 50 states)", 1e-12, err, cmp="<=")
    ctx.metric("surrogate_gradient_max_abs_diff", err)


def _random_policy_return(env, episodes=100):
    rng = np.random.default_rng(0)
    ev = rl.evaluate_policy(env, lambda obs: int(rng.integers(2)), episodes=episodes, seed=0)
    return ev.mean_return


def _cartpole(ctx):
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    random_return = _random_policy_return(env)
    seeds = ctx.size([0, 1, 2], [0])
    episodes = ctx.size(1000, 150)
    runs = {}
    for seed in seeds:
        ctx.status(f"REINFORCE on CartPole, seed {seed}")
        net = rl.mlp(4, 2, hidden=(HIDDEN,), rng=seed)
        runs[seed] = rl.reinforce(env, net, cm.optim.adam(LR), episodes=episodes, gamma=GAMMA,
                                  seed=seed, target_return=None if ctx.quick else TARGET,
                                  window=100)
    times = {f"cartpole_seed_{s}": r.wall_time_s for s, r in runs.items()}
    ctx.metric("wall_time_s", {**ctx.metrics["wall_time_s"], **times})
    ctx.metric("random_policy_mean_return", random_return)
    ctx.metric("cartpole_runs", {str(s): {"episodes": r.episodes, "steps": r.steps,
                                          "solved_episode": r.solved_episode,
                                          "last_100_mean": r.last_mean(100),
                                          "wall_time_s": r.wall_time_s,
                                          "steps_per_s": r.steps / r.wall_time_s}
                                 for s, r in runs.items()})
    rows = [[s, r.episodes, r.solved_episode if r.solved_episode else "—", r.steps,
             r.last_mean(100), r.wall_time_s, r.steps / r.wall_time_s] for s, r in runs.items()]
    if ctx.quick:
        r = runs[seeds[0]]
        late = float(r.episode_returns[-25:].mean())
        ctx.check("quick: mean return of the last 25 of 150 episodes > 5 × the random "
                  "policy's", 5 * random_return, late, cmp=">")
        ctx.check("quick: ... and > 4 × that of the first 25", 4 * float(
            r.episode_returns[:25].mean()), late, cmp=">")
    else:
        for s, r in runs.items():
            ctx.check(f"seed {s}: mean return over the last 100 episodes ≥ {TARGET:.0f} "
                      f"(solved after {r.solved_episode} episodes)", TARGET, r.last_mean(100),
                      cmp=">=")
    net0 = rl.mlp(4, 2, hidden=(HIDDEN,), rng=0)
    ctx.text(
        f"REINFORCE with a baseline on CartPole-v1 (reward 1 per step, at most 500 steps): "
        f"`rl.reinforce` with the policy network 4-{HIDDEN}-2 (tanh, "
        f"{net0.num_parameters()} parameters, `rl.mlp`), Adam (α = {LR:g}), γ = {GAMMA}, one "
        "update per episode on the weights w_t = (G_t − mean G)/std G — the mean return-to-go "
        "of the episode as the baseline, and the division a per-episode step size. Each step "
        "is chosen by a plain-NumPy forward pass through the network's current weights "
        "(`rl.NumpyForward`: no graph); the update runs the network once, with gradient, on "
        "the episode's T states and minimises −(1/T) Σ_t w_t log π_θ(a_t|s_t), whose gradient "
        "the engine computes — checked above against the closed form. A uniformly random "
        f"policy lasts {random_return:.1f} steps on average.")
    ctx.table(["seed", "episodes", "solved after", "env steps", "mean of last 100",
               "wall time (s)", "steps/s"], rows,
              caption="REINFORCE on CartPole-v1" + (" (quick: 150 episodes)" if ctx.quick else
                                                    f" until the mean of 100 episodes ≥ "
                                                    f"{TARGET:.0f}"))
    fig, ax = viz.new_figure(size=(8.0, 4.2))
    for i, (s, r) in enumerate(runs.items()):
        x = np.arange(1, r.episodes + 1)
        ax.plot(x, r.episode_returns, color=viz.COLORS[i], lw=0.5, alpha=0.35)
        ax.plot(x, rl.moving_average(r.episode_returns, 100), color=viz.COLORS[i], lw=1.8,
                label=f"seed {s}: mean of last 100")
    ax.axhline(TARGET, color="0.3", ls="--", lw=1, label=f"{TARGET:.0f} (solved)")
    ax.axhline(random_return, color="0.5", ls=":", lw=1, label="random policy")
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_ylim(0, 520)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ctx.figure(fig, "cartpole",
               "REINFORCE on CartPole-v1: the return of each episode (thin) and the mean of "
               "the last 100 (thick), until it reaches 475.")

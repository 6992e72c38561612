"""Tour section ``q-learning`` (chapter 9.7, value function methods).

The Bellman equation of a fixed policy on FrozenLake-v1 (4×4, slippery) solved two ways —
as the linear system (I − γP_π)V = r_π built from the environment's transition table, and by
iterating the backup — agreeing to 1e-10, with the iteration's residuals against the γ^k
contraction bound.  Value iteration gives V* and the optimal policy, whose success rate under
the environment's 100-step limit is computed exactly.  Tabular Q-learning with the chapter's
update then learns a greedy policy that is evaluated on 1,000 episodes and compared with the
optimum (exactly and by simulation), and on CliffWalking it finds the optimal path along the
cliff (return −13) while its ε-greedy behaviour keeps falling off.
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

import calcml as cm
from calcml import rl, viz
from calcml.tour import section

GAMMA = 0.99
HORIZON = 100          # FrozenLake-v1's time limit
EVAL_EPISODES = 1000
LAKE_ARROWS = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}    # left, down, right, up (x, y)
CLIFF_ARROWS = {0: (0, -1), 1: (1, 0), 2: (0, 1), 3: (-1, 0)}   # up, right, down, left


@section("q-learning", title="Q-learning and the Bellman equation: FrozenLake and CliffWalking",
         chapter="9.7", rank=2,
         description="V^π on FrozenLake by the linear solve and by the Bellman backup (agree "
                     "to 1e-10); value iteration; Q-learning's greedy policy ≥ 70 % success "
                     "against the optimum; CliffWalking's optimal path (−13).")
def run(ctx):
    """Chapter 9.7, the Bellman equation and Q-learning."""
    import gymnasium as gym

    with threadpool_limits(limits=1, user_api="blas"):
        lake = gym.make("FrozenLake-v1", is_slippery=True)
        mdp = rl.TabularMDP.from_gym(lake)
        _bellman(ctx, mdp)
        opt = _optimum(ctx, lake, mdp)
        times = {"frozenlake_q_learning": _frozenlake(ctx, lake, mdp, opt),
                 "cliffwalking_q_learning": _cliffwalking(ctx, gym.make("CliffWalking-v1"))}
        ctx.metric("wall_time_s", times)


def contraction_ratio(residuals):
    """The largest ratio r_{k+1}/r_k of successive residuals of an iteration, over the steps
    with r_k > 0 (an exact 0 ends the contraction; 0/0 is not a ratio).  NaN if any residual is
    not finite (a diverging iteration must fail the check, not be filtered out of it) or if
    there is no ratio at all."""
    r = np.asarray(residuals, dtype=float)
    if r.size < 2 or not np.all(np.isfinite(r)):
        return float("nan")
    live = r[:-1] > 0
    if not np.any(live):
        return float("nan")
    return float(np.max(r[1:][live] / r[:-1][live]))


def _bellman(ctx, mdp):
    ctx.status("Bellman equation: exact and iterative")
    policies = {"uniform random": np.full((16, 4), 0.25),
                "random stochastic (Dirichlet, seed 0)":
                    np.random.default_rng(0).dirichlet(np.ones(4), size=16)}
    rows, curves = [], {}
    for name, pi in policies.items():
        ex = rl.policy_evaluation_exact(mdp, pi, GAMMA)
        it = rl.policy_evaluation_iterative(mdp, pi, GAMMA, tol=1e-14)
        err = float(np.max(np.abs(ex.V - it.V)))
        rows.append([name, float(ex.V[0]), it.iterations, err,
                     float(np.max(np.abs(rl.bellman_backup(mdp, pi, ex.V, GAMMA) - ex.V)))])
        ctx.check(f"{name} policy, γ = {GAMMA}: max |V_exact − V_iterative| over the 16 states",
                  1e-10, err, cmp="<=")
        curves[name] = it.residuals
    ctx.check("the backup contracts: max ratio of successive residuals ≤ γ", GAMMA,
              contraction_ratio(curves["uniform random"]), cmp="<=")
    ctx.metric("bellman_max_abs_diff", {r[0]: r[3] for r in rows})
    ctx.metric("bellman_iterations", {r[0]: r[2] for r in rows})
    ctx.text(
        "The Bellman equation of a fixed policy π, V^π(s) = Σ_a π(a|s)[R(s,a) + γ Σ_s' "
        "P(s'|s,a) V^π(s')], is linear in V^π. `rl.TabularMDP.from_gym` reads FrozenLake-v1's "
        "transition table `env.unwrapped.P` (4×4, slippery: the intended move and the two "
        "perpendicular ones each with probability 1/3) into P (16×4×16) and R (16×4); a "
        "transition into a hole or the goal ends the episode, so it adds its reward to R and "
        "nothing to P (the value of a finished episode is 0 — the chapter's V(s') has to be "
        "read that way). `rl.policy_evaluation_exact` solves (I − γP_π)V = r_π; "
        "`rl.policy_evaluation_iterative` applies the backup V ← r_π + γP_πV from V = 0 until "
        "it moves by less than 1e-14. They agree to the last digits:")
    ctx.table(["policy", "V^π(start)", "backups", "max |exact − iterative|",
               "max |T^π V − V| (exact V)"], rows,
              caption=f"V^π on FrozenLake-v1, γ = {GAMMA}")
    fig, ax = viz.new_figure(size=(6.4, 4.0))
    for i, (name, res) in enumerate(curves.items()):
        k = np.arange(1, len(res) + 1)
        ax.semilogy(k, res, color=viz.COLORS[i], lw=1.5, label=f"{name}: ‖V_k+1 − V_k‖∞")
    k = np.arange(1, len(curves["uniform random"]) + 1)
    ax.semilogy(k, curves["uniform random"][0] * GAMMA ** (k - 1), "--", color="0.4",
                label="γ^k (contraction bound)")
    ax.set_xlabel("backup k")
    ax.set_ylabel("max-norm change")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ctx.figure(fig, "bellman",
               "Iterative policy evaluation: the change per backup falls at least as fast as "
               "γ^k (faster here: falling into a hole also ends the sum).")


def _optimum(ctx, lake, mdp):
    ctx.status("value iteration")
    vi = rl.value_iteration(mdp, GAMMA)
    ctx.check(f"value iteration: V* satisfies the optimality equation (γ = {GAMMA})", 1e-12,
              float(np.max(np.abs(rl.q_from_v(mdp, vi.V, GAMMA).max(axis=1) - vi.V))),
              cmp="<=")
    succ = float(mdp.initial @ rl.finite_horizon_value(mdp, vi.policy, HORIZON))
    best = float(mdp.initial @ rl.finite_horizon_optimum(mdp, HORIZON))
    inf_succ = float(mdp.initial @ rl.finite_horizon_value(mdp, vi.policy, 100_000))
    ev = rl.evaluate_policy(lake, vi.policy, episodes=EVAL_EPISODES, seed=2024)
    ctx.check(f"optimal policy: simulated success ({EVAL_EPISODES} episodes) within 4 standard "
              "errors of the exact probability", 4 * ev.std_error,
              abs(ev.mean_return - succ), cmp="<=")
    ctx.metric("optimal_policy_success_exact", succ)
    ctx.metric("optimal_policy_success_simulated", ev.mean_return)
    ctx.metric("best_possible_success_100_steps", best)
    ctx.metric("optimal_policy_success_no_time_limit", inf_succ)
    ctx.text(
        f"Value iteration (γ = {GAMMA}) gives V* and the greedy, optimal policy. Its success "
        f"rate is not V*(start) = {vi.V[0]:.3f} (a discounted value) but the probability of "
        f"reaching the goal within the environment's {HORIZON}-step limit, which "
        "`rl.finite_horizon_value` computes exactly by backward induction: "
        f"{100 * succ:.2f} % ({100 * ev.mean_return:.1f} % in {EVAL_EPISODES} simulated "
        f"episodes). The optimal policy is cautious — it walks along walls so that slipping "
        f"cannot drop it into a hole — and slow: without a time limit it would succeed "
        f"{100 * inf_succ:.2f} % of the time. No policy, even one that looks at the clock, "
        f"can beat {100 * best:.2f} % within {HORIZON} steps (finite-horizon value "
        "iteration).")
    return {"vi": vi, "success": succ, "best": best, "eval": ev}


def _frozenlake(ctx, lake, mdp, opt):
    episodes = ctx.size(20_000, 2_000)
    every = max(1, episodes // 100)
    curve = {"episode": [], "success": []}

    def record(ep, Q):
        if (ep + 1) % every == 0:
            curve["episode"].append(ep + 1)
            pol = np.argmax(Q, axis=1)
            curve["success"].append(float(mdp.initial @ rl.finite_horizon_value(mdp, pol,
                                                                                   HORIZON)))

    ctx.status(f"Q-learning on FrozenLake, {episodes} episodes")
    alpha = cm.optim.linear_schedule(0.2, 0.02, episodes)
    eps = cm.optim.linear_schedule(1.0, 0.05, episodes // 2)
    t0 = time.perf_counter()
    res = rl.q_learning(lake, episodes, alpha=alpha, gamma=GAMMA, epsilon=eps, seed=0,
                        callback=record)
    train_time = time.perf_counter() - t0
    ev = rl.evaluate_policy(lake, res.policy, episodes=EVAL_EPISODES, seed=1000)
    exact = float(mdp.initial @ rl.finite_horizon_value(mdp, res.policy, HORIZON))
    v_learned = rl.policy_evaluation_exact(mdp, res.policy, GAMMA).V
    vi = opt["vi"]
    agree = int(np.sum(res.policy == vi.policy))
    ctx.metric("frozenlake_episodes", episodes)
    ctx.metric("frozenlake_steps", res.steps)
    ctx.metric("frozenlake_success_simulated", ev.mean_return)
    ctx.metric("frozenlake_success_exact", exact)
    ctx.metric("frozenlake_greedy_agrees_with_optimal_states", agree)
    ctx.metric("frozenlake_max_abs_Q_minus_Qstar", float(np.max(np.abs(res.Q - vi.Q))))
    ctx.check(f"Q-learning's greedy policy succeeds in ≥ 70 % of {EVAL_EPISODES} episodes",
              0.70, ev.mean_return, cmp=">=")
    ctx.check("... and its exact success probability (100-step limit) is ≥ 70 %", 0.70, exact,
              cmp=">=")
    ctx.check("... which no policy can exceed beyond the finite-horizon optimum", opt["best"],
              exact, cmp="<=")
    ctx.check(f"V^π of the learned policy at the start ≥ 0.95 V*(start) (γ = {GAMMA})",
              0.95 * vi.V[0], float(v_learned[0]), cmp=">=")
    ctx.text(
        f"Q-learning (`rl.q_learning`, {episodes} episodes, seed 0) applies the chapter's "
        "update Q(s,a) ← Q(s,a) + α[r + γ max_a' Q(s',a') − Q(s,a)] after every step, with "
        "the bootstrap term dropped when s' is a hole or the goal (terminal: nothing follows) "
        "but kept when the 100-step limit cuts an episode (the lake would go on). Exploration "
        "is ε-greedy with ε from 1 to 0.05 over the first half, α from 0.2 to 0.02 (the "
        "convergence theory asks Σα = ∞, Σα² < ∞; a decaying α also stops the noise of "
        "the slippery ice from flipping near-tied actions). Training took "
        f"{train_time:.1f} s for {res.steps:,} steps. The greedy policy succeeds in "
        f"{100 * ev.mean_return:.1f} % of {EVAL_EPISODES} fresh episodes ({100 * exact:.2f} % "
        f"exactly) against the optimal policy's {100 * opt['success']:.2f} % "
        f"({100 * opt['eval'].mean_return:.1f} % simulated); it takes the optimal action in "
        f"{agree} of the 16 states (those it differs in are near-ties or never matter), and "
        f"its discounted value at the start is {v_learned[0]:.4f} against V* = "
        f"{vi.V[0]:.4f}.")
    _value_maps(ctx, vi, res)
    fig, axes = viz.new_figure(1, 2, size=(11.0, 3.8))
    ax = axes[0]
    ax.plot(curve["episode"], curve["success"], color=viz.COLORS[0], lw=1.6,
            label="greedy policy of Q (exact, 100 steps)")
    ax.axhline(opt["success"], color=viz.COLORS[2], ls="--", lw=1.2, label="optimal policy")
    ax.axhline(0.70, color="0.5", ls=":", lw=1, label="70 %")
    ax.set_xlabel("training episode")
    ax.set_ylabel("success probability")
    ax.set_ylim(0, 0.85)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[1]
    w = max(10, episodes // 50)
    ax.plot(np.arange(1, episodes + 1), rl.moving_average(res.episode_returns, w),
            color=viz.COLORS[1], lw=1.3, label=f"training success (ε-greedy), mean of {w}")
    ax.plot(np.arange(1, episodes + 1), res.epsilons, color="0.5", lw=1, ls="--", label="ε")
    ax.set_xlabel("training episode")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ctx.figure(fig, "frozenlake-learning",
               "Left: the exact success probability of Q's greedy policy during training, "
               "against the optimum. Right: the success of the exploring agent itself, which "
               "rises as ε decays.")
    return train_time


def _arrows(ax, policy, shape, arrows, skip=(), color="k"):
    for s, a in enumerate(policy):
        if s in skip:
            continue
        r, c = divmod(s, shape[1])
        dx, dy = arrows[int(a)]
        ax.annotate("", xy=(c + 0.3 * dx, r + 0.3 * dy), xytext=(c - 0.3 * dx, r - 0.3 * dy),
                    arrowprops={"arrowstyle": "->", "color": color, "lw": 1.4})


def _value_maps(ctx, vi, res):
    desc = ["SFFF", "FHFH", "FFFH", "HFFG"]
    terminal = [s for s in range(16) if desc[s // 4][s % 4] in "HG"]
    fig, axes = viz.new_figure(1, 2, size=(9.6, 4.4))
    for ax, V, pol, title in ((axes[0], vi.V, vi.policy, "V* and the optimal policy"),
                              (axes[1], res.Q.max(axis=1), res.policy,
                               "max_a Q(s, a) and the greedy policy, Q-learning")):
        im = ax.imshow(V.reshape(4, 4), cmap="viridis", vmin=0, vmax=max(vi.V.max(), 1e-9))
        for s in range(16):
            r, c = divmod(s, 4)
            ch = desc[r][c]
            if ch in "HG":
                ax.text(c, r, "hole" if ch == "H" else "goal", ha="center", va="center",
                        color="w", fontsize=9)
            else:
                ax.text(c + 0.32, r - 0.3, f"{V[s]:.2f}", ha="right", va="top", color="w",
                        fontsize=7)
        _arrows(ax, pol, (4, 4), LAKE_ARROWS, skip=terminal, color="w")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9.5)
        fig.colorbar(im, ax=ax, shrink=0.8)
    ctx.figure(fig, "value-map",
               f"FrozenLake 4×4 (start top left), γ = {GAMMA}: the optimal values and actions "
               "(value iteration) and what Q-learning learned. The optimal policy points away "
               "from holes: slipping sideways is then harmless.")


def _cliffwalking(ctx, env):
    episodes = ctx.size(500, 200)
    ctx.status(f"Q-learning on CliffWalking, {episodes} episodes")
    mdp = rl.TabularMDP.from_gym(env)
    vi = rl.value_iteration(mdp, 1.0)
    start = int(np.argmax(mdp.initial))
    t0 = time.perf_counter()
    res = rl.q_learning(env, episodes, alpha=0.5, gamma=1.0, epsilon=0.1, seed=0)
    train_time = time.perf_counter() - t0
    path = rl.rollout(env, res.policy, seed=0)
    # the exact expected return of the ε-greedy behaviour of the final Q
    eps = 0.1
    behave = np.full((48, 4), eps / 4)
    behave[np.arange(48), res.policy] += 1 - eps
    v_behave = rl.policy_evaluation_exact(mdp, behave, 1.0).V[start]
    ctx.metric("cliffwalking_greedy_return", path.total_reward)
    ctx.metric("cliffwalking_optimal_return", float(vi.V[start]))
    ctx.metric("cliffwalking_epsilon_greedy_expected_return", float(v_behave))
    ctx.metric("cliffwalking_training_return_last_100", float(res.episode_returns[-100:].mean()))
    ctx.check("CliffWalking: the greedy path of Q-learning returns −13", -13.0,
              path.total_reward, cmp="==")
    ctx.check("... the optimum V*(start) of value iteration", float(vi.V[start]),
              path.total_reward, atol=1e-9)
    ctx.check("... and it ends at the goal in 13 steps", 13, len(path), cmp="==")
    ctx.text(
        f"CliffWalking-v1 (4×12, every step −1, stepping into the cliff −100 and back to the "
        f"start): Q-learning with α = 0.5, ε = 0.1, γ = 1, {episodes} episodes "
        f"({train_time:.2f} s). Its greedy path walks right along the cliff edge and returns "
        f"{path.total_reward:.0f}, the optimum (value iteration: V*(start) = "
        f"{vi.V[start]:.0f}). Q-learning is off-policy: it learns the values of the greedy "
        "policy while behaving ε-greedily, and an ε-greedy walk along the edge keeps falling "
        "off — the exact expected return of the ε-greedy behaviour of the final Q is "
        f"{v_behave:.1f}, and the last 100 training episodes averaged "
        f"{res.episode_returns[-100:].mean():.1f}.")
    fig, axes = viz.new_figure(1, 2, size=(12.0, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    ax = axes[0]
    grid = np.zeros((4, 12))
    grid[3, 1:11] = 1
    ax.imshow(grid, cmap="Reds", vmin=0, vmax=2.5)
    cells = [divmod(int(s), 12) for s in path.observations]
    ax.plot([c for _, c in cells], [r for r, _ in cells], "-o", color=viz.COLORS[0], lw=2,
            ms=4, label=f"greedy path, return {path.total_reward:.0f}")
    _arrows(ax, res.policy, (4, 12), CLIFF_ARROWS, skip=range(37, 48), color="0.35")
    ax.text(0, 3, "S", ha="center", va="center", fontsize=11, weight="bold")
    ax.text(11, 3, "G", ha="center", va="center", fontsize=11, weight="bold")
    ax.text(5.5, 3, "cliff (−100)", ha="center", va="center", fontsize=9, color="darkred")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    ax.plot(np.arange(1, episodes + 1), res.episode_returns, color=viz.COLORS[1], lw=0.6,
            alpha=0.5, label="training return (ε-greedy)")
    ax.plot(np.arange(1, episodes + 1), rl.moving_average(res.episode_returns, 20),
            color=viz.COLORS[1], lw=1.6, label="mean of 20")
    ax.axhline(-13, color=viz.COLORS[2], ls="--", lw=1.2, label="greedy / optimal, −13")
    ax.set_ylim(-150, 0)
    ax.set_xlabel("episode")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ctx.figure(fig, "cliffwalking",
               "CliffWalking: the greedy policy learned by Q-learning (arrows) and its path "
               "along the cliff edge; training returns stay below −13 because ε-greedy "
               "exploration falls off the edge.")
    return train_time

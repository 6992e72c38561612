"""Tour section ``actor-critic`` (chapter 9.7, actor-critic methods).

An advantage actor-critic on CartPole-v1: the actor (4-64-2 softmax policy) follows
∇log π(a|s)·A(s,a), the critic (4-64-1) minimises the chapter's TD loss
(V(s) − (r + γV(s')))² with the target held fixed, one update of each per episode, until the
mean return over 100 episodes reaches 475.  The advantage sums the critic's TD errors with
weights (γλ)^k (λ = 0.95); the chapter's one-step advantage (λ = 0) is run beside it.  Then
why the target is held fixed, exactly: on FrozenLake the semi-gradient (TD) fixed point is
V^π, while minimising the same squared TD error through both V(s) and V(s') converges to
something else.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

import calcml as cm
from calcml import rl, viz
from calcml.tour import section

GAMMA = 0.99
LAM = 0.95
ACTOR_LR, CRITIC_LR = 1e-2, 3e-2
HIDDEN = 64
TARGET = 475.0


@section("actor-critic", title="Actor-critic: a TD-trained critic on CartPole",
         chapter="9.7", rank=3,
         description="Advantage actor-critic with the chapter's TD loss for the critic solves "
                     "CartPole-v1 (≥ 475 over 100 episodes); the semi-gradient TD fixed point "
                     "is V^π, the full gradient of the same loss is not.")
def run(ctx):
    """Chapter 9.7, actor-critic."""
    with threadpool_limits(limits=1, user_api="blas"):
        times = _cartpole(ctx)
        _semi_gradient(ctx)
        ctx.metric("wall_time_s", times)


def _train(seed, episodes, lam, target):
    actor = rl.mlp(4, 2, hidden=(HIDDEN,), rng=seed)
    critic = rl.mlp(4, 1, hidden=(HIDDEN,), rng=100 + seed)
    return rl.actor_critic("CartPole-v1", actor, critic, cm.optim.adam(ACTOR_LR),
                           cm.optim.adam(CRITIC_LR), episodes=episodes, gamma=GAMMA, lam=lam,
                           seed=seed, target_return=target, window=100)


def _random_policy_return(episodes=100):
    """Mean return of the uniformly random policy on CartPole-v1 (seeded)."""
    rng = np.random.default_rng(0)
    return rl.evaluate_policy("CartPole-v1", lambda obs: int(rng.integers(2)),
                              episodes=episodes, seed=0).mean_return


def _cartpole(ctx):
    seeds = ctx.size([0, 1, 2], [2])
    episodes = ctx.size(1000, 150)
    runs = {}
    for seed in seeds:
        ctx.status(f"actor-critic on CartPole, λ = {LAM}, seed {seed}")
        runs[seed] = _train(seed, episodes, LAM, None if ctx.quick else TARGET)
    one_step = None
    if not ctx.quick:
        ctx.status("actor-critic, one-step advantage (λ = 0)")
        one_step = _train(0, episodes, 0.0, TARGET)
    times = {f"cartpole_seed_{s}": r.wall_time_s for s, r in runs.items()}
    if one_step is not None:
        times["cartpole_one_step_seed_0"] = one_step.wall_time_s
    ctx.metric("cartpole_runs", {str(s): {"episodes": r.episodes, "steps": r.steps,
                                          "solved_episode": r.solved_episode,
                                          "last_100_mean": r.last_mean(100),
                                          "wall_time_s": r.wall_time_s}
                                 for s, r in runs.items()})
    if ctx.quick:
        r = runs[seeds[0]]
        late = float(r.episode_returns[-25:].mean())
        random_return = _random_policy_return()
        ctx.metric("random_policy_mean_return", random_return)
        ctx.check(f"quick: mean return of the last 25 of 150 episodes > 5 × a random policy's "
                  f"({random_return:.1f}, measured over 100 episodes)", 5 * random_return, late,
                  cmp=">")
        ctx.check("quick: ... and > 4 × that of the first 25", 4 * float(
            r.episode_returns[:25].mean()), late, cmp=">")
    else:
        for s, r in runs.items():
            ctx.check(f"seed {s}: mean return over the last 100 episodes ≥ {TARGET:.0f} "
                      f"(solved after {r.solved_episode} episodes)", TARGET, r.last_mean(100),
                      cmp=">=")
        ctx.metric("one_step_advantage_run", {"episodes": one_step.episodes,
                                              "solved_episode": one_step.solved_episode,
                                              "last_100_mean": one_step.last_mean(100),
                                              "best_100_mean": float(rl.moving_average(
                                                  one_step.episode_returns, 100)[99:].max())})
    for s, r in runs.items():
        first, last = r.value_losses[:10].mean(), r.value_losses[-10:].mean()
        if not ctx.quick:  # a short run's values are still growing with its returns
            ctx.check(f"seed {s}: the critic learns: mean TD loss of the last 10 episodes < "
                      "a tenth of the first 10's", 0.1 * float(first), float(last), cmp="<")
        ctx.metric(f"critic_td_loss_seed_{s}", {"first_10": float(first),
                                                "last_10": float(last)})
    rows = [[s, LAM, r.episodes, r.solved_episode or "—", r.steps, r.last_mean(100),
             r.wall_time_s] for s, r in runs.items()]
    if one_step is not None:
        r = one_step
        rows.append([0, 0.0, r.episodes, r.solved_episode or "—", r.steps, r.last_mean(100),
                     r.wall_time_s])
    ctx.text(
        "Actor-critic (`rl.actor_critic`): the actor is a 4-64-2 softmax policy and the critic "
        f"a 4-64-1 value network (tanh), both trained by Adam (α = {ACTOR_LR:g} and "
        f"{CRITIC_LR:g}), γ = {GAMMA}, one update of each per episode on the batch of its "
        "states: the critic's values v_t = V(s_t) come from one forward pass over s_0 … s_T, "
        "the TD errors are δ_t = r_t + γ(1 − d_t) v_t+1 − v_t (d_t = 1 when the pole fell; "
        "the 500-step time limit is not a terminal state and keeps its bootstrap), the critic "
        "minimises the chapter's L(φ) = mean_t (V_φ(s_t) − (r_t + γ v_t+1))² with the "
        "target held fixed, and the actor follows the chapter's ∇log π(a_t|s_t) A_t. With the "
        "one-step advantage A_t = δ_t (the chapter's r + γV(s') − V(s)) the actor inherits "
        "the critic's errors, which are large while the critic is still learning values of up "
        f"to 1/(1 − γ) = {1 / (1 - GAMMA):.0f}; summing the next TD errors, A_t = Σ_k "
        f"(γλ)^k δ_t+k with λ = {LAM} (generalised advantage estimation), trades part of "
        "that bias for variance; the run below is measured with it."
        + ("" if one_step is None else
           f" The one-step advantage on seed 0 reached a best 100-episode mean of "
           f"{np.max(rl.moving_average(one_step.episode_returns, 100)[99:]):.0f} in "
           f"{one_step.episodes} episodes"
           + (f" and solved the task after {one_step.solved_episode}."
              if one_step.solved_episode else ", short of 475.")))
    ctx.table(["seed", "λ", "episodes", "solved after", "env steps", "mean of last 100",
               "wall time (s)"], rows,
              caption="Actor-critic on CartPole-v1" + (" (quick: 150 episodes)" if ctx.quick
                                                       else f" until the mean of 100 episodes "
                                                       f"≥ {TARGET:.0f}"))
    fig, axes = viz.new_figure(1, 2, size=(11.0, 4.0))
    ax = axes[0]
    curves = dict(runs)
    for i, (s, r) in enumerate(curves.items()):
        x = np.arange(1, r.episodes + 1)
        ax.plot(x, r.episode_returns, color=viz.COLORS[i], lw=0.5, alpha=0.3)
        ax.plot(x, rl.moving_average(r.episode_returns, 100), color=viz.COLORS[i], lw=1.8,
                label=f"λ = {LAM}, seed {s}")
    if one_step is not None:
        x = np.arange(1, one_step.episodes + 1)
        ax.plot(x, rl.moving_average(one_step.episode_returns, 100), color="0.3", lw=1.4,
                ls="-.", label="λ = 0 (one-step), seed 0")
    ax.axhline(TARGET, color="0.3", ls="--", lw=1, label=f"{TARGET:.0f}")
    ax.set_xlabel("episode")
    ax.set_ylabel("return (mean of last 100)")
    ax.set_ylim(0, 520)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    ax = axes[1]
    for i, (s, r) in enumerate(runs.items()):
        ax.semilogy(np.arange(1, r.episodes + 1), rl.moving_average(r.value_losses, 10),
                    color=viz.COLORS[i], lw=1.3, label=f"seed {s}")
    ax.set_xlabel("episode")
    ax.set_ylabel("critic TD loss (mean of 10)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ctx.figure(fig, "cartpole",
               "Left: returns (mean of the last 100 episodes). Right: the critic's TD loss "
               "mean_t (V(s_t) − r_t − γV(s_t+1))², which grows with the episodes' length as "
               "the values to learn grow, then settles.")
    return times


def _semi_gradient(ctx):
    """TD's semi-gradient fixed point is V^π; the full gradient of the same loss is not."""
    import gymnasium as gym

    ctx.status("semi-gradient vs full gradient of the TD loss")
    env = gym.make("FrozenLake-v1", is_slippery=True)
    mdp = rl.TabularMDP.from_gym(env)
    S = mdp.n_states
    pi = np.full((S, 4), 0.25)
    v_pi = rl.policy_evaluation_exact(mdp, pi, GAMMA).V
    # on-policy state distribution d(s) (expected visits, normalised)
    P_pi = np.einsum("sa,sat->st", pi, mdp.P)
    visits = np.linalg.solve(np.eye(S) - P_pi.T, mdp.initial)
    d = visits / visits.sum()
    # every sampled transition (s, a, r, s', done) with its probability d(s) π(a|s) p
    table = env.unwrapped.P
    rows = [(s, r, s2, float(done), d[s] * pi[s, a] * p)
            for s in range(S) for a in range(4) for p, s2, r, done in table[s][a] if d[s] > 0]
    s_, r_, s2_, done_, w_ = (np.array(c) for c in zip(*rows))
    s_, s2_ = s_.astype(int), s2_.astype(int)

    def td_loss(V, target=None):
        """The chapter's E[(V(s) − (r + γV(s')))²]; with ``target`` given, that constant."""
        y = r_ + GAMMA * (1 - done_) * cm.take(V, s2_) if target is None else target
        return cm.sum(w_ * (cm.take(V, s_) - y) ** 2)

    # semi-gradient: the target is computed from V but not differentiated.  The gradient in
    # V(s) is 2 d(s)(V(s) − E[y | s]): a step of 1/(2 d(s)) per state makes each step one
    # expected TD update (the Bellman backup), a γ-contraction
    live = d > 0
    V = np.zeros(S)
    step = np.where(live, 0.5 / np.where(live, d, 1.0), 0.0)
    grad_semi = cm.grad(td_loss)
    for _ in range(2000):
        y = r_ + GAMMA * (1 - done_) * V[s2_]
        V_new = V - step * np.asarray(grad_semi(V, y))
        moved = float(np.max(np.abs(V_new - V)))
        V = V_new
        if moved < 1e-14:
            break
    semi_err = float(np.max(np.abs(V - v_pi)[live]))
    # full gradient ("residual gradient"): the loss is quadratic in V, its minimiser solves
    # weighted least squares; the engine's gradient confirms it is stationary there
    A = np.zeros((len(w_), S))
    A[np.arange(len(w_)), s_] += 1.0
    A[np.arange(len(w_)), s2_] -= GAMMA * (1 - done_)
    sw = np.sqrt(w_)
    V_rg = np.linalg.lstsq(A * sw[:, None], r_ * sw, rcond=None)[0]
    g_full = cm.grad(td_loss)
    stat = float(np.max(np.abs(np.asarray(g_full(V_rg)))))
    at_vpi = float(np.max(np.abs(np.asarray(g_full(v_pi)))))
    rg_err = float(np.max(np.abs(V_rg - v_pi)[live]))
    ctx.check("semi-gradient TD (target held fixed) converges to V^π: max |V − V^π|", 1e-8,
              semi_err, cmp="<=")
    ctx.check("full gradient of the same loss vanishes at its minimiser (max |∇L|)", 1e-10,
              stat, cmp="<=")
    ctx.check("... but not at V^π (max |∇L(V^π)|)", 1e-4, at_vpi, cmp=">")
    ctx.check("... and that minimiser is not V^π: max |V_residual − V^π| over visited states",
              0.01, rg_err, cmp=">")
    ctx.metric("semi_gradient_max_abs_error", semi_err)
    ctx.metric("residual_gradient_max_abs_error", rg_err)
    ctx.metric("v_start", {"v_pi": float(v_pi[0]), "semi_gradient": float(V[0]),
                           "residual_gradient": float(V_rg[0])})
    ctx.text(
        "Why the critic's target is held fixed. The chapter writes the critic loss as "
        "L(φ) = E[(V_φ(s) − (r + γV_φ(s')))²]; differentiating it *through* V_φ(s') as well "
        "(the \"residual gradient\") minimises the mean squared TD error, whose expectation "
        "also contains the variance of r + γV(s') over the random next state — its minimiser "
        "is not V^π when transitions are stochastic. TD learning takes the semi-gradient "
        "(V_φ(s) − y)∇V_φ(s) with y = r + γV_φ(s') held constant; its fixed point is "
        "the Bellman equation. Measured exactly on slippery FrozenLake, uniform random "
        f"policy, γ = {GAMMA}, a tabular V and the expectation over the on-policy state "
        "distribution written in calcml operations: gradient steps with the target held "
        f"fixed (step 1/(2d(s)) per state) end at V^π (max error {semi_err:.1e}), while "
        "the minimiser of the full loss "
        f"(where the engine's gradient is {stat:.1e}) differs from V^π by up to {rg_err:.3f}; "
        f"V(start) = {V_rg[0]:.4f} against V^π(start) = {v_pi[0]:.4f}. "
        "`rl.actor_critic` uses the semi-gradient.")

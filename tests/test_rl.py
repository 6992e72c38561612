"""Tests of calcml.rl: the Bellman equation, Q-learning, REINFORCE, actor-critic and the
policy gradient theorem (chapter 9.7)."""

import doctest

import gymnasium as gym
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import calcml as cm
from calcml import rl


@pytest.fixture(autouse=True)
def one_blas_thread():
    # tiny matrices: one BLAS thread is as fast and immune to oversubscription
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def lake():
    return gym.make("FrozenLake-v1", is_slippery=True)


@pytest.fixture(scope="module")
def lake_mdp(lake):
    return rl.TabularMDP.from_gym(lake)


# --- the MDP model and the Bellman equation -------------------------------------------------

def test_model_from_frozenlake(lake_mdp):
    m = lake_mdp
    assert (m.n_states, m.n_actions) == (16, 4)
    # holes (5, 7, 11, 12) and the goal (15) end every episode: no continuing mass, no reward
    for s in (5, 7, 11, 12, 15):
        assert np.all(m.P[s] == 0) and np.all(m.R[s] == 0)
    # from 14, "right" slips to 15 (the goal: reward 1, terminal) with probability 1/3
    assert m.R[14, 2] == pytest.approx(1 / 3)
    assert m.terminal_prob[14, 2] == pytest.approx(1 / 3)
    assert np.allclose(m.P.sum(axis=2) + m.terminal_prob, 1.0)
    assert m.initial[0] == 1.0


@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_bellman_exact_equals_iterative(lake_mdp, gamma):
    uniform = np.full((16, 4), 0.25)
    mixed = np.random.default_rng(0).dirichlet(np.ones(4), size=16)
    for policy in (uniform, mixed, np.arange(16) % 4):
        ex = rl.policy_evaluation_exact(lake_mdp, policy, gamma)
        it = rl.policy_evaluation_iterative(lake_mdp, policy, gamma, tol=1e-14)
        assert it.converged and it.iterations > 10
        assert np.max(np.abs(ex.V - it.V)) <= 1e-10
        # V^π is the fixed point of the backup, and Q^π averages to it
        assert np.allclose(rl.bellman_backup(lake_mdp, policy, ex.V, gamma), ex.V, atol=1e-12)
        pi = rl.policy_matrix(policy, 16, 4)
        assert np.allclose((pi * ex.Q).sum(axis=1), ex.V, atol=1e-12)
    # residuals shrink at least like γ^k (contraction)
    res = it.residuals
    assert np.all(res[1:] <= gamma * res[:-1] + 1e-15)


def test_value_iteration_is_optimal(lake_mdp):
    vi = rl.value_iteration(lake_mdp, 0.99)
    assert vi.converged
    # V* satisfies the optimality equation and equals V of its greedy policy
    assert np.allclose(rl.q_from_v(lake_mdp, vi.V, 0.99).max(axis=1), vi.V, atol=1e-12)
    assert np.allclose(rl.policy_evaluation_exact(lake_mdp, vi.policy, 0.99).V, vi.V,
                       atol=1e-10)
    # no deterministic policy does better anywhere (random sample of them)
    rng = np.random.default_rng(0)
    for _ in range(50):
        V = rl.policy_evaluation_exact(lake_mdp, rng.integers(0, 4, 16), 0.99).V
        assert np.all(V <= vi.V + 1e-10)
    # under the 100-step limit the optimal policy succeeds 74.0 % of the time; no policy,
    # even a time-dependent one, does better than 74.4 %
    succ = lake_mdp.initial @ rl.finite_horizon_value(lake_mdp, vi.policy, 100)
    best = lake_mdp.initial @ rl.finite_horizon_optimum(lake_mdp, 100)
    assert 0.735 < succ <= best < 0.75


def test_gamma_one_improper_policy_is_refused():
    # a state that loops onto itself forever: with γ = 1, V = 1 + V has no solution
    loop = rl.TabularMDP(np.array([[[1.0], [0.0]]]), R=np.array([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="singular"):
        rl.policy_evaluation_exact(loop, np.array([0]), 1.0)
    assert rl.policy_evaluation_exact(loop, np.array([1]), 1.0).V[0] == 0.0  # ends at once
    assert not rl.policy_evaluation_iterative(loop, np.array([0]), 1.0, max_iter=50).converged


def test_value_iteration_fails_fast_when_values_do_not_converge(lake_mdp):
    import time

    # action 0 stays (reward 1), action 1 ends the episode (reward 5): with γ = 1 staying
    # forever is worth +∞ and V_k = k grows by 1 per backup
    P = np.zeros((1, 2, 1))
    P[0, 0, 0] = 1.0
    grows = rl.TabularMDP(P, R=np.array([[1.0, 5.0]]))
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"^calcml\.rl\.value_iteration: no convergence with "
                                           r"gamma=1\.0 after max_iter=100000 backups: the last "
                                           r"change .* was 1 > tol=1e-14 .*100004"):
        rl.value_iteration(grows, 1.0)
    assert time.perf_counter() - t0 < 30   # 1,000,000 silent backups before: now ~1 s
    # a two-state cycle with rewards +1, −1 never ends: V_k oscillates, bounded
    P = np.zeros((2, 1, 2))
    P[0, 0, 1] = P[1, 0, 0] = 1.0
    cycle = rl.TabularMDP(P, R=np.array([[1.0], [-1.0]]))
    with pytest.raises(RuntimeError, match=r"gamma=1\.0 after max_iter=500 backups.* was 1 "):
        rl.value_iteration(cycle, 1.0, max_iter=500)
    # γ < 1 always converges, but may need more than the max_iter given
    with pytest.raises(RuntimeError, match=r"gamma=0\.999 after max_iter=100 .* converges, "
                                           r"after about 3[0-9]{4} backups"):
        rl.value_iteration(grows, 0.999, max_iter=100)
    assert rl.value_iteration(grows, 0.999).V[0] == pytest.approx(1000.0, rel=1e-13)
    assert rl.value_iteration(cycle, 0.9).converged
    # the converging cases are as before: FrozenLake (γ = 0.99 and even γ = 1, episodic)
    # and CliffWalking (γ = 1, exact after the 13-step path)
    assert rl.value_iteration(lake_mdp, 0.99).iterations == 837
    assert rl.value_iteration(lake_mdp, 1.0).converged
    cliff = rl.value_iteration(rl.TabularMDP.from_gym("CliffWalking-v1"), 1.0)
    assert cliff.converged and cliff.residuals[-1] == 0.0


def test_tabular_mdp_validation():
    with pytest.raises(ValueError, match=r"shape \(S, A, S\)"):
        rl.TabularMDP(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="R must have shape"):
        rl.TabularMDP(np.zeros((2, 1, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="at most 1"):
        rl.TabularMDP(np.ones((2, 1, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="policy must have shape"):
        rl.policy_evaluation_exact(rl.TabularMDP(np.zeros((2, 1, 2)), np.zeros((2, 1))),
                                   np.ones((3, 1)), 0.9)
    with pytest.raises(ValueError, match="from_gym.*transition table"):
        rl.TabularMDP.from_gym(gym.make("CartPole-v1"))


# --- Q-learning --------------------------------------------------------------------------------

def test_q_learning_update_by_hand():
    Q = np.array([[0.5, 2.0], [1.0, 3.0]])
    td = rl.q_learning_update(Q, 0, 0, r=-1.0, s_next=1, terminated=False, alpha=0.1, gamma=0.9)
    # δ = −1 + 0.9·max(1, 3) − 0.5 = 1.2 ;  Q ← 0.5 + 0.1·1.2
    assert td == pytest.approx(1.2)
    assert Q[0, 0] == pytest.approx(0.62)
    assert Q[0, 1] == 2.0 and np.all(Q[1] == [1.0, 3.0])
    # at a terminal successor the bootstrap is dropped: δ = r − Q(s, a)
    td = rl.q_learning_update(Q, 0, 1, r=1.0, s_next=1, terminated=True, alpha=0.5, gamma=0.9)
    assert td == pytest.approx(-1.0) and Q[0, 1] == pytest.approx(1.5)


def test_q_learning_loop_applies_the_update():
    """Replay a short run step by step with a recording environment and the hand update."""

    class Recorder(gym.Wrapper):
        def reset(self, **kw):
            obs, info = self.env.reset(**kw)
            self.log.append(("reset", int(obs)))
            return obs, info

        def step(self, a):
            out = self.env.step(a)
            self.log.append((int(a), int(out[0]), float(out[1]), bool(out[2])))
            return out

    env = Recorder(gym.make("FrozenLake-v1", is_slippery=True))
    env.log = []
    res = rl.q_learning(env, 40, alpha=0.3, gamma=0.95, epsilon=0.5, seed=3)
    Q = np.zeros((16, 4))
    s = None
    for entry in env.log:
        if entry[0] == "reset":
            s = entry[1]
            continue
        a, s2, r, term = entry
        rl.q_learning_update(Q, s, a, r, s2, term, 0.3, 0.95)
        s = s2
    assert np.array_equal(Q, res.Q)
    assert res.steps == sum(1 for e in env.log if e[0] != "reset")


def test_q_learning_frozenlake_reaches_70_percent(lake, lake_mdp):
    episodes = 2000
    res = rl.q_learning(lake, episodes, gamma=0.99, seed=0,
                        alpha=cm.optim.linear_schedule(0.2, 0.02, episodes),
                        epsilon=cm.optim.linear_schedule(1.0, 0.05, episodes // 2))
    ev = rl.evaluate_policy(lake, res.policy, episodes=1000, seed=1000)
    assert ev.mean_return >= 0.70
    # the exact success probability (100-step limit) of the learned policy, against the
    # optimal policy's and the best achievable
    exact = lake_mdp.initial @ rl.finite_horizon_value(lake_mdp, res.policy, 100)
    opt = rl.value_iteration(lake_mdp, 0.99)
    best = lake_mdp.initial @ rl.finite_horizon_value(lake_mdp, opt.policy, 100)
    assert 0.70 <= exact <= best + 1e-12
    assert abs(ev.mean_return - exact) < 4 * ev.std_error
    assert res.episode_returns.shape == (episodes,) and res.wall_time_s > 0
    assert res.epsilons[0] == 1.0 and res.epsilons[-1] == pytest.approx(0.05)


def test_q_learning_cliffwalking_finds_the_optimal_path():
    env = gym.make("CliffWalking-v1")
    res = rl.q_learning(env, 200, alpha=0.5, gamma=1.0, epsilon=0.1, seed=0)
    path = rl.rollout(env, res.policy, seed=0)
    assert path.total_reward == -13.0 and len(path) == 13 and path.terminated
    # the path hugs the cliff: row 2 (just above the cliff) from column 0 to 11
    cells = [np.unravel_index(int(s), (4, 12)) for s in path.observations]
    assert cells[0] == (3, 0) and cells[-1] == (3, 11)
    assert all(r == 2 for r, _ in cells[1:-1])
    vi = rl.value_iteration(rl.TabularMDP.from_gym(env), 1.0)
    assert vi.V[36] == pytest.approx(-13.0)


def test_q_learning_is_reproducible(lake):
    a = rl.q_learning(lake, 100, epsilon=0.3, seed=7)
    b = rl.q_learning(lake, 100, epsilon=0.3, seed=7)
    c = rl.q_learning(lake, 100, epsilon=0.3, seed=8)
    assert np.array_equal(a.Q, b.Q) and np.array_equal(a.episode_lengths, b.episode_lengths)
    assert not np.array_equal(a.episode_lengths, c.episode_lengths)


def test_q_learning_callback_stops():
    seen = []
    res = rl.q_learning("FrozenLake-v1", 50, seed=0,
                        callback=lambda ep, Q: seen.append(Q.shape) or ep == 9)
    assert len(res.episode_returns) == 10 and seen == [(16, 4)] * 10


# --- returns, losses, networks -----------------------------------------------------------------

def test_discounted_returns_and_advantages():
    r = np.array([1.0, 0.0, 2.0, -1.0])
    g = 0.9
    naive = np.array([sum(g ** (k - t) * r[k] for k in range(t, 4)) for t in range(4)])
    assert np.allclose(rl.discounted_returns(r, g), naive, rtol=0, atol=1e-15)
    assert rl.discounted_returns([], 0.5).shape == (0,)
    # GAE with λ = 1 telescopes to G_t − V(s_t); λ = 0 is the TD error
    v = np.array([0.5, -0.2, 1.0, 0.3, 7.0])  # v[4]: value of the final state (terminal)
    y = rl.td_targets(r, v[1:], True, g)
    assert y[-1] == r[-1] and y[0] == pytest.approx(r[0] + g * v[1])
    delta = y - v[:-1]
    assert np.allclose(rl.gae_advantages(delta, g, 1.0), naive - v[:-1], atol=1e-14)
    assert np.allclose(rl.gae_advantages(delta, g, 0.0), delta)
    assert np.allclose(rl.moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])


def _hand_reinforce_grads(net, X, actions, w):
    """∂/∂θ of −(1/T) Σ w_t log softmax(z_t)[a_t] for a 1-hidden-layer tanh MLP, by hand."""
    W1, b1, W2, b2 = (p.data for p in net.parameters())
    H = np.tanh(X @ W1.T + b1)
    Z = H @ W2.T + b2
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    T = len(actions)
    dZ = P.copy()
    dZ[np.arange(T), actions] -= 1.0
    dZ *= (w / T)[:, None]                    # ∂L/∂z_t = −(w_t/T)(e_{a_t} − π_t)
    dW2, db2 = dZ.T @ H, dZ.sum(axis=0)
    dA = (dZ @ W2) * (1.0 - H ** 2)
    return [dA.T @ X, dA.sum(axis=0), dW2, db2]


def test_reinforce_loss_gradient_by_hand():
    rng = np.random.default_rng(0)
    net = rl.mlp(4, 3, hidden=(8,), rng=1)
    X = rng.standard_normal((7, 4))
    actions = rng.integers(0, 3, 7)
    w = rng.standard_normal(7)
    loss = rl.reinforce_loss(net, X, actions, w)
    loss.backward()
    for p, g in zip(net.parameters(), _hand_reinforce_grads(net, X, actions, w)):
        np.testing.assert_allclose(p.grad, g, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"reinforce_loss.*\(5,\)"):
        rl.reinforce_loss(net, X, actions, np.ones(5))


def test_numpy_forward_matches_module():
    net = rl.mlp(4, 2, hidden=(16, 8), activation="relu", rng=0)
    fwd = rl.NumpyForward(net)
    x = np.random.default_rng(1).standard_normal(4)
    assert fwd.compiled
    np.testing.assert_allclose(fwd(x), net(x[None]).data[0], rtol=1e-13)
    net[0].weight.data[...] += 1.0            # stale until refreshed
    assert not np.allclose(fwd(x), net(x[None]).data[0])
    fwd.refresh()
    np.testing.assert_allclose(fwd(x), net(x[None]).data[0], rtol=1e-13)
    other = cm.nn.Sequential(cm.nn.Linear(4, 2, rng=0), cm.nn.LayerNorm(2))  # falls back
    f2 = rl.NumpyForward(other)
    assert not f2.compiled
    np.testing.assert_allclose(f2(x), other(x[None]).data[0])
    sig = rl.mlp(3, 2, hidden=(5,), activation="sigmoid", rng=0)
    np.testing.assert_allclose(rl.NumpyForward(sig)(np.ones(3)), sig(np.ones((1, 3))).data[0])


# --- REINFORCE and actor-critic on CartPole ---------------------------------------------------

def test_reinforce_cartpole_improves():
    net = rl.mlp(4, 2, hidden=(64,), rng=0)
    res = rl.reinforce("CartPole-v1", net, cm.optim.adam(1e-2), episodes=150, seed=0)
    r = res.episode_returns
    assert r[:25].mean() < 60 and r[-25:].mean() > 200   # a random policy scores ~22
    assert res.losses.shape == (150,) and res.value_losses is None
    assert res.steps == res.episode_lengths.sum() and res.wall_time_s > 0


def test_reinforce_cartpole_solves():
    """The full target: mean return ≥ 475 over 100 consecutive episodes (~5 s)."""
    net = rl.mlp(4, 2, hidden=(64,), rng=5)
    res = rl.reinforce("CartPole-v1", net, cm.optim.adam(1e-2), episodes=600, seed=5,
                       target_return=475.0, window=100)
    assert res.solved_episode is not None and res.solved_episode == res.episodes
    assert res.last_mean(100) >= 475.0


def test_reinforce_value_baseline_and_discount_weights():
    net, vnet = rl.mlp(4, 2, hidden=(32,), rng=0), rl.mlp(4, 1, hidden=(32,), rng=1)
    res = rl.reinforce("CartPole-v1", net, cm.optim.adam(1e-2), episodes=60, seed=0,
                       baseline=vnet, baseline_optimizer=cm.optim.adam(1e-2),
                       discount_weights=True)
    assert np.all(np.isfinite(res.value_losses)) and res.value_losses[-1] < res.value_losses[0]


def test_actor_critic_cartpole_improves():
    actor, critic = rl.mlp(4, 2, rng=2), rl.mlp(4, 1, rng=102)
    res = rl.actor_critic("CartPole-v1", actor, critic, cm.optim.adam(1e-2),
                          cm.optim.adam(3e-2), episodes=150, seed=2)
    r = res.episode_returns
    assert r[:25].mean() < 60 and r[-25:].mean() > 150
    assert res.value_losses.shape == (150,) and np.all(np.isfinite(res.value_losses))


def test_actor_critic_cartpole_solves():
    """The full target with the chapter's TD-trained critic (~3 s)."""
    actor, critic = rl.mlp(4, 2, rng=8), rl.mlp(4, 1, rng=108)
    res = rl.actor_critic("CartPole-v1", actor, critic, cm.optim.adam(1e-2),
                          cm.optim.adam(3e-2), episodes=600, seed=8, target_return=475.0)
    assert res.solved_episode is not None and res.last_mean() >= 475.0


def test_policy_gradient_runs_are_reproducible():
    def run(seed):
        net = rl.mlp(4, 2, hidden=(16,), rng=0)
        return rl.reinforce("CartPole-v1", net, cm.optim.adam(1e-2), episodes=15,
                            seed=seed).episode_returns

    assert np.array_equal(run(3), run(3)) and not np.array_equal(run(3), run(4))

    def run_ac():
        return rl.actor_critic("CartPole-v1", rl.mlp(4, 2, rng=0), rl.mlp(4, 1, rng=1),
                               cm.optim.adam(1e-2), cm.optim.adam(1e-2), episodes=10,
                               seed=0).episode_returns

    assert np.array_equal(run_ac(), run_ac())


def test_float32_policy():
    net = rl.mlp(4, 2, hidden=(16,), rng=0, dtype=np.float32)
    res = rl.reinforce("CartPole-v1", net, cm.optim.adam(1e-2), episodes=5, seed=0)
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert np.all(np.isfinite(res.losses))
    critic = rl.mlp(4, 1, hidden=(16,), rng=1, dtype=np.float32)
    rl.actor_critic("CartPole-v1", net, critic, cm.optim.adam(1e-2), cm.optim.adam(1e-2),
                    episodes=3, seed=0)
    assert all(p.dtype == np.float32 for p in critic.parameters())


def test_target_return_stops_training():
    net = rl.mlp(4, 2, hidden=(16,), rng=0)
    res = rl.reinforce("CartPole-v1", net, cm.optim.adam(1e-2), episodes=500, seed=0,
                       target_return=15.0, window=5)
    assert res.solved_episode == res.episodes < 500
    assert res.episode_returns[-5:].mean() >= 15.0


# --- the policy gradient theorem ---------------------------------------------------------------

def test_solve_in_calcml_ops():
    rng = np.random.default_rng(0)
    A = np.eye(4) * 3 + rng.uniform(-0.5, 0.5, (4, 4))
    b = rng.standard_normal(4)
    np.testing.assert_allclose(rl.solve(A, b), np.linalg.solve(A, b), rtol=1e-13)
    # d/db Σx = A^{-T} 1 and d/dA Σx = −A^{-T} 1 xᵀ
    gA, gb = cm.grad(lambda A, b: cm.sum(rl.solve(A, b)), argnums=(0, 1))(A, b)
    u = np.linalg.solve(A.T, np.ones(4))
    x = np.linalg.solve(A, b)
    np.testing.assert_allclose(gb, u, rtol=1e-12)
    np.testing.assert_allclose(gA, -np.outer(u, x), rtol=1e-12)


def test_exact_objective_and_its_gradient():
    mdp = rl.random_episodic_mdp(3, 2, seed=0)
    theta = np.random.default_rng(1).standard_normal((3, 2))
    J, g = rl.exact_policy_gradient(theta, mdp, 0.9)
    V = rl.policy_evaluation_exact(mdp, rl.softmax_policy(theta), 0.9).V
    assert J == pytest.approx(mdp.initial @ V, abs=1e-13)
    cm.check_grad(lambda th: rl.exact_objective(th, mdp, 0.9), theta)
    assert np.allclose(g.sum(axis=1), 0.0, atol=1e-14)   # softmax: shifting θ[s] changes nothing


def test_policy_gradient_theorem():
    mdp = rl.random_episodic_mdp(3, 2, seed=0)
    theta = np.random.default_rng(1).standard_normal((3, 2))
    chk = rl.policy_gradient_check(mdp, theta, 0.9, n=100_000, seed=0)
    assert abs(chk.J_mc - chk.J) < 4 * chk.J_std_error
    for name in ("trajectory", "reward_to_go"):
        e = chk.estimators[name]
        assert e.max_abs_z < 4.0, (name, e.z)
        assert e.dof == 3 and e.p_value > 1e-3, (name, e.chi2)
    # the reward-to-go form has the same mean and less variance
    assert np.all(chk.estimators["reward_to_go"].std_error
                  < chk.estimators["trajectory"].std_error)
    # dropping γ^t (what most code does) estimates something else
    bad = chk.estimators["undiscounted_weights"]
    assert bad.max_abs_z > 10 and bad.p_value < 1e-10


def test_random_episodic_mdp_terminal_prob_forms():
    # one number p: every step ends the episode with probability p
    mdp = rl.random_episodic_mdp(4, 3, terminal_prob=0.3, seed=1)
    np.testing.assert_allclose(mdp.terminal_prob, 0.3, rtol=1e-12)
    assert np.allclose(rl.random_episodic_mdp(terminal_prob=np.float64(1.0)).P, 0.0)
    # a pair, as a tuple, list or array, is the range as before
    a = rl.random_episodic_mdp(terminal_prob=(0.2, 0.4), seed=3)
    for same in ([0.2, 0.4], np.array([0.2, 0.4])):
        b = rl.random_episodic_mdp(terminal_prob=same, seed=3)
        assert np.array_equal(a.P, b.P) and np.array_equal(a.R, b.R)
    assert np.all((a.terminal_prob >= 0.2 - 1e-12) & (a.terminal_prob <= 0.4 + 1e-12))


@pytest.mark.parametrize("bad", [(0.1, 0.2, 0.3), (0.1,), (), "ab", ("0.1", "0.2"),
                                 (0.1, None), None, True, np.zeros((2, 2)), {0.1, 0.2}])
def test_random_episodic_mdp_malformed_terminal_prob(bad):
    with pytest.raises(ValueError, match=r"^calcml\.rl\.random_episodic_mdp: terminal_prob must "
                                         r"be a number p in \(0, 1\] or a pair \(low, high\)"):
        rl.random_episodic_mdp(terminal_prob=bad)


@pytest.mark.parametrize("bad", [0.0, -0.2, 1.5, float("nan"), (0.4, 0.2), (0.0, 0.5),
                                 [0.5, 1.2]])
def test_random_episodic_mdp_terminal_prob_out_of_range(bad):
    with pytest.raises(ValueError, match=r"^calcml\.rl\.random_episodic_mdp: terminal_prob must "
                                         r"satisfy 0 < low <= high <= 1"):
        rl.random_episodic_mdp(terminal_prob=bad)


def test_theorem_input_errors():
    mdp = rl.random_episodic_mdp(seed=0)
    with pytest.raises(ValueError, match=r"theta must have shape \(S, A\) = \(3, 2\)"):
        rl.exact_policy_gradient(np.zeros((2, 2)), mdp, 0.9)
    with pytest.raises(ValueError, match="unknown estimators"):
        rl.sample_gradients(mdp, np.zeros((3, 2)), 0.9, 10, estimators=("nope",))
    forever = rl.TabularMDP(np.ones((1, 1, 1)), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="every step may end"):
        rl.sample_gradients(forever, np.zeros((1, 1)), 0.9, 10)


# --- bad inputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [1.5, -0.1, "0.9", True, float("nan")])
def test_bad_gamma(gamma, lake_mdp):
    with pytest.raises(ValueError, match=r"calcml.rl.q_learning: gamma .* \[0, 1\]"):
        rl.q_learning("FrozenLake-v1", 1, gamma=gamma)
    with pytest.raises(ValueError, match="policy_evaluation_exact: gamma"):
        rl.policy_evaluation_exact(lake_mdp, np.zeros(16, dtype=int), gamma)


def test_bad_rates_and_counts():
    with pytest.raises(ValueError, match="q_learning: alpha must be a number > 0.*0.0"):
        rl.q_learning("FrozenLake-v1", 1, alpha=0.0)
    with pytest.raises(ValueError, match="alpha must be a number > 0.*-0.5"):
        rl.q_learning("FrozenLake-v1", 1, alpha=-0.5)
    with pytest.raises(ValueError, match="epsilon must lie in"):
        rl.q_learning("FrozenLake-v1", 1, epsilon=1.5)
    with pytest.raises(ValueError, match="episodes must be a positive integer, got 0"):
        rl.q_learning("FrozenLake-v1", 0)
    with pytest.raises(ValueError, match=r"q_init .* shape \(16, 4\), got shape \(4, 4\)"):
        rl.q_learning("FrozenLake-v1", 1, q_init=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="lam must be a number in"):
        rl.actor_critic("CartPole-v1", rl.mlp(4, 2, rng=0), rl.mlp(4, 1, rng=0),
                        cm.optim.adam(1e-2), cm.optim.adam(1e-2), lam=2.0)


def test_wrong_kind_of_environment():
    with pytest.raises(ValueError, match="q_learning: tabular methods need a Discrete "
                                         "observation space.*Box"):
        rl.q_learning("CartPole-v1", 1)
    with pytest.raises(ValueError, match="reinforce: needs a 1-D Box observation space.*"
                                         "Discrete"):
        rl.reinforce("FrozenLake-v1", rl.mlp(1, 4, rng=0), cm.optim.adam(1e-2))
    with pytest.raises(ValueError, match="needs a Discrete action space"):
        rl.reinforce("Pendulum-v1", rl.mlp(3, 1, rng=0), cm.optim.adam(1e-2))
    with pytest.raises(TypeError, match="env must be a gymnasium.Env"):
        rl.q_learning(42, 1)


def test_wrong_networks_and_optimizers():
    with pytest.raises(ValueError, match=r"policy maps observations \(n, 4\) to shape \(3,\), "
                                         r"expected \(2,\)"):
        rl.reinforce("CartPole-v1", rl.mlp(4, 3, rng=0), cm.optim.adam(1e-2))
    with pytest.raises(ValueError, match=r"critic maps .* expected \(1,\)"):
        rl.actor_critic("CartPole-v1", rl.mlp(4, 2, rng=0), rl.mlp(4, 2, rng=0),
                        cm.optim.adam(1e-2), cm.optim.adam(1e-2))
    with pytest.raises(TypeError, match="optimizer must be a cm.optim transform"):
        rl.reinforce("CartPole-v1", rl.mlp(4, 2, rng=0), 0.01)
    with pytest.raises(ValueError, match="baseline must be 'mean', None or a cm.nn.Module"):
        rl.reinforce("CartPole-v1", rl.mlp(4, 2, rng=0), cm.optim.adam(1e-2), baseline="avg")
    with pytest.raises(ValueError, match="needs baseline_optimizer"):
        rl.reinforce("CartPole-v1", rl.mlp(4, 2, rng=0), cm.optim.adam(1e-2),
                     baseline=rl.mlp(4, 1, rng=0))
    with pytest.raises(ValueError, match="activation must be one of"):
        rl.mlp(4, 2, activation="swish", rng=0)


def test_rollout_and_play_episode_are_seeded_by_default():
    # a fresh environment reset without a seed would draw from the OS: not reproducible
    lens = {len(rl.rollout("FrozenLake-v1", [1] * 16)) for _ in range(5)}
    assert len(lens) == 1
    fwd = rl.NumpyForward(rl.mlp(4, 2, rng=0))
    a = rl.play_episode(gym.make("CartPole-v1"), fwd, np.random.default_rng(0).random)
    b = rl.play_episode(gym.make("CartPole-v1"), fwd, np.random.default_rng(0).random)
    assert np.array_equal(a.states, b.states)
    with pytest.raises(ValueError, match=r"rollout: a policy table needs one action in \[0, 4\) "
                                         r"for each of the 16 states, got shape \(3,\)"):
        rl.rollout("FrozenLake-v1", [0] * 3)
    with pytest.raises(ValueError, match=r"rollout: .* actions in \[7, 7\]"):
        rl.rollout("FrozenLake-v1", [7] * 16)


def test_none_seeds_are_refused_like_calcml_generative():
    # None would seed from the operating system: every result of calcml.rl is reproducible
    net = rl.mlp(4, 2, rng=0)
    opt = cm.optim.adam(1e-2)
    mdp = rl.random_episodic_mdp(seed=0)
    theta = np.zeros((3, 2))
    none_hint = "None would seed from the operating system"
    cases = [
        ("mlp: rng must be a numpy.random.Generator or an int seed",
         lambda: rl.mlp(4, 2, rng=None)),
        ("random_episodic_mdp: seed must be a numpy.random.Generator",
         lambda: rl.random_episodic_mdp(seed=None)),
        ("sample_gradients: rng must be",
         lambda: rl.sample_gradients(mdp, theta, 0.9, 5, rng=None)),
        ("policy_gradient_check: seed must be",
         lambda: rl.policy_gradient_check(mdp, theta, 0.9, n=5, seed=None)),
        ("q_learning: seed must be an int >= 0",
         lambda: rl.q_learning("FrozenLake-v1", 1, seed=None)),
        ("evaluate_policy: seed must be an int >= 0",
         lambda: rl.evaluate_policy("FrozenLake-v1", [0] * 16, episodes=1, seed=None)),
        ("reinforce: seed must be an int >= 0",
         lambda: rl.reinforce("CartPole-v1", net, opt, episodes=1, seed=None)),
        ("actor_critic: seed must be an int >= 0",
         lambda: rl.actor_critic("CartPole-v1", net, rl.mlp(4, 1, rng=1), opt, opt, episodes=1,
                                 seed=None)),
    ]
    for msg, call in cases:
        with pytest.raises(TypeError, match=rf"^calcml\.rl\.{msg}.*got None \({none_hint}"):
            call()
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'rng'"):
        rl.mlp(4, 2)   # required, as in calcml.generative.mlp
    # other non-seeds: TypeError; negative seeds: ValueError, both naming the function
    with pytest.raises(TypeError, match=r"q_learning: seed must be an int >= 0, got 1\.5"):
        rl.q_learning("FrozenLake-v1", 1, seed=1.5)
    with pytest.raises(TypeError, match=r"reinforce: seed must be an int >= 0, got "
                                        r"Generator"):
        rl.reinforce("CartPole-v1", net, opt, episodes=1, seed=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"random_episodic_mdp: seed must be .* got -1"):
        rl.random_episodic_mdp(seed=-1)
    with pytest.raises(TypeError, match=r"mlp: rng must be .*got 'a'"):
        rl.mlp(4, 2, rng="a")


def test_explicit_generators_and_numpy_int_seeds_are_accepted():
    a = rl.random_episodic_mdp(seed=np.int64(4))
    b = rl.random_episodic_mdp(seed=np.random.default_rng(4))
    assert np.array_equal(a.P, b.P)
    theta = np.zeros((3, 2))
    r1, _ = rl.sample_gradients(a, theta, 0.9, 50, rng=np.random.default_rng(2))
    r2, _ = rl.sample_gradients(a, theta, 0.9, 50, rng=2)
    assert np.array_equal(r1, r2)
    c1 = rl.policy_gradient_check(a, theta, 0.9, n=50, seed=np.random.default_rng(2))
    c2 = rl.policy_gradient_check(a, theta, 0.9, n=50, seed=2)
    assert c1.J_mc == c2.J_mc
    n1, n2 = rl.mlp(3, 2, rng=np.random.default_rng(5)), rl.mlp(3, 2, rng=np.uint8(5))
    assert all(np.array_equal(p.data, q.data)
               for p, q in zip(n1.parameters(), n2.parameters(), strict=True))
    assert rl.q_learning("FrozenLake-v1", 2, seed=np.int32(1)).Q.shape == (16, 4)


def test_seed_none_only_continues_an_already_seeded_environment():
    # a fresh environment (or an id) has no generator: reset(seed=None) would seed it from
    # the operating system
    with pytest.raises(TypeError, match=r"^calcml\.rl\.rollout: seed=None continues the "
                                        r"environment's own random generator, but this "
                                        r"environment has none yet"):
        rl.rollout("FrozenLake-v1", [1] * 16, seed=None)
    fwd = rl.NumpyForward(rl.mlp(4, 2, rng=0))
    with pytest.raises(TypeError, match=r"^calcml\.rl\.play_episode: seed=None continues"):
        rl.play_episode(gym.make("CartPole-v1"), fwd, np.random.default_rng(0).random, seed=None)
    # after a seeded reset, None continues that stream: reproducible
    runs = []
    for _ in range(2):
        env = gym.make("FrozenLake-v1")
        first = rl.rollout(env, [1] * 16, seed=3)
        runs.append([first.observations] + [rl.rollout(env, [1] * 16, seed=None).observations
                                            for _ in range(5)])
    assert runs[0] == runs[1]
    env = gym.make("CartPole-v1")
    u = np.random.default_rng(0).random
    rl.play_episode(env, fwd, u, seed=1)
    assert len(rl.play_episode(env, fwd, u, seed=None)) > 0
    with pytest.raises(ValueError, match=r"rollout: seed must be an int >= 0, got -3"):
        rl.rollout("FrozenLake-v1", [1] * 16, seed=-3)


def test_q_learning_update_and_epsilon_greedy_refuse_bad_input():
    Q_int = np.zeros((2, 2), dtype=int)   # would silently truncate every update in place
    with pytest.raises(ValueError, match=r"q_learning_update: Q must be a 2-D floating.*int64"):
        rl.q_learning_update(Q_int, 0, 0, 1.0, 1, False, 0.5, 0.9)
    Q = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"q_learning_update: s must be an integer in \[0, 2\)"):
        rl.q_learning_update(Q, 5, 0, 1.0, 1, False, 0.5, 0.9)
    with pytest.raises(ValueError, match="q_learning_update: gamma"):
        rl.q_learning_update(Q, 0, 0, 1.0, 1, False, 0.5, 5.0)
    with pytest.raises(ValueError, match="q_learning_update: alpha must be a positive"):
        rl.q_learning_update(Q, 0, 0, 1.0, 1, False, 0.0, 0.9)
    with pytest.raises(ValueError, match="q_learning_update: r must be a finite"):
        rl.q_learning_update(Q, 0, 0, float("nan"), 1, False, 0.5, 0.9)
    assert np.all(Q == 0)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="epsilon_greedy: q_row must be a non-empty finite"):
        rl.epsilon_greedy(np.array([np.nan, 1.0]), 0.0, rng)
    with pytest.raises(ValueError, match="epsilon_greedy: epsilon must be a number in"):
        rl.epsilon_greedy(np.array([0.0, 1.0]), 5.0, rng)
    with pytest.raises(TypeError, match="epsilon_greedy: rng must be a numpy.random.Generator"):
        rl.epsilon_greedy(np.array([0.0, 1.0]), 0.5, 0)


def test_non_finite_models_and_wrong_value_shapes_are_refused():
    with pytest.raises(ValueError, match="TabularMDP: P and R must be finite"):
        rl.TabularMDP(np.full((1, 1, 1), np.nan), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="TabularMDP: P and R must be finite"):
        rl.TabularMDP(np.zeros((1, 1, 1)), np.full((1, 1), np.inf))
    with pytest.raises(ValueError, match="q_learning: q_init must be finite"):
        rl.q_learning("FrozenLake-v1", 1, q_init=float("nan"))
    mdp = rl.random_episodic_mdp(seed=0)
    with pytest.raises(ValueError, match=r"bellman_backup: V must be a finite array of shape "
                                         r"\(3,\), got shape \(5,\)"):
        rl.bellman_backup(mdp, np.zeros(3, dtype=int), np.zeros(5), 0.9)
    with pytest.raises(ValueError, match=r"policy_evaluation_iterative: V0 .* \(3,\)"):
        rl.policy_evaluation_iterative(mdp, np.zeros(3, dtype=int), 0.9, V0=np.zeros(5))


def test_reinforce_loss_refuses_bad_actions_and_weights():
    net = rl.mlp(4, 2, rng=0)
    X = np.ones((2, 4))
    with pytest.raises(ValueError, match=r"reinforce_loss: need states .* \(\)"):
        rl.reinforce_loss(net, X[:1], np.array(0), np.ones(1))
    with pytest.raises(ValueError, match="reinforce_loss: actions must be integers.*float64"):
        rl.reinforce_loss(net, X, np.array([0.0, 1.0]), np.ones(2))
    with pytest.raises(ValueError, match=r"reinforce_loss: actions must lie in \[0, 2\).*"
                                         r"\[0, 5\]"):
        rl.reinforce_loss(net, X, np.array([0, 5]), np.ones(2))
    with pytest.raises(ValueError, match="reinforce_loss: weights must be finite"):
        rl.reinforce_loss(net, X, np.array([0, 1]), np.array([np.nan, 1.0]))


def test_return_helpers_validate_and_keep_float32():
    r32 = np.array([1.0, 0.0, 2.0], dtype=np.float32)
    assert rl.discounted_returns(r32, 0.9).dtype == np.float32
    assert rl.discounted_returns([1.0, 2.0], 0.9).dtype == np.float64
    assert rl.td_targets(r32, r32, True, 0.9).dtype == np.float32
    assert rl.gae_advantages(r32, 0.9, 0.5).dtype == np.float32
    np.testing.assert_allclose(rl.gae_advantages(r32, 0.9, 0.5),
                               rl.gae_advantages(r32.astype(np.float64), 0.9, 0.5), rtol=1e-6)
    with pytest.raises(ValueError, match=r"td_targets: gamma .* \[0, 1\]"):
        rl.td_targets([1.0], [2.0], False, 2.0)
    with pytest.raises(ValueError, match=r"gae_advantages: gamma"):
        rl.gae_advantages([1.0], "x", 0.5)
    with pytest.raises(ValueError, match=r"gae_advantages: lam must be a number in \[0, 1\]"):
        rl.gae_advantages([1.0], 0.9, 1.5)
    with pytest.raises(ValueError, match=r"gae_advantages: deltas must be 1-D.*\(2, 2\)"):
        rl.gae_advantages(np.ones((2, 2)), 0.9, 0.5)
    with pytest.raises(ValueError, match=r"moving_average: x must be 1-D.*\(2, 2\)"):
        rl.moving_average(np.ones((2, 2)), 2)


# --- the examples in the docstrings -------------------------------------------------------------

@pytest.mark.parametrize("module", ["mdp", "tabular", "networks", "policy_gradient",
                                    "actor_critic", "theorem"])
def test_docstring_examples(module):
    import importlib

    mod = importlib.import_module(f"calcml.rl.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_numpy_forward_never_writes_into_the_observation():
    net = cm.nn.Sequential(cm.nn.Tanh(), cm.nn.Linear(4, 2, rng=np.random.default_rng(0)),
                           cm.nn.ReLU())
    x = np.array([1.0, -2.0, 3.0, -4.0])
    y = rl.NumpyForward(net)(x)
    np.testing.assert_array_equal(x, [1.0, -2.0, 3.0, -4.0])
    np.testing.assert_allclose(y, net(x[None]).data[0], rtol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow that makes the NaN
def test_policy_gradients_stop_on_a_non_finite_loss():
    with pytest.raises(FloatingPointError, match=r"calcml.rl.reinforce: the policy loss is "
                                                 r"nan at episode \d+"):
        rl.reinforce("CartPole-v1", rl.mlp(4, 2, rng=0, activation="relu"),
                     cm.optim.sgd(1e200), episodes=20, normalize=False, baseline=None)
    with pytest.raises(FloatingPointError, match=r"calcml.rl.actor_critic: the (actor|critic)"):
        rl.actor_critic("CartPole-v1", rl.mlp(4, 2, rng=0, activation="relu"),
                        rl.mlp(4, 1, rng=1), cm.optim.sgd(1e200), cm.optim.sgd(1e-3),
                        episodes=20)

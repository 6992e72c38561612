r"""Tabular Q-learning on gymnasium environments with discrete states and actions.

The agent keeps a table ``Q[s, a]``, acts ε-greedily and after every step applies the
chapter's update

.. math:: Q(s,a) \leftarrow Q(s,a) + \alpha\big[r + \gamma\max_{a'} Q(s',a') - Q(s,a)\big],

with the bootstrap term dropped when ``s'`` is terminal (the episode is over: there is no
future value to add).  A time limit that *truncates* an episode is not a terminal state — the
process would have gone on — so there the bootstrap is kept.

Everything random comes from an explicit ``numpy.random.Generator`` (ε-greedy choices and
ties) and from ``env.reset(seed=...)`` at the first episode, so a seed fixes the run.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass

import numpy as np

from ._random import UniformStream
from ._validate import (
    check_env_seed,
    check_gamma,
    check_nonneg_int,
    check_positive,
    check_probability,
    check_seed,
    make_env,
    rate_at,
    require_discrete_actions,
    require_discrete_observations,
)

__all__ = ["QLearningResult", "Trajectory", "EvaluationResult", "q_learning",
           "q_learning_update", "epsilon_greedy", "rollout", "evaluate_policy"]

#: Episodes of an environment without a time limit are cut after this many steps in
#: :func:`rollout` and :func:`evaluate_policy` (a greedy policy may walk in circles forever).
DEFAULT_MAX_STEPS = 10_000


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def _is_finite_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and np.isfinite(x)


@dataclass
class QLearningResult:
    """What :func:`q_learning` learned and how.

    Attributes
    ----------
    Q : array (S, A)
    policy : array of int (S,)
        The greedy policy ``argmax_a Q(s, a)``.
    episode_returns, episode_lengths : arrays (episodes,)
        Undiscounted return and number of steps of each training episode (ε-greedy).
    epsilons, alphas : arrays (episodes,)
        The exploration rate and step size used in each episode.
    td_errors : array (episodes,)
        Mean absolute TD error ``|r + γ max Q(s', ·) − Q(s, a)|`` over each episode's steps.
    steps : int
        Environment steps in total.
    wall_time_s : float
    """

    Q: np.ndarray
    policy: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    epsilons: np.ndarray
    alphas: np.ndarray
    td_errors: np.ndarray
    steps: int
    wall_time_s: float


@dataclass
class Trajectory:
    """One episode: observations ``s_0 … s_T`` (T + 1 of them), actions and rewards (T)."""

    observations: list
    actions: list
    rewards: list
    terminated: bool
    truncated: bool

    @property
    def total_reward(self):
        return float(sum(self.rewards))

    def __len__(self):
        return len(self.actions)


@dataclass
class EvaluationResult:
    """Returns of a fixed policy over many episodes.

    Attributes
    ----------
    returns, lengths : arrays (episodes,)
    terminated : array of bool (episodes,)
        Whether each episode ended in a terminal state (not by a time limit).
    mean_return : float
    std_error : float
        ``std(returns) / sqrt(episodes)``.
    """

    returns: np.ndarray
    lengths: np.ndarray
    terminated: np.ndarray
    mean_return: float
    std_error: float


def q_learning_update(Q, s, a, r, s_next, terminated, alpha, gamma):
    r"""Apply one Q-learning update to ``Q`` in place and return the TD error.

    Parameters
    ----------
    Q : array (S, A)
        Updated in place.
    s, a : int
        The state and the action taken.
    r : float
        The reward received.
    s_next : int
        The next state.
    terminated : bool
        Whether ``s_next`` is terminal (its value is then 0; truncation by a time limit is
        not termination).
    alpha : float > 0
    gamma : float in [0, 1]

    Returns
    -------
    float
        The TD error ``δ = r + γ max_a' Q(s', a') − Q(s, a)`` (``r − Q(s, a)`` at a terminal
        ``s'``); ``Q[s, a]`` grows by ``α δ``.

    Notes
    -----
    .. math:: Q(s,a) \leftarrow Q(s,a) + \alpha\big[r + \gamma\max_{a'}Q(s',a') - Q(s,a)\big]

    — a stochastic approximation step towards the Bellman optimality equation
    ``Q*(s,a) = E[r + γ max_a' Q*(s', a')]``, using the sampled ``(r, s')`` in place of the
    expectation.  It converges to Q* when every pair is visited infinitely often and the step
    sizes satisfy Σα = ∞, Σα² < ∞ (Watkins & Dayan, 1992).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> Q = np.zeros((2, 2)); Q[1] = [1.0, 3.0]
    >>> rl.q_learning_update(Q, 0, 1, r=1.0, s_next=1, terminated=False, alpha=0.5, gamma=0.9)
    3.7
    >>> float(Q[0, 1])                                # 0 + 0.5·(1 + 0.9·3 − 0)
    1.85
    """
    who = "q_learning_update"
    if not isinstance(Q, np.ndarray) or Q.ndim != 2 or Q.dtype.kind != "f":
        # in place: an integer table would silently truncate every update
        raise ValueError(f"calcml.rl.{who}: Q must be a 2-D floating-point NumPy array (it is "
                         f"updated in place), got {_describe(Q)}")
    S, A = Q.shape
    for name, v, n in (("s", s, S), ("a", a, A), ("s_next", s_next, S)):
        if not isinstance(v, (numbers.Integral, np.integer)) or isinstance(v, bool) \
                or not 0 <= v < n:
            raise ValueError(f"calcml.rl.{who}: {name} must be an integer in [0, {n}) for Q of "
                             f"shape {Q.shape}, got {v!r}")
    if not _is_finite_real(r):
        raise ValueError(f"calcml.rl.{who}: r must be a finite number, got {r!r}")
    alpha = check_positive(who, "alpha", alpha)
    gamma = check_gamma(who, gamma)
    q_sa = Q[s, a]
    target = r if terminated else r + gamma * Q[s_next].max()
    td = float(target - q_sa)
    Q[s, a] = q_sa + alpha * td
    return td


def epsilon_greedy(q_row, epsilon, rng):
    """An action drawn ε-greedily from one row of Q: uniform with probability ε, otherwise a
    maximiser of ``q_row`` (ties broken uniformly at random, so an all-zero table explores).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> rl.epsilon_greedy(np.array([0.0, 2.0, 1.0]), 0.0, np.random.default_rng(0))
    1
    """
    who = "epsilon_greedy"
    q_row = np.asarray(q_row)
    if q_row.ndim != 1 or q_row.shape[0] == 0 or q_row.dtype.kind not in "iuf" \
            or not np.all(np.isfinite(q_row)):
        raise ValueError(f"calcml.rl.{who}: q_row must be a non-empty finite 1-D array of action "
                         f"values, got {_describe(q_row)}")
    check_probability(who, "epsilon", epsilon)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"calcml.rl.{who}: rng must be a numpy.random.Generator, got "
                        f"{type(rng).__name__}")
    n = q_row.shape[0]
    if rng.random() < epsilon:
        return int(rng.integers(n))
    best = np.flatnonzero(q_row == q_row.max())
    return int(best[0]) if best.shape[0] == 1 else int(best[rng.integers(best.shape[0])])


def _progress(progress, total, desc):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def q_learning(env, episodes, *, alpha=0.1, gamma=0.99, epsilon=0.1, seed=0, q_init=0.0,
               max_steps=None, callback=None, progress=False):
    r"""Tabular Q-learning with ε-greedy exploration.

    Parameters
    ----------
    env : gymnasium.Env or str
        Discrete observations and actions (FrozenLake, CliffWalking, Taxi, ...).
    episodes : int > 0
        Training episodes.
    alpha : float > 0 or callable
        Step size, or a schedule ``episode -> α`` (e.g. ``cm.optim.linear_schedule``).
    gamma : float in [0, 1]
        Discount factor.
    epsilon : float in [0, 1] or callable
        Exploration rate, or a schedule ``episode -> ε``.
    seed : int >= 0, default 0
        Seeds the agent's generator and ``env.reset(seed=seed)`` of the first episode
        (None is refused with a TypeError: it would seed from the operating system).
    q_init : float or array (S, A)
        The initial table (a constant, or a table that is copied).
    max_steps : int, optional
        Cut each training episode after this many steps (as a truncation: bootstrapped).
    callback : callable, optional
        ``callback(episode, Q)`` after each episode, with a copy of the table; returning
        True stops training.
    progress : bool
        A tqdm progress bar over the episodes.

    Returns
    -------
    QLearningResult

    Notes
    -----
    After each step ``(s, a, r, s')`` (see :func:`q_learning_update`):

    .. math:: Q(s,a) \leftarrow Q(s,a) + \alpha\big[r + \gamma(1 - d)\max_{a'}Q(s',a')
              - Q(s,a)\big],

    ``d = 1`` when ``s'`` is terminal.  Q-learning is *off-policy*: it learns the greedy
    policy's values while behaving ε-greedily, which is why on CliffWalking it learns the
    optimal path along the cliff edge (return −13) although its ε-greedy behaviour sometimes
    falls off.

    Examples
    --------
    >>> from calcml import rl
    >>> res = rl.q_learning("CliffWalking-v1", 300, alpha=0.5, gamma=1.0, epsilon=0.1)
    >>> rl.evaluate_policy("CliffWalking-v1", res.policy, episodes=1).mean_return
    -13.0
    """
    who = "q_learning"
    seed = check_seed(who, seed)
    env = make_env(who, env)
    n_states = require_discrete_observations(who, env)
    n_actions = require_discrete_actions(who, env)
    episodes = check_nonneg_int(who, "episodes", episodes, positive=True)
    gamma = check_gamma(who, gamma)
    if max_steps is not None:
        max_steps = check_nonneg_int(who, "max_steps", max_steps, positive=True)
    rate_at(who, "alpha", alpha, 0, allow_zero=False)
    eps0 = rate_at(who, "epsilon", epsilon, 0, allow_zero=True)
    if eps0 > 1:
        raise ValueError(f"calcml.rl.q_learning: epsilon must lie in [0, 1], got {eps0!r}")
    if np.ndim(q_init) == 0:
        Q = np.full((n_states, n_actions), float(q_init))
    else:
        Q = np.array(q_init, dtype=np.float64)
        if Q.shape != (n_states, n_actions):
            raise ValueError(f"calcml.rl.q_learning: q_init must be a number or have shape "
                             f"({n_states}, {n_actions}), got shape {Q.shape}")
    if not np.all(np.isfinite(Q)):
        raise ValueError(f"calcml.rl.q_learning: q_init must be finite, got {_describe(Q)} with "
                         "NaN or infinite entries")
    rng = np.random.default_rng(seed)
    limit = max_steps if max_steps is not None else np.inf
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    eps_hist = np.zeros(episodes)
    alpha_hist = np.zeros(episodes)
    td_hist = np.zeros(episodes)
    # The table lives in Python lists while learning: indexing and max over a handful of
    # floats cost a tenth of NumPy's per-call overhead, and this loop is the whole cost.
    table = Q.tolist()
    uniforms = UniformStream(rng)
    bar = _progress(progress, episodes, "Q-learning")
    t0 = time.perf_counter()
    steps = 0
    done_episodes = episodes
    for ep in range(episodes):
        eps = rate_at(who, "epsilon", epsilon, ep, allow_zero=True) if callable(epsilon) else eps0
        if eps > 1:
            raise ValueError(f"calcml.rl.q_learning: epsilon must lie in [0, 1], got {eps!r} "
                             f"at episode {ep}")
        a_rate = rate_at(who, "alpha", alpha, ep, allow_zero=False) if callable(alpha) \
            else float(alpha)
        s, _ = env.reset(seed=seed if ep == 0 else None)
        s = int(s)
        total, n, td_sum = 0.0, 0, 0.0
        while True:
            row = table[s]
            a = _epsilon_greedy_list(row, eps, uniforms, n_actions)
            s2, r, terminated, truncated, _ = env.step(a)
            s2 = int(s2)
            q_sa = row[a]
            target = r if terminated else r + gamma * max(table[s2])
            td = target - q_sa
            row[a] = q_sa + a_rate * td
            td_sum += abs(td)
            total += r
            n += 1
            s = s2
            if terminated or truncated or n >= limit:
                break
        steps += n
        returns[ep], lengths[ep], eps_hist[ep], alpha_hist[ep] = total, n, eps, a_rate
        td_hist[ep] = td_sum / n
        if bar is not None:
            bar.update(1)
        if callback is not None and callback(ep, np.array(table)):
            done_episodes = ep + 1
            break
    if bar is not None:
        bar.close()
    Q = np.array(table)
    k = done_episodes
    return QLearningResult(Q, np.argmax(Q, axis=1), returns[:k], lengths[:k], eps_hist[:k],
                           alpha_hist[:k], td_hist[:k], steps, time.perf_counter() - t0)


def _epsilon_greedy_list(row, eps, uniform, n_actions):
    if uniform() < eps:
        return min(int(uniform() * n_actions), n_actions - 1)
    m = max(row)
    a = row.index(m)
    if row.count(m) == 1:
        return a
    best = [i for i, v in enumerate(row) if v == m]
    return best[min(int(uniform() * len(best)), len(best) - 1)]


def _policy_fn(who, policy, env=None):
    if callable(policy):
        return policy
    table = np.asarray(policy)
    if table.ndim != 1 or table.dtype.kind not in "iu":
        raise ValueError(f"calcml.rl.{who}: policy must be a callable obs -> action or an "
                         f"integer array of actions per state (S,), got an array of shape "
                         f"{table.shape} and dtype {table.dtype}")
    if env is not None:
        S = require_discrete_observations(who, env)
        A = require_discrete_actions(who, env)
        if table.shape != (S,) or np.any(table < 0) or np.any(table >= A):
            lo, hi = (table.min(), table.max()) if table.size else (None, None)
            raise ValueError(f"calcml.rl.{who}: a policy table needs one action in [0, {A}) for "
                             f"each of the {S} states, got shape {table.shape} with actions in "
                             f"[{lo}, {hi}]")
    acts = table.tolist()
    return lambda s: acts[int(s)]


def rollout(env, policy, *, seed=0, max_steps=None):
    """Run one episode with a fixed policy.

    Parameters
    ----------
    env : gymnasium.Env or str
    policy : callable or array of int (S,)
        ``policy(obs) -> action``, or a table of actions per state.
    seed : int >= 0 or None, default 0
        Passed to ``env.reset`` (default 0, so that a run is reproducible).  None continues
        the environment's own generator, for an environment already reset with a seed (as
        :func:`evaluate_policy` does after its first episode); on an environment that has
        no generator yet (a fresh one, or an id) it is refused with a TypeError, since
        ``reset`` would then seed from the operating system.
    max_steps : int, optional
        Stop after this many steps (default: the environment's time limit, and at most
        ``DEFAULT_MAX_STEPS``).

    Returns
    -------
    Trajectory

    Examples
    --------
    >>> from calcml import rl
    >>> path = rl.rollout("CliffWalking-v1", [0] * 24 + [1] * 11 + [2] + [0] * 12, seed=0)
    >>> path.observations[:3], path.total_reward       # up, right along row 2, down
    ([36, 24, 25], -13.0)
    """
    who = "rollout"
    env = make_env(who, env)
    act = _policy_fn(who, policy, None if callable(policy) else env)
    limit = DEFAULT_MAX_STEPS if max_steps is None else \
        check_nonneg_int(who, "max_steps", max_steps, positive=True)
    obs, _ = env.reset(seed=check_env_seed(who, env, seed))
    observations, actions, rewards = [obs], [], []
    terminated = truncated = False
    while len(actions) < limit:
        a = int(act(obs))
        obs, r, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        actions.append(a)
        rewards.append(float(r))
        if terminated or truncated:
            break
    return Trajectory(observations, actions, rewards, bool(terminated),
                      bool(truncated or not terminated))


def evaluate_policy(env, policy, *, episodes=1000, seed=12345, max_steps=None):
    """Returns of a fixed policy over ``episodes`` episodes.

    Parameters
    ----------
    env : gymnasium.Env or str
    policy : callable or array of int (S,)
    episodes : int > 0
    seed : int >= 0, default 12345
        ``env.reset(seed=seed)`` at the first episode, so the evaluation is reproducible
        (None is refused with a TypeError).
    max_steps : int, optional
        See :func:`rollout`.

    Returns
    -------
    EvaluationResult
        On FrozenLake (reward 1 at the goal, 0 elsewhere) ``mean_return`` is the success rate.

    Examples
    --------
    >>> from calcml import rl
    >>> rl.evaluate_policy("FrozenLake-v1", [0] * 16, episodes=100).mean_return  # always left
    0.0
    """
    who = "evaluate_policy"
    seed = check_seed(who, seed)
    env = make_env(who, env)
    episodes = check_nonneg_int(who, "episodes", episodes, positive=True)
    if not callable(policy):
        policy = np.asarray(policy)
        if policy.dtype.kind not in "iu":
            raise ValueError(f"calcml.rl.{who}: policy must be a callable or an integer array "
                             f"of actions, got dtype {policy.dtype}")
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    term = np.zeros(episodes, dtype=bool)
    for ep in range(episodes):
        tr = rollout(env, policy, seed=seed if ep == 0 else None, max_steps=max_steps)
        returns[ep], lengths[ep], term[ep] = tr.total_reward, len(tr), tr.terminated
    se = float(returns.std(ddof=1) / np.sqrt(episodes)) if episodes > 1 else float("nan")
    return EvaluationResult(returns, lengths, term, float(returns.mean()), se)

r"""Finite Markov decision processes as arrays, and the Bellman equation solved two ways.

A :class:`TabularMDP` holds, for S states and A actions,

* ``P[s, a, s']``: the probability of moving from ``s`` to ``s'`` under ``a`` *and going on*
  (the transition does not end the episode);
* ``R[s, a]``: the expected immediate reward;
* ``initial[s]``: the distribution of the first state.

Transitions that end the episode are not in ``P`` — its rows sum to ``1 − Pr(terminate)`` —
because after them nothing more is collected: the value of "the episode is over" is 0.  This
is how the Bellman equation of an episodic task is written correctly; the chapter's
``V(s) = E[r + γ V(s')]`` silently assumes V(s') = 0 when s' is terminal.

For a policy π (an (S, A) array of probabilities, or (S,) actions) the Bellman equation

.. math::  V^\pi(s) = \sum_a \pi(a|s)\Big[R(s,a) + \gamma\sum_{s'} P(s'|s,a) V^\pi(s')\Big]

is linear, ``V = r_π + γ P_π V``, and :func:`policy_evaluation_exact` solves
``(I − γ P_π) V = r_π``; :func:`policy_evaluation_iterative` applies the backup ``T^π`` until
it stops moving (a γ-contraction in the max norm for γ < 1).  :func:`value_iteration` does the
same with the max over actions (the Bellman optimality equation), and
:func:`finite_horizon_value` gives the exact expected return within H steps — what a time
limit such as FrozenLake's 100 steps actually measures.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ._validate import check_gamma, check_nonneg_int, check_positive, make_env

__all__ = ["TabularMDP", "PolicyEvaluationResult", "ValueIterationResult", "policy_matrix",
           "bellman_backup", "policy_evaluation_exact", "policy_evaluation_iterative",
           "value_iteration", "q_from_v", "greedy_policy", "finite_horizon_value",
           "finite_horizon_optimum"]


@dataclass(frozen=True)
class TabularMDP:
    """A finite MDP: continuing transitions ``P`` (S, A, S), expected rewards ``R`` (S, A)
    and the initial distribution ``initial`` (S,).

    Parameters
    ----------
    P : array of shape (S, A, S)
        ``P[s, a, s']`` = Pr(next state s' and the episode goes on | s, a).  Rows may sum to
        less than 1: the rest is the probability that the transition ends the episode.
    R : array of shape (S, A)
        Expected reward of taking ``a`` in ``s`` (over next states, terminal ones included).
    initial : array of shape (S,), optional
        Distribution of the first state (uniform when omitted).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> P = np.array([[[0.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.5]]])
    >>> mdp = rl.TabularMDP(P, R=np.array([[0.0, 1.0], [2.0, 0.0]]))
    >>> mdp.n_states, mdp.n_actions, mdp.terminal_prob[1].tolist()
    (2, 2, [1.0, 0.5])
    """

    P: np.ndarray
    R: np.ndarray
    initial: np.ndarray = None

    def __post_init__(self):
        P = np.asarray(self.P, dtype=np.float64)
        R = np.asarray(self.R, dtype=np.float64)
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"calcml.rl.TabularMDP: P must have shape (S, A, S), got shape "
                             f"{P.shape}")
        S, A = P.shape[:2]
        if R.shape != (S, A):
            raise ValueError(f"calcml.rl.TabularMDP: R must have shape (S, A) = {(S, A)}, got "
                             f"shape {R.shape}")
        if not (np.all(np.isfinite(P)) and np.all(np.isfinite(R))):
            raise ValueError("calcml.rl.TabularMDP: P and R must be finite, got NaN or infinite "
                             f"entries (P shape {P.shape}, R shape {R.shape})")
        rows = P.sum(axis=2)
        if np.any(P < 0) or np.any(rows > 1.0 + 1e-9):
            raise ValueError("calcml.rl.TabularMDP: P must be non-negative with rows summing to "
                             f"at most 1, got row sums up to {rows.max():.6g} and minimum entry "
                             f"{P.min():.6g}")
        if self.initial is None:
            rho = np.full(S, 1.0 / S)
        else:
            rho = np.asarray(self.initial, dtype=np.float64)
            if rho.shape != (S,) or np.any(rho < 0) or abs(rho.sum() - 1.0) > 1e-9:
                raise ValueError(f"calcml.rl.TabularMDP: initial must be a distribution of "
                                 f"shape ({S},), got shape {rho.shape} summing to {rho.sum()}")
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "initial", rho)

    @property
    def n_states(self):
        return self.P.shape[0]

    @property
    def n_actions(self):
        return self.P.shape[1]

    @property
    def terminal_prob(self):
        """``1 − Σ_s' P[s, a, s']``: the probability that (s, a) ends the episode."""
        return np.clip(1.0 - self.P.sum(axis=2), 0.0, 1.0)

    @classmethod
    def from_gym(cls, env):
        """Read the model of a gymnasium toy-text environment (FrozenLake, CliffWalking, Taxi).

        Parameters
        ----------
        env : gymnasium.Env or str
            An environment whose ``unwrapped.P[s][a]`` is a list of
            ``(probability, next_state, reward, terminated)``.

        Returns
        -------
        TabularMDP
            Duplicate outcomes are summed; a terminated transition contributes its reward to
            ``R`` and nothing to ``P``.  ``initial`` is ``unwrapped.initial_state_distrib``
            when the environment has one.
        """
        env = make_env("TabularMDP.from_gym", env)
        u = env.unwrapped
        table = getattr(u, "P", None)
        if not isinstance(table, dict):
            raise ValueError(f"calcml.rl.TabularMDP.from_gym: {type(u).__name__} has no "
                             "transition table P[s][a] = [(p, s', r, terminated), ...]")
        S, A = int(u.observation_space.n), int(u.action_space.n)
        P = np.zeros((S, A, S))
        R = np.zeros((S, A))
        for s in range(S):
            for a in range(A):
                for p, s2, r, done in table[s][a]:
                    R[s, a] += p * r
                    if not done:
                        P[s, a, int(s2)] += p
        rho = getattr(u, "initial_state_distrib", None)
        return cls(P, R, None if rho is None else np.asarray(rho, dtype=np.float64))


@dataclass
class PolicyEvaluationResult:
    """V^π and how it was obtained.

    Attributes
    ----------
    V : array (S,)
    Q : array (S, A)
        ``Q(s, a) = R(s, a) + γ Σ_s' P(s'|s, a) V(s')``.
    iterations : int
        Backups applied (0 for the exact solve).
    residuals : array
        ``max_s |V_{k+1}(s) − V_k(s)|`` after each backup (empty for the exact solve).
    converged : bool
    wall_time_s : float
    """

    V: np.ndarray
    Q: np.ndarray
    iterations: int
    residuals: np.ndarray
    converged: bool
    wall_time_s: float


@dataclass
class ValueIterationResult(PolicyEvaluationResult):
    """V*, Q* and a greedy (optimal) policy.

    Attributes
    ----------
    policy : array of int (S,)
        ``argmax_a Q*(s, a)`` (the first maximiser on ties).
    """

    policy: np.ndarray = None


def policy_matrix(policy, n_states, n_actions, who="policy_matrix"):
    """A policy as an (S, A) array of probabilities.

    Parameters
    ----------
    policy : array of shape (S,) of ints, or (S, A) of probabilities
    n_states, n_actions : int

    Returns
    -------
    array (S, A)
        Rows sum to 1 (checked).

    Examples
    --------
    >>> from calcml import rl
    >>> rl.policy_matrix([1, 0], 2, 2)
    array([[0., 1.],
           [1., 0.]])
    """
    pi = np.asarray(policy)
    if pi.shape == (n_states,) and pi.dtype.kind in "iu":
        if np.any(pi < 0) or np.any(pi >= n_actions):
            raise ValueError(f"calcml.rl.{who}: actions must lie in [0, {n_actions}), got "
                             f"{pi.tolist()}")
        out = np.zeros((n_states, n_actions))
        out[np.arange(n_states), pi] = 1.0
        return out
    if pi.shape != (n_states, n_actions):
        raise ValueError(f"calcml.rl.{who}: policy must have shape ({n_states},) (actions) or "
                         f"({n_states}, {n_actions}) (probabilities), got shape {pi.shape}")
    pi = pi.astype(np.float64)
    if np.any(pi < 0) or np.any(np.abs(pi.sum(axis=1) - 1.0) > 1e-9):
        raise ValueError(f"calcml.rl.{who}: the rows of policy must be probability "
                         f"distributions; row sums {pi.sum(axis=1)}")
    return pi


def _check_v(who, name, V, n_states):
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (n_states,) or not np.all(np.isfinite(V)):
        raise ValueError(f"calcml.rl.{who}: {name} must be a finite array of shape ({n_states},), "
                         f"got shape {V.shape}")
    return V


def _pi_model(mdp, policy, who):
    pi = policy_matrix(policy, mdp.n_states, mdp.n_actions, who)
    P_pi = np.einsum("sa,sat->st", pi, mdp.P)
    r_pi = np.einsum("sa,sa->s", pi, mdp.R)
    return pi, P_pi, r_pi


def q_from_v(mdp, V, gamma):
    r"""``Q(s, a) = R(s, a) + γ Σ_s' P(s'|s, a) V(s')`` (one-step lookahead).

    Parameters
    ----------
    mdp : TabularMDP
    V : array (S,)
    gamma : float in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> mdp = rl.TabularMDP(np.array([[[1.0], [0.0]]]), R=np.array([[0.0, 1.0]]))
    >>> rl.q_from_v(mdp, np.array([2.0]), 0.5)     # stay: 0 + 0.5·2; leave: 1
    array([[1., 1.]])
    """
    gamma = check_gamma("q_from_v", gamma)
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (mdp.n_states,):
        raise ValueError(f"calcml.rl.q_from_v: V must have shape ({mdp.n_states},), got "
                         f"shape {V.shape}")
    return mdp.R + gamma * (mdp.P @ V)


def bellman_backup(mdp, policy, V, gamma):
    r"""One application of the Bellman operator of π: ``(T^π V)(s)``.

    Notes
    -----
    .. math:: (T^\pi V)(s) = \sum_a \pi(a|s)\big[R(s,a) + \gamma \textstyle\sum_{s'}
              P(s'|s,a)\,V(s')\big],

    the right-hand side of the chapter's Bellman equation ``V^π(s) = E_{a∼π}[r(s,a) +
    γV^π(s')]`` with the expectation over s' written out and terminal successors contributing
    0.  V^π is its unique fixed point for γ < 1.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> mdp = rl.TabularMDP(np.array([[[1.0]]]), R=np.array([[1.0]]))
    >>> rl.bellman_backup(mdp, np.array([0]), np.array([0.0]), 0.5)
    array([1.])
    """
    gamma = check_gamma("bellman_backup", gamma)
    _, P_pi, r_pi = _pi_model(mdp, policy, "bellman_backup")
    return r_pi + gamma * (P_pi @ _check_v("bellman_backup", "V", V, mdp.n_states))


def policy_evaluation_exact(mdp, policy, gamma):
    r"""V^π by solving the Bellman equation as a linear system.

    Parameters
    ----------
    mdp : TabularMDP
    policy : array (S,) of actions or (S, A) of probabilities
    gamma : float in [0, 1]
        With γ = 1 the policy must end every episode with probability 1 (otherwise
        ``I − P_π`` is singular and a ``ValueError`` says so).

    Returns
    -------
    PolicyEvaluationResult

    Notes
    -----
    With ``P_π(s, s') = Σ_a π(a|s) P(s'|s, a)`` and ``r_π(s) = Σ_a π(a|s) R(s, a)`` the
    Bellman equation reads ``V = r_π + γ P_π V``, so

    .. math:: (I - \gamma P_\pi)\,V^\pi = r_\pi.

    For γ < 1 the matrix is strictly diagonally dominant (row sums of γP_π are ≤ γ), hence
    invertible.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> mdp = rl.TabularMDP(np.array([[[1.0]]]), R=np.array([[1.0]]))
    >>> float(rl.policy_evaluation_exact(mdp, np.array([0]), 0.9).V[0])  # 1/(1 − 0.9)
    10.000000000000002
    """
    t0 = time.perf_counter()
    gamma = check_gamma("policy_evaluation_exact", gamma)
    _, P_pi, r_pi = _pi_model(mdp, policy, "policy_evaluation_exact")
    M = np.eye(mdp.n_states) - gamma * P_pi
    cond = np.linalg.cond(M)
    if not np.isfinite(cond) or cond > 1e13:
        raise ValueError(f"calcml.rl.policy_evaluation_exact: I − γP_π is singular (condition "
                         f"number {cond:.3g}) for gamma={gamma}: the policy never ends some "
                         "episodes; use gamma < 1")
    V = np.linalg.solve(M, r_pi)
    return PolicyEvaluationResult(V, q_from_v(mdp, V, gamma), 0, np.zeros(0), True,
                                  time.perf_counter() - t0)


def policy_evaluation_iterative(mdp, policy, gamma, *, tol=1e-14, max_iter=1_000_000, V0=None):
    r"""V^π by iterating the Bellman backup ``V_{k+1} = T^π V_k`` until it stops moving.

    Parameters
    ----------
    mdp : TabularMDP
    policy : array (S,) of actions or (S, A) of probabilities
    gamma : float in [0, 1]
    tol : float > 0
        Stop when ``max_s |V_{k+1}(s) − V_k(s)| ≤ tol``.
    max_iter : int
    V0 : array (S,), optional
        Start (zeros by default).

    Returns
    -------
    PolicyEvaluationResult
        ``converged`` is False when ``max_iter`` was reached first.

    Notes
    -----
    ``T^π`` is a γ-contraction in the max norm, so ``‖V_k − V^π‖ ≤ γ^k ‖V_0 − V^π‖`` and, at
    the stop, ``‖V_{k+1} − V^π‖ ≤ γ/(1 − γ) · tol``.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> mdp = rl.TabularMDP(np.array([[[1.0]]]), R=np.array([[1.0]]))
    >>> r = rl.policy_evaluation_iterative(mdp, np.array([0]), 0.5)
    >>> round(float(r.V[0]), 12), r.converged
    (2.0, True)
    """
    t0 = time.perf_counter()
    who = "policy_evaluation_iterative"
    gamma = check_gamma(who, gamma)
    tol = check_positive(who, "tol", tol)
    max_iter = check_nonneg_int(who, "max_iter", max_iter, positive=True)
    _, P_pi, r_pi = _pi_model(mdp, policy, who)
    V = np.zeros(mdp.n_states) if V0 is None else _check_v(who, "V0", V0, mdp.n_states)
    gP = gamma * P_pi
    res = []
    converged = False
    for _ in range(max_iter):
        V_new = r_pi + gP @ V
        d = float(np.max(np.abs(V_new - V)))
        res.append(d)
        V = V_new
        if d <= tol:
            converged = True
            break
    return PolicyEvaluationResult(V, q_from_v(mdp, V, gamma), len(res), np.array(res),
                                  converged, time.perf_counter() - t0)


def greedy_policy(Q):
    """``argmax_a Q(s, a)`` for every state (the first maximiser on ties), as ints (S,).

    Examples
    --------
    >>> from calcml import rl
    >>> rl.greedy_policy([[0.0, 1.0], [2.0, 2.0]]).tolist()
    [1, 0]
    """
    Q = np.asarray(Q)
    if Q.ndim != 2:
        raise ValueError(f"calcml.rl.greedy_policy: Q must have shape (S, A), got shape "
                         f"{Q.shape}")
    return np.argmax(Q, axis=1)


def value_iteration(mdp, gamma, *, tol=1e-14, max_iter=None):
    r"""V*, Q* and an optimal policy by iterating the Bellman optimality backup.

    Parameters
    ----------
    mdp : TabularMDP
    gamma : float in [0, 1]
    tol : float > 0
        Stop when ``max_s |V_{k+1}(s) − V_k(s)| ≤ tol``.
    max_iter : int, optional
        The most backups.  Default 1,000,000 for γ < 1 (the backup is a contraction: it
        converges, after about ``log(tol / max|R|) / log γ`` backups — 837 for FrozenLake with
        γ = 0.99) and 100,000 for γ = 1, where values need not converge (a policy that never
        ends the episode and keeps collecting reward), so that such a case fails in a second
        or two on a small MDP.

    Returns
    -------
    ValueIterationResult
        ``converged`` is always True: reaching ``max_iter`` raises instead.

    Raises
    ------
    RuntimeError
        When ``max_iter`` backups did not bring the change below ``tol``; the message gives
        γ, the iterations, the last change and ``max_s |V(s)|``.

    Notes
    -----
    .. math:: V_{k+1}(s) = \max_a \Big[R(s,a) + \gamma\sum_{s'} P(s'|s,a)\,V_k(s')\Big],

    a γ-contraction in the max norm for γ < 1; the greedy policy of the fixed point Q* is
    optimal.  For γ = 1 the backup is only non-expanding: it converges when no policy can
    keep collecting positive reward without ending the episode (FrozenLake, CliffWalking);
    otherwise V grows without bound (or, on a cycle with rewards of both signs, oscillates).
    Q-learning (:func:`calcml.rl.q_learning`) is the sampled, model-free version of this
    backup.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> P = np.zeros((1, 2, 1)); P[0, 0, 0] = 1.0      # action 0 stays, action 1 ends
    >>> mdp = rl.TabularMDP(P, R=np.array([[1.0, 5.0]]))
    >>> r = rl.value_iteration(mdp, 0.9)
    >>> r.policy.tolist(), round(float(r.V[0]), 9)     # 1/(1 − 0.9) = 10 > 5
    ([0], 10.0)
    >>> rl.value_iteration(mdp, 1.0, max_iter=1000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: calcml.rl.value_iteration: no convergence with gamma=1.0 after ...
    """
    t0 = time.perf_counter()
    who = "value_iteration"
    gamma = check_gamma(who, gamma)
    tol = check_positive(who, "tol", tol)
    if max_iter is None:  # γ < 1 always converges; γ = 1 may not, and should then fail fast
        max_iter = 1_000_000 if gamma < 1.0 else 100_000
    max_iter = check_nonneg_int(who, "max_iter", max_iter, positive=True)
    V = np.zeros(mdp.n_states)
    gP = gamma * mdp.P
    res = []
    converged = False
    for _ in range(max_iter):
        V_new = (mdp.R + gP @ V).max(axis=1)
        d = float(np.max(np.abs(V_new - V)))
        res.append(d)
        V = V_new
        if d <= tol:
            converged = True
            break
    if not converged:
        if gamma == 1.0:
            hint = ("with gamma = 1 the values grow without bound (or oscillate) when a policy "
                    "can keep collecting reward without ending the episode: use gamma < 1")
        else:  # a contraction: |V_k+1 − V_k| <= gamma^k |V_1 − V_0|
            need = 1 + math.ceil(math.log(tol / res[0]) / math.log(gamma)) if gamma > 0 else 2
            hint = (f"with gamma < 1 it converges, after about {need} backups "
                    "(log(tol / first change) / log gamma)")
        raise RuntimeError(f"calcml.rl.{who}: no convergence with gamma={gamma} after "
                           f"max_iter={max_iter} backups: the last change max_s |V_k+1(s) - "
                           f"V_k(s)| was {d:.6g} > tol={tol:g} (max_s |V(s)| = "
                           f"{float(np.max(np.abs(V))):.6g}); {hint}, or raise max_iter or tol")
    Q = mdp.R + gP @ V
    return ValueIterationResult(V, Q, len(res), np.array(res), converged,
                                time.perf_counter() - t0, greedy_policy(Q))


def finite_horizon_value(mdp, policy, horizon, gamma=1.0):
    r"""The exact expected return of a stationary policy within ``horizon`` steps.

    Parameters
    ----------
    mdp : TabularMDP
    policy : array (S,) of actions or (S, A) of probabilities
    horizon : int ≥ 0
    gamma : float in [0, 1]

    Returns
    -------
    array (S,)
        ``V_H(s) = E[Σ_{t<H} γ^t r_t | s_0 = s]``.  With FrozenLake's 0/1 reward and γ = 1 it
        is the probability of reaching the goal within H steps — what an evaluation under
        the environment's time limit measures; ``mdp.initial @ V_H`` is that success rate.

    Notes
    -----
    ``V_0 = 0``, ``V_{h+1} = r_π + γ P_π V_h`` (the backward induction of a finite horizon).

    Examples
    --------
    >>> from calcml import rl
    >>> mdp = rl.TabularMDP.from_gym("FrozenLake-v1")
    >>> opt = rl.value_iteration(mdp, 0.99).policy
    >>> round(float(mdp.initial @ rl.finite_horizon_value(mdp, opt, 100)), 4)  # success rate
    0.7402
    """
    who = "finite_horizon_value"
    gamma = check_gamma(who, gamma)
    horizon = check_nonneg_int(who, "horizon", horizon)
    _, P_pi, r_pi = _pi_model(mdp, policy, who)
    V = np.zeros(mdp.n_states)
    for _ in range(horizon):
        V = r_pi + gamma * (P_pi @ V)
    return V


def finite_horizon_optimum(mdp, horizon, gamma=1.0):
    r"""The best expected return of *any* policy (time-dependent ones too) within ``horizon``
    steps: ``V_{h+1}(s) = max_a [R(s, a) + γ Σ_s' P(s'|s, a) V_h(s')]``, ``V_0 = 0``.

    Returns
    -------
    array (S,)
        An upper bound on what any policy can score under a time limit of ``horizon``.

    Notes
    -----
    The optimal policy of a finite horizon depends on the time left; no stationary policy
    does better.

    Examples
    --------
    >>> from calcml import rl
    >>> mdp = rl.TabularMDP.from_gym("FrozenLake-v1")
    >>> round(float(mdp.initial @ rl.finite_horizon_optimum(mdp, 100)), 4)
    0.7442
    """
    who = "finite_horizon_optimum"
    gamma = check_gamma(who, gamma)
    horizon = check_nonneg_int(who, "horizon", horizon)
    V = np.zeros(mdp.n_states)
    for _ in range(horizon):
        V = (mdp.R + gamma * (mdp.P @ V)).max(axis=1)
    return V

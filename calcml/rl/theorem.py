r"""The policy gradient theorem, checked: the exact gradient of J(θ) from the engine against
the REINFORCE estimate averaged over many sampled trajectories.

On a small episodic MDP (:class:`~calcml.rl.TabularMDP`: every step ends the episode with a
positive probability) with a tabular softmax policy ``π_θ(a|s) = softmax(θ[s])_a``, the
objective is computable exactly:

.. math:: J(\theta) = \rho_0^\top V^{\pi_\theta},\qquad
          (I - \gamma P_{\pi_\theta})\,V^{\pi_\theta} = r_{\pi_\theta},

and :func:`exact_objective` writes that solve in calcml operations (Gauss–Jordan
elimination), so ``cm.grad`` gives ∇J exactly (to rounding).  :func:`sample_gradients`
draws trajectories and returns one gradient estimate per trajectory, three ways:

``"trajectory"``  the chapter's ``R(τ) ∇ log π_θ(τ) = (Σ_t γ^t r_t)(Σ_t ∇ log π(a_t|s_t))``;
``"reward_to_go"``  ``Σ_t γ^t G_t ∇ log π(a_t|s_t)``, the same mean, less variance;
``"undiscounted_weights"``  ``Σ_t G_t ∇ log π(a_t|s_t)``, what most code computes: it drops
    the ``γ^t`` and is *not* ∇J for γ < 1.

:func:`policy_gradient_check` compares each mean with ∇J component by component (z-scores
in standard errors) and as a whole (a χ² statistic with the estimated covariance).
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass

import numpy as np

import calcml as cm

from ._validate import as_generator, check_gamma, check_nonneg_int
from .mdp import TabularMDP

__all__ = ["random_episodic_mdp", "softmax_policy", "solve", "exact_objective",
           "exact_policy_gradient", "sample_gradients", "EstimatorCheck",
           "PolicyGradientCheck", "policy_gradient_check", "ESTIMATORS"]

#: The per-trajectory gradient estimators of :func:`sample_gradients`.
ESTIMATORS = ("trajectory", "reward_to_go", "undiscounted_weights")


def random_episodic_mdp(n_states=3, n_actions=2, *, terminal_prob=(0.15, 0.45), seed=0):
    """A random MDP in which every step ends the episode with probability in
    ``terminal_prob`` (so episodes are finite and J is finite even for γ = 1).

    Parameters
    ----------
    n_states, n_actions : int
    terminal_prob : (low, high) or float
        Pr(the step ends the episode | s, a) is drawn uniformly from this interval, with
        ``0 < low <= high <= 1``; a single number p means the interval (p, p): every step
        ends the episode with probability p.
    seed : int or numpy.random.Generator, default 0
        Source of all the random draws (None is refused: the MDP is reproducible).

    Returns
    -------
    TabularMDP
        Rewards ``R[s, a]`` standard normal (deterministic given (s, a)); random transition
        rows and initial distribution (Dirichlet(1)).

    Examples
    --------
    >>> from calcml import rl
    >>> mdp = rl.random_episodic_mdp(3, 2, seed=0)
    >>> bool(((mdp.terminal_prob >= 0.15) & (mdp.terminal_prob <= 0.45)).all())
    True
    >>> rl.random_episodic_mdp(3, 2, terminal_prob=0.3).terminal_prob.round(12).tolist()
    [[0.3, 0.3], [0.3, 0.3], [0.3, 0.3]]
    """
    who = "random_episodic_mdp"
    S = check_nonneg_int(who, "n_states", n_states, positive=True)
    A = check_nonneg_int(who, "n_actions", n_actions, positive=True)
    lo, hi = _terminal_range(who, terminal_prob)
    rng = as_generator(who, seed, "seed")
    q = rng.uniform(lo, hi, size=(S, A))
    P = rng.dirichlet(np.ones(S), size=(S, A)) * (1.0 - q)[..., None]
    R = rng.standard_normal((S, A))
    rho = rng.dirichlet(np.ones(S))
    return TabularMDP(P, R, rho)


def _terminal_range(who, terminal_prob):
    """``(low, high)`` from a pair or from one number p (the range (p, p)), checked."""
    if _is_number(terminal_prob):
        lo = hi = terminal_prob
    elif (isinstance(terminal_prob, (tuple, list, np.ndarray)) and len(terminal_prob) == 2
          and all(_is_number(v) for v in terminal_prob)):
        lo, hi = terminal_prob
    else:
        raise ValueError(f"calcml.rl.{who}: terminal_prob must be a number p in (0, 1] or a "
                         f"pair (low, high) of numbers, got {terminal_prob!r}")
    lo, hi = float(lo), float(hi)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"calcml.rl.{who}: terminal_prob must satisfy 0 < low <= high <= 1, "
                         f"got {terminal_prob!r}")
    return lo, hi


def _is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def softmax_policy(theta):
    """``π[s, a] = exp θ[s, a] / Σ_b exp θ[s, b]`` as a NumPy array.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> rl.softmax_policy(np.array([[0.0, np.log(3.0)]]))
    array([[0.25, 0.75]])
    """
    theta = np.asarray(theta, dtype=np.float64)
    z = np.exp(theta - theta.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def solve(A, b):
    r"""``x`` with ``A x = b``, by Gauss–Jordan elimination in calcml operations, so that
    ``cm.grad``, ``cm.jacobian`` and Tensors differentiate through it.

    Parameters
    ----------
    A : (n, n) array or traced value
        Without pivoting: meant for strictly diagonally dominant matrices such as
        ``I − γP_π`` with γ < 1 or with terminating rows, where every pivot stays positive.
    b : (n,) array or traced value

    Notes
    -----
    The derivative comes out of the elimination itself; it equals the textbook
    ``dx = A^{-1}(db − dA x)``.  O(n³) scalar operations: for the small systems of this
    module, not a general solver.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> from calcml import rl
    >>> A = np.array([[2.0, 1.0], [1.0, 3.0]])
    >>> rl.solve(A, np.array([3.0, 5.0]))
    array([0.8, 1.4])
    >>> cm.grad(lambda b: cm.sum(rl.solve(A, b)))(np.array([3.0, 5.0]))  # = A^{-T} 1
    array([0.4, 0.2])
    """
    n = int(np.shape(A)[0])
    if np.shape(A) != (n, n) or np.shape(b) != (n,):
        raise ValueError(f"calcml.rl.solve: need A (n, n) and b (n,), got shapes "
                         f"{np.shape(A)} and {np.shape(b)}")
    rows = [A[i] for i in range(n)]
    rhs = [b[i] for i in range(n)]
    for k in range(n):
        piv = rows[k][k]
        rows[k] = rows[k] / piv
        rhs[k] = rhs[k] / piv
        for i in range(n):
            if i != k:
                f = rows[i][k]
                rows[i] = rows[i] - f * rows[k]
                rhs[i] = rhs[i] - f * rhs[k]
    return cm.stack(rhs)


def exact_objective(theta, mdp, gamma):
    r"""``J(θ) = ρ_0ᵀ (I − γ P_π)^{-1} r_π`` for the tabular softmax policy ``θ`` (S, A),
    written in calcml operations (differentiable by ``cm.grad``).

    Notes
    -----
    ``π = softmax(θ, axis=1)``, ``P_π[s, s'] = Σ_a π[s, a] P[s, a, s']``,
    ``r_π[s] = Σ_a π[s, a] R[s, a]``; J is the expected discounted return
    ``E[Σ_t γ^t r_t]`` from ``s_0 ∼ ρ_0``.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> from calcml import rl
    >>> mdp = rl.random_episodic_mdp(seed=0)
    >>> g = cm.grad(rl.exact_objective)(np.zeros((3, 2)), mdp, 0.9)
    >>> g.shape
    (3, 2)
    """
    pi = cm.softmax(theta, axis=1)
    P_pi = cm.einsum("sa,sat->st", pi, mdp.P)
    r_pi = cm.sum(pi * mdp.R, axis=1)
    M = np.eye(mdp.n_states) - gamma * P_pi
    V = solve(M, r_pi)
    return cm.sum(mdp.initial * V)


def exact_policy_gradient(theta, mdp, gamma):
    """``(J(θ), ∇J(θ))`` from the engine (reverse mode through :func:`exact_objective`).

    Notes
    -----
    For the softmax the rows of ∇J sum to zero: adding a constant to θ[s] changes nothing.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> J, g = rl.exact_policy_gradient(np.zeros((3, 2)), rl.random_episodic_mdp(seed=0), 0.9)
    >>> bool(np.allclose(g.sum(axis=1), 0.0))
    True
    """
    gamma = check_gamma("exact_policy_gradient", gamma)
    theta = _check_theta("exact_policy_gradient", theta, mdp)
    J, g = cm.value_and_grad(exact_objective)(theta, mdp, gamma)
    return float(J), np.asarray(g)


def _check_theta(who, theta, mdp):
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape != (mdp.n_states, mdp.n_actions):
        raise ValueError(f"calcml.rl.{who}: theta must have shape (S, A) = "
                         f"{(mdp.n_states, mdp.n_actions)}, got shape {theta.shape}")
    return theta


def _categorical(cdf, u):
    """Row-wise inverse-CDF samples: ``cdf`` (n, k) cumulative probabilities, ``u`` (n,)."""
    return np.minimum((u[:, None] >= cdf[:, :-1]).sum(axis=1), cdf.shape[1] - 1)


def sample_gradients(mdp, theta, gamma, n, *, rng=0, estimators=ESTIMATORS):
    r"""Per-trajectory score-function estimates of ∇J for the tabular softmax policy.

    Parameters
    ----------
    mdp : TabularMDP
        Episodic: every state-action pair must end the episode with positive probability.
    theta : array (S, A)
    gamma : float in [0, 1]
    n : int
        Trajectories (simulated together, vectorised over trajectories).
    rng : numpy.random.Generator or int, default 0
        Source of the trajectories (None is refused: the estimates are reproducible).
    estimators : sequence of names from :data:`ESTIMATORS`

    Returns
    -------
    returns : array (n,)
        ``R(τ_i) = Σ_t γ^t r_t``.
    samples : dict name -> array (n, S, A)
        One gradient estimate per trajectory.

    Notes
    -----
    For the softmax, ``∇_θ log π(a|s) = e_s (e_a − π(·|s))ᵀ``.  With the running sums
    ``C_t = Σ_{u≤t} ∇ log π(a_u|s_u)`` and ``D_t = γD_{t−1} + ∇ log π(a_t|s_t)``:
    ``trajectory = R(τ) C_T``, ``reward_to_go = Σ_t γ^t r_t C_t`` (= Σ_t γ^t G_t ∇ log π_t),
    ``undiscounted_weights = Σ_t r_t D_t`` (= Σ_t G_t ∇ log π_t).

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> R, g = rl.sample_gradients(rl.random_episodic_mdp(seed=0), np.zeros((3, 2)), 0.9, 1000)
    >>> R.shape, g["trajectory"].shape
    ((1000,), (1000, 3, 2))
    """
    who = "sample_gradients"
    gamma = check_gamma(who, gamma)
    theta = _check_theta(who, theta, mdp)
    n = check_nonneg_int(who, "n", n, positive=True)
    bad = [e for e in estimators if e not in ESTIMATORS]
    if bad:
        raise ValueError(f"calcml.rl.{who}: unknown estimators {bad}; choose from {ESTIMATORS}")
    if np.any(mdp.terminal_prob <= 0):
        raise ValueError(f"calcml.rl.{who}: needs an MDP in which every step may end the "
                         f"episode; terminal probabilities {mdp.terminal_prob.tolist()}")
    rng = as_generator(who, rng)
    S, A = mdp.n_states, mdp.n_actions
    pi = softmax_policy(theta)
    pi_cdf = np.cumsum(pi, axis=1)
    next_cdf = np.cumsum(np.concatenate([mdp.P, mdp.terminal_prob[..., None]], axis=2), axis=2)
    s = _categorical(np.broadcast_to(np.cumsum(mdp.initial), (n, S)), rng.random(n))
    idx = np.arange(n)
    ret = np.zeros(n)
    C = np.zeros((n, S, A))
    D = np.zeros((n, S, A)) if "undiscounted_weights" in estimators else None
    out = {e: np.zeros((n, S, A)) for e in estimators if e != "trajectory"}
    disc = 1.0
    while idx.size:
        a = _categorical(pi_cdf[s], rng.random(idx.size))
        r = mdp.R[s, a]
        score = np.zeros((idx.size, S, A))
        rows = np.arange(idx.size)
        score[rows, s, :] -= pi[s]
        score[rows, s, a] += 1.0
        C[idx] += score
        ret[idx] += disc * r
        if "reward_to_go" in out:
            out["reward_to_go"][idx] += (disc * r)[:, None, None] * C[idx]
        if D is not None:
            D[idx] = gamma * D[idx] + score
            out["undiscounted_weights"][idx] += r[:, None, None] * D[idx]
        nxt = _categorical(next_cdf[s, a], rng.random(idx.size))
        alive = nxt < S
        idx, s = idx[alive], nxt[alive]
        disc *= gamma
    if "trajectory" in estimators:
        out["trajectory"] = ret[:, None, None] * C
    return ret, {e: out[e] for e in estimators}


@dataclass
class EstimatorCheck:
    """One estimator's mean against ∇J.

    Attributes
    ----------
    mean, std_error, z : arrays (S, A)
        Sample mean, its standard error, and ``(mean − ∇J)/std_error``.
    max_abs_z : float
    chi2 : float
        ``N dᵀ Σ⁺ d`` with ``d = mean − ∇J`` and Σ the sample covariance of the estimates
        (pseudo-inverse: the softmax gradient has S(A − 1) free directions).
    dof : int
        Rank of Σ, the χ² degrees of freedom.
    p_value : float
        ``Pr(χ²_dof ≥ chi2)``: small when the estimator's mean is not ∇J.
    """

    mean: np.ndarray
    std_error: np.ndarray
    z: np.ndarray
    max_abs_z: float
    chi2: float
    dof: int
    p_value: float


@dataclass
class PolicyGradientCheck:
    """Result of :func:`policy_gradient_check`.

    Attributes
    ----------
    J : float
        Exact objective (calcml's solve).
    J_numpy : float
        The same from :func:`~calcml.rl.policy_evaluation_exact` (``numpy.linalg.solve``).
    J_mc, J_std_error : float
        Monte Carlo mean of ``R(τ)`` and its standard error.
    grad : array (S, A)
        ∇J from the engine.
    estimators : dict name -> EstimatorCheck
    n : int
    wall_time_s : float
    """

    J: float
    J_numpy: float
    J_mc: float
    J_std_error: float
    grad: np.ndarray
    estimators: dict
    n: int
    wall_time_s: float


def _compare(samples, grad):
    from scipy.stats import chi2 as chi2_dist

    N = samples.shape[0]
    flat = samples.reshape(N, -1)
    mean = flat.mean(axis=0)
    centred = flat - mean
    cov = centred.T @ centred / (N - 1)
    se = np.sqrt(np.diag(cov) / N)
    d = mean - grad.ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, d / se, np.where(d == 0, 0.0, np.inf))
    w, U = np.linalg.eigh(cov)
    keep = w > w.max() * 1e-10
    proj = U[:, keep].T @ d
    chi2 = float(N * np.sum(proj ** 2 / w[keep]))
    dof = int(keep.sum())
    shape = grad.shape
    return EstimatorCheck(mean.reshape(shape), se.reshape(shape), z.reshape(shape),
                          float(np.max(np.abs(z))), chi2, dof, float(chi2_dist.sf(chi2, dof)))


def policy_gradient_check(mdp, theta, gamma, n=200_000, *, seed=0, estimators=ESTIMATORS):
    r"""Check the policy gradient theorem on ``mdp``: exact ∇J (engine) against the mean of
    per-trajectory REINFORCE estimates.

    Parameters
    ----------
    mdp : TabularMDP
        Episodic (see :func:`sample_gradients`).
    theta : array (S, A)
        Tabular softmax policy parameters.
    gamma : float in [0, 1]
    n : int
        Trajectories.
    seed : int or numpy.random.Generator, default 0
        Source of the trajectories (None is refused: the check is reproducible).
    estimators : sequence of names from :data:`ESTIMATORS`

    Returns
    -------
    PolicyGradientCheck

    Notes
    -----
    The theorem (chapter 9.7): ``∇_θ J(θ) = E_τ[R(τ) ∇_θ log π_θ(τ)]``, where
    ``log π_θ(τ) = log ρ_0(s_0) + Σ_t [log π_θ(a_t|s_t) + log P(s_{t+1}|s_t, a_t)]`` and only
    the policy terms depend on θ.  An unbiased estimator's z-scores are approximately
    standard normal (|z| ≤ 4 in all components with overwhelming probability) and its χ²
    statistic follows χ²(dof); a biased one shows up as |z| and χ² growing like √n and n.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> mdp = rl.random_episodic_mdp(seed=0)
    >>> chk = rl.policy_gradient_check(mdp, np.zeros((3, 2)), 0.9, n=20_000)
    >>> chk.estimators["reward_to_go"].max_abs_z < 4
    True
    """
    t0 = time.perf_counter()
    gamma = check_gamma("policy_gradient_check", gamma)
    rng = as_generator("policy_gradient_check", seed, "seed")
    J, g = exact_policy_gradient(theta, mdp, gamma)
    from .mdp import policy_evaluation_exact

    J_np = float(mdp.initial @ policy_evaluation_exact(mdp, softmax_policy(theta), gamma).V)
    ret, samples = sample_gradients(mdp, theta, gamma, n, rng=rng, estimators=estimators)
    checks = {e: _compare(v, g) for e, v in samples.items()}
    return PolicyGradientCheck(J, J_np, float(ret.mean()), float(ret.std(ddof=1) / np.sqrt(n)),
                               g, checks, n, time.perf_counter() - t0)

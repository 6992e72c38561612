r"""Actor-critic: a policy (the actor) trained on advantages estimated by a learned value
function (the critic), the critic trained on the chapter's TD loss.

After each episode, with the critic's values ``v_t = V_φ(s_t)`` from one forward pass on the
episode's states (``s_T`` included, for the bootstrap of the last step):

* TD errors ``δ_t = r_t + γ (1 − d_t) v_{t+1} − v_t`` (``d_t = 1`` when step t ended the
  episode in a terminal state; a time-limit truncation keeps the bootstrap);
* advantages ``A_t = Σ_k (γλ)^k δ_{t+k}`` (generalised advantage estimation; λ = 0 gives
  the one-step ``A_t = δ_t``, the chapter's ``A = r + γV(s') − V(s)``);
* critic loss, the chapter's ``L(φ) = mean_t (V_φ(s_t) − y_t)²`` with the one-step target
  ``y_t = r_t + γ(1 − d_t) v_{t+1}`` (or the λ-return ``v_t + A_t``) held fixed — a
  *semi-gradient*: the target is not differentiated;
* actor loss ``−mean_t A_t log π_θ(a_t|s_t)`` (:func:`~calcml.rl.reinforce_loss`).

Why the target is held fixed: differentiating ``(V_φ(s) − r − γV_φ(s'))²`` through
``V_φ(s')`` too (the "residual gradient") is the gradient of the mean squared Bellman
residual, whose minimiser with stochastic transitions is not V^π (it also penalises the
variance of ``V(s')``) and which learns much more slowly; TD learning — the update that
converges to V^π for linear critics — uses only ``∂V_φ(s)/∂φ``.
"""

from __future__ import annotations

import numpy as np

import calcml as cm

from ._validate import check_gamma, check_probability
from .policy_gradient import (
    _bind,
    _check_output,
    _Loop,
    _module_dtype,
    _out_dtype,
    _step,
    reinforce_loss,
)

__all__ = ["actor_critic", "td_targets", "gae_advantages"]


def td_targets(rewards, next_values, terminated, gamma):
    r"""One-step TD targets ``y_t = r_t + γ (1 − d_t) V(s_{t+1})``.

    Parameters
    ----------
    rewards : array (T,)
    next_values : array (T,)
        ``V(s_{t+1})`` (constants).
    terminated : array of bool (T,) or bool
        ``d_t``: step t ended the episode in a terminal state; a bool means "the last step".
    gamma : float in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> rl.td_targets(np.array([1.0, 1.0]), np.array([5.0, 7.0]), True, 0.9)
    array([5.5, 1. ])
    """
    gamma = check_gamma("td_targets", gamma)
    dt = _out_dtype(rewards, next_values)
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(next_values, dtype=np.float64)
    if np.ndim(terminated) == 0:
        d = np.zeros(len(r))
        d[-1:] = float(bool(terminated))
    else:
        d = np.asarray(terminated, dtype=np.float64)
    if not (r.shape == v.shape == d.shape) or r.ndim != 1:
        raise ValueError(f"calcml.rl.td_targets: rewards, next_values and terminated must be "
                         f"1-D of one length, got shapes {r.shape}, {v.shape}, {d.shape}")
    return (r + gamma * (1.0 - d) * v).astype(dt, copy=False)


def gae_advantages(deltas, gamma, lam):
    r"""Generalised advantage estimates ``A_t = Σ_{k≥0} (γλ)^k δ_{t+k}`` (within the
    episode) from TD errors δ.

    Notes
    -----
    λ = 0: ``A_t = δ_t = r_t + γV(s_{t+1}) − V(s_t)`` (one-step, low variance, biased by the
    critic's errors); λ = 1: ``A_t = G_t − V(s_t)`` (Monte Carlo return minus the baseline,
    unbiased, the variance of REINFORCE).  Computed backwards, ``A_t = δ_t + γλ A_{t+1}``.

    Examples
    --------
    >>> from calcml import rl
    >>> rl.gae_advantages([1.0, 1.0], 0.5, 1.0)
    array([1.5, 1. ])
    """
    who = "gae_advantages"
    c = check_gamma(who, gamma) * check_probability(who, "lam", lam)
    dt = _out_dtype(deltas)
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"calcml.rl.{who}: deltas must be 1-D (one episode), got shape "
                         f"{d.shape}")
    d = d.tolist()
    acc = 0.0
    for t in range(len(d) - 1, -1, -1):
        acc = d[t] + c * acc
        d[t] = acc
    return np.array(d, dtype=dt)


def actor_critic(env, actor, critic, actor_optimizer, critic_optimizer, *, episodes=1000,
                 gamma=0.99, lam=0.95, critic_target="td", normalize=True, seed=0,
                 target_return=None, window=100, max_steps=None, callback=None,
                 progress=False):
    r"""Advantage actor-critic, one update of each network per episode.

    Parameters
    ----------
    env : gymnasium.Env or str
        A 1-D Box observation space and a Discrete action space.
    actor : calcml.nn.Module
        Observations (n, d) → logits (n, A).
    critic : calcml.nn.Module
        Observations (n, d) → values (n, 1).
    actor_optimizer, critic_optimizer : cm.optim transform or cm.optim.Optimizer
    episodes : int
    gamma : float in [0, 1]
    lam : float in [0, 1]
        λ of the actor's advantage estimate (:func:`gae_advantages`).  0 is the chapter's
        one-step ``A = r + γV(s') − V(s)``; the default 0.95 sums the critic's TD errors
        over the next steps with weights (γλ)^k, which on CartPole solves the task reliably
        where the one-step advantage often stalls (its bias is the critic's error, large
        while the critic learns values of ~1/(1 − γ)).
    critic_target : {"td", "lambda"}
        ``"td"`` (default): the chapter's one-step TD loss
        ``mean_t (V(s_t) − (r_t + γ V(s_{t+1})))²`` for any λ; ``"lambda"``: regress on the
        λ-returns ``V(s_t) + A_t`` instead (the same for λ = 0).
    normalize : bool
        Standardise the advantages over the episode before the actor step.
    seed, target_return, window, max_steps, callback, progress
        As in :func:`~calcml.rl.reinforce`.

    Returns
    -------
    PolicyGradientResult
        ``value_losses`` holds the critic's TD loss at each update.

    Notes
    -----
    Actor (chapter): ``∇_θ J = E[∇_θ log π_θ(a|s) A(s, a)]`` — precisely, with states
    weighted by the discounted visitation ``Σ_t γ^t Pr(s_t = s)``; like REINFORCE this
    implementation weights every visited state alike (see ``discount_weights`` there).
    Critic (chapter): ``L(φ) = E[(V_φ(s) − (r + γV_φ(s')))²]``, minimised by the
    semi-gradient ``∇_φ L ≈ −2 E[δ ∇_φ V_φ(s)]`` (the target is a constant).  See the module
    docstring for the λ-generalisation.

    Examples
    --------
    >>> import calcml as cm
    >>> from calcml import rl
    >>> actor, critic = rl.mlp(4, 2, rng=0), rl.mlp(4, 1, rng=1)
    >>> res = rl.actor_critic("CartPole-v1", actor, critic, cm.optim.adam(1e-2),
    ...                       cm.optim.adam(1e-2), episodes=10)
    >>> res.value_losses.shape
    (10,)
    """
    who = "actor_critic"
    loop = _Loop(who, env, actor, episodes, gamma, seed, target_return, window, max_steps,
                 progress)
    lam = check_probability(who, "lam", lam)
    if critic_target not in ("td", "lambda"):
        raise ValueError(f"calcml.rl.actor_critic: critic_target must be 'td' or 'lambda', got "
                         f"{critic_target!r}")
    vdt = _module_dtype(who, critic, "critic")
    _check_output(who, critic, loop.n_obs, 1, "critic", vdt)
    aopt = _bind(who, actor, actor_optimizer, "actor_optimizer")
    copt = _bind(who, critic, critic_optimizer, "critic_optimizer")
    gamma = loop.gamma

    def update(batch):
        T = len(batch)
        V = critic(batch.states)[:, 0]            # one pass over s_0 … s_T, with gradient
        v = np.asarray(V.data, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise FloatingPointError("calcml.rl.actor_critic: the critic's values became "
                                     "non-finite (the critic diverged; try a smaller "
                                     "critic learning rate)")
        targets = td_targets(batch.rewards, v[1:], batch.terminated, gamma)
        delta = targets - v[:-1]
        adv = delta if lam == 0.0 else gae_advantages(delta, gamma, lam)
        y = targets if critic_target == "td" else v[:-1] + adv  # held fixed
        vloss = _step(copt, cm.mean((V[:T] - y.astype(V.dtype)) ** 2), "critic")
        w = adv
        if normalize and T > 1:
            w = (w - w.mean()) / (w.std() + 1e-8)
        return _step(aopt, reinforce_loss(actor, batch.states[:-1], batch.actions, w),
                     "actor"), vloss

    return loop.run(update, callback)

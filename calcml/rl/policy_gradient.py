r"""Policy gradients on gymnasium environments: REINFORCE (with a baseline) and the machinery
that actor-critic shares with it (returns, the surrogate loss, acting, the result object).

A policy is a :class:`calcml.nn.Module` mapping a batch of observations (n, d) to action
logits (n, A); ``π_θ(a|s) = softmax(logits)_a``.  The policy gradient theorem says

.. math:: \nabla_\theta J(\theta) = \mathbb{E}_{\tau\sim\pi_\theta}\Big[\sum_t \gamma^t
          \big(G_t - b(s_t)\big)\,\nabla_\theta\log\pi_\theta(a_t|s_t)\Big],
          \qquad G_t = \sum_{k\ge t}\gamma^{k-t} r_k,

for any baseline b that does not depend on the action (it changes the variance, not the
mean).  The chapter's form ``E[R(τ) ∇ log π_θ(τ)]`` is the same expectation: the
dynamics' terms of ``log π_θ(τ)`` do not depend on θ, and rewards earned before ``a_t``
average out against ``∇ log π(a_t|s_t)``.

Each episode is played with a no-graph forward pass per step (:class:`~calcml.rl.NumpyForward`);
the update then runs the network **once**, with gradient, on the batch of the episode's
states, and minimises the surrogate loss ``−mean_t w_t log π_θ(a_t|s_t)`` whose gradient is
the estimate above (:func:`reinforce_loss`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

import calcml as cm

from ._random import UniformStream
from ._validate import (
    check_env_seed,
    check_gamma,
    check_nonneg_int,
    check_seed,
    make_env,
    require_box_observations,
    require_discrete_actions,
)
from .networks import NumpyForward

__all__ = ["PolicyGradientResult", "EpisodeBatch", "reinforce", "reinforce_loss",
           "discounted_returns", "moving_average", "play_episode"]


@dataclass
class PolicyGradientResult:
    """What a policy-gradient run did.

    Attributes
    ----------
    episode_returns, episode_lengths : arrays (episodes,)
        Undiscounted return and length of every training episode.
    losses : array (episodes,)
        The policy's surrogate loss at each update.
    value_losses : array (episodes,) or None
        The critic's (or value baseline's) loss at each update.
    steps : int
        Environment steps in total.
    wall_time_s : float
    solved_episode : int or None
        The number of episodes after which the mean return of the last ``window`` episodes
        first reached ``target_return`` (training stops there), or None.
    target_return : float or None
    window : int
    """

    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    losses: np.ndarray
    value_losses: np.ndarray | None
    steps: int
    wall_time_s: float
    solved_episode: int | None
    target_return: float | None
    window: int

    @property
    def episodes(self):
        return len(self.episode_returns)

    def last_mean(self, window=None):
        """Mean return of the last ``window`` episodes (default: the run's ``window``)."""
        w = self.window if window is None else int(window)
        return float(np.mean(self.episode_returns[-w:]))


@dataclass
class EpisodeBatch:
    """One episode as arrays: ``states`` (T + 1, d) including the last observation,
    ``actions`` (T,), ``rewards`` (T,), and whether it ended in a terminal state."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool

    def __len__(self):
        return len(self.actions)


def discounted_returns(rewards, gamma):
    r"""The rewards-to-go ``G_t = Σ_{k≥t} γ^{k−t} r_k`` of one episode.

    Parameters
    ----------
    rewards : array_like (T,)
    gamma : float in [0, 1]

    Returns
    -------
    array (T,)
        float32 for float32 rewards, float64 otherwise (accumulated in float64 either way).

    Notes
    -----
    Computed backwards, ``G_{T-1} = r_{T-1}``, ``G_t = r_t + γ G_{t+1}`` (not as
    ``Σ_k γ^k r_k / γ^t``, which underflows and loses precision for long episodes).

    Examples
    --------
    >>> from calcml import rl
    >>> rl.discounted_returns([1.0, 1.0, 1.0], 0.5)
    array([1.75, 1.5 , 1.  ])
    """
    gamma = check_gamma("discounted_returns", gamma)
    dt = _out_dtype(rewards)
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"calcml.rl.discounted_returns: rewards must be 1-D, got shape "
                         f"{r.shape}")
    out = r.tolist()
    g = 0.0
    for t in range(len(out) - 1, -1, -1):  # plain floats: ~0.1 µs a step, no temporaries
        g = out[t] + gamma * g
        out[t] = g
    return np.array(out, dtype=dt)


def _out_dtype(*arrays):
    """float32 when every floating input is float32, else float64 (ints and lists: float64)."""
    kinds = [np.asarray(a).dtype for a in arrays]
    return np.float32 if kinds and all(k == np.float32 for k in kinds) else np.float64


def moving_average(x, window):
    """The mean of each window of ``window`` consecutive values (``len(x) − window + 1`` of
    them; the running mean of the values so far while fewer than ``window``).

    Examples
    --------
    >>> from calcml import rl
    >>> rl.moving_average([1.0, 2.0, 3.0, 4.0], 2)
    array([1. , 1.5, 2.5, 3.5])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"calcml.rl.moving_average: x must be 1-D, got shape {x.shape}")
    window = check_nonneg_int("moving_average", "window", window, positive=True)
    c = np.concatenate([[0.0], np.cumsum(x)])
    n = np.arange(1, len(x) + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def reinforce_loss(policy, states, actions, weights):
    r"""The surrogate loss whose gradient is the REINFORCE estimate, as a Tensor.

    Parameters
    ----------
    policy : calcml.nn.Module
        Observations (T, d) → logits (T, A).
    states : array (T, d)
    actions : array of int (T,)
    weights : array (T,)
        ``w_t``: returns, advantages, ... (constants: no gradient flows into them).

    Returns
    -------
    Tensor (scalar)
        ``L(θ) = −(1/T) Σ_t w_t log π_θ(a_t|s_t)``, from one forward pass on the batch.

    Notes
    -----
    ``∇L = −(1/T) Σ_t w_t ∇ log π_θ(a_t|s_t)``; for a softmax policy with logits ``z_t``,
    ``∂ log π(a_t|s_t)/∂z_t = e_{a_t} − π(·|s_t)``, which the engine chains back through the
    network.  Minimising L ascends the policy gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from calcml import rl
    >>> net = rl.mlp(4, 2, rng=0)
    >>> loss = rl.reinforce_loss(net, np.ones((3, 4)), np.array([0, 1, 1]), np.ones(3))
    >>> loss.backward(); net[0].weight.grad.shape
    (64, 4)
    """
    who = "calcml.rl.reinforce_loss"
    states = np.asarray(states)
    actions = np.asarray(actions)
    T = actions.shape[0] if actions.ndim == 1 else -1
    if actions.ndim != 1 or states.shape[:1] != (T,) or np.shape(weights) != (T,):
        raise ValueError(f"{who}: need states (T, d), actions (T,) and "
                         f"weights (T,) with one T; got shapes {states.shape}, {actions.shape}"
                         f", {np.shape(weights)}")
    if actions.dtype.kind not in "iu":
        raise ValueError(f"{who}: actions must be integers, got dtype {actions.dtype}")
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"{who}: weights must be finite, got NaN or infinite entries (shape "
                         f"{np.shape(weights)})")
    logits = policy(states)
    n_act = logits.shape[-1]
    if T and (actions.min() < 0 or actions.max() >= n_act):
        raise ValueError(f"{who}: actions must lie in [0, {n_act}) (the policy's logits have "
                         f"shape {tuple(logits.shape)}), got values in [{actions.min()}, "
                         f"{actions.max()}]")
    logp = cm.log_softmax(logits, axis=-1)[np.arange(T), actions]
    w = np.asarray(weights, dtype=logp.dtype)
    return -cm.sum(logp * w) * (1.0 / T)


def _sample(logits, u):
    """Inverse-CDF sample of softmax(logits) from the uniform ``u`` (plain Python floats)."""
    z = logits.tolist()
    m = max(z)
    e = [math.exp(v - m) for v in z]
    t = u * sum(e)
    acc = 0.0
    last = len(e) - 1
    for a in range(last):
        acc += e[a]
        if t < acc:
            return a
    return last


def play_episode(env, forward, uniform, *, seed=0, max_steps=None, dtype=np.float64):
    """Play one episode with the softmax policy ``forward(obs) -> logits``.

    Parameters
    ----------
    env : gymnasium.Env
    forward : callable
        1-D observation → 1-D logits (e.g. :class:`~calcml.rl.NumpyForward`).
    uniform : callable
        ``uniform() -> float`` in [0, 1): the source of the action choices.
    seed : int >= 0 or None, default 0
        Passed to ``env.reset``.  None continues the environment's own generator, for the
        episodes after a seeded first one (as the training loops do); on an environment that
        has no generator yet it is refused with a TypeError, since ``reset`` would then seed
        from the operating system.
    max_steps : int, optional
        Cut the episode here (counted as a truncation).
    dtype : dtype of the returned states

    Returns
    -------
    EpisodeBatch

    Examples
    --------
    >>> import gymnasium as gym, numpy as np
    >>> from calcml import rl
    >>> rng = np.random.default_rng(0)
    >>> ep = rl.play_episode(gym.make("CartPole-v1"), rl.NumpyForward(rl.mlp(4, 2, rng=0)),
    ...                      rng.random, seed=0)
    >>> ep.states.shape == (len(ep) + 1, 4), ep.terminated
    (True, True)
    """
    obs, _ = env.reset(seed=check_env_seed("play_episode", env, seed))
    states, actions, rewards = [obs], [], []
    limit = math.inf if max_steps is None else max_steps
    terminated = False
    while True:
        a = _sample(forward(obs), uniform())
        obs, r, terminated, truncated, _ = env.step(a)
        states.append(obs)
        actions.append(a)
        rewards.append(r)
        if terminated or truncated or len(actions) >= limit:
            break
    return EpisodeBatch(np.asarray(states, dtype=dtype), np.asarray(actions, dtype=np.intp),
                        np.asarray(rewards, dtype=np.float64), bool(terminated))


def _bind(who, module, optimizer, name):
    if isinstance(optimizer, cm.optim.Optimizer):
        return optimizer
    if isinstance(optimizer, cm.optim.GradientTransformation):
        return cm.optim.Optimizer(module.parameters(), optimizer)
    raise TypeError(f"calcml.rl.{who}: {name} must be a cm.optim transform (e.g. "
                    f"cm.optim.adam(1e-2)) or a cm.optim.Optimizer, got "
                    f"{type(optimizer).__name__}")


def _module_dtype(who, module, name):
    if not isinstance(module, cm.nn.Module):
        raise TypeError(f"calcml.rl.{who}: {name} must be a cm.nn.Module, got "
                        f"{type(module).__name__}")
    params = module.parameters()
    if not params:
        raise ValueError(f"calcml.rl.{who}: {name} has no parameters to train")
    return params[0].dtype


def _check_output(who, module, n_obs, n_out, name, dtype):
    with cm.no_grad():
        out = module(np.zeros((2, n_obs), dtype=dtype))
    shape = tuple(out.shape)
    if shape != (2, n_out):
        raise ValueError(f"calcml.rl.{who}: {name} maps observations (n, {n_obs}) to shape "
                         f"{shape[1:] if len(shape) > 1 else shape}, expected ({n_out},) per "
                         "observation")


class _Loop:
    """The episode loop that REINFORCE and actor-critic share: env checks, seeding, acting,
    the solved criterion, the progress bar and the result."""

    def __init__(self, who, env, actor, episodes, gamma, seed, target_return, window,
                 max_steps, progress):
        self.who = who
        self.env = make_env(who, env)
        self.n_obs = require_box_observations(who, self.env)
        self.n_actions = require_discrete_actions(who, self.env)
        self.episodes = check_nonneg_int(who, "episodes", episodes, positive=True)
        self.gamma = check_gamma(who, gamma)
        self.window = check_nonneg_int(who, "window", window, positive=True)
        self.max_steps = None if max_steps is None else \
            check_nonneg_int(who, "max_steps", max_steps, positive=True)
        if target_return is not None and not np.isfinite(target_return):
            raise ValueError(f"calcml.rl.{who}: target_return must be a finite number or "
                             f"None, got {target_return!r}")
        self.target = None if target_return is None else float(target_return)
        self.seed = check_seed(who, seed)
        self.dtype = _module_dtype(who, actor, "policy")
        _check_output(who, actor, self.n_obs, self.n_actions, "policy", self.dtype)
        self.forward = NumpyForward(actor)
        self.uniform = UniformStream(np.random.default_rng(self.seed))
        self.returns, self.lengths, self.losses, self.vlosses = [], [], [], []
        self.recent = deque(maxlen=self.window)
        self.solved = None
        self.progress = progress
        self.t0 = time.perf_counter()

    def run(self, update, callback):
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.episodes, desc=self.who, leave=False)
        steps = 0
        for ep in range(self.episodes):
            self.forward.refresh()
            batch = play_episode(self.env, self.forward, self.uniform,
                                 seed=self.seed if ep == 0 else None,
                                 max_steps=self.max_steps, dtype=self.dtype)
            try:
                loss, vloss = update(batch)
            except _NonFiniteLoss as e:
                raise FloatingPointError(
                    f"calcml.rl.{self.who}: the {e.what} loss is {e.value} at episode {ep + 1}; "
                    f"training stopped before that update (the parameters are those after "
                    f"episode {ep}); try a smaller learning rate") from None
            ret = float(batch.rewards.sum())
            steps += len(batch)
            self.returns.append(ret)
            self.lengths.append(len(batch))
            self.losses.append(loss)
            self.vlosses.append(vloss)
            self.recent.append(ret)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(mean=f"{np.mean(self.recent):.1f}")
            stop = callback is not None and callback(ep, ret)
            if (self.target is not None and len(self.recent) == self.window
                    and sum(self.recent) / self.window >= self.target):
                self.solved = ep + 1
                stop = True
            if stop:
                break
        if bar is not None:
            bar.close()
        vl = None if all(v is None for v in self.vlosses) else \
            np.array([np.nan if v is None else v for v in self.vlosses])
        return PolicyGradientResult(np.array(self.returns), np.array(self.lengths),
                                    np.array(self.losses), vl, steps,
                                    time.perf_counter() - self.t0, self.solved, self.target,
                                    self.window)


class _NonFiniteLoss(Exception):
    """A loss was NaN or ±inf; the loop adds the episode and raises FloatingPointError."""

    def __init__(self, what, value):
        super().__init__(what, value)
        self.what, self.value = what, value


def _step(opt, loss, what):
    """One optimizer step on ``loss`` (the ``what`` loss), refused before it if not finite."""
    value = float(loss.data)
    if not math.isfinite(value):
        raise _NonFiniteLoss(what, value)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return value


_BASELINES = (None, "mean")


def reinforce(env, policy, optimizer, *, episodes=1000, gamma=0.99, baseline="mean",
              normalize=True, discount_weights=False, baseline_optimizer=None, seed=0,
              target_return=None, window=100, max_steps=None, callback=None, progress=False):
    r"""REINFORCE with a baseline: one Monte Carlo policy-gradient step per episode.

    Parameters
    ----------
    env : gymnasium.Env or str
        A 1-D Box observation space and a Discrete action space (e.g. ``"CartPole-v1"``).
    policy : calcml.nn.Module
        Observations (n, d) → logits (n, A); e.g. ``rl.mlp(4, 2, hidden=(64,), rng=0)``.
    optimizer : cm.optim transform or cm.optim.Optimizer
        E.g. ``cm.optim.adam(1e-2)`` (bound to ``policy.parameters()``).
    episodes : int
        The most episodes to play (each is one update).
    gamma : float in [0, 1]
    baseline : {"mean", None} or calcml.nn.Module
        ``"mean"``: subtract the mean return-to-go of the episode; None: no baseline; a
        module ``V`` (observations (n, d) → (n, 1)): subtract ``V(s_t)``, trained alongside
        by ``baseline_optimizer`` on the Monte Carlo regression ``mean_t (V(s_t) − G_t)²``.
    normalize : bool
        Divide the weights by their standard deviation over the episode (a per-episode step
        size: makes one learning rate work from 10-step to 500-step episodes).
    discount_weights : bool
        Multiply step t's term by ``γ^t``, as the theorem for the discounted objective
        demands.  Off by default, as in practically every implementation: the estimate is then
        the gradient of no objective (Nota & Thomas, 2020), but late steps of long episodes
        keep learning.
    baseline_optimizer : cm.optim transform or Optimizer
        Needed when ``baseline`` is a module.
    seed : int >= 0, default 0
        Seeds action sampling and ``env.reset(seed=seed)`` of the first episode (None is
        refused with a TypeError: it would seed from the operating system).
    target_return : float, optional
        Stop once the mean return of the last ``window`` episodes reaches it (CartPole-v1's
        "solved" criterion is 475 over 100).
    window : int
    max_steps : int, optional
        Cut episodes after this many steps.
    callback : callable, optional
        ``callback(episode, episode_return)``; returning True stops.
    progress : bool
        A tqdm progress bar.

    Returns
    -------
    PolicyGradientResult

    Notes
    -----
    After an episode ``s_0, a_0, r_0, …, s_{T−1}, a_{T−1}, r_{T−1}``: rewards-to-go
    ``G_t = Σ_{k≥t} γ^{k−t} r_k``, weights ``w_t = (G_t − b_t)/σ`` and the step

    .. math:: \theta \leftarrow \theta + \alpha\,\frac{1}{T}\sum_t w_t\,
              \nabla_\theta\log\pi_\theta(a_t|s_t)

    (through the optimizer, which may rescale it: Adam).  With ``b = 0``, ``σ = 1`` and the
    ``γ^t`` factor this is an unbiased estimate of ∇J (policy gradient theorem); a baseline
    independent of ``a_t`` keeps it unbiased (``E[∇ log π(a|s)] = 0``) and reduces its
    variance.  The ``"mean"`` baseline is computed from the same episode, which biases the
    estimate by O(1/T); in exchange it needs no second network.

    Examples
    --------
    >>> import calcml as cm
    >>> from calcml import rl
    >>> net = rl.mlp(4, 2, hidden=(32,), rng=0)
    >>> res = rl.reinforce("CartPole-v1", net, cm.optim.adam(1e-2), episodes=20, seed=0)
    >>> res.episodes, res.episode_returns.shape
    (20, (20,))
    """
    who = "reinforce"
    loop = _Loop(who, env, policy, episodes, gamma, seed, target_return, window, max_steps,
                 progress)
    opt = _bind(who, policy, optimizer, "optimizer")
    value_net = None
    if isinstance(baseline, cm.nn.Module):
        value_net = baseline
        dt = _module_dtype(who, value_net, "baseline")
        _check_output(who, value_net, loop.n_obs, 1, "baseline", dt)
        if baseline_optimizer is None:
            raise ValueError("calcml.rl.reinforce: a value-network baseline needs "
                             "baseline_optimizer (e.g. cm.optim.adam(1e-2))")
        vopt = _bind(who, value_net, baseline_optimizer, "baseline_optimizer")
    elif baseline not in _BASELINES:
        raise ValueError(f"calcml.rl.reinforce: baseline must be 'mean', None or a cm.nn.Module"
                         f" (a value network), got {baseline!r}")
    gamma = loop.gamma

    def update(batch):
        T = len(batch)
        G = discounted_returns(batch.rewards, gamma)
        states = batch.states[:-1]
        vloss = None
        if value_net is not None:
            v = value_net(states)
            b = v.data[:, 0]
            vloss = _step(vopt, cm.mean((v[:, 0] - G) ** 2), "value baseline")
            w = G - b
        elif baseline == "mean":
            w = G - G.mean()
        else:
            w = G
        if normalize and T > 1:
            w = w / (w.std() + 1e-8)
        if discount_weights:
            w = w * gamma ** np.arange(T)
        return _step(opt, reinforce_loss(policy, states, batch.actions, w), "policy"), vloss

    return loop.run(update, callback)

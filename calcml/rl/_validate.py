"""Input checks shared by :mod:`calcml.rl`: every error names the function, the value and,
for arrays, the shape."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_gamma", "check_positive", "check_nonneg_int", "check_probability",
           "as_generator", "check_seed", "check_env_seed", "make_env",
           "require_discrete_actions", "require_discrete_observations",
           "require_box_observations", "rate_at"]


def _where(who):
    return f"calcml.rl.{who}"


def _is_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def check_gamma(who, gamma):
    """γ as a float in [0, 1]."""
    if not _is_real(gamma) or not (0.0 <= float(gamma) <= 1.0):
        raise ValueError(f"{_where(who)}: gamma (the discount factor) must be a number in "
                         f"[0, 1], got {gamma!r}")
    return float(gamma)


def check_positive(who, name, value):
    """``value`` as a positive finite float."""
    if not _is_real(value) or not np.isfinite(value) or float(value) <= 0.0:
        raise ValueError(f"{_where(who)}: {name} must be a positive number, got {value!r}")
    return float(value)


def check_probability(who, name, value):
    """``value`` as a float in [0, 1]."""
    if not _is_real(value) or not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{_where(who)}: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_nonneg_int(who, name, value, *, positive=False):
    """``value`` as an int ≥ 0 (≥ 1 with ``positive``)."""
    ok = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool)
    if not ok or value < (1 if positive else 0):
        bound = "a positive integer" if positive else "an integer >= 0"
        raise ValueError(f"{_where(who)}: {name} must be {bound}, got {value!r}")
    return int(value)


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def check_seed(who, seed, name="seed"):
    """``seed`` as an int >= 0 (what both ``numpy.random.default_rng`` and gymnasium's
    ``env.reset(seed=...)`` accept).

    None is refused with a TypeError, as in :mod:`calcml.generative`: it would seed from the
    operating system, and every result of :mod:`calcml.rl` is reproducible.
    """
    if not _is_int(seed):
        hint = (" (None would seed from the operating system: not reproducible)"
                if seed is None else "")
        raise TypeError(f"{_where(who)}: {name} must be an int >= 0, got {seed!r}{hint}")
    if seed < 0:
        raise ValueError(f"{_where(who)}: {name} must be an int >= 0, got {seed!r}")
    return int(seed)


def as_generator(who, rng, name="rng"):
    """A ``numpy.random.Generator`` from a Generator (returned as is) or an int seed >= 0.

    None is refused with a TypeError (the convention of :mod:`calcml.generative`): every
    result of :mod:`calcml.rl` is reproducible.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if not _is_int(rng):
        hint = (" (None would seed from the operating system: not reproducible)"
                if rng is None else "")
        raise TypeError(f"{_where(who)}: {name} must be a numpy.random.Generator or an int "
                        f"seed >= 0, got {rng!r}{hint}")
    if rng < 0:
        raise ValueError(f"{_where(who)}: {name} must be a numpy.random.Generator or an int "
                         f"seed >= 0, got {rng!r}")
    return np.random.default_rng(int(rng))


def check_env_seed(who, env, seed):
    """``seed`` for ``env.reset``: an int >= 0, or None to continue the environment's own
    generator — refused (TypeError) for an environment that has never had one, whose
    ``reset(seed=None)`` would seed from the operating system."""
    if seed is None:
        base = getattr(env, "unwrapped", env)
        if getattr(base, "_np_random", True) is None:  # gymnasium: not seeded yet
            raise TypeError(f"{_where(who)}: seed=None continues the environment's own "
                            "random generator, but this environment has none yet (its reset "
                            "would seed from the operating system: not reproducible); pass an "
                            "int seed >= 0")
        return None
    return check_seed(who, seed)


def rate_at(who, name, rate, k, *, allow_zero):
    """The value of ``rate`` (a number or a schedule ``k -> number``) at ``k``, checked."""
    v = rate(k) if callable(rate) else rate
    if not _is_real(v) or not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{_where(who)}: {name} must be a number {bound} (or a schedule giving "
                         f"one), got {v!r}" + (f" at episode {k}" if callable(rate) else ""))
    return float(v)


def make_env(who, env):
    """A gymnasium environment: ``env`` itself, or ``gymnasium.make(env)`` for an id."""
    import gymnasium as gym

    if isinstance(env, str):
        return gym.make(env)
    if not isinstance(env, gym.Env):
        raise TypeError(f"{_where(who)}: env must be a gymnasium.Env or an environment id "
                        f"such as 'CartPole-v1', got {type(env).__name__}")
    return env


def _space(env, attr):
    return getattr(env, attr)


def require_discrete_actions(who, env):
    """The number of actions of an environment with a ``Discrete`` action space."""
    from gymnasium.spaces import Discrete

    sp = _space(env, "action_space")
    if not isinstance(sp, Discrete) or int(sp.start) != 0:
        raise ValueError(f"{_where(who)}: needs a Discrete action space starting at 0, got "
                         f"{sp!r}")
    return int(sp.n)


def require_discrete_observations(who, env):
    """The number of states of an environment with a ``Discrete`` observation space."""
    from gymnasium.spaces import Discrete

    sp = _space(env, "observation_space")
    if not isinstance(sp, Discrete) or int(sp.start) != 0:
        raise ValueError(f"{_where(who)}: tabular methods need a Discrete observation space "
                         f"starting at 0, got {sp!r}")
    return int(sp.n)


def require_box_observations(who, env):
    """The number of features of an environment with a 1-D ``Box`` observation space."""
    from gymnasium.spaces import Box

    sp = _space(env, "observation_space")
    if not isinstance(sp, Box) or len(sp.shape) != 1:
        raise ValueError(f"{_where(who)}: needs a 1-D Box observation space (a feature "
                         f"vector), got {sp!r}")
    return int(sp.shape[0])

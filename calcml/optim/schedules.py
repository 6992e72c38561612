"""Learning-rate schedules: plain callables ``k -> rate``, with ``k = 0, 1, …`` the step count.

Pass one as the ``learning_rate`` of any optimizer; the step count is read from the
optimizer's state.  Each schedule accepts a Python int (returning a Python float) or a NumPy
array of step counts (returning an array of rates), so that ``schedule(np.arange(1000))``
plots it.  The chapter (9.1) counts from ``k = 1``; here the first step is ``k = 0``, so its
square-root schedule ``α₀/√k`` is :func:`inverse_sqrt`'s ``α₀/√(k+1)``.

Every schedule keeps its arguments as attributes and has a readable ``repr``.
"""

from __future__ import annotations

import math

import numpy as np

from .base import nonneg, real

__all__ = [
    "Schedule",
    "constant",
    "inverse_time_decay",
    "inverse_sqrt",
    "exponential_decay",
    "step_decay",
    "piecewise_constant",
    "cosine_decay",
    "linear_schedule",
    "linear_warmup",
    "warmup_cosine_decay",
]


def _steps(name, what, value, allow_zero=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"calcml.optim.{name}: {what} must be an integer, got {value!r}")
    if not math.isfinite(value) or int(value) != value:
        raise ValueError(f"calcml.optim.{name}: {what} must be an integer, got {value!r}")
    v = int(value)
    if v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"calcml.optim.{name}: {what} must be {bound}, got {value!r}")
    return v


class Schedule:
    """Base of the schedules: ``__call__`` maps step counts to rates.

    Subclasses implement ``_rates(k)`` on a float64 array ``k``; a scalar ``k`` gives a
    Python float, an array gives an array.
    """

    _args: tuple = ()

    def __call__(self, k):
        r = self._rates(np.asarray(k, dtype=np.float64))
        return float(r) if np.ndim(r) == 0 else r

    def _rates(self, k):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{a}={getattr(self, a)!r}" for a in self._args)
        return f"{type(self).__name__}({args})"


class constant(Schedule):
    """``α_k = value``.

    Parameters
    ----------
    value : float >= 0
    """

    _args = ("value",)

    def __init__(self, value):
        self.value = nonneg("constant", "value", value)

    def _rates(self, k):
        return np.full(np.shape(k), self.value) if np.ndim(k) else self.value


class inverse_time_decay(Schedule):
    """``α_k = α₀ / (1 + β k)`` (chapter 9.1, "decay").

    Parameters
    ----------
    init_value : float >= 0
        α₀.
    beta : float >= 0
        β.

    Notes
    -----
    Σα_k = ∞ and Σα_k² < ∞ for β > 0: the Robbins–Monro conditions hold.
    """

    _args = ("init_value", "beta")

    def __init__(self, init_value, beta):
        self.init_value = nonneg("inverse_time_decay", "init_value", init_value)
        self.beta = nonneg("inverse_time_decay", "beta", beta)

    def _rates(self, k):
        return self.init_value / (1.0 + self.beta * k)


class inverse_sqrt(Schedule):
    """``α_k = α₀ / √(k + 1)`` (chapter 9.1, "square root", with k from 0).

    Parameters
    ----------
    init_value : float >= 0
        α₀.

    Notes
    -----
    Σα_k = ∞ but Σα_k² = ∞ too: not Robbins–Monro, the usual rate for non-smooth or
    averaged SGD.
    """

    _args = ("init_value",)

    def __init__(self, init_value):
        self.init_value = nonneg("inverse_sqrt", "init_value", init_value)

    def _rates(self, k):
        return self.init_value / np.sqrt(k + 1.0)


class exponential_decay(Schedule):
    """``α_k = α₀ · r^(k / T)`` (``r^⌊k/T⌋`` with ``staircase=True``).

    Parameters
    ----------
    init_value : float >= 0
    decay_rate : float > 0
        ``r``; below 1 it decays.
    transition_steps : int > 0, default 1
        ``T``.
    staircase : bool, default False
    """

    _args = ("init_value", "decay_rate", "transition_steps", "staircase")

    def __init__(self, init_value, decay_rate, transition_steps=1, staircase=False):
        name = "exponential_decay"
        self.init_value = nonneg(name, "init_value", init_value)
        self.decay_rate = nonneg(name, "decay_rate", decay_rate)
        if self.decay_rate == 0.0:
            raise ValueError(f"calcml.optim.{name}: decay_rate must be > 0, got {decay_rate!r}")
        self.transition_steps = _steps(name, "transition_steps", transition_steps)
        self.staircase = bool(staircase)

    def _rates(self, k):
        e = k / self.transition_steps
        if self.staircase:
            e = np.floor(e)
        return self.init_value * np.power(self.decay_rate, e)


class step_decay(Schedule):
    """``α_k = α₀ · γ^⌊k / s⌋``: multiply by γ every ``s`` steps (PyTorch's StepLR).

    Parameters
    ----------
    init_value : float >= 0
    step_size : int > 0
    gamma : float >= 0, default 0.1
    """

    _args = ("init_value", "step_size", "gamma")

    def __init__(self, init_value, step_size, gamma=0.1):
        self.init_value = nonneg("step_decay", "init_value", init_value)
        self.step_size = _steps("step_decay", "step_size", step_size)
        self.gamma = nonneg("step_decay", "gamma", gamma)

    def _rates(self, k):
        return self.init_value * np.power(self.gamma, np.floor(k / self.step_size))


class piecewise_constant(Schedule):
    """A step function: ``values[i]`` for ``boundaries[i-1] <= k < boundaries[i]``.

    Parameters
    ----------
    boundaries : sequence of int, strictly increasing, > 0
    values : sequence of float >= 0, one more than ``boundaries``

    Examples
    --------
    >>> s = piecewise_constant([10, 20], [1.0, 0.1, 0.01])
    >>> s(0), s(10), s(25)
    (1.0, 0.1, 0.01)
    """

    _args = ("boundaries", "values")

    def __init__(self, boundaries, values):
        name = "piecewise_constant"
        self.boundaries = tuple(_steps(name, "a boundary", b) for b in boundaries)
        self.values = tuple(nonneg(name, "a value", v) for v in values)
        if any(b1 >= b2 for b1, b2 in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"calcml.optim.{name}: boundaries must increase strictly, "
                             f"got {boundaries!r}")
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"calcml.optim.{name}: need len(values) == len(boundaries) + 1, "
                             f"got {len(self.values)} values for {len(self.boundaries)} "
                             f"boundaries")

    def _rates(self, k):
        idx = np.searchsorted(np.asarray(self.boundaries, dtype=np.float64), k, side="right")
        return np.asarray(self.values)[idx]


class cosine_decay(Schedule):
    """Cosine annealing from α₀ to ``alpha·α₀`` over ``decay_steps``, then constant.

    Parameters
    ----------
    init_value : float >= 0
    decay_steps : int > 0
        ``T``.
    alpha : float in [0, 1], default 0
        The final rate as a fraction of α₀.

    Notes
    -----
    ``α_k = α₀ ((1 - a) · ½(1 + cos(π min(k, T) / T)) + a)``.
    """

    _args = ("init_value", "decay_steps", "alpha")

    def __init__(self, init_value, decay_steps, alpha=0.0):
        name = "cosine_decay"
        self.init_value = nonneg(name, "init_value", init_value)
        self.decay_steps = _steps(name, "decay_steps", decay_steps)
        self.alpha = real(name, "alpha", alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"calcml.optim.{name}: alpha must be in [0, 1], got {alpha!r}")

    def _rates(self, k):
        t = np.minimum(k, self.decay_steps) / self.decay_steps
        cos = 0.5 * (1.0 + np.cos(math.pi * t))
        return self.init_value * ((1.0 - self.alpha) * cos + self.alpha)


class linear_schedule(Schedule):
    """Linear from ``init_value`` to ``end_value`` over ``transition_steps``, then constant.

    Parameters
    ----------
    init_value, end_value : float >= 0
    transition_steps : int >= 0
        With 0 the schedule is ``end_value`` from the start.

    Notes
    -----
    ``α_k = α_init + (α_end - α_init) · min(k, T) / T``.
    """

    _args = ("init_value", "end_value", "transition_steps")

    def __init__(self, init_value, end_value, transition_steps):
        self._setup("linear_schedule", init_value, end_value, transition_steps,
                    ("init_value", "end_value", "transition_steps"))

    def _setup(self, name, init_value, end_value, transition_steps, what):
        # ``what``: the caller's names of the three arguments, for the error messages
        self.init_value = nonneg(name, what[0], init_value)
        self.end_value = nonneg(name, what[1], end_value)
        self.transition_steps = _steps(name, what[2], transition_steps, allow_zero=True)

    def _rates(self, k):
        if self.transition_steps == 0:
            return self.end_value + 0.0 * k
        frac = np.minimum(k, self.transition_steps) / self.transition_steps
        return self.init_value + (self.end_value - self.init_value) * frac


class linear_warmup(linear_schedule):
    """Linear warm-up from ``init_value`` (default 0) to ``peak_value`` over ``warmup_steps``,
    then ``peak_value``.

    Parameters
    ----------
    peak_value : float >= 0
    warmup_steps : int >= 0
    init_value : float >= 0, default 0
        The rate at ``k = 0`` (with the default the first step does not move θ).
    """

    _args = ("peak_value", "warmup_steps", "init_value")

    def __init__(self, peak_value, warmup_steps, init_value=0.0):
        self._setup("linear_warmup", init_value, peak_value, warmup_steps,
                    ("init_value", "peak_value", "warmup_steps"))
        self.peak_value = self.end_value
        self.warmup_steps = self.transition_steps


class warmup_cosine_decay(Schedule):
    """Linear warm-up to ``peak_value``, then cosine decay to ``end_value``.

    Parameters
    ----------
    peak_value : float >= 0
    warmup_steps : int >= 0
        ``W``.
    decay_steps : int > ``warmup_steps``
        ``T``, the total length including the warm-up (as in optax).
    init_value, end_value : float >= 0, default 0

    Notes
    -----
    ``α_k = α_init + (α_peak - α_init) k / W`` for ``k < W``; then
    ``α_end + (α_peak - α_end) · ½(1 + cos(π min(k - W, T - W) / (T - W)))``.
    """

    _args = ("peak_value", "warmup_steps", "decay_steps", "init_value", "end_value")

    def __init__(self, peak_value, warmup_steps, decay_steps, init_value=0.0, end_value=0.0):
        name = "warmup_cosine_decay"
        self.peak_value = nonneg(name, "peak_value", peak_value)
        self.warmup_steps = _steps(name, "warmup_steps", warmup_steps, allow_zero=True)
        self.decay_steps = _steps(name, "decay_steps", decay_steps)
        self.init_value = nonneg(name, "init_value", init_value)
        self.end_value = nonneg(name, "end_value", end_value)
        if self.decay_steps <= self.warmup_steps:
            raise ValueError(f"calcml.optim.{name}: decay_steps ({decay_steps!r}) must exceed "
                             f"warmup_steps ({warmup_steps!r})")

    def _rates(self, k):
        w, t = self.warmup_steps, self.decay_steps
        if w:
            warm = self.init_value + (self.peak_value - self.init_value) * (k / w)
        else:
            warm = self.peak_value + 0.0 * k
        frac = np.clip(k - w, 0.0, t - w) / (t - w)
        cos = self.end_value + (self.peak_value - self.end_value) * 0.5 * (
            1.0 + np.cos(math.pi * frac))
        return np.where(k < w, warm, cos)

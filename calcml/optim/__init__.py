"""Optimizers as composable gradient transformations (optax's design; API.md §4).

::

    opt = cm.optim.chain(cm.optim.clip_by_global_norm(1.0), cm.optim.adam(learning_rate=1e-3))
    state = opt.init(params)                 # params: an array, or a list/tuple/dict of arrays
    updates, state = opt.update(grads, state, params)
    params = cm.optim.apply_updates(params, updates)

Modules: ``base`` (GradientTransformation, apply_updates, reading the state), ``transforms``
(scale, scale_by_learning_rate, trace/momentum, scale_by_adam, scale_by_rms,
scale_by_adagrad), ``clipping``, ``regularization`` (l2, l1, elastic_net, proximal_l1),
``schedules``, ``combine`` (chain), ``alias`` (sgd, adam, rmsprop, adagrad, proximal_gradient:
chains only) and ``binding`` (Optimizer over Tensors).
"""

from .alias import adagrad, adam, proximal_gradient, rmsprop, sgd
from .base import (
    EmptyState,
    GradientTransformation,
    apply_updates,
    current_learning_rate,
    identity,
    step_count,
)
from .binding import Optimizer
from .clipping import clip_by_global_norm, clip_by_value, global_norm
from .combine import chain
from .regularization import ProximalL1State, elastic_net, l1, l2, proximal_l1, soft_threshold
from .schedules import (
    Schedule,
    constant,
    cosine_decay,
    exponential_decay,
    inverse_sqrt,
    inverse_time_decay,
    linear_schedule,
    linear_warmup,
    piecewise_constant,
    step_decay,
    warmup_cosine_decay,
)
from .transforms import (
    ScaleByAdagradState,
    ScaleByAdamState,
    ScaleByLearningRateState,
    ScaleByRmsState,
    TraceState,
    momentum,
    scale,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)

__all__ = [
    # base and composition
    "GradientTransformation", "EmptyState", "apply_updates", "identity", "chain",
    "current_learning_rate", "step_count",
    # optimizers
    "sgd", "adam", "rmsprop", "adagrad", "proximal_gradient",
    # links
    "scale", "scale_by_learning_rate", "trace", "momentum", "scale_by_adam", "scale_by_rms",
    "scale_by_adagrad", "clip_by_global_norm", "clip_by_value", "global_norm", "l2", "l1",
    "elastic_net", "proximal_l1", "soft_threshold",
    # states
    "ScaleByLearningRateState", "TraceState", "ScaleByAdamState", "ScaleByRmsState",
    "ScaleByAdagradState", "ProximalL1State",
    # schedules
    "Schedule", "constant", "inverse_time_decay", "inverse_sqrt", "exponential_decay",
    "step_decay", "piecewise_constant", "cosine_decay", "linear_schedule", "linear_warmup",
    "warmup_cosine_decay",
    # tensors
    "Optimizer",
]

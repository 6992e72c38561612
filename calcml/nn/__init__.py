"""Neural networks: modules, layers, normalization, attention, and backpropagation made visible.

PyTorch's vocabulary (``Module``, ``Sequential``, ``Linear`` with ``weight`` of shape
(out, in), ``train()``/``eval()``, ``state_dict()``) on calcml's engine.  Parameters are
:class:`calcml.Tensor` leaves with ``requires_grad=True``; every random initialisation draws
from an explicit ``rng`` (a ``numpy.random.Generator``) or seed.  See API.md §5.
"""

from . import init
from .attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention
from .backprop import ACTIVATIONS, BackpropResult, backprop, forward_pass, mlp_from_sequential
from .layers import (
    GELU,
    Dropout,
    Flatten,
    Identity,
    Linear,
    LogSoftmax,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    dropout,
    gelu,
    parameter,
)
from .module import Module, ModuleList, Residual, Sequential, functional_call
from .norm import (
    BatchNorm1d,
    LayerNorm,
    batch_norm,
    batchnorm_chapter_grad,
    batchnorm_train_grad,
    layer_norm,
)

__all__ = [
    "Module", "Sequential", "ModuleList", "Residual", "functional_call", "init", "parameter",
    "Linear", "Identity", "ReLU", "Tanh", "Sigmoid", "GELU", "Softmax", "LogSoftmax", "Flatten",
    "Dropout", "dropout", "gelu",
    "BatchNorm1d", "LayerNorm", "batch_norm", "layer_norm", "batchnorm_chapter_grad",
    "batchnorm_train_grad",
    "scaled_dot_product_attention", "MultiHeadAttention", "causal_mask",
    "backprop", "forward_pass", "mlp_from_sequential", "BackpropResult", "ACTIVATIONS",
]

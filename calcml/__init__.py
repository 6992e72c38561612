"""calcml: the calculus behind machine learning, as software.

An autodiff engine on NumPy (CuPy on a GPU) with reverse and forward mode on one graph,
higher-order derivatives, derivatives verifiable three ways (symbolically, numerically,
automatically), and the chapter "Calculus in Machine Learning" run as experiments
(``calcml tour``).
"""

import importlib as _importlib

from . import backend, losses, nn, optim, optimize, train
from ._core.registry import OPS as _OPS
from ._core.tree import flatten as tree_flatten
from ._core.tree import tree_map
from ._core.tree import unflatten as tree_unflatten
from .autodiff import grad, hessian, hvp, jacobian, jvp, value_and_grad, vjp
from .graph import make_graph
from .ops import (
                  abs,
                  arctan,
                  broadcast_to,
                  clip,
                  concatenate,
                  cos,
                  dot,
                  einsum,
                  exp,
                  expand_dims,
                  expm1,
                  log,
                  log1p,
                  log_softmax,
                  logsumexp,
                  matmul,
                  max,
                  maximum,
                  mean,
                  min,
                  minimum,
                  moveaxis,
                  prod,
                  relu,
                  reshape,
                  sigmoid,
                  sign,
                  sin,
                  softmax,
                  softplus,
                  sqrt,
                  square,
                  squeeze,
                  stack,
                  std,
                  sum,
                  swapaxes,
                  take,
                  tan,
                  tanh,
                  transpose,
                  var,
                  where,
)
from .tensor import Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from .testing import GradientCheckError, check_grad

__version__ = "0.1.0"

# Subpackages that pull in heavy libraries (scikit-learn, SymPy, SciPy's statistics, gymnasium)
# load on first use: ``cm.estimators`` or ``import calcml.estimators`` both work.
_LAZY = ("analysis", "estimators", "symbolic", "rl", "generative")


def __getattr__(name):
    if name in _LAZY:
        module = _importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'calcml' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

#: The names of the differentiable operations (API.md §1), as registered.
OPERATIONS = tuple(sorted(n for n, info in _OPS.items() if info.public))

__all__ = [
    "abs", "arctan", "broadcast_to", "clip", "concatenate", "cos", "dot", "einsum", "exp",
    "expand_dims", "expm1", "log", "log1p", "log_softmax", "logsumexp", "matmul", "max",
    "maximum", "mean", "min", "minimum", "moveaxis", "prod", "relu", "reshape", "sigmoid",
    "sign", "sin", "softmax", "softplus", "sqrt", "square", "squeeze", "stack", "std", "sum",
    "swapaxes", "take", "tan", "tanh", "transpose", "var", "where",
    "grad", "value_and_grad", "vjp", "jvp", "jacobian", "hessian", "hvp",
    "check_grad", "GradientCheckError", "symbolic", "make_graph", "losses",
    "Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled",
    "tree_flatten", "tree_unflatten", "tree_map", "backend", "optim", "OPERATIONS", "__version__",
    "optimize", "analysis", "nn", "train", "estimators", "rl", "generative",
]

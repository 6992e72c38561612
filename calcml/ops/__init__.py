"""Every operation calcml differentiates: primitives with their rules, and composites.

Importing this package registers them all and installs the few operations the engine itself
needs (accumulate, unbroadcast, reshape, broadcast) into ``calcml._core``.
"""

from .. import tensor as _tensor
from .._core import forward as _forward
from .._core import reverse as _reverse
from . import elementwise as _elementwise
from . import methods as _methods  # noqa: F401  (attaches array behaviour to boxes)
from .dense import dense_stack
from .elementwise import (
                          abs,
                          add,
                          arctan,
                          clip,
                          cos,
                          divide,
                          exp,
                          expm1,
                          log,
                          log1p,
                          maximum,
                          minimum,
                          multiply,
                          negative,
                          power,
                          relu,
                          sigmoid,
                          sign,
                          sin,
                          softplus,
                          sqrt,
                          square,
                          subtract,
                          tan,
                          tanh,
                          where,
)
from .linalg import affine_node as _affine_node
from .linalg import dot, einsum, linear, matmul
from .reductions import log_softmax, logsumexp, max, mean, min, prod, softmax, std, sum, sum_to, var
from .shape import (
                          broadcast_to,
                          concatenate,
                          expand_dims,
                          getitem,
                          moveaxis,
                          reshape,
                          scatter_add,
                          squeeze,
                          stack,
                          swapaxes,
                          take,
                          transpose,
)

_reverse._add = add
_reverse._sum_to = sum_to
_forward._add = add
_forward._reshape = reshape
_forward._broadcast_to = broadcast_to
_tensor._fused_add = _elementwise._add
_tensor._affine_node = _affine_node

__all__ = [
    "abs", "add", "arctan", "clip", "cos", "divide", "exp", "expm1", "log", "log1p", "maximum",
    "minimum", "multiply", "negative", "power", "relu", "sigmoid", "sign", "sin", "softplus",
    "sqrt", "square", "subtract", "tan", "tanh", "where", "logsumexp", "log_softmax", "max",
    "mean", "min", "prod", "softmax", "std", "sum", "sum_to", "var", "broadcast_to",
    "concatenate", "expand_dims", "getitem", "moveaxis", "reshape", "scatter_add", "squeeze",
    "stack", "swapaxes", "take", "transpose", "dot", "einsum", "matmul", "linear",
    "dense_stack",
]

"""Elementwise primitives: arithmetic, the unary functions, activations, where and clip.

Each block is one primitive: its NumPy implementation, its reverse rule (VJP) and forward rule
(JVP) in calcml operations, and the sample inputs its tests use.  Rules receive the output
``out`` too, so that ``exp``, ``tanh`` and ``sigmoid`` reuse it.
"""

from __future__ import annotations

import math

import numpy as np

from .._core.registry import Sample, defprim, register
from ._base import Box, binary, call, const_as, op_error, raw, unary

__all__ = [
    "add", "subtract", "multiply", "divide", "negative", "power", "exp", "log", "log1p",
    "expm1", "sqrt", "abs", "sign", "sin", "cos", "tan", "tanh", "arctan", "sigmoid", "relu",
    "softplus", "maximum", "minimum", "where", "clip", "square",
]

def _away_from_zero(rng, shape, lo=0.3):
    """Samples with |x| >= lo, so kinks at 0 are not straddled by finite differences."""
    x = rng.uniform(lo, 1.5, size=shape)
    return x * rng.choice([-1.0, 1.0], size=shape)


def _pos(rng, shape, lo=0.5, hi=2.0):
    return rng.uniform(lo, hi, size=shape)


def _bcast_pairs(rng, gen=None):
    gen = gen or (lambda s: rng.normal(size=s))
    return [
        Sample((gen((3, 4)), gen((3, 4))), argnums=(0, 1)),
        Sample((gen((3, 1)), gen((4,))), argnums=(0, 1)),  # broadcasting both ways
        Sample((gen(()), gen((2, 3))), argnums=(0, 1)),
    ]


def _unary_samples(gen):
    return lambda rng: [Sample((gen(rng, (3, 4)),)), Sample((gen(rng, ()),))]


def _normal(rng, shape):
    return rng.normal(size=shape)


# --- arithmetic ---------------------------------------------------------------------------

_add = defprim(
    "add", np.add,
    vjps=(lambda g, out, x, y: g, lambda g, out, x, y: g),
    jvps=(lambda t, out, x, y: t, lambda t, out, x, y: t),
    elementwise=True,
)
add = register("add", binary(_add, "x + y, elementwise with broadcasting."), _bcast_pairs,
               public=False)

_subtract = defprim(
    "subtract", np.subtract,
    vjps=(lambda g, out, x, y: g, lambda g, out, x, y: negative(g)),
    jvps=(lambda t, out, x, y: t, lambda t, out, x, y: negative(t)),
    elementwise=True,
)
subtract = register("subtract", binary(_subtract, "x - y."), _bcast_pairs, public=False)

_multiply = defprim(
    "multiply", np.multiply,
    vjps=(lambda g, out, x, y: g * y, lambda g, out, x, y: g * x),
    jvps=(lambda t, out, x, y: t * y, lambda t, out, x, y: x * t),
    elementwise=True,
)
multiply = register("multiply", binary(_multiply, "x * y."), _bcast_pairs, public=False)

_divide = defprim(
    "divide", np.divide,
    vjps=(lambda g, out, x, y: g / y, lambda g, out, x, y: negative(g) * out / y),
    jvps=(lambda t, out, x, y: t / y, lambda t, out, x, y: negative(t) * out / y),
    elementwise=True,
)
divide = register(
    "divide", binary(_divide, "x / y."),
    lambda rng: [Sample((rng.normal(size=(3, 4)), _away_from_zero(rng, (3, 4))), argnums=(0, 1)),
                 Sample((rng.normal(size=(3, 1)), _away_from_zero(rng, (4,))), argnums=(0, 1))],
    public=False,
)

_negative = defprim(
    "negative", np.negative,
    vjps=(lambda g, out, x: negative(g),), jvps=(lambda t, out, x: negative(t),),
    elementwise=True,
)
negative = register("negative", unary(_negative, "-x."), _unary_samples(_normal), public=False)


def _log_or_zero(x):
    """log(x) where x > 0 and 0 elsewhere (the d/dy of x**y is then finite at x = 0)."""
    if isinstance(x, (int, float)):  # a Python base (2.0 ** x): stay a weak Python scalar
        return math.log(x) if x > 0 else 0.0
    pos = x > 0
    return where(pos, log(where(pos, x, 1.0)), 0.0)


def _power_dx(x, y):
    """d/dx x**y = y·x^(y-1), exactly 0 where y == 0 (x**0 is constant), x = 0 included.

    There y·x^(y-1) would be 0·inf = nan; the exponent y - 1 is replaced by 1 only at the
    points where x == y == 0, so the rule is y·x there (0, with derivatives 0) and unchanged
    everywhere else, the derivative in y included.
    """
    e = y - 1.0
    at0 = (raw(x) == 0) & (raw(y) == 0)  # a constant mask: where the rule would give nan
    if np.any(at0):
        e = where(at0, 1.0, e)
        if not isinstance(e, Box):  # a Python exponent made an array: keep x's dtype
            e = const_as(e, x)
    return y * x ** e


_power = defprim(
    "power", np.power,
    vjps=(lambda g, out, x, y: g * _power_dx(x, y),
          lambda g, out, x, y: g * out * _log_or_zero(x)),
    jvps=(lambda t, out, x, y: t * _power_dx(x, y),
          lambda t, out, x, y: t * out * _log_or_zero(x)),
    elementwise=True,
)
_power_op = binary(_power, "x ** y.")


def _power_fast(x, y):
    """x ** y; a constant exponent of 2 binds ``square``."""
    if type(y) in (int, float) and y == 2:
        return square(x)
    return _power_op(x, y)


_power_fast.__name__ = _power_fast.__qualname__ = "power"
power = register(
    "power", _power_fast,
    lambda rng: [Sample((_pos(rng, (3, 4)), rng.uniform(0.5, 2.5, size=(3, 4))), argnums=(0, 1)),
                 Sample((_pos(rng, (3, 1)), rng.uniform(0.5, 2.5, size=(4,))), argnums=(0, 1)),
                 Sample((rng.normal(size=(3, 4)), 3.0))],
    public=False,
)


# The reverse rules below put the factor computed from x or out first: when only that factor
# is traced (a plain cotangent, as in forward-over-reverse Hessians), the box's own operator
# records the product, instead of NumPy calling back through ``__array_ufunc__``.  Products
# commute exactly in IEEE arithmetic, so the numbers do not change.
_square = defprim("square", np.square, vjps=(lambda g, out, x: (x * 2.0) * g,),
                  jvps=(lambda t, out, x: t * (x * 2.0),), elementwise=True)
square = register("square", unary(_square, """x², elementwise (also what ``x ** 2`` binds).

Notes
-----
d/dx x² = 2x.  A primitive of its own because it is everywhere in losses and in the rules of
tanh and tan, where one multiplication is cheaper than the general power rule.
"""), _unary_samples(_normal), public=False)


# --- unary functions ----------------------------------------------------------------------

_exp = defprim("exp", np.exp, vjps=(lambda g, out, x: out * g,),
               jvps=(lambda t, out, x: t * out,), elementwise=True)
exp = register("exp", unary(_exp, """Exponential, elementwise.

Notes
-----
d/dx exp(x) = exp(x); the rules reuse the output.
"""), _unary_samples(_normal))

_log = defprim("log", np.log, vjps=(lambda g, out, x: g / x,),
               jvps=(lambda t, out, x: t / x,), elementwise=True)
log = register("log", unary(_log, "Natural logarithm, elementwise.  d/dx log x = 1/x."),
               _unary_samples(_pos))

_log1p = defprim("log1p", np.log1p, vjps=(lambda g, out, x: g / (x + 1.0),),
                 jvps=(lambda t, out, x: t / (x + 1.0),), elementwise=True)
log1p = register("log1p", unary(_log1p, "log(1 + x), accurate for small x.  d/dx = 1/(1+x)."),
                 _unary_samples(lambda rng, s: rng.uniform(-0.5, 2.0, size=s)))

_expm1 = defprim("expm1", np.expm1, vjps=(lambda g, out, x: (out + 1.0) * g,),
                 jvps=(lambda t, out, x: t * (out + 1.0),), elementwise=True)
expm1 = register("expm1", unary(_expm1, "exp(x) - 1, accurate for small x.  d/dx = exp(x)."),
                 _unary_samples(_normal))

_sqrt = defprim("sqrt", np.sqrt, vjps=(lambda g, out, x: g / (out * 2.0),),
                jvps=(lambda t, out, x: t / (out * 2.0),), elementwise=True)
sqrt = register("sqrt", unary(_sqrt, "Square root.  d/dx sqrt(x) = 1 / (2 sqrt(x))."),
                _unary_samples(_pos))

_sign = defprim("sign", np.sign, vjps=None, jvps=None, elementwise=True)
sign = register("sign", unary(_sign, """Sign of x, elementwise (-1, 0 or +1).

Its derivative is zero wherever it exists, so the result carries no gradient.
"""), _unary_samples(_away_from_zero))

_abs = defprim("abs", np.abs, vjps=(lambda g, out, x: g * sign(x),),
               jvps=(lambda t, out, x: t * sign(x),), elementwise=True)
abs = register("abs", unary(_abs, """Absolute value.  d/dx |x| = sign(x) (0 at x = 0)."""),
               _unary_samples(_away_from_zero))

_sin = defprim("sin", np.sin, vjps=(lambda g, out, x: cos(x) * g,),
               jvps=(lambda t, out, x: t * cos(x),), elementwise=True)
sin = register("sin", unary(_sin, "Sine.  d/dx sin x = cos x."), _unary_samples(_normal))

_cos = defprim("cos", np.cos, vjps=(lambda g, out, x: negative(g) * sin(x),),
               jvps=(lambda t, out, x: negative(t) * sin(x),), elementwise=True)
cos = register("cos", unary(_cos, "Cosine.  d/dx cos x = -sin x."), _unary_samples(_normal))

_tan = defprim("tan", np.tan, vjps=(lambda g, out, x: (square(out) + 1.0) * g,),
               jvps=(lambda t, out, x: t * (square(out) + 1.0),), elementwise=True)
tan = register("tan", unary(_tan, "Tangent.  d/dx tan x = 1 + tan² x."),
               _unary_samples(lambda rng, s: rng.uniform(-1.2, 1.2, size=s)))

_tanh = defprim("tanh", np.tanh, vjps=(lambda g, out, x: (1.0 - square(out)) * g,),
                jvps=(lambda t, out, x: t * (1.0 - square(out)),), elementwise=True)
tanh = register("tanh", unary(_tanh, "Hyperbolic tangent.  d/dx tanh x = 1 - tanh² x."),
                _unary_samples(_normal))

_arctan = defprim("arctan", np.arctan, vjps=(lambda g, out, x: g / (x * x + 1.0),),
                  jvps=(lambda t, out, x: t / (x * x + 1.0),), elementwise=True)
arctan = register("arctan", unary(_arctan, "Inverse tangent.  d/dx arctan x = 1/(1 + x²)."),
                  _unary_samples(_normal))


def _sigmoid_impl(x):
    # exp(-softplus(-x)): no overflow for any x, full relative accuracy in both tails.
    return np.exp(-np.logaddexp(0.0, np.negative(x)))


_sigmoid = defprim("sigmoid", _sigmoid_impl,
                   vjps=(lambda g, out, x: (out * (1.0 - out)) * g,),
                   jvps=(lambda t, out, x: t * (out * (1.0 - out)),), elementwise=True)
sigmoid = register("sigmoid", unary(_sigmoid, """Logistic sigmoid 1 / (1 + exp(-x)), stable.

Notes
-----
σ'(x) = σ(x)(1 - σ(x)).  Computed as exp(-softplus(-x)), finite for every x.
"""), _unary_samples(lambda rng, s: rng.normal(scale=2.0, size=s)))

_relu = defprim("relu", lambda x: np.maximum(x, 0),
                vjps=(lambda g, out, x: g * (x > 0),),
                jvps=(lambda t, out, x: t * (x > 0),), elementwise=True)
relu = register("relu", unary(_relu, """max(x, 0).  Its derivative is 1 for x > 0, else 0."""),
                _unary_samples(_away_from_zero))


def _softplus_impl(x):
    return np.logaddexp(0.0, x)


_softplus = defprim("softplus", _softplus_impl, vjps=(lambda g, out, x: sigmoid(x) * g,),
                    jvps=(lambda t, out, x: t * sigmoid(x),), elementwise=True)
softplus = register("softplus", unary(_softplus, """log(1 + exp(x)), stable for any x.

Notes
-----
d/dx softplus(x) = sigmoid(x).
"""), _unary_samples(lambda rng, s: rng.normal(scale=2.0, size=s)))


# --- two-argument selections ---------------------------------------------------------------

def _pick(mask, tie, g):
    """g where mask, g/2 where tie (both sides share a tie equally), 0 elsewhere."""
    return where(mask, g, 0.0) + where(tie, g * 0.5, 0.0)


_maximum = defprim(
    "maximum", np.maximum,
    vjps=(lambda g, out, x, y: _pick(x > y, x == y, g), lambda g, out, x, y: _pick(y > x, x == y, g)),
    jvps=(lambda t, out, x, y: _pick(x > y, x == y, t), lambda t, out, x, y: _pick(y > x, x == y, t)),
    elementwise=True,
)
maximum = register("maximum", binary(_maximum, """Elementwise maximum with broadcasting.

Notes
-----
The derivative goes to the larger argument; at a tie each side gets half.
"""), lambda rng: [s for s in _bcast_pairs(rng)[:2]])

_minimum = defprim(
    "minimum", np.minimum,
    vjps=(lambda g, out, x, y: _pick(x < y, x == y, g), lambda g, out, x, y: _pick(y < x, x == y, g)),
    jvps=(lambda t, out, x, y: _pick(x < y, x == y, t), lambda t, out, x, y: _pick(y < x, x == y, t)),
    elementwise=True,
)
minimum = register("minimum", binary(_minimum, """Elementwise minimum with broadcasting.

Notes
-----
The derivative goes to the smaller argument; at a tie each side gets half.
"""), lambda rng: [s for s in _bcast_pairs(rng)[:2]])

_where = defprim(
    "where", np.where,
    vjps=(None, lambda g, out, c, x, y: where(c, g, 0.0), lambda g, out, c, x, y: where(c, 0.0, g)),
    jvps=(None, lambda t, out, c, x, y: where(c, t, 0.0), lambda t, out, c, x, y: where(c, 0.0, t)),
    elementwise=True,
)


def where(condition, x, y):
    """``x`` where ``condition`` holds, else ``y`` (NumPy's three-argument ``where``).

    Notes
    -----
    The gradient flows to ``x`` where the condition holds and to ``y`` elsewhere; the
    condition itself is not differentiated.
    """
    condition = raw(condition)
    if isinstance(x, Box) or isinstance(y, Box):
        return call(_where, (condition, x, y), {})
    try:
        return np.where(condition, x, y)
    except (ValueError, TypeError) as e:
        raise op_error("where", (condition, x, y), e) from None


register("where", where, lambda rng: [
    Sample((rng.normal(size=(3, 4)) > 0, rng.normal(size=(3, 4)), rng.normal(size=(3, 4))),
           argnums=(1, 2)),
    Sample((rng.normal(size=(3, 1)) > 0, rng.normal(size=(4,)), rng.normal(size=(3, 4))),
           argnums=(1, 2)),
])


def _clip_mask(x, a_min, a_max):
    m = True
    if a_min is not None:
        m = m & (x >= a_min)
    if a_max is not None:
        m = m & (x <= a_max)
    return m


_clip = defprim(
    "clip", lambda x, a_min, a_max: np.clip(x, a_min, a_max),
    vjps=(lambda g, out, x, a_min, a_max: where(_clip_mask(x, a_min, a_max), g, 0.0),),
    jvps=(lambda t, out, x, a_min, a_max: where(_clip_mask(x, a_min, a_max), t, 0.0),),
    elementwise=True, broadcasts=True,  # array bounds may broadcast x up
)


def clip(x, a_min=None, a_max=None):
    """Limit ``x`` to ``[a_min, a_max]`` (either bound may be None), like ``numpy.clip``.

    Notes
    -----
    The derivative is 1 inside the interval and 0 where the value was clipped.  Bounds that
    are themselves differentiated make clip ``minimum(maximum(x, a_min), a_max)``, so the
    derivative goes to the bound where it is the result.
    """
    if a_min is None and a_max is None:
        raise ValueError("calcml.clip: give a_min, a_max or both")
    if isinstance(a_min, Box) or isinstance(a_max, Box):
        if a_min is not None:
            x = maximum(x, a_min)
        return x if a_max is None else minimum(x, a_max)
    return call(_clip, (x,), {"a_min": raw(a_min), "a_max": raw(a_max)})


register("clip", clip, lambda rng: [
    Sample((_away_from_zero(rng, (3, 4)),), {"a_min": -0.1, "a_max": 0.1}),
    Sample((np.array([-2.0, -0.5, 0.05, 0.5, 2.0]) + rng.uniform(-0.2, 0.2, size=5),),
           {"a_min": -1.0, "a_max": 1.0}),
    Sample((np.array([-2.0, -0.5, 0.05, 0.5, 2.0]) + rng.uniform(-0.2, 0.2, size=5),
            rng.uniform(-1.1, -0.9, size=5), rng.uniform(0.9, 1.1, size=(2, 1))),
           argnums=(0, 1, 2)),  # differentiated bounds, broadcasting
])

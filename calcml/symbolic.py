"""Exact derivatives: a calcml function run on SymPy symbols.

The function is run once on *symbolic boxes*: boxes of a trace of their own whose values are
NumPy object arrays of SymPy expressions.  Binding a primitive to them evaluates the primitive
on those arrays:

* structural and polynomial primitives (``add``, ``multiply``, ``matmul``, ``sum``,
  ``reshape``, indexing, ...) run their ordinary NumPy implementation, which works on object
  arrays element by element;
* the others (``exp``, ``log``, ``tanh``, ``logsumexp``, ...) take their *value* from a table
  of SymPy forms, :data:`SYMPY_FORMS`, keyed by the primitive's name.

The table holds values only.  Derivatives come from SymPy's ``diff`` of the resulting
expression, so no derivative is known twice and the symbolic gradient is an independent check
of calcml's rules.  A primitive with no SymPy form raises :class:`SymbolicError` naming it.

The trace takes a fresh level when the function is called, so transforms *inside* the function
have higher levels and see the symbolic boxes as constants: ``expression(cm.grad(f), 2)`` is
calcml's own reverse-mode gradient, written out in SymPy, which must equal SymPy's ``diff``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import sympy as sp

from ._core.trace import Box, new_level
from ._core.tree import flatten, unflatten

__all__ = ["symbols", "expression", "grad", "hessian", "jacobian", "lambdify", "evaluate",
           "SymbolicError", "SYMPY_FORMS", "register", "SymbolicBox"]


class SymbolicError(NotImplementedError):
    """A primitive (named in the message) has no SymPy form."""


# --- values -------------------------------------------------------------------------------

def _const(c):
    """A Python or NumPy number as an exact SymPy number where that is faithful.

    Integer-valued floats become Integers and floats that are short fractions (0.5, 0.1,
    1/3) become Rationals, so that ``1.0 - tanh(x)**2`` prints as ``1 - tanh(x)**2``;
    other floats stay Floats.
    """
    if isinstance(c, sp.Basic):
        return c
    if isinstance(c, (bool, np.bool_)):
        return sp.true if c else sp.false
    if isinstance(c, (int, np.integer)):
        return sp.Integer(int(c))
    if isinstance(c, (float, np.floating)):
        c = float(c)
        if not np.isfinite(c):
            return sp.oo if c > 0 else (-sp.oo if c < 0 else sp.nan)
        if c == int(c):
            return sp.Integer(int(c))
        q = Fraction(c).limit_denominator(10**6)
        if float(q) == c:
            return sp.Rational(q.numerator, q.denominator)
        return sp.Float(c)
    return sp.sympify(c)


def _obj(x):
    """``x`` as an object array (a 0-d one for a scalar); numbers become SymPy numbers."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "b":
            return x
        if x.dtype == object:
            if all(isinstance(v, sp.Basic) for v in x.flat):
                return x
        out = np.empty(x.shape, dtype=object)
        for i, v in np.ndenumerate(x):
            out[i] = _const(v)
        return out
    out = np.empty((), dtype=object)
    out[()] = _const(x)
    return out


def _is_condition(x):
    """An object array of SymPy booleans or relations (the result of a comparison)."""
    if not isinstance(x, np.ndarray) or x.dtype != object or x.size == 0:
        return False
    return isinstance(x.flat[0], _CONDITIONS)


_CONDITIONS = (sp.core.relational.Relational, sp.logic.boolalg.BooleanAtom,
               sp.logic.boolalg.BooleanFunction)
_indicator = np.frompyfunc(lambda c: sp.Piecewise((1, c), (0, True)), 1, 1)


def _elementwise(fn, nin):
    vec = np.frompyfunc(fn, nin, 1)

    def apply(*args, **params):
        return vec(*args)

    return apply


def _reduce(fn):
    """A reduction from a function of the reduced elements (a list), for ``axis``/``keepdims``."""

    def apply(x, axis, keepdims):
        x = np.asarray(x, dtype=object)
        n = x.ndim
        axes = sorted(a % n for a in axis) if n else []
        keep = [i for i in range(n) if i not in axes]
        xt = np.transpose(x, keep + axes).reshape(tuple(x.shape[i] for i in keep) + (-1,))
        out = np.empty(xt.shape[:-1], dtype=object)
        for idx in np.ndindex(out.shape):
            out[idx] = fn(list(xt[idx]))
        if keepdims:
            out = out.reshape(tuple(1 if i in axes else s for i, s in enumerate(x.shape)))
        return out

    return apply


def _lse(xs):
    return sp.log(sp.Add(*[sp.exp(v) for v in xs]))


def _softmax(x, axis):
    e = np.frompyfunc(sp.exp, 1, 1)(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x, axis):
    return x - _reduce(_lse)(x, axis, True)


def _softmax_cross_entropy(z, labels):
    z = np.asarray(z, dtype=object)
    labels = np.asarray(labels)
    rows = z.reshape(-1, z.shape[-1])
    terms = [_lse(list(r)) - r[k] for r, k in zip(rows, labels.reshape(-1))]
    return sp.Add(*terms) / max(len(terms), 1)


def _where(c, x, y):
    if isinstance(c, np.ndarray) and c.dtype != object:
        return np.where(c, x, y)
    return np.frompyfunc(lambda ci, xi, yi: sp.Piecewise((xi, ci), (yi, True)), 3, 1)(c, x, y)


def _clip(x, a_min, a_max):
    def one(v):
        if a_min is not None:
            v = sp.Max(v, _const(a_min))
        if a_max is not None:
            v = sp.Min(v, _const(a_max))
        return v

    return np.frompyfunc(one, 1, 1)(x)


#: The SymPy form of each primitive whose NumPy implementation cannot run on SymPy objects:
#: ``name -> fn(*values, **params)`` on object arrays.  Values only: never a derivative.
SYMPY_FORMS = {
    "exp": _elementwise(sp.exp, 1),
    "log": _elementwise(sp.log, 1),
    "log1p": _elementwise(lambda v: sp.log(1 + v), 1),
    "expm1": _elementwise(lambda v: sp.exp(v) - 1, 1),
    "sqrt": _elementwise(sp.sqrt, 1),
    "abs": _elementwise(sp.Abs, 1),
    "sign": _elementwise(sp.sign, 1),
    "sin": _elementwise(sp.sin, 1),
    "cos": _elementwise(sp.cos, 1),
    "tan": _elementwise(sp.tan, 1),
    "tanh": _elementwise(sp.tanh, 1),
    "arctan": _elementwise(sp.atan, 1),
    "sigmoid": _elementwise(lambda v: 1 / (1 + sp.exp(-v)), 1),
    "relu": _elementwise(lambda v: sp.Max(v, 0), 1),
    "softplus": _elementwise(lambda v: sp.log(1 + sp.exp(v)), 1),
    "power": _elementwise(lambda a, b: a**b, 2),
    "square": _elementwise(lambda v: v**2, 1),
    "maximum": _elementwise(sp.Max, 2),
    "minimum": _elementwise(sp.Min, 2),
    "where": _where,
    "clip": _clip,
    "max": _reduce(lambda xs: sp.Max(*xs)),
    "min": _reduce(lambda xs: sp.Min(*xs)),
    "prod": _reduce(lambda xs: sp.Mul(*xs)),
    "logsumexp": _reduce(_lse),
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "softmax_cross_entropy": _softmax_cross_entropy,
}


def _dense_stack(x, *wb, activations):
    """``dense_stack``: x Wᵀ + b is exact on object arrays; each activation takes its form."""
    h = x
    for k, act in enumerate(activations):
        h = np.matmul(h, wb[2 * k].T) + wb[2 * k + 1]
        if act != "identity":
            h = SYMPY_FORMS[act](h)
    return h


SYMPY_FORMS["dense_stack"] = _dense_stack

#: Primitives whose own implementation is exact on object arrays of SymPy expressions.
NATIVE = frozenset({
    "add", "subtract", "multiply", "divide", "negative", "matmul", "einsum", "sum", "mean",
    "linear",
    "reshape", "transpose", "broadcast_to", "concatenate", "getitem", "scatter_add",
})


def register(name, fn, elementwise=False, nin=1):
    """Give the primitive ``name`` a SymPy form (for primitives you define yourself).

    Parameters
    ----------
    name : str
        The primitive's name, as given to ``defprim``.
    fn : callable
        ``elementwise=True``: a function of ``nin`` SymPy scalars (parameters are not passed),
        applied entry by entry with broadcasting.  Otherwise ``fn(*values, **params)`` on NumPy
        object arrays of SymPy expressions, returning one.
    elementwise : bool
    nin : int
        Number of array arguments of an elementwise primitive.

    Notes
    -----
    Give the value only; derivatives come from SymPy.
    """
    SYMPY_FORMS[name] = _elementwise(fn, nin) if elementwise else fn


# --- the trace ----------------------------------------------------------------------------

class SymbolicBox(Box):
    """A value of a symbolic trace: a NumPy object array of SymPy expressions.

    It reports dtype float64, so that transforms run inside a symbolic function accept it.
    Comparisons give object arrays of SymPy relations, which ``cm.where`` turns into
    ``Piecewise``.
    """

    __slots__ = ()

    def __init__(self, value, trace):
        self._value = value
        self._trace = trace

    dtype = property(lambda self: np.dtype(np.float64))
    __hash__ = Box.__hash__

    def _compare(op):
        vec = np.frompyfunc(op, 2, 1)

        def f(self, other):
            return vec(_value_of(self), _value_of(other))

        return f

    __lt__ = _compare(lambda a, b: sp.Lt(a, b))
    __le__ = _compare(lambda a, b: sp.Le(a, b))
    __gt__ = _compare(lambda a, b: sp.Gt(a, b))
    __ge__ = _compare(lambda a, b: sp.Ge(a, b))
    __eq__ = _compare(lambda a, b: sp.Eq(a, b))
    __ne__ = _compare(lambda a, b: sp.Ne(a, b))
    del _compare

    def __repr__(self):
        return f"SymbolicBox({self._value!r})"


def _value_of(x):
    while isinstance(x, Box):
        x = x._value
    return _obj(x)


class SymbolicTrace:
    """Evaluates primitives on object arrays of SymPy expressions (see module docstring)."""

    __slots__ = ("level",)

    def __init__(self, level):
        self.level = level

    def process(self, prim, args, params):
        vals = []
        cond_ok = prim.name == "where"
        for i, a in enumerate(args):
            if isinstance(a, Box):
                if a._trace is not self:
                    raise SymbolicError(
                        f"calcml.symbolic: {prim.name} received a value traced by another "
                        f"transform from outside the symbolic function")
                v = a._value
            else:
                v = _obj(a)
            if _is_condition(v) and not (cond_ok and i == 0):
                v = _indicator(v)  # a comparison used as a number: 1 where true, else 0
            vals.append(v)
        fn = SYMPY_FORMS.get(prim.name)
        try:
            if fn is not None:
                out = fn(*vals, **params)
            elif prim.name in NATIVE:
                out = prim.impl(*vals, **params)
            else:
                raise SymbolicError(
                    f"calcml.symbolic: the primitive {prim.name!r} has no SymPy form; give it "
                    f"one with calcml.symbolic.register({prim.name!r}, fn)")
        except SymbolicError:
            raise
        except Exception as exc:
            raise SymbolicError(f"calcml.symbolic: cannot evaluate {prim.name!r} on SymPy "
                                f"expressions: {type(exc).__name__}: {exc}") from exc
        return SymbolicBox(_obj(out), self)


# --- public API ---------------------------------------------------------------------------

def symbols(n, name="x"):
    """``n`` real SymPy symbols ``x0, ..., x{n-1}`` (a list)."""
    return [sp.Symbol(f"{name}{i}", real=True) for i in range(int(n))]


def _symbols_of(args):
    if isinstance(args, (int, np.integer)):
        if args < 1:
            raise ValueError("calcml.symbolic: need at least one variable")
        return symbols(args)
    syms = list(args)
    for s in syms:
        if not isinstance(s, sp.Symbol):
            raise TypeError(f"calcml.symbolic: expected an int or SymPy symbols, got "
                            f"{type(s).__name__}")
    return syms


def _leaf_expr(o, trace):
    if isinstance(o, SymbolicBox) and o._trace is trace:
        v = o._value
    elif isinstance(o, Box):
        raise TypeError("calcml.symbolic: the function returned a value of another transform")
    else:
        v = _obj(o) if not isinstance(o, np.ndarray) or o.dtype != object else o
    if v.shape == ():
        return sp.sympify(v[()])
    return sp.Array(v.tolist(), v.shape)


def _run(f, args, vector):
    if not callable(f):
        raise TypeError(f"calcml.symbolic: f must be callable, got {type(f).__name__}")
    syms = _symbols_of(args)
    trace = SymbolicTrace(new_level())
    if vector:
        inputs = (SymbolicBox(np.array(syms, dtype=object), trace),)
    else:
        inputs = tuple(SymbolicBox(_obj(s), trace) for s in syms)
    out = f(*inputs)
    leaves, td = flatten(out)
    return unflatten(td, [_leaf_expr(o, trace) for o in leaves]), syms


def expression(f, n_args, vector=False):
    """The value of ``f`` on SymPy symbols: a SymPy expression.

    Parameters
    ----------
    f : callable
        A function written with calcml's operations.
    n_args : int or sequence of sympy.Symbol
        The number of scalar arguments (symbols ``x0, x1, ...`` are made, real-valued), or the
        symbols themselves.
    vector : bool
        ``f`` takes one vector argument of that length instead of scalar arguments.

    Returns
    -------
    sympy.Expr, or sympy.Array for an array output (a list/tuple/dict of them for such an
    output).

    Examples
    --------
    >>> import calcml as cm
    >>> cm.symbolic.expression(lambda x, y: cm.sin(x) * cm.exp(y), 2)
    exp(x1)*sin(x0)
    """
    return _run(f, n_args, vector)[0]


def _scalar(expr):
    if isinstance(expr, sp.NDimArray):
        if expr.shape == () or len(expr) == 1:
            return expr[tuple(0 for _ in expr.shape)] if expr.shape else expr[()]
        raise ValueError(f"calcml.symbolic: the function must return a scalar, it returned an "
                         f"array of shape {expr.shape}")
    if not isinstance(expr, sp.Basic):
        raise TypeError(f"calcml.symbolic: the function must return a scalar, it returned "
                        f"{type(expr).__name__}")
    return expr


def grad(f, n_args, vector=False, simplify=False):
    """Exact gradient of scalar ``f``: ``[∂f/∂x0, ..., ∂f/∂x{n-1}]`` as SymPy expressions.

    Parameters
    ----------
    f : callable
        A scalar function written with calcml's operations.
    n_args : int or sequence of sympy.Symbol
        Number of scalar arguments (or the symbols to use).
    vector : bool
        ``f`` takes one vector of ``n_args`` entries.
    simplify : bool
        Pass each derivative through ``sympy.simplify`` (slower).

    Returns
    -------
    list of sympy.Expr

    Notes
    -----
    calcml evaluates ``f`` on symbols (values only); the derivatives are SymPy's ``diff`` of
    that expression, independent of calcml's differentiation rules.

    Examples
    --------
    >>> import calcml as cm
    >>> cm.symbolic.grad(lambda x, y: cm.sin(x) * cm.exp(y), 2)
    [exp(x1)*cos(x0), exp(x1)*sin(x0)]
    """
    expr, syms = _run(f, n_args, vector)
    expr = _scalar(expr)
    out = [sp.diff(expr, s) for s in syms]
    return [sp.simplify(e) for e in out] if simplify else out


def hessian(f, n_args, vector=False, simplify=False):
    """Exact Hessian of scalar ``f``: the ``sympy.Matrix`` of ∂²f/∂x_i∂x_j.

    Parameters are those of :func:`grad`.

    Examples
    --------
    >>> import calcml as cm
    >>> cm.symbolic.hessian(lambda x, y: x**2 * y, 2)
    Matrix([
    [2*x1, 2*x0],
    [2*x0,    0]])
    """
    expr, syms = _run(f, n_args, vector)
    expr = _scalar(expr)
    h = sp.hessian(expr, syms)
    return h.applyfunc(sp.simplify) if simplify else h


def jacobian(f, n_args, vector=False):
    """Exact Jacobian of ``f`` (scalar or 1-D output): a ``sympy.Matrix``, one row per output.

    Examples
    --------
    >>> import calcml as cm, numpy as np
    >>> cm.symbolic.jacobian(lambda v: v * v, 2, vector=True)
    Matrix([
    [2*x0,    0],
    [   0, 2*x1]])
    """
    expr, syms = _run(f, n_args, vector)
    if isinstance(expr, sp.NDimArray):
        if len(expr.shape) > 1:
            raise ValueError(f"calcml.symbolic.jacobian: output of shape {expr.shape}; "
                             f"flatten it to 1-D")
        rows = list(expr)
    else:
        rows = [_scalar(expr)]
    return sp.Matrix(rows).jacobian(syms)


# Functions that SymPy's NumPy printer lacks or maps to something inconvenient.
_NUMERIC = {
    "Heaviside": lambda x, h0=0.5: np.heaviside(x, h0),
    "DiracDelta": lambda x, *k: np.zeros_like(np.asarray(x, dtype=float)),
}


def lambdify(expr, n_args, vector=False):
    """Turn SymPy expressions into a NumPy function of the same arguments as ``f``.

    Parameters
    ----------
    expr : sympy.Expr, list of them, sympy.Matrix or sympy.Array
        What :func:`expression`, :func:`grad`, :func:`hessian` returned.
    n_args : int or sequence of sympy.Symbol
        The symbols used (the same as given there).
    vector : bool
        The function takes one vector instead of scalars.

    Returns
    -------
    callable
        Returns a float64 array shaped like ``expr`` (a scalar for a scalar).

    Examples
    --------
    >>> import calcml as cm
    >>> g = cm.symbolic.grad(lambda x, y: x * y**2, 2)
    >>> cm.symbolic.lambdify(g, 2)(3.0, 2.0)
    array([ 4., 12.])
    """
    syms = _symbols_of(n_args)
    if isinstance(expr, (sp.MatrixBase, sp.NDimArray)):
        shape = expr.shape
        items = list(sp.Array(expr).reshape(len(sp.Array(expr))))
    elif isinstance(expr, (list, tuple)):
        shape = (len(expr),)
        items = list(expr)
    else:
        shape = ()
        items = [expr]
    fn = sp.lambdify([syms] if vector else syms, items, modules=[_NUMERIC, "numpy"])

    def numeric(*values):
        vals = fn(*values)
        out = np.array([np.asarray(v, dtype=np.float64) for v in vals], dtype=np.float64)
        return out.reshape(shape) if shape else out[0]

    return numeric


def evaluate(expr, n_args, *values, vector=False):
    """Evaluate SymPy expressions at numbers: ``lambdify(expr, n_args, vector)(*values)``.

    Examples
    --------
    >>> import calcml as cm
    >>> h = cm.symbolic.hessian(lambda x, y: x**2 * y, 2)
    >>> cm.symbolic.evaluate(h, 2, 1.0, 3.0)
    array([[6., 2.],
           [2., 0.]])
    """
    return lambdify(expr, n_args, vector)(*values)

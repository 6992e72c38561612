"""Gradient checking for users: reverse mode, forward mode and finite differences compared.

:func:`check_grad` differentiates a function three ways at a point and checks that they agree,
to first and second order, the way HIPS autograd's ``check_grads`` does:

* **first order**, for every floating-point argument (every array leaf of an argument that is
  a list, tuple or dict): the derivative along random unit directions ``v`` by reverse mode
  (``<vjp(c), v>``), forward mode (``c · J v``) and central differences; and, entry by entry,
  the full gradient (all entries of a small argument, a random sample of a large one), so a
  disagreement is reported at a real index;
* **second order**: the derivative of the derivative.  Along a random direction ``v`` of one
  argument, the Hessian-vector product ``H v`` (for every argument at once) by
  forward-over-reverse (``cm.hvp``), reverse-over-reverse, reverse-over-forward and by central
  differences of the reverse-mode gradient, and ``wᵀ H v`` by forward-over-forward.

A function with a non-scalar output is projected onto a fixed random cotangent ``c``
(``s(x) = Σ c ⊙ f(x)``), so every check is about the scalar ``s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import backend
from ._core.trace import Box
from ._core.tree import flatten, unflatten
from .autodiff import grad, hvp, jvp, vjp
from .ops import sum as _sum

__all__ = ["check_grad", "GradientCheckError", "GradCheckReport", "Comparison"]


class GradientCheckError(AssertionError):
    """Raised by :func:`check_grad` when two ways of differentiating disagree.

    Attributes
    ----------
    report : GradCheckReport
        Every comparison that was made, passed or not.
    comparison : Comparison
        The disagreement the message describes (the worst one of the lowest order).
    """

    def __init__(self, message, report=None, comparison=None):
        super().__init__(message)
        self.report = report
        self.comparison = comparison


METHODS = {
    "num": "central differences",
    "rev": "reverse mode (vjp)",
    "fwd": "forward mode (jvp)",
    "num(rev)": "central differences of the reverse-mode gradient",
    "num(fwd)": "central differences of the forward-mode derivative",
    "fwd(rev)": "forward-over-reverse (hvp)",
    "rev(rev)": "reverse-over-reverse",
    "rev(fwd)": "reverse-over-forward",
    "fwd(fwd)": "forward-over-forward",
}


@dataclass
class Comparison:
    """One comparison of two ways of computing the same derivative.

    Attributes
    ----------
    label : str
        The array compared, as ``args[i]`` followed by its place in a list/dict tree,
        e.g. ``args[1]['W']``.
    argnum : int
        Position of the argument in the call ``f(*args)``.
    path : str
        Place of the array inside the argument's tree (``""`` for a plain array).
    order : int
        1 for first derivatives, 2 for second derivatives.
    methods : tuple of str
        The two methods compared (keys of :data:`METHODS`).
    kind : str
        ``"direction"`` (a directional derivative, a scalar) or ``"entries"`` (entry by entry).
    along : str or None
        Order 2: the array along which the gradient was differentiated.
    rel_error, abs_error : float
        The largest absolute difference, and the same relative to the larger of the two
        derivatives' largest entries (for a directional derivative ``Σ_i g_i v_i``, at least
        ``Σ_i |g_i v_i|``; never below ``atol / rtol``).
    index : tuple or None
        For ``"entries"``, the index of the worst entry in the array ``label``.
    values : tuple of float
        The two methods' values at the worst entry.
    passed : bool
    """

    label: str
    argnum: int
    path: str
    order: int
    methods: tuple
    kind: str
    along: str | None
    rel_error: float
    abs_error: float
    index: tuple | None
    values: tuple
    passed: bool

    def where(self):
        """``at args[0]['W'][2, 1]`` (the worst entry), or ``along a random direction in ...``."""
        if self.index is None:
            return f"along a random direction in {self.along or self.label}"
        return "at " + self.label + "[" + ", ".join(str(int(i)) for i in self.index) + "]"

    def describe(self):
        """A line saying what disagreed, where and by how much."""
        a, b = self.methods
        what = f"{self.label}, order {self.order}"
        if self.order == 2:
            what += f" (gradient w.r.t. {self.label} differentiated along {self.along})"
        return (f"{what}: {METHODS[a]} = {self.values[0]:.10g} vs {METHODS[b]} = "
                f"{self.values[1]:.10g} {self.where()} (abs. error {self.abs_error:.3g}, "
                f"rel. error {self.rel_error:.3g})")


@dataclass
class GradCheckReport:
    """What :func:`check_grad` compared and how well it agreed.

    Attributes
    ----------
    passed : bool
    max_rel_error : float
        The largest relative error over all comparisons.
    errors : dict
        ``{label: {order: max relative error}}`` for each array checked (``label`` as in
        :class:`Comparison`).
    comparisons : list of Comparison
    checked : list of str
        The arrays differentiated, as labels.
    skipped : list of str
        Arguments held constant (not floating point).
    order : int
    modes : tuple of str
    eps, rtol, atol : float
        The step and the tolerances used.
    fd_dtype : str
        The precision in which the finite differences were taken.
    """

    passed: bool
    max_rel_error: float
    errors: dict
    comparisons: list = field(repr=False)
    checked: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    order: int = 2
    modes: tuple = ("rev", "fwd")
    eps: float = 0.0
    rtol: float = 0.0
    atol: float = 0.0
    fd_dtype: str = "float64"

    @property
    def failures(self):
        """The comparisons that failed: lowest order first, entry-by-entry comparisons (which
        locate the error) before directional ones, then worst first."""
        bad = [c for c in self.comparisons if not c.passed]
        return sorted(bad, key=lambda c: (c.order, c.kind != "entries", -_key(c.rel_error)))

    @property
    def worst(self):
        """The comparison with the largest relative error (None if nothing was compared)."""
        if not self.comparisons:
            return None
        return max(self.comparisons, key=lambda c: _key(c.rel_error))

    def error(self, argnum, order=None):
        """The largest relative error for argument ``argnum`` (at ``order``, or any order)."""
        errs = [c.rel_error for c in self.comparisons
                if c.argnum == argnum and (order is None or c.order == order)]
        if not errs:
            raise KeyError(f"check_grad report: no comparison for argument {argnum}"
                           + ("" if order is None else f" at order {order}"))
        return max(errs, key=_key)

    def __str__(self):
        head = "passed" if self.passed else "FAILED"
        lines = [
            f"check_grad {head}: max relative error {self.max_rel_error:.3g} "
            f"(rtol {self.rtol:.3g}, atol {self.atol:.3g}, eps {self.eps:.3g}, differences in "
            f"{self.fd_dtype}, order {self.order}, modes {', '.join(self.modes)}, "
            f"{len(self.comparisons)} comparisons)"
        ]
        width = max([len("array")] + [len(k) for k in self.errors])
        lines.append(f"  {'array':<{width}}  order  max rel. error")
        for label, per in self.errors.items():
            for order, err in sorted(per.items()):
                lines.append(f"  {label:<{width}}  {order:>5}  {err:.3g}")
        if self.skipped:
            lines.append("  held constant: " + ", ".join(self.skipped))
        for c in self.failures[:10]:
            lines.append("  FAILED " + c.describe())
        return "\n".join(lines)


def _key(e):
    return math.inf if math.isnan(e) else e


# --- pytrees: where each leaf sits -----------------------------------------------------------

def _paths(td):
    """The path of every leaf of the tree ``td``, in flatten order, as ``"['W'][0]"``."""
    out = []
    stack = [(td, "")]
    while stack:
        node, path = stack.pop()
        kind = node.kind
        if kind == "leaf":
            out.append(path)
            continue
        if kind == "dict":
            keys = [f"[{k!r}]" for k in node.meta]
        elif kind == "namedtuple":
            keys = [f".{n}" for n in node.meta._fields]
        else:
            keys = [f"[{i}]" for i in range(len(node.children))]
        for k, c in reversed(list(zip(keys, node.children, strict=True))):
            stack.append((c, path + k))
    return out


def _raw(x):
    while isinstance(x, Box):
        x = x._value
    return x


def _np64(x):
    """Any value as a float64 NumPy array (off the GPU)."""
    return np.asarray(backend.to_numpy(_raw(x)), dtype=np.float64)


def _floating(leaf):
    """``leaf`` as a floating-point array to differentiate, or None for a constant."""
    if isinstance(leaf, bool) or isinstance(leaf, (int, np.integer)):
        return None
    if isinstance(leaf, float):
        return np.asarray(leaf, dtype=np.float64)
    dt = getattr(leaf, "dtype", None)
    if dt is None or not hasattr(leaf, "shape"):
        return None
    kind = np.dtype(dt).kind
    if kind == "c":
        raise TypeError("calcml.check_grad: complex arguments are not supported")
    if kind != "f":
        return None
    if isinstance(leaf, np.generic):
        return np.asarray(leaf)
    return leaf


class _Leaf:
    """An array that is differentiated: where it sits among the arguments, and its value."""

    __slots__ = ("argnum", "j", "path", "label", "x", "dtype", "shape", "size")

    def __init__(self, argnum, j, path, x):
        self.argnum, self.j, self.path, self.x = argnum, j, path, x
        self.label = f"args[{argnum}]{path}"
        self.dtype = np.dtype(x.dtype)
        self.shape = tuple(x.shape)
        self.size = math.prod(self.shape)


# --- defaults -------------------------------------------------------------------------------

#: Rounding noise of a central difference, in units of ``ε |s| / eps``: the two values of ``s``
#: are each taken to be accurate to 8 ulps of ``|s|`` (a computation of several operations in
#: float32 is rarely better; 2 ulps, one per value, gave false alarms on correct float32 code).
_ROUNDING_ULPS = 16.0


def _defaults(low, fd64):
    """(rtol, atol) for the least precise dtype among the arguments.

    With float32 differences, ``rtol`` is 3e-3: the rounding noise is covered by ``atol'``,
    and a derivative wrong by 1e-2 relative must still fail (with rtol 1e-2 it did not).
    """
    if low == np.float64:
        return 1e-5, 1e-8
    if np.finfo(low).bits >= 32:
        return (1e-3, 1e-6) if fd64 else (3e-3, 1e-4)
    return 3e-2, 1e-3


def _as_tuple_modes(modes):
    if isinstance(modes, str):
        modes = (modes,)
    modes = tuple(modes)
    bad = [m for m in modes if m not in ("rev", "fwd")]
    if bad or not modes:
        raise ValueError(f"calcml.check_grad: modes must be a non-empty subset of ('rev', "
                         f"'fwd'), got {modes!r}")
    return modes


# --- the check ------------------------------------------------------------------------------

def check_grad(f, *args, eps=None, rtol=None, atol=None, order=2, modes=("rev", "fwd"),
               n_directions=2, max_entries=50, argnums=None, seed=None, rng=None,
               raise_on_failure=True):
    r"""Check the derivatives of ``f`` at ``args``: reverse mode, forward mode and central
    differences must agree, to first and (by default) second order.

    Parameters
    ----------
    f : callable
        A function written with calcml's operations, called as ``f(*args)``.  It may return a
        scalar, an array or a list/tuple/dict of arrays; a non-scalar output is projected onto
        a fixed random cotangent ``c``, so the checks are about ``s(x) = Σ c ⊙ f(x)``.
    *args
        The point.  Every floating-point array among them (also inside lists, tuples and
        dicts) is differentiated; integer and boolean arrays and Python ints are held constant.
        Python floats are treated as float64 scalars.
    eps : float, optional
        Finite-difference step.  Default 1e-6 when the differences can be taken in float64
        (float32 arguments are promoted for them when ``f`` allows it), else ``ε^(1/3)`` of the
        arguments' dtype (about 5e-3 for float32).
    rtol, atol : float, optional
        Two derivatives ``a``, ``b`` agree when ``max|a - b| <= max(atol', rtol · max(|a|, |b|))``
        over all entries compared, with ``atol' = atol`` plus, for comparisons with finite
        differences, their rounding noise ``16 ε |s| / eps`` (``ε`` of the dtype the differences
        are taken in; ``|s|`` replaced by the largest entry of the gradient at order 2).  For a
        directional derivative ``Σ_i g_i v_i`` the scale is at least ``Σ_i |g_i v_i|``, so that
        a value near 0 by cancellation is not held to a tolerance below its rounding errors.
        Defaults: rtol 1e-5, atol 1e-8 for float64 arguments; rtol 1e-3, atol 1e-6 for float32
        (3e-3, 1e-4 if the differences must be taken in float32, so that an error of 1e-2
        relative is still caught).
    order : {1, 2}
        Check first derivatives only, or also second derivatives.
    modes : tuple of {"rev", "fwd"}
        The modes of automatic differentiation to check.
    n_directions : int
        Random directions per argument and order.
    max_entries : int
        Arguments with at most this many entries have their whole gradient compared entry by
        entry; larger ones a random sample of this many entries.
    argnums : int or tuple of int, optional
        Check only these arguments (the others are held constant).  Default: every argument
        holding a floating-point array.
    seed, rng : int or numpy.random.Generator, optional
        Source of the random directions and cotangent (give one; default seed 0, so a check is
        reproducible).
    raise_on_failure : bool
        Raise :class:`GradientCheckError` on a disagreement (default), or only report it.

    Returns
    -------
    GradCheckReport
        ``max_rel_error``, the errors per argument and order, every comparison; ``str()``
        gives a readable table.

    Raises
    ------
    GradientCheckError
        When two methods disagree.  The message names the argument (its position and its place
        in a list/dict tree), the order, the methods, and the worst entry with both values.
    TypeError
        ``f`` is not callable, no argument is floating point, or ``argnums`` names one that is
        not.

    Notes
    -----
    The central difference along a unit direction ``v``,

    .. math:: \frac{s(x + \epsilon v) - s(x - \epsilon v)}{2\epsilon}
              = \nabla s(x)\cdot v + \frac{\epsilon^2}{6} D^3 s(x)[v, v, v] + O(\epsilon^4),

    has truncation error O(eps²) and rounding error about ``ε_mach |s| / eps``; eps = 1e-6 in
    float64 balances the two at roughly 1e-10 relative.  It is compared with reverse mode,
    ``<c^T J, v>`` (one VJP gives the whole gradient) and forward mode, ``c^T (J v)``.

    Second order differentiates the first derivative once more: along a random ``v`` in one
    argument, ``H v`` (for every argument) by forward-over-reverse (``cm.hvp``),
    reverse-over-reverse (the gradient of ``<∇s, v>``), reverse-over-forward (the gradient of
    the JVP) and by central differences of the reverse-mode gradient, with error O(eps²)
    again; ``wᵀ H v`` by forward-over-forward.  A rule that is right but written in raw
    NumPy (so it cannot be differentiated again) fails here.

    At a kink (``abs``, ``relu``, ``max`` near a tie) the central difference straddles two
    pieces and will disagree: check at points away from kinks.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> report = cm.check_grad(lambda x, W: cm.sum(cm.tanh(W @ x)),
    ...                        np.array([0.5, -1.0]), np.array([[1.0, 2.0], [0.3, -0.4]]))
    >>> report.passed, report.max_rel_error < 1e-6
    (True, True)
    """
    if not callable(f):
        raise TypeError(f"calcml.check_grad: f must be callable, got {type(f).__name__}")
    if order not in (1, 2):
        raise ValueError(f"calcml.check_grad: order must be 1 or 2, got {order!r}")
    modes = _as_tuple_modes(modes)
    if int(n_directions) < 0:
        raise ValueError("calcml.check_grad: n_directions must be >= 0")
    if seed is not None and rng is not None:
        raise ValueError("calcml.check_grad: give seed or rng, not both")
    gen = backend.rng(rng if rng is not None else (0 if seed is None else seed))
    checker = _Checker(f, args, argnums, modes, gen, int(n_directions), int(max_entries))
    checker.setup(eps, rtol, atol)
    comps = checker.order1()
    if order == 2:
        comps += checker.order2()
    return checker.finish(comps, order, raise_on_failure)


class _Checker:
    def __init__(self, f, args, argnums, modes, gen, n_directions, max_entries):
        self.f, self.modes, self.rng = f, modes, gen
        self.n_dir, self.max_entries = n_directions, max_entries
        self.flat = [flatten(a) for a in args]
        nargs = len(args)
        if argnums is None:
            wanted = None
        else:
            nums = (argnums,) if isinstance(argnums, (int, np.integer)) else tuple(argnums)
            for a in nums:
                if not -nargs <= int(a) < nargs:
                    raise ValueError(f"calcml.check_grad: argnums={argnums!r} but f is called "
                                     f"with {nargs} argument(s)")
            wanted = {int(a) % nargs for a in nums}
        self.leaves, self.skipped = [], []
        for i, (leaves, td) in enumerate(self.flat):
            paths = _paths(td)
            found = []
            for j, (leaf, p) in enumerate(zip(leaves, paths, strict=True)):
                x = _floating(leaf)
                if x is not None and (wanted is None or i in wanted):
                    found.append(_Leaf(i, j, p, x))
            if found:
                self.leaves += found
            else:
                kinds = sorted({_kind(v) for v in leaves}) or ["no array"]
                if wanted is not None and i in wanted:
                    raise TypeError(
                        f"calcml.check_grad: argument {i} holds {', '.join(kinds)}, nothing "
                        f"floating point to differentiate; convert it with "
                        f".astype(np.float64) (or np.float32)")
                self.skipped.append(f"args[{i}] ({', '.join(kinds)})")
        empty = [lf for lf in self.leaves if lf.size == 0]
        self.leaves = [lf for lf in self.leaves if lf.size > 0]
        self.skipped += [f"{lf.label} ({lf.dtype} {lf.shape}, empty)" for lf in empty]
        if not self.leaves:
            if empty:
                desc = ", ".join(f"{lf.label}: {lf.dtype} of shape {lf.shape}" for lf in empty)
                raise ValueError(
                    f"calcml.check_grad: every floating-point argument to differentiate is "
                    f"empty ({desc}); there is no derivative to compare")
            desc = ", ".join(f"args[{i}]: {', '.join(sorted({_kind(v) for v in lv})) or '-'}"
                             for i, (lv, _) in enumerate(self.flat)) or "no arguments"
            raise TypeError(
                f"calcml.check_grad: no floating-point argument to differentiate ({desc}); "
                f"derivatives need float arrays, e.g. np.array([1, 2], dtype=np.float64)")
        self.x = [lf.x for lf in self.leaves]

    # -- calling f on new values of the differentiated leaves --

    def call(self, vals):
        new = [list(lv) for lv, _ in self.flat]
        for lf, v in zip(self.leaves, vals, strict=True):
            new[lf.argnum][lf.j] = v
        return self.f(*[unflatten(td, lv) for (_, td), lv in zip(self.flat, new, strict=True)])

    def call_star(self, *vals):
        return self.call(vals)

    def call_one(self, a, vals):
        """f as a function of leaf ``a`` alone, the others fixed at ``vals``."""
        def fa(xa):
            vs = list(vals)
            vs[a] = xa
            return self.call(vs)
        return fa

    def proj_np(self, out):
        """s = Σ c ⊙ out, in float64 NumPy."""
        leaves, _ = flatten(out)
        return float(sum(np.sum(c * _np64(o)) for o, c in zip(leaves, self.cot, strict=True)))

    def proj_batched(self, tans):
        """Σ c ⊙ t for each leading batch entry of the tangents ``tans``."""
        leaves, _ = flatten(tans)
        total = 0.0
        for t, c in zip(leaves, self.cot, strict=True):
            t = _np64(t)
            total = total + np.sum((c * t).reshape(t.shape[0], -1), axis=1)
        return np.asarray(total, dtype=np.float64)

    def proj_traced(self, out):
        """s = Σ c ⊙ out in calcml operations (so that it can be differentiated)."""
        leaves, _ = flatten(out)
        total = None
        for o, c in zip(leaves, self.cot, strict=True):
            term = _sum(o * self._const(c, o))
            total = term if total is None else total + term
        return total

    def _const(self, c, like):
        xp = backend.get_xp(_raw(like))
        dt = getattr(like, "dtype", np.float64)
        return xp.asarray(c, dtype=dt)

    def cot_tree(self, out):
        leaves, td = flatten(out)
        return unflatten(td, [self._const(c, o) for o, c in zip(leaves, self.cot, strict=True)])

    def rev_grads(self, vals):
        out, fn = vjp(self.call_star, *vals)
        return fn(self.cot_tree(out))

    def like(self, v, x):
        """The NumPy array ``v`` on ``x``'s backend, in ``x``'s dtype."""
        return backend.get_xp(_raw(x)).asarray(v, dtype=x.dtype)

    # -- setup: the cotangent, the precision of the differences, the tolerances --

    def setup(self, eps, rtol, atol):
        out = self.call(self.x)
        leaves, _ = flatten(out)
        if not leaves:
            raise TypeError("calcml.check_grad: f returned no array")
        self.cot = []
        for o in leaves:
            dt = getattr(o, "dtype", None)
            if dt is None and isinstance(o, float):
                dt = np.float64
            if dt is None or np.dtype(dt).kind != "f":
                raise TypeError(f"calcml.check_grad: f must return floating-point arrays, it "
                                f"returned {_kind(o)}")
            shape = tuple(getattr(o, "shape", ()))
            self.cot.append(np.ones(()) if shape == () else self.rng.normal(size=shape))
        s0 = self.proj_np(out)
        for k, o in enumerate(leaves):
            ok = np.isfinite(_np64(o))
            if not np.all(ok):
                where = "" if len(leaves) == 1 else f" (output leaf {k})"
                bad = np.unique(_np64(o)[~ok])
                raise ValueError(
                    f"calcml.check_grad: f returned non-finite values{where} at the given "
                    f"point: {int(np.sum(~ok))} of {ok.size} entries of a {_kind(o)} output of "
                    f"shape {tuple(np.shape(_np64(o)))} are {', '.join(map(str, bad))}; "
                    f"derivatives can only be checked where f is finite (arguments: "
                    f"{', '.join(f'{lf.label} {lf.dtype} {lf.shape}' for lf in self.leaves)})")
        if not np.isfinite(s0):
            raise ValueError("calcml.check_grad: f is finite at the given point but its "
                             "projection Σ c ⊙ f(x) overflows")
        low = min((lf.dtype for lf in self.leaves), key=lambda d: np.finfo(d).bits)
        self.x_fd, self.s_abs = self.x, abs(s0)
        fd64 = low == np.float64
        if not fd64:
            x64 = [v.astype(np.float64) for v in self.x]
            try:
                out64 = self.call(x64)
                ls, _ = flatten(out64)
                fd64 = all(np.dtype(getattr(o, "dtype", np.float64)) == np.float64 for o in ls)
                if fd64:
                    self.x_fd, self.s_abs = x64, abs(self.proj_np(out64))
            except Exception:
                fd64 = False
        self.fd_dtype = np.dtype(np.float64) if fd64 else np.dtype(low)
        self.eps = float(eps) if eps is not None else (
            1e-6 if fd64 else float(np.finfo(low).eps) ** (1.0 / 3.0))
        if self.eps <= 0:
            raise ValueError("calcml.check_grad: eps must be positive")
        r, a = _defaults(low, fd64)
        self.rtol = float(r if rtol is None else rtol)
        self.atol = float(a if atol is None else atol)
        self.noise = _ROUNDING_ULPS * float(np.finfo(self.fd_dtype).eps) / self.eps

    def direction(self, lf):
        v = self.rng.normal(size=lf.shape)
        n = float(np.sqrt(np.sum(v * v)))
        return v / n if n > 0 else np.ones(lf.shape)

    # -- comparisons --

    def compare(self, lf, order, pair, kind, a, b, atol_extra=0.0, index_of=None, along=None,
                terms=0.0):
        a = np.atleast_1d(np.asarray(a, dtype=np.float64)).ravel()
        b = np.atleast_1d(np.asarray(b, dtype=np.float64)).ravel()
        diff = np.abs(a - b)
        both_bad = ~np.isfinite(a) & ~np.isfinite(b) & (a == b)
        diff = np.where(both_bad, 0.0, diff)
        diff = np.where(np.isnan(diff), np.inf, diff)
        k = int(np.argmax(diff)) if diff.size else 0
        d = float(diff[k]) if diff.size else 0.0
        fin = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
        scale = float(np.max(np.abs(fin))) if fin.size else 0.0
        if np.isfinite(terms):
            scale = max(scale, float(terms))
        atol = self.atol + atol_extra
        floor = atol / self.rtol if self.rtol > 0 else 0.0
        den = max(scale, floor)
        rel = (0.0 if d == 0 else math.inf) if den == 0 else d / den
        passed = bool(d <= max(atol, self.rtol * scale))
        index = None
        if kind == "entries":
            flat_k = index_of[k] if index_of is not None else k
            index = tuple(int(i) for i in np.unravel_index(flat_k, lf.shape)) if lf.shape else ()
        return Comparison(lf.label, lf.argnum, lf.path, order, pair, kind, along, rel, d,
                          index, (float(a[k]), float(b[k])), passed)

    def _pairs(self, order, lf, kind, values, atol_num, index_of=None, along=None, terms=0.0):
        """Compare every available method with the numeric one, and rev with fwd.

        ``terms`` is, for a directional derivative ``Σ_i g_i v_i``, the size ``Σ_i |g_i v_i|``
        of its terms: the scale of the rounding errors, which a directional derivative near 0
        (its terms cancelling) does not show.
        """
        out = []
        names = list(values)
        num = names[0]
        for m in names[1:]:
            out.append(self.compare(lf, order, (m, num), kind, values[m], values[num],
                                    atol_num, index_of, along, terms))
        autos = names[1:]
        if len(autos) == 2 and order == 1:
            out.append(self.compare(lf, order, tuple(autos), kind, values[autos[0]],
                                    values[autos[1]], 0.0, index_of, along, terms))
        return out

    def order1(self):
        comps = []
        modes, eps, x = self.modes, self.eps, self.x
        g_rev = self.rev_grads(x) if "rev" in modes else None
        atol_num = self.noise * self.s_abs
        s = lambda vals: self.proj_np(self.call(vals))
        for a, lf in enumerate(self.leaves):
            xf = self.x_fd[a]
            # random directions
            for _ in range(self.n_dir):
                v = self.direction(lf)
                vals = {}
                plus, minus = list(self.x_fd), list(self.x_fd)
                plus[a] = xf + self.like(eps * v, xf)
                minus[a] = xf - self.like(eps * v, xf)
                vals["num"] = (s(plus) - s(minus)) / (2 * eps)
                terms = 0.0
                if g_rev is not None:
                    vals["rev"] = float(np.sum(_np64(g_rev[a]) * v))
                    terms = float(np.sum(np.abs(_np64(g_rev[a]) * v)))
                if "fwd" in modes:
                    _, t = jvp(self.call_one(a, x), (x[a],), (self.like(v, x[a]),))
                    vals["fwd"] = self.proj_np(t)
                comps += self._pairs(1, lf, "direction", vals, atol_num, terms=terms)
            # entry by entry
            if lf.size <= self.max_entries:
                entries = np.arange(lf.size)
            else:
                entries = np.sort(self.rng.choice(lf.size, self.max_entries, replace=False))
            vals = {}
            num = np.empty(len(entries))
            for n, k in enumerate(entries):
                e = np.zeros(lf.size)
                e[k] = eps
                e = e.reshape(lf.shape)
                plus, minus = list(self.x_fd), list(self.x_fd)
                plus[a] = xf + self.like(e, xf)
                minus[a] = xf - self.like(e, xf)
                num[n] = (s(plus) - s(minus)) / (2 * eps)
            vals["num"] = num
            if g_rev is not None:
                vals["rev"] = _np64(g_rev[a]).reshape(-1)[entries]
            if "fwd" in modes:
                basis = np.zeros((len(entries), lf.size))
                basis[np.arange(len(entries)), entries] = 1.0
                basis = self.like(basis.reshape((len(entries),) + lf.shape), x[a])
                _, t = jvp(self.call_one(a, x), (x[a],), (basis,), batched=True)
                vals["fwd"] = self.proj_batched(t)
            comps += self._pairs(1, lf, "entries", vals, atol_num, index_of=entries)
        return comps

    def order2(self):
        comps = []
        modes, eps, x = self.modes, self.eps, self.x
        m = len(self.leaves)
        everything = tuple(range(m))
        has_rev, has_fwd = "rev" in modes, "fwd" in modes
        if has_rev:
            g_fd = [_np64(g) for g in self.rev_grads(self.x_fd)]
            gmax = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in g_fd)
            atol_num = self.noise * gmax
        for a, lf in enumerate(self.leaves):
            xf = self.x_fd[a]
            for _ in range(self.n_dir):
                v = self.direction(lf)
                va = self.like(v, x[a])
                plus, minus = list(self.x_fd), list(self.x_fd)
                plus[a] = xf + self.like(eps * v, xf)
                minus[a] = xf - self.like(eps * v, xf)
                ws = [self.direction(other) for other in self.leaves]
                if has_rev:
                    gp, gm = self.rev_grads(plus), self.rev_grads(minus)
                    vecs = {"num(rev)": [(_np64(p) - _np64(q)) / (2 * eps)
                                         for p, q in zip(gp, gm, strict=True)]}
                    if has_fwd:
                        tangents = [self.like(np.zeros(o.shape), o.x) for o in self.leaves]
                        tangents[a] = va
                        r = hvp(self.proj_call, tuple(x), tuple(tangents))
                        vecs["fwd(rev)"] = [r] if m == 1 else list(r)

                    def gdot(*vals, a=a, va=va):
                        return _sum(self.rev_grads(vals)[a] * va)

                    vecs["rev(rev)"] = list(grad(gdot, argnums=everything)(*x))
                    if has_fwd:
                        def jdot(*vals, a=a, va=va):
                            _, t = jvp(self.call_one(a, vals), (vals[a],), (va,))
                            return self.proj_traced(t)

                        vecs["rev(fwd)"] = list(grad(jdot, argnums=everything)(*x))
                    for b, lb in enumerate(self.leaves):
                        per = {k: _np64(vs[b]).reshape(-1) for k, vs in vecs.items()}
                        comps += self._pairs(2, lb, "entries", per, atol_num, along=lf.label)
                        if "fwd(rev)" in per:
                            comps.append(self.compare(lb, 2, ("fwd(rev)", "rev(rev)"), "entries",
                                                      per["fwd(rev)"], per["rev(rev)"],
                                                      along=lf.label))
                if has_fwd:
                    wl = [self.like(w, o.x) for w, o in zip(ws, self.leaves, strict=True)]

                    def jw(xa, a=a, wl=wl):
                        vals = list(x)
                        vals[a] = xa
                        _, t = jvp(self.call_star, tuple(vals), tuple(wl))
                        return self.proj_traced(t)

                    _, ff = jvp(jw, (x[a],), (va,))
                    scal, terms = {}, 0.0
                    if has_rev:
                        scal["num(rev)"] = sum(float(np.sum(w * n))
                                               for w, n in zip(ws, vecs["num(rev)"], strict=True))
                        terms = sum(float(np.sum(np.abs(w * n)))
                                    for w, n in zip(ws, vecs["num(rev)"], strict=True))
                        an = atol_num
                    else:
                        def jw_np(vals, wl=wl):
                            wf = [self.like(_np64(w), o) for w, o in zip(wl, vals, strict=True)]
                            _, t = jvp(self.call_star, tuple(vals), tuple(wf))
                            return self.proj_np(t)

                        scal["num(fwd)"] = (jw_np(plus) - jw_np(minus)) / (2 * eps)
                        an = self.noise * abs(jw_np(self.x_fd))
                    scal["fwd(fwd)"] = float(_np64(ff))
                    comps += self._pairs(2, lf, "direction", scal, an, along=lf.label,
                                         terms=terms)
        return comps

    def proj_call(self, *vals):
        return self.proj_traced(self.call(vals))

    # -- the report --

    def finish(self, comps, order, raise_on_failure):
        errors = {}
        for c in comps:
            per = errors.setdefault(c.label, {})
            per[c.order] = max(per.get(c.order, 0.0), c.rel_error, key=_key)
        max_rel = max((c.rel_error for c in comps), key=_key, default=0.0)
        report = GradCheckReport(
            passed=all(c.passed for c in comps), max_rel_error=max_rel, errors=errors,
            comparisons=comps, checked=[lf.label for lf in self.leaves], skipped=self.skipped,
            order=order, modes=self.modes, eps=self.eps, rtol=self.rtol, atol=self.atol,
            fd_dtype=str(self.fd_dtype))
        if report.passed or not raise_on_failure:
            return report
        fails = report.failures
        c = fails[0]
        lf = next(lf for lf in self.leaves if lf.label == c.label)
        a, b = c.methods
        if c.order == 1:
            what = "first derivatives"
        else:
            what = f"second derivatives (the gradient w.r.t. {c.label} differentiated along " \
                   f"{c.along})"
        lines = [
            f"calcml.check_grad: {what} disagree for argument {c.argnum}"
            + (f" at {c.path}" if c.path else "")
            + f" ({c.label}, {lf.dtype} {lf.shape}), order {c.order}:",
            f"  {METHODS[a]} vs {METHODS[b]}, "
            + ("entry by entry" if c.kind == "entries" else "along a random direction") + ":",
            ("  worst entry " if c.kind == "entries" else "  ")
            + f"{c.where()}: {METHODS[a]} = {c.values[0]:.10g}, "
            f"{METHODS[b]} = {c.values[1]:.10g}",
            f"  abs. error {c.abs_error:.3g}, rel. error {c.rel_error:.3g} > rtol {self.rtol:.3g} "
            f"(atol {self.atol:.3g}, eps {self.eps:.3g}, differences in {self.fd_dtype})",
        ]
        if len(fails) > 1:
            lines.append(f"  {len(fails) - 1} other comparison(s) failed too, e.g.:")
            for other in fails[1:6]:
                lines.append("    " + other.describe())
        raise GradientCheckError("\n".join(lines), report, c)


def _kind(v):
    dt = getattr(v, "dtype", None)
    if dt is not None:
        return str(dt)
    return type(v).__name__

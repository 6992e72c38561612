"""The one registry of primitives and public operations.

A :class:`Primitive` holds, side by side, its NumPy implementation, one reverse rule (VJP) and
one forward rule (JVP) per argument.  Rules have the signatures::

    vjp_i(g, out, *vals, **params) -> contribution to d(loss)/d(vals[i]), shaped like out
                                      or broadcastable down to vals[i] (the backward pass
                                      sums it to vals[i].shape in one place)
    jvp_i(t, out, *vals, **params) -> contribution to the output tangent

``vjps=None`` marks a primitive with no derivative at all (``sign``): its result is never
boxed.  ``None`` in place of one rule marks a non-differentiable argument (an integer index,
a boolean condition).  Rules are written in calcml operations, never raw NumPy, so that they can be
differentiated again.

Tangents may carry leading *batch* axes (forward mode with many tangents at once).  For an
``elementwise`` primitive the forward trace aligns a batched tangent by inserting unit axes, so
the unbatched rule broadcasts correctly; every other primitive's JVP rule treats the leading
axes of ``t`` beyond ``vals[i].ndim`` as batch axes itself (axes are kept negative for that).

:class:`OpInfo` records a *public* operation, primitive or composite, with the sample inputs
its tests use; the registry-driven test walks :data:`OPS` and checks every entry in both modes
to second order, so an operation is covered the moment it is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Primitive", "OpInfo", "Sample", "PRIMITIVES", "OPS", "defprim", "register"]

PRIMITIVES: dict[str, Primitive] = {}
OPS: dict[str, OpInfo] = {}


class Primitive:
    """An operation the engine differentiates directly (see module docstring)."""

    __slots__ = ("name", "impl", "vjps", "jvps", "jvp_joint", "vjp_joint", "elementwise",
                 "broadcasts", "impl_saving")

    def __init__(self, name, impl, vjps, jvps, jvp_joint=None, elementwise=False,
                 broadcasts=False, impl_saving=None, vjp_joint=None):
        self.name = name
        self.impl = impl
        # ``impl_saving(*vals, **params) -> (out, saved)``: the implementation, also handing
        # back intermediates of the forward computation that the reverse rules can reuse.
        # A trace that records a node over plain arrays (first order) calls it and keeps
        # ``saved`` in the node's params as ``_saved``; every rule must also work without it
        # (higher order, forward mode, a direct call), recomputing in calcml operations.
        self.impl_saving = impl_saving
        self.vjps = vjps
        self.jvps = jvps
        self.jvp_joint = jvp_joint
        # ``vjp_joint(g, out, vals, params, wanted) -> [cotangent of vals[i] for i in wanted]``:
        # the reverse rules of every argument in one call, for a primitive whose argument
        # cotangents share most of their work (a stack of layers: the cotangent of each
        # layer's weights needs those of the layers after it).  The backward pass uses it in
        # place of ``vjps`` when present; ``vjps`` must still give each argument's rule.
        self.vjp_joint = vjp_joint
        self.elementwise = elementwise
        # True when a rule may return a value of a broadcast shape (several array arguments
        # broadcast together, or batch axes of matmul): only then do the passes compare
        # shapes, to sum a gradient down or broadcast a tangent up.
        self.broadcasts = broadcasts

    def __repr__(self):
        return f"<calcml primitive {self.name}>"


class _EveryArg(dict):
    """Rules of a variadic primitive: one function ``rule(i, g, out, vals, params)``, seen as
    the sequence of per-argument rules ``self[i](g, out, *vals, **params)`` (each made on
    first use and kept: the traces look them up on every call)."""

    __slots__ = ("rule",)

    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def __missing__(self, i):
        rule = self.rule
        f = self[i] = lambda *a, **params: rule(i, a[0], a[1], a[2:], params)
        return f


def defprim(name, impl, vjps=None, jvps=None, *, vjp_every=None, jvp_every=None,
            jvp_joint=None, elementwise=False, broadcasts=None, impl_saving=None,
            vjp_joint=None):
    """Create and register a primitive.

    ``vjps``/``jvps`` are tuples with one rule per argument; a variadic primitive gives
    ``vjp_every``/``jvp_every`` instead, called as ``rule(i, g, out, vals, params)``.
    ``jvp_joint(tangents, out, vals, params)`` may replace the per-argument JVPs when the
    output tangent is cheaper to form all at once; ``vjp_joint(g, out, vals, params, wanted)``
    likewise replaces the per-argument VJPs in the backward pass.  ``impl_saving`` (see
    :class:`Primitive`) lets the reverse rules reuse what the forward pass computed.
    """
    if name in PRIMITIVES:
        raise ValueError(f"calcml: primitive {name!r} is registered twice")
    if broadcasts is None:  # several arguments to an elementwise op, or any variadic op
        nargs = len(vjps) if isinstance(vjps, tuple) else len(jvps or ()) or 1
        broadcasts = vjp_every is not None or (elementwise and nargs > 1)
    if vjp_every is not None:
        vjps = _EveryArg(vjp_every)
    if jvp_every is not None:
        jvps = _EveryArg(jvp_every)
    prim = Primitive(name, impl, vjps, jvps, jvp_joint, elementwise, broadcasts, impl_saving,
                     vjp_joint)
    PRIMITIVES[name] = prim
    return prim


@dataclass
class Sample:
    """One test input of an operation: ``fn(*args, **kwargs)``, differentiated w.r.t. ``argnums``.

    ``args`` holds float64 arrays; the tests cast them to the dtype under test.
    """

    args: tuple
    kwargs: dict = field(default_factory=dict)
    argnums: tuple = (0,)
    smooth: bool = True  # False: only first order is checked (kinks at sample points are avoided)


@dataclass
class OpInfo:
    """A public operation: its function, its sample inputs and whether it is a primitive."""

    name: str
    fn: Callable
    samples: Callable  # rng -> list[Sample]
    primitive: bool = True
    public: bool = True  # False: an operator (``+``, ``@``, indexing) or an internal helper


def register(name, fn, samples, primitive=True, public=True):
    """Record the operation ``name`` (``cm.<name>`` when public) with its test samples."""
    if name in OPS:
        raise ValueError(f"calcml: operation {name!r} is registered twice")
    OPS[name] = OpInfo(name, fn, samples, primitive, public)
    return fn

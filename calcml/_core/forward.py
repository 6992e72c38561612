"""Forward mode: each value carries its tangent; the tangent is computed eagerly, no tape.

A tangent may carry leading batch axes (``batch_shape`` of the trace), so that a forward-mode
Jacobian or Hessian pushes all basis vectors through in one pass.  ``None`` stands for a zero
tangent, which costs nothing.  The output tangent is broadcast, in one place, to
``batch_shape + out.shape`` when a rule's result is narrower (an argument that was broadcast).
"""

from __future__ import annotations

from .trace import Box, bind, op_error

_new = object.__new__

__all__ = ["ForwardTrace", "ForwardBox"]

# Installed by calcml.ops at import time.
_add = None
_reshape = None
_broadcast_to = None


_GENERIC = object()  # "take the general path" (a sentinel no primitive returns)


class ForwardBox(Box):
    """A value followed by a forward-mode trace, with its tangent."""

    __slots__ = ("_tangent",)

    def __init__(self, value, trace, tangent):
        self._value = value
        self._trace = trace
        self._tangent = tangent


def _shape(v):
    return getattr(v, "shape", ())


class ForwardTrace:
    """A forward-mode trace whose tangents have leading axes ``batch_shape`` (maybe ``()``)."""

    __slots__ = ("level", "batch_shape")

    def __init__(self, level, batch_shape=()):
        self.level = level
        self.batch_shape = tuple(batch_shape)

    def process(self, prim, args, params):
        if len(args) == 1:  # the common case spelled out: one box of this trace
            a = args[0]
            v = a._value
            if isinstance(v, Box):
                out = bind(prim, (v,), params)
            else:
                try:
                    out = prim.impl(v, **params)
                except (IndexError, ValueError, TypeError) as exc:
                    raise op_error(prim.name, (v,), exc) from None
            jvps = prim.jvps
            if jvps is None:
                return out
            if prim.jvp_joint is not None:
                tout = prim.jvp_joint([a._tangent], out, [v], params)
            else:
                rule = jvps[0]
                if rule is None:
                    return out
                t = a._tangent
                if prim.broadcasts and self.batch_shape:  # clip: bounds may widen the output
                    xs, os = _shape(v), _shape(out)
                    if len(xs) < len(os):  # put the batch axes in front of the new ones
                        t = _reshape(t, self.batch_shape + (1,) * (len(os) - len(xs)) + xs)
                tout = rule(t, out, v, **params)  # elementwise: same shape as v (or out)
            if tout is None:
                return out
            b = _new(ForwardBox)
            b._value = out
            b._trace = self
            b._tangent = tout
            return b
        if len(args) == 2 and not self.batch_shape:
            out = self._process2(prim, args, params)
            if out is not _GENERIC:
                return out
        vals = list(args)
        tans = [None] * len(args)
        lower = False
        i = 0
        for a in args:
            if isinstance(a, Box):
                if a._trace is self:
                    v = vals[i] = a._value
                    tans[i] = a._tangent
                    if isinstance(v, Box):
                        lower = True
                else:
                    lower = True
            i += 1
        if lower:
            out = bind(prim, vals, params)
        else:
            try:
                out = prim.impl(*vals, **params)
            except (IndexError, ValueError, TypeError) as exc:
                raise op_error(prim.name, vals, exc) from None
        if prim.jvps is None:
            return out
        bshape = self.batch_shape
        if prim.jvp_joint is not None:
            tout = prim.jvp_joint(tans, out, vals, params)
        else:
            tout = None
            jvps = prim.jvps
            i = 0
            for t in tans:
                if t is not None:
                    rule = jvps[i]
                    if rule is not None:
                        if bshape and prim.elementwise:
                            xs, os = _shape(vals[i]), _shape(out)
                            if len(xs) < len(os):
                                t = _reshape(t, bshape + (1,) * (len(os) - len(xs)) + xs)
                        ti = rule(t, out, *vals, **params)
                        tout = ti if tout is None else _add(tout, ti)
                i += 1
        if tout is None:
            return out
        # Only an elementwise rule can return a narrower tangent (an argument that was
        # broadcast); every other rule gives batch_shape + out.shape by construction.
        if prim.elementwise and (prim.broadcasts or bshape):
            want = bshape + _shape(out)
            if _shape(tout) != want:
                tout = _broadcast_to(tout, want)
        b = _new(ForwardBox)
        b._value = out
        b._trace = self
        b._tangent = tout
        return b

    def _process2(self, prim, args, params):
        """Two arguments, no batch axes, no lower-level box: the common case spelled out.
        Returns ``_GENERIC`` when the general path must handle the call."""
        a, c = args
        ta = tc = None
        if isinstance(a, Box):
            va = a._value
            if a._trace is not self or isinstance(va, Box):
                return _GENERIC
            ta = a._tangent
        else:
            va = a
        if isinstance(c, Box):
            vc = c._value
            if c._trace is not self or isinstance(vc, Box):
                return _GENERIC
            tc = c._tangent
        else:
            vc = c
        try:
            out = prim.impl(va, vc, **params)
        except (IndexError, ValueError, TypeError) as exc:
            raise op_error(prim.name, (va, vc), exc) from None
        jvps = prim.jvps
        if jvps is None:
            return out
        if prim.jvp_joint is not None:
            tout = prim.jvp_joint([ta, tc], out, [va, vc], params)
        else:
            tout = None
            if ta is not None and jvps[0] is not None:
                tout = jvps[0](ta, out, va, vc, **params)
            if tc is not None and jvps[1] is not None:
                ti = jvps[1](tc, out, va, vc, **params)
                tout = ti if tout is None else _add(tout, ti)
        if tout is None:
            return out
        if prim.elementwise and prim.broadcasts:  # an argument may have been broadcast
            want = _shape(out)
            if _shape(tout) != want:
                tout = _broadcast_to(tout, want)
        b = _new(ForwardBox)
        b._value = out
        b._trace = self
        b._tangent = tout
        return b


"""Boxes, traces and trace levels: what makes ``grad(grad(f))`` correct.

Every transform call (``grad``, ``jvp``, ...) opens a *trace* with a fresh *level*, a number
larger than that of every trace opened before it, so an inner transform always has a higher
level than the transforms around it.  Values that a trace follows are wrapped in a *box* that
carries the trace.  Binding a primitive to its arguments finds the highest-level trace among
them and lets that trace process the call: it unboxes its own boxes, binds the primitive again
to the unboxed values (which may still be boxes of lower levels, so the outer traces see the
computation too), and wraps the result.  When no argument is boxed, the primitive's NumPy
implementation runs directly.

Because a trace only ever unwraps its *own* boxes, a value captured from an outer transform is
never mistaken for the inner one's variable ("perturbation confusion").

Three kinds of trace exist:

* ``ReverseTrace`` records a node per primitive call (``reverse.py`` walks them backwards);
* ``ForwardTrace`` carries a tangent beside each value, computing it eagerly, with no tape
  (``forward.py``); tangents may carry leading batch axes;
* the single ``TENSOR_TRACE`` at level 0 is the PyTorch-style eager tape behind ``Tensor``.

A node is a plain tuple ``(seq, prim, vals, params, out, parents)``; ``seq`` *decreases* with
every node made (0, -1, -2, ...), so a later node compares smaller: ascending order is a
reverse topological order, and a min-heap of nodes pops children before their parents.
``parents`` is a tuple of ``(argument index, parent node)``.  A leaf node has ``prim``
``None`` and, in ``vals``, a one-element list that accumulates the leaf's gradient.  Nodes
never point back at boxes, so a graph is freed by reference counting as soon as its last box
goes.
"""

from __future__ import annotations

import itertools

__all__ = ["Box", "bind", "bind2", "new_level", "new_seq", "leaf_node",
           "unbox_all", "describe", "op_error"]

_levels = itertools.count(1)
new_level = _levels.__next__
_seq = itertools.count(0, -1)
new_seq = _seq.__next__


class Box:
    """A value followed by a trace.  Array behaviour is attached in ``calcml.ops.methods``."""

    __slots__ = ("_value", "_trace")


def leaf_node():
    """A fresh leaf node: nothing upstream, a slot for its accumulated gradient."""
    return (new_seq(), None, [None], None, None, ())


def bind(prim, args, params):
    """Apply ``prim`` to ``args``: its implementation, or the highest-level trace among them."""
    if len(args) == 3:  # linear, where, clip: spelled out (one frame, no loop)
        a, b, c = args
        top = a._trace if isinstance(a, Box) else None
        if isinstance(b, Box) and (top is None or b._trace.level > top.level):
            top = b._trace
        if isinstance(c, Box) and (top is None or c._trace.level > top.level):
            top = c._trace
        if top is not None:
            return top.process(prim, args, params)
        try:
            return prim.impl(a, b, c, **params)
        except (IndexError, ValueError, TypeError) as exc:
            raise op_error(prim.name, args, exc) from None
    top = None
    for a in args:
        if isinstance(a, Box):
            t = a._trace
            if top is None or t.level > top.level:
                top = t
    if top is not None:
        return top.process(prim, args, params)
    try:
        return prim.impl(*args, **params)
    except (IndexError, ValueError, TypeError) as exc:
        raise op_error(prim.name, args, exc) from None


def bind2(prim, x, y, params):
    """``bind`` for two arguments, at least one of them a box."""
    if isinstance(x, Box):
        t = x._trace
        if isinstance(y, Box) and y._trace.level > t.level:
            t = y._trace
    else:
        t = y._trace
    return t.process(prim, (x, y), params)


def describe(args):
    """``float64 (3, 4), float32 (5,)``: the arguments as an error message names them."""
    parts = []
    for a in args:
        a = unbox_all(a)
        if hasattr(a, "shape") and hasattr(a, "dtype"):
            parts.append(f"{a.dtype} {tuple(a.shape)}")
        elif isinstance(a, (list, tuple)):
            parts.append("[" + describe(a) + "]")
        else:
            parts.append(type(a).__name__)
    return ", ".join(parts)


def op_error(name, args, exc):
    """A clear error for a failed operation: its name, the shapes and dtypes, NumPy's reason.

    The error keeps its kind (IndexError, ValueError, TypeError) so callers can catch it as
    they would NumPy's.
    """
    msg = str(exc)
    if msg.startswith("calcml."):
        return exc
    text = f"calcml.{name}: cannot apply to arguments ({describe(args)}): {msg}"
    try:  # keep the exact kind (NumPy's AxisError is both a ValueError and an IndexError)
        return type(exc)(text)
    except Exception:  # a kind whose constructor wants more than a message
        kind = next((k for k in (IndexError, ValueError, TypeError) if isinstance(exc, k)),
                    ValueError)
        return kind(text)


def unbox_all(x):
    """Strip every box, at every level, from ``x``: the plain array underneath."""
    while isinstance(x, Box):
        x = x._value
    return x

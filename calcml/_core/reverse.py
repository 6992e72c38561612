"""Reverse mode: record a node per primitive call, then walk the nodes backwards.

The backward pass keeps the nodes that have received a cotangent in a min-heap ordered by
their creation number, which decreases as nodes are made (``trace.py``): a parent is always
made before its children, so the heap pops every node after all of its children, with its
cotangent complete.  Popping a node pushes its cotangent through its VJP rules to its parents;
a parent enters the heap when its first contribution arrives.  No recursion (a 100,000-op
chain is fine), and no separate sort of the whole graph: a node no gradient reaches is never
visited.  Two things happen here and nowhere else:

* **unbroadcasting**: a rule may return a gradient shaped like the (broadcast) output; it is
  summed down to the input's shape with ``sum_to``;
* **accumulation**: gradients reaching a node along several paths are added.

Both use calcml operations, so when the cotangent or the saved values are boxes of an outer
trace the backward pass is itself differentiated.
"""

from __future__ import annotations

from heapq import heappop, heappush
from operator import itemgetter

from .trace import Box, bind, new_seq, op_error

_new = object.__new__

__all__ = ["ReverseTrace", "ReverseBox", "backward_pass", "toposort"]

# Installed by calcml.ops at import time (the engine knows no NumPy semantics of its own).
_add = None
_sum_to = None

_seq_of = itemgetter(0)


class ReverseBox(Box):
    """A value followed by a reverse-mode trace, with the node that produced it."""

    __slots__ = ("_node",)

    def __init__(self, value, trace, node):
        self._value = value
        self._trace = trace
        self._node = node


class ReverseTrace:
    """A reverse-mode trace: records a node for each primitive applied to its boxes."""

    __slots__ = ("level",)

    def __init__(self, level):
        self.level = level

    def process(self, prim, args, params):
        if len(args) == 1:  # the per-op hot path, spelled out: one box of this trace
            a = args[0]
            v = a._value
            if isinstance(v, Box):  # a lower trace's box: that trace computes the value
                out = v._trace.process(prim, (v,), params)
            else:
                try:
                    out = prim.impl(v, **params)
                except (IndexError, ValueError, TypeError) as exc:
                    raise op_error(prim.name, (v,), exc) from None
            vjps = prim.vjps
            if vjps is None or vjps[0] is None:
                return out
            b = _new(ReverseBox)  # no __init__ frame
            b._value = out
            b._trace = self
            b._node = (new_seq(), prim, (v,), params, out, ((0, a._node),))
            return b
        if len(args) == 2:  # and for two arguments when each box belongs to this trace
            a, c = args
            pa = isinstance(a, Box)
            pc = isinstance(c, Box)
            va = a._value if pa else a
            vc = c._value if pc else c
            if (not pa or a._trace is self) and (not pc or c._trace is self):
                if isinstance(va, Box) or isinstance(vc, Box):  # lower traces see it next
                    out = bind(prim, (va, vc), params)
                elif prim.impl_saving is not None and prim.vjps is not None:
                    try:
                        out, saved = prim.impl_saving(va, vc, **params)
                    except (IndexError, ValueError, TypeError) as exc:
                        raise op_error(prim.name, (va, vc), exc) from None
                    params = {**params, "_saved": saved}  # see Primitive.impl_saving
                else:
                    try:
                        out = prim.impl(va, vc, **params)
                    except (IndexError, ValueError, TypeError) as exc:
                        raise op_error(prim.name, (va, vc), exc) from None
                vjps = prim.vjps
                if vjps is None:
                    return out
                if pa and vjps[0] is not None:
                    if pc and vjps[1] is not None:
                        parents = ((0, a._node), (1, c._node))
                    else:
                        parents = ((0, a._node),)
                elif pc and vjps[1] is not None:
                    parents = ((1, c._node),)
                else:
                    return out
                b = _new(ReverseBox)
                b._value = out
                b._trace = self
                b._node = (new_seq(), prim, (va, vc), params, out, parents)
                return b
        vals = list(args)
        parents = []
        vjps = prim.vjps
        lower = False  # does a lower-level box remain among the values?
        i = 0
        for a in args:
            if isinstance(a, Box):
                if a._trace is self:
                    v = vals[i] = a._value
                    if isinstance(v, Box):
                        lower = True
                    if vjps is not None and vjps[i] is not None:
                        parents.append((i, a._node))
                else:
                    lower = True
            i += 1
        if lower:
            out = bind(prim, vals, params)
        else:
            try:
                if prim.impl_saving is None or not parents:
                    out = prim.impl(*vals, **params)
                else:
                    out, saved = prim.impl_saving(*vals, **params)
                    params = {**params, "_saved": saved}  # see Primitive.impl_saving
            except (IndexError, ValueError, TypeError) as exc:
                raise op_error(prim.name, vals, exc) from None
        if not parents:
            return out
        b = _new(ReverseBox)
        b._value = out
        b._trace = self
        b._node = (new_seq(), prim, vals, params, out, parents)
        return b


def toposort(root):
    """Nodes reachable from ``root``, children before parents."""
    seen = {root[0]}
    stack = [root]
    nodes = []
    pop, push, add_seen = stack.pop, stack.append, seen.add
    while stack:
        n = pop()
        nodes.append(n)
        for _, p in n[5]:
            s = p[0]
            if s not in seen:
                add_seen(s)
                push(p)
    nodes.sort(key=_seq_of)  # seqs decrease with creation: ascending = children first
    return nodes


def _shape(v):
    return getattr(v, "shape", ())


def backward_pass(root, seed):
    """Propagate ``seed`` (d loss / d root output) to the leaves above ``root``.

    Returns ``{leaf seq: (leaf node, gradient)}`` for every leaf that the output depends on.

    When no other node holds a cotangent and a node hands its cotangent to exactly one parent
    that had none yet (a chain, the usual case in a layer stack), that parent goes next
    without a heap push and pop: nothing else holds a cotangent, so no unvisited child of it
    can receive one.  A node with a single parent in that situation hands its cotangent over
    directly, without the dictionary.  Leaves (the parameters) never enter the heap: their
    gradients are summed where they arrive.  A primitive with a joint rule
    (``Primitive.vjp_joint``) gives all its arguments' cotangents in one call.
    """
    grads = {}
    leaves = {}
    heap = []
    add, sum_to, pop = _add, _sum_to, grads.pop
    node, g = root, seed
    while True:
        seq, prim, vals, params, out, parents = node
        nxt = None
        gis = None  # the cotangents of the parents, when already computed
        if prim is None:  # the root itself is a leaf
            leaves[seq] = (node, g)
            parents = ()
        elif prim.vjp_joint is not None:
            try:
                gis = prim.vjp_joint(g, out, vals, params, [i for i, _ in parents])
            except Exception as exc:
                raise op_error(f"{prim.name} (its reverse rule)", vals, exc) from exc
            if prim.broadcasts:
                gis = [_unbroadcast(gi, vals[i], sum_to) for (i, _), gi in zip(parents, gis)]
        elif len(parents) == 1:  # a chain link: one rule, one parent
            i, parent = parents[0]
            try:
                if params:
                    gi = prim.vjps[i](g, out, *vals, **params)
                elif len(vals) == 1:  # no parameters: a plain call (no argument packing)
                    gi = prim.vjps[i](g, out, vals[0])
                elif len(vals) == 2:
                    gi = prim.vjps[i](g, out, vals[0], vals[1])
                else:
                    gi = prim.vjps[i](g, out, *vals)
            except Exception as exc:
                raise op_error(f"{prim.name} (its reverse rule, argument {i})", vals,
                               exc) from exc
            if prim.broadcasts:
                try:
                    if gi.shape != vals[i].shape:
                        gi = sum_to(gi, vals[i].shape)
                except AttributeError:  # a Python number somewhere
                    gi = _unbroadcast(gi, vals[i], sum_to)
            if parent[1] is not None and not heap and not grads:
                node, g = parent, gi  # nothing else is pending: it goes next, no dict
                continue
            gis = (gi,)
        else:
            vjps, bc = prim.vjps, prim.broadcasts
        k = 0
        for i, parent in parents:
            if gis is None:
                try:
                    if params:
                        gi = vjps[i](g, out, *vals, **params)
                    elif len(vals) == 2:
                        gi = vjps[i](g, out, vals[0], vals[1])
                    else:
                        gi = vjps[i](g, out, *vals)
                except Exception as exc:
                    raise op_error(f"{prim.name} (its reverse rule, argument {i})", vals,
                                   exc) from exc
                if bc:
                    try:
                        if gi.shape != vals[i].shape:
                            gi = sum_to(gi, vals[i].shape)
                    except AttributeError:  # a Python number somewhere
                        gi = _unbroadcast(gi, vals[i], sum_to)
            else:
                gi = gis[k]
                k += 1
            ps = parent[0]
            if parent[1] is None:  # a leaf: nothing above it to visit, only collect
                if ps in leaves:
                    leaves[ps] = (parent, add(leaves[ps][1], gi))
                else:
                    leaves[ps] = (parent, gi)
                continue
            if ps in grads:
                grads[ps] = add(grads[ps], gi)
            else:
                grads[ps] = gi
                if nxt is None and not heap:
                    nxt = parent  # held back: goes next if it stays the only one
                else:
                    if nxt is not None:
                        heappush(heap, nxt)
                        nxt = None
                    heappush(heap, parent)
        if nxt is not None and not heap:
            node = nxt
        elif heap:
            if nxt is not None:
                heappush(heap, nxt)
            node = heappop(heap)
        else:
            return leaves
        g = pop(node[0])


def _unbroadcast(gi, v, sum_to):
    """``gi`` summed down to the shape of the argument ``v`` when a rule returned it wider."""
    try:
        shape = v.shape
        if gi.shape != shape:
            gi = sum_to(gi, shape)
    except AttributeError:  # a Python number somewhere: compare np.shape
        shape = _shape(v)
        if _shape(gi) != shape:
            gi = sum_to(gi, shape)
    return gi

"""The computational graph of a function, as the reverse mode records it.

:func:`make_graph` runs a function once under a reverse-mode trace, exactly as :func:`calcml.grad`
does, and reads back the nodes the trace recorded: one per primitive operation applied to a
traced value, each with its inputs (parents).  The result, a :class:`Graph`, is a small plain
object: nodes (inputs, constants, operations) with their op names, shapes, dtypes and values,
and edges labelled with the argument position they feed.  It can be printed as Graphviz DOT
text (:meth:`Graph.to_dot`, no Graphviz needed to produce it) or drawn with matplotlib
(:func:`calcml.viz.draw_graph`).

Only operations that depend on an input appear: arithmetic on constants alone is evaluated
eagerly and enters the graph as a constant.  Composite operations (``cm.mean``, ``cm.var``, ...)
appear as the primitives they are made of.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from ._core.reverse import ReverseBox, ReverseTrace, toposort
from ._core.trace import Box, leaf_node, new_level, unbox_all
from ._core.tree import flatten

__all__ = ["Graph", "GraphNode", "make_graph"]

#: Short symbols for the binary operators, used in drawings and DOT labels.
OP_SYMBOLS = {
    "add": "+", "subtract": "−", "multiply": "×", "divide": "÷", "power": "^",
    "negative": "neg", "matmul": "@",
}


@dataclass
class GraphNode:
    """One node of a :class:`Graph`.

    Attributes
    ----------
    id : int
        Position of the node in :attr:`Graph.nodes` (a topological order: every node comes
        after the nodes it reads).
    kind : {"input", "const", "op"}
    op : str or None
        The primitive's name for an ``"op"`` node (``"sin"``, ``"multiply"``, ...).
    name : str
        A label: the argument's name for inputs, the value for scalar constants, the op name.
    shape : tuple of int
    dtype : str
    value : numpy.ndarray or None
        The value the node computed during the trace (the input itself for inputs).
    params : dict
        Keyword parameters of the primitive (``axis``, ``keepdims``, ...).
    """

    id: int
    kind: str
    op: str | None
    name: str
    shape: tuple
    dtype: str
    value: object = None
    params: dict = field(default_factory=dict)

    @property
    def label(self):
        """The short text drawn for the node (operator symbol, name, shape)."""
        if self.kind == "op":
            text = OP_SYMBOLS.get(self.op, self.op)
            extra = ", ".join(f"{k}={v}" for k, v in self.params.items()
                              if v is not None and v is not False)
            if extra:
                text += f"\n{extra}"
        else:
            text = self.name
        if self.shape:
            text += "\n" + "×".join(str(s) for s in self.shape)
        return text


@dataclass
class Graph:
    """A computational graph: nodes in topological order and the edges between them.

    Attributes
    ----------
    nodes : list of GraphNode
    edges : list of tuple (src, dst, argnum)
        ``nodes[src]`` is argument ``argnum`` of the operation ``nodes[dst]``.
    inputs : list of int
        Node ids of the traced inputs, in the order of the function's arguments.
    outputs : list of int
        Node ids of the outputs, in the order of the function's (flattened) outputs.
    """

    nodes: list
    edges: list
    inputs: list
    outputs: list

    @property
    def ops(self):
        """The operation nodes, in topological order."""
        return [n for n in self.nodes if n.kind == "op"]

    def op_counts(self):
        """``{op name: number of nodes}`` over the operation nodes."""
        counts = {}
        for n in self.ops:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def parents(self, node_id):
        """The ids of the nodes read by ``node_id``, ordered by argument position."""
        return [s for s, _, a in sorted((e for e in self.edges if e[1] == node_id),
                                        key=lambda e: e[2])]

    def children(self, node_id):
        """The ids of the nodes that read ``node_id``."""
        return sorted({d for s, d, _ in self.edges if s == node_id})

    def layers(self):
        """Depth of each node: 0 for inputs, 1 + the deepest argument for operations.

        Constants sit one layer before their first reader, so they are drawn beside it.
        """
        depth = {}
        for n in self.nodes:
            if n.kind == "input":
                depth[n.id] = 0
            elif n.kind == "op":
                ps = [p for p in self.parents(n.id) if self.nodes[p].kind != "const"]
                depth[n.id] = 1 + max((depth[p] for p in ps), default=0)
        for n in self.nodes:
            if n.kind == "const":
                readers = self.children(n.id)
                depth[n.id] = max(0, min((depth[c] for c in readers), default=1) - 1)
        return [depth[n.id] for n in self.nodes]

    def to_dot(self, name="calcml"):
        """The graph as Graphviz DOT text (left to right; render with ``dot -Tpng``)."""
        out = [f'digraph "{name}" {{', "  rankdir=LR;",
               '  node [fontname="Helvetica", fontsize=11];']
        for n in self.nodes:
            shape = {"input": "ellipse", "const": "plaintext", "op": "box"}[n.kind]
            style = ', style="rounded,filled", fillcolor="#dbe9f6"' if n.kind == "op" else ""
            if n.id in self.outputs:
                style += ", peripheries=2"
            label = n.label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            out.append(f'  n{n.id} [label="{label}", shape={shape}{style}];')
        for s, d, a in self.edges:
            out.append(f'  n{s} -> n{d} [label="{a}", fontsize=9];')
        out.append("}")
        return "\n".join(out) + "\n"

    def __repr__(self):
        return (f"Graph({len(self.inputs)} inputs, {len(self.ops)} ops, "
                f"{len(self.outputs)} outputs, {len(self.edges)} edges)")


def _describe(v):
    v = unbox_all(v)
    shape = tuple(getattr(v, "shape", ()))
    dtype = str(getattr(v, "dtype", type(v).__name__))
    return shape, dtype


def _const_name(v):
    v = unbox_all(v)
    if np.ndim(v) == 0 and isinstance(v, (int, float, complex, np.number, np.ndarray)):
        x = v.item() if hasattr(v, "item") else v
        return f"{x:g}" if isinstance(x, float) else str(x)
    return "const"


def _arg_names(f, n):
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:n]
    return names + [f"x{i}" for i in range(len(names), n)]


def make_graph(f, *args, names=None, constants=True):
    """Trace ``f(*args)`` once and return its computational graph.

    Parameters
    ----------
    f : callable
        A function written with calcml's operations; it may return an array or a
        list/tuple/dict of arrays.
    *args : array_like
        The inputs; each (floating-point) argument becomes an input node.
    names : sequence of str, optional
        Names of the inputs; by default the parameter names of ``f``.
    constants : bool
        Include the constant operands (``2.0`` in ``2.0 * x``) as nodes.

    Returns
    -------
    Graph

    Notes
    -----
    The trace is the one :func:`calcml.grad` uses: each primitive applied to a traced value
    records a node ``(seq, prim, vals, params, out, parents)``; the nodes reachable from the
    outputs, sorted by their creation number, are a topological order.  Reverse mode walks
    this order backwards, applying ∂L/∂x = Σ ∂L/∂y · ∂y/∂x; forward mode walks it forwards
    applying ẏ = Σ ∂y/∂x · ẋ.

    Examples
    --------
    >>> import calcml as cm, numpy as np
    >>> g = cm.make_graph(lambda x, y: cm.sin(x) * y + cm.exp(x), np.array(0.5), np.array(2.0))
    >>> [n.op for n in g.ops]
    ['sin', 'multiply', 'exp', 'add']
    """
    if names is None:
        names = _arg_names(f, len(args))
    elif len(names) != len(args):
        raise ValueError(f"calcml.make_graph: {len(names)} names for {len(args)} arguments")
    trace = ReverseTrace(new_level())
    boxed = []
    for a in args:
        if not isinstance(a, Box):
            a = np.asarray(a)
            if a.dtype.kind in "iub":
                a = a.astype(np.float64)
        boxed.append(ReverseBox(a, trace, leaf_node()))
    out = f(*boxed)
    out_leaves, _ = flatten(out)

    # Collect every recorded node reachable from any output, in creation order.
    recorded = {}
    for o in out_leaves:
        if isinstance(o, ReverseBox) and o._trace is trace:
            for node in toposort(o._node):
                recorded.setdefault(node[0], node)
    leaf_index = {b._node[0]: i for i, b in enumerate(boxed)}

    nodes, edges, ids = [], [], {}

    def add(kind, op, name, value, params=None):
        shape, dtype = _describe(value)
        value = unbox_all(value)
        nodes.append(GraphNode(len(nodes), kind, op, name, shape, dtype, value, params or {}))
        return len(nodes) - 1

    inputs = []
    for i, b in enumerate(boxed):  # inputs first, in argument order, reached or not
        ids[b._node[0]] = add("input", None, names[i], b._value)
        inputs.append(ids[b._node[0]])
    for seq in sorted(recorded, reverse=True):  # creation order (seqs decrease)
        node = recorded[seq]
        if seq in leaf_index:
            continue
        prim, vals, params, value, parents = node[1], node[2], node[3], node[4], node[5]
        if prim is None:  # a leaf of this trace made elsewhere (not one of our inputs)
            ids[seq] = add("input", None, f"leaf{-seq}", np.nan)
            continue
        src = {i: ids[p[0]] for i, p in parents}
        if constants:
            for i, v in enumerate(vals):
                if i not in src and v is not None:
                    src[i] = add("const", None, _const_name(v), v)
        shown = {k: v for k, v in (params or {}).items() if k != "_saved"}  # not a parameter
        ids[seq] = add("op", prim.name, prim.name, value, shown)
        edges.extend((s, ids[seq], i) for i, s in sorted(src.items()))

    outputs = []
    for o in out_leaves:
        if isinstance(o, ReverseBox) and o._trace is trace:
            outputs.append(ids[o._node[0]])
        else:
            outputs.append(add("const", None, _const_name(o), o))
    return Graph(nodes, edges, inputs, outputs)

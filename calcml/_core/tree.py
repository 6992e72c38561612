"""Flatten and rebuild nested lists, tuples, named tuples and dicts of arrays ("pytrees").

Shared by the transforms (arguments that are containers of arrays), the optimizers (parameter
trees and their state) and the checkers.  Dicts are walked in sorted key order when their keys
sort, so two dicts with the same keys flatten alike whatever order they were built in.
``None`` is an empty subtree (it holds no leaf).
"""

from __future__ import annotations

__all__ = ["flatten", "unflatten", "tree_map", "TreeDef"]


class TreeDef:
    """The shape of a pytree without its leaves; equal structures compare equal."""

    __slots__ = ("kind", "meta", "children")

    def __init__(self, kind, meta, children):
        self.kind = kind  # "leaf", "none", "list", "tuple", "namedtuple", "dict"
        self.meta = meta  # the named-tuple type, or the dict's keys
        self.children = children

    def __eq__(self, other):
        return (
            isinstance(other, TreeDef)
            and self.kind == other.kind
            and self.meta == other.meta
            and self.children == other.children
        )

    def __hash__(self):
        return hash((self.kind, self.children))

    @property
    def num_leaves(self):
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)

    def __repr__(self):
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = ", ".join(map(repr, self.children))
        if self.kind == "dict":
            inner = ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.meta, self.children))
            return "{" + inner + "}"
        return f"[{inner}]" if self.kind == "list" else f"({inner})"


_LEAF = TreeDef("leaf", None, ())
_NONE = TreeDef("none", None, ())


def _dict_keys(d):
    keys = list(d.keys())
    try:
        return sorted(keys)
    except TypeError:
        return keys


_NODES = (dict, list, tuple)


def _kids(items, leaves):
    """The treedefs of ``items``; a leaf (an array, the usual child) without a call."""
    out = []
    for c in items:
        if c is None or isinstance(c, _NODES):
            out.append(_walk(c, leaves))
        else:
            leaves.append(c)
            out.append(_LEAF)
    return tuple(out)


def _walk(t, leaves):
    if t is None:
        return _NONE
    if isinstance(t, dict):
        keys = _dict_keys(t)
        return TreeDef("dict", tuple(keys), _kids([t[k] for k in keys], leaves))
    if isinstance(t, tuple) and hasattr(t, "_fields"):
        return TreeDef("namedtuple", type(t), _kids(t, leaves))
    if isinstance(t, (list, tuple)):
        return TreeDef("list" if isinstance(t, list) else "tuple", None, _kids(t, leaves))
    leaves.append(t)
    return _LEAF


def flatten(tree):
    """Return ``(leaves, treedef)`` for ``tree``."""
    # Module-level helpers, not closures: a closure that calls itself is a reference cycle,
    # which would keep the leaves (and a recorded graph) alive until the cycle collector ran.
    leaves = []
    return leaves, _walk(tree, leaves)


def _build(td, it):
    kind = td.kind
    if kind == "leaf":
        return next(it)
    if kind == "none":
        return None
    kids = [next(it) if c is _LEAF else _build(c, it) for c in td.children]
    if kind == "dict":
        return dict(zip(td.meta, kids))
    if kind == "namedtuple":
        return td.meta(*kids)
    return kids if kind == "list" else tuple(kids)


def unflatten(treedef, leaves):
    """Rebuild the tree described by ``treedef`` from ``leaves`` (in flatten order)."""
    return _build(treedef, iter(leaves))


def tree_map(fn, tree, *rest):
    """Apply ``fn`` leafwise to ``tree`` and trees of the same structure in ``rest``."""
    leaves, td = flatten(tree)
    others = []
    for r in rest:
        lr, tdr = flatten(r)
        if tdr != td:
            raise ValueError(f"calcml.tree_map: tree structures differ: {td!r} and {tdr!r}")
        others.append(lr)
    return unflatten(td, [fn(*xs) for xs in zip(leaves, *others)])

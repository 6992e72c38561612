"""``Optimizer``: a gradient transformation bound to Tensors, for PyTorch-style training loops.

The transform stays pure; the binding only holds its state, reads each tensor's ``.grad``,
and adds the updates into each tensor's ``.data`` in place::

    opt = cm.optim.Optimizer(model.parameters(), cm.optim.adam(1e-3))
    for xb, yb in batches:
        loss = cm.losses.mse(yb, model(xb))
        opt.zero_grad()
        loss.backward()
        opt.step()
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor
from .base import (
    GradientTransformation,
    current_learning_rate,
    flatten,
    match_tree,
    run_update,
    step_count,
    unflatten,
)

__all__ = ["Optimizer"]


def _named_leaves(tree, prefix, out):
    """``(name, leaf)`` pairs in the order of ``calcml._core.tree.flatten``."""
    if tree is None:
        return
    if isinstance(tree, dict):
        keys = list(tree)
        try:
            keys = sorted(keys)
        except TypeError:
            pass
        for k in keys:
            _named_leaves(tree[k], f"{prefix}.{k}", out)
    elif isinstance(tree, tuple) and hasattr(tree, "_fields"):
        for f, c in zip(tree._fields, tree):
            _named_leaves(c, f"{prefix}.{f}", out)
    elif isinstance(tree, (list, tuple)):
        for i, c in enumerate(tree):
            _named_leaves(c, f"{prefix}.{i}", out)
    else:
        out.append((prefix, tree))


def _replace_read_only(p, d, u, exc):
    """``p.data = d + u`` for a read-only ``d`` (a broadcast view); else re-raise ``exc``."""
    # CuPy arrays have no flags.writeable: they are always writeable
    if type(d) is not np.ndarray or d.flags.writeable:
        raise exc
    p.data = (d + u).astype(d.dtype, copy=False)


class Optimizer:
    """Bind a :class:`~calcml.optim.GradientTransformation` to a list of Tensors.

    Parameters
    ----------
    params : iterable of Tensor
        Leaf tensors with ``requires_grad=True`` (e.g. ``module.parameters()``), each once.
    transform : GradientTransformation
        E.g. ``cm.optim.sgd(0.1, momentum=0.9)`` or a ``chain(...)``.

    Attributes
    ----------
    params : list of Tensor
    transform : GradientTransformation
    state : the transform's state (replaced at every ``step``)

    Notes
    -----
    ``step()`` computes ``u, state = transform.update([p.grad …], state, [p.data …])`` and
    then ``p.data += u`` in place (the dtype of ``p.data`` is kept).  The optimizer owns its
    state, so the buffers in it (momentum, Adam's moments, …) are updated in place, as in a
    hand-written NumPy loop: an object read from ``opt.state`` earlier changes with each
    ``step()``; use :meth:`state_dict` (copies) to keep a snapshot.  A tensor whose
    ``.grad`` is None is given a zero gradient (the transform needs the whole tree; with
    momentum or Adam such a tensor still moves by its buffers).

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> w = cm.tensor([1.0, -1.0], requires_grad=True)
    >>> opt = cm.optim.Optimizer([w], cm.optim.sgd(0.25))
    >>> (w * w).sum().backward(); opt.step(); opt.zero_grad()
    >>> w.data
    array([ 0.5, -0.5])
    """

    def __init__(self, params, transform):
        if not isinstance(transform, GradientTransformation):
            raise TypeError("calcml.optim.Optimizer: transform must be a GradientTransformation "
                            f"(e.g. cm.optim.adam(1e-3)), got {type(transform).__name__}")
        params = list(params)
        if not params:
            raise ValueError("calcml.optim.Optimizer: got an empty parameter list")
        seen = set()
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"calcml.optim.Optimizer: parameter {i} is a "
                                f"{type(p).__name__}, not a cm.Tensor")
            if not (p.requires_grad and p.is_leaf):
                raise ValueError(f"calcml.optim.Optimizer: parameter {i} (shape "
                                 f"{tuple(p.shape)}) is not a leaf tensor with "
                                 f"requires_grad=True")
            if id(p) in seen:
                raise ValueError(f"calcml.optim.Optimizer: parameter {i} appears twice")
            seen.add(id(p))
        self.params = params
        self.transform = transform
        self.state = transform.init([p.data for p in params])
        self._checked(self.state, [p.data for p in params])

    # --- the training loop ----------------------------------------------------------------
    def step(self):
        """Apply one update to every parameter, from the gradients in their ``.grad``."""
        params = self.params
        grads, data, any_grad = [], [], False
        # The parameter-by-parameter path needs everything that could fail checked first,
        # so that no parameter is updated when another one is refused: the state must be
        # the one this optimizer made (not one assigned from outside), and every parameter
        # and gradient must still have the shape and floating dtype that were checked.
        layout = self._layout if self.state is self._state_checked else None
        same = layout is not None
        i = 0
        for p in params:
            d = p._value  # .data and .grad without their property frames (hot path)
            try:
                g = p._node[2][0]
            except TypeError:  # requires_grad was turned off since: no gradient
                g = None
            if g is None:
                g = backend.zeros(d.shape, d.dtype, like=d)
            else:
                any_grad = True
            grads.append(g)
            data.append(d)
            if same:
                shape, dt = layout[i]
                if not (d.shape == shape and getattr(g, "shape", None) == shape
                        and d.dtype == dt and getattr(g, "dtype", None) == dt):
                    same = False
            i += 1
        if not any_grad:
            raise RuntimeError("calcml.optim.Optimizer.step: no parameter has a gradient; "
                               "call loss.backward() before step()")
        start = getattr(self.transform.update, "start", None)
        if start is not None and same:
            # One parameter at a time: every link of the chain, then θ += u, so that each
            # parameter's temporaries are freed before the next one's are made.  The
            # optimizer owns its state, so the buffers are updated in place.
            in_place = getattr(start, "step_in_place", None)
            if in_place is not None:  # the whole step in one call (sgd with momentum)
                state = in_place(self.state, grads, data,
                                 lambda i, d, u, exc: _replace_read_only(params[i], d, u, exc))
                if state is not None:
                    self.state = self._state_checked = state
                    return
            kernel, finish, _ = start(self.state, data, True)
            for i in range(len(params)):
                d = data[i]
                u = kernel(i, grads[i], d, False)[0]
                try:
                    d += u  # in place; same_kind casting keeps d's dtype
                except ValueError as exc:
                    _replace_read_only(params[i], d, u, exc)
                # freed now, so that the next parameter's update reuses this memory while it
                # is still in cache (kept until the next kernel call, it would be cold)
                del u
            self.state = self._state_checked = finish()
            return
        # The whole tree at once: a link such as clip_by_global_norm needs every leaf, or
        # something changed since the last check, which the transform reports by name.  A
        # gradient must have its parameter's shape (a stateless rule would broadcast it).
        match_tree("Optimizer.step", grads, data, flatten(data)[1], what="parameters")
        updates, self.state, _ = run_update(self.transform, grads, self.state, data,
                                            own_updates=False, own_state=True)
        for p, d, u in zip(params, data, updates):
            try:
                d += u
            except ValueError as exc:
                _replace_read_only(p, d, u, exc)
        self._checked(self.state, [p.data for p in params])

    def _checked(self, state, data):
        """Record the state and parameter layout that the whole-tree path has accepted.

        Parameters that are not floating point, or that share memory (two tensors on one
        array, where a penalty would read a neighbour's already-updated values), keep to the
        whole-tree path.
        """
        self._state_checked = state
        owners = {id(backend.owner(d)) for d in data}
        ok = len(owners) == len(data) and all(
            getattr(d, "dtype", None) is not None and d.dtype.kind == "f" for d in data)
        self._layout = [(d.shape, d.dtype) for d in data] if ok else None

    def zero_grad(self):
        """Set every parameter's ``.grad`` to None."""
        for p in self.params:
            try:
                p._node[2][0] = None  # p.grad = None, without the property's frame
            except TypeError:  # requires_grad was turned off since: no gradient to clear
                pass

    # --- reading the state ----------------------------------------------------------------
    @property
    def learning_rate(self):
        """The learning rate used by the latest step (see ``current_learning_rate``)."""
        return current_learning_rate(self.state)

    @property
    def step_count(self):
        """The number of steps taken (read from the state)."""
        return step_count(self.state)

    # --- saving and resuming --------------------------------------------------------------
    def state_dict(self):
        """The transform's state as a flat dict ``name -> NumPy array`` (copies).

        Names follow the state's structure (``"0.mu.1"``: link 0, field ``mu``, parameter 1).
        Arrays only, so ``numpy.savez(path, **opt.state_dict())`` saves it without pickle.
        Together with the parameters' values, loading it resumes the exact trajectory.
        """
        pairs = []
        _named_leaves(self.state, "state", pairs)
        return {k: np.array(backend.to_numpy(v), copy=True) for k, v in pairs}

    def load_state_dict(self, state_dict):
        """Restore a state saved by :meth:`state_dict` (same transform, same parameters).

        Raises
        ------
        ValueError
            If names, shapes or dtypes differ from this optimizer's state.
        """
        pairs = []
        _named_leaves(self.state, "state", pairs)
        names = [k for k, _ in pairs]
        missing = [k for k in names if k not in state_dict]
        extra = [k for k in state_dict if k not in set(names)]
        if missing or extra:
            raise ValueError(f"calcml.optim.Optimizer.load_state_dict: keys do not match this "
                             f"optimizer's state: missing {missing}, unexpected {extra}")
        leaves = []
        for k, cur in pairs:
            a = state_dict[k]
            shape, dt = tuple(np.shape(a)), getattr(a, "dtype", None)
            if shape != tuple(np.shape(cur)) or dt != cur.dtype:
                raise ValueError(f"calcml.optim.Optimizer.load_state_dict: {k!r} has shape "
                                 f"{shape} and dtype {dt}, this optimizer's has "
                                 f"{tuple(np.shape(cur))} and {cur.dtype}")
            xp = backend.get_xp(cur)
            leaves.append(xp.array(backend.to_numpy(a), copy=True) if xp is not np
                          else np.array(a, copy=True))
        td = flatten(self.state)[1]
        self.state = unflatten(td, leaves)
        self._checked(self.state, [p.data for p in self.params])

    def __repr__(self):
        shapes = [tuple(p.shape) for p in self.params]
        return f"Optimizer({len(self.params)} tensors {shapes})"

"""Composition of transforms: :func:`chain`."""

from __future__ import annotations

from .base import transformation

__all__ = ["chain"]


def chain(*transforms):
    """Apply transforms one after the other: the output updates of one feed the next.

    Parameters
    ----------
    *transforms : GradientTransformation
        In the order they act on the gradient, e.g.
        ``chain(clip_by_global_norm(1.0), l2(1e-4), scale_by_adam(),
        scale_by_learning_rate(1e-3))``.

    Returns
    -------
    GradientTransformation
        Its state is the tuple of the links' states, in the same order.

    Notes
    -----
    ``u = T_n(… T_2(T_1(g)))``; every link receives the same ``params``.  When every link
    treats the leaves on their own (all but ``clip_by_global_norm``), so does the chain: its
    ``update.start`` runs all the links on one leaf before the next (see
    :func:`~calcml.optim.leafwise`).  Order matters:
    clipping before Adam bounds the gradient Adam sees, clipping after it bounds the step.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> opt = cm.optim.chain(cm.optim.clip_by_value(1.0), cm.optim.sgd(0.5))
    >>> state = opt.init(np.zeros(2))
    >>> u, state = opt.update(np.array([3.0, -0.2]), state)
    >>> u
    array([-0.5,  0.1])
    """
    for i, t in enumerate(transforms):
        if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
            raise TypeError(f"calcml.optim.chain: argument {i} is not a GradientTransformation "
                            f"(got {type(t).__name__}); did you pass a schedule or a number?")
    transforms = tuple(transforms)
    n = len(transforms)

    def init(params):
        return tuple(t.init(params) for t in transforms)

    runs = tuple(getattr(t.update, "run", None) for t in transforms)

    def run(updates, state, params, own_updates, own_state):
        _check_chain_state(state, n)
        new = []
        fresh = own_updates
        for t, link_run, s in zip(transforms, runs, state):
            # a link may overwrite what the previous link freshly allocated
            if link_run is None:  # a user's plain GradientTransformation: output not fresh
                updates, s = t.update(updates, s, params)
                fresh = False
            else:
                updates, s, fresh = link_run(updates, s, params, fresh, own_state)
            new.append(s)
        return updates, tuple(new), fresh

    starts = tuple(getattr(t.update, "start", None) for t in transforms)
    if any(s is None for s in starts):  # a link that needs the whole tree (global norm)
        return transformation(init, run)

    def start(state, params, own_state):
        _check_chain_state(state, n)
        kernels, finishes = [], []
        for link_start, s in zip(starts, state):
            kernel, finish, _ = link_start(s, params, own_state)
            kernels.append(kernel)
            finishes.append(finish)
        if n == 1:
            kernel = kernels[0]
        elif n == 2:
            k1, k2 = kernels

            def kernel(i, g, p, own):
                u, fresh = k1(i, g, p, own)
                return k2(i, u, p, fresh)
        else:
            def kernel(i, g, p, own):
                for k in kernels:
                    g, own = k(i, g, p, own)
                return g, own

        return kernel, lambda: tuple(f() for f in finishes), None

    return transformation(init, run, start)


def _check_chain_state(state, n):
    if type(state) is not tuple or len(state) != n:  # (hasattr only off the hot path)
        if not (isinstance(state, tuple) and len(state) == n and not hasattr(state, "_fields")):
            got = type(state).__name__
            if isinstance(state, tuple):
                got += f" of length {len(state)}"
            raise ValueError(f"calcml.optim.chain: expected the state of a chain of {n} "
                             f"transforms (a tuple of {n} states), got {got}")

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
    ``u = T_n(… T_2(T_1(g)))``; every link receives the same ``params``.  Order matters:
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
        if type(state) is not tuple or len(state) != n:  # (hasattr only off the hot path)
            if not (isinstance(state, tuple) and len(state) == n
                    and not hasattr(state, "_fields")):
                got = type(state).__name__
                if isinstance(state, tuple):
                    got += f" of length {len(state)}"
                raise ValueError(f"calcml.optim.chain: expected the state of a chain of {n} "
                                 f"transforms (a tuple of {n} states), got {got}")
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

    return transformation(init, run)

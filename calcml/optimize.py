"""Gradient descent as a tool: ``minimize`` an objective with any optimizer of ``cm.optim``.

``minimize(f, x0, method=...)`` runs the loop that section 9.1 of the chapter writes by hand,

    x_{k+1} = x_k + u_k,    (u_k, s_{k+1}) = opt.update(∇f(x_k), s_k, x_k),

with the update ``u_k`` computed by a gradient transformation of :mod:`calcml.optim`
(``u_k = -α ∇f(x_k)`` for plain gradient descent) and the gradient by :func:`calcml.grad`.
It stops when the update or the gradient is shorter than ``tol``, and returns an
:class:`OptimizeResult` that keeps the whole run (iterates, losses, gradient and update
norms) so that :mod:`calcml.analysis` can hold it against the theory.

Stochastic objectives are written ``f(x, batch)`` and given their data with ``data=``: each
step draws a mini-batch of ``batch_size`` rows from an explicit random generator ``rng``, so
that the same seed gives the same run.  The loop is a user of the public API only
(``cm.value_and_grad``, ``cm.optim``, the pytree helpers), as DESIGN.md asks.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from . import backend
from ._core.tree import flatten as _flatten
from ._core.tree import tree_map as _tree_map
from ._core.tree import unflatten as _unflatten
from .autodiff import value_and_grad

__all__ = ["minimize", "OptimizeResult", "NonFiniteLossError", "METHODS"]

#: The method names :func:`minimize` understands, and the ``cm.optim`` constructor and
#: default keyword arguments each stands for (``options`` override the defaults).
METHODS = {
    "gd": ("sgd", {}),
    "sgd": ("sgd", {}),
    "momentum": ("sgd", {"momentum": 0.9}),
    "nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}),
    "adam": ("adam", {}),
    "rmsprop": ("rmsprop", {}),
    "adagrad": ("adagrad", {}),
    "proximal_gradient": ("proximal_gradient", {}),
}

_DEFAULT_LEARNING_RATE = 1e-2
_STATUS_CONVERGED, _STATUS_MAXITER, _STATUS_CALLBACK, _STATUS_NONFINITE = 0, 1, 2, 3


class OptimizeResult(dict):
    """The outcome of :func:`minimize`: a dict whose keys are also attributes.

    Modelled on :class:`scipy.optimize.OptimizeResult`.

    Attributes
    ----------
    x : array or pytree
        The final iterate x_K (same structure and dtype as ``x0``).
    fun : float
        f(x_K), on the full data for a stochastic objective.
    jac : array or pytree
        ∇f(x_K), on the full data for a stochastic objective.
    nit : int
        The number of updates K taken.
    nfev : int
        The number of evaluations of f and its gradient (one ``value_and_grad`` each).
    success : bool
        Whether the stopping rule was met (``False`` when ``max_iter`` ran out first, when the
        callback stopped the run, or when the loss became non-finite with
        ``on_nonfinite="stop"``).
    status : int
        0 converged, 1 ``max_iter`` reached, 2 stopped by the callback, 3 non-finite loss.
    message : str
        What happened, in words.
    trajectory : array or list
        The iterates x_0, …, x_K: one stacked array of shape ``(K + 1,) + x0.shape`` when
        ``x0`` is an array, a list of pytrees otherwise (``None`` with
        ``keep_trajectory=False``).
    losses : ndarray, shape (K + 1,)
        ``losses[k]`` is the objective at x_k as evaluated at step k (the mini-batch's value
        for a stochastic objective); the last entry is ``fun``.
    grad_norms : ndarray, shape (K + 1,)
        ‖∇f(x_k)‖₂ over all leaves, the same way; the last entry is ‖jac‖.
    update_norms : ndarray, shape (K,)
        ‖x_{k+1} − x_k‖₂ over all leaves.
    method : str
        The method's name (the transformation's ``repr`` for an instance).
    learning_rate : float, callable or None
        The learning rate or schedule in use (``None`` when a transformation was given).
    """

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    __setattr__ = dict.__setitem__
    __delattr__ = dict.__delitem__

    def __dir__(self):
        return list(self.keys())

    def __repr__(self):
        if not self:
            return f"{type(self).__name__}()"
        width = max(map(len, self.keys())) + 1
        lines = []
        for k, v in self.items():
            text = repr(v)
            if isinstance(v, np.ndarray) and v.size > 8:
                text = f"array(shape={v.shape}, dtype={v.dtype})"
            elif isinstance(v, list) and len(v) > 4:
                text = f"[... {len(v)} items]"
            lines.append(f"{k.rjust(width)}: {text}")
        return "\n".join(lines)


class NonFiniteLossError(FloatingPointError):
    """The loss (or its gradient) became infinite or NaN during :func:`minimize`.

    Attributes
    ----------
    iteration : int
        The k of the iterate x_k at which the non-finite value appeared.
    last_finite : dict or None
        ``{"iteration", "loss", "grad_norm", "x_norm"}`` of the last iterate whose loss and
        gradient were finite (``None`` when it happened at x_0).
    result : OptimizeResult
        The run up to the last finite iterate.
    """

    def __init__(self, message, iteration, last_finite, result):
        super().__init__(message)
        self.iteration = iteration
        self.last_finite = last_finite
        self.result = result


# -- pytree helpers ------------------------------------------------------------------------------

def _as_params(x0):
    """Copy ``x0`` leafwise; non-floating leaves (ints, Python numbers) become float64."""

    def leaf(a):
        xp = backend.get_xp(a)
        a = xp.asarray(a)
        if a.dtype.kind not in "fc":
            a = a.astype(np.float64)
        return a.copy()

    return _tree_map(leaf, x0)


def _tree_norm(tree):
    """‖tree‖₂ over all leaves, as a Python float.

    Summed in the leaves' dtype (no copy), and again in float64 where a float32 sum of squares
    overflowed although every entry is finite: ‖(2⁶⁴)‖ is finite, its float32 square is not.
    """
    leaves, _ = _flatten(tree)
    total = 0.0
    for a in leaves:
        xp = backend.get_xp(a)
        a = xp.asarray(a)
        sq = float(xp.vdot(a, a).real) if a.size else 0.0
        if math.isinf(sq) and a.dtype != np.float64 and bool(xp.all(xp.isfinite(a))):
            a64 = a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)
            sq = float(xp.vdot(a64, a64).real)
        total += sq
    return math.sqrt(total)


def _fmt(v):
    return f"{v:.6g}"


# -- mini-batches --------------------------------------------------------------------------------

class _Batches:
    """Mini-batches of the rows of ``data`` (an array or a pytree of arrays with one length).

    ``sampling="shuffle"``: a fresh permutation each epoch, cut into ``n // batch_size`` full
    batches (the remainder of a permutation is dropped, so every batch has the same size and
    the mini-batch gradient stays unbiased).  ``sampling="replace"``: each batch draws
    ``batch_size`` rows independently and uniformly, with replacement (the i.i.d. sampling the
    SGD theorems assume).
    """

    def __init__(self, data, batch_size, rng, sampling):
        leaves, self.treedef = _flatten(data)
        if not leaves:
            raise ValueError("minimize: data holds no arrays")
        lengths = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in leaves}
        if len(lengths) != 1 or -1 in lengths:
            raise ValueError("minimize: every array in data needs the same leading (sample) "
                             f"axis; got lengths {sorted(lengths)}")
        self.leaves = leaves
        self.n = lengths.pop()
        if not 1 <= batch_size <= self.n:
            raise ValueError(f"minimize: batch_size must be in [1, {self.n}] (the number of "
                             f"samples), got {batch_size}")
        if sampling not in ("shuffle", "replace"):
            raise ValueError(f"minimize: sampling must be 'shuffle' or 'replace', got {sampling!r}")
        self.batch_size, self.rng, self.sampling = batch_size, rng, sampling
        self._perm, self._pos = None, 0

    def next(self):
        b = self.batch_size
        if self.sampling == "replace":
            idx = self.rng.integers(0, self.n, size=b)
        else:
            if self._perm is None or self._pos + b > self.n:
                self._perm, self._pos = self.rng.permutation(self.n), 0
            idx = self._perm[self._pos:self._pos + b]
            self._pos += b
        return _unflatten(self.treedef, [a[idx] for a in self.leaves])


# -- the optimizer -------------------------------------------------------------------------------

def _is_transformation(obj):
    return callable(getattr(obj, "init", None)) and callable(getattr(obj, "update", None))


def _make_transformation(method, learning_rate, options):
    from . import optim  # imported here: calcml.optim is a sibling that imports calcml

    name, defaults = METHODS[method]
    ctor = getattr(optim, name)
    kwargs = {**defaults, **options}
    try:
        return ctor(learning_rate, **kwargs)
    except TypeError as e:
        try:
            accepted = [p for p in inspect.signature(ctor).parameters if p != "learning_rate"]
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            accepted = []
        raise TypeError(f"minimize: method {method!r} is cm.optim.{name}, which takes "
                        f"{accepted}; got options {sorted(options)} ({e})") from e


def _auto_learning_rate(f, x, data):
    from .analysis import estimate_L

    est = estimate_L(f, x, *(() if data is None else (data,)), tol=1e-6, max_iter=500, rng=0)
    if not est.value > 0:
        raise ValueError("minimize: learning_rate='auto' needs a positive curvature at x0 "
                         f"(1/L with L = λ_max(∇²f(x0))); the estimate is L = {est.value}")
    return 1.0 / est.value


def _is_int(v):
    """An integer, not a bool (``True`` is no iteration count); integral floats are refused."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v):
    """A real number, not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_))


# -- minimize ------------------------------------------------------------------------------------

def minimize(f, x0, method="gd", *, learning_rate=None, max_iter=1000, tol=1e-6, stop="update",
             data=None, batch_size=None, sampling="shuffle", rng=0, callback=None,
             progress=False, on_nonfinite="raise", keep_trajectory=True, **options):
    """Minimize a scalar function by gradient descent, SGD or any optimizer of ``cm.optim``.

    Parameters
    ----------
    f : callable
        The objective, written with calcml's math: ``f(x)``, or ``f(x, batch)`` when ``data``
        is given (``batch`` has the structure of ``data``, with a subset of its rows; ``f``
        should average over the batch, so that a mini-batch value estimates the full one).
    x0 : array_like or pytree
        The starting point: an array, a Python number, or a list/tuple/dict of arrays (a
        pytree: a Python list is a container of leaves, so pass ``np.array([1.0, 2.0])`` for
        a vector).  It is copied; floating dtypes are kept (float32 stays float32), other
        dtypes become float64.
    method : str or GradientTransformation
        ``"gd"`` (full-batch gradient descent, ``cm.optim.sgd``), ``"sgd"`` (the same rule on
        mini-batches: ``batch_size`` defaults to 1 when ``data`` is given), ``"momentum"``,
        ``"nesterov"`` (``cm.optim.sgd`` with ``momentum=0.9``, plus ``nesterov=True``),
        ``"adam"``, ``"rmsprop"``, ``"adagrad"``, ``"proximal_gradient"`` (ISTA for
        f + λ‖x‖₁, with ``l1_weight=λ``; ``fun`` is then the smooth part f only); or any
        transformation with ``init`` and ``update`` (e.g. a ``cm.optim.chain``), which carries
        its own learning rate.
    learning_rate : float, callable or "auto", optional
        A number or a schedule ``k -> rate`` for a named method (default 0.01).  ``"auto"``
        (``gd``, ``sgd``, ``momentum``, ``nesterov``) uses α = 1/L, L the largest eigenvalue
        of the Hessian at ``x0`` estimated by :func:`calcml.analysis.estimate_L`.
    max_iter : int
        The most updates to take (a non-negative integer).
    tol : float or None
        The stopping threshold, a finite number >= 0; ``None`` runs all ``max_iter`` updates.
    stop : {"update", "gradient"}
        ``"update"``: stop after the first update with ‖x_{k+1} − x_k‖ < tol (the chapter's
        rule); ``"gradient"``: stop at the first x_k with ‖∇f(x_k)‖ < tol, before updating.
        Norms are Euclidean over all leaves.  With mini-batches both are noisy (the
        mini-batch gradient does not vanish at the minimum): there ``tol=None`` and a
        decaying schedule are the usual choice.
    data : array or pytree of arrays, optional
        The samples, indexed along their first axis, handed to ``f`` as ``batch``.
    batch_size : int, optional
        Rows per step (a positive integer, at most the number of samples); ``None`` uses all
        the data at every step (deterministic).
    sampling : {"shuffle", "replace"}
        ``"shuffle"``: epochs of a fresh permutation, cut into full batches; ``"replace"``:
        i.i.d. uniform rows with replacement.
    rng : int or numpy.random.Generator, default 0
        The seed or generator for the mini-batches (a fixed default: runs repeat exactly).
    callback : callable, optional
        Called after each update as ``callback(intermediate)``, an :class:`OptimizeResult`
        with ``x``, ``fun`` (the loss at the point the gradient was taken), ``nit``,
        ``grad_norm`` and ``update_norm``.  Returning a true value or raising ``StopIteration``
        ends the run (``status`` 2).
    progress : bool
        Show a tqdm progress bar with the current loss.
    on_nonfinite : {"raise", "stop"}
        What to do when the loss or its gradient becomes infinite or NaN: raise
        :class:`NonFiniteLossError` (the default), or stop and return the run up to the last
        finite iterate with ``success=False`` and ``status`` 3.
    keep_trajectory : bool
        Keep every iterate in ``result.trajectory``.
    **options
        Passed to the optimizer's constructor (``momentum=``, ``b1=``, ``decay=``, ``eps=``…).

    Returns
    -------
    OptimizeResult
        ``x``, ``fun``, ``jac``, ``nit``, ``nfev``, ``success``, ``status``, ``message``,
        ``trajectory``, ``losses``, ``grad_norms``, ``update_norms``, ``method``,
        ``learning_rate``.

    Raises
    ------
    NonFiniteLossError
        The loss or gradient became non-finite (with ``on_nonfinite="raise"``); the message
        names the iteration and the last finite loss, gradient norm and ‖x‖.

    Notes
    -----
    Step k computes (f(x_k), g_k = ∇f(x_k)) with :func:`calcml.value_and_grad` (on the k-th
    mini-batch B_k for a stochastic objective, g_k = (1/|B_k|) Σ_{i∈B_k} ∇f_i(x_k)), then

        (u_k, s_{k+1}) = opt.update(g_k, s_k, x_k),    x_{k+1} = x_k + u_k,

    which for ``"gd"`` is the chapter's x_{k+1} = x_k − α ∇f(x_k): on f(x) = x² the iterates
    are x_k = (1 − 2α)^k x₀.  The update norm ‖u_k‖ is ‖x_{k+1} − x_k‖.  With
    ``stop="update"`` the run ends after update k if ‖u_k‖ < tol (the last update
    k = ``max_iter`` included); with ``stop="gradient"`` it ends at x_k if ‖g_k‖ < tol.  The
    final point is evaluated once more (on all the data) for ``fun`` and ``jac``; when the
    updates ran out, that evaluation tests the gradient rule at x_K = x_{max_iter}, so a run
    whose last iterate meets it is a success (``status`` 0) like one that stopped earlier.

    Examples
    --------
    >>> import calcml as cm, numpy as np
    >>> res = cm.optimize.minimize(lambda x: cm.sum(x ** 2), np.array([1.0, -2.0]),
    ...                            learning_rate=0.1, tol=1e-8)
    >>> bool(res.success), res.nit, bool(np.allclose(res.x, 0.0, atol=1e-7))
    (True, 80, True)
    """
    if stop not in ("update", "gradient"):
        raise ValueError(f"minimize: stop must be 'update' or 'gradient', got {stop!r}")
    if on_nonfinite not in ("raise", "stop"):
        raise ValueError(f"minimize: on_nonfinite must be 'raise' or 'stop', got {on_nonfinite!r}")
    if tol is not None and not (_is_real(tol) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"minimize: tol must be a finite non-negative number or None, "
                         f"got {tol!r}")
    if not (_is_int(max_iter) and max_iter >= 0):
        raise ValueError(f"minimize: max_iter must be a non-negative integer, got {max_iter!r}")
    if batch_size is not None and not (_is_int(batch_size) and batch_size >= 1):
        raise ValueError(f"minimize: batch_size must be a positive integer or None, "
                         f"got {batch_size!r}")

    x = _as_params(x0)
    single = _flatten(x)[1].kind == "leaf"

    # -- the optimizer
    if _is_transformation(method):
        if learning_rate is not None or options:
            raise ValueError("minimize: a GradientTransformation carries its own learning rate "
                             "and hyperparameters; pass neither learning_rate nor options")
        opt, method_name = method, repr(method)
        if len(method_name) > 80:
            method_name = type(method).__name__
    elif isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"minimize: unknown method {method!r}; choose one of "
                             f"{sorted(METHODS)} or pass a cm.optim transformation")
        method_name = method
        if method == "gd" and batch_size is not None:
            raise ValueError("minimize: method='gd' is full-batch gradient descent; use "
                             "method='sgd' for mini-batches of batch_size rows")
        if method == "sgd" and data is not None and batch_size is None:
            batch_size = 1  # the chapter's SGD: one sample i per step
        if learning_rate is None:
            learning_rate = _DEFAULT_LEARNING_RATE
        elif isinstance(learning_rate, str):
            if learning_rate != "auto" or METHODS[method][0] != "sgd":
                raise ValueError("minimize: learning_rate='auto' (α = 1/L) is for the "
                                 "gradient-descent methods gd, sgd, momentum, nesterov")
            learning_rate = _auto_learning_rate(f, x, data)
        opt = _make_transformation(method, learning_rate, options)
    else:
        raise TypeError("minimize: method must be a name or a transformation with init/update, "
                        f"got {type(method).__name__}")

    # -- the gradient oracle
    vg = value_and_grad(f)
    batches = None
    if data is not None:
        gen = backend.rng(rng)
        if batch_size is not None:
            batches = _Batches(data, int(batch_size), gen, sampling)
            if sampling == "shuffle" and batches.batch_size == batches.n:
                batches = None  # every batch is all of the data: deterministic
    elif batch_size is not None:
        raise ValueError("minimize: batch_size needs data= (f is then called as f(x, batch))")

    def oracle(point, batch):
        value, g = vg(point) if batch is None else vg(point, batch)
        return float(value), g

    full = data  # what f sees for the full objective (None: f(x))
    state = opt.init(x)
    trajectory = [x] if keep_trajectory else None
    losses, grad_norms, update_norms = [], [], []
    nfev = 0
    status, message = _STATUS_MAXITER, None
    last_eval = None  # (k, loss, grad) of the latest evaluation, when it was on the full data
    k = 0
    x_prev = None

    def partial_result():
        # the run up to the last iterate whose loss and gradient were finite, x_{k-1}
        return _result(x_prev if k else x, None, None, k, nfev, False, _STATUS_NONFINITE, "",
                       trajectory, losses, grad_norms, update_norms, method_name,
                       learning_rate, single)

    def nonfinite(where, loss, gnorm):
        if not math.isfinite(loss):
            what, value = "loss", f"f(x_{k}) = {loss}"
        else:
            what, value = "gradient", f"‖∇f(x_{k})‖ = {gnorm} (f(x_{k}) = {_fmt(loss)})"
        if k == 0:
            text = (f"minimize: the {what} is non-finite at the starting point x0{where}: "
                    f"f(x0) = {loss}, ‖∇f(x0)‖ = {gnorm}; check f and x0")
            return text, None
        last = {"iteration": k - 1, "loss": losses[-1], "grad_norm": grad_norms[-1],
                "x_norm": _tree_norm(x_prev)}
        lr = "" if learning_rate is None else f", learning_rate={learning_rate}"
        text = (f"minimize: the {what} became non-finite at iteration {k}{where}: {value} "
                f"(method={method_name}{lr}). Last finite values, at iteration {k - 1}: "
                f"f = {_fmt(losses[-1])}, ‖∇f‖ = {_fmt(grad_norms[-1])}, "
                f"‖x‖ = {_fmt(last['x_norm'])}; now ‖x_{k}‖ = {_fmt(_tree_norm(x))}. The "
                "iterates diverged: lower the learning rate (gradient descent needs α < 2/L, "
                "L the largest Hessian eigenvalue; see "
                "calcml.analysis.recommend_learning_rate).")
        return text, last

    from tqdm import tqdm

    bar = tqdm(total=max_iter, desc=f"minimize ({method_name})", disable=not progress,
               leave=False, dynamic_ncols=True)
    postfix_every = max(1, max_iter // 200)
    try:
        while k < max_iter:
            batch = full if batches is None else batches.next()
            loss, g = oracle(x, batch)
            nfev += 1
            gnorm = _tree_norm(g)
            if not (math.isfinite(loss) and math.isfinite(gnorm)):
                where = "" if batches is None else f" (on the mini-batch of step {k})"
                text, last = nonfinite(where, loss, gnorm)
                if on_nonfinite == "raise":
                    raise NonFiniteLossError(text, k, last, _finish_partial(partial_result()))
                status, message = _STATUS_NONFINITE, text
                break
            if batches is None:
                last_eval = (k, loss, g)
            if stop == "gradient" and tol is not None and gnorm < tol:
                status = _STATUS_CONVERGED
                message = (f"Optimization terminated successfully: ‖∇f(x_{k})‖ = {_fmt(gnorm)}"
                           f" < tol = {tol} after {k} iterations.")
                break
            losses.append(loss)
            grad_norms.append(gnorm)
            updates, state = opt.update(g, state, x)
            x_prev, x = x, _apply(x, updates)
            unorm = _tree_norm(updates)
            update_norms.append(unorm)
            k += 1
            if keep_trajectory:
                trajectory.append(x)
            bar.update(1)
            if progress and (k % postfix_every == 0):
                bar.set_postfix(loss=f"{loss:.4g}", grad=f"{gnorm:.2g}", refresh=False)
            if callback is not None:
                info = OptimizeResult(x=x, fun=loss, nit=k, grad_norm=gnorm, update_norm=unorm)
                try:
                    stop_now = callback(info)
                except StopIteration:
                    stop_now = True
                if stop_now is not None and bool(stop_now):
                    status = _STATUS_CALLBACK
                    message = f"Stopped by the callback after {k} iterations."
                    break
            if stop == "update" and tol is not None and unorm < tol:
                status = _STATUS_CONVERGED
                message = (f"Optimization terminated successfully: ‖x_{k} − x_{k - 1}‖ = "
                           f"{_fmt(unorm)} < tol = {tol} after {k} iterations.")
                break
    finally:
        bar.close()

    if status == _STATUS_NONFINITE:
        res = partial_result()
        res.message = message
        return _finish_partial(res)

    # -- the final point, on all of the data
    if last_eval is not None and last_eval[0] == k:
        _, fun, jac = last_eval
    else:
        fun, jac = oracle(x, full)
        nfev += 1
    jnorm = _tree_norm(jac)
    if not (math.isfinite(fun) and math.isfinite(jnorm)):
        text, last = nonfinite(" (the final point, on all the data)", fun, jnorm)
        if on_nonfinite == "raise":
            raise NonFiniteLossError(text, k, last, _finish_partial(partial_result()))
        res = partial_result()
        res.message = text
        return _finish_partial(res)
    losses.append(fun)
    grad_norms.append(jnorm)
    if status == _STATUS_MAXITER and stop == "gradient" and tol is not None and jnorm < tol:
        # the loop ran out at x_K = x_{max_iter} before testing it: the final evaluation is
        # that test (the update rule, by contrast, is tested after every update, the last too)
        status = _STATUS_CONVERGED
        message = (f"Optimization terminated successfully: ‖∇f(x_{k})‖ = {_fmt(jnorm)}"
                   f" < tol = {tol} after {k} iterations.")
    if status == _STATUS_MAXITER:
        message = (f"Maximum number of iterations reached (max_iter = {max_iter}) before the "
                   f"stopping rule ({stop} norm < tol = {tol}).")
        if tol is None:
            message = f"Ran the requested {max_iter} iterations (tol = None)."
    success = status == _STATUS_CONVERGED or (status == _STATUS_MAXITER and tol is None)
    return _result(x, fun, jac, k, nfev, success, status, message, trajectory, losses,
                   grad_norms, update_norms, method_name, learning_rate, single)


def _apply(x, updates):
    from . import optim

    return optim.apply_updates(x, updates)


def _result(x, fun, jac, nit, nfev, success, status, message, trajectory, losses, grad_norms,
            update_norms, method, learning_rate, single):
    if trajectory is not None and single:
        trajectory = backend.get_xp(trajectory[0]).stack(trajectory)
    return OptimizeResult(
        x=x, fun=fun, jac=jac, nit=nit, nfev=nfev, success=bool(success), status=status,
        message=message, trajectory=trajectory, losses=np.asarray(losses, dtype=np.float64),
        grad_norms=np.asarray(grad_norms, dtype=np.float64),
        update_norms=np.asarray(update_norms, dtype=np.float64), method=method,
        learning_rate=learning_rate)


def _finish_partial(res):
    """A run cut short by a non-finite value: it ends at the last finite iterate x_{K}."""
    n_ok = len(res.losses)  # the iterates x_0 … x_{n_ok-1} had a finite loss and gradient
    res.nit = max(n_ok - 1, 0)
    if res.trajectory is not None:
        res.trajectory = res.trajectory[: res.nit + 1]
        res.x = res.trajectory[-1]
    res.update_norms = res.update_norms[: res.nit]
    if n_ok:
        res.fun = float(res.losses[-1])
    res.success = False
    res.status = _STATUS_NONFINITE
    return res

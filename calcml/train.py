r"""The mini-batch training loop: ``cm.train(model, loss, optimizer, X, y, epochs=..., ...)``.

One call runs the loop that every chapter of the book writes by hand::

    for epoch in 1..epochs:
        model.train()
        for each mini-batch (X_b, y_b) of a permutation drawn from rng:
            L = loss(y_b, model(X_b))              # stop if L is nan or ±inf
            optimizer.zero_grad(); L.backward()    # stop if a gradient is nan or ±inf
            optimizer.step()
        model.eval(); with cm.no_grad(): validation loss and metrics
        history, callbacks (may stop), early stopping, checkpoint

and returns a :class:`History`.  The module is callable (``cm.train(...)`` is
:func:`train`) and also holds the pieces: :class:`History`, :class:`Callback`,
:class:`EarlyStopping`, :class:`LambdaCallback`, :class:`NonFiniteError`, and saving without
pickle: :func:`save_state` / :func:`load_state` (a flat dict of arrays, atomically, as
``.npz``), :func:`save_model` / :func:`load_model` (a module's ``state_dict``) and
:func:`save_checkpoint` / :func:`load_checkpoint`.

Exact resumption
----------------
A checkpoint holds everything the rest of a run depends on: the model's parameters and
buffers, the optimizer's state (moments, step count: schedules read it), the epoch and step
counters, the state of the generator that draws the mini-batches, the state of every
``numpy.random.Generator`` held by a sub-module (Dropout's), the history so far and the state of
callbacks that have one (early stopping's best value, patience counter and best weights).
Generator states are written as JSON text in 0-d unicode arrays, so the file is loaded with
``allow_pickle=False`` and nothing in it can execute code.  A run resumed from the checkpoint
of epoch e, with freshly built objects of the same structure, therefore draws the same
batches, takes the same steps and ends with bit-identical parameters and losses as a run that
was never interrupted (``tests/test_train.py`` checks it).

Atomic writes
-------------
Every file is first written to a temporary file in the destination's directory, flushed and
``fsync``-ed, then moved over the destination with :func:`os.replace` (atomic on POSIX and
Windows): a crash or an error in the middle of a write leaves the previous checkpoint intact
and no partial file under the destination's name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
import types
from collections.abc import Mapping

import numpy as np

from . import backend, losses
from .optim.base import GradientTransformation
from .optim.binding import Optimizer
from .tensor import Tensor, no_grad

__all__ = [
    "train", "History", "Run", "Callback", "LambdaCallback", "EarlyStopping", "NonFiniteError",
    "save_state", "load_state", "save_model", "load_model", "save_checkpoint",
    "load_checkpoint", "Checkpoint", "minibatches", "rng_state_to_str", "rng_state_from_str",
]

_FORMAT = "calcml.checkpoint/1"


# =========================================================================================
# errors and history
# =========================================================================================

class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN or ±inf; training stopped before the update.

    Attributes
    ----------
    kind : {"loss", "gradient", "val_loss"}
    epoch, batch, step : int
        1-based epoch and batch within the epoch; ``step`` counts optimizer steps taken
        before this one (the parameters hold the values after ``step`` steps).
    parameter : str or None
        For ``kind="gradient"``: the name of the first parameter (in the optimizer's order)
        whose gradient is not finite.
    value : float or None
        The loss value.
    history : History
        The completed epochs.
    """

    def __init__(self, message, *, kind=None, epoch=None, batch=None, step=None,
                 parameter=None, value=None, history=None):
        super().__init__(message)
        self.kind = kind
        self.epoch = epoch
        self.batch = batch
        self.step = step
        self.parameter = parameter
        self.value = value
        self.history = history


class History:
    """Per-epoch records of a training run.

    Attributes
    ----------
    history : dict of str to list of float
        ``"loss"`` (mean training loss over the epoch's samples), ``"val_loss"`` (with
        validation data), each metric ``m`` (training: the sample-weighted mean of its value
        on the batches) and ``"val_m"`` (on the whole validation set), ``"time"`` (wall-clock
        seconds of the epoch) and ``"lr"`` (the learning rate of the epoch's last step, when
        the optimizer has one).
    epochs : list of int
        The 1-based epoch numbers the rows belong to.
    stop_reason : str or None
        Why training ended before ``epochs`` (early stopping, a callback), else None.

    ``history["loss"]``, ``history.train_loss``, ``history.val_loss`` and ``len(history)``
    read it.
    """

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epochs: list[int] = []
        self.stop_reason: str | None = None

    def append(self, epoch, logs):
        """Record the ``logs`` (name -> number) of ``epoch``."""
        n = len(self.epochs)
        for k, v in logs.items():
            if k == "epoch":
                continue
            col = self.history.setdefault(k, [math.nan] * n)
            col.append(float(v))
        for col in self.history.values():
            if len(col) == n:
                col.append(math.nan)
        self.epochs.append(int(epoch))

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def __len__(self):
        return len(self.epochs)

    @property
    def train_loss(self):
        return self.history.get("loss", [])

    @property
    def val_loss(self):
        return self.history.get("val_loss", [])

    @property
    def time(self):
        return self.history.get("time", [])

    def as_arrays(self, prefix="history."):
        """The history as ``{prefix + key: float64 array}`` (plus the epochs, and the stop
        reason as a 0-d string), for :func:`save_state`."""
        out = {f"{prefix}{k}": np.asarray(v, dtype=np.float64) for k, v in self.history.items()}
        out[f"{prefix}__epochs__"] = np.asarray(self.epochs, dtype=np.int64)
        out[f"{prefix}__stop_reason__"] = np.array(self.stop_reason or "")
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix="history."):
        """The inverse of :meth:`as_arrays` (other keys are ignored)."""
        h = cls()
        for k, v in arrays.items():
            if not k.startswith(prefix):
                continue
            name = k[len(prefix):]
            if name == "__epochs__":
                h.epochs = [int(e) for e in v]
            elif name == "__stop_reason__":
                h.stop_reason = str(v[()]) or None
            else:
                h.history[name] = [float(x) for x in v]
        return h

    def __repr__(self):
        keys = ", ".join(self.history)
        return f"History({len(self)} epochs: {keys})"


# =========================================================================================
# callbacks
# =========================================================================================

class Run:
    """What callbacks see of the run in progress.

    Attributes
    ----------
    model, optimizer, loss, rng : the objects being trained / used
    history : History
    epochs : int
        The number of epochs the run is to reach.
    epoch : int
        Epochs completed so far.
    step : int
        Optimizer steps taken so far.
    stop_training : bool
        Set it to True (or return True from ``on_epoch_end``) to stop after this epoch.
    """

    def __init__(self, model, optimizer, loss, rng, history, epochs):
        self.model = model
        self.optimizer = optimizer
        self.loss = loss
        self.rng = rng
        self.history = history
        self.epochs = epochs
        self.epoch = 0
        self.step = 0
        self.stop_training = False


class Callback:
    """Base class of callbacks: override the hooks you need (all do nothing here).

    Hooks, in order: ``on_train_begin(run)``; per epoch ``on_epoch_begin(run, epoch)``,
    ``on_batch_end(run, batch, logs)`` (``logs``: ``loss``, ``size``, ``step``),
    ``on_epoch_end(run, epoch, logs)`` (``logs``: the epoch's row of the history; return
    True, or set ``run.stop_training = True``, to stop); ``on_train_end(run)``.  Epochs and
    batches are 1-based.

    A callback with state that must survive a checkpoint defines ``state_dict()`` (a flat
    dict of arrays) and ``load_state_dict(d)``.
    """

    def on_train_begin(self, run):
        pass

    def on_epoch_begin(self, run, epoch):
        pass

    def on_batch_end(self, run, batch, logs):
        pass

    def on_epoch_end(self, run, epoch, logs):
        return None

    def on_train_end(self, run):
        pass


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda run, epoch, logs: ...)``.

    A plain function ``f(epoch, logs)`` passed in ``callbacks=`` is wrapped as
    ``on_epoch_end``; a true return value stops training.
    """

    def __init__(self, on_train_begin=None, on_epoch_begin=None, on_batch_end=None,
                 on_epoch_end=None, on_train_end=None):
        self._fns = dict(on_train_begin=on_train_begin, on_epoch_begin=on_epoch_begin,
                         on_batch_end=on_batch_end, on_epoch_end=on_epoch_end,
                         on_train_end=on_train_end)

    def on_train_begin(self, run):
        f = self._fns["on_train_begin"]
        return f(run) if f else None

    def on_epoch_begin(self, run, epoch):
        f = self._fns["on_epoch_begin"]
        return f(run, epoch) if f else None

    def on_batch_end(self, run, batch, logs):
        f = self._fns["on_batch_end"]
        return f(run, batch, logs) if f else None

    def on_epoch_end(self, run, epoch, logs):
        f = self._fns["on_epoch_end"]
        return f(run, epoch, logs) if f else None

    def on_train_end(self, run):
        f = self._fns["on_train_end"]
        return f(run) if f else None

    def __repr__(self):
        fn = self._fns["on_epoch_end"]
        return f"LambdaCallback({getattr(fn, '__name__', '')})"


class EarlyStopping(Callback):
    """Stop when a monitored quantity has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str, default "auto"
        A key of the epoch logs: ``"val_loss"`` when there is validation data, else
        ``"loss"`` (for "auto"); or any other, e.g. ``"val_accuracy"`` with ``mode="max"``.
    patience : int >= 1, default 5
        Epochs without improvement before stopping.
    min_delta : float >= 0, default 0
        An epoch improves on the best when it is better by more than ``min_delta``.
    mode : {"min", "max"}
    restore_best_weights : bool, default True
        At the end of training (stopped early or not), load the model's state of the best
        epoch.

    Attributes
    ----------
    best : float
    best_epoch : int
    wait : int
        Epochs since the best.
    """

    def __init__(self, monitor="auto", patience=5, min_delta=0.0, mode="min",
                 restore_best_weights=True):
        if int(patience) != patience or patience < 1:
            raise ValueError(f"calcml.train.EarlyStopping: patience must be an integer >= 1, "
                             f"got {patience!r}")
        if not (min_delta >= 0):
            raise ValueError(f"calcml.train.EarlyStopping: min_delta must be >= 0, got "
                             f"{min_delta!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"calcml.train.EarlyStopping: mode must be 'min' or 'max', got "
                             f"{mode!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.mode = mode
        self.restore_best_weights = bool(restore_best_weights)
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.wait = 0
        self.best_state = None

    def _key(self, logs):
        if self.monitor != "auto":
            return self.monitor
        return "val_loss" if "val_loss" in logs else "loss"

    def on_train_begin(self, run):
        if run.epoch == 0:  # a fresh run; a resumed one keeps the loaded state
            self._reset()

    def on_epoch_end(self, run, epoch, logs):
        key = self._key(logs)
        if key not in logs:
            raise KeyError(f"calcml.train.EarlyStopping: monitor {key!r} is not among the "
                           f"epoch's logs {sorted(logs)}")
        value = float(logs[key])
        better = (value < self.best - self.min_delta if self.mode == "min"
                  else value > self.best + self.min_delta)
        if better:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_state = run.model.state_dict()
            return None
        self.wait += 1
        if self.wait >= self.patience:
            run.history.stop_reason = (
                f"early stopping: {key} did not improve by more than {self.min_delta:g} for "
                f"{self.patience} epochs (best {self.best:.6g} at epoch {self.best_epoch})")
            return True
        return None

    def on_train_end(self, run):
        if self.restore_best_weights and self.best_state is not None:
            run.model.load_state_dict(self.best_state)

    def state_dict(self):
        out = {"best": np.float64(self.best), "best_epoch": np.int64(self.best_epoch),
               "wait": np.int64(self.wait)}
        if self.best_state is not None:
            out.update({f"weights.{k}": v for k, v in self.best_state.items()})
        return out

    def load_state_dict(self, d):
        self.best = float(d["best"])
        self.best_epoch = int(d["best_epoch"])
        self.wait = int(d["wait"])
        w = {k[len("weights."):]: np.array(v) for k, v in d.items() if k.startswith("weights.")}
        self.best_state = w or None

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta:g}, mode={self.mode!r})")


def _as_callback(cb):
    if isinstance(cb, Callback):
        return cb
    if callable(cb):
        return LambdaCallback(on_epoch_end=lambda run, epoch, logs: cb(epoch, logs))
    raise TypeError(f"calcml.train: a callback must be a cm.train.Callback or a function "
                    f"f(epoch, logs), got {type(cb).__name__}")


def _as_early_stopping(spec):
    if spec is None or spec is False:
        return None
    if isinstance(spec, EarlyStopping):
        return spec
    if spec is True:
        return EarlyStopping()
    if isinstance(spec, (int, np.integer)):
        return EarlyStopping(patience=int(spec))
    if isinstance(spec, Mapping):
        return EarlyStopping(**spec)
    raise TypeError(f"calcml.train: early_stopping must be None, True, a patience (int), a dict "
                    f"of EarlyStopping arguments or an EarlyStopping; got {type(spec).__name__}")


# =========================================================================================
# saving without pickle
# =========================================================================================

def _to_array(name, v):
    if isinstance(v, Tensor):
        v = v.data
    v = np.asarray(backend.to_numpy(v)) if not isinstance(v, str) else np.array(v)
    if v.dtype.kind == "O":
        raise TypeError(f"calcml.train.save_state: entry {name!r} is an object array "
                        f"(dtype=object), which .npz can store only by pickling; store numbers "
                        f"or strings")
    return v


def save_state(path, state):
    """Write a flat ``dict`` of arrays to ``path`` as ``.npz``, atomically, without pickle.

    Parameters
    ----------
    path : str or os.PathLike
        Written exactly as given (no ``.npz`` is appended).
    state : mapping of str to array, Tensor, number or str
        Strings are stored as 0-d unicode arrays.

    Notes
    -----
    The arrays go to a temporary file in the same directory, which is flushed, ``fsync``-ed
    and then renamed over ``path`` with :func:`os.replace`.  If anything fails before the
    rename, the temporary file is removed and an existing ``path`` is untouched.

    Examples
    --------
    >>> import numpy as np, tempfile, os, calcml as cm
    >>> p = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> cm.train.save_state(p, {"w": np.arange(3.0), "note": "hi"})
    >>> d = cm.train.load_state(p); d["w"], str(d["note"])
    (array([0., 1., 2.]), 'hi')
    """
    path = os.fspath(path)
    arrays = {}
    for k, v in state.items():
        if not isinstance(k, str) or not k:
            raise TypeError(f"calcml.train.save_state: keys must be non-empty strings, got {k!r}")
        if k in ("file", "allow_pickle"):
            raise ValueError(f"calcml.train.save_state: {k!r} is reserved by numpy.savez; "
                             f"rename the entry")
        arrays[k] = _to_array(k, v)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def load_state(path):
    """Read a ``.npz`` written by :func:`save_state` (``allow_pickle=False``) into a dict.

    Raises
    ------
    ValueError
        If the file holds an object array (which could only be read by unpickling).
    """
    with np.load(os.fspath(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_model(model, path):
    """Save ``model.state_dict()`` (parameters and buffers) to ``path`` with :func:`save_state`.

    Only ``state_dict`` is used, so any object with one works.  Load with :func:`load_model`
    into a model of the same structure.
    """
    save_state(path, model.state_dict())


def load_model(model, path):
    """Load a file written by :func:`save_model` into ``model`` (``load_state_dict``, which
    refuses missing, unexpected or mis-shaped entries by name); returns ``model``."""
    model.load_state_dict(load_state(path))
    return model


# --- generator states as JSON text --------------------------------------------------------

def _json_default(o):
    if isinstance(o, np.ndarray):
        return {"__ndarray__": o.tolist(), "dtype": str(o.dtype)}
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"cannot encode {type(o).__name__}")


def _json_hook(d):
    if "__ndarray__" in d:
        return np.array(d["__ndarray__"], dtype=d["dtype"])
    return d


def rng_state_to_str(gen):
    """The state of a ``numpy.random.Generator`` as JSON text (big integers are exact)."""
    return json.dumps(gen.bit_generator.state, default=_json_default)


def rng_state_from_str(gen, text, what="generator"):
    """Set ``gen``'s state from :func:`rng_state_to_str` text (same bit generator type)."""
    state = json.loads(str(text), object_hook=_json_hook)
    have = type(gen.bit_generator).__name__
    if state.get("bit_generator") != have:
        raise ValueError(f"calcml.train: the saved state of {what} is for a "
                         f"{state.get('bit_generator')} bit generator; this one is a {have}")
    gen.bit_generator.state = state


def _module_generators(model):
    """``{name: Generator}`` for every numpy Generator held as an attribute of a sub-module
    (Dropout's), each object once, under its first name."""
    out, seen = {}, set()
    named = model.named_modules() if hasattr(model, "named_modules") else [("", model)]
    for mname, m in named:
        for attr, v in sorted(vars(m).items()):
            if isinstance(v, np.random.Generator) and id(v) not in seen:
                seen.add(id(v))
                out[f"{mname}.{attr}" if mname else attr] = v
    return out


# --- checkpoints --------------------------------------------------------------------------

class Checkpoint:
    """What :func:`load_checkpoint` read: ``epoch``, ``step``, ``history``, ``stopped``
    (whether the saved run had stopped early), the ``model_state``, ``optimizer_state`` and
    ``callback_states`` (list of dicts) as read."""

    def __init__(self, epoch, step, history, stopped, model_state, optimizer_state,
                 callback_states, rng_states):
        self.epoch = epoch
        self.step = step
        self.history = history
        self.stopped = stopped
        self.model_state = model_state
        self.optimizer_state = optimizer_state
        self.callback_states = callback_states
        self.rng_states = rng_states

    def __repr__(self):
        return f"Checkpoint(epoch={self.epoch}, step={self.step})"


def _prefixed(d, prefix):
    return {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}


def save_checkpoint(path, model, optimizer=None, *, rng=None, epoch=0, step=0, history=None,
                    callbacks=(), stopped=False):
    """Write a training checkpoint to ``path`` (``.npz``, atomic, no pickle).

    Parameters
    ----------
    path : str or os.PathLike
    model : object with ``state_dict()`` (a ``cm.nn.Module``)
    optimizer : cm.optim.Optimizer, optional
    rng : numpy.random.Generator, optional
        The generator that draws the mini-batches.
    epoch, step : int
        Epochs completed and optimizer steps taken.
    history : History, optional
    callbacks : sequence of Callback
        Those with ``state_dict()`` are saved under their position.
    stopped : bool
        Whether training stopped early (a resumed run then does nothing more).

    Notes
    -----
    Entries: ``__format__``, ``epoch``, ``step``, ``stopped``, ``model.<name>``,
    ``optimizer.<name>``, ``rng.train`` and ``rng.module.<name>`` (generator states as JSON
    text), ``history.<key>``, ``callback.<i>.<key>``.
    """
    state = {"__format__": np.array(_FORMAT), "epoch": np.int64(epoch), "step": np.int64(step),
             "stopped": np.bool_(stopped)}
    state.update({f"model.{k}": v for k, v in model.state_dict().items()})
    if optimizer is not None:
        state.update({f"optimizer.{k}": v for k, v in optimizer.state_dict().items()})
    if rng is not None:
        state["rng.train"] = np.array(rng_state_to_str(rng))
    for name, g in _module_generators(model).items():
        state[f"rng.module.{name}"] = np.array(rng_state_to_str(g))
    if history is not None:
        state.update(history.as_arrays("history."))
    for i, cb in enumerate(callbacks):
        if hasattr(cb, "state_dict"):
            state.update({f"callback.{i}.{k}": v for k, v in cb.state_dict().items()})
    save_state(path, state)


def load_checkpoint(path, model=None, optimizer=None, *, rng=None, callbacks=()):
    """Read a checkpoint and restore what is given into it, in place.

    Parameters
    ----------
    path : str or os.PathLike
    model : object with ``load_state_dict``, optional
        Receives the parameters and buffers; its sub-modules' generators receive their
        saved states.
    optimizer : cm.optim.Optimizer, optional
        Receives the optimizer state (same transform, same parameters).
    rng : numpy.random.Generator, optional
        Receives the state of the mini-batch generator.
    callbacks : sequence of Callback
        Those with ``load_state_dict`` receive their saved state, by position.

    Returns
    -------
    Checkpoint

    Raises
    ------
    ValueError
        For a file that is not a calcml checkpoint, holds object arrays, or does not match
        the given objects (names, shapes, dtypes, generator types).  Nothing given is
        changed then: what was already restored is put back.
    """
    d = load_state(path)
    fmt = str(d["__format__"][()]) if "__format__" in d else None
    if fmt != _FORMAT:
        raise ValueError(f"calcml.train.load_checkpoint: {os.fspath(path)!r} is not a calcml "
                         f"checkpoint (format {fmt!r}, expected {_FORMAT!r})")
    model_state = _prefixed(d, "model.")
    opt_state = _prefixed(d, "optimizer.")
    rng_states = _prefixed(d, "rng.")
    by_index: dict[int, dict] = {}
    for k, v in d.items():
        if k.startswith("callback."):
            i, _, rest = k[len("callback."):].partition(".")
            by_index.setdefault(int(i), {})[rest] = v
    cb_states = [by_index.get(i, {}) for i in range(max(by_index, default=-1) + 1)]
    # All or nothing: what a refusal would leave half-restored is put back as it was.
    undo = _snapshot(model, optimizer, rng, callbacks)
    try:
        _restore(model, optimizer, rng, callbacks, model_state, opt_state, rng_states,
                 cb_states)
    except BaseException:
        _put_back(undo)
        raise
    return Checkpoint(int(d["epoch"]), int(d["step"]), History.from_arrays(d, "history."),
                      bool(d["stopped"]), model_state, opt_state, cb_states, rng_states)


def _snapshot(model, optimizer, rng, callbacks):
    """Copies of everything ``load_checkpoint`` may change, and how to put each back."""
    undo = []
    if model is not None:
        undo.append((model.load_state_dict, model.state_dict()))
        for g in _module_generators(model).values():
            undo.append((_set_bit_state(g), g.bit_generator.state))
    if optimizer is not None:
        undo.append((optimizer.load_state_dict, optimizer.state_dict()))
    if rng is not None:
        undo.append((_set_bit_state(rng), rng.bit_generator.state))
    for cb in callbacks:
        if hasattr(cb, "state_dict") and hasattr(cb, "load_state_dict"):
            undo.append((cb.load_state_dict, cb.state_dict()))
    return undo


def _set_bit_state(g):
    def put(state):
        g.bit_generator.state = state
    return put


def _put_back(undo):
    for put, saved in undo:
        put(saved)


def _restore(model, optimizer, rng, callbacks, model_state, opt_state, rng_states, cb_states):
    if model is not None:
        model.load_state_dict(model_state)
        gens = _module_generators(model)
        saved = _prefixed(rng_states, "module.")
        if set(gens) != set(saved):
            raise ValueError(f"calcml.train.load_checkpoint: the model's generators "
                             f"{sorted(gens)} do not match the checkpoint's {sorted(saved)}")
        for name, g in gens.items():
            rng_state_from_str(g, saved[name], f"the generator {name!r}")
    if optimizer is not None:
        optimizer.load_state_dict(opt_state)
    if rng is not None:
        if "train" not in rng_states:
            raise ValueError("calcml.train.load_checkpoint: the checkpoint holds no "
                             "mini-batch generator state")
        rng_state_from_str(rng, rng_states["train"], "the mini-batch generator")
    for cb, s in zip(callbacks, cb_states):
        if s and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(s)


# =========================================================================================
# the loop
# =========================================================================================

def minibatches(n, batch_size, rng=None, shuffle=True, drop_last=False):
    """Index arrays (or slices, unshuffled) of the mini-batches of one epoch over ``n`` rows.

    With ``shuffle`` the order is ``rng.permutation(n)``: one draw from ``rng`` per epoch.  Pass
    the same Generator every epoch for a new order each time; an int seed (or None, seed 0)
    gives the same order on every call.
    """
    if shuffle:
        order = _resolve_rng(rng).permutation(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            if drop_last and len(idx) < batch_size:
                return
            yield idx
    else:
        for i in range(0, n, batch_size):
            if drop_last and i + batch_size > n:
                return
            yield slice(i, min(i + batch_size, n))


def _accuracy(y_true, y_pred):
    y_pred = np.asarray(y_pred)
    if y_pred.ndim != 2 or y_pred.shape[1] < 2:
        raise ValueError(f"calcml.train: metric 'accuracy' needs class scores of shape (n, C) "
                         f"with C >= 2, got predictions of shape {y_pred.shape}")
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:  # one-hot / probabilities
        y_true = y_true.argmax(axis=1)
    return float(np.mean(y_pred.argmax(axis=1) == y_true))


_METRICS = {"accuracy": _accuracy}


def _resolve_metrics(metrics):
    if metrics is None:
        return {}
    if isinstance(metrics, Mapping):
        items = list(metrics.items())
    else:
        if isinstance(metrics, str) or callable(metrics):
            metrics = [metrics]
        items = []
        for m in metrics:
            if isinstance(m, str):
                items.append((m, m))
            else:
                items.append((getattr(m, "__name__", f"metric{len(items)}"), m))
    out = {}
    for name, m in items:
        if isinstance(m, str):
            if m not in _METRICS:
                raise ValueError(f"calcml.train: unknown metric {m!r}; known: "
                                 f"{sorted(_METRICS)}, or pass a function f(y_true, y_pred)")
            m = _METRICS[m]
        if not callable(m):
            raise TypeError(f"calcml.train: metric {name!r} is not callable")
        out[name] = m
    return out


def _resolve_loss(loss):
    if isinstance(loss, str):
        fn = getattr(losses, loss, None)
        if not isinstance(fn, losses.Loss):
            raise ValueError(f"calcml.train: unknown loss {loss!r}; name one of cm.losses "
                             f"(e.g. 'mse', 'cross_entropy') or pass a function "
                             f"loss(y_true, y_pred)")
        return fn
    if not callable(loss):
        raise TypeError(f"calcml.train: loss must be callable as loss(y_true, y_pred), got "
                        f"{type(loss).__name__}")
    return loss


def _resolve_rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:  # reproducible by default: the same batches on every run
        return np.random.default_rng(0)
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"calcml.train: rng must be a numpy.random.Generator, an int seed or None, "
                    f"got {type(rng).__name__}")


def _cast(a, dtype, what):
    a = backend.asarray(a.data if isinstance(a, Tensor) else a)  # CuPy stays CuPy
    if a.dtype.kind == "O":
        raise TypeError(f"calcml.train: {what} has dtype object; pass a numeric array")
    if dtype is not None and a.dtype.kind == "f" and a.dtype != dtype:
        a = a.astype(dtype)
    return a


def _grads_finite(params):
    """Whether every gradient is (certainly) finite: the sum of all their entries is.

    A NaN or an infinity anywhere makes the sum NaN or infinite; finite entries whose sum
    overflows make it infinite too, a false alarm that :func:`_first_nonfinite` then clears.
    One reduction per parameter, what ``check_finite`` costs a training step.
    """
    total = 0.0
    for p in params:
        g = p.grad
        if g is None:
            continue
        total += float(_add_reduce(g, None) if type(g) is np.ndarray
                       else backend.get_xp(g).sum(g))
    return math.isfinite(total)


_add_reduce = np.add.reduce


def _first_nonfinite(params, names):
    """``(index, name, description)`` of the first parameter whose gradient is not finite."""
    for i, p in enumerate(params):
        g = p.grad
        if g is None:
            continue
        xp = backend.get_xp(g)
        # a cheap test first: the sum of finite numbers is finite unless it overflows
        if bool(xp.isfinite(xp.sum(g))) or bool(xp.isfinite(g).all()):
            continue
        n_nan = int(xp.isnan(g).sum())
        n_inf = int(xp.isinf(g).sum())
        name = names.get(id(p), f"#{i}")
        return i, name, (f"{n_nan} nan and {n_inf} inf among its {g.size} entries, shape "
                         f"{tuple(g.shape)}")
    return None


def _param_names(model, params):
    names = {}
    if hasattr(model, "named_parameters"):
        for n, p in model.named_parameters():
            names.setdefault(id(p), n)
    for i, p in enumerate(params):
        names.setdefault(id(p), f"#{i}")
    return names


def _loss_value(L, what):
    """The float value of a scalar loss, or a clear error for any other output."""
    v = L.data if isinstance(L, Tensor) else L
    if np.size(v) != 1:
        raise ValueError(f"calcml.train: {what} must be a scalar, but the loss function "
                         f"returned shape {tuple(np.shape(v))} (reduce it, e.g. with cm.mean)")
    return float(v.reshape(()) if getattr(v, "ndim", 0) else v)


def _evaluate(model, loss_fn, X, y, batch_size, metrics):
    """Loss (sample-weighted mean over batches) and metrics (on all predictions) in eval mode."""
    total, n = 0.0, len(X)
    preds = [] if metrics else None
    with no_grad():
        for i in range(0, n, batch_size):
            xb, yb = X[i:i + batch_size], y[i:i + batch_size]
            out = model(xb)
            total += _loss_value(loss_fn(yb, out), "the validation loss") * len(xb)
            if preds is not None:
                preds.append(backend.to_numpy(out.data if isinstance(out, Tensor) else out))
    logs = {"loss": total / n}
    if metrics:
        p = np.concatenate(preds, axis=0)
        for name, fn in metrics.items():
            logs[name] = float(fn(backend.to_numpy(y), p))
    return logs


def train(model, loss, optimizer, X, y, *, epochs=1, batch_size=32, validation_data=None,
          shuffle=True, rng=None, metrics=None, callbacks=(), early_stopping=None,
          progress=None, checkpoint=None, checkpoint_every=1, resume=None, drop_last=False,
          check_finite=True):
    r"""Train ``model`` by mini-batch gradient descent; return the :class:`History`.

    Parameters
    ----------
    model : cm.nn.Module (or any callable with ``parameters()``)
        Called on a batch of ``X`` (an array); ``train()``/``eval()``, ``named_parameters()``
        and ``state_dict()``/``load_state_dict()`` are used when present (the last two are
        needed for checkpoints and early stopping's best weights).
    loss : callable or str
        ``loss(y_batch, model(X_batch))`` returning a scalar Tensor, e.g.
        ``cm.losses.cross_entropy``; a string names a loss of ``cm.losses``.
    optimizer : cm.optim.Optimizer or GradientTransformation
        A transform (``cm.optim.adam(1e-3)``) is bound to ``model.parameters()``.
    X, y : arrays with the same first dimension
        Floating-point arrays are cast to the parameters' dtype (float32 stays float32).
    epochs : int
        The epoch to reach: a resumed run continues from the checkpoint's epoch to this one.
    batch_size : int
    validation_data : (X_val, y_val), optional
        Evaluated after every epoch in eval mode under ``cm.no_grad()``.
    shuffle : bool
        Draw a new permutation from ``rng`` every epoch (else batches in order).
    rng : numpy.random.Generator or int or None
        The generator of the permutations (an int seeds one; None means seed 0, so an
        unseeded run repeats exactly).  A Generator is advanced in place.
    metrics : str, function, list or dict of them
        ``f(y_true, y_pred) -> float`` on NumPy arrays; ``"accuracy"`` (argmax of class
        scores) is built in.  Logged as ``name`` (train, sample-weighted over batches) and
        ``val_name``.
    callbacks : sequence of Callback or functions ``f(epoch, logs)``
        A true return from ``on_epoch_end`` (or ``f``) stops training after that epoch.
    early_stopping : None, True, int, dict or EarlyStopping
        ``True``: ``EarlyStopping()``; an int: its patience; a dict: its arguments.
    progress : bool or None
        A tqdm progress bar over the batches (None: only on a terminal).
    checkpoint : path, optional
        Write a checkpoint (:func:`save_checkpoint`) every ``checkpoint_every`` epochs and
        after the last one.
    resume : path or True, optional
        Restore model, optimizer, generators, history and callbacks from a checkpoint, then
        continue.  ``True`` means ``checkpoint`` if that file exists (else start afresh).
        The objects must have the structure of the saved run (same layers, same transform,
        the same callbacks in the same order); a run that had stopped early stays stopped.
    drop_last : bool
        Skip a last batch smaller than ``batch_size``.
    check_finite : bool
        Stop with :class:`NonFiniteError` when the loss or a gradient is NaN or ±inf.

    Returns
    -------
    History

    Raises
    ------
    NonFiniteError
        Naming the epoch and batch, and for a gradient the first parameter (by name) whose
        gradient is non-finite.  Raised before the update, so the parameters stay finite.

    Notes
    -----
    Each step is ``L = loss(y_b, model(X_b))``, ``optimizer.zero_grad()``, ``L.backward()``,
    ``optimizer.step()``.  The epoch's training loss is the sample-weighted mean of the batch
    losses (the mean over the epoch's samples of the loss at the parameters of their step).

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(64, 3)); y = X @ np.array([[1.0], [-2.0], [0.5]])
    >>> model = cm.nn.Sequential(cm.nn.Linear(3, 1, rng=0))
    >>> h = cm.train(model, cm.losses.mse, cm.optim.sgd(0.1), X, y, epochs=20,
    ...              batch_size=16, rng=0, progress=False)
    >>> bool(h.train_loss[-1] < 1e-3 * h.train_loss[0])
    True
    """
    loss_fn = _resolve_loss(loss)
    if isinstance(optimizer, GradientTransformation):
        optimizer = Optimizer(model.parameters(), optimizer)
    elif not isinstance(optimizer, Optimizer):
        raise TypeError(f"calcml.train: optimizer must be a cm.optim.Optimizer or a "
                        f"GradientTransformation (e.g. cm.optim.adam(1e-3)), got "
                        f"{type(optimizer).__name__}")
    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"calcml.train: epochs must be an integer >= 0, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"calcml.train: batch_size must be an integer >= 1, got "
                         f"{batch_size!r}")
    if int(checkpoint_every) != checkpoint_every or checkpoint_every < 1:
        raise ValueError(f"calcml.train: checkpoint_every must be an integer >= 1, got "
                         f"{checkpoint_every!r}")
    epochs, batch_size = int(epochs), int(batch_size)
    params = optimizer.params
    pdtype = params[0].data.dtype if np.dtype(params[0].data.dtype).kind == "f" else None
    X, y = _cast(X, pdtype, "X"), _cast(y, pdtype, "y")
    n = len(X)
    if len(y) != n:
        raise ValueError(f"calcml.train: X and y must have the same number of rows, got "
                         f"{n} and {len(y)}")
    if n == 0:
        raise ValueError("calcml.train: no training data (X has 0 rows)")
    if drop_last and n < batch_size:
        raise ValueError(f"calcml.train: with drop_last=True and batch_size={batch_size}, "
                         f"the {n} rows of X make no full batch")
    val = None
    if validation_data is not None:
        if len(validation_data) != 2:
            raise ValueError("calcml.train: validation_data must be a pair (X_val, y_val)")
        Xv, yv = (_cast(a, pdtype, w) for a, w in zip(validation_data, ("X_val", "y_val")))
        if len(Xv) != len(yv) or len(Xv) == 0:
            raise ValueError(f"calcml.train: X_val and y_val must have the same, non-zero "
                             f"number of rows, got {len(Xv)} and {len(yv)}")
        val = (Xv, yv)
    metric_fns = _resolve_metrics(metrics)
    gen = _resolve_rng(rng)
    cbs = [_as_callback(c) for c in callbacks]
    stopper = _as_early_stopping(early_stopping)
    if stopper is not None:
        cbs.append(stopper)
    names = _param_names(model, params)
    history = History()
    run = Run(model, optimizer, loss_fn, gen, history, epochs)

    if resume is True:
        resume = checkpoint if checkpoint is not None and os.path.exists(checkpoint) else None
    stopped = False
    if resume is not None and resume is not False:
        ck = load_checkpoint(resume, model, optimizer, rng=gen, callbacks=cbs)
        run.epoch, run.step, stopped = ck.epoch, ck.step, ck.stopped
        history = run.history = ck.history

    n_batches = (n // batch_size) if drop_last else -(-n // batch_size)
    bar = None
    if progress or progress is None:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * n_batches, initial=min(run.epoch, epochs) * n_batches,
                   desc="calcml.train", unit="batch", disable=None if progress is None else False,
                   leave=True, file=sys.stderr, dynamic_ncols=True)
    was_training = getattr(model, "training", None)
    set_mode = hasattr(model, "train") and hasattr(model, "eval")
    for cb in cbs:
        cb.on_train_begin(run)
    try:
        while run.epoch < epochs and not stopped:
            epoch = run.epoch + 1
            for cb in cbs:
                cb.on_epoch_begin(run, epoch)
            if set_mode:
                model.train()
            t0 = time.perf_counter()
            total = 0.0
            mtotals = dict.fromkeys(metric_fns, 0.0)
            seen = 0
            for b, idx in enumerate(minibatches(n, batch_size, gen, shuffle, drop_last), 1):
                xb, yb = X[idx], y[idx]
                out = model(xb)
                L = loss_fn(yb, out)
                value = _loss_value(L, "the loss")
                if check_finite and not math.isfinite(value):
                    raise NonFiniteError(
                        f"calcml.train: the loss is {value} at epoch {epoch}, batch {b} "
                        f"(step {run.step + 1}); training stopped before this update, so the "
                        f"parameters are those after step {run.step}",
                        kind="loss", epoch=epoch, batch=b, step=run.step, value=value,
                        history=history)
                optimizer.zero_grad()
                L.backward()
                if check_finite and not _grads_finite(params):
                    bad = _first_nonfinite(params, names)
                    if bad is not None:
                        _, pname, desc = bad
                        raise NonFiniteError(
                            f"calcml.train: the gradient of parameter {pname!r} is not finite "
                            f"({desc}) at epoch {epoch}, batch {b} (step {run.step + 1}, loss "
                            f"{value:.6g}); training stopped before this update, so the "
                            f"parameters are those after step {run.step}",
                            kind="gradient", epoch=epoch, batch=b, step=run.step,
                            parameter=pname, value=value, history=history)
                optimizer.step()
                run.step += 1
                m = len(xb)
                total += value * m
                seen += m
                if metric_fns:
                    o = backend.to_numpy(out.data if isinstance(out, Tensor) else out)
                    yn = backend.to_numpy(yb)
                    for k, fn in metric_fns.items():
                        mtotals[k] += float(fn(yn, o)) * m
                for cb in cbs:
                    cb.on_batch_end(run, b, {"loss": value, "size": m, "step": run.step})
                if bar is not None:
                    bar.update(1)
            logs = {"loss": total / seen}
            logs.update({k: v / seen for k, v in mtotals.items()})
            if val is not None:
                if set_mode:
                    model.eval()
                vlogs = _evaluate(model, loss_fn, val[0], val[1], batch_size, metric_fns)
                logs.update({f"val_{k}": v for k, v in vlogs.items()})
                if check_finite and not math.isfinite(vlogs["loss"]):
                    raise NonFiniteError(
                        f"calcml.train: the validation loss is {vlogs['loss']} after epoch "
                        f"{epoch} (step {run.step}); check validation_data for NaN or inf",
                        kind="val_loss", epoch=epoch, step=run.step, value=vlogs["loss"],
                        history=history)
            logs["time"] = time.perf_counter() - t0
            try:
                lr = optimizer.learning_rate
            except (LookupError, ValueError, TypeError, AttributeError):
                lr = None
            if lr is not None:
                logs["lr"] = float(lr)
            run.epoch = epoch
            history.append(epoch, logs)
            for cb in cbs:
                if cb.on_epoch_end(run, epoch, dict(logs, epoch=epoch)):
                    run.stop_training = True
            if run.stop_training:
                stopped = True
                if history.stop_reason is None:
                    history.stop_reason = f"stopped by a callback at epoch {epoch}"
            if checkpoint is not None and (epoch % checkpoint_every == 0 or epoch == epochs
                                           or stopped):
                save_checkpoint(checkpoint, model, optimizer, rng=gen, epoch=epoch,
                                step=run.step, history=history, callbacks=cbs, stopped=stopped)
            if bar is not None:
                post = {"loss": f"{logs['loss']:.4g}"}
                if "val_loss" in logs:
                    post["val_loss"] = f"{logs['val_loss']:.4g}"
                bar.set_postfix(post, refresh=False)
        for cb in cbs:
            cb.on_train_end(run)
    finally:
        if bar is not None:
            bar.close()
        if set_mode and was_training is not None:
            model.train(was_training)
    return history


# ``cm.train(...)`` calls the loop; ``cm.train.save_state`` etc. are the module's functions.
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

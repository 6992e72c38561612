r"""Modules: objects that hold parameters and buffers and compute with calcml's operations.

A :class:`Module` discovers what it holds **when attributes are assigned** (PyTorch's
``__setattr__`` registration):

* a :class:`calcml.Tensor` with ``requires_grad=True`` becomes a *parameter*;
* a :class:`Module` becomes a *child*;
* :meth:`Module.register_buffer` declares a *buffer*: state that is saved but not trained
  (BatchNorm's running statistics), held as a plain array;
* anything else is an ordinary attribute.

The registries keep assignment order, so :meth:`~Module.parameters` is deterministic: a
module's own parameters in the order they were assigned, then each child's, depth first, in
the order the children were assigned.  A tensor shared by two places is listed once.  Dotted
names (``"0.weight"``, ``"block.attn.q_proj.bias"``) say where each lives.

:meth:`~Module.state_dict` returns the parameters *and* buffers as a flat ``dict`` of NumPy
arrays (copies) under dotted names, so ``numpy.savez(path, **model.state_dict())`` saves a model
without pickle; :meth:`~Module.load_state_dict` refuses, by name, an entry that is missing,
unexpected, or of another shape or dtype, and changes nothing unless everything matches.

:func:`functional_call` runs a module with some of its parameters (or buffers) replaced by
given values for the duration of one call, so a module is also a pure function of its
parameters: ``cm.grad``, ``cm.jacobian`` and ``cm.check_grad`` apply to it directly.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .. import backend, ops
from ..tensor import Tensor

__all__ = ["Module", "Sequential", "ModuleList", "Residual", "functional_call", "as_input"]


def as_input(x, dtype=np.float64):
    """Make ``x`` something calcml's operations accept, without copying what they already do.

    Tensors, traced values and floating-point arrays are returned unchanged, and NumPy's type
    promotion then applies: a float64 array fed to a float32 layer gives a float64 output
    (cast the data to the model's dtype to stay in float32; PyTorch would refuse the mix).
    Lists, Python numbers and integer or boolean arrays become arrays of ``dtype`` (the
    layer's).
    """
    if type(x) is Tensor:  # the usual input of every layer but the first
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "f":
            return x
        a = x
    elif isinstance(x, (list, tuple, int, float, bool, np.generic)):
        a = np.asarray(x)
    else:
        return x
    if a.dtype.kind not in "biuf":
        raise TypeError(f"calcml.nn: a layer's input must be real numbers, got an array of "
                        f"dtype {a.dtype} and shape {a.shape}")
    return a.astype(dtype)


def concrete(x):
    """The plain array behind ``x`` (a Tensor's ``.data``, an array), or None for a value being
    traced by a transform (``cm.grad`` etc.), whose numbers are not to be read."""
    if isinstance(x, Tensor):
        return x.data
    try:
        return backend.asarray(x)
    except TypeError:
        return None


class Module:
    r"""Base class of every layer and model.

    Subclasses call ``super().__init__()`` first, assign parameters (Tensors with
    ``requires_grad=True``) and sub-modules as attributes, and define :meth:`forward`.

    Attributes
    ----------
    training : bool
        True after :meth:`train` (the default), False after :meth:`eval`.  Dropout and
        BatchNorm1d behave differently in the two modes.

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> class Affine(cm.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a = cm.tensor(2.0, requires_grad=True)
    ...         self.b = cm.tensor(1.0, requires_grad=True)
    ...     def forward(self, x):
    ...         return self.a * x + self.b
    >>> m = Affine()
    >>> [n for n, _ in m.named_parameters()]
    ['a', 'b']
    >>> m(np.array([1.0, 2.0])).sum().backward()
    >>> float(m.a.grad), float(m.b.grad)
    (3.0, 2.0)
    """

    def __init__(self):
        d = self.__dict__
        d["_param_names"] = {}
        d["_buffer_names"] = {}
        d["_module_names"] = {}
        d["training"] = True

    # --- registration ---------------------------------------------------------------------
    def _registries(self):
        d = self.__dict__
        try:
            return d["_param_names"], d["_buffer_names"], d["_module_names"]
        except KeyError:
            raise AttributeError(f"calcml.nn: {type(self).__name__}.__init__ must call "
                                 f"super().__init__() before assigning attributes") from None

    def __setattr__(self, name, value):
        if name == "forward":  # a Sequential's fused plan depends on which forwards are own
            _FORWARD_ASSIGNMENTS[0] += 1
        params, buffers, modules = self._registries()
        if isinstance(value, Module):
            params.pop(name, None)
            buffers.pop(name, None)
            modules[name] = None
        elif isinstance(value, Tensor) and value.requires_grad:
            if not value.is_leaf:
                raise ValueError(f"calcml.nn: parameter {name!r} of {type(self).__name__} must "
                                 f"be a leaf tensor (made by cm.tensor(..., requires_grad=True)"
                                 f"), not the result of a computation; use .detach()")
            buffers.pop(name, None)
            modules.pop(name, None)
            params[name] = None
        elif name in buffers:
            if value is not None:
                value = value.data if isinstance(value, Tensor) else backend.asarray(value)
        elif name in params and value is not None:
            raise TypeError(f"calcml.nn: cannot assign a {type(value).__name__} to parameter "
                            f"{name!r} of {type(self).__name__}: a parameter is a cm.Tensor "
                            f"with requires_grad=True (or None to remove it)")
        else:
            params.pop(name, None)
            modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for reg in self._registries():
            reg.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register ``param`` (a leaf Tensor with ``requires_grad=True``) as ``self.<name>``."""
        if not (isinstance(param, Tensor) and param.requires_grad):
            raise TypeError(f"calcml.nn.Module.register_parameter: {name!r} must be a cm.Tensor "
                            f"with requires_grad=True, got {type(param).__name__}")
        setattr(self, name, param)

    def register_buffer(self, name, value):
        """Register ``value`` (an array, or None) as the buffer ``self.<name>``.

        Buffers are saved by :meth:`state_dict` and restored by :meth:`load_state_dict` but
        are not parameters: no gradient, no optimizer.
        """
        params, buffers, modules = self._registries()
        params.pop(name, None)
        modules.pop(name, None)
        buffers[name] = None
        setattr(self, name, value)

    def add_module(self, name, module):
        """Register ``module`` as the child ``self.<name>``."""
        if not isinstance(module, Module):
            raise TypeError(f"calcml.nn.Module.add_module: {name!r} must be a Module, "
                            f"got {type(module).__name__}")
        setattr(self, name, module)

    # --- the call -------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        """The computation; every subclass defines it."""
        raise NotImplementedError(f"calcml.nn: {type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- walking the tree -----------------------------------------------------------------
    def named_children(self):
        """``(name, module)`` for each direct child, in assignment order."""
        d = self.__dict__
        for name in self._registries()[2]:
            yield name, d[name]

    def children(self):
        """The direct children, in assignment order."""
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix=""):
        """``(dotted name, module)`` for this module (name ``prefix``) and every descendant,
        depth first, each module once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            kids = [(f"{name}.{n}" if name else n, c) for n, c in m.named_children()]
            stack.extend(reversed(kids))

    def modules(self):
        """This module and every descendant, depth first."""
        for _, m in self.named_modules():
            yield m

    def _named_members(self, which, dedupe):
        seen = set()
        for mname, m in self.named_modules():
            d = m.__dict__
            for n in m._registries()[which]:
                v = d[n]
                if v is None or (which == 0 and not v.requires_grad):
                    continue
                if dedupe:
                    if id(v) in seen:
                        continue
                    seen.add(id(v))
                yield (f"{mname}.{n}" if mname else n), v

    def named_parameters(self):
        """``(dotted name, Tensor)`` for every parameter, in the order of :meth:`parameters`."""
        return self._named_members(0, True)

    def parameters(self):
        """The parameters (leaf Tensors with ``requires_grad=True``), each once.

        The order is deterministic: a module's own parameters in assignment order, then its
        children's, depth first, in assignment order.  Pass it to
        ``cm.optim.Optimizer(model.parameters(), transform)``.
        """
        return [p for _, p in self._named_members(0, True)]

    def named_buffers(self):
        """``(dotted name, array)`` for every buffer (e.g. ``"bn.running_mean"``)."""
        return self._named_members(1, False)

    def buffers(self):
        """The buffers, as arrays."""
        return [b for _, b in self._named_members(1, False)]

    def num_parameters(self):
        """The number of scalar parameters (each shared tensor counted once)."""
        return int(sum(p.data.size for p in self.parameters()))

    # --- modes and gradients ----------------------------------------------------------------
    def train(self, mode=True):
        """Set ``training`` on this module and every descendant; returns ``self``."""
        mode = bool(mode)
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """``train(False)``: Dropout becomes the identity (or scales, in classic mode) and
        BatchNorm1d uses its running statistics.  Returns ``self``."""
        return self.train(False)

    def zero_grad(self):
        """Set every parameter's ``.grad`` to None."""
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag=True):
        """Turn recording of gradients for every parameter on or off (freeze / unfreeze).

        A frozen parameter stays registered (it is still in :meth:`state_dict`) but is no
        longer listed by :meth:`parameters`.
        """
        for m in self.modules():
            for n in list(m._registries()[0]):
                m.__dict__[n].requires_grad = flag
        return self

    def astype(self, dtype):
        """Convert every parameter and floating-point buffer to ``dtype`` in place; ``self``."""
        dt = np.dtype(dtype)
        for m in self.modules():
            d = m.__dict__
            for n in m._registries()[0]:
                p = d[n]
                if p is not None:
                    p.data = p.data.astype(dt)
            for n in m._registries()[1]:
                b = d[n]
                if b is not None and b.dtype.kind == "f":
                    d[n] = b.astype(dt)
        return self

    def to(self, device):
        """Move every parameter and buffer to ``device`` in place; ``self``.

        Parameters
        ----------
        device : {"numpy", "cupy"}
            ``"cupy"`` puts the arrays on the GPU (CuPy must see one), ``"numpy"`` brings them
            back to the host.  dtypes are kept.  An optimizer made before the move holds the
            old arrays: make it after.

        Examples
        --------
        >>> import calcml as cm
        >>> m = cm.nn.Linear(2, 3, rng=0).to("numpy")
        >>> type(m.weight.data).__module__
        'numpy'
        """
        where = f"calcml.nn.{type(self).__name__}.to"
        if device not in ("numpy", "cupy"):
            raise ValueError(f"{where}: unknown device {device!r}; expected 'numpy' or 'cupy'")
        for m in self.modules():
            d = m.__dict__
            for n in m._registries()[0]:
                p = d[n]
                if p is not None:
                    p.data = backend.to_backend(p.data, device, where)
            for n in m._registries()[1]:
                b = d[n]
                if b is not None:
                    d[n] = backend.to_backend(b, device, where)
        return self

    # --- saving and loading ---------------------------------------------------------------
    def _state_items(self):
        """``(name, owner, attribute, kind)`` for every parameter and buffer, in state order:
        depth first, each module's parameters then its buffers.  Shared tensors appear under
        every name, as in PyTorch."""
        out = []
        for mname, m in self.named_modules():
            d = m.__dict__
            params, buffers, _ = m._registries()
            for kind, reg in (("parameter", params), ("buffer", buffers)):
                for n in reg:
                    if d[n] is not None:
                        out.append(((f"{mname}.{n}" if mname else n), m, n, kind))
        return out

    def state_dict(self):
        """Parameters and buffers as a flat ``dict`` ``dotted name -> NumPy array`` (copies).

        Examples
        --------
        >>> import calcml as cm
        >>> m = cm.nn.Sequential(cm.nn.Linear(2, 3, rng=0), cm.nn.BatchNorm1d(3))
        >>> list(m.state_dict())
        ['0.weight', '0.bias', '1.weight', '1.bias', '1.running_mean', '1.running_var']
        """
        out = {}
        for name, m, attr, kind in self._state_items():
            v = m.__dict__[attr]
            if kind == "parameter":
                v = v.data
            out[name] = np.array(backend.to_numpy(v), copy=True)
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy the arrays of ``state_dict`` into the parameters and buffers.

        Parameters
        ----------
        state_dict : mapping of str to array
            As returned by :meth:`state_dict` (or an ``numpy.load``-ed ``.npz``).
        strict : bool
            With False, missing and unexpected names are ignored (shapes and dtypes are still
            checked for the names present in both).

        Raises
        ------
        ValueError
            Naming every entry that is missing, unexpected, or whose shape or dtype differs
            from the module's.  Nothing is changed unless every entry matches.
        """
        items = self._state_items()
        keys = list(state_dict.keys())
        names = [it[0] for it in items]
        known = set(names)
        missing = [n for n in names if n not in state_dict] if strict else []
        unexpected = [k for k in keys if k not in known] if strict else []
        problems = []
        if missing:
            problems.append(f"missing entries {missing}")
        if unexpected:
            problems.append(f"unexpected entries {unexpected}")
        updates = []
        for name, m, attr, kind in items:
            if name not in state_dict:
                continue
            cur = m.__dict__[attr]
            cur = cur.data if kind == "parameter" else cur
            new = state_dict[name]
            new = new.data if isinstance(new, Tensor) else new
            shape = tuple(np.shape(new))
            dt = getattr(new, "dtype", None)
            if shape != tuple(cur.shape) or dt != cur.dtype:
                problems.append(f"{name!r} has shape {shape} and dtype {dt}, the module's "
                                f"{kind} has shape {tuple(cur.shape)} and dtype {cur.dtype}")
                continue
            updates.append((m, attr, kind, cur, new))
        if problems:
            raise ValueError(f"calcml.nn.{type(self).__name__}.load_state_dict: "
                             + "; ".join(problems))
        for m, attr, kind, cur, new in updates:
            xp = backend.get_xp(cur)
            arr = np.array(new, copy=True) if xp is np else xp.asarray(backend.to_numpy(new))
            if kind == "parameter":
                p = m.__dict__[attr]
                if backend.writeable(cur) and xp is np:
                    cur[...] = arr  # in place: anything holding the array sees the new values
                else:
                    p.data = arr
            else:
                m.__dict__[attr] = arr
        return self

    # --- printing -------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside the parentheses of this module's ``repr``."""
        return ""

    def __repr__(self):
        kids = list(self.named_children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not kids:
            return head + ")"
        lines = [head]
        for n, c in kids:
            body = repr(c).replace("\n", "\n  ")
            lines.append(f"  ({n}): {body}")
        return "\n".join(lines) + "\n)"


# --- containers ---------------------------------------------------------------------------

class ModuleList(Module):
    """A list of modules, registered as children ``"0"``, ``"1"``, ...  (no ``forward``)."""

    def __init__(self, modules=()):
        super().__init__()
        self.__dict__["_list"] = []
        for m in modules:
            self.append(m)

    def append(self, module):
        """Add ``module`` at the end; returns ``self``."""
        if not isinstance(module, Module):
            raise TypeError(f"calcml.nn.{type(self).__name__}: element {len(self._list)} is a "
                            f"{type(module).__name__}, not a Module")
        setattr(self, str(len(self._list)), module)
        self._list.append(module)
        return self

    def __getitem__(self, index):
        if isinstance(index, slice):
            items = self._list[index]
            return Sequential(*items) if isinstance(self, Sequential) else ModuleList(items)
        return self._list[index]

    def __len__(self):
        return len(self._list)

    def __iter__(self):
        return iter(self._list)


class Sequential(ModuleList):
    """Modules applied one after the other: ``Sequential(f, g, h)(x) = h(g(f(x)))``.

    Indexable (``seq[0]``, ``seq[-1]``, ``seq[1:]`` a Sequential sharing the modules),
    iterable, and ``len()``-able; the children are named ``"0"``, ``"1"``, ...

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> model = cm.nn.Sequential(cm.nn.Linear(4, 8, rng=0), cm.nn.ReLU(), cm.nn.Linear(8, 1, rng=1))
    >>> model(np.ones((5, 4))).shape
    (5, 1)
    >>> [n for n, _ in model.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']

    Notes
    -----
    Each run of two or more ``Linear`` layers (with a bias) and ``ReLU``, ``Tanh``,
    ``Sigmoid`` or ``Identity`` modules is computed by ``calcml.ops.dense_stack`` as one node
    of the graph, h_k = σ_k(h_{k-1} W_kᵀ + b_k), whose backward step walks the layers in one
    call: the numbers are those of the modules called one by one, bit for bit, with fewer
    nodes to record and visit.  Subclasses of these modules, and modules whose ``forward``
    was replaced, are called as they are.
    """

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for step in self._fused_plan():
            if type(step) is tuple:  # a run of Linear layers and activations: one node
                x = _run_dense(step, x)
            else:
                x = step(x)
        return x

    def _fused_plan(self):
        """The modules, with each run of two or more of ``Linear`` (with a bias) and the
        activations ``ReLU``, ``Tanh``, ``Sigmoid``, ``Identity`` replaced by a tuple
        ``(linears, activation names, modules)`` that ``ops.dense_stack`` computes as one
        node (the same numbers, one backward step instead of one per module).  Only modules
        of exactly those classes whose ``forward`` is not replaced are fused, so a subclass
        keeps its own behaviour.  Cached until the list of modules changes or a module's
        ``forward`` is assigned."""
        key = (tuple(self._list), _FORWARD_ASSIGNMENTS[0])
        cached = self.__dict__.get("_dense_plan")
        if cached is not None and cached[0] == key:
            return cached[1]
        plan = _plan_runs(key[0])
        self.__dict__["_dense_plan"] = (key, plan)
        return plan


#: How many times a module's ``forward`` has been assigned: a plan made before is remade.
_FORWARD_ASSIGNMENTS = [0]


def _plan_runs(mods):
    from .layers import Identity, Linear, ReLU, Sigmoid, Tanh

    acts = {ReLU: "relu", Tanh: "tanh", Sigmoid: "sigmoid"}

    def plain(m, *classes):
        return type(m) in classes and "forward" not in m.__dict__

    plan, i, n = [], 0, len(mods)
    while i < n:
        lins, names, j = [], [], i
        while j < n and plain(mods[j], Linear) and mods[j].bias is not None:
            k, name = j + 1, "identity"
            if k < n and plain(mods[k], *acts):
                name = acts[type(mods[k])]
                k += 1
            while k < n and plain(mods[k], Identity):
                k += 1
            lins.append(mods[j])
            names.append(name)
            j = k
        if j - i >= 2:
            plan.append((tuple(lins), tuple(names), mods[i:j]))
            i = j
        else:
            plan.append(mods[i])
            i += 1
    return plan


def _run_dense(step, x):
    """A planned run of ``Sequential``: ``ops.dense_stack``, or the modules one by one when it
    cannot apply (a bias removed since, an input the first layer refuses: its own error)."""
    lins, names, mods = step
    first = lins[0]
    args = [x if type(x) is Tensor else as_input(x, first.weight.dtype)]
    for lin in lins:
        b = lin.bias
        if b is None:
            break
        args.append(lin.weight)
        args.append(b)
    else:
        try:
            return ops.dense_stack(*args, activations=names)
        except ValueError:  # checked only on failure: the layers say what is wrong
            pass
    for m in mods:
        x = m(x)
    return x


class Residual(Module):
    r"""A skip connection: ``y = module(x) + x``.

    Parameters
    ----------
    module : Module
        F, whose output must have the shape of its input.

    Notes
    -----
    The Jacobian is ∂y/∂x = ∂F/∂x + I, so the gradient reaching ``x`` is
    ∂L/∂x = ∂L/∂y (∂F/∂x + I): even where ∂F/∂x is small the identity carries the gradient
    through unchanged, which is why deep stacks of residual blocks train (chapter 9.6).

    Raises
    ------
    ValueError
        When ``module(x)`` does not have the shape of ``x`` (broadcasting is not allowed: it
        would silently change what the skip connection means).
    """

    def __init__(self, module):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"calcml.nn.Residual: expected a Module, got {type(module).__name__}")
        self.module = module

    def forward(self, x, *args, **kwargs):
        x = as_input(x)
        y = self.module(x, *args, **kwargs)
        if tuple(y.shape) != tuple(np.shape(x)):
            raise ValueError(f"calcml.nn.Residual: the wrapped {type(self.module).__name__} maps "
                             f"an input of shape {tuple(np.shape(x))} to shape "
                             f"{tuple(y.shape)}; y = F(x) + x needs F(x) of the input's shape")
        return y + x


# --- the functional view ------------------------------------------------------------------

@contextmanager
def _swapped(module, values):
    slots = {}
    for name, m, attr, _kind in module._state_items():
        slots.setdefault(name, (m, attr))
    unknown = [k for k in values if k not in slots]
    if unknown:
        raise ValueError(f"calcml.nn.functional_call: {type(module).__name__} has no parameter "
                         f"or buffer named {unknown}; it has {list(slots)}")
    # A tensor used in several places (tied weights) is listed once by named_parameters():
    # replacing it by that name replaces every place it is used.
    uses, before = {}, {}
    for name, m, attr, _kind in module._state_items():
        before[name] = cur = m.__dict__[attr]
        uses.setdefault(id(cur), []).append((m, attr))
    saved = []
    try:
        for k, v in values.items():
            m, attr = slots[k]
            cur = before[k]
            places = uses[id(cur)] if cur is not None else [(m, attr)]
            for m2, attr2 in places:
                saved.append((m2, attr2, m2.__dict__[attr2]))
                m2.__dict__[attr2] = v
        yield
    finally:
        for m, attr, old in reversed(saved):
            m.__dict__[attr] = old


def functional_call(module, params, *args, **kwargs):
    r"""Call ``module(*args, **kwargs)`` with some parameters or buffers replaced by ``params``.

    Parameters
    ----------
    module : Module
    params : dict
        ``dotted name -> value`` (arrays, or values traced by ``cm.grad`` & co.).  Names not
        given keep the module's own values.  Unknown names raise ``ValueError``.

    Returns
    -------
    The module's output.  The module is restored afterwards (also on an error); updates a
    module makes to a replaced buffer during the call are discarded with it.

    Notes
    -----
    This makes a module a pure function of its parameters, so transforms apply::

        f = lambda p, x: cm.sum(cm.nn.functional_call(model, p, x))
        cm.grad(f)({n: p.data for n, p in model.named_parameters()}, x)

    Examples
    --------
    >>> import numpy as np, calcml as cm
    >>> lin = cm.nn.Linear(2, 1, rng=0)
    >>> p = {"weight": np.array([[1.0, 2.0]]), "bias": np.array([0.5])}
    >>> cm.nn.functional_call(lin, p, np.array([[1.0, 1.0]]))
    array([[3.5]])
    """
    with _swapped(module, params):
        return module(*args, **kwargs)

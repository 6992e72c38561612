"""Bad input gets a clear error at the entry point (issue 2, item 10).

Each test checks the kind of error and that the message names what went wrong: the
function, the operation, the shapes or the dtype.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import calcml as cm

X = np.ones((3, 4))


def _in_grad(f, x=X):
    return cm.grad(lambda x: cm.sum(f(x)))(x)


# --- transforms -----------------------------------------------------------------------------

def test_grad_of_a_non_scalar():
    with pytest.raises(ValueError, match=r"calcml\.grad: .*scalar.*shape \(3, 4\)"):
        cm.grad(lambda x: x * 2.0)(X)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        cm.value_and_grad(lambda x: x[0])(X)
    with pytest.raises(ValueError, match=r"calcml\.grad: .*scalar"):
        cm.hessian(lambda x: x)(np.ones(2))


def test_grad_of_something_not_an_array():
    with pytest.raises(TypeError, match=r"calcml\.grad: .*returned str"):
        cm.grad(lambda x: "loss")(X)
    with pytest.raises(TypeError, match=r"calcml\.grad: .*tuple.*has_aux=True"):
        cm.grad(lambda x: (cm.sum(x), 1))(X)
    with pytest.raises(TypeError, match=r"has_aux=True .*\(value, aux\)"):
        cm.grad(lambda x: cm.sum(x), has_aux=True)(X)
    with pytest.raises(TypeError, match=r"calcml\.grad: .*dtype int64"):
        cm.grad(lambda x: cm.sum(x > 0))(X)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_input_to_grad(dtype):
    x = np.ones(3, dtype=dtype)
    name = np.dtype(dtype).name
    with pytest.raises(TypeError, match=rf"calcml\.grad: argument 0 has dtype {name}.*floating"):
        cm.grad(lambda x: cm.sum(x * 2.0))(x)
    with pytest.raises(TypeError, match=rf"calcml\.grad: argument 1 has dtype {name}"):
        cm.grad(lambda a, b: cm.sum(a * b), argnums=1)(np.ones(3), x)
    with pytest.raises(TypeError, match=rf"calcml\.jvp: primal 0 has dtype {name}"):
        cm.jvp(cm.sin, (x,), (np.ones(3),))
    with pytest.raises(TypeError, match=rf"calcml\.jacobian: argument 0 has dtype {name}"):
        cm.jacobian(cm.sin, mode="fwd")(x)
    with pytest.raises(TypeError, match=rf"dtype {name}"):
        cm.jacobian(cm.sin, mode="rev")(x)
    with pytest.raises(TypeError, match=rf"dtype {name}"):
        cm.grad(lambda p: cm.sum(p["w"]))({"w": x})


def test_integer_input_to_a_tensor_that_requires_grad():
    with pytest.raises(TypeError, match=r"calcml\.tensor: .*floating.*int64"):
        cm.tensor([1, 2, 3], requires_grad=True)


def test_argnums_out_of_range_or_empty():
    with pytest.raises(ValueError, match=r"argnums=2 .*1 positional argument"):
        cm.grad(lambda x: cm.sum(x), argnums=2)(X)
    with pytest.raises(ValueError, match=r"argnums"):
        cm.grad(lambda x: cm.sum(x), argnums=())(X)
    with pytest.raises(ValueError, match=r"argument 0 holds no array"):
        cm.grad(lambda d: 0.0)({})


def test_jvp_with_non_tuple_primals_or_tangents():
    with pytest.raises(TypeError, match=r"calcml\.jvp: primals must be a tuple.*ndarray"):
        cm.jvp(cm.sin, X, (X,))
    with pytest.raises(TypeError, match=r"calcml\.jvp: tangents must be a tuple.*ndarray"):
        cm.jvp(cm.sin, (X,), X)
    with pytest.raises(TypeError, match=r"calcml\.hvp: primals and tangents must be tuples"):
        cm.hvp(lambda x: cm.sum(x), X, X)


def test_jvp_tangent_mismatches():
    with pytest.raises(ValueError, match=r"2 primals but 1 tangents"):
        cm.jvp(lambda a, b: a * b, (X, X), (X,))
    with pytest.raises(ValueError, match=r"tangent 0 has shape \(3,\) but its primal needs "
                                         r"\(3, 4\)"):
        cm.jvp(cm.sin, (X,), (np.ones(3),))
    with pytest.raises(TypeError, match=r"tangent 0 has dtype int64"):
        cm.jvp(cm.sin, (X,), (np.ones((3, 4), np.int64),))
    with pytest.raises(ValueError, match=r"tangent 0 has shape \(2, 3, 5\) but its primal needs "
                                         r"\(2, 3, 4\)"):
        cm.jvp(cm.sin, (X,), (np.ones((2, 3, 5)),), batched=True)
    with pytest.raises(ValueError, match=r"tangent 0 has structure"):
        cm.jvp(lambda d: d["a"], ({"a": X},), ({"b": X},))


def test_vjp_cotangent_mismatches():
    _, vjp_fn = cm.vjp(cm.sin, X)
    with pytest.raises(ValueError, match=r"cotangent of shape \(3,\) for an output of shape "
                                         r"\(3, 4\)"):
        vjp_fn(np.ones(3))
    with pytest.raises(ValueError, match=r"structure"):
        vjp_fn((X,))
    with pytest.raises(TypeError, match=r"at least one primal"):
        cm.vjp(cm.sin)


def test_jacobian_bad_mode_and_empty_container_argument():
    with pytest.raises(ValueError, match=r"mode must be 'rev' or 'fwd', got 'bwd'"):
        cm.jacobian(cm.sin, mode="bwd")
    for mode in ("rev", "fwd"):
        with pytest.raises(ValueError, match=r"calcml\.jacobian: argument 0 holds no array"):
            cm.jacobian(lambda d: X, mode=mode)({})
        with pytest.raises(TypeError, match=r"calcml\.jacobian: argument 0 has dtype <U1"):
            cm.jacobian(lambda d: X, mode=mode)({"a": np.array(["s"])})


# --- operations: the message names the op and the shapes -------------------------------------

# (op(s) the message may name, function, error kind, parts of the message, also on plain arrays)
# The operators on plain NumPy arrays are NumPy's own business; cm.* functions are calcml's.
SHAPE_ERRORS = [
    ("matmul", lambda x: cm.matmul(x, np.ones(5)), ValueError, ["(3, 4)", "(5,)"], True),
    ("matmul", lambda x: x @ np.ones((5, 2)), ValueError, ["(3, 4)", "(5, 2)"], False),
    ("matmul", lambda x: np.ones((2, 5)) @ x, ValueError, ["(2, 5)", "(3, 4)"], False),
    ("matmul", lambda x: cm.matmul(x[0, 0], x), ValueError, ["()", "(3, 4)"], True),
    ("dot|matmul", lambda x: cm.dot(x, np.ones(5)), ValueError, ["(3, 4)", "(5,)"], True),
    ("add", lambda x: x + np.ones(5), ValueError, ["(3, 4)", "(5,)"], False),
    ("multiply", lambda x: x * np.ones((2, 4)), ValueError, ["(3, 4)", "(2, 4)"], False),
    ("maximum", lambda x: cm.maximum(x, np.ones(5)), ValueError, ["(3, 4)", "(5,)"], True),
    ("where", lambda x: cm.where(np.ones(5) > 0, x, 0.0), ValueError, ["(5,)", "(3, 4)"], True),
    ("reshape", lambda x: cm.reshape(x, (5,)), ValueError, ["(3, 4)", "(5,)"], True),
    ("reshape", lambda x: x.reshape(5, -1), ValueError, ["12", "(5, -1)"], False),
    ("broadcast_to", lambda x: cm.broadcast_to(x, (2, 5)), ValueError, ["(3, 4)", "(2, 5)"],
     True),
    ("concatenate", lambda x: cm.concatenate([x, np.ones((2, 3))]), ValueError,
     ["(3, 4)", "(2, 3)"], True),
    ("stack", lambda x: cm.stack([x, np.ones(3)]), ValueError, ["(3,)", "(3, 4)"], True),
    ("einsum", lambda x: cm.einsum("ij,jk->ik", x, np.ones((3, 2))), ValueError,
     ["(3, 4)", "(3, 2)"], True),
    ("einsum", lambda x: cm.einsum("ijk->i", x), ValueError, ["(3, 4)", "subscripts"], True),
    ("getitem", lambda x: x[5], IndexError, ["(3, 4)", "5"], False),
    ("take|getitem", lambda x: cm.take(x, np.array([20])), IndexError, ["20", "12"], True),
    ("sum", lambda x: cm.sum(x, axis=2), np.exceptions.AxisError, ["axis 2", "dimension 2"],
     False),  # plain: see test_axis_error_keeps_its_kind_on_plain_arrays
    ("softmax", lambda x: cm.softmax(x, axis=3), np.exceptions.AxisError, ["axis 3"], True),
    ("transpose", lambda x: cm.transpose(x, (0, 0)), ValueError, ["(3, 4)"], True),
    ("squeeze", lambda x: cm.squeeze(x, 0), ValueError, ["(3, 4)"], True),
    ("clip", lambda x: cm.clip(x), ValueError, ["a_min"], True),
]
CASES = [pytest.param(*e[:4], traced, id=f"{e[0]}-{i}-{'traced' if traced else 'plain'}")
         for i, e in enumerate(SHAPE_ERRORS) for traced in (True, False) if traced or e[4]]


def _squash(s):
    return s.replace(" ", "")


@pytest.mark.parametrize("op,fn,kind,parts,traced", CASES)
def test_shape_mismatch_names_the_op_and_shapes(op, fn, kind, parts, traced):
    with pytest.raises(kind) as info:
        if traced:
            _in_grad(fn)
        else:
            fn(X)
    msg = str(info.value)
    # a composite (dot, take) may name the primitive that refused
    assert any(f"calcml.{o}" in msg for o in op.split("|")), msg
    for part in parts:  # NumPy's part of a message may write (2,5) for (2, 5)
        assert _squash(part) in _squash(msg), f"{part!r} not in {msg!r}"


def test_axis_error_keeps_its_kind_on_plain_arrays():
    # Traced, cm.sum raises AxisError (catchable as ValueError, like NumPy); on plain arrays the
    # same call should too.
    with pytest.raises(np.exceptions.AxisError, match=r"calcml\.sum"):
        cm.sum(X, axis=2)


def test_shape_mismatch_in_forward_mode_and_on_tensors():
    with pytest.raises(ValueError, match=re.escape("calcml.matmul: cannot apply to arguments "
                                                   "(float32 (3, 4), float64 (5,))")):
        cm.jvp(lambda x: x @ np.ones(5), (X.astype(np.float32),), (X.astype(np.float32),))
    t = cm.tensor(X, requires_grad=True)
    with pytest.raises(ValueError, match=r"calcml\.matmul: .*\(3, 4\).*\(5,\)"):
        t @ cm.tensor(np.ones(5))
    with pytest.raises(ValueError, match=r"calcml\.add: .*\(3, 4\).*\(5,\)"):
        t + np.ones(5)


# --- NumPy functions calcml does not provide -------------------------------------------------

@pytest.mark.parametrize(
    "fn,name",
    [
        (lambda x: np.sinh(x), "numpy.sinh"),
        (lambda x: np.arcsinh(x), "numpy.arcsinh"),
        (lambda x: np.cumsum(x, axis=0), "numpy.cumsum"),
        (lambda x: np.linalg.norm(x), "numpy.linalg.norm"),
        (lambda x: np.add.reduce(x), "numpy.add.reduce"),
        (lambda x: np.exp(x, out=np.empty((3, 4))), "numpy.exp with keyword arguments (out)"),
    ],
)
def test_numpy_function_calcml_does_not_provide(fn, name):
    for dtype in (np.float64, np.float32):
        with pytest.raises(TypeError) as info:
            _in_grad(fn, X.astype(dtype))
        msg = str(info.value)
        assert f"calcml: {name} is not differentiable" in msg, msg
        assert f"{np.dtype(dtype).name} (3, 4)" in msg, msg  # the argument, not "ReverseBox"
        assert "Box" not in msg
    with pytest.raises(TypeError, match=re.escape(name)):
        cm.jvp(fn, (X,), (X,))
    with pytest.raises(TypeError, match=re.escape(name)):
        fn(cm.tensor(X, requires_grad=True))


def test_a_traced_value_cannot_leave_the_trace():
    with pytest.raises(TypeError, match=r"cannot become a Python number"):
        cm.grad(lambda x: float(cm.sum(x)))(X)
    with pytest.raises(TypeError, match=r"cannot become a NumPy array"):
        cm.grad(lambda x: cm.sum(np.asarray(x)))(X)
    with pytest.raises(TypeError, match=r"cannot become a Python number"):
        cm.jvp(lambda x: int(cm.sum(x)), (X,), (X,))


# --- Tensor misuse --------------------------------------------------------------------------

def test_tensor_backward_errors():
    x = cm.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"implied only for a scalar.*shape \(2,\)"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"gradient of shape \(3,\) for a tensor of shape \(2,\)"):
        (x * 2.0).backward(np.ones(3))
    with pytest.raises(RuntimeError, match=r"does not require a gradient"):
        cm.tensor([1.0, 2.0]).sum().backward()
    with pytest.raises(TypeError, match=r"calcml\.tensor: .*traced"):
        cm.grad(lambda v: cm.sum(cm.tensor(v)))(np.ones(2))

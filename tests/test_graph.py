"""Tests of cm.make_graph (calcml/graph.py) and its drawing (calcml.viz.draw_graph)."""

import numpy as np
import pytest

import calcml as cm
from calcml import viz
from calcml.graph import Graph


def f(x, y):
    return cm.sin(x) * y + cm.exp(x)


def test_small_graph_structure():
    x, y = np.array(0.5), np.array(2.0)
    g = cm.make_graph(f, x, y)
    assert isinstance(g, Graph)
    assert [n.name for n in (g.nodes[i] for i in g.inputs)] == ["x", "y"]
    assert [n.op for n in g.ops] == ["sin", "multiply", "exp", "add"]
    assert len(g.outputs) == 1 and g.nodes[g.outputs[0]].op == "add"
    assert sorted(g.op_counts().items()) == [("add", 1), ("exp", 1), ("multiply", 1),
                                             ("sin", 1)]
    # x feeds sin and exp, y feeds the product: 6 edges in all
    assert len(g.edges) == 6
    sin = next(n for n in g.ops if n.op == "sin")
    mul = next(n for n in g.ops if n.op == "multiply")
    assert g.parents(sin.id) == [g.inputs[0]]
    assert g.parents(mul.id) == [sin.id, g.inputs[1]]
    assert set(g.children(g.inputs[0])) == {sin.id, next(n.id for n in g.ops if n.op == "exp")}


def test_values_shapes_and_topological_order():
    x, y = np.array(0.5), np.array(2.0)
    g = cm.make_graph(f, x, y)
    out = g.nodes[g.outputs[0]]
    assert out.value == pytest.approx(np.sin(0.5) * 2.0 + np.exp(0.5), abs=1e-15)
    assert all(n.shape == () and n.dtype == "float64" for n in g.nodes)
    assert all(src < dst for src, dst, _ in g.edges)
    depth = g.layers()
    for n in g.ops:
        assert depth[n.id] == 1 + max(depth[p] for p in g.parents(n.id))
    assert all(depth[i] == 0 for i in g.inputs)


def test_backward_sweep_over_graph_matches_grad():
    """The graph is what reverse mode walks: a hand-made backward pass over it gives cm.grad."""
    local = {"sin": lambda a, o: [np.cos(a[0])], "exp": lambda a, o: [o],
             "multiply": lambda a, o: [a[1], a[0]], "add": lambda a, o: [1.0, 1.0]}
    x, y = np.array(-0.7), np.array(1.3)
    g = cm.make_graph(f, x, y)
    adj = {n.id: 0.0 for n in g.nodes}
    adj[g.outputs[0]] = 1.0
    for n in reversed(g.ops):
        ps = g.parents(n.id)
        for d, p in zip(local[n.op]([g.nodes[p].value for p in ps], n.value), ps, strict=True):
            adj[p] += adj[n.id] * d
    want = cm.grad(f, argnums=(0, 1))(x, y)
    np.testing.assert_allclose([adj[i] for i in g.inputs], want, rtol=1e-15, atol=1e-15)


def test_constants_arrays_and_params():
    g = cm.make_graph(lambda w: cm.sum(2.0 * w - 1.5, axis=0), np.ones((3, 2)))
    consts = [n for n in g.nodes if n.kind == "const"]
    assert {"2", "1.5"} <= {c.name for c in consts}
    assert g.nodes[g.inputs[0]].shape == (3, 2)
    s = g.nodes[g.outputs[0]]
    assert s.op == "sum" and s.shape == (2,)
    assert "axis" in s.params and "axis" in s.label
    np.testing.assert_allclose(s.value, [1.5, 1.5])
    g2 = cm.make_graph(lambda w: cm.sum(2.0 * w - 1.5, axis=0), np.ones((3, 2)),
                       constants=False)
    assert all(n.kind != "const" for n in g2.nodes)
    assert len(g2.ops) == len(g.ops)


def test_multiple_outputs_unused_input_and_names():
    g = cm.make_graph(lambda a, b, c: (cm.tanh(a), a * b), 1.0, 2.0, 3.0, names=["p", "q", "r"])
    assert [g.nodes[i].name for i in g.inputs] == ["p", "q", "r"]
    assert [g.nodes[o].op for o in g.outputs] == ["tanh", "multiply"]
    r = g.inputs[2]
    assert g.children(r) == [] and g.parents(r) == []
    with pytest.raises(ValueError, match="names"):
        cm.make_graph(f, 1.0, 2.0, names=["only one"])


def test_integer_inputs_are_promoted():
    g = cm.make_graph(lambda x: x * x, 3)
    assert g.nodes[g.inputs[0]].dtype == "float64"
    assert g.nodes[g.outputs[0]].value == 9.0


def test_make_graph_leaves_later_transforms_alone():
    cm.make_graph(f, 0.1, 0.2)
    gx, gy = cm.grad(f, argnums=(0, 1))(np.array(0.1), np.array(0.2))
    assert gx == pytest.approx(np.cos(0.1) * 0.2 + np.exp(0.1))
    assert gy == pytest.approx(np.sin(0.1))


def test_to_dot():
    g = cm.make_graph(f, 0.5, 2.0)
    dot = g.to_dot()
    assert dot.startswith('digraph "calcml" {') and dot.rstrip().endswith("}")
    assert dot.count("->") == len(g.edges)
    for n in g.nodes:
        assert f"  n{n.id} [" in dot
    assert "peripheries=2" in dot  # the output is marked
    assert 'label="sin"' in dot and 'label="x"' in dot


def test_layout_and_drawing(tmp_path):
    g = cm.make_graph(lambda x, y: cm.sin(x) * y + cm.exp(x * y) - 3.0 * x, 0.5, 1.5)
    pos = viz.graph_layout(g)
    assert set(pos) == {n.id for n in g.nodes}
    depth = g.layers()
    assert all(pos[i][0] == depth[i] for i in pos)
    # no two nodes at the same place
    assert len(set(pos.values())) == len(pos)
    fig = viz.draw_graph(g, notes={g.inputs[0]: "v = 0.5"}, title="test")
    path = viz.save_figure(fig, tmp_path / "sub" / "graph.png")
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"

"""The step graph: what the builder produces, and verify() catching broken invariants."""
import json
import os
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

import rnncc
from rnncc.graph import Graph, GraphError, verify
from rnncc.graph.printing import to_dot, to_json

GOLDEN = Path(__file__).parents[1] / "golden"


def test_every_shipped_graph_verifies(shipped_cells):
    for cell in shipped_cells.values():
        verify(cell.graph)


def test_lstm_graph_structure(shipped_cells):
    g = shipped_cells["lstm"].graph
    ops = [g.node(n).op for n in g.order]
    assert ops.count("matmul") == 8 and ops.count("sigmoid") == 3 and ops.count("tanh") == 2
    assert set(g.updates) == {"h", "c"} and g.output == g.updates["h"]
    assert g.node(g.updates["c"]).name == "c'" and g.node(g.updates["c"]).shape == ("H",)
    # h' reads c' (the new cell state), not the previous c
    h_ancestors = nx.ancestors(g.nx, g.updates["h"])
    assert g.updates["c"] in h_ancestors
    for name, nid in g.params.items():
        want = ("H", "I") if name.startswith("W") else ("H", "H") if name.startswith("U") \
            else ("H",)
        assert g.node(nid).shape == want, name


def test_scalar_reductions_broadcast_back(shipped_cells):
    g = shipped_cells["lnlstm"].graph
    means = [n for n in g.order if g.node(n).op == "mean"]
    assert means and all(g.node(n).shape == () for n in means)
    assert g.node(g.updates["h"]).shape == ("H",)


def test_output_may_be_an_intermediate(rng):
    cell = rnncc.compile("cell t\ninput x[I]\nstate h[H]\noutput s\n"
                         "h' = tanh(W @ x + U @ h)\ns = mean(h')\n")
    assert cell.output == "s" and cell.graph.node(cell.graph.output).shape == ()
    p = cell.init_params(seed=0, dtype=np.float64, I=3, H=5)
    x = rng.standard_normal((4, 2, 3))
    ys, final = cell.forward(p, x)
    assert ys.shape == (4, 2, 1)  # a scalar output has dim 1
    np.testing.assert_allclose(ys[-1, :, 0], final["h"].mean(axis=1), rtol=1e-12)


def _tiny_graph():
    g = Graph("t", ("H",))
    h = g.add("state", (), ("H",), name="h")
    t = g.add("tanh", (h,), ("H",), name="h'")
    g.results = {"updates": {"h": t}, "output": {"h": t}}
    return g, h, t


def test_verify_accepts_a_good_hand_built_graph():
    g, _, _ = _tiny_graph()
    assert verify(g) is g


def test_verify_catches_a_wrong_shape():
    g, h, _ = _tiny_graph()
    bad = g.add("mean", (h,), ("H",))  # mean gives a scalar
    g.results["updates"] = {"h": bad}
    with pytest.raises(GraphError, match="its op gives"):
        verify(g)


def test_verify_catches_an_undeclared_dimension_and_missing_update():
    g, h, t = _tiny_graph()
    g.add("tanh", (h,), ("Q",))
    with pytest.raises(GraphError, match="neither a declared dimension"):
        verify(g)
    g, h, t = _tiny_graph()
    g.results["updates"] = {}
    with pytest.raises(GraphError, match="updates"):
        verify(g)


def test_verify_catches_a_constant_without_a_value():
    g, h, _ = _tiny_graph()
    g.add("const", (), (), {})
    with pytest.raises(GraphError, match="a constant is a scalar with a value"):
        verify(g)


def test_verify_catches_edges_that_disagree_with_arguments():
    g, h, t = _tiny_graph()
    g.nx.add_edge(h, t, index=1)  # a second, phantom argument edge
    with pytest.raises(GraphError, match="disagree"):
        verify(g)


def test_repeated_argument_keeps_both_edges():
    cell = rnncc.compile("cell sq\ninput x[I]\nstate h[H]\nh' = h * h + W @ x\n")
    g = cell.graph
    mul = next(n for n in g.order if g.node(n).op == "mul")
    assert sorted(i for _, _, i in g.nx.in_edges(mul, data="index")) == [0, 1]
    verify(g)


@pytest.mark.parametrize("stage", ["forward", "backward"])
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_text_form_golden(shipped_cells, name, stage):
    """The printed graphs are reviewed as diffs: regenerate with RNNCC_UPDATE_GOLDEN=1."""
    text = shipped_cells[name].show("text", stage=stage)
    path = GOLDEN / f"{name}.{stage}.txt"
    if os.environ.get("RNNCC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_json_form_is_complete(shipped_cells):
    g = shipped_cells["gru"].graph
    doc = json.loads(to_json(g))
    assert doc["cell"] == "gru" and doc["kind"] == "forward" and doc["dims"] == ["I", "H"]
    assert len(doc["nodes"]) == len(g) and len(doc["edges"]) == g.nx.number_of_edges()
    by_id = {n["id"]: n for n in doc["nodes"]}
    for src, dst, index in doc["edges"]:
        assert by_id[dst]["args"][index] == src
    assert doc["results"] == {"updates": {"h": g.updates["h"]}, "output": {"h": g.output}}
    assert by_id[doc["results"]["updates"]["h"]]["name"] == "h'"


def test_dot_form_parses_as_a_graph(shipped_cells):
    dot = to_dot(shipped_cells["lstm"].graph)
    g = shipped_cells["lstm"].graph
    assert dot.startswith('digraph "lstm" {') and dot.rstrip().endswith("}")
    assert dot.count(" -> ") == g.nx.number_of_edges()
    assert dot.count("peripheries=2") == 2  # the two roots h' and c'


def test_a_cycle_is_a_graph_error():
    """verify finds a cycle through the topological order it builds (none exists for one)."""
    graph = rnncc.compile("cell looped\ninput x[H]\nstate h[H]\nh' = tanh(x + h)\n").graph
    add = next(n for n in graph.order if graph.node(n).op == "add")
    graph.nx.add_edge(graph.order[-1], add, index=2)   # the result feeds its own argument
    graph.__dict__.pop("order", None)
    with pytest.raises(GraphError, match="has a cycle"):
        verify(graph)

"""The recurrence analysis (passes/recurrence.py): each cell's class, forward and backward, as
the Plan records it, and the extracted a and b of a linear recurrence held to the graph itself:
the new state, evaluated by the reference interpreter at two values of the old one, is a * s + b
with the same a and b."""
import json

import numpy as np
import pytest
from hypothesis import given, settings

import rnncc
from rnncc.backends.reference import evaluate
from rnncc.ops.base import EvalContext, dim_size
from rnncc.passes.recurrence import NotLinear, affine, classify

from ..strategies import lane_cell_specs
from ..test_properties import ALWAYS_THE_SAME

# each shipped cell's class, forward and backward, from its equations (written here by hand)
EXPECTED = {
    "rnn": ("matrix", "matrix"), "rnn_relu": ("matrix", "matrix"),
    "lstm": ("matrix", "matrix"), "gru": ("matrix", "matrix"), "mgu": ("matrix", "matrix"),
    "peephole_lstm": ("matrix", "matrix"), "lnlstm": ("matrix", "matrix"),
    # h' = relu(W x + u * h + b); SRU's gates read v * c: nonlinear in the state, but the
    # backward's Jacobian is diagonal, so it is linear in the carried gradient
    "indrnn": ("elementwise", "linear"), "sru": ("elementwise", "linear"),
    "mingru": ("linear", "linear"), "minlstm": ("linear", "linear"), "qrnn": ("linear", "linear"),
}


def test_every_shipped_cell_is_classified_here(shipped_cells):
    assert set(shipped_cells) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_cells_classes_in_the_plan(shipped_cells, name):
    cell = shipped_cells[name]
    forward, backward = EXPECTED[name]
    assert classify(cell.graph).kind == forward
    assert classify(cell.backward_graph).kind == backward
    doc = json.loads(cell.show(stage="plan", format="json"))
    assert doc["forward"]["recurrence"] == forward
    assert doc["backward"]["recurrence"] == backward
    assert cell.inference_plan.recurrence == forward
    text = cell.show(stage="plan")
    assert f"recurrence: {forward}" in text.split("\nbackward:\n")[0]
    assert f"recurrence: {backward}" in text.split("\nbackward:\n")[1]
    # a cell whose state meets no matrix runs as lanes (columns: every op is elementwise
    # over H); a matrix cell only step by step
    if forward == "matrix":
        assert cell.schedules == ("step",)
        assert doc["forward"]["schedules"] == ["step"]
    else:
        # linear both ways: the scan too (its chunk step printed in the plan)
        both = forward == backward == "linear"
        assert cell.schedules == (("lanes", "scan", "step") if both else ("lanes", "step"))
        assert doc["forward"]["lanes"] == "columns"
        assert ("scan" in doc["forward"]) == (forward == "linear")
        assert ("scan" in doc["backward"]) == (backward == "linear")
        assert text.count("scan, per chunk of steps") == (forward == "linear") + 1


def test_a_product_of_the_state_that_only_feeds_the_output_is_not_a_matrix_recurrence():
    cell = rnncc.compile("cell c\ninput x[I]\nstate h[H]\nparam V[P, H]\noutput y\n"
                         "h' = sigmoid(W @ x) * h\ny = V @ h'\n")
    assert classify(cell.graph).kind == "linear"
    assert cell.plan.forward.recurrence == "linear"


def test_a_row_reduction_of_the_state_makes_lanes_whole_rows():
    cell = rnncc.compile("cell c\ninput x[I]\nstate h[H]\noutput h\n"
                         "h' = tanh(W @ x + h - mean(h))\n")
    assert classify(cell.graph).kind == "elementwise"
    assert cell.plan.forward.lanes == "rows"
    assert cell.schedules == ("lanes", "step")


def test_a_state_read_by_another_states_update_is_not_linear():
    cell = rnncc.compile("cell c\ninput x[I]\nstate h[H], c[H]\noutput h\n"
                         "c' = sigmoid(W @ x) * c\nh' = 0.5 * h + c\n")
    r = classify(cell.graph)
    assert r.kind == "elementwise" and "depends on c" in r.reason
    with pytest.raises(NotLinear, match="not linear"):
        affine(cell.graph)


def _bind(graph, sizes, B, rng, carried_values):
    """Random values for every leaf of a step graph; the carried leaves from carried_values."""
    carried = {n: s for s, n in graph.carried[0].items()}
    bound = {}
    for n in graph.order:
        node = graph.node(n)
        if node.opdef.kind != "leaf":
            continue
        shape = tuple(dim_size(d, sizes) for d in node.shape)
        if n in carried:
            bound[n] = carried_values[carried[n]]
        elif node.op == "param":
            bound[n] = rng.uniform(-1, 1, shape)
        else:
            bound[n] = rng.uniform(-1, 1, (B, *shape))
    return bound


def assert_exactly_affine(graph, sizes, seed=0, B=3):
    """s' at two random values of s equals a * s + b, a and b read from affine(graph) on the
    same leaves (computed at the first value of s: they must not depend on it)."""
    g = affine(graph)
    ctx = EvalContext(sizes, np.float64)
    rng = np.random.default_rng(seed)
    width = {s: tuple(dim_size(d, sizes) for d in g.node(n).shape)
             for s, n in g.carried[0].items()}
    first = {s: rng.standard_normal((B, *w)) for s, w in width.items()}
    second = {s: 3 * rng.standard_normal((B, *w)) for s, w in width.items()}
    bound = _bind(g, sizes, B, rng, first)
    values = evaluate(g, bound, ctx)
    others = {n: v for n, v in bound.items() if n not in g.carried[0].values()}
    again = evaluate(g, {**others, **{g.carried[0][s]: v for s, v in second.items()}}, ctx)
    for s in width:
        a, b = values[g.results["a"][s]], values[g.results["b"][s]]
        for state, vals in ((first, values), (second, again)):
            new = vals[g.carried[1][s]]
            np.testing.assert_allclose(new, np.broadcast_to(a * state[s] + b, new.shape),
                                       rtol=1e-12, atol=1e-12)
        # a and b read no state: the same at the second value
        np.testing.assert_array_equal(again[g.results["a"][s]], a)
        np.testing.assert_array_equal(again[g.results["b"][s]], b)


@pytest.mark.parametrize("name", ["mingru", "minlstm", "qrnn"])
def test_shipped_linear_cells_are_exactly_affine(shipped_cells, name):
    assert_exactly_affine(shipped_cells[name].graph, {"I": 3, "H": 5})


@pytest.mark.parametrize("name", ["mingru", "minlstm", "qrnn", "indrnn", "sru"])
def test_backward_of_lane_cells_is_exactly_affine_in_the_carried_gradient(shipped_cells, name):
    assert_exactly_affine(shipped_cells[name].backward_graph, {"I": 3, "H": 5}, seed=1)


@pytest.mark.filterwarnings("ignore::rnncc.SpecWarning")
@settings(max_examples=40, **ALWAYS_THE_SAME)
@given(gen=lane_cell_specs(linear=True))
def test_generated_linear_cells_are_classified_linear_and_exactly_affine(gen):
    cell = rnncc.compile(gen.text)
    assert classify(cell.graph).kind == "linear", gen.text
    assert_exactly_affine(cell.graph, gen.sizes)
    assert classify(cell.backward_graph).kind == "linear", gen.text
    assert_exactly_affine(cell.backward_graph, gen.sizes, seed=2)


@pytest.mark.filterwarnings("ignore::rnncc.SpecWarning")
@settings(max_examples=40, **ALWAYS_THE_SAME)
@given(gen=lane_cell_specs(linear=False))
def test_generated_elementwise_cells_are_classified_elementwise(gen):
    cell = rnncc.compile(gen.text)
    assert classify(cell.graph).kind == "elementwise", gen.text
    assert cell.schedules == ("lanes", "step")
    # BPTT's step is linear in the carried gradients whatever the forward is
    back = classify(cell.backward_graph).kind
    assert back in ("linear", "elementwise"), gen.text
    if len(gen.states) == 1:   # one state: its Jacobian is diagonal
        assert back == "linear", gen.text

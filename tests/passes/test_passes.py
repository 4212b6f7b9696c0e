"""Every pass preserves meaning: the reference interpreter gives the same results on the graph
before and after it (forward and backward, float64); and each pass does its job."""
from collections import Counter

import numpy as np
import pytest

import rnncc
from rnncc.graph.schedule import verify_schedule
from rnncc.backends import reference
from rnncc.graph import verify
from rnncc.passes import PASS_NAMES, cse, dce, fold_constants, optimize, simplify
from rnncc.plan import with_saved
from rnncc.runtime.gradcheck import random_problem


def run_graphs(cell, forward, backward, prob):
    """Forward with `forward` and BPTT with `backward` on the reference interpreter."""
    dtype = np.dtype(np.float64)
    ys, final, tape = reference.forward(forward, prob.p, prob.xs, prob.state, prob.lengths,
                                        prob.sizes, dtype, backward=backward)
    grads = reference.backward(forward, backward, tape, prob.p, prob.xs, prob.dys, prob.dfinal,
                               prob.lengths, prob.sizes, dtype)
    return ys, final, grads


def assert_same(a, b):
    (ys1, f1, (p1, x1, s1)), (ys2, f2, (p2, x2, s2)) = a, b
    np.testing.assert_allclose(ys1, ys2, rtol=1e-12, atol=1e-14)
    for group1, group2 in ((f1, f2), (p1, p2), (x1, x2), (s1, s2)):
        assert group1.keys() == group2.keys()
        for k in group1:
            np.testing.assert_allclose(group1[k], group2[k], rtol=1e-12, atol=1e-14)


def check_pipeline(cell, prob):
    """After every pass, forward and backward graphs still compute the same thing."""
    training = with_saved(cell.graph, cell.backward_graph)
    base = run_graphs(cell, training, cell.backward_graph, prob)
    for name in PASS_NAMES:
        forward = verify(optimize(training, until=name))
        backward = verify(optimize(cell.backward_graph, until=name))
        assert_same(base, run_graphs(cell, forward, backward, prob))
    for graph in (forward, backward):  # optimize ran it too; here it is the test's own claim
        verify_schedule(graph)


@pytest.mark.parametrize("name", rnncc.shipped())
def test_every_pass_preserves_meaning(shipped_cells, name):
    cell = shipped_cells[name]
    check_pipeline(cell, random_problem(cell, T=3, B=3, seed=7, ragged=True))


def ops(graph):
    return Counter(graph.node(n).op for n in graph.order)


def test_constant_folding_and_simplification():
    cell = rnncc.compile("cell t\ninput x[I]\nstate h[H]\n"
                         "h' = 1 * tanh(h) * (2 - 1) + 0 + -(-(h / 1)) - 0 + (3 * 4 - 12) "
                         "+ h ** 1\n")
    folded = fold_constants(cell.graph)
    assert {folded.node(n).attrs["value"] for n in folded.order
            if folded.node(n).op == "const"} >= {1.0, 0.0}
    simple = dce(simplify(folded))
    remaining = ops(simple)
    assert remaining["neg"] == 0 and remaining["div"] == 0 and remaining["pow"] == 0
    assert remaining["mul"] == 0  # every multiplication was by one
    assert remaining["add"] == 2 and remaining["tanh"] == 1  # tanh(h) + h + h


def test_simplify_keeps_a_broadcast_that_changes_shape():
    """1 * x is x only when x already has the result's shape: mean(h) * 1 stays a scalar, and
    h * 1 + 0 does not turn the vector into the scalar 0."""
    cell = rnncc.compile("cell t\ninput x[I]\nstate h[H]\nh' = 0 + mean(h) + (h - h) * 1\n")
    out = verify(dce(simplify(fold_constants(cell.graph))))
    assert out.node(out.updates["h"]).shape == ("H",)


def test_a_row_sum_of_a_negated_vector_becomes_the_negated_sum():
    """sum(-v) -> -sum(v), mean(-v) -> -mean(v): the negated vector goes (no vector is negated
    any more), and the result is the same to the bit (negation is exact)."""
    cell = rnncc.compile("cell t\ninput x[I]\nstate h[H]\n"
                         "h' = tanh(W @ x) * sum(-h) + mean(-(h * h))\n")
    before = fold_constants(cell.graph)
    after = verify(dce(simplify(before)))
    negs = [n for n in after.order if after.node(n).op == "neg"]
    # (one scalar negation is left: x + (-m) became x - m)
    assert negs and all(after.node(n).shape == () for n in negs)
    assert sum(len(before.node(n).shape) == 1 for n in before.order
               if before.node(n).op == "neg") == 2
    prob = random_problem(cell, T=4, B=3, seed=5)
    dtype = np.dtype(np.float64)
    ys = [reference.forward(g, prob.p, prob.xs, prob.state, None, prob.sizes, dtype)[0]
          for g in (before, after)]
    np.testing.assert_array_equal(ys[0], ys[1])


def test_cse_merges_repeated_work_and_commuted_arguments():
    cell = rnncc.compile("cell t\ninput x[I]\nstate h[H]\n"
                         "a = tanh(W @ x + h)\nb = tanh(h + W @ x)\nh' = a * b + sigmoid(a)\n")
    before = ops(cell.graph)
    after = ops(dce(cse(cell.graph)))
    assert before["matmul"] == 2 and after["matmul"] == 1
    assert before["tanh"] == 2 and after["tanh"] == 1


def test_dce_drops_unused_intermediates_but_keeps_leaves():
    cell = rnncc.compile("cell t\ninput x[I], y[J]\nstate h[H]\nparam V[H, J]\n"
                         "unused = exp(h) * 3\nh' = tanh(W @ x)\n")
    out = dce(cell.graph)
    assert ops(out)["exp"] == 0
    assert set(out.inputs) == {"x", "y"} and set(out.params) == {"V", "W"}


@pytest.mark.parametrize("name, stacked", [
    ("lstm", {"W_ifgo@x": 4, "U_ifgo@h": 4}), ("gru", {"W_rzn@x": 3, "U_rzn@h": 3}),
    ("rnn", {}), ("mgu", {"W_fn@x": 2})])
def test_shared_products_are_stacked(shipped_cells, name, stacked):
    graph = optimize(shipped_cells[name].graph)
    products = [n for n in graph.order if graph.node(n).op == "matmul"]
    found = {}
    for n in products:
        matrix = graph.node(graph.node(n).args[0])
        if matrix.op == "stack_rows":
            names = [graph.node(a).name for a in matrix.args]
            vector = graph.node(graph.node(n).args[1]).name
            found[f"{names[0][0]}_{''.join(x.split('_')[1] for x in names)}@{vector}"] = len(names)
    assert found == stacked
    # nothing left unstacked that shares a vector with another product
    vectors = Counter(graph.node(n).args[1] for n in products)
    assert max(vectors.values()) == 1


def test_backward_products_are_stacked_in_forward_order(shipped_cells):
    graph = optimize(shipped_cells["lstm"].backward_graph)
    stacks = [[graph.node(a).name for a in graph.node(n).args] for n in graph.order
              if graph.node(n).op == "stack_rows"]
    assert sorted(stacks) == [["U_i", "U_f", "U_g", "U_o"], ["W_i", "W_f", "W_g", "W_o"]]
    counts = ops(graph)
    assert counts["matmul_t"] == 2 and counts["outer_sum"] == 2 and counts["batch_sum"] == 1
    assert counts["concat"] == 1  # one stacked gate gradient serves all of them


def test_verify_schedule_catches_broken_decisions(shipped_cells):
    """The check of hoist's and fuse's decisions fails on each kind of mistake a pass could make."""
    from rnncc.graph.schedule import ByGemm, InKernel, Phase, ScheduleError
    fused = optimize(shipped_cells["lstm"].graph)
    verify_schedule(fused)
    step_gemm = next(n for n in fused.order if isinstance(fused.stage.get(n), ByGemm)
                     and fused.phase[n] == Phase.STEP)
    reader = next(u for u in fused.users(step_gemm) if fused.phase[u] == Phase.STEP)

    def broken(phase=None, stage=None):
        return fused.annotated(phase={**fused.phase, **(phase or {})},
                               stage={**fused.stage, **(stage or {})})

    mistakes = {
        "no phase": fused.annotated(phase={n: p for n, p in fused.phase.items()
                                           if n != reader}),
        "a phase as a string": broken(phase={reader: "step"}),
        "a product in a kernel": broken(stage={step_gemm: InKernel(1)}),
        "a read before the GEMM ran": broken(stage={reader: InKernel(0)}),
        "a read of a later phase": broken(phase={step_gemm: Phase.AFTER}),
    }
    for what, graph in mistakes.items():
        with pytest.raises(ScheduleError):
            verify_schedule(graph)
            pytest.fail(what)

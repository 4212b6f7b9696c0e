"""The Plan: its structure for the shipped cells (what cuDNN does by hand), its printed forms,
and the Plan interpreter agreeing with the reference interpreter of the unoptimized graphs."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import rnncc
from rnncc.runtime.gradcheck import random_problem

GOLDEN = Path(__file__).parents[1] / "golden"


def shapes(steps, kind):
    return [s.to_json()["shape"] for s in steps if s.kind == kind]


@pytest.mark.parametrize("name, G", [("lstm", "4H"), ("gru", "3H"), ("rnn", "H")])
def test_forward_plan_is_one_hoisted_gemm_then_one_gemm_and_one_kernel_per_step(
        shipped_cells, name, G):
    fwd = shipped_cells[name].plan.forward
    assert shapes(fwd.phases["before_loop"], "gemm") == [[["T*B", "I"], ["I", G]]]
    assert shapes(fwd.phases["before_loop"], "kernel") == []
    assert shapes(fwd.phases["per_step"], "gemm") == [[["B", "H"], ["H", G]]]
    assert len(fwd.steps("per_step", "kernel")) == 1
    assert [s.kind for s in fwd.phases["per_step"]] == ["gemm", "kernel"]
    assert fwd.phases["after_loop"] == []


def test_a_product_of_a_gated_state_gets_one_more_gemm_and_no_more(shipped_cells):
    """MGU: U_n @ (f * h) must wait for f, so a step is GEMM, kernel, GEMM, kernel."""
    fwd = shipped_cells["mgu"].plan.forward
    assert shapes(fwd.phases["before_loop"], "gemm") == [[["T*B", "I"], ["I", "2H"]]]
    assert [s.kind for s in fwd.phases["per_step"]] == ["gemm", "kernel", "gemm", "kernel"]
    assert shapes(fwd.phases["per_step"], "gemm") == [[["B", "H"], ["H", "H"]]] * 2


def test_lstm_backward_plan(shipped_cells):
    """Per step one fused kernel and one GEMM; after the loop three GEMMs (input gradient,
    both weight gradients, each over all T*B rows) and the bias reduction."""
    bwd = shipped_cells["lstm"].plan.backward
    assert bwd.phases["before_loop"] == []
    assert [s.kind for s in bwd.phases["per_step"]] == ["kernel", "gemm"]
    assert shapes(bwd.phases["per_step"], "gemm") == [[["B", "4H"], ["4H", "H"]]]
    after = bwd.phases["after_loop"]
    assert sorted(map(str, shapes(after, "gemm"))) == sorted(map(str, [
        [["T*B", "4H"], ["4H", "I"]], [["4H", "T*B"], ["T*B", "H"]],
        [["4H", "T*B"], ["T*B", "I"]]]))
    (bias,) = bwd.steps("after_loop", "kernel")
    assert {op.op for op in bias.ops} == {"batch_sum", "part"}
    # what backward reads forward saved: the gates and tanh(c')
    assert set(bwd.leaves["saved"]) == {"i", "f", "g", "o", "tanh(c')"}
    fwd_kernel = shipped_cells["lstm"].plan.forward.steps("per_step", "kernel")[0]
    assert len(fwd_kernel.saves) == 5


def test_gru_backward_accumulates_the_recurrent_gemm(shipped_cells):
    bwd = shipped_cells["gru"].plan.backward
    assert [s.kind for s in bwd.phases["per_step"]] == ["kernel", "gemm"]
    (gemm,) = bwd.steps("per_step", "gemm")
    assert gemm.accumulate is not None  # dh = dh' * z + dgates @ U_rzn, one BLAS call


def test_plan_json_schema(shipped_cells):
    doc = json.loads(shipped_cells["gru"].show("json", stage="plan"))
    assert {"forward", "backward"} <= set(doc)
    for direction in ("forward", "backward"):
        assert {"before_loop", "per_step", "after_loop"} <= set(doc[direction])
        for phase in ("before_loop", "per_step", "after_loop"):
            for step in doc[direction][phase]:
                assert step["kind"] in ("gemm", "kernel") and "shape" in step


def test_lstm_plan_text_golden(shipped_cells):
    """Reads like the cuDNN paper; reviewed as a diff (RNNCC_UPDATE_GOLDEN=1 regenerates)."""
    text = shipped_cells["lstm"].show("text", stage="plan")
    path = GOLDEN / "lstm.plan.txt"
    if os.environ.get("RNNCC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()
    assert "gemm    W_ifgo@x = x @ W_ifgo^T    [T*B, I] x [I, 4H]" in text


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("name", rnncc.shipped())
def test_plan_interpreter_equals_reference(shipped_cells, name, ragged):
    cell = shipped_cells[name]
    prob = random_problem(cell, T=4, B=3, seed=21, ragged=ragged)
    x = prob.x_arg(cell)
    ys, final = cell.forward(prob.p, x, state=prob.state, lengths=prob.lengths, target="plan")
    ys_r, final_r = cell.forward(prob.p, x, state=prob.state, lengths=prob.lengths)
    np.testing.assert_allclose(ys, ys_r, rtol=1e-12, atol=1e-14)
    for s in cell.states:
        np.testing.assert_allclose(final[s], final_r[s], rtol=1e-12, atol=1e-14)
    kwargs = dict(state=prob.state, dfinal=prob.dfinal, lengths=prob.lengths)
    g = cell.backward(prob.p, x, prob.dys, target="plan", **kwargs)
    g_r = cell.backward(prob.p, x, prob.dys, **kwargs)
    for k in cell.params:
        np.testing.assert_allclose(g["params"][k], g_r["params"][k], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(g["x"], g_r["x"], rtol=1e-11, atol=1e-13)
    for s in cell.states:
        np.testing.assert_allclose(g["state"][s], g_r["state"][s], rtol=1e-11, atol=1e-13)


def test_plan_target_float32_and_nan_padding(shipped_cells):
    cell = shipped_cells["lnlstm"]
    prob = random_problem(cell, T=5, B=3, seed=2, ragged=True)
    x = prob.xs["x"].copy()
    for b, n in enumerate(prob.lengths):
        x[n:, b] = np.nan  # padding never reaches a result
    g = cell.backward(prob.p, x, prob.dys, state=prob.state, lengths=prob.lengths, target="plan")
    g_r = cell.backward(prob.p, x, prob.dys, state=prob.state, lengths=prob.lengths)
    for k in cell.params:
        assert np.isfinite(g["params"][k]).all()
        np.testing.assert_allclose(g["params"][k], g_r["params"][k], rtol=1e-11, atol=1e-13)
    p32 = {k: v.astype(np.float32) for k, v in prob.p.items()}
    ys32, _ = cell.forward(p32, x.astype(np.float32), state=prob.state, lengths=prob.lengths,
                           target="plan")
    ys64, _ = cell.forward(prob.p, x, state=prob.state, lengths=prob.lengths)
    assert ys32.dtype == np.float32
    np.testing.assert_allclose(ys32, ys64, rtol=1e-4, atol=1e-5)



def test_a_stacked_products_part_read_after_the_loop_is_kept_for_every_step():
    """Found by hypothesis: lowering kept only the part (a view, no storage of its own), and
    the loop after read a product no step had kept."""
    from ..backends.test_cpu import REGRESSIONS
    cell = rnncc.compile(REGRESSIONS["part_read_after_the_loop"])
    plan = cell.plan.forward
    view = plan.buffers["p"]
    assert view.view_of == "W0+U2+U4@h" and plan.buffers[view.view_of].stored, plan.text()
    prob = random_problem(cell, {"I": 2, "H": 5}, T=4, B=3, seed=3, ragged=True)
    x = prob.x_arg(cell)
    kwargs = dict(state=prob.state, lengths=prob.lengths)
    ys, final = cell.forward(prob.p, x, target="plan", **kwargs)
    ys_r, final_r = cell.forward(prob.p, x, **kwargs)
    np.testing.assert_allclose(ys, ys_r, rtol=1e-12, atol=1e-14)
    for s in cell.states:
        np.testing.assert_allclose(final[s], final_r[s], rtol=1e-12, atol=1e-14)
    g = cell.backward(prob.p, x, prob.dys, dfinal=prob.dfinal, target="plan", **kwargs)
    g_r = cell.backward(prob.p, x, prob.dys, dfinal=prob.dfinal, **kwargs)
    for k in cell.params:
        np.testing.assert_allclose(g["params"][k], g_r["params"][k], rtol=1e-11, atol=1e-13)

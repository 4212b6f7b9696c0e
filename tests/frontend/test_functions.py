"""The spec language's functions (`def`), `chunk` and `concat`, and stacked dimensions (`4H`):
what they mean, held to independent oracles (the same cell written out gate by gate, numpy by
hand, finite differences), where their errors point, and what the runtime checks of them."""
import re
from pathlib import Path

import numpy as np
import pytest

import rnncc
from rnncc import SpecError
from rnncc.runtime.gradcheck import check_gradients, random_problem

from ..close import assert_close

SPECS = Path(__file__).parent.parent / "specs"

LSTM_CHUNKED = """cell lstm_chunked
input  x[I]
state  h[H], c[H]
output h
param  W[4H, I], U[4*H, H], b[4H]
i, f, g, o = chunk(W @ x + U @ h + b, 4)
c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
h' = sigmoid(o) * tanh(c')
"""

# an Elman RNN over the concatenation [x, h], as papers write it: W [x; h] = W_x x + W_h h
RNN_CONCAT = """cell rnn_concat
input  x[I]
state  h[H]
output h
def affine(v, M, shift) = M @ v + shift
h' = tanh(affine(concat(x, h), W, b))
"""


def gatewise(p, stacked, names):
    """The gate-by-gate parameters of the shipped lstm from a stacked [4H, ...] one."""
    return dict(zip(names, np.split(p[stacked], 4)))


def run_both(cell, p, x, dys, state, target="reference"):
    ys, final = cell.forward(p, x, state=state, target=target)
    g = cell.backward(p, x, dys, state=state, target=target)
    return ys, final, g


@pytest.fixture(scope="module")
def chunked_lstm():
    return rnncc.compile(LSTM_CHUNKED)


def test_chunk_of_a_stacked_product_is_the_lstm_gate_by_gate(chunked_lstm, shipped_cells):
    """i, f, g, o = chunk(W @ x + U @ h + b, 4) with W [4H, I] is PyTorch's layout; the shipped
    lstm (one matrix per gate) run on its blocks is the oracle: outputs, final states and every
    gradient, the stacked ones block by block."""
    lstm = shipped_cells["lstm"]
    I, H, T, B = 3, 5, 4, 2
    rng = np.random.default_rng(0)
    p = {"W": rng.standard_normal((4 * H, I)), "U": rng.standard_normal((4 * H, H)),
         "b": rng.standard_normal(4 * H)}
    q = {**gatewise(p, "W", [f"W_{k}" for k in "ifgo"]),
         **gatewise(p, "U", [f"U_{k}" for k in "ifgo"]),
         **gatewise(p, "b", [f"b_{k}" for k in "ifgo"])}
    x, dys = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    state = {"h": rng.standard_normal((B, H)), "c": rng.standard_normal((B, H))}
    ys, final, g = run_both(chunked_lstm, p, x, dys, state)
    ys0, final0, g0 = run_both(lstm, q, x, dys, state)
    assert_close(ys, ys0, 1e-13, "ys")
    for s in "hc":
        assert_close(final[s], final0[s], 1e-13, f"final {s}")
        assert_close(g["state"][s], g0["state"][s], 1e-12, f"d{s}")
    assert_close(g["x"], g0["x"], 1e-12, "dx")
    for name in "WUb":
        assert g["params"][name].shape == p[name].shape
        for k, block in zip("ifgo", np.split(g["params"][name], 4)):
            assert_close(block, g0["params"][f"{name}_{k}"], 1e-12, f"d{name} block {k}")


def test_chunked_lstm_plans_one_stacked_product_as_the_shipped_lstm_does(chunked_lstm,
                                                                          shipped_cells):
    """chunk adds no copy: the stacked parameter is the product's operand as it is, and the
    parts are column blocks of one product, as stacking the shipped lstm's gates makes them."""
    def gemms(cell, direction):
        plan = cell.compiled_plans()[direction]
        return sorted((phase, tuple(tuple(map(str, s)) for s in step.shape))
                      for phase, steps in plan.phases.items() for step in steps
                      if step.kind == "gemm")
    for direction in ("forward", "backward", "infer"):
        assert gemms(chunked_lstm, direction) == gemms(shipped_cells["lstm"], direction)


@pytest.mark.parametrize("target", ["reference", "cpu"])
def test_lnlstm_with_chunk_and_def_equals_the_gate_by_gate_spec(shipped_cells, target):
    """specs/lnlstm.cell (def ln, chunk, [4H] parameters) against tests/specs/lnlstm_blocks.cell,
    the same cell written with one parameter per gate and block (the reference interpreter runs
    the oracle), forward and backward, on ragged rows."""
    new, old = shipped_cells["lnlstm"], rnncc.compile(SPECS / "lnlstm_blocks.cell")
    I, H, T, B = 4, 3, 5, 3
    prob = random_problem(new, {"I": I, "H": H}, T=T, B=B, seed=7, ragged=True)
    p = prob.p
    q = {"gamma_c": p["gamma_c"], "beta_c": p["beta_c"]}
    for name in ("W", "U", "b", "gx", "gh"):
        q.update(gatewise(p, name, [f"{name}_{k}" for k in "ifgo"]))
    args = dict(state=prob.state, lengths=prob.lengths)
    ys, final = new.forward(p, prob.xs["x"], target=target, **args)
    ys0, final0 = old.forward(q, prob.xs["x"], **args)
    assert_close(ys, ys0, 1e-12, "ys")
    g = new.backward(p, prob.xs["x"], prob.dys, dfinal=prob.dfinal, target=target, **args)
    g0 = old.backward(q, prob.xs["x"], prob.dys, dfinal=prob.dfinal, **args)
    assert_close(g["x"], g0["x"], 1e-10, "dx")
    for s in "hc":
        assert_close(final[s], final0[s], 1e-12, f"final {s}")
        assert_close(g["state"][s], g0["state"][s], 1e-10, f"d{s}")
    for name in ("W", "U", "b", "gx", "gh"):
        for k, block in zip("ifgo", np.split(g["params"][name], 4)):
            assert_close(block, g0["params"][f"{name}_{k}"], 1e-10, f"d{name} block {k}")


def test_concat_and_a_function_of_a_matrix_equal_numpy():
    """h' = tanh(W [x; h] + b) through a function taking the matrix as an argument: numpy by
    hand, and the gradients against finite differences."""
    cell = rnncc.compile(RNN_CONCAT)
    assert cell.params == ["W", "b"]
    I, H, T, B = 3, 4, 5, 2
    rng = np.random.default_rng(1)
    p = {"W": rng.standard_normal((H, I + H)), "b": rng.standard_normal(H)}
    x = rng.standard_normal((T, B, I))
    ys, _ = cell.forward(p, x)
    h, want = np.zeros((B, H)), []
    for t in range(T):
        h = np.tanh(np.concatenate([x[t], h], axis=1) @ p["W"].T + p["b"])
        want.append(h)
    assert_close(ys, np.stack(want), 1e-13, "ys")
    report = check_gradients(cell, random_problem(cell, T=4, B=3, seed=2, ragged=True))
    assert report.passed, report.text()


@pytest.mark.parametrize("spec", [LSTM_CHUNKED, RNN_CONCAT, (SPECS / "lnlstm_blocks.cell")],
                         ids=["chunk", "concat", "blocks"])
def test_gradients_through_chunk_concat_and_functions_match_finite_differences(spec):
    cell = rnncc.compile(spec)
    report = check_gradients(cell, random_problem(cell, T=4, B=3, seed=5, ragged=True))
    assert report.passed and report.worst < 1e-6, report.text()


def test_chunk_of_a_concat_and_of_a_stacked_vector():
    """chunk splits whatever is made of equal blocks: a concat of two [H] vectors, a parameter
    declared [2H]; a part is exactly its block (numpy slices as the oracle)."""
    cell = rnncc.compile("cell t\ninput x[H]\nstate h[H]\nparam s[2H]\noutput y\n"
                         "a, b = chunk(concat(x, h), 2)\nu, v = chunk(s, 2)\n"
                         "y = concat(b * u, a + v, a)\nh' = x\n")
    H, T, B = 3, 2, 2
    rng = np.random.default_rng(3)
    p, x = {"s": rng.standard_normal(2 * H)}, rng.standard_normal((T, B, H))
    h0 = rng.standard_normal((B, H))
    ys, _ = cell.forward(p, x, state={"h": h0})
    hs = [h0, x[0]]
    for t in range(T):
        a, b, u, v = x[t], hs[t], p["s"][:H], p["s"][H:]
        assert_close(ys[t], np.concatenate([b * u, a + v, a], axis=1), 1e-15, f"y[{t}]")
    report = check_gradients(cell, random_problem(cell, T=3, B=2, seed=1))
    assert report.passed, report.text()


def test_a_function_body_error_points_at_the_body_and_at_the_call():
    """A shape error a function's body only meets at a call: the body's line and column first,
    then the call that gave it those arguments."""
    text = ("cell t\ninput x[I]\nstate h[H]\n"
            "def mix(a, b) = tanh(a + b)\n"
            "h' = mix(W @ x, h) + mix(h, x)\n")
    with pytest.raises(SpecError) as info:
        rnncc.compile(text)
    err = info.value
    assert (err.line, err.col) == (4, 26), str(err)   # at b, the operand that disagrees
    assert "shape mismatch in '+'" in err.msg
    lines = str(err).split("\n")
    assert lines[1] == "    def mix(a, b) = tanh(a + b)" and lines[2] == "    " + " " * 25 + "^"
    assert lines[3] == "<spec>:5:22: in this call of mix"
    assert lines[4] == "    h' = mix(W @ x, h) + mix(h, x)" and lines[5] == "    " + " " * 21 + "^"


def test_functions_calling_functions_and_used_at_two_shapes():
    """A function is inlined at each call with its own shapes: ln over [4H] and over [H] in one
    cell, and a function built of another; numpy by hand."""
    cell = rnncc.compile("cell t\ninput x[H]\nstate h[H]\nparam s[4H]\noutput y\n"
                         "def centre(v) = v - mean(v)\n"
                         "def scaled(v, k) = centre(v) * k\n"
                         "a, b, c, d = chunk(scaled(s, 2), 4)\n"
                         "y = scaled(x, 3) + a + d\nh' = h\n")
    H = 4
    rng = np.random.default_rng(4)
    s, x = rng.standard_normal(4 * H), rng.standard_normal((1, 2, H))
    ys, _ = cell.forward({"s": s}, x)
    cs = 2 * (s - s.mean())
    want = 3 * (x[0] - x[0].mean(axis=1, keepdims=True)) + cs[:H] + cs[3 * H:]
    assert_close(ys[0], want, 1e-14, "y")


def test_unused_functions_and_names_shared_with_arguments():
    """An argument may share a name with a declared value (it is the argument inside the body);
    a function nobody calls changes nothing."""
    cell = rnncc.compile("cell t\ninput x[H]\nstate h[H]\n"
                         "def step(h, x) = h * x\ndef unused(v) = v\n"
                         "h' = step(x, tanh(W @ h))\n")
    plain = rnncc.compile("cell t\ninput x[H]\nstate h[H]\nh' = x * tanh(W @ h)\n")
    def without_lines(text):   # the graphs' text, less the source lines each node came from
        return re.sub(r"# line \d+", "", text)
    assert without_lines(cell.show("text")) == without_lines(plain.show("text"))


# -- stacked dimensions at run time ---------------------------------------------------------


def test_a_stacked_parameter_of_the_wrong_size_is_named_with_its_expected_shape(chunked_lstm):
    p = chunked_lstm.init_params(seed=0, I=3, H=5)
    assert p["W"].shape == (20, 3) and p["U"].shape == (20, 5) and p["b"].shape == (20,)
    x = np.zeros((2, 1, 3))
    bad = {**p, "U": np.zeros((16, 5))}
    with pytest.raises(ValueError, match=r"parameter 'U' has shape \(16, 5\) but the expected shape is "
                                         r"\[4H, H\] = \(20, 5\)"):
        chunked_lstm.forward(bad, x)
    # a stacked size alone (no other array gives H) must be a multiple of its blocks
    cell = rnncc.compile("cell t\ninput x[I]\nstate h[I]\nparam s[2H]\noutput y\n"
                         "a, b = chunk(s, 2)\ny = a * b\nh' = x\n")
    with pytest.raises(ValueError, match=r"parameter 's' has shape \(5,\).*\[2H\]"):
        cell.forward({"s": np.zeros(5)}, x)
    ys, _ = cell.forward({"s": np.arange(6.0)}, x)
    assert_close(ys[0, 0], np.arange(3.0) * np.arange(3.0, 6.0), 1e-15, "y")


def test_the_new_lnlstm_draws_the_old_ones_values_block_by_block():
    """Its parameters are the old spec's, stacked in gate order: the same seed gives the same
    values (matrix initialisers draw block by block, in the old order of draws)."""
    new = rnncc.load("lnlstm").init_params(seed=3, dtype=np.float64, I=5, H=4)
    old = rnncc.compile(SPECS / "lnlstm_blocks.cell").init_params(seed=3, dtype=np.float64,
                                                                  I=5, H=4)
    for name in ("W", "U", "b", "gx", "gh"):
        np.testing.assert_array_equal(new[name], np.concatenate(
            [old[f"{name}_{k}"] for k in "ifgo"]), err_msg=name)
    for name in ("gamma_c", "beta_c"):
        np.testing.assert_array_equal(new[name], old[name])


def test_chunk_infers_stacked_parameters(chunked_lstm):
    """Undeclared parameters under a chunk are inferred as stacked: W [4H, I], as declared."""
    cell = rnncc.compile(LSTM_CHUNKED.replace("param  W[4H, I], U[4*H, H], b[4H]\n", ""))
    assert cell.symbolic_shapes == chunked_lstm.symbolic_shapes
    assert {k: v.shape for k, v in cell.init_params(I=3, H=5).items()} == \
        {"W": (20, 3), "U": (20, 5), "b": (20,)}


def test_a_function_is_expanded_and_cse_shares_its_repeated_parts(shipped_cells):
    """ln(v, gain) reads mean(v) twice: three calls build nine means, CSE leaves six (two per
    normalised vector: its mean and its variance)."""
    from rnncc.passes import optimize
    graph = shipped_cells["lnlstm"].graph
    count = lambda g: sum(g.node(n).op == "mean" for n in g.order)
    assert count(graph) == 9 and count(optimize(graph, until="cse")) == 6

"""BPTT gradients: finite differences (float64), PyTorch autograd, the dot-product test,
truncated BPTT, subgradient conventions, and the checker catching a wrong derivative rule."""
from dataclasses import replace

import numpy as np
import pytest

import rnncc
from rnncc.autodiff import differentiate
from rnncc.backends import reference
from rnncc.ops import REGISTRY
from rnncc.runtime.gradcheck import check_gradients, loss, random_problem

from ..close import assert_close


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("name", rnncc.shipped())
def test_shipped_specs_match_finite_differences(shipped_cells, name, ragged):
    cell = shipped_cells[name]
    report = check_gradients(cell, random_problem(cell, T=4, B=3, seed=11, ragged=ragged))
    assert report.passed and report.worst < 1e-6, report.text()
    groups = {(e.group, e.name) for e in report.entries}
    assert groups == ({("param", p) for p in cell.params} | {("input", x) for x in cell.inputs}
                      | {("state", s) for s in cell.states})


def test_a_matrix_in_two_products_of_one_vector_matches_finite_differences():
    """W @ x twice (and in another line): W's gradient sums both products' gradients, as one
    product over the batch (a sum of two matrices is no op of a plan), on the reference
    interpreter and the cpu target."""
    cell = rnncc.compile("cell tied\ninput x[I]\nstate h[H], c[H]\noutput y\n"
                         "h' = tanh(W @ x + h) * sigmoid(W @ x)\nc' = c + tanh(W @ x)\n"
                         "y = h' * c'\n")
    prob = random_problem(cell, {"I": 3, "H": 4}, T=4, B=3, seed=12, ragged=True)
    for target in ("reference", "cpu"):
        report = check_gradients(cell, prob, target=target)
        assert report.passed and report.worst < 1e-6, report.text()


def _directions(prob, rng):
    return ({k: rng.standard_normal(v.shape) for k, v in prob.p.items()},
            {k: rng.standard_normal(v.shape) for k, v in prob.xs.items()},
            {k: rng.standard_normal(v.shape) for k, v in prob.state.items()})


def dot_product_test(cell, prob, seed=0, step=1e-5):
    """<J v, u> by a directional central difference against <v, J^T u> by BPTT, where u is
    (dys, dfinal) and v a random direction in (params, x, initial state). Returns both."""
    rng = np.random.default_rng(seed)
    vp, vx, vs = _directions(prob, rng)

    def at(t):
        return loss(cell, prob,
                    p={k: prob.p[k] + t * vp[k] for k in vp},
                    xs={k: prob.xs[k] + t * vx[k] for k in vx},
                    state={k: prob.state[k] + t * vs[k] for k in vs})

    jv_u = (8 * (at(step) - at(-step)) - (at(2 * step) - at(-2 * step))) / (12 * step)
    g = cell.backward(prob.p, prob.x_arg(cell), prob.dys, state=prob.state, dfinal=prob.dfinal,
                      lengths=prob.lengths)
    gx = g["x"] if len(cell.inputs) > 1 else {cell.inputs[0]: g["x"]}
    v_jtu = (sum(np.sum(g["params"][k] * vp[k]) for k in vp)
             + sum(np.sum(gx[k] * vx[k]) for k in vx)
             + sum(np.sum(g["state"][k] * vs[k]) for k in vs))
    return jv_u, v_jtu


@pytest.mark.parametrize("name", rnncc.shipped())
def test_dot_product(shipped_cells, name):
    cell = shipped_cells[name]
    prob = random_problem(cell, T=6, B=4, seed=3, ragged=True)
    jv_u, v_jtu = dot_product_test(cell, prob)
    assert abs(jv_u - v_jtu) <= 1e-8 * max(abs(jv_u), 1.0)


# --- PyTorch ----------------------------------------------------------------------------------

I, H, T, B = 3, 5, 6, 4
MODULES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}   # torch.nn's classes
GATES = {"rnn": [("W", "U", "b", "b")],
         "lstm": [(f"W_{k}", f"U_{k}", f"b_{k}", f"b_{k}") for k in "ifgo"],
         "gru": [("W_r", "U_r", "b_r", "b_r"), ("W_z", "U_z", "b_z", "b_z"),
                 ("W_n", "U_n", "b_n", "d_n")]}


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_gradients_equal_torch_autograd(shipped_cells, rng, name, ragged):
    from rnncc.interop.pytorch import params_from_torch
    torch = pytest.importorskip("torch")   # per test: the finite-difference tests need no torch
    cell = shipped_cells[name]
    torch.manual_seed(1)
    module = getattr(torch.nn, MODULES[name])(I, H).double()
    with torch.no_grad():
        for param in module.parameters():
            param.uniform_(-0.8, 0.8)
    p = params_from_torch(cell, {k: v.detach().numpy() for k, v in module.state_dict().items()})
    x = rng.standard_normal((T, B, I))
    state = {s: rng.standard_normal((B, H)) for s in cell.states}
    dys = rng.standard_normal((T, B, H))
    dfinal = {s: rng.standard_normal((B, H)) for s in cell.states}
    lengths = np.array([6, 2, 5, 1]) if ragged else None

    xt = torch.tensor(x, requires_grad=True)
    init = {s: torch.tensor(v[None], requires_grad=True) for s, v in state.items()}
    hx = (init["h"], init["c"]) if name == "lstm" else init["h"]
    if ragged:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.as_tensor(lengths),
                                                         enforce_sorted=False)
        out, hn = module(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    else:
        out, hn = module(xt, hx)
    final = {"h": hn[0], "c": hn[1]} if name == "lstm" else {"h": hn}
    total = (out * torch.from_numpy(dys)).sum()
    for s in cell.states:
        total = total + (final[s][0] * torch.from_numpy(dfinal[s])).sum()
    total.backward()

    g = cell.backward(p, x, dys, state=state, dfinal=dfinal, lengths=lengths)

    def close(a, b):
        assert_close(a, b, 1e-9)

    close(g["x"], xt.grad.numpy())
    for s in cell.states:
        close(g["state"][s], init[s].grad.numpy()[0])
    grads = {k: v.grad.numpy() for k, v in module.named_parameters()}
    for k, (w, u, b_ih, b_hh) in enumerate(GATES[name]):
        block = slice(k * H, (k + 1) * H)
        close(g["params"][w], grads["weight_ih_l0"][block])
        close(g["params"][u], grads["weight_hh_l0"][block])
        close(g["params"][b_ih], grads["bias_ih_l0"][block])  # a summed bias's gradient is
        close(g["params"][b_hh], grads["bias_hh_l0"][block])  # each torch bias's gradient


def test_subgradients_at_kinks_follow_pytorch():
    """relu'(0) = 0, abs'(0) = 0, ties of max/min split the gradient in half, as in PyTorch."""
    torch = pytest.importorskip("torch")
    cell = rnncc.compile("cell kinks\ninput x[H]\nstate h[H]\n"
                         "h' = relu(h) + 2 * abs(x) + 3 * max(h, x) + 5 * min(x, h) "
                         "+ 7 * max(h, 0.5)\n")
    h0 = np.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0]])
    x = np.array([[[0.0, 1.0, 0.0, -2.0, 2.0, 3.0]]])  # ties with h at 0, 1 and 4
    dys = np.ones((1, 1, 6))
    g = cell.backward({}, x, dys, state={"h": h0})

    ht = torch.tensor(h0, requires_grad=True)
    xt = torch.tensor(x[0], requires_grad=True)
    out = (torch.relu(ht) + 2 * torch.abs(xt) + 3 * torch.maximum(ht, xt)
           + 5 * torch.minimum(xt, ht) + 7 * torch.maximum(ht, torch.full_like(ht, 0.5)))
    out.sum().backward()
    np.testing.assert_array_equal(g["state"]["h"], ht.grad.numpy())
    np.testing.assert_array_equal(g["x"][0], xt.grad.numpy())


# --- BPTT mechanics ---------------------------------------------------------------------------


def test_truncated_bptt_chains_through_dfinal(shipped_cells):
    """Two chunks, the first's final state feeding the second and the second's initial-state
    gradient fed back as the first's dfinal, give the gradients of the whole sequence."""
    cell = shipped_cells["lstm"]
    prob = random_problem(cell, T=6, B=3, seed=5)
    x, dys = prob.xs["x"], prob.dys
    whole = cell.backward(prob.p, x, dys, state=prob.state, dfinal=prob.dfinal)
    _, mid = cell.forward(prob.p, x[:2], state=prob.state)
    second = cell.backward(prob.p, x[2:], dys[2:], state=mid, dfinal=prob.dfinal)
    first = cell.backward(prob.p, x[:2], dys[:2], state=prob.state, dfinal=second["state"])
    for k in cell.params:
        np.testing.assert_allclose(first["params"][k] + second["params"][k],
                                   whole["params"][k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.concatenate([first["x"], second["x"]]), whole["x"],
                               rtol=1e-12, atol=1e-14)
    for s in cell.states:
        np.testing.assert_allclose(first["state"][s], whole["state"][s], rtol=1e-12)


def test_rows_past_their_length_contribute_nothing(shipped_cells):
    """Garbage (even NaN) in the padding of a finished row changes no gradient."""
    cell = shipped_cells["gru"]
    prob = random_problem(cell, T=5, B=3, seed=2)
    lengths = np.array([5, 2, 0])
    x = prob.xs["x"].copy()
    clean = cell.backward(prob.p, x, prob.dys, state=prob.state, lengths=lengths)
    x[2:, 1] = np.nan
    x[:, 2] = np.nan
    dys = prob.dys.copy()
    dys[2:, 1] = 1e300
    dirty = cell.backward(prob.p, x, dys, state=prob.state, lengths=lengths)
    for k in cell.params:
        np.testing.assert_array_equal(clean["params"][k], dirty["params"][k])
    np.testing.assert_array_equal(clean["state"]["h"], dirty["state"]["h"])
    assert not dirty["x"][2:, 1].any() and not dirty["x"][:, 2].any()
    # a row of length 0 passes dfinal straight through to its initial state
    g = cell.backward(prob.p, x, dys, state=prob.state, dfinal=prob.dfinal, lengths=lengths)
    np.testing.assert_array_equal(g["state"]["h"][2], prob.dfinal["h"][2])


def test_unused_leaves_get_zero_gradients():
    cell = rnncc.compile("cell t\ninput x[I], y[J]\nstate h[H], m[H]\nparam V[H, J]\n"
                         "h' = tanh(W @ x)\nm' = m\n")
    p = cell.init_params(seed=0, dtype=np.float64, I=2, J=3, H=4)
    xs = {"x": np.ones((2, 1, 2)), "y": np.ones((2, 1, 3))}
    g = cell.backward(p, xs, np.ones((2, 1, 4)), state={"h": np.ones((1, 4)),
                                                          "m": np.ones((1, 4))})
    assert not g["params"]["V"].any() and g["params"]["V"].shape == (4, 3)
    assert not g["x"]["y"].any() and g["x"]["y"].shape == (2, 1, 3)
    assert not g["state"]["h"].any()
    np.testing.assert_array_equal(g["state"]["m"], np.zeros((1, 4)))  # dfinal is zero


def test_scalar_output_gradient():
    cell = rnncc.compile("cell s\ninput x[I]\nstate h[H]\noutput s\nh' = tanh(W @ x + U @ h)\n"
                         "s = mean(h' * h')\n")
    prob = random_problem(cell, T=4, B=2, seed=9, ragged=True)
    assert prob.dys.shape == (4, 2, 1)
    assert check_gradients(cell, prob).passed


def test_float32_backward_is_close_to_float64(shipped_cells):
    cell = shipped_cells["lnlstm"]
    prob = random_problem(cell, T=4, B=3, seed=4)
    g64 = cell.backward(prob.p, prob.xs["x"], prob.dys, state=prob.state, dfinal=prob.dfinal)
    p32 = {k: v.astype(np.float32) for k, v in prob.p.items()}
    g32 = cell.backward(p32, prob.xs["x"].astype(np.float32), prob.dys, state=prob.state,
                        dfinal=prob.dfinal)
    assert g32["x"].dtype == np.float32 and g32["params"]["W"].dtype == np.float32
    for k in cell.params:
        np.testing.assert_allclose(g32["params"][k], g64["params"][k], rtol=1e-3, atol=1e-4)


def test_backward_leaves_arguments_untouched(shipped_cells):
    cell = shipped_cells["lstm"]
    prob = random_problem(cell, T=3, B=2, seed=1, ragged=True)
    arrays = [*prob.p.values(), prob.xs["x"], *prob.state.values(), prob.dys,
              *prob.dfinal.values(), prob.lengths]
    for a in arrays:
        a.flags.writeable = False
    cell.backward(prob.p, prob.xs["x"], prob.dys, state=prob.state, dfinal=prob.dfinal,
                  lengths=prob.lengths)


@pytest.mark.parametrize("case, exc, match", [
    ("dys-shape", ValueError, r"dys has shape \(4, 2, 3\) but the expected shape is "
     r"\[T, B, H\] = \(4, 2, 4\)"),
    ("dfinal-unknown", KeyError, "unknown state 'q' in dfinal"),
    ("dfinal-shape", ValueError, r"dfinal\['c'\] has shape \(2, 5\)"),
])
def test_backward_argument_errors(shipped_cells, case, exc, match):
    cell = shipped_cells["lstm"]
    prob = random_problem(cell, T=4, B=2, seed=0)
    dys, dfinal = prob.dys, None
    if case == "dys-shape":
        dys = dys[..., :3]
    elif case == "dfinal-unknown":
        dfinal = {"q": np.zeros((2, 4))}
    else:
        dfinal = {"c": np.zeros((2, 5))}
    with pytest.raises(exc, match=match):
        cell.backward(prob.p, prob.xs["x"], dys, dfinal=dfinal)


# --- the backward graph -----------------------------------------------------------------------


def test_lstm_saves_its_gate_activations(shipped_cells):
    """i, f, g, o and tanh(c'): what cuDNN keeps for the LSTM's backward pass."""
    bgraph = shipped_cells["lstm"].backward_graph
    fwd = shipped_cells["lstm"].graph
    saved = {fwd.node(n).name or fwd.node(n).op: n for n in bgraph.saved.values()}
    assert set(saved) == {"i", "f", "g", "o", "tanh"}
    assert fwd.node(saved["tanh"]).args == (fwd.updates["c"],)


def test_recomputing_instead_of_saving_gives_the_same_gradients(shipped_cells):
    cell = shipped_cells["lnlstm"]
    everything = frozenset(op for op, d in REGISTRY.items() if d.kind not in ("leaf",))
    recomputing = differentiate(cell.graph, recompute=everything)
    assert recomputing.saved == {} and cell.backward_graph.saved
    prob = random_problem(cell, T=4, B=3, seed=6, ragged=True)
    sizes, dtype = prob.sizes, np.dtype(np.float64)
    results = []
    for bgraph in (cell.backward_graph, recomputing):
        _, _, tape = reference.forward(cell.graph, prob.p, prob.xs, prob.state, prob.lengths,
                                       sizes, dtype, backward=bgraph)
        results.append(reference.backward(cell.graph, bgraph, tape, prob.p, prob.xs, prob.dys,
                                          prob.dfinal, prob.lengths, sizes, dtype))
    (p1, x1, s1), (p2, x2, s2) = results
    for k in cell.params:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(x1["x"], x2["x"], rtol=1e-12, atol=1e-14)


def test_checker_fails_on_a_wrong_derivative_rule(monkeypatch, capsys, tmp_path):
    """Corrupt tanh's rule (forget the square): the checker must say FAIL."""
    from rnncc.cli import main

    def wrong(e, node, args, out, g):
        return [e.mul(g, e.sub(e.const(1.0), out()))]

    monkeypatch.setitem(REGISTRY, "tanh", replace(REGISTRY["tanh"], vjp=wrong))
    spec = "cell rnn\ninput x[I]\nstate h[H]\nh' = tanh(W @ x + U @ h + b)\n"
    cell = rnncc.compile(spec)
    report = check_gradients(cell, random_problem(cell))
    assert not report.passed and report.worst > 1e-2
    # a spec file, not the shipped name: rnncc.load hands out the process's one (correct) rnn
    (tmp_path / "rnn.cell").write_text(spec)
    assert main(["check", str(tmp_path / "rnn.cell")]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].startswith("FAIL") and "<-- FAIL" in out

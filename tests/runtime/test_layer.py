"""rnncc.RNN, the layer: PyTorch parity on packed sequences (the cpu target), and the layer's
own contract: parameters as views of the stacked matrices, a reused workspace that never leaks
one call into the next, train/eval, batch_first, errors."""
import numpy as np
import pytest
import torch

import rnncc
from rnncc.interop.pytorch import LAYOUTS, params_from_torch

TORCH_MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
I, H, T, B = 5, 7, 6, 4
LENGTHS = np.array([6, 2, 0, 5])
TOL = {np.float64: 1e-9, np.float32: 1e-4}


@pytest.fixture(scope="module")
def layers(shipped_cells):
    """One layer per (cell, dtype), shared: each compiles once."""
    return {(name, dt): rnncc.RNN(shipped_cells[name], I, H, dtype=dt)
            for name in ("rnn", "lstm", "gru") for dt in (np.float32, np.float64)}


def close(got, want, dtype, what):
    tol = TOL[dtype]
    scale = max(float(np.abs(want).max(initial=0)), 1.0)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)


def torch_grads(name, module):
    """The rnncc parameter gradients that the torch module's gradients imply: a summed bias
    gets the gradient of either torch bias (both enter as the sum)."""
    g = {k: p.grad.double().numpy() for k, p in module.named_parameters()}
    out = {}
    for k, (w, u, b, d) in enumerate(LAYOUTS[name]):
        block = slice(k * H, (k + 1) * H)
        out[w], out[u] = g["weight_ih_l0"][block], g["weight_hh_l0"][block]
        out[b] = g["bias_ih_l0"][block]
        if d is not None:
            out[d] = g["bias_hh_l0"][block]
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_layer_equals_torch_on_packed_sequences(layers, name, dtype):
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    torch.manual_seed(3)
    module = TORCH_MODULES[name](I, H).to(torch_dtype)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.8, 0.8)
    layer = layers[(name, dtype)]
    layer.params.update(params_from_torch(
        layer.cell, {k: v.detach().numpy() for k, v in module.state_dict().items()}))

    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.uniform(-1, 1, (B, H)).astype(dtype)
    c0 = rng.uniform(-1, 1, (B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh = rng.standard_normal((B, H)).astype(dtype)
    dc = rng.standard_normal((B, H)).astype(dtype)
    state = {"h": h0, "c": c0} if name == "lstm" else {"h": h0}

    xt = torch.from_numpy(x).requires_grad_(True)
    hx = (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]) if name == "lstm" else \
        torch.from_numpy(h0)[None]
    # PyTorch's packed sequences cannot hold an empty row; run rows of length >= 1 through
    # torch and check the empty row against its definition (output 0, final = initial state).
    rows = np.flatnonzero(LENGTHS > 0)
    sub_hx = tuple(s[:, rows] for s in hx) if name == "lstm" else hx[:, rows]
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        xt[:, rows], torch.as_tensor(LENGTHS[rows]), enforce_sorted=False)
    out, hn = module(packed, sub_hx)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    h_n, c_n = (hn[0][0], hn[1][0]) if name == "lstm" else (hn[0], None)
    loss = (out * torch.from_numpy(dy[:, rows])).sum() + (h_n * torch.from_numpy(dh[rows])).sum()
    if name == "lstm":
        loss = loss + (c_n * torch.from_numpy(dc[rows])).sum()
    module.zero_grad()
    loss.backward()

    y, final = layer(x, state=state, lengths=LENGTHS)
    close(y[:, rows], out.detach().numpy(), dtype, "y")
    close(final["h"][rows], h_n.detach().numpy(), dtype, "final h")
    empty = np.flatnonzero(LENGTHS == 0)
    assert not y[:, empty].any()
    np.testing.assert_array_equal(final["h"][empty], h0[empty])
    if name == "lstm":
        close(final["c"][rows], c_n.detach().numpy(), dtype, "final c")
    dfinal = {"h": dh, "c": dc} if name == "lstm" else {"h": dh}
    dfinal = {k: np.where((LENGTHS > 0)[:, None], v, 0) for k, v in dfinal.items()}
    dx = layer.backward(dy * (LENGTHS > 0)[None, :, None], dfinal)
    close(dx, xt.grad.numpy(), dtype, "dx")
    want = torch_grads(name, module)
    for k in layer.cell.params:
        close(layer.grads[k], want[k], dtype, f"d{k}")
    assert layer.grads[layer.cell.params[0]].dtype == np.dtype(dtype)


def test_reusing_the_workspace_never_leaks_one_call_into_the_next(layers, shipped_cells):
    """Calls of different shapes, ragged and full, in a mixed order: each equals the reference
    interpreter run afresh (a stale row from an earlier call would show)."""
    layer = layers[("gru", np.float64)]
    cell = shipped_cells["gru"]
    rng = np.random.default_rng(11)
    p = dict(layer.params)
    for T_, B_, ragged in [(6, 4, True), (6, 4, False), (3, 2, False), (6, 4, True),
                           (6, 4, False)]:
        x = rng.standard_normal((T_, B_, I))
        lengths = rng.integers(0, T_ + 1, B_) if ragged else None
        dy = rng.standard_normal((T_, B_, H))
        y, final = layer(x, lengths=lengths)
        y_ref, final_ref = cell.forward(p, x, lengths=lengths)
        close(y, y_ref, np.float64, "y")
        close(final["h"], final_ref["h"], np.float64, "final")
        dx = layer.backward(dy)
        g = cell.backward(p, x, dy, lengths=lengths)
        close(dx, g["x"], np.float64, "dx")
        close(layer.dstate["h"], g["state"]["h"], np.float64, "dstate")
        for k in cell.params:
            close(layer.grads[k], g["params"][k], np.float64, k)


def test_parameters_are_views_updated_in_place_or_by_assignment(shipped_cells):
    layer = rnncc.RNN(shipped_cells["lstm"], I, H, dtype=np.float64, seed=2)
    cell = layer.cell
    x = np.random.default_rng(0).standard_normal((T, B, I))
    original = {k: v.copy() for k, v in layer.params.items()}
    for k, v in cell.init_params(seed=2, dtype=np.float64, I=I, H=H).items():
        np.testing.assert_array_equal(original[k], v)
    layer.params["W_f"] -= 0.5            # in place: the stacked matrix sees it
    layer.params["b_o"] = np.full(H, 0.3)  # assignment: copied into the same array
    assert np.all(layer.params["b_o"] == 0.3)
    y, _ = layer(x)
    want = {**original, "W_f": original["W_f"] - 0.5, "b_o": np.full(H, 0.3)}
    close(y, cell.forward(want, x)[0], np.float64, "after updates")
    with pytest.raises(ValueError, match=r"parameter 'U_i' has shape \(3,\) but the expected "
                                         r"shape is \(7, 7\)"):
        layer.params["U_i"] = np.zeros(3)
    with pytest.raises(KeyError, match="unknown parameter 'nope'"):
        layer.params["nope"] = np.zeros(3)


def test_eval_mode_keeps_nothing_and_computes_the_same(layers):
    layer = layers[("lstm", np.float32)]
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
    y_train, final_train = layer(x, lengths=LENGTHS)
    layer.eval()
    try:
        y_eval, final_eval = layer(x, lengths=LENGTHS)
        np.testing.assert_array_equal(y_eval, y_train)
        np.testing.assert_array_equal(final_eval["c"], final_train["c"])
        with pytest.raises(RuntimeError, match="eval mode"):
            layer.backward(np.ones_like(y_eval))
    finally:
        layer.train()


def test_batch_first_is_the_transposed_layout(shipped_cells):
    a = rnncc.RNN(shipped_cells["rnn"], I, H, dtype=np.float64, target="reference")
    b = rnncc.RNN(shipped_cells["rnn"], I, H, dtype=np.float64, target="reference",
                  batch_first=True)
    x = np.random.default_rng(2).standard_normal((T, B, I))
    y, final = a(x, lengths=LENGTHS)
    yb, finalb = b(np.swapaxes(x, 0, 1), lengths=LENGTHS)
    np.testing.assert_array_equal(np.swapaxes(yb, 0, 1), y)
    np.testing.assert_array_equal(finalb["h"], final["h"])
    dy = np.random.default_rng(3).standard_normal(y.shape)
    np.testing.assert_array_equal(np.swapaxes(b.backward(np.swapaxes(dy, 0, 1)), 0, 1),
                                  a.backward(dy))


def test_layer_errors_name_the_array_and_its_expected_shape(layers):
    layer = layers[("rnn", np.float64)]
    fresh = rnncc.RNN(layer.cell, I, H, dtype=np.float64, target="reference")
    with pytest.raises(RuntimeError, match="needs a forward call"):
        fresh.backward(np.zeros((T, B, H)))
    with pytest.raises(ValueError, match=r"x has shape \(6, 4, 3\) but the expected shape is "
                                         r"\[T, B, 5\]"):
        layer(np.zeros((T, B, 3)))
    layer(np.zeros((T, B, I)))
    with pytest.raises(ValueError, match=r"dys has shape \(6, 4, 2\)"):
        layer.backward(np.zeros((T, B, 2)))
    with pytest.raises(ValueError, match="several inputs"):
        rnncc.RNN("cell two\ninput x[I]\ninput z[I]\nstate h[H]\nh' = tanh(W @ x + V @ z)\n",
                  I, H)
    with pytest.raises(ValueError, match="unknown target"):
        rnncc.RNN("rnn", I, H, target="tpu")


def test_the_caller_arrays_are_never_modified(layers):
    layer = layers[("lstm", np.float64)]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    state = {"h": rng.standard_normal((B, H)), "c": rng.standard_normal((B, H))}
    dy = rng.standard_normal((T, B, H))
    copies = [x.copy(), state["h"].copy(), state["c"].copy(), dy.copy()]
    layer(x, state=state, lengths=LENGTHS)
    layer.backward(dy, {"c": state["c"]})
    for before, after in zip(copies, [x, state["h"], state["c"], dy]):
        np.testing.assert_array_equal(before, after)


def test_dimensions_beyond_input_and_hidden_are_keywords():
    spec = ("cell proj\ninput x[I]\nstate h[H], p[P]\n"
            "h' = tanh(W @ x + U @ h + V @ p)\np' = tanh(R @ h')\n")
    layer = rnncc.RNN(spec, I, H, P=3, dtype=np.float64, target="reference")
    assert layer.params["V"].shape == (H, 3) and layer.params["R"].shape == (3, H)
    x = np.random.default_rng(6).standard_normal((T, B, I))
    y, final = layer(x)
    assert y.shape == (T, B, H) and final["p"].shape == (B, 3)
    y_ref, _ = layer.cell.forward(dict(layer.params), x)
    np.testing.assert_array_equal(y, y_ref)
    with pytest.raises(ValueError, match="missing P"):
        rnncc.RNN(spec, I, H, target="reference")
    with pytest.raises(ValueError, match="pass it once, as hidden_size"):
        rnncc.RNN(spec, I, H, H=4, P=3, target="reference")

"""The shipped rnn, rnn_relu, lstm and gru equal PyTorch's nn.RNN (tanh, relu), nn.LSTM and nn.GRU
(float64, 1e-10),
with weights moved by the documented mapping, initial states, and ragged lengths through
PyTorch's packed sequences."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnncc.interop.pytorch import params_from_torch, params_to_torch  # noqa: E402

TORCH_MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU,
                 "rnn_relu": lambda I, H: torch.nn.RNN(I, H, nonlinearity="relu")}
NAMES = ["rnn", "rnn_relu", "lstm", "gru"]
I, H, T, B = 5, 7, 6, 4


def torch_module(name, seed=0):
    torch.manual_seed(seed)
    module = TORCH_MODULES[name](I, H).double()
    with torch.no_grad():  # biases well away from zero so a wrong bias mapping shows
        for pname, param in module.named_parameters():
            param.uniform_(-0.8, 0.8)
    return module


def state_dict(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def torch_run(name, module, x, state, lengths=None):
    """ys [T, B, H] and final states dict, padded positions zero."""
    xt = torch.from_numpy(x)
    h0 = torch.from_numpy(state["h"])[None]
    hx = (h0, torch.from_numpy(state["c"])[None]) if name == "lstm" else h0
    if lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.as_tensor(lengths),
                                                         enforce_sorted=False)
        out, hn = module(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
    else:
        out, hn = module(xt, hx)
    final = {"h": hn[0][0], "c": hn[1][0]} if name == "lstm" else {"h": hn[0]}
    return out.detach().numpy(), {k: v.detach().numpy() for k, v in final.items()}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
def test_forward_equals_torch(shipped_cells, rng, name, ragged):
    cell = shipped_cells[name]
    module = torch_module(name)
    p = params_from_torch(cell, state_dict(module))
    x = rng.standard_normal((T, B, I))
    state = {s: rng.standard_normal((B, H)) for s in cell.states}
    lengths = np.array([6, 1, 4, 3]) if ragged else None

    ys, final = cell.forward(p, x, state=state, lengths=lengths)
    ys_t, final_t = torch_run(name, module, x, state, lengths)

    assert ys.dtype == np.float64
    np.testing.assert_allclose(ys, ys_t, rtol=1e-10, atol=1e-12)
    for s in cell.states:
        np.testing.assert_allclose(final[s], final_t[s], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_zero_initial_state_and_float32(shipped_cells, rng, name):
    cell = shipped_cells[name]
    module = torch_module(name, seed=3)
    p = params_from_torch(cell, state_dict(module))
    x = rng.standard_normal((T, B, I))
    zeros = {s: np.zeros((B, H)) for s in cell.states}
    ys_t, final_t = torch_run(name, module, x, zeros)

    ys, final = cell.forward(p, x)  # state=None means zeros
    np.testing.assert_allclose(ys, ys_t, rtol=1e-10, atol=1e-12)

    ys32, final32 = cell.forward(p, x.astype(np.float32))
    assert ys32.dtype == np.float32 and all(v.dtype == np.float32 for v in final32.values())
    np.testing.assert_allclose(ys32, ys_t, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_mapping_round_trips_through_torch(shipped_cells, rng, name):
    """params_to_torch gives a torch module computing the same function."""
    cell = shipped_cells[name]
    p = cell.init_params(seed=5, dtype=np.float64, I=I, H=H)
    module = TORCH_MODULES[name](I, H).double()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in params_to_torch(cell, p).items()})
    x = rng.standard_normal((T, B, I))
    zeros = {s: np.zeros((B, H)) for s in cell.states}
    ys_t, _ = torch_run(name, module, x, zeros)
    ys, _ = cell.forward(p, x)
    np.testing.assert_allclose(ys, ys_t, rtol=1e-10, atol=1e-12)
    back = params_from_torch(cell, params_to_torch(cell, p))
    for k in cell.params:
        np.testing.assert_array_equal(back[k], p[k])


def test_mapping_rejects_a_cell_without_torch_layout(shipped_cells):
    with pytest.raises(ValueError, match="no PyTorch counterpart"):
        params_from_torch(shipped_cells["mgu"], {})


def test_mapping_rejects_a_cell_named_like_a_shipped_one_with_other_equations(shipped_cells):
    import rnncc
    relu = rnncc.compile("cell rnn\ninput x[I]\nstate h[H]\nh' = relu(W @ x + U @ h + b)\n")
    weights = state_dict(torch_module("rnn"))
    with pytest.raises(ValueError, match="other equations"):
        params_from_torch(relu, weights)
    # the same equations laid out differently map as the shipped spec does
    same = rnncc.compile("# a comment\ncell rnn\ninput x[I]\nstate h[H]\n\n"
                         "h' = tanh(W @ x + U @ h + b)\n")
    for k, v in params_from_torch(same, weights).items():
        np.testing.assert_array_equal(v, params_from_torch(shipped_cells["rnn"], weights)[k])

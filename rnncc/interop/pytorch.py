"""Weight exchange with PyTorch's nn.RNN / nn.LSTM / nn.GRU for the shipped rnn, rnn_relu, lstm
and gru specs.

params_from_torch / params_to_torch work on plain numpy state dicts; from_torch / to_torch
(rnncc.from_torch(module), rnncc.to_torch(layer)) move whole layer stacks and import torch when
called: torch stays an optional dependency. PyTorch stacks the gates of one layer
into `weight_ih_l{k}` [G*H, I], `weight_hh_l{k}` [G*H, H], `bias_ih_l{k}` and `bias_hh_l{k}` [G*H],
gate blocks in the order below. rnncc's specs name one matrix per gate and (where the equations
allow it) one bias, the sum of PyTorch's two; the GRU's candidate gate keeps its recurrent bias
apart (d_n) because the reset gate multiplies it.
"""
from __future__ import annotations

import re

import numpy as np

from ..runtime.cell import load
from ..runtime.layer import RNN
from ..runtime.naming import suffix

# cell name -> one (input matrix, recurrent matrix, bias, separate recurrent bias) per gate block,
# in PyTorch's block order.
LAYOUTS = {
    "rnn": [("W", "U", "b", None)],
    "rnn_relu": [("W", "U", "b", None)],
    "lstm": [("W_i", "U_i", "b_i", None), ("W_f", "U_f", "b_f", None),
             ("W_g", "U_g", "b_g", None), ("W_o", "U_o", "b_o", None)],
    "gru": [("W_r", "U_r", "b_r", None), ("W_z", "U_z", "b_z", None),
            ("W_n", "U_n", "b_n", "d_n")],
}


def _layout(cell):
    if cell.name not in LAYOUTS:
        raise ValueError(f"cell {cell.name!r} has no PyTorch counterpart; the mapped cells are "
                         f"{', '.join(LAYOUTS)}")
    layout = LAYOUTS[cell.name]
    names = {n for gate in layout for n in gate if n}
    if names != set(cell.params):
        raise ValueError(f"cell {cell.name!r} has parameters {sorted(cell.params)}, not those of "
                         f"the shipped spec {sorted(names)}: its weights cannot be mapped")
    if _equations(cell) != _equations(load(cell.name)):
        raise ValueError(f"cell {cell.name!r} has the name and parameters of the shipped spec but "
                         f"other equations: PyTorch's module would compute something else")
    return layout


def _equations(cell) -> str:
    """The cell's step graph as text, without the source lines it came from."""
    return re.sub(r"\s*# line \d+", "", cell.show(stage="forward"))


def params_from_torch(cell, weights: dict, suffix: str = "_l0") -> dict:
    """rnncc parameters from a PyTorch state dict (numpy arrays; `suffix` picks layer/direction,
    e.g. "_l1" or "_l0_reverse"). Missing biases (bias=False) count as zeros."""
    layout = _layout(cell)
    w_ih = np.asarray(weights[f"weight_ih{suffix}"])
    w_hh = np.asarray(weights[f"weight_hh{suffix}"])
    rows = w_ih.shape[0]
    if rows % len(layout) or w_hh.shape[0] != rows:
        raise ValueError(f"weight_ih{suffix} has shape {w_ih.shape} and weight_hh{suffix} "
                         f"{w_hh.shape}; expected [{len(layout)}*H, I] and [{len(layout)}*H, H]")
    H = rows // len(layout)
    zeros = np.zeros(rows, dtype=w_ih.dtype)
    b_ih = np.asarray(weights.get(f"bias_ih{suffix}", zeros))
    b_hh = np.asarray(weights.get(f"bias_hh{suffix}", zeros))
    p = {}
    for k, (w, u, b, d) in enumerate(layout):
        block = slice(k * H, (k + 1) * H)
        p[w] = w_ih[block].copy()
        p[u] = w_hh[block].copy()
        if d is None:
            p[b] = b_ih[block] + b_hh[block]
        else:
            p[b] = b_ih[block].copy()
            p[d] = b_hh[block].copy()
    return p


def params_to_torch(cell, p: dict, suffix: str = "_l0") -> dict:
    """The inverse: a PyTorch state dict (numpy arrays). A summed bias goes to bias_ih, with
    bias_hh zero there; this computes the same function as the original torch weights."""
    layout = _layout(cell)
    out = {
        f"weight_ih{suffix}": np.concatenate([p[w] for w, _, _, _ in layout]),
        f"weight_hh{suffix}": np.concatenate([p[u] for _, u, _, _ in layout]),
        f"bias_ih{suffix}": np.concatenate([p[b] for _, _, b, _ in layout]),
        f"bias_hh{suffix}": np.concatenate([p[d] if d else np.zeros_like(p[b])
                                            for _, _, b, d in layout]),
    }
    return out


# shipped spec -> the torch module computing the same cell: (module.mode, class, its options)
MODULE_OF_CELL = {"lstm": ("LSTM", "LSTM", {}), "gru": ("GRU", "GRU", {}),
                  "rnn": ("RNN_TANH", "RNN", {"nonlinearity": "tanh"}),
                  "rnn_relu": ("RNN_RELU", "RNN", {"nonlinearity": "relu"})}
CELL_OF_MODE = {mode: cell for cell, (mode, _, _) in MODULE_OF_CELL.items()}


def _numpy_dtype(torch_dtype):
    import torch
    dtypes = {torch.float32: np.float32, torch.float64: np.float64}
    if torch_dtype not in dtypes:
        raise ValueError(f"the module's weights are {torch_dtype}; rnncc runs in float32 or "
                         f"float64 (convert the module with .float() or .double())")
    return dtypes[torch_dtype]


def from_torch(module, target: str = "cpu") -> RNN:
    """rnncc.RNN with the configuration (sizes, num_layers, bidirectional, dropout,
    batch_first, training mode) and weights of a torch.nn.LSTM, GRU or RNN."""
    import torch

    if not isinstance(module, torch.nn.RNNBase):
        raise TypeError(f"from_torch takes a torch.nn.LSTM, GRU or RNN, not "
                        f"{type(module).__name__}")
    if module.mode not in CELL_OF_MODE:
        raise ValueError(f"torch module mode {module.mode!r} has no rnncc cell")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"the module has proj_size={module.proj_size}; rnncc's lstm has no "
                         f"projection (write a spec with one)")
    weights = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    layer = RNN(CELL_OF_MODE[module.mode], module.input_size, module.hidden_size,
                num_layers=module.num_layers, bidirectional=module.bidirectional,
                dropout=module.dropout if module.num_layers > 1 else 0.0,
                batch_first=module.batch_first, target=target,
                dtype=_numpy_dtype(module.weight_ih_l0.dtype))
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            end = suffix(k, d)
            for name, value in params_from_torch(layer.cell, weights, end).items():
                layer.params[name + end] = value
    return layer.train(module.training)


def to_torch(layer: RNN):
    """A torch.nn.LSTM, GRU or RNN computing what `layer` computes (shipped rnn, rnn_relu, lstm
    and gru cells; a summed bias goes to bias_ih, with bias_hh zero there), in the layer's dtype
    and training mode."""
    import torch

    _layout(layer.cell)  # raises for a cell without a PyTorch counterpart
    _, kind, extra = MODULE_OF_CELL[layer.cell.name]
    torch_dtype = torch.float64 if layer.dtype == np.float64 else torch.float32
    module = getattr(torch.nn, kind)(layer.input_size, layer.hidden_size,
                                     num_layers=layer.num_layers, bias=True,
                                     batch_first=layer.batch_first, dropout=layer.dropout,
                                     bidirectional=layer.bidirectional, dtype=torch_dtype, **extra)
    weights = {}
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            end = suffix(k, d)
            own = {name: layer.params[name + end] for name in layer.cell.params}
            weights.update(params_to_torch(layer.cell, own, end))
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return module.train(layer.training)

"""Weight exchange with PyTorch's nn.RNN / nn.LSTM / nn.GRU for the shipped rnn, lstm, gru specs.

Plain numpy on both sides: torch is never imported here. PyTorch stacks the gates of one layer
into `weight_ih_l{k}` [G*H, I], `weight_hh_l{k}` [G*H, H], `bias_ih_l{k}` and `bias_hh_l{k}` [G*H],
gate blocks in the order below. rnncc's specs name one matrix per gate and (where the equations
allow it) one bias, the sum of PyTorch's two; the GRU's candidate gate keeps its recurrent bias
apart (d_n) because the reset gate multiplies it.
"""
from __future__ import annotations

import numpy as np

# cell name -> one (input matrix, recurrent matrix, bias, separate recurrent bias) per gate block,
# in PyTorch's block order.
LAYOUTS = {
    "rnn": [("W", "U", "b", None)],
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
    return layout


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

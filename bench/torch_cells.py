"""The PyTorch contenders: torch.nn's built-in layers, and the layer-norm LSTM as the eager
module a user writes today (the "custom cell" rnncc is meant to replace). Imports torch; the
tests hold lnlstm_module to specs/lnlstm.cell."""
from __future__ import annotations

import numpy as np

BUILTIN = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


def torch_dtype(dtype):
    import torch
    return torch.float32 if np.dtype(dtype) == np.float32 else torch.float64


def builtin_module(name, I, H, dtype, **options):
    import torch
    return getattr(torch.nn, BUILTIN[name])(I, H, **options).to(dtype=torch_dtype(dtype))


def lnlstm_module(I, H, dtype):
    """haste's LayerNormLSTM as an eager PyTorch module, the function of specs/lnlstm.cell:
    W x and U h each layer-normalised over the 4H gate values (gains, no shift), the cell
    state normalised before its tanh (gain and shift), gate order i, f, g, o."""
    import torch

    class LNLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = H
            self.W = torch.nn.Linear(I, 4 * H, bias=False)
            self.U = torch.nn.Linear(H, 4 * H, bias=False)
            self.ln_x = torch.nn.LayerNorm(4 * H, elementwise_affine=True, bias=False)
            self.ln_h = torch.nn.LayerNorm(4 * H, elementwise_affine=True, bias=False)
            self.ln_c = torch.nn.LayerNorm(H)
            self.b = torch.nn.Parameter(torch.zeros(4 * H))

        def forward(self, x):
            T, B = x.shape[0], x.shape[1]
            h = x.new_zeros(B, self.hidden)
            c = x.new_zeros(B, self.hidden)
            wx = self.ln_x(self.W(x))
            ys: list[torch.Tensor] = []
            for t in range(T):
                gates = wx[t] + self.ln_h(self.U(h)) + self.b
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
                ys.append(h)
            return torch.stack(ys), (h, c)

    return LNLSTM().to(dtype=torch_dtype(dtype))

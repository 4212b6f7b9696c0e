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


# -- cells whose state meets no matrix (bench/scan.py) --------------------------------------------
# Each as the eager PyTorch loop a user writes from the paper: the input products hoisted out
# of the loop (one matmul over all T*B rows, as the papers' parallel forms do), then one
# elementwise update per step. The hoisted values are split into steps with unbind, whose
# backward stacks the steps' gradients once (indexing z[t] in the loop would make each step's
# backward a zero tensor the size of all of z: quadratic in T, 6.5 s for minGRU at T=8192).
# Parameters are the spec's (names and shapes of specs/NAME.cell), so tests hold each module
# to its spec.

LANE_CELLS = ("mingru", "minlstm", "qrnn", "indrnn", "sru")


def lane_module(name, params: dict, dtype):
    """The eager loop of shipped cell `name` with the spec's parameters (numpy arrays):
    forward(x [T, B, I], state dict or None) -> (ys [T, B, H], final state dict)."""
    import torch

    class Lane(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.ParameterDict({k: torch.nn.Parameter(
                torch.tensor(np.asarray(v), dtype=torch_dtype(dtype))) for k, v in params.items()})

        def proj(self, x, *names):
            """x @ W^T for each W, as one product over all T*B rows."""
            W = torch.cat([self.p[n] for n in names])
            return (x @ W.T).split([self.p[n].shape[0] for n in names], dim=-1)

        @staticmethod
        def steps(*values):
            """Each [T, B, H] value as its T steps."""
            return [v.unbind(0) for v in values]

        def forward(self, x, state=None):
            T, B = x.shape[0], x.shape[1]
            H = self.p["W_h" if name in ("mingru", "minlstm") else
                       "W" if name in ("indrnn", "sru") else "W_z"].shape[0]
            s = x.new_zeros(B, H) if state is None else next(iter(state.values()))
            p, ys = self.p, []
            if name == "mingru":
                wz, wh = self.proj(x, "W_z", "W_h")
                z, hc = self.steps(torch.sigmoid(wz + p["b_z"]), wh + p["b_h"])
                for t in range(T):
                    s = (1 - z[t]) * s + z[t] * hc[t]
                    ys.append(s)
            elif name == "minlstm":
                wf, wi, wh = self.proj(x, "W_f", "W_i", "W_h")
                f, i = torch.sigmoid(wf + p["b_f"]), torch.sigmoid(wi + p["b_i"])
                hc = wh + p["b_h"]
                f, i, hc = self.steps(f / (f + i), i / (f + i), hc)
                for t in range(T):
                    s = f[t] * s + i[t] * hc[t]
                    ys.append(s)
            elif name == "qrnn":
                wz, wf, wo = self.proj(x, "W_z", "W_f", "W_o")
                z, f = torch.tanh(wz + p["b_z"]), torch.sigmoid(wf + p["b_f"])
                o = torch.sigmoid(wo + p["b_o"])
                z, f, o = self.steps(z, f, o)
                for t in range(T):
                    s = f[t] * s + (1 - f[t]) * z[t]
                    ys.append(o[t] * s)
            elif name == "indrnn":
                (wx,) = self.steps(*self.proj(x, "W"))
                for t in range(T):
                    s = torch.relu(wx[t] + p["u"] * s + p["b"])
                    ys.append(s)
            else:   # sru
                wf, w, wr, wh = self.steps(*self.proj(x, "W_f", "W", "W_r", "W_h"))
                for t in range(T):
                    f = torch.sigmoid(wf[t] + p["v_f"] * s + p["b_f"])
                    r = torch.sigmoid(wr[t] + p["v_r"] * s + p["b_r"])
                    s = f * s + (1 - f) * w[t]
                    ys.append(r * s + (1 - r) * wh[t])
            state_name = "c" if name in ("qrnn", "sru") else "h"
            return torch.stack(ys), {state_name: s}

    return Lane()


def mingru_log_scan_module(params: dict, dtype):
    """minGRU as the paper's own parallel code runs it (Feng et al. 2024, appendix: log-space
    parallel scan with torch.logcumsumexp, batch-major). Its candidate is g(W_h x + b_h), with
    g(v) = v + 0.5 for v >= 0, sigmoid(v) below (kept positive for the logarithm): the paper's
    log-space minGRU, a slightly different function from specs/mingru.cell's sequential form,
    with the same cost structure. forward(x [T, B, I]) -> (ys [T, B, H], final)."""
    import torch
    import torch.nn.functional as F

    def log_g(v):
        return torch.where(v >= 0, (F.relu(v) + 0.5).log(), -F.softplus(-v))

    class LogScan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.ParameterDict({k: torch.nn.Parameter(
                torch.tensor(np.asarray(v), dtype=torch_dtype(dtype))) for k, v in params.items()})

        def forward(self, x):
            p = self.p
            x = x.transpose(0, 1)   # [B, T, I]
            k = x @ p["W_z"].T + p["b_z"]
            log_z, log_coeffs = -F.softplus(-k), -F.softplus(k)
            log_values = log_z + log_g(x @ p["W_h"].T + p["b_h"])
            log_h0 = log_g(x.new_zeros(x.shape[0], 1, k.shape[-1]))
            log_values = torch.cat([log_h0, log_values], dim=1)
            a_star = F.pad(torch.cumsum(log_coeffs, dim=1), (0, 0, 1, 0))
            log_h = a_star + torch.logcumsumexp(log_values - a_star, dim=1)
            h = torch.exp(log_h)[:, 1:].transpose(0, 1)
            return h, {"h": h[-1]}

    return LogScan()

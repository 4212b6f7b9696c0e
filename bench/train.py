"""CPU benchmark of a training step with rnncc inside PyTorch: a model whose recurrent layer is
rnncc.torch.RNN against the same model with torch's own layer.

The model: the recurrent layer (I = H), then a linear head; a step is zero_grad, forward, a mean
squared error against a fixed target, backward and an Adam step. Contenders (bench/harness.py:
each in its own process, the same number of threads, rounds interleaved, medians):
    torch           the model with torch.nn.LSTM / GRU / RNN, or for lnlstm the eager module a
                    user writes today (bench/torch_cells.py); a torch-only process
    rnncc.torch     the model with rnncc.torch.RNN(cell); torch and rnncc in one process, as
                    any training script has them
    rnncc.RNN       rnncc.RNN's own forward and backward (no head, no optimizer) in that same
                    process, beside the module's forward and backward alone: what the module
                    adds per call is their difference (`module us`)

    python bench/train.py                      # lstm and lnlstm at the issue's two sizes
    python bench/train.py --cells gru --configs 100,64,256 --rounds 9 --write
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import layer_parts  # noqa: E402  (data, thread limits, torch contenders)
import harness  # noqa: E402


def model(layer, H, dtype):
    import torch

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = layer
            self.head = torch.nn.Linear(H, H).to(dtype)

        def forward(self, x):
            y = self.rnn(x)[0]
            return self.head(y)
    return Model()


def train_step(module, x, target):
    import torch
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(module(x), target)
        loss.backward()
        opt.step()
    return run


def torch_data(T, B, H, dtype):
    import torch
    x, target = layer_parts.data(T, B, H, H, dtype)
    return torch.from_numpy(x), torch.from_numpy(target)


def build_torch(name, T, B, H, dtype, threads):
    import torch
    torch.set_num_threads(threads)
    x, target = torch_data(T, B, H, dtype)
    return train_step(model(layer_parts.torch_module(name, H, H, dtype), H, x.dtype), x, target)


def build_module(name, T, B, H, dtype, threads, step=True):
    import torch
    torch.set_num_threads(threads)
    import rnncc.torch
    layer_parts.limit_rnncc_threads(threads)
    x, target = torch_data(T, B, H, dtype)
    layer = rnncc.torch.RNN(name, H, H, dtype=x.dtype, seed=0)
    if step:
        return train_step(model(layer, H, x.dtype), x, target)
    x.requires_grad_(True)

    def run():   # the module's forward and backward alone, as rnncc.RNN's below (x is an
        # activation whose gradient flows on: a fresh one each step, as in a model)
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x)[0].backward(target)
    return run


def build_layer(name, T, B, H, dtype, threads):
    import torch  # noqa: F401  (the process a training script is: torch imported first)
    import rnncc
    layer_parts.limit_rnncc_threads(threads)
    x, dy = layer_parts.data(T, B, H, H, dtype)
    return layer_parts.rnncc_pass(rnncc.RNN(name, H, H, dtype=np.dtype(dtype), seed=0), x, dy, True)


BUILDERS = {
    "torch": build_torch,
    "module step": build_module,
    "module": lambda **config: build_module(step=False, **config),
    "layer": build_layer,
}

HEADER = ("| cell | T, B, I=H | torch step ms | rnncc.torch step ms | rnncc.torch/torch | "
          "module fwd+bwd ms | rnncc.RNN fwd+bwd ms | module/rnncc.RNN | module us |")


def rows_for(workers, name, T, B, H, dtype, rounds) -> list[str]:
    config = dict(name=name, T=T, B=B, H=H, dtype=dtype)
    contenders = [("torch", workers["torch"], "torch", config),
                  ("step", workers["mixed"], "module step", config),
                  ("module", workers["mixed"], "module", config),
                  ("layer", workers["mixed"], "layer", config)]
    med = harness.measure_in_processes(contenders, rounds)
    ms = lambda k: f"{1e3 * med[k]:.2f}"
    return [f"| {name} | {T}, {B}, {H} | {ms('torch')} | {ms('step')} | "
            f"{med['step'] / med['torch']:.2f} | {ms('module')} | {ms('layer')} | "
            f"{med['module'] / med['layer']:.3f} | {1e6 * (med['module'] - med['layer']):.0f} |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "lnlstm"])
    parser.add_argument("--configs", nargs="+", default=["100,64,256", "200,1,128"],
                        help="T,B,I=H triples")
    harness.add_run_options(parser)
    args = parser.parse_args(argv)
    cases = harness.table_cases(args, lambda workers, name, T, B, H: rows_for(
        workers, name, T, B, H, args.dtype, args.rounds), passes=False)
    harness.run_table(__file__, argv, args, HEADER, cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())

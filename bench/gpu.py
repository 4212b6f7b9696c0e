"""GPU benchmark: rnncc's cuda target against cuDNN (torch.nn.LSTM/GRU/RNN) and, for a custom
cell, against the same cell as an eager PyTorch module on the GPU.

Side by side in one process, rounds interleaved, medians of CUDA-event times, as ratios:
    rnncc           cell.forward (forward) or cell.backward (a training forward, then BPTT) on
                    device arrays, target="cuda": the caller's tensors are read in place
    torch           torch.nn.LSTM/GRU/RNN on the GPU (cuDNN) for the shipped cells, the eager
                    module of bench/cpu.py for lnlstm (hand-written), rnncc.torch.Eager (the
                    eager module generated from the spec) for any other; forward under
                    no_grad, or forward and backward
    rnncc / torch   the issue's targets: <= 1.5 for lstm and gru; for lnlstm the speedup
                    torch / rnncc, >= 5

    python bench/gpu.py                                  # the issue's configurations
    python bench/gpu.py --cells lstm --configs 100,64,512 --rounds 20 --write

A configuration is T,B,H (I = H). --write appends the table to bench/RESULTS.md with the GPU
and the command. Without a GPU it runs in Numba's CUDA simulator if NUMBA_ENABLE_CUDASIM=1 (and
torch on the CPU): only to check that the script works; the times mean nothing there.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

import rnncc

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402  (rnncc/benchmark/processes.py's in-process timing loop; the table)
import torch_cells  # noqa: E402  (the eager lnlstm module)


class Device:
    """Where the contenders run: the GPU (with CUDA events), or the simulator (wall clock)."""

    def __init__(self):
        import torch
        from numba import cuda

        from rnncc.backends.cuda.device import simulator
        self.cuda, self.torch = cuda, torch
        self.simulated = simulator()
        self.torch_device = "cuda" if torch.cuda.is_available() and not self.simulated else "cpu"
        if self.simulated:
            self.name = "Numba's CUDA simulator (times mean nothing)"
        else:
            name = cuda.get_current_device().name
            self.name = name.decode() if isinstance(name, bytes) else str(name)

    def tensor(self, array: np.ndarray):
        return self.torch.from_numpy(array).to(self.torch_device)

    def for_rnncc(self, array: np.ndarray):
        """rnncc reads torch's CUDA tensors in place; in the simulator, Numba's device arrays."""
        if self.torch_device == "cuda":
            return self.tensor(array)
        return self.cuda.to_device(array)

    def time(self, fn) -> float:
        """Seconds one call of fn takes on the device (CUDA events on the default stream, which
        both Numba and PyTorch launch on)."""
        if self.simulated:
            return harness.wall_time(fn)
        begin, end = self.cuda.event(), self.cuda.event()
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1000


def contenders(device: Device, name: str, T: int, B: int, H: int, dtype, backward: bool):
    torch = device.torch
    cell = rnncc.load(name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    p = {k: device.for_rnncc(v) for k, v in cell.init_params(seed=0, dtype=dtype, I=H,
                                                             H=H).items()}
    x_r, dy_r = device.for_rnncc(x), device.for_rnncc(dy)
    if backward:
        def run_rnncc():
            cell.backward(p, x_r, dy_r, target="cuda")
    else:
        def run_rnncc():
            cell.forward(p, x_r, target="cuda")

    if name in torch_cells.BUILTIN:
        module = torch_cells.builtin_module(name, H, H, dtype)
    elif name == "lnlstm":   # the hand-written one: faster than the spec's, as on the cpu
        module = torch_cells.lnlstm_module(H, H, dtype)
    else:                    # any other cell: its eager module, generated from the spec
        from rnncc.torch import Eager
        module = Eager(name, H, H, dtype=torch.float64 if dtype == np.float64
                                   else torch.float32)
    module = module.to(device.torch_device)
    x_t, dy_t = device.tensor(x), device.tensor(dy)
    if backward:
        x_t.requires_grad_(True)

        def run_torch():
            module.zero_grad(set_to_none=True)
            out, _ = module(x_t)
            out.backward(dy_t)
    else:
        def run_torch():
            with torch.no_grad():
                module(x_t)
    return {"rnncc": run_rnncc, "torch": run_torch}


HEADER = ("| cell | T, B, I=H | pass | rnncc ms | torch ms | torch is | rnncc / torch "
          "| target | met |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "lnlstm"])
    parser.add_argument("--configs", nargs="+", default=["100,64,512"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--no-backward", action="store_true", help="forward only")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    device = Device()
    rows = []
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for config in args.configs:
        T, B, H = (int(v) for v in config.split(","))
        for name in args.cells:
            builtin = name in ("lstm", "gru", "rnn")
            for backward in ([False] if args.no_backward else [False, True]):
                m = harness.measure(contenders(device, name, T, B, H, dtype, backward),
                                         args.rounds, timer=device.time)
                ratio = m["rnncc"] / m["torch"]
                if builtin:
                    what, target, met = "cuDNN", "<= 1.5", ratio <= 1.5
                else:
                    what, target, met = "eager", "torch/rnncc >= 5", 1 / ratio >= 5
                on_gpu = device.torch_device == "cuda" and not device.simulated
                row = (f"| {name} | {T}, {B}, {H} | {'fwd+bwd' if backward else 'fwd'} "
                       f"| {m['rnncc'] * 1e3:.3f} | {m['torch'] * 1e3:.3f} "
                       f"| {what if on_gpu else 'on the cpu'} | {ratio:.2f} | {target} "
                       f"| {('yes' if met else 'no') if on_gpu else '-'} |")
                print(row, flush=True)
                rows.append(row)
    if args.write:
        machine = (f"{device.name}, Python {platform.python_version()}, torch "
                   f"{device.torch.__version__} on {device.torch_device}, {args.dtype}")
        timing = " (wall clock)" if device.simulated else " (CUDA events)"
        harness.record("gpu.py", argv, HEADER, rows, machine,
                       f"medians of {args.rounds} interleaved rounds{timing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU benchmark: rnncc's cpu target against PyTorch and against the GEMM floor.

Side by side in one process, rounds interleaved, medians, reported as ratios:
    rnncc           an rnncc.RNN layer on the cpu target (forward: eval mode, like torch's
                    forward under no_grad; forward+backward: training mode, then backward)
    rnncc / torch   torch.nn.LSTM/GRU/RNN (torch.set_num_threads(threads)) for the shipped
                    cells, the same cell as an eager PyTorch module for the others
    rnncc / script  custom cells only: that module compiled with torch.jit.script
    rnncc / floor   the cell's matrix products alone, in numpy: the input GEMM over all T*B rows
                    and one recurrent GEMM per step (forward); for forward+backward also the
                    backward step's GEMM and the three weight/input gradient GEMMs

    python bench/cpu.py                          # the issue's configurations, float32
    python bench/cpu.py --cells lstm --configs 100,64,256 --rounds 5 --write

--write appends the table to bench/RESULTS.md with the machine and the command.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# PyTorch's OpenMP threads spin after each op by default, taking the cores from whatever runs
# next in the same process; interleaved rounds would charge that to rnncc (measured: rnn fwd at
# T=100, B=64, H=256 took 128 ms after torch's spinning threads, 38 ms with them asleep).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The same for OpenBLAS (numpy's, for the floor, and SciPy's, for rnncc): rnncc sets this too,
# but numpy's BLAS loads before rnncc is imported.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

import rnncc  # noqa: E402

GATES = {"rnn": 1, "gru": 3, "lstm": 4, "lnlstm": 4}


def torch_builtin(name, I, H, dtype):
    import torch
    module = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[name](I, H)
    return module.to(dtype=torch.float32 if dtype == np.float32 else torch.float64)


def torch_lnlstm(I, H, dtype):
    """haste's LayerNormLSTM as an eager PyTorch module (the 'custom cell' users write today)."""
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

    module = LNLSTM()
    return module.to(dtype=torch.float32 if dtype == np.float32 else torch.float64)


def floor(name, T, B, I, H, dtype, backward):
    """The matrix products the cell needs, alone."""
    G = GATES[name] * H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T * B, I)).astype(dtype)
    W = rng.standard_normal((I, G)).astype(dtype)
    U = rng.standard_normal((H, G)).astype(dtype)
    h = rng.standard_normal((B, H)).astype(dtype)
    xw = np.empty((T * B, G), dtype)
    hu = np.empty((B, G), dtype)
    dg = rng.standard_normal((T * B, G)).astype(dtype)
    dh = np.empty((B, H), dtype)
    dx = np.empty((T * B, I), dtype)
    hs = rng.standard_normal((T * B, H)).astype(dtype)

    def run():
        np.dot(x, W, out=xw)
        for _ in range(T):
            np.dot(h, U, out=hu)
        if backward:
            for t in range(T):
                np.dot(dg[t * B:(t + 1) * B], U.T, out=dh)
            np.dot(dg, W.T, out=dx)
            np.dot(dg.T, x)
            np.dot(dg.T, hs)
    return run


def rnncc_pass(layer, x, dy, backward):
    """One timed call of an rnncc layer: forward in eval mode (as torch's forward under
    no_grad: nothing kept for backward), or forward in training mode and backward."""
    if not backward:
        layer.eval()
        return lambda: layer(x)

    def run():
        layer(x)
        layer.backward(dy)
    return run


def torch_pass(module, x, dy, backward):
    """The same for a torch module (forward under no_grad, or forward and backward)."""
    import torch
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    if not backward:
        def run():
            with torch.no_grad():
                module(xt)
        return run
    xt.requires_grad_(True)

    def run():
        module.zero_grad(set_to_none=True)
        out, _ = module(xt)
        out.backward(dyt)
    return run


def contenders(name, T, B, I, H, dtype, backward, threads):
    import torch
    torch.set_num_threads(threads)
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(dtype)
    dys = np.random.default_rng(2).standard_normal((T, B, H)).astype(dtype)
    builtin = name in ("rnn", "gru", "lstm")
    module = torch_builtin(name, I, H, dtype) if builtin else torch_lnlstm(I, H, dtype)
    fns = {"rnncc": rnncc_pass(rnncc.RNN(name, I, H, dtype=dtype, seed=0), x, dys, backward),
           "torch": torch_pass(module, x, dys, backward)}
    if not builtin:  # a custom cell: also as TorchScript, the usual way to speed one up
        fns["script"] = torch_pass(torch.jit.script(module), x, dys, backward)
    fns["floor"] = floor(name, T, B, I, H, dtype, backward)
    return fns


def wall_time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(fns: dict, rounds: int, timer=wall_time) -> dict:
    """Median seconds per call of each fn; `timer(fn)` times one call."""
    for fn in fns.values():  # warm up: compile, allocate, fault pages in
        fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():  # interleaved, so drift hits all alike
            times[k].append(timer(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(script: str, argv, args, header: str, rows: list[str], machine: str | None = None,
           timing: str = "") -> None:
    """Append a table to bench/RESULTS.md under the command that made it and the machine
    (default: this CPU, with args.threads and args.dtype); `timing` says how rounds were timed."""
    import torch
    command = " ".join(argv if argv is not None else sys.argv[1:])
    if machine is None:
        machine = (f"{_cpu_model()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, numpy {np.__version__}, torch "
                   f"{torch.__version__}, {args.threads} threads, {args.dtype}")
    with Path(__file__).with_name("RESULTS.md").open("a") as out:
        out.write(f"\n## {time.strftime('%Y-%m-%d')}: `python bench/{script} {command}`\n\n"
                  f"{machine}; medians of {args.rounds} interleaved rounds{timing}\n\n"
                  f"{header}\n|{'---|' * (header.count('|') - 1)}\n" + "\n".join(rows) + "\n")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark script here takes: rounds, threads, dtype, passes, --write."""
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--no-backward", action="store_true", help="forward only")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn", "lnlstm"])
    parser.add_argument("--configs", nargs="+", default=["100,64,256", "50,128,512", "200,1,128"],
                        help="T,B,I=H triples")
    add_run_options(parser)
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    rows = []
    header = ("| cell | T, B, I=H | pass | rnncc ms | torch ms | script ms | floor ms | "
              "rnncc/torch | rnncc/script | rnncc/floor |")
    print(header)
    print("|" + "---|" * 10)
    for name in args.cells:
        for config in args.configs:
            T, B, H = (int(v) for v in config.split(","))
            for backward in ([False] if args.no_backward else [False, True]):
                med = measure(contenders(name, T, B, H, H, dtype, backward, args.threads),
                              args.rounds)
                script = med.get("script")
                script_ms = "-" if script is None else f"{1e3 * script:.1f}"
                vs_script = "-" if script is None else f"{med['rnncc'] / script:.2f}"
                row = (f"| {name} | {T}, {B}, {H} | {'fwd+bwd' if backward else 'fwd'} | "
                       f"{1e3 * med['rnncc']:.1f} | {1e3 * med['torch']:.1f} | {script_ms} | "
                       f"{1e3 * med['floor']:.1f} | {med['rnncc'] / med['torch']:.2f} | "
                       f"{vs_script} | {med['rnncc'] / med['floor']:.2f} |")
                print(row, flush=True)
                rows.append(row)
    if args.write:
        record("cpu.py", argv, args, header, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

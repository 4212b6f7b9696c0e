"""CPU benchmark: rnncc's cpu target against PyTorch and against the GEMM floor.

Each contender runs in its own process in its own best configuration (bench/harness.py), with
the same number of threads; rounds are interleaved across the processes; medians, as ratios:
    rnncc           an rnncc.RNN layer on the cpu target (forward: eval mode, like torch's
                    forward under no_grad; forward+backward: training mode, then backward)
    torch           torch.nn.LSTM/GRU/RNN for the shipped cells, the same cell as an eager
                    PyTorch module for the others (bench/torch_cells.py), torch's defaults
                    (torch.set_num_threads(threads) only)
    script          custom cells only: that module compiled with torch.jit.script
    floor           the cell's matrix products alone, in numpy: the input GEMM over all T*B rows
                    and one recurrent GEMM per step (forward); for forward+backward also the
                    backward step's GEMM and the three weight/input gradient GEMMs
    limit           the FLOP limit: the FLOPs of the cell's products (from rnncc's Plan) at
                    the machine's FMA peak, measured by a probe (bench/peak.py) in the floor's
                    process on as many threads, the fastest of its rounds. No implementation
                    does the products faster; OpenBLAS's products (the floor) may be far from it
and a second row per case, "mixed": rnncc and torch in one process (torch imported first, as
in a training script), timed in turn.

    python bench/cpu.py                          # the issue's configurations, float32
    python bench/cpu.py --cells lstm --configs 100,64,256 --rounds 5 --write

--write appends the table to bench/RESULTS.md with the machine and the command. On machines
that set OPENBLAS_CORETYPE (older OpenBLAS builds needed it), unset it for the run: it makes
numpy's and SciPy's OpenBLAS (rnncc's GEMMs, the floor) run older kernels than the CPU has;
the table's machine line says which kernels each process ran.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

GATES = {"rnn": 1, "gru": 3, "lstm": 4, "lnlstm": 4}


def floor(name, T, B, I, H, dtype, backward, threads=None):
    """The matrix products the cell needs, alone (BLAS limited to `threads`)."""
    dtype = np.dtype(dtype)
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
    if threads is not None:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=threads, user_api="blas")

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


def data(T, B, I, out, dtype):
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(dtype)
    dy = np.random.default_rng(2).standard_normal((T, B, out)).astype(dtype)
    return x, dy


def limit_rnncc_threads(threads: int) -> None:
    """Numba's threads (the kernels) and BLAS's (the GEMMs) for an rnncc contender."""
    import numba
    from threadpoolctl import threadpool_limits
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=threads, user_api="blas")


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


def torch_module(name, I, H, dtype):
    import torch_cells
    if name in torch_cells.BUILTIN:
        return torch_cells.builtin_module(name, I, H, dtype)
    return torch_cells.lnlstm_module(I, H, dtype)


def build_rnncc(name, T, B, H, dtype, backward, threads):
    import rnncc
    from peak import product_flops
    x, dy = data(T, B, H, H, dtype)
    limit_rnncc_threads(threads)
    layer = rnncc.RNN(name, H, H, dtype=np.dtype(dtype), seed=0)
    run = rnncc_pass(layer, x, dy, backward)
    run.facts = {"flops": product_flops(layer, T, B, backward)}
    return run


def build_peak(name, T, B, H, dtype, backward, threads):
    from peak import fma_probe
    return fma_probe(threads, dtype)


def build_torch(name, T, B, H, dtype, backward, threads, script=False):
    import torch
    torch.set_num_threads(threads)
    x, dy = data(T, B, H, H, dtype)
    module = torch_module(name, H, H, dtype)
    return torch_pass(torch.jit.script(module) if script else module, x, dy, backward)


BUILDERS = {
    "rnncc": build_rnncc,
    "torch": build_torch,
    "script": lambda threads, **config: build_torch(threads=threads, script=True, **config),
    "floor": lambda name, T, B, H, dtype, backward, threads: floor(name, T, B, H, H, dtype,
                                                                   backward, threads),
    "peak": build_peak,
}


HEADER = ("| cell | T, B, I=H | pass | process | rnncc ms | torch ms | script ms | floor ms | "
          "limit ms | rnncc/torch | rnncc/script | rnncc/floor | rnncc/limit | torch/limit |")


def rows_for(workers, name, T, B, H, dtype, backward, rounds) -> list[str]:
    config = dict(name=name, T=T, B=B, H=H, dtype=dtype, backward=backward)
    custom = name not in ("rnn", "gru", "lstm")
    contenders = [("rnncc", workers["rnncc"], "rnncc", config),
                  ("torch", workers["torch"], "torch", config),
                  ("floor", workers["floor"], "floor", config),
                  # torch set up (imported) first in the mixed process, as in a training script
                  ("mixed torch", workers["mixed"], "torch", config),
                  ("mixed rnncc", workers["mixed"], "rnncc", config),
                  ("peak", workers["floor"], "peak", config)]
    if custom:   # a custom cell: also as TorchScript, the usual way to speed one up
        contenders.append(("script", workers["torch"], "script", config))
    facts, best = {}, {}
    med = harness.measure_in_processes(contenders, rounds, facts, best)
    peak = facts["peak"]["flops"] / best["peak"]   # FLOP/s
    med["limit"] = facts["rnncc"]["flops"] / peak
    ms = lambda k: f"{1e3 * med[k]:.2f}" if k in med else "-"
    ratio = lambda a, b: f"{med[a] / med[b]:.2f}" if a in med and b in med else "-"
    head = f"| {name} | {T}, {B}, {H} | {'fwd+bwd' if backward else 'fwd'} |"
    return [f"{head} own | {ms('rnncc')} | {ms('torch')} | {ms('script')} | {ms('floor')} | "
            f"{ms('limit')} | {ratio('rnncc', 'torch')} | {ratio('rnncc', 'script')} | "
            f"{ratio('rnncc', 'floor')} | {ratio('rnncc', 'limit')} | "
            f"{ratio('torch', 'limit')} |",
            f"{head} mixed | {ms('mixed rnncc')} | {ms('mixed torch')} | - | - | - | "
            f"{ratio('mixed rnncc', 'mixed torch')} | - | - | {ratio('mixed rnncc', 'limit')} | "
            f"{ratio('mixed torch', 'limit')} |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn", "lnlstm"])
    parser.add_argument("--configs", nargs="+", default=["100,64,256", "50,128,512", "200,1,128"],
                        help="T,B,I=H triples")
    harness.add_run_options(parser)
    args = parser.parse_args(argv)
    cases = harness.table_cases(args, lambda workers, name, T, B, H, backward: rows_for(
        workers, name, T, B, H, args.dtype, backward, args.rounds))
    harness.run_table(__file__, argv, args, HEADER, cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())

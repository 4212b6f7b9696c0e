"""rnncc's own compiler against Numba on the same generated code: one thread's functions.

The cpu target compiles the one-thread variant of every function with rnncc's compiler
(rnncc/backends/cpu/native/) and the threaded one with Numba; RNNCC_NATIVE=0 gives Numba both.
This runs an rnncc.RNN layer with its kernels on the calling thread (the one-thread variant
forced) in two worker processes, one per compiler, rounds interleaved, medians: the training
forward, the backward, and inference, per cell and configuration. native/numba below 1: the
native code is faster.

    python bench/native.py                                # lstm, gru, rnn, lnlstm; B=64 and B=1
    python bench/native.py --cells lstm --configs 100,64,256 --rounds 7 --write
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

HEADER = ("| cell | T, B, I=H | direction | native ms | numba ms | native/numba |")
DIRECTIONS = ("forward", "backward", "infer")


def _layer(name, T, B, H, threads):
    import rnncc
    from rnncc.backends.cpu.threads import ONE_THREAD
    layer = rnncc.RNN(name, H, H, dtype=np.float32, seed=0)
    layer._units[0][0]._compiled.variant = ONE_THREAD   # kernels on the calling thread
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    return layer, x, dy


def build(direction, name, T, B, H, threads):
    layer, x, dy = _layer(name, T, B, H, threads)
    if direction == "infer":
        layer.eval()
        return lambda: layer(x)
    layer.train()
    if direction == "forward":
        return lambda: layer(x)

    def step():   # a training step: forward, then backward
        layer(x)
        layer.backward(dy)
    return step


BUILDERS = {d: (lambda d: lambda threads, **c: build(d, threads=threads, **c))(d)
            for d in DIRECTIONS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn", "lnlstm"])
    parser.add_argument("--configs", nargs="+", default=["100,64,256", "200,1,128"])
    harness.add_run_options(parser)
    args = parser.parse_args(argv)
    env = {"1": dict(os.environ, RNNCC_NATIVE="1"), "0": dict(os.environ, RNNCC_NATIVE="0")}
    workers = {k: harness.Worker(__file__, args.threads, env=e) for k, e in env.items()}
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    rows = []
    try:
        for name in args.cells:
            for config in args.configs:
                T, B, H = map(int, config.split(","))
                for direction in DIRECTIONS:
                    c = {"name": name, "T": T, "B": B, "H": H}
                    medians = harness.measure_in_processes(
                        [("native", workers["1"], direction, c),
                         ("numba", workers["0"], direction, c)], args.rounds)
                    row = (f"| {name} | {T}, {B}, {H} | {direction} | "
                           f"{medians['native'] * 1e3:.2f} | {medians['numba'] * 1e3:.2f} | "
                           f"{medians['native'] / medians['numba']:.3f} |")
                    print(row, flush=True)
                    rows.append(row)
        if args.write:
            harness.record(Path(__file__).name, argv if argv is not None else sys.argv[1:],
                           HEADER, rows, harness.machine(workers, args),
                           f"medians of {args.rounds} interleaved rounds, the two compilers "
                           f"in two processes; backward rows are a training forward and "
                           f"backward")
    finally:
        for worker in workers.values():
            worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU benchmark of layer stacks: rnncc.RNN with num_layers / bidirectional against
torch.nn.LSTM/GRU/RNN with the same options, and against the GEMM floor.

Side by side in one process, rounds interleaved, medians, reported as ratios:
    rnncc           rnncc.RNN on the cpu target, its threaded schedule on (the directions of a
                    layer at once; unidirectional stacks in the layer wavefront)
    serial          the same layer with layer.wavefront = False: one layer and direction after
                    another, each with every core (what the schedule gains is rnncc/serial)
    torch           the torch module with the same configuration (torch.set_num_threads)
    floor           the stack's matrix products alone, in numpy, one layer and direction
                    after another (BLAS on every thread)
    par. floor      the same products with the parallelism rnncc's schedule has: the two
                    directions of a layer on two threads, one BLAS thread each (uni: = floor).
                    No schedule of these GEMMs beats the lower of the two floors.

    python bench/stacks.py                                   # the issue's configurations
    python bench/stacks.py --configs lstm,4,uni,100,16,128 --rounds 9 --write

A configuration is CELL,LAYERS,uni|bi,T,B,H (input size = H). --write appends the table to
bench/RESULTS.md with the machine and the command.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/cpu.py
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

sys.path.insert(0, str(Path(__file__).parent))
import cpu as single  # noqa: E402  (bench/cpu.py: measure, floor, machine description)

import numpy as np  # noqa: E402

import rnncc  # noqa: E402

TORCH = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


def parse_config(text: str):
    try:
        name, layers, dirs, T, B, H = text.split(",")
        if dirs not in ("uni", "bi") or name not in TORCH:
            raise ValueError
        return name, int(layers), dirs == "bi", int(T), int(B), int(H)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected CELL,LAYERS,uni|bi,T,B,H with CELL one of "
            f"{', '.join(TORCH)}") from None


def stack_floor(name, layers, bi, T, B, H, dtype, backward, directions_at_once=False):
    """The products of every layer and direction (bench/cpu.py's floor): one after another,
    or a layer's directions on threads of their own with one BLAS thread each."""
    D = 2 if bi else 1
    parts = [[single.floor(name, T, B, H if k == 0 else D * H, H, dtype, backward)
              for _ in range(D)] for k in range(layers)]

    def run():
        for layer in parts:
            for part in layer:
                part()

    if not (directions_at_once and bi):
        return run
    from threadpoolctl import threadpool_limits

    def run_directions_at_once():
        with threadpool_limits(limits=1, user_api="blas"):
            for layer in parts:
                threads = [threading.Thread(target=part) for part in layer]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
    return run_directions_at_once


def contenders(name, layers, bi, T, B, H, dtype, backward, threads):
    import torch
    torch.set_num_threads(threads)
    D = 2 if bi else 1
    x = np.random.default_rng(1).standard_normal((T, B, H)).astype(dtype)
    dy = np.random.default_rng(2).standard_normal((T, B, D * H)).astype(dtype)
    module = getattr(torch.nn, TORCH[name])(H, H, num_layers=layers, bidirectional=bi)
    module = module.to(dtype=torch.float32 if dtype == np.float32 else torch.float64)
    fns = {}
    for label, wavefront in (("rnncc", True), ("serial", False)):
        layer = rnncc.RNN.from_torch(module)
        layer.wavefront = wavefront
        fns[label] = single.rnncc_pass(layer, x, dy, backward)
    fns["torch"] = single.torch_pass(module, x, dy, backward)
    fns["floor"] = stack_floor(name, layers, bi, T, B, H, dtype, backward)
    fns["par. floor"] = stack_floor(name, layers, bi, T, B, H, dtype, backward,
                                    directions_at_once=True)
    return fns


CONTENDERS = ("rnncc", "serial", "torch", "floor", "par. floor")
HEADER = ("| cell | layers | dirs | T, B, I=H | pass | "
          + " | ".join(f"{k} ms" for k in CONTENDERS)
          + " | rnncc/torch | rnncc/serial | rnncc/floor | par. floor/torch |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", type=parse_config,
                        default=[parse_config("lstm,2,bi,100,64,256"),
                                 parse_config("lstm,4,uni,100,16,128")],
                        help="CELL,LAYERS,uni|bi,T,B,H")
    single.add_run_options(parser)
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    columns = HEADER.count("|") - 1
    print(HEADER)
    print("|" + "---|" * columns)
    rows = []
    for name, layers, bi, T, B, H in args.configs:
        for backward in ([False] if args.no_backward else [False, True]):
            med = single.measure(contenders(name, layers, bi, T, B, H, dtype, backward,
                                            args.threads), args.rounds)
            row = (f"| {name} | {layers} | {'bi' if bi else 'uni'} | {T}, {B}, {H} | "
                   f"{'fwd+bwd' if backward else 'fwd'} | "
                   + " | ".join(f"{1e3 * med[k]:.1f}" for k in CONTENDERS)
                   + " | " + " | ".join(f"{med['rnncc'] / med[k]:.2f}"
                                        for k in ("torch", "serial", "floor"))
                   + f" | {med['par. floor'] / med['torch']:.2f} |")
            print(row, flush=True)
            rows.append(row)
    if args.write:
        single.record("stacks.py", argv, args, HEADER, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

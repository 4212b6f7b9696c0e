"""CPU benchmark of layer stacks: rnncc.RNN with num_layers / bidirectional against
torch.nn.LSTM/GRU/RNN with the same options, and against the GEMM floor.

Each contender in its own process with the same number of threads (bench/harness.py), rounds
interleaved, medians, reported as ratios:
    rnncc           rnncc.RNN on the cpu target, its threaded schedule on (the directions of a
                    layer at once; unidirectional stacks in the layer wavefront)
    serial          the same layer with layer.wavefront = False: one layer and direction after
                    another, each with every core (what the schedule gains is rnncc/serial)
    torch           the torch module with the same configuration, torch's defaults
    floor           the stack's matrix products alone, in numpy, one layer and direction
                    after another (BLAS on every thread)
    par. floor      the same products with the parallelism rnncc's schedule has: the two
                    directions of a layer on two threads, one BLAS thread each (uni: = floor).
                    No schedule of these GEMMs beats the lower of the two floors.
and a "mixed" row per case: rnncc and torch in one process (torch imported first).

    python bench/stacks.py                                   # the issue's configurations
    python bench/stacks.py --configs lstm,4,uni,100,16,128 --rounds 9 --write

A configuration is CELL,LAYERS,uni|bi,T,B,H (input size = H). --write appends the table to
bench/RESULTS.md with the machine and the command.
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import layer_parts  # noqa: E402  (floor, passes, thread limits)
import harness  # noqa: E402

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


def stack_floor(name, layers, bi, T, B, H, dtype, backward, threads,
                directions_at_once=False):
    """The products of every layer and direction (bench/cpu.py's floor): one after another,
    or a layer's directions on threads of their own with one BLAS thread each."""
    D = 2 if bi else 1
    parts = [[layer_parts.floor(name, T, B, H if k == 0 else D * H, H, dtype, backward, threads)
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


def stack_data(layers, bi, T, B, H, dtype):
    D = 2 if bi else 1
    x = np.random.default_rng(1).standard_normal((T, B, H)).astype(dtype)
    dy = np.random.default_rng(2).standard_normal((T, B, D * H)).astype(dtype)
    return x, dy


def torch_stack(name, layers, bi, H, dtype, threads):
    import torch
    import torch_cells
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return torch_cells.builtin_module(name, H, H, dtype, num_layers=layers, bidirectional=bi)


def build_rnncc(name, layers, bi, T, B, H, dtype, backward, threads, wavefront=True):
    import rnncc
    x, dy = stack_data(layers, bi, T, B, H, dtype)
    layer = rnncc.RNN(name, H, H, num_layers=layers, bidirectional=bi, dtype=np.dtype(dtype))
    layer.wavefront = wavefront
    layer_parts.limit_rnncc_threads(threads)
    return layer_parts.rnncc_pass(layer, x, dy, backward)


def build_torch(name, layers, bi, T, B, H, dtype, backward, threads):
    x, dy = stack_data(layers, bi, T, B, H, dtype)
    return layer_parts.torch_pass(torch_stack(name, layers, bi, H, dtype, threads), x, dy, backward)


BUILDERS = {
    "rnncc": build_rnncc,
    "serial": lambda **config: build_rnncc(wavefront=False, **config),
    "torch": build_torch,
    "floor": lambda threads, T, B, H, dtype, **config: stack_floor(
        T=T, B=B, H=H, dtype=np.dtype(dtype), threads=threads, **config),
    "par. floor": lambda threads, T, B, H, dtype, **config: stack_floor(
        T=T, B=B, H=H, dtype=np.dtype(dtype), threads=threads, directions_at_once=True,
        **config),
}


CONTENDERS = ("rnncc", "serial", "torch", "floor", "par. floor")
HEADER = ("| cell | layers | dirs | T, B, I=H | pass | process | "
          + " | ".join(f"{k} ms" for k in CONTENDERS)
          + " | rnncc/torch | rnncc/serial | rnncc/floor | par. floor/torch |")


def rows_for(workers, name, layers, bi, T, B, H, dtype, backward, rounds) -> list[str]:
    config = dict(name=name, layers=layers, bi=bi, T=T, B=B, H=H, dtype=dtype,
                  backward=backward)
    contenders = [("rnncc", workers["rnncc"], "rnncc", config),
                  ("serial", workers["rnncc"], "serial", config),
                  ("torch", workers["torch"], "torch", config),
                  ("floor", workers["floor"], "floor", config),
                  ("par. floor", workers["floor"], "par. floor", config),
                  ("mixed torch", workers["mixed"], "torch", config),
                  ("mixed rnncc", workers["mixed"], "rnncc", config)]
    med = harness.measure_in_processes(contenders, rounds)
    ratio = lambda a, b: f"{med[a] / med[b]:.2f}"
    head = (f"| {name} | {layers} | {'bi' if bi else 'uni'} | {T}, {B}, {H} | "
            f"{'fwd+bwd' if backward else 'fwd'} |")
    own = (f"{head} own | " + " | ".join(f"{1e3 * med[k]:.1f}" for k in CONTENDERS)
           + " | " + " | ".join(ratio("rnncc", k) for k in ("torch", "serial", "floor"))
           + f" | {ratio('par. floor', 'torch')} |")
    mixed = (f"{head} mixed | {1e3 * med['mixed rnncc']:.1f} | - | "
             f"{1e3 * med['mixed torch']:.1f} | - | - | {ratio('mixed rnncc', 'mixed torch')} "
             f"| - | - | - |")
    return [own, mixed]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", type=parse_config,
                        default=[parse_config("lstm,2,bi,100,64,256"),
                                 parse_config("lstm,4,uni,100,16,128")],
                        help="CELL,LAYERS,uni|bi,T,B,H")
    harness.add_run_options(parser)
    args = parser.parse_args(argv)
    cases = [lambda workers, config=config, backward=backward: rows_for(
                 workers, *config, args.dtype, backward, args.rounds)
             for config in args.configs
             for backward in ([False] if args.no_backward else [False, True])]
    harness.run_table(__file__, argv, args, HEADER, cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())

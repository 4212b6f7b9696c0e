"""The hardware floor: the machine's measured FMA peak (rnncc/benchmark/floor.py, loaded here by
path: a benchmark's floor process imports neither rnncc nor torch).

    fma_probe(threads)   a function that runs `threads` threads of independent vector FMAs
                         (as many accumulators as the CPU has vector registers for, the widest
                         vectors rnncc's GEMM uses here), with .facts["flops"]: the FLOPs of one
                         call; its time gives the peak in GF/s
    product_flops(...)   2 x the multiply-adds of every matrix product a call of a cell runs
                         (its Plan: the products before the loop, in each step, after it)

    python bench/peak.py [--threads N]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np


def _floor():
    path = Path(__file__).parents[1] / "rnncc" / "benchmark" / "floor.py"
    spec = importlib.util.spec_from_file_location("rnncc_benchmark_floor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


floor = _floor()
fma_probe = floor.fma_probe


def product_flops(layer, T: int, B: int, backward: bool) -> int:
    from rnncc.benchmark.floor import product_flops
    return product_flops(layer, T, B, backward)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="the measured FMA peak of this machine")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    for dtype in (np.float32, np.float64):
        print(f"{np.dtype(dtype).name}: {floor.peak_flops(args.threads, dtype) / 1e9:.0f} GF/s "
              f"on {args.threads} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

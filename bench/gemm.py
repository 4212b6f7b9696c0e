"""rnncc's packed GEMM (rnncc/backends/cpu/native/gemm.py) against numpy's BLAS, at the products
a recurrent layer runs, in GF/s and as a share of the machine's FMA peak (bench/peak.py).

    step      a step's product h @ U^T: [B, H] x [H, 4H], the weight packed once (not timed)
    input     the input product over all rows: [T*B, I] x [I, 4H]
    gradient  a weight's gradient: dgates^T @ h, [4H, T*B] x [T*B, H] (A a transposed view;
              rnncc packs h for the product: timed)
    backward  a backward step's dgates @ U, [B, 4H] x [4H, H], and the input's gradient over
              all rows, dgates @ W, [T*B, 4H] x [4H, I] (A's rows 4 KB apart at H = 256)

Each contender on `--threads` threads (rnncc: its team, team.py; numpy: its BLAS, limited by
threadpoolctl), in this one process, rounds interleaved, medians of calls in a Python loop (a
call through ctypes costs about a microsecond more than its work, numpy's np.dot a few: the
batch-1 rows show it).

    python bench/gemm.py [--threads 2] [--rounds 7] [--write]
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

# (before numpy loads OpenBLAS, as `import rnncc` does for itself: its idle threads then sleep
# soon after a product instead of spinning for tens of milliseconds on the cores rnncc's team
# computes on; measured here, the team then ran at one core's speed)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402
from peak import fma_probe  # noqa: E402

L, P = ctypes.c_int64, ctypes.c_void_p
SHAPES = [("step", "lstm, B=64, H=256", 64, 256, 1024, False),
          ("step", "lstm, B=1, H=128", 1, 128, 512, False),
          ("input", "lstm, T*B=6400, I=H=256", 6400, 256, 1024, False),
          ("gradient", "lstm, 4H=1024, T*B=6400, H=256", 1024, 6400, 256, True),
          ("backward", "lstm step, B=64, H=256", 64, 1024, 256, False),
          ("backward", "lstm dx, T*B=6400, I=H=256", 6400, 1024, 256, False),
          ("backward", "lstm step, B=1, H=128", 1, 512, 128, False)]


def contenders(m, k, n, transposed, threads):
    """{name: a call computing the product} for rnncc and numpy, on the same arrays."""
    from threadpoolctl import threadpool_limits

    from rnncc.backends.cpu import team
    from rnncc.backends.cpu.native import gemm, machine
    from rnncc.backends.cpu.native.function import library
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if transposed else (m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    found = library(gemm.part(np.float32, transposed))
    run = ctypes.CFUNCTYPE(None, L, L, L, P, L, P, P, L)(
        found[gemm.symbol("team_gemm_t" if transposed else "team_gemm", np.float32)])
    pack = ctypes.CFUNCTYPE(None, L, L, P, L, L, P)(
        library(gemm.part(np.float32, False))[gemm.symbol("pack", np.float32)])
    blk = machine.blocking(np.float32)
    bp = np.empty(gemm.packed_size(blk, k, n), np.float32)
    lda = m if transposed else k

    # (the addresses once: each `.ctypes.data` costs about a microsecond, more than a batch-1
    # product's own time)
    arrays = (a, w, bp, c)   # (kept alive by rnncc_product, which holds only addresses)
    a_at, w_at, bp_at, c_at = (x.ctypes.data for x in arrays)

    def rnncc_product(arrays=arrays):
        if transposed:   # a per-call operand: packed for the product, as the compiled code does
            pack(k, n, w_at, n, 1, bp_at)
        run(m, n, k, a_at, lda, bp_at, c_at, n)

    pack(k, n, w.ctypes.data, n, 1, bp.ctypes.data)
    operand = a.T if transposed else a
    limits = threadpool_limits(limits=threads, user_api="blas")

    def numpy_product():
        np.dot(operand, w, out=c)
    return {"rnncc": lambda reps: team.run(lambda: repeat(rnncc_product, reps), threads),
            "numpy": lambda reps: repeat(numpy_product, reps)}, limits


def repeat(fn, reps: int) -> None:
    for _ in range(reps):
        fn()


def timed(fn, reps: int) -> float:
    """Seconds per product of `reps` products in one call of fn (rnncc's in one team, as a
    cell's call makes them)."""
    start = time.perf_counter()
    fn(reps)
    return (time.perf_counter() - start) / reps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    probe = fma_probe(args.threads)
    probe()
    fastest = []   # the probe's, between the cases too: the most the machine gave
    header = ("| product | shape | M, K, N | rnncc GF/s | numpy GF/s | rnncc/numpy time | "
              "rnncc % of peak |")
    rows = []
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    results = []
    for kind, what, m, k, n, transposed in SHAPES:
        fns, limits = contenders(m, k, n, transposed, args.threads)
        flops = 2 * m * k * n
        reps = max(1, min(2000, int(4e9 // flops)))   # about 20 ms a timed call
        times = {name: [] for name in fns}
        with limits:
            for fn in fns.values():
                fn(1)
            for _ in range(args.rounds):
                for name, fn in fns.items():
                    times[name].append(timed(fn, reps))
                start = time.perf_counter()
                probe()
                fastest.append(time.perf_counter() - start)
        results.append((kind, what, m, k, n, flops,
                        {name: statistics.median(v) for name, v in times.items()}))
    peak = probe.facts["flops"] / min(fastest)
    for kind, what, m, k, n, flops, med in results:
        row = (f"| {kind} | {what} | {m}, {k}, {n} | {flops / med['rnncc'] / 1e9:.0f} | "
               f"{flops / med['numpy'] / 1e9:.0f} | {med['rnncc'] / med['numpy']:.2f} | "
               f"{100 * flops / med['rnncc'] / peak:.0f} |")
        print(row, flush=True)
        rows.append(row)
    print(f"FMA peak: {peak / 1e9:.0f} GF/s on {args.threads} threads")
    if args.write:
        harness.record(Path(__file__).name, argv, header, rows,
                       f"{harness.cpu_model()}, float32, {args.threads} threads, FMA peak "
                       f"{peak / 1e9:.0f} GF/s (bench/peak.py)",
                       f"medians of {args.rounds} interleaved rounds, in one process")
    return 0


if __name__ == "__main__":
    sys.exit(main())

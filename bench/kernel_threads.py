"""Kernels on one thread against kernels on Numba's threads, per direction: the measurements
behind the rule for kernel-heavy steps (rnncc/backends/cpu/runtime.py, KERNEL_HEAVY).

In one process (rnncc's; with --beside-torch torch is imported first and runs an nn.LSTM, so
OpenMP's threads are the spinning ones of a training script), an rnncc.RNN layer's training
forward, backward and inference are timed with the rule as it stands and with every kernel
on the calling thread (KERNEL_HEAVY set to infinity), rounds interleaved, medians. Each row
shows the direction's kernel_share, the threads the rule gives it, and the two times: where
the rule gives 2 threads, rule/one below 1 is the gain; where it gives 1, the row is a
check that nothing changed. To re-tune the threshold on another machine class, run it with
--force (every wide step on Numba's threads) and read off which shares gain.

    python bench/kernel_threads.py                       # lnlstm and lstm, B=64
    python bench/kernel_threads.py --cells gru --configs 100,64,256 --force --write
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

HEADER = ("| cell | T, B, I=H | direction | kernel_share | rule's threads | rule ms | "
          "one thread ms | rule/one |")


def rows_for(name: str, T: int, B: int, H: int, rounds: int, force: bool) -> list[str]:
    import numba

    import rnncc
    from rnncc.backends.cpu import runtime
    layer = rnncc.RNN(name, H, H, dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    compiled = layer._units[0][0]._compiled
    sizes = {"I": H, "H": H}
    original = runtime.KERNEL_HEAVY
    rule = 0.0 if force else original
    settings = {"rule": rule, "one": float("inf")}
    times = {(s, d): [] for s in settings for d in ("forward", "backward", "infer")}

    def one_round(setting: str, record: bool) -> None:
        runtime.KERNEL_HEAVY = settings[setting]
        layer.train()
        t0 = time.perf_counter()
        layer(x)
        t1 = time.perf_counter()
        layer.backward(dy)
        t2 = time.perf_counter()
        layer.eval()
        layer(x)
        t3 = time.perf_counter()
        if record:
            for d, t in (("forward", t1 - t0), ("backward", t2 - t1), ("infer", t3 - t2)):
                times[setting, d].append(t)

    try:
        for setting in settings:     # compile both twins, warm the caches
            one_round(setting, False)
        for _ in range(rounds):
            for setting in settings:
                one_round(setting, True)
        runtime.KERNEL_HEAVY = rule
        threads = {d: runtime.kernel_threads(B, sizes, numba.get_num_threads(),
                                             compiled._kernel_share(d, sizes))
                   for d in ("forward", "backward", "infer")}
    finally:
        runtime.KERNEL_HEAVY = original
    rows = []
    for d in ("forward", "backward", "infer"):
        rule_ms = 1e3 * statistics.median(times["rule", d])
        one_ms = 1e3 * statistics.median(times["one", d])
        rows.append(f"| {name} | {T}, {B}, {H} | {d} | {compiled._kernel_share(d, sizes):.3f} "
                    f"| {threads[d]} | {rule_ms:.2f} | {one_ms:.2f} | {rule_ms / one_ms:.2f} |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lnlstm", "lstm"])
    parser.add_argument("--configs", nargs="+", default=["100,64,256", "100,64,128"],
                        help="T,B,I=H triples")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--beside-torch", action="store_true",
                        help="import torch first and run an nn.LSTM, as a training script")
    parser.add_argument("--force", action="store_true",
                        help="the rule's side gets Numba's threads for every wide step")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.beside_torch:
        import torch
        torch.nn.LSTM(8, 8)(torch.zeros(3, 2, 8))
    rows = []
    for name in args.cells:
        for T, B, H in (map(int, c.split(",")) for c in args.configs):
            rows += rows_for(name, T, B, H, args.rounds, args.force)
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    print("\n".join(rows))
    if args.write:
        machine = (f"{harness.cpu_model()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, OMP_WAIT_POLICY="
                   f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}"
                   f"{', beside torch' if args.beside_torch else ''}")
        harness.record(Path(__file__).name, argv, HEADER, rows, machine,
                       f"one process, medians of {args.rounds} interleaved rounds"
                       f"{'; --force: every wide step threaded' if args.force else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

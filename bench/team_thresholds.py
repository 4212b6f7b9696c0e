"""The team's thresholds on this machine: an lstm layer's inference under the rules as they
stand, alone (one thread), and on a team with fixed product thresholds, each setting in a
process of its own, settings interleaved round by round, medians of calls.

    rules       as shipped: team.product_threshold (measured: what one core does in
                SHARE_MIN_SECONDS), gemm.TEAM_MIN_BYTES, runtime.TEAM_MIN_CALL, TEAM_MIN_ELEMENTS
    alone       every call on the calling thread
    team 2^20   every call on a team; products of 2^20 multiply-adds or more shared out, and
                every parallel loop of at least TEAM_MIN_ROWS rows a member
    team 2^18   the same, products from 2^18

On the Zen 5 a team from 2^18 lost (the README's quick start 0.69 -> 1.10 ms), on the Zen 4 it
won (1.24 -> 0.87): hence a threshold measured per machine. A machine class on which a "team"
column wins where "rules" loses is one to re-tune SHARE_MIN_SECONDS (or TEAM_MIN_CALL) for.

    python bench/team_thresholds.py [--rounds 5] [--write]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

SETTINGS = ("rules", "alone", "team 2^20", "team 2^18")
# (I, H, T, B): the README's quick start, two small batches, the benchmark's size, batch 1
CONFIGS = [(32, 64, 100, 16), (128, 128, 100, 16), (64, 64, 100, 64), (256, 256, 100, 64),
           (128, 128, 200, 1)]
CALLS = 20


def measure(setting: str) -> list[float]:
    """Median ms of CALLS inference calls per config, under `setting` (in this process)."""
    import time

    import numpy as np

    from rnncc.backends.cpu import runtime, team
    if setting == "alone":
        runtime.Compiled._team_threads = lambda self, *args: 1
    elif setting.startswith("team"):
        runtime.TEAM_MIN_CALL = runtime.TEAM_MIN_ELEMENTS = 0
        threshold = 1 << int(setting.split("^")[1])
        team.product_threshold = lambda dtype: threshold
    import rnncc
    times = []
    for I, H, T, B in CONFIGS:
        layer = rnncc.RNN("lstm", I, H, seed=0).eval()
        x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
        layer(x)
        calls = []
        for _ in range(CALLS):
            start = time.perf_counter()
            layer(x)
            calls.append(time.perf_counter() - start)
        times.append(1e3 * statistics.median(calls))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--measure", help=argparse.SUPPRESS)   # (a setting's own process)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    runs = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            out = subprocess.run([sys.executable, __file__, "--measure", setting],
                                 capture_output=True, text=True, check=True).stdout
            runs[setting].append(json.loads(out.strip().splitlines()[-1]))
    header = "| lstm I, H, T, B | " + " | ".join(f"{s} ms" for s in SETTINGS) + " |"
    rows = []
    for k, config in enumerate(CONFIGS):
        cells = [f"{statistics.median(r[k] for r in runs[s]):.2f}" for s in SETTINGS]
        rows.append(f"| {', '.join(map(str, config))} | " + " | ".join(cells) + " |")
    print(header)
    print("|" + "---|" * (len(SETTINGS) + 1))
    print("\n".join(rows))
    if args.write:
        harness.record(Path(__file__).name, argv, header, rows,
                       f"{harness.cpu_model()}, {os.cpu_count()} cores, float32",
                       f"medians of {CALLS} calls, then of {args.rounds} rounds; each setting "
                       f"in a process of its own, interleaved")
    return 0


if __name__ == "__main__":
    sys.exit(main())

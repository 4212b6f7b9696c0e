"""Cells whose state meets no matrix: rnncc's chosen schedule against its step schedule and its
scan, against the same cell as an eager PyTorch loop, and against a PyTorch parallel scan
where one exists.

Each contender runs in its own process (bench/harness.py), rounds interleaved, medians:
    rnncc        rnncc.RNN with the schedule rnncc chooses for the call (lanes: each batch row,
                 or block of its columns, runs the whole time loop, one parallel region per
                 call; scan, where a linear cell's call has fewer lanes than threads)
    step         rnncc.RNN(schedule="step"): time outside, each step's rows inside
    scan         rnncc.RNN(schedule="scan"), for cells linear both ways: chunks of time at once
    mixed        rnncc (its chosen schedule) in a process that imported torch first
    eager        the cell as the eager PyTorch loop a user writes (bench/torch_cells.py: input
                 products hoisted, one elementwise update per step), torch's defaults
    torch scan   minGRU only: the paper's log-space parallel scan (torch.logcumsumexp)
Forward is inference (rnncc's eval mode, torch under no_grad); fwd+bwd a training forward and
backward. GB/s: the bytes rnncc's call moves through memory by its Plan (every GEMM's and
kernel's operands over all rows; parameters of a step once) over its time, beside the machine's
copy bandwidth (np.copyto of 256 MiB, read + write, measured by this script in the floor
process): these cells are bound by memory, not arithmetic.

    python bench/scan.py                                   # the issue's table, and H = 16
    python bench/scan.py --cells mingru --configs 1024,1,256 --rounds 5 --write
    python bench/scan.py --cells mingru qrnn --configs 65536,1,16 262144,1,16 --rnncc-only
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402
from layer_parts import data, limit_rnncc_threads, rnncc_pass, torch_pass  # noqa: E402

COPY_BYTES = 256 << 20
LINEAR_CELLS = ("mingru", "minlstm", "qrnn")   # linear both ways: they have the scan


def plan_bytes(plan, sizes: dict, T: int, B: int, itemsize: int) -> int:
    """Bytes a call of `plan` moves through memory: each step's operands, a buffer over rows
    once per row it covers (a step buffer once per step), parameters once per step that reads
    them outside the time loop (inside it they stay in cache)."""
    from rnncc.ops.base import dim_size
    from rnncc.plan.plan import Rows

    def size(name: str, phase: str) -> int:
        b = plan.buffers[name]
        elements = int(np.prod([dim_size(d, sizes) for d in b.shape])) if b.shape else 1
        if b.rows == Rows.NONE:
            return 0 if phase == "per_step" else elements
        return T * B * elements
    total = 0
    for phase, steps in plan.phases.items():
        for step in steps:
            names = ([step.a, step.b, step.out] + ([step.accumulate] if step.accumulate else [])
                     if step.kind == "gemm" else [*step.inputs, *step.outputs])
            total += sum(size(n, phase) for n in names)
    for read, written in plan.carried.values():   # each step's start kept, and the carry
        total += 2 * size(written, "per_step")
    return total * itemsize


def build_rnncc(name, T, B, H, dtype, backward, threads, schedule=None):
    import rnncc
    from rnncc.backends.cpu.runtime import available_threads, schedule_of
    x, dy = data(T, B, H, H, dtype)
    limit_rnncc_threads(threads)
    layer = rnncc.RNN(name, H, H, dtype=np.dtype(dtype), seed=0, schedule=schedule)
    run = rnncc_pass(layer, x, dy, backward)
    cell, sizes = layer.cell, layer.sizes
    itemsize = np.dtype(dtype).itemsize
    plans = [cell.plan.forward, cell.plan.backward] if backward else [cell.inference_plan]
    chosen = {schedule_of(p, T, B, sizes, available_threads(), schedule) for p in plans}
    run.facts = {"bytes": sum(plan_bytes(p, sizes, T, B, itemsize) for p in plans),
                 "schedule": "/".join(sorted(chosen)), "scan": "scan" in cell.schedules}
    return run


def spec_params(name, I, H, dtype, seed=0):
    """Random parameters of shipped cell `name`, by its spec's names and shapes (written here:
    the torch process does not import rnncc), uniform in (-1/sqrt(H), 1/sqrt(H))."""
    matrices = {"mingru": ["W_z", "W_h"], "minlstm": ["W_f", "W_i", "W_h"],
                "qrnn": ["W_z", "W_f", "W_o"], "indrnn": ["W"],
                "sru": ["W_f", "W", "W_r", "W_h"]}[name]
    vectors = {"mingru": ["b_z", "b_h"], "minlstm": ["b_f", "b_i", "b_h"],
               "qrnn": ["b_z", "b_f", "b_o"], "indrnn": ["u", "b"],
               "sru": ["v_f", "b_f", "v_r", "b_r"]}[name]
    rng, k = np.random.default_rng(seed), 1 / np.sqrt(H)
    p = {m: rng.uniform(-k, k, (H, I)) for m in matrices}
    p.update({v: rng.uniform(-k, k, H) for v in vectors})
    return {n: v.astype(dtype) for n, v in p.items()}


def build_torch(name, T, B, H, dtype, backward, threads, scan=False):
    import torch

    import torch_cells
    torch.set_num_threads(threads)
    x, dy = data(T, B, H, H, dtype)
    p = spec_params(name, H, H, dtype)
    module = (torch_cells.mingru_log_scan_module(p, dtype) if scan
              else torch_cells.lane_module(name, p, dtype))
    return torch_pass(module, x, dy, backward)


def build_copy(threads, **config):
    """np.copyto of COPY_BYTES: the machine's memory bandwidth for this table."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=threads)
    src = np.ones(COPY_BYTES // 4, np.float32)
    dst = np.empty_like(src)

    def run():
        np.copyto(dst, src)
    run.facts = {"bytes": 2 * COPY_BYTES}
    return run


BUILDERS = {
    "rnncc": build_rnncc,
    "step": lambda threads, **c: build_rnncc(threads=threads, schedule="step", **c),
    "rnncc scan": lambda threads, **c: build_rnncc(threads=threads, schedule="scan", **c),
    "torch": build_torch,
    "torch scan": lambda threads, **c: build_torch(threads=threads, scan=True, **c),
    "copy": build_copy,
}

HEADER = ("| cell | T, B, I=H | pass | schedule | rnncc ms | step ms | scan ms | mixed ms | "
          "eager ms | torch scan ms | rnncc/step | rnncc/scan | rnncc/eager | rnncc/torch scan | "
          "mixed/eager | GB/s | GB/s copy |")


def copy_bandwidth(workers, rounds: int) -> float:
    facts = {}
    med = harness.measure_in_processes([("copy", workers["floor"], "copy", {})], rounds, facts)
    return facts["copy"]["bytes"] / med["copy"] / 1e9


def rows_for(workers, name, T, B, H, dtype, backward, rounds, copy_gbs,
             rnncc_only=False) -> list[str]:
    config = dict(name=name, T=T, B=B, H=H, dtype=dtype, backward=backward)
    contenders = [("rnncc", workers["rnncc"], "rnncc", config),
                  ("step", workers["rnncc"], "step", config)]
    if not rnncc_only:
        contenders += [("eager", workers["torch"], "torch", config),
                       # torch set up (imported) first in the mixed process, as in a training
                       # script
                       ("mixed torch", workers["mixed"], "torch", config),
                       ("mixed", workers["mixed"], "rnncc", config)]
    if name in LINEAR_CELLS:
        contenders.append(("scan", workers["rnncc"], "rnncc scan", config))
    if name == "mingru" and not rnncc_only:
        contenders.append(("torch scan", workers["torch"], "torch scan", config))
    facts = {}
    med = harness.measure_in_processes(contenders, rounds, facts)
    ms = lambda k: f"{1e3 * med[k]:.2f}" if k in med else "-"
    ratio = lambda a, b: f"{med[a] / med[b]:.3f}" if a in med and b in med else "-"
    gbs = facts["rnncc"]["bytes"] / med["rnncc"] / 1e9
    return [f"| {name} | {T}, {B}, {H} | {'fwd+bwd' if backward else 'fwd'} | "
            f"{facts['rnncc']['schedule']} | {ms('rnncc')} | {ms('step')} | {ms('scan')} | "
            f"{ms('mixed')} | {ms('eager')} | {ms('torch scan')} | {ratio('rnncc', 'step')} | "
            f"{ratio('rnncc', 'scan')} | {ratio('rnncc', 'eager')} | "
            f"{ratio('rnncc', 'torch scan')} | {ratio('mixed', 'mixed torch')} | {gbs:.1f} | "
            f"{copy_gbs:.1f} |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["mingru", "qrnn", "indrnn", "sru"])
    parser.add_argument("--configs", nargs="+",
                        default=["1024,1,256", "1024,16,256", "8192,1,256", "8192,16,256",
                                 "8192,1,16"],
                        help="T,B,I=H triples")
    parser.add_argument("--rnncc-only", action="store_true",
                        help="rnncc's schedules only (long sequences: the eager loop takes "
                             "seconds a call)")
    harness.add_run_options(parser)
    args = parser.parse_args(argv)
    bandwidth = {}

    def copy_case(workers):
        bandwidth["copy"] = copy_bandwidth(workers, args.rounds)
        return []

    cases = [copy_case] + harness.table_cases(
        args, lambda workers, name, T, B, H, backward: rows_for(
            workers, name, T, B, H, args.dtype, backward, args.rounds, bandwidth["copy"],
            args.rnncc_only))
    harness.run_table(__file__, argv, args, HEADER, cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The bench/ scripts' side of timing: markdown tables and bench/RESULTS.md.

The timing itself is rnncc/benchmark/processes.py's (each contender in a process of its own
kind, rounds interleaved, medians; its doc says why), the same code `rnncc bench` runs; it is
loaded here by path, not imported from the package: a script's worker processes import this
file, and a torch process must not import rnncc.

    run_table(script, argv, args, header, cases)   # workers of every kind, a row per case
    medians = measure_in_processes([(label, worker, builder, config), ...], rounds)

A worker imports the benchmark script by path and calls BUILDERS[builder](threads=...,
**config), which returns a function that runs one call; the worker times it.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def _processes():
    path = Path(__file__).parents[1] / "rnncc" / "benchmark" / "processes.py"
    spec = importlib.util.spec_from_file_location("rnncc_benchmark_processes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


processes = _processes()
Worker, WorkerError, KINDS = processes.Worker, processes.WorkerError, processes.KINDS
start_workers, measure_in_processes = processes.start_workers, processes.measure_in_processes
measure, wall_time, cpu_model = processes.measure, processes.wall_time, processes.cpu_model


def run_table(script: str, argv, args, header: str, cases, how: str | None = None) -> list[str]:
    """Print a table: the header, then the rows each case (a function of the workers) gives,
    with the workers of start_workers(script); --write records it in RESULTS.md."""
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = []
    workers = start_workers(script, args.threads)
    try:
        for case in cases:
            for row in case(workers):
                print(row, flush=True)
                rows.append(row)
        if args.write:
            record(Path(script).name, argv, header, rows, machine(workers, args),
                   f"medians of {args.rounds} interleaved rounds; " + (
                       how or "each contender in its own process, and a mixed process (rnncc "
                              "and torch in one) per case"))
    finally:
        for worker in workers.values():
            worker.close()
    return rows


def table_cases(args, row, passes: bool = True) -> list:
    """A table's cases: row(workers, name, T, B, H, backward) for each of args.cells, each
    "T,B,I=H" of args.configs and, where `passes`, forward alone and forward+backward (forward
    only with --no-backward); without `passes`, row(workers, name, T, B, H)."""
    backwards = ([False] if args.no_backward else [False, True]) if passes else [None]
    return [lambda workers, name=name, T=T, B=B, H=H, backward=backward: (
                row(workers, name, T, B, H, backward) if passes else row(workers, name, T, B, H))
            for name in args.cells
            for T, B, H in (map(int, config.split(",")) for config in args.configs)
            for backward in backwards]


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark script here takes: rounds, threads, dtype, passes, --write."""
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for every contender (default: every core)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--no-backward", action="store_true", help="forward only")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")


def record(script: str, argv, header: str, rows: list[str], machine: str,
           how: str) -> None:
    """Append a table to bench/RESULTS.md under the command that made it, the machine and how
    it was measured."""
    command = " ".join(argv if argv is not None else sys.argv[1:])
    with RESULTS.open("a") as out:
        out.write(f"\n## {time.strftime('%Y-%m-%d')}: `python bench/{script} {command}`\n\n"
                  f"{machine}; {how}\n\n"
                  f"{header}\n|{'---|' * (header.count('|') - 1)}\n" + "\n".join(rows) + "\n")


def machine(workers: dict, args) -> str:
    """processes.machine for a script's arguments (threads, dtype)."""
    return processes.machine(workers, args.threads, args.dtype)

"""Timing contenders fairly: each in its own process, rounds interleaved, medians.

Settings that one library makes for its whole process would otherwise be shared: rnncc sets
OPENBLAS_THREAD_TIMEOUT at import, and rnncc and torch share one OpenMP runtime and its policy
(until issue 15, rnncc set OMP_WAIT_POLICY=PASSIVE, and torch's many small per-step ops ran
several times slower with sleeping OpenMP threads: measured on a 2-core Xeon, nn.LSTM forward
at T=200, B=1, H=128 took 17.1 ms beside rnncc and 0.8-1.0 ms alone). So each contender is
set up in a worker process of its kind ("rnncc": imports rnncc and no torch; "torch": torch and
no rnncc; "floor": numpy alone; "mixed": torch, then rnncc, as a training script has them),
every contender gets the same number of threads, and the parent (which imports neither) asks
the workers in turn for one timed call per round.

    run_table(script, argv, args, header, cases)   # workers of every kind, a row per case
    medians = measure_in_processes([(label, worker, builder, config), ...], rounds)

A worker imports the benchmark script by path and calls BUILDERS[builder](threads=...,
**config), which returns a function that runs one call; the worker times it. Builders import
rnncc and torch themselves, so a worker imports only what its contenders use.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


# -- the parent's side -------------------------------------------------------------------------

class WorkerError(RuntimeError):
    pass


class Worker:
    """A process that sets up contenders of one benchmark script and times them on request."""

    def __init__(self, script: str | Path, threads: int, env: dict | None = None):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(Path(script).resolve()), str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise WorkerError(f"the worker process ended (exit status {self.process.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Before each timing, the other processes' threads get this long to stop spinning: OpenMP's
# and OpenBLAS's idle threads spin for up to ~0.1-0.2 s after their last work by default, and on
# a machine with as many threads as cores they would take the cores of whoever is timed next.
SETTLE = 0.25
# Each timing is of back-to-back calls lasting at least MIN_TIMED seconds, after untimed calls
# lasting at least WARM seconds, so that a contender runs as in a training loop, its threads
# and its cores awake (measured, lstm T=200, B=1, H=128 forward, rnncc: 1.6 ms a call timed
# after one untimed call following the quiet interval, 1.0 ms in a loop).
MIN_TIMED = 0.05
WARM = 0.03


def measure_in_processes(contenders: list, rounds: int, facts: dict | None = None,
                         best: dict | None = None) -> dict:
    """contenders: (label, worker, builder, config) tuples. Each is set up (and called once, to
    compile, allocate and fault pages in) in its worker; then `rounds` rounds, each timing every
    contender in turn (after SETTLE seconds of quiet). Returns label -> median seconds per
    call. `facts`, if given, receives label -> the `facts` dict a builder's function carries
    (numbers the script reports beside the times, such as bytes a call moves); `best`, if
    given, label -> the fastest round's seconds (for a peak: the most the machine gave)."""
    for label, worker, builder, config in contenders:
        reply = worker.ask(op="setup", key=label, builder=builder, config=config)
        if facts is not None:
            facts[label] = reply.get("facts", {})
    times = {label: [] for label, *_ in contenders}
    for _ in range(rounds):
        for label, worker, *_ in contenders:
            time.sleep(SETTLE)
            times[label].append(worker.ask(op="time", key=label)["seconds"])
    for label, worker, *_ in contenders:
        worker.ask(op="drop", key=label)
    if best is not None:
        best.update({label: min(v) for label, v in times.items()})
    return {label: statistics.median(v) for label, v in times.items()}


KINDS = ("rnncc", "torch", "floor", "mixed")   # the worker processes a table uses


def start_workers(script: str | Path, threads: int) -> dict:
    """One worker process per kind, each serving `script`'s BUILDERS."""
    return {kind: Worker(script, threads) for kind in KINDS}


def run_table(script: str, argv, args, header: str, cases) -> list[str]:
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
                   f"medians of {args.rounds} interleaved rounds; each contender in its own "
                   f"process, and a mixed process (rnncc and torch in one) per case")
    finally:
        for worker in workers.values():
            worker.close()
    return rows


def wall_time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(fns: dict, rounds: int, timer=wall_time) -> dict:
    """In one process (bench/gpu.py, where the GPU is what is shared): median seconds per call
    of each fn; `timer(fn)` times one call."""
    for fn in fns.values():  # warm up: compile, allocate, fault pages in
        fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():  # interleaved, so drift hits all alike
            times[k].append(timer(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def cpu_model() -> str:
    """The CPU's model name, and the core LLVM compiles for (a cloud machine's model name may
    be just "AMD EPYC", for Zen 4 and Zen 5 alike)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import llvmlite.binding as llvm
        return f"{name} ({llvm.get_host_cpu_name()})"
    except ImportError:
        return name


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
    """The CPU, the threads and dtype, and each worker's libraries: versions and which BLAS
    kernels they run (threadpoolctl), since environment variables such as OPENBLAS_CORETYPE
    change them."""
    parts = [f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"{args.threads} threads per contender, {args.dtype}"]
    for kind, worker in workers.items():
        parts.append(f"{kind} process: {worker.ask(op='info')['info']}")
    return "; ".join(parts)


# -- the worker's side --------------------------------------------------------------------------

def _describe_libraries() -> str:
    versions = []
    for name in ("numpy", "numba", "torch", "rnncc"):
        module = sys.modules.get(name)
        if module is not None:
            versions.append(f"{name} {getattr(module, '__version__', '?')}")
    try:
        from threadpoolctl import threadpool_info
        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                versions.append(f"{pool.get('internal_api')} {pool.get('version')} "
                                f"{pool.get('architecture', '')}".strip())
    except ImportError:
        pass
    return ", ".join(versions)


def _worker(script: str, threads: int) -> None:
    # replies go to the parent through the original stdout; anything else printed there (by a
    # builder, or by C code) goes to stderr instead of into the replies
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    spec = importlib.util.spec_from_file_location("bench_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fns = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            op = request["op"]
            if op == "setup":
                fn = module.BUILDERS[request["builder"]](threads=threads, **request["config"])
                fn()   # compile, allocate, fault pages in
                calls = max(1, min(50, math.ceil(MIN_TIMED / max(wall_time(fn), 1e-6))))
                fns[request["key"]] = (fn, calls)
                reply = {"facts": getattr(fn, "facts", {})}
            elif op == "time":   # untimed calls (threads, cores awake), then `calls` timed
                fn, calls = fns[request["key"]]
                start = time.perf_counter()
                while time.perf_counter() - start < WARM:
                    fn()
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                reply = {"seconds": (time.perf_counter() - start) / calls}
            elif op == "drop":
                del fns[request["key"]]
                reply = {}
            elif op == "info":
                reply = {"info": _describe_libraries()}
            elif op == "state":   # what this process has imported and set (for the tests)
                reply = {"modules": sorted(m for m in ("rnncc", "torch") if m in sys.modules),
                         "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY",
                                                                "OPENBLAS_THREAD_TIMEOUT")}}
            else:
                reply = {"error": f"unknown request {op!r}"}
        except Exception:  # reported to the parent, which raises it
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    _worker(sys.argv[2], int(sys.argv[3]))

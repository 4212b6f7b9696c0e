"""Timing contenders fairly: each in its own process, rounds interleaved, medians.

Settings that one library makes for its whole process would otherwise be shared: rnncc sets
OPENBLAS_THREAD_TIMEOUT at import, and rnncc and torch share one OpenMP runtime and its policy
(until issue 15, rnncc set OMP_WAIT_POLICY=PASSIVE, and torch's many small per-step ops ran
several times slower with sleeping OpenMP threads: measured on a 2-core Xeon, nn.LSTM forward
at T=200, B=1, H=128 took 17.1 ms beside rnncc and 0.8-1.0 ms alone). So each contender is
set up in a worker process of its kind ("rnncc": imports rnncc and no torch; "torch": torch and
no rnncc; "floor": numpy alone; "mixed": torch, then rnncc, as a training script has them),
every contender gets the same number of threads, and the parent asks the workers in turn for one
timed call per round. A worker starts with the parent's environment less what importing rnncc
set in it (rnncc.SET_AT_IMPORT), so a parent that imported rnncc (the `rnncc bench` command)
hands torch's process what a torch user has.

    workers = start_workers(builders_file, threads)      # a worker of every kind
    facts = setup([(label, worker, builder, config), ...])
    medians, best = time_rounds(contenders, rounds)
    medians = measure_in_processes(contenders, rounds)   # both

A worker imports the builders file by path (rnncc/benchmark/contenders.py, or a script of
bench/) and calls BUILDERS[builder](threads=..., **config), which returns a function that runs
one call; the worker times it. Builders import rnncc and torch themselves, so a worker imports
only what its contenders use; this file imports neither (a worker runs it as a script, outside
the rnncc package).

`measure` times functions in the calling process instead, for a device that is the thing shared
(bench/gpu.py: CUDA events).
"""
from __future__ import annotations

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


class WorkerError(RuntimeError):
    pass


def _child_environment() -> dict:
    """The parent's environment, less the variables importing rnncc set in it."""
    env = dict(os.environ)
    rnncc = sys.modules.get("rnncc")
    for name in getattr(rnncc, "SET_AT_IMPORT", ()):
        env.pop(name, None)
    return env


class Worker:
    """A process that sets up contenders of one builders file and times them on request."""

    def __init__(self, script: str | Path, threads: int, env: dict | None = None):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(Path(script).resolve()), str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=_child_environment() if env is None else env)

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

KINDS = ("rnncc", "torch", "floor", "mixed")   # the worker processes a table uses


def start_workers(script: str | Path, threads: int, kinds=KINDS) -> dict:
    """One worker process per kind, each serving `script`'s BUILDERS."""
    return {kind: Worker(script, threads) for kind in kinds}


def close_workers(workers: dict) -> None:
    for worker in workers.values():
        worker.close()


def setup(contenders: list) -> dict:
    """contenders: (label, worker, builder, config) tuples. Each is set up (and called once,
    to compile, allocate and fault pages in) in its worker. Returns label -> the `facts` dict
    its builder's function carries (numbers reported beside the times, such as the FLOPs of
    a call)."""
    facts = {}
    for label, worker, builder, config in contenders:
        facts[label] = worker.ask(op="setup", key=label, builder=builder,
                                  config=config).get("facts", {})
    return facts


def time_rounds(contenders: list, rounds: int, progress=None) -> tuple[dict, dict]:
    """`rounds` rounds over contenders already set up, each timing every contender in turn
    (after SETTLE seconds of quiet); then each is dropped. Returns (label -> median seconds per
    call, label -> the fastest round's: for a peak, the most the machine gave). progress(),
    if given, is called after each timing."""
    times = {label: [] for label, *_ in contenders}
    for _ in range(rounds):
        for label, worker, *_ in contenders:
            time.sleep(SETTLE)
            times[label].append(worker.ask(op="time", key=label)["seconds"])
            if progress is not None:
                progress()
    for label, worker, *_ in contenders:
        worker.ask(op="drop", key=label)
    return ({label: statistics.median(v) for label, v in times.items()},
            {label: min(v) for label, v in times.items()})


def measure_in_processes(contenders: list, rounds: int, facts: dict | None = None,
                         best: dict | None = None) -> dict:
    """setup, then time_rounds: label -> median seconds per call. `facts` and `best`, if given,
    receive what those return besides."""
    found = setup(contenders)
    medians, fastest = time_rounds(contenders, rounds)
    if facts is not None:
        facts.update(found)
    if best is not None:
        best.update(fastest)
    return medians


def wall_time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(fns: dict, rounds: int, timer=wall_time) -> dict:
    """In one process (where a device is what is shared): median seconds per call of each fn,
    rounds interleaved; `timer(fn)` times one call."""
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


def machine(workers: dict, threads: int, dtype: str) -> str:
    """The CPU, the threads and dtype, and each worker's libraries: versions and which BLAS
    kernels they run (threadpoolctl), since environment variables such as OPENBLAS_CORETYPE
    change them."""
    parts = [f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"{threads} threads per contender, {dtype}"]
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
    # the builders file's folder first on the path, as when it runs as a script (not this
    # file's: a worker runs outside the rnncc package)
    sys.path[0] = str(Path(script).parent)
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

"""Compiling the backward of a training step in a background process while its forward compiles.

A training step calls forward, then backward: both compile at their first call, one after the
other, and a large cell's backward is the longer (the layer-norm LSTM's: 7-8 s against 2 s, or
6.6 s for a forward on Numba's threads). When a training forward starts compiling, the backward
its step will call is compiled at the same time in a process of its own, which leaves it in the
disk cache; the backward call waits for that process, where it has not ended, and loads the
machine code. (Threads would take turns: Numba compiles under one lock per process.)

A process costs about 0.7 s before it compiles anything (Python, numpy, Numba and the
registries it loads, the cell's pipeline), and a core of its own, so it is started only
    - for a backward that takes long to compile: AHEAD_MIN_LINES lines of generated source or
      more, a variant on Numba's threads counting twice (it compiles in about twice the time).
      Compile time follows the lines: 13.5 ms a line for the lstm's and the layer-norm LSTM's
      one-thread backward alike (1.0 and 7.2 s). Measured on 2 cores, first training step with
      and without: layer-norm LSTM 8.5-9.0 s against 10.0-10.2; lstm on Numba's threads
      (B=64, H=256, OMP_WAIT_POLICY=PASSIVE) 2.6-2.7 against 3.2-3.3; below the threshold no
      gain (lstm one thread 1.95 against 2.0, rnn on threads 2.13 against 2.18),
    - on a machine with a second core for this process (os.sched_getaffinity),
    - where Numba's disk cache has no machine code for that function yet,
    - unless RNNCC_COMPILE_AHEAD=0 (the process itself, and `rnncc compile`'s jobs, which
      compile every function anyway, never start one).
The backward is predicted as the call will run it: the variant its threads call for (runtime.
kernel_threads), the argument types every call passes (Compiled.argument_types). A wrong guess
costs the other core's time only: the call then compiles its own.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from ..compile_log import CompileEvent, log

AHEAD_MIN_LINES = 100
_running: set = set()   # the processes not yet waited for (killed at exit)


def enabled() -> bool:
    """Whether this process may compile ahead: RNNCC_COMPILE_AHEAD is not 0, and it may run
    on two cores at least."""
    if os.environ.get("RNNCC_COMPILE_AHEAD", "1") == "0":
        return False
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(
        os.cpu_count() or 1)
    return len(cores) >= 2


def worth_it(source: str, function: str, threaded: bool) -> bool:
    """Whether `function` of the generated module `source` (`threaded`: the variant on
    Numba's threads) takes long enough to compile to compile it ahead."""
    start = source.find(f"\ndef {function}(")
    if start < 0:
        return False
    end = source.find("\n@njit", start)
    text = source[start + 1:end if end >= 0 else len(source)].rstrip()   # its def and body
    return (text.count("\n") + 1) * (2 if threaded else 1) >= AHEAD_MIN_LINES


class Job:
    """One function compiling in a background process."""

    def __init__(self, process: subprocess.Popen, event: CompileEvent):
        self.process, self.event = process, event
        self._lock = threading.Lock()   # calls on several threads (rnncc.RNN's units) wait
        self._compiled: bool | None = None

    def wait(self) -> bool:
        """Wait for the process to end; whether it compiled the function (else the caller
        compiles it: what went wrong is logged as a warning, once)."""
        with self._lock:
            if self._compiled is None:
                err = self.process.stderr.read()   # to its end: the process has ended
                self.process.wait()
                self.process.stderr.close()
                _running.discard(self.process)
                self._compiled = self.process.returncode == 0
                if not self._compiled:
                    log.warning(f"compiling {self.event.cell}: {self.event.function} in a "
                                f"background process failed (exit code "
                                f"{self.process.returncode}); compiling it here\n" + err[-2000:])
            return self._compiled


def start(cell, dtype, direction: str, function: str, variant: str) -> Job:
    """Start compiling `function` (the module's name for it: backward, backward_serial) of
    `cell` for `dtype` in a background process; its log line says so."""
    job = {"spec": cell.spec.source.text, "dtype": str(dtype), "direction": direction,
           "function": function}
    # the rnncc this process runs, first on the path whatever put it there (the same code
    # generates the same module, whose cache file the call then finds)
    root = str(Path(__file__).resolve().parents[3])
    command = (f"import sys; sys.path.insert(0, {root!r}); "
               f"from rnncc.backends.cpu.compile_worker import main; main()")
    env = {**os.environ, "RNNCC_COMPILE_AHEAD": "0"}
    process = subprocess.Popen([sys.executable, "-c", command],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env)
    process.stdin.write(json.dumps(job))
    process.stdin.close()
    _running.add(process)
    event = CompileEvent(cell.name, direction, str(dtype), "cpu", "background", variant=variant)
    log.info(event.describe(), extra={"rnncc_compile": event})
    return Job(process, event)


@atexit.register
def _stop_running() -> None:
    """A process this one no longer needs is stopped with it (Numba writes each cache file
    whole, so a stopped compile leaves nothing half-written)."""
    for process in list(_running):
        process.kill()

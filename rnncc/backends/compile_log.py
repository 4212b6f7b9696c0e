"""Compiling a cell's generated functions takes seconds to a minute; say so while it happens.

Each backend wraps the first compilation of a function (for one dtype and one set of argument
types) in `compiling(...)`, which logs through the standard `logging` module, logger
"rnncc.compile":

    INFO  compiling lnlstm: forward, float32, cpu target ...
    INFO  compiled lnlstm: forward, float32, cpu target, in 41.2 s

(or "loaded ... from the disk cache" where Numba found the machine code of an earlier process).
A training step's backward may compile in a background process while its forward compiles
(cpu/ahead.py): a line says so when that process starts, and the backward call's lines say
how long it waited for it:

    INFO  compiling lnlstm: backward (one thread), float32, cpu target, in a background process
    INFO  compiling lnlstm: forward (one thread), float32, cpu target ...
    INFO  compiled lnlstm: forward (one thread), float32, cpu target, in 2.1 s
    INFO  waiting for lnlstm: backward (one thread), float32, cpu target ...
    INFO  compiled lnlstm: backward (one thread), float32, cpu target, in a background process:
          ready 5.9 s after the call
Records carry `rnncc_compile` = a CompileEvent, for handlers that want the fields (the CLI's
progress line does). Nothing is printed unless the application configures logging, as with any
library: `logging.basicConfig(level=logging.INFO)` shows them.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger("rnncc.compile")


@dataclass
class CompileEvent:
    cell: str
    function: str        # "forward", "backward", "infer"
    dtype: str
    target: str
    phase: str           # "start", "done", or "background" (a background process started)
    seconds: float = 0.0
    cached: bool = False  # done: loaded from the disk cache rather than compiled
    variant: str = ""     # where a function comes in variants: which ("one thread", "threads")
    background: bool = False  # start, done: compiled by a background process (waited for)

    def describe(self) -> str:
        function = f"{self.function} ({self.variant})" if self.variant else self.function
        what = f"{self.cell}: {function}, {self.dtype}, {self.target} target"
        if self.phase == "background":
            return f"compiling {what}, in a background process"
        if self.phase == "start":
            return f"waiting for {what} ..." if self.background else f"compiling {what} ..."
        if self.background:
            return (f"compiled {what}, in a background process: ready {self.seconds:.1f} s "
                    f"after the call")
        if self.cached:
            return f"loaded {what}, from the disk cache in {self.seconds:.2f} s"
        return f"compiled {what}, in {self.seconds:.1f} s"


@contextmanager
def compiling(cell: str, function: str, dtype, target: str, cached=lambda: False,
              variant: str = "", background=None):
    """Log the start and the end of a compilation; `cached()` (asked at the end) says whether
    the code came from the disk cache. `background()`, where a background process compiles it
    (asked at the end too), says whether that process did."""
    waits = background is not None
    event = CompileEvent(cell, function, str(dtype), target, "start", variant=variant,
                         background=waits)
    log.info(event.describe(), extra={"rnncc_compile": event})
    start = time.perf_counter()
    yield
    from_cache = bool(cached())
    done = CompileEvent(cell, function, str(dtype), target, "done",
                        time.perf_counter() - start, from_cache, variant,
                        waits and background() and from_cache)
    log.info(done.describe(), extra={"rnncc_compile": done})

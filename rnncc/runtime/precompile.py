"""Compiling a cell ahead of time (`rnncc compile`): every function a target generates for it,
in each dtype, into the disk cache, so that a later process (a training job on a cluster, a CI
run from a prepared image) loads them instead of compiling.

A generated function takes one signature per dtype (its arrays are C-contiguous, in the
module's dtype; sizes are arguments), so a two-step call on small random data compiles exactly
what any later call runs. On the cpu target a function with kernels comes in two variants
(threads, one thread: codegen.py); a call runs one, and here both are compiled.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext

import numpy as np

from .. import backends
from ..backends.compile_log import CompileEvent
from .gradcheck import random_problem


@contextmanager
def _every_variant(compiled):
    previous = compiled.every_variant
    compiled.every_variant = True
    try:
        yield
    finally:
        compiled.every_variant = previous


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.events: list[CompileEvent] = []

    def emit(self, record):
        event = getattr(record, "rnncc_compile", None)
        if event is not None and event.phase == "done":
            self.events.append(event)


def precompile(cell, dtypes=("float32",), targets=("cpu",)) -> list[CompileEvent]:
    """Compile (or load from the disk cache) every function of `cell` for each dtype and
    target: forward (training), backward and infer. Returns the compile log's "done" events,
    one per function: its seconds, and whether it came from the cache. A function this process
    has compiled already (for this cell, or for another whose generated code is the same) is
    ready, and not listed."""
    logger = logging.getLogger("rnncc.compile")
    collect, level = _Collect(), logger.level
    logger.addHandler(collect)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        for name in targets:
            backend = backends.get(name)
            for dtype in dtypes:
                dtype = np.dtype(dtype)
                if dtype not in (np.float32, np.float64):
                    raise ValueError(f"dtype {dtype.name}: cells compile for float32 and "
                                     f"float64")
                _run_everything(cell, backend, dtype, name)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    return collect.events


def _run_everything(cell, backend, dtype, target: str) -> None:
    prob = random_problem(cell, T=2, B=2)
    p = {k: v.astype(dtype) for k, v in prob.p.items()}
    x = prob.x_arg(cell)
    x = {k: v.astype(dtype) for k, v in x.items()} if isinstance(x, dict) else x.astype(dtype)
    state = {k: v.astype(dtype) for k, v in prob.state.items()}
    compiled = backend.compiled(cell, dtype) if hasattr(backend, "compiled") else None
    variants = (_every_variant(compiled) if hasattr(compiled, "every_variant")
                else nullcontext())
    with variants:
        cell.forward(p, x, state, target=target)                        # infer
        cell.backward(p, x, prob.dys.astype(dtype), state,              # forward, backward
                      {k: v.astype(dtype) for k, v in prob.dfinal.items()}, target=target)

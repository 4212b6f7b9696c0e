"""Backends, by target name. Each runs a cell over a sequence, forward and BPTT.

A target is an object with
    forward(cell, call)                 -> (ys, final)
    train(cell, call)                   -> (ys, final, tape)   forward, keeping what backward reads
    backward(cell, call, tape, dys, dfinal) -> (param grads, input grads, initial-state grads)
where `call` is the checked arguments (runtime/arguments.py), and with the capabilities the
runtime asks about instead of comparing target names:
    device_arrays   it reads and returns arrays on a GPU (Numba's, CuPy's, PyTorch's)
    wavefront       compiled(cell, dtype) runs a call in pieces of time (start, advance): what a
                    layer's wavefront schedules, and the workspaces a layer keeps between calls
    prints_source   source(cell, dtype) is the generated module (`rnncc show --stage NAME`)
    variants        the variants its generated functions come in, each compiled apart (the cpu
                    target's: threaded, and one thread); (None,) where there is one
    schedule(plan, T, B, sizes, asked)   the schedule of the time loop a call of `plan` runs
                    (plan.py's; the numpy targets' step by step)
"""
from __future__ import annotations

from weakref import WeakKeyDictionary

import numpy as np

from . import reference
from .cpu.threads import ONE_THREAD, THREADS
from ..plan import interpret


class _Backend:
    name = ""
    device_arrays = False
    wavefront = False
    prints_source = False
    variants: tuple = (None,)

    def schedule(self, plan, T: int, B: int, sizes: dict, asked: str | None) -> str:
        return "step"


class _Reference(_Backend):
    """numpy interprets the unoptimized step graphs: the oracle."""
    name = "reference"

    def forward(self, cell, call):
        return reference.forward(cell.graph, call.params, call.xs, call.state, call.lengths,
                                 call.sizes, call.dtype)

    def train(self, cell, call):
        return reference.forward(cell.graph, call.params, call.xs, call.state, call.lengths,
                                 call.sizes, call.dtype, backward=cell.backward_graph)

    def backward(self, cell, call, tape, dys, dfinal):
        return reference.backward(cell.graph, cell.backward_graph, tape, call.params, call.xs,
                                  dys, dfinal, call.lengths, call.sizes, call.dtype)


class _Plan(_Backend):
    """numpy executes the optimized Plan, step by step: checks what the fast backends run."""
    name = "plan"

    def forward(self, cell, call):
        return interpret.run_forward(cell.plan.forward, call.params, call.xs, call.state,
                                     call.lengths, call.sizes, call.dtype)

    def train(self, cell, call):
        return interpret.run_forward(cell.plan.forward, call.params, call.xs, call.state,
                                     call.lengths, call.sizes, call.dtype, keep=True)

    def backward(self, cell, call, tape, dys, dfinal):
        return interpret.run_backward(cell.plan.backward, tape, call.params, call.xs, dys,
                                      dfinal, call.lengths, call.sizes, call.dtype)


class _CPU(_Backend):
    """Numba code generated from the Plan: multithreaded, vectorized, BLAS for the GEMMs."""
    name = "cpu"
    wavefront = True
    prints_source = True
    variants = (THREADS, ONE_THREAD)

    def __init__(self):
        self._compiled = WeakKeyDictionary()   # cell -> dtype -> its compiled code

    def _new(self, cell, dtype):
        from .cpu.runtime import Compiled
        return Compiled(cell, dtype)

    def compiled(self, cell, dtype):
        cache = self._compiled.setdefault(cell, {})
        key = np.dtype(dtype)
        if key not in cache:
            cache[key] = self._new(cell, key)
        return cache[key]

    def source(self, cell, dtype) -> str:
        from .cpu.codegen import generate
        return generate(cell.compiled_plans(), dtype, cell.dims).source

    def schedule(self, plan, T: int, B: int, sizes: dict, asked: str | None) -> str:
        """By the call's sizes and threads (runtime.schedule_of)."""
        from .cpu.runtime import available_threads, schedule_of
        return schedule_of(plan, T, B, sizes, available_threads(), asked)

    def forward(self, cell, call):
        return self.compiled(cell, call.dtype).forward(call)

    def train(self, cell, call):
        return self.compiled(cell, call.dtype).forward(call, keep=True)

    def backward(self, cell, call, tape, dys, dfinal):
        return self.compiled(cell, call.dtype).backward(call, tape, dys, dfinal)


class _CUDA(_CPU):
    """numba.cuda kernels generated from the Plan: one cooperative launch per call (on a GPU,
    or in Numba's CUDA simulator)."""
    name = "cuda"
    device_arrays = True
    wavefront = False
    variants = (None,)

    def _new(self, cell, dtype):
        from .cuda.device import cuda
        cuda()  # the clear error where there is neither a GPU nor the simulator, first
        from .cuda.runtime import Compiled
        return Compiled(cell, dtype)

    def schedule(self, plan, T: int, B: int, sizes: dict, asked: str | None) -> str:
        """The one asked for, else the plan's first (cuda/runtime.py)."""
        return plan.schedule(asked)

    def source(self, cell, dtype) -> str:
        """The module for a GPU (not the simulator's)."""
        from .cuda.codegen import generate
        return generate(cell.compiled_plans(), dtype, cell.dims, simulator=False)[0]


TARGETS = {b.name: b for b in (_Reference(), _Plan(), _CPU(), _CUDA())}
SOURCES = tuple(name for name, b in TARGETS.items() if b.prints_source)


def get(target: str):
    if not isinstance(target, str) or target not in TARGETS:
        known = ", ".join(repr(t) for t in TARGETS)
        raise ValueError(f"unknown target {target!r}; available targets: {known}")
    return TARGETS[target]

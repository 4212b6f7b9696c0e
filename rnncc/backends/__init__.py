"""Backends, by target name. Each runs a cell over a sequence, forward and BPTT.

A target is an object with
    forward(cell, call)                 -> (ys, final)
    train(cell, call)                   -> (ys, final, tape)   forward, keeping what backward reads
    backward(cell, call, tape, dys, dfinal) -> (param grads, input grads, initial-state grads)
where `call` is the checked arguments (runtime/arguments.py).
"""
from __future__ import annotations

import numpy as np

from . import reference
from ..plan import interpret


class _Reference:
    """numpy interprets the unoptimized step graphs: the oracle."""

    def forward(self, cell, call):
        return reference.forward(cell.graph, call.params, call.xs, call.state, call.lengths,
                                 call.sizes, call.dtype)

    def train(self, cell, call):
        return reference.forward(cell.graph, call.params, call.xs, call.state, call.lengths,
                                 call.sizes, call.dtype, backward=cell.backward_graph)

    def backward(self, cell, call, tape, dys, dfinal):
        return reference.backward(cell.graph, cell.backward_graph, tape, call.params, call.xs,
                                  dys, dfinal, call.lengths, call.sizes, call.dtype)


class _Plan:
    """numpy executes the optimized Plan, step by step: checks what the fast backends run."""

    def forward(self, cell, call):
        return interpret.run_forward(cell.plan.forward, call.params, call.xs, call.state,
                                     call.lengths, call.sizes, call.dtype)

    def train(self, cell, call):
        return interpret.run_forward(cell.plan.forward, call.params, call.xs, call.state,
                                     call.lengths, call.sizes, call.dtype, keep=True)

    def backward(self, cell, call, tape, dys, dfinal):
        return interpret.run_backward(cell.plan.backward, tape, call.params, call.xs, dys,
                                      dfinal, call.lengths, call.sizes, call.dtype)


class _CPU:
    """Numba code generated from the Plan: multithreaded, vectorized, BLAS for the GEMMs."""

    def compiled(self, cell, dtype):
        from .cpu.runtime import Compiled
        cache = cell.__dict__.setdefault("_cpu_compiled", {})
        key = np.dtype(dtype)
        if key not in cache:
            cache[key] = Compiled(cell, key)
        return cache[key]

    def forward(self, cell, call):
        return self.compiled(cell, call.dtype).forward(call)

    def train(self, cell, call):
        return self.compiled(cell, call.dtype).forward(call, keep=True)

    def backward(self, cell, call, tape, dys, dfinal):
        return self.compiled(cell, call.dtype).backward(call, tape, dys, dfinal)


class _CUDA(_CPU):
    """numba.cuda kernels generated from the Plan: one cooperative launch per call (on a GPU,
    or in Numba's CUDA simulator)."""

    def compiled(self, cell, dtype):
        from .cuda.device import cuda
        cuda()  # the clear error where there is neither a GPU nor the simulator, first
        from .cuda.runtime import Compiled
        cache = cell.__dict__.setdefault("_cuda_compiled", {})
        key = np.dtype(dtype)
        if key not in cache:
            cache[key] = Compiled(cell, key)
        return cache[key]


TARGETS = {"reference": _Reference(), "plan": _Plan(), "cpu": _CPU(), "cuda": _CUDA()}


def get(target: str):
    if not isinstance(target, str) or target not in TARGETS:
        known = ", ".join(repr(t) for t in TARGETS)
        raise ValueError(f"unknown target {target!r}; available targets: {known}")
    return TARGETS[target]

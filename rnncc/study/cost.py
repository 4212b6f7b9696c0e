"""What a cell costs: parameters, FLOPs and tape per step (from its Plan), and measured time.

    parameter_count(cell, sizes)        the numbers its parameters hold
    step_flops(cell, sizes)             FLOPs of one step of one sequence, forward and backward:
                                        2 per multiply-add of every matrix product (the hoisted
                                        ones counted per step: one row of their T*B) plus one per
                                        element of every elementwise op and reduction of the
                                        kernels (a transcendental counts one; views, copies and
                                        constants none)
    tape_bytes(cell, sizes, dtype)      what training keeps per step of one sequence for
                                        backward: the saved values and the states each step
                                        started from (the input is the caller's)
    time_per_step(...)                  measured, forward (eval mode) and forward+backward
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from ..ops.base import dim_size

# kernel ops that move or make values without arithmetic
_FREE = {"const", "size", "zeros", "part", "part_rows", "concat", "stack_rows", "broadcast"}


def parameter_count(cell, sizes: dict) -> int:
    return sum(int(np.prod(cell.shape(name, **sizes))) for name in cell.params)


def _elements(shape, sizes: dict) -> int:
    return int(np.prod([dim_size(d, sizes) for d in shape])) if shape else 1


def _plan_flops(plan, sizes: dict) -> dict:
    """{"gemm": ..., "kernel": ...} FLOPs of one step of one sequence of a GraphPlan."""
    gemm = kernel = 0
    for phase, steps in plan.phases.items():
        for step in steps:
            if step.kind == "gemm":
                (m, k), (_, n) = step.shape
                # one row of the product: a row of A times B, or (an outer sum over the rows)
                # one rank-1 update of the [m, n] result
                inner = dim_size(m, sizes) if step.op == "outer_sum" else dim_size(k, sizes)
                gemm += 2 * inner * dim_size(n, sizes)
            else:
                kernel += sum(_elements(op.shape, sizes) for op in step.ops
                              if op.op not in _FREE)
    return {"gemm": gemm, "kernel": kernel}


def step_flops(cell, sizes: dict) -> dict:
    """FLOPs of one step of one sequence: {"forward": {"gemm", "kernel"}, "backward": ...}
    (forward: the inference plan's; backward: BPTT's, without the training forward)."""
    return {"forward": _plan_flops(cell.inference_plan, sizes),
            "backward": _plan_flops(cell.plan.backward, sizes)}


def tape_bytes(cell, sizes: dict, dtype=np.float32) -> int:
    """Bytes training keeps for backward per step of one sequence (see the module doc)."""
    backward = cell.plan.backward
    kept = {**backward.leaves.get("saved", {}), **backward.leaves.get("state", {})}
    return np.dtype(dtype).itemsize * sum(
        _elements(backward.buffers[buffer].shape, sizes) for buffer in kept.values())


def time_per_step(layers: dict, T: int, B: int, rounds: int, progress=None) -> dict:
    """Seconds per step of each rnncc.RNN layer (name -> layer, all with the same input size),
    forward in eval mode and a training forward with its backward: medians of `rounds`
    rounds, the layers interleaved in each, a round timing back-to-back calls for at least
    0.05 s after one untimed call."""
    rng = np.random.default_rng(0)
    calls = {}
    for name, layer in layers.items():
        x = rng.standard_normal((T, B, layer.input_size)).astype(layer.dtype)
        dy = rng.standard_normal((T, B, layer.output_size)).astype(layer.dtype)

        def forward(layer=layer, x=x):
            layer.eval()
            layer(x)

        def training(layer=layer, x=x, dy=dy):
            layer.train()
            layer(x)
            layer.backward(dy)
        calls[(name, "forward")] = forward
        calls[(name, "forward+backward")] = training
    for fn in calls.values():   # compile (or load), allocate, fault pages in
        fn()
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            fn()
            n, start = 0, time.perf_counter()
            while True:
                fn()
                n += 1
                elapsed = time.perf_counter() - start
                if elapsed >= 0.05:
                    break
            times[key].append(elapsed / n / T)
            if progress is not None:
                progress()
    out: dict = {}
    for (name, what), values in times.items():
        out.setdefault(name, {})[what] = statistics.median(values)
    return out

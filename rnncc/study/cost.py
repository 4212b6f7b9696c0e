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
    time_per_step_cuda(...)             measured on the GPU, forward and forward+backward
                                        (on the cpu target the study times with rnncc bench's
                                        code, each contender in a process of its own)
"""
from __future__ import annotations

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


def gpu_present() -> bool:
    """A real NVIDIA GPU to time on (not Numba's simulator, where times mean nothing)."""
    from ..backends.cuda.device import CudaUnavailableError, cuda, simulator
    if simulator():
        return False
    try:
        cuda()
    except CudaUnavailableError:
        return False
    return True


def time_per_step_cuda(cells: dict, T: int, B: int, rounds: int, progress=None) -> dict:
    """Seconds per step on the cuda target (cells: name -> (Cell, its dimension sizes)), forward and a training forward with BPTT, on device arrays, CUDA-event times
    (in the simulator, wall-clock), medians of `rounds` interleaved rounds."""
    from ..backends.cuda.device import cuda, simulator
    from ..benchmark.processes import measure, wall_time
    numba_cuda = cuda()
    rng = np.random.default_rng(0)
    calls = {}
    for name, (cell, cell_sizes) in cells.items():
        p = {k: numba_cuda.to_device(v) for k, v in
             cell.init_params(seed=0, dtype=np.float32, **cell_sizes).items()}
        I = int(np.prod(cell.shape(cell.inputs[0], **cell_sizes)))
        out = int(np.prod(cell.shape_of_dims(cell.graph.node(cell.graph.output).shape,
                                             cell_sizes)))
        x = numba_cuda.to_device(rng.standard_normal((T, B, I)).astype(np.float32))
        dy = numba_cuda.to_device(rng.standard_normal((T, B, out)).astype(np.float32))
        calls[(name, "forward")] = lambda cell=cell, p=p, x=x: cell.forward(p, x, target="cuda")
        calls[(name, "forward+backward")] = (
            lambda cell=cell, p=p, x=x, dy=dy: cell.backward(p, x, dy, target="cuda"))

    def events(fn) -> float:
        begin, end = numba_cuda.event(), numba_cuda.event()
        begin.record()
        fn()
        end.record()
        end.synchronize()
        if progress is not None:
            progress()
        return begin.elapsed_time(end) / 1000

    timer = wall_time if simulator() else events
    medians = measure(calls, rounds, timer=timer)
    out_: dict = {}
    for (name, what), seconds in medians.items():
        out_.setdefault(name, {})[what] = seconds / T
    return out_

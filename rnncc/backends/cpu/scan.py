"""The scan schedule on the cpu target: a linear plan's time loop cut into chunks of steps, the
chunks run at once on rnncc's own threads (lane_pool.py). What it computes and why it stays
accurate: plan/scan.py. A call runs

  1. part 1 of the direction's function (what comes before the time loop), once;
  2. the chunk step's function (`forward_chunks`, ...) on each chunk, from A = 1, B = 0:
     each chunk's (A, B), the chunks shared out over the threads;
  3. the start value of each chunk's carried values, chunk after chunk, in float64 with numpy:
     s_in[k+1] = A[k] * s_in[k] + B[k] (backward: from the last chunk down);
  4. part 2 of the direction's function on each chunk from its s_in, the chunks shared out over
     the threads: each chunk has its own copies of the arrays a step writes that have no time
     axis (the carried values, per-step scratch), every other array is the call's, through the
     chunk's steps;
  5. part 3 (what comes after the loop), once, after the last chunk's carried values became
     the call's.

Each chunk runs on one thread (the one-thread function, which lets go of the GIL), its lanes one
after the other (one lane per batch row): the scan is for calls with fewer lanes than threads.
"""
from __future__ import annotations

import numpy as np

from ...plan.layout import ident, time_slice
from ...plan.scan import CHUNKS
from . import lane_pool

# The automatic choice (runtime.schedule_of) takes the scan over the lanes schedule only where
# lanes would leave most of many threads idle: at least SCAN_MIN_THREADS threads, fewer than
# half of them with a lane, SCAN_MIN_STEPS steps or more a thread and runtime.LANES_MIN_WORK
# elements of recurrence. The scan computes each step's recurrence twice (steps 2 and 4) and
# reads the hoisted products twice. Measured on the 2-core machines (bench/RESULTS.md,
# 2026-11-29, mingru B=1, H=16, rnncc.RNN, medians of 9): scan / lanes 2.0 at T=8192, 1.7 at
# 65,536, 1.5 at 262,144 (two threads ran the chunks no faster than one: a streaming loop
# gains nothing from the second core there, as the lanes schedule found); so never there.
# Machines with more cores are unmeasured: the threshold of 4 threads is a guess.
SCAN_MIN_THREADS = 4
SCAN_MIN_STEPS = 1024


def chunk_count(T: int, threads: int) -> int:
    """Chunks of a call: one per thread, at least two (so that a forced scan on one thread
    still combines chunks), at most one per step."""
    return max(1, min(T, max(2, threads)))


def chunk_bounds(T: int, chunks: int, reverse: bool) -> list:
    """[(t0, t1)] of `chunks` near-equal chunks of 0..T, in the order the loop runs them."""
    edges = [T * k // chunks for k in range(chunks + 1)]
    bounds = [(edges[k], edges[k + 1]) for k in range(chunks)]
    return bounds[::-1] if reverse else bounds


def run(compiled, direction: str, args: list, sizes: dict, T: int, B: int,
        lengths: np.ndarray, values: dict, threads: int) -> None:
    """One call of `direction`'s function on `args` (its arrays, in order) as a scan over
    `threads` threads; values: its flags by name (part and the lane flags are set here)."""
    plan = compiled.plans[direction]
    chunk_fn_name = direction + CHUNKS
    chunk_plan = compiled.plans[chunk_fn_name]
    main_args = compiled.arguments[direction]
    arrays = {a.name: array for a, array in zip(main_args, args)}
    axes = dict(zip((a.name for a in main_args), compiled.time_axes[direction]))
    fn = compiled._one_thread_function(direction)
    chunk_fn = compiled._one_thread_function(chunk_fn_name)

    def call_args(name, flags, T_k, lengths_k, arrays_k):
        both = {**values, "lanes": 1, "lane_first": 0, "lane_stride": 1, **flags}
        return (T_k, B, lengths_k, *(both[f] for f in compiled.flags[name]),
                *(sizes[d] for d in compiled.cell.dims),
                *(arrays_k[a.name] for a in compiled.arguments[name]))

    whole = call_args(direction, {"part": 1}, T, lengths, arrays)
    compiled._compile(direction, fn, whole)
    fn(*whole)

    bounds = chunk_bounds(T, chunk_count(T, threads), plan.kind == "backward")
    pieces = [(t0, t1, np.clip(lengths - t0, 0, t1 - t0)) for t0, t1 in bounds]

    # 2. each chunk's (A, B)
    dtype = compiled.dtype
    starts = {ident(read): 1.0 if key.endswith(".A") else 0.0
              for key, (read, _) in chunk_plan.carried.items()}
    chunk_args, chunk_arrays = [], []
    for t0, t1, lengths_k in pieces:
        own = {}
        for a in compiled.arguments[chunk_fn_name]:
            if a.step_rows(chunk_plan):
                shape = a.shape(chunk_plan, sizes, t1 - t0, B)
                own[a.name] = np.full(shape, starts.get(a.name, 0.0), dtype=dtype)
            else:   # what the direction's function computed before the loop, or reads
                own[a.name] = time_slice(arrays[a.name], axes[a.name], t0, t1, B)
        chunk_arrays.append(own)
        chunk_args.append(call_args(chunk_fn_name, {"part": 2}, t1 - t0, lengths_k, own))
    compiled._compile(chunk_fn_name, chunk_fn, chunk_args[0])
    lane_pool.run_each(chunk_fn, chunk_args, threads)

    # 3. each chunk's start, in the original form (no division), in float64
    carried = {s: ident(read) for s, (read, _) in plan.carried.items()}
    value = {s: arrays[name].astype(np.float64) for s, name in carried.items()}
    begin = []
    for own in chunk_arrays:
        begin.append({s: v.astype(dtype) for s, v in value.items()})
        for s in carried:
            A = own[ident(chunk_plan.carried[f"{s}.A"][0])]
            B_ = own[ident(chunk_plan.carried[f"{s}.B"][0])]
            value[s] = A * value[s] + B_

    # 4. each chunk's steps from its start
    step_local = {a.name for a in main_args if a.step_rows(plan)}
    main_calls, locals_ = [], []
    for (t0, t1, lengths_k), start in zip(pieces, begin):
        own = {name: time_slice(array, axes[name], t0, t1, B) for name, array in arrays.items()}
        for name in step_local:
            own[name] = np.empty_like(arrays[name])
        for s, name in carried.items():
            own[name] = start[s]
        locals_.append(own)
        main_calls.append(call_args(direction, {"part": 2}, t1 - t0, lengths_k, own))
    lane_pool.run_each(fn, main_calls, threads)
    for name in carried.values():
        np.copyto(arrays[name], locals_[-1][name])

    # 5. after the loop
    fn(*call_args(direction, {"part": 3}, T, lengths, arrays))

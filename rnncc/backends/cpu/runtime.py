"""Compiling generated modules and calling them.

The generated source goes through the disk cache (rnncc/backends/disk_cache.py): a real file
Numba can cache machine code beside, so a second process loads a compiled cell instead of
compiling it.
"""
from __future__ import annotations

import operator
from functools import cached_property

import numpy as np

from ...ops import REGISTRY
from ...ops.base import EvalContext, dim_size, part_offsets
from ...plan.interpret import backward_leaves, forward_leaves, mask_padding
from ...plan.layout import ident, time_slice
from ...plan.plan import LANES, LANES_COLUMNS, SCAN, Role, Rows
from ..binding import bind
from ..compile_log import compiling
from ..disk_cache import forget_cached, has_cached, import_file, write
from . import ahead, elementary, lane_pool, scan, team, threads
from .codegen import generate
from .native.function import NativeFunction, native_enabled
from .native.machine import packed_enabled
from .native.lower import Param
from .threads import ONE_THREAD, SERIAL, THREADS
from .threads import available as available_threads


def compile_past_damage(fn, signature) -> None:
    """fn.compile(signature), where Numba's disk cache may hold damaged files. Numba unpickles
    them without a check of its own: a truncated one (a full disk, a killed copy) raises
    (pickle's errors, not Numba's). Then the function's cached code, else that of fastmath's
    row_sum, which it may call (its cache is Numba's too), is removed and the compile tried
    again; an error with nothing left to remove, or one of Numba's own, is a real one."""
    from numba.core.errors import NumbaError

    from . import fastmath
    while True:
        try:
            fn.compile(signature)
            return
        except NumbaError:
            raise
        except Exception:
            if not forget_cached(fn) and not any([forget_cached(f) for f in fastmath.compiled()]):
                raise


# Rows x widest dimension below which a kernel runs on the calling thread alone: waking Numba's
# threads for each kernel launch costs more than a small step's kernel takes (threshold set from
# the 2-core runs in bench/RESULTS.md: B=1 latency kept, B=64 faster; not tuned further).
PARALLEL_MIN_WORK = 4096

# Where OpenMP's idle threads spin (its default, and torch's), Numba's threads take cores from
# BLAS's between kernels: a loss for steps that are mostly product, a gain for steps whose
# kernels weigh (kernel_share below). Measured on 2 cores (AMD EPYC), kernels on 1 thread ->
# on 2 (bench/RESULTS.md, 2026-11-29). A training step beside torch, T=100, both directions
# on 2: lstm H=256 B=64 (shares forward 0.078, backward 0.046) 108 -> 135 ms; gru 82 -> 102;
# rnn 49 -> 53; layer-norm LSTM H=512 B=128 (0.106, 0.086) 452 -> 448; H=256 B=16 (rows x
# width 4096) 67 -> 67. rnncc.RNN alone, T=100, B=64, per direction: layer-norm LSTM H=256
# forward (0.211) 80.5 -> 51.5, backward (0.172) 90 -> 80, inference (0.121) 35 -> 40; H=128
# forward (0.423) 39 -> 24, backward (0.345) 46 -> 36, inference (0.243) 16 -> 16; lstm H=128
# forward (0.156) 15 -> 15, inference (0.117) 10 -> 15, and its backward (0.092) slower after
# a forward on 2 (the idle threads then spin through it). Set from these alone: one machine
# class, five cells' shapes. Since simplify's sum(-v) -> -sum(v), the layer-norm LSTM's H=256
# backward weighed 0.157 and was break-even (beside torch: 91 -> 88 ms on 2, 0.97), so it
# stayed on one thread; written with chunk (one [4H] layer norm, not four [H] blocks) it
# weighs 0.173, takes 2 and is still break-even (beside torch 0.98, alone 1.00, AMD EPYC).
# `python bench/kernel_threads.py --force` measures every direction
# threaded against one thread, to set it on another machine.
KERNEL_HEAVY = 0.165
SPINNING_MIN_WORK = 8192


# The lanes schedule (plan.py) runs a call's whole recurrence as one parallel region, not one
# per step, on rnncc's own threads (lane_pool.py), from this many elements of recurrence
# (T x B x the state width) on. The recurrence streams through memory (about 1 ns an element
# on one thread: mingru, T=8192, B=1, H=256, 1.9 ms of a 13 ms call whose input product is
# the rest), and a second thread adds little bandwidth on the 2-core machines measured
# (bench/RESULTS.md, bench/scan.py): mingru at T=1024, B=1 ran 1.3x slower on two threads
# (the hand-off and the split call cost more than they saved), at T=8192, B=16 (32M
# elements) 0.88x of the step schedule. Each thread gets LANES_PER_THREAD lanes or more where
# the rows allow (ragged rows end at different steps), a lane at least LANE_COLUMNS columns
# wide.
LANES_MIN_WORK = 1 << 22
LANES_PER_THREAD = 4
LANE_COLUMNS = 16


def carried_width(plan, sizes: dict) -> int:
    """The widest carried value's columns: a step's recurrence per row is this wide."""
    return max(dim_size(plan.buffers[read].shape[-1], sizes)
               for read, _ in plan.carried.values() if plan.buffers[read].shape)


def lanes_of(plan, T: int, B: int, sizes: dict, available: int) -> tuple[int, int]:
    """(lanes per batch row, threads) of a lanes call of `plan`: column blocks where a lane
    may be one (plan.lanes == "columns"), enough for LANES_PER_THREAD per thread; one lane per
    row otherwise. Threads where the call's recurrence is big enough to pay for them."""
    threads = available if T * B * carried_width(plan, sizes) >= LANES_MIN_WORK else 1
    if threads == 1 or plan.lanes != LANES_COLUMNS:
        return 1, threads
    wanted = -(-LANES_PER_THREAD * threads // B)
    return max(1, min(wanted, dim_size(plan.lane_width, sizes) // LANE_COLUMNS)), threads


def lanes_per_call(plan, B: int, sizes: dict) -> int:
    """The lanes a lanes call of `plan` could spread over threads: batch rows times the column
    blocks of LANE_COLUMNS a row can be cut into."""
    if plan.lanes == LANES_COLUMNS:
        return B * max(1, dim_size(plan.lane_width, sizes) // LANE_COLUMNS)
    return B


def schedule_of(plan, T: int, B: int, sizes: dict, available: int,
                asked: str | None) -> str:
    """The schedule a call of `plan` runs: the one asked for, else the plan's preferred one,
    except that a plan with a scan runs it where lanes would leave most threads idle (see
    scan.SCAN_MIN_THREADS) in a call long enough for each thread's chunk."""
    if asked is not None:
        return asked
    chosen = plan.schedules[0]
    if chosen == LANES and plan.chunks is not None and available >= scan.SCAN_MIN_THREADS:
        if (2 * lanes_per_call(plan, B, sizes) < available
                and T >= scan.SCAN_MIN_STEPS * available
                and T * B * carried_width(plan, sizes) >= LANES_MIN_WORK):
            return SCAN
    return chosen


def kernel_threads(B: int, sizes: dict, available: int, kernel_share: float = 0.0) -> int:
    """Threads for the kernels of one call: `available` (threads.available(): Numba's thread
    count, all cores unless the caller lowered it) or one. One where the step is too small to
    pay for waking Numba's threads; where their idle threads would spin beside BLAS's
    (threads.py), one unless the step's kernels are heavy (kernel_share >= KERNEL_HEAVY) and
    wide.

    Measured on 2 cores (Xeon), lstm T=100, B=64, H=256 forward: kernels on 2 threads 61 ms
    against 70 ms on one, with OpenMP's idle threads asleep; with them spinning, 92 ms."""
    work = B * max(sizes.values(), default=1)
    if work < PARALLEL_MIN_WORK:
        return 1
    if threads.launch():
        return available
    return available if kernel_share >= KERNEL_HEAVY and work >= SPINNING_MIN_WORK else 1


# An op's cost per element in a kernel, in simple arithmetic ops (multiply-add, compare): the
# fastmath functions are polynomials (about 8 vector ops each, fastmath.py), a division or a
# square root a few; anything else one. A stored element (a kernel output: what a training
# forward keeps for backward, a gradient) is a write to memory, which costs the loop more than
# arithmetic: an inference kernel, which stores little, gained nothing from a second thread.
OP_COST = {**{f: 8 for f in elementary.EMITTERS}, "div": 4, "sqrt": 4}
STORE_COST = 4


def kernel_share(plan, sizes: dict) -> float:
    """A plan's per-step kernel work per row (its ops' elements weighted by OP_COST, and its
    stored elements by STORE_COST) over its per-step product work per row (multiply-adds):
    how much of a step the kernels are."""
    def elements(shape) -> int:
        return int(np.prod([dim_size(d, sizes) for d in shape]))

    work, products = 0, 0
    for step in plan.phases["per_step"]:
        if step.kind == "gemm":
            (_, k), (_, n) = step.shape
            products += dim_size(k, sizes) * dim_size(n, sizes)
        else:
            work += sum(OP_COST.get(op.op, 1) * elements(op.shape) for op in step.ops)
            work += sum(STORE_COST * elements(plan.buffers[out].shape) for out in step.outputs)
    return work / products if products else float("inf")


# Multiply-adds a call's shared products must reach for a team (team.py) to pay: starting one
# costs about 40 us (2 cores, AMD EPYC), and sharing saves half of the products' time at about
# 240 GF/s a core; lstm T=200, B=1, H=128 (13M, its input product) ran 0.75 ms alone, 1.05 ms
# with a team.
TEAM_MIN_CALL = 1 << 25
# A weight that a step's product reads at B = 1 costs about a microsecond per 128 KB from the
# L2 (2 cores, AMD EPYC Zen 4), as much as 4 multiply-adds a byte at the rate above: lstm
# T=200, B=1, H=128 saves 0.4 ms of 1.28 with a team.
BYTE_WORK = 4
# Elements of a call's kernels (T x B x the widest dimension) from which a team shares its
# parallel loops (each step's at least PARALLEL_MIN_WORK): kernels take 1-2 ns an element on
# one thread, so from about half a millisecond.
TEAM_MIN_ELEMENTS = 1 << 19


def products(plan, T: int, B: int, sizes: dict):
    """(step, phase, multiply-adds of one execution, executions per call) of every matrix
    product a call of `plan` runs: a step's products once per step on B rows, the others once
    on all T*B rows (an outer sum's rows are its inner dimension)."""
    for phase, steps in plan.phases.items():
        rows, times = (B, T) if phase == "per_step" else (T * B, 1)
        for step in steps:
            if step.kind != "gemm":
                continue
            (m, k), (_, n) = step.shape
            outer = dim_size(m, sizes) if step.op == "outer_sum" else dim_size(k, sizes)
            yield step, phase, rows * outer * dim_size(n, sizes), times


def team_work(plan, T: int, B: int, sizes: dict, dtype) -> int:
    """What a team would save a call, in multiply-adds: those of the products that run on
    native/gemm.py's packed GEMM (by a parameter, or any outside the time loop) and that it
    shares out, at least team.product_threshold(dtype) each or reading a weight of
    gemm.TEAM_MIN_BYTES; the latter count BYTE_WORK multiply-adds a byte, as they run at the
    speed of the L2."""
    from .native.gemm import TEAM_MIN_BYTES
    min_work = team.product_threshold(dtype)
    itemsize = np.dtype(dtype).itemsize
    total = 0
    for step, phase, work, times in products(plan, T, B, sizes):
        by_parameter = plan.buffers[step.a].role in (Role.PARAM, Role.PACKED)
        if work >= min_work and (by_parameter or phase != "per_step"):
            total += work * times
        elif by_parameter:
            (_, k), (_, n) = step.shape   # (the parameter's own dimensions)
            weight = dim_size(k, sizes) * dim_size(n, sizes) * itemsize
            if weight >= TEAM_MIN_BYTES:
                total += weight * BYTE_WORK * times
    return total


def masked_leaves(plan) -> set:
    """The buffers of the caller's per-step arrays (inputs, dy) that must read zero past each
    row's length: the GEMMs over all T*B rows read every row."""
    return {*plan.leaves["input"].values(),
            *(b for n, b in plan.leaves["grad"].items() if n == "dy")}


def whole(plan, arrays: dict, name: str, sizes: dict, dtype):
    """A buffer's value for every step ([T, B, ...]), or its only value ("none" rows), from a
    generated function's `arrays` (numpy's or, on the cuda target, the GPU's; a constant's
    value is numpy's)."""
    b = plan.buffers[name]
    every = ident(name) + "_all"
    if every in arrays:
        return arrays[every]
    if b.view_of is not None:
        return b.take(whole(plan, arrays, b.view_of, sizes, dtype), plan.buffers[b.view_of],
                      sizes)
    if b.role == Role.CONSTANT:  # a result that is a constant: the gradient of an unused input
        op, attrs = b.value
        return REGISTRY[op].evaluate([], attrs, EvalContext(sizes, dtype))
    return arrays[ident(name)]


def whole_getter(plan, names, name: str, sizes: dict, dtype):
    """A function of a generated function's numpy arrays (whose names are `names`) returning
    whole(plan, arrays, name, sizes, dtype)."""
    b = plan.buffers[name]
    every = ident(name) + "_all"
    if every in names:
        return operator.itemgetter(every)
    if b.view_of is not None:
        parent, of = whole_getter(plan, names, b.view_of, sizes, dtype), plan.buffers[b.view_of]
        start, stop = part_offsets(of.shape[0 if b.axis == "rows" else -1], sizes)[b.index]
        if b.axis == "rows":
            return lambda arrays: parent(arrays)[start:stop]
        return lambda arrays: parent(arrays)[..., start:stop]
    if b.role == Role.CONSTANT:
        value = whole(plan, {}, name, sizes, dtype)
        return lambda arrays: value
    return operator.itemgetter(ident(name))


class Compiled:
    """A cell's plan compiled for one dtype: forward() and backward() over numpy arrays."""

    def __init__(self, cell, dtype):
        self.cell, self.dtype = cell, np.dtype(dtype)
        # forward keeps what backward reads; infer (forward-only calls) stores only the output.
        # Numba compiles each function at its first call, so an unused one costs nothing.
        self.plans = cell.compiled_plans()
        # arguments: the array arguments each function takes, in order (its layout's, less
        # those its code never names); flags: the scalars it takes after the row lengths
        self.source, self.layouts, self.arguments, self.flags = generate(self.plans, self.dtype,
                                                                         cell.dims)
        self.time_axes = {d: [a.time_axis(self.plans[d]) for a in arguments]
                          for d, arguments in self.arguments.items()}  # for runs in pieces
        self.path = write(self.source, cell.name)   # (imported when Numba's code is wanted)
        self._ready: set = set()   # the functions known compiled
        # the variant every call runs, whatever its threads (THREADS, ONE_THREAD; None: the
        # one its threads call for): ahead-of-time compiling (runtime/precompile.py) compiles
        # each
        self.variant: str | None = None
        self._shares: dict = {}    # (direction, sizes) -> kernel_share
        self._teams: dict = {}     # (direction, T, B, sizes, packed) -> whether a team pays
        self._wholes: dict = {}    # (direction, buffer, sizes) -> whole_getter
        self._ahead: dict = {}     # function name -> its ahead.Job (compiling in background)
        self._native: dict = {}    # function name -> its NativeFunction
        # the functions that come twice (threaded and serial: those with kernels); asked every
        # call, so found once
        self._twins = {d for d in self.layouts if f"\ndef {d}{SERIAL}(" in self.source}

    @cached_property
    def module(self):
        """The generated module, imported: its Numba functions (the threaded variant; both with
        RNNCC_NATIVE=0). Importing it imports Numba, which a process whose calls all run on
        one thread never needs."""
        return import_file(self.path)

    # -- arrays ---------------------------------------------------------------------------------------
    def packs(self) -> dict:
        """Packed parameter buffers of both directions: name -> the parameters it stacks (rows,
        in order). Forward and backward pack the same parameters alike under the same name."""
        packs = {}
        for plan in self.plans.values():
            for name, b in plan.buffers.items():
                if b.role == Role.PACKED:
                    if packs.setdefault(name, b.pack) != b.pack:
                        raise AssertionError(f"plans stack {name} differently")
        return packs

    def _arrays(self, direction: str, bound: dict, sizes, T, B, ragged: bool,
                workspace: dict | None = None, packed: dict | None = None) -> dict:
        """The function's arrays. With a `workspace` (a dict the caller keeps between calls),
        arrays of the same shapes are reused instead of allocated: the caller's values are
        copied in, and the rest is zeroed only for ragged rows (with full rows every step
        writes every row before anything reads it). `packed`: stacked parameters the caller
        keeps (name -> array); missing ones are stacked here from the bound parameters."""
        key = (direction, T, B, tuple(sorted(sizes.items())))
        kept = workspace.get(key, {}) if workspace is not None else {}
        dtype = self.dtype

        def caller(argument, b, value, shape):
            if b.rows == Rows.STEP:  # a carried state: the generated code writes it
                if not (isinstance(value, np.ndarray) and value.shape == shape):
                    value = np.broadcast_to(np.asarray(value, dtype=dtype), shape)
                if argument.name in kept:
                    np.copyto(kept[argument.name], value)
                    return kept[argument.name]
                return np.array(value, dtype=dtype)
            if (isinstance(value, np.ndarray) and value.dtype == dtype and value.shape == shape
                    and value.flags.c_contiguous):
                return value  # read only: no copy
            # order="C": the generated code reshapes it (a transposed caller's array,
            # batch_first, would otherwise keep its strides through the copy)
            return np.array(np.broadcast_to(np.asarray(value, dtype=dtype), shape),
                            dtype=dtype, order="C")

        def stacked(argument, members):
            if packed is not None and argument.buffer in packed:
                return packed[argument.buffer]
            return np.ascontiguousarray(np.concatenate(members, axis=0), dtype=dtype)

        def own(argument, shape):
            if argument.name in kept:
                if ragged:
                    kept[argument.name].fill(0)
                return kept[argument.name]
            return np.zeros(shape, dtype=dtype)

        arrays = bind(self.layouts[direction], bound, sizes, T, B, caller, stacked, own)
        if workspace is not None:
            workspace[key] = arrays
        return arrays

    def _call(self, direction: str, args, sizes, T, B, lengths, threads=None,
              flags: dict | None = None, schedule: str | None = None) -> None:
        """Call the generated function on `args` (its array arguments, in order). threads:
        Numba threads for the kernels (default: kernel_threads' choice, or lanes_of's for the
        lanes schedule); flags: values of the scalar arguments after the lengths the function
        takes, by name (the printer's flags(): backward's `inputs`; `lanes` is set here from
        the schedule)."""
        available = available_threads()
        values = {"part": 0, "lane_first": 0, "lane_stride": 1, **(flags or {})}
        schedule, values["lanes"], threads, on_lane_threads, fn, members = self._decide(
            direction, T, B, sizes, threads, schedule, available)
        if schedule == SCAN:
            scan.run(self, direction, list(args), sizes, T, B, lengths, values, available)
            return

        def arguments(**changed):
            both = {**values, **changed}
            return (T, B, lengths, *(both[f] for f in self.flags[direction]),
                    *(sizes[d] for d in self.cell.dims), *args)
        all_args = arguments()
        if fn not in self._ready and direction == "forward":
            self._compile_ahead("backward", T, B, sizes, available, schedule)   # the next call
        self._compile(direction, fn, all_args)
        if on_lane_threads:
            # the lanes on threads of rnncc's own, each calling the one-thread function on
            # its share of them (ctypes lets go of the GIL during the call); what comes before
            # and after the loop (GEMMs, on BLAS's threads) once
            fn(*arguments(part=1))
            shares = [arguments(part=2, lane_first=k, lane_stride=threads)
                      for k in range(threads)]
            lane_pool.run(fn, shares)
            fn(*arguments(part=3))
            return
        if isinstance(fn, NativeFunction):
            # its products with a packed weight shared over a team of the available threads
            team.run(lambda: fn(*all_args), members, self.dtype)
            return
        import numba   # (a Numba function: imported with the module)
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            fn(*all_args)
        finally:
            numba.set_num_threads(previous)

    def _decide(self, direction: str, T: int, B: int, sizes: dict, threads: int | None,
                schedule: str | None, available: int) -> tuple:
        """(schedule, the `lanes` flag, the kernels' threads, whether lanes run on threads of
        rnncc's own, the function, the team's members for a native function) of a call; threads:
        asked for by the caller (None: chosen here)."""
        schedule = schedule_of(self.plans[direction], T, B, sizes, available, schedule)
        if schedule == SCAN:
            return schedule, 0, threads, False, None, 1
        lanes, chosen = self._threads(direction, T, B, sizes, available, schedule)
        asked, threads = threads, threads or chosen
        on_lane_threads = lanes > 0 and threads > 1 and self._native_lanes()
        fn = self._function(direction, 1 if on_lane_threads else threads)
        members = asked or (1 if lanes else   # (lanes_of chose one thread)
                            self._team_threads(direction, T, B, sizes, available))
        return schedule, lanes, threads, on_lane_threads, fn, members

    def _team_threads(self, direction: str, T: int, B: int, sizes: dict, available: int) -> int:
        """The team a native call runs on (team.py): all `available` threads where the
        kernels or the products a team shares out are worth more than starting it, else 1."""
        if available <= 1:
            return 1
        key = (direction, T, B, tuple(sorted(sizes.items())), packed_enabled())
        if key not in self._teams:   # (worked out once: 4.5 us, 0.6 % of a B=1 call)
            width = B * max(sizes.values(), default=1)
            kernels = width >= PARALLEL_MIN_WORK and T * width >= TEAM_MIN_ELEMENTS
            self._teams[key] = kernels or (packed_enabled() and team_work(
                self.plans[direction], T, B, sizes, self.dtype) >= TEAM_MIN_CALL)
        return available if self._teams[key] else 1

    def _native_team(self) -> bool:
        """Whether a call whose kernels would take several threads runs rnncc's one-thread
        function with a team instead (its products and parallel loops shared out, team.py),
        as it does unless RNNCC_NATIVE=0 or `variant` asks for Numba's threads."""
        return native_enabled() and self.variant != THREADS

    def _native_lanes(self) -> bool:
        """Whether a lanes call on several threads runs rnncc's one-thread function on lane
        threads (else Numba's parallel function, as RNNCC_NATIVE=0 or `variant` asks)."""
        return native_enabled() and self.variant != THREADS

    def _function(self, direction: str, threads: int):
        """The variant a call whose kernels get `threads` runs: the serial twin for one thread
        (where the function has kernels), unless `variant` says otherwise. One thread's
        function is compiled by rnncc's own compiler (native/), the threaded one by Numba."""
        one_thread = self.variant == ONE_THREAD or (
            (threads == 1 or self._native_team()) and self.variant != THREADS)
        if self._has_twin(direction) and not one_thread:
            return getattr(self.module, direction)   # on Numba's threads
        return self._one_thread_function(direction)

    def _one_thread_function(self, name: str):
        """`name`'s one-thread function (its serial twin where it has one; rnncc's compiler's
        unless RNNCC_NATIVE=0), whatever `variant` says: the scan calls it on several of rnncc's
        threads at once."""
        twin = name + SERIAL if self._has_twin(name) else name
        if native_enabled():
            return self._native_function(name, twin)
        return getattr(self.module, twin)

    def _has_twin(self, direction: str) -> bool:
        """Whether `direction`'s function comes twice (threaded and serial: it has kernels)."""
        return direction in self._twins

    def _native_function(self, direction: str, name: str) -> NativeFunction:
        if name not in self._native:
            self._native[name] = NativeFunction(self.source, name, self.native_params(direction),
                                                self.dtype, self.path.parent,
                                                self.path.stem)
        return self._native[name]

    def native_params(self, direction: str) -> list:
        """The kinds of the arguments every call of `direction`'s function passes (_call: T, B,
        the row lengths, the flags, the dimension sizes, the arrays, each C-contiguous in the
        module's dtype), known without a call."""
        plan, sizes = self.plans[direction], {d: 2 for d in self.cell.dims}
        return [Param("int"), Param("int"), Param("array", 1, np.dtype(np.int64)),
                *[Param("bool" if f == "inputs" else "int") for f in self.flags[direction]],
                *[Param("int") for _ in self.cell.dims],
                *[Param("array", len(a.shape(plan, sizes, 2, 2)), self.dtype,
                        a.read_only(plan) and packed_enabled())
                  for a in self.arguments[direction]]]

    def argument_types(self, direction: str) -> tuple:
        """native_params as Numba types: the one signature of `direction`'s Numba function."""
        import numba
        from numba.core import types

        def numba_type(p: Param):
            if p.kind == "array":
                return types.Array(numba.from_dtype(p.dtype), p.ndim, "C")
            return types.boolean if p.kind == "bool" else types.int64
        return tuple(numba_type(p) for p in self.native_params(direction))

    def _threads(self, direction: str, T: int, B: int, sizes: dict, available: int,
                 schedule: str | None) -> tuple[int, int]:
        """(the `lanes` flag: lanes per row, 0 for the step schedule; the kernels' threads) of
        a call running `schedule` (None: the plan's preferred one)."""
        if self.plans[direction].schedule(schedule) == LANES:
            return lanes_of(self.plans[direction], T, B, sizes, available)
        if self._native_team():   # its kernels go to the team (_team_threads), not Numba's
            return 0, 1
        return 0, kernel_threads(B, sizes, available, self._kernel_share(direction, sizes))

    def _compile_ahead(self, direction: str, T: int, B: int, sizes: dict, available: int,
                       schedule: str | None) -> None:
        """Start compiling the function a call of `direction` at these sizes will run, in a
        background process, where that pays (ahead.py)."""
        if self.variant is not None or not ahead.enabled():
            return
        lanes, threads = self._threads(direction, T, B, sizes, available, schedule)
        fn = self._function(direction, 1 if lanes and self._native_lanes() else threads)
        variant = self._variant_of(direction, fn)
        if isinstance(fn, NativeFunction):
            return   # compiles in a fraction of Numba's time: nothing to gain
        if (fn in self._ready or fn.signatures or fn.__name__ in self._ahead
                or not ahead.worth_it(self.source, fn.__name__, variant == THREADS)
                or has_cached(fn)):
            return
        self._ahead[fn.__name__] = ahead.start(self.cell, self.dtype, direction, fn.__name__,
                                               variant)

    def _variant_of(self, direction: str, fn) -> str:
        """How the compile log names the variant `fn` is ("" where there is one)."""
        if not self._has_twin(direction):
            return ""
        return ONE_THREAD if fn.__name__.endswith(SERIAL) else THREADS

    def _kernel_share(self, direction: str, sizes: dict) -> float:
        key = (direction, tuple(sorted(sizes.items())))
        if key not in self._shares:
            self._shares[key] = kernel_share(self.plans[direction], sizes)
        return self._shares[key]

    def _compile(self, direction: str, fn, args) -> None:
        """Compile `fn` at its first call (Numba would do it inside the call, silently): the
        wait is logged (compile_log), and the call's time is its own. A generated function
        has one signature: every array it is given is C-contiguous, in the module's dtype (so
        a cheap check per call; typing the arguments costs 0.1 ms, 10% of a small call)."""
        if fn in self._ready:   # (Dispatcher.signatures builds a list per call: slower)
            return
        if isinstance(fn, NativeFunction):
            with compiling(self.cell.name, direction, self.dtype, "cpu",
                           variant=self._variant_of(direction, fn),
                           cached=lambda: fn.loaded_from_cache):
                fn.compile()
            self._ready.add(fn)
            return
        if not fn.signatures:
            signature = tuple(fn.typeof_pyval(a) for a in args)
            hits = sum(fn.stats.cache_hits.values())
            job = self._ahead.get(fn.__name__)   # compiling in a background process
            if job is not None and signature != self.argument_types(direction):
                job = None   # (it compiles other types: a read-only caller's array)
            done = []
            with compiling(self.cell.name, direction, self.dtype, "cpu",
                           variant=self._variant_of(direction, fn),
                           cached=lambda: sum(fn.stats.cache_hits.values()) > hits,
                           background=None if job is None else lambda: done[0]):
                if job is not None:
                    done.append(job.wait())   # then Numba loads what it left in the cache
                compile_past_damage(fn, signature)
        self._ready.add(fn)
        self._ahead.pop(fn.__name__, None)

    def _whole(self, direction: str, arrays: dict, name: str, sizes) -> np.ndarray:
        """whole() of one of `direction`'s arrays, by a getter worked out once per buffer and
        call sizes (the arrays' names are the layout's, every call): a backward call takes its
        parameters' gradients this way, 12 of them for an lstm, 1.5 -> 0.3 us each."""
        key = (direction, name, *sizes.items())
        get = self._wholes.get(key)
        if get is None:
            get = self._wholes[key] = whole_getter(self.plans[direction], arrays.keys(), name,
                                                   sizes, self.dtype)
        return get(arrays)

    @staticmethod
    def _masked(plan, bound: dict, call) -> dict:
        """Inputs and dy zeroed past each row's length: the GEMMs over all T*B rows read them."""
        caller = masked_leaves(plan)
        return {buf: mask_padding(v, call.lengths, call.T) if buf in caller else v
                for buf, v in bound.items()}

    # -- the directions --------------------------------------------------------------------------------
    def start(self, call, keep: bool = False, workspace: dict | None = None,
              packed: dict | None = None) -> "ForwardRun":
        """A forward call that runs in pieces of time (ForwardRun.advance): layer-parallel
        scheduling runs layer k+1 on the steps layer k has finished."""
        return ForwardRun(self, call, keep, workspace, packed)

    def forward(self, call, keep: bool = False, workspace: dict | None = None,
                packed: dict | None = None):
        """(ys, final) or, with keep, (ys, final, tape). With a workspace (see _arrays) the
        tape's arrays live in it: valid until the next forward call with that workspace."""
        run = self.start(call, keep, workspace, packed)
        run.advance(0, call.T)
        return run.results()

    def start_backward(self, call, tape, dys, dfinal, workspace: dict | None = None,
                       packed: dict | None = None, inputs: bool = True) -> "BackwardRun":
        """A backward call that runs in pieces of time (BackwardRun.advance, last piece
        first). inputs=False: no input gradients (results() gives an empty dict for them)."""
        return BackwardRun(self, call, tape, dys, dfinal, workspace, packed, inputs)

    def backward(self, call, tape, dys, dfinal, workspace: dict | None = None,
                 packed: dict | None = None, threads: int | None = None,
                 inputs: bool = True):
        """(param grads, input grads, initial-state grads) of the call that made `tape`."""
        run = self.start_backward(call, tape, dys, dfinal, workspace, packed, inputs)
        run.advance(0, call.T, threads)
        return run.results()


def _shaped(a: np.ndarray, shape: tuple) -> np.ndarray:
    """`a` broadcast to `shape` (a gradient computed once for all rows); itself where it has
    that shape already (nearly always: np.broadcast_to costs microseconds a parameter)."""
    return a if a.shape == shape else np.broadcast_to(a, shape)


def _width(b, sizes) -> int:
    return dim_size(b.shape[-1], sizes) if b.shape else 1


class _PiecedRun:
    """One call of a generated function, run through time in pieces.

    The carried values (states forward, their gradients backward) live in the call's arrays, so
    running steps [0, t1) and then [t1, T) computes what one call over [0, T) does: each piece
    is a call of the generated function on the piece's rows of every time-indexed array, with
    each row's length counted from the piece's first step. What the function reads per step
    (input_array, grad_array) may be filled piece by piece, as long as a piece's rows are
    written before the piece runs: layer-parallel scheduling runs layer k+1 on the steps layer
    k has finished.
    """

    def __init__(self, compiled: Compiled, direction: str, call, bound: dict, workspace,
                 packed):
        self.compiled, self.call, self.direction = compiled, call, direction
        self.plan = plan = compiled.plans[direction]
        self.arrays = compiled._arrays(direction, compiled._masked(plan, bound, call),
                                       call.sizes, call.T, call.B, call.lengths is not None,
                                       workspace, packed)
        self.lengths = (np.full(call.B, call.T, dtype=np.int64) if call.lengths is None
                        else np.ascontiguousarray(call.lengths, dtype=np.int64))
        self._args = [self.arrays[a.name] for a in compiled.arguments[direction]]
        self._axes = compiled.time_axes[direction]

    flags: dict = {}   # the function's flag arguments by name (backward: inputs)

    def _run_piece(self, t0: int, t1: int, threads: int | None) -> bool:
        """Call the function on steps t0 .. t1-1; False where there was nothing to run (an
        empty piece of a non-empty call: a call with T = 0 still runs, for its zero results)."""
        T, B = self.call.T, self.call.B
        if not 0 <= t0 <= t1 <= T:
            raise ValueError(f"steps {t0}..{t1} lie outside 0..{T}")
        if t0 == t1 and T:
            return False
        if t0 == 0 and t1 == T:
            args, lengths = self._args, self.lengths
        else:
            args = [time_slice(a, axis, t0, t1, B) for a, axis in zip(self._args, self._axes)]
            lengths = np.clip(self.lengths - t0, 0, t1 - t0)
        self.compiled._call(self.direction, args, self.call.sizes, t1 - t0, B, lengths, threads,
                            self.flags, self.call.schedule)
        return True

    def _leaf_array(self, kind: str, name: str) -> np.ndarray:
        return self.arrays[ident(self.plan.leaves[kind][name])]

    def _steps(self, buf: str, t0: int, t1: int) -> np.ndarray:
        """A result's values at steps t0 .. t1-1 as [t1-t0, B, width]: a view where it is
        stored every step, else (a value computed once) broadcast."""
        c, call = self.compiled, self.call
        whole = c._whole(self.direction, self.arrays, buf, call.sizes)
        width = _width(self.plan.buffers[buf], call.sizes)
        if whole.ndim >= 2 and whole.shape[:2] == (call.T, call.B):
            return whole[t0:t1].reshape(t1 - t0, call.B, width)
        return np.broadcast_to(whole, (t1 - t0, call.B, width))


class ForwardRun(_PiecedRun):
    """A forward call (training: keep, else inference) run in pieces, first to last."""

    def __init__(self, compiled: Compiled, call, keep: bool, workspace, packed):
        direction = "forward" if keep else "infer"
        plan = compiled.plans[direction]
        super().__init__(compiled, direction, call,
                         forward_leaves(plan, call.params, call.xs, call.state), workspace,
                         packed)
        self.keep = keep
        self.done = 0   # steps 0 .. done-1 have run

    def input_array(self) -> np.ndarray:
        """The [T, B, I] array the function reads the cell's input from (write-through)."""
        return self._leaf_array("input", self.compiled.cell.inputs[0])

    def advance(self, t0: int, t1: int, threads: int | None = None) -> None:
        """Run steps t0 .. t1-1, continuing where the last piece stopped (t0 == done)."""
        if t0 != self.done:
            raise ValueError(f"steps {t0}..{t1} do not continue a forward run at step "
                             f"{self.done} of {self.call.T}")
        self._run_piece(t0, t1, threads)
        self.done = t1

    def output(self, t0: int, t1: int) -> np.ndarray:
        """The outputs of steps t0 .. t1-1 ([t1-t0, B, d_out]; rows past their length: zero
        when the call is ragged, unspecified otherwise), a view where the output is stored."""
        return self._steps(next(iter(self.plan.results["output"].values())), t0, t1)

    def results(self):
        """(ys, final) or, when keeping, (ys, final, tape), once every step has run."""
        if self.done != self.call.T:
            raise ValueError(f"the run stopped at step {self.done} of {self.call.T}")
        c, call, arrays, plan = self.compiled, self.call, self.arrays, self.plan
        ys = mask_padding(np.array(self.output(0, call.T), dtype=c.dtype), call.lengths, call.T)
        final = {s: arrays[ident(plan.leaves["state"][s])].copy() for s in call.state}
        if not self.keep:
            return ys, final
        states = {s: arrays[ident(plan.leaves["state"][s]) + "_all"] for s in call.state}
        saved = {label: np.ascontiguousarray(c._whole("forward", arrays, buf, call.sizes))
                 for label, buf in plan.results.get("saved", {}).items()}
        return ys, final, {"states": states, "saved": saved}


class BackwardRun(_PiecedRun):
    """BPTT through a forward call, run in pieces, last to first. Each piece's after-loop
    work covers its own rows: the input gradient's rows are written in place, the parameter
    gradients (sums over rows) are added up over the pieces."""

    def __init__(self, compiled: Compiled, call, tape, dys, dfinal, workspace, packed,
                 inputs: bool = True):
        plan = compiled.plans["backward"]
        super().__init__(compiled, "backward", call,
                         backward_leaves(plan, tape, call.params, call.xs, dys, dfinal),
                         workspace, packed)
        self.inputs = inputs   # whether it computes the input gradients
        self.flags = {"inputs": inputs}
        self.done = call.T   # steps done .. T-1 have run
        self._dparams: dict | None = None
        self._owned = False   # _dparams: arrays of their own, or views of the work arrays

    def grad_array(self) -> np.ndarray:
        """The [T, B, d_out] array the function reads the output's gradient from
        (write-through)."""
        return self._leaf_array("grad", "dy")

    def advance(self, t0: int, t1: int, threads: int | None = None) -> None:
        """Run steps t1-1 down to t0, continuing where the last piece stopped (t1 == done)."""
        if t1 != self.done:
            raise ValueError(f"steps {t0}..{t1} do not continue a backward run at step "
                             f"{self.done} of {self.call.T}")
        c, call = self.compiled, self.call
        if self._dparams is not None and not self._owned:   # (before the piece overwrites them)
            self._dparams = {n: np.array(g, dtype=c.dtype) for n, g in self._dparams.items()}
            self._owned = True
        ran = self._run_piece(t0, t1, threads)
        self.done = t0
        if not ran:
            return
        pieces = {n: _shaped(c._whole("backward", self.arrays, buf, call.sizes),
                             call.params[n].shape)
                  for n, buf in self.plan.results["params"].items()}
        if self._dparams is None:   # (views: a whole call copies them once, in results)
            self._dparams = pieces
            return
        for n, g in pieces.items():
            self._dparams[n] += g

    def dinput(self, t0: int, t1: int) -> np.ndarray:
        """The input gradient at steps t0 .. t1-1 ([t1-t0, B, I]; rows past their length: zero
        when the call is ragged), a view where it is stored."""
        if not self.inputs:
            raise ValueError("this backward run computes no input gradients (inputs=False)")
        return self._steps(self.plan.results["x"][self.compiled.cell.inputs[0]], t0, t1)

    def results(self, owned: bool = True):
        """(param grads, input grads, initial-state grads), once every step has run.
        owned=False: the parameter gradients may be views of the work arrays, valid until the
        next backward call with this workspace (for a caller that copies them at once: a
        batch-1 call's 12 gradients of an lstm at H=128 are 0.5 MB, copied twice)."""
        if self.done != 0:
            raise ValueError(f"the backward run stopped at step {self.done}")
        c, call, plan = self.compiled, self.call, self.plan
        if owned and not self._owned and self._dparams is not None:
            self._dparams = {n: np.array(g, dtype=c.dtype) for n, g in self._dparams.items()}
            self._owned = True
        dxs = {}
        for n, buf in plan.results["x"].items() if self.inputs else ():
            full = np.broadcast_to(c._whole("backward", self.arrays, buf, call.sizes),
                                   call.xs[n].shape)
            dxs[n] = mask_padding(np.array(full, dtype=c.dtype), call.lengths, call.T)
        dstate = {s: self.arrays[ident(plan.carried[s][0])].copy() for s in plan.carried}
        return self._dparams, dxs, dstate

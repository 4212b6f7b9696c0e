"""Compiling a cell's generated cuda module and calling it.

The arrays are the cpu function's (same names, shapes and roles: see cpu/runtime.py), allocated
on the device for each call. The caller's arrays are read where they are: numpy arrays are
copied to the device, device arrays (Numba's, CuPy's, PyTorch's CUDA tensors) are read in place
when they are C-contiguous and need no masking, and copied on the device otherwise (the caller's
arrays are never written). Results come back as the caller's input came in: numpy arrays for
numpy input, device arrays of the input's kind for device input. The tape a training forward
returns stays on the device.
"""
from __future__ import annotations

import sys
import threading

import numpy as np

from ...ops.base import dim_size
from ...plan.interpret import backward_leaves, forward_leaves, mask_padding
from ...plan.layout import ArgKind, buffer_shape, ident
from ...plan.plan import LANES, LANES_COLUMNS, SCAN, Rows
from ...plan.scan import CHUNKS
from ..binding import bind
from ..compile_log import compiling
from ..cpu.runtime import masked_leaves, whole
from ..disk_cache import load
from . import device, transfer
from .codegen import generate, launch_shape


# The lanes a scan on a GPU aims at (chunks x batch rows x columns, or rows): enough to fill
# every multiprocessor of a large GPU several times over. Not measured (no GPU run yet); the
# simulator's grid is one small block, so it takes 3 chunks.
SCAN_LANES = 1 << 16


def chunks_of(plan, T: int, B: int, sizes: dict, simulator: bool) -> tuple[int, int]:
    """(chunks, steps a chunk) of a scan call: at least two chunks, at most one a step."""
    lanes = B * (dim_size(plan.lane_width, sizes) if plan.lanes == LANES_COLUMNS else 1)
    wanted = 3 if simulator else -(-SCAN_LANES // lanes)
    if T == 0:
        return 1, 1
    steps = -(-T // min(T, max(2, wanted)))
    return -(-T // steps), steps


class Compiled:
    """A cell's plans compiled for one dtype: forward() and backward() on the GPU (or on Numba's
    simulator)."""

    def __init__(self, cell, dtype):
        self.cuda = device.cuda()   # raises the clear error where there is neither
        self.simulator = device.simulator()
        self.cell, self.dtype = cell, np.dtype(dtype)
        self.plans = cell.compiled_plans()
        self.source, self.layouts = generate(self.plans, self.dtype, cell.dims,
                                             self.simulator)
        self.module = load(self.source, cell.name)
        self.threads = launch_shape(self.simulator)["threads"]
        self._blocks: dict = {}
        self._kernels: dict = {}   # (direction, argument types) -> specialized kernel
        self._kept: dict = {}    # direction -> (shapes, the arrays only the kernel uses)
        self._handed = {d: self._handed_out(d) for d in self.layouts}
        # one call at a time: the simulator's switch interval (_launch) is process-wide, and the
        # calls share the default stream, which runs their kernels one after another anyway
        self._lock = threading.Lock()

    # -- the caller's values on the device ------------------------------------------------------------
    def _device_value(self, value, shape: tuple, writable: bool, lengths=None):
        """`value` as a C-contiguous device array of `shape` in the run's dtype: the caller's
        device array itself where it can be read as it is, else a copy (always a copy where
        the kernel writes it, or `lengths` asks for the rows past each length to be zeroed)."""
        if not device.is_device_array(value):
            host = np.broadcast_to(np.asarray(value, dtype=self.dtype), shape)
            if lengths is not None:
                host = mask_padding(host, lengths[1], shape[0])
            return self.cuda.to_device(np.ascontiguousarray(host))
        value = device.as_device(value)
        if tuple(value.shape) != tuple(shape):  # broadcast: by way of the host (rare)
            return self._device_value(value.copy_to_host(), shape, writable, lengths)
        if lengths is not None:
            return transfer.copy_rows(value, lengths[0], True, self.dtype)
        if writable or not value.is_c_contiguous() or value.dtype != self.dtype:
            return transfer.copy(value, self.dtype)
        return value

    def _packed(self, members: list, stacked=None):
        """Parameters stacked along their first axis, on the device (into `stacked`, the last
        call's array, where given)."""
        rows = sum(m.shape[0] for m in members)
        if stacked is None:
            stacked = self.cuda.device_array((rows, *members[0].shape[1:]), dtype=self.dtype)
        if not any(device.is_device_array(m) for m in members):
            stacked.copy_to_device(np.ascontiguousarray(
                np.concatenate([np.asarray(m, dtype=self.dtype) for m in members], axis=0)))
            return stacked
        row = 0
        for m in members:
            block = stacked[row:row + m.shape[0]]
            block.copy_to_device(self._device_value(m, tuple(m.shape), writable=False))
            row += m.shape[0]
        return stacked

    def _handed_out(self, direction: str) -> set:
        """The arguments whose arrays a call hands out (results, final states, the tape): a
        call allocates them anew. The others are the call's own, kept for the next call."""
        plan = self.plans[direction]
        names: set = set()

        def add(name):
            names.add(name)
            if plan.buffers[name].view_of is not None:
                add(plan.buffers[name].view_of)
        for group in plan.results.values():
            for name in group.values():
                add(name)
        for read, _ in plan.carried.values():
            add(read)
        return {a.name for a in self.layouts[direction].arguments
                if a.kind in (ArgKind.BUFFER, ArgKind.EVERY_STEP) and a.buffer in names}

    def _arrays(self, direction: str, bound: dict, call, lengths) -> dict:
        """The kernel's arrays. The ones it only works in (hoisted products, per-step values
        backward does not read, workspaces, stacked parameters) are kept from the last call of
        the same shapes: a cudaMalloc per buffer per call costs more than a small call's
        kernel. Kept ones are zeroed again only for ragged calls, as on the cpu target (with
        full rows every step writes every row before anything reads it)."""
        plan = self.plans[direction]
        sizes, T, B = call.sizes, call.T, call.B
        key = (T, B, tuple(sorted(sizes.items())))
        if self._kept.get(direction, (None,))[0] != key:
            self._kept[direction] = (key, {})
        kept = self._kept[direction][1]
        handed_out = self._handed[direction]
        masked = masked_leaves(plan)

        def caller(argument, b, value, shape):
            ragged = call.lengths is not None and argument.buffer in masked
            return self._device_value(value, shape, writable=b.rows == Rows.STEP,
                                      lengths=lengths if ragged else None)

        def stacked(argument, members):
            kept[argument.name] = self._packed(members, kept.get(argument.name))
            return kept[argument.name]

        def own(argument, shape):
            arg = argument.name
            if arg in handed_out:
                return transfer.zeros(shape, self.dtype)
            if arg not in kept:
                kept[arg] = transfer.zeros(shape, self.dtype)
            elif call.lengths is not None:
                transfer.zero_fill(kept[arg])
            return kept[arg]

        arrays = bind(self.layouts[direction], bound, sizes, T, B, caller, stacked, own)
        return arrays

    # -- launching ------------------------------------------------------------------------------------
    def _launch(self, direction: str, arrays: dict, call, lengths, part: int = 0,
                chunks: int = 1, chunk_steps: int | None = None,
                schedule: str | None = None) -> None:
        """One launch of `direction`'s kernel; part, chunks and chunk_steps: its flags (a plan
        that runs as lanes: CudaPrinter.flags), the lanes flag from `schedule` (None: the
        call's)."""
        plan = self.plans[direction]
        schedule = plan.schedule(schedule or call.schedule)
        if schedule == SCAN and part == 0:
            self._scan(direction, arrays, call, lengths)
            return
        flags = ([int(schedule in (LANES, SCAN)), part, chunks,
                  call.T if chunk_steps is None else chunk_steps] if plan.lanes else [])
        args = [call.T, call.B, lengths[0], *flags, *(call.sizes[d] for d in self.cell.dims),
                *(arrays[a.name] for a in self.layouts[direction].arguments)]
        kernel = self._kernel(direction, args)
        if not self.simulator:
            kernel[self._grid(kernel), self.threads](*args)
            return
        # The simulator runs each GPU thread as a Python thread and polls them at every barrier;
        # with Python's default 5 ms switch interval the threads mostly wait for their turn
        # (measured: the lnlstm forward of the tests 10x faster at 0.1 ms).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, 1e-4))
        try:
            kernel[self._grid(kernel), self.threads](*args)
        finally:
            sys.setswitchinterval(interval)

    def _scan(self, direction: str, arrays: dict, call, lengths) -> None:
        """A call of `direction` as a scan (plan/scan.py): before the loop; the chunk step's
        kernel over every chunk at once (a grid thread per chunk, row and column); each chunk's
        start (transfer.scan_starts); the loop over every chunk at once, from its start, each
        chunk with step arrays of its own (rows k * B ...); the last chunk's carried values
        become the call's; after the loop. The chunks: chunks_of."""
        plan, T, B = self.plans[direction], call.T, call.B
        name = direction + CHUNKS
        chunk_plan = self.plans[name]
        chunks, steps = chunks_of(plan, T, B, call.sizes, self.simulator)
        self._launch(direction, arrays, call, lengths, part=1, schedule=LANES)
        own = {}
        starts = {ident(read): 1.0 if key.endswith(".A") else 0.0
                  for key, (read, _) in chunk_plan.carried.items()}
        for a in self.layouts[name].arguments:
            if a.step_rows(chunk_plan):
                own[a.name] = transfer.fill(a.shape(chunk_plan, call.sizes, T, chunks * B),
                                            starts.get(a.name, 0.0), self.dtype)
            else:   # what the direction's kernel computed before the loop, or reads
                own[a.name] = arrays[a.name]
        self._launch(name, own, call, lengths, chunks=chunks, chunk_steps=steps,
                     schedule=LANES)
        loop = dict(arrays)
        for a in self.layouts[direction].arguments:
            if a.step_rows(plan):
                loop[a.name] = transfer.zeros(a.shape(plan, call.sizes, T, chunks * B),
                                              self.dtype)
        for s, (read, _) in plan.carried.items():
            a = own[ident(chunk_plan.carried[f"{s}.A"][0])]
            b = own[ident(chunk_plan.carried[f"{s}.B"][0])]
            loop[ident(read)] = transfer.scan_starts(a, b, arrays[ident(read)], chunks,
                                                     plan.kind == "backward", self.dtype)
        self._launch(direction, loop, call, lengths, part=2, chunks=chunks, chunk_steps=steps,
                     schedule=LANES)
        last = chunks - 1 if plan.kind == "forward" else 0
        for read, _ in plan.carried.values():
            transfer.copy_into(arrays[ident(read)], loop[ident(read)][last * B:(last + 1) * B])
        self._launch(direction, arrays, call, lengths, part=3, schedule=LANES)

    def _kernel(self, direction: str, args):
        """The kernel specialized to these arguments' types; the first specialization compiles
        (logged: compile_log). The simulator compiles nothing."""
        dispatcher = getattr(self.module, direction)
        if self.simulator:
            return dispatcher.specialize(*args)
        key = (direction, tuple(dispatcher.typeof_pyval(a) for a in args))
        if key not in self._kernels:
            with compiling(self.cell.name, direction, self.dtype, "cuda"):
                self._kernels[key] = dispatcher.specialize(*args)
        return self._kernels[key]

    def _grid(self, kernel) -> int:
        """Blocks of a cooperative launch: all must be resident at once (grid.sync). Two per
        multiprocessor at most: more only wait at the grid barriers."""
        if self.simulator:
            return 1  # the simulator runs cooperative grids of one block
        if kernel not in self._blocks:
            compiled = next(iter(kernel.overloads.values()))
            resident = compiled.max_cooperative_grid_blocks(self.threads)
            if resident < 1:
                raise RuntimeError(f"cell {self.cell.name!r}: the generated kernel needs more "
                                   f"registers or shared memory than one multiprocessor has")
            sms = self.cuda.get_current_device().MULTIPROCESSOR_COUNT
            self._blocks[kernel] = min(resident, 2 * sms)
        return self._blocks[kernel]

    def _lengths(self, call) -> tuple:
        """(device lengths, host lengths or None) of a call."""
        host = (np.full(call.B, call.T, dtype=np.int64) if call.lengths is None
                else np.ascontiguousarray(call.lengths, dtype=np.int64))
        return self.cuda.to_device(host), call.lengths

    # -- results --------------------------------------------------------------------------------------
    def _whole(self, direction: str, arrays: dict, name: str, sizes):
        return whole(self.plans[direction], arrays, name, sizes, self.dtype)

    def _to_host(self, value) -> np.ndarray:
        if not device.is_device_array(value):
            return np.asarray(value, dtype=self.dtype)
        if not value.is_c_contiguous():
            value = transfer.copy(value, self.dtype)
        return value.copy_to_host()

    def _result(self, value, shape: tuple, call, lengths=None):
        """A result of `shape` in the caller's kind: numpy, or a fresh device array. `lengths`:
        zero every step past each row's length."""
        if call.device is None or not device.is_device_array(value) \
                or tuple(value.shape) != tuple(shape):
            host = np.array(np.broadcast_to(self._to_host(value), shape), dtype=self.dtype)
            if lengths is not None:
                host = mask_padding(host, lengths[1], call.T)
            return host if call.device is None else device.like(call.device,
                                                                 self.cuda.to_device(host))
        if lengths is not None and lengths[1] is not None:
            value = transfer.copy_rows(value, lengths[0], True, self.dtype)
        elif not value.is_c_contiguous():
            value = transfer.copy(value, self.dtype)
        return device.like(call.device, value)

    def _per_step(self, direction, arrays, name: str, call, lengths):
        """A per-step result as [T, B, width], zero past each row's length."""
        b = self.plans[direction].buffers[name]
        shape = buffer_shape(b, call.sizes, call.T, call.B)
        shape = shape if b.rows == Rows.ALL else (call.T, call.B, shape[-1] if shape else 1)
        return self._result(self._whole(direction, arrays, name, call.sizes), shape, call,
                            lengths)

    # -- the directions --------------------------------------------------------------------------------
    def forward(self, call, keep: bool = False):
        """(ys, final) or, with keep, (ys, final, tape); the tape stays on the device."""
        direction = "forward" if keep else "infer"
        plan = self.plans[direction]
        with self._lock:
            lengths = self._lengths(call)
            arrays = self._arrays(direction, forward_leaves(plan, call.params, call.xs,
                                                            call.state), call, lengths)
            self._launch(direction, arrays, call, lengths)
            out = next(iter(plan.results["output"].values()))
            ys = self._per_step(direction, arrays, out, call, lengths)
            final = {}
            for s in call.state:
                state = arrays[ident(plan.leaves["state"][s])]
                final[s] = self._result(state, tuple(state.shape), call)
            if not keep:
                return ys, final
            states = {s: arrays[ident(plan.leaves["state"][s]) + "_all"] for s in call.state}
            saved = {label: self._whole(direction, arrays, buf, call.sizes)
                     for label, buf in plan.results.get("saved", {}).items()}
            return ys, final, {"states": states, "saved": saved}

    def backward(self, call, tape, dys, dfinal):
        """(param grads, input grads, initial-state grads) of the call that made `tape`."""
        plan = self.plans["backward"]
        with self._lock:
            lengths = self._lengths(call)
            bound = backward_leaves(plan, tape, call.params, call.xs, dys, dfinal)
            arrays = self._arrays("backward", bound, call, lengths)
            self._launch("backward", arrays, call, lengths)
            dparams = {n: self._result(self._whole("backward", arrays, buf, call.sizes),
                                       tuple(call.params[n].shape), call)
                       for n, buf in plan.results["params"].items()}
            dxs = {n: self._per_step("backward", arrays, buf, call, lengths)
                   for n, buf in plan.results["x"].items()}
            dstate = {}
            for s in plan.carried:
                state = arrays[ident(plan.carried[s][0])]
                dstate[s] = self._result(state, tuple(state.shape), call)
            return dparams, dxs, dstate

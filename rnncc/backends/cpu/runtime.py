"""Compiling generated modules (with a disk cache) and calling them.

Numba cannot cache functions made by exec() from a string (numba issue 3501), so the generated
source is written to a real file in the cache directory, named by a hash of everything that
decides the compiled code: the source, the fastmath module it imports, and the versions of
rnncc, Numba and numpy. Numba's own cache (cache=True) keeps the machine code beside it, so a
second process loads a compiled cell instead of compiling it. RNNCC_CACHE_DIR moves the cache
(default ~/.cache/rnncc).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import numba
import numpy as np

from ...graph.ops import REGISTRY
from ...graph.ops.base import EvalContext, dim_size
from ...plan.interpret import backward_leaves, forward_leaves, mask_padding
from . import fastmath
from .codegen import generate, ident


def cache_dir() -> Path:
    path = Path(os.environ.get("RNNCC_CACHE_DIR", Path.home() / ".cache" / "rnncc"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fingerprint(source: str) -> str:
    from ... import __version__
    h = hashlib.sha256()
    for part in (source, Path(fastmath.__file__).read_text(), __version__, numba.__version__,
                 np.__version__):
        h.update(part.encode())
    return h.hexdigest()[:24]


def load(source: str):
    """Import generated `source` from its file in the cache (writing the file if new)."""
    key = _fingerprint(source)
    name = f"rnncc_cell_{key}"
    if name in sys.modules:
        return sys.modules[name]
    path = cache_dir() / f"{name}.py"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)  # atomic: another process may be writing the same file
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # never hand out a half-imported module
        raise
    return module


# Rows x widest dimension below which a kernel runs on the calling thread alone: waking Numba's
# threads for each kernel launch costs more than a small step's kernel takes (threshold set from
# the 2-core runs in bench/RESULTS.md: B=1 latency kept, B=64 faster; not tuned further).
PARALLEL_MIN_WORK = 4096


def kernel_threads(B: int, sizes: dict, available: int) -> int:
    """Threads for the kernels of one call: `available` (numba.get_num_threads(), all cores
    unless the caller lowered it) or one.

    Measured on 2 cores, lstm T=100, B=64, H=256 forward: kernels on 2 threads 61 ms against
    70 ms on one, provided OpenMP's idle threads sleep (OMP_WAIT_POLICY=PASSIVE, which rnncc
    sets unless told otherwise); with them spinning beside BLAS's, 92 ms."""
    work = B * max(sizes.values(), default=1)
    return available if work >= PARALLEL_MIN_WORK else 1


class Compiled:
    """A cell's plan compiled for one dtype: forward() and backward() over numpy arrays."""

    def __init__(self, cell, dtype):
        self.cell, self.dtype = cell, np.dtype(dtype)
        # forward keeps what backward reads; infer (forward-only calls) stores only the output.
        # Numba compiles each function at its first call, so an unused one costs nothing.
        self.plans = cell.compiled_plans()
        self.source, self.signatures = generate(self.plans, self.dtype, cell.dims)
        self.module = load(self.source)

    # -- arrays ---------------------------------------------------------------------------------------
    def _shape(self, b, sizes, T, B) -> tuple:
        per_row = tuple(dim_size(d, sizes) for d in b.shape)
        if b.rows == "none":
            return per_row
        per_row = per_row or (1,)
        return (B, *per_row) if b.rows == "B" else (T, B, *per_row)

    def packs(self) -> dict:
        """Packed parameter buffers of both directions: name -> the parameters it stacks (rows,
        in order). Forward and backward pack the same parameters alike under the same name."""
        packs = {}
        for plan in self.plans.values():
            for name, b in plan.buffers.items():
                if b.role == "packed":
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
        plan = self.plans[direction]
        key = (direction, T, B, tuple(sorted(sizes.items())))
        reused = workspace is not None and key in workspace
        arrays = workspace[key] if reused else {}
        for arg, what, spec in self.signatures[direction]:
            if what == "buffer" and spec in bound:
                b = plan.buffers[spec]
                shape = self._shape(b, sizes, T, B)
                value = bound[spec]
                if b.rows == "B":  # a carried state: the generated code writes it
                    value = np.broadcast_to(np.asarray(value, dtype=self.dtype), shape)
                    if reused:
                        np.copyto(arrays[arg], value)
                    else:
                        arrays[arg] = np.array(value, dtype=self.dtype)
                elif (isinstance(value, np.ndarray) and value.dtype == self.dtype
                      and value.shape == shape and value.flags.c_contiguous):
                    arrays[arg] = value  # read only: no copy
                else:
                    arrays[arg] = np.array(np.broadcast_to(np.asarray(value, dtype=self.dtype),
                                                           shape), dtype=self.dtype)
                continue
            if what == "buffer" and plan.buffers[spec].role == "packed":
                b = plan.buffers[spec]
                if packed is not None and spec in packed:
                    arrays[arg] = packed[spec]
                else:
                    arrays[arg] = np.ascontiguousarray(np.concatenate(
                        [bound[plan.leaves["param"][p]] for p in b.pack], axis=0),
                        dtype=self.dtype)
                continue
            if reused:
                if ragged:
                    arrays[arg].fill(0)
                continue
            if what == "buffer":
                shape = self._shape(plan.buffers[spec], sizes, T, B)
            elif what == "every_step":  # a "B" buffer's [T, B, ...] array
                shape = (T, *self._shape(plan.buffers[spec], sizes, T, B))
            else:
                rows, width = spec
                w = dim_size(width, sizes) if not isinstance(width, int) else width
                shape = {"B": (B, w), "T*B": (T * B, w), "none": (w,)}[rows]
            arrays[arg] = np.zeros(shape, dtype=self.dtype)
        if workspace is not None:
            workspace[key] = arrays
        return arrays

    def _run(self, direction: str, arrays: dict, sizes, T, B, lengths) -> None:
        lengths = (np.full(B, T, dtype=np.int64) if lengths is None
                   else np.ascontiguousarray(lengths, dtype=np.int64))
        fn = getattr(self.module, direction)
        previous = numba.get_num_threads()
        numba.set_num_threads(kernel_threads(B, sizes, previous))
        try:
            fn(T, B, lengths, *(sizes[d] for d in self.cell.dims),
               *(arrays[arg] for arg, _, _ in self.signatures[direction]))
        finally:
            numba.set_num_threads(previous)

    def _whole(self, direction: str, arrays: dict, name: str, sizes) -> np.ndarray:
        """A buffer's value for every step ([T, B, ...]), or its only value ("none" rows)."""
        plan = self.plans[direction]
        b = plan.buffers[name]
        every = ident(name) + "_all"
        if every in arrays:
            return arrays[every]
        if b.view_of is not None:
            return b.take(self._whole(direction, arrays, b.view_of, sizes),
                          plan.buffers[b.view_of], sizes)
        if b.role == "constant":  # a result that is a constant: the gradient of an unused input
            op, attrs = b.value
            return REGISTRY[op].evaluate([], attrs, EvalContext(sizes, self.dtype))
        return arrays[ident(name)]

    @staticmethod
    def _masked(plan, bound: dict, call) -> dict:
        """Inputs and dy zeroed past each row's length: the GEMMs over all T*B rows read them."""
        caller = [*plan.leaves["input"].values(), *(b for n, b in plan.leaves["grad"].items()
                                                    if n == "dy")]
        return {buf: mask_padding(v, call.lengths, call.T) if buf in caller else v
                for buf, v in bound.items()}

    # -- the directions --------------------------------------------------------------------------------
    def forward(self, call, keep: bool = False, workspace: dict | None = None,
                packed: dict | None = None):
        """(ys, final) or, with keep, (ys, final, tape). With a workspace (see _arrays) the
        tape's arrays live in it: valid until the next forward call with that workspace."""
        direction = "forward" if keep else "infer"
        plan = self.plans[direction]
        bound = self._masked(plan, forward_leaves(plan, call.params, call.xs, call.state), call)
        arrays = self._arrays(direction, bound, call.sizes, call.T, call.B,
                              call.lengths is not None, workspace, packed)
        self._run(direction, arrays, call.sizes, call.T, call.B, call.lengths)
        out = next(iter(plan.results["output"].values()))
        d_out = _width(plan.buffers[out], call.sizes)
        ys = mask_padding(np.array(np.broadcast_to(self._whole(direction, arrays, out, call.sizes),
                                            (call.T, call.B, d_out)), dtype=self.dtype),
                   call.lengths, call.T)
        final = {s: arrays[ident(plan.leaves["state"][s])].copy() for s in call.state}
        if not keep:
            return ys, final
        states = {s: arrays[ident(plan.leaves["state"][s]) + "_all"] for s in call.state}
        saved = {label: np.ascontiguousarray(self._whole("forward", arrays, buf, call.sizes))
                 for label, buf in plan.results.get("saved", {}).items()}
        return ys, final, {"states": states, "saved": saved}

    def backward(self, call, tape, dys, dfinal, workspace: dict | None = None,
                 packed: dict | None = None):
        plan = self.plans["backward"]
        bound = self._masked(
            plan, backward_leaves(plan, tape, call.params, call.xs, dys, dfinal), call)
        arrays = self._arrays("backward", bound, call.sizes, call.T, call.B,
                              call.lengths is not None, workspace, packed)
        self._run("backward", arrays, call.sizes, call.T, call.B, call.lengths)
        dparams = {n: np.array(np.broadcast_to(self._whole("backward", arrays, buf, call.sizes),
                                               call.params[n].shape), dtype=self.dtype)
                   for n, buf in plan.results["params"].items()}
        dxs = {}
        for n, buf in plan.results["x"].items():
            full = np.broadcast_to(self._whole("backward", arrays, buf, call.sizes),
                                   call.xs[n].shape)
            dxs[n] = mask_padding(np.array(full, dtype=self.dtype), call.lengths, call.T)
        dstate = {s: arrays[ident(plan.carried[s][0])].copy() for s in plan.carried}
        return dparams, dxs, dstate


def _width(b, sizes) -> int:
    return dim_size(b.shape[-1], sizes) if b.shape else 1

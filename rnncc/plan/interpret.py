"""The Plan interpreter: numpy executes a Plan step by step.

It checks the plan (every backend executes the same plan), not speed: each GEMM and each kernel op
is numpy's, and it must agree with the reference interpreter of the unoptimized graph. With
`lengths`, a step computes only the rows still running, like the reference backend, and the
phases over "all T*B rows" run over the rows that exist (each row's first lengths[b] steps),
gathered as packed sequences are; so no padding, and nothing computed from it, reaches a result.
"""
from __future__ import annotations

import numpy as np

from ..ops import REGISTRY
from ..ops.base import EvalContext, dim_size
from .plan import Buffer, GraphPlan, Role, Rows


class _Executor:
    def __init__(self, plan: GraphPlan, sizes: dict, dtype, T: int, B: int, lengths=None):
        self.plan, self.sizes, self.dtype, self.T, self.B = plan, sizes, dtype, T, B
        # the (t, b) rows that exist, for the phases over all rows; None: all of them
        self.valid = None if lengths is None else np.arange(T)[:, None] < lengths[None, :]
        self.ctx = EvalContext(sizes, dtype)
        self.arrays: dict[str, np.ndarray] = {}   # NONE and ALL buffers, stored copies
        self.carried: dict[str, np.ndarray] = {}  # STEP buffers read from the previous step

    def shape(self, b: Buffer) -> tuple:
        per_row = tuple(dim_size(d, self.sizes) for d in b.shape)
        if not per_row and b.rows != Rows.NONE:
            per_row = (1,)  # a per-row scalar is kept as [..., 1], as numpy evaluation has it
        return {Rows.NONE: (), Rows.STEP: (self.B,), Rows.ALL: (self.T, self.B)}[b.rows] + per_row

    def zeros(self, name: str) -> np.ndarray:
        b = self.plan.buffers[name]
        shape = self.shape(b) if b.rows != Rows.STEP else (self.T, self.B) + self.shape(b)[1:]
        return np.zeros(shape, dtype=self.dtype)

    def bind(self, name: str, value) -> None:
        b = self.plan.buffers[name]
        if b.rows == Rows.STEP:
            self.carried[name] = np.array(np.broadcast_to(value, self.shape(b)), dtype=self.dtype)
        else:
            self.arrays[name] = np.asarray(value, dtype=self.dtype)

    def prepare(self) -> None:
        """Packed parameters, constants, and zeroed stores, before anything runs."""
        for name, b in self.plan.buffers.items():
            if b.role == Role.PACKED:
                self.arrays[name] = np.concatenate([self.arrays[p] for p in b.pack], axis=0)
            elif b.role == Role.CONSTANT:
                op, attrs = b.value
                self.arrays[name] = REGISTRY[op].evaluate([], attrs, self.ctx)
            elif b.stored and name not in self.arrays:
                self.arrays[name] = self.zeros(name)
        # results wanted for every step that no step stores (a carried leaf, a view of one)
        self.capture = {name: self.zeros(name) for name in self.plan.per_step_results
                        if self.plan.buffers[name].rows == Rows.STEP
                        and not self.plan.buffers[name].stored}

    # -- reading and writing -----------------------------------------------------------------------
    def read(self, name: str, local: dict, t=None, rows=None):
        if name in local:
            return local[name]
        b = self.plan.buffers[name]
        if b.view_of is not None:
            return b.take(self.read(b.view_of, local, t, rows), self.plan.buffers[b.view_of],
                          self.sizes)
        if b.rows == Rows.STEP:
            if t is None and b.stored:  # after the loop: every step's value
                return self.arrays[name] if self.valid is None else self.arrays[name][self.valid]
            if name in self.carried:
                return self.carried[name][rows]
            raise KeyError(f"buffer {name} is read before it is written")
        value = self.arrays[name]
        if b.rows == Rows.ALL:
            if t is not None:
                return value[t][rows]
            if self.valid is not None:
                return value[self.valid]
        return value

    def write(self, name: str, value, local: dict, t=None, rows=None) -> None:
        b = self.plan.buffers[name]
        if t is not None and b.rows == Rows.STEP:
            local[name] = value
            if b.stored:
                self.arrays[name][t][rows] = value
        elif b.rows == Rows.ALL:
            if self.valid is None:
                self.arrays[name] = np.array(np.broadcast_to(value, self.shape(b)),
                                             dtype=self.dtype)
            else:
                full = np.zeros(self.shape(b), dtype=self.dtype)
                full[self.valid] = np.broadcast_to(value, full[self.valid].shape)
                self.arrays[name] = full
        else:
            self.arrays[name] = np.asarray(value, dtype=self.dtype)

    # -- steps ---------------------------------------------------------------------------------------
    def run(self, steps, local: dict, t=None, rows=None) -> None:
        for step in steps:
            if step.kind == "gemm":
                args = [self.read(step.a, local, t, rows), self.read(step.b, local, t, rows)]
                value = REGISTRY[step.op].evaluate(args, {}, self.ctx)
                if step.accumulate:
                    value = self.read(step.accumulate, local, t, rows) + value
                self.write(step.out, value, local, t, rows)
                continue
            values: dict[str, np.ndarray] = {}
            for op in step.ops:
                args = [values[a] if a in values else self.read(a, local, t, rows)
                        for a in op.args]
                values[op.out] = REGISTRY[op.op].evaluate(args, op.attrs, self.ctx)
            for out in step.outputs:
                self.write(out, values[out], local, t, rows)

    def loop(self, lengths, reverse: bool, on_step=None) -> None:
        steps = self.plan.phases["per_step"]
        order = range(self.T - 1, -1, -1) if reverse else range(self.T)
        for t in order:
            rows = slice(None)
            if lengths is not None:
                alive = np.flatnonzero(t < lengths)
                rows = slice(None) if alive.size == self.B else alive
            if on_step is not None:
                on_step(t)
            local: dict = {}
            self.run(steps, local, t, rows)
            for name, store in self.capture.items():
                store[t][rows] = self.read(name, local, t, rows)
            new = {}
            for state, (read, written) in self.plan.carried.items():
                value = self.read(written, local, t, rows)
                n = self.B if isinstance(rows, slice) else rows.size
                updated = self.carried[read].copy()
                updated[rows] = np.broadcast_to(value, (n, *updated.shape[1:]))
                new[read] = updated
            self.carried.update(new)


def mask_padding(array: np.ndarray, lengths, T: int) -> np.ndarray:
    """Zero every position [t, b] past row b's length (a copy; None: the array itself)."""
    if lengths is None:
        return array
    alive = (np.arange(T)[:, None] < lengths[None, :])
    return np.where(alive.reshape(alive.shape + (1,) * (array.ndim - 2)), array, 0)


def forward_leaves(plan: GraphPlan, params: dict, xs: dict, state: dict) -> dict:
    """buffer -> value for every leaf a forward plan reads."""
    bound = {buf: params[n] for n, buf in plan.leaves["param"].items()}
    bound.update({buf: xs[n] for n, buf in plan.leaves["input"].items()})
    bound.update({buf: state[n] for n, buf in plan.leaves["state"].items()})
    return bound


def backward_leaves(plan: GraphPlan, tape: dict, params: dict, xs: dict, dys,
                    dfinal: dict) -> dict:
    """buffer -> value for every leaf a backward plan reads."""
    bound = {buf: params[n] for n, buf in plan.leaves["param"].items()}
    bound.update({buf: xs[n] for n, buf in plan.leaves["input"].items()})
    bound.update({buf: tape["states"][n] for n, buf in plan.leaves["state"].items()})
    bound.update({buf: tape["saved"][n] for n, buf in plan.leaves["saved"].items()})
    dy = plan.leaves["grad"]["dy"]
    bound[dy] = dys if plan.buffers[dy].shape else dys[..., :1]  # a scalar output: [T, B, 1]
    bound.update({read: dfinal[s] for s, (read, _) in plan.carried.items()})
    return bound


def _executor(plan: GraphPlan, bound: dict, xs: dict, lengths, sizes: dict,
              dtype) -> _Executor:
    T, B = next(iter(xs.values())).shape[:2]
    ex = _Executor(plan, sizes, dtype, T, B, lengths)
    for buf, value in bound.items():
        ex.bind(buf, value)
    ex.prepare()
    return ex


def run_forward(plan: GraphPlan, params: dict, xs: dict, state: dict, lengths,
                sizes: dict, dtype, keep: bool = False):
    """Execute a forward plan. Returns (ys, final) or, with keep=True, (ys, final, tape): the
    tape holds what the backward plan reads (state trajectory and saved values)."""
    ex = _executor(plan, forward_leaves(plan, params, xs, state), xs, lengths, sizes, dtype)
    T, B = ex.T, ex.B
    ex.run(plan.phases["before_loop"], {})
    trajectory = {s: np.zeros((T, B, *v.shape[1:]), dtype) for s, v in state.items()}

    def record(t):
        for s, buf in plan.leaves["state"].items():
            trajectory[s][t] = ex.carried[buf]

    ex.loop(lengths, reverse=False, on_step=record if keep else None)
    ex.run(plan.phases["after_loop"], {})
    out_name = next(iter(plan.results["output"].values()))
    ys = mask_padding(_full(ex, out_name), lengths, T)
    final = {s: ex.carried[plan.leaves["state"][s]] for s in plan.leaves["state"]}
    if not keep:
        return ys, final
    saved = {label: _full(ex, buf) for label, buf in plan.results.get("saved", {}).items()}
    return ys, final, {"states": trajectory, "saved": saved}


def _whole(ex: _Executor, name: str) -> np.ndarray:
    """A buffer's value for every step: [T, B, ...], or without rows for a buffer without rows."""
    b = ex.plan.buffers[name]
    if name in ex.capture:
        return ex.capture[name]
    if b.view_of is not None:
        return b.take(_whole(ex, b.view_of), ex.plan.buffers[b.view_of], ex.sizes)
    return ex.arrays[name]


def _full(ex: _Executor, name: str) -> np.ndarray:
    """A per-step result as [T, B, d] (a per-row scalar as [T, B, 1])."""
    b = ex.plan.buffers[name]
    shape = (ex.T, ex.B, *(dim_size(d, ex.sizes) for d in b.shape)) if b.shape else (ex.T, ex.B, 1)
    return np.array(np.broadcast_to(_whole(ex, name), shape), dtype=ex.dtype)


def run_backward(plan: GraphPlan, tape: dict, params: dict, xs: dict, dys,
                 dfinal: dict, lengths, sizes: dict, dtype):
    """Execute a backward plan: (parameter gradients, input gradients, initial-state gradients)."""
    ex = _executor(plan, backward_leaves(plan, tape, params, xs, dys, dfinal), xs, lengths,
                   sizes, dtype)
    ex.run(plan.phases["before_loop"], {})
    ex.loop(lengths, reverse=True)
    ex.run(plan.phases["after_loop"], {})
    dparams = {name: np.array(np.broadcast_to(ex.read(buf, {}), params[name].shape), dtype=dtype)
               for name, buf in plan.results["params"].items()}
    dxs = {name: mask_padding(_full(ex, buf), lengths, ex.T)
           for name, buf in plan.results["x"].items()}
    dstate = {s: ex.carried[plan.carried[s][0]] for s in plan.carried}
    return dparams, dxs, dstate

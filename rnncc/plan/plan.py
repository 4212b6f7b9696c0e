"""The Plan: what a backend executes, target-neutral.

A GraphPlan holds one step graph's schedule: the buffers and, per phase, the ordered steps:

    before_loop  once, over all T*B rows (parameter-only work first, over no rows)
    per_step     for each time step (forward t = 0..T-1, backward t = T-1..0), over B rows
    after_loop   once, over all T*B rows

A step is a GEMM (matrix product of two buffers, optionally accumulating onto a third) or a fused
kernel (an ordered list of elementwise ops, row reductions, batch sums and concats, reading and
writing buffers). Buffers have a shape per row and Rows:
    NONE   ("none")  no rows: parameters, packed (stacked) parameters, parameter gradients
    STEP   ("B")     one step's rows; `stored` ones are also kept for every step ([T, B, ...])
    ALL    ("T*B")   every step's rows: inputs, hoisted products, values computed after the loop
A view is a block of another buffer (a gate's part of a stacked product); a packed buffer is
parameters stacked once (the layer keeps it and re-packs only when a parameter changes).

A GraphPlan also records its recurrence (passes/recurrence.py: matrix, elementwise, linear) and
the schedules its time loop can run in:
    step    the loop over time outside, each step's rows inside (every plan)
    lanes   a plan whose step is all fused kernels over independent rows: each lane (a batch row,
            or a block of its columns where every op of the step works column by column) runs
            the whole time loop on its own, the lanes spread over threads, no barrier per step
    scan    a `linear` plan that runs as lanes: time cut into chunks, each chunk's steps run
            at once on its own thread from its start value, which a chunk step (`chunks`, a
            GraphPlan of its own: plan/scan.py) finds first, all chunks at once

How each buffer is stored, which arrays a generated function takes and how a kernel's ops group
into loops are decided from a GraphPlan by layout.py, per target.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum


class Rows(str, Enum):
    """How many rows a buffer has (its value per row is its shape)."""
    NONE = "none"
    STEP = "B"
    ALL = "T*B"

    def __str__(self) -> str:
        return self.value


class Role(str, Enum):
    """What a buffer holds."""
    INPUT = "input"
    STATE = "state"
    PARAM = "param"
    GRAD = "grad"          # an upstream gradient (backward)
    SAVED = "saved"        # a forward value backward reads
    PACKED = "packed"      # parameters stacked once
    VIEW = "view"          # a block of another buffer
    TEMP = "temp"          # computed by a step
    CONSTANT = "constant"  # a value every element of which is one number (zeros, a constant)

    def __str__(self) -> str:
        return self.value

from ..ops import Stacked
from ..ops.base import part_offsets


def dims_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass
class Buffer:
    name: str
    shape: tuple               # per row
    rows: Rows
    role: Role
    stored: bool = False       # a STEP buffer also kept for every step
    view_of: str | None = None
    index: int | None = None   # the part, for a view
    axis: str = ""             # "cols" (part of a vector) or "rows" (row block of a matrix)
    pack: tuple = ()           # the parameters a packed buffer stacks
    value: tuple = ()          # (op, attrs) of a constant buffer

    def take(self, parent_value, parent: "Buffer", sizes: dict):
        """This view's block of its parent's value (rows of a matrix, or columns per row)."""
        axis = 0 if self.axis == "rows" else -1
        start, stop = part_offsets(parent.shape[axis], sizes)[self.index]
        if self.axis == "rows":
            return parent_value[start:stop]
        # an explicit index, not `...`: a GPU array (the cuda target's) takes it too
        return parent_value[(slice(None),) * (parent_value.ndim - 1) + (slice(start, stop),)]

    def describe(self) -> str:
        rows = {"none": "", "B": "B, ", "T*B": "T*B, "}[self.rows]
        return f"{self.name}[{rows}{', '.join(str(d) for d in self.shape)}]"

    def to_json(self) -> dict:
        doc = {"name": self.name, "shape": [str(d) for d in self.shape], "rows": str(self.rows),
               "role": str(self.role)}
        if self.stored:
            doc["stored"] = True
        if self.view_of:
            doc.update(view_of=self.view_of, index=self.index, axis=self.axis)
        if self.pack:
            doc["pack"] = list(self.pack)
        return doc


@dataclass
class Op:
    """One op of a fused kernel: out = op(args), args naming buffers or earlier ops' values."""
    out: str
    op: str
    args: tuple
    attrs: dict = field(default_factory=dict)
    shape: tuple = ()          # of its value, per row
    per_row: bool = True       # False: one value for all rows (a batch sum, a constant)

    def text(self) -> str:
        attrs = "".join(f" {k}={v}" for k, v in self.attrs.items() if k != "stacked")
        if self.op == "const":
            return f"{self.out} = {self.attrs['value']:g}"
        return f"{self.out} = {self.op}({', '.join(self.args)}){attrs}"


@dataclass
class Gemm:
    op: str                    # matmul (A v per row), matmul_t (A^T g per row), outer_sum
    out: str
    a: str
    b: str
    rows: str
    shape: tuple               # ((M, K), (K, N)): the product as [M, K] x [K, N]
    accumulate: str | None = None   # out = accumulate + product
    kind: str = "gemm"

    def text(self) -> str:
        (m, k), (_, n) = self.shape
        product = {"matmul": f"{self.b} @ {self.a}^T", "matmul_t": f"{self.b} @ {self.a}",
                   "outer_sum": f"{self.a}^T @ {self.b}"}[self.op]
        acc = f"{self.accumulate} + " if self.accumulate else ""
        return f"gemm    {self.out} = {acc}{product}    [{m}, {k}] x [{k}, {n}]"

    def to_json(self) -> dict:
        return {"kind": "gemm", "op": self.op, "out": self.out, "a": self.a, "b": self.b,
                "accumulate": self.accumulate, "rows": self.rows,
                "shape": [[str(d) for d in part] for part in self.shape]}


@dataclass
class Kernel:
    rows: str
    width: tuple               # the dimension of its widest vector
    ops: list
    inputs: list
    outputs: list
    saves: list = field(default_factory=list)   # outputs forward keeps for backward
    kind: str = "kernel"

    def text(self) -> list:
        head = (f"kernel  over [{self.rows}, {', '.join(str(d) for d in self.width)}]: "
                f"{len(self.ops)} ops; reads {', '.join(self.inputs) or 'nothing'}; "
                f"writes {', '.join(self.outputs)}")
        lines = [head]
        if self.saves:
            lines.append(f"          saves for backward: {', '.join(self.saves)}")
        lines.extend(f"          {op.text()}" for op in self.ops)
        return lines

    def to_json(self) -> dict:
        return {"kind": "kernel", "rows": self.rows,
                "shape": [self.rows, *(str(d) for d in self.width)],
                "inputs": self.inputs, "outputs": self.outputs, "saves": self.saves,
                "ops": [{"out": o.out, "op": o.op, "args": list(o.args),
                         "attrs": {k: (str(v) if isinstance(v, Stacked) else v)
                                   for k, v in o.attrs.items()}} for o in self.ops]}


PHASES = ("before_loop", "per_step", "after_loop")

# The schedules of a plan's time loop (see the module docstring); LANES_* say what a lane is.
STEP, LANES, SCAN = "step", "lanes", "scan"
SCHEDULES = (STEP, LANES, SCAN)
LANES_ROWS, LANES_COLUMNS = "rows", "columns"


@dataclass
class GraphPlan:
    kind: str                                    # "forward" | "backward"
    buffers: dict                                # name -> Buffer
    phases: dict                                 # phase -> list of steps
    leaves: dict                                 # leaf kind -> {name: buffer}
    results: dict                                # result group -> {name: buffer}
    carried: dict                                # state -> (buffer read, buffer written)
    per_step_results: list = field(default_factory=list)  # results kept for every step
    recurrence: str = "matrix"                   # passes/recurrence.py's kind
    recurrence_reason: str = ""                  # why it is not the next kind down
    # what a lane is, where the plan can run as lanes: "rows" (batch rows) or "columns" (a
    # block of a row's columns: every op of the step works column by column over one width,
    # lane_width); None: the step schedule only
    lanes: str | None = None
    lane_width: object = None
    # the scan schedule's chunk step (plan/scan.py), where the plan has one
    chunks: "GraphPlan | None" = None

    @property
    def schedules(self) -> tuple:
        """The schedules this plan's time loop can run in, the preferred one first (the scan
        where a call has fewer lanes than threads: the runtime's choice, by the call's sizes)."""
        if self.chunks is not None:
            return (LANES, SCAN, STEP)
        return (LANES, STEP) if self.lanes else (STEP,)

    def schedule(self, asked: str | None) -> str:
        """The schedule a call runs: the one asked for (a cell's calls are checked against its
        schedules: runtime/arguments.py), else the preferred one."""
        return asked or self.schedules[0]

    def steps(self, phase: str, kind: str | None = None) -> list:
        return [s for s in self.phases[phase] if kind is None or s.kind == kind]

    def text(self) -> str:
        direction = "t = 0 .. T-1" if self.kind == "forward" else "t = T-1 .. 0"
        lines = [f"{self.kind}:"]
        why = f" ({self.recurrence_reason})" if self.recurrence_reason else ""
        lines.append(f"  recurrence: {self.recurrence}{why}")
        lanes = {LANES_ROWS: "lanes (one per batch row)",
                 LANES_COLUMNS: "lanes (batch rows x column blocks)"}
        lines.append("  schedules: " + ", ".join(lanes.get(self.lanes, s) if s == LANES else s
                                                  for s in self.schedules))
        packed = [b for b in self.buffers.values() if b.role == Role.PACKED]
        if packed:
            lines.append("  packed once: " + "; ".join(
                f"{b.describe()} = stack({', '.join(b.pack)})" for b in packed))
        titles = {"before_loop": "before the loop (all T*B rows at once)",
                  "per_step": f"per step, {direction} (B rows)",
                  "after_loop": "after the loop (all T*B rows at once)"}
        for phase in PHASES:
            steps = self.phases[phase]
            lines.append(f"  {titles[phase]}:" + ("" if steps else " nothing"))
            for step in steps:
                out = step.text()
                lines.extend("    " + line for line in (out if isinstance(out, list) else [out]))
        carried = ", ".join(f"{r} -> {w}" for r, w in self.carried.values())
        lines.append(f"  carried from step to step: {carried}")
        stored = [b.name for b in self.buffers.values() if b.stored]
        if stored:
            lines.append(f"  kept for every step: {', '.join(stored)}")
        for group, named in self.results.items():
            lines.append(f"  result {group}: " + ", ".join(f"{k} = {v}" for k, v in named.items()))
        if self.chunks is not None:
            lines.append("  scan, per chunk of steps, from A = 1, B = 0 (the chunk's carried "
                         "values end at A * s + B in their start s):")
            for step in self.chunks.phases["per_step"]:
                lines.extend("    " + line for line in step.text())
            lines.append("    carried: " + ", ".join(f"{r} -> {w}"
                                                     for r, w in self.chunks.carried.values()))
        return "\n".join(lines)

    def to_json(self) -> dict:
        doc = {"recurrence": self.recurrence, "schedules": list(self.schedules)}
        if self.lanes:
            doc["lanes"] = self.lanes
        doc.update({phase: [s.to_json() for s in self.phases[phase]] for phase in PHASES})
        doc["buffers"] = [b.to_json() for b in self.buffers.values()]
        doc["results"] = self.results
        doc["carried"] = {s: list(rw) for s, rw in self.carried.items()}
        if self.chunks is not None:
            doc["scan"] = {"per_step": [s.to_json() for s in self.chunks.phases["per_step"]],
                           "buffers": [b.to_json() for b in self.chunks.buffers.values()],
                           "carried": {s: list(rw) for s, rw in self.chunks.carried.items()}}
        return doc


@dataclass
class Plan:
    cell: str
    forward: GraphPlan
    backward: GraphPlan

    def text(self) -> str:
        return f"plan {self.cell}\n{self.forward.text()}\n{self.backward.text()}\n"

    def json(self) -> str:
        return json.dumps({"cell": self.cell, "forward": self.forward.to_json(),
                           "backward": self.backward.to_json()}, indent=2) + "\n"

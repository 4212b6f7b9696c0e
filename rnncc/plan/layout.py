"""Layout: the last decisions before printing, made once per GraphPlan and target.

The Plan says what runs (buffers, GEMMs, fused kernels, per phase). The layout says how it is
stored and looped, so that a printer only prints:

- each buffer's storage: an array argument of its own, written once into its every-step array
  (a step's value kept for every step lives only in its [T, B, ...] array), a view of another
  buffer, or a constant printed where it is read;
- the generated function's arguments, in order (`Argument`): buffers, every-step arrays (stored
  buffers, the states' trajectory a training forward records, results no step stores that the
  loop copies out), kernel workspaces, and on targets that ask for them 2-D row aliases of the
  arrays a GEMM reads or writes over all rows;
- for each fused kernel, how its ops group into loops over a row's columns (consecutive
  elementwise ops of one width share a loop; reductions, concats and batch sums are loops of
  their own), which values are computed straight into their block of the concat that reads them,
  and where a value that crosses loops is kept (its output buffer, its concat, or a workspace);
- for each GEMM, its algorithm (a product of row blocks, a matrix times a vector without rows,
  or an outer product of row sums) and, where the target tiles, its tile;
- whether a training forward records the states, and whether the step's last kernel carries the
  state (on targets where the block that computed a row can).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from enum import Enum

from ..ops import REGISTRY, Stacked
from ..ops.base import dim_size
from .plan import PHASES, Buffer, Gemm, GraphPlan, Kernel, Role, Rows


_SPELLED = (("'", "_next"), ("@", "_at_"), ("^T", "T"), ("**", "_pow_"), ("+", "_plus_"),
            ("-", "_minus_"), ("*", "_times_"), ("/", "_over_"), (".", "_"))


@functools.lru_cache(maxsize=None)   # every call binds by it: a name's identifier, once
def ident(name: str) -> str:
    """The identifier of a buffer or value in generated code: c' is v_c_next, tanh(c') is
    v_tanh_c_next, W_i@x+U_i@h is v_W_i_at_x_plus_U_i_at_h."""
    text = name
    for sign, word in _SPELLED:
        text = text.replace(sign, word)
    text = re.sub(r"_+", "_", re.sub(r"\W", "_", text)).strip("_")
    return "v_" + text


@dataclass(frozen=True)
class Target:
    """What a target asks of the layout."""
    name: str
    row_aliases: bool = False      # GEMMs over all rows read [T*B, width] aliases (2-D arrays)
    carry_in_kernel: bool = False  # the block that computed a row carries it to the next step
    tiles: tuple = ()              # GEMM tiles by rows: ((Rows.ALL, "gemm"), (Rows.STEP, ...))
    batch_sums_first: bool = False  # after a kernel's rows, its batch sums run first, together


class Storage(Enum):
    ARGUMENT = "argument"          # an array argument of its own
    WRITTEN_ONCE = "written once"  # only its every-step array: step t writes block t, once
    VIEW = "view"                  # a block of another buffer
    CONSTANT = "constant"          # printed where it is read


class ArgKind(Enum):
    BUFFER = "buffer"          # a buffer's array: [*shape], [B, *shape] or [T, B, *shape]
    EVERY_STEP = "every step"  # a STEP buffer's [T, B, *shape] array
    WORKSPACE = "workspace"    # a kernel's array for a value that crosses loops
    ROWS = "rows"              # a 2-D [T*B, width] alias of another argument's array


@dataclass(frozen=True)
class Argument:
    name: str                  # the identifier in generated code
    kind: ArgKind
    buffer: str | None = None  # BUFFER, EVERY_STEP: the buffer; ROWS: the aliased argument
    rows: Rows = Rows.NONE     # WORKSPACE: its rows
    width: object = 1          # WORKSPACE: its columns (a dimension)

    def shape(self, plan: GraphPlan, sizes: dict, T: int, B: int) -> tuple:
        """The array's shape for a call (a per-row scalar has a width of 1)."""
        if self.kind == ArgKind.BUFFER:
            return buffer_shape(plan.buffers[self.buffer], sizes, T, B)
        if self.kind == ArgKind.EVERY_STEP:
            return (T, *buffer_shape(plan.buffers[self.buffer], sizes, T, B))
        w = dim_size(self.width, sizes)
        return {Rows.STEP: (B, w), Rows.ALL: (T * B, w), Rows.NONE: (w,)}[self.rows]

    def read_only(self, plan: GraphPlan) -> bool:
        """Whether a call only reads the array: a parameter, or parameters stacked once (what a
        compiler may pack once per call)."""
        return (self.kind == ArgKind.BUFFER
                and plan.buffers[self.buffer].role in (Role.PARAM, Role.PACKED))

    def step_rows(self, plan: GraphPlan) -> bool:
        """Whether the array is [B, ...] rows a step writes, kept for one step: a carried
        value, scratch, a kernel's per-step workspace (the scan gives each chunk its own)."""
        if self.kind == ArgKind.WORKSPACE:
            return self.rows == Rows.STEP
        return self.kind == ArgKind.BUFFER and plan.buffers[self.buffer].rows == Rows.STEP

    def time_axis(self, plan: GraphPlan) -> str | None:
        """How the array is indexed by time: "steps" (a leading T axis), "rows" (T*B rows,
        step-major) or None (not at all)."""
        if self.kind == ArgKind.EVERY_STEP:
            return "steps"
        if self.kind == ArgKind.BUFFER:
            return "steps" if plan.buffers[self.buffer].rows == Rows.ALL else None
        if self.kind == ArgKind.WORKSPACE:
            return "rows" if self.rows == Rows.ALL else None
        return None


def time_slice(array, axis: str | None, t0: int, t1: int, B: int):
    """Steps t0 .. t1-1 of an argument's array whose time axis (Argument.time_axis) is `axis`;
    the array itself where it has none."""
    if axis == "steps":
        return array[t0:t1]
    if axis == "rows":
        return array[t0 * B:t1 * B]
    return array


def buffer_shape(b: Buffer, sizes: dict, T: int, B: int) -> tuple:
    """A buffer's array: [*per row] (no rows), [B, *per row] or [T, B, *per row]; a per-row
    scalar has a width of 1."""
    per_row = tuple(dim_size(d, sizes) for d in b.shape)
    if b.rows == Rows.NONE:
        return per_row
    per_row = per_row or (1,)
    return (B, *per_row) if b.rows == Rows.STEP else (T, B, *per_row)


# -- kernels -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Columns:
    """Consecutive elementwise ops over one dimension: one loop over a row's columns."""
    width: object
    ops: tuple        # the ops' outputs, in order


@dataclass(frozen=True)
class Single:
    """An op printed on its own: a per-row scalar, a reduction, a part, a concat, a batch sum."""
    op: str


@dataclass(frozen=True)
class Kept:
    """Where a kernel value that crosses loops lives: its output buffer ("output"), the concat
    that reads it ("concat", computed straight into its block) or a workspace argument."""
    where: str        # "output" | "concat" | "workspace"
    array: str = ""   # the workspace argument, or the concat value


@dataclass
class KernelLayout:
    row_loops: list                 # Columns and Single, inside the loop over the kernel's rows
    after_loops: list               # Columns and Single after it: batch sums, what reads them
    into_concat: dict               # value -> (concat value, column offset of its block)
    kept: dict                      # value -> Kept


def _split_ops(step: Kernel) -> tuple[list, list]:
    """A kernel's ops done per row, and those done once after its rows (batch sums and what
    reads them); constants are printed where they are read."""
    ops = [op for op in step.ops if op.op not in ("const", "size")]
    return [op for op in ops if op.per_row], [op for op in ops if not op.per_row]


def offset_of(dim: Stacked, index: int) -> tuple:
    """The parts before part `index` of a stacked dimension (its block's column offset)."""
    return tuple(dim.parts[:index])


def _kernel_layout(step: Kernel, phase_rows: Rows, workspaces: dict,
                   target: Target) -> KernelLayout:
    ops = {op.out: op for op in step.ops}
    users: dict[str, list[str]] = {op.out: [] for op in step.ops}
    for op in step.ops:
        for a in op.args:
            if a in users:
                users[a].append(op.out)
    into_concat: dict = {}
    for op in step.ops:
        if op.op != "concat":
            continue
        for k, arg in enumerate(op.args):
            src = ops.get(arg)
            if (src is not None and users[arg] == [op.out] and op.args.count(arg) == 1
                    and arg not in step.outputs and src.per_row == op.per_row
                    and REGISTRY[src.op].scalar):
                into_concat[arg] = (op.out, offset_of(op.shape[-1], k))
    kept: dict = {}

    def keep(name: str) -> None:
        if name in kept:
            return
        if name in into_concat:
            keep(into_concat[name][0])
            kept[name] = Kept("concat", into_concat[name][0])
        elif name in step.outputs:
            kept[name] = Kept("output")
        else:
            op = ops[name]
            array = f"w_{ident(name)[2:]}"
            rows = (Rows.STEP if phase_rows == Rows.STEP else Rows.ALL) if op.per_row \
                else Rows.NONE
            workspaces[array] = (rows, op.shape[-1] if op.shape else 1)
            kept[name] = Kept("workspace", array)

    def crosses(name: str, group: set) -> bool:
        return name in step.outputs or any(u not in group for u in users[name])

    def loops(op_list: list) -> list:
        out, group = [], []

        def flush():
            if group:
                names = {op.out for op in group}
                for op in group:
                    if crosses(op.out, names):
                        keep(op.out)
                out.append(Columns(group[0].shape[-1], tuple(op.out for op in group)))
        for op in op_list:
            vector_elementwise = REGISTRY[op.op].scalar and op.shape
            if vector_elementwise and group and group[0].shape[-1] == op.shape[-1]:
                group.append(op)
                continue
            flush()
            group = [op] if vector_elementwise else []
            if not vector_elementwise:
                single(op)
                out.append(Single(op.out))
        flush()
        return out

    def single(op) -> None:
        if REGISTRY[op.op].scalar:     # a scalar per row: kept where the caller reads it
            if crosses(op.out, {op.out}) and op.out in step.outputs:
                keep(op.out)
        elif op.op in ("mean", "sum"):
            if op.out in step.outputs:
                keep(op.out)
        elif op.op == "part":           # otherwise read through its source
            if op.out in step.outputs or not op.per_row:
                keep(op.out)
        elif op.op in ("concat", "batch_sum"):
            keep(op.out)
        else:
            raise NotImplementedError(f"op {op.op} in a fused kernel")

    row_ops, after_ops = _split_ops(step)
    if step.rows == Rows.NONE:
        return KernelLayout([], loops(row_ops + after_ops), into_concat, kept)
    row_loops = loops(row_ops)
    if target.batch_sums_first:  # sums over every row wait for all rows; the rest for the sums
        sums = [op for op in after_ops if op.op == "batch_sum"]
        after_loops = loops(sums) + loops([op for op in after_ops if op.op != "batch_sum"])
    else:
        after_loops = loops(after_ops)
    return KernelLayout(row_loops, after_loops, into_concat, kept)


# -- GEMMs ----------------------------------------------------------------------------------------------

class Algorithm(Enum):
    GEMM = "gemm"                    # rows times a matrix: a product of 2-D blocks
    GEMV = "gemv"                    # a matrix times a vector without rows (parameter-only work)
    OUTER_OF_SUMS = "outer of sums"  # sum_r a_r^T b_r with one side the same for every row:
                                     # the outer product of the row sums


@dataclass(frozen=True)
class GemmLayout:
    algorithm: Algorithm
    tile: str | None = None   # the target's tile for it, where the target tiles


def _gemm_layout(step: Gemm, plan: GraphPlan, target: Target) -> GemmLayout:
    a, b = plan.buffers[step.a], plan.buffers[step.b]
    if step.op == "outer_sum" and Rows.NONE in (a.rows, b.rows):
        return GemmLayout(Algorithm.OUTER_OF_SUMS)
    if step.op != "outer_sum" and b.rows == Rows.NONE:
        return GemmLayout(Algorithm.GEMV)
    return GemmLayout(Algorithm.GEMM, dict(target.tiles).get(step.rows))


# -- the whole layout -------------------------------------------------------------------------------------

@dataclass
class Layout:
    plan: GraphPlan
    target: Target
    storage: dict              # buffer -> Storage
    arguments: list            # Argument, in the generated function's order
    kernels: dict              # (phase, index in the phase) -> KernelLayout
    gemms: dict                # (phase, index in the phase) -> GemmLayout
    records_states: bool       # a training forward keeps each step's starting state
    captured: list             # results wanted for every step that no step stores
    carry_in_kernel: bool      # the step's last kernel carries each row's state
    row_aliases: dict = field(default_factory=dict)   # ROWS argument -> the aliased argument
    _shapes: dict = field(default_factory=dict, repr=False, compare=False)

    def shapes(self, sizes: dict, T: int, B: int) -> dict:
        """Each argument's array shape for a call (Argument.shape), by argument name; computed
        once per call shape (a small call's binding was a tenth of its time)."""
        key = (T, B, tuple(sorted(sizes.items())))
        if key not in self._shapes:
            self._shapes[key] = {a.name: a.shape(self.plan, sizes, T, B)
                                 for a in self.arguments if a.kind != ArgKind.ROWS}
        return self._shapes[key]


def _storage(b: Buffer) -> Storage:
    if b.view_of is not None:
        return Storage.VIEW
    if b.role == Role.CONSTANT:
        return Storage.CONSTANT
    if b.rows == Rows.STEP and b.stored:
        return Storage.WRITTEN_ONCE
    return Storage.ARGUMENT


def _all_rows_array(plan: GraphPlan, name: str) -> str | None:
    """The argument holding every row of buffer `name` (for a view, its parent's)."""
    b = plan.buffers[name]
    if b.view_of is not None:
        return _all_rows_array(plan, b.view_of)
    if b.rows == Rows.ALL:
        return ident(name)
    if b.rows == Rows.STEP and b.stored:
        return ident(name) + "_all"
    return None


def layout(plan: GraphPlan, target: Target) -> Layout:
    storage = {name: _storage(b) for name, b in plan.buffers.items()}
    records_states = plan.kind == "forward" and "saved" in plan.results
    captured = [name for name in plan.per_step_results
                if plan.buffers[name].rows == Rows.STEP and not plan.buffers[name].stored]
    workspaces: dict = {}
    kernels, gemms = {}, {}
    phase_rows = {"before_loop": Rows.ALL, "per_step": Rows.STEP, "after_loop": Rows.ALL}
    row_aliases: dict = {}
    for phase in PHASES:
        for k, step in enumerate(plan.phases[phase]):
            if step.kind == "kernel":
                kernels[(phase, k)] = _kernel_layout(step, phase_rows[phase], workspaces,
                                                     target)
                continue
            gemms[(phase, k)] = _gemm_layout(step, plan, target)
            if target.row_aliases and phase != "per_step":
                operands = [step.a, step.b, step.out] + ([step.accumulate]
                                                         if step.accumulate else [])
                for name in operands:
                    array = _all_rows_array(plan, name)
                    if array is not None:
                        row_aliases.setdefault(f"{array}_rows", array)
    arguments = [Argument(ident(name), ArgKind.BUFFER, name) for name, b in plan.buffers.items()
                 if storage[name] == Storage.ARGUMENT]
    every = [name for name, b in plan.buffers.items() if b.stored and b.view_of is None]
    if records_states:
        every += [read for read, _ in plan.carried.values()]
    every += captured
    arguments += [Argument(ident(name) + "_all", ArgKind.EVERY_STEP, name)
                  for name in dict.fromkeys(every)]
    arguments += [Argument(name, ArgKind.WORKSPACE, rows=rows, width=width)
                  for name, (rows, width) in sorted(workspaces.items())]
    arguments += [Argument(alias, ArgKind.ROWS, array) for alias, array in row_aliases.items()]
    steps = plan.phases["per_step"]
    carry_in_kernel = (target.carry_in_kernel and bool(steps) and steps[-1].kind == "kernel"
                       and steps[-1].rows == Rows.STEP
                       and bool(_split_ops(steps[-1])[0]))
    return Layout(plan, target, storage, arguments, kernels, gemms, records_states, captured,
                  carry_in_kernel, row_aliases)

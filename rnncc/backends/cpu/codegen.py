"""Layout -> Numba source: one function per direction, the whole time loop inside it.

The printer decides nothing: phases, GEMMs, kernels and buffers come from the Plan, storage,
arguments, loop groups and GEMM algorithms from its Layout (rnncc/plan/layout.py). How it prints
them:

- a GEMM is np.dot into its output buffer (BLAS, on BLAS's threads), plus an in-place add when
  it accumulates; an outer product of row sums is np.outer of np.sum;
- a kernel is a loop over its rows, skipping rows past their length, and inside a row its loop
  groups in order: a group of elementwise ops is one inner loop over the row's 1-D views whose
  intermediates are scalars (LLVM vectorizes it: no libm, see fastmath.py);
- a kernel's rows are a prange loop; how many threads run it is the runtime's choice per call
  (runtime.kernel_threads): the GEMMs between kernels run on BLAS's threads. A function with
  kernels comes twice, parallel and serial (`forward_serial`), the latter for one thread;
- constants are typed in the run's dtype, so float32 code stays float32.

The generated module is plain text (readable; `rnncc show SPEC --stage cpu` prints it); its
function arguments are the dimension sizes, T, B, the row lengths and the layout's arguments.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from ...plan.layout import Algorithm, Layout, Target, ident, layout
from ...plan.plan import LANES_COLUMNS, Buffer, Gemm, Role, Rows
from ..printing import FunctionPrinter, KernelPrinter, dim_expr
from .elementary import EMITTERS
from .threads import SERIAL

TARGET = Target("cpu", carry_in_kernel=True)

# Numba's parallel=True also turns array expressions and slice assignments into parallel loops;
# inside the per-step loop that launched a parallel region per row copy (lstm forward 3x slower,
# measured). Only the kernels' explicit prange loops are parallel.
# Numba's options for every generated function: error_model="numpy" (Python's error model checks
# every division for zero, and that check stops vectorization) and the `contract` flag
# elementary.py's instructions carry: a multiply and an add may fuse.
CALLER_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}
PRANGE_ONLY = repr({option: False for option in ("comprehension", "reduction", "inplace_binop",
                                                 "setitem", "numpy", "stencil", "fusion")})


class CpuMath:
    """Math in a generated CPU module: rnncc's fastmath where it has the function (LLVM
    vectorizes it; see fastmath.py), numpy's sqrt, else Python's math module (libm)."""

    def __init__(self, dtype, const):
        self.fast = EMITTERS
        self.suffix = "32" if np.dtype(dtype) == np.float32 else "64"
        self.const = const
        self.used: set[str] = set()   # the fastmath functions the module imports

    def call(self, function: str, *args: str) -> str:
        if function in self.fast:
            self.used.add(function)
            return f"{function}{self.suffix}({', '.join(args)})"
        if function == "sqrt":
            return f"np.sqrt({', '.join(args)})"
        return f"math.{function}({', '.join(args)})"


class CpuPrinter(FunctionPrinter):
    def __init__(self, layout: Layout, dtype, dims: list[str]):
        super().__init__(layout, dtype, dims, CpuMath)
        self.taken: list = []   # the array arguments the printed function takes, in order

    # -- GEMMs -----------------------------------------------------------------------------------
    def matrix(self, b: Buffer, t: str | None) -> str:
        """A buffer as a 2-D array for np.dot: [rows, columns]."""
        array, offset = self.base(b, t)
        column_view = b.view_of is not None and b.axis == "cols"
        if column_view:
            array = f"{array}[..., {offset}:{offset} + {dim_expr(b.shape[-1])}]"
        if b.rows == Rows.NONE:
            return array
        rows_all = (b.rows == Rows.ALL or (b.rows == Rows.STEP and b.stored)) and t is None
        if rows_all:
            return f"{array}.reshape(T * B, {self.width(b)})" if not column_view else \
                f"np.ascontiguousarray({array}).reshape(T * B, {self.width(b)})"
        return array

    def operand(self, b: Buffer, t: str | None) -> str:
        """A buffer read by a GEMM. A gate's columns of a stacked product are strided rows;
        Numba's np.dot copies such an operand to contiguous memory anyway (and warns that it
        does): the copy is written out instead, once per step."""
        array = self.matrix(b, t)
        if b.view_of is not None and b.axis == "cols" and not array.startswith("np.ascontig"):
            return f"np.ascontiguousarray({array})"
        return array

    def flags(self) -> list[str]:
        """A backward function takes `inputs`: whether the caller wants the input gradients
        (the first layer of a model rarely does: its input is data), else their GEMMs are
        skipped. A plan that can run as lanes takes four more:
            lanes        0 runs the step schedule; n > 0 the lanes schedule with n lanes per
                         batch row (column blocks; 1 where a lane is a row)
            part         0 the whole call; 1 only what comes before the time loop, 2 only the
                         loop, 3 only what comes after it
            lane_first, lane_stride   the lanes loop runs lanes lane_first, lane_first +
                         lane_stride, ... of the B * lanes: the runtime runs a lanes call's loop
                         as several calls of part 2 on threads of its own (runtime.py), each
                         on its share of the lanes (the one-thread function, compiled by
                         rnncc's compiler: Numba's parallel loop over lanes vectorizes the
                         column blocks poorly)"""
        lanes = ["lanes", "part", "lane_first", "lane_stride"] if self.plan.lanes else []
        return (["inputs"] if self.skips_inputs else []) + lanes

    @property
    def skips_inputs(self) -> bool:
        return self.plan.kind == "backward"

    def gemm(self, step: Gemm, key, indent: int, t: str | None) -> None:
        if self.skips_inputs and step.out in self.plan.results["x"].values():
            self.emit(indent, "if inputs:")
            indent += 1
        b = self.plan.buffers
        a_buf, b_buf, out_buf = b[step.a], b[step.b], b[step.out]
        a, v, out = self.operand(a_buf, t), self.operand(b_buf, t), self.matrix(out_buf, t)
        algorithm = self.layout.gemms[key].algorithm
        if algorithm == Algorithm.OUTER_OF_SUMS:
            g = f"np.sum({a}, axis=0)" if a_buf.rows != Rows.NONE else a
            w = f"np.sum({v}, axis=0)" if b_buf.rows != Rows.NONE else v
            self.emit(indent, f"{out}[:, :] = np.outer({g}, {w})")
        else:  # GEMM and GEMV alike: np.dot takes a vector as it takes rows
            product = {"matmul": (v, f"{a}.T"), "matmul_t": (v, a),
                       "outer_sum": (f"{a}.T", v)}[step.op]
            self.emit(indent, f"np.dot({product[0]}, {product[1]}, {out})")
        if step.accumulate:  # np.add with out=: `out` may be a reshape, no assignment target
            self.emit(indent, f"np.add({out}, {self.matrix(b[step.accumulate], t)}, {out})")

    # -- the function ----------------------------------------------------------------------------
    def function(self, name: str) -> str:
        plan = self.plan
        body_start = len(self.lines)
        if plan.lanes:   # in parts (see flags)
            if plan.phases["before_loop"]:
                self.emit(1, "if part == 0 or part == 1:")
                for k, step in enumerate(plan.phases["before_loop"]):
                    self.step(step, ("before_loop", k), 2, None, "before")
            self.emit(1, "if (part == 0 or part == 2) and lanes == 0:")
            self.time_loop(2)
            self.emit(1, "if (part == 0 or part == 2) and lanes > 0:")
            self.lanes_loop(2)
            if plan.phases["after_loop"]:
                self.emit(1, "if part == 0 or part == 3:")
                for k, step in enumerate(plan.phases["after_loop"]):
                    self.step(step, ("after_loop", k), 2, None, "after")
        else:
            for k, step in enumerate(plan.phases["before_loop"]):
                self.step(step, ("before_loop", k), 1, None, "before")
            self.time_loop(1)
            for k, step in enumerate(plan.phases["after_loop"]):
                self.step(step, ("after_loop", k), 1, None, "after")
        body = self.lines[body_start:]
        del self.lines[body_start:]
        # Only the arrays the body names are parameters (the stacked products read W_ifgo, not
        # W_i ...: a third of an lstm backward's arrays went unused). Numba's cost of a
        # parameter grows faster than their number (every array is 7 to 11 machine arguments,
        # and the wrapper's call passes them all): 150 arrays cost 1.9 s to compile with an
        # empty body, 50 cost 0.3 s; an lstm's three functions 3.30 -> 3.15 s (measured).
        named = set(re.findall(r"\w+", "\n".join(body)))   # (one pass over the text)
        self.taken = [a for a in self.layout.arguments if a.name in named]
        options = ", ".join(f"{k}={v!r}" for k, v in CALLER_OPTIONS.items())
        signature = f"({self.arguments_text(self.taken)}):"
        options += ", pipeline_class=NoAliasCompiler"   # its arrays do not overlap: noalias.py
        serial = [f"@njit(cache=True, {options}, nogil=True)", f"def {name}{signature}"]
        if not any("prange(" in line for line in body):
            return "\n".join(serial + body)   # (parallel=... would find nothing to do, and warn)
        # The same body twice: a parallel function, and a serial one for calls whose kernels
        # run on the calling thread (outside parallel=True, prange is range). Launching a
        # parallel region costs 0.6 us even on one thread, per kernel and step: at B=1 that
        # was a quarter of an lstm's forward. Two functions, not one compiled twice: Numba's
        # cache keys a function's machine code by its source, not by its options.
        parallel = [f"@njit(cache=True, parallel={PRANGE_ONLY}, {options}, nogil=True)",
                    f"def {name}{signature}"]
        serial[1] = f"def {name}{SERIAL}{signature}"
        return "\n".join(parallel + body) + "\n\n\n" + "\n".join(serial + body)

    def time_loop(self, indent: int) -> None:
        """The step schedule: time outside, each step's rows inside (over threads)."""
        plan = self.plan
        reverse = plan.kind == "backward"
        self.emit(indent, "for s in range(T):")
        self.emit(indent + 1, f"t = {'T - 1 - s' if reverse else 's'}")
        steps = plan.phases["per_step"]
        last = len(steps) - 1
        # the carry in the last kernel's own loop over rows, where nothing follows it in the
        # step: row b's next state is its own (rows are independent), and the team then shares
        # out one loop, not two, per step (lstm T=100, B=64, H=256 inference: the second loop
        # and the wait for it were 1.6 ms of 41 on 2 Zen 4 cores). A training forward's record
        # of each step's starting state goes there too, ahead of the row's kernel (nothing
        # before it in the step writes a state), for the rows that run the step, as the lanes
        # schedule records them (the layout's carry_in_kernel, as on the cuda target; here the
        # row loop comes before a kernel's work after its rows, so only a kernel without any)
        merged = (self.layout.carry_in_kernel
                  and not self.layout.kernels[("per_step", last)].after_loops)
        if self.layout.records_states and not merged:   # the trajectory backward reads
            self.emit(indent + 1, "for b in prange(B):")
            self.record_row(indent + 2)
        for k, step in enumerate(steps):
            hooks = {}
            if merged and k == last:
                hooks["then"] = lambda ind: self.carry_row(ind, None)
                if self.layout.records_states:
                    hooks["before"] = self.record_row
            self.step(step, ("per_step", k), indent + 1, "t", "step", **hooks)
        if not merged:
            self.carry(indent + 1)

    def record_row(self, indent: int, lane: str | None = None) -> None:
        """Row b's state at the start of step t (its columns `lane`, where a lane is a column
        block), kept for backward (a training forward)."""
        for read, _ in self.plan.carried.values():
            self.copy(indent, f"{ident(read)}_all[t, b, j]", f"{ident(read)}[b, j]",
                      lane or self.width(self.plan.buffers[read]))

    def lanes_loop(self, indent: int) -> None:
        """The lanes schedule: each lane (a batch row, or one of a row's `lanes` column blocks)
        runs its whole time loop, to its row's length; this call runs lanes lane_first,
        lane_first + lane_stride, ... (prange: on Numba's threads in the threaded variant). A
        column block is a multiple of 16 columns (whole vectors) wide, the row's last one
        less."""
        plan = self.plan
        reverse = plan.kind == "backward"
        columns = plan.lanes == LANES_COLUMNS
        if columns:
            width = dim_expr(plan.lane_width)
            self.emit(indent, f"block = (({width} + lanes - 1) // lanes + 15) // 16 * 16")
            self.emit(indent, "for k in prange((B * lanes - lane_first + lane_stride - 1) "
                              "// lane_stride):")
            self.emit(indent + 1, "lane = lane_first + k * lane_stride")
            self.emit(indent + 1, "b = lane // lanes")
            self.emit(indent + 1, "j0 = (lane - b * lanes) * block")
            self.emit(indent + 1, "j1 = j0 + block")
            self.emit(indent + 1, f"if j1 > {width}:")
            self.emit(indent + 2, f"j1 = {width}")
        else:
            self.emit(indent, "for k in prange((B - lane_first + lane_stride - 1) "
                              "// lane_stride):")
            self.emit(indent + 1, "b = lane_first + k * lane_stride")
        self.emit(indent + 1, "for s in range(lengths[b]):")
        self.emit(indent + 2, f"t = {'lengths[b] - 1 - s' if reverse else 's'}")
        lane = "j0, j1" if columns else None
        if self.layout.records_states:
            self.record_row(indent + 2, lane)
        for k, step in enumerate(plan.phases["per_step"]):
            CpuKernel(self, step, self.layout.kernels[("per_step", k)], indent + 2, "t",
                      "step", lane=lane or "").print()
        self.carry_row(indent + 2, lane)

    def step(self, step, key, indent: int, t, phase: str, before=None, then=None) -> None:
        """A GEMM or a kernel; `before(indent)` and `then(indent)` print code for the row at
        the start and at the end of the kernel's loop over rows (a kernel that has one)."""
        if step.kind == "gemm":
            self.gemm(step, key, indent, t)
        else:
            CpuKernel(self, step, self.layout.kernels[key], indent, t, phase, before=before,
                      then=then).print()

    def carry(self, indent: int) -> None:
        """End of a step, for the rows that ran: results wanted for every step that no kernel
        stores are copied out (first: a carried state read this step is about to change), then
        each carried value becomes the next step's. Rows apart: a parallel loop (on the team,
        rnncc's compiled code: lstm T=100, B=64, H=256 inference 2-4 % faster than on the
        calling thread alone)."""
        self.emit(indent, "for b in prange(B):")
        self.emit(indent + 1, "if t < lengths[b]:")
        self.carry_row(indent + 2, None)

    def carry_row(self, indent: int, lane: str | None) -> None:
        """carry() for row b (its columns `lane`, "j0, j1", where a lane is a column block)."""
        for name in self.layout.captured:
            rb = self.plan.buffers[name]
            array, offset = self.base(rb, "t")
            self.copy(indent, f"{ident(name)}_all[t, b, j]",
                      f"{array}[b, {self.shifted(offset)}]", lane or self.width(rb))
        for read, written in self.plan.carried.values():
            wb = self.plan.buffers[written]
            target, width = f"{ident(read)}[b, j]", lane or self.width(wb)
            if wb.role == Role.CONSTANT:  # a state whose next value is a constant (zeros)
                self.copy(indent, target, self.constant(wb), width)
                continue
            array, offset = self.base(wb, "t")
            index = self.shifted(offset)
            src = f"{array}[{index}]" if wb.rows == Rows.NONE else f"{array}[b, {index}]"
            self.copy(indent, target, src, width)

    @staticmethod
    def shifted(offset: str) -> str:
        return "j" if offset == "0" else f"{offset} + j"

    def copy(self, indent: int, target: str, source: str, width: str) -> None:
        """A row copied element by element. A slice assignment (`a[b, :] = c[b, 0:w]`) means
        the same, but Numba types and lowers its general broadcasting setitem for it: measured
        2.4 of the 5.9 s an lstm's first cold forward took; a loop costs next to nothing."""
        self.emit(indent, f"for j in range({width}):")
        self.emit(indent + 1, f"{target} = {source}")


class CpuKernel(KernelPrinter):
    """One fused kernel on Numba's threads: its rows a prange loop, a row's columns a loop LLVM
    vectorizes over the row's 1-D views. In a lane (lanes schedule: `lane` is "" for a whole
    row, "j0, j1" for a block of its columns) the kernel is row b's alone: no loop over rows,
    and its column loops run over the lane's columns."""

    def __init__(self, *args, lane: str | None = None, before=None, then=None):
        super().__init__(*args)
        self.views: dict[str, str] = {}     # "array[row index]" -> its row view's local name
        self.in_rows = False
        self.lane = lane
        self.before, self.then = before, then   # printed for each row around it (step())

    def column_loop(self, width: str) -> str:
        return f"for j in range({self.lane or width}):"

    def row_element(self, array: str, index: str, col: str) -> str:
        """Inside the loop over rows, elements are read through the row's 1-D view, taken once
        per row: LLVM then sees unit-stride loops over a few base pointers and vectorizes them
        (indexing the 2-D/3-D arrays in the inner loop left it to runtime alias checks it
        gave up on: "too many memory checks needed")."""
        if not self.in_rows:
            return f"{array}[{index}, {col}]"
        key = f"{array}[{index}]"
        if key not in self.views:
            view = f"r_{array[2:] if array[1] == '_' else array}"
            while view in self.views.values():
                view += "_"
            self.views[key] = view
        return f"{self.views[key]}[{col}]"

    @contextmanager
    def row_views(self, indent: int):
        """Code printed inside is in a loop over rows: the row views it uses (row_element) are
        taken at its top, once per row."""
        first, outer = len(self.p.lines), self.views
        self.views, self.in_rows = {}, True
        try:
            yield
        finally:
            self.p.lines[first:first] = ["    " * indent + f"{view} = {key}"
                                         for key, view in self.views.items()]
            self.views, self.in_rows = outer, False

    def row_range(self, count: str) -> str:
        return f"prange({count})"  # all of them, over Numba's threads

    # an element a 1-D row view or vector gives: name[offset + j] or name[j]
    _ELEMENT = re.compile(r"^(\w+)\[(?:(.+) \+ )?j\]$")

    def single(self, op, indent: int) -> None:
        """A mean or sum over a row's columns is a call of fastmath's row_sum (a sum whose
        order may change, so it vectorizes), where the summed values are a stretch of one
        array; anything else as every target prints it."""
        if op.op in ("mean", "sum") and self.is_vector(op.args[0]):
            element = self._ELEMENT.match(self.value(op.args[0], "j", set()))
            if element is not None:
                array, offset = element.group(1), element.group(2) or "0"
                width = dim_expr(self.dim_of(op.args[0]))
                local = f"x_{ident(op.out)[2:]}"
                math = self.p.math
                math.used.add("row_sum")
                total = f"row_sum{math.suffix}({array}, {offset}, {width})"
                self.p.emit(indent, f"{local} = {total}" if op.op == "sum"
                            else f"{local} = {total} / dtype({width})")
                self.scalars.add(op.out)
                if op.out in self.stored:
                    self.store(op.out, None, local, indent)
                return
        super().single(op, indent)

    def print(self) -> None:
        ind, layout = self.indent, self.layout
        if self.lane is not None:   # row b's, whose length the lane checked
            with self.row_views(ind):
                self.print_loops(layout.row_loops, ind)
            return
        if layout.row_loops:
            self.open_row_loop(ind)
            if self.before is not None:
                self.before(ind + 2)
            with self.row_views(ind + 2):
                self.print_loops(layout.row_loops, ind + 2)
            if self.then is not None:
                self.then(ind + 2)
        self.print_loops(layout.after_loops, ind)

    def batch_sum(self, op, indent: int) -> None:
        """Row by row, so the reads stream through memory."""
        p = self.p
        (arg,) = op.args
        width = dim_expr(op.shape[-1])
        p.emit(indent, f"for j in range({width}):")
        self.store(op.out, "j", "ZERO", indent + 1)
        p.emit(indent, "for tt in range(T):")
        p.emit(indent + 1, "for b in range(B):")
        p.emit(indent + 2, "tb = tt * B + b")
        p.emit(indent + 2, "if tt < lengths[b]:")
        with self.row_views(indent + 3):
            p.emit(indent + 3, f"for j in range({width}):")
            p.emit(indent + 4, f"{self.stored_element(op.out, 'j')} += "
                               f"{self.value(arg, 'j', set())}")


class Generated(NamedTuple):
    """A generated module: its source and, per function, its Layout, the array arguments it
    takes in order (those of its Layout's arguments that its code uses; the runtime binds them
    all, results may live in any), and the flags it takes after the row lengths."""
    source: str
    layouts: dict
    arguments: dict
    flags: dict


def generate(plans: dict, dtype, dims: list[str]) -> Generated:
    """The module for GraphPlans {function name: plan}."""
    dtype = np.dtype(dtype)
    functions, layouts, taken, flags, consts, used = [], {}, {}, {}, {}, set()
    for name, plan in plans.items():
        layouts[name] = layout(plan, TARGET)
        printer = CpuPrinter(layouts[name], dtype, dims)
        printer.consts = consts
        functions.append(printer.function(name))
        taken[name], flags[name] = printer.taken, printer.flags()
        used |= printer.math.used
    suffix = printer.math.suffix
    head = [
        '"""Generated by rnncc from a cell\'s plan; do not edit (the cache regenerates it)."""',
        "import math",
        "",
        "import numpy as np",
        "from numba import njit, prange",
        *([f"from rnncc.backends.cpu.fastmath import "
           f"{', '.join(f'{f}{suffix}' for f in sorted(used))}"] if used else []),
        "from rnncc.backends.cpu.noalias import NoAliasCompiler",
        "",
        f"dtype = np.{dtype.name}",
        "ZERO, HALF, ONE = dtype(0.0), dtype(0.5), dtype(1.0)",
    ]
    head += [f"{c} = dtype({value!r})" for value, c in consts.items()]
    source = "\n".join(head + ["", ""] + ["\n\n\n".join(functions)]) + "\n"
    return Generated(source, layouts, taken, flags)

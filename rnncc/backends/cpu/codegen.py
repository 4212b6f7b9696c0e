"""Plan -> Numba source: one function per direction, the whole time loop inside it.

The code printer makes no decisions: phases, GEMMs, kernels and buffers come from the Plan.
What it chooses is only how to print them:

- a GEMM is np.dot into its output buffer (BLAS, on BLAS's threads), plus an in-place add when
  it accumulates;
- a kernel is a loop over its rows, skipping rows past their length, and inside a row its ops in
  order: consecutive elementwise ops over the same dimension share one inner loop over the row's
  1-D views whose intermediates are scalars (LLVM vectorizes it: no libm, see fastmath.py);
  reductions, concats and batch sums are loops of their own; a value that crosses loops is kept
  in a workspace array;
- a kernel's rows are a prange loop; how many threads run it is the runtime's choice per call
  (runtime.kernel_threads): the GEMMs between kernels run on BLAS's threads;
- constants are typed in the run's dtype, so float32 code stays float32.

The generated module is plain text (readable; `rnncc show SPEC --stage cpu` prints it); its
function arguments are the dimension sizes, T, B, the row lengths and every buffer as an array.
"""
from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np

from ...ops import REGISTRY, Stacked
from ...plan.plan import Buffer, Gemm, GraphPlan, Kernel
from .fastmath import CALLER_OPTIONS, FUNCTIONS


def scalar(op: str) -> bool:
    """Is op printed element by element (it has a scalar lowering rule)?"""
    return REGISTRY[op].scalar


class CpuMath:
    """Math in a generated CPU module: rnncc's fastmath where it has the function (LLVM
    vectorizes it; see fastmath.py), numpy's sqrt, else Python's math module (libm)."""

    def __init__(self, dtype, const):
        self.fast = FUNCTIONS[np.dtype(dtype)]
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


# Numba's parallel=True also turns array expressions and slice assignments into parallel loops;
# inside the per-step loop that launched a parallel region per row copy (lstm forward 3x slower,
# measured). Only the kernels' explicit prange loops are parallel.
PRANGE_ONLY = repr({option: False for option in ("comprehension", "reduction", "inplace_binop",
                                                 "setitem", "numpy", "stencil", "fusion")})


def ident(name: str) -> str:
    """A Python identifier for a buffer or value name."""
    text = (name.replace("'", "_new").replace("@", "_at_").replace("^T", "T")
            .replace("+", "_plus_").replace(".", "_"))
    return "v_" + re.sub(r"\W", "_", text)


def dim_expr(dim) -> str:
    if isinstance(dim, Stacked):
        return "(" + " + ".join(dim_expr(p) for p in dim.parts) + ")"
    return str(dim) if isinstance(dim, int) else f"d_{dim}"


def offset_expr(dim: Stacked, index: int) -> str:
    return " + ".join(dim_expr(p) for p in dim.parts[:index]) or "0"


class _Printer:
    MATH = CpuMath
    def __init__(self, plan: GraphPlan, dtype, dims: list[str]):
        self.plan, self.dims = plan, dims
        self.dtype = np.dtype(dtype)
        self.lines: list[str] = []
        self.consts: dict[float, str] = {}
        self.math = self.MATH(self.dtype, self.const)
        self.workspace: dict[str, tuple] = {}  # kernel-local arrays: name -> (rows, dim)
        self.captured: list[str] = []          # results copied per step by the loop itself

    # -- names and constants ----------------------------------------------------------------------
    def const(self, value: float) -> str:
        if value not in self.consts:
            self.consts[value] = f"C{len(self.consts)}"
        return self.consts[value]

    def arrays(self) -> list[tuple]:
        """The function's array arguments, as (argument, what, buffer or shape):
        ("buffer", name) every buffer that is not a view; ("every_step", name) the [T, B, ...]
        copy of a stored buffer, of a carried state (the forward trajectory) or of a result no
        step stores; ("workspace", (rows, width)) kernel-local arrays."""
        args = [(ident(b.name), "buffer", b.name) for b in self.plan.buffers.values()
                if b.view_of is None and b.role != "constant" and not self.write_once(b)]
        every = [b.name for b in self.plan.buffers.values() if b.stored and b.view_of is None]
        if self.records_states():
            every += [r for r, _ in self.plan.carried.values()]
        every += self.captured
        args += [(ident(name) + "_all", "every_step", name) for name in dict.fromkeys(every)]
        args += [(name, "workspace", spec) for name, spec in sorted(self.workspace.items())]
        return args

    def records_states(self) -> bool:
        """A training forward plan (one returning saved values) keeps every step's state."""
        return self.plan.kind == "forward" and "saved" in self.plan.results

    @staticmethod
    def write_once(b: Buffer) -> bool:
        """A step's buffer kept for every step lives only in its [T, B, ...] array: the step
        writes row block t of it, once."""
        return b.rows == "B" and b.stored and b.view_of is None

    # -- buffer access ----------------------------------------------------------------------------
    def base(self, b: Buffer, t: str | None) -> tuple[str, str]:
        """(array expression, column offset) of a buffer for one phase: per step reads the
        step's row block of T*B buffers; after the loop, stored copies."""
        if b.view_of is not None:
            parent = self.plan.buffers[b.view_of]
            array, offset = self.base(parent, t)
            if b.axis == "rows":
                start = offset_expr(parent.shape[0], b.index)
                stop = offset_expr(parent.shape[0], b.index + 1)
                return f"{array}[{start}:{stop}]", offset
            extra = offset_expr(parent.shape[-1], b.index)
            return array, extra if offset == "0" else f"{offset} + {extra}"
        name = ident(b.name)
        if b.role == "constant":
            return name, "0"
        if b.rows == "T*B" and t is not None:
            return f"{name}[{t}]", "0"
        if self.write_once(b) and t is not None:
            return f"{name}_all[{t}]", "0"
        if b.rows == "B" and t is None and b.stored:
            return f"{name}_all", "0"
        return name, "0"

    def matrix(self, b: Buffer, t: str | None) -> str:
        """A buffer as a 2-D array for np.dot: [rows, columns]."""
        array, offset = self.base(b, t)
        column_view = b.view_of is not None and b.axis == "cols"
        if column_view:
            array = f"{array}[..., {offset}:{offset} + {dim_expr(b.shape[-1])}]"
        if b.rows == "none":
            return array
        rows_all = (b.rows == "T*B" or (b.rows == "B" and b.stored)) and t is None
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

    def width(self, b: Buffer) -> str:
        return dim_expr(b.shape[-1]) if b.shape else "1"

    # -- printing ---------------------------------------------------------------------------------
    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def gemm(self, step: Gemm, indent: int, t: str | None) -> None:
        b = self.plan.buffers
        a_buf, b_buf, out_buf = b[step.a], b[step.b], b[step.out]
        a, v, out = self.operand(a_buf, t), self.operand(b_buf, t), self.matrix(out_buf, t)
        if step.op == "matmul":
            product = (v, f"{a}.T")
        elif step.op == "matmul_t":
            product = (v, a)
        elif (a_buf.rows == "none") != (b_buf.rows == "none"):
            # an outer sum of per-row gradients with a vector that has no rows (a parameter):
            # the rows' sum times it
            g = f"np.sum({a}, axis=0)" if a_buf.rows != "none" else a
            w = f"np.sum({v}, axis=0)" if b_buf.rows != "none" else v
            self.emit(indent, f"{out}[:, :] = np.outer({g}, {w})")
            product = None
        else:
            product = (f"{a}.T", v)
        if product is not None:
            self.emit(indent, f"np.dot({product[0]}, {product[1]}, {out})")
        if step.accumulate:  # np.add with out=: `out` may be a reshape, no assignment target
            self.emit(indent, f"np.add({out}, {self.matrix(b[step.accumulate], t)}, {out})")

    def kernel(self, step: Kernel, indent: int, t: str | None, phase: str) -> None:
        _Kernel(self, step, indent, t, phase).print()

    def function(self, name: str) -> str:
        plan = self.plan
        body_start = len(self.lines)
        for step in plan.phases["before_loop"]:
            self.step(step, 1, None, "before")
        reverse = plan.kind == "backward"
        self.emit(1, "for s in range(T):")
        self.emit(2, f"t = {'T - 1 - s' if reverse else 's'}")
        if self.records_states():  # the trajectory backward reads: each step's starting state
            for read, _ in plan.carried.values():
                self.emit(2, f"{ident(read)}_all[t] = {ident(read)}")
        for step in plan.phases["per_step"]:
            self.step(step, 2, "t", "step")
        self.carry(2)
        for step in plan.phases["after_loop"]:
            self.step(step, 1, None, "after")
        body = self.lines[body_start:]
        del self.lines[body_start:]
        args = ", ".join(["T", "B", "lengths"] + [f"d_{d}" for d in self.dims]
                         + [a for a, _, _ in self.arrays()])
        # parallel only where a kernel loops over rows (else Numba warns it found nothing to do)
        parallel = f"parallel={PRANGE_ONLY}, " if any("prange(" in line for line in body) else ""
        options = ", ".join(f"{k}={v!r}" for k, v in CALLER_OPTIONS.items())
        head = [f"@njit(cache=True, {parallel}{options}, nogil=True)",
                f"def {name}({args}):"]
        return "\n".join(head + body)

    def step(self, step, indent: int, t, phase: str) -> None:
        if step.kind == "gemm":
            self.gemm(step, indent, t)
        else:
            self.kernel(step, indent, t, phase)

    def carry(self, indent: int) -> None:
        """End of a step, for the rows that ran: results wanted for every step that no kernel
        stores are copied out (first: a carried state read this step is about to change), then
        each carried value becomes the next step's."""
        self.emit(indent, "for b in range(B):")
        self.emit(indent + 1, "if t < lengths[b]:")
        for name in self.plan.per_step_results:
            rb = self.plan.buffers[name]
            if rb.rows == "B" and not rb.stored:
                array, offset = self.base(rb, "t")
                self.emit(indent + 2, f"{ident(name)}_all[t, b, :] = "
                                      f"{array}[b, {offset}:{offset} + {self.width(rb)}]")
                self.captured.append(name)
        for read, written in self.plan.carried.values():
            wb = self.plan.buffers[written]
            if wb.role == "constant":  # a state whose next value is a constant (zeros)
                self.emit(indent + 2, f"{ident(read)}[b, :] = {self.constant(wb)}")
                continue
            array, offset = self.base(wb, "t")
            width = self.width(wb)
            if wb.rows == "none":
                src = f"{array}[{offset}:{offset} + {width}]" if offset != "0" else array
            else:
                src = f"{array}[b, {offset}:{offset} + {width}]"
            self.emit(indent + 2, f"{ident(read)}[b, :] = {src}")

    def constant(self, b: Buffer) -> str:
        """A constant buffer's value, as a scalar expression (every element equal)."""
        op, attrs = b.value
        if op == "zeros":
            return "ZERO"
        if op == "const":
            return self.const(attrs["value"])
        if op == "size":
            return f"dtype({dim_expr(attrs['dim'])})"
        raise NotImplementedError(f"constant {op}")


def split_ops(step: Kernel) -> tuple[list, list]:
    """A kernel's ops done per row, and those done once after its rows (batch sums and what
    reads them); constants are printed where they are read."""
    ops = [op for op in step.ops if op.op not in ("const", "size")]
    return [op for op in ops if op.per_row], [op for op in ops if not op.per_row]


class _Kernel:
    """Prints one fused kernel: a loop over its rows, inside each row its ops."""

    # -- how a loop over a row's columns prints (the CUDA printer spreads it over threads) -----------
    def column_loop(self, width: str) -> str:
        return f"for j in range({width}):"

    def columns_written(self, indent: int) -> None:
        """After a loop that stored values a later loop reads (nothing to do on one thread)."""

    def row_total(self, local: str, indent: int) -> None:
        """After a loop that summed a row into `local` (on one thread it is the total)."""

    def __init__(self, printer: _Printer, step: Kernel, indent: int, t, phase: str):
        self.p, self.step, self.indent, self.t, self.phase = printer, step, indent, t, phase
        self.ops = {op.out: op for op in step.ops}
        self.users: dict[str, list[str]] = {op.out: [] for op in step.ops}
        for op in step.ops:
            for a in op.args:
                if a in self.users:
                    self.users[a].append(op.out)
        self.stored: dict[str, str] = {}    # kernel value -> the array it lives in
        self.scalars: set[str] = set()      # kernel values held in a local variable
        self.row = "b" if phase == "step" else "tb"
        self.views: dict[str, str] = {}     # "array[row index]" -> its row view's local name
        # values only a concat reads are computed straight into their block of it
        self.into_concat: dict[str, tuple] = {}  # value -> (concat, column offset)
        for op in step.ops:
            if op.op != "concat":
                continue
            for k, arg in enumerate(op.args):
                src = self.ops.get(arg)
                if (src is not None and self.users[arg] == [op.out] and op.args.count(arg) == 1
                        and arg not in step.outputs and src.per_row == op.per_row
                        and scalar(src.op)):
                    self.into_concat[arg] = (op.out, offset_expr(op.shape[-1], k))
        self.in_rows = False

    # -- where values live --------------------------------------------------------------------------
    def value(self, name: str, j: str | None, group: set) -> str:
        """The expression for value `name` (element j of a vector; None for a scalar)."""
        op = self.ops.get(name)
        if op is None:
            return self.buffer_element(self.p.plan.buffers[name], j or "0")
        if op.op == "const":
            return self.p.const(op.attrs["value"])
        if op.op == "size":
            return f"dtype({dim_expr(op.attrs['dim'])})"
        if op.op == "zeros":
            return "ZERO"
        if op.op == "part" and name not in self.stored:
            offset = offset_expr(op.attrs["stacked"], op.attrs["index"])
            return self.value(op.args[0], f"{offset} + {j}", group)
        if name in group or (name in self.scalars and not op.shape):
            return f"x_{ident(name)[2:]}"
        return self.stored_element(name, j or "0")

    def buffer_element(self, b: Buffer, col: str) -> str:
        """Element `col` of buffer b in this kernel's row (t, b per step; tt, b otherwise)."""
        if b.view_of is not None:
            parent = self.p.plan.buffers[b.view_of]
            if b.axis == "rows":
                raise NotImplementedError("a kernel reading a row block of a matrix")
            return self.buffer_element(parent, f"{offset_expr(parent.shape[-1], b.index)} + {col}")
        name = ident(b.name)
        col = col if b.shape else "0"
        if b.rows == "none":
            return f"{name}[{col}]" if b.shape else f"{name}[()]"
        if b.rows == "B" and self.phase == "step":
            array, index = (f"{name}_all", "t, b") if b.stored else (name, "b")
        else:  # every step's rows; after the loop a stored step buffer is read from its copy
            array, index = (f"{name}_all" if b.rows == "B" else name), \
                ("t, b" if self.phase == "step" else "tt, b")
        return self.row_element(array, index, col)

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

    def stored_element(self, name: str, col: str) -> str:
        op = self.ops[name]
        if name in self.into_concat:
            concat, offset = self.into_concat[name]
            return self.stored_element(concat, f"{offset} + {col}" if offset != "0" else col)
        if name in self.step.outputs:
            return self.buffer_element(self.p.plan.buffers[name], col)
        array = self.stored[name]
        col = col if op.shape else "0"
        if not op.per_row:
            return f"{array}[{col}]"
        return self.row_element(array, self.row, col)

    def keep(self, name: str) -> None:
        """Give a kernel value that crosses loops an array: its output buffer, a block of the
        concat that reads it, or a workspace."""
        op = self.ops[name]
        if name in self.into_concat:
            concat, _ = self.into_concat[name]
            if concat not in self.stored:
                self.keep(concat)
            self.stored[name] = self.stored[concat]
            return
        if name in self.step.outputs:
            self.stored[name] = ident(name)
            return
        array = f"w_{ident(name)[2:]}"
        rows = "B" if self.phase == "step" else "T*B"
        self.p.workspace[array] = (rows if op.per_row else "none", op.shape[-1] if op.shape else 1)
        self.stored[name] = array

    def store(self, name: str, j: str | None, expr: str, indent: int) -> None:
        self.p.emit(indent, f"{self.stored_element(name, j or '0')} = {expr}")

    # -- expressions --------------------------------------------------------------------------------
    def expr(self, op, j: str | None, group: set) -> str:
        args = [self.value(a, j if self.is_vector(a) else None, group) for a in op.args]
        return REGISTRY[op.op].lower(args, op.attrs, self.p.math)

    def is_vector(self, name: str) -> bool:
        op = self.ops.get(name)
        shape = op.shape if op is not None else self.p.plan.buffers[name].shape
        return bool(shape)

    # -- the kernel -----------------------------------------------------------------------------------
    def row_range(self, count: str) -> str:
        """The rows a loop over `count` rows runs here: all of them, over Numba's threads."""
        return f"prange({count})"

    def open_row_loop(self, indent: int) -> None:
        """The loop over the kernel's rows, skipping rows past their length; its body goes at
        indent + 2, with b (and tt, tb outside the time loop) set."""
        p = self.p
        if self.phase == "step":
            p.emit(indent, f"for b in {self.row_range('B')}:")
            p.emit(indent + 1, "if t < lengths[b]:")
        else:
            p.emit(indent, f"for tb in {self.row_range('T * B')}:")
            p.emit(indent + 1, "tt = tb // B")
            p.emit(indent + 1, "b = tb - tt * B")
            p.emit(indent + 1, "if tt < lengths[b]:")

    def print(self) -> None:
        ind = self.indent
        row_ops, after_ops = split_ops(self.step)
        if self.step.rows == "none":
            self.body(row_ops + after_ops, ind, rows=False)
            return
        if row_ops:
            self.open_row_loop(ind)
            with self.row_views(ind + 2):
                self.body(row_ops, ind + 2, rows=True)
        if after_ops:
            self.body(after_ops, ind, rows=False)

    def body(self, ops, indent: int, rows: bool) -> None:
        group: list = []
        for op in ops:
            vector_elementwise = scalar(op.op) and op.shape
            if vector_elementwise and group and group[0].shape[-1] == op.shape[-1]:
                group.append(op)
                continue
            self.flush(group, indent)
            group = [op] if vector_elementwise else []
            if not vector_elementwise:
                self.single(op, indent)
        self.flush(group, indent)

    def crosses(self, name: str, group_names: set) -> bool:
        return name in self.step.outputs or any(u not in group_names for u in self.users[name])

    def flush(self, group: list, indent: int) -> None:
        if not group:
            return
        names = {op.out for op in group}
        width = dim_expr(group[0].shape[-1])
        for op in group:
            if self.crosses(op.out, names):
                self.keep(op.out)
        self.p.emit(indent, self.column_loop(width))
        for op in group:
            self.p.emit(indent + 1, f"x_{ident(op.out)[2:]} = {self.expr(op, 'j', names)}")
            if op.out in self.stored:
                self.store(op.out, "j", f"x_{ident(op.out)[2:]}", indent + 1)
        if any(op.out in self.stored for op in group):
            self.columns_written(indent)

    def single(self, op, indent: int) -> None:
        p = self.p
        local = f"x_{ident(op.out)[2:]}"
        if scalar(op.op):  # a scalar per row
            p.emit(indent, f"{local} = {self.expr(op, None, set())}")
            self.scalars.add(op.out)
            if self.crosses(op.out, {op.out}) and op.out in self.step.outputs:
                self.keep(op.out)
                self.store(op.out, None, local, indent)
            return
        if op.op in ("mean", "sum"):
            (arg,) = op.args
            if self.is_vector(arg):
                dim = self.dim_of(arg)
                p.emit(indent, f"{local} = ZERO")
                p.emit(indent, self.column_loop(dim_expr(dim)))
                p.emit(indent + 1, f"{local} += {self.value(arg, 'j', set())}")
                self.row_total(local, indent)
                if op.op == "mean":
                    p.emit(indent, f"{local} = {local} / dtype({dim_expr(dim)})")
            else:
                p.emit(indent, f"{local} = {self.value(arg, None, set())}")
            self.scalars.add(op.out)
            if op.out in self.step.outputs:
                self.keep(op.out)
                self.store(op.out, None, local, indent)
            return
        if op.op == "part":
            if op.out in self.step.outputs or not op.per_row:
                self.keep(op.out)
                offset = offset_expr(op.attrs["stacked"], op.attrs["index"])
                p.emit(indent, self.column_loop(dim_expr(op.shape[-1])))
                self.store(op.out, "j", self.value(op.args[0], f"{offset} + j", set()),
                           indent + 1)
                self.columns_written(indent)
            return  # otherwise read through its source
        if op.op == "concat":
            if op.out not in self.stored:
                self.keep(op.out)
            stacked = op.shape[-1]
            for k, arg in enumerate(op.args):
                if arg in self.into_concat:
                    continue  # already written into its block
                offset = offset_expr(stacked, k)
                p.emit(indent, self.column_loop(dim_expr(stacked.parts[k])))
                self.store(op.out, f"{offset} + j", self.value(arg, "j", set()), indent + 1)
            self.columns_written(indent)
            return
        if op.op == "batch_sum":  # row by row, so the reads stream through memory
            self.keep(op.out)
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
            return
        raise NotImplementedError(f"op {op.op} in a CPU kernel")

    def dim_of(self, name: str):
        op = self.ops.get(name)
        return (op.shape if op is not None else self.p.plan.buffers[name].shape)[-1]


def generate(plans: dict, dtype, dims: list[str]) -> tuple[str, dict]:
    """The module's source for GraphPlans {function name: plan}, and each function's argument
    list (see _Printer.arrays)."""
    dtype = np.dtype(dtype)
    functions, signatures, consts, used = [], {}, {}, set()
    for name, plan in plans.items():
        printer = _Printer(plan, dtype, dims)
        printer.consts = consts
        functions.append(printer.function(name))
        signatures[name] = printer.arrays()
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
        "",
        f"dtype = np.{dtype.name}",
        "ZERO, HALF, ONE = dtype(0.0), dtype(0.5), dtype(1.0)",
    ]
    head += [f"{c} = dtype({value!r})" for value, c in consts.items()]
    return "\n".join(head + ["", ""] + ["\n\n\n".join(functions)]) + "\n", signatures

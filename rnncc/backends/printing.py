"""What the cpu and cuda printers share: printing a Layout's buffers, constants and fused kernels.

A printer turns a Layout (rnncc/plan/layout.py) into source text and decides nothing: storage,
arguments, loop groups, concat blocks, workspaces, GEMM algorithms and where the carry happens
are the layout's. What differs between targets is only how a loop over rows or columns, a row
total and the math functions are spelled; a target's printer subclasses FunctionPrinter and
KernelPrinter and says that in the hooks below.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..ops import REGISTRY, Stacked
from ..plan.layout import Columns, KernelLayout, Layout, Storage, ident
from ..plan.plan import Buffer, Kernel, Rows


def dim_expr(dim) -> str:
    """A dimension as an expression of the function's size arguments (d_H, ...)."""
    if isinstance(dim, Stacked):
        return "(" + " + ".join(dim_expr(p) for p in dim.parts) + ")"
    return str(dim) if isinstance(dim, int) else f"d_{dim}"


def offset_expr(dim: Stacked, index: int) -> str:
    """The column offset of part `index` of a stacked dimension."""
    return parts_expr(dim.parts[:index])


def parts_expr(parts) -> str:
    return " + ".join(dim_expr(p) for p in parts) or "0"


class FunctionPrinter:
    """One generated function: its lines, constants and the expressions of its buffers."""

    def __init__(self, layout: Layout, dtype, dims: list[str], math):
        self.layout, self.plan, self.dims = layout, layout.plan, dims
        self.dtype = np.dtype(dtype)
        self.lines: list[str] = []
        self.consts: dict[float, str] = {}
        self.math = math(self.dtype, self.const)

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def const(self, value: float) -> str:
        if value not in self.consts:
            self.consts[value] = f"C{len(self.consts)}"
        return self.consts[value]

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

    def flags(self) -> list[str]:
        """Scalar arguments after the row lengths that a target's functions take."""
        return []

    def arguments_text(self, arrays: list | None = None) -> str:
        """The function's parameters: the scalars, then the array arguments (`arrays`, default
        every argument of the layout)."""
        arrays = self.layout.arguments if arrays is None else arrays
        return ", ".join(["T", "B", "lengths", *self.flags()] + [f"d_{d}" for d in self.dims]
                         + [a.name for a in arrays])

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
        storage = self.layout.storage[b.name]
        if storage == Storage.CONSTANT:
            return name, "0"
        if b.rows == Rows.ALL and t is not None:
            return f"{name}[{t}]", "0"
        if storage == Storage.WRITTEN_ONCE and t is not None:
            return f"{name}_all[{t}]", "0"
        if b.rows == Rows.STEP and t is None and b.stored:
            return f"{name}_all", "0"
        return name, "0"

    def width(self, b: Buffer) -> str:
        return dim_expr(b.shape[-1]) if b.shape else "1"


class KernelPrinter:
    """Prints one fused kernel from its KernelLayout: its loop over rows, inside each row its
    loop groups, then what runs once after its rows. Hooks say how a target spells loops."""

    # The row index of the [B, ...] arrays a step works in (a state, scratch): the batch row b,
    # except in the cuda target's scan, whose chunks each have their own rows (kb = k * B + b)
    step_row = "b"

    # -- hooks --------------------------------------------------------------------------------------
    def column_loop(self, width: str) -> str:
        """A loop over a row's columns."""
        raise NotImplementedError

    def columns_written(self, indent: int) -> None:
        """After a loop that stored values a later loop reads."""

    def row_total(self, local: str, indent: int) -> None:
        """After a loop that summed a row into `local`."""

    def row_element(self, array: str, index: str, col: str) -> str:
        """Element `col` of row `index` of an array."""
        return f"{array}[{index}, {col}]"

    @contextmanager
    def row_views(self, indent: int):
        """Code printed inside is in the loop over rows."""
        yield

    def batch_sum(self, op, indent: int) -> None:
        """A sum over every row of the call (a parameter gradient's bias part)."""
        raise NotImplementedError

    def row_range(self, count: str) -> str:
        """The rows of `count` this code runs."""
        raise NotImplementedError

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

    # -- the kernel -----------------------------------------------------------------------------------
    def __init__(self, printer: FunctionPrinter, step: Kernel, layout: KernelLayout,
                 indent: int, t, phase: str):
        self.p, self.step, self.indent, self.t, self.phase = printer, step, indent, t, phase
        self.layout = layout
        self.ops = {op.out: op for op in step.ops}
        self.stored: dict[str, str] = {}    # kernel value -> the array it lives in
        for name in layout.kept:
            self.stored[name] = self._array_of(name)
        self.scalars: set[str] = set()      # kernel values held in a local variable
        self.row = "b" if phase == "step" else "tb"

    def _array_of(self, name: str) -> str:
        kept = self.layout.kept[name]
        if kept.where == "concat":
            return self._array_of(kept.array)
        if kept.where == "output":
            return ident(name)
        return kept.array

    def print_loops(self, loops: list, indent: int) -> None:
        for item in loops:
            if isinstance(item, Columns):
                self.columns(item, indent)
            else:
                self.single(self.ops[item.op], indent)

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
        if b.rows == Rows.NONE:
            return f"{name}[{col}]" if b.shape else f"{name}[()]"
        if b.rows == Rows.STEP and self.phase == "step":
            array, index = (f"{name}_all", "t, b") if b.stored else (name, self.step_row)
        else:  # every step's rows; after the loop a stored step buffer is read from its copy
            array, index = (f"{name}_all" if b.rows == Rows.STEP else name), \
                ("t, b" if self.phase == "step" else "tt, b")
        return self.row_element(array, index, col)

    def stored_element(self, name: str, col: str) -> str:
        op = self.ops[name]
        if name in self.layout.into_concat:
            concat, parts = self.layout.into_concat[name]
            offset = parts_expr(parts)
            return self.stored_element(concat, f"{offset} + {col}" if offset != "0" else col)
        if name in self.step.outputs:
            return self.buffer_element(self.p.plan.buffers[name], col)
        array = self.stored[name]
        col = col if op.shape else "0"
        if not op.per_row:
            return f"{array}[{col}]"
        return self.row_element(array, self.step_row if self.phase == "step" else self.row, col)

    def store(self, name: str, j: str | None, expr: str, indent: int) -> None:
        self.p.emit(indent, f"{self.stored_element(name, j or '0')} = {expr}")

    def expr(self, op, j: str | None, group: set) -> str:
        args = [self.value(a, j if self.is_vector(a) else None, group) for a in op.args]
        return REGISTRY[op.op].lower(args, op.attrs, self.p.math)

    def is_vector(self, name: str) -> bool:
        op = self.ops.get(name)
        shape = op.shape if op is not None else self.p.plan.buffers[name].shape
        return bool(shape)

    def dim_of(self, name: str):
        op = self.ops.get(name)
        return (op.shape if op is not None else self.p.plan.buffers[name].shape)[-1]

    # -- loop groups -------------------------------------------------------------------------------
    def columns(self, item: Columns, indent: int) -> None:
        group = [self.ops[name] for name in item.ops]
        names = set(item.ops)
        self.p.emit(indent, self.column_loop(dim_expr(item.width)))
        for op in group:
            self.p.emit(indent + 1, f"x_{ident(op.out)[2:]} = {self.expr(op, 'j', names)}")
            if op.out in self.stored:
                self.store(op.out, "j", f"x_{ident(op.out)[2:]}", indent + 1)
        if any(op.out in self.stored for op in group):
            self.columns_written(indent)

    def single(self, op, indent: int) -> None:
        p = self.p
        local = f"x_{ident(op.out)[2:]}"
        if REGISTRY[op.op].scalar:  # a scalar per row
            p.emit(indent, f"{local} = {self.expr(op, None, set())}")
            self.scalars.add(op.out)
            if op.out in self.stored:
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
            if op.out in self.stored:
                self.store(op.out, None, local, indent)
            return
        if op.op == "part":
            if op.out in self.stored:
                offset = offset_expr(op.attrs["stacked"], op.attrs["index"])
                p.emit(indent, self.column_loop(dim_expr(op.shape[-1])))
                self.store(op.out, "j", self.value(op.args[0], f"{offset} + j", set()),
                           indent + 1)
                self.columns_written(indent)
            return  # otherwise read through its source
        if op.op == "concat":
            stacked = op.shape[-1]
            for k, arg in enumerate(op.args):
                if arg in self.layout.into_concat:
                    continue  # already written into its block
                offset = offset_expr(stacked, k)
                p.emit(indent, self.column_loop(dim_expr(stacked.parts[k])))
                self.store(op.out, f"{offset} + j", self.value(arg, "j", set()), indent + 1)
            self.columns_written(indent)
            return
        if op.op == "batch_sum":
            self.batch_sum(op, indent)
            return
        raise NotImplementedError(f"op {op.op} in a fused kernel")

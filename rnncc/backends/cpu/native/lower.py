"""A generated module's function -> LLVM IR, without Numba.

The cpu printer (codegen.py) prints a small language: loops over ranges, `if`, assignments to
scalars and to array elements, row views (`r_x = v_x[t, b]`), `np.dot` into an output, `np.add`,
`np.outer` of `np.sum`s, rnncc's fastmath functions and row_sum, `np.sqrt`, `abs`, `dtype(...)`.
Numba compiles it as general Python: typing, its IR, parfors' passes and a wrapper that unboxes
every argument cost three quarters of a cell's compile time (issue 16's profile). This module
compiles exactly that language: its AST straight to LLVM IR (llvmlite's IR builder), typed the way
Numba types it (int64 indices, the module's float type, int op float -> float64), with the same
float semantics (IEEE with `contract`: a multiply and an add may fuse; a row sum may reassociate).
Anything outside the language is an error naming the line, never a silent guess.

Arrays are always C-contiguous when called (the runtime's promise, runtime.argument_types), and
no two arrays a function may write overlap (noalias.py): their pointers are `noalias`. A view
(indexing with fewer indices, `.T`, `.reshape`, a column slice) is a compile-time record of a
pointer, shape and strides in elements; which axis has unit stride is known at compile time, so
a row's loop is a unit-stride loop LLVM vectorizes, and a GEMM operand's layout picks BLAS's
transpose flags. `np.ascontiguousarray` (the printer's copy of a strided GEMM operand, for Numba)
is a view: BLAS reads a row-strided matrix through its leading dimension.

A `prange` loop (a step's rows, which are independent) becomes a function of its own that
runs a range of the rows (`team_loop`); the function calls it through the team (gemm.py,
team.py), which runs it on every member's share of the rows, or on the calling thread alone.
`np.dot` of matrices is a call of gemm.py's packed GEMM, else of BLAS (blas.py).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from llvmlite import ir

from ..elementary import EMITTERS, FORMATS
from . import abi, blas, gemm, machine

I64 = ir.IntType(64)
I8 = ir.IntType(8)
I1 = ir.IntType(1)
CONTRACT = ("contract",)
REASSOC = ("reassoc", "contract")
FLOATS = {np.dtype(np.float32): ir.FloatType(), np.dtype(np.float64): ir.DoubleType()}


class NativeError(Exception):
    """The generated source uses something this compiler does not know (a printer change that
    did not reach it): the message names the line."""


class Param(NamedTuple):
    """A function parameter's kind: "int" (int64), "bool", or an array of `ndim` dimensions of
    `dtype`; `read_only`: an array the call never writes (a parameter: products by it may use
    a copy packed once per call, gemm.py)."""
    kind: str
    ndim: int = 0
    dtype: np.dtype | None = None
    read_only: bool = False


@dataclass
class Scalar:
    """A typed scalar: kind "int" (int64), "bool", or a numpy float dtype's name."""
    kind: str
    value: ir.Value


@dataclass
class Array:
    """A view: its element pointer, shape and strides (in elements), and which axis is known at
    compile time to have unit stride ("last": rows are contiguous, "first": a transposed one,
    None: neither known)."""
    ptr: ir.Value
    dtype: np.dtype
    shape: list
    strides: list
    unit: str | None
    whole: str | None = None   # a read-only parameter this view is all of (maybe transposed)

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _is_float(kind: str) -> bool:
    return kind in ("float32", "float64")


class Lowering:
    """One function of a generated module lowered into an LLVM module."""

    def __init__(self, module: ir.Module, tree: ast.Module, source_lines: list[str]):
        self.module, self.lines = module, source_lines
        self.dtype: np.dtype | None = None
        self.consts: dict[str, Scalar] = {}
        self._module_constants(tree)

    # -- errors ----------------------------------------------------------------------------------
    def error(self, node, what: str) -> NativeError:
        line = getattr(node, "lineno", None)
        text = self.lines[line - 1].strip() if line else ""
        return NativeError(f"line {line}: {what}: {text}")

    # -- the module's constants: dtype = np.float32, ZERO, HALF, ONE = dtype(0.0), ..., C0 = ...
    def _module_constants(self, tree: ast.Module) -> None:
        for node in tree.body:
            if not isinstance(node, ast.Assign):
                continue
            target, value = node.targets[0], node.value
            if isinstance(target, ast.Name) and target.id == "dtype":
                self.dtype = np.dtype(value.attr)
                continue
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            values = value.elts if isinstance(value, ast.Tuple) else [value]
            for name, v in zip(names, values):
                if (isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                        and v.func.id == "dtype"):
                    number = self.dtype.type(ast.literal_eval(v.args[0]))
                    self.consts[name.id] = Scalar(self.dtype.name, ir.Constant(
                        FLOATS[self.dtype], float(number)))

    # -- the function ----------------------------------------------------------------------------
    def function(self, fn: ast.FunctionDef, params: list[Param], symbol: str) -> None:
        """Lower `fn` as `void symbol(PyObject *arrays, int64 ints...)`: `arrays` a tuple of
        the array arguments in order, whose data pointers and shapes the entry reads from the
        objects (abi.py); then the int and bool parameters in order, as int64."""
        names = [a.arg for a in fn.args.args]
        if len(names) != len(params):
            raise self.error(fn, f"{len(names)} parameters, {len(params)} kinds given")
        scalars = sum(p.kind != "array" for p in params)
        entry_type = ir.FunctionType(ir.VoidType(), [I8.as_pointer()] + [I64] * scalars)
        entry = ir.Function(self.module, entry_type, symbol)
        body_types = []
        for p in params:
            if p.kind == "array":
                body_types += [FLOATS.get(np.dtype(p.dtype), I64).as_pointer()] + [I64] * p.ndim
            else:
                body_types.append(I64)
        body = ir.Function(self.module, ir.FunctionType(ir.VoidType(), body_types),
                           symbol + "_body")
        body.linkage = "internal"
        # the call through the entry costs nothing beside a call's loop; kept separate so that
        # the arrays are noalias parameters (LLVM keeps that as scoped metadata if it inlines)
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        arrays, ints = entry.args[0], iter(entry.args[1:])
        offsets = abi.offsets()

        def field(obj, offset: int, typ):   # the field of a Python object at `offset` bytes
            return b.load(b.bitcast(b.gep(obj, [ir.Constant(I64, offset)]), typ.as_pointer()))
        call_args, item = [], 0
        for p in params:
            if p.kind != "array":
                call_args.append(next(ints))
                continue
            array = field(arrays, offsets.tuple_items + 8 * item, I8.as_pointer())
            element = FLOATS.get(np.dtype(p.dtype), I64)
            call_args.append(b.bitcast(field(array, offsets.array_data, I8.as_pointer()),
                                       element.as_pointer()))
            dims = field(array, offsets.array_dims, I64.as_pointer())
            call_args += [b.load(b.gep(dims, [ir.Constant(I64, d)])) for d in range(p.ndim)]
            item += 1
        b.call(body, call_args)
        b.ret_void()

        self.fn, self.symbol, self.outlined = body, symbol, 0
        self.params = {name for name, p in zip(names, params) if p.kind == "array"}
        # stack slots go in a block of their own ahead of the code (mem2reg promotes them):
        # two builders inserting into one block would shift each other's position
        self.allocas = ir.IRBuilder(body.append_basic_block("allocas"))
        start = body.append_basic_block("start")
        self.builder = ir.IRBuilder(start)
        self.locals: dict[str, object] = {}   # parameters (Scalar, Array) and views (Array)
        self.slots: dict[str, ir.Value] = {}  # local scalars' stack slots (SSA after mem2reg)
        self.kinds: dict[str, str] = {}       # and their kinds, fixed at the first assignment
        k = 0
        for name, p in zip(names, params):
            if p.kind == "array":
                ptr = body.args[k]
                ptr.add_attribute("noalias")
                shape = list(body.args[k + 1:k + 1 + p.ndim])
                self.locals[name] = Array(ptr, np.dtype(p.dtype), shape,
                                          self._c_strides(shape), "last",
                                          name if p.read_only else None)
                k += 1 + p.ndim
            else:
                value = body.args[k]
                if p.kind == "bool":
                    value = self.builder.icmp_signed("!=", value, ir.Constant(I64, 0))
                self.locals[name] = Scalar(p.kind, value)
                k += 1
        self.packed: dict = {}   # (parameter, unit) -> the slot of its packed copy (gemm.py)
        self.depth = 0           # loops around the statement being lowered
        self.packed_gemm = machine.packed_enabled()
        self.statements(fn.body)
        self.finish(start)

    def finish(self, start) -> None:
        """The end of the function being lowered: its packed weights freed, its return, and
        its stack slots' block joined to its code (`start`)."""
        free = self.libc("free", ir.VoidType(), [I8.as_pointer()])
        for slot in self.packed.values():
            self.builder.call(free, [self.builder.bitcast(self.builder.load(slot),
                                                          I8.as_pointer())])
        self.builder.ret_void()
        self.allocas.branch(start)

    def _c_strides(self, shape: list) -> list:
        """A C-contiguous array's strides: each the product of the later extents."""
        strides, step = [], ir.Constant(I64, 1)
        for extent in reversed(shape):
            strides.insert(0, step)
            step = self.builder.mul(step, extent, flags=["nsw"])
        return strides

    # -- statements -------------------------------------------------------------------------------
    def statements(self, nodes: list) -> None:
        for node in nodes:
            self.statement(node)

    def statement(self, node) -> None:
        if isinstance(node, ast.For):
            self.for_loop(node)
        elif isinstance(node, ast.If):
            self.if_statement(node)
        elif isinstance(node, ast.Assign):
            if len(node.targets) != 1:
                raise self.error(node, "one target per assignment")
            self.assign(node.targets[0], node.value, node)
        elif isinstance(node, ast.AugAssign):   # (expr reads a target as it reads a load)
            op = ast.BinOp(left=node.target, op=node.op, right=node.value)
            ast.copy_location(op, node)
            self.assign(node.target, op, node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            self.call_statement(node.value)
        elif isinstance(node, ast.Pass):
            pass
        else:
            raise self.error(node, f"a {type(node).__name__} statement")

    def for_loop(self, node: ast.For) -> None:
        it = node.iter
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
                and it.func.id in ("range", "prange") and 1 <= len(it.args) <= 2
                and isinstance(node.target, ast.Name) and not node.orelse):
            raise self.error(node, "a loop other than `for name in range(...)`")
        if it.func.id == "prange" and len(it.args) == 1 and self.outlines(node):
            self.team_loop(node)
            return
        bounds = [self.int_value(a) for a in it.args]
        start, stop = (ir.Constant(I64, 0), bounds[0]) if len(bounds) == 1 else bounds
        b = self.builder
        slot = self.slot(node.target.id, "int", node)
        cond_block = b.append_basic_block("for.cond")
        body_block = b.append_basic_block("for.body")
        end_block = b.append_basic_block("for.end")
        counter = self.alloca(I64)
        b.store(start, counter)
        b.branch(cond_block)
        b.position_at_end(cond_block)
        i = b.load(counter)
        b.cbranch(b.icmp_signed("<", i, stop), body_block, end_block)
        b.position_at_end(body_block)
        b.store(i, slot)
        self.depth += 1
        self.statements(node.body)
        self.depth -= 1
        b.store(b.add(b.load(counter), ir.Constant(I64, 1), flags=["nsw"]), counter)
        b.branch(cond_block)
        b.position_at_end(end_block)

    # -- a parallel loop shared over the team (team.py) -------------------------------------
    def captured(self, node: ast.For) -> list[str]:
        """The names a loop's body reads from the function around it (in order of first use):
        parameters and local scalars."""
        assigned = _stored(node)
        names = []
        for n in ast.walk(ast.Module(body=node.body, type_ignores=[])):
            if (isinstance(n, ast.Name) and n.id not in assigned and n.id not in names
                    and (n.id in self.locals or n.id in self.slots)):
                names.append(n.id)
        return names

    def outlines(self, node: ast.For) -> bool:
        """Whether a `prange` loop runs as a function of its own that the team shares out by
        rows: where its body reads no view made outside it (only whole parameters, which keep
        their `noalias` there) and sums no scalar over its rows (`x += ...` of a scalar the
        body never assigns: Numba's reduction, which the rows' functions would not combine).
        Scalars the body assigns are its own, as in Numba's prange."""
        summed = {n.target.id for n in ast.walk(node)
                  if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)}
        plain = _stored(node) - summed
        if summed - plain:
            return False
        return all(not isinstance(self.locals.get(n), Array) or n in self.params
                   for n in self.captured(node))

    def team_loop(self, node: ast.For) -> None:
        """`for b in prange(count): body` as body(ctx, member, members), which runs the rows
        count*member//members .. count*(member+1)//members; the captured values travel in a
        record `ctx` on the stack. The team's `rows` runs it on every member, or on the calling
        thread alone (gemm.py)."""
        b = self.builder
        count = self.int_value(node.iter.args[0])
        names = self.captured(node)
        values, rebuild = [], []   # the record's fields, and how each name reads back
        for name in names:
            v = self.locals.get(name)
            if isinstance(v, Array):
                rebuild.append((name, "array", v, len(values)))
                values += [v.ptr, *v.shape, *v.strides]
            else:
                scalar = v if isinstance(v, Scalar) else Scalar(self.kinds[name],
                                                                b.load(self.slots[name]))
                rebuild.append((name, "scalar", scalar.kind, len(values)))
                values.append(scalar.value)
        values.append(count)
        record_type = ir.LiteralStructType([v.type for v in values])
        record = self.alloca(record_type)
        for k, v in enumerate(values):
            b.store(v, b.gep(record, [ir.Constant(ir.IntType(32), 0), ir.Constant(
                ir.IntType(32), k)]))

        self.outlined += 1
        raw = I8.as_pointer()
        name = f"{self.symbol}_rows{self.outlined}"
        # the rows themselves: a function whose arrays are `noalias` parameters, as the
        # function's own are (through the record alone LLVM would have to prove it, and gives
        # up vectorizing a kernel of many arrays), and its wrapper, which the team calls
        inner_fn = ir.Function(self.module, ir.FunctionType(
            ir.VoidType(), [I64, I64] + [v.type for v in values]), name + "_body")
        inner_fn.linkage = "internal"
        wrapper = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [raw, I64, I64]), name)
        wrapper.linkage = "internal"
        w = ir.IRBuilder(wrapper.append_basic_block("entry"))
        fields = w.bitcast(wrapper.args[0], record_type.as_pointer())
        loaded = [w.load(w.gep(fields, [ir.Constant(ir.IntType(32), 0),
                                         ir.Constant(ir.IntType(32), k)]))
                  for k in range(len(values))]
        w.call(inner_fn, [wrapper.args[1], wrapper.args[2], *loaded])
        w.ret_void()

        saved = (self.fn, self.builder, self.allocas, self.locals, self.slots, self.kinds,
                 self.packed)
        self.fn = inner_fn
        self.allocas = ir.IRBuilder(inner_fn.append_basic_block("allocas"))
        start = inner_fn.append_basic_block("start")
        self.builder = inner = ir.IRBuilder(start)
        self.slots, self.kinds, self.packed = {}, {}, {}
        self.locals = {}
        member, members, *args = inner_fn.args
        for name_, kind, what, k in rebuild:
            if kind == "array":
                n = what.ndim
                args[k].add_attribute("noalias")
                shape = [args[k + 1 + d] for d in range(n)]
                strides = [what.strides[d] if isinstance(what.strides[d], ir.Constant)
                           else args[k + 1 + n + d] for d in range(n)]
                self.locals[name_] = Array(args[k], what.dtype, shape, strides, what.unit,
                                           what.whole)
            else:
                self.locals[name_] = Scalar(what, args[k])
        rows = args[len(values) - 1]
        first = inner.sdiv(inner.mul(rows, member), members)
        last = inner.sdiv(inner.mul(rows, inner.add(member, ir.Constant(I64, 1))), members)
        loop = ast.For(target=node.target, iter=ast.Call(
            func=ast.Name(id="range", ctx=ast.Load()),
            args=[_Value(first), _Value(last)], keywords=[]), body=node.body, orelse=[])
        ast.copy_location(loop, node)
        self.for_loop(loop)
        self.finish(start)
        (self.fn, self.builder, self.allocas, self.locals, self.slots, self.kinds,
         self.packed) = saved

        team_rows = self.libc("rnncc_team_rows", ir.VoidType(), [raw, raw, I64])
        b.call(team_rows, [b.bitcast(wrapper, raw), b.bitcast(record, raw), count])

    def if_statement(self, node: ast.If) -> None:
        condition = self.truth(self.expr(node.test), node)
        with self.builder.if_else(condition) as (then, otherwise):
            with then:
                self.statements(node.body)
            with otherwise:
                self.statements(node.orelse)

    def assign(self, target, value, node) -> None:
        if isinstance(target, ast.Name):
            v = self.value(value)
            if isinstance(v, Array):   # a view: r_x = v_x[t, b]
                if target.id in self.slots:
                    raise self.error(node, f"{target.id} is a scalar and a view")
                self.locals[target.id] = v
                return
            slot = self.slot(target.id, v.kind, node)
            self.builder.store(self.cast(v, self.kinds[target.id]).value, slot)
            return
        if isinstance(target, ast.Subscript):
            if _has_slices(target.slice):
                self.slice_assign(target, value, node)
                return
            pointer, array = self.element_pointer(target)
            v = self.cast(self.expr(value), _kind(array.dtype))
            self.builder.store(v.value, pointer)
            return
        raise self.error(node, "an assignment to something other than a name or an element")

    def slot(self, name: str, kind: str, node):
        """The stack slot of local scalar `name` (typed at its first assignment)."""
        if name not in self.slots:
            if name in self.locals:
                raise self.error(node, f"an assignment to {name}, a parameter or view")
            self.slots[name] = self.alloca(self.ir_type(kind))
            self.kinds[name] = kind
        return self.slots[name]

    def alloca(self, typ):
        return self.allocas.alloca(typ)

    def ir_type(self, kind: str):
        return {"int": I64, "bool": I1}.get(kind) or FLOATS[np.dtype(kind)]

    # -- calls as statements: np.dot(a, b, out), np.add(x, y, out) -----------------------------
    def call_statement(self, call: ast.Call) -> None:
        name = _dotted(call.func)
        if name == "np.dot" and len(call.args) == 3:
            a, v, out = (self.array(x) for x in call.args)
            blas.gemm(self, a, v, out, call)
        elif name == "np.add" and len(call.args) == 3:
            x, y, out = (self.array(a) for a in call.args)
            if x.ndim > out.ndim or y.ndim > out.ndim:
                raise self.error(call, "np.add of an array with more axes than its output")

            def add(index):   # broadcasting: an operand with fewer axes repeats along the first
                px, py, po = (self.pointer_at(a, index[out.ndim - a.ndim:])
                              for a in (x, y, out))
                total = self.builder.fadd(self.builder.load(px), self.builder.load(py),
                                          flags=CONTRACT)
                self.builder.store(total, po)
            self.nest(out.shape, add)
        else:
            raise self.error(call, "a call statement other than np.dot or np.add into an output")

    def slice_assign(self, target: ast.Subscript, value, node) -> None:
        """`out[:, :] = np.outer(u, w)`, u and w vectors or np.sum(matrix, axis=0)."""
        out = self.array(target.value)
        if not (isinstance(value, ast.Call) and _dotted(value.func) == "np.outer"
                and out.ndim == 2 and _whole_slices(target.slice, 2)):
            raise self.error(node, "a slice assignment other than out[:, :] = np.outer(u, w)")
        temporaries = []
        u, w = (self.vector(a, temporaries) for a in value.args)

        def element(index):
            i, j = index
            product = self.builder.fmul(self.builder.load(self.pointer_at(u, [i])),
                                        self.builder.load(self.pointer_at(w, [j])),
                                        flags=CONTRACT)
            self.builder.store(product, self.pointer_at(out, index))
        self.nest(out.shape, element)
        free = self.libc("free", ir.VoidType(), [I8.as_pointer()])
        for raw in temporaries:
            self.builder.call(free, [raw])

    def vector(self, node, temporaries: list) -> Array:
        """A vector operand of np.outer: an array, or np.sum(matrix, axis=0) summed row by row
        (as Numba's np.sum along an axis does) into a heap buffer added to `temporaries`."""
        if isinstance(node, ast.Call) and _dotted(node.func) == "np.sum":
            matrix = self.array(node.args[0])
            axis = [ast.literal_eval(k.value) for k in node.keywords if k.arg == "axis"]
            if matrix.ndim != 2 or axis != [0]:
                raise self.error(node, "np.sum other than of a matrix along axis 0")
            rows, width = matrix.shape
            total = self.heap_vector(matrix.dtype, width, temporaries)
            zero = ir.Constant(FLOATS[matrix.dtype], 0.0)
            self.nest([width], lambda index: self.builder.store(
                zero, self.pointer_at(total, index)))

            def add(index):
                i, j = index
                pointer = self.pointer_at(total, [j])
                self.builder.store(self.builder.fadd(self.builder.load(pointer), self.builder.load(
                    self.pointer_at(matrix, index)), flags=CONTRACT), pointer)
            self.nest([rows, width], add)
            return total
        vector = self.array(node)
        if vector.ndim != 1:
            raise self.error(node, "np.outer of something other than vectors")
        return vector

    def heap_vector(self, dtype, length, temporaries: list) -> Array:
        """A temporary vector (malloc; the caller frees what it adds to `temporaries`)."""
        element = FLOATS[dtype]
        bytes_ = self.builder.mul(length, ir.Constant(I64, dtype.itemsize))
        raw = self.builder.call(self.libc("malloc", I8.as_pointer(), [I64]), [bytes_])
        temporaries.append(raw)
        return Array(self.builder.bitcast(raw, element.as_pointer()), dtype, [length],
                     [ir.Constant(I64, 1)], "last")

    def packed_weight(self, w: Array):
        """The packed copy (gemm.py's panels) of a read-only parameter's [K, N] view `w`: made
        at its first product in a call, freed when the call returns."""
        b = self.builder
        key = (w.whole, w.unit)
        element = FLOATS[w.dtype]
        if key not in self.packed:
            slot = self.alloca(element.as_pointer())
            self.allocas.store(ir.Constant(element.as_pointer(), None), slot)
            self.packed[key] = slot
        slot = self.packed[key]
        with b.if_then(b.icmp_unsigned("==", b.load(slot),
                                       ir.Constant(element.as_pointer(), None))):
            b.store(self.pack(w), slot)
        return b.load(slot)

    def pack(self, w: Array):
        """A [K, N] view packed into gemm.py's panels, in a buffer of its own (malloc'd: the
        caller frees it)."""
        b = self.builder
        element = FLOATS[w.dtype]
        k, n = w.shape
        nr = machine.blocking(w.dtype).nr
        panels = b.sdiv(b.add(n, ir.Constant(I64, nr - 1)), ir.Constant(I64, nr))
        size = b.mul(b.mul(panels, ir.Constant(I64, nr * w.dtype.itemsize)), k)
        size = b.add(size, ir.Constant(I64, 64))   # (a multiple of the alignment, not 0)
        size = b.and_(size, ir.Constant(I64, -64))
        raw = b.call(self.libc("aligned_alloc", I8.as_pointer(), [I64, I64]),
                     [ir.Constant(I64, 64), size])
        packed = b.bitcast(raw, element.as_pointer())
        pack = self.libc(gemm.symbol("pack", w.dtype), ir.VoidType(),
                         [I64, I64, element.as_pointer(), I64, I64, element.as_pointer()])
        b.call(pack, [k, n, w.ptr, w.strides[0], w.strides[1], packed])
        return packed

    def libc(self, name: str, returns, arguments):
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        return ir.Function(self.module, ir.FunctionType(returns, arguments), name)

    # -- loops over whole arrays -------------------------------------------------------------------
    def nest(self, extents: list, body) -> None:
        """`body(indices)` inside loops over every index of `extents`, the last innermost."""
        b = self.builder

        def level(depth, indices):
            if depth == len(extents):
                body(indices)
                return
            counter = self.alloca(I64)
            b.store(ir.Constant(I64, 0), counter)
            cond, inner, end = (b.append_basic_block(n) for n in ("nest.cond", "nest.body",
                                                                    "nest.end"))
            b.branch(cond)
            b.position_at_end(cond)
            i = b.load(counter)
            b.cbranch(b.icmp_signed("<", i, extents[depth]), inner, end)
            b.position_at_end(inner)
            level(depth + 1, indices + [i])
            b.store(b.add(b.load(counter), ir.Constant(I64, 1), flags=["nsw"]), counter)
            b.branch(cond)
            b.position_at_end(end)
        level(0, [])

    # -- arrays ------------------------------------------------------------------------------------
    def value(self, node):
        """An expression's value: an Array (a view) or a Scalar."""
        if isinstance(node, ast.Name) and isinstance(self.locals.get(node.id), Array):
            return self.locals[node.id]
        if isinstance(node, ast.Attribute) and node.attr == "T":
            a = self.array(node.value)
            flip = {"last": "first", "first": "last"}.get(a.unit)
            return Array(a.ptr, a.dtype, a.shape[::-1], a.strides[::-1], flip, a.whole)
        if isinstance(node, ast.Call):
            if _dotted(node.func) == "np.ascontiguousarray":
                a = self.array(node.args[0])
                if a.unit != "last":
                    raise self.error(node, "np.ascontiguousarray of an array whose rows are "
                                           "not unit-stride")
                return a
            if isinstance(node.func, ast.Attribute) and node.func.attr == "reshape":
                return self.reshape(self.array(node.func.value),
                                    [self.int_value(x) for x in node.args], node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        return self.expr(node)

    def array(self, node) -> Array:
        v = self.value(node)
        if not isinstance(v, Array):
            raise self.error(node, "a scalar where an array belongs")
        return v

    def reshape(self, a: Array, shape: list, node) -> Array:
        """The printer's reshape: to [rows, last extent], the leading axes merged into rows:
        valid for any view whose leading axes are laid out one after another (a parameter, its
        row views, its column slices), rows stepping by the innermost leading axis's stride."""
        if len(shape) == 2 and a.ndim >= 2 and a.unit == "last":
            return Array(a.ptr, a.dtype, shape, [a.strides[-2], a.strides[-1]], a.unit)
        raise self.error(node, "a reshape other than merging leading axes")

    def subscript(self, node: ast.Subscript):
        """a[i, j] (every axis: the element, a Scalar), or a view: fewer indices (a row),
        slices, a[..., start:stop] (a column slice)."""
        a = self.array(node.value)
        indices = _indices(node.slice)
        b = self.builder
        if all(not isinstance(i, ast.Slice) and not _is_ellipsis(i) for i in indices):
            if len(indices) > a.ndim:
                raise self.error(node, f"{len(indices)} indices into a {a.ndim}-d array")
            if len(indices) == a.ndim:
                pointer = self.pointer_at(a, [self.int_value(i) for i in indices])
                return Scalar(_kind(a.dtype), b.load(pointer))
        if indices and _is_ellipsis(indices[0]):
            if len(indices) != 2 or not isinstance(indices[1], ast.Slice):
                raise self.error(node, "an ellipsis other than a[..., start:stop]")
            start, stop = self.bounds(indices[1], a.shape[-1], node)
            ptr = b.gep(a.ptr, [b.mul(start, a.strides[-1])])
            return Array(ptr, a.dtype, a.shape[:-1] + [b.sub(stop, start)], a.strides,
                         "last" if a.unit == "last" else None)
        ptr, shape, strides = a.ptr, [], []
        for axis, index in enumerate(indices):
            if isinstance(index, ast.Slice):
                start, stop = self.bounds(index, a.shape[axis], node)
                shape.append(b.sub(stop, start))
                strides.append(a.strides[axis])
            else:
                start = self.int_value(index)
            ptr = b.gep(ptr, [b.mul(start, a.strides[axis])])
        shape += a.shape[len(indices):]
        strides += a.strides[len(indices):]
        # which axis has unit stride, for the axes kept
        unit = a.unit if a.unit == "last" or len(indices) == 0 else None
        if a.unit == "first" and isinstance(indices[0], ast.Slice):
            unit = "first"
        return Array(ptr, a.dtype, shape, strides, unit)

    def bounds(self, s: ast.Slice, extent, node):
        if s.step is not None:
            raise self.error(node, "a slice with a step")
        start = self.int_value(s.lower) if s.lower is not None else ir.Constant(I64, 0)
        stop = self.int_value(s.upper) if s.upper is not None else extent
        return start, stop

    def element_pointer(self, node: ast.Subscript):
        """The pointer to one element (every axis indexed) and the array it is in."""
        a = self.array(node.value)
        indices = _indices(node.slice)
        if len(indices) != a.ndim or any(isinstance(i, ast.Slice) for i in indices):
            raise self.error(node, f"{len(indices)} indices into a {a.ndim}-d array")
        return self.pointer_at(a, [self.int_value(i) for i in indices]), a

    def pointer_at(self, a: Array, indices: list):
        b = self.builder
        offset = None
        for i, stride in zip(indices, a.strides):
            term = i if (isinstance(stride, ir.Constant) and stride.constant == 1) \
                else b.mul(i, stride, flags=["nsw"])
            offset = term if offset is None else b.add(offset, term, flags=["nsw"])
        return a.ptr if offset is None else b.gep(a.ptr, [offset], inbounds=True)

    # -- scalar expressions ------------------------------------------------------------------
    def int_value(self, node) -> ir.Value:
        if isinstance(node, _Value):
            return node.value
        v = self.expr(node)
        if v.kind != "int":
            raise self.error(node, "an index or size that is not an integer")
        return v.value

    def truth(self, v: Scalar, node) -> ir.Value:
        if v.kind == "bool":
            return v.value
        if v.kind == "int":
            return self.builder.icmp_signed("!=", v.value, ir.Constant(I64, 0))
        raise self.error(node, "a float as a condition")

    def expr(self, node) -> Scalar:
        b = self.builder
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return Scalar("bool", ir.Constant(I1, int(node.value)))
            if isinstance(node.value, int):
                return Scalar("int", ir.Constant(I64, node.value))
            if isinstance(node.value, float):   # a bare float literal: float64, as in Numba
                return Scalar("float64", ir.Constant(ir.DoubleType(), node.value))
            raise self.error(node, f"the constant {node.value!r}")
        if isinstance(node, ast.Name):
            if node.id in self.consts:
                return self.consts[node.id]
            value = self.locals.get(node.id)
            if isinstance(value, Scalar):
                return value
            if node.id in self.slots:
                kind = self.kinds[node.id]
                return Scalar(kind, b.load(self.slots[node.id]))
            raise self.error(node, f"{node.id} is not a scalar known here")
        if isinstance(node, ast.Subscript):
            v = self.subscript(node)
            if not isinstance(v, Scalar):
                raise self.error(node, "an array where a scalar belongs")
            return v
        if isinstance(node, ast.BinOp):
            return self.binary(node.op, self.expr(node.left), self.expr(node.right), node)
        if isinstance(node, ast.UnaryOp):
            v = self.expr(node.operand)
            if isinstance(node.op, ast.USub):
                return Scalar(v.kind, b.fneg(v.value) if _is_float(v.kind)
                              else b.neg(v.value))
            if isinstance(node.op, ast.UAdd):
                return v
            if isinstance(node.op, ast.Not):
                return Scalar("bool", b.not_(self.truth(v, node)))
            raise self.error(node, "a unary operator")
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BoolOp):
            # operands are pure (comparisons of values): evaluating both is what
            # short-circuiting would give
            values = [self.truth(self.expr(v), node) for v in node.values]
            result = values[0]
            for v in values[1:]:
                result = b.or_(result, v) if isinstance(node.op, ast.Or) else b.and_(result, v)
            return Scalar("bool", result)
        if isinstance(node, ast.IfExp):
            condition = self.truth(self.expr(node.test), node)
            yes, no = self.expr(node.body), self.expr(node.orelse)
            kind = self.unify(yes.kind, no.kind)
            return Scalar(kind, b.select(condition, self.cast(yes, kind).value,
                                         self.cast(no, kind).value))
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.error(node, f"a {type(node).__name__} expression")

    @staticmethod
    def unify(x: str, y: str) -> str:
        """Numba's result type of an arithmetic op on two kinds."""
        if x == y:
            return "int" if x == "bool" else x
        if _is_float(x) or _is_float(y):
            return "float64"   # two floats that differ, or an int64 beside a float (numpy's)
        return "int"

    def cast(self, v: Scalar, kind: str) -> Scalar:
        b = self.builder
        if v.kind == kind:
            return v
        if _is_float(kind):
            target = FLOATS[np.dtype(kind)]
            if _is_float(v.kind):
                return Scalar(kind, b.fptrunc(v.value, target) if kind == "float32"
                              else b.fpext(v.value, target))
            value = v.value if v.kind == "int" else b.zext(v.value, I64)
            return Scalar(kind, b.sitofp(value, target))
        if kind == "int":
            if v.kind == "bool":
                return Scalar("int", b.zext(v.value, I64))
            return Scalar("int", b.fptosi(v.value, I64))
        if kind == "bool":
            return Scalar("bool", self.truth(v, None))
        raise NativeError(f"a cast from {v.kind} to {kind}")

    def binary(self, op, x: Scalar, y: Scalar, node) -> Scalar:
        b = self.builder
        kind = self.unify(x.kind, y.kind)
        if isinstance(op, ast.Div) and not _is_float(kind):
            kind = "float64"   # true division
        x, y = self.cast(x, kind), self.cast(y, kind)
        if _is_float(kind):
            emit = {ast.Add: b.fadd, ast.Sub: b.fsub, ast.Mult: b.fmul,
                    ast.Div: b.fdiv}.get(type(op))
            if emit is None:
                raise self.error(node, "a float operator other than + - * /")
            return Scalar(kind, emit(x.value, y.value, flags=CONTRACT))
        if isinstance(op, ast.Add):
            return Scalar("int", b.add(x.value, y.value, flags=["nsw"]))
        if isinstance(op, ast.Sub):
            return Scalar("int", b.sub(x.value, y.value, flags=["nsw"]))
        if isinstance(op, ast.Mult):
            return Scalar("int", b.mul(x.value, y.value, flags=["nsw"]))
        if isinstance(op, ast.FloorDiv):   # Python's: rounds towards minus infinity
            q = b.sdiv(x.value, y.value)
            r = b.sub(x.value, b.mul(q, y.value))
            signs_differ = b.icmp_signed("<", b.xor(r, y.value), ir.Constant(I64, 0))
            adjust = b.and_(b.icmp_signed("!=", r, ir.Constant(I64, 0)), signs_differ)
            return Scalar("int", b.sub(q, b.zext(adjust, I64)))
        raise self.error(node, "an integer operator other than + - * //")

    def compare(self, node: ast.Compare) -> Scalar:
        b = self.builder
        result, left = None, self.expr(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            right = self.expr(right_node)
            kind = self.unify(left.kind, right.kind)
            x, y = self.cast(left, kind).value, self.cast(right, kind).value
            symbol = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
                      ast.NotEq: "!="}.get(type(op))
            if symbol is None:
                raise self.error(node, "a comparison other than < <= > >= == !=")
            if _is_float(kind):   # NaN compares false, except for !=
                test = (b.fcmp_unordered(symbol, x, y) if symbol == "!="
                        else b.fcmp_ordered(symbol, x, y))
            else:
                test = b.icmp_signed(symbol, x, y)
            result = test if result is None else b.and_(result, test)
            left = right
        return Scalar("bool", result)

    def call(self, node: ast.Call) -> Scalar:
        b = self.builder
        name = _dotted(node.func)
        args = node.args
        if name == "dtype":
            return self.cast(self.expr(args[0]), self.dtype.name)
        if name == "abs":
            v = self.expr(args[0])
            if _is_float(v.kind):
                fabs = self.module.declare_intrinsic("llvm.fabs", [v.value.type])
                return Scalar(v.kind, b.call(fabs, [v.value]))
            negative = b.icmp_signed("<", v.value, ir.Constant(I64, 0))
            return Scalar("int", b.select(negative, b.neg(v.value), v.value))
        if name == "np.sqrt":
            v = self.expr(args[0])
            v = v if _is_float(v.kind) else self.cast(v, "float64")
            sqrt = self.module.declare_intrinsic("llvm.sqrt", [v.value.type])
            return Scalar(v.kind, b.call(sqrt, [v.value]))
        if name.startswith("row_sum"):
            return self.row_sum(node)
        function = _fastmath(name)
        if function is not None:
            emit, dtype = function
            v = self.cast(self.expr(args[0]), dtype.name)
            return Scalar(dtype.name, emit(b, FORMATS[dtype], v.value))
        if name.startswith("math."):
            return self.libm(name[5:], [self.expr(a) for a in args])
        raise self.error(node, f"a call of {name}")

    def libm(self, function: str, args: list) -> Scalar:
        """math.f(x): libm's double function; for a float32 argument the float32 result, as
        Numba types it (computed in double and rounded once)."""
        kind = args[0].kind if _is_float(args[0].kind) else "float64"
        values = [self.cast(a, "float64").value for a in args]
        double = ir.DoubleType()
        fn = self.libc(function, double, [double] * len(values))
        return self.cast(Scalar("float64", self.builder.call(fn, values)), kind)

    def row_sum(self, node: ast.Call) -> Scalar:
        """row_sum(a, start, n): a[start] + ... + a[start + n - 1] in the array's dtype, its
        order left to LLVM (reassoc: partial sums across vector lanes; fastmath.py)."""
        b = self.builder
        array = self.array(node.args[0])
        start, n = self.int_value(node.args[1]), self.int_value(node.args[2])
        element = FLOATS[array.dtype]
        acc = self.alloca(element)
        b.store(ir.Constant(element, 0.0), acc)

        def add(index):
            position = b.add(start, index[0], flags=["nsw"])
            value = b.load(self.pointer_at(array, [position]))
            b.store(b.fadd(b.load(acc), value, flags=REASSOC), acc)
        self.nest([n], add)
        return Scalar(array.dtype.name, b.load(acc))


# -- helpers on the AST -------------------------------------------------------------------------

def _stored(node) -> set:
    """The names assigned anywhere in `node` (an AugAssign's target included)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Store)}


class _Value(ast.expr):
    """An AST expression standing for an int64 IR value computed already (team_loop's row
    bounds)."""
    _fields = ()

    def __init__(self, value):
        super().__init__()
        self.value = value


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return _dotted(node.value) + "." + node.attr
    return ""


def _indices(slice_node) -> list:
    """A subscript's indices (a[()]: none, a 0-d array's element)."""
    if isinstance(slice_node, ast.Tuple):
        return list(slice_node.elts)
    return [slice_node]


def _has_slices(slice_node) -> bool:
    return any(isinstance(i, ast.Slice) for i in _indices(slice_node))


def _whole_slices(slice_node, n: int) -> bool:
    indices = _indices(slice_node)
    return len(indices) == n and all(isinstance(i, ast.Slice) and i.lower is None
                                     and i.upper is None and i.step is None for i in indices)


def _kind(dtype: np.dtype) -> str:
    return "int" if np.dtype(dtype).kind in "iu" else np.dtype(dtype).name


def _is_ellipsis(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis


_FASTMATH = {f"{name}{'_' if name[-1].isdigit() else ''}{bits}": (emit, np.dtype(dtype))
             for name, emit in EMITTERS.items()
             for bits, dtype in ((32, np.float32), (64, np.float64))}


def _fastmath(name: str):
    return _FASTMATH.get(name)

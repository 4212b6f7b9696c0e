"""np.dot(a, b, out) in compiled code: one call of BLAS's gemm or gemv, as Numba calls them.

Numba's np.dot reaches SciPy's BLAS (scipy.linalg.cython_blas: the Fortran routines, every
argument by pointer, 32-bit integers); so does this, through the same entry points, so that
products run on the same library and threads as before. Arrays here are row-major views; to
Fortran a row-major matrix is its transpose, so C = A @ B is computed as C^T = B^T @ A^T: gemm
with the operands swapped, each one's transpose flag saying which of its axes has unit stride.
Where one side of the product is a single row or column (a step's product at B=1), gemv, as
Numba does: OpenBLAS's gemm would pack the whole weight matrix for one row (measured: a
layer-norm LSTM's inference at B=1, H=128 ran 5x slower through gemm).
"""
from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np
from llvmlite import ir

I32 = ir.IntType(32)
I64 = ir.IntType(64)
I8 = ir.IntType(8)

ROUTINES = {np.dtype(np.float32): "sgemm", np.dtype(np.float64): "dgemm"}
VECTOR_ROUTINES = {np.dtype(np.float32): "sgemv", np.dtype(np.float64): "dgemv"}


def symbol(routine: str) -> str:
    """The name compiled code calls `routine` by (bound to SciPy's address at load time)."""
    return f"rnncc_{routine}"


@lru_cache(maxsize=None)
def addresses() -> dict:
    """{symbol: address} of SciPy's gemm routines."""
    from scipy.linalg import cython_blas
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                  ctypes.c_char_p]
    found = {}
    for routine in [*ROUTINES.values(), *VECTOR_ROUTINES.values()]:
        capsule = cython_blas.__pyx_capi__[routine]
        found[symbol(routine)] = get_pointer(capsule, get_name(capsule))
    return found


def _declare(module: ir.Module, dtype, vector: bool = False) -> ir.Function:
    name = symbol((VECTOR_ROUTINES if vector else ROUTINES)[np.dtype(dtype)])
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    char_p, int_p = I8.as_pointer(), I32.as_pointer()
    real_p = (ir.FloatType() if np.dtype(dtype) == np.float32 else ir.DoubleType()).as_pointer()
    if vector:   # trans, m, n, alpha, a, lda, x, incx, beta, y, incy
        arguments = [char_p, int_p, int_p, real_p, real_p, int_p, real_p, int_p, real_p,
                     real_p, int_p]
    else:        # transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc
        arguments = [char_p, char_p, int_p, int_p, int_p, real_p, real_p, int_p, real_p, int_p,
                     real_p, real_p, int_p]
    return ir.Function(module, ir.FunctionType(ir.VoidType(), arguments), name)


def gemm(lowering, a, v, out, node) -> None:
    """out = a @ v (np.dot's meaning; a vector operand is a row or a column), emitted into
    `lowering`'s function."""
    b = lowering.builder
    one = ir.Constant(I64, 1)
    if a.ndim == 1:       # a row: 1 x k
        m, k = one, a.shape[0]
        a_unit, a_ld = "last", k
    else:
        (m, k), a_unit = a.shape, a.unit
        a_ld = a.strides[0] if a_unit == "last" else a.strides[1]
    if v.ndim == 1:       # a column: k x 1, each row one element
        n, v_unit, v_ld = one, "last", v.strides[0]
    else:
        n, v_unit = v.shape[1], v.unit
        v_ld = v.strides[0] if v_unit == "last" else v.strides[1]
    if out.ndim == 2 and out.unit == "last":
        c_ld = out.strides[0]
    elif out.ndim == 1:
        c_ld = n if v.ndim == 2 else out.strides[0]
    else:
        raise lowering.error(node, "np.dot into an output whose rows are not unit-stride")
    for operand, unit in ((a, a_unit), (v, v_unit)):
        if unit not in ("last", "first"):
            raise lowering.error(node, "np.dot of an operand with no unit-stride axis")
        if operand.dtype != out.dtype:
            raise lowering.error(node, "np.dot of operands of different dtypes")

    # To Fortran: C^T (n x m) = op(v)^T ... : first operand v, second a.
    f_trans_first = "N" if v_unit == "last" else "T"
    f_trans_second = "N" if a_unit == "last" else "T"

    def at_least(value, minimum):
        return b.select(b.icmp_signed("<", value, minimum), minimum, value)

    first_rows = n if f_trans_first == "N" else k        # rows as Fortran stores them
    second_rows = k if f_trans_second == "N" else m
    lds = [at_least(v_ld, at_least(first_rows, one)), at_least(a_ld, at_least(second_rows, one)),
           at_least(c_ld, at_least(n, one))]

    empty = b.or_(b.icmp_signed("==", m, ir.Constant(I64, 0)),
                  b.icmp_signed("==", n, ir.Constant(I64, 0)))
    no_terms = b.icmp_signed("==", k, ir.Constant(I64, 0))
    element = a.ptr.type.pointee
    with b.if_then(b.not_(empty)):
        with b.if_else(no_terms) as (zero, product):
            with zero:   # a sum of nothing: zeros, as np.dot gives
                out2 = out if out.ndim == 2 else None
                extents = [m, n] if out2 is not None else [out.shape[0]]

                def clear(index):
                    b.store(ir.Constant(element, 0.0), lowering.pointer_at(out, index))
                lowering.nest(extents, clear)
            with product:
                _product(lowering, a, v, out, (m, n, k), (a_unit, v_unit),
                         (f_trans_first, f_trans_second), lds)


def _product(lowering, a, v, out, sizes, units, transposes, lds) -> None:
    """The BLAS call: gemv where the result is one column (n = 1) or one row (m = 1), else
    gemm."""
    b = lowering.builder
    m, n, k = sizes
    a_unit, v_unit = units
    one = ir.Constant(I64, 1)
    element = a.ptr.type.pointee

    def char(c):
        slot = lowering.alloca(I8)
        b.store(ir.Constant(I8, ord(c)), slot)
        return slot

    def int_arg(value):
        slot = lowering.alloca(I32)
        b.store(b.trunc(value, I32), slot)
        return slot

    def real_arg(value):
        slot = lowering.alloca(element)
        b.store(ir.Constant(element, value), slot)
        return slot

    def at_least(value, minimum):
        return b.select(b.icmp_signed("<", value, minimum), minimum, value)

    def stride(array, axis):   # of a 1-d or 2-d view along `axis` (a vector's only axis)
        return array.strides[min(axis, array.ndim - 1)]

    gemv = _declare(lowering.module, out.dtype, vector=True)
    column = b.icmp_signed("==", n, one)
    row = b.icmp_signed("==", m, one)
    with b.if_else(column) as (is_column, not_column):
        with is_column:   # out[:, 0] = a @ v[:, 0]; a row-major is Fortran's a^T
            trans, rows, cols = ("T", k, m) if a_unit == "last" else ("N", m, k)
            ld = a.strides[0] if a_unit == "last" else a.strides[1]
            if a.ndim == 1:
                trans, rows, cols, ld = "T", k, m, k
            b.call(gemv, [char(trans), int_arg(rows), int_arg(cols), real_arg(1.0), a.ptr,
                          int_arg(at_least(ld, at_least(rows, one))), v.ptr,
                          int_arg(at_least(stride(v, 0), one)), real_arg(0.0), out.ptr,
                          int_arg(at_least(stride(out, 0), one))])
        with not_column:
            with b.if_else(row) as (is_row, neither):
                with is_row:   # out[0, :] = a[0, :] @ v: Fortran's v^T (n x k) times a row
                    trans, rows, cols = ("N", n, k) if v_unit == "last" else ("T", k, n)
                    ld = v.strides[0] if v_unit == "last" else v.strides[1]
                    b.call(gemv, [char(trans), int_arg(rows), int_arg(cols), real_arg(1.0),
                                  v.ptr, int_arg(at_least(ld, at_least(rows, one))), a.ptr,
                                  int_arg(at_least(stride(a, 1), one)), real_arg(0.0),
                                  out.ptr, int_arg(at_least(stride(out, 1), one))])
                with neither:
                    gemm = _declare(lowering.module, out.dtype)
                    first, second = transposes
                    b.call(gemm, [char(first), char(second), int_arg(n), int_arg(m),
                                  int_arg(k), real_arg(1.0), v.ptr, int_arg(lds[0]), a.ptr,
                                  int_arg(lds[1]), real_arg(0.0), out.ptr, int_arg(lds[2])])

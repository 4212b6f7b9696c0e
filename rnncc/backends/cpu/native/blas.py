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
from typing import NamedTuple

import numpy as np
from llvmlite import ir

from . import gemm as packed_gemm

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
    """{symbol: address} of SciPy's gemm and gemv routines: found in the OpenBLAS library a
    SciPy wheel bundles (scipy.libs/, the routines its cython_blas calls, 3 ms to find), else
    through scipy.linalg.cython_blas (importing scipy.linalg: 0.2 s)."""
    return _bundled() or _through_cython_blas()


def _bundled() -> dict | None:
    """The routines in a SciPy wheel's own OpenBLAS (LP64: `scipy_sgemm_`, 32-bit integers,
    the library cython_blas links to), or None where there is none such."""
    import glob
    import importlib.util
    import os
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = os.path.dirname(list(spec.submodule_search_locations)[0])
    for path in sorted(glob.glob(os.path.join(root, "scipy.libs", "libscipy_openblas*.so"))):
        library = ctypes.CDLL(path)
        try:
            return {symbol(r): ctypes.cast(getattr(library, f"scipy_{r}_"), ctypes.c_void_p).value
                    for r in [*ROUTINES.values(), *VECTOR_ROUTINES.values()]}
        except AttributeError:   # another build of it (ILP64: scipy_sgemm_64_)
            continue
    return None


def _through_cython_blas() -> dict:
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


class _Matrix(NamedTuple):
    """An operand or result as a matrix: its pointer, which axis has unit stride ("last":
    row-major, "first": column-major) and its element steps along rows and along columns."""
    ptr: ir.Value
    unit: str
    steps: tuple

    @property
    def ld(self) -> ir.Value:
        """BLAS's leading dimension: the step along the axis that is not unit-stride."""
        return self.steps[0] if self.unit == "last" else self.steps[1]


def _matrix(array, vector_as: str) -> _Matrix:
    """A 2-d view as a _Matrix; a 1-d one as a row (vector_as "row": 1 x k) or a column
    ("column": k x 1, each row one element)."""
    if array.ndim == 2:
        return _Matrix(array.ptr, array.unit, tuple(array.strides))
    (extent,), (stride,) = array.shape, array.strides
    if vector_as == "row":
        return _Matrix(array.ptr, "last", (extent, stride))
    return _Matrix(array.ptr, "last", (stride, ir.Constant(I64, 1)))


def gemm(lowering, a, v, out, node) -> None:
    """out = a @ v (np.dot's meaning; a vector operand is a row or a column), emitted into
    `lowering`'s function: nothing where the result is empty, zeros where the sum has no terms,
    else one BLAS call."""
    if not (out.ndim == 1 or out.unit == "last"):
        raise lowering.error(node, "np.dot into an output whose rows are not unit-stride")
    for operand in (a, v):
        if operand.ndim == 2 and operand.unit not in ("last", "first"):
            raise lowering.error(node, "np.dot of an operand with no unit-stride axis")
        if operand.dtype != out.dtype:
            raise lowering.error(node, "np.dot of operands of different dtypes")
    if _packs(lowering, a, v, out):
        _packed(lowering, a, v, out)
        return
    b = lowering.builder
    one, zero = ir.Constant(I64, 1), ir.Constant(I64, 0)
    m, k = (one, a.shape[0]) if a.ndim == 1 else a.shape
    n = one if v.ndim == 1 else v.shape[1]
    empty = b.or_(b.icmp_signed("==", m, zero), b.icmp_signed("==", n, zero))
    with b.if_then(b.not_(empty)):
        with b.if_else(b.icmp_signed("==", k, zero)) as (no_terms, terms):
            with no_terms:   # a sum of nothing: zeros, as np.dot gives
                element = out.ptr.type.pointee
                lowering.nest(out.shape, lambda index: b.store(
                    ir.Constant(element, 0.0), lowering.pointer_at(out, index)))
            with terms:
                result = _matrix(out, "column" if v.ndim == 1 else "row")
                _call(lowering, _matrix(a, "row"), _matrix(v, "column"), result, m, n, k)


def _packs(lowering, a, v, out) -> bool:
    """Whether out = a @ v runs as rnncc's packed GEMM (gemm.py): a, out and v matrices, a
    with unit stride along either axis (or a row vector), out's rows unit-stride; v a whole
    read-only parameter (packed once per call), or any matrix outside the time loop (packed
    for this product: a weight's gradient over all rows). Inside the loop, a product by a
    matrix that changes runs on BLAS (its packing would be every step's)."""
    if not lowering.packed_gemm or v.ndim != 2 or not (v.whole is not None
                                                        or lowering.depth == 0):
        return False
    if a.ndim == 1:
        return a.unit == "last" and out.ndim == 1
    return a.unit in ("last", "first") and out.ndim == 2 and out.unit == "last"


def _packed(lowering, a, v, out) -> None:
    b = lowering.builder
    element = out.ptr.type.pointee
    real_p = element.as_pointer()
    one = ir.Constant(I64, 1)
    transposed = a.ndim == 2 and a.unit == "first"
    if a.ndim == 1:
        m, k, lda, ldc = one, a.shape[0], a.shape[0], v.shape[1]
    else:
        (m, k), ldc = a.shape, out.strides[0]
        lda = a.strides[1] if transposed else a.strides[0]
    n = v.shape[1]
    if v.whole is not None:
        weight, temporary = lowering.packed_weight(v), None
    else:
        weight = temporary = lowering.pack(v)
    routine = lowering.libc(packed_gemm.symbol("team_gemm_t" if transposed else "team_gemm",
                                               a.dtype), ir.VoidType(),
                            [I64, I64, I64, real_p, I64, real_p, real_p, I64])
    b.call(routine, [m, n, k, a.ptr, lda, weight, out.ptr, ldc])
    if temporary is not None:
        b.call(lowering.libc("free", ir.VoidType(), [I8.as_pointer()]),
               [b.bitcast(temporary, I8.as_pointer())])


def _call(lowering, a: _Matrix, v: _Matrix, out: _Matrix, m, n, k) -> None:
    """The BLAS call: gemv where the result is one column (n = 1) or one row (m = 1), else
    gemm. Fortran sees a row-major matrix as its transpose, so each call is written for the
    transposed problem: out^T = v^T a^T. A leading dimension below what BLAS checks for (a
    matrix with one row or column, where it is never used) is raised to it."""
    b = lowering.builder
    one = ir.Constant(I64, 1)
    element = out.ptr.type.pointee
    dtype = np.dtype(np.float32) if isinstance(element, ir.FloatType) else np.dtype(np.float64)

    def char(c):
        slot = lowering.alloca(I8)
        b.store(ir.Constant(I8, ord(c)), slot)
        return slot

    def integer(value):
        slot = lowering.alloca(I32)
        b.store(b.trunc(value, I32), slot)
        return slot

    def real(value):
        slot = lowering.alloca(element)
        b.store(ir.Constant(element, value), slot)
        return slot

    def ld(value, rows):   # at least max(1, rows), the rows Fortran stores
        def at_least(x, minimum):
            return b.select(b.icmp_signed("<", x, minimum), minimum, x)
        return integer(at_least(value, at_least(rows, one)))

    gemv = _declare(lowering.module, dtype, vector=True)
    with b.if_else(b.icmp_signed("==", n, one)) as (column, not_column):
        with column:   # out[:, 0] = a @ v[:, 0]: to Fortran, a row-major a is a^T (k x m)
            trans, rows, cols = ("T", k, m) if a.unit == "last" else ("N", m, k)
            b.call(gemv, [char(trans), integer(rows), integer(cols), real(1.0), a.ptr,
                          ld(a.ld, rows), v.ptr, integer(v.steps[0]), real(0.0), out.ptr,
                          integer(out.steps[0])])
        with not_column:
            with b.if_else(b.icmp_signed("==", m, one)) as (row, neither):
                with row:   # out[0, :] = a[0, :] @ v: to Fortran, v^T (n x k) times a row
                    trans, rows, cols = ("N", n, k) if v.unit == "last" else ("T", k, n)
                    b.call(gemv, [char(trans), integer(rows), integer(cols), real(1.0), v.ptr,
                                  ld(v.ld, rows), a.ptr, integer(a.steps[1]), real(0.0),
                                  out.ptr, integer(out.steps[1])])
                with neither:   # out^T (n x m) = op(v) (n x k) @ op(a) (k x m)
                    first = "N" if v.unit == "last" else "T"
                    second = "N" if a.unit == "last" else "T"
                    b.call(_declare(lowering.module, dtype),
                           [char(first), char(second), integer(n), integer(m), integer(k),
                            real(1.0), v.ptr, ld(v.ld, n if first == "N" else k), a.ptr,
                            ld(a.ld, k if second == "N" else m), real(0.0), out.ptr,
                            ld(out.ld, n)])

"""The elementary functions of elementary.py as Numba intrinsics, and row_sum, for the functions
Numba compiles (the threaded variants; see elementary.py for the functions, their accuracy and
why they are written this way).

Each function is a Numba intrinsic: a call emits the function's LLVM instructions in place, in
the caller's loop, where LLVM vectorizes them with the loop. Nothing is compiled on its own: as
separate Numba functions (inlined by LLVM, forceinline) the five an lstm used (sigmoid, tanh and
the exp, expm1 and scaling they call) cost a fresh install 0.3 s before its first result;
Numba's own inlining (inline="always") re-typed the callee's IR at every call site, 0.9 s of an
lstm's first forward (both measured). Callers compile with codegen.CALLER_OPTIONS:
error_model="numpy" (Python's error model checks every division for zero, and that check stops
vectorization) and the `contract` flag the instructions carry for their own arithmetic.

row_sum (row_sum32/row_sum64), a kernel's sum over a row's columns (mean, sum), is the one
exception: a sum in whatever order vectorizes (see there).
"""
from __future__ import annotations

import numpy as np
from numba import from_dtype, njit, types
from numba.extending import intrinsic

from .elementary import EMITTERS, FORMATS, _Format

def _function(name: str, emit, f: _Format):
    """The intrinsic `name` (exp32, expm1_32, ...): a call of it in a Numba function emits
    `emit`'s instructions there. Its argument is cast to the format (generated kernels pass
    exactly that)."""
    @intrinsic
    def function(typingctx, x):
        if not isinstance(x, (types.Float, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            value = context.cast(builder, args[0], signature.args[0], numba_type)
            return emit(builder, f, value)
        return numba_type(x), codegen
    numba_type = from_dtype(f.dtype)
    function.__name__ = function.__qualname__ = name
    return function


FUNCTIONS = {dtype: {
    name: _function(f"{name}{'_' if name[-1].isdigit() else ''}{bits}", emit, FORMATS[dtype])
    for name, emit in EMITTERS.items()} for dtype, bits in ((np.dtype(np.float32), 32),
                                                             (np.dtype(np.float64), 64))}

# the names generated modules import
exp32, expm1_32, log32, log1p32, sigmoid32, tanh32, softplus32 = (
    FUNCTIONS[np.dtype(np.float32)][n] for n in EMITTERS)
exp64, expm1_64, log64, log1p64, sigmoid64, tanh64, softplus64 = (
    FUNCTIONS[np.dtype(np.float64)][n] for n in EMITTERS)


# -- sums over a row ---------------------------------------------------------------------------
# A kernel's mean or sum over a row's columns. A sum's order is the one thing these kernels
# leave unspecified: with reassociation allowed here (and only here: LLVM inlines the call and
# keeps each instruction's own flags), the loop vectorizes into partial sums, 12x faster than
# the one-at-a-time chain of adds (a sum of 128 float32: 36 -> 3 ns, measured), and no less
# accurate (partial sums are a step towards pairwise summation). The order then depends on the
# vector width the CPU has.

_REASSOC = dict(cache=True, error_model="numpy", fastmath={"contract", "reassoc"})


@njit(**_REASSOC)
def row_sum(a, start, n):
    acc = a.dtype.type(0.0)   # in the array's dtype: a float32 row sums in float32
    for j in range(n):
        acc += a[start + j]
    return acc


# the names generated modules import, per dtype as for the functions above (one function:
# Numba compiles it once per array type)
row_sum32 = row_sum64 = row_sum


def compiled() -> list:
    """Every Numba function here (the disk cache holds their machine code)."""
    from numba.core.registry import CPUDispatcher
    found = {id(f): f for f in globals().values() if isinstance(f, CPUDispatcher)}
    return list(found.values())   # (row_sum under three names: once)

"""Numba's compiler, telling LLVM that a generated function's arrays do not overlap.

Numba passes an array to a function as its data pointer and its shape and strides, and LLVM
must assume any two data pointers may overlap. Before vectorizing a kernel's loop over a row
it then checks every pair of arrays the loop writes or reads for overlap, at run time: the
layer-norm LSTM's backward had 150 of these compares in front of one loop, and a third of its
machine code was such checks and the scalar loops they fall back to. LLVM's `noalias` on each
array argument says that memory written through one argument is reached through no other, so
the checks and the fallback loops go: measured (bench/compile.py, this machine class) the
layer-norm LSTM's backward 30877 -> 21335 lines of assembly, LLVM's time on forward and
backward 7.9 -> 5.8 s; an LSTM's functions a fifth smaller.

Numba has the flag (Flags.noalias: what its parfors set on a gufunc whose arrays it finds
apart) but no jit option for it; a generated module passes this class as `pipeline_class`. In
the threaded variant the flag reaches the gufunc of each prange loop too: its arrays are the
function's own arguments (a kernel takes its row views inside the loop), so the promise holds
there as well.

The promise is the runtime's to keep, and it does: a generated function's arguments are its
own arrays (allocated per call or kept per workspace key, one per argument; a carried state
is copied in) and, read only, the caller's arrays (parameters, inputs, the tape, upstream
gradients), which may overlap each other harmlessly since nothing writes them. The cpu target
binds no aliasing arguments (no row aliases: plan/layout.py's Target). A test holds every
shipped cell's arguments to it (tests/backends/test_cpu.py).
"""
from __future__ import annotations

from numba.core.compiler import Compiler


class NoAliasCompiler(Compiler):
    def define_pipelines(self):
        # The flags are this compile's own (the dispatcher makes them per compile); lowering
        # reads noalias when it declares the function.
        self.state.flags.noalias = True
        return super().define_pipelines()

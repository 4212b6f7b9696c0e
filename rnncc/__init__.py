"""rnncc: a dataflow-graph compiler for recurrent neural-network cells.

    cell = rnncc.compile("specs/lstm.cell")   # or spec text, or rnncc.load("lstm")
    p = cell.init_params(seed=0, I=16, H=32)
    ys, final = cell.forward(p, x)           # x: [T, B, I]

    layer = rnncc.RNN("lstm", 16, 32)        # a layer on the cpu target: params, workspace
    y, final = layer(x, lengths=lengths)
    dx = layer.backward(dy)                  # fills layer.grads

    layer = rnncc.from_torch(torch_lstm); module = rnncc.to_torch(layer)   # imports torch
"""
import os

# The cpu target's GEMMs run on OpenBLAS's threads (SciPy's, which Numba calls), and between them
# its kernels run on Numba's threads (or on the calling thread alone: see
# backends/cpu/threads.py, which also starts Numba's OpenMP runtime with sleeping idle threads
# without changing the policy of any other runtime). OpenBLAS's idle threads spin for 2^28 cycles
# (~0.1 s) after each GEMM and take the cores from everything else in the process; 2^4 ends that
# (measured, bench/cpu.py, 2 cores: torch's lstm forward beside rnncc 122 ms -> 90 ms, rnncc's
# own rounds steadier). It only takes effect for a BLAS loaded after this (SciPy's, which only
# Numba's products use here); a value the user set wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .errors import SpecError, SpecWarning  # noqa: E402
from .runtime import RNN, Cell, compile, load, shipped  # noqa: A004, E402
from .interop.pytorch import from_torch, to_torch  # noqa: E402  (torch only when called)

from .version import __version__  # noqa: E402
__all__ = ["SpecError", "SpecWarning", "Cell", "RNN", "compile", "load", "shipped", "from_torch",
           "to_torch", "__version__"]

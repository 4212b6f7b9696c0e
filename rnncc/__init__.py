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
# its kernels run on the calling thread, or on Numba's threads where their idle threads sleep
# (backends/cpu/threads.py; rnncc sets no OpenMP policy: the process's OpenMP runtime is shared
# with torch). OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each GEMM and take the
# cores from everything else in the process; 2^4 ends that (measured, bench/cpu.py, 2 cores:
# torch's lstm forward beside rnncc 122 ms -> 90 ms, rnncc's own rounds steadier). It takes
# effect for the OpenBLAS copies loaded after this (SciPy's; numpy's too where the process has
# not imported numpy yet); a value the user set wins.
# (benchmark/processes.py starts other libraries' timing processes without it)
SET_AT_IMPORT = () if "OPENBLAS_THREAD_TIMEOUT" in os.environ else ("OPENBLAS_THREAD_TIMEOUT",)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .errors import SpecError, SpecWarning  # noqa: E402
from .runtime import RNN, Cell, compile, load, shipped  # noqa: A004, E402
from .interop.pytorch import from_torch, to_torch  # noqa: E402  (torch only when called)
from .version import __version__  # noqa: E402

__all__ = ["SpecError", "SpecWarning", "Cell", "RNN", "compile", "load", "shipped", "from_torch",
           "to_torch", "__version__"]

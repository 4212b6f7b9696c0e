"""rnncc: a dataflow-graph compiler for recurrent neural-network cells.

    cell = rnncc.compile("specs/lstm.cell")   # or spec text, or rnncc.load("lstm")
    p = cell.init_params(seed=0, I=16, H=32)
    ys, final = cell.forward(p, x)           # x: [T, B, I]
"""
from .errors import SpecError
from .runtime import Cell, compile, load, shipped  # noqa: A004

__version__ = "0.1.0"
__all__ = ["SpecError", "Cell", "compile", "load", "shipped", "__version__"]

"""Any cell as the eager PyTorch module a user would write for it: `rnncc.torch.Eager`.

The yardstick for a custom cell: PyTorch has no fused kernel for it, so what a user runs today
is a Python loop of torch ops over the time steps. The module runs that loop as
rnncc/interop/torch_source.py writes it from the cell's step graph (stacked gate matrices, the
input products before the loop, one line of torch per node), in a Python function that is
readable (`.source`) and scriptable (torch.jit.script takes the module); torch's autograd
differentiates it. It serves the benchmarks (`rnncc bench --vs torch`, bench/cpu.py) and the
study as the eager contender of any cell that torch.nn does not ship. Parameters carry
rnncc.torch.RNN's names (W_i_l0, ...), so a state dict moves between the two:

    eager = rnncc.torch.Eager("lnlstm", 32, 64)
    eager.load_state_dict(rnncc.torch.RNN("lnlstm", 32, 64).state_dict())
    y, finals = eager(x)          # x [T, B, I]; finals: state -> [1, B, dim]

One layer, one direction, time-major, no packed sequences.
"""
from __future__ import annotations

import linecache
from itertools import count
from typing import Dict, Optional

import numpy as np
import torch

from ..interop.torch_source import HELPERS, generate
from ..runtime.layer import _as_cell

_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_sources = count()


def _compile_source(source: str, cell_name: str):
    """The generated function, with its source registered where inspect (and so
    torch.jit.script) finds it."""
    filename = f"<rnncc.torch.Eager {cell_name} #{next(_sources)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"torch": torch}
    exec(HELPERS, namespace)
    exec(compile(source, filename, "exec"), namespace)
    return namespace["forward"]


class Eager(torch.nn.Module):
    """A cell as an eager PyTorch module: one layer, one direction (see the module doc).

    cell: a rnncc.Cell, a shipped spec's name, a spec path or spec text; input_size and
    hidden_size set the cell's input dimension and its first state's, other dimensions are
    keyword arguments, as for rnncc.torch.RNN. Parameters are drawn by cell.init_params
    (seed), as rnncc.RNN draws them, so a module and an rnncc layer of the same seed start
    from the same weights.
    """

    def __init__(self, cell, input_size: int, hidden_size: int, *, dtype=torch.float32,
                 seed: int = 0, **dims):
        super().__init__()
        if dtype not in _DTYPES:
            raise TypeError(f"rnncc.torch.Eager runs in torch.float32 or torch.float64, "
                            f"not {dtype}")
        self.cell = cell = _as_cell(cell)
        if len(cell.inputs) != 1:
            raise ValueError(f"cell {cell.name!r} has several inputs ({', '.join(cell.inputs)}); "
                             f"the module takes one")
        from ..runtime.layer import RNN as _Layer
        layer = _Layer(cell, input_size, hidden_size, dtype=_DTYPES[dtype], seed=seed, **dims)
        self.sizes = dict(layer.sizes)
        self.input_size, self.hidden_size = input_size, hidden_size
        for name, array in layer.params.items():
            self.register_parameter(name, torch.nn.Parameter(torch.tensor(array)))
        self.source = generate(cell, self.sizes)
        # the generated function is this module's class's forward, in a class of its own (as
        # torch.fx's GraphModule does): torch.jit.script compiles type(module).forward
        forward = _compile_source(self.source, cell.name)
        forward.__doc__ = Eager.forward.__doc__
        self.__class__ = type(Eager.__name__, (Eager,), {"forward": forward})

    def forward(self, x: torch.Tensor, state: Optional[Dict[str, torch.Tensor]] = None):
        """x [T, B, I] -> (y [T, B, out], finals: state name -> [1, B, dim]); state, if
        given, maps state names to [1, B, dim] initial values (missing ones start at zero)."""
        raise NotImplementedError   # each instance's class has the generated one

    def extra_repr(self) -> str:
        return f"{self.cell.name}, {self.input_size}, {self.hidden_size}"

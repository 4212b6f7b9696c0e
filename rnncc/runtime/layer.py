"""rnncc.RNN: a recurrent layer of any cell, with its parameters, workspace and gradients.

    layer = rnncc.RNN("lstm", input_size=32, hidden_size=64)      # or a Cell, or a spec path
    y, final = layer(x, lengths=lengths)      # x [T, B, I] (batch_first: [B, T, I])
    dx = layer.backward(dy, dfinal)           # fills layer.grads (overwrites, not accumulates)

The layer owns:
- its parameters, `layer.params` (name -> array, as cell.init_params). On the cpu target each
  parameter is a view into the stacked matrix the plan multiplies with (W_ifgo = the four gates'
  W stacked), so the stacking happens once, at construction, and updating a parameter in place
  (`p -= lr * g`) updates what the kernels read. Assigning `layer.params[name] = array` copies the
  values in (shape checked) and keeps the view. A parameter that a second stacked matrix also
  holds (no shipped cell has one) is stacked again at each call.
- its workspace: the arrays of the generated functions, allocated at the first call of a shape
  (T, B) and reused by later calls of that shape.
- what backward needs from the last forward call (so backward follows the forward it belongs to,
  and a second forward call replaces it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import backends
from .arguments import _as_array, _fmt, check_backward, check_forward, float_dtype


class _Params(dict):
    """The layer's parameter dict: assigning copies into the existing array."""

    def __setitem__(self, name, value):
        if name not in self:
            raise KeyError(f"unknown parameter {name!r}; this layer's parameters are: "
                           f"{', '.join(self)}")
        target = dict.__getitem__(self, name)
        array = _as_array(f"parameter {name!r}", value)
        if array.shape != target.shape:
            raise ValueError(f"parameter {name!r} has shape {_fmt(array.shape)} but the expected "
                             f"shape is {_fmt(target.shape)}")
        np.copyto(target, array, casting="unsafe")

    def update(self, other=(), **kwargs):
        for name, value in dict(other, **kwargs).items():
            self[name] = value


def _as_cell(cell):
    from .cell import Cell, compile, load
    if isinstance(cell, Cell):
        return cell
    if isinstance(cell, Path) or (isinstance(cell, str) and ("\n" in cell or cell.endswith(".cell"))):
        return compile(cell)
    if isinstance(cell, str):
        return load(cell)
    raise TypeError(f"cell must be a rnncc.Cell, a shipped spec's name, a spec path or spec "
                    f"text, not {type(cell).__name__}")


class RNN:
    """A recurrent layer running `cell` over sequences (see the module docstring).

    input_size and hidden_size set the sizes of the cell's input dimension and of its first
    state's dimension (I and H in the shipped specs); further dimensions are keyword arguments
    (`P=...`). Parameters are drawn by cell.init_params(seed).
    """

    def __init__(self, cell, input_size: int, hidden_size: int, *, batch_first: bool = False,
                 target: str = "cpu", dtype=np.float32, seed: int = 0, **sizes):
        self.cell = _as_cell(cell)
        self.backend = backends.get(target)
        self.target, self.dtype, self.batch_first = target, float_dtype(dtype), bool(batch_first)
        cell = self.cell
        if len(cell.inputs) != 1:
            raise ValueError(f"cell {cell.name!r} has several inputs ({', '.join(cell.inputs)}); "
                             f"a layer takes one: call cell.forward with a dict of inputs")
        x_dim = cell.symbolic_shapes[cell.inputs[0]][0]
        h_dim = cell.symbolic_shapes[cell.states[0]][0]
        for what, dim, size in (("input_size", x_dim, input_size),
                                ("hidden_size", h_dim, hidden_size)):
            if isinstance(dim, int):
                if size != dim:
                    raise ValueError(f"{what} is {size}, but cell {cell.name!r} fixes it to {dim}")
            elif dim in sizes:
                raise ValueError(f"dimension {dim} is the {what}; pass it once, as {what}")
            else:
                sizes[dim] = size
        params = cell.init_params(seed=seed, dtype=self.dtype, **sizes)
        self.sizes = {d: sizes[d] for d in cell.dims}
        self.input_size, self.hidden_size = input_size, hidden_size
        self._workspace: dict = {}
        self._packed: dict | None = None
        self._shared: dict = {}       # stacked matrices re-stacked per call (a parameter twice)
        self._compiled = None
        if target == "cpu":
            self._compiled = self.backend.compiled(cell, self.dtype)
            params = self._pack(params)
        self.params = _Params(params)
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        self._last = None
        self.dstate: dict = {}
        self.training = True

    def __repr__(self) -> str:
        return (f"rnncc.RNN({self.cell.name!r}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}, batch_first={self.batch_first}, "
                f"target={self.target!r}, dtype={self.dtype.name})")

    def _pack(self, params: dict) -> dict:
        """Stack each packed matrix once and make its parameters views of it."""
        self._packed, views = {}, {}
        for name, members in self._compiled.packs().items():
            if any(m in views for m in members):
                self._shared[name] = members
                continue
            stacked = np.ascontiguousarray(np.concatenate([params[m] for m in members], axis=0))
            self._packed[name] = stacked
            row = 0
            for m in members:
                rows = params[m].shape[0]
                views[m] = stacked[row:row + rows]
                row += rows
        return {name: views.get(name, params[name]) for name in params}

    def _packed_now(self) -> dict | None:
        if self._packed is None:
            return None
        packed = dict(self._packed)
        for name, members in self._shared.items():
            packed[name] = np.ascontiguousarray(
                np.concatenate([self.params[m] for m in members], axis=0))
        return packed

    # -- forward and backward --------------------------------------------------------------------
    def _time_major(self, what: str, array, width):
        array = _as_array(what, array)
        if array.ndim != 3 or (width is not None and array.shape[2] != width):
            layout = "[B, T, " if self.batch_first else "[T, B, "
            raise ValueError(f"{what} has shape {_fmt(array.shape)} but the expected shape is "
                             f"{layout}{width if width is not None else 'd'}]")
        return np.swapaxes(array, 0, 1) if self.batch_first else array

    def _batch_major(self, array):
        return np.ascontiguousarray(np.swapaxes(array, 0, 1)) if self.batch_first else array

    def __call__(self, x, state=None, lengths=None):
        """Run the layer: returns (y, final). y is [T, B, H] ([B, T, H] with batch_first), zero
        past each row's length; final maps each state name to [B, dim], each row's state after
        its own last step. In training mode (the default) it keeps what backward() needs; in
        eval mode (layer.eval()) it keeps nothing and stores only the output: faster."""
        xt = self._time_major("x", x, self.input_size)
        if xt.dtype != self.dtype:
            xt = xt.astype(self.dtype)
        call = check_forward(self.cell, self.params, xt, state, lengths)
        if self._compiled is not None:
            result = self._compiled.forward(call, keep=self.training, workspace=self._workspace,
                                            packed=self._packed_now())
        elif self.training:
            result = self.backend.train(self.cell, call)
        else:
            result = self.backend.forward(self.cell, call)
        ys, final = result[:2]
        self._last = (call, result[2]) if self.training else None
        return self._batch_major(ys), final

    forward = __call__

    def train(self, mode: bool = True) -> "RNN":
        """Training mode (the default): forward calls keep what backward needs."""
        self.training = bool(mode)
        return self

    def eval(self) -> "RNN":
        """Inference mode: forward calls keep nothing (backward is unavailable)."""
        return self.train(False)

    def backward(self, dy, dfinal=None):
        """BPTT through the last forward call: dy like y, dfinal a dict state -> [B, dim]
        (missing states: zero). Fills self.grads (overwriting them) and self.dstate (state name
        -> gradient of the initial state, the dfinal of the previous chunk in truncated BPTT),
        and returns dx, like x."""
        if self._last is None:
            raise RuntimeError("backward() needs a forward call in training mode first: "
                               "y, final = layer(x)" + ("" if self.training else
                                                        " (the layer is in eval mode: "
                                                        "layer.train())"))
        call, tape = self._last
        dyt = self._time_major("dy", dy, None)
        dys, dfinal = check_backward(self.cell, call, dyt, dfinal)
        if self._compiled is not None:
            dparams, dxs, dstate = self._compiled.backward(call, tape, dys, dfinal,
                                                      workspace=self._workspace,
                                                      packed=self._packed_now())
        else:
            dparams, dxs, dstate = self.backend.backward(self.cell, call, tape, dys, dfinal)
        for name, g in dparams.items():
            np.copyto(self.grads[name], g)
        self.dstate = dstate
        return self._batch_major(dxs[self.cell.inputs[0]])

"""rnncc.RNN: a recurrent layer stack of any cell, with its parameters, workspace and gradients.

    layer = rnncc.RNN("lstm", input_size=32, hidden_size=64, num_layers=2, bidirectional=True)
    y, final = layer(x, lengths=lengths)      # x [T, B, I] (batch_first: [B, T, I])
    dx = layer.backward(dy, dfinal)           # fills layer.grads (overwrites, not accumulates)

PyTorch's nn.LSTM/GRU/RNN conventions throughout:
- layer k > 0 reads layer k-1's output (both directions side by side, forward first: 2 x the
  cell's output width when bidirectional); in training calls with dropout > 0, that input is
  multiplied by a fresh mask (zeros with probability `dropout`, else 1 / (1 - dropout));
- the reverse direction reads each row reversed within its own length (as packed sequences do),
  and its outputs are put back in time order;
- states: `state[name]` and `final[name]` are [num_layers * num_directions, B, dim], index
  k * num_directions + d (d = 0 forward, 1 reverse);
- parameters: the cell's names with a suffix per layer and direction, `W_i_l0`, `W_i_l0_reverse`,
  `W_i_l1`, ... (PyTorch's `weight_ih_l1_reverse` becomes the cell's own names;
  rnncc.from_torch and rnncc.to_torch, in rnncc/interop/pytorch.py, map them).

Recurrent regularisers, for any cell (rnncc/regularise), in training calls only:
- zoneout={"h": 0.1, "c": 0.05}: each unit of a named state keeps its previous value where a
  Bernoulli(p) mask, fresh per step, is 1 (eval: the expectation, s' <- p * s + (1 - p) * s');
- recurrent_dropout=p: every state a matrix product reads is multiplied, in those products, by
  a mask drawn once per sequence and row, zeros with probability p, else 1 / (1 - p);
- weight_drop=p: every matrix that multiplies a state is multiplied by a mask drawn once per
  call, likewise scaled; its gradient reaches the unmasked matrix through the mask.
Masks come from the layer's seeded generator, apart from dropout's (the same seed draws the
same masks), and the last call's are `layer.masks`: {"zoneout": {unit: {state: [T, B, dim]}},
"recurrent_dropout": {unit: {state: [B, dim]}}, "weight_drop": {unit: {parameter: its
shape}}}, unit "l0", "l0_reverse", "l1", ..., each in the order the unit runs its steps (the
reverse direction's step t reads position length - 1 - t of its row).

The layer owns its parameters (`layer.params`; on the cpu target views into the stacked matrices
the plan multiplies with, so in-place updates need no re-packing, and `layer.params[name] = a`
copies in), its workspace (arrays reused per call shape) and what backward needs from the last
training call. On the cpu target, independent work runs on threads at once (schedule.py): the
two directions of a layer, and for stacks, layer k+1 on the steps layer k has finished
(`layer.wavefront = False` runs one layer and direction after another instead).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from weakref import WeakKeyDictionary

import numpy as np

from .. import backends
from . import schedule as task_graph
from ..backends.cuda.device import is_device_array
from .arguments import _as_array, _fmt, check_float, check_lengths, check_schedule, float_dtype
from ..regularise import Regularisers, mask_input, product_states, recurrent_matrices, regularise
from .naming import suffix
from .sublayer import SubLayer, reverse_within_lengths

DROPOUT_STREAM = 0x64726F70  # the dropout masks' random stream, apart from the parameters'
REGULARISER_STREAM = 0x7265676C  # the regularisers' masks, apart from both

# Rows x widest dimension from which one layer's step already keeps the cores busy: the layer
# wavefront then gains nothing forward and loses backward (each piece sums its own weight
# gradients, and the sums are added up). Measured on 2 cores against one layer after another
# (bench/stacks.py, rnncc/serial): lstm B=16, H=128 (2048) 0.72-0.83 fwd; B=32, H=256 (8192)
# 0.84 fwd, 0.87 fwd+bwd; B=64, H=256 (16384) 0.97, 0.98; gru B=128, H=512 (65536) 1.06, 1.08.
WAVEFRONT_MAX_WORK = 32768


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


def bernoulli(rng: np.random.Generator, shape: tuple, p: float, dtype) -> np.ndarray:
    """A mask of `shape`: 1 with probability p (rounded to a multiple of 2^-16), else 0, in
    `dtype`. From 16-bit draws, four per raw 64-bit output of the generator: a [100, 64, 256]
    mask in 1.8 ms where float32 uniforms took 6.4 (2 cores, AMD EPYC), which was a tenth of
    an LSTM training step with zoneout on two states."""
    size = int(np.prod(shape))
    raw = rng.bit_generator.random_raw((size + 3) // 4)
    draws = raw.view(np.uint16)[:size].reshape(shape)
    return (draws < round(p * 65536)).astype(dtype)


_REGULARISED = WeakKeyDictionary()   # cell -> (zoned-out states, dropout) -> its cell


def regularised_cell(cell, regs: Regularisers):
    """The cell a layer's units run: the user's, or its step graph with the masks of zoneout
    and recurrent dropout as inputs. The graph depends on which states are zoned out and
    whether dropout is on, not on the probabilities: layers that differ only in those share
    one cell, and so its compiled code."""
    if not regs.in_graph:
        return cell
    from .cell import Cell
    key = (tuple(s for s in cell.states if s in regs.zoneout), regs.recurrent_dropout > 0)
    cells = _REGULARISED.setdefault(cell, {})
    if key not in cells:
        cells[key] = Cell(cell.spec, regularise(cell.graph, regs))
    return cells[key]


class RNN:
    """A stack of recurrent layers running `cell` over sequences (see the module docstring).

    input_size and hidden_size set the sizes of the cell's input dimension and of its first
    state's dimension (I and H in the shipped specs); further dimensions are keyword arguments
    (`P=...`). Parameters are drawn by cell.init_params: layer 0's forward direction with
    `seed`, the others with seeds derived from (seed, layer, direction). schedule: the time
    loop's schedule on the compiled targets, "step" or "lanes" (cell.schedules; default: each
    plan's preferred one).
    """

    def __init__(self, cell, input_size: int, hidden_size: int, *, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, batch_first: bool = False,
                 target: str = "cpu", dtype=np.float32, seed: int = 0,
                 schedule: str | None = None, zoneout: dict | None = None,
                 recurrent_dropout: float = 0.0, weight_drop: float = 0.0, **sizes):
        self.cell = cell = _as_cell(cell)
        self.regularisers = regs = Regularisers.for_cell(cell, zoneout, recurrent_dropout,
                                                         weight_drop)
        unit_cell = regularised_cell(cell, regs)
        # what the masks apply to: the cell's, worked out once (each call draws per unit)
        self._dropped_states = product_states(cell.graph) if regs.recurrent_dropout else []
        self._dropped_matrices = recurrent_matrices(cell.graph) if regs.weight_drop else []
        self.schedule = check_schedule(cell, schedule)
        self.backend = backends.get(target)
        self.target, self.dtype, self.batch_first = target, float_dtype(dtype), bool(batch_first)
        if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) \
                or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout acts between layers: with num_layers=1 it does nothing",
                          stacklevel=2)
        self.num_layers, self.bidirectional = int(num_layers), bool(bidirectional)
        self.num_directions = 2 if self.bidirectional else 1
        self.dropout = float(dropout)
        if len(cell.inputs) != 1:
            raise ValueError(f"cell {cell.name!r} has several inputs ({', '.join(cell.inputs)}); "
                             f"a layer takes one: call cell.forward with a dict of inputs")
        self.input_size, self.hidden_size = input_size, hidden_size
        first = self._sizes(input_size, hidden_size, sizes)
        self.sizes = first
        out_shape = cell.graph.node(cell.graph.output).shape
        self.output_size = int(np.prod(cell.shape_of_dims(out_shape, first)))
        self._units = []
        params = {}
        for k in range(self.num_layers):
            layer_sizes = first if k == 0 else self._deeper_sizes(first)
            row = []
            for d in range(self.num_directions):
                unit_seed = seed if k == d == 0 else int(
                    np.random.SeedSequence([seed, k, d]).generate_state(1)[0])
                p = cell.init_params(seed=unit_seed, dtype=self.dtype, **layer_sizes)
                unit = SubLayer(unit_cell, self.backend, self.dtype, layer_sizes, p,
                                self.schedule)
                row.append(unit)
                params.update({name + suffix(k, d): v for name, v in unit.params.items()})
            self._units.append(row)
        self.params = _Params(params)
        self.grads = {name + suffix(k, d): g for k, row in enumerate(self._units)
                      for d, unit in enumerate(row) for name, g in unit.grads.items()}
        self._state_dims = self._stacked_state_dims()
        self._dropout_rng = np.random.default_rng([DROPOUT_STREAM, seed])
        self.dropout_masks: list | None = None
        self._mask_rng = np.random.default_rng([REGULARISER_STREAM, seed])
        self.masks: dict = {}
        self._eval_inputs: tuple = (None, None)   # eval's constant masks, for one T, B
        self._last = None
        self.dstate: dict = {}
        self.training = True
        self.wavefront = self.backend.wavefront

    def _sizes(self, input_size, hidden_size, sizes: dict) -> dict:
        """The first layer's dimension sizes, from the layer's own arguments (errors name them,
        not init_params')."""
        cell = self.cell
        x_dim = cell.symbolic_shapes[cell.inputs[0]][0]
        h_dim = cell.symbolic_shapes[cell.states[0]][0]
        sizes = dict(sizes)
        for what, size in (("input_size", input_size), ("hidden_size", hidden_size),
                           *sizes.items()):
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
                raise ValueError(f"{what} must be a positive integer, got {size!r}")
        if x_dim == h_dim and isinstance(x_dim, str) and input_size != hidden_size:
            raise ValueError(f"cell {cell.name!r} ties its input size to its hidden size (input "
                             f"{cell.inputs[0]!r} and state {cell.states[0]!r} are both "
                             f"[{x_dim}]): input_size ({input_size}) and hidden_size "
                             f"({hidden_size}) must be equal")
        given = dict(sizes)
        for what, dim, size in (("input_size", x_dim, input_size),
                                ("hidden_size", h_dim, hidden_size)):
            if isinstance(dim, int):
                if size != dim:
                    raise ValueError(f"{what} is {size}, but cell {cell.name!r} fixes it to {dim}")
            elif dim in given:
                raise ValueError(f"dimension {dim} is the {what}; pass it once, as {what}")
            else:
                sizes[dim] = size
        others = [d for d in cell.dims if d not in (x_dim, h_dim)]
        missing = [d for d in others if d not in sizes]
        unknown = [d for d in sizes if d not in cell.dims]
        if missing or unknown:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(unknown)}"] if unknown else [])
            usage = ", ".join(["input_size", "hidden_size", *(f"{d}=..." for d in others)])
            raise ValueError(f"rnncc.RNN({cell.name!r}, {usage}): besides input_size "
                             f"({x_dim}) and hidden_size ({h_dim}), the layer takes one keyword "
                             f"per other dimension of the cell ({', '.join(others) or 'none'}): "
                             f"{'; '.join(problems)}")
        return {d: sizes[d] for d in cell.dims}

    def _deeper_sizes(self, first: dict) -> dict:
        """Sizes of layers k > 0: the input is the layer below's output, both directions."""
        cell = self.cell
        x_dim = cell.symbolic_shapes[cell.inputs[0]][0]
        width = self.num_directions * self.output_size
        if isinstance(x_dim, int) or any(x_dim in cell.symbolic_shapes[s] for s in cell.states):
            if (x_dim if isinstance(x_dim, int) else first[x_dim]) != width:
                raise ValueError(
                    f"cell {cell.name!r} ties its input size ({x_dim}) to a fixed size or a "
                    f"state's size, so layer 1 cannot read layer 0's output ({width} wide)")
            return first
        return {**first, x_dim: width}

    def _stacked_state_dims(self) -> dict:
        dims = {}
        for name in self.cell.states:
            shapes = {self.cell.shape(name, **u.sizes) for row in self._units for u in row}
            if len(shapes) != 1:
                raise ValueError(f"state {name!r} has a different shape in different layers "
                                 f"({sorted(shapes)}): the layers' states cannot be stacked")
            dims[name] = shapes.pop()
        return dims

    def __repr__(self) -> str:
        return (f"rnncc.RNN({self.cell.name!r}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}, target={self.target!r}, "
                f"dtype={self.dtype.name}{self._regulariser_repr()})")

    def _regulariser_repr(self) -> str:
        regs = self.regularisers
        return ((f", zoneout={regs.zoneout}" if regs.zoneout else "")
                + (f", recurrent_dropout={regs.recurrent_dropout}" if regs.recurrent_dropout
                   else "")
                + (f", weight_drop={regs.weight_drop}" if regs.weight_drop else ""))

    # -- arguments -----------------------------------------------------------------------------------
    def _time_major(self, what: str, array, width):
        if is_device_array(array):
            raise ValueError(f"{what} is an array on a GPU; rnncc.RNN takes numpy arrays on "
                             f"every target (target='cuda' moves each layer's data itself): "
                             f"copy it to the host, or run a cell on GPU arrays with "
                             f"cell.forward(..., target='cuda')")
        array = check_float(what, _as_array(what, array))
        if array.ndim != 3 or (width is not None and array.shape[2] != width):
            layout = "[B, T, " if self.batch_first else "[T, B, "
            raise ValueError(f"{what} has shape {_fmt(array.shape)} but the expected shape is "
                             f"{layout}{width if width is not None else 'd'}]")
        array = np.swapaxes(array, 0, 1) if self.batch_first else array
        return array if array.dtype == self.dtype else array.astype(self.dtype)

    def _batch_major(self, array):
        return np.ascontiguousarray(np.swapaxes(array, 0, 1)) if self.batch_first else array

    def _split(self, what: str, given, B: int, zeros: bool) -> list[dict]:
        """state/dfinal {name: [L*D, B, dim]} -> one {name: [B, dim]} per layer and direction
        (absent names: zeros, or left out when not `zeros`)."""
        units = self.num_layers * self.num_directions
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ValueError(f"{what} must be a dict: state name -> [num_layers * "
                             f"num_directions, B, dim]")
        for name in given:
            if name not in self._state_dims:
                raise KeyError(f"unknown state {name!r} in {what}; this cell's states are: "
                               f"{', '.join(self.cell.states)}")
        out = [{} for _ in range(units)]
        for name, dims in self._state_dims.items():
            if name not in given:
                if zeros:
                    for u in out:
                        u[name] = np.zeros((B, *dims), dtype=self.dtype)
                continue
            array = _as_array(f"{what}[{name!r}]", given[name])
            if array.shape != (units, B, *dims):
                raise ValueError(
                    f"{what}[{name!r}] has shape {_fmt(array.shape)} but the expected shape is "
                    f"[num_layers * num_directions, B, {', '.join(map(str, dims))}] = "
                    f"{_fmt((units, B, *dims))}")
            array = array.astype(self.dtype, copy=False)
            for u in range(units):
                out[u][name] = array[u]
        return out

    def _draw_masks(self, T: int, B: int) -> list[np.ndarray]:
        """Dropout masks for the inputs of layers 1 .. L-1 (scaled: 0 or 1 / (1 - p)). The
        uniforms are drawn in float32 (5x faster than float64; p resolved to 2^-24)."""
        p, shape = self.dropout, (T, B, self.num_directions * self.output_size)
        scale = self.dtype.type(1.0 / (1.0 - p) if p < 1 else 0.0)
        masks = []
        for _ in range(self.num_layers - 1):
            mask = (self._dropout_rng.random(shape, dtype=np.float32) >= p).astype(self.dtype)
            mask *= scale
            masks.append(mask)
        return masks

    def _regulariser_inputs(self, T: int, B: int, training: bool) -> list:
        """Per unit (layer k, direction d at k * D + d): (its mask inputs or None, the
        parameters it runs with or None: its own). Draws the training masks and sets
        self.masks; in eval, the masks' expectations (zoneout p, recurrent dropout 1) and no
        weight drop."""
        regs, rng, dtype = self.regularisers, self._mask_rng, self.dtype
        drawn = {"zoneout": {}, "recurrent_dropout": {}, "weight_drop": {}}
        extras = []
        if not training and regs.in_graph and self._eval_inputs[0] == (T, B):
            self.masks = {}
            return self._eval_inputs[1]   # constants: made once per T, B
        for k, row in enumerate(self._units):
            for d, unit in enumerate(row):
                key = suffix(k, d)[1:]
                inputs, params = {}, None
                dims = self._state_dims
                for s, p in regs.zoneout.items():
                    shape = (T, B, *dims[s])
                    if training:
                        mask = bernoulli(rng, shape, p, dtype)
                        drawn["zoneout"].setdefault(key, {})[s] = mask
                    else:
                        mask = np.full(shape, p, dtype=dtype)
                    inputs[mask_input("zoneout", s)] = mask
                if regs.recurrent_dropout:
                    p = regs.recurrent_dropout
                    for s in self._dropped_states:
                        if training:
                            mask = bernoulli(rng, (B, *dims[s]), 1 - p, dtype)
                            mask *= dtype.type(1 / (1 - p))
                            drawn["recurrent_dropout"].setdefault(key, {})[s] = mask
                        else:
                            mask = np.ones((B, *dims[s]), dtype=dtype)
                        # the same mask at every step: an input like any other
                        inputs[mask_input("recurrent_dropout", s)] = np.ascontiguousarray(
                            np.broadcast_to(mask, (T, *mask.shape)))
                if regs.weight_drop and training:
                    p, params = regs.weight_drop, dict(unit.params)
                    for name in self._dropped_matrices:
                        mask = bernoulli(rng, params[name].shape, 1 - p, dtype)
                        mask *= dtype.type(1 / (1 - p))
                        drawn["weight_drop"].setdefault(key, {})[name] = mask
                        params[name] = params[name] * mask
                extras.append((inputs or None, params))
        self.masks = {kind: masks for kind, masks in drawn.items() if masks}
        if not training and regs.in_graph:
            self._eval_inputs = ((T, B), extras)
        return extras

    def _workers(self, parallel: int) -> int:
        """Threads for `parallel` independent units of work (1: one after another)."""
        if not self.wavefront or not task_graph.concurrent_kernels():
            return 1
        return min(task_graph.cores(), parallel)

    # -- forward and backward --------------------------------------------------------------------
    def __call__(self, x, state=None, lengths=None, *, train: bool | None = None):
        """Run the stack: returns (y, final). y is [T, B, D*out] ([B, T, D*out] with
        batch_first; D = 2 when bidirectional), zero past each row's length; final maps each
        state name to [num_layers * D, B, dim], each row's state after its own last step (the
        reverse direction's last step is the row's first position). In training mode (the
        default, or train=True) it applies dropout and keeps what backward() needs; in eval
        mode (layer.eval(), or train=False) it does neither and stores only the output."""
        training = self.training if train is None else bool(train)
        xt = self._time_major("x", x, self.input_size)
        T, B = xt.shape[:2]
        lengths = check_lengths(lengths, T, B)
        states = self._split("state", state, B, zeros=True)
        masks = (self._draw_masks(T, B) if training and self.dropout > 0
                 and self.num_layers > 1 else None)
        extras = self._regulariser_inputs(T, B, training)
        L, D = self.num_layers, self.num_directions
        pieces = self._wavefront_pieces(T, B)
        if pieces > 1:
            y, finals = self._forward_wavefront(xt, states, lengths, training, masks, pieces,
                                                extras)
        else:
            y, finals = self._layer_by_layer(
                False, xt, lengths, masks,
                lambda unit, x_in, u, threads: unit.forward(x_in, states[u], lengths, training,
                                                            threads, *extras[u]))
        self.dropout_masks = masks
        if training:
            # One tape: a training call replaces the last one's. A tape that backward() never
            # used is remembered as superseded, so that backward() can refuse to guess which
            # call `dy` belongs to (an eval call keeps nothing and leaves the tape alone).
            superseded = self._last is not None and not self._last["used"]
            self._last = {"T": T, "B": B, "lengths": lengths, "masks": masks, "used": False,
                          "calls": self._last["calls"] + 1 if superseded else 1,
                          "weight_drop": self.masks.get("weight_drop")}
        final = {name: np.stack([finals[u][name] for u in range(L * D)])
                 for name in self.cell.states}
        return self._batch_major(y), final

    forward = __call__

    def _wavefront_pieces(self, T: int, B: int) -> int:
        """Pieces of time a unidirectional stack's forward and backward run in, in the layer
        wavefront (1: whole layers, one after another). Eight pieces keep two cores busy in
        a 2-layer stack for 8/9 of the time; shorter pieces than 4 steps cost more than they
        overlap. Only for steps small enough to leave cores idle (WAVEFRONT_MAX_WORK), and
        whose layers do not each run on a team of all the cores (rnncc's compiled code: its
        products and kernels shared out; a piece runs on one thread and packs its weights
        again. lstm, 4 layers, T=100, B=16, H=128, 2 cores: forward 9.3 ms in the wavefront
        against 6.8 layer by layer, forward and backward 21.7 against 18.4)."""
        if (self.num_directions > 1 or self.num_layers == 1 or self._workers(2) < 2
                or not self._units[0][0].wavefront
                or B * max(self.sizes.values(), default=1) >= WAVEFRONT_MAX_WORK
                or self._units[-1][0].takes_the_cores(T, B)):
            return 1
        return max(1, min(8, T // 4))

    def _layer_by_layer(self, backward: bool, given, lengths, masks, run_unit):
        """Whole layers, one after another (lowest first forward, highest first backward),
        the directions of a layer at the same time. `given` is what the first layer reads
        (x forward, dy backward); run_unit(unit, what it reads, unit index, threads) returns
        what the unit hands on (its output, or the gradient of its input) and its own result
        (final state, or initial-state gradient). Each layer's directions are joined
        (side by side forward, summed backward) and multiplied by the dropout mask between
        it and the next layer. Returns (what the last layer hands on, results by unit)."""
        L, D, w = self.num_layers, self.num_directions, self.output_size
        if L == 1 and D == 1:   # one unit: nothing to order (the task graph cost 11 us a call)
            out, result = run_unit(self._units[0][0], given, 0, 0)
            return out, {0: result}
        order = list(reversed(range(L))) if backward else list(range(L))
        feeds, handed, results, tasks = {order[0]: given}, {}, {}, {}
        for k in order:
            after_k = k - 1 if backward else k + 1
            rank = L - k if backward else k
            for d in range(D):
                def run(threads, k=k, d=d):
                    fed = feeds[k][..., d * w:(d + 1) * w] if backward and D > 1 else feeds[k]
                    if d:
                        fed = reverse_within_lengths(fed, lengths)
                    out, results[k * D + d] = run_unit(self._units[k][d], fed, k * D + d,
                                                       threads)
                    handed[k, d] = out if d == 0 else reverse_within_lengths(out, lengths)
                tasks[k, d] = task_graph.Task(run,
                                              after=(("feed", k),) if k != order[0] else (),
                                              priority=(rank, d))

            def join(threads, k=k, after_k=after_k):
                outs = [handed[k, d] for d in range(D)]
                y = outs[0] if D == 1 else sum(outs) if backward else np.concatenate(outs, -1)
                between = masks is not None and 0 <= after_k < L
                feeds[after_k] = y * masks[min(k, after_k)] if between else y
            tasks["feed", after_k] = task_graph.Task(join,
                                                     after=tuple((k, d) for d in range(D)),
                                                     priority=(rank, D))
        task_graph.run(tasks, self._workers(D))
        return feeds[order[-1] + (-1 if backward else 1)], results

    def _forward_wavefront(self, xt, states, lengths, keep, masks, pieces, extras):
        """A unidirectional stack's forward in pieces of time, first piece first (the layer
        wavefront): layer k+1 reads layer k's output piece by piece."""
        T, B = xt.shape[:2]
        runs = [unit.start(xt if k == 0 else np.zeros((T, B, self.output_size), self.dtype),
                           states[k], lengths, keep, None, extras[k][1], extras[k][0])
                for k, (unit,) in enumerate(self._units)]
        self._wavefront(runs, T, pieces, masks, backward=False)
        finals = {}
        for k, (unit,) in enumerate(self._units):
            ys, finals[k] = unit.finish(runs[k])
        return ys, finals

    def train(self, mode: bool = True) -> "RNN":
        """Training mode (the default): dropout on, forward calls keep what backward needs."""
        self.training = bool(mode)
        return self

    def eval(self) -> "RNN":
        """Inference mode: no dropout, forward calls keep nothing (backward is unavailable)."""
        return self.train(False)

    def backward(self, dy, dfinal=None):
        """BPTT through the last training call: dy like y, dfinal a dict state ->
        [num_layers * D, B, dim] (missing states: zero). Fills self.grads (overwriting them)
        and self.dstate (state name -> gradient of the initial state, same layout: the dfinal
        of the previous chunk in truncated BPTT), and returns dx, like x."""
        tape = self._last
        if tape is None:
            raise RuntimeError("backward() needs a forward call in training mode first: "
                               "y, final = layer(x)" + ("" if self.training else
                                                        " (the layer is in eval mode: "
                                                        "layer.train())"))
        if tape["used"]:
            raise RuntimeError("backward() already ran through the last training call, and a "
                               "call's tape serves one backward(): run the forward call again")
        if tape["calls"] > 1:
            self._last = None   # refused once, it is dropped: the next training call starts anew
            raise RuntimeError(f"{tape['calls']} training calls ran since the last backward(), "
                               f"and the layer keeps the tape of the last one only: backward() "
                               f"cannot tell which call dy belongs to, so the tape is dropped. "
                               f"Call backward() after each training call, and run calls you "
                               f"do not train on with train=False (or in layer.eval() mode)")
        T, B, lengths, masks = tape["T"], tape["B"], tape["lengths"], tape["masks"]
        L, D = self.num_layers, self.num_directions
        width = D * self.output_size
        dyt = self._time_major("dy", dy, width)
        if dyt.shape[:2] != (T, B):
            layout = "[B, T, " if self.batch_first else "[T, B, "
            raise ValueError(f"dy has shape {_fmt(np.shape(dy))} but the expected shape is "
                             f"{layout}{width}] with T, B = {T}, {B} (the forward call's)")
        dfinals = self._split("dfinal", dfinal, B, zeros=False)
        pieces = self._wavefront_pieces(T, B)
        if pieces > 1:
            dx, dstates = self._backward_wavefront(dyt, dfinals, masks, pieces)
        else:
            dx, dstates = self._layer_by_layer(
                True, dyt, lengths, masks,
                lambda unit, g, u, threads: unit.backward(g, dfinals[u], threads))
        self.dstate = {name: np.stack([dstates[u][name] for u in range(L * D)])
                       for name in self.cell.states}
        for key, masks in (tape["weight_drop"] or {}).items():
            # the call multiplied W * M: the gradient of W is that of W * M, times M
            for name, mask in masks.items():
                self.grads[f"{name}_{key}"] *= mask
        tape["used"] = True
        return self._batch_major(dx)

    def _backward_wavefront(self, dyt, dfinals, masks, pieces):
        """A unidirectional stack's BPTT in pieces of time, last piece first: layer k reads
        the gradient of its output from layer k+1's input gradient, piece by piece."""
        T, B = dyt.shape[:2]
        top = self.num_layers - 1
        runs = [unit.start_backward(dyt if k == top else
                                    np.zeros((T, B, self.output_size), self.dtype), dfinals[k])
                for k, (unit,) in enumerate(self._units)]
        self._wavefront(runs, T, pieces, masks, backward=True)
        dxs, dstates = {}, {}
        for k, (unit,) in enumerate(self._units):
            dxs[k], dstates[k] = unit.finish_backward(runs[k])
        return dxs[0], dstates

    def _wavefront(self, runs, T: int, pieces: int, masks, backward: bool) -> None:
        """Advance one run per layer through `pieces` pieces of time, in the layer
        wavefront: layer k runs piece c once it has run the piece before (c-1 forward, c+1
        backward) and its feeder (layer k-1 forward, k+1 backward) has run piece c, whose
        result (output / input gradient) it copies in first, times the dropout mask between
        the two layers."""
        L = len(runs)
        bounds = [T * c // pieces for c in range(pieces + 1)]
        step = 1 if backward else -1       # the feeder of layer k is layer k + step
        tasks = {}
        for k in range(L):
            feeder = k + step if 0 <= k + step < L else None
            for c in range(pieces):
                def run(threads, k=k, c=c, feeder=feeder):
                    t0, t1 = bounds[c], bounds[c + 1]
                    if feeder is not None:
                        if backward:
                            given, into = runs[feeder].dinput(t0, t1), runs[k].grad_array()
                        else:
                            given, into = runs[feeder].output(t0, t1), runs[k].input_array()
                        if masks is None:
                            np.copyto(into[t0:t1], given)
                        else:
                            np.multiply(given, masks[min(k, feeder)][t0:t1], out=into[t0:t1])
                    runs[k].advance(t0, t1, threads)
                before = c + 1 if backward else c - 1
                after = (((k, before),) if 0 <= before < pieces else ()) + \
                    (((feeder, c),) if feeder is not None else ())
                # wavefront order: the piece nearest the start of its pass, then the lower layer
                # forward (the higher one backward), so the leading layer never waits
                wave = (pieces - 1 - c if backward else c) + (L - 1 - k if backward else k)
                tasks[k, c] = task_graph.Task(run, after=after, priority=(wave, -step * k))
        task_graph.run(tasks, self._workers(L))

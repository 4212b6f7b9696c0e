"""rnncc inside PyTorch: `rnncc.torch.RNN`, a torch.nn.Module running any cell spec.

    import rnncc.torch                     # needs torch; `import rnncc` alone never imports it
    m = rnncc.torch.RNN("lstm", input_size=32, hidden_size=64, num_layers=2)
    y, final = m(x)                        # x [T, B, I] (batch_first: [B, T, I]) or packed
    loss(y).backward()                     # gradients of x, the initial states, every parameter
    torch.optim.Adam(m.parameters()).step()

The module is a thin adapter over rnncc.RNN's units (one layer, one direction each): the same
compiled cell, the same stacked parameter matrices. Each nn.Parameter shares its memory with
the unit's view into the stacked matrix, so an optimizer's in-place step is what the next call
multiplies with (no re-packing, no stale copy). Each unit's forward and BPTT are custom
operators with a registered derivative (one rnncc call each way, never a Python loop over time),
so torch.compile(fullgraph=True) takes a model with rnncc layers whole (eager calls run the same
implementations through autograd.Functions, without the dispatcher's cost); what connects the units
(reversal for the reverse direction, joining the directions, dropout between layers) is
ordinary torch code, differentiated by torch. Each call owns its tape, so a layer applied to
two sequences before one backward() gets both gradients.

PyTorch's conventions, as in rnncc.RNN: states and finals are dicts state name ->
[num_layers * num_directions, B, dim]; parameters are named like rnncc.RNN's (W_i_l0,
W_i_l0_reverse, ...); train()/eval() switch dropout only, and whether a call keeps its tape
follows torch.is_grad_enabled() and requires_grad (torch.no_grad() inference keeps nothing).

This version runs on the CPU (float32, float64). Not yet: CUDA tensors.
"""
from __future__ import annotations

import itertools
import weakref
from typing import Optional

import numpy as np
import torch

from ..runtime.arguments import check_lengths
from ..runtime.layer import RNN as _Layer
from ..runtime.naming import suffix

_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _numpy_dtype(dtype) -> type:
    if dtype not in _DTYPES:
        raise TypeError(f"rnncc.torch.RNN runs in torch.float32 or torch.float64, not {dtype}")
    return _DTYPES[dtype]


def _array(what: str, tensor: torch.Tensor, dtype) -> np.ndarray:
    """A CPU tensor's values as a numpy array, without a copy where it is contiguous."""
    if tensor.device.type != "cpu":
        raise ValueError(f"{what} is on {tensor.device}; rnncc.torch.RNN runs on the CPU (move "
                         f"the tensor with .cpu(); CUDA tensors are not supported yet)")
    if tensor.dtype != dtype:
        raise TypeError(f"{what} has dtype {tensor.dtype} but the module's is {dtype} (rnncc "
                        f"runs in torch.float32 or torch.float64: convert the tensor with "
                        f".to(m.dtype), or the module with m.to(dtype))")
    return tensor.detach().contiguous().numpy()


# -- the operators -------------------------------------------------------------------------------
# Each unit's forward and BPTT are custom operators (torch.library), so that torch.compile
# (fullgraph=True included) keeps them whole: one opaque call each way, whatever T is, where
# torch's own compile unrolls a recurrent loop. An operator takes tensors and plain values, so a
# unit is passed by its key in _UNITS, and a call's tape by a handle (a 0-d tensor) into _TAPES;
# the tape, and the workspace it lives in, are released when torch frees the handle (with the
# call's graph).

_UNITS: "weakref.WeakValueDictionary[int, object]" = weakref.WeakValueDictionary()
_ADDRESSES: dict = {}   # unit key -> its parameter arrays' addresses, in cell.params order
_TAPES: dict = {}
_HANDLES = itertools.count(1)


def _release(handle: int) -> None:
    tape = _TAPES.pop(handle, None)
    if tape is not None:
        _, unit, workspace = tape
        unit.return_workspace(workspace)


def _forward_impl(unit_id: int, keep: bool, lengths: Optional[torch.Tensor], x: torch.Tensor,
                  states: list[torch.Tensor], params: list[torch.Tensor],
                  masks: list[torch.Tensor]
                  ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """One layer and direction over the sequence: (ys, final states, tape handle). masks: the
    regularisers' mask inputs of the unit's cell (unit.cell.inputs[1:]), data, not
    differentiated."""
    unit = _UNITS[unit_id]
    cell = unit.cell
    # the module's own parameters share the unit's stacked matrices: nothing to pass; other
    # values (torch.func.functional_call, gradcheck) run as given, stacked for this call
    own = all(t.data_ptr() == address for t, address in zip(params, _ADDRESSES[unit_id]))
    values = None if own else {p: _array(f"parameter {p!r}", t, t.dtype)
                               for p, t in zip(cell.params, params)}
    xs = x.detach().contiguous().numpy()
    if lengths is not None:
        lengths = check_lengths(lengths.numpy(), xs.shape[0], xs.shape[1])
    workspace = unit.lend_workspace() if keep else None  # the tape lives in it
    mask_arrays = {n: t.detach().contiguous().numpy() for n, t in zip(cell.inputs[1:], masks)}
    ys, final, tape = unit.call(
        xs, {s: t.detach().contiguous().numpy() for s, t in zip(unit.states, states)}, lengths,
        keep, workspace=workspace, params=values, masks=mask_arrays or None)
    handle = torch.zeros((), dtype=torch.int64)
    if keep:
        key = next(_HANDLES)
        _TAPES[key] = (tape, unit, workspace)
        handle.fill_(key)
        weakref.finalize(handle, _release, key)
    return torch.from_numpy(ys), [torch.from_numpy(final[s]) for s in unit.states], handle


_unit_forward = torch.library.custom_op("rnncc::unit_forward", _forward_impl, mutates_args=())


@_unit_forward.register_fake
def _(unit_id, keep, lengths, x, states, params, masks):
    T, B = x.shape[0], x.shape[1]
    return (x.new_empty((T, B, _UNITS[unit_id].output_width)),
            [t.new_empty(t.shape) for t in states], x.new_empty((), dtype=torch.int64))


def _backward_impl(unit_id: int, handle: torch.Tensor, dys: torch.Tensor,
                   dfinals: list[torch.Tensor], x: torch.Tensor, inputs: bool
                   ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """BPTT through the call whose tape `handle` names: (dx, initial-state grads, parameter
    grads). x, the call's input, is read for nothing but its shape; it makes these gradients
    depend on x, so that differentiating them reaches the clear refusal below. inputs=False:
    nobody wants dx (x is data, not an activation), so its work is skipped and dx is zeros
    that autograd drops (an operator returns a tensor)."""
    dx, dstates, dparams = _backward(unit_id, handle, dys, dfinals, inputs)
    return (torch.zeros(x.shape, dtype=x.dtype) if dx is None else dx), dstates, dparams


def _backward(unit_id: int, handle: torch.Tensor, dys: torch.Tensor,
              dfinals: list[torch.Tensor], inputs: bool):
    """(dx, initial-state grads, parameter grads) of the call whose tape `handle` names; dx is
    None where not wanted (inputs=False)."""
    unit = _UNITS[unit_id]
    if int(handle) not in _TAPES:
        raise RuntimeError("rnncc.torch.RNN: this call kept no tape (it ran without gradients "
                           "enabled)")
    cell = unit.cell
    dx, dstate, dparams = unit.call_backward(
        _TAPES[int(handle)][0], dys.detach().contiguous().numpy(),
        {s: d.detach().contiguous().numpy() for s, d in zip(unit.states, dfinals)},
        inputs=inputs)
    # the tape is read, never written: backward may run again (retain_graph=True)
    return (None if dx is None else torch.from_numpy(dx),
            [torch.from_numpy(dstate[s]) for s in unit.states],
            [torch.from_numpy(dparams[p]) for p in cell.params])


_unit_backward = torch.library.custom_op("rnncc::unit_backward", _backward_impl,
                                         mutates_args=())


@_unit_backward.register_fake
def _(unit_id, handle, dys, dfinals, x, inputs):
    unit = _UNITS[unit_id]
    return (x.new_empty(x.shape), [d.new_empty(d.shape) for d in dfinals],
            [x.new_empty(tuple(unit.params[p].shape)) for p in unit.cell.params])


def _setup_forward(ctx, inputs, output):
    unit_id, keep, lengths, x, states, params, masks = inputs
    ctx.unit_id, ctx.n_masks = unit_id, len(masks)
    # the handle, and the inputs: torch checks at backward that none was modified in place
    ctx.save_for_backward(output[2], x, *states, *params)


def _forward_derivative(ctx, dys, dfinals, dhandle):
    handle, x = ctx.saved_tensors[:2]
    dx, dstates, dparams = _unit_backward(ctx.unit_id, handle, dys, list(dfinals), x,
                                          ctx.needs_input_grad[3])
    return None, None, None, dx, dstates, dparams, [None] * ctx.n_masks   # masks: data


def _refuse_double_backward(ctx, *grads):
    raise RuntimeError("rnncc.torch.RNN does not differentiate its gradients (double backward, "
                       "create_graph=True through rnncc's BPTT); gradients of the loss itself "
                       "are what it computes")


_unit_forward.register_autograd(_forward_derivative, setup_context=_setup_forward)
_unit_backward.register_autograd(_refuse_double_backward,
                                 setup_context=lambda ctx, inputs, output: None)


# -- the same, eagerly ---------------------------------------------------------------------------
# Outside torch.compile the module calls the implementations through autograd.Functions: the
# same code, the same tape handles, without the dispatcher's work per operator call (schema
# checks, flattening the lists: 0.1 ms a call, measured, a tenth of a small call's time).

class _EagerForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, unit_id, keep, lengths, x, n_states, n_params, *tensors):
        states = list(tensors[:n_states])
        params = list(tensors[n_states:n_states + n_params])
        masks = list(tensors[n_states + n_params:])
        ys, finals, handle = _forward_impl(unit_id, keep, lengths, x, states, params, masks)
        ctx.unit_id, ctx.n_masks = unit_id, len(masks)
        ctx.save_for_backward(handle, x, *tensors)
        ctx.mark_non_differentiable(handle)
        return ys, handle, *finals

    @staticmethod
    def backward(ctx, dys, dhandle, *dfinals):
        handle, x = ctx.saved_tensors[:2]   # (gradients not given arrive as zeros)
        inputs = ctx.needs_input_grad[3]
        if torch.is_grad_enabled():   # create_graph=True: gradients that refuse differentiation
            grads = _EagerBackward.apply(ctx.unit_id, handle, dys, x, inputs, *dfinals)
            dx, rest = grads[0], grads[1:]
        else:
            dx, dstates, dparams = _backward(ctx.unit_id, handle, dys, dfinals, inputs)
            rest = (*dstates, *dparams)
        return (None, None, None, dx if inputs else None, None, None, *rest,
                *[None] * ctx.n_masks)   # the masks are data: no gradient


class _EagerBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, unit_id, handle, dys, x, inputs, *dfinals):
        dx, dstates, dparams = _backward_impl(unit_id, handle, dys, list(dfinals), x, inputs)
        return dx, *dstates, *dparams

    @staticmethod
    def backward(ctx, *grads):
        _refuse_double_backward(ctx)


def _call_unit(unit_id: int, keep: bool, lengths, x, states: list, params: list,
               masks: list):
    """(ys, final states) of one unit's forward, differentiable: the custom operator under
    torch.compile, the same implementation through _EagerForward otherwise."""
    if torch.compiler.is_compiling():
        ys, finals, _ = _unit_forward(unit_id, keep, lengths, x, states, params, masks)
        return ys, finals
    ys, _, *finals = _EagerForward.apply(unit_id, keep, lengths, x, len(states), len(params),
                                         *states, *params, *masks)
    return ys, finals


def _reverse_index(lengths, T: int, B: int) -> torch.Tensor:
    """Index [T, B] that reverses each row within its own length (as the numpy layer's
    sublayer.reversal_index, in torch operations: torch.compile traces it)."""
    t = torch.arange(T)[:, None]
    if lengths is None:
        return (T - 1 - t).expand(T, B)
    return torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def _reverse(a: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(a, 0, index[:, :, None].expand(-1, -1, a.shape[2]))


class RNN(torch.nn.Module):
    """A stack of recurrent layers of any cell, as a torch.nn.Module (see the module doc).

    cell: a rnncc.Cell, a shipped spec's name, a spec path or spec text. input_size and
    hidden_size set the cell's input dimension and its first state's dimension; other
    dimensions are keyword arguments (P=...). Parameters are drawn by cell.init_params, as
    rnncc.RNN draws them (seed: an int, default 0). schedule: the time loop's schedule, as for
    rnncc.RNN ("step", "lanes"; default the plan's). zoneout, recurrent_dropout and
    weight_drop: the recurrent regularisers, as for rnncc.RNN, in training mode (m.train());
    their masks come from the same seeded generator (m.masks after a call; the same seed draws
    the same masks as rnncc.RNN's), drawn outside torch.compile's graph. Weight drop multiplies
    the parameter by its mask in torch, so autograd carries the gradient through the mask.
    """

    def __init__(self, cell, input_size: int, hidden_size: int, *, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, batch_first: bool = False,
                 dtype=torch.float32, device="cpu", seed: int | None = None,
                 schedule: str | None = None, zoneout: dict | None = None,
                 recurrent_dropout: float = 0.0, weight_drop: float = 0.0, **dims):
        super().__init__()
        if torch.device(device).type != "cpu":
            raise ValueError(f"rnncc.torch.RNN runs on the CPU; device={device!r} is not "
                             f"supported yet")
        self._config = dict(input_size=input_size, hidden_size=hidden_size,
                            num_layers=num_layers, bidirectional=bidirectional,
                            dropout=dropout, batch_first=batch_first, schedule=schedule,
                            zoneout=zoneout, recurrent_dropout=recurrent_dropout,
                            weight_drop=weight_drop, **dims)
        self._seed = 0 if seed is None else seed
        self._layer = _Layer(cell, target="cpu", dtype=_numpy_dtype(dtype), seed=self._seed,
                             **self._config)
        layer = self._layer
        self.cell = layer.cell
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.num_directions = layer.num_layers, layer.num_directions
        self.bidirectional, self.batch_first = layer.bidirectional, layer.batch_first
        self.dropout, self.output_size = layer.dropout, layer.output_size
        self.regularisers = layer.regularisers
        for name, array in layer.params.items():
            self.register_parameter(name, torch.nn.Parameter(torch.from_numpy(array)))
        self._register_units()

    def _register_units(self) -> None:
        """The operators' keys of this module's units (plain ints: torch.compile bakes them in)."""
        self._unit_ids = []
        for row in self._layer._units:
            for unit in row:
                _UNITS[id(unit)] = unit
                if id(unit) not in _ADDRESSES:
                    weakref.finalize(unit, _ADDRESSES.pop, id(unit), None)
                _ADDRESSES[id(unit)] = tuple(unit.params[p].ctypes.data
                                             for p in unit.cell.params)
                self._unit_ids.append(id(unit))
        self._dtype = torch.float64 if self._layer.dtype == np.float64 else torch.float32

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the module computes in: its parameters' (torch.float32 or float64)."""
        return self._dtype

    def extra_repr(self) -> str:
        return (f"{self.cell.name!r}, {self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
                f"dropout={self.dropout}, batch_first={self.batch_first}"
                f"{self._layer._regulariser_repr()}")

    @property
    def masks(self) -> dict:
        """The regularisers' masks of the last call, as rnncc.RNN's layer.masks (numpy)."""
        return self._layer.masks

    # -- parameters ----------------------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):
        """.to(), .double(), .float() and the like give the parameters new tensors: afterwards
        each is made the units' array again (see _sync)."""
        result = super()._apply(fn, *args, **kwargs)
        self._sync()
        return result

    def _sync(self) -> None:
        """Make each parameter the unit's array again where torch replaced its tensor: the
        values are copied into the units' stacked matrices (rebuilt in the new dtype if it
        changed), and the parameter shares them. (A parameter replaced otherwise, by
        assignment, still works: its values are stacked at each call instead.)"""
        params = dict(self.named_parameters())
        if not params:
            return
        layer = self._layer
        dtypes = {p.dtype for p in params.values()}
        devices = {p.device.type for p in params.values()}
        if len(dtypes) != 1 or devices != {"cpu"}:
            raise TypeError(f"the module's parameters are {sorted(map(str, dtypes))} on "
                            f"{sorted(devices)}; rnncc.torch.RNN needs them all in one float "
                            f"dtype on the CPU")
        dtype = dtypes.pop()
        if _numpy_dtype(dtype) != layer.dtype:
            self._layer = layer = _Layer(self.cell, target="cpu", dtype=_numpy_dtype(dtype),
                                         seed=self._seed, **self._config)
            self._register_units()
        for name, p in params.items():
            array = dict.__getitem__(layer.params, name)
            if p.data.data_ptr() != array.ctypes.data:
                np.copyto(array, p.detach().numpy())
                p.data = torch.from_numpy(array)

    # -- the call -------------------------------------------------------------------------------
    def forward(self, x, state: dict | None = None, lengths=None):
        """(y, final): y [T, B, D*out] ([B, T, D*out] with batch_first), zero past each row's
        length, or a PackedSequence for packed input; final maps each state name to
        [num_layers * D, B, dim]. Written in torch operations only, so that torch.compile
        traces it whole; the rnncc calls are the custom operators above."""
        packed = isinstance(x, torch.nn.utils.rnn.PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths comes with a packed sequence already; pass one")
            x, lengths = torch.nn.utils.rnn.pad_packed_sequence(x)
        elif self.batch_first:
            x = x.transpose(0, 1)
        dtype = self.dtype
        if x.dtype != dtype or x.device.type != "cpu":
            _array("x", x, dtype)   # the error that says which
        if x.dim() != 3 or x.shape[2] != self._layer.input_size:
            layout = "[B, T, " if self.batch_first and not packed else "[T, B, "
            raise ValueError(f"x has shape {tuple(x.shape)} but the expected shape is "
                             f"{layout}{self._layer.input_size}]")
        T, B = x.shape[:2]
        if lengths is not None:   # its values are checked by the operator (check_lengths)
            lengths = torch.as_tensor(lengths, dtype=torch.int64, device="cpu")
            if tuple(lengths.shape) != (B,):
                raise ValueError(f"lengths has shape {tuple(lengths.shape)} but the expected "
                                 f"shape is [B] = ({B},)")
        L, D = self.num_layers, self.num_directions
        initial = self._initial(state, B, dtype)
        params = dict(self.named_parameters())
        keep = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in params.values())
            or any(t.requires_grad for t in initial.values()))
        index = _reverse_index(lengths, T, B) if D == 2 else None
        masks = self._draw_masks(T, B) if self.regularisers else None
        finals = {s: [] for s in self.cell.states}
        layer_input = x
        for k in range(L):
            outs = []
            for d in range(D):
                u = k * D + d
                x_in = layer_input if d == 0 else _reverse(layer_input, index)
                unit_params = [params[p + suffix(k, d)] for p in self.cell.params]
                unit_masks = []
                if masks is not None:
                    unit_masks, dropped = masks[u]
                    unit_params = [v * dropped[p] if p in dropped else v
                                   for p, v in zip(self.cell.params, unit_params)]
                ys, unit_finals = _call_unit(
                    self._unit_ids[u], keep, lengths, x_in.contiguous(),
                    [initial[s][u] for s in self.cell.states], unit_params, unit_masks)
                outs.append(ys if d == 0 else _reverse(ys, index))
                for s, f in zip(self.cell.states, unit_finals):
                    finals[s].append(f)
            layer_input = outs[0] if D == 1 else torch.cat(outs, dim=-1)
            if self.training and self.dropout > 0 and k + 1 < L:
                layer_input = torch.nn.functional.dropout(layer_input, self.dropout, True)
        final = {s: torch.stack(f) for s, f in finals.items()}
        y = layer_input
        if packed:
            y = torch.nn.utils.rnn.pack_padded_sequence(y, lengths, enforce_sorted=False)
        elif self.batch_first:
            y = y.transpose(0, 1)
        return y, final

    @torch.compiler.disable
    def _draw_masks(self, T: int, B: int) -> list:
        """Per unit: (its mask inputs as tensors, weight drop's masks by parameter name), drawn
        by the layer's generator (eval: the masks' expectations, no weight drop)."""
        layer = self._layer
        extras = layer._regulariser_inputs(T, B, self.training)
        dropped = layer.masks.get("weight_drop", {})
        out = []
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                inputs, _ = extras[k * self.num_directions + d]
                names = layer._units[k][d].cell.inputs[1:]   # the operator's order
                out.append(([torch.from_numpy(inputs[n]) for n in names] if inputs else [],
                            {p: torch.from_numpy(m)
                             for p, m in dropped.get(suffix(k, d)[1:], {}).items()}))
        return out

    def _initial(self, state, B: int, dtype) -> dict:
        """Initial states [L*D, B, dim] by name (zeros where not given), checked."""
        dims = self._layer._state_dims
        units = self.num_layers * self.num_directions
        state = dict(state or {})
        for name in state:
            if name not in dims:
                raise KeyError(f"unknown state {name!r}; this cell's states are: "
                               f"{', '.join(self.cell.states)}")
        out = {}
        for name, shape in dims.items():
            if name not in state:
                out[name] = torch.zeros((units, B, *shape), dtype=dtype)
                continue
            t = state[name]
            _array(f"state[{name!r}]", t, dtype)
            if tuple(t.shape) != (units, B, *shape):
                raise ValueError(f"state[{name!r}] has shape {tuple(t.shape)} but the expected "
                                 f"shape is [num_layers * num_directions, B, "
                                 f"{', '.join(map(str, shape))}] = {(units, B, *shape)}")
            out[name] = t
        return out

    # -- PyTorch's own modules -------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module) -> "RNN":
        """A module with the configuration and weights of a torch.nn.LSTM, GRU or RNN (the
        shipped lstm, gru, rnn and rnn_relu cells; the two torch biases summed)."""
        from ..interop.pytorch import from_torch
        layer = from_torch(module)
        m = cls(layer.cell, layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                bidirectional=layer.bidirectional, dropout=layer.dropout,
                batch_first=layer.batch_first,
                dtype=torch.float64 if layer.dtype == np.float64 else torch.float32)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.copy_(torch.from_numpy(np.asarray(layer.params[name])))
        return m.train(module.training)


from .eager import Eager  # noqa: E402  (the eager yardstick; it imports this module's torch)

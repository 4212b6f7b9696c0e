"""One layer, one direction: a cell over a time-major sequence, with its own parameters,
workspace and tape. rnncc.RNN (layer.py) stacks these.

On the cpu target each parameter is a view into the stacked matrix the plan multiplies with
(W_ifgo = the four gates' W stacked), so the stacking happens once, at construction, and
updating a parameter in place (`p -= lr * g`) updates what the kernels read. A parameter that a
second stacked matrix also holds (no shipped cell has one) is stacked again at each call.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..regularise import derived_states
from .arguments import check_backward, check_forward


def reverse_within_lengths(a: np.ndarray, lengths) -> np.ndarray:
    """Each row of a time-major array [T, B, ...] reversed within its own length (positions
    past a row's length stay where they are): what a reverse direction reads, as in PyTorch's
    packed sequences. Its own inverse. Returns a new array."""
    if lengths is None:
        return a[::-1].copy()
    T, B = a.shape[:2]
    return a[reversal_index(lengths, T, B), np.arange(B)[None, :]]


def reversal_index(lengths, T: int, B: int) -> np.ndarray:
    """[T, B]: the step each position of a row reversed within its length reads."""
    t = np.arange(T)[:, None]
    if lengths is None:
        return np.broadcast_to(T - 1 - t, (T, B))
    return np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


class SubLayer:
    def __init__(self, cell, backend, dtype, sizes: dict, params: dict,
                 schedule: str | None = None):
        self.cell, self.backend, self.dtype = cell, backend, dtype
        self.sizes = sizes
        self.schedule = schedule      # the time loop's schedule (None: the plan's choice)
        self._workspace: dict = {}
        self._free: list = []         # lent workspaces given back (their tapes are gone)
        self._packed: dict | None = None
        self._shared: dict = {}       # stacked matrices re-stacked per call (a parameter twice)
        self._compiled = None
        # states a regulariser carries (recurrent dropout's h * m): filled in, folded back
        self._derived = derived_states(cell.graph)
        if backend.wavefront:
            self._compiled = backend.compiled(cell, dtype)
            params = self._pack(params)
        self.params = params
        self.grads = {name: np.zeros_like(value) for name, value in params.items()}
        self._last = None

    @property
    def states(self) -> list:
        """The cell's states as a layer sees them (less those a regulariser derives)."""
        return [s for s in self.cell.states if s not in self._derived]

    @property
    def output_width(self) -> int:
        """The width of the unit's output per row (1 for a scalar output)."""
        cell = self.cell
        return int(np.prod(cell.shape_of_dims(cell.graph.node(cell.graph.output).shape,
                                              self.sizes)))

    @property
    def wavefront(self) -> bool:
        """Can a forward call run in pieces of time (ForwardRun)?"""
        return self._compiled is not None

    def takes_the_cores(self, T: int, B: int) -> bool:
        """Whether a whole-sequence call of this unit runs on a team of all the cores (cpu:
        its products and kernels shared out), so that nothing is gained by running other
        units beside it."""
        from ..backends.cpu.threads import available
        if self._compiled is None or not hasattr(self._compiled, "_team_threads"):
            return False
        return self._compiled._team_threads("forward", T, B, self.sizes, available()) > 1

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

    def lend_workspace(self) -> dict:
        """A workspace for one call whose tape must outlive later calls; give it back with
        return_workspace once the tape is gone. Reused: a fresh one would fault in every page
        of the tape's arrays on every call (13 ms of a 112 ms lstm call at B=64, measured)."""
        return self._free.pop() if self._free else {}

    def return_workspace(self, workspace: dict) -> None:
        self._free.append(workspace)

    def _packed_now(self) -> dict | None:
        if self._packed is None:
            return None
        packed = dict(self._packed)
        for name, members in self._shared.items():
            packed[name] = np.ascontiguousarray(
                np.concatenate([self.params[m] for m in members], axis=0))
        return packed

    def forward(self, x, state, lengths, keep: bool, threads: int = 0,
                masks: dict | None = None, params: dict | None = None):
        """(ys, final) of the whole sequence; with keep, remembers what backward needs.
        masks: a regulariser's mask inputs (rnncc/regularise), name -> [T, B, dim]; params:
        as for call."""
        ys, final, tape = self.call(x, state, lengths, keep, threads, params=params,
                                    masks=masks)
        if keep:   # an inference call leaves the last training call's tape alone
            self._last = tape
        return ys, final

    def call(self, x, state, lengths, keep: bool, threads: int = 0,
             workspace: dict | None = None, params: dict | None = None,
             masks: dict | None = None):
        """(ys, final, tape) of the whole sequence: tape is what backward needs (None unless
        keep). The tape lives in the call's arrays: by default the unit's workspace, which the
        next call reuses; a `workspace` of the call's own (lend_workspace) keeps it apart, so
        each call of the torch module owns its tape. `params`: values to run with instead of
        the unit's own (stacked for this call only)."""
        if self._compiled is not None:
            run = self.start(x, state, lengths, keep, workspace, params, masks)
            run.advance(0, run.call.T, threads)
            return self._results(run)
        call = check_forward(self.cell, self.params if params is None else params,
                             self._inputs(x, masks), self._states(state, masks), lengths,
                             schedule=self.schedule)
        result = (self.backend.train if keep else self.backend.forward)(self.cell, call)
        return (result[0], self._own(result[1]),
                ((call, result[2], None) if keep else None))

    def _inputs(self, x, masks: dict | None):
        """The call's inputs: x, and the masks of the regularisers the unit's cell has."""
        return {self.cell.inputs[0]: x, **masks} if masks else x

    def _states(self, state, masks: dict | None):
        """The call's initial states: the layer's, and each derived state's initial value
        (recurrent dropout's h0 * m; with no states given every state starts at zero, and so
        does h0 * m)."""
        if not self._derived or state is None:
            return state
        return {**state, **{name: state[s] * masks[mask][0]
                            for name, (s, mask) in self._derived.items()}}

    def _own(self, states: dict) -> dict:
        """The cell's states less the derived ones."""
        return {s: v for s, v in states.items() if s not in self._derived}

    def _fold(self, call, dstate: dict) -> dict:
        """Initial-state gradients with each derived state's (of h0 * m) added to its state's,
        times the mask."""
        dstate = dict(dstate)
        for name, (s, mask) in self._derived.items():
            dstate[s] = dstate[s] + dstate.pop(name) * np.asarray(call.xs[mask][0])
        return dstate

    def start(self, x, state, lengths, keep: bool, workspace: dict | None = None,
              params: dict | None = None, masks: dict | None = None):
        """A forward call run in pieces (cpu target): fill run.input_array() piece by piece,
        run.advance(t0, t1), then finish(run)."""
        call = check_forward(self.cell, self.params if params is None else params,
                             self._inputs(x, masks), self._states(state, masks), lengths,
                             schedule=self.schedule)
        # the unit's stacked parameters, or None: stacked from the call's parameters
        packed = self._packed_now() if params is None else None
        run = self._compiled.start(call, keep=keep,
                                   workspace=self._workspace if workspace is None else workspace,
                                   packed=packed)
        run.packed = packed   # the tape's: backward multiplies with the same matrices
        return run

    def finish(self, run):
        """(ys, final) of a run in pieces of time; with keep, remembers what backward needs."""
        ys, final, tape = self._results(run)
        if run.keep:   # an inference call leaves the last training call's tape alone
            self._last = tape
        return ys, final

    def _results(self, run):
        """(ys, final, tape) of a finished run (the input the run read, filled in place, is the
        input of the tape)."""
        result = run.results()
        result = (result[0], self._own(result[1]), *result[2:])
        if not run.keep:
            return result[0], result[1], None
        name = self.cell.inputs[0]
        call = replace(run.call, xs={**run.call.xs, name: run.input_array()})
        # the tape: the call, what it saved, and the stacked parameters it multiplied with
        return result[0], result[1], (call, result[2], run.packed)

    def backward(self, dy, dfinal, threads: int = 0):
        """BPTT through the last forward call: fills self.grads, returns (dx, dstate)."""
        return self._fill_grads(*self.call_backward(self._last, dy, dfinal, threads,
                                                    owned=False))

    def call_backward(self, tape, dy, dfinal, threads: int = 0, inputs: bool = True,
                      owned: bool = True):
        """BPTT through the forward call that made `tape`: (dx, dstate, dparams), arrays of
        their own (its work arrays are the unit's backward workspace, which no tape holds).
        inputs=False: dx is not wanted (None where that saved its work: the cpu target skips
        the input gradient's GEMMs). owned=False: dparams may view the work arrays (valid
        until the next backward call: for a caller that copies them at once)."""
        if self._compiled is not None:
            run = self.start_backward(dy, dfinal, tape, inputs)
            run.advance(0, run.call.T, threads)
            return self._backward_results(run, owned)
        call, saved, _ = tape
        dys, dfinal = check_backward(self.cell, call, dy, dfinal)
        dparams, dxs, dstate = self.backend.backward(self.cell, call, saved, dys, dfinal)
        return dxs[self.cell.inputs[0]], self._fold(call, dstate), dparams

    def start_backward(self, dy, dfinal, tape=None, inputs: bool = True):
        """BPTT through a forward call (by default the last) in pieces (cpu target), last piece
        first: fill run.grad_array() piece by piece (it starts as dy), run.advance(t0, t1),
        then finish_backward(run)."""
        call, saved, packed = self._last if tape is None else tape
        dys, dfinal = check_backward(self.cell, call, dy, dfinal)
        return self._compiled.start_backward(call, saved, dys, dfinal,
                                             workspace=self._workspace, packed=packed,
                                             inputs=inputs)

    def finish_backward(self, run):
        """Fills self.grads from a finished backward run; returns (dx, dstate)."""
        return self._fill_grads(*self._backward_results(run, owned=False))

    def _fill_grads(self, dx, dstate, dparams):
        for name, g in dparams.items():
            np.copyto(self.grads[name], g)
        return dx, dstate

    def _backward_results(self, run, owned: bool = True):
        dparams, dxs, dstate = run.results(owned)
        return dxs.get(self.cell.inputs[0]), self._fold(run.call, dstate), dparams

"""Checking what a caller passes to a cell: names, shapes, dtypes, and the sizes they imply.

Every error names the array, its shape and the shape expected. Arrays are converted (to the run's
dtype) into new arrays where needed; the caller's arrays are never written.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..ops import Stacked
from ..ops.base import dim_size

from ..backends.cuda.device import as_device, is_device_array
from ..errors import ArgumentKeyError
from ..plan.plan import SCHEDULES

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype {dtype!r} is not a numpy dtype; use float32 or float64") from None
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"dtype {dt} is not supported; rnncc runs in float32 or float64")
    return dt


def check_float(what: str, array):
    """A sequence's array must be float32 or float64 (it sets the run's dtype): float16 and
    integers are refused, not converted."""
    if array.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{what} has dtype {array.dtype}; rnncc runs in float32 or float64 "
                         f"(convert it with .astype(np.float32))")
    return array


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class Sizes:
    """Dimension name -> size, remembering which array fixed each size (for error messages).

    `likely` holds the size most of the call's arrays give each dimension: an error about an
    array whose dimension nothing else has fixed yet still shows a number for it (a transposed
    matrix is named as one instead of being taken as the truth for its first dimension)."""

    def __init__(self, known: dict | None = None):
        self.size: dict[str, int] = {}
        self.source: dict[str, str] = {}
        # (shape, symbolic shape) pairs of the call's arrays, set by check_forward: `likely`
        # is worked out from them only for an error message (likely_sizes)
        self.pairs = None
        for name, value in (known or {}).items():
            self.size[name], self.source[name] = value, "the arguments"

    @property
    def likely(self) -> dict:
        return likely_sizes(self.pairs() if self.pairs is not None else [])

    def _resolved(self, d):
        if isinstance(d, Stacked):   # 4H: a number once every part is one
            parts = [self._resolved(p) for p in d.parts]
            return sum(parts) if all(isinstance(p, int) for p in parts) else d
        return self.size.get(d, self.likely.get(d, d)) if isinstance(d, str) else d

    def expected(self, symbolic: tuple, lead: tuple = ()) -> str:
        names = [label for label, _ in lead] + [str(d) for d in symbolic]
        sizes = [str(size) for _, size in lead] + [str(self._resolved(d)) for d in symbolic]
        return "[" + ", ".join(names) + "] = " + _fmt(sizes)

    def bind(self, what: str, array: np.ndarray, symbolic: tuple, lead: tuple = ()) -> None:
        """Check `array`'s shape: leading axes `lead` ((label, size) pairs, such as ("B", 4))
        and then `symbolic` (names and ints), binding the names not bound yet (only once the
        whole shape fits)."""
        expected = (*(size for _, size in lead), *symbolic) if lead else symbolic
        shape = array.shape
        if len(shape) != len(expected):
            raise self._mismatch(what, array, symbolic, lead)
        new = None
        for got, want in zip(shape, expected):
            if isinstance(want, Stacked):   # 4H: known once H is, or fixing H = got / 4
                new = new if new is not None else {}
                if self._stacked(want, got, new) != got:
                    raise self._mismatch(what, array, symbolic, lead)
                continue
            if isinstance(want, int):
                if got != want:
                    raise self._mismatch(what, array, symbolic, lead)
            elif want in self.size:
                if got != self.size[want]:
                    raise self._mismatch(what, array, symbolic, lead, f" ({want} = "
                                         f"{self.size[want]} from {self.source[want]})")
            else:
                new = new if new is not None else {}
                if new.setdefault(want, got) != got:
                    raise self._mismatch(what, array, symbolic, lead)
        if new:
            for name, got in new.items():
                self.size[name], self.source[name] = got, what

    def _stacked(self, dim: Stacked, got: int, new: dict) -> int:
        """The size of a stacked dimension (4H) where its parts' sizes are known. Where one
        name is not, it is fixed (in `new`) so that the stack has `got` elements, if it can be."""
        known = {**self.size, **new}
        unknown = [p for p in dim.parts if isinstance(p, str) and p not in known]
        fixed = sum(p if isinstance(p, int) else known[p] for p in dim.parts if p not in unknown)
        if not unknown:
            return fixed
        if any(p != unknown[0] for p in unknown) or got <= fixed or (got - fixed) % len(unknown):
            return -1
        new[unknown[0]] = (got - fixed) // len(unknown)
        return got

    def _mismatch(self, what: str, array, symbolic: tuple, lead: tuple,
                  detail: str = "") -> ValueError:
        expected = tuple(size for _, size in lead) + tuple(symbolic)
        resolved = tuple(self._resolved(d) for d in expected)
        if len(symbolic) == 2 and not lead and tuple(array.shape[::-1]) == resolved:
            detail += "; it looks transposed"
        return ValueError(f"{what} has shape {_fmt(array.shape)} but the expected shape is "
                          f"{self.expected(symbolic, lead)}{detail}")


def likely_sizes(pairs) -> dict:
    """Dimension -> the size most of the (shape, symbolic shape) pairs give it (shapes of the
    wrong rank say nothing)."""
    votes: dict[str, dict[int, int]] = {}
    for shape, symbolic in pairs:
        if shape is None or len(shape) != len(symbolic):
            continue
        for got, want in zip(shape, symbolic):
            if isinstance(want, Stacked):   # 4H of 20 votes H = 5 (a stack of one name only)
                names = {p for p in want.parts if isinstance(p, str)}
                fixed = sum(p for p in want.parts if isinstance(p, int))
                count = len(want.parts) - sum(isinstance(p, int) for p in want.parts)
                if len(names) != 1 or got <= fixed or (got - fixed) % count:
                    continue
                want, got = names.pop(), (got - fixed) // count
            if isinstance(want, str):
                counts = votes.setdefault(want, {})
                counts[got] = counts.get(got, 0) + 1
    return {d: max(counts, key=counts.get) for d, counts in votes.items()}


@dataclass
class Call:
    """A checked forward call: everything converted to `dtype` and consistent."""
    params: dict
    xs: dict
    state: dict
    lengths: np.ndarray | None
    sizes: dict
    dtype: np.dtype
    T: int
    B: int
    device: object = None   # the caller's input, where it lives on the GPU (results go back
                            # as that kind of array)
    schedule: str | None = None   # the time loop's schedule asked for (None: the plan's)


def check_schedule(cell, schedule) -> str | None:
    """A schedule asked for (`schedule=`): one the cell's plans all run (cell.schedules), or
    None for each plan's own choice."""
    if schedule is None:
        return None
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; the schedules are "
                         f"{', '.join(map(repr, SCHEDULES))}")
    if schedule not in cell.schedules:
        raise ValueError(f"cell {cell.name!r} cannot run the schedule {schedule!r}: its "
                         f"recurrence is {cell.plan.forward.recurrence} "
                         f"({cell.plan.forward.recurrence_reason or 'see rnncc show --stage plan'})"
                         f"; its schedules: {', '.join(map(repr, cell.schedules))}")
    return schedule


def _as_array(what: str, value, device_ok: bool = False):
    """`value` as an array: a numpy array, or (device_ok: the cuda target) a Numba device array
    viewing the caller's GPU array."""
    if type(value) is np.ndarray and value.dtype.kind in "fiu":
        return value   # (the usual case, checked first: a call checks every parameter)
    if is_device_array(value):
        if not device_ok:
            raise ValueError(f"{what} is an array on a GPU; run with target='cuda', or copy it "
                             f"to the host first")
        array = as_device(value)
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype,
                                                                     np.complexfloating):
            raise ValueError(f"{what} has dtype {array.dtype}; expected real numbers")
        return array
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{what} is not an array: {exc}") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating)
                                     or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{what} has dtype {array.dtype}; expected real numbers")
    return array


def _in_dtype(what: str, array, dtype):
    """`array` in the run's dtype: numpy arrays are converted, a device array must have it
    already (converting it would be a hidden copy on the GPU)."""
    if type(array) is np.ndarray and array.dtype == dtype:
        return array
    if is_device_array(array):
        if array.dtype != dtype:
            raise ValueError(f"{what} is a {array.dtype} array on the GPU but this call runs in "
                             f"{dtype} (the input's dtype); convert it first")
        return array
    return np.asarray(array, dtype=dtype)


@lru_cache(maxsize=4096)
def _label(kind: str, name: str) -> str:
    """How errors name a parameter or a state (worked out once: a call checks every one)."""
    return f"parameter {name!r}" if kind == "parameter" else f"state[{name!r}]"


def _check_names(what: str, given: Mapping, expected: list[str], shape_of) -> None:
    """Every expected name given and no other; one error names every problem (`shape_of`:
    name -> its shape, written out)."""
    if len(given) == len(expected) and all(name in given for name in expected):
        return
    problems = [f"unknown {what} {name!r}" for name in given if name not in expected]
    problems += [f"missing {what} {name!r} (shape {shape_of(name)})"
                 for name in expected if name not in given]
    if problems:
        raise ArgumentKeyError(f"{'; '.join(problems)}; this cell's {what}s are: "
                               f"{', '.join(expected) or 'none'}")


# Call shapes a cell has checked, by _signature (at most this many per cell; then forgotten)
CHECKED_SHAPES = 64


def _signature(cell, p, x, state):
    """(a key of everything check_forward's verdict depends on, the parameters in order, the
    states in order or None) for the usual call: one numpy input, numpy parameters and states
    in its dtype; None for any other (checked the long way every time)."""
    if type(x) is not np.ndarray or type(p) is not dict or len(cell.inputs) != 1:
        return None
    dtype = x.dtype
    if dtype not in FLOAT_DTYPES or len(p) != len(cell.params):
        return None
    try:
        params = [p[name] for name in cell.params]
        states = None if state is None else [state[name] for name in cell.states]
    except (KeyError, TypeError):
        return None
    key = [x.shape, dtype]
    for array in params:
        if type(array) is not np.ndarray or array.dtype != dtype:
            return None
        key.append(array.shape)
    if states is not None:
        if type(state) is not dict or len(state) != len(cell.states):
            return None
        for array in states:
            if type(array) is not np.ndarray or array.dtype != dtype:
                return None
            key.append(array.shape)
    return tuple(key), params, states


def _zero_states(cell, sizes: dict, B: int, dtype) -> dict:
    """The initial states of a call that passes none: zeros [B, dim]."""
    sym = cell.symbolic_shapes
    return {name: np.zeros((B, dim_size(sym[name][0], sizes)), dtype=dtype)
            for name in cell.states}


def check_forward(cell, p, x, state, lengths, device_ok: bool = False,
                  schedule: str | None = None) -> Call:
    """The checked Call. A call whose shapes and dtypes a call before it had (the usual case:
    the same layer run again) skips the checks, which depend on nothing else: 17 -> 4 us, a
    sixth of a batch-1, one-step call's time in Python."""
    signature = _signature(cell, p, x, state)
    checked = getattr(cell, "_checked_shapes", None)
    if signature is not None and checked is not None and signature[0] in checked:
        key, params, states = signature
        sizes = checked[key]
        T, B = x.shape[:2]
        if states is None:
            init = _zero_states(cell, sizes, B, x.dtype)
        else:
            init = dict(zip(cell.states, states))
        return Call(dict(zip(cell.params, params)), {cell.inputs[0]: x}, init,
                    check_lengths(lengths, T, B), dict(sizes), x.dtype, T, B, None,
                    check_schedule(cell, schedule))
    call = _check_forward(cell, p, x, state, lengths, device_ok, schedule)
    if signature is not None:
        if checked is None or len(checked) >= CHECKED_SHAPES:
            checked = cell._checked_shapes = {}
        checked[signature[0]] = dict(call.sizes)
    return call


def _check_forward(cell, p, x, state, lengths, device_ok: bool, schedule: str | None) -> Call:
    sym = cell.symbolic_shapes
    # Inputs first: they fix the dtype, T and B.
    if isinstance(x, Mapping):
        _check_names("input", x, cell.inputs, lambda n: f"[T, B, {sym[n][0]}]")
        raw_x = dict(x)
    elif len(cell.inputs) == 1:
        raw_x = {cell.inputs[0]: x}
    else:
        raise ValueError(f"cell {cell.name!r} has several inputs ({', '.join(cell.inputs)}): pass "
                         f"x as a dict name -> [T, B, dim]")
    sizes = Sizes()
    xs = {}
    dtype = None
    for name in cell.inputs:
        what = f"x[{name!r}]" if len(cell.inputs) > 1 else "x"
        array = check_float(what, _as_array(what, raw_x[name], device_ok))
        if dtype is None:
            dtype = array.dtype
        elif array.dtype != dtype:
            raise ValueError(f"{what} has dtype {array.dtype} but the other inputs are {dtype}")
        if array.ndim != 3:
            raise ValueError(f"{what} has shape {_fmt(array.shape)} but the expected shape is "
                             f"[T, B, {sym[name][0]}]")
        xs[name] = array
    first = next(iter(xs))
    T, B = xs[first].shape[:2]
    for name, array in xs.items():
        what = f"x[{name!r}]" if len(cell.inputs) > 1 else "x"
        if array.shape[:2] != (T, B):
            raise ValueError(f"{what} has shape {_fmt(array.shape)} but the other inputs have "
                             f"T, B = {T}, {B}")
        sizes.bind(what, array, sym[name], lead=(("T", T), ("B", B)))

    if not isinstance(p, Mapping):
        raise ValueError("p must be a dict: parameter name -> array (see cell.init_params)")
    _check_names("parameter", p, cell.params, lambda n: "[" + ", ".join(map(str, sym[n])) + "]")
    shape = lambda a, lead: (None if getattr(a, "shape", None) is None
                             else tuple(a.shape)[lead:])
    sizes.pairs = lambda: (
        [(shape(xs[n], 2), sym[n]) for n in cell.inputs]
        + [(shape(p[n], 0), sym[n]) for n in cell.params]
        + [(shape(v, 1), sym[n]) for n, v in (state.items() if isinstance(state, Mapping)
                                              else ()) if n in sym])
    params = {}
    for name in cell.params:
        what = _label("parameter", name)
        array = _as_array(what, p[name], device_ok)
        sizes.bind(what, array, sym[name])
        params[name] = _in_dtype(what, array, dtype)

    if state is not None:
        if not isinstance(state, Mapping):
            raise ValueError("state must be a dict: state name -> [B, dim]")
        _check_names("state", state, cell.states, lambda n: f"[B, {sym[n][0]}]")
        raw_state = {name: _as_array(_label("state", name), state[name], device_ok)
                     for name in cell.states}
        for name, array in raw_state.items():
            sizes.bind(_label("state", name), array, sym[name], lead=(("B", B),))

    for dim in cell.dims:
        if dim not in sizes.size:
            holders = [n for n in cell.states if dim in sym[n]]
            raise ValueError(f"cannot tell the size of dimension {dim}: it appears only in state "
                             f"{', '.join(map(repr, holders))}; pass state=")
    if state is None:
        init = _zero_states(cell, sizes.size, B, dtype)
    else:
        init = {name: _in_dtype(_label("state", name), raw_state[name], dtype)
                for name in cell.states}

    checked_lengths = check_lengths(lengths, T, B)

    on_device = [raw_x[n] for n in cell.inputs if is_device_array(raw_x[n])]
    return Call(params, xs, init, checked_lengths, dict(sizes.size), dtype, T, B,
                on_device[0] if on_device else None, check_schedule(cell, schedule))


def check_lengths(lengths, T: int, B: int) -> np.ndarray | None:
    """Row lengths as int64 [B], each in 0..T (None: every row runs all T steps)."""
    if lengths is None:
        return None
    lengths_array = _as_array("lengths", lengths)
    if not np.issubdtype(lengths_array.dtype, np.integer):
        raise ValueError(f"lengths has dtype {lengths_array.dtype}; expected integers")
    if lengths_array.shape != (B,):
        raise ValueError(f"lengths has shape {_fmt(lengths_array.shape)} but the expected "
                         f"shape is [B] = ({B},)")
    if B and (lengths_array.min() < 0 or lengths_array.max() > T):
        raise ValueError(f"lengths must lie in 0..T = 0..{T}; got values from "
                         f"{lengths_array.min()} to {lengths_array.max()}")
    return lengths_array.astype(np.int64)


def check_backward(cell, call: Call, dys, dfinal, device_ok: bool = False) -> tuple:
    """dys like ys ([T, B, d_out]) and dfinal a dict state -> [B, d] (missing states: zeros),
    converted to the run's dtype."""
    sizes = Sizes(call.sizes)
    out_shape = cell.graph.node(cell.graph.output).shape or (1,)
    array = _as_array("dys", dys, device_ok)
    sizes.bind("dys", array, out_shape, lead=(("T", call.T), ("B", call.B)))
    dys = _in_dtype("dys", array, call.dtype)
    dfinal = dict(dfinal or {})
    for name in dfinal:
        if name not in cell.states:
            raise ArgumentKeyError(f"unknown state {name!r} in dfinal; this cell's states are: "
                                   f"{', '.join(cell.states)}")
    checked = {}
    for name in cell.states:
        shape = cell.symbolic_shapes[name]
        if name in dfinal:
            g = _as_array(f"dfinal[{name!r}]", dfinal[name], device_ok)
            sizes.bind(f"dfinal[{name!r}]", g, shape, lead=(("B", call.B),))
            checked[name] = _in_dtype(f"dfinal[{name!r}]", g, call.dtype)
        else:
            checked[name] = np.zeros(call.state[name].shape, dtype=call.dtype)
    return dys, checked

"""Gradient checking: rnncc's BPTT gradients against central finite differences in float64.

The checked function is the one cell.backward differentiates,
    L = sum(ys * dys) + sum over states of sum(final * dfinal),
with random dys and dfinal. Each entry of every parameter, input and initial state is perturbed
in turn; the derivative is the fourth-order central difference
    (8 (L(+h) - L(-h)) - (L(+2h) - L(-2h))) / (12 h),  h = 1e-4,
whose truncation error (~h^4 = 1e-16) and rounding error (~1e-16 |L| / h = 1e-12 |L|) both sit
far below the tolerance; a kink of relu/abs/max/min within 2h of an entry would spoil that
entry's difference, which random data makes unlikely.

An entry's relative error is |analytic - numeric| / max(|analytic|, |numeric|, 1e-3 * scale),
scale being the largest |numeric| of that array: entries a thousand times smaller than their
array's largest are judged against that floor instead of their own (noisy) size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STEP = 1e-4
TOLERANCE = 1e-6


@dataclass
class Problem:
    """A random float64 instance of a cell: parameters, inputs, state, upstream gradients."""
    sizes: dict
    p: dict
    xs: dict
    state: dict
    dys: np.ndarray
    dfinal: dict
    lengths: np.ndarray | None

    def x_arg(self, cell, xs=None):
        xs = self.xs if xs is None else xs
        return xs if len(cell.inputs) > 1 else xs[cell.inputs[0]]


def default_sizes(cell) -> dict:
    """Small, distinct sizes (3, 4, 5, ...) so a transposed dimension cannot go unnoticed."""
    return {dim: 3 + i for i, dim in enumerate(cell.dims)}


def random_problem(cell, sizes=None, T=5, B=2, seed=0, ragged=False) -> Problem:
    sizes = dict(default_sizes(cell) if sizes is None else sizes)
    rng = np.random.default_rng(seed)
    # random values for every parameter (not the spec's initialisers: gains of exactly 1 would
    # hide a transposed or misrouted gradient), twice PyTorch's init range: gates saturate
    # more, which exercises the derivative rules
    p = cell.init_params(seed=seed, dtype=np.float64, initialisers=False, **sizes)
    p = {k: 2 * v for k, v in p.items()}
    xs = {n: rng.standard_normal((T, B, *cell.shape(n, **sizes))) for n in cell.inputs}
    state = {n: 0.5 * rng.standard_normal((B, *cell.shape(n, **sizes))) for n in cell.states}
    out_shape = cell.graph.node(cell.graph.output).shape
    d_out = cell.shape_of_dims(out_shape, sizes)[0] if out_shape else 1
    dys = rng.standard_normal((T, B, d_out))
    dfinal = {n: rng.standard_normal(v.shape) for n, v in state.items()}
    lengths = None
    if ragged:  # one row runs to the end; the others stop early (one of them at 0 when B > 2)
        lengths = rng.integers(1, T + 1, size=B)
        lengths[0] = T
        if B > 2:
            lengths[-1] = 0
    return Problem(sizes, p, xs, state, dys, dfinal, lengths)


def loss(cell, prob: Problem, p=None, xs=None, state=None) -> float:
    ys, final = cell.forward(prob.p if p is None else p, prob.x_arg(cell, xs),
                             state=prob.state if state is None else state,
                             lengths=prob.lengths)
    return float(np.sum(ys * prob.dys) + sum(np.sum(final[s] * prob.dfinal[s]) for s in final))


def numeric_gradient(f, array: np.ndarray, step: float = STEP) -> np.ndarray:
    """d f / d array by the fourth-order central difference; f reads `array`, changed in place
    here and restored."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        values = []
        for k in (1, -1, 2, -2):
            flat[i] = original + k * step
            values.append(f())
        flat[i] = original
        gflat[i] = (8 * (values[0] - values[1]) - (values[2] - values[3])) / (12 * step)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """The worst entry's relative error (see the module doc)."""
    if analytic.size == 0:
        return 0.0
    scale = float(np.max(np.abs(numeric)))
    floor = max(1e-3 * scale, 1e-12)
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return float(np.max(np.abs(analytic - numeric) / denom))


@dataclass
class Entry:
    group: str   # "param" | "input" | "state"
    name: str
    shape: tuple
    error: float


@dataclass
class Report:
    entries: list = field(default_factory=list)
    tolerance: float = TOLERANCE

    @property
    def worst(self) -> float:
        return max((e.error for e in self.entries), default=0.0)

    @property
    def passed(self) -> bool:
        return self.worst < self.tolerance  # a NaN error fails too

    def text(self) -> str:
        lines = [f"  {e.group:<6} {e.name:<12} {str(list(e.shape)):<14} worst relative error "
                 f"{e.error:.2e}{'' if e.error < self.tolerance else '   <-- FAIL'}"
                 for e in self.entries]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict} (worst {self.worst:.2e}, tolerance {self.tolerance:.0e})")
        return "\n".join(lines)


def check_gradients(cell, prob: Problem, target: str = "reference",
                    tolerance: float = TOLERANCE) -> Report:
    """cell.backward against finite differences, for every parameter, input and state entry."""
    g = cell.backward(prob.p, prob.x_arg(cell), prob.dys, state=prob.state, dfinal=prob.dfinal,
                      lengths=prob.lengths, target=target)
    gx = g["x"] if len(cell.inputs) > 1 else {cell.inputs[0]: g["x"]}
    report = Report(tolerance=tolerance)
    p = {k: v.copy() for k, v in prob.p.items()}
    xs = {k: v.copy() for k, v in prob.xs.items()}
    state = {k: v.copy() for k, v in prob.state.items()}

    def f():
        return loss(cell, prob, p=p, xs=xs, state=state)

    for group, arrays, analytic in (("param", p, g["params"]), ("input", xs, gx),
                                    ("state", state, g["state"])):
        for name, array in arrays.items():
            numeric = numeric_gradient(f, array)
            report.entries.append(Entry(group, name, array.shape,
                                        relative_error(analytic[name], numeric)))
    return report

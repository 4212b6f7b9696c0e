"""Recurrent regularisers for any cell, as transformations of its step graph before autodiff.

    zoneout             (zoneout.py)             a state keeps its previous value where a mask,
                                                 fresh per step, says so
    recurrent_dropout   (recurrent_dropout.py)   a state that feeds a matrix product is multiplied
                                                 by a mask drawn once per sequence
    weight drop         (weight_drop.py)         the matrices that multiply a state are multiplied
                                                 by a mask drawn once per call

Zoneout and recurrent dropout add their masks to the step graph as inputs marked as masks
(`mask` in the input leaf's attrs: autodiff gives them no gradient), read by ordinary ops: the
optimizer fuses them into the step's kernels, autodiff differentiates through them, and every
backend runs them as it runs any input. Recurrent dropout also carries the masked state as a
state of its own (recurrent_dropout.py says why; `derived_states` names them), which a layer
fills in and folds back. Weight drop's mask multiplies a parameter once per call,
outside the steps (what the optimizer's hoist would make of a parameter-only product anyway),
so it is applied to the parameters a call runs with (weight_drop.py says how).

`regularise(graph, Regularisers(...))` returns the training graph; in eval mode a layer feeds
the same graph each mask's expectation as a constant input (zoneout p, recurrent dropout 1:
runtime/layer.py, `RNN._regulariser_inputs`), so it compiles one cell for both modes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Graph, verify
from .recurrent_dropout import DROPPED, derived_states, product_states, recurrent_dropout
from .weight_drop import recurrent_matrices
from .zoneout import zoneout

# The masks' input names: '__' is reserved in specs, so no spec can name an input so.
ZONEOUT = "zoneout__"
DROPOUT = "recurrent_dropout__"


def mask_input(kind: str, state: str) -> str:
    return {"zoneout": ZONEOUT, "recurrent_dropout": DROPOUT}[kind] + state


def _probability(what: str, p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"{what} must be a probability in [0, 1), got {p!r}")
    return float(p)


@dataclass(frozen=True)
class Regularisers:
    """The regularisers of a layer: zoneout probability per state, recurrent dropout and weight
    drop probabilities (0: off). `for_cell` checks them against a cell."""
    zoneout: dict = field(default_factory=dict)
    recurrent_dropout: float = 0.0
    weight_drop: float = 0.0

    @classmethod
    def for_cell(cls, cell, zoneout=None, recurrent_dropout=0.0, weight_drop=0.0):
        zoneout = {} if zoneout is None else zoneout
        if not isinstance(zoneout, dict):
            raise ValueError(f"zoneout must be a dict state name -> probability (as "
                             f"zoneout={{{cell.states[0]!r}: 0.1}}), got {zoneout!r}")
        for name, p in zoneout.items():
            if name not in cell.states:
                raise KeyError(f"zoneout names {name!r}, which is not a state of cell "
                               f"{cell.name!r}; its states are: {', '.join(cell.states)}")
            _probability(f"zoneout[{name!r}]", p)
        regs = cls({k: float(v) for k, v in zoneout.items() if v > 0},
                   _probability("recurrent_dropout", recurrent_dropout),
                   _probability("weight_drop", weight_drop))
        if regs.recurrent_dropout and not product_states(cell.graph):
            raise ValueError(f"recurrent_dropout drops the states a matrix product reads, and "
                             f"cell {cell.name!r} reads none in a product (its states meet "
                             f"elementwise ops only): use zoneout")
        if regs.weight_drop and not recurrent_matrices(cell.graph):
            raise ValueError(f"weight_drop drops the matrices that multiply a state, and cell "
                             f"{cell.name!r} multiplies none")
        return regs

    def __bool__(self) -> bool:
        return bool(self.zoneout or self.recurrent_dropout or self.weight_drop)

    @property
    def in_graph(self) -> bool:
        """Whether the step graph changes (weight drop alone leaves it as it is)."""
        return bool(self.zoneout or self.recurrent_dropout)


def regularise(graph: Graph, regs: Regularisers) -> Graph:
    """The training step graph with the masks of zoneout and recurrent dropout as inputs."""
    # zoneout first: the masked state recurrent dropout carries is the zoned-out new value
    if regs.zoneout:
        graph = verify(zoneout(graph, {s: mask_input("zoneout", s) for s in graph.states
                                       if s in regs.zoneout}))
    if regs.recurrent_dropout:
        graph = verify(recurrent_dropout(graph, {s: mask_input("recurrent_dropout", s)
                                                 for s in product_states(graph)}))
    return graph


__all__ = ["DROPPED", "Regularisers", "regularise", "mask_input", "derived_states",
           "product_states", "recurrent_matrices", "zoneout", "recurrent_dropout"]

"""Zoneout (Krueger et al. 2017): each unit of a state keeps its previous value where the mask
is 1, s' <- m * s + (1 - m) * s', written s' + m * (s - s') (one op fewer); the mask is an input
of the step (a fresh one every step), Bernoulli(p) in training, the constant p in eval.

Only the step's results change: the state's new value and the output where it is that value.
Whatever else the step computes from the new value reads it before zoneout, as in the paper's
LSTM (h' = o * tanh(c') with the cell state before zoneout) and haste's.
"""
from __future__ import annotations

from ..graph import Graph
from ..passes.rewrite import Draft


def zoneout(graph: Graph, masks: dict) -> Graph:
    """masks: state name -> the name of its mask input ([dim] per row, like the state)."""
    draft = Draft(graph)
    for state, mask_name in masks.items():
        old = graph.updates[state]
        prev = graph.states[state]
        shape = graph.node(prev).shape
        mask = draft.add("input", (), shape, {"mask": "step"}, mask_name)
        moved = draft.add("sub", (prev, old), shape)
        kept = draft.add("mul", (mask, moved), shape)
        new = draft.add("add", (old, kept), shape, name=f"zoneout({state}')")
        for named in draft.results.values():
            for key, nid in named.items():
                if nid == old:
                    named[key] = new
    return draft.finish()

"""The reference backend: numpy interprets the unoptimized step graph, one time step at a time.

It is the oracle every other backend and every pass is tested against, so it stays plain:
no fusion, no hoisting, just each op's own numpy evaluation in topological order.
"""
from __future__ import annotations

import networkx as nx
import numpy as np

from ..graph import Graph


def live_order(graph: Graph) -> list[int]:
    """The nodes the roots depend on, in topological order."""
    live = set(graph.roots())
    for root in graph.roots():
        live |= nx.ancestors(graph.nx, root)
    return [n for n in graph.order if n in live]


def evaluate(graph: Graph, bound: dict[int, np.ndarray], order=None) -> dict[int, np.ndarray]:
    """Values of all nodes in `order` (default: the live ones) given the leaf values in `bound`."""
    values = dict(bound)
    for nid in live_order(graph) if order is None else order:
        if nid not in values:
            node = graph.node(nid)
            values[nid] = node.opdef.evaluate([values[a] for a in node.args], node.attrs)
    return values


def constants(graph: Graph, dtype) -> dict[int, np.ndarray]:
    """Constant leaves as 0-d arrays of the run's dtype (so no value is promoted past it)."""
    return {n: np.asarray(graph.node(n).attrs["value"], dtype=dtype)
            for n in graph.order if graph.node(n).op == "const"}


def forward(graph: Graph, params: dict, xs: dict, state: dict, lengths, sizes: dict, dtype):
    """Run the cell over a sequence.

    params: name -> array; xs: input name -> [T, B, d]; state: state name -> [B, d];
    lengths: [B] ints or None; sizes: dimension name -> size. Arrays are already checked and of
    `dtype`. Returns (ys [T, B, d_out], final states name -> [B, d]).
    """
    T, B = next(iter(xs.values())).shape[:2]
    order = live_order(graph)
    fixed = constants(graph, dtype)
    fixed.update({nid: params[name] for name, nid in graph.params.items()})
    out_shape = graph.node(graph.output).shape
    d_out = sizes.get(out_shape[0], out_shape[0]) if out_shape else 1
    ys = np.zeros((T, B, d_out), dtype=dtype)
    inputs, states = graph.inputs, graph.states
    h = {name: np.array(value, dtype=dtype) for name, value in state.items()}
    for t in range(T):
        bound = dict(fixed)
        bound.update({nid: xs[name][t] for name, nid in inputs.items()})
        bound.update({nid: h[name] for name, nid in states.items()})
        values = evaluate(graph, bound, order)
        new = {s: np.broadcast_to(values[nid], h[s].shape) for s, nid in graph.updates.items()}
        y = np.broadcast_to(values[graph.output], (B, d_out))
        if lengths is not None:
            alive = (t < lengths)[:, None]
            new = {s: np.where(alive, v, h[s]) for s, v in new.items()}
            y = np.where(alive, y, 0)
        ys[t] = y
        h = {s: np.array(v, dtype=dtype) for s, v in new.items()}
    return ys, h

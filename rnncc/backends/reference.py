"""The reference backend: numpy interprets the step graphs, one time step at a time.

It is the oracle every other backend and every pass is tested against, so it stays plain: no
fusion, no hoisting, each op's own numpy evaluation in topological order. With `lengths`, each
step computes only the rows still running (as PyTorch's packed sequences do), so whatever pads a
finished row never reaches a result.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from ..graph import Graph
from ..ops.base import EvalContext, dim_size


def live_order(graph: Graph) -> list[int]:
    """The nodes the roots depend on, in topological order."""
    live = set(graph.roots())
    for root in graph.roots():
        live |= nx.ancestors(graph.nx, root)
    return [n for n in graph.order if n in live]


def evaluate(graph: Graph, bound: dict, ctx: EvalContext, order=None) -> dict:
    """Values of the nodes in `order` (default: the live ones) given the bound leaves' values."""
    values = dict(bound)
    for nid in live_order(graph) if order is None else order:
        if nid not in values:
            node = graph.node(nid)
            if node.opdef.evaluate is None:
                raise KeyError(f"leaf {node.op} {node.name!r} (node %{nid}) is not bound")
            values[nid] = node.opdef.evaluate([values[a] for a in node.args], node.attrs, ctx)
    return values


def _rows(t: int, lengths, B: int):
    """The rows still running at step t: a slice (all) or an index array."""
    if lengths is None:
        return slice(None)
    rows = np.flatnonzero(t < lengths)
    return slice(None) if rows.size == B else rows


@dataclass
class Tape:
    """What the forward pass keeps for backward: per step, the states it started from and the
    forward values the backward graph reads (backward.saved), for the rows that ran."""
    states: list      # [t] -> state name -> [B, d] (all rows)
    saved: list       # [t] -> saved name -> array for the running rows


def forward(graph: Graph, params: dict, xs: dict, state: dict, lengths, sizes: dict, dtype,
            backward: Graph | None = None):
    """Run the cell over a sequence.

    params: name -> array; xs: input name -> [T, B, d]; state: state name -> [B, d];
    lengths: [B] ints or None; sizes: dimension name -> size. Arrays are already checked and of
    `dtype`. Returns (ys [T, B, d_out], final states), and the Tape for `backward` if it is given.
    """
    T, B = next(iter(xs.values())).shape[:2]
    ctx = EvalContext(sizes, dtype)
    order = live_order(graph)
    # the values to keep for backward: listed on a training forward graph, else on the backward
    # graph (whose saved values name nodes of the forward graph it was derived from)
    saved = graph.saved or (backward.saved if backward is not None else {})
    if backward is not None:  # keep every saved value alive, even one no root needs
        order = [n for n in graph.order if n in set(order) | set(saved.values())]
    inputs, states = graph.inputs, graph.states
    fixed = {nid: params[name] for name, nid in graph.params.items()}
    out_shape = graph.node(graph.output).shape
    d_out = dim_size(out_shape[0], sizes) if out_shape else 1
    ys = np.zeros((T, B, d_out), dtype=dtype)
    h = {name: np.array(value, dtype=dtype) for name, value in state.items()}
    tape = Tape([], []) if backward is not None else None
    for t in range(T):
        rows = _rows(t, lengths, B)
        bound = dict(fixed)
        bound.update({nid: xs[name][t][rows] for name, nid in inputs.items()})
        bound.update({nid: h[name][rows] for name, nid in states.items()})
        values = evaluate(graph, bound, ctx, order)
        if tape is not None:
            tape.states.append(h)
            tape.saved.append({label: values[fnid] for label, fnid in saved.items()})
        n_rows = B if isinstance(rows, slice) else rows.size
        ys[t][rows] = np.broadcast_to(values[graph.output], (n_rows, d_out))
        new = {s: v.copy() for s, v in h.items()}
        for s, nid in graph.updates.items():
            new[s][rows] = np.broadcast_to(values[nid], (n_rows, h[s].shape[1]))
        h = new
    return (ys, h, tape) if backward is not None else (ys, h)


def backward(graph: Graph, bgraph: Graph, tape: Tape, params: dict, xs: dict, dys, dfinal: dict,
             lengths, sizes: dict, dtype):
    """BPTT: run the backward step from t = T-1 down to 0.

    Returns (parameter gradients, input gradients name -> [T, B, d], initial-state gradients).
    Rows past their length pass their state gradient through untouched and contribute nothing.
    """
    T, B = next(iter(xs.values())).shape[:2]
    ctx = EvalContext(sizes, dtype)
    order = live_order(bgraph)
    leaves = {op: bgraph.leaves(op) for op in ("input", "state", "param", "grad", "saved")}
    fixed = {nid: params[name] for name, nid in leaves["param"].items()}
    dy_leaf = leaves["grad"]["dy"]
    carried = bgraph.carried[0]  # state -> leaf of its new value's upstream gradient
    out_shape = graph.node(graph.output).shape
    dparams = {name: np.zeros_like(value) for name, value in params.items()}
    dxs = {name: np.zeros_like(xs[name]) for name in bgraph.results["x"]}
    dstate = {name: np.array(g, dtype=dtype) for name, g in dfinal.items()}
    for t in reversed(range(T)):
        rows = _rows(t, lengths, B)
        bound = dict(fixed)
        bound.update({nid: xs[name][t][rows] for name, nid in leaves["input"].items()})
        bound.update({nid: tape.states[t][name][rows] for name, nid in leaves["state"].items()})
        bound.update({nid: tape.saved[t][name] for name, nid in leaves["saved"].items()})
        dy = dys[t][rows]
        bound[dy_leaf] = dy if out_shape else dy[:, :1]
        for s, nid in carried.items():
            bound[nid] = dstate[s][rows]
        values = evaluate(bgraph, bound, ctx, order)
        for name, nid in bgraph.results["params"].items():
            dparams[name] += values[nid]
        for name, nid in bgraph.results["x"].items():
            dxs[name][t][rows] = values[nid]
        new = {s: g.copy() for s, g in dstate.items()}
        for name, nid in bgraph.results["state"].items():
            new[name][rows] = values[nid]
        dstate = new
    return dparams, dxs, dstate

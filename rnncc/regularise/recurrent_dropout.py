"""Recurrent dropout (variational dropout, Gal & Ghahramani 2016): the state a matrix product
reads is multiplied by a mask drawn once per sequence and row (the same at every step), scaled
by 1 / (1 - p) in training, 1 in eval.

It acts on the products' operands only: `U @ h` becomes `U @ (h * m)`, and so does a state
inside a product's operand (`U @ (r * h)`, `W @ concat(x, h)`), while the step's elementwise
reads of the state (`f * c`, `z * h`) see it unmasked. One mask per state, shared by all the
products that read it.
"""
from __future__ import annotations

import networkx as nx

from ..graph import Graph
from ..passes.rewrite import Draft

PRODUCTS = ("matmul",)


def product_states(graph: Graph) -> list:
    """The states some matrix product's vector operand reads (directly or through other ops
    that are no product), in the order of graph.states."""
    read = set()
    for nid in graph.order:
        node = graph.node(nid)
        if node.op in PRODUCTS:
            read |= _states_in(graph, node.args[1])
    return [s for s, n in graph.states.items() if n in read]


def _states_in(graph: Graph, nid: int) -> set:
    """State leaves `nid` reads without passing through a product."""
    found, stack, seen = set(), [nid], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        node = graph.node(n)
        if node.op == "state":
            found.add(n)
        elif node.op not in PRODUCTS:
            stack.extend(node.args)
    return found


def recurrent_dropout(graph: Graph, masks: dict) -> Graph:
    """masks: state name -> the name of its mask input (a per-row vector like the state)."""
    draft = Draft(graph)
    state_of = {graph.states[s]: s for s in masks}
    masked: dict[int, int] = {}   # node -> its value with the masked states, where it differs
    mask_leaf: dict[str, int] = {}

    def with_masks(n: int) -> int:
        if n in masked:
            return masked[n]
        node = draft.nodes[n]
        out = n
        if n in state_of:
            s = state_of[n]
            if s not in mask_leaf:
                mask_leaf[s] = draft.add("input", (), node.shape, {"mask": "sequence"}, masks[s])
            out = draft.add("mul", (n, mask_leaf[s]), node.shape)
        elif node.op not in PRODUCTS and node.args:
            args = tuple(with_masks(a) for a in node.args)
            if args != node.args:
                out = draft.add(node.op, args, node.shape, node.attrs, None, node.pos)
        masked[n] = out
        return out

    for nid in nx.topological_sort(graph.nx):
        node = graph.node(nid)
        if node.op in PRODUCTS:
            vector = with_masks(node.args[1])
            if vector != node.args[1]:
                current = draft.nodes[nid]
                draft.nodes[nid] = type(current)(current.op, (current.args[0], vector),
                                                 current.shape, current.attrs, current.name,
                                                 current.pos)
    return draft.finish()

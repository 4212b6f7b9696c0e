"""Recurrent dropout (variational dropout, Gal & Ghahramani 2016): the state a matrix product
reads is multiplied by a mask drawn once per sequence and row (the same at every step), scaled
by 1 / (1 - p) in training, 1 in eval.

It acts on the products' operands only: `U @ h` becomes `U @ (h * m)`, and so does a state
inside a product's operand (`U @ (r * h)`, `W @ concat(x, h)`), while the step's elementwise
reads of the state (`f * c`, `z * h`) see it unmasked. One mask per state, shared by all the
products that read it.

The masked state is carried as a state of its own, `dropped__h` = h * m, whose new value the
step computes beside h' (h' * m, in the kernel that computes h'): the products read it as they
read h without dropout, so the mask costs no kernel of its own before the products (forward)
or after them (backward). Its initial value is h0 * m; a layer (runtime/sublayer.py) passes
that in, keeps it out of the final states, and adds its gradient, times m, to h0's
(`derived_states` says which state and mask each is made of).
"""
from __future__ import annotations

import networkx as nx

from ..graph import Graph
from ..passes.rewrite import Draft

PRODUCTS = ("matmul",)
DROPPED = "dropped__"   # '__' is reserved in specs: no spec names a state so


def product_states(graph: Graph) -> list:
    """The states some matrix product's vector operand reads (directly or through other ops
    that are no product), in the order of graph.states (a masked state counts as its own)."""
    read = set()
    for nid in graph.order:
        node = graph.node(nid)
        if node.op in PRODUCTS:
            read |= _states_in(graph, node.args[1])
    return [s for s, n in graph.states.items() if n in read and not s.startswith(DROPPED)]


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


def derived_states(graph: Graph) -> dict:
    """The states recurrent dropout carries: name -> (the state it masks, its mask input)."""
    return {name: (graph.node(nid).attrs["masks"], graph.node(nid).attrs["mask"])
            for name, nid in graph.states.items() if "masks" in graph.node(nid).attrs}


def recurrent_dropout(graph: Graph, masks: dict) -> Graph:
    """masks: state name -> the name of its mask input (a per-row vector like the state)."""
    draft = Draft(graph)
    dropped: dict[int, int] = {}   # state leaf -> the leaf of its masked value
    for s, mask_name in masks.items():
        leaf = graph.states[s]
        shape = graph.node(leaf).shape
        dropped[leaf] = draft.add("state", (), shape, {"masks": s, "mask": mask_name},
                                  DROPPED + s)
        mask = draft.add("input", (), shape, {"mask": "sequence"}, mask_name)
        draft.results["updates"][DROPPED + s] = draft.add(
            "mul", (graph.updates[s], mask), shape, name=f"{DROPPED}{s}'")
    masked: dict[int, int] = {}   # node -> its value reading the masked states, where it differs

    def with_masks(n: int) -> int:
        if n in masked:
            return masked[n]
        node = draft.nodes[n]
        out = dropped.get(n, n)
        if n not in dropped and node.op not in PRODUCTS and node.args:
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

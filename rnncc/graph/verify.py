"""verify(graph): the step graph's invariants, checked after building and after every pass.

A failure here is a bug in rnncc, not in the user's spec, so it raises GraphError (an
AssertionError) with the offending node printed.
"""
from __future__ import annotations

import networkx as nx

from .graph import Graph
from .ops import REGISTRY, ShapeError, show_shape


class GraphError(AssertionError):
    pass


def _same(a, b):
    if a != b:
        raise ShapeError(f"dimension {a} != {b}")
    return a


def verify(graph: Graph) -> Graph:
    def fail(nid, msg):
        node = graph.node(nid) if nid in graph.nx else None
        raise GraphError(f"%{nid} {node}: {msg}")

    if not nx.is_directed_acyclic_graph(graph.nx):
        raise GraphError(f"graph {graph.name!r} has a cycle")
    dims = set(graph.dims)
    for nid in graph.order:
        node = graph.node(nid)
        if node.op not in REGISTRY:
            fail(nid, f"unknown op {node.op!r}")
        opdef = REGISTRY[node.op]
        if len(node.args) != opdef.arity:
            fail(nid, f"{node.op} takes {opdef.arity} arguments, has {len(node.args)}")
        preds = sorted((src, index) for src, _, index in graph.nx.in_edges(nid, data="index"))
        if preds != sorted(zip(node.args, range(len(node.args)))):
            fail(nid, f"edges {sorted(preds)} disagree with the argument list {node.args}")
        for d in node.shape:
            if not (isinstance(d, int) and d > 0) and d not in dims:
                fail(nid, f"dimension {d!r} is neither a declared dimension nor a positive size")
        if opdef.kind == "leaf":
            if node.op == "const":
                if node.shape != () or "value" not in node.attrs:
                    fail(nid, "a constant is a scalar with a value")
            elif not node.name:
                fail(nid, f"a {node.op} leaf needs a name")
            continue
        try:
            want = opdef.shape([graph.node(a).shape for a in node.args], node.attrs, _same)
        except ShapeError as exc:
            fail(nid, f"arguments do not fit: {exc}")
        if tuple(want) != node.shape:
            fail(nid, f"shape {show_shape(node.shape)} but its op gives {show_shape(want)}")

    states = graph.states
    if set(graph.updates) != set(states):
        raise GraphError(f"updates {sorted(graph.updates)} != states {sorted(states)}")
    for name, nid in graph.updates.items():
        if nid not in graph.nx:
            raise GraphError(f"the update of {name} is missing node %{nid}")
        if graph.node(nid).shape != graph.node(states[name]).shape:
            fail(nid, f"the new value of state {name} has the wrong shape")
    if graph.output not in graph.nx:
        raise GraphError("the output node is missing")
    return graph

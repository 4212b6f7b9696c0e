"""verify(graph): the step graph's invariants, checked after building and after every pass.

A failure here is a bug in rnncc, not in the user's spec, so it raises GraphError (an
AssertionError) with the offending node printed.
"""
from __future__ import annotations

import networkx as nx

from .graph import Graph
from ..ops import REGISTRY, ShapeError, Stacked, show_shape


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

    try:   # the topological order the passes use anyway: it exists only for a DAG
        order = graph.order
    except nx.NetworkXUnfeasible:
        raise GraphError(f"graph {graph.name!r} has a cycle") from None
    dims = set(graph.dims)
    for nid in order:
        node = graph.node(nid)
        if node.op not in REGISTRY:
            fail(nid, f"unknown op {node.op!r}")
        opdef = REGISTRY[node.op]
        if (len(node.args) != opdef.arity) if opdef.arity is not None else not node.args:
            fail(nid, f"{node.op} takes {opdef.arity or 'some'} arguments, has {len(node.args)}")
        preds = sorted((src, index) for src, _, index in graph.nx.in_edges(nid, data="index"))
        if preds != sorted(zip(node.args, range(len(node.args)))):
            fail(nid, f"edges {sorted(preds)} disagree with the argument list {node.args}")
        for d in node.shape:
            for part in (d.parts if isinstance(d, Stacked) else (d,)):
                if not (isinstance(part, int) and part > 0) and part not in dims:
                    fail(nid, f"dimension {part!r} is neither a declared dimension nor a positive "
                              f"size")
        if node.op == "const" and (node.shape != () or "value" not in node.attrs):
            fail(nid, "a constant is a scalar with a value")
        if opdef.kind == "leaf":
            if not node.name:
                fail(nid, f"a {node.op} leaf needs a name")
            continue
        try:
            want = opdef.shape([graph.node(a).shape for a in node.args], node.attrs, _same)
        except ShapeError as exc:
            fail(nid, f"arguments do not fit: {exc}")
        if tuple(want) != node.shape:
            fail(nid, f"shape {show_shape(node.shape)} but its op gives {show_shape(want)}")

    roots = graph.roots()
    for group, named in graph.results.items():
        for name, nid in named.items():
            if nid not in graph.nx:
                raise GraphError(f"result {group}[{name!r}] is missing node %{nid}")
    if graph.kind == "forward":
        _verify_forward(graph)
    else:
        _verify_backward(graph)
    if not roots:
        raise GraphError("the graph has no results")
    return graph


def _verify_forward(graph: Graph) -> None:
    states = graph.states
    groups = set(graph.results)
    if not {"updates", "output"} <= groups <= {"updates", "output", "saved"} or len(
            graph.results["output"]) != 1:
        raise GraphError(f"a forward graph's results are one output, the updates and (for "
                         f"training) the saved values, got {graph.results}")
    if set(graph.updates) != set(states):
        raise GraphError(f"updates {sorted(graph.updates)} != states {sorted(states)}")
    for name, nid in graph.updates.items():
        if graph.node(nid).shape != graph.node(states[name]).shape:
            raise GraphError(f"the new value of state {name} has the wrong shape")


def _verify_backward(graph: Graph) -> None:
    """Every input, state and parameter gets a gradient of its own shape; a parameter's is summed
    over the batch rows; saved leaves are exactly the ones listed in graph.saved."""
    groups = {"state": graph.states, "x": graph.differentiable_inputs, "params": graph.params}
    per_row = graph.per_row()
    if set(graph.results) != set(groups):
        raise GraphError(f"a backward graph's results are {sorted(groups)}, got "
                         f"{sorted(graph.results)}")
    for group, leaves in groups.items():
        if set(graph.results[group]) != set(leaves):
            raise GraphError(f"gradients for {group} {sorted(graph.results[group])} != "
                             f"{sorted(leaves)}")
        for name, nid in graph.results[group].items():
            node = graph.node(nid)
            if node.shape != graph.node(leaves[name]).shape:
                raise GraphError(f"the gradient of {name} has shape {show_shape(node.shape)}")
            if node.op != "zeros" and (group == "params") == per_row[nid]:
                raise GraphError(f"the gradient of {group} {name} is "
                                 f"{'not ' if group == 'params' else ''}summed over the batch")
    saved = graph.leaves("saved")
    if set(saved) != set(graph.saved):
        raise GraphError(f"saved leaves {sorted(saved)} != graph.saved {sorted(graph.saved)}")

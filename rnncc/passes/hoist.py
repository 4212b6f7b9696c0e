"""Hoisting: decide in which phase of the time loop each node runs.

    invariant  depends on parameters and constants only: once, before everything
    before     over all T*B rows before the loop: products (GEMMs) that read nothing carried
               from step to step, and whatever feeds only such products
    step       inside the loop, one step (B rows) at a time: what the carried values need
    after      over all T*B rows after the loop: what depends on the loop but nothing carried
               depends on (backward: the weight and input gradients, one GEMM each over all
               time steps instead of T small ones; bias gradients, one reduction)

"Carried" is what a step hands to the next: the states forward, their gradients backward.
Values that cross from the loop to `after` (or that backward saves) are stored for every step.
"""
from __future__ import annotations

from ..graph import Graph
from ..graph.schedule import Phase

def hoist(graph: Graph) -> Graph:
    carried_leaves, carried_results = graph.carried
    carried = set(carried_leaves.values())
    per_row = {n for n in graph.order
               if graph.node(n).opdef.kind == "leaf" and graph.node(n).op != "param"}
    on_carried, on_rows = set(), set()
    for nid in graph.order:
        node = graph.node(nid)
        if nid in carried or any(a in on_carried for a in node.args):
            on_carried.add(nid)
        if nid in per_row or any(a in on_rows for a in node.args):
            on_rows.add(nid)
    needed = set()  # what the carried results need, within the step
    stack = list(carried_results.values())
    while stack:
        nid = stack.pop()
        if nid not in needed:
            needed.add(nid)
            stack.extend(graph.node(nid).args)

    phase: dict[int, Phase] = {}
    for nid in reversed(graph.order):
        node = graph.node(nid)
        if node.is_leaf:
            continue
        if nid not in on_rows:
            phase[nid] = Phase.INVARIANT
        elif nid in on_carried:
            # after the loop only what reads carried values through stored ones: a carried value
            # itself exists one step at a time
            reads_carried = any(a in carried for a in node.args)
            feeds_step = any(phase[u] == Phase.STEP for u in graph.users(nid))
            phase[nid] = Phase.STEP if nid in needed or reads_carried or feeds_step else Phase.AFTER
        elif node.opdef.gemm:
            phase[nid] = Phase.BEFORE
        else:
            users = {phase[u] for u in graph.users(nid)}
            if Phase.BEFORE in users:
                phase[nid] = Phase.BEFORE
            elif nid in needed or Phase.STEP in users:
                phase[nid] = Phase.STEP
            else:
                phase[nid] = Phase.AFTER
    return graph.annotated(phase=phase)

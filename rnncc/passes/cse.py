"""Common-subexpression elimination: two nodes with the same op, arguments and attributes are one.

Commutative ops (the op table says which: add, mul, max, min) match with their arguments in either order.
"""
from __future__ import annotations

from ..graph import Graph
from .rewrite import copy_node, rebuild

def _key(node, args):
    if node.opdef.kind == "leaf":
        return (node.op, node.name)
    if node.opdef.commutative:
        args = tuple(sorted(args))
    return (node.op, args, tuple(sorted((k, repr(v)) for k, v in node.attrs.items())), node.shape)


def cse(graph: Graph) -> Graph:
    seen: dict[tuple, int] = {}

    def visit(new: Graph, node, args):
        key = _key(node, args)
        if key not in seen:
            seen[key] = copy_node(new, node, args)
        return seen[key]

    return rebuild(graph, visit)

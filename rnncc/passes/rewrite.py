"""How passes change a graph without editing it: they build a new one.

`rebuild` copies a graph node by node (leaves first, then in topological order); a pass supplies
`visit(new, node, args)`: given the new graph, an old node and its arguments already mapped into
the new graph, it returns the new node to use for it, or None to copy the node unchanged.

`Draft` is for structural rewrites that create nodes out of order (stacking several products into
one needs all of their operands first): a private, editable copy whose `finish()` drops dead nodes
and emits a new Graph in topological order.

Either way results and saved values follow the mapping, and bound leaves (inputs, states,
parameters, gradients, saved values) are always kept, used or not: they are the graph's interface.
"""
from __future__ import annotations

import networkx as nx

from ..graph import Graph, Node


def copy_node(new: Graph, node, args) -> int:
    return new.add(node.op, args, node.shape, node.attrs, node.name, node.pos)


def rebuild(graph: Graph, visit=None, keep=None) -> Graph:
    """A new graph from `graph` through `visit`; `keep`, if given, is the set of old nodes to
    carry over (bound leaves are carried over regardless)."""
    new = Graph(graph.name, graph.dims, graph.kind)
    mapping: dict[int, int] = {}
    leaves = [n for n in graph.order if graph.node(n).is_leaf]
    for nid in leaves + [n for n in graph.order if not graph.node(n).is_leaf]:
        node = graph.node(nid)
        if keep is not None and nid not in keep and node.opdef.kind != "leaf":
            continue
        args = tuple(mapping[a] for a in node.args)
        out = visit(new, node, args) if visit is not None else None
        mapping[nid] = copy_node(new, node, args) if out is None else out
    new.results = {group: {name: mapping[n] for name, n in named.items()}
                   for group, named in graph.results.items()}
    if graph.kind == "backward":
        new.saved = graph.saved
    return new


class Draft:
    """An editable copy of a graph's nodes, keyed by id; new nodes get fresh ids."""

    def __init__(self, graph: Graph):
        self.name, self.dims, self.kind = graph.name, graph.dims, graph.kind
        self.nodes: dict[int, Node] = {n: graph.node(n) for n in graph.order}
        self.results = {g: dict(named) for g, named in graph.results.items()}
        self.saved = dict(graph.saved)  # a backward graph's (a forward one's are its results)
        self.next_id = max(self.nodes, default=-1) + 1

    def add(self, op: str, args, shape, attrs=None, name=None, pos=None) -> int:
        from types import MappingProxyType
        nid = self.next_id
        self.next_id += 1
        self.nodes[nid] = Node(op, tuple(args), tuple(shape), MappingProxyType(dict(attrs or {})),
                               name, pos)
        return nid

    def users(self) -> dict[int, list[int]]:
        users: dict[int, list[int]] = {n: [] for n in self.nodes}
        for nid, node in self.nodes.items():
            for a in node.args:
                users[a].append(nid)
        return users

    def replace_uses(self, old: int, new: int) -> None:
        """Every use of `old` (as an argument or a result) becomes a use of `new`."""
        for nid, node in list(self.nodes.items()):
            if old in node.args and nid != new:
                args = tuple(new if a == old else a for a in node.args)
                self.nodes[nid] = Node(node.op, args, node.shape, node.attrs, node.name, node.pos)
        for named in self.results.values():
            for k, v in named.items():
                if v == old:
                    named[k] = new

    def finish(self) -> Graph:
        g = nx.MultiDiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from((a, n) for n, node in self.nodes.items() for a in node.args)
        roots = [n for named in self.results.values() for n in named.values()]
        live = set(roots).union(*(nx.ancestors(g, r) for r in roots))
        live |= {n for n, node in self.nodes.items() if node.opdef.kind == "leaf"}
        order = nx.lexicographical_topological_sort(
            g.subgraph(live), key=lambda n: (not self.nodes[n].is_leaf, n))
        new = Graph(self.name, self.dims, self.kind)
        mapping: dict[int, int] = {}
        for nid in order:
            node = self.nodes[nid]
            mapping[nid] = copy_node(new, node, tuple(mapping[a] for a in node.args))
        new.results = {group: {k: mapping[n] for k, n in named.items()}
                       for group, named in self.results.items()}
        if new.kind == "backward":
            new.saved = self.saved
        return new

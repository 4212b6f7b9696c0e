"""Dead-code elimination: drop every node no result depends on (bound leaves stay)."""
from __future__ import annotations

import networkx as nx

from ..graph import Graph
from .rewrite import rebuild


def dce(graph: Graph) -> Graph:
    live = set(graph.roots())
    for root in graph.roots():
        live |= nx.ancestors(graph.nx, root)
    return rebuild(graph, keep=live)

"""The step graph: one time step of a cell as a DAG of typed ops, stored in networkx.

Node ids are ints. Each node carries a `Node` record (op, argument ids in order, shape, dtype,
attributes, the user's name for it if any, and its source position); edges run from an argument
to its user and carry the argument's index. Leaves are the step's inputs, the previous states,
parameters and constants; the roots are the new states (`graph.updates`) and the output.

Graphs are values: passes build new graphs rather than editing one in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

import networkx as nx

from .ops import REGISTRY


@dataclass(frozen=True)
class Node:
    op: str
    args: tuple = ()
    shape: tuple = ()
    attrs: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    name: str | None = None     # leaf name, or the intermediate / state update it defines
    pos: tuple | None = None    # (line, col) in the spec
    # Every value is of the one float type the cell runs in (float32 or float64, chosen per call).
    dtype: str = "float"

    @property
    def opdef(self):
        return REGISTRY[self.op]

    @property
    def is_leaf(self) -> bool:
        return self.opdef.kind == "leaf"


class Graph:
    def __init__(self, name: str, dims: tuple):
        self.name = name
        self.dims = tuple(dims)          # dimension names, in order of first appearance
        self.nx = nx.MultiDiGraph()  # multi: `h * h` has two edges from h
        self.updates: dict[str, int] = {}  # state name -> node of its new value
        self.output: int | None = None
        self.output_name: str = ""

    # -- building ---------------------------------------------------------------------------------
    def add(self, op: str, args=(), shape=(), attrs=None, name=None, pos=None) -> int:
        if op not in REGISTRY:
            raise KeyError(f"unknown op {op!r}")
        nid = self.nx.number_of_nodes()
        node = Node(op, tuple(args), tuple(shape), MappingProxyType(dict(attrs or {})), name, pos)
        self.nx.add_node(nid, node=node)
        for index, arg in enumerate(node.args):
            if arg not in self.nx:
                raise KeyError(f"argument %{arg} of new node %{nid} does not exist")
            self.nx.add_edge(arg, nid, index=index)
        self.__dict__.pop("order", None)
        return nid

    # -- reading ----------------------------------------------------------------------------------
    def node(self, nid: int) -> Node:
        return self.nx.nodes[nid]["node"]

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    @cached_property
    def order(self) -> tuple:
        """Node ids in a topological order (ties broken by id, so the order is deterministic)."""
        return tuple(nx.lexicographical_topological_sort(self.nx))

    def leaves(self, op: str) -> dict[str, int]:
        """name -> node id of the leaves of one kind ('input', 'state', 'param')."""
        return {self.node(n).name: n for n in self.order if self.node(n).op == op}

    @property
    def inputs(self) -> dict[str, int]:
        return self.leaves("input")

    @property
    def states(self) -> dict[str, int]:
        return self.leaves("state")

    @property
    def params(self) -> dict[str, int]:
        return self.leaves("param")

    def roots(self) -> list[int]:
        return list(dict.fromkeys([*self.updates.values(), self.output]))

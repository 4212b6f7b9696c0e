"""The step graph: one time step of a cell as a DAG of typed ops, stored in networkx.

Node ids are ints. Each node carries a `Node` record (op, argument ids in order, shape, dtype,
attributes, the user's name for it if any, and its source position); edges run from an argument
to its user and carry the argument's index. Leaves are the step's inputs, the previous states,
parameters and constants; the roots are the new states (`graph.updates`) and the output.

Graphs are values: passes build new graphs rather than editing one in place.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

import networkx as nx

from ..ops import REGISTRY


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
        """No arguments: a bound leaf or a constant."""
        return self.opdef.arity == 0


def upstream_grad_name(state: str) -> str:
    """The backward graph's leaf for the upstream gradient of a state's new value: dh'."""
    return f"d{state}'"


class Graph:
    """A step graph. `results` names its roots in groups:

    forward:  {"updates": {state: new value}, "output": {output name: value}}
    backward: {"state": {state: gradient}, "x": {input: gradient}, "params": {param: gradient}}

    `saved` is the forward values backward reads, saved-leaf name -> node id of the forward
    graph: a backward graph lists them (rnncc/autodiff), and the training forward graph returns
    them as its result group "saved" (plan.with_saved); either way `graph.saved` reads them.
    The forward pass must keep those values at every step.
    """

    def __init__(self, name: str, dims: tuple, kind: str = "forward"):
        self.name = name
        self.dims = tuple(dims)          # dimension names, in order of first appearance
        self.kind = kind
        self.nx = nx.MultiDiGraph()      # multi: `h * h` has two edges from h
        self.results: dict[str, dict[str, int]] = {}
        self._saved: dict[str, int] = {}
        # Set by the scheduling passes (passes/hoist.py, passes/fuse.py): node -> decision,
        # typed in schedule.py.
        self.phase: dict = {}    # node -> Phase
        self.stage: dict = {}    # node -> Stage

    @property
    def saved(self) -> dict[str, int]:
        return self.results.get("saved", {}) if self.kind == "forward" else self._saved

    @saved.setter
    def saved(self, value: dict) -> None:
        if self.kind == "forward":
            raise AttributeError("a forward graph's saved values are its results['saved']")
        self._saved = dict(value)

    def annotated(self, phase=None, stage=None) -> "Graph":
        """A copy carrying scheduling decisions (the nodes themselves are shared, unchanged)."""
        new = copy.copy(self)
        new.phase = dict(self.phase if phase is None else phase)
        new.stage = dict(self.stage if stage is None else stage)
        return new

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
        """name -> node id of the bound leaves of one kind ('input', 'state', 'param', ...)."""
        return {self.node(n).name: n for n in self.order if self.node(n).op == op}

    def per_row(self) -> dict[int, bool]:
        """node -> whether its value is one per batch row (not shared by all rows): inputs,
        states, gradients and saved values are; parameters, constants, stacked parameters and
        sums over the batch are not; any other op is if one of its arguments is."""
        per_row: dict[int, bool] = {}
        for n in self.order:
            node = self.node(n)
            if node.opdef.kind == "leaf":
                per_row[n] = node.op != "param"
            elif node.opdef.kind in ("constant", "batch_reduce") or node.op == "stack_rows":
                per_row[n] = False
            else:
                per_row[n] = any(per_row[a] for a in node.args)
        return per_row

    def users(self, nid: int) -> list[int]:
        return sorted(set(self.nx.successors(nid)))

    @property
    def inputs(self) -> dict[str, int]:
        return self.leaves("input")

    @property
    def differentiable_inputs(self) -> dict[str, int]:
        """The inputs that get a gradient: all but a regulariser's masks (rnncc/regularise),
        inputs marked by a "mask" attribute."""
        return {x: n for x, n in self.inputs.items() if "mask" not in self.node(n).attrs}

    @property
    def states(self) -> dict[str, int]:
        return self.leaves("state")

    @property
    def params(self) -> dict[str, int]:
        return self.leaves("param")

    @property
    def carried(self) -> tuple[dict[str, int], dict[str, int]]:
        """The values a step hands to the next, as (leaves read, results written), keyed by state:
        forward, the states; backward (which runs t = T-1 .. 0), the states' gradients."""
        if self.kind == "forward":
            return self.states, self.updates
        grads = self.leaves("grad")
        return {s: grads[upstream_grad_name(s)] for s in self.states}, self.results["state"]

    # forward graphs
    @property
    def updates(self) -> dict[str, int]:
        return self.results["updates"]

    @property
    def output(self) -> int:
        return next(iter(self.results["output"].values()))

    @property
    def output_name(self) -> str:
        return next(iter(self.results["output"]))

    def roots(self) -> list[int]:
        return list(dict.fromkeys(n for group in self.results.values() for n in group.values()))

"""The emitter: how derivative rules add ops to the backward graph.

Each op is added with its shape computed by the op's own shape rule (dimensions must agree
exactly), so a rule that combines values of different shapes fails when the backward graph is
built, not when it runs.
"""
from __future__ import annotations

from ..graph import Graph
from ..ops import REGISTRY, ShapeError


def _same(a, b):
    if a != b:
        raise ShapeError(f"dimension {a} != {b}")
    return a


class Emitter:
    def __init__(self, graph: Graph, forward: Graph):
        self.graph = graph
        self.forward = forward
        self._consts: dict[float, int] = {}

    def shape(self, nid: int) -> tuple:
        return self.graph.node(nid).shape

    def arg_shape(self, forward_node, index: int) -> tuple:
        """The shape of a forward node's argument."""
        return self.forward.node(forward_node.args[index]).shape

    def op(self, name: str, *args: int, **attrs) -> int:
        opdef = REGISTRY[name]
        shape = opdef.shape([self.shape(a) for a in args], attrs, _same)
        return self.graph.add(name, args, shape, attrs)

    def const(self, value: float) -> int:
        value = float(value)
        if value not in self._consts:
            self._consts[value] = self.graph.add("const", (), (), {"value": value})
        return self._consts[value]

    def add(self, a: int, b: int) -> int:
        return self.op("add", a, b)

    def sub(self, a: int, b: int) -> int:
        return self.op("sub", a, b)

    def mul(self, a: int, b: int) -> int:
        return self.op("mul", a, b)

    def div(self, a: int, b: int) -> int:
        return self.op("div", a, b)

    def neg(self, a: int) -> int:
        return self.op("neg", a)

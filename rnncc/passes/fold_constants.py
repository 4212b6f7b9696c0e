"""Constant folding: an op whose arguments are all numbers becomes a number.

Folding happens in float64, once; the result is stored as a Python float and enters the run's
dtype like any constant.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph
from ..ops.base import EvalContext
from .rewrite import rebuild

_CTX = EvalContext({}, np.float64)


def fold_constants(graph: Graph) -> Graph:
    consts: dict[float, int] = {}

    def const(new: Graph, value: float) -> int:
        if value not in consts:
            consts[value] = new.add("const", (), (), {"value": value})
        return consts[value]

    def visit(new: Graph, node, args):
        if node.op == "const":
            return const(new, node.attrs["value"])
        foldable = node.opdef.kind in ("elementwise", "reduce") and args and all(
            new.node(a).op == "const" for a in args)
        if not foldable:
            return None
        values = [np.asarray(new.node(a).attrs["value"], dtype=np.float64) for a in args]
        with np.errstate(all="ignore"):  # a NaN or inf folds like any other value
            value = np.asarray(node.opdef.evaluate(values, node.attrs, _CTX)).reshape(())
        return const(new, float(value))

    return rebuild(graph, visit)

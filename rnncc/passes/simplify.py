"""Algebraic simplification: identities that remove work without changing any value.

    x * 1, 1 * x, x / 1, x + 0, 0 + x, x - 0, x ** 1  ->  x
    -(-x) -> x;   0 - x -> -x;   x + (-y) -> x - y;   x - (-y) -> x + y;   (-x) * (-y) -> x * y
    sum(-v) -> -sum(v);   mean(-v) -> -mean(v)   (v a vector: negation is exact, so the total is
        the same, bit for bit; the negated vector is then often unused. Every row sum in the
        layer-norm LSTM's backward was of one: the derivative of x - mean(x). Dropping them
        removed a stored vector and a loop each)
    part(concat(v_1, ..., v_k), i) -> v_i

A rule applies only when the result keeps the node's shape (1 * x with x a scalar and the 1 a
vector would not). Rules that would change a NaN or an infinity (x * 0 -> 0, x - x -> 0) are not
applied.
"""
from __future__ import annotations

from ..graph import Graph
from .rewrite import rebuild


def simplify(graph: Graph) -> Graph:
    def value(new, nid):
        node = new.node(nid)
        return node.attrs["value"] if node.op == "const" else None

    def visit(new: Graph, node, args):
        def same_shape(nid):
            return nid if new.node(nid).shape == node.shape else None

        op = node.op
        if op in ("mul", "add", "sub", "div"):
            a, b = args
            va, vb = value(new, a), value(new, b)
            if op == "mul":
                if vb == 1:
                    return same_shape(a)
                if va == 1:
                    return same_shape(b)
                na, nb = new.node(a), new.node(b)
                if na.op == "neg" and nb.op == "neg":
                    return new.add("mul", (na.args[0], nb.args[0]), node.shape, node.attrs,
                                   node.name, node.pos)
            if op == "div" and vb == 1:
                return same_shape(a)
            if op == "add":
                if vb == 0:
                    return same_shape(a)
                if va == 0:
                    return same_shape(b)
                if new.node(b).op == "neg":
                    return new.add("sub", (a, new.node(b).args[0]), node.shape, {}, node.name,
                                   node.pos)
            if op == "sub":
                if vb == 0:
                    return same_shape(a)
                if va == 0 and new.node(b).shape == node.shape:
                    return new.add("neg", (b,), node.shape, {}, node.name, node.pos)
                if new.node(b).op == "neg":
                    return new.add("add", (a, new.node(b).args[0]), node.shape, {}, node.name,
                                   node.pos)
        if op == "neg" and new.node(args[0]).op == "neg":
            return new.node(args[0]).args[0]
        if op in ("sum", "mean") and new.node(args[0]).op == "neg" and new.node(args[0]).shape:
            total = new.add(op, new.node(args[0]).args, node.shape, node.attrs, None, node.pos)
            return new.add("neg", (total,), node.shape, {}, node.name, node.pos)
        if op == "pow" and node.attrs["exponent"] == 1:
            return args[0]
        if op == "part" and new.node(args[0]).op == "concat":
            return new.node(args[0]).args[node.attrs["index"]]
        return None

    return rebuild(graph, visit)

"""Recurrence analysis: how a step's carried values depend on their previous values.

    matrix       a product (GEMM) lies on the recurrence: it reads a value that depends on a
                 carried one and a carried result depends on it (LSTM, GRU): the time loop runs
                 step by step, all rows together, a GEMM per step
    elementwise  no product lies on the recurrence, but a new carried value is a nonlinear
                 function of the old ones (IndRNN, SRU with its `v * c` terms): each batch row
                 (and, where every op of the step works column by column, each column) is an
                 independent lane that can run the whole time loop on its own
    linear       each new carried value is `a * s + b` in its own previous value s, with `a`
                 and `b` elementwise and free of every carried value (minGRU, minLSTM, QRNN):
                 an elementwise recurrence that an associative scan can also run

"Carried" is what a step hands to the next (graph.carried): forward, the states; backward, the
states' gradients. So the same analysis classifies both directions. BPTT's backward step is
linear in the carried gradients, whatever the forward is; it is `linear` here when its state
Jacobian is diagonal (every forward op on the recurrence works column by column).

Linearity is an affine-degree analysis: carried leaves have degree 1 (in themselves), every
other leaf, parameter and constant degree 0; add, sub and neg keep the larger degree, mul adds
degrees, div divides by a degree-0 value; any other op of a degree-1 value (a sigmoid, a
mean over the row, a part of a concat) makes it nonlinear. `affine(graph)` then extracts `a`
and `b` as graph nodes by the same rules applied to pairs (a, b): the linear rules of
differentiation (a = d s'/d s) and evaluation at s = 0 (b = s' at s = 0), op by op.

This is an analysis, not a rewrite: `classify` returns a Recurrence that lowering writes into
the Plan (plan.GraphPlan.recurrence); `affine` returns a new graph with result groups "a", "b".
"""
from __future__ import annotations

from dataclasses import dataclass

from ..graph import Graph
from ..ops.base import elementwise_shape
from .rewrite import Draft

MATRIX, ELEMENTWISE, LINEAR = "matrix", "elementwise", "linear"
KINDS = (MATRIX, ELEMENTWISE, LINEAR)

_NONLINEAR = 2   # any degree above 1


@dataclass(frozen=True)
class Recurrence:
    kind: str                     # matrix | elementwise | linear
    # why it is not one kind further down the list (matrix -> elementwise -> linear), for
    # `rnncc show --stage plan`: the node that breaks it, as text; "" for linear
    reason: str = ""


def _recurrent(graph: Graph) -> tuple[dict, set]:
    """(node -> the carried leaves it depends on; the nodes some carried result depends on)."""
    leaves, results = graph.carried
    carried = {n: s for s, n in leaves.items()}
    depends: dict[int, frozenset] = {}
    for n in graph.order:
        if n in carried:
            depends[n] = frozenset((carried[n],))
        else:
            depends[n] = frozenset().union(*(depends[a] for a in graph.node(n).args))
    needed, stack = set(), list(results.values())
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            stack.extend(graph.node(n).args)
    return depends, needed


def _describe(graph: Graph, n: int) -> str:
    node = graph.node(n)
    return f"{node.op} {node.name}" if node.name else node.op


def degree_rule(op: str, args: list) -> int:
    """The affine degree of `op` applied to values of degrees `args`, one of them 1 or more
    (see the module docstring)."""
    if op in ("add", "sub", "neg"):
        return max(args)
    if op == "mul":
        return min(sum(args), _NONLINEAR)
    if op == "div":
        return args[0] if args[1] == 0 else _NONLINEAR
    return _NONLINEAR


def degrees(graph: Graph) -> dict[int, int]:
    """Each node's affine degree in the carried values: 0 (free of them), 1 (affine), or 2
    (anything else)."""
    depends, _ = _recurrent(graph)
    leaves = set(graph.carried[0].values())
    degree: dict[int, int] = {}
    for n in graph.order:
        node = graph.node(n)
        if n in leaves:
            degree[n] = 1
        elif not depends[n]:
            degree[n] = 0
        else:
            degree[n] = degree_rule(node.op, [degree[a] for a in node.args])
    return degree


def classify(graph: Graph) -> Recurrence:
    """The recurrence of a step graph (forward or backward): see the module docstring."""
    depends, needed = _recurrent(graph)
    for n in graph.order:
        if graph.node(n).opdef.gemm and n in needed and depends[n]:
            return Recurrence(MATRIX, f"the product {_describe(graph, n)} reads "
                                      f"{', '.join(sorted(depends[n]))}")
    degree = degrees(graph)
    for state, n in graph.carried[1].items():
        if degree[n] > 1:
            culprit = next(m for m in graph.order if m in needed and degree[m] > 1
                           and all(degree[a] <= 1 for a in graph.node(m).args))
            return Recurrence(ELEMENTWISE, f"{_describe(graph, culprit)} is not affine in "
                                           f"{', '.join(sorted(depends[culprit]))}")
        others = depends[n] - {state}
        if others:
            return Recurrence(ELEMENTWISE, f"the new {state} depends on "
                                           f"{', '.join(sorted(others))}")
    return Recurrence(LINEAR)


class NotLinear(ValueError):
    """affine() of a graph whose recurrence is not linear."""


ONE, ZERO = "one", None   # the a part of a carried value itself, and an absent part


class Pairs:
    """The rules that build (a, b) pairs, shared by the graph's affine() and the Plan's scan
    step (plan/scan.py), each of which says how a value is made: `make(op, args)` adds op(args)
    and returns the new value (args are values or ONE, which it spells as a constant 1)."""

    def __init__(self, make):
        self.make = make

    def node(self, op: str, *args):
        """op(args) with the identities that keep the result small: 0 and 1 fold."""
        if op == "mul":
            x, y = args
            if ZERO in args:
                return ZERO
            if x == ONE:
                return y
            if y == ONE:
                return x
        if op in ("add", "sub"):
            x, y = args
            if y is ZERO:
                return x
            if x is ZERO:
                return y if op == "add" else self.node("neg", y)
        if op in ("neg", "div") and args[0] is ZERO:
            return ZERO
        return self.make(op, args)

    def pair(self, op: str, args: tuple, degree, pair) -> tuple:
        """(a, b) of op(args), an op of degree 1: degree(v) and pair(v) give its arguments'."""
        if op in ("add", "sub"):
            (ax, bx), (ay, by) = (pair(a) for a in args)
            return self.node(op, ax, ay), self.node(op, bx, by)
        if op == "neg":
            ax, bx = pair(args[0])
            return self.node("neg", ax), self.node("neg", bx)
        x, y = args   # mul or div, of one affine value by one free of the carried values
        if degree(x) == 0 and op == "mul":
            x, y = y, x
        ax, bx = pair(x)
        return self.node(op, ax, y), self.node(op, bx, y)


def affine(graph: Graph) -> Graph:
    """A copy of a `linear` graph with two more result groups: "a" and "b", carried name ->
    the node of a and of b, such that each carried result equals a * s + b in its previous
    value s (elementwise), a and b free of every carried value. Zero parts are `zeros` nodes."""
    recurrence = classify(graph)
    if recurrence.kind != LINEAR:
        raise NotLinear(f"cell {graph.name!r}: its recurrence is {recurrence.kind} "
                        f"({recurrence.reason}), not linear")
    degree = degrees(graph)
    draft = Draft(graph)
    leaves = {n: s for s, n in graph.carried[0].items()}

    def make(op, args):
        real = [draft.add("const", (), (), {"value": 1.0}) if a == ONE else a for a in args]
        shapes = [draft.nodes[a].shape for a in real]
        return draft.add(op, real, elementwise_shape(shapes, {}, lambda x, y: x))
    rules = Pairs(make)

    _, needed = _recurrent(graph)
    pairs: dict[int, tuple] = {}   # node -> (a part, b part), for what the carried results read
    for n in graph.order:
        if n not in needed:
            continue
        if n in leaves:
            pairs[n] = (ONE, ZERO)
        elif degree[n] == 0:
            pairs[n] = (ZERO, n)
        else:
            gnode = graph.node(n)
            pairs[n] = rules.pair(gnode.op, gnode.args, degree.get, pairs.get)
    for group in ("a", "b"):
        draft.results[group] = {}
    for state, r in graph.carried[1].items():
        width = graph.node(graph.carried[0][state]).shape
        a, b = pairs[r] if degree[r] == 1 else (ZERO, r)
        for group, value in (("a", a), ("b", b)):
            if value is ZERO:
                value = draft.add("zeros", (), width, {"shape": width})
            elif value == ONE:
                value = draft.add("const", (), (), {"value": 1.0})
            draft.results[group][state] = value
    return draft.finish()

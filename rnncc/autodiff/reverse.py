"""Reverse-mode differentiation of a step graph: forward step Graph -> backward step Graph.

The backward step computes, for one time step, the gradients of
    sum(dy * y) + sum over states s of sum(ds' * s')
with respect to the step's inputs, the previous states and the parameters, where y is the step's
output, s' the new states, and dy, ds' the upstream gradients (leaves of kind "grad", named
"dy" and "d<s>'"). Parameter gradients are the step's contribution, summed over the batch rows;
the sequence driver sums them over time.

The walk visits forward nodes in reverse topological order, sums the gradients reaching each
node, and applies the op's derivative rule (ops/*.py). Rules ask for forward values through
thunks; each value asked for is either *saved* (a "saved" leaf, listed in backward.saved, which
the forward pass must keep) or *recomputed* inside the backward graph from other values. Which is
decided by `recompute`, the set of op names whose values are recomputed; by default nothing is
recomputed and every forward value a rule reads is saved, as cuDNN does for its gate activations.
"""
from __future__ import annotations

from dataclasses import replace

import networkx as nx

from ..graph import Graph, verify
from ..graph.graph import upstream_grad_name
from ..graph.naming import gradient_name, graph_names
from ..passes.rewrite import Draft
from .emitter import Emitter


def differentiate(forward: Graph, recompute: frozenset = frozenset()) -> Graph:
    backward = Graph(forward.name, forward.dims, kind="backward")
    e = Emitter(backward, forward)
    value_of: dict[int, int] = {}  # forward node -> backward node holding its value
    names = graph_names(forward)   # saved values and gradients are named in forward terms
    taken = set(names.values())    # the backward graph's names so far, and the forward's

    # The step's inputs, previous states and parameters are available to backward as they are.
    for op in ("input", "state", "param"):
        for name, nid in forward.leaves(op).items():
            value_of[nid] = backward.add(op, (), forward.node(nid).shape,
                                         forward.node(nid).attrs, name=name)

    def value(fnid: int) -> int:
        if fnid in value_of:
            return value_of[fnid]
        node = forward.node(fnid)
        if node.opdef.kind == "constant":
            value_of[fnid] = (e.const(node.attrs["value"]) if node.op == "const"
                              else backward.add(node.op, (), node.shape, node.attrs))
        elif node.op in recompute:
            value_of[fnid] = backward.add(node.op, [value(a) for a in node.args], node.shape,
                                          node.attrs, None, node.pos)
        else:
            label, k = names[fnid], 1
            while label in backward.saved:  # two values the same expression names
                k += 1
                label = f"{names[fnid]}.{k}"
            value_of[fnid] = backward.add("saved", (), node.shape, name=label, pos=node.pos)
            taken.add(label)
            backward.saved[label] = fnid
        return value_of[fnid]

    # Forward nodes a gradient must reach: on a path from an input, state or parameter. A
    # regulariser's mask (rnncc/regularise) is an input that gets no gradient.
    inputs = forward.differentiable_inputs
    sources = [*inputs.values(), *forward.states.values(), *forward.params.values()]
    differentiable = set(sources)
    for src in sources:
        differentiable |= nx.descendants(forward.nx, src)

    pending: dict[int, list[int]] = {}
    out_node = forward.output
    pending.setdefault(out_node, []).append(
        backward.add("grad", (), forward.node(out_node).shape, name="dy"))
    for state, nid in forward.updates.items():
        pending.setdefault(nid, []).append(
            backward.add("grad", (), forward.node(nid).shape, name=upstream_grad_name(state)))
    taken.update(backward.node(n).name for n in backward.order)  # the leaves: dy, dh', ...

    def add_all(nodes: list[int]) -> int:
        nodes = _sum_concats(backward, nodes, add_all)
        g = nodes[0]
        for other in nodes[1:]:
            g = e.add(g, other)
        return g

    params = set(forward.params.values())
    total: dict[int, int] = {}
    for fnid in reversed(forward.order):
        grads = pending.pop(fnid, None)
        if not grads or fnid not in differentiable:
            continue
        node = forward.node(fnid)
        if fnid in params:
            # A parameter's gradient is summed over the batch rows: contributions that are
            # already summed (A in A @ v) are added as they are, per-row ones summed once.
            reduced = _one_product_per_vector(
                e, backward, [g for g in grads if backward.node(g).opdef.kind == "batch_reduce"],
                add_all)
            per_row = [g for g in grads if backward.node(g).opdef.kind != "batch_reduce"]
            if per_row:
                reduced.append(e.op("batch_sum", add_all(per_row)))
            total[fnid] = add_all(reduced)
            continue
        g = total[fnid] = add_all(grads)
        _name_gradient(backward, g, gradient_name(names[fnid]), taken)
        if node.is_leaf or node.opdef.vjp is None:
            continue  # an input or state; or a piecewise-constant op: no gradient flows
        args = [lambda a=a: value(a) for a in node.args]
        arg_grads = node.opdef.vjp(e, node, args, lambda: value(fnid), g)
        for arg, ag in zip(node.args, arg_grads):
            if ag is None or arg not in differentiable:
                continue
            if forward.node(arg).shape == () and e.shape(ag) != ():
                ag = e.op("sum", ag)  # the argument was a scalar broadcast along the vector
            pending.setdefault(arg, []).append(ag)

    def result(fnid: int) -> int:
        if fnid in total:
            return total[fnid]
        shape = forward.node(fnid).shape
        return backward.add("zeros", (), shape, {"shape": shape})

    backward.results = {
        "state": {s: result(n) for s, n in forward.states.items()},
        "x": {x: result(n) for x, n in inputs.items()},
        "params": {p: result(n) for p, n in forward.params.items()},
    }
    return verify(_without_unread_saves(backward))


def _without_unread_saves(backward: Graph) -> Graph:
    """The backward graph less the saved values no gradient reads (and what computed only
    from them): a rule gives every argument a gradient, and one that no result wants (a
    regulariser's mask gets none) asked for forward values the forward pass would otherwise
    store at every step for nothing."""
    roots = backward.roots()
    live = set(roots).union(*(nx.ancestors(backward.nx, r) for r in roots))
    saved = backward.leaves("saved")
    unread = {n for n in saved.values() if n not in live}
    if not unread:
        return backward
    draft = Draft(backward)
    draft.nodes = {n: node for n, node in draft.nodes.items()
                   if n in live or (node.opdef.kind == "leaf" and n not in unread)}
    draft.saved = {label: f for label, f in draft.saved.items() if saved[label] not in unread}
    return draft.finish()


def _sum_concats(backward: Graph, grads: list[int], add_all) -> list[int]:
    """Gradients that are concats of the same parts (those of a chunked vector: each part's
    gradient is a concat with zeros in the other parts) are summed part by part, into one concat
    of the parts' gradients: the stacked product's gradient is then the concat the optimizer
    builds for stacked gates, with no sums of zeros."""
    concats: dict[tuple, list[int]] = {}
    for g in grads:
        node = backward.node(g)
        if node.op == "concat":
            concats.setdefault(node.shape, []).append(g)
    merged = [g for g in grads if backward.node(g).op != "concat"]
    for shape, group in concats.items():
        if len(group) == 1:
            merged.append(group[0])
            continue
        parts = []
        for index in range(len(backward.node(group[0]).args)):
            terms = [backward.node(g).args[index] for g in group]
            nonzero = [t for t in terms if backward.node(t).op != "zeros"]
            parts.append(add_all(nonzero) if nonzero else terms[0])
        merged.append(backward.add("concat", parts, shape, {}))
    return merged


def _one_product_per_vector(e, backward: Graph, grads: list[int], add_all) -> list[int]:
    """A matrix's gradients from several products of one vector (`W @ x` twice): the sum of
    their outer products over the batch, outer_sum(g1, x) + outer_sum(g2, x), is one,
    outer_sum(g1 + g2, x) (a sum of matrices is no op of a plan; the builder allows no two
    vectors: graph/build.py). The single products left unread are dropped by DCE."""
    by_vector: dict[int, list[int]] = {}
    for g in grads:
        node = backward.node(g)
        key = node.args[1] if node.op == "outer_sum" else -1 - g
        by_vector.setdefault(key, []).append(g)
    merged = []
    for vector, group in by_vector.items():
        if len(group) == 1:
            merged.append(group[0])
        else:
            summed = add_all([backward.node(g).args[0] for g in group])
            merged.append(e.op("outer_sum", summed, vector))
    return merged


def _name_gradient(backward: Graph, g: int, name: str, taken: set) -> None:
    """Name node g, a value's whole gradient, after the value (unless it has a name: a leaf's,
    or another value's whose gradient it also is). The upstream gradient of a state is a leaf
    of that name already; the whole gradient (with dy's part) is then `dh'_total`."""
    node = backward.node(g)
    if node.name or node.opdef.kind == "constant":
        return
    while name in taken:
        name += "_total"
    taken.add(name)
    backward.nx.nodes[g]["node"] = replace(node, name=name)


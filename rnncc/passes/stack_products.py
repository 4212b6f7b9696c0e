"""Shared products: matrix products that share a vector become one product with stacked matrices.

Forward: the matmuls `A_1 @ v, ..., A_k @ v` (k >= 2) become one `stack_rows(A_1..A_k) @ v`
whose parts replace them, wherever their results go next (the LSTM's four W_* @ x become one
[4H, I] product; the GRU's U_n @ h joins U_r @ h and U_z @ h although it is added to d_n before
the reset gate multiplies it).

Backward, the same stacking seen from the other side (Appleyard et al. 2016):
- a sum of `A_k^T g_k` (the gradients of the vectors of those products) is one
  `stack_rows(A_1..A_k)^T concat(g_1..g_k)`;
- the gradients `sum_rows g_k v^T` of matrices that multiplied the same v are the row blocks of
  one `sum_rows concat(g_1..g_k) v^T`;
- the batch sums of g_1..g_k (the gate biases) are the parts of one batch sum of the concat.
Parts are always ordered as the matrices are among the cell's parameters, so forward and backward
stack the same matrices the same way (PyTorch's gate order for the shipped cells) and share one
packed copy; the concats of the same gradients in the same order are one node after CSE.
"""
from __future__ import annotations

from collections import defaultdict

from ..graph import Graph
from ..ops import REGISTRY, ShapeError
from .rewrite import Draft


def _same(a, b):
    if a != b:
        raise ShapeError(f"{a} != {b}")
    return a


def _add(draft: Draft, op: str, args, **attrs) -> int:
    shape = REGISTRY[op].shape([draft.nodes[a].shape for a in args], attrs, _same)
    return draft.add(op, args, shape, attrs)


def stack_products(graph: Graph) -> Graph:
    draft = Draft(graph)
    param_rank = {nid: i for i, nid in enumerate(graph.params.values())}
    _stack_matmuls(draft, param_rank)
    concats = _stack_transposed_sums(draft, param_rank)
    concats += _stack_outer_sums(draft, graph, param_rank)
    _stack_batch_sums(draft, concats)
    return draft.finish()


def _parts(draft: Draft, stacked: int, members: list[int], op: str) -> None:
    dim = draft.nodes[stacked].shape[0]
    for index, member in enumerate(members):
        part = _add(draft, op, (stacked,), index=index, stacked=dim)
        draft.replace_uses(member, part)


def _stack_matmuls(draft: Draft, param_rank: dict) -> None:
    groups: dict[int, list[int]] = defaultdict(list)
    for nid, node in sorted(draft.nodes.items()):
        if node.op == "matmul" and node.args[0] in param_rank:
            groups[node.args[1]].append(nid)
    for vector, members in groups.items():
        if len(members) < 2:
            continue
        members.sort(key=lambda m: param_rank[draft.nodes[m].args[0]])
        stacked = _add(draft, "stack_rows", [draft.nodes[m].args[0] for m in members])
        product = _add(draft, "matmul", (stacked, vector))
        _parts(draft, product, members, "part")


def _sum_terms(draft: Draft, root: int, users: dict) -> list[int]:
    """The terms of the add-tree rooted at `root` (adds used only inside the tree)."""
    terms, stack = [], [root]
    while stack:
        nid = stack.pop()
        node = draft.nodes[nid]
        if node.op == "add" and (nid == root or len(users[nid]) == 1):
            stack.extend(reversed(node.args))
        else:
            terms.append(nid)
    return terms


def _stack_transposed_sums(draft: Draft, param_rank: dict) -> list[int]:
    users = draft.users()
    roots = [n for n, node in sorted(draft.nodes.items()) if node.op == "add" and not (
        len(users[n]) == 1 and draft.nodes[users[n][0]].op == "add")]
    concats = []
    for root in roots:
        terms = _sum_terms(draft, root, users)
        products = [t for t in terms if draft.nodes[t].op == "matmul_t"
                    and draft.nodes[t].args[0] in param_rank and len(users[t]) == 1]
        if len(products) < 2:
            continue
        products.sort(key=lambda t: param_rank[draft.nodes[t].args[0]])
        stacked = _add(draft, "stack_rows", [draft.nodes[t].args[0] for t in products])
        concat = _add(draft, "concat", [draft.nodes[t].args[1] for t in products])
        total = _add(draft, "matmul_t", (stacked, concat))
        for t in terms:
            if t not in products:
                total = _add(draft, "add", (total, t))
        draft.replace_uses(root, total)
        concats.append(concat)
    return concats


def _stack_outer_sums(draft: Draft, graph: Graph, param_rank: dict) -> list[int]:
    # Which parameter's gradient each outer_sum is (through the adds that sum its uses).
    owner: dict[int, int] = {}
    users = draft.users()
    for name, root in draft.results.get("params", {}).items():
        for term in _sum_terms(draft, root, users) if draft.nodes[root].op == "add" else [root]:
            owner[term] = param_rank[graph.params[name]]
    groups: dict[int, list[int]] = defaultdict(list)
    for nid, node in sorted(draft.nodes.items()):
        if node.op == "outer_sum" and nid in owner:
            groups[node.args[1]].append(nid)
    concats = []
    for vector, members in groups.items():
        if len(members) < 2:
            continue
        members.sort(key=lambda m: owner[m])
        concat = _add(draft, "concat", [draft.nodes[m].args[0] for m in members])
        product = _add(draft, "outer_sum", (concat, vector))
        _parts(draft, product, members, "part_rows")
        concats.append(concat)
    return concats


def _stack_batch_sums(draft: Draft, concats: list[int]) -> None:
    done: set[int] = set()
    for concat in dict.fromkeys(concats):
        parts = draft.nodes[concat].args
        sums = {i: n for n, node in sorted(draft.nodes.items()) for i, p in enumerate(parts)
                if node.op == "batch_sum" and node.args[0] == p and n not in done}
        if len(sums) < 2:
            continue
        done.update(sums.values())
        total = _add(draft, "batch_sum", (concat,))
        dim = draft.nodes[concat].shape[0]
        for index, member in sums.items():
            draft.replace_uses(member, _add(draft, "part", (total,), index=index, stacked=dim))

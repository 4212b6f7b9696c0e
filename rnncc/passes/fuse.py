"""Fusion: within each phase, group the nodes into GEMMs and fused kernels, in stages.

A phase runs as  kernel 0, GEMMs 1, kernel 1, GEMMs 2, kernel 2, ...  A GEMM's stage is one more
than the stage of what it reads; every other op (elementwise, row reductions, batch sums, views,
concats) joins one kernel, so everything between two GEMMs is one fused kernel. An op may run in
any kernel from the first where its arguments exist (as soon as possible) to the last before its
first use (as late as possible); it joins the latest kernel in that range that must exist anyway,
so a cell does not get a kernel of its own for work that could ride along with another (the
LSTM's input-projection slices join the gate kernel after the recurrent GEMM; its backward's
cell-state gradient joins the gate-gradient kernel before it).

A GEMM whose only user adds something computed before it accumulates onto that instead
(C = c + A B, BLAS's beta = 1): the add disappears into the GEMM ("absorbed").

Stacked parameters (stack_rows) are packed once, not computed: Packed. A part of a value that is
not computed in a kernel (a GEMM's output, a buffer from another phase) is a view of that buffer,
not an op: View.

Decisions are recorded in graph.stage: node -> InKernel(j) | ByGemm(j) | Absorbed(j, gemm node,
addend) | Packed() | View() (rnncc/graph/schedule.py).
"""
from __future__ import annotations

from ..graph import Graph
from ..graph.schedule import PHASE_ORDER, Absorbed, ByGemm, InKernel, Packed, Stage, View


def fuse(graph: Graph) -> Graph:
    stage: dict[int, Stage] = {}
    for phase in PHASE_ORDER:
        nodes = [n for n in graph.order if graph.phase.get(n) == phase]
        stage.update(_stages(graph, nodes))
    return graph.annotated(stage=stage)


def _stages(graph: Graph, nodes: list[int]) -> dict[int, Stage]:
    members = set(nodes)
    gemm_level: dict[int, int] = {}
    asap: dict[int, int] = {}
    stage: dict[int, Stage] = {}

    def ready(a: int) -> int:
        """The stage after which a's value exists (0: before the phase starts)."""
        if a not in members:
            return 0
        return gemm_level[a] if a in gemm_level else asap[a]

    def is_buffer(a: int) -> bool:
        """Is a's value a buffer rather than a value inside a kernel?"""
        return a not in members or a in gemm_level or isinstance(stage.get(a), (Packed, View))

    for n in nodes:
        node = graph.node(n)
        if node.op == "stack_rows":
            stage[n] = Packed()
            asap[n] = 0
        elif node.opdef.gemm:
            gemm_level[n] = 1 + max((ready(a) for a in node.args), default=0)
        else:
            asap[n] = max((ready(a) for a in node.args), default=0)
            if node.opdef.kind == "view" and is_buffer(node.args[0]):
                stage[n] = View()

    # A GEMM with a single user `add(gemm, c)` accumulates onto c when c exists before the GEMM
    # without a kernel of its own: c is a buffer, or the GEMM waits for a kernel anyway.
    for g, level in list(gemm_level.items()):
        users = graph.users(g)
        if len(users) != 1 or users[0] not in members or graph.node(users[0]).op != "add":
            continue
        add = users[0]
        others = [a for a in graph.node(add).args if a != g]
        waits_for_kernel = any(not is_buffer(a) for a in graph.node(g).args)
        if (len(others) == 1 and ready(others[0]) < level
                and graph.node(others[0]).opdef.kind != "constant"
                and graph.node(add).shape == graph.node(g).shape
                and (is_buffer(others[0]) or waits_for_kernel)):
            gemm_level[add] = level
            stage[add] = Absorbed(level, g, others[0])
    # what depends on an absorbed add waits for its GEMM
    for n in nodes:
        if n in asap and n not in gemm_level:
            asap[n] = max((ready(a) for a in graph.node(n).args), default=0)

    last = max(gemm_level.values(), default=0)
    kernel_nodes = [n for n in nodes if n not in gemm_level and n not in stage]
    views = [n for n in nodes if isinstance(stage.get(n), View)]

    def latest(n: int, placed: dict) -> int:
        bound = last
        for u in graph.users(n):
            if u not in members:
                continue
            if u in gemm_level:  # a GEMM, or an absorbed add whose addend n must exist before
                bound = min(bound, gemm_level[u] - 1)
            elif u in placed:
                bound = min(bound, placed[u])
            elif u in views:
                bound = min(bound, latest(u, placed))
        return bound

    # Kernels that must exist: those of nodes with no choice (as soon as possible = as late).
    alap0: dict[int, int] = {}
    for n in reversed(kernel_nodes):
        alap0[n] = latest(n, alap0)
    needed = {asap[n] for n in kernel_nodes if asap[n] == alap0[n]}
    placed: dict[int, int] = {}
    for n in reversed(kernel_nodes):
        hi = latest(n, placed)
        options = range(asap[n], hi + 1)
        chosen = [j for j in options if j in needed] or [j for j in options
                                                         if j in placed.values()]
        placed[n] = max(chosen) if chosen else hi
    for n, j in placed.items():
        stage[n] = InKernel(j)
    for g, level in gemm_level.items():
        stage.setdefault(g, ByGemm(level))
    return stage

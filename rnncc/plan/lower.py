"""Lowering: an optimized, scheduled step graph -> GraphPlan.

The phases and the steps are the passes' decisions (graph.phase from hoist, graph.stage from
fuse); lowering writes them down as GEMM and kernel steps. It decides the buffers: their names
(the spec's, graph/naming.py), which kernel values need one (read outside their kernel, or a
result: needs_buffer) and which step buffers are kept for every step (read after the loop, or
wanted by the caller or by backward: _stored). How buffers are stored and looped over is
decided after it, per target (layout.py).
"""
from __future__ import annotations

from ..graph import Graph
from ..graph.naming import value_name
from ..graph.schedule import (PHASE_ORDER, Absorbed, ByGemm, InKernel, Packed, Phase, View,
                              absorber)
from .layout import ident
from ..ops import REGISTRY
from ..passes.recurrence import MATRIX, classify
from .scan import chunk_plan
from .plan import LANES_COLUMNS, LANES_ROWS, PHASES, Buffer, Gemm, GraphPlan, Kernel, Op, Role, Rows

_PHASE_ROWS = {Phase.INVARIANT: Rows.NONE, Phase.BEFORE: Rows.ALL, Phase.STEP: Rows.STEP,
               Phase.AFTER: Rows.ALL}
_LOOP_PHASE = {Phase.INVARIANT: "before_loop", Phase.BEFORE: "before_loop",
               Phase.STEP: "per_step", Phase.AFTER: "after_loop"}


def _packed_name(names: list[str]) -> str:
    """W_i, W_f, W_g, W_o -> W_ifgo; names without a shared prefix are joined with '+'."""
    heads = {n.rsplit("_", 1)[0] for n in names if "_" in n}
    if len(heads) == 1 and all("_" in n for n in names):
        return f"{heads.pop()}_{''.join(n.rsplit('_', 1)[1] for n in names)}"
    return "+".join(names)


class _Lowering:
    def __init__(self, graph: Graph):
        self.g = graph
        self.per_row = graph.per_row()
        self.names = self._names()
        self.buffers: dict[str, Buffer] = {}
        self.stored = self._stored()
        self.roots = set(graph.roots())

    # -- names ---------------------------------------------------------------------------------------
    def _names(self) -> dict[int, str]:
        """Buffer and value names, from the spec's (graph/naming.py), unique also as
        identifiers in generated code."""
        g, names, taken = self.g, {}, set()

        def claim(n: int, name: str) -> None:
            base, k = name, 1
            while ident(name) in taken:
                k += 1
                name = f"{base}.{k}"
            taken.add(ident(name))
            names[n] = name

        preferred: dict[int, str] = {}
        for label, n in g.results.get("saved", {}).items():  # as backward calls them
            preferred.setdefault(n, label)
        if g.kind == "backward":
            for group in ("state", "x", "params"):
                for name, n in g.results[group].items():
                    if not g.node(n).is_leaf:
                        preferred.setdefault(n, "d" + name)
            # a stacked parameter gradient is named after its parts: dW_i, ..., dW_o -> dW_ifgo
            for n in g.order:
                users = g.users(n)
                if users and all(u in preferred and g.node(u).opdef.kind == "view"
                                 for u in users) and n not in preferred:
                    parts = sorted(users, key=lambda u: g.node(u).attrs["index"])
                    preferred[n] = _packed_name([preferred[u] for u in parts])
        for n in g.order:
            node = g.node(n)
            stage = g.stage.get(n)
            if node.opdef.kind == "leaf":
                name = node.name
            elif n in preferred:
                name = preferred[n]
            elif node.name:
                name = node.name
            elif node.op == "stack_rows":
                name = _packed_name([names[a] for a in node.args])
            elif node.op == "matmul":
                name = f"{names[node.args[0]]}@{names[node.args[1]]}"
            elif node.op == "matmul_t":
                name = f"{names[node.args[0]]}^T@{names[node.args[1]]}"
            elif node.op == "outer_sum":
                name = f"{names[node.args[0]]}^T@{names[node.args[1]]}"
            elif isinstance(stage, Absorbed):
                name = f"{names[stage.addend]}+{names[stage.gemm]}"
            elif isinstance(stage, View):
                source = g.node(node.args[0])
                index = node.attrs["index"]
                if source.op == "matmul" and g.node(source.args[0]).op == "stack_rows":
                    stacked = g.node(source.args[0]).args[index]
                    name = f"{names[stacked]}@{names[source.args[1]]}"
                else:
                    name = f"{names[node.args[0]]}[{index}]"
            elif node.op == "concat" and g.kind == "backward":
                name = "dgates"  # the gradients of gates whose products were stacked
            else:
                name = value_name(node.op, node.attrs, [names[a] for a in node.args])
            claim(n, name)
        return names

    def _stored(self) -> set[int]:
        """Values computed in the loop that later phases (or the caller) need for every step."""
        g, stored = self.g, set()
        read_after = [n for n in g.order if g.phase.get(n) == Phase.STEP
                      and any(g.phase.get(u) == Phase.AFTER for u in g.users(n))]
        while read_after:
            n = read_after.pop()
            stored.add(n)
            # the loop after reads a view through the buffer it is a block of (a gate's part of
            # a stacked product, itself living in the gemm that absorbs it, if one does): keep that
            # one; a view the caller wants is copied out each step instead (per_step_results)
            if isinstance(g.stage.get(n), View):
                read_after.append(g.node(n).args[0])
            if isinstance(g.stage.get(n), ByGemm) and absorber(g, n) is not None:
                read_after.append(absorber(g, n))
        groups = ("output", "saved") if g.kind == "forward" else ("x",)
        for group in groups:
            for n in g.results.get(group, {}).values():
                stored.add(n)
        return stored

    # -- buffers -----------------------------------------------------------------------------------
    def buffer(self, n: int) -> str:
        g, node = self.g, self.g.node(n)
        stage = g.stage.get(n)
        if isinstance(stage, ByGemm) and absorber(g, n) is not None:
            return self.buffer(absorber(g, n))
        name = self.names[n]
        if name in self.buffers:
            return name
        if node.opdef.kind == "leaf":
            rows = Rows.NONE if node.op == "param" else Rows.ALL
            carried = set(g.carried[0].values())
            if n in carried:
                rows = Rows.STEP
            self.buffers[name] = Buffer(name, node.shape, rows, Role(node.op))
        elif node.opdef.kind == "constant":
            self.buffers[name] = Buffer(name, node.shape, Rows.NONE, Role.CONSTANT,
                                        value=(node.op, dict(node.attrs)))
        elif node.op == "stack_rows":
            self.buffers[name] = Buffer(name, node.shape, Rows.NONE, Role.PACKED,
                                        pack=tuple(self.names[a] for a in node.args))
        elif isinstance(stage, View):
            parent = self.buffers[self.buffer(node.args[0])]
            self.buffers[name] = Buffer(name, node.shape, parent.rows, Role.VIEW,
                                        stored=parent.stored, view_of=parent.name,
                                        index=node.attrs["index"],
                                        axis="rows" if node.op == "part_rows" else "cols")
        else:
            phase = g.phase[n]
            rows = _PHASE_ROWS[phase] if self.per_row[n] else Rows.NONE
            self.buffers[name] = Buffer(name, node.shape, rows, Role.TEMP,
                                        stored=rows == Rows.STEP and n in self.stored)
        return name

    def needs_buffer(self, n: int, kernel: set) -> bool:
        """Is kernel node n's value used outside its kernel?"""
        g = self.g
        if n in self.stored or n in self.roots:
            return True
        return any(u not in kernel for u in g.users(n))

    # -- steps -------------------------------------------------------------------------------------
    def kernel(self, nodes: list[int], phase: str) -> Kernel | None:
        g = self.g
        members = set(nodes)
        ops, inputs, outputs, consts = [], [], [], {}
        for n in nodes:
            node = g.node(n)
            args = []
            for a in node.args:
                anode = g.node(a)
                if a in members:
                    args.append(self.names[a])
                elif anode.opdef.kind == "constant":
                    if a not in consts:
                        consts[a] = Op(self.names[a], anode.op, (), dict(anode.attrs),
                                       anode.shape, False)
                    args.append(self.names[a])
                else:
                    buf = self.buffer(a)
                    args.append(buf)
                    if buf not in inputs:
                        inputs.append(buf)
            if self.needs_buffer(n, members):
                out = self.buffer(n)
                outputs.append(out)
            else:
                out = self.names[n]
            ops.append(Op(out, node.op, tuple(args), dict(node.attrs), node.shape,
                          self.per_row[n]))
        saved = set(g.results.get("saved", {}).values())
        saves = [self.names[n] for n in nodes if n in saved]
        widths = [g.node(n).shape for n in nodes if len(g.node(n).shape) == 1]
        width = max(widths, key=lambda s: len(str(s[0])), default=())
        rows = _PHASE_ROWS[phase]
        return Kernel(rows, width, list(consts.values()) + ops, inputs, outputs, saves)

    def gemm(self, n: int, phase: str) -> Gemm:
        g, node = self.g, self.g.node(n)
        a, b = node.args
        out = self.buffer(n)
        acc = None
        if absorber(g, n) is not None:
            acc = self.buffer(g.stage[absorber(g, n)].addend)
        sa, sb = g.node(a).shape, g.node(b).shape
        rows = _PHASE_ROWS[phase] if self.per_row[n] or node.op == "outer_sum" else Rows.NONE
        if node.op == "matmul":        # rows of v [R, n] times A^T [n, m]
            shape = ((rows, sa[1]), (sa[1], sa[0]))
        elif node.op == "matmul_t":    # rows of g [R, m] times A [m, n]
            shape = ((rows, sa[0]), (sa[0], sa[1]))
        else:                          # outer_sum: G^T [m, R] times V [R, n]
            shape = ((sa[0], rows), (rows, sb[0]))
        return Gemm(node.op, out, self.buffer(a), self.buffer(b), rows, shape, acc)

    def lower(self) -> GraphPlan:
        g = self.g
        for n in g.order:  # leaves and packed parameters exist whether or not a step reads them
            if g.node(n).opdef.kind == "leaf" or isinstance(g.stage.get(n), Packed):
                self.buffer(n)
        phases = {p: [] for p in PHASES}
        for phase in PHASE_ORDER:
            nodes = [n for n in g.order if g.phase.get(n) == phase]
            kernels: dict[int, list[int]] = {}
            gemms: dict[int, list[int]] = {}
            for n in nodes:
                stage = g.stage[n]
                if isinstance(stage, InKernel):
                    kernels.setdefault(stage.level, []).append(n)
                elif isinstance(stage, ByGemm):
                    gemms.setdefault(stage.level, []).append(n)
                elif isinstance(stage, (View, Packed)):
                    self.buffer(n)
            last = max([*kernels, *gemms], default=-1)
            for j in range(last + 1):
                if j in gemms:
                    phases[_LOOP_PHASE[phase]].extend(self.gemm(n, phase) for n in gemms[j])
                if j in kernels:
                    phases[_LOOP_PHASE[phase]].append(self.kernel(kernels[j], phase))
        results = {group: {name: self.buffer(n) for name, n in named.items()}
                   for group, named in g.results.items()}
        leaves, results_carried = g.carried
        carried = {s: (self.buffer(leaves[s]), self.buffer(results_carried[s])) for s in leaves}
        leaf_buffers = {}
        for op in ("input", "state", "param", "grad", "saved"):
            leaf_buffers[op] = {name: self.buffer(n) for name, n in g.leaves(op).items()}
        stored_groups = ("output", "saved") if g.kind == "forward" else ("x",)
        per_step = [buf for group in stored_groups for buf in results.get(group, {}).values()]
        plan = GraphPlan(g.kind, self.buffers, phases, leaf_buffers, results, carried,
                         list(dict.fromkeys(per_step)))
        recurrence = classify(g)
        plan.recurrence, plan.recurrence_reason = recurrence.kind, recurrence.reason
        if recurrence.kind != MATRIX:
            plan.lanes, plan.lane_width = _lanes(plan)
            plan.chunks = chunk_plan(plan)
        return plan


def _lanes(plan: GraphPlan) -> tuple:
    """What a lane of the plan's time loop can be: ("columns", width) where every op of the
    step is elementwise over one width, which every vector the step reads or carries has (a
    lane is then a block of a row's columns); ("rows", None) where the step's ops need a whole
    row (a mean over it, a concat) but no other row; (None, None) where a step needs more than
    a row: a GEMM in the loop (a product of a state that only feeds the output), a sum over
    the batch."""
    steps = plan.phases["per_step"]
    if any(step.kind != "kernel" for step in steps):
        return None, None
    ops = [op for step in steps for op in step.ops]
    if any(not op.per_row and REGISTRY[op.op].kind != "constant" for op in ops):
        return None, None
    vectors = [op.shape for op in ops if op.shape]
    names = {*(b for step in steps for b in step.inputs),
             *(b for b in plan.per_step_results if plan.buffers[b].rows == Rows.STEP),
             *(buf for pair in plan.carried.values() for buf in pair)}
    vectors += [plan.buffers[b].shape for b in names if plan.buffers[b].shape]
    columnwise = all(REGISTRY[op.op].kind in ("elementwise", "constant") for op in ops)
    if columnwise and vectors and all(v == vectors[0] and len(v) == 1 for v in vectors):
        return LANES_COLUMNS, vectors[0][0]
    return LANES_ROWS, None


def lower(graph: Graph) -> GraphPlan:
    return _Lowering(graph).lower()

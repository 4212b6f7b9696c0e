"""The scheduling decisions the passes record on a graph, as types, and their check.

hoist (passes/hoist.py) gives each computed node a Phase; fuse (passes/fuse.py) gives each node
of a phase a stage: which fused kernel or GEMM computes it, or that it is packed once or is a
view of another buffer. lower (plan/lower.py) reads them to write the Plan; verify_schedule says
whether a graph's decisions are complete and consistent, so a pass that breaks them fails in the
tests at the pass, not as a wrong buffer in generated code.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Phase(str, Enum):
    """When a node runs, relative to the time loop."""
    INVARIANT = "invariant"   # parameters and constants only: once, before everything
    BEFORE = "before"         # over all T*B rows before the loop (hoisted products)
    STEP = "step"             # inside the loop, one step's B rows at a time
    AFTER = "after"           # over all T*B rows after the loop

    def __str__(self) -> str:
        return self.value


PHASE_ORDER = (Phase.INVARIANT, Phase.BEFORE, Phase.STEP, Phase.AFTER)


@dataclass(frozen=True)
class InKernel:
    """Computed inside fused kernel `level` of its phase."""
    level: int

    def __str__(self) -> str:
        return f"kernel {self.level}"


@dataclass(frozen=True)
class ByGemm:
    """Computed by a GEMM at `level` (one more than the level of what it reads)."""
    level: int

    def __str__(self) -> str:
        return f"gemm {self.level}"


@dataclass(frozen=True)
class Absorbed:
    """An add(gemm, addend) the GEMM computes by accumulating onto the addend (BLAS's beta = 1)."""
    level: int
    gemm: int      # the GEMM node
    addend: int    # the node it accumulates onto

    def __str__(self) -> str:
        return f"absorbed {self.level}"


@dataclass(frozen=True)
class Packed:
    """Stacked parameters, packed once (the layer re-packs only when a parameter changes)."""

    def __str__(self) -> str:
        return "pack"


@dataclass(frozen=True)
class View:
    """A part of a buffer (a gate's block of a stacked product): no op, no storage of its own."""

    def __str__(self) -> str:
        return "view"


Stage = InKernel | ByGemm | Absorbed | Packed | View


class ScheduleError(Exception):
    """A graph's scheduling decisions are incomplete or inconsistent (a pass bug)."""


def absorber(graph, gemm: int) -> int | None:
    """The add that absorbs GEMM node `gemm`, if one does."""
    for u in graph.users(gemm):
        stage = graph.stage.get(u)
        if isinstance(stage, Absorbed) and stage.gemm == gemm:
            return u
    return None


def verify_schedule(graph, stages: bool = True) -> None:
    """Every computed node has a phase and nothing reads a value of a later phase; with
    `stages` (after fuse), every computed node also has a stage of the right kind, nothing reads
    a value of a later level within its phase, absorbed adds name a GEMM of their level and an
    addend that exists before it, and views view buffers."""
    phase_index = {p: k for k, p in enumerate(PHASE_ORDER)}
    for n in graph.order:
        node = graph.node(n)
        if node.is_leaf:
            if n in graph.phase or n in graph.stage:
                raise ScheduleError(f"leaf %{n} ({node.name}) has a schedule")
            continue
        phase, stage = graph.phase.get(n), graph.stage.get(n)
        if not isinstance(phase, Phase):
            raise ScheduleError(f"%{n} ({node.op}) has no phase (got {phase!r})")
        for a in node.args:
            anode = graph.node(a)
            if not (anode.is_leaf or anode.opdef.kind == "constant") and \
                    phase_index[graph.phase[a]] > phase_index[phase]:
                raise ScheduleError(f"%{n} ({phase}) reads %{a} of the later phase "
                                    f"{graph.phase[a]}")
        if not stages:
            continue
        if not isinstance(stage, (InKernel, ByGemm, Absorbed, Packed, View)):
            raise ScheduleError(f"%{n} ({node.op}) has no stage (got {stage!r})")
        if node.opdef.gemm and not isinstance(stage, ByGemm):
            raise ScheduleError(f"%{n} ({node.op}) is a product but not a GEMM: {stage}")
        if isinstance(stage, ByGemm) and not node.opdef.gemm:
            raise ScheduleError(f"%{n} ({node.op}) is no product but scheduled as a GEMM")
        if isinstance(stage, Packed) != (node.op == "stack_rows"):
            raise ScheduleError(f"%{n} ({node.op}): only stacked parameters are packed")
        if isinstance(stage, View) and node.opdef.kind != "view":
            raise ScheduleError(f"%{n} ({node.op}) is scheduled as a view")
        if isinstance(stage, Absorbed):
            g = graph.node(stage.gemm)
            if (node.op != "add" or stage.gemm not in node.args or stage.addend not in node.args
                    or graph.stage.get(stage.gemm) != ByGemm(stage.level)
                    or graph.phase.get(stage.gemm) != phase or not g.opdef.gemm):
                raise ScheduleError(f"%{n} absorbed into %{stage.gemm} inconsistently")
        for a in node.args:
            anode = graph.node(a)
            if anode.is_leaf or anode.opdef.kind == "constant" or graph.phase[a] != phase:
                continue
            if _ready(graph, a) > _starts(graph, n, a):
                raise ScheduleError(f"%{n} ({graph.stage[n]}) reads %{a} "
                                    f"({graph.stage[a]}) before it exists")


def _level(stage) -> int:
    return stage.level if isinstance(stage, (InKernel, ByGemm, Absorbed)) else 0


def _ready(graph, a: int) -> int:
    """The level after which a's value exists, within its phase."""
    stage = graph.stage[a]
    if isinstance(stage, View):
        return _ready(graph, graph.node(a).args[0]) if graph.phase.get(
            graph.node(a).args[0]) == graph.phase[a] else 0
    return _level(stage)


def _starts(graph, n: int, arg: int) -> int:
    """The level by which node n needs argument `arg`: a kernel needs it at its own level, a
    GEMM (or an absorbed add's addend) one level before."""
    stage = graph.stage[n]
    if isinstance(stage, ByGemm):
        return stage.level - 1
    if isinstance(stage, Absorbed):
        return stage.level - 1 if arg == stage.addend else stage.level
    if isinstance(stage, View):
        return 10 ** 9  # a view reads nothing itself; its readers' checks cover it
    return _level(stage)

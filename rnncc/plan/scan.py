"""The scan schedule's chunk step: what a linear plan's time loop becomes over a chunk of steps.

A `linear` plan (passes/recurrence.py) carries values whose every step is s' = a * s + b, with
a and b elementwise and free of every carried value. Over a chunk of steps t0 .. t1-1 the
carried values then end at A * s + B in their value s at the chunk's start, where
    A = a[t1-1] * ... * a[t0]        B = the chunk's steps run from s = 0
and (A, B) is itself a recurrence over the chunk's steps: A' = a * A, B' = a * B + b, from
A = 1, B = 0. The scan schedule (cpu runtime.py, cuda runtime.py) runs:

  1. what comes before the time loop, once;
  2. each chunk's (A, B), all chunks at once: this module's plan, the chunk step;
  3. each chunk's carried values at its start, chunk after chunk (a few elementwise
     operations per chunk and lane): s_in[k+1] = A[k] * s_in[k] + B[k];
  4. each chunk's steps from its s_in, all chunks at once: the plan's own loop over the
     chunk's steps (its lanes loop), so every value a step stores is computed as the step
     schedule computes it;
  5. what comes after the loop, once.

It stays accurate over long sequences because nothing is divided: the chunks' carries are
combined in the original form (3.) and each step is then run as the step schedule runs it
(4.), from a start value that differs from the sequential one only by the rounding of (3.);
a product A that underflows to zero is then exact enough (that chunk forgets its start).
Backward runs the chunks from the last one down, as its loop does.

chunk_plan(plan) builds the chunk step as a GraphPlan of its own: the plan's per-step ops that
a and b need (those free of the carried values, unchanged: the same buffers, the same names),
the (a, b) pairs built by recurrence.py's rules (Pairs), and the two updates, with the carried
values (A, B) per state. A printer prints it as it prints any plan that runs as lanes.
"""
from __future__ import annotations

from ..graph.naming import value_name
from ..ops import REGISTRY
from ..passes.recurrence import LINEAR, ONE, ZERO, Pairs, degree_rule
from .layout import ident
from .plan import Buffer, GraphPlan, Kernel, Op, Role, Rows


_FOLD = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
         "div": lambda x, y: x / y, "neg": lambda x: -x}

CHUNKS = "_chunks"   # a compiled backend's function for a direction's chunk step: forward_chunks


def chunk_name(state: str, part: str) -> str:
    """The chunk step's carried buffers of a state: A(h), B(h)."""
    return f"{part}({state})"


def chunk_plan(plan: GraphPlan) -> GraphPlan | None:
    """The chunk step of a linear plan that runs as lanes (see the module docstring); None
    for any other plan."""
    if plan.recurrence != LINEAR or not plan.lanes:
        return None
    return _ChunkStep(plan).plan()


class _ChunkStep:
    def __init__(self, plan: GraphPlan):
        self.main = plan
        self.ops: dict[str, Op] = {}            # name -> op: the plan's step ops, then new ones
        for step in plan.phases["per_step"]:
            for op in step.ops:
                self.ops.setdefault(op.out, op)
        self.original = list(self.ops)
        self.read = {r: s for s, (r, _) in plan.carried.items()}
        self.degree: dict[str, int] = {}
        for op in self.ops.values():
            args = [self.degree_of(a) for a in op.args]
            self.degree[op.out] = degree_rule(op.op, args) if any(args) else 0
        self.taken = {ident(n) for n in (*self.ops, *plan.buffers)}   # (as identifiers too)
        self.new_buffers: dict[str, Buffer] = {}
        self.pairs: dict[str, tuple] = {}

    # -- values -------------------------------------------------------------------------------------
    def degree_of(self, name: str) -> int:
        if name in self.ops:
            return self.degree[name]
        return 1 if name in self.read else 0

    def pair_of(self, name: str) -> tuple:
        if name in self.read:
            return ONE, ZERO
        if self.degree_of(name) == 0:
            return ZERO, name
        return self.pairs[name]

    def buffer(self, name: str) -> Buffer:
        return self.new_buffers[name] if name in self.new_buffers else self.main.buffers[name]

    def shape_of(self, name: str) -> tuple:
        return self.ops[name].shape if name in self.ops else self.buffer(name).shape

    def fresh(self, name: str) -> str:
        base, k = name, 1
        while ident(name) in self.taken:
            k += 1
            name = f"{base}.{k}"
        self.taken.add(ident(name))
        return name

    def make(self, op: str, args) -> str:
        """A new op of the chunk step (Pairs' callback). Numbers fold (-1, not neg(1)); any
        other op is computed per row, as the step's ops are, even where it reads only
        parameters (a kernel's ops that are not per row run once after its rows)."""
        args = tuple(self.one() if a == ONE else a for a in args)
        numbers = [self.ops[a].attrs["value"] if a in self.ops and self.ops[a].op == "const"
                   else None for a in args]
        if op in _FOLD and None not in numbers and not (op == "div" and numbers[1] == 0):
            return self.const(_FOLD[op](*numbers))
        shapes = [self.shape_of(a) for a in args]
        shape = max(shapes, key=len)   # elementwise: the vector's, where one is
        out = self.fresh(value_name(op, {}, list(args)))
        self.ops[out] = Op(out, op, args, {}, shape, True)
        return out

    def const(self, value: float) -> str:
        for op in self.ops.values():
            if op.op == "const" and op.attrs.get("value") == value:
                return op.out
        out = self.fresh(f"{value:g}")
        self.ops[out] = Op(out, "const", (), {"value": value}, (), False)
        return out

    def one(self) -> str:
        return self.const(1.0)

    # -- the plan -----------------------------------------------------------------------------------
    def plan(self) -> GraphPlan:
        main, rules = self.main, Pairs(self.make)
        for name in self.original:
            if self.degree[name] == 1:
                op = self.ops[name]
                self.pairs[name] = rules.pair(op.op, op.args, self.degree_of, self.pair_of)
        carried, written = {}, []
        for state, (read, write) in main.carried.items():
            shape = main.buffers[read].shape
            a, b = self.pair_of(write) if main.buffers[write].role != Role.CONSTANT \
                else (ZERO, write)
            A, B = (self.fresh(chunk_name(state, part)) for part in "AB")
            for name in (A, B):
                self.new_buffers[name] = Buffer(name, shape, Rows.STEP, Role.STATE)
            updates = (rules.node("mul", a, A), rules.node("add", rules.node("mul", a, B), b))
            pair = []
            for value in updates:
                if value is ZERO:   # a part that is zero after every step: a constant
                    value = self.fresh(f"0({state})")
                    self.new_buffers[value] = Buffer(value, shape, Rows.NONE, Role.CONSTANT,
                                                     value=("zeros", {"shape": shape}))
                elif value in self.ops:
                    written.append(value)
                pair.append(value)
            carried[f"{state}.A"] = (A, pair[0])
            carried[f"{state}.B"] = (B, pair[1])
        ops = self._needed([w for _, w in carried.values()])
        reads = self._reads(ops)
        kept = {*reads, *(w for _, w in carried.values())}   # read, or carried
        buffers = {**{n: b for n, b in main.buffers.items() if n in kept}, **self.new_buffers}
        for name in list(buffers):   # a view's parent comes with it
            while buffers[name].view_of is not None:
                name = buffers[name].view_of
                buffers[name] = main.buffers[name]
        for name in dict.fromkeys(written):
            op = self.ops[name]
            buffers[name] = Buffer(name, op.shape, Rows.STEP, Role.TEMP)
        # what the kernel reads, and every carried value (A is read by no op where a = 1)
        inputs = [n for n in dict.fromkeys([*reads, *(r for r, _ in carried.values())])
                  if buffers[n].role != Role.CONSTANT]
        width = max((s.width for s in main.phases["per_step"]), key=lambda w: len(str(w)),
                    default=())
        kernel = Kernel(Rows.STEP, width, ops, inputs, list(dict.fromkeys(written)))
        leaves = {kind: {} for kind in main.leaves}
        leaves["state"] = {s: r for s, (r, _) in carried.items()}
        return GraphPlan(main.kind, buffers, {"before_loop": [], "per_step": [kernel],
                                              "after_loop": []},
                         leaves, {}, carried, recurrence=LINEAR, lanes=main.lanes,
                         lane_width=main.lane_width)

    def _needed(self, roots: list) -> list:
        """The ops the roots need, in order (constants first, as lowering puts them)."""
        needed, stack = set(), [r for r in roots if r in self.ops]
        while stack:
            name = stack.pop()
            if name not in needed:
                needed.add(name)
                stack.extend(a for a in self.ops[name].args if a in self.ops)
        ops = [op for name, op in self.ops.items() if name in needed]
        constant = [op for op in ops if REGISTRY[op.op].kind == "constant"]
        return constant + [op for op in ops if REGISTRY[op.op].kind != "constant"]

    def _reads(self, ops: list) -> list:
        names = {op.out for op in ops}
        return list(dict.fromkeys(a for op in ops for a in op.args if a not in names))

"""A check for the promise the cpu target's generated functions make LLVM (noalias.py): no
array a function may write overlaps another of its arguments.

check_arrays_apart(monkeypatch) wraps the runtime's binding and calls for the rest of a test:
every array a call binds that the function may write must be memory of its own, and the ones
it only reads must be as they were after the call. Read only are the buffers the call binds
(parameters, inputs, the tape, upstream gradients), except carried states, which the function
writes (a copy of the caller's), and the stacked parameters (a caller may keep them, each
parameter a view of its stack).
"""
import numpy as np


def check_arrays_apart(monkeypatch) -> list:
    """Start checking; returns the list of the functions checked so far ("infer", "forward",
    "backward"), one entry per call."""
    from rnncc.backends.cpu import runtime
    from rnncc.plan.layout import ArgKind
    from rnncc.plan.plan import Role, Rows

    checked: list = []
    unwritten: dict = {}   # id(layout) -> the read-only arguments' names
    bind, call = runtime.bind, runtime.Compiled._call

    def checking_bind(layout, bound, *args):
        arrays = bind(layout, bound, *args)
        plan = layout.plan
        read_only = {a.name for a in layout.arguments if a.kind == ArgKind.BUFFER and (
            (a.buffer in bound and plan.buffers[a.buffer].rows != Rows.STEP)
            or plan.buffers[a.buffer].role == Role.PACKED)}
        for name, array in arrays.items():
            if name in read_only:
                continue
            for other, other_array in arrays.items():
                assert other == name or not np.shares_memory(array, other_array), (
                    f"{plan.kind}: {name}, which the function writes, overlaps {other}")
        checked.append("infer" if plan.kind == "forward" and "saved" not in plan.results
                       else plan.kind)
        unwritten[id(layout)] = read_only
        return arrays

    def checking_call(self, direction, args, *rest):
        names = [a.name for a in self.arguments[direction]]   # the function's, in order
        before = {name: a.copy() for name, a in zip(names, args)
                  if name in unwritten[id(self.layouts[direction])]}
        call(self, direction, args, *rest)
        for name, a in zip(names, args):
            if name in before:
                np.testing.assert_array_equal(a, before[name], err_msg=f"{direction} wrote {name}")

    monkeypatch.setattr(runtime, "bind", checking_bind)
    monkeypatch.setattr(runtime.Compiled, "_call", checking_call)
    return checked

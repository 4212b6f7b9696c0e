"""Binding a call's values to a generated function's arguments, for every compiled target.

A Layout lists the function's arguments (rnncc/plan/layout.py); a call has bound values for
some of its buffers (parameters, inputs, states, upstream gradients, saved values). Each
argument becomes an array one of three ways, which a target supplies as functions (the cpu
target makes numpy arrays, the cuda target device arrays, each reusing what it kept from the
call before):

    caller(argument, buffer, value, shape)   a buffer the call binds: the caller's value
    packed(argument, members)                stacked parameters: the parameters, stacked
    own(argument, shape)                     anything else the function works in (zeroed)

and 2-D row aliases ([T*B, width]) view the arrays they alias.
"""
from __future__ import annotations

from ..plan.layout import ArgKind, Layout
from ..plan.plan import Role


def bind(layout: Layout, bound: dict, sizes: dict, T: int, B: int, caller, packed,
         own) -> dict:
    """The function's arrays, by argument name."""
    plan = layout.plan
    shapes = layout.shapes(sizes, T, B)
    arrays = {}
    for argument in layout.arguments:
        if argument.kind == ArgKind.ROWS:
            continue
        b = plan.buffers[argument.buffer] if argument.kind == ArgKind.BUFFER else None
        if b is not None and argument.buffer in bound:
            arrays[argument.name] = caller(argument, b, bound[argument.buffer],
                                           shapes[argument.name])
        elif b is not None and b.role == Role.PACKED:
            arrays[argument.name] = packed(argument,
                                           [bound[plan.leaves["param"][p]] for p in b.pack])
        else:
            arrays[argument.name] = own(argument, shapes[argument.name])
    for argument in layout.arguments:
        if argument.kind == ArgKind.ROWS:  # [T, B, w] viewed as [T*B, w]
            base = arrays[argument.buffer]
            arrays[argument.name] = base.reshape(T * B, tuple(base.shape)[-1])
    return arrays

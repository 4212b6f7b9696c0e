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
    shapes = layout.shapes(sizes, T, B)
    arguments, row_aliases = _recipe(layout)
    arrays = {}
    for argument, b, members in arguments:
        name = argument.name
        if b is not None and argument.buffer in bound:
            arrays[name] = caller(argument, b, bound[argument.buffer], shapes[name])
        elif members is not None:
            arrays[name] = packed(argument, [bound[m] for m in members])
        else:
            arrays[name] = own(argument, shapes[name])
    for name, base in row_aliases:   # [T, B, w] viewed as [T*B, w]
        base = arrays[base]
        arrays[name] = base.reshape(T * B, tuple(base.shape)[-1])
    return arrays


def _recipe(layout: Layout) -> tuple:
    """What bind does per argument, worked out once per layout (bind runs every call: a
    batch-1 call's binding was a fifth of its Python time): (argument, its Buffer or None, the
    buffers of the parameters a packed buffer stacks or None) for each argument but the row
    aliases, and (alias, aliased argument) for those."""
    found = layout.__dict__.get("_binding_recipe")
    if found is None:
        plan = layout.plan
        arguments, row_aliases = [], []
        for argument in layout.arguments:
            if argument.kind == ArgKind.ROWS:
                row_aliases.append((argument.name, argument.buffer))
                continue
            b = plan.buffers[argument.buffer] if argument.kind == ArgKind.BUFFER else None
            members = (tuple(plan.leaves["param"][p] for p in b.pack)
                       if b is not None and b.role == Role.PACKED else None)
            arguments.append((argument, b, members))
        found = layout.__dict__["_binding_recipe"] = (arguments, row_aliases)
    return found

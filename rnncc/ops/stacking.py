"""Stacking: the ops the optimizer uses to turn several products that share a vector into one.

`stack_rows(W_1, ..., W_k)` lays matrices on top of each other (a stacked parameter, packed once),
`concat(v_1, ..., v_k)` joins per-row vectors, and `part` / `part_rows` take one part back out.
`concat` and `part` are also the spec language's `concat(a, b, ...)` and `chunk(v, n)` (a part
per chunk), so they have derivatives: a part's gradient is the stacked value's gradient with
zeros in the other parts (autodiff/reverse.py sums those part by part, into one concat), and a
concat's gradient is the parts of its gradient. The stacked parameters (`stack_rows`,
`part_rows`) exist only after autodiff.
"""
from __future__ import annotations

import numpy as np

from .base import ShapeError, Stacked, derivative, part_offsets, register, show_shape


def _stack_rows_shape(shapes, attrs, unify):
    if any(len(s) != 2 for s in shapes):
        raise ShapeError(f"stack_rows takes matrices, got {', '.join(map(show_shape, shapes))}")
    cols = shapes[0][1]
    for s in shapes[1:]:
        cols = unify(cols, s[1])
    return (Stacked(tuple(s[0] for s in shapes)), cols)


@register("stack_rows", "stack", None, _stack_rows_shape, differentiable=False)
def _stack_rows(args, attrs, ctx):
    return np.concatenate(args, axis=0)


def _concat_shape(shapes, attrs, unify):
    if any(len(s) != 1 for s in shapes):
        raise ShapeError(f"concat takes vectors, got {', '.join(map(show_shape, shapes))}")
    return (Stacked(tuple(s[0] for s in shapes)),)


@register("concat", "stack", None, _concat_shape, spec_name="concat")
def _concat(args, attrs, ctx):
    rows = np.broadcast_shapes(*(a.shape[:-1] for a in args))
    return np.concatenate([np.broadcast_to(a, rows + a.shape[-1:]) for a in args], axis=-1)


def _part_shape(shapes, attrs, unify):
    (s,) = shapes
    if not s or not isinstance(s[0], Stacked):
        raise ShapeError(f"part takes a stacked value, got {show_shape(s)}")
    return (s[0].parts[attrs["index"]], *s[1:])


@derivative("concat")
def _concat_vjp(e, node, args, out, g):
    dim = e.shape(g)[0]
    return [e.op("part", g, index=k, stacked=dim) for k in range(len(node.args))]


@register("part", "view", 1, _part_shape)
def _part(args, attrs, ctx):
    """Part `index` of a stacked vector (a column block of each row)."""
    start, stop = part_offsets(attrs["stacked"], ctx.sizes)[attrs["index"]]
    return args[0][..., start:stop]


@derivative("part")
def _part_vjp(e, node, args, out, g):
    parts = [g if k == node.attrs["index"] else e.op("zeros", shape=(p,))
             for k, p in enumerate(node.attrs["stacked"].parts)]
    return [e.op("concat", *parts)]


@register("part_rows", "view", 1, _part_shape, differentiable=False)
def _part_rows(args, attrs, ctx):
    """Part `index` of a stacked matrix (a row block)."""
    start, stop = part_offsets(attrs["stacked"], ctx.sizes)[attrs["index"]]
    return args[0][start:stop]

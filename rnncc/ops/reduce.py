"""Reductions and broadcasts.

Row reductions (mean, sum) turn a row's vector into one scalar per row, which broadcasts back;
`broadcast` is their derivative's way back to a vector. `batch_sum` sums a per-row gradient over
the batch rows: a step's contribution to a vector parameter's gradient.
"""
from __future__ import annotations

import numpy as np

from .base import ShapeError, derivative, dim_size, lowering, register, show_shape


def _reduce_shape(shapes, attrs, unify):
    (s,) = shapes
    if len(s) > 1:
        raise ShapeError(f"mean and sum reduce a vector, got the matrix {show_shape(s)}")
    return ()


def _rows(x):
    # A per-row scalar reduces to itself; keep it [..., 1] so it broadcasts against vectors.
    return np.reshape(x, (1,)) if np.ndim(x) == 0 else x


@register("mean", "reduce", 1, _reduce_shape, spec_name="mean")
def _mean(args, attrs, ctx):
    return np.mean(_rows(args[0]), axis=-1, keepdims=True)


@derivative("mean")
def _mean_vjp(e, node, args, out, g):
    shape = e.arg_shape(node, 0)
    if shape == ():
        return [g]
    return [e.op("broadcast", e.div(g, e.op("size", dim=shape[0])), dim=shape[0])]


@register("sum", "reduce", 1, _reduce_shape, spec_name="sum")
def _sum(args, attrs, ctx):
    return np.sum(_rows(args[0]), axis=-1, keepdims=True)


@derivative("sum")
def _sum_vjp(e, node, args, out, g):
    shape = e.arg_shape(node, 0)
    if shape == ():
        return [g]
    return [e.op("broadcast", g, dim=shape[0])]


def _broadcast_shape(shapes, attrs, unify):
    (s,) = shapes
    if s != ():
        raise ShapeError(f"broadcast takes a scalar, got {show_shape(s)}")
    return (attrs["dim"],)


@register("broadcast", "broadcast", 1, _broadcast_shape)
def _broadcast(args, attrs, ctx):
    """A row's scalar repeated along dimension attrs["dim"]."""
    n = dim_size(attrs["dim"], ctx.sizes)
    g = _rows(args[0])
    return np.broadcast_to(g, g.shape[:-1] + (n,))


@derivative("broadcast")
def _broadcast_vjp(e, node, args, out, g):
    return [e.op("sum", g)]


@lowering("broadcast")
def _broadcast_scalar(a, attrs, m):
    return a[0]  # every element of the row is the row's scalar


def _batch_sum_shape(shapes, attrs, unify):
    (s,) = shapes
    if len(s) != 1:
        raise ShapeError(f"batch_sum takes a vector, got {show_shape(s)}")
    return s


@register("batch_sum", "batch_reduce", 1, _batch_sum_shape, differentiable=False)
def _batch_sum(args, attrs, ctx):
    """sum over batch rows: a step's contribution to a vector parameter's gradient."""
    g = args[0]
    return g.reshape(-1, g.shape[-1]).sum(axis=0)

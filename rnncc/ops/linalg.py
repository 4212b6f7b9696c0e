"""Matrix products: `A[m, n] @ v[n]` is `[m]` for every batch row of v; and the two products
its derivative needs: `A^T g` per row, and the batch-summed outer product `sum_rows g v^T`."""
from __future__ import annotations

import numpy as np

from .base import ShapeError, derivative, register, show_shape


def _matmul_shape(shapes, attrs, unify):
    a, v = shapes
    if len(a) != 2:
        raise ShapeError(f"the left side of @ must be a matrix, got {show_shape(a)}")
    if len(v) != 1:
        raise ShapeError(f"the right side of @ must be a vector, got {show_shape(v)}")
    try:
        unify(a[1], v[0])
    except ShapeError:
        raise ShapeError(f"@ needs the matrix's columns to match the vector: "
                         f"{show_shape(a)} @ {show_shape(v)}") from None
    return (a[0],)


@register("matmul", "matmul", 2, _matmul_shape, gemm=True)
def _matmul(args, attrs, ctx):
    a, v = args
    return v @ a.T


@derivative("matmul")
def _matmul_vjp(e, node, args, out, g):
    return [e.op("outer_sum", g, args[1]()), e.op("matmul_t", args[0](), g)]


def _matmul_t_shape(shapes, attrs, unify):
    a, g = shapes
    if len(a) != 2 or len(g) != 1:
        raise ShapeError(f"matmul_t needs a matrix and a vector, got {show_shape(a)} and "
                         f"{show_shape(g)}")
    unify(a[0], g[0])
    return (a[1],)


@register("matmul_t", "matmul", 2, _matmul_t_shape, gemm=True, differentiable=False)
def _matmul_t(args, attrs, ctx):
    """A^T g for every row: the gradient with respect to the vector of A @ v."""
    a, g = args
    return g @ a


def _outer_shape(shapes, attrs, unify):
    g, v = shapes
    if len(g) != 1 or len(v) != 1:
        raise ShapeError(f"outer_sum needs two vectors, got {show_shape(g)} and {show_shape(v)}")
    return (g[0], v[0])


@register("outer_sum", "batch_reduce", 2, _outer_shape, gemm=True, differentiable=False)
def _outer_sum(args, attrs, ctx):
    """sum over batch rows of g v^T: a step's contribution to the gradient of A in A @ v."""
    g, v = args
    g2, v2 = g.reshape(-1, g.shape[-1]), v.reshape(-1, v.shape[-1])
    # One side may be the same for every row (a parameter-only value, such as b in A @ b).
    if v2.shape[0] == 1 and g2.shape[0] != 1:
        return np.outer(g2.sum(axis=0), v2[0])
    if g2.shape[0] == 1 and v2.shape[0] != 1:
        return np.outer(g2[0], v2.sum(axis=0))
    return g2.T @ v2

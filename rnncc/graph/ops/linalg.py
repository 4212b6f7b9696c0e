"""Matrix times vector: `A[m, n] @ v[n]` is `[m]`, for every batch row of v."""
from __future__ import annotations

from .base import ShapeError, register, show_shape


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


@register("matmul", "matmul", 2, _matmul_shape)
def _matmul(args, attrs):
    a, v = args
    return v @ a.T

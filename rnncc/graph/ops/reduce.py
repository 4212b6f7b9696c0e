"""Row reductions: a vector becomes one scalar per batch row, which broadcasts back."""
from __future__ import annotations

import numpy as np

from .base import ShapeError, register, show_shape


def _reduce_shape(shapes, attrs, unify):
    (s,) = shapes
    if len(s) > 1:
        raise ShapeError(f"mean and sum reduce a vector, got the matrix {show_shape(s)}")
    return ()


def _rows(x):
    # A per-row scalar reduces to itself; keep it [..., 1] so it broadcasts against vectors.
    return np.reshape(x, (1,)) if np.ndim(x) == 0 else x


@register("mean", "reduce", 1, _reduce_shape, spec_name="mean")
def _mean(args, attrs):
    return np.mean(_rows(args[0]), axis=-1, keepdims=True)


@register("sum", "reduce", 1, _reduce_shape, spec_name="sum")
def _sum(args, attrs):
    return np.sum(_rows(args[0]), axis=-1, keepdims=True)

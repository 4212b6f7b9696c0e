"""Leaves and constants.

Bound leaves get their values from whoever evaluates the graph: the step's inputs, the previous
states, parameters, and in a backward graph the upstream gradients ("grad") and the forward values
saved for backward ("saved"). Constants have no arguments and are evaluated like any op.
"""
from __future__ import annotations

import numpy as np

from .base import dim_size, register

for _leaf in ("input", "state", "param", "grad", "saved"):
    register(_leaf, "leaf", 0, None)(None)


@register("const", "constant", 0, lambda shapes, attrs, unify: ())
def _const(args, attrs, ctx):
    return np.asarray(attrs["value"], dtype=ctx.dtype)


@register("size", "constant", 0, lambda shapes, attrs, unify: ())
def _size_op(args, attrs, ctx):
    """The size of dimension attrs["dim"] as a number (a mean's 1/n needs it)."""
    return np.asarray(dim_size(attrs["dim"], ctx.sizes), dtype=ctx.dtype)


@register("zeros", "constant", 0, lambda shapes, attrs, unify: tuple(attrs["shape"]))
def _zeros(args, attrs, ctx):
    """A gradient that is identically zero (a leaf nothing depends on)."""
    return np.zeros(tuple(dim_size(d, ctx.sizes) for d in attrs["shape"]), dtype=ctx.dtype)

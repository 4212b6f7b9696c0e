"""The op table: every op is defined once, with its shape rule and numpy evaluation side by side.

Shapes are per batch row (the batch dimension is implicit): `()` is a scalar per row, `(d,)` a
vector, `(m, n)` a matrix (parameters only). A dimension is a name ("H"), a fixed size (4), or,
while the builder is still inferring parameter shapes, a variable.

Shape rules take a `unify(a, b)` callback that returns the dimension two dimensions agree on or
raises ShapeError. The builder passes one that binds unknown dimensions; verify() passes one that
demands equality. So there is one shape rule per op, used for inference and for checking alike.

Numpy evaluation follows the same layout with the batch in front: a vector is `[..., d]` (`[B, d]`
for per-row values, `[d]` for parameters), a per-row scalar `[..., 1]` or a 0-d array.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class ShapeError(Exception):
    """An op's arguments have shapes it cannot combine; the builder turns it into a SpecError."""


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: str            # "leaf" | "elementwise" | "matmul" | "reduce"
    arity: int
    shape: Callable      # (arg shapes, attrs, unify) -> shape;  None for leaves (declared shape)
    evaluate: Callable   # (list of arrays, attrs) -> array;    None for leaves (bound by the caller)
    spec_name: str | None = None  # the spec-language function this op implements, if any


REGISTRY: dict[str, OpDef] = {}


def register(name: str, kind: str, arity: int, shape, spec_name: str | None = None):
    """Decorator: register the decorated numpy evaluation function as op `name`."""
    def wrap(evaluate):
        if name in REGISTRY:
            raise RuntimeError(f"op {name!r} registered twice")
        REGISTRY[name] = OpDef(name, kind, arity, shape, evaluate, spec_name)
        return evaluate
    return wrap


def show_shape(shape: tuple) -> str:
    if shape == ():
        return "a scalar"
    return "[" + ", ".join(str(d) for d in shape) + "]"


def elementwise_shape(shapes, attrs, unify):
    """Scalars broadcast against vectors; vectors must agree in their dimension."""
    result = ()
    for s in shapes:
        if len(s) > 1:
            raise ShapeError(f"an elementwise operation needs vectors or scalars, got the matrix "
                             f"{show_shape(s)}")
        if s == ():
            continue
        if result == ():
            result = s
        else:
            result = (unify(result[0], s[0]),)
    return result

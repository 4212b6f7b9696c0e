"""The op table: every op is defined once, with its shape rule and numpy evaluation side by side.

Shapes are per batch row (the batch dimension is implicit): `()` is a scalar per row, `(d,)` a
vector, `(m, n)` a matrix (parameters only). A dimension is a name ("H"), a fixed size (4), or,
while the builder is still inferring parameter shapes, a variable.

Shape rules take a `unify(a, b)` callback that returns the dimension two dimensions agree on or
raises ShapeError. The builder passes one that binds unknown dimensions; verify() passes one that
demands equality. So there is one shape rule per op, used for inference and for checking alike.

Numpy evaluation follows the same layout with the batch in front: a vector is `[..., d]` (`[B, d]`
for per-row values, `[d]` for parameters), a per-row scalar `[..., 1]` or a 0-d array. Evaluation
gets a context with the run's dimension sizes and dtype.

Derivative rules (vector-Jacobian products) are written with graph ops, so the backward step is a
graph too. A rule is called as `vjp(e, node, args, out, g)`:
  e     the emitter that adds ops to the backward graph (autodiff/emitter.py),
  node  the forward Node,
  args  one thunk per argument giving the backward-graph node of that argument's forward value,
  out   a thunk giving the backward-graph node of the op's forward value,
  g     the backward-graph node of the gradient with respect to the op's value;
and returns one gradient node (or None: no gradient flows) per argument, shaped like the op's
value; the autodiff driver sums a gradient over the vector where the argument was a broadcast
scalar. Calling a thunk is what makes a forward value needed in backward (saved or recomputed),
so rules call only the ones they use. An op through which no gradient flows (a mask) says so
with `differentiable=False`; tests/graph/test_ops.py holds every other op to having a rule.

Scalar lowering rules say how an elementwise op prints inside a generated kernel, one rule for
every target: `lower(args, attrs, math) -> expression`, with `args` the expressions of the
arguments' elements and `math` the target's ScalarMath (its function and constant spellings).
Generated modules define ZERO, HALF and ONE in the run's dtype; rules may use them by name.

Algebraic properties live here too: `commutative` (cse orders the arguments) and `gemm` (a
matrix product: hoist lifts it out of the loop, fuse gives it a GEMM step).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Protocol


@dataclass(frozen=True)
class Stacked:
    """A dimension made of parts laid end to end: the rows of stacked matrices (W_i; W_f; ...)
    or the columns of their product. Printed as "4H" when the parts are equal, else "H+P"."""
    parts: tuple

    def __str__(self) -> str:
        if len(set(self.parts)) == 1:
            return f"{len(self.parts)}{self.parts[0]}"
        return "+".join(str(p) for p in self.parts)


def dim_size(dim, sizes: dict) -> int:
    """The size of a dimension: a fixed size, a named one looked up in `sizes`, or a stack."""
    if isinstance(dim, Stacked):
        return sum(dim_size(p, sizes) for p in dim.parts)
    return dim if isinstance(dim, int) else sizes[dim]


def part_offsets(dim: Stacked, sizes: dict) -> list:
    """(start, stop) of each part of a stacked dimension."""
    bounds, at = [], 0
    for p in dim.parts:
        n = dim_size(p, sizes)
        bounds.append((at, at + n))
        at += n
    return bounds


class ShapeError(Exception):
    """An op's arguments have shapes it cannot combine; the builder turns it into a SpecError."""


@dataclass(frozen=True)
class EvalContext:
    sizes: dict          # dimension name -> size
    dtype: object        # the run's numpy float dtype


class ScalarMath(Protocol):
    """How a target spells math inside a generated kernel (what scalar lowering rules call)."""

    def call(self, function: str, *args: str) -> str:
        """A math function applied to scalar expressions: exp, log, tanh, sigmoid, softplus,
        sqrt, or any other function of Python's math module (e.g. erf)."""

    def const(self, value: float) -> str:
        """A named constant of the run's dtype."""


@dataclass(frozen=True)
class OpDef:
    name: str
    # "leaf" (bound by the caller), "constant" (no arguments, evaluated), "elementwise", "matmul",
    # "reduce" (over a row's vector), "broadcast" (a row's scalar to a vector),
    # "batch_reduce" (sums over the batch rows: parameter gradients), "stack" (stacked
    # parameters, concatenated vectors), "view" (a part of a stacked value)
    kind: str
    arity: int | None    # None: any number of arguments (at least one)
    shape: Callable      # (arg shapes, attrs, unify) -> shape;   None for leaves (declared shape)
    evaluate: Callable   # (list of arrays, attrs, EvalContext) -> array;  None for bound leaves
    spec_name: str | None = None  # the spec-language function this op implements, if any
    vjp: Callable | None = None   # the derivative rule (see the module doc)
    # False: reverse mode never differentiates through it: no gradient flows (a mask), or only
    # autodiff and the passes create it, in graphs nobody differentiates again
    differentiable: bool = True
    commutative: bool = False     # op(a, b) == op(b, a)
    gemm: bool = False            # a matrix product, run as a GEMM
    lower: Callable | None = None  # scalar lowering: (arg expressions, attrs, ScalarMath) -> str

    @property
    def scalar(self) -> bool:
        """Printed element by element inside a fused kernel's column loops."""
        return self.lower is not None


REGISTRY: dict[str, OpDef] = {}


def register(name: str, kind: str, arity: int, shape, spec_name: str | None = None, *,
             differentiable: bool = True, commutative: bool = False, gemm: bool = False):
    """Decorator: register the decorated numpy evaluation function as op `name`."""
    def wrap(evaluate):
        if name in REGISTRY:
            raise RuntimeError(f"op {name!r} registered twice")
        REGISTRY[name] = OpDef(name, kind, arity, shape, evaluate, spec_name,
                               differentiable=differentiable, commutative=commutative, gemm=gemm)
        return evaluate
    return wrap


def derivative(name: str):
    """Decorator: the decorated function is op `name`'s derivative rule (see the module doc)."""
    def wrap(vjp):
        REGISTRY[name] = replace(REGISTRY[name], vjp=vjp)
        return vjp
    return wrap


def lowering(name: str):
    """Decorator: the decorated function is op `name`'s scalar lowering rule."""
    def wrap(lower):
        REGISTRY[name] = replace(REGISTRY[name], lower=lower)
        return lower
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

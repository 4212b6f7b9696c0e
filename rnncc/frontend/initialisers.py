"""A parameter's initialiser, the text after `=` on a `param` line: text -> Initialiser.

    param gamma[H] = 1               a constant fill (any real number)
    param u[H] = uniform(0, 1)       also normal(mean, std), zeros, ones
    param U[H, H] = orthogonal       matrices only, like xavier; both take an optional gain

Parsed with Python's own parser (like equations), never evaluated; every argument is a number.
"""
from __future__ import annotations

import ast
import math

from .language import INITIALISERS, MATRIX_INITIALISERS
from .source import Source
from .spec import Initialiser, Pos

_EXPECTED = "expected an initialiser: a number, " + ", ".join(
    name if most == 0 else f"{name}({meaning})" if fewest == most
    else f"{name} or {name}({meaning})"
    for name, ((fewest, most), meaning) in INITIALISERS.items())


def _number(node: ast.AST) -> float | None:
    """A literal number, possibly signed; None for anything else."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _number(node.operand)
        return None if value is None else (-value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return float(node.value)
    return None


def parse_initialiser(source: Source, line: int, col0: int, text: str, param: str,
                      dims: tuple) -> Initialiser:
    """The initialiser `text` (starting at 1-based column col0) of parameter `param`."""
    stripped = text.lstrip()
    col0 += len(text) - len(stripped)
    stripped = stripped.rstrip()

    def fail(msg: str, offset: int = 0):
        return source.error(msg, line, col0 + offset)

    if not stripped:
        raise fail(f"missing initialiser after '=': {_EXPECTED}")
    try:
        node = ast.parse(stripped, mode="eval").body
    except SyntaxError as exc:
        raise fail(f"syntax error in the initialiser: {exc.msg}",
                   max((exc.offset or 1) - 1, 0)) from None
    pos = Pos(line, col0)
    value = _number(node)
    if value is not None:
        if not math.isfinite(value):
            raise fail("the initial value is not a finite number")
        return Initialiser("constant", (value,), pos)
    if isinstance(node, ast.Name):
        name, args = node.id, []
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name, args = node.func.id, node.args
    else:
        raise fail(_EXPECTED)
    if name not in INITIALISERS:
        raise fail(f"unknown initialiser '{name}'; {_EXPECTED}")
    (fewest, most), meaning = INITIALISERS[name]
    if not fewest <= len(args) <= most:
        wanted = "no arguments" if most == 0 else (
            f"{meaning}" if fewest == most else f"an optional {meaning}")
        raise fail(f"{name} takes {wanted}, got {len(args)} argument"
                   f"{'' if len(args) == 1 else 's'}")
    values = []
    for arg in args:
        v = _number(arg)
        if v is None or not math.isfinite(v):
            raise fail(f"the arguments of {name} are numbers", arg.col_offset)
        values.append(v)
    if name == "uniform" and not values[0] < values[1]:
        raise fail(f"uniform(low, high) needs low < high, got uniform({values[0]:g}, "
                   f"{values[1]:g})")
    if name == "normal" and values[1] < 0:
        raise fail(f"normal(mean, std) needs std >= 0, got {values[1]:g}")
    if name in MATRIX_INITIALISERS:
        if len(dims) != 2:
            raise fail(f"{name} initialises a matrix, and parameter '{param}' is a vector")
        if values and values[0] <= 0:
            raise fail(f"the gain of {name} must be positive, got {values[0]:g}")
    return Initialiser(name, tuple(values), pos)

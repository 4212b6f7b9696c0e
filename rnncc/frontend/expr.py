"""One equation's right-hand side: text -> Expr tree.

Python's own parser does the work (it knows `@` and operator precedence); the spec is parsed,
never evaluated. Python cannot parse a prime, so `c'` is renamed `c__prime` first and every column
is mapped back to the user's text for error messages.
"""
from __future__ import annotations

import ast
import math

from .language import CHUNK, FUNCTIONS, MAX_EXPR_DEPTH, PRIME_SUFFIX
from .source import Source
from .spec import Binary, Call, Expr, Name, Neg, Num, Pos, Power

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@"}
_UNSUPPORTED_OPS = {ast.FloorDiv: "//", ast.Mod: "%", ast.LShift: "<<", ast.RShift: ">>",
                    ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^"}
_UNSUPPORTED_NODES = {
    ast.Compare: "comparisons", ast.BoolOp: "'and'/'or'", ast.Subscript: "indexing",
    ast.Attribute: "attribute access", ast.Tuple: "tuples", ast.List: "lists", ast.Dict: "dicts",
    ast.Set: "sets", ast.Lambda: "lambdas", ast.IfExp: "conditional expressions",
    ast.NamedExpr: "':='", ast.Starred: "'*' unpacking", ast.JoinedStr: "strings",
    ast.ListComp: "comprehensions", ast.GeneratorExp: "comprehensions",
    ast.SetComp: "comprehensions", ast.DictComp: "comprehensions", ast.Await: "'await'",
    ast.Yield: "'yield'", ast.YieldFrom: "'yield'", ast.Slice: "slices",
}


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _rewrite_primes(source: Source, line: int, col0: int, text: str) -> tuple[str, list[int]]:
    """`c'` -> `c__prime`; returns the new text and, per new character, its original column."""
    out: list[str] = []
    cols: list[int] = []
    for i, ch in enumerate(text):
        col = col0 + i
        if ch != "'":
            out.append(ch)
            cols.append(col)
            continue
        # A prime must directly follow a name (not a number, not a space) ...
        j = i
        while j > 0 and _is_ident_char(text[j - 1]):
            j -= 1
        if j == i or not (text[j].isalpha() or text[j] == "_"):
            raise source.error("a prime (') must directly follow a state name, as in c'", line, col)
        # ... and must end it.
        if i + 1 < len(text) and _is_ident_char(text[i + 1]):
            raise source.error("unexpected character after a prime: a primed name ends at the "
                               "prime", line, col + 1)
        out.append(PRIME_SUFFIX)
        cols.extend([col] * len(PRIME_SUFFIX))
    return "".join(out), cols


def _depth(tree: ast.AST) -> int:
    """Nesting depth, computed without recursion."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def parse_expr(source: Source, line: int, col0: int, text: str, functions: dict | None = None,
               chunk_targets: int | None = None, later: dict | None = None,
               defining: str | None = None) -> Expr:
    """Parse `text`, which starts at 1-based column `col0` of `line`. `functions`: the spec's
    own functions defined so far (name -> number of arguments); `later`: those defined further
    down (name -> line), and `defining`: the function whose body `text` is, both only for
    clearer errors. `chunk_targets`: the number of names on the left of a line
    `a, b = chunk(v, 2)` (its right side must be that chunk)."""
    stripped = text.lstrip()
    col0 += len(text) - len(stripped)
    stripped = stripped.rstrip()
    if not stripped:
        raise source.error("missing expression after '='", line, col0)
    rewritten, cols = _rewrite_primes(source, line, col0, stripped)

    def position(offset: int) -> Pos:  # 0-based offset into `rewritten`
        if offset < len(cols):
            return Pos(line, cols[offset])
        return Pos(line, col0 + len(stripped))

    try:
        tree = ast.parse(rewritten, mode="eval")
    except SyntaxError as exc:
        msg = exc.msg
        if msg == "too many nested parentheses":
            raise source.error(f"expression is nested too deeply (limit {MAX_EXPR_DEPTH} levels)",
                               line, col0) from None
        offset = (exc.offset or 1) - 1 if exc.lineno in (None, 1) else len(rewritten)
        pos = position(offset)
        raise source.error(f"syntax error: {msg}", pos.line, pos.col) from None
    except (RecursionError, MemoryError):
        raise source.error(f"expression is nested too deeply (limit {MAX_EXPR_DEPTH} levels)",
                           line, col0) from None
    if _depth(tree) > MAX_EXPR_DEPTH:
        raise source.error(f"expression is nested too deeply (limit {MAX_EXPR_DEPTH} levels)",
                           line, col0)
    converter = _Converter(source, position, functions or {}, later or {}, defining)
    body = tree.body
    if chunk_targets is not None:
        if not (isinstance(body, ast.Call) and isinstance(body.func, ast.Name)
                and body.func.id == CHUNK):
            raise converter.fail(f"a line naming {chunk_targets} values takes chunk(v, "
                                 f"{chunk_targets}) on its right side", body)
        return converter.chunk(body, chunk_targets)
    return converter.convert(body)


class _Converter:
    def __init__(self, source: Source, position, functions: dict, later: dict,
                 defining: str | None):
        self.source = source
        self.position = position
        self.functions = functions
        self.later = later
        self.defining = defining

    def pos(self, node: ast.AST) -> Pos:
        return self.position(node.col_offset)

    def fail(self, msg: str, node: ast.AST):
        p = self.pos(node)
        return self.source.error(msg, p.line, p.col)

    def convert(self, node: ast.AST) -> Expr:
        if isinstance(node, ast.Constant):
            return Num(self.number(node), self.pos(node))
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return Neg(self.convert(node.operand), self.pos(node))
            if isinstance(node.op, ast.UAdd):
                return self.convert(node.operand)
            raise self.fail("unsupported operator: only unary '-' and '+' are allowed", node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        what = _UNSUPPORTED_NODES.get(type(node), type(node).__name__)
        raise self.fail(f"unsupported syntax: {what} (not part of the spec language)", node)

    def number(self, node: ast.Constant) -> float:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "strings" if isinstance(value, (str, bytes)) else repr(value)
            raise self.fail(f"unsupported constant {kind}: only real numbers are allowed", node)
        try:
            result = float(value)
        except OverflowError:
            result = math.inf
        if not math.isfinite(result):
            raise self.fail("number out of range", node)
        return result

    def name(self, node: ast.Name) -> Name:
        ident = node.id
        primed = ident.endswith(PRIME_SUFFIX)
        base = ident[: -len(PRIME_SUFFIX)] if primed else ident
        if "__" in base:
            raise self.fail(f"names may not contain '__' (reserved): {base!r}", node)
        if not base.isascii():
            raise self.fail(f"names are ASCII letters, digits and '_': {base!r}", node)
        return Name(base, primed, self.pos(node))

    def binop(self, node: ast.BinOp) -> Expr:
        if isinstance(node.op, ast.Pow):
            exponent = self.constant_value(node.right)
            if exponent is None:
                raise self.fail("the exponent of '**' must be a number", node.right)
            return Power(self.convert(node.left), exponent, self.pos(node), self.pos(node.right))
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise self.fail(f"unsupported operator '{_UNSUPPORTED_OPS.get(type(node.op), '?')}'",
                            node)
        return Binary(op, self.convert(node.left), self.convert(node.right), self.pos(node))

    def call(self, node: ast.Call) -> Call:
        if not isinstance(node.func, ast.Name):
            raise self.fail("only the built-in functions can be called", node)
        func = node.func.id
        self.check_call(node)
        if func == CHUNK:
            raise self.fail("chunk(v, n) gives n values: it is the whole right side of a line "
                            "naming them, as in i, f, g, o = chunk(v, 4)", node)
        return Call(func, tuple(self.convert(a) for a in node.args), self.pos(node))

    def check_call(self, node: ast.Call) -> None:
        func = node.func.id
        arities = {**FUNCTIONS, **self.functions}
        if func == self.defining:
            raise self.fail(f"function {func} calls itself: a function may call only the "
                            f"functions defined above it", node)
        if func not in arities and func in self.later:
            raise self.fail(f"function '{func}' is used before its definition on line "
                            f"{self.later[func]} (define it above its first use)", node)
        if func not in arities:
            known = ", ".join(arities)
            raise self.fail(f"unknown function '{func}'; the functions are: {known}", node)
        if node.keywords:
            raise self.fail(f"{func}() takes no keyword arguments", node.keywords[0].value)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.fail(f"{func}() takes no '*' arguments", arg)
        arity = arities[func]
        if arity is None:
            if len(node.args) < 2:
                raise self.fail(f"{func}() takes two or more arguments, got {len(node.args)}",
                                node)
        elif len(node.args) != arity:
            plural = "argument" if arity == 1 else "arguments"
            raise self.fail(f"{func}() takes {arity} {plural}, got {len(node.args)}", node)

    def chunk(self, node: ast.Call, targets: int) -> Call:
        """`chunk(v, n)` on the right of a line naming `targets` values."""
        self.check_call(node)
        count = self.constant_value(node.args[1])
        if count is None or count != int(count) or count < 1:
            raise self.fail("the count of chunk(v, n) is a positive whole number", node.args[1])
        if int(count) != targets:
            raise self.fail(f"chunk(..., {int(count)}) gives {int(count)} parts, but the line "
                            f"names {targets}", node.args[1])
        return Call(CHUNK, (self.convert(node.args[0]), Num(float(count), self.pos(node.args[1]))),
                    self.pos(node))

    def constant_value(self, node: ast.AST) -> float | None:
        """The value of an expression made only of numbers, or None if it contains anything else."""
        try:
            if isinstance(node, ast.Constant):
                return self.number(node)
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
                v = self.constant_value(node.operand)
                return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
            if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult,
                                                                  ast.Div, ast.Pow):
                a, b = self.constant_value(node.left), self.constant_value(node.right)
                if a is None or b is None:
                    return None
                op = type(node.op)
                v = (a + b if op is ast.Add else a - b if op is ast.Sub else a * b
                     if op is ast.Mult else a / b if op is ast.Div else a ** b)
                if isinstance(v, complex) or not math.isfinite(v):
                    raise self.fail("the exponent is not a finite real number", node)
                return float(v)
        except ZeroDivisionError:
            raise self.fail("division by zero in the exponent", node) from None
        except OverflowError:
            raise self.fail("the exponent is out of range", node) from None
        return None

"""Spec text -> Spec: the line structure (header, declarations, equations).

Names are resolved afterwards (resolve.py); this file only knows what each line says.
"""
from __future__ import annotations

import re
import unicodedata

from .expr import parse_expr
from .initialisers import parse_initialiser
from .language import CHUNK, FUNCTIONS, KEYWORDS
from ..ops import Stacked
from .source import Source
from .resolve import names_in
from .spec import Decl, Equation, FunctionDef, Pos, Spec

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_HEADER = re.compile(rf"^\s*cell\s+({_IDENT})\s*$")
_EQUATION = re.compile(rf"^(\s*)({_IDENT})(')?\s*=(?!=)")
_TARGETS = re.compile(rf"^(\s*)({_IDENT}'?(?:\s*,\s*{_IDENT}'?)+)\s*,?\s*=(?!=)")
_DEF = re.compile(rf"^(\s*)def(?![A-Za-z0-9_'])")
_DEF_HEAD = re.compile(rf"(\s+)({_IDENT})\s*\(([^()]*)\)\s*=(?!=)")
_DECL = re.compile(r"^(\s*)(input|state|param|output)(?![A-Za-z0-9_'])")
_TOKEN = re.compile(rf"\s*(?:({_IDENT})|(\d+)|(\S))")


def _code_part(source: Source, lineno: int, line: str) -> str:
    """The line without its comment, after checking it holds no stray characters."""
    if line.endswith("\r"):
        line = line[:-1]
    hash_at = line.find("#")
    code = line if hash_at < 0 else line[:hash_at]
    for i, ch in enumerate(line):
        in_comment = 0 <= hash_at <= i
        control = unicodedata.category(ch) in ("Cc", "Cf", "Cs") and ch != "\t"
        if control or (not in_comment and not ch.isascii()):
            name = unicodedata.name(ch, "control character")
            raise source.error(f"stray character U+{ord(ch):04X} ({name}) in the spec",
                               lineno, i + 1)
    return code


def check_name(source: Source, name: str, pos: Pos, what: str) -> None:
    """A name the user introduces (declared or defined) must not be reserved."""
    if name in KEYWORDS:
        raise source.error(f"'{name}' is a keyword and cannot name {what}", pos.line, pos.col)
    if name in FUNCTIONS:
        raise source.error(f"'{name}' is a function and cannot name {what}", pos.line, pos.col)
    if "__" in name:
        raise source.error(f"names may not contain '__' (reserved): '{name}'", pos.line, pos.col)


def parse(source: Source) -> Spec:
    spec: Spec | None = None
    declared: dict[str, Decl] = {}
    defs = _defined_functions(source)   # for "used before its definition on line N"
    for lineno, line in enumerate(source.lines, start=1):
        code = _code_part(source, lineno, line)
        if not code.strip():
            continue
        first_col = len(code) - len(code.lstrip()) + 1
        if spec is None:
            spec = _header(source, lineno, code, first_col)
            continue
        if _HEADER.match(code) or re.match(r"^\s*cell(\s|$)", code):
            raise source.error(f"a second 'cell' header (the spec began on line "
                               f"{spec.header.line})", lineno, first_col)
        if _DEF.match(code):
            _function(source, spec, declared, lineno, code, first_col, defs)
            continue
        targets = _TARGETS.match(code)
        if targets:
            _chunk_equations(source, spec, lineno, code, targets, defs)
            continue
        eq = _EQUATION.match(code)
        if eq:
            _equation(source, spec, lineno, code, eq, defs)
            continue
        decl = _DECL.match(code)
        if decl:
            keyword = decl.group(2)
            rest_col = decl.end() + 1
            if keyword == "output":
                _output(source, spec, lineno, code[decl.end():], rest_col, first_col)
            else:
                for d in _declarations(source, keyword, lineno, code[decl.end():], rest_col):
                    if d.name in declared:
                        first = declared[d.name]
                        raise source.error(f"'{d.name}' is declared twice (first as {first.kind} "
                                           f"on line {first.pos.line})", d.pos.line, d.pos.col)
                    declared[d.name] = d
                    {"input": spec.inputs, "state": spec.states, "param": spec.params}[keyword][
                        d.name] = d
            continue
        raise source.error("expected a declaration (input, state, param, output), a function "
                           "(def NAME(ARGS) = EXPR) or an equation NAME = EXPR", lineno, first_col)
    if spec is None:
        raise source.error("empty spec: it must start with a header line 'cell NAME'",
                           1, 1)
    return spec


def _header(source: Source, lineno: int, code: str, first_col: int) -> Spec:
    m = _HEADER.match(code)
    if not m:
        if re.match(r"^\s*cell(\s|$)", code):
            raise source.error("malformed header: expected 'cell NAME'", lineno, first_col)
        raise source.error("missing header: a spec starts with 'cell NAME'", lineno, first_col)
    return Spec(name=m.group(1), source=source, header=Pos(lineno, first_col))


def _equation(source: Source, spec: Spec, lineno: int, code: str, m: re.Match,
              defs: dict) -> None:
    target, primed = m.group(2), bool(m.group(3))
    pos = Pos(lineno, len(m.group(1)) + 1)
    if not primed:
        check_name(source, target, pos, "a value")
    expr = parse_expr(source, lineno, m.end() + 1, code[m.end():], _arities(spec),
                      later=defs)
    spec.equations.append(Equation(target, primed, expr, pos))


def _arities(spec: Spec) -> dict:
    return {name: len(f.args) for name, f in spec.functions.items()}


def _defined_functions(source: Source) -> dict:
    """Every function name a `def` line of the source defines -> its first line: a call of one
    not yet defined is an error that can say where it is."""
    found = {}
    for lineno, line in enumerate(source.lines, start=1):
        code = line.split("#", 1)[0]
        start = _DEF.match(code)
        head = start and _DEF_HEAD.match(code, start.end())
        if head:
            found.setdefault(head.group(2), lineno)
    return found


def _chunk_equations(source: Source, spec: Spec, lineno: int, code: str, m: re.Match,
                     defs: dict) -> None:
    """`i, f, g, o = chunk(v, 4)`: one equation per name, all sharing the chunk."""
    targets = []
    at = m.start(2)
    for piece in m.group(2).split(","):
        name = piece.strip()
        col = at + len(piece) - len(piece.lstrip()) + 1
        at += len(piece) + 1
        primed = name.endswith("'")
        name = name.rstrip("'")
        pos = Pos(lineno, col)
        if not primed:
            check_name(source, name, pos, "a value")
        if any(t[0] == name and t[1] == primed for t in targets):
            raise source.error(f"'{name}{chr(39) * primed}' is named twice on this line",
                               lineno, col)
        targets.append((name, primed, pos))
    expr = parse_expr(source, lineno, m.end() + 1, code[m.end():], _arities(spec),
                      chunk_targets=len(targets), later=defs)
    for index, (name, primed, pos) in enumerate(targets):
        spec.equations.append(Equation(name, primed, expr, pos, part=(index, len(targets))))


def _function(source: Source, spec: Spec, declared: dict, lineno: int, code: str,
              first_col: int, defs: dict) -> None:
    """`def NAME(a, b) = EXPR`: a function of its arguments only, usable on later lines."""
    head = _DEF_HEAD.match(code, _DEF.match(code).end())
    if not head:
        raise source.error("malformed function: expected 'def NAME(ARG, ...) = EXPR'", lineno,
                           first_col)
    name = head.group(2)
    pos = Pos(lineno, head.start(2) + 1)
    check_name(source, name, pos, "a function")
    if name == CHUNK:
        raise source.error(f"'{name}' is a function and cannot name a function", lineno, pos.col)
    if name in spec.functions:
        raise source.error(f"function '{name}' is defined twice (first on line "
                           f"{spec.functions[name].pos.line})", lineno, pos.col)
    if name in declared:
        raise source.error(f"'{name}' is declared as {declared[name].kind} on line "
                           f"{declared[name].pos.line} and cannot name a function", lineno, pos.col)
    args = []
    at = head.start(3)
    if head.group(3).strip():
        for piece in head.group(3).split(","):
            arg = piece.strip()
            col = at + len(piece) - len(piece.lstrip()) + 1
            at += len(piece) + 1
            if not re.fullmatch(_IDENT, arg):
                raise source.error(f"expected the name of an argument of {name}, found "
                                   f"'{arg}'" if arg else f"expected the name of an argument of "
                                   f"{name}", lineno, col)
            check_name(source, arg, Pos(lineno, col), "an argument")
            if any(a == arg for a, _ in args):
                raise source.error(f"argument '{arg}' of {name} is named twice", lineno, col)
            args.append((arg, Pos(lineno, col)))
    if not args:
        raise source.error(f"function {name} takes no arguments: a function of nothing is a "
                           f"value (write {name} = EXPR)", lineno, pos.col)
    expr = parse_expr(source, lineno, head.end() + 1, code[head.end():], _arities(spec),
                      later=defs, defining=name)
    own = {a for a, _ in args}
    for used in names_in(expr):
        if used.primed:
            raise source.error(f"{used.name}' in function {name}: a function sees only its "
                               f"arguments (pass the new state as one)", used.pos.line,
                               used.pos.col)
        if used.name not in own:
            raise source.error(f"'{used.name}' is not an argument of {name}: a function sees "
                               f"only its arguments (add it: def {name}("
                               f"{', '.join([*(a for a, _ in args), used.name])}) = ...)",
                               used.pos.line, used.pos.col)
    spec.functions[name] = FunctionDef(name, tuple(args), expr, pos)


def _output(source: Source, spec: Spec, lineno: int, rest: str, rest_col: int,
            first_col: int) -> None:
    m = re.match(rf"^(\s+)({_IDENT})\s*$", rest)
    if not m:
        raise source.error("malformed output line: expected 'output NAME'", lineno, first_col)
    if spec.output is not None:
        raise source.error(f"a second 'output' line (the first is on line {spec.output[1].line})",
                           lineno, first_col)
    spec.output = (m.group(2), Pos(lineno, rest_col + len(m.group(1))))


def _tokens(source: Source, lineno: int, text: str, col0: int):
    """(kind, text, col) tokens of a declaration list; kind is 'name', 'int' or the symbol."""
    at = 0
    while at < len(text) and text[at:].strip():
        m = _TOKEN.match(text, at)
        col = col0 + m.start() + (len(m.group(0)) - len(m.group(0).lstrip()))
        ident, number, sym = m.groups()
        if ident:
            yield "name", ident, col
        elif number:
            yield "int", number, col
        elif sym in "[],=*":
            yield sym, sym, col
        else:
            raise source.error(f"unexpected '{sym}' in a declaration", lineno, col)
        at = m.end()
    yield "end", "", col0 + len(text.rstrip())


def _initialiser_end(text: str, start: int) -> int:
    """Where the initialiser that starts at text[start] ends: the next ',' outside parentheses,
    or the end of the line."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
        elif text[i] == "," and depth <= 0:
            return i
    return len(text)


def _declarations(source: Source, keyword: str, lineno: int, text: str, col0: int) -> list[Decl]:
    """`x[I], y[2]` -> Decls. Inputs and states are vectors; parameters vectors or matrices,
    each optionally with an initialiser: `param b[H] = 1, W[H, I] = xavier`."""
    what = {"input": "an input", "state": "a state", "param": "a parameter"}[keyword]
    toks = _tokens(source, lineno, text, col0)
    tok = next(toks)
    decls = []

    def expect(kind: str, what: str):
        nonlocal tok, toks
        if tok[0] != kind:
            found = "the end of the line" if tok[0] == "end" else f"'{tok[1]}'"
            raise source.error(f"expected {what}, found {found}", lineno, tok[2])
        got = tok
        tok = next(toks)
        return got

    while True:
        _, name, col = expect("name", f"the name of {what}")
        pos = Pos(lineno, col)
        check_name(source, name, pos, what)
        expect("[", f"'[' and the dimensions of {name}, as in {name}[H]")
        dims, dim_pos = [], []
        while True:
            dim_col = tok[2]
            if tok[0] == "int":
                size = int(tok[1])
                if size <= 0:
                    raise source.error("a dimension is a name, a positive integer or a "
                                       "positive multiple of a name (4H)", lineno, tok[2])
                tok = next(toks)
                star = tok[0] == "*"
                if star:
                    tok = next(toks)
                if tok[0] == "name" and not star and tok[2] != dim_col + len(str(size)):
                    raise source.error(f"write a multiple of a dimension as {size}{tok[1]} or "
                                       f"{size}*{tok[1]}", lineno, tok[2])
                if tok[0] == "name" or (star and tok[0] == "int"):
                    # `4H` (or 4*H): four blocks of H, as stacked gate matrices are
                    part = tok[1] if tok[0] == "name" else int(tok[1])
                    dims.append(part if size == 1 else Stacked((part,) * size))
                    tok = next(toks)
                elif star:
                    found = "the end of the line" if tok[0] == "end" else f"'{tok[1]}'"
                    raise source.error(f"expected a dimension after '*', as in 4*H, found "
                                       f"{found}", lineno, tok[2])
                else:
                    dims.append(size)
            elif tok[0] == "name":
                dims.append(tok[1])
                tok = next(toks)
            else:
                found = "the end of the line" if tok[0] == "end" else f"'{tok[1]}'"
                raise source.error(f"expected a dimension (a name, a positive integer, or a "
                                   f"multiple such as 4H), found {found}", lineno, tok[2])
            dim_pos.append(Pos(lineno, dim_col))
            if tok[0] == ",":
                tok = next(toks)
                continue
            expect("]", "',' or ']'")
            break
        if keyword in ("input", "state") and len(dims) != 1:
            raise source.error(f"{what} is a vector: give it one dimension, as in {name}[H]",
                               lineno, col)
        if keyword == "param" and len(dims) > 2:
            raise source.error("a parameter is a vector or a matrix: give it one or two "
                               "dimensions", lineno, col)
        init = None
        if tok[0] == "=":
            if keyword != "param":
                raise source.error(f"only parameters take an initialiser; {name} is {what}",
                                   lineno, tok[2])
            start = tok[2] - col0 + 1              # just after '='
            end = _initialiser_end(text, start)
            init = parse_initialiser(source, lineno, col0 + start, text[start:end], name,
                                     tuple(dims))
            toks = _tokens(source, lineno, text[end:], col0 + end)
            tok = next(toks)
        decls.append(Decl(name, keyword, tuple(dims), pos, tuple(dim_pos), init))
        if tok[0] == "end":
            return decls
        expect(",", "',' between declarations")

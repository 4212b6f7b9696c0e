"""What the user wrote, checked: declarations and equations with their source positions.

Expressions are a small tree of their own (not Python's ast) so every later stage sees only the
constructs the language has.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .source import Source

Dim = str | int  # a named dimension ("H") or a fixed size (4)


@dataclass(frozen=True)
class Pos:
    line: int
    col: int


@dataclass(frozen=True)
class Num:
    value: float
    pos: Pos


@dataclass(frozen=True)
class Name:
    name: str
    primed: bool  # `c'`: the state's new value
    pos: Pos


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    pos: Pos


@dataclass(frozen=True)
class Binary:
    op: str  # one of + - * / @
    left: "Expr"
    right: "Expr"
    pos: Pos


@dataclass(frozen=True)
class Power:
    base: "Expr"
    exponent: float
    pos: Pos
    exponent_pos: Pos


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple
    pos: Pos


Expr = Num | Name | Neg | Binary | Power | Call


@dataclass(frozen=True)
class Decl:
    name: str
    kind: str  # "input" | "state" | "param"
    dims: tuple  # of Dim
    pos: Pos
    dim_pos: tuple = ()  # Pos of each dim, for errors about a dimension
    init: "Initialiser | None" = None  # a parameter's `= ...`; None: PyTorch's rule


@dataclass(frozen=True)
class Initialiser:
    """How a parameter's values are first drawn (`param b[H] = 1`): `kind` is "constant" (args:
    the value) or an initialiser's name (language.INITIALISERS) with its numeric arguments."""
    kind: str
    args: tuple
    pos: Pos

    def __str__(self) -> str:
        if self.kind == "constant":
            return f"{self.args[0]:g}"
        return f"{self.kind}({', '.join(f'{a:g}' for a in self.args)})"


@dataclass(frozen=True)
class Equation:
    target: str
    primed: bool
    expr: Expr
    pos: Pos  # of the target name
    # `i, f, g, o = chunk(v, 4)` is four equations sharing one `chunk` Call as `expr`, each
    # taking its part: (index, count). None: the target is the whole expression.
    part: tuple | None = None


@dataclass(frozen=True)
class FunctionDef:
    """`def ln(v, g) = EXPR`: a function of the spec, expanded into the graph at each call."""
    name: str
    args: tuple   # of (name, Pos)
    expr: Expr
    pos: Pos      # of the function's name


@dataclass
class Spec:
    name: str
    source: Source
    header: Pos
    inputs: dict = field(default_factory=dict)    # name -> Decl
    states: dict = field(default_factory=dict)    # name -> Decl
    params: dict = field(default_factory=dict)    # name -> Decl, declared with `param`
    output: tuple | None = None                   # (name, Pos) from the `output` line
    equations: list = field(default_factory=list)
    functions: dict = field(default_factory=dict)  # name -> FunctionDef, in order of definition
    # Set by name resolution (resolve.py returns a new Spec with them):
    inferred_params: dict = field(default_factory=dict)  # name -> Pos of first use
    output_name: str = ""

    @property
    def intermediates(self) -> list[str]:
        return [eq.target for eq in self.equations if not eq.primed]

    def error(self, msg: str, pos: Pos):
        return self.source.error(msg, pos.line, pos.col)

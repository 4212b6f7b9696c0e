"""Names for the values of a step graph, taken from the spec's own names.

A value the spec names keeps its name (i, c', h'); any other is named by the expression that
computes it, in the spec's notation (`tanh(c')`, `W_i@x+U_i@h+b_i`, `1-f`), as long as that
stays short; past that, by its op and its first named argument (`mul(do)`). Autodiff names the
gradient of a named value `d` + its name (`do`, `dc'`; `d(W_o@x+U_o@h+b_o)`) and the passes
name the stacked gate gradients `dgates`. Plans, printed graphs and generated code use these
names, so that what they show reads as the cell, and a change shows up as a change of the cell
rather than of node numbering.
"""
from __future__ import annotations

INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
MAX_EXPRESSION = 24   # longer expressions are named by their op and first argument


def _top_level_operators(name: str) -> set:
    """The infix operators of a name outside its parentheses (d(1-z) has none)."""
    found, depth = set(), 0
    for c in name:
        depth += (c == "(") - (c == ")")
        if depth == 0 and c in "+-*/":
            found.add(c)
    return found


def _operand(name: str, op: str, right: bool) -> str:
    """An argument's name inside an infix expression, parenthesized where precedence needs it."""
    operators = _top_level_operators(name)
    loose = bool(operators & {"+", "-"})
    if (op in ("mul", "div", "neg") and loose or right and op in ("sub", "div") and operators
            or op == "neg" and operators):
        return f"({name})"
    return name


def expression(op: str, attrs, args: list[str]) -> str:
    """The spec-notation name of op applied to values named `args`."""
    if op == "const":
        return f"{attrs['value']:g}"
    if op == "size":
        return f"size({attrs['dim']})"
    if op == "zeros":
        return "0"
    if op in INFIX:
        return f"{_operand(args[0], op, False)}{INFIX[op]}{_operand(args[1], op, True)}"
    if op == "neg":
        return f"-{_operand(args[0], op, True)}"
    if op == "pow":
        return f"{_operand(args[0], 'mul', True)}**{attrs['exponent']:g}"
    if op == "matmul":
        return f"{args[0]}@{args[1]}"
    if op in ("matmul_t", "outer_sum"):
        return f"{args[0]}^T@{args[1]}"
    if op == "broadcast":
        return args[0]
    if op in ("part", "part_rows"):
        return f"{args[0]}[{attrs['index']}]"
    return f"{op}({', '.join(args)})"


def value_name(op: str, attrs, args: list[str]) -> str:
    """expression(), or where that is too long, the op and its first argument."""
    text = expression(op, attrs, args)
    if len(text) <= MAX_EXPRESSION:
        return text
    first = args[0] if args and len(args[0]) <= MAX_EXPRESSION else "..."
    return f"{op}({first}{', ...' if len(args) > 1 else ''})"


def graph_names(graph) -> dict[int, str]:
    """Every node's name: its own, else value_name() of its arguments' names."""
    names: dict[int, str] = {}
    for n in graph.order:
        node = graph.node(n)
        names[n] = node.name or value_name(node.op, node.attrs, [names[a] for a in node.args])
    return names


def gradient_name(name: str) -> str:
    """The name of the gradient of a value named `name`: dc', d(1-f)."""
    simple = name.replace("'", "").replace("_", "").isalnum()
    return f"d{name}" if simple else f"d({name})"

"""Name resolution: every name in every equation means exactly one thing, or it is an error.

Rules (the contract in the README):
- a declared name is its input, state or parameter; a state's plain name is its previous value;
- `NAME'` is a state's new value, usable after the line that defines it;
- an intermediate is usable after the line that defines it, and is defined once;
- any other name is a parameter whose shape is inferred from use (graph/build.py).
"""
from __future__ import annotations

from dataclasses import replace

from .language import FUNCTIONS, KEYWORDS
from ..ops import Stacked
from .spec import Binary, Call, Expr, Name, Neg, Power, Spec


def dim_names(dim) -> list:
    """The dimension names in a declared dimension: H in H, 4H or H+I; none in 8."""
    parts = dim.parts if isinstance(dim, Stacked) else (dim,)
    return [p for p in parts if isinstance(p, str)]


def names_in(expr: Expr):
    """Every Name in `expr`, left to right."""
    if isinstance(expr, Name):
        yield expr
    elif isinstance(expr, Neg):
        yield from names_in(expr.operand)
    elif isinstance(expr, Power):
        yield from names_in(expr.base)
    elif isinstance(expr, Binary):
        yield from names_in(expr.left)
        yield from names_in(expr.right)
    elif isinstance(expr, Call):
        for arg in expr.args:
            yield from names_in(arg)


def resolve(spec: Spec) -> Spec:
    err = spec.error
    if not spec.inputs:
        raise err("the spec declares no input: add a line such as 'input x[I]'", spec.header)
    if not spec.states:
        raise err("the spec declares no state: add a line such as 'state h[H]'", spec.header)
    declared = {**spec.inputs, **spec.states, **spec.params}
    dims = {n for decl in declared.values() for d in decl.dims for n in dim_names(d)}
    intermediates = {eq.target for eq in spec.equations if not eq.primed}

    def primed_non_state(name: str, pos):
        """The error for `name'` where `name` is not a state."""
        if name in declared:
            return err(f"a prime on a non-state: '{name}' is {_kind(declared[name])}; only "
                       f"states have a new value", pos)
        if name in intermediates:
            return err(f"a prime on a non-state: '{name}' is an intermediate; only states have "
                       f"a new value", pos)
        return err(f"unknown state '{name}': declare it with 'state {name}[H]'", pos)

    # Where each intermediate and each state update is defined, to tell "later" from "never".
    defined_at: dict[str, object] = {}
    updated_at: dict[str, object] = {}
    for eq in spec.equations:
        if eq.primed:
            if eq.target not in spec.states:
                raise primed_non_state(eq.target, eq.pos)
            if eq.target in updated_at:
                raise err(f"state '{eq.target}' is updated twice (first on line "
                          f"{updated_at[eq.target].line})", eq.pos)
            updated_at[eq.target] = eq.pos
        else:
            decl = declared.get(eq.target)
            if decl is not None:
                if decl.kind == "state":
                    raise err(f"'{eq.target}' is a state: write its new value as "
                              f"{eq.target}' = ...", eq.pos)
                raise err(f"cannot assign to {_kind(decl)} '{eq.target}'", eq.pos)
            if eq.target in defined_at:
                raise err(f"'{eq.target}' is defined twice (first on line "
                          f"{defined_at[eq.target].line})", eq.pos)
            if eq.target in dims:
                raise err(f"'{eq.target}' is a dimension and cannot name a value", eq.pos)
            if eq.target in spec.functions:
                raise err(f"'{eq.target}' is a function (line "
                          f"{spec.functions[eq.target].pos.line}) and cannot name a value",
                          eq.pos)
            defined_at[eq.target] = eq.pos

    available: set[str] = set()       # intermediates defined so far
    available_new: set[str] = set()   # states whose new value is defined so far
    inferred: dict = {}
    for eq in spec.equations:
        for name in names_in(eq.expr):
            n = name.name
            if name.primed:
                if n in spec.states:
                    if n in available_new:
                        continue
                    if n == eq.target and eq.primed:
                        raise err(f"{n}' refers to itself; the previous value is written {n}",
                                  name.pos)
                    if n in updated_at:
                        raise err(f"{n}' is used before its definition on line "
                                  f"{updated_at[n].line}", name.pos)
                    raise err(f"state '{n}' has no update {n}' = ...", name.pos)
                raise primed_non_state(n, name.pos)
            if n in declared or n in available:
                continue
            if n in defined_at:
                if n == eq.target and not eq.primed:
                    raise err(f"'{n}' refers to itself; only states carry values from one step "
                              f"to the next", name.pos)
                raise err(f"'{n}' is used before its definition on line {defined_at[n].line}",
                          name.pos)
            if n in FUNCTIONS or n in spec.functions:
                raise err(f"'{n}' is a function: call it, as in {n}(...)", name.pos)
            if n in KEYWORDS:
                raise err(f"'{n}' is a keyword, not a value", name.pos)
            if n in dims:
                raise err(f"unknown name '{n}': it is a dimension, not a value", name.pos)
            inferred.setdefault(n, name.pos)
        if eq.primed:
            available_new.add(eq.target)
        else:
            available.add(eq.target)

    for state, decl in spec.states.items():
        if state not in updated_at:
            raise err(f"state '{state}' has no update: add a line {state}' = ...", decl.pos)

    if spec.output is None:
        output_name = next(iter(spec.states))
    else:
        output_name, pos = spec.output
        if output_name not in spec.states and output_name not in defined_at:
            if output_name in declared:
                raise err(f"unknown output '{output_name}': the output is a state or an "
                          f"intermediate, and '{output_name}' is {_kind(declared[output_name])}",
                          pos)
            raise err(f"unknown output '{output_name}': no state or intermediate has that name",
                      pos)
    return replace(spec, inferred_params=inferred, output_name=output_name)


def _kind(decl) -> str:
    return {"input": "an input", "state": "a state", "param": "a parameter"}[decl.kind]

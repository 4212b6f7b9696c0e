"""Spec lint: what compiles but is probably a mistake, as SpecWarnings pointing at the line.

- an intermediate that nothing reads (no later equation, not the output);
- an implicit parameter (used, never declared) whose name is one edit away from a defined value,
  state or input: `gg` where `g` is defined is probably a typo for `g`, which would otherwise
  silently become a new parameter. Two one-letter names are always one edit apart, so a pair
  of them is not reported. Declaring the parameter (`param gg[H]`) says it is meant.
"""
from __future__ import annotations

from ..errors import SpecWarning
from .resolve import names_in
from .spec import Pos, Spec


def one_edit_apart(a: str, b: str) -> bool:
    """One insertion, deletion or substitution turns a into b."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i + (len(a) == len(b)):] == b[i + 1:]


def lint(spec: Spec) -> list[SpecWarning]:
    def warning(msg: str, pos: Pos) -> SpecWarning:
        return SpecWarning(msg, file=spec.source.file, line=pos.line, col=pos.col,
                           source_line=spec.source.line_text(pos.line))

    found = []
    read = {name.name for eq in spec.equations for name in names_in(eq.expr)
            if not name.primed}
    for eq in spec.equations:
        if not eq.primed and eq.target not in read and eq.target != spec.output_name:
            found.append(warning(f"'{eq.target}' is computed but nothing reads it (no later "
                                 f"equation, and it is not the output)", eq.pos))
    defined = [*spec.intermediates, *spec.states, *spec.inputs]
    for param, pos in spec.inferred_params.items():
        near = [n for n in defined if one_edit_apart(param, n) and max(len(param), len(n)) > 1]
        if near:
            options = " or ".join(f"'{n}'" for n in near)
            found.append(warning(f"'{param}' is not defined, so it becomes a new parameter; did "
                                 f"you mean {options}? (declare it with 'param' if it is "
                                 f"meant)", pos))
    return sorted(found, key=lambda w: (w.line, w.col))

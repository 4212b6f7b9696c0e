"""Backends, by target name. Each runs a cell's graph over a sequence."""
from . import reference

TARGETS = {"reference": reference}


def get(target: str):
    if not isinstance(target, str) or target not in TARGETS:
        known = ", ".join(repr(t) for t in TARGETS)
        raise ValueError(f"unknown target {target!r}; available targets: {known}")
    return TARGETS[target]

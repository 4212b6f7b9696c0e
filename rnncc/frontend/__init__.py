"""Front end: spec text -> checked Spec (parse the lines, then resolve the names)."""
from __future__ import annotations

from .parse import parse
from .resolve import resolve
from .source import Source, decode, read_source
from .spec import Spec


def parse_spec(source: Source) -> Spec:
    return resolve(parse(source))


__all__ = ["parse_spec", "Source", "decode", "read_source", "Spec"]

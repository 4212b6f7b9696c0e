"""The background process of ahead.py: compiles one generated function into the disk cache.

    main()   with {"spec": ..., "dtype": ..., "direction": ..., "function": ...} on stdin
             (`python -m rnncc.backends.cpu.compile_worker` runs it too)

It builds the cell from the spec's text as the parent did (the same generated module, the same
cache file), and compiles the function for the types every call of it passes
(Compiled.argument_types); Numba writes the machine code to its disk cache, where the parent's
call finds it.
"""
from __future__ import annotations

import json
import sys


def main() -> None:
    job = json.loads(sys.stdin.read())
    from .. import get
    from ...runtime.precompile import cell_in_another_process
    from .runtime import compile_past_damage
    cell = cell_in_another_process(job["spec"])
    compiled = get("cpu").compiled(cell, job["dtype"])
    fn = getattr(compiled.module, job["function"])
    compile_past_damage(fn, compiled.argument_types(job["direction"]))


if __name__ == "__main__":
    main()

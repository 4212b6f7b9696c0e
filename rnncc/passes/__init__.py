"""The optimizer: one visible list of passes, each a function Graph -> Graph in a file of its own.

    fold      constant folding                  (fold_constants.py)
    simplify  algebraic identities              (simplify.py)
    cse       common subexpressions             (cse.py)
    dce       dead code                         (dce.py)
    stack     shared products stacked           (stack_products.py)
    cleanup   cse and dce again, for the stacked graph
    hoist     each node's phase: parameters only, before / in / after the time loop (hoist.py)
    fuse      each phase's GEMMs and fused kernels, in order                  (fuse.py)

The same pipeline runs on the forward and on the backward step graph. The last two change no
node: they record decisions (graph.phase, graph.stage) that rnncc/plan/lower.py writes down as a
Plan.
"""
from __future__ import annotations

from ..graph import Graph, verify
from ..graph.schedule import verify_schedule
from .cse import cse
from .dce import dce
from .fold_constants import fold_constants
from .fuse import fuse
from .hoist import hoist
from .simplify import simplify
from .stack_products import stack_products


def cleanup(graph: Graph) -> Graph:
    return dce(cse(graph))


PIPELINE = [
    ("fold", fold_constants),
    ("simplify", simplify),
    ("cse", cse),
    ("dce", dce),
    ("stack", stack_products),
    ("cleanup", cleanup),
    ("hoist", hoist),
    ("fuse", fuse),
]
PASS_NAMES = [name for name, _ in PIPELINE]


def optimize(graph: Graph, until: str | None = None) -> Graph:
    """Run the pipeline (up to and including pass `until`), verifying after every pass (and the
    scheduling decisions after hoist and fuse: a pass bug fails here, not in generated code)."""
    if until is not None and until not in PASS_NAMES:
        raise ValueError(f"unknown pass {until!r}; the passes are {', '.join(PASS_NAMES)}")
    for name, run in PIPELINE:
        graph = verify(run(graph))
        if name in ("hoist", "fuse"):
            verify_schedule(graph, stages=name == "fuse")
        if name == until:
            break
    return graph


__all__ = ["PIPELINE", "PASS_NAMES", "optimize", "cleanup", "cse", "dce", "fold_constants",
           "fuse", "hoist", "simplify", "stack_products"]

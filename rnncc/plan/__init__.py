"""Planning: the optimized step graphs of a cell become a Plan (plan.py) that backends execute.

    forward graph --differentiate--> backward graph       (autodiff: what forward must save)
    forward graph + saved results --optimize (passes, up to hoist, fuse)--> --lower--> GraphPlan
    backward graph                --optimize (passes, up to hoist, fuse)--> --lower--> GraphPlan
"""
from __future__ import annotations

from ..graph import Graph, verify
from ..passes import optimize
from ..passes.rewrite import Draft
from .lower import lower
from .plan import Plan


def with_saved(forward: Graph, backward: Graph) -> Graph:
    """The forward graph for training: it also returns the values backward reads."""
    draft = Draft(forward)
    draft.results["saved"] = dict(backward.saved)  # labels -> forward node ids
    return verify(draft.finish())


def make_plan(forward: Graph, backward: Graph) -> Plan:
    return Plan(forward.name, lower(optimize(with_saved(forward, backward))),
                lower(optimize(backward)))


__all__ = ["Plan", "make_plan", "with_saved", "lower"]

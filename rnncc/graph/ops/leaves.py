"""Leaves of the step graph: the step's inputs, the previous states, parameters and constants.

Their values are bound by whoever evaluates the graph; their shapes are declared on the node.
"""
from .base import register

for _leaf in ("input", "state", "param", "const"):
    register(_leaf, "leaf", 0, None)(None)

"""Weight drop (DropConnect on the recurrent matrices: Wan et al. 2013, as AWD-LSTM applies it):
every matrix parameter that multiplies a state is multiplied by a mask drawn once per call,
Bernoulli(1 - p) / (1 - p) in training, off in eval.

The mask is constant over the call's steps and rows, so W * M is a parameter-only value: the
optimizer would compute it once before the loop (its hoist pass), and a layer does just that,
running the call with W * M in place of W (rnncc/runtime/layer.py). The gradient of the loss
with respect to W is then that with respect to W * M, times M (the mask's derivative), which
the layer applies after BPTT. This file says which matrices it masks.
"""
from __future__ import annotations

from ..graph import Graph
from .recurrent_dropout import PRODUCTS, _states_in


def recurrent_matrices(graph: Graph) -> list:
    """Matrix parameters some product multiplies with a value that reads a state (U in U @ h,
    and in U @ (r * h)), in the order of graph.params."""
    found = set()
    for nid in graph.order:
        node = graph.node(nid)
        if node.op in PRODUCTS and graph.node(node.args[0]).op == "param" \
                and _states_in(graph, node.args[1]):
            found.add(node.args[0])
    return [p for p, n in graph.params.items() if n in found]

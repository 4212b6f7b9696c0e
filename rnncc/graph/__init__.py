"""The step graph: ops, the graph store, the builder from a Spec, verification and printing."""
from .build import build
from .graph import Graph, Node
from .printing import FORMATS
from .verify import GraphError, verify

__all__ = ["build", "Graph", "Node", "FORMATS", "GraphError", "verify"]

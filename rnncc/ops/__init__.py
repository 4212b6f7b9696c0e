"""All ops, one module per family. Importing this package fills REGISTRY."""
from . import elementwise, leaves, linalg, reduce, stacking  # noqa: F401  (registration)
from .base import REGISTRY, OpDef, ShapeError, Stacked, dim_size, show_shape

SPEC_FUNCTIONS = {op.spec_name: op for op in REGISTRY.values() if op.spec_name}

__all__ = ["REGISTRY", "OpDef", "ShapeError", "SPEC_FUNCTIONS", "Stacked", "dim_size", "show_shape"]

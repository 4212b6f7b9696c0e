from .cell import Cell, compile, load, shipped  # noqa: A004
from .layer import RNN

__all__ = ["Cell", "RNN", "compile", "load", "shipped"]

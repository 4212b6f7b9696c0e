from .cell import Cell, compile, load, shipped  # noqa: A004

__all__ = ["Cell", "compile", "load", "shipped"]

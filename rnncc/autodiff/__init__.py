"""Reverse-mode autodiff: the backward step graph is derived from the forward step graph."""
from .reverse import differentiate

__all__ = ["differentiate"]

"""The CPU backend: Numba code generated from the Plan (in progress; see fastmath.py)."""

"""The CPU backend: Numba code generated from the Plan (fastmath.py: vectorizable elementary
functions; codegen.py: Plan -> source; runtime.py: compiling with a disk cache, calling)."""

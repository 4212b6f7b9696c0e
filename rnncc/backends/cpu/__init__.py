"""The CPU backend: Numba code generated from the Plan (fastmath.py: vectorizable elementary
functions; codegen.py: Plan -> source; runtime.py: compiling through the disk cache
(../disk_cache.py), calling; threads.py: whether the kernels use Numba's threads)."""

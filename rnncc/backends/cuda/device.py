"""The cuda target's view of the machine: is there a GPU (or Numba's CUDA simulator), which of
the caller's arrays live on it, and how results go back in the caller's kind of array.

Nothing here imports numba.cuda before the cuda target is used: the other targets never need it.
"""
from __future__ import annotations

import numpy as np

_INSTALL = ("install it with `pip install 'rnncc[cuda]'` (numba-cuda with the CUDA 13 "
            "toolkit's libraries)")


class CudaUnavailableError(RuntimeError):
    """target="cuda" was asked for where neither a GPU nor Numba's CUDA simulator is present."""


def simulator() -> bool:
    """Does numba.cuda run in its simulator (NUMBA_ENABLE_CUDASIM=1 when Numba was loaded)?"""
    from numba import config  # what Numba read, not the environment now: it reads it once
    return bool(getattr(config, "ENABLE_CUDASIM", False))


def cuda():
    """numba.cuda, once it is known to have a GPU or the simulator to run on."""
    try:
        import numba_cuda as _package  # noqa: F401  (numba's own numba.cuda is older)
        from numba import cuda as numba_cuda
    except ImportError as exc:
        raise CudaUnavailableError(f"target 'cuda' needs the numba-cuda package; {_INSTALL} "
                                   f"({exc})") from None
    if not numba_cuda.is_available():
        raise CudaUnavailableError(
            "target 'cuda' found no usable NVIDIA GPU (no CUDA driver, or no device). Run on a "
            "machine with one, or set NUMBA_ENABLE_CUDASIM=1 before Numba is imported to run "
            "the same kernels in Numba's CUDA simulator (slow: for tests at small sizes).")
    return numba_cuda


def is_device_array(value) -> bool:
    """An array that lives on the GPU: a Numba device array (or the simulator's), or any object
    exposing the CUDA array interface (CuPy arrays, PyTorch CUDA tensors)."""
    if isinstance(value, np.ndarray):
        return False
    if getattr(value, "__cuda_ndarray__", False):
        return True
    try:
        return hasattr(value, "__cuda_array_interface__")
    except Exception:  # a property that raises for host objects (a CPU tensor)
        return False


def as_device(value):
    """The caller's device array as a Numba device array viewing the same memory (no copy)."""
    if getattr(value, "__cuda_ndarray__", False):
        return value
    return cuda().as_cuda_array(value)


def like(template, device_array):
    """`device_array` (a Numba device array) as the kind of array `template` is: a CuPy array
    or a PyTorch CUDA tensor sharing its memory, else the Numba device array itself."""
    package = type(template).__module__.split(".")[0]
    if package == "torch":
        import torch
        return torch.as_tensor(device_array, device=template.device)
    if package == "cupy":
        import cupy
        return cupy.asarray(device_array)
    return device_array

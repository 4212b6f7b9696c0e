"""Small device-side copies the cuda runtime needs around a generated kernel: zeroing new
buffers, copying a strided device array into a buffer of its own, and zeroing the rows past each
sequence's length. Hand-written (they know nothing of cells), compiled by numba.cuda on first
use for each dtype and layout."""
from __future__ import annotations

import functools
import math

import numpy as np

from numba import cuda, float64  # imported only once device.cuda() found numba-cuda

THREADS = 128


@cuda.jit
def _zero(flat):
    for i in range(cuda.grid(1), flat.shape[0], cuda.gridsize(1)):
        flat[i] = 0


@cuda.jit
def _copy_1d(dst, src):
    for i in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[i] = src[i]


@cuda.jit
def _copy_2d(dst, src):
    n = dst.shape[1]
    for e in range(cuda.grid(1), dst.shape[0] * n, cuda.gridsize(1)):
        r = e // n
        dst[r, e - r * n] = src[r, e - r * n]


@cuda.jit
def _copy_rows(dst, src, lengths, ragged):
    """dst[t, b, :] = src[t, b, :], zero where t >= lengths[b] (if ragged)."""
    B = dst.shape[1]
    W = dst.shape[2]
    for e in range(cuda.grid(1), dst.shape[0] * B * W, cuda.gridsize(1)):
        tb = e // W
        j = e - tb * W
        t = tb // B
        b = tb - t * B
        if ragged and t >= lengths[b]:
            dst[t, b, j] = 0
        else:
            dst[t, b, j] = src[t, b, j]


@cuda.jit
def _scan_starts(starts, a, b, first, chunks, reverse):
    """The scan's chunk starts (plan/scan.py): for each row r and column j of `first` ([B, W],
    the call's carried value), starts[k * B + r, j] for chunk k in the order the loop runs
    them (reverse: the last first), each the previous one's a * s + b, in float64."""
    B = first.shape[0]
    W = first.shape[1]
    for e in range(cuda.grid(1), B * W, cuda.gridsize(1)):
        r = e // W
        j = e - r * W
        s = float64(first[r, j])
        for n in range(chunks):
            k = chunks - 1 - n if reverse else n
            row = k * B + r
            starts[row, j] = s
            s = float64(a[row, j]) * s + float64(b[row, j])


def _launch(kernel, size: int, *args) -> None:
    if size:
        kernel[min(math.ceil(size / THREADS), 1024), THREADS](*args)


@functools.cache
def _no_lengths():
    """The lengths an unmasked copy passes (and never reads)."""
    return cuda.device_array(1, dtype=np.int64)


def zero_fill(array) -> None:
    """Zero a C-contiguous device array."""
    if array.size:
        _launch(_zero, array.size, array.reshape(array.size))


def zeros(shape, dtype):
    """A new device array of zeros."""
    array = cuda.device_array(shape, dtype=dtype)
    zero_fill(array)
    return array


def copy(src, dtype):
    """A new C-contiguous device array equal to device array `src` (any strides, 1 to 3 axes)."""
    dst = cuda.device_array(src.shape, dtype=dtype)
    if src.ndim == 1:
        _launch(_copy_1d, dst.size, dst, src)
    elif src.ndim == 2:
        _launch(_copy_2d, dst.size, dst, src)
    elif src.ndim == 3:
        _launch(_copy_rows, dst.size, dst, src, _no_lengths(), False)
    else:
        raise ValueError(f"a device array of {src.ndim} axes")
    return dst


def copy_rows(src, lengths_device, ragged: bool, dtype):
    """A new [T, B, W] device array equal to `src`, zero past each row's length if ragged."""
    dst = cuda.device_array(src.shape, dtype=dtype)
    _launch(_copy_rows, dst.size, dst, src, lengths_device, ragged)
    return dst


def scan_starts(a, b, first, chunks: int, reverse: bool, dtype):
    """A new [chunks * B, W] device array of each chunk's start (_scan_starts)."""
    starts = cuda.device_array((chunks * first.shape[0], first.shape[1]), dtype=dtype)
    _launch(_scan_starts, first.size, starts, a, b, first, chunks, reverse)
    return starts


def fill(shape, value: float, dtype):
    """A new device array of `value`."""
    return cuda.to_device(np.full(shape, value, dtype=dtype))


def copy_into(dst, src) -> None:
    """dst[...] = src, two device arrays of one shape (2 axes)."""
    _launch(_copy_2d, dst.size, dst, src)

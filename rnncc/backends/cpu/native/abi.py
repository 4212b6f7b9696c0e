"""Where CPython and NumPy keep what compiled code reads from the arguments it is called with.

A call passes its arrays as one Python tuple, and the compiled entry reads each array's data
pointer and shape from the objects themselves, as any C extension does through NumPy's C API
(PyArray_DATA and PyArray_DIMS are reads of these fields): what costs a call nothing, where
asking each array for its pointer from Python (`a.ctypes.data`) cost about 1 us per array, 20 us
a call of an LSTM's backward. The offsets are found on this process's objects, not assumed:
`offsets()` locates each field by its value on probe objects and checks it on others.
"""
from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import NamedTuple

import numpy as np


class Offsets(NamedTuple):
    tuple_items: int    # bytes from a tuple to its first item pointer
    array_data: int     # bytes from an ndarray to its data pointer
    array_dims: int     # bytes from an ndarray to its pointer to the shape (npy_intp[nd])


def _words(obj, count: int) -> list[int]:
    return list((ctypes.c_uint64 * count).from_address(id(obj)))


@lru_cache(maxsize=None)
def offsets() -> Offsets:
    """The offsets of this process's CPython and NumPy, found on probe objects and checked on
    others; an error where they cannot be found (compiled code could not read its arguments)."""
    probe = np.zeros((3, 5, 7), np.float32)
    words = _words(probe, 16)
    data = words.index(probe.ctypes.data) * 8
    # the shape and the strides come in one allocation, the strides right after the shape:
    # found by that without reading through any word, then read to check
    dims = next((8 * k for k in range(data // 8 + 1, len(words) - 1)
                 if words[k] and words[k + 1] - words[k] == 8 * probe.ndim), None)
    if dims is None or list((ctypes.c_int64 * 3).from_address(words[dims // 8])) != [3, 5, 7]:
        raise RuntimeError("cannot locate an ndarray's shape in this process's objects")
    items = tuple.__basicsize__
    found = Offsets(items, data, dims)
    # checked on other objects: a tuple's first item, another array's pointer and shape
    other = np.ones((2, 9), np.float64)[1:]
    pair = (other, probe)
    if (_words(pair, items // 8 + 1)[items // 8] != id(other)
            or _words(other, data // 8 + 1)[data // 8] != other.ctypes.data
            or list((ctypes.c_int64 * 2).from_address(_words(other, dims // 8 + 1)[dims // 8]))
            != [1, 9]):
        raise RuntimeError("cannot locate an ndarray's data and shape in this process's "
                           "objects")
    return found

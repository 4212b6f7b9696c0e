"""Compile the cuda target's generated kernels to PTX for a real GPU (sm_90), with no GPU here.

The simulator runs the kernels as Python, so it accepts code that numba.cuda would refuse; this
types and compiles every kernel the way a GPU run would (NVVM from numba-cuda's CUDA toolkit
wheels), without a driver. numba-cuda asks the current device for its compute capability when
it compiles a device function; there is none here, so that one question is answered with sm_90.

    python tests/backends/cuda_ptx.py float32 lstm gru ...   (prints one line per kernel)

Must run in a process where the simulator is off (NUMBA_ENABLE_CUDASIM unset or 0).
"""
import sys
from types import SimpleNamespace

import numba.cuda.dispatcher as dispatcher
import numpy as np
from numba import cuda, types

import rnncc
from rnncc.backends.disk_cache import load
from rnncc.backends.cuda.codegen import generate
from rnncc.plan.layout import ArgKind

CC = (9, 0)  # H100


def argument_types(cell, plan, layout, dtype) -> tuple:
    """The numba types the runtime's arrays have (runtime.Compiled._arrays): the layout's
    arguments, each as many dimensions as its shape for a call has."""
    float_type = types.float32 if dtype == np.float32 else types.float64
    args = [types.int64, types.int64, types.Array(types.int64, 1, "C")]
    args += [types.int64] * (4 if plan.lanes else 0)   # lanes, call_part, chunks, chunk_steps
    # (CudaPrinter.flags)
    args += [types.int64] * len(cell.dims)
    sizes = {d: 3 for d in cell.dims}
    for argument in layout.arguments:
        ndim = 2 if argument.kind == ArgKind.ROWS else len(argument.shape(plan, sizes, 2, 2))
        args.append(types.Array(float_type, ndim, "C"))
    return tuple(args)


def transfer_kernels(float_type) -> None:
    """The runtime's own small kernels (transfer.py), for the layouts it launches them with."""
    from rnncc.backends.cuda import transfer

    def array(ndim, layout="C"):
        return types.Array(float_type, ndim, layout)
    lengths = types.Array(types.int64, 1, "C")
    for kernel, args in ((transfer._zero, (array(1),)),
                         (transfer._copy_1d, (array(1), array(1, "A"))),
                         (transfer._copy_2d, (array(2), array(2, "A"))),
                         (transfer._copy_rows, (array(3), array(3, "A"), lengths,
                                                types.boolean)),
                         (transfer._scan_starts, (array(2), array(2), array(2), array(2),
                                                  types.int64, types.boolean))):
        ptx, _ = cuda.compile_ptx(kernel.py_func, args, cc=CC)
        assert ".entry" in ptx
        print(f"transfer {kernel.py_func.__name__} {float_type}: {len(ptx)} bytes of PTX")


def main(dtype_name: str, names: list[str]) -> None:
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=CC)
    dtype = np.dtype(dtype_name)
    transfer_kernels(types.float32 if dtype == np.float32 else types.float64)
    for name in names:
        cell = rnncc.load(name)
        plans = cell.compiled_plans()
        source, layouts = generate(plans, dtype, cell.dims, simulator=False)
        module = load(source)
        for function, layout in layouts.items():
            args = argument_types(cell, plans[function], layout, dtype)
            ptx, _ = cuda.compile_ptx(getattr(module, function).py_func, args, cc=CC)
            assert ".entry" in ptx
            print(f"{name} {function} {dtype_name}: {len(ptx)} bytes of PTX")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

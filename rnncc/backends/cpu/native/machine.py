"""LLVM IR -> machine code -> a function Python calls: llvmlite's binding to LLVM, no Numba.

One target machine for the host CPU (its name and features, as Numba picks them), one MCJIT
engine per process that every compiled object is loaded into, and SciPy's BLAS bound by name
(blas.py). Optimization is LLVM's -O3 pipeline with loop and SLP vectorization, as Numba runs it
on its functions. The object code is what the disk cache keeps: loading it is a link, not a
compile.
"""
from __future__ import annotations

import ctypes
import os
import threading
from functools import lru_cache

import llvmlite.binding as llvm

from . import blas, gemm

_LOCK = threading.Lock()   # LLVM's engine is not safe to add to from two threads at once


def packed_enabled() -> bool:
    """Whether products of matrices run on rnncc's packed GEMM (gemm.py; default) or on
    BLAS's gemm (RNNCC_PACKED_GEMM=0: for comparisons; part of every compiled function's
    cache key)."""
    return os.environ.get("RNNCC_PACKED_GEMM", "1") != "0"


@lru_cache(maxsize=None)
def _initialized() -> bool:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return True


@lru_cache(maxsize=None)
def target_machine() -> llvm.TargetMachine:
    _initialized()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=host_features(), opt=3,
                                        reloc="static", codemodel="jitdefault", jit=True)


@lru_cache(maxsize=None)
def host_features() -> str:
    _initialized()
    return tuned_features(llvm.get_host_cpu_features().flatten())


def tuned_features(features: str) -> str:
    """LLVM's features for a CPU, with its loops vectorized as wide as its registers: LLVM
    tunes Intel's AVX-512 CPUs (Skylake-X to Sapphire Rapids) to vectorize 256 bits wide
    (`prefer-256-bit`: older ones clocked down under 512-bit instructions), so a gate kernel
    there ran in ymm registers at half the width rnncc's GEMM uses; AMD's (Zen 4, 5) already
    vectorize 512 bits wide."""
    if "+avx512f" in features.split(","):
        return features + ",-prefer-256-bit"
    return features


@lru_cache(maxsize=None)
def host() -> str:
    """What machine code is compiled for: a cached object is reused only on the same."""
    return f"{llvm.get_process_triple()} {llvm.get_host_cpu_name()} {host_features()}"


@lru_cache(maxsize=None)
def _engine() -> llvm.ExecutionEngine:
    tm = target_machine()
    for name, address in blas.addresses().items():
        llvm.add_symbol(name, address)
    return llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)


def blocking(dtype):
    """gemm.py's micro-kernel shape for `dtype` on this machine."""
    return gemm.blocking(dtype, host_features())


def triple_and_layout() -> tuple[str, str]:
    return llvm.get_process_triple(), str(target_machine().target_data)


def optimize(ir_text: str, unroll: bool = True, machine=None) -> llvm.ModuleRef:
    """Parse and optimize a module (-O3 with loop and SLP vectorization; `unroll` False keeps
    loops as written: gemm.py's micro-kernels, whose unrolled loop spills registers), for
    the host or another target `machine` (tests: the code another CPU would get)."""
    _initialized()
    module = llvm.parse_assembly(ir_text)
    module.verify()
    options = llvm.create_pipeline_tuning_options(speed_level=3)
    options.loop_vectorization = True
    options.slp_vectorization = True
    options.loop_unrolling = unroll
    builder = llvm.create_pass_builder(machine or target_machine(), options)
    builder.getModulePassManager().run(module, builder)
    return module


def object_code(module: llvm.ModuleRef) -> bytes:
    return target_machine().emit_object(module)


def load(object_bytes: bytes, symbols: dict) -> dict:
    """Link an object file into the process: {symbol: a ctypes function}, `symbols` giving each
    one's number of int64 arguments after the tuple of arrays (lower.Lowering.function's entry;
    calls release the GIL, as Numba's nogil functions do; the caller holds the tuple). What
    the code calls by name must be bound first (BLAS here, gemm.py's library by
    function.library())."""
    with _LOCK:
        engine = _engine()
        engine.add_object_file(llvm.ObjectFileRef.from_data(object_bytes))
        engine.finalize_object()
        found = {}
        for name, ints in symbols.items():
            address = engine.get_function_address(name)
            if not address:
                raise RuntimeError(f"compiled object has no function {name}")
            prototype = ctypes.CFUNCTYPE(None, ctypes.py_object, *[ctypes.c_int64] * ints)
            found[name] = prototype(address)
        return found


def load_library(object_bytes: bytes, names: list) -> dict:
    """Link an object file of functions that compiled code calls by name: {name: address},
    each name bound in the engine for the objects loaded after it."""
    with _LOCK:
        engine = _engine()
        engine.add_object_file(llvm.ObjectFileRef.from_data(object_bytes))
        engine.finalize_object()
        found = {}
        for name in names:
            address = engine.get_function_address(name)
            if not address:
                raise RuntimeError(f"compiled library has no function {name}")
            llvm.add_symbol(name, address)
            found[name] = address
        return found

"""The hardware floor of a call: the machine's measured FMA peak, the FLOPs of the products a
call must do, and those products alone in numpy (the BLAS floor).

    fma_probe(threads)       a function that runs `threads` threads of independent vector FMAs
                             (as many accumulators as the CPU has vector registers for, the widest
                             vectors rnncc's GEMM uses here), with .facts["flops"]: the FLOPs of
                             one call; its time gives the peak in GF/s
    call_products(layer, T, B, backward)
                             (rows, inner, columns, times) of every matrix product a call of an
                             rnncc layer runs (its Plans at these sizes: before the loop, in each
                             step, after it); product_flops: 2 x their multiply-adds
    blas_floor(products, dtype)
                             a function that runs those products with numpy, nothing else

A call's FLOP limit is product_flops / peak: no implementation of the cell can do its products
in less (it ignores the kernels' arithmetic, which is not FMAs, and memory). "x of the limit"
is then honest on any CPU, where "x of the BLAS floor" depends on how good the BLAS is.

Imports numpy and llvmlite only (the floor's timing process has nothing else); call_products
takes an rnncc layer, in rnncc's process.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

ITERATIONS = 4_000_000


def _probe_function(dtype):
    """A native function fma(n, out): n iterations of one FMA into each accumulator (llvmlite
    alone: the probe does not depend on rnncc's compiler)."""
    import llvmlite.binding as llvm
    from llvmlite import ir
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    features = llvm.get_host_cpu_features().flatten()
    flags = set(features.split(","))
    vector_bytes, registers = (64, 24) if "+avx512f" in flags else \
        (32, 12) if "+avx" in flags else (16, 12)
    lanes = vector_bytes // np.dtype(dtype).itemsize
    real = ir.FloatType() if np.dtype(dtype) == np.float32 else ir.DoubleType()
    vec = ir.VectorType(real, lanes)
    i64 = ir.IntType(64)
    module = ir.Module(name="peak")
    module.triple = llvm.get_process_triple()
    suffix = "f32" if np.dtype(dtype) == np.float32 else "f64"
    fma = ir.Function(module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.v{lanes}{suffix}")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64, real.as_pointer()]),
                     f"peak_{suffix}")
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    accs = [b.phi(vec) for _ in range(registers)]
    scale = ir.Constant(vec, [1.0 + 2.0 ** -20] * lanes)
    step = ir.Constant(vec, [2.0 ** -30] * lanes)
    new = [b.call(fma, [a, scale, step]) for a in accs]
    for a, n in zip(accs, new):
        a.add_incoming(ir.Constant(vec, [0.0] * lanes), entry)
        a.add_incoming(n, loop)
    i1 = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(i1, loop)
    b.cbranch(b.icmp_signed("<", i1, fn.args[0]), loop, done)
    b.position_at_end(done)
    total = new[0]
    for n in new[1:]:   # every accumulator used: none is optimized away
        total = b.fadd(total, n)
    b.store(b.extract_element(total, ir.Constant(ir.IntType(32), 0)), fn.args[1])
    b.ret_void()
    target = llvm.Target.from_triple(module.triple)
    machine = target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=features,
                                           opt=2, jit=True)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(module)), machine)
    engine.finalize_object()
    _engines.append(engine)   # (its code lives as long as the engine)
    address = engine.get_function_address(fn.name)
    return (ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(address),
            2 * registers * lanes)


_engines: list = []


def fma_probe(threads: int, dtype=np.float32, iterations: int = ITERATIONS):
    """A call that keeps `threads` cores' FMA units busy; .facts["flops"]: its FLOPs."""
    fn, flops_per_iteration = _probe_function(dtype)
    sink = np.zeros(threads, np.dtype(dtype))

    def run():
        workers = [threading.Thread(target=fn, args=(iterations, sink[k:].ctypes.data))
                   for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    run.facts = {"flops": threads * iterations * flops_per_iteration}
    return run


def call_products(layer, T: int, B: int, backward: bool) -> list:
    """(rows, inner, columns, times) of every matrix product one call of an rnncc layer runs:
    forward in eval mode, or a training forward and its backward."""
    from ..backends.cpu.runtime import products
    from ..ops.base import dim_size
    found = []
    for layers in layer._units:
        for unit in layers:
            plans, sizes = unit._compiled.plans, unit.sizes
            for direction in (("forward", "backward") if backward else ("infer",)):
                for step, phase, work, times in products(plans[direction], T, B, sizes):
                    (m, k), (_, n) = step.shape
                    n = dim_size(n, sizes)
                    if step.op == "outer_sum":   # [m, rows] x [rows, n]: a weight's gradient
                        m = dim_size(m, sizes)
                        found.append((m, work // (m * n), n, times))
                    else:                        # [rows, k] x [k, n]
                        k = dim_size(k, sizes)
                        found.append((work // (k * n), k, n, times))
    return found


def product_flops(layer, T: int, B: int, backward: bool) -> int:
    """The FLOPs of an rnncc layer's matrix products in one call (forward in eval mode, or a
    training forward and its backward), from its Plans at these sizes."""
    return sum(2 * m * k * n * times for m, k, n, times in call_products(layer, T, B, backward))


def blas_floor(products: list, dtype, threads: int | None = None):
    """A function that runs `products` ((rows, inner, columns, times) each) with numpy's BLAS
    (limited to `threads`), into preallocated outputs: the time of the products alone."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    operands = [(rng.standard_normal((m, k)).astype(dtype),
                 rng.standard_normal((k, n)).astype(dtype), np.empty((m, n), dtype), times)
                for m, k, n, times in products]
    if threads is not None:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=threads, user_api="blas")

    def run():
        for a, b, out, times in operands:
            for _ in range(times):
                np.dot(a, b, out=out)
    run.facts = {"flops": sum(2 * m * k * n * t for m, k, n, t in products)}
    return run


def peak_flops(threads: int, dtype, tries: int = 5) -> float:
    """The machine's FMA peak on `threads` threads, FLOP/s: the fastest of a few probe calls."""
    import time
    run = fma_probe(threads, dtype)
    run()
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return run.facts["flops"] / best

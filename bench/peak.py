"""The hardware floor: the machine's measured FMA peak, and the FLOPs a call must do.

    fma_probe(threads)   a function that runs `threads` threads of independent vector FMAs
                         (as many accumulators as the CPU has vector registers for, the widest
                         vectors rnncc's GEMM uses here), with .facts["flops"]: the FLOPs of one
                         call; its time gives the peak in GF/s
    product_flops(...)   2 x the multiply-adds of every matrix product a call of a cell runs
                         (its Plan: the products before the loop, in each step, after it)

A call's FLOP limit is product_flops / peak: no implementation of the cell can do its products
in less (it ignores the kernels' arithmetic, which is not FMAs, and memory). "x of the limit"
is then honest on any CPU, where "x of the BLAS floor" depends on how good the BLAS is.

    python bench/peak.py [--threads N]
"""
from __future__ import annotations

import argparse
import ctypes
import sys
import threading
import time

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


def product_flops(layer, T: int, B: int, backward: bool) -> int:
    """The FLOPs of an rnncc layer's matrix products in one call (forward in eval mode, or a
    training forward and its backward), from its Plans at these sizes."""
    from rnncc.backends.cpu.runtime import products
    sizes = {"I": layer.input_size, "H": layer.hidden_size}
    total = 0
    for layers in layer._units:
        for unit in layers:
            plans = unit._compiled.plans
            for direction in (("forward", "backward") if backward else ("infer",)):
                total += sum(2 * work * times
                             for _, _, work, times in products(plans[direction], T, B, sizes))
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="the measured FMA peak of this machine")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    for dtype in (np.float32, np.float64):
        run = fma_probe(args.threads, dtype)
        run()
        best = min(_timed(run) for _ in range(5))
        print(f"{np.dtype(dtype).name}: {run.facts['flops'] / best / 1e9:.0f} GF/s on "
              f"{args.threads} thread(s)")
    return 0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())

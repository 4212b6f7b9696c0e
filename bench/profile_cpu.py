"""Where a cpu-target forward spends its time: products against kernels.

Takes the function an eval-mode layer runs (a cell's `infer`, compiled by rnncc's compiler, on
a team of the available threads as the runtime runs it), compiles two variants of its source
beside it, one without the np.dot lines and one without the row loops (kernels and the carry),
and times the three on the same arrays, interleaved, medians; then reports the kernels' time per
element of the step's rows (T x B x H), their share of the products' time, and the vector
registers the compiled kernels use (zmm: 512-bit, ymm: 256-bit, xmm: 128-bit or scalar). The
variants compute nonsense; only their time means something.

    python bench/profile_cpu.py lstm 100,64,256
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time

import numpy as np

import rnncc
from rnncc.backends.cpu import team
from rnncc.backends.cpu.native import compile_functions, machine
from rnncc.backends.cpu.native.function import NativeFunction
from rnncc.backends.cpu.threads import SERIAL, available
from rnncc.plan.interpret import forward_leaves
from rnncc.runtime.arguments import check_forward


def without(lines: list[str], starts) -> str:
    """The source without the blocks whose first line (stripped) starts with one of `starts`."""
    out, skip = [], None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if skip is not None and indent > skip:
            continue
        skip = None
        if line.strip().startswith(starts):
            skip = indent
            continue
        out.append(line)
    return "\n".join(out)


def registers(source: str, name: str, params) -> dict:
    """How often the compiled function's assembly names each width of vector register."""
    import llvmlite.binding as llvm
    _, optimized = compile_functions(source, {"profiled": (name, params)})
    assembly = machine.target_machine().emit_assembly(llvm.parse_assembly(optimized))
    return {r: len(re.findall(rf"%{r}\d+", assembly)) for r in ("zmm", "ymm", "xmm")}


def profile(cell: str, T: int, B: int, H: int, rounds: int, threads: int) -> dict:
    layer = rnncc.RNN(cell, H, H).eval()
    x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
    unit = layer._units[0][0]   # the one layer, one direction
    compiled = unit._compiled
    source = compiled.source
    name = f"infer{SERIAL}" if f"def infer{SERIAL}(" in source else "infer"
    start = source.index(f"def {name}(")
    end = source.find("\n\n\n@njit", start)
    function = source[start:end if end > 0 else len(source)]
    lines = function.split("\n")
    variants = {"whole": function,
                "gemms only": without(lines, ("for b in prange(B)", "for b in range(B)",
                                              "for tb in prange(T * B)")),
                "kernels only": "\n".join(line for line in lines if "np.dot" not in line)}
    head = source[:source.index("@njit")]
    params = compiled.native_params("infer")
    functions = {}
    for k, (label, body) in enumerate(variants.items()):
        text = head + "\n\n" + body.replace(f"def {name}(", f"def variant{k}(")
        functions[label] = NativeFunction(text, f"variant{k}", params, np.float32, None, "")

    call = check_forward(layer.cell, unit.params, x, None, None)
    plan = compiled.plans["infer"]
    bound = compiled._masked(plan, forward_leaves(plan, call.params, call.xs, call.state), call)
    arrays = compiled._arrays("infer", bound, call.sizes, T, B, False, None,
                              unit._packed_now())
    flags = [0] * len(compiled.flags["infer"])
    fn_args = [T, B, np.full(B, T, np.int64), *flags, *(call.sizes[d] for d in layer.cell.dims),
               *(arrays[a.name] for a in compiled.arguments["infer"])]
    timed = {label: (lambda f=f: team.run(lambda: f(*fn_args), threads))
             for label, f in functions.items()}
    timed["layer(x)"] = lambda: layer(x)
    times = {label: [] for label in timed}
    for fn in timed.values():
        fn()
    for _ in range(rounds):
        for label, fn in timed.items():
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    ms = {label: 1e3 * statistics.median(v) for label, v in times.items()}
    elements = T * B * H
    return {"ms": ms, "kernel ns per element": 1e6 * ms["kernels only"] / elements,
            "kernels / products": ms["kernels only"] / ms["gemms only"],
            "registers": registers(source, name, params)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cell")
    parser.add_argument("config", help="T,B,I=H")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None,
                        help="the team's threads (default: all available)")
    args = parser.parse_args(argv)
    T, B, H = (int(v) for v in args.config.split(","))
    threads = args.threads or available()
    found = profile(args.cell, T, B, H, args.rounds, threads)
    print(f"{args.cell} T={T} B={B} I=H={H}, float32, {threads} threads, medians of "
          f"{args.rounds}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in found["ms"].items()))
    print(f"kernels: {found['kernel ns per element']:.2f} ns per element (T*B*H), "
          f"{100 * found['kernels / products']:.0f}% of the products' time; vector registers "
          f"in the compiled function: " + ", ".join(
              f"{k} {v}" for k, v in found["registers"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a cpu-target forward spends its time: GEMMs against kernels.

Takes the generated `infer` function of a cell (what an eval-mode layer runs; its serial twin
where the kernels get one thread, as the runtime chooses), compiles two
variants of its source beside it, one without the np.dot lines and one without the row loops
(kernels and the carry), and times the three on the same arrays, interleaved, medians. The
variants compute nonsense; only their time means something.

    python bench/profile_cpu.py lstm 100,64,256
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

import rnncc  # noqa: E402
from rnncc.backends.cpu.runtime import kernel_threads  # noqa: E402
from rnncc.backends.cpu.threads import SERIAL  # noqa: E402
from rnncc.plan.interpret import forward_leaves  # noqa: E402
from rnncc.runtime.arguments import check_forward  # noqa: E402


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cell")
    parser.add_argument("config", help="T,B,I=H")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    T, B, H = (int(v) for v in args.config.split(","))
    layer = rnncc.RNN(args.cell, H, H).eval()
    x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
    unit = layer._units[0][0]   # the one layer, one direction
    compiled = unit._compiled
    source = compiled.source
    call = check_forward(layer.cell, unit.params, x, None, None)
    import numba
    threads = kernel_threads(B, call.sizes, numba.get_num_threads(),
                             compiled._kernel_share("infer", call.sizes))
    # the function the layer runs: the parallel one, or its serial twin for one thread
    name = "infer" if threads > 1 or f"def infer{SERIAL}(" not in source else f"infer{SERIAL}"
    start = source.rindex("@njit", 0, source.index(f"def {name}("))
    end = source.find("\n\n\n@njit", start)
    function = source[start:end if end > 0 else len(source)]
    lines = function.split("\n")
    variants = {"whole": function,
                "gemms only": without(lines, ("for b in prange(B)", "for b in range(B)",
                                              "for tb in prange(T * B)")),
                "kernels only": "\n".join(line for line in lines if "np.dot" not in line)}
    text = source[:source.index("@njit")] + "\n\n".join(
        body.replace(f"def {name}(", f"def variant{k}(").replace("cache=True", "cache=False")
        for k, body in enumerate(variants.values()))
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(text)
    # the "gemms only" variant has no prange left: Numba warns that parallel=... did nothing
    from numba.core.errors import NumbaPerformanceWarning
    warnings.simplefilter("ignore", NumbaPerformanceWarning)
    spec = importlib.util.spec_from_file_location("rnncc_profile_variants", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    plan = compiled.plans["infer"]
    bound = compiled._masked(plan, forward_leaves(plan, call.params, call.xs, call.state), call)
    arrays = compiled._arrays("infer", bound, call.sizes, T, B, False, None,
                              unit._packed_now())
    fn_args = [T, B, np.full(B, T, np.int64), *(call.sizes[d] for d in layer.cell.dims),
               *(arrays[a.name] for a in compiled.arguments["infer"])]
    numba.set_num_threads(threads)
    functions = {name: getattr(module, f"variant{k}") for k, name in enumerate(variants)}
    functions["layer(x)"] = lambda *_: layer(x)
    times = {name: [] for name in functions}
    for fn in functions.values():
        fn(*fn_args)
    for _ in range(args.rounds):
        for name, fn in functions.items():
            t0 = time.perf_counter()
            fn(*fn_args)
            times[name].append(time.perf_counter() - t0)
    print(f"{args.cell} T={T} B={B} I=H={H}, float32, medians of {args.rounds}: " + ", ".join(
        f"{name} {1e3 * statistics.median(v):.1f} ms" for name, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

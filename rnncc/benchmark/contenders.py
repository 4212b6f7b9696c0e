"""What the benchmark processes time (processes.py serves BUILDERS): one call of each contender.

    rnncc   an rnncc.RNN layer of the spec on the cpu target: forward in eval mode (as torch's
            forward under no_grad: nothing kept for backward), or a training forward and its
            backward. facts: the FLOPs and the list of its matrix products (floor.py)
    torch   a torch module: torch.nn's RNN, GRU or LSTM for the shipped cells that PyTorch has,
            else the cell's eager module from a standalone file (interop/torch_source.py), or
            a factory function in a file (bench/torch_cells.py's hand-written modules), with
            torch's defaults (torch.set_num_threads(threads) only); script=True: the module
            through torch.jit.script
    floor   the products of the rnncc call alone, with numpy (floor.blas_floor)
    peak    the machine's FMA peak probe (floor.fma_probe)

Each builder imports only what its contender needs: the torch builder never imports rnncc (its
process has torch as a torch user has it), the floor builders import neither. Inputs are the
same random data in every process (seeded), float32 or float64.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

# shipped cell -> (torch.nn class, its options): PyTorch's own module for the cell
TORCH_NN = {"rnn": ("RNN", {}), "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
            "gru": ("GRU", {}), "lstm": ("LSTM", {})}


def data(T: int, B: int, I: int, out: int, dtype):
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(dtype)
    dy = np.random.default_rng(2).standard_normal((T, B, out)).astype(dtype)
    return x, dy


def _load(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # (torch.jit.script finds a class's source through it)
    spec.loader.exec_module(module)
    return module


def build_rnncc(spec, T, B, I, H, dims, dtype, backward, threads, out=None, **_):
    import numba
    from threadpoolctl import threadpool_limits

    import rnncc
    from rnncc.benchmark.floor import call_products
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=threads, user_api="blas")
    layer = rnncc.RNN(spec, I, H, dtype=np.dtype(dtype), seed=0, **dims)
    x, dy = data(T, B, I, layer.output_size, dtype)
    if backward:
        def run():
            layer(x)
            layer.backward(dy)
    else:
        layer.eval()

        def run():
            layer(x)
    products = call_products(layer, T, B, backward)
    run.facts = {"flops": sum(2 * m * k * n * t for m, k, n, t in products),
                 "products": products, "output_size": layer.output_size}
    return run


def torch_module(module: dict, I: int, H: int, dtype):
    """The module `module` describes: {"nn": class name, "options": {...}}, {"file": path of
    a module_file, "params": path of its .npz}, or {"factory": path, "function": name}
    (function(I, H, dtype) returns the module)."""
    import torch
    torch_dtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    if "nn" in module:
        return getattr(torch.nn, module["nn"])(I, H, **module.get("options", {})).to(torch_dtype)
    if "file" in module:
        params = dict(np.load(module["params"]))
        return _load(module["file"]).EagerCell(params, torch_dtype)
    return getattr(_load(module["factory"]), module["function"])(I, H, np.dtype(dtype))


def build_torch(T, B, I, H, dtype, backward, threads, module, out, script=False, **_):
    import torch
    torch.set_num_threads(threads)
    net = torch_module(module, I, H, dtype)
    if script:
        import warnings
        with warnings.catch_warnings():   # (deprecated in torch 2.13; still what users run)
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.script(net)
    x, dy = data(T, B, I, out, dtype)
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    if not backward:
        def run():
            with torch.no_grad():
                net(xt)
        return _warmed(run, script)
    xt.requires_grad_(True)

    def run():
        net.zero_grad(set_to_none=True)
        y, _ = net(xt)
        y.backward(dyt)
    return _warmed(run, script)


def _warmed(run, script: bool):
    """TorchScript's profiling executor optimizes a function on its first calls: those are
    made here, before any timing."""
    for _ in range(3 if script else 0):
        run()
    return run


def _floor():
    """floor.py, by path: importing rnncc.benchmark.floor would import rnncc."""
    return _load(str(Path(__file__).with_name("floor.py")))


def build_floor(products, dtype, threads, **_):
    return _floor().blas_floor([tuple(p) for p in products], dtype, threads)


def build_peak(dtype, threads, **_):
    return _floor().fma_probe(threads, dtype)


BUILDERS = {"rnncc": build_rnncc, "torch": build_torch, "floor": build_floor,
            "peak": build_peak}

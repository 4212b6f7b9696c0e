"""What several bench/ scripts share about one recurrent layer (bench/stacks.py, bench/train.py):
random data, the matrix products alone (the BLAS floor of a stack), thread limits, one timed
pass of an rnncc layer or a torch module. Imports numpy only: the scripts' torch processes
import it too, and never rnncc."""
from __future__ import annotations

import numpy as np

GATES = {"rnn": 1, "gru": 3, "lstm": 4, "lnlstm": 4}


def floor(name, T, B, I, H, dtype, backward, threads=None):
    """The matrix products the cell needs, alone (BLAS limited to `threads`)."""
    dtype = np.dtype(dtype)
    G = GATES[name] * H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T * B, I)).astype(dtype)
    W = rng.standard_normal((I, G)).astype(dtype)
    U = rng.standard_normal((H, G)).astype(dtype)
    h = rng.standard_normal((B, H)).astype(dtype)
    xw = np.empty((T * B, G), dtype)
    hu = np.empty((B, G), dtype)
    dg = rng.standard_normal((T * B, G)).astype(dtype)
    dh = np.empty((B, H), dtype)
    dx = np.empty((T * B, I), dtype)
    hs = rng.standard_normal((T * B, H)).astype(dtype)
    if threads is not None:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=threads, user_api="blas")

    def run():
        np.dot(x, W, out=xw)
        for _ in range(T):
            np.dot(h, U, out=hu)
        if backward:
            for t in range(T):
                np.dot(dg[t * B:(t + 1) * B], U.T, out=dh)
            np.dot(dg, W.T, out=dx)
            np.dot(dg.T, x)
            np.dot(dg.T, hs)
    return run


def data(T, B, I, out, dtype):
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(dtype)
    dy = np.random.default_rng(2).standard_normal((T, B, out)).astype(dtype)
    return x, dy


def limit_rnncc_threads(threads: int) -> None:
    """Numba's threads (the kernels) and BLAS's (the GEMMs) for an rnncc contender."""
    import numba
    from threadpoolctl import threadpool_limits
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=threads, user_api="blas")


def rnncc_pass(layer, x, dy, backward):
    """One timed call of an rnncc layer: forward in eval mode (as torch's forward under
    no_grad: nothing kept for backward), or forward in training mode and backward."""
    if not backward:
        layer.eval()
        return lambda: layer(x)

    def run():
        layer(x)
        layer.backward(dy)
    return run


def torch_pass(module, x, dy, backward):
    """The same for a torch module (forward under no_grad, or forward and backward)."""
    import torch
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    if not backward:
        def run():
            with torch.no_grad():
                module(xt)
        return run
    xt.requires_grad_(True)

    def run():
        module.zero_grad(set_to_none=True)
        out, _ = module(xt)
        out.backward(dyt)
    return run


def torch_module(name, I, H, dtype):
    import torch_cells
    if name in torch_cells.BUILTIN:
        return torch_cells.builtin_module(name, I, H, dtype)
    return torch_cells.lnlstm_module(I, H, dtype)

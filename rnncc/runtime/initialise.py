"""Drawing a parameter's first values: the spec's initialiser (`param b[H] = 1`) or, without one,
PyTorch's rule for nn.RNN/LSTM/GRU (uniform in (-k, k), k = 1/sqrt(hidden size)).

Values are drawn in float64 from the caller's generator, in the order of the cell's parameters,
then cast; a constant fill draws nothing from it.
"""
from __future__ import annotations

import math

import numpy as np


def pytorch_rule(shape: tuple, rng: np.random.Generator, k: float) -> np.ndarray:
    return rng.uniform(-k, k, size=shape)


def draw(init, shape: tuple, rng: np.random.Generator, k: float, blocks: int = 1) -> np.ndarray:
    """Values of shape `shape` for initialiser `init` (a frontend Initialiser, or None: PyTorch's
    rule with bound k). `blocks`: a matrix declared with stacked rows ([4H, I]) is that many
    matrices on top of each other, and a matrix initialiser (xavier, orthogonal) draws each
    block as a matrix of its own, in order, as one matrix per gate would be drawn (haste's
    layer-norm LSTM initialises its gates so; element-wise initialisers are the same either way)."""
    if blocks > 1 and init is not None and init.kind in ("xavier", "orthogonal"):
        rows, cols = shape
        return np.concatenate([draw(init, (rows // blocks, cols), rng, k)
                               for _ in range(blocks)], axis=0)
    if init is None:
        return pytorch_rule(shape, rng, k)
    kind, args = init.kind, init.args
    if kind == "constant":
        return np.full(shape, args[0])
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ones":
        return np.ones(shape)
    if kind == "uniform":
        return rng.uniform(args[0], args[1], size=shape)
    if kind == "normal":
        return rng.normal(args[0], args[1], size=shape)
    gain = args[0] if args else 1.0
    rows, cols = shape
    if kind == "xavier":
        # Glorot & Bengio 2010, as torch.nn.init.xavier_uniform_: fan_in = cols, fan_out = rows
        bound = gain * math.sqrt(6.0 / (rows + cols))
        return rng.uniform(-bound, bound, size=shape)
    if kind == "orthogonal":
        # Saxe et al. 2014, as torch.nn.init.orthogonal_: orthonormal rows or columns (whichever
        # are fewer), from the QR factorisation of a Gaussian matrix with R's signs folded in
        tall = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(tall)
        q *= np.sign(np.diag(r))
        return gain * (q if rows >= cols else q.T)
    raise ValueError(f"unknown initialiser {kind!r}")  # the parser admits only the above

"""How far back a cell's gradient reaches: |d(v . y_T) / d x_{T-k}| for k = 0 .. T-1.

The gradient of the last step's output (projected on a random unit vector v per sequence) with
respect to the input k steps before it, by rnncc's own BPTT (cell.backward on the cpu target, in
float64, dy zero but at the last step), its norm averaged over the batch's sequences and the
seeds. A cell whose gradient shrinks by a factor rho per step forgets at that rate: `decay`
fits rho to the curve (least squares on its logarithm, over the steps where it is above
float64's underflow).
"""
from __future__ import annotations

import numpy as np


def gradient_norms(cell, params: dict, x: np.ndarray, seed: int, target: str = "cpu"):
    """[T]: entry k is the mean over sequences of |d(v_b . y_T,b) / d x_{T-1-k},b|."""
    T, B = x.shape[:2]
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    rng = np.random.default_rng(seed)
    out = cell.forward(p, x[:1].astype(np.float64))[0].shape[-1]
    v = rng.standard_normal((B, out))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    dys = np.zeros((T, B, out))
    dys[-1] = v
    dx = cell.backward(p, x.astype(np.float64), dys, target=target)["x"]
    return np.linalg.norm(dx, axis=-1).mean(axis=1)[::-1].copy()


def decay(norms) -> float | None:
    """The factor per step a geometric decay fitted to the norms has (None: too few usable
    points)."""
    norms = np.asarray(norms, np.float64)
    k = np.flatnonzero(np.isfinite(norms) & (norms > 1e-280))
    k = k[k >= 1]   # (step 0 is the direct path through the last step's input)
    if k.size < 2:
        return None
    slope = np.polyfit(k, np.log(norms[k]), 1)[0]
    return float(np.exp(slope))

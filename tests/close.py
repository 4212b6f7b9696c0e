"""One comparison for every test that holds a computed array to an oracle's.

`np.testing.assert_allclose(got, want, rtol, atol=rtol * max|want|)` lets every entry smaller than
rtol * max|want| be anything: zeroed, sign-flipped. Here each entry is judged by its own relative
error, |got - want| / max(|got|, |want|, floor), as `rnncc.runtime.gradcheck.relative_error`
does; the floor (`floor` times the array's largest magnitude) only keeps entries that are pure
rounding noise (a sum that cancels to nearly zero) from failing on noise. A wrong entry is caught
when its magnitude exceeds rtol * floor * max|want|: 1e-7 of the largest entry in float32 at the
defaults, instead of 1e-4.
"""
from __future__ import annotations

import numpy as np

# The float32 paths (rnncc's own exp/tanh, FMA contraction, BLAS summation orders) against the
# float64 oracle on the same rounded inputs, measured on the shipped cells' gradients (T=5, B=3,
# ragged or not): worst relative error 5e-5 by this measure (lnlstm, gru), absolute errors up to
# 7e-7 of an array's largest entry. 1e-3 leaves room for the T=100 benchmark-size checks.
TOLERANCE = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-3}


def relative_errors(got, want, floor: float = 1e-3) -> np.ndarray:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = float(np.max(np.abs(want), initial=0.0))
    denom = np.maximum(np.maximum(np.abs(got), np.abs(want)), max(floor * scale, 1e-300))
    with np.errstate(invalid="ignore"):
        err = np.abs(got - want) / denom
    # equal infinities and NaN in the same places are equal; anything else non-finite is wrong
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    return np.where(same, 0.0, np.where(np.isfinite(err), err, np.inf))


def assert_close(got, want, rtol: float, what: str = "", floor: float = 1e-3) -> None:
    """Every entry of `got` within relative error `rtol` of `want` (see the module doc)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if got.size == 0:
        return
    err = relative_errors(got, want, floor)
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    assert err[worst] <= rtol, (
        f"{what}: {int(np.sum(err > rtol))} of {err.size} entries off by more than {rtol:g} "
        f"(relative); worst at {tuple(int(i) for i in worst)}: got {got[worst]!r}, expected "
        f"{want[worst]!r}, relative error {err[worst]:.3g}")

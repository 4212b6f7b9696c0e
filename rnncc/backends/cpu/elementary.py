"""Vectorizable elementary functions: their LLVM instructions, for generated kernels.

numpy's and Numba's exp/tanh/log compile to libm calls, and a call in a loop stops LLVM from
vectorizing it (measured on this machine class: a fused LSTM gate kernel at B=64, H=256 ran 1.35 ms
per step with libm calls against 0.07 ms once it vectorized). These are written with arithmetic,
comparisons (compiled to selects), floor/sqrt (instructions) and bit casts only, so loops over
them vectorize.

    exp     2^k * e^r, k = round(x / ln 2), r = x - k ln 2 in two parts (Cody-Waite), e^r by its
            Taylor polynomial (degree 7 for float32, 13 for float64: truncation below half an ulp),
            2^k built from exponent bits in two halves so that subnormal results come out right
    expm1   the Taylor polynomial directly where |x| < ln(2)/2 (no cancellation), else exp - 1
    log     x = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m-1)/(m+1),
            |s| <= 0.1716, by its odd series (to s^9 / s^21)
    log1p   log(1 + u) * u / ((1 + u) - 1), which cancels the rounding of 1 + u
    sigmoid r = 1 / (1 + e) for x >= 0 and e * r below, e = exp(-|x|): never overflows
    tanh    -expm1(-2|x|) / (expm1(-2|x|) + 2) with x's sign: accurate near 0, saturates to +-1
    softplus max(x, 0) + log1p(exp(-|x|))

NaN in gives NaN out; +-inf and huge finite inputs saturate (sigmoid to 0/1, tanh to +-1) or
overflow exactly where the true value does (exp).

Worst error measured on a dense sweep against numpy in extended precision, in ulps of the
correctly rounded result (tests/backends/test_fastmath.py holds them to these bounds + margin):

              exp  expm1  log  log1p  sigmoid  tanh  softplus
    float32   0.9   3.0   1.8   3.2     2.0    2.7     3.0
    float64   0.8   3.1   1.9   3.2     2.1    2.9     3.5

Each function here emits its LLVM instructions in place (llvmlite's IR builder), in the caller's
loop, where LLVM vectorizes them with the loop: rnncc's compiler (native/lower.py) calls them
directly, and fastmath.py wraps them as Numba intrinsics for the functions Numba compiles.
The instructions carry LLVM's `contract` flag: a multiply and an add may fuse into one FMA
instruction (one rounding instead of two, so never less accurate; nothing else of IEEE
arithmetic is relaxed: no reassociation, NaN and infinities as usual). It halves the
instructions of every polynomial here (an LSTM gate kernel: 20% faster, measured); the error
bounds above are measured with it. Both compilers give the kernels' own arithmetic the same
contraction, and nothing more, except a kernel's sum over a row's columns (mean, sum), whose
order is left to LLVM so that it vectorizes (fastmath.row_sum, native/lower.py's row_sum).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

LN2 = math.log(2.0)
_CONTRACT = ("contract",)


def _taylor(n):
    return [1.0 / math.factorial(k) for k in range(n, -1, -1)]  # Horner order


@dataclass(frozen=True)
class _Format:
    """A float format's LLVM types and the constants its functions use."""
    dtype: np.dtype
    float: ir.Type
    int: ir.IntType
    mantissa_bits: int
    bias: int
    exp_series: tuple        # e^r's Taylor coefficients, Horner order
    exp_range: tuple         # exp's argument clamped to it: below it 0, above it inf
    log2e: float             # 1 / ln 2
    ln2_hi: float            # ln 2 in two parts (Cody-Waite): k * hi exact for the k used
    ln2_lo: float
    expm1_small: float       # below it (|x| < ln(2)/2) expm1 is its series, no cancellation
    tiny: float              # smallest normal: log scales subnormals up by 2^tiny_shift
    tiny_shift: int
    sqrt2: float
    log_series: tuple        # odd series of atanh (1/(2k+1), from the highest k), Horner order

    def const(self, value) -> ir.Constant:
        return ir.Constant(self.float, float(value))

    def integer(self, value) -> ir.Constant:
        return ir.Constant(self.int, int(value))


_F32 = _Format(
    np.dtype(np.float32), ir.FloatType(), ir.IntType(32), 23, 127,
    tuple(float(np.float32(c)) for c in _taylor(7)), (-104.0, 89.0), float(np.float32(1 / LN2)),
    0.693359375,                                   # exact in float32, few bits
    float(np.float32(LN2 - 0.693359375)), float(np.float32(0.34657359)),
    float(np.float32(1.1754944e-38)), 25, float(np.float32(1.41421356)),
    tuple(float(np.float32(1 / k)) for k in (9, 7, 5, 3)))
_F64 = _Format(
    np.dtype(np.float64), ir.DoubleType(), ir.IntType(64), 52, 1023,
    tuple(_taylor(13)), (-746.0, 710.0), 1 / LN2,
    6.93147180369123816490e-01, 1.90821492927058770002e-10,   # fdlibm's split
    0.34657359027997264, 2.2250738585072014e-308, 54, 1.4142135623730951,
    tuple(1 / k for k in (21, 19, 17, 15, 13, 11, 9, 7, 5, 3)))


# -- the functions' instructions ------------------------------------------------------------------
# Each takes the builder, the format and the argument's LLVM value, and returns the result's.

def _add(b, x, y):
    return b.fadd(x, y, flags=_CONTRACT)


def _sub(b, x, y):
    return b.fsub(x, y, flags=_CONTRACT)


def _mul(b, x, y):
    return b.fmul(x, y, flags=_CONTRACT)


def _div(b, x, y):
    return b.fdiv(x, y, flags=_CONTRACT)


def _horner(b, f, coefficients, x):
    p = f.const(coefficients[0])
    for c in coefficients[1:]:
        p = _add(b, _mul(b, p, x), f.const(c))
    return p


def _fabs(b, x):
    return b.call(b.module.declare_intrinsic("llvm.fabs", [x.type]), [x])


def _is_nan(b, x):
    return b.fcmp_unordered("uno", x, x)


def _scale(b, f, p, k):
    """p * 2^k for an integer k within the exponent's range and a little below it, in two
    steps so that neither factor over- or underflows."""
    half = b.ashr(k, f.int(1))
    first = b.shl(b.add(half, f.integer(f.bias)), f.integer(f.mantissa_bits))
    second = b.shl(b.add(b.sub(k, half), f.integer(f.bias)), f.integer(f.mantissa_bits))
    return _mul(b, _mul(b, p, b.bitcast(first, f.float)), b.bitcast(second, f.float))


def _exp(b, f, x):
    low, high = (f.const(v) for v in f.exp_range)
    clamped = b.select(b.fcmp_ordered(">", low, x), low, x)          # max(x, low)
    clamped = b.select(b.fcmp_ordered("<", high, clamped), high, clamped)   # min(., high)
    floor = b.module.declare_intrinsic("llvm.floor", [f.float])
    k = b.call(floor, [_add(b, _mul(b, clamped, f.const(f.log2e)), f.const(0.5))])
    r = _sub(b, _sub(b, clamped, _mul(b, k, f.const(f.ln2_hi))), _mul(b, k, f.const(f.ln2_lo)))
    result = _scale(b, f, _horner(b, f, f.exp_series, r), b.fptosi(k, f.int))
    return b.select(_is_nan(b, x), x, result)


def _expm1(b, f, x):
    small = _mul(b, _horner(b, f, f.exp_series[:-1], x), x)
    near_zero = b.fcmp_ordered("<", _fabs(b, x), f.const(f.expm1_small))
    return b.select(near_zero, small, _sub(b, _exp(b, f, x), f.const(1.0)))


def _log(b, f, x):
    tiny = b.fcmp_ordered("<", x, f.const(f.tiny))
    scaled = b.select(tiny, _mul(b, x, f.const(2.0 ** f.tiny_shift)), x)
    bits = b.bitcast(scaled, f.int)
    exponent_mask = (1 << (f.int.width - 1 - f.mantissa_bits)) - 1
    e = b.and_(b.ashr(bits, f.integer(f.mantissa_bits)), f.integer(exponent_mask))
    e = b.sub(b.sub(e, f.integer(f.bias)), b.select(tiny, f.integer(f.tiny_shift), f.integer(0)))
    one_bits = f.bias << f.mantissa_bits
    m = b.bitcast(b.or_(b.and_(bits, f.integer((1 << f.mantissa_bits) - 1)),
                        f.integer(one_bits)), f.float)                     # in [1, 2)
    big = b.fcmp_ordered(">", m, f.const(f.sqrt2))
    m = b.select(big, _mul(b, m, f.const(0.5)), m)
    e = b.select(big, b.add(e, f.integer(1)), e)
    s = _div(b, _sub(b, m, f.const(1.0)), _add(b, m, f.const(1.0)))
    z = _mul(b, s, s)
    series = _add(b, _mul(b, _mul(b, _horner(b, f, f.log_series, z), z), s), s)
    ef = b.sitofp(e, f.float)
    y = _add(b, _add(b, _mul(b, f.const(2.0), series), _mul(b, ef, f.const(f.ln2_lo))),
             _mul(b, ef, f.const(f.ln2_hi)))
    zero_or_less = b.select(b.fcmp_ordered("==", x, f.const(0.0)), f.const(-math.inf),
                            f.const(math.nan))
    y = b.select(b.fcmp_ordered(">", x, f.const(0.0)), y, zero_or_less)
    keep = b.or_(_is_nan(b, x), b.fcmp_ordered("==", x, f.const(math.inf)))
    return b.select(keep, x, y)


def _log1p(b, f, u):
    w = _add(b, f.const(1.0), u)
    d = _sub(b, w, f.const(1.0))
    return b.select(b.fcmp_ordered("==", d, f.const(0.0)), u,
                    _mul(b, _log(b, f, w), _div(b, u, d)))


def _sigmoid(b, f, x):
    e = _exp(b, f, b.fneg(_fabs(b, x)))
    r = _div(b, f.const(1.0), _add(b, f.const(1.0), e))   # one division for both signs
    return b.select(b.fcmp_ordered(">=", x, f.const(0.0)), r, _mul(b, e, r))


def _tanh(b, f, x):
    em = _expm1(b, f, _mul(b, f.const(-2.0), _fabs(b, x)))
    t = _div(b, b.fneg(em), _add(b, em, f.const(2.0)))
    return b.select(b.fcmp_ordered(">=", x, f.const(0.0)), t, b.fneg(t))


def _softplus(b, f, x):
    positive = b.select(b.fcmp_ordered(">", f.const(0.0), x), f.const(0.0), x)   # max(x, 0)
    return _add(b, positive, _log1p(b, f, _exp(b, f, b.fneg(_fabs(b, x)))))


EMITTERS = {"exp": _exp, "expm1": _expm1, "log": _log, "log1p": _log1p, "sigmoid": _sigmoid,
            "tanh": _tanh, "softplus": _softplus}
FORMATS = {np.dtype(np.float32): _F32, np.dtype(np.float64): _F64}

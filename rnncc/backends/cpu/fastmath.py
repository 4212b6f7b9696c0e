"""Vectorizable elementary functions for generated Numba kernels.

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

Callers must compile with CALLER_OPTIONS: error_model="numpy" (Python's error model checks
every division for zero, and that check stops vectorization) and fastmath={"contract"}: LLVM may
fuse a multiply and an add into one FMA instruction (one rounding instead of two, so never less
accurate; nothing else of IEEE arithmetic is relaxed: no reassociation, NaN and infinities as
usual). It halves the instructions of every polynomial here (an LSTM gate kernel: 20% faster,
measured). The error bounds below are measured with these options.

row_sum (row_sum32/row_sum64), a kernel's sum over a row's columns (mean, sum), is the one
exception: a sum in whatever order vectorizes (see there).
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


def _bitcast(source, target, llvm_target):
    """An intrinsic reinterpreting a `source` value's bits as `target` (one LLVM bitcast,
    which vectorizes, unlike a round trip through memory)."""
    @intrinsic
    def cast(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_target)
        return target(source), codegen
    return cast


_f32_bits = _bitcast(types.float32, types.int32, ir.IntType(32))
_f32_from_bits = _bitcast(types.int32, types.float32, ir.FloatType())
_f64_bits = _bitcast(types.float64, types.int64, ir.IntType(64))
_f64_from_bits = _bitcast(types.int64, types.float64, ir.DoubleType())

CALLER_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}

# Each function is compiled once and inlined by LLVM (forceinline: LLVM's alwaysinline, kept when
# the function comes from Numba's cache), so a kernel's loop sees the polynomial and vectorizes.
# Not Numba's inline="always", which copies and re-types the callee's IR at every call site
# (nested: tanh -> expm1 -> exp): that was 0.9 s of an lstm's 3.6 s cold forward, measured;
# LLVM's own cost model, with neither, declined tanh32 in an lstm kernel and the loop ran
# 3x slower. Compiled with the callers' options, so the bounds above hold inlined or not.
_inline = dict(cache=True, forceinline=True, **CALLER_OPTIONS)
LN2 = math.log(2.0)


def _taylor(n):
    return [1.0 / math.factorial(k) for k in range(n, -1, -1)]  # Horner order


# -- float32 ------------------------------------------------------------------------------------

_E32 = tuple(np.float32(c) for c in _taylor(7))
_LN2_HI32 = np.float32(0.693359375)          # exact in float32, few bits: k * it is exact
_LN2_LO32 = np.float32(LN2 - 0.693359375)
_LOG2E32 = np.float32(1.0 / LN2)


@njit(**_inline)
def _scale32(p, k):
    """p * 2^k for integer k in [-252, 254], in two steps so neither factor over/underflows."""
    half = k >> 1
    return (p * _f32_from_bits(np.int32((half + 127) << 23))) * _f32_from_bits(
        np.int32((k - half + 127) << 23))


@njit(**_inline)
def exp32(x):
    xc = min(max(x, np.float32(-104.0)), np.float32(89.0))
    k = np.floor(xc * _LOG2E32 + np.float32(0.5))
    r = (xc - k * _LN2_HI32) - k * _LN2_LO32
    p = _E32[0]
    for c in _E32[1:]:
        p = p * r + c
    result = _scale32(p, np.int32(k))
    return result if x == x else x


@njit(**_inline)
def expm1_32(x):
    p = _E32[0]
    for c in _E32[1:-1]:
        p = p * x + c
    small = p * x
    return small if abs(x) < np.float32(0.34657359) else exp32(x) - np.float32(1.0)


@njit(**_inline)
def log32(x):
    tiny = x < np.float32(1.1754944e-38)
    xs = x * np.float32(33554432.0) if tiny else x  # 2^25: subnormals become normal
    bits = _f32_bits(xs)
    e = ((bits >> 23) & 0xFF) - 127 - (25 if tiny else 0)
    m = _f32_from_bits(np.int32((bits & 0x007FFFFF) | 0x3F800000))  # [1, 2)
    big = m > np.float32(1.41421356)
    m = m * np.float32(0.5) if big else m
    e = e + 1 if big else e
    s = (m - np.float32(1.0)) / (m + np.float32(1.0))
    z = s * s
    series = ((((z * np.float32(1 / 9) + np.float32(1 / 7)) * z + np.float32(1 / 5)) * z
               + np.float32(1 / 3)) * z) * s + s
    y = np.float32(2.0) * series + np.float32(e) * _LN2_LO32 + np.float32(e) * _LN2_HI32
    y = y if x > np.float32(0.0) else (np.float32(-np.inf) if x == np.float32(0.0)
                                       else np.float32(np.nan))
    return x if (x != x or x == np.float32(np.inf)) else y


@njit(**_inline)
def log1p32(u):
    w = np.float32(1.0) + u
    d = w - np.float32(1.0)
    return u if d == np.float32(0.0) else log32(w) * (u / d)


@njit(**_inline)
def sigmoid32(x):
    e = exp32(-abs(x))
    r = np.float32(1.0) / (np.float32(1.0) + e)  # one division for both signs
    return r if x >= np.float32(0.0) else e * r


@njit(**_inline)
def tanh32(x):
    em = expm1_32(np.float32(-2.0) * abs(x))
    t = -em / (em + np.float32(2.0))
    return t if x >= np.float32(0.0) else -t


@njit(**_inline)
def softplus32(x):
    return max(x, np.float32(0.0)) + log1p32(exp32(-abs(x)))


# -- float64 ------------------------------------------------------------------------------------

_E64 = tuple(_taylor(13))
_LN2_HI64 = 6.93147180369123816490e-01     # fdlibm's split: k * hi is exact for |k| < 2^20
_LN2_LO64 = 1.90821492927058770002e-10
_LOG2E64 = 1.0 / LN2


@njit(**_inline)
def _scale64(p, k):
    half = k >> 1
    return (p * _f64_from_bits(np.int64((half + 1023) << 52))) * _f64_from_bits(
        np.int64((k - half + 1023) << 52))


@njit(**_inline)
def exp64(x):
    xc = min(max(x, -746.0), 710.0)
    k = np.floor(xc * _LOG2E64 + 0.5)
    r = (xc - k * _LN2_HI64) - k * _LN2_LO64
    p = _E64[0]
    for c in _E64[1:]:
        p = p * r + c
    result = _scale64(p, np.int64(k))
    return result if x == x else x


@njit(**_inline)
def expm1_64(x):
    p = _E64[0]
    for c in _E64[1:-1]:
        p = p * x + c
    small = p * x
    return small if abs(x) < 0.34657359027997264 else exp64(x) - 1.0


@njit(**_inline)
def log64(x):
    tiny = x < 2.2250738585072014e-308
    xs = x * 18014398509481984.0 if tiny else x  # 2^54
    bits = _f64_bits(xs)
    e = ((bits >> 52) & 0x7FF) - 1023 - (54 if tiny else 0)
    m = _f64_from_bits(np.int64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000))
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    series = 1.0 / 21.0
    for k in (19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0):
        series = series * z + 1.0 / k
    series = series * z * s + s
    y = 2.0 * series + float(e) * _LN2_LO64 + float(e) * _LN2_HI64
    y = y if x > 0.0 else (-np.inf if x == 0.0 else np.nan)
    return x if (x != x or x == np.inf) else y


@njit(**_inline)
def log1p64(u):
    w = 1.0 + u
    d = w - 1.0
    return u if d == 0.0 else log64(w) * (u / d)


@njit(**_inline)
def sigmoid64(x):
    e = exp64(-abs(x))
    r = 1.0 / (1.0 + e)
    return r if x >= 0.0 else e * r


@njit(**_inline)
def tanh64(x):
    em = expm1_64(-2.0 * abs(x))
    t = -em / (em + 2.0)
    return t if x >= 0.0 else -t


@njit(**_inline)
def softplus64(x):
    return max(x, 0.0) + log1p64(exp64(-abs(x)))


# -- sums over a row ---------------------------------------------------------------------------
# A kernel's mean or sum over a row's columns. A sum's order is the one thing these kernels
# leave unspecified: with reassociation allowed here (and only here: LLVM inlines the call and
# keeps each instruction's own flags), the loop vectorizes into partial sums, 12x faster than
# the one-at-a-time chain of adds (a sum of 128 float32: 36 -> 3 ns, measured), and no less
# accurate (partial sums are a step towards pairwise summation). The order then depends on the
# vector width the CPU has.

_REASSOC = dict(cache=True, error_model="numpy", fastmath={"contract", "reassoc"})


@njit(**_REASSOC)
def row_sum(a, start, n):
    acc = a.dtype.type(0.0)   # in the array's dtype: a float32 row sums in float32
    for j in range(n):
        acc += a[start + j]
    return acc


# the names generated modules import, per dtype as for the functions above (one function:
# Numba compiles it once per array type)
row_sum32 = row_sum64 = row_sum


FUNCTIONS = {
    np.dtype(np.float32): {"exp": exp32, "expm1": expm1_32, "log": log32, "log1p": log1p32,
                           "sigmoid": sigmoid32, "tanh": tanh32, "softplus": softplus32},
    np.dtype(np.float64): {"exp": exp64, "expm1": expm1_64, "log": log64, "log1p": log1p64,
                           "sigmoid": sigmoid64, "tanh": tanh64, "softplus": softplus64},
}


def compiled() -> list:
    """Every Numba function here (the disk cache holds their machine code)."""
    from numba.core.registry import CPUDispatcher
    found = {id(f): f for f in globals().values() if isinstance(f, CPUDispatcher)}
    return list(found.values())   # (row_sum under three names: once)

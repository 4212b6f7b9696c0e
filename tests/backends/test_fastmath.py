"""rnncc's vectorizable elementary functions: worst error against an independent reference (numpy
in extended precision), special values, and that a loop over them does vectorize."""
import re

import numpy as np
import pytest
from numba import njit

from rnncc.backends.cpu import fastmath
from rnncc.backends.cpu.codegen import CALLER_OPTIONS

# worst error allowed, in units in the last place of the correctly rounded result, compiled as
# the kernels compile them (FMA contraction on; measured: float32 exp 0.9, tanh 2.7, log 1.8,
# sigmoid 2.0, softplus 3.0, expm1 3.0, log1p 3.2; float64 exp 0.8, tanh 2.9, log 1.9,
# sigmoid 2.1, softplus 3.5, expm1 3.1, log1p 3.2)
ULPS = {"exp": 2, "expm1": 5, "log": 2.5, "log1p": 4, "sigmoid": 3, "tanh": 4, "softplus": 4}

REFERENCE = {
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "softplus": lambda x: np.logaddexp(0, x),
}
_LOOPS = {}


def loop(name, dtype):
    """A compiled elementwise loop over fastmath's `name` for `dtype` (compiled once)."""
    key = (name, np.dtype(dtype))
    if key not in _LOOPS:
        f = fastmath.FUNCTIONS[np.dtype(dtype)][name]

        @njit(**CALLER_OPTIONS)   # as the generated kernels compile them
        def apply(a, out):
            for i in range(a.size):
                out[i] = f(a[i])
        _LOOPS[key] = apply
    return _LOOPS[key]


def run(name, x):
    out = np.empty_like(x)
    loop(name, x.dtype)(x, out)
    return out


def sample(name, dtype):
    rng = np.random.default_rng(0)
    if name in ("log", "log1p"):
        top = 80 if dtype == np.float32 else 700
        x = np.exp(rng.uniform(-top, top, 100_000))
        x = np.concatenate([x, rng.uniform(0.5, 2, 20_000)])
        if name == "log1p":
            x = np.concatenate([x, -rng.uniform(0, 0.999, 20_000), rng.uniform(-1e-6, 1e-6, 5000)])
    else:
        x = np.concatenate([rng.uniform(-100, 100, 100_000), rng.uniform(-1, 1, 50_000),
                            rng.uniform(-1e-3, 1e-3, 10_000), rng.uniform(-1e-8, 1e-8, 1000)])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(ULPS))
def test_worst_error_in_ulps(name, dtype):
    x = sample(name, dtype)
    got = run(name, x)
    exact = REFERENCE[name](x.astype(np.longdouble))
    rounded = exact.astype(dtype)
    finite = np.isfinite(rounded) & (rounded != 0)
    assert np.array_equal(np.isinf(got), np.isinf(rounded))
    ulp = np.spacing(np.abs(rounded[finite])).astype(np.longdouble)
    worst = float(np.max(np.abs(got[finite].astype(np.longdouble) - exact[finite]) / ulp))
    assert worst <= ULPS[name], f"{name} {np.dtype(dtype)}: {worst:.2f} ulp"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_huge_inputs_saturate_and_nan_propagates(dtype):
    x = np.array([-np.inf, -1e30, -1e4, 1e4, 1e30, np.inf, np.nan], dtype=dtype)
    with np.errstate(all="ignore"):
        assert run("sigmoid", x)[:6].tolist() == [0, 0, 0, 1, 1, 1]
        assert run("tanh", x)[:6].tolist() == [-1, -1, -1, 1, 1, 1]
        assert run("exp", x)[:6].tolist() == [0, 0, 0, np.inf, np.inf, np.inf]
        softplus = run("softplus", x)
        assert softplus[:3].tolist() == [0, 0, 0] and softplus[3:6].tolist() == x[3:6].tolist()
        for name in ULPS:
            assert np.isnan(run(name, x[-1:]))[0], name
        logs = run("log", np.array([0, -1, np.inf, 1e-40 if dtype == np.float32 else 1e-310],
                                   dtype=dtype))
    assert logs[0] == -np.inf and np.isnan(logs[1]) and logs[2] == np.inf
    np.testing.assert_allclose(logs[3], np.log(np.longdouble(logs.dtype.type(
        1e-40 if dtype == np.float32 else 1e-310))), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(ULPS))
def test_a_loop_over_it_vectorizes(name, dtype):
    f = loop(name, dtype)
    x = np.ones(64, dtype)
    f(x, np.empty_like(x))
    llvm = "\n".join(f.inspect_llvm().values())
    scalar = "float" if dtype == np.float32 else "double"
    widths = {int(w) for w in re.findall(rf"<(\d+) x {scalar}>", llvm)}
    assert widths and max(widths) >= 2, f"no vector of {scalar} in the loop over {name}"


def _every_function_twice(dtype):
    """A loop like a fused kernel's: each function called at two places (an lstm's kernel
    calls tanh twice, sigmoid three times)."""
    fs = fastmath.FUNCTIONS[np.dtype(dtype)]
    exp, expm1, log, log1p = fs["exp"], fs["expm1"], fs["log"], fs["log1p"]
    sigmoid, tanh, softplus = fs["sigmoid"], fs["tanh"], fs["softplus"]

    @njit(**CALLER_OPTIONS)
    def kernel(a, out):
        for i in range(a.size):
            x = a[i]
            y = (exp(x) + expm1(x) + log(x) + log1p(x) + sigmoid(x) + tanh(x) + softplus(x))
            out[i] = y * (exp(y) + expm1(y) + log(y) + log1p(y) + sigmoid(y) + tanh(y)
                          + softplus(y))
    return kernel


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_a_loop_that_calls_every_function_twice_vectorizes_and_calls_nothing(dtype):
    """Each call emits its instructions in the loop (the functions are intrinsics): nothing
    is left to LLVM's inliner, whose cost model declined a function called at several places
    (tanh32, twice in an lstm's kernel, when it was a function of its own: the loop stayed
    scalar and ran 3x slower)."""
    kernel = _every_function_twice(dtype)
    x = np.full(64, 0.5, dtype)
    kernel(x, np.empty_like(x))
    llvm = "\n".join(kernel.inspect_llvm().values())
    called = {name for name in re.findall(r"call [^@\n]*@([\w.$]+)\(", llvm)
              if not name.startswith(("llvm.", "NRT_", "Py", "_ZN5tests"))}
    assert not called, f"calls left in the loop: {called}"
    scalar = "float" if dtype == np.float32 else "double"
    assert re.search(rf"<(\d+) x {scalar}>", llvm), f"no vector of {scalar} in the loop"


@njit(**CALLER_OPTIONS)   # as a generated kernel calls it
def _row_sum32(a, start, n, out):
    out[0] = fastmath.row_sum32(a, start, n)


@njit(**CALLER_OPTIONS)
def _row_sum64(a, start, n, out):
    out[1] = fastmath.row_sum64(a, start, n)


def _row_sums(a, start, n, out):
    (_row_sum32 if a.dtype == np.float32 else _row_sum64)(a, start, n, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_row_sum_is_a_sum_in_some_order(dtype):
    """A kernel's mean or sum: the stretch a[start:start+n], summed in an order of LLVM's
    choosing, is within the bound of any order of summation (n eps sum|a|) of the exact sum,
    and inf and NaN come through."""
    rng = np.random.default_rng(3)
    eps = np.finfo(dtype).eps
    k = 0 if dtype == np.float32 else 1
    out = np.zeros(2)
    for n in (0, 1, 7, 16, 17, 129, 1000):
        a = (rng.standard_normal(n + 5) * 10 ** rng.uniform(-3, 3, n + 5)).astype(dtype)
        _row_sums(a, 3, n, out)
        exact = np.sum(a[3:3 + n].astype(np.longdouble))
        bound = n * eps * np.sum(np.abs(a[3:3 + n].astype(np.longdouble)))
        assert abs(out[k] - exact) <= bound, (n, out[k], exact)
    a = np.array([1, np.inf, 2, np.nan], dtype)
    _row_sums(a, 0, 3, out)
    assert out[k] == np.inf
    _row_sums(a, 0, 4, out)
    assert np.isnan(out[k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_row_sum_vectorizes_inside_its_caller(dtype):
    """Called from a function compiled as the kernels are (no reassociation of its own), the
    sum still runs on vectors: the call's own flags survive LLVM's inlining."""
    _row_sums(np.ones(64, dtype), 0, 64, np.zeros(2))
    f = _row_sum32 if dtype == np.float32 else _row_sum64
    llvm = "\n".join(f.inspect_llvm().values())
    scalar = "float" if dtype == np.float32 else "double"
    assert re.search(rf"<(\d+) x {scalar}>", llvm), f"no vector of {scalar} in the sum"

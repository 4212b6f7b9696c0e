"""Each op's numpy evaluation against Python's math module, element by element (float64), and
the numerically careful ops at extreme inputs."""
import math
import warnings

import numpy as np
import pytest

from rnncc.graph.ops import REGISTRY, SPEC_FUNCTIONS
from rnncc.graph.ops.base import EvalContext, ShapeError, elementwise_shape

CTX = EvalContext({}, np.float64)


def _sigmoid(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def _softplus(v):
    return max(v, 0) + math.log1p(math.exp(-abs(v)))


UNARY = {
    "neg": lambda v: -v, "sigmoid": _sigmoid, "tanh": math.tanh, "relu": lambda v: max(v, 0.0),
    "exp": math.exp, "log": math.log, "sqrt": math.sqrt, "abs": abs, "softplus": _softplus,
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "max": max, "min": min,
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op, rng):
    x = rng.uniform(-6, 6, size=(3, 5))
    if op in ("log", "sqrt"):
        x = np.abs(x) + 0.1
    got = REGISTRY[op].evaluate([x], {}, CTX)
    want = np.vectorize(UNARY[op])(x)
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_broadcasts_a_scalar(op, rng):
    a = rng.uniform(-3, 3, size=(3, 5))
    b = rng.uniform(0.5, 3, size=(3, 1))  # a per-row scalar
    got = REGISTRY[op].evaluate([a, b], {}, CTX)
    want = np.vectorize(BINARY[op])(a, np.broadcast_to(b, a.shape))
    np.testing.assert_allclose(got, want, rtol=1e-15)


def test_pow_keeps_float32():
    x = np.array([[1.5, 2.0]], dtype=np.float32)
    got = REGISTRY["pow"].evaluate([x], {"exponent": 2.0}, EvalContext({}, np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[2.25, 4.0]])


def test_matmul_and_reductions(rng):
    a = rng.standard_normal((4, 3))
    v = rng.standard_normal((2, 3))
    np.testing.assert_allclose(REGISTRY["matmul"].evaluate([a, v], {}, CTX),
                               [[sum(a[i, k] * v[b, k] for k in range(3)) for i in range(4)]
                                for b in range(2)], rtol=1e-13)
    np.testing.assert_allclose(REGISTRY["mean"].evaluate([v], {}, CTX), v.mean(axis=1)[:, None])
    np.testing.assert_allclose(REGISTRY["sum"].evaluate([v], {}, CTX), v.sum(axis=1)[:, None])
    # a per-row scalar (even a 0-d constant) reduces to itself
    assert REGISTRY["sum"].evaluate([np.asarray(2.0)], {}, CTX).tolist() == [2.0]


def test_saturating_ops_do_not_overflow():
    x = np.array([-1e4, -800.0, 0.0, 800.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = REGISTRY["sigmoid"].evaluate([x], {}, CTX)
        sp = REGISTRY["softplus"].evaluate([x], {}, CTX)
        t = REGISTRY["tanh"].evaluate([x], {}, CTX)
    np.testing.assert_array_equal(s, [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(sp, [0.0, 0.0, math.log(2), 800.0, 1e4])
    np.testing.assert_array_equal(t, [-1.0, -1.0, 0.0, 1.0, 1.0])


def test_every_spec_function_has_an_op():
    from rnncc.frontend.language import FUNCTIONS
    assert set(SPEC_FUNCTIONS) == set(FUNCTIONS)
    for name, arity in FUNCTIONS.items():
        assert SPEC_FUNCTIONS[name].arity == arity


def test_elementwise_shape_rule():
    def strict(a, b):
        if a != b:
            raise ShapeError("mismatch")
        return a
    assert elementwise_shape([(), ("H",)], {}, strict) == ("H",)
    assert elementwise_shape([(), ()], {}, strict) == ()
    with pytest.raises(ShapeError):
        elementwise_shape([("H",), ("I",)], {}, strict)
    with pytest.raises(ShapeError, match="matrix"):
        elementwise_shape([("H", "I")], {}, strict)

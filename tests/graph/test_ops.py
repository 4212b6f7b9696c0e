"""Each op's numpy evaluation against Python's math module, element by element (float64), and
the numerically careful ops at extreme inputs."""
import math
import warnings

import numpy as np
import pytest

from rnncc.ops import REGISTRY, SPEC_FUNCTIONS
from rnncc.ops.base import EvalContext, ShapeError, elementwise_shape

CTX = EvalContext({}, np.float64)


def _sigmoid(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def _softplus(v):
    return max(v, 0) + math.log1p(math.exp(-abs(v)))


UNARY = {
    "neg": lambda v: -v, "sigmoid": _sigmoid, "tanh": math.tanh, "relu": lambda v: max(v, 0.0),
    "exp": math.exp, "log": math.log, "sqrt": math.sqrt, "abs": abs, "softplus": _softplus,
    "hardsigmoid": lambda v: min(max(v / 6 + 0.5, 0.0), 1.0),
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


def test_every_op_has_every_rule():
    """What the op table promises each op (rnncc/ops/base.py): the rules the front end, the
    builder, the evaluators, autodiff, the passes and both printers read from it."""
    from rnncc.frontend.language import CHUNK, FUNCTIONS
    assert FUNCTIONS == {**{name: op.arity for name, op in SPEC_FUNCTIONS.items()}, CHUNK: 2}
    for name, op in REGISTRY.items():
        assert op.name == name
        if op.kind == "leaf":
            assert op.evaluate is None and op.vjp is None and not op.scalar, name
            continue
        assert callable(op.shape) and callable(op.evaluate), name
        if op.arity != 0 and op.differentiable:
            assert callable(op.vjp), f"{name}: no derivative rule and not marked otherwise"
        # printed element by element exactly when it is elementwise (a broadcast is, per row)
        assert op.scalar == (op.kind in ("elementwise", "broadcast")), name
        assert op.gemm == (name in ("matmul", "matmul_t", "outer_sum")), name
        assert isinstance(op.commutative, bool) and (not op.commutative or op.arity == 2), name
        if op.spec_name:
            assert op.spec_name == name and op.kind in ("elementwise", "reduce", "stack"), name


class PythonMath:
    """A ScalarMath whose expressions Python evaluates: the rules' text, checked by value."""
    FUNCTIONS = {"sigmoid": _sigmoid, "softplus": _softplus, "tanh": math.tanh,
                 "exp": np.exp, "log": np.log, "sqrt": np.sqrt}  # IEEE's answers at 0, not errors

    def call(self, function, *args):
        return f"{function}({', '.join(args)})"

    def const(self, value):
        return repr(float(value))


def lowered(op, attrs, *values):
    """The op's scalar lowering rule, printed for arguments x0, x1, ... and run by Python on
    float64 scalars (IEEE arithmetic, as in the generated kernels: 1 / 0 is inf)."""
    names = [f"x{k}" for k in range(len(values))]
    text = REGISTRY[op].lower(names, attrs, PythonMath())
    scope = {**PythonMath.FUNCTIONS, "math": math, "ZERO": 0.0, "HALF": 0.5, "ONE": 1.0,
             **{n: np.float64(v) for n, v in zip(names, values)}}
    with np.errstate(all="ignore"):
        return float(eval(text, scope))  # noqa: S307  (text the op table printed)


SCALAR_ATTRS = {"pow": [{"exponent": p} for p in (2, 3, -2, 0.5, -0.5, 0, -1.5, 1.7)],
                "broadcast": [{"dim": 1}]}


@pytest.mark.parametrize("op", sorted(n for n, o in REGISTRY.items() if o.scalar))
def test_scalar_lowering_rules_compute_what_numpy_evaluation_computes(op, rng):
    """The one rule both printers print, against the op's numpy evaluation, at ordinary values,
    ties, zeros, the ends of hardsigmoid's ramp, and NaN (which every rule propagates)."""
    arity = REGISTRY[op].arity
    special = [0.0, 3.0, -3.0, 1.0, -1.0, float("nan")]
    points = [tuple(rng.uniform(0.2, 4, arity)) for _ in range(20)]
    points += [tuple(rng.uniform(-4, -0.2, arity)) for _ in range(20)]
    points += [(v,) * arity for v in special] + [(v,) + (1.0,) * (arity - 1) for v in special]
    for attrs in SCALAR_ATTRS.get(op, [{}]):
        for point in points:
            with np.errstate(all="ignore"):
                want = REGISTRY[op].evaluate([np.array([v]) for v in point], attrs, CTX)
            want = float(np.ravel(want)[0])
            got = lowered(op, attrs, *point)
            assert (math.isnan(got) and math.isnan(want)) or math.isclose(
                got, want, rel_tol=1e-14, abs_tol=1e-300), (op, attrs, point, got, want)


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

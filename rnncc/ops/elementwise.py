"""Elementwise ops: arithmetic, activations, max/min, numeric powers, and the masks their
derivatives use. Each op's numpy evaluation is followed by its derivative rule.

Subgradients at kinks follow PyTorch: relu'(0) = 0, abs'(0) = 0, and where max(a, b) or
min(a, b) has a == b the gradient is split evenly, half to each argument.
"""
from __future__ import annotations

import numpy as np

from .base import derivative, elementwise_shape, lowering, register

# -- arithmetic -----------------------------------------------------------------------------------


@register("add", "elementwise", 2, elementwise_shape, commutative=True)
def _add(args, attrs, ctx):
    return args[0] + args[1]


@derivative("add")
def _add_vjp(e, node, args, out, g):
    return [g, g]


@lowering("add")
def _add_scalar(a, attrs, m):
    return f"({a[0]} + {a[1]})"


@register("sub", "elementwise", 2, elementwise_shape)
def _sub(args, attrs, ctx):
    return args[0] - args[1]


@derivative("sub")
def _sub_vjp(e, node, args, out, g):
    return [g, e.neg(g)]


@lowering("sub")
def _sub_scalar(a, attrs, m):
    return f"({a[0]} - {a[1]})"


@register("mul", "elementwise", 2, elementwise_shape, commutative=True)
def _mul(args, attrs, ctx):
    return args[0] * args[1]


@derivative("mul")
def _mul_vjp(e, node, args, out, g):
    return [e.mul(g, args[1]()), e.mul(g, args[0]())]


@lowering("mul")
def _mul_scalar(a, attrs, m):
    return f"({a[0]} * {a[1]})"


@register("div", "elementwise", 2, elementwise_shape)
def _div(args, attrs, ctx):
    return args[0] / args[1]


@derivative("div")
def _div_vjp(e, node, args, out, g):
    b = args[1]()
    return [e.div(g, b), e.neg(e.div(e.mul(g, out()), b))]  # d(a/b)/db = -(a/b)/b


@lowering("div")
def _div_scalar(a, attrs, m):
    return f"({a[0]} / {a[1]})"


@register("neg", "elementwise", 1, elementwise_shape)
def _neg(args, attrs, ctx):
    return -args[0]


@derivative("neg")
def _neg_vjp(e, node, args, out, g):
    return [e.neg(g)]


@lowering("neg")
def _neg_scalar(a, attrs, m):
    return f"(-{a[0]})"


@register("pow", "elementwise", 1, elementwise_shape)
def _pow(args, attrs, ctx):
    # attrs["exponent"] is a Python float: numpy keeps the argument's dtype (NEP 50).
    return np.power(args[0], attrs["exponent"])


@derivative("pow")
def _pow_vjp(e, node, args, out, g):
    p = node.attrs["exponent"]
    if p == 1:
        return [g]
    x = args[0]()
    power = x if p == 2 else e.op("pow", x, exponent=p - 1)
    return [e.mul(g, e.mul(e.const(p), power))]


@lowering("pow")
def _pow_scalar(a, attrs, m):
    x, p = a[0], attrs["exponent"]
    if p == int(p) and 0 < abs(p) <= 8:  # repeated products: exact where x is
        product = " * ".join([x] * int(abs(p)))
        return f"({product})" if p > 0 else f"(ONE / ({product}))"
    if p == 0.5:
        return m.call("sqrt", x)
    if p == -0.5:
        return f"(ONE / {m.call('sqrt', x)})"
    if p == 0:
        return "ONE"
    return m.call("exp", f"{m.const(p)} * {m.call('log', x)}")


@register("max", "elementwise", 2, elementwise_shape, spec_name="max",
          commutative=True)
def _max(args, attrs, ctx):
    return np.maximum(args[0], args[1])


@derivative("max")
def _max_vjp(e, node, args, out, g):
    w = e.op("argmax_weight", args[0](), args[1]())
    return [e.mul(g, w), e.mul(g, e.sub(e.const(1.0), w))]


@lowering("max")
def _max_scalar(a, attrs, m):
    x, y = a  # NaN propagates, as in numpy and torch
    return f"({x} if ({x} > {y} or {x} != {x}) else {y})"


@register("min", "elementwise", 2, elementwise_shape, spec_name="min",
          commutative=True)
def _min(args, attrs, ctx):
    return np.minimum(args[0], args[1])


@derivative("min")
def _min_vjp(e, node, args, out, g):
    w = e.op("argmax_weight", args[1](), args[0]())  # 1 where a is the smaller
    return [e.mul(g, w), e.mul(g, e.sub(e.const(1.0), w))]


@lowering("min")
def _min_scalar(a, attrs, m):
    x, y = a
    return f"({x} if ({x} < {y} or {x} != {x}) else {y})"


# -- activations ----------------------------------------------------------------------------------


@register("sigmoid", "elementwise", 1, elementwise_shape, spec_name="sigmoid")
def _sigmoid(args, attrs, ctx):
    x = args[0]
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@derivative("sigmoid")
def _sigmoid_vjp(e, node, args, out, g):
    s = out()
    return [e.mul(g, e.mul(s, e.sub(e.const(1.0), s)))]


@lowering("sigmoid")
def _sigmoid_scalar(a, attrs, m):
    return m.call("sigmoid", a[0])


@register("tanh", "elementwise", 1, elementwise_shape, spec_name="tanh")
def _tanh(args, attrs, ctx):
    return np.tanh(args[0])


@derivative("tanh")
def _tanh_vjp(e, node, args, out, g):
    t = out()
    return [e.mul(g, e.sub(e.const(1.0), e.mul(t, t)))]


@lowering("tanh")
def _tanh_scalar(a, attrs, m):
    return m.call("tanh", a[0])


@register("relu", "elementwise", 1, elementwise_shape, spec_name="relu")
def _relu(args, attrs, ctx):
    return np.maximum(args[0], 0)


@derivative("relu")
def _relu_vjp(e, node, args, out, g):
    return [e.mul(g, e.op("step", out()))]  # relu(x) > 0 exactly where x > 0


@lowering("relu")
def _relu_scalar(a, attrs, m):
    x = a[0]
    return f"({x} if ({x} > ZERO or {x} != {x}) else ZERO)"


@register("exp", "elementwise", 1, elementwise_shape, spec_name="exp")
def _exp(args, attrs, ctx):
    return np.exp(args[0])


@derivative("exp")
def _exp_vjp(e, node, args, out, g):
    return [e.mul(g, out())]


@lowering("exp")
def _exp_scalar(a, attrs, m):
    return m.call("exp", a[0])


@register("log", "elementwise", 1, elementwise_shape, spec_name="log")
def _log(args, attrs, ctx):
    return np.log(args[0])


@derivative("log")
def _log_vjp(e, node, args, out, g):
    return [e.div(g, args[0]())]


@lowering("log")
def _log_scalar(a, attrs, m):
    return m.call("log", a[0])


@register("sqrt", "elementwise", 1, elementwise_shape, spec_name="sqrt")
def _sqrt(args, attrs, ctx):
    return np.sqrt(args[0])


@derivative("sqrt")
def _sqrt_vjp(e, node, args, out, g):
    return [e.div(e.mul(g, e.const(0.5)), out())]


@lowering("sqrt")
def _sqrt_scalar(a, attrs, m):
    return m.call("sqrt", a[0])


@register("abs", "elementwise", 1, elementwise_shape, spec_name="abs")
def _abs(args, attrs, ctx):
    return np.abs(args[0])


@derivative("abs")
def _abs_vjp(e, node, args, out, g):
    return [e.mul(g, e.op("sign", args[0]()))]


@lowering("abs")
def _abs_scalar(a, attrs, m):
    return f"abs({a[0]})"


@register("softplus", "elementwise", 1, elementwise_shape, spec_name="softplus")
def _softplus(args, attrs, ctx):
    return np.logaddexp(0, args[0])  # log(1 + exp(x)) without overflow


@derivative("softplus")
def _softplus_vjp(e, node, args, out, g):
    return [e.mul(g, e.op("sigmoid", args[0]()))]


@lowering("softplus")
def _softplus_scalar(a, attrs, m):
    return m.call("softplus", a[0])


@register("hardsigmoid", "elementwise", 1, elementwise_shape, spec_name="hardsigmoid")
def _hardsigmoid(args, attrs, ctx):
    """PyTorch's: 0 up to -3, 1 from 3, x / 6 + 1/2 between (a cheap, saturating sigmoid)."""
    return np.clip(args[0] / 6 + 0.5, 0, 1)


@derivative("hardsigmoid")
def _hardsigmoid_vjp(e, node, args, out, g):
    x = args[0]()  # slope 1/6 strictly inside (-3, 3), 0 outside and at the ends, as in PyTorch
    inside = e.mul(e.op("step", e.add(x, e.const(3.0))), e.op("step", e.sub(e.const(3.0), x)))
    return [e.mul(g, e.mul(inside, e.const(1 / 6)))]


@lowering("hardsigmoid")
def _hardsigmoid_scalar(a, attrs, m):
    y = f"({a[0]} / {m.const(6.0)} + HALF)"  # NaN fails both tests and stays NaN
    return f"(ZERO if {y} < ZERO else (ONE if {y} > ONE else {y}))"


# -- masks: piecewise-constant, so no gradient flows through them ---------------------------------


@register("step", "elementwise", 1, elementwise_shape, differentiable=False)
def _step(args, attrs, ctx):
    """1 where x > 0, else 0."""
    return (args[0] > 0).astype(ctx.dtype)


@lowering("step")
def _step_scalar(a, attrs, m):
    return f"(ONE if {a[0]} > ZERO else ZERO)"


@register("sign", "elementwise", 1, elementwise_shape, differentiable=False)
def _sign(args, attrs, ctx):
    return np.sign(args[0])


@lowering("sign")
def _sign_scalar(a, attrs, m):
    x = a[0]  # sign(NaN) is NaN
    return f"(ONE if {x} > ZERO else (-ONE if {x} < ZERO else {x} * ZERO))"


@register("argmax_weight", "elementwise", 2, elementwise_shape, differentiable=False)
def _argmax_weight(args, attrs, ctx):
    """1 where a > b, 1/2 where a == b, 0 where a < b: a's share of max(a, b)'s gradient."""
    a, b = args
    return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0)).astype(ctx.dtype)


@lowering("argmax_weight")
def _argmax_weight_scalar(a, attrs, m):
    x, y = a
    return f"(ONE if {x} > {y} else (HALF if {x} == {y} else ZERO))"

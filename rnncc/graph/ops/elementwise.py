"""Elementwise ops: arithmetic, activations, max/min, numeric powers, and the masks their
derivatives use. Each op's numpy evaluation is followed by its derivative rule.

Subgradients at kinks follow PyTorch: relu'(0) = 0, abs'(0) = 0, and where max(a, b) or
min(a, b) has a == b the gradient is split evenly, half to each argument.
"""
from __future__ import annotations

import numpy as np

from .base import derivative, elementwise_shape, register

# -- arithmetic -----------------------------------------------------------------------------------


@register("add", "elementwise", 2, elementwise_shape)
def _add(args, attrs, ctx):
    return args[0] + args[1]


@derivative("add")
def _add_vjp(e, node, args, out, g):
    return [g, g]


@register("sub", "elementwise", 2, elementwise_shape)
def _sub(args, attrs, ctx):
    return args[0] - args[1]


@derivative("sub")
def _sub_vjp(e, node, args, out, g):
    return [g, e.neg(g)]


@register("mul", "elementwise", 2, elementwise_shape)
def _mul(args, attrs, ctx):
    return args[0] * args[1]


@derivative("mul")
def _mul_vjp(e, node, args, out, g):
    return [e.mul(g, args[1]()), e.mul(g, args[0]())]


@register("div", "elementwise", 2, elementwise_shape)
def _div(args, attrs, ctx):
    return args[0] / args[1]


@derivative("div")
def _div_vjp(e, node, args, out, g):
    b = args[1]()
    return [e.div(g, b), e.neg(e.div(e.mul(g, out()), b))]  # d(a/b)/db = -(a/b)/b


@register("neg", "elementwise", 1, elementwise_shape)
def _neg(args, attrs, ctx):
    return -args[0]


@derivative("neg")
def _neg_vjp(e, node, args, out, g):
    return [e.neg(g)]


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


@register("max", "elementwise", 2, elementwise_shape, spec_name="max")
def _max(args, attrs, ctx):
    return np.maximum(args[0], args[1])


@derivative("max")
def _max_vjp(e, node, args, out, g):
    w = e.op("argmax_weight", args[0](), args[1]())
    return [e.mul(g, w), e.mul(g, e.sub(e.const(1.0), w))]


@register("min", "elementwise", 2, elementwise_shape, spec_name="min")
def _min(args, attrs, ctx):
    return np.minimum(args[0], args[1])


@derivative("min")
def _min_vjp(e, node, args, out, g):
    w = e.op("argmax_weight", args[1](), args[0]())  # 1 where a is the smaller
    return [e.mul(g, w), e.mul(g, e.sub(e.const(1.0), w))]


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


@register("tanh", "elementwise", 1, elementwise_shape, spec_name="tanh")
def _tanh(args, attrs, ctx):
    return np.tanh(args[0])


@derivative("tanh")
def _tanh_vjp(e, node, args, out, g):
    t = out()
    return [e.mul(g, e.sub(e.const(1.0), e.mul(t, t)))]


@register("relu", "elementwise", 1, elementwise_shape, spec_name="relu")
def _relu(args, attrs, ctx):
    return np.maximum(args[0], 0)


@derivative("relu")
def _relu_vjp(e, node, args, out, g):
    return [e.mul(g, e.op("step", out()))]  # relu(x) > 0 exactly where x > 0


@register("exp", "elementwise", 1, elementwise_shape, spec_name="exp")
def _exp(args, attrs, ctx):
    return np.exp(args[0])


@derivative("exp")
def _exp_vjp(e, node, args, out, g):
    return [e.mul(g, out())]


@register("log", "elementwise", 1, elementwise_shape, spec_name="log")
def _log(args, attrs, ctx):
    return np.log(args[0])


@derivative("log")
def _log_vjp(e, node, args, out, g):
    return [e.div(g, args[0]())]


@register("sqrt", "elementwise", 1, elementwise_shape, spec_name="sqrt")
def _sqrt(args, attrs, ctx):
    return np.sqrt(args[0])


@derivative("sqrt")
def _sqrt_vjp(e, node, args, out, g):
    return [e.div(e.mul(g, e.const(0.5)), out())]


@register("abs", "elementwise", 1, elementwise_shape, spec_name="abs")
def _abs(args, attrs, ctx):
    return np.abs(args[0])


@derivative("abs")
def _abs_vjp(e, node, args, out, g):
    return [e.mul(g, e.op("sign", args[0]()))]


@register("softplus", "elementwise", 1, elementwise_shape, spec_name="softplus")
def _softplus(args, attrs, ctx):
    return np.logaddexp(0, args[0])  # log(1 + exp(x)) without overflow


@derivative("softplus")
def _softplus_vjp(e, node, args, out, g):
    return [e.mul(g, e.op("sigmoid", args[0]()))]


# -- masks: piecewise-constant, so no gradient flows through them ---------------------------------


@register("step", "elementwise", 1, elementwise_shape)
def _step(args, attrs, ctx):
    """1 where x > 0, else 0."""
    return (args[0] > 0).astype(ctx.dtype)


@register("sign", "elementwise", 1, elementwise_shape)
def _sign(args, attrs, ctx):
    return np.sign(args[0])


@register("argmax_weight", "elementwise", 2, elementwise_shape)
def _argmax_weight(args, attrs, ctx):
    """1 where a > b, 1/2 where a == b, 0 where a < b: a's share of max(a, b)'s gradient."""
    a, b = args
    return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0)).astype(ctx.dtype)

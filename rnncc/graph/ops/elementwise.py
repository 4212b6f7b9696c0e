"""Elementwise ops: arithmetic, activations, max/min, integer-free powers.

Numerically careful versions where the naive formula overflows (sigmoid, softplus).
"""
from __future__ import annotations

import numpy as np

from .base import elementwise_shape, register

# -- arithmetic -----------------------------------------------------------------------------------


@register("add", "elementwise", 2, elementwise_shape)
def _add(args, attrs):
    return args[0] + args[1]


@register("sub", "elementwise", 2, elementwise_shape)
def _sub(args, attrs):
    return args[0] - args[1]


@register("mul", "elementwise", 2, elementwise_shape)
def _mul(args, attrs):
    return args[0] * args[1]


@register("div", "elementwise", 2, elementwise_shape)
def _div(args, attrs):
    return args[0] / args[1]


@register("neg", "elementwise", 1, elementwise_shape)
def _neg(args, attrs):
    return -args[0]


@register("pow", "elementwise", 1, elementwise_shape)
def _pow(args, attrs):
    # attrs["exponent"] is a Python float: numpy keeps the argument's dtype (NEP 50).
    return np.power(args[0], attrs["exponent"])


@register("max", "elementwise", 2, elementwise_shape, spec_name="max")
def _max(args, attrs):
    return np.maximum(args[0], args[1])


@register("min", "elementwise", 2, elementwise_shape, spec_name="min")
def _min(args, attrs):
    return np.minimum(args[0], args[1])


# -- activations ----------------------------------------------------------------------------------


@register("sigmoid", "elementwise", 1, elementwise_shape, spec_name="sigmoid")
def _sigmoid(args, attrs):
    x = args[0]
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@register("tanh", "elementwise", 1, elementwise_shape, spec_name="tanh")
def _tanh(args, attrs):
    return np.tanh(args[0])


@register("relu", "elementwise", 1, elementwise_shape, spec_name="relu")
def _relu(args, attrs):
    return np.maximum(args[0], 0)


@register("exp", "elementwise", 1, elementwise_shape, spec_name="exp")
def _exp(args, attrs):
    return np.exp(args[0])


@register("log", "elementwise", 1, elementwise_shape, spec_name="log")
def _log(args, attrs):
    return np.log(args[0])


@register("sqrt", "elementwise", 1, elementwise_shape, spec_name="sqrt")
def _sqrt(args, attrs):
    return np.sqrt(args[0])


@register("abs", "elementwise", 1, elementwise_shape, spec_name="abs")
def _abs(args, attrs):
    return np.abs(args[0])


@register("softplus", "elementwise", 1, elementwise_shape, spec_name="softplus")
def _softplus(args, attrs):
    return np.logaddexp(0, args[0])  # log(1 + exp(x)) without overflow

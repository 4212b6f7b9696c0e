"""Hypothesis strategies: random valid cell specs, each with an independent numpy oracle.

The generator writes spec text and, side by side, a numpy function for every equation, built from
its own formulas (not rnncc's op table). A test compiles the text with rnncc and compares what the
reference backend computes with what the oracle computes.

Expressions are generated top-down with the shape each position needs, so every spec is valid.
Shapes of undeclared parameters must be inferable: an expression is *anchored* when its dimension
is fixed by something other than an undeclared parameter (a leaf, a declared matrix); positions
whose dimension nothing else would fix (intermediates, reduction arguments, the vector of an
undeclared matrix) ask for an anchored expression.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st


def _sigmoid(v):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-v))


def _softplus(v):
    return np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))


# name -> (text template, numpy function); the templates keep every value finite
UNARY = {
    "sigmoid": ("sigmoid({})", _sigmoid),
    "tanh": ("tanh({})", np.tanh),
    "relu": ("relu({})", lambda v: np.maximum(v, 0)),
    "abs": ("abs({})", np.abs),
    "softplus": ("softplus({})", _softplus),
    "hardsigmoid": ("hardsigmoid({})", lambda v: np.clip(v / 6 + 0.5, 0, 1)),
    "exp": ("exp(tanh({}))", lambda v: np.exp(np.tanh(v))),
    "log": ("log(1 + abs({}))", lambda v: np.log(1 + np.abs(v))),
    "sqrt": ("sqrt(1 + abs({}))", lambda v: np.sqrt(1 + np.abs(v))),
    "neg": ("(-{})", lambda v: -v),
    "square": ("(tanh({}) ** 2)", lambda v: np.tanh(v) ** 2),
    "rsqrt": ("((1 + abs({})) ** -0.5)", lambda v: (1 + np.abs(v)) ** -0.5),
}
BINARY = {
    "+": ("({} + {})", lambda a, b: a + b),
    "-": ("({} - {})", lambda a, b: a - b),
    "*": ("({} * {})", lambda a, b: a * b),
    "/": ("({} / (1 + abs({})))", lambda a, b: a / (1 + np.abs(b))),
    "max": ("max({}, {})", np.maximum),
    "min": ("min({}, {})", np.minimum),
}
REDUCE = {
    "mean": lambda v: np.mean(v, axis=-1, keepdims=True),
    "sum": lambda v: np.sum(v, axis=-1, keepdims=True),
}


@dataclass
class GeneratedSpec:
    text: str
    inputs: dict           # name -> dim
    states: dict           # name -> dim
    sizes: dict            # dim -> size
    equations: list        # (env key, numpy function of (env, p))
    output_key: str        # env key of the output
    output_dim: str | None
    param_shapes: dict = field(default_factory=dict)  # name -> symbolic shape

    def run(self, p, xs, state, lengths=None):
        """The oracle: ys [T, B, d_out] and final states, with `lengths` as the API defines it."""
        T, B = next(iter(xs.values())).shape[:2]
        d_out = self.sizes[self.output_dim] if self.output_dim else 1
        ys = np.zeros((T, B, d_out))
        cur = {k: np.array(v, dtype=float) for k, v in state.items()}
        for t in range(T):
            env = {**{k: v[t] for k, v in xs.items()}, **cur}
            for key, fn in self.equations:
                env[key] = fn(env, p)
            new = {s: np.broadcast_to(env[s + "'"], cur[s].shape) for s in cur}
            y = np.broadcast_to(env[self.output_key], (B, d_out))
            alive = np.ones((B, 1), bool) if lengths is None else (t < lengths)[:, None]
            ys[t] = np.where(alive, y, 0)
            cur = {s: np.where(alive, new[s], cur[s]) for s in cur}
        return ys, cur


class _Generator:
    def __init__(self, draw):
        self.draw = draw
        self.params: dict[str, tuple] = {}
        self.declared: list[str] = []
        self.values: dict[str, str | None] = {}  # env key -> dim (None: a per-row scalar)

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{len(self.params)}"

    def leaves(self, dim):
        return [k for k, d in self.values.items() if d == dim]

    def vector_dims(self):
        return sorted({d for d in self.values.values() if d is not None})

    def expr(self, dim, anchor: bool, depth: int, force: str | None = None):
        """(text, numpy function) of an expression of dimension `dim` (None: a scalar); `force`
        picks the kind of its top node ("matmul", "reduce", "binary")."""
        draw = self.draw
        kinds = ["leaf"]
        if depth > 0:
            kinds += ["unary", "binary"]
            kinds += ["matmul"] if dim is not None else ["reduce"]
        kind = force or draw(st.sampled_from(kinds))
        if kind == "leaf":
            return self.leaf(dim, anchor)
        if kind == "unary":
            text, fn = UNARY[draw(st.sampled_from(sorted(UNARY)))]
            a_text, a_fn = self.expr(dim, anchor, depth - 1)
            return text.format(a_text), lambda env, p: fn(a_fn(env, p))
        if kind in ("binary", "maxmin"):
            ops = sorted(BINARY) if kind == "binary" else ["max", "min"]
            text, fn = BINARY[draw(st.sampled_from(ops))]
            # one operand carries the dimension (and the anchor), the other may be a scalar
            main = self.expr(dim, anchor, depth - 1)
            other_dim = dim if dim is None or draw(st.booleans()) else None
            other = self.expr(other_dim, False if other_dim is not None else True, depth - 1)
            left, right = (main, other) if draw(st.booleans()) else (other, main)
            return (text.format(left[0], right[0]),
                    lambda env, p: fn(left[1](env, p), right[1](env, p)))
        if kind == "matmul":
            source = draw(st.sampled_from(self.vector_dims()))
            declare = anchor or draw(st.booleans())
            name = self.fresh("W")
            self.params[name] = (dim, source)
            if declare:
                self.declared.append(name)
            v_text, v_fn = self.expr(source, not declare, depth - 1)
            return f"({name} @ {v_text})", lambda env, p: v_fn(env, p) @ p[name].T
        # reduce
        reducer = draw(st.sampled_from(sorted(REDUCE)))
        source = draw(st.sampled_from(self.vector_dims()))
        v_text, v_fn = self.expr(source, True, depth - 1)
        return f"{reducer}({v_text})", lambda env, p: REDUCE[reducer](v_fn(env, p))

    def leaf(self, dim, anchor: bool):
        draw = self.draw
        options = self.leaves(dim)
        if dim is None:
            options = options + ["number"]
        elif not anchor:
            options = options + ["param"]
        choice = draw(st.sampled_from(options))
        if choice == "number":
            value = draw(st.sampled_from([0.5, 1.0, 2.0, 1.5, 3.0]))
            return repr(value), lambda env, p: value
        if choice == "param":
            name = self.fresh("b")
            self.params[name] = (dim,)
            return name, lambda env, p: p[name]
        key = choice
        return key, lambda env, p: env[key]


@st.composite
def cell_specs(draw, max_depth: int = 3, rich: bool = False) -> GeneratedSpec:
    """A random valid spec. rich=True: two inputs and at least two states, each dimension
    of a distinct size (a transposition or a silent broadcast cannot hide behind equal sizes),
    an intermediate that is a matrix product, one that is a reduction, one that is a max or
    min, and every state update built on a matrix product."""
    gen = _Generator(draw)
    inputs = {"x": "I"}
    if rich or draw(st.booleans()):
        inputs["y"] = draw(st.sampled_from(["H", "J"]))
    states = {"h": "H"}
    extra = st.lists(st.sampled_from(["c", "m"]), unique=True, min_size=1 if rich else 0,
                     max_size=2)
    for name in draw(extra):
        states[name] = draw(st.sampled_from(["H", "K"]))
    gen.values.update(inputs)
    gen.values.update(states)

    lines = []
    equations = []
    intermediates = []

    def define(dim, text, fn):
        name = f"a{len(intermediates)}"
        lines.append(f"{name} = {text}")
        equations.append((name, fn))
        intermediates.append(name)
        gen.values[name] = dim

    if rich:
        depth = lambda: draw(st.integers(1, max(1, max_depth)))
        define(None, *gen.expr(None, True, depth(), force="reduce"))
        dim = draw(st.sampled_from(gen.vector_dims()))
        define(dim, *gen.expr(dim, True, depth(), force="matmul"))
        dim = draw(st.sampled_from(gen.vector_dims()))
        define(dim, *gen.expr(dim, True, depth(), force="maxmin"))
    for _ in range(draw(st.integers(0, 3))):
        dim = draw(st.sampled_from([None, *gen.vector_dims()]))
        define(dim, *gen.expr(dim, True, draw(st.integers(0, max_depth))))
    for s in draw(st.permutations(list(states))):
        depth = draw(st.integers(1 if rich else 0, max(1, max_depth) if rich else max_depth))
        text, fn = gen.expr(states[s], False, depth, force="matmul" if rich else None)
        if rich:  # and a recurrence: a matrix on the previous value of a state
            r = draw(st.sampled_from(list(states)))
            name = gen.fresh("U")
            gen.params[name] = (states[s], states[r])
            text = f"({text} + {name} @ {r})"
            fn = (lambda env, p, fn=fn, name=name, r=r: fn(env, p) + env[r] @ p[name].T)
        # tanh keeps states bounded over time, so sequences stay well-conditioned
        lines.append(f"{s}' = tanh({text})")
        equations.append((s + "'", lambda env, p, fn=fn: np.tanh(fn(env, p))))
        gen.values[s + "'"] = states[s]

    output = draw(st.sampled_from([None, *states, *intermediates]))
    header = ["cell generated",
              "input  " + ", ".join(f"{n}[{d}]" for n, d in inputs.items()),
              "state  " + ", ".join(f"{n}[{d}]" for n, d in states.items())]
    if gen.declared:
        header.append("param  " + ", ".join(f"{n}[{', '.join(gen.params[n])}]"
                                            for n in gen.declared))
    if output is not None:
        header.append(f"output {output}")
    out = output or "h"
    output_key = out + "'" if out in states else out
    if rich:
        sizes = dict(zip(["I", "J", "H", "K"], draw(st.permutations([2, 3, 4, 5]))))
    else:
        sizes = {d: draw(st.integers(1, 4)) for d in ["I", "J", "H", "K"]}
    return GeneratedSpec("\n".join(header + lines) + "\n", inputs, states, sizes, equations,
                         output_key, gen.values[output_key], dict(gen.params))


# -- cells whose state meets no matrix (issue: elementwise and linear recurrences) ---------------

# a state's update, affine in the state s: (text, numpy function of (s, A, B)) with A and B
# expressions free of every state
LINEAR_UPDATES = [
    ("{A} * {s} + {B}", lambda s, a, b: a * s + b),
    ("{B} - {s} * {A}", lambda s, a, b: b - s * a),
    ("({s} + {B}) * {A}", lambda s, a, b: (s + b) * a),
    ("{s} / (2 + abs({A})) + {B}", lambda s, a, b: s / (2 + np.abs(a)) + b),
    ("-({s} * {A})", lambda s, a, b: -(s * a)),
    ("{s} + {B}", lambda s, a, b: s + b),
]
# and nonlinear in it (o: the other state, or s itself)
ELEMENTWISE_UPDATES = [
    ("tanh({A} * {s} + {B})", lambda s, o, a, b: np.tanh(a * s + b)),
    ("{A} * {s} + {B} * tanh({o})", lambda s, o, a, b: a * s + b * np.tanh(o)),
    ("sigmoid({A} + {o} * {B}) * {s}", lambda s, o, a, b: _sigmoid(a + o * b) * s),
    ("relu({A} * {s} + {B}) - 0.5 * {o}", lambda s, o, a, b: np.maximum(a * s + b, 0) - 0.5 * o),
]


@st.composite
def lane_cell_specs(draw, linear: bool) -> GeneratedSpec:
    """A random cell whose states meet no matrix: each gate reads the input through a matrix,
    each state's update is elementwise in the states, affine in its own previous value (and
    in no other state) where `linear`, else a nonlinear function of them. All vectors are
    [H]: its lanes may be column blocks."""
    inputs = {"x": "I"}
    states = {"h": "H", **({"c": "H"} if draw(st.booleans()) else {})}
    lines, equations, params = [], [], {}
    gates = []
    for k in range(draw(st.integers(1, 3))):
        name, W, b = f"g{k}", f"W{k}", f"b{k}"
        params[W], params[b] = ("H", "I"), ("H",)
        text, fn = UNARY[draw(st.sampled_from(["sigmoid", "tanh", "neg", "abs"]))]
        lines.append(f"{name} = {text.format(f'({W} @ x + {b})')}")
        equations.append((name, lambda env, p, fn=fn, W=W, b=b: fn(env["x"] @ p[W].T + p[b])))
        gates.append(name)

    def free():
        """An expression free of the states: a gate, a gate times a parameter, a number."""
        kind = draw(st.sampled_from(["gate", "scaled", "number", "sum"]))
        if kind == "number":
            value = draw(st.sampled_from([0.5, 0.9, 1.5]))
            return repr(value), lambda env, p: value
        gate = draw(st.sampled_from(gates))
        if kind == "gate":
            return gate, lambda env, p: env[gate]
        if kind == "scaled":
            name = f"u{len(params)}"
            params[name] = ("H",)
            return f"({name} * {gate})", lambda env, p: p[name] * env[gate]
        other = draw(st.sampled_from(gates))
        return f"(1 - {gate} + 0.5 * {other})", lambda env, p: 1 - env[gate] + 0.5 * env[other]

    for s in states:
        (a_text, a_fn), (b_text, b_fn) = free(), free()
        if linear:
            text, fn = draw(st.sampled_from(LINEAR_UPDATES))
            line = text.format(A=a_text, B=b_text, s=s)
            update = (lambda env, p, fn=fn, s=s, a=a_fn, b=b_fn:
                      fn(env[s], a(env, p), b(env, p)))
        else:
            o = draw(st.sampled_from(list(states)))
            text, fn = draw(st.sampled_from(ELEMENTWISE_UPDATES))
            line = text.format(A=a_text, B=b_text, s=s, o=o)
            update = (lambda env, p, fn=fn, s=s, o=o, a=a_fn, b=b_fn:
                      fn(env[s], env[o], a(env, p), b(env, p)))
        lines.append(f"{s}' = {line}")
        equations.append((s + "'", update))
    output = draw(st.sampled_from(["state", "gated"]))
    if output == "gated":
        gate, s = draw(st.sampled_from(gates)), draw(st.sampled_from(list(states)))
        lines.append(f"y = {gate} * tanh({s}')")
        equations.append(("y", lambda env, p, gate=gate, s=s: env[gate] * np.tanh(env[s + "'"])))
        output_key, out_name = "y", "y"
    else:
        out_name = draw(st.sampled_from(list(states)))
        output_key = out_name + "'"
    header = ["cell generated",
              "input  x[I]",
              "state  " + ", ".join(f"{n}[{d}]" for n, d in states.items()),
              "param  " + ", ".join(f"{n}[{', '.join(d)}]" for n, d in params.items()),
              f"output {out_name}"]
    sizes = {"I": draw(st.integers(1, 4)), "H": draw(st.sampled_from([3, 17, 40]))}
    return GeneratedSpec("\n".join(header + lines) + "\n", inputs, states, sizes, equations,
                         output_key, "H", params)

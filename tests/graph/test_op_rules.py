"""Every op of the table against an independent formula: its numpy evaluation against Python
scalar arithmetic (element by element, loops for the products), and every derivative rule
against central finite differences of that formula, in float64.

The plan interpreter and the reference backend share each op's `evaluate`, so "plan equals
reference" cannot catch a wrong evaluation or a wrong rule; these checks can. A new op must be
added to FORMULAS (a test fails until it is).
"""
import math

import numpy as np
import pytest

import rnncc
from rnncc.graph import Graph
from rnncc.ops import REGISTRY
from rnncc.ops.base import EvalContext, Stacked
from rnncc.runtime.cell import Cell

from ..close import assert_close

SIZES = {"N": 4, "M": 3}
CTX = EvalContext(SIZES, np.float64)
ROWS = 5


def each(fn, *arrays):
    """fn applied to Python floats, element by element (broadcasting the arguments)."""
    return np.vectorize(lambda *v: float(fn(*(float(a) for a in v))), otypes=[float])(*arrays)


def _sigmoid(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def _matmul(a, v):
    return np.array([[sum(a[i, k] * v[b, k] for k in range(a.shape[1]))
                      for i in range(a.shape[0])] for b in range(v.shape[0])])


def _matmul_t(a, g):
    return np.array([[sum(a[i, j] * g[b, i] for i in range(a.shape[0]))
                      for j in range(a.shape[1])] for b in range(g.shape[0])])


def _outer_sum(g, v):
    g = g.reshape(-1, g.shape[-1])
    v = v.reshape(-1, v.shape[-1])
    rows = max(len(g), len(v))
    row = lambda a, b: a[b if len(a) > 1 else 0]
    return np.array([[sum(row(g, b)[i] * row(v, b)[j] for b in range(rows))
                      for j in range(v.shape[1])] for i in range(g.shape[1])])


def _row_total(v, scale_by_count):
    return np.array([[sum(row) / (len(row) if scale_by_count else 1)] for row in v])


# op -> (argument arrays, attrs, independent formula of the arguments)
def cases(rng):
    vec = lambda: rng.uniform(-2, 2, (ROWS, 4))
    pos = lambda: rng.uniform(0.3, 3, (ROWS, 4))
    a, b = vec(), vec()
    ties = a.copy()
    ties[:, :2] = b[:, :2]
    matrix, v, g = rng.standard_normal((3, 4)), vec(), rng.standard_normal((ROWS, 3))
    stacked = Stacked(("N", "M"))
    two = np.concatenate([a, g], axis=1)
    return {
        "add": ([a, b], {}, lambda a, b: each(lambda x, y: x + y, a, b)),
        "sub": ([a, b], {}, lambda a, b: each(lambda x, y: x - y, a, b)),
        "mul": ([a, b], {}, lambda a, b: each(lambda x, y: x * y, a, b)),
        "div": ([a, pos()], {}, lambda a, b: each(lambda x, y: x / y, a, b)),
        "neg": ([a], {}, lambda a: each(lambda x: -x, a)),
        "pow": ([pos()], {"exponent": -1.5}, lambda a: each(lambda x: x ** -1.5, a)),
        "max": ([a, b], {}, lambda a, b: each(max, a, b)),
        "min": ([a, b], {}, lambda a, b: each(min, a, b)),
        "sigmoid": ([a], {}, lambda a: each(_sigmoid, a)),
        "tanh": ([a], {}, lambda a: each(math.tanh, a)),
        "relu": ([a], {}, lambda a: each(lambda x: x if x > 0 else 0.0, a)),
        "exp": ([a], {}, lambda a: each(math.exp, a)),
        "log": ([pos()], {}, lambda a: each(math.log, a)),
        "sqrt": ([pos()], {}, lambda a: each(math.sqrt, a)),
        "abs": ([a], {}, lambda a: each(abs, a)),
        "softplus": ([a], {}, lambda a: each(lambda x: math.log(1 + math.exp(x)), a)),
        "hardsigmoid": ([3 * a], {}, lambda a: each(lambda x: 0.0 if x <= -3 else 1.0 if x >= 3
                                                    else x / 6 + 0.5, a)),
        "step": ([np.concatenate([a, np.zeros((ROWS, 1))], 1)], {},
                 lambda a: each(lambda x: 1.0 if x > 0 else 0.0, a)),
        "sign": ([np.concatenate([a, np.zeros((ROWS, 1))], 1)], {},
                 lambda a: each(lambda x: 0.0 if x == 0 else math.copysign(1, x), a)),
        "argmax_weight": ([ties, b], {},
                          lambda a, b: each(lambda x, y: 1.0 if x > y else 0.5 if x == y
                                            else 0.0, a, b)),
        "const": ([], {"value": 2.5}, lambda: np.array(2.5)),
        "size": ([], {"dim": "N"}, lambda: np.array(4.0)),
        "zeros": ([], {"shape": ("M", "N")}, lambda: np.zeros((3, 4))),
        "matmul": ([matrix, v], {}, _matmul),
        "matmul_t": ([matrix, g], {}, _matmul_t),
        "outer_sum": ([g, v], {}, _outer_sum),
        "mean": ([a], {}, lambda a: _row_total(a, True)),
        "sum": ([a], {}, lambda a: _row_total(a, False)),
        "broadcast": ([a[:, :1]], {"dim": "N"}, lambda s: np.array([[r[0]] * 4 for r in s])),
        "batch_sum": ([a], {}, lambda a: np.array([sum(a[:, j]) for j in range(4)])),
        "stack_rows": ([matrix, matrix[:2]], {},
                       lambda x, y: np.array([list(r) for r in x] + [list(r) for r in y])),
        "concat": ([a, g], {}, lambda x, y: np.array([list(x[b]) + list(y[b])
                                                     for b in range(ROWS)])),
        "part": ([two], {"stacked": stacked, "index": 1},
                 lambda t: np.array([[t[b, j] for j in range(4, 7)] for b in range(ROWS)])),
        "part_rows": ([rng.standard_normal((7, 4))], {"stacked": stacked, "index": 1},
                      lambda t: np.array([list(t[i]) for i in range(4, 7)])),
    }


FORMULAS = sorted(cases(np.random.default_rng(0)))


def test_every_op_has_an_independent_formula():
    evaluated = {name for name, op in REGISTRY.items() if op.kind != "leaf"}
    assert set(FORMULAS) == evaluated


@pytest.mark.parametrize("op", FORMULAS)
def test_op_evaluation_equals_its_formula(op, rng):
    args, attrs, formula = cases(rng)[op]
    got = REGISTRY[op].evaluate(args, attrs, CTX)
    want = formula(*args)
    assert np.shape(got) == np.shape(want), op
    assert_close(got, want, 1e-14, op)


def test_outer_sum_with_a_row_less_side(rng):
    """One side the same for every row (a parameter-only value): summed over the other's rows."""
    g, b = rng.standard_normal((ROWS, 3)), rng.standard_normal(4)
    assert_close(REGISTRY["outer_sum"].evaluate([g, b], {}, CTX), _outer_sum(g, b), 1e-14)
    assert_close(REGISTRY["outer_sum"].evaluate([b, g], {}, CTX), _outer_sum(b, g), 1e-14)


# -- derivative rules ----------------------------------------------------------------------------

# op -> spec expression of y over inputs a[N], b[N] (positive where the op needs it) and a
# declared matrix W[M, N]
SPEC_EXPRESSIONS = {
    "add": "a + b", "sub": "a - b", "mul": "a * b", "div": "a / b", "neg": "-a",
    "pow": "b ** -1.5", "max": "max(a, b)", "min": "min(a, b)", "sigmoid": "sigmoid(a)",
    "tanh": "tanh(a)", "relu": "relu(a)", "exp": "exp(a)", "log": "log(b)", "sqrt": "sqrt(b)",
    "abs": "abs(a)", "softplus": "softplus(a)", "matmul": "W @ a", "mean": "mean(a)",
    "sum": "sum(a)", "hardsigmoid": "hardsigmoid(3 * a)",  # -6 .. 6: both flat ends and the ramp
}


def finite_difference(f, args: list, dy, h=1e-6):
    """Gradient of sum(f(*args) * dy) with respect to each argument, by central differences."""
    grads = []
    for i, arg in enumerate(args):
        grad = np.zeros_like(arg)
        for index in np.ndindex(arg.shape):
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[i][index] += h
            minus[i][index] -= h
            grad[index] = (np.sum(f(*plus) * dy) - np.sum(f(*minus) * dy)) / (2 * h)
        grads.append(grad)
    return grads


def _one_step(cell, p, xs, dy_shape, rng):
    """One step of `cell` (T = 1): its output and the gradients backward gives for dy."""
    x = {k: v[None] for k, v in xs.items()}
    dy = rng.standard_normal((1, ROWS, *dy_shape))
    g = cell.backward(p, x, dy, target="reference")
    return dy[0], g


@pytest.mark.parametrize("op", sorted(SPEC_EXPRESSIONS))
def test_derivative_rule_equals_finite_differences_of_the_formula(op, rng):
    derivable = {name for name, o in REGISTRY.items() if o.vjp is not None}
    # broadcast's rule is checked below; concat's and chunk's parts in tests/frontend/test_functions.py
    assert set(SPEC_EXPRESSIONS) | {"broadcast", "concat", "part"} == derivable
    cell = rnncc.compile(f"cell one\ninput a[N], b[N]\nstate h[N]\nparam W[M, N]\noutput y\n"
                         f"y = {SPEC_EXPRESSIONS[op]}\nh' = h\n")
    assert op in {cell.graph.node(n).op for n in cell.graph.nx.nodes}
    a, b = rng.uniform(-2, 2, (ROWS, 4)), rng.uniform(0.3, 3, (ROWS, 4))
    W = rng.standard_normal((3, 4))
    formula = cases(rng)[op][2]
    if op == "matmul":
        f, args = (lambda W, a: formula(W, a)), [W, a]
    elif op == "hardsigmoid":
        f, args = (lambda a: formula(3 * a)), [a]
    elif op in ("pow", "log", "sqrt"):
        f, args = formula, [b]
    elif op in ("mean", "sum", "neg", "sigmoid", "tanh", "relu", "exp", "abs", "softplus",
                "hardsigmoid"):
        f, args = formula, [a]
    else:
        f, args = formula, [a, b]
    out_shape = np.shape(f(*args))[1:]
    dy, g = _one_step(cell, {"W": W}, {"a": a, "b": b}, out_shape, rng)
    want = finite_difference(f, args, dy)
    got = {"a": g["x"]["a"][0], "b": g["x"]["b"][0], "W": g["params"]["W"]}
    names = ["W", "a"] if op == "matmul" else ["b"] if op in ("pow", "log", "sqrt") else \
        ["a"] if len(args) == 1 else ["a", "b"]
    for name, w in zip(names, want):
        assert_close(got[name], w, 1e-6, f"d{name} of {op}")


def test_broadcast_derivative_rule(rng):
    """broadcast appears in no graph a spec builds (its rule serves backward graphs), so its
    graph is built by hand: y = broadcast(sum(a)) against the formula's finite differences."""
    spec = rnncc.compile("cell one\ninput a[N]\nstate h[N]\noutput y\ny = a\nh' = h\n").spec
    graph = Graph("one", ("N",))
    a = graph.add("input", (), ("N",), {}, "a")
    h = graph.add("state", (), ("N",), {}, "h")
    total = graph.add("sum", (a,), ())
    y = graph.add("broadcast", (total,), ("N",), {"dim": "N"})
    graph.results = {"updates": {"h": h}, "output": {"y": y}}
    cell = Cell(spec, graph)
    x = rng.uniform(-2, 2, (ROWS, 4))
    dy, g = _one_step(cell, {}, {"a": x}, (4,), rng)
    formula = lambda v: np.array([[sum(r)] * 4 for r in v])
    (want,) = finite_difference(formula, [x], dy)
    assert_close(g["x"]["a"][0], want, 1e-6, "d a")


def test_hardsigmoid_equals_torch_at_its_ends():
    """PyTorch's value and gradient where the ramp meets the flat ends (x = -3, 3: slope 0)."""
    torch = pytest.importorskip("torch")
    cell = rnncc.compile("cell one\ninput a[N]\nstate h[N]\noutput y\ny = hardsigmoid(a)\n"
                         "h' = h\n")
    x = np.array([[-4.0, -3.0, 0.5, 3.0], [3.5, -2.999, 2.999, 0.0]])
    dy = np.arange(1.0, 9.0).reshape(1, 2, 4)
    ys, _ = cell.forward({}, x[None], target="reference")
    g = cell.backward({}, x[None], dy, target="reference")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.hardsigmoid(xt)
    yt.backward(torch.tensor(dy[0]))
    assert_close(ys[0], yt.detach().numpy(), 1e-15)
    # torch's backward scales by 1/6 rounded to float32 even in float64: 3e-8 apart
    assert_close(g["x"][0], xt.grad.numpy(), 1e-7)
    assert (g["x"][0] == 0).tolist() == (xt.grad.numpy() == 0).tolist()

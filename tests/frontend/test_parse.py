"""What the front end accepts, and the Spec it produces."""
import numpy as np

import rnncc
from rnncc.frontend import Source, parse_spec
from rnncc.frontend.spec import Binary, Call, Name, Neg, Num, Power


def spec_of(text):
    return parse_spec(Source(text))


def test_declarations_equations_and_positions():
    spec = spec_of("# a comment\ncell demo   # trailing comment\n"
                   "input x[I], y[4]\nstate h[H], c[H]\nparam W[H, I]\noutput o\n"
                   "o = W @ x + c\nc' = tanh(o) * c\n   h' = c' + h\n")
    assert spec.name == "demo" and spec.header.line == 2
    assert {n: d.dims for n, d in spec.inputs.items()} == {"x": ("I",), "y": (4,)}
    assert {n: d.dims for n, d in spec.states.items()} == {"h": ("H",), "c": ("H",)}
    assert spec.params["W"].dims == ("H", "I")
    assert spec.output_name == "o"
    assert [(e.target, e.primed, e.pos.line, e.pos.col) for e in spec.equations] == [
        ("o", False, 7, 1), ("c", True, 8, 1), ("h", True, 9, 4)]
    h_eq = spec.equations[2].expr
    assert isinstance(h_eq, Binary) and h_eq.op == "+"
    assert h_eq.left == Name("c", True, h_eq.left.pos) and h_eq.left.pos.col == 9
    assert h_eq.right.pos.col == 14  # columns after a primed name map back past the prime


def test_expression_tree():
    spec = spec_of("cell t\ninput x[I]\nstate h[H]\nh' = -sigmoid(h) ** 2 / max(h, 0.5)\n")
    e = spec.equations[0].expr
    # Python precedence: unary minus binds looser than **
    assert isinstance(e, Binary) and e.op == "/"
    assert isinstance(e.left, Neg) and isinstance(e.left.operand, Power)
    assert e.left.operand.exponent == 2.0 and isinstance(e.left.operand.base, Call)
    assert isinstance(e.right, Call) and e.right.func == "max"
    assert isinstance(e.right.args[1], Num) and e.right.args[1].value == 0.5


def test_constant_exponent_expressions():
    spec = spec_of("cell t\ninput x[I]\nstate h[H]\nh' = abs(h) ** (-1 / 2) + h ** -2\n")
    e = spec.equations[0].expr
    assert e.left.exponent == -0.5 and e.right.exponent == -2.0


def test_default_output_is_the_first_state_and_params_are_inferred():
    spec = spec_of("cell t\ninput x[I]\nstate s[S], h[H]\nh' = tanh(W @ x + b)\n"
                   "s' = s * g\n")
    assert spec.output_name == "s"
    assert list(spec.inferred_params) == ["W", "b", "g"]


def test_crlf_tabs_and_unicode_comments_are_fine():
    text = "cell t\r\ninput\tx[I]\r\nstate h[H]  # Schmidhuber — 1997\r\nh' = tanh(W @ x)\r\n"
    cell = rnncc.compile(text)
    assert cell.inputs == ["x"] and cell.params == ["W"]


def test_unary_plus_and_integer_dims():
    cell = rnncc.compile("cell t\ninput x[3]\nstate h[2]\nh' = +tanh(W @ x)\n")
    assert cell.dims == [] and cell.symbolic_shapes["W"] == (2, 3)
    p = cell.init_params(seed=0)
    ys, _ = cell.forward(p, np.ones((2, 1, 3)))
    assert ys.shape == (2, 1, 2)


def test_several_inputs_and_declared_params_keep_their_order():
    cell = rnncc.compile("cell two\ninput a[A], b[B2]\nstate h[H]\nparam V[H, B2]\n"
                         "h' = tanh(U @ a + V @ b + w * h)\n")
    assert cell.inputs == ["a", "b"]
    assert cell.params == ["V", "U", "w"]  # declared first, then in order of first use
    assert cell.dims == ["A", "B2", "H"]
    assert cell.symbolic_shapes["U"] == ("H", "A") and cell.symbolic_shapes["w"] == ("H",)

"""One test per class of spec error: each must be a SpecError pointing at the right line and
column, with a message saying what is wrong, the source line and a caret under the column."""
import pytest

import rnncc
from rnncc import SpecError

HEAD = "cell t\ninput x[I]\nstate h[H]\n"
TWO = "cell t\ninput x[I]\nstate h[H], c[H]\n"

# id: (spec text, line, col, fragment of the message)
CASES = {
    # syntax
    "syntax-dangling-operator": (HEAD + "h' = tanh(W @ x +)\n", 4, 18, "syntax error"),
    "syntax-unclosed": (HEAD + "h' = tanh(W @ x\n", 4, 10, "'(' was never closed"),
    "syntax-junk-line": (HEAD + "h' = h\nwhat is this\n", 5, 1, "expected a declaration"),
    "syntax-misplaced-prime": (HEAD + "h' = h + 2'\n", 4, 11, "must directly follow"),
    "syntax-comparison": (HEAD + "h' = h < x\n", 4, 6, "comparisons"),
    "syntax-indexing": (HEAD + "h' = h[0]\n", 4, 6, "indexing"),
    "syntax-floor-division": (HEAD + "h' = h // 2\n", 4, 6, "unsupported operator '//'"),
    "syntax-string": (HEAD + 'h\' = h * "a"\n', 4, 10, "only real numbers"),
    "syntax-bool": (HEAD + "h' = h * True\n", 4, 10, "only real numbers"),
    "syntax-number-range": (HEAD + "h' = h * 1e999\n", 4, 10, "out of range"),
    "syntax-missing-expression": (HEAD + "h' =\n", 4, 5, "missing expression"),
    # unknown functions and names
    "unknown-function": (HEAD + "h' = foo(W @ x)\n", 4, 6, "unknown function 'foo'"),
    "function-arity": (HEAD + "h' = tanh(h, x)\n", 4, 6, "takes 1 argument, got 2"),
    "function-keyword-argument": (HEAD + "h' = max(h, b=x)\n", 4, 15, "no keyword arguments"),
    "function-used-as-value": (HEAD + "h' = h * tanh\n", 4, 10, "is a function"),
    "unknown-name-is-a-dimension": (HEAD + "h' = tanh(W @ x) * H\n", 4, 20, "unknown name 'H'"),
    "unknown-state": (HEAD + "h' = tanh(W @ x + q')\n", 4, 19, "unknown state 'q'"),
    # order of definitions
    "use-before-definition": (HEAD + "h' = tanh(a)\na = W @ x\n", 4, 11,
                              "used before its definition on line 5"),
    "use-before-definition-primed": (TWO + "h' = tanh(c')\nc' = c\n", 4, 11,
                                     "used before its definition on line 5"),
    "self-reference": (HEAD + "a = a + 1\nh' = a\n", 4, 5, "refers to itself"),
    "redefinition": (HEAD + "a = W @ x\na = U @ h\nh' = a\n", 5, 1, "defined twice"),
    "redeclaration": ("cell t\ninput x[I]\nstate h[H], x[H]\nh' = h\n", 3, 13,
                      "declared twice"),
    # assignments
    "assign-to-input": (HEAD + "x = h\nh' = h\n", 4, 1, "cannot assign to an input 'x'"),
    "assign-to-parameter": ("cell t\ninput x[I]\nstate h[H]\nparam b[H]\nb = h\nh' = h\n", 5, 1,
                            "cannot assign to a parameter 'b'"),
    "assign-to-state-without-prime": (HEAD + "h = W @ x\n", 4, 1, "write its new value as h'"),
    "assign-to-keyword": (HEAD + "output = h\nh' = h\n", 4, 1, "is a keyword"),
    "assign-to-function-name": (HEAD + "tanh = h\nh' = h\n", 4, 1, "is a function"),
    "reserved-double-underscore": (HEAD + "a__b = h\nh' = h\n", 4, 1, "'__'"),
    # primes
    "prime-on-input": (HEAD + "h' = tanh(W @ x')\n", 4, 15, "a prime on a non-state"),
    "prime-on-input-target": (HEAD + "x' = h\nh' = h\n", 4, 1, "a prime on a non-state"),
    "prime-on-intermediate": (HEAD + "a = h\nh' = a'\n", 5, 6, "a prime on a non-state"),
    # state updates
    "state-without-update": (TWO + "h' = tanh(W @ x)\n", 3, 13, "state 'c' has no update"),
    "state-updated-twice": (HEAD + "h' = tanh(W @ x)\nh' = h\n", 5, 1, "updated twice"),
    # shapes
    "shape-mismatch-add": (HEAD + "h' = tanh(h + x)\n", 4, 15, "shape mismatch in '+'"),
    "shape-mismatch-state": (HEAD + "h' = tanh(W @ x + x)\n", 4, 6,
                             "must have the shape [H] of state 'h'"),
    "shape-scalar-for-state": (HEAD + "h' = mean(h)\n", 4, 6, "scalar per row"),
    "shape-declared-matmul": ("cell t\ninput x[I]\nstate h[H]\nparam W[H, H]\nh' = W @ x\n", 5, 10,
                              "shape mismatch in '@'"),
    "shape-fixed-dimension": ("cell t\ninput x[3]\nstate h[4]\nh' = h + x\n", 4, 10,
                              "dimension 4 does not match dimension 3"),
    "shape-cannot-infer": (HEAD + "h' = tanh(W @ (V @ x))\n", 4, 11,
                           "cannot infer the shape of parameter 'W'"),
    "shape-matrix-and-vector": (HEAD + "h' = tanh(W @ x + W)\n", 4, 19,
                                "used as a vector here but as a matrix"),
    "matmul-input-on-left": (HEAD + "h' = tanh(x @ h)\n", 4, 11, "must be a matrix parameter"),
    "matrix-of-two-vectors": (HEAD + "a = W @ x\nh' = tanh(a + W @ h)\n", 5, 19,
                              "parameter 'W' multiplies a different vector here than on line 4"),
    "matmul-expression-on-left": (HEAD + "h' = tanh((W @ x) @ h)\n", 4, 12,
                                  "must be a matrix parameter"),
    "matmul-vector-parameter-on-left": ("cell t\ninput x[I]\nstate h[H]\nparam b[H]\n"
                                        "h' = tanh(b @ x)\n", 5, 11, "must be a matrix"),
    "matmul-scalar-on-right": (HEAD + "h' = tanh(W @ mean(x))\n", 4, 15, "must be a vector"),
    "exponent-not-constant": (HEAD + "h' = h ** x\n", 4, 11, "exponent of '**' must be a number"),
    "exponent-division-by-zero": (HEAD + "h' = h ** (1 / 0)\n", 4, 12, "division by zero"),
    # declarations and structure
    "unknown-output": (HEAD + "output q\nh' = h\n", 4, 8, "unknown output 'q'"),
    "output-is-an-input": (HEAD + "output x\nh' = h\n", 4, 8, "unknown output 'x'"),
    "second-output": (HEAD + "output h\noutput h\nh' = h\n", 5, 1, "second 'output'"),
    "missing-header": ("input x[I]\nstate h[H]\nh' = h\n", 1, 1, "missing header"),
    "malformed-header": ("cell\ninput x[I]\n", 1, 1, "malformed header"),
    "second-header": (HEAD + "cell u\nh' = h\n", 4, 1, "second 'cell' header"),
    "empty-file": ("", 1, 1, "empty spec"),
    "only-comments": ("# nothing\n\n   # here\n", 1, 1, "empty spec"),
    "no-input": ("cell t\nstate h[H]\nh' = h\n", 1, 1, "declares no input"),
    "no-state": ("cell t\ninput x[I]\n", 1, 1, "declares no state"),
    "declaration-without-dims": ("cell t\ninput x\nstate h[H]\nh' = h\n", 2, 8, "expected '['"),
    "declaration-zero-dim": ("cell t\ninput x[0]\nstate h[H]\nh' = h\n", 2, 9, "positive"),
    "declaration-matrix-input": ("cell t\ninput x[I, J]\nstate h[H]\nh' = h\n", 2, 7,
                                 "an input is a vector"),
    "declaration-3d-param": (HEAD + "param W[H, I, I]\nh' = h\n", 4, 7, "vector or a matrix"),
    # functions (def), chunk and concat
    "chunk-count": (TWO + "i, f, g = chunk(W @ x, 4)\nc' = i * c\nh' = f + g\n", 4, 24,
                    "chunk(..., 4) gives 4 parts, but the line names 3"),
    "chunk-count-not-a-number": (TWO + "i, f = chunk(W @ x, h)\nc' = i\nh' = f\n", 4, 21,
                                 "a positive whole number"),
    "chunk-inside-an-expression": (TWO + "c' = tanh(chunk(W @ x, 2))\nh' = c\n", 4, 11,
                                   "the whole right side of a line naming them"),
    "chunk-one-name": (TWO + "a = chunk(W @ x, 1)\nc' = a\nh' = a\n", 4, 5,
                       "the whole right side of a line naming them"),
    "chunk-not-made-of-blocks": (TWO + "i, f = chunk(h, 2)\nc' = i\nh' = f\n", 4, 14,
                                 "this one is [H]"),
    "names-without-chunk": (TWO + "i, f = h + c\nc' = i\nh' = f\n", 4, 8,
                            "takes chunk(v, 2) on its right side"),
    "names-repeated": (TWO + "i, i = chunk(W @ x, 2)\nc' = i\nh' = i\n", 4, 4, "named twice"),
    "concat-of-one": (HEAD + "h' = concat(h)\n", 4, 6, "takes two or more arguments, got 1"),
    "concat-for-a-state": (HEAD + "h' = concat(h, h)\n", 4, 6, "the expression has [2H]"),
    "def-sees-only-arguments": (HEAD + "def f(v) = v + h\nh' = f(h)\n", 4, 16,
                                "'h' is not an argument of f"),
    "def-prime": (HEAD + "def f(v) = v'\nh' = f(h)\n", 4, 12, "sees only its arguments"),
    "def-twice": (HEAD + "def f(v) = v\ndef f(v) = v\nh' = f(h)\n", 5, 5,
                  "function 'f' is defined twice (first on line 4)"),
    "def-argument-twice": (HEAD + "def f(v, v) = v\nh' = f(h, h)\n", 4, 10,
                           "argument 'v' of f is named twice"),
    "def-no-arguments": (HEAD + "def f() = 1\nh' = h\n", 4, 5, "takes no arguments"),
    "def-malformed": (HEAD + "def f = h\nh' = h\n", 4, 1, "malformed function"),
    "def-arity": (HEAD + "def f(v, w) = v + w\nh' = f(h)\n", 5, 6,
                  "f() takes 2 arguments, got 1"),
    "def-calls-itself": (HEAD + "def f(v) = f(v)\nh' = f(h)\n", 4, 12, "calls itself"),
    "def-used-before-definition": (HEAD + "h' = f(h)\ndef f(v) = v\n", 4, 6,
                                   "used before its definition on line 5"),
    "def-named-as-a-builtin": (HEAD + "def tanh(v) = v\nh' = tanh(h)\n", 4, 5,
                               "'tanh' is a function"),
    "def-named-as-chunk": (HEAD + "def chunk(v) = v\nh' = h\n", 4, 5, "'chunk' is a function"),
    "def-named-as-a-declaration": (HEAD + "def h(v) = v\nh' = h\n", 4, 5,
                                   "'h' is declared as state on line 3"),
    "def-chunk-in-body": (HEAD + "def f(v) = chunk(v, 2)\nh' = f(h)\n", 4, 12,
                          "the whole right side"),
    # stacked dimensions
    "dimension-zero-multiple": (HEAD + "param b[0H]\nh' = h\n", 4, 9, "positive multiple"),
    "dimension-spaced-multiple": (HEAD + "param b[4 H]\nh' = h\n", 4, 11,
                                  "write a multiple of a dimension as 4H or 4*H"),
    "dimension-dangling-star": (HEAD + "param b[4*]\nh' = h\n", 4, 11,
                                "expected a dimension after '*'"),
    "stacked-parameter-used-whole": (HEAD + "param b[4H]\nh' = h + b\n", 5, 10,
                                     "dimension H does not match dimension 4H"),
    # stray bytes
    "stray-non-ascii": (HEAD + "h' = tanh(W @ x) \u00e9\n", 4, 18, "stray character U+00E9"),
    "stray-nul": (HEAD + "h' = tanh(W\x00 @ x)\n", 4, 12, "stray character U+0000"),
    "stray-control-in-comment": (HEAD + "h' = h  # \x07\n", 4, 11, "stray character U+0007"),
    "stray-dollar": (HEAD + "h' = tanh(W @ $x)\n", 4, 15, "syntax error"),
    # pathological nesting: never a RecursionError or MemoryError
    "nesting-parentheses": (HEAD + "h' = " + "(" * 300 + "h" + ")" * 300 + "\n", 4, 6,
                            "nested too deeply"),
    "nesting-unary": (HEAD + "h' = " + "-" * 100000 + "h\n", 4, 6, "nested too deeply"),
    "nesting-long-sum": (HEAD + "h' = " + "+".join(["h"] * 100000) + "\n", 4, 6,
                         "nested too deeply"),
    "nesting-calls": (HEAD + "h' = " + "tanh(" * 250 + "h" + ")" * 250 + "\n", 4, 6,
                      "nested too deeply"),
}


@pytest.mark.parametrize("text, line, col, fragment", CASES.values(), ids=CASES.keys())
def test_spec_error(text, line, col, fragment):
    with pytest.raises(SpecError) as info:
        rnncc.compile(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.line, err.col) == (line, col), str(err)
    assert fragment in err.msg, str(err)
    rendered = str(err).split("\n")
    assert rendered[0] == f"<spec>:{line}:{col}: {err.msg}"
    # the source line (or a window of it) follows, and a caret under the column
    assert len(rendered) == 3 and rendered[2].strip() == "^"
    source_line = text.split("\n")[line - 1]
    shown, caret = rendered[1][4:], rendered[2][4:]
    if not shown.startswith("..."):
        expected = "".join(c if c.isprintable() else "?" for c in source_line)
        assert expected.startswith(shown.removesuffix("..."))
        assert len(caret) == col


def test_error_names_the_file_and_points_into_it(tmp_path):
    path = tmp_path / "mine.cell"
    path.write_text("cell mine\ninput x[I]\nstate h[H]\n\th' = tanh(W @ x + bogus(h))\n")
    with pytest.raises(SpecError) as info:
        rnncc.compile(path)
    err = info.value
    assert str(err).startswith(f"{path}:4:20: unknown function 'bogus'")
    # a tab-indented line keeps its tab in the caret line, so the caret lines up
    assert str(err).split("\n")[2] == "    \t" + " " * 18 + "^"
    with pytest.raises(SpecError):
        rnncc.compile(str(path))  # a str path ending in .cell is a path too


def test_invalid_utf8_is_a_stray_byte(tmp_path):
    path = tmp_path / "bytes.cell"
    path.write_bytes(b"cell b\ninput x[I]\nstate h[H]\nh' = tanh(\xff)\n")
    with pytest.raises(SpecError) as info:
        rnncc.compile(path)
    assert (info.value.line, info.value.col) == (4, 11)
    assert "stray byte 0xff" in info.value.msg
    with pytest.raises(SpecError, match="stray byte 0xfe"):
        rnncc.compile(b"cell b\n\xfe\n")


def test_missing_file_is_not_a_spec_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        rnncc.compile(tmp_path / "absent.cell")


def test_compile_rejects_non_text():
    with pytest.raises(TypeError, match="spec text or a path"):
        rnncc.compile(42)


LSTM_BODY = ("cell lstm\ninput  x[I]\nstate  h[H], c[H]\noutput h\n"
             "i  = sigmoid(W_i @ x + U_i @ h + b_i)\nf  = sigmoid(W_f @ x + U_f @ h + b_f)\n"
             "{early}g  = tanh(W_g @ x + U_g @ h + b_g)\no  = sigmoid(W_o @ x + U_o @ h + b_o)\n"
             "c' = f * c + i * g\nh' = o * tanh(c')\n{late}")


@pytest.mark.parametrize("early, late, line", [
    ("q  = f + x\n", "", 7),     # f's size is not known yet at line 7: q = f + x ties it to I,
                                 # and every later line uses f as [H]: line 7 is the mistake
    ("", "q  = f + x\n", 11),    # after c' = f * c has made f [H]
])
def test_a_shape_conflict_is_reported_where_the_conflicting_use_is(early, late, line):
    with pytest.raises(SpecError) as err:
        rnncc.compile(LSTM_BODY.format(early=early, late=late))
    assert err.value.line == line and err.value.source_line.startswith("q  = f + x")
    assert "shape mismatch in '+': dimension H does not match dimension I" in err.value.msg


def test_a_conflict_no_earlier_line_explains_stays_where_it_is():
    """x + h with x[I], h[H]: nothing was inferred, the line itself is wrong."""
    with pytest.raises(SpecError) as err:
        rnncc.compile("cell t\ninput x[I]\nstate h[H]\ny = W @ x\nh' = tanh(y + h + x)\n")
    assert err.value.line == 5 and "dimension H does not match dimension I" in err.value.msg

"""Parameter initialisers in the spec (`param b[H] = 1`): parsing, errors at the line, the
values init_params and rnncc.RNN draw (against numpy's generator and the initialisers'
definitions), seeding, and the shipped lnlstm's gains."""
import numpy as np
import pytest

import rnncc
from rnncc import SpecError

HEAD = "cell t\ninput x[I]\nstate h[H]\n"
BODY = "h' = tanh(W @ x + U @ h + b + g * h + n + u)\n"


def compile_params(line: str):
    return rnncc.compile(HEAD + line + "\n" + BODY)


def test_initialisers_parse_with_their_arguments():
    cell = compile_params("param W[H, I] = xavier(2), U[H, H] = orthogonal, b[H] = -1.5e-1, "
                          "g[H] = ones, n[H] = normal(0.5, 2), u[H] = uniform(-1, 3)")
    got = {name: (init.kind, init.args) for name, init in cell.initialisers.items()}
    assert got == {"W": ("xavier", (2.0,)), "U": ("orthogonal", ()), "b": ("constant", (-0.15,)),
                   "g": ("ones", ()), "n": ("normal", (0.5, 2.0)),
                   "u": ("uniform", (-1.0, 3.0))}


@pytest.mark.parametrize("line, col, fragment", [
    ("param b[H] = uniform(1, 0)", 14, "needs low < high"),
    ("param b[H] = normal(0, -1)", 14, "needs std >= 0"),
    ("param b[H] = orthogonal", 14, "initialises a matrix, and parameter 'b' is a vector"),
    ("param b[H] = xavier", 14, "initialises a matrix"),
    ("param W[H, I] = xavier(0)", 17, "gain of xavier must be positive"),
    ("param b[H] = gaussian", 14, "unknown initialiser 'gaussian'"),
    ("param b[H] = normal(0)", 14, "normal takes mean, std, got 1 argument"),
    ("param b[H] = zeros(1)", 14, "zeros takes no arguments"),
    ("param b[H] = uniform(0, h)", 25, "the arguments of uniform are numbers"),
    ("param b[H] = ", 14, "missing initialiser"),
    ("param b[H] = 1 2", 16, "syntax error"),
    ("param b[H] = 1e999", 14, "not a finite number"),
    ("input y[H] = 1", 12, "only parameters take an initialiser"),
    ("param b[H] = 1, c[H] = ", 24, "missing initialiser"),
])
def test_initialiser_errors_point_at_the_line_and_column(line, col, fragment):
    with pytest.raises(SpecError) as err:
        compile_params(line)
    assert (err.value.line, err.value.col) == (4, col) and fragment in err.value.msg, str(err.value)


def test_init_params_draws_what_each_initialiser_defines():
    cell = compile_params("param W[H, I] = xavier(2), U[H, H] = orthogonal(3), b[H] = 0.25, "
                          "g[H] = ones, n[H] = normal(0.5, 2), u[H] = uniform(-1, 3)")
    I, H = 7, 40
    p = cell.init_params(seed=5, dtype=np.float64, I=I, H=H)
    np.testing.assert_array_equal(p["b"], np.full(H, 0.25))
    np.testing.assert_array_equal(p["g"], np.ones(H))
    bound = 2 * np.sqrt(6 / (I + H))            # Glorot & Bengio's bound, times the gain
    assert np.abs(p["W"]).max() <= bound and np.abs(p["W"]).max() > 0.9 * bound
    np.testing.assert_allclose(p["U"] @ p["U"].T, 9 * np.eye(H), atol=1e-12)   # gain 3
    assert -1 <= p["u"].min() and p["u"].max() <= 3 and p["u"].max() > 2
    # the normal draw, with the generator in the state the earlier draws left it in
    rng = np.random.default_rng(5)
    rng.uniform(size=(H, I))
    rng.standard_normal((H, H))
    np.testing.assert_array_equal(p["n"], rng.normal(0.5, 2, H))
    np.testing.assert_array_equal(p["u"], rng.uniform(-1, 3, H))


def test_orthogonal_wide_matrices_have_orthonormal_rows():
    cell = rnncc.compile("cell w\ninput x[I]\nstate h[H]\nparam W[H, I] = orthogonal\n"
                         "h' = tanh(W @ x)\n")
    W = cell.init_params(seed=1, dtype=np.float64, I=9, H=4)["W"]
    np.testing.assert_allclose(W @ W.T, np.eye(4), atol=1e-12)
    W = cell.init_params(seed=1, dtype=np.float64, I=3, H=8)["W"]
    np.testing.assert_allclose(W.T @ W, np.eye(3), atol=1e-12)


def test_parameters_without_an_initialiser_keep_pytorchs_rule_and_seeding():
    """A spec with initialisers on some parameters draws the others exactly as before: uniform
    in (-1/sqrt(H), 1/sqrt(H)) from default_rng(seed), in the order of cell.params."""
    cell = compile_params("param b[H] = 1, n[H] = zeros")
    H, I = 6, 4
    p = cell.init_params(seed=3, dtype=np.float64, I=I, H=H)
    rng = np.random.default_rng(3)
    k = 1 / np.sqrt(H)
    for name in cell.params:
        if name not in cell.initialisers:
            np.testing.assert_array_equal(p[name], rng.uniform(-k, k, cell.shape(name, I=I, H=H)))
    again = cell.init_params(seed=3, dtype=np.float32, I=I, H=H)
    for name in cell.params:
        np.testing.assert_array_equal(again[name], p[name].astype(np.float32))
    plain = cell.init_params(seed=3, dtype=np.float64, initialisers=False, I=I, H=H)
    assert plain["b"].min() >= -k and plain["b"].max() <= k   # the spec's 1 ignored


def test_the_shipped_lstm_still_initialises_as_pytorch_does():
    torch = pytest.importorskip("torch")
    cell = rnncc.load("lstm")
    assert cell.initialisers == {}
    p = cell.init_params(seed=0, dtype=np.float64, I=3, H=16)
    for v in p.values():
        assert np.abs(v).max() <= 0.25   # 1/sqrt(16), torch.nn.LSTM's bound
    assert torch is not None


def test_shipped_lnlstm_starts_with_unit_gains_and_zero_shifts():
    cell = rnncc.load("lnlstm")
    p = cell.init_params(seed=0, dtype=np.float64, I=5, H=8)
    for name, size in (("gamma_c", 8), ("gx", 32), ("gh", 32)):
        np.testing.assert_array_equal(p[name], np.ones(size), err_msg=name)
    for name, size in (("beta_c", 8), ("b", 32)):
        np.testing.assert_array_equal(p[name], np.zeros(size), err_msg=name)
    # U[4H, H] = orthogonal draws each gate's H x H block as a matrix of its own (haste's init):
    # each block is orthogonal, the whole 32 x 8 matrix is not a slice of one orthogonal matrix
    assert p["U"].shape == (32, 8) and p["W"].shape == (32, 5)
    for k in range(4):
        block = p["U"][8 * k:8 * (k + 1)]
        np.testing.assert_allclose(block @ block.T, np.eye(8), atol=1e-12)
    # W[4H, I] = xavier: each [H, I] block within xavier's bound for fan_in I, fan_out H
    assert np.abs(p["W"]).max() <= np.sqrt(6 / (5 + 8))
    assert np.abs(p["W"]).max() > np.sqrt(6 / (5 + 32))   # the whole matrix's bound is narrower


def test_the_layer_honours_initialisers_with_its_seeding():
    layer = rnncc.RNN("lnlstm", 5, 8, num_layers=2, bidirectional=True, target="reference",
                      dtype=np.float64, seed=4)
    for name, value in layer.params.items():
        base = name.split("_l")[0]
        if base in ("gx", "gh", "gamma_c"):
            np.testing.assert_array_equal(value, 1.0, err_msg=name)
        if base in ("b", "beta_c"):
            np.testing.assert_array_equal(value, 0.0, err_msg=name)
    first = layer.cell.init_params(seed=4, dtype=np.float64, I=5, H=8)
    for name, value in first.items():
        np.testing.assert_array_equal(layer.params[name + "_l0"], value)
    assert not np.array_equal(layer.params["U_l0"], layer.params["U_l0_reverse"])

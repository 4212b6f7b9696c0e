"""The Python API contract: rnncc.compile/load, Cell attributes, init_params, forward."""
import math

import numpy as np
import pytest

import rnncc

I, H, T, B = 3, 5, 6, 4


@pytest.fixture(scope="module")
def lstm():
    return rnncc.load("lstm")


@pytest.fixture
def setup(lstm, rng):
    p = lstm.init_params(seed=0, dtype=np.float64, I=I, H=H)
    x = rng.standard_normal((T, B, I))
    return lstm, p, x


def test_attributes(lstm):
    assert lstm.name == "lstm"
    assert lstm.inputs == ["x"] and lstm.states == ["h", "c"] and lstm.output == "h"
    assert lstm.dims == ["I", "H"]
    assert lstm.params == [f"{m}_{g}" for g in "ifgo" for m in ("W", "U", "b")]
    assert rnncc.load("lstm.cell").name == "lstm"
    assert set(rnncc.shipped()) >= {"rnn", "lstm", "gru", "lnlstm", "peephole_lstm", "mgu"}


def test_load_unknown_spec_names_the_shipped_ones():
    with pytest.raises(ValueError, match="no shipped spec named 'lstn'.*lstm"):
        rnncc.load("lstn")


def test_init_params_follows_pytorch_convention(lstm):
    p = lstm.init_params(seed=7, dtype=np.float32, I=I, H=H)
    k = 1 / math.sqrt(H)
    assert list(p) == lstm.params
    for name, value in p.items():
        assert value.dtype == np.float32
        assert value.shape == lstm.shape(name, I=I, H=H)
        assert np.all(np.abs(value) <= k)
    assert max(np.abs(v).max() for v in p.values()) > 0.8 * k  # it does use the whole range
    again = lstm.init_params(seed=7, dtype=np.float32, I=I, H=H)
    other = lstm.init_params(seed=8, dtype=np.float32, I=I, H=H)
    assert all(np.array_equal(p[n], again[n]) for n in p)
    assert not np.array_equal(p["W_i"], other["W_i"])
    p64 = lstm.init_params(seed=7, dtype=np.float64, I=I, H=H)
    assert all(np.array_equal(p[n], p64[n].astype(np.float32)) for n in p)


@pytest.mark.parametrize("kwargs, match", [
    ({"I": 3}, "missing H"),
    ({"I": 3, "H": 4, "Q": 2}, "unknown Q"),
    ({"I": 0, "H": 4}, "positive integer"),
    ({"I": 2.5, "H": 4}, "positive integer"),
    ({"I": 3, "H": 4, "dtype": np.int32}, "float32 or float64"),
])
def test_init_params_errors(lstm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lstm.init_params(**kwargs)


def test_dtype_follows_the_input(setup):
    cell, p, x = setup
    ys64, final64 = cell.forward(p, x)
    ys32, final32 = cell.forward(p, x.astype(np.float32))  # float64 params are converted
    assert ys64.dtype == np.float64 and ys32.dtype == np.float32
    assert all(v.dtype == np.float32 for v in final32.values())
    np.testing.assert_allclose(ys32, ys64, rtol=1e-4, atol=1e-5)


def test_callers_arrays_are_never_modified(setup, rng):
    cell, p, x = setup
    state = {s: rng.standard_normal((B, H)) for s in cell.states}
    lengths = np.array([6, 3, 0, 1])
    arrays = [x, lengths, *p.values(), *state.values()]
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False  # any write would raise
    ys, final = cell.forward(p, x, state=state, lengths=lengths)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)
    final["h"][:] = 0  # results are the caller's own, not views of the inputs
    assert state["h"].any()


def test_lengths_stop_each_row_at_its_own_last_step(setup, rng):
    cell, p, x = setup
    state = {s: rng.standard_normal((B, H)) for s in cell.states}
    lengths = np.array([6, 3, 0, 1])
    ys, final = cell.forward(p, x, state=state, lengths=lengths)
    for b, n in enumerate(lengths):
        row_state = {s: v[b:b + 1] for s, v in state.items()}
        ys_b, final_b = cell.forward(p, x[:n, b:b + 1], state=row_state)  # the row alone
        np.testing.assert_allclose(ys[:n, b], ys_b[:, 0], rtol=1e-13)
        assert not ys[n:, b].any()
        for s in cell.states:
            np.testing.assert_allclose(final[s][b], final_b[s][0], rtol=1e-13)
    full = cell.forward(p, x, state=state, lengths=np.full(B, T))
    plain = cell.forward(p, x, state=state)
    np.testing.assert_array_equal(full[0], plain[0])


def test_state_continues_a_sequence(setup):
    """Running T steps equals running 2 chunks with the first chunk's final state passed on."""
    cell, p, x = setup
    ys, final = cell.forward(p, x)
    ys1, mid = cell.forward(p, x[:2])
    ys2, final2 = cell.forward(p, x[2:], state=mid)
    np.testing.assert_allclose(np.concatenate([ys1, ys2]), ys, rtol=1e-13)
    np.testing.assert_allclose(final2["c"], final["c"], rtol=1e-13)


def test_empty_sequence(setup):
    cell, p, x = setup
    ys, final = cell.forward(p, x[:0])
    assert ys.shape == (0, B, H)
    assert not final["h"].any() and final["h"].shape == (B, H)


def test_several_inputs_take_a_dict(rng):
    cell = rnncc.compile("cell two\ninput a[A], b[C]\nstate h[H]\nh' = tanh(U @ a + V @ b + h)\n")
    p = cell.init_params(seed=1, dtype=np.float64, A=2, C=3, H=4)
    xa, xb = rng.standard_normal((5, 2, 2)), rng.standard_normal((5, 2, 3))
    ys, final = cell.forward(p, {"a": xa, "b": xb})
    h = np.zeros((2, 4))
    for t in range(5):
        h = np.tanh(xa[t] @ p["U"].T + xb[t] @ p["V"].T + h)
    np.testing.assert_allclose(final["h"], h, rtol=1e-13)
    with pytest.raises(ValueError, match="several inputs"):
        cell.forward(p, xa)
    with pytest.raises(KeyError, match="missing input 'b'"):
        cell.forward(p, {"a": xa})
    with pytest.raises(ValueError, match=r"x\['b'\] has shape \(4, 2, 3\) but the other inputs"):
        cell.forward(p, {"a": xa, "b": xb[:4]})


# --- bad arguments: each error names the array, its shape and the expected shape -------------


def _bad(setup, rng, case):
    cell, p, x = setup
    state = None
    lengths = None
    target = "reference"
    if case == "x-rank":
        x = x[0]
    elif case == "x-width":
        x = x[..., :2]
    elif case == "x-int":
        x = x.astype(np.int64)
    elif case == "x-float16":
        x = x.astype(np.float16)
    elif case == "param-shape":
        p = dict(p, U_f=np.zeros((H, H + 1)))
    elif case == "param-rank":
        p = dict(p, b_i=np.zeros((H, 1)))
    elif case == "param-missing":
        p = {k: v for k, v in p.items() if k != "b_o"}
    elif case == "param-unknown":
        p = dict(p, extra=np.zeros(3))
    elif case == "param-strings":
        p = dict(p, b_i=np.array(["a"] * H))
    elif case == "state-shape":
        state = {"h": np.zeros((B, H)), "c": np.zeros((B, H + 2))}
    elif case == "state-batch":
        state = {"h": np.zeros((B + 1, H)), "c": np.zeros((B + 1, H))}
    elif case == "state-missing":
        state = {"h": np.zeros((B, H))}
    elif case == "state-unknown":
        state = {"h": np.zeros((B, H)), "c": np.zeros((B, H)), "q": np.zeros((B, H))}
    elif case == "lengths-shape":
        lengths = np.array([1, 2])
    elif case == "lengths-range":
        lengths = np.array([1, 2, T + 1, 0])
    elif case == "lengths-negative":
        lengths = np.array([1, 2, -1, 0])
    elif case == "lengths-float":
        lengths = np.array([1.0, 2.0, 3.0, 4.0])
    elif case == "target":
        target = "gpu"
    return cell.forward(p, x, state=state, lengths=lengths, target=target)


BAD = {
    "x-rank": (ValueError, r"x has shape \(4, 3\) but the expected shape is \[T, B, I\]"),
    "x-width": (ValueError, r"parameter 'W_i' has shape \(5, 3\) but the expected shape is "
                r"\[H, I\] = \(5, 2\) \(I = 2 from x\)"),
    "x-int": (ValueError, "x has dtype int64; rnncc runs in float32 or float64"),
    "x-float16": (ValueError, "x has dtype float16"),
    "param-shape": (ValueError, r"parameter 'U_f' has shape \(5, 6\) but the expected shape is "
                    r"\[H, H\] = \(5, 5\)"),
    "param-rank": (ValueError, r"parameter 'b_i' has shape \(5, 1\) but the expected shape is "
                   r"\[H\]"),
    "param-missing": (KeyError, r"missing parameter 'b_o' \(shape \[H\]\)"),
    "param-unknown": (KeyError, "unknown parameter 'extra'"),
    "param-strings": (ValueError, "parameter 'b_i' has dtype <U1"),
    "state-shape": (ValueError, r"state\['c'\] has shape \(4, 7\) but the expected shape is "
                    r"\[B, H\] = \(4, 5\) \(H = 5 from parameter 'W_i'\)"),
    "state-batch": (ValueError, r"state\['h'\] has shape \(5, 5\) but the expected shape is "
                    r"\[B, H\] = \(4, 5\)"),
    "state-missing": (KeyError, r"missing state 'c' \(shape \[B, H\]\)"),
    "state-unknown": (KeyError, "unknown state 'q'"),
    "lengths-shape": (ValueError, r"lengths has shape \(2,\) but the expected shape is \[B\] = "
                      r"\(4,\)"),
    "lengths-range": (ValueError, "lengths must lie in 0..T = 0..6"),
    "lengths-negative": (ValueError, "lengths must lie in 0..T"),
    "lengths-float": (ValueError, "lengths has dtype float64; expected integers"),
    "target": (ValueError, "unknown target 'gpu'; available targets: 'reference'"),
}


@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_bad_arguments(setup, rng, case):
    exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        _bad(setup, rng, case)


@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_bad_arguments_after_good_calls_of_the_same_shapes(setup, rng, case):
    """A call shaped like one checked before skips the checks (check_forward remembers the
    shapes): a bad call after good ones must fail all the same, with the same message."""
    cell, p, x = setup
    cell.forward(p, x)
    cell.forward(p, x, state={"h": np.zeros((B, H)), "c": np.zeros((B, H))})
    exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        _bad(setup, rng, case)


def test_a_call_shaped_like_one_before_is_checked_alike(lstm, rng):
    from rnncc.runtime.arguments import CHECKED_SHAPES, check_forward
    p = lstm.init_params(seed=0, dtype=np.float32, I=I, H=H)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    given = {"h": rng.standard_normal((B, H)).astype(np.float32),
             "c": rng.standard_normal((B, H)).astype(np.float32)}
    for state in (None, given):
        first = check_forward(lstm, p, x, state, None)
        again = check_forward(lstm, p, x, state, None)
        assert again.sizes == first.sizes == {"I": I, "H": H}
        assert (again.T, again.B, again.dtype) == (T, B, np.float32)
        assert all(again.params[k] is p[k] for k in lstm.params)   # read, never copied
        for name in lstm.states:
            want = np.zeros((B, H)) if state is None else given[name]
            np.testing.assert_array_equal(again.state[name], want)
            assert again.state[name].dtype == np.float32
    # a float64 parameter among float32 ones is converted, as on the first call
    mixed = dict(p, b_i=p["b_i"].astype(np.float64))
    for _ in range(2):
        assert check_forward(lstm, mixed, x, None, None).params["b_i"].dtype == np.float32
    # the shapes remembered stay few
    for t in range(CHECKED_SHAPES + 5):
        check_forward(lstm, p, x[: t % T + 1].repeat(t // T + 1, axis=0), None, None)
    assert len(lstm._checked_shapes) <= CHECKED_SHAPES


def test_a_dimension_only_a_state_has_needs_the_state(rng):
    cell = rnncc.compile("cell t\ninput x[I]\nstate h[H], m[M]\nh' = tanh(W @ x)\nm' = m * 0.5\n")
    p = cell.init_params(seed=0, I=2, H=3, M=4)
    x = rng.standard_normal((3, 2, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="cannot tell the size of dimension M.*pass state="):
        cell.forward(p, x)
    state = {"h": np.zeros((2, 3), np.float32), "m": np.ones((2, 4), np.float32)}
    _, final = cell.forward(p, x, state=state)
    np.testing.assert_allclose(final["m"], 0.125)


def test_unknown_and_missing_states_are_named_together(shipped_cells):
    cell = shipped_cells["lstm"]
    p = cell.init_params(I=3, H=4)
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.raises(KeyError) as err:
        cell.forward(p, x, state={"h": np.zeros((1, 4)), "q": np.zeros((1, 4))})
    assert str(err.value) == ("unknown state 'q'; missing state 'c' (shape [B, H]); this cell's "
                              "states are: h, c")


def test_a_transposed_parameter_is_named_with_its_expected_shape(shipped_cells):
    cell = shipped_cells["lstm"]
    p = cell.init_params(I=16, H=32)
    x = np.zeros((2, 1, 16), np.float32)
    for name, want in (("W_f", "[H, I] = (32, 16) (H = 32 from parameter 'W_i'); it looks "
                               "transposed"),
                       ("U_o", "[H, H] = (32, 32) (H = 32 from parameter 'W_i')")):
        bad = dict(p)
        bad[name] = p[name].T.copy() if name == "W_f" else p[name][:, :16].T.copy()
        with pytest.raises(ValueError) as err:
            cell.forward(bad, x)
        assert str(err.value) == (f"parameter {name!r} has shape {bad[name].shape} but the "
                                  f"expected shape is {want}")
    bad = dict(p, W_i=p["W_i"].T.copy())   # the first parameter: nothing else has fixed H yet
    with pytest.raises(ValueError, match=r"parameter 'W_i' has shape \(16, 32\) but the expected "
                                         r"shape is \[H, I\] = \(32, 16\) \(I = 16 from x\); it "
                                         r"looks transposed"):
        cell.forward(bad, x)


@pytest.mark.parametrize("dtype", [np.float16, np.int32])
def test_cell_and_layer_refuse_other_dtypes_alike(shipped_cells, dtype):
    cell = shipped_cells["gru"]
    x = np.zeros((2, 1, 3), dtype)
    message = (f"x has dtype {np.dtype(dtype)}; rnncc runs in float32 or float64 (convert it "
               f"with .astype(np.float32))")
    with pytest.raises(ValueError) as from_cell:
        cell.forward(cell.init_params(I=3, H=4), x)
    with pytest.raises(ValueError) as from_layer:
        rnncc.RNN(cell, 3, 4, target="reference")(x)
    assert str(from_cell.value) == str(from_layer.value) == message

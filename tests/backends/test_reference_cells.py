"""Every shipped cell beyond rnn/lstm/gru equals a numpy version written here by hand from the
paper's equations (rnn_relu: PyTorch's nn.RNN documentation), independently of rnncc's graph."""
import numpy as np
import pytest

I, H, T, B = 4, 6, 5, 3


def sig(v):
    return 1 / (1 + np.exp(-v))


def layer_norm(v, eps=1e-5):
    """Normalise each row of v over all its values."""
    mean = v.mean(axis=1, keepdims=True)
    return (v - mean) / np.sqrt(v.var(axis=1, keepdims=True) + eps)


def lnlstm_step(p, x, h, c):
    pre = p["gx"] * layer_norm(x @ p["W"].T) + p["gh"] * layer_norm(h @ p["U"].T) + p["b"]
    i, f, g, o = np.split(pre, 4, axis=1)   # PyTorch's gate order
    c2 = sig(f) * c + sig(i) * np.tanh(g)
    h2 = sig(o) * np.tanh(p["gamma_c"] * layer_norm(c2) + p["beta_c"])
    return h2, {"h": h2, "c": c2}


def peephole_step(p, x, h, c):
    def pre(k):
        return x @ p[f"W_{k}"].T + h @ p[f"U_{k}"].T + p[f"b_{k}"]
    i = sig(pre("i") + p["p_i"] * c)
    f = sig(pre("f") + p["p_f"] * c)
    g = np.tanh(pre("g"))
    c2 = f * c + i * g
    o = sig(pre("o") + p["p_o"] * c2)
    h2 = o * np.tanh(c2)
    return h2, {"h": h2, "c": c2}


def mgu_step(p, x, h, c=None):
    f = sig(x @ p["W_f"].T + h @ p["U_f"].T + p["b_f"])
    n = np.tanh(x @ p["W_n"].T + (f * h) @ p["U_n"].T + p["b_n"])
    h2 = (1 - f) * h + f * n
    return h2, {"h": h2}


def indrnn_step(p, x, h, c=None):
    h2 = np.maximum(x @ p["W"].T + p["u"] * h + p["b"], 0)
    return h2, {"h": h2}


def rnn_relu_step(p, x, h, c=None):
    h2 = np.maximum(x @ p["W"].T + h @ p["U"].T + p["b"], 0)
    return h2, {"h": h2}


def mingru_step(p, x, h, c=None):
    """Feng et al. 2024, section 3.1: h_t = (1 - z_t) h_{t-1} + z_t h~_t."""
    z = sig(x @ p["W_z"].T + p["b_z"])
    candidate = x @ p["W_h"].T + p["b_h"]
    h2 = (1 - z) * h + z * candidate
    return h2, {"h": h2}


def minlstm_step(p, x, h, c=None):
    """Feng et al. 2024, section 3.2: f' = f / (f + i), i' = i / (f + i)."""
    f = sig(x @ p["W_f"].T + p["b_f"])
    i = sig(x @ p["W_i"].T + p["b_i"])
    candidate = x @ p["W_h"].T + p["b_h"]
    h2 = f / (f + i) * h + i / (f + i) * candidate
    return h2, {"h": h2}


def qrnn_step(p, x, h, c):
    """Bradbury et al. 2017, fo-pooling (eq. 4) with window 1."""
    z = np.tanh(x @ p["W_z"].T + p["b_z"])
    f = sig(x @ p["W_f"].T + p["b_f"])
    o = sig(x @ p["W_o"].T + p["b_o"])
    c2 = f * c + (1 - f) * z
    return o * c2, {"c": c2}


def sru_step(p, x, h, c):
    """Lei et al. 2018, eq. 3-5, the highway through a projection of x."""
    f = sig(x @ p["W_f"].T + p["v_f"] * c + p["b_f"])
    c2 = f * c + (1 - f) * (x @ p["W"].T)
    r = sig(x @ p["W_r"].T + p["v_r"] * c + p["b_r"])
    return r * c2 + (1 - r) * (x @ p["W_h"].T), {"c": c2}


STEPS = {"lnlstm": lnlstm_step, "rnn_relu": rnn_relu_step, "peephole_lstm": peephole_step,
         "mgu": mgu_step, "indrnn": indrnn_step, "mingru": mingru_step,
         "minlstm": minlstm_step, "qrnn": qrnn_step, "sru": sru_step}


def run_by_hand(step, cell, p, x, state, lengths):
    ys = np.zeros((x.shape[0], x.shape[1], H))
    cur = {k: v.copy() for k, v in state.items()}
    for t in range(x.shape[0]):
        y, new = step(p, x[t], cur.get("h"), cur.get("c"))
        alive = (t < lengths)[:, None]
        ys[t] = np.where(alive, y, 0)
        cur = {k: np.where(alive, new[k], cur[k]) for k in cur}
    return ys, cur


def test_every_shipped_cell_has_a_hand_written_check(shipped_cells):
    assert set(shipped_cells) - {"rnn", "lstm", "gru"} == set(STEPS)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_forward_equals_hand_written_numpy(shipped_cells, rng, name):
    cell = shipped_cells[name]
    p = cell.init_params(seed=2, dtype=np.float64, I=I, H=H)
    p = {k: v * 3 for k, v in p.items()}  # larger weights: saturating gates and ReLU kinks show
    x = rng.standard_normal((T, B, I))
    state = {s: rng.standard_normal((B, H)) for s in cell.states}
    lengths = np.array([5, 2, 0])
    ys, final = cell.forward(p, x, state=state, lengths=lengths)
    ys_ref, final_ref = run_by_hand(STEPS[name], cell, p, x, state, lengths)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-10, atol=1e-12)
    for s in cell.states:
        np.testing.assert_allclose(final[s], final_ref[s], rtol=1e-10, atol=1e-12)
    # a row of length 0 keeps its initial state and emits zeros
    for s in cell.states:
        np.testing.assert_array_equal(final[s][2], state[s][2])
    assert not ys[:, 2].any()

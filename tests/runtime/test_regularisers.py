"""Zoneout, recurrent dropout and weight drop as options of rnncc.RNN, for any cell: each
against numpy written here from the papers' equations, applying the masks the layer reports
(layer.masks); gradients against finite differences of that numpy with the masks held fixed;
eval mode against the expectation formulas; seeding and freshness of the masks; haste's zoneout
formula; a hypothesis-generated cell against its own oracle."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rnncc
from rnncc.regularise import Regularisers, derived_states, mask_input
from rnncc.runtime.gradcheck import numeric_gradient
from rnncc.runtime.layer import regularised_cell

from ..close import assert_close
from ..strategies import cell_specs

I, H, T, B = 3, 4, 6, 3
REGS = {"zoneout": {"h": 0.3, "c": 0.2}, "recurrent_dropout": 0.25, "weight_drop": 0.3}


def sig(v):
    return 1 / (1 + np.exp(-v))


def lstm_step(p, x, h, c, hm):
    """PyTorch's LSTM step; the recurrent products read hm (h with its dropout mask)."""
    pre = {k: x @ p[f"W_{k}"].T + hm @ p[f"U_{k}"].T + p[f"b_{k}"] for k in "ifgo"}
    c2 = sig(pre["f"]) * c + sig(pre["i"]) * np.tanh(pre["g"])
    return {"h": sig(pre["o"]) * np.tanh(c2), "c": c2}


def gru_step(p, x, h, hm):
    r = sig(x @ p["W_r"].T + hm @ p["U_r"].T + p["b_r"])
    z = sig(x @ p["W_z"].T + hm @ p["U_z"].T + p["b_z"])
    n = np.tanh(x @ p["W_n"].T + p["b_n"] + r * (hm @ p["U_n"].T + p["d_n"]))
    return {"h": (1 - z) * n + z * h}


def oracle(name, p, x, zoneout=None, dropout=None, weights=None, initial=None):
    """ys and finals of one unit. zoneout: state -> [T, B, H] (1: keep the previous value);
    dropout: state -> [B, H] (scaled); weights: parameter -> mask (scaled); initial: state ->
    [B, H] (default zeros)."""
    p = {k: v * weights[k] if weights and k in weights else v for k, v in p.items()}
    states = {s: np.zeros((x.shape[1], H)) for s in ("hc" if name == "lstm" else "h")}
    states.update(initial or {})
    ys = []
    for t in range(x.shape[0]):
        hm = states["h"] * dropout["h"] if dropout else states["h"]
        new = (lstm_step(p, x[t], states["h"], states["c"], hm) if name == "lstm"
               else gru_step(p, x[t], states["h"], hm))
        for s, m in (zoneout or {}).items():   # Krueger et al.: s' <- m * s + (1 - m) * s'
            new[s] = m[t] * states[s] + (1 - m[t]) * new[s]
        states = new
        ys.append(states["h"])
    return np.stack(ys), states


def unit_masks(layer, unit="l0"):
    m = layer.masks
    return (m.get("zoneout", {}).get(unit), m.get("recurrent_dropout", {}).get(unit),
            m.get("weight_drop", {}).get(unit))


def own(layer, unit="l0"):
    """The unit's parameters under the cell's names."""
    return {k[:-len(unit) - 1]: v for k, v in layer.params.items() if k.endswith("_" + unit)}


def regs_for(name):
    return {**REGS, "zoneout": {"h": 0.3, "c": 0.2} if name == "lstm" else {"h": 0.3}}


@pytest.mark.parametrize("target", ["reference", "cpu", "cuda"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_training_forward_applies_the_reported_masks(name, target):
    layer = rnncc.RNN(name, I, H, target=target, dtype=np.float64, seed=3, **regs_for(name))
    x = np.random.default_rng(0).standard_normal((T, B, I))
    y, final = layer(x)
    zoneout, dropout, weights = unit_masks(layer)
    assert set(zoneout) == set(regs_for(name)["zoneout"]) and set(dropout) == {"h"}
    assert set(weights) == ({f"U_{k}" for k in "ifgo"} if name == "lstm"
                            else {f"U_{k}" for k in "rzn"})
    want, want_final = oracle(name, own(layer), x, zoneout, dropout, weights)
    assert_close(y, want, 1e-12, "y")
    for s in want_final:
        assert_close(final[s][0], want_final[s], 1e-12, f"final {s}")


@pytest.mark.parametrize("target", ["reference", "cpu", "cuda"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_gradients_equal_finite_differences_with_the_masks_held_fixed(name, target):
    """Every gradient: parameters (the unmasked ones: weight drop's mask is part of the
    function), the input, and the initial states (recurrent dropout's masked state starts from
    h0 * m), with upstream gradients of the final states too."""
    layer = rnncc.RNN(name, I, H, target=target, dtype=np.float64, seed=5, **regs_for(name))
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    states = "hc" if name == "lstm" else "h"
    h0 = {s: rng.standard_normal((B, H)) for s in states}
    dfinal = {s: rng.standard_normal((B, H)) for s in states}
    layer(x, state={s: v[None] for s, v in h0.items()})
    dx = layer.backward(dy, dfinal={s: v[None] for s, v in dfinal.items()})
    zoneout, dropout, weights = unit_masks(layer)
    p = {k: v.copy() for k, v in own(layer).items()}
    xs = x.copy()

    def loss():
        ys, final = oracle(name, p, xs, zoneout, dropout, weights, h0)
        return float(np.sum(ys * dy) + sum(np.sum(final[s] * dfinal[s]) for s in states))

    for k in p:
        assert_close(layer.grads[f"{k}_l0"], numeric_gradient(loss, p[k]), 1e-7, f"d{k}")
    assert_close(dx, numeric_gradient(loss, xs), 1e-7, "dx")
    for s in states:
        assert_close(layer.dstate[s][0], numeric_gradient(loss, h0[s]), 1e-7, f"d{s}0")


@pytest.mark.parametrize("target", ["reference", "cpu"])
def test_eval_is_deterministic_and_the_expectation(target):
    """Eval: zoneout's s' <- p * s + (1 - p) * s', recurrent dropout and weight drop off."""
    layer = rnncc.RNN("lstm", I, H, target=target, dtype=np.float64, seed=2, **REGS)
    x = np.random.default_rng(2).standard_normal((T, B, I))
    layer(x)
    assert layer.masks
    layer.eval()
    y1, _ = layer(x)
    assert layer.masks == {}
    y2, _ = layer(x)
    np.testing.assert_array_equal(y1, y2)
    expect = {s: np.full((T, B, H), p) for s, p in REGS["zoneout"].items()}
    want, _ = oracle("lstm", own(layer), x, zoneout=expect)
    assert_close(y1, want, 1e-12, "eval y")
    # training masks with every probability 0 are the plain cell
    plain = rnncc.RNN("lstm", I, H, target=target, dtype=np.float64, seed=2)
    zero = rnncc.RNN("lstm", I, H, target=target, dtype=np.float64, seed=2,
                     zoneout={"h": 0.0}, recurrent_dropout=0.0, weight_drop=0.0)
    assert_close(zero(x)[0], plain(x)[0], 1e-15, "zero probabilities")


def test_masks_are_seeded_fresh_per_call_and_per_step_and_have_their_rates():
    x = np.zeros((200, 16, I))
    a = rnncc.RNN("lstm", I, 64, target="reference", seed=7, **REGS)
    b = rnncc.RNN("lstm", I, 64, target="reference", seed=7, **REGS)
    c = rnncc.RNN("lstm", I, 64, target="reference", seed=8, **REGS)
    for layer in (a, b, c):
        layer(x)
    first = a.masks
    for kind in first:
        for s, m in first[kind]["l0"].items():
            np.testing.assert_array_equal(m, b.masks[kind]["l0"][s])   # same seed, same masks
            assert not np.array_equal(m, c.masks[kind]["l0"][s])        # another seed
    a(x)
    for kind in first:                                                  # fresh per call
        for s, m in first[kind]["l0"].items():
            assert not np.array_equal(m, a.masks[kind]["l0"][s]), (kind, s)
    zh = first["zoneout"]["l0"]["h"]
    assert not np.array_equal(zh[0], zh[1])                             # fresh per step
    assert set(np.unique(zh)) == {0.0, 1.0} and abs(zh.mean() - 0.3) < 0.01
    for kind, p in (("recurrent_dropout", 0.25), ("weight_drop", 0.3)):
        for m in first[kind]["l0"].values():
            assert set(np.unique(m)) <= {0.0, np.float32(1 / (1 - p))}
            assert abs((m == 0).mean() - p) < 0.05, kind
    assert first["recurrent_dropout"]["l0"]["h"].shape == (16, 64)     # per sequence and row


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_zoneout_is_hastes_formula_for_its_lstm(mode):
    """haste's LSTM zoneout (lmnt-com/haste, lstm_forward_gpu.cu.cc), zoneout on h only: its
    mask is 1 where the new value passes (Bernoulli(1 - p)), training h_out = (h_new - h_prev)
    * mask + h_prev, inference h_out = p * h_prev + (1 - p) * h_new; the cell state is not
    zoned out, and h_new = o * tanh(c_new) reads it before any zoneout."""
    p_zone = 0.4
    layer = rnncc.RNN("lstm", I, H, target="cpu", dtype=np.float64, seed=4,
                      zoneout={"h": p_zone})
    x = np.random.default_rng(4).standard_normal((T, B, I))
    y, _ = layer(x, train=mode == "train")
    p = own(layer)
    passes = 1 - layer.masks["zoneout"]["l0"]["h"] if mode == "train" else None
    h, c = np.zeros((B, H)), np.zeros((B, H))
    for t in range(T):
        new = lstm_step(p, x[t], h, c, h)
        c = new["c"]
        if mode == "train":
            h = (new["h"] - h) * passes[t] + h
        else:
            h = p_zone * h + (1 - p_zone) * new["h"]
        assert_close(y[t], h, 1e-12, f"h at step {t}")


def test_stacks_bidirectional_and_dropout_between_layers(shipped_cells):
    """Every unit draws its own masks; the cpu target (threads, wavefront) runs what the
    reference interpreter runs with the same seed, forward and backward."""
    kw = dict(num_layers=2, bidirectional=True, dropout=0.2, dtype=np.float64, seed=11, **REGS)
    fast, slow = (rnncc.RNN("lstm", I, H, target=t, **kw) for t in ("cpu", "reference"))
    rng = np.random.default_rng(5)
    x, lengths = rng.standard_normal((T, B, I)), np.array([T, 2, 4])
    y, _ = fast(x, lengths=lengths)
    y0, _ = slow(x, lengths=lengths)
    assert set(fast.masks["zoneout"]) == {"l0", "l0_reverse", "l1", "l1_reverse"}
    assert_close(y, y0, 1e-12, "y")
    dy = rng.standard_normal(y.shape)
    assert_close(fast.backward(dy), slow.backward(dy), 1e-10, "dx")
    for k in fast.grads:
        assert_close(fast.grads[k], slow.grads[k], 1e-10, k)
    # one bidirectional layer: each direction against numpy with its own masks (the reverse
    # direction's in its own order: it runs the sequence backwards)
    one = rnncc.RNN("lstm", I, H, target="cpu", bidirectional=True, dtype=np.float64, seed=3,
                    **REGS)
    y, _ = one(x)
    forward, _ = oracle("lstm", own(one), x, *unit_masks(one))
    backward, _ = oracle("lstm", own(one, "l0_reverse"), x[::-1], *unit_masks(one, "l0_reverse"))
    assert_close(y[..., :H], forward, 1e-12, "forward direction")
    assert_close(y[..., H:], backward[::-1], 1e-12, "reverse direction")


def test_the_masks_fuse_into_the_steps_kernels_and_get_no_gradient():
    """Masks are inputs read by the step's own kernels; backward saves nothing for them, and
    zoneout adds no kernel to the forward step."""
    lstm = rnncc.load("lstm")
    cell = regularised_cell(lstm, Regularisers({"h": 0.1, "c": 0.1}))
    assert cell.inputs == ["x", mask_input("zoneout", "h"), mask_input("zoneout", "c")]
    assert list(cell.backward_graph.results["x"]) == ["x"]
    plans, plain = cell.compiled_plans(), lstm.compiled_plans()
    kinds = lambda plan: [s.kind for s in plan.phases["per_step"]]
    assert kinds(plans["forward"]) == kinds(plain["forward"])
    # recurrent dropout: the products read the masked state the step before computed
    both = regularised_cell(lstm, Regularisers({"h": 0.1, "c": 0.1}, recurrent_dropout=0.1))
    assert derived_states(both.graph) == {"dropped__h": ("h", "recurrent_dropout__h")}
    for direction in ("forward", "backward"):
        assert kinds(both.compiled_plans()[direction]) == kinds(plain[direction]), direction
    # the same regularisers, other probabilities: the same cell (one compilation)
    assert regularised_cell(lstm, Regularisers({"h": 0.5, "c": 0.01})) is cell


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"zoneout": {"q": 0.1}}, KeyError, "zoneout names 'q', which is not a state of cell "
                                        "'lstm'; its states are: h, c"),
    ({"zoneout": {"h": 1.0}}, ValueError, r"zoneout\['h'\] must be a probability in \[0, 1\)"),
    ({"zoneout": 0.1}, ValueError, "zoneout must be a dict state name -> probability"),
    ({"recurrent_dropout": -0.1}, ValueError, "recurrent_dropout must be a probability"),
    ({"weight_drop": True}, ValueError, "weight_drop must be a probability"),
])
def test_bad_regulariser_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rnncc.RNN("lstm", I, H, target="reference", **kwargs)


def test_regularisers_a_cell_cannot_have_are_refused():
    with pytest.raises(ValueError, match="cell 'mingru' reads none in a product"):
        rnncc.RNN("mingru", I, H, target="reference", recurrent_dropout=0.1)
    with pytest.raises(ValueError, match="cell 'indrnn' multiplies none"):
        rnncc.RNN("indrnn", I, H, target="reference", weight_drop=0.1)
    layer = rnncc.RNN("mingru", I, H, target="reference", zoneout={"h": 0.2})   # zoneout: any
    assert layer.regularisers.zoneout == {"h": 0.2}


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(gen=cell_specs(max_depth=2), seed=st.integers(0, 2**16))
def test_zoneout_and_recurrent_dropout_on_generated_cells(gen, seed):
    """Zoneout of every state against the generator's own oracle with the masks applied to the
    new states; with recurrent dropout too, the gradients against finite differences of the
    masked cell (rnncc's reference forward, masks held fixed)."""
    cell = rnncc.compile(gen.text)
    rng = np.random.default_rng(seed)
    sizes = {d: gen.sizes[d] for d in cell.dims}
    p = cell.init_params(seed=seed, dtype=np.float64, **sizes)
    Tg, Bg = 3, 2
    xs = {n: rng.standard_normal((Tg, Bg, gen.sizes[d])) for n, d in gen.inputs.items()}
    state = {n: rng.uniform(-1, 1, (Bg, gen.sizes[d])) for n, d in gen.states.items()}
    zoned = regularised_cell(cell, Regularisers({s: 0.5 for s in cell.states}))
    masks = {mask_input("zoneout", s): (rng.random((Tg, Bg, gen.sizes[d])) < 0.5) * 1.0
             for s, d in gen.states.items()}
    ys, final = zoned.forward(p, {**xs, **masks}, state=state)
    # the oracle, step by step, zoning out each new state
    cur = {k: v.copy() for k, v in state.items()}
    for t in range(Tg):
        env = {**{k: v[t] for k, v in xs.items()}, **cur}
        for key, fn in gen.equations:
            env[key] = fn(env, p)
        new = {s: np.broadcast_to(env[s + "'"], cur[s].shape) for s in cur}
        m = {s: masks[mask_input("zoneout", s)][t] for s in cur}
        zoned_new = {s: m[s] * cur[s] + (1 - m[s]) * new[s] for s in cur}
        if gen.output_key.endswith("'") and gen.output_key[:-1] in cur:
            y = zoned_new[gen.output_key[:-1]]
        else:
            y = np.broadcast_to(env[gen.output_key], ys[t].shape)
        assert_close(ys[t], y, 1e-9, f"y[{t}]\n{gen.text}")
        cur = zoned_new
    for s in cur:
        assert_close(final[s], cur[s], 1e-9, f"final {s}\n{gen.text}")
    regs = Regularisers({s: 0.5 for s in cell.states},
                        recurrent_dropout=0.5 if _reads_a_state_in_a_product(cell) else 0.0)
    both = regularised_cell(cell, regs)
    inputs, initial = {**xs, **masks}, dict(state)
    for name, (s, mask) in derived_states(both.graph).items():   # recurrent dropout's h * m
        inputs[mask] = np.broadcast_to(rng.random((Bg, state[s].shape[1])) * 2,
                                       (Tg, Bg, state[s].shape[1])).copy()
        initial[name] = state[s] * inputs[mask][0]
    dy = rng.standard_normal(ys.shape)
    g = both.backward(p, inputs, dy, state=initial)
    x_arrays = {k: v.copy() for k, v in inputs.items()}
    p_arrays = {k: v.copy() for k, v in p.items()}

    def loss():
        return float(np.sum(both.forward(p_arrays, x_arrays, state=initial)[0] * dy))

    for k in p:
        assert_close(g["params"][k], numeric_gradient(loss, p_arrays[k]), 1e-6,
                     f"d{k}\n{gen.text}")
    for k in xs:
        assert_close(g["x"][k], numeric_gradient(loss, x_arrays[k]), 1e-6, f"d{k}\n{gen.text}")
    assert set(g["x"]) == set(xs)


def _reads_a_state_in_a_product(cell) -> bool:
    from rnncc.regularise import product_states
    return bool(product_states(cell.graph))


@pytest.mark.parametrize("schedule", ["step", "lanes", "scan"])
def test_zoneout_keeps_a_linear_recurrence_linear(schedule):
    """Zoneout of minGRU's state, s' + m * (s - s'), is still affine in s: every schedule of the
    plain cell runs it (lanes, and scan's chunks), equal to the reference interpreter."""
    fast = rnncc.RNN("mingru", I, H, target="cpu", dtype=np.float64, seed=1,
                     zoneout={"h": 0.3}, schedule=schedule)
    slow = rnncc.RNN("mingru", I, H, target="reference", dtype=np.float64, seed=1,
                     zoneout={"h": 0.3})
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, B, I))
    assert_close(fast(x)[0], slow(x)[0], 1e-12, "y")
    dy = rng.standard_normal((300, B, H))
    assert_close(fast.backward(dy), slow.backward(dy), 1e-10, "dx")
    for k in fast.grads:
        assert_close(fast.grads[k], slow.grads[k], 1e-10, k)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(gen=cell_specs(max_depth=2), seed=st.integers(0, 2**16))
def test_weight_drop_on_generated_cells(gen, seed):
    """A layer of a generated one-input cell with weight drop: its output is the generator's
    oracle run with each recurrent matrix times the mask the layer reports, and its gradients
    are that oracle's finite differences with respect to the unmasked parameters."""
    from rnncc.regularise import recurrent_matrices
    assume(list(gen.inputs) == ["x"])
    cell = rnncc.compile(gen.text)
    assume(recurrent_matrices(cell.graph))
    sizes = {d: gen.sizes[d] for d in cell.dims}
    others = {d: n for d, n in sizes.items() if d not in ("I", "H")}
    layer = rnncc.RNN(cell, sizes["I"], sizes["H"], target="reference", dtype=np.float64,
                      seed=seed, weight_drop=0.5, **others)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 2, sizes["I"]))
    y, _ = layer(x)
    masks = layer.masks["weight_drop"]["l0"]
    assert set(masks) == set(recurrent_matrices(cell.graph))
    p = {k: v.copy() for k, v in own(layer).items()}
    zeros = {s: np.zeros((2, gen.sizes[d])) for s, d in gen.states.items()}

    def run():
        return gen.run({k: v * masks[k] if k in masks else v for k, v in p.items()},
                       {"x": x}, zeros)[0]

    assert_close(y, run(), 1e-9, f"y\n{gen.text}")
    dy = rng.standard_normal(y.shape)
    layer.backward(dy)
    loss = lambda: float(np.sum(run() * dy))
    for k in p:
        assert_close(layer.grads[f"{k}_l0"], numeric_gradient(loss, p[k]), 1e-6,
                     f"d{k}\n{gen.text}")

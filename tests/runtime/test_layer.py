"""rnncc.RNN, the layer stack: PyTorch parity (stacks, both directions, batch_first, packed
sequences) with weights moved by from_torch, to_torch round trips, dropout against finite
differences, and the layer's own contract: parameters as views of the stacked matrices, a reused
workspace that never leaks one call into the next, train/eval, errors."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import rnncc
from rnncc.interop.pytorch import LAYOUTS
from rnncc.runtime import schedule
from rnncc.runtime.layer import suffix
from rnncc.runtime.sublayer import reverse_within_lengths

from ..close import TOLERANCE, assert_close

TORCH_MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU,
                 "rnn_relu": lambda *a, **kw: torch.nn.RNN(*a, nonlinearity="relu", **kw)}
I, H, T, B = 5, 7, 12, 4
LENGTHS = np.array([12, 3, 1, 9])   # packed sequences hold no empty row: see the empty-row test


@pytest.fixture(autouse=True)
def two_cores(monkeypatch):
    """The cpu target's threaded schedules (directions at once, the layer wavefront) run on
    any machine: rnncc believes it has two cores."""
    monkeypatch.setattr(schedule, "cores", lambda: 2)


def close(got, want, dtype, what):
    assert_close(got, want, TOLERANCE[np.dtype(dtype)], what)


def torch_module(name, dtype, seed=3, **options):
    torch.manual_seed(seed)
    module = TORCH_MODULES[name](I, H, dtype=torch.float64 if dtype == np.float64
                                 else torch.float32, **options)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    return module


def torch_grads(name, module, layers, directions):
    """The rnncc parameter gradients that the torch module's gradients imply: a summed bias
    gets the gradient of either torch bias (both enter as the sum)."""
    g = {k: p.grad.double().numpy() for k, p in module.named_parameters()}
    out = {}
    for k in range(layers):
        for d in range(directions):
            end = suffix(k, d)
            for j, (w, u, b, db) in enumerate(LAYOUTS[name]):
                block = slice(j * H, (j + 1) * H)
                out[w + end] = g[f"weight_ih{end}"][block]
                out[u + end] = g[f"weight_hh{end}"][block]
                out[b + end] = g[f"bias_ih{end}"][block]
                if db is not None:
                    out[db + end] = g[f"bias_hh{end}"][block]
    return out


CASES = [(name, dtype, layers, bi, bf, "cpu")
         for name in ("rnn", "lstm", "gru") for dtype in (np.float64, np.float32)
         for layers in (1, 2, 3) for bi in (False, True) for bf in (False, True)]
CASES += [("rnn_relu", dtype, 2, bi, False, "cpu") for dtype in (np.float64, np.float32)
          for bi in (False, True)]
CASES += [(name, np.float64, layers, bi, False, target) for target in ("reference", "plan")
          for name in ("lstm", "gru") for layers in (1, 2) for bi in (False, True)]


@pytest.mark.parametrize("name,dtype,layers,bi,batch_first,target", CASES,
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_stack_equals_torch_on_packed_sequences(name, dtype, layers, bi, batch_first, target):
    D = 2 if bi else 1
    module = torch_module(name, dtype, num_layers=layers, bidirectional=bi,
                          batch_first=batch_first)
    layer = rnncc.from_torch(module, target=target)
    assert (layer.num_layers, layer.bidirectional, layer.batch_first, layer.dtype) == \
        (layers, bi, batch_first, np.dtype(dtype))

    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.uniform(-1, 1, (layers * D, B, H)).astype(dtype)
    c0 = rng.uniform(-1, 1, (layers * D, B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, D * H)).astype(dtype) * (
        np.arange(T)[:, None] < LENGTHS[None, :])[..., None]
    dh = rng.standard_normal((layers * D, B, H)).astype(dtype)
    dc = rng.standard_normal((layers * D, B, H)).astype(dtype)
    lstm = name == "lstm"
    to_layout = (lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1))) if batch_first else \
        (lambda a: a)

    xt = torch.from_numpy(to_layout(x)).requires_grad_(True)
    h0t = torch.from_numpy(h0).requires_grad_(True)
    c0t = torch.from_numpy(c0).requires_grad_(True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.as_tensor(LENGTHS),
                                                     batch_first=batch_first,
                                                     enforce_sorted=False)
    out, hn = module(packed, (h0t, c0t) if lstm else h0t)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first,
                                                    total_length=T)
    h_n, c_n = hn if lstm else (hn, None)
    loss = (out * torch.from_numpy(to_layout(dy))).sum() + (h_n * torch.from_numpy(dh)).sum()
    if lstm:
        loss = loss + (c_n * torch.from_numpy(dc)).sum()
    module.zero_grad()
    loss.backward()

    state = {"h": h0, "c": c0} if lstm else {"h": h0}
    y, final = layer(to_layout(x), state=state, lengths=LENGTHS)
    close(y, out.detach().numpy(), dtype, "y")
    close(final["h"], h_n.detach().numpy(), dtype, "final h")
    if lstm:
        close(final["c"], c_n.detach().numpy(), dtype, "final c")
    dx = layer.backward(to_layout(dy), {"h": dh, "c": dc} if lstm else {"h": dh})
    close(dx, xt.grad.numpy(), dtype, "dx")
    close(layer.dstate["h"], h0t.grad.numpy(), dtype, "dh0")
    if lstm:
        close(layer.dstate["c"], c0t.grad.numpy(), dtype, "dc0")
    want = torch_grads(name, module, layers, D)
    assert set(want) == set(layer.grads)
    for k, g in want.items():
        close(layer.grads[k], g, dtype, f"d{k}")
        assert layer.grads[k].dtype == np.dtype(dtype)


def test_an_empty_row_keeps_its_state_and_passes_its_gradient_through(shipped_cells):
    layer = rnncc.RNN(shipped_cells["gru"], I, H, num_layers=2, bidirectional=True,
                      dtype=np.float64)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((T, B, I))
    lengths = np.array([12, 0, 4, 0])
    h0 = rng.standard_normal((4, B, H))
    y, final = layer(x, state={"h": h0}, lengths=lengths)
    assert not y[:, [1, 3]].any()
    np.testing.assert_array_equal(final["h"][:, [1, 3]], h0[:, [1, 3]])
    dh = rng.standard_normal((4, B, H))
    dx = layer.backward(rng.standard_normal(y.shape), {"h": dh})
    assert not dx[:, [1, 3]].any()
    np.testing.assert_array_equal(layer.dstate["h"][:, [1, 3]], dh[:, [1, 3]])


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "rnn_relu"])
def test_to_torch_round_trips(name, shipped_cells):
    layer = rnncc.RNN(shipped_cells[name], I, H, num_layers=2, bidirectional=True,
                      dtype=np.float64, batch_first=True, seed=4)
    module = rnncc.to_torch(layer)
    assert isinstance(module, torch.nn.RNNBase) and module.batch_first and module.bidirectional
    x = np.random.default_rng(1).standard_normal((B, T, I))
    y, final = layer(x)
    with torch.no_grad():
        out, hn = module(torch.from_numpy(x))
    close(y, out.numpy(), np.float64, "y")
    close(final["h"], (hn[0] if name == "lstm" else hn).numpy(), np.float64, "h_n")
    back = rnncc.from_torch(module)
    assert back.cell.name == name and set(back.params) == set(layer.params)
    for k, v in layer.params.items():
        np.testing.assert_array_equal(back.params[k], v)


def test_from_torch_rejects_what_it_cannot_map(shipped_cells):
    with pytest.raises(TypeError, match="takes a torch.nn.LSTM, GRU or RNN, not Linear"):
        rnncc.from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="proj_size=3"):
        rnncc.from_torch(torch.nn.LSTM(I, H, proj_size=3))
    with pytest.raises(ValueError, match="float16"):
        rnncc.from_torch(torch.nn.GRU(I, H).half())
    with pytest.raises(ValueError, match="no PyTorch counterpart"):
        rnncc.to_torch(rnncc.RNN(shipped_cells["mgu"], I, H, target="reference"))


def test_torch_stays_optional_until_from_torch_or_to_torch():
    """A process where `import torch` fails runs stacks and says what it needs for to_torch."""
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None   # import torch raises ImportError
        import numpy as np, rnncc
        layer = rnncc.RNN("gru", 3, 4, num_layers=2, bidirectional=True, target="reference")
        y, final = layer(np.zeros((2, 1, 3)))
        print(y.shape, final["h"].shape)
        try:
            rnncc.to_torch(layer)
        except ImportError as e:
            print("ImportError")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["(2, 1, 8) (4, 1, 4)", "ImportError"]


def test_from_torch_without_biases_maps_zero_biases():
    module = torch_module("lstm", np.float64, bias=False)
    layer = rnncc.from_torch(module)
    assert not layer.params["b_i_l0"].any()
    x = np.random.default_rng(2).standard_normal((T, B, I))
    with torch.no_grad():
        out, _ = module(torch.from_numpy(x))
    close(layer(x)[0], out.numpy(), np.float64, "y")


# -- the layer wavefront and the directions on threads ---------------------------------------

def test_threaded_schedules_compute_what_one_piece_after_another_does(shipped_cells):
    """The wavefront (3 layers in 8 pieces, 2 workers) and the directions on two threads, in
    training and in eval calls, against the same layer run with wavefront off."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((40, 6, I)).astype(np.float32)
    lengths = rng.integers(0, 41, 6)
    for bi in (False, True):
        layer = rnncc.RNN(shipped_cells["lstm"], I, H, num_layers=3, bidirectional=bi, seed=1)
        assert layer._wavefront_pieces(40, 6) == (1 if bi else 8)
        assert layer._wavefront_pieces(40, 10_000) == 1   # steps that keep the cores busy alone
        runs = {}
        for wavefront in (True, False):
            layer.wavefront = wavefront
            y_eval, f_eval = layer(x, lengths=lengths, train=False)
            y, final = layer(x, lengths=lengths)
            dx = layer.backward(np.ones_like(y))
            runs[wavefront] = (y_eval, f_eval["c"], y, final["h"], dx,
                               {k: g.copy() for k, g in layer.grads.items()})
        for a, b in zip(runs[True], runs[False]):
            if isinstance(a, dict):
                for k in a:
                    close(a[k], b[k], np.float32, k)
            else:
                close(a, b, np.float32, "wavefront")


def test_schedule_runs_tasks_after_their_dependencies_and_raises_their_errors(monkeypatch):
    order = []

    def task(name, after=(), fail=False):
        def run(threads):
            if fail:
                raise ZeroDivisionError(name)
            order.append(name)
        return schedule.Task(run, after=after, priority=(name,))

    tasks = {n: task(n, after) for n, after in
             [("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ("b", "c"))]}
    schedule.run(tasks, workers=2)
    assert order[0] == "a" and order[-1] == "d" and sorted(order) == ["a", "b", "c", "d"]
    order.clear()
    schedule.run(tasks, workers=1)
    assert order == ["a", "b", "c", "d"]
    order.clear()
    assert schedule.concurrent_kernels()   # rnncc's compiled functions: always
    with monkeypatch.context() as m:  # Numba's workqueue layer: one task at a time, in order
        m.setenv("RNNCC_NATIVE", "0")   # (only Numba's functions care)
        m.setattr(schedule, "_concurrent", False)
        schedule.run(tasks, workers=2)
        assert order == ["a", "b", "c", "d"]
        layer = rnncc.RNN("gru", I, H, num_layers=2, target="cpu")
        assert layer._workers(2) == 1 and layer._wavefront_pieces(40, 6) == 1
    with pytest.raises(ZeroDivisionError, match="boom"):
        schedule.run({"x": task("boom", fail=True), "y": task("y", ("x",))}, workers=2)
    with pytest.raises(RuntimeError, match="wait for each other"):
        schedule.run({"x": task("x", ("y",)), "y": task("y", ("x",))}, workers=2)


def test_reverse_within_lengths_reverses_each_row_in_its_own_length():
    a = np.arange(5 * 3).reshape(5, 3, 1).astype(float)
    lengths = np.array([5, 2, 0])
    r = reverse_within_lengths(a, lengths)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(r[:n, b], a[:n, b][::-1])
        np.testing.assert_array_equal(r[n:, b], a[n:, b])
    np.testing.assert_array_equal(reverse_within_lengths(r, lengths), a)
    np.testing.assert_array_equal(reverse_within_lengths(a, None), a[::-1])


# -- dropout --------------------------------------------------------------------------------------

def test_dropout_is_seeded_fresh_per_call_and_off_in_eval(shipped_cells):
    make = lambda seed, p: rnncc.RNN(shipped_cells["gru"], I, H, num_layers=3, dropout=p,
                                     dtype=np.float64, seed=seed)
    a, b, c, plain = make(7, 0.4), make(7, 0.4), make(8, 0.4), make(7, 0.0)
    x = np.random.default_rng(3).standard_normal((T, B, I))
    ya, yb, yc = a(x)[0], b(x)[0], c(x)[0]
    np.testing.assert_array_equal(ya, yb)
    for ma, mb in zip(a.dropout_masks, b.dropout_masks):
        np.testing.assert_array_equal(ma, mb)
    assert len(a.dropout_masks) == 2 and a.dropout_masks[0].shape == (T, B, H)
    assert not np.array_equal(a.dropout_masks[0], c.dropout_masks[0])
    assert not np.array_equal(ya, yc)   # another seed: other masks (and parameters)
    masks = np.concatenate([m.ravel() for m in a.dropout_masks])
    assert set(np.unique(masks)) == {0.0, 1 / 0.6}
    assert abs(np.mean(masks == 0) - 0.4) < 0.05
    a(x)
    assert not np.array_equal(a.dropout_masks[0], b.dropout_masks[0])  # fresh per call
    y_plain = plain(x)[0]
    # eval mode runs the generated `infer` function, training the `forward` one: two functions
    # that LLVM may contract into FMAs differently, so they agree to rounding, not bit for bit
    close(a(x, train=False)[0], y_plain, np.float64, "eval call vs dropout 0")
    assert a.dropout_masks is None
    a.eval()
    close(a(x)[0], y_plain, np.float64, "eval mode vs dropout 0")


@pytest.mark.parametrize("bi", [False, True])
def test_dropout_gradients_match_finite_differences_with_the_mask_held(shipped_cells, bi):
    """Directional derivatives of sum(y * dy) over x and every parameter at once, against
    central differences of a forward computed by the reference interpreter, layer by layer,
    with the layer's masks."""
    cell = shipped_cells["lstm"]
    D = 2 if bi else 1
    layer = rnncc.RNN(cell, I, H, num_layers=2, bidirectional=bi, dropout=0.5,
                      dtype=np.float64, seed=2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    y, _ = layer(x, lengths=LENGTHS)
    masks = layer.dropout_masks
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)

    def forward(params, x):
        inp = x
        for k in range(2):
            outs = []
            for d in range(D):
                p = {n: params[n + suffix(k, d)] for n in cell.params}
                xin = inp if d == 0 else reverse_within_lengths(inp, LENGTHS)
                ys, _ = cell.forward(p, xin, lengths=LENGTHS)
                outs.append(ys if d == 0 else reverse_within_lengths(ys, LENGTHS))
            inp = np.concatenate(outs, axis=-1)
            if k == 0:
                inp = inp * masks[0]
        return inp

    params = {k: v.copy() for k, v in layer.params.items()}
    np.testing.assert_allclose(forward(params, x), y, atol=1e-12)
    for trial in range(2):
        vx = rng.standard_normal(x.shape)
        vp = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        eps = 1e-6
        plus = forward({k: v + eps * vp[k] for k, v in params.items()}, x + eps * vx)
        minus = forward({k: v - eps * vp[k] for k, v in params.items()}, x - eps * vx)
        numeric = np.sum((plus - minus) * dy) / (2 * eps)
        analytic = np.sum(dx * vx) + sum(np.sum(layer.grads[k] * vp[k]) for k in params)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)


# -- the layer's own contract -------------------------------------------------------------------

def test_reusing_the_workspace_never_leaks_one_call_into_the_next(shipped_cells):
    """Calls of different shapes, ragged and full, in a mixed order: each equals the reference
    interpreter run afresh (a stale row from an earlier call would show)."""
    cell = shipped_cells["gru"]
    layer = rnncc.RNN(cell, I, H, dtype=np.float64)
    rng = np.random.default_rng(11)
    p = {n: layer.params[n + "_l0"] for n in cell.params}
    for T_, B_, ragged in [(6, 4, True), (6, 4, False), (3, 2, False), (6, 4, True),
                           (6, 4, False)]:
        x = rng.standard_normal((T_, B_, I))
        lengths = rng.integers(0, T_ + 1, B_) if ragged else None
        dy = rng.standard_normal((T_, B_, H))
        y, final = layer(x, lengths=lengths)
        y_ref, final_ref = cell.forward(p, x, lengths=lengths)
        close(y, y_ref, np.float64, "y")
        close(final["h"][0], final_ref["h"], np.float64, "final")
        dx = layer.backward(dy)
        g = cell.backward(p, x, dy, lengths=lengths)
        close(dx, g["x"], np.float64, "dx")
        close(layer.dstate["h"][0], g["state"]["h"], np.float64, "dstate")
        for k in cell.params:
            close(layer.grads[k + "_l0"], g["params"][k], np.float64, k)


def test_parameters_are_views_updated_in_place_or_by_assignment(shipped_cells):
    cell = shipped_cells["lstm"]
    layer = rnncc.RNN(cell, I, H, dtype=np.float64, seed=2)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    original = {k[:-3]: v.copy() for k, v in layer.params.items()}
    for k, v in cell.init_params(seed=2, dtype=np.float64, I=I, H=H).items():
        np.testing.assert_array_equal(original[k], v)
    layer.params["W_f_l0"] -= 0.5            # in place: the stacked matrix sees it
    layer.params["b_o_l0"] = np.full(H, 0.3)  # assignment: copied into the same array
    assert np.all(layer.params["b_o_l0"] == 0.3)
    y, _ = layer(x)
    want = {**original, "W_f": original["W_f"] - 0.5, "b_o": np.full(H, 0.3)}
    close(y, cell.forward(want, x)[0], np.float64, "after updates")
    with pytest.raises(ValueError, match=r"parameter 'U_i_l0' has shape \(3,\) but the "
                                         r"expected shape is \(7, 7\)"):
        layer.params["U_i_l0"] = np.zeros(3)
    with pytest.raises(KeyError, match="unknown parameter 'nope'"):
        layer.params["nope"] = np.zeros(3)


def test_deeper_layers_and_directions_have_their_own_parameters(shipped_cells):
    layer = rnncc.RNN(shipped_cells["gru"], I, H, num_layers=2, bidirectional=True, seed=3)
    assert layer.params["W_r_l0"].shape == (H, I)
    assert layer.params["W_r_l1_reverse"].shape == (H, 2 * H)
    values = [layer.params["U_z" + suffix(k, d)] for k in range(2) for d in range(2)]
    assert all(not np.array_equal(a, b) for i, a in enumerate(values) for b in values[i + 1:])


def test_eval_mode_keeps_nothing_and_computes_the_same(shipped_cells):
    layer = rnncc.RNN(shipped_cells["lstm"], I, H, num_layers=2)
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
    y_train, final_train = layer(x, lengths=LENGTHS)
    layer.eval()
    y_eval, final_eval = layer(x, lengths=LENGTHS)
    # `infer` and `forward` are different generated functions (see the dropout test)
    close(y_eval, y_train, np.float32, "y")
    close(final_eval["c"], final_train["c"], np.float32, "final c")
    with pytest.raises(RuntimeError, match="eval mode"):
        rnncc.RNN(shipped_cells["lstm"], I, H).eval().backward(np.ones_like(y_eval))


def _one_layer_gradients(layer, x, dy):
    """The reference interpreter's gradients for a one-layer, one-direction layer's call."""
    p = {name: layer.params[name + "_l0"] for name in layer.cell.params}
    g = layer.cell.backward(p, x, dy, target="reference")
    return g["x"], {name + "_l0": v for name, v in g["params"].items()}


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_backward_refuses_a_tape_it_cannot_honour(shipped_cells, target):
    """One tape per layer: after two training calls backward() cannot tell which call dy is
    for, and a tape serves one backward(); both are refused, never answered wrongly."""
    layer = rnncc.RNN(shipped_cells["gru"], I, H, dtype=np.float64, target=target)
    rng = np.random.default_rng(8)
    x1, x2, x3 = (rng.standard_normal((T, B, I)) for _ in range(3))
    dy = rng.standard_normal((T, B, H))
    layer(x1)
    layer(x2)
    layer(x3)
    with pytest.raises(RuntimeError, match="3 training calls ran since the last backward"):
        layer.backward(dy)
    with pytest.raises(RuntimeError, match="needs a forward call"):   # the tape was dropped
        layer.backward(dy)
    layer(x2)
    layer.backward(dy)
    layer(x3)
    layer(x2)
    with pytest.raises(RuntimeError, match="2 training calls"):
        layer.backward(dy)
    dx, grads = _one_layer_gradients(layer, x1, dy)
    layer(x1)
    got = layer.backward(dy)
    close(got, dx, np.float64, "dx")
    for k, g in grads.items():
        close(layer.grads[k], g, np.float64, k)
    with pytest.raises(RuntimeError, match="already ran through the last training call"):
        layer.backward(dy)


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_an_eval_call_leaves_the_training_calls_tape(shipped_cells, target):
    layer = rnncc.RNN(shipped_cells["lstm"], I, H, dtype=np.float64, target=target)
    rng = np.random.default_rng(9)
    x1, x2 = rng.standard_normal((T, B, I)), rng.standard_normal((T + 3, B, I))
    dy = rng.standard_normal((T, B, H))
    layer(x1)
    layer(x2, train=False)
    layer.eval()
    layer(x2[:T])
    dx = layer.backward(dy)
    want_dx, grads = _one_layer_gradients(layer, x1, dy)
    close(dx, want_dx, np.float64, "dx")
    for k, g in grads.items():
        close(layer.grads[k], g, np.float64, k)


def test_layer_errors_name_the_array_and_its_expected_shape(shipped_cells):
    layer = rnncc.RNN(shipped_cells["rnn"], I, H, num_layers=2, bidirectional=True,
                      dtype=np.float64, target="reference")
    with pytest.raises(RuntimeError, match="needs a forward call"):
        layer.backward(np.zeros((T, B, 2 * H)))
    with pytest.raises(ValueError, match=r"x has shape \(12, 4, 3\) but the expected shape is "
                                         r"\[T, B, 5\]"):
        layer(np.zeros((T, B, 3)))
    with pytest.raises(ValueError, match=r"state\['h'\] has shape \(4, 7\) but the expected "
                                         r"shape is \[num_layers \* num_directions, B, 7\] = "
                                         r"\(4, 4, 7\)"):
        layer(np.zeros((T, B, I)), state={"h": np.zeros((B, H))})
    with pytest.raises(KeyError, match="unknown state 'c'"):
        layer(np.zeros((T, B, I)), state={"c": np.zeros((4, B, H))})
    with pytest.raises(ValueError, match=r"lengths must lie in 0..T"):
        layer(np.zeros((T, B, I)), lengths=[1, 2, 3, 13])
    layer(np.zeros((T, B, I)))
    with pytest.raises(ValueError, match=r"dy has shape \(12, 4, 7\) but the expected shape is "
                                         r"\[T, B, 14\]"):
        layer.backward(np.zeros((T, B, H)))
    with pytest.raises(ValueError, match=r"dy has shape \(3, 4, 14\).*T, B = 12, 4"):
        layer.backward(np.zeros((3, B, 2 * H)))
    with pytest.raises(ValueError, match=r"dfinal\['h'\] has shape \(2, 4, 7\)"):
        layer.backward(np.zeros((T, B, 2 * H)), {"h": np.zeros((2, B, H))})
    with pytest.raises(ValueError, match="several inputs"):
        rnncc.RNN("cell two\ninput x[I]\ninput z[I]\nstate h[H]\nh' = tanh(W @ x + V @ z)\n",
                  I, H)
    with pytest.raises(ValueError, match="unknown target"):
        rnncc.RNN("rnn", I, H, target="tpu")
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        rnncc.RNN("rnn", I, H, num_layers=0, target="reference")
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\]"):
        rnncc.RNN("rnn", I, H, num_layers=2, dropout=1.5, target="reference")
    with pytest.warns(UserWarning, match="dropout acts between layers"):
        rnncc.RNN("rnn", I, H, dropout=0.5, target="reference")


def test_the_caller_arrays_are_never_modified(shipped_cells):
    layer = rnncc.RNN(shipped_cells["lstm"], I, H, num_layers=2, bidirectional=True,
                      dropout=0.3, dtype=np.float64)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    state = {"h": rng.standard_normal((4, B, H)), "c": rng.standard_normal((4, B, H))}
    dy = rng.standard_normal((T, B, 2 * H))
    copies = [x.copy(), state["h"].copy(), state["c"].copy(), dy.copy()]
    layer(x, state=state, lengths=LENGTHS)
    layer.backward(dy, {"c": state["c"]})
    for before, after in zip(copies, [x, state["h"], state["c"], dy]):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("shape", [(0, 3, I), (6, 0, I), (1, 1, I)], ids=str)
def test_empty_and_single_step_sequences_equal_the_reference(shipped_cells, shape):
    for bi in (False, True):
        made = {t: rnncc.RNN(shipped_cells["lstm"], I, H, num_layers=3, bidirectional=bi,
                             dtype=np.float64, target=t, seed=5) for t in ("cpu", "reference")}
        x = np.random.default_rng(2).standard_normal(shape)
        got = {}
        for t, layer in made.items():
            y, final = layer(x)
            dx = layer.backward(np.ones_like(y), {"c": np.ones_like(final["c"])})
            got[t] = (y, final["h"], final["c"], dx, layer.dstate["h"],
                      *(layer.grads[k] for k in sorted(layer.grads)))
        assert got["cpu"][0].shape == shape[:2] + ((2 if bi else 1) * H,)
        for a, b in zip(got["cpu"], got["reference"]):
            assert a.shape == b.shape
            close(a, b, np.float64, f"shape {shape}, bidirectional={bi}")


def test_dimensions_beyond_input_and_hidden_are_keywords():
    spec = ("cell proj\ninput x[I]\nstate h[H], p[P]\n"
            "h' = tanh(W @ x + U @ h + V @ p)\np' = tanh(R @ h')\n")
    layer = rnncc.RNN(spec, I, H, P=3, num_layers=2, dtype=np.float64, target="reference")
    assert layer.params["V_l0"].shape == (H, 3) and layer.params["R_l1"].shape == (3, H)
    assert layer.params["W_l1"].shape == (H, H)
    x = np.random.default_rng(6).standard_normal((T, B, I))
    y, final = layer(x)
    assert y.shape == (T, B, H) and final["p"].shape == (2, B, 3)
    p0 = {n: layer.params[n + "_l0"] for n in layer.cell.params}
    p1 = {n: layer.params[n + "_l1"] for n in layer.cell.params}
    y_ref, _ = layer.cell.forward(p1, layer.cell.forward(p0, x)[0])
    np.testing.assert_array_equal(y, y_ref)
    with pytest.raises(ValueError, match="missing P"):
        rnncc.RNN(spec, I, H, target="reference")
    with pytest.raises(ValueError, match="pass it once, as hidden_size"):
        rnncc.RNN(spec, I, H, H=4, P=3, target="reference")


SRU = ("cell sru\ninput x[H]\nstate c[H]\noutput h\nf = sigmoid(W_f @ x + b_f)\n"
       "r = sigmoid(W_r @ x + b_r)\nc' = f * c + (1 - f) * (W @ x)\n"
       "h = r * tanh(c') + (1 - r) * x\n")


def test_a_cell_whose_input_and_state_share_a_dimension_is_a_layer():
    """SRU-like cells (input x[H], state c[H]) take input_size == hidden_size; a stack's layers
    feed each other, against the reference interpreter run layer by layer."""
    layer = rnncc.RNN(SRU, 6, 6, num_layers=2, dtype=np.float64)
    x = np.random.default_rng(4).standard_normal((T, B, 6))
    y, final = layer(x, lengths=LENGTHS)
    cell = layer.cell
    below, _ = cell.forward({n: layer.params[n + "_l0"] for n in cell.params}, x,
                            lengths=LENGTHS)
    want, want_final = cell.forward({n: layer.params[n + "_l1"] for n in cell.params}, below,
                                    lengths=LENGTHS)
    close(y, want, np.float64, "y")
    close(final["c"][1], want_final["c"], np.float64, "final c")
    with pytest.raises(ValueError, match=r"ties its input size to its hidden size .* "
                                         r"input_size \(6\) and hidden_size \(5\) must be equal"):
        rnncc.RNN(SRU, 6, 5)
    with pytest.raises(ValueError, match="layer 1 cannot read layer 0's output"):
        rnncc.RNN(SRU, 6, 6, num_layers=2, bidirectional=True)


@pytest.mark.parametrize("args, kwargs, fragment", [
    ((4, 5), {"P": 3}, "rnncc.RNN('lstm', input_size, hidden_size): besides input_size (I) and "
                       "hidden_size (H), the layer takes one keyword per other dimension of the "
                       "cell (none): unknown P"),
    ((0, 5), {}, "input_size must be a positive integer, got 0"),
    ((4, 2.5), {}, "hidden_size must be a positive integer, got 2.5"),
])
def test_layer_size_errors_name_the_layers_own_arguments(args, kwargs, fragment):
    with pytest.raises(ValueError) as err:
        rnncc.RNN("lstm", *args, **kwargs)
    assert fragment in str(err.value) and "init_params" not in str(err.value)


def test_a_layer_with_an_extra_dimension_names_the_missing_keyword():
    spec = "cell proj\ninput x[I]\nstate h[H], p[P]\nh' = tanh(W @ x + V @ p)\np' = tanh(R @ h')\n"
    with pytest.raises(ValueError, match=r"rnncc.RNN\('proj', input_size, hidden_size, P=...\)"
                                         r".*: missing P"):
        rnncc.RNN(spec, 3, 4)

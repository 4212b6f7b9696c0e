"""rnncc.torch.RNN against PyTorch's own nn.LSTM, nn.GRU and nn.RNN (the oracle): outputs, final
states and every gradient through torch's autograd; torch.autograd.gradcheck in float64;
training with torch.optim; each call's own tape; what torch's module conventions promise."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

torch = pytest.importorskip("torch")

import rnncc  # noqa: E402
import rnncc.torch  # noqa: E402
from rnncc.interop.pytorch import LAYOUTS  # noqa: E402

from ..close import assert_close  # noqa: E402
from ..noalias import check_arrays_apart  # noqa: E402
from ..strategies import cell_specs  # noqa: E402

TORCH = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
I, H, T, B = 3, 5, 6, 4


def torch_module(name, dtype, **config):
    torch.manual_seed(0)
    module = TORCH[name](I, H, **config).to(dtype)
    with torch.no_grad():   # biases away from zero, so that a wrong bias mapping shows
        for p in module.parameters():
            p.uniform_(-0.8, 0.8)
    return module


def expected_grads(cell, module, L, D, tol=1e-12) -> dict:
    """The rnncc parameters' gradients, from torch's: a weight's gate block; a bias PyTorch
    keeps as two (b_ih + b_hh, summed in rnncc) gets either one's gradient; a separate
    recurrent bias (the gru's d_n) gets bias_hh's block."""
    want = {}
    for k in range(L):
        for d in range(D):
            end = f"_l{k}" + ("_reverse" if d else "")
            grads = {n: getattr(module, n + end).grad.numpy()
                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            for g, (w, u, b, sep) in enumerate(LAYOUTS[cell.name]):
                block = slice(g * H, (g + 1) * H)
                want[w + end] = grads["weight_ih"][block]
                want[u + end] = grads["weight_hh"][block]
                want[b + end] = grads["bias_ih"][block]
                if sep:
                    want[sep + end] = grads["bias_hh"][block]
                else:  # both torch biases have the summed bias's gradient
                    assert_close(grads["bias_hh"][block], grads["bias_ih"][block], tol)
    return want


# (cell, layers, bidirectional, batch_first, packed ragged input, dtype): float32 once, the
# code paths being the float64 ones
CASES = [("lstm", 2, True, False, True, torch.float64), ("lstm", 1, False, True, False,
                                                         torch.float64),
         ("gru", 2, True, False, True, torch.float64), ("gru", 1, False, True, False,
                                                       torch.float64),
         ("rnn", 2, True, True, True, torch.float64), ("rnn", 1, False, False, False,
                                                      torch.float64),
         ("lstm", 2, True, True, True, torch.float32)]


@pytest.mark.parametrize("name, L, bi, batch_first, packed, dtype", CASES)
def test_equals_torch_forward_and_every_gradient(name, L, bi, batch_first, packed, dtype):
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    ref = torch_module(name, dtype, num_layers=L, bidirectional=bi, batch_first=batch_first)
    m = rnncc.torch.RNN.from_torch(ref)
    D = 2 if bi else 1
    gen = torch.Generator().manual_seed(1)
    shape = (B, T, I) if batch_first else (T, B, I)
    x_data = torch.randn(*shape, generator=gen, dtype=dtype)
    states = {"h": torch.randn(L * D, B, H, generator=gen, dtype=dtype)}
    if name == "lstm":
        states["c"] = torch.randn(L * D, B, H, generator=gen, dtype=dtype)
    lengths = torch.tensor([6, 2, 5, 1])
    outs = []
    for run in ("rnncc", "torch"):
        x = x_data.clone().requires_grad_(True)
        s = {k: v.clone().requires_grad_(True) for k, v in states.items()}
        hx = (s["h"], s["c"]) if name == "lstm" else s["h"]
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=batch_first, enforce_sorted=False) if packed else x
        if run == "rnncc":
            y, final = m(inp, s)
        else:
            y, hn = ref(inp, hx)
            final = {"h": hn[0], "c": hn[1]} if name == "lstm" else {"h": hn}
        if packed:
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=batch_first,
                                                          total_length=T)
        # a loss that reaches every output and final state, with different weights
        weights = torch.linspace(-1, 2, y.numel(), dtype=dtype).reshape(y.shape)
        loss = (y * weights).sum() + sum((f * f).sum() for f in final.values())
        loss.backward()
        outs.append((y.detach(), {k: v.detach() for k, v in final.items()}, x.grad,
                     {k: v.grad for k, v in s.items()}))
    (y, final, dx, dstate), (yt, finalt, dxt, dstatet) = outs
    assert_close(y.numpy(), yt.numpy(), tol, "y")
    for k in final:
        assert_close(final[k].numpy(), finalt[k].numpy(), tol, f"final {k}")
        assert_close(dstate[k].numpy(), dstatet[k].numpy(), tol, f"d{k}0")
    assert_close(dx.numpy(), dxt.numpy(), tol, "dx")
    want = expected_grads(m.cell, ref, L, D, tol)
    got = {n: p.grad.numpy() for n, p in m.named_parameters()}
    assert set(got) == set(want)
    for n in want:
        assert_close(got[n], want[n], tol, f"d{n}")


def small_module(name, dtype=torch.float64, **config):
    return rnncc.torch.RNN.from_torch(torch_module(name, dtype, **config))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "torch.compile"])
def test_a_first_layer_skips_the_input_gradient_nobody_wants(compiled, monkeypatch):
    """x is data (no requires_grad): the first layer's backward is asked for no input gradient
    (its GEMM is skipped), the second layer's is (it flows into the first layer's output),
    and every parameter gradient still equals torch's."""
    from rnncc.runtime.sublayer import SubLayer
    asked = []
    call_backward = SubLayer.call_backward

    def spy(unit, *args, inputs=True, **kwargs):
        asked.append((unit, inputs))
        return call_backward(unit, *args, inputs=inputs, **kwargs)
    monkeypatch.setattr(SubLayer, "call_backward", spy)
    ref = torch_module("gru", torch.float64, num_layers=2, bidirectional=True)
    m = rnncc.torch.RNN.from_torch(ref)
    x = torch.randn(T, B, I, dtype=torch.float64)
    forward = torch.compile(m, fullgraph=True) if compiled else m
    forward(x)[0].pow(2).sum().backward()
    ref(x)[0].pow(2).sum().backward()
    units = m._layer._units
    assert {(u, False) for u in units[0]} | {(u, True) for u in units[1]} == set(asked)
    want = expected_grads(m.cell, ref, 2, 2)
    for n, p in m.named_parameters():
        assert_close(p.grad.numpy(), want[n], 1e-10, f"d{n}")


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_gradcheck_through_functional_call(name):
    """torch.autograd.gradcheck (float64 finite differences) with respect to the input, the
    initial states and every parameter, as values given to torch.func.functional_call."""
    m = small_module(name, bidirectional=True)
    names = [n for n, _ in m.named_parameters()]
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, I, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, H, generator=gen, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]

    def f(x, h0, *values):
        y, final = torch.func.functional_call(m, dict(zip(names, values)),
                                              (x, {"h": h0}, [4, 3]))
        return y, final["h"]
    assert torch.autograd.gradcheck(f, (x, h0, *params), eps=1e-6, atol=1e-7, rtol=1e-6)
    # the module's own parameters are untouched by the values functional_call ran with
    for p, q in zip(m.parameters(), params):
        assert torch.equal(p.detach(), q.detach())


def test_gradcheck_a_cell_torch_does_not_have():
    """A cell torch has no module for (the shipped minimal gated unit), through the same
    path."""
    m = rnncc.torch.RNN("mgu", I, H, dtype=torch.float64, seed=3)
    names = [n for n, _ in m.named_parameters()]
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 2, I, generator=gen, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]

    def f(x, *values):
        return torch.func.functional_call(m, dict(zip(names, values)), (x,))[0]
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("schedule", ["lanes", "scan", "step"])
def test_gradcheck_a_cell_whose_state_meets_no_matrix_in_each_schedule(schedule):
    """minGRU (a linear recurrence) through the module in each schedule of its time loop,
    ragged, against finite differences."""
    m = rnncc.torch.RNN("mingru", I, H, dtype=torch.float64, seed=5, schedule=schedule)
    assert m._layer.schedule == schedule
    names = [n for n, _ in m.named_parameters()]
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 3, I, generator=gen, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]

    def f(x, *values):
        return torch.func.functional_call(m, dict(zip(names, values)), (x, None, [4, 2, 3]))[0]
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_adam_trains_like_torch():
    """20 Adam steps of from_torch(nn.GRU) and of the nn.GRU itself from the same weights and
    data, updating the weight matrices (rnncc sums torch's two biases into one parameter, so a
    bias step would differ by design): the same losses."""
    ref = torch_module("gru", torch.float64, num_layers=2)
    m = rnncc.torch.RNN.from_torch(ref)
    for module in (ref, m):
        for n, p in module.named_parameters():
            p.requires_grad_(n.startswith(("weight", "W_", "U_")))
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(T, B, I, generator=gen, dtype=torch.float64)
    target = torch.randn(T, B, H, generator=gen, dtype=torch.float64)
    losses = {}
    for key, module in (("torch", ref), ("rnncc", m)):
        opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=0.05)
        losses[key] = []
        for _ in range(20):
            opt.zero_grad()
            y = module(x)[0]
            loss = ((y - target) ** 2).mean()
            loss.backward()
            opt.step()
            losses[key].append(loss.item())
    assert losses["rnncc"][-1] < 0.7 * losses["rnncc"][0]   # it trains
    assert_close(np.array(losses["rnncc"]), np.array(losses["torch"]), 1e-8, "losses")


def test_an_optimizer_step_is_what_the_next_call_uses():
    """A parameter shares its memory with the stacked matrix the kernels multiply with. (The
    weights take the step: a summed bias would step twice in torch, once in rnncc.)"""
    ref = torch_module("lstm", torch.float64)
    m = rnncc.torch.RNN.from_torch(ref)
    x = torch.randn(T, B, I, dtype=torch.float64)
    for module in (ref, m):
        weights = [p for n, p in module.named_parameters() if n.startswith(("weight", "W_",
                                                                             "U_"))]
        module(x)[0].square().sum().backward()
        torch.optim.SGD(weights, lr=0.5).step()
    assert_close(m(x)[0].detach().numpy(), ref(x)[0].detach().numpy(), 1e-10)


def test_no_array_a_generated_function_writes_overlaps_another_argument(monkeypatch):
    """The promise the generated functions make LLVM (cpu/noalias.py), through rnncc.torch:
    parameters are views of torch's tensors and of the stacked matrices they share memory
    with. Two training steps, each followed by an optimizer step (two layers, both
    directions), then a call under no_grad (infer); tests/noalias.py checks every call."""
    checked = check_arrays_apart(monkeypatch)
    ref = torch_module("lstm", torch.float64, num_layers=2, bidirectional=True)
    m = rnncc.torch.RNN.from_torch(ref)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    for _ in range(2):
        m(x)[0].square().sum().backward()
        torch.optim.SGD(m.parameters(), lr=0.1).step()
    with torch.no_grad():
        m(x)
    assert set(checked) == {"infer", "forward", "backward"}


def test_each_call_owns_its_tape():
    """A layer applied to two sequences, then one backward: both uses' gradients (a shared
    encoder), as torch's module gives them."""
    ref = torch_module("gru", torch.float64)
    m = rnncc.torch.RNN.from_torch(ref)
    gen = torch.Generator().manual_seed(6)
    x1 = torch.randn(T, B, I, generator=gen, dtype=torch.float64)
    x2 = torch.randn(T - 2, B, I, generator=gen, dtype=torch.float64)
    for module in (ref, m):
        (module(x1)[0].sum() + 3 * module(x2)[0].square().sum()).backward()
    want = expected_grads(m.cell, ref, 1, 1)
    for n, p in m.named_parameters():
        assert_close(p.grad.numpy(), want[n], 1e-10, n)


def test_no_grad_keeps_nothing_and_eval_keeps_gradients():
    m = small_module("lstm", num_layers=2, dropout=0.5)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        y, final = m(x)
    assert not y.requires_grad and not final["h"].requires_grad
    m.eval()   # dropout off; gradients still flow (saliency maps need them)
    y1 = m(x)[0]
    y1.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.equal(y1.detach(), m(x)[0].detach())   # no dropout: the same call twice
    m.train()
    torch.manual_seed(0)
    a = m(x)[0]
    torch.manual_seed(1)
    assert not torch.equal(a, m(x)[0])   # dropout between the layers, in training mode


def test_double_backward_is_refused_clearly():
    m = small_module("rnn")
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(m(x)[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="does not differentiate its gradients"):
        g.sum().backward()


def test_conversions_and_state_dict():
    ref = torch_module("gru", torch.float64)
    m = rnncc.torch.RNN.from_torch(ref).float()       # float64 -> float32
    x = torch.randn(T, B, I, dtype=torch.float64)
    y32 = m(x.float())[0]
    assert y32.dtype == torch.float32
    assert_close(y32.detach().numpy(), ref(x)[0].detach().numpy(), 1e-4)
    m2 = rnncc.torch.RNN("gru", I, H, seed=9)          # other weights, then loaded
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2(x.float())[0], y32)
    assert [n for n, _ in m.named_parameters()] == [f"{p}_l0" for p in m.cell.params]


def test_clear_errors():
    m = small_module("lstm", num_layers=2)
    x = torch.randn(T, B, I, dtype=torch.float64)
    with pytest.raises(TypeError, match="float16"):
        m(x.half())
    with pytest.raises(TypeError, match="torch.float32 but the module's is torch.float64"):
        m(x.float())
    with pytest.raises(ValueError, match=r"expected shape is \[T, B, 3\]"):
        m(x[..., :2])
    with pytest.raises(ValueError, match=r"state\['h'\] has shape"):
        m(x, {"h": torch.zeros(1, B, H, dtype=torch.float64)})
    with pytest.raises(KeyError, match="unknown state 'q'"):
        m(x, {"q": torch.zeros(2, B, H, dtype=torch.float64)})
    with pytest.raises(ValueError, match="is on meta"):
        m(torch.zeros(T, B, I, dtype=torch.float64, device="meta"))
    with pytest.raises(TypeError, match="float32 or torch.float64"):
        rnncc.torch.RNN("gru", I, H, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="runs on the CPU"):
        rnncc.torch.RNN("gru", I, H, device="cuda")


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_torch_compile_fullgraph_equals_eager():
    """A model with an rnncc layer compiles with torch.compile(fullgraph=True): the layer's
    forward and BPTT are custom operators, opaque to the compiler (no graph break, no unrolled
    time loop), and the compiled model computes the eager values and gradients."""
    ref = torch_module("lstm", torch.float64, num_layers=2, bidirectional=True)
    layer = rnncc.torch.RNN.from_torch(ref)
    head = torch.nn.Linear(2 * H, 2).double()

    def model(x, lengths):
        y, final = layer(x, lengths=lengths)
        return (head(y) ** 2).sum() + final["c"].sum()

    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2, 5, 1])
    grads = []
    for fn in (model, torch.compile(model, fullgraph=True)):
        for p in [*layer.parameters(), *head.parameters(), x]:
            p.grad = None
        loss = fn(x, lengths)
        loss.backward()
        grads.append([loss.detach()] + [p.grad.clone() for p in [*layer.parameters(), x]])
    for eager, compiled in zip(*grads):
        assert_close(compiled.numpy(), eager.numpy(), 1e-12)


def test_the_custom_operators_pass_torchs_opcheck():
    """What torch.compile runs (the custom operators; eager calls take the same implementation
    through autograd.Functions): schema, fake-tensor and autograd registration, checked by
    torch's own tool. (Its AOT check compares two calls' outputs whole: the tape handle, a
    counter, differs between calls by design.)"""
    m = small_module("gru")
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h = torch.zeros(B, H, dtype=torch.float64, requires_grad=True)
    params = [getattr(m, p + "_l0") for p in m.cell.params]
    for keep, lengths in ((True, None), (False, torch.tensor([6, 2, 5, 1]))):
        result = torch.library.opcheck(
            rnncc.torch._unit_forward, (m._unit_ids[0], keep, lengths, x, [h], params, []),
            test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
        assert set(result.values()) == {"SUCCESS"}, result


def test_a_calls_tape_is_released_with_its_graph():
    """The tape lives until torch frees the call's graph; its workspace then serves the next
    call (a loop of training calls holds one)."""
    m = small_module("gru")
    unit = m._layer._units[0][0]
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    before = len(rnncc.torch._TAPES)   # other tests' graphs may still be alive
    for _ in range(3):
        m(x)[0].sum().backward()
    assert len(rnncc.torch._TAPES) == before and len(unit._free) == 1
    y, final = m(x)
    assert len(rnncc.torch._TAPES) == before + 1 and not unit._free   # alive with the graph
    del y, final
    assert len(rnncc.torch._TAPES) == before and len(unit._free) == 1


@pytest.mark.filterwarnings("ignore::rnncc.SpecWarning")
@settings(max_examples=3, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(gen=cell_specs())
def test_gradcheck_of_generated_cells(gen):
    """torch.autograd.gradcheck through the module for random valid specs (one input; the
    layer takes one), bidirectional, ragged: every gradient the custom operators return."""
    cell = rnncc.compile(gen.text)
    assume(len(cell.inputs) == 1)
    x_dim = cell.symbolic_shapes[cell.inputs[0]][0]
    h_dim = cell.symbolic_shapes[cell.states[0]][0]
    assume(isinstance(x_dim, str) and isinstance(h_dim, str) and x_dim != h_dim)
    sizes = {d: gen.sizes[d] for d in cell.dims}
    others = {d: n for d, n in sizes.items() if d not in (x_dim, h_dim)}
    m = rnncc.torch.RNN(cell, sizes[x_dim], sizes[h_dim], bidirectional=True,
                        dtype=torch.float64, seed=5, **others)
    names = [n for n, _ in m.named_parameters()]
    gen_ = torch.Generator().manual_seed(7)
    x = torch.randn(3, 2, sizes[x_dim], generator=gen_, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]

    def f(x, *values):
        y, final = torch.func.functional_call(m, dict(zip(names, values)), (x, None, [3, 2]))
        return y, *final.values()
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)

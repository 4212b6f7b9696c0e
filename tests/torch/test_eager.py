"""rnncc.torch.Eager, the eager PyTorch module generated from a cell's graph, against the numpy
reference interpreter (outputs, final states, every gradient by its BPTT) and, for the shipped
lstm, gru and rnn, against torch.nn's own modules; each op's torch spelling against the op's
numpy evaluation; TorchScript."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnncc  # noqa: E402
import rnncc.torch  # noqa: E402
from rnncc.interop.pytorch import params_to_torch  # noqa: E402
from rnncc.ops import REGISTRY  # noqa: E402
from rnncc.ops.base import EvalContext, Stacked  # noqa: E402
from rnncc.interop.torch_source import HELPERS, SPELLING  # noqa: E402

from ..close import assert_close  # noqa: E402

I, H, T, B = 3, 5, 6, 4
ONE_INPUT = [n for n in rnncc.shipped() if len(rnncc.load(n).inputs) == 1]
# ops only autodiff and the passes put into backward graphs: never in a forward one
BACKWARD_ONLY = {"matmul_t", "outer_sum", "batch_sum", "argmax_weight", "zeros"}


def _numpy(module) -> dict:
    """The module's parameters as the spec names them, float64 numpy."""
    return {name.removesuffix("_l0"): p.detach().numpy() for name, p in
            module.named_parameters()}


@pytest.mark.parametrize("name", ONE_INPUT)
def test_eager_module_is_the_cell(name):
    """Outputs, final states and the gradients of x, the initial states and every parameter
    equal the reference interpreter's forward and BPTT, from a non-zero initial state."""
    cell = rnncc.load(name)
    module = rnncc.torch.Eager(name, I, H, dtype=torch.float64, seed=3)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    sizes = module.sizes
    state = {s: rng.standard_normal((B, int(np.prod(cell.shape(s, **sizes)))))
             for s in cell.states}
    dys = rng.standard_normal((T, B, module_output(cell, sizes)))
    dfinal = {s: rng.standard_normal(v.shape) for s, v in state.items()}
    p = _numpy(module)

    want_ys, want_final = cell.forward(p, x, state=state)
    want = cell.backward(p, x, dys, state=state, dfinal=dfinal)

    xt = torch.tensor(x, requires_grad=True)
    st = {s: torch.tensor(v[None], requires_grad=True) for s, v in state.items()}
    ys, finals = module(xt, st)
    assert_close(ys.detach().numpy(), want_ys, 1e-12)
    for s in cell.states:
        assert finals[s].shape == (1, B, state[s].shape[1])
        assert_close(finals[s][0].detach().numpy(), want_final[s], 1e-12)
    loss = (ys * torch.tensor(dys)).sum() + sum(
        (finals[s][0] * torch.tensor(dfinal[s])).sum() for s in cell.states)
    loss.backward()
    assert_close(xt.grad.numpy(), want["x"], 1e-10)
    for s in cell.states:
        assert_close(st[s].grad[0].numpy(), want["state"][s], 1e-10)
    for pname, param in module.named_parameters():
        assert param.grad is not None, pname
        assert_close(param.grad.numpy(), want["params"][pname.removesuffix("_l0")], 1e-10)


def module_output(cell, sizes) -> int:
    return int(np.prod(cell.shape_of_dims(cell.graph.node(cell.graph.output).shape, sizes)))


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_shipped_cells_match_torch_nn(name):
    """The generated module with torch.nn's weights computes what torch.nn computes."""
    torch.manual_seed(0)
    reference = getattr(torch.nn, name.upper())(I, H).double()
    module = rnncc.torch.Eager(name, I, H, dtype=torch.float64)
    from rnncc.interop.pytorch import params_from_torch
    weights = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    mapped = params_from_torch(rnncc.load(name), weights)
    module.load_state_dict({k + "_l0": torch.tensor(v) for k, v in mapped.items()})
    x = torch.randn(T, B, I, dtype=torch.float64)
    ys, finals = module(x)
    want_ys, want_h = reference(x)
    assert_close(ys.detach().numpy(), want_ys.detach().numpy(), 1e-12)
    got_h = finals["h"]
    assert_close(got_h.detach().numpy(), (want_h[0] if name == "lstm" else want_h)
                 .detach().numpy(), 1e-12)
    assert params_to_torch   # (the mapping both ways is tests/interop's; here only one way)


def test_state_dict_moves_between_eager_and_rnncc_module():
    """Same parameter names and shapes as rnncc.torch.RNN: a state dict loads either way, and
    the two modules then compute the same outputs."""
    compiled = rnncc.torch.RNN("lnlstm", I, H, dtype=torch.float64, seed=5)
    eager = rnncc.torch.Eager("lnlstm", I, H, dtype=torch.float64)
    eager.load_state_dict(compiled.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert_close(eager(x)[0].detach().numpy(), compiled(x)[0].detach().numpy(), 1e-12)


def test_same_seed_same_weights_as_rnncc():
    eager = rnncc.torch.Eager("gru", I, H, seed=7)
    layer = rnncc.RNN("gru", I, H, seed=7)
    for name, p in eager.named_parameters():
        np.testing.assert_array_equal(p.detach().numpy(), layer.params[name])


@pytest.mark.parametrize("name", ["lnlstm", "qrnn"])
def test_torchscript_takes_the_module(name):
    module = rnncc.torch.Eager(name, I, H, dtype=torch.float64)
    with pytest.warns(DeprecationWarning):   # (torch 2.13 deprecates it; still what users run)
        scripted = torch.jit.script(module)
    x = torch.randn(T, B, I, dtype=torch.float64)
    # (TorchScript's fuser may sum in another order)
    assert_close(scripted(x)[0].detach().numpy(), module(x)[0].detach().numpy(), 1e-9)


def test_source_reads_as_the_cell():
    """The generated loop: stacked gate matrices once, the input product before the loop,
    values the spec names under their names."""
    source = rnncc.torch.Eager("lstm", I, H).source
    loop = source.index("for t in range(T)")
    assert source.index("torch.cat([p_W_i, p_W_f, p_W_g, p_W_o], 0)") < loop
    assert "torch.matmul(x, " in source[:loop]
    for spec_name in ("v_i", "v_f", "v_g", "v_o", "v_c_next", "v_h_next"):
        assert f"        {spec_name} = " in source[loop:]


def test_custom_spec_text_with_a_scalar_state():
    """A cell nobody here shipped, with a one-number state and a reduction."""
    spec = """
cell gated_norm
input x[I]
state h[H], n[1]
output h
param W[H, I], U[H, H], b[H]
a = tanh(W @ x + U @ h + b)
n' = 0.5 * n + mean(a * a)
h' = a / sqrt(sum(n') + 1)
"""
    cell = rnncc.compile(spec)
    module = rnncc.torch.Eager(cell, I, H, dtype=torch.float64)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    ys, finals = module(torch.tensor(x))
    want_ys, want_final = cell.forward(_numpy(module), x)
    assert finals["n"].shape == (1, B, 1)
    assert_close(ys.detach().numpy(), want_ys, 1e-12)
    assert_close(finals["n"][0].detach().numpy(), want_final["n"], 1e-12)


def test_refuses_other_dtypes():
    with pytest.raises(TypeError, match="float32 or torch.float64"):
        rnncc.torch.Eager("lstm", I, H, dtype=torch.float16)


def _spelled(op, args, attrs, sizes):
    """An op's torch spelling evaluated on tensors named a0, a1, ..."""
    names = [f"a{k}" for k in range(len(args))]
    expression = SPELLING[op](names, attrs, sizes)
    namespace = {"torch": torch}
    exec(HELPERS, namespace)
    return eval(expression, namespace, {n: torch.tensor(a) for n, a in zip(names, args)})


def test_every_forward_op_has_a_torch_spelling():
    """Every op a forward graph can hold is spelled (leaves and constants are the generator's
    own; ops listed in BACKWARD_ONLY appear only in derived graphs)."""
    for name, op in REGISTRY.items():
        if op.kind in ("leaf", "constant") or name in BACKWARD_ONLY:
            continue
        assert name in SPELLING, f"op {name!r} has no torch spelling in rnncc/interop/torch_source.py"


@pytest.mark.parametrize("op", sorted(SPELLING))
def test_each_spelling_is_the_ops_numpy_evaluation(op):
    """Each spelling against the op's numpy evaluation (the definition), on per-row vectors
    [B, 4], per-row scalars [B, 1] and parameter vectors [4] mixed as the op allows."""
    rng = np.random.default_rng(0)
    sizes = {"H": 4, "P": 2}
    stacked = Stacked(("H", "P"))
    attrs = {"pow": {"exponent": 3.0}, "broadcast": {"dim": "H"},
             "part": {"stacked": stacked, "index": 1},
             "part_rows": {"stacked": stacked, "index": 0}}.get(op, {})
    rows = rng.uniform(0.5, 2.0, (B, 4)) * rng.choice([-1, 1], (B, 4))
    if op in ("log", "sqrt"):
        rows = np.abs(rows)
    shapes = {"broadcast": [(B, 1)], "part": [(B, 6)], "part_rows": [(6, 3)],
              "matmul": [(5, 4), (B, 4)], "stack_rows": [(2, 4), (3, 4)],
              "concat": [(B, 4), (3,)], "mean": [(B, 4)], "sum": [(B, 4)]}
    if op in shapes:
        args = [rng.standard_normal(s) for s in shapes[op]]
    else:
        arity = REGISTRY[op].arity or 2
        args = [rows] + [rows[:, :1] * 0.7, rng.standard_normal(4)][:arity - 1]
    want = REGISTRY[op].evaluate([a.copy() for a in args], attrs,
                                 EvalContext(sizes, np.float64))
    got = _spelled(op, args, attrs, sizes)
    assert tuple(got.shape) == np.shape(want)
    assert_close(got.numpy(), np.asarray(want), 1e-12)


def test_module_file_needs_torch_alone(tmp_path):
    """The standalone file (what the benchmarks' torch process loads): a process that imports
    it has torch and not rnncc, and its module computes what Eager does."""
    import subprocess
    import sys

    from rnncc.interop.torch_source import module_file
    eager = rnncc.torch.Eager("sru", I, H, dtype=torch.float64)
    path = tmp_path / "sru_eager.py"
    path.write_text(module_file(eager.cell, eager.sizes))
    np.savez(tmp_path / "p.npz", **_numpy(eager))
    x = np.random.default_rng(0).standard_normal((T, B, I))
    np.save(tmp_path / "x.npy", x)
    program = (
        "import importlib.util, sys, numpy as np, torch\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"p = dict(np.load({str(tmp_path / 'p.npz')!r}))\n"
        "module = m.EagerCell(p, torch.float64)\n"
        f"y, _ = module(torch.tensor(np.load({str(tmp_path / 'x.npy')!r})))\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, y.detach().numpy())\n"
        "print(sorted(k for k in ('rnncc', 'torch') if k in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          cwd=tmp_path, check=True)
    assert done.stdout.strip() == "['torch']"
    want, _ = eager(torch.tensor(x))
    assert_close(np.load(tmp_path / "y.npy"), want.detach().numpy(), 1e-12)

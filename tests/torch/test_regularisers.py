"""rnncc.torch.RNN's recurrent regularisers: the module draws the masks rnncc.RNN draws with the
same seed and computes what it computes (rnncc.RNN is held to numpy and finite differences in
tests/runtime/test_regularisers.py), forward and every gradient through torch's autograd, weight
drop's included (torch multiplies the parameter by its mask); eval is the expectation."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnncc  # noqa: E402
import rnncc.torch  # noqa: E402

from ..close import assert_close  # noqa: E402

I, H, T, B = 3, 4, 5, 3
REGS = {"zoneout": {"c": 0.2, "h": 0.3}, "recurrent_dropout": 0.25, "weight_drop": 0.3}


@pytest.mark.parametrize("name, config", [
    ("lstm", dict(num_layers=2, bidirectional=True)),
    ("gru", dict(num_layers=1, batch_first=True)),
])
def test_the_module_computes_what_the_layer_does(name, config):
    regs = {**REGS, "zoneout": {"h": 0.3}} if name == "gru" else REGS
    module = rnncc.torch.RNN(name, I, H, dtype=torch.float64, seed=4, **config, **regs)
    layer = rnncc.RNN(name, I, H, dtype=np.float64, seed=4, **config, **regs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I) if config.get("batch_first") else (T, B, I))
    units = config["num_layers"] * (2 if config.get("bidirectional") else 1)
    h0 = {s: rng.standard_normal((units, B, H)) for s in layer.cell.states}
    for call in range(2):   # fresh masks per call, the same on both sides
        xt = torch.from_numpy(x).requires_grad_(True)
        states = {s: torch.from_numpy(v).requires_grad_(True) for s, v in h0.items()}
        y, final = module(xt, states)
        y0, final0 = layer(x, h0)
        for kind in layer.masks:
            for unit, masks in layer.masks[kind].items():
                for s, m in masks.items():
                    np.testing.assert_array_equal(module.masks[kind][unit][s], m)
        assert_close(y.detach().numpy(), y0, 1e-12, "y")
        dy = rng.standard_normal(y0.shape)
        dfinal = {s: rng.standard_normal(v.shape) for s, v in final0.items()}
        module.zero_grad()
        loss = (y * torch.from_numpy(dy)).sum() + sum(
            (final[s] * torch.from_numpy(dfinal[s])).sum() for s in final)
        loss.backward()
        dx = layer.backward(dy, dfinal)
        assert_close(xt.grad.numpy(), dx, 1e-10, "dx")
        for s in states:
            assert_close(states[s].grad.numpy(), layer.dstate[s], 1e-10, f"d{s}0")
        for pname, p in module.named_parameters():
            assert_close(p.grad.numpy(), layer.grads[pname], 1e-10, pname)


def test_eval_is_deterministic_and_trains_with_an_optimizer():
    module = rnncc.torch.RNN("lstm", I, H, seed=1, **REGS)
    x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    y, _ = module(x)
    y.pow(2).sum().backward()
    opt.step()
    assert any(not torch.equal(before[n], p) for n, p in module.named_parameters())
    module.eval()
    with torch.no_grad():
        a, _ = module(x)
        b, _ = module(x)
    assert torch.equal(a, b) and module.masks == {}
    assert "zoneout={'c': 0.2, 'h': 0.3}" in repr(module) and "weight_drop=0.3" in repr(module)


def test_bad_options_raise_the_layers_errors():
    with pytest.raises(KeyError, match="zoneout names 'q'"):
        rnncc.torch.RNN("lstm", I, H, zoneout={"q": 0.1})
    with pytest.raises(ValueError, match="cell 'mingru' reads none in a product"):
        rnncc.torch.RNN("mingru", I, H, recurrent_dropout=0.1)


def test_torch_compile_runs_the_regularised_module():
    """The masks are drawn outside the compiled graph (a graph break), fresh per call, and the
    compiled module computes what rnncc.RNN does with them."""
    module = rnncc.torch.RNN("lstm", I, H, dtype=torch.float64, seed=3, **REGS)
    layer = rnncc.RNN("lstm", I, H, dtype=np.float64, seed=3, **REGS)
    compiled = torch.compile(module)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    for _ in range(2):
        xt = torch.from_numpy(x).requires_grad_(True)
        module.zero_grad()
        y, _ = compiled(xt)
        y0, _ = layer(x)
        assert_close(y.detach().numpy(), y0, 1e-12, "y")
        y.sum().backward()
        assert_close(xt.grad.numpy(), layer.backward(np.ones_like(y0)), 1e-10, "dx")
        for pname, p in module.named_parameters():
            assert_close(p.grad.numpy(), layer.grads[pname], 1e-10, pname)

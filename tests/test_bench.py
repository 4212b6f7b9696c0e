"""The benchmark script runs end to end at a tiny size, so it cannot rot."""
import importlib.util
from pathlib import Path

import pytest

from .close import assert_close


def script(name: str):
    """bench/NAME.py, imported as a module (with bench/ on the path, as when run)."""
    import sys
    bench = Path(__file__).parents[1] / "bench"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    path = bench / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regulariser_benchmark_runs(capsys):
    bench = script("regularisers")
    assert bench.main(["--cells", "gru", "--configs", "3,2,4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| cell |") and len(out) == 4
    assert [line.split("|")[3].strip() for line in out[2:]] == ["eval fwd", "fwd+bwd"]
    assert all(float(line.split("|")[k]) > 0 for line in out[2:] for k in range(4, 9))


def test_cpu_benchmark_runs(capsys):
    bench = script("cpu")
    assert bench.main(["--cells", "rnn", "lnlstm", "--configs", "3,2,4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    # header, rule, 2 cells x 2 passes x (own processes, mixed process)
    assert out[0].startswith("| cell |") and len(out) == 10
    assert all(line.startswith("| rnn | 3, 2, 4 |") for line in out[2:6])
    assert all(line.startswith("| lnlstm | 3, 2, 4 |") for line in out[6:])
    assert [line.split("|")[4].strip() for line in out[2:]] == ["own", "mixed"] * 4
    assert all(line.count("|") == 15 for line in out)
    # the custom cell has a TorchScript column, the builtin one none
    assert out[2].split("|")[7].strip() == "-" and out[6].split("|")[7].strip() != "-"
    # the FLOP limit and the ratios to it, on the own-process rows and the mixed ones
    # (no call does its products faster than the machine's FMA peak allows)
    assert all(float(line.split("|")[13]) > 1 for line in out[2:])
    assert all(float(line.split("|")[14]) > 1 for line in out[2:])


@pytest.mark.parametrize("name, gates", [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_product_flops_are_the_cells_matrix_products(name, gates):
    """The FLOPs bench/peak.py counts from the Plan, against the products written out: the
    input product and one recurrent product per step forward; backward one per step (dh) and
    the input, input-weight and recurrent-weight gradients over all rows."""
    import rnncc
    peak = script("peak")
    T, B, I, H = 7, 3, 5, 6
    layer = rnncc.RNN(name, I, H)
    G = gates * H
    forward = 2 * T * B * I * G + 2 * T * B * H * G
    backward = 2 * T * B * G * H + 2 * T * B * G * I + 2 * G * T * B * I + 2 * G * T * B * H
    assert peak.product_flops(layer, T, B, backward=False) == forward
    assert peak.product_flops(layer, T, B, backward=True) == forward + backward


def test_fma_probe_counts_its_flops():
    """Every accumulator register of every thread: one FMA (2 FLOPs per lane) an iteration."""
    import numpy as np

    from rnncc.backends.cpu.native import machine
    peak = script("peak")
    for dtype in (np.float32, np.float64):
        run = peak.fma_probe(2, dtype, iterations=1000)
        run()
        blk = machine.blocking(dtype)   # (the same registers rnncc's GEMM blocks for)
        assert run.facts["flops"] == 2 * 1000 * blk.registers * 2 * blk.vector


def test_the_eager_lnlstm_module_computes_what_the_spec_does():
    """The benchmark's PyTorch layer-norm LSTM (the contender rnncc's lnlstm is timed against)
    against specs/lnlstm.cell on the reference interpreter, float64: outputs and the gradients
    of every parameter, with the weights moved over by hand."""
    import numpy as np
    import torch

    import rnncc
    torch_cells = script("torch_cells")
    I, H, T, B = 3, 5, 6, 4
    module = torch_cells.lnlstm_module(I, H, np.float64)
    cell = rnncc.load("lnlstm")
    p = cell.init_params(seed=2, dtype=np.float64, initialisers=False, I=I, H=H)
    with torch.no_grad():   # the spec's [4H] parameters are torch's, gate order i, f, g, o
        module.W.weight.copy_(torch.from_numpy(p["W"]))
        module.U.weight.copy_(torch.from_numpy(p["U"]))
        module.ln_x.weight.copy_(torch.from_numpy(p["gx"]))
        module.ln_h.weight.copy_(torch.from_numpy(p["gh"]))
        module.b.copy_(torch.from_numpy(p["b"]))
        module.ln_c.weight.copy_(torch.from_numpy(p["gamma_c"]))
        module.ln_c.bias.copy_(torch.from_numpy(p["beta_c"]))
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    y, _ = module(torch.from_numpy(x))
    (y * torch.from_numpy(dy)).sum().backward()
    ys, _ = cell.forward(p, x)
    assert_close(y.detach().numpy(), ys, 1e-12, "y")
    g = cell.backward(p, x, dy)["params"]
    for name, grad in (("W", module.W.weight.grad), ("U", module.U.weight.grad),
                       ("gx", module.ln_x.weight.grad), ("gh", module.ln_h.weight.grad),
                       ("b", module.b.grad)):
        assert_close(grad.numpy(), g[name], 1e-9, name)
    assert_close(module.ln_c.weight.grad.numpy(), g["gamma_c"], 1e-9, "gamma_c")
    assert_close(module.ln_c.bias.grad.numpy(), g["beta_c"], 1e-9, "beta_c")


def test_cpu_profile_runs(capsys):
    profile = script("profile_cpu")
    assert profile.main(["rnn", "3,2,4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert all(part in out for part in ("whole", "gemms only", "kernels only", "layer(x)",
                                        "ns per element", "zmm"))


def test_training_step_benchmark_runs(capsys):
    bench = script("train")
    assert bench.main(["--cells", "rnn", "lnlstm", "--configs", "3,2,4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| cell |") and len(out) == 4
    assert out[2].startswith("| rnn | 3, 2, 4 |") and out[3].startswith("| lnlstm | 3, 2, 4 |")
    assert all(line.count("|") == out[0].count("|") for line in out)


def test_stack_benchmark_runs(capsys):
    bench = script("stacks")
    assert bench.main(["--configs", "rnn,2,bi,3,2,4", "gru,3,uni,5,2,4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    # 2 configs x 2 passes x (own processes, mixed process)
    assert out[0].startswith("| cell | layers |") and len(out) == 10
    assert all(line.startswith("| rnn | 2 | bi | 3, 2, 4 |") for line in out[2:6])
    assert all(line.startswith("| gru | 3 | uni | 5, 2, 4 |") for line in out[6:])
    assert all(line.count("|") == out[0].count("|") for line in out)


def test_gpu_benchmark_runs_in_the_simulator(capsys):
    """tests/conftest.py turns on Numba's CUDA simulator: rnncc's kernels run there, torch on
    the CPU; the table has every row, with no verdict on the targets."""
    bench = script("gpu")
    assert bench.main(["--cells", "gru", "lnlstm", "--configs", "2,2,3", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| cell | T, B, I=H |") and len(out) == 6  # 2 cells x 2 passes
    assert all(line.startswith("| gru | 2, 2, 3 |") for line in out[2:4])
    assert all(line.startswith("| lnlstm | 2, 2, 3 |") for line in out[4:])
    assert all(line.count("|") == 10 and line.endswith("| - |") for line in out[2:])


def test_compile_benchmark_runs(capsys):
    """Cold, warm and warm-in-parts processes for one cell; the warm ones load from the disk
    cache, and the warm start's parts take less than compiling."""
    bench = script("compile")
    assert bench.main(["--cells", "rnn"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| cell | cold: first result s |") and out[2].startswith("| rnn |")
    cells = out[2].strip("|").split("|")
    seconds = [float(v) for v in cells[1:12]]
    assert all(v > 0 for v in seconds)
    first, all_three, warm, imported = (seconds[i] for i in (0, 1, 5, 6))
    call = seconds[10]   # after the libraries, import rnncc and the pipeline
    assert first <= all_three and warm - imported < all_three   # loading beats compiling
    assert call < all_three   # loading and calling the cached function beats compiling it
    assert cells[12].strip().startswith(("yes", "no: "))


def test_kernel_threads_bench_runs(capsys):
    bench = script("kernel_threads")
    assert bench.main(["--cells", "lnlstm", "--configs", "3,2,4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("| lnlstm | 3, 2, 4 |") == 3   # forward, backward, inference


def test_compile_scaling_benchmark_runs(capsys):
    """Cells of k chained gates: more gates, more ops, more compile time."""
    bench = script("compile")
    assert bench.main(["--scaling", "2", "6"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| gates | ops")
    rows = [[float(v) for v in line.strip("|").split("|")] for line in out[2:]]
    assert [r[0] for r in rows] == [2, 6] and rows[0][1] < rows[1][1]
    assert all(r[2] > 0 and r[3] == pytest.approx(r[2] / r[1] * 1e3, rel=0.05) for r in rows)


@pytest.mark.parametrize("name", ["mingru", "minlstm", "qrnn", "indrnn", "sru"])
def test_the_eager_lane_modules_compute_what_the_specs_do(name):
    """bench/scan.py's PyTorch loops against the shipped specs on the reference interpreter,
    float64: outputs, final state, and every parameter's gradient."""
    import numpy as np
    import torch

    import rnncc
    torch_cells = script("torch_cells")
    cell = rnncc.load(name)
    I, H, T, B = 3, 5, 6, 4
    p = cell.init_params(seed=2, dtype=np.float64, initialisers=False, I=I, H=H)
    module = torch_cells.lane_module(name, p, np.float64)
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    y, final = module(torch.from_numpy(x))
    (y * torch.from_numpy(dy)).sum().backward()
    ys, final_r = cell.forward(p, x)
    assert_close(y.detach().numpy(), ys, 1e-12, "y")
    (state,) = cell.states
    assert_close(final[state].detach().numpy(), final_r[state], 1e-12, "final")
    g = cell.backward(p, x, dy)["params"]
    for k in cell.params:
        assert_close(module.p[k].grad.numpy(), g[k], 1e-9, k)


def test_the_mingru_log_scan_is_the_papers_log_space_mingru():
    """The PyTorch parallel scan contender equals the sequential minGRU with the log-space
    form's candidate g(W_h x + b_h), in float64, at T = 50."""
    import numpy as np
    import torch

    import rnncc
    torch_cells = script("torch_cells")
    cell = rnncc.load("mingru")
    I, H, T, B = 3, 4, 50, 2
    p = cell.init_params(seed=4, dtype=np.float64, I=I, H=H)
    x = np.random.default_rng(4).standard_normal((T, B, I))
    y, _ = torch_cells.mingru_log_scan_module(p, np.float64)(torch.from_numpy(x))

    def sig(v):
        return 1 / (1 + np.exp(-v))
    h = np.full((B, H), 0.5)   # g(0): the scan's zero initial state, in its log form
    expected = []
    for t in range(T):
        z = sig(x[t] @ p["W_z"].T + p["b_z"])
        v = x[t] @ p["W_h"].T + p["b_h"]
        h = (1 - z) * h + z * np.where(v >= 0, v + 0.5, sig(v))
        expected.append(h)
    assert_close(y.detach().numpy(), np.stack(expected), 1e-9, "log-space scan")


def test_scan_benchmark_runs(capsys):
    bench = script("scan")
    assert bench.main(["--cells", "mingru", "indrnn", "--configs", "4,2,8", "--rounds",
                       "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    # header, rule, 2 cells x 2 passes; rnncc's scan and the torch scan only for minGRU
    assert out[0].startswith("| cell |") and len(out) == 6
    assert all(line.count("|") == out[0].count("|") for line in out)
    header = [h.strip() for h in out[0].split("|")]
    rows = [[c.strip() for c in line.split("|")] for line in out[2:]]
    assert [r[1] for r in rows] == ["mingru", "mingru", "indrnn", "indrnn"]
    assert all(r[header.index("schedule")] == "lanes" for r in rows)
    for column in ("scan ms", "torch scan ms", "rnncc/scan"):
        k = header.index(column)
        assert rows[0][k] != "-" and rows[2][k] == "-", column


def test_plan_bytes_counts_each_operand_once_per_row():
    """bench/scan.py's bytes of a call, against a count written out for indrnn's inference
    plan: the hoisted product reads x [T*B, I] and W [H, I] and writes W@x [T*B, H]; the step
    kernel reads W@x, h and writes h' per row (u and b stay in cache); the carry copies h'
    into h (read and write)."""
    import rnncc
    bench = script("scan")
    plan = rnncc.load("indrnn").inference_plan
    T, B, I, H = 7, 3, 5, 4
    rows = T * B
    expected = (rows * I + H * I + rows * H) + (rows * H + rows * H + rows * H) + 2 * rows * H
    assert bench.plan_bytes(plan, {"I": I, "H": H}, T, B, 4) == 4 * expected


def test_gemm_benchmark_runs(capsys, monkeypatch):
    bench = script("gemm")
    monkeypatch.setattr(bench, "SHAPES", [("step", "tiny", 3, 5, 40, False),
                                          ("gradient", "tiny", 40, 7, 9, True)])
    assert bench.main(["--threads", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| product |") and out[-1].startswith("FMA peak:")
    assert [line.split("|")[1].strip() for line in out[2:-1]] == ["step", "gradient"]

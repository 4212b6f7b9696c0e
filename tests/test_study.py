"""`rnncc study`: its counts against closed-form formulas written here, its gradient-flow
numbers against finite differences, its tasks' data against their definitions, and the quick
run end to end (report, JSON and figures; the report's numbers are the JSON's)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

import rnncc
import rnncc.cli
from rnncc.study import cost, gradient_flow, tasks

from .close import assert_close
from .test_cli import run_cli

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

SIZES = [(5, 7), (3, 16)]


@pytest.mark.parametrize("I, H", SIZES)
def test_parameter_counts(I, H):
    """rnn: W, U, b; gru: three gates' W and U, b_r, b_z, b_n and the candidate's recurrent
    bias d_n; lstm: four gates' W, U, b (PyTorch's two biases summed into one)."""
    want = {"rnn": H * I + H * H + H, "gru": 3 * (H * I + H * H) + 4 * H,
            "lstm": 4 * (H * I + H * H + H)}
    for name, count in want.items():
        assert cost.parameter_count(rnncc.load(name), {"I": I, "H": H}) == count


@pytest.mark.parametrize("I, H", SIZES)
def test_step_flops(I, H):
    """Per step of one sequence. Forward products: the G*H gate rows times (I + H), 2 FLOPs
    a multiply-add; backward: the recurrent gradient (G*H x H), the input gradient (G*H x I)
    and the two weight gradients, the same sizes again. Forward kernels, per unit: rnn add b,
    tanh (2); gru r and z: two adds and a sigmoid each (6), the candidate W_n x + b_n,
    U_n h + d_n, r * that, the sum, tanh (5), h' = (1 - z) * n + z * h (4); lstm four gates of
    two adds and an activation (12), c' = f * c + i * g (3), tanh(c'), o * tanh(c') (2).
    Backward kernel of the rnn: dy + dh', h' * h', 1 - that, the product, and db's sum (5)."""
    gates = {"rnn": 1, "gru": 3, "lstm": 4}
    kernel = {"rnn": 2, "gru": 15, "lstm": 17}
    for name, G in gates.items():
        flops = cost.step_flops(rnncc.load(name), {"I": I, "H": H})
        assert flops["forward"]["gemm"] == 2 * G * H * (I + H)
        assert flops["backward"]["gemm"] == 4 * G * H * (I + H)
        assert flops["forward"]["kernel"] == kernel[name] * H
    assert cost.step_flops(rnncc.load("rnn"), {"I": I, "H": H})["backward"]["kernel"] == 5 * H


@pytest.mark.parametrize("I, H", SIZES)
def test_tape_bytes(I, H):
    """What BPTT reads of each step, float32: rnn h' and h; gru z, n, 1-z, U_n h + d_n, r and
    h; lstm i, f, g, o, tanh(c') and h, c."""
    for name, vectors in (("rnn", 2), ("gru", 6), ("lstm", 7)):
        assert cost.tape_bytes(rnncc.load(name), {"I": I, "H": H}) == 4 * vectors * H
        assert cost.tape_bytes(rnncc.load(name), {"I": I, "H": H}, np.float64) == 8 * vectors * H


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm"])
def test_gradient_norms_are_finite_differences(name):
    """|d(v . y_T) / d x_(T-1-k)| by rnncc's BPTT (cpu target) against central differences of
    the reference interpreter's forward, float64, each input element of each sequence."""
    cell = rnncc.load(name)
    T, B, I, H = 6, 2, 2, 3
    p = cell.init_params(seed=4, dtype=np.float64, I=I, H=H)
    x, _ = tasks.adding(T, B, np.random.default_rng(5))
    x = x.astype(np.float64)
    got = gradient_flow.gradient_norms(cell, p, x, seed=9)
    rng = np.random.default_rng(9)   # the projection the function draws
    v = rng.standard_normal((B, H))
    v /= np.linalg.norm(v, axis=1, keepdims=True)

    def objective(x_, b):
        return float(cell.forward(p, x_)[0][-1, b] @ v[b])
    want = np.zeros(T)
    eps = 1e-6
    for k in range(T):
        for b in range(B):
            g = np.zeros(I)
            for i in range(I):
                plus, minus = x.copy(), x.copy()
                plus[T - 1 - k, b, i] += eps
                minus[T - 1 - k, b, i] -= eps
                g[i] = (objective(plus, b) - objective(minus, b)) / (2 * eps)
            want[k] += np.linalg.norm(g) / B
    assert_close(got, want, 1e-6)


def test_decay_recovers_a_geometric_rate():
    norms = 3.0 * 0.8 ** np.arange(30)
    norms[0] = 50.0   # (step 0 is left out of the fit)
    assert gradient_flow.decay(norms) == pytest.approx(0.8, rel=1e-9)
    assert gradient_flow.decay([1.0, 0.0, 0.0]) is None


def test_adding_problem_data():
    T, B = 12, 50
    x, target = tasks.adding(T, B, np.random.default_rng(0))
    assert x.shape == (T, B, 2) and target.shape == (B, 1)
    marks = x[..., 1]
    assert np.all(marks.sum(axis=0) == 2)
    assert np.all(marks[:T // 2].sum(axis=0) == 1) and np.all(marks[T // 2:].sum(axis=0) == 1)
    for b in range(B):
        assert target[b, 0] == pytest.approx(x[marks[:, b] == 1, b, 0].sum())
    assert np.all((x[..., 0] >= 0) & (x[..., 0] < 1))


def test_copy_memory_data():
    T, B = 7, 20
    x, target = tasks.copy_memory(T, B, np.random.default_rng(0))
    L = tasks.COPY_LENGTH
    assert x.shape == (T + 2 * L, B, tasks.ALPHABET + 2) and target.shape == (L, B)
    codes = x.argmax(-1)
    assert np.all(x.sum(-1) == 1)
    assert np.array_equal(codes[:L] - 1, target)               # the symbols, then recalled
    assert np.all(codes[L:L + T - 1] == 0)                     # T - 1 blanks
    assert np.all(codes[L + T - 1] == tasks.ALPHABET + 1)      # the delimiter
    assert np.all(codes[L + T:] == 0)                          # blanks while recalling
    assert np.all((target >= 0) & (target < tasks.ALPHABET))


def test_hidden_sizes_meet_the_budget():
    """Each cell's hidden size puts its layer and head nearest the budget."""
    task = tasks.TASKS["adding"]
    budget = 4 * (2 * 64 + 64 * 64 + 64) + 64 + 1   # an LSTM of H=64 and its head
    for name in ("rnn", "gru", "lstm"):
        cell = rnncc.load(name)
        H = tasks.hidden_for_budget(cell, task, budget)
        count = lambda h: cost.parameter_count(cell, {"I": 2, "H": h}) + h + 1
        assert abs(count(H) - budget) <= min(abs(count(H - 1) - budget),
                                             abs(count(H + 1) - budget))
    assert tasks.hidden_for_budget(rnncc.load("lstm"), task, budget) == 64


def _table(report: str, first_header: str) -> list:
    """The rows of the markdown table whose header starts with `first_header`, as cells."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _same(text: str, value) -> bool:
    if value is None:
        return text == "-"
    return float(text) == pytest.approx(float(value), rel=5e-3, abs=0)


def test_quick_study(tmp_path):
    """`rnncc study --quick` (one run: about a minute on 2 cores): the report, the JSON and
    the figures, and the report's numbers are the JSON's."""
    out = tmp_path / "study"
    assert rnncc.cli.main(["study", "--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    report = (out / "REPORT.md").read_text()
    _check_files(out, results, report)
    _check_numbers(results, report)


def _check_files(out, results, report):
    for figure in ("cost_time.png", "gradient_flow.png", "learning_curves.png",
                   "convergence_time.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({figure})" in report
    assert results["cells"] == ["rnn", "gru", "lstm"]
    assert {r["task"] for r in results["tasks"]} == {"adding", "copy"}
    for section in ("## 1. Cost", "## 2. Gradient flow", "## 3. Long-term dependencies",
                    "## 4. Convergence per second"):
        assert section in report
    # one paragraph per finding, each with a verdict
    verdicts = re.findall(r"\*\*(holds|does not hold|cannot be judged)\*\*", report)
    assert len(verdicts) >= 4


def _check_numbers(results, report):
    """Every number of the report's tables, against results.json's value (to the report's
    three significant digits)."""
    rows = _table(report, "cell | H | B")
    assert len(rows) == len(results["cost"])
    for cells, r in zip(rows, sorted(results["cost"], key=lambda r: (
            r["H"], r["B"], results["cells"].index(r["cell"])))):
        f = r["flops"]
        assert cells[:3] == [r["cell"], str(r["H"]), str(r["B"])]
        for text, value in zip(cells[3:], (
                r["parameters"], f["forward"]["gemm"] + f["forward"]["kernel"],
                f["backward"]["gemm"] + f["backward"]["kernel"], r["tape_bytes"],
                1e6 * r["seconds"]["forward"], 1e6 * r["seconds"]["forward+backward"],
                1e6 * r["torch_seconds"]["forward"],
                1e6 * r["torch_seconds"]["forward+backward"])):
            assert _same(text, value), (cells, r)
        assert cells[11] == r["torch_module"]
        assert r["torch_module"] == f"torch.nn.{r['cell'].upper()}"
        # no call does its products faster than the machine's FMA peak allows
        assert all(r["seconds"][k] > r["limit_seconds"][k] > 0 for k in r["seconds"])
    rows = _table(report, "task | T | cell")
    assert len(rows) == len(results["tasks"])
    for cells, r in zip(rows, results["tasks"]):
        assert cells[:4] == [r["task"], str(r["T"]), r["cell"], str(r["H"])]
        assert cells[5] == ("yes" if r["solved"] else "no")
        for text, value in zip([cells[4]] + cells[6:], (
                r["parameters"], r["steps_to_solve"], r["final_loss"], r["final_metric"],
                r["seconds"])):
            assert _same(text, value), (cells, r)
        # the curve's last point is the final value; solved is the threshold's verdict
        assert r["curve"][-1]["metric"] == r["final_metric"]
        threshold = results["thresholds"][r["task"]]
        hits = [p["step"] for p in r["curve"] if (
            p["metric"] < threshold["threshold"] if threshold["metric"] == "mse"
            else p["metric"] >= threshold["threshold"])]
        assert r["steps_to_solve"] == (hits[0] if hits else None)
    rows = _table(report, "cell | when | H")
    for cells, r in zip(rows, results["gradient_flow"]):
        assert cells[:3] == [r["cell"], r["when"], str(r["H"])]
        assert _same(cells[3], r["norms"][1]) and _same(cells[5], r["norms"][-1])
        assert _same(cells[6], r["decay"])


def test_study_refuses_a_bad_spec(capsys, tmp_path):
    spec = tmp_path / "bad.cell"
    spec.write_text("cell bad\ninput x[I]\nstate h[H]\noutput h\nh' = tanh(W @ x +)\n")
    code, out, err = run_cli(capsys, "study", "--quick", "--cells", f"rnn,{spec}",
                             "--out", str(tmp_path / "r"))
    assert code == 1 and "bad.cell:5:" in err and not (tmp_path / "r").exists()


def test_cuda_time_per_step_runs_in_the_simulator():
    """The cost part's GPU timing (used where a GPU is present), at a tiny size in Numba's
    CUDA simulator (tests/conftest.py): a time for each pass of each cell. The simulator is
    never taken for a GPU."""
    from rnncc.study.cost import gpu_present, time_per_step_cuda
    assert not gpu_present()
    found = time_per_step_cuda({"gru": (rnncc.load("gru"), {"I": 3, "H": 3})}, 2, 1, 1)
    assert set(found["gru"]) == {"forward", "forward+backward"}
    assert all(v > 0 for v in found["gru"].values())


def test_cells_are_named_by_their_spec_and_numbered_when_two_share_a_name(tmp_path):
    from rnncc.runtime.layer import _as_cell
    from rnncc.study.run import _named
    renamed = tmp_path / "mine.cell"    # the name comes from the `cell` line, not the file
    renamed.write_text((Path(__file__).parents[1] / "specs" / "gru.cell").read_text())
    cells = [_as_cell("lstm"), _as_cell(str(renamed)), _as_cell("lstm")]
    assert _named(cells) == ["lstm", "gru", "lstm#2"]

"""`rnncc bench` and rnncc/benchmark/: the command end to end at a tiny size (table, --json,
--plot, errors), the products it counts against closed-form formulas, and the processes it
times in (torch's never imports rnncc, and gets the environment a torch user has)."""
import json

import numpy as np
import pytest

import rnncc
from rnncc.benchmark import processes
from rnncc.benchmark.bench import CONTENDERS_FILE, Case, Options, kinds, measure_case
from rnncc.benchmark.floor import blas_floor, call_products, product_flops
from rnncc.cli import main

from .test_cli import SPECS, run_cli

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm"])
def test_call_products_are_the_cells_matrix_products(name):
    """(rows, inner, columns, times) of a call, against the products written out: forward the
    input product over all T*B rows and one recurrent product a step; backward one a step (dh)
    and the input gradient and both weight gradients over all rows."""
    T, B, I, H = 7, 3, 5, 6
    G = GATES[name] * H
    layer = rnncc.RNN(name, I, H)
    forward = [(T * B, I, G, 1), (B, H, G, T)]
    backward = [(B, G, H, T), (T * B, G, I, 1), (G, T * B, I, 1), (G, T * B, H, 1)]
    assert sorted(call_products(layer, T, B, backward=False)) == sorted(forward)
    assert sorted(call_products(layer, T, B, backward=True)) == sorted(forward + backward)
    flops = sum(2 * m * k * n * t for m, k, n, t in forward + backward)
    assert product_flops(layer, T, B, backward=True) == flops


def test_blas_floor_runs_the_products_it_is_given():
    """Each product `times` times, into its own output (numpy's product of the same operands
    as the oracle), and its FLOPs as facts."""
    run = blas_floor([(3, 4, 5, 2), (2, 6, 3, 1)], np.float64)
    run()
    assert run.facts["flops"] == 2 * (3 * 4 * 5 * 2 + 2 * 6 * 3)


@pytest.fixture(scope="module")
def workers():
    found = processes.start_workers(CONTENDERS_FILE, 1,
                                    kinds(Options(vs_torch=True, mixed=True)))
    yield found
    processes.close_workers(found)


def test_each_contender_runs_in_a_process_of_its_own_kind(workers, tmp_path):
    """torch is timed with its own defaults: its process never imports rnncc (a custom cell's
    eager module comes as a file that needs torch alone), and it starts without what importing
    rnncc set in this process's environment; rnncc's process never imports torch; the mixed
    process has both."""
    options = Options(rounds=1, vs_torch=True, mixed=True)
    result = measure_case(workers, Case("mgu", 3, 2, 4, backward=True), options, tmp_path)
    assert result["torch_module"] == "eager (spec)"
    state = {kind: w.ask(op="state") for kind, w in workers.items()}
    assert state["torch"]["modules"] == ["torch"] and state["rnncc"]["modules"] == ["rnncc"]
    assert state["floor"]["modules"] == [] and state["mixed"]["modules"] == ["rnncc", "torch"]
    if "OPENBLAS_THREAD_TIMEOUT" in rnncc.SET_AT_IMPORT:
        assert state["torch"]["env"]["OPENBLAS_THREAD_TIMEOUT"] is None
        assert state["rnncc"]["env"]["OPENBLAS_THREAD_TIMEOUT"] == "4"   # (its own import)


def test_a_case_reports_every_contender(workers, tmp_path):
    """Times for every contender, and the FLOP limit below each (no call does its products
    faster than the machine's FMA peak allows); the shipped lstm against torch.nn.LSTM, a
    spec named lstm with other equations against its own eager module."""
    options = Options(rounds=1, vs_torch=True, mixed=True)
    result = measure_case(workers, Case("lstm", 3, 2, 4, backward=False), options, tmp_path)
    assert result["torch_module"] == "torch.nn.LSTM"
    assert set(result["ms"]) == {"rnncc", "torch", "floor", "limit", "mixed torch",
                                 "mixed rnncc"}
    for contender in ("rnncc", "torch", "floor", "mixed rnncc", "mixed torch"):
        assert result["ms"][contender] > result["ms"]["limit"] > 0
    other = tmp_path / "lstm.cell"
    other.write_text((SPECS / "lstm.cell").read_text().replace("c' = f * c + i * g",
                                                             "c' = f * c + 0.5 * i * g"))
    result = measure_case(workers, Case(str(other), 3, 2, 4, backward=False), options,
                          tmp_path)
    assert result["torch_module"] == "eager (spec)"


def test_bench_command_json(capsys):
    """The issue's command: a report with a result per pass, every number the table shows."""
    code, out, err = run_cli(capsys, "bench", "lstm", "--T", "10", "--B", "2", "--H", "8",
                             "--vs", "torch", "--json", "--rounds", "1")
    assert code == 0, err
    report = json.loads(out)
    assert report["command"] == "rnncc bench lstm --T 10 --B 2 --H 8 --vs torch --json " \
                                "--rounds 1"
    assert [r["pass"] for r in report["results"]] == ["forward", "forward+backward"]
    for r in report["results"]:
        assert (r["spec"], r["T"], r["B"], r["I"], r["H"]) == ("lstm", 10, 2, 8, 8)
        assert set(r["ms"]) == {"rnncc", "torch", "floor", "limit"}
        assert r["ratios"]["rnncc/torch"] == pytest.approx(r["ms"]["rnncc"] / r["ms"]["torch"])
    assert report["cpu"] in report["machine"]


def test_bench_command_table_and_plot_for_a_spec_file(capsys, tmp_path):
    """A spec by path, two sizes, forward only: the table's rows, and the plot written."""
    spec = tmp_path / "mygru.cell"
    spec.write_text((SPECS / "mgu.cell").read_text().replace("cell mgu", "cell mygru"))
    plot = tmp_path / "ratios.png"
    code, out, err = run_cli(capsys, "bench", str(spec), "--T", "4", "--B", "1", "3", "--H",
                             "4", "--no-backward", "--rounds", "1", "--plot", str(plot))
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("│ mygru")]
    assert len(rows) == 2 and "torch ms" not in out and "rnncc/limit" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, code, fragment", [
    (["bench", "lstm", "--script"], 2, "add --vs torch"),
    (["bench", "lstm", "--B", "0"], 2, "expected a positive integer"),
    (["bench", "nosuchcell"], 1, "no spec file 'nosuchcell'"),
    (["bench", "lstm", "--I", "4", "--H", "8", "--dims", "P=3"], 1, "unknown P"),
])
def test_bench_command_errors(capsys, argv, code, fragment):
    got, out, err = run_cli(capsys, *argv)
    assert got == code and fragment in err and out == ""


def test_bench_command_spec_error_names_the_line(capsys, tmp_path):
    spec = tmp_path / "bad.cell"
    spec.write_text("cell bad\ninput x[I]\nstate h[H]\noutput h\nh' = tanh(W @ x +)\n")
    code, out, err = run_cli(capsys, "bench", str(spec))
    assert code == 1 and "bad.cell:5:" in err and "h' = tanh(W @ x +)" in err


"""The rnncc command: show, run, exit codes, errors on stderr."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnncc
from rnncc.cli import main

SPECS = Path(__file__).parents[1] / "specs"


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors and --help
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_show_text_matches_the_graph(capsys):
    code, out, err = run_cli(capsys, "show", str(SPECS / "gru.cell"))
    assert code == 0 and err == ""
    assert out == rnncc.load("gru").show("text")
    assert out.splitlines()[0] == "cell gru  (dims I, H)"


def test_show_json_and_dot_and_shipped_name(capsys):
    code, out, _ = run_cli(capsys, "show", "lstm", "--format", "json")
    assert code == 0 and json.loads(out)["cell"] == "lstm"
    code, out, _ = run_cli(capsys, "show", "rnn", "--format", "dot")
    assert code == 0 and out.startswith('digraph "rnn"')


def test_run_prints_shapes_and_a_checksum_that_matches_the_api(capsys):
    code, out, err = run_cli(capsys, "run", str(SPECS / "lstm.cell"), "--I", "8", "--H", "6",
                             "--T", "5", "--B", "3", "--dtype", "float64")
    assert code == 0 and "error" not in err
    assert "ys [5, 3, 6]" in out and "final    c [3, 6]" in out
    # recompute what `run` did through the API (the cpu target, run's default) and compare its
    # printed checksum
    cell = rnncc.load("lstm")
    p = cell.init_params(seed=0, dtype=np.float64, I=8, H=6)
    x = np.random.default_rng(1).standard_normal((5, 3, 8))
    ys, _ = cell.forward(p, x, target="cpu")
    assert f"sum {ys.sum():+.6e}" in out


def test_run_takes_a_schedule_and_refuses_one_the_cell_lacks(capsys):
    code, out, err = run_cli(capsys, "run", "qrnn", "--I", "4", "--H", "20", "--T", "6",
                             "--B", "2", "--dtype", "float64", "--schedule", "step")
    assert code == 0 and "schedule step;" in out
    cell = rnncc.load("qrnn")
    p = cell.init_params(seed=0, dtype=np.float64, I=4, H=20)
    x = np.random.default_rng(1).standard_normal((6, 2, 4))
    ys, _ = cell.forward(p, x)   # the reference interpreter
    assert f"sum {ys.sum():+.6e}" in out
    code, out, err = run_cli(capsys, "run", "qrnn", "--I", "4", "--H", "20", "--T", "6",
                             "--B", "2", "--dtype", "float64", "--schedule", "scan")
    assert code == 0 and "schedule scan;" in out and f"sum {ys.sum():+.6e}" in out
    code, out, err = run_cli(capsys, "run", "qrnn", "--I", "4", "--H", "20")
    assert code == 0 and "schedule lanes;" in out   # the plan's choice
    code, out, err = run_cli(capsys, "run", "lstm", "--I", "4", "--H", "5", "--schedule",
                             "lanes")
    assert code == 1 and "cell 'lstm' cannot run the schedule 'lanes'" in err


def test_run_compiles_by_default_and_times_the_first_call_apart(capsys, tmp_path, monkeypatch):
    """`run` defaults to the cpu target; the first call (compiling, or loading from the disk
    cache) is reported on its own, then the median of --repeat calls; the compilation is shown
    on stderr while it runs, and ends with the seconds it took."""
    monkeypatch.setenv("RNNCC_CACHE_DIR", str(tmp_path))   # a cold cache: it must compile
    spec = tmp_path / "fresh.cell"
    spec.write_text("cell fresh\ninput x[I]\nstate h[H]\nh' = tanh(W @ x + 0.5 * h)\n")
    code, out, err = run_cli(capsys, "run", str(spec), "--I", "3", "--H", "4", "--T", "6",
                             "--repeat", "3")
    assert code == 0, err
    assert "target cpu" in out
    first = [line for line in out.splitlines() if line.startswith("first")]
    timed = [line for line in out.splitlines() if line.startswith("forward")]
    assert len(first) == 1 and "the first call" in first[0]
    assert len(timed) == 1 and "median of 3 calls after the first" in timed[0]
    lines = err.splitlines()
    # (the one-thread variant: a small call's kernels run on the calling thread)
    assert "rnncc: compiling fresh: infer (one thread), float32, cpu target ..." in lines
    done = [line for line in lines
            if line.startswith("rnncc: compiled fresh: infer (one thread), float32")]
    assert len(done) == 1 and done[0].endswith(" s")
    seconds = float(done[0].rsplit(" ", 2)[-2])
    # compiling is part of the first call (the log prints tenths of a second)
    assert 0 < seconds <= float(first[0].split()[1]) + 0.05
    # the same in a second process: loaded from the disk cache, much sooner
    again = subprocess.run([sys.executable, "-m", "rnncc", "run", str(spec), "--I", "3",
                            "--H", "4", "--T", "6"], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "RNNCC_CACHE_DIR": str(tmp_path)})
    assert again.returncode == 0, again.stderr
    assert ("rnncc: loaded fresh: infer (one thread), float32, cpu target, from the disk cache"
            in again.stderr)


def test_compilations_are_logged(caplog, tmp_path, monkeypatch):
    import logging
    monkeypatch.setenv("RNNCC_CACHE_DIR", str(tmp_path))
    cell = rnncc.compile("cell logged\ninput x[I]\nstate h[H]\nh' = tanh(W @ x + h)\n")
    p = cell.init_params(I=2, H=3, dtype=np.float64)
    with caplog.at_level(logging.INFO, logger="rnncc.compile"):
        cell.forward(p, np.zeros((2, 1, 2)), target="cpu")
        cell.forward(p, np.zeros((3, 2, 2)), target="cpu")   # compiled already: no record
    events = [r.rnncc_compile for r in caplog.records]
    assert [(e.cell, e.function, e.dtype, e.target, e.phase) for e in events] == [
        ("logged", "infer", "float64", "cpu", "start"), ("logged", "infer", "float64", "cpu",
                                                         "done")]
    assert events[1].seconds > 0 and not events[1].cached
    assert events[1].variant == "one thread"
    assert caplog.records[1].getMessage().startswith(
        "compiled logged: infer (one thread), float64, cpu")


def test_commands_print_the_specs_lint_warnings(capsys, tmp_path):
    spec = tmp_path / "typo.cell"
    spec.write_text("cell typo\ninput x[I]\nstate h[H]\ng = tanh(W @ x)\nh' = tanh(gg * h + g)\n")
    code, out, err = run_cli(capsys, "check", str(spec))
    assert code == 0 and "PASS" in out
    assert f"{spec}:5:11: warning: 'gg' is not defined" in err and "did you mean 'g'?" in err


def test_run_takes_dims_as_a_list(capsys):
    code, out, _ = run_cli(capsys, "run", "gru", "--dims", "I=4,H=2", "--T", "3", "--B", "2")
    assert code == 0 and "dims I=4, H=2" in out


@pytest.mark.parametrize("argv, fragment", [
    (["run", "lstm", "--I", "4"], "missing H"),
    (["run", "lstm", "--I", "4", "--H", "3", "--Q", "2"], "unrecognized arguments: --Q 2"),
    (["run", "lstm", "--dims", "I=4,H=x"], "positive integer"),
    (["run", "lstm", "--dims", "I=4,H=3,Z=2"], "no dimension Z"),
    (["run", "lstm", "--I", "4", "--H", "3", "--T", "0"], "positive integer"),
    (["show", "lstm", "--format", "svg"], "invalid choice"),
    (["show", "lstm", "--bogus"], "unrecognized arguments"),
    ([], "required"),
])
def test_usage_errors_exit_2(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and fragment in err and out == ""


def test_spec_error_exits_1_with_the_located_message(capsys, tmp_path):
    bad = tmp_path / "bad.cell"
    bad.write_text("cell bad\ninput x[I]\nstate h[H]\nh' = tanh(W @ x + U @ q')\n")
    code, out, err = run_cli(capsys, "show", str(bad))
    assert code == 1 and out == ""
    assert err.startswith(f"{bad}:4:23: unknown state 'q'")
    assert "Traceback" not in err


def test_missing_file_exits_1(capsys):
    code, _, err = run_cli(capsys, "show", "no/such.cell")
    assert code == 1 and "no spec file" in err


def test_unknown_target_exits_1(capsys):
    code, _, err = run_cli(capsys, "run", "rnn", "--I", "2", "--H", "2", "--target", "tpu")
    assert code == 1 and "unknown target 'tpu'" in err


def test_console_script_and_module_entry_points():
    for cmd in (["rnncc", "--help"], [sys.executable, "-m", "rnncc", "--help"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "show" in done.stdout and "run" in done.stdout


def test_check_prints_every_gradient_and_pass(capsys):
    code, out, err = run_cli(capsys, "check", str(SPECS / "gru.cell"))
    assert code == 0 and err == ""
    lines = out.rstrip().splitlines()
    assert lines[0].startswith(f"rnncc check {SPECS / 'gru.cell'}: cell gru; dims I=3, H=4")
    cell = rnncc.load("gru")
    names = [line.split()[1] for line in lines[1:-1]]
    assert names == [*cell.params, *cell.inputs, *cell.states]
    assert all("worst relative error" in line for line in lines[1:-1])
    assert lines[-1].startswith("PASS")


def test_check_takes_dims_and_ragged_lengths(capsys):
    code, out, _ = run_cli(capsys, "check", "mgu", "--H", "2", "--dims", "I=5", "--T", "3",
                           "--B", "3", "--ragged", "--seed", "4")
    assert code == 0 and "dims I=5, H=2; T=3, B=3; lengths [3, " in out
    assert out.rstrip().splitlines()[-1].startswith("PASS")


def test_show_backward_stage(capsys):
    code, out, _ = run_cli(capsys, "show", "lstm", "--stage", "backward")
    assert code == 0 and out == rnncc.load("lstm").show("text", stage="backward")
    assert "grad   dy: [H]" in out and out.rstrip().splitlines()[-1].startswith("params")
    code, out, _ = run_cli(capsys, "show", "lstm", "--stage", "backward", "--format", "json")
    doc = json.loads(out)
    assert doc["kind"] == "backward" and set(doc["results"]) == {"state", "x", "params"}


def test_show_plan_and_pass_stages(capsys):
    code, out, _ = run_cli(capsys, "show", "lstm", "--stage", "plan")
    assert code == 0 and out == rnncc.load("lstm").show("text", stage="plan")
    assert "per step, t = 0 .. T-1 (B rows):" in out
    code, out, _ = run_cli(capsys, "show", "gru", "--stage", "plan", "--format", "json")
    doc = json.loads(out)
    assert doc["forward"]["per_step"][0]["shape"] == [["B", "H"], ["H", "3H"]]
    code, out, _ = run_cli(capsys, "show", "lstm", "--stage", "stack")
    assert code == 0 and "stack_rows W_i W_f W_g W_o" in out
    code, out, _ = run_cli(capsys, "show", "lstm", "--stage", "backward:fuse")
    assert code == 0 and "[step kernel 0]" in out and "[after gemm 1]" in out
    code, _, err = run_cli(capsys, "show", "lstm", "--stage", "plan", "--format", "dot")
    assert code == 1 and "text or json" in err


def test_the_progress_lines_of_a_background_compile():
    """A background process's start is one line with no spinner (other compiles run while it
    does); the call that waits for it says so, then how long after the call it was ready."""
    import io
    import logging

    from rnncc.backends.compile_log import CompileEvent
    from rnncc.cli import CompileProgress
    progress = CompileProgress(io.StringIO())
    for event in [CompileEvent("c", "backward", "float32", "cpu", "background",
                               variant="one thread"),
                  CompileEvent("c", "forward", "float32", "cpu", "start", variant="threads"),
                  CompileEvent("c", "forward", "float32", "cpu", "done", 2.0, variant="threads"),
                  CompileEvent("c", "backward", "float32", "cpu", "start", variant="one thread",
                               background=True),
                  CompileEvent("c", "backward", "float32", "cpu", "done", 1.5, True,
                               "one thread", True)]:
        record = logging.LogRecord("rnncc.compile", logging.INFO, "", 0, event.describe(),
                                   None, None)
        record.rnncc_compile = event
        progress.emit(record)
    assert progress.stream.getvalue().splitlines() == [
        "rnncc: compiling c: backward (one thread), float32, cpu target, in a background process",
        "rnncc: compiling c: forward (threads), float32, cpu target ...",
        "rnncc: compiled c: forward (threads), float32, cpu target, in 2.0 s",
        "rnncc: waiting for c: backward (one thread), float32, cpu target ...",
        "rnncc: compiled c: backward (one thread), float32, cpu target, in a background "
        "process: ready 1.5 s after the call"]

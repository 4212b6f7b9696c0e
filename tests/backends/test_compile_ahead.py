"""A training step's backward compiled in a background process while its forward compiles
(rnncc/backends/cpu/ahead.py): the types it compiles for are the ones every call passes, the
call waits for it and loads its machine code, a failed process leaves the call to compile it,
and every result is held to the reference interpreter. Only Numba's functions (the threaded
variant) are compiled ahead: the tests put every call's kernels on threads."""
import logging
import os
import subprocess
import sys
import textwrap
import time

import numpy as np

import rnncc
from rnncc.backends.cpu import ahead, runtime
from rnncc.runtime.gradcheck import random_problem

from ..close import assert_close


def on_threads(monkeypatch):
    """Every call's kernels on Numba's threads: the variant Numba compiles (which only
    RNNCC_NATIVE=0 runs: rnncc's compiled functions share kernels over a team instead)."""
    monkeypatch.setattr(runtime, "kernel_threads", lambda B, sizes, available, share=0.0: 2)
    monkeypatch.setenv("RNNCC_NATIVE", "0")


def test_the_types_compiled_ahead_are_those_every_call_passes(shipped_cells, monkeypatch):
    """Compiled.argument_types, which the background process compiles for, against the
    arguments of real calls: every shipped cell, each function, ragged, in pieces of time."""
    seen = []
    compile = runtime.Compiled._compile
    on_threads(monkeypatch)

    def checking(self, direction, fn, args):
        seen.append(direction)
        if not isinstance(fn, runtime.NativeFunction):   # (rnncc's own compiler: no types)
                assert tuple(fn.typeof_pyval(a) for a in args) == \
                self.argument_types(direction), f"{self.cell.name}: {direction}"
        return compile(self, direction, fn, args)
    monkeypatch.setattr(runtime.Compiled, "_compile", checking)
    for name in rnncc.shipped():
        cell = shipped_cells[name]
        prob = random_problem(cell, T=3, B=2, seed=4, ragged=True)
        for dtype in (np.float32, np.float64) if name == "gru" else (np.float32,):
            p = {k: v.astype(dtype) for k, v in prob.p.items()}
            x = {k: v.astype(dtype) for k, v in prob.xs.items()}
            x = x if len(x) > 1 else x[cell.inputs[0]]
            cell.forward(p, x, lengths=prob.lengths, target="cpu")
            cell.backward(p, x, prob.dys.astype(dtype), lengths=prob.lengths, target="cpu")
    model = rnncc.RNN(shipped_cells["gru"], 3, 4, num_layers=2, bidirectional=True)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    ys, _ = model(x, train=True)
    model.backward(np.ones_like(ys))
    assert set(seen) == {"infer", "forward", "backward"}


# a cell no other test compiles; its backward is short, so the script lowers the threshold
SCRIPT = textwrap.dedent("""
    import logging, sys, numpy as np, rnncc
    from rnncc.backends.cpu import ahead, runtime
    ahead.AHEAD_MIN_LINES = 0
    runtime.kernel_threads = lambda B, sizes, available, share=0.0: 2   # Numba's variant
    ahead.enabled = lambda: True   # (a one-core machine would not start the process)
    lines = []
    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    logging.getLogger("rnncc.compile").addHandler(Keep())
    logging.getLogger("rnncc.compile").setLevel(logging.INFO)
    cell = rnncc.compile("cell ahead_of_time\\ninput x[I]\\nstate h[H]\\n"
                         "h' = tanh(W @ x + U @ h + b) * sigmoid(v * h) * 0.8125\\n")
    p = cell.init_params(seed=0, I=3, H=4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    dys = rng.standard_normal((5, 2, 4)).astype(np.float32)
    got = cell.backward(p, x, dys, target="cpu")
    want = cell.backward(p, x, dys, target="reference")
    for k in want["params"]:
        assert np.allclose(got["params"][k], want["params"][k], rtol=1e-4, atol=1e-5), k
    print("\\n".join(lines))
""")


def run_script(tmp_path) -> str:
    # (Numba's threaded variant, which only RNNCC_NATIVE=0 runs now: rnncc's compiled
    # functions share their kernels over a team instead, and compile in a fraction of the time)
    env = dict(os.environ, RNNCC_CACHE_DIR=str(tmp_path / "rnncc"),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"), RNNCC_NATIVE="0")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_training_steps_backward_compiles_in_a_background_process(tmp_path):
    """Empty caches: the training forward starts the background process and compiles; the
    backward call waits for the process and loads what it compiled. A second process finds
    both in the cache and starts none."""
    log = run_script(tmp_path)
    what = "ahead_of_time: backward (threads), float32, cpu target"
    assert f"compiling {what}, in a background process" in log
    assert f"waiting for {what} ..." in log
    assert f"compiled {what}, in a background process: ready" in log
    assert "compiled ahead_of_time: forward (threads), float32, cpu target, in" in log
    again = run_script(tmp_path)
    assert "background" not in again and "loaded ahead_of_time: backward" in again


def ahead_with_a_stand_in(monkeypatch, tmp_path, script: str, name: str, scale: float):
    """A new cell (nothing of it cached), whose backward is compiled ahead by a stand-in
    process running `script` instead of the compiler; the processes started, and the cell
    with its problem (float64: p, x, dys)."""
    monkeypatch.setenv("RNNCC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(ahead, "AHEAD_MIN_LINES", 0)
    monkeypatch.setattr(ahead, "enabled", lambda: True)
    on_threads(monkeypatch)
    popen, started = subprocess.Popen, []

    def stand_in(command, **kwargs):
        started.append(popen([sys.executable, "-c", script], **kwargs))
        return started[-1]
    monkeypatch.setattr(ahead.subprocess, "Popen", stand_in)
    cell = rnncc.compile(f"cell {name}\ninput x[I]\nstate h[H]\n"
                         f"h' = tanh(W @ x + U @ h + b) * {scale}\n")
    rng = np.random.default_rng(2)
    problem = (cell.init_params(seed=0, I=3, H=4), rng.standard_normal((4, 2, 3)),
               rng.standard_normal((4, 2, 4)))
    return started, cell, problem


def assert_gradients_right(cell, got, problem):
    want = cell.backward(*problem, target="reference")
    for k in want["params"]:
        assert_close(got["params"][k], want["params"][k], 1e-10, k)


def test_a_failed_background_process_leaves_the_call_to_compile_it(monkeypatch, caplog,
                                                                   tmp_path):
    """The process ends with an error: the backward call says so and compiles the function
    itself; the gradients are right."""
    _, cell, problem = ahead_with_a_stand_in(
        monkeypatch, tmp_path, "import sys; sys.stdin.read(); sys.exit(3)", "ahead_failing",
        0.6875)
    with caplog.at_level(logging.INFO, logger="rnncc.compile"):
        got = cell.backward(*problem, target="cpu")
    assert_gradients_right(cell, got, problem)
    text = caplog.text
    assert "in a background process failed (exit code 3); compiling it here" in text
    assert "compiled ahead_failing: backward (threads), float64, cpu target, in" in text


def test_a_call_of_other_types_does_not_wait_for_the_background_process(monkeypatch, tmp_path):
    """A read-only upstream gradient gives the backward other argument types than the ones the
    process compiles for: the call compiles its own at once instead of waiting for it (here,
    a process that would take a minute)."""
    started, cell, (p, x, dys) = ahead_with_a_stand_in(
        monkeypatch, tmp_path, "import time; time.sleep(60)", "ahead_read_only", 0.5625)
    dys.flags.writeable = False
    start = time.perf_counter()
    got = cell.backward(p, x, dys, target="cpu")
    assert time.perf_counter() - start < 45 and started and started[0].poll() is None
    started[0].kill()
    assert_gradients_right(cell, got, (p, x, dys))


def test_what_is_worth_compiling_ahead_follows_its_lines_threads_counting_twice():
    """Compile time follows a function's generated lines, and a variant on Numba's threads
    compiles in about twice the time: AHEAD_MIN_LINES one-thread lines, or half as many on
    threads."""
    def module(lines: int) -> str:
        body = "".join(f"    x{k} = {k}\n" for k in range(lines - 1))
        return (f"@njit\ndef forward(T):\n    pass\n\n\n@njit\ndef backward(T):\n{body}\n\n"
                f"@njit\ndef backward_serial(T):\n{body}")
    n = ahead.AHEAD_MIN_LINES
    assert ahead.worth_it(module(n), "backward_serial", threaded=False)
    assert not ahead.worth_it(module(n - 2), "backward_serial", threaded=False)
    assert ahead.worth_it(module(n // 2 + 1), "backward", threaded=True)
    assert not ahead.worth_it(module(n // 2 - 2), "backward", threaded=True)
    assert not ahead.worth_it(module(n), "infer", threaded=False)   # no such function

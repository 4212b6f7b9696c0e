"""The disk cache of compiled cells: shared by processes that compile the same cell at once,
rebuilt where a file of it is damaged, shown and emptied by `rnncc cache`, filled ahead of time
by `rnncc compile`. Every result is held to the reference interpreter, in fresh processes."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rnncc.cli import main

# a cell no other test compiles, run on the cpu target (both variants: one thread, compiled by
# rnncc's compiler, and threads, by Numba) and on the reference interpreter; its mean is a
# call of fastmath's row_sum in Numba's code, a Numba function with a cache of its own
SCRIPT = textwrap.dedent("""
    import sys, numpy as np, rnncc
    cell = rnncc.compile("cell cached\\ninput x[I]\\nstate h[H]\\n"
                         "h' = tanh(W @ x + u * h) * sigmoid(v * h - mean(h))\\n")
    p = cell.init_params(seed=0, I=3, H=4)
    x = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32)
    ref, _ = cell.forward(p, x, target="reference")
    compiled = rnncc.backends.get("cpu").compiled(cell, np.float32)
    for variant in ("one thread", "threads"):
        compiled.variant = variant
        ys, _ = cell.forward(p, x, target="cpu")
        assert np.allclose(ys, ref, rtol=1e-5, atol=1e-6), np.abs(ys - ref).max()
    print("equal")
""")


def run(tmp_path, count=1):
    """`count` processes started at once, each with the cache (rnncc's and Numba's) under
    tmp_path; their outputs."""
    env = dict(os.environ, RNNCC_CACHE_DIR=str(tmp_path / "rnncc"),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(count)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.strip() == "equal", err
    return outs


def cache_files(tmp_path):
    return [f for f in tmp_path.rglob("*")
            if f.is_file() and f.suffix in (".py", ".json", ".nbi", ".nbc", ".o")]


def test_two_processes_compiling_the_same_new_cell_at_once_both_get_it_right(tmp_path):
    run(tmp_path, count=2)
    assert list((tmp_path / "rnncc").glob("rnncc_cell_*.py"))


@pytest.mark.parametrize("damage", ["truncated", "emptied"])
def test_a_damaged_cache_file_is_rebuilt(tmp_path, damage):
    """Every file of the cache at once: the generated module and its label, the native object
    code of its one-thread function, Numba's index and data files of its threaded function
    and of fastmath's row_sum, which that calls."""
    run(tmp_path)
    files = cache_files(tmp_path)
    assert {f.suffix for f in files} == {".py", ".json", ".nbi", ".nbc", ".o"}
    for f in files:
        data = f.read_bytes()
        f.write_bytes(data[:len(data) // 3] if damage == "truncated" else b"")
    run(tmp_path)   # right results (the script checks them), no crash
    run(tmp_path)   # and what the second run rebuilt loads
    for f in cache_files(tmp_path):
        assert f.stat().st_size > 0


def test_compile_ahead_then_info_then_clear(tmp_path, monkeypatch, capsys):
    """Four jobs (two dtypes, two variants) in two processes of their own."""
    monkeypatch.setenv("RNNCC_CACHE_DIR", str(tmp_path))
    spec = tmp_path / "ahead.cell"
    spec.write_text("cell ahead\ninput x[I]\nstate h[H]\nh' = tanh(W @ x + U @ h + b) * 0.625\n")
    assert main(["compile", str(spec), "--dtype", "float32,float64", "--jobs", "2"]) == 0
    out, err = capsys.readouterr()
    assert "rnncc: compiling ahead: 4 jobs (dtype, target, variant) in 2 processes ..." in err
    assert err.count("rnncc: compiled ahead: ") == 12   # each job's log, as it ends
    lines = [line.split() for line in out.splitlines()[1:] if line.startswith("ahead")]
    # every function, both variants (threads, one thread), each dtype: 2 x 3 x 2
    assert len(lines) == 12 and all(line[-1] in ("compiled", "loaded") for line in lines)
    functions = {(line[1], " ".join(line[3:-2])) for line in lines}
    assert functions == {(dtype, f"{name} ({variant})") for dtype in ("float32", "float64")
                         for name in ("infer", "forward", "backward")
                         for variant in ("threads", "one thread")}
    assert "12 functions" in out and str(tmp_path) in out

    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert "2 generated modules, 12 compiled functions" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("ahead ")]
    assert sorted(row[2] for row in rows) == ["float32", "float64"]
    assert all(row[1] == "cpu" and " ".join(row[3:9]) == "backward, backward_serial, forward, "
               "forward_serial, infer, infer_serial" for row in rows)

    assert main(["cache", "clear"]) == 0
    assert "removed 2 generated modules" in capsys.readouterr().out
    assert not [f for f in Path(tmp_path).rglob("rnncc_cell_*")]
    assert spec.exists()   # only rnncc's own files
    assert main(["cache", "info"]) == 0
    assert "0 generated modules" in capsys.readouterr().out


def test_a_precompiled_cell_loads_in_another_process(tmp_path):
    """`rnncc compile` in one process; a process running the cell then compiles nothing."""
    env = dict(os.environ, RNNCC_CACHE_DIR=str(tmp_path))
    spec = tmp_path / "later.cell"
    spec.write_text("cell later\ninput x[I]\nstate h[H]\nh' = tanh(W @ x + U @ h + b) * 0.375\n")
    subprocess.run([sys.executable, "-m", "rnncc", "compile", str(spec), "--jobs", "1"],
                   env=env, check=True, capture_output=True, timeout=600)
    script = textwrap.dedent(f"""
        import logging, numpy as np, rnncc
        events = []
        class Keep(logging.Handler):
            def emit(self, record):
                e = getattr(record, "rnncc_compile", None)
                if e is not None and e.phase == "done":
                    events.append(e)
        logging.getLogger("rnncc.compile").addHandler(Keep())
        logging.getLogger("rnncc.compile").setLevel(logging.INFO)
        cell = rnncc.compile({str(spec)!r})
        p = cell.init_params(seed=0, I=3, H=4)
        x = np.ones((4, 64, 3), np.float32)
        ys, _ = cell.forward(p, x, target="cpu")
        cell.backward(p, x, np.ones_like(ys), target="cpu")
        assert events and all(e.cached for e in events), [e.describe() for e in events]
        print(len(events))
    """)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 3

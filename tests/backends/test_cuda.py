"""The cuda target (numba.cuda kernels generated from the Plan) against the reference interpreter.

These run in Numba's CUDA simulator (tests/conftest.py turns it on unless NUMBA_ENABLE_CUDASIM
is set), which runs every GPU thread as a Python thread: sizes are tiny, and the simulator's
blocks are 4 threads (codegen.SIMULATOR_LAUNCH), fewer than the columns of most rows, so the
threads' striding over columns, the block reductions and the GEMM tiling are all exercised.
On a GPU machine, NUMBA_ENABLE_CUDASIM=0 runs the same tests on the device. That the kernels
also compile for a real GPU is checked by compiling them to PTX (cuda_ptx.py).
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import rnncc
from rnncc import backends
from rnncc.runtime.gradcheck import random_problem

from .test_cpu import REGRESSIONS, compare

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", rnncc.shipped())
def test_every_shipped_cell_forward_and_backward_equals_reference(shipped_cells, name, dtype):
    cell = shipped_cells[name]
    sizes = {d: 3 + k for k, d in enumerate(cell.dims)}
    compare(cell, random_problem(cell, sizes, T=3, B=2, seed=7, ragged=True), dtype,
            err_msg=name, target="cuda")


def test_the_gpus_launch_shape_runs_in_the_simulator(monkeypatch):
    """The simulator's own launch shape (4-thread blocks, 4 x 4 tiles) keeps the tests fast; the
    shape a GPU runs (256-thread blocks, 64 x 64 and 16 x 64 tiles, 16 deep) is otherwise only
    compiled to PTX. Here it runs, once, on a small case (slowly: 256 Python threads a block)."""
    from rnncc.backends.cuda import codegen
    monkeypatch.setattr(codegen, "SIMULATOR_LAUNCH", codegen.GPU_LAUNCH)
    cell = rnncc.compile((ROOT / "specs" / "gru.cell").read_text())   # its own compiled code
    compiled = backends.get("cuda").compiled(cell, np.float64)
    assert compiled.threads == 256 and "NT = 256" in compiled.source
    assert "BM, BN, TM, TN = 64, 64, 4, 4" in compiled.source
    compare(cell, random_problem(cell, {"I": 3, "H": 5}, T=2, B=3, seed=4, ragged=True),
            np.float64, err_msg="gru, GPU launch shape", target="cuda")


def test_full_length_rows_and_more_rows_than_a_block_has_threads(shipped_cells):
    cell = shipped_cells["gru"]
    compare(cell, random_problem(cell, {"I": 5, "H": 6}, T=4, B=5, seed=8), np.float64, 1e-10,
            target="cuda")


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_specs_that_once_broke_code_generation(name):
    """Constant results, a state read before its update as the output, an outer sum with no
    rows, GEMMs only, accumulation after the loop."""
    cell = rnncc.compile(REGRESSIONS[name])
    sizes = {d: 3 + k for k, d in enumerate(cell.dims)}
    compare(cell, random_problem(cell, sizes, T=3, B=2, seed=5, ragged=True), np.float64,
            1e-10, err_msg=name, target="cuda")


def test_device_arrays_in_device_arrays_out_and_never_written(shipped_cells):
    from numba import cuda
    cell = shipped_cells["lstm"]
    prob = random_problem(cell, {"I": 3, "H": 4}, T=3, B=2, seed=9, ragged=True)
    p = {k: v.astype(np.float32) for k, v in prob.p.items()}
    x = prob.xs["x"].astype(np.float32)
    state = {k: v.astype(np.float32) for k, v in prob.state.items()}
    dys = prob.dys.astype(np.float32)
    on_gpu = {"p": {k: cuda.to_device(v) for k, v in p.items()}, "x": cuda.to_device(x),
              "state": {k: cuda.to_device(v) for k, v in state.items()},
              "dys": cuda.to_device(dys)}
    ys, final = cell.forward(on_gpu["p"], on_gpu["x"], state=on_gpu["state"],
                             lengths=prob.lengths, target="cuda")
    ys_host, final_host = cell.forward(p, x, state=state, lengths=prob.lengths, target="cuda")
    assert not isinstance(ys, np.ndarray) and hasattr(ys, "copy_to_host")
    np.testing.assert_array_equal(ys.copy_to_host(), ys_host)
    for s in cell.states:
        np.testing.assert_array_equal(final[s].copy_to_host(), final_host[s])
    g = cell.backward(on_gpu["p"], on_gpu["x"], on_gpu["dys"], state=on_gpu["state"],
                      lengths=prob.lengths, target="cuda")
    g_host = cell.backward(p, x, dys, state=state, lengths=prob.lengths, target="cuda")
    np.testing.assert_array_equal(g["x"].copy_to_host(), g_host["x"])
    for k in cell.params:
        np.testing.assert_array_equal(g["params"][k].copy_to_host(), g_host["params"][k])
    for s in cell.states:
        np.testing.assert_array_equal(g["state"][s].copy_to_host(), g_host["state"][s])
    # and the reference agrees with the host run
    ys_r, _ = cell.forward(prob.p, prob.xs["x"], state=prob.state, lengths=prob.lengths)
    np.testing.assert_allclose(ys_host, ys_r, rtol=1e-4, atol=1e-5)
    # the caller's device arrays are as they were
    np.testing.assert_array_equal(on_gpu["x"].copy_to_host(), x)
    np.testing.assert_array_equal(on_gpu["dys"].copy_to_host(), dys)
    for k in cell.states:
        np.testing.assert_array_equal(on_gpu["state"][k].copy_to_host(), state[k])
    for k in cell.params:
        np.testing.assert_array_equal(on_gpu["p"][k].copy_to_host(), p[k])


def test_device_array_errors_name_the_array(shipped_cells):
    from numba import cuda
    cell = shipped_cells["rnn"]
    p = cell.init_params(I=3, H=4)
    x = cuda.to_device(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match="x is an array on a GPU; run with target='cuda'"):
        cell.forward(p, x, target="cpu")
    p64 = dict(p, W=cuda.to_device(p["W"].astype(np.float64)))
    with pytest.raises(ValueError, match="parameter 'W' is a float64 array on the GPU but this "
                                         "call runs in float32"):
        cell.forward(p64, x, target="cuda")
    with pytest.raises(ValueError, match=r"parameter 'W' has shape \(4, 5\) but the expected "
                                         r"shape is \[H, I\] = \(4, 3\) \(I = 3 from x\)"):
        cell.forward(cell.init_params(I=5, H=4), x, target="cuda")


def test_layer_on_cuda_equals_the_cpu_layer():
    kwargs = dict(num_layers=2, bidirectional=True, dtype=np.float64, seed=3)
    on_gpu = rnncc.RNN("gru", 3, 4, target="cuda", **kwargs)
    on_cpu = rnncc.RNN("gru", 3, 4, target="cpu", **kwargs)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 3))
    lengths = np.array([3, 2])
    y, final = on_gpu(x, lengths=lengths)
    y_c, final_c = on_cpu(x, lengths=lengths)
    np.testing.assert_allclose(y, y_c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final["h"], final_c["h"], rtol=1e-10, atol=1e-12)
    from numba import cuda
    with pytest.raises(ValueError, match="x is an array on a GPU; rnncc.RNN takes numpy"):
        on_gpu(cuda.to_device(x))
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(on_gpu.backward(dy), on_cpu.backward(dy), rtol=1e-10,
                               atol=1e-12)
    for name in on_cpu.grads:
        np.testing.assert_allclose(on_gpu.grads[name], on_cpu.grads[name], rtol=1e-10,
                                   atol=1e-12, err_msg=name)


def test_without_a_gpu_or_the_simulator_the_error_says_so():
    code = textwrap.dedent("""
        import numpy as np
        from numba import cuda
        import rnncc
        from rnncc.backends.cuda.device import CudaUnavailableError
        cell = rnncc.load("rnn")
        p = cell.init_params(I=2, H=2)
        x = np.zeros((1, 1, 2), np.float32)
        if cuda.is_available():  # a GPU machine: the target runs
            print("ran", cell.forward(p, x, target="cuda")[0].shape)
        else:
            try:
                cell.forward(p, x, target="cuda")
            except CudaUnavailableError as exc:
                print("error:", exc)
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert ("error: target 'cuda' found no usable NVIDIA GPU" in out.stdout
            and "NUMBA_ENABLE_CUDASIM=1" in out.stdout) or "ran (1, 1, 2)" in out.stdout, \
        out.stdout


def test_generated_kernels_compile_for_a_real_gpu():
    """Every shipped cell's kernels, float32 (and lstm's float64), typed and compiled to PTX
    for sm_90 by numba-cuda, as a GPU run would compile them."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    script = str(ROOT / "tests" / "backends" / "cuda_ptx.py")
    for args in (["float32", *rnncc.shipped()], ["float64", "lstm"]):
        out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                             env=env, timeout=600, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-3000:]
        # each direction's kernel and each scan's chunk step, and transfer.py's 5
        kernels = sum(len(rnncc.load(name).compiled_plans()) for name in args[1:])
        assert kernels >= 3 * len(args[1:])
        assert out.stdout.count("bytes of PTX") == kernels + 5, out.stdout


def test_show_cuda_prints_the_generated_source(shipped_cells):
    source = shipped_cells["lnlstm"].show("text", stage="cuda")
    assert source.count("@cuda.jit(cache=True)") == 3
    assert all(f"def {f}(" in source for f in ("forward", "backward", "infer"))
    assert "grid.sync()" in source and "block_sum(" in source and "gemm(" in source
    assert "NT = 256" in source  # the GPU's launch shape, not the simulator's
    compile(source, "<generated>", "exec")  # it is Python


def test_arrays_kept_between_calls_never_leak_into_results(shipped_cells):
    """A call keeps the arrays only its kernel uses for the next call of the same shapes; what
    it hands out (outputs, final states, the tape, gradients) stays as it was after later
    calls, ragged or not, and every call equals the reference."""
    from numba import cuda
    cell = shipped_cells["gru"]
    compiled = backends.get("cuda").compiled(cell, np.float64)
    problems = [random_problem(cell, {"I": 3, "H": 4}, T=3, B=2, seed=s, ragged=r)
                for s, r in ((20, True), (21, False), (22, True))]
    handed = []
    for prob in problems:
        x = cuda.to_device(prob.xs["x"])
        ys, final = cell.forward(prob.p, x, state=prob.state, lengths=prob.lengths,
                                 target="cuda")
        g = cell.backward(prob.p, x, cuda.to_device(prob.dys), state=prob.state,
                          dfinal=prob.dfinal, lengths=prob.lengths, target="cuda")
        kept = {d: dict(compiled._kept[d][1]) for d in ("infer", "backward")}
        handed.append((prob, ys, final, g))
    # the last calls reused the arrays the first calls kept
    assert kept["infer"] and kept["backward"]
    assert all(compiled._kept[d][1][k] is v for d in kept for k, v in kept[d].items())
    for prob, ys, final, g in handed:
        ys_r, final_r = cell.forward(prob.p, prob.xs["x"], state=prob.state,
                                     lengths=prob.lengths)
        g_r = cell.backward(prob.p, prob.xs["x"], prob.dys, state=prob.state,
                            dfinal=prob.dfinal, lengths=prob.lengths)
        np.testing.assert_allclose(ys.copy_to_host(), ys_r, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(final["h"].copy_to_host(), final_r["h"], rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(g["x"].copy_to_host(), g_r["x"], rtol=1e-10, atol=1e-12)
        for k in cell.params:
            np.testing.assert_allclose(g["params"][k].copy_to_host(), g_r["params"][k],
                                       rtol=1e-10, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(g["state"]["h"].copy_to_host(), g_r["state"]["h"],
                                   rtol=1e-10, atol=1e-12)


def test_a_blocks_shared_arrays_are_one_in_the_simulator(monkeypatch):
    """The simulator finds a block's shared array by the line that allocates it, with a
    check-then-set that is not atomic: two threads allocating at once get two arrays, and the
    block's threads then share nothing (rare: once in about 30 runs of these tests, grossly
    wrong results). The generated simulator kernels allocate under a lock; here the race is
    made likely (each allocation yields the interpreter to the other threads), and the results
    must still equal the reference."""
    import time
    from numba.cuda.simulator import kernelapi

    class SlowEmpty:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def empty(*args, **kwargs):
            time.sleep(0.002)
            return np.empty(*args, **kwargs)

    monkeypatch.setattr(kernelapi, "np", SlowEmpty())
    cell = rnncc.compile((ROOT / "specs" / "gru.cell").read_text())   # its own compiled code
    assert "with SHARED_ALLOCATION:" in backends.get("cuda").compiled(cell, np.float64).source
    compare(cell, random_problem(cell, {"I": 3, "H": 5}, T=3, B=2, seed=4), np.float64,
            err_msg="gru, slow shared allocation", target="cuda")

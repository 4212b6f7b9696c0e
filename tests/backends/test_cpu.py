"""The cpu target (Numba code generated from the Plan) against the reference interpreter.

Compiling is slow (seconds to a minute per cell and dtype), so the cells are the session's shared
ones and each compiles once per dtype; the generated modules also land in the disk cache.
"""
import os
import subprocess
import sys
import textwrap
import warnings

import numba
import numpy as np
import pytest

import rnncc
from rnncc.runtime.gradcheck import random_problem

from ..close import TOLERANCE, assert_close
from ..noalias import check_arrays_apart


def compare(cell, prob, dtype, rtol=None, err_msg="", target="cpu", schedule=None):
    """`target` in `dtype` against the reference interpreter in float64 on the same values (every
    argument rounded to `dtype` first), forward and backward, entry by entry (tests/close.py;
    rtol defaults to the dtype's tolerance there)."""
    rtol = TOLERANCE[np.dtype(dtype)] if rtol is None else rtol
    def rounded(tree):
        return None if tree is None else {k: v.astype(dtype).astype(np.float64)
                                          for k, v in tree.items()}

    p, xs, state, dfinal = (rounded(t) for t in (prob.p, prob.xs, prob.state, prob.dfinal))
    dys = prob.dys.astype(dtype).astype(np.float64)
    lengths = prob.lengths

    def arg(tree):
        return {k: v.astype(dtype) for k, v in tree.items()}

    def x_arg(tree):
        return tree if len(tree) > 1 else tree[cell.inputs[0]]

    ys, final = cell.forward(arg(p), x_arg(arg(xs)), state=arg(state), lengths=lengths,
                             target=target, schedule=schedule)
    ys_r, final_r = cell.forward(p, x_arg(xs), state=state, lengths=lengths)
    assert ys.dtype == np.dtype(dtype)

    def close(a, b, what):
        assert_close(a, b, rtol, f"{what} {err_msg}")

    close(ys, ys_r, "ys")
    for s in cell.states:
        close(final[s], final_r[s], f"final {s}")
    g = cell.backward(arg(p), x_arg(arg(xs)), dys.astype(dtype), state=arg(state),
                      dfinal=arg(dfinal), lengths=lengths, target=target, schedule=schedule)
    g_r = cell.backward(p, x_arg(xs), dys, state=state, dfinal=dfinal, lengths=lengths)
    for k in cell.params:
        close(g["params"][k], g_r["params"][k], f"d{k}")
    gx = g["x"] if isinstance(g["x"], dict) else {"x": g["x"]}
    gx_r = g_r["x"] if isinstance(g_r["x"], dict) else {"x": g_r["x"]}
    for k in gx:
        close(gx[k], gx_r[k], f"d{k}")
    for s in cell.states:
        close(g["state"][s], g_r["state"][s], f"d{s} (initial)")


@pytest.mark.parametrize("name", rnncc.shipped())
def test_float64_equals_reference(shipped_cells, name):
    cell = shipped_cells[name]
    for ragged in (False, True):
        compare(cell, random_problem(cell, T=5, B=3, seed=3, ragged=ragged), np.float64)


@pytest.mark.parametrize("name", rnncc.shipped())
def test_float32_equals_reference(shipped_cells, name):
    cell = shipped_cells[name]
    for ragged in (False, True):
        compare(cell, random_problem(cell, T=5, B=3, seed=4, ragged=ragged), np.float32)


# Specs on which hypothesis found code generation bugs (float64: the bugs were not dtype's).
REGRESSIONS = {
    # an input no equation reads: its gradient is a constant (zeros) result
    "unused_input": "cell u\ninput x[I]\nstate h[H]\nh' = tanh(h)\n",
    # the output is a state as read (before its update): copied out before the carry; a
    # parameter-only product (W1 @ b2) whose weight gradient is an outer sum with no rows; a
    # state whose next value is constant
    "output_is_old_state": (
        "cell s\ninput x[I], y[H]\nstate h[H], m[H], c[K]\nparam W1[K, I]\noutput a1\n"
        "a0 = 2.0\na1 = c\nm' = tanh(m)\nh' = tanh((W0 @ a1))\n"
        "c' = tanh(min(((a0 / (1 + abs(a0))) / (1 + abs((W1 @ b2)))), softplus((W3 @ x))))\n"),
    # a forward of GEMMs only: no kernel, no parallel loop (and no Numba warning about one)
    "gemms_only": "cell lin\ninput x[I]\nstate h[H]\nh' = W @ x + U @ h\n",
    # a hoisted product's gradient: per-step part plus a GEMM after the loop, accumulated
    "accumulate_after_loop": (
        "cell a\ninput x[I]\nstate h[H], c[K]\na0 = W0 @ x\nc' = tanh(W1 @ a0)\n"
        "h' = tanh(a0 + h)\n"),
    # an output reading a gate's part of a stacked per-step product is computed after the loop:
    # the stacked product is kept for every step (the part has no storage of its own), and a
    # per-step GEMM reads the part (strided columns)
    "part_read_after_the_loop": (
        "cell p\ninput x[I], y[H]\nstate h[H], c[H]\nparam W0[I, H]\noutput a\n"
        "p = W0 @ h\na = max(mean(y), p)\nh' = tanh(W1 @ p + U2 @ h)\n"
        "c' = tanh(W3 @ y + U4 @ h)\n"),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_specs_that_once_broke_code_generation(name):
    cell = rnncc.compile(REGRESSIONS[name])
    sizes = {d: 3 + k for k, d in enumerate(cell.dims)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", numba.NumbaPerformanceWarning)
        for ragged in (False, True):
            compare(cell, random_problem(cell, sizes, T=4, B=3, seed=5, ragged=ragged),
                    np.float64, err_msg=name)


def test_kernels_on_numbas_threads_equal_the_reference(shipped_cells, monkeypatch):
    """Numba's parallel twins (RNNCC_NATIVE=0, or the THREADS variant): small problems (and
    processes whose OpenMP threads spin) run their kernels on one thread; force every call onto
    all of Numba's."""
    from rnncc.backends.cpu import runtime, threads
    monkeypatch.setattr(runtime, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(threads, "_shared", True)
    assert runtime.kernel_threads(2, {"H": 3}, 2) == 2
    for name in ("lstm", "gru"):
        cell = shipped_cells[name]
        compiled = rnncc.backends.get("cpu").compiled(cell, np.float32)
        monkeypatch.setattr(compiled, "variant", threads.THREADS)
        compare(cell, random_problem(cell, T=5, B=7, seed=9, ragged=True), np.float32)
        module = compiled.module
        assert module.forward.signatures and module.backward.signatures  # the parallel twins


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_and_products_shared_over_a_team_equal_the_reference(shipped_cells,
                                                                     monkeypatch, dtype):
    """rnncc's compiled function on a team of two (team.py): each step's product by a
    parameter split by panels, each kernel's rows split between the members (a loop outlined
    by native/lower.py), ragged rows; every shipped matrix cell against the reference."""
    from rnncc.backends.cpu import runtime, team
    monkeypatch.setattr(runtime, "available_threads", lambda: 2)
    monkeypatch.setattr(runtime, "TEAM_MIN_ELEMENTS", 0)
    monkeypatch.setattr(runtime, "PARALLEL_MIN_WORK", 0)
    from rnncc.backends.cpu.native import gemm
    assert 16 * 128 * 4 * 128 >= gemm.TEAM_MIN_WORK_RANGE[1]   # (shared on any machine)
    members = []
    real_run = team.run
    monkeypatch.setattr(team, "run", lambda call, n, dtype="float32": (
        members.append(n), real_run(call, n, dtype)))
    for name in ("lstm", "gru", "rnn", "lnlstm"):
        cell = shipped_cells[name]
        # B = 16 rows (8 a member); lstm's and lnlstm's step products 16 x 128 x 4H, at
        # the top of gemm.TEAM_MIN_WORK_RANGE
        prob = random_problem(cell, T=4, B=16, seed=11, ragged=True, sizes={"I": 48, "H": 128})
        compare(cell, prob, dtype, err_msg=name)
        # B = 1: the step products shared by the size of their weight (gemm.TEAM_MIN_BYTES)
        prob = random_problem(cell, T=3, B=1, seed=12, sizes={"I": 48, "H": 128})
        compare(cell, prob, dtype, err_msg=f"{name} at B=1")
    assert members and set(members) == {2}
    # every prange loop of each direction became a function the team's rows call
    from rnncc.backends.cpu.native import compile_functions
    compiled = rnncc.backends.get("cpu").compiled(shipped_cells["gru"], dtype)
    for direction in ("forward", "backward"):
        fn = compiled._one_thread_function(direction)
        body = compiled.source[compiled.source.index(f"def {fn.__name__}("):].split("\n\n\n")[0]
        _, ir = compile_functions(compiled.source, {
            "f": (fn.__name__, compiled.native_params(direction))})
        assert ir.count("call void @rnncc_team_rows") == body.count("prange(") > 0


@pytest.mark.parametrize("min_work", [1 << 18, 1 << 20])   # (the Zen 4's and the Zen 5's)
def test_a_call_takes_a_team_where_its_products_pay_for_starting_one(monkeypatch, min_work):
    """The team decision's arithmetic by hand: multiply-adds of the products a team shares
    (from the machine's product threshold), and at B = 1 the bytes of the step's weight,
    against runtime.TEAM_MIN_CALL."""
    from rnncc.backends.cpu import runtime, team
    from rnncc.backends.cpu.native import gemm
    monkeypatch.setattr(team, "product_threshold", lambda dtype: min_work)
    infer = rnncc.load("lstm").compiled_plans()["infer"]

    def work(T, B, I, H):
        return runtime.team_work(infer, T, B, {"I": I, "H": H}, np.float32)
    # T=200, B=1, H=128: the input product (hoisted, 200 x 128 x 512) and 200 steps reading
    # U's 128 x 512 floats (256 KB, over TEAM_MIN_BYTES) at BYTE_WORK a byte
    assert 128 * 512 * 4 >= gemm.TEAM_MIN_BYTES
    assert work(200, 1, 128, 128) == (200 * 128 * 512
                                      + 200 * 128 * 512 * 4 * runtime.BYTE_WORK)
    assert work(200, 1, 128, 128) >= runtime.TEAM_MIN_CALL > work(10, 1, 128, 128)
    # the README's small lstm (T=100, B=16, I=32, H=64): each step's product reads 64 KB and
    # makes 16 x 64 x 256 = 2^18 multiply-adds: shared where the machine's threshold is 2^18
    # (then with its input product the call takes a team), else its input product alone,
    # which is not enough
    if min_work <= 16 * 64 * 256:
        assert work(100, 16, 32, 64) == (100 * 16 * 32 * 256 + 100 * 16 * 64 * 256
                                         ) >= runtime.TEAM_MIN_CALL
    else:
        assert work(100, 16, 32, 64) == 100 * 16 * 32 * 256 < runtime.TEAM_MIN_CALL
    # its backward: each step's dgates @ U^T reads U, then after the loop dx's product and
    # the two weight gradients' outer sums over all 200 rows
    backward = rnncc.load("lstm").compiled_plans()["backward"]
    assert runtime.team_work(backward, 200, 1, {"I": 128, "H": 128}, np.float32) == (
        200 * 128 * 512 * 4 * runtime.BYTE_WORK + 3 * 200 * 128 * 512)
    # T=100, B=64, H=256: all of it, by multiply-adds
    assert work(100, 64, 256, 256) == 2 * 100 * 64 * 256 * 1024 >= runtime.TEAM_MIN_CALL


def test_kernels_on_the_calling_thread_run_the_serial_twin(shipped_cells, monkeypatch):
    """One thread for the kernels: the serial twin runs (no parallel region to launch per
    step), compiled by rnncc's own compiler, and equals the reference."""
    from rnncc.backends.cpu import threads
    monkeypatch.setattr(threads, "_shared", False)
    cell = shipped_cells["gru"]
    compare(cell, random_problem(cell, T=5, B=7, seed=4, ragged=True), np.float64)
    compiled = rnncc.backends.get("cpu").compiled(cell, np.float64)
    assert all(compiled._native[f].ready for f in ("forward_serial", "backward_serial"))
    assert not compiled.module.forward_serial.signatures   # Numba compiled nothing of it


def compare_in_pieces(cell, prob, forward_pieces, backward_pieces, err_msg="", schedule=None):
    """ForwardRun/BackwardRun (what the layer wavefront runs), float64: forward first to last
    and backward last to first in the given pieces of time, against the reference interpreter
    over the whole sequence."""
    from rnncc import backends
    from rnncc.runtime.arguments import check_backward, check_forward
    x = prob.xs if len(cell.inputs) > 1 else prob.xs[cell.inputs[0]]
    compiled = backends.get("cpu").compiled(cell, np.float64)
    call = check_forward(cell, prob.p, x, prob.state, prob.lengths, schedule=schedule)
    run = compiled.start(call, keep=True)
    for t0, t1 in forward_pieces:
        run.advance(t0, t1)
    ys, final, tape = run.results()
    ys_r, final_r = cell.forward(prob.p, x, state=prob.state, lengths=prob.lengths)
    close = lambda a, b, what: assert_close(a, b, 1e-9, f"{what} {err_msg}")
    close(ys, ys_r, "ys")
    for s in cell.states:
        close(final[s], final_r[s], f"final {s}")
    dys, dfinal = check_backward(cell, call, prob.dys, prob.dfinal)
    back = compiled.start_backward(call, tape, dys, dfinal)
    for t0, t1 in backward_pieces:
        back.advance(t0, t1)
    dparams, dxs, dstate = back.results()
    g = cell.backward(prob.p, x, prob.dys, state=prob.state, dfinal=prob.dfinal,
                      lengths=prob.lengths)
    for k in cell.params:
        close(dparams[k], g["params"][k], f"d{k}")
    gx = g["x"] if isinstance(g["x"], dict) else {cell.inputs[0]: g["x"]}
    for k in cell.inputs:
        close(dxs[k], gx[k], f"d{k}")
    for s in cell.states:
        close(dstate[s], g["state"][s], f"d{s} (initial)")
    return run, back


@pytest.mark.parametrize("name", ["lstm", "gru", "lnlstm", "unused_input",
                                  "accumulate_after_loop"])
def test_a_call_run_in_pieces_of_time_equals_the_reference(shipped_cells, name):
    cell = shipped_cells[name] if name in shipped_cells else rnncc.compile(REGRESSIONS[name])
    prob = random_problem(cell, {d: 3 + k for k, d in enumerate(cell.dims)}, T=7, B=4, seed=6,
                          ragged=True)
    # uneven pieces, an empty one among them (it runs nothing)
    run, back = compare_in_pieces(cell, prob, [(0, 2), (2, 2), (2, 3), (3, 7)],
                                  [(4, 7), (4, 4), (1, 4), (0, 1)], err_msg=name)
    with pytest.raises(ValueError, match="do not continue a forward run at step 7"):
        run.advance(2, 5)
    with pytest.raises(ValueError, match="do not continue a backward run at step 0"):
        back.advance(0, 3)


def test_huge_inputs_saturate_nan_stays_in_its_row_same_bits_twice(shipped_cells):
    cell = shipped_cells["lstm"]
    prob = random_problem(cell, T=4, B=3, seed=8)
    p = {k: v.astype(np.float32) for k, v in prob.p.items()}
    x = prob.xs["x"].astype(np.float32)
    for scale in (1e4, 1e30):
        ys, final = cell.forward(p, x * np.float32(scale), target="cpu")
        assert np.isfinite(ys).all() and all(np.isfinite(v).all() for v in final.values())
    x_nan = x.copy()
    x_nan[1, 0, 0] = np.nan
    ys, final = cell.forward(p, x_nan, target="cpu")
    assert np.isnan(ys[1:, 0]).all() and not np.isnan(ys[:, 1:]).any()
    assert not np.isnan(ys[0]).any()
    first = cell.forward(p, x, target="cpu")
    second = cell.forward(p, x, target="cpu")
    assert first[0].tobytes() == second[0].tobytes()


def test_a_second_process_loads_the_compiled_cell_from_the_disk_cache(tmp_path):
    script = textwrap.dedent("""
        import time, numpy as np, rnncc
        cell = rnncc.compile("cell tiny\\ninput x[I]\\nstate h[H]\\nh' = tanh(W @ x + u * h)\\n")
        p = cell.init_params(seed=0, I=3, H=4)
        x = np.ones((2, 1, 3), np.float32)
        start = time.perf_counter()
        cell.forward(p, x, target="cpu")
        native = rnncc.backends.get("cpu").compiled(cell, np.float32)._native
        print(time.perf_counter() - start, sum(f.loaded_from_cache for f in native.values()))
    """)
    env = dict(os.environ, RNNCC_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=env, timeout=600) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    (_, cold_hits), (_, warm_hits) = [map(float, r.stdout.split()) for r in runs]
    # functions loaded from the cache: none in the first process, the one called in the second
    # (how long each took is bench/compile.py's business)
    assert cold_hits == 0 and warm_hits == 1
    assert {path.suffix for path in tmp_path.iterdir()} >= {".py", ".o"}


def test_show_cpu_prints_the_generated_source(shipped_cells):
    source = shipped_cells["gru"].show("text", stage="cpu")
    assert source.count("@njit(") == 6   # each function and its serial twin
    assert all(f"def {f}(" in source and f"def {f}_serial(" in source
               for f in ("forward", "backward", "infer"))
    compile(source, "<generated>", "exec")  # it is Python


# -- at the benchmark's size -----------------------------------------------------------------------

T_BENCH, B_BENCH, H_BENCH = 100, 64, 256   # bench/cpu.py's first configuration (I = H)


def test_lstm_at_benchmark_size_equals_torch():
    """What bench/cpu.py times, checked: the float32 lstm layer, forward and backward at
    T=100, B=64, I=H=256, against torch's nn.LSTM in float64 on the same (float32) weights."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(H_BENCH, H_BENCH)
    layer = rnncc.from_torch(module)
    assert layer.dtype == np.float32
    oracle = module.double()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T_BENCH, B_BENCH, H_BENCH)).astype(np.float32)
    dy = rng.standard_normal((T_BENCH, B_BENCH, H_BENCH)).astype(np.float32)
    y, final = layer(x)
    dx = layer.backward(dy)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out, (h_n, c_n) = oracle(xt)
    out.backward(torch.tensor(dy, dtype=torch.float64))
    tol = TOLERANCE[np.dtype(np.float32)]
    assert_close(y, out.detach().numpy(), tol, "y")
    assert_close(final["c"], c_n.detach().numpy(), tol, "final c")
    assert_close(dx, xt.grad.numpy(), tol, "dx")
    grads = dict(oracle.named_parameters())
    for k, (w, u) in enumerate(zip(("W_i", "W_f", "W_g", "W_o"), ("U_i", "U_f", "U_g", "U_o"))):
        block = slice(k * H_BENCH, (k + 1) * H_BENCH)
        assert_close(layer.grads[w + "_l0"], grads["weight_ih_l0"].grad[block].numpy(), tol, w)
        assert_close(layer.grads[u + "_l0"], grads["weight_hh_l0"].grad[block].numpy(), tol, u)


def test_lnlstm_at_benchmark_size_equals_the_float64_reference(shipped_cells):
    """The same size for the layer-norm LSTM (no torch twin of its own): the float32 cpu
    target against the float64 reference interpreter on the same rounded values."""
    cell = shipped_cells["lnlstm"]
    prob = random_problem(cell, {"I": H_BENCH, "H": H_BENCH}, T=T_BENCH, B=B_BENCH, seed=1)
    compare(cell, prob, np.float32, err_msg="lnlstm at T=100, B=64, I=H=256")


@pytest.mark.parametrize("target", ["reference", "plan", "cpu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_backward_never_write_the_callers_arrays(shipped_cells, target, dtype):
    """The cpu target reads C-contiguous arrays of the run's dtype in place (no copy): it must
    still never write them, ragged rows included."""
    cell = shipped_cells["lstm"]
    prob = random_problem(cell, T=5, B=3, seed=12, ragged=True)
    cast = lambda tree: {k: np.ascontiguousarray(v, dtype=dtype) for k, v in tree.items()}
    p, state, dfinal = cast(prob.p), cast(prob.state), cast(prob.dfinal)
    x, dys = prob.xs["x"].astype(dtype), prob.dys.astype(dtype)
    lengths = prob.lengths.copy()
    arrays = [*p.values(), *state.values(), *dfinal.values(), x, dys, lengths]
    before = [a.copy() for a in arrays]
    cell.forward(p, x, state=state, lengths=lengths, target=target)
    cell.backward(p, x, dys, state=state, dfinal=dfinal, lengths=lengths, target=target)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_no_array_a_generated_function_writes_overlaps_another_argument(shipped_cells,
                                                                         monkeypatch):
    """The generated functions tell LLVM that their arrays do not overlap (noalias.py):
    tests/noalias.py checks every call (memory of its own for every array the function may
    write, the read-only ones left as they were). Every shipped cell's functions, ragged, and
    rnncc.RNN's workspaces and packed parameters (two calls: the second reuses them),
    bidirectional, two layers deep; rnncc.torch's in tests/torch/test_module.py."""
    checked = check_arrays_apart(monkeypatch)
    for name in rnncc.shipped():
        cell = shipped_cells[name]
        prob = random_problem(cell, T=4, B=3, seed=5, ragged=True)
        p = {k: v.astype(np.float32) for k, v in prob.p.items()}
        x = {k: v.astype(np.float32) for k, v in prob.xs.items()}
        x = x if len(x) > 1 else x[cell.inputs[0]]
        cell.forward(p, x, lengths=prob.lengths, target="cpu")
        cell.backward(p, x, prob.dys.astype(np.float32), lengths=prob.lengths, target="cpu")
    model = rnncc.RNN(shipped_cells["lstm"], 3, 4, num_layers=2, bidirectional=True)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    for _ in range(2):
        ys, _ = model(x, train=True)
        model.backward(np.ones_like(ys))
    assert set(checked) == {"infer", "forward", "backward"}


def test_kernels_share_the_cores_only_for_wide_steps(monkeypatch):
    """Where Numba's idle threads sleep, the kernels of a step run on its threads when rows x
    widest dimension reaches PARALLEL_MIN_WORK, else on the calling thread; where they spin,
    always on the calling thread (what the README says)."""
    from rnncc.backends.cpu import threads
    from rnncc.backends.cpu.runtime import PARALLEL_MIN_WORK, kernel_threads
    monkeypatch.setattr(threads, "_shared", False)
    assert kernel_threads(64, {"I": 256, "H": 256}, 2) == 1
    monkeypatch.setattr(threads, "_shared", True)
    assert kernel_threads(64, {"I": 256, "H": 256}, 2) == 2
    assert kernel_threads(1, {"I": 128, "H": 128}, 2) == 1
    assert kernel_threads(16, {"H": PARALLEL_MIN_WORK // 16}, 4) == 4
    assert kernel_threads(16, {"H": PARALLEL_MIN_WORK // 16 - 1}, 4) == 1


def test_kernel_heavy_steps_share_the_cores_even_beside_spinning_threads(monkeypatch):
    """Where OpenMP's idle threads spin, a step's kernels get Numba's threads only when they
    weigh against its products (kernel_share) and the step is wide: the layer-norm LSTM's
    training forward and backward do at H=256, B=64 (the backward at break-even: 0.98 beside
    torch, bench/kernel_threads.py), its inference and the LSTM's and GRU's kernels do not
    (see runtime.KERNEL_HEAVY)."""
    from rnncc.backends.cpu import runtime, threads
    monkeypatch.setattr(threads, "_shared", False)
    sizes = {"I": 256, "H": 256}
    want = {"lstm": {"forward": 1, "backward": 1, "infer": 1},
            "gru": {"forward": 1, "backward": 1, "infer": 1},
            "lnlstm": {"forward": 2, "backward": 2, "infer": 1}}
    shares = {}
    for name, directions in want.items():
        plans = rnncc.load(name).compiled_plans()
        for direction, threads_wanted in directions.items():
            shares[name, direction] = share = runtime.kernel_share(plans[direction], sizes)
            assert runtime.kernel_threads(64, sizes, 2, share) == threads_wanted, \
                (name, direction, share)
    assert runtime.kernel_threads(16, sizes, 2, shares["lnlstm", "forward"]) == 1   # narrow
    # the share by hand for the lstm's inference: 4 gates' products, H*H multiply-adds each;
    # its kernel's 5 fastmath calls and other ops per element, and its 2 stored outputs
    infer = rnncc.load("lstm").compiled_plans()["infer"]
    (kernel,) = [s for s in infer.phases["per_step"] if s.kind == "kernel"]
    calls = sum(op.op in ("sigmoid", "tanh") for op in kernel.ops)
    assert calls == 5 and len(kernel.outputs) == 2
    by_hand = (8 * calls + (len(kernel.ops) - calls) + 4 * 2) * 256 / (4 * 256 * 256)
    assert shares["lstm", "infer"] == pytest.approx(by_hand)


def test_rnncc_leaves_the_openmp_policy_to_the_process():
    """`import rnncc` and a call set no OpenMP policy (it would be every OpenMP library's: torch
    shares the runtime), and the kernels use Numba's threads only where its idle threads sleep:
    OMP_WAIT_POLICY=PASSIVE, or a threading layer that is not OpenMP."""
    code = textwrap.dedent("""
        import os, numpy as np, rnncc
        rnncc.RNN("rnn", 3, 4)(np.zeros((2, 1, 3), np.float32))
        from rnncc.backends.cpu import threads
        print(os.environ.get("OMP_WAIT_POLICY"), threads.launch())
    """)
    cases = {(): "None False", (("OMP_WAIT_POLICY", "PASSIVE"),): "PASSIVE True",
             (("OMP_WAIT_POLICY", "ACTIVE"),): "ACTIVE False",
             (("NUMBA_THREADING_LAYER", "workqueue"),): "None True"}
    for extra, want in cases.items():
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        env.update(extra)
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=600)
        assert run.returncode == 0, run.stderr
        assert run.stdout.split("\n")[-2] == want, (extra, run.stdout)


@pytest.mark.parametrize("name", ["lstm", "gru", "lnlstm"])
def test_a_buffers_getter_reads_what_whole_reads(shipped_cells, name):
    """The getters a call's results are read by (worked out once per buffer and call sizes)
    against whole(), which works the same out on every call: every buffer of the training
    forward and of the backward, read from the arrays of real calls (ragged rows)."""
    from rnncc.backends.cpu import runtime
    from rnncc.runtime.arguments import check_backward, check_forward
    cell = shipped_cells[name]
    compiled = rnncc.backends.get("cpu").compiled(cell, np.float64)
    prob = random_problem(cell, T=4, B=3, seed=5, ragged=True)
    call = check_forward(cell, prob.p, prob.xs["x"], prob.state, prob.lengths)
    run = compiled.start(call, keep=True)
    run.advance(0, call.T)
    _, _, tape = run.results()
    dys, dfinal = check_backward(cell, call, prob.dys, prob.dfinal)
    back = compiled.start_backward(call, tape, dys, dfinal)
    back.advance(0, call.T)
    checked = 0
    for direction, arrays in (("forward", run.arrays), ("backward", back.arrays)):
        plan = compiled.plans[direction]
        for buf in plan.buffers:
            try:
                want = runtime.whole(plan, arrays, buf, call.sizes, np.float64)
            except KeyError:   # (a value no argument holds: a kernel's own)
                continue
            got = runtime.whole_getter(plan, arrays.keys(), buf, call.sizes, np.float64)(arrays)
            assert np.shape(got) == np.shape(want), (direction, buf)
            np.testing.assert_array_equal(got, want, err_msg=f"{direction} {buf}")
            checked += 1
    assert checked > 10

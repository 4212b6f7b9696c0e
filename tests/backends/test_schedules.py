"""The time loop's schedules on the cpu target: the lanes schedule (each batch row, or block of
its columns, runs its whole time loop) and the scan (chunks of time at once, for linear
recurrences) against the reference interpreter, forward and backward, float32 and float64,
ragged lengths, on one thread and on several, in pieces of time; the step schedule of the same
cells; and the cells they do not apply to."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnncc
from rnncc import backends
from rnncc.backends.cpu import runtime, scan
from rnncc.runtime.gradcheck import random_problem

from ..strategies import lane_cell_specs
from ..test_properties import ALWAYS_THE_SAME
from .test_cpu import compare, compare_in_pieces

LANE_CELLS = ["indrnn", "mingru", "minlstm", "qrnn", "sru"]
LINEAR_CELLS = ["mingru", "minlstm", "qrnn"]          # linear both ways: a scan each way
LINEAR_BACKWARD_CELLS = ["indrnn", "sru"]              # elementwise forward, linear backward


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", LANE_CELLS)
def test_each_schedule_equals_the_reference(shipped_cells, name, dtype):
    cell = shipped_cells[name]
    assert cell.schedules == (("lanes", "scan", "step") if name in LINEAR_CELLS
                              else ("lanes", "step"))
    for ragged in (False, True):
        prob = random_problem(cell, {"I": 3, "H": 20}, T=6, B=3, seed=4, ragged=ragged)
        for schedule in (*cell.schedules, None):
            compare(cell, prob, dtype, err_msg=f"{name} {schedule} ragged={ragged}",
                    schedule=schedule)


@pytest.fixture
def scans(monkeypatch):
    """Which directions' calls ran as a scan, and in how many chunks (scan.run spied on)."""
    ran = []
    run, count = scan.run, scan.chunk_count
    monkeypatch.setattr(scan, "run", lambda compiled, direction, *a: ran.append(direction)
                        or run(compiled, direction, *a))
    monkeypatch.setattr(scan, "chunk_count", lambda T, threads: ran.append(count(T, threads))
                        or count(T, threads))
    return ran


def compare_backward_scan(cell, prob, dtype, err_msg=""):
    """Backward alone as a scan (the forward in its own schedule: a cell whose forward is not
    linear cannot be asked for the scan as a whole), against the reference interpreter."""
    from rnncc.runtime.arguments import check_backward, check_forward
    from tests.close import TOLERANCE, assert_close
    x = prob.xs[cell.inputs[0]]
    cpu = backends.get("cpu")
    call = check_forward(cell, {k: v.astype(dtype) for k, v in prob.p.items()}, x.astype(dtype),
                         None, prob.lengths)
    dys, dfinal = check_backward(cell, call, prob.dys.astype(dtype), None)
    _, _, tape = cpu.train(cell, call)
    dparams, dxs, dstate = cpu.backward(cell, dataclasses.replace(call, schedule="scan"), tape,
                                        dys, dfinal)
    rounded = {k: v.astype(dtype).astype(np.float64) for k, v in prob.p.items()}
    g = cell.backward(rounded, x.astype(dtype).astype(np.float64),
                      prob.dys.astype(dtype).astype(np.float64), lengths=prob.lengths)
    rtol = TOLERANCE[np.dtype(dtype)]
    for k in dparams:
        assert_close(dparams[k], g["params"][k], rtol, f"d{k} {err_msg}")
    assert_close(dxs[cell.inputs[0]], g["x"], rtol, f"dx {err_msg}")
    for s in dstate:
        assert_close(dstate[s], g["state"][s], rtol, f"d{s} {err_msg}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", LINEAR_BACKWARD_CELLS)
def test_a_linear_backward_scans_after_a_nonlinear_forward(shipped_cells, name, dtype, scans):
    cell = shipped_cells[name]
    assert cell.plan.backward.chunks is not None and cell.plan.forward.chunks is None
    prob = random_problem(cell, {"I": 3, "H": 20}, T=9, B=3, seed=11, ragged=True)
    compare_backward_scan(cell, prob, dtype, err_msg=name)
    assert "backward" in scans


@pytest.mark.parametrize("chunks", [1, 2, 5, 9])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_scan_in_any_chunks_on_any_threads_equals_the_reference(shipped_cells, chunks,
                                                                    threads, monkeypatch,
                                                                    scans):
    """Chunks of 9 steps: one (no combining), uneven ones, one a step; rows that end inside
    a chunk and rows that end before one (ragged), on one thread and on two."""
    monkeypatch.setattr(scan, "chunk_count", lambda T, available: chunks)
    monkeypatch.setattr(runtime, "available_threads", lambda: threads)
    cell = shipped_cells["qrnn"]
    prob = random_problem(cell, {"I": 3, "H": 20}, T=9, B=4, seed=12, ragged=True)
    compare(cell, prob, np.float64, err_msg=f"{chunks} chunks", schedule="scan")
    assert {"infer", "forward", "backward"} <= set(scans)
    compare_backward_scan(shipped_cells["sru"], prob_sru := random_problem(
        shipped_cells["sru"], {"I": 3, "H": 20}, T=9, B=4, seed=13, ragged=True), np.float64)
    assert prob_sru.lengths is not None


@pytest.mark.parametrize("update", ["h' = u * h * v + tanh(W @ x)\nc' = c\n",
                                    "h' = 0.5 * h * 2 - h * sigmoid(V @ x) + tanh(W @ x)\n"
                                    "c' = -c + tanh(V2 @ x)\n"])
def test_the_scan_of_parameter_products_and_folded_numbers_equals_the_reference(update):
    """Chunk steps whose a is a product of parameters only (u * v, computed per row), a number
    (0.5 * 2 folds to 1, 1 - sigmoid(...)), the identity (c' = c), a sign (c' = -c + ...)."""
    cell = rnncc.compile("cell c\ninput x[I]\nstate h[H], c[H]\nparam u[H], v[H]\n"
                         "output y\n" + update + "y = h' * c'\n")
    prob = random_problem(cell, {"I": 3, "H": 5}, T=7, B=3, seed=15, ragged=True)
    compare(cell, prob, np.float64, schedule="scan")


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_the_scan_of_no_steps_gives_the_initial_state_and_zero_gradients(shipped_cells, target):
    cell = shipped_cells["qrnn"]
    p = cell.init_params(dtype=np.float64, I=3, H=5)
    state = {"c": np.random.default_rng(18).standard_normal((2, 5))}
    x = np.zeros((0, 2, 3))
    ys, final = cell.forward(p, x, state=state, target=target, schedule="scan")
    assert ys.shape == (0, 2, 5)
    np.testing.assert_array_equal(final["c"], state["c"])
    dfinal = {"c": np.ones((2, 5))}
    g = cell.backward(p, x, np.zeros((0, 2, 5)), state=state, dfinal=dfinal, target=target,
                      schedule="scan")
    assert all(not v.any() for v in g["params"].values())
    np.testing.assert_array_equal(g["state"]["c"], dfinal["c"])


def test_the_scan_in_pieces_of_time_equals_the_reference(shipped_cells, scans):
    """As the layer wavefront runs a call: each piece a scan of its own."""
    cell = shipped_cells["minlstm"]
    prob = random_problem(cell, {"I": 3, "H": 20}, T=8, B=3, seed=14, ragged=True)
    compare_in_pieces(cell, prob, [(0, 3), (3, 4), (4, 8)], [(5, 8), (1, 5), (0, 1)],
                      schedule="scan")
    assert scans.count("forward") == 3 and scans.count("backward") == 3
    counts = [c for c in scans if isinstance(c, int)]   # one chunk in a piece of one step
    assert counts.count(1) == 2 and sorted(counts)[2] >= 2


def test_the_scan_is_chosen_for_few_lanes_on_many_threads_and_long_sequences():
    plan = rnncc.load("mingru").plan.forward
    long = runtime.LANES_MIN_WORK // 16   # T for 4M elements of one row of 16 columns
    assert long >= scan.SCAN_MIN_STEPS * 8
    # one row of 16 columns: one lane; 8 threads -> the scan
    assert runtime.schedule_of(plan, long, 1, {"I": 8, "H": 16}, 8, None) == "scan"
    # lanes for half the threads or more; a short sequence; too few threads: lanes
    assert runtime.schedule_of(plan, long // 4, 4, {"I": 8, "H": 16}, 8, None) == "lanes"
    assert runtime.schedule_of(plan, long // 4, 1, {"I": 8, "H": 64}, 8, None) == "lanes"
    assert runtime.schedule_of(plan, long - 1, 1, {"I": 8, "H": 16}, 8, None) == "lanes"
    assert runtime.schedule_of(plan, long, 1, {"I": 8, "H": 16}, 2, None) == "lanes"
    # asked for: as asked; no chunk step (an elementwise forward): never the scan
    assert runtime.schedule_of(plan, 3, 1, {"I": 8, "H": 16}, 1, "scan") == "scan"
    sru = rnncc.load("sru").plan.forward
    assert runtime.schedule_of(sru, long, 1, {"I": 8, "H": 16}, 8, None) == "lanes"
    assert runtime.schedule_of(rnncc.load("sru").plan.backward, long, 1, {"I": 8, "H": 16}, 8,
                               None) == "scan"


@pytest.fixture
def lanes_on_threads(monkeypatch):
    """Every lanes call on two threads, in column blocks, however small (the threaded function:
    Numba's)."""
    import numba
    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    if threads < 2:
        pytest.fail("these tests need two threads (NUMBA_NUM_THREADS >= 2)")
    monkeypatch.setattr(runtime, "LANES_MIN_WORK", 0)
    monkeypatch.setattr(runtime, "available_threads", lambda: threads)
    return threads


@pytest.mark.parametrize("name", LANE_CELLS)
def test_lanes_on_threads_in_column_blocks_equal_the_reference(shipped_cells, name,
                                                               lanes_on_threads):
    cell = shipped_cells[name]
    # H = 40, B = 3, 2 threads: 2 lanes a row (no narrower than 16 columns), blocks of 32
    # and 8 columns
    assert runtime.lanes_of(cell.plan.forward, 5, 3, {"I": 3, "H": 40}, 2) == (2, 2)
    prob = random_problem(cell, {"I": 3, "H": 40}, T=5, B=3, seed=5, ragged=True)
    compare(cell, prob, np.float64, err_msg=name, schedule="lanes")


def test_lanes_in_pieces_of_time_equal_the_reference(shipped_cells, lanes_on_threads):
    """As the layer wavefront runs a call: forward first to last, backward last to first."""
    cell = shipped_cells["qrnn"]
    prob = random_problem(cell, {"I": 3, "H": 40}, T=7, B=4, seed=6, ragged=True)
    compare_in_pieces(cell, prob, [(0, 2), (2, 3), (3, 7)], [(4, 7), (1, 4), (0, 1)],
                      schedule="lanes")


def test_lanes_of_sizes_its_lanes():
    plan = rnncc.load("mingru").plan.forward
    big = runtime.LANES_MIN_WORK
    # one row, 2 threads: 8 lanes of 32 columns; 64 rows: a lane per row
    assert runtime.lanes_of(plan, big // 256, 1, {"I": 256, "H": 256}, 2) == (8, 2)
    assert runtime.lanes_of(plan, big // 256, 64, {"I": 256, "H": 256}, 2) == (1, 2)
    # no narrower than 16 columns; a small call on the calling thread
    assert runtime.lanes_of(plan, big // 20 + 1, 1, {"I": 8, "H": 20}, 8) == (1, 8)
    assert runtime.lanes_of(plan, big // 256 - 1, 1, {"I": 8, "H": 256}, 8) == (1, 1)
    rows = rnncc.compile("cell c\ninput x[I]\nstate h[H]\noutput h\n"
                         "h' = tanh(W @ x + h - mean(h))\n").plan.forward
    assert runtime.lanes_of(rows, big // 256, 1, {"I": 8, "H": 256}, 2) == (1, 2)


def test_lanes_of_whole_rows_equal_the_reference(lanes_on_threads):
    """A state normalised over its row: each lane is a whole row (a mean reads every
    column)."""
    cell = rnncc.compile("cell rows\ninput x[I]\nstate h[H]\noutput h\n"
                         "h' = tanh(W @ x + h - mean(h)) * sigmoid(V @ x)\n")
    assert cell.plan.forward.lanes == "rows" and cell.schedules[0] == "lanes"
    prob = random_problem(cell, {"I": 3, "H": 20}, T=6, B=3, seed=7, ragged=True)
    compare(cell, prob, np.float64, schedule="lanes")


@pytest.mark.filterwarnings("ignore::rnncc.SpecWarning")
@settings(max_examples=12, **ALWAYS_THE_SAME)
@given(gen=lane_cell_specs(linear=True) | lane_cell_specs(linear=False),
       seed=st.integers(0, 2**16))
def test_generated_lane_cells_equal_the_reference_in_every_schedule(gen, seed):
    cell = rnncc.compile(gen.text)
    sizes = {d: gen.sizes[d] for d in cell.dims}
    prob = random_problem(cell, sizes, T=5, B=3, seed=seed, ragged=True)
    for schedule in cell.schedules:
        for dtype in (np.float64, np.float32):
            compare(cell, prob, dtype, err_msg=f"{gen.text} {schedule}", schedule=schedule)
    linear = {cell.plan.forward.recurrence, cell.plan.backward.recurrence} == {"linear"}
    assert ("scan" in cell.schedules) == linear
    # and the generated numpy oracle of the spec agrees with the reference's forward
    ys, final = cell.forward(prob.p, prob.xs["x"], state=prob.state, lengths=prob.lengths)
    ys_o, final_o = gen.run(prob.p, prob.xs, prob.state, prob.lengths)
    np.testing.assert_allclose(ys, ys_o, rtol=1e-10, atol=1e-12, err_msg=gen.text)


@pytest.mark.parametrize("chunks", [2, 7])
def test_ten_thousand_steps_of_a_linear_scan_stay_accurate(shipped_cells, chunks, monkeypatch):
    """T = 10,000 in float32: lanes and step equal; the scan within float32's rounding of the
    float64 reference as they are (a gate below one forgets: errors do not grow with T; the
    chunk products of a, about 0.5 ** 1400 and more, underflow to zero and harm nothing:
    nothing is divided by them)."""
    monkeypatch.setattr(scan, "chunk_count", lambda T, available: chunks)
    cell = shipped_cells["mingru"]
    sizes, T, B = {"I": 4, "H": 24}, 10_000, 2
    p = cell.init_params(seed=3, dtype=np.float64, **sizes)
    x = np.random.default_rng(3).standard_normal((T, B, 4))
    ys64, final64 = cell.forward(p, x)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    out = {s: cell.forward(p32, x.astype(np.float32), target="cpu", schedule=s)
           for s in ("lanes", "step", "scan")}
    np.testing.assert_array_equal(out["lanes"][0], out["step"][0])
    scale = np.abs(ys64).max()
    for s in ("lanes", "scan"):
        assert np.abs(out[s][0] - ys64).max() <= 1e-5 * scale, s
        assert np.abs(out[s][1]["h"] - final64["h"]).max() <= 1e-5 * scale, s


def test_ten_thousand_steps_of_a_sum_scan_stay_accurate(monkeypatch):
    """A state that never forgets (a = 1: h' = h + tanh(W @ x)): 10,000 float32 steps, its
    rounding errors add up in every schedule; the scan's no more than the step schedule's
    (its chunk starts are combined in float64), both within 1e-4 of the state's size."""
    monkeypatch.setattr(scan, "chunk_count", lambda T, available: 7)
    cell = rnncc.compile("cell sum\ninput x[I]\nstate h[H]\noutput h\n"
                         "h' = h + tanh(W @ x)\n")
    assert cell.schedules == ("lanes", "scan", "step")
    sizes, T, B = {"I": 3, "H": 16}, 10_000, 2
    p = cell.init_params(seed=4, dtype=np.float64, **sizes)
    x = np.random.default_rng(4).standard_normal((T, B, 3)) + 0.3   # a drift: h grows
    ys64, _ = cell.forward(p, x)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    errors = {s: np.abs(cell.forward(p32, x.astype(np.float32), target="cpu",
                                     schedule=s)[0] - ys64).max() for s in ("step", "scan")}
    scale = np.abs(ys64).max()
    assert scale > 100
    assert errors["scan"] <= max(errors["step"], 1e-6 * scale)
    assert errors["step"] <= 1e-4 * scale


def test_schedule_errors_name_the_cell_and_its_schedules(shipped_cells):
    lstm = shipped_cells["lstm"]
    p = lstm.init_params(I=2, H=3)
    x = np.zeros((2, 1, 2), np.float32)
    with pytest.raises(ValueError, match=r"cell 'lstm' cannot run the schedule 'lanes'.*"
                                         r"recurrence is matrix.*schedules: 'step'"):
        lstm.forward(p, x, target="cpu", schedule="lanes")
    with pytest.raises(ValueError, match=r"unknown schedule 'fast'; the schedules are"):
        lstm.forward(p, x, target="cpu", schedule="fast")
    with pytest.raises(ValueError, match="cannot run the schedule 'lanes'"):
        rnncc.RNN("lstm", 2, 3, schedule="lanes")
    sru = shipped_cells["sru"]   # linear backward, elementwise forward: no scan as a whole
    with pytest.raises(ValueError, match=r"cell 'sru' cannot run the schedule 'scan'.*"
                                         r"recurrence is elementwise.*'lanes', 'step'"):
        sru.forward(sru.init_params(I=2, H=3), x, target="cpu", schedule="scan")


def test_matrix_cells_print_no_lanes(shipped_cells):
    """LSTM, GRU and every matrix cell: the step schedule only, their code as before."""
    for name in ("lstm", "gru", "rnn", "lnlstm"):
        source = backends.get("cpu").source(shipped_cells[name], np.float32)
        assert "lanes" not in source and "_chunks" not in source, name


def test_a_layer_runs_the_schedule_it_is_given(monkeypatch):
    """rnncc.RNN(schedule=...) reaches its calls (each lanes call sizes its lanes: lanes_of),
    and a training step in each schedule gives the same outputs and gradients."""
    sized = []
    lanes_of = runtime.lanes_of
    monkeypatch.setattr(runtime, "lanes_of", lambda plan, *a: sized.append(plan.kind)
                        or lanes_of(plan, *a))
    x = np.random.default_rng(8).standard_normal((9, 2, 5)).astype(np.float32)
    results = {}
    for schedule in ("lanes", "step"):
        sized.clear()
        layer = rnncc.RNN("sru", 5, 20, seed=1, schedule=schedule)
        y, _ = layer(x)
        dx = layer.backward(np.ones_like(y))
        assert set(sized) == ({"forward", "backward"} if schedule == "lanes" else set())
        results[schedule] = (y, dx, {k: v.copy() for k, v in layer.grads.items()})
    (y1, dx1, g1), (y2, dx2, g2) = results["lanes"], results["step"]
    np.testing.assert_allclose(y1, y2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-5, atol=1e-6)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-5, atol=1e-5)


# -- the cuda target (Numba's simulator unless NUMBA_ENABLE_CUDASIM=0) ---------------------------

@pytest.mark.parametrize("name", ["mingru", "sru"])
def test_cuda_lanes_scan_and_steps_equal_the_reference(shipped_cells, name):
    """A grid thread per lane (a column), its time loop inside, no grid barrier per step; the
    scan (mingru: linear, in the simulator's 3 chunks of 2, 2 and 1 steps, a row ending in
    the second); and the step schedule of the same cell. More lanes than the simulator's
    grid has threads."""
    cell = shipped_cells[name]
    prob = random_problem(cell, {"I": 3, "H": 5}, T=5, B=2, seed=9, ragged=True)
    for schedule in cell.schedules:
        compare(cell, prob, np.float64, err_msg=f"{name} {schedule}", target="cuda",
                schedule=schedule)


def test_cuda_scan_of_a_backward_alone_and_of_whole_rows_equals_the_reference():
    """The scan of a backward whose forward is not linear (sru), and of a cell whose lanes
    are whole rows (a block per chunk and row)."""
    from rnncc.runtime.arguments import check_backward, check_forward
    from tests.close import TOLERANCE, assert_close
    sru = rnncc.load("sru")
    prob = random_problem(sru, {"I": 3, "H": 5}, T=5, B=2, seed=16, ragged=True)
    cuda = backends.get("cuda")
    call = check_forward(sru, prob.p, prob.xs["x"], None, prob.lengths)
    dys, dfinal = check_backward(sru, call, prob.dys, None)
    _, _, tape = cuda.train(sru, call)
    dparams, dxs, _ = cuda.backward(sru, dataclasses.replace(call, schedule="scan"), tape, dys,
                                    dfinal)
    g = sru.backward(prob.p, prob.xs["x"], prob.dys, lengths=prob.lengths)
    for k in dparams:
        assert_close(dparams[k], g["params"][k], TOLERANCE[np.dtype(np.float64)], k)
    assert_close(dxs["x"], g["x"], TOLERANCE[np.dtype(np.float64)], "dx")
    rows = rnncc.compile("cell rows\ninput x[I]\nstate h[H]\noutput y\n"
                         "a = W @ x\nh' = sigmoid(V @ x) * h + tanh(a - mean(a))\n"
                         "y = h' - mean(h')\n")
    assert rows.plan.forward.lanes == "rows" and "scan" in rows.schedules
    prob = random_problem(rows, {"I": 3, "H": 6}, T=4, B=2, seed=17, ragged=True)
    compare(rows, prob, np.float64, target="cuda", schedule="scan")


def test_cuda_lanes_of_whole_rows_equal_the_reference():
    """A block per row: its threads over the row's columns, a block reduction for the mean."""
    cell = rnncc.compile("cell rows\ninput x[I]\nstate h[H]\noutput h\n"
                         "h' = tanh(W @ x + h - mean(h)) * sigmoid(V @ x)\n")
    prob = random_problem(cell, {"I": 3, "H": 6}, T=3, B=3, seed=10, ragged=True)
    compare(cell, prob, np.float64, target="cuda", schedule="lanes")


def test_cuda_lanes_source_has_no_barrier_in_its_time_loop(shipped_cells):
    source = backends.get("cuda").source(shipped_cells["qrnn"], np.float32)
    forward = source[source.index("def forward("):source.index("def backward(")]
    lanes = forward[forward.index("and lanes > 0:\n"):]
    loop = lanes[:lanes.index("        grid.sync()")]
    assert "for s in range(t1 - t0):" in loop
    assert "grid.sync()" not in loop and "syncthreads" not in loop


def test_lanes_on_numbas_threads_equal_the_reference(lanes_on_threads):
    """The threaded variant (Numba's parallel loop over the lanes: RNNCC_NATIVE=0, or a
    layer's variant forced) runs the same lanes."""
    from rnncc.backends.cpu.threads import THREADS
    cell = rnncc.compile((rnncc.runtime.cell._shipped_dir() / "qrnn.cell").read_text())
    backends.get("cpu").compiled(cell, np.float64).variant = THREADS
    prob = random_problem(cell, {"I": 3, "H": 40}, T=5, B=3, seed=11, ragged=True)
    compare(cell, prob, np.float64, schedule="lanes")


def test_the_scan_on_numbas_functions_equals_the_reference(monkeypatch, scans):
    """With rnncc's compiler off (RNNCC_NATIVE=0) the scan's chunks run Numba's one-thread
    functions (nogil) on rnncc's threads."""
    monkeypatch.setattr(runtime, "native_enabled", lambda: False)
    monkeypatch.setattr(runtime, "available_threads", lambda: 2)
    cell = rnncc.compile((rnncc.runtime.cell._shipped_dir() / "mingru.cell").read_text())
    prob = random_problem(cell, {"I": 3, "H": 20}, T=7, B=3, seed=19, ragged=True)
    compare(cell, prob, np.float64, schedule="scan")
    compiled = backends.get("cpu").compiled(cell, np.float64)
    assert not compiled._native and {"forward", "backward"} <= set(scans)

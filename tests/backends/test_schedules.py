"""The time loop's schedules on the cpu target: the lanes schedule (each batch row, or block of
its columns, runs its whole time loop) against the reference interpreter, forward and backward,
float32 and float64, ragged lengths, on one thread and on several, in pieces of time; the step
schedule of the same cells; and the cells it does not apply to."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnncc
from rnncc import backends
from rnncc.backends.cpu import runtime
from rnncc.runtime.gradcheck import random_problem

from ..strategies import lane_cell_specs
from ..test_properties import ALWAYS_THE_SAME
from .test_cpu import compare, compare_in_pieces

LANE_CELLS = ["indrnn", "mingru", "minlstm", "qrnn", "sru"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", LANE_CELLS)
def test_each_schedule_equals_the_reference(shipped_cells, name, dtype):
    cell = shipped_cells[name]
    assert cell.schedules == ("lanes", "step")
    for ragged in (False, True):
        prob = random_problem(cell, {"I": 3, "H": 20}, T=6, B=3, seed=4, ragged=ragged)
        for schedule in ("lanes", "step", None):
            compare(cell, prob, dtype, err_msg=f"{name} {schedule} ragged={ragged}",
                    schedule=schedule)


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
def test_generated_lane_cells_equal_the_reference_in_both_schedules(gen, seed):
    cell = rnncc.compile(gen.text)
    sizes = {d: gen.sizes[d] for d in cell.dims}
    prob = random_problem(cell, sizes, T=5, B=3, seed=seed, ragged=True)
    for schedule in ("lanes", "step"):
        compare(cell, prob, np.float64, err_msg=gen.text, schedule=schedule)
    # and the generated numpy oracle of the spec agrees with the reference's forward
    ys, final = cell.forward(prob.p, prob.xs["x"], state=prob.state, lengths=prob.lengths)
    ys_o, final_o = gen.run(prob.p, prob.xs, prob.state, prob.lengths)
    np.testing.assert_allclose(ys, ys_o, rtol=1e-10, atol=1e-12, err_msg=gen.text)


def test_ten_thousand_steps_of_a_linear_scan_stay_accurate(shipped_cells):
    """T = 10,000 in float32: lanes and step equal, and within float32's rounding of the
    float64 reference (a gate below one forgets: errors do not grow with T)."""
    cell = shipped_cells["mingru"]
    sizes, T, B = {"I": 4, "H": 24}, 10_000, 2
    p = cell.init_params(seed=3, dtype=np.float64, **sizes)
    x = np.random.default_rng(3).standard_normal((T, B, 4))
    ys64, final64 = cell.forward(p, x)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    out = {s: cell.forward(p32, x.astype(np.float32), target="cpu", schedule=s)
           for s in ("lanes", "step")}
    np.testing.assert_array_equal(out["lanes"][0], out["step"][0])
    scale = np.abs(ys64).max()
    assert np.abs(out["lanes"][0] - ys64).max() <= 1e-5 * scale
    assert np.abs(out["lanes"][1]["h"] - final64["h"]).max() <= 1e-5 * scale


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


def test_matrix_cells_print_no_lanes(shipped_cells):
    """LSTM, GRU and every matrix cell: the step schedule only, their code as before."""
    for name in ("lstm", "gru", "rnn", "lnlstm"):
        source = backends.get("cpu").source(shipped_cells[name], np.float32)
        assert "lanes" not in source, name


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
def test_cuda_lanes_and_steps_equal_the_reference(shipped_cells, name):
    """A grid thread per lane (a column), its time loop inside, no grid barrier per step; and
    the step schedule of the same cell. More lanes than the simulator's grid has threads."""
    cell = shipped_cells[name]
    prob = random_problem(cell, {"I": 3, "H": 5}, T=4, B=2, seed=9, ragged=True)
    for schedule in ("lanes", "step"):
        compare(cell, prob, np.float64, err_msg=f"{name} {schedule}", target="cuda",
                schedule=schedule)


def test_cuda_lanes_of_whole_rows_equal_the_reference():
    """A block per row: its threads over the row's columns, a block reduction for the mean."""
    cell = rnncc.compile("cell rows\ninput x[I]\nstate h[H]\noutput h\n"
                         "h' = tanh(W @ x + h - mean(h)) * sigmoid(V @ x)\n")
    prob = random_problem(cell, {"I": 3, "H": 6}, T=3, B=3, seed=10, ragged=True)
    compare(cell, prob, np.float64, target="cuda", schedule="lanes")


def test_cuda_lanes_source_has_no_barrier_in_its_time_loop(shipped_cells):
    source = backends.get("cuda").source(shipped_cells["qrnn"], np.float32)
    forward = source[source.index("def forward("):source.index("def backward(")]
    lanes = forward[forward.index("    else:\n"):]
    loop = lanes[:lanes.index("        grid.sync()")]
    assert "for s in range(lengths[b]):" in loop
    assert "grid.sync()" not in loop and "syncthreads" not in loop


def test_lanes_on_numbas_threads_equal_the_reference(lanes_on_threads):
    """The threaded variant (Numba's parallel loop over the lanes: RNNCC_NATIVE=0, or a
    layer's variant forced) runs the same lanes."""
    from rnncc.backends.cpu.threads import THREADS
    cell = rnncc.compile((rnncc.runtime.cell._shipped_dir() / "qrnn.cell").read_text())
    backends.get("cpu").compiled(cell, np.float64).variant = THREADS
    prob = random_problem(cell, {"I": 3, "H": 40}, T=5, B=3, seed=11, ragged=True)
    compare(cell, prob, np.float64, schedule="lanes")

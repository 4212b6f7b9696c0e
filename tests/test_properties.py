"""Property-based tests: random valid specs compile and compute what an independent numpy oracle
computes; corrupted specs raise SpecError and nothing else."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rnncc
from rnncc import SpecError

from .close import assert_close
from .strategies import cell_specs

# RNNCC_EXAMPLES=10 runs ten times as many examples, new ones each run: a deeper search before a
# release. The default run draws the same examples every time, so that CI passes or fails on the
# code alone (a failure found by a search becomes a fixed regression test, not a random red CI).
SCALE = int(os.environ.get("RNNCC_EXAMPLES", "1"))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=SCALE == 1)
ALWAYS_THE_SAME = {**SETTINGS, "derandomize": True}


def random_arguments(gen, cell, seed):
    rng = np.random.default_rng(seed)
    sizes = {d: gen.sizes[d] for d in cell.dims}
    p = cell.init_params(seed=seed, dtype=np.float64, **sizes)
    p = {k: 2 * v for k, v in p.items()}
    T, B = 3, 2
    xs = {n: rng.standard_normal((T, B, gen.sizes[d])) for n, d in gen.inputs.items()}
    state = {n: rng.uniform(-1, 1, (B, gen.sizes[d])) for n, d in gen.states.items()}
    lengths = rng.integers(0, T + 1, size=B)
    return p, xs, state, lengths


@settings(max_examples=150 * SCALE, **SETTINGS)
@given(gen=cell_specs(), seed=st.integers(0, 2**16))
def test_random_specs_compile_and_match_the_oracle(gen, seed):
    cell = rnncc.compile(gen.text)
    assert cell.inputs == list(gen.inputs) and cell.states == list(gen.states)
    assert set(cell.params) == set(gen.param_shapes)
    for name, shape in gen.param_shapes.items():
        assert cell.symbolic_shapes[name] == shape, (name, gen.text)
    p, xs, state, lengths = random_arguments(gen, cell, seed)
    x = xs if len(xs) > 1 else xs["x"]
    for lens in (None, lengths):
        ys, final = cell.forward(p, x, state=state, lengths=lens)
        ys_ref, final_ref = gen.run(p, xs, state, lens)
        scale = max(1.0, np.abs(ys_ref).max(initial=0))
        np.testing.assert_allclose(ys, ys_ref, rtol=1e-9, atol=1e-12 * scale, err_msg=gen.text)
        for s in gen.states:
            np.testing.assert_allclose(final[s], final_ref[s], rtol=1e-9, atol=1e-12,
                                       err_msg=gen.text)


# --- corruptions --------------------------------------------------------------------------------

def _equation_lines(lines):
    return [i for i, line in enumerate(lines) if " = " in line]


def corrupt(text, kind, pick):
    """A corruption that always makes the spec invalid."""
    lines = text.rstrip("\n").split("\n")
    eqs = _equation_lines(lines)
    updates = [i for i in eqs if lines[i].split(" = ")[0].endswith("'")]
    if kind == "drop-update":
        del lines[updates[pick % len(updates)]]
    elif kind == "duplicate-equation":
        i = eqs[pick % len(eqs)]
        lines.insert(i + 1, lines[i])
    elif kind == "unknown-function":
        i = eqs[pick % len(eqs)]
        lines[i] += " + zork(x)"
    elif kind == "dangling-operator":
        i = eqs[pick % len(eqs)]
        lines[i] += " *"
    elif kind == "stray-character":
        i = pick % len(lines)
        col = (pick // 7) % (len(lines[i]) + 1)
        lines[i] = lines[i][:col] + "\u00e9" + lines[i][col:]
    elif kind == "drop-header":
        del lines[0]
    elif kind == "prime-an-input":
        i = eqs[pick % len(eqs)]
        lines[i] += " + x'"
    elif kind == "matmul-on-a-value":
        i = eqs[pick % len(eqs)]
        lines[i] += " + x @ h"
    elif kind == "unknown-output":
        lines.insert(1, "output nowhere")
    elif kind == "assign-input":
        lines.append("x = h")
    elif kind == "scalar-state":
        i = updates[pick % len(updates)]
        target = lines[i].split(" = ")[0]
        lines[i] = f"{target} = mean({target[:-1]})"
    elif kind == "nesting":
        i = updates[pick % len(updates)]
        target = lines[i].split(" = ")[0]
        lines[i] = f"{target} = " + "(" * 500 + target[:-1] + ")" * 500
    return "\n".join(lines) + "\n"


KINDS = ["drop-update", "duplicate-equation", "unknown-function", "dangling-operator",
         "stray-character", "drop-header", "prime-an-input", "matmul-on-a-value",
         "unknown-output", "assign-input", "scalar-state", "nesting"]


@settings(max_examples=150 * SCALE, **SETTINGS)
@given(gen=cell_specs(max_depth=2), kind=st.sampled_from(KINDS), pick=st.integers(0, 10**6))
def test_corrupted_specs_raise_spec_error(gen, kind, pick):
    bad = corrupt(gen.text, kind, pick)
    try:
        rnncc.compile(bad)
    except SpecError as err:
        assert 1 <= err.line <= bad.count("\n") + 1 and err.col >= 1
        assert str(err).startswith(f"<spec>:{err.line}:{err.col}: ")
    else:
        raise AssertionError(f"{kind} corruption compiled:\n{bad}")


@settings(max_examples=300 * SCALE, **SETTINGS)
@given(gen=cell_specs(max_depth=2),
       edits=st.lists(st.tuples(st.sampled_from(["insert", "delete", "replace"]),
                                st.integers(0, 10**6),
                                st.characters(codec="utf-8")), min_size=1, max_size=4))
def test_random_edits_compile_or_raise_spec_error(gen, edits):
    """Arbitrary character edits: the result compiles and runs, or is a SpecError; never any
    other exception."""
    text = gen.text
    for op, where, ch in edits:
        i = where % (len(text) + 1)
        if op == "insert":
            text = text[:i] + ch + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + 1:]
        else:
            text = text[:i] + ch + text[i + 1:]
    try:
        cell = rnncc.compile(text)
    except SpecError:
        return
    assume(all(d.isidentifier() for d in cell.dims))
    sizes = {d: 2 for d in cell.dims}
    p = cell.init_params(seed=0, dtype=np.float64, **sizes)
    xs = {n: np.ones((2, 2, *cell.shape(n, **sizes)[:1])) for n in cell.inputs}
    state = {n: np.zeros((2, *cell.shape(n, **sizes))) for n in cell.states}
    with np.errstate(all="ignore"):
        cell.forward(p, xs, state=state)


# --- gradients ----------------------------------------------------------------------------------

# Derandomized: finite differences are wrong within 2h of a relu/abs/max/min kink, which random
# data hits with a small probability; a fixed sequence of examples keeps CI deterministic.
@settings(max_examples=100 * SCALE, **ALWAYS_THE_SAME)
@given(gen=cell_specs(), seed=st.integers(0, 2**16))
def test_random_specs_gradients_match_finite_differences(gen, seed):
    """The dot-product test on random specs: <J v, u> by a directional finite difference equals
    <v, J^T u> by BPTT, for u = (dys, dfinal) and v a random direction in every parameter,
    input and initial state; with ragged lengths."""
    from .autodiff.test_gradients import dot_product_test
    from rnncc.runtime.gradcheck import random_problem

    cell = rnncc.compile(gen.text)
    sizes = {d: gen.sizes[d] for d in cell.dims}
    prob = random_problem(cell, sizes, T=3, B=3, seed=seed, ragged=True)
    jv_u, v_jtu = dot_product_test(cell, prob, seed=seed)
    assert abs(jv_u - v_jtu) <= 1e-7 * max(abs(jv_u), abs(v_jtu), 1.0), gen.text


# --- the optimizer and the plan -----------------------------------------------------------------

def assert_rich(cell, gen):
    """What cell_specs(rich=True) promises, checked on the compiled cell: several inputs and
    states, distinct sizes, matrix products, a reduction, a max or min."""
    ops = {cell.graph.node(n).op for n in cell.graph.nx.nodes}
    assert len(cell.inputs) >= 2 and len(cell.states) >= 2, gen.text
    assert "matmul" in ops and ops & {"max", "min"}, gen.text
    assert ops & {"mean", "sum"}, gen.text
    sizes = [gen.sizes[d] for d in cell.dims]
    assert len(set(sizes)) == len(sizes), gen.text


@pytest.mark.filterwarnings("ignore::rnncc.SpecWarning")
@settings(max_examples=100 * SCALE, **SETTINGS)
@given(gen=cell_specs(rich=True), seed=st.integers(0, 2**16))
def test_random_specs_passes_and_plan_preserve_meaning(gen, seed):
    """After every pass the graphs compute what they computed before, and the Plan interpreter
    agrees with the reference interpreter, forward and backward, with ragged lengths."""
    from .passes.test_passes import check_pipeline
    from rnncc.runtime.gradcheck import random_problem

    cell = rnncc.compile(gen.text)
    assert_rich(cell, gen)
    sizes = {d: gen.sizes[d] for d in cell.dims}
    prob = random_problem(cell, sizes, T=3, B=3, seed=seed, ragged=True)
    check_pipeline(cell, prob)
    x = prob.x_arg(cell)
    kwargs = dict(state=prob.state, lengths=prob.lengths)
    ys, final = cell.forward(prob.p, x, target="plan", **kwargs)
    ys_r, final_r = cell.forward(prob.p, x, **kwargs)
    assert_close(ys, ys_r, 1e-10, f"ys\n{gen.text}")
    for s in cell.states:
        assert_close(final[s], final_r[s], 1e-10, f"final {s}\n{gen.text}")
    g = cell.backward(prob.p, x, prob.dys, dfinal=prob.dfinal, target="plan", **kwargs)
    g_r = cell.backward(prob.p, x, prob.dys, dfinal=prob.dfinal, **kwargs)
    for k in cell.params:
        assert_close(g["params"][k], g_r["params"][k], 1e-9, f"d{k}\n{gen.text}")
    gx = g["x"] if isinstance(g["x"], dict) else {"x": g["x"]}
    gx_r = g_r["x"] if isinstance(g_r["x"], dict) else {"x": g_r["x"]}
    for k in gx:
        assert_close(gx[k], gx_r[k], 1e-9, f"d{k}\n{gen.text}")
    for s in cell.states:
        assert_close(g["state"][s], g_r["state"][s], 1e-9, f"d{s}\n{gen.text}")


# --- the cpu target -----------------------------------------------------------------------------

# Each spec compiles Numba functions (forward, backward, infer; float64, and float32 for the
# first few), seconds each: few examples, derandomized so that CI compiles the same specs every
# run (and a warm disk cache skips them); RNNCC_EXAMPLES scales them for a deeper search.
CPU_EXAMPLES = 10 * SCALE
_float32_checked = []


@pytest.mark.filterwarnings("ignore::rnncc.SpecWarning")
@settings(max_examples=CPU_EXAMPLES, **ALWAYS_THE_SAME)
@given(gen=cell_specs(rich=True), seed=st.integers(0, 2**16))
def test_random_specs_on_the_cpu_target_equal_the_reference(gen, seed):
    """Generated Numba code computes what the reference interpreter computes, forward and
    backward, float64 (and float32 for the first three specs), with and without ragged
    lengths, and in pieces of time (as the layer wavefront runs it)."""
    from .backends.test_cpu import compare, compare_in_pieces
    from rnncc.runtime.gradcheck import random_problem

    cell = rnncc.compile(gen.text)
    assert_rich(cell, gen)
    sizes = {d: gen.sizes[d] for d in cell.dims}
    in_float32 = len(_float32_checked) < 3
    _float32_checked.append(gen.text)
    for ragged in (False, True):
        prob = random_problem(cell, sizes, T=4, B=3, seed=seed, ragged=ragged)
        compare(cell, prob, np.float64, err_msg=gen.text)
        if in_float32:
            compare(cell, prob, np.float32, err_msg=gen.text)
        compare_in_pieces(cell, prob, [(0, 1), (1, 4)], [(2, 4), (0, 2)], err_msg=gen.text)

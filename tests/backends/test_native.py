"""rnncc's own compiler (rnncc/backends/cpu/native/): the products it hands to BLAS against
numpy, every shipped cell at the shapes where BLAS takes another path (B=1: gemv; T=0: no
rows) against the reference interpreter, its errors, its argument checks and its cache."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rnncc.backends.cpu.native import NativeError, Param, compile_functions
from rnncc.backends.cpu.native.function import NativeFunction
from rnncc.runtime.gradcheck import random_problem

from .test_cpu import compare

HEAD = textwrap.dedent("""
    import numpy as np
    dtype = np.float64
    ZERO, HALF, ONE = dtype(0.0), dtype(0.5), dtype(1.0)
""")

# each product as the cpu printer spells it
PRODUCTS = textwrap.dedent("""
    def products(T, B, lengths, d_I, d_H, x, W, S, h, v, c, o_xw, o_hw, o_col, o_wt, o_row,
                 o_outer, o_mv):
        np.dot(x.reshape(T * B, d_I), W.T, o_xw.reshape(T * B, d_H))
        np.dot(h, W, o_hw)
        np.add(o_hw, c, o_hw)
        np.dot(np.ascontiguousarray(o_xw[..., 1:1 + d_I]).reshape(T * B, d_I), S.T, o_col)
        np.dot(o_hw.T, h, o_wt)
        np.dot(v, W.T, o_row)
        o_outer[:, :] = np.outer(np.sum(h, axis=0), v)
        np.dot(W, v, o_mv)
""")
ARRAYS = (3, 2, 2, 2, 1, 1, 3, 2, 2, 2, 1, 2, 1)   # each array argument's dimensions
PARAMS = ([Param("int"), Param("int"), Param("array", 1, np.dtype(np.int64)), Param("int"),
           Param("int")] + [Param("array", n, np.dtype(np.float64)) for n in ARRAYS])


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("T, B, I, H", [(3, 4, 5, 7), (2, 1, 5, 6), (0, 3, 4, 5),
                                        (2, 1, 1, 2), (1, 5, 3, 4), (3, 13, 30, 45)])
def test_products_equal_numpys(tmp_path, T, B, I, H, read_only):
    """gemm with each operand transposed or not, a merged reshape, a column slice read in
    place, a single row or column (gemv), no rows at all, 1 x 1 products; np.add broadcasting
    a vector; np.outer of a column sum. With W and S read-only parameters, their products as
    the right operand run on rnncc's packed GEMM (gemm.py), packed once for the call and
    freed after it, transposed or not, times a matrix or a row; the others packed for their
    product alone."""
    rng = np.random.default_rng(T * 100 + B)
    x, W, S = (rng.standard_normal(s) for s in ((T, B, I), (H, I), (I, I)))
    h, v, c = (rng.standard_normal(s) for s in ((B, H), (I,), (I,)))
    want = {"xw": x.reshape(T * B, I) @ W.T}
    want["hw"] = h @ W + c
    want["col"] = want["xw"][:, 1:1 + I] @ S.T
    want["wt"], want["row"] = want["hw"].T @ h, v @ W.T
    want["outer"], want["mv"] = np.outer(h.sum(axis=0), v), W @ v
    outs = {k: np.full(w.shape, np.nan) for k, w in want.items()}
    outs["xw"] = outs["xw"].reshape(T, B, H)
    params = [p._replace(read_only=read_only) if k in (6, 7) else p
              for k, p in enumerate(PARAMS)]   # W and S
    fn = NativeFunction(HEAD + PRODUCTS, "products", params, np.float64, tmp_path, "products")
    _, optimized = compile_functions(HEAD + PRODUCTS, {"f": ("products", params)})
    # outside a time loop every product of matrices runs on rnncc's GEMM (A transposed too);
    # BLAS keeps the matrix-vector product
    assert "rnncc_team_gemm_f64" in optimized and "rnncc_team_gemm_t_f64" in optimized
    assert "rnncc_dgemm" not in optimized and "rnncc_dgemv" in optimized
    fn(T, B, np.full(B, T, np.int64), I, H, x, W, S, h, v, c, *outs.values())
    for k, w in want.items():
        np.testing.assert_allclose(outs[k].reshape(w.shape), w, rtol=1e-12, atol=1e-12,
                                   err_msg=k)


def test_specs_at_one_row_and_at_no_steps_equal_the_reference(shipped_cells):
    """B=1: every step's product is a row times a matrix (gemv); T=0: the products over all
    rows have none (BLAS is not called, results are zeros)."""
    for name in ("rnn", "lstm", "gru", "lnlstm"):
        cell = shipped_cells[name]
        compare(cell, random_problem(cell, T=4, B=1, seed=3), np.float64, err_msg=name)
        compare(cell, random_problem(cell, T=6, B=3, seed=2, ragged=True), np.float64,
                err_msg=name)


def test_code_outside_the_printed_language_is_an_error_naming_its_line(tmp_path):
    source = HEAD + textwrap.dedent("""
        def looping(T, B, lengths, v):
            s = 0
            while s < T:
                s = s + 1
    """)
    fn = NativeFunction(source, "looping", [Param("int"), Param("int"),
                                            Param("array", 1, np.dtype(np.int64)),
                                            Param("array", 1, np.dtype(np.float64))],
                        np.float64, tmp_path, "looping")
    with pytest.raises(NativeError, match=r"line 8: a While statement: while s < T:"):
        fn.compile()


def adding(tmp_path):
    source = HEAD + textwrap.dedent("""
        def adding(T, B, lengths, a, out):
            for t in range(T):
                for b in range(B):
                    out[t, b] = a[t, b] + ONE
    """)
    params = [Param("int"), Param("int"), Param("array", 1, np.dtype(np.int64)),
              Param("array", 2, np.dtype(np.float64)), Param("array", 2, np.dtype(np.float64))]
    return NativeFunction(source, "adding", params, np.float64, tmp_path, "adding")


def test_an_array_of_another_layout_is_refused_not_misread(tmp_path):
    """The compiled code assumes C-contiguous arrays of its dtype: anything else is an error
    (the runtime never passes one; a wrong one must not be read as if it were right)."""
    fn, lengths = adding(tmp_path), np.zeros(2, np.int64)
    a = np.arange(12.0).reshape(3, 4)
    with pytest.raises(TypeError, match="argument 1 is a 2-d float64 array"):
        fn(4, 3, lengths, a.T, np.zeros((4, 3)))          # transposed: not C-contiguous
    with pytest.raises(TypeError, match="argument 1 is a 2-d float32 array"):
        fn(3, 4, lengths, a.astype(np.float32), np.zeros((3, 4)))
    with pytest.raises(TypeError, match="argument 1 is a list"):
        fn(3, 4, lengths, a.tolist(), np.zeros((3, 4)))
    # what the compiled code reads from the array objects themselves (abi.py): a subclass's
    # and a view's data and shape, not those of the array they view
    class Tagged(np.ndarray):
        pass
    window = np.arange(40.0).reshape(10, 4)[3:6]
    for source in (a, a.view(Tagged), window):
        out = np.zeros((3, 4))
        fn(3, 4, lengths, source, out)
        np.testing.assert_array_equal(out, np.asarray(source) + 1)


def test_a_damaged_object_file_is_compiled_again(tmp_path):
    """A byte changed in the cached object code (same size: a truncation test would not see
    it) fails its checksum: the next process compiles again instead of running it."""
    first = adding(tmp_path)
    first.compile()
    assert not first.loaded_from_cache and first.path.exists()
    again = adding(tmp_path)
    again.compile()
    assert again.loaded_from_cache
    data = bytearray(first.path.read_bytes())
    data[-100] ^= 0xFF
    first.path.write_bytes(bytes(data))
    damaged = adding(tmp_path)
    damaged.compile()
    assert not damaged.loaded_from_cache
    out, a = np.zeros((2, 3)), np.ones((2, 3))
    damaged(2, 3, np.zeros(3, np.int64), a, out)
    np.testing.assert_array_equal(out, a + 1)


def test_the_same_source_for_other_argument_kinds_is_another_object(tmp_path):
    """An argument typed bool in one compile and int in another (a flag that became a count)
    must not load the other's cached code: the kinds are part of the cache key."""
    source = HEAD + textwrap.dedent("""
        def flagged(T, B, lengths, part, out):
            if part == 3:
                out[0, 0] = ONE
    """)
    arrays = [Param("array", 1, np.dtype(np.int64)), Param("array", 2, np.dtype(np.float64))]
    as_bool = [Param("int"), Param("int"), arrays[0], Param("bool"), arrays[1]]
    as_int = [Param("int"), Param("int"), arrays[0], Param("int"), arrays[1]]
    first = NativeFunction(source, "flagged", as_bool, np.float64, tmp_path, "flagged")
    first.compile()
    second = NativeFunction(source, "flagged", as_int, np.float64, tmp_path, "flagged")
    second.compile()
    assert first.path != second.path and not second.loaded_from_cache
    for part, want in ((1, 0.0), (3, 1.0)):
        out = np.zeros((1, 1))
        second(1, 1, np.zeros(1, np.int64), part, out)
        assert out[0, 0] == want


def test_functions_of_one_name_in_two_modules_each_run_their_own(tmp_path):
    """Every object is linked into one engine per process: two cells' `forward_serial` must
    not resolve to one code."""
    plus = adding(tmp_path)
    minus = NativeFunction(plus.source.replace("+ ONE", "- ONE"), "adding", plus.params,
                           np.float64, tmp_path, "subtracting")
    a, lengths = np.ones((2, 3)), np.zeros(3, np.int64)
    for fn, want in ((plus, a + 1), (minus, a - 1), (plus, a + 1)):
        out = np.zeros((2, 3))
        fn(2, 3, lengths, a, out)
        np.testing.assert_array_equal(out, want)


def run_script(script: str, tmp_path) -> str:
    env = dict(os.environ, RNNCC_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_one_threads_calls_import_neither_numba_nor_scipy_linalg(tmp_path):
    """A process whose calls all run on one thread (a small cell, forward and backward, cold
    and then warm from the cache) needs neither: importing them was most of a warm start."""
    script = textwrap.dedent("""
        import sys, numpy as np, rnncc
        cell = rnncc.load("gru")
        p = cell.init_params(seed=0, I=3, H=4)
        x = np.random.default_rng(0).standard_normal((5, 2, 3))
        got = cell.backward(p, x, np.ones((5, 2, 4)), target="cpu")
        want = cell.backward(p, x, np.ones((5, 2, 4)), target="reference")
        assert all(np.allclose(got["params"][k], want["params"][k]) for k in p)
        print(sorted(m for m in ("numba", "scipy.linalg") if m in sys.modules))
    """)
    for _ in range(2):
        assert run_script(script, tmp_path).strip() == "[]"


def test_products_through_scipys_cython_blas_equal_numpys(tmp_path):
    """Where SciPy bundles no OpenBLAS of its own (another build), BLAS is reached through
    scipy.linalg.cython_blas: the same products, in a process that takes that path."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from rnncc.backends.cpu.native import blas
        blas._bundled = lambda: None
        from tests.backends.test_native import test_products_equal_numpys
        from pathlib import Path
        for case in [(3, 4, 5, 7), (2, 1, 5, 6), (0, 3, 4, 5)]:
            test_products_equal_numpys(Path({str(tmp_path)!r}), *case, False)
        print("scipy.linalg" in sys.modules)
    """)
    assert run_script(script, tmp_path).strip() == "True"


@pytest.mark.parametrize("cpu", ["skylake-avx512", "sapphirerapids", "znver4"])
def test_kernels_on_avx512_cpus_use_512_bit_registers(shipped_cells, cpu):
    """LLVM tunes Intel's AVX-512 CPUs to vectorize loops 256 bits wide; rnncc's compiler
    turns that off (machine.tuned_features), so a gate kernel runs in zmm registers there as
    on AMD's: the lstm's inference function compiled for each CPU (the code that CPU would
    run, emitted here whatever the host), its kernel loop's registers counted."""
    import re

    import llvmlite.binding as llvm

    from rnncc.backends import get
    from rnncc.backends.cpu.native import lower_functions, machine
    machine.target_machine()   # (LLVM's x86 target initialized)
    compiled = get("cpu").compiled(shipped_cells["lstm"], np.float32)
    fn = compiled._one_thread_function("infer")
    text = lower_functions(compiled.source,
                           {"f": (fn.__name__, compiled.native_params("infer"))})
    features = "+avx,+avx2,+fma,+f16c,+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd"
    target = llvm.Target.from_triple("x86_64-unknown-linux-gnu")

    def registers(tuned: bool) -> dict:
        tm = target.create_target_machine(
            cpu=cpu, features=machine.tuned_features(features) if tuned else features, opt=3)
        assembly = tm.emit_assembly(machine.optimize(text, machine=tm))
        return {r: len(re.findall(rf"%{r}\d+", assembly)) for r in ("zmm", "ymm")}
    tuned = registers(True)
    assert tuned["zmm"] > 100 and tuned["ymm"] == 0, tuned
    if cpu != "znver4":   # what LLVM does untuned on Intel's: half the width
        untuned = registers(False)
        assert untuned["zmm"] == 0 and untuned["ymm"] > 100, untuned


def test_with_rnncc_gemm_off_every_product_runs_on_blas(tmp_path):
    """RNNCC_PACKED_GEMM=0 (for comparisons): the shipped matrix cells, forward and backward,
    with every product on BLAS's gemm, against the reference; no call of the packed GEMM in
    their compiled functions, and no team."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        import numpy as np
        import rnncc
        from rnncc.backends.cpu import team
        from rnncc.backends.cpu.native import compile_functions
        from rnncc.runtime.gradcheck import random_problem
        from tests.backends.test_cpu import compare
        teams = []
        real = team.run
        team.run = lambda call, n, dtype="float32": (teams.append(n), real(call, n, dtype))
        for name in ("lstm", "gru", "lnlstm"):
            cell = rnncc.load(name)
            for dtype in (np.float32, np.float64):
                prob = random_problem(cell, T=5, B=16, seed=1, ragged=True,
                                      sizes={{"I": 40, "H": 64}})
                compare(cell, prob, dtype, err_msg=name)
            compiled = rnncc.backends.get("cpu").compiled(cell, np.float32)
            for direction in ("forward", "backward"):
                fn = compiled._one_thread_function(direction)
                _, ir = compile_functions(compiled.source, {{
                    "f": (fn.__name__, compiled.native_params(direction))}})
                assert "team_gemm" not in ir and "rnncc_sgemm" in ir, (name, direction)
        print(sorted(set(teams)))
    """)
    env = dict(os.environ, RNNCC_CACHE_DIR=str(tmp_path), RNNCC_PACKED_GEMM="0")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1]"

"""rnncc's packed GEMM (native/gemm.py) against numpy in float64: every remainder of rows and
panels, both float types, strided weights, and products shared over a team (team.py)."""
from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rnncc.backends.cpu import team
from rnncc.backends.cpu.native import gemm, machine
from rnncc.backends.cpu.native.function import library

L, P = ctypes.c_int64, ctypes.c_void_p


def routines(dtype, transposed=False):
    found = library(gemm.part(dtype, transposed))
    product = ctypes.CFUNCTYPE(None, L, L, L, P, L, P, P, L)(
        found[gemm.symbol("team_gemm_t" if transposed else "team_gemm", dtype)])
    pack = ctypes.CFUNCTYPE(None, L, L, P, L, L, P)(
        library(gemm.part(dtype, False))[gemm.symbol("pack", dtype)])
    return product, pack


def packed(w: np.ndarray, pack) -> np.ndarray:
    """w ([K, N], any strides) packed by the library's own pack."""
    blk = machine.blocking(w.dtype)
    k, n = w.shape
    out = np.full(gemm.packed_size(blk, k, n) + 1, np.nan, w.dtype)
    size = w.dtype.itemsize
    pack(k, n, w.ctypes.data, w.strides[0] // size, w.strides[1] // size, out.ctypes.data)
    assert np.isnan(out[-1])   # nothing written past the packed size
    return out[:-1]


def product(a, w, threads=1, transposed=False):
    """a @ w by the packed GEMM, on a team of `threads`; `transposed`: a given as the
    transpose of a C-contiguous array (a weight gradient's dgates^T)."""
    run, pack = routines(a.dtype, transposed)
    bp = packed(w, pack)
    m, k = a.shape
    n = w.shape[1]
    c = np.full((m, n), np.nan, a.dtype)
    stored = np.ascontiguousarray(a.T) if transposed else np.ascontiguousarray(a)
    lda = m if transposed else k
    team.run(lambda: run(m, n, k, stored.ctypes.data, lda, bp.ctypes.data, c.ctypes.data, n),
             threads)
    return c


def tolerance(dtype, k):
    return (1e-5 if dtype == np.float32 else 1e-13) * max(1, k) ** 0.5


@pytest.mark.parametrize("shape", [(7, 45), (37, 100), (64, 96), (1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_lays_out_panels(dtype, shape):
    """Each path of pack against numpy's layout: W row-major (a vector per half panel), W
    transposed (blocks transposed in registers, K's remainder and the last panel element by
    element) and W with neither axis contiguous (element by element)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape).astype(dtype)
    _, pack = routines(dtype)
    blk = machine.blocking(dtype)
    assert np.array_equal(packed(w, pack), gemm.pack(w, blk))
    assert np.array_equal(packed(np.asfortranarray(w), pack), gemm.pack(w, blk))
    strided = rng.standard_normal((2 * shape[0], 3 * shape[1])).astype(dtype)[::2, ::3]
    assert np.array_equal(packed(strided, pack), gemm.pack(strided, blk))
    assert np.array_equal(packed(strided.T.copy().T, pack), gemm.pack(strided, blk))
    # the layout itself, written out: panel p holds columns p*NR.., k-major, zeros past N
    k, n = shape
    panels = gemm.pack(w, blk).reshape(-1, k, blk.nr)
    assert np.array_equal(panels[0, k - 1, :min(n, 5)], w[k - 1, :5])
    assert not panels[-1, :, n - (len(panels) - 1) * blk.nr:].any()


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_remainder_of_rows_and_panels(dtype, transposed):
    rng = np.random.default_rng(1)
    blk = machine.blocking(dtype)
    ms = sorted({0, 1, 2, 3, blk.mr - 1, blk.mr, blk.mr + 1, 2 * blk.mr + 5,
                 gemm.MC_BLOCKS * blk.mr + 3})
    ns = sorted({1, blk.vector - 1, blk.vector, blk.nr - 1, blk.nr, blk.nr + 1,
                 5 * blk.nr + 3, 13 * blk.nr})
    for m in ms:
        for n in ns:
            for k in (0, 1, 9):
                a = rng.standard_normal((m, k)).astype(dtype)
                w = rng.standard_normal((k, n)).astype(dtype)
                got = product(a, w, transposed=transposed)
                want = a.astype(np.float64) @ w.astype(np.float64)
                assert got.shape == want.shape
                assert np.allclose(got, want, rtol=0, atol=tolerance(dtype, k) * 4), (m, k, n)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [(64, 256, 1024),   # shared by panels
                                     (600, 64, 40),     # few panels: shared by rows
                                     (3, 100, 200),     # below what a team shares
                                     (40, 1300, 70),      # K in three blocks of KC
                                     (1, 1300, 100),    # one row (B = 1), K in blocks
                                     (230, 1100, 80)])  # chunks of rows (A copied), K blocks
def test_a_team_computes_the_same_product(dtype, m, k, n, transposed):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((k, n)).astype(dtype)
    want = a.astype(np.float64) @ w.astype(np.float64)
    for threads in (1, 2, 3):
        got = product(a, w, threads, transposed)
        assert np.allclose(got, want, rtol=0, atol=tolerance(dtype, k) * 4), threads


@pytest.mark.parametrize("m, k, n, shared", [
    (1, 128, 512, True),     # B = 1, a 256 KB weight read from the L2: each member half of it
    (1, 64, 256, False),     # 64 KB (the small lstm's): in the L1 and L2 anyway, alone
    (3, 100, 200, False),    # neither many multiply-adds nor a large weight
    (64, 256, 1024, True)])  # many multiply-adds
def test_a_team_shares_large_products_and_large_weights(m, k, n, shared):
    """Which products the team is given (its generation counts the jobs), and that a
    one-row product shared by panels is numpy's."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    generation = ctypes.CFUNCTYPE(L)(library("team")["rnncc_team_generation"])
    before = generation()
    got = product(a, w, threads=2)
    assert generation() - before == (1 if shared else 0)
    want = a.astype(np.float64) @ w.astype(np.float64)
    assert np.allclose(got, want, rtol=0, atol=tolerance(np.float32, k) * 4)


def test_the_product_threshold_is_the_machines_and_the_team_uses_it(monkeypatch):
    """team.product_threshold: measured once per process and dtype, within
    gemm.TEAM_MIN_WORK_RANGE; a call's team shares out a product from the threshold it was
    given (a product of 2^18 multiply-adds: shared with 2^18, not with 2^20)."""
    low, high = gemm.TEAM_MIN_WORK_RANGE
    for dtype in (np.float32, np.float64):
        first = team.product_threshold(dtype)
        assert low <= first <= high and team.product_threshold(np.dtype(dtype).name) == first
    rng = np.random.default_rng(7)
    a, w = (rng.standard_normal(s).astype(np.float32) for s in ((16, 64), (64, 256)))
    want = a.astype(np.float64) @ w.astype(np.float64)
    generation = ctypes.CFUNCTYPE(L)(library("team")["rnncc_team_generation"])
    for threshold, jobs in ((1 << 18, 1), (1 << 20, 0)):
        monkeypatch.setattr(team, "product_threshold", lambda dtype, t=threshold: t)
        before = generation()
        got = product(a, w, threads=2)
        assert generation() - before == jobs, threshold
        assert np.allclose(got, want, rtol=0, atol=tolerance(np.float32, 64) * 4)


def test_members_stay_between_calls_and_sleep_there():
    """The members are started once (not per call: 50 us a thread) and sleep once a call
    has ended, so that they take no core from what runs between calls; a call on fewer
    threads than there are members leaves the others out."""
    rng = np.random.default_rng(5)
    a, w = (rng.standard_normal(s).astype(np.float32) for s in ((64, 256), (256, 512)))
    want = a.astype(np.float64) @ w.astype(np.float64)
    product(a, w, threads=3)
    members = list(team._threads)
    assert len(members) >= 2 and all(m.is_alive() for m in members)
    for threads in (2, 3, 2):
        assert np.allclose(product(a, w, threads), want, rtol=0, atol=1e-3)
    assert team._threads == members
    time.sleep(0.05)
    for member in members:   # (Linux: the thread's state in /proc)
        stat = f"/proc/self/task/{member.native_id}/stat"
        if os.path.exists(stat):
            with open(stat) as f:
                assert f.read().rsplit(")", 1)[1].split()[0] == "S", member.name


def test_another_threads_product_runs_alone_beside_a_team():
    """While one thread's call owns the team, a product on another thread is its own: the
    team computes neither a share of it nor into it."""
    rng = np.random.default_rng(3)
    a, w = (rng.standard_normal(s).astype(np.float32) for s in ((96, 128), (128, 512)))
    want = a.astype(np.float64) @ w.astype(np.float64)
    results, started = {}, threading.Event()

    def owner():
        run, pack = routines(np.float32)
        bp = packed(w, pack)
        c = np.zeros((96, 512), np.float32)

        def many():
            started.set()
            for _ in range(200):
                run(96, 512, 128, a.ctypes.data, 128, bp.ctypes.data, c.ctypes.data, 512)
        team.run(many, 2)
        results["owner"] = c

    thread = threading.Thread(target=owner)
    thread.start()
    started.wait()
    results["other"] = [product(a, w) for _ in range(20)]
    thread.join()
    for got in [results["owner"], *results["other"]]:
        assert np.allclose(got, want, rtol=0, atol=1e-3)


def test_blocking_follows_the_vector_registers():
    assert gemm.blocking(np.float32, "+avx,+avx2,+avx512f,+fma") == gemm.Blocking(16, 12, 24)
    assert gemm.blocking(np.float64, "+avx512f") == gemm.Blocking(8, 12, 24)
    assert gemm.blocking(np.float32, "+avx,+avx2,-avx512f") == gemm.Blocking(8, 6, 12)
    assert gemm.blocking(np.float32, "+neon") == gemm.Blocking(4, 6, 12)
    blk = gemm.blocking(np.float32, "+avx512f")
    assert (blk.nr, blk.panels_at(12), blk.panels_at(1), blk.panels_at(5)) == (32, 1, 12, 2)


AVX2_PARTS: dict = {}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_library_built_for_an_avx2_cpu_computes_the_same_products(dtype):
    """A CPU without AVX-512 gets 32-byte vectors and MR = 6 (16 registers): the library as
    compiled for one (Haswell; this machine runs its instructions too), under names of its
    own, against numpy, every remainder of its rows and panels."""
    import llvmlite.binding as llvm
    machine.target_machine()
    features = "+avx,+avx2,+fma,+f16c,+sse4.2"
    blk = gemm.blocking(dtype, features)
    assert blk == gemm.Blocking(32 // np.dtype(dtype).itemsize, 6, 12)
    triple, layout = machine.triple_and_layout()
    tm = llvm.Target.from_triple(triple).create_target_machine(
        cpu="haswell", features=features, opt=3, reloc="static", codemodel="jitdefault",
        jit=True)

    def load(part):   # the part under names of its own ("avx2_rnncc_..."), once a process
        if part not in AVX2_PARTS:
            text = gemm.part_ir(part, triple, layout, features).replace("rnncc_", "avx2_rnncc_")
            names = [f"avx2_{name}" for name in gemm.exported(part)]
            AVX2_PARTS[part] = text, machine.load_library(
                tm.emit_object(machine.optimize(text, unroll=False, machine=tm)), names)
        return AVX2_PARTS[part]
    load("team")
    text, found = load(gemm.part(dtype, False))
    names = [f"avx2_{gemm.symbol(r, dtype)}" for r in ("packed_gemm", "pack")]
    assert gemm.KC < 600   # (K = 600: two blocks)
    run = ctypes.CFUNCTYPE(None, L, L, L, P, L, P, P, L, L, L)(found[names[0]])
    pack = ctypes.CFUNCTYPE(None, L, L, P, L, L, P)(found[names[1]])
    rng = np.random.default_rng(5)
    for m in (1, 2, 5, 6, 7, 13, gemm.MC_BLOCKS * 6 + 1):
        for n in (1, 7, 8, 16, 17, 50):
            k = 11 if n != 50 else 600
            a = rng.standard_normal((m, k)).astype(dtype)
            w = rng.standard_normal((k, n)).astype(dtype)
            bp = np.zeros(gemm.packed_size(blk, k, n), dtype)
            pack(k, n, w.ctypes.data, n, 1, bp.ctypes.data)
            assert np.array_equal(bp, gemm.pack(w, blk))
            c = np.full((m, n), np.nan, dtype)
            run(m, n, k, a.ctypes.data, k, bp.ctypes.data, c.ctypes.data, n, 0, -(-n // blk.nr))
            want = a.astype(np.float64) @ w.astype(np.float64)
            assert np.allclose(c, want, rtol=0, atol=tolerance(dtype, k) * 4), (m, n)
    assembly = tm.emit_assembly(machine.optimize(text, unroll=False, machine=tm))
    assert "zmm" not in assembly and "ymm" in assembly


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_forked_child_starts_a_team_of_its_own():
    """A child forked after the parent ran a team (a DataLoader's workers, multiprocessing's
    fork) has none of its threads: its own team call starts new ones instead of handing jobs to
    threads that do not exist (it would wait forever)."""
    import multiprocessing
    rng = np.random.default_rng(6)
    a, w = (rng.standard_normal(s).astype(np.float32) for s in ((96, 128), (128, 512)))
    want = a.astype(np.float64) @ w.astype(np.float64)
    assert np.allclose(product(a, w, 2), want, atol=1e-3)   # the parent's team
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        got = pool.apply_async(product, (a, w, 2)).get(timeout=60)
    assert np.allclose(got, want, atol=1e-3)


def test_a_process_with_a_team_exits_at_once():
    """The members, which stay for the process, are stopped and joined at exit (team._retire):
    the interpreter exits promptly and cleanly, with no member cut off inside native code."""
    import subprocess
    import sys
    script = ("import numpy as np, sys\n"
              f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from test_gemm import product\n"
              "from rnncc.backends.cpu import team\n"
              "a = np.ones((96, 128), np.float32); w = np.ones((128, 512), np.float32)\n"
              "assert (product(a, w, 2) == 128).all()\n"
              "assert all(m.is_alive() for m in team._threads)\n"
              "print('done')\n")
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "done"

"""Products with a weight packed once per call: rnncc's own GEMM, generated as LLVM IR.

A step's product `h @ U^T` multiplies a small matrix (B rows) by the same weight at every step.
BLAS's gemm re-packs the weight into its panel layout at each call, and OpenBLAS's kernels reach
about 115 GF/s of one core's 268 on the AVX-512 machines measured (bench/RESULTS.md). Here the
weight is packed once per call of a cell's function (`pack`), into panels of NR columns stored
k-major (panel p holds columns p*NR .. p*NR+NR-1: NR consecutive numbers per k, zero past N), and
each step's product runs a register-blocked micro-kernel over it (`packed_gemm`): MR rows of A
times one panel, MR x NR accumulators in vector registers, one FMA per register per k, with A's
elements broadcast from memory. Where A has fewer rows than MR (B = 1: a matrix-vector product)
the kernel takes several panels at once instead, so that there are still enough independent
accumulators to hide the FMA's latency. The same kernels serve the products outside the time
loop by a matrix that is not a parameter (`packed_gemm_t`: A a transposed view, as in a
weight's gradient dgates^T @ h over all T*B rows; that operand packed for the product), with
K in blocks of KC and rows in chunks so that both operands stay in cache.

A product can be shared over a team of threads (the second half of this module, team.py): the
thread that runs a cell's function owns the team for the call and hands each large product, and
each parallel loop over a step's rows (lower.py outlines them), to every member.

The shape of the kernel follows the machine (`Blocking`): 64-byte vectors and MR = 12 where the
CPU has AVX-512's 32 vector registers (24 accumulators, two B vectors, a broadcast), 32-byte
vectors and MR = 6 with AVX's 16, 16-byte ones elsewhere. LLVM picks the instructions; the loop
over k is not unrolled (unrolling made LLVM spill accumulators: 145 GF/s against 241 unrolled
off, lstm's step product [64, 256] x [256, 1024] on one core of the AMD EPYC).

The library is one LLVM module per process (both float types), compiled at first use and kept
as object code in rnncc's cache directory (function.library()); compiled cells call its
functions by name (`symbol`), bound in the process's engine like BLAS's routines (machine.py).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir

I64 = ir.IntType(64)
I32 = ir.IntType(32)
FLOATS = {np.dtype(np.float32): ir.FloatType(), np.dtype(np.float64): ir.DoubleType()}
SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


# Row blocks of A per chunk (the driver's loop around the panels): 8 x 12 rows x K = 256 floats
# is 96 KB.
MC_BLOCKS = 8
# Depth of K per pass: a panel's block of KC rows is 64 KB (float32, 32 columns), A's rows
# 12 x KC; a product over all T*B rows (a weight's gradient, K = 6400) keeps both in cache.
KC = 512
# Partial sums over k of the one-row micro-kernel (_row_micro): 2 x ROW_SPLIT accumulators,
# as many as two FMA units with a latency of 4 keep busy.
ROW_SPLIT = 4


class Blocking(NamedTuple):
    """The micro-kernel's shape for one float type on this machine."""
    vector: int     # elements per vector register
    mr: int         # rows of A per micro-kernel call
    registers: int  # accumulator registers available (mr x 2 vectors at full height)

    @property
    def nr(self) -> int:
        """Columns per panel: two vectors."""
        return 2 * self.vector

    def panels_at(self, rows: int) -> int:
        """Panels one micro-kernel call takes for `rows` rows of A: as many as keep the
        accumulators within the registers (1 at full height, 12 for one row on AVX-512)."""
        return max(1, self.registers // (2 * rows))

    def tail_rows(self) -> list[int]:
        """The row counts the rows past the last full block are done in (at most one block of
        each: powers of two below MR). A micro-kernel for every count below MR would be three
        times the machine code, three times the library's compile time."""
        return [1 << e for e in reversed(range(self.mr.bit_length())) if 1 << e < self.mr]

    def tail_panels(self, rows: int) -> list[int]:
        """The panels per call a block of `rows` rows uses, largest first (the last group of
        a row's panels may be short): the most, its half and quarter, and one."""
        most = self.panels_at(rows)
        return sorted({most, max(1, most // 2), max(1, most // 4), 1}, reverse=True)


def blocking(dtype, features: str) -> Blocking:
    """The blocking for `dtype` on a CPU with LLVM's `features` (machine.host_features())."""
    flags = set(features.split(","))
    if "+avx512f" in flags:
        vector_bytes, mr = 64, 12
    elif "+avx" in flags:
        vector_bytes, mr = 32, 6
    else:
        vector_bytes, mr = 16, 6
    return Blocking(vector_bytes // np.dtype(dtype).itemsize, mr, 2 * mr)


def symbol(routine: str, dtype) -> str:
    """The name a compiled cell calls `routine` ("pack", "team_gemm", "team_gemm_t", ...) by."""
    return f"rnncc_{routine}_{SUFFIX[np.dtype(dtype)]}"


def packed_size(blk: Blocking, k: int, n: int) -> int:
    """Elements of the packed form of a [k, n] weight (whole panels)."""
    return -(-n // blk.nr) * blk.nr * k


def pack(w: np.ndarray, blk: Blocking) -> np.ndarray:
    """The packed form of a [k, n] matrix, as `pack` writes it (numpy; for tests and reading)."""
    k, n = w.shape
    nr = blk.nr
    panels = -(-n // nr)
    padded = np.zeros((k, panels * nr), w.dtype)
    padded[:, :n] = w
    return np.ascontiguousarray(padded.reshape(k, panels, nr).transpose(1, 0, 2)).ravel()


# -- the IR -----------------------------------------------------------------------------------


def _const(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


class _Loop:
    """`for i in range(start, stop, step)` in IR: the body is built between enter and exit."""

    def __init__(self, b: ir.IRBuilder, start, stop, step=1, name="i"):
        self.b, self.stop, self.step = b, stop, step
        self.head = b.append_basic_block(f"{name}.head")
        self.body = b.append_basic_block(f"{name}.body")
        self.end = b.append_basic_block(f"{name}.end")
        self.pre = b.block
        b.branch(self.head)
        b.position_at_end(self.head)
        self.i = b.phi(I64, name=name)
        self.i.add_incoming(start, self.pre)
        b.cbranch(b.icmp_signed("<", self.i, stop), self.body, self.end)
        b.position_at_end(self.body)

    def close(self) -> None:
        b = self.b
        nxt = b.add(self.i, _const(self.step) if isinstance(self.step, int) else self.step)
        self.i.add_incoming(nxt, b.block)
        b.branch(self.head)
        b.position_at_end(self.end)


def _micro_declared(module, dtype, blk: Blocking, name: str):
    """(a micro-kernel function `name`, internal, with the signature the driver calls: K, A,
    lda, Bp, panel stride, C, ldc, accumulate; its float type, vector type and the FMA
    intrinsic of that vector)."""
    real = FLOATS[np.dtype(dtype)]
    vec = ir.VectorType(real, blk.vector)
    intrinsic = f"llvm.fma.v{blk.vector}{'f32' if isinstance(real, ir.FloatType) else 'f64'}"
    fma = module.globals.get(intrinsic) or ir.Function(module, ir.FunctionType(vec, [vec] * 3),
                                                       intrinsic)
    ptr = real.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, ptr, I64, ptr, I64, ptr, I64,
                                                               I64]), name)
    fn.linkage = "internal"
    for p in (fn.args[1], fn.args[3], fn.args[5]):   # A, Bp, C
        p.add_attribute("noalias")
    return fn, real, vec, fma


def _micro(module, dtype, blk: Blocking, rows: int, panels: int,
           transposed: bool) -> ir.Function:
    """C[rows, panels*NR] (+)= A[rows, K] @ (panels consecutive panels of Bp): the accumulators
    in registers, from zero or (accumulate != 0) from C, stored to C (row stride ldc) at the
    end. A's element (i, k) is at a + i*lda + k, or (transposed) a + k*lda + i."""
    fn, real, vec, fma = _micro_declared(
        module, dtype, blk,
        f"micro_{SUFFIX[np.dtype(dtype)]}_{rows}x{panels}{'t' if transposed else ''}")
    k_count, a, lda, bp, panel_stride, c, ldc, accumulate = fn.args
    entry = fn.append_basic_block("entry")
    loop = fn.append_basic_block("k")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    zero = ir.Constant(vec, [0.0] * blk.vector)
    row_ptrs = [b.gep(a, [b.mul(_const(i), lda)]) for i in range(rows)] if not transposed else []
    onto = b.icmp_signed("!=", accumulate, _const(0))
    starts = []
    for i in range(rows):
        out = b.gep(c, [b.mul(_const(i), ldc)])
        starts.append([b.select(onto, b.load(b.bitcast(b.gep(out, [_const(j * blk.vector)]),
                                                       vec.as_pointer()), align=_align(real)),
                                zero) for j in range(2 * panels)])
    panel_ptrs = [b.gep(bp, [b.mul(_const(p), panel_stride)]) for p in range(panels)]
    b.cbranch(b.icmp_signed(">", k_count, _const(0)), loop, done)
    b.position_at_end(loop)
    k = b.phi(I64, name="k")
    k.add_incoming(_const(0), entry)
    accs = [[b.phi(vec) for _ in range(2 * panels)] for _ in range(rows)]
    offset = b.mul(k, _const(blk.nr))
    columns = []
    for p in range(panels):
        base = b.gep(panel_ptrs[p], [offset])
        for half in range(2):
            at = b.gep(base, [_const(half * blk.vector)]) if half else base
            columns.append(b.load(b.bitcast(at, vec.as_pointer()), align=_align(real)))
    splat = ir.Constant(ir.VectorType(I32, blk.vector), [0] * blk.vector)
    sums = []
    column_of_a = b.gep(a, [b.mul(k, lda)]) if transposed else None
    for i in range(rows):
        s = b.load(b.gep(column_of_a, [_const(i)]) if transposed else b.gep(row_ptrs[i], [k]))
        v = b.insert_element(ir.Constant(vec, ir.Undefined), s, ir.Constant(I32, 0))
        v = b.shuffle_vector(v, v, splat)
        sums.append([b.call(fma, [v, columns[j], accs[i][j]]) for j in range(2 * panels)])
    k_next = b.add(k, _const(1))
    k.add_incoming(k_next, loop)
    for i in range(rows):
        for j in range(2 * panels):
            accs[i][j].add_incoming(starts[i][j], entry)
            accs[i][j].add_incoming(sums[i][j], loop)
    b.cbranch(b.icmp_signed("<", k_next, k_count), loop, done)
    b.position_at_end(done)
    finals = []
    for i in range(rows):
        row = []
        for j in range(2 * panels):
            phi = b.phi(vec)
            phi.add_incoming(starts[i][j], entry)
            phi.add_incoming(sums[i][j], loop)
            row.append(phi)
        finals.append(row)
    for i in range(rows):
        out = b.gep(c, [b.mul(_const(i), ldc)])
        for j in range(2 * panels):
            at = b.gep(out, [_const(j * blk.vector)]) if j else out
            b.store(finals[i][j], b.bitcast(at, vec.as_pointer()), align=_align(real))
    b.ret_void()
    return fn


def _row_micro(module, dtype, blk: Blocking, transposed: bool) -> ir.Function:
    """The micro-kernel's signature for one row of A and one panel: C[0, :NR] (+)= A[0, :K] @
    panel, reading the panel front to back (one stream: the prefetchers keep ahead of it)
    with ROW_SPLIT partial sums over k (independent accumulators hide the FMA's latency),
    added up at the end."""
    fn, real, vec, fma = _micro_declared(
        module, dtype, blk, f"row_micro_{SUFFIX[np.dtype(dtype)]}{'t' if transposed else ''}")
    k_count, a, lda, bp, _, c, _, accumulate = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = ir.Constant(vec, [0.0] * blk.vector)
    splat = ir.Constant(ir.VectorType(I32, blk.vector), [0] * blk.vector)
    vp = vec.as_pointer()
    onto = b.icmp_signed("!=", accumulate, _const(0))
    accs = [[b.alloca(vec) for _ in range(2)] for _ in range(ROW_SPLIT)]
    for u, pair in enumerate(accs):
        for half, acc in enumerate(pair):
            start = zero
            if u == 0:
                start = b.select(onto, b.load(b.bitcast(b.gep(c, [_const(half * blk.vector)]),
                                                        vp), align=_align(real)), zero)
            b.store(start, acc)

    def step(k, u):   # acc[u] += A[0, k] * the panel's row k
        element = b.load(b.gep(a, [b.mul(k, lda) if transposed else k]))
        v = b.insert_element(ir.Constant(vec, ir.Undefined), element, ir.Constant(I32, 0))
        v = b.shuffle_vector(v, v, splat)
        for half in range(2):
            at = b.gep(bp, [b.add(b.mul(k, _const(blk.nr)), _const(half * blk.vector))])
            column = b.load(b.bitcast(at, vp), align=_align(real))
            b.store(b.call(fma, [v, column, b.load(accs[u][half])]), accs[u][half])

    whole = b.sub(k_count, b.srem(k_count, _const(ROW_SPLIT)))
    loop = _Loop(b, _const(0), whole, step=ROW_SPLIT, name="k")
    for u in range(ROW_SPLIT):
        step(b.add(loop.i, _const(u)), u)
    loop.close()
    rest = _Loop(b, whole, k_count, name="kr")
    step(rest.i, 0)
    rest.close()
    for half in range(2):
        parts = [b.load(accs[u][half]) for u in range(ROW_SPLIT)]
        while len(parts) > 1:
            parts = [b.fadd(parts[j], parts[j + 1]) if j + 1 < len(parts) else parts[j]
                     for j in range(0, len(parts), 2)]
        b.store(parts[0], b.bitcast(b.gep(c, [_const(half * blk.vector)]), vp),
                align=_align(real))
    b.ret_void()
    return fn


def _align(real) -> int:
    return 8 if isinstance(real, ir.DoubleType) else 4


def _copy_tile(module, dtype) -> ir.Function:
    """dst[i, j] = tmp[i, j] for rows x cols (the columns of a last panel that C has)."""
    existing = module.globals.get(f"copy_tile_{SUFFIX[np.dtype(dtype)]}")
    if existing is not None:
        return existing
    real = FLOATS[np.dtype(dtype)]
    ptr = real.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, I64, ptr, I64, ptr, I64]),
                     f"copy_tile_{SUFFIX[np.dtype(dtype)]}")
    fn.linkage = "internal"
    rows, cols, tmp, ldt, dst, ldd = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    i = _Loop(b, _const(0), rows, name="i")
    j = _Loop(b, _const(0), cols, name="j")
    value = b.load(b.gep(tmp, [b.add(b.mul(i.i, ldt), j.i)]))
    b.store(value, b.gep(dst, [b.add(b.mul(i.i, ldd), j.i)]))
    j.close()
    i.close()
    b.ret_void()
    return fn


def _driver(module, dtype, blk: Blocking, transposed: bool) -> ir.Function:
    """packed_gemm(M, N, K, A, lda, Bp, C, ldc, p0, p1): C[:, panels p0 .. p1-1] = A @ W for
    A [M, K] (element (i, k) at A + i*lda + k; packed_gemm_t: A + k*lda + i, a transposed
    operand), W [K, N] packed in Bp, C [M, N] (rows ldc apart). K in blocks of KC (the
    accumulators start from C after the first); rows in chunks, panels inside them, so that a
    panel's block is read from cache by every row block of a chunk (A^T: each row block
    packed, every panel inside it); a panel that runs past N is computed into a tile on the
    stack and its columns copied."""
    real = FLOATS[np.dtype(dtype)]
    ptr = real.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, I64, I64, ptr, I64, ptr, ptr,
                                                               I64, I64, I64]),
                     symbol("packed_gemm_t" if transposed else "packed_gemm", dtype))
    m, n, k, a, lda, bp, c, ldc, p0, p1 = fn.args
    # one row (B = 1): a panel at a time, read as one stream (_row_micro); 12 panels at once
    # read 12 streams 16 KB apart (float32, K = 128) and ran at 47-60 GB/s from the L2 on
    # one core of an AMD EPYC Zen 4, one panel at a time at 76-81 (bench: [1, 128] x [128,
    # 512] 4.4-5.6 -> 3.3 us, [1, 256] x [256, 1024] 20.5 -> 13.0 us)
    groups = {r: blk.tail_panels(r) if r > 1 else [1] for r in (blk.mr, *blk.tail_rows())}
    micros = {(r, q): _micro(module, dtype, blk, r, q, transposed) if r > 1
              else _row_micro(module, dtype, blk, transposed)
              for r, qs in groups.items() for q in qs}
    copy = _copy_tile(module, dtype)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    tmp = b.alloca(real, size=blk.mr * blk.nr)
    # A's copies: a row block packed (A^T), or a chunk of rows (A), one vector further apart
    # than KC; on the stack (200 KB for float32, 400 for float64: the callers are Python's
    # threads and rnncc's, with stacks of megabytes)
    chunk_stride = KC + blk.vector
    a_block = b.alloca(real, size=blk.mr * KC if transposed
                       else blk.mr * MC_BLOCKS * chunk_stride)
    a_block.align = 64
    start = b.alloca(I64)   # the tail's next row
    panel_at = {r: b.alloca(I64) for r in blk.tail_rows()}   # its next panel, per block
    nr = _const(blk.nr)
    panel_stride = b.mul(k, nr)
    full = b.sub(m, b.srem(m, _const(blk.mr)))

    def a_at(i, k0):   # A's element (i, k0)
        return b.gep(a, [b.add(i, b.mul(k0, lda)) if transposed else b.add(b.mul(i, lda), k0)])

    def product(micro, rows, panels, p, i, k0, depth, onto, copied=None):
        """One micro-kernel call: rows i.., panels p.., K from k0 for depth; into C where its
        panels fit, else via tmp (filled from C first where it accumulates). `copied`: (where
        the rows' A starts, its lda) in a copy of it (a packed row block, or a chunk's rows)."""
        width = _const(panels * blk.nr)
        b_at = b.gep(bp, [b.add(b.mul(p, panel_stride), b.mul(k0, nr))])
        c_at = b.gep(c, [b.add(b.mul(i, ldc), b.mul(p, nr))])
        a_args = [a_at(i, k0), lda] if copied is None else list(copied)
        fits = b.icmp_signed("<=", b.mul(b.add(p, _const(panels)), nr), n)
        with b.if_else(fits) as (inside, past):
            with inside:
                b.call(micro, [depth, *a_args, b_at, panel_stride, c_at, ldc, onto])
            with past:
                cols = b.sub(n, b.mul(p, nr))
                with b.if_then(b.icmp_signed("!=", onto, _const(0))):
                    b.call(copy, [rows, cols, c_at, ldc, tmp, width])
                b.call(micro, [depth, *a_args, b_at, panel_stride, tmp, width, onto])
                b.call(copy, [rows, cols, tmp, width, c_at, ldc])

    def pack_rows(i, k0, depth):
        """A^T's rows i .. i+MR-1, K from k0 for depth, into a_block: the MR numbers of each k
        one after another (the micro-kernel reads it as A^T with lda = MR)."""
        kk = _Loop(b, _const(0), depth, name="pk")
        for r in range(blk.mr):
            value = b.load(a_at(b.add(i, _const(r)), b.add(k0, kk.i)))
            b.store(value, b.gep(a_block, [b.add(b.mul(kk.i, _const(blk.mr)), _const(r))]))
        kk.close()

    # at least one pass over K, so that K = 0 still writes C (zeros)
    blocks = b.sdiv(b.add(k, _const(KC - 1)), _const(KC))
    blocks = b.select(b.icmp_signed("<", blocks, _const(1)), _const(1), blocks)
    kblock = _Loop(b, _const(0), blocks, name="kb")
    k0 = b.mul(kblock.i, _const(KC))
    depth = b.sub(k, k0)
    depth = b.select(b.icmp_signed("<", depth, _const(KC)), depth, _const(KC))
    onto = b.zext(b.icmp_signed(">", kblock.i, _const(0)), I64)
    if transposed:
        # A^T (a weight's gradient: dgates^T over all T*B rows): a row block's MR numbers of
        # a k are consecutive, the next k's lda further on (a new page each k at lda = 4H =
        # 1024); packed once per row block and K block, then every panel passes over it
        # (lstm's dU [1024, 6400] x [6400, 256] on 2 cores of a Zen 4: 146 -> 190 GF/s; packing
        # a row-major A as well gained nothing and lost half where few panels reuse it)
        row = _Loop(b, _const(0), full, step=blk.mr, name="row")
        pack_rows(row.i, k0, depth)
        panel = _Loop(b, p0, p1, name="p")
        product(micros[(blk.mr, 1)], _const(blk.mr), 1, panel.i, row.i, k0, depth, onto,
                (a_block, _const(blk.mr)))
        panel.close()
        row.close()
    else:
        # rows in chunks of MC_BLOCKS row blocks, so that a chunk of A stays in cache while
        # every panel passes over it (unchunked, M = 640 ran slower on two threads than on
        # one), each chunk's rows first copied chunk_stride apart: rows of a row-major A whose
        # lda is a multiple of 512 floats (K = 4H = 1024: backward's dgates @ U and dgates @
        # W) lie in one set of the L1 cache, and a row block's 12 lines evict one another
        # (lstm's [6400, 1024] x [1024, 256] ran at 139 GF/s on 2 Zen 4 cores, K = 1000 at 210)
        chunk_rows = blk.mr * MC_BLOCKS
        chunk = _Loop(b, _const(0), full, step=chunk_rows, name="chunk")
        chunk_end = b.add(chunk.i, _const(chunk_rows))
        chunk_end = b.select(b.icmp_signed("<", chunk_end, full), chunk_end, full)
        stride = _const(chunk_stride)
        r = _Loop(b, _const(0), b.sub(chunk_end, chunk.i), name="cr")
        kk = _Loop(b, _const(0), depth, name="ck")
        value = b.load(a_at(b.add(chunk.i, r.i), b.add(k0, kk.i)))
        b.store(value, b.gep(a_block, [b.add(b.mul(r.i, stride), kk.i)]))
        kk.close()
        r.close()
        panel = _Loop(b, p0, p1, name="p")
        row = _Loop(b, chunk.i, chunk_end, step=blk.mr, name="row")
        copied = (b.gep(a_block, [b.mul(b.sub(row.i, chunk.i), stride)]), stride)
        product(micros[(blk.mr, 1)], _const(blk.mr), 1, panel.i, row.i, k0, depth, onto, copied)
        row.close()
        panel.close()
        chunk.close()

    # the rows past the last full block (fewer than MR): in blocks of tail_rows() (8, 4, 2, 1:
    # at most one of each), each block's panels in groups of tail_panels() (for two rows on
    # AVX-512: 6, 3, 1; one row: one), the largest that fits first
    b.store(full, start)
    for r in blk.tail_rows():
        first = b.load(start)
        with b.if_then(b.icmp_signed(">=", b.sub(m, first), _const(r))):
            at = panel_at[r]
            b.store(p0, at)
            head, body, done = (fn.append_basic_block(f"rows{r}.{x}")
                                for x in ("head", "body", "done"))
            b.branch(head)
            b.position_at_end(head)
            b.cbranch(b.icmp_signed("<", b.load(at), p1), body, done)
            b.position_at_end(body)
            p = b.load(at)
            left = b.sub(p1, p)
            for q in groups[r]:   # (each branch ends by going back to the head)
                with b.if_then(b.icmp_signed(">=", left, _const(q))):
                    product(micros[(r, q)], _const(r), q, p, first, k0, depth, onto)
                    b.store(b.add(p, _const(q)), at)
                    b.branch(head)
            b.branch(head)   # (unreachable: q = 1 always fits)
            b.position_at_end(done)
            b.store(b.add(first, _const(r)), start)
    after = b.append_basic_block("after")
    b.branch(after)
    b.position_at_end(after)
    kblock.close()
    b.ret_void()
    return fn


def _pack_function(module, dtype, blk: Blocking) -> ir.Function:
    """pack(K, N, W, sk, sn, out): W [K, N] (element (k, n) at W + k*sk + n*sn) into panels.

    Its whole panels are copied a vector at a time: from a row-major W (sn = 1), two vectors
    per k; from a transposed one (sk = 1: the weight U of h @ U^T, [N, K] in memory), NR
    columns of VECTOR k each are read as vectors and transposed in registers (`_transpose`), two
    VECTOR x VECTOR blocks. Element by element, as the rest (the last panel, K's remainder) is,
    the transposed pack was 80 us of an lstm's 90 us call at T=1, B=1, H=128 (its two weights:
    strided loads, one element at a time)."""
    real = FLOATS[np.dtype(dtype)]
    ptr = real.as_pointer()
    vec = ir.VectorType(real, blk.vector)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, I64, ptr, I64, I64, ptr]),
                     symbol("pack", dtype))
    k, n, w, sk, sn, out = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    nr, v = _const(blk.nr), blk.vector
    panels = b.sdiv(b.add(n, _const(blk.nr - 1)), nr)
    whole = b.sdiv(n, nr)

    def vector_at(pointer):
        return b.load(b.bitcast(pointer, vec.as_pointer()), align=_align(real))

    def store_vector(value, pointer):
        b.store(value, b.bitcast(pointer, vec.as_pointer()), align=_align(real))

    def element_by_element(p_start, k_start, p_stop):
        """Panels p_start.. p_stop, k from k_start: one element at a time, zeros past N."""
        p = _Loop(b, p_start, p_stop, name="p")
        kk = _Loop(b, k_start, k, name="k")
        base = b.mul(b.add(b.mul(p.i, k), kk.i), nr)
        j = _Loop(b, _const(0), nr, name="j")
        column = b.add(b.mul(p.i, nr), j.i)
        target = b.gep(out, [b.add(base, j.i)])
        with b.if_else(b.icmp_signed("<", column, n)) as (inside, past):
            with inside:
                b.store(b.load(b.gep(w, [b.add(b.mul(kk.i, sk), b.mul(column, sn))])), target)
            with past:
                b.store(ir.Constant(real, 0.0), target)
        j.close()
        kk.close()
        p.close()

    rows_contiguous = b.icmp_signed("==", sn, _const(1))
    columns_contiguous = b.icmp_signed("==", sk, _const(1))
    with b.if_else(rows_contiguous) as (by_rows, otherwise):
        with by_rows:   # W row-major: a panel's k-th row is NR consecutive elements of W's
            p = _Loop(b, _const(0), whole, name="p")
            kk = _Loop(b, _const(0), k, name="k")
            source = b.gep(w, [b.add(b.mul(kk.i, sk), b.mul(p.i, nr))])
            target = b.gep(out, [b.mul(b.add(b.mul(p.i, k), kk.i), nr)])
            for half in range(2):
                store_vector(vector_at(b.gep(source, [_const(half * v)])),
                             b.gep(target, [_const(half * v)]))
            kk.close()
            p.close()
            element_by_element(whole, _const(0), panels)
        with otherwise:
            with b.if_else(columns_contiguous) as (by_columns, strided):
                with by_columns:   # W transposed: blocks of VECTOR k transposed in registers
                    blocked = b.mul(b.sdiv(k, _const(v)), _const(v))
                    p = _Loop(b, _const(0), whole, name="p")
                    kk = _Loop(b, _const(0), blocked, step=v, name="k")
                    columns = [vector_at(b.gep(w, [b.add(b.mul(b.add(b.mul(p.i, nr),
                                                                      _const(j)), sn), kk.i)]))
                               for j in range(blk.nr)]
                    halves = [_transpose(b, columns[:v]), _transpose(b, columns[v:])]
                    for i in range(v):
                        target = b.gep(out, [b.mul(b.add(b.mul(p.i, k),
                                                         b.add(kk.i, _const(i))), nr)])
                        for half in range(2):
                            store_vector(halves[half][i], b.gep(target, [_const(half * v)]))
                    kk.close()
                    element_by_element(p.i, blocked, b.add(p.i, _const(1)))
                    p.close()
                    element_by_element(whole, _const(0), panels)
                with strided:
                    element_by_element(_const(0), _const(0), panels)
    b.ret_void()
    return fn


def _transpose(b: ir.IRBuilder, rows: list) -> list:
    """The transpose of a square block of vectors (a power of two of them): log2 rounds of
    interleaving row i with row i + n/2, low halves into row 2i and high halves into 2i + 1."""
    n = len(rows)
    half = n // 2
    low = [x for i in range(half) for x in (i, n + i)]
    high = [x for i in range(half, n) for x in (i, n + i)]
    for _ in range(n.bit_length() - 1):
        rows = [b.shuffle_vector(rows[i // 2], rows[i // 2 + half],
                                 ir.Constant(ir.VectorType(I32, n), low if i % 2 == 0 else high))
                for i in range(n)]
    return rows


# -- the team: a call's products and parallel loops split over threads -------------------------
# The team is one record (TEAM_FIELDS int64s, its counters on cache lines of their own) and
# threads of rnncc's own that stay for the process (team.py), each in `work`. The thread
# running a cell's function owns the team for the call (`begin` ... `end`). A product or a
# loop's rows of the owner's are shared out: the owner writes the job, bumps `generation`
# (waking the members that sleep), computes its share and waits for `done`; the members whose
# index is below the call's `size` compute theirs (the others let the job pass). Between jobs
# a member spins, then sleeps on `generation`; after `end` (`parked`) it sleeps at once, so
# that idle members never take a core from other work. Any other thread's products and loops
# run alone, so a second call at the same time (another thread's) is unaffected.
GENERATION, DONE, OWNER, SIZE, STOP, PARKED, SLEEPERS, MIN_WORK = 0, 8, 16, 17, 18, 19, 20, 21
JOB = 24
TEAM_FIELDS = 40
# A product below `min_work` multiply-adds (the record's, set by `begin` for the call:
# team.product_threshold, what one core of this machine does in a few microseconds, within
# this range) runs on the owner alone: a hand-off costs about a microsecond each way. On the
# Zen 5 a product of 2^18 (lstm B=16, H=64: 1 us alone) lost to it (the layer's inference
# 0.69 ms alone, 1.08 ms shared; with 2^20, 0.70); on the Zen 4, whose cores take twice as
# long, it won (1.24 -> 0.87 ms, bench/team_thresholds.py).
TEAM_MIN_WORK_RANGE = (1 << 18, 1 << 20)
# A product whose packed weight has this many bytes is shared out however few rows it has:
# at B = 1 a step's product reads its whole weight for a few multiply-adds, so it runs at
# the speed of the core's L2, and two cores each reading half of it take half the time (lstm
# T=200, B=1, H=128, 256 KB of recurrent weight: 1.28 -> 0.87 ms on 2 cores of an AMD EPYC
# Zen 4). The small lstm's 64 KB (B=16, H=64) stays on one core: it is in L1 and L2 anyway.
TEAM_MIN_BYTES = 1 << 17
# A loop's rows are shared out where every member gets this many (a step's kernel at B = 8 on
# two threads; a hand-off costs about a microsecond).
TEAM_MIN_ROWS = 4
# A product is split by rows, not panels, where the panels would give each member fewer than
# ROWS_FEW_PANELS and the rows give each ROWS_MANY_BLOCKS blocks of MR or more: a weight's
# gradient [4H, T*B] x [T*B, H] and the input's gradient [T*B, 4H] x [4H, I] at H = 256 (8
# panels) ran at 182 and 183 GF/s split by panels on 2 Zen 4 cores, each member copying every
# row of A; by rows, 194 and 204.
ROWS_FEW_PANELS, ROWS_MANY_BLOCKS = 8, 4
PRODUCT, ROWS = 1, 2   # a job's code: a product (by its driver), or a loop's rows
JOB_FIELDS = 14   # code, function, M, N, K, A, lda, Bp, C, ldc, NR, MR, item bytes, transposed
DRIVER_FN = ir.FunctionType(ir.VoidType(), [I64, I64, I64, ir.IntType(8).as_pointer(), I64,
                                            ir.IntType(8).as_pointer(),
                                            ir.IntType(8).as_pointer(), I64, I64, I64])
ROWS_FN = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), I64, I64])
# Cycles (of the CPU's counter) a member spins between jobs before it sleeps: tens of
# microseconds, longer than a step's kernels at B = 64 take, so that it wakes without a
# system call inside a time loop.
SPIN_CYCLES = 1 << 18
FUTEX_WAIT, FUTEX_WAKE = 128, 129   # FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE
I8P = ir.IntType(8).as_pointer()


def _team_ir(module) -> None:
    team_type = ir.ArrayType(I64, TEAM_FIELDS)
    team = ir.GlobalVariable(module, team_type, "rnncc_team")
    team.initializer = ir.Constant(team_type, None)
    team.align = 64
    self_fn = ir.Function(module, ir.FunctionType(I64, []), "pthread_self")
    x86 = module.triple.startswith(("x86_64", "i686", "i386"))
    pause = ir.Function(module, ir.FunctionType(ir.VoidType(), []),
                        "llvm.x86.sse2.pause") if x86 else None

    def field(b, index):
        return b.gep(team, [_const(0), ir.Constant(I32, index)])

    def spin(b):
        if pause is not None:
            b.call(pause, [])

    clock = ir.Function(module, ir.FunctionType(I64, []), "llvm.readcyclecounter")
    futex = None
    if "linux" in module.triple and module.triple.startswith(("x86_64", "aarch64")):
        futex_number = 202 if module.triple.startswith("x86_64") else 98   # SYS_futex
        futex = ir.Function(module, ir.FunctionType(I64, [I64], var_arg=True), "syscall")

    # share(index, size): member `index`'s part of the job: a loop's rows (the function runs
    # them), or a product's panels where there are enough for every member, else its rows
    share = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, I64]), "team_share")
    share.linkage = "internal"
    index, size = share.args
    b = ir.IRBuilder(share.append_basic_block("entry"))
    code, fn_at, m, n, k, a, lda, bp, c, ldc, nr, mr, item, transposed = (
        b.load(field(b, JOB + j)) for j in range(JOB_FIELDS))
    this, other = share.append_basic_block("rows"), share.append_basic_block("products")
    b.cbranch(b.icmp_signed("==", code, _const(ROWS)), this, other)
    b.position_at_end(this)   # a loop's rows: m is the function's record
    b.call(b.inttoptr(fn_at, ROWS_FN.as_pointer()), [b.inttoptr(m, I8P), index, size])
    b.ret_void()
    b.position_at_end(other)
    driver = b.inttoptr(fn_at, DRIVER_FN.as_pointer())
    panels = b.sdiv(b.sub(b.add(n, nr), _const(1)), nr)
    by_panels, by_rows = share.append_basic_block("panels"), share.append_basic_block("rows2")
    # by rows where each member would get few panels but gets several row blocks: each copies
    # or packs (the driver) only the rows it runs, and passes more panels over them
    row_blocks = b.sdiv(b.sub(b.add(m, mr), _const(1)), mr)
    few_panels = b.icmp_signed("<", panels, b.mul(size, _const(ROWS_FEW_PANELS)))
    many_rows = b.icmp_signed(">=", row_blocks, b.mul(size, _const(ROWS_MANY_BLOCKS)))
    b.cbranch(b.and_(b.icmp_signed(">=", panels, size), b.not_(b.and_(few_panels, many_rows))),
              by_panels, by_rows)
    b.position_at_end(by_panels)
    p0 = b.sdiv(b.mul(panels, index), size)
    p1 = b.sdiv(b.mul(panels, b.add(index, _const(1))), size)
    b.call(driver, [m, n, k, b.inttoptr(a, I8P), lda, b.inttoptr(bp, I8P), b.inttoptr(c, I8P),
                    ldc, p0, p1])
    b.ret_void()
    b.position_at_end(by_rows)
    blocks_ = b.sdiv(b.sub(b.add(m, mr), _const(1)), mr)
    r0 = b.mul(b.sdiv(b.mul(blocks_, index), size), mr)
    r1 = b.mul(b.sdiv(b.mul(blocks_, b.add(index, _const(1))), size), mr)
    r1 = b.select(b.icmp_signed("<", r1, m), r1, m)
    rows = b.sub(r1, r0)
    with b.if_then(b.icmp_signed(">", rows, _const(0))):
        step = b.select(b.icmp_signed("!=", transposed, _const(0)), _const(1), lda)
        a_rows = b.add(a, b.mul(b.mul(r0, step), item))
        c_rows = b.add(c, b.mul(b.mul(r0, ldc), item))
        b.call(driver, [rows, n, k, b.inttoptr(a_rows, I8P), lda, b.inttoptr(bp, I8P),
                        b.inttoptr(c_rows, I8P), ldc, _const(0), panels])
    b.ret_void()

    # work(index, seen): member `index`'s loop, from generation `seen` (read before the
    # member started, while no call held the team) until `stop`. Between jobs it spins for
    # SPIN_CYCLES, or not at all once the call has ended, then sleeps on the generation (a
    # futex, on Linux) until the owner's next job wakes it: a call's BLAS products and
    # kernels, and whatever runs between calls, have the cores to themselves
    work = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, I64]), "rnncc_team_work")
    index, seen0 = work.args
    b = ir.IRBuilder(work.append_basic_block("entry"))
    start = b.call(clock, [])
    head, got, job, mine, wait, check, out = (work.append_basic_block(x) for x in (
        "head", "got", "job", "mine", "wait", "check", "out"))
    pre = b.block
    b.branch(head)
    b.position_at_end(head)
    seen, since = b.phi(I64), b.phi(I64)
    seen.add_incoming(seen0, pre)
    since.add_incoming(start, pre)
    g = b.load_atomic(field(b, GENERATION), "acquire", 8)
    b.cbranch(b.icmp_signed("!=", g, seen), got, wait)
    b.position_at_end(got)
    b.cbranch(b.icmp_signed("!=", b.load_atomic(field(b, STOP), "acquire", 8), _const(0)),
              out, job)
    b.position_at_end(job)
    size = b.load(field(b, SIZE))
    passed = b.block
    b.cbranch(b.icmp_signed("<", index, size), mine, head)
    seen.add_incoming(g, passed)   # (a call on fewer threads than there are members)
    since.add_incoming(since, passed)
    b.position_at_end(mine)
    b.call(share, [index, size])
    b.atomic_rmw("add", field(b, DONE), _const(1), "release")
    seen.add_incoming(g, mine)
    since.add_incoming(b.call(clock, []), mine)
    b.branch(head)
    b.position_at_end(wait)
    b.cbranch(b.icmp_signed("!=", b.load_atomic(field(b, STOP), "acquire", 8), _const(0)),
              out, check)
    b.position_at_end(check)
    spin(b)
    now = b.call(clock, [])
    if futex is None:
        seen.add_incoming(seen, check)
        since.add_incoming(since, check)
        b.branch(head)
    else:
        sleep = work.append_basic_block("sleep")
        idle = b.or_(b.icmp_unsigned(">", b.sub(now, since), _const(SPIN_CYCLES)),
                     b.icmp_signed("!=", b.load_atomic(field(b, PARKED), "acquire", 8),
                                   _const(0)))
        b.cbranch(idle, sleep, head)
        seen.add_incoming(seen, check)
        since.add_incoming(since, check)
        b.position_at_end(sleep)
        b.atomic_rmw("add", field(b, SLEEPERS), _const(1), "seq_cst")
        unchanged = b.icmp_signed("==", b.load_atomic(field(b, GENERATION), "seq_cst", 8), seen)
        with b.if_then(unchanged):   # (the kernel checks again: no wake-up is lost)
            b.call(futex, [_const(futex_number), b.bitcast(field(b, GENERATION), I32.as_pointer()),
                           _const(FUTEX_WAIT), b.trunc(seen, I32), ir.Constant(I8P, None)])
        b.atomic_rmw("sub", field(b, SLEEPERS), _const(1), "seq_cst")
        seen.add_incoming(seen, b.block)
        since.add_incoming(b.call(clock, []), b.block)
        b.branch(head)
    b.position_at_end(out)
    b.ret_void()

    def wake_sleepers(b):
        if futex is None:
            return
        with b.if_then(b.icmp_signed(">", b.load_atomic(field(b, SLEEPERS), "seq_cst", 8),
                                     _const(0))):
            b.call(futex, [_const(futex_number), b.bitcast(field(b, GENERATION), I32.as_pointer()),
                           _const(FUTEX_WAKE), ir.Constant(I32, 2 ** 31 - 1),
                           ir.Constant(I8P, None)])

    # begin(size, min_work): the calling thread owns the team, `size` threads with the
    # members 1.., sharing out products of `min_work` multiply-adds or more;
    # end(): it no longer does, and the members sleep; stop(): the members return
    begin = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, I64]), "rnncc_team_begin")
    b = ir.IRBuilder(begin.append_basic_block("entry"))
    b.store(begin.args[0], field(b, SIZE))
    b.store(begin.args[1], field(b, MIN_WORK))
    b.store(_const(0), field(b, DONE))
    b.store_atomic(_const(0), field(b, STOP), "release", 8)
    b.store_atomic(_const(0), field(b, PARKED), "release", 8)
    b.store_atomic(b.call(self_fn, []), field(b, OWNER), "release", 8)
    b.ret_void()
    end = ir.Function(module, ir.FunctionType(ir.VoidType(), []), "rnncc_team_end")
    b = ir.IRBuilder(end.append_basic_block("entry"))
    b.store_atomic(_const(0), field(b, OWNER), "release", 8)
    b.store_atomic(_const(1), field(b, PARKED), "release", 8)
    b.ret_void()
    stop = ir.Function(module, ir.FunctionType(ir.VoidType(), []), "rnncc_team_stop")
    b = ir.IRBuilder(stop.append_basic_block("entry"))
    b.store_atomic(_const(1), field(b, STOP), "seq_cst", 8)
    b.atomic_rmw("add", field(b, GENERATION), _const(1), "seq_cst")
    wake_sleepers(b)
    b.ret_void()

    # generation(): how many jobs and ends the team has been given (which products a team
    # shares out is observable, for tests and profiles)
    generation = ir.Function(module, ir.FunctionType(I64, []), "rnncc_team_generation")
    b = ir.IRBuilder(generation.append_basic_block("entry"))
    b.ret(b.load_atomic(field(b, GENERATION), "acquire", 8))

    # product(driver, M, N, K, A, lda, Bp, C, ldc, NR, MR, item bytes, transposed): a
    # product shared out where the caller owns the team and it is large enough; returns 0
    # where it was not (the caller then runs the driver alone)
    fn = ir.Function(module, ir.FunctionType(I64, [I8P, I64, I64, I64, I8P, I64, I8P, I8P,
                                                   I64, I64, I64, I64, I64]),
                     "rnncc_team_product")
    driver, m, n, k, a, lda, bp, c, ldc, nr, mr, item, transposed = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    alone, shared = fn.append_basic_block("alone"), fn.append_basic_block("shared")
    size = b.load(field(b, SIZE))
    owned = b.icmp_signed("==", b.load_atomic(field(b, OWNER), "acquire", 8),
                          b.call(self_fn, []))
    big = b.or_(b.icmp_signed(">=", b.mul(b.mul(m, n), k), b.load(field(b, MIN_WORK))),
                b.icmp_signed(">=", b.mul(b.mul(n, k), item), _const(TEAM_MIN_BYTES)))
    b.cbranch(b.and_(b.and_(owned, big), b.icmp_signed(">", size, _const(1))), shared, alone)
    b.position_at_end(alone)
    b.ret(_const(0))
    b.position_at_end(shared)
    job = [_const(PRODUCT), b.ptrtoint(driver, I64), m, n, k, b.ptrtoint(a, I64), lda,
           b.ptrtoint(bp, I64), b.ptrtoint(c, I64), ldc, nr, mr, item, transposed]
    _post(b, field, job, share, wake_sleepers, spin, size)
    b.ret(_const(1))

    # rows(fn, record, count): a loop's rows (lower.py's team_loop) shared out where the caller
    # owns the team and every member gets TEAM_MIN_ROWS rows, else all on the caller
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8P, I8P, I64]), "rnncc_team_rows")
    body, record, count = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    alone, shared = fn.append_basic_block("alone"), fn.append_basic_block("shared")
    size = b.load(field(b, SIZE))
    owned = b.icmp_signed("==", b.load_atomic(field(b, OWNER), "acquire", 8),
                          b.call(self_fn, []))
    enough = b.icmp_signed(">=", count, b.mul(size, _const(TEAM_MIN_ROWS)))
    b.cbranch(b.and_(b.and_(owned, enough), b.icmp_signed(">", size, _const(1))), shared, alone)
    b.position_at_end(alone)
    b.call(b.bitcast(body, ROWS_FN.as_pointer()), [record, _const(0), _const(1)])
    b.ret_void()
    b.position_at_end(shared)
    job = [_const(ROWS), b.ptrtoint(body, I64), b.ptrtoint(record, I64),
           *[_const(0)] * (JOB_FIELDS - 3)]
    _post(b, field, job, share, wake_sleepers, spin, size)
    b.ret_void()


def _post(b, field, job, share, wake_sleepers, spin, size):
    """The owner's side of a job: write it, wake the members, compute share 0, wait."""
    for j, v in enumerate(job):
        b.store(v, field(b, JOB + j))
    b.store_atomic(_const(0), field(b, DONE), "release", 8)
    b.atomic_rmw("add", field(b, GENERATION), _const(1), "seq_cst")
    wake_sleepers(b)
    b.call(share, [_const(0), size])
    others = b.sub(size, _const(1))
    fn = b.function
    waiting, finished = fn.append_basic_block("waiting"), fn.append_basic_block("finished")
    b.branch(waiting)
    b.position_at_end(waiting)
    spin(b)
    count = b.load_atomic(field(b, DONE), "acquire", 8)
    b.cbranch(b.icmp_signed(">=", count, others), finished, waiting)
    b.position_at_end(finished)


PARTS = ("team", "f32", "f32_t", "f64", "f64_t")


def part(dtype, transposed: bool) -> str:
    """The library part holding the products of `dtype` with A as given or transposed (the
    float type's pack is in its untransposed part)."""
    return SUFFIX[np.dtype(dtype)] + ("_t" if transposed else "")


def part_ir(name: str, triple: str, data_layout: str, features: str) -> str:
    """One part of the library, for a CPU with `features`: "team" (the team's record and
    protocol), or a float type's products ("f32", "f64"; "_t": A transposed). Parts compile and
    load apart, as a call needs them: an inference in float32 needs "team" and "f32" only."""
    module = ir.Module(name=f"rnncc_gemm_{name}")
    module.triple, module.data_layout = triple, data_layout
    if name == "team":
        _team_ir(module)
        return str(module)
    dtype = next(d for d, suffix in SUFFIX.items() if name.startswith(suffix))
    transposed = name.endswith("_t")
    blk = blocking(dtype, features)
    driver = _driver(module, dtype, blk, transposed)
    _team_entry(module, dtype, blk, transposed, driver)
    if not transposed:
        _pack_function(module, dtype, blk)
    return str(module)


def _team_entry(module, dtype, blk: Blocking, transposed: bool, driver) -> None:
    """team_gemm(M, N, K, A, lda, Bp, C, ldc): what compiled cells call: the product on the
    team where the caller owns one (rnncc_team_product), else the driver alone."""
    real_p = FLOATS[np.dtype(dtype)].as_pointer()
    product = ir.Function(module, ir.FunctionType(I64, [I8P, I64, I64, I64, I8P, I64, I8P, I8P,
                                                       I64, I64, I64, I64, I64]),
                          "rnncc_team_product")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, I64, I64, real_p, I64, real_p,
                                                               real_p, I64]),
                     symbol("team_gemm_t" if transposed else "team_gemm", dtype))
    m, n, k, a, lda, bp, c, ldc = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    done = b.call(product, [b.bitcast(driver, I8P), m, n, k, b.bitcast(a, I8P), lda,
                            b.bitcast(bp, I8P), b.bitcast(c, I8P), ldc, _const(blk.nr),
                            _const(blk.mr), _const(np.dtype(dtype).itemsize),
                            _const(int(transposed))])
    with b.if_then(b.icmp_signed("==", done, _const(0))):
        panels = b.sdiv(b.add(n, _const(blk.nr - 1)), _const(blk.nr))
        b.call(driver, [m, n, k, a, lda, bp, c, ldc, _const(0), panels])
    b.ret_void()


def exported(name: str) -> list[str]:
    """The functions a part defines that others (compiled cells, team.py) call by name."""
    if name == "team":
        return ["rnncc_team_begin", "rnncc_team_end", "rnncc_team_stop", "rnncc_team_work",
                "rnncc_team_rows", "rnncc_team_product", "rnncc_team_generation"]
    dtype = next(d for d, suffix in SUFFIX.items() if name.startswith(suffix))
    if name.endswith("_t"):
        return [symbol("packed_gemm_t", dtype), symbol("team_gemm_t", dtype)]
    return [symbol("packed_gemm", dtype), symbol("team_gemm", dtype), symbol("pack", dtype)]

"""Plan -> numba.cuda source: one persistent kernel per direction, the whole time loop inside it.

The same Plan the cpu printer prints (codegen.py there), printed for a GPU. The printer makes no
decisions of its own; what differs from the cpu printing is only where the work runs:

- the whole call is one cooperative launch: every phase's work is spread over the grid's blocks,
  and `grid.sync()` separates the steps (a GEMM reads what the kernel before it wrote in other
  blocks). One launch per call: launching a kernel from Python costs more than a small step's
  kernel takes, and a time loop on the host would launch two or more per step;
- a GEMM is a tiled shared-memory product (`gemm`, and `gemm_step` with narrower tiles for a
  step's few rows, printed into the module): tiles of its output are shared out over the
  blocks, each thread of a block computes a TM x TN part of its tile from BK-deep slices of
  both operands staged in shared memory;
- a fused kernel gives each row (a batch row per step; a (t, b) row before or after the loop)
  to one block, whose threads stride over the row's columns; a row reduction (mean, sum) is a
  block reduction in shared memory, and the threads meet (`cuda.syncthreads()`) after each loop
  that stores values other threads read; a batch sum (sum over every row) gives each thread of
  the grid its own columns;
- carrying the state to the next step is done by the block that computed the row, right after
  its kernel, when the step ends with a kernel over rows (every shipped cell).

Which GEMM algorithm and tile, where the carry happens and which arrays get 2-D aliases are the
layout's decisions (TARGET below asks for them; rnncc/plan/layout.py makes them). The module is
plain text (`rnncc show SPEC --stage cuda` prints it); kernel arguments are the layout's: those
of the cpu function plus a 2-D alias ([T*B, width]) of each array a GEMM reads or writes over
all rows.
"""
from __future__ import annotations

from itertools import takewhile

import numpy as np

from ...plan.layout import Algorithm, Layout, Single, Target, ident, layout
from ...plan.plan import LANES_COLUMNS, Role, Rows
from ..printing import FunctionPrinter, KernelPrinter, dim_expr

# Launch shape: threads per block, the depth BK of the operand slices a GEMM stages, and two GEMM
# tile shapes (BM, BN, TM, TN: a block's BM x BN outputs, each thread's TM x TN of them;
# (BM / TM) * (BN / TN) = threads): `gemm` for the products over all T*B rows, and the narrower
# `gemm_step` for a step's B rows (at B = 64 and 4H = 2048 the wide tiles make 32 tiles, for a
# grid of one or two blocks per multiprocessor; the narrow ones 128). The simulator runs every
# thread as a Python thread, so its blocks are small.
GPU_LAUNCH = {"threads": 256, "bk": 16, "gemm": (64, 64, 4, 4), "gemm_step": (16, 64, 1, 4)}
SIMULATOR_LAUNCH = {"threads": 4, "bk": 4, "gemm": (4, 4, 2, 2), "gemm_step": (2, 4, 1, 2)}

HELPERS = '''\
NT = {threads}  # threads per block
BK = {bk}  # the depth of a GEMM's operand slices staged per round
BM, BN, TM, TN = {largest}  # the largest GEMM tile (the shared and local arrays' shapes)


@cuda.jit(device=True)
def stage(x, rows_major, r0, k0, R, K, tile, width, tid):
    """tile[kk, rr] = element (r0 + rr, k0 + kk) of an operand that is [R, K] (x itself where
    rows_major, else x.T), zero past its edges; neighbouring threads read neighbouring
    elements of x's rows."""
    for e in range(tid, width * BK, NT):
        if rows_major:
            kk = e % BK
            rr = e // BK
        else:
            rr = e % width
            kk = e // width
        r = r0 + rr
        k = k0 + kk
        if r < R and k < K:
            tile[kk, rr] = x[r, k] if rows_major else x[k, r]
        else:
            tile[kk, rr] = ZERO


@cuda.jit(device=True)
def gemv(v, a, out, acc, trans_a, accumulate, blk, nblk, tid):
    """out = a @ v (a^T @ v where trans_a) (+ acc where accumulate), for a vector v without
    rows (parameter-only work: small); out's elements are shared out over the grid."""
    K = v.shape[0]
    for n in range(blk * NT + tid, out.shape[0], nblk * NT):
        x = ZERO
        for k in range(K):
            x += (a[k, n] if trans_a else a[n, k]) * v[k]
        out[n] = acc[n] + x if accumulate else x


@cuda.jit(device=True)
def outer_of_sums(a, b, c, a_rows, b_rows, blk, nblk, tid):
    """c[m, n] = (sum of a's rows)[m] * (sum of b's rows)[n], an operand without rows (a
    vector) taken as it is."""
    M = c.shape[0]
    N = c.shape[1]
    for e in range(blk * NT + tid, M * N, nblk * NT):
        m = e // N
        n = e - m * N
        x = ZERO
        if a_rows:
            for r in range(a.shape[0]):
                x += a[r, m]
        else:
            x = a[m]
        y = ZERO
        if b_rows:
            for r in range(b.shape[0]):
                y += b[r, n]
        else:
            y = b[n]
        c[m, n] = x * y


@cuda.jit(device=True)
def block_sum(value, red, tid):
    """The sum of `value` over the block's threads, returned to every thread."""
    red[tid] = value
    cuda.syncthreads()
    step = NT // 2
    while step > 0:
        if tid < step:
            red[tid] += red[tid + step]
        cuda.syncthreads()
        step //= 2
    total = red[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def sigmoid{f}(x):
    return ONE / (ONE + math.exp(-x))


@cuda.jit(device=True)
def tanh{f}(x):
    return math.tanh(x)


@cuda.jit(device=True)
def exp{f}(x):
    return math.exp(x)


@cuda.jit(device=True)
def log{f}(x):
    return math.log(x)


@cuda.jit(device=True)
def softplus{f}(x):
    return (x if x > ZERO else ZERO) + math.log1p(math.exp(-abs(x)))
'''


GEMM = '''\
@cuda.jit(device=True)
def {name}(a, b, c, acc, trans_a, trans_b, accumulate, blk, nblk, tid, sa, sb, part, rb):
    """c = op(a) @ op(b) (+ acc where accumulate); op(x) is x.T where trans_x. Its {bm} x {bn}
    tiles of c are shared out over the grid's blocks, each thread computing {tm} x {tn} of a
    tile (rows ty + i * {bm} // {tm}, columns tx + j * {bn} // {tn}); sa, sb stage the operands'
    slices in shared memory, part and rb are the thread's registers."""
    M = c.shape[0]
    N = c.shape[1]
    K = a.shape[0] if trans_a else a.shape[1]
    tiles_n = (N + {bn} - 1) // {bn}
    tiles = ((M + {bm} - 1) // {bm}) * tiles_n
    tx = tid % ({bn} // {tn})
    ty = tid // ({bn} // {tn})
    for tile in range(blk, tiles, nblk):
        m0 = (tile // tiles_n) * {bm}
        n0 = (tile % tiles_n) * {bn}
        for i in range({tm}):
            for j in range({tn}):
                part[i, j] = ZERO
        for k0 in range(0, K, BK):
            stage(a, not trans_a, m0, k0, M, K, sa, {bm}, tid)
            stage(b, trans_b, n0, k0, N, K, sb, {bn}, tid)
            cuda.syncthreads()
            for kk in range(BK):
                for j in range({tn}):
                    rb[j] = sb[kk, tx + j * ({bn} // {tn})]
                for i in range({tm}):
                    av = sa[kk, ty + i * ({bm} // {tm})]
                    for j in range({tn}):
                        part[i, j] += av * rb[j]
            cuda.syncthreads()
        for i in range({tm}):
            m = m0 + ty + i * ({bm} // {tm})
            if m < M:
                for j in range({tn}):
                    n = n0 + tx + j * ({bn} // {tn})
                    if n < N:
                        if accumulate:
                            c[m, n] = acc[m, n] + part[i, j]
                        else:
                            c[m, n] = part[i, j]
'''


# the math functions HELPERS defines (in the run's dtype); others are libdevice's, as math.*
DEVICE_FUNCTIONS = ("sigmoid", "tanh", "exp", "log", "softplus")

# What the layout decides for this target: 2-D aliases for the GEMMs over all rows, the carry
# in the step's last kernel, a tile per GEMM (the wide one over all rows, the narrow one for a
# step's few rows), and a kernel's sums over every row first (they wait for a grid sync).
TARGET = Target("cuda", row_aliases=True, carry_in_kernel=True,
                tiles=((Rows.ALL, "gemm"), (Rows.STEP, "gemm_step")), batch_sums_first=True)


class CudaMath:
    """Math in a generated CUDA module: the helpers above, else Python's math module (Numba maps
    it onto libdevice)."""

    def __init__(self, dtype, const):
        self.suffix = "32" if np.dtype(dtype) == np.float32 else "64"
        self.const = const

    def call(self, function: str, *args: str) -> str:
        if function in DEVICE_FUNCTIONS:
            return f"{function}{self.suffix}({', '.join(args)})"
        return f"math.{function}({', '.join(args)})"


class CudaPrinter(FunctionPrinter):
    def __init__(self, layout: Layout, dtype, dims: list[str], simulator: bool = False):
        super().__init__(layout, dtype, dims, CudaMath)
        self.simulator = simulator

    def matrix(self, b, t: str | None) -> str:
        """A buffer as a 2-D array for the GEMM: [rows, columns]."""
        array, offset = self.base(b, t)
        rows_all = (b.rows == Rows.ALL or (b.rows == Rows.STEP and b.stored)) and t is None
        if rows_all:  # every step's rows: the array's [T*B, width] alias
            array = f"{array}_rows"
        if b.view_of is not None and b.axis == "cols":
            array = f"{array}[:, {offset}:{offset} + {dim_expr(b.shape[-1])}]"
        return array

    def gemm(self, step, key, indent: int, t: str | None) -> None:
        buffers = self.plan.buffers
        a_buf, b_buf = buffers[step.a], buffers[step.b]
        a, v, out = (self.matrix(a_buf, t), self.matrix(b_buf, t),
                     self.matrix(buffers[step.out], t))
        acc = self.matrix(buffers[step.accumulate], t) if step.accumulate else out
        how = self.layout.gemms[key]
        if how.algorithm == Algorithm.GEMV:  # a matrix times a vector
            self.emit(indent, f"gemv({v}, {a}, {out}, {acc}, {step.op == 'matmul_t'}, "
                              f"{bool(step.accumulate)}, blk, nblk, tid)")
            return
        if how.algorithm == Algorithm.OUTER_OF_SUMS:
            self.emit(indent, f"outer_of_sums({a}, {v}, {out}, {a_buf.rows != Rows.NONE}, "
                              f"{b_buf.rows != Rows.NONE}, blk, nblk, tid)")
            return
        # (left operand, right operand, transposes): matmul  out = v @ a^T,
        # matmul_t  out = v @ a,  outer_sum  out = a^T @ v
        left, right, trans = {"matmul": (v, a, "False, True"), "matmul_t": (v, a, "False, False"),
                              "outer_sum": (a, v, "True, False")}[step.op]
        self.emit(indent, f"{how.tile}({left}, {right}, {out}, {acc}, {trans}, "
                          f"{bool(step.accumulate)}, blk, nblk, tid, sa, sb, part, rb)")

    def step(self, step, key, indent: int, t, phase: str) -> None:
        if step.kind == "gemm":
            self.gemm(step, key, indent, t)
        else:
            CudaKernel(self, step, self.layout.kernels[key], indent, t, phase).print()

    def flags(self) -> list[str]:
        """A plan that can run as lanes takes four flags:
            lanes        0 runs the step schedule, 1 the lanes schedule (a grid thread per lane
                         where a lane is a column, a block per batch row where it is a whole
                         row)
            call_part    0 the whole call; 1 only what comes before the time loop, 2 only the
                         loop, 3 only what comes after it (the scan launches them apart; the
                         cpu target's `part`: here `part` is a GEMM's registers)
            chunks, chunk_steps   the lanes loop runs the steps in `chunks` chunks of
                         `chunk_steps` steps at once, a lane per chunk, batch row and column
                         (or row), chunk k's [B, ...] step arrays (states, scratch) rows
                         k * B .. k * B + B - 1 of arrays of chunks * B rows: the scan
                         (runtime.py); 1 and T otherwise"""
        return ["lanes", "call_part", "chunks", "chunk_steps"] if self.plan.lanes else []

    def function(self, name: str) -> str:
        plan = self.plan
        body_start = len(self.lines)
        # a plan that runs as lanes comes in parts (flags); the flags are the same in every
        # thread, so each grid barrier is met by all or by none
        indent = 2 if plan.lanes else 1
        if plan.lanes and plan.phases["before_loop"]:
            self.emit(1, "if call_part == 0 or call_part == 1:")
        for k, step in enumerate(plan.phases["before_loop"]):
            self.step(step, ("before_loop", k), indent, None, "before")
            self.emit(indent, "grid.sync()")
        if plan.lanes:
            self.emit(1, "if (call_part == 0 or call_part == 2) and lanes == 0:")
            self.time_loop(2)
            self.emit(1, "if (call_part == 0 or call_part == 2) and lanes > 0:")
            self.lanes_loop(2)
        else:
            self.time_loop(1)
        if plan.lanes and plan.phases["after_loop"]:
            self.emit(1, "if call_part == 0 or call_part == 3:")
        for k, step in enumerate(plan.phases["after_loop"]):
            self.step(step, ("after_loop", k), indent, None, "after")
            self.emit(indent, "grid.sync()")
        body = self.lines[body_start:]
        del self.lines[body_start:]
        shared = ["sa = cuda.shared.array((BK, BM), dtype)",
                  "sb = cuda.shared.array((BK, BN), dtype)",
                  "red = cuda.shared.array(NT, dtype)"]
        if self.simulator:
            # The simulator finds a block's shared array by the line that allocates it, with a
            # check-then-set that is not atomic (numba-cuda's FakeCUDAShared.array): two of the
            # block's threads allocating at once can get two arrays, and the block then shares
            # nothing (seen: rare, grossly wrong results). One thread at a time allocates.
            shared = ["with SHARED_ALLOCATION:"] + [f"    {line}" for line in shared]
        head = ["@cuda.jit(cache=True)",
                f"def {name}({self.arguments_text()}):",
                "    grid = cuda.cg.this_grid()",
                "    tid = cuda.threadIdx.x",
                "    blk = cuda.blockIdx.x",
                "    nblk = cuda.gridDim.x",
                *(f"    {line}" for line in shared),
                "    part = cuda.local.array((TM, TN), dtype)",
                "    rb = cuda.local.array(TN, dtype)"]
        return "\n".join(head + body)

    def time_loop(self, indent: int) -> None:
        """The step schedule: the grid runs each step's rows, a grid barrier between steps."""
        plan = self.plan
        reverse = plan.kind == "backward"
        self.emit(indent, "for s in range(T):")
        self.emit(indent + 1, f"t = {'T - 1 - s' if reverse else 's'}")
        steps = plan.phases["per_step"]
        for k, step in enumerate(steps):
            self.step(step, ("per_step", k), indent + 1, "t", "step")
            if k == len(steps) - 1 and self.layout.carry_in_kernel:
                self.emit(indent + 2, "cuda.syncthreads()")
                self.carry(indent + 2, loop=False)
            else:
                self.emit(indent + 1, "grid.sync()")
        if not self.layout.carry_in_kernel:
            self.carry(indent + 1, loop=True)
        self.emit(indent + 1, "grid.sync()")

    def lanes_loop(self, indent: int) -> None:
        """The lanes schedule: each lane runs its whole time loop, to its row's length, with no
        grid barrier until the end. A lane that is a column (plan.lanes "columns") is one grid
        thread's, nothing shared; a lane that is a whole row is one block's, its threads over
        the row's columns, meeting (syncthreads) where the step kernels do and around the
        carry (a row reduction reads every column of the state the carry overwrites)."""
        plan = self.plan
        reverse = plan.kind == "backward"
        columns = plan.lanes == LANES_COLUMNS
        if columns:
            width = dim_expr(plan.lane_width)
            self.emit(indent, f"for lane in range(blk * NT + tid, chunks * B * {width}, "
                              "nblk * NT):")
            self.emit(indent + 1, f"kb = lane // {width}")
            self.emit(indent + 1, f"jl = lane - kb * {width}")
        else:
            self.emit(indent, "for kb in range(blk, chunks * B, nblk):")
        # kb: the lane's row of the step arrays, chunk k's batch row b
        self.emit(indent + 1, "k = kb // B")
        self.emit(indent + 1, "b = kb - k * B")
        self.emit(indent + 1, "t0 = k * chunk_steps")
        self.emit(indent + 1, "t1 = min(t0 + chunk_steps, lengths[b])")
        self.emit(indent + 1, "for s in range(t1 - t0):")
        self.emit(indent + 2, f"t = {'t1 - 1 - s' if reverse else 't0 + s'}")
        body = indent + 2
        lane = "column" if columns else "row"

        def over(width_expr: str) -> str:
            return "for j in range(jl, jl + 1):" if columns else \
                f"for j in range(tid, {width_expr}, NT):"
        if self.layout.records_states:
            for read, _ in plan.carried.values():
                self.emit(body, over(self.width(plan.buffers[read])))
                self.emit(body + 1, f"{ident(read)}_all[t, b, j] = {ident(read)}[kb, j]")
        for k, step in enumerate(plan.phases["per_step"]):
            CudaKernel(self, step, self.layout.kernels[("per_step", k)], body, "t", "step",
                       lane=lane).print()
        if not columns:
            self.emit(body, "cuda.syncthreads()")
        self.carry_values(body, over, "kb")
        if not columns:
            self.emit(body, "cuda.syncthreads()")
        self.emit(indent, "grid.sync()")

    def carry_values(self, indent: int, over, row: str = "b") -> None:
        """Row b's results wanted for every step that no kernel stores, then its carried
        values, each copied in a loop `over(width)` gives (its columns a thread owns); `row`
        indexes the [B, ...] step arrays (kb in the lanes loop: see flags)."""
        plan = self.plan
        for name in self.layout.captured:
            rb = plan.buffers[name]
            array, offset = self.base(rb, "t")
            index = row if array == ident(name) else "b"   # a step array, or block t of one
            self.emit(indent, over(self.width(rb)))
            self.emit(indent + 1, f"{ident(name)}_all[t, b, j] = {array}[{index}, {offset} + j]")
        for read, written in plan.carried.values():
            wb = plan.buffers[written]
            self.emit(indent, over(self.width(wb)))
            if wb.role == Role.CONSTANT:  # a state whose next value is a constant (zeros)
                src = self.constant(wb)
            else:
                array, offset = self.base(wb, "t")
                index = row if array == ident(wb.view_of or written) else "b"
                src = (f"{array}[{offset} + j]" if wb.rows == Rows.NONE
                       else f"{array}[{index}, {offset} + j]")
            self.emit(indent + 1, f"{ident(read)}[{row}, j] = {src}")

    def carry(self, indent: int, loop: bool = True) -> None:
        """End of a step: the trajectory of the states (a training forward), results wanted for
        every step that no kernel stores, then each carried value becomes the next step's. With
        `loop`, over the rows this block owns; else inside a kernel's row loop (b is set)."""
        plan = self.plan
        if loop:
            self.emit(indent, "for b in range(blk, B, nblk):")
            indent += 1
        if self.layout.records_states:  # each row's state at the start of the step, every row
            for read, _ in plan.carried.values():
                width = self.width(plan.buffers[read])
                self.emit(indent, f"for j in range(tid, {width}, NT):")
                self.emit(indent + 1, f"{ident(read)}_all[t, b, j] = {ident(read)}[b, j]")
        self.emit(indent, "if t < lengths[b]:")
        self.carry_values(indent + 1, lambda width: f"for j in range(tid, {width}, NT):")


class CudaKernel(KernelPrinter):
    """One fused kernel: each row to a block, the row's columns over the block's threads. In
    a lane (the lanes schedule) the kernel is row b's alone, b and its length the lane's:
    `lane` "column" is one thread's column jl (no barrier: nothing is shared), "row" the
    block's row."""

    def __init__(self, *args, lane: str | None = None):
        super().__init__(*args)
        self.lane = lane
        if lane is not None:
            self.step_row = "kb"

    def column_loop(self, width: str) -> str:
        if self.lane == "column":
            return "for j in range(jl, jl + 1):"
        return f"for j in range(tid, {width}, NT):"

    def columns_written(self, indent: int) -> None:
        if self.lane != "column":
            self.p.emit(indent, "cuda.syncthreads()")

    def row_total(self, local: str, indent: int) -> None:
        self.p.emit(indent, f"{local} = block_sum({local}, red, tid)")

    def row_range(self, count: str) -> str:
        return f"range(blk, {count}, nblk)"  # this block's rows

    def print(self) -> None:
        p, ind, layout = self.p, self.indent, self.layout
        if self.lane is not None:   # row b's, whose length the lane checked
            self.print_loops(layout.row_loops, ind)
            return
        if self.step.rows == Rows.NONE:  # parameter-only work: the first block does it
            p.emit(ind, "if blk == 0:")
            self.print_loops(layout.after_loops, ind + 1)
            return
        if layout.row_loops:
            self.open_row_loop(ind)
            self.print_loops(layout.row_loops, ind + 2)
        if layout.after_loops:
            # sums over every row need all rows done (the layout puts them first); what
            # follows them reads their sums
            p.emit(ind, "grid.sync()")
            sums = list(takewhile(lambda item: isinstance(item, Single)
                                  and self.ops[item.op].op == "batch_sum", layout.after_loops))
            rest = layout.after_loops[len(sums):]
            self.print_loops(sums, ind)
            if rest:
                if sums:
                    p.emit(ind, "grid.sync()")
                p.emit(ind, "if blk == 0:")
                self.print_loops(rest, ind + 1)

    def batch_sum(self, op, indent: int) -> None:
        """Each thread of the grid sums its own columns over all rows."""
        p = self.p
        (arg,) = op.args
        p.emit(indent, f"for j in range(blk * NT + tid, {dim_expr(op.shape[-1])}, "
                       "nblk * NT):")
        p.emit(indent + 1, "total = ZERO")
        p.emit(indent + 1, "for tt in range(T):")
        p.emit(indent + 2, "for b in range(B):")
        p.emit(indent + 3, "tb = tt * B + b")
        p.emit(indent + 3, "if tt < lengths[b]:")
        p.emit(indent + 4, f"total += {self.value(arg, 'j', set())}")
        p.emit(indent + 1, f"{self.stored_element(op.out, 'j')} = total")


def launch_shape(simulator: bool) -> dict:
    return SIMULATOR_LAUNCH if simulator else GPU_LAUNCH


def generate(plans: dict, dtype, dims: list[str], simulator: bool) -> tuple[str, dict]:
    """The module's source for GraphPlans {kernel name: plan}, and each kernel's Layout (its
    arguments are the kernel's, in order)."""
    dtype = np.dtype(dtype)
    suffix = "32" if dtype == np.float32 else "64"
    kernels, layouts, consts = [], {}, {}
    for name, plan in plans.items():
        layouts[name] = layout(plan, TARGET)
        printer = CudaPrinter(layouts[name], dtype, dims, simulator)
        printer.consts = consts
        kernels.append(printer.function(name))
    head = [
        '"""Generated by rnncc from a cell\'s plan for numba.cuda; do not edit (the cache '
        'regenerates it)."""',
        "import math",
        "",
        "import numpy as np",
        "from numba import cuda",
        "",
        f"dtype = np.{dtype.name}",
        "ZERO, HALF, ONE = dtype(0.0), dtype(0.5), dtype(1.0)",
    ]
    if simulator:
        head[head.index("import math"):head.index("import math") + 1] = ["import math",
                                                                       "import threading"]
        head.append("SHARED_ALLOCATION = threading.Lock()  # see the kernels' first lines")
    head += [f"{c} = dtype({value!r})" for value, c in consts.items()]
    launch = launch_shape(simulator)
    tiles = {name: launch[name] for name in ("gemm", "gemm_step")}
    largest = ", ".join(str(max(t[k] for t in tiles.values())) for k in range(4))
    helpers = HELPERS.format(f=suffix, threads=launch["threads"], bk=launch["bk"],
                             largest=largest)
    helpers += "\n\n" + "\n\n".join(
        GEMM.format(name=name, bm=bm, bn=bn, tm=tm, tn=tn)
        for name, (bm, bn, tm, tn) in tiles.items())
    return "\n".join(head + [helpers, ""] + ["\n\n\n".join(kernels)]) + "\n", layouts

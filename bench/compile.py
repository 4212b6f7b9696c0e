"""Compile time of the cpu target: cold (empty caches) and warm (a second process loading the
compiled code from the disk cache), per shipped cell, float32, against issue 16's goals.

Each measurement runs in a fresh process with its own RNNCC_CACHE_DIR and NUMBA_CACHE_DIR (as on
a fresh install).
The probe runs the cell as a first user does, on small data (T=3, B=2): a forward (infer),
then a training forward and backward. Columns:
    first result    the first forward call, from the call to its result (compiles infer)
    all three       from that call to the end of backward (infer, forward, backward compiled)
    per function    the seconds rnncc's compile log gives each; "(waited)": a large cell's
                    backward compiled in a background process while its training forward
                    compiled (cpu/ahead.py), and these are the seconds its call waited
    warm            the second process: `import rnncc` to the first result, and the import alone
    warm parts      a third process, the same path timed in parts: the libraries the path needs
                    (numpy, llvmlite's LLVM binding; one thread's calls need neither Numba nor
                    scipy.linalg), `import rnncc`, the cell's pipeline from spec to generated
                    source, and loading and calling the cached function
Goals (2 cores): lstm, gru, rnn first result <= 1.5 s, all three <= 3 s; lnlstm all three
<= 6 s; warm import to first result <= 0.4 s.

    python bench/compile.py                    # every shipped cell
    python bench/compile.py --cells lstm gru --write
    python bench/compile.py --scaling 4 8 16 32 64 128   # cost against a cell's size
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

PROBE = """
import json, logging, sys, time
start = time.perf_counter()
import numpy as np, rnncc
imported = time.perf_counter() - start
events = []
class Keep(logging.Handler):
    def emit(self, record):
        event = getattr(record, "rnncc_compile", None)
        if event is not None and event.phase == "done":
            events.append((event.function, event.seconds, event.cached, event.background))
logger = logging.getLogger("rnncc.compile")
logger.addHandler(Keep())
logger.setLevel(logging.INFO)
cell = rnncc.load(sys.argv[1])
sizes = {d: 8 for d in cell.dims}
p = cell.init_params(seed=0, dtype=np.float32, **sizes)
x = np.zeros((3, 2, *cell.shape(cell.inputs[0], **sizes)), np.float32)
first = time.perf_counter()
ys, _ = cell.forward(p, x, target="cpu")
result = time.perf_counter()
cell.backward(p, x, np.zeros_like(ys), target="cpu")
print(json.dumps({"import": imported, "first": result - first, "to_first": result - start,
                  "all": time.perf_counter() - first, "events": events}))
"""
PARTS = """
import json, sys, time
marks = [time.perf_counter()]
import numpy as np
import llvmlite.binding
marks.append(time.perf_counter())
import rnncc
marks.append(time.perf_counter())
from rnncc.backends.cpu.codegen import generate
cell = rnncc.load(sys.argv[1])
generate(cell.compiled_plans(), np.float32, cell.dims)
marks.append(time.perf_counter())
sizes = {d: 8 for d in cell.dims}
p = cell.init_params(seed=0, dtype=np.float32, **sizes)
x = np.zeros((3, 2, *cell.shape(cell.inputs[0], **sizes)), np.float32)
cell.forward(p, x, target="cpu")
marks.append(time.perf_counter())
parts = [b - a for a, b in zip(marks, marks[1:])]
print(json.dumps(dict(zip(["libraries", "rnncc", "pipeline", "call"], parts))))
"""
# --scaling: cells of k chained gates, the cold compile of their three functions against their
# size (the ops of the step graph and of its derivative)
SCALING = """
import json, sys, time
import numpy as np, rnncc
k = int(sys.argv[1])
lines = ["cell chain", "input x[I]", "state h[H]", "a0 = tanh(W @ x + U @ h + b)"]
lines += [f"a{j} = sigmoid(v{j} * a{j - 1} + h) * a{j - 1}" for j in range(1, k)]
lines.append(f"h' = a{k - 1}")
cell = rnncc.compile("\\n".join(lines) + "\\n")
ops = len(cell.graph) + len(cell.backward_graph)
p = cell.init_params(seed=0, dtype=np.float32, I=8, H=8)
x = np.zeros((3, 2, 8), np.float32)
start = time.perf_counter()
ys, _ = cell.forward(p, x, target="cpu")
cell.backward(p, x, np.zeros_like(ys), target="cpu")
print(json.dumps({"ops": ops, "all": time.perf_counter() - start}))
"""
SCALING_HEADER = "| gates | ops (step graph + derivative) | all three s | ms per op |"
GOALS = {"first": 1.5, "all": 3.0}
GOALS_BY_CELL = {"lnlstm": {"all": 6.0}}
WARM_GOAL = 0.4


def probe(cell: str, cache: str, script: str = PROBE) -> dict:
    env = {**os.environ, "RNNCC_CACHE_DIR": cache, "NUMBA_CACHE_DIR": str(Path(cache) / "numba")}
    done = subprocess.run([sys.executable, "-c", script, cell], capture_output=True, text=True,
                          env=env, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.splitlines()[-1])


HEADER = ("| cell | cold: first result s | all three s | infer s | forward s | backward s "
          "| warm: import to first result s | import s | warm parts: numpy, llvmlite s "
          "| import rnncc s | pipeline s | load, call s | goals met |")


def goals(name: str, cold: dict, warm: dict) -> str:
    limits = {**GOALS, **GOALS_BY_CELL.get(name, {})}
    if name == "lnlstm":
        limits.pop("first")   # its goal is the three functions' total alone
    missed = [f"{what} {cold[what]:.1f} > {limit}" for what, limit in limits.items()
              if cold[what] > limit]
    if warm["to_first"] > WARM_GOAL:
        missed.append(f"warm {warm['to_first']:.2f} > {WARM_GOAL}")
    return "yes" if not missed else "no: " + ", ".join(missed)


def main(argv=None) -> int:
    import rnncc
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=rnncc.shipped())
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument("--scaling", nargs="*", type=int, metavar="GATES",
                        help="instead: cells of this many chained gates (default 4 8 16 32 "
                             "64), cold, against their number of ops")
    args = parser.parse_args(argv)
    if args.scaling is not None:
        return scaling(args, argv)
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    rows = []
    for name in args.cells:
        with tempfile.TemporaryDirectory() as cache:
            cold, warm = probe(name, cache), probe(name, cache)
            parts = probe(name, cache, PARTS)
        seconds = {f: f"{s:.1f}" + (" (waited)" if background else "")
                   for f, s, cached, background in cold["events"]}
        assert not any(cached and not background for *_, cached, background in cold["events"])
        assert all(cached and not background for *_, cached, background in warm["events"])
        row = (f"| {name} | {cold['first']:.1f} | {cold['all']:.1f} | {seconds['infer']} | "
               f"{seconds['forward']} | {seconds['backward']} | "
               f"{warm['to_first']:.2f} | {warm['import']:.2f} | {parts['libraries']:.2f} | "
               f"{parts['rnncc']:.2f} | {parts['pipeline']:.2f} | {parts['call']:.2f} | "
               f"{goals(name, cold, warm)} |")
        print(row, flush=True)
        rows.append(row)
    if args.write:
        import llvmlite
        machine = (f"{harness.cpu_model()}, {os.cpu_count()} cores, float32, llvmlite "
                   f"{llvmlite.__version__}")
        harness.record("compile.py", argv, HEADER, rows, machine,
                       "one cold, one warm and one warm-in-parts process per cell, with empty "
                       "caches of their own (rnncc's and Numba's) at the cold one; seconds from "
                       "the probe's clock and rnncc's compile log")
    return 0


def scaling(args, argv) -> int:
    """Cold compile time against a cell's size: linear if ms per op stays level."""
    print(SCALING_HEADER)
    print("|" + "---|" * (SCALING_HEADER.count("|") - 1))
    rows = []
    for gates in args.scaling or [4, 8, 16, 32, 64]:
        with tempfile.TemporaryDirectory() as cache:
            run = probe(str(gates), cache, SCALING)
        row = (f"| {gates} | {run['ops']} | {run['all']:.2f} | "
               f"{run['all'] / run['ops'] * 1e3:.2f} |")
        print(row, flush=True)
        rows.append(row)
    if args.write:
        harness.record("compile.py", argv, SCALING_HEADER, rows,
                       f"{harness.cpu_model()}, {os.cpu_count()} cores, float32",
                       "one cold process per cell (empty caches), its three functions "
                       "(infer, training forward, backward) on one thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())

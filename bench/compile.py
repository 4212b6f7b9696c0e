"""Compile time of the cpu target: cold (an empty cache) and warm (a second process loading
the compiled code from the disk cache), per shipped cell and function, float32.

Each measurement runs in a fresh process with its own RNNCC_CACHE_DIR; the seconds are the
ones rnncc's compile log reports (rnncc.compile), so they hold compiling or loading alone,
not the calls.

    python bench/compile.py                    # every shipped cell
    python bench/compile.py --cells lstm gru --write
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
            events.append((event.function, event.seconds, event.cached))
logger = logging.getLogger("rnncc.compile")
logger.addHandler(Keep())
logger.setLevel(logging.INFO)
cell = rnncc.load(sys.argv[1])
sizes = {d: 8 for d in cell.dims}
p = cell.init_params(seed=0, dtype=np.float32, **sizes)
x = np.zeros((3, 2, *cell.shape(cell.inputs[0], **sizes)), np.float32)
first = time.perf_counter()
ys, _ = cell.forward(p, x, target="cpu")
cell.backward(p, x, np.zeros_like(ys), target="cpu")
print(json.dumps({"import": imported, "all": time.perf_counter() - first, "events": events}))
"""


def probe(cell: str, cache: str) -> dict:
    env = {**os.environ, "RNNCC_CACHE_DIR": cache}
    done = subprocess.run([sys.executable, "-c", PROBE, cell], capture_output=True, text=True,
                          env=env, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.splitlines()[-1])


HEADER = ("| cell | cold: infer s | forward s | backward s | cold total s | warm: load all s "
          "| warm: import rnncc s |")


def main(argv=None) -> int:
    import rnncc
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=rnncc.shipped())
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    rows = []
    for name in args.cells:
        with tempfile.TemporaryDirectory() as cache:
            cold, warm = probe(name, cache), probe(name, cache)
        seconds = {f: s for f, s, cached in cold["events"]}
        assert not any(cached for *_, cached in cold["events"])
        loaded = sum(s for _, s, _ in warm["events"])
        row = (f"| {name} | {seconds['infer']:.1f} | {seconds['forward']:.1f} | "
               f"{seconds['backward']:.1f} | {sum(seconds.values()):.1f} | {loaded:.2f} | "
               f"{warm['import']:.2f} |")
        print(row, flush=True)
        rows.append(row)
    if args.write:
        machine = (f"{harness.cpu_model()}, {os.cpu_count()} cores, float32, numba "
                   f"{__import__('numba').__version__}")
        harness.record("compile.py", argv, HEADER, rows, machine,
                       "one cold and one warm process per cell; seconds from rnncc's compile "
                       "log")
    return 0


if __name__ == "__main__":
    sys.exit(main())

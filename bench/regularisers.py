"""The cost of rnncc.RNN's recurrent regularisers: training (forward and backward) and eval
forward of a layer with zoneout and recurrent dropout, and with weight drop too, against the
same layer without them, on the cpu target.

All contenders in one rnncc process (bench/harness.py; nothing but rnncc runs there), rounds
interleaved, medians; the ratios are the regularised layer's time over the plain one's. A
training call draws fresh masks (rnncc's generator, float32 uniforms), so the masks' drawing
is part of the time, as it is of a training step.

    python bench/regularisers.py                       # lstm T=100, B=64, H=256
    python bench/regularisers.py --cells lstm gru --configs 100,64,256 --rounds 9 --write
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import layer_parts  # noqa: E402
import harness  # noqa: E402

ZONEOUT = {"lstm": {"h": 0.1, "c": 0.1}, "gru": {"h": 0.1}, "lnlstm": {"h": 0.1, "c": 0.1}}
OPTIONS = {
    "plain": lambda name: {},
    "zoneout+rd": lambda name: {"zoneout": ZONEOUT.get(name, {"h": 0.1}),
                                "recurrent_dropout": 0.1},
    "all three": lambda name: {"zoneout": ZONEOUT.get(name, {"h": 0.1}),
                               "recurrent_dropout": 0.1, "weight_drop": 0.1},
}
CONTENDERS = tuple(OPTIONS)
HEADER = ("| cell | T, B, I=H | pass | " + " | ".join(f"{k} ms" for k in CONTENDERS)
          + " | zoneout+rd/plain | all three/plain |")


def build(name, T, B, H, dtype, backward, threads, options):
    import rnncc
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    layer = rnncc.RNN(name, H, H, dtype=np.dtype(dtype), **OPTIONS[options](name))
    layer_parts.limit_rnncc_threads(threads)
    return layer_parts.rnncc_pass(layer, x, dy, backward)


BUILDERS = {"layer": build}


def row(workers, name, T, B, H, backward, dtype, rounds) -> list[str]:
    config = dict(name=name, T=T, B=B, H=H, dtype=dtype, backward=backward)
    med = harness.measure_in_processes(
        [(k, workers["rnncc"], "layer", {**config, "options": k}) for k in CONTENDERS], rounds)
    return [f"| {name} | {T}, {B}, {H} | {'fwd+bwd' if backward else 'eval fwd'} | "
            + " | ".join(f"{1e3 * med[k]:.4g}" for k in CONTENDERS)   # (small sizes too)
            + f" | {med['zoneout+rd'] / med['plain']:.3f} | {med['all three'] / med['plain']:.3f} |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm"])
    parser.add_argument("--configs", nargs="+", default=["100,64,256"], help="T,B,I=H")
    harness.add_run_options(parser)
    args = parser.parse_args(argv)
    cases = harness.table_cases(args, lambda workers, name, T, B, H, backward: row(
        workers, name, T, B, H, backward, args.dtype, args.rounds))
    harness.run_table(__file__, argv, args, HEADER, cases,
                      how="every contender in the one rnncc process (rnncc alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

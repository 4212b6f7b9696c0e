"""CPU benchmark: rnncc's cpu target against PyTorch and against the GEMM floor.

The measurement is `rnncc bench --vs torch --script --mixed`'s (rnncc/benchmark/bench.py: each
contender in its own process in its own best configuration, the same number of threads, rounds
interleaved, medians); this script writes its table in markdown for bench/RESULTS.md:
    rnncc           an rnncc.RNN layer on the cpu target (forward: eval mode, like torch's
                    forward under no_grad; forward+backward: training mode, then backward)
    torch           torch.nn.LSTM/GRU/RNN for the shipped cells; for the layer-norm LSTM the
                    hand-written eager module of bench/torch_cells.py (nn.LayerNorm: faster
                    than the module generated from the spec, whose statistics are written
                    out op by op); for other cells the one generated from the spec; torch's
                    defaults (torch.set_num_threads(threads) only)
    script          custom cells only: that module compiled with torch.jit.script
    floor           the matrix products of rnncc's call alone, in numpy (from its Plan)
    limit           the FLOP limit: the FLOPs of the cell's products (from rnncc's Plan) at
                    the machine's FMA peak, measured by a probe (rnncc/benchmark/floor.py) in
                    the floor's process on as many threads, the fastest of its rounds. No
                    implementation does the products faster; OpenBLAS's (the floor) may be far
                    from it
and a second row per case, "mixed": rnncc and torch in one process (torch imported first, as
in a training script), timed in turn.

    python bench/cpu.py                          # the issue's configurations, float32
    python bench/cpu.py --cells lstm --configs 100,64,256 --rounds 5 --write

--write appends the table to bench/RESULTS.md with the machine and the command. On machines
that set OPENBLAS_CORETYPE (older OpenBLAS builds needed it), unset it for the run: it makes
numpy's and SciPy's OpenBLAS (rnncc's GEMMs, the floor) run older kernels than the CPU has;
the table's machine line says which kernels each process ran.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

from rnncc.benchmark import processes  # noqa: E402
from rnncc.benchmark.bench import CONTENDERS_FILE, Case, Options, kinds, measure_case  # noqa: E402

# cells timed against a hand-written module of bench/torch_cells.py
HAND_WRITTEN = {"lnlstm": ({"factory": str(Path(__file__).with_name("torch_cells.py")),
                            "function": "lnlstm_module"}, "hand-written (bench/torch_cells.py)")}

HEADER = ("| cell | T, B, I=H | pass | process | rnncc ms | torch ms | script ms | floor ms | "
          "limit ms | rnncc/torch | rnncc/script | rnncc/floor | rnncc/limit | torch/limit |")


def rows_for(result: dict) -> list[str]:
    """A case's two rows: each contender in its own process, and the mixed process."""
    ms, ratios = result["ms"], result["ratios"]
    t = lambda k: f"{ms[k]:.2f}" if k in ms else "-"
    r = lambda k: f"{ratios[k]:.2f}" if k in ratios else "-"
    mixed_limit = lambda k: f"{ms[k] / ms['limit']:.2f}"
    head = (f"| {result['spec']} | {result['T']}, {result['B']}, {result['H']} | "
            f"{'fwd+bwd' if result['pass'] == 'forward+backward' else 'fwd'} |")
    return [f"{head} own | {t('rnncc')} | {t('torch')} | {t('script')} | {t('floor')} | "
            f"{t('limit')} | {r('rnncc/torch')} | {r('rnncc/script')} | {r('rnncc/floor')} | "
            f"{r('rnncc/limit')} | {r('torch/limit')} |",
            f"{head} mixed | {t('mixed rnncc')} | {t('mixed torch')} | - | - | - | "
            f"{r('mixed rnncc/mixed torch')} | - | - | {mixed_limit('mixed rnncc')} | "
            f"{mixed_limit('mixed torch')} |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn", "lnlstm"])
    parser.add_argument("--configs", nargs="+", default=["100,64,256", "50,128,512", "200,1,128"],
                        help="T,B,I=H triples")
    harness.add_run_options(parser)
    args = parser.parse_args(argv)
    options = Options(rounds=args.rounds, threads=args.threads, dtype=args.dtype,
                      vs_torch=True, script=True, mixed=True, torch_modules=HAND_WRITTEN)
    cases = [Case(name, T, B, H, backward)
             for name in args.cells
             for T, B, H in (map(int, config.split(",")) for config in args.configs)
             for backward in ([False] if args.no_backward else [False, True])]
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    rows = []
    workers = processes.start_workers(CONTENDERS_FILE, args.threads, kinds(options))
    try:
        with tempfile.TemporaryDirectory(prefix="rnncc-bench-") as folder:
            for case in cases:
                for row in rows_for(measure_case(workers, case, options, Path(folder))):
                    print(row, flush=True)
                    rows.append(row)
        if args.write:
            harness.record(Path(__file__).name, argv, HEADER, rows,
                           harness.machine(workers, args),
                           f"medians of {args.rounds} interleaved rounds; each contender in its "
                           f"own process, and a mixed process (rnncc and torch in one) per case")
    finally:
        processes.close_workers(workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `rnncc` command: show a cell's graph, run a cell on random data, check its gradients,
compile it ahead of time, and show or empty the compiled-code cache.

Exit codes: 0 success, 1 a bad spec or a failed run (message on stderr), 2 bad usage.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from .version import __version__
from . import backends
from .backends import disk_cache
from .backends.cuda.device import CudaUnavailableError
from .errors import SpecError, SpecWarning
from .graph import FORMATS
from .runtime import compile as compile_cell
from .passes import PASS_NAMES
from .plan.plan import SCHEDULES
from .runtime.cell import STAGES
from .runtime import load, shipped
from .runtime.gradcheck import check_gradients, default_sizes, random_problem
from .runtime.precompile import precompile

# option names a dimension cannot take as --NAME (use --dims NAME=N for those)
_RUN_OPTIONS = {"T", "B", "dims", "seed", "dtype", "target", "ragged", "repeat", "help", "h"}


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= minimum, else a usage error naming `what`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _dims(text: str) -> dict:
    sizes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=SIZE, got {item!r}")
        sizes[name.strip()] = _positive_int(value.strip())
    return sizes


def _open(spec: str):
    """A spec file path, or the name of a shipped spec; its lint warnings go to stderr."""
    path = Path(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)   # printed below, once, by us
        if path.is_file():
            cell = compile_cell(path)
        elif spec in shipped():
            cell = load(spec)
        else:
            raise FileNotFoundError(f"no spec file {spec!r} (and no shipped spec of that name; "
                                    f"shipped: {', '.join(shipped())})")
    for warning in cell.warnings:
        print(warning, file=sys.stderr)
    return cell


def _show(args, extra, parser) -> int:
    cell = _open(args.spec)
    sys.stdout.write(cell.show(args.format, stage=args.stage))
    return 0


def _check(args, extra, parser) -> int:
    cell = _open(args.spec)
    sizes = _sizes(cell, args.dims or {}, extra, parser, defaults=default_sizes(cell))
    prob = random_problem(cell, sizes, T=args.T, B=args.B, seed=args.seed, ragged=args.ragged)
    lengths = "" if prob.lengths is None else f"; lengths {prob.lengths.tolist()}"
    print(f"rnncc check {args.spec}: cell {cell.name}; dims "
          f"{', '.join(f'{d}={sizes[d]}' for d in cell.dims)}; T={args.T}, B={args.B}{lengths}; "
          f"float64; BPTT against central finite differences")
    report = check_gradients(cell, prob, target=args.target)
    print(report.text())
    return 0 if report.passed else 1


def _sizes(cell, sizes: dict, extra: list, parser, defaults: dict | None = None) -> dict:
    """Dimension sizes from --dims and --NAME N options; `defaults` fill the ones not given."""
    sizes = dict(sizes)
    if extra:
        dim_parser = argparse.ArgumentParser(prog=parser.prog, add_help=False)
        for dim in cell.dims:
            if dim not in _RUN_OPTIONS:
                dim_parser.add_argument(f"--{dim}", type=_positive_int, metavar="N")
        dim_args, unknown = dim_parser.parse_known_args(extra)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)} (cell {cell.name} has "
                         f"dimensions {', '.join(cell.dims)})")
        for dim, value in vars(dim_args).items():
            if value is not None:
                if dim in sizes and sizes[dim] != value:
                    parser.error(f"dimension {dim} given twice: {sizes[dim]} and {value}")
                sizes[dim] = value
    unknown = [d for d in sizes if d not in cell.dims]
    if unknown:
        parser.error(f"cell {cell.name} has no dimension {', '.join(unknown)} (its dimensions: "
                     f"{', '.join(cell.dims)})")
    for dim, size in (defaults or {}).items():
        sizes.setdefault(dim, size)
    missing = [d for d in cell.dims if d not in sizes]
    if missing:
        hint = " ".join(f"--{d} N" for d in missing)
        parser.error(f"cell {cell.name} needs a size for every dimension: missing "
                     f"{', '.join(missing)} (e.g. {hint}, or --dims "
                     f"{','.join(d + '=N' for d in missing)})")
    return sizes


def _run(args, extra, parser) -> int:
    cell = _open(args.spec)
    sizes = _sizes(cell, args.dims or {}, extra, parser)
    dtype = np.dtype(args.dtype)
    p = cell.init_params(seed=args.seed, dtype=dtype, **sizes)
    rng = np.random.default_rng(args.seed + 1)
    xs = {name: rng.standard_normal((args.T, args.B, *cell.shape(name, **sizes))).astype(dtype)
          for name in cell.inputs}
    x = xs if len(xs) > 1 else next(iter(xs.values()))
    # The first call compiles (or loads from the disk cache) the function it runs; it is timed
    # on its own, and the run time is the median of the calls after it.
    start = time.perf_counter()
    ys, final = cell.forward(p, x, target=args.target, schedule=args.schedule)
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        cell.forward(p, x, target=args.target, schedule=args.schedule)
        times.append(time.perf_counter() - start)
    elapsed = statistics.median(times) if times else None

    def shape(a) -> str:
        return "[" + ", ".join(map(str, a.shape)) + "]"

    def checksum(a) -> str:
        a64 = a.astype(np.float64)
        return f"sum {a64.sum():+.6e}  mean|.| {np.abs(a64).mean():.6e}"

    n_values = sum(v.size for v in p.values())
    print(f"cell {cell.name}: inputs {', '.join(cell.inputs)}; states {', '.join(cell.states)}; "
          f"output {cell.output}")
    # the compiled targets run the plan's schedules; the numpy ones step by step
    compiled = backends.get(args.target).prints_source
    schedule = backends.get(args.target).schedule(cell.inference_plan, args.T, args.B, sizes,
                                                  args.schedule)
    schedule = f"schedule {schedule}; " if compiled else ""
    print(f"dims {', '.join(f'{d}={sizes[d]}' for d in cell.dims)}; T={args.T}, B={args.B}; "
          f"{dtype}; target {args.target}; {schedule}seed {args.seed}")
    print(f"params   {len(p)} arrays, {n_values} values: "
          + ", ".join(f"{k} {shape(v)}" for k, v in p.items()))
    for name, array in xs.items():
        print(f"input    {name} {shape(array):<16} {checksum(array)}")
    print(f"output   ys {shape(ys):<15} {checksum(ys)}")
    for name, array in final.items():
        print(f"final    {name} {shape(array):<16} {checksum(array)}")
    print(f"first    {first:.3f} s (the first call: compiles or loads the code, then runs)")
    if elapsed is not None:
        print(f"forward  {1e3 * elapsed:.3f} ms, median of {args.repeat} calls after the first "
              f"({1e3 * elapsed / max(args.T, 1):.4f} ms per step)")
    return 0


def _names(choices, what: str):
    """An argparse type: a comma-separated list of some of `choices`."""
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        wrong = [n for n in names if n not in choices]
        if not names or wrong:
            raise argparse.ArgumentTypeError(
                f"expected {what} from {', '.join(choices)} (comma-separated), got {text!r}")
        return names
    return parse


def _compile(args, extra, parser) -> int:
    rows, start = [], time.perf_counter()
    jobs = len(args.dtype) * sum(len(backends.get(t).variants) for t in args.target)
    for spec in args.spec:
        cell = _open(spec)
        if min(jobs, args.jobs) > 1:   # the jobs' processes log nothing here until each ends
            print(f"rnncc: compiling {cell.name}: {jobs} jobs (dtype, target, variant) in "
                  f"{min(jobs, args.jobs)} processes ...", file=sys.stderr, flush=True)
        for event in precompile(cell, args.dtype, args.target, jobs=args.jobs):
            function = f"{event.function} ({event.variant})" if event.variant else event.function
            rows.append((cell.name, event.dtype, event.target, function,
                         f"{event.seconds:.2f}", "loaded" if event.cached else "compiled"))
    _table(("cell", "dtype", "target", "function", "seconds", ""), rows)
    print(f"{len(rows)} functions in {time.perf_counter() - start:.1f} s; "
          f"cache: {disk_cache.cache_dir()}")
    return 0


def _bench(args, extra, parser) -> int:
    if (args.script or args.mixed) and args.vs != "torch":
        parser.error("--script and --mixed compare with PyTorch: add --vs torch")
    specs = []
    for spec in args.spec:   # a bad spec fails here, before any process starts
        cell = _open(spec)
        from .runtime.layer import RNN   # its size checks, with the layer's words
        RNN(cell, args.I or args.H[0], args.H[0], **(args.dims or {}))
        specs.append(str(Path(spec).resolve()) if Path(spec).is_file() else spec)
    args.spec = specs
    import importlib.util
    if args.vs == "torch" and importlib.util.find_spec("torch") is None:
        raise ValueError("--vs torch needs PyTorch: pip install 'rnncc[torch]'")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib: pip install 'rnncc[plot]'")
    from .benchmark.bench import run_command
    return run_command(args, "rnncc bench " + " ".join(args.argv))


def _study(args, extra, parser) -> int:
    import importlib.util
    missing = [m for m in ("torch", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"rnncc study needs {' and '.join(missing)}: pip install "
                         f"'rnncc[study]'")
    from .runtime.layer import RNN
    specs = []
    for spec in args.cells:   # a bad spec fails here, before anything runs
        cell = _open(spec)
        try:   # the study sizes a cell by its input and hidden size alone
            RNN(cell, 2, 4)
        except ValueError as exc:
            raise ValueError(f"the study runs cells of one input sized apart from the hidden "
                             f"size, and no other dimension; {spec}: {exc}") from None
        specs.append(str(Path(spec).resolve()) if Path(spec).is_file() else spec)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .study import report as study_report
    from .study.run import FULL, QUICK, run, save
    out = Path(args.out)
    start = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total}"), TimeElapsedColumn(),
            console=Console(stderr=True)) as progress:
        results = run(specs, QUICK if args.quick else FULL, seed=args.seed, progress=progress)
    results["command"] = "rnncc study " + " ".join(args.argv)
    results["seconds"] = time.perf_counter() - start
    save(results, out)
    study_report.write(results, out)
    print(f"rnncc study: {out / 'REPORT.md'}, {out / 'results.json'} and "
          f"{len(study_report.FIGURES)} figures in {results['seconds']:.0f} s")
    return 0


def _table(header, rows) -> None:
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _cache(args, extra, parser) -> int:
    directory = disk_cache.cache_dir()
    if args.action == "clear":
        removed, size = disk_cache.clear(directory)
        print(f"removed {removed} generated modules and their compiled code "
              f"({_megabytes(size)}) from {directory}")
        return 0
    found = disk_cache.modules(directory)
    print(f"cache: {directory} (RNNCC_CACHE_DIR moves it)")
    compiled = sum(len(m.compiled) for m in found)
    print(f"{len(found)} generated modules, {compiled} compiled functions, "
          f"{_megabytes(sum(m.bytes for m in found))}")
    if found:
        _table(("cells", "target", "dtype", "compiled functions", "module"),
               [(", ".join(m.cells) or "?", m.target, m.dtype,
                 ", ".join(sorted(m.compiled)) or "-", m.path.name) for m in found])
    return 0


def _common_options(command: argparse.ArgumentParser, T: int, B: int, target: str) -> None:
    """What `run` and `check` both take: the spec, sizes, sequence shape, seed and target."""
    command.add_argument("spec", metavar="SPEC", help="a .cell file, or a shipped spec's name")
    command.add_argument("--dims", type=_dims, metavar="NAME=N,...", help="dimension sizes")
    command.add_argument("--T", type=_positive_int, default=T, help=f"time steps (default {T})")
    command.add_argument("--B", type=_positive_int, default=B, help=f"batch rows (default {B})")
    command.add_argument("--seed", type=int, default=0, help="parameter and data seed (default 0)")
    command.add_argument("--target", default=target,
                         help=f"backend: reference, plan, cpu or cuda (default {target})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnncc", description="rnncc compiles recurrent-cell specs (gate equations) into "
        "forward and backward kernels.")
    parser.add_argument("--version", action="version", version=f"rnncc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = commands.add_parser("show", help="print a cell's step graph",
                               description="Print the step graph a spec becomes.")
    show.add_argument("spec", metavar="SPEC", help="a .cell file, or a shipped spec's name")
    show.add_argument("--format", choices=list(FORMATS), default="text",
                      help="text (one line per node), dot (Graphviz) or json")
    show.add_argument("--stage", choices=list(STAGES), default="forward", metavar="STAGE",
                      help="forward (the graph the spec becomes), backward (its derivative), a "
                      "pass name (the forward graph after it; backward:NAME the backward one), "
                      f"plan, cpu (the generated Numba source) or cuda (the generated numba.cuda "
                      f"source). Passes: {', '.join(PASS_NAMES)}")
    show.set_defaults(func=_show, subparser=show)

    run = commands.add_parser(
        "run", help="run a cell on random data",
        description="Run a cell over random data and print shapes and checksums. Give every "
        "dimension of the spec a size, as --NAME N (e.g. --I 32 --H 64) or --dims I=32,H=64.",
        epilog="example: rnncc run specs/lstm.cell --I 32 --H 64 --T 100 --B 16")
    _common_options(run, T=10, B=4, target="cpu")
    run.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    run.add_argument("--repeat", type=_non_negative_int, default=5, metavar="N",
                     help="timed calls after the first (default 5; their median is reported)")
    run.add_argument("--schedule", choices=list(SCHEDULES),
                     help="the time loop's schedule (default: the plan's; `rnncc show SPEC "
                          "--stage plan` lists a cell's)")
    run.set_defaults(func=_run, subparser=run)

    check = commands.add_parser(
        "check", help="check a cell's gradients against finite differences",
        description="Run forward and backward in float64 on random data and compare every "
        "gradient (parameters, inputs, initial states) with central finite differences. Prints "
        "each one's worst relative error, then PASS, or FAIL with exit status 1. Dimensions "
        "default to small distinct sizes (3, 4, ...); set them with --NAME N or --dims.",
        epilog="example: rnncc check specs/gru.cell --dims I=3,H=4 --T 5 --B 2")
    _common_options(check, T=5, B=2, target="reference")
    check.add_argument("--ragged", action="store_true",
                       help="give the rows different lengths (row 0 runs all T steps)")
    check.set_defaults(func=_check, subparser=check)

    compile_ = commands.add_parser(
        "compile", help="compile cells ahead of time into the cache",
        description="Compile every function of each cell (forward, backward, infer; on the "
        "cpu target each in its threaded and one-thread variants) for the given dtypes and "
        "targets, into the disk cache, so later processes load them instead of compiling. "
        "Prints what it compiled (or found compiled) and how long each took; the seconds are "
        "each compiling process's own, and they run --jobs at a time.",
        epilog="example: rnncc compile specs/lstm.cell gru --dtype float32,float64")
    compile_.add_argument("spec", metavar="SPEC", nargs="+",
                          help="a .cell file, or a shipped spec's name")
    compile_.add_argument("--dtype", type=_names(["float32", "float64"], "dtypes"),
                          default=["float32"], help="float32 (default), float64 or both")
    compile_.add_argument("--target", type=_names(["cpu", "cuda"], "targets"),
                          default=["cpu"], help="cpu (default), cuda or both")
    compile_.add_argument("--jobs", type=_positive_int, default=os.cpu_count() or 1,
                          metavar="N", help="processes compiling at once (default: one per "
                          "core); each takes a dtype, target and variant")
    compile_.set_defaults(func=_compile, subparser=compile_)

    bench = commands.add_parser(
        "bench", help="time cells against PyTorch and the hardware floor",
        description="Time each cell's forward and forward+backward on the cpu target against "
        "its matrix products alone in numpy (the BLAS floor), against those products' FLOPs "
        "at this machine's measured FMA peak (the limit) and, with --vs torch, against "
        "PyTorch: torch.nn.RNN/GRU/LSTM for the shipped rnn, rnn_relu, gru and lstm, else the "
        "cell's eager PyTorch module generated from the spec (its equations as written, a "
        "Python loop of torch ops over the steps, input products hoisted). Each contender "
        "runs in a process of its own with the same threads, rounds interleaved; medians "
        "and their ratios (below 1: rnncc is faster). I = H unless --I is given.",
        epilog="example: rnncc bench lstm specs/mgu.cell --T 100 --B 1 64 --H 256 --vs torch "
               "--plot ratios.png")
    bench.add_argument("spec", metavar="SPEC", nargs="+",
                       help="a .cell file, or a shipped spec's name")
    bench.add_argument("--T", type=_positive_int, nargs="+", default=[100], metavar="T",
                       help="time steps, one or more (default 100)")
    bench.add_argument("--B", type=_positive_int, nargs="+", default=[1, 64], metavar="B",
                       help="batch rows, one or more (default 1 64)")
    bench.add_argument("--H", type=_positive_int, nargs="+", default=[256], metavar="H",
                       help="hidden sizes, one or more (default 256)")
    bench.add_argument("--I", type=_positive_int, metavar="N", help="input size (default H)")
    bench.add_argument("--dims", type=_dims, metavar="NAME=N,...",
                       help="sizes of the spec's other dimensions")
    bench.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    bench.add_argument("--vs", choices=["torch"], help="also time PyTorch (needs torch)")
    bench.add_argument("--script", action="store_true",
                       help="with --vs torch: also the torch module through torch.jit.script")
    bench.add_argument("--mixed", action="store_true",
                       help="with --vs torch: also rnncc and torch timed in one process, as a "
                            "training script has them")
    bench.add_argument("--no-backward", action="store_true", help="forward only")
    bench.add_argument("--rounds", type=_positive_int, default=7, metavar="N",
                       help="interleaved rounds; medians are reported (default 7)")
    bench.add_argument("--threads", type=_positive_int, default=os.cpu_count() or 1,
                       metavar="N", help="threads for every contender (default: every core)")
    bench.add_argument("--json", action="store_true",
                       help="print the report as JSON on stdout (the table goes nowhere, "
                            "progress to stderr)")
    bench.add_argument("--plot", metavar="FILE", help="write a bar chart of the ratios (PNG)")
    bench.set_defaults(func=_bench, subparser=bench)

    study = commands.add_parser(
        "study", help="measure RNN vs LSTM vs GRU (or any cells): cost, gradient flow, "
        "long-term dependencies",
        description="Measure cells against each other and write DIR/REPORT.md (tables, "
        "figures, one paragraph per finding saying what was measured and whether the classic "
        "claim it tests holds), DIR/results.json (every number) and PNG figures: 1. cost "
        "(parameters, FLOPs and tape per step from the Plan; time per step), 2. gradient flow "
        "(how the gradient of the last output falls with the distance to an input, by rnncc's "
        "BPTT), 3. the adding problem and the copy-memory task at several lengths, at one "
        "parameter budget, trained with Adam through rnncc.torch, 4. those runs against "
        "wall-clock time. Needs torch and matplotlib (pip install 'rnncc[study]').",
        epilog="example: rnncc study --cells rnn,gru,lstm,specs/mgu.cell --quick --out report")
    study.add_argument("--cells", type=lambda text: [c.strip() for c in text.split(",")
                                                     if c.strip()],
                       default=["rnn", "gru", "lstm"], metavar="CELL,...",
                       help="shipped spec names or .cell paths, comma-separated (default "
                            "rnn,gru,lstm)")
    study.add_argument("--quick", action="store_true",
                       help="small sizes, short training, few seeds: a few minutes on 2 cores "
                            "(the full run takes about an hour)")
    study.add_argument("--out", default="study", metavar="DIR",
                       help="where the report goes (default ./study)")
    study.add_argument("--seed", type=int, default=0, help="the runs' seed (default 0)")
    study.set_defaults(func=_study, subparser=study)

    cache = commands.add_parser(
        "cache", help="show or empty the cache of compiled cells",
        description="info: where the cache is, and the generated modules and compiled "
        "functions in it; clear: remove them (only rnncc's files).")
    cache.add_argument("action", choices=["info", "clear"])
    cache.set_defaults(func=_cache, subparser=cache)
    return parser


class CompileProgress(logging.Handler):
    """Shows compilations (rnncc.backends.compile_log) on stderr while they run: on a terminal a
    line with a spinner and the seconds so far, replaced by the result; elsewhere one line when
    a compilation starts and one when it ends."""

    FRAMES = "|/-\\"

    def __init__(self, stream=None):
        super().__init__(logging.INFO)
        self.stream = stream or sys.stderr
        self._stop: threading.Event | None = None
        self._spinner: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "rnncc_compile", None)
        if event is None:
            return
        tty = getattr(self.stream, "isatty", lambda: False)()
        if event.phase == "background":   # it ends while other lines come: no spinner
            self.stream.write(("\r\033[K" if self._spinner is not None else "")
                              + f"rnncc: {event.describe()}\n")
            self.stream.flush()
            return
        if event.phase == "start":
            if not tty:
                self.stream.write(f"rnncc: {event.describe()}\n")
                self.stream.flush()
                return
            self._stop = threading.Event()
            self._spinner = threading.Thread(target=self._spin, args=(event.describe(),),
                                             daemon=True)
            self._spinner.start()
            return
        if self._spinner is not None:
            self._stop.set()
            self._spinner.join()
            self._spinner = None
        self.stream.write(("\r\033[K" if tty else "") + f"rnncc: {event.describe()}\n")
        self.stream.flush()

    def _spin(self, text: str) -> None:
        start = time.perf_counter()
        frame = 0
        while not self._stop.wait(0.1):
            self.stream.write(f"\r{self.FRAMES[frame % 4]} rnncc: {text} "
                              f"{time.perf_counter() - start:.0f} s")
            self.stream.flush()
            frame += 1


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])
    if extra and args.command not in ("run", "check"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    progress = CompileProgress()
    logger = logging.getLogger("rnncc.compile")
    level = logger.level
    logger.addHandler(progress)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        return args.func(args, extra, args.subparser)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (ValueError, KeyError, OSError, CudaUnavailableError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"rnncc: error: {message}", file=sys.stderr)
        return 1
    finally:
        logger.removeHandler(progress)
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())

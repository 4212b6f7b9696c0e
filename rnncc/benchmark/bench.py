"""Kernel benchmark runs of any cell: `rnncc bench` (and bench/cpu.py, a user of the same code).

For each case (spec, T, B, H with I = H, forward or forward+backward) the contenders run in
processes of their own (processes.py), rounds interleaved, and the medians are reported with
their ratios:

    rnncc           an rnncc.RNN layer on the cpu target (contenders.py)
    floor           the call's matrix products alone, in numpy (the BLAS floor)
    limit           the FLOPs of those products at the machine's FMA peak, measured by a probe
                    in the floor's process on as many threads (the fastest of its rounds)
    torch           with vs_torch: torch.nn.RNN/GRU/LSTM for the shipped rnn, rnn_relu, gru and
                    lstm, else the cell's eager PyTorch module generated from the spec
                    (interop/torch_source.py: the spec's equations as written, in torch)
    script          with script: that module through torch.jit.script (the eager modules:
                    TorchScript is how such a module is usually sped up)
    mixed           with mixed: rnncc and torch timed in one process (torch imported first,
                    as in a training script)

    results = measure(cases, Options(...))   # a dict per case: times (ms), ratios, facts
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import processes
from .contenders import TORCH_NN

CONTENDERS_FILE = Path(__file__).with_name("contenders.py")
PASSES = {False: "forward", True: "forward+backward"}


@dataclass(frozen=True)
class Case:
    spec: str                 # a shipped spec's name or a spec file's path
    T: int
    B: int
    H: int
    backward: bool
    I: int | None = None      # default H
    dims: dict = field(default_factory=dict)   # the spec's other dimensions

    @property
    def input_size(self) -> int:
        return self.H if self.I is None else self.I


@dataclass
class Options:
    rounds: int = 7
    threads: int = 1
    dtype: str = "float32"
    vs_torch: bool = False
    script: bool = False          # also the torch module through torch.jit.script
    mixed: bool = False           # also rnncc and torch in one process
    # spec -> the torch module to time instead of the automatic one (contenders.torch_module's
    # description, e.g. bench/torch_cells.py's hand-written layer-norm LSTM)
    torch_modules: dict = field(default_factory=dict)


def torch_counterpart(case: Case, dtype, folder: Path) -> tuple[dict, str]:
    """(contenders.torch_module's description, what it is) of the torch module timed against
    the case's cell: torch.nn's own where PyTorch has the cell (same equations, interop's
    weight mapping), else the cell's eager module written into `folder` as a standalone file
    with the parameters rnncc's layer draws (seed 0)."""
    from ..interop.pytorch import _layout
    from ..interop.torch_source import module_file
    from ..runtime.layer import RNN, _as_cell
    cell = _as_cell(case.spec)
    if cell.name in TORCH_NN:
        try:
            _layout(cell)
            name, options = TORCH_NN[cell.name]
            return {"nn": name, "options": options}, f"torch.nn.{name}"
        except ValueError:   # the name of a shipped cell, other equations
            pass
    layer = RNN(cell, case.input_size, case.H, dtype=np.dtype(dtype), seed=0, **case.dims)
    stem = f"{cell.name}_{case.input_size}_{case.H}_{len(list(folder.iterdir()))}"
    path = folder / f"{stem}.py"
    path.write_text(module_file(cell, layer.sizes))
    params = folder / f"{stem}.npz"
    np.savez(params, **{name: np.asarray(layer.params[name + "_l0"]) for name in cell.params})
    return {"file": str(path), "params": str(params)}, "eager (spec)"


def _ratio(times: dict, a: str, b: str):
    return times[a] / times[b] if a in times and b in times else None


def measure_case(workers: dict, case: Case, options: Options, folder: Path,
                 progress=None) -> dict:
    """One case's contenders, set up and timed (see the module doc): its result dict."""
    config = dict(spec=case.spec, T=case.T, B=case.B, I=case.input_size, H=case.H,
                  dims=case.dims, dtype=options.dtype, backward=case.backward)
    first = [("rnncc", workers["rnncc"], "rnncc", config)]
    facts = processes.setup(first)
    found = facts["rnncc"]
    out = found["output_size"]
    rest = [("floor", workers["floor"], "floor",
             {"products": found["products"], "dtype": options.dtype}),
            ("peak", workers["floor"], "peak", {"dtype": options.dtype})]
    torch_is = None
    if options.vs_torch or options.mixed:
        module, torch_is = options.torch_modules.get(case.spec) or torch_counterpart(
            case, options.dtype, folder)
        torch_config = dict(config, module=module, out=out)
    if options.vs_torch:
        rest.append(("torch", workers["torch"], "torch", torch_config))
        if options.script and "nn" not in module:   # (torch.nn's modules run their own kernels)
            rest.append(("script", workers["torch"], "torch", dict(torch_config, script=True)))
    if options.mixed:   # torch set up (imported) first, as in a training script
        rest += [("mixed torch", workers["mixed"], "torch", torch_config),
                 ("mixed rnncc", workers["mixed"], "rnncc", config)]
    facts.update(processes.setup(rest))
    medians, best = processes.time_rounds(first + rest, options.rounds, progress)
    peak = facts["peak"]["flops"] / best["peak"]   # FLOP/s
    seconds = {k: v for k, v in medians.items() if k != "peak"}
    seconds["limit"] = found["flops"] / peak
    ratios = {f"{a}/{b}": r for a, b in (("rnncc", "torch"), ("rnncc", "script"),
                                         ("rnncc", "floor"), ("rnncc", "limit"),
                                         ("torch", "limit"), ("mixed rnncc", "mixed torch"))
              if (r := _ratio(seconds, a, b)) is not None}
    return {"spec": case.spec, "T": case.T, "B": case.B, "I": case.input_size, "H": case.H,
            "dims": case.dims, "pass": PASSES[case.backward],
            "ms": {k: 1e3 * v for k, v in seconds.items()}, "ratios": ratios,
            "torch_module": torch_is, "flops": found["flops"], "peak_gflops": peak / 1e9}


def kinds(options: Options) -> tuple:
    """The worker processes a run needs."""
    return ("rnncc", "floor") + (("torch",) if options.vs_torch else ()) \
        + (("mixed",) if options.mixed else ())


def measure(cases: list, options: Options, on_result=None, progress=None) -> dict:
    """Every case measured (on_result(result) after each): the report, a dict with the
    machine, the options and a result per case."""
    workers = processes.start_workers(CONTENDERS_FILE, options.threads, kinds(options))
    try:
        results = []
        with tempfile.TemporaryDirectory(prefix="rnncc-bench-") as folder:
            for case in cases:
                results.append(measure_case(workers, case, options, Path(folder), progress))
                if on_result is not None:
                    on_result(results[-1])
        machine = processes.machine(workers, options.threads, options.dtype)
    finally:
        processes.close_workers(workers)
    return {"machine": machine, "cpu": processes.cpu_model(),
            "options": {k: v for k, v in asdict(options).items() if k != "torch_modules"},
            "results": results}


# -- the command --------------------------------------------------------------------------------

COLUMNS = [("rnncc ms", lambda r: r["ms"].get("rnncc"), "{:.4g}"),
           ("torch ms", lambda r: r["ms"].get("torch"), "{:.4g}"),
           ("floor ms", lambda r: r["ms"].get("floor"), "{:.4g}"),
           ("limit ms", lambda r: r["ms"].get("limit"), "{:.4g}"),
           ("rnncc/torch", lambda r: r["ratios"].get("rnncc/torch"), "{:.2f}"),
           ("rnncc/script", lambda r: r["ratios"].get("rnncc/script"), "{:.2f}"),
           ("rnncc/floor", lambda r: r["ratios"].get("rnncc/floor"), "{:.2f}"),
           ("rnncc/limit", lambda r: r["ratios"].get("rnncc/limit"), "{:.2f}"),
           ("mixed rnncc/torch", lambda r: r["ratios"].get("mixed rnncc/mixed torch"), "{:.2f}")]


def _label(result: dict) -> str:
    cell = Path(result["spec"]).stem
    return f"{cell} T={result['T']} B={result['B']} H={result['H']} {result['pass']}"


def table(report: dict):
    """The report as a rich Table (columns without a value in any row left out)."""
    from rich.table import Table
    rows = report["results"]
    shown = [c for c in COLUMNS if any(c[1](r) is not None for r in rows)]
    out = Table(title=f"rnncc bench: medians of {report['options']['rounds']} interleaved "
                      f"rounds, {report['options']['threads']} threads, "
                      f"{report['options']['dtype']}",
                caption=report["machine"].split(";")[0])
    for name in ("cell", "T", "B", "I=H" if all(r["I"] == r["H"] for r in rows) else "I, H",
                 "pass"):
        out.add_column(name)
    for name, *_ in shown:
        out.add_column(name, justify="right")
    if any(r["torch_module"] for r in rows):
        out.add_column("torch is")
    for r in rows:
        size = str(r["H"]) if r["I"] == r["H"] else f"{r['I']}, {r['H']}"
        cells = [Path(r["spec"]).stem, str(r["T"]), str(r["B"]), size,
                 {"forward": "fwd", "forward+backward": "fwd+bwd"}[r["pass"]]]
        cells += ["-" if get(r) is None else fmt.format(get(r)) for _, get, fmt in shown]
        if any(x["torch_module"] for x in rows):
            cells.append(r["torch_module"] or "-")
        out.add_row(*cells)
    return out


def plot(report: dict, path: str) -> None:
    """A bar chart of each case's ratios (rnncc / each contender; below 1 rnncc is faster)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = report["results"]
    names = [n for n in ("rnncc/torch", "rnncc/script", "rnncc/floor", "rnncc/limit")
             if any(n in r["ratios"] for r in rows)]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(rows) * len(names) + 2), 4.5))
    for k, name in enumerate(names):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(rows))]
        values = [r["ratios"].get(name, float("nan")) for r in rows]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, [f"{v:.2g}" if v == v else "" for v in values], fontsize=7)
    ax.set_yscale("log")   # (ratios: 2x slower and 2x faster are as far from 1)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [
        f"{Path(r['spec']).stem}\nT={r['T']} B={r['B']} H={r['H']}\n"
        f"{'fwd' if r['pass'] == 'forward' else 'fwd+bwd'}" for r in rows], fontsize=8)
    ax.set_ylabel("time ratio, log scale (below 1: rnncc faster)")
    ax.set_title(f"rnncc bench, {report['cpu']}, {report['options']['threads']} threads, "
                 f"{report['options']['dtype']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_command(args, command: str) -> int:
    """`rnncc bench` (cli.py parses the arguments; `command` is the command line)."""
    from rich.console import Console
    from rich.progress import Progress

    cases = [Case(spec, T, B, H, backward, I=args.I, dims=args.dims or {})
             for spec in args.spec for T in args.T for B in args.B for H in args.H
             for backward in ((False,) if args.no_backward else (False, True))]
    options = Options(rounds=args.rounds, threads=args.threads, dtype=args.dtype,
                      vs_torch=args.vs == "torch", script=args.script, mixed=args.mixed)
    per_case = 3 + (options.vs_torch + options.script) + 2 * options.mixed
    console = Console(stderr=args.json)
    if not console.is_terminal:   # (a file or a pipe: the whole table, not 80 columns of it)
        console = Console(stderr=args.json, width=200)
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("measuring", total=len(cases) * args.rounds * per_case)

        def done(result):
            bar.console.print(f"{_label(result)}: rnncc {result['ms']['rnncc']:.3f} ms",
                              highlight=False)
        report = measure(cases, options, on_result=done,
                         progress=lambda: bar.advance(task))
    report["command"] = command
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        console.print(table(report))
    if args.plot:
        plot(report, args.plot)
        console.print(f"plot: {args.plot}")
    return 0

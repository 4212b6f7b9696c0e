"""REPORT.md and the figures, from a study's results (run.py's dict, as in results.json).

Every number the report prints goes through `number` from the results, and each finding states
what was measured, then whether the classic claim it tests holds in these runs, does not, or
cannot be judged from them (and why).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

FIGURES = {"cost": "cost_time.png", "flow": "gradient_flow.png",
           "curves": "learning_curves.png", "seconds": "convergence_time.png"}


def number(value, digits: int = 3) -> str:
    """A number as the report prints it: `digits` significant digits, '-' for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.{digits}g}"


def _table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- figures -----------------------------------------------------------------------------------

def figures(results: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cells = results["cells"]
    colors = {c: f"C{k}" for k, c in enumerate(cells)}

    cost = results["cost"]
    Bs = sorted({r["B"] for r in cost})
    fig, axes = plt.subplots(1, len(Bs), figsize=(5 * len(Bs), 3.8), squeeze=False)
    for ax, B in zip(axes[0], Bs):
        for cell in cells:
            rows = sorted((r for r in cost if r["cell"] == cell and r["B"] == B),
                          key=lambda r: r["H"])
            for what, style in (("forward", "--"), ("forward+backward", "-")):
                ax.plot([r["H"] for r in rows], [1e6 * r["seconds"][what] for r in rows],
                        style, marker="o", color=colors[cell], label=f"{cell} {what}")
            ax.plot([r["H"] for r in rows], [1e6 * r["torch_seconds"]["forward+backward"]
                                             for r in rows], ":", marker="x",
                    color=colors[cell], alpha=0.6, label=f"{cell} fwd+bwd, torch")
        if len({r["H"] for r in cost}) > 1:
            ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden size H (I = H)")
        ax.set_ylabel("microseconds per step")
        ax.set_title(f"B = {B}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / FIGURES["cost"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in results["gradient_flow"]:
        norms = np.asarray(r["norms"])
        ax.plot(np.arange(len(norms)), norms, "-" if r["when"] == "init" else "--",
                color=colors[r["cell"]], label=f"{r['cell']} ({r['when']})")
    ax.set_yscale("log")
    ax.set_xlabel("k (steps back from the last)")
    ax.set_ylabel("|d(v . y_T) / d x_(T-k)|")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / FIGURES["flow"], dpi=110)
    plt.close(fig)

    for key, axis, label in (("curves", "step", "training step"),
                             ("seconds", "seconds", "training seconds (wall clock)")):
        runs = results["tasks"]
        panels = sorted({(r["task"], r["T"]) for r in runs})
        columns = max(1, len({T for _, T in panels if _ == panels[0][0]}))
        task_names = sorted({t for t, _ in panels})
        fig, axes = plt.subplots(len(task_names), columns, figsize=(3.6 * columns,
                                 3 * len(task_names)), squeeze=False)
        for i, task in enumerate(task_names):
            Ts = sorted(T for t, T in panels if t == task)
            threshold = results["thresholds"][task]
            for j, T in enumerate(Ts):
                ax = axes[i][j]
                for r in runs:
                    if r["task"] == task and r["T"] == T:
                        ax.plot([p[axis] for p in r["curve"]], [p["metric"] for p in r["curve"]],
                                color=colors[r["cell"]], label=r["cell"])
                ax.axhline(threshold["threshold"], color="black", linewidth=0.6, linestyle=":")
                ax.axhline(threshold["chance"], color="gray", linewidth=0.6, linestyle="--")
                ax.set_title(f"{task}, T = {T}", fontsize=9)
                ax.set_xlabel(label, fontsize=8)
                ax.set_ylabel(threshold["metric"], fontsize=8)
                if threshold["metric"] == "mse":
                    ax.set_yscale("log")
            for j in range(len(Ts), columns):
                axes[i][j].axis("off")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / FIGURES[key], dpi=110)
        plt.close(fig)


# -- findings ----------------------------------------------------------------------------------

def _verdict(holds) -> str:
    return {True: "**holds** in these measurements", False: "**does not hold** in these "
            "measurements", None: "**cannot be judged** from these runs"}[holds]


def _cost_finding(results: dict) -> str:
    rows = {(r["cell"], r["H"], r["B"]): r for r in results["cost"]}
    pairs = [(rows[("gru", H, B)], rows[("lstm", H, B)]) for (c, H, B) in rows
             if c == "gru" and ("lstm", H, B) in rows]
    if not pairs:
        return "The GRU-against-LSTM cost claim needs both cells in the run."
    ratios = [g["seconds"]["forward+backward"] / l["seconds"]["forward+backward"]
              for g, l in pairs]
    flops = [(g["flops"]["forward"]["gemm"] + g["flops"]["backward"]["gemm"])
             / (l["flops"]["forward"]["gemm"] + l["flops"]["backward"]["gemm"]) for g, l in pairs]
    cheaper = sum(r < 1 for r in ratios)
    torch = [g["torch_seconds"]["forward+backward"] / l["torch_seconds"]["forward+backward"]
             for g, l in pairs if g.get("torch_seconds") and l.get("torch_seconds")]
    in_torch = ""
    if torch:
        in_torch = (f" The same comparison for PyTorch's own modules ({pairs[0][0]['torch_module']} "
                    f"against {pairs[0][1]['torch_module']}, its CPU kernels): "
                    f"{number(min(torch))} to {number(max(torch))} (median "
                    f"{number(float(np.median(torch)))}), the GRU faster in "
                    f"{sum(r < 1 for r in torch)} of {len(torch)}: there the claim "
                    f"{_verdict(all(r < 1 for r in torch))}.")
    return (f"**A GRU costs less per step than an LSTM.** Per step of forward+backward on "
            f"rnncc, the GRU took {number(min(ratios))} to {number(max(ratios))} of the LSTM's time (median "
            f"{number(float(np.median(ratios)))}) over the {len(pairs)} configurations, faster "
            f"in {cheaper}; its products are {number(float(np.median(flops)))} of the LSTM's "
            f"FLOPs at the same H. The claim {_verdict(cheaper == len(pairs))}"
            + ("." if cheaper == len(pairs) else
               f" everywhere (slower in {len(pairs) - cheaper} configurations).") + in_torch)


def _flow_finding(results: dict) -> str:
    flow = {(r["cell"], r["when"]): r for r in results["gradient_flow"]}
    parts, holds = [], None
    for when in ("init", "trained"):
        decays = {c: flow[(c, when)]["decay"] for c in results["cells"] if (c, when) in flow}
        if decays:
            parts.append(f"{'at initialization' if when == 'init' else 'after training on the adding task'}: "
                         + ", ".join(f"{c} {number(d)}" for c, d in decays.items()))
    init = {c: flow[(c, "init")]["decay"] for c in results["cells"] if (c, "init") in flow}
    gated = [init.get(c) for c in ("gru", "lstm") if init.get(c) is not None]
    if init.get("rnn") is not None and gated:
        holds = all(init["rnn"] < g for g in gated)
    T = results["config"]["flow_T"]
    far = {c: flow[(c, "init")]["norms"] for c in results["cells"] if (c, "init") in flow}
    reach = ", ".join(f"{c} {number(n[-1] / n[1] if n[1] else None)}" for c, n in far.items())
    return (f"**A plain RNN's gradient vanishes over long spans; gated cells keep it.** The "
            f"factor by which the gradient of the last output with respect to an earlier input "
            f"shrinks per step back (a geometric fit over k = 1..{T - 1}): {'; '.join(parts)}. "
            f"Across the whole span at initialization it fell to {reach} of its value one step "
            f"back. That the RNN's gradient decays fastest {_verdict(holds)}.")


def _longest_solved(results: dict, task: str) -> dict:
    found = {}
    for r in results["tasks"]:
        if r["task"] == task:
            found.setdefault(r["cell"], 0)
            if r["solved"]:
                found[r["cell"]] = max(found[r["cell"]], r["T"])
    return found


def _task_findings(results: dict) -> list:
    out = []
    for task in sorted({r["task"] for r in results["tasks"]}):
        longest = _longest_solved(results, task)
        Ts = sorted({r["T"] for r in results["tasks"] if r["task"] == task})
        text = ", ".join(f"{c} {longest[c] or 'none'}" for c in longest)
        holds = None
        if "rnn" in longest and any(c in longest for c in ("gru", "lstm")):
            gated = max(longest.get("gru", 0), longest.get("lstm", 0))
            holds = None if gated == 0 and longest["rnn"] == 0 else longest["rnn"] < gated
        out.append(f"**{task}: gated cells solve longer dependencies than a plain RNN.** Longest "
                   f"T solved (of {', '.join(map(str, Ts))}): {text}. The claim "
                   f"{_verdict(holds)}" + (" (no cell solved any length)." if holds is None
                                           else "."))
        unsolved = [T for T in Ts if not any(r["solved"] for r in results["tasks"]
                                             if r["task"] == task and r["T"] == T)]
        if unsolved:
            metric = results["thresholds"][task]["metric"]
            per_T = "; ".join(f"T={T}: " + ", ".join(
                f"{r['cell']} {number(r['final_metric'])}" for r in results["tasks"]
                if r["task"] == task and r["T"] == T) for T in unsolved)
            out.append(f"Where no cell solved {task}, the final held-out {metric} (chance "
                       f"{number(results['thresholds'][task]['chance'])}): {per_T}.")
        both = [(r, s) for r in results["tasks"] for s in results["tasks"]
                if r["task"] == s["task"] == task and r["T"] == s["T"] and r["cell"] == "gru"
                and s["cell"] == "lstm" and r["solved"] and s["solved"]]
        if both:
            faster = sum(g["steps_to_solve"] < l["steps_to_solve"] for g, l in both)
            detail = "; ".join(f"T={g['T']}: gru {g['steps_to_solve']}, lstm "
                               f"{l['steps_to_solve']}" for g, l in both)
            out.append(f"**{task}: a GRU converges in fewer steps than an LSTM.** Steps to solve "
                       f"where both solved: {detail}. The claim "
                       f"{_verdict(faster == len(both))}.")
        elif "gru" in longest and "lstm" in longest:
            out.append(f"**{task}: a GRU converges in fewer steps than an LSTM.** No length "
                       f"was solved by both, so the claim {_verdict(None)}.")
        if "gru" in longest and "lstm" in longest and (longest["gru"] or longest["lstm"]):
            holds = longest["lstm"] > longest["gru"] if longest["lstm"] != longest["gru"] else False
            out.append(f"**{task}: an LSTM reaches further than a GRU on very long "
                       f"dependencies.** Longest T solved: lstm {longest['lstm'] or 'none'}, "
                       f"gru {longest['gru'] or 'none'}. The claim {_verdict(holds)}.")
    return out


def _seconds_findings(results: dict) -> list:
    out = []
    for task in sorted({r["task"] for r in results["tasks"]}):
        for T in sorted({r["T"] for r in results["tasks"] if r["task"] == task}):
            runs = [r for r in results["tasks"] if r["task"] == task and r["T"] == T]
            done = sorted((r for r in runs if r["solved"]), key=lambda r: r["seconds_to_solve"])
            by_steps = sorted(done, key=lambda r: r["steps_to_solve"])
            if len(done) >= 2:
                order = ", ".join(f"{r['cell']} {number(r['seconds_to_solve'])} s "
                                  f"({r['steps_to_solve']} steps)" for r in done)
                same = [r["cell"] for r in done] == [r["cell"] for r in by_steps]
                out.append(f"{task}, T={T}: solved first in wall-clock time by {order}; the "
                           f"order by steps is {'the same' if same else 'different: ' + ', '.join(r['cell'] for r in by_steps)}.")
    if not out:
        return ["No task length was solved by two cells or more: there is no race to compare "
                "in wall-clock time."]
    return out


# -- the report --------------------------------------------------------------------------------

def report(results: dict) -> str:
    cfg = results["config"]
    cells = results["cells"]
    lines = [f"# RNN, GRU and LSTM, measured: {', '.join(cells)}", "",
             f"`{results.get('command', 'rnncc study')}` on {results['cpu']}, rnncc "
             f"{results['rnncc']}, Python {results['python']}, {results['date']}, seed "
             f"{results['seed']}. Every number here is in `results.json`; the figures are "
             f"drawn from it.", ""]

    lines += ["## 1. Cost", "",
              f"Parameters, FLOPs and tape per step are counted from each cell's Plan (one "
              f"sequence; FLOPs: 2 per multiply-add of the products, 1 per element of each "
              f"kernel op; tape: what training keeps per step for backward, float32). Times "
              f"are per step of T={cfg['cost_T']}, I = H, medians of {cfg['cost_rounds']} "
              f"interleaved rounds: rnncc on the cpu target beside the cell's PyTorch module "
              f"(torch.nn's for rnn, gru and lstm, else the eager module generated from the "
              f"spec), each in a process of its own with every core (`rnncc bench`'s "
              f"measurement); "
              f"{'the cuda columns on the GPU.' if any('seconds_cuda' in r for r in results['cost']) else 'no GPU in this run.'}",
              ""]
    rows = []
    on_gpu = any("seconds_cuda" in r for r in results["cost"])
    for r in sorted(results["cost"], key=lambda r: (r["H"], r["B"], cells.index(r["cell"]))):
        f = r["flops"]
        rows.append([r["cell"], r["H"], r["B"], number(r["parameters"]),
                     number(f["forward"]["gemm"] + f["forward"]["kernel"]),
                     number(f["backward"]["gemm"] + f["backward"]["kernel"]),
                     number(r["tape_bytes"]), number(1e6 * r["seconds"]["forward"]),
                     number(1e6 * r["seconds"]["forward+backward"]),
                     number(1e6 * r["torch_seconds"]["forward"]),
                     number(1e6 * r["torch_seconds"]["forward+backward"]), r["torch_module"]]
                    + ([number(1e6 * r["seconds_cuda"]["forward"]),
                        number(1e6 * r["seconds_cuda"]["forward+backward"])] if on_gpu else []))
    header = ["cell", "H", "B", "parameters", "FLOPs fwd", "FLOPs bwd", "tape bytes",
              "us/step fwd", "us/step fwd+bwd", "torch us/step fwd", "torch us/step fwd+bwd",
              "torch is"]
    if on_gpu:
        header += ["cuda us/step fwd", "cuda us/step fwd+bwd"]
    lines += [_table(header, rows), "",
              f"![time per step]({FIGURES['cost']})", "", _cost_finding(results), ""]

    lines += ["## 2. Gradient flow", "",
              f"The norm of the gradient of the last step's output (projected on a random unit "
              f"vector) with respect to the input k steps earlier, by rnncc's BPTT in float64, "
              f"T={cfg['flow_T']}, averaged over {cfg['flow_B']} sequences and "
              f"{cfg['flow_seeds']} seeds; at initialization and after training on the adding "
              f"task at T={cfg['flow_T']} (where that run exists). Each cell at the parameter "
              f"budget of part 3.", ""]
    rows = [[r["cell"], r["when"], r["H"], number(r["norms"][1] if len(r["norms"]) > 1 else None),
             number(r["norms"][min(10, len(r["norms"]) - 1)]), number(r["norms"][-1]),
             number(r["decay"])] for r in results["gradient_flow"]]
    lines += [_table(["cell", "when", "H", "norm k=1", "norm k=10", f"norm k={cfg['flow_T'] - 1}",
                      "decay per step"], rows), "",
              f"![gradient flow]({FIGURES['flow']})", "", _flow_finding(results), ""]

    th = results["thresholds"]
    lines += ["## 3. Long-term dependencies", "",
              f"Each cell at the parameter count of an LSTM with H={cfg['budget_H']} and its "
              f"head (hidden sizes below), Adam (lr 1e-3, gradient norm clipped to 1), batch "
              f"{cfg['batch']}, "
              + ", ".join(f"{n} {s} steps" for n, s in cfg["steps"].items())
              + f" (every cell the same), seed {results['seed']}, evaluated every "
              f"{cfg['evaluate_every']} steps on 256 held-out sequences. Adding problem: solved "
              f"when the held-out MSE is below {th['adding']['threshold']} (a constant guess "
              f"scores {number(th['adding']['chance'])}). Copy memory: solved when the recall "
              f"accuracy reaches {th['copy']['threshold']} (chance {number(th['copy']['chance'])}).",
              ""]
    rows = [[r["task"], r["T"], r["cell"], r["H"], number(r["parameters"]),
             "yes" if r["solved"] else "no", number(r["steps_to_solve"]),
             number(r["final_loss"]), number(r["final_metric"]), number(r["seconds"])]
            for r in results["tasks"]]
    lines += [_table(["task", "T", "cell", "H", "parameters", "solved", "steps to solve",
                      "final loss", "final mse/accuracy", "training s"], rows), "",
              f"![learning curves]({FIGURES['curves']})", ""]
    lines += [p + "\n" for p in _task_findings(results)]

    lines += ["## 4. Convergence per second", "",
              "The same runs against wall-clock training time (evaluation excluded): a cell "
              "that needs fewer steps but costs more per step may still lose.", "",
              f"![convergence against time]({FIGURES['seconds']})", ""]
    lines += [f"- {p}" for p in _seconds_findings(results)]
    return "\n".join(lines).rstrip() + "\n"


def write(results: dict, out: Path) -> None:
    figures(results, out)
    (out / "REPORT.md").write_text(report(results))

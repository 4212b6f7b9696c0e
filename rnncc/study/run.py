"""`rnncc study`: the four parts run in order, into results.json; report.py writes the rest.

Everything a run measures goes into one dict (results.json); the report and the figures are
made from that dict alone, so every number the report shows is one of the JSON's.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Config:
    cost_H: tuple            # hidden sizes of the cost part (I = H)
    cost_B: tuple            # batch rows of its timings
    cost_T: int              # steps per timed call
    cost_rounds: int
    task_T: dict             # task -> the delays / lengths trained at
    steps: dict              # task -> training steps per run (the same for every cell)
    batch: int
    evaluate_every: int
    budget_H: int            # the parameter budget: an LSTM of this hidden size (and its head)
    flow_T: int              # gradient-flow sequence length (an adding length: trained models)
    flow_seeds: int
    flow_B: int


QUICK = Config(cost_H=(32,), cost_B=(1, 16), cost_T=20, cost_rounds=2,
               task_T={"adding": (10, 20), "copy": (5, 10)},
               steps={"adding": 2000, "copy": 2000}, batch=32,
               evaluate_every=50, budget_H=24, flow_T=20, flow_seeds=2, flow_B=8)
FULL = Config(cost_H=(128, 256, 512), cost_B=(1, 64), cost_T=100, cost_rounds=5,
              # copy memory's delays are shorter and its runs longer: at 2000 steps no cell
              # left chance accuracy at T >= 50 (a trial run), nor solved T = 10
              task_T={"adding": (50, 100, 200, 400), "copy": (10, 20, 50, 100)},
              steps={"adding": 2000, "copy": 6000}, batch=64, evaluate_every=50, budget_H=64,
              flow_T=200, flow_seeds=4, flow_B=16)


def _named(cells: list) -> list:
    """Each cell's name (its spec's `cell` line), numbered where two share one."""
    names = []
    for cell in cells:
        name, k = cell.name, 1
        while name in names:
            k += 1
            name = f"{cell.name}#{k}"
        names.append(name)
    return names


def run(specs: list, config: Config, seed: int = 0, progress=None) -> dict:
    """Every part for every cell (specs: shipped names or spec paths). progress, if given, is
    a rich Progress: one bar per part."""
    from ..benchmark.processes import cpu_model
    from ..runtime.layer import RNN, _as_cell
    from ..version import __version__
    from . import cost, gradient_flow, tasks

    specs = list(dict.fromkeys(specs))   # a spec given twice is one cell, not two
    parsed = [_as_cell(s) for s in specs]
    names = dict(zip(specs, _named(parsed)))
    cells = {names[s]: cell for s, cell in zip(specs, parsed)}
    results: dict = {
        "rnncc": __version__, "cpu": cpu_model(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"), "seed": seed, "config": asdict(config),
        "cells": list(cells), "specs": {n: str(s) for n, s in zip(cells, specs)}}

    def bar(description, total):
        return None if progress is None else progress.add_task(description, total=total)

    def advance(task_id):
        return None if progress is None else (lambda: progress.advance(task_id))

    # 1. cost: the counts from each Plan; the times from rnncc bench's measurement (each
    # contender in a process of its own, rounds interleaved), against the cell's torch module
    from ..benchmark.bench import Case, Options
    from ..benchmark.bench import measure as bench_measure
    cases = [Case(spec, config.cost_T, B, H, backward) for H in config.cost_H
             for B in config.cost_B for spec in specs for backward in (False, True)]
    options = Options(rounds=config.cost_rounds, threads=os.cpu_count() or 1, vs_torch=True)
    part = bar("cost: time per step", len(cases) * config.cost_rounds * 4)
    measured = bench_measure(cases, options, progress=advance(part))
    rows, by_key = [], {}
    for found in measured["results"]:
        name = names[found["spec"]]
        key = (name, found["H"], found["B"])
        if key not in by_key:
            cell = cells[name]
            sizes = RNN(cell, found["H"], found["H"]).sizes
            by_key[key] = {"cell": name, "H": found["H"], "B": found["B"],
                           "parameters": cost.parameter_count(cell, sizes),
                           "flops": cost.step_flops(cell, sizes),
                           "tape_bytes": cost.tape_bytes(cell, sizes),
                           "torch_module": found["torch_module"],
                           "seconds": {}, "torch_seconds": {}, "limit_seconds": {}}
            rows.append(by_key[key])
        per_step = lambda k: found["ms"][k] / 1e3 / config.cost_T
        by_key[key]["seconds"][found["pass"]] = per_step("rnncc")
        by_key[key]["torch_seconds"][found["pass"]] = per_step("torch")
        by_key[key]["limit_seconds"][found["pass"]] = per_step("limit")
    results["cost_machine"] = measured["machine"]
    if cost.gpu_present():   # the same sizes on the cuda target
        part = bar("cost: time per step (cuda)", len(config.cost_H) * len(config.cost_B)
                   * config.cost_rounds * 2 * len(cells))
        for H in config.cost_H:
            for B in config.cost_B:
                sized = {name: (cell, RNN(cell, H, H).sizes) for name, cell in cells.items()}
                measured = cost.time_per_step_cuda(sized, config.cost_T, B,
                                                   config.cost_rounds, progress=advance(part))
                for row in rows:
                    if row["H"] == H and row["B"] == B:
                        row["seconds_cuda"] = measured[row["cell"]]
    results["cost"] = rows

    # 3. long-term dependencies (before 2: its trained models are part 2's second point)
    runs, trained = [], {}
    total = sum(len(Ts) * config.steps[t] for t, Ts in config.task_T.items()) * len(cells)
    part = bar("tasks: training", total)
    for task_name, Ts in config.task_T.items():
        task = tasks.TASKS[task_name]
        budget = _lstm_budget(task, config.budget_H)
        for T in Ts:
            for name, cell in cells.items():
                H = tasks.hidden_for_budget(cell, task, budget)
                found = tasks.train(cell, task, T, H, steps=config.steps[task_name],
                                    batch=config.batch, evaluate_every=config.evaluate_every,
                                    seed=seed, progress=advance(part))
                params = found.pop("trained")
                if task_name == "adding" and T == config.flow_T:
                    trained[name] = (params, H)
                runs.append({"task": task_name, "cell": name, "budget": budget, **found})
    results["tasks"] = runs
    results["thresholds"] = {n: {"metric": t.metric, "threshold": t.threshold,
                                 "chance": t.chance} for n, t in tasks.TASKS.items()}

    # 2. gradient flow, at initialization and after training on the adding task
    flow = []
    part = bar("gradient flow", len(cells) * config.flow_seeds * 2)
    adding = tasks.TASKS["adding"]
    budget = _lstm_budget(adding, config.budget_H)
    for name, cell in cells.items():
        H = tasks.hidden_for_budget(cell, adding, budget)
        states = {"init": [RNN(cell, adding.inputs, H, seed=seed + s).params
                           for s in range(config.flow_seeds)]}
        if name in trained:
            states["trained"] = [trained[name][0]] * config.flow_seeds
        for when, param_sets in states.items():
            norms = []
            for s, p in enumerate(param_sets):
                x, _ = tasks.adding(config.flow_T, config.flow_B,
                                    np.random.default_rng(seed + 100 + s))
                p = {k.removesuffix("_l0"): np.asarray(v) for k, v in p.items()}
                norms.append(gradient_flow.gradient_norms(cell, p, x, seed=seed + s))
                if progress is not None:
                    progress.advance(part)
            mean = np.mean(norms, axis=0)
            flow.append({"cell": name, "when": when, "H": H, "T": config.flow_T,
                         "norms": mean.tolist(), "decay": gradient_flow.decay(mean)})
    results["gradient_flow"] = flow
    return results


def _lstm_budget(task, H: int) -> int:
    """Parameters of an LSTM of hidden size H on `task` (its layer and head)."""
    from ..runtime.cell import load
    from .cost import parameter_count
    lstm = load("lstm")
    return parameter_count(lstm, {"I": task.inputs, "H": H}) + H * task.outputs + task.outputs


def save(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

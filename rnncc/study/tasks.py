"""The long-term dependency tasks, and training a cell on them through rnncc.torch with Adam.

    adding(T, B, rng)     the adding problem (Hochreiter & Schmidhuber 1997, in the form of Le
                          et al. 2015): x [T, B, 2], channel 0 random numbers in [0, 1),
                          channel 1 marking two of them, one in each half of the sequence;
                          the target is their sum. A constant guess (1) has MSE 1/6 ~ 0.167
    copy_memory(T, B, rng)
                          the copy-memory task (Arjovsky et al. 2016): COPY_LENGTH symbols from
                          an alphabet of ALPHABET, T - 1 blanks, a delimiter, then COPY_LENGTH
                          blanks while the model recalls the symbols (one-hot inputs, T + 20
                          steps); the loss and accuracy are over the recall steps; chance
                          accuracy is 1 / ALPHABET
    train(cell, task, T, H, ...)
                          an rnncc.torch.RNN layer and a linear head trained with Adam (gradient
                          norm clipped to 1), evaluated on a held-out batch every few steps:
                          learning curve against steps and wall-clock time, solved or not
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

ALPHABET = 8        # copy-memory symbols 1..8; 0 is blank, 9 the delimiter
COPY_LENGTH = 10
ADDING_CONSTANT_MSE = 1 / 6   # the variance of the sum of two uniform numbers


def adding(T: int, B: int, rng) -> tuple:
    values = rng.random((T, B)).astype(np.float32)
    marks = np.zeros((T, B), np.float32)
    half = max(1, T // 2)
    first = rng.integers(0, half, B)
    second = rng.integers(half, T, B) if T > 1 else first
    marks[first, np.arange(B)] = 1
    marks[second, np.arange(B)] = 1
    x = np.stack([values, marks], axis=-1)
    return x, (values * marks).sum(axis=0)[:, None]


def copy_memory(T: int, B: int, rng) -> tuple:
    symbols = rng.integers(1, ALPHABET + 1, (COPY_LENGTH, B))
    steps = T + 2 * COPY_LENGTH
    codes = np.zeros((steps, B), np.int64)
    codes[:COPY_LENGTH] = symbols
    codes[COPY_LENGTH + T - 1] = ALPHABET + 1     # the delimiter: recall now
    x = np.eye(ALPHABET + 2, dtype=np.float32)[codes]
    return x, symbols - 1                         # classes 0..ALPHABET-1


@dataclass(frozen=True)
class Task:
    name: str
    make: object          # (T, B, rng) -> (x, target)
    inputs: int
    outputs: int
    metric: str           # what `solved` is judged on
    threshold: float      # solved: mse below it, or accuracy at least it
    chance: float         # the metric of a model that learned nothing


TASKS = {
    "adding": Task("adding", adding, 2, 1, "mse", 0.01, ADDING_CONSTANT_MSE),
    "copy": Task("copy", copy_memory, ALPHABET + 2, ALPHABET, "accuracy", 0.99, 1 / ALPHABET),
}


def _loss_and_metric(task: Task, head, y, target):
    import torch
    if task.name == "adding":
        prediction = head(y[-1])
        loss = torch.nn.functional.mse_loss(prediction, target)
        return loss, loss.item()
    logits = head(y[-COPY_LENGTH:])                       # [COPY_LENGTH, B, ALPHABET]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, task.outputs),
                                             target.reshape(-1))
    return loss, float((logits.argmax(-1) == target).float().mean())


def solved(task: Task, metric: float) -> bool:
    return metric < task.threshold if task.metric == "mse" else metric >= task.threshold


def hidden_for_budget(cell, task: Task, budget: int, input_size: int | None = None) -> int:
    """The hidden size whose layer and head have the parameter count nearest `budget`."""
    from .cost import parameter_count
    from ..runtime.layer import RNN
    I = task.inputs if input_size is None else input_size

    def count(H):
        sizes = RNN(cell, I, H).sizes
        return parameter_count(cell, sizes) + H * task.outputs + task.outputs
    return min(range(2, 4 * int(np.sqrt(budget)) + 8), key=lambda H: abs(count(H) - budget))


def train(cell, task: Task, T: int, H: int, *, steps: int, batch: int, evaluate_every: int,
          seed: int, lr: float = 1e-3, held_out: int = 256, progress=None) -> dict:
    """Train and evaluate (see the module doc). Returns the curve (step, seconds of training
    so far, held-out loss and metric), whether and when it solved the task, the final values,
    and the trained module's parameters (for the gradient-flow part)."""
    import torch

    from ..torch import RNN
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = RNN(cell, task.inputs, H, seed=seed)
    head = torch.nn.Linear(H, task.outputs)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    test_x, test_target = task.make(T, held_out, np.random.default_rng(10_000 + seed))
    test_x, test_target = torch.from_numpy(test_x), torch.from_numpy(test_target)

    def evaluate() -> tuple:
        with torch.no_grad():
            y, _ = model(test_x)
            loss, metric = _loss_and_metric(task, head, y, test_target)
        return float(loss), metric

    curve, seconds, first_solved = [], 0.0, None
    loss, metric = evaluate()
    curve.append((0, 0.0, loss, metric))
    for step in range(1, steps + 1):
        x, target = task.make(T, batch, rng)
        start = time.perf_counter()
        y, _ = model(torch.from_numpy(x))
        batch_loss, _ = _loss_and_metric(task, head, y, torch.from_numpy(target))
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        seconds += time.perf_counter() - start
        if step % evaluate_every == 0 or step == steps:
            loss, metric = evaluate()
            curve.append((step, seconds, loss, metric))
            if first_solved is None and solved(task, metric):
                first_solved = (step, seconds)
        if progress is not None:
            progress()
    return {"T": T, "H": H, "seed": seed, "steps": steps, "batch": batch,
            "parameters": sum(p.numel() for p in params),
            "curve": [dict(step=s, seconds=t, loss=lo, metric=m) for s, t, lo, m in curve],
            "solved": first_solved is not None,
            "steps_to_solve": None if first_solved is None else first_solved[0],
            "seconds_to_solve": None if first_solved is None else first_solved[1],
            "final_loss": curve[-1][2], "final_metric": curve[-1][3], "seconds": seconds,
            "trained": {name.removesuffix("_l0"): p.detach().numpy().copy()
                        for name, p in model.named_parameters()}}

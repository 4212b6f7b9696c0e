"""examples/train.py, the README's training example, trains: its loss falls from log(8)."""
import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train.py"


def test_the_training_example_learns_its_task():
    spec = importlib.util.spec_from_file_location("train_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    losses = example.train(steps=150, seed=0, log_every=0)
    assert abs(losses[0] - math.log(8)) < 0.15     # chance, at the start
    assert sum(losses[-10:]) / 10 < 0.2            # recalls the symbol 3 steps back

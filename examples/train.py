"""Train a small sequence model whose recurrent layers are an rnncc cell, with torch.optim.

The task (synthetic): each input sequence is a noisy stream of 8 symbols; the target at every
step is the symbol seen 3 steps earlier, so the model must remember. The model: an embedding,
a 2-layer stack of the shipped minimal gated unit (`specs/mgu.cell`, a cell torch has no
module for), and a linear head. Trained with Adam on the CPU; the loss falls from log(8) = 2.08.

    python examples/train.py [--steps 150] [--seed 0]
"""
import argparse
import time

import torch

import rnncc.torch

SYMBOLS, DELAY = 8, 3


class Model(torch.nn.Module):
    def __init__(self, hidden: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(SYMBOLS, 16)
        self.rnn = rnncc.torch.RNN("mgu", 16, hidden, num_layers=2, seed=seed)
        self.head = torch.nn.Linear(hidden, SYMBOLS)

    def forward(self, tokens):                 # tokens [T, B]
        y, _ = self.rnn(self.embed(tokens))    # [T, B, hidden]
        return self.head(y)                    # [T, B, SYMBOLS]


def batch(generator, T: int = 40, B: int = 32):
    tokens = torch.randint(0, SYMBOLS, (T, B), generator=generator)
    target = torch.roll(tokens, DELAY, dims=0)
    target[:DELAY] = -100                      # nothing to recall yet: ignored by the loss
    return tokens, target


def train(steps: int = 150, seed: int = 0, log_every: int = 25) -> list[float]:
    model = Model(seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    generator = torch.Generator().manual_seed(seed)
    losses, start = [], time.perf_counter()
    for step in range(steps):
        tokens, target = batch(generator)
        loss = loss_fn(model(tokens).reshape(-1, SYMBOLS), target.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {loss.item():.3f}  ({time.perf_counter() - start:.1f} s)")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train(args.steps, args.seed)

"""A complete training loop of your own with PCGrad: ``python examples/own_loop.py``.

The data: MultiDigits, two overlapping 8×8 handwritten digits on a 12×12 canvas (real digits
shipped inside scikit-learn; nothing is downloaded); two tasks, the left and the right digit's
class. The model: a shared MLP trunk and one linear head per task, written here in plain PyTorch.
Everything else is the usual loop (``torch.optim.AdamW``, a cosine LR schedule, gradient
clipping), with ``sum(losses).backward()`` replaced by ``mtl.backward(losses)``.

One batch is corrupted on purpose (``--bad-batch``, a NaN in its inputs, as from a broken file):
``mtl.backward`` raises :class:`gradsurgery.errors.NonFiniteError` naming the task before any
``.grad`` is written, and the loop skips that batch and goes on. Runs in a few seconds on a CPU.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gradsurgery
from gradsurgery.data import multi_digits
from gradsurgery.errors import NonFiniteError


class TrunkAndHeads(nn.Module):
    """``forward(x)`` returns ``[logits of task 0, logits of task 1, ...]``, one per head."""

    def __init__(self, in_features: int, classes: Sequence[int], width: int = 128) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Linear(width, c) for c in classes)

    def forward(self, x: Tensor) -> list[Tensor]:
        z = self.trunk(x)
        return [head(z) for head in self.heads]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="pcgrad", help="any name of `gradsurgery methods`")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--train-size", type=int, default=None, help="use the first N training pairs")
    p.add_argument("--bad-batch", type=int, default=5, help="the batch given a NaN (-1: none)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


@torch.no_grad()
def accuracies(model: nn.Module, x: Tensor, ys: list[Tensor]) -> list[float]:
    model.eval()
    outs = model(x)
    model.train()
    return [float((out.argmax(1) == y).float().mean()) for out, y in zip(outs, ys, strict=True)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)

    train, test = multi_digits("train", seed=args.seed), multi_digits("test", seed=args.seed)
    tasks = list(train.spec.task_names)  # ["left", "right"]
    x_train = train.input_batch()[: args.train_size]  # (n, 1, 12, 12) float32 in [0, 1]
    y_train = [train.targets[t][: args.train_size] for t in tasks]  # per task: (n,) classes
    x_test, y_test = test.input_batch(), [test.targets[t] for t in tasks]

    model = TrunkAndHeads(x_train[0].numel(), [10] * len(tasks))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    batches_per_epoch = -(-len(x_train) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=args.epochs * batches_per_epoch
    )
    mtl = gradsurgery.MultiTaskBackward(model, args.method, shared=model.trunk, task_names=tasks)

    history: list[list[float]] = []  # per epoch: the mean training loss of each task
    skipped: list[tuple[int, int, str]] = []  # (epoch, batch, error message)
    batch_index = 0
    for epoch in range(args.epochs):
        totals, count = torch.zeros(len(tasks)), 0
        for b, idx in enumerate(torch.randperm(len(x_train)).split(args.batch_size)):
            x, ys = x_train[idx], [y[idx] for y in y_train]
            if batch_index == args.bad_batch:
                x = x.clone()
                x[0, 0, 0, 0] = float("nan")  # a corrupted sample
            batch_index += 1

            optimizer.zero_grad()
            losses = [F.cross_entropy(out, y) for out, y in zip(model(x), ys, strict=True)]
            try:
                mtl.backward(losses)  # instead of sum(losses).backward()
            except NonFiniteError as e:  # .grad is untouched: skip this batch
                print(f"epoch {epoch} batch {b}: skipped ({e})")
                skipped.append((epoch, b, str(e)))
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            totals += torch.stack([loss.detach() for loss in losses])
            count += 1
        history.append((totals / max(count, 1)).tolist())
        acc = accuracies(model, x_test, y_test)
        print(
            f"epoch {epoch}: "
            + ", ".join(
                f"{t} loss {loss:.3f} test acc {a:.1%}"
                for t, loss, a in zip(tasks, history[-1], acc, strict=True)
            )
        )
    return {"tasks": tasks, "history": history, "skipped": skipped, "test_accuracy": acc}


if __name__ == "__main__":
    main()

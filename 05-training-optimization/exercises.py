"""Module 05 exercises: schedules, batch norm, augmentation, early stopping, checkpoints, hyperparameter search.

Replace each `raise NotImplementedError(...)` with your code, then check your work:
    .venv/bin/python 05-training-optimization/exercises.py    # done / failing / to do, and the next hint
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 05-ex      # the same checks, via pytest
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 05-ex03    # exercise 3 only
(from the repository's root folder; with the venv activated, plain `python` works too). Unfinished exercises
are skipped with a hint; the first command exits non-zero while an exercise you attempted fails.

Lessons to reread: 01_learning_rate_scheduling.py (exercises 1-2), 02_batch_normalization.py (3-4),
03_data_augmentation.py (5), 04_early_stopping.py (6), 05_checkpointing.py (7-8), 07_hyperparameter_tuning.py (9-10).
"""

import math  # noqa: F401  (for your solutions)
import os  # noqa: F401
import tempfile  # noqa: F401
from pathlib import Path

import numpy as np  # noqa: F401
import torch
from torch import nn


def warmup_cosine_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Exercise 1: the learning rate of a linear warm-up followed by cosine decay.

    For step < warmup_steps the lr rises linearly and reaches base_lr on the last warm-up step:
    lr = base_lr * (step + 1) / warmup_steps (so the very first step already learns a little).
    After it, the lr follows a cosine from base_lr down to min_lr over the *remaining* steps:
    progress = (step - warmup_steps) / (total_steps - warmup_steps), lr = min_lr + 0.5 * (base_lr - min_lr) *
    (1 + cos(pi * progress)). Return a Python float.

    Example:
        >>> [round(warmup_cosine_lr(s, 0.1, 4, 12), 4) for s in (0, 3, 4, 8, 12)]
        [0.025, 0.1, 0.1, 0.05, 0.0]

    Hint: two cases with an if; the cosine's progress counts from the end of the warm-up, not from step 0, and is 1.0
    at step == total_steps.
    """
    raise NotImplementedError("Exercise 1: warmup_cosine_lr")


def train_with_epoch_scheduler(model: nn.Module, optimizer, scheduler, batches: list, epochs: int,
                               loss_fn) -> list[float]:
    """Exercise 2: a training loop that steps an epoch scheduler at the right place.

    Train `model` for `epochs` epochs over `batches` (a list of (x, y) pairs): for each batch, zero the gradients,
    compute loss_fn(model(x), y), backpropagate and take an optimizer step. `scheduler` is an epoch scheduler such
    as StepLR: step it once at the end of every epoch. Return the learning rate used in each epoch (the optimizer's
    param_groups[0]["lr"] at the start of the epoch), one float per epoch.

    Example:
        >>> opt = torch.optim.SGD(model.parameters(), lr=1.0)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
        >>> train_with_epoch_scheduler(model, opt, sched, batches, 5, nn.MSELoss())   # 3 batches per epoch
        [1.0, 1.0, 0.1, 0.1, 0.01]

    Hint: optimizer.step() inside the batch loop, scheduler.step() after it; stepping StepLR per batch makes the
    schedule run len(batches) times too fast.
    """
    raise NotImplementedError("Exercise 2: train_with_epoch_scheduler")


def batchnorm_train_forward(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor,
                            running_var: torch.Tensor, momentum: float = 0.1, eps: float = 1e-5):
    """Exercise 3: BatchNorm1d's training-mode forward pass, by hand.

    x is (N, C). Normalise each column with the batch mean and the batch variance (the *biased* one, divide by N),
    then scale by gamma and shift by beta (both (C,)). Also return the updated running statistics, like
    nn.BatchNorm1d: new_mean = (1 - momentum) * running_mean + momentum * batch_mean, and the same for the variance
    but with the *unbiased* batch variance (divide by N - 1). Do not modify the inputs.
    Return (y, new_running_mean, new_running_var).

    Example:
        >>> x = torch.tensor([[1.0], [3.0]])
        >>> y, m, v = batchnorm_train_forward(x, torch.ones(1), torch.zeros(1), torch.zeros(1), torch.ones(1))
        >>> y.flatten(), m, v   # batch mean 2, biased var 1 (normalising), unbiased var 2 (running)
        (tensor([-1.0000,  1.0000]), tensor([0.2000]), tensor([1.1000]))

    Hint: x.var(dim=0, unbiased=False) for y, x.var(dim=0, unbiased=True) for the running variance; the eps goes
    inside the square root.
    """
    raise NotImplementedError("Exercise 3: batchnorm_train_forward")


def fuse_linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """Exercise 4: fold an eval-mode BatchNorm into the Linear layer before it.

    In eval mode bn(linear(x)) is an affine map, so one nn.Linear can compute it: return a new nn.Linear (same in and
    out features) whose output equals bn.eval()(linear(x)) for every x. Use bn.running_mean, bn.running_var, bn.eps,
    bn.weight and bn.bias. Inference engines do this to save a layer.

    Example:
        >>> fused = fuse_linear_bn(linear, bn)
        >>> torch.allclose(fused(x), bn.eval()(linear(x)), atol=1e-5)
        True

    Hint: scale = bn.weight / sqrt(running_var + eps); new weight = linear.weight * scale[:, None];
    new bias = (linear.bias - running_mean) * scale + bn.bias. Copy with torch.no_grad().
    """
    raise NotImplementedError("Exercise 4: fuse_linear_bn")


def mixup(x: torch.Tensor, y: torch.Tensor, num_classes: int, lam: float, perm: torch.Tensor):
    """Exercise 5: MixUp of a batch with a given mixing weight and partner order.

    x is (B, ...) and y holds integer labels (B,). Mix every sample with its partner x[perm]:
    x_mixed = lam * x + (1 - lam) * x[perm]. Mix the labels the same way, as one-hot vectors:
    y_soft = lam * one_hot(y) + (1 - lam) * one_hot(y[perm]), a float tensor (B, num_classes).
    Return (x_mixed, y_soft).

    Example:
        >>> xm, ys = mixup(torch.tensor([[0.0], [10.0]]), torch.tensor([0, 1]), 2, 0.7, torch.tensor([1, 0]))
        >>> xm.flatten(), ys
        (tensor([3., 7.]), tensor([[0.7000, 0.3000], [0.3000, 0.7000]]))

    Hint: torch.nn.functional.one_hot(y, num_classes).float(); mixing only the images and keeping hard labels
    teaches the model that a blend is 100% one class.
    """
    raise NotImplementedError("Exercise 5: mixup")


def early_stopping_epoch(val_losses: list[float], patience: int, min_delta: float = 0.0) -> tuple[int, int]:
    """Exercise 6: when does early stopping stop, and which epoch is the best?

    Walk through the validation losses (one per epoch, epoch 0 first). An epoch *improves* when its loss is below
    best - min_delta (the first epoch always improves); `best` and `best_epoch` change only when an epoch improves.
    Training stops at the epoch where `patience` epochs in a row have not improved. Return (stop_epoch, best_epoch);
    if it never stops, stop_epoch is the last epoch.

    Example:
        >>> early_stopping_epoch([1.0, 0.8, 0.9, 0.85, 0.82, 0.7], patience=3)
        (4, 1)

    Hint: keep `best`, `best_epoch` and a counter of bad epochs; reset the counter on improvement, and stop as soon
    as the counter *equals* patience (not when it exceeds it).
    """
    raise NotImplementedError("Exercise 6: early_stopping_epoch")


def save_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, epoch: int) -> None:
    """Exercise 7: write a full training checkpoint atomically.

    Save a dict with the keys "model", "optimizer", "scheduler" (their state_dict()s) and "epoch" (an int) to
    `path`. Write it atomically: torch.save to a temporary file in the same folder, then os.replace it onto `path`,
    so a crash while saving can never leave a half-written file where the last good checkpoint was. Leave no
    temporary file behind.

    Example:
        >>> save_checkpoint(Path("ckpt.pt"), model, opt, sched, epoch=3)
        >>> sorted(torch.load("ckpt.pt", weights_only=True))
        ['epoch', 'model', 'optimizer', 'scheduler']

    Hint: fd, tmp = tempfile.mkstemp(dir=path.parent); os.close(fd); torch.save(state, tmp); os.replace(tmp, path).
    Without the optimizer's state (momentum, Adam's moments) a resumed run does not continue the same run.
    """
    raise NotImplementedError("Exercise 7: save_checkpoint")


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> int:
    """Exercise 8: restore a checkpoint written by save_checkpoint and say where to continue.

    Load `path` safely (torch.load with weights_only=True and map_location="cpu"), restore the model, the optimizer
    and the scheduler from it, and return the stored epoch.

    Example:
        >>> start = load_checkpoint(Path("ckpt.pt"), model, opt, sched)
        >>> start
        3

    Hint: each object has load_state_dict(); weights_only=True refuses arbitrary pickled code, and state_dicts of
    tensors and plain numbers load fine with it.
    """
    raise NotImplementedError("Exercise 8: load_checkpoint")


def random_search_configs(n: int, space: dict, seed: int) -> list[dict]:
    """Exercise 9: sample n hyperparameter configurations for random search, reproducibly.

    `space` maps a name to ("log", low, high) (sample uniformly in log space: a float), ("uniform", low, high)
    (a float) or ("choice", values) (one of the values). Use np.random.default_rng(seed), so the same seed gives the
    same list and different seeds (usually) different lists. Return a list of n dicts with every name of `space`.

    Example:
        >>> space = {"lr": ("log", 1e-4, 1e-1), "dropout": ("uniform", 0.0, 0.5), "width": ("choice", [32, 64])}
        >>> random_search_configs(2, space, seed=0)   # exact values depend on how you draw from the generator
        [{'lr': 0.00814..., 'dropout': 0.1348..., 'width': 32}, {'lr': 0.000112..., 'dropout': 0.4066..., 'width': 32}]

    Hint: log-uniform is exp(rng.uniform(log(low), log(high))); rng.uniform(low, high) on the lr puts 90% of the
    samples in the top decade. Convert choices with .item() or pick by index so they are plain Python values.
    """
    raise NotImplementedError("Exercise 9: random_search_configs")


def successive_halving_survivors(val_losses: dict, eta: int = 3) -> list:
    """Exercise 10: one rung of successive halving: who gets a bigger budget?

    `val_losses` maps a configuration id to its validation loss after this rung (lower is better). Keep the best
    len(val_losses) // eta of them, but always at least one. Return their ids, best first.

    Example:
        >>> successive_halving_survivors({"a": 0.9, "b": 0.3, "c": 0.5, "d": 0.4, "e": 1.2, "f": 0.8}, eta=3)
        ['b', 'd']

    Hint: sorted(val_losses, key=val_losses.get) orders ids from the lowest loss; max(1, len // eta) of them survive.
    """
    raise NotImplementedError("Exercise 10: successive_halving_survivors")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from exercise_harness import report

    sys.exit(report(__file__))

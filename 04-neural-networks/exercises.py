"""Module 04 exercises: build and train networks.

Replace each `raise NotImplementedError(...)` with your code, then check your work with either of:
    .venv/bin/python 04-neural-networks/exercises.py    # done / failing / to do, and the next hint
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 04-ex      # the same checks, via pytest
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 04-ex03    # exercise 3 only
(from the repository's root folder; with the venv activated, plain `python` works too). Unfinished exercises
are skipped with a hint; the first command exits non-zero while an exercise you attempted fails.

The checks live in tests/checks/m04_neural_networks.py. The lessons of this module (01-08) teach everything used
here; the docstring of each exercise says which lesson to reread if you get stuck.
"""

import torch
import torch.nn.functional as F  # noqa: F401  (you will probably want it)
from torch import nn


def build_mlp(in_features: int, hidden: int, out_features: int) -> nn.Module:
    """Exercise 1: Build a one-hidden-layer MLP as an nn.Module.

    Return a module that maps (B, in_features) to (B, out_features) through two nn.Linear layers,
    Linear(in_features, hidden) -> ReLU -> Linear(hidden, out_features).
    Its parameters must be visible to .parameters() (so an optimizer can train them). Lesson 01.

    Example:
        >>> model = build_mlp(4, 8, 3)
        >>> model(torch.randn(5, 4)).shape
        torch.Size([5, 3])
        >>> sum(p.numel() for p in model.parameters())   # 4*8 + 8 + 8*3 + 3
        67

    Hint: nn.Sequential(...) does it in one line. If you write a class, assign the layers to attributes (or an
    nn.ModuleList), never to a plain Python list, and do not forget the activation: without it two Linear layers
    are just one Linear layer.
    """
    raise NotImplementedError("Exercise 1: build_mlp")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Exercise 2: Count a model's parameters (numbers, not tensors).

    Return the total number of scalar parameters. With trainable_only=True count only those with
    requires_grad=True (frozen layers are left out); with False count them all. A weight shared by two layers
    (weight tying: `decoder.weight = embedding.weight`) is one set of numbers and counts once; buffers such as
    BatchNorm's running_mean are not parameters. Lesson 01.

    Example:
        >>> model = nn.Sequential(nn.Linear(10, 5), nn.Linear(5, 2))
        >>> count_parameters(model)                          # 10*5 + 5 + 5*2 + 2
        67
        >>> model[0].weight.requires_grad_(False)
        >>> count_parameters(model), count_parameters(model, trainable_only=False)
        (17, 67)

    Hint: p.numel() is the number of elements of a parameter tensor; len(list(model.parameters())) only counts
    tensors. Filter on p.requires_grad when trainable_only is True. model.parameters() yields a shared parameter
    once; looping over model.modules() and adding up each one's parameters would count it twice.
    """
    raise NotImplementedError("Exercise 2: count_parameters")


def linear_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Exercise 3: What nn.Linear computes, by hand.

    weight has nn.Linear's layout (out_features, in_features) and bias (out_features,). x is (..., in_features):
    any number of leading dimensions. Return (..., out_features), equal to nn.Linear's output. Do not call
    nn.Linear or F.linear. Lesson 02.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(linear_forward(x, layer.weight, layer.bias), layer(x))
        True

    Hint: the weight is stored transposed relative to x: y = x @ W.T + b. Broadcasting adds b to every row, and
    @ works on the last two dimensions, so a (B, T, in) input needs nothing special.
    """
    raise NotImplementedError("Exercise 3: linear_forward")


def cross_entropy_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Exercise 4: Cross-entropy by hand, numerically stable.

    logits (B, K) are raw scores, targets (B,) class indices. Return the scalar mean over the batch of
    -log softmax(logits)[target], equal to nn.CrossEntropyLoss()(logits, targets), also for huge logits such as
    1000 (no inf, no nan). Lesson 04.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [1000.0, 0.0, 0.0]])
        >>> cross_entropy_from_logits(logits, torch.tensor([0, 1]))   # ~ (0.1698 + 1000) / 2
        tensor(500.0849)

    Hint: log_softmax(z) = z - logsumexp(z) (torch.logsumexp subtracts the max for you, so exp never
    overflows). Pick each row's target column with logits[torch.arange(B), targets] or gather. Do not apply
    softmax first: the input is already logits.
    """
    raise NotImplementedError("Exercise 4: cross_entropy_from_logits")


def bce_with_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Exercise 5: Binary cross-entropy on logits, stable at extreme scores.

    logits and targets (values 0.0 or 1.0) have the same shape. Return the scalar mean of
    -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], equal to nn.BCEWithLogitsLoss, and correct for |z| = 100
    (where sigmoid(z) rounds to exactly 0 or 1 in float32). Lesson 04.

    Example:
        >>> bce_with_logits(torch.tensor([0.0, 100.0]), torch.tensor([1.0, 0.0]))   # (log 2 + 100) / 2
        tensor(50.3466)

    Hint: rewrite the loss without sigmoid: it equals max(z, 0) - z*y + log(1 + exp(-|z|)), and exp(-|z|) never
    overflows (torch.log1p is accurate for small arguments). sigmoid followed by log, or F.binary_cross_entropy on
    sigmoid(z), breaks at extreme logits.
    """
    raise NotImplementedError("Exercise 5: bce_with_logits")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, x: torch.Tensor,
               y: torch.Tensor) -> float:
    """Exercise 6: One optimisation step.

    Do one complete training step of `model` on the batch (x, y) with `optimizer` and `loss_fn`, and return the
    loss (computed before the step) as a Python float. The model's .grad fields may hold stale gradients from
    earlier code: they must not leak into this step. Lesson 06.

    Example:
        >>> model = nn.Linear(4, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> x, y = torch.randn(8, 4), torch.randn(8, 1)
        >>> loss_before = train_step(model, opt, nn.MSELoss(), x, y)
        >>> nn.MSELoss()(model(x), y).item() < loss_before
        True

    Hint: the order is zero_grad, forward, loss, backward, step. backward() ADDS to .grad, so skipping
    zero_grad mixes in old gradients; zeroing between backward and step throws the new ones away. Return
    loss.item().
    """
    raise NotImplementedError("Exercise 6: train_step")


def evaluate_accuracy(model: nn.Module, loader) -> float:
    """Exercise 7: Accuracy of a classifier over a DataLoader.

    loader yields (x, y) batches, y class indices; the model returns logits (B, K). Return the fraction of ALL
    examples whose argmax prediction equals the label, as a float. The model may contain dropout and arrive in
    training mode: evaluate it in evaluation mode, without building autograd graphs. Lesson 06.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
        >>> loader = DataLoader(TensorDataset(torch.randn(50, 2), torch.randint(0, 2, (50,))), batch_size=16)
        >>> 0.0 <= evaluate_accuracy(model, loader) <= 1.0
        True

    Hint: model.eval() and a `with torch.no_grad():` block. Count correct predictions and examples over all
    batches and divide once at the end: averaging per-batch accuracies is wrong when the last batch is smaller.
    """
    raise NotImplementedError("Exercise 7: evaluate_accuracy")


def sgd_momentum_step(params: list, velocities: list, lr: float, momentum: float) -> None:
    """Exercise 8: An SGD-with-momentum step by hand, as torch.optim.SGD does it.

    params are tensors with .grad filled in; velocities are tensors of the same shapes (zeros before the first
    step) that you must update IN PLACE so the next call sees them. For each pair:
        v = momentum * v + grad
        p = p - lr * v
    Return nothing: update params and velocities in place. Several calls must match torch.optim.SGD(params,
    lr=lr, momentum=momentum) step for step. Lesson 05.

    Example:
        >>> p = torch.tensor([1.0], requires_grad=True)
        >>> v = [torch.zeros(1)]
        >>> p.grad = torch.tensor([2.0])
        >>> sgd_momentum_step([p], v, lr=0.1, momentum=0.9)
        >>> p, v[0]      # v = 2, p = 1 - 0.1 * 2
        (tensor([0.8000], requires_grad=True), tensor([2.]))

    Hint: updating a leaf that requires grad must happen under torch.no_grad(). `v = momentum * v + g` only
    rebinds a local name; use in-place ops (v.mul_(momentum).add_(g), p.sub_(lr * v)) so the stored tensors change.
    """
    raise NotImplementedError("Exercise 8: sgd_momentum_step")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exercise 9: A reproducible random train/validation split.

    Return (train_idx, val_idx): two int64 tensors that together hold each of 0..n-1 exactly once, with
    len(val_idx) == int(n * val_fraction), chosen at random (datasets are often sorted by class, so the last
    rows are not a fair sample), and the same split every time for the same seed whatever the global RNG state.
    Leave the global RNG alone: torch.manual_seed inside the function would reseed the generator the rest of the
    program draws from. Lesson 06.

    Example:
        >>> train_idx, val_idx = split_indices(10, 0.2, seed=0)
        >>> len(train_idx), len(val_idx)
        (8, 2)
        >>> torch.equal(split_indices(10, 0.2, seed=0)[1], val_idx)
        True

    Hint: perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)); then slice it once into two
    parts (check the boundary: no index may be in both).
    """
    raise NotImplementedError("Exercise 9: split_indices")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from exercise_harness import report

    sys.exit(report(__file__))

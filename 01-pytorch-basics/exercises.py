"""Module 01 exercises: tensors, NumPy round trips, device-agnostic code, one training step, debugging habits.

Replace each `raise NotImplementedError(...)` with your code, then check your work:
    .venv/bin/python 01-pytorch-basics/exercises.py    # done / failing / to do, and the next hint
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 01-ex      # the same checks, via pytest
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 01-ex03    # exercise 3 only
(from the repository's root folder; with the venv activated, plain `python` works too). Unfinished exercises
are skipped with a hint; the first command exits non-zero while an exercise you attempted fails.

Lessons to reread: 03_tensor_basics.py (exercise 1), 04_numpy_vs_pytorch.py (2-4), 05_gpu_acceleration.py (5-6),
02_pytorch_intro.py (7-10).
"""

import numpy as np
import torch
from torch import nn


def make_grid(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """Exercise 1: a counting grid of a given shape, dtype and device.

    Return a float32 tensor of shape (rows, cols) on `device` holding 0, 1, 2, ... row by row.

    Example:
        >>> make_grid(2, 3, torch.device("cpu"))
        tensor([[0., 1., 2.],
                [3., 4., 5.]])

    Hint: torch.arange counts in int64 unless you pass dtype=torch.float32; pass device=device too, then reshape.
    """
    raise NotImplementedError("Exercise 1: make_grid")


def share_from_numpy(arr: np.ndarray) -> torch.Tensor:
    """Exercise 2: a tensor that shares memory with a NumPy array.

    Return a CPU tensor viewing the same memory as `arr`, with the same dtype, so that writing arr[0] = 5 shows up in
    the tensor (useful for large arrays you do not want to copy).

    Example:
        >>> a = np.zeros(3); t = share_from_numpy(a); a[0] = 5; t
        tensor([5., 0., 0.], dtype=torch.float64)

    Hint: torch.tensor(arr) always copies; torch.from_numpy(arr) wraps the same buffer.
    """
    raise NotImplementedError("Exercise 2: share_from_numpy")


def independent_numpy(t: torch.Tensor) -> np.ndarray:
    """Exercise 3: a NumPy copy that is safe to keep.

    Return a NumPy array with t's values that does NOT share memory with t (later in-place updates of t, such as an
    optimizer step, must not change it). t may require grad and may live on any device.

    Example:
        >>> w = torch.ones(2, requires_grad=True); a = independent_numpy(w)
        >>> with torch.no_grad(): w.add_(1)
        >>> a
        array([1., 1.], dtype=float32)

    Hint: t.detach().cpu().numpy() still shares memory for a CPU tensor (.cpu() returns t itself); add .copy() (or use
    .clone() before .numpy()).
    """
    raise NotImplementedError("Exercise 3: independent_numpy")


def numpy_to_model_input(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """Exercise 4: NumPy features ready for a float32 model.

    `arr` is a float64 (N, F) array straight from NumPy/pandas. Return a float32 tensor with the same values on
    `device`, ready for nn.Linear (whose weights are float32).

    Example:
        >>> numpy_to_model_input(np.array([[0.5, 1.0]]), torch.device("cpu")).dtype
        torch.float32

    Hint: torch.from_numpy keeps float64, and float64 input into a float32 layer raises "mat1 and mat2 must have the
    same dtype". Convert with .to(device, dtype=torch.float32) or .float().
    """
    raise NotImplementedError("Exercise 4: numpy_to_model_input")


def move_batch(batch: dict, device: torch.device) -> dict:
    """Exercise 5: move a batch to the device, device-agnostically.

    `batch` maps names to tensors and to other things (ints, strings, lists). Return a dict with the same keys where
    every tensor is on `device` and everything else is unchanged.

    Example:
        >>> move_batch({"x": torch.ones(2), "ids": [3, 4]}, torch.device("meta"))["x"].device
        device(type='meta')

    Hint: tensor.to(device) returns a NEW tensor (unlike module.to), so store what it returns; isinstance(v,
    torch.Tensor) tells tensors apart. The check moves batches to the "meta" device, which exists on every machine.
    """
    raise NotImplementedError("Exercise 5: move_batch")


def choose_device(preferred: str = "auto") -> torch.device:
    """Exercise 6: the one place code decides where tensors live.

    "auto" means cuda if torch.cuda.is_available(), else mps if torch.backends.mps.is_available(), else cpu. Any
    other name ("cpu", "cuda", "mps") is honoured as given. Return a torch.device, not a string.

    Example:
        >>> choose_device("cpu")
        device(type='cpu')

    Hint: ask torch.cuda.is_available() and torch.backends.mps.is_available() when the function runs (the check
    pretends to have a GPU), and wrap the name in torch.device(...).
    """
    raise NotImplementedError("Exercise 6: choose_device")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, x: torch.Tensor,
               y: torch.Tensor) -> float:
    """Exercise 7: one training step.

    Clear the old gradients, run the model on x, compute loss_fn(prediction, y), backpropagate, update the parameters
    with the optimizer, and return the loss (computed before the update) as a Python float.

    Example:
        >>> model = nn.Linear(3, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> loss = train_step(model, opt, nn.MSELoss(), torch.randn(8, 3), torch.randn(8, 1))   # a float

    Hint: optimizer.zero_grad(), forward, loss, loss.backward(), optimizer.step(), loss.item(). Without zero_grad the
    gradients of every call add up.
    """
    raise NotImplementedError("Exercise 7: train_step")


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Exercise 8: evaluation done right.

    Return the class probabilities softmax(model(x), dim=1), shape (N, C), computed in evaluation mode (dropout off)
    and without recording a graph (the result must not require grad).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)); predict_proba(model, torch.randn(2, 4)).sum(1)
        tensor([1.0000, 1.0000])

    Hint: model.eval() switches dropout off; `with torch.no_grad():` stops graph recording. You need both.
    """
    raise NotImplementedError("Exercise 8: predict_proba")


def count_nonfinite(t: torch.Tensor) -> int:
    """Exercise 9: the NaN check of a debugging session.

    Return how many elements of t are not finite: NaN, +inf or -inf, as a Python int.

    Example:
        >>> count_nonfinite(torch.tensor([1.0, float("nan"), float("inf"), -float("inf")]))
        3

    Hint: torch.isnan misses infinities (and t != t finds only NaNs); torch.isfinite covers both.
    """
    raise NotImplementedError("Exercise 9: count_nonfinite")


def seeded_weights(seed: int) -> torch.Tensor:
    """Exercise 10: reproducible initialisation.

    Create an nn.Linear(4, 3) so that the same seed always gives the same weights, whatever random numbers were drawn
    before the call, and different seeds give different weights. Return a detached copy of its weight (3, 4).

    Example:
        >>> torch.equal(seeded_weights(0), seeded_weights(0))
        True

    Hint: layers draw their initial weights from torch's generator: torch.manual_seed(seed) before creating the
    layer (np.random.seed or random.seed do not touch it).
    """
    raise NotImplementedError("Exercise 10: seeded_weights")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from exercise_harness import report

    sys.exit(report(__file__))

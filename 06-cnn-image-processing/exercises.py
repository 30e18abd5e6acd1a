"""Module 06 exercises: build CNNs and their data pipelines.

Replace each `raise NotImplementedError(...)` with your code, then check your work with either
    .venv/bin/python 06-cnn-image-processing/exercises.py    # done / failing / to do, and the next hint
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 06-ex      # the same checks, via pytest
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 06-ex03    # exercise 3 only
(from the repository's root folder; with the venv activated, plain `python` works too). Unfinished exercises
are skipped with a hint; the first command exits non-zero while an exercise you attempted fails.

The lessons 01-08 of this folder show every idea needed here.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F  # noqa: F401  (F.unfold, F.pad: you will need them)
from torch.utils.data import Dataset


def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Exercise 1: the output size of a convolution along one axis.

    Return the size nn.Conv2d produces for an input of size `n` (height or width) with the given kernel size,
    stride, padding (on each side) and dilation.

    Example:
        conv_output_size(32, 3, stride=1, padding=1) == 32
        conv_output_size(32, 5, stride=2, padding=0) == 14
        conv_output_size(32, 3, padding=2, dilation=2) == 32

    Hint: out = floor((n + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1. Padding is added on both sides,
    and a dilated kernel spans dilation*(kernel-1)+1 pixels.
    """
    raise NotImplementedError("Exercise 1: conv_output_size")


def conv2d_unfold(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                  padding: int = 0) -> torch.Tensor:
    """Exercise 2: a convolution as unfold + matrix multiply.

    x is (B, C, H, W), weight (O, C, k, k), bias (O,). Return the same (B, O, H', W') tensor as
    F.conv2d(x, weight, bias, stride=stride, padding=padding), but compute it with F.unfold and a matmul
    (do not call F.conv2d or nn.Conv2d).

    Example:
        x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
        conv2d_unfold(x, w, b, stride=1, padding=1).shape == (2, 4, 8, 8)

    Hint: F.unfold(x, k, padding=padding, stride=stride) gives (B, C*k*k, L) with L = H'*W' positions in row-major
    order. weight.view(O, -1) @ cols gives (B, O, L): that is already in (O, H', W') order, so view it as
    (B, O, H', W') and add bias.view(1, O, 1, 1). Transposing to (B, L, O) and then viewing as (B, O, H', W')
    scrambles the channels.
    """
    raise NotImplementedError("Exercise 2: conv2d_unfold")


def max_pool2d_by_hand(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Exercise 3: max pooling by hand.

    x is (B, C, H, W). Return what F.max_pool2d(x, kernel, stride) returns (no padding), without calling any
    pooling function.

    Example:
        x = torch.arange(16.0).view(1, 1, 4, 4)
        max_pool2d_by_hand(x, 2, 2) -> tensor([[[[5., 7.], [13., 15.]]]])

    Hint: x.unfold(2, kernel, stride).unfold(3, kernel, stride) gives (B, C, H', W', kernel, kernel) windows, one
    every `stride` pixels; take the max over the last two dimensions. A step of 1 instead of `stride` gives
    overlapping windows and the wrong size.
    """
    raise NotImplementedError("Exercise 3: max_pool2d_by_hand")


def make_small_cnn(num_classes: int = 10) -> nn.Module:
    """Exercise 4: a small CNN with the right flatten size.

    Build a network for (B, 3, 32, 32) images:
        Conv2d(3, 16, 3, padding=1) -> ReLU -> MaxPool2d(2)
        Conv2d(16, 32, 3, padding=1) -> ReLU -> MaxPool2d(2)
        Flatten -> Linear(?, num_classes)
    and work out `?` yourself. The output is (B, num_classes) logits.

    Example:
        make_small_cnn(10)(torch.randn(4, 3, 32, 32)).shape == (4, 10)

    Hint: padding=1 keeps 3x3 convolutions size-preserving, each MaxPool2d(2) halves the size: 32 -> 16 -> 8, so
    the flattened features are 32 channels * 8 * 8. Without the padding you would get 6x6, and a Linear sized for
    the wrong number fails with "mat1 and mat2 shapes cannot be multiplied".
    """
    raise NotImplementedError("Exercise 4: make_small_cnn")


def make_image_dataset(images: np.ndarray, labels: np.ndarray) -> Dataset:
    """Exercise 5: a Dataset whose __getitem__ returns what a CNN wants.

    `images` is a numpy uint8 array (N, H, W, 3) as PIL, OpenCV or CIFAR-10's .data store them (HWC), `labels` an
    int array (N,). Return a torch.utils.data.Dataset with __len__ == N whose item i is
    (float32 tensor (3, H, W) with values in [0, 1], int label).

    Example:
        ds = make_image_dataset(np.zeros((5, 8, 6, 3), np.uint8), np.arange(5))
        x, y = ds[2]    # x.shape == (3, 8, 6), x.dtype == torch.float32, y == 2

    Hint: write a small class with __init__, __len__ and __getitem__. torch.from_numpy(img).permute(2, 0, 1)
    turns HWC into CHW; .float() / 255 scales. A plain .view(3, H, W) has the right shape but mixes up pixels.
    """
    raise NotImplementedError("Exercise 5: make_image_dataset")


def pad_collate(batch: list) -> tuple:
    """Exercise 6: a collate_fn for images of different sizes.

    `batch` is a list of (image (C, H_i, W_i) tensor, int label). Return (images, sizes, labels):
    images (B, C, H_max, W_max) with each image in the top-left corner and zeros to its right and below,
    sizes a long tensor (B, 2) of each original (H_i, W_i), labels a long tensor (B,).

    Example:
        images, sizes, labels = pad_collate([(torch.ones(1, 2, 3), 0), (torch.ones(1, 4, 2), 1)])
        images.shape == (2, 1, 4, 3); sizes.tolist() == [[2, 3], [4, 2]]; labels.tolist() == [0, 1]

    Hint: F.pad's tuple starts with the LAST dimension: F.pad(img, (0, W_max - W, 0, H_max - H)) pads width on the
    right, then height at the bottom. Pass it to DataLoader(..., collate_fn=pad_collate).
    """
    raise NotImplementedError("Exercise 6: pad_collate")


def normalise_with_channel_stats(images: torch.Tensor) -> tuple:
    """Exercise 7: normalise a dataset with its per-channel statistics.

    `images` is a float tensor (N, C, H, W): the whole training set. Compute each channel's mean and std over
    all images and all positions, and return (normalised images, mean (C,), std (C,)), where
    normalised = (images - mean) / std per channel (use the unbiased std, torch's default), a new tensor: the
    caller's images stay as they were.

    Example:
        x = torch.rand(10, 3, 4, 4)
        out, mean, std = normalise_with_channel_stats(x)
        out[:, 0].mean() ~ 0 and out[:, 0].std() ~ 1; mean.shape == std.shape == (3,)

    Hint: reduce over dims (0, 2, 3), then reshape to (1, C, 1, 1) to broadcast. Statistics per image
    (dims (2, 3) only) would erase the differences in brightness between images, and the test set must be
    normalised with these same training numbers.
    """
    raise NotImplementedError("Exercise 7: normalise_with_channel_stats")


def prepare_for_transfer(model: nn.Module, num_classes: int) -> list:
    """Exercise 8: freeze a backbone and give it a new head.

    `model` has a final linear layer `model.fc` (as torchvision's ResNets do). Replace model.fc with a new
    nn.Linear(model.fc.in_features, num_classes), freeze every other parameter, and return the list of parameters
    the optimizer should receive (those of the new head, and only those).

    Example:
        params = prepare_for_transfer(resnet18(), 5)
        optimizer = torch.optim.SGD(params, lr=0.01)    # trains model.fc only

    Hint: model.requires_grad_(False) first, then assign the new head (a new layer's parameters require grad by
    default). Return list(model.fc.parameters()): the optimizer should hold only what it trains. Handing it
    model.parameters() drags every frozen tensor along, and once you unfreeze for fine-tuning they would silently
    train at the head's learning rate.
    """
    raise NotImplementedError("Exercise 8: prepare_for_transfer")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from exercise_harness import report

    sys.exit(report(__file__))

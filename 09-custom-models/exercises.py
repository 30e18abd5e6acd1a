"""Module 09 exercises: custom models, ensembles, mixed precision, distributed, Lightning, ONNX and custom ops.

Replace each `raise NotImplementedError(...)` with your code, then check your work with either
    .venv/bin/python 09-custom-models/exercises.py    # done / failing / to do, and the next hint
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 09-ex      # the same checks, via pytest
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 09-ex03    # exercise 3 only
(from the repository's root folder; with the venv activated, plain `python` works too). Unfinished exercises
are skipped with a hint; the first command exits non-zero while an exercise you attempted fails.

The lessons 01-07 of this folder show every idea needed here.
"""

import numpy as np  # noqa: F401  (exercise 4 may use it)
import torch
import torch.distributed as dist  # noqa: F401  (exercise 6: call dist.all_reduce and dist.get_world_size)
import torch.nn as nn
import torch.nn.functional as F  # noqa: F401


def residual_block(channels: int) -> nn.Module:
    """Exercise 1: a residual block.

    Return an nn.Module whose attribute `body` is
        nn.Sequential(Conv2d(channels, channels, 3, padding=1, bias=False), BatchNorm2d(channels), ReLU(),
                      Conv2d(channels, channels, 3, padding=1, bias=False), BatchNorm2d(channels))
    and whose forward(x) returns relu(x + body(x)): the input skips around the body and is added back before
    the last activation. The output has the input's shape (B, channels, H, W).

    Example:
        block = residual_block(8)
        block(torch.randn(2, 8, 5, 5)).shape == (2, 8, 5, 5)
        # with block.body[-1].weight zeroed (a common init trick), block(x) == relu(x): the block starts as identity

    Hint: write a small nn.Module subclass: __init__ builds self.body, forward returns F.relu(x + self.body(x)).
    The ReLU goes after the addition; applying it to body(x) before adding gives a different function, and
    leaving out "+ x" is a plain (non-residual) block.
    """
    raise NotImplementedError("Exercise 1: residual_block")


def make_normalizer(mean: torch.Tensor, std: torch.Tensor) -> nn.Module:
    """Exercise 2: constants that belong to the model, as registered buffers.

    `mean` and `std` are (C,) tensors. Return an nn.Module whose forward(x) for x of shape (B, C, H, W) returns
    (x - mean) / std per channel, storing mean and std as buffers named "mean" and "std": the module's own
    copies, saved in the state_dict, moved by .to(device/dtype) with the module, and never returned by
    .parameters() (an optimizer must not train them).

    Example:
        norm = make_normalizer(torch.tensor([0.5, 0.2]), torch.tensor([0.1, 0.4]))
        sorted(norm.state_dict()) == ["mean", "std"]; list(norm.parameters()) == []
        norm.double().mean.dtype == torch.float64

    Hint: self.register_buffer("mean", mean.view(1, -1, 1, 1).clone()) in __init__ (the view makes it
    broadcast over (B, C, H, W)). nn.Parameter would be trained by the optimizer; a plain attribute
    (self.mean = mean) is missing from state_dict and stays behind on .to(...).
    """
    raise NotImplementedError("Exercise 2: make_normalizer")


def ensemble_predict(models: list, x: torch.Tensor) -> torch.Tensor:
    """Exercise 3: an ensemble's prediction, averaging probabilities.

    `models` is a list of classifiers that map x (B, ...) to logits (B, C). Return the ensemble's class
    probabilities (B, C): the mean over the members of each member's softmax. Members must predict in eval mode
    (BatchNorm running statistics, no dropout) and without building an autograd graph. Members may differ in more
    than their weights (the check's do), so loop over them: lesson 02's vmap ensemble needs identical members.

    Example:
        probs = ensemble_predict([model_a, model_b], x)
        probs.shape == (B, C); probs.sum(1) is all ones

    Hint: for each model: model.eval(), then under torch.no_grad() append model(x).softmax(dim=1); return
    torch.stack(list).mean(0). Averaging the logits and then taking one softmax is a different ensemble (it lets
    one over-confident member dominate), and forgetting eval() leaves dropout on.
    """
    raise NotImplementedError("Exercise 3: ensemble_predict")


def calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> float:
    """Exercise 4: expected calibration error (ECE).

    probs (N, C) are predicted class probabilities, labels (N,) the true classes. Each prediction has a
    confidence (its largest probability) and is correct or not (argmax == label). Split the confidences into
    n_bins equal-width bins over (0, 1]: bin b holds confidences in (b/n_bins, (b+1)/n_bins]. Return
        ECE = sum over non-empty bins of (bin size / N) * |accuracy in the bin - mean confidence in the bin|
    as a Python float.

    Example:
        probs = torch.tensor([[0.85, 0.15], [0.65, 0.35], [0.28, 0.72]]); labels = torch.tensor([0, 1, 1])
        # confidences 0.85 (right), 0.65 (wrong), 0.72 (right), one per bin: ECE = (0.15 + 0.65 + 0.28) / 3 = 0.36

    Hint: conf, pred = probs.max(dim=1); bin index = ceil(conf * n_bins) - 1 (clamped to 0..n_bins-1). Weight each
    bin's gap by its share of the samples: a plain mean over bins lets a bin of 2 samples count as much as one of
    2,000. The confidence is the top probability, not the probability of the true class.
    """
    raise NotImplementedError("Exercise 4: calibration_error")


def amp_training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer, scaler,
                      device_type: str = "cpu", dtype: torch.dtype = torch.bfloat16) -> float:
    """Exercise 5: one mixed-precision training step with a GradScaler.

    Do one complete optimizer step on the batch (x, y) with the cross-entropy loss: clear the old gradients, run
    the forward pass and the loss under torch.autocast(device_type, dtype=dtype), backpropagate the *scaled*
    loss, let the scaler step the optimizer (it unscales the gradients first and skips the step if they
    overflowed), and update the scaler. Return the (unscaled) loss as a Python float.

    Example:
        scaler = torch.amp.GradScaler("cpu")      # "cuda" with float16 on a GPU
        loss = amp_training_step(model, x, y, optimizer, scaler, "cpu", torch.bfloat16)

    Hint: optimizer.zero_grad(); with torch.autocast(device_type, dtype=dtype): loss = F.cross_entropy(model(x), y);
    scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update(). Calling optimizer.step() yourself
    applies gradients still multiplied by the scale (65,536 by default), and without scaler.update() the scale
    never adapts.
    """
    raise NotImplementedError("Exercise 5: amp_training_step")


def average_gradients(model: nn.Module) -> None:
    """Exercise 6: the gradient average DistributedDataParallel does for you.

    Every process (rank) has computed gradients on its own shard of the batch. Make every parameter's .grad the
    mean of that gradient over all ranks, in place: all_reduce with SUM, then divide by the world size.
    Parameters without a gradient (frozen, or unused in this step) have .grad None: skip them.

    Example:
        loss.backward()
        average_gradients(model)    # now every rank holds the same, averaged, gradients
        optimizer.step()

    Hint: for p in model.parameters(): if p.grad is not None: dist.all_reduce(p.grad, op=dist.ReduceOp.SUM);
    p.grad /= dist.get_world_size(). Call them as dist.all_reduce / dist.get_world_size (the check simulates a
    second rank through them). Without the division, the step is world_size times too large. SUM then divide is
    the portable form: ReduceOp.AVG exists on NCCL and on current gloo, but not on every backend and version.
    """
    raise NotImplementedError("Exercise 6: average_gradients")


def lightning_classifier(net: nn.Module, lr: float):
    """Exercise 7: a LightningModule's training_step and configure_optimizers.

    Return a pytorch_lightning.LightningModule that wraps `net` (a classifier returning logits):
    - forward(x) returns net(x);
    - training_step(batch, batch_idx) takes batch = (x, y), logs the cross-entropy loss as "train_loss" with
      self.log, and returns that loss (Lightning backpropagates what training_step returns);
    - configure_optimizers() returns torch.optim.Adam over all the module's parameters with learning rate `lr`.

    Example:
        module = lightning_classifier(nn.Linear(4, 3), lr=0.01)
        loss = module.training_step((torch.randn(8, 4), torch.randint(3, (8,))), 0)   # a scalar tensor
        pl.Trainer(max_epochs=1).fit(module, loader)

    Hint: import pytorch_lightning as pl inside this function (it takes seconds to import), define
    class Module(pl.LightningModule) with __init__ storing self.net = net and self.lr = lr (after
    super().__init__()), and return Module(). A training_step that returns nothing trains nothing: Lightning
    skips the optimizer step.
    """
    raise NotImplementedError("Exercise 7: lightning_classifier")


def onnx_parity(model: nn.Module, onnx_path: str, inputs: list) -> float:
    """Exercise 8: check an exported ONNX model against the PyTorch model it came from.

    Run `model` (in eval mode, without gradients) and an onnxruntime.InferenceSession of `onnx_path` on every
    tensor in `inputs` (e.g. batches of several sizes), and return the largest absolute difference between the two
    outputs over all inputs, as a Python float. The ONNX model has one input and one output.

    Example:
        worst = onnx_parity(model, "model.onnx", [torch.randn(1, 4), torch.randn(32, 4)])
        assert worst < 1e-4

    Hint: import onnxruntime as ort; sess = ort.InferenceSession(onnx_path); name = sess.get_inputs()[0].name;
    out = sess.run(None, {name: x.numpy()})[0]. Compare with model(x).numpy() under torch.no_grad(), after
    model.eval(): a model left in train mode runs dropout, and a check of the first input alone misses a mismatch
    that only shows up at another input.
    """
    raise NotImplementedError("Exercise 8: onnx_parity")


def bias_gelu_kernel(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Given (not an exercise): stands in for a compiled C++/CUDA op, gelu(x + bias) over the last dimension.

    Like a real kernel it trusts its inputs: it walks x's memory as one flat array, so a non-contiguous x gives
    wrong numbers without any error, and it assumes bias has exactly x.shape[-1] elements.
    """
    flat = torch.as_strided(x, (x.numel(),), (1,))  # the raw memory in storage order, as a C++ loop reads it
    return F.gelu(flat + bias.repeat(x.numel() // bias.numel())).view(x.shape)


def checked_bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Exercise 9: the Python wrapper of a custom op, with input validation.

    Return bias_gelu_kernel(x, bias) (given above) after checking its inputs the way TORCH_CHECK does in C++,
    with errors that tell the caller what to fix:
    - TypeError if x or bias is not a torch.Tensor (the message says "tensor"), or if x is not float32 or float64
      or bias.dtype != x.dtype (the message says "dtype");
    - ValueError if bias is on another device than x ("device"), if bias is not 1-D with x.shape[-1] elements
      ("shape"), or if x is not contiguous ("contiguous").

    Example:
        checked_bias_gelu(torch.randn(4, 3), torch.randn(3))        # == F.gelu(x + bias)
        checked_bias_gelu(torch.randn(3, 4).t(), torch.randn(3))    # ValueError: x must be contiguous ...

    Hint: isinstance(x, torch.Tensor); x.dtype in (torch.float32, torch.float64); x.device != bias.device;
    bias.dim() == 1 and bias.shape[0] == x.shape[-1]; x.is_contiguous(). Without the contiguity check the kernel
    returns wrong numbers for a transposed x and nobody notices: that is the bug validation exists to catch.
    """
    raise NotImplementedError("Exercise 9: checked_bias_gelu")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from exercise_harness import report

    sys.exit(report(__file__))

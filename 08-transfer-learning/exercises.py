"""Module 08 exercises: the moves of transfer learning, one at a time.

Replace each `raise NotImplementedError(...)` with your code, then check your work with either
    .venv/bin/python 08-transfer-learning/exercises.py    # done / failing / to do, and the next hint
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 08-ex      # the same checks, via pytest
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 08-ex03    # exercise 3 only
(from the repository's root folder; with the venv activated, plain `python` works too). Unfinished exercises
are skipped with a hint; the first command exits non-zero while an exercise you attempted fails.

The lessons 01-06 of this folder show every idea needed here.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F  # noqa: F401


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Exercise 1: freeze everything but the head, BatchNorm included.

    `model` has its classifier in `model.fc` (torchvision's ResNet layout). Make every parameter outside model.fc
    stop learning (requires_grad False), keep model.fc trainable, and put every BatchNorm layer outside the head in
    eval mode so that a forward pass no longer changes its running statistics. Return the model.

    Example:
        model = freeze_backbone(resnet18())
        model(x)    # model.bn1.running_mean is unchanged

    Hint: model.requires_grad_(False), then model.fc.requires_grad_(True). requires_grad does not touch BatchNorm's
    running_mean/running_var: they are buffers, updated by every forward pass in train mode. Loop over
    model.modules() and call .eval() on each nn.modules.batchnorm._BatchNorm (not on the head).
    """
    raise NotImplementedError("Exercise 1: freeze_backbone")


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Exercise 2: a new head for N classes, on the ResNet and the VGG layouts.

    torchvision's ResNets end in `model.fc` (a Linear); VGG, AlexNet, MobileNet and EfficientNet end in
    `model.classifier`, an nn.Sequential whose last layer is the Linear. Replace that final Linear with a new
    nn.Linear(same in_features, num_classes) and keep everything else (the hidden classifier layers too).
    Return the model.

    Example:
        replace_head(resnet18(), 5).fc                      -> Linear(512, 5)
        replace_head(vgg11(), 5).classifier[-1]             -> Linear(4096, 5); classifier[0] still Linear(25088, 4096)

    Hint: if hasattr(model, "fc"): read model.fc.in_features; else the last entry: model.classifier[-1]. Assigning
    model.classifier[-1] = nn.Linear(...) works on a Sequential. Replacing the whole classifier with one Linear
    throws away its pretrained hidden layers.
    """
    raise NotImplementedError("Exercise 2: replace_head")


def discriminative_param_groups(model: nn.Module, head_lr: float, backbone_factor: float = 0.1) -> list:
    """Exercise 3: parameter groups with a smaller learning rate for the backbone.

    Return a list of two dicts for torch.optim: {"params": [...], "lr": head_lr * backbone_factor} with the
    backbone's *trainable* parameters (every parameter outside model.fc that requires grad), then
    {"params": [...], "lr": head_lr} with model.fc's parameters. Frozen parameters go nowhere.

    Example:
        groups = discriminative_param_groups(model, 1e-3)
        torch.optim.AdamW(groups)       # backbone at 1e-4, head at 1e-3

    Hint: loop over model.named_parameters(); skip p.requires_grad False; names starting with "fc." are the head.
    An optimizer holding frozen parameters wastes memory on their state and trains them the moment they are
    unfrozen, at a learning rate you never chose for them.
    """
    raise NotImplementedError("Exercise 3: discriminative_param_groups")


def count_parameters(model: nn.Module) -> tuple:
    """Exercise 4: (trainable, total) parameter counts.

    Return two ints: the number of scalar parameters that require grad, and the number of all scalar parameters.
    A weight shared by two layers (tied weights) is one parameter: count it once.

    Example:
        nn.Linear(3, 2) -> (8, 8);  after .requires_grad_(False) -> (0, 8)

    Hint: p.numel() is the number of scalars in a tensor; sum it over model.parameters(), with and without the
    requires_grad filter. len(list(model.parameters())) counts tensors, not parameters.
    """
    raise NotImplementedError("Exercise 4: count_parameters")


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Exercise 5: the gradient reversal layer of DANN.

    Forward: return x unchanged. Backward: the gradient flowing back to x is -lambd times the incoming one.
    Write it as a torch.autograd.Function (forward and backward staticmethods) and return Function.apply(x, lambd).

    Example:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        grad_reverse(x, 0.5).sum().backward()     # x.grad == tensor([-0.5, -0.5])

    Hint: in forward, ctx.lambd = lambd and return x.view_as(x) (a new tensor, same values); in backward(ctx, grad)
    return -ctx.lambd * grad, None (None: no gradient for lambd). Negating in forward changes the features the
    classifier sees; the reversal belongs to the backward pass only.
    """
    raise NotImplementedError("Exercise 5: grad_reverse")


def recompute_bn_stats(model: nn.Module, batches: list) -> nn.Module:
    """Exercise 6: recompute BatchNorm statistics on new data (AdaBN).

    `batches` is a list of equal-size input tensors from the new domain. Reset every BatchNorm layer's running
    statistics, make them an exact average over the batches (each batch counted once, not an exponential moving
    average), run the batches through the model without gradients and without changing any weight, and return the
    model in eval mode.

    Example:
        recompute_bn_stats(model, [x_target[:64], x_target[64:128]])
        model.bn1.running_mean     # now the mean of bn1's inputs over those 128 target images (two batches of 64;
                                   # a smaller last batch would count as much as a full one: drop it)

    Hint: for each _BatchNorm m: m.reset_running_stats(); m.momentum = None (a cumulative average). Then
    model.train() (BatchNorm only updates its statistics in train mode) inside torch.no_grad(), forward each batch,
    and model.eval(). Without the reset and momentum=None you keep 0.9**k of the old domain's statistics.
    """
    raise NotImplementedError("Exercise 6: recompute_bn_stats")


def features_with_hook(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Exercise 7: a forward-hook feature extractor.

    Return the output of the submodule named `layer` (a name from model.named_modules(), such as "layer2") when
    `x` goes through the model: in eval mode, without gradients, and with the hook removed afterwards.

    Example:
        f = features_with_hook(resnet18(), "layer3", torch.randn(2, 3, 64, 64))    # (2, 256, 4, 4)

    Hint: module = dict(model.named_modules())[layer]; handle = module.register_forward_hook(fn) where
    fn(module, inputs, output) stores output.clone() (a later ReLU(inplace=True), as in torchvision's ResNets,
    overwrites the tensor itself); model.eval() and torch.no_grad() around model(x); then handle.remove().
    Forgetting eval() makes BatchNorm normalise with this batch's statistics: features then depend on what else is
    in the batch.
    """
    raise NotImplementedError("Exercise 7: features_with_hook")


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int = 5) -> float:
    """Exercise 8: top-k accuracy.

    `logits` is (N, C), `targets` (N,) class indices. Return the fraction (a float in [0, 1]) of rows whose target is
    among the k largest logits.

    Example:
        topk_accuracy(torch.tensor([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05]]), torch.tensor([2, 2]), k=2) == 0.5

    Hint: logits.topk(k, dim=1).indices is (N, k); compare it with targets[:, None] and take .any(dim=1), then the
    mean. Summing the (N, k) matches and dividing by N*k gives a number k times too small.
    """
    raise NotImplementedError("Exercise 8: topk_accuracy")


def load_matching_weights(model: nn.Module, state_dict: dict) -> tuple:
    """Exercise 9: load a partial state dict and report what was skipped.

    Copy into `model` every tensor of `state_dict` whose name exists in the model with the same shape. Return
    (loaded, skipped): two sorted lists of names from state_dict; skipped holds the names the model lacks or whose
    shapes differ (a head for a different number of classes).

    Example:
        loaded, skipped = load_matching_weights(resnet18(num_classes=10), resnet18().state_dict())
        skipped == ["fc.bias", "fc.weight"]

    Hint: own = model.state_dict(); keep = {k: v for k, v in state_dict.items() if k in own and v.shape ==
    own[k].shape}; model.load_state_dict(keep, strict=False). strict=False forgives missing and unexpected names,
    not a shape mismatch: that still raises.
    """
    raise NotImplementedError("Exercise 9: load_matching_weights")


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """Exercise 10: the preprocessing ImageNet weights expect.

    `images` is a uint8 tensor (B, 3, H, W) with values 0-255. Return float32 images scaled to [0, 1] and then
    normalised per channel with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), the numbers in
    every torchvision ImageNet weights' transforms().

    Example:
        imagenet_normalise(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8))[0, :, 0, 0]  # ~ (2.249, 2.429, 2.640)

    Hint: images.float() / 255, then (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1). Statistics of your own
    data, (0.5, 0.5, 0.5), or forgetting the /255 all give the pretrained network inputs it never saw.
    """
    raise NotImplementedError("Exercise 10: imagenet_normalise")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from exercise_harness import report

    sys.exit(report(__file__))

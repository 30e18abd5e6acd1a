"""Checks for 06-cnn-image-processing/exercises.py, one check_<name>(fn) per exercise, in exercise order.

Expectations are computed independently: by hand, or with torch's own conv / pooling ops.
"""

import contextlib
from unittest import mock

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from check_utils import assert_close, describe


@contextlib.contextmanager
def _forbidden(what: str, *targets):
    """Make each (owner, attribute) raise while the learner's function runs: the exercise says not to call them."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"expected {what}, got a call to a built-in that does the whole job")

    with contextlib.ExitStack() as stack:
        for owner, name in targets:
            if hasattr(owner, name):
                stack.enter_context(mock.patch.object(owner, name, refuse))
        yield


CONV_BUILTINS = [(F, "conv2d"), (torch, "conv2d"), (torch, "convolution"), (torch, "_convolution")]
POOL_BUILTINS = [(F, "max_pool2d"), (F, "max_pool2d_with_indices"), (torch, "max_pool2d"),
                 (torch, "max_pool2d_with_indices"), (F, "adaptive_max_pool2d"), (torch, "adaptive_max_pool2d")]


def check_conv_output_size(fn):
    cases = [  # (n, kernel, stride, padding, dilation)
        (32, 3, 1, 1, 1), (32, 5, 2, 0, 1), (28, 5, 1, 2, 1), (17, 3, 2, 1, 1), (32, 3, 1, 2, 2),
        (10, 3, 3, 0, 1), (224, 7, 2, 3, 1), (9, 2, 2, 0, 1), (15, 3, 1, 0, 3),
    ]
    for n, k, s, p, d in cases:
        conv = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d, device="meta")
        expected = conv(torch.empty(1, 1, n, n, device="meta")).shape[-1]
        got = fn(n, k, stride=s, padding=p, dilation=d)
        assert isinstance(got, int) and not isinstance(got, bool), (
            f"conv_output_size({n}, {k}, stride={s}, padding={p}, dilation={d}): expected an int, got {describe(got)} "
            "(floor division //: a layer cannot have half a pixel)"
        )
        assert got == expected, (
            f"conv_output_size({n}, {k}, stride={s}, padding={p}, dilation={d}): expected {expected} "
            f"(what nn.Conv2d produces), got {got}"
        )


def check_conv2d_unfold(fn):
    for b, c, o, k, s, p, h, w in [(2, 3, 4, 3, 1, 1, 8, 8), (1, 2, 5, 3, 2, 0, 9, 7), (2, 4, 6, 5, 2, 2, 11, 10)]:
        x, weight, bias = torch.randn(b, c, h, w), torch.randn(o, c, k, k), torch.randn(o)
        expected = F.conv2d(x, weight, bias, stride=s, padding=p)
        with _forbidden("a computation with F.unfold and a matmul (no F.conv2d, torch.conv2d or nn.Conv2d)",
                        *CONV_BUILTINS):
            got = fn(x, weight, bias, stride=s, padding=p)
        assert_close(got, expected, f"stride={s}, padding={p}: F.conv2d's values", atol=1e-4)


def check_max_pool2d_by_hand(fn):
    x = torch.arange(16.0).view(1, 1, 4, 4)
    with _forbidden("max pooling by hand (no F.max_pool2d, nn.MaxPool2d or other pooling function)", *POOL_BUILTINS):
        got = fn(x, 2, 2)
    expected = torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]])
    assert_close(got, expected, "on arange(16).view(1, 1, 4, 4) with kernel 2, stride 2", atol=0.0)
    for k, s, shape in [(2, 2, (2, 3, 8, 8)), (3, 2, (2, 3, 9, 11)), (3, 1, (1, 2, 6, 7)), (2, 3, (1, 1, 10, 10))]:
        x = torch.randn(shape)
        expected = F.max_pool2d(x, k, s)
        with _forbidden("max pooling by hand (no F.max_pool2d, nn.MaxPool2d or other pooling function)",
                        *POOL_BUILTINS):
            got = fn(x, k, s)
        assert_close(got, expected, f"kernel {k}, stride {s} on an input of shape {shape}: F.max_pool2d's values",
                     atol=0.0)


def check_make_small_cnn(fn):
    for num_classes in (10, 3):
        model = fn(num_classes)
        assert isinstance(model, nn.Module), f"expected an nn.Module, got {describe(model)}"
        out = model(torch.randn(4, 3, 32, 32))
        assert tuple(out.shape) == (4, num_classes), f"expected output (4, {num_classes}), got {tuple(out.shape)}"
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert len(convs) == 2 and len(linears) == 1, (
            f"expected 2 Conv2d and 1 Linear layers, got {len(convs)} and {len(linears)}"
        )
        assert all(c.padding in ((1, 1), "same") for c in convs), (  # "same" is padding 1 for a 3x3 kernel
            f"expected both convolutions with padding=1, got {[c.padding for c in convs]}"
        )
        flat = 32 * 8 * 8  # 32 -> 16 -> 8 after two size-preserving convs and two 2x2 pools
        assert linears[0].in_features == flat, f"expected Linear({flat}, {num_classes}), got {linears[0]}"
        expected_params = (3 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (flat * num_classes + num_classes)
        params = sum(p.numel() for p in model.parameters())
        assert params == expected_params, f"expected {expected_params:,} parameters, got {params:,}"
        # the forward pass with the network's own weights: a missing ReLU or another pooling changes it
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            h = x
            for conv in convs:
                h = F.max_pool2d(F.relu(F.conv2d(h, conv.weight, conv.bias, padding=1)), 2)
            expected = F.linear(h.flatten(1), linears[0].weight, linears[0].bias)
            assert_close(model(x), expected, "model(x) with its own weights should be Conv2d -> ReLU -> MaxPool2d(2), "
                         "twice, then Flatten -> Linear", atol=1e-5)


def check_make_image_dataset(fn):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 6, 4, 3), dtype=np.uint8)  # (N, H, W, C); H != W catches swaps
    labels = np.array([3, 1, 4, 1, 5])
    ds = fn(images, labels)
    assert len(ds) == 5, f"expected len(dataset) == 5, got {len(ds)}"
    for i in (0, 3):
        x, y = ds[i]
        assert isinstance(x, torch.Tensor), f"expected item {i}'s image to be a tensor, got {describe(x)}"
        assert tuple(x.shape) == (3, 6, 4), f"expected a CHW image of shape (3, 6, 4), got {tuple(x.shape)}"
        assert x.dtype == torch.float32, f"expected float32, got {x.dtype}"
        expected = torch.from_numpy(np.transpose(images[i], (2, 0, 1)).astype(np.float32) / 255.0)
        assert_close(x, expected, f"item {i}: channel c, row r, column q should be images[{i}, r, q, c] / 255 (a "
                     "reshape instead of a permute mixes up the pixels)", atol=1e-6)
        assert int(y) == int(labels[i]), f"item {i}: expected label {labels[i]}, got {describe(y)}"


def check_pad_collate(fn):
    a = torch.arange(1, 7, dtype=torch.float32).view(1, 2, 3)  # (C, H, W) = (1, 2, 3)
    b = torch.arange(1, 9, dtype=torch.float32).view(1, 4, 2) * 10  # (1, 4, 2)
    c = torch.ones(1, 1, 1) * 7
    images, sizes, labels = fn([(a, 0), (b, 2), (c, 1)])
    assert tuple(images.shape) == (3, 1, 4, 3), f"expected images (3, 1, 4, 3), got {describe(images)}"
    assert sizes.tolist() == [[2, 3], [4, 2], [1, 1]], f"expected sizes [[2, 3], [4, 2], [1, 1]], got {describe(sizes)}"
    assert labels.tolist() == [0, 2, 1], f"expected labels [0, 2, 1], got {describe(labels)}"
    assert labels.dtype == torch.long and sizes.dtype == torch.long, "expected long tensors for sizes and labels"
    expected = torch.zeros(3, 1, 4, 3)
    expected[0, :, :2, :3] = a
    expected[1, :, :4, :2] = b
    expected[2, :, :1, :1] = c
    assert_close(images, expected, "each image in the top-left corner, zeros to its right and below", atol=0.0)


def check_normalise_with_channel_stats(fn):
    x = torch.rand(20, 3, 5, 6)
    x = x * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1) + torch.linspace(0, 3, 20).view(20, 1, 1, 1)
    original = x.clone()
    out, mean, std = fn(x)
    assert torch.equal(x, original), (
        "expected the caller's images unchanged (a new tensor back): normalising in place rewrites the training set "
        "the caller still holds")
    flat = x.permute(1, 0, 2, 3).reshape(3, -1)  # (C, N*H*W)
    exp_mean, exp_std = flat.mean(dim=1), flat.std(dim=1)
    assert tuple(mean.shape) == (3,) and tuple(std.shape) == (3,), (
        f"expected mean and std of shape (3,), got {tuple(mean.shape)} and {tuple(std.shape)}"
    )
    assert_close(mean, exp_mean, "the per-channel means over the whole dataset (all images and pixels)")
    assert_close(std, exp_std, "the per-channel stds over the whole dataset", atol=1e-5)
    expected = (x - exp_mean.view(1, 3, 1, 1)) / exp_std.view(1, 3, 1, 1)
    assert_close(out, expected, "(images - dataset mean) / dataset std per channel (per-image statistics erase the "
                 "brightness differences between images)", atol=1e-4)


class _TinyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1))


def check_prepare_for_transfer(fn):
    model = _TinyBackbone()
    old_fc = model.fc
    backbone = {name: p for name, p in model.named_parameters() if not name.startswith("fc.")}
    params = fn(model, 4)
    assert model.fc is not old_fc and isinstance(model.fc, nn.Linear), "expected model.fc replaced by a new nn.Linear"
    assert (model.fc.in_features, model.fc.out_features, model.fc.bias is not None) == (8, 4, True), (
        f"expected the new head nn.Linear(8, 4) (with its bias), got {model.fc}"
    )
    still = [name for name, p in backbone.items() if p.requires_grad]
    assert not still, f"expected every backbone parameter frozen (requires_grad False), still trainable: {still}"
    assert all(p.requires_grad for p in model.fc.parameters()), "expected the new head's parameters to be trainable"
    assert isinstance(params, list), (
        f"expected a list of parameters, got {describe(params)} (model.fc.parameters() is a generator: an optimizer "
        "would empty it, and a second use finds nothing; list(...) it)")
    head_ids = {id(p) for p in model.fc.parameters()}
    assert {id(p) for p in params} == head_ids and len(params) == len(head_ids), (
        f"expected exactly the head's {len(head_ids)} parameters for the optimizer, got {len(params)} tensors "
        f"({sum(id(p) not in head_ids for p in params)} of them not in model.fc)"
    )
    out = model(torch.randn(2, 3, 6, 6))
    out.sum().backward()
    assert all(p.grad is None for p in backbone.values()), "expected no gradient to reach the frozen backbone"

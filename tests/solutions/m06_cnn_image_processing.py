"""Reference solutions for 06-cnn-image-processing/exercises.py, and the common mistakes each check must reject."""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset


# Exercise 1
def conv_output_size(n, kernel, stride=1, padding=0, dilation=1):
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_output_size__forgot_padding(n, kernel, stride=1, padding=0, dilation=1):
    return (n - dilation * (kernel - 1) - 1) // stride + 1


def conv_output_size__padding_on_one_side(n, kernel, stride=1, padding=0, dilation=1):
    return (n + padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_output_size__true_division(n, kernel, stride=1, padding=0, dilation=1):
    return (n + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1  # 14.5 for (32, 5, stride=2)


# Exercise 2
def conv2d_unfold(x, weight, bias, stride=1, padding=0):
    b, _, h, w = x.shape
    o, _, k, _ = weight.shape
    cols = F.unfold(x, k, padding=padding, stride=stride)  # (B, C*k*k, L)
    h_out, w_out = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    out = weight.view(o, -1) @ cols  # (B, O, L)
    return out.view(b, o, h_out, w_out) + bias.view(1, o, 1, 1)


def conv2d_unfold__transposed_view(x, weight, bias, stride=1, padding=0):
    b, _, h, w = x.shape
    o, _, k, _ = weight.shape
    cols = F.unfold(x, k, padding=padding, stride=stride)
    h_out, w_out = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    out = cols.transpose(1, 2) @ weight.view(o, -1).T  # (B, L, O)
    return out.reshape(b, o, h_out, w_out) + bias.view(1, o, 1, 1)  # viewed without moving O forward


def conv2d_unfold__calls_torch_conv2d(x, weight, bias, stride=1, padding=0):
    return torch.conv2d(x, weight, bias, stride, padding)  # right numbers, but not the exercise: the check forbids it


# Exercise 3
def max_pool2d_by_hand(x, kernel, stride):
    windows = x.unfold(2, kernel, stride).unfold(3, kernel, stride)  # (B, C, H', W', k, k)
    return windows.amax(dim=(-2, -1))


def max_pool2d_by_hand__ignores_stride(x, kernel, stride):
    return x.unfold(2, kernel, 1).unfold(3, kernel, 1).amax(dim=(-2, -1))


def max_pool2d_by_hand__uses_nn_maxpool(x, kernel, stride):
    return nn.MaxPool2d(kernel, stride)(x)  # right numbers, but not by hand


# Exercise 4
def make_small_cnn(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, num_classes),
    )


def make_small_cnn__flatten_size_wrong(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 16 * 16, num_classes),  # forgot the second pool halves the size again
    )


def make_small_cnn__no_padding(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 6 * 6, num_classes),  # runs, but not the network asked for
    )


def make_small_cnn__no_relu(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.MaxPool2d(2),  # no activation: the convolutions collapse into one
        nn.Conv2d(16, 32, 3, padding=1), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, num_classes),
    )


def make_small_cnn__average_pooling(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, num_classes),
    )


# Exercise 5
class _ImageArrayDataset(Dataset):
    def __init__(self, images, labels, chw: bool = True):
        self.images, self.labels, self.chw = images, labels, chw

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = torch.from_numpy(np.ascontiguousarray(self.images[i]))  # (H, W, C) uint8
        img = img.permute(2, 0, 1) if self.chw else img.reshape(img.shape[2], img.shape[0], img.shape[1])
        return img.float() / 255.0, int(self.labels[i])


def make_image_dataset(images, labels):
    return _ImageArrayDataset(images, labels)


def make_image_dataset__reshape_instead_of_permute(images, labels):
    return _ImageArrayDataset(images, labels, chw=False)


def make_image_dataset__keeps_hwc(images, labels):
    class HWC(_ImageArrayDataset):
        def __getitem__(self, i):
            return torch.from_numpy(self.images[i]).float() / 255.0, int(self.labels[i])

    return HWC(images, labels)


# Exercise 6
def pad_collate(batch):
    images, labels = zip(*batch)
    h_max = max(img.shape[1] for img in images)
    w_max = max(img.shape[2] for img in images)
    padded = [F.pad(img, (0, w_max - img.shape[2], 0, h_max - img.shape[1])) for img in images]
    sizes = torch.tensor([[img.shape[1], img.shape[2]] for img in images], dtype=torch.long)
    return torch.stack(padded), sizes, torch.tensor(labels, dtype=torch.long)


def pad_collate__pads_before(batch):
    images, labels = zip(*batch)
    h_max = max(img.shape[1] for img in images)
    w_max = max(img.shape[2] for img in images)
    padded = [F.pad(img, (w_max - img.shape[2], 0, h_max - img.shape[1], 0)) for img in images]  # left / top
    sizes = torch.tensor([[img.shape[1], img.shape[2]] for img in images], dtype=torch.long)
    return torch.stack(padded), sizes, torch.tensor(labels, dtype=torch.long)


# Exercise 7
def normalise_with_channel_stats(images):
    mean = images.mean(dim=(0, 2, 3))
    std = images.transpose(0, 1).reshape(images.shape[1], -1).std(dim=1)
    return (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1), mean, std


def normalise_with_channel_stats__in_place(images):
    mean = images.mean(dim=(0, 2, 3))
    std = images.transpose(0, 1).reshape(images.shape[1], -1).std(dim=1)
    return images.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1)), mean, std  # rewrites the caller's data


def normalise_with_channel_stats__per_image_stats(images):
    mean = images.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1): every image its own statistics
    std = images.std(dim=(2, 3), keepdim=True)
    return (images - mean) / std, mean.mean(dim=(0, 2, 3)), std.mean(dim=(0, 2, 3))


def normalise_with_channel_stats__one_global_stat(images):
    mean, std = images.mean(), images.std()
    c = images.shape[1]
    return (images - mean) / std, mean.repeat(c), std.repeat(c)


# Exercise 8
def prepare_for_transfer(model, num_classes):
    model.requires_grad_(False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return list(model.fc.parameters())


def prepare_for_transfer__returns_a_generator(model, num_classes):
    model.requires_grad_(False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model.fc.parameters()  # a generator: empty after its first use


def prepare_for_transfer__head_without_bias(model, num_classes):
    model.requires_grad_(False)
    model.fc = nn.Linear(model.fc.in_features, num_classes, bias=False)
    return list(model.fc.parameters())


def prepare_for_transfer__forgot_requires_grad_false(model, num_classes):
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return list(model.fc.parameters())


def prepare_for_transfer__passes_all_params(model, num_classes):
    model.requires_grad_(False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return list(model.parameters())


def prepare_for_transfer__froze_after_new_head(model, num_classes):
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    model.requires_grad_(False)  # freezes the new head too
    return list(model.fc.parameters())

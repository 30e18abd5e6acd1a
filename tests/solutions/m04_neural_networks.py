"""Reference solutions of 04-neural-networks/exercises.py, and the common mistakes each check must reject.

<name> is the reference solution; <name>__<what_went_wrong> is a realistic wrong answer.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# Exercise 1
def build_mlp(in_features, hidden, out_features):
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


def build_mlp__plain_list(in_features, hidden, out_features):
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features)]

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    return MLP()


def build_mlp__no_activation(in_features, hidden, out_features):
    return nn.Sequential(nn.Linear(in_features, hidden), nn.Linear(hidden, out_features))


# Exercise 2
def count_parameters(model, trainable_only=True):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_parameters__counts_tensors(model, trainable_only=True):
    return len([p for p in model.parameters() if p.requires_grad or not trainable_only])


def count_parameters__ignores_frozen(model, trainable_only=True):
    return sum(p.numel() for p in model.parameters())


def count_parameters__counts_shared_twice(model, trainable_only=True):
    total = 0
    for module in model.modules():  # a weight shared by two modules is visited once per module
        total += sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad or not trainable_only)
    return total


# Exercise 3
def linear_forward(x, weight, bias):
    return x @ weight.T + bias


def linear_forward__casts_to_float32(x, weight, bias):
    return x.float() @ weight.float().T + bias.float()  # float64 in, float32 out


def linear_forward__no_transpose(x, weight, bias):
    return x @ weight + bias


def linear_forward__calls_f_linear(x, weight, bias):
    return F.linear(x, weight, bias)  # right numbers, but the exercise is to write it by hand


# Exercise 4
def cross_entropy_from_logits(logits, targets):
    log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -log_probs[torch.arange(len(targets)), targets].mean()


def cross_entropy_from_logits__one_max_for_the_whole_batch(logits, targets):
    m = logits.max()  # a row of small logits beside a row of 1000s: exp(2 - 1000) is 0, log(0) is -inf
    log_probs = logits - m - (logits - m).exp().sum(dim=1, keepdim=True).log()
    return -log_probs[torch.arange(len(targets)), targets].mean()


def cross_entropy_from_logits__softmax_before_cross_entropy(logits, targets):
    return F.cross_entropy(torch.softmax(logits, dim=1), targets)


def cross_entropy_from_logits__naive_exp(logits, targets):
    probs = logits.exp() / logits.exp().sum(dim=1, keepdim=True)  # exp(1000) = inf -> nan
    return -probs[torch.arange(len(targets)), targets].log().mean()


# Exercise 5
def bce_with_logits(logits, targets):
    return (logits.clamp(min=0) - logits * targets + torch.log1p(torch.exp(-logits.abs()))).mean()


def bce_with_logits__sigmoid_then_log(logits, targets):
    p = torch.sigmoid(logits)
    return -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()


def bce_with_logits__bce_on_sigmoid(logits, targets):
    return F.binary_cross_entropy(torch.sigmoid(logits), targets)  # clamps log at -100: loss stuck at 100


# Exercise 6
def train_step(model, optimizer, loss_fn, x, y):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_step__forgot_zero_grad(model, optimizer, loss_fn, x, y):
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_step__zero_grad_after_backward(model, optimizer, loss_fn, x, y):
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss.item()


# Exercise 7
def evaluate_accuracy(model, loader):
    model.eval()
    correct, total = 0, 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(dim=1) == y).sum().item()
            total += len(y)
    return correct / total


def evaluate_accuracy__divides_by_dataset_size(model, loader):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(dim=1) == y).sum().item()
    return correct / len(loader.dataset)  # a sampler over part of the dataset gives fewer examples


def evaluate_accuracy__forgot_eval(model, loader):
    correct, total = 0, 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(dim=1) == y).sum().item()
            total += len(y)
    return correct / total


def evaluate_accuracy__forgot_no_grad(model, loader):
    model.eval()
    correct, total = 0, 0
    for x, y in loader:
        correct += (model(x).argmax(dim=1) == y).sum().item()
        total += len(y)
    return correct / total


def evaluate_accuracy__grad_off_globally(model, loader):
    model.eval()
    torch.set_grad_enabled(False)  # never switched back on: training after this computes no gradients
    correct, total = 0, 0
    for x, y in loader:
        correct += (model(x).argmax(dim=1) == y).sum().item()
        total += len(y)
    return correct / total


def evaluate_accuracy__mean_of_batch_accuracies(model, loader):
    model.eval()
    accuracies = []
    with torch.no_grad():
        for x, y in loader:
            accuracies.append((model(x).argmax(dim=1) == y).float().mean().item())
    return sum(accuracies) / len(accuracies)


# Exercise 8
def sgd_momentum_step(params, velocities, lr, momentum):
    with torch.no_grad():
        for p, v in zip(params, velocities):
            v.mul_(momentum).add_(p.grad)
            p.sub_(lr * v)


def sgd_momentum_step__replaces_the_list_entries(params, velocities, lr, momentum):
    with torch.no_grad():
        for i, p in enumerate(params):
            velocities[i] = momentum * velocities[i] + p.grad  # a new tensor in the list: the caller's is unchanged
            p.sub_(lr * velocities[i])


def sgd_momentum_step__rebinds_velocity(params, velocities, lr, momentum):
    with torch.no_grad():
        for p, v in zip(params, velocities):
            v = momentum * v + p.grad  # a new tensor: the stored velocity stays 0
            p.sub_(lr * v)


def sgd_momentum_step__dampened(params, velocities, lr, momentum):
    with torch.no_grad():
        for p, v in zip(params, velocities):
            v.mul_(momentum).add_((1 - momentum) * p.grad)  # an EMA of gradients: not torch's momentum
            p.sub_(lr * v)


# Exercise 9
def split_indices(n, val_fraction, seed):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(n * val_fraction)
    return perm[n_val:], perm[:n_val]


def split_indices__negative_slice(n, val_fraction, seed):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(n * val_fraction)
    return perm[:-n_val], perm[-n_val:]  # n_val = 0: perm[-0:] is everything, perm[:-0] nothing


def split_indices__no_shuffle(n, val_fraction, seed):
    n_val = int(n * val_fraction)
    idx = torch.arange(n)
    return idx[: n - n_val], idx[n - n_val:]


def split_indices__reseeds_numpy(n, val_fraction, seed):
    np.random.seed(seed)  # reseeds NumPy's global generator for the whole program
    perm = torch.from_numpy(np.random.permutation(n))
    n_val = int(n * val_fraction)
    return perm[n_val:], perm[:n_val]


def split_indices__ignores_seed(n, val_fraction, seed):
    perm = torch.randperm(n)  # the global RNG: a different split on every call
    n_val = int(n * val_fraction)
    return perm[n_val:], perm[:n_val]


def split_indices__reseeds_global_rng(n, val_fraction, seed):
    torch.manual_seed(seed)  # reproducible, but it resets the generator every other part of the program uses
    perm = torch.randperm(n)
    n_val = int(n * val_fraction)
    return perm[n_val:], perm[:n_val]


def split_indices__overlapping_boundary(n, val_fraction, seed):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(n * val_fraction)
    return perm[: n - n_val + 1], perm[n - n_val:]  # off by one: one index in both parts

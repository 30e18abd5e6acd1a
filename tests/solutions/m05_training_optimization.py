"""Reference solutions of 05-training-optimization/exercises.py, and the common mistakes their checks must reject.

A mistake is named <exercise>__<what_went_wrong>.
"""

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


# ---- Exercise 1 ----
def warmup_cosine_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def warmup_cosine_lr__warmup_starts_at_zero(step, base_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return base_lr * step / warmup_steps  # lr 0 on the first step, and base_lr never reached in the warm-up
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def warmup_cosine_lr__cosine_over_total_steps(step, base_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = step / total_steps  # counts the warm-up too: lr jumps down when the warm-up ends
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


# ---- Exercise 2 ----
def train_with_epoch_scheduler(model, optimizer, scheduler, batches, epochs, loss_fn):
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        for x, y in batches:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        scheduler.step()
    return lrs


def train_with_epoch_scheduler__steps_scheduler_per_batch(model, optimizer, scheduler, batches, epochs, loss_fn):
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        for x, y in batches:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
            scheduler.step()  # StepLR counts batches now: the schedule runs 3x too fast
    return lrs


def train_with_epoch_scheduler__forgot_zero_grad(model, optimizer, scheduler, batches, epochs, loss_fn):
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        for x, y in batches:
            loss_fn(model(x), y).backward()  # gradients accumulate over every batch so far
            optimizer.step()
        scheduler.step()
    return lrs


# ---- Exercise 3 ----
def batchnorm_train_forward(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5):
    mean = x.mean(dim=0)
    var = x.var(dim=0, unbiased=False)
    y = gamma * (x - mean) / torch.sqrt(var + eps) + beta
    new_mean = (1 - momentum) * running_mean + momentum * mean
    new_var = (1 - momentum) * running_var + momentum * x.var(dim=0, unbiased=True)
    return y, new_mean, new_var


def batchnorm_train_forward__unbiased_variance_for_normalising(x, gamma, beta, running_mean, running_var,
                                                               momentum=0.1, eps=1e-5):
    mean = x.mean(dim=0)
    var = x.var(dim=0)  # torch's default is unbiased: not what BatchNorm normalises with
    y = gamma * (x - mean) / torch.sqrt(var + eps) + beta
    new_mean = (1 - momentum) * running_mean + momentum * mean
    new_var = (1 - momentum) * running_var + momentum * var
    return y, new_mean, new_var


def batchnorm_train_forward__biased_running_var(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5):
    mean = x.mean(dim=0)
    var = x.var(dim=0, unbiased=False)
    y = gamma * (x - mean) / torch.sqrt(var + eps) + beta
    new_mean = (1 - momentum) * running_mean + momentum * mean
    new_var = (1 - momentum) * running_var + momentum * var  # nn.BatchNorm stores the unbiased one
    return y, new_mean, new_var


def batchnorm_train_forward__updates_buffers_in_place(x, gamma, beta, running_mean, running_var, momentum=0.1,
                                                      eps=1e-5):
    mean = x.mean(dim=0)
    var = x.var(dim=0, unbiased=False)
    y = gamma * (x - mean) / torch.sqrt(var + eps) + beta
    running_mean.mul_(1 - momentum).add_(momentum * mean)  # modifies the caller's tensors
    running_var.mul_(1 - momentum).add_(momentum * x.var(dim=0, unbiased=True))
    return y, running_mean, running_var


# ---- Exercise 4 ----
def fuse_linear_bn(linear, bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (out,)
    fused = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        fused.weight.copy_(linear.weight * scale[:, None])
        fused.bias.copy_((linear.bias - bn.running_mean) * scale + bn.bias)
    return fused


def fuse_linear_bn__forgot_eps(linear, bn):
    scale = bn.weight / torch.sqrt(bn.running_var)
    fused = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        fused.weight.copy_(linear.weight * scale[:, None])
        fused.bias.copy_((linear.bias - bn.running_mean) * scale + bn.bias)
    return fused


def fuse_linear_bn__forgot_linear_bias(linear, bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        fused.weight.copy_(linear.weight * scale[:, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
    return fused


def fuse_linear_bn__in_place(linear, bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():  # right numbers, but the model that owns `linear` now applies BatchNorm twice
        linear.bias.copy_((linear.bias - bn.running_mean) * scale + bn.bias)
        linear.weight.mul_(scale[:, None])
    return linear


# ---- Exercise 5 ----
def mixup(x, y, num_classes, lam, perm):
    one_hot = nn.functional.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * one_hot + (1 - lam) * one_hot[perm]


def mixup__labels_not_mixed(x, y, num_classes, lam, perm):
    return lam * x + (1 - lam) * x[perm], nn.functional.one_hot(y, num_classes).float()


def mixup__partner_labels_unpermuted(x, y, num_classes, lam, perm):
    one_hot = nn.functional.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * one_hot + (1 - lam) * one_hot  # mixes each label with itself


# ---- Exercise 6 ----
def early_stopping_epoch(val_losses, patience, min_delta=0.0):
    best, best_epoch, bad = float("inf"), -1, 0
    for epoch, loss in enumerate(val_losses):
        if loss < best - min_delta:
            best, best_epoch, bad = loss, epoch, 0
        else:
            bad += 1
            if bad == patience:
                return epoch, best_epoch
    return len(val_losses) - 1, best_epoch


def early_stopping_epoch__patience_off_by_one(val_losses, patience, min_delta=0.0):
    best, best_epoch, bad = float("inf"), -1, 0
    for epoch, loss in enumerate(val_losses):
        if loss < best - min_delta:
            best, best_epoch, bad = loss, epoch, 0
        else:
            bad += 1
            if bad > patience:  # one epoch too late
                return epoch, best_epoch
    return len(val_losses) - 1, best_epoch


def early_stopping_epoch__ignores_min_delta(val_losses, patience, min_delta=0.0):
    best, best_epoch, bad = float("inf"), -1, 0
    for epoch, loss in enumerate(val_losses):
        if loss < best:
            best, best_epoch, bad = loss, epoch, 0
        else:
            bad += 1
            if bad == patience:
                return epoch, best_epoch
    return len(val_losses) - 1, best_epoch


# ---- Exercise 7 ----
def save_checkpoint(path, model, optimizer, scheduler, epoch):
    path = Path(path)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint__forgot_optimizer_state(path, model, optimizer, scheduler, epoch):
    path = Path(path)
    state = {"model": model.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def save_checkpoint__not_atomic(path, model, optimizer, scheduler, epoch):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch}, path)  # a crash mid-write destroys the old one


def save_checkpoint__temp_in_system_folder(path, model, optimizer, scheduler, epoch):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch}
    fd, tmp = tempfile.mkstemp(suffix=".tmp")  # /tmp: os.replace fails when path is on another filesystem
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def save_checkpoint__temp_file_left_behind(path, model, optimizer, scheduler, epoch):
    path = Path(path)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    torch.save(state, path.with_suffix(".new"))
    os.replace(path.with_suffix(".new"), path)  # and the .tmp copy stays on disk


def save_checkpoint__pickles_the_objects(path, model, optimizer, scheduler, epoch):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save({"model": model, "optimizer": optimizer, "scheduler": scheduler, "epoch": epoch}, tmp)  # objects
    os.replace(tmp, path)


def save_checkpoint__copied_not_moved(path, model, optimizer, scheduler, epoch):
    path = Path(path)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    shutil.copyfile(tmp, path)  # a copy writes path byte by byte: a crash mid-copy leaves half a file
    os.remove(tmp)


# ---- Exercise 8 ----
def load_checkpoint(path, model, optimizer, scheduler):
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"]


def load_checkpoint__forgot_optimizer(path, model, optimizer, scheduler):
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"]


def load_checkpoint__no_map_location(path, model, optimizer, scheduler):
    state = torch.load(path, weights_only=True)  # a GPU-saved checkpoint would need that GPU
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"]


def load_checkpoint__weights_only_false(path, model, optimizer, scheduler):
    state = torch.load(path, map_location="cpu", weights_only=False)  # unpickles arbitrary code
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"]


# ---- Exercise 9 ----
def random_search_configs(n, space, seed):
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(n):
        config = {}
        for name, spec in space.items():
            if spec[0] == "log":
                config[name] = float(math.exp(rng.uniform(math.log(spec[1]), math.log(spec[2]))))
            elif spec[0] == "uniform":
                config[name] = float(rng.uniform(spec[1], spec[2]))
            else:
                config[name] = spec[1][int(rng.integers(len(spec[1])))]
        configs.append(config)
    return configs


def random_search_configs__reseeds_numpy(n, space, seed):
    np.random.seed(seed)  # the global generator: every later np.random call in the program is affected
    return random_search_configs(n, space, seed)


def random_search_configs__numpy_scalars(n, space, seed):
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(n):
        config = {}
        for name, spec in space.items():
            if spec[0] == "log":
                config[name] = np.exp(rng.uniform(np.log(spec[1]), np.log(spec[2])))  # np.float64
            elif spec[0] == "uniform":
                config[name] = rng.uniform(spec[1], spec[2])
            else:
                config[name] = rng.choice(spec[1])  # np.int64
        configs.append(config)
    return configs


def random_search_configs__linear_lr(n, space, seed):
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(n):
        config = {}
        for name, spec in space.items():
            if spec[0] in ("log", "uniform"):
                config[name] = float(rng.uniform(spec[1], spec[2]))  # 99% of lrs land above 1e-3
            else:
                config[name] = spec[1][int(rng.integers(len(spec[1])))]
        configs.append(config)
    return configs


def random_search_configs__ignores_seed(n, space, seed):
    configs = []
    for _ in range(n):
        config = {}
        for name, spec in space.items():
            if spec[0] == "log":
                config[name] = float(math.exp(np.random.uniform(math.log(spec[1]), math.log(spec[2]))))
            elif spec[0] == "uniform":
                config[name] = float(np.random.uniform(spec[1], spec[2]))
            else:
                config[name] = spec[1][int(np.random.randint(len(spec[1])))]
        configs.append(config)
    return configs


# ---- Exercise 10 ----
def successive_halving_survivors(val_losses, eta=3):
    ranked = sorted(val_losses, key=val_losses.get)
    return ranked[: max(1, len(ranked) // eta)]


def successive_halving_survivors__keeps_the_worst(val_losses, eta=3):
    ranked = sorted(val_losses, key=val_losses.get, reverse=True)  # as if the scores were accuracies
    return ranked[: max(1, len(ranked) // eta)]


def successive_halving_survivors__can_keep_none(val_losses, eta=3):
    ranked = sorted(val_losses, key=val_losses.get)
    return ranked[: len(ranked) // eta]  # 2 configs, eta 3: nobody survives

"""Checks of 05-training-optimization/exercises.py, one check_<name>(fn) per exercise, in exercise order.

Expectations are computed here, by hand or with other torch ops, never by calling the reference solution.
"""

import copy
import math
import os
import pickle
import random
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from check_utils import assert_close, describe
from torch import nn


def _close(got, expected, rtol=1e-5) -> bool:
    """Equal to 1e-5 of the value: float32 arithmetic (a float32 cosine near -1 loses a digit) is fine for an lr."""
    return abs(got - expected) <= rtol * abs(expected) + 1e-15


def check_warmup_cosine_lr(fn):
    for base, warm, total, low in ((0.1, 4, 12, 0.0), (1.0, 10, 110, 0.01), (3e-4, 1, 50, 1e-5)):
        for step in sorted({0, 1, warm - 1, warm, warm + 1, (warm + total) // 2, total - 1, total}):
            if step < warm:
                expected = base * (step + 1) / warm
            else:
                progress = (step - warm) / (total - warm)
                expected = low + 0.5 * (base - low) * (1 + math.cos(math.pi * progress))
            got = fn(step, base, warm, total, low)
            assert isinstance(got, float), f"expected a Python float, got {describe(got)}"
            if step < warm:
                why = "the warm-up is base_lr * (step + 1) / warmup_steps"
            elif any(_close(got, lo + 0.5 * base * (1 + math.cos(math.pi * (step - warm) / (total - warm))))
                     for lo in (0.0, low)):
                why = ("the cosine goes from base_lr to min_lr: min_lr + 0.5 * (base_lr - min_lr) * "
                       "(1 + cos(pi * progress))")
            else:
                why = "the cosine's progress counts from the end of the warm-up: (step - warmup) / (total - warmup)"
            assert _close(got, expected), (
                f"expected warmup_cosine_lr(step={step}, base_lr={base}, warmup_steps={warm}, total_steps={total}, "
                f"min_lr={low}) = {expected:.10g}, got {got:.10g} ({why})"
            )


def check_train_with_epoch_scheduler(fn):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    batches = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(3)]
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    got = fn(model, opt, sched, batches, 5, nn.MSELoss())
    expected = [0.1, 0.1, 0.05, 0.05, 0.025]
    assert isinstance(got, list) and len(got) == 5, f"expected a list of 5 learning rates, got {describe(got)}"
    assert all(_close(g, e) for g, e in zip(got, expected, strict=True)), (
        f"expected the lr per epoch {expected} (StepLR(step_size=2, gamma=0.5) stepped once per epoch, "
        f"3 batches per epoch), got {[round(g, 6) for g in got]}"
    )
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(5):
        for group in ref_opt.param_groups:
            group["lr"] = expected[epoch]
        for x, y in batches:
            ref_opt.zero_grad()
            nn.functional.mse_loss(reference(x), y).backward()
            ref_opt.step()
    diff = max((p - q).abs().max().item() for p, q in zip(model.parameters(), reference.parameters(), strict=True))
    assert diff < 1e-5, (
        f"expected the trained weights of 5 epochs x 3 batches (zero_grad, loss, backward, step per batch), "
        f"max abs diff {diff:.3g} from a reference loop"
    )


def check_batchnorm_train_forward(fn):
    for n, c, momentum, eps in ((16, 5, 0.1, 1e-5), (4, 3, 0.3, 1e-3)):
        x = torch.randn(n, c) * 3 + 2
        gamma, beta = torch.rand(c) + 0.5, torch.randn(c)
        running_mean, running_var = torch.randn(c), torch.rand(c) + 0.5
        inputs = [t.clone() for t in (x, gamma, beta, running_mean, running_var)]
        exp_mean, exp_var = running_mean.clone(), running_var.clone()
        expected = nn.functional.batch_norm(x, exp_mean, exp_var, gamma, beta, training=True, momentum=momentum,
                                            eps=eps)  # updates exp_mean / exp_var in place
        got = fn(x, gamma, beta, running_mean, running_var, momentum, eps)
        assert isinstance(got, tuple) and len(got) == 3, "expected a tuple (y, new_running_mean, new_running_var)"
        y, new_mean, new_var = got
        assert_close(y, expected, f"y for N={n} (normalised with the batch mean and the biased batch variance, "
                     "divide by N; then gamma * x_hat + beta)", atol=1e-4)
        assert_close(new_mean, exp_mean, "new_running_mean ((1 - momentum) * running_mean + momentum * batch mean)")
        assert_close(new_var, exp_var, "new_running_var (updated with the UNBIASED batch variance, divide by N - 1)")
        for before, now, name in zip(inputs, (x, gamma, beta, running_mean, running_var),
                                     ("x", "gamma", "beta", "running_mean", "running_var"), strict=True):
            assert torch.equal(before, now), f"expected {name} to be left unchanged (return new tensors instead)"


def check_fuse_linear_bn(fn):
    linear, bn = nn.Linear(6, 4), nn.BatchNorm1d(4, eps=0.1)  # a large eps, so leaving it out shows
    with torch.no_grad():
        bn.weight.copy_(torch.rand(4) + 0.5)
        bn.bias.copy_(torch.randn(4))
        bn.running_mean.copy_(torch.randn(4))
        bn.running_var.copy_(torch.rand(4) * 2 + 0.1)
    x = torch.randn(10, 6)
    with torch.no_grad():
        expected = bn.eval()(linear(x))
        weight, bias = linear.weight.clone(), linear.bias.clone()
        fused = fn(linear, bn)
        assert isinstance(fused, nn.Linear), f"expected an nn.Linear, got {describe(fused)}"
        assert fused is not linear, "expected a new nn.Linear: changing `linear` in place breaks its model"
        assert torch.equal(linear.weight, weight) and torch.equal(linear.bias, bias), (
            "expected linear's weight and bias left unchanged (copy them into the new layer, then scale the copy)")
        assert (fused.in_features, fused.out_features) == (6, 4), "expected in_features 6 and out_features 4"
        assert_close(fused(x), expected, "fused(x) should equal bn.eval()(linear(x)) (scale = bn.weight / "
                     "sqrt(running_var + eps); bias = (linear.bias - running_mean) * scale + bn.bias)")


def check_mixup(fn):
    x = torch.randn(6, 3, 4, 4)
    y = torch.tensor([0, 4, 2, 2, 1, 3])
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    lam = 0.3
    got = fn(x, y, 5, lam, perm)
    assert isinstance(got, tuple) and len(got) == 2, "expected a tuple (x_mixed, y_soft)"
    x_mixed, y_soft = got
    expected_x = torch.stack([lam * x[i] + (1 - lam) * x[perm[i]] for i in range(6)])
    assert_close(x_mixed, expected_x, "x_mixed[i] should be lam * x[i] + (1 - lam) * x[perm[i]]", atol=1e-6)
    assert isinstance(y_soft, torch.Tensor) and y_soft.shape == (6, 5), (
        f"expected soft labels of shape (6, 5), got {describe(y_soft)}"
    )
    assert y_soft.is_floating_point(), f"expected float soft labels, got {y_soft.dtype}"
    expected_y = torch.zeros(6, 5)
    for i in range(6):
        expected_y[i, y[i]] += lam
        expected_y[i, y[perm[i]]] += 1 - lam
    assert_close(y_soft, expected_y, "y_soft[i] should be lam * one_hot(y[i]) + (1 - lam) * one_hot(y[perm[i]])",
                 atol=1e-6)


def check_early_stopping_epoch(fn):
    cases = [  # (losses, patience, min_delta, expected (stop_epoch, best_epoch), what it tests)
        ([1.0, 0.8, 0.9, 0.85, 0.82, 0.7], 3, 0.0, (4, 1), "stop when the bad-epoch counter equals patience"),
        ([1.0, 2.0, 3.0], 1, 0.0, (1, 0), "patience 1 stops at the first bad epoch"),
        ([5.0, 4.0, 3.0, 2.0, 1.0], 2, 0.0, (4, 4), "never stopping: stop_epoch is the last epoch"),
        ([1.0, 1.0, 1.0], 2, 0.0, (2, 0), "an equal loss is not an improvement"),
        ([1.0, 0.99, 0.98, 0.97, 0.5], 3, 0.05, (3, 0), "improvements smaller than min_delta do not count"),
    ]
    for losses, patience, min_delta, expected, what in cases:
        got = fn(list(losses), patience, min_delta)
        if tuple(got)[:1] == expected[:1]:  # the stop is right: only the best epoch is wrong
            what = "the best epoch is the last one that improved by more than min_delta before the stop"
        assert tuple(got) == expected, (
            f"expected early_stopping_epoch({losses}, patience={patience}, min_delta={min_delta}) = {expected}, "
            f"got {tuple(got)} ({what})"
        )


def _trained_objects(seed: int):
    torch.manual_seed(seed)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same_state, a, b))
    return a == b


def check_save_checkpoint(fn):
    model, opt, sched = _trained_objects(0)
    real_save, real_replace, real_rename = torch.save, os.replace, os.rename
    targets, moves = [], []

    def recording_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):  # a file object or an in-memory buffer is not path itself
            targets.append(Path(f))
        return real_save(obj, f, *args, **kwargs)

    def recording_move(real):
        def move(src, dst, *args, **kwargs):
            if isinstance(src, (str, os.PathLike)) and isinstance(dst, (str, os.PathLike)):
                moves.append((Path(src), Path(dst)))
            return real(src, dst, *args, **kwargs)
        return move

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        path.write_bytes(b"an older checkpoint")
        with mock.patch.object(torch, "save", recording_save), \
                mock.patch.object(os, "replace", recording_move(real_replace)), \
                mock.patch.object(os, "rename", recording_move(real_rename)):  # Path.replace/rename call these
            fn(path, model, opt, sched, 7)
        assert path not in targets, (
            "expected torch.save to write a temporary file that os.replace then moves onto path; writing path "
            "directly can leave a half-written checkpoint after a crash"
        )
        onto = [src for src, dst in moves if dst == path]
        assert onto, (
            "expected the checkpoint saved to a temporary file, then moved onto path with os.replace (or "
            "Path.replace): only a move replaces the old file in one step"
        )
        assert path.parent in onto[-1].parents, (
            f"expected the temporary file inside path's own folder, got {onto[-1]}: os.replace cannot move a file "
            "from another filesystem (the system's temp folder often is one); tempfile.mkstemp(dir=path.parent)")
        leftovers = sorted(p.name for p in Path(tmp).iterdir() if p.name != "ckpt.pt")
        assert not leftovers, f"expected no temporary files left behind, found {leftovers}"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise AssertionError("the checkpoint cannot be loaded with weights_only=True: store state_dict()s "
                                 "(tensors and plain values), not the model, optimizer or scheduler objects") from None
    assert isinstance(state, dict), f"expected a dict in the checkpoint, got {type(state).__name__}"
    missing = [k for k in ("model", "optimizer", "scheduler", "epoch") if k not in state]
    assert not missing, f"expected the keys model, optimizer, scheduler and epoch; missing {missing}"
    assert type(state["epoch"]) is int and state["epoch"] == 7, (
        f"expected epoch 7 as a Python int, got {describe(state['epoch'])}"
    )
    assert _same_state(state["model"], model.state_dict()), "expected checkpoint['model'] == model.state_dict()"
    assert _same_state(state["optimizer"], opt.state_dict()), (
        "expected checkpoint['optimizer'] == optimizer.state_dict() (its momentum buffers included)"
    )
    assert _same_state(state["scheduler"], sched.state_dict()), "expected checkpoint['scheduler'] == its state_dict()"


def check_load_checkpoint(fn):
    model, opt, sched = _trained_objects(0)
    fresh_model, fresh_opt, fresh_sched = nn.Linear(4, 2), None, None
    fresh_opt = torch.optim.SGD(fresh_model.parameters(), lr=0.1, momentum=0.9)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=1, gamma=0.5)
    real_load = torch.load
    calls = []

    def recording_load(*args, **kwargs):
        calls.append({**dict(zip(("f", "map_location"), args, strict=False)), **kwargs})
        return real_load(*args, **kwargs)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "epoch": 5}, path)
        with mock.patch.object(torch, "load", recording_load):
            got = fn(path, fresh_model, fresh_opt, fresh_sched)
    assert calls, "expected torch.load to be called"
    assert all(c.get("weights_only") is True for c in calls), (
        "expected torch.load(..., weights_only=True), passed explicitly: weights_only=False unpickles (and can run) "
        "arbitrary code, and the default depends on the torch version and the TORCH_FORCE_*_WEIGHTS_ONLY_LOAD variables"
    )
    assert all(str(c.get("map_location")) == "cpu" for c in calls), (
        "expected torch.load(..., map_location=\"cpu\"): a checkpoint saved on a GPU otherwise loads onto that GPU, "
        "and fails on a machine without one")
    assert got == 5, f"expected the stored epoch 5, got {describe(got)}"
    for p, q in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(p, q), "expected the model's weights restored from checkpoint['model']"
    assert _same_state(fresh_opt.state_dict(), opt.state_dict()), (
        "expected the optimizer restored (momentum buffers and lr), from checkpoint['optimizer']"
    )
    assert fresh_sched.last_epoch == sched.last_epoch, (
        f"expected the scheduler restored (last_epoch {sched.last_epoch}), got last_epoch {fresh_sched.last_epoch}"
    )


def check_random_search_configs(fn):
    space = {"lr": ("log", 1e-5, 1e-1), "dropout": ("uniform", 0.1, 0.5), "width": ("choice", [32, 64, 128])}
    configs = fn(4000, space, 0)
    assert isinstance(configs, list) and len(configs) == 4000, "expected a list of n = 4000 configurations"
    assert all(isinstance(c, dict) and set(c) == set(space) for c in configs), (
        f"expected every configuration to be a dict with the keys {sorted(space)}"
    )
    lrs = [c["lr"] for c in configs]
    drop = [c["dropout"] for c in configs]
    assert all(1e-5 <= v <= 1e-1 for v in lrs), "expected every lr within [1e-5, 1e-1]"
    assert all(0.1 <= v <= 0.5 for v in drop), "expected every dropout within [0.1, 0.5]"
    assert all(c["width"] in (32, 64, 128) for c in configs), "expected every width to be one of [32, 64, 128]"
    kinds = {(type(c["lr"]).__name__, type(c["dropout"]).__name__, type(c["width"]).__name__) for c in configs[:5]}
    plain = all(isinstance(c["lr"], float) and isinstance(c["dropout"], float) and type(c["width"]) is int
                for c in configs[:5])  # np.float64 is a float (json.dumps takes it); np.int64 is not an int
    assert plain, (
        f"expected plain Python values (float lr and dropout, int width), got types {sorted(kinds)[0]}: NumPy integers "
        "do not go into json.dumps; convert with float(...) / int(...) or .item()")
    below = sum(v < 1e-3 for v in lrs) / len(lrs)
    assert 0.45 < below < 0.55, (
        f"expected about half of the log-uniform lrs below 1e-3 (the middle of 1e-5..1e-1 in log space), got "
        f"{below:.3f}: sample uniformly in log(lr)"
    )
    mean_drop = sum(drop) / len(drop)
    assert abs(mean_drop - 0.3) < 0.02, f"expected the uniform dropout to average about 0.3, got {mean_drop:.3f}"
    for w in (32, 64, 128):
        share = sum(c["width"] == w for c in configs) / len(configs)
        assert 0.28 < share < 0.39, f"expected each width chosen about 1/3 of the time, got {share:.3f} for {w}"
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    again, other = fn(5, space, 1), fn(5, space, 1)
    assert again == other, "expected the same seed to give the same configurations (use np.random.default_rng(seed))"
    assert (np.random.get_state()[1] == np_before).all() and random.getstate() == py_before, (
        "expected NumPy's and Python's global random generators left alone: np.random.seed / random.seed inside the "
        "function reseed what the rest of the program draws from; use rng = np.random.default_rng(seed)")
    assert fn(5, space, 2) != again, "expected a different seed to give different configurations"


def check_successive_halving_survivors(fn):
    cases = [
        ({"a": 0.9, "b": 0.3, "c": 0.5, "d": 0.4, "e": 1.2, "f": 0.8}, 3, ["b", "d"]),
        ({"x": 2.0, "y": 1.0, "z": 3.0, "w": 0.5, "v": 1.5}, 2, ["w", "y"]),
        ({"p": 0.7, "q": 0.2}, 3, ["q"]),
        ({"only": 1.0}, 3, ["only"]),
    ]
    for scores, eta, expected in cases:
        got = fn(dict(scores), eta)
        assert list(got) == expected, (
            f"expected successive_halving_survivors({scores}, eta={eta}) = {expected} (the lowest losses, best "
            f"first, at least one), got {list(got)}"
        )

"""Checks of 04-neural-networks/exercises.py, one check_<name>(fn) per exercise, in exercise order.

Each check builds its inputs, computes the expected answer independently (by hand or with other torch ops, never
with the reference solution) and raises AssertionError("expected ..., got ...").
"""

import copy
import math
import random
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from check_utils import assert_close, describe
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def _close(got, expected, what: str, atol: float = 1e-5) -> None:
    assert_close(got, expected, what, atol=atol)


def check_build_mlp(fn):
    model = fn(6, 10, 4)
    assert isinstance(model, nn.Module), f"expected an nn.Module, got {type(model).__name__}"
    n = sum(p.numel() for p in model.parameters())
    expected_n = 6 * 10 + 10 + 10 * 4 + 4
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    why = ("layers in a plain Python list are not registered: use nn.Sequential or nn.ModuleList" if len(linears) < 2
           else "each nn.Linear has a bias unless bias=False" if n == expected_n - 14
           else "two Linear layers, 6 -> 10 -> 4")
    assert n == expected_n, f"expected {expected_n} parameters visible to model.parameters(), got {n} ({why})"
    linears.sort(key=lambda m: m.in_features != 6)  # a class may define its layers in any order
    shapes = [tuple(m.weight.shape) for m in linears]
    assert shapes == [(10, 6), (4, 10)], (
        f"expected two nn.Linear layers among model.modules(), with weights of shapes [(10, 6), (4, 10)], got "
        f"{shapes or 'no nn.Linear'}")
    x = torch.randn(32, 6)
    got = model(x)
    first, second = linears
    expected = torch.relu(x @ first.weight.T + first.bias) @ second.weight.T + second.bias
    _close(got, expected.detach(), "model(x) should be Linear -> ReLU -> Linear")


class _TiedLanguageModel(nn.Module):
    """Embedding and output layer share one weight (weight tying, as in GPT-2), plus a BatchNorm whose running
    statistics are buffers, not parameters."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 10)
        self.out.weight = self.embed.weight  # the same Parameter object, registered under two names


def check_count_parameters(fn):
    model = nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3), nn.Linear(3, 2, bias=False))
    total = 7 * 5 + 5 + 5 * 3 + 3 + 3 * 2
    got = fn(model)
    assert isinstance(got, int) and not isinstance(got, bool), f"expected a Python int, got {describe(got)}"
    assert got == total, f"expected {total} parameters (numbers, not tensors), got {got}"
    for p in model[0].parameters():
        p.requires_grad_(False)
    frozen = 7 * 5 + 5
    got = fn(model, trainable_only=True)
    assert got == total - frozen, f"with the first layer frozen, expected {total - frozen} trainable, got {got}"
    got = fn(model, trainable_only=False)
    assert got == total, f"with trainable_only=False, expected all {total} parameters, got {got}"
    tied = _TiedLanguageModel()
    expected = 10 * 4 + (4 + 4) + 10  # the shared weight once, BatchNorm's weight and bias, the output bias
    got = fn(tied, trainable_only=False)
    assert got == expected, (
        f"for a model whose output layer shares the embedding's weight (weight tying), with a BatchNorm, expected "
        f"{expected} parameters, got {got}: a shared Parameter is one set of numbers (model.parameters() yields it "
        f"once), and running_mean / running_var are buffers, not parameters"
        + (" (the shared weight was counted twice)" if got == expected + 40 else "")
    )


def _refuse_linear(*args, **kwargs):
    raise AssertionError("expected x @ weight.T + bias by hand, got a call to F.linear (or nn.Linear), which does "
                         "the whole job")


def check_linear_forward(fn):
    for in_f, out_f in ((5, 5), (6, 3)):  # square first: W instead of W.T gives wrong numbers, not an error
        weight, bias = torch.randn(out_f, in_f), torch.randn(out_f)
        x = torch.randn(4, in_f)
        expected = torch.stack([torch.stack([(x[i] * weight[j]).sum() + bias[j] for j in range(out_f)])
                                for i in range(4)])  # y_ij = sum_k x_ik W_jk + b_j
        with mock.patch.object(F, "linear", _refuse_linear):  # the exercise: by hand, not with F.linear
            got = fn(x, weight, bias)
        _close(got, expected, f"linear_forward with weight {tuple(weight.shape)}")
    x3 = torch.randn(2, 3, 6)
    expected3 = torch.einsum("btk,jk->btj", x3, weight) + bias
    _close(fn(x3, weight, bias), expected3, "linear_forward on a (2, 3, 6) input")
    x64, w64, b64 = x3.double(), weight.double(), bias.double()
    got64 = fn(x64, w64, b64)
    assert isinstance(got64, torch.Tensor) and got64.dtype == torch.float64, (
        f"float64 inputs: expected a float64 result, as nn.Linear in float64 gives, got {describe(got64)}")
    _close(got64, torch.einsum("btk,jk->btj", x64, w64) + b64, "linear_forward in float64", atol=1e-12)


def check_cross_entropy_from_logits(fn):
    logits = torch.randn(8, 5) * 3
    targets = torch.randint(0, 5, (8,))
    log_probs = logits.double() - logits.double().exp().sum(1, keepdim=True).log()
    expected = -log_probs[torch.arange(8), targets].mean()
    _close(fn(logits, targets), expected.float(), "cross-entropy of random logits")
    big = torch.tensor([[1000.0, 0.0, 0.0], [0.0, 1000.0, -1000.0]])
    expected_big = torch.tensor((1000.0 + 1000.0) / 2)  # row 0 targets class 1, row 1 targets class 0
    _close(fn(big, torch.tensor([1, 0])), expected_big, "cross-entropy with logits of 1000", atol=1e-3)
    mixed = torch.tensor([[2.0, 0.0, -1.0], [1000.0, 0.0, 0.0]])  # the docstring's example: rows of other scales
    expected_mixed = torch.tensor((math.log(1 + math.exp(-2) + math.exp(-3)) + 1000.0) / 2)
    _close(fn(mixed, torch.tensor([0, 1])), expected_mixed, "the docstring's example, rows of different scales "
           "(subtract each row's own max)", atol=1e-3)


def check_bce_with_logits(fn):
    z = torch.randn(20) * 2
    y = torch.randint(0, 2, (20,)).float()
    zd, yd = z.double(), y.double()
    expected = -(yd * torch.sigmoid(zd).log() + (1 - yd) * (1 - torch.sigmoid(zd)).log()).mean()
    _close(fn(z, y), expected.float(), "BCE of moderate logits")
    z_ext = torch.tensor([50.0, -50.0, 200.0, -200.0])
    y_ext = torch.tensor([0.0, 1.0, 1.0, 0.0])
    expected_ext = torch.tensor((50.0 + 50.0 + 0.0 + 0.0) / 4)  # confidently wrong twice, right twice
    _close(fn(z_ext, y_ext), expected_ext, "BCE at logits +-50 and +-200", atol=1e-4)


def check_train_step(fn):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    lr = 0.1
    reference = copy.deepcopy(model)
    loss_ref = F.mse_loss(reference(x), y)
    grads = torch.autograd.grad(loss_ref, list(reference.parameters()))
    expected = [p.detach() - lr * g for p, g in zip(reference.parameters(), grads)]
    for p in model.parameters():
        p.grad = torch.full_like(p, 5.0)  # stale gradients from "earlier code"
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    got = fn(model, optimizer, nn.MSELoss(), x, y)
    assert isinstance(got, float), f"expected the loss as a Python float (loss.item()), got {type(got).__name__}"
    assert abs(got - loss_ref.item()) < 1e-5, f"expected the loss before the step, {loss_ref.item():.6f}, got {got}"
    unchanged = all(torch.equal(p.detach(), q.detach()) for p, q in zip(model.parameters(), reference.parameters()))
    for (name, p), e in zip(model.named_parameters(), expected):
        err = (p.detach() - e).abs().max().item()
        assert err < 1e-5, (
            f"after one SGD step, expected parameter {name} = old - lr * (fresh gradient), off by {err:.3f} "
            + ("(the parameters did not change: optimizer.step() not called?)" if unchanged else
               "(stale gradients not zeroed, or gradients zeroed before step?)")
        )


def check_evaluate_accuracy(fn):
    model = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))
    x = torch.randn(50, 5)
    frozen = copy.deepcopy(model).eval()
    with torch.no_grad():
        pred = frozen(x).argmax(1)
    y = pred.clone()
    y[::3] = (y[::3] + 1) % 3  # every third example wrong
    y[48], y[49] = pred[48], (pred[49] + 1) % 3  # the small last batch (2 of 50 with batch_size 16): half right
    expected = (pred == y).float().mean().item()  # 33 / 50; per-batch mean 0.625; over 4 * 16 slots 33 / 64
    seen = []
    # on a child: model(x) and model.forward(x) both call it (a hook on the model itself misses .forward)
    model[0].register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    model.train()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    got = fn(model, loader)
    assert torch.is_grad_enabled(), (
        "expected gradients switched off only inside evaluate_accuracy (with torch.no_grad():), but they are still "
        "off after it returned: every training step after it would compute no gradients")
    assert isinstance(got, float), f"expected a Python float, got {type(got).__name__}"
    assert seen, "expected the model to be called on the loader's batches"
    assert not any(training for training, _ in seen), "expected model.eval() before predicting (dropout was on)"
    assert not any(grad for _, grad in seen), "expected the forward passes to run under torch.no_grad()"
    per_batch = sum((pred[i:i + 16] == y[i:i + 16]).float().mean().item() for i in range(0, 50, 16)) / 4
    why = ("averaging per-batch accuracies weights the short last batch wrongly" if abs(got - per_batch) < 1e-6
           else "divided by len(loader) * batch_size = 64 slots, but the last batch holds 2: count the examples"
           if abs(got - expected * 50 / 64) < 1e-6
           else "a fraction in [0, 1], not a percentage" if got > 1
           else "count predictions equal to the labels, argmax over the class dimension (dim=1)")
    assert abs(got - expected) < 1e-6, (
        f"expected accuracy {expected:.4f} = correct / all 50 examples, got {got:.4f} ({why})"
    )
    subset = torch.arange(0, 50, 5)  # a loader over 10 of the 50 examples, as exercise 9's split gives
    sampled = DataLoader(TensorDataset(x, y), batch_size=4, sampler=torch.utils.data.SubsetRandomSampler(subset))
    got = fn(model, sampled)
    expected = (pred[subset] == y[subset]).float().mean().item()
    assert abs(got - expected) < 1e-6, (
        f"a loader with a SubsetRandomSampler over 10 of its dataset's 50 examples: expected {expected:.4f}, got "
        f"{got:.4f} (divide by the examples the loader gave you, not len(loader.dataset))"
    )


def check_sgd_momentum_step(fn):
    lr, mu = 0.05, 0.9
    shapes = [(3, 4), (4,)]
    ours = [torch.randn(s, requires_grad=True) for s in shapes]
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    velocities = [torch.zeros(s) for s in shapes]
    held = list(velocities)  # the caller's own tensors: they must change, not just the list's entries
    optimizer = torch.optim.SGD(theirs, lr=lr, momentum=mu)
    for step in range(1, 6):
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        result = fn(ours, velocities, lr, mu)
        assert result is None, f"expected None (update in place), got {type(result).__name__}"
        assert all(v is h for v, h in zip(velocities, held)), (
            "expected the velocity tensors updated in place (v.mul_(mu).add_(grad)); velocities[i] = ... puts a new "
            "tensor in the list and leaves the caller's tensor as it was")
        for i, (p, g) in enumerate(zip(ours, grads)):
            assert torch.equal(p.grad, g), f"expected parameter {i}'s .grad left as it was, but the step changed it"
        optimizer.step()
        for i, (p, q) in enumerate(zip(ours, theirs)):
            err = (p.detach() - q.detach()).abs().max().item()
            assert err < 1e-6, (
                f"after step {step}, expected parameter {i} to match torch.optim.SGD(momentum={mu}) "
                f"(max abs difference {err:.2e}); is the velocity updated in place as v = mu * v + grad?"
            )
            buf = optimizer.state[q]["momentum_buffer"]
            assert_close(velocities[i], buf, f"after step {step}, velocity {i} (torch.optim.SGD's momentum_buffer)",
                         atol=1e-6)


def check_split_indices(fn):
    n, frac = 100, 0.2
    train_idx, val_idx = fn(n, frac, seed=3)
    for name, idx in (("train_idx", train_idx), ("val_idx", val_idx)):
        assert isinstance(idx, torch.Tensor) and idx.dtype == torch.int64, f"expected {name} as an int64 tensor"
    assert len(val_idx) == 20 and len(train_idx) == 80, (
        f"expected 80 train and 20 validation indices, got {len(train_idx)} and {len(val_idx)}"
    )
    together = torch.cat([train_idx, val_idx]).sort().values
    assert torch.equal(together, torch.arange(n)), "expected every index 0..n-1 exactly once across the two parts"
    assert not torch.equal(val_idx.sort().values, torch.arange(80, 100)) and not torch.equal(
        val_idx.sort().values, torch.arange(0, 20)
    ), "expected a random validation set, got a contiguous block (sorted datasets make that a biased sample)"
    torch.manual_seed(123)  # the global RNG state must not matter
    np.random.seed(123)
    random.seed(123)
    state_before = torch.get_rng_state()
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    again = fn(n, frac, seed=3)
    assert torch.equal(again[1], val_idx) and torch.equal(again[0], train_idx), (
        "expected the same split for the same seed (use a torch.Generator seeded with `seed`)"
    )
    assert torch.equal(torch.get_rng_state(), state_before), (
        "expected the global random number generator to be left alone, but the call changed its state: "
        "torch.manual_seed(seed) inside the function reseeds the generator the rest of the program draws from "
        "(initialisation, dropout, shuffling); draw from your own torch.Generator().manual_seed(seed)"
    )
    assert (np.random.get_state()[1] == np_before).all() and random.getstate() == py_before, (
        "expected NumPy's and Python's global random generators to be left alone: np.random.seed / random.seed "
        "inside the function reseed what the rest of the program draws from; use torch.Generator().manual_seed(seed)")
    other = fn(n, frac, seed=4)
    assert not torch.equal(other[1], val_idx), "expected a different split for a different seed"
    small_train, small_val = fn(7, 0.5, seed=0)
    assert len(small_val) == 3 and len(small_train) == 4, (
        f"expected int(7 * 0.5) = 3 validation indices and 4 train, got {len(small_val)} and {len(small_train)}"
    )
    none_train, none_val = fn(10, 0.05, seed=0)
    assert len(none_val) == 0 and len(none_train) == 10, (
        f"expected int(10 * 0.05) = 0 validation indices and all 10 for training, got {len(none_val)} and "
        f"{len(none_train)} (perm[-0:] is the whole permutation: slice with perm[:n_val] and perm[n_val:])"
    )

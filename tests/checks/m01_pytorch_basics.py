"""Checks of 01-pytorch-basics/exercises.py, one check_<name>(fn) per exercise, in exercise order.

Expectations are computed here, by hand or with other torch ops, never by calling the reference solution.
"""

import contextlib
from unittest import mock

import numpy as np
import torch
from check_utils import assert_close, describe
from torch import nn

CPU = torch.device("cpu")
META = torch.device("meta")  # exists on every machine: a device-agnostic function must work with it


def _tensor(got, what: str) -> torch.Tensor:
    assert isinstance(got, torch.Tensor), f"expected {what} to be a torch.Tensor, got {describe(got)}"
    return got


def check_make_grid(fn):
    got = _tensor(fn(2, 3, CPU), "make_grid(2, 3, cpu)")
    assert got.shape == (2, 3), f"expected shape (2, 3), got {tuple(got.shape)}"
    assert got.dtype == torch.float32, (
        f"expected dtype torch.float32, got {got.dtype}" + (" (torch.arange counts in int64)"
                                                           if got.dtype == torch.int64 else ""))
    expected = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert got.tolist() == expected, f"expected {expected} (0, 1, 2, ... row by row), got {describe(got)}"
    tall = _tensor(fn(4, 1, CPU), "make_grid(4, 1, cpu)")
    assert tall.tolist() == [[0.0], [1.0], [2.0], [3.0]], f"expected make_grid(4, 1) = [[0], [1], [2], [3]], got " \
        f"{describe(tall)}"
    on_meta = _tensor(fn(2, 2, META), "make_grid(2, 2, meta)")
    assert on_meta.device.type == "meta", f"expected the tensor on the device passed in (meta), got {on_meta.device}"


def check_share_from_numpy(fn):
    arr = np.arange(4, dtype=np.float64)
    got = _tensor(fn(arr), "share_from_numpy(arr)")
    assert got.dtype == torch.float64, f"expected the array's dtype torch.float64 to be kept, got {got.dtype}"
    assert got.tolist() == [0.0, 1.0, 2.0, 3.0], f"expected values [0, 1, 2, 3], got {describe(got)}"
    arr[0] = 42.0
    assert got[0].item() == 42.0, (
        f"expected the tensor to share memory with the array (after arr[0] = 42, t[0] should be 42.0), got "
        f"{got[0].item()}: your function copied the array (torch.tensor(arr) copies; torch.from_numpy(arr) shares)"
    )
    ints = np.array([[1, 2], [3, 4]], dtype=np.int32)
    got_ints = _tensor(fn(ints), "share_from_numpy(int32 array)")
    got_ints[1, 1] = -7
    assert ints[1, 1] == -7, f"expected writes to the tensor to show in the array, got array {ints.tolist()}"


def check_independent_numpy(fn):
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    moved = []

    def to_cpu(value) -> bool:
        try:
            return torch.device(value).type == "cpu"  # "cpu", "cpu:0", torch.device("cpu")
        except (TypeError, RuntimeError):  # a dtype, another tensor, None: not a move to the CPU by name
            return False

    def always(*args, **kwargs) -> bool:
        return True

    # every way the values can leave the tensor's device (a GPU in real use): recorded, then done as usual
    moves = {(torch.Tensor, "cpu"): always, (torch.Tensor, "tolist"): always, (torch.Tensor, "item"): always,
             (torch.Tensor, "__float__"): always,
             (torch.Tensor, "to"): lambda self, *a, **k: to_cpu(k.get("device", a[0] if a else None)),
             (torch.Tensor, "numpy"): lambda self, *a, force=False: force,  # numpy(force=True) moves it itself
             (torch.Tensor, "copy_"): lambda self, *a, **k: self.device.type == "cpu",  # into a CPU tensor
             (torch, "asarray"): lambda *a, **k: to_cpu(k.get("device")),
             (torch, "as_tensor"): lambda *a, **k: to_cpu(k.get("device", a[2] if len(a) > 2 else None))}

    def recording(real, is_move):
        def call(*args, **kwargs):
            if is_move(*args, **kwargs):
                moved.append("cpu")
            return real(*args, **kwargs)
        return call

    with contextlib.ExitStack() as stack:
        for (owner, name), is_move in moves.items():
            stack.enter_context(mock.patch.object(owner, name, recording(getattr(owner, name), is_move)))
        got = fn(w)
    assert isinstance(got, np.ndarray), f"expected a numpy.ndarray, got {describe(got)}"
    assert got.dtype == np.float32, f"expected the tensor's dtype kept (float32), got {got.dtype}"
    assert "cpu" in moved, (
        "expected the values brought to the CPU before NumPy takes them (.cpu(), .to(\"cpu\"), "
        ".numpy(force=True), ...): the tensor may live on a GPU, and .numpy() works on CPU tensors only")
    assert got.tolist() == [1.0, 2.0, 3.0], f"expected values [1.0, 2.0, 3.0], got {describe(got)}"
    with torch.no_grad():
        w.add_(10)  # what an optimizer step does
    assert got.tolist() == [1.0, 2.0, 3.0], (
        f"expected the array to keep [1.0, 2.0, 3.0] after an in-place update of the tensor, got {describe(got)}: "
        "it still shares memory with the tensor (add .copy())"
    )
    plain = torch.arange(3.0)
    got_plain = fn(plain)
    got_plain[0] = 99.0
    assert plain[0].item() == 0.0, "expected writes to the returned array not to change the tensor, but they did"


def check_numpy_to_model_input(fn):
    arr = np.random.default_rng(0).standard_normal((5, 3))  # float64, like most NumPy/pandas data
    got = _tensor(fn(arr, CPU), "numpy_to_model_input(arr, cpu)")
    assert got.dtype == torch.float32, f"expected dtype torch.float32 (model weights are float32), got {got.dtype}"
    assert got.shape == (5, 3), f"expected shape (5, 3), got {tuple(got.shape)}"
    assert_close(got, torch.from_numpy(arr.astype(np.float32)), "the array's values rounded to float32", atol=0.0)
    out = nn.Linear(3, 2)(got)
    assert out.shape == (5, 2), f"expected nn.Linear(3, 2) to accept the tensor and give (5, 2), got {tuple(out.shape)}"
    on_meta = _tensor(fn(arr, META), "numpy_to_model_input(arr, meta)")
    assert on_meta.device.type == "meta", f"expected the tensor on the device passed in (meta), got {on_meta.device}"
    assert on_meta.dtype == torch.float32, f"expected float32 on meta too, got {on_meta.dtype}"


def check_move_batch(fn):
    batch = {"x": torch.randn(4, 3), "y": torch.tensor([0, 1, 1, 0]), "ids": [7, 8, 9, 10], "split": "train"}
    got = fn(batch, META)
    assert isinstance(got, dict), f"expected a dict, got {type(got).__name__}"
    assert set(got) == set(batch), f"expected keys {sorted(batch)}, got {sorted(got)}"
    for key in ("x", "y"):
        t = _tensor(got[key], f"batch[{key!r}]")
        assert t.device.type == "meta", (
            f"expected batch[{key!r}] on the meta device, got {t.device}: tensor.to(device) returns a new tensor, "
            "store it"
        )
        assert t.shape == batch[key].shape and t.dtype == batch[key].dtype, (
            f"expected batch[{key!r}] to keep shape {tuple(batch[key].shape)} and dtype {batch[key].dtype}, got "
            f"{tuple(t.shape)} {t.dtype}"
        )
    assert got["ids"] == [7, 8, 9, 10] and got["split"] == "train", (
        f"expected non-tensors unchanged, got ids={describe(got['ids'])}, split={describe(got['split'])}"
    )
    same = fn({"x": torch.arange(3.0)}, CPU)
    assert same["x"].tolist() == [0.0, 1.0, 2.0], f"expected values kept on the cpu, got {describe(same['x'])}"


def check_choose_device(fn):
    cases = [
        # (preferred, cuda available, mps available, expected)
        ("auto", True, False, "cuda"),
        ("auto", False, True, "mps"),
        ("auto", False, False, "cpu"),
        ("auto", True, True, "cuda"),
        ("cpu", True, False, "cpu"),
        ("mps", True, True, "mps"),
        ("cuda", True, False, "cuda"),
    ]
    for preferred, cuda, mps, expected in cases:
        with mock.patch.object(torch.cuda, "is_available", return_value=cuda), \
                mock.patch.object(torch.backends.mps, "is_available", return_value=mps):
            got = fn(preferred)
        assert isinstance(got, torch.device), (
            f"expected a torch.device, got {describe(got)} (wrap the name: torch.device(name))"
        )
        assert got.type == expected, (
            f"expected choose_device({preferred!r}) with cuda available={cuda}, mps available={mps} to give "
            f"{expected}, got {got}"
        )


def check_train_step(fn):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)  # (N, 3), (N, 1)
    lr = 0.1
    w, b = model.weight.detach().clone(), model.bias.detach().clone()  # (1, 3), (1,)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)  # stale gradients left by an earlier step: cleared first, then backward
    for step in (1, 2, 3):
        residual = x @ w.T + b - y  # (N, 1)
        expected_loss = (residual**2).mean().item()
        grad_w = 2 * residual.T @ x / len(x)  # d/dw of the mean squared error, by hand
        grad_b = 2 * residual.sum(0) / len(x)
        w, b = w - lr * grad_w, b - lr * grad_b
        before = (model.weight.detach().clone(), model.bias.detach().clone())
        got = fn(model, optimizer, nn.MSELoss(), x, y)
        assert isinstance(got, float), f"expected the loss as a Python float (loss.item()), got {type(got).__name__}"
        assert abs(got - expected_loss) < 1e-5, (
            f"step {step}: expected the loss before the update, {expected_loss:.6f}, got {got:.6f}"
        )
        err = max((model.weight - w).abs().max().item(), (model.bias - b).abs().max().item())
        moved = not (torch.equal(model.weight.detach(), before[0]) and torch.equal(model.bias.detach(), before[1]))
        assert err < 1e-5, (
            f"step {step}: expected parameters after one SGD step to match a hand-computed update within 1e-5, got "
            f"an error of {err:.3g} " + ("(old gradients not cleared before backward?)" if moved else
                                         "(the parameters did not change: backward() before optimizer.step()?)")
        )
    torch.manual_seed(1)
    classifier, x3, y3 = nn.Linear(3, 4), torch.randn(6, 3), torch.tensor([0, 3, 1, 2, 3, 0])
    with torch.no_grad():
        expected_loss = nn.functional.cross_entropy(classifier(x3), y3).item()
    got = fn(classifier, torch.optim.SGD(classifier.parameters(), lr=lr), nn.CrossEntropyLoss(), x3, y3)
    assert isinstance(got, float) and abs(got - expected_loss) < 1e-5, (
        f"with nn.CrossEntropyLoss: expected loss_fn(prediction, y) = {expected_loss:.6f}, got {describe(got)} (the "
        "prediction first, then the target; MSELoss gives the same either way round, most losses do not)"
    )


def check_predict_proba(fn):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    x = torch.randn(10, 4)  # (N, 4)
    with torch.no_grad():  # dropout off by hand: in eval mode nn.Dropout is the identity
        hidden = torch.relu(x @ model[0].weight.T + model[0].bias)
        expected = torch.softmax(hidden @ model[3].weight.T + model[3].bias, dim=1)  # (N, 3)
    model.train()  # as it is left after training
    grad_modes = []
    model.register_forward_hook(lambda mod, inp, out: grad_modes.append(torch.is_grad_enabled()))
    got = _tensor(fn(model, x), "predict_proba(model, x)")
    assert grad_modes and not any(grad_modes), (
        "expected the forward pass under torch.no_grad() (or inference_mode), as the docstring asks: without it "
        "autograd records a graph for every prediction whose parameters require grad, and .detach() afterwards "
        "does not undo that cost")
    assert got.shape == (10, 3), f"expected shape (10, 3), got {tuple(got.shape)}"
    assert not got.requires_grad, "expected a result that does not require grad: compute it under torch.no_grad()"
    assert_close(got.sum(dim=1), torch.ones(10), "each row's sum (softmax over dim=1 sums to 1)", atol=1e-5)
    assert_close(got, expected, "the eval-mode probabilities (dropout off: call model.eval() first)", atol=1e-5)


def check_count_nonfinite(fn):
    nan, inf = float("nan"), float("inf")
    cases = [
        (torch.tensor([1.0, 2.0, 3.0]), 0),
        (torch.tensor([1.0, nan, inf, -inf]), 3),
        (torch.tensor([[nan, nan], [0.0, -inf]]), 3),
        (torch.tensor([inf, 5.0]), 1),
    ]
    for t, expected in cases:
        got = fn(t)
        assert isinstance(got, int) and not isinstance(got, bool), (
            f"expected a Python int, got {describe(got)} (use .item() or int(...))"
        )
        assert got == expected, f"expected {expected} non-finite elements in {t.tolist()}, got {got}"


def check_seeded_weights(fn):
    first = _tensor(fn(0), "seeded_weights(0)")
    assert first.shape == (3, 4), f"expected the weight of nn.Linear(4, 3), shape (3, 4), got {tuple(first.shape)}"
    torch.rand(100)  # other code draws random numbers between the calls
    again = fn(0)
    assert torch.equal(first, again), (
        "expected seeded_weights(0) to give the same weights on every call, got different ones: seed torch's "
        "generator with torch.manual_seed"
    )
    other = fn(1)
    assert not torch.equal(first, other), "expected seeds 0 and 1 to give different weights, got identical ones"
    assert not first.requires_grad, "expected a detached copy (it must not require grad)"

"""Checks for 09-custom-models/exercises.py, one check_<name>(fn) per exercise, in exercise order.

Expectations are computed independently: by hand, with numpy, or with other torch ops; never with the solutions.
"""

import math
from unittest import mock

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from check_utils import assert_close, describe


def check_residual_block(fn):
    block = fn(6)
    assert isinstance(block, nn.Module), f"expected an nn.Module, got {describe(block)}"
    body = getattr(block, "body", None)
    assert isinstance(body, nn.Sequential), \
        f"expected the block's attribute `body` to be an nn.Sequential, got {body!r}"
    kinds = [type(m).__name__ for m in body]
    expected_kinds = ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    assert kinds == expected_kinds, f"expected body layers {expected_kinds}, got {kinds}"
    for conv in (body[0], body[3]):
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (6, 6, (3, 3), (1, 1)), (
            f"expected Conv2d(6, 6, 3, padding=1), got {conv}"
        )
        assert conv.bias is None, (
            f"expected Conv2d(..., bias=False), got {conv}: the BatchNorm after it subtracts the mean and adds its own "
            "bias, so a conv bias is a wasted parameter"
        )
    block.eval()  # running statistics: a deterministic function to compare against
    for bn in (body[1], body[4]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        body_out = body(x)  # (2, 6, 5, 7)
        got = block(x)
    assert_close(got, torch.relu(x + body_out), "block(x) should be relu(x + body(x))", atol=1e-5)
    with torch.no_grad():
        body[4].weight.zero_()
        body[4].bias.zero_()
        got = block(x)
    assert_close(got, torch.relu(x), "with the last BatchNorm zeroed the block should pass relu(x) through "
                 "(the skip connection)", atol=1e-6)


def check_make_normalizer(fn):
    mean, std = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.1, 0.5, 4.0])
    given_mean, given_std = mean.clone(), std.clone()
    norm = fn(given_mean, given_std)
    assert isinstance(norm, nn.Module), f"expected an nn.Module, got {describe(norm)}"
    params = [name for name, _ in norm.named_parameters()]
    assert not params, f"expected no parameters (an optimizer would train them), got parameters {params}"
    keys = sorted(norm.state_dict())
    assert keys == ["mean", "std"], f"expected state_dict keys ['mean', 'std'] (registered buffers), got {keys}"
    x = torch.randn(4, 3, 2, 5)
    expected = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert_close(norm(x), expected, "norm(x) should be (x - mean) / std per channel", atol=1e-5)
    shared = [name for name, given in (("mean", given_mean), ("std", given_std))
              if getattr(norm, name).untyped_storage().data_ptr() == given.untyped_storage().data_ptr()]
    assert not shared, (
        f"expected buffers that are the module's own copies (.clone()), but {shared} share memory with the tensors "
        "passed in: changing those, or load_state_dict, which copies into the buffers, would change both"
    )
    norm = norm.double()
    assert norm.mean.dtype == torch.float64 and norm.std.dtype == torch.float64, (
        f"expected .double() to convert the buffers too, got mean {norm.mean.dtype}, std {norm.std.dtype}"
    )
    assert_close(norm(x.double()), expected.double(), "after .double(), norm(x) in float64", atol=1e-6)


class _Member(nn.Module):
    """A classifier whose train and eval modes differ (BatchNorm statistics, dropout)."""

    def __init__(self, scale: float):
        super().__init__()
        self.bn = nn.BatchNorm1d(5)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(5, 4)
        self.scale = scale

    def forward(self, x):
        self.grad_enabled = torch.is_grad_enabled()  # checked: members must predict without building a graph
        return self.scale * self.fc(self.drop(self.bn(x)))


def check_ensemble_predict(fn):
    members = [_Member(s) for s in (1.0, 6.0, 0.5)]  # one over-confident member: logits and probs averages differ
    for m in members:
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.train()  # left in train mode: the function must switch to eval itself
    x = torch.randn(16, 5, requires_grad=True)
    with torch.no_grad():
        for m in members:
            m.eval()
        expected = torch.stack([m(x).softmax(dim=1) for m in members]).mean(0)  # (16, 4)
        for m in members:
            m.train()
    got = fn(members, x)
    assert isinstance(got, torch.Tensor) and tuple(got.shape) == (16, 4), (
        f"expected probabilities of shape (16, 4), got {describe(got)}"
    )
    assert not got.requires_grad and not any(m.grad_enabled for m in members), (
        "expected the members to predict without building a graph (inside torch.no_grad(); .detach() afterwards "
        "still builds and keeps one per member)"
    )
    assert_close(got.sum(1), torch.ones(16), "each row of probabilities should sum to 1", atol=1e-5)
    assert_close(got, expected, "expected the mean of the members' softmax probabilities, in eval mode", atol=1e-5)


def _ece_by_hand(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    total = 0.0
    n = len(labels)
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        rows = [i for i in range(n) if lo < probs[i].max() <= hi]
        if rows:
            acc = np.mean([probs[i].argmax() == labels[i] for i in rows])
            conf = np.mean([probs[i].max() for i in rows])
            total += len(rows) / n * abs(acc - conf)
    return total


def check_calibration_error(fn):
    probs = torch.tensor([[0.85, 0.15], [0.65, 0.35], [0.28, 0.72]])  # confidences inside bins, not on an edge:
    got = fn(probs, torch.tensor([0, 1, 1]))                              # float32 0.6 is 0.6000000238, above 0.6
    assert isinstance(got, (float, int)) or (isinstance(got, torch.Tensor) and got.numel() == 1), (
        f"expected a float, got {describe(got)}"
    )
    assert abs(float(got) - 0.36) < 1e-5, f"on the docstring's example expected 0.3600, got {float(got):.4f}"
    g = torch.Generator().manual_seed(0)
    for n, c, bins in ((500, 5, 10), (300, 3, 15), (50, 10, 5)):
        logits = torch.randn(n, c, generator=g) * 2.5
        probs = logits.softmax(1)
        labels = torch.where(torch.rand(n, generator=g) < 0.6, probs.argmax(1), torch.randint(c, (n,), generator=g))
        expected = _ece_by_hand(probs.numpy().astype(np.float64), labels.numpy(), bins)
        got = float(fn(probs, labels, n_bins=bins))
        assert abs(got - expected) < 1e-4, (
            f"{n} samples, {c} classes, {bins} bins: expected ECE {expected:.4f}, got {got:.4f} (each bin's gap "
            "weighted by its share of samples; confidence = the top probability)"
        )


def check_amp_training_step(fn):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    reference = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    reference.load_state_dict(model.state_dict())
    x, y = torch.randn(12, 6), torch.randint(3, (12,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    # a small scale that doubles after every good step: 4 -> 8 -> 16 (a large one would hide stale gradients,
    # divided by it when the next step unscales)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=1)
    seen = []
    hook = model[0].register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    losses, ref_losses = [], []
    for _ in range(2):  # two steps: stale gradients from the first would change the second
        try:
            losses.append(fn(model, x, y, opt, scaler, "cpu", torch.bfloat16))
        except AssertionError as err:
            if "No inf checks were recorded" not in str(err):
                raise
            raise AssertionError("scaler.update() found no scaler.step(optimizer) before it (torch: 'No inf checks "
                                 "were recorded'): step through the scaler, not optimizer.step()") from None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref_loss = F.cross_entropy(reference(x), y)
        ref_losses.append(ref_loss.item())
        ref_opt.zero_grad()
        ref_loss.backward()  # unscaled: scaling by a power of two and unscaling is exact
        ref_opt.step()
    hook.remove()
    assert seen and all(d == torch.bfloat16 for d in seen), (
        f"expected the forward pass under torch.autocast('cpu', dtype=torch.bfloat16) (Linear outputs bfloat16), "
        f"got {seen}"
    )
    assert isinstance(losses[0], float), f"expected the loss as a Python float, got {describe(losses[0])}"
    for step, (got, want) in enumerate(zip(losses, ref_losses), 1):
        if abs(got - want) < 1e-5:
            continue
        if any(abs(got - scale * want) < 1e-4 for scale in (4.0, 8.0)):  # the scale is 4, then 8, here
            why = "return loss.item(), not scaler.scale(loss).item(), which is multiplied by the scale: 4, then 8"
        elif step == 2:
            why = ("step 1 left the parameters wrong: scaler.step(optimizer) unscales the gradients before the step, "
                   "then scaler.update(); gradients cleared before each backward")
        else:
            why = "the cross-entropy of model(x) under torch.autocast, as loss.item()"
        raise AssertionError(f"step {step}: expected the unscaled cross-entropy {want:.5f}, got {got:.5f} ({why})")
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert_close(p.detach(), q.detach(), f"after two steps, parameter {name} (expected scaler.step(optimizer) "
                     "with unscaled gradients, cleared before each backward)", atol=1e-5)
    assert scaler.get_scale() == 16.0, (
        f"expected the scale to grow 4 -> 16 over two steps (scaler.update() after each), got "
        f"{scaler.get_scale()}"
    )


def check_average_gradients(fn):
    calls = []

    class Done:  # what all_reduce(..., async_op=True) returns: a handle to wait on (finished already, here)
        def wait(self, timeout=None):
            return True

        def is_completed(self):
            return True

    def fake_all_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        # a simulated second rank whose gradients are 3x this rank's: SUM gives 4x, AVG 2x
        calls.append(op)
        if op == dist.ReduceOp.SUM:
            tensor.mul_(4.0)
        elif op == dist.ReduceOp.AVG:
            tensor.mul_(2.0)
        else:
            raise AssertionError(f"expected all_reduce with ReduceOp.SUM, got {op}")
        return Done() if async_op else None

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    model[0].bias.requires_grad_(False)  # frozen: its .grad stays None
    F.mse_loss(model(torch.randn(8, 4)), torch.randn(8, 2)).backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    with mock.patch.object(dist, "all_reduce", fake_all_reduce), \
            mock.patch.object(dist, "get_world_size", lambda group=None: 2), \
            mock.patch.object(dist, "is_available", lambda: True), \
            mock.patch.object(dist, "is_initialized", lambda: True):  # a guard "not distributed: do nothing" is fine
        result = fn(model)
    assert calls, "expected dist.all_reduce to be called on the gradients (the check simulates a second rank there)"
    assert model[0].bias.grad is None, "expected parameters without a gradient to be left alone"
    for name, p in model.named_parameters():
        if name in before:
            assert_close(p.grad, 2.0 * before[name], f"{name}.grad should be the mean over 2 ranks (the other rank "
                         "holds 3x this one's gradient, so the mean is 2x)", atol=1e-6)
    assert result is None or result is model, "expected the gradients changed in place"


def check_lightning_classifier(fn):
    import pytorch_lightning as pl

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    module = fn(net, 0.0123)
    assert isinstance(module, pl.LightningModule), f"expected a pl.LightningModule, got {type(module).__name__}"
    x, y = torch.randn(10, 4), torch.randint(3, (10,))
    assert_close(module(x), net(x), "module(x) should be net(x)", atol=1e-6)
    logged = {}
    module.log = lambda name, value, *args, **kwargs: logged.__setitem__(name, value)  # no Trainer needed
    loss = module.training_step((x, y), 0)
    if isinstance(loss, dict) and "loss" in loss:  # Lightning also takes {"loss": loss, ...}
        loss = loss["loss"]
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0, (
        f"expected training_step to return the loss, a scalar tensor (Lightning backpropagates it), got "
        f"{describe(loss)}"
    )
    expected = F.cross_entropy(net(x), y)
    assert abs(loss.item() - expected.item()) < 1e-5, \
        f"expected the cross-entropy {expected.item():.5f}, got {loss.item():.5f}"
    assert loss.requires_grad, "expected the returned loss to carry gradients (do not .item() or detach it)"
    assert "train_loss" in logged, f"expected self.log('train_loss', loss), logged {sorted(logged)}"
    config = module.configure_optimizers()
    opt = config["optimizer"] if isinstance(config, dict) else config
    if isinstance(opt, (list, tuple)) and len(opt) == 2 and isinstance(opt[0], (list, tuple)) and not opt[1]:
        opt = opt[0]                                   # Lightning's ([optimizer], [schedulers]) with no scheduler
    if isinstance(opt, (list, tuple)) and len(opt) == 1:  # Lightning also takes [optimizer]
        opt = opt[0]
    assert isinstance(opt, torch.optim.Adam), f"expected configure_optimizers to return Adam, got {describe(opt)}"
    lrs = [group["lr"] for group in opt.param_groups]
    assert all(abs(lr - 0.0123) < 1e-12 for lr in lrs), f"expected lr 0.0123 (the argument), got {lrs}"
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    missing = [name for name, p in module.named_parameters() if id(p) not in in_opt]
    assert not missing, f"expected the optimizer over all the module's parameters, missing {missing}"


def _linear_onnx(path, weight: torch.Tensor, bias: torch.Tensor, activation: str) -> None:
    """An ONNX file computing activation(x @ weight.T + bias), written with onnx.helper (no exporter needed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out_features, in_features = weight.shape
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["z"], transB=1), helper.make_node(activation, ["z"], ["y"])]
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_features])],
        [numpy_helper.from_array(weight.numpy(), "W"), numpy_helper.from_array(bias.numpy(), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def check_onnx_parity(fn):
    import tempfile
    from pathlib import Path

    linear = nn.Linear(5, 3)
    with torch.no_grad():
        linear.weight.abs_()
        linear.bias.fill_(0.5)
    model = nn.Sequential(nn.Dropout(0.5), linear, nn.LeakyReLU(0.1))  # dropout: off only in eval mode
    positive = torch.rand(4, 5) * 0.1 + 1.0  # positive pre-activations: ReLU and LeakyReLU agree on this batch
    mixed = torch.randn(32, 5) * 3 - 4  # mostly negative pre-activations: they differ on this one
    with torch.no_grad():
        z = mixed @ linear.weight.T + linear.bias  # (32, 3)
    expected = (0.1 * z.clamp(max=0)).abs().max().item()  # |LeakyReLU(z) - ReLU(z)| = 0.1 * |min(z, 0)|
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relu.onnx"
        _linear_onnx(path, linear.weight.detach(), linear.bias.detach(), "Relu")
        model.train()  # left in train mode: the function must switch to eval itself
        got = fn(model, str(path), [positive, mixed])
        assert isinstance(got, (float, int)) or (isinstance(got, torch.Tensor) and got.numel() == 1), (
            f"expected a float, got {describe(got)}"
        )
        assert abs(float(got) - expected) < 1e-4, (
            f"a model whose ONNX file has Relu instead of LeakyReLU(0.1), checked on a batch of 4 (where they agree) "
            f"and one of 32 (where they differ): expected the worst difference {expected:.4f}, got {float(got):.4f} "
            "(check every input, with the model in eval mode)"
        )
        model[2].negative_slope = 0.0  # now the model is Linear -> ReLU, exactly the file
        model.train()
        got = fn(model, str(path), [positive, mixed, torch.randn(1, 5)])
        assert float(got) < 1e-5, (
            f"a model equal to its ONNX file: expected a difference below 1e-5, got {float(got):.4g} "
            "(dropout must be off: model.eval())"
        )


def _expect_error(fn, args, kinds, word: str, what: str) -> None:
    """fn(*args) must raise one of `kinds` with `word` in its message; other exceptions are reported, not hidden."""
    try:
        fn(*args)
    except NotImplementedError:
        raise
    except kinds as err:
        assert word in str(err).lower(), (
            f"{what}: expected a {kinds[0].__name__} whose message mentions '{word}', got: {str(err)[:120]!r}"
        )
        return
    except Exception as err:
        got = f"{type(err).__name__}: {str(err)[:120]}"
        raise AssertionError(f"{what}: expected {kinds[0].__name__}, got {got}") from None
    raise AssertionError(f"{what}: expected {kinds[0].__name__}, but the call returned without an error")


def check_checked_bias_gelu(fn):
    x, bias = torch.randn(4, 6), torch.randn(6)
    assert_close(fn(x, bias), F.gelu(x + bias), "valid float32 input: expected gelu(x + bias)", atol=1e-6)
    x64, b64 = torch.randn(2, 3, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    assert_close(fn(x64, b64), F.gelu(x64 + b64), "valid float64 input of shape (2, 3, 5)", atol=1e-12)
    _expect_error(fn, (x.tolist(), bias), (TypeError,), "tensor", "x given as a Python list")
    _expect_error(fn, (x, 1.5), (TypeError,), "tensor", "bias given as a float")
    _expect_error(fn, (torch.randint(5, (4, 6)), torch.randint(5, (6,))), (TypeError,), "dtype", "int64 tensors")
    _expect_error(fn, (x.half(), bias.half()), (TypeError,), "dtype", "float16 x (the kernel has float32/64 only)")
    _expect_error(fn, (x, bias.double()), (TypeError,), "dtype", "x float32, bias float64")
    _expect_error(fn, (x, torch.empty(6, device="meta")), (ValueError,), "device", "bias on another device")
    _expect_error(fn, (x, torch.randn(5)), (ValueError,), "shape", "bias of 5 elements for x with 6 columns")
    _expect_error(fn, (x, torch.randn(1, 6)), (ValueError,), "shape", "bias of shape (1, 6): not 1-D")
    _expect_error(fn, (torch.randn(6, 4).t(), bias), (ValueError,), "contiguous", "a transposed (non-contiguous) x")
    assert math.isfinite(float(fn(x, bias).sum())), "expected finite outputs"

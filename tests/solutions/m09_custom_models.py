"""Reference solutions for 09-custom-models/exercises.py, and the common mistakes each check must reject."""

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


# Exercise 1
def _body(channels):
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
    )


class _Residual(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.body = _body(channels)

    def forward(self, x):
        return F.relu(x + self.body(x))


class _ReluBeforeAdd(_Residual):
    def forward(self, x):
        return F.relu(self.body(x)) + x


class _BiasedConvs(_Residual):
    def __init__(self, channels):
        super().__init__(channels)
        self.body[0] = nn.Conv2d(channels, channels, 3, padding=1)  # bias=True by default
        self.body[3] = nn.Conv2d(channels, channels, 3, padding=1)


class _NoSkip(_Residual):
    def forward(self, x):
        return F.relu(self.body(x))


def residual_block(channels):
    return _Residual(channels)


def residual_block__relu_before_add(channels):
    return _ReluBeforeAdd(channels)


def residual_block__biased_convs(channels):
    return _BiasedConvs(channels)


def residual_block__forgot_skip(channels):
    return _NoSkip(channels)


# Exercise 2
class _Normalizer(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", mean.view(1, -1, 1, 1).clone())
        self.register_buffer("std", std.view(1, -1, 1, 1).clone())

    def forward(self, x):
        return (x - self.mean) / self.std


class _ParamNormalizer(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean = nn.Parameter(mean.view(1, -1, 1, 1).clone())  # the optimizer will "learn" the statistics
        self.std = nn.Parameter(std.view(1, -1, 1, 1).clone())

    def forward(self, x):
        return (x - self.mean) / self.std


class _PlainAttrNormalizer(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean = mean.view(1, -1, 1, 1).clone()  # not in state_dict, left behind by .to()/.double()
        self.std = std.view(1, -1, 1, 1).clone()

    def forward(self, x):
        return (x - self.mean) / self.std


def make_normalizer(mean, std):
    return _Normalizer(mean, std)


def make_normalizer__parameters_not_buffers(mean, std):
    return _ParamNormalizer(mean, std)


def make_normalizer__plain_attributes(mean, std):
    return _PlainAttrNormalizer(mean, std)


class _SharedNormalizer(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", mean.view(1, -1, 1, 1))  # a view of the caller's tensor: no copy
        self.register_buffer("std", std.view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def make_normalizer__shares_the_callers_tensors(mean, std):
    return _SharedNormalizer(mean, std)


# Exercise 3
def ensemble_predict(models, x):
    probs = []
    with torch.no_grad():
        for model in models:
            model.eval()
            probs.append(model(x).softmax(dim=1))
    return torch.stack(probs).mean(0)


def ensemble_predict__averaged_logits(models, x):
    with torch.no_grad():
        for model in models:
            model.eval()
        return torch.stack([model(x) for model in models]).mean(0).softmax(dim=1)


def ensemble_predict__forgot_eval(models, x):
    with torch.no_grad():
        return torch.stack([model(x).softmax(dim=1) for model in models]).mean(0)


def ensemble_predict__graph_built_then_detached(models, x):
    for model in models:
        model.eval()
    return torch.stack([model(x).softmax(dim=1) for model in models]).mean(0).detach()  # a graph per member first


# Exercise 4
def calibration_error(probs, labels, n_bins=10):
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    bins = (torch.ceil(conf * n_bins) - 1).clamp(0, n_bins - 1).long()
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.float().mean().item() * abs(correct[mask].mean().item() - conf[mask].mean().item())
    return ece


def calibration_error__unweighted_bins(probs, labels, n_bins=10):
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    bins = (torch.ceil(conf * n_bins) - 1).clamp(0, n_bins - 1).long()
    gaps = [abs(correct[bins == b].mean().item() - conf[bins == b].mean().item())
            for b in range(n_bins) if (bins == b).any()]
    return float(np.mean(gaps))


def calibration_error__true_class_probability(probs, labels, n_bins=10):
    conf = probs.gather(1, labels[:, None]).squeeze(1)  # the probability of the right answer, not the confidence
    correct = (probs.argmax(1) == labels).float()
    bins = (torch.ceil(conf * n_bins) - 1).clamp(0, n_bins - 1).long()
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.float().mean().item() * abs(correct[mask].mean().item() - conf[mask].mean().item())
    return ece


# Exercise 5
def amp_training_step(model, x, y, optimizer, scaler, device_type="cpu", dtype=torch.bfloat16):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=dtype):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


def amp_training_step__optimizer_step_on_scaled_grads(model, x, y, optimizer, scaler, device_type="cpu",
                                                      dtype=torch.bfloat16):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=dtype):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    optimizer.step()  # gradients still multiplied by the scale
    return loss.item()


def amp_training_step__returned_scaled_loss(model, x, y, optimizer, scaler, device_type="cpu",
                                            dtype=torch.bfloat16):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=dtype):
        loss = F.cross_entropy(model(x), y)
    scaled = scaler.scale(loss)
    scaled.backward()
    scaler.step(optimizer)
    scaler.update()
    return scaled.item()  # the loss times the scale


def amp_training_step__forgot_update(model, x, y, optimizer, scaler, device_type="cpu", dtype=torch.bfloat16):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=dtype):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    return loss.item()


def amp_training_step__no_autocast(model, x, y, optimizer, scaler, device_type="cpu", dtype=torch.bfloat16):
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


def amp_training_step__forgot_zero_grad(model, x, y, optimizer, scaler, device_type="cpu", dtype=torch.bfloat16):
    with torch.autocast(device_type, dtype=dtype):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


# Exercise 6
def average_gradients(model):
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


def average_gradients__forgot_divide(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def average_gradients__grad_none_not_skipped(model):
    world = dist.get_world_size()
    for p in model.parameters():
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world


# Exercise 7
def _lightning_class(returns_loss=True, use_lr=True):
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self, net, lr):
            super().__init__()
            self.net, self.lr = net, lr

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss if returns_loss else None

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr) if use_lr else torch.optim.Adam(self.parameters())

    return Module


def lightning_classifier(net, lr):
    return _lightning_class()(net, lr)


def lightning_classifier__training_step_returns_nothing(net, lr):
    return _lightning_class(returns_loss=False)(net, lr)


def lightning_classifier__ignored_lr(net, lr):
    return _lightning_class(use_lr=False)(net, lr)


# Exercise 8
def onnx_parity(model, onnx_path, inputs):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    model.eval()
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            out = sess.run(None, {name: x.numpy()})[0]
            worst = max(worst, float(np.abs(out - model(x).numpy()).max()))
    return worst


def onnx_parity__forgot_eval(model, onnx_path, inputs):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    with torch.no_grad():
        return max(float(np.abs(sess.run(None, {name: x.numpy()})[0] - model(x).numpy()).max()) for x in inputs)


def onnx_parity__first_input_only(model, onnx_path, inputs):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model.eval()
    x = inputs[0]
    with torch.no_grad():
        return float(np.abs(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0] - model(x).numpy()).max())


# Exercise 9
def _bias_gelu_kernel(x, bias):
    flat = torch.as_strided(x, (x.numel(),), (1,))
    return F.gelu(flat + bias.repeat(x.numel() // bias.numel())).view(x.shape)


def _validate(x, bias, check_contiguous=True, error=ValueError):
    if not isinstance(x, torch.Tensor) or not isinstance(bias, torch.Tensor):
        raise TypeError(f"x and bias must be torch.Tensor, got {type(x).__name__} and {type(bias).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x must have dtype float32 or float64, got {x.dtype}")
    if bias.dtype != x.dtype:
        raise TypeError(f"bias dtype {bias.dtype} must match x dtype {x.dtype}")
    if bias.device != x.device:
        raise error(f"bias is on device {bias.device}, x on device {x.device}: move them to the same device")
    if bias.dim() != 1 or bias.shape[0] != x.shape[-1]:
        raise error(f"bias must be 1-D with x.shape[-1] = {x.shape[-1]} elements, got shape {tuple(bias.shape)}")
    if check_contiguous and not x.is_contiguous():
        raise error("x must be contiguous: call x.contiguous() first")


def checked_bias_gelu(x, bias):
    _validate(x, bias)
    return _bias_gelu_kernel(x, bias)


def checked_bias_gelu__no_contiguity_check(x, bias):
    _validate(x, bias, check_contiguous=False)
    return _bias_gelu_kernel(x, bias)  # silently wrong for a transposed x


def checked_bias_gelu__runtime_errors(x, bias):
    _validate(x, bias, error=RuntimeError)  # what TORCH_CHECK raises in C++; the exercise asks for ValueError
    return _bias_gelu_kernel(x, bias)

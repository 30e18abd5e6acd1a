"""Checks for 08-transfer-learning/exercises.py, one check_<name>(fn) per exercise, in exercise order.

Expectations are computed independently: by hand, from the models' own layers, or with other torch ops.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from check_utils import assert_close, describe
from torchvision.models import mobilenet_v3_small, resnet18


class _Backbone(nn.Module):
    """A small ResNet-layout model: conv1, bn1, layer1 (conv, bn), fc."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        # ReLU(inplace=True) after a BatchNorm, as in torchvision's ResNets: it overwrites the BatchNorm's output
        self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.layer1(F.relu(self.bn1(self.conv1(x)))).mean((2, 3)))


class _VGGLayout(nn.Module):
    """torchvision's VGG layout, small: features, avgpool, classifier = Sequential(Linear, ReLU, Dropout, Linear)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Dropout(), nn.Linear(24, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def check_freeze_backbone(fn):
    model = _Backbone()
    model.train()
    out = fn(model)
    assert out is model, f"expected the same model back, got {describe(out)}"
    still = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("fc.")]
    assert not still, f"expected every parameter outside model.fc frozen, still trainable: {still}"
    assert all(p.requires_grad for p in model.fc.parameters()), "expected model.fc's parameters to stay trainable"
    before = [bn.running_mean.clone() for bn in _bns(model)]
    model(torch.randn(8, 3, 6, 6) * 3 + 1)  # a forward pass, as a training step makes
    moved = [i for i, (bn, b) in enumerate(zip(_bns(model), before)) if not torch.equal(bn.running_mean, b)]
    assert not moved, (
        f"expected frozen BatchNorm statistics, but a forward pass changed running_mean of {len(moved)} BatchNorm "
        "layer(s): requires_grad_(False) does not stop them; put those layers in eval mode"
    )
    batch_stats = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   and not name.startswith("fc") and (m.training or not m.track_running_stats)]
    assert not batch_stats, (
        f"expected the BatchNorm layers outside the head in eval mode, but {batch_stats} still normalise each batch "
        "with its own statistics (momentum=0 or track_running_stats=False keeps running_mean still, not that)"
    )


def check_replace_head(fn):
    model = fn(resnet18(), 5)
    assert isinstance(model.fc, nn.Linear) and (model.fc.in_features, model.fc.out_features) == (512, 5), (
        f"resnet18: expected model.fc = Linear(512, 5), got {model.fc}"
    )
    assert tuple(model.eval()(torch.randn(1, 3, 32, 32)).shape) == (1, 5), "resnet18: expected (1, 5) logits"
    vgg = _VGGLayout()
    hidden = vgg.classifier[0]
    out = fn(vgg, 7)
    cls = out.classifier
    assert isinstance(cls, nn.Sequential) and len(cls) == 4, (
        f"VGG layout: expected the classifier Sequential kept with its 4 layers, got {describe(cls)}"
    )
    assert cls[0] is hidden, "VGG layout: expected classifier[0] (a pretrained hidden layer) kept, not replaced"
    assert (cls[-1].in_features, cls[-1].out_features) == (24, 7), (
        f"VGG layout: expected classifier[-1] = Linear(24, 7) (in_features read from the old layer), got {cls[-1]}"
    )
    mnet = fn(mobilenet_v3_small(), 3)
    assert (mnet.classifier[-1].in_features, mnet.classifier[-1].out_features) == (1024, 3), (
        f"mobilenet_v3_small: expected classifier[-1] = Linear(1024, 3), got {mnet.classifier[-1]}"
    )


def check_discriminative_param_groups(fn):
    model = _Backbone()
    model.conv1.requires_grad_(False)  # partly frozen, as in gradual unfreezing
    groups = fn(model, 1e-3)
    assert isinstance(groups, list) and len(groups) == 2, \
        f"expected a list of 2 parameter groups, got {describe(groups)}"
    groups = [{**g, "params": list(g["params"])} if isinstance(g, dict) and "params" in g else g for g in groups]
    backbone, head = ({id(p) for p in g["params"]} for g in groups)  # (a generator of parameters is fine too)
    exp_backbone = {id(p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith("fc.")}
    exp_head = {id(p) for p in model.fc.parameters()}
    frozen = {id(p) for p in model.conv1.parameters()}
    assert not (backbone | head) & frozen, (
        f"expected no frozen parameter in the groups; got {len((backbone | head) & frozen)} frozen tensors "
        "(model.conv1 requires no grad)"
    )
    assert backbone == exp_backbone, f"expected the {len(exp_backbone)} trainable backbone tensors in group 0"
    assert head == exp_head, f"expected model.fc's {len(exp_head)} tensors in group 1"
    lrs = [g.get("lr") for g in groups]
    assert lrs[0] is not None and abs(lrs[0] - 1e-4) < 1e-12 and abs(lrs[1] - 1e-3) < 1e-12, (
        f"expected lr 1e-4 for the backbone and 1e-3 for the head, got {lrs}"
    )
    torch.optim.AdamW(groups)  # the groups must be usable as they are
    groups = fn(_Backbone(), 2e-3, backbone_factor=0.3)  # a factor other than the default
    lrs = [g.get("lr") for g in groups]
    assert lrs[0] is not None and abs(lrs[0] - 6e-4) < 1e-12 and abs(lrs[1] - 2e-3) < 1e-12, (
        f"head_lr=2e-3, backbone_factor=0.3: expected lr 6e-4 for the backbone and 2e-3 for the head, got {lrs}"
    )


class _Tied(nn.Module):
    """An embedding and an output layer that share one weight (module 09's weight tying)."""

    def __init__(self):
        super().__init__()
        self.embed, self.out = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight  # one Parameter, in two modules


def check_count_parameters(fn):
    model = _Backbone()
    total = sum(p.numel() for p in model.parameters())
    got = fn(model)
    assert tuple(got) == (total, total), f"all trainable: expected ({total}, {total}), got {got}"
    model.requires_grad_(False)
    model.fc.requires_grad_(True)
    head = 16 * 10 + 10
    got = fn(model)
    assert tuple(got) == (head, total), (
        f"only fc trainable: expected ({head}, {total}) scalar parameters, got {got} (count numel(), not tensors)"
    )
    got = fn(_Tied())
    assert tuple(got) == (40, 40), (
        f"an embedding and an output layer sharing one 10x4 weight: expected (40, 40), got {got} (a shared weight is "
        "one parameter: model.parameters() yields it once)"
    )


def check_grad_reverse(fn):
    x = torch.randn(4, 3, requires_grad=True)
    y = fn(x, 0.3)
    assert_close(y, x.detach(), "forward of grad_reverse(x, 0.3) should return x unchanged", atol=0)
    w = torch.randn(4, 3)
    (y * w).sum().backward()
    assert_close(x.grad, -0.3 * w, "gradient reaching x should be -lambd times the incoming gradient", atol=1e-6)
    x2 = torch.randn(5, requires_grad=True)
    fn(x2, 2.0).sum().backward()
    assert_close(x2.grad, torch.full((5,), -2.0), "with lambd=2.0 the gradient of sum() should be -2", atol=1e-6)


def check_recompute_bn_stats(fn):
    model = _Backbone()
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(16, 3, 6, 6))  # "source" statistics: mean 0
    batches = [torch.randn(16, 3, 6, 6) * 2 + 3 for _ in range(3)]  # the new domain: mean 3, std 2
    weights_before = {k: v.clone() for k, v in model.state_dict().items()
                      if "running" not in k and "num_batches" not in k}
    out = fn(model, batches)
    assert out is model, f"expected the same model back, got {describe(out)}"
    assert not model.training, "expected the model returned in eval mode"
    for k, v in weights_before.items():
        assert torch.equal(model.state_dict()[k], v), f"expected weights untouched, {k} changed"
    with torch.no_grad():
        pre_bn1 = torch.cat([model.conv1(x) for x in batches])  # what bn1 saw: (48, 8, 6, 6)
    assert_close(model.bn1.running_mean, pre_bn1.mean((0, 2, 3)),
                 "bn1.running_mean should be the exact mean of bn1's inputs over all the new batches", atol=1e-4)
    assert_close(model.bn1.running_var, pre_bn1.var((0, 2, 3)),
                 "bn1.running_var should be the variance of bn1's inputs over the new batches", atol=5e-2, rtol=5e-2)


def check_features_with_hook(fn):
    model = _Backbone()
    model.train()
    x = torch.randn(4, 3, 6, 6) * 2 + 1
    out = fn(model, "layer1", x)
    model.eval()
    with torch.no_grad():
        expected = model.layer1(F.relu(model.bn1(model.conv1(x))))
    assert_close(out, expected, "the output of layer1 in eval mode (BatchNorm with running statistics)", atol=1e-5)
    assert not out.requires_grad, "expected features computed without gradients (torch.no_grad())"
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    assert hooks == 0, f"expected the hook removed afterwards, {hooks} forward hook(s) still registered"
    inner = fn(model, "layer1.1", x)  # a dotted name from named_modules(): the BatchNorm inside layer1
    with torch.no_grad():
        expected = model.layer1[1](model.layer1[0](F.relu(model.bn1(model.conv1(x)))))
    assert_close(inner, expected, "layer='layer1.1' (a name from model.named_modules(), not an attribute): the "
                 "output of the BatchNorm inside layer1, stored as a copy (the in-place ReLU after it overwrites the "
                 "tensor itself)", atol=1e-5)


def check_topk_accuracy(fn):
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05]])
    got = fn(logits, torch.tensor([2, 2]), k=2)
    assert isinstance(got, float), f"expected a Python float (tensor.item()), got {describe(got)}"
    assert abs(got - 0.5) < 1e-6, f"example: expected 0.5, got {got}"
    logits = torch.randn(50, 10)
    targets = torch.randint(10, (50,))
    for k in (1, 3, 5):
        rank = (logits > logits.gather(1, targets[:, None])).sum(1)  # how many classes beat the target
        expected = (rank < k).float().mean().item()
        got = fn(logits, targets, k=k)
        assert abs(float(got) - expected) < 1e-6, f"k={k} on 50 random rows: expected {expected:.3f}, got {got}"


def check_load_matching_weights(fn):
    torch.manual_seed(0)
    source = _Backbone(num_classes=10)
    state = source.state_dict()
    state["extra.weight"] = torch.ones(3)
    target = _Backbone(num_classes=4)
    head_before = target.fc.weight.clone()
    loaded, skipped = fn(target, state)
    expected_skip = sorted(["extra.weight", "fc.bias", "fc.weight"])
    assert list(skipped) == expected_skip, f"expected skipped {expected_skip} (sorted), got {describe(skipped)}"
    expected_loaded = sorted(k for k in state if k not in expected_skip)
    assert isinstance(loaded, list) and all(isinstance(k, str) for k in loaded), (
        f"expected loaded to be a list of names (str), got {describe(loaded)}"
    )
    assert loaded == expected_loaded, (
        f"expected loaded = the {len(expected_loaded)} names of state_dict that were copied, sorted, e.g. "
        f"{expected_loaded[:2]}; got {describe(loaded)}"
    )
    assert torch.equal(target.conv1.weight, source.conv1.weight), "expected conv1.weight copied from the state dict"
    assert torch.equal(target.bn1.running_mean, source.bn1.running_mean), "expected buffers (running_mean) copied too"
    assert torch.equal(target.fc.weight, head_before), "expected the new head left as it was"
    shared = [k for k, v in target.state_dict().items() if k in state and v.data_ptr() == state[k].data_ptr()]
    assert not shared, (
        f"expected the values copied into the model, but {shared[:3]} share memory with the state dict's tensors "
        "(load_state_dict(..., assign=True)): training the model would change the pretrained weights too")


def check_imagenet_normalise(fn):
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    got = fn(images)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (images.double() / 255 - mean.double()) / std.double()
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32, f"expected float32, got {describe(got)}"
    assert_close(got, expected.float(), "(images / 255 - ImageNet mean) / ImageNet std per channel", atol=1e-4)

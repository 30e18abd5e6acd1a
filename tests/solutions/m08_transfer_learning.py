"""Reference solutions for 08-transfer-learning/exercises.py, and the common mistakes each check must reject."""

import torch
import torch.nn as nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# Exercise 1
def freeze_backbone(model):
    model.requires_grad_(False)
    model.fc.requires_grad_(True)
    head = set(model.fc.modules())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in head:
            m.eval()
    return model


def freeze_backbone__batchnorm_left_in_train_mode(model):
    model.requires_grad_(False)
    model.fc.requires_grad_(True)
    return model


def freeze_backbone__batchnorm_momentum_zero(model):
    model.requires_grad_(False)
    model.fc.requires_grad_(True)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0  # running statistics stay put, but train mode still normalises with the batch's own
    return model


def freeze_backbone__head_frozen_too(model):
    model.requires_grad_(False)
    return model.eval()


# Exercise 2
def replace_head(model, num_classes):
    if hasattr(model, "fc"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


def replace_head__whole_classifier_replaced(model, num_classes):
    if hasattr(model, "fc"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        first = next(m for m in model.classifier if isinstance(m, nn.Linear))
        model.classifier = nn.Linear(first.in_features, num_classes)  # the pretrained hidden layers are gone
    return model


def replace_head__hardcoded_in_features(model, num_classes):
    if hasattr(model, "fc"):
        model.fc = nn.Linear(512, num_classes)
    else:
        model.classifier[-1] = nn.Linear(4096, num_classes)
    return model


# Exercise 3
def discriminative_param_groups(model, head_lr, backbone_factor=0.1):
    backbone = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("fc.")]
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("fc.")]
    return [{"params": backbone, "lr": head_lr * backbone_factor}, {"params": head, "lr": head_lr}]


def discriminative_param_groups__frozen_params_included(model, head_lr, backbone_factor=0.1):
    backbone = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    head = list(model.fc.parameters())
    return [{"params": backbone, "lr": head_lr * backbone_factor}, {"params": head, "lr": head_lr}]


def discriminative_param_groups__factor_on_the_head(model, head_lr, backbone_factor=0.1):
    backbone = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("fc.")]
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("fc.")]
    return [{"params": backbone, "lr": head_lr}, {"params": head, "lr": head_lr * backbone_factor}]


def discriminative_param_groups__factor_hardcoded(model, head_lr, backbone_factor=0.1):
    backbone = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("fc.")]
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("fc.")]
    return [{"params": backbone, "lr": head_lr / 10}, {"params": head, "lr": head_lr}]  # backbone_factor ignored


# Exercise 4
def count_parameters(model):
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def count_parameters__counts_tensors(model):
    params = list(model.parameters())
    return sum(1 for p in params if p.requires_grad), len(params)


def count_parameters__ignores_requires_grad(model):
    total = sum(p.numel() for p in model.parameters())
    return total, total


def count_parameters__shared_weight_counted_twice(model):
    params = [p for _, p in model.named_parameters(remove_duplicate=False)]  # a tied weight once per module
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# Exercise 5
class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambd):
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lambd * grad, None


def grad_reverse(x, lambd=1.0):
    return _GradReverse.apply(x, lambd)


class _NegateForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambd):
        ctx.lambd = lambd
        return -lambd * x

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lambd * grad, None


def grad_reverse__negates_the_forward_too(x, lambd=1.0):
    return _NegateForward.apply(x, lambd)


class _ReverseNoScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambd):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad, None


def grad_reverse__forgot_lambda(x, lambd=1.0):
    return _ReverseNoScale.apply(x, lambd)


# Exercise 6
def recompute_bn_stats(model, batches):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    return model.eval()


def recompute_bn_stats__no_reset(model, batches):
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)  # momentum 0.1: mostly the old domain's statistics remain
    return model.eval()


def recompute_bn_stats__left_in_train_mode(model, batches):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    return model


# Exercise 7
def features_with_hook(model, layer, x):
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.update(out=o.clone()))
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return store["out"]


def features_with_hook__forgot_eval(model, layer, x):
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.update(out=o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return store["out"]


def features_with_hook__stores_without_clone(model, layer, x):
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.update(out=o))
    model.eval()
    try:
        with torch.no_grad():
            model(x)  # a later ReLU(inplace=True) writes into the stored tensor
    finally:
        handle.remove()
    return store["out"]


def features_with_hook__getattr_for_the_name(model, layer, x):
    module = getattr(model, layer)  # finds top-level children only: "layer1.1" is not an attribute
    return features_with_hook(model, next(n for n, m in model.named_modules() if m is module), x)


def features_with_hook__hook_never_removed(model, layer, x):
    store = {}
    dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.update(out=o))
    model.eval()
    with torch.no_grad():
        model(x)
    return store["out"]


# Exercise 8
def topk_accuracy(logits, targets, k=5):
    hits = (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1)
    return hits.float().mean().item()


def topk_accuracy__divides_by_k(logits, targets, k=5):
    hits = logits.topk(k, dim=1).indices == targets[:, None]
    return hits.float().sum().item() / hits.numel()


def topk_accuracy__top1_only(logits, targets, k=5):
    return (logits.argmax(dim=1) == targets).float().mean().item()


def topk_accuracy__returns_a_tensor(logits, targets, k=5):
    return (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).float().mean()  # no .item()


# Exercise 9
def load_matching_weights(model, state_dict):
    own = model.state_dict()
    keep = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(keep, strict=False)
    return sorted(keep), sorted(k for k in state_dict if k not in keep)


def load_matching_weights__assigns_the_tensors(model, state_dict):
    own = model.state_dict()
    keep = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(keep, strict=False, assign=True)  # the model now holds the source's tensors themselves
    return sorted(keep), sorted(k for k in state_dict if k not in keep)


def load_matching_weights__strict_false_only(model, state_dict):
    result = model.load_state_dict(state_dict, strict=False)  # still raises on a shape mismatch
    return sorted(k for k in state_dict if k not in result.unexpected_keys), sorted(result.unexpected_keys)


def load_matching_weights__reports_missing_instead(model, state_dict):
    own = model.state_dict()
    keep = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(keep, strict=False)
    return sorted(keep), sorted(k for k in own if k not in keep)  # the model's names, not the file's


def load_matching_weights__pairs_instead_of_names(model, state_dict):
    own = model.state_dict()
    keep = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(keep, strict=False)
    return sorted(keep.items()), sorted(k for k in state_dict if k not in keep)  # (name, tensor) pairs, not names


# Exercise 10
def imagenet_normalise(images):
    x = images.float() / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def imagenet_normalise__half_half_statistics(images):
    return (images.float() / 255 - 0.5) / 0.5


def imagenet_normalise__forgot_to_scale(images):
    x = images.float()
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

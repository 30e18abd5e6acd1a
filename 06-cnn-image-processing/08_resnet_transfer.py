"""Residual blocks and transfer learning: a BasicBlock by hand, then a pretrained backbone against training anew.

Sections:
1. The residual block by hand: conv-BN-ReLU-conv-BN plus a shortcut (the identity, or a 1x1 conv + BN "projection"
   when the shape changes), checked against torchvision's own BasicBlock with the same weights, and the reason it
   exists measured: the gradient norm at the first layer of a deep plain stack against a residual stack.
2. The backbone and its preprocessing. Online: torchvision's resnet18(weights=ResNet18_Weights.DEFAULT) (ImageNet,
   downloaded into --data-dir), whose preprocessing is weights.transforms(). Offline (or --smoke, --offline): a
   narrow ResNet built from the block of section 1, with a stem adapted to small images (3x3 stride-1 conv, no
   max pool: the ImageNet stem would shrink a 32 px image to a 1x1 map), pretrained here on a *source* task (the
   orientation of stripes: 0, 30, ..., 150 degrees) on normalised images. Its normalisation is stored with its
   weights in a cache under --data-dir (written atomically, checked on load) and applied to the target images,
   exactly as weights.transforms() is for ImageNet weights.
3. The *target* task: 3 orientations the backbone never saw (15, 75, 135 degrees), a handful of labelled images per
   class, a validation split for the learning curves and a test split scored once per strategy at the end.
4. From scratch: the same architecture, randomly initialised, trained on those few images.
5. Feature extraction: freeze the backbone (requires_grad_(False), eval-mode BatchNorm), new head (model.fc), train
   only the head on features computed once.
6. Fine-tuning: unfreeze and train everything, the backbone at a 10x lower learning rate than the head; how far the
   backbone's weights moved is measured.

Run it:
    python 06-cnn-image-processing/08_resnet_transfer.py              # ImageNet weights if they can be had
    python 06-cnn-image-processing/08_resnet_transfer.py --offline    # the stand-in backbone

Offline it takes about 30 seconds on a 2-core CPU the first time (pretraining the stand-in, which is then cached) and
about 10 s after that (--smoke: about 5 s). With ImageNet weights every image is resized to 224x224 and resnet18 is
also trained from scratch at that size: an estimated 10 minutes on a 2-core CPU (not measured: the machine these
times come from is offline), seconds on a GPU. What to look for: the first-layer gradient of the plain stack growing
by orders of magnitude with depth, the residual one far less; test accuracies of scratch, frozen and fine-tuned side
by side (transfer.png), and what fine-tuning did to the frozen backbone's accuracy in this run.
"""

import argparse
import copy
import hashlib
import json
import math
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from torchvision.models import ResNet18_Weights, resnet18
from torchvision.models.resnet import BasicBlock as TorchvisionBasicBlock
from torchvision.transforms import v2

SOURCE_ANGLES = (0, 30, 60, 90, 120, 150)  # degrees: the source task's 6 classes
TARGET_ANGLES = (15, 75, 135)  # the target task's 3 classes: orientations never seen in pretraining
CACHE_FORMAT = 2  # bump when the cache layout changes: an old file is then re-created, not misread


def section(title: str) -> None:
    print(f"\n== {title} ==")


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. The one place a lesson decides where tensors live."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where the networks train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true",
                        help="16x16 images, a tiny stand-in backbone and few steps; never downloads")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/06-cnn-image-processing/08_resnet_transfer"),
                        help="where metrics.json and transfer.png are written")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="where the ImageNet weights or the cached stand-in backbone are kept")
    parser.add_argument("--offline", action="store_true", help="do not try to download the ImageNet weights")
    parser.add_argument("--shots", type=int, default=10, help="labelled target images per class")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps for scratch and fine-tuning")
    parser.add_argument("--pretrain-images", type=int, default=4000, help="source-task images for the stand-in")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # NumPy's seed range (torch takes any 64-bit integer)
        parser.error(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    for flag in ("--out-dir", "--data-dir"):  # a file where a folder must be (or be made): one line, no traceback
        path = getattr(args, flag[2:].replace("-", "_"), None)
        existing = next((p for p in (Path(path), *Path(path).parents) if p.exists()), None) if path else None
        if existing is not None and not existing.is_dir():
            parser.error(f"{flag} {path}: {existing} is a file, not a folder")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the CUDA section of the README)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if args.shots < 1 or args.steps < 1 or args.pretrain_images < 100:
        parser.error("--shots and --steps must be >= 1, --pretrain-images >= 100")
    return args


# ---- 1. the residual block ----
class BasicBlock(nn.Module):
    """out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the attribute names follow torchvision's block.

    The shortcut is the identity when the shape is unchanged; otherwise a 1x1 conv with the same stride + BN
    ("projection") makes x the shape of the residual branch, so that the two can be added.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, shortcut: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)  # BN's shift replaces a bias
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = shortcut  # False: the same layers as a plain (VGG-style) block, for the comparison
        self.downsample = None
        if shortcut and (stride != 1 or c_in != c_out):
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):  # x (B, c_in, H, W)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))  # (B, c_out, H/stride, W/stride)
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


def deep_stack(depth: int, shortcut: bool, width: int = 8) -> nn.Sequential:
    """stem conv + `depth` blocks (2 convs each) + global pooling + linear: plain when shortcut=False."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         *[BasicBlock(width, width, shortcut=shortcut) for _ in range(depth)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def first_layer_grad_norm(depth: int, shortcut: bool, device, seed: int) -> float:
    """||dL/dW|| of the very first conv at initialisation, for a random batch and random labels."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 3, 16, 16, generator=g).to(device), torch.randint(10, (32,), generator=g).to(device)
    torch.manual_seed(seed)
    net = deep_stack(depth, shortcut).to(device)
    F.cross_entropy(net(x), y).backward()
    return net[0].weight.grad.norm().item()


def residual_block_section(args, device) -> dict:
    torch.manual_seed(args.seed)
    x = torch.randn(4, 16, 12, 12, device=device)  # (B, C, H, W)
    same, down = BasicBlock(16, 16).to(device), BasicBlock(16, 32, stride=2).to(device)
    diffs = []
    for ours, c_out, stride in ((same, 16, 1), (down, 32, 2)):
        with torch.no_grad():  # non-trivial BN statistics and affine parameters, so a swapped layer would show
            for m in ours.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
        ref = TorchvisionBasicBlock(16, c_out, stride=stride,
                                    downsample=None if ours.downsample is None else copy.deepcopy(ours.downsample))
        ref.load_state_dict(ours.state_dict())  # same names, same shapes: strict loading proves the layout
        ref = ref.to(device).eval()
        out = ours.eval()(x)
        diffs.append((out - ref(x)).abs().max().item())
        kind = "identity shortcut" if ours.downsample is None else "projection shortcut (1x1 conv stride 2 + BN)"
        print(f"BasicBlock(16 -> {c_out}, stride {stride}), {kind}: {tuple(x.shape)} -> {tuple(out.shape)}; "
              f"vs torchvision's BasicBlock with the same weights: max abs diff {diffs[-1]:.1e}")
    shapes_ok = tuple(same(x).shape) == (4, 16, 12, 12) and tuple(down(x).shape) == (4, 32, 6, 6)

    depths = (1, 4, 16) if args.smoke else (1, 4, 16, 32)
    print(f"\nfirst conv's gradient norm at initialisation, blocks of conv-BN-ReLU-conv-BN ({2 * depths[-1] + 1} "
          f"convs at the deepest):")
    print(f"  {'blocks':>6} {'plain':>12} {'residual':>12}")
    grads = {}
    for depth in depths:
        grads[depth] = {s: first_layer_grad_norm(depth, s, device, args.seed) for s in (False, True)}
        print(f"  {depth:>6} {grads[depth][False]:>12.3g} {grads[depth][True]:>12.3g}")
    deep, shallow = depths[-1], depths[0]
    plain_growth = grads[deep][False] / grads[shallow][False]
    res_growth = grads[deep][True] / grads[shallow][True]
    print(f"from {shallow} to {deep} blocks the first layer's gradient grows x{plain_growth:.3g} without shortcuts, "
          f"x{res_growth:.3g} with them ({plain_growth / res_growth:.3g} times less).")
    print("Without the identity path the backward signal is multiplied by every layer on its way down, so it grows "
          "(here, with BatchNorm) or shrinks geometrically with depth and no single learning rate suits the first and "
          "the last layers; with it, part of the gradient reaches the first layer through the additions unchanged.")
    return {"block_vs_torchvision_max_abs_diff": max(diffs), "block_shapes_ok": int(shapes_ok),
            "grad_first_layer_plain_deep": grads[deep][False], "grad_first_layer_residual_deep": grads[deep][True],
            "grad_growth_plain": plain_growth, "grad_growth_residual": res_growth, "grad_depth_blocks": deep}


# ---- 2. the stand-in backbone ----
class SmallResNet(nn.Module):
    """A narrow ResNet for small images. Children in the same order as torchvision's resnet (stem, layers, avgpool,
    fc), so the same code replaces the head and slices off the body of either."""

    def __init__(self, widths=(16, 32, 64), num_classes: int = 10):
        super().__init__()
        # small-image stem: 3x3, stride 1, no max pool (ImageNet's 7x7 stride-2 conv + max pool divides the side by 4)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        layers, c_in = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(BasicBlock(c_in, w, stride=1 if i == 0 else 2))  # side / 2 per later stage
            c_in = w
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):  # (B, 3, H, W)
        return self.fc(torch.flatten(self.avgpool(self.layers(self.stem(x))), 1))  # (B, classes)


def gratings(angles, n: int, side: int, generator: torch.Generator):
    """Striped images whose class is the stripes' orientation: (n, 3, side, side) in [0, 1], labels 0..len-1.

    Random period, phase, colours, a little orientation jitter and pixel noise, so that only the orientation
    carries the label: edge detectors of the right angles are what a network needs, on both tasks.
    """
    u = lambda *s, lo=0.0, hi=1.0: lo + (hi - lo) * torch.rand(*s, generator=generator)  # noqa: E731
    labels = torch.randint(len(angles), (n,), generator=generator)
    theta = torch.tensor(angles, dtype=torch.float32)[labels].view(n, 1, 1) * math.pi / 180
    theta = theta + u(n, 1, 1, lo=-0.08, hi=0.08)
    yy, xx = torch.meshgrid(torch.arange(float(side)), torch.arange(float(side)), indexing="ij")  # (side, side)
    period, phase = u(n, 1, 1, lo=side / 5, hi=side / 3), u(n, 1, 1, hi=2 * math.pi)
    along = xx * torch.cos(theta) + yy * torch.sin(theta)  # (n, side, side): distance across the stripes
    stripes = (torch.sin(2 * math.pi * along / period + phase) > 0).float()[:, None]  # (n, 1, side, side)
    fg, bg = u(n, 3, 1, 1), u(n, 3, 1, 1)
    bg = torch.where((fg - bg).abs().mean(1, keepdim=True) < 0.25, 1 - fg, bg)  # keep the stripes visible
    images = bg + (fg - bg) * stripes + 0.1 * torch.randn(n, 3, side, side, generator=generator)
    return images.clamp(0, 1), labels


def train(model, params, x, y, steps: int, lr, batch: int, generator, train_bn: bool = True, curve=None) -> float:
    """AdamW on `params` (a list or param groups) for `steps` minibatch steps; returns the last loss.

    curve: optional (every, fn) - fn() is called every `every` steps and its value recorded with the step number.
    """
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    points = []
    for step in range(steps):
        model.train(train_bn)
        idx = torch.randint(len(x), (min(batch, len(x)),), generator=generator).to(x.device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if curve is not None and ((step + 1) % curve[0] == 0 or step + 1 == steps):
            points.append((step + 1, curve[1]()))
    if curve is not None:
        curve.append(points)
    return loss.item()


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    preds = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return (preds == y).float().mean().item()


def state_digest(state: dict) -> str:
    """sha256 over every tensor's name, shape and bytes: a flipped bit or a swapped tensor changes it."""
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cache(cache: Path, model: nn.Module, config: dict):
    """(mean, std, source accuracy) from a checked cache, or None with the reason it cannot be used."""
    try:
        blob = torch.load(cache, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT or blob.get("config") != config:
            return None, "written for another configuration or by another version of this lesson"
        if state_digest(blob["state_dict"]) != blob["sha256"]:
            return None, "its weights do not match their stored sha256"
        model.load_state_dict(blob["state_dict"])  # strict: every name and shape must match
        mean, std = blob["mean"], blob["std"]
        if mean.shape != (3,) or std.shape != (3,) or not bool((std > 0).all()):
            return None, "its normalisation is not 3 positive stds"
        return (mean, std, float(blob["source_test_acc"])), ""
    except Exception as err:  # truncated zip, garbage bytes, missing keys, wrong shapes
        return None, f"{type(err).__name__}: {' '.join(str(err).split())[:70]}"


def standin_backbone(args, side: int, device):
    """The narrow ResNet pretrained here on the source task, cached with its normalisation under --data-dir.

    Returns (model, mean, std, how): how is 'loaded', 'created' or 'recreated' (the cache was unusable)."""
    n = 800 if args.smoke else args.pretrain_images
    widths = (8, 16, 32) if args.smoke else (16, 32, 64)
    steps, batch = (80, 32) if args.smoke else (max(100, 4 * n // 64), 64)  # 4 epochs
    config = {"arch": "SmallResNet", "widths": list(widths), "side": side, "images": n, "steps": steps,
              "seed": args.seed}
    cache = args.data_dir / f"standin_smallresnet_gratings_{side}px_{n}img_seed{args.seed}.pt"
    torch.manual_seed(args.seed + 1)
    model = SmallResNet(widths, num_classes=len(SOURCE_ANGLES)).to(device)
    how = "created"
    if cache.is_file():
        found, why = load_cache(cache, model, config)
        if found is not None:
            mean, std, source_acc = found
            print(f"loaded the cached stand-in backbone from {cache} (checked: config, sha256, shapes); "
                  f"its source test accuracy was {source_acc:.1%}")
            return model, mean, std, "loaded"
        print(f"cache corrupt, re-creating: {cache} ({why})")
        how = "recreated"
    g = torch.Generator().manual_seed(args.seed + 1)
    x, y = gratings(SOURCE_ANGLES, n, side, g)
    x_test, y_test = gratings(SOURCE_ANGLES, 300, side, g)
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))  # (3,): the source images' channel statistics
    normalise = v2.Normalize(mean.tolist(), std.tolist())
    x, x_test = normalise(x), normalise(x_test)  # the preprocessing these weights will always expect
    x, y, x_test, y_test = (t.to(device) for t in (x, y, x_test, y_test))
    t0 = time.perf_counter()
    train(model, model.parameters(), x, y, steps, 3e-3, batch, g)
    source_acc = accuracy(model, x_test, y_test)
    print(f"pretrained the stand-in on {n} normalised source images (stripes at {SOURCE_ANGLES} degrees, chance "
          f"{1 / len(SOURCE_ANGLES):.0%}) for {steps} steps in {time.perf_counter() - t0:.1f} s: "
          f"source test accuracy {source_acc:.1%}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_atomic({"format": CACHE_FORMAT, "config": config, "state_dict": state, "sha256": state_digest(state),
                 "mean": mean, "std": std, "source_test_acc": source_acc}, cache)
    print(f"cached it, with its normalisation, at {cache} (temp file + os.replace)")
    return model, mean, std, how


def feature_map_shape(model: nn.Module, side: int, device) -> tuple:
    """The shape of the last feature map, before global pooling: everything but avgpool and fc."""
    body = nn.Sequential(*list(model.children())[:-2]).eval()
    with torch.no_grad():
        return tuple(body(torch.zeros(1, 3, side, side, device=device)).shape[1:])


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    side = 16 if args.smoke else 32
    steps = 30 if args.smoke else args.steps
    metrics = {}

    section("1. The residual block, by hand")
    metrics.update(residual_block_section(args, device))

    section("2. The pretrained backbone and its preprocessing")
    source, cache_how = "stand-in", "none"
    if not (args.smoke or args.offline):
        try:
            weights = ResNet18_Weights.DEFAULT
            state = weights.get_state_dict(progress=False, model_dir=str(args.data_dir / "weights"))
            backbone = resnet18()
            backbone.load_state_dict(state)
            backbone = backbone.to(device)
            preprocess = weights.transforms()  # resize 256, centre-crop 224, ImageNet mean/std
            source, input_side = "imagenet", 224
            print(f"ImageNet resnet18 ({weights}): top-1 {weights.meta['_metrics']['ImageNet-1K']['acc@1']}%; "
                  f"its preprocessing, used for every image below: {preprocess}")
        except Exception as err:  # offline or a broken download
            print(f"ImageNet weights unavailable ({type(err).__name__}: {' '.join(str(err).split())[:80]}); "
                  "using a stand-in backbone pretrained here")
    else:
        print("--smoke/--offline: using a stand-in backbone pretrained here (no download)")
    if source == "stand-in":
        backbone, mean, std, cache_how = standin_backbone(args, side, device)
        preprocess, input_side = v2.Normalize(mean.tolist(), std.tolist()), side
        print(f"its preprocessing, stored with the weights and used for every target image below: "
              f"Normalize(mean={[round(v, 3) for v in mean.tolist()]}, std={[round(v, 3) for v in std.tolist()]})")
    fmap = feature_map_shape(backbone, input_side, device)
    with torch.device("meta"):  # shapes only: what torchvision's ImageNet stem would leave on this lesson's images
        imagenet_body = nn.Sequential(*list(resnet18().children())[:-2]).eval()
        imagenet_fmap = tuple(imagenet_body(torch.empty(1, 3, side, side)).shape)
    print(f"{type(backbone).__name__}: {sum(p.numel() for p in backbone.parameters()):,} parameters; last feature "
          f"map on {input_side}x{input_side} inputs: {fmap} (channels, height, width), then global average pooling")
    if source == "stand-in":
        print(f"(resnet18's ImageNet stem - 7x7 stride-2 conv + max pool - and 4 stages would leave "
              f"{imagenet_fmap[1:]} on {side}x{side} images: one position, no spatial detail left; the stand-in's "
              "stem keeps the side)")
    else:
        print(f"(that is why weights.transforms() resizes to 224: on the raw {side}x{side} images the same network "
              f"would end with a {imagenet_fmap[1:]} map)")
    metrics.update(feature_map_side=fmap[-1], imagenet_stem_map_side_on_small_images=imagenet_fmap[-1])

    section("3. The target task: new classes, few labels")
    g = torch.Generator().manual_seed(args.seed + 2)
    x_train, y_train = gratings(TARGET_ANGLES, args.shots * len(TARGET_ANGLES), side, g)
    x_val, y_val = gratings(TARGET_ANGLES, 60 if args.smoke else 150, side, g)
    x_test, y_test = gratings(TARGET_ANGLES, 150 if args.smoke else 600, side, g)
    x_train, x_val, x_test = preprocess(x_train), preprocess(x_val), preprocess(x_test)  # the weights' own
    x_train, y_train, x_val, y_val, x_test, y_test = (
        t.to(device) for t in (x_train, y_train, x_val, y_val, x_test, y_test))
    print(f"{len(x_train)} training images (stripes at {TARGET_ANGLES} degrees), {len(x_val)} validation images "
          f"(learning curves), {len(x_test)} test images (scored once per strategy, at the end); input "
          f"{tuple(x_train.shape[1:])}; chance is {1 / len(TARGET_ANGLES):.0%}")
    every = max(1, steps // 10)

    section("4. From scratch")
    torch.manual_seed(args.seed)
    if source == "imagenet":
        scratch = resnet18(weights=None, num_classes=len(TARGET_ANGLES)).to(device)
    else:
        scratch = SmallResNet([m.conv1.out_channels for m in backbone.layers], len(TARGET_ANGLES)).to(device)
    curves = {}
    log = [every, lambda: accuracy(scratch, x_val, y_val)]
    t0 = time.perf_counter()
    train(scratch, scratch.parameters(), x_train, y_train, steps, 1e-3, 32, g, curve=log)
    curves["from scratch"] = log[-1]
    print(f"random init, all {sum(p.numel() for p in scratch.parameters()):,} parameters trained for {steps} steps "
          f"({time.perf_counter() - t0:.1f} s): validation accuracy {log[-1][-1][1]:.1%}")

    section("5. Frozen backbone, new head")
    torch.manual_seed(args.seed + 3)
    model = copy.deepcopy(backbone)
    model.requires_grad_(False)  # no gradients, no optimizer updates for the backbone
    model.fc = nn.Linear(model.fc.in_features, len(TARGET_ANGLES)).to(device)  # new layers train by default
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable, n_all = sum(p.numel() for p in trainable), sum(p.numel() for p in model.parameters())
    print(f"trainable parameters: {n_trainable:,} of {n_all:,} (the head only, {model.fc.in_features} features x "
          f"{len(TARGET_ANGLES)} classes + biases); BatchNorm kept in eval mode: its statistics stay the "
          "pretrained ones")
    # A frozen backbone gives the same features every time: compute them once, then train the head alone,
    # which is cheap enough to run to convergence (a "linear probe").
    body = nn.Sequential(*list(model.children())[:-1], nn.Flatten()).eval()  # everything but fc: (B, features)
    with torch.no_grad():
        features, val_features = body(x_train), body(x_val)  # (N, features)
    head_steps = 300
    log = [head_steps // 10, lambda: accuracy(model.fc, val_features, y_val)]
    train(model.fc, trainable, features, y_train, head_steps, 1e-2, 32, g, curve=log)
    curves["frozen backbone + head"] = [(s * steps // head_steps, a) for s, a in log[-1]]  # on the same x axis
    print(f"head trained for {head_steps} steps on the {tuple(features.shape)} features: validation accuracy "
          f"{log[-1][-1][1]:.1%}")
    frozen_model = copy.deepcopy(model)  # scored on the test set at the end

    section("6. Fine-tuning everything, backbone at a lower learning rate")
    model.requires_grad_(True)
    head = list(model.fc.parameters())
    body_params = [p for name, p in model.named_parameters() if not name.startswith("fc.")]
    before = torch.cat([p.detach().flatten() for p in body_params])
    groups = [{"params": body_params, "lr": 1e-4}, {"params": head, "lr": 1e-3}]  # small steps for the backbone
    log = [every, lambda: accuracy(model, x_val, y_val)]
    train(model, groups, x_train, y_train, steps, 1e-3, 32, g, curve=log)
    curves["fine-tuned"] = log[-1]
    moved = (torch.cat([p.detach().flatten() for p in body_params]) - before).norm().item() / before.norm().item()
    print(f"{steps} steps, backbone lr 1e-4, head lr 1e-3: validation accuracy {log[-1][-1][1]:.1%}; the "
          f"backbone's weights moved by {moved:.2%} of their norm")

    section("7. Test accuracy, once per strategy")
    scratch_acc, frozen_acc, finetune_acc = (accuracy(m, x_test, y_test) for m in (scratch, frozen_model, model))
    print(f"from scratch {scratch_acc:.1%} | frozen backbone + new head {frozen_acc:.1%} | fine-tuned "
          f"{finetune_acc:.1%}   ({source} backbone, {len(x_train)} labelled images, chance "
          f"{1 / len(TARGET_ANGLES):.0%})")
    change = finetune_acc - frozen_acc
    if change > 0:
        verdict = (f"fine-tuning raised the frozen backbone's {frozen_acc:.1%} to {finetune_acc:.1%} "
                   f"(+{100 * change:.1f} points): the backbone adapted to the new orientations")
    elif change < 0:
        verdict = (f"fine-tuning LOWERED accuracy from {frozen_acc:.1%} to {finetune_acc:.1%} "
                   f"({100 * change:.1f} points): with {len(x_train)} images, updating every weight fitted them at "
                   "the expense of features that generalised; keep the frozen model (or fewer steps, a lower lr)")
    else:
        verdict = f"fine-tuning left the test accuracy unchanged at {finetune_acc:.1%}"
    print(verdict)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(11, 4))
    ax_curve, ax_bar = fig.subplots(1, 2)
    for (name, points), style in zip(curves.items(), ("o-", "s--", "^:"), strict=True):  # dashes: overlaps show
        ax_curve.plot([s for s, _ in points], [a for _, a in points], style, label=name)
    ax_curve.axhline(1 / len(TARGET_ANGLES), color="gray", linestyle=":", label="chance")
    ax_curve.set(xlabel=f"optimizer step (the head's {head_steps} steps rescaled to {steps})",
                 ylabel="validation accuracy", ylim=(0, 1.02), title="Learning curves on the validation split")
    ax_curve.legend()
    names, values = ["from scratch", "frozen + head", "fine-tuned"], [scratch_acc, frozen_acc, finetune_acc]
    bars = ax_bar.bar(names, values, color=["tab:blue", "tab:orange", "tab:green"])
    ax_bar.bar_label(bars, labels=[f"{v:.1%}" for v in values])
    ax_bar.axhline(1 / len(TARGET_ANGLES), color="gray", linestyle=":")
    ax_bar.set(ylabel="test accuracy", ylim=(0, 1.1),
               title=f"Test accuracy per strategy ({source} backbone, {len(x_train)} labels)")
    fig.tight_layout()
    png = args.out_dir / "transfer.png"
    fig.savefig(png, dpi=100)
    print(f"plot: {png}")

    metrics.update({
        "used_imagenet_weights": int(source == "imagenet"), "target_train_images": len(x_train),
        "standin_cache_recreated": int(cache_how == "recreated"), "standin_cache_loaded": int(cache_how == "loaded"),
        "scratch_acc": scratch_acc, "frozen_head_acc": frozen_acc, "finetune_acc": finetune_acc,
        "finetune_minus_frozen": change, "best_transfer_minus_scratch": max(frozen_acc, finetune_acc) - scratch_acc,
        "backbone_relative_change": moved, "trainable_params_frozen": n_trainable, "all_params": n_all,
        "feature_dim": model.fc.in_features,
    })
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print(f"- A residual block adds its input back: over {metrics['grad_depth_blocks']} blocks the first layer's "
          f"gradient grew x{metrics['grad_growth_residual']:.3g} with shortcuts, x{metrics['grad_growth_plain']:.3g} "
          "without.")
    print(f"- With {len(x_train)} labels, a backbone pretrained on "
          f"{'ImageNet' if source == 'imagenet' else 'a related source task'} "
          f"{'beat' if max(frozen_acc, finetune_acc) > scratch_acc else 'did not beat'} the same network trained "
          f"from scratch: {max(frozen_acc, finetune_acc):.1%} against {scratch_acc:.1%}.")
    print("- Freezing = requires_grad_(False) AND giving the optimizer only the head AND eval-mode BatchNorm.")
    print(f"- Fine-tuning (backbone lr 10x below the head's) moved the backbone by {moved:.2%}; in this run "
          f"{verdict.split(':')[0]}.")
    print("- Pretrained weights come with their preprocessing (weights.transforms(), or the stand-in's stored "
          "mean/std): feed them what they were trained on.")
    return metrics


if __name__ == "__main__":
    main()

"""Transfer learning with ResNet-18: a pretrained backbone, a new head, then fine-tuning, against training from scratch.

Sections:
1. The backbone. Online: torchvision's resnet18(weights=ResNet18_Weights.DEFAULT) (ImageNet, downloaded into
   --data-dir) with its own preprocessing, weights.transforms(). Offline (or --smoke, --offline): an honest
   stand-in: the same resnet18 architecture, on small images, that this lesson pretrains itself on a *source*
   task (the orientation of stripes: 0, 30, ..., 150 degrees, random colours, widths and noise) and caches under
   --data-dir, so the next run loads it (torch.load(weights_only=True)).
2. The *target* task: 3 orientations the backbone never saw (15, 75, 135 degrees), with only a handful of
   labelled images per class. (With ImageNet weights the same images are resized to 224 by weights.transforms().)
3. From scratch: a randomly initialised resnet18 trained on those few images.
4. Feature extraction: freeze the backbone (requires_grad_(False), eval mode so BatchNorm statistics stay put),
   replace model.fc with a new Linear head, train only the head (the optimizer gets only the head's parameters);
   the frozen features are computed once, so the head trains to convergence for almost nothing.
5. Fine-tuning: unfreeze, and train everything with a lower learning rate for the backbone than for the head.

Run it:
    python 06-cnn-image-processing/08_resnet_transfer.py              # ImageNet weights if they can be had
    python 06-cnn-image-processing/08_resnet_transfer.py --offline    # the stand-in backbone

Takes a minute or two on a laptop CPU the first time offline (pretraining the stand-in), under a minute after
that; with ImageNet weights a few minutes (224x224 inputs). What to look for: the frozen-backbone and fine-tuned
accuracies clearly above the from-scratch accuracy on the same few images.
"""

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import ResNet18_Weights, resnet18

SOURCE_ANGLES = (0, 30, 60, 90, 120, 150)  # degrees: the source task's 6 classes
TARGET_ANGLES = (15, 75, 135)  # the target task's 3 classes: orientations never seen in pretraining


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
                        help="16x16 images, a short stand-in pretraining, few steps; never downloads")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/06-cnn-image-processing/08_resnet_transfer"),
                        help="where metrics.json is written")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="where the ImageNet weights or the cached stand-in backbone are kept")
    parser.add_argument("--offline", action="store_true", help="do not try to download the ImageNet weights")
    parser.add_argument("--shots", type=int, default=10, help="labelled target images per class")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps for each target-task stage")
    parser.add_argument("--pretrain-images", type=int, default=4000, help="source-task images for the stand-in")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the CUDA section of the README)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if args.shots < 1 or args.steps < 1 or args.pretrain_images < 100:
        parser.error("--shots and --steps must be >= 1, --pretrain-images >= 100")
    return args


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


def train(model, params, x, y, steps: int, lr, batch: int, generator, train_bn: bool = True) -> float:
    """AdamW on `params` (a list or param groups) for `steps` minibatch steps; returns the last loss."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    model.train(train_bn)
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch, len(x)),), generator=generator).to(x.device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    preds = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return (preds == y).float().mean().item()


def standin_backbone(args, side: int, device) -> nn.Module:
    """resnet18 pretrained here on the source classes, cached under --data-dir."""
    n = 600 if args.smoke else args.pretrain_images
    cache = args.data_dir / f"standin_resnet18_gratings_{side}px_{n}img_seed{args.seed}.pt"
    model = resnet18(weights=None, num_classes=len(SOURCE_ANGLES)).to(device)
    if cache.is_file():
        model.load_state_dict(torch.load(cache, map_location=device, weights_only=True))
        print(f"loaded the cached stand-in backbone from {cache}")
        return model
    g = torch.Generator().manual_seed(args.seed + 1)
    x, y = gratings(SOURCE_ANGLES, n, side, g)
    x_test, y_test = gratings(SOURCE_ANGLES, 300, side, g)
    x, y, x_test, y_test = (t.to(device) for t in (x, y, x_test, y_test))
    steps, batch = (25, 32) if args.smoke else (max(100, 2 * n // 64), 64)
    t0 = time.perf_counter()
    train(model, model.parameters(), x, y, steps, 2e-3, batch, g)
    print(f"pretrained a stand-in resnet18 on {n} source images (stripes at {SOURCE_ANGLES} degrees) "
          f"for {steps} steps in {time.perf_counter() - t0:.1f} s; "
          f"source test accuracy {accuracy(model, x_test, y_test):.1%}"
          + (" (a smoke run's few steps leave BatchNorm's running statistics behind; the features already transfer)"
             if args.smoke else ""))
    args.data_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cache)
    print(f"cached it at {cache}")
    return model


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    side = 16 if args.smoke else 32
    steps = 12 if args.smoke else args.steps

    section("1. The pretrained backbone")
    preprocess, source = None, "stand-in"
    if not (args.smoke or args.offline):
        try:
            weights = ResNet18_Weights.DEFAULT
            state = weights.get_state_dict(progress=False, model_dir=str(args.data_dir / "weights"))
            backbone = resnet18()
            backbone.load_state_dict(state)
            backbone = backbone.to(device)
            preprocess = weights.transforms()  # resize 256, centre-crop 224, ImageNet mean/std
            source = "imagenet"
            print(f"ImageNet resnet18 ({weights}): top-1 {weights.meta['_metrics']['ImageNet-1K']['acc@1']}%; "
                  f"preprocessing: {preprocess}")
        except Exception as err:  # offline or a broken download
            print(f"ImageNet weights unavailable ({type(err).__name__}: {' '.join(str(err).split())[:80]}); "
                  "using a stand-in backbone pretrained here")
    else:
        print("--smoke/--offline: using a stand-in backbone pretrained here (no download)")
    if source == "stand-in":
        backbone = standin_backbone(args, side, device)
    print(f"resnet18: {sum(p.numel() for p in backbone.parameters()):,} parameters, head {backbone.fc}")

    section("2. The target task: new classes, few labels")
    g = torch.Generator().manual_seed(args.seed + 2)
    x_train, y_train = gratings(TARGET_ANGLES, args.shots * len(TARGET_ANGLES), side, g)
    x_test, y_test = gratings(TARGET_ANGLES, 150 if args.smoke else 600, side, g)
    if preprocess is not None:
        x_train, x_test = preprocess(x_train), preprocess(x_test)  # the weights' own resize and normalisation
    else:
        mean, std = x_train.mean(dim=(0, 2, 3), keepdim=True), x_train.std(dim=(0, 2, 3), keepdim=True)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    x_train, y_train, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_test, y_test))
    print(f"{len(x_train)} training images (stripes at {TARGET_ANGLES} degrees), {len(x_test)} test "
          f"images, input {tuple(x_train.shape[1:])}; chance is {1 / len(TARGET_ANGLES):.0%}")

    section("3. From scratch")
    torch.manual_seed(args.seed)
    scratch = resnet18(weights=None, num_classes=len(TARGET_ANGLES)).to(device)  # same architecture, random start
    train(scratch, scratch.parameters(), x_train, y_train, steps, 1e-3, 32, g)
    scratch_acc = accuracy(scratch, x_test, y_test)
    print(f"random init, all {sum(p.numel() for p in scratch.parameters()):,} parameters trained for {steps} steps: "
          f"test accuracy {scratch_acc:.1%}")

    section("4. Frozen backbone, new head")
    model = copy.deepcopy(backbone)
    model.requires_grad_(False)  # no gradients, no optimizer updates for the backbone
    model.fc = nn.Linear(model.fc.in_features, len(TARGET_ANGLES)).to(device)  # new layers train by default
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable, n_all = sum(p.numel() for p in trainable), sum(p.numel() for p in model.parameters())
    print(f"trainable parameters: {n_trainable:,} of {n_all:,}"
          " (the head only); BatchNorm kept in eval mode so its running statistics stay the pretrained ones")
    # A frozen backbone gives the same features every time: compute them once, then train the head alone,
    # which is cheap enough to run to convergence (a "linear probe").
    body = nn.Sequential(*list(model.children())[:-1], nn.Flatten()).eval()  # everything but fc: (B, 512)
    with torch.no_grad():
        features = body(x_train)  # (N, 512)
    head_steps = 300
    train(model.fc, trainable, features, y_train, head_steps, 1e-2, 32, g)
    frozen_acc = accuracy(model, x_test, y_test)  # the whole model: frozen body + the new head
    print(f"head trained for {head_steps} steps on the {tuple(features.shape)} features; "
          f"test accuracy with the frozen backbone: {frozen_acc:.1%}")

    section("5. Fine-tuning everything, backbone at a lower learning rate")
    model.requires_grad_(True)
    head = list(model.fc.parameters())
    body = [p for name, p in model.named_parameters() if not name.startswith("fc.")]
    groups = [{"params": body, "lr": 1e-4}, {"params": head, "lr": 1e-3}]  # small steps keep what was learned
    train(model, groups, x_train, y_train, steps, 1e-3, 32, g)
    finetune_acc = accuracy(model, x_test, y_test)
    print(f"test accuracy after fine-tuning: {finetune_acc:.1%}")
    print(f"\nfrom scratch {scratch_acc:.1%} | frozen backbone + new head {frozen_acc:.1%} | fine-tuned "
          f"{finetune_acc:.1%}   ({source} backbone, {len(x_train)} labelled images)")

    metrics = {"used_imagenet_weights": int(source == "imagenet"), "target_train_images": len(x_train),
               "scratch_acc": scratch_acc, "frozen_head_acc": frozen_acc, "finetune_acc": finetune_acc,
               "best_transfer_minus_scratch": max(frozen_acc, finetune_acc) - scratch_acc,
               "trainable_params_frozen": sum(p.numel() for p in trainable)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- With few labels, features learned on a related source task beat 11 million freshly random weights.")
    print("- Freezing = requires_grad_(False) AND giving the optimizer only the head AND eval-mode BatchNorm.")
    print("- Fine-tuning uses a smaller learning rate for the backbone so it adapts without forgetting.")
    print("- ImageNet weights come with their preprocessing (weights.transforms()): use it, not your own guess.")
    return metrics


if __name__ == "__main__":
    main()

"""LeNet-5 on handwritten digits, and how it compares with AlexNet and VGG.

Sections:
1. Data: real MNIST through torchvision.datasets.MNIST (present under --data-dir, or downloaded there), or, when
   that fails (offline, --smoke, --offline), "synthetic digits": 0-9 drawn with PIL's built-in font at several
   sizes and stroke widths, then randomly rotated, scaled, sheared and shifted, with noise. Both are 28x28 uint8,
   normalised with MNIST's mean and std.
2. LeNet-5 (LeCun et al. 1998, with ReLU and max pooling as people write it today): the shape after every layer
   and the parameter count of each.
3. Training with Adam: validation accuracy after every epoch (a split held out of the training data), the test
   set scored once at the end, training speed, and the test digits it got wrong (mistakes.png).
4. The architectures that followed: LeNet-5, AlexNet, VGG-11 and VGG-16 from torchvision.models, instantiated on
   the "meta" device (shapes without memory), their parameter counts and how much of each sits in the classifier.

Run it:
    python 06-cnn-image-processing/03_lenet.py                 # real MNIST if it can be had
    python 06-cnn-image-processing/03_lenet.py --offline       # synthetic digits
    python 06-cnn-image-processing/03_lenet.py --epochs 5 --device cuda

Takes about 12 seconds on a 2-core CPU offline (--smoke: about 5 s; real MNIST adds its download the first time).
What to look for: test accuracy around 98% (real MNIST, or the synthetic digits offline: 98.8% measured), 61,706
LeNet parameters against 138 million for VGG-16, and mistakes.png under the out dir.
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torchvision import datasets, models

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
N_VAL = 5000  # validation images: the last 5,000 of MNIST's training set, or as many generated digits
SMOKE_SIZES = {"epochs": 2, "batch_size": 64, "train_size": 3000}  # what --smoke uses instead of these flags
CHANCE = 0.1  # ten classes


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
                        help="where LeNet trains; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny data and two short epochs; never downloads (uses MNIST only if already on disk)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/06-cnn-image-processing/03_lenet"),
                        help="where metrics.json and mistakes.png are written")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where torchvision keeps MNIST")
    parser.add_argument("--offline", action="store_true", help="do not try to download MNIST")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training set (--smoke uses 2)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per optimizer step (--smoke uses 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument("--train-size", type=int, default=20000,
                        help="training images used (synthetic digits generated, or the first N of MNIST's 60,000; "
                             "--smoke uses 3000)")
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
    for name in ("epochs", "batch_size", "train_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.train_size > 60_000 - N_VAL:
        parser.error(f"--train-size must be at most {60_000 - N_VAL:,}: the last {N_VAL:,} of MNIST's 60,000 training "
                     "images are the validation split")
    if args.lr <= 0:
        parser.error("--lr must be > 0")
    args.default_lr = parser.get_default("lr")
    parser.set_defaults(**dict.fromkeys(SMOKE_SIZES))  # parsed again without defaults: what the learner typed
    typed = parser.parse_args(argv)
    args.set_by_learner = {name: getattr(typed, name) for name in SMOKE_SIZES if getattr(typed, name) is not None}
    return args


def digit_glyphs() -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit drawn centred at 3 font sizes x 2 stroke widths: (60, 28, 28) floats in [0, 1], labels (60,)."""
    glyphs, labels = [], []
    for size in (17, 20, 23):
        font = ImageFont.load_default(size=size)
        for stroke in (0, 1):  # a width of 2 fills the loops of 6, 8 and 9 into blobs
            for digit in range(10):
                img = Image.new("L", (28, 28), 0)
                ImageDraw.Draw(img).text((14, 14), str(digit), fill=255, font=font, anchor="mm",
                                         stroke_width=stroke, stroke_fill=255)
                glyphs.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0))
                labels.append(digit)
    return torch.stack(glyphs), torch.tensor(labels)


def synthetic_digits(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n MNIST-like digits: (n, 28, 28) uint8 and labels (n,), like datasets.MNIST's .data and .targets."""
    glyphs, glyph_labels = digit_glyphs()
    pick = torch.randint(len(glyphs), (n,), generator=generator)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=generator)  # noqa: E731
    angle, scale, shear = u(-0.3, 0.3), u(0.8, 1.2), u(-0.3, 0.3)  # radians, zoom, x-shear
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, u(-0.2, 0.2)], 1),
                         torch.stack([sin, cos, u(-0.2, 0.2)], 1)], 1)  # (n, 2, 3), shifts of up to ~3 px
    grid = F.affine_grid(theta, (n, 1, 28, 28), align_corners=False)
    images = F.grid_sample(glyphs[pick][:, None], grid, align_corners=False)[:, 0]  # (n, 28, 28)
    images = images + 0.08 * torch.randn(images.shape, generator=generator)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), glyph_labels[pick]


def load_digits(args) -> tuple[dict, str]:
    """{'train', 'val', 'test'}: (uint8 images, labels) from torchvision's MNIST, or synthetic digits."""
    n_train, n_val, n_test = (SMOKE_SIZES["train_size"], 500, 500) if args.smoke else (args.train_size, N_VAL, 10000)
    download = not (args.smoke or args.offline)
    try:
        # download=False only reads <data-dir>/MNIST/raw/*-ubyte; True fetches them first if missing
        train = datasets.MNIST(args.data_dir, train=True, download=download)
        test = datasets.MNIST(args.data_dir, train=False, download=download)
        print(f"real MNIST from {args.data_dir / 'MNIST' / 'raw'}: {len(train)} train, {len(test)} test images")
        n_val = min(n_val, len(train) // 5)  # (a small copy on disk gives a fifth of itself)
        n_train = min(n_train, len(train) - n_val)  # disjoint from the validation images at the end
        return {"train": (train.data[:n_train], train.targets[:n_train]),
                "val": (train.data[-n_val:], train.targets[-n_val:]),  # the end of the training set, never in [:n]
                "test": (test.data[:n_test], test.targets[:n_test])}, "mnist"
    except Exception as err:  # no network, no files, a corrupt download: the offline stand-in keeps the lesson going
        detail = " ".join(str(err).split())[:90]
        why = "--smoke/--offline and not on disk" if not download else f"{type(err).__name__}: {detail}"
        print(f"MNIST unavailable ({why}); using synthetic digits instead")
    g = torch.Generator().manual_seed(args.seed)
    return ({"train": synthetic_digits(n_train, g), "val": synthetic_digits(n_val, g),
             "test": synthetic_digits(n_test, g)}, "synthetic")


def normalise(images: torch.Tensor, device) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28), standardised with MNIST's statistics."""
    return ((images.to(device).float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 6, 14, 14)
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):  # x (B, 1, 28, 28)
        return self.classifier(self.features(x))  # (B, 10) logits


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def evaluate(model, x, y, batch_size: int = 1000) -> tuple[float, torch.Tensor]:
    model.eval()
    preds = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    return (preds == y).float().mean().item(), preds


def smoke_note(set_by_learner: dict, used: dict) -> str:
    """'--smoke replaces ...' for the flags a learner set that --smoke overrides ('' when there are none)."""
    changes = [f"--{name.replace('_', '-')} {value} -> {used[name]}" for name, value in set_by_learner.items()
               if value != used[name]]
    return f"--smoke uses its own sizes: {', '.join(changes)}" if changes else ""


def training_verdict(acc_before: float, val_acc: float, epoch_losses: list[float], lr: float,
                     default_lr: float) -> tuple[bool, str]:
    """(learned?, one sentence on what training did): read from this run's numbers, never assumed.

    Learned: validation accuracy at least 20 points above both chance and the untrained model. Diverged: an epoch's
    mean loss above twice ln 10, the loss of a uniform guess over ten classes (or not finite).
    """
    learned = val_acc >= max(acc_before, CHANCE) + 0.2
    guess_loss = float(np.log(10))
    worst = max(range(len(epoch_losses)), key=lambda k: epoch_losses[k] if np.isfinite(epoch_losses[k]) else np.inf)
    if not np.isfinite(epoch_losses[worst]) or epoch_losses[worst] > 2 * guess_loss:
        return learned, (f"training diverged at --lr {lr:g}: epoch {worst + 1}'s train loss was "
                         f"{epoch_losses[worst]:,.1f}, where guessing costs ln 10 = {guess_loss:.2f}; validation "
                         f"accuracy {acc_before:.2%} before, {val_acc:.2%} after (chance 10%): try the default "
                         f"--lr {default_lr:g}")
    if not learned:
        return learned, (f"LeNet did not learn in this run: validation accuracy {acc_before:.2%} before training, "
                         f"{val_acc:.2%} after (chance 10%); more epochs, images or another --lr "
                         f"(default {default_lr:g}) give it the chance")
    return learned, ""


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    if args.smoke and (note := smoke_note(args.set_by_learner, SMOKE_SIZES)):
        print(note)

    section("1. Data")
    data, source = load_digits(args)
    x_train, y_train = normalise(data["train"][0], device), data["train"][1].to(device)
    x_val, y_val = normalise(data["val"][0], device), data["val"][1].to(device)
    x_test, y_test = normalise(data["test"][0], device), data["test"][1].to(device)
    print(f"train {tuple(x_train.shape)}, validation {tuple(x_val.shape)} (per-epoch checks), test "
          f"{tuple(x_test.shape)} (scored once, at the end); after normalising: mean "
          f"{x_train.mean().item():.3f}, std {x_train.std().item():.3f}; "
          f"class counts {torch.bincount(y_train).tolist()}")

    section("2. LeNet-5, layer by layer")
    model = LeNet5().to(device)
    h = x_train[:1]
    for layer in [*model.features, *model.classifier]:
        h = layer(h)
        params = count(layer)
        print(f"  {layer.__class__.__name__:<10} -> {str(tuple(h.shape)):<16} {params:>7,} params")
    print(f"total: {count(model):,} parameters")

    section("3. Training")
    epochs = SMOKE_SIZES["epochs"] if args.smoke else args.epochs
    batch_size = SMOKE_SIZES["batch_size"] if args.smoke else args.batch_size  # more steps from few smoke images
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    acc_before, _ = evaluate(model, x_val, y_val)
    epoch_losses = []
    sync(device)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=g).to(device)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        val_acc, _ = evaluate(model, x_val, y_val)
        epoch_losses.append(total / len(x_train))
        print(f"  epoch {epoch + 1}: train loss {epoch_losses[-1]:.4f}, validation accuracy {val_acc:.2%}")
    sync(device)
    train_s = time.perf_counter() - t0  # timed without the test set: it is looked at once, below
    test_acc, preds = evaluate(model, x_test, y_test)
    print(f"validation accuracy {acc_before:.2%} before training (chance is 10%), {val_acc:.2%} after {epochs} "
          f"epoch(s); test accuracy, scored once now: {test_acc:.2%} on {source} digits; {train_s:.1f} s of "
          f"training, {epochs * len(x_train) / train_s:,.0f} training images/s")
    learned, verdict = training_verdict(acc_before, val_acc, epoch_losses, args.lr, args.default_lr)
    if verdict:
        print(verdict)
    wrong = (preds != y_test).nonzero().flatten().cpu()
    fig = Figure(figsize=(8, 3.8))
    for i, j in enumerate(wrong[:16].tolist()):
        ax = fig.add_subplot(2, 8, i + 1)
        ax.imshow(data["test"][0][j].numpy(), cmap="gray")
        ax.set_title(f"true {y_test[j].item()}\npred {preds[j].item()}", fontsize=10)
        ax.axis("off")
    fig.suptitle(f"LeNet-5: {min(16, len(wrong))} of its {len(wrong)} mistakes on {len(y_test):,} {source} "
                 f"test digits" + ("" if len(wrong) else " (none)"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = args.out_dir / "mistakes.png"
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    print(f"test images it got wrong (true and predicted label above each): {png}")

    section("4. LeNet-5 against AlexNet and VGG")
    with torch.device("meta"):  # parameters get shapes but no memory: VGG-16 would otherwise allocate 550 MB
        zoo = {"LeNet-5 (28x28)": LeNet5(), "AlexNet (224x224)": models.alexnet(weights=None),
               "VGG-11 (224x224)": models.vgg11(weights=None), "VGG-16 (224x224)": models.vgg16(weights=None)}
    counts = {}
    print(f"  {'model':<20}{'params':>14}{'in classifier':>15}{'conv layers':>13}")
    for name, net in zoo.items():
        counts[name] = count(net)
        share = count(net.classifier) / counts[name]
        convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
        print(f"  {name:<20}{counts[name]:>14,}{share:>15.1%}{convs:>13}")
    print("AlexNet (2012): bigger kernels, ReLU, dropout, GPUs. VGG (2014): only 3x3 convs, deeper. In both, most "
          "weights sit in the fully connected classifier; later nets (ResNet) replace it with global pooling.")

    metrics = {"used_real_mnist": int(source == "mnist"), "train_images": len(x_train), "test_images": len(x_test),
               "val_images": len(x_val), "val_acc_before": acc_before, "val_acc_last_epoch": val_acc,
               "test_acc": test_acc, "test_mistakes": len(wrong), "lenet_params": counts["LeNet-5 (28x28)"],
               "alexnet_params": counts["AlexNet (224x224)"], "vgg11_params": counts["VGG-11 (224x224)"],
               "vgg16_params": counts["VGG-16 (224x224)"], "train_s": train_s,
               "train_images_per_s": epochs * len(x_train) / train_s}
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Two conv+pool stages turn 28x28 pixels into 16x5x5 features; the flatten size (400) follows from the "
          "size formula of lesson 01.")
    if learned:
        print("- 61,706 parameters reach high accuracy because convolutions share weights across positions.")
    else:
        print(f"- 61,706 parameters can reach high accuracy (convolutions share weights across positions), but not in "
              f"this run: {verdict}.")
    if source == "mnist":
        print(f"- These were real handwritten digits (torchvision.datasets.MNIST from {args.data_dir}): "
              f"{test_acc:.2%} on {len(x_test):,} test images after {epochs} epoch(s).")
    else:
        print("- MNIST was not available, so these were synthetic digits: a stand-in with the same shapes and "
              + ("normalisation and real learning" if learned else "normalisation, learnable at the default flags")
              + ", but not real MNIST (run without --offline/--smoke to fetch it).")
    return metrics


if __name__ == "__main__":
    main()

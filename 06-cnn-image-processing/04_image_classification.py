"""Image classification on CIFAR-10 with a small modern CNN and today's training recipe.

Sections:
1. Data: CIFAR-10 through torchvision.datasets.CIFAR10 (present under --data-dir, or downloaded there), or, when
   that fails (offline, --smoke, --offline), a stand-in of the same shape: 3x32x32 colour images in 10 classes of
   procedurally drawn shapes and textures (disc, square, triangle, ring, cross, horizontal / vertical / diagonal
   stripes, checkerboard, dots) at random position, size and rotation, random colours, brightness and noise.
   Colour carries no information there: the network has to learn shape and texture.
2. Per-channel mean and std computed on the training set (never per image, never on the test set).
3. The model: conv-BatchNorm-ReLU blocks, max pooling, global average pooling, one linear layer.
4. The recipe, each part switchable: augmentation with torchvision.transforms.v2 (random crop with padding,
   horizontal flip), OneCycleLR, label smoothing, channels_last memory format, bf16 autocast where the device
   supports it (CUDA with bf16; on CPU it is off by default: without AMX it is slower, not faster).
5. Validation accuracy after every epoch (a split held out of the training data); the test set is scored once,
   at the end: overall, per class, and the training throughput in images per second.

Run it:
    python 06-cnn-image-processing/04_image_classification.py
    python 06-cnn-image-processing/04_image_classification.py --offline --epochs 8
    python 06-cnn-image-processing/04_image_classification.py --no-augment --label-smoothing 0 --no-onecycle

Takes about 30 seconds on a 2-core CPU offline (--smoke: about 5 s; seconds on a GPU). What to look for: test accuracy
far above the 10% of chance (94% on the stand-in by default; real CIFAR-10 needs more epochs and width for 85%+), the
training images/s, and samples.png under the out dir.
"""

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms import v2

N_VAL = 1000  # validation images: the last 1,000 of CIFAR-10's 50,000 training images, or generated stand-ins
MAX_CIFAR_TRAIN = 50_000 - N_VAL
SMOKE_TRAIN_SIZE = 800  # training images under --smoke
SMOKE_FLAGS = ("train_size", "width", "epochs", "batch_size", "workers")  # --smoke replaces these with its own sizes
CLASSES = ("disc", "square", "triangle", "ring", "cross", "h-stripes", "v-stripes", "diag-stripes", "checker", "dots")


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
                        help="where the CNN trains; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny data, narrow model, two short epochs; never downloads "
                             "(uses CIFAR-10 only if it is on disk)")
    parser.add_argument("--out-dir", type=Path,
                        default=Path("outputs/06-cnn-image-processing/04_image_classification"),
                        help="where metrics.json and samples.png are written")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where torchvision keeps CIFAR-10")
    parser.add_argument("--offline", action="store_true", help="do not try to download CIFAR-10")
    parser.add_argument("--epochs", type=int, default=4, help="passes over the training set (--smoke uses 2)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per optimizer step (--smoke uses 32)")
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate (SGD with Nesterov momentum)")
    parser.add_argument("--width", type=int, default=24,
                        help="channels of the first block (doubled twice; --smoke uses at most 8)")
    parser.add_argument("--train-size", type=int, default=6000,
                        help="training images (stand-in images generated, or the first N of CIFAR-10's 50,000; "
                             "--smoke uses 800)")
    parser.add_argument("--workers", type=int, default=min(2, max(0, (os.cpu_count() or 1) - 1)),
                        help="DataLoader worker processes for the augmentation (capped by the CPU count; --smoke "
                             "uses 0)")
    parser.add_argument("--label-smoothing", type=float, default=0.1, help="0 turns label smoothing off")
    parser.add_argument("--no-augment", action="store_true", help="turn off random crop and flip")
    parser.add_argument("--no-onecycle", action="store_true", help="constant learning rate instead of OneCycleLR")
    parser.add_argument("--no-channels-last", action="store_true", help="keep the default NCHW memory format")
    parser.add_argument("--no-amp", action="store_true", help="never use bf16 autocast")
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
    for name in ("epochs", "batch_size", "width", "train_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0 or not 0 <= args.label_smoothing < 1 or args.lr <= 0:
        parser.error("--workers must be >= 0, --label-smoothing in [0, 1) and --lr > 0")
    if not args.smoke and args.train_size > MAX_CIFAR_TRAIN:
        parser.error(f"--train-size must be at most {MAX_CIFAR_TRAIN:,} (the last {N_VAL:,} of CIFAR-10's "
                     "training images are the validation split)")
    if not args.smoke and args.train_size < args.batch_size:  # --smoke uses its own sizes
        parser.error(f"--train-size ({args.train_size}) must be at least --batch-size ({args.batch_size}): the "
                     "loader drops the last incomplete batch (drop_last=True), so no batch would be left to train on")
    args.workers = min(args.workers, os.cpu_count() or 1)
    parser.set_defaults(**dict.fromkeys(SMOKE_FLAGS))  # parsed again without defaults: what the learner typed
    typed = parser.parse_args(argv)
    args.set_by_learner = {name: getattr(typed, name) for name in SMOKE_FLAGS if getattr(typed, name) is not None}
    return args


def smoke_note(set_by_learner: dict, used: dict) -> str:
    """'--smoke uses its own sizes: ...' for the flags a learner typed that --smoke replaced ('' when none)."""
    changes = [f"--{name.replace('_', '-')} {value} -> {used[name]}" for name, value in set_by_learner.items()
               if value != used[name]]
    return f"--smoke uses its own sizes: {', '.join(changes)}" if changes else ""


def class_mask(c: int, dx, dy, r, angle, period, phase, sign) -> torch.Tensor:
    """Where class c's shape or texture is, as a bool (m, 32, 32); dx, dy: (m, 32, 32) offsets from its centre."""
    a = dx * torch.cos(angle) + dy * torch.sin(angle)  # rotated coordinates
    b = -dx * torch.sin(angle) + dy * torch.cos(angle)
    dist = torch.sqrt(dx**2 + dy**2)
    box = (dx.abs() < r) & (dy.abs() < r)  # textures fill a square patch, so only the pattern tells them apart

    def wave(t):
        return torch.sin(6.283 * t / period + phase)

    shapes = {
        0: lambda: dist < r,
        1: lambda: (a.abs() < 0.8 * r) & (b.abs() < 0.8 * r),
        2: lambda: (b < 0.5 * r) & (b > -r + 1.732 * a.abs()),
        3: lambda: (dist < r) & (dist > 0.55 * r),
        4: lambda: ((a.abs() < 0.3 * r) & (b.abs() < r)) | ((b.abs() < 0.3 * r) & (a.abs() < r)),
        5: lambda: box & (wave(dy) > 0),
        6: lambda: box & (wave(dx) > 0),
        7: lambda: box & (wave((dx + sign * dy) / 1.414) > 0),
        8: lambda: box & (wave(dx) * torch.sin(6.283 * dy / period) > 0),
        9: lambda: box & (torch.cos(6.283 * dx / period) > 0.5) & (torch.cos(6.283 * dy / period) > 0.5),
    }
    return shapes[c]()


def shapes_and_textures(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The offline stand-in: (n, 3, 32, 32) uint8 images and (n,) labels in 0..9 (see CLASSES)."""
    u = lambda *shape, lo=0.0, hi=1.0: lo + (hi - lo) * torch.rand(*shape, generator=generator)  # noqa: E731
    labels = torch.randint(10, (n,), generator=generator)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")  # (32, 32)
    dx, dy = xx - u(n, 1, 1, lo=10, hi=22), yy - u(n, 1, 1, lo=10, hi=22)  # (n, 32, 32), random centre
    params = {"r": u(n, 1, 1, lo=6, hi=11), "angle": u(n, 1, 1, lo=-0.6, hi=0.6),
              "period": u(n, 1, 1, lo=3.5, hi=6.0), "phase": u(n, 1, 1, hi=6.283),
              "sign": torch.where(u(n, 1, 1) < 0.5, -1.0, 1.0)}
    mask = torch.zeros(n, 32, 32, dtype=torch.bool)
    for c in range(10):
        k = labels == c
        mask[k] = class_mask(c, dx[k], dy[k], **{name: v[k] for name, v in params.items()})
    mask = mask.float()[:, None]  # (n, 1, 32, 32)
    fg, bg = u(n, 3, 1, 1), u(n, 3, 1, 1)
    bg = torch.where((fg - bg).abs().mean(1, keepdim=True) < 0.25, 1 - fg, bg)  # keep the shape visible
    images = bg + (fg - bg) * mask  # (n, 3, 32, 32)
    images = images * u(n, 1, 1, 1, lo=0.7, hi=1.1) + 0.06 * torch.randn(images.shape, generator=generator)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


def load_images(args) -> tuple[dict, str, tuple]:
    """{'train', 'val', 'test'}: (uint8 (N, 3, 32, 32), labels). Validation comes out of the training set."""
    n_train, n_val, n_test = (SMOKE_TRAIN_SIZE, 200, 300) if args.smoke else (args.train_size, N_VAL, 2000)
    download = not (args.smoke or args.offline)
    try:
        train = datasets.CIFAR10(args.data_dir, train=True, download=download)
        test = datasets.CIFAR10(args.data_dir, train=False, download=download)
        print(f"real CIFAR-10 from {args.data_dir}: {len(train)} train, {len(test)} test images")
        # .data is a numpy (N, 32, 32, 3) uint8 array, HWC: PyTorch's convolutions want CHW
        to_chw = lambda ds, k: torch.from_numpy(ds.data[:k]).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        val_x = torch.from_numpy(train.data[-n_val:]).permute(0, 3, 1, 2).contiguous()  # never in the first N
        return ({"train": (to_chw(train, n_train), torch.tensor(train.targets[:n_train])),
                 "val": (val_x, torch.tensor(train.targets[-n_val:])),
                 "test": (to_chw(test, n_test), torch.tensor(test.targets[:n_test]))}, "cifar10",
                tuple(train.classes))
    except Exception as err:  # offline, no files, a broken download: the stand-in keeps the lesson going
        detail = " ".join(str(err).split())[:90]
        why = "--smoke/--offline and not on disk" if not download else f"{type(err).__name__}: {detail}"
        print(f"CIFAR-10 unavailable ({why}); using the shapes-and-textures stand-in (3x32x32, 10 classes)")
    g = torch.Generator().manual_seed(args.seed)
    return ({"train": shapes_and_textures(n_train, g), "val": shapes_and_textures(n_val, g),
             "test": shapes_and_textures(n_test, g)}, "stand-in", CLASSES)


class AugmentedImages(Dataset):
    """uint8 (N, 3, 32, 32) images; each __getitem__ draws its own random crop and flip."""

    def __init__(self, images, labels, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]  # (3, 32, 32) uint8
        return (self.transform(img) if self.transform else img), self.labels[i]


def one_thread_per_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)  # N workers x all cores each would oversubscribe the CPU


def conv_block(c_in: int, c_out: int) -> list:
    # no conv bias: BatchNorm's shift makes it redundant
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def small_cnn(width: int, num_classes: int = 10) -> nn.Sequential:
    w = width
    return nn.Sequential(
        *conv_block(3, w), *conv_block(w, w), nn.MaxPool2d(2),  # (B, w, 16, 16)
        *conv_block(w, 2 * w), *conv_block(2 * w, 2 * w), nn.MaxPool2d(2),  # (B, 2w, 8, 8)
        *conv_block(2 * w, 4 * w), nn.MaxPool2d(2),  # (B, 4w, 4, 4)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes),  # (B, 10)
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    # what --smoke uses instead of these flags
    smoke_sizes = {"train_size": SMOKE_TRAIN_SIZE, "width": min(args.width, 8), "epochs": 2, "batch_size": 32,
                   "workers": 0}
    if args.smoke and (note := smoke_note(args.set_by_learner, smoke_sizes)):
        print(note)

    section("1. Data")
    data, source, classes = load_images(args)
    x_train, y_train = data["train"]
    x_val, y_val = data["val"]
    x_test, y_test = data["test"]
    print(f"train {tuple(x_train.shape)} {x_train.dtype}, validation {tuple(x_val.shape)} (per-epoch checks), "
          f"test {tuple(x_test.shape)} (scored once, at the end); "
          f"class counts {torch.bincount(y_train, minlength=10).tolist()}")
    fig = Figure(figsize=(10, 3))
    for c in range(10):
        for row, j in enumerate((y_train == c).nonzero().flatten()[:3].tolist()):
            ax = fig.add_subplot(3, 10, row * 10 + c + 1)
            ax.imshow(x_train[j].permute(1, 2, 0).numpy())  # matplotlib wants HWC
            ax.axis("off")
            if row == 0:
                ax.set_title(classes[c], fontsize=8)
    fig.suptitle(f"Three training images per class ({source})")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = args.out_dir / "samples.png"
    fig.savefig(png, dpi=80)
    print(f"three training images per class: {png}")

    section("2. Normalisation with training-set channel statistics")
    pixels = x_train.float() / 255
    mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3))  # (3,) each: over images AND positions
    print(f"per-channel mean {[round(v, 4) for v in mean.tolist()]}, std {[round(v, 4) for v in std.tolist()]}")
    normalise = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean.tolist(), std.tolist())])

    section("3. Model")
    model = small_cnn(smoke_sizes["width"] if args.smoke else args.width).to(device)
    memory_format = torch.contiguous_format if args.no_channels_last else torch.channels_last
    model = model.to(memory_format=memory_format)  # NHWC in memory: what cuDNN's fastest conv kernels read
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; memory format "
          f"{'channels_last (NHWC)' if memory_format == torch.channels_last else 'contiguous (NCHW)'}")

    section("4. Training recipe")
    augment = None if args.no_augment else v2.Compose([
        # zero padding: padding_mode="reflect" is ~100x slower per image on a CPU
        v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    workers = smoke_sizes["workers"] if args.smoke else args.workers
    batch_size = smoke_sizes["batch_size"] if args.smoke else args.batch_size  # steps for OneCycle's warm-up
    loader = DataLoader(AugmentedImages(x_train, y_train, augment), batch_size=batch_size, shuffle=True,
                        drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                        worker_init_fn=one_thread_per_worker, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(args.seed))
    epochs = smoke_sizes["epochs"] if args.smoke else args.epochs
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = None if args.no_onecycle else torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=epochs * len(loader), pct_start=0.25)
    if args.no_onecycle:
        for group in optimizer.param_groups:
            group["lr"] = args.lr / 5  # a constant rate that does not blow up without warm-up
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    # native bf16 only (Ampere and later): the default including_emulation=True says yes on a T4 too, where bf16
    # convolutions are emulated, slow or unsupported by cuDNN
    use_amp = not args.no_amp and device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    print(f"augmentation: {'off' if augment is None else 'RandomCrop(32, padding=4) + RandomHorizontalFlip (v2)'}; "
          f"schedule: {'constant' if scheduler is None else 'OneCycleLR'}; label smoothing {args.label_smoothing}; "
          f"bf16 autocast: {'on' if use_amp else 'off'}; {workers} loader worker(s)")

    def prepare(xb):  # uint8 (B, 3, 32, 32) on the host -> normalised float on the device, in the model's format
        xb = xb.to(device, non_blocking=True)
        return normalise(xb).contiguous(memory_format=memory_format)

    @torch.no_grad()
    def predict(x):
        model.eval()
        out = []
        for i in range(0, len(x), 500):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out.append(model(prepare(x[i:i + 500])).argmax(1).cpu())
        return torch.cat(out)

    seen, train_time, lrs = 0, 0.0, []
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        t0 = time.perf_counter()
        for xb, yb in loader:
            xb, yb = prepare(xb), yb.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = criterion(model(xb), yb)  # autocast: convs in bf16, the loss reduction in float32
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lrs.append(optimizer.param_groups[0]["lr"])  # the lr this step used
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(yb)
            count += len(yb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elif device.type == "mps":
            torch.mps.synchronize()
        train_time += time.perf_counter() - t0
        seen += count
        val_acc = (predict(x_val) == y_val).float().mean().item()
        print(f"  epoch {epoch + 1}: train loss {total / count:.4f}, validation accuracy {val_acc:.2%}, "
              f"lr now {optimizer.param_groups[0]['lr']:.4f}")

    section("5. Results: the test set, once")
    preds = predict(x_test)
    test_acc = (preds == y_test).float().mean().item()
    per_class = [(preds[y_test == c] == c).float().mean().item() for c in range(10)]
    print(f"test accuracy {test_acc:.2%} on {source} (chance 10%); training {seen / train_time:,.0f} images/s "
          f"({train_time:.1f} s for {seen} images)")
    print("per class: " + ", ".join(f"{classes[c]} {a:.0%}" for c, a in enumerate(per_class)))

    # What each switch did, measured rather than echoed:
    k = min(64, len(x_train))
    changed = sum(not torch.equal(loader.dataset[i][0], x_train[i]) for i in range(k)) / k  # the loader's dataset
    probe = prepare(x_train[:2])
    confident = torch.full((1, 10), -20.0).index_fill_(1, torch.tensor([0]), 20.0)  # a certain, correct prediction
    floor = criterion(confident.to(device), torch.tensor([0], device=device)).item()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
        out_dtype = model.eval()(probe).dtype
    print(f"measured: {changed:.0%} of {k} training images come out of the dataset changed (augmentation); lr from "
          f"{lrs[0]:.4f} to a peak of {max(lrs):.4f} and {lrs[-1]:.2e} at the end; inputs channels_last: "
          f"{probe.is_contiguous(memory_format=torch.channels_last)}; loss of a certain, correct prediction "
          f"{floor:.3f}{' (label smoothing keeps it above 0)' if args.label_smoothing else ''}; "
          f"logits dtype {out_dtype}")

    metrics = {"used_real_cifar10": int(source == "cifar10"), "train_images": len(x_train),
               "val_acc_last_epoch": val_acc, "test_acc": test_acc, "worst_class_acc": min(per_class),
               "final_train_loss": total / count, "steps": len(lrs),
               "augmented_fraction": changed, "lr_first": lrs[0], "lr_peak": max(lrs), "lr_last": lrs[-1],
               "inputs_channels_last": int(probe.is_contiguous(memory_format=torch.channels_last)),
               "confident_loss_floor": floor, "bf16_logits": int(out_dtype == torch.bfloat16),
               "train_s": train_time, "train_images_per_s": seen / train_time}
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- BatchNorm after every conv lets a high OneCycle learning rate train in a few epochs.")
    print("- Augmentation and label smoothing fight overfitting; switch them off and compare the test accuracy.")
    print("- channels_last and bf16 autocast are speed knobs for GPUs with tensor cores: compare the images/s with")
    print("  --no-channels-last / --no-amp on your machine rather than trusting a rule of thumb.")
    print("- Per-epoch numbers come from the validation split; the test set was scored once, after training.")
    return metrics


if __name__ == "__main__":
    main()

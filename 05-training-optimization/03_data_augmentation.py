"""Data augmentation: torchvision.transforms.v2 for images, torchaudio SpecAugment for audio, and what it buys.

Augmentation makes new training samples from old ones with changes that keep the label: a shifted, slightly rotated
"7" is still a 7. This lesson shows the current API (torchvision.transforms.v2, which replaces the old
torchvision.transforms and also transforms boxes and masks) on a generated picture: flips, random resized crops,
colour jitter, RandAugment, TrivialAugmentWide, and the batch-level MixUp and CutMix, which mix two images *and*
their labels. For audio it applies SpecAugment (torchaudio.transforms.FrequencyMasking and TimeMasking) to the
spectrogram of a generated chirp. Finally it measures the accuracy gain of augmentation on a small-data task: a CNN
trained on 20 generated digits per class, with and without random affine augmentation.

Run it:
    python 05-training-optimization/03_data_augmentation.py
    python 05-training-optimization/03_data_augmentation.py --per-class 10 --epochs 60

Takes about 11 seconds on a 2-core CPU (--smoke: about 6 s).
What to look for: augmentation_grid.png and specaugment.png; CutMix's label weight equals the fraction of pixels it
kept; the test accuracy with augmentation is higher than without (the gain is printed).
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2


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
                        help="where to train the CNN; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="smaller data and fewer epochs: a few seconds on a CPU")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/05-training-optimization/03_data_augmentation"),
                        help="where the PNGs and metrics.json are written")
    parser.add_argument("--per-class", type=int, default=20, help="training images per digit class (small on purpose)")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs per run (--smoke uses 15)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
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
    if args.per_class < 1 or args.epochs < 1 or args.lr <= 0:
        parser.error("need --per-class >= 1, --epochs >= 1 and --lr > 0")
    return args


def demo_picture(size: int = 96) -> torch.Tensor:
    """A small asymmetric RGB scene, so flips, crops and colour changes are easy to see. (3, H, W) uint8."""
    img = Image.new("RGB", (size, size), (120, 180, 235))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 70, size, size), fill=(70, 150, 60))  # grass
    draw.ellipse((62, 8, 86, 32), fill=(250, 210, 40))  # sun, top right
    draw.rectangle((14, 44, 46, 74), fill=(190, 60, 50))  # house
    draw.polygon([(10, 44), (30, 26), (50, 44)], fill=(110, 40, 30))  # roof
    draw.text((52, 50), "A7", fill=(255, 255, 255), font=ImageFont.load_default(size=20))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()  # (3, H, W)


def render_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic digits: 0-9 drawn with PIL under random rotation, scale, shift and stroke, plus noise.

    Returns (N, 1, 28, 28) float normalised like MNIST, and (N,) labels. Different seeds give different jitter.
    """
    rng, noise = random.Random(seed), np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        digit = i % 10
        font = ImageFont.load_default(size=rng.randint(17, 24))
        img = Image.new("L", (28, 28))
        ImageDraw.Draw(img).text((14, 14), str(digit), fill=255, font=font, anchor="mm", stroke_width=rng.randint(0, 1))
        img = img.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR,
                         translate=(rng.randint(-4, 4), rng.randint(-4, 4)))
        arr = np.asarray(img, dtype=np.float32) / 255 + noise.normal(0, 0.1, (28, 28)).astype(np.float32)
        images.append(np.clip(arr, 0, 1))
        labels.append(digit)
    x = torch.from_numpy(np.stack(images))[:, None]  # (N, 1, 28, 28)
    return (x - 0.1307) / 0.3081, torch.tensor(labels)


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 14, 14)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 7, 7)
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(32 * 7 * 7, 10),
    )


def train_and_test(train, test, augment, args, device) -> tuple[float, float]:
    """Returns (test accuracy, fraction of the training images the augmentation actually changed)."""
    (x_tr, y_tr), (x_te, y_te) = train, test
    torch.manual_seed(args.seed)  # same init and batch order with and without augmentation
    model = small_cnn().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    changed = seen = 0
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(x_tr)).split(32):
            xb = x_tr[idx]  # (B, 1, 28, 28), on the CPU
            if augment is not None:  # a fresh random transform per image, every epoch
                augmented = torch.stack([augment(img) for img in xb])
                changed += int((augmented != xb).flatten(1).any(1).sum())
                xb = augmented
            seen += len(xb)
            loss = nn.functional.cross_entropy(model(xb.to(device)), y_tr[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x_te.to(device)).argmax(1).cpu() == y_te).float().mean().item(), changed / seen


DEFAULT_LR = 2e-3


def augmentation_verdict(acc_plain: float, acc_aug: float, per_class: int, epochs: int, lr: float,
                         smoke: bool) -> str:
    """Why augmentation did not pay off in this run, from the two test accuracies; empty when it did."""
    if max(acc_plain, acc_aug) <= 0.15:  # chance is 0.10
        cause = (f"--lr {lr:g} is too large for Adam on this CNN (the default is {DEFAULT_LR:g})" if lr > DEFAULT_LR
                 else f"{epochs} epochs on {per_class} images per class did not fit even the plain data")
        return (f"neither model learned ({acc_plain:.3f} and {acc_aug:.3f}, chance 0.10), so this run says nothing "
                f"about augmentation: {cause}")
    if acc_aug > acc_plain:
        return ""
    return (f"augmentation did not pay off in this run ({per_class} images per class, {epochs} epochs): "
            "harder, ever-changing data needs more epochs to fit"
            + ("; --smoke trains very briefly, run without it" if smoke else ""))


def image_grid(picture: torch.Tensor, mixed: dict, path: Path) -> None:
    rows = {
        "RandomHorizontalFlip": v2.RandomHorizontalFlip(p=0.5),
        "RandomResizedCrop": v2.RandomResizedCrop(96, scale=(0.3, 1.0), antialias=True),
        "ColorJitter": v2.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.1),
        "RandAugment": v2.RandAugment(num_ops=2, magnitude=9),
        "TrivialAugmentWide": v2.TrivialAugmentWide(),
    }
    fig = Figure(figsize=(10, 2 * (len(rows) + 1)))
    axes = fig.subplots(len(rows) + 1, 5)
    for r, (name, t) in enumerate(rows.items()):
        for c in range(5):
            img = picture if c == 0 else t(picture)  # uint8 in, uint8 out
            axes[r, c].imshow(img.permute(1, 2, 0).numpy())
            axes[r, c].set_title("original" if c == 0 else name, fontsize=7)
    for c, (title, img) in enumerate(mixed.items()):
        axes[-1, c].imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        axes[-1, c].set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("transforms.v2 on one picture: each row, the original and four random draws; last row MixUp/CutMix")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.94, wspace=0.05, hspace=0.25)  # fixed: no layout pass
    fig.savefig(path, dpi=90)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    if args.smoke:
        args.per_class, args.epochs = 10, 15
    args.out_dir.mkdir(parents=True, exist_ok=True)

    section("transforms.v2 on one picture")
    picture = demo_picture()  # (3, 96, 96) uint8
    flipped = v2.RandomHorizontalFlip(p=1.0)(picture)
    flip_err = (flipped - picture.flip(-1)).abs().max().item()
    print(f"RandomHorizontalFlip(p=1) equals picture.flip(-1): max abs diff {flip_err}")
    box = tv_tensors.BoundingBoxes([[62, 8, 86, 32]], format="XYXY", canvas_size=(96, 96))
    _, box_flipped = v2.RandomHorizontalFlip(p=1.0)(picture, box)
    print(f"v2 moves boxes too: the sun's box {box.tolist()[0]} becomes {box_flipped.tolist()[0]} after the flip")

    section("MixUp and CutMix: batch-level, they mix labels as well")
    batch = torch.stack([v2.ToDtype(torch.float32, scale=True)(t) for t in (
        picture, picture.flip(-1), v2.ColorJitter(hue=0.4)(picture), picture.flip(-2))])  # (4, 3, 96, 96) in [0, 1]
    batch = (batch + 0.02 * torch.rand(batch.shape)).clamp(0, 1)  # a little noise: no two pixels coincide by chance
    labels = torch.tensor([0, 1, 2, 3])
    mix_x, mix_y = v2.MixUp(num_classes=4, alpha=1.0)(batch, labels)  # mix_y: (4, 4) soft labels
    cut_x, cut_y = v2.CutMix(num_classes=4, alpha=1.0)(batch, labels)
    kept = (cut_x[0] == batch[0]).all(dim=0).float().mean().item()  # fraction of image 0's pixels left in place
    print(f"MixUp soft labels of image 0: {[round(v, 3) for v in mix_y[0].tolist()]} (rows sum to "
          f"{mix_y.sum(1).max().item():.3f})")
    print(f"CutMix: label weight of image 0 {cut_y[0, 0].item():.4f}; fraction of its pixels kept {kept:.4f}")
    cutmix_gap = abs(cut_y[0, 0].item() - kept)
    grid_png = args.out_dir / "augmentation_grid.png"
    image_grid(picture, {"batch[0]": batch[0], "batch[3] (its MixUp partner)": batch[3],
                         "MixUp": mix_x[0], "CutMix": cut_x[0]}, grid_png)
    print(f"image grid: {grid_png}")

    section("SpecAugment on the spectrogram of a generated chirp (torchaudio)")
    sr = 16000
    t = torch.arange(sr) / sr  # 1 second
    wave = torch.sin(2 * torch.pi * (200 * t + 1800 * t**2)) + 0.3 * torch.sin(2 * torch.pi * 3000 * t)  # chirp + tone
    spec = torchaudio.transforms.Spectrogram(n_fft=400, hop_length=100)(wave)  # (201 freq bins, 161 frames), power
    masked = spec[None].clone()  # (1, freq, time): the masks want a channel dim
    for _ in range(2):  # two frequency and two time masks, as in the SpecAugment paper's recipes
        masked = torchaudio.transforms.FrequencyMasking(freq_mask_param=30)(masked)
        masked = torchaudio.transforms.TimeMasking(time_mask_param=30)(masked)
    masked = masked[0]
    zero = masked == 0
    freq_masked = int(zero.all(dim=1).sum())  # rows (frequency bins) wiped
    time_masked = int(zero.all(dim=0).sum())  # columns (frames) wiped
    print(f"spectrogram {tuple(spec.shape)}; FrequencyMasking wiped {freq_masked} bins, "
          f"TimeMasking {time_masked} frames")
    fig = Figure(figsize=(10, 3.5))
    for ax, s, title in zip(fig.subplots(1, 2), (spec, masked), ("spectrogram (dB)", "after SpecAugment"), strict=True):
        ax.imshow((10 * torch.log10(s + 1e-10)).numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-60)
        ax.set(title=title, xlabel="frame", ylabel="frequency bin")
    fig.tight_layout()
    spec_png = args.out_dir / "specaugment.png"
    fig.savefig(spec_png, dpi=90)
    print(f"plot: {spec_png}")

    section(f"Small data: {args.per_class} generated digits per class, with and without augmentation")
    train = render_digits(10 * args.per_class, seed=args.seed)
    test = render_digits(300 if args.smoke else 2000, seed=args.seed + 10_000)  # other seed: unseen jitter
    # Label-preserving for digits: small rotations, shifts and scalings. Not flips: a mirrored 2 is not a 2.
    augment = v2.RandomAffine(degrees=15, translate=(0.12, 0.12), scale=(0.85, 1.15))
    acc_plain, _ = train_and_test(train, test, None, args, device)
    acc_aug, changed = train_and_test(train, test, augment, args, device)
    print(f"  {'training':<26} {'test accuracy':>13}")
    print(f"  {'no augmentation':<26} {acc_plain:>13.3f}")
    print(f"  {'RandomAffine augmentation':<26} {acc_aug:>13.3f}")
    print(f"gain: {100 * (acc_aug - acc_plain):+.1f} points (chance is 10%), {args.epochs} epochs each; the "
          f"augmentation changed {changed:.0%} of the training images it was given")
    if verdict := augmentation_verdict(acc_plain, acc_aug, args.per_class, args.epochs, args.lr, args.smoke):
        print(verdict)

    metrics = {
        "flip_max_abs_diff": float(flip_err), "mixup_label_row_sum_max": mix_y.sum(1).max().item(),
        "cutmix_label_vs_pixels_gap": cutmix_gap, "spec_freq_bins_masked": freq_masked,
        "spec_frames_masked": time_masked, "acc_no_augmentation": acc_plain, "acc_augmentation": acc_aug,
        "augmentation_gain": acc_aug - acc_plain, "augmented_batch_changed_fraction": changed,
        "train_images": len(train[1]),
    }
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- transforms.v2 works on tensors (and PIL), and moves boxes/masks with the image (tv_tensors).")
    print("- MixUp/CutMix act on a batch and return soft labels; use them after batching, with a soft-label loss.")
    print("- SpecAugment is augmentation for audio: wipe random frequency bands and time spans of the spectrogram.")
    print(f"- Augment only with changes that keep the label. Here it moved test accuracy by "
          f"{100 * (acc_aug - acc_plain):+.1f} points with {args.per_class} images per class and {args.epochs} epochs; "
          "rerun with --per-class 5 or 100 to see how the gain depends on how scarce the data is.")
    return metrics


if __name__ == "__main__":
    main()

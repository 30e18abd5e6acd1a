"""torchvision's built-in datasets: what the constructors do, what they leave on disk, and transforms.

Sections:
1. MNIST, FashionMNIST and CIFAR10 with download=True into --data-dir: which worked, which failed (offline, every
   download fails fast and the lesson says so), and the files each one leaves on disk.
2. Transforms, the current way: transforms.v2 (ToImage, ToDtype(scale=True), Normalize, RandomResizedCrop), each
   step's type, shape and dtype. It replaces the old transforms.ToTensor().
3. ImageFolder over a folder tree this lesson writes (root/<class>/<image>.png): how the class names and labels
   come from the folder names, and what a sample looks like.
4. FakeData: random images with labels, for testing a pipeline with no data at all.

Run it:
    python 06-cnn-image-processing/05_torchvision_datasets.py                 # tries the downloads (~200 MB)
    python 06-cnn-image-processing/05_torchvision_datasets.py --offline       # no downloads

Takes about 3 seconds offline on a 2-core CPU, --smoke too (the first online run adds the ~200 MB of downloads).
What to look for: the file list of every dataset that loaded, "labels match folder names: True" for ImageFolder, and
a FakeData batch of shape (8, 3, 32, 32).
"""

import argparse
import csv
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
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
                        help="where the one example batch is moved; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true",
                        help="no downloads (datasets already on disk are still read), a tiny ImageFolder")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/06-cnn-image-processing/05_torchvision_datasets"),
                        help="where metrics.json and the ImageFolder tree are written")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where torchvision keeps its datasets")
    parser.add_argument("--offline", action="store_true", help="do not try to download anything")
    parser.add_argument("--images-per-class", type=int, default=20, help="PNG files per class in the ImageFolder demo")
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
    if args.images_per_class < 1:
        parser.error("--images-per-class must be at least 1")
    return args


def list_files(root: Path, limit: int = 8) -> int:
    """Print the files under root with their sizes; return how many there are."""
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    for p in files[:limit]:
        print(f"      {p.relative_to(root.parent)}  ({p.stat().st_size:,} bytes)")
    if len(files) > limit:
        print(f"      ... and {len(files) - limit} more")
    return len(files)


def write_image_folder(root: Path, per_class: int, generator: torch.Generator) -> dict:
    """root/<class>/<k>.png for three classes of simple drawings; returns {class: count}."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 24), indexing="ij")
    patterns = {"circles": lambda: (xx**2 + yy**2 < 0.5).float(),
                "stripes": lambda: (torch.sin(12 * xx) > 0).float(),
                "gradient": lambda: (xx + 1) / 2}
    written = {}
    for name, pattern in patterns.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            colour = torch.rand(3, 1, 1, generator=generator)
            img = (pattern() * colour + 0.1 * torch.rand(3, 24, 24, generator=generator)).clamp(0, 1)  # (3, H, W)
            array = (img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()  # PIL wants (H, W, C)
            Image.fromarray(array).save(root / name / f"{k:03d}.png")
        written[name] = per_class
    return written


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    metrics = {}

    section("1. Built-in datasets: download=True and what lands on disk")
    download = not (args.smoke or args.offline)
    print(f"root: {args.data_dir.resolve()}  (download={'True' if download else 'False: --smoke/--offline'})")
    loaded, failed = [], []
    for name, cls, folder in [("MNIST", datasets.MNIST, "MNIST"), ("FashionMNIST", datasets.FashionMNIST,
                                                                    "FashionMNIST"),
                              ("CIFAR10", datasets.CIFAR10, "cifar-10-batches-py")]:
        try:
            train = cls(args.data_dir, train=True, download=download)
            test = cls(args.data_dir, train=False, download=download)
        except Exception as err:  # offline: a name-resolution error; no files and no download: "not found"
            failed.append(name)
            print(f"  {name}: unavailable ({type(err).__name__}: {' '.join(str(err).split())[:90]})")
            print(f"    left on disk under {args.data_dir / folder}: {list_files(args.data_dir / folder)} file(s)")
            continue
        loaded.append(name)
        image, label = train[0]  # PIL image and int: no transform was given
        print(f"  {name}: {len(train)} train / {len(test)} test, classes {train.classes[:3]}..., "
              f"sample: {type(image).__name__} {image.size} {image.mode}, label {label}")
        files = list_files(args.data_dir / folder)
        metrics[f"{name.lower()}_train_len"] = len(train)
        metrics[f"{name.lower()}_files_on_disk"] = files
    print(f"loaded: {loaded or 'none'}; failed: {failed or 'none'}")
    if failed and download:
        print("  (offline? the lesson goes on: ImageFolder and FakeData below need no network)")
    metrics.update(datasets_loaded=len(loaded), datasets_failed=len(failed))

    section("2. Transforms (torchvision.transforms.v2)")
    pil = Image.fromarray((np.random.default_rng(args.seed).random((40, 50, 3)) * 255).astype(np.uint8))
    steps = [("ToImage", v2.ToImage()), ("ToDtype(float32, scale=True)", v2.ToDtype(torch.float32, scale=True)),
             ("RandomResizedCrop(32)", v2.RandomResizedCrop(32, antialias=True)),
             ("Normalize(mean, std)", v2.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]))]
    x = pil
    print(f"  start: PIL {pil.size} (W, H) {pil.mode}")
    for name, step in steps:
        x = step(x)
        print(f"  {name:<30} -> {type(x).__name__} {tuple(x.shape)} {x.dtype}, range [{x.min():.2f}, {x.max():.2f}]")
    print("  v2.ToImage + v2.ToDtype(scale=True) replace the old transforms.ToTensor(): "
          "HWC uint8 -> CHW float in [0, 1]")
    metrics.update(transform_output_channels=int(x.shape[0]), transform_output_side=int(x.shape[-1]))

    section("3. ImageFolder over a folder this lesson writes")
    per_class = 4 if args.smoke else args.images_per_class
    root = args.out_dir / "imagefolder"
    written = write_image_folder(root, per_class, torch.Generator().manual_seed(args.seed))
    with open(args.out_dir / "imagefolder_index.csv", "w", newline="") as f:
        csv.writer(f).writerows([("class", "images"), *written.items()])
    print(f"wrote {sum(written.values())} PNGs under {root}:")
    n_files = list_files(root, limit=4)
    folder = datasets.ImageFolder(root, transform=v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]))
    print(f"ImageFolder: {len(folder)} images, classes {folder.classes} (sorted folder names), "
          f"class_to_idx {folder.class_to_idx}")
    labels_ok = all(folder.classes[label] == Path(path).parent.name for path, label in folder.samples)
    image, label = folder[0]
    print(f"sample 0: {folder.samples[0][0]} -> tensor {tuple(image.shape)} {image.dtype}, label {label}; "
          f"labels match folder names: {labels_ok}")
    metrics.update(imagefolder_images=len(folder), imagefolder_classes=len(folder.classes),
                   imagefolder_files_on_disk=n_files, imagefolder_labels_match=int(labels_ok))

    section("4. FakeData: a pipeline test with no data")
    fake = datasets.FakeData(size=64, image_size=(3, 32, 32), num_classes=10, random_offset=args.seed,
                             transform=v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]))
    images, labels = next(iter(DataLoader(fake, batch_size=8)))
    images = images.to(device)  # (8, 3, 32, 32)
    again = fake[0][0]
    print(f"FakeData: {len(fake)} random images; one batch {tuple(images.shape)} on {device}, labels {labels.tolist()}")
    print(f"the same index gives the same image every time (seeded per index): "
          f"{torch.equal(again, fake[0][0])}; it writes nothing to disk")
    metrics.update(fakedata_batch_size=int(images.shape[0]), fakedata_side=int(images.shape[-1]),
                   fakedata_repeatable=int(torch.equal(again, fake[0][0])))

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- download=True fetches once into root and then only reads what is on disk; offline it fails fast.")
    print("- MNIST keeps raw idx files under MNIST/raw; CIFAR10 keeps the tarball and the unpacked pickles.")
    print("- Without a transform a sample is a PIL image; the model needs a CHW float tensor: v2 does the conversion.")
    print("- ImageFolder labels are folder names in sorted order: renaming a folder changes every label.")
    return metrics


if __name__ == "__main__":
    main()

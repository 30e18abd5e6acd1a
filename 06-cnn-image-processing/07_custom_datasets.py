"""Custom datasets: a map-style Dataset over files on disk, a sharded IterableDataset, random_split, transforms.

Sections:
1. The files: this lesson writes PNG images and a labels.csv (filename,label) under --out-dir, the layout many
   real datasets (Kaggle competitions, labelling tools) ship in.
2. A map-style Dataset: __len__ and __getitem__(i) read one file, decode it to a (C, H, W) tensor, apply the
   transforms, return (image, label). The DataLoader then batches it.
3. random_split with a seeded generator: train/validation subsets that are disjoint and cover every sample.
4. An IterableDataset that streams the files. With num_workers=2 every worker runs its own __iter__: without
   sharding each sample arrives twice; with torch.utils.data.get_worker_info() each worker takes its own slice
   and every sample arrives exactly once. Both are counted.

Run it:
    python 06-cnn-image-processing/07_custom_datasets.py
    python 06-cnn-image-processing/07_custom_datasets.py --images 500 --workers 4

Takes about 4 seconds on a 2-core CPU (--smoke too). What to look for: "disjoint: True" for the split, "duplicates 0,
missing 0" for the sharded IterableDataset, and every sample seen twice by the naive one.
"""

import argparse
import csv
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info, random_split
from torchvision.io import ImageReadMode, decode_image, write_png
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
                        help="where the example batch is moved; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="a handful of small images")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/06-cnn-image-processing/07_custom_datasets"),
                        help="where the PNGs, labels.csv and metrics.json are written")
    parser.add_argument("--images", type=int, default=200, help="PNG files to write")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the IterableDataset proof")
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
    if args.images < 10 or args.workers < 1:
        parser.error("--images must be >= 10 and --workers >= 1")
    return args


def write_files(root: Path, n: int, side: int, generator: torch.Generator) -> Path:
    """n PNGs of three classes (bright square, dark square, stripes) and labels.csv; returns the csv path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = [("filename", "label")]
    for i in range(n):
        label = i % 3
        img = torch.randint(0, 60, (3, side, side), generator=generator, dtype=torch.uint8)  # (C, H, W)
        if label == 0:
            img[:, side // 4: 3 * side // 4, side // 4: 3 * side // 4] += 180
        elif label == 1:
            img += 100
            img[:, side // 4: 3 * side // 4, side // 4: 3 * side // 4] -= 90
        else:
            img[:, :, ::4] += 180
        name = f"img_{i:04d}.png"
        write_png(img, str(root / "images" / name))
        rows.append((name, str(label)))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root / "labels.csv"


class CsvImageDataset(Dataset):
    """Map-style: labels.csv lists (filename, label); images live in <root>/images/."""

    def __init__(self, csv_path: Path, transform=None):
        self.root = Path(csv_path).parent / "images"
        with open(csv_path, newline="") as f:
            self.rows = [(r["filename"], int(r["label"])) for r in csv.DictReader(f)]
        self.transform = transform

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        filename, label = self.rows[i]
        image = decode_image(str(self.root / filename), mode=ImageReadMode.RGB)  # (3, H, W) uint8, CHW already
        if self.transform is not None:
            image = self.transform(image)
        return image, label


class FileStream(IterableDataset):
    """Streams (index, label) from the csv rows, e.g. records too many to index. shard=False shows the bug."""

    def __init__(self, rows: list, shard: bool = True):
        self.rows, self.shard = rows, shard

    def __iter__(self):
        info = get_worker_info()  # None in the main process; (id, num_workers, ...) inside a worker
        indices = range(len(self.rows))
        if self.shard and info is not None:
            indices = indices[info.id::info.num_workers]  # worker k takes rows k, k+W, k+2W, ...
        for i in indices:
            yield i, self.rows[i][1]


def one_thread_per_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)


def count_stream(dataset, workers: int) -> Counter:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, worker_init_fn=one_thread_per_worker)
    return Counter(int(i) for i, _ in loader)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    n, side = (24, 16) if args.smoke else (args.images, 32)
    workers = 2 if args.smoke else max(2, args.workers)  # the proof needs at least two workers
    metrics = {}

    section("1. Files on disk: PNGs and labels.csv")
    csv_path = write_files(args.out_dir / "custom_data", n, side, torch.Generator().manual_seed(args.seed))
    lines = csv_path.read_text().splitlines()
    print(f"wrote {n} PNGs under {csv_path.parent / 'images'} and {csv_path}:")
    for line in lines[:4]:
        print(f"    {line}")
    print(f"    ... ({len(lines) - 1} rows)")

    section("2. A map-style Dataset with transforms")
    train_tf = v2.Compose([v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize([0.5] * 3, [0.25] * 3)])
    dataset = CsvImageDataset(csv_path, transform=train_tf)
    image, label = dataset[0]
    print(f"len(dataset) = {len(dataset)}; dataset[0] -> image {tuple(image.shape)} {image.dtype}, label {label}")
    raw = CsvImageDataset(csv_path)
    brightness = {c: torch.stack([raw[i][0].float().mean() for i in range(len(raw)) if raw.rows[i][1] == c]).mean()
                  for c in range(3)}
    print("mean pixel per class, read back from the files: "
          + ", ".join(f"class {c}: {v.item():.1f}" for c, v in brightness.items()))
    loader = DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    xb, yb = next(iter(loader))
    xb = xb.to(device)
    print(f"a DataLoader batch: images {tuple(xb.shape)} on {device}, labels {yb.tolist()} (default collate stacks)")
    metrics.update(files_written=n, dataset_len=len(dataset), batch_size_seen=int(xb.shape[0]),
                   sample_channels=int(image.shape[0]))

    section("3. random_split")
    train_set, val_set = random_split(dataset, [0.8, 0.2], generator=torch.Generator().manual_seed(args.seed))
    train_idx, val_idx = set(train_set.indices), set(val_set.indices)
    disjoint = not (train_idx & val_idx)
    covers = (train_idx | val_idx) == set(range(len(dataset)))
    print(f"fractions [0.8, 0.2] -> {len(train_set)} train, {len(val_set)} validation; disjoint: {disjoint}; "
          f"together every sample: {covers}")
    print("the subsets share the parent's transform: for a clean validation set, wrap a second dataset built with "
          "the eval transform and the same indices (torch.utils.data.Subset)")
    metrics.update(split_train=len(train_set), split_val=len(val_set), split_disjoint=int(disjoint),
                   split_covers_all=int(covers))

    section(f"4. An IterableDataset across {workers} workers")
    naive = count_stream(FileStream(dataset.rows, shard=False), workers)
    sharded = count_stream(FileStream(dataset.rows, shard=True), workers)
    for name, seen in (("without sharding", naive), ("sharded with get_worker_info", sharded)):
        duplicates = sum(c - 1 for c in seen.values() if c > 1)
        missing = sum(1 for i in range(n) if seen[i] == 0)
        print(f"  {name:<30}: {sum(seen.values())} samples yielded for {n} rows; duplicates {duplicates}, "
              f"missing {missing}")
    exactly_once = all(sharded[i] == 1 for i in range(n)) and len(sharded) == n
    print(f"sharded: every sample exactly once: {exactly_once}")
    metrics.update(iterable_workers=workers, naive_samples_yielded=sum(naive.values()),
                   sharded_samples_yielded=sum(sharded.values()),
                   sharded_duplicates=sum(c - 1 for c in sharded.values() if c > 1),
                   sharded_missing=sum(1 for i in range(n) if sharded[i] == 0),
                   sharded_exactly_once=int(exactly_once))

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- A map-style Dataset is just __len__ + __getitem__; the DataLoader does batching, shuffling, workers.")
    print("- decode_image returns CHW uint8; PIL and numpy give HWC: mixing them up is the classic shape bug.")
    print("- An IterableDataset is copied into every worker: shard it with get_worker_info or get duplicates.")
    return metrics


if __name__ == "__main__":
    main()

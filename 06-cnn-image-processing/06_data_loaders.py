"""Efficient data loading: every DataLoader knob, measured, and when to skip the DataLoader altogether.

Sections:
1. A dataset that does real per-sample work: PNG bytes in memory, decoded (torchvision.io.decode_png) and
   augmented (transforms.v2) in __getitem__, as a folder of JPEGs/PNGs would be.
2. A throughput table, one row per configuration: num_workers 0/1/2..., persistent_workers, prefetch_factor,
   pin_memory (CUDA only), and a collate_fn that keeps uint8 and converts on the device. Workers get
   worker_init_fn = torch.set_num_threads(1) and num_workers is capped by os.cpu_count(): N workers each using
   every core would oversubscribe the CPU and run slower, not faster.
3. WeightedRandomSampler on an imbalanced dataset: the class balance before and after.
4. The fast path: decode once, keep the whole uint8 dataset on the device, and index batches there.

Run it:
    python 06-cnn-image-processing/06_data_loaders.py
    python 06-cnn-image-processing/06_data_loaders.py --images 4000 --max-workers 8 --device cuda

Takes under a minute on a laptop CPU. What to look for: images/s rising with workers while there are idle cores
(on a busy 2-core machine the main process alone can win: that is worth knowing too), a smaller second-epoch start
with persistent_workers, the minority class going from ~2% to ~33% of samples, and the
on-device path far ahead of any loader.
"""

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision.io import decode_png, encode_png
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
                        help="where batches are sent; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="a tiny dataset and at most 2 workers")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/06-cnn-image-processing/06_data_loaders"),
                        help="where metrics.json is written")
    parser.add_argument("--images", type=int, default=1500, help="images in the in-memory PNG dataset")
    parser.add_argument("--side", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--max-workers", type=int, default=4, help="largest num_workers tried (capped by the CPUs)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the CUDA section of the README)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if args.images < 16 or args.side < 16 or args.batch_size < 1 or args.max_workers < 0:
        parser.error("--images and --side must be >= 16, --batch-size >= 1, --max-workers >= 0")
    return args


class PngDataset(Dataset):
    """PNG bytes in memory; __getitem__ decodes and augments one image: (3, side, side) uint8, label."""

    def __init__(self, blobs: list, labels: torch.Tensor, side: int):
        self.blobs, self.labels = blobs, labels
        self.augment = v2.Compose([v2.RandomResizedCrop(side, scale=(0.6, 1.0), antialias=True),
                                   v2.RandomHorizontalFlip()])

    def __len__(self):
        return len(self.blobs)

    def __getitem__(self, i):
        image = decode_png(self.blobs[i])  # (3, H, W) uint8: the CPU work workers exist to parallelise
        return self.augment(image), self.labels[i]


def make_pngs(n: int, side: int, generator: torch.Generator) -> tuple[list, torch.Tensor]:
    labels = torch.randint(4, (n,), generator=generator)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    blobs = []
    for label in labels.tolist():
        base = torch.sin((label + 2) * 3 * xx) * torch.cos((label + 1) * 2 * yy)  # (H, W), one pattern per class
        img = (base + 0.3 * torch.randn(3, side, side, generator=generator)).mul(60).add(128).clamp(0, 255)
        blobs.append(encode_png(img.to(torch.uint8)))  # 1-D uint8 tensor of PNG bytes
    return blobs, labels


def one_thread_per_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)  # each worker is one process: let it use one core, not all of them


def uint8_collate(batch):
    """Stack uint8 images as they are (4x fewer bytes than float32 to copy); convert on the device instead."""
    images, labels = zip(*batch)
    return torch.stack(images), torch.tensor(labels)


def measure(loader, device, epochs: int = 2) -> dict:
    """images/s over `epochs` epochs (worker start-up included) and the wait for each epoch's first batch."""
    first_ms, n = [], 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        t0 = time.perf_counter()
        for i, (x, _y) in enumerate(loader):
            if i == 0:
                first_ms.append((time.perf_counter() - t0) * 1e3)
            x = x.to(device, non_blocking=True).float().div_(255)  # what a training step would receive
            n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"images_per_s": n / (time.perf_counter() - start), "epoch1_first_batch_ms": first_ms[0],
            "epoch2_first_batch_ms": first_ms[-1]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    n, side, batch = (96, 32, 16) if args.smoke else (args.images, args.side, args.batch_size)
    cpus = os.cpu_count() or 1
    max_workers = min(args.max_workers, cpus, 2 if args.smoke else cpus)
    metrics = {}

    section("1. A dataset with real per-sample work")
    blobs, labels = make_pngs(n, side, torch.Generator().manual_seed(args.seed))
    dataset = PngDataset(blobs, labels, side)
    raw = sum(b.numel() for b in blobs)
    print(f"{n} PNGs of 3x{side}x{side}, {raw / 1e6:.2f} MB encoded ({raw / (n * 3 * side * side):.0%} of raw); "
          f"each __getitem__ decodes + RandomResizedCrop + flip")
    print(f"CPUs: {cpus}; workers tried up to {max_workers}; each worker runs worker_init_fn -> set_num_threads(1)")

    section("2. DataLoader configurations")
    g = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731  same shuffle order for every row
    common = dict(batch_size=batch, shuffle=True, worker_init_fn=one_thread_per_worker)
    configs = {"workers=0 (main process)": dict(num_workers=0)}
    for w in sorted({1, max_workers} - {0}):
        configs[f"workers={w}"] = dict(num_workers=w)
    if max_workers > 0:
        configs[f"workers={max_workers} persistent"] = dict(num_workers=max_workers, persistent_workers=True)
        configs[f"workers={max_workers} prefetch_factor=4"] = dict(num_workers=max_workers, prefetch_factor=4,
                                                                    persistent_workers=True)
        configs[f"workers={max_workers} uint8 collate_fn"] = dict(num_workers=max_workers, persistent_workers=True,
                                                                   collate_fn=uint8_collate)
    if device.type == "cuda":  # page-locked host memory makes the copy asynchronous; it only matters with a GPU
        configs[f"workers={max_workers} pin_memory"] = dict(num_workers=max_workers, persistent_workers=max_workers > 0,
                                                            pin_memory=True)
    else:
        print("(pin_memory row skipped: it pins host memory for fast CPU->GPU copies, there is no GPU here)")
    print(f"  {'configuration':<36}{'images/s':>10}{'1st batch ep1':>15}{'1st batch ep2':>15}")
    rows = {}
    for name, extra in configs.items():
        loader = DataLoader(dataset, generator=g(), **common, **extra)
        rows[name] = r = measure(loader, device)
        del loader  # shuts persistent workers down
        print(f"  {name:<36}{r['images_per_s']:>10,.0f}{r['epoch1_first_batch_ms']:>13.1f}ms"
              f"{r['epoch2_first_batch_ms']:>13.1f}ms")
        key = name.split(" (")[0].replace("=", "").replace(" ", "_")
        metrics[f"{key}_images_per_s"] = r["images_per_s"]
    if max_workers > 0:
        plain, persistent = rows[f"workers={max_workers}"], rows[f"workers={max_workers} persistent"]
        print(f"persistent_workers: epoch 2 waits {persistent['epoch2_first_batch_ms']:.1f} ms for its first batch "
              f"instead of {plain['epoch2_first_batch_ms']:.1f} ms (no new worker processes)")
        metrics.update(nonpersistent_epoch2_first_batch_ms=plain["epoch2_first_batch_ms"],
                       persistent_epoch2_first_batch_ms=persistent["epoch2_first_batch_ms"])
    metrics["loader_configs"] = len(configs)

    section("3. WeightedRandomSampler on an imbalanced dataset")
    counts = torch.tensor([700, 280, 20]) if not args.smoke else torch.tensor([140, 56, 4])
    imbalanced = torch.repeat_interleave(torch.arange(3), counts)  # labels (N,)
    weights = (1.0 / counts.float())[imbalanced]  # each sample weighted by 1 / its class size
    sampler = WeightedRandomSampler(weights, num_samples=len(imbalanced) * 10, replacement=True,
                                    generator=torch.Generator().manual_seed(args.seed))
    drawn = imbalanced[torch.tensor(list(sampler))]
    before = (counts / counts.sum()).tolist()
    after = (torch.bincount(drawn, minlength=3) / len(drawn)).tolist()
    print(f"class fractions in the data:    {[round(v, 3) for v in before]}")
    print(f"class fractions drawn (x{len(drawn)}): {[round(v, 3) for v in after]}  (replacement=True: the "
          f"{counts[2].item()} minority images repeat many times per epoch; pass sampler=, not shuffle=True)")
    metrics.update(minority_fraction_before=before[2], minority_fraction_sampled=after[2],
                   majority_fraction_sampled=after[0])

    section("4. The fast path: decode once, keep the dataset on the device")
    decoded = torch.stack([decode_png(b) for b in blobs]).to(device)  # (N, 3, H, W) uint8, decoded once
    on_device_labels = labels.to(device)
    print(f"whole dataset on {device}: {decoded.numel() / 1e6:.1f} MB as uint8")
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, seen = time.perf_counter(), 0
    gen = torch.Generator(device=device).manual_seed(args.seed)
    for _ in range(2):
        order = torch.randperm(n, device=device, generator=gen)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            x, _y = decoded[idx].float().div_(255), on_device_labels[idx]  # (B, 3, H, W)
            flip = torch.rand(len(idx), 1, 1, 1, device=device, generator=gen) < 0.5
            x = torch.where(flip, x.flip(-1), x)  # per-sample flip, batched
            seen += len(idx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    fast = seen / (time.perf_counter() - t0)
    best_loader = max(r["images_per_s"] for r in rows.values())
    print(f"{fast:,.0f} images/s, {fast / best_loader:.1f}x the best DataLoader row ({best_loader:,.0f} images/s); "
          "the price: the dataset must fit in (GPU) memory and augmentations must be batched tensor ops")
    metrics.update(on_device_images_per_s=fast, on_device_vs_best_loader_speedup=fast / best_loader)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Workers pay off when __getitem__ does real work (decode, augment); past the core count they only add "
          "overhead, and starting them costs time every epoch unless persistent_workers=True.")
    print("- A custom collate_fn decides what a batch is: here uint8, converted on the device.")
    print("- WeightedRandomSampler rebalances classes by sampling, with replacement.")
    print("- If the dataset fits on the device, skipping the DataLoader is the fastest loader there is.")
    return metrics


if __name__ == "__main__":
    main()

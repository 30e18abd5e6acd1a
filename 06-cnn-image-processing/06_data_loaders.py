"""Efficient data loading: every DataLoader knob, measured, and when to skip the DataLoader altogether.

Sections:
1. A dataset that does real per-sample work: PNG bytes in memory, decoded (torchvision.io.decode_png) and
   augmented (transforms.v2) in __getitem__, as a folder of JPEGs/PNGs would be.
2. A throughput table, one row per configuration: num_workers 0/1/2..., persistent_workers, prefetch_factor,
   pin_memory (CUDA only), and where the uint8 -> float conversion happens: in __getitem__ (float32 batches, 4x
   the bytes to pass from the workers and copy to the device) or on the device after the copy (default_collate
   keeps the uint8 that __getitem__ returns). Workers get worker_init_fn = torch.set_num_threads(1) and
   num_workers is capped by os.cpu_count(): N workers each using every core would oversubscribe the CPU.
   Every row yields every image once per epoch, in the same order (the same seeded generator).
3. WeightedRandomSampler on an imbalanced dataset: the class balance before and after.
4. The fast path: decode once, keep the whole uint8 dataset on the device, and do the same per-sample random
   resized crop + flip as one batched operation (affine_grid + grid_sample) instead of image by image. Two rows
   separate the two savings: decoding once (same v2 transforms, DataLoader) and batching the augmentation.

Run it:
    python 06-cnn-image-processing/06_data_loaders.py
    python 06-cnn-image-processing/06_data_loaders.py --images 4000 --max-workers 8 --device cuda

Takes about 11 seconds on a 2-core CPU (--smoke: about 4 s). What to look for: images/s rising with workers while there
are idle cores (on a busy 2-core machine the main process alone can win: that is worth knowing too), a smaller
second-epoch start with persistent_workers, the bytes per batch of float32 against uint8, the minority class going
from ~2% to ~33% of samples, and how much of the fast path's lead comes from decoding once and how much from
batching the augmentation.
"""

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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
    if args.images < 16 or args.side < 16 or args.batch_size < 1 or args.max_workers < 0:
        parser.error("--images and --side must be >= 16, --batch-size >= 1, --max-workers >= 0")
    return args


CROP_SCALE = (0.6, 1.0)  # RandomResizedCrop's area range, used by the loader and by the batched version alike


class PngDataset(Dataset):
    """PNG bytes in memory; __getitem__ decodes and augments one image: (3, side, side), label.

    to_float=True converts to float32 in [0, 1] here, in the worker; False returns uint8 and leaves it to the device.
    decoded: optional (N, 3, H, W) uint8 images decoded once, to measure what decoding costs.
    """

    def __init__(self, blobs: list, labels: torch.Tensor, side: int, to_float: bool = False, decoded=None):
        self.blobs, self.labels, self.to_float, self.decoded = blobs, labels, to_float, decoded
        self.augment = v2.Compose([v2.RandomResizedCrop(side, scale=CROP_SCALE, ratio=(1.0, 1.0), antialias=True),
                                   v2.RandomHorizontalFlip()])

    def __len__(self):
        return len(self.blobs)

    def __getitem__(self, i):
        # decoding: the CPU work workers exist to parallelise (skipped when the images were decoded once)
        image = decode_png(self.blobs[i]) if self.decoded is None else self.decoded[i]  # (3, H, W) uint8
        image = self.augment(image)
        if self.to_float:
            image = image.float().div_(255)  # float32: 4 bytes per pixel instead of 1
        return image, self.labels[i]


def batched_resized_crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The per-sample RandomResizedCrop(scale=CROP_SCALE, square) + RandomHorizontalFlip, for a whole batch at once.

    x: (B, 3, H, W) float. Each sample gets its own crop size, position and flip, expressed as an affine map from
    output to input coordinates; one grid_sample then resamples every image (bilinear, like the v2 transform).
    """
    b, dev = len(x), x.device
    r = lambda: torch.rand(b, device=dev, generator=generator)  # noqa: E731
    s = (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * r()).sqrt()  # side of the crop / side of the image
    tx, ty = (2 * r() - 1) * (1 - s), (2 * r() - 1) * (1 - s)  # crop centre, kept inside the image
    flip = torch.where(r() < 0.5, -1.0, 1.0)  # -1 mirrors the x axis
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = s * flip, tx, s, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2) sampling positions
    return F.grid_sample(x, grid, mode="bilinear", align_corners=False)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


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


def measure(loader, device, epochs: int = 2) -> dict:
    """images/s over `epochs` epochs (worker start-up included), the wait for each epoch's first batch, and what
    the batches held: dtype, bytes per batch, the label order of epoch 1, how many images arrived."""
    first_ms, n, order, nbytes, dtype = [], 0, [], 0, None
    sync(device)
    start = time.perf_counter()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            if i == 0:
                first_ms.append((time.perf_counter() - t0) * 1e3)
                nbytes, dtype = x.numel() * x.element_size(), x.dtype
            x = x.to(device, non_blocking=True)
            if x.dtype == torch.uint8:
                x = x.float().div_(255)  # what a training step receives, converted on the device
            n += len(x)
            if epoch == 0:
                order += y.tolist()
    sync(device)
    return {"images_per_s": n / (time.perf_counter() - start), "epoch1_first_batch_ms": first_ms[0],
            "epoch2_first_batch_ms": first_ms[-1], "batch_bytes": nbytes, "dtype": dtype, "order": order,
            "images": n}


def workers_verdict(rows: dict, images_per_epoch: int) -> str:
    """The 'What to notice' sentence on workers, read from this run's table (rows: name -> measure's dict)."""
    main_rate = rows["workers=0 (main process)"]["images_per_s"]
    with_workers = {name: r for name, r in rows.items() if not name.startswith("workers=0") and "float32" not in name}
    general = ("past the core count they only add overhead, and starting them costs time every epoch unless "
               "persistent_workers=True.")
    if not with_workers:
        return ("- Only the main process loaded here (--max-workers 0). Workers pay off when __getitem__ does real "
                "work (decode, augment); " + general)
    best = max(with_workers, key=lambda name: with_workers[name]["images_per_s"])
    best_rate = with_workers[best]["images_per_s"]
    if best_rate > 1.1 * main_rate:
        return (f"- Workers pay off when __getitem__ does real work (decode, augment): {best_rate:,.0f} images/s "
                f"({best}) against {main_rate:,.0f} in the main process; " + general)
    start_ms = max(r["epoch1_first_batch_ms"] for r in with_workers.values())
    return (f"- Workers did not pay off in this run: {main_rate:,.0f} images/s in the main process against "
            f"{best_rate:,.0f} at best with workers ({best}). An epoch here is {images_per_epoch} images, "
            f"{1000 * images_per_epoch / main_rate:.0f} ms of work in the main process, while new workers took up to "
            f"{start_ms:.0f} ms to deliver their first batch (and a busy machine has fewer free cores). Workers pay "
            "off when __getitem__'s work outweighs starting them and passing batches back; " + general)


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
          f"each __getitem__ decodes + RandomResizedCrop(scale={CROP_SCALE}) + flip")
    print(f"CPUs: {cpus}; workers tried up to {max_workers}; each worker runs worker_init_fn -> set_num_threads(1)")

    section("2. DataLoader configurations")
    g = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731  same shuffle order for every row
    common = dict(batch_size=batch, shuffle=True, worker_init_fn=one_thread_per_worker)
    float_dataset = PngDataset(blobs, labels, side, to_float=True)
    configs = {"workers=0 (main process)": dict(num_workers=0)}
    for w in sorted({min(1, max_workers), max_workers} - {0}):  # --max-workers 0: the main process only
        configs[f"workers={w}"] = dict(num_workers=w)
    w = max_workers
    if max_workers > 0:
        configs[f"workers={w} persistent"] = dict(num_workers=w, persistent_workers=True)
        configs[f"workers={w} prefetch_factor=4"] = dict(num_workers=w, prefetch_factor=4, persistent_workers=True)
    # The same work, but __getitem__ returns float32: default_collate stacks whatever dtype it gets
    float_name = f"workers={w}{' persistent' if w else ''} float32 in __getitem__"
    configs[float_name] = dict(num_workers=w, persistent_workers=w > 0, dataset=float_dataset)
    if device.type == "cuda":  # page-locked host memory makes the copy asynchronous; it only matters with a GPU
        configs[f"workers={max_workers} pin_memory"] = dict(num_workers=max_workers, persistent_workers=max_workers > 0,
                                                            pin_memory=True)
    else:
        print("(pin_memory row skipped: it pins host memory for fast CPU->GPU copies, there is no GPU here)")
    print(f"  {'configuration':<44}{'images/s':>10}{'1st batch ep1':>15}{'1st batch ep2':>15}{'batch':>16}")
    rows = {}
    for name, extra in configs.items():
        extra = dict(extra)
        loader = DataLoader(extra.pop("dataset", dataset), generator=g(), **common, **extra)
        rows[name] = r = measure(loader, device)
        del loader  # shuts persistent workers down
        print(f"  {name:<44}{r['images_per_s']:>10,.0f}{r['epoch1_first_batch_ms']:>13.1f}ms"
              f"{r['epoch2_first_batch_ms']:>13.1f}ms{str(r['dtype']).replace('torch.', ''):>9}"
              f"{r['batch_bytes'] / 1024:>5.0f}KiB")
        key = name.split(" (")[0].replace("=", "").replace(" ", "_").replace("_in___getitem__", "")
        metrics[f"{key}_images_per_s"] = r["images_per_s"]
    uint8_row = rows[f"workers={w} persistent"] if w else rows["workers=0 (main process)"]
    float_row = rows[float_name]
    print(f"default_collate keeps the dtype __getitem__ returns: {uint8_row['dtype']} batches of "
          f"{uint8_row['batch_bytes'] / 1024:.0f} KiB against {float_row['dtype']} batches of "
          f"{float_row['batch_bytes'] / 1024:.0f} KiB ({float_row['batch_bytes'] / uint8_row['batch_bytes']:.0f}x the "
          f"bytes to pass from the workers and to copy to the device); images/s "
          f"{uint8_row['images_per_s']:,.0f} (uint8, converted on the device) vs {float_row['images_per_s']:,.0f}")
    same_order = all(r["order"] == rows["workers=0 (main process)"]["order"] for r in rows.values())
    all_images = min(r["images"] for r in rows.values()) == max(r["images"] for r in rows.values()) == 2 * n
    print(f"every row delivered each image once per epoch: {all_images}; same label order in every row (one seeded "
          f"generator, whatever num_workers): {same_order}")
    metrics.update(loader_configs=len(configs), loader_rows_same_order=int(same_order),
                   loader_rows_all_images=int(all_images), uint8_batch_bytes=uint8_row["batch_bytes"],
                   float32_batch_bytes=float_row["batch_bytes"], uint8_batch_is_uint8=int(
                       uint8_row["dtype"] == torch.uint8))
    if max_workers > 0:
        plain, persistent = rows[f"workers={max_workers}"], rows[f"workers={max_workers} persistent"]
        print(f"persistent_workers: epoch 2 waits {persistent['epoch2_first_batch_ms']:.1f} ms for its first batch "
              f"instead of {plain['epoch2_first_batch_ms']:.1f} ms (no new worker processes)")
        metrics.update(nonpersistent_epoch2_first_batch_ms=plain["epoch2_first_batch_ms"],
                       persistent_epoch2_first_batch_ms=persistent["epoch2_first_batch_ms"])

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

    section("4. The fast path: decode once, augment in batches on the device")
    decoded_cpu = torch.stack([decode_png(b) for b in blobs])  # (N, 3, H, W) uint8, decoded once
    once = DataLoader(PngDataset(blobs, labels, side, decoded=decoded_cpu), generator=g(), **common,
                      num_workers=0)
    decoded_once = measure(once, device)
    decoded = decoded_cpu.to(device)
    on_device_labels = labels.to(device)
    print(f"whole dataset on {device}: {decoded.numel() / 1e6:.1f} MB as uint8")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    # the batched augmentation is the same transform: scale 1, no flip must give the image back
    probe = decoded[:4].float() / 255
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device).expand(4, 2, 3)
    identity_diff = (F.grid_sample(probe, F.affine_grid(theta, list(probe.shape), align_corners=False),
                                   align_corners=False) - probe).abs().max().item()
    sync(device)
    t0, seen = time.perf_counter(), 0
    for _ in range(2):
        order = torch.randperm(n, device=device, generator=gen)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            x, _y = decoded[idx].float().div_(255), on_device_labels[idx]  # (B, 3, H, W)
            x = batched_resized_crop_flip(x, gen)  # every sample its own crop and flip, one kernel for the batch
            seen += len(idx)
    sync(device)
    fast = seen / (time.perf_counter() - t0)
    best_name = max(rows, key=lambda k: rows[k]["images_per_s"])
    best_loader = rows[best_name]["images_per_s"]
    print(f"  {'path (a random crop + flip per image, every epoch)':<62}{'images/s':>10}")
    print(f"  {'decoded every epoch: best DataLoader row above':<62}{best_loader:>10,.0f}  ({best_name})")
    print(f"  {'decoded once: DataLoader, the same v2 transforms per image':<62}{decoded_once['images_per_s']:>10,.0f}")
    print(f"  {'decoded once, no DataLoader: one batched grid_sample on ' + str(device):<62}{fast:>10,.0f}")
    print(f"decoding once: x{decoded_once['images_per_s'] / best_loader:.1f}; then batching the augmentation on the "
          f"device: x{fast / decoded_once['images_per_s']:.1f} more (x{fast / best_loader:.1f} in all). The batched "
          f"crop with scale 1 and no flip returns the image: max abs diff {identity_diff:.1e}.")
    print("The price: the dataset must fit in (GPU) memory, and every augmentation must be written as batched tensor "
          "ops (v2 transforms on a batch draw ONE random crop for the whole batch).")
    metrics.update(on_device_images_per_s=fast, decoded_once_images_per_s=decoded_once["images_per_s"],
                   on_device_vs_best_loader_speedup=fast / best_loader,
                   decode_once_speedup=decoded_once["images_per_s"] / best_loader,
                   batched_crop_identity_max_abs_diff=identity_diff)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print(workers_verdict(rows, n))
    print("- default_collate stacks what __getitem__ returns: return uint8 and convert on the device (4x fewer bytes);")
    print("  write a collate_fn only for what stacking cannot do, such as images of different sizes (exercise 6).")
    print("- WeightedRandomSampler rebalances classes by sampling, with replacement.")
    print("- If the dataset fits on the device, decode once and augment in batches there: the table splits that gain")
    print("  into its two parts.")
    return metrics


if __name__ == "__main__":
    main()

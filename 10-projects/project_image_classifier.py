"""Project: train an image classifier on your own folders of images, evaluate it honestly, and use it.

Point it at a folder in the ImageFolder layout, one sub-folder per class:
    my_photos/cats/001.jpg, my_photos/dogs/xyz.png, ...
or with the splits already made: my_photos/train/<class>/..., my_photos/val/<class>/..., my_photos/test/<class>/...
A split that is missing is carved out of the training images, stratified (each class keeps its share), with a seed
saved in the checkpoint, so `evaluate` later finds exactly the same test images and the test split is never seen in
training or in any choice (early stopping and the best checkpoint use the validation split). Hidden files and folders
(macOS's ._001.jpg and .DS_Store) are skipped; photos are turned upright as their EXIF orientation tag says, as
photo viewers show them; a file that cannot be read stops the run with one line that names it and says why.

What it does, as a real training program does it:
- a torchvision or timm backbone (`--model resnet18`, `mobilenet_v3_small`, `efficientnet_b0`, a timm name such as
  `resnet18.a1_in1k`...) with its ImageNet weights when they can be had, through the real API (torchvision's
  weights= enums and weights.transforms(), timm's pretrained=True and data config; cached under --data-dir).
  Offline (or --smoke, --offline) it says so and uses a stand-in: the same architecture that this project pretrains
  itself on a generated source task (stripes, rings, checkerboards, blobs... ten texture classes), cached under
  --data-dir with its SHA-256 checked on every load and re-created when the file is damaged;
- transforms.v2 augmentation (random resized crops, flips, colour jitter) on training images only;
- class imbalance handled: the cross-entropy loss weights each class by the inverse of its training frequency;
- evaluate: accuracy, balanced accuracy, per-class precision / recall / F1 (cross-checked against scikit-learn), a
  confusion-matrix plot, the most confident mistakes shown as an image grid;
- predict: the top-k classes with probabilities for image files or folders (printed by their path inside the folder
  given), written as CSV (or JSON);
- `--export-onnx` (train or evaluate): the best checkpoint exported with torch.onnx.export(dynamo=True) and checked
  with onnxruntime.

Run it:
    python 10-projects/project_image_classifier.py          # the demo: writes a dataset, trains, evaluates, predicts
    python 10-projects/project_image_classifier.py train --data my_photos --model resnet18 --ckpt-dir ckpt
    python 10-projects/project_image_classifier.py evaluate --data my_photos --ckpt-dir ckpt
    python 10-projects/project_image_classifier.py predict --images a.jpg b.png --ckpt-dir ckpt
(without --ckpt-dir, the checkpoint is <out-dir>/checkpoint: outputs/10-projects/project_image_classifier/checkpoint)

The demo takes about 25 s on an idle 2-core laptop CPU offline (--smoke: a few seconds). It writes an imbalanced
four-class ImageFolder dataset under --data-dir made of crops of real photos that installed packages ship
(matplotlib's grace_hopper.jpg and a product photo, scikit-learn's china.jpg and flower.jpg): which photo does a crop
come from? Colour and texture decide, and random crops at different scales make it a real learning problem.
What to look for: which backbone weights were used (one line); validation loss falling, then early stopping; test
accuracy far above the 25% of chance and the per-class table; the confusion matrix and the mistakes grid; the top-3
predictions; the ONNX check's max difference; the three commands printed at the end for your own data.
"""

import argparse
import csv
import hashlib
import importlib.util
import json
import math
import os
import random
import shlex
import shutil
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from tqdm import tqdm

PROJECT = "project_image_classifier"
FORMAT_VERSION = 2  # 2: config.json lists the carved validation and test files (split_files)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")
STANDIN_VERSION = 1  # bump when the source task changes: old caches are then not reused


class ProjectError(Exception):
    """Bad data, a bad flag combination or an unusable checkpoint: a message meant for a person, one line."""


def section(title: str) -> None:
    print(f"\n== {title} ==")


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. The one place the project decides where tensors live."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600: give the permissions open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------- data


def image_files(folder: Path) -> list[Path]:
    """The image files under folder, at any depth, sorted. Hidden files and folders (a name starting with '.': macOS's
    ._photo.jpg AppleDouble files and .DS_Store, .thumbnails/...) are not images of the dataset and are skipped."""
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def class_folders(root: Path) -> dict[str, list[Path]]:
    """{class name: sorted image files} for root/<class>/<image>; folders without images are not classes, hidden
    folders and files are skipped."""
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = image_files(folder)
        if files:
            found[folder.name] = files
    return found


def stratified_carve(items: list[tuple[Path, int]], frac: float, seed: int) -> tuple[list, list]:
    """Split (file, label) pairs into (kept, carved): each class gives `frac` of its files (at least one when it
    has three or more), chosen by a seeded shuffle of the sorted list: the same files on every run."""
    rng = np.random.default_rng(seed)
    kept, carved = [], []
    for label in sorted({y for _, y in items}):
        files = [it for it in items if it[1] == label]
        order = rng.permutation(len(files))
        n = int(round(frac * len(files)))
        n = max(n, 1) if len(files) >= 3 else 0
        carved += [files[i] for i in sorted(order[:n])]
        kept += [files[i] for i in sorted(order[n:])]
    return kept, carved


def find_splits(root: Path, val_frac: float, test_frac: float, seed: int, classes: list[str] | None = None) -> dict:
    """The three splits of an ImageFolder dataset as {"train"/"val"/"test": [(file, label)], "classes": [...]}.

    root/train, root/val, root/test are used when present; a missing split is carved out of the training pool
    (root/train, or root itself when it has no split folders), stratified and seeded."""
    if not root.is_dir():
        raise ProjectError(f"no such dataset folder: {root}")
    present = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if present and "train" not in present and classes is None:
        raise ProjectError(f"{root} has {'/'.join(present)} folders but no train/ folder")
    pool_root = present.get("train", root)
    pool = class_folders(pool_root) if pool_root.is_dir() else {}
    if classes is None:
        classes = list(pool)
        if not classes:
            raise ProjectError(f"{pool_root} holds no class folders with images (expected {pool_root}/<class>/<image>"
                               f" with extensions {', '.join(IMAGE_EXTENSIONS)})")
        if len(classes) < 2:
            raise ProjectError(f"{pool_root} has one class folder ({classes[0]}): a classifier needs at least two")
    index = {c: i for i, c in enumerate(classes)}

    def labelled(folders: dict, where: Path) -> list:
        unknown = sorted(set(folders) - set(index))
        if unknown:
            raise ProjectError(f"{where} has class folders the model does not know: {', '.join(unknown[:5])} "
                               f"(known: {', '.join(classes)})")
        return [(f, index[c]) for c in classes for f in folders.get(c, [])]

    items = labelled(pool, pool_root)
    splits = {}
    if "test" in present:
        splits["test"] = labelled(class_folders(present["test"]), present["test"])
    else:
        items, splits["test"] = stratified_carve(items, test_frac, seed)
    if "val" in present:
        splits["val"] = labelled(class_folders(present["val"]), present["val"])
    else:
        items, splits["val"] = stratified_carve(items, val_frac / (1 - test_frac), seed + 1)
    splits["train"] = items
    splits["classes"] = classes
    splits["carved"] = [s for s in ("test", "val") if s not in present]
    return splits


def fingerprint(items: list) -> str:
    """A short hash of the file names, labels and sizes: a resume on different data is refused."""
    h = hashlib.sha256()
    for path, label in items:
        h.update(f"{path.name}:{label}:{path.stat().st_size};".encode())
    return h.hexdigest()[:16]


def read_image(path: Path, orient: bool = True) -> torch.Tensor:
    """(3, H, W) uint8 RGB, turned as the file's EXIF orientation tag says: upright, as photo viewers show it (a phone
    stores a portrait photo as landscape pixels plus that tag); orient=False gives the pixels as stored. torchvision
    decodes JPEG, PNG, WebP and GIF; Pillow the rest (BMP, TIFF) and WebP to be turned (torchvision turns only JPEG
    and PNG). An animated GIF gives its first frame, a 16-bit PNG is scaled to 8 bits. A file that cannot be read is
    one ProjectError line that names it and says why."""
    if orient and is_webp(path):
        return pil_image(path, orient)
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB, apply_exif_orientation=orient)
    except Exception:
        image = pil_image(path, orient)
    if image.ndim == 4:                                   # an animated GIF: (frames, 3, H, W)
        image = image[0]
    if image.dtype != torch.uint8:                        # a 16-bit PNG: 0..65535 -> 0..255
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def is_webp(path: Path) -> bool:
    """A WebP file, told by its first bytes (RIFF....WEBP), whatever its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def pil_image(path: Path, orient: bool) -> torch.Tensor:
    """Pillow's decoding, for the formats torchvision's decode_image does not read: (3, H, W) uint8 RGB."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    fmt = None
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.seek(0)
            if orient:
                im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I"):                   # 16/32-bit greyscale: scale to 8 bits, then to RGB
                a = np.asarray(im, dtype=np.float64)
                a = np.clip(a / (65535.0 if a.max() > 255 else 255.0) * 255.0, 0, 255).round().astype(np.uint8)
                a = np.repeat(a[..., None], 3, axis=2)
            else:
                a = np.asarray(im.convert("RGB"))
        return torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous()
    except UnidentifiedImageError:
        raise ProjectError(f"cannot read image {path} ({not_an_image(path)})") from None
    except Exception as err:
        why = textwrap.shorten(" ".join(str(err).split()) or type(err).__name__, 120, placeholder=" ...")
        what = f"a damaged or truncated {fmt} file" if fmt else type(err).__name__
        raise ProjectError(f"cannot read image {path} ({what}: {why})") from None


def not_an_image(path: Path) -> str:
    """Why a file that neither torchvision nor Pillow recognises is not an image, said from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror}"
    if not head:
        return "the file is empty"
    if head[:4] == b"\x00\x05\x16\x07" or path.name.startswith("._"):
        return "a macOS AppleDouble file (metadata that macOS writes beside the real image), not an image: delete it"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis"):
        kind = "an AVIF" if head[8:12].startswith(b"avi") else "a HEIC"
        return f"{kind} photo, a format this program does not read: convert it to JPEG or PNG"
    return ("its content is not an image in any format this program reads (JPEG, PNG, WebP, GIF, BMP, TIFF), "
            "whatever its name says")


class ImageFiles(Dataset):
    """(file, label) pairs, decoded on first use, resized once (short side) and kept in memory as uint8."""

    def __init__(self, items: list, resize: int, transform):
        self.items, self.transform = items, transform
        self.resize = v2.Resize(resize, antialias=True)
        self.cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> torch.Tensor:
        if i not in self.cache:
            self.cache[i] = self.resize(read_image(self.items[i][0]))          # (3, h, w) uint8
        return self.cache[i]

    def __getitem__(self, i: int):
        return self.transform(self.image(i)), self.items[i][1]


def make_transforms(config: dict, train: bool):
    """transforms.v2 pipelines on uint8 tensors. Training: random crops at several scales, flips, colour jitter.
    Evaluation: the weights' own preprocessing (centre crop after the resize, the normalisation they were trained
    with)."""
    size, norm = config["crop_size"], v2.Normalize(config["mean"], config["std"])
    if train:
        return v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                           v2.ColorJitter(0.2, 0.2, 0.1), v2.ToDtype(torch.float32, scale=True), norm])
    return v2.Compose([v2.CenterCrop(size), v2.ToDtype(torch.float32, scale=True), norm])


# --------------------------------------------------------------------------------------------------------- backbones


def is_torchvision_model(name: str) -> bool:
    return name in torchvision.models.list_models(module=torchvision.models)


def architecture(name: str) -> nn.Module:
    """The network with its original head and random weights (torchvision first, then timm)."""
    if is_torchvision_model(name):
        # one output, not a tuple; init_weights=False: PyTorch's default init (these weights are replaced or pretrained)
        extra = {"aux_logits": False, "init_weights": False} if name in ("inception_v3", "googlenet") else {}
        return torchvision.models.get_model(name, weights=None, **extra)
    import timm

    if not timm.is_model(name.split(".")[0]):
        raise ProjectError(f"--model {name}: neither a torchvision classification model nor a timm model")
    return timm.create_model(name, pretrained=False)


def set_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A new last layer with num_classes outputs: timm's reset_classifier, or torchvision's last nn.Linear replaced."""
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
        return model
    name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Linear(last.in_features, num_classes))
    return model


def pretrained_backbone(name: str, data_dir: Path):
    """(model with ImageNet weights, preprocessing dict) through the real APIs, or raise (offline, no weights)."""
    if is_torchvision_model(name):
        weights = torchvision.models.get_model_weights(name).DEFAULT      # e.g. ResNet18_Weights.IMAGENET1K_V1
        state = weights.get_state_dict(progress=False, model_dir=str(data_dir / "weights"))
        model = architecture(name)
        model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()})  # minus auxiliary heads
        t = weights.transforms()                                          # resize, centre crop, mean/std
        prep = {"resize": t.resize_size[0], "crop_size": t.crop_size[0], "mean": list(t.mean), "std": list(t.std)}
        return model, prep, f"torchvision {weights}"
    import timm

    model = timm.create_model(name, pretrained=True, cache_dir=str(data_dir / "weights"))
    cfg = timm.data.resolve_model_data_config(model)                      # input size, crop_pct, mean, std
    crop = cfg["input_size"][-1]
    prep = {"resize": int(math.floor(crop / cfg["crop_pct"])), "crop_size": crop, "mean": list(cfg["mean"]),
            "std": list(cfg["std"])}
    return model, prep, f"timm {name} pretrained"


def source_task(n: int, side: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The stand-in's pretraining data: (n, 3, side, side) in [0, 1] and labels 0-9, ten procedural textures
    (stripes at four angles, checkerboard, rings, dots, blobs, a disc, a square) in random colours, scales, positions
    and noise: telling them apart needs edges, periodicities and shapes, features that transfer to photos."""
    u = lambda *s, lo=0.0, hi=1.0: lo + (hi - lo) * torch.rand(*s, generator=generator)  # noqa: E731
    labels = torch.randint(10, (n,), generator=generator)
    yy, xx = torch.meshgrid(torch.arange(float(side)), torch.arange(float(side)), indexing="ij")
    yy, xx = yy / side, xx / side                                                     # (side, side) in [0, 1)
    period, phase = u(n, 1, 1, lo=0.08, hi=0.3), u(n, 1, 1, hi=2 * math.pi)
    cx, cy, r = u(n, 1, 1, lo=0.25, hi=0.75), u(n, 1, 1, lo=0.25, hi=0.75), u(n, 1, 1, lo=0.12, hi=0.3)
    masks = torch.zeros(n, side, side)
    for k in range(4):                                                                # stripes at 0/45/90/135 deg
        theta = k * math.pi / 4 + u(n, 1, 1, lo=-0.15, hi=0.15)
        masks = torch.where((labels == k).view(n, 1, 1),
                            torch.sin(2 * math.pi * (xx * torch.cos(theta) + yy * torch.sin(theta)) / period + phase)
                            > 0, masks)
    shapes = [
        torch.sin(2 * math.pi * xx / period + phase) * torch.sin(2 * math.pi * yy / period) > 0,            # checker
        torch.sin(2 * math.pi * ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() / period + phase) > 0,              # rings
        torch.cos(2 * math.pi * xx / period) * torch.cos(2 * math.pi * yy / period) > 0.6,                   # dots
        F.interpolate(torch.randn(n, 1, 4, 4, generator=generator), size=(side, side), mode="bilinear",
                      align_corners=False)[:, 0] > 0,                                                         # blobs
        (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2,                                                             # disc
        ((xx - cx).abs() < r) & ((yy - cy).abs() < r),                                                        # square
    ]
    for k, m in enumerate(shapes, start=4):
        masks = torch.where((labels == k).view(n, 1, 1), m.float(), masks)
    fg, bg = u(n, 3, 1, 1), u(n, 3, 1, 1)
    bg = torch.where((fg - bg).abs().mean(1, keepdim=True) < 0.25, 1 - fg, bg)      # keep the pattern visible
    images = bg + (fg - bg) * masks[:, None] + 0.08 * torch.randn(n, 3, side, side, generator=generator)
    return images.clamp(0, 1), labels


def check_input_size(model: nn.Module, name: str, side: int, args) -> None:
    """One forward pass on two blank side x side images: a model built for one input size (ViT: 224) or too deep for
    small images (Inception v3: at least 75 px) is one ProjectError line that says which size it needs."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, 3, side, side))
        if isinstance(out, torch.Tensor) and out.shape == (2, 10):
            return
        why = f"its output is {type(out).__name__}, not (batch, classes) logits"
    except Exception as err:
        why = " ".join(str(err).split())[:90] or type(err).__name__
    native = getattr(model, "image_size", None) or (getattr(model, "pretrained_cfg", None) or {}).get("input_size",
                                                                                                     [None])[-1]
    smoke = " (the --smoke demo uses 32 px: run it without --smoke)" if args.smoke else ""
    need = f"--image-size {native}" if native else "a larger --image-size (e.g. 224)"
    raise ProjectError(f"--model {name} cannot take {side}x{side} images ({why}): the offline stand-in is built at "
                       f"--image-size; give {need}{smoke}, or pick another --model")


def standin_backbone(name: str, args, side: int, device: torch.device) -> nn.Module:
    """The offline stand-in: `name`'s architecture pretrained here on the ten-texture source task, cached under
    --data-dir (written atomically, its SHA-256 beside it, checked on load: a damaged cache is re-created)."""
    n_images, steps = (128, 6) if args.smoke else (1536, 32)
    stem = f"standin_{name.replace('/', '_')}_{side}px_{n_images}img_v{STANDIN_VERSION}_seed{args.seed}"
    cache, meta_path = args.data_dir / "standins" / f"{stem}.pt", args.data_dir / "standins" / f"{stem}.json"
    with torch.random.fork_rng(devices=[]):          # the same initial weights whenever the stand-in is (re)made
        torch.manual_seed(args.seed + 101)
        model = set_head(architecture(name), 10)
    check_input_size(model, name, side, args)
    if cache.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("sha256") != sha256(cache):
                raise ValueError("SHA-256 mismatch")
            model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
            print(f"loaded the cached stand-in backbone {cache} (SHA-256 checked; source-task accuracy "
                  f"{meta['source_accuracy']:.1%})")
            return model
        except Exception as err:
            print(f"the cached stand-in {cache} is damaged ({str(err).splitlines()[0][:80]}): re-creating it")
    g = torch.Generator().manual_seed(args.seed + 101)
    batch = 32 if args.smoke else 64
    x, y = source_task(n_images, side, g)
    x_test, y_test = source_task(128 if args.smoke else 256, side, g)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x, x_test = ((t - mean) / std for t in (x, x_test))
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        idx = torch.randint(n_images, (batch,), generator=g)
        loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.inference_mode():
        acc = (model(x_test.to(device)).argmax(1).cpu() == y_test).float().mean().item()
    print(f"pretrained the stand-in {name} on {n_images} ten-texture source images ({steps} steps of {batch}, "
          f"{time.perf_counter() - t0:.1f} s): source-task test accuracy {acc:.1%} (chance 10%)")
    model = model.cpu()
    atomic_write(cache, lambda p: torch.save(model.state_dict(), p))
    atomic_write(meta_path, lambda p: p.write_text(json.dumps({"sha256": sha256(cache), "source_accuracy": acc,
                                                                "steps": steps, "images": n_images})))
    print(f"cached it at {cache}")
    return model


def backbone(args, device: torch.device):
    """(model with a K-class head, preprocessing, which weights) for training: ImageNet weights when they can be
    had, else the stand-in. Prints one line saying which."""
    if not (args.smoke or args.offline):
        try:
            model, prep, source = pretrained_backbone(args.model, args.data_dir)
            print(f"backbone: {args.model} with pretrained ImageNet weights ({source}); preprocessing: resize "
                  f"{prep['resize']}, centre crop {prep['crop_size']}")
            return model, prep, "imagenet"
        except ProjectError:
            raise
        except Exception as err:  # offline, a broken download, a model without pretrained weights
            print(f"backbone: pretrained {args.model} weights unavailable ({type(err).__name__}: "
                  f"{' '.join(str(err).split())[:90]}); using the offline stand-in")
    else:
        print(f"backbone: {args.model}, offline stand-in ({'--smoke' if args.smoke else '--offline'}: no download)")
    side = args.image_size
    model = standin_backbone(args.model, args, side, device)
    prep = {"resize": side, "crop_size": side, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return model, prep, "standin"


# ----------------------------------------------------------------------------------------------------- checkpointing


CONFIG_TYPES = {"model": str, "classes": list, "weights": str, "resize": int, "crop_size": int, "mean": list,
                "std": list, "val_frac": float, "test_frac": float, "split_seed": int, "data_fingerprint": str,
                "split_files": dict}  # what evaluate and predict read from config.json


def check_config(config, where: Path) -> dict:
    """config.json's content, if it is a dict of this project, of this format, with every key of the right type;
    else one ProjectError line."""
    if not isinstance(config, dict):
        raise ProjectError(f"{where} holds a JSON {type(config).__name__}, not this project's settings: the "
                           "checkpoint is damaged")
    if config.get("project") != PROJECT:
        raise ProjectError(f"{where.parent} holds a checkpoint of {config.get('project', 'something else')!r}, "
                           f"not of {PROJECT}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ProjectError(f"{where} is format {config.get('format_version')!r}; this program reads format "
                           f"{FORMAT_VERSION}: train again (or use the program version that wrote it)")
    bad = [k for k, t in CONFIG_TYPES.items()
           if not isinstance(config.get(k), (int, float) if t is float else t) or isinstance(config.get(k), bool)]
    if not bad and not (len(config["classes"]) >= 2 and all(isinstance(c, str) for c in config["classes"]) and
                        len(config["mean"]) == len(config["std"]) == 3):
        bad = ["classes/mean/std"]
    if bad:
        raise ProjectError(f"{where} lacks {', '.join(bad)} (or has the wrong type there): the checkpoint is damaged")
    return config


def load_config(ckpt_dir: Path) -> dict:
    path = ckpt_dir / "config.json"
    if not path.is_file():
        raise ProjectError(f"no checkpoint in {ckpt_dir} (config.json is missing): run `train` first")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProjectError(f"{path} is not valid JSON ({err.__class__.__name__}): the checkpoint is damaged") from None
    return check_config(config, path)


def build_model(config: dict) -> nn.Module:
    return set_head(architecture(config["model"]), len(config["classes"]))


def load_model(ckpt_dir: Path, config: dict, device: torch.device) -> nn.Module:
    model = build_model(config)
    try:
        state = torch.load(ckpt_dir / "model.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ProjectError(f"{ckpt_dir / 'model.pt'} is missing: the checkpoint is incomplete") from None
    except Exception as err:  # truncated or not a PyTorch file: one line, not a traceback
        raise ProjectError(f"{ckpt_dir / 'model.pt'} is damaged or not a PyTorch checkpoint "
                           f"({str(err).splitlines()[0].split('. ')[0]}): train again") from None
    try:
        model.load_state_dict(state)
    except Exception as err:  # another model's weights: one line, not a traceback
        raise ProjectError(f"{ckpt_dir / 'model.pt'} cannot be loaded into this model "
                           f"({str(err).splitlines()[0].split('. ')[0]})") from None
    return model.to(device).eval()


TRAIN_STATE_TYPES = {"format_version": int, "model": dict, "optimizer": dict, "config": dict,
                     "loader_rng": torch.Tensor, "torch_rng": torch.Tensor, "state": str}


def load_train_state(path: Path) -> tuple[dict, dict]:
    """train_state.pt -> (its dict, the early-stopping state), if it is this project's, of this format, with every
    entry of the right type; else one ProjectError line (a copied model.pt, another project's file...)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ProjectError(f"--resume: {path} is unreadable ({err.__class__.__name__})") from None
    owner = saved.get("project") if isinstance(saved, dict) else None
    if owner != PROJECT:
        why = (f"it belongs to {owner}" if isinstance(owner, str) else
               "an earlier version of this script wrote it, before train states named their project"
               if isinstance(saved, dict) and "state" in saved and "config" in saved else
               "it is another kind of file, a model.pt perhaps")
        raise ProjectError(f"--resume: {path} is not a train state of {PROJECT} ({why}); use a new --ckpt-dir")
    def damaged(what: str) -> ProjectError:
        return ProjectError(f"--resume: {path} is damaged or of another version ({what}); use a new --ckpt-dir to "
                            "start afresh")

    bad = [k for k, t in TRAIN_STATE_TYPES.items() if not isinstance(saved.get(k), t)]
    if bad:
        raise damaged(", ".join(bad))
    if saved["format_version"] != FORMAT_VERSION:
        raise damaged(f"format_version {saved['format_version']} (this program writes {FORMAT_VERSION})")
    try:
        state = json.loads(saved["state"])
    except ValueError:
        state = None
    if not (isinstance(state, dict) and isinstance(state.get("history"), list)
            and all(isinstance(state.get(k), (int, float)) for k in ("epoch", "best_val", "best_epoch", "bad_epochs"))):
        raise damaged("state")
    return saved, state


# ------------------------------------------------------------------------------------------------------------ train


def run_epoch(model, loader, device, criterion, optimizer=None, scaler=None, bar=None) -> tuple[float, float]:
    """One pass; trains when an optimizer is given. Returns (mean loss, accuracy)."""
    model.train(optimizer is not None)
    total, correct, count = 0.0, 0, 0
    with torch.set_grad_enabled(optimizer is not None):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = model(x)                                               # (B, K)
                loss = criterion(logits.float(), y)
            value = loss.item()
            if not math.isfinite(value):             # diverged: stop before a step or a save can spread it
                raise FloatingPointError(f"{'training' if optimizer is not None else 'validation'} loss {value}")
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            total += value * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
            if bar is not None:
                bar.update(1)
    return total / count, correct / count


def train(args, device: torch.device, data_root: Path, ckpt_dir: Path, quiet: bool = False) -> dict:
    splits = find_splits(data_root, args.val_frac, args.test_frac, args.seed)
    classes = splits["classes"]
    for s in ("train", "val"):
        if not splits[s]:
            raise ProjectError(f"{data_root}: the {s} split is empty (each class needs at least 3 images to be split,"
                               f" or give {data_root}/{s}/<class>/ folders)")
    counts = np.bincount([y for _, y in splits["train"]], minlength=len(classes))
    if (counts == 0).any():
        raise ProjectError(f"{data_root}: class {classes[int(np.argmin(counts))]!r} has no training images")
    if not quiet:
        print(f"{data_root}: {len(classes)} classes; train {len(splits['train'])}, validation {len(splits['val'])}, "
              f"test {len(splits['test'])} images (the test split is not looked at here)")
        print("training images per class: " + ", ".join(f"{c} {n}" for c, n in zip(classes, counts)))

    torch.manual_seed(args.seed)
    model, prep, weights_used = backbone(args, device)
    set_head(model, len(classes))
    config = {
        "project": PROJECT, "format_version": FORMAT_VERSION, "model": args.model, "classes": classes,
        "weights": weights_used, **prep, "val_frac": args.val_frac, "test_frac": args.test_frac,
        "split_seed": args.seed, "data": str(data_root), "data_fingerprint": fingerprint(splits["train"]),
        # the carved splits' files, relative to --data: evaluate uses exactly these, whatever is added later
        "split_files": {s: [[f.relative_to(data_root).as_posix(), classes[y]] for f, y in splits[s]]
                        for s in splits["carved"]},
    }
    # class imbalance: weight each class by 1/frequency (normalised to mean 1), so a rare class's errors count as
    # much in total as a common class's
    class_weights = torch.tensor(counts.sum() / (len(classes) * counts), dtype=torch.float32)
    if not quiet:
        print("class weights in the loss (inverse frequency): " +
              ", ".join(f"{c} {w:.2f}" for c, w in zip(classes, class_weights.tolist())))
    criterion = nn.CrossEntropyLoss(weight=class_weights.to(device))
    model = model.to(device)
    # the new head learns fast; the pretrained body moves more slowly so it keeps what it learned
    head_ids = {id(p) for p in (model.get_classifier() if hasattr(model, "get_classifier") else
                                [m for m in model.modules() if isinstance(m, nn.Linear)][-1]).parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": args.lr * 0.3},
              {"params": [p for p in model.parameters() if id(p) in head_ids], "lr": args.lr}]
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    gen = torch.Generator().manual_seed(args.seed)
    train_set = ImageFiles(splits["train"], prep["resize"], make_transforms(config, train=True))
    val_set = ImageFiles(splits["val"], prep["resize"], make_transforms(config, train=False))
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, generator=gen)
    val_loader = DataLoader(val_set, batch_size=128)
    state = {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": []}

    state_path = ckpt_dir / "train_state.pt"
    if args.resume:
        if not state_path.is_file():
            raise ProjectError(f"--resume: no {state_path} to resume from (train without --resume first)")
        saved, state = load_train_state(state_path)
        old = saved["config"]
        for key in ("model", "classes", "crop_size", "data_fingerprint", "weights"):
            if old.get(key) != config.get(key):
                raise ProjectError(f"--resume: the checkpoint was trained with {key}={old.get(key)!r}, this run "
                                   f"has {config.get(key)!r}; use a new --ckpt-dir to start afresh")
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            gen.set_state(saved["loader_rng"])
            torch.set_rng_state(saved["torch_rng"])
        except Exception as err:
            raise ProjectError(f"--resume: {state_path} does not fit this model "
                               f"({str(err).splitlines()[0][:100]})") from None
        if state["epoch"] >= args.epochs or state["bad_epochs"] >= args.patience:
            why = "early stopping had already ended it" if state["bad_epochs"] >= args.patience else \
                f"it already ran {state['epoch']} of --epochs {args.epochs}"
            print(f"--resume: nothing to do, {why} (best epoch {state['best_epoch']}); raise --epochs to go on")
            return {"epochs_run": 0, "best_epoch": state["best_epoch"], "best_val_loss": state["best_val"],
                    "history": state["history"]}
        print(f"--resume: continuing after epoch {state['epoch']} (best so far {state['best_val']:.4f} "
              f"at epoch {state['best_epoch']})")

    start, first_epoch = time.perf_counter(), state["epoch"] + 1
    show_bar = not quiet and sys.stderr.isatty()
    for epoch in range(first_epoch, args.epochs + 1):
        bar = tqdm(total=len(loader), desc=f"epoch {epoch}/{args.epochs}", unit="batch", leave=False,
                   file=sys.stderr, dynamic_ncols=True) if show_bar else None
        try:
            tr_loss, tr_acc = run_epoch(model, loader, device, criterion, optimizer, scaler, bar)
            va_loss, va_acc = run_epoch(model, val_loader, device, criterion)
        except FloatingPointError as err:
            raise ProjectError(f"the run diverged in epoch {epoch} ({err}): try a lower --lr than {args.lr:g}; "
                               f"nothing of epoch {epoch} was saved, {ckpt_dir} keeps what it had") from None
        finally:
            if bar is not None:
                bar.close()
        state["epoch"] = epoch
        state["history"].append([tr_loss, va_loss, tr_acc, va_acc])
        if va_loss < state["best_val"] - 1e-6:
            state.update(best_val=va_loss, best_epoch=epoch, bad_epochs=0)
            config.update(best_epoch=epoch, best_val_loss=va_loss, best_val_accuracy=va_acc)
            atomic_write(ckpt_dir / "model.pt", lambda p: torch.save(model.state_dict(), p))
            atomic_write(ckpt_dir / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))
        else:
            state["bad_epochs"] += 1
        if not quiet:
            print(f"  epoch {epoch:>3}/{args.epochs}: train loss {tr_loss:.4f} acc {tr_acc:.1%} | validation loss "
                  f"{va_loss:.4f} acc {va_acc:.1%}{'  (best, saved)' if state['best_epoch'] == epoch else ''}")
        atomic_write(state_path, lambda p: torch.save({
            "project": PROJECT, "format_version": FORMAT_VERSION, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "config": config,
            "loader_rng": gen.get_state(), "torch_rng": torch.get_rng_state(), "state": json.dumps(state)}, p))
        if state["bad_epochs"] >= args.patience:
            if not quiet:
                print(f"early stopping after epoch {epoch}: no validation improvement for {args.patience} epochs")
            break
    seconds = time.perf_counter() - start
    if not quiet:
        print(f"trained epochs {first_epoch}-{state['epoch']} in {seconds:.1f} s; best validation loss "
              f"{state['best_val']:.4f} at epoch {state['best_epoch']}; checkpoint: {ckpt_dir}")
    return {"epochs_run": state["epoch"] - first_epoch + 1, "best_epoch": state["best_epoch"],
            "best_val_loss": state["best_val"], "used_pretrained_weights": int(weights_used == "imagenet"),
            "rarest_weight": float(class_weights.max()),
            "train_time_s": seconds, "history": state["history"]}


# --------------------------------------------------------------------------------------------------------- evaluate


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrix (rows: true, columns: predicted) and (k, 3) precision, recall, F1 from it."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(k), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(k), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    return cm, np.stack([precision, recall, f1], 1)


def predict_dataset(model, dataset, device) -> np.ndarray:
    """(N, K) class probabilities."""
    probs = []
    with torch.inference_mode():
        for x, _ in DataLoader(dataset, batch_size=128):
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                probs.append(model(x.to(device)).float().softmax(1).cpu())
    return torch.cat(probs).numpy()


def evaluation_items(config: dict, data_root: Path, split: str) -> tuple[list, str]:
    """(file, label) pairs of a split, and one line saying where they come from. A split the training run carved is
    read from the checkpoint's list of files, never carved again: images added to the folder later cannot move
    training images into the test split. A split given as a folder (<data>/test/) is that folder."""
    classes = config["classes"]
    index = {c: i for i, c in enumerate(classes)}
    splits = find_splits(data_root, config["val_frac"], config["test_frac"], config["split_seed"], classes)
    held = {}
    for name in ("test", "val"):
        if name not in config["split_files"]:
            held[name] = splits[name]
            continue
        saved = config["split_files"][name]
        unknown = sorted({c for _, c in saved} - set(index))
        if unknown:
            raise ProjectError(f"config.json lists {name} files of unknown classes ({', '.join(unknown[:3])}): the "
                               "checkpoint is damaged")
        held[name] = [(data_root / rel, index[c]) for rel, c in saved]
        gone = [rel for rel, _ in saved if not (data_root / rel).is_file()]
        if gone:
            raise ProjectError(f"{len(gone)} of the {len(saved)} {name} images the training run held out are gone "
                               f"from {data_root} (first: {gone[0]}): evaluate needs the same {name} split (train "
                               "again to split anew)")
    out = {f for f, _ in held["test"] + held["val"]}
    seen, rest = set(), []
    for f, y in splits["train"] + splits["val"] + splits["test"]:
        if f not in out and f not in seen:
            seen.add(f)
            rest.append((f, y))
    changed = fingerprint(rest) != config["data_fingerprint"]
    items = {"test": held["test"], "val": held["val"], "train": rest,
             "all": rest + held["val"] + held["test"]}[split]
    origin = {s: "the checkpoint's list" if s in config["split_files"] else f"{data_root / s}/"
              for s in ("test", "val")}
    how = (f"{split} split: " + (f"the {len(items)} images in {origin[split]} (the files the training run held out)"
                                 if split in origin else f"{len(items)} images") +
           ("; note: the other images in the folder differ from those the model was trained on (added, removed or "
            "changed since): the held-out splits are the saved ones" if changed else ""))
    return items, how


def evaluate(args, device: torch.device, data_root: Path, ckpt_dir: Path, out_dir: Path, quiet: bool = False) -> dict:
    config = load_config(ckpt_dir)
    classes = config["classes"]
    items, how = evaluation_items(config, data_root, args.split)
    if not quiet:
        print(how)
    if not items:
        raise ProjectError(f"{data_root}: the {args.split} split holds no images")
    model = load_model(ckpt_dir, config, device)
    dataset = ImageFiles(items, config["resize"], make_transforms(config, train=False))
    probs = predict_dataset(model, dataset, device)                                   # (N, K)
    y_true, y_pred = np.array([y for _, y in items]), probs.argmax(1)
    k = len(classes)
    cm, prf = per_class_scores(y_true, y_pred, k)
    present = cm.sum(1) > 0
    acc = float((y_true == y_pred).mean())
    balanced = float(prf[present, 1].mean())
    from sklearn.metrics import precision_recall_fscore_support  # an independent implementation to agree with

    sk = np.stack(precision_recall_fscore_support(y_true, y_pred, labels=range(k), zero_division=0)[:3], 1)
    sk_diff = float(np.abs(sk - prf).max())
    if not quiet:
        print(f"{args.split} split of {data_root}: {len(items)} images; best epoch {config.get('best_epoch')}, "
              f"weights: {config['weights']}")
        print(f"accuracy {acc:.1%} (chance {1 / k:.0%}, always-the-largest-class "
              f"{np.bincount(y_true, minlength=k).max() / len(y_true):.0%}); balanced accuracy {balanced:.1%}")
        print(f"  {'class':<20}{'precision':>10}{'recall':>10}{'F1':>8}{'images':>8}")
        for c, (p, r, f), n in zip(classes, prf, cm.sum(1)):
            print(f"  {c[:19]:<20}{p:>10.3f}{r:>10.3f}{f:>8.3f}{n:>8}")
        print(f"per-class precision/recall/F1 agree with scikit-learn's: max difference {sk_diff:.1e}")
    cm_path, grid_path = out_dir / "confusion_matrix.png", out_dir / "worst_mistakes.png"
    plot_confusion(cm_path, cm, classes, f"{args.split} split: accuracy {acc:.1%}")
    wrong = np.flatnonzero(y_pred != y_true)
    worst = wrong[np.argsort(-probs[wrong, y_pred[wrong]], kind="stable")][:16]     # most confident mistakes
    plot_mistakes(grid_path, dataset, worst, probs, y_pred, classes)
    if not quiet:
        print(f"confusion matrix: {cm_path}\n{len(wrong)} mistakes; the most confident "
              f"{len(worst)}: {grid_path}")
    out = {"accuracy": acc, "balanced_accuracy": balanced, "macro_f1": float(prf[present, 2].mean()),
           "images": len(items), "mistakes": len(wrong), "sklearn_max_diff": sk_diff}
    out.update({f"f1_{c}": float(f) for c, f in zip(classes, prf[:, 2])})
    if args.export_onnx:
        x = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))])
        out["onnx_max_abs_diff"] = export_onnx(model, x, ckpt_dir / "model.onnx", device)
    return out


def plot_confusion(path: Path, cm: np.ndarray, classes: list, title: str) -> None:
    k = len(classes)
    fig = Figure(figsize=(1.2 + 0.7 * k, 1 + 0.6 * k))
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, label="images")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted class", ylabel="true class", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "k")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def plot_mistakes(path: Path, dataset, indices, probs, y_pred, classes) -> None:
    """The most confident mistakes: each image with its true class, the predicted one and its probability."""
    cols = 4
    rows = max(1, math.ceil(len(indices) / cols))
    fig = Figure(figsize=(2.4 * cols, 2.6 * rows))
    fig.suptitle("most confident mistakes (true -> predicted, probability)" if len(indices) else
                 "no mistakes on this split")
    for n, i in enumerate(indices):
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.imshow(dataset.image(int(i)).permute(1, 2, 0).numpy())
        ax.set_title(f"{classes[dataset.items[i][1]]} -> {classes[y_pred[i]]}\np={probs[i, y_pred[i]]:.2f}",
                     fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def export_onnx(model: nn.Module, x: torch.Tensor, path: Path, device: torch.device) -> float:
    """torch.onnx.export(dynamo=True) with a dynamic batch, then onnxruntime on the same images: max |difference|."""
    import onnxruntime as ort

    model = model.float().cpu().eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch.export's internals, not this program's
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: batch},), verbose=False)
    atomic_write(path, lambda p: program.save(str(p)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.inference_mode():
        want = model(x).numpy()
    diff = float(np.abs(got - want).max())
    print(f"ONNX: {path} (dynamic batch); onnxruntime vs PyTorch on {len(x)} images: max |difference| {diff:.1e} "
          f"({'within' if diff <= 1e-4 else 'OVER'} 1e-4)")
    model.to(device)
    if diff > 1e-4:
        raise ProjectError(f"the ONNX export disagrees with PyTorch by {diff:.2e} (> 1e-4)")
    return diff


def export_checkpoint(device: torch.device, data_root: Path, ckpt_dir: Path) -> float:
    """`train --export-onnx`: the best checkpoint exported and checked on up to 8 validation images."""
    config = load_config(ckpt_dir)
    model = load_model(ckpt_dir, config, device)
    items, _ = evaluation_items(config, data_root, "val")
    dataset = ImageFiles(items[:8], config["resize"], make_transforms(config, train=False))
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return export_onnx(model, x, ckpt_dir / "model.onnx", device)


def print_next_commands(data_root: Path, ckpt_dir: Path) -> None:
    """After `train`: evaluate and predict with this run's --data and --ckpt-dir, ready to paste."""
    config = load_config(ckpt_dir)
    test = evaluation_items(config, data_root, "test")[0]
    script = Path(__file__).resolve()
    try:
        script = script.relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    me, q = f"python {shlex.quote(str(script))}", lambda p: shlex.quote(str(p))
    print("\nnext: the test split, looked at once, then predictions for your own images:")
    print(f"  {me} evaluate --data {q(data_root)} --ckpt-dir {q(ckpt_dir)}")
    print(f"  {me} predict --images {q(test[0][0]) if test else 'photo.jpg'} --ckpt-dir {q(ckpt_dir)}")


# ---------------------------------------------------------------------------------------------------------- predict


def predict(args, device: torch.device, images: list[Path], ckpt_dir: Path, output: Path, quiet: bool = False) -> dict:
    if output.is_dir():                                  # checked before any work: nothing is written half
        raise ProjectError(f"--output {output} is a folder: give a file name, e.g. {output / 'predictions.csv'}")
    config = load_config(ckpt_dir)
    files, shown = [], []                                # shown: a file as the console names it
    for path in images:
        if path.is_dir():
            found = image_files(path)                    # hidden files (._photo.jpg) skipped
            files += found
            # the path inside the folder given (cats/001.jpg, dogs/001.jpg), after the folder when there are several
            shown += [(f.relative_to(path) if len(images) == 1 else f).as_posix() for f in found]
        elif path.is_file():
            files.append(path)
            shown.append(str(path))
        else:
            raise ProjectError(f"no such image file or folder: {path}")
    if not files:
        raise ProjectError(f"no image files in {', '.join(map(str, images))}")
    model = load_model(ckpt_dir, config, device)
    dataset = ImageFiles([(f, -1) for f in files], config["resize"], make_transforms(config, train=False))
    probs = predict_dataset(model, dataset, device)                                      # (N, K)
    k = min(args.top_k, len(config["classes"]))
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = [{"file": str(f), **{f"top{j + 1}": config["classes"][c] for j, c in enumerate(t)},
             **{f"p{j + 1}": round(float(probs[i, c]), 6) for j, c in enumerate(t)}} for i, (f, t) in
            enumerate(zip(files, top))]

    def write(p: Path) -> None:
        if output.suffix.lower() == ".json":
            p.write_text(json.dumps(rows, indent=2))
            return
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(output, write)
    if not quiet:
        for name, row in zip(shown[:10], rows):
            guesses = ", ".join(f"{row[f'top{j}']} {row[f'p{j}']:.1%}" for j in range(1, k + 1))
            print(f"  {name}: {guesses}")
        if len(rows) > 10:
            print(f"  ... {len(rows) - 10} more")
        print(f"written: {output}")
    return {"images": len(rows), "top1_probability_mean": float(probs.max(1).mean())}


# ------------------------------------------------------------------------------------------------------------- demo


def sklearn_photo(name: str) -> torch.Tensor:
    """One of the two photos scikit-learn ships (china.jpg, flower.jpg: 427x640) as (3, H, W) uint8: the pixels
    load_sample_images() returns, decoded by torchvision straight from the file, without importing sklearn.datasets."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "images" / name if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_sample_images

        images = load_sample_images()
        photo = next(im for f, im in zip(images.filenames, images.images) if Path(f).name == name)
        return torch.from_numpy(photo).permute(2, 0, 1).contiguous()
    return decode_image(str(path), mode=ImageReadMode.RGB)


def write_demo_dataset(root: Path, counts: dict, side: int, seed: int) -> None:
    """Crops of real photos that installed packages ship, as root/<photo>/<n>.jpg, in the ImageFolder layout.
    Random square crops (a fifth to half of the photo's short side, anywhere in it), resized to side x side.
    Written into a new folder that then replaces root: no image of an earlier demo (another size) stays behind."""
    from matplotlib.cbook import get_sample_data

    photos = {
        "blue_pack": decode_image(str(get_sample_data("Minduka_Present_Blue_Pack.png", asfileobj=False)),
                                  mode=ImageReadMode.RGB),
        "grace_hopper": decode_image(str(get_sample_data("grace_hopper.jpg", asfileobj=False)),
                                     mode=ImageReadMode.RGB),
        "china": sklearn_photo("china.jpg"),
        "flower": sklearn_photo("flower.jpg"),
    }
    rng = np.random.default_rng(seed)
    resize = v2.Resize((side, side), antialias=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-new-"))
    try:
        for name, n in counts.items():
            photo = photos[name]                                      # (3, H, W) uint8
            h, w = photo.shape[1:]
            (new / name).mkdir()
            for i in range(n):
                s = int(rng.uniform(0.2, 0.5) * min(h, w)) if h > 200 else int(rng.uniform(0.4, 0.8) * min(h, w))
                top, left = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
                crop = resize(photo[:, top:top + s, left:left + s])
                jpeg = torchvision.io.encode_jpeg(crop, quality=90)
                (new / name / f"{i:04d}.jpg").write_bytes(jpeg.numpy().tobytes())
        os.chmod(new, 0o777 & ~current_umask())
        old = root.parent / f".{root.name}-old-{os.getpid()}"
        if root.exists():
            os.replace(root, old)
        os.replace(new, root)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(new, ignore_errors=True)


def run_demo(args, device: torch.device) -> dict:
    root = args.data_dir / "image_classifier_demo"
    counts = ({"blue_pack": 24, "china": 18, "flower": 36, "grace_hopper": 12} if args.smoke else
              {"blue_pack": 90, "china": 60, "flower": 150, "grace_hopper": 40})
    section("Demo data, written in the ImageFolder layout your own data uses")
    write_demo_dataset(root, counts, args.image_size, args.seed)
    print(f"{root}: " + ", ".join(f"{c}/ {n} images" for c, n in counts.items()) +
          " (crops of real photos, imbalanced on purpose)")
    ckpt, out = args.out_dir / "checkpoint", args.out_dir
    section("Train (validation split for early stopping and the best checkpoint)")
    trained = train(args, device, root, ckpt)
    plot_history(out / "training.png", trained["history"])
    print(f"training curves: {out / 'training.png'}")
    section("Evaluate on the test split, looked at once")
    ev = evaluate(argparse.Namespace(**{**vars(args), "export_onnx": args.export_onnx or not args.smoke}), device,
                  root, ckpt, out)
    section("Predict: top-3 classes for a few image files")
    examples = [f for c in counts for f in sorted((root / c).glob("*.jpg"))[:1]]
    pr = predict(argparse.Namespace(top_k=3), device, examples, ckpt, out / "predictions.csv")
    metrics = {"test_accuracy": ev["accuracy"], "test_balanced_accuracy": ev["balanced_accuracy"],
               "test_macro_f1": ev["macro_f1"], "test_images": ev["images"], "chance_accuracy": 1 / len(counts),
               "sklearn_max_diff": ev["sklearn_max_diff"], "best_epoch": trained["best_epoch"],
               "epochs_run": trained["epochs_run"], "used_pretrained_weights": trained["used_pretrained_weights"],
               "predicted_images": pr["images"], "train_time_s": trained["train_time_s"]}
    if "onnx_max_abs_diff" in ev:  # the full demo always exports; --smoke only with --export-onnx
        metrics["onnx_max_abs_diff"] = ev["onnx_max_abs_diff"]
    section("What to notice")
    print(f"- Test accuracy {ev['accuracy']:.1%} and balanced accuracy {ev['balanced_accuracy']:.1%} against "
          f"{1 / len(counts):.0%} for guessing; the rarest class (grace_hopper, {counts['grace_hopper']} images, "
          f"the largest loss weight, {trained['rarest_weight']:.2f}) has test F1 {ev['f1_grace_hopper']:.2f}.")
    print(f"- Backbone weights: {'ImageNet' if trained['used_pretrained_weights'] else 'the offline stand-in'}; "
          "the best epoch was chosen on the validation split, and the test split was used once, above.")
    print("- The mistakes grid shows what the model confuses: look at it before trusting any accuracy figure.")
    section("Your own data: the same three steps")
    me = "python 10-projects/project_image_classifier.py"
    print(f"{me} train    --data my_photos --model resnet18 --ckpt-dir ckpt")
    print(f"{me} evaluate --data my_photos --ckpt-dir ckpt --export-onnx")
    print(f"{me} predict  --images photo1.jpg photo2.jpg --ckpt-dir ckpt --output predictions.csv")
    return metrics


def plot_history(path: Path, history: list) -> None:
    h = np.array(history)
    epochs = np.arange(1, len(h) + 1)
    fig = Figure(figsize=(10, 3.5))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(epochs, h[:, 0], label="train")
    ax1.plot(epochs, h[:, 1], label="validation")
    ax1.set(title="weighted cross-entropy per epoch", xlabel="epoch", ylabel="loss")
    ax2.plot(epochs, h[:, 2], label="train (augmented)")
    ax2.plot(epochs, h[:, 3], label="validation")
    ax2.set(title="accuracy per epoch", xlabel="epoch", ylabel="accuracy")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------------------------------------- the CLI


def add_common(parser: argparse.ArgumentParser, sub: bool) -> None:
    """The common flags, on the main parser and (without defaults) after each subcommand too."""
    d = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)
    parser.add_argument("--device", default=d("auto"), choices=["auto", "cpu", "cuda", "mps"],
                        help="where to train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=d(0), help="seed for torch, numpy, random and the split")
    parser.add_argument("--smoke", action="store_true", default=d(False),
                        help="the demo in tiny form: a few seconds on a CPU, never downloads")
    parser.add_argument("--out-dir", type=Path, default=d(Path("outputs/10-projects/project_image_classifier")),
                        help="where metrics.json, plots, predictions and the default checkpoint go")
    parser.add_argument("--data-dir", type=Path, default=d(Path("data")),
                        help="where the demo writes its dataset and pretrained / stand-in weights are cached")
    parser.add_argument("--offline", action="store_true", default=d(False),
                        help="do not try to download pretrained weights: use the stand-in backbone")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"must be between 0 and 0.5, got {value}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common(parser, sub=False)
    subs = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict}",
                                 help="with no command: the whole demo")
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p_train = subs.add_parser("train", help="fine-tune a backbone on an ImageFolder dataset", formatter_class=fmt)
    p_eval = subs.add_parser("evaluate", help="test-split metrics, confusion matrix, mistakes grid",
                             formatter_class=fmt)
    p_pred = subs.add_parser("predict", help="top-k classes for image files", formatter_class=fmt)
    for p in (p_train, p_eval, p_pred):
        add_common(p, sub=True)
        p.add_argument("--ckpt-dir", type=Path, default=None, help="checkpoint folder (default <out-dir>/checkpoint)")
    for p in (p_train, p_eval):
        p.add_argument("--data", type=Path, required=True,
                       help="ImageFolder root: <data>/<class>/<image>, or <data>/train|val|test/<class>/<image>")
    p_train.add_argument("--val-frac", type=fraction, default=0.15, help="share of each class held out for validation"
                         " when there is no val/ folder")
    p_train.add_argument("--test-frac", type=fraction, default=0.15, help="share of each class held out for the test"
                         " when there is no test/ folder")
    p_train.add_argument("--resume", action="store_true", help="continue the run saved in --ckpt-dir")
    p_eval.add_argument("--split", choices=["test", "val", "train", "all"], default="test", help="which images")
    p_pred.add_argument("--images", type=Path, nargs="+", required=True, help="image files or folders of images")
    p_pred.add_argument("--top-k", type=positive_int, default=3, help="classes listed per image")
    p_pred.add_argument("--output", type=Path, default=None,
                        help="predictions file, CSV, or JSON when it ends in .json (default <out-dir>/predictions.csv)")
    for p in (parser, p_train, p_eval):
        dd = (lambda v: argparse.SUPPRESS) if p is not parser else (lambda v: v)
        p.add_argument("--export-onnx", action="store_true", default=dd(False),
                       help="export the best checkpoint to <ckpt-dir>/model.onnx and check it with onnxruntime: "
                            "after train, or with evaluate (the full demo always does)")
    for p in (parser, p_train):
        dd = (lambda v: argparse.SUPPRESS) if p is p_train else (lambda v: v)
        p.add_argument("--model", default=dd("resnet18"),
                       help="torchvision classification model (resnet18, mobilenet_v3_small, efficientnet_b0...) or "
                            "a timm model name")
        p.add_argument("--image-size", type=int, default=dd(48),
                       help="input size for the stand-in backbone (pretrained weights bring their own, e.g. 224)")
        p.add_argument("--epochs", type=positive_int, default=dd(10),
                       help="most epochs (early stopping may end sooner)")
        p.add_argument("--patience", type=positive_int, default=dd(3),
                       help="epochs without improvement before stopping")
        p.add_argument("--batch-size", type=positive_int, default=dd(32), help="images per batch")
        p.add_argument("--lr", type=float, default=dd(1e-3), help="AdamW learning rate of the new head (the "
                       "backbone gets 0.3x)")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # NumPy's seed range (torch takes any 64-bit integer)
        parser.error(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the README's GPU section)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if not 16 <= args.image_size <= 1024:
        parser.error(f"--image-size must be between 16 and 1024, got {args.image_size}")
    for flag, path in (("--out-dir", args.out_dir), ("--ckpt-dir", getattr(args, "ckpt_dir", None)),
                       ("--data-dir", getattr(args, "data_dir", None))):
        existing = next((p for p in (path, *path.parents) if p.exists()), None) if path is not None else None
        if existing is not None and not existing.is_dir():  # a file where a folder must be (or be made)
            parser.error(f"{flag} {path} is a file: it must be a folder" if existing == path else
                         f"{flag} {path}: {existing} is a file, so no folder can be made there")
    for name, default in (("val_frac", 0.15), ("test_frac", 0.15), ("resume", False), ("split", "test"),
                          ("top_k", 3), ("export_onnx", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.smoke and args.command is None:
        args.epochs, args.image_size, args.batch_size = min(args.epochs, 4), 32, 16
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.device)
    seed_everything(args.seed)
    start = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{PROJECT}: device {device}, seed {args.seed}{', smoke' if args.smoke else ''}, torch {torch.__version__}")
    try:
        if args.command is None:
            metrics = run_demo(args, device)
        else:
            ckpt_dir = args.ckpt_dir or args.out_dir / "checkpoint"
            if args.command == "train":
                r = train(args, device, args.data, ckpt_dir)
                metrics = {k: v for k, v in r.items() if k != "history"}
                if args.export_onnx:
                    metrics["onnx_max_abs_diff"] = export_checkpoint(device, args.data, ckpt_dir)
                print_next_commands(args.data, ckpt_dir)
            elif args.command == "evaluate":
                metrics = evaluate(args, device, args.data, ckpt_dir, args.out_dir)
            else:
                metrics = predict(args, device, args.images, ckpt_dir, args.output or args.out_dir / "predictions.csv")
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "command": args.command or "demo", "wall_time_s": time.perf_counter() - start}
    atomic_write(args.out_dir / "metrics.json", lambda p: p.write_text(json.dumps(record, indent=2, allow_nan=False)))
    print(f"\nmetrics: {args.out_dir / 'metrics.json'}  ({record['wall_time_s']:.1f} s)")
    return metrics


if __name__ == "__main__":
    main()

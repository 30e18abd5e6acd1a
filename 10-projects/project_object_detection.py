"""Project: train an object detector on your own annotated images, measure it with mAP, and use it.

Point it at a folder in the COCO layout:
    my_data/annotations.json     {"images": [{"id", "file_name", "width", "height"}],
                                  "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h]}],
                                  "categories": [{"id", "name"}]}
    my_data/images/<file_name>
(or my_data/train/, my_data/val/, my_data/test/, each in that layout). A missing validation or test split is carved
out of the training images with a seed saved in the checkpoint, so `evaluate` later finds the same test images.
file_name is relative to images/ (one that already starts with images/, as some tools export it, is found too).
Photos are read upright, turned as their EXIF orientation tag says, the way viewers and annotation tools (CVAT, Label
Studio, Roboflow...) show them, so the boxes are expected in that upright frame; an image whose width and height in
annotations.json are those of the stored, unturned pixels was annotated unturned, and is read unturned (said in one
line). predict reports boxes on the upright image.

What it does, as a real detection program does it:
- a real torchvision detector, FCOS (one-stage, anchor-free: each feature-map cell predicts a class, the distances
  to the four box sides and a "centerness"), on a feature pyramid (BackboneWithFPN). Backbone: MobileNetV3-Large
  with its ImageNet weights (weights_backbone) when they can be had; offline (or --smoke, --offline) it says so and
  uses a small stand-in CNN trained from scratch with the detector, which is enough for scenes like the demo's;
  images are resized to --image-size (min_size/max_size), small enough for CPU training;
- augmentation with transforms.v2 on tv_tensors.BoundingBoxes, so a horizontal flip, a zoom-out (objects get
  smaller: scale jitter) and colour jitter move and keep the boxes with the pixels (tested);
- evaluate: mAP@0.5 and mAP@[.5:.95] computed here the COCO way (greedy matching by score, 101-point interpolated
  precision, per class then the mean), cross-checked against torchmetrics' MeanAveragePrecision when its backend
  (pycocotools or faster_coco_eval) is installed; a precision-recall curve per class;
- predict: boxes, labels and scores for image files, after --score-threshold and class-wise NMS
  (torchvision.ops.batched_nms), printed, drawn on the images (draw_bounding_boxes, PNG) and written as JSON; an
  image left without a box says its best score and the --score-threshold that would show it.

Run it:
    python 10-projects/project_object_detection.py          # the demo: writes a dataset, trains, evaluates, predicts
    python 10-projects/project_object_detection.py train --data my_data --ckpt-dir ckpt
    python 10-projects/project_object_detection.py evaluate --data my_data --ckpt-dir ckpt
    python 10-projects/project_object_detection.py predict --images a.jpg --ckpt-dir ckpt
(without --ckpt-dir, the checkpoint is <out-dir>/checkpoint: outputs/10-projects/project_object_detection/checkpoint)

The demo takes about 45 s on an idle 2-core laptop CPU offline (--smoke: about 4 s). It generates 400 scenes of
96x96 px: one to four circles, squares and triangles in random colours (the shape, not the colour, tells the class),
from 14 to 43 px across, overlapping, on striped and noisy backgrounds, and writes them as images/ +
annotations.json under --data-dir. Trained from scratch with the stand-in backbone (up to 36 epochs, early stopping
on the validation mAP), it reaches a test mAP@0.5 of about 0.9 (each class above 0.85; the demo's target is 0.8) and
an mAP@[.5:.95] of about 0.7. What to look for: the backbone line; the validation mAP rising per epoch; the test
mAP@0.5 and the stricter mAP@[.5:.95]; the precision-recall curves; the drawn predictions; the three commands printed
at the end for your own data.
"""

import argparse
import hashlib
import importlib.util
import json
import math
import os
import random
import shlex
import sys
import tempfile
import textwrap
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, write_png
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import batched_nms, box_iou
from torchvision.transforms import v2
from torchvision.utils import draw_bounding_boxes
from tqdm import tqdm

PROJECT = "project_object_detection"
FORMAT_VERSION = 2  # 2: config.json lists the carved validation and test images (split_files)
SPLITS = ("train", "val", "test")
IOU_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)  # COCO's mAP@[.5:.95]
RECALL_POINTS = 101  # COCO's 101-point interpolation: recall 0, 0.01, ..., 1 (np.linspace, as COCO builds it)
DEMO_CLASSES = ("circle", "square", "triangle")
# what predict takes from a folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)                      # mkstemp creates 0600: give the permissions open() would
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------------------------------------------- data


def read_coco(root: Path) -> dict:
    """root/annotations.json + root/images/ -> {"categories": [...], "images": [{"file", "boxes" (xyxy), "cats"}]}.
    Every problem in the file becomes one ProjectError line that says where."""
    path = root / "annotations.json"
    if not path.is_file():
        raise ProjectError(f"no {path} (expected the COCO layout: annotations.json beside an images/ folder)")
    try:
        coco = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProjectError(f"{path} is not valid JSON ({str(err).splitlines()[0][:80]})") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations",
                                                                                     "categories")):
        raise ProjectError(f"{path} needs the lists \"images\", \"annotations\" and \"categories\"")
    try:
        categories = sorted(({"id": int(c["id"]), "name": str(c["name"])} for c in coco["categories"]),
                            key=lambda c: c["id"])
        images = {int(im["id"]): {"file": image_path(root, str(im["file_name"])), "file_name": str(im["file_name"]),
                                  "size": listed_size(im), "boxes": [], "cats": []} for im in coco["images"]}
    except (KeyError, TypeError, ValueError) as err:
        raise ProjectError(f"{path}: every category needs an id and a name, every image an id and a file_name "
                           f"({type(err).__name__}: {err})") from None
    if not categories:
        raise ProjectError(f"{path} lists no categories")
    if not images:
        raise ProjectError(f"{path} lists no images")
    known = {c["id"] for c in categories}
    for ann in coco["annotations"]:
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            image_id, cat = int(ann["image_id"]), int(ann["category_id"])
        except (KeyError, TypeError, ValueError):
            raise ProjectError(f"{path}: annotation {ann.get('id', '?') if isinstance(ann, dict) else ann!r} needs "
                               "image_id, category_id and bbox [x, y, width, height]") from None
        if not (w > 0 and h > 0 and math.isfinite(x + y + w + h)):
            raise ProjectError(f"{path}: annotation {ann.get('id', '?')} has bbox {ann['bbox']}: width and height "
                               "must be positive")
        if image_id not in images:
            raise ProjectError(f"{path}: annotation {ann.get('id', '?')} refers to image_id {image_id}, not listed")
        if cat not in known:
            raise ProjectError(f"{path}: annotation {ann.get('id', '?')} has category_id {cat}, not in categories")
        if not ann.get("iscrowd", 0):
            images[image_id]["boxes"].append([x, y, x + w, y + h])
            images[image_id]["cats"].append(cat)
    for im in images.values():
        if not im["file"].is_file():
            raise ProjectError(f"{path} lists file_name {im['file_name']!r}, but {im['file']} does not exist "
                               f"(file_name is relative to the images folder, {root / 'images'})")
    return {"categories": categories, "images": [images[k] for k in sorted(images)]}


def image_path(root: Path, file_name: str) -> Path:
    """Where an image of annotations.json is: root/images/<file_name>; a file_name that already starts with the
    folder (images/img_000.jpg, as some tools export it) is found at root/<file_name>."""
    usual = root / "images" / file_name
    return root / file_name if not usual.is_file() and (root / file_name).is_file() else usual


def listed_size(image: dict) -> tuple[int, int] | None:
    """(width, height) as annotations.json gives them, when it does (they are optional here)."""
    try:
        w, h = int(image["width"]), int(image["height"])
    except (KeyError, TypeError, ValueError):
        return None
    return (w, h) if w > 0 and h > 0 else None


def find_splits(root: Path, val_frac: float, test_frac: float, seed: int) -> dict:
    """{"train"/"val"/"test": [image records], "categories"}: root/train, root/val, root/test when present, else
    carved out of the training images by a seeded shuffle (the same images every run with the same seed)."""
    if not root.is_dir():
        raise ProjectError(f"no such dataset folder: {root}")
    present = {s: root / s for s in SPLITS if (root / s / "annotations.json").is_file()}
    pool = read_coco(present.get("train", root))
    splits = {"categories": pool["categories"]}
    items = pool["images"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    n_test = 0 if "test" in present else max(1, int(round(test_frac * len(items))))
    n_val = 0 if "val" in present else max(1, int(round(val_frac * len(items))))
    if len(items) - n_test - n_val < 1:
        raise ProjectError(f"{root}: {len(items)} images are too few to split into train, validation and test")
    splits["test"] = [items[i] for i in sorted(order[:n_test])]
    splits["val"] = [items[i] for i in sorted(order[n_test:n_test + n_val])]
    splits["train"] = [items[i] for i in sorted(order[n_test + n_val:])]
    for s in ("val", "test"):
        if s in present:
            other = read_coco(present[s])
            if [c["name"] for c in other["categories"]] != [c["name"] for c in pool["categories"]]:
                raise ProjectError(f"{present[s]}/annotations.json has other categories than the training split")
            splits[s] = other["images"]
    splits["carved"] = [s for s in ("test", "val") if s not in present]
    return splits


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


def train_transforms(colour: bool = True) -> v2.Compose:
    """Augmentation on (image, BoundingBoxes): v2 transforms move the boxes with the pixels. RandomZoomOut puts the
    image on a larger canvas, which the detector then resizes back to --image-size: the objects come out smaller
    (scale jitter). SanitizeBoundingBoxes drops boxes that became degenerate. colour=False: geometry only."""
    return v2.Compose([
        v2.RandomZoomOut(fill=127, side_range=(1.0, 1.6), p=0.5),
        v2.RandomHorizontalFlip(p=0.5),
        *([v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03)] if colour else []),
        v2.ToDtype(torch.float32, scale=True),
        v2.SanitizeBoundingBoxes(labels_getter=lambda inputs: inputs[1]["labels"]),
    ])


class CocoImages(Dataset):
    """Image records -> (float image (3, H, W) in [0, 1], {"boxes": BoundingBoxes xyxy, "labels": 1..K}).
    Images are decoded on first use and kept in memory as uint8."""

    def __init__(self, records: list, cat_to_label: dict, transform=None):
        self.records, self.cat_to_label, self.transform = records, cat_to_label, transform
        self.cache: dict[int, torch.Tensor] = {}
        self.stored_frame: set[int] = set()      # images read as stored, unturned: annotated that way (see image())

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> torch.Tensor:
        """The pixels the boxes are drawn on: the photo upright (EXIF orientation applied), unless annotations.json
        gives its size as the stored pixels have it, turned (a tool that annotated the photo as stored, sideways)."""
        if i not in self.cache:
            rec = self.records[i]
            img = read_image(rec["file"])
            h, w = img.shape[-2:]
            if rec.get("size") == (h, w) != (w, h):
                stored = read_image(rec["file"], orient=False)
                if stored.shape[-2:] == (w, h):
                    img = stored
                    self.stored_frame.add(i)
            self.cache[i] = img
        return self.cache[i]

    def __getitem__(self, i: int):
        img, rec = self.image(i), self.records[i]
        boxes = tv_tensors.BoundingBoxes(torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4),
                                         format="XYXY", canvas_size=tuple(img.shape[-2:]))
        target = {"boxes": boxes, "labels": torch.tensor([self.cat_to_label[c] for c in rec["cats"]],
                                                         dtype=torch.int64)}
        if self.transform is not None:
            return self.transform(tv_tensors.Image(img), target)
        return img.float() / 255, target


def fingerprint(records: list) -> str:
    """A short hash of the training images' names and annotations: a resume on different data is refused."""
    text = json.dumps([[r["file"].name, r["boxes"], r["cats"]] for r in records])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def collate(batch):
    return tuple(zip(*batch))  # detection models take lists: images may differ in size


# --------------------------------------------------------------------------------------------------------- the model


def conv_bn(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def tiny_body(width: int) -> nn.Sequential:
    """The stand-in backbone: four stride-2 stages; c3 (stride 8) and c4 (stride 16) feed the pyramid."""
    w = width
    return nn.Sequential(OrderedDict(
        c1=conv_bn(3, w // 2, 2),                                       # (B, w/2, H/2, W/2)
        c2=nn.Sequential(conv_bn(w // 2, w, 2), conv_bn(w, w, 1)),       # (B, w, H/4, W/4)
        c3=nn.Sequential(conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w, 1)),  # (B, 2w, H/8, W/8)
        c4=nn.Sequential(conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w, 1)),  # (B, 4w, H/16, W/16)
    ))


def build_detector(config: dict) -> FCOS:
    """FCOS on a feature pyramid. The FPN adds one max-pooled level on top (LastLevelMaxPool), so there are three
    levels, each twice the stride of the one below. FCOS's "anchors" are one point per feature-map cell; torchvision
    gives a location of a level with anchor size a an object when its largest distance to the box sides lies in
    [4a, 8a) (the lowest level from 0, the highest without limit), and regresses those distances in units of a.
    FCOS's paper uses a = stride, made for objects of 64 px and more; here a = stride / 2, so that the demo's
    objects (14 to 43 px at 96 px) are shared between the stride-8 and the stride-16 level by size, as a pyramid
    should, instead of all landing on the finest level."""
    fpn = config["fpn_channels"]
    if config["backbone"] == "tiny":
        w = config["width"]
        backbone = BackboneWithFPN(tiny_body(w), {"c3": "0", "c4": "1"}, [2 * w, 4 * w], fpn)
        strides = (8, 16, 32)
    else:
        from torchvision.models import mobilenet_v3_large

        features = mobilenet_v3_large(weights=None).features
        stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
        c4, c5 = stages[-2], stages[-1]                                   # stride 16 and stride 32
        backbone = BackboneWithFPN(features, {str(c4): "0", str(c5): "1"},
                                   [features[c4].out_channels, features[c5].out_channels], fpn)
        strides = (16, 32, 64)
    anchors = AnchorGenerator(sizes=tuple((s // 2,) for s in strides), aspect_ratios=((1.0,),) * len(strides))
    head = FCOSHead(fpn, 1, len(config["categories"]) + 1, num_convs=config["head_convs"])
    # score_thresh/nms_thresh: keep everything above a low score and no NMS inside; postprocess() does it, with the
    # user's --score-threshold and --nms-iou (mAP needs the low-score detections too)
    return FCOS(backbone, num_classes=len(config["categories"]) + 1, min_size=config["image_size"],
                max_size=config["image_size"], image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                anchor_generator=anchors, head=head, score_thresh=0.01, nms_thresh=1.0, detections_per_img=100)


def load_mobilenet_weights(model: FCOS, data_dir: Path) -> str:
    """ImageNet MobileNetV3-Large weights into the FPN body (weights_backbone, the real enum and download)."""
    from torchvision.models import MobileNet_V3_Large_Weights

    weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1
    state = weights.get_state_dict(progress=False, model_dir=str(data_dir / "weights"))
    body = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    missing = set(model.backbone.body.state_dict()) - set(body)
    if missing:
        raise RuntimeError(f"{len(missing)} backbone tensors missing from {weights}")
    model.backbone.body.load_state_dict({k: v for k, v in body.items() if k in model.backbone.body.state_dict()})
    return str(weights)


def choose_backbone(args) -> tuple[str, str]:
    """(backbone name, which weights): MobileNetV3 with ImageNet weights if possible, else the tiny stand-in."""
    if args.backbone == "tiny":
        print("backbone: the tiny stand-in CNN (--backbone tiny), trained from scratch with the detector")
        return "tiny", "none"
    if args.smoke or args.offline:
        if args.backbone == "auto":
            print(f"backbone: no download ({'--smoke' if args.smoke else '--offline'}); using the tiny stand-in "
                  "CNN, trained from scratch with the detector")
            return "tiny", "none"
        print("backbone: mobilenet_v3_large without ImageNet weights (--offline/--smoke: no download)")
        return "mobilenet_v3_large", "none"
    try:
        from torchvision.models import MobileNet_V3_Large_Weights

        weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1
        weights.get_state_dict(progress=False, model_dir=str(args.data_dir / "weights"))  # downloads once, cached
        print("backbone: mobilenet_v3_large with ImageNet weights (MobileNet_V3_Large_Weights.IMAGENET1K_V1)")
        return "mobilenet_v3_large", "imagenet"
    except Exception as err:  # offline, a broken download
        fallback = "tiny" if args.backbone == "auto" else "mobilenet_v3_large"
        print(f"backbone: ImageNet MobileNetV3 weights unavailable ({type(err).__name__}: "
              f"{' '.join(str(err).split())[:80]}); using "
              f"{'the tiny stand-in CNN' if fallback == 'tiny' else 'mobilenet_v3_large from random weights'}")
        return fallback, "none"


def postprocess(output: dict, score_threshold: float, nms_iou: float) -> dict:
    """The user's score threshold, then class-wise NMS: of two same-class boxes overlapping by more than nms_iou,
    only the higher-scoring one stays."""
    keep = output["scores"] >= score_threshold
    boxes, scores, labels = output["boxes"][keep], output["scores"][keep], output["labels"][keep]
    keep = batched_nms(boxes, scores, labels, nms_iou)                    # indices, sorted by decreasing score
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


# ----------------------------------------------------------------------------------------------------- checkpointing


CONFIG_TYPES = {"categories": list, "backbone": str, "image_size": int, "width": int, "fpn_channels": int,
                "head_convs": int, "val_frac": float, "test_frac": float, "split_seed": int, "data_fingerprint": str,
                "split_files": dict}  # what build_detector, evaluate and predict read from config.json


def open_checkpoint(ckpt_dir: Path, device: torch.device) -> tuple[dict, FCOS]:
    """ckpt_dir/config.json + model.pt -> (config, the detector in eval mode on device). Each way a checkpoint can be
    unusable (none there, damaged JSON, another project's, keys missing, weights that do not fit) is one line."""
    def unusable(why: str) -> ProjectError:
        return ProjectError(f"{ckpt_dir}: {why}")

    if not (ckpt_dir / "config.json").is_file():
        raise unusable("no checkpoint here (config.json is missing): run `train` first")
    try:
        config = json.loads((ckpt_dir / "config.json").read_text())
        owner = config.get("project")
    except (OSError, ValueError, AttributeError) as err:
        raise unusable(f"config.json is damaged ({type(err).__name__})") from None
    if owner != PROJECT:
        raise unusable(f"a checkpoint of {owner or 'something else'!r}, not of {PROJECT}")
    if config.get("format_version") != FORMAT_VERSION:
        raise unusable(f"config.json is format {config.get('format_version')!r}; this program reads format "
                       f"{FORMAT_VERSION}: train again (or use the program version that wrote it)")
    bad = [k for k, t in CONFIG_TYPES.items()
           if not isinstance(config.get(k), (int, float) if t is float else t) or isinstance(config.get(k), bool)]
    if not bad and not (config["categories"] and all(isinstance(c, dict) and isinstance(c.get("name"), str) and
                                                     isinstance(c.get("id"), int) for c in config["categories"])):
        bad = ["categories"]
    if bad:
        raise unusable(f"config.json lacks {', '.join(bad)} (or has the wrong type there): the checkpoint is damaged")
    try:
        model = build_detector(config)
    except Exception as err:                              # sizes no detector can be built with
        raise unusable(f"config.json describes no buildable detector ({str(err).splitlines()[0][:100]})") from None
    try:  # a missing or truncated model.pt, another model's weights: one line, not a traceback
        model.load_state_dict(torch.load(ckpt_dir / "model.pt", map_location="cpu", weights_only=True))
    except Exception as err:
        why = "is missing" if isinstance(err, FileNotFoundError) else str(err).splitlines()[0][:120]
        raise unusable(f"model.pt cannot be loaded into this model ({why})") from None
    return config, model.to(device).eval()


# ------------------------------------------------------------------------------------------------------------- mAP


def match_detections(pred_boxes, pred_scores, gt_boxes, iou_thresholds) -> np.ndarray:
    """COCO's greedy matching for one image and one class: detections in decreasing score order each take the
    still-unmatched ground-truth box they overlap most, if that IoU reaches the threshold. Returns (T, D) 0/1 flags,
    one row per IoU threshold, in the detections' given order."""
    tp = np.zeros((len(iou_thresholds), len(pred_boxes)))
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(torch.as_tensor(pred_boxes, dtype=torch.float64),
                  torch.as_tensor(gt_boxes, dtype=torch.float64)).numpy()  # (D, G)
    order = np.argsort(-np.asarray(pred_scores), kind="stable")
    for t, thr in enumerate(iou_thresholds):
        taken = np.zeros(len(gt_boxes), dtype=bool)
        for d in order:
            candidates = np.where(taken, -1.0, iou[d])
            g = int(np.argmax(candidates))
            if candidates[g] >= thr:
                taken[g] = True
                tp[t, d] = 1
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    """COCO 101-point interpolated AP of one class at one IoU threshold, and its (recall, precision) curve.
    Precision is first made non-increasing (the best precision at any recall at least as high), then read at
    recall 0, 0.01, ..., 1; a recall the detector never reaches counts as precision 0."""
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / max(n_gt, 1)
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, np.linspace(0, 1, RECALL_POINTS), side="left")
    ap = float(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in idx]))
    return ap, recall, precision


def mean_average_precision(preds: list, gts: list, num_classes: int) -> dict:
    """preds/gts: per image {"boxes" (N, 4) xyxy, "labels" 1..K, and "scores" for preds}. Returns mAP@0.5,
    mAP@[.5:.95], per-class AP@0.5 and the AP@0.5 curves. Classes without ground truth are left out of the mean,
    as COCO does."""
    per_class, curves = {}, {}
    for c in range(1, num_classes + 1):
        scores, flags, n_gt = [], [], 0
        for p, g in zip(preds, gts):
            pm, gm = np.asarray(p["labels"]) == c, np.asarray(g["labels"]) == c
            pb, ps, gb = np.asarray(p["boxes"])[pm], np.asarray(p["scores"])[pm], np.asarray(g["boxes"])[gm]
            n_gt += len(gb)
            scores.append(ps)
            flags.append(match_detections(pb.reshape(-1, 4), ps, gb.reshape(-1, 4), IOU_THRESHOLDS))
        if n_gt == 0:
            continue
        scores, flags = np.concatenate(scores), np.concatenate(flags, axis=1)       # (D,), (T, D)
        aps = [average_precision(scores, flags[t], n_gt) for t in range(len(IOU_THRESHOLDS))]
        per_class[c] = [a[0] for a in aps]
        curves[c] = aps[0][1:]
    if not per_class:
        return {"map50": 0.0, "map": 0.0, "ap50_per_class": {}, "curves": {}}
    table = np.array(list(per_class.values()))                                       # (classes, T)
    return {"map50": float(table[:, 0].mean()), "map": float(table.mean()),
            "ap50_per_class": {c: v[0] for c, v in per_class.items()}, "curves": curves}


def torchmetrics_map(preds: list, gts: list):
    """torchmetrics' MeanAveragePrecision on the same detections, when its COCO backend is installed; else None."""
    backend = next((b for b in ("faster_coco_eval", "pycocotools") if importlib.util.find_spec(b)), None)
    if backend is None or importlib.util.find_spec("torchmetrics") is None:
        return None, "torchmetrics' MeanAveragePrecision needs pycocotools or faster_coco_eval: neither is " \
                     "installed, so the cross-check is skipped"
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=backend)
    as_t = lambda d, keys: {k: torch.as_tensor(np.asarray(d[k])) for k in keys}  # noqa: E731
    metric.update([as_t(p, ("boxes", "scores", "labels")) for p in preds], [as_t(g, ("boxes", "labels")) for g in gts])
    r = metric.compute()
    return (float(r["map_50"]), float(r["map"])), f"torchmetrics ({backend})"


def diverged(epoch: int, what: str, lr: float, ckpt_dir: Path) -> ProjectError:
    """Training blew up: stop before a diverged model or train state is saved over the last good one."""
    return ProjectError(f"the run diverged in epoch {epoch} ({what}): try a lower --lr than {lr:g}; nothing of epoch "
                        f"{epoch} was saved, {ckpt_dir} keeps what it had")


def weight_norm(model: nn.Module) -> float:
    """The L2 norm of all the weights: training changes it a little; a step that blows the model up multiplies it."""
    return math.sqrt(sum(p.detach().float().pow(2).sum().item() for p in model.parameters()))


TRAIN_STATE_TYPES = {"format_version": int, "model": dict, "optimizer": dict, "scheduler": dict, "config": dict,
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


@torch.inference_mode()
def detect(model, dataset, device, score_threshold=0.01, nms_iou=0.5, batch_size=16) -> list:
    """Postprocessed detections for every image of a dataset, on the CPU as numpy."""
    model.eval()
    out = []
    for i in range(0, len(dataset), batch_size):
        images = [dataset[j][0].to(device) for j in range(i, min(i + batch_size, len(dataset)))]
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            raw = model(images)
        for r in raw:
            p = postprocess({k: v.float() if k != "labels" else v for k, v in r.items()}, score_threshold, nms_iou)
            out.append({k: v.cpu().numpy() for k, v in p.items()})
    return out


def ground_truth(dataset) -> list:
    return [{"boxes": np.asarray(dataset[i][1]["boxes"]), "labels": dataset[i][1]["labels"].numpy()}
            for i in range(len(dataset))]


def train(args, device: torch.device, data_root: Path, ckpt_dir: Path, quiet: bool = False) -> dict:
    splits = find_splits(data_root, args.val_frac, args.test_frac, args.seed)
    categories = splits["categories"]
    cat_to_label = {c["id"]: i + 1 for i, c in enumerate(categories)}
    n_boxes = sum(len(r["boxes"]) for r in splits["train"])
    if n_boxes == 0:
        raise ProjectError(f"{data_root}: the training images have no annotated boxes")
    if not quiet:
        print(f"{data_root}: {len(categories)} categories ({', '.join(c['name'] for c in categories)}); images: train "
              f"{len(splits['train'])} ({n_boxes} boxes), validation {len(splits['val'])}, test {len(splits['test'])}"
              " (the test split is not looked at here)")
    name, weights = choose_backbone(args)
    config = {"project": PROJECT, "format_version": FORMAT_VERSION, "categories": categories, "backbone": name,
              "backbone_weights": weights, "image_size": args.image_size, "width": args.width,
              "fpn_channels": args.fpn_channels, "head_convs": args.head_convs, "val_frac": args.val_frac,
              "test_frac": args.test_frac, "split_seed": args.seed, "data": str(data_root),
              "data_fingerprint": fingerprint(splits["train"]),
              # the carved splits' images, relative to --data: evaluate uses exactly these, whatever is added later
              "split_files": {s: [split_name(r["file"], data_root) for r in splits[s]]
                              for s in splits["carved"]}}
    torch.manual_seed(args.seed)
    model = build_detector(config)
    if weights == "imagenet":
        load_mobilenet_weights(model, args.data_dir)
    model = model.to(device)
    if not quiet:
        print(f"FCOS detector: {sum(p.numel() for p in model.parameters()):,} parameters, images resized to "
              f"{args.image_size} px")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    gen = torch.Generator().manual_seed(args.seed)
    train_set = CocoImages(splits["train"], cat_to_label, train_transforms())
    val_set = CocoImages(splits["val"], cat_to_label)
    for dataset in (train_set, val_set):      # decode every image now: a bad file stops us before anything is written
        for i in range(len(dataset)):
            dataset.image(i)
    turned = [dataset.records[i]["file_name"] for dataset in (train_set, val_set) for i in sorted(dataset.stored_frame)]
    if turned and not quiet:
        print(f"note: {len(turned)} image(s) (first: {turned[0]}) carry an EXIF orientation tag, but annotations.json "
              "gives their width and height as stored, unturned: read as stored, so that the boxes fit")
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, generator=gen, collate_fn=collate)
    total_steps = args.epochs * len(loader)
    # a short warm-up, then cosine decay over the planned epochs (early stopping may end sooner)
    schedule = lambda step: min(1.0, (step + 1) / max(1, len(loader))) * 0.5 * (1 + math.cos(  # noqa: E731
        math.pi * min(step, total_steps) / total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    val_gt = ground_truth(val_set)
    state = {"epoch": 0, "best_val": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}

    state_path = ckpt_dir / "train_state.pt"
    if args.resume:
        if not state_path.is_file():
            raise ProjectError(f"--resume: no {state_path} to resume from (train without --resume first)")
        saved, state = load_train_state(state_path)
        old = saved["config"]
        for key in ("categories", "backbone", "image_size", "width", "fpn_channels", "head_convs", "data_fingerprint"):
            if old.get(key) != config.get(key):
                raise ProjectError(f"--resume: the checkpoint was trained with a different {key} "
                                   f"({str(old.get(key))[:60]}); use a new --ckpt-dir to start afresh")
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            gen.set_state(saved["loader_rng"])
            torch.set_rng_state(saved["torch_rng"])
        except Exception as err:
            raise ProjectError(f"--resume: {state_path} does not fit this model "
                               f"({str(err).splitlines()[0][:100]})") from None
        if state["epoch"] >= args.epochs or state["bad_epochs"] >= args.patience:
            why = "early stopping had already ended it" if state["bad_epochs"] >= args.patience else \
                f"it already ran {state['epoch']} of --epochs {args.epochs}"
            print(f"--resume: nothing to do, {why} (best epoch {state['best_epoch']}); raise --epochs to go on")
            return {"epochs_run": 0, "best_epoch": state["best_epoch"], "best_val_map50": state["best_val"],
                    "history": state["history"]}
        print(f"--resume: continuing after epoch {state['epoch']} (best validation mAP@0.5 so far "
              f"{state['best_val']:.3f} at epoch {state['best_epoch']})")

    start, first_epoch = time.perf_counter(), state["epoch"] + 1
    show_bar = not quiet and sys.stderr.isatty()
    start_norm = weight_norm(model)
    for epoch in range(first_epoch, args.epochs + 1):
        model.train()
        total, count = 0.0, 0
        for images, targets in tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", unit="batch", leave=False,
                                    disable=not show_bar, file=sys.stderr, dynamic_ncols=True):
            images = [im.to(device) for im in images]
            targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor).to(device), "labels": t["labels"].to(device)}
                       for t in targets]
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                losses = model(images, targets)         # classification (focal), box (GIoU), centerness (BCE)
            loss = sum(losses.values())
            value = loss.item()
            if not math.isfinite(value):             # diverged: stop before a step or a save can spread it
                raise diverged(epoch, f"training loss {value}", args.lr, ckpt_dir)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total, count = total + value * len(images), count + len(images)
        norm = weight_norm(model)
        if not math.isfinite(norm) or norm > 100 * start_norm:  # the last step can blow up the weights: check them
            raise diverged(epoch, f"weight norm {start_norm:.3g} -> {norm:.3g}", args.lr, ckpt_dir)
        val_map = mean_average_precision(detect(model, val_set, device), val_gt, len(categories))["map50"]
        state["epoch"] = epoch
        state["history"].append([total / count, val_map])
        if val_map > state["best_val"] + 1e-6:
            state.update(best_val=val_map, best_epoch=epoch, bad_epochs=0)
            config.update(best_epoch=epoch, best_val_map50=val_map)
            atomic_write(ckpt_dir / "model.pt", lambda p: torch.save(model.state_dict(), p))
            atomic_write(ckpt_dir / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))
        else:
            state["bad_epochs"] += 1
        if not quiet:
            print(f"  epoch {epoch:>3}/{args.epochs}: train loss {total / count:.4f} | validation mAP@0.5 "
                  f"{val_map:.3f}{'  (best, saved)' if state['best_epoch'] == epoch else ''}")
        atomic_write(state_path, lambda p: torch.save({
            "project": PROJECT, "format_version": FORMAT_VERSION, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "config": config, "loader_rng": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "state": json.dumps(state)}, p))
        if state["bad_epochs"] >= args.patience:
            if not quiet:
                print(f"early stopping after epoch {epoch}: no validation improvement for {args.patience} epochs")
            break
    seconds = time.perf_counter() - start
    if not quiet:
        print(f"trained epochs {first_epoch}-{state['epoch']} in {seconds:.1f} s; best validation mAP@0.5 "
              f"{state['best_val']:.3f} at epoch {state['best_epoch']}; checkpoint: {ckpt_dir}")
    return {"epochs_run": state["epoch"] - first_epoch + 1, "best_epoch": state["best_epoch"],
            "best_val_map50": state["best_val"], "used_pretrained_backbone": int(weights == "imagenet"),
            "train_time_s": seconds, "history": state["history"]}


# --------------------------------------------------------------------------------------------------------- evaluate


def split_name(file: Path, data_root: Path) -> str:
    """How config.json names a held-out image: relative to --data (so the folder may move), or the absolute path
    when annotations.json points outside it."""
    try:
        return file.relative_to(data_root).as_posix()
    except ValueError:
        return file.resolve().as_posix()


def evaluation_records(config: dict, splits: dict, data_root: Path, split: str) -> tuple[list, str]:
    """The image records of a split, and one line saying where they come from. A split the training run carved is
    read from the checkpoint's list of images (their boxes from today's annotations.json), never carved again:
    images added later cannot move training images into the test split. A split given as a folder is that folder."""
    everything = splits["train"] + splits["val"] + splits["test"]
    by_name = {split_name(r["file"], data_root): r for r in everything}
    held = {}
    for name in ("test", "val"):
        if name not in config["split_files"]:
            held[name] = splits[name]
            continue
        saved = config["split_files"][name]
        gone = [f for f in saved if f not in by_name]
        if gone:
            raise ProjectError(f"{len(gone)} of the {len(saved)} {name} images the training run held out are gone "
                               f"from {data_root} (first: {gone[0]}): evaluate needs the same {name} split (train "
                               "again to split anew)")
        held[name] = [by_name[f] for f in saved]
    out = {id(r) for r in held["test"] + held["val"]}
    rest = [r for r in everything if id(r) not in out]
    changed = fingerprint(rest) != config["data_fingerprint"]
    records = {"test": held["test"], "val": held["val"], "train": rest, "all": rest + held["val"] + held["test"]}[split]
    how = (f"{split} split: " + (f"the {len(records)} images the training run held out (listed in the checkpoint)"
                                 if split in config["split_files"] else f"{len(records)} images") +
           ("; note: the other images differ from those the model was trained on (added, removed or changed "
            "since): the held-out splits are the saved ones" if changed else ""))
    return records, how


def evaluate(args, device: torch.device, data_root: Path, ckpt_dir: Path, out_dir: Path, quiet: bool = False) -> dict:
    config, model = open_checkpoint(ckpt_dir, device)
    splits = find_splits(data_root, config["val_frac"], config["test_frac"], config["split_seed"])
    names = [c["name"] for c in config["categories"]]
    if [c["name"] for c in splits["categories"]] != names:
        raise ProjectError(f"{data_root} has categories {[c['name'] for c in splits['categories']]}; the checkpoint "
                           f"was trained on {names}")
    records, how = evaluation_records(config, splits, data_root, args.split)
    if not quiet:
        print(how)
    cat_to_label = {c["id"]: i + 1 for i, c in enumerate(splits["categories"])}
    dataset = CocoImages(records, cat_to_label)
    preds, gts = detect(model, dataset, device), ground_truth(dataset)
    r = mean_average_precision(preds, gts, len(names))
    ref, how = torchmetrics_map(preds, gts)
    if not quiet:
        print(f"{args.split} split of {data_root}: {len(records)} images, {sum(len(g['labels']) for g in gts)} boxes; "
              f"best epoch {config.get('best_epoch')}")
        print(f"mAP@0.5 {r['map50']:.3f}   mAP@[.5:.95] {r['map']:.3f}   (computed here, COCO-style)")
        for c, ap in r["ap50_per_class"].items():
            print(f"  AP@0.5 {names[c - 1]:<16}{ap:.3f}")
        if ref is None:
            print(how)
        else:
            print(f"{how}: mAP@0.5 {ref[0]:.3f}, mAP@[.5:.95] {ref[1]:.3f}; differences "
                  f"{abs(ref[0] - r['map50']):.1e}, {abs(ref[1] - r['map']):.1e}")
    path = out_dir / "precision_recall.png"
    plot_pr(path, r["curves"], r["ap50_per_class"], names)
    if not quiet:
        print(f"precision-recall curves: {path}")
    out = {"map50": r["map50"], "map50_95": r["map"], "images": len(records)}
    out.update({f"ap50_{names[c - 1]}": ap for c, ap in r["ap50_per_class"].items()})
    if ref is not None:
        out["torchmetrics_map50_diff"] = abs(ref[0] - r["map50"])
    return out


def plot_pr(path: Path, curves: dict, aps: dict, names: list) -> None:
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for c, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=f"{names[c - 1]} (AP@0.5 {aps[c]:.2f})")
    ax.set(title="precision-recall at IoU 0.5, detections ranked by score", xlabel="recall", ylabel="precision",
           xlim=(0, 1.02), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    save_figure(fig, path)


def save_figure(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))


# ---------------------------------------------------------------------------------------------------------- predict


def predict(args, device: torch.device, images: list[Path], ckpt_dir: Path, output: Path, quiet: bool = False) -> dict:
    if output.is_dir():                                  # checked before any work: nothing is written half
        raise ProjectError(f"--output {output} is a folder: give a file name, e.g. {output / 'predictions.json'}")
    config, model = open_checkpoint(ckpt_dir, device)
    files = []
    for path in images:
        if path.is_dir():
            files += sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                            and not f.name.startswith("."))             # macOS's ._photo.jpg is no image
        elif path.is_file():
            files.append(path)
        else:
            raise ProjectError(f"no such image file or folder: {path}")
    if not files:
        raise ProjectError(f"no image files in {', '.join(map(str, images))}")
    pixels = [read_image(f) for f in files]                    # every file is read before anything is written
    blocked = [p for p in [output.parent / f"{f.stem}_detections.png" for f in files] if p.is_dir()]
    if blocked:
        raise ProjectError(f"{blocked[0]} is a folder: the drawn image cannot be written there (choose another "
                           "--output folder)")
    names = [c["name"] for c in config["categories"]]
    results, drawn, bests = [], [], []
    with torch.inference_mode():
        for f, img in zip(files, pixels):
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                raw = model([(img.float() / 255).to(device)])[0]
            p = postprocess({k: v.float() if k != "labels" else v for k, v in raw.items()}, args.score_threshold,
                            args.nms_iou)
            boxes, scores, labels = p["boxes"].cpu(), p["scores"].cpu(), p["labels"].cpu()
            dets = [{"label": names[int(lab) - 1], "score": round(float(s), 4),
                     "box_xyxy": [round(float(v), 1) for v in b]} for b, s, lab in zip(boxes, scores, labels)]
            # the best score of any box, kept or not: says whether an empty result is the threshold's doing
            best = float(raw["scores"].max()) if len(raw["scores"]) else 0.0
            bests.append(best)                                    # unrounded: the hint's threshold must be below it
            results.append({"file": str(f), "detections": dets, "best_score": round(best, 4)})
            captions = [f"{d['label']} {d['score']:.2f}" for d in dets]
            palette = ("red", "lime", "yellow", "cyan", "magenta", "orange", "white")
            colors = [palette[min(int(lab) - 1, len(palette) - 1)] for lab in labels]
            zoom = max(1, 384 // max(img.shape[-2:]))             # small images drawn enlarged: captions readable
            big = img.repeat_interleave(zoom, -2).repeat_interleave(zoom, -1)
            drawn.append(draw_bounding_boxes(big, boxes * zoom, captions, colors=colors, width=2) if dets else big)
    out_dir = output.parent
    for f, pic in zip(files, drawn):
        atomic_write(out_dir / f"{f.stem}_detections.png", lambda p, pic=pic: write_png(pic, str(p)))
    atomic_write(output, lambda p: p.write_text(json.dumps(results, indent=2)))
    if not quiet:
        for r, best in zip(results[:6], bests):
            hint = "" if r["detections"] else threshold_hint(best)
            print(f"  {Path(r['file']).name}: {len(r['detections'])} objects (score >= {args.score_threshold}, NMS "
                  f"IoU {args.nms_iou}){hint}")
            for d in r["detections"][:8]:
                print(f"    {d['label']:<12}{d['score']:.2f}  box {d['box_xyxy']}")
        print(f"written: {output} and {len(files)} drawn image(s) in {out_dir}, named <image>_detections.png "
              "(images of 192 px or less drawn enlarged)")
    return {"images": len(files), "detections": sum(len(r["detections"]) for r in results)}


def threshold_hint(best: float) -> str:
    """For an image with no box at or above --score-threshold (so best < the threshold): its best score, and a
    threshold that would show it."""
    if best <= 0.05:
        return f"; no box scored above 0.05 (best {best:.3f}): the model sees nothing it knows here"
    lower = math.floor(best * 20 - 1e-9) / 20                # the largest multiple of 0.05 strictly below the best
    return f"; the best box scored {best:.3f}: to see it, lower the threshold, e.g. --score-threshold {lower:.2f}"


# ------------------------------------------------------------------------------------------------------------- demo


def draw_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list, list]:
    """One demo scene: (3, size, size) floats in [0, 1] and its boxes (xyxy) and class indices. A striped, noisy
    background; 1-4 shapes of random colour and size (15% to 45% of the image side), allowed to overlap a little."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(0.2, 0.8, 3)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    img = base[:, None, None] + 0.12 * stripes[None] * rng.uniform(0.3, 1, 3)[:, None, None]
    img = img + rng.normal(0, 0.04, (3, size, size))
    boxes, classes = [], []
    for _ in range(rng.integers(1, 5)):
        for _attempt in range(20):
            s = rng.uniform(0.15, 0.45) * size
            cx, cy = rng.uniform(s / 2, size - s / 2, 2)
            box = [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]
            if not boxes or box_iou(torch.tensor([box]), torch.tensor(boxes)).max() < 0.25:
                break
        else:
            continue
        k = int(rng.integers(len(DEMO_CLASSES)))
        colour = rng.uniform(0, 1, 3)
        if np.abs(colour - base).mean() < 0.3:
            colour = 1 - base                               # keep the shape visible against the background
        if k == 0:
            mask = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= (s / 2) ** 2
        elif k == 1:
            mask = (np.abs(xx + 0.5 - cx) <= s / 2) & (np.abs(yy + 0.5 - cy) <= s / 2)
        else:
            mask = (yy + 0.5 >= box[1]) & (yy + 0.5 <= box[3]) & (np.abs(xx + 0.5 - cx) <= (yy + 0.5 - box[1]) / 2)
        img[:, mask] = colour[:, None]
        boxes.append(box)
        classes.append(k)
    return img.clip(0, 1), boxes, classes


def write_demo_dataset(root: Path, n: int, size: int, seed: int) -> int:
    """n generated scenes as root/images/scene_XXXX.png + root/annotations.json (COCO, bbox as [x, y, w, h])."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(n):
        img, boxes, classes = draw_scene(rng, size)
        name = f"scene_{i:04d}.png"
        pixels = torch.from_numpy((img * 255).round().astype(np.uint8))
        atomic_write(root / "images" / name, lambda p, pixels=pixels: write_png(pixels, str(p)))
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for b, k in zip(boxes, classes):
            w, h = b[2] - b[0], b[3] - b[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": k + 1,
                                "bbox": [round(v, 2) for v in (b[0], b[1], w, h)], "area": round(w * h, 2),
                                "iscrowd": 0})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": c} for k, c in enumerate(DEMO_CLASSES)]}
    atomic_write(root / "annotations.json", lambda p: p.write_text(json.dumps(coco)))
    return len(annotations)


def run_demo(args, device: torch.device) -> dict:
    root = args.data_dir / "object_detection_demo"
    n_scenes = 60 if args.smoke else args.demo_scenes
    section("Demo data, written in the COCO layout your own data uses")
    n_boxes = write_demo_dataset(root, n_scenes, args.image_size, args.seed)
    print(f"{root}: images/ ({n_scenes} scenes, {args.image_size}x{args.image_size}) and annotations.json "
          f"({n_boxes} boxes: {', '.join(DEMO_CLASSES)})")
    ckpt, out = args.out_dir / "checkpoint", args.out_dir
    section("Train (validation mAP@0.5 for early stopping and the best checkpoint)")
    trained = train(args, device, root, ckpt)
    plot_history(out / "training.png", trained["history"])
    print(f"training curves: {out / 'training.png'}")
    section("Evaluate on the test split, looked at once")
    ev = evaluate(argparse.Namespace(split="test"), device, root, ckpt, out)
    section("Predict: boxes drawn on a few test images")
    test_files = [r["file"] for r in find_splits(root, args.val_frac, args.test_frac, args.seed)["test"]][:3]
    pr = predict(argparse.Namespace(score_threshold=0.5, nms_iou=0.5), device, test_files, ckpt,
                 out / "predictions" / "predictions.json")
    metrics = {"test_map50": ev["map50"], "test_map50_95": ev["map50_95"], "test_images": ev["images"],
               **{f"test_{k}": v for k, v in ev.items() if k.startswith("ap50_")},
               "best_epoch": trained["best_epoch"], "epochs_run": trained["epochs_run"],
               "train_loss_first": trained["history"][0][0], "train_loss_last": trained["history"][-1][0],
               "val_map50_first": trained["history"][0][1], "best_val_map50": trained["best_val_map50"],
               "used_pretrained_backbone": trained["used_pretrained_backbone"],
               "predicted_detections": pr["detections"], "train_time_s": trained["train_time_s"]}
    section("What to notice")
    verdict = "meets" if ev["map50"] >= 0.8 else "misses"
    short = "; a smoke run is far too short for it" if args.smoke else ""
    print(f"- Test mAP@0.5 {ev['map50']:.3f} ({verdict} the demo's 0.8 target{short}); mAP@[.5:.95] "
          f"{ev['map50_95']:.3f} is lower: boxes must also be tight, IoU 0.95 is a high bar.")
    print("- mAP rewards ranking: a confident false positive costs precision at every recall after it.")
    print("- The score threshold and NMS only shape what `predict` shows; mAP is computed from all detections.")
    section("Your own data: the same three steps")
    me = "python 10-projects/project_object_detection.py"
    print(f"{me} train    --data my_data --ckpt-dir ckpt          # my_data/annotations.json + my_data/images/")
    print(f"{me} evaluate --data my_data --ckpt-dir ckpt")
    print(f"{me} predict  --images photo.jpg --ckpt-dir ckpt --score-threshold 0.5 --output preds/predictions.json")
    return metrics


def plot_history(path: Path, history: list) -> None:
    h = np.array(history)
    epochs = np.arange(1, len(h) + 1)
    fig = Figure(figsize=(10, 3.5))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(epochs, h[:, 0], label="train loss (focal + GIoU + centerness)")
    ax1.set(title="training loss per epoch", xlabel="epoch", ylabel="loss")
    ax2.plot(epochs, h[:, 1], color="C1", label="validation mAP@0.5")
    ax2.set(title="validation mAP@0.5 per epoch", xlabel="epoch", ylabel="mAP@0.5", ylim=(0, 1))
    for ax in (ax1, ax2):
        ax.legend()
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------------------- the CLI


COMMON_FLAGS = {  # on the main parser, and repeated after each subcommand (there without defaults)
    "--device": dict(default="auto", choices=["auto", "cpu", "cuda", "mps"],
                     help="where to train; auto picks cuda, then mps, then cpu"),
    "--seed": dict(type=int, default=0, help="seed for torch, numpy, random and the split"),
    "--smoke": dict(action="store_true", default=False, help="the demo in tiny form: seconds on a CPU, no download"),
    "--out-dir": dict(type=Path, default=Path("outputs/10-projects/project_object_detection"),
                      help="where metrics.json, plots, predictions and the default checkpoint go"),
    "--data-dir": dict(type=Path, default=Path("data"),
                       help="where the demo writes its dataset and backbone weights are cached"),
    "--offline": dict(action="store_true", default=False, help="do not try to download backbone weights"),
}


def add_common(parser: argparse.ArgumentParser, sub: bool) -> None:
    for flag, spec in COMMON_FLAGS.items():
        parser.add_argument(flag, **{**spec, "default": argparse.SUPPRESS} if sub else spec)


def in_range(value, low: float, high: float, open_ends: bool = False):
    """For argparse types: value, if low <= value <= high (low < value < high with open_ends), else a usage error."""
    if (low < value < high) if open_ends else (low <= value <= high):
        return value
    bounds = f"at least {low}" if high == math.inf else f"{'strictly ' * open_ends}between {low} and {high}"
    raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")


def positive_int(text: str) -> int:
    return in_range(int(text), 1, math.inf)


def fraction(text: str) -> float:
    return in_range(float(text), 0, 0.5, open_ends=True)


def unit_interval(text: str) -> float:
    return in_range(float(text), 0, 1)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common(parser, sub=False)
    subs = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict}",
                                 help="with no command: the whole demo")
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p_train = subs.add_parser("train", help="fine-tune an FCOS detector on a COCO-style dataset", formatter_class=fmt)
    p_eval = subs.add_parser("evaluate", help="mAP@0.5, mAP@[.5:.95] and precision-recall curves",
                             formatter_class=fmt)
    p_pred = subs.add_parser("predict", help="boxes, labels and scores for image files", formatter_class=fmt)
    for p in (p_train, p_eval, p_pred):
        add_common(p, sub=True)
        p.add_argument("--ckpt-dir", type=Path, default=None, help="checkpoint folder (default <out-dir>/checkpoint)")
    for p in (p_train, p_eval):
        p.add_argument("--data", type=Path, required=True,
                       help="dataset folder: annotations.json + images/ (or train/ val/ test/ folders of that)")
    p_eval.add_argument("--split", choices=["test", "val", "train", "all"], default="test", help="which images")
    p_pred.add_argument("--images", type=Path, nargs="+", required=True, help="image files or folders of images")
    p_pred.add_argument("--score-threshold", type=unit_interval, default=0.5, help="lowest score shown")
    p_pred.add_argument("--nms-iou", type=unit_interval, default=0.5,
                        help="same-class boxes overlapping more than this: only the best-scoring one is kept")
    p_pred.add_argument("--output", type=Path, default=None,
                        help="detections JSON; drawn images go beside it (default <out-dir>/predictions.json)")
    for p in (parser, p_train):
        dd = (lambda v: argparse.SUPPRESS) if p is p_train else (lambda v: v)
        p.add_argument("--backbone", choices=["auto", "tiny", "mobilenet_v3_large"], default=dd("auto"),
                       help="auto: MobileNetV3-Large with ImageNet weights when they can be downloaded, else the "
                            "tiny stand-in CNN")
        p.add_argument("--image-size", type=int, default=dd(96), help="images are resized to this (min/max size)")
        p.add_argument("--width", type=positive_int, default=dd(16), help="channels of the tiny backbone's c2 stage")
        p.add_argument("--fpn-channels", type=int, default=dd(64), help="feature pyramid channels (a multiple of "
                       "32: the FCOS head uses GroupNorm with 32 groups)")
        p.add_argument("--head-convs", type=positive_int, default=dd(2), help="conv layers in each FCOS head tower")
        p.add_argument("--epochs", type=positive_int, default=dd(36),
                       help="most epochs (early stopping may end sooner)")
        p.add_argument("--patience", type=positive_int, default=dd(8),
                       help="epochs without improvement before stopping")
        p.add_argument("--batch-size", type=positive_int, default=dd(8), help="images per batch")
        p.add_argument("--lr", type=float, default=dd(3e-3), help="AdamW peak learning rate (warm-up, cosine decay)")
        p.add_argument("--val-frac", type=fraction, default=dd(0.1), help="share of the images for validation "
                       "when there is no val/ folder")
        p.add_argument("--test-frac", type=fraction, default=dd(0.15), help="share of the images for the test when "
                       "there is no test/ folder")
    p_train.add_argument("--resume", action="store_true", help="continue the run saved in --ckpt-dir")
    parser.add_argument("--demo-scenes", type=positive_int, default=400, help="scenes the demo generates")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # NumPy's seed range (torch takes any 64-bit integer)
        parser.error(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the README's GPU section)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if not 32 <= args.image_size <= 2048:
        parser.error(f"--image-size must be between 32 and 2048, got {args.image_size}")
    for flag, path in (("--out-dir", args.out_dir), ("--ckpt-dir", getattr(args, "ckpt_dir", None)),
                       ("--data-dir", getattr(args, "data_dir", None))):
        existing = next((p for p in (path, *path.parents) if p.exists()), None) if path is not None else None
        if existing is not None and not existing.is_dir():  # a file where a folder must be (or be made)
            parser.error(f"{flag} {path} is a file: it must be a folder" if existing == path else
                         f"{flag} {path}: {existing} is a file, so no folder can be made there")
    if args.fpn_channels < 32 or args.fpn_channels % 32:
        parser.error(f"--fpn-channels must be a positive multiple of 32, got {args.fpn_channels}")
    if args.width < 2 or args.width % 2:
        parser.error(f"--width must be an even number, got {args.width}")
    for name, default in (("resume", False), ("split", "test"), ("score_threshold", 0.5), ("nms_iou", 0.5)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.smoke and args.command is None:
        args.epochs = min(args.epochs, 2)
    return args


def print_next_commands(args, ckpt_dir: Path) -> None:
    """After `train`: evaluate and predict with this run's --data and --ckpt-dir, ready to paste."""
    config = json.loads((ckpt_dir / "config.json").read_text())
    held = config["split_files"].get("test")
    example = args.data / held[0] if held else args.data / "test" / "images"
    script = Path(__file__).resolve()
    try:
        script = script.relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    me, q = f"python {shlex.quote(str(script))}", lambda p: shlex.quote(str(p))
    print("\nnext: the test split, looked at once, then detections on your own images:")
    print(f"  {me} evaluate --data {q(args.data)} --ckpt-dir {q(ckpt_dir)}")
    print(f"  {me} predict --images {q(example)} --ckpt-dir {q(ckpt_dir)} --score-threshold 0.5")


def run_command(args, device: torch.device) -> dict:
    """The subcommand (or, with none, the demo) -> its metrics."""
    if args.command is None:
        return run_demo(args, device)
    ckpt = args.ckpt_dir or args.out_dir / "checkpoint"
    if args.command == "train":
        metrics = {k: v for k, v in train(args, device, args.data, ckpt).items() if k != "history"}
        print_next_commands(args, ckpt)
        return metrics
    if args.command == "evaluate":
        return evaluate(args, device, args.data, ckpt, args.out_dir)
    return predict(args, device, args.images, ckpt, args.output or args.out_dir / "predictions.json")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, start = pick_device(args.device), time.perf_counter()
    seed_everything(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{PROJECT}: device {device}, seed {args.seed}{', smoke' if args.smoke else ''}, torch {torch.__version__}")
    try:
        metrics = run_command(args, device)
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)            # one line for a person; exit status 1
        raise SystemExit(1) from None
    record = dict(metrics=metrics, torch_version=torch.__version__, device=str(device), seed=args.seed,
                  smoke=args.smoke, command=args.command or "demo", wall_time_s=time.perf_counter() - start)
    atomic_write(args.out_dir / "metrics.json", lambda p: p.write_text(json.dumps(record, indent=2, allow_nan=False)))
    print(f"\nmetrics: {args.out_dir / 'metrics.json'}  ({record['wall_time_s']:.1f} s)")
    return metrics


if __name__ == "__main__":
    main()

"""Loading a pretrained model the current way, and what a weights file really is.

Sections:
1. Loading: torchvision.models.get_model("resnet18", weights=ResNet18_Weights.DEFAULT). The weights= enum replaced
   the old pretrained=True flag (deprecated in torchvision 0.13): it names *which* weights, and carries their
   preprocessing (weights.transforms()) and metadata (weights.meta["categories"], accuracy, FLOPs). The file is
   downloaded into --data-dir (this lesson points torch.hub there for the call). Offline, or with --smoke, the
   lesson says so in one line and uses a stand-in: a small ResNet it pretrains itself on 52 rendered letters
   (16 fonts shipped with matplotlib, random colours and jitter), cached under --data-dir as a state-dict file
   whose name carries its sha256 prefix, checked on load as torch.hub's check_hash checks downloads. The other
   lessons of this module load that file; when it is missing they run this lesson with --standin-only to make it.
   --smoke without the file pretrains a short version instead (12 letters, white on black, 80 steps).
2. Preprocessing from the weights: weights.transforms() (resize, crop, ImageNet mean/std) on a real photo,
   matplotlib's grace_hopper.jpg.
3. Inference: model.eval() (BatchNorm uses its running statistics, dropout is off) inside torch.inference_mode();
   the top-5 classes with their softmax probabilities, and how much train mode would change the output.
4. A weights file is a state dict (parameter name -> tensor): load_state_dict(strict=True) and the report of
   missing and unexpected keys when the model and the file disagree (a new head, an extra tensor).
5. Why torch.load(..., weights_only=True): a pickle can run code; weights_only refuses anything but tensors and
   plain containers. A corrupted file is caught by its hash.
6. Where the cache lives: torch.hub.get_dir(), and TORCH_HOME to move it.

Run it:
    python 08-transfer-learning/01_pretrained_models.py             # ImageNet resnet18 if it can be had
    python 08-transfer-learning/01_pretrained_models.py --offline   # the stand-in, no download attempt

Takes a few seconds with the ImageNet weights cached; offline about 10 seconds on a 2-core CPU the first time
(pretraining the stand-in), a few seconds after that. What to look for: the top-5 list with probabilities
summing to at most 1; "missing keys: ['fc.weight', 'fc.bias']" when the head changes; weights_only refusing a
pickled object; the hub directory following TORCH_HOME.
"""

import argparse
import contextlib
import copy
import hashlib
import io
import json
import os
import pickle
import random
import re
import string
import time
from collections import OrderedDict
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib import cbook
from PIL import Image, ImageDraw, ImageFont
from torchvision.models import get_model, get_model_weights
from torchvision.models.resnet import BasicBlock
from torchvision.transforms import v2

MODEL_NAME = "resnet18"


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
                        help="where the model runs; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="never downloads; a short stand-in pretraining")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/08-transfer-learning/01_pretrained_models"),
                        help="where metrics.json and the saved state dict are written")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="weights cache: torchvision's files under <data-dir>/hub/checkpoints, the stand-in here")
    parser.add_argument("--offline", action="store_true", help="do not try to download the ImageNet weights")
    parser.add_argument("--image", type=Path, default=None,
                        help="photo to classify (default: matplotlib's sample grace_hopper.jpg)")
    parser.add_argument("--topk", type=int, default=5, help="how many classes to list")
    parser.add_argument("--standin-only", action="store_true",
                        help="only make (or check) the cached stand-in under --data-dir, then stop: what lessons "
                        "02, 03 and 06 run when they find no stand-in")
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
    if not 1 <= args.topk <= 52:
        parser.error("--topk must be between 1 and 52 (the stand-in has 52 categories)")
    if args.image is not None and not args.image.is_file():
        parser.error(f"--image {args.image}: no such file")
    return args


# ---- The stand-in backbone. The other lessons of this module load the file this code caches; when it is absent
# they run this file with --standin-only to make it (one recipe, one file). ----
FONT_FILES = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSerif", "DejaVuSerif-Bold",
              "DejaVuSerif-Italic", "DejaVuSansMono", "DejaVuSansMono-Bold", "STIXGeneral", "STIXGeneralBol",
              "STIXGeneralItalic", "cmr10", "cmss10", "cmtt10", "cmb10", "cmti10")  # shipped with matplotlib
LETTERS = string.ascii_letters  # the stand-in's 52 source categories
STANDIN_MEAN, STANDIN_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # its normalisation, as ImageNet's is resnet18's
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.pt$")  # torch.hub's convention: <name>-<sha256 prefix>.<ext>
# name -> (images, steps, batch, letters, random colours). The full recipe is the stand-in; the smoke recipe is a
# short pretraining (12 letters, white on black: random colours take hundreds of steps to get going) for --smoke
# runs that find no full file.
RECIPES = {"standin_glyphs_tinyresnet": (6000, 600, 64, 52, True),
           "standin_glyphs_tinyresnet_smoke": (800, 80, 16, 12, False)}


def glyph_templates(chars: str, side: int = 40) -> torch.Tensor:
    """Each character drawn in each of matplotlib's fonts: (fonts, chars, side, side) ink in [0, 1]."""
    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    out = torch.zeros(len(FONT_FILES), len(chars), side, side)
    for f, name in enumerate(FONT_FILES):
        font = ImageFont.truetype(str(root / f"{name}.ttf"), int(side * 0.75))
        for c, ch in enumerate(chars):
            img = Image.new("L", (side, side))
            ImageDraw.Draw(img).text((side / 2, side / 2), ch, fill=255, font=font, anchor="mm")
            out[f, c] = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255)
    return out


def colourise(ink: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(n, 1, s, s) ink in [0, 1] -> (n, 3, s, s): random ink and paper colours (kept apart), a little noise."""
    n, s = ink.shape[0], ink.shape[-1]
    fg, bg = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
    bg = torch.where((fg - bg).abs().mean(1, keepdim=True) < 0.35, 1 - fg, bg)
    return (bg + (fg - bg) * ink + 0.05 * torch.randn(n, 3, s, s, generator=g)).clamp(0, 1)


def render_glyphs(templates: torch.Tensor, n: int, g: torch.Generator, colour: bool = True):
    """n normalised images (n, 3, 32, 32) of random fonts and classes, rotated/scaled/sheared/shifted, in random
    colours (or white on black), and their labels."""
    f = torch.randint(templates.shape[0], (n,), generator=g)
    y = torch.randint(templates.shape[1], (n,), generator=g)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
    a, s, shear = u(-0.3, 0.3), u(0.8, 1.25), u(-0.3, 0.3)
    theta = torch.stack([torch.stack([s * a.cos(), -s * a.sin() + shear, u(-0.15, 0.15)], 1),
                         torch.stack([s * a.sin(), s * a.cos(), u(-0.15, 0.15)], 1)], 1)  # (n, 2, 3)
    grid = F.affine_grid(theta, [n, 1, 32, 32], align_corners=False)
    ink = F.grid_sample(templates[f, y][:, None], grid, align_corners=False)  # (n, 1, 32, 32)
    x = colourise(ink, g) if colour else ink.expand(-1, 3, -1, -1)
    return (x - torch.tensor(STANDIN_MEAN).view(1, 3, 1, 1)) / torch.tensor(STANDIN_STD).view(1, 3, 1, 1), y


def tiny_resnet(num_classes: int = len(LETTERS), width: int = 16) -> nn.Sequential:
    """The stand-in: torchvision's ResNet layout and names (conv1, bn1, relu, layer1-3, avgpool, fc) with one
    torchvision BasicBlock per stage, widths 16-32-64, for 32x32 inputs: the same code (replace fc, freeze layer1,
    hook layer3) works on it and on resnet18. (B, 3, 32, 32) -> (B, num_classes)."""
    def stage(cin: int) -> BasicBlock:  # halves the resolution, doubles the width
        block = BasicBlock(cin, 2 * cin, stride=2)
        block.downsample = nn.Sequential(nn.Conv2d(cin, 2 * cin, 1, 2, bias=False), nn.BatchNorm2d(2 * cin))
        return block

    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, width, 3, 2, 1, bias=False), bn1=nn.BatchNorm2d(width), relu=nn.ReLU(),
        layer1=BasicBlock(width, width), layer2=stage(width), layer3=stage(2 * width),  # (B, 64, 4, 4)
        avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(4 * width, num_classes)))


def load_cached(data_dir: Path, name: str, model: nn.Module, device) -> Path | None:
    """Load <data_dir>/<name>-<sha256 prefix>.pt into model if its sha256 starts with the prefix in its name (what
    torch.hub's check_hash does for downloads); a file that fails the check is deleted. Returns the path or None."""
    for path in sorted(Path(data_dir).glob(f"{name}-*.pt")):
        digest, named = hashlib.sha256(path.read_bytes()).hexdigest(), HASH_IN_NAME.search(path.name)
        if named and digest.startswith(named.group(1)):
            model.load_state_dict(torch.load(path, map_location=device, weights_only=True))  # tensors only
            print(f"stand-in backbone loaded from {path} (sha256 {digest[:8]} checked)")
            return path
        print(f"{path}: sha256 {digest[:8]} does not match its name (corrupt file); re-creating it")
        path.unlink()
    return None


def pretrain(name: str, data_dir: Path, device) -> nn.Module:
    """Pretrain the stand-in with RECIPES[name] (fixed seeds: one artifact, like a published weights file) and save
    its state dict atomically as <data_dir>/<name>-<first 8 hex digits of its sha256>.pt."""
    n, steps, batch, classes, colour = RECIPES[name]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = tiny_resnet().to(device)
    x, y = render_glyphs(glyph_templates(LETTERS[:classes]), n, g, colour)
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-2, total_steps=steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(n, (batch,), generator=g).to(device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
    path = Path(data_dir) / f"{name}-{hashlib.sha256(buffer.getvalue()).hexdigest()[:8]}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written weights file
    print(f"stand-in backbone pretrained ({steps} steps of {batch} on {n} images of {classes} rendered letters"
          f"{' in random colours' if colour else ', white on black'}) and cached at {path}")
    return model


def standin_backbone(data_dir: Path, device, smoke: bool):
    """The stand-in and the name of its recipe: the full file if cached (and intact), else, under --smoke, the smoke
    file if cached, else pretrained now (the smoke recipe under --smoke, the full one otherwise) and cached."""
    names = ["standin_glyphs_tinyresnet"] + (["standin_glyphs_tinyresnet_smoke"] if smoke else [])
    model = tiny_resnet().to(device)
    for name in names:
        if load_cached(data_dir, name, model, device):
            return model.eval(), name
    return pretrain(names[-1], data_dir, device).eval(), names[-1]
# ---- end of the stand-in ----


@contextlib.contextmanager
def torch_home(path: Path):
    """TORCH_HOME=path inside the block: torch.hub.get_dir() is then <path>/hub, so get_model(weights=...) finds or
    downloads its file in <path>/hub/checkpoints; the old value is put back after. (torch.hub.set_dir would work too,
    but for good: once it is called, torch.hub ignores TORCH_HOME for the rest of the process.)"""
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(Path(path).resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = previous


def load_imagenet(name: str, data_dir: Path, device):
    """get_model with its DEFAULT weights, cached in <data_dir>/hub/checkpoints."""
    weights = get_model_weights(name).DEFAULT
    with torch_home(data_dir):
        model = get_model(name, weights=weights)  # downloads to <data_dir>/hub/checkpoints/<file> unless there
    return model.to(device).eval(), weights


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    metrics = {}
    if args.standin_only:  # lessons 02, 03 and 06 run this when their --data-dir holds no stand-in
        model, recipe = standin_backbone(args.data_dir, device, args.smoke)
        metrics.update(standin_source_classes=RECIPES[recipe][3], num_params=sum(p.numel() for p in model.parameters()))
        record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
                  "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
        print(f"stand-in ready; metrics written to {args.out_dir / 'metrics.json'}")
        return metrics

    section("1. Loading a pretrained model: weights= enums")
    weights_enum = get_model_weights(MODEL_NAME)
    print(f"{weights_enum.__name__}: {[w.name for w in weights_enum]}; DEFAULT = {weights_enum.DEFAULT.name}")
    print("old: resnet18(pretrained=True)   (a bool: which weights? what preprocessing? deprecated in 0.13)")
    print("new: get_model('resnet18', weights=ResNet18_Weights.DEFAULT)   (or weights='DEFAULT', or weights=None)")
    model, weights = None, None
    if args.smoke or args.offline:
        print(f"{'--smoke' if args.smoke else '--offline'}: no download; using the stand-in backbone")
    else:
        try:
            model, weights = load_imagenet(MODEL_NAME, args.data_dir, device)
            print(f"loaded {weights} from {args.data_dir / 'hub' / 'checkpoints' / Path(weights.url).name}")
        except Exception as err:  # offline, or a broken download
            print(f"ImageNet weights unavailable ({type(err).__name__}: {' '.join(str(err).split())[:70]}); "
                  "using the stand-in backbone")
    if model is None:
        model, recipe = standin_backbone(args.data_dir, device, args.smoke)
        categories = list(LETTERS)
        preprocess = v2.Compose([v2.Resize(36, antialias=True), v2.CenterCrop(32), v2.ToImage(),
                                 v2.ToDtype(torch.float32, scale=True), v2.Normalize(STANDIN_MEAN, STANDIN_STD)])
        _, _, _, classes, colour = RECIPES[recipe]
        g = torch.Generator().manual_seed(1)  # not the training seed: images the stand-in never saw
        x_src, y_src = render_glyphs(glyph_templates(LETTERS[:classes]), 500, g, colour)
        with torch.inference_mode():
            src_acc = (model(x_src.to(device)).argmax(1).cpu() == y_src).float().mean().item()
        print(f"stand-in accuracy on 500 new rendered letters ({LETTERS[0]}-{LETTERS[classes - 1]}, as in its "
              f"pretraining): {src_acc:.1%} (chance {1 / classes:.1%})")
        metrics.update(standin_source_acc=src_acc, standin_source_classes=classes)
    else:
        categories = weights.meta["categories"]
        preprocess = weights.transforms()
        print(f"published accuracy: {weights.meta['_metrics']['ImageNet-1K']}; {weights.meta['_ops']} GFLOPs")
    n_params = sum(p.numel() for p in model.parameters())
    kind = type(model).__name__ if weights is not None else "the stand-in (tiny_resnet)"
    print(f"{kind}: {n_params:,} parameters, {len(categories)} categories, e.g. {categories[:3]}")
    metrics.update(used_pretrained_weights=int(weights is not None), num_categories=len(categories),
                   num_params=n_params)

    section("2. Preprocessing comes with the weights")
    where = "weights.transforms()" if weights else "the stand-in's equivalent"
    print(f"preprocess = {where}:\n{preprocess}")
    path = args.image or Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    try:
        image = Image.open(path).convert("RGB")
    except OSError as err:
        raise SystemExit(f"cannot read {path} as an image: {err}") from None
    batch = preprocess(image).unsqueeze(0).to(device)  # (1, 3, H, W)
    scale = ("ImageNet's mean and std: 0 is ImageNet's average, not this photo's" if weights is not None else
             f"the stand-in's fixed constants, mean {STANDIN_MEAN[0]} and std {STANDIN_STD[0]}")
    print(f"{path.name}: {image.size[0]}x{image.size[1]} photo -> tensor {tuple(batch.shape)}, "
          f"channel means {[round(v, 2) for v in batch.mean((0, 2, 3)).tolist()]} (normalised with {scale}; the "
          "network expects inputs on the scale it was trained on)")

    section("3. Inference: eval() and inference_mode()")
    model.eval()  # BatchNorm: running statistics; Dropout: off
    with torch.inference_mode():  # no autograd bookkeeping at all (faster than no_grad, tensors can't join a graph)
        logits = model(batch)  # (1, num_categories)
        probs = logits.softmax(dim=1)[0]
    top = probs.topk(args.topk)
    if weights is None:
        print("(offline: the stand-in knows letters, not photos; the code path is the same as with ImageNet)")
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"  {p:7.2%}  {categories[i]}")
    scratch_copy = copy.deepcopy(model).train()  # a copy: a train-mode forward also updates the running stats
    with torch.inference_mode():
        train_mode = scratch_copy(batch.expand(2, -1, -1, -1)).softmax(1)[0]  # BatchNorm uses this batch's stats
    eval_vs_train = (train_mode - probs).abs().max().item()
    print(f"top-{args.topk} probability mass {top.values.sum().item():.3f}; all {len(categories)} sum to "
          f"{probs.sum().item():.6f}; logits.is_inference() = {logits.is_inference()}")
    print(f"the same image in train mode: probabilities change by up to {eval_vs_train:.3f} (forget eval() and this "
          "is what you get)")
    metrics.update(top1_prob=top.values[0].item(), topk_prob_mass=top.values.sum().item(),
                   prob_sum_error=abs(probs.sum().item() - 1), eval_vs_train_max_abs_diff=eval_vs_train,
                   output_is_inference=int(logits.is_inference()))

    section("4. A weights file is a state dict")
    state = model.state_dict()
    print(f"{len(state)} entries (name -> tensor), e.g.:")
    for name in list(state)[:3] + list(state)[-2:]:
        print(f"  {name:28s} {tuple(state[name].shape)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    saved = args.out_dir / "weights.pt"
    tmp = saved.with_name("weights.pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, saved)  # a crash never leaves a half-written file
    loaded = torch.load(saved, map_location=device, weights_only=True)
    twin = tiny_resnet() if weights is None else get_model(MODEL_NAME, weights=None)
    twin.to(device).load_state_dict(loaded)  # strict=True: every key must match exactly
    with torch.inference_mode():
        reload_diff = (twin.eval()(batch) - logits).abs().max().item()
    print(f"saved {saved}, loaded with weights_only=True into a fresh model: outputs differ by {reload_diff:.1e}")
    new_head = tiny_resnet(num_classes=10) if weights is None else get_model(MODEL_NAME, weights=None, num_classes=10)
    try:
        new_head.load_state_dict(loaded)
        strict_error = 0
    except RuntimeError as err:
        strict_error = 1
        print(f"strict load into a 10-class model: RuntimeError: {str(err).splitlines()[1].strip()[:90]}")
    body_only = {k: v for k, v in loaded.items() if not k.startswith("fc.")}
    body_only["extra.running_var"] = torch.ones(1)  # a key the model does not have
    report = new_head.load_state_dict(body_only, strict=False)
    print(f"strict=False without the old head: missing keys {report.missing_keys}, unexpected keys "
          f"{report.unexpected_keys} -> the backbone is loaded, the new head keeps its fresh init")
    metrics.update(state_dict_entries=len(state), reload_max_abs_diff=reload_diff, strict_mismatch_raised=strict_error,
                   missing_keys=len(report.missing_keys), unexpected_keys=len(report.unexpected_keys))

    section("5. Why weights_only=True")
    evil = args.out_dir / "not_just_weights.pt"
    torch.save({"weights": state["fc.bias"], "payload": print}, evil)  # a pickle may reference any callable
    try:
        torch.load(evil, weights_only=True)
        refused = 0
    except pickle.UnpicklingError as err:
        refused = 1
        why = [line for line in str(err).splitlines() if "Unsupported global" in line] or [str(err)[:80]]
        print(f"weights_only=True refused it: {why[0].strip()[:110]}")
    print("a pickle names functions to call while loading; weights_only allows only tensors and plain containers")
    corrupt = args.out_dir / "standin_demo-00000000.pt"
    corrupt.write_bytes(saved.read_bytes()[:-10])  # a truncated download: its sha256 no longer matches the name
    digest = hashlib.sha256(corrupt.read_bytes()).hexdigest()
    caught = int(not digest.startswith(HASH_IN_NAME.search(corrupt.name).group(1)))
    print(f"a truncated copy named *-00000000.pt has sha256 {digest[:8]}...: corruption detected = {bool(caught)}")
    metrics.update(weights_only_refused_pickle=refused, hash_check_caught_corruption=caught)

    section("6. Where the cache lives")
    print(f"torch.hub.get_dir() = {torch.hub.get_dir()}  (files under <that>/checkpoints)")
    with torch_home(args.data_dir / "torch_home"):
        follows = torch.hub.get_dir() == str((args.data_dir / "torch_home").resolve() / "hub")
        print(f"with TORCH_HOME={os.environ['TORCH_HOME']}: {torch.hub.get_dir()}")
    print(f"this lesson's own download (section 1) sets TORCH_HOME={args.data_dir} the same way, so the file is "
          f"{args.data_dir / 'hub' / 'checkpoints'}/<name>-<sha256 prefix>.pth")
    metrics["hub_dir_follows_torch_home"] = int(follows)

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- weights= names the exact weights and brings their transforms() and meta; pretrained=True did neither.")
    print("- eval() + inference_mode() for predictions; train mode changes the outputs through BatchNorm.")
    print("- A weights file is a dict of tensors: strict=False plus the missing/unexpected report swaps a head safely.")
    print("- torch.load(weights_only=True) always; a sha256 prefix in the filename catches a corrupt download.")
    return metrics


if __name__ == "__main__":
    main()

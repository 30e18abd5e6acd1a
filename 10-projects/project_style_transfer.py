"""Project: paint your photo in the style of another image (Gatys et al. 2016), with the transfer measured.

Neural style transfer optimises the pixels of an image so that a CNN's features match the content image's (content
loss: the feature maps themselves) and the style image's (style loss: Gram matrices, the correlations between a
layer's channels, which keep textures and colours and forget where things are), plus a total-variation term that
keeps the result smooth. Nothing is trained: the network is fixed and the image is the parameter.

The feature network: VGG-19 with its ImageNet weights (torchvision's VGG19_Weights.IMAGENET1K_V1, downloaded once
into --data-dir) when they can be had; offline (or with --smoke, or --features random) a CNN with random weights.
Random filters are enough for texture and style statistics: Ustyuzhaninov et al. 2016, "Texture Synthesis Using
Shallow Convolutional Networks with Random Filters", and He, Wang and Hopcroft 2016, "A Powerful Generative Model
Using Random Weights for the Deep Image Representation". This project measures it rather than trusting it: the style
(Gram) distance from the result to the style image, against the content image's own distance, on the network that
was optimised AND on a second random network it never saw (so the match is not a quirk of one set of filters), and
the colour statistics (per-channel mean and spread) of the result against the style image's.

Run it:
    python 10-projects/project_style_transfer.py                   # the demo: Grace Hopper in a generated style
    python 10-projects/project_style_transfer.py --content photo.jpg --style painting.jpg --output out.png
    python 10-projects/project_style_transfer.py stylize --content photo.jpg --style painting.jpg --size 256
    python 10-projects/project_style_transfer.py evaluate --content photo.jpg --style painting.jpg --result out.png
Photos are read upright, as their EXIF orientation tag says (as viewers show them); transparent pixels are laid on
white. --output's suffix picks the format: .png, or .jpg/.jpeg for JPEG.

The demo takes about 10 s on an idle 2-core laptop CPU at --size 128 (--smoke: seconds at 48 px). Its content image
is Grace Hopper's portrait from matplotlib's sample data; its style image, colourful waves, is generated and written
as a PNG under --data-dir. What to look for: the style distance falling by a large factor while the content loss
stays small; the held-out network agreeing; the side-by-side figure content | style | result; the loss curves.
On a GPU the optimisation runs there (VGG-19 at 512 px is practical there, not on a CPU).
"""

import argparse
import json
import math
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

PROJECT = "project_style_transfer"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_STYLE = (1, 6, 11, 20, 29)        # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in vgg19().features
VGG_CONTENT = 22                      # relu4_2


class ProjectError(Exception):
    """A bad image or flag combination: a message meant for a person, one line."""


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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp creates 0600; a saved file gets the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------------------------------- images


def load_image(path: Path, size: int, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1]: the longer side resized to `size`, or to exactly `shape` (H, W) when given. The photo
    is turned upright as its EXIF orientation tag says (as viewers show it: a phone stores a portrait as landscape
    pixels plus that tag), and transparent pixels are laid on white (not the black their RGB values often hold)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not Path(path).is_file():
        raise ProjectError(f"no such image file: {path}")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
                im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
            im = im.convert("RGB")
            w, h = im.size
            if shape is None:
                scale = size / max(w, h)
                shape = (max(8, round(h * scale)), max(8, round(w * scale)))
            im = im.resize((shape[1], shape[0]), Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ProjectError(f"{path} is not a readable image ({err.__class__.__name__})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}   # --output's suffix names the file's format


def save_image(path: Path, img: torch.Tensor) -> None:
    """PNG or JPEG (quality 95), as the file name's suffix says."""
    from PIL import Image

    arr = (img[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    fmt = SAVE_FORMATS[path.suffix.lower()]
    atomic_write(path, lambda p: Image.fromarray(arr).save(p, format=fmt, **({"quality": 95} if fmt == "JPEG" else {})))


def write_waves_style(path: Path, size: int = 256) -> None:
    """A colourful style image: interfering sine waves mapped through bright hues, with brush-like stripes."""
    y, x = np.mgrid[0:size, 0:size] / size
    a = np.sin(2 * np.pi * (3 * x + 1.5 * np.sin(2 * np.pi * y)))
    b = np.sin(2 * np.pi * (5 * y + 0.8 * np.cos(2 * np.pi * 2 * x)))
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 24 * (x + 0.3 * y))
    rgb = np.stack([0.5 + 0.5 * a, 0.5 + 0.5 * b * a, 0.5 - 0.5 * b], axis=2)
    rgb = np.clip(rgb * (0.6 + 0.4 * stripes[..., None]), 0, 1)
    from PIL import Image

    arr = (rgb * 255).astype(np.uint8)
    atomic_write(path, lambda p: Image.fromarray(arr).save(p, format="PNG"))


# --------------------------------------------------------------------------------------------- feature networks


class RandomFeatures(nn.Module):
    """A fixed CNN with random filters: three conv+ReLU blocks with average pooling (max pooling makes noisier
    gradients for pixel optimisation). Style from every block, content from the second."""

    def __init__(self, seed: int, widths=(64, 128, 256)):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        layers, c_in = [], 3
        for k, c in enumerate(widths):
            conv = nn.Conv2d(c_in, c, 3, padding=1)
            with torch.no_grad():   # He initialisation: activations keep their scale through the random layers
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2 / (c_in * 9)))
                conv.bias.zero_()
            layers += [conv, nn.ReLU()] + ([nn.AvgPool2d(2)] if k < len(widths) - 1 else [])
            c_in = c
        self.net = nn.Sequential(*layers)
        self.style_layers = tuple(i for i, m in enumerate(self.net) if isinstance(m, nn.ReLU))
        self.content_layer = self.style_layers[1]
        self.requires_grad_(False)

    def normalise(self, x):
        return x - 0.5

    def forward(self, x):
        return run_layers(self.net, self.normalise(x), self.style_layers, self.content_layer)


class VGGFeatures(nn.Module):
    """VGG-19's convolutional part, ImageNet weights, up to relu5_1; max pooling swapped for average pooling, as
    Gatys et al. suggest for smoother results."""

    def __init__(self, state_dict: dict):
        super().__init__()
        from torchvision.models import vgg19

        vgg = vgg19(weights=None)
        vgg.load_state_dict(state_dict)
        feats = vgg.features[: VGG_STYLE[-1] + 1]
        self.net = nn.Sequential(*[nn.AvgPool2d(2) if isinstance(m, nn.MaxPool2d) else m for m in feats])
        for m in self.net:
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.style_layers, self.content_layer = VGG_STYLE, VGG_CONTENT
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x):
        return run_layers(self.net, (x - self.mean) / self.std, self.style_layers, self.content_layer)


def run_layers(net, x, style_layers, content_layer):
    styles, content = [], None
    for i, layer in enumerate(net):
        x = layer(x)
        if i in style_layers:
            styles.append(x)
        if i == content_layer:
            content = x
        if i >= max(max(style_layers), content_layer):
            break
    return styles, content


def feature_network(args, device) -> tuple[nn.Module, str]:
    """VGG-19 with ImageNet weights when available; the random-filter network otherwise, said in one line."""
    if args.features in ("auto", "vgg19") and not (args.smoke or args.offline):
        try:
            from torchvision.models import VGG19_Weights

            weights_dir = args.data_dir / "weights"
            state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(model_dir=str(weights_dir), progress=False)
            print(f"features: VGG-19, ImageNet weights (cached in {weights_dir})")
            return VGGFeatures(state).to(device).eval(), "vgg19"
        except Exception as err:
            if args.features == "vgg19":
                raise ProjectError(f"VGG-19 weights could not be loaded ({str(err).splitlines()[0][:100]})") from None
            print(f"features: VGG-19 weights not available ({str(err).splitlines()[0][:80]}); using a CNN with "
                  "random filters (random filters capture style: see the docstring)")
    else:
        why = "--smoke" if args.smoke else "--offline" if args.offline else "--features random"
        print(f"features: a CNN with random filters ({why}; random filters capture style: see the docstring)")
    return RandomFeatures(args.seed).to(device).eval(), "random"


# ------------------------------------------------------------------------------------------------ the losses


def gram(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) channel correlations, divided by C*H*W so layers of any size weigh alike."""
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def style_distance(net, img: torch.Tensor, style_grams: list) -> float:
    """Sum over style layers of the squared Gram difference, relative to the style's own Gram size."""
    with torch.no_grad():
        styles, _ = net(img)
        return float(sum(((gram(f) - g) ** 2).sum() / (g ** 2).sum() for f, g in zip(styles, style_grams)))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def colour_stats(img: torch.Tensor) -> np.ndarray:
    x = img[0].reshape(3, -1)
    return torch.cat([x.mean(1), x.std(1)]).cpu().numpy()


def stylize(net, content: torch.Tensor, style: torch.Tensor, steps: int, lr: float, style_weight: float,
            tv_weight: float, log_every: int = 25) -> tuple[torch.Tensor, dict]:
    """Adam on the pixels, starting from the content image. Both losses are relative (content: squared error over the
    content features' own size; style: Gram error over the style Grams' size), so one --style-weight suits any
    network. Returns the image and the loss history."""
    with torch.no_grad():
        style_grams = [gram(f) for f in net(style)[0]]
        target = net(content)[1]
    scale = (target ** 2).mean()
    img = content.clone().requires_grad_(True)
    opt = torch.optim.Adam([img], lr=lr)
    history = {"step": [], "content": [], "style": []}
    for step in range(steps + 1):
        styles, feats = net(img)
        c_loss = ((feats - target) ** 2).mean() / scale
        s_loss = sum(((gram(f) - g) ** 2).sum() / (g ** 2).sum() for f, g in zip(styles, style_grams))
        if step % log_every == 0 or step == steps:
            history["step"].append(step)
            history["content"].append(c_loss.item())
            history["style"].append(s_loss.item())
            print(f"  step {step:>4}/{steps}: content loss {history['content'][-1]:.4f}  style loss "
                  f"{history['style'][-1]:.4f}")
        if step == steps:
            break
        loss = c_loss + style_weight * s_loss + tv_weight * total_variation(img)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            img.clamp_(0, 1)
    return img.detach(), history


def measure(nets: dict, content, style, result) -> dict:
    """Style distances (result and, for reference, the content image itself) on each network; colour statistics."""
    out = {}
    for name, net in nets.items():
        with torch.no_grad():
            grams = [gram(f) for f in net(style)[0]]
        out[f"{name}_style_dist_content"] = style_distance(net, content, grams)
        out[f"{name}_style_dist_result"] = style_distance(net, result, grams)
        out[f"{name}_style_reduction"] = out[f"{name}_style_dist_content"] / max(out[f"{name}_style_dist_result"],
                                                                                1e-12)
    s = colour_stats(style)
    out["colour_dist_content"] = float(np.abs(colour_stats(content) - s).mean())
    out["colour_dist_result"] = float(np.abs(colour_stats(result) - s).mean())
    return out


def plot_losses(path: Path, history: dict) -> None:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.plot(history["step"], history["style"], marker="o", label="style loss (relative Gram error)")
    ax.plot(history["step"], history["content"], marker="o", label="content loss (relative feature error)")
    ax.set_yscale("log")
    ax.set(title="Style transfer: losses during the optimisation", xlabel="Adam step on the pixels",
           ylabel="loss (log scale)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))


def plot_side_by_side(path: Path, content, style, result, caption: str) -> None:
    fig = Figure(figsize=(10, 3.8))
    for k, (img, title) in enumerate(((content, "content"), (style, "style"), (result, f"result: {caption}"))):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.imshow(img[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))


# ------------------------------------------------------------------------------------------- the subcommands


VGG_MIN_SIDE = 16    # VGG-19 halves the image 4 times before relu5_1: a side under 16 px leaves nothing to pool


def check_size(kind: str, img: torch.Tensor, path: Path, size: int) -> None:
    """Refuse, before any work, an image too thin for VGG-19 once its longer side is resized to --size."""
    h, w = img.shape[-2:]
    if kind == "vgg19" and min(h, w) < VGG_MIN_SIDE:
        raise ProjectError(f"{path} becomes {w}x{h} px at --size {size}; VGG-19 needs both sides at least "
                           f"{VGG_MIN_SIDE} px: raise --size to {math.ceil(size * VGG_MIN_SIDE / min(h, w))} or crop "
                           "the image")


def run_stylize(args, device, content_path: Path, style_path: Path, output: Path) -> dict:
    content = load_image(content_path, args.size)
    style = load_image(style_path, args.size, shape=tuple(content.shape[-2:]))
    print(f"content {content_path} and style {style_path}, both at {content.shape[-1]}x{content.shape[-2]} px")
    net, kind = feature_network(args, device)
    check_size(kind, content, content_path, args.size)
    content, style = content.to(device), style.to(device)
    start = time.perf_counter()
    result, history = stylize(net, content, style, args.steps, args.lr, args.style_weight, args.tv_weight)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    save_image(output, result)
    print(f"stylised image: {output}  ({args.steps} steps in {seconds:.1f} s)")
    saved = load_image(output, args.size, shape=tuple(content.shape[-2:])).to(device)   # 8-bit, JPEG-compressed
    judge = RandomFeatures(args.seed + 1000).to(device).eval()       # never optimised against: a fair second opinion
    m = measure({kind: net, "heldout_random": judge}, content, style, saved)  # the file, as `evaluate` scores it
    print(f"style distance to the style image ({kind} features): content image {m[f'{kind}_style_dist_content']:.4f}"
          f" -> result {m[f'{kind}_style_dist_result']:.4f} ({m[f'{kind}_style_reduction']:.1f}x smaller)")
    print(f"on a held-out random network it never saw: {m['heldout_random_style_dist_content']:.4f} -> "
          f"{m['heldout_random_style_dist_result']:.4f} ({m['heldout_random_style_reduction']:.1f}x smaller)")
    print(f"colour statistics (mean |difference| of channel means and spreads to the style's): content "
          f"{m['colour_dist_content']:.3f}, result {m['colour_dist_result']:.3f}")
    stem = output.with_suffix("")
    plot_losses(Path(f"{stem}_losses.png"), history)
    plot_side_by_side(Path(f"{stem}_side_by_side.png"), content, style, result,
                      f"{kind} features, {args.steps} steps")
    print(f"loss curves: {stem}_losses.png; side by side: {stem}_side_by_side.png")
    return {**m, "features_are_vgg19": kind == "vgg19", "content_loss_final": history["content"][-1],
            "style_loss_first": history["style"][0], "style_loss_final": history["style"][-1],
            "stylize_time_s": seconds, "height": int(content.shape[-2]), "width": int(content.shape[-1])}


def run_evaluate(args, device, content_path: Path, style_path: Path, result_path: Path) -> dict:
    """Score an existing result (yours, or another tool's) against its content and style images."""
    result = load_image(result_path, args.size)
    shape = tuple(result.shape[-2:])
    content, style = load_image(content_path, args.size, shape), load_image(style_path, args.size, shape)
    net, kind = feature_network(args, device)
    check_size(kind, result, result_path, args.size)
    judge = RandomFeatures(args.seed + 1000).to(device).eval()
    content, style, result = content.to(device), style.to(device), result.to(device)
    m = measure({kind: net, "heldout_random": judge}, content, style, result)
    with torch.no_grad():
        c_loss = float(((net(result)[1] - net(content)[1]) ** 2).mean() / (net(content)[1] ** 2).mean())
    print(f"{result_path} against content {content_path} and style {style_path} ({shape[1]}x{shape[0]} px):")
    for name in (kind, "heldout_random"):
        print(f"  style distance on {name} features: content image {m[f'{name}_style_dist_content']:.4f}, result "
              f"{m[f'{name}_style_dist_result']:.4f} ({m[f'{name}_style_reduction']:.1f}x closer to the style)")
    print(f"  content loss of the result: {c_loss:.4f}; colour distance to the style: content "
          f"{m['colour_dist_content']:.3f}, result {m['colour_dist_result']:.3f}")
    return {**m, "content_loss": c_loss}


def run_demo(args, device) -> dict:
    from matplotlib.cbook import get_sample_data

    section("Demo images")
    content_path = Path(get_sample_data("grace_hopper.jpg", asfileobj=False))
    style_path = args.data_dir / "style_transfer" / "waves.png"
    write_waves_style(style_path)
    print(f"content: {content_path} (matplotlib sample data); style: {style_path} (generated)")
    section("Stylize: optimise the pixels")
    output = args.out_dir / "stylized.png"
    metrics = run_stylize(args, device, content_path, style_path, output)
    section("Evaluate the saved PNG, as for any result")
    ev = run_evaluate(args, device, content_path, style_path, output)
    metrics["evaluate_heldout_reduction"] = ev["heldout_random_style_reduction"]
    kind = "vgg19" if metrics["features_are_vgg19"] else "random"
    metrics["style_reduction"] = metrics[f"{kind}_style_reduction"]
    section("What to notice")
    print(f"- The style loss fell from {metrics['style_loss_first']:.4f} to {metrics['style_loss_final']:.4f} "
          f"({metrics['style_loss_first'] / max(metrics['style_loss_final'], 1e-12):.0f}x); the content loss rose "
          f"from 0 to {metrics['content_loss_final']:.4f} (relative feature error): --style-weight trades one for "
          "the other.")
    print(f"- A network never optimised against agrees: the result is "
          f"{metrics['heldout_random_style_reduction']:.1f}x closer to the style's Gram statistics than the photo.")
    if kind == "random":
        print("- These features come from random filters: no training at all, and the style still transfers.")
    section("Your own images")
    me = "python 10-projects/project_style_transfer.py"
    print(f"{me} --content photo.jpg --style painting.jpg --output out.png --size 256")
    print(f"{me} evaluate --content photo.jpg --style painting.jpg --result out.png")
    return metrics


# -------------------------------------------------------------------------------------------------- the CLI


def add_common(parser: argparse.ArgumentParser, sub: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)
    parser.add_argument("--device", default=d("auto"), choices=["auto", "cpu", "cuda", "mps"],
                        help="where to optimise; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=d(0), help="seed for torch, numpy, random and the random filters")
    parser.add_argument("--smoke", action="store_true", default=d(False),
                        help="the demo in tiny form: a few seconds on a CPU, never the network")
    parser.add_argument("--offline", action="store_true", default=d(False), help="never try to download VGG-19")
    parser.add_argument("--out-dir", type=Path, default=d(Path("outputs/10-projects/project_style_transfer")),
                        help="where metrics.json, the result and the plots go")
    parser.add_argument("--data-dir", type=Path, default=d(Path("data")),
                        help="where VGG-19 weights are cached and the demo writes its style image")
    parser.add_argument("--features", choices=["auto", "vgg19", "random"], default=d("auto"),
                        help="auto: VGG-19 with ImageNet weights when available, else random filters")
    parser.add_argument("--size", type=int, default=d(128), help="longer side of the images, in pixels")
    parser.add_argument("--steps", type=int, default=d(300), help="Adam steps on the pixels")
    parser.add_argument("--lr", type=float, default=d(0.02), help="Adam step size (pixels live in [0, 1])")
    parser.add_argument("--style-weight", type=float, default=d(20.0), help="weight of the style loss")
    parser.add_argument("--tv-weight", type=float, default=d(0.05), help="weight of the total-variation loss")


def print_next_command(args, output: Path) -> None:
    """After stylizing: the evaluate command for this result, with this run's images and flags, ready to paste."""
    script = Path(__file__).resolve()
    try:
        script = script.relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    flags = (" --offline" if args.offline or args.smoke else "") + (
        f" --features {args.features}" if args.features != "auto" else "")
    print("\nnext: score this result (or another tool's) against its content and style:")
    print(f"  python {q(script)} evaluate --content {q(args.content)} --style {q(args.style)} --result {q(output)} "
          f"--size {args.size}{flags}")


OUTPUT_HELP = "result image, PNG or JPEG as its suffix says (.png, .jpg, .jpeg); default <out-dir>/stylized.png"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common(parser, sub=False)
    parser.add_argument("--content", type=Path, default=None, help="content image (with --style: stylize it)")
    parser.add_argument("--style", type=Path, default=None, help="style image")
    parser.add_argument("--output", type=Path, default=None, help=OUTPUT_HELP)
    subs = parser.add_subparsers(dest="command", metavar="{stylize,evaluate}",
                                 help="with no command and no --content: the whole demo")
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p_sty = subs.add_parser("stylize", help="optimise an image: content of one, style of the other",
                            formatter_class=fmt)
    p_ev = subs.add_parser("evaluate", help="measure a result against its content and style", formatter_class=fmt)
    for p in (p_sty, p_ev):
        add_common(p, sub=True)
        p.add_argument("--content", type=Path, required=True, help="content image")
        p.add_argument("--style", type=Path, required=True, help="style image")
    p_sty.add_argument("--output", type=Path, default=None, help=OUTPUT_HELP)
    p_ev.add_argument("--result", type=Path, required=True, help="the stylised image to score")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # NumPy's seed range (torch takes any 64-bit integer)
        parser.error(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the README's GPU section)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    for flag, path in (("--out-dir", args.out_dir), ("--ckpt-dir", getattr(args, "ckpt_dir", None)),
                       ("--data-dir", getattr(args, "data_dir", None))):
        existing = next((p for p in (path, *path.parents) if p.exists()), None) if path is not None else None
        if existing is not None and not existing.is_dir():  # a file where a folder must be (or be made)
            parser.error(f"{flag} {path} is a file: it must be a folder" if existing == path else
                         f"{flag} {path}: {existing} is a file, so no folder can be made there")
    if args.command is None and (args.content is None) != (args.style is None):
        parser.error("give both --content and --style (or neither, for the demo)")
    output = getattr(args, "output", None)
    if output is not None and output.is_dir():
        parser.error(f"--output {output} is a folder; give a file name such as {output / 'stylized.png'}")
    if output is not None and output.suffix.lower() not in SAVE_FORMATS:
        parser.error(f"--output {output}: the suffix names the format; give a file name ending in .png, .jpg or "
                     ".jpeg")
    if args.size < 32:
        parser.error(f"--size must be at least 32 pixels, got {args.size}")
    if args.steps < 1 or args.lr <= 0 or args.style_weight < 0 or args.tv_weight < 0:
        parser.error("--steps must be at least 1, --lr positive, --style-weight and --tv-weight not negative")
    if args.smoke and args.command is None and args.content is None:
        args.size, args.steps = min(args.size, 48), min(args.steps, 60)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.device)
    seed_everything(args.seed)
    start = time.perf_counter()
    print(f"{PROJECT}: device {device}, seed {args.seed}{', smoke' if args.smoke else ''}, torch {torch.__version__}")
    try:
        if args.command == "evaluate":
            metrics = run_evaluate(args, device, args.content, args.style, args.result)
        elif args.command == "stylize" or args.content is not None:
            output = getattr(args, "output", None) or args.out_dir / "stylized.png"
            metrics = run_stylize(args, device, args.content, args.style, output)
            print_next_command(args, output)
        else:
            metrics = run_demo(args, device)
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "command": args.command or ("stylize" if args.content else "demo"),
              "wall_time_s": time.perf_counter() - start}
    atomic_write(args.out_dir / "metrics.json", lambda p: p.write_text(json.dumps(record, indent=2)))
    print(f"\nmetrics: {args.out_dir / 'metrics.json'}  ({record['wall_time_s']:.1f} s)")
    return metrics


if __name__ == "__main__":
    main()

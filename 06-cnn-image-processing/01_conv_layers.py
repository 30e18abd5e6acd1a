"""Convolution, opened up: nn.Conv2d is "unfold the patches, then one matrix multiply".

Sections:
1. Convolution by hand: F.unfold cuts every receptive field into a column, a matmul with the flattened kernels
   gives the output; it matches nn.Conv2d (stride, padding, dilation and groups included) to float32 rounding.
2. The output-size formula  out = floor((in + 2*padding - dilation*(kernel-1) - 1) / stride) + 1, checked against
   nn.Conv2d over a grid of stride x padding x dilation x groups x kernel configurations, together with the
   parameter count out_ch * (in_ch / groups) * k * k + out_ch. Also: how often the naive (in - k) / s + 1 is wrong.
3. Classic hand-made kernels (Sobel x/y, box and Gaussian blur, Laplacian, sharpen) run with F.conv2d on a drawn
   image, with the facts they are known for measured, and a PNG of every response.
4. Cost: unfold materialises k*k copies of the input; the timing and memory of both paths.

Run it:
    python 06-cnn-image-processing/01_conv_layers.py
    python 06-cnn-image-processing/01_conv_layers.py --device cuda --size 256

Takes about 5 seconds on a 2-core CPU (--smoke: about 3 s). What to look for: max abs differences around 1e-6, "0
mismatches" for the formula, the Sobel-y response exactly 0 on a vertical edge, and kernels.png under the out dir.
"""

import argparse
import itertools
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image, ImageDraw


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
                        help="where the convolutions run; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a second or two")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/06-cnn-image-processing/01_conv_layers"),
                        help="where metrics.json and kernels.png are written")
    parser.add_argument("--size", type=int, default=128, help="side of the drawn test image, pixels")
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
    if args.size < 16:
        parser.error("--size must be at least 16")
    return args


def conv_out_size(n: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Spatial output size of a convolution (or pooling) along one axis."""
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def conv2d_unfold(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """nn.Conv2d's forward, as unfold + matmul. x (B, C, H, W), weight (O, C/groups, kh, kw)."""
    b, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (B, C*kh*kw, L)
    h_out, w_out = conv_out_size(h, kh, stride, padding, dilation), conv_out_size(w, kw, stride, padding, dilation)
    # unfold orders rows channel-major, so each group's channels are one contiguous block of rows
    cols = cols.view(b, groups, cg * kh * kw, h_out * w_out)  # (B, G, C/G*kh*kw, L)
    kernels = weight.view(groups, o // groups, cg * kh * kw)  # (G, O/G, C/G*kh*kw)
    out = torch.einsum("gok,bgkl->bgol", kernels, cols).reshape(b, o, h_out, w_out)  # (B, O, H', W')
    return out if bias is None else out + bias.view(1, o, 1, 1)


def draw_test_image(size: int) -> torch.Tensor:
    """A grayscale scene with straight edges, a disc and fine text: (1, 1, size, size) in [0, 1]."""
    img = Image.new("L", (size, size), 30)
    d = ImageDraw.Draw(img)
    s = size
    d.rectangle([s // 8, s // 8, s // 2, s // 2], fill=200)
    d.ellipse([s // 2, s // 3, s - s // 10, s - s // 10], fill=120, outline=255, width=max(1, s // 64))
    d.line([0, s - 1, s - 1, s // 2], fill=255, width=max(1, s // 40))
    d.text((s // 10, int(s * 0.7)), "conv", fill=240)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None, None]


def classic_kernels() -> dict:
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    g = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    return {
        "sobel_x": sobel_x,
        "sobel_y": sobel_x.T.contiguous(),
        "box_blur_5": torch.full((5, 5), 1 / 25),
        "gaussian_5": torch.outer(g, g) / 256,
        "laplacian": torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]),
        "sharpen": torch.tensor([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]),
    }


def total_variation(img: torch.Tensor) -> float:
    """Mean absolute difference between neighbours: how much fine detail an image has."""
    vertical = (img[..., 1:, :] - img[..., :-1, :]).abs().mean()
    horizontal = (img[..., :, 1:] - img[..., :, :-1]).abs().mean()
    return (vertical + horizontal).item()


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (CUDA or Apple's MPS), so that a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn, device, repeats: int) -> float:
    fn()  # warm-up: first calls pay for allocation and kernel selection
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    size = 48 if args.smoke else args.size
    metrics = {}

    section("1. Convolution = unfold + matmul")
    cases = [  # (in_ch, out_ch, kernel, stride, padding, dilation, groups)
        (3, 8, 3, 1, 0, 1, 1), (3, 8, 3, 1, 1, 1, 1), (4, 6, 5, 2, 2, 1, 1),
        (4, 8, 3, 1, 2, 2, 1), (6, 9, 3, 2, 1, 1, 3), (8, 8, 3, 1, 1, 1, 8),  # last: depthwise
    ]
    worst = 0.0
    # On CUDA, cuDNN runs float32 convolutions in TF32 by default (10-bit mantissa inputs): ~1e-3 relative error,
    # which would hide a real bug. Full float32 for this comparison only; the previous setting comes back after it.
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for cin, cout, k, s, p, d, g in cases:
            conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g).to(device)
            x = torch.randn(2, cin, 17, 19, device=device)  # (B, C, H, W); odd sizes catch off-by-ones
            with torch.no_grad():
                ref = conv(x)
                mine = conv2d_unfold(x, conv.weight, conv.bias, s, p, d, g)
            diff = (ref - mine).abs().max().item()
            worst = max(worst, diff)
            print(f"  in={cin} out={cout} k={k} stride={s} pad={p} dil={d} groups={g}: output {tuple(ref.shape)}, "
                  f"max |nn.Conv2d - unfold@W| = {diff:.2e}")
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    print(f"worst max abs difference over {len(cases)} configurations: {worst:.2e}")
    if device.type == "cuda":
        print("(compared with torch.backends.cudnn.allow_tf32 = False: cuDNN's default TF32 convolutions differ "
              "from float32 by ~1e-3 relative; they are on again for the rest of the lesson)")
    metrics.update(unfold_conv_max_abs_diff=worst, unfold_conv_cases=len(cases))

    section("2. The output-size formula and the parameter count")
    grid = list(itertools.product([9, 16], [1, 3, 5], [1, 2, 3], [0, 1, 2], [1, 2], [1, 2, 4]))
    mismatches = naive_wrong = checked = 0
    for n, k, s, p, d, g in grid:
        if conv_out_size(n, k, s, p, d) < 1:
            continue  # the kernel does not fit: nn.Conv2d raises, as it should
        conv = nn.Conv2d(4, 8, k, stride=s, padding=p, dilation=d, groups=g, device="meta")  # shapes only
        out = conv(torch.empty(1, 4, n, n, device="meta"))
        expected_params = 8 * (4 // g) * k * k + 8
        params = sum(q.numel() for q in conv.parameters())
        checked += 1
        mismatches += (out.shape[-1] != conv_out_size(n, k, s, p, d)) + (params != expected_params)
        naive_wrong += out.shape[-1] != (n - k) // s + 1
    print("out = floor((in + 2p - d(k-1) - 1) / s) + 1 and params = out_ch*(in_ch/groups)*k*k + out_ch:")
    print(f"  {checked} configurations checked on the meta device (shapes without data), {mismatches} mismatches")
    print(f"  the naive (in - k) // s + 1, which forgets padding and dilation, is wrong for {naive_wrong} of them")
    print("  groups never change the spatial size; they divide the weights by `groups`")
    same = nn.Conv2d(1, 1, 5, padding="same")(torch.zeros(1, 1, 9, 9)).shape[-1]
    print(f"  padding='same' (stride 1) keeps the size: {same} of 9")
    metrics.update(formula_configs_checked=checked, formula_mismatches=int(mismatches),
                   naive_formula_wrong=int(naive_wrong))

    section("3. Classic kernels on an image")
    image = draw_test_image(size).to(device)  # (1, 1, H, W)
    kernels = classic_kernels()
    responses = {}
    for name, k in kernels.items():
        responses[name] = F.conv2d(image, k.to(device)[None, None], padding=k.shape[-1] // 2)  # (1, 1, H, W)
    responses["edge_magnitude"] = torch.sqrt(responses["sobel_x"] ** 2 + responses["sobel_y"] ** 2)
    step = torch.zeros(1, 1, 16, 16, device=device)
    step[..., 8:] = 1.0  # a vertical edge: dark left, bright right
    sx = F.conv2d(step, kernels["sobel_x"].to(device)[None, None])
    sy = F.conv2d(step, kernels["sobel_y"].to(device)[None, None])
    blur = F.conv2d(image, kernels["gaussian_5"].to(device)[None, None])
    interior = image[..., 2:-2, 2:-2]
    tv_before, tv_after = total_variation(interior), total_variation(blur)
    print(f"vertical step edge: max Sobel-x = {sx.max().item():.1f} (1+2+1), "
          f"max |Sobel-y| = {sy.abs().max().item():.1f}")
    print(f"Gaussian blur keeps the mean ({interior.mean().item():.4f} -> {blur.mean().item():.4f}: weights sum to 1) "
          f"and cuts total variation {tv_before:.4f} -> {tv_after:.4f}")
    flat = torch.full((1, 1, 8, 8), 0.7, device=device)
    lap_flat = F.conv2d(flat, kernels["laplacian"].to(device)[None, None]).abs().max().item()
    print(f"Laplacian of a constant image: {lap_flat:.1e} (weights sum to 0: it only sees change)")
    fig = Figure(figsize=(12, 6.5))
    panels = {"input": image, **responses}
    for i, (name, r) in enumerate(panels.items()):
        ax = fig.add_subplot(2, 4, i + 1)
        ax.imshow(r[0, 0].cpu().numpy(), cmap="gray")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle("Hand-made 3x3 and 5x5 kernels applied with F.conv2d (grey: response, not to a common scale)")
    fig.tight_layout()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = args.out_dir / "kernels.png"
    fig.savefig(png, dpi=80)
    print(f"every response side by side: {png}")
    metrics.update(sobel_x_step_max=sx.max().item(), sobel_y_step_max_abs=sy.abs().max().item(),
                   blur_mean_change=abs(blur.mean().item() - interior.mean().item()),
                   tv_before_blur=tv_before, tv_after_blur=tv_after, laplacian_flat_max_abs=lap_flat)

    section("4. What unfold costs")
    batch, ch = (2, 8) if args.smoke else (8, 32)
    x = torch.randn(batch, ch, size, size, device=device)  # (B, C, H, W)
    conv = nn.Conv2d(ch, ch, 3, padding=1).to(device)
    with torch.no_grad():
        t_conv = timed(lambda: conv(x), device, 2 if args.smoke else 5)
        t_unfold = timed(lambda: conv2d_unfold(x, conv.weight, conv.bias, 1, 1), device, 2 if args.smoke else 5)
    blowup = F.unfold(x[:1], 3, padding=1).numel() / x[:1].numel()
    print(f"input {tuple(x.shape)}: nn.Conv2d {t_conv:.2f} ms, unfold+matmul {t_unfold:.2f} ms")
    print(f"the unfolded columns hold {blowup:.0f}x the input's numbers (one copy per kernel tap): that memory is "
          "why libraries use implicit GEMM, Winograd or FFT kernels instead")
    metrics.update(nn_conv_ms=t_conv, unfold_conv_ms=t_unfold, unfold_memory_blowup=blowup)

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- A convolution is a matrix multiply over patches: same weights at every position (weight sharing).")
    print("- Padding, dilation and stride all enter the size formula; forgetting padding is the classic bug.")
    print("- groups=in_ch (depthwise) divides parameters by in_ch without changing the output size.")
    print("- Hand-made kernels are what the first layer of a trained CNN tends to rediscover: edges and blobs.")
    return metrics


if __name__ == "__main__":
    main()

"""Pooling layers: max and average pooling by hand, adaptive and global pooling, and receptive fields.

Sections:
1. Max and average pooling by hand (unfold the windows, take max / mean) equal F.max_pool2d / F.avg_pool2d, with
   stride, padding (max pads with -inf; avg counts the zero padding unless count_include_pad=False) and ceil_mode.
2. Adaptive average pooling: output cell i averages input rows floor(i*H/out) .. ceil((i+1)*H/out), so the windows
   overlap when H is not a multiple of out; by hand it equals nn.AdaptiveAvgPool2d.
3. Global average pooling (AdaptiveAvgPool2d(1) == mean over H and W) makes one network accept any image size.
4. Receptive-field arithmetic: r_out = r_in + (k - 1) * dilation * jump_in, jump_out = jump_in * stride, checked
   by backpropagating from one output pixel and measuring which input pixels got a gradient; PNG of that map.

Run it:
    python 06-cnn-image-processing/02_pooling_layers.py

Takes about 2 seconds on a 2-core CPU (--smoke too). What to look for: every "max abs diff" 0 or ~1e-7, the global-pool
network giving a (B, 10) output for 32x32 and 57x57 inputs, and the predicted receptive field equal to the measured
one.
"""

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure


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
                        help="where the pooling runs; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="smaller inputs, a second or two")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/06-cnn-image-processing/02_pooling_layers"),
                        help="where metrics.json and receptive_field.png are written")
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
    return args


def pool_out_size(n: int, k: int, stride: int, padding: int, ceil_mode: bool = False) -> int:
    rounding = math.ceil if ceil_mode else math.floor
    out = rounding((n + 2 * padding - k) / stride) + 1
    if ceil_mode and (out - 1) * stride >= n + padding:
        out -= 1  # PyTorch's rule: the last window must start inside the input or its left padding
    return out


def pool_by_hand(x, k: int, stride: int, padding: int = 0, mode: str = "max", ceil_mode: bool = False,
                 count_include_pad: bool = True):
    """Max or average pooling with unfold. x (B, C, H, W) -> (B, C, H', W')."""
    b, c, h, w = x.shape
    h_out, w_out = pool_out_size(h, k, stride, padding, ceil_mode), pool_out_size(w, k, stride, padding, ceil_mode)
    # pad enough on the right/bottom for ceil_mode's last, partial window
    extra_h = max(0, (h_out - 1) * stride + k - h - 2 * padding)
    extra_w = max(0, (w_out - 1) * stride + k - w - 2 * padding)
    fill = -math.inf if mode == "max" else 0.0
    xp = F.pad(x, (padding, padding + extra_w, padding, padding + extra_h), value=fill)
    windows = F.unfold(xp.reshape(b * c, 1, *xp.shape[-2:]), k, stride=stride)  # (B*C, k*k, L)
    if mode == "max":
        out = windows.max(dim=1).values
    else:
        ones = F.pad(torch.ones(1, 1, h, w, device=x.device), (0, extra_w, 0, extra_h))  # 1 = real pixel
        if count_include_pad:  # the symmetric zero padding counts, the ceil_mode overhang does not
            ones = F.pad(ones, (padding, padding, padding, padding), value=1.0)
        else:
            ones = F.pad(ones, (padding, padding, padding, padding), value=0.0)
        counts = F.unfold(ones, k, stride=stride).sum(dim=1)  # (1, L) how many cells each window averages
        out = windows.sum(dim=1) / counts
    return out.reshape(b, c, h_out, w_out)


def adaptive_avg_by_hand(x, out_h: int, out_w: int):
    """Cell (i, j) averages rows floor(i*H/out_h)..ceil((i+1)*H/out_h) and the same for columns."""
    h, w = x.shape[-2:]
    rows = []
    for i in range(out_h):
        r0, r1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)
        cols = [x[..., r0:r1, (j * w) // out_w: -((-(j + 1) * w) // out_w)].mean(dim=(-2, -1)) for j in range(out_w)]
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2)  # (B, C, out_h, out_w)


def receptive_field(layers) -> tuple[int, int]:
    """(receptive field, jump) of a stack of (kernel, stride, dilation) layers, seen from one output pixel."""
    r, jump = 1, 1
    for k, s, d in layers:
        r += (k - 1) * d * jump
        jump *= s
    return r, jump


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    metrics = {}

    section("1. Max and average pooling by hand")
    x = torch.randn(2, 3, 11, 13, device=device)  # (B, C, H, W), odd sizes on purpose
    worst_max = worst_avg = 0.0
    for k, s, p, ceil in [(2, 2, 0, False), (3, 2, 1, False), (3, 1, 1, False), (2, 2, 0, True), (3, 2, 1, True)]:
        ref_max = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
        d_max = (pool_by_hand(x, k, s, p, "max", ceil) - ref_max).abs().max().item()
        d_avg = max((pool_by_hand(x, k, s, p, "avg", ceil, cip) - F.avg_pool2d(x, k, s, p, ceil, cip))
                    .abs().max().item() for cip in (True, False))
        worst_max, worst_avg = max(worst_max, d_max), max(worst_avg, d_avg)
        print(f"  k={k} stride={s} pad={p} ceil_mode={ceil!s:<5}: output {tuple(ref_max.shape[-2:])}, "
              f"max abs diff max-pool {d_max:.1e}, avg-pool {d_avg:.1e}")
    print("padding a max pool uses -inf (a pad value must never win); avg pool divides by the window size unless "
          "count_include_pad=False")
    pooled, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    unpooled = F.max_unpool2d(pooled, idx, 2, 2, output_size=x.shape[-2:])
    kept = (unpooled != 0).float().mean().item()
    print(f"return_indices + max_unpool2d puts each max back where it came from: {kept:.1%} of cells nonzero "
          "(one per 2x2 window): the gradient of max pooling flows only to the winner")
    metrics.update(maxpool_max_abs_diff=worst_max, avgpool_max_abs_diff=worst_avg, unpool_nonzero_fraction=kept)

    section("2. Adaptive average pooling")
    worst_adaptive = 0.0
    for (h, w), (oh, ow) in [((10, 10), (3, 3)), ((7, 13), (2, 5)), ((8, 8), (4, 4)), ((5, 5), (7, 7))]:
        z = torch.randn(2, 3, h, w, device=device)
        diff = (adaptive_avg_by_hand(z, oh, ow) - F.adaptive_avg_pool2d(z, (oh, ow))).abs().max().item()
        worst_adaptive = max(worst_adaptive, diff)
        print(f"  {h}x{w} -> {oh}x{ow}: row windows {[((i * h) // oh, -((-(i + 1) * h) // oh)) for i in range(oh)]}, "
              f"max abs diff {diff:.1e}")
    z = torch.randn(2, 3, 10, 10, device=device)
    adaptive_max_diff = (F.adaptive_max_pool2d(z, 5) - F.max_pool2d(z, 2, 2)).abs().max().item()
    print(f"when the size divides evenly it is an ordinary pool: adaptive_max_pool2d(10->5) vs max_pool2d(2, 2): "
          f"{adaptive_max_diff:.1e}")
    metrics.update(adaptive_max_abs_diff=worst_adaptive, adaptive_vs_plain_max_abs_diff=adaptive_max_diff)

    section("3. Global average pooling: one network, any input size")
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).to(device)
    shapes = {}
    for side in (32, 57):
        shapes[side] = tuple(net(torch.randn(4, 3, side, side, device=device)).shape)
        print(f"  input 4x3x{side}x{side} -> output {shapes[side]}")
    feats = torch.randn(4, 32, 7, 9, device=device)
    gap_diff = (nn.AdaptiveAvgPool2d(1)(feats).flatten(1) - feats.mean(dim=(2, 3))).abs().max().item()
    print(f"AdaptiveAvgPool2d(1) is the mean over H and W (max abs diff {gap_diff:.1e}); a Flatten+Linear after a "
          "fixed-size feature map would have demanded one input size")
    metrics.update(gap_max_abs_diff=gap_diff, gap_any_size_ok=int(shapes[32] == shapes[57] == (4, 10)))

    section("4. Receptive fields")
    stack = [("conv3", 3, 1, 1), ("conv3", 3, 1, 1), ("maxpool2", 2, 2, 1), ("conv3", 3, 1, 1),
             ("conv3 dil2", 3, 1, 2), ("maxpool2", 2, 2, 1), ("conv3", 3, 1, 1)]
    print(f"  {'layer':<11}{'r':>4}{'jump':>6}")
    for i in range(1, len(stack) + 1):
        r, j = receptive_field([(k, s, d) for _, k, s, d in stack[:i]])
        print(f"  {stack[i - 1][0]:<11}{r:>4}{j:>6}")
    predicted, jump = receptive_field([(k, s, d) for _, k, s, d in stack])
    # the probe pools by averaging: max pooling would route the gradient to one winner per window and could
    # hide part of the field; both have the same window, so the same receptive field
    modules = [nn.Conv2d(1, 1, k, dilation=d) if name.startswith("conv") else nn.AvgPool2d(k, s)
               for name, k, s, d in stack]
    probe = nn.Sequential(*modules).to(device)
    for m in probe:
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0)  # positive weights: no gradient cancels by accident
            nn.init.zeros_(m.bias)
    side = 48 if args.smoke else 64
    img = torch.rand(1, 1, side, side, device=device, requires_grad=True)
    out = probe(img)  # (1, 1, h, w)
    out[0, 0, out.shape[-2] // 2, out.shape[-1] // 2].backward()  # one output pixel
    # every real path contributes at least 1/16 here; the threshold only ignores rounding from FFT/Winograd kernels
    reached = img.grad[0, 0].abs() > 1e-3  # (H, W) bool
    touched = reached.nonzero()
    measured = int((touched[:, 0].max() - touched[:, 0].min()).item()) + 1
    print(f"formula: receptive field {predicted} px, jump {jump} px between neighbouring outputs; "
          f"measured from the gradient of one output pixel: {measured} px")
    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    ax.imshow(reached.float().cpu().numpy(), cmap="viridis")
    ax.set_title(f"input pixels that reach one output: {measured}x{measured}")
    ax.set(xlabel="input column (pixels)", ylabel="input row (pixels)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = args.out_dir / "receptive_field.png"
    fig.savefig(png, dpi=80)
    print(f"the map: {png}")
    metrics.update(receptive_field_predicted=predicted, receptive_field_measured=measured, receptive_field_jump=jump)

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Pooling has no weights: it is a fixed reduction over windows, sized by the same formula as a conv.")
    print("- Each stride multiplies the jump, so later layers grow the receptive field much faster.")
    print("- Global average pooling is why modern CNNs (ResNet, ...) accept any input size.")
    return metrics


if __name__ == "__main__":
    main()

"""Fine-tuning strategies side by side on one target task, with the same budget, against training from scratch.

Sections:
1. The backbone (the stand-in of 01_pretrained_models.py, loaded from --data-dir or re-created there) and the
   target: scikit-learn's real handwritten digits in random colours, --shots labelled images per digit.
2. Six ways to use it, each given the same number of optimizer steps (--steps, batch 32 (16 under --smoke), AdamW):
   linear probe (backbone frozen, BatchNorm in eval mode, only the new head trains);
   full fine-tuning, BatchNorm kept in eval mode (its pretrained running statistics stay);
   full fine-tuning, BatchNorm in train mode (statistics re-estimated from these few images);
   gradual unfreezing (head first, then layer3, then everything, a new optimizer at each stage);
   discriminative learning rates (parameter groups: the deeper into the backbone, the smaller the step);
   from scratch (the same architecture, random weights).
   A table of test accuracy and wall time for each.
3. Where transfer pays most: accuracy against labelled images per digit (e.g. 5, 20, 100), transfer (the
   discriminative-LR fine-tune) against scratch, on the same test images as the table, plotted. At --shots
   images per digit the curve reuses the table's two runs.

Run it:
    python 08-transfer-learning/03_fine_tuning.py
    python 08-transfer-learning/03_fine_tuning.py --shots 50 --steps 300

Takes about 23 seconds on an idle 2-core CPU the first time (10 of them pretraining the stand-in), about 13 after
that; --smoke a few seconds.
What to look for: every transfer row far above scratch at 20 images per digit; the gap shrinking as labels grow.
"""

import argparse
import copy
import hashlib
import importlib.util
import json
import random
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from torchvision.models.resnet import BasicBlock


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


FEWEST_IMAGES_PER_DIGIT = 174  # scikit-learn's digits: 174 eights, 174-183 images of each digit


def test_per_digit(smoke: bool) -> int:
    """Test images per digit, the same for every run (the rest of each digit can train)."""
    return 30 if smoke else 60


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where the networks train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="few steps, two label budgets, fewer test images")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/08-transfer-learning/03_fine_tuning"),
                        help="where metrics.json and the plot are written")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where the stand-in backbone is cached")
    parser.add_argument("--shots", type=int, default=20, help="labelled images per digit for the strategy table")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps each strategy gets (the budget)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the new head")
    parser.add_argument("--curve-shots", type=int, nargs="+", default=[5, 20, 100],
                        help="labelled images per digit for the transfer-vs-scratch curve")
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
    most = FEWEST_IMAGES_PER_DIGIT - test_per_digit(args.smoke)  # what split() can give every digit
    if not all(1 <= s <= most for s in [args.shots, *args.curve_shots]):
        parser.error(f"--shots and --curve-shots must be between 1 and {most}: the rarest digit has "
                     f"{FEWEST_IMAGES_PER_DIGIT} images and {test_per_digit(args.smoke)} of each are kept for testing")
    if args.steps < 3 or args.lr <= 0:
        parser.error("--steps must be >= 3 (gradual unfreezing has three stages) and --lr > 0")
    return args


# ---- The stand-in backbone. 01_pretrained_models.py defines, pretrains and explains it and caches its state dict;
# this file keeps the architecture (a state dict needs its class, as resnet18's file needs torchvision's ResNet) and
# the loader, and asks 01 to make the file when it is absent. ----
STANDIN_MEAN, STANDIN_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # its normalisation, as ImageNet's is resnet18's


def tiny_resnet(num_classes: int = 52, width: int = 16) -> nn.Sequential:
    """01's stand-in: torchvision's ResNet names (conv1, bn1, relu, layer1-3, avgpool, fc), one torchvision
    BasicBlock per stage, widths 16-32-64. (B, 3, 32, 32) -> (B, num_classes)."""
    def stage(cin: int) -> BasicBlock:  # halves the resolution, doubles the width
        block = BasicBlock(cin, 2 * cin, stride=2)
        block.downsample = nn.Sequential(nn.Conv2d(cin, 2 * cin, 1, 2, bias=False), nn.BatchNorm2d(2 * cin))
        return block

    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, width, 3, 2, 1, bias=False), bn1=nn.BatchNorm2d(width), relu=nn.ReLU(),
        layer1=BasicBlock(width, width), layer2=stage(width), layer3=stage(2 * width),  # (B, 64, 4, 4)
        avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(4 * width, num_classes)))


def standin_backbone(data_dir: Path, device, smoke: bool, out_dir: Path, made: bool = False) -> nn.Module:
    """01's cached stand-in (<name>-<sha256 prefix>.pt, hash checked as torch.hub does, weights_only=True; --smoke
    also takes 01's short smoke version). When there is none, 01 makes it: `01_pretrained_models.py --standin-only`,
    its metrics.json under this lesson's <out_dir>/standin (nothing written under the current directory)."""
    names = ["standin_glyphs_tinyresnet"] + (["standin_glyphs_tinyresnet_smoke"] if smoke else [])
    for path in [p for name in names for p in sorted(Path(data_dir).glob(f"{name}-*.pt"))]:
        if hashlib.sha256(path.read_bytes()).hexdigest().startswith(path.stem.rsplit("-", 1)[-1]):
            model = tiny_resnet().to(device)
            model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
            print(f"stand-in backbone loaded from {path} (sha256 checked)")
            if "_smoke-" in path.name:
                print(f"  01's short --smoke version: its features transfer far less than the full stand-in's; "
                      f"`01_pretrained_models.py --standin-only --data-dir {data_dir}` makes that once (~10 s)")
            return model.eval()
    command = [sys.executable, str(Path(__file__).with_name("01_pretrained_models.py")), "--standin-only",
               "--data-dir", str(data_dir), "--out-dir", str(Path(out_dir) / "standin"),
               "--device", device.type] + (["--smoke"] if smoke else [])
    if made:  # 01 ran and still left no intact file
        raise SystemExit(f"could not make the stand-in under {data_dir} with 01_pretrained_models.py --standin-only")
    print(f"no intact stand-in under {data_dir}: making it with {' '.join(command[1:])}")
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"could not make the stand-in under {data_dir} with 01_pretrained_models.py --standin-only")
    return standin_backbone(data_dir, device, smoke, out_dir, made=True)  # cached now
# ---- end of the stand-in ----


def colourise(ink: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(n, 1, s, s) ink in [0, 1] -> (n, 3, s, s): random ink and paper colours (kept apart), a little noise."""
    n, s = ink.shape[0], ink.shape[-1]
    fg, bg = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
    bg = torch.where((fg - bg).abs().mean(1, keepdim=True) < 0.35, 1 - fg, bg)
    return (bg + (fg - bg) * ink + 0.05 * torch.randn(n, 3, s, s, generator=g)).clamp(0, 1)


def real_digits():
    """scikit-learn's 1,797 real handwritten digits: (1797, 8, 8) float32 in 0-16 and their labels. Read from the
    file sklearn.datasets.load_digits() reads (digits.csv.gz: 64 pixels, then the label) without importing
    scikit-learn, which would take about a second; load_digits itself if that file is not where it is expected."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return torch.tensor(digits.images, dtype=torch.float32), torch.tensor(digits.target)
    table = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.float32))  # (1797, 65)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].long()


def coloured_digits(g: torch.Generator):
    """scikit-learn's real handwritten digits (8x8, 0-16) as (1797, 3, 32, 32) colour images, and their labels."""
    images, labels = real_digits()
    ink = images[:, None] / 16  # (1797, 1, 8, 8)
    ink = F.interpolate(ink, size=32, mode="bilinear", align_corners=False).clamp(0, 1)
    x = colourise(ink, g)
    x = (x - torch.tensor(STANDIN_MEAN).view(1, 3, 1, 1)) / torch.tensor(STANDIN_STD).view(1, 3, 1, 1)
    return x, labels


def split(y: torch.Tensor, per_class: int, n_test_per_class: int, g: torch.Generator):
    """Stratified: the last n_test_per_class images of each class (after a shuffle) test, the first per_class train."""
    train, test = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test.append(idx[-n_test_per_class:])
        train.append(idx[:min(per_class, len(idx) - n_test_per_class)])
    return torch.cat(train), torch.cat(test)


def set_bn_eval(model: nn.Module) -> None:
    """BatchNorm layers use (and keep) their running statistics, even while the model is in train mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def train(model, params, x, y, steps: int, batch: int, g, bn_eval: bool) -> None:
    """AdamW on `params` (a list or parameter groups) for `steps` minibatch steps of `batch`."""
    optimizer = torch.optim.AdamW(params, weight_decay=1e-4)
    model.train()
    if bn_eval:
        set_bn_eval(model)
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=g).to(x.device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    hits = [model(x[i:i + 512]).argmax(1) == y[i:i + 512] for i in range(0, len(x), 512)]
    return torch.cat(hits).float().mean().item()


def with_new_head(backbone: nn.Module, seed: int) -> nn.Module:
    model = copy.deepcopy(backbone)
    torch.manual_seed(seed)  # the same new head for every strategy
    model.fc = nn.Linear(model.fc.in_features, 10).to(next(model.parameters()).device)
    return model


def run_strategy(name, backbone, x, y, steps, batch, lr, g, seed):
    """Train one strategy; return the model. Every strategy takes exactly `steps` optimizer steps."""
    if name == "scratch":
        torch.manual_seed(seed)
        model = tiny_resnet(num_classes=10).to(x.device)
        train(model, [{"params": model.parameters(), "lr": 3 * lr}], x, y, steps, batch, g, bn_eval=False)
        return model
    model = with_new_head(backbone, seed)
    if name == "linear probe":
        model.requires_grad_(False)
        model.fc.requires_grad_(True)
        train(model, [{"params": model.fc.parameters(), "lr": 10 * lr}], x, y, steps, batch, g, bn_eval=True)
    elif name in ("full fine-tune, BN eval", "full fine-tune, BN train"):
        train(model, [{"params": model.parameters(), "lr": lr}], x, y, steps, batch, g, bn_eval=name.endswith("eval"))
    elif name == "gradual unfreezing":
        stages = [["fc"], ["fc", "layer3"], ["fc", "layer3", "layer2", "layer1", "conv1", "bn1"]]
        for i, trainable in enumerate(stages):
            model.requires_grad_(False)
            for part in trainable:
                getattr(model, part).requires_grad_(True)
            params = [p for p in model.parameters() if p.requires_grad]  # only what trains goes to the optimizer
            n = steps // 3 + (1 if i < steps % 3 else 0)
            train(model, [{"params": params, "lr": lr * (10 if i == 0 else 1)}], x, y, n, batch, g, bn_eval=True)
    elif name == "discriminative LRs":
        depth = {"fc": 0, "layer3": 1, "layer2": 2, "layer1": 3, "conv1": 4, "bn1": 4}
        groups = [{"params": list(getattr(model, part).parameters()), "lr": 3 * lr * 0.3 ** d}
                  for part, d in depth.items()]  # head 3e-3, layer3 9e-4, layer2 2.7e-4, ...
        train(model, groups, x, y, steps, batch, g, bn_eval=True)
    return model


MARGIN = 0.05  # a difference in test accuracy this size counts (the table's test set: 300 or 600 images)
STRATEGIES = ("linear probe", "full fine-tune, BN eval", "full fine-tune, BN train", "gradual unfreezing",
              "discriminative LRs", "scratch")


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    steps, batch = (24, 16) if args.smoke else (args.steps, 32)
    curve_shots = sorted(set(args.curve_shots))[:2] if args.smoke else sorted(set(args.curve_shots))
    n_test = test_per_digit(args.smoke)
    metrics = {}

    section("1. Backbone and target task")
    backbone = standin_backbone(args.data_dir, device, args.smoke, args.out_dir)
    g = torch.Generator().manual_seed(args.seed)
    x_all, y_all = coloured_digits(g)
    x_all, y_all = x_all.to(device), y_all.to(device)
    split_seed = args.seed + 1  # one shuffle for the table and the curve: the same test images everywhere
    train_idx, test_idx = split(y_all.cpu(), args.shots, n_test, torch.Generator().manual_seed(split_seed))
    x, y, x_test, y_test = x_all[train_idx], y_all[train_idx], x_all[test_idx], y_all[test_idx]
    print(f"{len(x)} training images ({args.shots} per digit), {len(x_test)} test images; chance 10%; "
          f"every strategy gets {steps} steps of {batch}")

    section("2. The strategies, same budget")
    print(f"{'strategy':26s} {'test acc':>9s} {'time':>8s} {'trainable':>10s}")
    results = {}
    for name in STRATEGIES:
        t0 = time.perf_counter()
        model = run_strategy(name, backbone, x, y, steps, batch, args.lr, g, args.seed)
        seconds = time.perf_counter() - t0
        acc = accuracy(model, x_test, y_test)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        results[name] = acc
        print(f"{name:26s} {acc:9.1%} {seconds:7.2f}s {trainable:10,d}")
        key = name.replace(", ", "_").replace(" ", "_").lower()
        metrics[f"{key}_acc"] = acc
        metrics[f"{key}_s"] = seconds
    best = max((n for n in STRATEGIES if n != "scratch"), key=results.get)
    print(f"best: {best} ({results[best]:.1%}), {versus_scratch(results[best] - results['scratch'])}; "
          f"BatchNorm eval vs train in full fine-tuning: "
          f"{results['full fine-tune, BN eval'] - results['full fine-tune, BN train']:+.1%}")
    metrics["best_transfer_minus_scratch"] = results[best] - results["scratch"]

    section("3. Where transfer pays most: accuracy against labelled images per digit")
    curve = {"transfer": [], "scratch": []}
    for shots in curve_shots:
        tr, te = split(y_all.cpu(), shots, n_test, torch.Generator().manual_seed(split_seed))  # te: the table's
        for kind, name in (("transfer", "discriminative LRs"), ("scratch", "scratch")):
            if shots == args.shots:  # the same images, steps and strategy as the table: its runs are this point
                curve[kind].append(results[name])
                continue
            model = run_strategy(name, backbone, x_all[tr], y_all[tr], steps, batch, args.lr, g, args.seed)
            curve[kind].append(accuracy(model, x_all[te], y_all[te]))
        reused = "   (the table's runs)" if shots == args.shots else ""
        print(f"{shots:4d} per digit: transfer {curve['transfer'][-1]:6.1%}   scratch {curve['scratch'][-1]:6.1%}   "
              f"gap {curve['transfer'][-1] - curve['scratch'][-1]:+.1%}{reused}")
        metrics[f"transfer_acc_{shots}_shots"] = curve["transfer"][-1]
        metrics[f"scratch_acc_{shots}_shots"] = curve["scratch"][-1]
    gaps = [t - s for t, s in zip(curve["transfer"], curve["scratch"])]
    metrics.update(gap_smallest_shots=gaps[0], gap_largest_shots=gaps[-1])
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(curve_shots, curve["transfer"], "o-", label="transfer: pretrained, discriminative LRs")
    ax.plot(curve_shots, curve["scratch"], "s--", label="scratch: same network, random init")
    ax.axhline(0.1, color="gray", lw=0.8, label="chance")
    ax.set(xscale="log", xlabel="labelled training images per digit (log scale)", ylabel="test accuracy",
           title=f"Transfer vs scratch, {steps} steps each")
    ax.legend()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot = args.out_dir / "transfer_vs_scratch.png"
    fig.savefig(plot, dpi=120, bbox_inches="tight")
    later = (f", at {curve_shots[-1]} it is {gaps[-1]:+.1%}" if len(gaps) > 1
             else " (one point: --curve-shots had one value)")
    print(f"the gap at {curve_shots[0]} per digit is {gaps[0]:+.1%}{later}; plot: {plot}")

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    for line in notice(results, curve_shots, gaps, args.shots, args.data_dir):
        print(line)
    return metrics


def versus_scratch(diff: float) -> str:
    """The best transfer row against scratch, in words that match the sign: over, below, or level."""
    if abs(diff) < 0.0005:
        return "level with scratch"
    return f"{diff:+.1%} over scratch" if diff > 0 else f"{-diff:.1%} below scratch"


def gap_trend(curve_shots: list, gaps: list) -> str:
    """What the transfer-minus-scratch gap did between the fewest and the most labels, said with the numbers."""
    first, last = gaps[0], gaps[-1]
    if len(gaps) == 1:
        return (f"- One point on the transfer-vs-scratch curve ({curve_shots[0]} per digit: gap {first:+.1%}): give "
                "--curve-shots two or more values to see how the gap moves with more labels.")
    where = f"{first:+.1%} at {curve_shots[0]} per digit, {last:+.1%} at {curve_shots[-1]}"
    if first > MARGIN and first > last + MARGIN:
        return (f"- Transfer paid most where labels were scarcest: {first:+.0%} over scratch at "
                f"{curve_shots[0]} per digit, {last:+.0%} at {curve_shots[-1]}; with more labels scratch catches up.")
    if first > last + MARGIN:
        return (f"- The transfer-minus-scratch gap fell with more labels in this run ({where}), but transfer did not "
                f"lead by {MARGIN * 100:.0f} points even at {curve_shots[0]} per digit: scratch pulled ahead, it did "
                "not catch up.")
    if last > first + MARGIN:
        return (f"- The transfer-minus-scratch gap grew with more labels in this run ({where}): transfer did not pay "
                "most where labels were scarcest here.")
    return (f"- The transfer-minus-scratch gap moved by less than {MARGIN * 100:.0f} points with more labels in this "
            f"run ({where}): no trend this lesson counts ({MARGIN * 100:.0f} points is its margin for a real "
            "difference).")


def notice(results: dict, curve_shots: list, gaps: list, shots: int, data_dir: Path) -> list:
    """The lessons of this run, each said only when this run's figures show it."""
    transfer = {n: a for n, a in results.items() if n != "scratch"}
    worst, scratch = min(transfer, key=transfer.get), results["scratch"]
    lines = []
    if transfer[worst] > scratch + MARGIN:
        lines.append(f"- With {shots} labels per digit, every way of reusing the backbone beat the same network "
                     f"trained from scratch ({scratch:.0%}): even the weakest, {worst}, by "
                     f"{transfer[worst] - scratch:+.0%}.")
    elif max(transfer.values()) <= scratch + MARGIN:
        lines.append(f"- No way of reusing the backbone beat scratch by {MARGIN * 100:.0f} points in this run "
                     f"(transfer {min(transfer.values()):.0%}-{max(transfer.values()):.0%}, scratch {scratch:.0%}, "
                     "chance 10%): these features did not transfer. 01's short --smoke stand-in (see section 1) "
                     "is too weak to; make the full one once with `python 08-transfer-learning/01_pretrained_models.py "
                     f"--standin-only --data-dir {data_dir}` (~10 s) and run this again.")
    else:
        lines.append(f"- Not every way of reusing the backbone beat scratch ({scratch:.0%}) in this run: {worst} "
                     f"reached {transfer[worst]:.0%}, the best {max(transfer.values()):.0%}.")
    lines.append("- Freezing means requires_grad False AND only trainable params in the optimizer AND BatchNorm in "
                 "eval.")
    dlr, full = results["discriminative LRs"], results["full fine-tune, BN eval"]
    lines.append(f"- Smaller steps deep in the backbone (parameter groups) are meant to keep what pretraining learned: "
                 f"discriminative LRs {dlr:.0%} against one LR for everything {full:.0%} in this run "
                 f"({dlr - full:+.0%}).")
    lines.append(gap_trend(curve_shots, gaps))
    return lines


if __name__ == "__main__":
    main()

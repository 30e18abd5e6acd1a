"""Fully connected layers: what nn.Linear computes, how it is initialised, and why initialisation matters with depth.

nn.Linear(in_features, out_features) stores weight (out, in) and bias (out,) and computes y = x @ W.T + b over any
number of leading dimensions. The lesson checks that formula against the layer, counts parameters, measures the
default initialisation's range, and then pushes a batch through a deep stack of layers under five initialisation
schemes, recording the standard deviation of the activations at every depth: too small and the signal dies, too
large and it explodes (or saturates tanh); Xavier (for tanh) and Kaiming (for ReLU) keep it steady.

Run it:
    python 04-neural-networks/02_linear_layers.py
    python 04-neural-networks/02_linear_layers.py --depth 50 --width 512

Takes about 3 s on a 2-core CPU. What to look for: max abs error ~1e-7 between nn.Linear and x @ W.T + b, and
in the depth table the last-layer std: ~0 for a normal init with std 0.01, huge for std 1, order 1 for Kaiming + ReLU.
"""

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn


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
                        help="where the layers run; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="shallow, narrow stack and a small batch")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/04-neural-networks/02_linear_layers"),
                        help="where metrics.json and the plot go")
    parser.add_argument("--depth", type=int, default=30, help="layers in the deep stack")
    parser.add_argument("--width", type=int, default=256, help="features per layer in the deep stack")
    parser.add_argument("--batch-size", type=int, default=512, help="rows pushed through the stack")
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
    for name in ("depth", "width", "batch_size"):
        if getattr(args, name) < 2:
            parser.error(f"--{name.replace('_', '-')} must be at least 2")
    return args


# scheme name -> the activation it is paired with; init_weight_ applies the scheme
SCHEMES = {"normal, std 0.01": "relu", "normal, std 1": "relu", "pytorch default": "relu", "xavier + tanh": "tanh",
           "kaiming + relu": "relu"}


def init_weight_(scheme: str, w: torch.Tensor) -> None:
    """Initialise a Linear weight (out, in) in place with the named scheme."""
    if scheme == "normal, std 0.01":
        nn.init.normal_(w, 0.0, 0.01)
    elif scheme == "normal, std 1":
        nn.init.normal_(w, 0.0, 1.0)
    elif scheme == "pytorch default":
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # what nn.Linear.reset_parameters does
    elif scheme == "xavier + tanh":
        nn.init.xavier_normal_(w)  # std sqrt(2 / (in + out))
    else:
        nn.init.kaiming_normal_(w, nonlinearity="relu")  # std sqrt(2 / in)


def activation_stds(depth: int, width: int, x: torch.Tensor, scheme: str) -> list[float]:
    """Std of the activations after each of `depth` Linear+activation layers initialised with `scheme`."""
    stds = []
    h = x  # (B, width)
    with torch.no_grad():
        for _ in range(depth):
            layer = nn.Linear(width, width).to(x.device)
            init_weight_(scheme, layer.weight)
            nn.init.zeros_(layer.bias)  # isolate the weights' effect
            h = layer(h)
            h = torch.relu(h) if SCHEMES[scheme] == "relu" else torch.tanh(h)
            stds.append(h.std().item())
    return stds


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    depth, width, batch = (8, 64, 64) if args.smoke else (args.depth, args.width, args.batch_size)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    section("nn.Linear is x @ W.T + b")
    layer = nn.Linear(5, 3).to(device)
    x = torch.randn(4, 5, device=device)  # (B, in)
    print(f"weight {tuple(layer.weight.shape)} = (out_features, in_features); bias {tuple(layer.bias.shape)}")
    by_hand = x @ layer.weight.T + layer.bias  # (4, 5) @ (5, 3) + (3,) -> (4, 3)
    linear_err = (layer(x) - by_hand).abs().max().item()
    functional_err = (F.linear(x, layer.weight, layer.bias) - layer(x)).abs().max().item()
    print(f"max |layer(x) - (x @ W.T + b)| = {linear_err:.1e};  F.linear differs by {functional_err:.1e}")
    seq = torch.randn(2, 7, 5, device=device)  # (B, T, in): Linear acts on the last dim only
    seq_err = (layer(seq) - (seq.reshape(-1, 5) @ layer.weight.T + layer.bias).reshape(2, 7, 3)).abs().max().item()
    print(f"on a (2, 7, 5) input the output is {tuple(layer(seq).shape)}; same as flattening the leading dims "
          f"(max diff {seq_err:.1e})")
    n_params = sum(p.numel() for p in layer.parameters())
    print(f"parameters: {n_params} = 5*3 weights + 3 biases; nn.Linear(5, 3, bias=False) has "
          f"{sum(p.numel() for p in nn.Linear(5, 3, bias=False).parameters())}")

    section("The default initialisation")
    big = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w_max = big.weight.abs().max().item()
    print(f"kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)): bound 1/sqrt(400) = {bound:.4f}, "
          f"largest |w| drawn = {w_max:.4f}; std {big.weight.std().item():.4f} vs theory "
          f"{bound / math.sqrt(3):.4f}")
    print("Why 1/sqrt(in): each output sums `in` products, so its variance grows with `in` unless w shrinks.")

    section(f"Activation std through {depth} layers of width {width}")
    x0 = torch.randn(batch, width, device=device)  # (B, width), std 1
    results = {}
    for name in SCHEMES:
        torch.manual_seed(args.seed)  # the same draws for every scheme
        results[name] = activation_stds(depth, width, x0, name)
    marks = sorted({0, depth // 4, depth // 2, depth - 1})
    print(f"{'scheme':<17}" + "".join(f"{'layer ' + str(i + 1):>12}" for i in marks))
    for name, stds in results.items():
        print(f"{name:<17}" + "".join(f"{stds[i]:>12.3g}" for i in marks))
    print("ReLU halves the variance (it zeroes half the inputs); Kaiming's std sqrt(2/in) doubles it back. Xavier's")
    print("sqrt(1/in) suits tanh (slope 1 at 0). The PyTorch default is ~sqrt(1/(3 in)), which shrinks a ReLU stack:")
    print("the layers that follow (normalisation, residuals) or an explicit init fix that in real models.")

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, stds in results.items():
        ax.semilogy(range(1, depth + 1), [max(s, 1e-30) for s in stds], marker=".", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel("std of activations (log scale)")
    ax.set_title("Initialisation and signal propagation")
    ax.legend()
    fig.tight_layout()
    plot_path = args.out_dir / "activation_std_by_depth.png"
    fig.savefig(plot_path, dpi=100)
    print(f"plot: {plot_path}")

    def last(name):
        return float(results[name][-1])

    metrics = {
        "linear_max_abs_error": linear_err, "functional_max_abs_error": functional_err,
        "batched_max_abs_error": seq_err, "n_parameters_linear_5_3": n_params,
        "default_init_bound": bound, "default_init_max_abs_weight": w_max, "depth": depth,
        "final_std_small_normal": last("normal, std 0.01"), "final_std_unit_normal": last("normal, std 1"),
        "final_std_pytorch_default": last("pytorch default"), "final_std_xavier_tanh": last("xavier + tanh"),
        "final_std_kaiming_relu": last("kaiming + relu"),
    }
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- weight is (out, in), so the layer multiplies by its transpose: x @ W.T + b.")
    print("- Linear works on the last dimension; leading dimensions (batch, time, ...) just come along.")
    print("- The std of each layer's output is multiplied by roughly sqrt(in) * std(w) * (activation gain);")
    print("  over many layers that factor compounds, so pick std(w) to make it 1: Xavier for tanh, Kaiming for ReLU.")
    return metrics


if __name__ == "__main__":
    main()

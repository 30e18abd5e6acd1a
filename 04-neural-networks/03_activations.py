"""Activation functions: shapes, derivatives, and the vanishing gradients a deep sigmoid network suffers.

Without a nonlinearity, stacked Linear layers collapse into one Linear layer; the activation is what makes depth
useful. This lesson plots ReLU, LeakyReLU, ELU, GELU, SiLU, Softplus, Sigmoid and Tanh with their derivatives
(computed by autograd and checked against the textbook formulas), shows the collapse of a network without
activations, then builds the same deep network with sigmoid, tanh, ReLU and GELU and measures the gradient norm
of every layer's weight after one backward pass. The sigmoid's derivative is at most 0.25, so the gradient
shrinks at every layer on its way back: the first layers of a deep sigmoid net barely learn.

Run it:
    python 04-neural-networks/03_activations.py
    python 04-neural-networks/03_activations.py --depth 30

Takes about 3 s on a 2-core CPU. What to look for: max sigmoid'(x) = 0.25, derivative errors ~1e-7, and in the
gradient table a first/last layer ratio far below 1e-3 for sigmoid but near 1 for ReLU and GELU.
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
                        help="where the networks run; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="a shallower, narrower network and a small batch")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/04-neural-networks/03_activations"),
                        help="where metrics.json and the plots go")
    parser.add_argument("--depth", type=int, default=20, help="hidden layers in the deep network")
    parser.add_argument("--width", type=int, default=128, help="features per hidden layer")
    parser.add_argument("--batch-size", type=int, default=256, help="rows in the batch used for the gradients")
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


def make_activation(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1), "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
        "softplus": nn.Softplus, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
    }[name]()


ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "softplus", "sigmoid", "tanh")


def textbook_derivative(name: str, x: torch.Tensor) -> torch.Tensor | None:
    """The derivatives as written in papers, to check autograd against (None: not checked here)."""
    s = torch.sigmoid(x)
    phi = torch.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)  # standard normal density
    return {
        "relu": (x > 0).to(x.dtype),
        "leaky_relu": torch.where(x > 0, 1.0, 0.1),
        "sigmoid": s * (1 - s),
        "tanh": 1 - torch.tanh(x) ** 2,
        "silu": s * (1 + x * (1 - s)),
        "softplus": s,
        "gelu": 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * phi,
        "elu": torch.where(x > 0, 1.0, torch.exp(x)),
    }.get(name)


def deep_net(depth: int, width: int, activation: str) -> nn.Sequential:
    """`depth` Linear+activation layers, each initialised the way its activation calls for, then a 1-unit head."""
    layers = []
    for _ in range(depth):
        linear = nn.Linear(width, width)
        if activation in ("relu", "gelu"):
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        else:  # sigmoid and tanh: Xavier, their usual partner
            nn.init.xavier_normal_(linear.weight, gain=nn.init.calculate_gain(activation))
        nn.init.zeros_(linear.bias)
        layers += [linear, make_activation(activation)]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def layer_grad_norms(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """||dLoss/dW|| for each hidden Linear, first layer first, after one backward pass of an MSE loss."""
    model.zero_grad()
    F.mse_loss(model(x), y).backward()
    return [m.weight.grad.norm().item() for m in list(model)[:-1] if isinstance(m, nn.Linear)]


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    depth, width, batch = (10, 32, 64) if args.smoke else (args.depth, args.width, args.batch_size)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {}

    section("Activations and their derivatives (autograd vs the formula)")
    x = torch.linspace(-5, 5, 1001, device=device, requires_grad=True)  # (1001,)
    fig = Figure(figsize=(11, 4.5))
    ax_f, ax_d = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    worst = 0.0
    for name in ACTIVATIONS:
        y = make_activation(name)(x)
        (dy,) = torch.autograd.grad(y.sum(), x)  # each y_i depends only on x_i, so this is the elementwise slope
        err = (dy - textbook_derivative(name, x.detach())).abs().max().item()
        worst = max(worst, err)
        print(f"  {name:<11} range on [-5, 5]: [{y.min().item():+.3f}, {y.max().item():+.3f}]  "
              f"max slope {dy.max().item():.3f}  |autograd - formula| {err:.1e}")
        ax_f.plot(x.detach().cpu(), y.detach().cpu(), label=name)
        ax_d.plot(x.detach().cpu(), dy.cpu(), label=name)
        metrics[f"max_derivative_{name}"] = dy.max().item()
    ax_f.set(title="activation f(x)", ylabel="f(x)")
    ax_d.set(title="derivative f'(x) (autograd)", ylabel="f'(x)")
    ax_f.set_ylim(-1.5, 5)
    for ax in (ax_f, ax_d):
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("x")
    ax_f.legend(fontsize=8)
    fig.tight_layout()
    plot_path = args.out_dir / "activations_and_derivatives.png"
    fig.savefig(plot_path, dpi=100)
    print(f"worst disagreement: {worst:.1e}. sigmoid' peaks at 0.25 (at x=0); tanh' at 1; ReLU' is 0 or 1.")
    print(f"plot: {plot_path}")
    metrics["derivative_max_abs_error"] = worst

    section("No activation: depth buys nothing")
    linear_stack = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)).to(device)
    weights = [m.weight for m in linear_stack]
    w_total = weights[2] @ weights[1] @ weights[0]  # (2, 4): one matrix does the work of all three
    b_total = linear_stack(torch.zeros(1, 4, device=device))  # (1, 2): the stack's output at 0 is its total bias
    probe = torch.randn(16, 4, device=device)
    collapse_err = (linear_stack(probe) - (probe @ w_total.T + b_total)).abs().max().item()
    print(f"three Linear layers without activations equal ONE Linear (W3 W2 W1, b): max diff {collapse_err:.1e}")
    metrics["linear_collapse_max_abs_error"] = collapse_err

    section(f"Gradient norm per layer, {depth} hidden layers of width {width}")
    x_in = torch.randn(batch, width, device=device)  # (B, width)
    target = torch.randn(batch, 1, device=device)  # (B, 1)
    norms = {}
    for name in ("sigmoid", "tanh", "relu", "gelu"):
        torch.manual_seed(args.seed)
        norms[name] = layer_grad_norms(deep_net(depth, width, name).to(device), x_in, target)
    marks = sorted({0, depth // 2, depth - 1})
    print(f"{'activation':<10}" + "".join(f"{'layer ' + str(i + 1):>12}" for i in marks) + f"{'first/last':>12}")
    for name, g in norms.items():
        ratio = g[0] / g[-1]
        print(f"{name:<10}" + "".join(f"{g[i]:>12.2e}" for i in marks) + f"{ratio:>12.2e}")
        metrics[f"grad_ratio_first_to_last_{name}"] = ratio
        metrics[f"first_layer_grad_norm_{name}"] = g[0]
    print("Backprop multiplies by W.T and by f'(z) at every layer. f' <= 0.25 for the sigmoid, so after "
          f"{depth} layers")
    print("the first layer's gradient is orders of magnitude smaller: those layers barely move. ReLU's slope is 1")
    print("where it is active and GELU's is close to it, so with Kaiming init the gradient reaches the first layer.")

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, g in norms.items():
        ax.semilogy(range(1, depth + 1), g, marker=".", label=name)
    ax.set_xlabel("layer (1 = closest to the input)")
    ax.set_ylabel("||dL/dW|| (log scale)")
    ax.set_title("Vanishing gradients: one backward pass")
    ax.legend()
    fig.tight_layout()
    grad_plot = args.out_dir / "gradient_norm_by_layer.png"
    fig.savefig(grad_plot, dpi=100)
    print(f"plot: {grad_plot}")

    metrics["depth"] = depth
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Autograd's derivative equals the formula: you never write backward passes for these by hand.")
    print("- Sigmoid and tanh saturate: for large |x| their slope is ~0, and sigmoid's is at most 0.25 anywhere.")
    print("- That is why hidden layers use ReLU/GELU/SiLU; sigmoid survives at the output (probabilities, lesson 04).")
    print("- ReLU's slope is exactly 0 for x < 0 (a unit stuck there is 'dead'); LeakyReLU/GELU/SiLU keep a small one.")
    return metrics


if __name__ == "__main__":
    main()

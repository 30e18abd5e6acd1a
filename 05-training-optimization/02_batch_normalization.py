"""Batch normalization: written by hand, checked against nn.BatchNorm1d/2d, then measured on a deep network.

In training mode BatchNorm normalises each feature (channel) with the statistics of the current batch, then scales
and shifts it with learned gamma and beta; it also keeps running averages of the mean and variance. In eval mode it
uses those running averages instead, so one sample's output no longer depends on the rest of the batch. This lesson
writes both modes by hand, including the detail everyone gets wrong (the batch is normalised with the biased
variance, the running variance is updated with the unbiased one), and shows that they equal nn.BatchNorm to float
precision. Then it trains the same deep MLP with and without BatchNorm, side by side.

Run it:
    python 05-training-optimization/02_batch_normalization.py
    python 05-training-optimization/02_batch_normalization.py --depth 12 --lr 0.5

Takes about ten seconds on a laptop CPU (--smoke: a few seconds).
What to look for: max abs differences near 1e-7 in train and eval mode and for the running statistics; the network
with BatchNorm reaching a much lower loss in the same number of steps (bn_convergence.png).
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
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
                        help="where to compute; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="fewer training steps: a few seconds on a CPU")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/05-training-optimization/02_batch_normalization"),
                        help="where the plot and metrics.json are written")
    parser.add_argument("--steps", type=int, default=600, help="SGD steps per network (--smoke uses 120)")
    parser.add_argument("--depth", type=int, default=10, help="hidden layers of the MLP")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate, the same for both networks")
    parser.add_argument("--batch-size", type=int, default=64, help="mini-batch size")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the CUDA section of the README)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if args.steps < 10 or args.depth < 1 or args.lr <= 0 or args.batch_size < 2:
        parser.error("need --steps >= 10, --depth >= 1, --lr > 0 and --batch-size >= 2 (BN needs 2 samples)")
    return args


def batch_norm_by_hand(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """BatchNorm over dim 0 (and the spatial dims of (B, C, H, W)); updates running_* in place when training."""
    dims = [0] + list(range(2, x.dim()))  # every dim except the channel dim 1
    shape = [1, -1] + [1] * (x.dim() - 2)  # (1, C) or (1, C, 1, 1), to broadcast per-channel values
    if training:
        mean = x.mean(dim=dims)  # (C,)
        var = x.var(dim=dims, unbiased=False)  # biased: divide by n, used to normalise this batch
        n = x.numel() // x.shape[1]
        with torch.no_grad():  # running stats are buffers, not part of the graph
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))  # unbiased: divide by n - 1
    else:
        mean, var = running_mean, running_var
    x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    return gamma.view(shape) * x_hat + beta.view(shape)


def compare_with_torch(bn: nn.Module, make_batch, steps: int) -> dict:
    """Run the hand-written BN and `bn` side by side for `steps` training batches, then once in eval mode."""
    c = bn.num_features
    with torch.no_grad():  # non-trivial gamma and beta, so a swapped or missing one would show
        bn.weight.copy_(torch.linspace(0.5, 2.0, c))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, c))
    run_mean, run_var = torch.zeros(c, device=bn.weight.device), torch.ones(c, device=bn.weight.device)
    bn.train()
    train_diff = 0.0
    for _ in range(steps):
        x = make_batch()
        ours = batch_norm_by_hand(x, bn.weight, bn.bias, run_mean, run_var, training=True)
        train_diff = max(train_diff, (ours - bn(x)).abs().max().item())
    bn.eval()
    x = make_batch()
    ours = batch_norm_by_hand(x, bn.weight, bn.bias, run_mean, run_var, training=False)
    eval_diff = (ours - bn(x)).abs().max().item()
    return {"train": train_diff, "eval": eval_diff,
            "running_mean": (run_mean - bn.running_mean).abs().max().item(),
            "running_var": (run_var - bn.running_var).abs().max().item(),
            "batches_tracked": int(bn.num_batches_tracked.item())}


def make_mlp(depth: int, use_bn: bool) -> nn.Sequential:
    layers, width, d_in = [], 128, 32
    for _ in range(depth):
        layers += [nn.Linear(d_in, width, bias=not use_bn)]  # BN's beta makes a bias before it redundant
        layers += [nn.BatchNorm1d(width)] if use_bn else []
        layers += [nn.Tanh()]
        d_in = width
    return nn.Sequential(*layers, nn.Linear(width, 10))


def train_curve(use_bn: bool, data, args, device) -> list[float]:
    x, y = data
    torch.manual_seed(args.seed)  # same Linear weights and batch order for both networks
    model = make_mlp(args.depth, use_bn).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    losses = []
    for _ in range(args.steps):
        idx = torch.randint(0, len(x), (args.batch_size,), device=device)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    if args.smoke:
        args.steps = 120
    print(f"device {device}")

    section("BatchNorm1d by hand vs nn.BatchNorm1d, input (B=32, C=8)")
    bn1 = nn.BatchNorm1d(8).to(device)
    d1 = compare_with_torch(bn1, lambda: 3 * torch.randn(32, 8, device=device) + 5, steps=5)
    print(f"train mode output max abs diff {d1['train']:.2e}; eval mode {d1['eval']:.2e}")
    print(f"running_mean max abs diff {d1['running_mean']:.2e}; running_var {d1['running_var']:.2e} "
          f"(after {d1['batches_tracked']} batches)")

    section("BatchNorm2d by hand vs nn.BatchNorm2d, input (B=4, C=6, H=5, W=5)")
    bn2 = nn.BatchNorm2d(6).to(device)
    d2 = compare_with_torch(bn2, lambda: torch.randn(4, 6, 5, 5, device=device) * 2 - 1, steps=5)
    print(f"train mode output max abs diff {d2['train']:.2e}; eval mode {d2['eval']:.2e}")
    print(f"running_mean max abs diff {d2['running_mean']:.2e}; running_var {d2['running_var']:.2e}")

    section("The running variance is unbiased, the batch is normalised with the biased one")
    x = torch.randn(4, 3, device=device)  # tiny batch: n / (n - 1) = 4/3, easy to see
    bn = nn.BatchNorm1d(3, momentum=1.0).to(device)  # momentum 1: running stats = this batch's stats
    out = bn(x)
    var_b, var_u = x.var(0, unbiased=False), x.var(0, unbiased=True)
    unbiased_gap = (bn.running_var - var_u).abs().max().item()
    print(f"running_var vs unbiased var: max abs diff {unbiased_gap:.2e}; vs biased var "
          f"{(bn.running_var - var_b).abs().max().item():.2e}")
    print("output std per feature (biased, ~1 by construction): "
          + ", ".join(f"{v:.4f}" for v in out.std(0, unbiased=False).tolist()))
    print(f"eval vs train on the same batch differ by {(bn.eval()(x) - out).abs().max().item():.2e}: eval uses "
          "running (unbiased) statistics")

    section(f"Convergence: a {args.depth}-layer tanh MLP with and without BatchNorm")
    g = torch.Generator().manual_seed(args.seed)
    x_all = torch.randn(4096, 32, generator=g)  # (N, 32)
    teacher = torch.randn(32, 10, generator=g)
    y_all = (x_all @ teacher + 0.5 * torch.randn(4096, 10, generator=g)).argmax(1)  # a learnable 10-class task
    data = (x_all.to(device), y_all.to(device))
    curves = {bn_flag: train_curve(bn_flag, data, args, device) for bn_flag in (False, True)}
    window = max(1, args.steps // 10)
    final = {k: float(np.mean(v[-window:])) for k, v in curves.items()}
    print(f"  {'':<12} {'first loss':>10} {'loss (last ' + str(window) + ' steps)':>22}")
    for flag, name in ((False, "without BN"), (True, "with BN")):
        print(f"  {name:<12} {curves[flag][0]:>10.4f} {final[flag]:>22.4f}")
    print(f"same lr ({args.lr}), same steps ({args.steps}): BN ends at {final[True] / final[False]:.2f}x the loss")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for flag, name in ((False, "without BatchNorm"), (True, "with BatchNorm")):
        ax.plot(curves[flag], label=name, alpha=0.8)
    ax.set(xlabel="SGD step", ylabel="training loss (batch)", title=f"{args.depth}-layer tanh MLP, lr {args.lr}")
    ax.legend()
    fig.tight_layout()
    png = args.out_dir / "bn_convergence.png"
    fig.savefig(png, dpi=100)
    print(f"plot: {png}")

    metrics = {
        "bn1d_train_max_abs_diff": d1["train"], "bn1d_eval_max_abs_diff": d1["eval"],
        "bn1d_running_mean_max_abs_diff": d1["running_mean"], "bn1d_running_var_max_abs_diff": d1["running_var"],
        "bn2d_train_max_abs_diff": d2["train"], "bn2d_eval_max_abs_diff": d2["eval"],
        "bn2d_running_mean_max_abs_diff": d2["running_mean"], "bn2d_running_var_max_abs_diff": d2["running_var"],
        "running_var_vs_unbiased_max_abs_diff": unbiased_gap, "batches_tracked": d1["batches_tracked"],
        "loss_first_without_bn": curves[False][0], "loss_first_with_bn": curves[True][0],
        "loss_final_without_bn": final[False], "loss_final_with_bn": final[True],
    }
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Train mode: batch statistics (biased variance); eval mode: running statistics. Forgetting model.eval()")
    print("  at test time makes predictions depend on whatever else is in the batch.")
    print("- The running variance uses n / (n - 1); with tiny batches the two variances differ visibly.")
    print("- Normalising every layer keeps activations in tanh's useful range, so the deep net trains at this lr.")
    return metrics


if __name__ == "__main__":
    main()

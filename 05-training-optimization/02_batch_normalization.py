"""Batch normalization: written by hand, checked against nn.BatchNorm1d/2d, then measured on a deep network.

In training mode BatchNorm normalises each feature (channel) with the statistics of the current batch, then scales
and shifts it with learned gamma and beta; it also keeps running averages of the mean and variance. In eval mode it
uses those running averages instead, so one sample's output no longer depends on the rest of the batch. This lesson
writes both modes by hand, including the detail everyone gets wrong (the batch is normalised with the biased
variance, the running variance is updated with the unbiased one), and shows that they equal nn.BatchNorm to float
precision. Then it trains the same deep tanh MLP four ways: a bad initialisation (N(0, 1) weights, a classic
mistake) and a good one (Xavier with tanh's gain), each with and without BatchNorm, from the same copied weights and
the same batches, and measures how many tanh units are saturated (|a| > 0.95) in every layer. That separates what
BatchNorm does from what a good initialisation already does.

Run it:
    python 05-training-optimization/02_batch_normalization.py
    python 05-training-optimization/02_batch_normalization.py --depth 12 --lr 0.5

Takes about 10 seconds on a 2-core CPU (--smoke: about 5 s).
What to look for: max abs differences near 1e-7 in train and eval mode and for the running statistics; the saturation
table (bad init without BN: most units stuck at +-1; with BN: few); the four loss curves in bn_convergence.png, and
whether BN still helps once the initialisation is good.
"""

import argparse
import copy
import json
import math
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
    if args.steps < 10 or args.depth < 1 or args.lr <= 0 or args.batch_size < 2:
        parser.error("need --steps >= 10, --depth >= 1, --lr > 0 and --batch-size >= 2 (BN needs 2 samples)")
    return args


def batch_norm_by_hand(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """BatchNorm over dim 0 (and the spatial dims of (B, C, H, W)); updates running_* in place when training."""
    dims = [0] + list(range(2, x.dim()))  # every dim except the channel dim 1
    shape = [1, -1] + [1] * (x.dim() - 2)  # (1, C) or (1, C, 1, 1), to broadcast per-channel values
    if training:
        mean = x.mean(dim=dims)  # (C,)
        var = x.var(dim=dims, correction=0)  # biased: divide by n, used to normalise this batch
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


def init_weights(model: nn.Sequential, init: str, seed: int) -> list[torch.Tensor]:
    """Draw every Linear weight from a seeded generator: 'bad' N(0, 1), 'good' Xavier-uniform with tanh's gain.

    Returns the weights drawn, so that the BN network can be given exactly the same ones (biases start at 0)."""
    g = torch.Generator().manual_seed(seed)
    drawn = []
    for m in model:
        if isinstance(m, nn.Linear):
            fan_in, fan_out = m.in_features, m.out_features
            if init == "bad":  # the classic mistake: unscaled weights, pre-activations with std ~ sqrt(fan_in)
                w = torch.randn(fan_out, fan_in, generator=g)
            else:  # nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain("tanh")), drawn from our generator
                bound = nn.init.calculate_gain("tanh") * math.sqrt(6 / (fan_in + fan_out))
                w = (torch.rand(fan_out, fan_in, generator=g) * 2 - 1) * bound
            drawn.append(w)
    return drawn


def copy_weights(model: nn.Sequential, weights: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for m, w in zip((m for m in model if isinstance(m, nn.Linear)), weights, strict=True):
            m.weight.copy_(w)
            if m.bias is not None:
                m.bias.zero_()


@torch.no_grad()
def saturation(model: nn.Sequential, x: torch.Tensor) -> list[float]:
    """Fraction of tanh outputs with |a| > 0.95 (their gradient 1 - a^2 is below 0.1), per layer.

    Measured as training sees it: train mode, BN normalising with this batch's statistics. On a copy, because a
    train-mode forward also updates BN's running statistics."""
    fractions, h = [], x
    for m in copy.deepcopy(model).train():
        h = m(h)
        if isinstance(m, nn.Tanh):
            fractions.append((h.abs() > 0.95).float().mean().item())
    return fractions


def train_curve(model: nn.Sequential, data, args, device) -> list[float]:
    x, y = data
    g = torch.Generator().manual_seed(args.seed)  # the same batches, in the same order, for every network
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    losses = []
    for _ in range(args.steps):
        idx = torch.randint(0, len(x), (args.batch_size,), generator=g).to(device)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


NAMES = {("bad", False): "bad init", ("bad", True): "bad init + BN", ("good", False): "good init",
         ("good", True): "good init + BN"}


def bn_comparison(first: dict, final: dict, lr: float, steps: int) -> str:
    """What the four loss curves say about BN, from their first and final losses (keys (init, use_bn))."""
    def ratio(init: str, tail: str) -> str:
        r = final[init, False] / final[init, True]
        return f"at 1/{r:.2f}{tail}" if r >= 1 else f"{1 / r:.2f}x above{tail or ' it'}"

    text = (f"same lr ({lr}), steps ({steps}) and batches: with the bad init BN ends "
            f"{ratio('bad', ' of the loss without it')}; with the good init {ratio('good', '')}")
    diverged = [k for k in final if final[k] > first[k]]
    if diverged:
        rises = ", ".join(f"{NAMES[k]} {first[k]:.2f} -> {final[k]:.2f}" for k in diverged)
        if len(diverged) == len(final):
            return (f"{text}\nbut the loss rose in all four runs ({rises}): lr {lr} is too large for this network, "
                    "so these ratios compare failed runs and say nothing about BN")
        them = "that run" if len(diverged) == 1 else "those runs"
        return (f"{text}\nbut the loss rose in {len(diverged)} of the four runs ({rises}): lr {lr} is too large for "
                f"{them}, so a ratio that includes {them} measures a failure, not BN")
    bn_fix = final["bad", False] / final["bad", True]
    bn_good = final["good", False] / final["good", True]
    if bn_fix <= 1:
        return text + " - BN did not help even the bad init here"
    if bn_good < 1:
        return text + " - with a good init BN made things worse here: its whole win was repairing the init"
    return text + (" - most of BN's win here was repairing the init" if bn_good < bn_fix / 2 else "")


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
    var_b, var_u = x.var(0, correction=0), x.var(0, correction=1)  # divide by n, by n - 1
    unbiased_gap = (bn.running_var - var_u).abs().max().item()
    print(f"running_var vs unbiased var: max abs diff {unbiased_gap:.2e}; vs biased var "
          f"{(bn.running_var - var_b).abs().max().item():.2e}")
    print("output std per feature (biased, ~1 by construction): "
          + ", ".join(f"{v:.4f}" for v in out.std(0, correction=0).tolist()))
    print(f"eval vs train on the same batch differ by {(bn.eval()(x) - out).abs().max().item():.2e}: eval uses "
          "running (unbiased) statistics")

    section(f"A {args.depth}-layer tanh MLP: bad or good init, with or without BatchNorm")
    g = torch.Generator().manual_seed(args.seed)
    x_all = torch.randn(4096, 32, generator=g)  # (N, 32)
    teacher = torch.randn(32, 10, generator=g)
    y_all = (x_all @ teacher + 0.5 * torch.randn(4096, 10, generator=g)).argmax(1)  # a learnable 10-class task
    data = (x_all.to(device), y_all.to(device))
    probe = data[0][:512]  # a fixed batch on which saturation is measured
    runs = {}
    for init in ("bad", "good"):
        weights = init_weights(make_mlp(args.depth, False), init, args.seed)
        for use_bn in (False, True):
            model = make_mlp(args.depth, use_bn).to(device)
            copy_weights(model, weights)  # the same Linear weights for both networks of this init
            sat_start = saturation(model, probe)
            curve = train_curve(model, data, args, device)
            runs[init, use_bn] = {"curve": curve, "sat_start": sat_start, "sat_end": saturation(model, probe)}
    window = max(1, args.steps // 10)
    final = {k: float(np.mean(r["curve"][-window:])) for k, r in runs.items()}
    mean_sat = {k: float(np.mean(r["sat_start"])) for k, r in runs.items()}
    print("tanh units saturated (|a| > 0.95) per hidden layer, at initialisation, on a batch of 512 inputs:")
    print(f"  {'layer':>5} " + " ".join(f"{NAMES[k]:>15}" for k in runs))
    for layer in range(args.depth):
        print(f"  {layer + 1:>5} " + " ".join(f"{runs[k]['sat_start'][layer]:>15.1%}" for k in runs))
    print(f"  {'mean':>5} " + " ".join(f"{mean_sat[k]:>15.1%}" for k in runs))
    print(f"  {'after':>5} " + " ".join(f"{np.mean(runs[k]['sat_end']):>15.1%}" for k in runs)
          + "   (mean, after training)")
    print(f"\n  {'':<16} {'first loss':>10} {'loss (last ' + str(window) + ' steps)':>22}")
    for k in runs:
        print(f"  {NAMES[k]:<16} {runs[k]['curve'][0]:>10.4f} {final[k]:>22.4f}")
    print(bn_comparison({k: r["curve"][0] for k, r in runs.items()}, final, args.lr, args.steps))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(11, 4))
    ax_loss, ax_sat = fig.subplots(1, 2)
    styles = {("bad", False): ("tab:red", "-"), ("bad", True): ("tab:red", "--"),
              ("good", False): ("tab:blue", "-"), ("good", True): ("tab:blue", "--")}
    for k, r in runs.items():
        ax_loss.plot(r["curve"], color=styles[k][0], linestyle=styles[k][1], label=NAMES[k], alpha=0.8)
        ax_sat.plot(range(1, args.depth + 1), r["sat_start"], color=styles[k][0], linestyle=styles[k][1],
                    marker="o", label=NAMES[k])
    ax_loss.set(xlabel="SGD step", ylabel="training loss (batch)", yscale="log",
                title=f"{args.depth}-layer tanh MLP, lr {args.lr}, same batches")
    ax_sat.set(xlabel="hidden layer", ylabel="fraction of tanh units with |a| > 0.95", ylim=(-0.02, 1.02),
               title="Saturated units at initialisation")
    ax_loss.legend()
    ax_sat.legend()
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
    }
    for (init, use_bn), r in runs.items():
        tag = f"{init}_init{'_bn' if use_bn else ''}"
        metrics.update({f"loss_first_{tag}": r["curve"][0], f"loss_final_{tag}": final[init, use_bn],
                        f"saturated_start_{tag}": mean_sat[init, use_bn],
                        f"saturated_end_{tag}": float(np.mean(r["sat_end"]))})
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Train mode: batch statistics (biased variance); eval mode: running statistics. Forgetting model.eval()")
    print("  at test time makes predictions depend on whatever else is in the batch.")
    print("- The running variance uses n / (n - 1); with tiny batches the two variances differ visibly.")
    print(f"- Saturation, measured: {mean_sat['bad', False]:.0%} of tanh units at |a| > 0.95 with the bad init, "
          f"{mean_sat['bad', True]:.0%} once BN normalises every layer, {mean_sat['good', False]:.0%} with a good "
          "init alone: BN keeps the pre-activations near unit scale whatever the weights' scale.")
    print(f"- Loss after {args.steps} steps: bad init {final['bad', False]:.3f}, "
          f"bad init + BN {final['bad', True]:.3f}, "
          f"good init {final['good', False]:.3f}, good init + BN {final['good', True]:.3f}. Compare BN against a good "
          "init, not against a broken one, before crediting it.")
    return metrics


if __name__ == "__main__":
    main()

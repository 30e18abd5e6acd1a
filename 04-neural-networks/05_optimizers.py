"""Optimizers: SGD, momentum, Adam and AdamW written by hand, checked against torch.optim step for step.

An optimizer is a few lines of arithmetic on each parameter and its gradient, plus some state (a velocity for
momentum, two running moments for Adam). The lesson writes SGD with momentum, Adam and AdamW as plain tensor code,
trains two copies of the same network (one with torch.optim, one with the hand-written version) and prints the
largest parameter difference over all steps. It then races the optimizers on the Rosenbrock function (a curved
valley that is easy to describe and hard to descend) and plots their paths, and it shows in numbers why AdamW's
decoupled weight decay is not the same as Adam's weight_decay (L2 added to the gradient). It ends with gradient
clipping (torch.nn.utils.clip_grad_norm_): the total gradient norm before and after, and one step with and without
it on a batch with a corrupted label.

Run it:
    python 04-neural-networks/05_optimizers.py
    python 04-neural-networks/05_optimizers.py --steps 5000

Takes about 5 s on a 2-core CPU. What to look for: hand vs torch.optim differences of ~1e-7 (float32
rounding), which optimizer ends closest to Rosenbrock's minimum at (1, 1), and in the weight-decay table that
Adam's decay depends on the gradient while AdamW shrinks every weight by the same factor.
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
                        help="where the networks train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="fewer steps everywhere")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/04-neural-networks/05_optimizers"),
                        help="where metrics.json and the trajectory plot go")
    parser.add_argument("--steps", type=int, default=2000, help="steps of each optimizer on the Rosenbrock function")
    parser.add_argument("--compare-steps", type=int, default=100, help="steps of the hand vs torch.optim comparison")
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
    if args.steps < 1 or args.compare_steps < 1:
        parser.error("--steps and --compare-steps must be at least 1")
    return args


class HandSGD:
    """torch.optim.SGD's rule: g += wd p; v = mu v + g (v = g on the first step); p -= lr v."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        self.params, self.lr, self.mu, self.wd = list(params), lr, momentum, weight_decay
        self.velocity = [None] * len(self.params)

    @torch.no_grad()
    def step(self):
        for i, p in enumerate(self.params):
            g = p.grad.add(p, alpha=self.wd)  # g + wd * p
            if self.mu:
                v = self.velocity[i]
                self.velocity[i] = g.clone() if v is None else v.mul_(self.mu).add_(g)  # v = mu v + g
                g = self.velocity[i]
            p.add_(g, alpha=-self.lr)  # p -= lr * g


class HandAdam:
    """Adam (Kingma & Ba) with bias correction; decoupled=True gives AdamW (Loshchilov & Hutter)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        self.params, self.lr, (self.b1, self.b2), self.eps = list(params), lr, betas, eps
        self.wd, self.decoupled, self.t = weight_decay, decoupled, 0
        self.m = [torch.zeros_like(p) for p in self.params]  # running mean of g
        self.v = [torch.zeros_like(p) for p in self.params]  # running mean of g^2

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            if self.decoupled:
                p *= 1 - self.lr * self.wd  # AdamW: shrink the weight directly
            else:
                g = g.add(p, alpha=self.wd)  # Adam: L2 enters the gradient, then gets normalised below
            m.lerp_(g, 1 - self.b1)  # m = b1 m + (1 - b1) g
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)  # v = b2 v + (1 - b2) g^2
            # m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t) (bias correction: m and
            # v start at 0), arranged as torch.optim does it so that float32 rounding matches too
            step_size = self.lr / (1 - self.b1**self.t)
            denom = v.sqrt() / math.sqrt(1 - self.b2**self.t) + self.eps
            p.addcdiv_(m, denom, value=-step_size)  # p -= step_size * m / denom


def compare(make_torch, make_hand, steps: int, device) -> float:
    """Train two identical MLPs on one regression batch; return the largest parameter difference seen."""
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1)).to(device)
    twin = copy.deepcopy(model)
    opt_torch, opt_hand = make_torch(model.parameters()), make_hand(twin.parameters())
    x = torch.randn(64, 10, device=device)  # (B, 10)
    y = x[:, :1] * 2 - x[:, 1:2] ** 2  # (B, 1)
    worst = 0.0
    for _ in range(steps):
        for net, opt in ((model, opt_torch), (twin, opt_hand)):
            for p in net.parameters():
                p.grad = None
            F.mse_loss(net(x), y).backward()
            opt.step()
        worst = max(worst, max((a - b).abs().max().item() for a, b in zip(model.parameters(), twin.parameters())))
    return worst


def rosenbrock(xy: torch.Tensor) -> torch.Tensor:
    """(1 - x)^2 + 100 (y - x^2)^2: minimum 0 at (1, 1), at the bottom of a narrow curved valley."""
    return (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2


def descend(make_opt, steps: int, device) -> np.ndarray:
    """Path (steps + 1, 2) of an optimizer started at (-1.5, 2)."""
    xy = torch.tensor([-1.5, 2.0], device=device, requires_grad=True)
    opt = make_opt([xy])
    path = [xy.detach().cpu().numpy().copy()]
    for _ in range(steps):
        opt.zero_grad()
        rosenbrock(xy).backward()
        opt.step()
        path.append(xy.detach().cpu().numpy().copy())
    return np.array(path)


def decay_effect(opt_cls, weight_decay: float, steps: int) -> np.ndarray:
    """Final weights (2,) from [1, 1] under a loss whose gradient is [-1, 0]: weight 0 is pulled up by the loss,
    weight 1 feels only weight decay. Subtracting the run with weight_decay=0 isolates what the decay did."""
    w = torch.ones(2, requires_grad=True)
    opt = opt_cls([w], lr=0.01, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        (-w[0] + 0.0 * w[1]).backward()
        opt.step()
    return w.detach().numpy()


def clipping_demo(seed: int, device, max_norm: float) -> dict:
    """One batch with an outlier target: its gradient norm, clip_grad_norm_, and one SGD step with and without it."""
    torch.manual_seed(seed)
    x = torch.randn(64, 4, device=device)  # (B, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0], device=device) + 0.1 * torch.randn(64, device=device)  # (B,)
    y[0] = 1000.0  # one corrupted label: a huge error, a huge gradient
    start = nn.Linear(4, 1).to(device)
    out = {}

    def clean_loss(model) -> float:  # the loss on the 63 ordinary points
        with torch.no_grad():
            return F.mse_loss(model(x[1:]).squeeze(1), y[1:]).item()

    out["clean_loss_before"] = clean_loss(start)
    for clip in (False, True):
        model = copy.deepcopy(start)
        F.mse_loss(model(x).squeeze(1), y).backward()
        grads_before = [p.grad.clone() for p in model.parameters()]
        by_hand = torch.sqrt(sum((g**2).sum() for g in grads_before)).item()  # one norm over ALL parameters
        if clip:
            # scales every gradient by max_norm / total_norm when total_norm > max_norm; returns the norm before
            returned = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm).item()
            after = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())).item()
            dot = sum((a * p.grad).sum() for a, p in zip(grads_before, model.parameters()))
            out.update({"clip_norm_before": returned, "clip_norm_by_hand": by_hand, "clip_norm_after": after,
                        "clip_direction_cosine": (dot / (by_hand * after)).item()})
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        out[f"clean_loss_after_{'clipped' if clip else 'unclipped'}_step"] = clean_loss(model)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    compare_steps, steps = (20, 300) if args.smoke else (args.compare_steps, args.steps)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    m = {}

    section(f"Hand-written vs torch.optim, {compare_steps} steps on the same MLP and batch")
    cases = {
        "sgd": (lambda p: torch.optim.SGD(p, lr=0.05, foreach=False), lambda p: HandSGD(p, lr=0.05)),
        "sgd_momentum": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3, foreach=False),
                         lambda p: HandSGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3)),
        "adam": (lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2, foreach=False),
                 lambda p: HandAdam(p, lr=1e-2, weight_decay=1e-2)),
        "adamw": (lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2, foreach=False),
                  lambda p: HandAdam(p, lr=1e-2, weight_decay=1e-2, decoupled=True)),
    }
    for name, (make_torch, make_hand) in cases.items():
        torch.manual_seed(args.seed)
        m[f"{name}_max_abs_diff"] = compare(make_torch, make_hand, compare_steps, device)
        diff = m[f"{name}_max_abs_diff"]
        print(f"  {name:<13} largest |param(torch.optim) - param(hand)| over all steps: {diff:.1e}")
    print("0 means bit-for-bit identical: the hand code does the same float32 operations in the same order as torch.")
    print("(Written as p -= lr * m_hat / (sqrt(v_hat) + eps) it drifts apart in the last bits: same maths,")
    print(" different rounding.)")

    section(f"Rosenbrock race: {steps} steps from (-1.5, 2), minimum at (1, 1)")
    racers = {
        "SGD lr=5e-4": lambda p: torch.optim.SGD(p, lr=5e-4),
        "SGD+momentum 0.9 lr=5e-4": lambda p: torch.optim.SGD(p, lr=5e-4, momentum=0.9),
        "RMSprop lr=1e-2": lambda p: torch.optim.RMSprop(p, lr=1e-2),
        "Adam lr=5e-2": lambda p: torch.optim.Adam(p, lr=5e-2),
    }
    paths = {name: descend(make, steps, device) for name, make in racers.items()}
    keys = ("sgd", "sgd_momentum", "rmsprop", "adam")
    for key, (name, path) in zip(keys, paths.items()):
        final = torch.tensor(path[-1])
        dist = float(np.linalg.norm(path[-1] - np.array([1.0, 1.0])))
        loss = rosenbrock(final).item()
        m[f"rosenbrock_{key}_distance"], m[f"rosenbrock_{key}_loss"] = dist, loss
        print(f"  {name:<26} ends at ({path[-1][0]:+.4f}, {path[-1][1]:+.4f})  f = {loss:.2e}  distance {dist:.2e}")
    print("Plain SGD crawls along the flat valley floor; momentum accumulates speed there; Adam and RMSprop divide")
    print("each coordinate's step by its recent gradient size, so the steep and the flat direction move alike.")

    fig = Figure(figsize=(7, 5.5))
    ax = fig.add_subplot()
    gx, gy = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-1, 3, 300))
    gz = (1 - gx) ** 2 + 100 * (gy - gx**2) ** 2
    ax.contour(gx, gy, np.log10(gz + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
    for name, path in paths.items():
        line = ax.plot(path[:, 0], path[:, 1], lw=1.2, label=name)[0]
        ax.plot(*path[-1], marker="X", ms=9, color=line.get_color(), mec="k")  # where it stopped
    ax.plot([1], [1], "k*", ms=12, label="minimum (1, 1)")
    ax.plot([-1.5], [2.0], "ko", ms=5)
    ax.set(xlim=(-2, 2), ylim=(-1, 3), xlabel="x", ylabel="y  (contours: log10 of (1 - x)^2 + 100 (y - x^2)^2)")
    ax.set_title(f"Optimizer paths on the Rosenbrock function ({steps} steps, X = end)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plot_path = args.out_dir / "rosenbrock_trajectories.png"
    fig.savefig(plot_path, dpi=100)
    print(f"plot: {plot_path}")

    section("Adam(weight_decay) vs AdamW: what the decay does, in numbers")
    decay_steps, wd = (50, 0.1) if args.smoke else (100, 0.1)
    print("Two weights start at 1; the loss pulls weight 0 up (gradient -1), weight 1 feels no loss (gradient 0).")
    print(f"{decay_steps} steps, lr 0.01, weight_decay {wd}. 'decay' = final weight without decay - with decay.")
    print(f"{'optimizer':<10} {'decay of w0 (large grad)':>26} {'decay of w1 (no grad)':>24}")
    for name, cls in (("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW)):
        shrink = decay_effect(cls, 0.0, decay_steps) - decay_effect(cls, wd, decay_steps)  # (2,)
        print(f"{name:<10} {shrink[0]:>26.4f} {shrink[1]:>24.4f}")
        m[f"{name.lower()}_decay_large_grad"], m[f"{name.lower()}_decay_no_grad"] = float(shrink[0]), float(shrink[1])
    expected = 1 - (1 - 0.01 * wd) ** decay_steps
    m["adamw_decay_expected"] = expected
    print(f"AdamW multiplies every weight by (1 - lr*wd) per step: for the lone weight 1 - (1 - {0.01 * wd:g})^"
          f"{decay_steps} = {expected:.4f}; w0 shrinks in proportion to its size.")
    ratio = m["adam_decay_no_grad"] / m["adamw_decay_no_grad"]
    print("Adam adds wd*w to the gradient and then divides by sqrt(v): where the loss gradient is large the decay")
    print("term is drowned (almost no decay); where the loss gradient is 0 the decay term IS the whole normalised")
    print(f"gradient, so the weight moves ~lr per step: {ratio:.1f}x AdamW's decay here, for the same weight_decay.")
    print("That coupling is why AdamW (decoupled decay) is the default for training transformers.")

    section("Gradient clipping: one bad batch must not wreck the weights")
    max_norm = 1.0
    clip = clipping_demo(args.seed, device, max_norm)
    m.update(clip)
    print("64 points of a linear law, one with a corrupted target (1000): MSE's gradient is dominated by it.")
    print(f"total gradient norm: clip_grad_norm_ returned {clip['clip_norm_before']:.2f} (by hand "
          f"{clip['clip_norm_by_hand']:.2f}); after clipping to max_norm={max_norm}: {clip['clip_norm_after']:.4f}, "
          f"same direction (cosine {clip['clip_direction_cosine']:.6f})")
    before, unclipped, clipped = (clip["clean_loss_before"], clip["clean_loss_after_unclipped_step"],
                                  clip["clean_loss_after_clipped_step"])
    print(f"loss on the 63 ordinary points: {before:.2f} before; after one SGD step (lr 0.1) {unclipped:.2f} without "
          f"clipping, {clipped:.2f} with it")
    print(f"  -> one step without clipping multiplied that loss by {unclipped / before:.2f}, with clipping by "
          f"{clipped / before:.2f}: a clipped step is at most lr * max_norm = {0.1 * max_norm:g} long, however bad "
          "the batch")
    print("in a loop: loss.backward(); clip_grad_norm_(model.parameters(), max_norm); optimizer.step() (with AMP,")
    print("scaler.unscale_(optimizer) first). Log the returned norm: a sudden spike is the early warning.")

    record = {"metrics": m, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Every optimizer is: read p.grad, update some state, move p; torch.optim does it fast (foreach/fused).")
    print("- Momentum and Adam keep per-parameter state: it lives in optimizer.state_dict() and must be checkpointed.")
    print("- Adam's steps are ~lr in size whatever the gradient's scale; SGD's are lr * gradient.")
    print("- Adam(weight_decay=...) is L2 regularisation, coupled to the gradient; AdamW decays weights uniformly.")
    print("- clip_grad_norm_ rescales all gradients together when their total norm exceeds max_norm: same direction,")
    print("  bounded step; it returns the norm before clipping, worth logging.")
    return m


if __name__ == "__main__":
    main()

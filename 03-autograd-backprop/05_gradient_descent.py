"""Gradient descent by hand: linear and logistic regression with autograd's gradients and your own update.

The whole of training in five lines: forward, loss, `backward()`, `param -= lr * param.grad` inside
`torch.no_grad()`, clear the gradients. This lesson writes that loop for linear regression (checked against the
closed-form least-squares answer) and logistic regression (checked by accuracy), then runs `torch.optim.SGD` from
the same starting point and shows the parameters agree to float rounding: an optimizer is exactly this update,
packaged. Finally it sweeps the learning rate and plots the loss curves: too small crawls, a good one converges,
past 2 / (largest Hessian eigenvalue) the loss blows up.

Run it:
    python 03-autograd-backprop/05_gradient_descent.py
    python 03-autograd-backprop/05_gradient_descent.py --device cpu --smoke --steps 50

Takes about 4 s on a 2-core CPU. What to look for: manual and SGD parameters with a max abs difference
<= 1e-6, the linear weights near the least-squares solution, logistic accuracy far above 50%, and in the PNG the
curve of the too-large learning rate going up.
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
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
                        help="where the tensors live; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="fewer examples and steps: a few seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/03-autograd-backprop/05_gradient_descent"),
                        help="where metrics.json and the learning-rate plot are written")
    parser.add_argument("--n", type=int, default=500, help="examples in each synthetic data set")
    parser.add_argument("--steps", type=int, default=200, help="gradient descent steps")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate of the by-hand versus SGD runs")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # NumPy's seed range (torch takes any 64-bit integer)
        parser.error(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    for flag in ("--out-dir", "--data-dir"):  # a file where a folder must be (or be made): one line, no traceback
        path = getattr(args, flag[2:].replace("-", "_"), None)
        existing = next((p for p in (Path(path), *Path(path).parents) if p.exists()), None) if path else None
        if existing is not None and not existing.is_dir():
            parser.error(f"{flag} {path}: {existing} is a file, not a folder")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if args.n < 4 or args.steps < 1 or args.lr <= 0:
        parser.error("--n must be >= 4, --steps >= 1 and --lr > 0")
    return args


def linear_loss(params, X, y):
    w, b = params
    return ((X @ w + b - y) ** 2).mean()  # X (N, D), w (D,), y (N,)


def logistic_loss(params, X, y):
    w, b = params
    return F.binary_cross_entropy_with_logits(X @ w + b, y)  # logits (N,), y (N,) in {0, 1}


def init_params(dim: int, device) -> list[torch.Tensor]:
    return [torch.zeros(dim, device=device, requires_grad=True), torch.zeros((), device=device, requires_grad=True)]


def descend_by_hand(loss_fn, X, y, lr: float, steps: int) -> tuple[list[torch.Tensor], list[float]]:
    params = init_params(X.shape[1], X.device)
    losses = []
    for _ in range(steps):
        loss = loss_fn(params, X, y)
        losses.append(loss.item())
        if losses[-1] > 1e20:  # diverged (a too-large lr): stop before the numbers overflow to inf
            break
        loss.backward()  # fills p.grad for every leaf
        with torch.no_grad():  # the update itself must not be recorded in the graph
            for p in params:
                p -= lr * p.grad
                p.grad = None  # clear, or the next backward adds to this gradient
    else:  # no divergence stop: record the loss after the last update too, so losses[k] follows k updates
        with torch.no_grad():
            losses.append(loss_fn(params, X, y).item())
    return params, losses


def descend_with_sgd(loss_fn, X, y, lr: float, steps: int) -> list[torch.Tensor]:
    params = init_params(X.shape[1], X.device)
    optimizer = torch.optim.SGD(params, lr=lr)  # no momentum, no weight decay: plain p -= lr * grad
    for _ in range(steps):
        optimizer.zero_grad()  # set_to_none=True by default, like p.grad = None
        loss = loss_fn(params, X, y)
        if loss.item() > 1e20:  # the same stop as the loop by hand, so both take the same steps
            break
        loss.backward()
        optimizer.step()
    return params


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x.detach() - y.detach()).abs().max().item() for x, y in zip(a, b, strict=True))


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    n = min(args.n, 128) if args.smoke else args.n
    steps = min(args.steps, 60) if args.smoke else args.steps
    print(f"device: {device}, {n} examples, {steps} steps, lr {args.lr}")

    section("Linear regression: y = X w + b + noise")
    w_true = torch.tensor([2.0, -3.0, 0.5], device=device)
    X = torch.randn(n, 3, device=device)  # (N, 3)
    y = X @ w_true + 1.0 + 0.1 * torch.randn(n, device=device)  # (N,)
    (w, b), lin_losses = descend_by_hand(linear_loss, X, y, args.lr, steps)
    print(f"loss {lin_losses[0]:.4f} -> {lin_losses[-1]:.4f}")
    X1 = torch.cat([X, torch.ones(n, 1, device=device)], dim=1)  # (N, 4): a column of ones for the bias
    # LAPACK's multithreaded solvers may differ in the last bits between runs: solve in float64, round the gap
    solution = torch.linalg.lstsq(X1.cpu().double(), y.cpu().double().unsqueeze(1)).solution.squeeze(1)  # (4,)
    learned = torch.cat([w.detach(), b.detach().view(1)]).cpu().double()
    lstsq_gap = float(f"{(learned - solution).abs().max().item():.6g}")
    print(f"learned w {[round(v, 4) for v in w.tolist()]}, b {b.item():.4f}")
    print(f"least squares w {[round(v, 4) for v in solution[:3].tolist()]}, b {solution[3].item():.4f}; "
          f"max gap {lstsq_gap:.2e}")
    p = init_params(3, device)
    linear_loss(p, X, y).backward()
    formula = -2 / n * X.T @ y  # dL/dw at w = 0, b = 0: (2/N) X^T (Xw + b - y)
    formula_error = (p[0].grad - formula).abs().max().item()
    print(f"first autograd gradient vs (2/N) X^T (Xw + b - y): max abs diff {formula_error:.2e}")
    sgd_params = descend_with_sgd(linear_loss, X, y, args.lr, steps)
    linear_sgd_diff = max_abs_diff([w, b], sgd_params)
    scale = max(p.detach().abs().max().item() for p in (w, b))
    print(f"torch.optim.SGD from the same start: max abs diff to the by-hand parameters {linear_sgd_diff:.2e}"
          + (f" (relative to parameters as large as {scale:.1e}: {linear_sgd_diff / scale:.1e})"
             if scale > 1e3 else ""))
    print("  (0 means bitwise equal; a GPU kernel may fuse p - lr * grad into one multiply-add: last-bit differences"
          + ("; a diverging run magnifies them with every step)" if scale > 1e3 else ")"))

    section("Logistic regression: two Gaussian blobs")
    labels = (torch.rand(n, device=device) < 0.5).float()  # (N,) in {0, 1}
    centres = torch.tensor([[-1.5, -1.0], [1.5, 1.0]], device=device)
    Xc = centres[labels.long()] + torch.randn(n, 2, device=device)  # (N, 2)
    (wc, bc), log_losses = descend_by_hand(logistic_loss, Xc, labels, args.lr * 10, steps)
    accuracy = ((Xc @ wc + bc > 0).float() == labels).float().mean().item()
    print(f"lr {args.lr * 10:g}: loss {log_losses[0]:.4f} (= ln 2 at w = 0) -> {log_losses[-1]:.4f}, "
          f"accuracy {accuracy:.1%}")
    logistic_sgd_diff = max_abs_diff([wc, bc], descend_with_sgd(logistic_loss, Xc, labels, args.lr * 10, steps))
    print(f"torch.optim.SGD from the same start: max abs diff {logistic_sgd_diff:.2e}")

    section("The learning rate: a sweep on the linear problem")
    hess = 2 / n * X1.T @ X1  # (4, 4): the Hessian of the mean squared error, constant for a linear model
    lam_max = float(f"{torch.linalg.eigvalsh(hess.cpu().double()).max().item():.6g}")  # rounded, as above
    print(f"largest Hessian eigenvalue {lam_max:.3f}: gradient descent diverges for lr > 2 / {lam_max:.3f} "
          f"= {2 / lam_max:.3f}")
    sweep = {"tiny": 0.02, "small": 0.2, "good": 1.0, "edge": 1.9, "too_big": 2.1}  # multiples of 1 / lam_max
    curves, metrics_sweep = {}, {}
    k = min(10, steps)  # losses[k]: the loss after k updates
    for name, factor in sweep.items():
        lr = factor / lam_max
        _, losses = descend_by_hand(linear_loss, X, y, lr, steps)
        curves[name] = (lr, losses)
        early = losses[min(k, len(losses) - 1)]
        metrics_sweep[f"loss_at_step_{k}_lr_{name}"] = early
        metrics_sweep[f"final_loss_lr_{name}"] = losses[-1]
        middle = f" -> {early:.4g} at step {k}" if k < len(losses) - 1 else ""
        print(f"  {name:<8} lr {lr:.4f} ({factor:>4} / lam_max): loss {losses[0]:.3f}{middle} "
              f"-> {losses[-1]:.4g} at step {len(losses) - 1}")
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, (lr, losses) in curves.items():
        ax.plot(losses, label=f"{name}: lr = {lr:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean squared error (log scale)")
    ax.set_title(f"Gradient descent on linear regression; diverges above lr = {2 / lam_max:.3f}")
    ax.legend()
    fig.tight_layout()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = args.out_dir / "learning_rates.png"
    fig.savefig(png, dpi=110)
    print(f"loss curves saved to {png}")

    metrics = {
        "linear_initial_loss": lin_losses[0],
        "linear_final_loss": lin_losses[-1],
        "linear_gap_to_least_squares": lstsq_gap,
        "linear_grad_formula_error": formula_error,
        "linear_manual_vs_sgd_max_abs_diff": linear_sgd_diff,
        "logistic_initial_loss": log_losses[0],
        "logistic_final_loss": log_losses[-1],
        "logistic_accuracy": accuracy,
        "logistic_manual_vs_sgd_max_abs_diff": logistic_sgd_diff,
        "hessian_max_eigenvalue": lam_max,
        **metrics_sweep,
    }
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- The update runs under torch.no_grad(): in-place changes to a leaf that requires grad are refused")
    print("  otherwise, and the update is not something to differentiate.")
    print("- Clearing .grad each step is part of the algorithm; optimizer.zero_grad() does it for you.")
    print("- torch.optim.SGD(lr) is p -= lr * p.grad, nothing more; momentum and weight decay are options on top.")
    print("- The usable learning rate is set by the curvature (the Hessian's largest eigenvalue), not by taste.")
    return metrics


if __name__ == "__main__":
    main()

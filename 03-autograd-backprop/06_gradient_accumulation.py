"""Gradient accumulation: the gradient of a big batch from several small ones, and the scaling that makes it exact.

When a batch does not fit in memory, you split it into micro-batches, call `backward()` on each (gradients add up
in `.grad`), and step the optimizer once. With a mean-reduced loss, each micro-batch's loss must be scaled by its
share of the batch (`len(micro) / len(batch)`, which is `1 / accumulation_steps` when the pieces are equal): then the
accumulated gradient *is* the full-batch gradient. This lesson proves it to float rounding, shows the two common
mistakes in numbers (no scaling: a gradient `accumulation_steps` times too large, i.e. a silently multiplied learning
rate; `1 / steps` with an uneven last piece: a biased gradient), trains with both and compares the parameters, and
ends with the case where accumulation cannot be exact: BatchNorm, whose statistics depend on the micro-batch.

Run it:
    python 03-autograd-backprop/06_gradient_accumulation.py
    python 03-autograd-backprop/06_gradient_accumulation.py --device cpu --smoke --batch 30 --micro 8

Takes a few seconds on a laptop CPU. What to look for: accumulated versus full-batch gradient max abs diff
<= 1e-6, the unscaled gradient exactly accumulation_steps times too large, and the two training runs ending on the
same parameters.
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


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
    parser.add_argument("--smoke", action="store_true", help="fewer training steps: a few seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/03-autograd-backprop/06_gradient_accumulation"),
                        help="where metrics.json is written")
    parser.add_argument("--batch", type=int, default=64, help="the full batch size")
    parser.add_argument("--micro", type=int, default=16, help="micro-batch size (the last piece may be smaller)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of the training comparison")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if args.batch < 2 or not 1 <= args.micro < args.batch or args.steps < 1 or args.lr <= 0:
        parser.error("need --batch >= 2, 1 <= --micro < --batch, --steps >= 1, --lr > 0")
    return args


def make_model(seed: int, device, batchnorm: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)  # the same initial weights every time it is called
    layers = [torch.nn.Linear(10, 32)]
    if batchnorm:
        layers.append(torch.nn.BatchNorm1d(32))
    layers += [torch.nn.Tanh(), torch.nn.Linear(32, 1)]
    return torch.nn.Sequential(*layers).to(device)


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def norm(gs: list[torch.Tensor]) -> float:
    return torch.sqrt(sum((g**2).sum() for g in gs)).item()


def full_batch_grad(model, x, y) -> list[torch.Tensor]:
    model.zero_grad()
    F.mse_loss(model(x), y).backward()  # mean over the whole batch
    return grads(model)


def accumulated_grad(model, x, y, micro: int, scaling: str) -> list[torch.Tensor]:
    """scaling: 'share' (len(piece) / len(batch), always right), 'steps' (1 / number of pieces), 'none'."""
    model.zero_grad()
    pieces = list(zip(x.split(micro), y.split(micro), strict=True))  # the last piece may be smaller
    for xm, ym in pieces:
        loss = F.mse_loss(model(xm), ym)  # mean over the micro-batch
        if scaling == "share":
            loss = loss * (len(xm) / len(x))
        elif scaling == "steps":
            loss = loss / len(pieces)
        loss.backward()  # adds into .grad
    return grads(model)


def train(model, x, y, steps: int, lr: float, micro: int | None, zero_grad: bool = True) -> list[float]:
    """SGD on one fixed batch, full-batch (micro=None) or accumulated; returns the full-batch loss per step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        with torch.no_grad():
            losses.append(F.mse_loss(model(x), y).item())
        if zero_grad:
            opt.zero_grad()
        if micro is None:
            F.mse_loss(model(x), y).backward()
        else:
            for xm, ym in zip(x.split(micro), y.split(micro), strict=True):
                (F.mse_loss(model(xm), ym) * (len(xm) / len(x))).backward()
        opt.step()
    return losses


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    steps = min(args.steps, 20) if args.smoke else args.steps
    n_pieces = -(-args.batch // args.micro)
    print(f"device: {device}; batch {args.batch} = {n_pieces} micro-batches of <= {args.micro}")

    x = torch.randn(args.batch, 10, device=device)  # (B, 10)
    y = torch.sin(x[:, :1] * 2) + 0.5 * x[:, 1:2]  # (B, 1): a smooth target to regress
    model = make_model(args.seed, device)

    section("Full batch versus accumulated micro-batches, loss scaled by each piece's share")
    g_full = full_batch_grad(model, x, y)
    g_share = accumulated_grad(model, x, y, args.micro, "share")
    correct_diff = max_abs_diff(g_share, g_full)
    print(f"max abs diff to the full-batch gradient: {correct_diff:.2e}  (float rounding: sums in another order)")

    section("Mistake 1: no scaling (each micro-batch loss is already a mean)")
    g_none = accumulated_grad(model, x, y, args.micro, "none")
    wrong_ratio = norm(g_none) / norm(g_full)
    wrong_diff = max_abs_diff(g_none, g_full)
    print(f"|g_unscaled| / |g_full| = {wrong_ratio:.4f}  (the number of pieces is {n_pieces}); "
          f"max abs diff {wrong_diff:.2e}")
    print(f"  -> the same as training with a learning rate {n_pieces} times larger, without meaning to")

    section("Mistake 2: dividing by the number of pieces when the last piece is smaller")
    uneven_batch = args.batch - args.micro // 2  # e.g. 64 - 8 = 56: pieces 16, 16, 16, 8
    xu, yu = x[:uneven_batch], y[:uneven_batch]
    sizes = [len(p) for p in xu.split(args.micro)]
    gu_full = full_batch_grad(model, xu, yu)
    uneven_share_diff = max_abs_diff(accumulated_grad(model, xu, yu, args.micro, "share"), gu_full)
    uneven_steps_diff = max_abs_diff(accumulated_grad(model, xu, yu, args.micro, "steps"), gu_full)
    equal_steps_diff = max_abs_diff(accumulated_grad(model, x, y, args.micro, "steps"), g_full)
    print(f"pieces {sizes}: scale by share -> {uneven_share_diff:.2e}; scale by 1/{len(sizes)} -> "
          f"{uneven_steps_diff:.2e} (the small piece's examples weigh more)")
    if args.batch % args.micro == 0:
        print(f"with equal pieces ({args.batch} / {args.micro}) 1/{n_pieces} is the share: {equal_steps_diff:.2e}")

    section(f"Training {steps} SGD steps: full batch versus accumulation")
    full_model = make_model(args.seed, device)
    accum_model = make_model(args.seed, device)
    forgot_model = make_model(args.seed, device)
    full_losses = train(full_model, x, y, steps, args.lr, None)
    accum_losses = train(accum_model, x, y, steps, args.lr, args.micro)
    forgot_losses = train(forgot_model, x, y, steps, args.lr, args.micro, zero_grad=False)
    train_diff = max_abs_diff(list(full_model.parameters()), list(accum_model.parameters()))
    forgot_diff = max_abs_diff(list(full_model.parameters()), list(forgot_model.parameters()))
    print(f"full batch:          loss {full_losses[0]:.4f} -> {full_losses[-1]:.4f}")
    print(f"accumulated:         loss {accum_losses[0]:.4f} -> {accum_losses[-1]:.4f}; "
          f"parameters max abs diff {train_diff:.2e}")
    print(f"accumulated, no zero_grad between steps: loss -> {forgot_losses[-1]:.4f}; "
          f"parameters max abs diff {forgot_diff:.2e}")
    print("  (without zero_grad each step re-applies every earlier gradient too: a different optimizer from the")
    print("  one you configured, like momentum with beta = 1; whatever its loss does, it is not this SGD)")

    section("Where accumulation cannot be exact: BatchNorm")
    bn_model = make_model(args.seed, device, batchnorm=True)
    bn_diff = max_abs_diff(accumulated_grad(bn_model, x, y, args.micro, "share"), full_batch_grad(bn_model, x, y))
    print(f"with BatchNorm1d the accumulated gradient differs by {bn_diff:.2e}: each micro-batch is normalised")
    print("with its own mean and variance, so the forward itself is different (use GroupNorm/LayerNorm, or")
    print("accept it: with micro-batches of a few dozen examples the statistics are close)")

    metrics = {
        "pieces": n_pieces,
        "correct_scaling_max_abs_diff": correct_diff,
        "no_scaling_norm_ratio": wrong_ratio,
        "no_scaling_max_abs_diff": wrong_diff,
        "uneven_share_scaling_max_abs_diff": uneven_share_diff,
        "uneven_steps_scaling_max_abs_diff": uneven_steps_diff,
        "full_batch_steps_scaling_max_abs_diff": equal_steps_diff,
        "full_batch_initial_loss": full_losses[0],
        "full_batch_final_loss": full_losses[-1],
        "accumulated_final_loss": accum_losses[-1],
        "training_params_max_abs_diff": train_diff,
        "forgot_zero_grad_params_max_abs_diff": forgot_diff,
        "batchnorm_max_abs_diff": bn_diff,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- backward() adds into .grad; accumulation is just not calling zero_grad() between micro-batches.")
    print("- Scale each mean loss by len(micro) / len(batch) (1/steps only when the pieces are equal), or sum the")
    print("  losses with reduction='sum' and divide once by the batch size.")
    print("- zero_grad() once per optimizer step, after step(), not once per micro-batch and not never.")
    print("- Memory for activations scales with the micro-batch; the gradient is the big batch's. Only layers")
    print("  that mix examples (BatchNorm) tell the difference.")
    return metrics


if __name__ == "__main__":
    main()

"""Learning-rate scheduling: the same model, the same data, eight schedules, one table.

The learning rate is the knob that matters most in training. torch.optim.lr_scheduler changes it as training goes.
This lesson trains one small MLP (same initial weights, same batch order) under each schedule: constant, StepLR,
MultiStepLR, ExponentialLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, OneCycleLR, and a linear warm-up chained
to cosine decay with SequentialLR (the recipe most transformer papers use). It plots every schedule, checks the cosine
scheduler against its closed form, and compares the final losses in a table.

Run it:
    python 05-training-optimization/01_learning_rate_scheduling.py
    python 05-training-optimization/01_learning_rate_scheduling.py --epochs 60 --lr 0.2

Takes about 6 seconds on a 2-core CPU (--smoke: about 4 s).
What to look for: the schedules in lr_schedules.png; how many decaying schedules end with a lower loss than the
constant rate (the line "N/6 decaying schedules beat the constant lr": 4/6 by default); the scheduler's cosine
matches 0.5 * lr * (1 + cos(pi * t / T)) to float precision. Epoch schedulers step once per epoch, OneCycleLR once
per batch: calling step() in the wrong place is the most common scheduler bug.
"""

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.optim import lr_scheduler

SCHEDULES = ("constant", "step", "multistep", "exponential", "cosine", "cosine_restarts", "onecycle", "warmup_cosine")


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
                        help="where to train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="tiny data and few epochs: a few seconds on a CPU")
    parser.add_argument("--out-dir", type=Path,
                        default=Path("outputs/05-training-optimization/01_learning_rate_scheduling"),
                        help="where the plot and metrics.json are written")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per schedule (--smoke uses 6)")
    parser.add_argument("--lr", type=float, default=0.1, help="base (peak) learning rate of SGD with momentum 0.9")
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
    if args.epochs < 4 or args.lr <= 0 or args.batch_size < 1:
        parser.error("need --epochs >= 4, --lr > 0 and --batch-size >= 1")
    return args


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable 4-class task: labels are the argmax of a fixed random 'teacher' network."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)  # (N, 16)
    w1, w2 = torch.randn(16, 32, generator=g), torch.randn(32, 4, generator=g)
    y = (torch.tanh(x @ w1) @ w2).argmax(dim=1)  # (N,)
    return x, y


def make_scheduler(name: str, opt, epochs: int, steps_per_epoch: int, lr: float):
    """(scheduler or None, steps_per_batch). Epoch schedulers count epochs; OneCycleLR counts optimizer steps."""
    if name == "constant":
        return None, False
    if name == "step":
        return lr_scheduler.StepLR(opt, step_size=epochs // 3, gamma=0.1), False
    if name == "multistep":
        return lr_scheduler.MultiStepLR(opt, milestones=[epochs // 2, 3 * epochs // 4], gamma=0.1), False
    if name == "exponential":
        return lr_scheduler.ExponentialLR(opt, gamma=0.01 ** (1 / epochs)), False  # 1% of lr after `epochs`
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(opt, T_max=epochs), False
    if name == "cosine_restarts":
        return lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=max(1, epochs // 3)), False
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch), True
    if name == "warmup_cosine":
        warm = max(1, epochs // 10)
        warmup = lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=warm)
        decay = lr_scheduler.CosineAnnealingLR(opt, T_max=epochs - warm)
        return lr_scheduler.SequentialLR(opt, schedulers=[warmup, decay], milestones=[warm]), False
    raise ValueError(name)


def train(name, data, args, device) -> dict:
    x_train, y_train, x_val, y_val = (t.to(device) for t in data)
    torch.manual_seed(args.seed)  # same initial weights and batch order for every schedule
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    steps = math.ceil(len(x_train) / args.batch_size)
    sched, per_batch = make_scheduler(name, opt, args.epochs, steps, args.lr)
    loss_fn = nn.CrossEntropyLoss()
    lrs, epoch_losses = [], []
    for _ in range(args.epochs):
        order = torch.randperm(len(x_train), device=device)
        total = 0.0
        for i in range(steps):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            lrs.append(opt.param_groups[0]["lr"])  # the lr this step actually used
            opt.step()  # optimizer first, then scheduler (the other order skips the first value and warns)
            if sched is not None and per_batch:
                sched.step()
            total += loss.item() * len(idx)
        if sched is not None and not per_batch:
            sched.step()  # once per epoch
        epoch_losses.append(total / len(x_train))
    with torch.no_grad():
        val_acc = (model(x_val).argmax(1) == y_val).float().mean().item()
    return {"lrs": lrs, "losses": epoch_losses, "val_acc": val_acc, "steps": steps}


def spread_note(results: dict) -> str:
    """How far the schedules moved the final training loss and the val accuracy, from best to worst."""
    losses = [r["losses"][-1] for r in results.values()]
    accs = [r["val_acc"] for r in results.values()]
    ratio, acc_spread = max(losses) / min(losses), max(accs) - min(accs)
    said = (f"- From the best schedule to the worst, the final training loss changed {ratio:.1f}x and the val "
            f"accuracy by {acc_spread:.3f}")
    if ratio >= 1.5 and acc_spread <= 0.05:
        return (f"{said}: a lower training loss is not automatically better generalisation "
                "(04_early_stopping.py).")
    return f"{said}: judge schedules on the validation set, not on the training loss."


def no_learning_note(results: dict, lr: float, batch_size: int, epochs: int) -> str:
    """A note naming the schedules whose val accuracy stayed near chance (0.25, 4 classes); empty when all learned."""
    failed = [n for n, r in results.items() if r["val_acc"] < 0.40]
    if not failed:
        return ""
    accs = [results[n]["val_acc"] for n in failed]
    losses = [results[n]["losses"][-1] for n in failed]
    who = ("No schedule learned the task here" if len(failed) == len(results) else
           f"{len(failed)} of the {len(results)} schedules did not learn the task here ({', '.join(failed)})")
    if lr > 0.01:
        cause = (f"lr {lr:g} with momentum 0.9 is too large for batches of {batch_size}: lower --lr or raise "
                 "--batch-size")
    else:
        cause = f"lr {lr:g} moves the weights too little in {epochs} epochs: raise --lr or --epochs"
    return (f"- {who}:\n  val accuracy {min(accs):.3f}-{max(accs):.3f} against chance 0.25, final train loss "
            f"{min(losses):.2f}-{max(losses):.2f} against ln 4 = 1.39 for uniform guessing.\n  {cause},\n"
            "  and compare schedules only on runs that learned.")


def plot(results: dict, epochs: int, path: Path) -> None:
    fig = Figure(figsize=(12, 4.5))
    ax_lr, ax_loss = fig.subplots(1, 2)
    for name, r in results.items():
        t = np.arange(len(r["lrs"])) / r["steps"]  # x axis in epochs, fractional for per-batch values
        ax_lr.plot(t, r["lrs"], label=name)
        ax_loss.plot(np.arange(1, epochs + 1), r["losses"], label=name)
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="Schedules (lr used at each optimizer step)")
    ax_loss.set(xlabel="epoch", ylabel="train loss", yscale="log", title="Training loss")
    ax_lr.legend(fontsize=8)
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    if args.smoke:
        args.epochs = 6
    n_train = 512 if args.smoke else 2048
    x, y = make_data(n_train + 1024, args.seed)
    data = (x[:n_train], y[:n_train], x[n_train:], y[n_train:])
    print(f"device {device}; {n_train} training samples, 16 features, 4 classes; {args.epochs} epochs, "
          f"base lr {args.lr}")

    section("Training the same model under each schedule")
    results = {}
    for name in SCHEDULES:
        results[name] = train(name, data, args, device)
        r = results[name]
        print(f"  {name:<16} lr first {r['lrs'][0]:.4f}  max {max(r['lrs']):.4f}  last {r['lrs'][-1]:.5f}  "
              f"final loss {r['losses'][-1]:.4f}")

    section("Check: CosineAnnealingLR against its closed form")
    cos = results["cosine"]
    per_epoch = cos["lrs"][:: cos["steps"]]  # the lr of each epoch's first step
    closed = [0.5 * args.lr * (1 + math.cos(math.pi * e / args.epochs)) for e in range(args.epochs)]
    cos_diff = max(abs(a - b) for a, b in zip(per_epoch, closed, strict=True))
    print(f"lr_e = 0.5 * lr * (1 + cos(pi * e / T_max)): max abs diff over {args.epochs} epochs = {cos_diff:.2e}")
    warm = results["warmup_cosine"]["lrs"]
    print(f"warm-up: first lr {warm[0]:.4f} (= 0.1 x {args.lr}), peak {max(warm):.4f}; "
          f"OneCycleLR peak {max(results['onecycle']['lrs']):.4f}, last {results['onecycle']['lrs'][-1]:.2e}")

    section("Final losses (same task, same init, same batches)")
    print(f"  {'schedule':<16} {'final train loss':>16} {'val accuracy':>13}")
    for name in sorted(SCHEDULES, key=lambda n: results[n]["losses"][-1]):
        print(f"  {name:<16} {results[name]['losses'][-1]:>16.4f} {results[name]['val_acc']:>13.3f}")
    best = min(SCHEDULES, key=lambda n: results[n]["losses"][-1])
    decayed = ("step", "multistep", "exponential", "cosine", "onecycle", "warmup_cosine")
    beat = sum(results[n]["losses"][-1] < results["constant"]["losses"][-1] for n in decayed)
    print(f"lowest final loss: {best}; {beat}/{len(decayed)} decaying schedules beat the constant lr")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = args.out_dir / "lr_schedules.png"
    plot(results, args.epochs, png)
    print(f"plot: {png}")

    metrics = {f"final_loss_{n}": results[n]["losses"][-1] for n in SCHEDULES}
    metrics.update({f"val_acc_{n}": results[n]["val_acc"] for n in SCHEDULES})
    metrics.update({
        "initial_loss": results["constant"]["losses"][0], "cosine_closed_form_max_abs_diff": cos_diff,
        "warmup_first_lr": warm[0], "warmup_peak_lr": max(warm), "onecycle_peak_lr": max(results["onecycle"]["lrs"]),
        "onecycle_last_lr": results["onecycle"]["lrs"][-1], "decaying_schedules_beating_constant": beat,
        "base_lr": args.lr,
    })
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Epoch schedulers (StepLR, Cosine, ...) step once per epoch; OneCycleLR steps once per optimizer step.")
    print("- Call optimizer.step() before scheduler.step(); the lr printed is the one each step actually used.")
    print("- Warm-up starts small so early, noisy gradients cannot throw the weights far; SequentialLR chains phases.")
    print(f"- Decaying the lr at the end lets SGD settle into a minimum: {beat} of the {len(decayed)} decaying "
          "schedules ended below the constant rate's loss here"
          + ("." if beat == len(decayed) else "; how and when it decays matters as much as decaying."))
    if note := no_learning_note(results, args.lr, args.batch_size, args.epochs):
        print(note)
    else:
        print(spread_note(results))
    return metrics


if __name__ == "__main__":
    main()

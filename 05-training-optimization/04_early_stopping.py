"""Early stopping: watch the validation loss, stop when it stops improving, and keep the best weights.

A large network trained on a few noisy points first learns the signal, then memorises the noise: the training loss
keeps falling while the validation loss turns back up. Early stopping ends training once the validation loss has not
improved by at least `min_delta` for `patience` epochs, then restores the weights of the best epoch (not the last
ones, which are already `patience` epochs into overfitting). This lesson writes the EarlyStopping class, lets it stop
an overfitting run long before its epoch limit, and proves that the restored weights are exactly the best epoch's.

Run it:
    python 05-training-optimization/04_early_stopping.py
    python 05-training-optimization/04_early_stopping.py --patience 200   # waits out the plateau, finds a later minimum

Takes about 5 seconds on a 2-core CPU (--smoke: about 5 s: most of it is starting Python and torch).
What to look for: the stop epoch well below the limit; restored weights equal to the best epoch's snapshot
(max abs diff 0) and different from the last epoch's; the validation loss back at its minimum after restoring;
early_stopping.png with both curves.
"""

import argparse
import copy
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
                        help="where to train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="a shorter epoch limit: a few seconds on a CPU")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/05-training-optimization/04_early_stopping"),
                        help="where the plot and metrics.json are written")
    parser.add_argument("--max-epochs", type=int, default=2000, help="the epoch limit (--smoke uses 600)")
    parser.add_argument("--patience", type=int, default=30, help="epochs without improvement before stopping")
    parser.add_argument("--min-delta", type=float, default=1e-4, help="smallest decrease that counts as improvement")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
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
    if args.max_epochs < 1 or args.patience < 1 or args.min_delta < 0 or args.lr <= 0:
        parser.error("need --max-epochs >= 1, --patience >= 1, --min-delta >= 0 and --lr > 0")
    return args


class EarlyStopping:
    """Call step(val_loss, model) once per epoch; it returns True when training should stop.

    An epoch improves when val_loss < best - min_delta. After `patience` epochs in a row without improvement it
    says stop. With restore_best, restore(model) puts back the weights of the best epoch.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, restore_best: bool = True):
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self.best = float("inf")
        self.best_epoch = -1
        self.bad_epochs = 0
        self.best_state = None
        self.epoch = -1

    def step(self, val_loss: float, model: nn.Module) -> bool:
        self.epoch += 1
        if val_loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
            if self.restore_best:  # a deep copy: state_dict() returns references that the next step would change
                self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.restore_best and self.best_state is not None:
            model.load_state_dict(self.best_state)


NOISE_FLOOR = 0.09  # the noise variance: the best validation MSE any model can reach
DEFAULT_LR = 3e-3


def reference_verdict(train_last: float, val_lowest: float, val_last: float) -> str:
    """What the run without early stopping shows at its limit, read from its own numbers."""
    if val_last <= val_lowest:
        return "(still at its lowest at the limit: no overfitting within these epochs)"
    if train_last < NOISE_FLOOR:
        return f"(train loss {train_last:.4f}, below the {NOISE_FLOOR} noise floor: the model memorises the noise)"
    return (f"(val loss rose, but the train loss {train_last:.4f} is above the {NOISE_FLOOR} noise floor: the model "
            "never fit the training points, so this is not memorising noise)")


def train_verdict(train_at_best: float, train_at_stop: float, lr: float) -> str:
    """Did the train loss keep falling after the best epoch (overfitting), or not?"""
    numbers = f"{train_at_best:.4f} at the best epoch, {train_at_stop:.4f} at the stop"
    if train_at_stop < train_at_best:
        return f"train loss kept falling: {numbers}"
    if train_at_stop == train_at_best:
        return f"train loss did not change: {numbers}"
    why = (f": Adam's steps at --lr {lr:g} overshoot, so this is unstable training, not overfitting "
           f"(the default is --lr {DEFAULT_LR:g})" if lr > DEFAULT_LR else "")
    return f"train loss rose: {numbers}{why}"


def restore_verdict(stopped_early: bool, best_epoch: int, stop_epoch: int, last_val: float, restored_val: float,
                    lowest_val: float, min_delta: float, train_at_best: float, train_at_stop: float) -> str:
    """The 'what to notice' line about restoring, true for this run's numbers."""
    change = f"val loss {last_val:.4f} -> {restored_val:.4f}"
    if best_epoch == stop_epoch:
        return "- The best epoch was the last one: restoring had nothing to undo."
    if not stopped_early:
        return (f"- The epoch limit came {stop_epoch - best_epoch} epochs after the best one, before `patience` ran "
                f"out; restoring still goes back to the best epoch ({change}).")
    if restored_val > last_val:
        return (f"- Restoring made things worse here ({change}): later epochs reached {lowest_val:.4f}, but none beat "
                f"epoch {best_epoch} by --min-delta {min_delta:g}, so the kept epoch is an early, underfit one; "
                "min_delta must be small next to the loss.")
    if restored_val == last_val:
        return f"- The stop comes `patience` epochs after the best one; restoring left the {change} unchanged."
    if train_at_stop >= train_at_best:
        return (f"- The stop comes `patience` epochs after the best one; restoring undoes them ({change}), but they "
                "were unstable training (the train loss rose), not overfitting.")
    if train_at_best >= NOISE_FLOOR:
        return (f"- The stop comes `patience` epochs after the best one; restoring undoes them ({change}), but the "
                f"train loss {train_at_best:.4f} was still above the {NOISE_FLOOR} noise floor: the model was still "
                "learning the signal, and the stop came on a bump in the val loss (a larger --patience waits it out).")
    return "- The stop comes `patience` epochs after the best one; restoring undoes those overfitting epochs."


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    if args.smoke:
        args.max_epochs = 600

    section("An overfitting setup: 24 noisy points, a 2x128 MLP")
    g = torch.Generator().manual_seed(args.seed)
    x_train = torch.rand(24, 1, generator=g) * 4 - 2  # (24, 1) in [-2, 2]
    y_train = torch.sin(2 * x_train) + 0.3 * torch.randn(24, 1, generator=g)  # signal + noise
    x_val = torch.rand(200, 1, generator=g) * 4 - 2
    y_val = torch.sin(2 * x_val) + 0.3 * torch.randn(200, 1, generator=g)
    x_train, y_train, x_val, y_val = (t.to(device) for t in (x_train, y_train, x_val, y_val))
    loss_fn = nn.MSELoss()

    def fresh_model():
        torch.manual_seed(args.seed)  # both runs below start from the same weights
        net = nn.Sequential(nn.Linear(1, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 1))
        return net.to(device), torch.optim.Adam(net.parameters(), lr=args.lr)

    def train_step(model, opt) -> float:
        model.train()
        loss = loss_fn(model(x_train), y_train)  # full batch: 24 points, one step per epoch
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    def val_loss(model) -> float:
        model.eval()
        with torch.no_grad():
            return loss_fn(model(x_val), y_val).item()

    print(f"device {device}; noise variance 0.09 is the best validation MSE any model can reach; "
          f"epoch limit {args.max_epochs}, patience {args.patience}, min_delta {args.min_delta}")

    section(f"Reference: the same run without early stopping, all {args.max_epochs} epochs")
    model, opt = fresh_model()
    full_val = []
    for _ in range(args.max_epochs):
        full_train_last = train_step(model, opt)
        full_val.append(val_loss(model))
    full_best = int(np.argmin(full_val))
    print(f"val loss: lowest {full_val[full_best]:.4f} at epoch {full_best}, {full_val[-1]:.4f} at the limit "
          + reference_verdict(full_train_last, full_val[full_best], full_val[-1]))

    section("Training with EarlyStopping")
    model, opt = fresh_model()
    stopper = EarlyStopping(args.patience, args.min_delta, restore_best=True)
    snapshots, train_curve, val_curve = [], [], []  # snapshots: every epoch's weights, only to prove the restore
    stopped_early = False
    for epoch in range(args.max_epochs):
        train_curve.append(train_step(model, opt))
        val_curve.append(val_loss(model))
        snapshots.append(flat(model))
        if epoch % 25 == 0:
            print(f"  epoch {epoch:>4}: train {train_curve[-1]:.4f}  val {val_curve[-1]:.4f}  "
                  f"(best {min(val_curve):.4f}, {stopper.bad_epochs} bad epochs)")
        if stopper.step(val_curve[-1], model):
            stopped_early = True
            break
    stop_epoch = len(val_curve) - 1
    print(f"stopped at epoch {stop_epoch} of {args.max_epochs} "
          f"({'early stop' if stopped_early else 'hit the limit'}); best epoch {stopper.best_epoch}, "
          f"{stop_epoch - stopper.best_epoch} epochs after it")

    section("Restoring the best weights")
    last_val = val_loss(model)
    stopper.restore(model)
    restored = flat(model)
    diff_best = (restored - snapshots[stopper.best_epoch]).abs().max().item()
    diff_last = (restored - snapshots[-1]).abs().max().item()
    restored_val = val_loss(model)
    print(f"restored vs best epoch's snapshot: max abs diff {diff_best:.1e}; vs last epoch's: {diff_last:.2e}")
    print(f"val loss at the last epoch {last_val:.4f}; after restoring {restored_val:.4f} "
          f"(recorded best {stopper.best:.4f}, equal: {restored_val == stopper.best})")
    print(train_verdict(train_curve[stopper.best_epoch], train_curve[-1], args.lr))
    print(f"vs training to the limit: val {full_val[-1]:.4f} after {args.max_epochs} epochs; early stopping kept "
          f"{restored_val:.4f} and saved {args.max_epochs - 1 - stop_epoch} epochs of compute")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(train_curve, label="train MSE")
    ax.plot(full_val, color="tab:orange", alpha=0.35, label="validation MSE, no early stopping")
    ax.plot(val_curve, color="tab:orange", label="validation MSE")
    ax.axvline(stopper.best_epoch, color="green", linestyle="--", label=f"best epoch {stopper.best_epoch}")
    ax.axvline(stop_epoch, color="red", linestyle=":", label=f"stopped at {stop_epoch}")
    ax.axhline(0.09, color="gray", linewidth=0.8, label="noise floor")
    ax.set(xlabel="epoch", ylabel="MSE", yscale="log", title=f"Early stopping, patience {args.patience}")
    ax.legend()
    fig.tight_layout()
    png = args.out_dir / "early_stopping.png"
    fig.savefig(png, dpi=100)
    print(f"plot: {png}")

    metrics = {
        "max_epochs": args.max_epochs, "stop_epoch": stop_epoch, "best_epoch": stopper.best_epoch,
        "stopped_early": stopped_early, "patience": args.patience, "best_val_loss": stopper.best,
        "last_val_loss": last_val, "restored_val_loss": restored_val,
        "restored_vs_best_epoch_max_abs_diff": diff_best, "restored_vs_last_epoch_max_abs_diff": diff_last,
        "train_loss_at_best": train_curve[stopper.best_epoch], "train_loss_at_stop": train_curve[-1],
        "val_loss_at_limit_without_stopping": full_val[-1],
        "lowest_val_loss_without_stopping": full_val[full_best], "epochs_saved": args.max_epochs - 1 - stop_epoch,
    }
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print(restore_verdict(stopped_early, stopper.best_epoch, stop_epoch, last_val, restored_val, min(val_curve),
                          args.min_delta, train_curve[stopper.best_epoch], train_curve[-1]))
    print("- Keep a deep copy of the best state_dict: state_dict() alone returns tensors the optimizer keeps changing.")
    print("- min_delta stops tiny, noisy 'improvements' from resetting the patience counter.")
    print(f"- Patience trades compute for a later minimum: the unstopped run reached {full_val[full_best]:.4f} at "
          f"epoch {full_best}, early stopping settled for {restored_val:.4f} at epoch {stopper.best_epoch}.")
    return metrics


if __name__ == "__main__":
    main()

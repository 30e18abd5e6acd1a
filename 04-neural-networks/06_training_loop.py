"""The complete training pipeline: Dataset, DataLoader, train/val/test split, train and eval, best model, test.

Every supervised training script in this course has the same skeleton, shown here once in full on a small 2-D
problem (three interleaved spirals) so that it runs in seconds: a Dataset that returns one (x, y) pair, a seeded
random split into train / validation / test, DataLoaders, a training epoch (train mode, zero_grad, forward, loss,
backward, step), an evaluation pass (eval mode, torch.no_grad), per-epoch metrics, keeping the weights of the best
validation epoch, and one final measurement on the test set, which is touched exactly once. It ends by rerunning
training with the same seed and showing the weights come out identical. Before the real training it runs the
check every new training script deserves: overfit one batch (the loss must reach ~0), shown passing and shown
catching a broken optimizer wiring.

Run it:
    python 04-neural-networks/06_training_loop.py
    python 04-neural-networks/06_training_loop.py --epochs 60 --lr 3e-3

Takes about 5 s on a 2-core CPU. What to look for: train loss falling epoch by epoch, the epoch the best
validation accuracy was reached, test accuracy far above chance (33%), and a reproducibility difference of 0.
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
from torch.utils.data import DataLoader, Dataset, random_split


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
                        help="where the model trains; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="600 points, 6 epochs: a few seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/04-neural-networks/06_training_loop"),
                        help="where metrics.json, the best checkpoint and the curves go")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per optimizer step")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--points", type=int, default=3000, help="size of the whole dataset before the split")
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
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.points < 60:
        parser.error("need --epochs >= 1, --batch-size >= 1, --lr > 0 and --points >= 60")
    return args


class Spirals(Dataset):
    """Three noisy interleaved spirals in the plane: x (2,) float, y class index 0..2. Not linearly separable."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % 3  # (N,) balanced classes
        r = torch.rand(n, generator=g)  # (N,) radius 0..1
        angle = 3.5 * r + y * (2 * math.pi / 3) + 0.4 * torch.randn(n, generator=g)
        self.x = torch.stack([r * angle.cos(), r * angle.sin()], dim=1)  # (N, 2)
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]  # one example; DataLoader stacks them into (B, 2) and (B,)


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 64), nn.ReLU(),
                         nn.Dropout(0.1), nn.Linear(64, 3))


def train_one_epoch(model, loader, loss_fn, optimizer, device) -> tuple[float, float]:
    model.train()  # dropout on
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)  # (B, 2), (B,)
        optimizer.zero_grad()  # gradients accumulate otherwise
        logits = model(x)  # (B, 3)
        loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)  # weight by batch size: the last batch may be smaller
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return total_loss / seen, correct / seen


@torch.no_grad()  # no graph is built: less memory, faster, and nothing can leak into .grad
def evaluate(model, loader, loss_fn, device) -> tuple[float, float]:
    model.eval()  # dropout off: deterministic predictions
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total_loss += loss_fn(logits, y).item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return total_loss / seen, correct / seen


def overfit_one_batch(seed: int, x, y, steps: int, device, wired: bool = True) -> list[float]:
    """The sanity check to run before any long training: a fresh model, dropout off, one fixed batch, many steps.
    A correct model + loss + optimizer wiring drives the loss to ~0. wired=False makes the classic bug: an
    optimizer built on another model instance's parameters (e.g. created before the model was rebuilt)."""
    torch.manual_seed(seed)
    model = make_model().to(device)
    optimizer = torch.optim.Adam((model if wired else make_model().to(device)).parameters(), lr=1e-2)
    model.eval()  # dropout off: memorising a batch must not be fought by regularisation
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def build(seed: int, points: int, batch_size: int):
    """Dataset, split and loaders, all seeded: the same seed gives the same split and the same batch order."""
    full = Spirals(points, seed)
    split = random_split(full, [0.7, 0.15, 0.15], generator=torch.Generator().manual_seed(seed))
    train_set, val_set, test_set = split
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))  # its own RNG for the shuffle
    val_loader = DataLoader(val_set, batch_size=256)  # no shuffle needed to evaluate
    test_loader = DataLoader(test_set, batch_size=256)
    return train_loader, val_loader, test_loader


def fit(seed: int, epochs: int, args, device, verbose: bool):
    """Train from scratch; return the model (best weights loaded), its history and the best epoch."""
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = build(seed, args.points_used, args.batch_size)
    model = make_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    history = {"train_loss": [], "train_acc": [], "val_loss": [], "val_acc": []}
    best_acc, best_epoch, best_state = -1.0, 0, None
    for epoch in range(1, epochs + 1):
        tr_loss, tr_acc = train_one_epoch(model, train_loader, loss_fn, optimizer, device)
        va_loss, va_acc = evaluate(model, val_loader, loss_fn, device)
        for key, value in zip(history, (tr_loss, tr_acc, va_loss, va_acc)):
            history[key].append(value)
        if va_acc > best_acc:  # best-model selection on validation, never on test
            best_acc, best_epoch = va_acc, epoch
            best_state = copy.deepcopy(model.state_dict())  # a copy: the live tensors keep changing
        if verbose and (epoch == 1 or epoch % max(1, epochs // 10) == 0 or epoch == epochs):
            print(f"  epoch {epoch:>3}  train loss {tr_loss:.4f} acc {tr_acc:.3f}   val loss {va_loss:.4f} "
                  f"acc {va_acc:.3f}{'  *best' if epoch == best_epoch else ''}")
    model.load_state_dict(best_state)
    return model, history, best_epoch, best_acc, (train_loader, val_loader, test_loader), loss_fn


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    epochs = 6 if args.smoke else args.epochs
    args.points_used = 600 if args.smoke else args.points
    args.out_dir.mkdir(parents=True, exist_ok=True)

    section("Data: a Dataset, a seeded split, DataLoaders")
    train_loader, val_loader, test_loader = build(args.seed, args.points_used, args.batch_size)
    sizes = [len(loader.dataset) for loader in (train_loader, val_loader, test_loader)]
    x0, y0 = next(iter(train_loader))
    print(f"{args.points_used} points -> train {sizes[0]} / validation {sizes[1]} / test {sizes[2]} (70/15/15)")
    print(f"one training batch: x {tuple(x0.shape)} {x0.dtype}, y {tuple(y0.shape)} {y0.dtype}; "
          f"{len(train_loader)} batches per epoch (the last one has {sizes[0] % args.batch_size or args.batch_size})")
    print("Train: fits the weights. Validation: picks epochs/hyperparameters. Test: reported once, at the end.")

    section("Sanity check first: overfit one batch")
    xb, yb = x0[:32].to(device), y0[:32].to(device)  # (<=32, 2), (<=32,): one fixed batch
    overfit_steps = 100 if args.smoke else 300
    t0 = time.perf_counter()
    good = overfit_one_batch(args.seed, xb, yb, overfit_steps, device)
    overfit_s = time.perf_counter() - t0
    broken = overfit_one_batch(args.seed, xb, yb, overfit_steps, device, wired=False)
    print(f"{len(yb)} examples, {overfit_steps} Adam steps, dropout off: loss {good[0]:.3f} -> {good[-1]:.4f} "
          f"in {overfit_s:.2f} s: " + ("passed (near 0)" if good[-1] < 0.05 else "NOT near 0: look for the bug"))
    print(f"the same with the optimizer built on another model's parameters: {broken[0]:.3f} -> {broken[-1]:.4f}: "
          + ("caught (the loss did not fall)" if broken[-1] > 0.5 * broken[0] else "the loss fell"))
    print("a working loop memorises one batch; if it cannot, the bug is in the model, loss or optimizer wiring, and")
    print("no amount of data or epochs will fix it. Run this check before every new training script.")

    section(f"Training for {epochs} epochs (Adam lr {args.lr}, batch {args.batch_size})")
    t0 = time.perf_counter()
    model, history, best_epoch, best_val, loaders, loss_fn = fit(args.seed, epochs, args, device, verbose=True)
    train_s = time.perf_counter() - t0
    print(f"best validation accuracy {best_val:.3f} at epoch {best_epoch}; training took {train_s:.1f} s")

    section("Checkpoint the best model, reload it, test once")
    ckpt = args.out_dir / "best_model.pt"
    torch.save({"model": model.state_dict(), "epoch": best_epoch, "val_acc": best_val}, ckpt)
    restored = make_model().to(device)
    saved = torch.load(ckpt, map_location=device, weights_only=True)  # tensors and plain numbers only
    restored.load_state_dict(saved["model"])
    test_loss, test_acc = evaluate(restored, loaders[2], loss_fn, device)
    _, val_check = evaluate(restored, loaders[1], loss_fn, device)
    print(f"{ckpt} reloaded (epoch {saved['epoch']}); its validation accuracy again: {val_check:.3f}")
    print(f"TEST: loss {test_loss:.4f}, accuracy {test_acc:.3f} (chance: 0.333)")

    section("Evaluation mode and no_grad, checked")
    x_val = torch.stack([loaders[1].dataset[i][0] for i in range(min(32, len(loaders[1].dataset)))]).to(device)
    restored.train()
    with torch.no_grad():
        train_mode_diff = (restored(x_val) - restored(x_val)).abs().max().item()
    restored.eval()
    with torch.no_grad():
        out = restored(x_val)
        eval_mode_diff = (out - restored(x_val)).abs().max().item()
    print(f"train mode: two passes over the same batch differ by {train_mode_diff:.4f} (dropout); eval mode: "
          f"{eval_mode_diff:.1e}")
    print(f"under no_grad the output has requires_grad={out.requires_grad} and grad_fn={out.grad_fn}: no graph kept")

    section("Reproducibility: same seed, same weights")
    short = 1 if args.smoke else 2
    a = fit(args.seed + 1, short, args, device, verbose=False)[0].state_dict()
    b = fit(args.seed + 1, short, args, device, verbose=False)[0].state_dict()
    repro = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"two {short}-epoch runs with seed {args.seed + 1}: largest weight difference {repro:.1e}")
    print("Seeded: torch.manual_seed (init, dropout), random_split's generator, the DataLoader's generator.")
    print("On a GPU, bitwise-equal runs also need torch.use_deterministic_algorithms(True), and for cuBLAS "
          "CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment when the process starts (without it, matmuls raise).")

    fig = Figure(figsize=(10, 4))
    ax_l, ax_a = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ep = range(1, epochs + 1)
    ax_l.plot(ep, history["train_loss"], label="train")
    ax_l.plot(ep, history["val_loss"], label="validation")
    ax_a.plot(ep, history["train_acc"], label="train")
    ax_a.plot(ep, history["val_acc"], label="validation")
    ax_a.axvline(best_epoch, color="k", ls="--", lw=0.8, label=f"best epoch {best_epoch}")
    ax_l.set(title="cross-entropy loss per epoch", ylabel="mean cross-entropy")
    ax_a.set(title="accuracy per epoch", ylabel="fraction classified correctly")
    for ax in (ax_l, ax_a):
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    plot_path = args.out_dir / "training_curves.png"
    fig.savefig(plot_path, dpi=100)
    print(f"\nplot: {plot_path}")

    metrics = {
        "n_train": sizes[0], "n_val": sizes[1], "n_test": sizes[2], "epochs": epochs,
        "first_epoch_train_loss": history["train_loss"][0], "last_epoch_train_loss": history["train_loss"][-1],
        "best_epoch": best_epoch, "best_val_accuracy": best_val, "reloaded_val_accuracy": val_check,
        "overfit_batch_first_loss": good[0], "overfit_batch_final_loss": good[-1],
        "overfit_batch_broken_final_loss": broken[-1],
        "test_loss": test_loss, "test_accuracy": test_acc, "chance_accuracy": 1 / 3,
        "train_mode_pass_diff": train_mode_diff, "eval_mode_pass_diff": eval_mode_diff,
        "no_grad_output_requires_grad": int(out.requires_grad), "reproducibility_max_abs_diff": repro,
        "train_time_s": train_s,
    }
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"metrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Before a long run, overfit one batch: a loss that will not reach ~0 there is a wiring bug, not data.")
    print("- The loop is always: model.train(); for each batch: zero_grad, forward, loss, backward, step.")
    print("- Evaluation is always: model.eval() and torch.no_grad(); average over examples, not over batches.")
    print("- Keep a copy of the best validation weights; report the test set once, with those weights.")
    print("- Seed every source of randomness (init, dropout, split, shuffle) and a rerun reproduces the weights.")
    return metrics


if __name__ == "__main__":
    main()

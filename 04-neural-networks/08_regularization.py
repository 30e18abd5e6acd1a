"""Regularization: overfit a small training set on purpose, then shrink the train-validation gap four ways.

A network with far more parameters than training examples can memorise them, labels noise included: training
accuracy reaches 100% while validation accuracy stalls and validation loss climbs. The lesson trains the same MLP
on the same 200 examples (10 features, 5 of them informative, 15% of labels flipped) with no regularization,
with dropout, with weight decay (AdamW), with an L1 penalty, with early stopping, and with dropout plus weight
decay, and prints one table of train and validation accuracy and loss, and the gap between them, for each.

Run it:
    python 04-neural-networks/08_regularization.py
    python 04-neural-networks/08_regularization.py --train-size 1000    # more data: the best regularizer

Takes about 10 s on a 2-core CPU. What to look for: the baseline's train accuracy of 1.00 against a much
lower validation accuracy (a large gap, and a validation loss far above the training loss), and every
regularized row shrinking that gap, most of them while raising validation accuracy.
"""

import argparse
import copy
import json
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
                        help="where the models train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="50 epochs at lr 3e-3 and a narrower network")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/04-neural-networks/08_regularization"),
                        help="where metrics.json and the curves go")
    parser.add_argument("--train-size", type=int, default=200, help="training examples (small on purpose)")
    parser.add_argument("--epochs", type=int, default=200, help="full-batch training steps")
    parser.add_argument("--width", type=int, default=256, help="units in each of the two hidden layers")
    parser.add_argument("--dropout", type=float, default=0.7, help="dropout probability for the dropout rows")
    parser.add_argument("--weight-decay", type=float, default=20.0,
                        help="AdamW weight decay for the decay rows (each step multiplies weights by 1 - lr*wd)")
    parser.add_argument("--l1", type=float, default=3e-3, help="L1 penalty coefficient (sum of |w|)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
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
    if args.train_size < 10 or args.epochs < 2 or args.width < 2 or not 0 <= args.dropout < 1 or args.lr <= 0:
        parser.error("need --train-size >= 10, --epochs >= 2, --width >= 2, 0 <= --dropout < 1 and --lr > 0")
    if args.weight_decay < 0 or args.l1 < 0:  # a negative penalty rewards large weights
        parser.error("need --weight-decay >= 0 and --l1 >= 0")
    return args


FEATURES = 10


def make_data(n: int, seed: int, flip: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, 10) Gaussian; y depends on the first 5 features only (a curved boundary); a fraction `flip` of labels
    is flipped: noise no model should learn."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    score = x[:, 0] + x[:, 1] - x[:, 2] + 0.7 * x[:, 3] * x[:, 4]
    y = (score > 0).long()
    flipped = torch.rand(n, generator=g) < flip
    return x, torch.where(flipped, 1 - y, y)


def make_model(width: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, width), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 2))


@torch.no_grad()
def measure(model, x, y) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train(config: dict, data, args, device, epochs: int, width: int) -> dict:
    """Full-batch Adam/AdamW on the training set; measures train and validation every epoch."""
    x_tr, y_tr, x_va, y_va = data
    torch.manual_seed(args.seed)  # the same initial weights for every row of the table
    model = make_model(width, config.get("dropout", 0.0)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr_used, weight_decay=config.get("weight_decay", 0.0))
    history = {"train_loss": [], "val_loss": [], "train_acc": [], "val_acc": [], "epoch": []}
    best = (float("inf"), 0, None)  # (val loss, epoch, weights) for early stopping
    patience, since_best = config.get("patience"), 0
    for epoch in range(1, epochs + 1):
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_tr), y_tr)
        if config.get("l1"):  # L1: pushes weights to exactly 0 (sparse); bias terms left alone as usual
            loss = loss + config["l1"] * sum(p.abs().sum() for n, p in model.named_parameters() if "weight" in n)
        loss.backward()
        optimizer.step()
        if epoch % args.eval_every and epoch != epochs:
            continue  # measuring costs two forward passes, so it is done every few epochs only
        tr_loss, tr_acc = measure(model, x_tr, y_tr)
        va_loss, va_acc = measure(model, x_va, y_va)
        for key, value in zip(("train_loss", "train_acc", "val_loss", "val_acc"), (tr_loss, tr_acc, va_loss, va_acc)):
            history[key].append(value)
        history["epoch"].append(epoch)
        if patience is not None:
            if va_loss < best[0]:
                best, since_best = (va_loss, epoch, copy.deepcopy(model.state_dict())), 0
            else:
                since_best += args.eval_every
                if since_best >= patience:  # no improvement for `patience` epochs: stop, restore the best
                    break
    if patience is not None:
        model.load_state_dict(best[2])
    tr_loss, tr_acc = measure(model, x_tr, y_tr)
    va_loss, va_acc = measure(model, x_va, y_va)
    weight_norm = sum(p.square().sum() for n, p in model.named_parameters() if "weight" in n).sqrt().item()
    return {"train_acc": tr_acc, "val_acc": va_acc, "train_loss": tr_loss, "val_loss": va_loss,
            "gap": tr_acc - va_acc, "loss_gap": va_loss - tr_loss, "epochs_run": epoch,
            "weight_norm": weight_norm, "history": history}


def regularizer_notes(base: dict, rows: dict) -> list[str]:
    """One note per regularizer that did not trade training fit for a smaller gap; empty when all of them did."""
    notes = []
    for name, r in rows.items():
        if all(r[k] == base[k] for k in ("train_acc", "val_acc", "train_loss", "val_loss")):
            notes.append(f"{name} changed nothing: its row equals the baseline's")
        elif r["val_acc"] < base["val_acc"] - 0.02:
            notes.append(f"{name} is too strong: train accuracy {r['train_acc']:.3f}, validation {r['val_acc']:.3f} "
                         f"(baseline {base['val_acc']:.3f}): it underfits")
        elif r["gap"] > base["gap"] - 0.01:
            notes.append(f"{name} is too weak: gap {r['gap']:.3f} against the baseline's {base['gap']:.3f}")
    return notes


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    epochs, width, args.lr_used = (50, 128, 3e-3) if args.smoke else (args.epochs, args.width, args.lr)
    args.eval_every = 5 if args.smoke else 2
    args.out_dir.mkdir(parents=True, exist_ok=True)

    section("Data: small on purpose")
    x_tr, y_tr = make_data(args.train_size, args.seed)
    x_va, y_va = make_data(2000, args.seed + 1)
    data = tuple(t.to(device) for t in (x_tr, y_tr, x_va, y_va))
    n_params = sum(p.numel() for p in make_model(width, 0.0).parameters())
    print(f"{args.train_size} training and 2000 validation examples, {FEATURES} features (5 informative), "
          "15% of labels flipped")
    print(f"MLP {FEATURES} -> {width} -> {width} -> 2: {n_params:,} parameters, "
          f"{n_params // args.train_size}x the number of training examples.")
    print(f"{epochs} full-batch AdamW steps per row (lr {args.lr_used:g}).")
    print("With 15% of labels flipped, even a perfect model scores only ~0.85 on validation; 1.00 on training")
    print("therefore means the network memorised noise.")

    configs = {
        "baseline (none)": {},
        f"dropout {args.dropout}": {"dropout": args.dropout},
        f"weight decay {args.weight_decay}": {"weight_decay": args.weight_decay},
        f"L1 {args.l1:g}": {"l1": args.l1},
        "early stopping (patience 20)": {"patience": 20},
        "dropout + weight decay": {"dropout": args.dropout, "weight_decay": args.weight_decay},
    }
    keys = ("baseline", "dropout", "weight_decay", "l1", "early_stopping", "dropout_weight_decay")

    section("Train vs validation, one row per regularizer")
    print(f"{'regularizer':<30}{'train acc':>10}{'val acc':>9}{'gap':>7}{'train loss':>12}{'val loss':>10}"
          f"{'epochs':>8}{'||W||':>8}")
    results, metrics = {}, {}
    for key, (name, config) in zip(keys, configs.items()):
        r = train(config, data, args, device, epochs, width)
        results[name] = r
        print(f"{name:<30}{r['train_acc']:>10.3f}{r['val_acc']:>9.3f}{r['gap']:>7.3f}{r['train_loss']:>12.4f}"
              f"{r['val_loss']:>10.4f}{r['epochs_run']:>8}{r['weight_norm']:>8.1f}")
        for field in ("train_acc", "val_acc", "gap", "train_loss", "val_loss", "loss_gap", "epochs_run"):
            metrics[f"{key}_{field}"] = r[field]
    base = results["baseline (none)"]
    print(f"gap = train accuracy - validation accuracy. Baseline: {base['gap']:.3f}, validation loss "
          f"{base['val_loss'] / max(base['train_loss'], 1e-12):.0f}x the training loss (confidently wrong).")
    print("Dropout trains an ensemble of thinned networks; weight decay and L1 keep weights small (||W|| column);")
    print("early stopping keeps the weights from the epoch with the lowest validation loss.")

    fig = Figure(figsize=(11, 4))
    ax_acc, ax_loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name in ("baseline (none)", f"dropout {args.dropout}", f"weight decay {args.weight_decay}"):
        h = results[name]["history"]
        line = ax_acc.plot(h["epoch"], h["train_acc"], ls="--", lw=1)[0]
        ax_acc.plot(h["epoch"], h["val_acc"], color=line.get_color(), label=name)
        ax_loss.plot(h["epoch"], h["train_loss"], ls="--", lw=1, color=line.get_color())
        ax_loss.plot(h["epoch"], h["val_loss"], color=line.get_color(), label=name)
    ax_acc.set(title="accuracy (dashed: train, solid: validation)", ylabel="fraction classified correctly")
    ax_loss.set(title="loss (dashed: train, solid: validation)", ylabel="cross-entropy (log scale)")
    ax_loss.set_yscale("log")
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    plot_path = args.out_dir / "overfitting_curves.png"
    fig.savefig(plot_path, dpi=100)
    print(f"plot: {plot_path}")

    metrics.update({"n_parameters": n_params, "train_size": args.train_size})
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Overfitting is measured, not guessed: the train-validation gap, and validation loss rising while")
    print("  training loss keeps falling.")
    notes = regularizer_notes(base, {name: r for name, r in results.items() if name != "baseline (none)"})
    if not notes:
        print("- Each regularizer trades a little training fit for a smaller gap; their strengths are hyperparameters")
        print("  chosen on the validation set (never the test set).")
    else:
        print("- A regularizer should trade a little training fit for a smaller gap; in this run:")
        for note in notes:
            print(f"    {note}")
        print("  Their strengths are hyperparameters chosen on the validation set (never the test set).")
    print("- Dropout is active only in model.train(); evaluation must run in model.eval() (lesson 06).")
    print("- Use AdamW's weight_decay (decoupled), not Adam's, for the effect lesson 05 measured.")
    return metrics


if __name__ == "__main__":
    main()

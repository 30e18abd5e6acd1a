"""Hyperparameter tuning: grid search, random search and successive halving over the same space and budget.

Three ways to spend the same compute on choosing a learning rate, a weight decay and a hidden width:
- grid search tries every combination of a few values per dimension;
- random search samples configurations (log-uniform for scale parameters such as lr), so with the same number of
  trials it tries many more distinct values of the dimension that matters most;
- successive halving (the building block of Hyperband) starts many configurations on a small budget, keeps the best
  third, triples their budget, and repeats, so bad configurations are dropped cheaply.
Every method gets the same total budget in epochs. The results go in a table and a plot, and the best configuration
found is retrained and scored on a held-out test set. Everything is seeded, so the numbers repeat exactly.

Run it:
    python 05-training-optimization/07_hyperparameter_tuning.py
    python 05-training-optimization/07_hyperparameter_tuning.py --budget 27

Takes about half a minute on a laptop CPU (--smoke: a few seconds).
What to look for: the table (trials, epochs spent, best validation accuracy per method), how many distinct learning
rates each method tried, search.png, and the retrained best configuration's test accuracy against the worst trial.
"""

import argparse
import itertools
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

# The search space, shared by the three methods: (kind, low, high) or ("choice", values).
BATCH_SIZE = 64
SPACE = {"lr": ("log", 1e-4, 0.3), "weight_decay": ("log", 1e-6, 1e-1), "width": ("choice", (16, 64, 256))}


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
    parser.add_argument("--smoke", action="store_true", help="less data and a smaller budget: a few seconds on a CPU")
    parser.add_argument("--out-dir", type=Path,
                        default=Path("outputs/05-training-optimization/07_hyperparameter_tuning"),
                        help="where the plot and metrics.json are written")
    parser.add_argument("--budget", type=int, default=18,
                        help="epochs of one full trial R; each method may spend 9 R epochs (--smoke uses 9)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the CUDA section of the README)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if args.budget < 9 or args.budget % 9:
        parser.error("--budget must be a multiple of 9 (successive halving uses R/9, R/3 and R)")
    return args


def make_data(n: int, seed: int):
    """A learnable 5-class task from a fixed random teacher, with 10% label noise to make regularisation matter."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)  # (N, 20)
    w1 = torch.randn(20, 40, generator=g) * 0.5 / math.sqrt(20)  # scaled so tanh is not saturated: smooth classes
    y = (torch.tanh(x @ w1) @ torch.randn(40, 5, generator=g)).argmax(1)
    flip = torch.rand(n, generator=g) < 0.1
    y[flip] = torch.randint(0, 5, (int(flip.sum()),), generator=g)
    return x, y


def train_and_score(config: dict, epochs: int, train, val, seed: int, device) -> float:
    """Train one configuration for `epochs` epochs with Adam; return validation accuracy."""
    (x_tr, y_tr), (x_val, y_val) = train, val
    torch.manual_seed(seed)  # a configuration's score depends on the configuration, not on the trial order
    w = config["width"]
    model = nn.Sequential(nn.Linear(20, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 5)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    for _ in range(epochs):
        for idx in torch.randperm(len(x_tr), device=device).split(BATCH_SIZE):
            loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (model(x_val).argmax(1) == y_val).float().mean().item()


def sample_config(rng: np.random.Generator) -> dict:
    config = {}
    for name, spec in SPACE.items():
        if spec[0] == "log":  # uniform in log space: 1e-4..1e-3 is as likely as 1e-2..1e-1
            config[name] = float(math.exp(rng.uniform(math.log(spec[1]), math.log(spec[2]))))
        else:
            config[name] = int(rng.choice(spec[1]))
    return config


def grid_configs() -> list[dict]:
    """3 x 3 over lr and width, weight decay fixed in the middle of its range: 9 trials, like the others."""
    lrs = np.geomspace(SPACE["lr"][1], SPACE["lr"][2], 3).tolist()
    return [{"lr": lr, "weight_decay": 1e-3, "width": w} for lr, w in itertools.product(lrs, SPACE["width"][1])]


def successive_halving(configs, budget, evaluate, eta=3):
    """Rungs of budget R/eta^2, R/eta, R: evaluate all survivors, keep the best 1/eta. Returns every trial."""
    trials, survivors, rung_budget = [], list(configs), budget // eta**2
    while True:
        scored = [(evaluate(c, rung_budget), c) for c in survivors]
        trials += [{"config": c, "epochs": rung_budget, "score": s} for s, c in scored]
        print(f"  rung: {len(survivors):>2} configs x {rung_budget:>2} epochs, best {max(s for s, _ in scored):.3f}")
        if rung_budget >= budget or len(survivors) <= 1:
            return trials
        scored.sort(key=lambda t: t[0], reverse=True)  # higher accuracy is better
        survivors = [c for _, c in scored[: max(1, len(scored) // eta)]]
        rung_budget *= eta


def fmt(c: dict) -> str:
    return f"lr {c['lr']:.2e}, wd {c['weight_decay']:.1e}, width {c['width']}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    if args.smoke:
        args.budget = 9
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # Trials this small gain nothing from intra-op threads (and suffer on a busy CPU): one thread per trial.
        # A real search parallelises *across* trials instead, one trial per core (Ray Tune, Optuna + joblib).
        torch.set_num_threads(1)
    n = 384 if args.smoke else 1536
    x, y = make_data(n + 2 * 1024, args.seed)
    x, y = x.to(device), y.to(device)
    train, val, test = (x[:n], y[:n]), (x[n:n + 1024], y[n:n + 1024]), (x[n + 1024:], y[n + 1024:])
    R = args.budget
    evaluate = lambda c, epochs: train_and_score(c, epochs, train, val, args.seed, device)  # noqa: E731
    print(f"device {device}; {n} training samples, 5 classes; full trial = {R} epochs; "
          f"budget per method = {9 * R} epochs")
    print(f"space: {SPACE}")

    section("Grid search: 3 learning rates x 3 widths")
    grid = [{"config": c, "epochs": R, "score": evaluate(c, R)} for c in grid_configs()]
    for t in grid:
        print(f"  {fmt(t['config'])}: val acc {t['score']:.3f}")

    section("Random search: 9 configurations sampled from the space")
    rng = np.random.default_rng(args.seed)
    rand = []
    for c in (sample_config(rng) for _ in range(9)):
        rand.append({"config": c, "epochs": R, "score": evaluate(c, R)})
        print(f"  {fmt(c)}: val acc {rand[-1]['score']:.3f}")

    section("Successive halving: 27 sampled configurations, eta = 3")
    sh = successive_halving([sample_config(rng) for _ in range(27)], R, evaluate)

    section("Results (same space, same epoch budget)")
    methods = {"grid": grid, "random": rand, "successive_halving": sh}
    best = {}
    print(f"  {'method':<19} {'trials':>6} {'epochs':>6} {'distinct lrs':>12} {'best val acc':>12}  best configuration")
    for name, trials in methods.items():
        full = [t for t in trials if t["epochs"] == R]  # compare winners trained for the full budget
        best[name] = max(full, key=lambda t: t["score"])
        lrs = len({round(t["config"]["lr"], 12) for t in trials})
        print(f"  {name:<19} {len(trials):>6} {sum(t['epochs'] for t in trials):>6} {lrs:>12} "
              f"{best[name]['score']:>12.3f}  {fmt(best[name]['config'])}")
    all_full = [t for trials in methods.values() for t in trials if t["epochs"] == R]
    worst = min(all_full, key=lambda t: t["score"])
    print(f"  worst full-budget trial: val acc {worst['score']:.3f} ({fmt(worst['config'])})")

    section("Retraining the best configuration, scored on the held-out test set")
    winner = max(best.values(), key=lambda t: t["score"])
    test_best = train_and_score(winner["config"], R, train, test, args.seed + 1, device)  # a fresh init too
    test_worst = train_and_score(worst["config"], R, train, test, args.seed + 1, device)
    print(f"best ({fmt(winner['config'])}): test acc {test_best:.3f}; worst configuration: {test_worst:.3f}")
    print("(validation picked the winner; the test set was never looked at during the search)")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(11, 4))
    ax_lr, ax_rank = fig.subplots(1, 2)
    for (name, trials), marker in zip(methods.items(), "osd", strict=True):
        full = [t for t in trials if t["epochs"] == R]
        ax_lr.scatter([t["config"]["lr"] for t in full], [t["score"] for t in full], marker=marker, label=name)
        spent = np.cumsum([t["epochs"] for t in trials])  # epochs used when each trial finished
        done = [(e, t["score"]) for e, t in zip(spent, trials, strict=True) if t["epochs"] == R]
        ax_rank.plot([e for e, _ in done], np.maximum.accumulate([v for _, v in done]), marker=marker, label=name)
    ax_lr.set(xscale="log", xlabel="learning rate", ylabel="val accuracy", title=f"Full-budget trials ({R} epochs)")
    ax_rank.set(xlabel="epochs spent", ylabel="best full-budget val accuracy", title="Best so far vs compute")
    ax_lr.legend()
    ax_rank.legend()
    fig.tight_layout()
    png = args.out_dir / "search.png"
    fig.savefig(png, dpi=100)
    print(f"plot: {png}")

    metrics = {f"best_val_acc_{n}": t["score"] for n, t in best.items()}
    metrics.update({f"epochs_spent_{n}": sum(t["epochs"] for t in ts) for n, ts in methods.items()})
    metrics.update({f"trials_{n}": len(ts) for n, ts in methods.items()})
    metrics.update({"worst_val_acc": worst["score"], "best_lr": winner["config"]["lr"],
                    "best_weight_decay": winner["config"]["weight_decay"], "best_width": winner["config"]["width"],
                    "test_acc_best_config": test_best, "test_acc_worst_config": test_worst})
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Sample scale parameters (lr, weight decay) log-uniformly; a linear range wastes trials on the top decade.")
    print("- Grid search tries 3 learning rates in 9 trials; random search tries 9. The lr matters most here.")
    print("- Successive halving looks at 27 configurations for the price of 9 full trials.")
    print("- Choose on validation, report on test: the search itself overfits the validation set a little.")
    print("- Small trials: one thread each, and run trials side by side (one per core) to use the whole machine.")
    torch.set_num_threads(threads)
    return metrics


if __name__ == "__main__":
    main()

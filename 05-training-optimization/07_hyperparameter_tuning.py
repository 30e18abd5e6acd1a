"""Hyperparameter tuning: grid search, random search and successive halving over the same space and budget.

Three ways to spend the same compute on choosing a learning rate, a weight decay and a hidden width:
- grid search tries every combination of a few values per dimension;
- random search samples configurations (log-uniform for scale parameters such as lr), so with the same number of
  trials it tries many more distinct values of the dimension that matters most;
- successive halving (the building block of Hyperband) starts many configurations on a small budget, keeps the best
  third, triples their budget, and repeats, so bad configurations are dropped cheaply. Here every rung retrains its
  survivors from scratch with the larger budget (no checkpoint is resumed); the lesson prints what resuming would save.
Every method gets the same total budget in epochs. One search is one draw of a random process, so the whole
comparison is repeated with several search seeds and reported as mean +- std; which hyperparameter matters most is
computed (the share of the score's variance each one explains), not assumed. The best configuration found is
retrained and scored on a held-out test set. Everything is seeded, so the numbers repeat exactly.

Run it:
    python 05-training-optimization/07_hyperparameter_tuning.py
    python 05-training-optimization/07_hyperparameter_tuning.py --budget 27

Takes about 30 seconds on a 2-core CPU (--smoke: about 5 s).
What to look for: the table (trials, epochs spent, best validation accuracy per method), the mean +- std over search
seeds (is one method's lead larger than the spread?), the variance each hyperparameter explains, search.png, and the
retrained best configuration's test accuracy against the worst trial.
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
    parser.add_argument("--seeds", type=int, default=3,
                        help="search seeds: the whole comparison is repeated this many times (--smoke uses 2)")
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
    if args.budget < 9 or args.budget % 9:
        parser.error("--budget must be a multiple of 9 (successive halving uses R/9, R/3 and R)")
    if args.seeds < 2:
        parser.error("--seeds must be at least 2: a spread needs two searches")
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
    """Train one configuration from scratch for `epochs` epochs with AdamW; return validation accuracy."""
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


def successive_halving(configs, budget, evaluate, eta=3, verbose=True):
    """Rungs of budget R/eta^2, R/eta, R: evaluate all survivors, keep the best 1/eta. Returns every trial.

    evaluate() trains from scratch, so a survivor is retrained for the whole new rung budget, not continued."""
    trials, survivors, rung_budget, rung = [], list(configs), budget // eta**2, 0
    while True:
        scored = [(evaluate(c, rung_budget), c) for c in survivors]
        trials += [{"config": c, "epochs": rung_budget, "score": s, "rung": rung} for s, c in scored]
        if verbose:
            print(f"  rung {rung}: {len(survivors):>2} configs x {rung_budget:>2} epochs (from scratch), "
                  f"best {max(s for s, _ in scored):.3f}")
        if rung_budget >= budget or len(survivors) <= 1:
            return trials
        scored.sort(key=lambda t: t[0], reverse=True)  # higher accuracy is better
        survivors = [c for _, c in scored[: max(1, len(scored) // eta)]]
        rung_budget *= eta
        rung += 1


def search(seed: int, R: int, evaluate, verbose: bool) -> dict:
    """One run of all three methods with this search seed: {method: list of trials}."""
    rng = np.random.default_rng(seed)
    grid = [{"config": c, "epochs": R, "score": evaluate(c, R, seed)} for c in grid_configs()]
    rand = [{"config": c, "epochs": R, "score": evaluate(c, R, seed)} for c in [sample_config(rng) for _ in range(9)]]
    if verbose:
        section("Grid search: 3 learning rates x 3 widths")
        for t in grid:
            print(f"  {fmt(t['config'])}: val acc {t['score']:.3f}")
        section("Random search: 9 configurations sampled from the space")
        for t in rand:
            print(f"  {fmt(t['config'])}: val acc {t['score']:.3f}")
        section("Successive halving: 27 sampled configurations, eta = 3")
    sh = successive_halving([sample_config(rng) for _ in range(27)], R, lambda c, e: evaluate(c, e, seed),
                            verbose=verbose)
    return {"grid": grid, "random": rand, "successive_halving": sh}


def variance_explained(trials: list[dict]) -> dict:
    """For each hyperparameter, the share of the scores' variance explained by it (eta squared): split the trials
    into 3 equal-size groups by its value (for width: by its 3 choices) and compare the spread of the group means
    with the total spread. 1 means the score is a function of that one value; near 0, it does not depend on it."""
    scores = np.array([t["score"] for t in trials])
    total = ((scores - scores.mean()) ** 2).sum()
    shares = {}
    for name, spec in SPACE.items():
        values = np.array([t["config"][name] for t in trials], dtype=float)
        if spec[0] == "choice":
            groups = [scores[values == v] for v in spec[1]]
        else:
            groups = np.array_split(scores[np.argsort(values)], 3)  # low, middle, high third of the values
        between = sum(len(g) * (g.mean() - scores.mean()) ** 2 for g in groups if len(g))
        shares[name] = float(between / total) if total > 0 else 0.0
    return shares


def survivors_were_top(trials: list[dict], R: int, eta: int = 3) -> bool:
    """Each rung's configurations are exactly the best 1/eta of the previous rung."""
    rungs = sorted({t["rung"] for t in trials})
    for r in rungs[1:]:
        prev = sorted((t for t in trials if t["rung"] == r - 1), key=lambda t: t["score"], reverse=True)
        kept = [t["config"] for t in prev[: max(1, len(prev) // eta)]]
        if sorted(map(fmt, kept)) != sorted(fmt(t["config"]) for t in trials if t["rung"] == r):
            return False
    return True


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
    n = 192 if args.smoke else 1536
    x, y = make_data(n + 2 * 1024, args.seed)
    x, y = x.to(device), y.to(device)
    train, val, test = (x[:n], y[:n]), (x[n:n + 1024], y[n:n + 1024]), (x[n + 1024:], y[n + 1024:])
    R = args.budget
    n_seeds = 2 if args.smoke else args.seeds
    evaluate = lambda c, epochs, seed: train_and_score(c, epochs, train, val, seed, device)  # noqa: E731
    print(f"device {device}; {n} training samples, 5 classes; full trial = {R} epochs; "
          f"budget per method = {9 * R} epochs; {n_seeds} search seeds")
    print(f"space: {SPACE}")

    seeds = [args.seed + 1000 * i for i in range(n_seeds)]  # search seed: the configs sampled and each model's init
    runs = {}
    for i, seed in enumerate(seeds):
        if i == 1:
            section(f"The same comparison with {n_seeds - 1} more search seed(s)")
        runs[seed] = search(seed, R, evaluate, verbose=i == 0)
        if i > 0:
            print(f"  search seed {seed}: best val acc " + ", ".join(
                f"{m} {max(t['score'] for t in ts if t['epochs'] == R):.3f}" for m, ts in runs[seed].items()))
    methods = runs[seeds[0]]

    section(f"Results of search seed {seeds[0]} (same space, same epoch budget)")
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
    sh = methods["successive_halving"]
    resumed = sum(t["epochs"] - (t["epochs"] // 3 if t["rung"] else 0) for t in sh)
    print(f"successive halving retrained each survivor from scratch: {sum(t['epochs'] for t in sh)} epochs; continuing "
          f"each survivor from its previous rung's checkpoint would have cost {resumed}")

    section(f"Over {n_seeds} search seeds: best full-budget validation accuracy, mean +- std")
    per_seed = {m: [max(t["score"] for t in runs[s][m] if t["epochs"] == R) for s in seeds] for m in methods}
    mean = {m: float(np.mean(v)) for m, v in per_seed.items()}
    std = {m: float(np.std(v, ddof=1)) for m, v in per_seed.items()}
    for m in methods:
        print(f"  {m:<19} {mean[m]:.3f} +- {std[m]:.3f}   (per seed: {', '.join(f'{v:.3f}' for v in per_seed[m])})")
    ranked = sorted(methods, key=lambda m: mean[m], reverse=True)
    lead = mean[ranked[0]] - mean[ranked[1]]
    print(f"{ranked[0]} leads {ranked[1]} by {lead:.3f} on average; the larger of their stds is "
          f"{max(std[ranked[0]], std[ranked[1]]):.3f}: "
          + ("a lead larger than the spread" if lead > max(std[ranked[0]], std[ranked[1]])
             else "within the spread, so this ranking is noise at this budget"))

    section("Which hyperparameter matters? Variance of the score explained by each")
    rung0 = [t for s in seeds for t in runs[s]["successive_halving"] if t["rung"] == 0]  # random configs, one budget
    shares = variance_explained(rung0)
    for name, share in sorted(shares.items(), key=lambda kv: kv[1], reverse=True):
        print(f"  {name:<13} {share:>6.1%}  {'#' * round(40 * share)}")
    top = max(shares, key=shares.get)
    print(f"measured on the {len(rung0)} random configurations of successive halving's first rung ({R // 9} epoch(s) "
          f"each, all seeds): {top} explains the most")

    section("Retraining the best configuration, scored on the held-out test set")
    winner = max(best.values(), key=lambda t: t["score"])
    test_best = train_and_score(winner["config"], R, train, test, args.seed + 1, device)  # a fresh init too
    test_worst = train_and_score(worst["config"], R, train, test, args.seed + 1, device)
    print(f"best ({fmt(winner['config'])}): test acc {test_best:.3f}; worst configuration: {test_worst:.3f}")
    print("(validation picked the winner; the test set was never looked at during the search)")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(15, 4))
    ax_lr, ax_rank, ax_seeds = fig.subplots(1, 3)
    for (name, trials), marker in zip(methods.items(), "osd", strict=True):
        full = [t for t in trials if t["epochs"] == R]
        ax_lr.scatter([t["config"]["lr"] for t in full], [t["score"] for t in full], marker=marker, label=name)
        spent = np.cumsum([t["epochs"] for t in trials])  # epochs used when each trial finished
        done = [(e, t["score"]) for e, t in zip(spent, trials, strict=True) if t["epochs"] == R]
        ax_rank.plot([e for e, _ in done], np.maximum.accumulate([v for _, v in done]), marker=marker, label=name)
    ax_lr.set(xscale="log", xlabel="learning rate", ylabel="val accuracy",
              title=f"Full-budget trials ({R} epochs), seed {seeds[0]}")
    ax_rank.set(xlabel="epochs spent", ylabel="best full-budget val accuracy",
                title=f"Best so far vs compute, seed {seeds[0]}")
    ax_seeds.bar(list(methods), [mean[m] for m in methods], yerr=[std[m] for m in methods], capsize=6,
                 color=["tab:blue", "tab:orange", "tab:green"])
    ax_seeds.set(ylabel="best val accuracy (mean +- std)", ylim=(min(mean.values()) - 0.1, 1),
                 title=f"Over {n_seeds} search seeds")
    ax_lr.legend()
    ax_rank.legend()
    fig.tight_layout()
    png = args.out_dir / "search.png"
    fig.savefig(png, dpi=100)
    print(f"plot: {png}")

    metrics = {f"best_val_acc_{n}": t["score"] for n, t in best.items()}
    metrics.update({f"epochs_spent_{n}": sum(t["epochs"] for t in ts) for n, ts in methods.items()})
    metrics.update({f"trials_{n}": len(ts) for n, ts in methods.items()})
    metrics.update({f"mean_best_val_acc_{m}": mean[m] for m in methods})
    metrics.update({f"std_best_val_acc_{m}": std[m] for m in methods})
    metrics.update({f"variance_share_{k}": v for k, v in shares.items()})
    metrics.update({"seeds": n_seeds, "sh_epochs_if_resumed": resumed,
                    "sh_survivors_were_top": int(survivors_were_top(sh, R))})
    metrics.update({"worst_val_acc": worst["score"], "best_lr": winner["config"]["lr"],
                    "best_weight_decay": winner["config"]["weight_decay"], "best_width": winner["config"]["width"],
                    "test_acc_best_config": test_best, "test_acc_worst_config": test_worst})
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Sample scale parameters (lr, weight decay) log-uniformly; a linear range wastes trials on the top decade.")
    print(f"- Grid search tries 3 learning rates in 9 trials; random search tries 9. Measured here, {top} explains "
          f"{shares[top]:.0%} of the score's variance: the dimension worth many distinct values.")
    print("- Successive halving looks at 27 configurations for the price of 9 full trials (retraining survivors from")
    print(f"  scratch; resuming them from checkpoints would cost {resumed} epochs instead of {9 * R}).")
    print(f"- One search is one random draw: over {n_seeds} seeds the top two methods' means differ by {lead:.3f}, "
          f"their stds reach {max(std[ranked[0]], std[ranked[1]]):.3f}; compare the two before declaring a winner.")
    print("- Choose on validation, report on test: the search itself overfits the validation set a little.")
    print("- Small trials: one thread each, and run trials side by side (one per core) to use the whole machine.")
    torch.set_num_threads(threads)
    return metrics


if __name__ == "__main__":
    main()

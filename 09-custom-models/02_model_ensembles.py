"""Model ensembles: several networks vote better, and are better calibrated, than the best of them alone.

Sections:
1. Data: scikit-learn's load_digits (1,797 real 8x8 handwritten digits) as 64 pixels per digit, split train /
   validation / test. By default only 10% (179 digits) train: a small training set is where a single network ends
   up overconfident and an ensemble pays. Members are chosen on validation; the test split is read at the end.
2. Three ways to get members: independently trained (different seeds), bagging (each on a bootstrap resample of
   the training set), and a snapshot ensemble (one run with a cyclic cosine learning rate, a snapshot at the end of
   every cycle: K members for the training cost of one).
3. Three ways to combine them: average the probabilities, average the logits, majority vote.
4. Accuracy, negative log-likelihood (NLL) and expected calibration error (ECE) of each ensemble against its best
   member, with a reliability plot.
5. The vectorised ensemble: torch.func.stack_module_state + functional_call + vmap run all members as one batched
   model; the outputs equal the Python loop's (max abs diff printed) and it is faster (ratio printed).
6. Weight averaging: torch.optim.swa_utils.AveragedModel (SWA) + update_bn, one model's inference cost, against the
   ensemble and the single model it started from.

Run it:
    python 09-custom-models/02_model_ensembles.py
    python 09-custom-models/02_model_ensembles.py --members 8 --epochs 60

Takes about 6 seconds on an idle 2-core CPU (--smoke: about 4). What to look for: the ensemble's test NLL and ECE
below its best member's, probabilities vs logits vs vote, the reliability plot (reliability.png) where the
members' points sit below the diagonal (overconfident) and the ensemble's closer to it, "vmap == loop" with its
max abs difference and the speed table, and where SWA lands between one model and the ensemble.
"""

import argparse
import copy
import importlib.util
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

ECE_BINS = 15


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


def synchronize(device: torch.device) -> None:
    """GPU work is asynchronous: wait for it before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where the members train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="3 small members, few epochs: a few seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/09-custom-models/02_model_ensembles"),
                        help="where metrics.json and reliability.png are written")
    parser.add_argument("--members", type=int, default=5, help="networks per ensemble (K)")
    parser.add_argument("--epochs", type=int, default=30,
                        help="epochs per member; the snapshot run uses this many in total, split into K cycles")
    parser.add_argument("--swa-epochs", type=int, default=10, help="extra epochs of weight averaging after training")
    parser.add_argument("--train-fraction", type=float, default=0.1,
                        help="share of the 1,797 digits used for training (the rest: half validation, half test); "
                             "small training sets are where single networks get overconfident and ensembles help")
    parser.add_argument("--hidden", type=int, default=128, help="width of each member's two hidden layers")
    parser.add_argument("--batch-size", type=int, default=32, help="digits per optimizer step")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak Adam learning rate (cosine schedule)")
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="Adam weight decay (L2); 0 lets members grow confident, as big networks do")
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
    if args.members < 2:
        parser.error("--members must be at least 2: one network is not an ensemble")
    if args.epochs < args.members:
        parser.error("--epochs must be at least --members (the snapshot run needs one epoch per cycle)")
    if args.swa_epochs < 1 or args.hidden < 1 or args.lr <= 0 or args.weight_decay < 0:
        parser.error("need --swa-epochs >= 1, --hidden >= 1, --lr > 0 and --weight-decay >= 0")
    if not 0.05 <= args.train_fraction <= 0.9:
        parser.error("--train-fraction must be between 0.05 and 0.9")
    if not 2 <= args.batch_size <= int(args.train_fraction * 1797):
        parser.error(f"--batch-size must be between 2 (BatchNorm needs two samples) and the "
                     f"{int(args.train_fraction * 1797)} training digits")
    return args


def real_digits():
    """scikit-learn's 1,797 real handwritten digits (load_digits, 43 writers): images (1797, 8, 8) float32 in 0-16
    and labels (1797,). Read from the file load_digits() reads (sklearn/datasets/data/digits.csv.gz: 64 pixels,
    then the label) without importing scikit-learn, which takes about 0.7 s; load_digits() if the file is not there."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return torch.tensor(digits.images, dtype=torch.float32), torch.tensor(digits.target)
    table = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.float32))  # (1797, 65)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].long()


def load_digit_splits(seed: int, train_fraction: float) -> dict:
    """(N, 64) float pixels in [0, 1] and (N,) labels, shuffled with the seed: train_fraction for training, the
    rest split in half for validation and test."""
    images, y = real_digits()
    x = images.flatten(1) / 16.0  # pixel values are 0..16
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_train = int(train_fraction * len(y))
    n_val = (len(y) - n_train) // 2
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {name: (x[idx], y[idx]) for name, idx in parts.items()}


def make_member(hidden: int) -> nn.Module:
    """A BatchNorm MLP: (B, 64) -> (B, 10) logits. BatchNorm is what makes update_bn necessary for SWA."""
    return nn.Sequential(nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


def batches(x, y, batch_size: int, generator: torch.Generator):
    order = torch.randperm(len(y), generator=generator)
    for i in range(0, len(y) - batch_size + 1, batch_size):  # drop the ragged last batch: BatchNorm needs B >= 2
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


def train_epochs(model, optimizer, x, y, epochs, batch_size, generator, lr_at, on_epoch_end=None) -> None:
    """Train on (x, y) (on the model's device); lr_at(step) sets the learning rate before every step."""
    step = 0
    for epoch in range(epochs):
        model.train()
        for xb, yb in batches(x, y, batch_size, generator):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if on_epoch_end is not None:
            on_epoch_end(epoch)


def adam(model, lr, weight_decay):
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def cosine(peak: float, steps: int):
    return lambda step: 0.5 * peak * (1 + np.cos(np.pi * min(step, steps) / steps))


@torch.no_grad()
def logits_of(model, x) -> torch.Tensor:
    model.eval()  # BatchNorm uses its running statistics
    return model(x)


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = ECE_BINS) -> tuple[float, list]:
    """Expected calibration error: bin the top-class confidence, then sum over bins of
    (fraction of samples in the bin) x |accuracy in the bin - mean confidence in the bin|. In [0, 1]."""
    conf, pred = probs.max(dim=1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1, device=probs.device)
    total, table = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            acc, mean_conf, frac = correct[in_bin].mean().item(), conf[in_bin].mean().item(), in_bin.float().mean()
            total += frac.item() * abs(acc - mean_conf)
            table.append((mean_conf, acc, int(in_bin.sum())))
    return total, table


def scores(probs: torch.Tensor, y: torch.Tensor) -> dict:
    """probs: (N, 10). Accuracy, NLL (mean -log p(true class)), ECE."""
    nll = -probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean().item()
    return {"acc": (probs.argmax(1) == y).float().mean().item(), "nll": nll, "ece": ece(probs, y)[0]}


def combine(logits: torch.Tensor, how: str) -> torch.Tensor:
    """logits: (K, N, 10) from K members -> (N, 10) class probabilities (a vote gives one-hot-vote fractions)."""
    if how == "probs":
        return logits.softmax(-1).mean(0)  # average what each member believes
    if how == "logits":
        return logits.mean(0).softmax(-1)  # average the scores, then normalise: a geometric mean of the probs
    votes = F.one_hot(logits.argmax(-1), logits.shape[-1]).float()  # (K, N, 10)
    return votes.mean(0)  # majority vote: ties go to the lower class index in argmax


def vectorise(members: list):
    """K models of one architecture -> (batched forward, stacked params, stacked buffers)."""
    params, buffers = stack_module_state(members)  # dicts of (K, ...) tensors: member i's weights at [i]
    skeleton = copy.deepcopy(members[0]).to("meta")  # structure only: no memory, the weights come from params

    def one_member(p, b, x):
        return functional_call(skeleton, (p, b), (x,))

    return vmap(one_member, in_dims=(0, 0, None)), params, buffers  # map over members; x is shared


def median_ms(fn, device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def ensemble_note(best: dict, ens: dict) -> str:
    """'What to notice' on averaging: the best member's test NLL and ECE against the ensemble's, worded by what
    they did in this run (lower is better for both)."""
    figures = (f"test NLL {best['nll']:.3f} (best member) -> {ens['nll']:.3f}, ECE {best['ece']:.3f} -> "
               f"{ens['ece']:.3f} in this run")
    nll_better, ece_better = ens["nll"] < best["nll"], ens["ece"] < best["ece"]
    if nll_better and ece_better:
        return f"- Averaging members that disagree on hard digits: {figures}."
    if not nll_better and not ece_better:
        return (f"- Averaging did not help here: {figures}, both worse. It pays when the members are each good "
                "and disagree on hard digits; these members are wrong together.")
    better, worse = ("NLL", "ECE") if nll_better else ("ECE", "NLL")
    return f"- Averaging the members: {figures}: {better} better, {worse} worse."


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    k = 3 if args.smoke else args.members
    epochs = max(k, min(args.epochs, 24)) if args.smoke else args.epochs
    swa_epochs = min(args.swa_epochs, 4) if args.smoke else args.swa_epochs
    hidden = min(args.hidden, 64) if args.smoke else args.hidden
    metrics = {"members": k, "epochs": epochs}

    section("1. Data: real handwritten digits")
    splits = load_digit_splits(args.seed, args.train_fraction)
    data = {name: (x.to(device), y.to(device)) for name, (x, y) in splits.items()}
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data["train"], data["val"], data["test"]
    print(f"load_digits as 64 pixels each: train {len(y_train)}, val {len(y_val)}, test {len(y_test)}; "
          f"{k} members of a {hidden}-wide BatchNorm MLP, {epochs} epochs each")
    steps_per_epoch = len(y_train) // args.batch_size

    section("2. Three ways to get members")
    ensembles = {}
    t0 = time.perf_counter()
    members = []
    for i in range(k):  # independent: only the seed differs (initial weights and batch order)
        torch.manual_seed(args.seed * 1000 + i)
        member = make_member(hidden).to(device)
        train_epochs(member, adam(member, args.lr, args.weight_decay), x_train, y_train, epochs, args.batch_size,
                     torch.Generator().manual_seed(args.seed * 1000 + i), cosine(args.lr, epochs * steps_per_epoch))
        members.append(member)
    ensembles["independent"] = members
    print(f"independent: {k} runs of {epochs} epochs ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    bagged = []
    for i in range(k):  # bagging: each member sees a bootstrap sample (n draws with replacement, ~63% unique)
        g = torch.Generator().manual_seed(args.seed * 1000 + 500 + i)
        idx = torch.randint(len(y_train), (len(y_train),), generator=g).to(device)
        torch.manual_seed(args.seed * 1000 + 500 + i)
        member = make_member(hidden).to(device)
        train_epochs(member, adam(member, args.lr, args.weight_decay), x_train[idx], y_train[idx], epochs,
                     args.batch_size, g, cosine(args.lr, epochs * steps_per_epoch))
        bagged.append(member)
    ensembles["bagging"] = bagged
    unique = len(torch.unique(idx)) / len(y_train)
    print(f"bagging: {k} runs of {epochs} epochs on bootstrap samples (the last one holds {unique:.0%} distinct "
          f"digits) ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    cycle = epochs // k  # the snapshot run: K cosine cycles in the budget of ONE member's training
    torch.manual_seed(args.seed * 1000 + 900)
    runner = make_member(hidden).to(device)
    snapshots = []
    cycle_steps = cycle * steps_per_epoch
    warm_restart = lambda step: cosine(args.lr, cycle_steps)(step % cycle_steps)  # noqa: E731 (back to the peak)
    train_epochs(runner, adam(runner, args.lr, args.weight_decay), x_train, y_train, cycle * k, args.batch_size,
                 torch.Generator().manual_seed(args.seed * 1000 + 900), warm_restart,
                 on_epoch_end=lambda e: snapshots.append(copy.deepcopy(runner)) if (e + 1) % cycle == 0 else None)
    ensembles["snapshot"] = snapshots
    print(f"snapshot: one run of {cycle * k} epochs, {k} cycles of {cycle} epochs with warm restarts, a copy at "
          f"the end of each cycle ({time.perf_counter() - t0:.1f} s)")

    section("3. Combining members: average probabilities, average logits, majority vote (validation)")
    val_logits = {name: torch.stack([logits_of(m, x_val) for m in ms]) for name, ms in ensembles.items()}  # (K,N,10)
    for name, lg in val_logits.items():
        row = []
        for how in ("probs", "logits", "vote"):
            s = scores(combine(lg, how), y_val)
            row.append(f"{how}: acc {s['acc']:.2%}" + (f", NLL {s['nll']:.3f}" if how != "vote" else ""))
        print(f"  {name:12s} " + " | ".join(row))
    print("  (a vote has no probabilities worth a NLL: a unanimous wrong vote puts probability 0 on the truth)")

    section("4. Ensemble vs its best member on the test set: accuracy, NLL, calibration")
    results, tables = {}, {}
    for name, ms in ensembles.items():
        val_nll = [F.cross_entropy(lg, y_val).item() for lg in val_logits[name]]
        best = int(np.argmin(val_nll))  # chosen on validation, as one would choose a single model to deploy
        test_logits = torch.stack([logits_of(m, x_test) for m in ms])  # (K, N_test, 10)
        for label, probs in ((f"{name} best member", test_logits[best].softmax(-1)),
                             (f"{name} ensemble", combine(test_logits, "probs"))):
            results[label] = scores(probs, y_test)
            tables[label] = ece(probs, y_test)[1]
        each = [scores(lg.softmax(-1), y_test) for lg in test_logits]
        results[f"{name} members on average"] = {key: float(np.mean([e[key] for e in each])) for key in each[0]}
        if name == "independent":
            for how in ("logits", "vote"):
                results[f"independent ensemble ({how})"] = scores(combine(test_logits, how), y_test)
    print(f"  {'':34s} {'accuracy':>9s} {'NLL':>7s} {'ECE':>7s}   (best member: lowest validation NLL)")
    for label, s in results.items():
        print(f"  {label:34s} {s['acc']:9.2%} {s['nll']:7.3f} {s['ece']:7.3f}")
    fig = Figure(figsize=(11, 4.5))
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for label, style in (("independent best member", "o-"), ("independent ensemble", "s-")):
        conf, acc, count = zip(*tables[label])
        ax.plot(conf, acc, style, label=f"{label} (ECE {results[label]['ece']:.3f})")
        ax2.bar(np.arange(len(count)) + (0.2 if "ensemble" in label else -0.2), count, width=0.4, label=label)
    ax.set(xlabel="mean confidence in bin (top-class probability)", ylabel="accuracy in bin",
           title=f"Reliability on the test digits ({ECE_BINS} bins)", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    ax2.set(xlabel="occupied bin (low to high confidence)", ylabel="test digits", yscale="log",
            title="How many predictions fall in each bin")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = args.out_dir / "reliability.png"
    fig.savefig(png, dpi=90)
    print(f"reliability plot: {png}")
    for name in ensembles:
        b, e = results[f"{name} best member"], results[f"{name} ensemble"]
        metrics.update({f"{name}_mean_member_test_nll": results[f"{name} members on average"]["nll"],
                        f"{name}_mean_member_test_ece": results[f"{name} members on average"]["ece"]})
        metrics.update({f"{name}_best_member_test_acc": b["acc"], f"{name}_best_member_test_nll": b["nll"],
                        f"{name}_best_member_test_ece": b["ece"], f"{name}_ensemble_test_acc": e["acc"],
                        f"{name}_ensemble_test_nll": e["nll"], f"{name}_ensemble_test_ece": e["ece"]})
    for how in ("logits", "vote"):
        metrics[f"independent_{how}_avg_test_acc" if how == "logits" else "independent_vote_test_acc"] = \
            results[f"independent ensemble ({how})"]["acc"]
    metrics["independent_logits_avg_test_nll"] = results["independent ensemble (logits)"]["nll"]

    section("5. The vectorised ensemble: stack_module_state + functional_call + vmap")
    for m in members:
        m.eval()
    ensemble_forward, params, buffers = vectorise(members)
    with torch.no_grad():
        loop_out = torch.stack([m(x_test) for m in members])  # (K, N, 10)
        vmap_out = ensemble_forward(params, buffers, x_test)  # (K, N, 10), one batched matmul per layer
    vmap_diff = (loop_out - vmap_out).abs().max().item()
    print(f"vmap vs Python loop over the {k} members: max abs diff {vmap_diff:.2e}")
    # speed: vmap removes per-member overhead (Python calls, kernel launches); it does not make the arithmetic
    # cheaper. So it pays when overhead dominates: one digit at a time, many members, a GPU.
    repeats = 10 if args.smoke else 40
    wide = [make_member(hidden).to(device).eval() for _ in range(32)]  # a 32-member ensemble, timing only
    print(f"  {'members':>7s} {'batch':>6s} {'loop ms':>9s} {'vmap ms':>9s} {'loop/vmap':>9s}")
    speed = {}
    for label, group in (("k", members), ("32", wide)):
        forward, p, b = vectorise(group)
        for batch_label, xb in (("1", x_test[:1]), ("all", x_test)):
            with torch.no_grad():
                forward(p, b, xb)  # warm-up
                loop_ms = median_ms(lambda: [m(xb) for m in group], device, repeats)  # noqa: B023 (called now)
                vmap_ms = median_ms(lambda: forward(p, b, xb), device, repeats)  # noqa: B023
            speed[(label, batch_label)] = loop_ms / vmap_ms
            print(f"  {len(group):7d} {len(xb):6d} {loop_ms:9.3f} {vmap_ms:9.3f} {loop_ms / vmap_ms:8.2f}x")
    best = max(speed, key=speed.get)
    print(f"largest gain here: {speed[best]:.2f}x ({32 if best[0] == '32' else k} members, batch "
          f"{1 if best[1] == '1' else len(y_test)}) on {device.type}; where the ratio is below 1, the loop's plain "
          "matmuls beat the batched ones and there was little overhead to remove")
    metrics.update({"vmap_vs_loop_max_abs_diff": vmap_diff, "vmap_k_batch1_speedup": speed[("k", "1")],
                    "vmap_k_full_batch_speedup": speed[("k", "all")], "vmap_32_batch1_speedup": speed[("32", "1")],
                    "vmap_32_full_batch_speedup": speed[("32", "all")]})

    section("6. Weight averaging (SWA): one model's inference cost")
    t0 = time.perf_counter()
    torch.manual_seed(args.seed * 1000 + 950)
    base = make_member(hidden).to(device)
    optimizer = adam(base, args.lr, args.weight_decay)
    g = torch.Generator().manual_seed(args.seed * 1000 + 950)
    train_epochs(base, optimizer, x_train, y_train, epochs, args.batch_size, g,
                 cosine(args.lr, epochs * steps_per_epoch))
    base_probs = logits_of(base, x_test).softmax(-1)
    swa_model = AveragedModel(base)  # keeps a running mean of the weights it is shown
    swa_lr = args.lr / 5
    scheduler = SWALR(optimizer, swa_lr=swa_lr, anneal_epochs=1)
    for _ in range(swa_epochs):  # a constant, fairly high rate: the weights wander around a wide minimum
        base.train()
        for xb, yb in batches(x_train, y_train, args.batch_size, g):
            loss = F.cross_entropy(base(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        swa_model.update_parameters(base)
    before_bn = scores(logits_of(swa_model, x_test).softmax(-1), y_test)
    # the averaged weights never saw BatchNorm statistics of their own: recompute them with one pass over training
    stats = [m for m in swa_model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    stats_before = [(m.running_mean.clone(), m.running_var.clone()) for m in stats]
    update_bn([(xb,) for xb, _ in batches(x_train, y_train, args.batch_size, g)], swa_model, device=device)
    bn_shift = max(max((m.running_mean - mean).abs().max().item(), (m.running_var - var).abs().max().item())
                   for m, (mean, var) in zip(stats, stats_before))
    swa = scores(logits_of(swa_model, x_test).softmax(-1), y_test)
    single = scores(base_probs, y_test)
    ens = results["independent ensemble"]
    print(f"{swa_epochs} SWA epochs at lr {swa_lr:g} after {epochs} ordinary ones, "
          f"{swa_model.n_averaged.item()} weight snapshots averaged ({time.perf_counter() - t0:.1f} s); update_bn "
          f"moved the BatchNorm running statistics (copied from the start model) by up to {bn_shift:.3f}")
    print(f"  {'':30s} {'accuracy':>9s} {'NLL':>7s} {'ECE':>7s}  forward passes per prediction")
    for label, s, cost in (("single model (SWA's start)", single, 1), ("SWA before update_bn", before_bn, 1),
                           ("SWA after update_bn", swa, 1), (f"independent ensemble of {k}", ens, k)):
        print(f"  {label:30s} {s['acc']:9.2%} {s['nll']:7.3f} {s['ece']:7.3f}  {cost}")
    metrics.update({"single_test_acc": single["acc"], "single_test_nll": single["nll"],
                    "swa_test_acc": swa["acc"], "swa_test_nll": swa["nll"], "swa_test_ece": swa["ece"],
                    "swa_no_update_bn_test_nll": before_bn["nll"], "swa_update_bn_max_stat_change": bn_shift})

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    b, e = results["independent best member"], results["independent ensemble"]
    print(ensemble_note(b, e))
    print("- Average probabilities (or logits) rather than votes: votes throw the confidence away.")
    print("- Snapshot ensembles get K members from one run's budget; bagging trades data per member for diversity.")
    print("- vmap over stacked weights runs K models as one: same numbers as the loop, no per-model overhead; it "
          "pays off where that overhead dominates (small batches, many members, GPUs).")
    print("- SWA costs one model at inference; without update_bn its BatchNorm statistics do not match its weights.")
    return metrics


if __name__ == "__main__":
    main()

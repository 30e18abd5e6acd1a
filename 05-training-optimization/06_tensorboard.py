"""TensorBoard: log a training run with SummaryWriter, then read the event files back and see what is in them.

torch.utils.tensorboard.SummaryWriter writes "event files" that the TensorBoard web app displays. This lesson trains
a small CNN on generated 16x16 pattern images at two learning rates and logs, for each run: scalars (losses,
accuracy, learning rate), histograms (weights and gradients), images (a batch of inputs), the model graph, a
precision-recall curve per class, an embedding of the penultimate features (for the Projector tab) and the run's
hyperparameters with its final metrics (the HParams tab compares runs). Then it reads the files back with
tensorboard's EventAccumulator, the same reader the app uses, lists the tags it finds and checks a logged value.

Run it:
    python 05-training-optimization/06_tensorboard.py
    tensorboard --logdir outputs/05-training-optimization/06_tensorboard/runs    # then open http://localhost:6006

Takes about 6 seconds on a 2-core CPU (--smoke: about 4 s).
What to look for: every kind of summary found again in the event files (tags listed per kind), the value read back
equal to the one logged, and the tensorboard command to browse the runs.
"""

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

CLASSES = ("horizontal", "vertical", "diagonal", "blob")


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
    parser.add_argument("--smoke", action="store_true", help="less data and fewer epochs: a few seconds on a CPU")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/05-training-optimization/06_tensorboard"),
                        help="event files go to <out-dir>/runs/<run>; metrics.json to <out-dir>")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per run (--smoke uses 3)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.003, 0.03], help="one run per Adam learning rate")
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
    if args.epochs < 1 or min(args.lrs) <= 0:
        parser.error("need --epochs >= 1 and every --lrs value > 0")
    if len({f"{lr:g}" for lr in args.lrs}) < len(args.lrs):
        parser.error("--lrs values must differ: each run is logged to its own folder, runs/lr_<value>")
    return args


def make_patterns(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes of noisy 16x16 patterns: horizontal bars, vertical bars, a diagonal, a blob. (N, 1, 16, 16)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    r = torch.arange(16).float()
    rows, cols = r[:, None].expand(16, 16), r[None, :].expand(16, 16)
    x = torch.empty(n, 1, 16, 16)
    for i in range(n):
        shift = torch.randint(0, 16, (2,), generator=g).float()
        if y[i] == 0:
            img = (torch.sin((rows + shift[0]) * 1.2) > 0.3).float()
        elif y[i] == 1:
            img = (torch.sin((cols + shift[1]) * 1.2) > 0.3).float()
        elif y[i] == 2:
            img = ((rows - cols + shift[0] - 8).abs() < 2).float()
        else:
            img = (((rows - shift[0]) ** 2 + (cols - shift[1]) ** 2) < 16).float()
        x[i, 0] = img
    return x + 0.4 * torch.randn(n, 1, 16, 16, generator=g), y


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 8, 8, 8)
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),  # (B, 64)
        )
        self.head = nn.Linear(64, 4)

    def forward(self, x):
        return self.head(self.features(x))


def train_run(lr, data, args, device, log_dir: Path) -> dict:
    (x_tr, y_tr), (x_val, y_val) = data
    torch.manual_seed(args.seed)
    model = SmallCNN().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    shutil.rmtree(log_dir, ignore_errors=True)  # a rerun would otherwise add a second event file to the folder
    writer = SummaryWriter(log_dir=str(log_dir))  # one folder per run: TensorBoard overlays them
    writer.add_graph(model, x_tr[:2].to(device))  # traces one forward pass (with torch.jit.trace, hence its warnings)
    writer.add_image("inputs/first_batch", make_grid(x_tr[:32], nrow=8, normalize=True), 0)  # (3, H, W)
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(x_tr)).split(64):
            loss = nn.functional.cross_entropy(model(x_tr[idx].to(device)), y_tr[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            writer.add_scalar("loss/train", loss.item(), step)  # per step: x axis is the optimizer step
            step += 1
        model.eval()
        with torch.no_grad():
            logits = model(x_val.to(device)).cpu()
        val_loss = nn.functional.cross_entropy(logits, y_val).item()
        val_acc = (logits.argmax(1) == y_val).float().mean().item()
        writer.add_scalar("loss/val", val_loss, step)
        writer.add_scalar("accuracy/val", val_acc, step)
        writer.add_scalar("lr", opt.param_groups[0]["lr"], step)
        for name, p in model.named_parameters():  # once per epoch: histograms are big
            writer.add_histogram(f"weights/{name}", p, epoch)
            writer.add_histogram(f"grads/{name}", p.grad, epoch)
    probs = logits.softmax(1)  # (N, 4)
    for c, cname in enumerate(CLASSES):  # one-vs-rest PR curve per class
        writer.add_pr_curve(f"pr/{cname}", (y_val == c).int(), probs[:, c], step)
    with torch.no_grad():
        feats = model.features(x_val[:200].to(device)).cpu()  # (200, 64) penultimate features
    writer.add_embedding(feats, metadata=[CLASSES[int(i)] for i in y_val[:200]], label_img=x_val[:200].clamp(-1, 2),
                         global_step=step, tag="penultimate")
    writer.add_hparams({"lr": lr, "epochs": args.epochs}, {"hparam/val_accuracy": val_acc, "hparam/val_loss": val_loss},
                       run_name="hparams")  # fixed name: a timestamp would make every rerun a new folder
    writer.close()  # flushes; until then events may sit in a buffer
    return {"val_acc": val_acc, "val_loss": val_loss, "last_train_loss": loss.item(), "steps": step}


def read_back(log_dir: Path) -> dict:
    ea = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})  # 0: keep every event
    ea.Reload()
    tags = ea.Tags()
    hp = EventAccumulator(str(log_dir / "hparams"))
    hp.Reload()
    return {"tags": tags, "hparams": sorted(hp.PluginTagToContent("hparams")), "hp_scalars": hp.Tags()["scalars"],
            "last_train_loss": ea.Scalars("loss/train")[-1].value, "pr": sorted(ea.PluginTagToContent("pr_curves"))}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    if args.smoke:
        args.epochs = 3
    n = 384 if args.smoke else 2048
    data = (make_patterns(n, args.seed), make_patterns(400, args.seed + 1))
    runs = args.out_dir / "runs"
    print(f"device {device}; {n} training images of 4 pattern classes; event files under {runs}")

    section("Training and logging one run per learning rate")
    results = {}
    for lr in args.lrs:
        log_dir = runs / f"lr_{lr:g}"
        results[lr] = train_run(lr, data, args, device, log_dir)
        r = results[lr]
        print(f"  lr {lr:g}: {r['steps']} steps, val accuracy {r['val_acc']:.3f}, val loss {r['val_loss']:.4f} "
              f"-> {log_dir}")

    section("Reading the event files back (tensorboard's EventAccumulator)")
    found = {lr: read_back(runs / f"lr_{lr:g}") for lr in args.lrs}
    first = found[args.lrs[0]]
    for kind in ("scalars", "histograms", "images", "tensors"):
        tags = first["tags"][kind]
        print(f"  {kind:<10} {len(tags):>2} tags: {', '.join(tags[:4])}{' ...' if len(tags) > 4 else ''}")
    print(f"  graph      {first['tags']['graph']}")
    print(f"  pr_curves  {', '.join(first['pr'])}")
    print(f"  hparams    {', '.join(first['hparams'])}; metrics {', '.join(first['hp_scalars'])}")
    embed_dir = runs / f"lr_{args.lrs[0]:g}"
    embed_files = sorted(p.name for p in embed_dir.rglob("*") if p.suffix in (".tsv", ".png", ".pbtxt"))
    print(f"  projector  {', '.join(embed_files)}")
    gap = max(abs(found[lr]["last_train_loss"] - results[lr]["last_train_loss"]) for lr in args.lrs)
    print(f"last loss/train read back vs logged: max abs diff {gap:.2e} (events store float32)")

    section("Browse it")
    print(f"  tensorboard --logdir {runs}")
    print("  then open http://localhost:6006 (Scalars, Images, Graphs, Distributions, Histograms, PR Curves,")
    print("  Projector, HParams). In a notebook: %load_ext tensorboard, then %tensorboard --logdir ...")

    best_lr = max(args.lrs, key=lambda lr: results[lr]["val_acc"])
    metrics = {
        "scalar_tags": len(first["tags"]["scalars"]), "histogram_tags": len(first["tags"]["histograms"]),
        "image_tags": len(first["tags"]["images"]), "graph_found": bool(first["tags"]["graph"]),
        "pr_curve_tags": len(first["pr"]), "hparams_found": "_hparams_/experiment" in first["hparams"],
        "hparam_metric_tags": len(first["hp_scalars"]), "embedding_files": len(embed_files),
        "runs_found": sum(any((runs / f"lr_{lr:g}").glob("events.out.tfevents.*")) for lr in args.lrs),
        "scalar_readback_max_abs_diff": gap,
        "best_val_accuracy": results[best_lr]["val_acc"], "best_lr": best_lr,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- One log_dir per run; TensorBoard overlays runs that share a parent --logdir.")
    print("- Scalars every step are cheap; histograms and embeddings are big, log them rarely.")
    print("- writer.close() (or flush()) before reading: events are buffered.")
    print("- A rerun into the same folder adds event files and mixes old and new curves; this lesson clears it first.")
    return metrics


if __name__ == "__main__":
    main()

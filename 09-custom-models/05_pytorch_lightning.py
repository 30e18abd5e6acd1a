"""PyTorch Lightning: the training loop you wrote by hand, reorganised into a LightningModule and a Trainer.

Sections:
1. Data: 1,797 real 8x8 handwritten digits (scikit-learn's load_digits), split train / validation / test, wrapped
   in a LightningDataModule (setup + one DataLoader per stage).
2. The plain loop of module 04 (04-neural-networks/06_training_loop.py): train mode, zero_grad, forward, loss,
   backward, step, a cosine learning-rate schedule, a validation pass per epoch.
3. The same model as a LightningModule (training_step, validation_step, test_step, predict_step,
   configure_optimizers) trained by a Trainer with the same seed, data order and optimizer: final loss and
   accuracy side by side, and the largest weight difference between the two models.
4. Callbacks: ModelCheckpoint (keeps the best validation accuracy), LearningRateMonitor (logs the schedule),
   EarlyStopping (stops when the validation loss stops improving).
5. precision="bf16-mixed": autocast inside the Trainer, checked with a forward hook, and its time per step
   (measured by a small custom Callback).
6. Loggers read back: CSVLogger's metrics.csv and TensorBoardLogger's event file, parsed, and the two compared.
7. The best checkpoint: Trainer.test and Trainer.predict with ckpt_path="best", and
   LitDigits.load_from_checkpoint(..., weights_only=True) giving the same predictions.
8. fast_dev_run: one batch of every stage, to catch a bug in seconds before a long run.

Run it:
    python 09-custom-models/05_pytorch_lightning.py
    python 09-custom-models/05_pytorch_lightning.py --epochs 20 --lr 0.1

Takes about 5 seconds on an idle 2-core CPU (importing pytorch_lightning alone takes about 2 s, so --smoke is not
much shorter). What to look for: the plain loop and Lightning reaching the same accuracy
(and, on a CPU, the same weights to the last bit), the epoch EarlyStopping stopped at, the logged values read back
from both loggers, and the reloaded checkpoint predicting exactly what Trainer.predict does. Everything Lightning
writes (logs, checkpoints) goes under --out-dir; nothing lands in the working directory.
"""

import argparse
import csv
import importlib.util
import itertools
import json
import logging
import random
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# Lightning reports through these loggers ("GPU available: ...", tips); the lesson prints what matters itself
QUIET_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


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
                        help="where both models train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="3 epochs, a 6-epoch cap for the EarlyStopping run")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/09-custom-models/05_pytorch_lightning"),
                        help="where metrics.json, Lightning's logs and checkpoints go")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the plain loop and the Lightning run")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per optimizer step")
    parser.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate (cosine schedule)")
    parser.add_argument("--hidden", type=int, default=128, help="width of the hidden layer")
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
    if args.epochs < 1 or not 1 <= args.batch_size <= 1000 or args.lr <= 0 or args.hidden < 1:
        parser.error("need --epochs >= 1, 1 <= --batch-size <= 1000 (the training split), --lr > 0, --hidden >= 1")
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


def load_digits_split(seed: int) -> dict:
    """x (N, 64) scaled to [0, 1], y (N,) in 0..9, shuffled once with the seed: 1000 train, 397 val, 400 test."""
    images, y = real_digits()
    x = images.flatten(1) / 16.0
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return {"train": (x[:1000], y[:1000]), "val": (x[1000:1397], y[1000:1397]), "test": (x[1397:], y[1397:])}


def make_net(hidden: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)  # both versions start from the same weights
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


class DigitsDataModule(pl.LightningDataModule):
    """Everything about the data in one object: the split and one DataLoader per stage."""

    def __init__(self, splits: dict, batch_size: int, seed: int):
        super().__init__()
        self.splits, self.batch_size, self.seed = splits, batch_size, seed

    def setup(self, stage: str) -> None:  # called by the Trainer for "fit", "validate", "test", "predict"
        self.datasets = {name: TensorDataset(*xy) for name, xy in self.splits.items()}

    def train_dataloader(self):
        # a seeded generator: the same shuffle as the plain loop's DataLoader
        return DataLoader(self.datasets["train"], batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self):
        return DataLoader(self.datasets["val"], batch_size=500)

    def test_dataloader(self):
        return DataLoader(self.datasets["test"], batch_size=500)

    def predict_dataloader(self):
        return DataLoader(self.datasets["test"], batch_size=500)


class LitDigits(pl.LightningModule):
    """The model plus what to do with one batch at each stage, and the optimizer; the Trainer runs the loops."""

    def __init__(self, hidden: int = 128, lr: float = 0.05, epochs: int = 12, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()  # stored in every checkpoint: load_from_checkpoint rebuilds the model from them
        self.net = make_net(hidden, seed)

    def forward(self, x):  # (B, 64) -> (B, 10) logits
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)  # epoch mean, weighted by batch size
        return loss  # Lightning does zero_grad, backward and step with it

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self(x).argmax(1) == y).float().mean())

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).argmax(1)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class StepTimer(pl.Callback):
    """A callback: hooks the Trainer calls around every training batch (forward, backward, optimizer step)."""

    def __init__(self):
        self.times = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.times.append(time.perf_counter() - self.t0)

    def median_ms(self) -> float:
        return 1e3 * float(np.median(self.times))


def plain_loop(splits, args, epochs: int, device) -> tuple[nn.Module, dict]:
    """Module 04's loop, written out: the reference the Lightning version must reproduce."""
    model = make_net(args.hidden, args.seed).to(device)
    x_train, y_train = splits["train"]
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    x_val, y_val = (t.to(device) for t in splits["val"])
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        # exactly len(loader) batches, as the Trainer takes them. A bare `for` asks once more, for the StopIteration;
        # when the batches divide the data evenly, that extra next() lets RandomSampler draw one more (unused)
        # permutation from the seeded generator, and every later epoch would be shuffled differently from Lightning's
        for xb, yb in itertools.islice(loader, len(loader)):
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            count += len(yb)
        sched.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = F.cross_entropy(logits, y_val).item()
            val_acc = (logits.argmax(1) == y_val).float().mean().item()
        print(f"  plain epoch {epoch + 1}: train loss {total / count:.4f}, val loss {val_loss:.4f}, "
              f"val acc {val_acc:.2%}")
    x_test, y_test = (t.to(device) for t in splits["test"])
    with torch.no_grad():
        test_acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    return model, {"train_loss": total / count, "val_loss": val_loss, "val_acc": val_acc, "test_acc": test_acc}


def read_csv_metrics(path: Path) -> list[dict]:
    """CSVLogger writes one row per logging call; empty cells where a metric was not logged in that row."""
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def read_tensorboard_scalars(log_dir: Path) -> dict:
    """tag -> [(step, value)] from the events.out.tfevents.* file TensorBoardLogger wrote."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def make_trainer(device, out_dir: Path, **kwargs) -> pl.Trainer:
    accelerator = {"cuda": "gpu", "mps": "mps"}.get(device.type, "cpu")
    return pl.Trainer(accelerator=accelerator, devices=1, default_root_dir=out_dir, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for old in ("logs", "checkpoints"):  # a rerun starts clean: no version_1, no -v1.ckpt
        shutil.rmtree(args.out_dir / old, ignore_errors=True)
    saved_levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # "does not have many workers": true, and irrelevant for tensors already in memory
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # tensorboard vs torch.utils._pytree
            metrics = run(args, device)
    finally:
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- A LightningModule holds what changes between projects (the steps, the optimizer); the Trainer holds "
          "what does not (loops, devices, precision, checkpoints, logging).")
    print(same_model_note(metrics["plain_vs_lightning_weight_max_abs_diff"], device.type))
    print("- Callbacks and loggers are where the bookkeeping lives; load_from_checkpoint needs only the .ckpt file "
          "because save_hyperparameters() put the constructor's arguments in it.")
    return metrics


def same_model_note(weight_diff: float, device_type: str) -> str:
    """The 'What to notice' line on the plain loop vs the Trainer, for what this run's weights showed."""
    if weight_diff == 0.0:
        return ("- Same seed, same data order, same optimizer: the Trainer computes exactly what the hand-written loop "
                "does. It adds no magic, only bookkeeping.")
    if weight_diff <= 1e-5:  # on a GPU, kernels may sum in another order from run to run: rounding, no more
        return (f"- Same seed, same data order, same optimizer: the Trainer computes what the hand-written loop does, "
                f"up to float rounding on {device_type} ({weight_diff:.1e}). It adds no magic, only bookkeeping.")
    return (f"- Not in this run: the plain loop and the Trainer ended with weights {weight_diff:.2e} apart, so some "
            "input to training differed (data order, learning rate, precision) and the steps amplified it. The "
            "Trainer adds no magic only where the two match.")


def run(args, device) -> dict:
    epochs = 3 if args.smoke else args.epochs
    section("1. Data: scikit-learn's handwritten digits")
    splits = load_digits_split(args.seed)
    print("train / val / test: " + ", ".join(f"{k} {len(v[1])}" for k, v in splits.items())
          + "; 8x8 images flattened to 64 features in [0, 1], 10 classes")

    section("2. The plain loop (module 04)")
    t0 = time.perf_counter()
    plain_model, plain = plain_loop(splits, args, epochs, device)
    plain_s = time.perf_counter() - t0

    section("3. The same model in Lightning")
    logs = args.out_dir / "logs"
    csv_logger = CSVLogger(save_dir=logs, name="csv", version=0)
    tb_logger = TensorBoardLogger(save_dir=logs, name="tensorboard", version=0, default_hp_metric=False)
    checkpoint = ModelCheckpoint(dirpath=args.out_dir / "checkpoints", filename="best-{epoch}-{val_acc:.4f}",
                                 monitor="val_acc", mode="max", save_top_k=1)
    datamodule = DigitsDataModule(splits, args.batch_size, args.seed)
    lit = LitDigits(hidden=args.hidden, lr=args.lr, epochs=epochs, seed=args.seed)
    trainer = make_trainer(device, args.out_dir, max_epochs=epochs, logger=[csv_logger, tb_logger],
                           callbacks=[checkpoint, LearningRateMonitor(logging_interval="epoch")],
                           log_every_n_steps=1)
    t0 = time.perf_counter()
    trainer.fit(lit, datamodule=datamodule)
    lit_s = time.perf_counter() - t0
    cm = {k: float(v) for k, v in trainer.callback_metrics.items()}
    lit_test = trainer.test(lit, datamodule=datamodule, verbose=False)[0]["test_acc"]  # the final weights
    weight_diff = max((p.detach().cpu() - q.detach().cpu()).abs().max().item()
                      for p, q in zip(plain_model.parameters(), lit.net.parameters()))
    print(f"{'':<22}{'plain loop':>12}{'Lightning':>12}")
    for name, a, b in (("final train loss", plain["train_loss"], cm["train_loss"]),
                       ("final val loss", plain["val_loss"], cm["val_loss"]),
                       ("final val accuracy", plain["val_acc"], cm["val_acc"]),
                       ("test accuracy", plain["test_acc"], lit_test)):
        print(f"{name:<22}{a:>12.4f}{b:>12.4f}")
    match = weight_diff <= 1e-5
    print(f"largest weight difference after {epochs} epochs: {weight_diff:.2e} -> "
          f"{'the same model' if match else 'different models'}; time {plain_s:.2f} s plain vs {lit_s:.2f} s "
          "Lightning (its per-epoch bookkeeping costs on a model this small)")

    section("4. Callbacks: ModelCheckpoint, LearningRateMonitor, EarlyStopping")
    print(f"ModelCheckpoint kept {Path(checkpoint.best_model_path).name} "
          f"(best val_acc {float(checkpoint.best_model_score):.4f}); LearningRateMonitor logged lr-SGD "
          "(read back in section 6)")
    early = EarlyStopping(monitor="val_loss", mode="min", patience=2, min_delta=0.005)
    max_early = 10 if args.smoke else 40
    # three times the learning rate: the validation loss bottoms out within a few epochs, so the callback has work
    lit_es = LitDigits(hidden=args.hidden, lr=3 * args.lr, epochs=max_early, seed=args.seed)
    fp32_timer = StepTimer()
    trainer_es = make_trainer(device, args.out_dir, max_epochs=max_early, logger=False, enable_checkpointing=False,
                              callbacks=[early, fp32_timer])
    trainer_es.fit(lit_es, datamodule=DigitsDataModule(splits, args.batch_size, args.seed))
    fp32_step_ms = fp32_timer.median_ms()
    stopped = trainer_es.current_epoch  # epochs actually run
    print(f"EarlyStopping(val_loss, patience=2, min_delta=0.005), lr {3 * args.lr:g}: ran {stopped} of at most "
          f"{max_early} epochs ({'stopped early' if early.stopped_epoch else 'never triggered'}; best val_loss "
          f"{float(early.best_score):.4f})")

    section("5. precision='bf16-mixed'")
    native_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    bf16_ok = device.type == "cpu" or native_bf16
    precision = "bf16-mixed" if bf16_ok else "16-mixed"
    bf16_epochs = 1 if args.smoke else 3
    lit16 = LitDigits(hidden=args.hidden, lr=3 * args.lr, epochs=bf16_epochs, seed=args.seed)
    bf16_timer = StepTimer()
    trainer16 = make_trainer(device, args.out_dir, max_epochs=bf16_epochs, precision=precision, logger=False,
                             enable_checkpointing=False, callbacks=[bf16_timer])
    seen_dtypes = set()  # what the first Linear actually produced during training, recorded by a forward hook
    hook = lit16.net[0].register_forward_hook(lambda mod, inp, out: seen_dtypes.add(str(out.dtype)))
    trainer16.fit(lit16, datamodule=DigitsDataModule(splits, args.batch_size, args.seed))
    bf16_step_ms = bf16_timer.median_ms()
    hook.remove()
    bf16_acc = float(trainer16.callback_metrics["val_acc"])
    print(f"precision={precision!r}{'' if bf16_ok else ' (no native bf16 on this device)'}, {bf16_epochs} epoch(s): "
          f"the first Linear's outputs were {sorted(seen_dtypes)} under autocast, its weight stays "
          f"{lit16.net[0].weight.dtype}; val acc {bf16_acc:.2%}")
    faster = bf16_step_ms < fp32_step_ms
    ratio = max(bf16_step_ms, fp32_step_ms) / min(bf16_step_ms, fp32_step_ms)
    print(f"median training step (a StepTimer callback): {bf16_step_ms:.2f} ms {precision} vs {fp32_step_ms:.2f} ms "
          f"float32 (section 4's run): {'faster' if faster else 'slower'} by {ratio:.2f}x here"
          + ("" if faster else " (without native bf16 matrix units it is emulated; Ampere+ GPUs and AMX CPUs gain)"))

    section("6. Loggers read back")
    rows = read_csv_metrics(logs / "csv" / "version_0" / "metrics.csv")
    csv_val = [r["val_acc"] for r in rows if "val_acc" in r]
    csv_lr = [r["lr-SGD"] for r in rows if "lr-SGD" in r]
    print(f"metrics.csv: {len(rows)} rows, columns {sorted({k for r in rows for k in r})}")
    print(f"  val_acc per epoch {[round(v, 4) for v in csv_val]}")
    print(f"  lr-SGD per epoch (LearningRateMonitor, cosine) {[round(v, 4) for v in csv_lr]}")
    tb = read_tensorboard_scalars(logs / "tensorboard" / "version_0")
    tb_val = [v for _, v in tb.get("val_acc", [])]
    tb_vs_csv = max(abs(a - b) for a, b in zip(csv_val, tb_val)) if len(tb_val) == len(csv_val) else float("inf")
    print(f"event file: scalar tags {sorted(tb)}; val_acc matches the CSV: max abs difference {tb_vs_csv:.2e}")
    print(f"  (tensorboard --logdir {logs / 'tensorboard'} shows the curves)")

    section("7. The best checkpoint: test, predict, load_from_checkpoint")
    best = checkpoint.best_model_path
    best_test = trainer.test(lit, datamodule=datamodule, ckpt_path="best", weights_only=True,
                             verbose=False)[0]["test_acc"]
    predicted = torch.cat(trainer.predict(lit, datamodule=datamodule, ckpt_path="best", weights_only=True))
    # weights_only=True: the checkpoint holds tensors and plain hyperparameters only, nothing to unpickle
    reloaded = LitDigits.load_from_checkpoint(best, map_location=device, weights_only=True)
    reloaded.eval()
    with torch.no_grad():
        again = reloaded(splits["test"][0].to(device)).argmax(1).cpu()
    same = torch.equal(predicted.cpu(), again)
    print(f"Trainer.test(ckpt_path='best'): test accuracy {best_test:.2%} (the final weights: {lit_test:.2%})")
    print(f"load_from_checkpoint rebuilt LitDigits{dict(reloaded.hparams)} from {Path(best).name}; its predictions "
          f"equal Trainer.predict(ckpt_path='best') on all {len(again)} test digits: {same}")

    section("8. fast_dev_run")
    dev_root = args.out_dir / "fast_dev_run"
    shutil.rmtree(dev_root, ignore_errors=True)
    dev = make_trainer(device, dev_root, fast_dev_run=True)
    lit_dev = LitDigits(hidden=args.hidden, lr=args.lr, epochs=1, seed=args.seed)
    dev.fit(lit_dev, datamodule=DigitsDataModule(splits, args.batch_size, args.seed))
    dev_batches = dev.fit_loop.epoch_loop.batch_progress.total.completed
    dev_val = dev.fit_loop.epoch_loop.val_loop.batch_progress.total.completed
    dev_files = [p for p in dev_root.rglob("*") if p.is_file()] if dev_root.exists() else []
    print(f"fast_dev_run=True: {dev_batches} training batch(es), {dev_val} validation batch(es), "
          f"{len(dev_files)} file(s) written (no logs, no checkpoint): a crash test in seconds before a long run")

    return {"plain_val_acc": plain["val_acc"], "lightning_val_acc": cm["val_acc"], "plain_test_acc": plain["test_acc"],
            "lightning_test_acc": lit_test, "plain_train_loss": plain["train_loss"],
            "lightning_train_loss": cm["train_loss"], "plain_vs_lightning_weight_max_abs_diff": weight_diff,
            "plain_matches_lightning": int(match), "best_val_acc": float(checkpoint.best_model_score),
            "best_ckpt_test_acc": best_test, "reload_predictions_equal": int(same),
            "csv_val_acc_rows": len(csv_val), "csv_lr_rows": len(csv_lr),
            "lr_first": csv_lr[0] if csv_lr else 0.0, "lr_last": csv_lr[-1] if csv_lr else 0.0,
            "tensorboard_vs_csv_max_abs_diff": tb_vs_csv if tb_vs_csv != float("inf") else -1.0,
            "bf16_val_acc": bf16_acc, "bf16_used": int(bf16_ok),
            "low_precision_activations": int(bool(seen_dtypes) and seen_dtypes <= {"torch.bfloat16", "torch.float16"}),
            "early_stop_epochs": stopped,
            "early_stop_max_epochs": max_early, "early_stopped": int(early.stopped_epoch > 0),
            "fast_dev_run_batches": dev_batches, "fp32_step_ms": fp32_step_ms, "bf16_step_ms": bf16_step_ms,
            "fast_dev_run_files": len(dev_files), "plain_train_s": plain_s, "lightning_train_s": lit_s}


if __name__ == "__main__":
    main()

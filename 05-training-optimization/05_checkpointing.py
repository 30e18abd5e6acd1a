"""Checkpointing: save everything a run needs, write it atomically, resume bit-identically.

A checkpoint that only holds model.state_dict() is enough to *use* a model, not to *continue training* it. A run
also lives in the optimizer (momentum buffers), the scheduler (where in the schedule it is), the epoch counter, the
random number generators (dropout masks, shuffling order, augmentation noise: CPU, CUDA and MPS) and the run's
configuration (data size, seed, lr: a resume with other values is refused). This lesson saves all of them,
writes the file atomically (to a temporary file in the same folder, then os.replace, so a crash mid-write never
leaves a half-written checkpoint), loads it with torch.load(weights_only=True) (the RNG states are stored as tensors
and lists of plain numbers, so no unsafe unpickling is needed), and proves the point: a run interrupted after k
epochs and resumed ends with weights bit-identical to a run that was never interrupted (on the CPU). It also shows
what goes wrong without the RNG or optimizer state, and that a missing or corrupt file gives a clear message.

Run it:
    python 05-training-optimization/05_checkpointing.py                      # the demonstration
    python 05-training-optimization/05_checkpointing.py --resume --epochs 12 # continue its checkpoint to epoch 12

Takes about 4 seconds on a 2-core CPU (--smoke: about 3 s).
What to look for: "max abs diff 0" between the uninterrupted and the resumed run; non-zero differences when the RNG
or optimizer state is left out; one-line messages, not tracebacks, for the missing, the corrupt and the mismatched
checkpoint.
"""

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

REQUIRED_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "config")


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with a message meant for a person."""


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
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/05-training-optimization/05_checkpointing"),
                        help="where checkpoint.pt and metrics.json are written")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the full run (--smoke uses 4)")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="the demo's simulated crash comes after this many epochs (default: half of --epochs)")
    parser.add_argument("--resume", action="store_true",
                        help="instead of the demo, continue training from --checkpoint up to --epochs")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint path (default: <out-dir>/checkpoint.pt)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
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
    if args.epochs < 2 or args.lr <= 0:
        parser.error("need --epochs >= 2 and --lr > 0")
    if args.smoke and not args.resume:
        args.epochs = 4  # the demo in tiny form; a --resume continues to whatever --epochs says
    if args.stop_after is not None and not 0 < args.stop_after < args.epochs:
        parser.error(f"--stop-after must be between 1 and {args.epochs - 1} (--epochs - 1"
                     + ("; --smoke runs 4 epochs)" if args.smoke else ")"))
    return args


# ---- RNG state as plain types, so torch.load(weights_only=True) can read it back ----
def capture_rng() -> dict:
    """Every generator a training step may draw from: torch's CPU one, each accelerator's, numpy's, Python's."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),  # uint8 tensor
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],  # list of uint8 tensors
        # Apple GPUs keep their own generator: dropout on "mps" draws from it, not from the CPU one
        "mps": torch.mps.get_rng_state() if torch.backends.mps.is_available() else torch.empty(0, dtype=torch.uint8),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},  # ints and a float/None
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state["mps"].numel() and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(path: Path, model, optimizer, scheduler, epoch: int, config: dict) -> None:
    """Write atomically: a temporary file in the same folder, flushed to disk, then os.replace (atomic on POSIX
    and Windows when both paths are on one filesystem). Readers see the old file or the new one, never half."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch, "rng": capture_rng(), "config": config}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, model, optimizer, scheduler, config: dict, restore_rng_state: bool = True,
                    restore_optimizer: bool = True) -> int:
    """Restore everything save_checkpoint wrote; returns the number of epochs already done.

    config: this run's settings; a checkpoint written with other ones is refused (its data or lr would silently
    differ from what this run says it uses)."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (run without --resume first, or pass --checkpoint PATH)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise CheckpointError(f"{path} is corrupt or not a checkpoint ({type(err).__name__}); delete it and retrain "
                              "from scratch or from an older copy") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a full training checkpoint: missing {', '.join(missing)}")
    differ = {k: (v, config.get(k)) for k, v in state["config"].items() if config.get(k) != v}
    if differ:
        raise CheckpointError(f"{path} was written by a run with " + ", ".join(
            f"{k}={old} (this run: {new})" for k, (old, new) in differ.items())
            + "; resume with the same flags (--smoke, --seed, --lr) or start a new run")
    try:
        model.load_state_dict(state["model"])  # copies onto the model's device
        if restore_optimizer:
            optimizer.load_state_dict(state["optimizer"])  # casts its tensors to the parameters' device
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path} does not fit this model/optimizer: {str(err).splitlines()[0]}") from None
    if restore_rng_state:
        restore_rng(state["rng"])
    return int(state["epoch"])


def build(seed: int, n: int, lr: float, device):
    """Data, model, optimizer and scheduler. The data is fixed by the seed; the model's init by the global RNG."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)  # (N, 20)
    y = (x[:, :10].sum(1) > x[:, 10:].pow(2).sum(1).sqrt() * 0.8).long()  # a learnable 2-class rule
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)  # shuffles with the global torch RNG
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 2)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return loader, model, opt, sched


def train_epochs(loader, model, opt, sched, first: int, last: int, device, ckpt: Path | None = None,
                 config: dict | None = None) -> float:
    """Epochs first..last-1; uses all three RNGs, like real pipelines do; checkpoints after every epoch."""
    loss = torch.tensor(0.0)
    for epoch in range(first, last):
        model.train()
        for xb, yb in loader:
            if random.random() < 0.5:  # python RNG: decide whether to augment this batch
                xb = xb + torch.from_numpy(np.random.normal(0, 0.1, xb.shape).astype(np.float32))  # numpy RNG
            loss = nn.functional.cross_entropy(model(xb.to(device)), yb.to(device))  # dropout: torch RNG
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if ckpt is not None:
            save_checkpoint(ckpt, model, opt, sched, epoch + 1, config)  # epoch + 1 epochs are done
    return loss.item()


def max_abs_diff(a: nn.Module, b: nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))


def run_config(args, n: int) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint: plain values, stored in it."""
    return {"examples": n, "seed": args.seed, "lr": args.lr}


def resume_variant(args, n, device, ckpt, save_to=None, **load_flags):
    """A fresh process after the crash: different RNG state, fresh objects, then the checkpoint."""
    seed_everything(args.seed + 12345)  # whatever state the new process starts in
    loader, model, opt, sched = build(args.seed, n, args.lr, device)
    done = load_checkpoint(ckpt, model, opt, sched, run_config(args, n), **load_flags)
    train_epochs(loader, model, opt, sched, done, args.epochs, device, save_to, run_config(args, n))
    return model, done


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    n = 256 if args.smoke else 2048
    config = run_config(args, n)
    ckpt = args.checkpoint or args.out_dir / "checkpoint.pt"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"device {device}; checkpoint {ckpt}")

    if args.resume:
        section(f"Resuming from {ckpt}")
        loader, model, opt, sched = build(args.seed, n, args.lr, device)
        try:
            done = load_checkpoint(ckpt, model, opt, sched, config)
        except CheckpointError as err:
            raise SystemExit(f"cannot resume: {err}") from None
        if done >= args.epochs:
            print(f"nothing to do: checkpoint already at epoch {done} (--epochs {args.epochs}); pass a larger --epochs "
                  "to train further. The checkpoint is unchanged.")
            metrics = {"resumed_from_epoch": done, "final_epoch": done, "epochs_trained": 0}
        else:
            print(f"checkpoint holds {done} finished epochs, lr now {opt.param_groups[0]['lr']:.4f}; "
                  f"training epochs {done + 1}..{args.epochs} (counting from 1)")
            loss = train_epochs(loader, model, opt, sched, done, args.epochs, device, ckpt, config)
            print(f"last batch loss {loss:.4f}; checkpoint updated to epoch {args.epochs}")
            metrics = {"resumed_from_epoch": done, "final_epoch": args.epochs, "epochs_trained": args.epochs - done,
                       "final_batch_loss": loss}
    else:
        k = min(args.stop_after or args.epochs // 2, args.epochs - 1)
        section(f"Run A: {args.epochs} epochs, never interrupted")
        seed_everything(args.seed)
        loader, model_a, opt, sched = build(args.seed, n, args.lr, device)
        loss_a = train_epochs(loader, model_a, opt, sched, 0, args.epochs, device)
        print(f"last batch loss {loss_a:.4f}")

        section(f"Run B: the same, checkpointed every epoch, 'crashes' after epoch {k}")
        seed_everything(args.seed)
        loader, model_b, opt, sched = build(args.seed, n, args.lr, device)
        train_epochs(loader, model_b, opt, sched, 0, k, device, ckpt, config)
        keys = torch.load(ckpt, map_location="cpu", weights_only=True).keys()
        print(f"{ckpt.name}: {ckpt.stat().st_size / 1024:.1f} KiB, keys {sorted(keys)}; no *.tmp left behind: "
              f"{not list(ckpt.parent.glob('*.tmp'))}")
        del model_b, opt, sched, loader  # the process is gone
        kept = ckpt.with_name(f"checkpoint_epoch{k}.pt")
        shutil.copyfile(ckpt, kept)  # keep this one for the experiments below; the resumed run overwrites ckpt

        section("Run B resumed in a 'new process' (fresh objects, another RNG state), loaded with weights_only=True")
        model_r, done = resume_variant(args, n, device, ckpt, save_to=ckpt)
        diff = max_abs_diff(model_a, model_r)
        print(f"resumed at epoch {done}, finished epoch {args.epochs}: max abs diff to run A = {diff:.3g}"
              f"{'  (bit-identical)' if diff == 0 else ''}")
        if device.type != "cpu" and diff != 0:
            print("  (not zero: on a GPU some kernels, e.g. atomic-add reductions, are not bitwise deterministic; "
                  "torch.use_deterministic_algorithms(True) picks ones that are)")

        section("What each piece of the checkpoint is for")
        no_rng = max_abs_diff(model_a, resume_variant(args, n, device, kept, restore_rng_state=False)[0])
        no_opt = max_abs_diff(model_a, resume_variant(args, n, device, kept, restore_optimizer=False)[0])
        print(f"resume without the RNG states:       max abs diff {no_rng:.3g} "
              "(other dropout masks, batch order, noise)")
        print(f"resume without the optimizer state:  max abs diff {no_opt:.3g} (momentum restarts from zero)")
        kept.unlink()

        section("A missing, a corrupt and a mismatched checkpoint")
        messages = {}
        bad = args.out_dir / "corrupt_example.pt"
        bad.write_bytes(b"this is not a checkpoint" * 10)
        other = dict(config, examples=2048 if args.smoke else 256)  # a full run resuming a --smoke one, or back
        for label, path, cfg in (("missing", args.out_dir / "no_such_checkpoint.pt", config), ("corrupt", bad, config),
                                 ("mismatched", ckpt, other)):
            try:
                load_checkpoint(path, *build(args.seed, n, args.lr, device)[1:], cfg)
            except CheckpointError as err:
                messages[label] = str(err)
                print(f"{label}: {err}")
        bad.unlink()
        metrics = {
            "epochs": args.epochs, "interrupted_after": k, "resumed_from_epoch": done,
            "resume_max_abs_diff": diff, "resume_bit_identical": diff == 0,
            "no_rng_resume_max_abs_diff": no_rng, "no_optimizer_resume_max_abs_diff": no_opt,
            "missing_checkpoint_clear_message": "no checkpoint at" in messages.get("missing", ""),
            "corrupt_checkpoint_clear_message": "corrupt" in messages.get("corrupt", ""),
            "mismatched_checkpoint_refused": "examples=" in messages.get("mismatched", ""),
            "final_batch_loss": loss_a,
        }
        same = (" --smoke" if args.smoke else "") + (f" --seed {args.seed}" if args.seed else "") + (
            f" --lr {args.lr}" if args.lr != 0.05 else "")  # the run config the checkpoint will be checked against
        print(f"\nthe demo left a finished {args.epochs}-epoch checkpoint; continue it with: python "
              f"05-training-optimization/05_checkpointing.py --resume --epochs {2 * args.epochs}{same}"
              + (f" --out-dir {args.out_dir}" if args.checkpoint is None else f" --checkpoint {ckpt}"))

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- model + optimizer + scheduler + epoch + RNG states: leave one out and the resumed run drifts.")
    print("- torch.save to a temp file, then os.replace: a crash while saving never destroys the last good one.")
    print("- weights_only=True refuses arbitrary pickles: store RNG states as tensors and plain numbers.")
    print("- Catch load errors and say what to do; 'Unsupported operand 103' helps nobody.")
    print("- Store the run's configuration too: resuming with other data or another lr must be refused, not silent.")
    return metrics


if __name__ == "__main__":
    main()

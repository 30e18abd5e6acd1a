"""Building custom models: composing nn.Modules the way real architectures are written.

Sections:
1. Data: scikit-learn's load_digits (1,797 real 8x8 handwritten digits), split train / validation / test.
2. Building blocks: a squeeze-excitation (SE) gate and a residual block that uses it; the model holds its blocks in
   an nn.ModuleList and its task heads in an nn.ModuleDict, so every parameter is registered and moves with .to().
3. Parameters vs buffers: normalisation statistics as a persistent buffer (saved in the state_dict), an exit
   counter as a non-persistent buffer (moves with the model, never saved), what each one is for.
4. Custom initialisation with Module.apply, and zero-initialised residual branches: every block starts as the
   identity (measured).
5. Hooks: a forward pre-hook that rejects badly shaped input with a clear message, forward hooks that record each
   block's activations, removed through their handles.
6. Training (deep supervision: an early head after the first block and a final head), then input-dependent
   control flow: at inference each sample leaves after block 1 when the early head is confident, so easy digits
   cost less than hard ones.
7. Weight tying in a tiny character language model: one Parameter used twice, counted once, gradient = the sum of
   both uses (measured against an untied copy).
8. Partial loading: the trained digit network into a deeper even/odd model with load_state_dict(strict=False),
   the missing/unexpected key report, and the size mismatch strict=False does not forgive.
9. torch.compile on the model: compile time, agreement with eager, measured speedup.

Run it:
    python 09-custom-models/01_custom_architectures.py
    python 09-custom-models/01_custom_architectures.py --compile-backend aot_eager --epochs 4

Takes about 30 seconds on a 2-core CPU the first time (most of it the inductor C++ compile of section 9; the compiled
kernels are cached, so a second run is faster); --smoke takes a few seconds (it compiles with backend="aot_eager",
which traces the model but generates no code). What to look for: "max |block(x) - x| = 0" after the custom init,
test accuracy near 98%, how many digits leave early (and that noisy digits go deeper), the parameter counts with
and without tying, the exact missing/unexpected keys, and the compile time and speedup.
"""

import argparse
import importlib.util
import json
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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
                        help="where the models live; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true",
                        help="narrow model, three epochs, compile with aot_eager: a few seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/09-custom-models/01_custom_architectures"),
                        help="where metrics.json and the trained state_dict are written")
    parser.add_argument("--epochs", type=int, default=8, help="passes over the training digits")
    parser.add_argument("--batch-size", type=int, default=64, help="digits per optimizer step")
    parser.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate")
    parser.add_argument("--width", type=int, default=32, help="channels of every residual block")
    parser.add_argument("--depth", type=int, default=3, help="residual blocks (the early exit sits after the first)")
    parser.add_argument("--exit-threshold", type=float, default=None,
                        help="a sample leaves after block 1 when the early head's top probability reaches this "
                             "(default: 0.95, or 0.5 with --smoke: a 3-epoch net is less sure)")
    parser.add_argument("--compile-backend", default=None, choices=["inductor", "aot_eager", "eager", "none"],
                        help="torch.compile backend for section 9 (default: inductor, or aot_eager with --smoke); "
                             "inductor on a CPU needs a C++ compiler")
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
    if args.epochs < 1 or args.lr <= 0 or args.width < 4:
        parser.error("need --epochs >= 1, --lr > 0 and --width >= 4")
    if not 1 <= args.batch_size <= 1000:
        parser.error("--batch-size must be between 1 and 1000 (the training split holds about 1,080 digits)")
    if args.depth < 2:
        parser.error("--depth must be at least 2: the early exit needs a block after it")
    if args.exit_threshold is not None and not 0 < args.exit_threshold <= 1:
        parser.error("--exit-threshold must be in (0, 1]")
    if args.exit_threshold is None:  # a value given on the command line is used as given, --smoke or not
        args.exit_threshold = 0.5 if args.smoke else 0.95
    args.compile_backend_given = args.compile_backend is not None
    if args.compile_backend is None:
        args.compile_backend = "aot_eager" if args.smoke else "inductor"
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


def load_digit_splits(seed: int) -> dict:
    """(N, 1, 8, 8) float pixels in [0, 1] and (N,) labels, shuffled with the seed: 60% train, 20% val, 20% test."""
    images, y = real_digits()
    x = images.unsqueeze(1) / 16.0  # pixel values are 0..16
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {name: (x[idx], y[idx]) for name, idx in parts.items()}


# ---------------------------------------------------------------------------------------------- building blocks
class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al., 2018): average each channel over the image, a bottleneck MLP, a sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)  # 1x1 convs = linear layers on (B, C, 1, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):  # (B, C, H, W)
        s = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): what is in the image, not where
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))  # each channel scaled by a gate in (0, 1)


class ResidualSEBlock(nn.Module):
    """out = relu(x + SE(BN(conv(relu(BN(conv(x))))))): the skip path lets gradients reach early layers."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)  # BN's shift makes a bias redundant
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = SqueezeExcite(channels)

    def forward(self, x):  # (B, C, H, W) -> same shape
        branch = F.relu(self.bn1(self.conv1(x)))
        branch = self.se(self.bn2(self.conv2(branch)))
        return F.relu(x + branch)


class DigitNet(nn.Module):
    """stem -> ModuleList of residual SE blocks -> ModuleDict of heads ("early" after block 1, and one per task)."""

    def __init__(self, width: int, depth: int, task: str = "digit", num_classes: int = 10,
                 pixel_mean: float = 0.0, pixel_std: float = 1.0):
        super().__init__()
        self.task = task
        # buffers: tensors that belong to the model's state but are not trained
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean))  # persistent: saved, needed at inference
        self.register_buffer("pixel_std", torch.tensor(pixel_std))
        self.register_buffer("exit_counts", torch.zeros(2, dtype=torch.long), persistent=False)  # runtime tally
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        # a plain Python list would hide these modules: no parameters(), no .to(device), no state_dict entries
        self.blocks = nn.ModuleList(ResidualSEBlock(width) for _ in range(depth))
        # heads read (B, W, 2, 2) pooled features: coarse "where" as well as "what"
        self.heads = nn.ModuleDict({"early": nn.Linear(4 * width, num_classes),
                                    task: nn.Linear(4 * width, num_classes)})

    def forward(self, x, exit_threshold: float | None = None):
        """x: (B, 1, 8, 8) pixels in [0, 1]. Without a threshold: {"early": (B, K), task: (B, K)} logits.
        With one: (B, K) logits, each sample from the early head if it is confident enough, else from the end."""
        h = self.stem((x - self.pixel_mean) / self.pixel_std)  # (B, W, 8, 8)
        h = self.blocks[0](h)
        early = self.heads["early"](pool(h))  # (B, K)
        if exit_threshold is None:
            for block in self.blocks[1:]:
                h = block(h)
            return {"early": early, self.task: self.heads[self.task](pool(h))}
        # input-dependent control flow: which samples go deeper is decided by the data, at run time
        confident = early.softmax(dim=-1).amax(dim=-1) >= exit_threshold  # (B,) bool
        logits = early.clone()
        if not confident.all():  # a Python `if` on a tensor value: natural in eager mode, a graph break to compile
            g = h[~confident]  # (B_hard, W, 8, 8): a data-dependent shape
            for block in self.blocks[1:]:
                g = block(g)
            logits[~confident] = self.heads[self.task](pool(g))
        self.exit_counts += torch.stack([confident.sum(), (~confident).sum()])
        return logits


def pool(h):  # (B, W, 8, 8) -> (B, 4W): average over each quarter of the image
    return F.adaptive_avg_pool2d(h, 2).flatten(1)


def init_weights(module: nn.Module) -> None:
    """Called by model.apply on every submodule (children first, then the parent)."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")  # keeps ReLU activations' scale
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.01)  # small logits at the start: predictions near uniform
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def initialise(model: "DigitNet") -> "DigitNet":
    """The custom scheme of section 4: init_weights everywhere, then each residual branch zeroed (identity)."""
    model.apply(init_weights)
    for block in model.blocks:
        nn.init.zeros_(block.bn2.weight)  # the branch outputs 0, so the block starts as the identity
    return model


def input_check_pre_hook(module: nn.Module, args: tuple):
    """A forward pre-hook sees the inputs before forward does; it may return replacements (None keeps them)."""
    x = args[0]
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"{type(module).__name__} expects images of shape (B, 1, 8, 8), got {tuple(x.shape)}; "
                         "reshape flat 64-pixel rows with x.view(-1, 1, 8, 8)")
    return None


def evaluate(model: nn.Module, x, y, device, batch_size: int = 512) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            out = model(x[i:i + batch_size].to(device))
            correct += (out[model.task].argmax(1).cpu() == y[i:i + batch_size]).sum().item()
    return correct / len(y)


def train(model, x, y, x_val, y_val, epochs, batch_size, lr, device, seed, label: str) -> float:
    """AdamW with a cosine schedule and deep supervision: loss = CE(task head) + 0.5 CE(early head).
    Returns the last validation accuracy."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * math.ceil(len(y) / batch_size))
    generator = torch.Generator().manual_seed(seed)
    val_acc = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            out = model(xb)
            loss = F.cross_entropy(out[model.task], yb) + 0.5 * F.cross_entropy(out["early"], yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
        val_acc = evaluate(model, x_val, y_val, device)
        print(f"  {label} epoch {epoch + 1}: train loss {total / len(y):.4f}, val accuracy {val_acc:.2%}")
    return val_acc


# ------------------------------------------------------------------------------------------------- weight tying
class TinyCharLM(nn.Module):
    """Next-character model: embedding -> tanh(linear) -> output projection back to the vocabulary."""

    def __init__(self, vocab: int, dim: int, tie: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)  # weight (vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)  # weight (vocab, dim): the same shape as the embedding
        if tie:
            self.out.weight = self.embed.weight  # one Parameter object, used at the input and at the output

    def forward(self, tokens):  # (B, T) ints -> (B, T, vocab) logits
        return self.out(torch.tanh(self.mix(self.embed(tokens))))


def tying_demo(device) -> dict:
    text = " ".join((__doc__ or "").split())  # this file's own docstring as a tiny corpus
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text], device=device)
    inputs, targets = ids[:-1].view(1, -1), ids[1:].view(1, -1)  # (1, T): predict the next character
    tied = TinyCharLM(len(vocab), 32, tie=True).to(device)
    untied = TinyCharLM(len(vocab), 32, tie=False).to(device)
    untied.load_state_dict(tied.state_dict())  # same values; out.weight now a separate copy of embed.weight
    n_tied = sum(p.numel() for p in tied.parameters())  # parameters() yields each Parameter once
    n_untied = sum(p.numel() for p in untied.parameters())
    n_state_dict = sum(t.numel() for t in tied.state_dict().values())  # the state_dict lists both names
    print(f"vocabulary {len(vocab)} characters, dim 32: out.weight is embed.weight -> "
          f"{tied.out.weight is tied.embed.weight}")
    print(f"parameters: tied {n_tied:,}, untied {n_untied:,} (difference {n_untied - n_tied:,} = vocab x dim); "
          f"the tied state_dict still has {len(tied.state_dict())} entries, {n_state_dict:,} numbers if you "
          "(wrongly) count by state_dict")
    for model in (tied, untied):
        F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()).backward()
    summed = untied.embed.weight.grad + untied.out.weight.grad  # the two uses' gradients, kept apart
    diff = (tied.embed.weight.grad - summed).abs().max().item()
    print(f"gradient of the shared weight vs embed.grad + out.grad of the untied copy: max abs diff {diff:.2e}")
    return {"tied_params": n_tied, "untied_params": n_untied, "tied_state_dict_numel": n_state_dict,
            "tied_is_same_object": int(tied.out.weight is tied.embed.weight),
            "tied_grad_vs_sum_max_abs_diff": diff, "tying_vocab": len(vocab), "tying_dim": 32}


# ----------------------------------------------------------------------------------------------- partial loading
def save_atomic(state: dict, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: never a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def transfer_load(new_model: nn.Module, state: dict) -> dict:
    """Load what fits from `state` into `new_model`: drop entries whose shape differs (strict=False does not
    forgive those), load the rest with strict=False, and return the report."""
    own = new_model.state_dict()
    shape_mismatch = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    kept = {k: v for k, v in state.items() if k not in shape_mismatch}
    result = new_model.load_state_dict(kept, strict=False)  # a named tuple: missing_keys, unexpected_keys
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
            "shape_mismatch": shape_mismatch}


def exit_verdict(clean_frac: float, noisy_frac: float, only_clean: int, only_noisy: int, n: int,
                 threshold: float) -> str:
    """How often noisy digits leave early vs clean ones, and whether this run shows harder inputs going deeper.
    only_clean / only_noisy: digits that leave early without the noise but not with it, and the reverse. If noise
    made no difference, each of those digits would fall either way as often: the gap between the two counts must
    be at least twice its standard deviation (a sign test), sqrt(only_clean + only_noisy), to count as a result."""
    counts = f"{round(noisy_frac * n)} of {n} vs {round(clean_frac * n)} of {n}"
    if clean_frac == 0 and noisy_frac == 0:
        return (f"no test digit leaves early, clean or noisy: the early head never reaches {threshold:g} in this "
                "run, so it shows nothing about harder inputs (train longer, or lower --exit-threshold)")
    gap = only_clean - only_noisy
    if gap > 0 and gap >= 2 * math.sqrt(only_clean + only_noisy):
        return (f"noisy digits leave early {noisy_frac:.0%} of the time vs {clean_frac:.0%}, less often: harder "
                "inputs get more computation")
    split = f"({only_clean} leave early only when clean, {only_noisy} only when noisy)"
    if gap < 0 and -gap >= 2 * math.sqrt(only_clean + only_noisy):
        return (f"noisy digits leave early {counts} clean {split}: more often, so in this run the noise made the "
                "early head surer, and harder inputs did not get more computation")
    return (f"noisy digits leave early {counts} clean {split}: too close to say that harder inputs get more "
            "computation in this run")


def compile_report(backend: str, given: bool, n: int, repeats: int, eager_ms: float, compile_s=None, diff=None,
                   compiled_ms=None) -> list[str]:
    """Section 9's lines: figures only for a compile that happened, and where to look for inductor's speed."""
    if backend == "none":
        return [f"--compile-backend none: nothing compiled; eager inference on {n} digits {eager_ms:.2f} ms "
                f"(median of {repeats})"]
    lines = [f"first call (compile) {compile_s:.2f} s; compiled vs eager max abs diff {diff:.2e}",
             f"inference on {n} digits: eager {eager_ms:.2f} ms, compiled {compiled_ms:.2f} ms (median of "
             f"{repeats}) -> {eager_ms / compiled_ms:.2f}x"]
    if backend in ("aot_eager", "eager"):
        how = ("--compile-backend inductor measures that" if given
               else "run without --smoke, or with --compile-backend inductor, for that")
        lines.append(f"backend {backend!r} runs the captured graph with eager kernels: it checks that the model "
                     f"compiles, not how fast inductor's code would be ({how})")
    return lines


def median_time_ms(fn, device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    width, depth = (16, 2) if args.smoke else (args.width, args.depth)
    epochs = min(args.epochs, 3) if args.smoke else args.epochs
    threshold = args.exit_threshold
    metrics = {}

    section("1. Data: real handwritten digits")
    data = load_digit_splits(args.seed)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data["train"], data["val"], data["test"]
    print(f"load_digits: train {tuple(x_train.shape)}, val {len(y_val)}, test {len(y_test)} "
          f"(8x8 grey images, 10 classes, chance 10%)")

    section("2. Building blocks: SE gate, residual block, ModuleList, ModuleDict")
    model = DigitNet(width, depth, pixel_mean=x_train.mean().item(), pixel_std=x_train.std().item()).to(device)
    print(model.blocks[0])
    print(f"{len(model.blocks)} blocks in a ModuleList, heads in a ModuleDict: {list(model.heads.keys())}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params:,} parameters in {len(list(model.parameters()))} tensors")

    section("3. Parameters vs buffers")
    buffers = dict(model.named_buffers())
    state_keys = set(model.state_dict())
    for name in ("pixel_mean", "pixel_std", "exit_counts", "stem.1.running_mean", "stem.1.num_batches_tracked"):
        print(f"  buffer {name:28s} on {buffers[name].device.type}, requires_grad {buffers[name].requires_grad}, "
              f"in state_dict: {name in state_keys}")
    print(f"{len(buffers)} buffers; {len(state_keys)} state_dict entries = {len(list(model.parameters()))} "
          f"parameters + {len(buffers) - 1} persistent buffers (exit_counts is persistent=False)")
    metrics.update({"params": n_params, "buffers": len(buffers), "state_dict_entries": len(state_keys),
                    "pixel_mean_in_state_dict": int("pixel_mean" in state_keys),
                    "exit_counts_in_state_dict": int("exit_counts" in state_keys)})

    section("4. Custom initialisation with apply")
    visited = []
    model.apply(lambda m: visited.append(type(m).__name__))
    initialise(model)  # model.apply(init_weights), then the last BN of each block zeroed
    model.eval()
    with torch.no_grad():
        h = model.stem((x_train[:256].to(device) - model.pixel_mean) / model.pixel_std)  # (256, W, 8, 8), >= 0
        identity_diff = max((block(h) - h).abs().max().item() for block in model.blocks)
    print(f"apply visited {len(visited)} modules (children before parents; last: {visited[-1]})")
    print(f"zero-initialised last BN in each block: max |block(x) - x| = {identity_diff:.1e} at initialisation")
    metrics.update({"apply_modules_visited": len(visited), "init_identity_max_abs_diff": identity_diff})

    section("5. Hooks: check the input before forward, record activations after each block")
    pre_handle = model.register_forward_pre_hook(input_check_pre_hook)
    try:
        model(x_train[:4].view(4, 64).to(device))
        rejected = False
    except ValueError as err:
        rejected = True
        print(f"pre-hook rejected a flat batch: {err}")
    records = {}

    def make_hook(name):
        def hook(module, args, output):  # runs after module.forward; returning None keeps the output
            records.setdefault(name, []).append(
                (tuple(output.shape), output.mean().item(), (output == 0).float().mean().item()))
        return hook

    handles = [block.register_forward_hook(make_hook(f"blocks.{i}")) for i, block in enumerate(model.blocks)]
    with torch.no_grad():
        model(x_train[:256].to(device))
    for name, [(shape, mean, zeros)] in records.items():
        print(f"  {name}: output {shape}, mean {mean:.3f}, {zeros:.0%} zeros after the ReLU")
    for handle in [pre_handle, *handles]:
        handle.remove()
    with torch.no_grad():
        model(x_train[:4].to(device))
    calls_after_remove = sum(len(v) for v in records.values()) - len(model.blocks)
    print(f"after handle.remove(): {calls_after_remove} more hook calls")
    metrics.update({"pre_hook_rejected_bad_shape": int(rejected), "hook_calls_after_remove": calls_after_remove})

    section("6. Training, then input-dependent control flow (early exit)")
    val_acc = train(model, x_train, y_train, x_val, y_val, epochs, args.batch_size, args.lr, device, args.seed,
                    "digits")
    test_acc = evaluate(model, x_test, y_test, device)
    model.eval()
    with torch.no_grad():
        early_acc = (model(x_test.to(device))["early"].argmax(1).cpu() == y_test).float().mean().item()
        exits, leaves = {}, {}
        noise = 0.25 * torch.randn(x_test.shape, generator=torch.Generator().manual_seed(args.seed))
        for label, x in (("clean", x_test), ("noisy", (x_test + noise).clamp(0, 1))):
            model.exit_counts.zero_()
            adaptive = model(x.to(device), exit_threshold=threshold)
            acc = (adaptive.argmax(1).cpu() == y_test).float().mean().item()
            exits[label] = (model.exit_counts[0].item() / len(y_test), acc)
            # which digits left early: the forward's own rule, applied to the early head's output
            leaves[label] = model(x.to(device))["early"].softmax(-1).amax(-1).cpu() >= threshold
    blocks_saved = exits["clean"][0] * (depth - 1) / depth
    print(f"test accuracy: final head {test_acc:.2%}, early head {early_acc:.2%} (val {val_acc:.2%})")
    for label, (frac, acc) in exits.items():
        print(f"  {label} test digits: {frac:.0%} leave after block 1 (threshold {threshold:g}), "
              f"accuracy with early exit {acc:.2%}")
    only_clean = int((leaves["clean"] & ~leaves["noisy"]).sum())  # digits that leave early only without noise
    only_noisy = int((leaves["noisy"] & ~leaves["clean"]).sum())
    print(f"clean digits skip {blocks_saved:.0%} of the residual blocks' work; "
          + exit_verdict(exits["clean"][0], exits["noisy"][0], only_clean, only_noisy, len(y_test), threshold))
    metrics.update({"val_acc": val_acc, "test_acc": test_acc, "early_head_test_acc": early_acc,
                    "early_exit_fraction": exits["clean"][0], "early_exit_test_acc": exits["clean"][1],
                    "noisy_early_exit_fraction": exits["noisy"][0]})

    section("7. Weight tying: one Parameter, two uses")
    metrics.update(tying_demo(device))

    section("8. Partial loading into a different architecture (strict=False)")
    ckpt = args.out_dir / "digitnet.pt"
    save_atomic(model.state_dict(), ckpt)
    state = torch.load(ckpt, map_location=device, weights_only=True)
    # one block more (identity at init, so it does not disturb the loaded features) and a 2-way task
    parity = initialise(DigitNet(width, depth + 1, task="parity", num_classes=2)).to(device)
    try:
        parity.load_state_dict(state, strict=False)
        size_error = ""
    except RuntimeError as err:
        size_error = str(err).strip().splitlines()[1].strip()
    print(f"strict=False still refuses a shape change: {size_error}")
    report = transfer_load(parity, state)
    print(f"dropped for shape: {report['shape_mismatch']}")
    print(f"missing (left at their init): {report['missing']}")
    print(f"unexpected (ignored): {report['unexpected']}")
    y_parity = {name: y % 2 for name, y in (("train", y_train), ("val", y_val), ("test", y_test))}
    scratch = initialise(DigitNet(width, depth + 1, task="parity", num_classes=2)).to(device)
    scratch.load_state_dict({k: v for k, v in state.items() if k in ("pixel_mean", "pixel_std")}, strict=False)
    for net, label in ((parity, "transferred"), (scratch, "from scratch")):
        train(net, x_train, y_parity["train"], x_val, y_parity["val"], 1, args.batch_size, args.lr, device,
              args.seed, f"even/odd, {label},")
    parity_acc = evaluate(parity, x_test, y_parity["test"], device)
    scratch_acc = evaluate(scratch, x_test, y_parity["test"], device)
    print(f"even/odd test accuracy after one epoch: transferred {parity_acc:.2%}, from scratch {scratch_acc:.2%}")
    metrics.update({"partial_missing_keys": len(report["missing"]),
                    "partial_unexpected_keys": len(report["unexpected"]),
                    "partial_shape_mismatch_keys": len(report["shape_mismatch"]),
                    "strict_false_size_mismatch_raised": int(bool(size_error)),
                    "parity_transfer_test_acc": parity_acc, "parity_scratch_test_acc": scratch_acc})

    section(f"9. torch.compile (backend={args.compile_backend!r})")
    model.eval()
    x_big = x_test.repeat(4, 1, 1, 1)[:1024].to(device)  # (~1024, 1, 8, 8): one inference batch
    repeats = 5 if args.smoke else 20
    with torch.no_grad():
        eager_out = model(x_big)[model.task]
        eager_ms = median_time_ms(lambda: model(x_big), device, repeats)
        if args.compile_backend != "none":
            compiled = torch.compile(model, backend=args.compile_backend)
            synchronize(device)
            t0 = time.perf_counter()
            compiled_out = compiled(x_big)[model.task]  # the first call traces (and, for inductor, generates code)
            synchronize(device)
            compile_s = time.perf_counter() - t0
            diff = (compiled_out - eager_out).abs().max().item()
            compiled(x_big)  # one warm call after compiling
            compiled_ms = median_time_ms(lambda: compiled(x_big), device, repeats)
    backend_code = {"none": 0, "eager": 1, "aot_eager": 2, "inductor": 3}[args.compile_backend]
    metrics.update({"compile_backend_code": backend_code, "eager_infer_ms": eager_ms})
    if args.compile_backend != "none":
        metrics.update({"compiled_max_abs_diff": diff, "compile_s": compile_s, "compiled_infer_ms": compiled_ms,
                        "compile_speedup": eager_ms / compiled_ms})
    else:  # nothing was compiled: no compile time, agreement or speedup to report
        compile_s = diff = compiled_ms = None
    for line in compile_report(args.compile_backend, args.compile_backend_given, len(x_big), repeats, eager_ms,
                               compile_s, diff, compiled_ms):
        print(line)

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}; trained state_dict at {ckpt}")

    section("What to notice")
    print("- Submodules go in attributes, nn.ModuleList or nn.ModuleDict; a Python list hides them from the model.")
    print("- Buffers are state without gradients; persistent=False keeps run-time bookkeeping out of checkpoints.")
    print("- apply(fn) visits every submodule; zero-init of the last BN makes a deep residual net start shallow.")
    print("- Tied weights are one Parameter: counted once, their gradient is the sum over both uses.")
    print("- strict=False reports missing/unexpected keys and loads the rest; it never forgives a shape change.")
    print("- Data-dependent Python control flow is free in eager mode; torch.compile wants static paths.")
    return metrics


if __name__ == "__main__":
    main()

"""The GRU: two gates instead of three, and a head-to-head of RNN, LSTM and GRU on the same task and budget.

Sections:
1. One GRU cell by hand, PyTorch's way: r and z gates, then the candidate
       n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),   h' = (1 - z) * n + z * h,
   where the reset gate multiplies the RESULT of the matrix product W_hn h. The original paper (Cho et al. 2014)
   resets h BEFORE the product: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn). Both are written out and compared
   with nn.GRU (weights copied, 1 and 2 layers, one and both directions, batch_first on and off): only the first
   matches. PyTorch follows cuDNN, whose formula lets W_hh h be one matmul for all three blocks.
2. Parameter counts of nn.RNN, nn.GRU and nn.LSTM at the same sizes, from the formula gates * (H*I + H*H + 2H)
   per layer and direction, checked against the modules.
3. One table: the three trained on the same task (recall the first of --length symbols, lesson 02), same hidden
   size, same epochs, same data: test accuracy, parameters, time per epoch; their validation accuracy by epoch in
   comparison.png.

Run it:
    python 07-rnn-sequences/03_gru.py
    python 07-rnn-sequences/03_gru.py --length 60 --epochs 15

Takes about ten seconds of CPU time (more on a busy laptop). What to look for: the PyTorch-style cell matching nn.GRU
to ~1e-7 while the paper's variant is off by ~0.1; GRU with 3/4 of the LSTM's parameters; both gated models near
100% in the table and the RNN below them (at this gap it sometimes gets there, sometimes not: lesson 02 lengthens
the gap until it cannot); the GRU's time per epoch on a CPU, higher than the LSTM's despite fewer parameters.
"""

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

SYMBOLS = 4  # alphabet of the memory task; chance accuracy 1/4
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}  # weight blocks per layer: the only difference in size
SMOKE_TRAIN_SIZE = 1600  # --smoke caps --train-size here


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


def write_metrics(out_dir: Path, record: dict) -> Path:
    """metrics.json written atomically: a temporary file renamed over the old one, never half-written."""
    path = out_dir / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)
    return path


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where the models train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="a shorter gap, less data, fewer epochs: seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/07-rnn-sequences/03_gru"),
                        help="where metrics.json and comparison.png are written")
    parser.add_argument("--length", type=int, default=30, help="distractor steps after the symbol to recall")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training set, for each model")
    parser.add_argument("--train-size", type=int, default=3200, help="training sequences")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per step")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size of all three models")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--gate-bias", type=float, default=3.0,
                        help="initial bias of the 'keep' gate: the LSTM's forget gate and the GRU's update gate z")
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
    if min(args.length, args.epochs, args.hidden, args.batch_size) < 1 or args.lr <= 0:
        parser.error("need --length, --epochs, --hidden, --batch-size >= 1 and --lr > 0")
    train_size = min(args.train_size, SMOKE_TRAIN_SIZE) if args.smoke else args.train_size
    if train_size < args.batch_size:
        parser.error(f"--batch-size {args.batch_size} is larger than the {train_size} training sequences"
                     f"{' of a --smoke run' if args.smoke else ''}: no full batch, no training step")
    return args


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, paper: bool = False):
    """One GRU step. x (B, I), h (B, H), w_ih (3H, I), w_hh (3H, H), biases (3H,); blocks in order r, z, n.

    paper=False: PyTorch/cuDNN, reset applied to (W_hn h + b_hn). paper=True: Cho et al. 2014, reset applied to h.
    """
    w_hr, w_hz, w_hn = w_hh.chunk(3, dim=0)
    b_hr, b_hz, b_hn = b_hh.chunk(3)
    xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=1)  # (B, H) each: the input's share of every block
    r = torch.sigmoid(xr + h @ w_hr.T + b_hr)  # reset gate: how much of the past the candidate may see
    z = torch.sigmoid(xz + h @ w_hz.T + b_hz)  # update gate: how much of h to keep
    if paper:
        n = torch.tanh(xn + (r * h) @ w_hn.T + b_hn)  # reset BEFORE the product
    else:
        n = torch.tanh(xn + r * (h @ w_hn.T + b_hn))  # reset AFTER the product (and after the bias b_hn)
    return (1 - z) * n + z * h


def gru_by_hand(gru: nn.GRU, x: torch.Tensor, paper: bool = False):
    """nn.GRU's forward pass from gru_cell and the module's own weights -> (output, h_n), shaped like nn.GRU's."""
    seq = x.transpose(0, 1) if gru.batch_first else x  # (T, B, I)
    steps, batch = seq.shape[0], seq.shape[1]
    dirs = 2 if gru.bidirectional else 1
    finals, layer_in = [], seq
    for layer in range(gru.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
            w = [getattr(gru, f"{name}{sfx}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = seq.new_zeros(batch, gru.hidden_size)
            states = [None] * steps
            for t in (range(steps) if d == 0 else range(steps - 1, -1, -1)):
                h = gru_cell(layer_in[t], h, *w, paper=paper)
                states[t] = h
            outs.append(torch.stack(states))  # (T, B, H)
            finals.append(h)
        layer_in = torch.cat(outs, dim=2)  # (T, B, D*H)
    output = layer_in.transpose(0, 1) if gru.batch_first else layer_in
    return output, torch.stack(finals)


def memory_data(n: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences of length+1 random symbols (n, length+1) as one-hot floats; label: the first symbol."""
    tokens = torch.randint(SYMBOLS, (n, length + 1), generator=generator)
    return F.one_hot(tokens, SYMBOLS).float(), tokens[:, 0]


class Recaller(nn.Module):
    def __init__(self, kind: str, hidden: int, gate_bias: float):
        super().__init__()
        self.rnn = getattr(nn, kind)(SYMBOLS, hidden, batch_first=True)
        self.head = nn.Linear(hidden, SYMBOLS)
        keep = {"LSTM": 1, "GRU": 1}.get(kind)  # forget gate is block 1 of i,f,g,o; update gate z block 1 of r,z,n
        if keep is not None:
            with torch.no_grad():
                self.rnn.bias_ih_l0[keep * hidden:(keep + 1) * hidden] = gate_bias  # start by keeping the memory
                self.rnn.bias_hh_l0[keep * hidden:(keep + 1) * hidden] = 0.0

    def forward(self, x):  # (B, T, SYMBOLS) -> (B, SYMBOLS)
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def accuracy(model, x, y, device) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x.to(device)).argmax(1).cpu() == y).float().mean().item()


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tol = 1e-5 if device.type == "cpu" else 1e-4  # why: see 01_rnn_basics.py (cuDNN's fused kernels round differently)

    section("1. A GRU cell by hand: PyTorch's reset gate vs the paper's")
    n_in, hid = 5, 8
    worst_torch, worst_paper, configs = 0.0, float("inf"), 0
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # cuDNN RNNs use TF32 by default on Ampere+: 1e-3 errors, not rounding
    try:
        for layers in (1, 2):
            for bidir in (False, True):
                for batch_first in (False, True):
                    gru = nn.GRU(n_in, hid, num_layers=layers, bidirectional=bidir, batch_first=batch_first).to(device)
                    x = torch.randn(3, 6, n_in, device=device)  # (B, T, I)
                    x = x if batch_first else x.transpose(0, 1).contiguous()  # (T, B, I)
                    with torch.no_grad():
                        out_ref, h_ref = gru(x)
                        diffs = []
                        for paper in (False, True):
                            out, h_n = gru_by_hand(gru, x, paper=paper)
                            diffs.append(max((out - out_ref).abs().max().item(), (h_n - h_ref).abs().max().item()))
                    worst_torch, worst_paper = max(worst_torch, diffs[0]), min(worst_paper, diffs[1])
                    configs += 1
                    print(f"  layers={layers} bidirectional={bidir!s:5} batch_first={batch_first!s:5}: max abs diff "
                          f"to nn.GRU: reset after the product {diffs[0]:.1e}, reset before (paper) {diffs[1]:.1e}")
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    print(f"{configs} layouts: nn.GRU = reset AFTER W_hn h (worst {worst_torch:.1e}, tolerance {tol:g}); the paper's "
          f"reset-before variant is never closer than {worst_paper:.2f}")
    print("Both are valid GRUs, but weights trained with one are not interchangeable with the other (Keras calls "
          "PyTorch's form reset_after=True).")

    section("2. Parameters at the same size")
    counts, mismatches = {}, 0
    for n_in_, hid_, layers, bidir in ((SYMBOLS, args.hidden, 1, False), (128, 128, 1, False), (128, 128, 2, True)):
        row = []
        for kind, gates in GATES.items():
            module = getattr(nn, kind)(n_in_, hid_, num_layers=layers, bidirectional=bidir)
            actual = sum(p.numel() for p in module.parameters())
            dirs = 2 if bidir else 1
            formula = sum(dirs * gates * (hid_ * (n_in_ if layer == 0 else dirs * hid_) + hid_ * hid_ + 2 * hid_)
                          for layer in range(layers))
            mismatches += int(actual != formula)
            row.append(f"{kind} {actual:,}")
            counts[(n_in_, hid_, layers, bidir, kind)] = actual
        print(f"  input {n_in_}, hidden {hid_}, {layers} layer(s){', bidirectional' if bidir else ''}: "
              + ", ".join(row))
    print(f"formula gates * (H*I + H*H + 2H) per layer and direction (2H: PyTorch keeps both b_ih and b_hh): "
          f"{mismatches} mismatches; ratios RNN : GRU : LSTM = 1 : 3 : 4")

    length = min(args.length, 20) if args.smoke else args.length
    section(f"3. RNN vs GRU vs LSTM on the same task and budget (gap {length})")
    train_size = min(args.train_size, SMOKE_TRAIN_SIZE) if args.smoke else args.train_size
    epochs = min(args.epochs, 4) if args.smoke else args.epochs
    g = torch.Generator().manual_seed(args.seed)
    x_train, y_train = memory_data(train_size, length, g)
    x_val, y_val = memory_data(1000, length, g)
    x_test, y_test = memory_data(1000, length, g)
    print(f"{train_size} training sequences of {length + 1} symbols, 1000 validation, 1000 test; {epochs} epochs, "
          f"batch {args.batch_size}, hidden {args.hidden}, Adam lr {args.lr}; keep-gate bias {args.gate_bias:g}")
    results = {}
    for kind in GATES:
        torch.manual_seed(args.seed)
        model = Recaller(kind, args.hidden, args.gate_bias).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        order = torch.Generator().manual_seed(args.seed)  # the same batches in the same order for all three
        epoch_times, val_accs = [], []
        for _ in range(epochs):
            model.train()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            perm = torch.randperm(train_size, generator=order)
            for i in range(0, train_size - args.batch_size + 1, args.batch_size):
                idx = perm[i:i + args.batch_size]
                loss = F.cross_entropy(model(x_train[idx].to(device)), y_train[idx].to(device))
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()  # GPU work is asynchronous: wait before reading the clock
            epoch_times.append(time.perf_counter() - t0)
            val_accs.append(accuracy(model, x_val, y_val, device))
        results[kind] = {"params": sum(p.numel() for p in model.parameters()), "val": val_accs,
                         "test": accuracy(model, x_test, y_test, device),
                         "epoch_ms": 1000 * float(np.mean(epoch_times))}
        print(f"  {kind:4}: validation accuracy by epoch {' '.join(f'{a:.2f}' for a in val_accs)}")
    print(f"\n  {'model':6}{'test acc':>10}{'params':>10}{'ms/epoch':>10}")
    for kind, r in results.items():
        print(f"  {kind:6}{r['test']:>10.1%}{r['params']:>10,}{r['epoch_ms']:>10.0f}")
    print(f"  chance: {1 / SYMBOLS:.0%}. Time per epoch depends on the kernels as much as on the parameter count "
          f"(measured on {device.type}; on a busy CPU it varies from run to run).")

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    for kind, r in results.items():
        ax.plot(range(1, epochs + 1), r["val"], marker="o", label=f"{kind} (test {r['test']:.0%})")
    ax.axhline(1 / SYMBOLS, color="gray", linestyle="--", label=f"chance ({1 / SYMBOLS:.0%})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Recall the first of {length + 1} symbols: RNN vs GRU vs LSTM, hidden {args.hidden}")
    ax.legend()
    fig.tight_layout()
    plot = args.out_dir / "comparison.png"
    fig.savefig(plot, dpi=100)
    print(f"plot: {plot}")

    metrics = {
        "gru_layouts_checked": configs, "gru_by_hand_max_abs_diff": worst_torch,
        "gru_paper_variant_min_abs_diff": worst_paper, "param_formula_mismatches": mismatches,
        "rnn_params_128": counts[(128, 128, 1, False, "RNN")], "gru_params_128": counts[(128, 128, 1, False, "GRU")],
        "lstm_params_128": counts[(128, 128, 1, False, "LSTM")], "memory_length": length, "epochs": epochs,
        "chance_acc": 1 / SYMBOLS,
    }
    for kind, r in results.items():
        key = kind.lower()
        metrics.update({f"{key}_test_acc": r["test"], f"{key}_best_val_acc": max(r["val"]),
                        f"{key}_params": r["params"], f"{key}_epoch_ms": r["epoch_ms"]})
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    print(f"\nmetrics written to {write_metrics(args.out_dir, record)}")

    section("What to notice")
    print("- A GRU merges the LSTM's forget and input gates into one update gate z and drops the separate cell state.")
    print("- Where the reset gate sits is a real difference: nn.GRU resets W_hn h, the 2014 paper resets h.")
    print(f"- Same hidden size: GRU has 3/4 of the LSTM's parameters; on this task both reached "
          f"{results['GRU']['test']:.0%} and {results['LSTM']['test']:.0%}, the RNN {results['RNN']['test']:.0%}.")
    return metrics


if __name__ == "__main__":
    main()

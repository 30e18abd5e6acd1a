"""A recurrent network from scratch: the Elman cell, unrolling, padding and packing, backpropagation through time.

Sections:
1. One RNN cell by hand, h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), unrolled over a short sequence,
   with the hidden state's shape printed at every step.
2. The same computation for every layout nn.RNN supports (1 or 2 layers, one or both directions, batch_first on or
   off), with nn.RNN's own weights copied into the hand-written version: outputs and final states agree to float32
   rounding.
3. Padded batches: pack_padded_sequence makes nn.RNN stop at each sequence's true length, so its final states equal
   those of each sequence run alone; without packing, the padding leaks into the final state.
4. Backpropagation through time: the gradient of a loss at the last step with respect to the hidden state at step t,
   plotted against t. Small recurrent weights with tanh make it vanish, large ones with ReLU make it explode, and
   torch.nn.utils.clip_grad_norm_ bounds the update that results.

Run it:
    python 07-rnn-sequences/01_rnn_basics.py
    python 07-rnn-sequences/01_rnn_basics.py --steps 200 --hidden 64

Takes a few seconds on a laptop CPU. What to look for: max abs differences around 1e-7 between the hand-written RNN
and nn.RNN, a packed-vs-alone difference of the same size (and a large one without packing), the gradient norm
falling or growing by orders of magnitude over the steps in bptt_gradients.png, and the clipped norm equal to
--max-norm.
"""

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from matplotlib.figure import Figure
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

MAX_STEPS = 500  # float64 holds the BPTT gradients up to here (about 0.5^500 and 2^500 times the last step's)


def section(title: str) -> None:
    print(f"\n== {title} ==")


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. The one place a lesson decides where tensors live."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def float64_device(device: torch.device) -> torch.device:
    """Where the float64 gradient experiment runs: MPS has no float64, so on a Mac it runs on the CPU."""
    return torch.device("cpu") if device.type == "mps" else device


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
                        help="where the tensors live; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="shorter sequences and a smaller hidden state")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/07-rnn-sequences/01_rnn_basics"),
                        help="where metrics.json and bptt_gradients.png are written")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size of every RNN in the lesson")
    parser.add_argument("--steps", type=int, default=100,
                        help=f"sequence length of the BPTT experiment (at most {MAX_STEPS})")
    parser.add_argument("--max-norm", type=float, default=1.0, help="clip_grad_norm_ threshold")
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
    if args.hidden < 1 or args.steps < 2 or args.max_norm <= 0:
        parser.error("need --hidden >= 1, --steps >= 2 and --max-norm > 0")
    if args.max_norm < 1e-6:  # the clipped float32 gradient's squares would underflow: its norm would read 0
        parser.error(f"--max-norm {args.max_norm:g}: at least 1e-6 (practical thresholds are around 0.1 to 10)")
    if args.steps > MAX_STEPS:
        parser.error(f"--steps {args.steps}: at most {MAX_STEPS}; longer, the vanishing gradient underflows to 0 "
                     "and the exploding one overflows to inf even in float64, and their ratio means nothing")
    return args


def rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity=torch.tanh):
    """One Elman step. x (B, I), h (B, H), w_ih (H, I), w_hh (H, H), biases (H,) -> new h (B, H)."""
    return nonlinearity(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def rnn_by_hand(rnn: nn.RNN, x: torch.Tensor, h0: torch.Tensor | None = None):
    """nn.RNN's forward pass written out with rnn_cell, reading the module's own parameters.

    x is (B, T, I) if rnn.batch_first else (T, B, I). Returns (output, h_n) shaped exactly like nn.RNN's:
    output (…, T, D*H) holds the last layer's states (forward and backward concatenated), h_n (L*D, B, H).
    """
    seq = x.transpose(0, 1) if rnn.batch_first else x  # (T, B, I): time first makes the loop simple
    steps, batch = seq.shape[0], seq.shape[1]
    dirs, hid = (2 if rnn.bidirectional else 1), rnn.hidden_size
    act = torch.tanh if rnn.nonlinearity == "tanh" else torch.relu
    finals = []
    layer_in = seq
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
            w = [getattr(rnn, f"{name}{sfx}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = seq.new_zeros(batch, hid) if h0 is None else h0[layer * dirs + d]
            order = range(steps) if d == 0 else range(steps - 1, -1, -1)  # the backward direction reads right to left
            states = [None] * steps
            for t in order:
                h = rnn_cell(layer_in[t], h, *w, nonlinearity=act)  # (B, H)
                states[t] = h
            outs.append(torch.stack(states))  # (T, B, H), in time order for both directions
            finals.append(h)
        layer_in = torch.cat(outs, dim=2)  # (T, B, D*H): the next layer reads both directions
    output = layer_in.transpose(0, 1) if rnn.batch_first else layer_in
    return output, torch.stack(finals)  # h_n: (L*D, B, H), layer-major, forward before backward


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    hidden = min(args.hidden, 16) if args.smoke else args.hidden
    steps = min(args.steps, 40) if args.smoke else args.steps
    # float32 rounding: on the CPU both sides do the same sums in nearly the same order (~1e-7 apart). cuDNN fuses
    # the whole recurrence into its own kernels with another summation order, so a GPU agrees to ~1e-6-1e-5 (TF32,
    # which cuDNN would otherwise use for RNNs on Ampere and later, is switched off for the comparison below).
    tol = 1e-5 if device.type == "cpu" else 1e-4

    section("1. One cell, unrolled by hand")
    batch, length, n_in = 3, 4, 5
    cell = nn.RNNCell(n_in, hidden).to(device)  # holds W_ih (H, I), W_hh (H, H), b_ih, b_hh
    x = torch.randn(batch, length, n_in, device=device)  # (B, T, I)
    h = torch.zeros(batch, hidden, device=device)  # (B, H): the memory starts empty
    print(f"x {tuple(x.shape)} (batch, time, features); W_ih {tuple(cell.weight_ih.shape)}, "
          f"W_hh {tuple(cell.weight_hh.shape)}")
    cell_diff = 0.0
    for t in range(length):
        h_new = rnn_cell(x[:, t], h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        cell_diff = max(cell_diff, (h_new - cell(x[:, t], h)).abs().max().item())
        h = h_new
        print(f"  step {t}: x_t {tuple(x[:, t].shape)} + h_{t - 1 if t else '-1'} {tuple(h.shape)} -> h_{t} "
              f"{tuple(h_new.shape)}, |h| mean {h_new.abs().mean().item():.3f}")
    print(f"the same weights, the same h at every step: by hand vs nn.RNNCell, max abs diff {cell_diff:.2e}")

    section("2. By hand = nn.RNN, every layout")
    configs, worst, worst_h = 0, 0.0, 0.0
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # cuDNN RNNs use TF32 by default on Ampere+: 1e-3 errors, not rounding
    try:
        for layers in (1, 2):
            for bidir in (False, True):
                for batch_first in (False, True):
                    rnn = nn.RNN(n_in, hidden, num_layers=layers, bidirectional=bidir,
                                 batch_first=batch_first).to(device)
                    xb = torch.randn(batch, 7, n_in, device=device)  # (B, T, I)
                    xb = xb if batch_first else xb.transpose(0, 1).contiguous()  # (T, B, I) when time comes first
                    with torch.no_grad():
                        out_ref, h_ref = rnn(xb)
                        out, h_n = rnn_by_hand(rnn, xb)
                    d_out, d_h = (out - out_ref).abs().max().item(), (h_n - h_ref).abs().max().item()
                    worst, worst_h = max(worst, d_out), max(worst_h, d_h)
                    configs += 1
                    print(f"  layers={layers} bidirectional={bidir!s:5} batch_first={batch_first!s:5}: output "
                          f"{tuple(out.shape)} h_n {tuple(h_n.shape)}; max abs diff output {d_out:.1e}, h_n {d_h:.1e}")
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    agree = max(worst, worst_h) < tol
    print(f"{configs} layouts: worst difference {max(worst, worst_h):.2e} "
          f"({'within' if agree else 'OUTSIDE'} the float32 tolerance {tol:g} on {device.type})")
    print("h_n is (num_layers * num_directions, B, H) whatever batch_first says; output follows batch_first.")

    section("3. Padding and packing")
    lengths = torch.tensor([6, 4, 2, 1])
    seqs = [torch.randn(int(n), n_in, device=device) for n in lengths]  # different lengths: (T_i, I)
    padded = pad_sequence(seqs, batch_first=True)  # (B, T_max, I), zeros after each sequence ends
    rnn = nn.RNN(n_in, hidden, num_layers=2, bidirectional=True, batch_first=True).to(device)
    torch.backends.cudnn.allow_tf32 = False  # as above: compare float32 with float32
    try:
        with torch.no_grad():
            packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)  # CPU lengths
            out_packed, h_packed = rnn(packed)
            out_pad, out_lengths = pad_packed_sequence(out_packed, batch_first=True)  # (B, T_max, 2H), 0 after end
            _, h_unpacked = rnn(padded)  # padding runs through the RNN as if it were data
            alone = torch.cat([rnn(s[None])[1] for s in seqs], dim=1)  # (L*D, B, H): each sequence by itself
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    packed_diff = (h_packed - alone).abs().max().item()
    unpacked_diff = (h_unpacked - alone).abs().max().item()
    pad_out_max = max(out_pad[i, int(n):].abs().max().item() if n < lengths.max() else 0.0
                      for i, n in enumerate(lengths))
    print(f"lengths {lengths.tolist()}, padded batch {tuple(padded.shape)}; packed data {tuple(packed.data.shape)} "
          f"with batch_sizes {packed.batch_sizes.tolist()} (sequences still running at each step)")
    print(f"final states, packed vs each sequence alone: max abs diff {packed_diff:.2e}")
    print(f"final states, padded but NOT packed vs alone: max abs diff {unpacked_diff:.3f} (the zeros were read "
          f"as input; the backward direction even starts on them)")
    print(f"pad_packed_sequence gives lengths {out_lengths.tolist()} and zeros after each end (max {pad_out_max:.1f})")

    section("4. Backpropagation through time")
    g = torch.Generator().manual_seed(args.seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, hidden, generator=g))  # orthogonal: every singular value is 1
    regimes = {"vanishing (tanh, W_hh = 0.5 Q)": (0.5 * q, torch.tanh),
               "edge (tanh, W_hh = 1.0 Q)": (1.0 * q, torch.tanh),
               "exploding (ReLU, W_hh = 2.0 Q)": (2.0 * q, torch.relu)}
    # float64 here: over 100+ steps the vanishing gradient falls below float32's smallest normal number (1e-38)
    dev64 = float64_device(device)
    if dev64 != device:
        print(f"{device.type} has no float64: this gradient experiment runs on the CPU (the clipping demo stays on "
              f"{device.type})")
    xs = 0.1 * torch.randn(steps, 1, hidden, generator=g, dtype=torch.float64).to(dev64)  # (T, B=1, H)
    norms = {}
    for name, (w_hh, act) in regimes.items():
        w_hh = w_hh.to(dev64, torch.float64).requires_grad_()  # a leaf needing grad: autograd records the chain
        eye = torch.eye(hidden, device=dev64, dtype=torch.float64)
        zero = torch.zeros(hidden, device=dev64, dtype=torch.float64)
        h = torch.full((1, hidden), 0.1, device=dev64, dtype=torch.float64)
        states = []
        for t in range(steps):
            h = rnn_cell(xs[t], h, eye, w_hh, zero, zero, nonlinearity=act)
            h.retain_grad()  # keep dL/dh_t, which autograd would otherwise free
            states.append(h)
        loss = h.sum()  # a loss that reads only the last step
        loss.backward()
        norms[name] = [s.grad.norm().item() for s in states]  # ||dL/dh_t|| for t = 0 .. T-1
        print(f"  {name}: ||dL/dh_t|| at t=T-1 {norms[name][-1]:.2e}, at t=0 {norms[name][0]:.2e} "
              f"(ratio {norms[name][0] / norms[name][-1]:.1e} over {steps} steps)")
    vanish_ratio = norms["vanishing (tanh, W_hh = 0.5 Q)"][0] / norms["vanishing (tanh, W_hh = 0.5 Q)"][-1]
    explode_ratio = norms["exploding (ReLU, W_hh = 2.0 Q)"][0] / norms["exploding (ReLU, W_hh = 2.0 Q)"][-1]
    print("each step multiplies the gradient by W_hh^T diag(act'): norms below 1 shrink it geometrically, above 1 "
          "grow it")

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    for name, values in norms.items():
        ax.semilogy(range(steps), values, label=name)
    ax.set_xlabel("time step t (the loss reads step T-1)")
    ax.set_ylabel("||dL / dh_t|| (log scale)")
    ax.set_title(f"Gradient reaching each step of a {steps}-step RNN")
    ax.legend()
    fig.tight_layout()
    plot = args.out_dir / "bptt_gradients.png"
    fig.savefig(plot, dpi=100)
    print(f"plot: {plot}")

    # clipping: a gradient step through the exploding RNN, bounded before the optimizer sees it
    rnn = nn.RNN(hidden, hidden, nonlinearity="relu", batch_first=True).to(device)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(2.0 * q.to(device))
    clip_steps = min(steps, 30)  # long enough to explode, short enough to stay finite in float32 (usually)
    while True:
        rnn.zero_grad(set_to_none=True)
        out, _ = rnn(xs[:clip_steps].float().to(device).transpose(0, 1).repeat(4, 1, 1))  # (4, T, H)
        out[:, -1].pow(2).mean().backward()
        total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in rnn.parameters()])).item()
        if math.isfinite(total) or clip_steps == 1:
            break
        print(f"over {clip_steps} steps the float32 gradient norm overflowed to inf (clip_grad_norm_ would scale "
              f"every gradient by max_norm / inf = 0): trying {clip_steps // 2} steps")
        clip_steps //= 2
    if not math.isfinite(total):
        sys.exit(f"the clipping demo's gradient norm is {total} even over one step: try a smaller --hidden")
    norm_before = nn.utils.clip_grad_norm_(rnn.parameters(), max_norm=args.max_norm).item()  # returns the old norm
    norm_after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in rnn.parameters()])).item()
    clipped = norm_before > args.max_norm
    print(f"exploding nn.RNN over {clip_steps} steps, clip_grad_norm_(max_norm={args.max_norm}): total gradient "
          f"norm {norm_before:.3e} -> {norm_after:.4f}")
    if clipped:
        print(f"scaled down {norm_before / norm_after:.1e} times: the direction is kept, only the length is scaled "
              "(call it between backward() and step()); a gradient that already overflowed to inf cannot be "
              "rescued: keep sequences or weights where it stays finite")
    else:
        print(f"the norm was already at most max_norm={args.max_norm:g}: clip_grad_norm_ left the gradient as it was")

    metrics = {
        "rnncell_by_hand_max_abs_diff": cell_diff, "layouts_checked": configs,
        "rnn_by_hand_output_max_abs_diff": worst, "rnn_by_hand_h_n_max_abs_diff": worst_h,
        "by_hand_within_tolerance": int(agree), "packed_vs_alone_max_abs_diff": packed_diff,
        "unpacked_vs_alone_max_abs_diff": unpacked_diff, "packed_output_padding_max_abs": pad_out_max,
        "bptt_steps": steps, "vanishing_grad_ratio_first_over_last": vanish_ratio,
        "exploding_grad_ratio_first_over_last": explode_ratio, "grad_norm_before_clip": norm_before,
        "grad_norm_after_clip": norm_after, "max_norm": args.max_norm,
    }
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    print(f"\nmetrics written to {write_metrics(args.out_dir, record)}")

    section("What to notice")
    print("- An RNN is one cell applied at every step with the same weights; h carries everything seen so far.")
    print("- Packing is how nn.RNN learns where each sequence ends; without it, padding is read as data.")
    vanished, exploded = vanish_ratio < 1e-3, explode_ratio > 1e3
    if vanished and exploded:
        print(f"- Over {steps} steps the gradient was multiplied by {vanish_ratio:.0e} or by {explode_ratio:.0e}: "
              "plain RNNs cannot learn long-range links; LSTMs and GRUs (next lessons) fix the vanishing part.")
    else:
        print(f"- Over {steps} steps the gradient was multiplied by {vanish_ratio:.0e} (tanh, 0.5 Q: "
              f"{'vanished' if vanished else 'too few steps to vanish'}) and by {explode_ratio:.0e} (ReLU, 2.0 Q: "
              f"{'exploded' if exploded else 'did not explode in this run'}).")
    if clipped:
        print(f"- Clipping fixes the exploding part: a gradient of norm {norm_before:.1e} became one of norm "
              f"{norm_after:.2g}, same direction.")
    else:
        print(f"- Clipping had nothing to do here: the gradient's norm {norm_before:.1e} was within "
              f"--max-norm {args.max_norm:g}; it only scales gradients longer than that.")
    return metrics


if __name__ == "__main__":
    main()

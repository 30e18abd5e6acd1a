"""The LSTM: gates, a cell state that carries gradients across long gaps, and a task a plain RNN cannot learn.

Sections:
1. One LSTM cell by hand in PyTorch's gate order (input i, forget f, candidate g, output o):
   c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t), compared with nn.LSTM (weights copied, 1 and 2 layers, one and
   both directions, batch_first on and off): outputs, h_n and c_n agree to float32 rounding.
2. The cell state as a gradient highway: the gradient of a loss at the last of 120 steps with respect to the input
   at every earlier step, for a plain RNN and for LSTMs whose forget-gate bias starts at PyTorch's default (0, so
   f is about 0.5) and at --forget-bias (f close to 1). Measured, printed and plotted.
3. A long-memory task: read a sequence of random symbols (the first one marked) and, at the end, name the FIRST one
   (after --length distractors drawn from the same symbols). A plain RNN stays near chance; an LSTM with an open
   forget gate solves it with the same hidden size and the same number of steps.
4. The trained LSTM's gates plotted over one sequence: what it learned to write, keep and read.

Run it:
    python 07-rnn-sequences/02_lstm.py
    python 07-rnn-sequences/02_lstm.py --length 100 --steps 1500     # longer gap: harder for both
    python 07-rnn-sequences/02_lstm.py --forget-bias 0                 # PyTorch's default init: watch it stall
    python 07-rnn-sequences/02_lstm.py --keep-denormals                # the RNN trains several times slower on CPU

Takes about 10 seconds on an idle 2-core CPU. What to look for: by-hand vs nn.LSTM differences around 1e-7; the
gradient 120 steps back shrinking by many orders of magnitude for the RNN and barely for the LSTM; RNN accuracy near
the 25% of chance and LSTM accuracy near 100%; gradient_flow.png and gates.png under the out dir.
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

SYMBOLS = 4  # alphabet size of the memory task: chance accuracy is 1/4


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
                        help="where the models train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="a 20-step gap and 100 training steps: seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/07-rnn-sequences/02_lstm"),
                        help="where metrics.json, gradient_flow.png and gates.png are written")
    parser.add_argument("--length", type=int, default=60, help="distractor steps between the symbol and the question")
    parser.add_argument("--steps", type=int, default=500, help="training steps (batches) for each model")
    parser.add_argument("--batch-size", type=int, default=128, help="sequences per training step")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size of both the RNN and the LSTM")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--forget-bias", type=float, default=5.0,
                        help="initial forget-gate bias of the trained LSTM (0 is PyTorch's default)")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="train without torch.set_flush_denormal(True): same numbers, much slower RNN on a CPU")
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
    if args.length < 1 or args.steps < 1 or args.batch_size < 1 or args.hidden < 1 or args.lr <= 0:
        parser.error("need --length, --steps, --batch-size, --hidden >= 1 and --lr > 0")
    return args


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One LSTM step. x (B, I), h and c (B, H), w_ih (4H, I), w_hh (4H, H), biases (4H,).

    Returns (h, c, gates) with gates = (i, f, g, o), each (B, H): PyTorch stacks the four blocks in this order.
    """
    z = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (B, 4H): all four pre-activations in one matmul
    zi, zf, zg, zo = z.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)
    c = f * c + i * g  # keep a fraction f of the old memory, write i of the candidate g
    h = o * torch.tanh(c)  # expose a fraction o of the squashed memory
    return h, c, (i, f, g, o)


def lstm_by_hand(lstm: nn.LSTM, x: torch.Tensor):
    """nn.LSTM's forward pass from lstm_cell and the module's own weights -> (output, (h_n, c_n), gates per step).

    x is (B, T, I) if lstm.batch_first else (T, B, I); gates is the list of (i, f, g, o) of the first layer's forward
    direction, one tuple per step.
    """
    seq = x.transpose(0, 1) if lstm.batch_first else x  # (T, B, I)
    steps, batch, hid = seq.shape[0], seq.shape[1], lstm.hidden_size
    dirs = 2 if lstm.bidirectional else 1
    h_fin, c_fin, first_gates = [], [], []
    layer_in = seq
    for layer in range(lstm.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
            w = [getattr(lstm, f"{name}{sfx}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = c = seq.new_zeros(batch, hid)
            states = [None] * steps
            for t in (range(steps) if d == 0 else range(steps - 1, -1, -1)):
                h, c, gates = lstm_cell(layer_in[t], h, c, *w)
                states[t] = h
                if layer == 0 and d == 0:
                    first_gates.append(gates)
            outs.append(torch.stack(states))  # (T, B, H)
            h_fin.append(h)
            c_fin.append(c)
        layer_in = torch.cat(outs, dim=2)  # (T, B, D*H)
    output = layer_in.transpose(0, 1) if lstm.batch_first else layer_in
    return output, (torch.stack(h_fin), torch.stack(c_fin)), first_gates


def set_forget_bias(lstm: nn.LSTM, value: float) -> None:
    """Forget gate = the second quarter of each bias; b_ih + b_hh is what counts, so put it all in b_ih."""
    hid = lstm.hidden_size
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("bias_"):
                p[hid:2 * hid] = value if name.startswith("bias_ih") else 0.0


def memory_batch(n: int, length: int, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences of length+1 random symbols as (n, length+1, SYMBOLS + 1): one-hot symbol plus a marker channel
    that is 1 on the first step only ("remember this one"); the label is the first symbol."""
    tokens = torch.randint(SYMBOLS, (n, length + 1), generator=generator)
    marker = torch.zeros(n, length + 1, 1)
    marker[:, 0] = 1.0
    x = torch.cat([F.one_hot(tokens, SYMBOLS).float(), marker], dim=2)
    return x.to(device), tokens[:, 0].to(device)


class Recaller(nn.Module):
    """A recurrent layer (nn.RNN or nn.LSTM) and a linear head reading its last hidden state."""

    def __init__(self, kind: str, hidden: int):
        super().__init__()
        self.rnn = getattr(nn, kind)(SYMBOLS + 1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, SYMBOLS)

    def forward(self, x):  # x (B, T, SYMBOLS + 1)
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out[:, -1])  # (B, SYMBOLS): only the end of the sequence answers


def train_recaller(kind, args, length, steps, device, forget_bias=None):
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)  # same data stream for every model
    model = Recaller(kind, args.hidden).to(device)
    if forget_bias is not None:
        set_forget_bias(model.rnn, forget_bias)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses = []
    for _ in range(steps):
        x, y = memory_batch(args.batch_size, length, g, device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # lesson 01: bounds the occasional exploding step
        opt.step()
        losses.append(loss.item())
    x, y = memory_batch(2000, length, torch.Generator().manual_seed(args.seed + 999), device)  # held out
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    return model, acc, float(np.mean(losses[-20:]))


def input_gradient_norms(model: nn.Module, steps: int, hidden: int, device, g) -> tuple[list[float], tuple]:
    """||dL/dx_t|| for t = 0..steps-1 where L reads only the last output: how much step t can still teach.

    Also returns the model's final state (h_n for an RNN, (h_n, c_n) for an LSTM)."""
    # float64: 120 steps back the RNN's gradient is below float32's smallest normal number and would print as 0
    x = torch.randn(1, steps, hidden, generator=g, dtype=torch.float64).to(device).requires_grad_()
    out, state = model(x)  # (1, T, H)
    out[0, -1].sum().backward()
    return x.grad[0].norm(dim=1).tolist(), state


OPEN = 1e-3  # a gradient 120 steps back at least this fraction of the last step's: the highway carried it


def highway_notes(rnn_flow: float, lstm0_flow: float, lstm_flow: float, forget_bias: float,
                  cell_slope: float) -> list[str]:
    """The two 'What to notice' lines on the gradient highway, read from this run's ratios.

    cell_slope: the largest tanh'(c) over the LSTM's units at the last step; every gradient through c passes it.
    """
    said = f"- 120 steps back the RNN's gradient was multiplied by {rnn_flow:.0e}, the LSTM's by {lstm_flow:.0e}"
    if lstm_flow >= OPEN and lstm_flow > 1e3 * rnn_flow:
        return [f"{said}: that is the highway.",
                f"- The forget-gate bias decides whether the highway is open at the start: with PyTorch's default 0 "
                f"the factor was {lstm0_flow:.0e}. Initialising it to 1 or more is standard practice."]
    f = 1 / (1 + np.exp(-forget_bias))
    kept = f ** 119
    first = f"{said} (forget bias {forget_bias:g}): it vanished too, so this run shows no highway."
    if kept < OPEN:
        default = "" if forget_bias == 0 else f" With PyTorch's default 0 the factor was {lstm0_flow:.0e}."
        return [first, f"- The forget-gate bias decides whether the highway is open at the start: a bias of "
                       f"{forget_bias:g} alone gives f = sigmoid({forget_bias:g}) = {f:.2f}, and {f:.2f}^119 = "
                       f"{kept:.0e}; the default --forget-bias 5 (f = 0.993) keeps it open.{default}"]
    if cell_slope < OPEN:
        return [first, f"- The forget gate was open (bias {forget_bias:g}: sigmoid = {f:.3f}, {f:.3f}^119 = "
                       f"{kept:.2f}), but c summed its inputs over 120 steps until tanh(c) saturated in every unit: "
                       f"tanh'(c) at the last step was at most {cell_slope:.0e}, and every gradient through c passes "
                       "it on its way to the output."]
    return [first, f"- The forget gate was open (bias {forget_bias:g}: sigmoid = {f:.3f}, {f:.3f}^119 = {kept:.2f}), "
                   "yet the gradient vanished on its way through the other gates."]


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    length = min(args.length, 20) if args.smoke else args.length
    steps = min(args.steps, 100) if args.smoke else args.steps
    if args.smoke:
        args.batch_size = min(args.batch_size, 64)
    tol = 1e-5 if device.type == "cpu" else 1e-4  # why: see 01_rnn_basics.py (cuDNN's fused kernels round differently)

    section("1. An LSTM cell by hand = nn.LSTM")
    n_in, hid = 5, 8
    worst, configs = 0.0, 0
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # cuDNN RNNs use TF32 by default on Ampere+: 1e-3 errors, not rounding
    try:
        for layers in (1, 2):
            for bidir in (False, True):
                for batch_first in (False, True):
                    lstm = nn.LSTM(n_in, hid, num_layers=layers, bidirectional=bidir,
                                   batch_first=batch_first).to(device)
                    x = torch.randn(3, 6, n_in, device=device)  # (B, T, I)
                    x = x if batch_first else x.transpose(0, 1).contiguous()  # (T, B, I)
                    with torch.no_grad():
                        out_ref, (h_ref, c_ref) = lstm(x)
                        out, (h_n, c_n), _ = lstm_by_hand(lstm, x)
                    diff = max((a - b).abs().max().item() for a, b in ((out, out_ref), (h_n, h_ref), (c_n, c_ref)))
                    worst = max(worst, diff)
                    configs += 1
                    print(f"  layers={layers} bidirectional={bidir!s:5} batch_first={batch_first!s:5}: output "
                          f"{tuple(out.shape)}, h_n and c_n {tuple(h_n.shape)}; max abs diff {diff:.1e}")
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    print(f"weight_ih_l0 is {tuple(lstm.weight_ih_l0.shape)} = (4*hidden, input): blocks i, f, g, o stacked")
    print(f"{configs} layouts, worst difference {worst:.2e} (tolerance {tol:g} on {device.type})")

    section("2. The cell state as a gradient highway")
    T = 120
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    models = {"RNN (tanh)": nn.RNN(args.hidden, args.hidden, batch_first=True),
              "LSTM, forget bias 0 (default)": nn.LSTM(args.hidden, args.hidden, batch_first=True),
              f"LSTM, forget bias {args.forget_bias:g}": nn.LSTM(args.hidden, args.hidden, batch_first=True)}
    set_forget_bias(models[f"LSTM, forget bias {args.forget_bias:g}"], args.forget_bias)
    dev64 = float64_device(device)
    if dev64 != device:
        print(f"{device.type} has no float64: this gradient experiment runs on the CPU (training stays on "
              f"{device.type})")
    flows, states = {}, {}
    for name, model in models.items():
        flows[name], states[name] = input_gradient_norms(model.to(dev64, torch.float64), T, args.hidden, dev64, g)
        print(f"  {name:32}: ||dL/dx_t|| at the last step {flows[name][-1]:.2e}, {T - 1} steps back "
              f"{flows[name][0]:.2e} (ratio {flows[name][0] / flows[name][-1]:.1e})")
    rnn_flow = flows["RNN (tanh)"][0] / flows["RNN (tanh)"][-1]
    lstm0_flow = flows["LSTM, forget bias 0 (default)"][0] / flows["LSTM, forget bias 0 (default)"][-1]
    open_flow = flows[f"LSTM, forget bias {args.forget_bias:g}"]
    lstm_flow = open_flow[0] / open_flow[-1]
    cell_last = states[f"LSTM, forget bias {args.forget_bias:g}"][1]  # c_n (1, 1, H) of the --forget-bias LSTM
    cell_slope = (1 - torch.tanh(cell_last) ** 2).max().item()
    if args.forget_bias == 0:  # the same setting twice: say why the two rows still differ
        print(f"  both LSTM rows start with a forget bias of 0 (PyTorch's init draws it around 0, --forget-bias 0 "
              f"sets it exactly); they differ because each draws its own random weights and input, and both "
              f"vanish ({lstm0_flow:.1e} and {lstm_flow:.1e})")
    print("dc_t/dc_{t-1} = f_t (plus small terms through h): with f near 1 the product over 120 steps stays near 1; "
          "the RNN's path multiplies by W_hh^T diag(tanh') at every step")
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    for name, values in flows.items():
        ax.semilogy(range(T), values, label=name)
    ax.set_xlabel("input step t (the loss reads the last step)")
    ax.set_ylabel("||dL / dx_t|| (log scale)")
    ax.set_title(f"Gradient flowing back over {T} steps, untrained models")
    ax.legend()
    fig.tight_layout()
    flow_png = args.out_dir / "gradient_flow.png"
    fig.savefig(flow_png, dpi=100)
    print(f"plot: {flow_png}")

    section(f"3. Recall the first of {length + 1} symbols")
    print(f"{SYMBOLS} symbols, chance {1 / SYMBOLS:.0%}; {steps} steps of {args.batch_size} sequences, hidden "
          f"{args.hidden}, Adam lr {args.lr}, gradient clipping at 1")
    # A vanishing gradient is a CPU slowdown too: once values fall below float32's smallest normal number (~1e-38)
    # they become "subnormal", and x86 CPUs compute with those many times slower. Flushing them to zero changes no
    # result that matters here (they are 1e-38 of nothing) and makes the RNN train several times faster.
    # --keep-denormals shows the difference; GPUs handle subnormals at full speed, so this is a CPU setting.
    flushing = not args.keep_denormals and device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        t0 = time.perf_counter()
        _, rnn_acc, rnn_loss = train_recaller("RNN", args, length, steps, device)
        rnn_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        lstm, lstm_acc, lstm_loss = train_recaller("LSTM", args, length, steps, device, forget_bias=args.forget_bias)
        lstm_s = time.perf_counter() - t0
    finally:
        if flushing:
            torch.set_flush_denormal(False)  # a process-wide setting: give it back
    print(f"subnormal floats {'flushed to zero (torch.set_flush_denormal)' if flushing else 'kept'} while training")
    print(f"  RNN : held-out accuracy {rnn_acc:.1%}, final training loss {rnn_loss:.3f} "
          f"(chance loss ln 4 = {np.log(SYMBOLS):.3f}); {rnn_s:.1f} s")
    print(f"  LSTM: held-out accuracy {lstm_acc:.1%}, final training loss {lstm_loss:.3f}; {lstm_s:.1f} s "
          f"(forget bias {args.forget_bias:g})")

    section("4. What the trained LSTM's gates do")
    x, y = memory_batch(1, length, torch.Generator().manual_seed(args.seed + 5), device)
    with torch.no_grad():
        _, _, gates = lstm_by_hand(lstm.rnn, x)  # the first (only) layer, one sequence
    i_gate = torch.stack([gt[0][0] for gt in gates]).cpu()  # (T, H)
    f_gate = torch.stack([gt[1][0] for gt in gates]).cpu()
    o_gate = torch.stack([gt[3][0] for gt in gates]).cpu()
    input_first, input_later = i_gate[0].mean().item(), i_gate[1:].mean().item()
    forget_mean = f_gate[1:].mean().item()
    print(f"input gate: mean {input_first:.2f} at the first symbol, {input_later:.2f} afterwards; forget gate mean "
          f"{forget_mean:.3f} (product over the gap {f_gate[1:].prod(0).max().item():.2f} for the best-kept unit)")
    fig = Figure(figsize=(10, 7))
    panels = (("input gate i", i_gate), ("forget gate f", f_gate), ("output gate o", o_gate))
    for k, (name, values) in enumerate(panels):
        ax = fig.add_subplot(3, 1, k + 1)
        im = ax.imshow(values.T.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"{name} per unit (rows) over time (columns); first symbol {int(y)}")
        ax.set_ylabel("unit")
        fig.colorbar(im, ax=ax, label="gate value")
    ax.set_xlabel("time step")
    fig.tight_layout()
    gates_png = args.out_dir / "gates.png"
    fig.savefig(gates_png, dpi=100)
    print(f"plot: {gates_png}")

    metrics = {
        "lstm_layouts_checked": configs, "lstm_by_hand_max_abs_diff": worst, "gradient_flow_steps": T,
        "rnn_grad_ratio_first_over_last": rnn_flow, "lstm_default_bias_grad_ratio_first_over_last": lstm0_flow,
        "lstm_grad_ratio_first_over_last": lstm_flow, "memory_length": length, "train_steps": steps,
        "forget_bias": args.forget_bias, "chance_acc": 1 / SYMBOLS, "rnn_acc": rnn_acc, "lstm_acc": lstm_acc,
        "rnn_final_loss": rnn_loss, "lstm_final_loss": lstm_loss, "input_gate_first_step": input_first,
        "input_gate_later_steps": input_later, "forget_gate_mean": forget_mean,
        "rnn_train_s": rnn_s, "lstm_train_s": lstm_s,
    }
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    print(f"\nmetrics written to {write_metrics(args.out_dir, record)}")

    section("What to notice")
    print("- Four gates from one matmul: i and g write, f keeps, o reads; c is updated by a sum, not a squashing.")
    for line in highway_notes(rnn_flow, lstm0_flow, lstm_flow, args.forget_bias, cell_slope):
        print(line)
    print(f"- Same size, same steps: RNN {rnn_acc:.0%} vs LSTM {lstm_acc:.0%} at a gap of {length}. Try --length.")
    return metrics


if __name__ == "__main__":
    main()

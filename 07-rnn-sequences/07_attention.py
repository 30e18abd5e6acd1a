"""Attention: scaled dot-product attention by hand = PyTorch's, and the seq2seq bottleneck it removes.

Sections:
1. Scaled dot-product attention by hand, softmax(Q K^T / sqrt(d) + mask) V, against
   F.scaled_dot_product_attention with no mask, a padding mask and a causal mask.
2. nn.MultiheadAttention written out (in_proj split into W_q, W_k, W_v, heads, attention, out_proj) with its own
   weights: the same outputs and the same head-averaged attention weights. Watch the mask conventions: a boolean
   attn_mask of F.scaled_dot_product_attention says True = "may attend"; key_padding_mask of nn.MultiheadAttention
   says True = "padding, ignore".
3. The encoder-decoder GRU of lesson 06 (re-derived briefly) with and without Luong-style attention, trained on the
   same budget to REVERSE digit strings of length 3..--max-len. Without attention the decoder sees the input only
   through one vector; with it, each output step looks back at every encoder state. Accuracy per input length
   makes the bottleneck visible, and attention.png shows the alignment the model learned (the anti-diagonal:
   output step t reads input position L-1-t).
4. One nn.TransformerEncoderLayer (self-attention + feed-forward, no recurrence at all): the road onward.

Run it:
    python 07-rnn-sequences/07_attention.py
    python 07-rnn-sequences/07_attention.py --max-len 16 --steps 1500

Takes about half a minute on a laptop CPU. What to look for: differences around 1e-7 in sections 1-2; exact accuracy
falling with length without attention and staying high with it; a clean anti-diagonal in attention.png.
"""

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

PAD, SOS, EOS = 0, 1, 2
DIGITS = 10  # tokens 3..12 are the digits 0..9
VOCAB = 3 + DIGITS


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
    parser.add_argument("--smoke", action="store_true", help="short strings, few steps: seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/07-rnn-sequences/07_attention"),
                        help="where metrics.json and attention.png are written")
    parser.add_argument("--max-len", type=int, default=12, help="longest digit string to reverse")
    parser.add_argument("--steps", type=int, default=800, help="training steps of each seq2seq model")
    parser.add_argument("--batch-size", type=int, default=64, help="strings per step")
    parser.add_argument("--hidden", type=int, default=64, help="GRU hidden size")
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
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
    if min(args.steps, args.batch_size, args.hidden) < 1 or args.lr <= 0:
        parser.error("need --steps, --batch-size, --hidden >= 1 and --lr > 0")
    if not 4 <= args.max_len <= 40:
        parser.error("--max-len must be 4..40")
    return args


def token_str(token: int) -> str:
    """A token as a learner reads it: the digit for tokens 3..12, else <pad>, <sos> or <eos>."""
    return str(token - 3) if token >= 3 else ("<pad>", "<sos>", "<eos>")[token]


def bottleneck_verdict(long_plain: float, long_attn: float, loss_plain: float, loss_attn: float) -> str:
    """The 'What to notice' sentence on the longest strings, read from this run's exact accuracies and losses."""
    said = (f"Without attention the longest strings came out right {long_plain:.0%} of the time, with it "
            f"{long_attn:.0%}")
    if long_attn >= long_plain + 0.1:
        return f"{said}: one vector cannot hold a long input, a look-up over all encoder states can."
    if max(long_plain, long_attn) < 0.5:
        return (f"{said}: neither model learned to reverse them in this run (final training losses {loss_plain:.2f} "
                f"and {loss_attn:.2f}; guessing a token costs ln {VOCAB} = {math.log(VOCAB):.2f}), so this run "
                "cannot show the bottleneck: the default flags can.")
    if min(long_plain, long_attn) >= 0.9:
        return (f"{said}: at these lengths one vector still holds the whole input; the bottleneck shows on longer "
                "strings (--max-len).")
    return f"{said}: attention gave no clear gain in this run, so it does not show the bottleneck."


def alignment_verdict(alignment: float) -> str:
    """The heatmap sentence: the anti-diagonal only when the argmax alignment measured it (0.7: 5 steps in 7)."""
    if alignment >= 0.7:
        return "The heatmap is the learned alignment; for reversal it is the anti-diagonal."
    return (f"The heatmap is the learned alignment; a model that learned reversal puts it on the anti-diagonal "
            f"(output step t on input L-1-t), this one only at {alignment:.0%} of the steps.")


def attention_by_hand(q, k, v, mask=None):
    """q (..., L, d), k (..., S, d), v (..., S, dv); mask broadcastable to (..., L, S), True = may attend.

    Returns (output (..., L, dv), weights (..., L, S)); each row of weights sums to 1 over the keys.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., L, S); the scale keeps the softmax soft
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: masked keys get exactly no weight
    weights = scores.softmax(dim=-1)  # over the KEYS, for every query
    return weights @ v, weights


def mha_by_hand(mha: nn.MultiheadAttention, x, key_padding_mask=None, causal=False):
    """nn.MultiheadAttention(batch_first=True) self-attention on x (B, L, E) from its own parameters."""
    b, length, e = x.shape
    h = mha.num_heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)  # (E, E) each, stacked in in_proj_weight
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    split = lambda t: t.view(b, length, h, e // h).transpose(1, 2)  # noqa: E731  (B, heads, L, E/heads)
    q, k, v = split(x @ w_q.T + b_q), split(x @ w_k.T + b_k), split(x @ w_v.T + b_v)
    mask = torch.ones(b, 1, length, length, dtype=torch.bool, device=x.device)
    if key_padding_mask is not None:
        mask = mask & ~key_padding_mask[:, None, None, :]  # MHA: True = padding -> flip to "may attend"
    if causal:
        mask = mask & torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
    out, weights = attention_by_hand(q, k, v, mask)  # (B, heads, L, E/heads), (B, heads, L, L)
    out = out.transpose(1, 2).reshape(b, length, e)  # heads side by side again
    return mha.out_proj(out), weights.mean(dim=1)  # MHA averages the weights over heads by default


# ---------------------------------------------------------------- seq2seq with and without attention


def reversal_batch(n, min_len, max_len, rng: random.Random, device):
    """n random digit strings; target = the string reversed, then <eos>. Returns src, lengths, tgt (padded)."""
    seqs = [[3 + rng.randrange(DIGITS) for _ in range(rng.randint(min_len, max_len))] for _ in range(n)]
    src = pad_sequence([torch.tensor(s) for s in seqs], batch_first=True, padding_value=PAD)
    tgt = pad_sequence([torch.tensor(s[::-1] + [EOS]) for s in seqs], batch_first=True, padding_value=PAD)
    return src.to(device), torch.tensor([len(s) for s in seqs]), tgt.to(device)


class Seq2Seq(nn.Module):
    """Lesson 06's encoder-decoder GRU; attention=True adds Luong (general) attention over the encoder states."""

    def __init__(self, hidden: int, attention: bool):
        super().__init__()
        self.attention = attention
        self.src_embed = nn.Embedding(VOCAB, 32, padding_idx=PAD)
        self.encoder = nn.GRU(32, hidden, batch_first=True)
        self.tgt_embed = nn.Embedding(VOCAB, 32)
        self.decoder = nn.GRUCell(32, hidden)
        self.score = nn.Linear(hidden, hidden, bias=False)  # score(h_dec, h_enc) = h_enc . (W h_dec)
        self.combine = nn.Linear(2 * hidden, hidden)  # [h_dec; context] -> attentional state
        self.out = nn.Linear(hidden, VOCAB)

    def encode(self, src, lengths):
        packed = pack_padded_sequence(self.src_embed(src), lengths.cpu(), batch_first=True, enforce_sorted=False)
        enc, h = self.encoder(packed)
        enc, _ = pad_packed_sequence(enc, batch_first=True, total_length=src.shape[1])  # (B, S, H)
        return enc, h[0], src != PAD  # mask (B, S): True at real characters

    def step(self, token, h, enc, mask):
        h = self.decoder(self.tgt_embed(token), h)  # (B, H)
        if not self.attention:
            return self.out(h), h, None  # the bottleneck: only h, which started as the encoder's last state
        scores = (enc @ self.score(h).unsqueeze(-1)).squeeze(-1)  # (B, S): one score per input position
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # padding gets weight 0
        context = (weights.unsqueeze(1) @ enc).squeeze(1)  # (B, H): weighted average of encoder states
        return self.out(torch.tanh(self.combine(torch.cat([h, context], dim=1)))), h, weights

    def forward(self, src, lengths, tgt):  # teacher forcing (ratio 1: see lesson 06 for other ratios)
        enc, h, mask = self.encode(src, lengths)
        token = torch.full((len(src),), SOS, dtype=torch.long, device=src.device)
        logits = []
        for t in range(tgt.shape[1]):
            step_logits, h, _ = self.step(token, h, enc, mask)
            logits.append(step_logits)
            token = tgt[:, t]
        return torch.stack(logits, 1)  # (B, T, V)

    @torch.no_grad()
    def greedy(self, src, lengths, max_len):
        enc, h, mask = self.encode(src, lengths)
        token = torch.full((len(src),), SOS, dtype=torch.long, device=src.device)
        out, attn = [], []
        for _ in range(max_len):
            logits, h, weights = self.step(token, h, enc, mask)
            token = logits.argmax(1)
            out.append(token)
            attn.append(weights)
        return torch.stack(out, 1), (torch.stack(attn, 1) if self.attention else None)  # (B, T), (B, T, S)


def train_seq2seq(attention, args, max_len, steps, device):
    torch.manual_seed(args.seed)
    model = Seq2Seq(args.hidden, attention).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    rng = random.Random(args.seed)  # the same strings for both models
    for _ in range(steps):
        src, lengths, tgt = reversal_batch(args.batch_size, 3, max_len, rng, device)
        logits = model(src, lengths, tgt)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1), ignore_index=PAD)  # no loss on padding
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return model, loss.item()


def exact_by_length(model, max_len, device, seed, per_length=100):
    rng = random.Random(seed + 12345)  # held-out strings (random digits: overlap with training is negligible)
    result = {}
    for length in range(3, max_len + 1):
        src, lengths, tgt = reversal_batch(per_length, length, length, rng, device)
        pred, _ = model.greedy(src, lengths, length + 1)
        result[length] = (pred == tgt).all(dim=1).float().mean().item()  # reversed digits AND <eos> in place
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # float32 rounding on the CPU (~1e-7). On a GPU, F.scaled_dot_product_attention and nn.MultiheadAttention pick
    # fused kernels (flash / memory-efficient) that sum in another order: agreement to ~1e-6, hence 1e-4.
    tol = 1e-5 if device.type == "cpu" else 1e-4

    section("1. Scaled dot-product attention by hand = F.scaled_dot_product_attention")
    b, heads, length, d = 2, 4, 6, 8
    q, k, v = (torch.randn(b, heads, length, d, device=device) for _ in range(3))
    key_len = torch.tensor([6, 4], device=device)
    padding = (torch.arange(length, device=device)[None, :] < key_len[:, None])[:, None, None, :]  # (B,1,1,S)
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # query i sees keys 0..i
    diffs = {}
    for name, mask, kwargs in (("no mask", None, {}), ("padding mask", padding, {"attn_mask": padding}),
                               ("causal mask", causal, {"is_causal": True})):
        mine, weights = attention_by_hand(q, k, v, mask)
        ref = F.scaled_dot_product_attention(q, k, v, **kwargs)
        diffs[name] = (mine - ref).abs().max().item()
        extra = ""
        if name == "padding mask":
            extra = f"; weight on the 2 padded keys of sequence 1: {weights[1, :, :, 4:].abs().max().item():.1f}"
        if name == "causal mask":
            extra = f"; weight above the diagonal: {weights.triu(diagonal=1).abs().max().item():.1f}"
        print(f"  {name:13}: output {tuple(mine.shape)}, max abs diff {diffs[name]:.1e}{extra}")
    sdpa_diff = max(diffs.values())

    section("2. nn.MultiheadAttention written out")
    e = 32
    mha = nn.MultiheadAttention(e, num_heads=4, batch_first=True).to(device).eval()
    x = torch.randn(2, 7, e, device=device)
    key_padding = torch.tensor([[False] * 7, [False] * 5 + [True] * 2], device=device)  # True = padding here!
    mha_diffs = {}
    float_causal = nn.Transformer.generate_square_subsequent_mask(7, device=device)  # -inf above the diagonal
    with torch.no_grad():
        for name, kwargs, causal_flag in (("no mask", {}, False),
                                          ("key_padding_mask", {"key_padding_mask": key_padding}, False),
                                          ("causal attn_mask", {"attn_mask": float_causal}, True)):
            ref_out, ref_w = mha(x, x, x, **kwargs)
            out, w = mha_by_hand(mha, x, kwargs.get("key_padding_mask"), causal=causal_flag)
            mha_diffs[name] = max((out - ref_out).abs().max().item(), (w - ref_w).abs().max().item())
            print(f"  {name:17}: output {tuple(out.shape)}, weights {tuple(w.shape)}; max abs diff (output and "
                  f"weights) {mha_diffs[name]:.1e}")
    mha_diff = max(mha_diffs.values())
    print(f"in_proj_weight {tuple(mha.in_proj_weight.shape)} = W_q, W_k, W_v stacked; 4 heads of {e // 4} dims each")
    print("masks: F.scaled_dot_product_attention bool attn_mask True = attend; MultiheadAttention key_padding_mask "
          "True = ignore; float masks are added to the scores (-inf = ignore)")

    section("3. Seq2seq with and without attention: reversing digit strings")
    max_len = min(args.max_len, 7) if args.smoke else args.max_len
    steps = min(args.steps, 70) if args.smoke else args.steps
    print(f"strings of 3..{max_len} digits, {steps} steps of {args.batch_size}, hidden {args.hidden}, the same "
          "data for both models")
    results, models, train_s, final_loss = {}, {}, {}, {}
    for attention in (False, True):
        t0 = time.perf_counter()
        models[attention], final_loss[attention] = train_seq2seq(attention, args, max_len, steps, device)
        train_s[attention] = time.perf_counter() - t0
        results[attention] = exact_by_length(models[attention], max_len, device, args.seed,
                                             per_length=50 if args.smoke else 200)
        print(f"  {'with' if attention else 'without':7} attention: final loss {final_loss[attention]:.3f}, "
              f"{train_s[attention]:.1f} s")
    print(f"\n  {'length':>6}{'no attention':>14}{'attention':>11}")
    for length in range(3, max_len + 1):
        print(f"  {length:>6}{results[False][length]:>14.1%}{results[True][length]:>11.1%}")
    long_lengths = [n for n in range(3, max_len + 1) if n > max_len - 3]
    long_plain = float(np.mean([results[False][n] for n in long_lengths]))
    long_attn = float(np.mean([results[True][n] for n in long_lengths]))
    mean_plain, mean_attn = float(np.mean(list(results[False].values()))), float(np.mean(list(results[True].values())))
    print(f"longest three lengths: {long_plain:.1%} without vs {long_attn:.1%} with attention")

    src, lengths, _ = reversal_batch(1, max_len, max_len, random.Random(args.seed + 7), device)
    pred, attn = models[True].greedy(src, lengths, max_len + 1)
    attn = attn[0].cpu()  # (T_out, S)
    mirrored = [(max_len - 1 - t) for t in range(max_len)]
    alignment = float(np.mean([int(attn[t].argmax()) == mirrored[t] for t in range(max_len)]))
    print(f"one string: input {[int(t) - 3 for t in src[0]]} -> output "
          f"[{', '.join(token_str(int(t)) for t in pred[0, :max_len])}]; "
          f"output step t attends most to input position L-1-t at {alignment:.0%} of the steps")
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(attn.numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(max_len), [str(int(t) - 3) for t in src[0]])
    ax.set_yticks(range(max_len + 1), [token_str(int(t)) for t in pred[0]])
    ax.set_xlabel("input digit (encoder position)")
    ax.set_ylabel("output digit (decoder step)")
    ax.set_title("Attention weights learned for reversal")
    fig.colorbar(im, ax=ax, label="attention weight")
    fig.tight_layout()
    png = args.out_dir / "attention.png"
    fig.savefig(png, dpi=100)
    print(f"plot: {png}")

    section("4. The road onward: nn.TransformerEncoderLayer")
    layer = nn.TransformerEncoderLayer(d_model=e, nhead=4, dim_feedforward=64, batch_first=True).to(device).eval()
    tokens = torch.randn(2, 7, e, device=device)
    changed = tokens.clone()
    changed[1, 5:] = 100 * torch.randn(2, e, device=device)  # scribble over the padding of sequence 1
    with torch.no_grad():
        a = layer(tokens, src_key_padding_mask=key_padding)
        b2 = layer(changed, src_key_padding_mask=key_padding)
    pad_leak = (a[1, :5] - b2[1, :5]).abs().max().item()
    print(f"one layer = multi-head self-attention + feed-forward, each with a residual and LayerNorm: "
          f"{sum(p.numel() for p in layer.parameters()):,} parameters; (B, L, E) in, (B, L, E) out: "
          f"{tuple(a.shape)}")
    print(f"changing the padded positions changed the real positions' outputs by {pad_leak:.1e}: the mask holds")
    print("no recurrence: every position attends to every other in one step, so training parallelises over the "
          "sequence; order comes from positional encodings you add to the input. Stacks of these are Transformers.")

    metrics = {"sdpa_by_hand_max_abs_diff": sdpa_diff, "mha_by_hand_max_abs_diff": mha_diff,
               "by_hand_within_tolerance": int(max(sdpa_diff, mha_diff) < tol), "max_len": max_len,
               "steps": steps, "exact_acc_no_attention": mean_plain, "exact_acc_attention": mean_attn,
               "long_exact_acc_no_attention": long_plain, "long_exact_acc_attention": long_attn,
               "attention_alignment": alignment, "transformer_padding_leak": pad_leak,
               "train_no_attention_s": train_s[False], "train_attention_s": train_s[True]}
    for length in range(3, max_len + 1):
        metrics[f"len{length}_acc_no_attention"] = results[False][length]
        metrics[f"len{length}_acc_attention"] = results[True][length]
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    print(f"\nmetrics written to {write_metrics(args.out_dir, record)}")

    section("What to notice")
    print("- Attention is a softmax over keys of query-key similarities, used to average the values; masks set "
          "scores to -inf before the softmax.")
    print(f"- {bottleneck_verdict(long_plain, long_attn, final_loss[False], final_loss[True])}")
    print(f"- {alignment_verdict(alignment)}")
    return metrics


if __name__ == "__main__":
    main()

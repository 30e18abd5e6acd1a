"""Sequence to sequence: an encoder-decoder GRU that translates dates written by people into ISO format.

Sections:
1. The task, with an answer a program can check: "march 5, 2021", "5 mar 2021", "05/03/2021", "the 5th of march
   2021", ... -> "2021-03-05". Characters in, characters out, with the special tokens <pad> (fills batches),
   <sos> (starts every decoder input) and <eos> (the decoder says "done").
2. A bidirectional GRU encoder reads the packed input characters into one vector (its two final hidden states
   side by side); the decoder GRU starts from that vector and emits one character at a time.
3. Training with teacher forcing: at each decoder step the input is the TRUE previous character with probability
   --teacher-forcing, otherwise the decoder's own previous guess.
4. Greedy decoding on held-out dates (the argmax at each step, fed back, until <eos>) and exact-sequence accuracy:
   the whole string must be right.
5. The teacher-forcing ratio measured: always (1.0) against never (0.0), the same small budget for both, greedy
   accuracy compared.

Run it:
    python 07-rnn-sequences/06_seq2seq.py
    python 07-rnn-sequences/06_seq2seq.py --teacher-forcing 1.0 --steps 3000

Takes about 40 s on an idle 2-core CPU. What to look for: exact-sequence accuracy on held-out dates above 90%, the
mistakes it still makes, and how accuracy changes with the teacher-forcing ratio.
"""

import argparse
import datetime as dt
import json
import os
import random
import time
from bisect import bisect_left
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

PAD, SOS, EOS = 0, 1, 2
SPECIALS = ["<pad>", "<sos>", "<eos>"]
CHARS = "0123456789abcdefghijklmnopqrstuvwxyz ,./-"
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
TARGET_LEN = 10  # "YYYY-MM-DD"
DATE_RANGE = (1950, 1, 1), (2049, 12, 31)  # every date is drawn uniformly from these, both included
TRAIN_PAIRS, SMOKE_TRAIN_PAIRS = 20000, 5000


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
                        help="where the model trains; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="a few hundred steps and a small model: seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/07-rnn-sequences/06_seq2seq"),
                        help="where metrics.json is written")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of the main model")
    parser.add_argument("--batch-size", type=int, default=64, help="dates per step")
    parser.add_argument("--hidden", type=int, default=128,
                        help="decoder GRU hidden size (the bidirectional encoder has half per direction)")
    parser.add_argument("--embed", type=int, default=32, help="character embedding size")
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
    parser.add_argument("--teacher-forcing", type=float, default=0.5,
                        help="probability of feeding the true previous character to the decoder while training")
    parser.add_argument("--tf-steps", type=int, default=700, help="training steps of each model in section 5")
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
    if min(args.steps, args.batch_size, args.embed, args.tf_steps) < 1 or args.hidden < 2 or args.lr <= 0:
        parser.error("need --steps, --batch-size, --embed, --tf-steps >= 1, --hidden >= 2 and --lr > 0")
    args.hidden -= args.hidden % 2  # split evenly between the encoder's two directions
    if not 0 <= args.teacher_forcing <= 1:
        parser.error("--teacher-forcing is a probability: 0..1")
    n_train = SMOKE_TRAIN_PAIRS if args.smoke else TRAIN_PAIRS
    if args.batch_size > n_train:
        parser.error(f"--batch-size {args.batch_size}: a batch samples distinct training pairs, and this run has "
                     f"{n_train}{' (--smoke)' if args.smoke else ''}")
    return args


def human_date(d: dt.date, rng: random.Random) -> str:
    """One of several ways people write a date."""
    month = MONTHS[d.month - 1]
    suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}.get(d.day, "th")
    return rng.choice((
        f"{month} {d.day}, {d.year}", f"{d.day} {month} {d.year}", f"{month[:3]} {d.day} {d.year}",
        f"{d.day:02d}/{d.month:02d}/{d.year}", f"the {d.day}{suffix} of {month} {d.year}",
        f"{d.day}.{d.month}.{d.year}", f"{month[:3]}. {d.day:02d}, {d.year}",
    ))


def date_pairs(n: int, rng: random.Random, exclude: set | None = None) -> list[tuple[str, str]]:
    start, last = (dt.date(*d) for d in DATE_RANGE)
    days = (last - start).days
    pairs = []
    while len(pairs) < n:
        d = start + dt.timedelta(days=rng.randrange(days + 1))
        if exclude is not None and d in exclude:
            continue  # held-out dates never seen in training, in any format
        pairs.append((human_date(d, rng), d.isoformat()))
    return pairs


def to_ids(text: str) -> list[int]:
    return [len(SPECIALS) + CHARS.index(c) for c in text]


def to_text(ids) -> str:
    out = []
    for i in ids:
        if i == EOS:
            break
        out.append(CHARS[i - len(SPECIALS)] if i >= len(SPECIALS) else "?")
    return "".join(out)


def input_blind_hits(pairs) -> torch.Tensor:
    """(N, 11) bool: whether the best guess of a decoder that never sees the input is right at each target position.

    Such a decoder (a broken encoder, say) still gets the true previous characters with teacher forcing, so its
    best guess is the most common next character after that prefix. Counted here over every date in the range the
    dates are drawn from (uniformly), this is the most any input-blind decoder can expect: a ceiling, not a model.
    """
    # ISO dates sort as strings in date order, so the dates sharing a prefix are one slice of the sorted list
    first, last = (dt.date(*d) for d in DATE_RANGE)
    dates = [(first + dt.timedelta(days=d)).isoformat() + "$" for d in range((last - first).days + 1)]
    columns = ["".join(chars) for chars in zip(*dates)]  # columns[t]: character t of every date; "$" is <eos>
    best = {}

    def best_guess(prefix: str) -> str:
        if prefix not in best:
            lo, hi = bisect_left(dates, prefix), bisect_left(dates, prefix + "~")  # "~" sorts after every char used
            counts = Counter(columns[len(prefix)][lo:hi])
            best[prefix] = min(counts, key=lambda c: (-counts[c], c))  # the most common; a tie: the first in order
        return best[prefix]

    rows = [b + "$" for _, b in pairs]
    return torch.tensor([[best_guess(r[:t]) == r[t] for t in range(len(r))] for r in rows])


def make_batch(pairs, device):
    """src (B, S) padded ids + lengths, tgt (B, 11) = the 10 target characters then <eos>."""
    src = [torch.tensor(to_ids(a)) for a, _ in pairs]
    lengths = torch.tensor([len(s) for s in src])
    tgt = torch.tensor([to_ids(b) + [EOS] for _, b in pairs])
    return pad_sequence(src, batch_first=True, padding_value=PAD).to(device), lengths, tgt.to(device)


class Seq2Seq(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int):
        super().__init__()
        self.src_embed = nn.Embedding(vocab, embed, padding_idx=PAD)
        # bidirectional: the day (often first) and the year (often last) are both near an end of the input
        self.encoder = nn.GRU(embed, hidden // 2, batch_first=True, bidirectional=True)
        self.tgt_embed = nn.Embedding(vocab, embed)
        self.decoder = nn.GRUCell(embed, hidden)  # one step at a time: its input depends on the previous output
        self.out = nn.Linear(hidden, vocab)

    def encode(self, src, lengths):
        packed = pack_padded_sequence(self.src_embed(src), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.encoder(packed)  # (2, B, H/2): final forward and backward states
        return torch.cat([h[0], h[1]], dim=1)  # (B, H): the whole input squeezed into one vector

    def step(self, token, h):
        """token (B,) previous character, h (B, H) -> logits (B, V) for the next character, new h."""
        h = self.decoder(self.tgt_embed(token), h)
        return self.out(h), h

    def forward(self, src, lengths, tgt, teacher_forcing: float, generator: torch.Generator):
        h = self.encode(src, lengths)
        token = torch.full((len(src),), SOS, dtype=torch.long, device=src.device)  # every answer starts at <sos>
        logits = []
        for t in range(tgt.shape[1]):
            step_logits, h = self.step(token, h)
            logits.append(step_logits)
            use_truth = torch.rand((), generator=generator).item() < teacher_forcing
            token = tgt[:, t] if use_truth else step_logits.argmax(1).detach()  # truth, or its own guess
        return torch.stack(logits, dim=1)  # (B, T, V)

    @torch.no_grad()
    def greedy(self, src, lengths, max_len: int = TARGET_LEN + 1):
        h = self.encode(src, lengths)
        token = torch.full((len(src),), SOS, dtype=torch.long, device=src.device)
        out = []
        for _ in range(max_len):
            logits, h = self.step(token, h)
            token = logits.argmax(1)  # greedy: the single most likely character, fed back in
            out.append(token)
        return torch.stack(out, dim=1)  # (B, max_len); everything after the first <eos> is ignored


def train(args, steps, teacher_forcing, train_pairs, device, log_every=0):
    torch.manual_seed(args.seed)
    model = Seq2Seq(len(SPECIALS) + len(CHARS), args.embed, args.hidden).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    for step in range(steps):
        src, lengths, tgt = make_batch(rng.sample(train_pairs, args.batch_size), device)
        logits = model(src, lengths, tgt, teacher_forcing, gen)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1:>5}: loss {loss.item():.4f}")
    return model


def evaluate(model, pairs, device):
    """Exact-sequence accuracy with greedy decoding, per-character accuracy with teacher forcing, the decodings, and
    the teacher-forced hits (N, 11) as a CPU bool tensor."""
    model.eval()
    src, lengths, tgt = make_batch(pairs, device)
    decoded = [to_text(row) for row in model.greedy(src, lengths).tolist()]
    exact = float(np.mean([d == b for d, (_, b) in zip(decoded, pairs)]))
    with torch.no_grad():
        forced = model(src, lengths, tgt, 1.0, torch.Generator()).argmax(-1)
    hits = (forced == tgt).cpu()
    char_acc = hits.float().mean().item()
    model.train()
    return exact, char_acc, decoded, hits


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        args.hidden, args.steps, args.tf_steps = min(args.hidden, 64), min(args.steps, 80), min(args.tf_steps, 10)

    section("1. The task and its tokens")
    rng = random.Random(args.seed)
    test_pairs = date_pairs(300 if args.smoke else 1000, rng)
    held_out = {dt.date.fromisoformat(b) for _, b in test_pairs}
    train_pairs = date_pairs(SMOKE_TRAIN_PAIRS if args.smoke else TRAIN_PAIRS, rng, exclude=held_out)
    for a, b in train_pairs[:5]:
        print(f"  {a!r:32} -> {b!r}")
    src, lengths, tgt = make_batch(train_pairs[:3], "cpu")
    print(f"vocabulary: {len(SPECIALS)} specials {SPECIALS} + {len(CHARS)} characters; source batch "
          f"{tuple(src.shape)} padded with <pad>={PAD}, lengths {lengths.tolist()}; target {tuple(tgt.shape)} = "
          f"{TARGET_LEN} characters + <eos>={EOS}; decoder inputs start with <sos>={SOS}")
    print(f"{len(train_pairs)} training pairs, {len(test_pairs)} held-out pairs whose DATES never occur in training")

    section(f"2-3. Encoder-decoder GRU, teacher forcing {args.teacher_forcing}")
    t0 = time.perf_counter()
    model = train(args, args.steps, args.teacher_forcing, train_pairs, device, log_every=max(1, args.steps // 5))
    train_s = time.perf_counter() - t0
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {args.steps} steps of {args.batch_size} in "
          f"{train_s:.1f} s")

    section("4. Greedy decoding on held-out dates")
    exact, char_acc, decoded, hits = evaluate(model, test_pairs, device)
    print(f"exact-sequence accuracy {exact:.1%} ({int(round(exact * len(test_pairs)))}/{len(test_pairs)}); "
          f"per-character accuracy with teacher forcing {char_acc:.1%}")
    blind = input_blind_hits(test_pairs)
    blind_char, blind_year = blind.float().mean().item(), blind[:, :4].float().mean().item()
    year_acc = hits[:, :4].float().mean().item()  # "YYYY": the characters only the input can decide
    print(f"a decoder that ignores the input (the best guess from the true previous characters alone, counted over "
          f"every date it could be) can expect {blind_char:.1%} per character and {blind_year:.1%} on the year's "
          f"four characters; this model: {char_acc:.1%} and {year_acc:.1%}")
    if year_acc > blind_year + 0.05:
        print(f"it reads the year from the input: {year_acc - blind_year:+.1%} on the year over ignoring it")
    else:
        print("no better than ignoring the input on the year yet: the encoder has not been used (train longer)")
    for (a, b), d in list(zip(test_pairs, decoded))[:4]:
        print(f"  {a!r:32} -> {d!r} {'ok' if d == b else 'WRONG, expected ' + b}")
    wrong = [(a, b, d) for (a, b), d in zip(test_pairs, decoded) if d != b][:4]
    for a, b, d in wrong:
        print(f"  mistake: {a!r} -> {d!r}, expected {b!r}")

    section("5. The teacher-forcing ratio")
    print(f"same budget for each: {args.tf_steps} steps; greedy exact accuracy on the held-out dates")
    tf_results = {}
    for ratio in (1.0, 0.0):  # the extremes; the main model above used --teacher-forcing
        m = train(args, args.tf_steps, ratio, train_pairs, device)
        tf_exact, tf_char, _, _ = evaluate(m, test_pairs, device)
        tf_results[ratio] = tf_exact
        print(f"  teacher forcing {ratio:.1f}: exact {tf_exact:.1%}, per-character (teacher-forced) {tf_char:.1%}")
    best, worst = max(tf_results, key=tf_results.get), min(tf_results, key=tf_results.get)  # a tie: both are 1.0
    verdict = (f"both scored {tf_results[best]:.1%}" if best == worst else
               f"{best:.1f} scored {tf_results[best]:.1%} exact, {worst:.1f} {tf_results[worst]:.1%}")
    print(f"with this budget {verdict}. Teacher forcing gives every step the right context, so it learns fast, "
          "but it never practises recovering from its own mistakes (exposure bias); 0.0 trains on its own early "
          "garbage. A mix, or a ratio annealed from 1 to 0, is the usual compromise.")

    metrics = {"train_pairs": len(train_pairs), "test_pairs": len(test_pairs), "steps": args.steps,
               "teacher_forcing": args.teacher_forcing, "exact_acc": exact, "char_acc_teacher_forced": char_acc,
               "char_acc_input_blind_ceiling": blind_char, "year_acc_teacher_forced": year_acc,
               "year_acc_input_blind_ceiling": blind_year,
               "tf_steps": args.tf_steps, "tf1_exact_acc": tf_results[1.0],
               "tf0_exact_acc": tf_results[0.0], "train_s": train_s}
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    print(f"\nmetrics written to {write_metrics(args.out_dir, record)}")

    section("What to notice")
    print("- The encoder's final hidden state is the only thing the decoder learns about the input: a bottleneck "
          "(lesson 07 removes it with attention).")
    print("- Training feeds the truth (teacher forcing); inference feeds the model's own outputs (greedy).")
    print(f"- Exact-sequence accuracy is strict: {exact:.1%} of whole dates right.")
    return metrics


if __name__ == "__main__":
    main()

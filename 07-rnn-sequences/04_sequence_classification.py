"""Text classification end to end: tokenizer, vocabulary, embeddings, padding and packing, a bidirectional LSTM.

Sections:
1. Data. Your own labelled corpus under --data-dir when there is one, in either standard layout:
   - the aclImdb folders: <data-dir>/aclImdb/{train,test}/{pos,neg}/*.txt (or <data-dir>/{train,test}/{pos,neg}/);
   - two CSV files <data-dir>/train.csv and <data-dir>/test.csv with a header `text,label` (label pos/neg or 1/0).
   Otherwise a generated sentiment corpus whose labels depend on word order: negation ("the plot was not good"),
   and contrast, where the clause after "but" decides ("the acting was great but the plot was boring" is negative,
   "the plot was boring but the acting was great" positive). Every contrast sentence comes with its mirror image:
   the same bag of words with the opposite label. No bag-of-words model, however clever, can get both right.
2. Tokenizer and vocabulary built from the TRAINING split only: lower-case regex tokens, <pad> = 0, <unk> = 1, words
   seen fewer than --min-freq times map to <unk>. (torchtext used to do this; it is discontinued: its 0.18 release
   of April 2024 is the last. collections.Counter, a dict and pad_sequence are the current way.)
3. nn.Embedding(padding_idx=0), lengths and pack_padded_sequence, a bidirectional LSTM whose two final states
   (forward and backward) feed a linear head.
4. A bag-of-words baseline trained the same way (nn.EmbeddingBag, mean of word vectors, linear head), the bound
   no bag-of-words model can beat on the generated corpus, and both models' test accuracy per kind of sentence.
5. Predictions for sentences you type: --predict "the ending was not bad" --predict "...".

Run it:
    python 07-rnn-sequences/04_sequence_classification.py
    python 07-rnn-sequences/04_sequence_classification.py --predict "the music was great but the ending was dull"
    python 07-rnn-sequences/04_sequence_classification.py --data-dir ~/data   # with aclImdb/ or train.csv inside

Takes about fifteen seconds on a laptop CPU on the generated corpus (longer on aclImdb: see --max-examples).
What to look for: the vocabulary size and <unk> rate, the bag-of-words test accuracy stuck below its bound (0.8) and
the LSTM well above it, and the per-kind table showing where word order matters.
"""

import argparse
import copy
import csv
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

PAD, UNK = "<pad>", "<unk>"
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
NOUNS = ("movie", "film", "plot", "acting", "story", "cast", "ending", "script", "music", "dialogue", "pacing",
         "soundtrack", "camera work", "lead actor")
VERBS = ("was", "is", "felt", "seemed")
ADVERBS = ("really", "quite", "truly", "very", "rather")
NEGATIONS = ("not", "never", "hardly")
POSITIVE = ("good", "great", "brilliant", "moving", "funny", "superb", "charming", "clever", "gripping", "lovely")
NEGATIVE = ("bad", "boring", "dull", "awful", "weak", "clumsy", "bland", "tedious", "messy", "poor")
SYLLABLES = ("ka", "ri", "mo", "lan", "te", "vo", "su", "dex", "ba", "nor", "ji", "pel")
DEMO = ("the movie was not good", "the acting was great but the plot was boring",
        "the plot was boring but the acting was great", "the music was never bad", "the ending was superb")
DEMO_LABELS = (0, 0, 1, 1, 1)
KINDS = ("plain", "negated", "contrast", "and")


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
    parser.add_argument("--smoke", action="store_true", help="a small corpus and few epochs: seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/07-rnn-sequences/04_sequence_classification"),
                        help="where metrics.json and vocab.json are written")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="folder holding aclImdb/ (or train/ and test/ with pos/ and neg/), or train.csv and "
                             "test.csv; the generated corpus is used when neither is there")
    parser.add_argument("--sentences", type=int, default=6000, help="size of the generated corpus")
    parser.add_argument("--max-examples", type=int, default=5000,
                        help="at most this many training (and test) texts are read from a real corpus")
    parser.add_argument("--max-len", type=int, default=200, help="texts are cut to this many tokens")
    parser.add_argument("--min-freq", type=int, default=2, help="words seen fewer times in training become <unk>")
    parser.add_argument("--epochs", type=int, default=12, help="passes over the training split")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per optimizer step")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--embed", type=int, default=32, help="embedding size")
    parser.add_argument("--hidden", type=int, default=64, help="LSTM hidden size per direction")
    parser.add_argument("--predict", action="append", default=[], metavar="TEXT",
                        help="a sentence to classify after training (repeat the flag for more)")
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
    for name in ("epochs", "batch_size", "embed", "hidden", "min_freq", "max_len", "max_examples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.sentences < 200 or args.lr <= 0:
        parser.error("need --sentences >= 200 and --lr > 0")
    if any(not text.strip() for text in args.predict):
        parser.error("--predict needs a non-empty sentence")
    return args


# ---------------------------------------------------------------- data


def clause(rng: random.Random, polarity: int) -> tuple[str, bool]:
    """'the plot was (not) (really) dull' with the given overall polarity (1 positive, 0 negative)."""
    negated = rng.random() < 0.4
    adjective_positive = polarity if not negated else 1 - polarity  # "not" flips the adjective's meaning
    words = ["the", rng.choice(NOUNS), rng.choice(VERBS)]
    if negated:
        words.append(rng.choice(NEGATIONS))
    if rng.random() < 0.3:
        words.append(rng.choice(ADVERBS))
    words.append(rng.choice(POSITIVE if adjective_positive else NEGATIVE))
    return " ".join(words), negated


def generated_corpus(n: int, seed: int) -> list[dict]:
    """Sentences with labels that need word order; contrast sentences come in mirrored pairs (same words, opposite
    labels). Each item: text, label, kind, group (the pair it belongs to, so a split keeps twins together)."""
    rng = random.Random(seed)
    items, group = [], 0
    while len(items) < n:
        kind = rng.choices(("single", "contrast", "and"), weights=(0.45, 0.4, 0.15))[0]
        signature = f" , says {''.join(rng.choice(SYLLABLES) for _ in range(3))}" if rng.random() < 0.3 else ""
        if kind == "single":
            label = rng.randint(0, 1)
            text, negated = clause(rng, label)
            items.append({"text": text + signature, "label": label, "kind": "negated" if negated else "plain",
                          "group": group})
        elif kind == "contrast":
            pol = rng.randint(0, 1)
            a, _ = clause(rng, pol)
            b, _ = clause(rng, 1 - pol)
            # "a but b" takes b's polarity; its mirror "b but a" takes a's: same bag of words, opposite labels
            items.append({"text": f"{a} but {b}{signature}", "label": 1 - pol, "kind": "contrast", "group": group})
            items.append({"text": f"{b} but {a}{signature}", "label": pol, "kind": "contrast", "group": group})
        else:
            pol = rng.randint(0, 1)
            a, _ = clause(rng, pol)
            b, _ = clause(rng, pol)
            items.append({"text": f"{a} and {b}{signature}", "label": pol, "kind": "and", "group": group})
        group += 1
    return items


def parse_label(raw: str, where: str) -> int:
    value = raw.strip().lower()
    if value in ("1", "pos", "positive"):
        return 1
    if value in ("0", "neg", "negative"):
        return 0
    raise ValueError(f"{where}: label {raw!r} is not one of pos/neg/positive/negative/1/0")


def read_folder_split(root: Path, split: str) -> list[dict]:
    items = []
    for label, name in ((1, "pos"), (0, "neg")):
        folder = root / split / name
        files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
        if not files:
            raise ValueError(f"{folder} holds no .txt files")
        for f in files:
            text = re.sub(r"<[^>]+>", " ", f.read_text(encoding="utf-8", errors="replace"))  # IMDb has <br />
            items.append({"text": text, "label": label, "kind": "real"})
    return items


def read_csv_split(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's "CSV UTF-8" starts with a BOM
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path} needs a header with the columns text,label (found {reader.fieldnames})")
        items = [{"text": row["text"] or "", "label": parse_label(row["label"] or "", f"{path} line {i + 2}"),
                  "kind": "real"} for i, row in enumerate(reader)]
    if not items:
        raise ValueError(f"{path} has no rows")
    return items


def find_real_corpus(data_dir: Path):
    """(description, train items, test items) from a standard layout under data_dir, or None when there is none."""
    for root in (data_dir / "aclImdb", data_dir):
        if (root / "train" / "pos").is_dir() or (root / "train" / "neg").is_dir():
            return f"folders {root}/{{train,test}}/{{pos,neg}}", read_folder_split(root, "train"), \
                read_folder_split(root, "test")
    if (data_dir / "train.csv").is_file():
        if not (data_dir / "test.csv").is_file():
            raise ValueError(f"{data_dir / 'train.csv'} found but no test.csv beside it")
        return f"CSV {data_dir}/train.csv and test.csv", read_csv_split(data_dir / "train.csv"), \
            read_csv_split(data_dir / "test.csv")
    return None


def subsample(items: list[dict], k: int, rng: random.Random) -> list[dict]:
    return items if len(items) <= k else rng.sample(items, k)


# ---------------------------------------------------------------- text -> tensors


def tokenize(text: str) -> list[str]:
    """Lower-case words (with an apostrophe part: don't, film's) and single punctuation marks."""
    return TOKEN.findall(text.lower())


def build_vocab(token_lists, min_freq: int) -> tuple[dict, Counter]:
    """token -> index from the TRAINING texts: <pad> 0, <unk> 1, then words by falling count (ties alphabetical)."""
    counts = Counter(tok for tokens in token_lists for tok in tokens)
    kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return {PAD: 0, UNK: 1, **{w: i + 2 for i, w in enumerate(kept)}}, counts


def encode(tokens: list[str], vocab: dict, max_len: int) -> torch.Tensor:
    ids = [vocab.get(tok, vocab[UNK]) for tok in tokens[:max_len]] or [vocab[UNK]]  # never an empty sequence
    return torch.tensor(ids, dtype=torch.long)


def batches(encoded, labels, batch_size, shuffle_gen=None):
    """(ids (B, T_max) padded with 0, lengths (B,), labels (B,)) batches; shuffled when a generator is given."""
    order = torch.randperm(len(encoded), generator=shuffle_gen) if shuffle_gen is not None else \
        torch.arange(len(encoded))
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size].tolist()
        seqs = [encoded[j] for j in idx]
        yield (pad_sequence(seqs, batch_first=True, padding_value=0),
               torch.tensor([len(s) for s in seqs]), labels[idx])


# ---------------------------------------------------------------- models


class BiLSTMClassifier(nn.Module):
    def __init__(self, vocab_size: int, embed: int, hidden: int, classes: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=0)  # row 0 stays zero and gets no gradient
        self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, ids, lengths):  # ids (B, T), lengths (B,) on the CPU
        x = self.embedding(ids)  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n (2, B, H): forward state at each true end, backward state at step 0
        features = torch.cat([h_n[0], h_n[1]], dim=1)  # (B, 2H)
        return self.head(self.dropout(features))  # (B, classes)


class BagOfWords(nn.Module):
    """Mean of the word vectors, then a linear layer: sees which words occur, never their order."""

    def __init__(self, vocab_size: int, embed: int, classes: int = 2):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, embed, mode="mean", padding_idx=0)  # padding left out of the mean
        self.head = nn.Linear(embed, classes)

    def forward(self, ids, lengths):
        return self.head(self.bag(ids))


def predict_proba(model, encoded, device, batch_size=256) -> torch.Tensor:
    model.eval()
    out = []
    with torch.no_grad():
        for ids, lengths, _ in batches(encoded, torch.zeros(len(encoded), dtype=torch.long), batch_size):
            out.append(F.softmax(model(ids.to(device), lengths), dim=1).cpu())
    return torch.cat(out)  # (N, 2)


def train(model, data, args, epochs, device, name):
    (enc_tr, y_tr), (enc_va, y_va) = data
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    best_acc, best_state, epoch_s = -1.0, None, []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        total, seen = 0.0, 0
        for ids, lengths, y in batches(enc_tr, y_tr, args.batch_size, gen):
            loss = F.cross_entropy(model(ids.to(device), lengths), y.to(device))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
        epoch_s.append(time.perf_counter() - t0)
        val_acc = (predict_proba(model, enc_va, device).argmax(1) == y_va).float().mean().item()
        if val_acc > best_acc:
            best_acc, best_state = val_acc, copy.deepcopy(model.state_dict())
        print(f"  {name} epoch {epoch + 1:>2}: train loss {total / seen:.4f}, validation accuracy {val_acc:.3f}")
    model.load_state_dict(best_state)  # best validation epoch; the test split is read once, afterwards
    return best_acc, float(np.mean(epoch_s))


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)

    section("1. Data")
    try:
        real = find_real_corpus(args.data_dir)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        sys.exit(f"error: cannot read the corpus under {args.data_dir}: {err}")
    if real is not None:
        where, train_items, test_items = real
        cap = min(args.max_examples, 400) if args.smoke else args.max_examples
        train_items, test_items = subsample(train_items, cap, rng), subsample(test_items, cap, rng)
        rng.shuffle(train_items)
        n_val = max(1, len(train_items) // 10)
        val_items, train_items = train_items[:n_val], train_items[n_val:]  # validation carved from train
        source = "real"
        print(f"real corpus: {where}")
        if len(train_items) < 2 or len({it['label'] for it in train_items}) < 2:
            sys.exit("error: the training split needs texts of both labels")
    else:
        n = 1200 if args.smoke else args.sentences
        items = generated_corpus(n, args.seed)
        groups = sorted({it["group"] for it in items})
        rng.shuffle(groups)
        cut1, cut2 = int(0.7 * len(groups)), int(0.85 * len(groups))
        part = {g: (0 if k < cut1 else 1 if k < cut2 else 2) for k, g in enumerate(groups)}  # twins stay together
        train_items, val_items, test_items = ([it for it in items if part[it["group"]] == s] for s in range(3))
        source = "generated"
        print(f"no corpus under {args.data_dir} (aclImdb/, train/pos, or train.csv): using the generated corpus")
    print(f"{len(train_items)} train / {len(val_items)} validation / {len(test_items)} test texts; positive share "
          f"in train {np.mean([it['label'] for it in train_items]):.2f}")
    for it in train_items[:4]:
        print(f"  [{'pos' if it['label'] else 'neg'}] {it['text'][:100]}")

    section("2. Tokenizer and vocabulary (training split only)")
    tok_tr = [tokenize(it["text"]) for it in train_items]
    tok_va = [tokenize(it["text"]) for it in val_items]
    tok_te = [tokenize(it["text"]) for it in test_items]
    vocab, counts = build_vocab(tok_tr, args.min_freq)
    rare = sum(1 for c in counts.values() if c < args.min_freq)
    test_tokens = [t for tokens in tok_te for t in tokens]
    unk_rate = sum(t not in vocab for t in test_tokens) / max(1, len(test_tokens))
    print(f"tokenize({train_items[0]['text'][:40]!r}) -> {tok_tr[0][:8]}")
    print(f"{len(counts)} distinct training words; {rare} seen fewer than {args.min_freq} times -> <unk>; "
          f"vocabulary {len(vocab)} entries (<pad>=0, <unk>=1); test tokens that are <unk>: {unk_rate:.1%}")
    print(f"most frequent: {list(vocab)[2:12]}")
    vocab_file = args.out_dir / "vocab.json"
    tmp = vocab_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(list(vocab)))  # index -> word: everything a predictor needs besides the weights
    os.replace(tmp, vocab_file)
    enc = [[encode(t, vocab, args.max_len) for t in split] for split in (tok_tr, tok_va, tok_te)]
    labels = [torch.tensor([it["label"] for it in split]) for split in (train_items, val_items, test_items)]
    lengths = [len(e) for e in enc[0]]
    print(f"lengths in tokens: min {min(lengths)}, median {int(np.median(lengths))}, max {max(lengths)} "
          f"(cut at --max-len {args.max_len}); vocab written to {vocab_file}")
    ids, lens, _ = next(batches(enc[0][:4], labels[0][:4], 4))
    print(f"a padded batch: ids {tuple(ids.shape)}, lengths {lens.tolist()}; row 0 = {ids[0].tolist()}")

    section("3-4. Bidirectional LSTM vs bag of words")
    epochs = min(args.epochs, 6) if args.smoke else args.epochs
    data = ((enc[0], labels[0]), (enc[1], labels[1]))
    torch.manual_seed(args.seed)
    hidden = min(args.hidden, 32) if args.smoke else args.hidden
    lstm = BiLSTMClassifier(len(vocab), args.embed, hidden).to(device)
    lstm_val, lstm_epoch_s = train(lstm, data, args, epochs, device, "LSTM")
    torch.manual_seed(args.seed)
    bow = BagOfWords(len(vocab), args.embed).to(device)
    bow_args = copy.copy(args)
    bow_args.lr = 10 * args.lr  # a linear model takes larger steps; same epochs, same batches
    bow_val, bow_epoch_s = train(bow, data, bow_args, epochs, device, "BoW ")
    with torch.no_grad():
        pad_row_zero = float(lstm.embedding.weight[0].abs().max().item())
    print(f"LSTM {sum(p.numel() for p in lstm.parameters()):,} parameters, {lstm_epoch_s:.2f} s/epoch; bag of words "
          f"{sum(p.numel() for p in bow.parameters()):,}, {bow_epoch_s:.2f} s/epoch; <pad>'s embedding row after "
          f"training: max |value| {pad_row_zero}")

    p_lstm, p_bow = predict_proba(lstm, enc[2], device), predict_proba(bow, enc[2], device)
    right_lstm, right_bow = p_lstm.argmax(1) == labels[2], p_bow.argmax(1) == labels[2]
    lstm_acc, bow_acc = right_lstm.float().mean().item(), right_bow.float().mean().item()
    metrics = {"used_real_data": int(source == "real"), "n_train": len(train_items), "n_val": len(val_items),
               "n_test": len(test_items), "vocab_size": len(vocab), "test_unk_rate": unk_rate,
               "pad_embedding_max_abs": pad_row_zero, "lstm_best_val_acc": lstm_val, "bow_best_val_acc": bow_val,
               "lstm_test_acc": lstm_acc, "bow_test_acc": bow_acc, "lstm_epoch_s": lstm_epoch_s,
               "bow_epoch_s": bow_epoch_s}
    print(f"\nTEST accuracy: bidirectional LSTM {lstm_acc:.3f}, bag of words {bow_acc:.3f}")
    if source == "generated":
        contrast_share = np.mean([it["kind"] == "contrast" for it in test_items])
        bound = 1 - contrast_share / 2  # each mirrored pair: one right at most for any function of the word counts
        print(f"{contrast_share:.0%} of the test sentences are contrast sentences whose mirror twin (same words, "
              f"opposite label) is also in the test set: ANY bag-of-words classifier scores at most "
              f"{bound:.3f} here")
        print(f"  {'kind':10}{'count':>7}{'LSTM':>8}{'BoW':>8}")
        for kind in KINDS:
            mask = torch.tensor([it["kind"] == kind for it in test_items])
            la, ba = right_lstm[mask].float().mean().item(), right_bow[mask].float().mean().item()
            print(f"  {kind:10}{int(mask.sum()):>7}{la:>8.3f}{ba:>8.3f}")
            metrics[f"lstm_{kind}_acc"], metrics[f"bow_{kind}_acc"] = la, ba
        print("negated: a linear bag of words cannot score 'not' + 'good' low and 'not' + 'bad' high at once "
              "(an XOR); contrast: the twins make order the only clue")
        metrics["bow_upper_bound"] = bound

    section("5. Predictions")
    texts = args.predict or list(DEMO)
    enc_p = [encode(tokenize(t), vocab, args.max_len) for t in texts]
    pl, pb = predict_proba(lstm, enc_p, device), predict_proba(bow, enc_p, device)
    for t, a, b in zip(texts, pl, pb):
        unknown = [w for w in tokenize(t) if w not in vocab]
        note = f"  (<unk>: {', '.join(unknown)})" if unknown else ""
        print(f"  {t!r}: LSTM P(pos) {a[1]:.3f}, P(neg) {a[0]:.3f} | bag of words P(pos) {b[1]:.3f}{note}")
    if not args.predict and source == "generated":
        metrics["demo_correct_lstm"] = int((pl.argmax(1) == torch.tensor(DEMO_LABELS)).sum())
        metrics["demo_correct_bow"] = int((pb.argmax(1) == torch.tensor(DEMO_LABELS)).sum())

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    print(f"\nmetrics written to {write_metrics(args.out_dir, record)}")

    section("What to notice")
    print("- The vocabulary comes from the training split alone; unseen or rare words become <unk>, never an error.")
    print("- padding_idx keeps <pad>'s vector at zero; packing makes the LSTM stop at each text's real end.")
    # about two standard errors of a difference of two accuracies on n_test texts: closer than that is a draw
    margin = max(0.02, 1.5 / math.sqrt(len(test_items)))
    bound_note = f" (bound {metrics['bow_upper_bound']:.3f})" if source == "generated" else ""
    if lstm_acc > bow_acc + margin:
        print(f"- Order matters: the LSTM scored {lstm_acc:.3f}, the bag of words {bow_acc:.3f}{bound_note}.")
    else:
        print(f"- Order did not pay off in this run: the LSTM scored {lstm_acc:.3f}, the bag of words "
              f"{bow_acc:.3f}{bound_note}, {'within' if lstm_acc >= bow_acc - margin else 'worse by more than'} "
              f"{margin:.3f} of it on {len(test_items)} test texts; more data or epochs, or a task where word order "
              "decides the label, would be needed to show it.")
    return metrics


if __name__ == "__main__":
    main()

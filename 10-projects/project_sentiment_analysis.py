"""Project: classify the sentiment of your own texts with a bidirectional LSTM, beside a bag-of-words baseline.

Point it at labelled texts in one of two standard layouts:
- a CSV file with a header holding `text` and `label` columns (other columns are ignored; name others with
  --text-col and --label-col), one text per row, separated by commas, semicolons, tabs or '|' (read off the header);
- the aclImdb folder layout (the Stanford Large Movie Review dataset): `ROOT/train/pos/*.txt`, `ROOT/train/neg/*.txt`
  and the same under `ROOT/test/`, one review per file (any label folder works; `unsup/` is skipped).
In both, empty texts are skipped and labels that differ only in case ('Positive', 'positive') are read as one class,
each with a printed note.
It does what a text classifier must do honestly:
- a tokenizer (lowercase, words by a regular expression, "n't" split off as "not", no stop-word removal: "not",
  "never" and "but" carry the meaning) and a vocabulary built from the training split only (`<pad>`, `<unk>`,
  `--min-freq`, `--max-vocab`), saved as JSON with the checkpoint;
- embeddings (`padding_idx`, so padding learns nothing) and a bidirectional LSTM over packed sequences (padding is
  never read), and a bag-of-words baseline (logistic regression on word counts), trained the same way and printed
  beside it: whatever the LSTM gains over the baseline comes from word order;
- a validation split taken from the training data for early stopping and the best checkpoint; the test data is read
  only by `evaluate`: accuracy, per-class and macro F1, a confusion-matrix plot and the most confidently wrong texts.

Run it:
    python 10-projects/project_sentiment_analysis.py            # the demo: writes a corpus, trains, evaluates, predicts
    python 10-projects/project_sentiment_analysis.py train --data reviews.csv --ckpt-dir ckpt   # or path/to/aclImdb
    python 10-projects/project_sentiment_analysis.py train --data IMDB.csv --text-col review --label-col sentiment
    python 10-projects/project_sentiment_analysis.py evaluate --data test.csv --ckpt-dir ckpt
    python 10-projects/project_sentiment_analysis.py predict --text "not good" --text "never boring" --ckpt-dir ckpt
(without --ckpt-dir the checkpoint goes to <out-dir>/checkpoint).

The demo takes about 6 s on an idle 2-core laptop CPU (--smoke: a few seconds). It writes a generated corpus of short
reviews as train.csv and test.csv under --data-dir, built so that word order decides the label: negation ("not
good", "never boring"), contrast ("good but boring" is negative, "boring but good" positive) and "good, not boring"
against "boring, not good", with intensifiers and fillers around them. Every contrast sentence comes with its twin,
the same words in the other order and the opposite label, so no bag-of-words model can get them all: the project
computes that ceiling (the best accuracy ANY function of word counts could reach on the test set) and prints it.
What to look for: the baseline stuck near its ceiling, the LSTM far above it; the per-construction table (the
baseline's contrast sentences near 50%); the confidently wrong examples; the probabilities for the sentences in
predict. On a GPU the LSTM trains there (cuDNN); mixed precision does not pay for a model this small.
"""

import argparse
import csv
import hashlib
import io
import json
import os
import random
import re
import shlex
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from tqdm import tqdm

PROJECT = "project_sentiment_analysis"
FORMAT_VERSION = 2          # 2: config.json holds the SHA-256 of vocab.json and of each weights file
PAD, UNK = "<pad>", "<unk>"
TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")
MODELS = ("lstm", "bow")


class ProjectError(Exception):
    """Bad data, a bad flag combination or an unusable checkpoint: a message meant for a person, one line."""


def section(title: str) -> None:
    print(f"\n== {title} ==")


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. The one place the project decides where tensors live."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp creates 0600; a saved file gets the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------------- text


def tokenize(text: str) -> list[str]:
    """Lowercase words; "isn't" -> "is", "not"; HTML line breaks (aclImdb has many) dropped; "!" and "?" kept."""
    text = text.lower().replace("<br />", " ").replace("n't", " not")
    return TOKEN_RE.findall(text)


def build_vocab(texts: list[str], min_freq: int, max_size: int) -> list[str]:
    """Index 0 is padding, 1 unknown; then the most frequent words (ties alphabetical, so the order is reproducible)."""
    counts = Counter(tok for t in texts for tok in tokenize(t))
    words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return [PAD, UNK] + words[: max_size - 2]


def encode(texts: list[str], stoi: dict) -> list[list[int]]:
    unk = stoi[UNK]
    return [[stoi.get(tok, unk) for tok in tokenize(t)] or [unk] for t in texts]  # an empty text reads as <unk>


def pad_batch(seqs: list[list[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) token ids right-padded with 0, and (B,) lengths; texts longer than max_len keep their first words."""
    seqs = [s[:max_len] for s in seqs]
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, lengths


# ------------------------------------------------------------------------------------------------------- data

# csv's default limit (131,072 characters a field) is shorter than one long review or a pasted book chapter
CSV_FIELD_LIMIT = 2**31 - 1                          # the largest a C long holds everywhere (Windows: 32 bits)
DELIMITERS = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "'|'"}
UTF8_BOM = b"\xef\xbb\xbf"                           # Excel's "CSV UTF-8" starts with one


def read_utf8(path: Path) -> str:
    """The file's text, or one ProjectError line naming where it stops being UTF-8 and how to fix that."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ProjectError(f"{path} is not a readable file ({err.__class__.__name__})") from None
    skip = len(UTF8_BOM) if raw.startswith(UTF8_BOM) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = skip + err.start                        # the offset in the file, not after the byte-order mark
        line = raw.count(b"\n", 0, at) + 1
        before = raw[raw.rfind(b"\n", 0, at) + 1: at][-30:].decode("utf-8", "replace")
        excel = "Excel: Save As 'CSV UTF-8'; " if path.suffix.lower() in (".csv", ".tsv") else ""
        raise ProjectError(f"{path} is not UTF-8: byte 0x{raw[at]:02x} on line {line} (byte offset {at}, after "
                           f"{before!r}) is not valid there; save the file as UTF-8 ({excel}a latin-1 file: "
                           "iconv -f latin1 -t utf-8 OLD > NEW)") from None


def header_delimiter(text: str) -> str:
    """The delimiter that splits the header into the most columns (',' on a tie): the header alone decides, so
    commas inside the texts of a semicolon- or tab-separated file cannot mislead it."""
    first = text.split("\n", 1)[0]
    return max(DELIMITERS, key=lambda d: len(next(csv.reader([first], delimiter=d), [])))


def find_column(header: list[str], name: str) -> int | None:
    """The column called `name`, ignoring case and surrounding spaces; None if there is none."""
    names = [h.strip().casefold() for h in header]
    return names.index(name.strip().casefold()) if name.strip().casefold() in names else None


def guess_columns(header: list[str], rows: list[list[str]]) -> tuple[str, str] | None:
    """For the refusal's example: the column with the longest values as the text, the one of the others with the
    fewest distinct values as the label."""
    rows = [r for r in rows[:200] if len(r) == len(header)]
    if len(header) < 2 or not rows:
        return None
    t = max(range(len(header)), key=lambda j: sum(len(r[j]) for r in rows))
    lab = min((j for j in range(len(header)) if j != t), key=lambda j: len({r[j] for r in rows}))
    return header[t].strip(), header[lab].strip()


def read_csv(path: Path, text_col: str = "text", label_col: str = "label") -> tuple[list[str], list[str], list[str]]:
    """Texts, labels and where each row starts ("line N" of the file), from a CSV whose delimiter (',', ';', tab or
    '|') is read off its header."""
    content = read_utf8(path)
    delimiter = header_delimiter(content)
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    rows, starts = [], []                               # each row, and the line of the file it starts on
    old_limit = csv.field_size_limit(CSV_FIELD_LIMIT)   # a process-wide setting: put back below
    try:
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            rows.append(row)
            starts.append(start)
    except csv.Error as err:
        raise ProjectError(f"{path} line {reader.line_num}: not a readable CSV file ({err})") from None
    finally:
        csv.field_size_limit(old_limit)
    if not rows:
        raise ProjectError(f"{path} is empty (a header `text,label` and one row per text are expected)")
    header = rows[0]
    ti, li = find_column(header, text_col), find_column(header, label_col)
    if ti is None or li is None or ti == li:
        missing = " nor ".join(f"{name!r} ({flag})" for flag, name, i in (("--text-col", text_col, ti),
                                                                          ("--label-col", label_col, li)) if i is None)
        why = f"no column {missing}" if missing else "the text and the label must be two different columns"
        guess = guess_columns(header, rows[1:])
        example = f", here perhaps --text-col {shlex.quote(guess[0])} --label-col {shlex.quote(guess[1])}" \
            if guess else ""
        raise ProjectError(f"{path}: {why} in its header {header} (split at {DELIMITERS[delimiter]}): name the "
                           f"text and label columns with --text-col and --label-col{example}")
    texts, labels, where = [], [], []
    for line_no, row in zip(starts[1:], rows[1:]):
        if not row:
            continue
        if len(row) != len(header):
            raise ProjectError(f"{path} line {line_no}: {len(row)} fields, the header has {len(header)} "
                               f"(columns separated by {DELIMITERS[delimiter]}: quote texts that hold them)")
        if not row[li].strip():
            raise ProjectError(f"{path} line {line_no}: the label is empty (label the text or delete the row)")
        texts.append(row[ti])
        labels.append(row[li].strip())
        where.append(f"line {line_no}")
    if delimiter != ",":
        print(f"{path}: columns separated by {DELIMITERS[delimiter]} (read off the header)")
    return texts, labels, where


def read_folder(root: Path) -> tuple[list[str], list[str], list[str]]:
    """aclImdb layout: one folder per label (pos/, neg/), one .txt per text; unsup/ (unlabelled) is skipped."""
    texts, labels, where = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "unsup"):
        for f in sorted(folder.glob("*.txt")):
            texts.append(read_utf8(f))
            labels.append(folder.name)
            where.append(f"{folder.name}/{f.name}")
    return texts, labels, where


def merge_spellings(labels: list[str], where: list[str], path: Path) -> list[str]:
    """Labels that differ only in case ('Positive', 'positive') are one class, spelt as most of its texts spell it
    (the first seen on a tie); a note names each spelling and where it first appears."""
    groups: dict[str, dict[str, list]] = {}
    for label, w in zip(labels, where):
        groups.setdefault(label.casefold(), {}).setdefault(label, [0, w])[0] += 1
    rename = {}
    for spellings in groups.values():
        if len(spellings) > 1:
            canon = max(spellings, key=lambda s: spellings[s][0])
            rename.update({s: canon for s in spellings})
            seen = ", ".join(f"{s!r} ({n} texts, first on {w})" for s, (n, w) in spellings.items())
            print(f"note: {path}: labels {seen} differ only in case: read as one class {canon!r}")
    return [rename.get(label, label) for label in labels]


def read_texts(path: Path, split: str, text_col: str = "text", label_col: str = "label") \
        -> tuple[list[str], list[str]]:
    """A CSV file, an aclImdb root (its `split`/ folder is read) or one split folder holding the label folders.
    Rows with an empty text are skipped (a note counts them); labels differing only in case are merged."""
    if path.is_file():
        texts, labels, where = read_csv(path, text_col, label_col)
    elif path.is_dir():
        root = path / split if (path / split).is_dir() else path
        texts, labels, where = read_folder(root)
        if not texts:
            raise ProjectError(f"{root} holds no labelled texts: expected label folders such as pos/ and neg/ "
                               "with one .txt file per text (the aclImdb layout), or a CSV file")
    else:
        raise ProjectError(f"no such file or folder: {path}")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        shown = ", ".join(where[i] for i in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        print(f"note: {path}: skipped {len(empty)} row{'s' * (len(empty) > 1)} with an empty text ({shown})")
        keep = [i for i, t in enumerate(texts) if t.strip()]
        texts, labels, where = [texts[i] for i in keep], [labels[i] for i in keep], [where[i] for i in keep]
    if not texts:
        raise ProjectError(f"{path} holds no texts")
    return texts, merge_spellings(labels, where, path)


def stratified_split(labels: list[str], frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, validation): `frac` of each class to validation, chosen with the seed."""
    rng = random.Random(seed)
    train, val = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(idx)
        k = max(1, int(round(len(idx) * frac)))
        val += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(val)


# ----------------------------------------------------------------------------------------------------- models


class LSTMClassifier(nn.Module):
    """Embeddings -> bidirectional LSTM over packed sequences -> the two final states, concatenated -> logits."""

    def __init__(self, vocab_size: int, n_classes: int, embed_dim: int, hidden: int, dropout: float = 0.3):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)   # the <pad> row stays zero, gets no gradient
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, n_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)                                                  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)                                        # h (2, B, H): forward last, backward first
        h = torch.cat([h[0], h[1]], dim=1)                                   # (B, 2H)
        return self.head(self.drop(h))                                       # (B, C)


class BagOfWords(nn.Module):
    """Logistic regression on word counts: the same words in any order give the same prediction."""

    def __init__(self, vocab_size: int, n_classes: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.linear = nn.Linear(vocab_size, n_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(ids.shape[0], self.vocab_size, device=ids.device)   # (B, V)
        counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=counts.dtype))
        counts[:, 0] = 0                                                     # padding is not a word
        return self.linear(torch.log1p(counts))                              # (B, C)


def make_model(name: str, config: dict) -> nn.Module:
    v, c = len(config["vocab"]), len(config["classes"])
    if name == "lstm":
        return LSTMClassifier(v, c, config["embed_dim"], config["hidden"])
    return BagOfWords(v, c)


def batches(seqs, y, batch_size: int, max_len: int, gen: torch.Generator | None = None):
    order = torch.randperm(len(seqs), generator=gen).tolist() if gen is not None else range(len(seqs))
    order = list(order)
    for i in range(0, len(order), batch_size):
        idx = order[i: i + batch_size]
        ids, lengths = pad_batch([seqs[j] for j in idx], max_len)
        yield ids, lengths, (y[idx] if y is not None else None)


def predict_proba(model: nn.Module, seqs, device, max_len: int, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for ids, lengths, _ in batches(seqs, None, batch_size, max_len):
            out.append(torch.softmax(model(ids.to(device), lengths).float(), dim=1).cpu())
    return torch.cat(out).numpy()                                            # (N, C)


# ----------------------------------------------------------------------------------------------- checkpoints


CONFIG_KEYS = {"project": str, "format_version": int, "data": str, "classes": list, "vocab_size": int,
               "embed_dim": int, "hidden": int, "max_len": int, "n_train": int, "n_val": int, "vocab_sha256": str,
               "weights_sha256": dict}


def load_config(ckpt_dir: Path) -> dict:
    path = ckpt_dir / "config.json"
    if not path.is_file():
        raise ProjectError(f"no checkpoint in {ckpt_dir} (config.json is missing): run `train` first")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProjectError(f"{path} is not valid JSON ({err.__class__.__name__}): the checkpoint is damaged") from None
    if not isinstance(config, dict):
        raise ProjectError(f"{path} holds a JSON {type(config).__name__}, not a checkpoint config (an object)")
    if config.get("project") != PROJECT:
        raise ProjectError(f"{ckpt_dir} holds a checkpoint of {config.get('project')!r}, not {PROJECT}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ProjectError(f"{ckpt_dir}: checkpoint format {config.get('format_version')!r}, this script reads "
                           f"{FORMAT_VERSION} (train again with this script)")
    bad = [k for k, t in CONFIG_KEYS.items() if not isinstance(config.get(k), t) or isinstance(config.get(k), bool)]
    if bad:
        raise ProjectError(f"{path} lacks or mistypes {', '.join(bad)}: the checkpoint is damaged")
    vocab_path = ckpt_dir / "vocab.json"
    try:
        vocab_text = vocab_path.read_text(encoding="utf-8")
        config["vocab"] = json.loads(vocab_text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProjectError(f"{vocab_path} is missing or damaged ({err.__class__.__name__})") from None
    if not isinstance(config["vocab"], list) or len(config["vocab"]) != config["vocab_size"] \
            or config["vocab"][:2] != [PAD, UNK]:
        n = len(config["vocab"]) if isinstance(config["vocab"], list) else "no"
        raise ProjectError(f"{vocab_path} does not match config.json (vocabulary of {n} words, "
                           f"the model was trained with {config['vocab_size']})")
    if hashlib.sha256(vocab_text.encode("utf-8")).hexdigest() != config["vocab_sha256"]:
        raise ProjectError(f"{vocab_path} does not match config.json (another training run wrote it; was a train "
                           "into this folder interrupted?): train again")
    return config


def load_model(ckpt_dir: Path, name: str, config: dict, device) -> nn.Module:
    model = make_model(name, config)
    path = ckpt_dir / f"{name}.pt"
    if path.is_file() and sha256_file(path) != config["weights_sha256"].get(name):
        raise ProjectError(f"{path} does not match config.json (damaged, or written by another training run: was a "
                           "train into this folder interrupted?): train again")
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except FileNotFoundError:
        raise ProjectError(f"{path} is missing: the checkpoint is incomplete") from None
    except Exception as err:  # truncated file, another model's weights: one line, not a traceback
        raise ProjectError(f"{path} cannot be loaded into this model ({str(err).splitlines()[0][:120]})") from None
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------------- train


def train(args, device, data: Path, ckpt_dir: Path) -> dict:
    state_path = ckpt_dir / "train_state.pt"
    saved = None
    if args.resume:
        if not state_path.is_file():
            raise ProjectError(f"--resume: no {state_path} to resume from (train without --resume first)")
        saved = load_train_state(state_path)
    stored = json.loads(saved["config"]) if saved is not None else {}   # --resume: the columns it was trained on
    args = argparse.Namespace(**{**vars(args), "text_col": args.text_col or stored.get("text_col") or "text",
                                 "label_col": args.label_col or stored.get("label_col") or "label"})
    texts, labels = read_texts(data, "train", args.text_col, args.label_col)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ProjectError(f"{data}: every text has the label {classes[0]!r}; at least two classes are needed")
    counts = Counter(labels)
    rare = sorted(c for c in classes if counts[c] < 2)
    if rare:
        raise ProjectError(f"{data}: class {rare[0]!r} has a single text; each class needs at least two (one to "
                           "train on, one to validate) - add texts or drop the class")
    tr, va = stratified_split(labels, args.val_frac, args.seed)
    if len(tr) < args.batch_size:
        fits = 2 ** (len(tr).bit_length() - 1)              # the largest power of two that fits
        raise ProjectError(f"{data}: {len(tr)} training texts after the validation split, fewer than --batch-size "
                           f"{args.batch_size}: use --batch-size {fits} (or fewer), or add texts")
    vocab = build_vocab([texts[i] for i in tr], args.min_freq, args.max_vocab)   # the training split only
    stoi = {w: i for i, w in enumerate(vocab)}
    config = {"project": PROJECT, "format_version": FORMAT_VERSION, "data": str(data), "classes": classes,
              "vocab_size": len(vocab), "min_freq": args.min_freq, "max_vocab": args.max_vocab,
              "embed_dim": args.embed_dim, "hidden": args.hidden, "max_len": args.max_len,
              "n_train": len(tr), "n_val": len(va), "text_col": args.text_col, "label_col": args.label_col,
              "vocab_sha256": hashlib.sha256(json.dumps(vocab).encode("utf-8")).hexdigest()}  # as save_best writes it
    seqs = encode(texts, stoi)
    y = torch.tensor([classes.index(lab) for lab in labels])
    known = sum(t != stoi[UNK] for i in tr for t in seqs[i]) / max(1, sum(len(seqs[i]) for i in tr))
    print(f"{data}: {len(texts)} texts, classes {classes}; {len(tr)} train, {len(va)} validation "
          f"(stratified, seed {args.seed}); vocabulary {len(vocab)} words from the training split "
          f"({known:.1%} of training tokens known)")

    if saved is not None:
        # the vocabulary itself, not the --data path: the same file may be named another way
        for key in ("classes", "vocab_size", "embed_dim", "hidden", "n_train", "n_val"):
            if stored.get(key) != config.get(key):
                raise ProjectError(f"--resume: the checkpoint was trained with {key}={stored.get(key)!r}, this run "
                                   f"has {config.get(key)!r}; use a new --ckpt-dir to start afresh")
        if stored.get("vocab_sha256") != config["vocab_sha256"]:
            raise ProjectError("--resume: this run's training texts give another vocabulary than the checkpoint's; "
                               "use a new --ckpt-dir to start afresh")
    config_out = dict(config)
    # Nothing is written yet: config.json, vocab.json and the weights are written together when a model first improves
    # (save_best), so an interrupted run never pairs this vocabulary with the old weights.
    config["vocab"] = vocab
    config["weights_sha256"] = dict(saved["weights_sha256"]) if saved is not None else {}

    results, everything = {}, {"project": PROJECT, "format_version": FORMAT_VERSION, "config": json.dumps(config_out),
                               "weights_sha256": config["weights_sha256"]}
    if saved is not None:
        everything.update({k: v for k, v in saved.items() if k in MODELS})
    for name in MODELS:
        results[name] = fit(name, args, device, config, seqs, y, tr, va, ckpt_dir, everything, state_path)
    return results


def load_train_state(path: Path) -> dict:
    """train_state.pt of THIS project with the keys --resume reads, or one ProjectError line."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ProjectError(f"--resume: {path} is unreadable ({err.__class__.__name__})") from None
    if not isinstance(saved, dict) or saved.get("project") != PROJECT:
        who = saved.get("project") if isinstance(saved, dict) else None
        why = (f" (it belongs to {who})" if isinstance(who, str) else
               " (an earlier version of this script wrote it, before train states named their project)"
               if isinstance(saved, dict) and "state" in saved and "config" in saved else "")
        raise ProjectError(f"--resume: {path} is not a train state of {PROJECT}{why}; use a new --ckpt-dir to start "
                           "afresh")
    if saved.get("format_version") != FORMAT_VERSION:
        raise ProjectError(f"--resume: {path} has format {saved.get('format_version')!r}, this script reads "
                           f"{FORMAT_VERSION}; use a new --ckpt-dir to start afresh")
    try:
        ok = isinstance(json.loads(saved["config"]), dict) and isinstance(saved["weights_sha256"], dict)
        for name in MODELS:
            if name in saved:
                m = saved[name]
                ok = ok and isinstance(m["model"], dict) and isinstance(m["optimizer"], dict) \
                    and isinstance(m["loader_rng"], torch.Tensor) and isinstance(m["torch_rng"], torch.Tensor) \
                    and isinstance(json.loads(m["state"]), dict)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ProjectError(f"--resume: {path} lacks the keys a train state holds: the file is damaged")
    return saved


def save_best(ckpt_dir: Path, name: str, model: nn.Module, config: dict) -> None:
    """The weights, then vocab.json, then config.json holding the SHA-256 of both: load_config and load_model refuse a
    folder whose files come from different runs (a train interrupted between two writes)."""
    atomic_write(ckpt_dir / f"{name}.pt", lambda p: torch.save(model.state_dict(), p))
    config["weights_sha256"][name] = sha256_file(ckpt_dir / f"{name}.pt")
    vocab_text = json.dumps(config["vocab"])
    atomic_write(ckpt_dir / "vocab.json", lambda p: p.write_text(vocab_text, encoding="utf-8"))
    out = {k: v for k, v in config.items() if k != "vocab"}
    out["vocab_sha256"] = hashlib.sha256(vocab_text.encode("utf-8")).hexdigest()
    atomic_write(ckpt_dir / "config.json", lambda p: p.write_text(json.dumps(out, indent=2), encoding="utf-8"))


def fit(name, args, device, config, seqs, y, tr, va, ckpt_dir, everything, state_path) -> dict:
    """One model's training loop: Adam, validation accuracy each epoch, best kept, early stopping, resumable."""
    torch.manual_seed(args.seed)
    model = make_model(name, config).to(device)
    lr = args.lr if name == "lstm" else args.lr * 10          # a linear model on counts takes bigger steps well
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(args.seed)
    state = {"epoch": 0, "best_acc": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
    if name in everything:
        saved = everything[name]
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        gen.set_state(saved["loader_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state = json.loads(saved["state"])
        if state["epoch"] >= args.epochs or state["bad_epochs"] >= args.patience:
            why = "early stopping had already ended it" if state["bad_epochs"] >= args.patience else \
                f"it already ran {state['epoch']} of --epochs {args.epochs}"
            print(f"{name}: --resume: nothing to do, {why} (best epoch {state['best_epoch']})")
            return {"epochs_run": 0, "best_epoch": state["best_epoch"], "best_val_acc": state["best_acc"],
                    "train_time_s": 0.0, "history": state["history"]}
        print(f"{name}: --resume: continuing after epoch {state['epoch']}")
    tr_seqs, va_seqs = [seqs[i] for i in tr], [seqs[i] for i in va]
    y_tr, y_va = y[tr], y[va].numpy()
    loss_fn = nn.CrossEntropyLoss()
    start, first_epoch = time.perf_counter(), state["epoch"] + 1
    label = {"lstm": "BiLSTM", "bow": "bag-of-words"}[name]
    bar = tqdm(range(first_epoch, args.epochs + 1), desc=label, unit="epoch", leave=False,
               disable=not sys.stderr.isatty(), file=sys.stderr, dynamic_ncols=True)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for ids, lengths, yb in batches(tr_seqs, y_tr, args.batch_size, config["max_len"], gen):
            logits = model(ids.to(device), lengths)
            loss = loss_fn(logits, yb.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            total, count = total + loss.item() * len(yb), count + len(yb)
        acc = float((predict_proba(model, va_seqs, device, config["max_len"]).argmax(1) == y_va).mean())
        state["epoch"] = epoch
        state["history"].append([total / count, acc])
        if acc > state["best_acc"]:
            state.update(best_acc=acc, best_epoch=epoch, bad_epochs=0)
            save_best(ckpt_dir, name, model, config)
        else:
            state["bad_epochs"] += 1
        bar.set_postfix(loss=f"{total / count:.4f}", val_acc=f"{acc:.3f}")
        if bar.disable:  # no terminal: one line per epoch instead of the bar
            print(f"  {label:<12} epoch {epoch:>2}/{args.epochs}: train loss {total / count:.4f}  validation "
                  f"accuracy {acc:.3f}{'  (best, saved)' if state['best_epoch'] == epoch else ''}")
        everything[name] = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "loader_rng": gen.get_state(), "torch_rng": torch.get_rng_state(),
                            "state": json.dumps(state)}
        atomic_write(state_path, lambda p: torch.save(everything, p))
        if state["bad_epochs"] >= args.patience:
            print(f"  {label}: early stopping after epoch {epoch} (no better validation accuracy for "
                  f"{args.patience} epochs)")
            break
    bar.close()
    seconds = time.perf_counter() - start
    print(f"{label}: best validation accuracy {state['best_acc']:.3f} at epoch {state['best_epoch']} "
          f"({seconds:.1f} s)")
    return {"epochs_run": state["epoch"] - first_epoch + 1, "best_epoch": state["best_epoch"],
            "best_val_acc": state["best_acc"], "train_time_s": seconds, "history": state["history"]}


# ------------------------------------------------------------------------------------------------- evaluate


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    cm = np.zeros((n, n), dtype=np.int64)                 # rows: true class, columns: predicted class
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(n), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(n), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=precision + recall > 0)
    return f1, cm


def bow_ceiling(seqs: list[list[int]], y: np.ndarray) -> float:
    """The best accuracy ANY function of word counts can reach here: texts with the same multiset of words must get
    the same prediction, so each group of such texts scores at most its majority label's share."""
    groups: dict[tuple, Counter] = {}
    for s, label in zip(seqs, y):
        groups.setdefault(tuple(sorted(Counter(s).items())), Counter())[int(label)] += 1
    return sum(max(c.values()) for c in groups.values()) / len(seqs)


def evaluate(args, device, data: Path, ckpt_dir: Path, out_dir: Path, n_wrong: int = 5) -> dict:
    config = load_config(ckpt_dir)
    stored = {k: config[k] for k in ("text_col", "label_col") if isinstance(config.get(k), str)}  # absent before
    text_col = args.text_col or stored.get("text_col", "text")          # the flags, else the columns train read
    label_col = args.label_col or stored.get("label_col", "label")
    texts, labels = read_texts(data, "test", text_col, label_col)
    classes = config["classes"]
    labels = match_classes(labels, classes, data)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        shown = ", ".join(repr(textwrap.shorten(u, 40, placeholder="...")) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        swapped = " (are --text-col and --label-col the right way round?)" if len(unknown) > 5 else ""
        raise ProjectError(f"{data} has {len(unknown)} label{'s' * (len(unknown) > 1)} the checkpoint does not know: "
                           f"{shown}{more}; it was trained on {classes}{swapped}")
    models = {name: load_model(ckpt_dir, name, config, device) for name in MODELS}
    stoi = {w: i for i, w in enumerate(config["vocab"])}
    seqs = encode(texts, stoi)
    y = np.array([classes.index(lab) for lab in labels])
    print(f"{data}: {len(texts)} texts, read once, here, for the final scores")
    result, probs = {"n": len(texts), "bow_ceiling": bow_ceiling(seqs, y)}, {}
    print(f"  {'model':<14}{'accuracy':>10}{'macro F1':>10}  " + "  ".join(f"F1 {c}" for c in classes))
    for name, model in models.items():
        p = predict_proba(model, seqs, device, config["max_len"])
        probs[name] = p
        f1, cm = f1_scores(y, p.argmax(1), len(classes))
        result[name] = {"accuracy": float((p.argmax(1) == y).mean()), "macro_f1": float(f1.mean()),
                        "f1": {c: float(v) for c, v in zip(classes, f1)}, "confusion": cm}
        print(f"  {name:<14}{result[name]['accuracy']:>10.3f}{result[name]['macro_f1']:>10.3f}  "
              + "  ".join(f"{v:>{len(c) + 3}.3f}" for c, v in zip(classes, f1)))
    print(f"  the best any bag-of-words model could score on these texts: {result['bow_ceiling']:.3f} "
          "(texts with the same words in another order share one prediction)")
    path = out_dir / "confusion_matrix.png"
    plot_confusion(path, classes, {n: result[n]["confusion"] for n in MODELS})
    print(f"  confusion matrices: {path}")
    p = probs["lstm"]
    wrong = np.flatnonzero(p.argmax(1) != y)
    wrong = wrong[np.argsort(-p[wrong].max(1), kind="stable")][:n_wrong]
    print(f"the LSTM's most confidently wrong texts ({len(np.flatnonzero(p.argmax(1) != y))} wrong in all):")
    for i in wrong:
        text = " ".join(texts[i].split())
        print(f"  {p[i].max():.3f} {classes[p[i].argmax()]!r} (true {labels[i]!r}): {text[:100]}")
    if not len(wrong):
        print("  none: every text is classified correctly")
    result["probs"] = probs
    result["y"] = y
    return result


def match_classes(labels: list[str], classes: list[str], data: Path) -> list[str]:
    """A label that is not one of the checkpoint's classes but differs from exactly one only in case is that class."""
    folded = Counter(c.casefold() for c in classes)
    by_fold = {c.casefold(): c for c in classes if folded[c.casefold()] == 1}
    rename = {lab: by_fold[lab.casefold()] for lab in set(labels) if lab not in classes and lab.casefold() in by_fold}
    if rename:
        pairs = ", ".join(f"{a!r} as {b!r}" for a, b in sorted(rename.items()))
        print(f"note: {data}: labels read as the checkpoint's classes that differ only in case: {pairs}")
    return [rename.get(lab, lab) for lab in labels]


def plot_confusion(path: Path, classes: list[str], matrices: dict) -> None:
    fig = Figure(figsize=(4.2 * len(matrices), 4))
    titles = {"lstm": "BiLSTM", "bow": "bag-of-words baseline"}
    for k, (name, cm) in enumerate(matrices.items()):
        ax = fig.add_subplot(1, len(matrices), k + 1)
        ax.imshow(cm, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
               xlabel="predicted label", ylabel="true label", title=f"{titles[name]}: test counts")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


# -------------------------------------------------------------------------------------------------- predict


def predict(args, device, texts: list[str], ckpt_dir: Path, output: Path) -> dict:
    config = load_config(ckpt_dir)
    models = {name: load_model(ckpt_dir, name, config, device) for name in MODELS}
    stoi = {w: i for i, w in enumerate(config["vocab"])}
    seqs = encode(texts, stoi)
    p = predict_proba(models["lstm"], seqs, device, config["max_len"])
    pb = predict_proba(models["bow"], seqs, device, config["max_len"])
    classes = config["classes"]

    def write(path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "predicted", *(f"p_{c}" for c in classes), "baseline_predicted"])
            for t, row, rb in zip(texts, p, pb):
                w.writerow([t, classes[row.argmax()], *(f"{v:.4f}" for v in row), classes[rb.argmax()]])

    atomic_write(output, write)
    for t, row, rb in zip(texts, p, pb):
        probs = ", ".join(f"{c} {v:.3f}" for c, v in zip(classes, row))
        print(f"  {classes[row.argmax()]:<8} ({probs}; baseline says {classes[rb.argmax()]}): {t[:80]}")
    print(f"written: {output}")
    return {"texts": len(texts), "probs": p}


def read_lines(path: Path) -> list[str]:
    lines = [line.strip() for line in read_utf8(path).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ProjectError(f"{path} holds no sentences (one per line is expected)")
    return lines


# ----------------------------------------------------------------------------------------------------- demo

POSITIVE = ["good", "great", "fun", "moving", "brilliant", "charming", "clever", "beautiful"]
NEGATIVE = ["boring", "bad", "dull", "awful", "slow", "weak", "silly", "predictable"]
SUBJECTS = ["the movie", "this film", "the plot", "the acting", "the ending", "the script", "the cast", "the music"]
OPENERS = ["", "", "honestly ", "overall ", "i thought ", "to be fair ", "in the end "]
INTENSIFIERS = ["", "", "very ", "really ", "quite ", "truly ", "rather "]
KINDS = ("plain", "negation", "contrast", "not_contrast")


def demo_review(rng: random.Random) -> list[tuple[str, str, str]]:
    """One review (text, label, construction), or two for the constructions where word order decides: "good but
    boring" comes with its twin "boring but good", the same words in the other order with the opposite label."""
    kind = rng.choices(KINDS, weights=(3, 1, 1, 1))[0]      # plain reviews are the most common, as in real ones
    pos, neg = rng.choice(POSITIVE), rng.choice(NEGATIVE)
    s, o, i = rng.choice(SUBJECTS), rng.choice(OPENERS), rng.choice(INTENSIFIERS)
    verb = rng.choice(["was", "is"])
    a, b = (pos, neg) if rng.random() < 0.5 else (neg, pos)
    name = {True: "pos", False: "neg"}
    if kind == "plain":
        return [(f"{o}{s} {verb} {i}{a}", name[a in POSITIVE], kind)]
    if kind == "negation":                                     # "not good", "never boring"
        return [(f"{o}{s} {verb} {rng.choice(['not', 'never'])} {i}{a}", name[a in NEGATIVE], kind)]
    if kind == "contrast":                                     # "good but boring": the part after "but" wins
        return [(f"{o}{s} {verb} {i}{x} but {y}", name[y in POSITIVE], kind) for x, y in ((a, b), (b, a))]
    return [(f"{o}{s} {verb} {i}{x}, not {y}", name[x in POSITIVE], kind)   # "good, not boring": the first wins
            for x, y in ((a, b), (b, a))]


def write_demo_csv(path: Path, n: int, rng: random.Random) -> list[str]:
    rows = []
    while len(rows) < n:
        rows += demo_review(rng)
    rows = rows[:n]

    def write(p: Path) -> None:
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(r[:2] for r in rows)

    atomic_write(path, write)
    return [r[2] for r in rows]


def plot_history(path: Path, trained: dict) -> None:
    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, label in (("lstm", "BiLSTM"), ("bow", "bag-of-words")):
        h = np.array(trained[name]["history"])
        ax1.plot(range(1, len(h) + 1), h[:, 0], marker="o", label=label)
        ax2.plot(range(1, len(h) + 1), h[:, 1], marker="o", label=label)
    ax1.set(title="training loss per epoch", xlabel="epoch", ylabel="cross-entropy")
    ax2.set(title="validation accuracy per epoch", xlabel="epoch", ylabel="accuracy")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_demo(args, device) -> dict:
    out, demo_dir = args.out_dir, args.data_dir / "sentiment"
    n_train, n_test = (1600, 600) if args.smoke else (4000, 1500)
    if args.smoke:
        args.epochs = min(args.epochs, 8)
    section("Demo data, written in the CSV layout your own data uses")
    rng = random.Random(args.seed)
    write_demo_csv(demo_dir / "train.csv", n_train, rng)
    kinds = write_demo_csv(demo_dir / "test.csv", n_test, rng)
    print(f"{demo_dir / 'train.csv'}: {n_train} generated reviews; {demo_dir / 'test.csv'}: {n_test} more")
    for kind, example in zip(KINDS, ["the plot was really clever", "this film is never boring",
                                     "the acting was brilliant but slow", "the music is dull, not beautiful"]):
        print(f"  {kind:<13} e.g. {example!r}")
    ckpt = out / "checkpoint"
    section("Train: BiLSTM, then the bag-of-words baseline, the same loop")
    trained = train(args, device, demo_dir / "train.csv", ckpt)
    plot_history(out / "training.png", trained)
    print(f"training curves: {out / 'training.png'}")
    section("Evaluate on test.csv")
    ev = evaluate(args, device, demo_dir / "test.csv", ckpt, out)
    print("accuracy per construction (test):")
    print(f"  {'construction':<14}{'texts':>6}{'BiLSTM':>8}{'bag-of-words':>14}")
    kinds_arr = np.array(kinds)
    per_kind = {}
    for kind in KINDS:
        m = kinds_arr == kind
        accs = [float((ev["probs"][n][m].argmax(1) == ev["y"][m]).mean()) for n in MODELS]
        per_kind[kind] = accs
        print(f"  {kind:<14}{int(m.sum()):>6}{accs[0]:>8.3f}{accs[1]:>14.3f}")
    section("Predict sentences given on the command line")
    sentences = ["the movie was not good", "the movie was never boring", "the acting was good but the plot was slow",
                 "the plot was slow but the acting was good", "the script was clever, not predictable"]
    pr = predict(args, device, sentences, ckpt, out / "predictions.csv")
    metrics = {
        "lstm_test_accuracy": ev["lstm"]["accuracy"], "bow_test_accuracy": ev["bow"]["accuracy"],
        "lstm_macro_f1": ev["lstm"]["macro_f1"], "bow_macro_f1": ev["bow"]["macro_f1"],
        "bow_ceiling": ev["bow_ceiling"], "lstm_minus_bow": ev["lstm"]["accuracy"] - ev["bow"]["accuracy"],
        "lstm_best_val_acc": trained["lstm"]["best_val_acc"], "bow_best_val_acc": trained["bow"]["best_val_acc"],
        "lstm_epochs_run": trained["lstm"]["epochs_run"], "bow_epochs_run": trained["bow"]["epochs_run"],
        "lstm_train_time_s": trained["lstm"]["train_time_s"], "bow_train_time_s": trained["bow"]["train_time_s"],
        "vocab_size": len(load_config(ckpt)["vocab"]), "predicted_texts": pr["texts"],
        "predict_not_good_p_neg": float(pr["probs"][0][0]), "predict_never_boring_p_pos": float(pr["probs"][1][1]),
    }
    for kind, (a_lstm, a_bow) in per_kind.items():
        metrics[f"lstm_acc_{kind}"], metrics[f"bow_acc_{kind}"] = a_lstm, a_bow
    section("What to notice")
    print(f"- The BiLSTM scores {metrics['lstm_test_accuracy']:.3f} on the test texts, the bag-of-words baseline "
          f"{metrics['bow_test_accuracy']:.3f}; no bag-of-words model could beat {metrics['bow_ceiling']:.3f} here.")
    print(f"- Contrast sentences: BiLSTM {metrics['lstm_acc_contrast']:.3f}, baseline "
          f"{metrics['bow_acc_contrast']:.3f} (\"good but boring\" and \"boring but good\" look the same to it).")
    print("- The vocabulary came from the training split only and is saved beside the weights (vocab.json): predict "
          "needs it to turn words into the same ids.")
    section("Your own data: the same three steps")
    me = "python 10-projects/project_sentiment_analysis.py"
    print(f"{me} train    --data reviews.csv --ckpt-dir ckpt          # or --data path/to/aclImdb")
    print(f"{me} evaluate --data test.csv --ckpt-dir ckpt             # or the same aclImdb root (reads test/)")
    print(f"{me} predict  --ckpt-dir ckpt --text \"not bad at all\" --file sentences.txt --output predictions.csv")
    return metrics


# -------------------------------------------------------------------------------------------------- the CLI


def sub_flag(parser: argparse.ArgumentParser, sub: bool):
    """add_argument for a flag both the main parser and a subcommand take. After the subcommand it has no default
    (SUPPRESS), so `--epochs 3 train` keeps the 3; its help still names the default, once."""
    def add(*names, default, help, **kw):
        if sub:
            return parser.add_argument(*names, default=argparse.SUPPRESS, help=f"{help} (default: {default})", **kw)
        return parser.add_argument(*names, default=default, help=help, **kw)
    return add


def add_common(parser: argparse.ArgumentParser, sub: bool) -> None:
    """The common flags, on the main parser and (without defaults) after each subcommand too."""
    add = sub_flag(parser, sub)
    add("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
        help="where to train; auto picks cuda, then mps, then cpu")
    add("--seed", type=int, default=0, help="seed for torch, numpy and random")
    add("--smoke", action="store_true", default=False, help="the demo in tiny form: a few seconds on a CPU")
    add("--out-dir", type=Path, default=Path("outputs/10-projects/project_sentiment_analysis"),
        help="where metrics.json, plots, predictions and the default checkpoint go")
    add("--data-dir", type=Path, default=Path("data"), help="where the demo writes its CSV files")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"must be between 0 and 0.5, got {value}")
    return value


TRAIN_DEFAULTS = {"epochs": 12, "patience": 3, "batch_size": 32, "lr": 3e-3, "embed_dim": 32, "hidden": 64,
                  "min_freq": 2, "max_vocab": 20000, "max_len": 400, "val_frac": 0.15, "resume": False,
                  "text_col": "text", "label_col": "label"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter, minus "(default: None)" after a help that says the default itself."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, []) else super()._get_help_string(action)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_common(parser, sub=False)
    subs = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict}",
                                 help="with no command: the whole demo")
    fmt = HelpFormatter
    p_train = subs.add_parser("train", help="train the BiLSTM and the baseline, keep the best", formatter_class=fmt)
    p_eval = subs.add_parser("evaluate", help="accuracy, F1, confusion matrix, confident mistakes", formatter_class=fmt)
    p_pred = subs.add_parser("predict", help="classify sentences, write a CSV", formatter_class=fmt)
    for p in (p_train, p_eval, p_pred):
        add_common(p, sub=True)
        p.add_argument("--ckpt-dir", type=Path, default=None, help="checkpoint folder (default: <out-dir>/checkpoint)")
    for p in (p_train, p_eval):
        p.add_argument("--data", type=Path, required=True,
                       help="a CSV with text and label columns (see --text-col, --label-col), separated by commas, "
                            "semicolons, tabs or '|' (read off its header), or an aclImdb-style folder (train/ and "
                            "test/ holding pos/ and neg/ with one .txt per text)")
    p_train.add_argument("--text-col", default=None, help="the CSV column holding the texts, in any case (default: "
                         "text; with --resume, the checkpoint's)")
    p_train.add_argument("--label-col", default=None, help="the CSV column holding the labels, in any case (default: "
                         "label; with --resume, the checkpoint's)")
    p_eval.add_argument("--text-col", default=None,
                        help="the CSV column holding the texts (default: the one the checkpoint was trained with)")
    p_eval.add_argument("--label-col", default=None,
                        help="the CSV column holding the labels (default: the one the checkpoint was trained with)")
    p_pred.add_argument("--text", action="append", default=[], help="a sentence to classify (repeatable)")
    p_pred.add_argument("--file", type=Path, default=None, help="a text file, one sentence per line")
    p_pred.add_argument("--output", type=Path, default=None,
                        help="predictions CSV (default: <out-dir>/predictions.csv)")
    p_train.add_argument("--resume", action="store_true", help="continue the run saved in --ckpt-dir")
    p_train.add_argument("--val-frac", type=fraction, default=0.15,
                         help="fraction of each class held out for validation")
    for p in (parser, p_train):
        add = sub_flag(p, sub=p is p_train)
        add("--epochs", type=positive_int, default=12, help="most epochs (early stopping may end sooner)")
        add("--patience", type=positive_int, default=3, help="epochs without improvement before stopping")
        add("--batch-size", type=positive_int, default=32, help="texts per batch")
        add("--lr", type=float, default=3e-3, help="Adam learning rate (the baseline uses 10x)")
        add("--embed-dim", type=positive_int, default=32, help="word embedding size")
        add("--hidden", type=positive_int, default=64, help="LSTM width per direction")
        add("--min-freq", type=positive_int, default=2, help="words seen fewer times become <unk>")
        add("--max-vocab", type=positive_int, default=20000, help="vocabulary size, <pad> and <unk> included")
        add("--max-len", type=positive_int, default=400, help="tokens read per text (the first ones)")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # NumPy's seed range (torch takes any 64-bit integer)
        parser.error(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the README's GPU section)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    for flag, path in (("--out-dir", args.out_dir), ("--ckpt-dir", getattr(args, "ckpt_dir", None)),
                       ("--data-dir", getattr(args, "data_dir", None))):
        existing = next((p for p in (path, *path.parents) if p.exists()), None) if path is not None else None
        if existing is not None and not existing.is_dir():  # a file where a folder must be (or be made)
            parser.error(f"{flag} {path} is a file: it must be a folder" if existing == path else
                         f"{flag} {path}: {existing} is a file, so no folder can be made there")
    for key, value in TRAIN_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.max_vocab < 3:
        parser.error(f"--max-vocab must leave room for a word beside <pad> and <unk>, got {args.max_vocab}")
    if args.command == "predict" and not args.text and args.file is None:
        parser.error("predict needs --text \"...\" (repeatable) or --file sentences.txt")
    if args.command == "predict" and args.output is not None and args.output.is_dir():
        parser.error(f"--output {args.output} is a folder; give a file name such as {args.output / 'predictions.csv'}")
    return args


def print_next_steps(data: Path, ckpt_dir: Path) -> None:
    """After train: the evaluate and predict commands for this checkpoint, ready to copy."""
    try:
        script = os.path.relpath(__file__)              # short when run from the repository
    except ValueError:                                  # Windows: another drive
        script = ".."
    me = f"python {shlex.quote(script if not script.startswith('..') else os.path.abspath(__file__))}"
    ck = shlex.quote(str(ckpt_dir))
    if data.is_dir() and (data / "test").is_dir():      # an aclImdb root: evaluate reads its test/ folder
        test, why = data, "reads its test/ folder"
    elif data.is_file() and (data.parent / "test.csv").is_file() and data.name != "test.csv":
        test, why = data.parent / "test.csv", "the test.csv beside your data, if it holds texts kept out of training"
    else:
        test, why = Path("test.csv" if data.is_file() else "test_folder"), "texts kept out of training, same layout"
    section("Next: evaluate on texts kept out of training, then predict")
    print(f"{me} evaluate --data {shlex.quote(str(test))} --ckpt-dir {ck}   # {why}")
    print(f"{me} predict  --ckpt-dir {ck} --text \"not bad at all\"   # or --file sentences.txt, one per line")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.device)
    seed_everything(args.seed)
    start = time.perf_counter()
    print(f"{PROJECT}: device {device}, seed {args.seed}{', smoke' if args.smoke else ''}, torch {torch.__version__}")
    try:
        ckpt_dir = getattr(args, "ckpt_dir", None) or args.out_dir / "checkpoint"
        if args.command is None:
            metrics = run_demo(args, device)
        elif args.command == "train":
            r = train(args, device, args.data, ckpt_dir)
            metrics = {f"{n}_{k}": v for n in MODELS for k, v in r[n].items() if k != "history"}
            print_next_steps(args.data, ckpt_dir)
        elif args.command == "evaluate":
            r = evaluate(args, device, args.data, ckpt_dir, args.out_dir)
            metrics = {"texts": r["n"], "bow_ceiling": r["bow_ceiling"]}
            for n in MODELS:
                metrics.update({f"{n}_accuracy": r[n]["accuracy"], f"{n}_macro_f1": r[n]["macro_f1"]})
                metrics.update({f"{n}_f1_{c}": v for c, v in r[n]["f1"].items()})
        else:
            texts = list(args.text) + (read_lines(args.file) if args.file is not None else [])
            r = predict(args, device, texts, ckpt_dir, args.output or args.out_dir / "predictions.csv")
            metrics = {"texts": r["texts"]}
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "command": args.command or "demo", "wall_time_s": time.perf_counter() - start}
    atomic_write(args.out_dir / "metrics.json", lambda p: p.write_text(json.dumps(record, indent=2)))
    print(f"\nmetrics: {args.out_dir / 'metrics.json'}  ({record['wall_time_s']:.1f} s)")
    return metrics


if __name__ == "__main__":
    main()

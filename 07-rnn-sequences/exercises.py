"""Module 07 exercises: build sequence models piece by piece.

Replace each `raise NotImplementedError(...)` with your code, then check your work with either
    .venv/bin/python 07-rnn-sequences/exercises.py    # done / failing / to do, and the next hint
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 07-ex      # the same checks, via pytest
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 07-ex03    # exercise 3 only
(from the repository's root folder; with the venv activated, plain `python` works too). Unfinished exercises
are skipped with a hint; the first command exits non-zero while an exercise you attempted fails.

The lessons 01-07 of this folder show every idea needed here.
"""

import math  # noqa: F401  (math.sqrt: you will need it)
from collections import Counter  # noqa: F401

import torch
import torch.nn as nn  # noqa: F401
import torch.nn.functional as F  # noqa: F401
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence  # noqa: F401


def rnn_step(x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
             b_hh: torch.Tensor) -> torch.Tensor:
    """Exercise 1: one step of an Elman RNN.

    x is (B, I), h is (B, H), w_ih (H, I), w_hh (H, H), b_ih and b_hh (H,), laid out like nn.RNN's
    weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0. Return the new hidden state (B, H), exactly what
    nn.RNNCell (tanh) returns for these weights.

    Example:
        x, h = torch.randn(2, 3), torch.zeros(2, 4)
        rnn_step(x, h, torch.randn(4, 3), torch.randn(4, 4), torch.zeros(4), torch.zeros(4)).shape == (2, 4)

    Hint: h_new = tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh). Both biases are added (PyTorch keeps two), and
    the weights are stored (out, in), hence the transposes.
    """
    raise NotImplementedError("Exercise 1: rnn_step")


def lstm_cell_step(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                   b_ih: torch.Tensor, b_hh: torch.Tensor) -> tuple:
    """Exercise 2: one step of an LSTM cell, in PyTorch's gate order.

    x (B, I), h and c (B, H), w_ih (4H, I), w_hh (4H, H), biases (4H,) as in nn.LSTMCell. Return (h_new, c_new),
    both (B, H), equal to nn.LSTMCell's output for these weights.

    Example:
        h, c = lstm_cell_step(torch.randn(2, 3), torch.zeros(2, 5), torch.zeros(2, 5),
                              torch.randn(20, 3), torch.randn(20, 5), torch.zeros(20), torch.zeros(20))
        h.shape == c.shape == (2, 5)

    Hint: compute all pre-activations at once, z = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh (B, 4H), and split with
    z.chunk(4, dim=1) into i, f, g, o (that order). i, f, o go through sigmoid, g through tanh;
    c_new = f * c + i * g and h_new = o * tanh(c_new).
    """
    raise NotImplementedError("Exercise 2: lstm_cell_step")


def pack_batch(sequences: list) -> nn.utils.rnn.PackedSequence:
    """Exercise 3: pack a batch of sequences of different lengths.

    `sequences` is a list of float tensors (T_i, F), in any order of length. Return a PackedSequence that an
    nn.RNN/nn.GRU/nn.LSTM built with batch_first=True can consume, such that each sequence's final state is the
    one it would have alone (padding never read).

    Example:
        packed = pack_batch([torch.randn(5, 3), torch.randn(2, 3), torch.randn(4, 3)])
        _, h_n = nn.GRU(3, 8, batch_first=True)(packed)     # h_n (1, 3, 8), row order as given

    Hint: pad_sequence(sequences, batch_first=True) gives (B, T_max, F); then
    pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False) with the true lengths (a CPU
    tensor or list). Padding with batch_first=False but packing with batch_first=True mixes time and batch.
    """
    raise NotImplementedError("Exercise 3: pack_batch")


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Exercise 4: a boolean mask of the real (non-padding) positions.

    lengths is a long tensor (B,); return a bool tensor (B, max_len) that is True at positions t < lengths[b]
    (real tokens) and False at the padding.

    Example:
        padding_mask(torch.tensor([3, 1]), 4) -> tensor([[True, True, True, False], [True, False, False, False]])

    Hint: compare a row of positions torch.arange(max_len) (1, T) with lengths[:, None] (B, 1): broadcasting
    gives (B, T). Use <, not <=: a sequence of length 3 occupies positions 0, 1, 2.
    """
    raise NotImplementedError("Exercise 4: padding_mask")


def build_vocab(train_texts: list, min_freq: int) -> dict:
    """Exercise 5: a vocabulary with <pad>, <unk> and a frequency cutoff.

    train_texts is a list of token lists (the TRAINING split only). Return a dict token -> index with
    "<pad>": 0, "<unk>": 1, then every token seen at least min_freq times, most frequent first (ties in
    alphabetical order), numbered 2, 3, ...

    Example:
        build_vocab([["a", "b", "a"], ["c", "a", "b"]], min_freq=2) == {"<pad>": 0, "<unk>": 1, "a": 2, "b": 3}
        (then encode a text with [vocab.get(tok, 1) for tok in tokens]: unknown words become <unk>)

    Hint: collections.Counter counts tokens over all texts; keep those with count >= min_freq and sort them with
    key=lambda w: (-count[w], w). The specials come first so that padding is always index 0.
    """
    raise NotImplementedError("Exercise 5: build_vocab")


def chronological_split_normalise(series: torch.Tensor, train_frac: float, val_frac: float) -> tuple:
    """Exercise 6: split a time series by time and normalise it with training statistics only.

    series is a 1-D float tensor. Split it, in order, into train = the first int(train_frac * n) values,
    validation = the next int(val_frac * n), test = the rest. Normalise all three with the TRAINING part's mean and
    std (torch's default, unbiased). Return (train, val, test, mean, std) with mean and std as 0-d tensors.

    Example:
        tr, va, te, mean, std = chronological_split_normalise(torch.arange(10.0), 0.6, 0.2)
        len(tr), len(va), len(te) == 6, 2, 2 ; mean == 2.5 ; tr.mean() ~ 0

    Hint: slice, never shuffle: the model must be tested on the future. Statistics of the whole series (or of the
    test part) tell the training code something about the future, a leak that flatters the test score.
    """
    raise NotImplementedError("Exercise 6: chronological_split_normalise")


def sliding_windows(series: torch.Tensor, window: int, horizon: int) -> tuple:
    """Exercise 7: sliding windows for forecasting, without leakage.

    series is 1-D (N,). Return (X, Y): X (M, window) holds series[i : i + window] and Y (M, horizon) holds the
    values that FOLLOW it, series[i + window : i + window + horizon], for every i = 0, 1, ... with the whole target
    inside the series (M = N - window - horizon + 1).

    Example:
        X, Y = sliding_windows(torch.arange(6.0), window=3, horizon=1)
        X -> [[0, 1, 2], [1, 2, 3], [2, 3, 4]];  Y -> [[3], [4], [5]]

    Hint: series.unfold(0, window + horizon, 1) gives every span of window + horizon values; split each into the
    first `window` (input) and the last `horizon` (target). A target that overlaps its own input lets the model
    copy the answer.
    """
    raise NotImplementedError("Exercise 7: sliding_windows")


def teacher_forced_logits(step_fn, h: torch.Tensor, targets: torch.Tensor, sos_idx: int) -> torch.Tensor:
    """Exercise 8: run a decoder with teacher forcing.

    step_fn(tokens (B,), h) -> (logits (B, V), new h) is one decoder step. targets is (B, T), the correct output
    tokens. Feed <sos> (sos_idx) at the first step and the TRUE previous target token at every later step, whatever
    the decoder predicted. Return the logits of all steps stacked as (B, T, V).

    Example:
        logits = teacher_forced_logits(step_fn, h0, targets, sos_idx=1)   # step t was fed targets[:, t-1]

    Hint: start with token = torch.full((B,), sos_idx, dtype=torch.long); after each step set token =
    targets[:, t]. Feeding targets[:, t] into step t lets the decoder see the answer it must predict; feeding
    logits.argmax(1) is free-running (inference), not teacher forcing.
    """
    raise NotImplementedError("Exercise 8: teacher_forced_logits")


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> tuple:
    """Exercise 9: scaled dot-product attention with a mask.

    q (B, L, d), k (B, S, d), v (B, S, dv), mask bool (B, L, S) with True = this query may attend to this key.
    Return (output (B, L, dv), weights (B, L, S)) where weights = softmax(q k^T / sqrt(d)) over the keys with
    masked keys given exactly zero weight, and output = weights @ v. (The same as
    F.scaled_dot_product_attention(q, k, v, attn_mask=mask); do not call it.) Every query may attend to at least
    one key: a row with none would be a softmax over nothing but -inf, which is NaN.

    Example:
        out, w = masked_attention(torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6),
                                  torch.ones(2, 3, 5, dtype=torch.bool))
        out.shape == (2, 3, 6); w.sum(-1) == 1 everywhere

    Hint: scores = q @ k.transpose(-2, -1) / math.sqrt(d); scores.masked_fill(~mask, float("-inf")); then
    softmax over the LAST dimension (the keys). Softmax over the queries, forgetting the scale, or zeroing masked
    weights after the softmax (rows no longer sum to 1) are the usual slips.
    """
    raise NotImplementedError("Exercise 9: masked_attention")


def greedy_decode(step_fn, h: torch.Tensor, sos_idx: int, eos_idx: int, max_len: int) -> list:
    """Exercise 10: greedy decoding until <eos>.

    step_fn(tokens (B,), h) -> (logits (B, V), new h) as in Exercise 8. Starting from <sos>, pick the most likely
    token at each step and feed it back in, for at most max_len steps. Return a list of B lists of token ids: each
    sequence's tokens up to, NOT including, its first <eos> (all max_len tokens if it never emits one). The
    batch size B is h.shape[0] (h is (B, H), as for the nn.GRUCell decoder of lesson 06).

    Example:
        greedy_decode(step_fn, h0, sos_idx=1, eos_idx=2, max_len=10) -> [[5, 7, 4], [9]]

    Hint: token = torch.full((B,), sos_idx, dtype=torch.long); loop: logits, h = step_fn(token, h);
    token = logits.argmax(1); store it. Afterwards cut each row at its first eos_idx. Feeding <sos> again at each
    step, dropping the new h (logits, _ = ...), or keeping what comes after <eos>, are the usual slips.
    """
    raise NotImplementedError("Exercise 10: greedy_decode")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from exercise_harness import report

    sys.exit(report(__file__))

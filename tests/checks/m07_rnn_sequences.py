"""Checks for 07-rnn-sequences/exercises.py, one check_<name>(fn) per exercise, in exercise order.

Expectations are computed independently: with torch's own modules (nn.RNNCell, nn.LSTMCell, nn.GRU,
F.scaled_dot_product_attention) or by hand, never with the reference solutions.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from check_utils import assert_close, describe


def check_rnn_step(fn):
    torch.manual_seed(0)
    cell = nn.RNNCell(3, 4)
    with torch.no_grad():
        cell.bias_ih.uniform_(-1, 1)  # non-zero biases: both must be added
        cell.bias_hh.uniform_(-1, 1)
    x, h = 2 * torch.randn(5, 3), torch.randn(5, 4)
    with torch.no_grad():
        expected = cell(x, h)
        got = fn(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert_close(got, expected, "rnn_step should equal nn.RNNCell: tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)",
                 atol=1e-5)


def check_lstm_cell_step(fn):
    torch.manual_seed(0)
    cell = nn.LSTMCell(3, 5)
    x, h, c = torch.randn(4, 3), torch.randn(4, 5), 2 * torch.randn(4, 5)
    with torch.no_grad():
        h_exp, c_exp = cell(x, (h, c))
        out = fn(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert isinstance(out, tuple) and len(out) == 2, f"expected a tuple (h_new, c_new), got {describe(out)}"
    assert_close(out[1], c_exp, "c_new should equal nn.LSTMCell's cell state (gate order i, f, g, o)", atol=1e-5)
    assert_close(out[0], h_exp, "h_new should equal nn.LSTMCell's output o * tanh(c_new)", atol=1e-5)


def check_pack_batch(fn):
    torch.manual_seed(0)
    seqs = [torch.randn(n, 3) for n in (4, 6, 2, 5)]  # not sorted by length
    packed = fn(seqs)
    assert isinstance(packed, nn.utils.rnn.PackedSequence), f"expected a PackedSequence, got {describe(packed)}"
    gru = nn.GRU(3, 8, batch_first=True)
    with torch.no_grad():
        try:
            _, h_n = gru(packed)
        except RuntimeError as err:
            raise AssertionError(
                "nn.GRU could not run on your PackedSequence: its data does not fit the lengths (padded time-major "
                "but packed with batch_first=True, or the reverse?) - " + " ".join(str(err).split())[:120]
            ) from None
        alone = torch.cat([gru(s[None])[1] for s in seqs], dim=1)  # (1, B, 8): each sequence by itself
    assert_close(h_n, alone, "nn.GRU(batch_first=True) on your packed batch: final states should equal each "
                 "sequence run alone (true lengths, batch first, original order)", atol=1e-5)


def check_padding_mask(fn):
    got = fn(torch.tensor([3, 1, 4, 0]), 4)
    expected = torch.tensor([[True, True, True, False], [True, False, False, False], [True, True, True, True],
                             [False, False, False, False]])
    assert isinstance(got, torch.Tensor) and got.dtype == torch.bool, f"expected a bool tensor, got {describe(got)}"
    assert got.shape == expected.shape, f"expected shape (4, 4), got {describe(got)}"
    assert torch.equal(got, expected), (
        f"lengths [3, 1, 4, 0], max_len 4: expected {expected.int().tolist()} (1 = real token), "
        f"got {got.int().tolist()}"
    )
    wider = fn(torch.tensor([2, 1]), 5)  # a batch padded to a fixed length, longer than its longest sequence
    assert isinstance(wider, torch.Tensor) and tuple(wider.shape) == (2, 5), (
        f"lengths [2, 1], max_len 5: expected shape (2, 5) (max_len columns, not lengths.max()), got {describe(wider)}"
    )


def check_build_vocab(fn):
    texts = [["the", "film", "was", "good"], ["the", "plot", "was", "dull"], ["a", "film", "the", "end"],
             ["zebra", "was", "film"]]
    got = fn(texts, 2)
    # counts: the 3, film 3, was 3, then good/plot/dull/a/end/zebra once each
    expected = {"<pad>": 0, "<unk>": 1, "film": 2, "the": 3, "was": 4}
    assert isinstance(got, dict), f"expected a dict token -> index, got {describe(got)}"
    assert got == expected, f"min_freq=2: expected {expected}, got {describe(got)}"
    repeated = fn([["bad", "bad"], ["good"]], 2)  # min_freq counts occurrences, not texts
    assert repeated == {"<pad>": 0, "<unk>": 1, "bad": 2}, (
        f"texts [['bad', 'bad'], ['good']], min_freq=2: expected 'bad' (seen twice, in one text) kept, got "
        f"{describe(repeated)}")
    got1 = fn(texts, 1)
    assert got1.get("<pad>") == 0 and got1.get("<unk>") == 1, "<pad> must be 0 and <unk> 1 whatever min_freq is"
    assert len(got1) == 2 + 9 and got1["a"] == 5 and got1["zebra"] == 10, (
        f"min_freq=1: expected all 9 words after the specials, ties alphabetical (a=5 ... zebra=10), "
        f"got {describe(got1)}"
    )


def check_chronological_split_normalise(fn):
    torch.manual_seed(0)
    series = torch.linspace(0, 10, 50) + 0.1 * torch.randn(50)  # a trend: the future is larger than the past
    out = fn(series, 0.6, 0.2)
    assert isinstance(out, tuple) and len(out) == 5, f"expected (train, val, test, mean, std), got {describe(out)}"
    train, val, test, mean, std = out
    m, s = series[:30].mean(), series[:30].std()
    assert_close(torch.as_tensor(mean).reshape(()), m, "mean should be the TRAINING part's mean (first 30 values)",
                 atol=1e-5)
    assert_close(torch.as_tensor(std).reshape(()), s, "std should be the TRAINING part's std (unbiased)", atol=1e-5)
    assert_close(train, (series[:30] - m) / s, "train: the first 30 values, in order, normalised", atol=1e-5)
    assert_close(val, (series[30:40] - m) / s, "validation: the next 10 values, in order", atol=1e-5)
    assert_close(test, (series[40:] - m) / s, "test: the last 10 values, in order, with the training statistics",
                 atol=1e-5)
    nine = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0])  # int(0.6 * 9) = 5, int(0.2 * 9) = 1
    sizes = tuple(len(part) for part in fn(nine, 0.6, 0.2)[:3])
    assert sizes == (5, 1, 3), (
        f"9 values, train_frac 0.6, val_frac 0.2: expected sizes (5, 1, 3) (int(0.6 * 9) = 5, then int(0.2 * 9) = 1, "
        f"then the rest), got {sizes}"
    )


def check_sliding_windows(fn):
    out = fn(torch.arange(6.0), 3, 1)
    assert isinstance(out, tuple) and len(out) == 2, f"expected (X, Y), got {describe(out)}"
    x, y = out
    assert_close(x, torch.tensor([[0.0, 1, 2], [1, 2, 3], [2, 3, 4]]), "window=3, horizon=1 on arange(6): X")
    assert_close(y, torch.tensor([[3.0], [4.0], [5.0]]), "window=3, horizon=1 on arange(6): Y (the values AFTER "
                 "each window)")
    series = torch.arange(20.0) ** 1.5
    x, y = fn(series, 5, 3)
    m = 20 - 5 - 3 + 1
    assert tuple(x.shape) == (m, 5) and tuple(y.shape) == (m, 3), (
        f"window=5, horizon=3 on 20 values: expected X ({m}, 5) and Y ({m}, 3), got {tuple(x.shape)}, {tuple(y.shape)}"
    )
    for i in (0, m - 1):
        assert_close(x[i], series[i:i + 5], f"X[{i}] should be series[{i}:{i + 5}]")
        assert_close(y[i], series[i + 5:i + 8], f"Y[{i}] should be series[{i + 5}:{i + 8}], right after X[{i}]")


def _recording_step(vocab: int, hidden: int):
    """A small deterministic decoder step that records the tokens it is fed."""
    torch.manual_seed(0)
    emb, w = torch.randn(vocab, hidden), torch.randn(hidden, vocab)
    fed = []

    def step_fn(token, h):
        fed.append(token.clone())
        h = torch.tanh(h + emb[token])
        return h @ w, h

    return step_fn, fed, emb, w


def check_teacher_forced_logits(fn):
    vocab, hidden, sos = 7, 4, 1
    step_fn, fed, emb, w = _recording_step(vocab, hidden)
    targets = torch.tensor([[3, 4, 5, 2], [6, 6, 3, 2]])
    h0 = torch.randn(2, hidden)
    got = fn(step_fn, h0.clone(), targets, sos)
    inputs = torch.cat([torch.full((2, 1), sos), targets[:, :-1]], dim=1)  # <sos>, then the true previous token
    assert len(fed) == 4, f"expected 4 decoder steps for 4 target tokens, got {len(fed)}"
    got_inputs = torch.stack(fed, dim=1)
    assert torch.equal(got_inputs, inputs), (
        f"expected the decoder to be fed <sos> then the true previous tokens {inputs.tolist()}, "
        f"got {got_inputs.tolist()}"
    )
    h, expected = h0, []
    for t in range(4):
        h = torch.tanh(h + emb[inputs[:, t]])
        expected.append(h @ w)
    assert_close(got, torch.stack(expected, dim=1), "logits stacked as (B, T, V)", atol=1e-5)


def check_masked_attention(fn):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 6)
    lengths = torch.tensor([5, 3])
    mask = (torch.arange(5)[None, :] < lengths[:, None])[:, None, :].expand(2, 3, 5)  # key padding
    mask = mask & torch.tensor([[True] * 5, [True] * 5, [False, True, True, True, True]])  # and one query-specific
    out = fn(q, k, v, mask)
    assert isinstance(out, tuple) and len(out) == 2, f"expected (output, weights), got {describe(out)}"
    got_out, got_w = out
    scores = torch.einsum("bld,bsd->bls", q, k) / math.sqrt(8)
    expected_w = torch.where(mask, scores, torch.tensor(float("-inf"))).softmax(dim=2)
    assert_close(got_w, expected_w, "weights: softmax over the keys (last dim) of q k^T / sqrt(d), masked keys 0, "
                 "each row summing to 1", atol=1e-5)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert_close(got_out, expected, "output should equal F.scaled_dot_product_attention(q, k, v, attn_mask=mask)",
                 atol=1e-5)


def check_greedy_decode(fn):
    vocab, sos, eos = 8, 1, 2
    # h is (B, 2) with B = 4: it starts at each row's offset (column 0) and grows by 1 at every step. Row 0 never
    # emits <eos>, row 1 late, row 2 early, row 3 twice (cut at the FIRST one)
    offsets = torch.tensor([[0.0, 9.0], [4.0, 9.0], [5.0, 9.0], [1.0, 9.0]])
    fed = []

    def step_fn(token, h):
        assert isinstance(token, torch.Tensor) and tuple(token.shape) == (4,), (
            f"step_fn takes one token per sequence, shape (B,) = (4,) here (B = h.shape[0]), got {describe(token)}"
        )
        fed.append(token.clone())
        h_new = h + 1  # a new state: a decoder that keeps using the old h repeats itself
        nxt = (token * 3 + h_new[:, 0].long()) % vocab  # the next token depends on the one fed in and on h
        # the chosen token leads by 1: argmax finds it, sampling from the softmax (28% for it) soon does not
        return F.one_hot(nxt, vocab).float() - torch.arange(vocab) * 0.01, h_new

    max_len = 6
    expected = []
    for off in offsets[:, 0].long().tolist():
        token, h, row = sos, off, []
        for _ in range(max_len):
            h += 1
            token = (token * 3 + h) % vocab
            if token == eos:
                break
            row.append(token)
        expected.append(row)
    got = fn(step_fn, offsets.clone(), sos, eos, max_len)
    got_rows = [list(map(int, r)) for r in got] if isinstance(got, (list, tuple)) else got
    assert got_rows == expected, (
        f"expected {expected} (each row's argmax fed back with the new h step_fn returned, cut before its first "
        f"<eos>={eos}), got {describe(got)}"
    )
    assert len(fed) <= max_len, f"expected at most {max_len} decoder steps, got {len(fed)}"

"""Reference solutions for 07-rnn-sequences/exercises.py, and the common mistakes each check must reject."""

import math
from collections import Counter

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence


# Exercise 1
def rnn_step(x, h, w_ih, w_hh, b_ih, b_hh):
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def rnn_step__forgot_tanh(x, h, w_ih, w_hh, b_ih, b_hh):
    return x @ w_ih.T + b_ih + h @ w_hh.T + b_hh


def rnn_step__one_bias_only(x, h, w_ih, w_hh, b_ih, b_hh):
    return torch.tanh(x @ w_ih.T + h @ w_hh.T + b_hh)


# Exercise 2
def lstm_cell_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    z = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    zi, zf, zg, zo = z.chunk(4, dim=1)
    c_new = torch.sigmoid(zf) * c + torch.sigmoid(zi) * torch.tanh(zg)
    return torch.sigmoid(zo) * torch.tanh(c_new), c_new


def lstm_cell_step__gate_order_ifog(x, h, c, w_ih, w_hh, b_ih, b_hh):
    z = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    zi, zf, zo, zg = z.chunk(4, dim=1)  # the order of some papers, not PyTorch's i, f, g, o
    c_new = torch.sigmoid(zf) * c + torch.sigmoid(zi) * torch.tanh(zg)
    return torch.sigmoid(zo) * torch.tanh(c_new), c_new


def lstm_cell_step__no_tanh_on_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    z = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    zi, zf, zg, zo = z.chunk(4, dim=1)
    c_new = torch.sigmoid(zf) * c + torch.sigmoid(zi) * torch.tanh(zg)
    return torch.sigmoid(zo) * c_new, c_new


# Exercise 3
def pack_batch(sequences):
    padded = pad_sequence(sequences, batch_first=True)
    lengths = torch.tensor([len(s) for s in sequences])
    return pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)


def pack_batch__batch_first_confusion(sequences):
    padded = pad_sequence(sequences)  # (T_max, B, F): time first...
    lengths = torch.tensor([len(s) for s in sequences])
    return pack_padded_sequence(padded.reshape(len(sequences), -1, padded.shape[-1]), lengths, batch_first=True,
                                enforce_sorted=False)  # ...read as if it were (B, T_max, F)


def pack_batch__padding_counted_as_data(sequences):
    padded = pad_sequence(sequences, batch_first=True)
    lengths = torch.full((len(sequences),), padded.shape[1])  # every sequence "as long as the longest"
    return pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)


# Exercise 4
def padding_mask(lengths, max_len):
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def padding_mask__off_by_one(lengths, max_len):
    return torch.arange(max_len, device=lengths.device)[None, :] <= lengths[:, None]


def padding_mask__true_at_padding(lengths, max_len):
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


# Exercise 5
def build_vocab(train_texts, min_freq):
    counts = Counter(tok for text in train_texts for tok in text)
    kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(kept)}}


def build_vocab__ignores_min_freq(train_texts, min_freq):
    counts = Counter(tok for text in train_texts for tok in text)
    kept = sorted(counts, key=lambda w: (-counts[w], w))
    return {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(kept)}}


def build_vocab__specials_last(train_texts, min_freq):
    counts = Counter(tok for text in train_texts for tok in text)
    kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    vocab = {w: i for i, w in enumerate(kept)}
    vocab.update({"<pad>": len(kept), "<unk>": len(kept) + 1})
    return vocab


# Exercise 6
def chronological_split_normalise(series, train_frac, val_frac):
    n = len(series)
    n_tr, n_va = int(train_frac * n), int(val_frac * n)
    train, val, test = series[:n_tr], series[n_tr:n_tr + n_va], series[n_tr + n_va:]
    mean, std = train.mean(), train.std()
    return (train - mean) / std, (val - mean) / std, (test - mean) / std, mean, std


def chronological_split_normalise__whole_series_statistics(series, train_frac, val_frac):
    n = len(series)
    n_tr, n_va = int(train_frac * n), int(val_frac * n)
    mean, std = series.mean(), series.std()  # the test part's values leak into the statistics
    train, val, test = series[:n_tr], series[n_tr:n_tr + n_va], series[n_tr + n_va:]
    return (train - mean) / std, (val - mean) / std, (test - mean) / std, mean, std


def chronological_split_normalise__cumulative_boundary(series, train_frac, val_frac):
    n = len(series)
    n_tr, end_va = int(train_frac * n), int((train_frac + val_frac) * n)  # 9 values: 5 and 7, so 2 in validation
    train, val, test = series[:n_tr], series[n_tr:end_va], series[end_va:]
    mean, std = train.mean(), train.std()
    return (train - mean) / std, (val - mean) / std, (test - mean) / std, mean, std


def chronological_split_normalise__shuffled(series, train_frac, val_frac):
    n = len(series)
    perm = torch.randperm(n)
    shuffled = series[perm]  # a random split: training on the future, testing on the past
    n_tr, n_va = int(train_frac * n), int(val_frac * n)
    train, val, test = shuffled[:n_tr], shuffled[n_tr:n_tr + n_va], shuffled[n_tr + n_va:]
    mean, std = train.mean(), train.std()
    return (train - mean) / std, (val - mean) / std, (test - mean) / std, mean, std


# Exercise 7
def sliding_windows(series, window, horizon):
    spans = series.unfold(0, window + horizon, 1)  # (M, window + horizon)
    return spans[:, :window], spans[:, window:]


def sliding_windows__target_inside_window(series, window, horizon):
    spans = series.unfold(0, window, 1)[: len(series) - window - horizon + 1]
    targets = series.unfold(0, horizon, 1)[window - 1: window - 1 + len(spans)]  # starts at the window's last value
    return spans, targets


def sliding_windows__window_includes_target(series, window, horizon):
    spans = series.unfold(0, window + horizon, 1)
    return spans[:, horizon:], spans[:, window:]  # the input's last values are the targets themselves


# Exercise 8
def teacher_forced_logits(step_fn, h, targets, sos_idx):
    token = torch.full((targets.shape[0],), sos_idx, dtype=torch.long, device=targets.device)
    logits = []
    for t in range(targets.shape[1]):
        step_logits, h = step_fn(token, h)
        logits.append(step_logits)
        token = targets[:, t]
    return torch.stack(logits, dim=1)


def teacher_forced_logits__feeds_the_answer(step_fn, h, targets, sos_idx):
    logits = []
    for t in range(targets.shape[1]):
        step_logits, h = step_fn(targets[:, t], h)  # step t sees the token it must predict
        logits.append(step_logits)
    return torch.stack(logits, dim=1)


def teacher_forced_logits__free_running(step_fn, h, targets, sos_idx):
    token = torch.full((targets.shape[0],), sos_idx, dtype=torch.long, device=targets.device)
    logits = []
    for _ in range(targets.shape[1]):
        step_logits, h = step_fn(token, h)
        logits.append(step_logits)
        token = step_logits.argmax(1)  # its own guess: inference, not teacher forcing
    return torch.stack(logits, dim=1)


# Exercise 9
def masked_attention(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return weights @ v, weights


def masked_attention__softmax_over_queries(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-2)
    weights = torch.nan_to_num(weights)
    return weights @ v, weights


def masked_attention__mask_after_softmax(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = scores.softmax(dim=-1) * mask  # padding's share is removed, but the rows no longer sum to 1
    return weights @ v, weights


def masked_attention__no_scale(q, k, v, mask):
    weights = (q @ k.transpose(-2, -1)).masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return weights @ v, weights


# Exercise 10
def greedy_decode(step_fn, h, sos_idx, eos_idx, max_len):
    batch = h.shape[0]
    token = torch.full((batch,), sos_idx, dtype=torch.long, device=h.device)
    steps = []
    for _ in range(max_len):
        logits, h = step_fn(token, h)
        token = logits.argmax(1)
        steps.append(token)
    rows = torch.stack(steps, dim=1).tolist()
    return [row[: row.index(eos_idx)] if eos_idx in row else row for row in rows]


def _greedy_rows(step_fn, h, token, max_len):
    """The reference's decoding loop (argmax fed back, new h kept), for the variants that go wrong after it."""
    steps = []
    for _ in range(max_len):
        logits, h = step_fn(token, h)
        token = logits.argmax(1)
        steps.append(token)
    return torch.stack(steps, dim=1).tolist()


def greedy_decode__keeps_going_after_eos(step_fn, h, sos_idx, eos_idx, max_len):
    rows = _greedy_rows(step_fn, h, torch.full((h.shape[0],), sos_idx, dtype=torch.long), max_len)
    return [[t for t in row if t != eos_idx] for row in rows]


def greedy_decode__feeds_sos_every_step(step_fn, h, sos_idx, eos_idx, max_len):
    sos = torch.full((h.shape[0],), sos_idx, dtype=torch.long, device=h.device)
    steps = []
    for _ in range(max_len):
        logits, h = step_fn(sos, h)  # never feeds its own prediction back
        steps.append(logits.argmax(1))
    rows = torch.stack(steps, dim=1).tolist()
    return [row[: row.index(eos_idx)] if eos_idx in row else row for row in rows]




def greedy_decode__hidden_not_carried(step_fn, h, sos_idx, eos_idx, max_len):
    token = torch.full((h.shape[0],), sos_idx, dtype=torch.long, device=h.device)
    steps = []
    for _ in range(max_len):
        logits, _ = step_fn(token, h)  # throws the new hidden state away: every step starts from h0
        token = logits.argmax(1)
        steps.append(token)
    rows = torch.stack(steps, dim=1).tolist()
    return [row[: row.index(eos_idx)] if eos_idx in row else row for row in rows]


def greedy_decode__batch_from_wrong_dim(step_fn, h, sos_idx, eos_idx, max_len):
    token = torch.full((h.shape[1],), sos_idx, dtype=torch.long)  # nn.GRU's (1, B, H) habit: B taken from dim 1
    rows = _greedy_rows(step_fn, h, token, max_len)
    return [row[: row.index(eos_idx)] if eos_idx in row else row for row in rows]


def greedy_decode__cut_at_last_eos(step_fn, h, sos_idx, eos_idx, max_len):
    rows = _greedy_rows(step_fn, h, torch.full((h.shape[0],), sos_idx, dtype=torch.long), max_len)
    return [row[: len(row) - 1 - row[::-1].index(eos_idx)] if eos_idx in row else row for row in rows]


def padding_mask__width_from_the_lengths(lengths, max_len):
    return torch.arange(int(lengths.max()))[None, :] < lengths[:, None]  # ignores max_len: too narrow when padded


def build_vocab__counts_texts_not_tokens(train_texts, min_freq):
    counts = Counter(tok for text in train_texts for tok in set(text))  # document frequency
    kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return {"<pad>": 0, "<unk>": 1, **{w: i for i, w in enumerate(kept, start=2)}}


def greedy_decode__samples_instead_of_argmax(step_fn, h, sos_idx, eos_idx, max_len):
    token, steps = torch.full((h.shape[0],), sos_idx, dtype=torch.long), []
    for _ in range(max_len):
        logits, h = step_fn(token, h)
        token = torch.multinomial(logits.softmax(1), 1).squeeze(1)  # sampling, not the most likely token
        steps.append(token)
    rows = torch.stack(steps, dim=1).tolist()
    return [row[: row.index(eos_idx)] if eos_idx in row else row for row in rows]


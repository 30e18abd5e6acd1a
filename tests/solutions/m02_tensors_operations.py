"""Reference solutions of 02-tensors-operations/exercises.py, and the common mistakes each check must reject
(`<exercise>__<what_went_wrong>`)."""

import torch
import torch.nn.functional as F


def batch_outer(a, b):
    return a[:, :, None] * b[:, None, :]          # (B, N, 1) * (B, 1, M) -> (B, N, M)


def batch_outer__wrong_broadcast_axis(a, b):
    return a[:, None, :] * b[:, :, None]          # (B, 1, N) * (B, M, 1) -> (B, M, N): the transpose


def to_channels_last(x):
    return x.permute(0, 2, 3, 1).contiguous()


def to_channels_last__reshape_instead_of_permute(x):
    n, c, h, w = x.shape
    return x.reshape(n, h, w, c)                  # right shape, values regrouped instead of moved


def to_channels_last__forgot_contiguous(x):
    return x.permute(0, 2, 3, 1)                  # right values, but a non-contiguous view


def pick_per_row(scores, index):
    return scores.gather(1, index.unsqueeze(1)).squeeze(1)


def pick_per_row__squeeze_every_dim(scores, index):
    return scores.gather(1, index.unsqueeze(1)).squeeze()  # a batch of one becomes shape ()


def pick_per_row__indexed_all_rows(scores, index):
    return scores[:, index]                       # (B, B): every row at every index


def pick_per_row__gather_wrong_dim(scores, index):
    return scores.gather(0, index.unsqueeze(1)).squeeze(1)   # scores[index[b], 0]: rows, not columns


def mask_padding(x, lengths, value):
    positions = torch.arange(x.shape[1], device=x.device)    # (T,)
    return x.masked_fill(positions[None, :] >= lengths[:, None], value)


def mask_padding__arithmetic_blend(x, lengths, value):
    keep = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    return x * keep + value * (1 - keep)  # nan * 0 is nan, -inf * 0 is nan: padding leaks through


def mask_padding__off_by_one(x, lengths, value):
    positions = torch.arange(x.shape[1], device=x.device)
    return x.masked_fill(positions[None, :] > lengths[:, None], value)


def mask_padding__modified_input_in_place(x, lengths, value):
    positions = torch.arange(x.shape[1], device=x.device)
    return x.masked_fill_(positions[None, :] >= lengths[:, None], value)


def pairwise_sq_distances(x, y):
    return (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)


def pairwise_sq_distances__squared_after_sum(x, y):
    return (x[:, None, :] - y[None, :, :]).sum(-1) ** 2


def one_hot(labels, num_classes):
    return torch.zeros(labels.shape[0], num_classes, device=labels.device).scatter_(1, labels.unsqueeze(1), 1.0)


def one_hot__width_from_data(labels, num_classes):
    return F.one_hot(labels).float()              # width labels.max() + 1: too narrow when a class is missing


def one_hot__int64_dtype(labels, num_classes):
    return F.one_hot(labels, num_classes)         # F.one_hot returns int64


def every_other_row(x):
    return x[::2]


def every_other_row__index_tensor_copies(x):
    return x[torch.arange(0, x.shape[0], 2)]      # advanced indexing: a copy


def every_other_row__made_contiguous(x):
    return x[::2].contiguous()                    # a copy, since the step makes the view non-contiguous


def standardize_rows_(x):
    mean = x.mean(dim=1, keepdim=True)
    std = x.std(dim=1, correction=0, keepdim=True)
    return x.sub_(mean).div_(std)


def standardize_rows___out_of_place(x):
    x = (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, correction=0, keepdim=True)
    return x                                      # a new tensor; the caller's x is untouched


def standardize_rows___unbiased_std(x):
    return x.sub_(x.mean(dim=1, keepdim=True)).div_(x.std(dim=1, keepdim=True))   # divides by C - 1


def merge_heads(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def merge_heads__view_on_non_contiguous(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).view(b, t, h * d)    # RuntimeError: view size is not compatible ...


def merge_heads__reshape_without_transpose(x):
    b, h, t, d = x.shape
    return x.reshape(b, t, h * d)                 # right shape, scrambled values


def stable_logsumexp(x):
    m = x.max(dim=-1, keepdim=True).values        # (R, 1)
    return (m + (x - m).exp().sum(dim=-1, keepdim=True).log()).squeeze(-1)


def stable_logsumexp__through_log_softmax(x):
    return x[:, 0] - torch.log_softmax(x, dim=1)[:, 0]  # log_softmax does the max-shift inside


def stable_logsumexp__naive(x):
    return x.exp().sum(dim=-1).log()              # exp(1000) = inf


def stable_logsumexp__builtin(x):
    return torch.logsumexp(x, dim=-1)             # right, but the exercise is the max-shift by hand


def stable_logsumexp__global_max(x):
    m = x.max()                                   # one max for all rows: a row far below it underflows to log(0)
    return m + (x - m).exp().sum(dim=-1).log()


def stable_logsumexp__shifts_by_the_row_minimum(x):
    m = x.amin(dim=-1, keepdim=True)  # fine for narrow rows; a row holding -1000 and 1000 overflows: exp(2000)
    return (m + (x - m).exp().sum(dim=-1, keepdim=True).log()).squeeze(-1)

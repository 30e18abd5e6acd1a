"""Module 02 exercises: tensor manipulation practice.

Replace each `raise NotImplementedError(...)` with your solution, then check your work with either

    .venv/bin/python 02-tensors-operations/exercises.py    # done / failing / to do, and the next hint
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 02-ex      # the same checks, via pytest
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 02-ex03    # exercise 3 only
(from the repository's root folder; with the venv activated, plain `python` works too). Unfinished exercises
are skipped with a hint; the first command exits non-zero while an exercise you attempted fails.

The checks live in tests/checks/m02_tensors_operations.py. No loops over tensor elements are needed anywhere:
each exercise is one to three tensor operations. Lessons 02-06 of this module teach everything used here.
"""

import torch


def batch_outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exercise 1: a batch of outer products by broadcasting.

    Given a of shape (B, N) and b of shape (B, M), return out of shape (B, N, M) with
    out[k, i, j] = a[k, i] * b[k, j].

    Example:
        a = [[1., 2.]], b = [[10., 20., 30.]]  ->  [[[10., 20., 30.], [20., 40., 60.]]]   shape (1, 2, 3)

    Hint: insert size-1 dims so the shapes line up from the right: a as (B, N, 1) and b as (B, 1, M)
    (a[:, :, None] or a.unsqueeze(-1)). Which of the two gets the new LAST axis decides the output's layout.
    """
    raise NotImplementedError("Exercise 1: batch_outer")


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Exercise 2: NCHW to NHWC, contiguous.

    Given images x of shape (N, C, H, W), return a CONTIGUOUS tensor of shape (N, H, W, C) with
    out[n, h, w, c] = x[n, c, h, w] (the layout many image libraries and TensorFlow expect).

    Example:
        x of shape (2, 3, 4, 5)  ->  shape (2, 4, 5, 3), out[0, 1, 2] == x[0, :, 1, 2], out.is_contiguous() is True

    Hint: moving an axis is permute (or transpose), not reshape: reshape keeps the reading order and only regroups it.
    permute returns a non-contiguous view; .contiguous() copies it into row-major order.
    """
    raise NotImplementedError("Exercise 2: to_channels_last")


def pick_per_row(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Exercise 3: pick one entry per row (the gather behind every classification loss).

    Given scores of shape (B, K) and an int64 index of shape (B,) with values in [0, K), return the (B,) tensor
    out[b] = scores[b, index[b]].

    Example:
        scores = [[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], index = [1, 0, 1]  ->  [0.9, 0.8, 0.7]

    Hint: scores.gather(1, index.unsqueeze(1)) picks along dim 1 (the index needs as many dims as scores), then
    squeeze the extra dim. scores[torch.arange(B), index] works too. scores[:, index] does not: it is (B, B).
    """
    raise NotImplementedError("Exercise 3: pick_per_row")


def mask_padding(x: torch.Tensor, lengths: torch.Tensor, value: float) -> torch.Tensor:
    """Exercise 4: fill the padding of a batch of sequences.

    x has shape (B, T): B sequences padded to length T; lengths (B,) says how many leading positions of each row
    are real. Return a NEW tensor equal to x except that every position t >= lengths[b] holds `value`.
    x itself must not change.

    Example:
        x = [[1., 2., 3.], [4., 5., 6.]], lengths = [2, 3], value = 0.  ->  [[1., 2., 0.], [4., 5., 6.]]

    Hint: torch.arange(T) has shape (T,); compare it with lengths[:, None] (shape (B, 1)) to get a (B, T) mask by
    broadcasting. masked_fill (no trailing underscore) returns a new tensor; masked_fill_ would overwrite x.
    """
    raise NotImplementedError("Exercise 4: mask_padding")


def pairwise_sq_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exercise 5: all pairwise squared Euclidean distances, without loops.

    Given x of shape (N, D) and y of shape (M, D), return d of shape (N, M) with
    d[i, j] = sum over k of (x[i, k] - y[j, k]) ** 2.

    Example:
        x = [[0., 0.], [1., 1.]], y = [[1., 0.]]  ->  [[1.], [1.]]

    Hint: x[:, None, :] - y[None, :, :] broadcasts to (N, M, D); square it, THEN sum over the last dim.
    """
    raise NotImplementedError("Exercise 5: pairwise_sq_distances")


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Exercise 6: one-hot encoding as float32.

    Given int64 labels of shape (N,) with values in [0, num_classes), return a float32 tensor of shape
    (N, num_classes) with a 1.0 at [i, labels[i]] and 0.0 elsewhere. The number of columns is num_classes even when
    the largest class does not occur in this batch.

    Example:
        labels = [0, 2], num_classes = 4  ->  [[1., 0., 0., 0.], [0., 0., 1., 0.]]

    Hint: torch.zeros(N, num_classes).scatter_(1, labels.unsqueeze(1), 1.0), or
    torch.nn.functional.one_hot(labels, num_classes) followed by .float() (it returns int64, and without
    num_classes it guesses the width from labels.max()).
    """
    raise NotImplementedError("Exercise 6: one_hot")


def every_other_row(x: torch.Tensor) -> torch.Tensor:
    """Exercise 7: a view, not a copy.

    Return rows 0, 2, 4, ... of the 2-D tensor x as a VIEW: the result must share x's storage, so that writing into
    it changes x (the caller relies on that to update those rows in place).

    Example:
        x = torch.arange(12).reshape(4, 3)  ->  [[0, 1, 2], [6, 7, 8]], and out[0, 0] = 99 makes x[0, 0] == 99

    Hint: basic indexing (integers, slices with steps, ..., None) gives views; an index tensor such as
    x[torch.arange(0, len(x), 2)] or a boolean mask gives a copy. So do .clone() and .contiguous() here.
    """
    raise NotImplementedError("Exercise 7: every_other_row")


def standardize_rows_(x: torch.Tensor) -> torch.Tensor:
    """Exercise 8: in-place row standardisation that keeps the same storage.

    Rescale each row of the float 2-D tensor x IN PLACE to mean 0 and standard deviation 1, using the population
    standard deviation (x.std(dim=1, correction=0, keepdim=True), i.e. dividing by the number of columns), and
    return x itself (same object, same data_ptr). Rows are never constant in the checks.

    Example:
        x = [[1., 3.], [0., 4.]]  ->  x becomes [[-1., 1.], [-1., 1.]], and the function returns x

    Hint: compute the row mean and std first (keepdim=True so they broadcast over the columns), then use the
    in-place ops sub_ and div_. `x = (x - mean) / std` builds a NEW tensor and leaves the caller's x untouched.
    """
    raise NotImplementedError("Exercise 8: standardize_rows_")


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Exercise 9: merge attention heads.

    x has shape (B, H, T, D): H heads of size D for each of T positions. Return shape (B, T, H * D) with
    out[b, t, h * D + d] = x[b, h, t, d] (each position's heads laid side by side, as attention layers do before
    the output projection).

    Example:
        x of shape (2, 4, 5, 8)  ->  shape (2, 5, 32), out[b, t, 8:16] == x[b, 1, t]

    Hint: first bring T before H with transpose(1, 2), then merge the last two dims. After a transpose the tensor
    is not contiguous, so .view(...) raises; use .reshape(...) (or .contiguous().view(...)).
    """
    raise NotImplementedError("Exercise 9: merge_heads")


def stable_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """Exercise 10: a numerically stable logsumexp over the last dim, without torch.logsumexp.

    Given float32 x of shape (R, C), return the (R,) tensor log(sum_j exp(x[r, j])). It must stay finite and
    accurate when entries are huge (1000) or very negative (-1000), where exp overflows to inf or underflows to 0.
    Write the max-shift yourself: logcumsumexp, logaddexp and log_softmax are refused too (they do it for you).

    Example:
        x = [[1000., 1000.], [-1000., -1000.]]  ->  [1000.6931, -999.3069]

    Hint: logsumexp(x) = m + log(sum(exp(x - m))) for any m; pick m = each ROW's max (keepdim=True so it
    broadcasts), so the largest exponent is exp(0) = 1. One global max is not enough when rows differ in scale.
    """
    raise NotImplementedError("Exercise 10: stable_logsumexp")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from exercise_harness import report

    sys.exit(report(__file__))

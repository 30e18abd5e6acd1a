"""Checks of 02-tensors-operations/exercises.py, one check_<name>(fn) per exercise, in exercise order.

Expectations are computed independently (element loops in plain Python, or a different torch route), never with the
reference solutions. Exceptions raised by the learner's function are not caught: the harness reports them.
"""

import contextlib
import math
from unittest import mock

import torch
from check_utils import assert_close, describe


def _shape(out, expected: tuple, what: str) -> None:
    if not isinstance(out, torch.Tensor):
        raise AssertionError(f"{what}: expected a torch.Tensor, got {describe(out)}")
    if tuple(out.shape) != expected:
        raise AssertionError(f"expected {what} of shape {expected}, got {tuple(out.shape)}")


def _close(out: torch.Tensor, expected: torch.Tensor, what: str, atol: float = 1e-5) -> None:
    assert_close(out, expected, what, atol=atol, rtol=1e-5)


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def check_batch_outer(fn):
    a, b = torch.randn(3, 4), torch.randn(3, 5)   # N != M, so a swapped layout cannot hide
    out = fn(a.clone(), b.clone())
    _shape(out, (3, 4, 5), "batch_outer(a (3, 4), b (3, 5))")
    expected = torch.tensor([[[a[k, i].item() * b[k, j].item() for j in range(5)] for i in range(4)]
                             for k in range(3)])
    _close(out, expected, "out[k, i, j] should be a[k, i] * b[k, j]")


def check_to_channels_last(fn):
    x = torch.randn(2, 3, 4, 5)
    out = fn(x.clone())
    _shape(out, (2, 4, 5, 3), "to_channels_last of an (N, C, H, W) = (2, 3, 4, 5) input")
    for n, h, w, c in [(0, 0, 0, 1), (1, 2, 3, 0), (0, 3, 4, 2), (1, 1, 2, 1)]:
        if out[n, h, w, c].item() != x[n, c, h, w].item():
            raise AssertionError(f"expected out[{n}, {h}, {w}, {c}] == x[{n}, {c}, {h}, {w}] = "
                                 f"{x[n, c, h, w].item():.4f}, got {out[n, h, w, c].item():.4f} "
                                 "(move the axis with permute; reshape only regroups)")
    if not out.is_contiguous():
        raise AssertionError(f"expected a contiguous result, got strides {out.stride()} (is_contiguous() is False: "
                             "call .contiguous() after permute)")


def check_pick_per_row(fn):
    scores = torch.randn(6, 4)                     # B != K
    index = torch.tensor([3, 0, 2, 2, 1, 3])
    out = fn(scores.clone(), index.clone())
    _shape(out, (6,), "pick_per_row(scores (6, 4), index (6,))")
    expected = torch.tensor([scores[b, index[b]].item() for b in range(6)])
    _close(out, expected, "out[b] should be scores[b, index[b]]", atol=0)
    one = fn(scores[:1].clone(), index[:1].clone())
    _shape(one, (1,), "pick_per_row of a batch of one, scores (1, 4), index (1,) (squeeze() with no dim drops every "
           "size-1 dimension; squeeze(1) drops the one you added)")


def check_mask_padding(fn):
    x = torch.randn(4, 6)
    x[1, 2], x[2, 5] = float("nan"), float("-inf")  # padding may hold anything: it must not leak into the result
    lengths = torch.tensor([6, 0, 3, 1])
    original = x.clone()
    out = fn(x, lengths, -5.0)
    _shape(out, (4, 6), "mask_padding(x (4, 6), ...)")
    expected = torch.tensor([[x[b, t].item() if t < lengths[b] else -5.0 for t in range(6)] for b in range(4)])
    _close(out, expected, "positions t >= lengths[b] should hold the value, the rest x", atol=0)
    if not torch.equal(x.nan_to_num(), original.nan_to_num()):
        raise AssertionError("expected x to be left unchanged, got x modified in place (return a new tensor: "
                             "masked_fill, not masked_fill_; a view such as x[:] shares x's memory, clone() it)")


def check_pairwise_sq_distances(fn):
    x, y = torch.randn(5, 3), torch.randn(4, 3)
    out = fn(x.clone(), y.clone())
    _shape(out, (5, 4), "pairwise_sq_distances(x (5, 3), y (4, 3))")
    expected = torch.tensor([[sum((x[i, k].item() - y[j, k].item()) ** 2 for k in range(3)) for j in range(4)]
                             for i in range(5)])
    _close(out, expected, "d[i, j] should be the squared distance between x[i] and y[j]", atol=1e-4)


def check_one_hot(fn):
    labels = torch.tensor([0, 2, 1, 2, 0])          # class 3 of 4 never occurs
    out = fn(labels.clone(), 4)
    _shape(out, (5, 4), "one_hot(labels (5,), num_classes=4)")
    if out.dtype != torch.float32:
        raise AssertionError(f"expected dtype torch.float32, got {out.dtype}")
    expected = torch.tensor([[1.0 if c == labels[i].item() else 0.0 for c in range(4)] for i in range(5)])
    _close(out, expected, "row i should be 1.0 at column labels[i] and 0.0 elsewhere", atol=0)


def check_every_other_row(fn):
    x = torch.arange(35.0).reshape(7, 5)
    out = fn(x)
    _shape(out, (4, 5), "every_other_row of a (7, 5) tensor")
    expected = torch.tensor([[5.0 * r + c for c in range(5)] for r in (0, 2, 4, 6)])
    _close(out, expected, "the rows 0, 2, 4, 6 of x", atol=0)
    if not _same_storage(out, x):
        raise AssertionError("expected a view sharing x's storage, got a copy (index tensors, masks, clone() and "
                             "contiguous() copy; a slice with a step does not)")
    out[1, 0] = -1.0
    if x[2, 0].item() != -1.0:
        raise AssertionError("expected writing out[1, 0] to change x[2, 0], got x unchanged")


def check_standardize_rows_(fn):
    x = torch.randn(3, 6) * torch.tensor([[1.0], [5.0], [0.2]]) + torch.tensor([[0.0], [10.0], [-3.0]])
    before = x.clone()
    ptr = x.data_ptr()
    out = fn(x)
    if out is not x and (not isinstance(out, torch.Tensor) or out.data_ptr() != ptr):
        raise AssertionError("expected the function to return x itself (same storage), got a new tensor "
                             "(x = (x - mean) / std makes a new tensor; use sub_ and div_)")
    if x.data_ptr() != ptr:
        raise AssertionError("expected x to keep its data_ptr")
    expected = []
    for row in before.tolist():
        mean = sum(row) / len(row)
        std = math.sqrt(sum((v - mean) ** 2 for v in row) / len(row))  # population std
        expected.append([(v - mean) / std for v in row])
    _close(x, torch.tensor(expected), "x after the call (rows standardised in place, population std)", atol=1e-4)


def check_merge_heads(fn):
    b, h, t, d = 2, 3, 4, 5
    x = torch.randn(b, h, t, d)
    out = fn(x.clone())
    _shape(out, (b, t, h * d), "merge_heads of a (B, H, T, D) = (2, 3, 4, 5) input")
    expected = torch.empty(b, t, h * d)
    for bi in range(b):
        for ti in range(t):
            for hi in range(h):
                for di in range(d):
                    expected[bi, ti, hi * d + di] = x[bi, hi, ti, di]
    _close(out, expected, "out[b, t, h * D + d] should be x[b, h, t, d]", atol=0)


def _refuse(name: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"expected the max-shift by hand, got a call to the built-in {name}, which does the "
                             "max-shift for you")
    return refuse


def check_stable_logsumexp(fn):
    x = torch.tensor([[1000.0, 999.0, 1000.5], [-1000.0, -1001.0, -999.5], [0.1, -0.2, 0.3]])
    x = torch.cat([x, torch.randn(2, 3), torch.tensor([[-1000.0, 1000.0, 0.0]])])  # wide, its max not first
    built_ins = [(owner, name) for name in ("logsumexp", "logcumsumexp", "logaddexp", "log_softmax")
                 for owner in (torch, torch.Tensor, torch.special, torch.nn.functional) if hasattr(owner, name)]
    with contextlib.ExitStack() as stack:
        for owner, name in built_ins:
            stack.enter_context(mock.patch.object(owner, name, _refuse(name)))
        out = fn(x.clone())
    _shape(out, (6,), "stable_logsumexp of a (6, 3) input")
    if not torch.isfinite(out).all():
        raise AssertionError(f"expected finite values, got {describe(out)} (exp(1000) overflows and exp(-1000) "
                             "underflows in float32: subtract each row's max first)")
    expected = []
    for row in x.double().tolist():
        m = max(row)
        expected.append(m + math.log(sum(math.exp(v - m) for v in row)))
    _close(out, torch.tensor(expected, dtype=torch.float64), "logsumexp of each row", atol=1e-3)

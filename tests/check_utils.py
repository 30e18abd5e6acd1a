"""Failure messages that fit on a screen, shared by every tests/checks/mNN_*.py.

A check compares what the learner's function returned with what it should return. When they differ, the learner
needs a few lines that say what was wrong: the shape, the dtype, how far off, and where the first wrong element is,
not two whole tensors printed side by side. Use these instead of writing tensors into f-strings:

    from check_utils import assert_close, describe
    assert_close(got, expected, "model(x) should be Linear -> ReLU -> Linear", atol=1e-5)
    assert got.shape == (4, 3), f"expected shape (4, 3), got {describe(got)}"
"""

from __future__ import annotations

import torch

MAX_ELEMENTS_SHOWN = 6


def describe(value) -> str:
    """One line for any value: a tensor as shape/dtype/device and a few numbers, anything else by a short repr."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1)
        if value.device.type == "meta":  # shapes only: a meta tensor holds no numbers
            shown = "no data"
        else:
            shown = ", ".join(_fmt(v) for v in flat[:MAX_ELEMENTS_SHOWN].tolist())
            shown += ", ..." if flat.numel() > MAX_ELEMENTS_SHOWN else ""
        device = "" if value.device.type == "cpu" else f", device={value.device}"
        dtype = str(value.dtype).replace("torch.", "")
        return f"tensor(shape={tuple(value.shape)}, dtype={dtype}{device}, [{shown}])"
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        shown = [_shape_only(v) if isinstance(v, torch.Tensor) else describe(v) for v in value[:4]]
        more = ", ..." if len(value) > 4 else ""
        return f"a {type(value).__name__} of {len(value)}: [{', '.join(shown)}{more}]"
    text = " ".join(repr(value).split())  # one line: a Parameter's repr holds newlines
    return text if len(text) <= 80 else text[:77] + "..."


def _shape_only(value: torch.Tensor) -> str:
    device = "" if value.device.type == "cpu" else f", device={value.device}"
    return f"tensor(shape={tuple(value.shape)}, dtype={str(value.dtype).replace('torch.', '')}{device})"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def assert_close(got, expected: torch.Tensor, what: str, atol: float = 1e-5, rtol: float = 0.0,
                 check_dtype: bool = False) -> None:
    """Raise AssertionError with a short summary unless `got` is a tensor equal to `expected` within tolerance.

    The message names `what`, then the first thing that is wrong: not a tensor, shape, dtype (if asked), non-finite
    values, or the largest difference with the index and values of the first element out of tolerance.
    """
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor of shape {tuple(expected.shape)}, got {describe(got)}")
    if tuple(got.shape) != tuple(expected.shape):
        raise AssertionError(f"{what}: expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)}")
    if check_dtype and got.dtype != expected.dtype:
        raise AssertionError(f"{what}: expected dtype {expected.dtype}, got {got.dtype}")
    g = got.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    if got.is_floating_point() and not torch.isfinite(g).all() and torch.isfinite(e).all():
        bad = _first_index(~torch.isfinite(g))
        raise AssertionError(f"{what}: expected finite values, got {g[bad].item()} at index {bad}")
    diff = (g - e).abs()
    allowed = atol + rtol * e.abs()
    wrong = diff > allowed
    if wrong.any():
        idx = _first_index(wrong)
        n_wrong = int(wrong.sum())
        shown_e, shown_g = _fmt(e[idx].item()), _fmt(g[idx].item())
        if shown_e == shown_g:  # 4 significant digits hide the difference: show enough to see it
            shown_e, shown_g = f"{e[idx].item():.10g}", f"{g[idx].item():.10g}"
        raise AssertionError(
            f"{what}: {n_wrong} of {e.numel()} elements differ (max abs difference {diff.max().item():.3g}, "
            f"tolerance {atol:g}{f' + {rtol:g}*|expected|' if rtol else ''}); first at index {idx}: "
            f"expected {shown_e}, got {shown_g}"
        )


def _first_index(mask: torch.Tensor) -> tuple[int, ...]:
    flat = int(mask.reshape(-1).nonzero()[0])
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), mask.shape)) if mask.dim() else ()

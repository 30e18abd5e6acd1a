"""Reshape, view, transpose: strides, contiguity, and when a new shape costs a copy, proven with data_ptr().

Shows, with every claim measured and printed:
- a tensor is storage + shape + strides + offset; view/transpose/permute/squeeze/unsqueeze/flatten only rewrite the
  last three (same storage, same data_ptr), so a write through any of them shows in the original;
- contiguity: after transpose the strides are no longer row-major, is_contiguous() says False, and .view() raises
  its RuntimeError (caught and printed); .contiguous() copies into row-major order and then .view() works;
- reshape() returns a view when the strides allow it and copies only when it must (data_ptr compared both times);
- reshape is not transpose: (2, 3) -> (3, 2) keeps the reading order, transpose swaps the axes;
- NCHW -> NHWC with permute, and the attention-heads round trip (B, T, H*D) <-> (B, H, T, D);
- channels_last: the same logical shape with different strides.

Run it:
    python 02-tensors-operations/05_reshaping_views.py
    python 02-tensors-operations/05_reshaping_views.py --device cpu --seq-len 256

Takes about 2 s on a 2-core CPU. What to look for: "same storage: True" for every view, the "view size is
not compatible with input tensor's size and stride" error, and reshape copying only where view() would have raised.
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch


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


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where the tensors live; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="smaller tensors (a tiny, fast run)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/02-tensors-operations/05_reshaping_views"),
                        help="where metrics.json is written")
    parser.add_argument("--seq-len", type=int, default=128, help="sequence length T in the attention-heads example")
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
    if args.seq_len < 1:
        parser.error("--seq-len must be positive")
    return args


def same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def views(device: torch.device) -> dict:
    section("Views rewrite shape and strides, never the data")
    x = torch.arange(12, device=device)     # (12,) storage of 12 int64
    ops = {
        "x.view(3, 4)": x.view(3, 4),
        "x.view(3, 4).t()": x.view(3, 4).t(),
        "x.view(2, 3, 2).permute(2, 0, 1)": x.view(2, 3, 2).permute(2, 0, 1),
        "x.view(3, 4)[:, 1:3]": x.view(3, 4)[:, 1:3],
        "x.view(1, 12, 1).squeeze()": x.view(1, 12, 1).squeeze(),
        "x.view(3, 4).unsqueeze(0)": x.view(3, 4).unsqueeze(0),
        "x.view(3, 4).flatten()": x.view(3, 4).flatten(),
    }
    all_same = True
    for name, v in ops.items():
        same = same_storage(v, x)
        all_same &= same
        print(f"  {name:<34} shape {str(tuple(v.shape)):<10} stride {str(v.stride()):<11} contiguous "
              f"{str(v.is_contiguous()):<5} same storage: {same}")
    t = x.view(3, 4).t()
    t[0, 1] = 100   # t[0, 1] is x.view(3, 4)[1, 0], which is x[4]
    print(f"after x.view(3, 4).t()[0, 1] = 100: x[4] = {x[4].item()} (the element at offset 0*1 + 1*4 = 4)")
    return {"views_share_storage": all_same, "write_through_transpose_visible": x[4].item() == 100}


def contiguity(device: torch.device) -> dict:
    section("Contiguity: view on a transposed tensor")
    m = torch.arange(6.0, device=device).view(2, 3)   # (2, 3) strides (3, 1): row-major
    t = m.t()                                        # (3, 2) strides (1, 3): walks memory column by column
    print(f"m {tuple(m.shape)} strides {m.stride()} contiguous {m.is_contiguous()}; "
          f"m.t() {tuple(t.shape)} strides {t.stride()} contiguous {t.is_contiguous()}")
    message = ""
    try:
        t.view(6)
    except RuntimeError as err:
        message = str(err)
    print(f"m.t().view(6) -> RuntimeError: {message}")
    c = t.contiguous()                               # copies into row-major order of the (3, 2) shape
    print(f"m.t().contiguous(): strides {c.stride()}, same data_ptr as m: {c.data_ptr() == m.data_ptr()} (a copy); "
          f".view(6) now gives {c.view(6).tolist()}")
    already = m.contiguous()                         # already contiguous: returns m itself, no copy
    print(f"m.contiguous() on a contiguous tensor is m itself: {already is m}")
    return {"view_on_transpose_raised": "view size is not compatible" in message,
            "contiguous_copies": c.data_ptr() != m.data_ptr(), "contiguous_noop_when_contiguous": already is m,
            "transpose_is_contiguous": t.is_contiguous()}


def reshape_when_needed(device: torch.device) -> dict:
    section("reshape: a view when it can, a copy when it must")
    m = torch.arange(24.0, device=device).view(4, 6)
    r1 = m.reshape(2, 12)              # contiguous input: a view
    r2 = m.t().reshape(24)             # transposed input: no strides can express it, so a copy
    r3 = m[:, :3].reshape(4, 3)        # same shape, already expressible: a view even though not contiguous
    r4 = m[:, :3].reshape(12)          # gaps between rows cannot be flattened by strides: a copy
    rows = [("m.reshape(2, 12)", r1), ("m.t().reshape(24)", r2), ("m[:, :3].reshape(4, 3)", r3),
            ("m[:, :3].reshape(12)", r4)]
    for name, r in rows:
        print(f"  {name:<24} stride {str(r.stride()):<8} data_ptr same as m: {str(r.data_ptr() == m.data_ptr()):<5} "
              f"same storage: {same_storage(r, m)}")
    print("view() would raise for the two copies; reshape() hides the copy, so a write into the result may or may "
          "not reach m: write into views only when you made them with view()/indexing.")
    return {"reshape_contiguous_is_view": same_storage(r1, m), "reshape_transposed_copies": not same_storage(r2, m),
            "reshape_sliced_same_shape_is_view": same_storage(r3, m),
            "reshape_sliced_flatten_copies": not same_storage(r4, m)}


def reshape_vs_transpose(device: torch.device) -> dict:
    section("reshape is not transpose")
    m = torch.arange(6, device=device).view(2, 3)
    print(f"m = {m.tolist()}")
    print(f"m.reshape(3, 2) = {m.reshape(3, 2).tolist()}  (same reading order, regrouped)")
    print(f"m.t()           = {m.t().tolist()}  (rows become columns)")
    differ = not torch.equal(m.reshape(3, 2), m.t())
    print(f"same shape, different tensors: {differ}")
    return {"reshape_differs_from_transpose": differ}


def layouts(device: torch.device, seq_len: int) -> dict:
    section("Real layouts: NCHW -> NHWC, attention heads, channels_last")
    img = torch.randn(2, 3, 4, 5, device=device)      # (N, C, H, W)
    nhwc = img.permute(0, 2, 3, 1)                     # (N, H, W, C): a view
    pixel_ok = torch.equal(nhwc[1, 2, 3], img[1, :, 2, 3])  # the C values of one pixel
    print(f"permute(0, 2, 3, 1): {tuple(nhwc.shape)}, one pixel's channels match: {pixel_ok}, "
          f"contiguous {nhwc.is_contiguous()} (call .contiguous() before .view or a C library)")
    b, h, d = 2, 4, 8
    x = torch.randn(b, seq_len, h * d, device=device)  # (B, T, H*D): a projection's output
    heads = x.view(b, seq_len, h, d).transpose(1, 2)   # (B, H, T, D): split then move heads forward
    merged = heads.transpose(1, 2).reshape(b, seq_len, h * d)  # back to (B, T, H*D): reshape copies here
    wrong = heads.reshape(b, seq_len, h * d)           # skips the transpose: right shape, scrambled values
    print(f"split heads {tuple(x.shape)} -> {tuple(heads.shape)}; merged back equals x: {torch.equal(merged, x)}; "
          f"reshape without transposing back equals x: {torch.equal(wrong, x)}")
    cl = img.contiguous(memory_format=torch.channels_last)
    print(f"channels_last: shape still {tuple(cl.shape)}, strides {cl.stride()} vs NCHW {img.stride()}; "
          f"equal values: {torch.equal(cl, img)} (the layout cuDNN prefers for convolutions on tensor-core GPUs)")
    return {"nhwc_pixel_matches": pixel_ok, "heads_round_trip_exact": torch.equal(merged, x),
            "heads_reshape_without_transpose_wrong": not torch.equal(wrong, x),
            "channels_last_equal_values": torch.equal(cl, img)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")
    seq_len = 6 if args.smoke else args.seq_len

    metrics = {}
    metrics.update(views(device))
    metrics.update(contiguity(device))
    metrics.update(reshape_when_needed(device))
    metrics.update(reshape_vs_transpose(device))
    metrics.update(layouts(device, seq_len))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Strides say how many elements to skip per step along each dim; views only change them.")
    print("- view() never copies, so it refuses what strides cannot express; reshape() copies then, silently.")
    print("- .contiguous() is free on contiguous tensors and a copy otherwise.")
    print("- To swap axes use transpose/permute; reshape only regroups the same reading order.")
    return metrics


if __name__ == "__main__":
    main()

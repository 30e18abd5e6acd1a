"""Indexing and slicing: which results are views of the original and which are copies, proven with storage pointers.

Shows, with every claim measured and printed:
- basic indexing (integers, slices with steps, ..., None) returns a VIEW: same storage, new offset/strides, and a
  write through it changes the original;
- advanced indexing (an integer tensor or a boolean mask) returns a COPY: new storage, writes do not come back;
  but advanced indexing on the left of `=` writes in place (x[mask] = 0);
- index_select, gather (pick one entry per row), scatter / scatter_add_ (the inverse: write or accumulate into
  positions), masked_fill and torch.where, each checked against a plain Python loop;
- a little reshaping on the way (unsqueeze / None, flatten): the full story of view/reshape is lesson 05.

Run it:
    python 02-tensors-operations/02_indexing_slicing.py
    python 02-tensors-operations/02_indexing_slicing.py --device cpu --rows 64

Takes about 2 s on a 2-core CPU. What to look for: "shares storage: True" for every basic index and False
for every advanced one, and "matches the loop: True" for gather, scatter_add_ and torch.where.
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
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/02-tensors-operations/02_indexing_slicing"),
                        help="where metrics.json is written")
    parser.add_argument("--rows", type=int, default=1000, help="rows of the tensors gather/scatter work on")
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
    if args.rows < 5:
        parser.error("--rows must be at least 5 (labels 0-4 are also used as row indices)")
    return args


def shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when a and b are windows on the same block of memory (a view), False for a separate copy."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def basic_indexing(device: torch.device) -> dict:
    section("Basic indexing returns views")
    x = torch.arange(24, device=device).reshape(4, 6)  # (4, 6), strides (6, 1)
    views = {
        "x[1]": x[1],              # (6,)   a row
        "x[:, 2]": x[:, 2],        # (4,)   a column: stride 6
        "x[1:3, ::2]": x[1:3, ::2],  # (2, 3) a step doubles the stride
        "x[..., -1]": x[..., -1],  # (4,)   ... stands for all leading dims
        "x[None, :, 0]": x[None, :, 0],  # (1, 4) None inserts a dim of size 1 (like unsqueeze(0))
    }
    all_views = True
    for name, v in views.items():
        same = shares_storage(v, x)
        all_views &= same
        print(f"  {name:<14} shape {str(tuple(v.shape)):<8} stride {str(v.stride()):<8} offset "
              f"{v.storage_offset():>2}  shares storage: {same}")
    col = x[:, 2]
    col[0] = -1  # write through the view...
    print(f"after x[:, 2][0] = -1, x[0, 2] = {x[0, 2].item()}: the original changed")
    return {"basic_indexing_all_views": all_views, "write_through_view_visible": x[0, 2].item() == -1}


def advanced_indexing(device: torch.device) -> dict:
    section("Advanced indexing returns copies")
    x = torch.arange(24, device=device).reshape(4, 6)
    rows = torch.tensor([0, 2], device=device)
    mask = x % 5 == 0                                     # (4, 6) bool
    copies = {"x[[0, 2]] (int tensor)": x[rows], "x[mask] (bool mask)": x[mask],
              "x[rows, 1:] (mixed)": x[rows, 1:]}
    any_shared = False
    for name, c in copies.items():
        same = shares_storage(c, x)
        any_shared |= same
        print(f"  {name:<24} shape {str(tuple(c.shape)):<7} shares storage: {same}")
    print(f"x[mask] flattens to 1-D: {x[mask].tolist()}")
    picked = x[rows]
    picked[0, 0] = 999
    print(f"after x[rows][0, 0] = 999, x[0, 0] = {x[0, 0].item()}: the copy is independent")
    copy_write_lost = x[0, 0].item() == 0
    x[mask] = 0  # on the left of '=', advanced indexing calls index_put_: writes into x itself
    print(f"x[mask] = 0 writes in place: multiples of 5 left in x: {int((x % 5 == 0).logical_and(x != 0).sum())}")
    return {"advanced_indexing_any_view": any_shared, "copy_write_not_visible": copy_write_lost,
            "mask_assignment_in_place": int((x != 0).logical_and(x % 5 == 0).sum()) == 0}


def select_gather_scatter(device: torch.device, n: int) -> dict:
    section("index_select, gather and scatter (checked against loops)")
    k = 5
    scores = torch.randn(n, k, device=device)                       # (N, K) e.g. logits of N samples
    labels = torch.randint(0, k, (n,), device=device)               # (N,)
    picked_rows = torch.index_select(scores, 0, labels[:3])          # (3, K) whole rows, like scores[idx]
    print(f"index_select(scores, 0, idx) equals scores[idx]: {torch.equal(picked_rows, scores[labels[:3]])}")
    # gather: out[i] = scores[i, labels[i]] -- the index must have as many dims as the input
    gathered = scores.gather(1, labels.unsqueeze(1)).squeeze(1)     # (N, 1) -> (N,)
    loop = torch.tensor([scores[i, labels[i]].item() for i in range(n)], device=device)
    gather_ok = torch.equal(gathered, loop)
    fancy = scores[torch.arange(n, device=device), labels]          # the same with two index tensors
    print(f"gather(1, labels[:, None]) matches the loop: {gather_ok}; equals scores[arange(N), labels]: "
          f"{torch.equal(gathered, fancy)}")
    print(f"  a common slip: scores[:, labels] has shape {tuple(scores[:, labels].shape)}, not ({n},)")
    copies = not shares_storage(picked_rows, scores) and not shares_storage(gathered, scores)
    print(f"index_select and gather return new tensors (copies): {copies}; scores.narrow(0, 0, 3) (a slice) is a view:"
          f" {shares_storage(scores.narrow(0, 0, 3), scores)}")

    counts = torch.zeros(k, device=device).scatter_add_(0, labels, torch.ones(n, device=device))  # histogram
    loop_counts = torch.zeros(k, device=device)
    for c in labels.tolist():
        loop_counts[c] += 1
    print(f"scatter_add_ class counts {counts.int().tolist()} matches the loop: {torch.equal(counts, loop_counts)}"
          f" (and torch.bincount: {torch.equal(counts.long(), torch.bincount(labels, minlength=k))})")
    one_hot = torch.zeros(n, k, device=device).scatter_(1, labels.unsqueeze(1), 1.0)  # (N, K)
    print(f"scatter_ builds one-hot rows: every row sums to 1: {bool((one_hot.sum(1) == 1).all())}, "
          f"argmax gives back the labels: {torch.equal(one_hot.argmax(1), labels)}")
    naive_dup = torch.zeros(k, device=device)
    naive_dup[labels] += 1  # duplicates in the index: only one += lands per position
    if int(naive_dup.sum()) < n:
        print(f"zeros[labels] += 1 counts only {int(naive_dup.sum())} of {n}: advanced-index += does not accumulate "
              "duplicates; scatter_add_/index_add_ does")
    else:
        print(f"zeros[labels] += 1 counts {int(naive_dup.sum())} of {n} here, only because no label repeats in so few "
              "rows: advanced-index += does not accumulate duplicates; scatter_add_/index_add_ does")
    return {"gather_matches_loop": gather_ok, "select_gather_are_copies": copies,
            "scatter_add_matches_loop": torch.equal(counts, loop_counts),
            "one_hot_roundtrip": torch.equal(one_hot.argmax(1), labels),
            "naive_duplicate_index_count": int(naive_dup.sum()), "index_count": n}


def masks_and_where(device: torch.device, n: int) -> dict:
    section("Boolean masks, masked_fill and torch.where")
    x = torch.randn(n, 4, device=device)                 # (N, 4)
    clipped = torch.where(x > 0, x, torch.zeros_like(x))  # element-wise choice: here, ReLU
    loop = torch.tensor([[v if v > 0 else 0.0 for v in row] for row in x.tolist()], device=device)
    where_ok = torch.equal(clipped, loop) and torch.equal(clipped, x.relu())
    print(f"torch.where(x > 0, x, 0) matches the loop: {where_ok}; a new tensor: {not shares_storage(clipped, x)}")
    filled = x.masked_fill(x < 0, float("-inf"))         # out of place: the attention-mask idiom
    print(f"masked_fill(x < 0, -inf): {int(torch.isinf(filled).sum())} entries set, x untouched: "
          f"{not torch.isinf(x).any().item()}")
    rows, cols = torch.where(x > 1.5)                     # one-argument where = nonzero(as_tuple=True)
    print(f"torch.where(x > 1.5) gives {rows.numel()} (row, col) pairs; all of them > 1.5: "
          f"{bool((x[rows, cols] > 1.5).all())}")
    positive_rows = x[(x > 0).all(dim=1)]                # a row mask keeps whole rows
    print(f"rows whose 4 entries are all positive: {positive_rows.shape[0]} of {n} (expected about {n / 16:.0f})")
    return {"where_matches_loop": where_ok, "where_returns_copy": not shares_storage(clipped, x)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")
    n = 16 if args.smoke else args.rows

    metrics = {}
    metrics.update(basic_indexing(device))
    metrics.update(advanced_indexing(device))
    metrics.update(select_gather_scatter(device, n))
    metrics.update(masks_and_where(device, n))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Integers, slices, ... and None only change shape/strides/offset: the result is a view of the same memory.")
    print("- Index tensors and boolean masks gather scattered elements: the result is a copy (x[mask] is 1-D).")
    print("- On the left of '=', x[mask] = v writes into x; but x[idx] += 1 drops repeated indices.")
    print("- gather picks per-row entries (index has the input's number of dims); scatter_/scatter_add_ write back.")
    return metrics


if __name__ == "__main__":
    main()

"""Broadcasting: how PyTorch combines tensors of different shapes, when it refuses, and when it silently does too much.

Shows, with every claim measured and printed:
- the rule, written by hand and checked against torch.broadcast_shapes and real ops: align shapes from the RIGHT,
  pad the shorter one with 1s, and each pair of sizes must be equal or one of them 1 (that one is stretched);
- the exact RuntimeError a mismatch raises (caught and printed), and the unsqueeze that fixes it;
- stretching costs no memory: expand() makes a stride-0 view of the same storage, repeat() copies;
- broadcasting replaces loops: outer products, centring features, pairwise distances (checked against torch.cdist);
- the silent bug: (N, 1) - (N,) is (N, N), so a "mean squared error" averages N*N wrong numbers without an error;
- in-place ops broadcast the other operand only: a.add_(b) cannot grow a.

Run it:
    python 02-tensors-operations/04_broadcasting.py
    python 02-tensors-operations/04_broadcasting.py --device cpu --points 2000

Takes about 2 s on a 2-core CPU. What to look for: the hand-written rule agreeing with PyTorch on every case,
the printed "size of tensor a (4) must match ..." error, stride 0 from expand, and the (N, N) silent bug.
"""

import argparse
import json
import random
import time
import warnings
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
    parser.add_argument("--smoke", action="store_true", help="fewer points (a tiny, fast run)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/02-tensors-operations/04_broadcasting"),
                        help="where metrics.json is written")
    parser.add_argument("--points", type=int, default=1000, help="points in the pairwise-distance example")
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
    if args.points < 2:
        parser.error("--points must be at least 2")
    return args


def broadcast_by_hand(a: tuple, b: tuple) -> tuple | None:
    """The broadcasting rule: right-align, pad with 1s, sizes equal or one of them 1. None when incompatible."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 0 not in (x, y) else 0)  # a size-0 dim broadcasts against 1 to 0
    return tuple(out)


def the_rule(device: torch.device) -> dict:
    section("The rule: align from the right, size-1 dims stretch")
    cases = [((3, 4), (4,)), ((3, 4), (3, 1)), ((5, 1, 4), (3, 1)), ((8, 1, 6, 1), (7, 1, 5)),
             ((2, 3), (3, 2)), ((3, 4), (3,)), ((1,), (2, 3)), ((4, 1), (1, 4))]
    agree = 0
    for a, b in cases:
        mine = broadcast_by_hand(a, b)
        try:
            theirs = tuple(torch.broadcast_shapes(a, b))
            actual = tuple((torch.ones(a, device=device) + torch.ones(b, device=device)).shape)
        except RuntimeError:
            theirs = actual = None
        agree += mine == theirs == actual
        print(f"  {str(a):<13} + {str(b):<10} -> by hand {str(mine):<13} torch {str(actual):<13} "
              f"{'agree' if mine == theirs == actual else 'DISAGREE'}")
    print(f"the hand-written rule agrees with torch on {agree}/{len(cases)} cases")
    return {"rule_cases": len(cases), "rule_cases_agreeing": agree}


def mismatch(device: torch.device) -> dict:
    section("A mismatch raises (and how to fix it)")
    x = torch.ones(3, 4, device=device)       # (3, 4): 3 samples, 4 features
    row_scale = torch.arange(1.0, 4.0, device=device)  # (3,): one number per sample
    message = ""
    try:
        x * row_scale                          # (3, 4) * (3,) aligns 3 with 4: not broadcastable
    except RuntimeError as err:
        message = str(err)
    print(f"(3, 4) * (3,) -> RuntimeError: {message}")
    fixed = x * row_scale.unsqueeze(-1)        # (3, 4) * (3, 1): scales each row
    print(f"(3, 4) * (3, 1) works: row sums {fixed.sum(dim=1).tolist()} (each row scaled by its own number)")
    return {"mismatch_error_raised": "must match the size" in message,
            "unsqueeze_fix_row_sums_ok": fixed.sum(dim=1).tolist() == [4.0, 8.0, 12.0]}


def stretching(device: torch.device) -> dict:
    section("Stretching is free: expand vs repeat")
    b = torch.arange(4.0, device=device)       # (4,)
    expanded = b.expand(1000, 4)               # (1000, 4) view: stride 0 along the new dim
    repeated = b.repeat(1000, 1)               # (1000, 4) real copy
    shares = expanded.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    exp_bytes = expanded.untyped_storage().nbytes()
    rep_bytes = repeated.untyped_storage().nbytes()
    print(f"expand(1000, 4): stride {expanded.stride()}, shares b's storage: {shares}, storage {exp_bytes} bytes")
    print(f"repeat(1000, 1): stride {repeated.stride()}, storage {rep_bytes} bytes; same values: "
          f"{torch.equal(expanded, repeated)}")
    print("(broadcasting in an op does what expand does; but never write into an expanded view: "
          "1000 rows alias 4 numbers)")
    return {"expand_stride0": expanded.stride(0) == 0, "expand_shares_storage": shares,
            "expand_storage_bytes": exp_bytes, "repeat_storage_bytes": rep_bytes}


def replaces_loops(device: torch.device, n: int) -> dict:
    section("Broadcasting replaces loops")
    a = torch.randn(5, device=device)
    b = torch.randn(3, device=device)
    outer = a[:, None] * b[None, :]            # (5, 1) * (1, 3) -> (5, 3)
    loop = torch.tensor([[ai * bj for bj in b.tolist()] for ai in a.tolist()], device=device)
    outer_diff = (outer - loop).abs().max().item()
    print(f"outer product a[:, None] * b[None, :] {tuple(outer.shape)} vs a double loop: max abs diff {outer_diff:.1e};"
          f" torch.outer agrees: {torch.allclose(outer, torch.outer(a, b))}")
    feats = torch.randn(n, 16, device=device) * 3 + 5    # (N, D)
    centred = feats - feats.mean(dim=0)                   # (N, D) - (D,): every row minus the column means
    print(f"centring (N, D) - (D,): largest column mean after = {centred.mean(dim=0).abs().max().item():.1e}")
    x = torch.randn(n, 16, device=device)                 # (N, D)
    y = torch.randn(n // 2, 16, device=device)            # (M, D)
    diff = x[:, None, :] - y[None, :, :]                  # (N, 1, D) - (1, M, D) -> (N, M, D)
    dist = diff.pow(2).sum(-1).sqrt()                     # (N, M)
    cdist_diff = (dist - torch.cdist(x, y)).abs().max().item()
    print(f"pairwise distances {tuple(dist.shape)} by broadcasting vs torch.cdist: max abs diff {cdist_diff:.1e} "
          f"(the (N, M, D) intermediate took {diff.numel() * diff.element_size() / 1e6:.1f} MB)")
    return {"outer_vs_loop_max_abs_diff": outer_diff, "centred_max_abs_col_mean": centred.mean(0).abs().max().item(),
            "pairwise_vs_cdist_max_abs_diff": cdist_diff}


def silent_bug(device: torch.device, n: int) -> dict:
    section("The silent bug: (N, 1) - (N,)")
    target = torch.randn(n, device=device)             # (N,)
    pred = (target + 0.1).unsqueeze(1)                  # (N, 1): what a Linear(..., 1) layer returns
    wrong = pred - target                               # (N, 1) - (N,) -> (N, N)!
    right = pred.squeeze(1) - target                    # (N,)
    wrong_mse, right_mse = wrong.pow(2).mean().item(), right.pow(2).mean().item()
    print(f"pred {tuple(pred.shape)} - target {tuple(target.shape)} -> {tuple(wrong.shape)}, no error")
    print(f"'MSE' from that: {wrong_mse:.4f}; the true MSE (every prediction off by 0.1): {right_mse:.4f}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.nn.functional.mse_loss(pred, target)     # the library's loss sees the shapes and warns
    warned = [str(w.message) for w in caught if "target size" in str(w.message)]
    print(f"F.mse_loss(pred, target) warns: {warned[0].split('. ')[0] if warned else '(no warning)'}")
    a = torch.zeros(3, device=device)
    message = ""
    try:
        a.add_(torch.ones(3, 1, device=device))          # the result would be (3, 3): a cannot hold it
    except RuntimeError as err:
        message = str(err)
    print(f"in place, only the other operand broadcasts: zeros(3).add_(ones(3, 1)) -> RuntimeError: {message}")
    return {"silent_bug_numel": wrong.numel(), "silent_bug_mse": wrong_mse, "true_mse": right_mse,
            "mse_loss_warned": bool(warned),
            "inplace_broadcast_error_raised": bool(message)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")
    n = 64 if args.smoke else args.points

    metrics = {}
    metrics.update(the_rule(device))
    metrics.update(mismatch(device))
    metrics.update(stretching(device))
    metrics.update(replaces_loops(device, n))
    metrics.update(silent_bug(device, n))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Shapes are compared from the right; a missing or size-1 dim stretches, anything else must match.")
    print("- Stretching is a stride-0 view: no copy. Use None/unsqueeze to say WHICH axis to stretch along.")
    print("- A mismatch raises, but (N, 1) vs (N,) does not: it quietly makes (N, N). Check shapes of losses.")
    return metrics


if __name__ == "__main__":
    main()

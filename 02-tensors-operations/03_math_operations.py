"""Math on tensors: element-wise ops, reductions along a dim, the matmul family, numerical stability, dtype promotion.

Shows, with every claim measured and printed:
- element-wise arithmetic and the two integer divisions (/ always gives floats, // floors toward -infinity);
- reductions with dim= and keepdim=: which axis disappears, and how keepdim=True lets the result broadcast back
  (and how forgetting it silently normalises the wrong axis of a square matrix);
- matmul, the @ operator, bmm, einsum and a Python loop of mm computing the same batched product, compared with
  each other and with a float64 reference (max abs diff printed);
- numerical stability: exp overflows at ~89 in float32, so the naive log(sum(exp(x))) gives inf where
  torch.logsumexp (subtract the max first) is exact; the same for softmax;
- dtype promotion: what int + float, int32 + int64, float16 + float32, a 0-dim tensor or a Python scalar produce,
  uint8 wrap-around, and the error an in-place op raises when the result would not fit the tensor's dtype.

Run it:
    python 02-tensors-operations/03_math_operations.py
    python 02-tensors-operations/03_math_operations.py --device cpu --batch 32 --size 128

Takes about 2 s on a 2-core CPU. What to look for: every matmul variant within ~1e-6 of the others, "inf"
for the naive logsumexp against a finite torch.logsumexp, and the promotion table.
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
    parser.add_argument("--smoke", action="store_true", help="small matrices (a tiny, fast run)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/02-tensors-operations/03_math_operations"),
                        help="where metrics.json is written")
    parser.add_argument("--batch", type=int, default=16, help="batch size B of the batched matmuls")
    parser.add_argument("--size", type=int, default=256, help="matrix size N (each product is (N, N) @ (N, N))")
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
    if args.batch < 1 or args.size < 2:
        parser.error("--batch must be >= 1 and --size >= 2")
    return args


def elementwise(device: torch.device) -> dict:
    section("Element-wise operations")
    a = torch.tensor([1.0, 2.0, 3.0], device=device)
    b = torch.tensor([4.0, 5.0, 6.0], device=device)
    print(f"a + b = {(a + b).tolist()}, a * b = {(a * b).tolist()}, a ** 2 = {(a ** 2).tolist()}")
    same = torch.equal(a + 2 * b, torch.add(a, b, alpha=2))  # operators and functions are the same kernels
    print(f"a + 2 * b equals torch.add(a, b, alpha=2): {same}")
    print(f"exp(a) = {[round(v, 3) for v in a.exp().tolist()]}, clamp(a, 1.5, 2.5) = {a.clamp(1.5, 2.5).tolist()}")
    i = torch.tensor([7, -7], device=device)
    true_div, floor_div = i / 2, i // 2
    trunc_div = torch.div(i, 2, rounding_mode="trunc")
    print(f"[7, -7] / 2 = {true_div.tolist()} ({true_div.dtype}); // 2 = {floor_div.tolist()} (floor); "
          f"div(rounding_mode='trunc') = {trunc_div.tolist()}")
    return {"operator_equals_function": same, "int_true_div_is_float": true_div.dtype == torch.float32,
            "floor_div_of_minus7": floor_div[1].item(), "trunc_div_of_minus7": trunc_div[1].item()}


def reductions(device: torch.device) -> dict:
    section("Reductions: dim and keepdim")
    x = torch.rand(2, 3, 4, device=device)  # (B, T, C)
    print(f"x {tuple(x.shape)}: sum() {tuple(x.sum().shape)}, sum(dim=1) {tuple(x.sum(dim=1).shape)}, "
          f"sum(dim=1, keepdim=True) {tuple(x.sum(dim=1, keepdim=True).shape)}, sum(dim=(0, 2)) "
          f"{tuple(x.sum(dim=(0, 2)).shape)}")
    values, indices = x.max(dim=-1)  # along a dim, max returns both
    print(f"x.max(dim=-1) -> values {tuple(values.shape)} and indices {tuple(indices.shape)}; "
          f"indices equal argmax: {torch.equal(indices, x.argmax(dim=-1))}")
    m = torch.rand(4, 4, device=device) + 0.1  # square: the mistake below runs without an error
    right = m / m.sum(dim=1, keepdim=True)    # (4, 4) / (4, 1): each row divided by its own sum
    wrong = m / m.sum(dim=1)                  # (4, 4) / (4,) -> (1, 4): column j divided by row j's sum
    ones = torch.ones(4, device=device)
    right_err = (right.sum(dim=1) - ones).abs().max().item()
    wrong_err = (wrong.sum(dim=1) - ones).abs().max().item()
    print(f"row-normalise a 4x4: with keepdim rows sum to 1 within {right_err:.1e}; without keepdim they miss by "
          f"{wrong_err:.3f} (and no error was raised)")
    v = torch.tensor([1.0, 2.0, 3.0, 4.0], device=device)
    print(f"var of [1, 2, 3, 4]: unbiased (default, /(n-1)) {v.var().item():.4f}, correction=0 (/n) "
          f"{v.var(correction=0).item():.4f}  (correction= replaces the older unbiased=True/False)")
    return {"keepdim_row_sum_max_error": right_err, "no_keepdim_row_sum_max_error": wrong_err,
            "var_unbiased": v.var().item(), "var_biased": v.var(correction=0).item()}


def matmul_family(device: torch.device, batch: int, n: int) -> dict:
    section("matmul, @, bmm, einsum and a loop agree")
    a = torch.randn(batch, n, n, device=device) / n ** 0.5  # (B, N, K), scaled so entries of the product are ~1
    b = torch.randn(batch, n, n, device=device)             # (B, K, M)
    reference = (a.cpu().double() @ b.cpu().double()).float()  # float64 on the CPU (MPS has no float64)
    results = {
        "torch.matmul": torch.matmul(a, b),
        "a @ b": a @ b,
        "torch.bmm": torch.bmm(a, b),                         # 3-D only, no broadcasting
        "einsum bnk,bkm->bnm": torch.einsum("bnk,bkm->bnm", a, b),
        "loop of mm": torch.stack([a[i].mm(b[i]) for i in range(batch)]),
    }
    base = results["torch.matmul"]
    diffs = {}
    for name, out in results.items():
        d_ref = (out.cpu() - reference).abs().max().item()
        d_base = (out - base).abs().max().item()
        diffs[name] = d_base
        print(f"  {name:<20} {tuple(out.shape)}  vs matmul {d_base:.2e}   vs float64 {d_ref:.2e}")
    w = torch.randn(n, 8, device=device)                    # (K, 8): one weight shared by the whole batch
    broadcast = a @ w                                        # (B, N, K) @ (K, 8) -> (B, N, 8)
    print(f"matmul broadcasts: {tuple(a.shape)} @ {tuple(w.shape)} -> {tuple(broadcast.shape)}; "
          f"einsum('bnk,kj->bnj') agrees within {(torch.einsum('bnk,kj->bnj', a, w) - broadcast).abs().max():.1e}")
    return {"einsum_vs_matmul_max_abs_diff": diffs["einsum bnk,bkm->bnm"], "bmm_vs_matmul_max_abs_diff":
            diffs["torch.bmm"], "loop_vs_matmul_max_abs_diff": diffs["loop of mm"],
            "at_vs_matmul_max_abs_diff": diffs["a @ b"],
            "matmul_vs_float64_max_abs_diff": (base.cpu() - reference).abs().max().item()}


def stability(device: torch.device) -> dict:
    section("Numerical stability: logsumexp and softmax")
    x = torch.tensor([1000.0, 1000.5, 999.0], device=device)  # logits this large happen in practice
    naive = torch.log(torch.exp(x).sum())                      # exp(1000) = inf in float32 (max ~3.4e38 = e^88.7)
    m = x.max()
    manual = m + torch.log(torch.exp(x - m).sum())             # exp of values <= 0 cannot overflow
    stable = torch.logsumexp(x, dim=0)
    exact = torch.logsumexp(x.cpu().double(), dim=0).item()
    print(f"x = {x.tolist()}: naive log(sum(exp(x))) = {naive.item()}, max-shifted = {manual.item():.4f}, "
          f"torch.logsumexp = {stable.item():.4f} (float64: {exact:.4f})")
    naive_softmax = torch.exp(x) / torch.exp(x).sum()          # inf / inf = nan
    softmax = torch.softmax(x, dim=0)
    print(f"naive softmax: {naive_softmax.tolist()}; torch.softmax: {[round(v, 4) for v in softmax.tolist()]} "
          f"(sums to {softmax.sum().item():.6f})")
    small = torch.tensor([1e-8], device=device)
    print(f"log(1 + 1e-8) = {torch.log(1 + small).item():.3e} in float32; torch.log1p(1e-8) = "
          f"{torch.log1p(small).item():.3e}: the +1 rounds the 1e-8 away")
    return {"naive_logsumexp_is_inf": bool(torch.isinf(naive)), "logsumexp_abs_error": abs(stable.item() - exact),
            "naive_softmax_has_nan": bool(torch.isnan(naive_softmax).any()),
            "softmax_sum": softmax.sum().item(), "log1p_rel_error": abs(torch.log1p(small).item() - 1e-8) / 1e-8}


def promotion(device: torch.device) -> dict:
    section("dtype promotion")
    i64 = torch.tensor([1, 2], device=device)
    i32 = torch.tensor([1, 2], dtype=torch.int32, device=device)
    f16 = torch.tensor([1.0, 2.0], dtype=torch.float16, device=device)
    f32 = torch.tensor([1.0, 2.0], device=device)
    # a 0-dim tensor; MPS has no float64, so there it stays on the CPU (0-dim CPU tensors mix with any device)
    f64_0d = torch.tensor(1.0, dtype=torch.float64, device="cpu" if device.type == "mps" else device)
    flags = torch.tensor([True, False], device=device)
    cases = [
        ("int64 + float32", i64 + f32, torch.float32),
        ("int64 + Python float", i64 + 0.5, torch.float32),   # a Python float takes the default dtype
        ("int32 + int64", i32 + i64, torch.int64),
        ("float16 + float32", f16 + f32, torch.float32),
        ("float32 + 0-dim float64", f32 + f64_0d, torch.float32),  # 0-dim tensors do not widen within a category
        ("float16 * Python float", f16 * 2.5, torch.float16),
        ("bool + bool", flags + flags, torch.bool),
        ("bool + int64", flags + i64, torch.int64),
    ]
    all_match = True
    for name, out, expected in cases:
        all_match &= out.dtype == expected
        print(f"  {name:<26} -> {str(out.dtype):<14} as the rules predict ({expected}): {out.dtype == expected}")
    rt = torch.result_type(i32, 2.5)
    print(f"torch.result_type(int32 tensor, 2.5) answers without computing: {rt}")
    u8 = torch.tensor([250], dtype=torch.uint8, device=device)
    wrapped = (u8 + 10).item()                               # stays uint8: wraps modulo 256
    print(f"uint8 250 + 10 = {wrapped} (wraps around modulo 256; image code converts to float first)")
    inplace_error = ""
    try:
        i64.add_(0.5)   # the result is float, but an in-place op must keep i64's dtype
    except RuntimeError as err:
        inplace_error = str(err)
    print(f"int64_tensor.add_(0.5) raises RuntimeError: {inplace_error}")
    print("  (out of place, i64 + 0.5 is fine: it returns a new float32 tensor)")
    return {"promotion_table_matches": all_match, "uint8_wraparound_value": wrapped,
            "inplace_promotion_error_raised": bool(inplace_error)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")
    batch, n = (4, 32) if args.smoke else (args.batch, args.size)

    metrics = {}
    metrics.update(elementwise(device))
    metrics.update(reductions(device))
    metrics.update(matmul_family(device, batch, n))
    metrics.update(stability(device))
    metrics.update(promotion(device))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- A reduction removes its dim; keepdim=True keeps it as size 1 so the result broadcasts back correctly.")
    print("- matmul, @, bmm, einsum and a loop compute the same product; float32 differs from float64 by ~1e-6.")
    print("- Never exponentiate raw logits: logsumexp/softmax/log_softmax subtract the max for you.")
    print("- Mixed dtypes promote to the wider category; 0-dim tensors and Python scalars do not widen floats;")
    print("  an in-place op cannot change its tensor's dtype, so it raises instead.")
    return metrics


if __name__ == "__main__":
    main()

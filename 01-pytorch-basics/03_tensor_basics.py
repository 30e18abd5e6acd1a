"""Tensor basics: creating and manipulating the one data structure PyTorch is built on.

A tensor is an n-dimensional array with three properties you should always know: its shape, its dtype and its
device. This lesson creates tensors every common way, then shows - printing each result - arithmetic and dtype
promotion, indexing (basic, boolean, integer), reshaping (view vs reshape, transpose and contiguity, squeeze,
unsqueeze, cat, stack), reductions along a dim, and in-place operations (the ones whose names end in _).
Module 02 goes deeper into each of these; here is the tour.

Run it:
    python 01-pytorch-basics/03_tensor_basics.py
    python 01-pytorch-basics/03_tensor_basics.py --device cpu --seed 3

Takes about 2 s on a 2-core CPU. What to look for: every printed shape, dtype and device; which operations
share memory (same data_ptr) and which copy; the error a view of a transposed tensor raises.
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
                        help="where the tensors are created; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="same tour (it is tiny anyway)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/01-pytorch-basics/03_tensor_basics"),
                        help="where metrics.json is written")
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
    return args


def describe(name: str, t: torch.Tensor) -> None:
    print(f"  {name:<34} shape {str(tuple(t.shape)):<11} {str(t.dtype):<14} {t.device}")


def creation(device: torch.device) -> dict:
    section("Creating tensors: shape, dtype, device")
    made = {
        "torch.tensor([[1, 2], [3, 4]])": torch.tensor([[1, 2], [3, 4]], device=device),
        "torch.tensor([1.0, 2.0])": torch.tensor([1.0, 2.0], device=device),
        "torch.zeros(2, 3)": torch.zeros(2, 3, device=device),
        "torch.ones(2, 3, dtype=torch.int8)": torch.ones(2, 3, dtype=torch.int8, device=device),
        "torch.full((2, 2), 7.0)": torch.full((2, 2), 7.0, device=device),
        "torch.arange(0, 10, 2)": torch.arange(0, 10, 2, device=device),
        "torch.linspace(0, 1, 5)": torch.linspace(0, 1, 5, device=device),
        "torch.eye(3)": torch.eye(3, device=device),
        "torch.rand(2, 3)  (uniform [0, 1))": torch.rand(2, 3, device=device),
        "torch.randn(2, 3) (normal 0, 1)": torch.randn(2, 3, device=device),
    }
    for name, t in made.items():
        describe(name, t)
    like = torch.zeros_like(made["torch.ones(2, 3, dtype=torch.int8)"])
    describe("torch.zeros_like(int8 tensor)", like)
    print("  -> integers default to int64, Python floats to float32 (torch.get_default_dtype()); *_like copies "
          "shape, dtype and device")
    t = made["torch.zeros(2, 3)"]
    print(f"  t.ndim {t.ndim}, t.numel() {t.numel()}, t.element_size() {t.element_size()} bytes")
    return {"int_default_is_int64": int(made["torch.arange(0, 10, 2)"].dtype == torch.int64),
            "float_default_is_float32": int(made["torch.tensor([1.0, 2.0])"].dtype == torch.float32),
            "like_keeps_dtype": int(like.dtype == torch.int8), "zeros_numel": t.numel(),
            "arange_last": made["torch.arange(0, 10, 2)"][-1].item()}


def arithmetic(device: torch.device) -> dict:
    section("Arithmetic, broadcasting, dtype promotion")
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)  # (2, 2)
    b = torch.tensor([10.0, 20.0], device=device)  # (2,) broadcasts along the rows
    print(f"a + b     = {(a + b).tolist()}   (b, shape (2,), is added to each row)")
    print(f"a * a     = {(a * a).tolist()}   (element-wise)")
    print(f"a @ a     = {(a @ a).tolist()}   (matrix product, same as torch.matmul)")
    print(f"a.T       = {a.T.tolist()}")
    ints = torch.tensor([1, 2, 3], device=device)
    promoted = ints + 0.5
    print(f"int64 tensor + 0.5 -> {promoted.dtype}; int64 / 2 -> {(ints / 2).dtype} (true division); "
          f"int64 // 2 -> {(ints // 2).dtype}")
    half = torch.ones(2, dtype=torch.float16, device=device)
    print(f"float16 + float32 tensor -> {(half + torch.ones(2, device=device)).dtype} (the wider float wins)")
    return {"matmul_00": (a @ a)[0, 0].item(), "broadcast_sum": (a + b).sum().item(),
            "int_plus_float_is_float32": int(promoted.dtype == torch.float32),
            "int_div_is_float": int((ints / 2).is_floating_point())}


def indexing(device: torch.device) -> dict:
    section("Indexing: basic slices share memory, boolean and integer indexing copy")
    x = torch.arange(12, device=device).reshape(3, 4)  # (3, 4)
    print(f"x =\n{x.cpu()}")
    print(f"x[1]        = {x[1].tolist()}      (row 1)")
    print(f"x[:, 2]     = {x[:, 2].tolist()}         (column 2)")
    print(f"x[1:, ::2]  = {x[1:, ::2].tolist()}")
    mask_count = int((x > 6).sum().item())  # True counts as 1
    print(f"x[x > 6]    = {x[x > 6].tolist()}     (boolean mask -> 1-D, {mask_count} elements)")
    print(f"x[[0, 2]]   = {x[[0, 2]].tolist()}  (integer list -> rows 0 and 2)")
    row = x[1]
    row[0] = 100  # writes through: a slice is a view of x's memory
    picked = x[[0]]
    picked[0, 0] = -1  # integer indexing made a copy: x is untouched
    print(f"after row = x[1]; row[0] = 100:  x[1, 0] = {x[1, 0].item()}  (view: shared memory)")
    print(f"after p = x[[0]]; p[0, 0] = -1:   x[0, 0] = {x[0, 0].item()}    (copy)")
    return {"slice_writes_through": int(x[1, 0].item() == 100), "fancy_index_copies": int(x[0, 0].item() == 0),
            "mask_count": mask_count}


def reshaping(device: torch.device) -> dict:
    section("Reshaping: view, reshape, transpose, squeeze, unsqueeze, cat, stack")
    x = torch.arange(6, device=device)  # (6,)
    v = x.view(2, 3)  # (2, 3): same memory, new shape
    print(f"x.view(2, 3) shares memory with x: {v.data_ptr() == x.data_ptr()}")
    t = v.T  # (3, 2): a transpose only swaps strides
    print(f"v.T strides {t.stride()} vs v strides {v.stride()}; v.T.is_contiguous() = {t.is_contiguous()}")
    try:
        t.view(6)
        view_error = ""
    except RuntimeError as err:
        view_error = str(err).split(".")[0]
    print(f"v.T.view(6) -> RuntimeError: {view_error}")
    r = t.reshape(6)  # reshape copies when it must
    print(f"v.T.reshape(6) = {r.tolist()} (a copy: shares memory {r.data_ptr() == x.data_ptr()}); "
          f"same as v.T.contiguous().view(6)")
    img = torch.zeros(28, 28, device=device)  # (H, W)
    batch = img.unsqueeze(0).unsqueeze(0)  # (1, 1, H, W): models want (B, C, H, W)
    print(f"unsqueeze(0) twice: {tuple(img.shape)} -> {tuple(batch.shape)}; squeeze(): "
          f"{tuple(batch.squeeze().shape)}; permute: (B, H, W, C) {tuple(batch.permute(0, 2, 3, 1).shape)}")
    a, b = torch.ones(2, 3, device=device), torch.zeros(2, 3, device=device)
    print(f"cat([a, b], dim=0) {tuple(torch.cat([a, b]).shape)} (joins an existing dim); "
          f"stack([a, b]) {tuple(torch.stack([a, b]).shape)} (adds a new dim)")
    return {"view_shares_memory": int(v.data_ptr() == x.data_ptr()), "transpose_contiguous": int(t.is_contiguous()),
            "view_of_transpose_raises": int(bool(view_error)), "stack_ndim": torch.stack([a, b]).ndim,
            "cat_rows": torch.cat([a, b]).shape[0]}


def reductions(device: torch.device) -> dict:
    section("Reductions: dim says which axis disappears")
    x = torch.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]], device=device)  # (2, 3)
    print(f"x = {x.tolist()}")
    print(f"x.sum() = {x.sum().item()}; x.sum(dim=0) = {x.sum(dim=0).tolist()} (down the columns, shape (3,)); "
          f"x.sum(dim=1) = {x.sum(dim=1).tolist()} (along rows, shape (2,))")
    print(f"x.mean(dim=1, keepdim=True).shape = {tuple(x.mean(dim=1, keepdim=True).shape)}  (keepdim keeps it "
          f"broadcastable: x - x.mean(1, keepdim=True))")
    values, idx = x.max(dim=1)
    print(f"x.max(dim=1) -> values {values.tolist()}, indices {idx.tolist()}; x.argmax() = {x.argmax().item()} "
          f"(index into the flattened tensor)")
    centred = x - x.mean(dim=1, keepdim=True)
    print(f"row means after centring: {centred.mean(dim=1).tolist()}")
    print(f"x.std() = {x.std().item():.4f} (unbiased, divides by n-1), x.std(correction=0) = "
          f"{x.std(correction=0).item():.4f}")
    return {"sum_all": x.sum().item(), "sum_dim0_first": x.sum(dim=0)[0].item(), "max_dim1_index_0": idx[0].item(),
            "argmax_flat": x.argmax().item(), "centred_row_mean_abs": centred.mean(dim=1).abs().max().item()}


def inplace(device: torch.device) -> dict:
    section("In-place operations: the trailing underscore")
    x = torch.ones(3, device=device)
    ptr = x.data_ptr()
    y = x.add(1)  # new tensor
    x.add_(1)  # modifies x itself
    x.mul_(3)
    print(f"y = x.add(1): new memory {y.data_ptr() != ptr}; x.add_(1); x.mul_(3): x = {x.tolist()}, same memory "
          f"{x.data_ptr() == ptr}")
    x.zero_()
    print(f"x.zero_() -> {x.tolist()}; x += 1 is in-place too (x = x + 1 is not)")
    w = torch.ones(2, requires_grad=True)
    try:
        w.add_(1)
        leaf_error = ""
    except RuntimeError as err:
        leaf_error = str(err).split(".")[0]
    print(f"in-place on a leaf that requires grad -> RuntimeError: {leaf_error}")
    with torch.no_grad():
        w.add_(1)  # how optimizers update weights
    print(f"under torch.no_grad() it is allowed (that is how optimizers update weights): w = {w.tolist()}")
    return {"inplace_keeps_memory": int(x.data_ptr() == ptr), "inplace_leaf_raises": int(bool(leaf_error)),
            "weight_after_nograd_update": w[0].item()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")

    metrics = {}
    for part in (creation, arithmetic, indexing, reshaping, reductions, inplace):
        metrics.update(part(device))

    section("Moving between devices and dtypes")
    x = torch.randn(2, 2)  # made on the CPU
    moved = x.to(device)
    cast = x.to(torch.float64)
    print(f"x.to({device}) -> {moved.device}; x.to(torch.float64) -> {cast.dtype}; .to() returns a tensor "
          f"(x itself if nothing changes: {x.to('cpu') is x}), so always assign it: x = x.to(device)")
    metrics["to_same_returns_self"] = int(x.to("cpu") is x)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Know every tensor's shape, dtype and device; most bugs are one of the three.")
    print("- Integers are int64 and floats float32 by default; int / int gives a float.")
    print("- Slices and view() share memory; boolean/integer indexing and some reshape() calls copy.")
    print("- A transposed tensor is not contiguous: view() fails, reshape() or .contiguous() works.")
    print("- Methods ending in _ change the tensor in place; autograd forbids that on leaves outside no_grad.")
    return metrics


if __name__ == "__main__":
    main()

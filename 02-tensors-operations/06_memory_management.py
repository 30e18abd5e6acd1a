"""Memory: what a tensor costs in bytes, what keeps it alive, and in-place operations (their savings and their trap).

Shows, with every claim measured and printed:
- bytes = numel * element_size, checked against untyped_storage().nbytes() for several dtypes;
- a small view of a huge tensor keeps the WHOLE storage alive after `del big`; .clone() copies just the slice and
  lets the big block go (on an accelerator, torch.accelerator.memory_allocated proves it; on a CPU, which keeps no
  allocator statistics, the storage sizes and data pointers do);
- in-place ops (the trailing _: add_, mul_, clamp_, and out=): the data_ptr stays, no new allocation, and the
  tensor's version counter ._version counts every write;
- the autograd trap: modifying in place a tensor that backward needs raises "one of the variables needed for
  gradient computation has been modified by an inplace operation" (caught and printed, with ._version), and the
  out-of-place fix;
- peak memory of an out-of-place chain against the same chain in place: on an accelerator (CUDA, MPS, ...) with
  torch.accelerator.max_memory_allocated, and memory_allocated vs memory_reserved (the caching allocator); on a CPU,
  the new storages each chain allocates (counted by data pointer), and a note of what a CPU cannot report.

Run it:
    python 02-tensors-operations/06_memory_management.py
    python 02-tensors-operations/06_memory_management.py --device cuda --megabytes 256

Takes about 2 s on a 2-core CPU. What to look for: storage bytes equal numel * element_size, a 10-element view
still holding the whole big storage, the same data_ptr before and after add_, and the in-place autograd error.
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
    parser.add_argument("--smoke", action="store_true", help="a 1 MB 'big' tensor (a tiny, fast run)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/02-tensors-operations/06_memory_management"),
                        help="where metrics.json is written")
    parser.add_argument("--megabytes", type=int, default=64, help="size of the 'big' float32 tensor in MiB")
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
    if args.megabytes < 1:
        parser.error("--megabytes must be at least 1")
    return args


def allocated(device: torch.device) -> int | None:
    """Bytes the accelerator's caching allocator has handed to live tensors, or None where nothing reports it.

    torch.accelerator.memory_allocated works for CUDA, MPS, XPU, ... alike. A CPU has no such counter in PyTorch.
    """
    if device.type == "cpu":
        return None
    try:
        torch.accelerator.synchronize()
        return torch.accelerator.memory_allocated(device)
    except (RuntimeError, ValueError, NotImplementedError):  # an accelerator whose allocator keeps no statistics
        return None


def bytes_per_dtype(device: torch.device) -> dict:
    section("Bytes: numel * element_size")
    all_equal = True
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.int8, torch.bool):
        on = torch.device("cpu") if device.type == "mps" and dtype == torch.float64 else device  # MPS: no float64
        x = torch.zeros(1000, 1000, dtype=dtype, device=on)
        computed = x.numel() * x.element_size()
        storage = x.untyped_storage().nbytes()
        all_equal &= computed == storage == x.nbytes
        print(f"  {str(dtype):<15} element_size {x.element_size()}  numel*element_size {computed:>9,}  "
              f"storage nbytes {storage:>9,}")
    print("(x.untyped_storage() is the current API; the older x.storage() returns a deprecated TypedStorage)")
    params = 25_000_000
    weights = params * torch.finfo(torch.float32).bits // 8
    print(f"a 25M-parameter model (e.g. ResNet-50): {weights / 2**20:.0f} MiB of float32 weights; training with Adam "
          f"adds gradients and two moment buffers of the same size: {4 * weights / 2**20:.0f} MiB before activations")
    return {"bytes_equal_numel_times_element_size": all_equal}


def view_keeps_storage_alive(device: torch.device, n: int) -> dict:
    section("A small view keeps a big storage alive; clone() lets it go")
    base = allocated(device)
    big = torch.randn(n, device=device)                          # (n,) float32
    big_bytes = big.untyped_storage().nbytes()
    big_ptr = big.untyped_storage().data_ptr()
    head_view = big[:10]                                         # 10 elements, but a window on all n
    head_copy = big[:10].clone()                                 # 10 elements in their own 40-byte storage
    del big                                                      # the name goes; the view still holds the storage
    after_del = allocated(device)
    view_bytes = head_view.untyped_storage().nbytes()
    copy_bytes = head_copy.untyped_storage().nbytes()
    view_shares = head_view.untyped_storage().data_ptr() == big_ptr
    copy_shares = head_copy.untyped_storage().data_ptr() == big_ptr
    print(f"big: {n:,} float32 = {big_bytes / 2**20:.1f} MiB")
    print(f"after `del big`: the 10-element view's storage is {view_bytes:,} bytes at big's address ({view_shares}); "
          f"the clone's is {copy_bytes} bytes at big's address ({copy_shares})")
    del head_view
    after_view_del = allocated(device)
    metrics = {"big_storage_bytes": big_bytes, "view_storage_bytes_after_del": view_bytes,
               "clone_storage_bytes": copy_bytes, "view_shares_big_storage": view_shares,
               "clone_shares_big_storage": copy_shares, "allocator_measured": after_del is not None}
    if after_del is not None:
        print(f"torch.accelerator.memory_allocated above the start: {(after_del - base) / 2**20:.2f} MiB after "
              f"`del big` (the view pins it), {(after_view_del - base) / 2**20:.4f} MiB after `del head_view` "
              "(only the clone left)")
        metrics.update({"device_bytes_held_by_view": after_del - base,
                        "device_bytes_after_view_deleted": after_view_del - base})
    else:
        print(f"({device.type}: PyTorch keeps no allocator counter here (torch.accelerator.memory_allocated covers "
              "accelerators), so the freed bytes are not reported; what is measured is that the view's storage is "
              "still the whole big block)")
    print("the same happens with lists of slices, e.g. keeping `batch[:1]` or `loss` tensors for logging: "
          "store .clone() or .item() instead")
    return metrics


def in_place(device: torch.device) -> dict:
    section("In-place operations: same memory, new version")
    x = torch.zeros(1000, device=device)
    ptr, v0 = x.data_ptr(), x._version
    x.add_(1).mul_(3).clamp_(max=2)                  # each _ op writes into x and bumps its version counter
    v3 = x._version
    print(f"x.add_(1).mul_(3).clamp_(max=2): data_ptr unchanged: {x.data_ptr() == ptr}, "
          f"_version {v0} -> {v3}, values {x[0].item()}")
    y = x + 1                                        # out of place: a fresh allocation
    print(f"y = x + 1: a new data_ptr: {y.data_ptr() != ptr}")
    x += 1                                           # augmented assignment on a tensor is in place (add_)
    print(f"x += 1 is in place: data_ptr unchanged {x.data_ptr() == ptr}, _version {x._version}; "
          "but x = x + 1 would rebind x to a new tensor")
    view = x[:10]
    view.zero_()
    print(f"a view shares the version counter: after x[:10].zero_(), x._version = {x._version}")
    a, b = torch.randn(1000, device=device), torch.randn(1000, device=device)
    buf = torch.empty(1000, device=device)
    buf_ptr = buf.data_ptr()
    for _ in range(3):
        torch.add(a, b, out=buf)                     # reuse one buffer instead of allocating each iteration
    print(f"torch.add(a, b, out=buf) three times: buffer data_ptr unchanged {buf.data_ptr() == buf_ptr}, "
          f"result correct {torch.equal(buf, a + b)}")
    return {"inplace_keeps_data_ptr": x.data_ptr() == ptr, "outofplace_new_data_ptr": y.data_ptr() != ptr,
            "version_after_three_inplace_ops": v3, "version_counter": x._version,
            "out_buffer_reused": buf.data_ptr() == buf_ptr}


def autograd_trap(device: torch.device) -> dict:
    section("The autograd trap: in place on a tensor backward needs")
    w = torch.randn(5, device=device, requires_grad=True)
    y = w.sigmoid()            # sigmoid's backward uses its OUTPUT: y is saved for backward (at version 0)
    print(f"y = w.sigmoid(): y._version = {y._version}")
    y.mul_(2)                  # overwrites the saved y
    print(f"after y.mul_(2): y._version = {y._version}")
    message = ""
    try:
        y.sum().backward()
    except RuntimeError as err:
        message = str(err)
    print(f"y.sum().backward() -> RuntimeError: {message.split(' Hint:')[0]}")
    y = w.sigmoid()
    y = y * 2                  # out of place: the saved y is untouched
    y.sum().backward()
    s = w.detach().sigmoid()
    grad_err = (w.grad - 2 * s * (1 - s)).abs().max().item()
    print(f"out of place, y = y * 2: backward works, grad matches 2*s*(1-s) within {grad_err:.1e}")
    leaf_message = ""
    try:
        w.add_(1)              # a leaf that requires grad cannot be changed in place outside torch.no_grad()
    except RuntimeError as err:
        leaf_message = str(err)
    print(f"w.add_(1) on a leaf requiring grad -> RuntimeError: {leaf_message}")
    with torch.no_grad():
        w.add_(1)              # how optimizers update weights
    print(f"inside torch.no_grad() it is allowed (that is what optimizer.step() does): w._version = {w._version}")
    return {"inplace_autograd_error_raised": "modified by an inplace operation" in message,
            "inplace_autograd_error_mentions_version": "is at version 1" in message,
            "outofplace_grad_max_abs_error": grad_err, "leaf_inplace_error_raised": "leaf Variable" in leaf_message}


def peak_memory(device: torch.device, n: int) -> dict:
    section("Peak memory: out-of-place chain vs in-place chain")
    x = torch.randn(n, device=device)
    size = x.untyped_storage().nbytes()
    x_ptr = x.untyped_storage().data_ptr()
    # what every device can show: which results got a storage of their own
    step1 = x * 2
    step2 = step1 + 1
    step3 = step2.exp()
    new_out_of_place = len({t.untyped_storage().data_ptr() for t in (step1, step2, step3)} - {x_ptr})
    del step1, step2, step3
    same = x.mul_(2).add_(1).exp_()
    new_in_place = len({same.untyped_storage().data_ptr()} - {x_ptr})
    print(f"x is {size / 2**20:.1f} MiB. (x * 2 + 1).exp() allocates {new_out_of_place} new storages of that size; "
          f"x.mul_(2).add_(1).exp_() allocates {new_in_place}")
    metrics = {"outofplace_new_storages": new_out_of_place, "inplace_new_storages": new_in_place,
               "tensor_bytes": size}

    def peak_extra(fn) -> int | None:
        if allocated(device) is None:
            return None
        try:
            torch.accelerator.reset_peak_memory_stats(device)
        except (RuntimeError, ValueError, NotImplementedError):  # current bytes reported, but no peak tracking
            return None
        start = allocated(device)
        out = fn()
        torch.accelerator.synchronize()
        extra = torch.accelerator.max_memory_allocated(device) - start
        del out
        return extra

    out_of_place = peak_extra(lambda: (x * 2 + 1).exp())
    in_place_extra = peak_extra(lambda: x.mul_(2).add_(1).exp_())
    if out_of_place is None:
        print(f"({device.type}: no allocator statistics, so the peak is not reported. The chain's temporaries are "
              "freed once the next op has read them, so at most two copies of x live at once (a result is allocated "
              "while its input still exists). Rerun with --device cuda or mps to measure that peak: about "
              "2 x size(x) out of place, about 0 in place)")
        return {**metrics, "peak_measured": False}
    print(f"torch.accelerator.max_memory_allocated, peak above start: out of place {out_of_place / size:.2f} x "
          f"size(x), in place {in_place_extra / size:.2f} x size(x)")
    x = None  # drop the last reference: its block goes back to the caching allocator
    print(f"memory_allocated {torch.accelerator.memory_allocated(device) / 2**20:.1f} MiB, memory_reserved "
          f"{torch.accelerator.memory_reserved(device) / 2**20:.1f} MiB: freed blocks stay cached for reuse; "
          "torch.accelerator.empty_cache() returns them to the driver (rarely needed)")
    return {**metrics, "peak_measured": True, "outofplace_peak_extra_bytes": out_of_place,
            "inplace_peak_extra_bytes": in_place_extra}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")
    n = (1 if args.smoke else args.megabytes) * 2**20 // 4   # float32 elements

    metrics = {}
    metrics.update(bytes_per_dtype(device))
    metrics.update(view_keeps_storage_alive(device, n))
    metrics.update(in_place(device))
    metrics.update(autograd_trap(device))
    metrics.update(peak_memory(device, n))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- A tensor's cost is numel * element_size; halving the dtype halves it.")
    print("- Memory is freed when the last tensor using a storage goes, views included: clone() small slices.")
    print("- In-place ops (trailing _, out=, +=) reuse memory and bump ._version; autograd checks that version")
    print("  and refuses to backpropagate through a tensor that was overwritten after being saved.")
    print("- Reach for in place to save memory only where autograd does not need the old values.")
    return metrics


if __name__ == "__main__":
    main()

"""NumPy vs PyTorch: what converts, what shares memory, what changes dtype, and which is faster.

PyTorch tensors and NumPy arrays look alike and convert in one call, but the calls differ in one way that causes
real bugs: torch.from_numpy() and Tensor.numpy() share memory (change one, the other changes), while
torch.tensor() always copies. This lesson proves it twice - by mutating one side and printing the other, and by
comparing the raw memory addresses (Tensor.data_ptr() and ndarray.__array_interface__) - then shows the dtype
defaults that differ (NumPy float64, PyTorch float32), why a GPU tensor or one that requires grad must be detached
and brought to the CPU before .numpy(), and times one matmul in both libraries with torch.utils.benchmark.

Run it:
    python 01-pytorch-basics/04_numpy_vs_pytorch.py
    python 01-pytorch-basics/04_numpy_vs_pytorch.py --size 2048 --threads 1

Takes about 3 s on a 2-core CPU. What to look for: "shares memory: True/False" next to each conversion, with
matching or differing addresses; float64 surviving from_numpy; the timing table and the thread counts under it.
"""

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.benchmark as benchmark


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
                        help="device for the GPU-to-NumPy section; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="a small matmul and a short timing budget")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/01-pytorch-basics/04_numpy_vs_pytorch"),
                        help="where metrics.json is written")
    parser.add_argument("--size", type=int, default=1024, help="n of the (n, n) float32 matmul that is timed "
                        "(--smoke uses 128)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads for the timing (0: leave torch's default)")
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
    if args.size < 1 or args.threads < 0:
        parser.error("--size must be >= 1 and --threads >= 0")
    return args


def np_address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]  # address of the first element


def sharing() -> dict:
    section("Memory sharing: mutate one side, print the other")
    arr = np.arange(4, dtype=np.float32)
    shared = torch.from_numpy(arr)  # wraps the same buffer
    copied = torch.tensor(arr)  # always a fresh copy
    as_t = torch.as_tensor(arr)  # shares when it can (same dtype, CPU), copies otherwise
    arr[0] = 100.0
    print(f"arr[0] = 100  ->  from_numpy: {shared.tolist()}   tensor(): {copied.tolist()}   "
          f"as_tensor: {as_t.tolist()}")
    t = torch.zeros(3)
    back = t.numpy()  # a NumPy view of the tensor's memory
    t.add_(7)
    print(f"t.add_(7)       ->  t.numpy() taken before: {back.tolist()}")
    addresses = {
        "from_numpy": shared.data_ptr() == np_address(arr), "tensor": copied.data_ptr() == np_address(arr),
        "as_tensor": as_t.data_ptr() == np_address(arr), "numpy": np_address(back) == t.data_ptr(),
    }
    print(f"addresses: arr {hex(np_address(arr))}, from_numpy {hex(shared.data_ptr())}, tensor() "
          f"{hex(copied.data_ptr())}")
    for name, same in addresses.items():
        print(f"  {name:<11} shares memory: {same}")
    converted = torch.as_tensor(np.arange(3, dtype=np.float64), dtype=torch.float32)
    print(f"as_tensor(float64 array, dtype=float32) must convert, so it copies: {converted.dtype}")
    return {
        "from_numpy_sees_mutation": int(shared[0].item() == 100.0),
        "tensor_sees_mutation": int(copied[0].item() == 100.0),
        "as_tensor_sees_mutation": int(as_t[0].item() == 100.0), "numpy_sees_mutation": int(back[0] == 7.0),
        **{f"{name}_shares_address": int(same) for name, same in addresses.items()},
    }


def dtypes() -> dict:
    section("dtype defaults differ")
    np_float, t_float = np.array([0.1, 0.2]), torch.tensor([0.1, 0.2])
    print(f"np.array([0.1, 0.2]).dtype = {np_float.dtype}; torch.tensor([0.1, 0.2]).dtype = {t_float.dtype}")
    kept = torch.from_numpy(np_float)
    print(f"torch.from_numpy(float64 array).dtype = {kept.dtype}  (kept: sharing memory means keeping the bytes)")
    np_int, t_int = np.array([1, 2]), torch.tensor([1, 2])
    print(f"integers: NumPy {np_int.dtype}, torch {t_int.dtype}")
    layer = torch.nn.Linear(2, 1)  # float32 weights
    try:
        layer(kept)
        mismatch = ""
    except RuntimeError as err:
        mismatch = str(err).splitlines()[0]
    print(f"float32 layer on the float64 tensor -> RuntimeError: {mismatch}")
    print("fix: torch.from_numpy(a).float() (a copy in float32) or a.astype(np.float32) first")
    print(f"0.1 stored in float32 is {torch.tensor(0.1).item()!r}, in float64 {float(np.float64(0.1))!r}: "
          "about 7 vs 16 significant digits")
    return {"numpy_float_bits": np_float.dtype.itemsize * 8, "torch_float_bits": t_float.element_size() * 8,
            "from_numpy_float_bits": kept.element_size() * 8, "numpy_int_bits": np_int.dtype.itemsize * 8,
            "torch_int_bits": t_int.element_size() * 8, "float64_into_float32_layer_raises": int(bool(mismatch))}


def to_numpy_rules(device: torch.device) -> dict:
    section(f"Tensor -> NumPy from {device}: detach(), cpu(), numpy()")
    w = torch.ones(2, requires_grad=True)
    try:
        w.numpy()
        grad_error = ""
    except RuntimeError as err:
        grad_error = str(err).split(".")[0]
    print(f"w.numpy() on a tensor that requires grad -> RuntimeError: {grad_error}")
    result = {"requires_grad_numpy_raises": int(bool(grad_error))}
    x = torch.arange(3.0, device=device)
    if device.type == "cpu":
        print("x lives on the CPU, so x.cpu() is x itself (no copy) and x.numpy() works directly:", x.cpu() is x)
        print("on a GPU, x.numpy() raises TypeError: can't convert cuda:0 device type tensor to numpy. Use "
              "Tensor.cpu() ... : NumPy only reads host memory.")
    else:
        try:
            x.numpy()
            device_error = ""
        except TypeError as err:
            device_error = str(err).split(".")[0]
        print(f"x.numpy() with x on {device} -> TypeError: {device_error}")
        result["device_numpy_raises"] = int(bool(device_error))
    safe = w.detach().cpu().numpy()  # the idiom that always works (the copy happens in .cpu() for GPU tensors)
    print(f"the idiom that always works: t.detach().cpu().numpy() -> {safe.tolist()} "
          f"(or t.numpy(force=True), which does the same)")
    result["detach_cpu_numpy_ok"] = int(safe.tolist() == [1.0, 1.0])
    return result


def timing(n: int, threads: int, smoke: bool) -> dict:
    section(f"Speed: the same ({n}, {n}) float32 matmul in NumPy and in torch")
    if threads:
        torch.set_num_threads(threads)
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)  # same bytes, no copy
    agree = float(np.abs((ta @ tb).numpy() - a @ b).max() / np.abs(a @ b).max())
    budget = 0.2 if smoke else 1.0  # seconds of measurement per statement
    torch_threads = torch.get_num_threads()
    results = {}
    for label, stmt, env in (("numpy", "a @ b", {"a": a, "b": b}), ("torch", "ta @ tb", {"ta": ta, "tb": tb})):
        timer = benchmark.Timer(stmt=stmt, globals=env, num_threads=torch_threads, label="matmul",
                                description=label)
        results[label] = timer.blocked_autorange(min_run_time=budget)  # warm-up, then blocks of runs until budget
    flops = 2 * n**3
    for label, m in results.items():
        print(f"  {label:<6} median {m.median * 1e3:8.3f} ms   {flops / m.median / 1e9:7.1f} GFLOP/s   "
              f"({len(m.times)} blocks of {m.number_per_run} runs)")
    print(f"threads: torch intra-op {torch_threads} (torch.get_num_threads()); NumPy's BLAS has its own pool, set by "
          f"OMP_NUM_THREADS/OPENBLAS_NUM_THREADS (now {os.environ.get('OMP_NUM_THREADS', 'unset')}); "
          f"CPU cores {os.cpu_count()}")
    print(f"results agree to {agree:.1e} (relative): both call an optimised BLAS, so on one CPU they are usually "
          f"within a small factor; torch's advantage is the GPU and autograd, not CPU matmul.")
    return {"numpy_matmul_ms": results["numpy"].median * 1e3, "torch_matmul_ms": results["torch"].median * 1e3,
            "numpy_matmul_gflops": flops / results["numpy"].median / 1e9,
            "torch_matmul_gflops": flops / results["torch"].median / 1e9,
            "torch_over_numpy_speedup": results["numpy"].median / results["torch"].median,
            "matmul_rel_diff": agree, "torch_threads": torch_threads, "matmul_size": n}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)

    metrics = {**sharing(), **dtypes(), **to_numpy_rules(device),
               **timing(128 if args.smoke else args.size, args.threads, args.smoke)}

    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- torch.from_numpy and .numpy() share memory: fast, but a write on one side shows on the other.")
    print("- torch.tensor(array) always copies; torch.as_tensor copies only when it must.")
    print("- NumPy gives float64, PyTorch float32: convert with .float() before feeding a model.")
    print("- From any device, with or without grad: t.detach().cpu().numpy().")
    print("- Time with torch.utils.benchmark (warm-up, many runs, median), and say how many threads ran.")
    return metrics


if __name__ == "__main__":
    main()

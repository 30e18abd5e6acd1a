"""GPU acceleration: device-agnostic code, and measuring (correctly) what a GPU buys you.

GPU work is asynchronous: a CUDA (or MPS) call returns as soon as the kernel is queued, so a stopwatch around it
measures nothing. This lesson times matrix multiplies the way lesson 04 taught, with torch.utils.benchmark.Timer:
warm-up, then blocks of runs until a time budget is spent, reporting the median block (robust to a busy machine,
unlike the mean of a loop); its clock calls torch.accelerator.synchronize() before every reading, so queued CUDA or
MPS kernels are finished when the clock stops. It reports GFLOP/s (2*n^3 floating-point operations per second) on
the CPU and, when one is present, on the GPU across sizes and dtypes (float32, bfloat16, float16).
On a GPU it also measures host-to-device copy bandwidth from pageable and from pinned memory (GB/s) and why the
first CUDA call is slow (the CUDA context is created lazily). And it shows device-agnostic code: choose
torch.device once, create tensors there, move modules and batches with .to(device), and use torch.accelerator
for the calls that work on any accelerator.

Run it:
    python 01-pytorch-basics/05_gpu_acceleration.py
    python 01-pytorch-basics/05_gpu_acceleration.py --device cpu --sizes 256 512 1024 2048

Takes about 3 s on a 2-core CPU, a few seconds on a GPU. What to look for: CPU GFLOP/s rising with size
and levelling off; on a GPU, several (a T4) to tens (an H100) of TFLOP/s in float32 and several times more in
float16 (and in bfloat16 on Ampere or newer; older GPUs emulate it, slowly), pinned copies faster than pageable
ones, and a first CUDA call that takes far longer than the next. Without a GPU the lesson says so, runs the CPU
half, and explains what the GPU half would show.
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.benchmark as benchmark
from matplotlib.figure import Figure
from torch import nn


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
                        help="the accelerator to measure besides the CPU; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="two small sizes, short copies: a few seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/01-pytorch-basics/05_gpu_acceleration"),
                        help="where metrics.json and the plot go")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024],
                        help="matmul sizes n for the CPU (the GPU also runs 2048, 4096, 8192); --smoke: 64 128")
    parser.add_argument("--copy-mb", type=int, default=256, help="MiB copied host-to-device per transfer (GPU only)")
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
    if min(args.sizes) < 1 or args.copy_mb < 1:
        parser.error("--sizes must be >= 1 and --copy-mb >= 1")
    return args


def sync(device: torch.device) -> None:
    """Wait until every queued kernel on `device` has finished (a no-op on the CPU)."""
    if device.type != "cpu":
        torch.accelerator.synchronize()  # torch.cuda.synchronize() on CUDA, torch.mps.synchronize() on MPS


def time_matmul(n: int, dtype: torch.dtype, device: torch.device, budget_s: float) -> tuple[float, int]:
    """Median seconds per (n, n) @ (n, n) matmul, and how many matmuls were timed.

    benchmark.Timer warms up, then runs blocks of matmuls until budget_s is spent and keeps each block's time per
    run; the median block ignores the ones a busy machine slowed down. Its clock synchronises the accelerator
    (torch.accelerator.synchronize) before each reading, so a block ends only when its GPU kernels have run.
    """
    a = torch.randn(n, n, device=device).to(dtype)  # create on the device: no host copy
    b = torch.randn(n, n, device=device).to(dtype)
    threads = torch.get_num_threads()  # Timer runs with 1 thread unless told otherwise
    timer = benchmark.Timer(stmt="a @ b", globals={"a": a, "b": b}, num_threads=threads)
    measurement = timer.blocked_autorange(min_run_time=budget_s)
    return measurement.median, len(measurement.times) * measurement.number_per_run


def matmul_table(device: torch.device, sizes, dtypes, budget_s: float, prefix: str) -> dict:
    out = {}
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.").replace("float", "fp").replace("bfp", "bf")  # fp32, bf16, fp16
        for n in sizes:
            seconds, runs = time_matmul(n, dtype, device, budget_s)
            gflops = 2 * n**3 / seconds / 1e9
            out[f"{prefix}_{name}_n{n}_gflops"] = gflops
            out[f"{prefix}_{name}_n{n}_ms"] = seconds * 1e3
            print(f"  {device.type:<4} {name:<5} n={n:<5} median {seconds * 1e3:9.3f} ms  {gflops:10.3g} GFLOP/s  "
                  f"({runs} runs timed)")
    return out


def h2d_bandwidth(device: torch.device, mb: int) -> dict:
    """GB/s of host-to-device copies from ordinary (pageable) and from pinned (page-locked) host memory."""
    pageable = torch.empty(mb * 2**20, dtype=torch.uint8)
    pinned = pageable.pin_memory()  # DMA can read it directly; pageable memory is first staged through a pinned buffer
    dst = torch.empty_like(pageable, device=device)
    result = {}
    for name, src in (("pageable", pageable), ("pinned", pinned)):
        dst.copy_(src, non_blocking=True)  # warm-up
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            dst.copy_(src, non_blocking=True)  # non_blocking only overlaps with the CPU when src is pinned
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000 / 5
        result[f"h2d_{name}_gbps"] = mb * 2**20 / seconds / 1e9
        print(f"  host -> {device} from {name:<8} memory: {result[f'h2d_{name}_gbps']:6.1f} GB/s "
              f"({mb} MiB in {seconds * 1e3:.2f} ms)")
    result["pinned_over_pageable_speedup"] = result["h2d_pinned_gbps"] / result["h2d_pageable_gbps"]
    return result


def first_cuda_call(device: torch.device) -> dict:
    """Wall time of the first and second tiny CUDA op, and of the first and second small matmul (cuBLAS set-up)."""
    already = torch.cuda.is_initialized()
    times = {}
    for label, work in (("zeros", lambda: torch.zeros(1, device=device)),
                        ("matmul", lambda: torch.ones(8, 8, device=device) @ torch.ones(8, 8, device=device))):
        for attempt in ("first", "second"):
            start = time.perf_counter()
            work()
            torch.cuda.synchronize()
            times[f"cuda_{attempt}_{label}_s"] = time.perf_counter() - start
    note = " (CUDA was already initialised in this process, so neither call pays it)" if already else ""
    print(f"  torch.zeros(1, device=cuda): first {times['cuda_first_zeros_s'] * 1e3:.1f} ms, second "
          f"{times['cuda_second_zeros_s'] * 1e3:.3f} ms{note}")
    print(f"  an (8, 8) matmul:           first {times['cuda_first_matmul_s'] * 1e3:.1f} ms, second "
          f"{times['cuda_second_matmul_s'] * 1e3:.3f} ms")
    print("  the first CUDA call creates the context (driver, memory pools, kernel images); the first matmul also "
          "sets up cuBLAS. That is why every timing here warms up first.")
    return {**times, "cuda_was_initialised": int(already)}


def device_agnostic(device: torch.device) -> dict:
    section("Device-agnostic code: choose the device once, pass it down")
    acc = torch.accelerator.current_accelerator(check_available=True)
    print(f"torch.accelerator.current_accelerator(check_available=True) -> {acc} (None: CPU only); "
          f"device_count {torch.accelerator.device_count()}")
    print(f"this run: device = {device}  (from --device, via pick_device; never hard-code .cuda())")
    model = nn.Linear(8, 2)
    moved = model.to(device)  # a Module is moved in place, and .to returns the same object
    x = torch.randn(4, 8)  # (B, 8), made on the CPU like a DataLoader batch
    x_moved = x.to(device)  # a tensor's .to returns a new tensor when anything changes: assign it
    x_cast = x.to(torch.float64)
    print(f"model.to(device) is model: {moved is model}; x.to(torch.float64) is x: {x_cast is x} - so "
          f"`x.to(device)` without `x = ` silently leaves x where it was")
    y = model(x_moved)  # (B, 2), on `device`
    z = torch.zeros(4, 2, device=device)  # create directly on the device rather than create-then-copy
    print(f"model(x.to(device)) -> {tuple(y.shape)} on {y.device}; torch.zeros(..., device=device) on {z.device}")
    return {"module_to_returns_self": int(moved is model), "tensor_to_returns_new": int(x_cast is not x),
            "output_on_device": int(y.device.type == device.type)}


def save_plot(cpu: dict, gpu: dict, path: Path) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for prefix, table in (("cpu", cpu), ("gpu", gpu)):
        series = {}
        for key, value in table.items():
            _, dtype, size, unit = key.split("_")
            if unit != "gflops":
                continue
            series.setdefault(dtype, []).append((int(size[1:]), value))
        for dtype, points in series.items():
            ax.plot(*zip(*sorted(points), strict=True), marker="o", label=f"{prefix} {dtype}")
    ax.set_xscale("log", base=2)
    ax.set(yscale="log", xlabel="matrix size n", ylabel="GFLOP/s", title="matmul throughput (2 n^3 flops / time)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def throughput_note(table: dict, prefix: str, where: str) -> str:
    """The "throughput needs big work" line, from the fp32 rows of a matmul table (keys like cpu_fp32_n64_gflops)."""
    points = sorted((int(k.split("_")[2][1:]), v) for k, v in table.items()
                    if k.startswith(f"{prefix}_fp32_n") and k.endswith("_gflops"))
    if len(points) < 2:
        return ("- Throughput needs big work: small matmuls leave most of a GPU idle (give --sizes two or more values "
                "to measure it).")
    (n_small, small), (n_large, large) = points[0], points[-1]
    if large > 1.1 * small:
        return (f"- Throughput needs big work: on the {where}, n={n_large} reached {large / small:.1f} times the "
                f"GFLOP/s of n={n_small}; small matmuls leave most of it idle.")
    return (f"- Throughput needs big work on a GPU, whose thousands of cores small matmuls cannot fill; on the {where} "
            f"in this run, n={n_large} reached {large / small:.2f} times the GFLOP/s of n={n_small}: bigger was not "
            "faster per flop here.")


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    gpu = device.type != "cpu"
    sizes = [64, 128] if args.smoke else sorted(set(args.sizes))
    budget = 0.05 if args.smoke else 0.3

    metrics = {"gpu_present": int(gpu)}
    if device.type == "cuda":  # before anything else touches the GPU, or the context already exists
        section("Why the first CUDA call is slow")
        metrics.update(first_cuda_call(device))
    metrics.update(device_agnostic(device))

    section(f"CPU matmul throughput ({torch.get_num_threads()} threads)")
    cpu = matmul_table(torch.device("cpu"), sizes, [torch.float32], budget, "cpu")
    metrics.update(cpu)
    metrics["cpu_fp32_best_gflops"] = max(v for k, v in cpu.items() if k.endswith("_gflops"))
    if len(sizes) > 1:
        small, large = cpu[f"cpu_fp32_n{sizes[0]}_gflops"], cpu[f"cpu_fp32_n{sizes[-1]}_gflops"]
        trend = "more" if large > 1.1 * small else "less" if large < small / 1.1 else "about the same"
        print(f"n={sizes[-1]} reaches {large / small:.2f} times the GFLOP/s of n={sizes[0]}: {trend} work per second "
              "with bigger matrices, on this machine, now")

    gpu_table = {}
    if not gpu:
        section("GPU half: no GPU on this run")
        seen = "a CUDA GPU exists but --device cpu was chosen" if torch.cuda.is_available() else "no GPU is present"
        print(f"{seen}, so only the CPU was measured. On a GPU (rerun with --device cuda) this lesson would show:")
        print("  - matmul GFLOP/s climbing steeply with n: small matrices cannot fill thousands of cores, large "
              "ones reach several to tens of TFLOP/s in fp32 and several times that in fp16 (and in bf16 on "
              "Ampere or newer): tensor cores;")
        print("  - host-to-device copies at a few GB/s from pageable memory and faster from pinned memory "
              "(DataLoader(pin_memory=True) uses this);")
        print("  - a first CUDA call of hundreds of ms (context creation) against microseconds afterwards.")
    else:
        section(f"{device} matmul throughput")
        gpu_sizes = [128, 256] if args.smoke else sorted(set(args.sizes) | {2048, 4096, 8192})
        dtypes = [torch.float32, torch.bfloat16, torch.float16]
        gpu_table = matmul_table(device, gpu_sizes, dtypes, budget, "gpu")
        metrics.update(gpu_table)
        for name in ("fp32", "bf16", "fp16"):
            metrics[f"gpu_{name}_best_gflops"] = max(v for k, v in gpu_table.items()
                                                      if f"_{name}_" in k and k.endswith("_gflops"))
        metrics["gpu_over_cpu_fp32_speedup"] = metrics["gpu_fp32_best_gflops"] / metrics["cpu_fp32_best_gflops"]
        print(f"best fp32: GPU {metrics['gpu_fp32_best_gflops']:.0f} vs CPU {metrics['cpu_fp32_best_gflops']:.0f} "
              f"GFLOP/s: the GPU is {metrics['gpu_over_cpu_fp32_speedup']:.1f} times the CPU's best; bf16 "
              f"{metrics['gpu_bf16_best_gflops']:.0f}, fp16 {metrics['gpu_fp16_best_gflops']:.0f} GFLOP/s")
        precision = torch.get_float32_matmul_precision()
        print(f"float32 matmul precision is {precision!r}: 'highest' means true fp32; 'high' would allow TF32 "
              "tensor cores (module 09 measures the trade).")
        if device.type == "cuda":
            section("Host-to-device copy bandwidth")
            metrics.update(h2d_bandwidth(device, 16 if args.smoke else args.copy_mb))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot = args.out_dir / "matmul_gflops.png"
    save_plot(cpu, gpu_table, plot)
    print(f"\nplot saved to {plot}")
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"metrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- GPU calls are asynchronous: warm up, then time with torch.utils.benchmark (its clock synchronises the")
    print("  accelerator) or CUDA events, and read the median: a busy machine slows some runs, not the median.")
    print(throughput_note(gpu_table, "gpu", str(device)) if gpu_table else throughput_note(cpu, "cpu", "CPU"))
    print("- Lower precision (bf16/fp16) is much faster on GPUs with tensor cores; module 09 covers torch.amp.")
    print("- Pin host memory for fast, overlappable copies; keep data on the device instead of copying each step.")
    print("- One device choice, passed down; .to(device) on modules and batches; never .cuda() hard-coded.")
    return metrics


if __name__ == "__main__":
    main()

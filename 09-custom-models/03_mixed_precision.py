"""Mixed precision: bf16 and fp16 autocast, GradScaler, TF32 and channels_last, measured on one conv net.

Sections:
1. Number formats: torch.finfo of float32, bfloat16 and float16 (and TF32, which is not a storage type), a value
   that overflows fp16 but not bf16, one that underflows fp16, the rounding error of each, and why sums stay fp32.
2. What torch.amp.autocast does on this device, read off the outputs: matmul/conv/linear run in the low precision
   type, some ops are kept in float32 (which ones differs between CUDA and the CPU), losses come out in float32.
3. TF32 (torch.backends.cuda.matmul.fp32_precision / torch.backends.cudnn.conv.fp32_precision, the current API;
   torch.set_float32_matmul_precision("high") and the allow_tf32 flags are the older ones) and channels_last (NHWC
   strides, same shape).
4. One table: step time and final test accuracy of the same conv net from the same initial weights, trained with
   fp32 / TF32 / bf16 autocast / fp16 autocast + GradScaler / bf16 + channels_last (the rows this device has).
5. Why fp16 needs GradScaler: on the trained net, the gradient entries that are non-zero in fp32 but flushed to
   zero by fp16 (below its smallest subnormal, 6e-8), counted without and with loss scaling, and in bf16 (whose
   zeros are measured too: far above bf16's smallest number, small next to their tensor's other gradients).
The old CUDA-only module torch.cuda.amp (its autocast and GradScaler, deprecated) is replaced by
torch.amp.autocast("cuda", ...) and torch.amp.GradScaler("cuda"); the same two names serve the CPU ("cpu") and Apple
GPUs ("mps").

Data: scikit-learn's load_digits (1,797 real 8x8 handwritten digits), drawn in random foreground/background colours
(3 channels) and, on a GPU, upsampled to 64x64 so that the net is compute-bound, as a real vision model is.

Run it:
    python 09-custom-models/03_mixed_precision.py
    python 09-custom-models/03_mixed_precision.py --device cuda            # the speedup table on a GPU

Takes about 15 seconds on a 2-core CPU (most of it the fp16 row: this CPU has no fp16 arithmetic) and well under a
minute on a GPU; --smoke takes a few seconds. What to look for: the autocast dtype table; the table in section 4
(on an Ampere-or-later GPU, bf16 + channels_last several times faster than fp32 at the same accuracy; on a CPU,
bf16 at best a little faster and fp16 much slower); in section 5, fp16 gradients flushed to zero without the
scaler and (almost) none with it.
"""

import argparse
import copy
import importlib.util
import json
import math
import random
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}
ACCUMULATION = 16  # micro-batches per optimizer step in section 5's gradient-accumulation case


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


def synchronize(device: torch.device) -> None:
    """GPU work is asynchronous: wait for it before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where the net trains; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="tiny net, a few steps per row: a few seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/09-custom-models/03_mixed_precision"),
                        help="where metrics.json is written")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps per table row (default: 200 on a GPU, 150 on a CPU, 40 with --smoke)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step (default: 256 on a GPU, 64 on a CPU, 32 with --smoke)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="side of the (upsampled) digit images (default: 64 on a GPU, 8 on a CPU)")
    parser.add_argument("--width", type=int, default=None,
                        help="channels of the first conv stage, doubled twice (default: 96 on a GPU, 16 on a CPU, "
                             "8 with --smoke)")
    parser.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate (OneCycle)")
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
    for name in ("steps", "batch_size", "width"):
        value = getattr(args, name)
        if value is not None and value < (10 if name == "steps" else 2):
            parser.error(f"--{name.replace('_', '-')} must be at least {10 if name == 'steps' else 2}")
    if args.image_size is not None and not 8 <= args.image_size <= 256:
        parser.error("--image-size must be between 8 (the digits' own size) and 256")
    if args.batch_size is not None and args.batch_size > 1000:
        parser.error("--batch-size must be at most 1000 (the training split holds about 1,080 digits)")
    if args.lr <= 0:
        parser.error("--lr must be positive")
    return args


def sizes(args, device) -> dict:
    """Per-device defaults: a GPU needs a big enough net and batch to be compute-bound, or there is nothing to
    speed up (kernel launches would dominate every row alike)."""
    gpu = device.type == "cuda"
    default = ({"steps": 40, "batch_size": 32, "image_size": 8, "width": 8} if args.smoke else
               {"steps": 200, "batch_size": 256, "image_size": 64, "width": 96} if gpu else
               {"steps": 150, "batch_size": 64, "image_size": 8, "width": 16})
    return {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in default.items()}


# --------------------------------------------------------------------------------------------------- 1. formats
def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 -> the value TF32 tensor cores compute with: 10 mantissa bits kept (round to nearest, ties away),
    fp32's 8 exponent bits. TF32 is a compute mode, not a dtype, so it is emulated on the bits."""
    bits = x.float().view(torch.int32)
    rounded = (bits + 0x1000) & ~0x1FFF  # add half of the dropped 13 bits' range, then clear them
    return rounded.view(torch.float32)


def formats_section() -> dict:
    print(f"  {'format':8s} {'sign/exp/mantissa':>17s} {'eps':>10s} {'max':>11s} {'smallest normal':>16s} "
          f"{'smallest subnormal':>19s}")
    for name, dtype, layout in (("float32", torch.float32, "1/8/23"), ("bfloat16", torch.bfloat16, "1/8/7"),
                                ("float16", torch.float16, "1/5/10")):
        fi = torch.finfo(dtype)
        print(f"  {name:8s} {layout:>17s} {fi.eps:10.3g} {fi.max:11.4g} {fi.tiny:16.4g} "
              f"{fi.tiny * fi.eps:19.4g}")  # subnormals: the normal minimum times 2^-mantissa bits
    print(f"  {'TF32':8s} {'1/8/10':>17s} {2.0 ** -10:10.3g} {'~3.403e+38':>11s} {torch.finfo().tiny:16.4g} "
          f"{'(fp32 range)':>19s}  <- a tensor-core compute mode, stored as fp32")
    big, small, third = torch.tensor(70000.0), torch.tensor(1e-8), torch.tensor(1 / 3, dtype=torch.float64)
    print(f"70000 -> fp16 {big.half().item()}, bf16 {big.bfloat16().item():g} (fp16's max is 65504: overflow)")
    print(f"1e-8  -> fp16 {small.half().item()}, bf16 {small.bfloat16().item():.3g} "
          "(below fp16's smallest subnormal 6e-8: underflow to zero)")
    errors = {}
    for name, value in (("float32", third.float().double()), ("TF32", round_to_tf32(third.float()).double()),
                        ("bfloat16", third.bfloat16().double()), ("float16", third.half().double())):
        errors[name] = abs(value.item() - 1 / 3) / (1 / 3)
    print("relative error storing 1/3: " + ", ".join(f"{n} {e:.1e}" for n, e in errors.items())
          + " (bf16: range of fp32, precision of ~3 decimal digits)")
    step = torch.tensor(0.01, dtype=torch.bfloat16)
    total = torch.tensor(0.0, dtype=torch.bfloat16)
    for _ in range(1000):  # a running sum kept in bf16, one addition at a time
        total = total + step
    naive_bf16 = total.item()
    print(f"adding 0.01 a thousand times: fp32 {torch.full((1000,), 0.01).sum().item():.4f}, a bf16 running sum "
          f"{naive_bf16:.4f} (past 4, bf16's spacing is 1/32: adding 0.01 rounds back to the same number); "
          "this is why reductions accumulate in fp32")
    return {"fp16_overflows_70000": int(math.isinf(big.half().item())),
            "bf16_keeps_70000": int(math.isfinite(big.bfloat16().item())),
            "fp16_underflows_1e-8": int(small.half().item() == 0.0),
            "bf16_rel_error_third": errors["bfloat16"], "fp16_rel_error_third": errors["float16"],
            "tf32_rel_error_third": errors["TF32"], "bf16_running_sum_1000x0.01": naive_bf16}


# ---------------------------------------------------------------------------------------------- 2. autocast ops
def autocast_table(device: torch.device, dtypes: list[str]) -> dict:
    """Run common ops under autocast and print the dtype that comes out. Inputs are float32 tensors, except that
    the ops after a matmul are fed its (low precision) output, as they are inside a model."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 32, generator=g).to(device)  # (B, D) float32
    w = torch.randn(32, 32, generator=g).to(device)
    img = torch.randn(2, 3, 8, 8, generator=g).to(device)  # (B, C, H, W)
    kernel = torch.randn(4, 3, 3, 3, generator=g).to(device)
    target = torch.randint(32, (8,), generator=g).to(device)
    ops = {
        "matmul": lambda h: x @ w, "linear": lambda h: F.linear(x, w), "conv2d": lambda h: F.conv2d(img, kernel),
        "relu": F.relu, "softmax": lambda h: h.softmax(-1), "log_softmax": lambda h: h.log_softmax(-1),
        "layer_norm": lambda h: F.layer_norm(h, (32,)), "sum": lambda h: h.sum(), "exp": torch.exp,
        "h + fp32 tensor": lambda h: h + x, "cross_entropy": lambda h: F.cross_entropy(h, target),
        "mse_loss": lambda h: F.mse_loss(h, x),
    }
    table = {}
    for name in dtypes:
        with torch.autocast(device.type, dtype=LOW[name]):
            h = x @ w  # (8, 32) in the low precision type
            table[name] = {op: fn(h).dtype for op, fn in ops.items()}
    print(f"  {'op (under autocast)':20s} " + " ".join(f"{n:>9s}" for n in dtypes))
    short = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    for op in ops:
        print(f"  {op:20s} " + " ".join(f"{short[table[n][op]]:>9s}" for n in dtypes))
    return {f"autocast_{n}_{op.replace(' ', '_').replace('+', 'plus')}_low": int(table[n][op] == LOW[n])
            for n in dtypes for op in ops}


# ------------------------------------------------------------------------------------------------ 4. the table
def real_digits():
    """scikit-learn's 1,797 real handwritten digits (load_digits, 43 writers): images (1797, 8, 8) float32 in 0-16
    and labels (1797,). Read from the file load_digits() reads (sklearn/datasets/data/digits.csv.gz: 64 pixels,
    then the label) without importing scikit-learn, which takes about 0.7 s; load_digits() if the file is not there."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return torch.tensor(digits.images, dtype=torch.float32), torch.tensor(digits.target)
    table = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.float32))  # (1797, 65)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].long()


def load_digit_splits(seed: int) -> dict:
    """(N, 1, 8, 8) float pixels in [0, 1] and (N,) labels, shuffled with the seed: 60% train, 20% val, 20% test."""
    images, y = real_digits()
    x = images.unsqueeze(1) / 16.0
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {name: (x[idx], y[idx]) for name, idx in parts.items()}


def colourise(digits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, S, S) ink in [0, 1] -> (B, 3, S, S): a random light ink colour on a random dark background."""
    b = len(digits)
    fg = 0.5 + 0.5 * torch.rand(b, 3, 1, 1, generator=generator).to(digits.device)
    bg = 0.4 * torch.rand(b, 3, 1, 1, generator=generator).to(digits.device)
    return bg + (fg - bg) * digits


def conv_block(c_in: int, c_out: int, stride: int = 1) -> list:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


def conv_net(width: int) -> nn.Sequential:
    w = width
    return nn.Sequential(
        *conv_block(3, w), *conv_block(w, w),  # (B, w, S, S)
        *conv_block(w, 2 * w, 2), *conv_block(2 * w, 2 * w),  # (B, 2w, S/2, S/2)
        *conv_block(2 * w, 4 * w, 2), *conv_block(4 * w, 4 * w),  # (B, 4w, S/4, S/4)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10),  # (B, 10)
    )


def set_tf32(device: torch.device, mode: str) -> None:
    """mode 'tf32' or 'ieee' for cuBLAS matmuls and cuDNN convolutions (the torch >= 2.9 API). Note cuDNN's
    default is already 'tf32': a "fp32" benchmark that does not set 'ieee' measures TF32 convolutions."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode


def low_precision_works(device: torch.device, dtype: torch.dtype) -> str:
    """'' if a conv forward/backward runs under autocast with this dtype here, else the reason it does not."""
    native_bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False)
    if dtype == torch.bfloat16 and not native_bf16:
        return "this GPU has no native bf16 (it arrived with Ampere, compute capability 8.0)"
    try:
        net = conv_net(4).to(device)
        with torch.autocast(device.type, dtype=dtype):
            net(torch.randn(2, 3, 8, 8, device=device)).sum().backward()
        return ""
    except (RuntimeError, TypeError) as err:
        return " ".join(str(err).split())[:100]


def train_row(row: dict, init_state: dict, data: dict, cfg: dict, device, seed: int, lr: float) -> dict:
    """Train the conv net from init_state with this row's precision settings; return step times and accuracy."""
    dtype, channels_last = row["dtype"], row["channels_last"]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = conv_net(cfg["width"]).to(device)
    model.load_state_dict(init_state)
    model = model.to(memory_format=memory_format)  # NHWC weights for convs that read NHWC
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=cfg["steps"], pct_start=0.25)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # only fp16 needs loss scaling
    set_tf32(device, row["tf32"])
    x_train, y_train = data["train"]
    g = torch.Generator().manual_seed(seed)  # the same batches and colours for every row
    times, skipped = [], 0
    for _ in range(cfg["steps"]):
        idx = torch.randint(len(y_train), (cfg["batch_size"],), generator=g)
        xb = colourise(x_train[idx.to(device)], g).contiguous(memory_format=memory_format)  # (B, 3, S, S)
        yb = y_train[idx.to(device)]
        synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(xb), yb)  # convs in low precision, the loss in float32
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # multiplies the loss by the scale (2**16 at first) when enabled
        scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
        scaler.step(optimizer)  # unscales the gradients; skips the step if any is inf/nan
        scaler.update()  # halves the scale after an overflow, doubles it after 2000 clean steps
        with warnings.catch_warnings():  # a skipped first step makes the scheduler warn about its order
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
            scheduler.step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        skipped += int(scaler.is_enabled() and scaler.get_scale() < scale_before)
    warm = max(3, len(times) // 5)  # the first steps pay for cuDNN autotuning, allocator growth, caches
    model.eval()
    x_test, y_test = data["test"]
    gt = torch.Generator().manual_seed(seed + 1)
    correct = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for i in range(0, len(y_test), 512):
            xb = colourise(x_test[i:i + 512], gt).contiguous(memory_format=memory_format)
            correct += (model(xb).argmax(1) == y_test[i:i + 512]).sum().item()
    return {"step_ms": 1e3 * statistics.median(times[warm:]), "test_acc": correct / len(y_test),
            "skipped_steps": skipped, "final_scale": scaler.get_scale() if scaler.is_enabled() else 1.0,
            "model": model}


# ---------------------------------------------------------------------------------------------- 5. underflow
def gradients(model, xb, yb, device, dtype, scaler=None, divisor: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch under autocast with dtype (None: fp32), the loss divided by `divisor` as in gradient
    accumulation over that many micro-batches. Returns (activation gradients, parameter gradients), each
    one float32 vector: the gradients arriving at every conv output (in the run's own precision: fp16 there under
    fp16 autocast), and those of the parameters, unscaled when a GradScaler is used."""
    acts = []

    def keep_grad(module, args, out):  # forward hook: ask autograd to hand us this output's gradient
        out.register_hook(lambda grad: acts.append(grad.detach().float().flatten()))

    handles = [m.register_forward_hook(keep_grad) for m in model.modules() if isinstance(m, nn.Conv2d)]
    model.zero_grad(set_to_none=True)
    try:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(xb), yb) / divisor
        if scaler is None:
            loss.backward()
            scale = 1.0
        else:
            scaler.scale(loss).backward()  # gradients flow multiplied by the scale: small ones stay representable
            scale = scaler.get_scale()
            scaler.unscale_(torch.optim.SGD(model.parameters(), lr=0.0))  # parameter grads divided back, in fp32
    finally:
        for handle in handles:
            handle.remove()
    params = torch.cat([p.grad.float().flatten() for p in model.parameters()])
    return torch.cat(acts) * (divisor / scale), params * divisor  # back on the scale of one batch


def scaler_note(flushed) -> str:
    """Section 5's conclusion on GradScaler. flushed: the fp16 + GradScaler row's (activation gradients, the same
    with the loss divided for accumulation, parameter gradients) still flushed to 0; None without an fp16 run."""
    what = ("a flushed activation gradient carries no signal to the layers below it; the scaler multiplies the loss "
            "(by 2^16 to start with)")
    if flushed is None:
        return f"{what} to keep those values above fp16's floor, and divides the result back in fp32"
    if not any(flushed):
        return f"{what} so those values stay above fp16's floor, and divides the result back in fp32"
    act, act_accum, param = flushed
    return (f"{what} to lift those values above fp16's floor, and divides the result back in fp32; here it did "
            f"not lift all of them: {act:,} activation gradients ({act_accum:,} with loss / {ACCUMULATION}) and "
            f"{param:,} parameter gradients still reached 0 with it")


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    cfg = sizes(args, device)
    metrics = {}

    section("1. Number formats: range vs precision")
    metrics.update(formats_section())

    section(f"2. What autocast does on {device.type}: output dtypes, read off this run")
    why_not = {name: low_precision_works(device, dtype) for name, dtype in LOW.items()}
    available = [name for name in LOW if not why_not[name]]
    for name in LOW:
        if why_not[name]:
            print(f"  {name} autocast unavailable here: {why_not[name]}")
    metrics.update(autocast_table(device, available))
    metrics.update({f"{name}_available": int(name in available) for name in LOW})
    fp32_kept = "softmax, log_softmax, layer_norm, sum, exp" if device.type == "cuda" else "the losses"
    print(f"on {device.type}, autocast runs matmul/linear/conv in the low precision type and keeps {fp32_kept} in "
          "float32; ops on its list of neither follow their inputs (relu) or promote to the widest (h + fp32)")

    section("3. TF32 and channels_last")
    if device.type == "cuda":
        print(f"now: torch.backends.cuda.matmul.fp32_precision = {torch.backends.cuda.matmul.fp32_precision!r}, "
              f"torch.backends.cudnn.conv.fp32_precision = {torch.backends.cudnn.conv.fp32_precision!r}")
        a = torch.randn(4096, 4096, device=device)
        b = torch.randn(4096, 4096, device=device)
        exact = (a.double() @ b.double())
        tf32_report = {}
        saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
        try:
            for mode in ("ieee", "tf32"):
                set_tf32(device, mode)
                a @ b
                synchronize(device)
                t0 = time.perf_counter()
                for _ in range(5):
                    out = a @ b
                synchronize(device)
                seconds = (time.perf_counter() - t0) / 5
                rel = ((out.double() - exact).abs().max() / exact.abs().max()).item()
                tf32_report[mode] = (2 * 4096 ** 3 / seconds / 1e9, rel)
                print(f"  4096x4096 matmul, fp32_precision={mode!r}: {tf32_report[mode][0]:,.0f} GFLOP/s, "
                      f"max error relative to fp64 {rel:.1e}")
        finally:
            torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved
        metrics.update({"matmul_ieee_gflops": tf32_report["ieee"][0], "matmul_tf32_gflops": tf32_report["tf32"][0],
                        "matmul_ieee_rel_error": tf32_report["ieee"][1],
                        "matmul_tf32_rel_error": tf32_report["tf32"][1]})
    else:
        print(f"TF32 is a tensor-core mode of NVIDIA GPUs since Ampere: not available on {device.type}; set it with "
              "torch.backends.cuda.matmul.fp32_precision = 'tf32' and torch.backends.cudnn.conv.fp32_precision = "
              "'tf32' (older: torch.set_float32_matmul_precision('high'), torch.backends.cuda.matmul.allow_tf32)")
    t = torch.zeros(2, 3, 4, 5)  # (B, C, H, W)
    t_cl = t.contiguous(memory_format=torch.channels_last)
    print(f"channels_last: same shape {tuple(t_cl.shape)}, strides {t.stride()} (NCHW) -> {t_cl.stride()} (NHWC: "
          "the channels of one pixel sit together, the layout tensor-core convolutions read)")
    metrics["channels_last_stride_c"] = t_cl.stride(1)

    section(f"4. One conv net, five ways: step time and accuracy on {device.type}")
    data = {name: (x.to(device), y.to(device)) for name, (x, y) in load_digit_splits(args.seed).items()}
    s = cfg["image_size"]
    if s != 8:  # bilinear upsampling of the 8x8 digits, once, on the device
        data = {name: (F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False), y)
                for name, (x, y) in data.items()}
    torch.manual_seed(args.seed)
    init_state = copy.deepcopy(conv_net(cfg["width"]).to(device).state_dict())  # every row starts here
    n_params = sum(v.numel() for k, v in init_state.items() if not k.endswith(("running_mean", "running_var",
                                                                                 "num_batches_tracked")))
    print(f"net: 6 conv-BN-ReLU blocks, widths {cfg['width']}/{2 * cfg['width']}/{4 * cfg['width']}, "
          f"{n_params:,} parameters; images 3x{s}x{s}, batch {cfg['batch_size']}, {cfg['steps']} SGD steps per row")
    rows = [{"name": "fp32", "dtype": None, "channels_last": False, "tf32": "ieee"},
            {"name": "tf32", "dtype": None, "channels_last": False, "tf32": "tf32"},
            {"name": "bf16", "dtype": torch.bfloat16, "channels_last": False, "tf32": "ieee"},
            {"name": "fp16 + GradScaler", "dtype": torch.float16, "channels_last": False, "tf32": "ieee"},
            {"name": "bf16 + channels_last", "dtype": torch.bfloat16, "channels_last": True, "tf32": "ieee"}]
    results = {}
    saved_flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision,
                   torch.backends.cudnn.conv.fp32_precision)
    print(f"  {'row':22s} {'step ms':>9s} {'vs fp32':>8s} {'test acc':>9s} {'acc - fp32':>11s}")
    try:
        torch.backends.cudnn.benchmark = True  # let cuDNN time its algorithms for these fixed shapes
        for row in rows:
            low = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(row["dtype"])
            if row["tf32"] == "tf32" and device.type != "cuda":
                print(f"  {row['name']:22s} skipped: TF32 needs an NVIDIA GPU (Ampere or later)")
                continue
            if low is not None and low not in available:
                print(f"  {row['name']:22s} skipped: {why_not[low]}")
                continue
            r = results[row["name"]] = train_row(row, init_state, data, cfg, device, args.seed, args.lr)
            base = results["fp32"]
            print(f"  {row['name']:22s} {r['step_ms']:9.2f} {base['step_ms'] / r['step_ms']:7.2f}x "
                  f"{r['test_acc']:9.2%} {r['test_acc'] - base['test_acc']:+11.2%}")
    finally:
        torch.backends.cudnn.benchmark = saved_flags[0]
        if device.type == "cuda":
            torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved_flags[1:]
    n_test = len(data["test"][1])
    noise = 2 * math.sqrt(max(base["test_acc"] * (1 - base["test_acc"]), 1e-4) / n_test)  # 2 standard errors
    worst = max(abs(r["test_acc"] - base["test_acc"]) for r in results.values())
    print(f"largest accuracy difference to fp32: {worst:.2%}; two standard errors of a {n_test}-digit test set "
          f"at this accuracy: {noise:.2%} -> {'within' if worst <= noise else 'outside'} noise")
    if args.smoke:
        print(f"(--smoke trains {cfg['steps']} steps per row: the accuracies have not settled, so compare them in the "
              "default run)")
    if "fp16 + GradScaler" in results:
        r = results["fp16 + GradScaler"]
        print(f"GradScaler: {r['skipped_steps']} step(s) skipped for inf/nan gradients, final scale "
              f"{r['final_scale']:g}")
        metrics.update({"fp16_skipped_steps": r["skipped_steps"], "fp16_final_scale": r["final_scale"]})
    if device.type == "cpu":
        ratio = {name: base["step_ms"] / r["step_ms"] for name, r in results.items()}
        print("on this CPU: " + ", ".join(f"{name} {x:.2f}x fp32" for name, x in ratio.items() if name != "fp32")
              + ". Without AMX (Intel Sapphire Rapids and later) bf16 gains little; most CPUs have no fp16 "
              "arithmetic and convert to and from float32 around every op")
    key = {"fp32": "fp32", "tf32": "tf32", "bf16": "bf16", "fp16 + GradScaler": "fp16",
           "bf16 + channels_last": "bf16_channels_last"}
    for name, r in results.items():
        metrics[f"{key[name]}_step_ms"] = r["step_ms"]
        metrics[f"{key[name]}_test_acc"] = r["test_acc"]
        metrics[f"{key[name]}_vs_fp32_speedup"] = base["step_ms"] / r["step_ms"]
    metrics.update({"max_acc_diff_vs_fp32": worst, "acc_noise_2se": noise, "table_rows": len(results),
                    "image_size": s, "batch_size": cfg["batch_size"], "steps": cfg["steps"]})

    section("5. fp16 gradient underflow, and what GradScaler does about it")
    model = copy.deepcopy(base["model"]).to(memory_format=torch.contiguous_format).train()
    x_train, y_train = data["train"]
    g = torch.Generator().manual_seed(args.seed + 2)
    idx = torch.randint(len(y_train), (cfg["batch_size"],), generator=g).to(device)
    xb, yb = colourise(x_train[idx], g), y_train[idx]
    state = copy.deepcopy(model.state_dict())  # train-mode forwards update BN statistics: reset before each
    grads = {}
    modes = [("fp32", None, False)]  # (name, autocast dtype, loss scaling)
    if "fp16" in available:
        modes += [("fp16", torch.float16, False), ("fp16 + GradScaler", torch.float16, True)]
    if "bf16" in available:
        modes.append(("bf16", torch.bfloat16, False))
    for name, dtype, scaling in modes:
        for divisor in (1, ACCUMULATION):
            model.load_state_dict(state)
            # a fresh GradScaler each time: unscale_ may run once per optimizer between two update() calls
            scaler = torch.amp.GradScaler(device.type) if scaling else None
            grads[name, divisor] = gradients(model, xb, yb, device, dtype, scaler, divisor)
    ref_act, ref_param = grads["fp32", 1]
    act_nonzero, param_nonzero = ref_act != 0, ref_param != 0
    below = ((ref_act.abs() < 2.0 ** -24) & act_nonzero).sum().item()
    below_accum = ((ref_act.abs() / ACCUMULATION < 2.0 ** -24) & act_nonzero).sum().item()
    print(f"trained fp32 net, one batch of {len(yb)}: {act_nonzero.sum().item():,} non-zero activation-gradient "
          f"entries (gradients arriving at the conv outputs); below fp16's smallest subnormal (2^-24 = 6e-8): "
          f"{below:,}, or {below_accum:,} when the loss is divided by {ACCUMULATION} for gradient accumulation")
    print(f"  {'run':18s} {'activation grads flushed to 0':>30s} {f'same, loss / {ACCUMULATION}':>16s} "
          f"{'param grads flushed to 0':>25s} {'param grad rel. error':>22s}")
    for name, _, _ in modes[1:]:
        act, param = grads[name, 1]
        flushed_act = ((act == 0) & act_nonzero).sum().item()
        flushed_accum = ((grads[name, ACCUMULATION][0] == 0) & act_nonzero).sum().item()
        flushed_param = ((param == 0) & param_nonzero).sum().item()
        rel = ((param - ref_param).norm() / ref_param.norm()).item()
        print(f"  {name:18s} {flushed_act:30,d} {flushed_accum:16,d} {flushed_param:25,d} {rel:22.2e}")
        key = name.replace(" + ", "_").replace(" ", "_").lower()
        metrics.update({f"zero_act_grads_{key}": flushed_act, f"zero_act_grads_{key}_accum": flushed_accum,
                        f"zero_param_grads_{key}": flushed_param})
    flushed_with_scaler = None  # (activation grads, same with loss / ACCUMULATION, param grads) still at 0
    if ("fp16 + GradScaler", 1) in grads:
        (act, param), act_accum = grads["fp16 + GradScaler", 1], grads["fp16 + GradScaler", ACCUMULATION][0]
        flushed_with_scaler = tuple(int(((t == 0) & nonzero).sum().item()) for t, nonzero in
                                    ((act, act_nonzero), (act_accum, act_nonzero), (param, param_nonzero)))
    print(scaler_note(flushed_with_scaler))
    if "bf16" in available:
        # bf16's zeros are not underflow: measure how small those gradients are, against bf16's smallest normal
        # number and against the largest gradient of the same parameter tensor
        zeroed = (grads["bf16", 1][1] == 0) & param_nonzero
        metrics["zero_param_grads_bf16_below_bf16_min"] = int(
            (zeroed & (ref_param.abs() < torch.finfo(torch.bfloat16).tiny)).sum().item())
        if zeroed.any():
            # each entry's tensor's largest |gradient|, on the gradients' own device
            tensor_max = torch.cat([chunk.abs().max().expand(chunk.numel())
                                    for chunk in ref_param.split([p.numel() for p in model.parameters()])])
            worst = ref_param.abs()[zeroed].max().item()
            ratio = (ref_param.abs() / tensor_max)[zeroed].max().item()
            metrics["zero_param_grads_bf16_max_rel_to_tensor"] = ratio
            print(f"bf16's {int(zeroed.sum())} zeroed parameter gradients are at most {worst:.1e} in fp32: far above "
                  f"bf16's smallest normal number ({torch.finfo(torch.bfloat16).tiny:.1e}; "
                  f"{metrics['zero_param_grads_bf16_below_bf16_min']} of them below it), so this is not underflow. "
                  f"They are at most {ratio:.1e} of their tensor's largest gradient, "
                  + (f"below bf16's relative precision (8 significant bits: 2^-8 = {2**-8:.1e}): lost to the "
                     "rounding of the bf16 backward, not to its range."
                     if ratio < 2**-8 else f"not below bf16's relative precision (2^-8 = {2**-8:.1e})."))
        else:
            print("bf16 zeroed no parameter gradient that fp32 has non-zero in this run.")
    metrics.update({"nonzero_act_grads_fp32": int(act_nonzero.sum().item()), "act_grads_below_fp16_min": below,
                    "act_grads_below_fp16_min_accum": below_accum})

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- bf16 has fp32's range and ~3 significant digits: no loss scaling needed, but a gradient far smaller than "
          "its neighbours can round away (section 5 measures how small).")
    print("- fp16 has 3 more bits of precision but a tiny range: small gradients vanish unless the loss is scaled.")
    print("- autocast picks per op: matmuls and convs go low, precision-sensitive ops stay float32.")
    print("- On GPUs with tensor cores, bf16 + channels_last is the fast path; on CPUs, measure before you switch.")
    print("- Benchmark with synchronisation, warm-up and the median; pin TF32 on or off explicitly ('ieee'/'tf32').")
    return metrics


if __name__ == "__main__":
    main()

"""Creating tensors: from data, with factories, on a device, at random (reproducibly), and initialised for a layer.

Shows, with every claim measured and printed:
- from data: torch.tensor copies, torch.from_numpy / torch.as_tensor share memory (a write shows on the other side);
  the dtype PyTorch infers (int64, float32, bool) and how to ask for another;
- factories: zeros/ones/full/empty/eye, the *_like and new_* families (they keep dtype and device), arange (end
  excluded, float steps drift) against linspace (both ends included, exact count);
- dtype= and device= at creation, instead of building on the CPU and copying;
- random numbers: the global seed, and a seeded torch.Generator that reproduces a stream without touching global
  state; sample statistics of randn/rand against theory;
- initialisation: nn.init.kaiming_normal_ / xavier_uniform_ against their formulas, and nn.Linear's default.

Run it:
    python 02-tensors-operations/01_tensor_creation.py
    python 02-tensors-operations/01_tensor_creation.py --device cpu --samples 1000000

Takes about 3 s on a 2-core CPU. What to look for: "shares memory: True" for from_numpy and False for
torch.tensor, arange's 10 elements against linspace's 11, "same stream: True" for the two seeded generators, and
init standard deviations within a few percent of their formulas; distributions.png under --out-dir shows the
histograms against their densities.
"""

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
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
                        help="where the tensors are created; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="fewer random samples (a tiny, fast run)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/02-tensors-operations/01_tensor_creation"),
                        help="where metrics.json is written")
    parser.add_argument("--samples", type=int, default=200_000,
                        help="random samples drawn to compare mean/std with theory")
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
    if args.samples < 100:
        parser.error("--samples must be at least 100")
    return args


def from_data() -> dict:
    section("From data: copy or share?")
    array = np.arange(4, dtype=np.float32)
    copied = torch.tensor(array)        # always copies
    shared = torch.from_numpy(array)    # same buffer as the array
    as_t = torch.as_tensor(array)       # shares when dtype and device allow, copies otherwise
    array[0] = 100.0                    # write through NumPy...
    print(f"after array[0] = 100: torch.tensor -> {copied[0].item():.0f}, from_numpy -> {shared[0].item():.0f}, "
          f"as_tensor -> {as_t[0].item():.0f}")
    tensor_copies = copied[0].item() == 0.0
    numpy_shares = shared[0].item() == 100.0 and as_t[0].item() == 100.0
    print(f"torch.tensor shares memory: {not tensor_copies}   from_numpy/as_tensor share memory: {numpy_shares}")
    as_t64 = torch.as_tensor(array, dtype=torch.float64)  # a dtype change forces a copy
    print(f"as_tensor(..., dtype=float64) shares memory: {as_t64.data_ptr() == shared.data_ptr()}")
    inferred = {
        "[1, 2, 3]": torch.tensor([1, 2, 3]).dtype,
        "[1.0, 2.0]": torch.tensor([1.0, 2.0]).dtype,
        "[True, False]": torch.tensor([True, False]).dtype,
        "np.float64 array": torch.tensor(np.zeros(2)).dtype,
    }
    for source, dtype in inferred.items():
        print(f"  torch.tensor({source}) -> {dtype}")
    print("  (Python floats become float32, the default dtype; NumPy's float64 stays float64: cast with .float())")
    return {"tensor_copies_data": tensor_copies, "from_numpy_shares_memory": numpy_shares,
            "as_tensor_dtype_change_copies": as_t64.data_ptr() != shared.data_ptr(),
            "int_list_is_int64": inferred["[1, 2, 3]"] == torch.int64,
            "float_list_is_float32": inferred["[1.0, 2.0]"] == torch.float32}


def factories(device: torch.device) -> dict:
    section("Factories, *_like and new_*")
    z = torch.zeros(2, 3, device=device)                     # (2, 3) float32
    o = torch.ones(2, 3, dtype=torch.int32, device=device)   # (2, 3) int32
    f = torch.full((2, 2), 7.5, device=device)
    e = torch.empty(3, device=device)                        # uninitialised: whatever was in memory, never read it
    eye = torch.eye(3, device=device)
    print(f"zeros {tuple(z.shape)} {z.dtype}, ones {o.dtype}, full -> {f[0, 0].item()}, "
          f"eye trace {eye.trace().item()}, empty {tuple(e.shape)} (values undefined)")
    like = torch.zeros_like(o)          # same shape, dtype AND device as o
    rand_like = torch.rand_like(z)      # rand_like needs a float input: it copies the dtype
    new = o.new_full((4,), 3)           # new_*: a new shape, o's dtype and device
    keeps = like.dtype == o.dtype and like.device == o.device and new.dtype == o.dtype
    print(f"zeros_like(int32 tensor) -> {like.dtype} on {like.device}; new_full((4,), 3) -> {new.dtype}; "
          f"rand_like -> {rand_like.dtype}")

    section("arange vs linspace")
    a = torch.arange(0, 1, 0.1, device=device)      # end excluded; the count comes from a float division
    b = torch.linspace(0, 1, 11, device=device)     # both ends included, exactly 11 points
    print(f"arange(0, 1, 0.1): {a.numel()} elements, last {a[-1].item():.4f}")
    print(f"linspace(0, 1, 11): {b.numel()} elements, last {b[-1].item():.4f}")
    drift = torch.arange(1, 1.3, 0.1, dtype=torch.float64)  # count = ceil((1.3 - 1) / 0.1) = ceil(3.0000000000000004)
    print(f"arange(1, 1.3, 0.1): {[round(v, 4) for v in drift.tolist()]}: the 'excluded' end 1.3 is in it, because "
          "(1.3 - 1) / 0.1 rounds up to 4 steps")
    print("  -> linspace when you know how many points you want, arange for integers")
    ints = torch.arange(5, device=device)
    print(f"arange(5) -> {ints.tolist()} ({ints.dtype})")
    return {"factories_keep_dtype_device": keeps, "arange_numel": a.numel(), "linspace_numel": b.numel(),
            "linspace_last": b[-1].item(),
            "arange_float_step_numel": drift.numel()}


def dtype_and_device(device: torch.device) -> dict:
    section("dtype= and device= at creation")
    x = torch.randn(3, 3, dtype=torch.float16, device=device)
    print(f"randn(3, 3, dtype=float16, device={device}) -> {x.dtype} on {x.device}")
    print(f"default dtype: {torch.get_default_dtype()}; bytes per element: float32 "
          f"{torch.tensor(0.0).element_size()}, float16 {x.element_size()}, int64 {torch.tensor(0).element_size()}")
    moved = torch.zeros(3).to(device)   # works, but builds on the CPU first and copies (slow for big tensors on a GPU)
    direct = torch.zeros(3, device=device)
    print(f"torch.zeros(3).to(device) and torch.zeros(3, device=device) are equal: {torch.equal(moved, direct)}; "
          "the second skips the host-to-device copy")
    return {"float16_element_size": x.element_size()}


def fmt(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:+.4f}" for v in t[:3].tolist()) + ", ...]"


def randomness(device: torch.device, seed: int, n: int, keep: dict) -> dict:
    section("Random numbers and generators")
    g1 = torch.Generator(device=device).manual_seed(seed)
    g2 = torch.Generator(device=device).manual_seed(seed)
    a = torch.randn(5, generator=g1, device=device)
    torch.randn(1000, device=device)  # global RNG use in between does not disturb a private generator
    b = torch.randn(5, generator=g2, device=device)
    same = torch.equal(a, b)
    c = torch.randn(5, generator=torch.Generator(device=device).manual_seed(seed + 1), device=device)
    print(f"two generators seeded {seed}: {fmt(a)} vs {fmt(b)} -> same stream: {same}")
    print(f"seed {seed + 1}: {fmt(c)} -> differs: {not torch.equal(a, c)}")
    torch.manual_seed(seed)
    x1 = torch.rand(3, device=device)
    torch.manual_seed(seed)
    x2 = torch.rand(3, device=device)
    print(f"torch.manual_seed({seed}) twice -> same rand(3): {torch.equal(x1, x2)}")

    g = torch.Generator(device=device).manual_seed(seed)
    normal = torch.randn(n, generator=g, device=device)
    uniform = torch.rand(n, generator=g, device=device)
    ints = torch.randint(0, 10, (n,), generator=g, device=device)
    perm = torch.randperm(10, generator=g, device=device)
    keep["randn"], keep["rand"] = normal.cpu(), uniform.cpu()
    print(f"randn({n}): mean {normal.mean().item():+.4f} (theory 0), std {normal.std().item():.4f} (theory 1)")
    print(f"rand({n}): mean {uniform.mean().item():.4f} (theory 0.5), std {uniform.std().item():.4f} "
          f"(theory {1 / math.sqrt(12):.4f})")
    print(f"randint(0, 10): min {ints.min().item()}, max {ints.max().item()} (high is excluded); "
          f"randperm(10): {perm.tolist()}")
    return {"generator_reproducible": same, "different_seed_differs": not torch.equal(a, c),
            "manual_seed_reproducible": torch.equal(x1, x2), "randn_mean": normal.mean().item(),
            "randn_std": normal.std().item(), "rand_mean": uniform.mean().item(), "randint_max": ints.max().item(),
            "randperm_is_permutation": sorted(perm.tolist()) == list(range(10))}


def initialisation(device: torch.device, seed: int, keep: dict) -> dict:
    section("Initialising weights (nn.init, in place)")
    fan_out, fan_in = 256, 512
    g = torch.Generator(device=device).manual_seed(seed)
    w = torch.empty(fan_out, fan_in, device=device)
    nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g)  # std = sqrt(2 / fan_in), for ReLU layers
    kaiming_theory = math.sqrt(2 / fan_in)
    keep["kaiming"], keep["kaiming_std"] = w.flatten().cpu(), kaiming_theory
    nn.init.xavier_uniform_(v := torch.empty(fan_out, fan_in, device=device), generator=g)
    xavier_bound = math.sqrt(6 / (fan_in + fan_out))          # U(-b, b), keeps variance through tanh-like layers
    print(f"kaiming_normal_ (relu): std {w.std().item():.5f}, formula sqrt(2/fan_in) = {kaiming_theory:.5f}")
    print(f"xavier_uniform_: max |w| {v.abs().max().item():.5f} <= bound sqrt(6/(fan_in+fan_out)) = {xavier_bound:.5f}")
    layer = nn.Linear(fan_in, fan_out, device=device)
    linear_bound = 1 / math.sqrt(fan_in)
    print(f"nn.Linear default: max |w| {layer.weight.abs().max().item():.5f} <= 1/sqrt(fan_in) = {linear_bound:.5f} "
          "(kaiming_uniform_ with a=sqrt(5))")
    nn.init.zeros_(layer.bias)
    print(f"nn.init.zeros_(bias): all zero: {bool((layer.bias == 0).all())}")
    return {"kaiming_std_rel_error": abs(w.std().item() - kaiming_theory) / kaiming_theory,
            "xavier_within_bound": v.abs().max().item() <= xavier_bound * (1 + 1e-6),  # float32 rounding of b
            "linear_default_within_bound": layer.weight.abs().max().item() <= linear_bound * (1 + 1e-6)}


def plot_distributions(keep: dict, path: Path) -> None:
    """Histograms of the samples against the densities they should follow."""
    fig = Figure(figsize=(12, 3.5))
    axes = fig.subplots(1, 3)
    grid = torch.linspace(-4, 4, 200)
    normal_pdf = torch.exp(-grid**2 / 2) / math.sqrt(2 * math.pi)
    axes[0].hist(keep["randn"].numpy(), bins=60, density=True, alpha=0.6, label="randn samples")
    axes[0].plot(grid.numpy(), normal_pdf.numpy(), "k", label="normal density, mean 0, std 1")
    axes[1].hist(keep["rand"].numpy(), bins=40, density=True, alpha=0.6, label="rand samples")
    axes[1].plot([0, 0, 1, 1], [0, 1, 1, 0], "k", label="U(0, 1) density")
    std = keep["kaiming_std"]
    axes[2].hist(keep["kaiming"].numpy(), bins=60, density=True, alpha=0.6, label="kaiming_normal_ weights")
    axes[2].plot((grid * std).numpy(), (normal_pdf / std).numpy(), "k",
                 label=f"normal density, mean 0, std {std:.4f}")
    for ax, title in zip(axes, ("torch.randn (seeded Generator)", "torch.rand", "nn.init.kaiming_normal_"),
                         strict=True):
        ax.set_title(title)
        ax.set_xlabel("sampled value")
        ax.set_ylabel("probability density")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # room for the legend above the curves
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"histograms against their densities saved to {path}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")
    n = 2_000 if args.smoke else args.samples

    metrics, keep = {}, {}
    metrics.update(from_data())
    metrics.update(factories(device))
    metrics.update(dtype_and_device(device))
    metrics.update(randomness(device, args.seed, n, keep))
    metrics.update(initialisation(device, args.seed, keep))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    section("Plot")
    plot_distributions(keep, args.out_dir / "distributions.png")
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- torch.tensor always copies; from_numpy/as_tensor share the buffer, so a write on one side shows on both.")
    print("- Give dtype= and device= when creating; *_like and new_* inherit them, so code stays device-agnostic.")
    print("- linspace for a known number of points, arange for integer ranges (its float count is fragile).")
    print("- A seeded torch.Generator reproduces its own stream whatever else uses the global RNG.")
    print("- nn.init functions work in place (trailing _) and match their formulas; nn.Linear has a sensible default.")
    return metrics


if __name__ == "__main__":
    main()

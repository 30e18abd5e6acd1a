"""Environment doctor: is this machine ready for the course?

Checks, and prints, everything the later modules rely on: Python and the OS; every package pinned in
requirements.txt, installed version against the pin (ok / mismatch / missing, with the command that fixes it);
CUDA, cuDNN and Apple's MPS; each GPU's name, memory and compute capability; what torch.utils.cpp_extension will
use to build module 09's custom ops (the C++ compiler, the ninja on PATH, CUDA_HOME as torch resolves it and the real
nvcc behind any wrapper script, TORCH_CUDA_ARCH_LIST, the build cache); CPU threads. Finally it runs a small matmul
on the chosen device and compares it with a float64 reference, so "the GPU works" is a measured fact, not a promise.

Run it:
    python 01-pytorch-basics/01_installation_setup.py
    python 01-pytorch-basics/01_installation_setup.py --device cpu --requirements path/to/requirements.txt

Takes a second or two on a laptop CPU, works offline, and exits with status 1 if a required package is missing.
What to look for: every package "ok", the device you expect under "Chosen device", and a relative error near 1e-6.
"""

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
# Used when this file was copied out of the repository and requirements.txt is not beside it.
CORE_PACKAGES = ("torch", "torchvision", "torchaudio", "numpy", "matplotlib")
PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s#;]+)")


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
                        help="device for the sanity matmul; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="same checks, smaller matmul (the doctor is fast anyway)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/01-pytorch-basics/01_installation_setup"),
                        help="where metrics.json is written")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS,
                        help="the pins to check installed packages against")
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
    if args.requirements != REQUIREMENTS and not args.requirements.is_file():  # given, but not a file: a typo
        parser.error(f"--requirements {args.requirements}: no such file")
    return args


def read_pins(path: Path) -> dict:
    """{package: pinned version or None}; the built-in core list when requirements.txt is not there."""
    if not path.is_file():
        print(f"{path} not found (was this file copied out of the repo?); checking the core packages only.")
        return dict.fromkeys(CORE_PACKAGES)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SystemExit(f"cannot read {path} as a requirements file ({err.__class__.__name__})") from None
    return {m.group(1): m.group(2) for line in text.splitlines() if (m := PIN.match(line))}


def check_packages(pins: dict) -> dict:
    """Installed version of each pinned package, compared with the pin ('+cu130' build tags ignored)."""
    counts = {"ok": 0, "mismatch": 0, "missing": 0}
    fixes = []
    for name, pinned in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed, status = "-", "missing"
        else:
            status = "ok" if pinned is None or installed.split("+")[0] == pinned else "mismatch"
        counts[status] += 1
        if status != "ok":
            fixes.append(f"{name}=={pinned}" if pinned else name)
        print(f"  {name:<20} installed {installed:<16} pinned {pinned or '(any)':<10} {status}")
    if fixes:
        print(f"  fix: {sys.executable} -m pip install {' '.join(fixes)}")
        print("       (or reinstall everything: pip install -r requirements.txt)")
    return counts


def tool_version(command: str) -> str | None:
    """First line of `command --version`, or None when the tool is not on PATH."""
    path = shutil.which(command)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return f"{path} (did not answer --version)"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else path


def report_accelerators() -> dict:
    section("Accelerators")
    cuda = torch.cuda.is_available()
    print(f"torch built with CUDA: {torch.version.cuda or 'no (CPU-only build)'}")
    print(f"CUDA available: {cuda}   devices: {torch.cuda.device_count()}")
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    print(f"cuDNN: {cudnn or 'not available'}")
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"  cuda:{i} {p.name}: {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}, "
              f"{p.multi_processor_count} SMs")
    mps = torch.backends.mps.is_available()
    print(f"Apple MPS available: {mps}")
    if not cuda and not mps:
        print("No GPU: every lesson still runs on the CPU; the GPU halves of lessons explain what they would show.")
    return {"cuda_available": int(cuda), "cuda_devices": torch.cuda.device_count(), "mps_available": int(mps),
            "cudnn_version": int(cudnn or 0)}


def real_nvcc(nvcc: str) -> Path:
    """The nvcc binary behind `nvcc` on PATH, which may be a wrapper script or a symlink: nvcc's dry run names the
    folder it really runs from (`#$ _HERE_=/usr/local/cuda-13.0/bin`)."""
    try:
        out = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
        here = re.search(r"^#\$ _HERE_=(.+)$", out.stdout + out.stderr, re.M)
    except (OSError, subprocess.SubprocessError):
        here = None
    return Path(here.group(1).strip()) / "nvcc" if here else Path(os.path.realpath(nvcc))


def nvcc_release(nvcc: Path) -> str:
    """The line of `nvcc --version` with the version ('Cuda compilation tools, release 13.0, V13.0.88'), not the
    first line ('nvcc: NVIDIA (R) Cuda compiler driver')."""
    try:
        out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "(did not answer --version)"
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if "release" in line]
    return lines[-1] if lines else "(no version line)"


def torch_cuda_home() -> str | None:
    """CUDA_HOME as torch.utils.cpp_extension resolves it when imported: $CUDA_HOME, else $CUDA_PATH, else the
    folder above the first nvcc on PATH, else /usr/local/cuda if it exists."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home is None and (nvcc := shutil.which("nvcc")):
        home = os.path.dirname(os.path.dirname(nvcc))
    if home is None and os.path.exists("/usr/local/cuda"):
        home = "/usr/local/cuda"
    return home


def report_ninja(env_bin: Path) -> tuple[str | None, bool]:
    """torch runs `ninja` from PATH. When the venv is not activated that can be the system's (older) ninja and not
    the one pinned in requirements.txt. Returns (ninja torch calls, whether it is this environment's)."""
    on_path = shutil.which("ninja")
    print(f"ninja torch calls (first on PATH): {tool_version('ninja') or 'not found (pip install ninja)'}"
          + (f"  [{on_path}]" if on_path else ""))
    mine = env_bin / "ninja"
    is_mine = on_path is not None and mine.is_file() and Path(on_path).resolve() == mine.resolve()
    if mine.is_file() and not is_mine:
        print(f"  this Python's environment has {tool_version(str(mine))} at {mine}, which torch will not call: "
              f"activate the venv (source {env_bin}/activate) or export PATH={env_bin}:$PATH")
    return on_path, is_mine


def report_toolchain() -> dict:
    """What torch.utils.cpp_extension will use to build module 09's C++/CUDA extension (09/07 prints the same)."""
    section("Compilers (what torch.utils.cpp_extension will use; module 09 builds C++/CUDA extensions)")
    compiler = os.environ.get("CXX", "c++")
    cxx = tool_version(compiler)
    print(f"C++ compiler ($CXX or c++): {cxx or f'{compiler} not found (install g++ or clang++)'}")
    ninja, ninja_is_env = report_ninja(Path(sys.executable).parent)

    home = torch_cuda_home()
    on_path = shutil.which("nvcc")
    if on_path:
        nvcc = real_nvcc(on_path)
    else:
        nvcc = Path(home or "/nonexistent") / "bin" / "nvcc"
    nvcc_found = nvcc.is_file()
    if nvcc_found:
        behind = f" (behind the wrapper {on_path})" if on_path and Path(on_path).resolve() != nvcc.resolve() else ""
        print(f"nvcc: {nvcc}{behind}: {nvcc_release(nvcc)}")
    else:
        print("nvcc: not found (only needed for the CUDA half of 09/07; the CUDA toolkit or "
              "`pip install nvidia-cuda-nvcc` provides it)")
    toolkit = nvcc.parent.parent if nvcc_found else None
    cuda_home_ok = bool(toolkit and home and Path(home).resolve() == toolkit.resolve())
    if home is None:
        print("CUDA_HOME as torch resolves it: none (fine for C++-only extensions)")
    elif cuda_home_ok or toolkit is None:
        print(f"CUDA_HOME as torch resolves it: {home}")
    else:
        print(f"CUDA_HOME as torch resolves it: {home}: WRONG, the toolkit is {toolkit} (torch took the folder above "
              f"the nvcc on PATH). Fix: export CUDA_HOME={toolkit} before starting Python.")
    if toolkit is not None and not (toolkit / "include" / "cusparse.h").is_file():
        site = Path(torch.__file__).resolve().parents[1] / "nvidia"
        wheels = sorted(str(d) for d in site.glob("*/include") if (d / "cusparse.h").is_file())
        print(f"  {toolkit}/include has no cusparse.h (ATen/cuda/CUDAContext.h includes it): "
              + (f"pip's copy is in {wheels[0]} (09/07 adds it to nvcc's include path)" if wheels else
                 "install the toolkit's cuSPARSE headers"))
    print(f"MAX_JOBS: {os.environ.get('MAX_JOBS') or 'unset (ninja runs CPUs + 2 compile jobs at once)'}")
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    print("TORCH_CUDA_ARCH_LIST: "
          + (arch or "unset (torch compiles for each visible GPU; with none visible it needs a list, e.g. 9.0)"))
    cache = os.environ.get("TORCH_EXTENSIONS_DIR")
    if cache is None:
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its no-GPU warning is noise here
        from torch.utils.cpp_extension import get_default_build_root

        cache = get_default_build_root()
    print(f"Extension build cache: {cache} ($TORCH_EXTENSIONS_DIR; a rebuild with unchanged sources is instant)")
    found = {"cxx_found": cxx, "nvcc_found": nvcc if nvcc_found else None, "ninja_found": ninja}
    return {**{key: int(value is not None) for key, value in found.items()},
            "cuda_home_ok": int(cuda_home_ok), "ninja_is_this_envs": int(ninja_is_env)}


def sanity_matmul(device: torch.device, n: int) -> float:
    """Largest error of an (n, n) float32 matmul on `device` against a float64 CPU reference, relative to the
    reference's largest entry."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    reference = (a.double() @ b.double()).float()
    got = (a.to(device) @ b.to(device)).cpu()  # .cpu() waits for the device to finish
    return (got - reference).abs().max().item() / reference.abs().max().item()


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)

    section("Python and OS")
    print(f"Python {platform.python_version()} ({sys.executable})")
    print(f"OS: {platform.platform()}   machine: {platform.machine()}")
    cpu_threads = torch.get_num_threads()
    print(f"CPU cores visible: {os.cpu_count()}   torch intra-op threads: {cpu_threads}")

    section(f"Packages pinned in {args.requirements.name}")
    counts = check_packages(read_pins(args.requirements))

    accelerators = report_accelerators()
    toolchain = report_toolchain()

    section("Chosen device")
    n = 128 if args.smoke else 512
    rel_error = sanity_matmul(device, n)
    print(f"device: {device}; a {n}x{n} float32 matmul there differs from a float64 reference by "
          f"{rel_error:.2e} (relative to its largest entry)")
    if device.type == "cuda":
        print("  (TF32 matmuls, if enabled, would show ~1e-3 here: module 09 explains the trade)")

    metrics = {
        "packages_ok": counts["ok"], "packages_mismatch": counts["mismatch"], "packages_missing": counts["missing"],
        **accelerators, **toolchain, "cpu_threads": cpu_threads, "matmul_rel_error": rel_error,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- 'mismatch' still runs, but the course is tested on the pinned versions; 'missing' must be fixed.")
    print("- torch reports CUDA only if its wheel was built for CUDA *and* a driver and GPU are present.")
    print("- The same code runs on every device: lessons choose the device once and pass it down.")
    if counts["missing"]:
        print(f"\n{counts['missing']} required package(s) missing: install them (command above), then rerun.")
        raise SystemExit(1)
    return metrics


if __name__ == "__main__":
    main()

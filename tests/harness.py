"""What the tests share: the manifest, loading a script by path, running a lesson in-process or as a subprocess with
torch's global state restored afterwards, and the checks every lesson's metrics must pass.

Conventions the checks rely on (see tests/README.md):
- `main(argv)` returns a dict of plain numbers and writes `{"metrics": that dict, "torch_version", "device", "seed",
  "wall_time_s", ...}` to `<out-dir>/metrics.json`;
- metrics that measure time or speed end in one of TIMING_SUFFIXES, so a rerun with the same seed may differ there
  and nowhere else.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
MANIFEST = TESTS / "curriculum-files.txt"
NETBLOCK = TESTS / "_netblock"

TIMING_SUFFIXES = ("_s", "_ms", "_us", "_per_s", "_gflops", "_gbps", "_speedup")
# No test asserts wall time (a busy machine must not fail the suite); tests/benchmark.py measures speed instead.
# The determinism check reruns a lesson with exactly these flags and compares with the smoke test's own run.
DETERMINISM_DEVICE, DETERMINISM_SEED = "cpu", 0


def manifest_rows() -> list[tuple[str, str]]:
    """(path, topic) for each of the curriculum's scripts, in course order."""
    rows = []
    for line in MANIFEST.read_text().splitlines():
        if line.strip():
            path, _, topic = line.partition("\t")
            rows.append((path.strip(), topic.strip()))
    return rows


def modules() -> list[str]:
    """Module folders in course order."""
    seen: dict[str, None] = {}
    for path, _ in manifest_rows():
        seen.setdefault(path.split("/")[0], None)
    return list(seen)


def module_scripts(module: str) -> list[str]:
    return [p for p, _ in manifest_rows() if p.split("/")[0] == module]


def built_modules() -> list[str]:
    """Modules whose folder exists; test_contract.py proves each holds exactly its listed scripts."""
    return [m for m in modules() if (REPO / m).is_dir()]


def built_lessons() -> list[str]:
    """Every lesson script (not exercises.py) of the modules written so far."""
    return [p for m in built_modules() for p in module_scripts(m) if not p.endswith("exercises.py")]


def is_timing_key(key: str) -> bool:
    return key.endswith(TIMING_SUFFIXES)


SHIM = """import sys
_module = sys.modules[__name__]
_module.__file__ = {path!r}
with open(_module.__file__, encoding="utf-8") as _f:
    exec(compile(_f.read(), _module.__file__, "exec"), _module.__dict__)
"""


@functools.cache
def make_shim_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="curriculum-scripts-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def shim_dir() -> Path:
    """A folder on sys.path where every script load_script imported is importable by its module name, too."""
    folder = make_shim_dir()
    if str(folder) not in sys.path:  # again after torch_state_guard put back a sys.path saved before it existed
        sys.path.append(str(folder))
    return folder


def load_script(path: Path, name: str | None = None):
    """Import a script by path under a fresh module name (the files live in folders that are not packages).

    A DataLoader worker started with spawn (the default on macOS and Windows) unpickles the lesson's Dataset by its
    module name, in a new interpreter that has the parent's sys.path but not its sys.modules: a shim of that name in
    shim_dir() lets it import the script there too.
    """
    path = Path(path)
    name = name or f"curriculum_{path.parent.name}_{path.stem}".replace("-", "_")
    (shim_dir() / f"{name}.py").write_text(SHIM.format(path=str(path.resolve())))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


@contextlib.contextmanager
def torch_state_guard(cwd: Path | None = None):
    """Run a block, then put back every piece of process-wide state a lesson may change.

    Lessons legitimately flip global switches (default dtype, grad mode, TF32, deterministic algorithms, threads,
    RNG state, print options); one lesson must never see what the previous one left behind.
    """
    import numpy as np
    import torch

    saved = {
        "dtype": torch.get_default_dtype(),
        "device": torch.get_default_device(),
        "grad": torch.is_grad_enabled(),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "anomaly": torch.is_anomaly_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cuda_matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "cwd": os.getcwd(),
        "argv": list(sys.argv),
        "environ": dict(os.environ),
        "sys_path": list(sys.path),
    }
    try:
        if cwd is not None:
            os.chdir(cwd)
        with warnings.catch_warnings():
            yield
    finally:
        os.chdir(saved["cwd"])
        sys.argv[:] = saved["argv"]
        sys.path[:] = saved["sys_path"]
        os.environ.clear()
        os.environ.update(saved["environ"])
        torch.set_default_dtype(saved["dtype"])
        torch.set_default_device(None if saved["device"].type == "cpu" else saved["device"])
        torch.set_grad_enabled(saved["grad"])
        torch.set_num_threads(saved["threads"])
        torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["deterministic_warn_only"])
        torch.set_float32_matmul_precision(saved["matmul_precision"])
        torch.autograd.set_detect_anomaly(saved["anomaly"])
        torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
        torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
        torch.backends.cuda.matmul.allow_tf32 = saved["cuda_matmul_tf32"]
        torch.backends.cudnn.allow_tf32 = saved["cudnn_tf32"]
        torch.set_printoptions(profile="default", sci_mode=None)
        torch.set_rng_state(saved["torch_rng"])
        np.random.set_state(saved["numpy_rng"])
        random.setstate(saved["python_rng"])
        if "torch._dynamo" in sys.modules:
            torch._dynamo.reset()
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


def device_asked(args, default: str) -> str:
    """The device a run was given: the last `--device` in args (argparse keeps the last), else the suite's."""
    return next((value for flag, value in zip(args[::-1][1:], args[::-1]) if flag == "--device"), default)


def check_metrics(returned, metrics_file: Path, device: str, seed: int) -> dict:
    """The contract's point 5: main returns plain numbers and writes the same dict, with context, to metrics.json."""
    assert isinstance(returned, dict) and returned, f"main() must return a non-empty dict of metrics, got {returned!r}"
    for key, value in returned.items():
        assert isinstance(key, str), f"metric names must be strings, got {key!r}"
        assert isinstance(value, (bool, int, float)), f"metric {key!r} must be a plain number, got {type(value)}"
        assert math.isfinite(value), f"metric {key!r} is not finite: {value}"
    assert metrics_file.is_file(), f"the lesson did not write {metrics_file}"
    record = json.loads(metrics_file.read_text())
    assert record["metrics"] == returned, "metrics.json must hold exactly the dict main() returned"
    assert record["seed"] == seed
    assert record["device"].split(":")[0] == device, f"metrics.json says device {record['device']}, asked {device}"
    assert record["torch_version"]
    assert record["wall_time_s"] >= 0
    return record


def run_inprocess(path: str, args: list[str], workdir: Path) -> tuple[dict, float]:
    """Import the lesson fresh and call main(args) with the working directory set to `workdir`."""
    with torch_state_guard(cwd=workdir):
        module = load_script(REPO / path)
        start = time.perf_counter()
        try:
            result = module.main(args)
        finally:
            sys.modules.pop(module.__name__, None)
        return result, time.perf_counter() - start


def subprocess_env(threads: int | None = None) -> dict:
    """The environment of a lesson run as a subprocess: network blocked, no display, and an explicit thread count.

    `threads` defaults to this process's torch thread count (under pytest-xdist, conftest.py gives each worker its
    share of the cores): a child left to torch's default would start one thread per core and fight the workers.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONPATH"] = str(NETBLOCK)
    env["CURRICULUM_BLOCK_NETWORK"] = "1"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_subprocess(path: str, args: list[str], cwd: Path, timeout: float = 3600) -> subprocess.CompletedProcess:
    """`python <repo>/<path> args` from another directory, as a learner would run it, network blocked.

    The timeout only stops a hung lesson from hanging the suite; it is not a speed budget (see tests/benchmark.py)."""
    return subprocess.run(
        [sys.executable, str(REPO / path), *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def comparable(metrics: dict) -> dict:
    """The metrics a rerun with the same seed must reproduce exactly: all but timings."""
    return {k: v for k, v in metrics.items() if not is_timing_key(k)}


def metrics_record_path(cache_dir: Path, lesson: str) -> Path:
    """Where the smoke test leaves a lesson's comparable metrics for test_determinism.py to reuse."""
    return Path(cache_dir) / (lesson.replace("/", "__") + ".json")


def save_comparable_metrics(cache_dir: Path, lesson: str, metrics: dict) -> None:
    """Written atomically: under pytest-xdist another worker may be reading it."""
    target = metrics_record_path(cache_dir, lesson)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(comparable(metrics), sort_keys=True))
    os.replace(tmp, target)


def load_comparable_metrics(cache_dir: Path, lesson: str) -> dict | None:
    target = metrics_record_path(cache_dir, lesson)
    return json.loads(target.read_text()) if target.is_file() else None


def check_odd_image_formats(read_image, rgb, folder: Path) -> None:
    """Writes `rgb` (H, W, 3 uint8) into `folder` as an animated GIF, a BMP and a TIFF, plus a 16-bit greyscale PNG
    of the same size, and checks that a project's read_image gives (3, H, W) uint8 for each: the GIF's first frame,
    BMP and TIFF pixel for pixel, the 16-bit PNG scaled to 8 bits (65535 -> 255)."""
    import numpy as np
    import torch
    from PIL import Image

    h, w = rgb.shape[:2]
    Image.fromarray(rgb).save(folder / "a.gif", save_all=True, append_images=[Image.fromarray(255 - rgb)])
    Image.fromarray(rgb).save(folder / "a.bmp")
    Image.fromarray(rgb).save(folder / "a.tif")
    grey = np.linspace(0, 65535, h * w).reshape(h, w).astype(np.uint16)
    Image.fromarray(grey).save(folder / "g16.png")
    for name in ("a.gif", "a.bmp", "a.tif"):
        img = read_image(folder / name)
        assert img.shape == (3, h, w) and img.dtype == torch.uint8, name
        if name != "a.gif":  # GIF: a 256-colour palette
            assert torch.equal(img.permute(1, 2, 0), torch.from_numpy(rgb)), name
    g = read_image(folder / "g16.png")
    assert g.dtype == torch.uint8 and g.shape == (3, h, w)
    assert abs(int(g[0, h // 2, 0]) - round(grey[h // 2, 0] / 257)) <= 1 and g[0].max() == 255, "65535 -> 255"


def check_foreign_train_states(fails, resume: list, ckpt: Path, project: str, other: str) -> None:
    """`--resume` over train_state.pt files that are not this project's: a model.pt copied over it, `other`
    project's state, this project's name on a malformed state, a list. Each must be one line naming the problem;
    `fails(*args)` runs the project and returns its error line."""
    import shutil

    import torch

    state = ckpt / "train_state.pt"
    shutil.copy(ckpt / "model.pt", state)
    assert "not a train state" in fails(*resume)
    torch.save({"project": other, "state": "{}"}, state)
    assert other in fails(*resume)
    torch.save({"project": project, "format_version": 2, "config": "x"}, state)
    assert "damaged" in fails(*resume)
    torch.save([1, 2, 3], state)
    assert "not a train state" in fails(*resume)

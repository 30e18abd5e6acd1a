"""pytest options and fixtures for the curriculum suite.

  pytest                      # everything, on the best device (cuda, then mps, then cpu)
  pytest --device cpu         # lesson smoke runs on a chosen device
  pytest --strict-exercises   # unfinished exercises fail instead of being skipped (classrooms, CI of solutions)
  pytest -m "not determinism" # skip the reruns that prove same seed -> same metrics (halves the time)
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_netblock"))

from exercise_harness import STATUS_WORDS  # noqa: E402
from harness import SMOKE_BUDGET_S, check_metrics, run_inprocess, run_subprocess  # noqa: E402
from sitecustomize import block_network  # noqa: E402


def pytest_addoption(parser):
    group = parser.getgroup("curriculum")
    group.addoption(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda", "mps"],
        help="device for the lesson smoke runs; auto picks cuda, then mps, then cpu",
    )
    group.addoption(
        "--strict-exercises",
        action="store_true",
        help="make unfinished exercises fail instead of skip",
    )


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda, but torch.cuda.is_available() is False on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise pytest.UsageError("--device mps, but torch.backends.mps.is_available() is False on this machine")
    return name


def pytest_configure(config):
    block_network()  # tests must never need the network; lessons must take their offline path
    os.environ.setdefault("MPLBACKEND", "Agg")
    config.curriculum_device = resolve_device(config.getoption("--device"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # one torch thread pool per core between the xdist workers, not one per worker
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_report_header(config):
    import torch

    return f"curriculum: torch {torch.__version__}, lessons on device {config.curriculum_device}"


@pytest.fixture
def device(request) -> str:
    return request.config.curriculum_device


@pytest.fixture
def run_lesson(request, tmp_path, device):
    """Run a lesson in-process with --smoke (network blocked, global state restored) and return its metrics.

    The metrics are also checked against metrics.json. Usage: `m = run_lesson("01-pytorch-basics/03_tensor_basics.py")`.
    """

    def run(path: str, *extra: str, smoke: bool = True, seed: int = 0) -> dict:
        out_dir = tmp_path / "out"
        workdir = tmp_path / "cwd"
        workdir.mkdir(exist_ok=True)
        args = ["--device", device, "--seed", str(seed), "--out-dir", str(out_dir), *extra]
        if smoke:
            args.append("--smoke")
        result, wall = run_inprocess(path, args, workdir)
        check_metrics(result, out_dir / "metrics.json", device, seed)
        if smoke:
            assert wall < SMOKE_BUDGET_S, f"{path} --smoke took {wall:.1f}s; a smoke run should take seconds"
        request.node.user_properties.append(("lesson_wall_s", round(wall, 2)))
        return result

    return run


@pytest.fixture
def run_lesson_subprocess(tmp_path, device):
    """Run `python <lesson> --smoke` from an unrelated directory, as a learner would; return its metrics.json."""

    def run(path: str, *extra: str) -> dict:
        import json
        from pathlib import Path

        cwd = tmp_path / "elsewhere"
        cwd.mkdir()
        done = run_subprocess(path, ["--smoke", "--device", device, *extra], cwd)
        assert done.returncode == 0, f"python {path} --smoke exited {done.returncode}:\n{done.stderr[-3000:]}"
        assert done.stdout.strip(), f"python {path} --smoke printed nothing"
        module, script = Path(path).parent.name, Path(path).stem
        metrics_file = cwd / "outputs" / module / script / "metrics.json"
        assert metrics_file.is_file(), f"the default --out-dir should be outputs/{module}/{script}/ under the cwd"
        return json.loads(metrics_file.read_text())["metrics"]

    return run


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line of overall exercise progress, from the learner-facing exercise tests that ran, printed after the
    short summary so that it sits just above pytest's final counts."""
    result = yield
    status = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            props = dict(getattr(report, "user_properties", ()) or ())
            if "exercise_status" in props and getattr(report, "when", "call") in ("call", "setup"):
                status[props["exercise_order"]] = (props["exercise_status"], props["exercise_label"])
    if not status:
        return result
    counts = {word: sum(s == word for s, _ in status.values()) for word in STATUS_WORDS}
    line = (
        f"Exercises: {counts['done']}/{len(status)} done, {counts['failing']} failing, "
        f"{counts['todo']} {STATUS_WORDS['todo']}."
    )
    upcoming = [label for _, (s, label) in sorted(status.items()) if s != "done"]
    if upcoming:
        line += f" Next: {upcoming[0]}"
    terminalreporter.write_sep("=", line, bold=True)
    return result

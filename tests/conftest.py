"""pytest options and fixtures for the curriculum suite.

  pytest                      # everything, on the best device (cuda, then mps, then cpu)
  pytest --device cpu         # lesson smoke runs on a chosen device
  pytest -rs                  # also list every skipped test with its reason: every unfinished exercise's hint
  pytest --strict-exercises   # unfinished exercises fail instead of being skipped (classrooms, CI of solutions)
  pytest -m "not determinism" # skip the reruns that prove same seed -> same metrics
  pytest --default-runs -m default_run -n 2   # the slow tier: full default runs, their accuracy thresholds asserted
  pytest tests/test_exercises.py::test_exercise -k 02-ex03   # exactly one exercise (02-ex for all of module 02)

The last lines of the output, just above pytest's counts: the next exercise with its hint, then one line of overall
exercise progress. No test here asserts wall time; `python tests/benchmark.py` measures speed.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_netblock"))

from exercise_harness import (  # noqa: E402
    STATUS_WORDS,
    Exercise,
    Outcome,
    exercise_modules,
    exercises,
    learner_error,
    next_exercise,
    one_exercise_command,
    python_command,
    wrap,
)
from harness import (  # noqa: E402
    DETERMINISM_DEVICE,
    DETERMINISM_SEED,
    check_metrics,
    device_asked,
    run_inprocess,
    run_subprocess,
    save_comparable_metrics,
)
from sitecustomize import block_network  # noqa: E402

REPORTS_LEARNER_ERROR = "reports_learner_error"  # marker on the one test that reports a broken exercises.py


def pytest_addoption(parser):
    group = parser.getgroup("curriculum")
    group.addoption(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda", "mps"],
        help="device for the lesson smoke runs; auto picks cuda, then mps, then cpu",
    )
    group.addoption(
        "--default-runs",
        action="store_true",
        help="also run the tests marked default_run: each lesson's full default configuration (minutes each), "
        "with the thresholds its issue sets asserted; without this flag they are deselected",
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
    config.pluginmanager.register(_AfterDeselection(), "curriculum-after-deselection")
    config.addinivalue_line("markers", f"{REPORTS_LEARNER_ERROR}: reports a broken exercises.py once per module")
    os.environ.setdefault("MPLBACKEND", "Agg")
    config.curriculum_device = resolve_device(config.getoption("--device"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # one torch thread pool per core between the xdist workers, not one per worker
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        # ... and the same share for any process a lesson starts itself (08's lessons run 01 --standin-only): left
        # to torch's default, such a child starts one thread per core while the workers keep theirs busy, and on
        # two cores each then ran about 10x slower (08/02 and 08/06's determinism reruns: 9 s alone, 85-117 s).
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(share)


def pytest_collection_modifyitems(config, items):
    """Default-run tests are deselected unless --default-runs (they take minutes each, so the README's test command
    leaves them out; they are not skipped, so a learner's output does not list them). Determinism reruns go last, so
    that each finds its lesson's smoke run already recorded (see run_lesson)."""
    if not config.getoption("--default-runs"):
        slow = [item for item in items if item.get_closest_marker("default_run") is not None]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if item.get_closest_marker("default_run") is None]
    items.sort(key=lambda item: item.get_closest_marker("determinism") is not None)  # stable: order kept otherwise


class _AfterDeselection:
    @pytest.hookimpl(trylast=True)  # after -k / -m deselection: the items that will actually run
    def pytest_collection_modifyitems(self, config, items):
        _mark_learner_error_reporters(items)


def _mark_learner_error_reporters(items) -> None:
    """A learner's exercises.py that does not parse (or crashes on import) is reported by ONE test: the first selected
    test_exercise of that module. Decided at collection, identically in every xdist worker."""
    looked_at: set[str] = set()
    for item in items:
        exercise = getattr(getattr(item, "callspec", None), "params", {}).get("exercise")
        if getattr(item, "originalname", "") != "test_exercise" or not isinstance(exercise, Exercise):
            continue
        if exercise.module not in looked_at:
            looked_at.add(exercise.module)
            if learner_error(exercise.module):
                item.add_marker(REPORTS_LEARNER_ERROR)


def pytest_report_header(config):
    import torch

    return f"curriculum: torch {torch.__version__}, lessons on device {config.curriculum_device}"


@pytest.fixture
def device(request) -> str:
    return request.config.curriculum_device


@pytest.fixture(scope="session")
def smoke_metrics_dir(request, tmp_path_factory):
    """A folder shared by all xdist workers of this run, where plain smoke runs leave their comparable metrics."""
    base = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # xdist: each worker's basetemp is <the run's basetemp>/gwN
        base = base.parent
    folder = base / "smoke-metrics"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def run_lesson(request, tmp_path, device, smoke_metrics_dir):
    """Run a lesson in-process with --smoke (network blocked, global state restored) and return its metrics.

    The metrics are also checked against metrics.json. Usage: `m = run_lesson("01-pytorch-basics/03_tensor_basics.py")`.
    A test's first call, if plain (no extra flags, seed 0, on the cpu), also records the metrics, so that
    test_determinism.py needs one rerun, not two runs, to prove the same seed gives the same numbers. Wall time is
    recorded, never asserted.
    """

    fresh = {"workdir": True}  # later calls in one test share its working dir (caches a first call left behind)

    def run(path: str, *extra: str, smoke: bool = True, seed: int = 0) -> dict:
        out_dir = tmp_path / "out"
        workdir = tmp_path / "cwd"
        workdir.mkdir(exist_ok=True)
        first_call, fresh["workdir"] = fresh["workdir"], False
        args = ["--device", device, "--seed", str(seed), "--out-dir", str(out_dir), *extra]
        if smoke:
            args.append("--smoke")
        result, wall = run_inprocess(path, args, workdir)
        # a test may pin the device (`run_lesson(path, "--device", "cpu")`), whatever pytest's --device
        check_metrics(result, out_dir / "metrics.json", device_asked(extra, device), seed)
        # the record must be what a rerun in a fresh folder reproduces: a plain first call only
        if first_call and smoke and not extra and seed == DETERMINISM_SEED and device == DETERMINISM_DEVICE:
            save_comparable_metrics(smoke_metrics_dir, path, result)
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


def _exercise_statuses(terminalreporter) -> dict:
    """order -> (Exercise, Outcome) from the learner-facing exercise tests that ran (under xdist too: the
    user_properties travel with each report to the controller)."""
    found = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            props = dict(getattr(report, "user_properties", ()) or ())
            if "exercise_status" in props and getattr(report, "when", "call") in ("call", "setup"):
                found[props["exercise_order"]] = props
    return dict(sorted(found.items()))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The next exercise with its one hint, then one line of overall progress, printed after the short summary so that
    they sit just above pytest's final counts. `-rs` lists every unfinished exercise's hint."""
    result = yield
    found = _exercise_statuses(terminalreporter)
    if not found:
        return result
    counts = {word: 0 for word in (*STATUS_WORDS, "unchecked")}
    rows = []
    for props in found.values():
        counts[props["exercise_status"]] += 1
        exercise = Exercise(props["exercise_module"], props["exercise_number"], props["exercise_name"])
        rows.append((exercise, Outcome(props["exercise_status"], props.get("exercise_message", ""))))
    total = sum(len(exercises(module)) for module in exercise_modules())
    partial = len(rows) < total  # -k or a path chose some: say so, or "0/1 done" reads as the learner's progress
    line = (
        f"Exercises{' selected' if partial else ''}: {counts['done']}/{len(rows)} done, {counts['failing']} failing, "
        f"{counts['todo']} {STATUS_WORDS['todo']}" + (f" ({total} in the course)" if partial else "")
    )
    if counts["unchecked"]:
        line += f", {counts['unchecked']} not checked (their exercises.py does not import)"
    write = terminalreporter.write_line
    broken = [(ex, o) for ex, o in rows if o.status == "failing" and o.message.startswith(ex.module + "/exercises.py")]
    upcoming = broken[0] if broken else next_exercise([(ex, o) for ex, o in rows if o.status != "unchecked"])
    if upcoming is not None:
        ex, outcome = upcoming
        write("")
        if broken:
            write(f"Next: fix {ex.module}/exercises.py")
            for text in outcome.message.splitlines()[1:4]:  # line number, the offending line, the caret
                write(text)
        else:
            write(f"Next: {ex.module} exercise {ex.number}, {ex.name}() \u2014 {ex.title}", bold=True)
            if outcome.status == "failing":
                write(wrap("What went wrong: " + outcome.message.splitlines()[0][:300]))
            write(wrap(f"Hint: {ex.hint}"))
            write(f"  Check it: {one_exercise_command(ex)}")
            write(f"        or: {python_command()} {ex.module}/exercises.py")
        listed = any(c in (config.getoption("reportchars") or "") for c in "sSaA")  # -rs already lists them
        if counts["todo"] > 1 and not broken and not listed:
            write("  (every unfinished exercise with its hint: add -rs)")
    terminalreporter.write_sep("=", line + ".", bold=True)
    return result

"""The harness checks itself: the network block, the state guard, the metrics check and exercise classification.

If any of these silently stopped working, every other test in the suite would prove less than it claims.
"""

from __future__ import annotations

import ast
import json
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from check_utils import describe
from exercise_harness import Outcome, evaluate
from harness import (
    REPO,
    check_metrics,
    comparable,
    device_asked,
    is_timing_key,
    load_script,
    subprocess_env,
    torch_state_guard,
)


def test_network_is_blocked_in_process():
    with pytest.raises(OSError, match="network blocked"):
        socket.getaddrinfo("download.pytorch.org", 443)
    with pytest.raises(OSError, match="network blocked"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_loopback_stays_open():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        client = socket.create_connection(server.getsockname(), timeout=5)
        peer, _ = server.accept()
        client.sendall(b"ping")
        assert peer.recv(4) == b"ping"
        client.close()
        peer.close()
    finally:
        server.close()


def test_network_is_blocked_in_lesson_subprocesses():
    probe = textwrap.dedent(
        """
        import urllib.request
        try:
            urllib.request.urlopen("https://download.pytorch.org", timeout=5)
        except OSError as err:
            print("blocked" if "network blocked" in str(err) else f"other: {err}")
        else:
            print("reached the network")
        """
    )
    done = subprocess.run([sys.executable, "-c", probe], env=subprocess_env(), capture_output=True, text=True)
    assert done.stdout.strip() == "blocked", done.stdout + done.stderr


def test_state_guard_restores_global_torch_state():
    before = (torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_num_threads(), torch.rand(1))
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    with torch_state_guard():
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        torch.use_deterministic_algorithms(True)
        torch.set_printoptions(precision=1)
        torch.manual_seed(999)
    assert torch.get_default_dtype() == before[0] and torch.is_grad_enabled() == before[1]
    assert torch.get_num_threads() == before[2]
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.rand(1), expected_next), "the RNG state inside the guard must not leak out"
    assert "0.1235" in str(torch.tensor([0.12345]))  # print options back to the default precision (4)


def _record(tmp_path, metrics, **extra):
    path = tmp_path / "metrics.json"
    fields = {"metrics": metrics, "torch_version": torch.__version__, "device": "cpu", "seed": 0, "wall_time_s": 1.0}
    path.write_text(json.dumps({**fields, **extra}))
    return path


def test_metrics_check_accepts_plain_numbers(tmp_path):
    metrics = {"loss": 0.5, "steps": 10, "agree": True}
    assert check_metrics(metrics, _record(tmp_path, metrics), "cpu", 0)["metrics"] == metrics


@pytest.mark.parametrize(
    "bad", [{}, {"loss": "0.5"}, {"loss": float("nan")}, {"loss": [1.0]}, {"loss": torch.tensor(0.5)}], ids=str
)
def test_metrics_check_rejects_what_is_not_a_plain_finite_number(tmp_path, bad):
    with pytest.raises(AssertionError):
        check_metrics(bad, _record(tmp_path, {"loss": 0.5}), "cpu", 0)


def test_metrics_check_rejects_a_file_that_differs_from_the_return_value(tmp_path):
    with pytest.raises(AssertionError, match="exactly the dict"):
        check_metrics({"loss": 0.5}, _record(tmp_path, {"loss": 0.25}), "cpu", 0)
    with pytest.raises(AssertionError, match="device"):
        check_metrics({"loss": 0.5}, _record(tmp_path, {"loss": 0.5}, device="cuda:0"), "cpu", 0)


def test_a_test_that_pins_the_device_is_checked_against_that_device():
    # `pytest --device cuda` runs `run_lesson(path, "--device", "cpu")` on the CPU: metrics.json must say cpu
    assert device_asked(("--cuda-build", "never", "--device", "cpu"), "cuda") == "cpu"
    assert device_asked(["--device", "mps", "--rows", "8", "--device", "cpu", "--smoke"], "cuda") == "cpu"
    assert device_asked(("--rows", "8"), "cuda") == "cuda" and device_asked((), "mps") == "mps"
    assert device_asked(("--device",), "cuda") == "cuda"  # a flag with no value pins nothing


def test_a_loaded_script_pickles_into_spawned_dataloader_workers(tmp_path):
    """macOS and Windows start DataLoader workers with spawn: the worker must find a lesson's Dataset class by the
    module name load_script gave the lesson (06/06 and 06/07 under pytest failed there with ModuleNotFoundError)."""
    script = tmp_path / "lesson_with_dataset.py"
    script.write_text("import torch\n\n\nclass Squares(torch.utils.data.Dataset):\n    def __len__(self):\n"
                      "        return 6\n\n    def __getitem__(self, i):\n        return torch.tensor(i * i)\n")
    with torch_state_guard():  # which puts back sys.path: the next load_script must still be found
        load_script(script, "curriculum_test_spawned_dataset_first")
    lesson = load_script(script, "curriculum_test_spawned_dataset")
    loader = torch.utils.data.DataLoader(lesson.Squares(), batch_size=2, num_workers=1, multiprocessing_context="spawn")
    assert [b.tolist() for b in loader] == [[0, 1], [4, 9], [16, 25]]


def test_timings_are_the_only_metrics_a_rerun_may_change():
    assert is_timing_key("epoch_s") and is_timing_key("h2d_pinned_gbps") and is_timing_key("images_per_s")
    assert not is_timing_key("loss") and not is_timing_key("accuracy") and not is_timing_key("steps")
    assert comparable({"loss": 1.0, "step_ms": 3.0}) == {"loss": 1.0}


def _check_double(fn):
    out = fn(torch.tensor([1.0, 2.0]))
    assert torch.equal(out, torch.tensor([2.0, 4.0])), f"expected [2., 4.], got {out}"


def _stub(x):
    raise NotImplementedError("Exercise 1: double")


@pytest.mark.parametrize(
    ("fn", "status", "message"),
    [
        (lambda x: x * 2, "done", ""),
        (_stub, "todo", "Exercise 1"),
        (lambda x: x + 2, "failing", "expected [2., 4.]"),
        (lambda x: x.view(3), "failing", "your function raised RuntimeError"),
        (lambda x: x.numpy() * 2, "failing", "the check could not use what your function returned: TypeError"),
        (lambda x: torch.zeros(2, dtype=torch.long).softmax(0), "failing", "your function raised NotImplementedError"),
        (lambda x: torch.testing.assert_close(x, x + 1), "failing", "your function raised AssertionError"),
    ],
    ids=["solution", "stub", "wrong", "crash", "wrong-type", "torch-not-implemented", "torch-assertion"],
)
def test_exercise_outcomes(fn, status, message):
    outcome = evaluate(_check_double, fn)
    assert outcome.status == status and message in outcome.message, outcome
    assert isinstance(outcome, Outcome)



def test_describe_keeps_tensors_short_inside_lists_and_tuples():
    """A learner who returns [h, c] instead of (h, c) reads the container's shapes, not two tensor reprs."""
    pair = [torch.randn(40, 50), torch.zeros(3, dtype=torch.long)]
    text = describe(pair)
    assert text == "a list of 2: [tensor(shape=(40, 50), dtype=float32), tensor(shape=(3,), dtype=int64)]", text
    many = describe(tuple(torch.ones(2) for _ in range(9)))
    assert many.startswith("a tuple of 9: [tensor(shape=(2,)") and many.endswith(", ...]") and "\n" not in many
    assert describe([[5, 2], [7]]) == "[[5, 2], [7]]"  # no tensor inside: the plain repr

def test_benchmark_times_lessons_and_writes_its_json(tmp_path):
    """tests/benchmark.py on one tiny lesson: the JSON's shape, never the times it measured."""
    from harness import REPO

    out = tmp_path / "bench.json"
    lessons = ["01-pytorch-basics/03_tensor_basics.py"]
    command = [sys.executable, str(REPO / "tests" / "benchmark.py"), "--json", str(out)]
    for lesson in lessons:
        command += ["--only", lesson]
    done = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result) == {"machine", "budgets_s", "threads", "runs"}
    assert result["budgets_s"] == {"smoke": 5.0, "project-smoke": 10.0, "default": 60.0, "project-default": 180.0,
                                   "suite": 300.0}
    assert result["machine"]["cpu_count"] >= 1 and isinstance(result["machine"]["import_torch_s"], float)
    runs = result["runs"]
    assert [r["script"] for r in runs] == lessons and all(r["kind"] == "smoke" for r in runs)
    for r in runs:
        assert r["threads"] == 1 and r["returncode"] == 0 and r["budget_s"] == 5.0
        assert isinstance(r["wall_s"], float) and isinstance(r["lesson_wall_s"], float)
        assert isinstance(r["over_budget"], bool)
    table = done.stdout
    assert "budget s" in table and all(lesson in table for lesson in lessons)


def _learner_copy(tmp_path, bodies: dict[str, str]):
    """A copy of the harness with module 07's exercises.py as a learner left it: the functions named in `bodies` get
    that code, every other one its untouched stub (whatever the real file holds), docstrings kept."""
    shutil.copytree(REPO / "tests", tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    tree = ast.parse((REPO / "07-rnn-sequences" / "exercises.py").read_text())
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    for number, node in enumerate(functions, start=1):
        code = bodies.get(node.name, f'raise NotImplementedError("Exercise {number}: {node.name}")')
        node.body = node.body[:1] + ast.parse(code).body  # keep the docstring (title and hint)
    (tmp_path / "07-rnn-sequences").mkdir()
    (tmp_path / "07-rnn-sequences" / "exercises.py").write_text(ast.unparse(tree) + "\n")
    # A learner's terminal, not a CI job: with CI (or BUILD_NUMBER) set, pytest stops shortening the lines of its
    # "short test summary", so each failure's whole message is printed a second time there; PY_COLORS/FORCE_COLOR
    # would colour the text these tests read.
    ci_only = ("CI", "BUILD_NUMBER", "PY_COLORS", "FORCE_COLOR")
    env = {k: v for k, v in subprocess_env(threads=1).items() if k not in ci_only}
    return lambda *args: subprocess.run([sys.executable, *args], cwd=tmp_path, env=env,
                                        capture_output=True, text=True, timeout=300)


def test_the_learner_reads_the_next_exercise_and_the_progress(tmp_path):
    """What README.md promises: pytest ends with the next exercise (a failing one first), what went wrong, its hint
    and the command that checks it, then the progress line; a -k selection says it is one; the module's table
    names each exercise's state and exits 1 while an attempted one fails."""
    run = _learner_copy(tmp_path, {"rnn_step": "return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)",
                                   "lstm_cell_step": "return (h, c)"})
    pytest_args = ["-m", "pytest", "tests/test_exercises.py::test_exercise", "-p", "no:cacheprovider"]
    out = run(*pytest_args).stdout
    tail = out.splitlines()[-14:]
    assert any(line.startswith("Next: 07-rnn-sequences exercise 2, lstm_cell_step()") for line in tail), out
    assert any("What went wrong: c_new should equal nn.LSTMCell" in line for line in tail), out
    assert any(line.strip().startswith("Hint: compute all pre-activations") for line in tail), out
    assert any("-k 07-ex02" in line for line in tail), out
    assert "Exercises: 1/10 done, 1 failing, 8 to do." in tail[-2], out

    one = run(*pytest_args, "-k", "07-ex01").stdout.splitlines()
    assert "Exercises selected: 1/1 done, 0 failing, 0 to do (10 in the course)." in one[-2], one[-4:]

    table = run("07-rnn-sequences/exercises.py")
    lines = table.stdout.splitlines()
    assert table.returncode == 1, table.stdout + table.stderr  # an attempted exercise fails
    assert any(line.split()[:3] == ["1", "rnn_step", "done"] for line in lines), table.stdout
    assert any(line.split()[:3] == ["2", "lstm_cell_step", "failing"] for line in lines), table.stdout
    assert any(line.split()[:4] == ["3", "pack_batch", "to", "do"] for line in lines), table.stdout
    assert "1/10 done, 1 failing, 8 to do." in lines, table.stdout


def test_a_learner_syntax_error_is_reported_once_with_its_line(tmp_path):
    run = _learner_copy(tmp_path, {})
    path = tmp_path / "07-rnn-sequences" / "exercises.py"
    text = path.read_text()
    path.write_text(text.replace("\nif __name__", "\nx = (1,\nif __name__", 1))  # an unclosed bracket at the end
    result = run("-m", "pytest", "tests/test_exercises.py::test_exercise", "-p", "no:cacheprovider")
    assert result.returncode == 1, result.stdout
    assert result.stdout.count("SyntaxError") <= 2 and "Traceback" not in result.stdout, result.stdout
    tail = result.stdout.splitlines()[-8:]
    assert "Next: fix 07-rnn-sequences/exercises.py" in tail, result.stdout
    assert any("x = (1," in line for line in tail) and any(line.strip() == "^" for line in tail), result.stdout
    assert "1 failed, 9 skipped" in tail[-1], result.stdout


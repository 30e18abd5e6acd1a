"""Exercise checking, shared by pytest (tests/test_exercises.py) and `python NN-module/exercises.py`.

For a module such as 02-tensors-operations there are three files:
- `02-tensors-operations/exercises.py`: the learner's file. Each exercise is a function whose docstring starts with
  "Exercise N: title" and holds a "Hint:" paragraph; its body starts as `raise NotImplementedError("Exercise N: ...")`.
- `tests/checks/m02_tensors_operations.py`: `check_<name>(fn)` for each exercise, in exercise order. A check calls the
  learner's function and raises AssertionError with a message that says what was expected. Checks compute their
  expectations independently (by hand, or with other torch ops), never by calling the reference solution.
- `tests/solutions/m02_tensors_operations.py`: the reference solution `<name>` of each exercise, and at least one
  common-mistake variant `<name>__<what_went_wrong>` per exercise that the check must reject.

An exercise's status is "done" (its check passes), "failing" (the check raised anything but NotImplementedError)
or "todo" (the stub's NotImplementedError("Exercise N: ...") came through; any other NotImplementedError, such as
torch's "not implemented for 'Long'", is a failure). While exercises.py does not parse or crashes on import, its
exercises cannot be checked: `learner_error` says why in a few lines (file, line number, the offending line), and the
suite reports it once per module, not once per exercise.

Test ids name one exercise each: `02-ex03-pick_per_row` (two-digit numbers, so `-k 02-ex01` never also matches
exercise 10, and `-k 02-ex` selects module 02 only).
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
import traceback
from dataclasses import dataclass
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REPO, load_script, modules, torch_state_guard  # noqa: E402

DOC_HEAD = re.compile(r"^\s*Exercise\s+(\d+)\s*[:.\-\u2014]\s*(.+)")
STUB = re.compile(r"\s*Exercise\s+\d+\b")  # the stub's NotImplementedError("Exercise N: ..."): not started yet
HINT = re.compile(r"^\s*Hint:\s*(.+?)(?:\n\s*\n|\Z)", re.S | re.M)
STATUS_WORDS = {"done": "done", "failing": "failing", "todo": "to do"}


def module_key(module: str) -> str:
    """'02-tensors-operations' -> 'm02_tensors_operations', the name of its checks and solutions files."""
    return "m" + module.replace("-", "_")


@dataclass(frozen=True)
class Exercise:
    module: str
    number: int
    name: str

    @property
    def id(self) -> str:
        return f"{self.module[:2]}-ex{self.number:02d}-{self.name}"

    @property
    def selector(self) -> str:
        """What `pytest -k` needs to select exactly this exercise (and nothing else) among the test ids."""
        return f"{self.module[:2]}-ex{self.number:02d}"

    @property
    def check(self):
        return getattr(load_checks(self.module), f"check_{self.name}")

    @property
    def hint(self) -> str:
        return exercise_docs(self.module).get(self.name, ("", "read the exercise's docstring"))[1]

    @property
    def title(self) -> str:
        return exercise_docs(self.module).get(self.name, (self.name, ""))[0]


@dataclass(frozen=True)
class Outcome:
    status: str  # "done" | "failing" | "todo"
    message: str = ""


def exercise_modules() -> list[str]:
    """Modules (in course order) whose exercises.py, checks and solutions all exist.

    A module missing one of them is not collected here; test_contract.py::test_exercises_file_shape fails for it.
    """
    needed = ("{m}/exercises.py", "tests/checks/{key}.py", "tests/solutions/{key}.py")
    return [m for m in modules() if all((REPO / f.format(m=m, key=module_key(m))).is_file() for f in needed)]


@cache
def load_checks(module: str):
    return load_script(REPO / "tests" / "checks" / f"{module_key(module)}.py", f"checks_{module_key(module)}")


@cache
def load_solutions(module: str):
    return load_script(REPO / "tests" / "solutions" / f"{module_key(module)}.py", f"solutions_{module_key(module)}")


def exercises(module: str) -> list[Exercise]:
    """The module's exercises, numbered by the order of the check_* functions in its checks file."""
    names = [n[len("check_") :] for n in vars(load_checks(module)) if n.startswith("check_")]
    return [Exercise(module, i, name) for i, name in enumerate(names, start=1)]


def mistakes(exercise: Exercise) -> list[str]:
    prefix = exercise.name + "__"
    return [n for n in vars(load_solutions(exercise.module)) if n.startswith(prefix)]


@cache
def exercise_docs(module: str) -> dict[str, tuple[str, str]]:
    """name -> (title, hint), read from the learner's exercises.py without importing it (it may not even parse)."""
    try:
        tree = ast.parse((REPO / module / "exercises.py").read_text())
    except SyntaxError:
        return {}
    docs = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            doc = ast.get_docstring(node) or ""
            head, hint = DOC_HEAD.match(doc), HINT.search(doc)
            if head:
                docs[node.name] = (head.group(2).strip(), " ".join(hint.group(1).split()) if hint else "")
    return docs


def _source_line(path: Path, lineno: int | None) -> str:
    try:
        return path.read_text().splitlines()[lineno - 1] if lineno else ""
    except (OSError, IndexError):
        return ""


def learner_error(module: str) -> str:
    """Why the learner's exercises.py cannot be checked at all ("" when it imports): a syntax error or a crash at
    import time, in a few lines: the file, the line number, the offending line and what Python said."""
    path = REPO / module / "exercises.py"
    rel = f"{module}/exercises.py"
    try:
        compile(path.read_text(), str(path), "exec")
    except SyntaxError as err:
        text = (err.text or _source_line(path, err.lineno)).rstrip("\n")
        caret = ""
        if text and err.offset:
            stripped = text.lstrip()
            caret = "\n      " + " " * max(0, err.offset - 1 - (len(text) - len(stripped))) + "^"
            text = stripped
        return (
            f"{rel} has a syntax error, so none of its exercises can be checked:\n"
            f"  line {err.lineno}: {type(err).__name__}: {err.msg}\n"
            f"      {text}{caret}\n"
            f"Fix that line (or the one just above it) and run again."
        )
    try:
        load_script(path, f"exercises_{module_key(module)}")
    except BaseException as err:  # noqa: BLE001 - anything the learner's top-level code raises, SystemExit included
        frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename) == path]
        where = f" at line {frames[-1].lineno}:\n      {(frames[-1].line or '').strip()}" if frames else ""
        return (
            f"{rel} crashes when it is imported, so none of its exercises can be checked:\n"
            f"  {type(err).__name__}: {str(err)[:300]}{where}\n"
            f"Code at the top level of exercises.py runs on import; keep it inside the functions."
        )
    finally:
        sys.modules.pop(f"exercises_{module_key(module)}", None)
    return ""


def load_learner(module: str):
    """The learner's exercises.py as a module, or the message saying why it cannot be imported."""
    try:
        return load_script(REPO / module / "exercises.py", f"exercises_{module_key(module)}"), ""
    except BaseException:  # noqa: BLE001 - a syntax error or a crash at import time: nothing can be checked
        return None, learner_error(module) or "exercises.py does not import"


def evaluate(check, fn) -> Outcome:
    """Run one check against one implementation, with torch's global state restored afterwards."""
    import torch

    with torch_state_guard():
        torch.manual_seed(0)
        try:
            check(fn)
        except NotImplementedError as err:
            if STUB.match(str(err)):
                return Outcome("todo", str(err))
            # torch's own NotImplementedError ("... not implemented for 'Long'") means the learner's code ran and broke
            return Outcome("failing", describe_crash(err, check))
        except AssertionError as err:
            frames = traceback.extract_tb(err.__traceback__)
            if frames and Path(frames[-1].filename).resolve().is_relative_to(REPO / "tests"):
                return Outcome("failing", str(err) or "a check failed (no message)")
            # raised by torch or by the learner's own assert (GradScaler: "No inf checks were recorded..."): a crash
            return Outcome("failing", describe_crash(err, check))
        except Exception as err:  # a crash is a failing exercise, not a broken suite
            return Outcome("failing", describe_crash(err, check))
    return Outcome("done")


def describe_crash(err: Exception, check) -> str:
    """Say whether the learner's function raised, or the check choked on what it returned (a wrong type, say)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "site-packages" not in f.filename]
    last = frames[-1] if frames else None
    what = f"{type(err).__name__}: {err}"
    # the check itself, or one of its file's _helpers, was running when the error came: the result was unusable
    in_check = last is not None and last.filename == inspect.getsourcefile(check)
    if in_check and (last.name == check.__name__ or last.name.startswith("_")):
        return f"the check could not use what your function returned: {what}"
    where = [f for f in frames if f.filename.endswith("exercises.py")]
    line = f" (exercises.py line {where[-1].lineno})" if where else ""
    return f"your function raised {what}{line}"


def evaluate_learner(exercise: Exercise, learner=None) -> Outcome:
    module, error = (learner, "") if learner is not None else load_learner(exercise.module)
    if module is None:
        return Outcome("failing", error)
    fn = getattr(module, exercise.name, None)
    if fn is None:
        return Outcome("failing", f"exercises.py no longer defines {exercise.name}()")
    return evaluate(exercise.check, fn)


def skip_message(exercise: Exercise) -> str:
    return f"[{exercise.module}] Exercise {exercise.number} not done yet \u2014 hint: {exercise.hint}"


def python_command() -> str:
    """How the learner runs Python here: `.venv/bin/python` when the interpreter lives in the repository's venv."""
    try:
        return str(Path(sys.executable).relative_to(REPO))
    except ValueError:
        return ".venv/bin/python" if (REPO / ".venv").is_dir() else "python"


def one_exercise_command(exercise: Exercise) -> str:
    """The command that checks exactly this one exercise through pytest."""
    return f"{python_command()} -m pytest tests/test_exercises.py::test_exercise -k {exercise.selector}"


def module_exercises_command(module: str) -> str:
    """The command that checks exactly this module's exercises (none of its lessons) through pytest."""
    return f"{python_command()} -m pytest tests/test_exercises.py::test_exercise -k {module[:2]}-ex"


def next_exercise(statuses: list[tuple[Exercise, Outcome]]):
    """The one exercise to point the learner at: the first failing one; else the first to-do after the last one
    done (learners work in order); else the first to-do. None when everything is done."""
    failing = [(ex, o) for ex, o in statuses if o.status == "failing"]
    if failing:
        return failing[0]
    last_done = max((i for i, (_, o) in enumerate(statuses) if o.status == "done"), default=-1)
    later = [(ex, o) for ex, o in statuses[last_done + 1 :] if o.status == "todo"]
    todo = later or [(ex, o) for ex, o in statuses if o.status == "todo"]
    return todo[0] if todo else None


def wrap(text: str, indent: str = "  ", width: int = 110) -> str:
    return textwrap.fill(" ".join(text.split()), width=width, initial_indent=indent, subsequent_indent=indent + "  ")


def report(module_file: str) -> int:
    """Print one module's exercise table and the hint for the next exercise; used by `python exercises.py`.

    Returns the exit status: 1 while any attempted exercise fails (or the file cannot be imported), else 0 (exercises
    not started yet do not count against you).
    """
    module = Path(module_file).resolve().parent.name
    print(f"{module} exercises  (checks: tests/checks/{module_key(module)}.py)\n")
    learner, error = load_learner(module)
    if learner is None:
        print(error)
        return 1
    rows = [(ex, evaluate_learner(ex, learner)) for ex in exercises(module)]
    width = max(len(ex.name) for ex, _ in rows)
    for ex, outcome in rows:
        detail = f"  {outcome.message.splitlines()[0][:100]}" if outcome.status == "failing" else ""
        print(f"  {ex.number:>2}  {ex.name:<{width}}  {STATUS_WORDS[outcome.status]:<8}{detail}")
    done = sum(o.status == "done" for _, o in rows)
    failing = sum(o.status == "failing" for _, o in rows)
    print(f"\n{done}/{len(rows)} done, {failing} failing, {len(rows) - done - failing} to do.")
    upcoming = next_exercise(rows)
    if upcoming is None:
        later = modules()[modules().index(module) + 1:]
        after = ("On to the next module!" if any(m in exercise_modules() for m in later) else
                 f"That was the last module with exercises: on to {later[0]}/!" if later else "")
        print(f"Every exercise of this module passes. {after}".rstrip())
    else:
        ex, outcome = upcoming
        print(f"Next: exercise {ex.number}, {ex.name}() \u2014 {ex.title}")
        if outcome.status == "failing":
            print("  What went wrong: " + "\n  ".join(outcome.message.splitlines()))
        print(wrap(f"Hint: {ex.hint}"))
        print(f"  Through pytest: {one_exercise_command(ex)}")
    return 1 if failing else 0

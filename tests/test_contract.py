"""Static and cheap checks of CURRICULUM.md: the layout against the manifest, and the shape of every script.

A module folder that does not exist yet is reported as skipped ("not built yet"); once it exists it must hold
exactly its listed scripts, each obeying the lesson contract, each smoke-tested by a test file.

tests/curriculum-files.txt is the repository's own manifest. exercises.py is the learner's file: while it does not
parse these tests step aside (test_exercises.py::test_exercise reports the syntax error, once), and the lessons' rule
"no work at import time" does not apply to it (a debugging print at its top level is the learner's business).
"""

from __future__ import annotations

import ast
import re

import pytest
from exercise_harness import module_key
from harness import REPO, TESTS, built_lessons, built_modules, load_script, manifest_rows, module_scripts, modules

pytestmark = pytest.mark.contract

COMMON_FLAGS = ("--device", "--seed", "--smoke", "--out-dir")
# Calls allowed at module level: they build constants and do no work.
CONSTANT_CALLS = {"Path", "resolve", "frozenset", "namedtuple", "TypeVar", "field", "dict", "tuple", "set", "range"}
CONSTANT_CALLS_FULL = {"re.compile"}
ALLOWED_TOP_LEVEL = {".ci", ".git", ".github", ".gitignore", "README.md", "requirements.txt", "pyproject.toml", "tests"}


def all_scripts() -> list[str]:
    return [p for m in built_modules() for p in module_scripts(m)]


def test_manifest_has_75_scripts_in_ten_modules():
    rows = manifest_rows()
    assert len(rows) == 75 and len({p for p, _ in rows}) == 75
    assert len(modules()) == 10


@pytest.mark.parametrize("module", modules())
def test_module_holds_exactly_its_scripts(module):
    folder = REPO / module
    if not folder.is_dir():
        pytest.skip(f"{module}: not built yet")
    on_disk = sorted(str(p.relative_to(REPO)) for p in folder.glob("*.py"))
    assert on_disk == sorted(module_scripts(module)), "the folder must hold exactly the scripts the manifest lists"


def test_no_other_top_level_content():
    listed = set(modules())
    generated = {"outputs", "data", "lightning_logs", "runs", "venv", "env", "build", "dist"}  # see .gitignore
    tracked = {p.name for p in REPO.iterdir()} - generated
    extra = sorted(n for n in tracked if n not in listed | ALLOWED_TOP_LEVEL and not n.startswith("."))
    assert not extra, f"CURRICULUM.md's layout allows nothing else at the top level: {extra}"


def _tree(path: str) -> ast.Module:
    """The script's syntax tree. A learner's exercises.py that does not parse is skipped here: the exercise test
    reports it once, with its line, instead of every contract test failing with a parser traceback."""
    source = (REPO / path).read_text()
    try:
        return ast.parse(source, filename=path)
    except SyntaxError as err:
        if path.endswith("exercises.py"):
            pytest.skip(f"{path} does not parse (line {err.lineno}); test_exercises.py::test_exercise reports it")
        raise


def _import_time_work(tree: ast.Module) -> list[str]:
    """Top-level statements that would run work at import: anything but imports, defs, classes, constants, guard."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            continue  # the main guard
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            calls = [c for c in ast.walk(node) if isinstance(c, ast.Call)]
            names = [ast.unparse(c.func) for c in calls]
            bad = [n for n in names if n.split(".")[-1] not in CONSTANT_CALLS and n not in CONSTANT_CALLS_FULL]
            if not bad:
                continue
            found.append(f"line {node.lineno}: calls {', '.join(bad)} at import")
            continue
        found.append(f"line {node.lineno}: {type(node).__name__} at import")
    return found


def _forbidden_calls(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr == "cuda":
            found.append(f"line {node.lineno}: .cuda() (pass a device and use .to(device))")
        if node.func.attr == "load" and ast.unparse(node.func.value) == "torch":
            ok = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
            if not ok:
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
    return found


@pytest.mark.parametrize("path", all_scripts())
def test_script_has_no_import_time_work_or_forbidden_calls(path):
    tree = _tree(path)
    learners_file = path.endswith("exercises.py")  # the learner may add a top-level print while debugging
    problems = ([] if learners_file else _import_time_work(tree)) + _forbidden_calls(tree)
    assert not problems, f"{path}: " + "; ".join(problems)
    guard = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert guard, f"{path}: needs `if __name__ == \"__main__\":` at the end"


@pytest.mark.parametrize("path", built_lessons())
def test_lesson_shape(path):
    """Points 2-5 of the lesson contract, statically."""
    source = (REPO / path).read_text()
    tree = _tree(path)
    doc = ast.get_docstring(tree)
    assert doc, f"{path}: the module docstring comes first"
    assert f"python {path}" in doc, f"{path}: the docstring must give the command to run it: python {path}"
    took = r"\b(seconds?|minutes?|\d+(\.\d+)? ?(s|min))\b"  # "a few seconds", "about 5 s", "2 min"
    assert re.search(took, doc), f"{path}: say roughly how long it takes on a laptop CPU"
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains, f"{path}: needs def main(argv=None) -> dict"
    args = mains[0].args
    assert [a.arg for a in args.args] == ["argv"] and len(args.defaults) == 1, f"{path}: main(argv=None)"
    assert "ArgumentDefaultsHelpFormatter" in source, f"{path}: argparse with ArgumentDefaultsHelpFormatter"
    for flag in COMMON_FLAGS:
        assert f'"{flag}"' in source, f"{path}: missing the common flag {flag}"
    assert "metrics.json" in source, f"{path}: must write <out-dir>/metrics.json"
    assert not re.search(r"torch\.cuda\.amp\.|from torch\.cuda\.amp import", source), f"{path}: use torch.amp"


@pytest.mark.parametrize("path", built_lessons())
@pytest.mark.parametrize("bad", [["--device", "tpu"], ["--seed", "abc"], ["--seed", "-1"], ["--no-such-flag"]],
                         ids=str)
def test_bad_flags_get_argparse_errors(path, bad, tmp_path, capsys):
    """A mistyped flag is answered by argparse (exit 2, a usage message), before any work is done."""
    module = load_script(REPO / path)
    with pytest.raises(SystemExit) as exit_info:
        module.main([*bad, "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(("path", "flag"), [
    (path, flag) for path in built_lessons() for flag in ("--out-dir", "--out-dir-below", "--data-dir")
    if flag != "--data-dir" or re.search(r'\badd(_argument)?\(\s*"--data-dir"', (REPO / path).read_text())])
def test_a_file_where_a_folder_must_be_gets_one_line(path, flag, tmp_path, capsys):
    """--out-dir or --data-dir naming a file (or a folder to be made inside one) is refused by argparse, before any
    work: it was a FileExistsError/NotADirectoryError traceback, in the projects after the whole training."""
    module = load_script(REPO / path)
    a_file = tmp_path / "photo.jpg"
    a_file.write_bytes(b"not a folder")
    given = {"--out-dir": ["--out-dir", str(a_file)], "--out-dir-below": ["--out-dir", str(a_file / "sub")],
             "--data-dir": ["--data-dir", str(a_file), "--out-dir", str(tmp_path / "out")]}[flag]
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--smoke", *given])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "is a file" in err and "Traceback" not in err, err[-500:]
    assert not (tmp_path / "out").exists(), "refused before any work"


def _calls_in_tests(fixture: str) -> set[str]:
    """Lesson paths given to run_lesson(...) / run_lesson_subprocess(...) in tests/test_*.py, as a string literal
    or a module-level string constant."""
    found = set()
    for test_file in TESTS.glob("test_*.py"):
        tree = ast.parse(test_file.read_text())
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == fixture and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant):
                    found.add(first.value)
                elif isinstance(first, ast.Name) and first.id in constants:
                    found.add(constants[first.id])
    return found


@pytest.mark.parametrize("path", built_lessons())
def test_every_lesson_has_a_smoke_test(path):
    assert path in _calls_in_tests("run_lesson"), f"no test calls run_lesson({path!r}) with assertions on its metrics"


@pytest.mark.parametrize("module", built_modules())
def test_first_lesson_of_each_module_runs_as_a_subprocess(module):
    first = module_scripts(module)[0]
    assert first in _calls_in_tests("run_lesson_subprocess"), f"run {first} as `python {first} --smoke` too"


@pytest.mark.parametrize("module", [m for m in built_modules() if (REPO / m / "exercises.py").exists()])
def test_exercises_file_shape(module):
    """exercises.py: a docstring saying how to check it, stubs that raise NotImplementedError('Exercise N: ...')."""
    path = f"{module}/exercises.py"
    tree = _tree(path)
    doc = ast.get_docstring(tree) or ""
    assert f"python {path}" in doc and "pytest" in doc, f"{path}: docstring must say how to check the exercises"
    selects_module = f"-m pytest tests/test_exercises.py::test_exercise -k {module[:2]}-ex"
    assert selects_module in doc, (
        f"{path}: give the pytest command that selects exactly this module's exercises (not its lessons' smoke and "
        f"determinism tests), with the README's interpreter: .venv/bin/python {selects_module}"
    )
    assert (TESTS / "checks" / f"{module_key(module)}.py").is_file(), f"no checks for {module}"
    assert (TESTS / "solutions" / f"{module_key(module)}.py").is_file(), f"no solutions for {module}"
    assert "exercise_harness" in (REPO / path).read_text(), f"{path}: __main__ must print the progress table"


def test_readme_commands_exist():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    match = re.search(r"^TEST_COMMAND='(.+)'$", ci, re.M)
    assert match, ".ci/run must define TEST_COMMAND='...' and run it"
    assert match.group(1) in readme, ".ci/run must run exactly the README's test command"
    for module in built_modules():
        assert module in readme, f"the README's module map must list {module}"


def test_requirements_are_exact_pins():
    lines = [
        line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()
    ]
    pins = [line for line in lines if line]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+]*", p) for p in pins), pins
    names = {p.split("==")[0].lower() for p in pins}
    assert {"torch", "torchvision", "torchaudio", "pytest", "pytest-xdist", "numpy", "matplotlib"} <= names


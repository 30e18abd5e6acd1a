"""The exercises: the learner's work (skipped while unfinished), and proof that every check is sound.

For each exercise the suite proves three things whatever the learner has done: the reference solution passes, a stub
counts as unfinished, and every common-mistake variant is rejected with a message that fits on a screen. Then it
checks the learner's own function.

Ids: `02-ex03-pick_per_row`. One exercise: `pytest tests/test_exercises.py::test_exercise -k 02-ex03`;
one module's: `-k 02-ex`.
"""

from __future__ import annotations

import ast
import inspect

import pytest
from exercise_harness import (
    DOC_HEAD,
    HINT,
    REPO,
    evaluate,
    evaluate_learner,
    exercise_modules,
    exercises,
    learner_error,
    load_solutions,
    mistakes,
    skip_message,
    wrap,
)

pytestmark = pytest.mark.exercise

ALL = [ex for module in exercise_modules() for ex in exercises(module)]
MISTAKES = [(ex, name) for ex in ALL for name in mistakes(ex)]
MAX_MESSAGE_LINES, MAX_MESSAGE_CHARS = 15, 1500  # a rejection message must fit on a screen


def _record(request, exercise, status: str, message: str = "") -> None:
    """What conftest.py's progress line needs, attached to the report (it travels to the xdist controller)."""
    request.node.user_properties.extend(
        [
            ("exercise_status", status),
            ("exercise_order", ALL.index(exercise)),
            ("exercise_module", exercise.module),
            ("exercise_number", exercise.number),
            ("exercise_name", exercise.name),
            ("exercise_message", message[:1500]),
        ]
    )


@pytest.mark.parametrize("exercise", ALL, ids=lambda ex: ex.id)
def test_exercise(exercise, request):
    """Your solution. Unfinished: skipped with a hint (failed under --strict-exercises)."""
    broken = learner_error(exercise.module)
    if broken:  # reported once per module, by the first selected exercise of it (conftest.py marks that one)
        if request.node.get_closest_marker("reports_learner_error"):
            _record(request, exercise, "failing", broken)
            pytest.fail(broken, pytrace=False)
        _record(request, exercise, "unchecked")
        pytest.skip(f"not checked: {exercise.module}/exercises.py does not import (reported once, above)")
    outcome = evaluate_learner(exercise)
    _record(request, exercise, outcome.status, outcome.message)
    if outcome.status == "todo":
        if request.config.getoption("--strict-exercises"):
            pytest.fail(skip_message(exercise), pytrace=False)
        pytest.skip(skip_message(exercise))
    if outcome.status == "failing":
        pytest.fail(
            f"Exercise {exercise.number} ({exercise.name}): {outcome.message}\n{wrap('Hint: ' + exercise.hint, '')}",
            pytrace=False,
        )


@pytest.mark.parametrize("exercise", ALL, ids=lambda ex: ex.id)
def test_reference_solution_passes(exercise):
    solution = getattr(load_solutions(exercise.module), exercise.name, None)
    assert solution is not None, f"tests/solutions has no reference solution {exercise.name}()"
    outcome = evaluate(exercise.check, solution)
    assert outcome.status == "done", f"the reference solution fails its own check: {outcome.message}"


def _parse_learner_file(exercise) -> ast.Module:
    """exercises.py as a syntax tree; while the learner's edit does not parse, test_exercise reports it instead."""
    try:
        return ast.parse((REPO / exercise.module / "exercises.py").read_text())
    except SyntaxError as err:
        pytest.skip(f"{exercise.module}/exercises.py does not parse (line {err.lineno}); test_exercise reports it")


def _stub_from_source(exercise):
    """The stub of an exercise, rebuilt from exercises.py: same signature, body `raise NotImplementedError`.

    Rebuilt rather than imported, so the proof holds after the learner has replaced the stub with a solution.
    """
    tree = _parse_learner_file(exercise)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == exercise.name)
    message = f"Exercise {exercise.number}: not done yet"
    node.body = [ast.parse(f"raise NotImplementedError({message!r})").body[0]]
    node.decorator_list = []
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    module = ast.Module(body=[*imports, node], type_ignores=[])
    namespace: dict = {}
    exec(compile(ast.fix_missing_locations(module), "<stub>", "exec"), namespace)
    return namespace[exercise.name]


@pytest.mark.parametrize("exercise", ALL, ids=lambda ex: ex.id)
def test_stub_counts_as_unfinished(exercise):
    outcome = evaluate(exercise.check, _stub_from_source(exercise))
    assert outcome.status == "todo", f"a stub must count as unfinished, got {outcome.status}: {outcome.message}"


@pytest.mark.parametrize(("exercise", "mistake"), MISTAKES, ids=lambda v: v if isinstance(v, str) else v.id)
def test_common_mistake_is_rejected(exercise, mistake):
    wrong = getattr(load_solutions(exercise.module), mistake)
    outcome = evaluate(exercise.check, wrong)
    assert outcome.status == "failing", f"the check accepted the common mistake {mistake}() ({outcome.status})"
    assert outcome.message, "a rejected mistake must come with a message that says what was expected"


@pytest.mark.parametrize(("exercise", "mistake"), MISTAKES, ids=lambda v: v if isinstance(v, str) else v.id)
def test_rejection_message_fits_on_a_screen(exercise, mistake):
    """What a learner who makes this mistake reads: a few lines (shape, dtype, max difference, first mismatch), never
    whole tensors. Covers every module's mistakes as soon as its checks and solutions exist."""
    outcome = evaluate(exercise.check, getattr(load_solutions(exercise.module), mistake))
    lines = outcome.message.splitlines()
    assert len(lines) < MAX_MESSAGE_LINES and len(outcome.message) < MAX_MESSAGE_CHARS, (
        f"{mistake}() is rejected with a {len(lines)}-line, {len(outcome.message)}-character message; it must fit on a "
        f"screen (< {MAX_MESSAGE_LINES} lines, < {MAX_MESSAGE_CHARS} characters): summarise tensors with "
        f"check_utils.assert_close / describe. It begins: {outcome.message[:300]!r}"
    )


@pytest.mark.parametrize("exercise", ALL, ids=lambda ex: ex.id)
def test_exercise_is_documented_and_has_a_mistake(exercise):
    """Each exercise: a docstring 'Exercise N: title' with an example and a Hint, and >= 1 common-mistake variant."""
    tree = _parse_learner_file(exercise)
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == exercise.name), None)
    assert node is not None, f"{exercise.module}/exercises.py has no function {exercise.name}()"
    doc = ast.get_docstring(node) or ""
    head = DOC_HEAD.match(doc)
    assert head and int(head.group(1)) == exercise.number, f"docstring must start 'Exercise {exercise.number}: ...'"
    assert HINT.search(doc), "the docstring needs a 'Hint:' paragraph"
    assert "Example" in doc or ">>>" in doc, "the docstring needs an example"
    assert mistakes(exercise), f"no common-mistake variant {exercise.name}__<what_went_wrong> in tests/solutions"
    solution = getattr(load_solutions(exercise.module), exercise.name)
    stub_params = [a.arg for a in node.args.args]
    assert list(inspect.signature(solution).parameters)[: len(stub_params)] == stub_params, (
        "the reference solution must take the same arguments as the stub"
    )


@pytest.mark.parametrize("module", exercise_modules())
def test_module_has_enough_exercises(module):
    assert 8 <= len(exercises(module)) <= 10, f"{module} should have 8-10 exercises, has {len(exercises(module))}"


def test_k_selects_one_module_and_one_exercise():
    """README.md's `-k 02-ex` selects module 02's exercises and `-k 02-ex01` exercise 1 alone: no exercise name may
    contain another module's selector (09's 'expected_calibration_error' once put '04-ex' inside '09-ex04-ex...')."""
    for module in exercise_modules():
        prefix = module[:2]
        chosen = [ex.id for ex in ALL if f"{prefix}-ex".lower() in ex.id.lower()]  # -k matches case-insensitively
        assert chosen == [ex.id for ex in exercises(module)], f"-k {prefix}-ex also selects {chosen}"
    for exercise in ALL:
        key = "-".join(exercise.id.split("-")[:2])  # e.g. 02-ex01
        chosen = [ex.id for ex in ALL if key.lower() in ex.id.lower()]
        assert chosen == [exercise.id], f"-k {key} selects {chosen}"

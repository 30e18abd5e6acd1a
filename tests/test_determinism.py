"""Same seed, same numbers: every lesson, rerun with `--smoke --device cpu --seed 0`, writes exactly the metrics of its
smoke run, timings aside (keys ending in harness.TIMING_SUFFIXES). Part of the default suite; `-m "not determinism"`
skips it.

Cost: one extra run per lesson, not two. The smoke test's plain `run_lesson(path)` (seed 0, on the cpu) records its
comparable metrics (conftest.py's run_lesson), and these tests are sorted to the end of the run, so the rerun here is
compared with that record. When there is no record (the test selected alone, `--device cuda`, or the smoke test still
running on another xdist worker), the lesson is run twice here: every lesson is still checked.
"""

import pytest
from harness import (
    DETERMINISM_DEVICE,
    DETERMINISM_SEED,
    built_lessons,
    comparable,
    load_comparable_metrics,
    run_inprocess,
)

pytestmark = pytest.mark.determinism


def _run(path, workdir):
    workdir.mkdir()
    args = ["--smoke", "--device", DETERMINISM_DEVICE, "--seed", str(DETERMINISM_SEED)]
    args += ["--out-dir", str(workdir / "out")]
    metrics, _ = run_inprocess(path, args, workdir)
    return comparable(metrics)


@pytest.mark.parametrize("path", built_lessons())
def test_same_seed_same_metrics(path, tmp_path, smoke_metrics_dir):
    first = load_comparable_metrics(smoke_metrics_dir, path)
    if first is None:
        first = _run(path, tmp_path / "run0")
    again = _run(path, tmp_path / "run1")
    first, again = json_roundtrip(first), json_roundtrip(again)
    diff = {k: (first.get(k), again.get(k)) for k in first.keys() | again.keys() if first.get(k) != again.get(k)}
    assert not diff, f"{path}: the same seed gave different metrics (first run, rerun): {diff}"


def json_roundtrip(metrics: dict) -> dict:
    """Both sides as JSON would store them (the recorded run went through JSON), so 1 == 1.0 and floats compare
    exactly as written."""
    import json

    return json.loads(json.dumps(metrics, sort_keys=True))

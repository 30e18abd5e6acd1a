"""Same seed, same numbers: every lesson run twice with `--smoke --device cpu --seed 1` writes identical metrics,
timings aside (keys ending in harness.TIMING_SUFFIXES). Part of the default suite; `-m "not determinism"` skips it.
"""

import pytest
from harness import built_lessons, comparable, run_inprocess

pytestmark = pytest.mark.determinism


@pytest.mark.parametrize("path", built_lessons())
def test_same_seed_same_metrics(path, tmp_path):
    runs = []
    for attempt in range(2):
        workdir = tmp_path / f"run{attempt}"
        workdir.mkdir()
        args = ["--smoke", "--device", "cpu", "--seed", "1", "--out-dir", str(workdir / "out")]
        metrics, _ = run_inprocess(path, args, workdir)
        runs.append(comparable(metrics))
    assert runs[0] == runs[1], {k: (runs[0].get(k), runs[1].get(k)) for k in runs[0] if runs[0][k] != runs[1].get(k)}

"""Smoke runs of module 01 with assertions that prove each lesson did its job."""

import pytest
from harness import REPO, run_inprocess

pytestmark = pytest.mark.smoke

SETUP = "01-pytorch-basics/01_installation_setup.py"


def test_01_installation_setup(run_lesson, device):
    m = run_lesson(SETUP)
    assert m["packages_missing"] == 0 and m["packages_mismatch"] == 0, "the suite runs on the pinned versions"
    assert m["packages_ok"] >= 10
    assert m["cpu_threads"] >= 1
    assert m["cuda_available"] == int(device == "cuda") or device != "cuda"
    assert m["matmul_rel_error"] < 1e-3  # float32 (or TF32) against float64: agreement, measured


@pytest.mark.subprocess
def test_01_installation_setup_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(SETUP)
    assert m["packages_missing"] == 0


def test_01_installation_setup_exits_1_when_a_package_is_missing(tmp_path):
    pins = tmp_path / "requirements.txt"
    pins.write_text((REPO / "requirements.txt").read_text() + "no-such-package-xyz==1.0\n")
    args = ["--smoke", "--device", "cpu", "--requirements", str(pins), "--out-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        run_inprocess(SETUP, args, tmp_path)
    assert exit_info.value.code == 1

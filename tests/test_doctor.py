"""The environment doctor (01/01) reports what torch.utils.cpp_extension will actually use: the ninja first on PATH
(and the venv's own when that is a different one), CUDA_HOME as torch resolves it, and the real nvcc behind a
wrapper script with its version line. Fake tools in a temporary folder stand in for a real toolchain."""

import os
import stat
from pathlib import Path

import pytest
from harness import REPO, load_script

pytestmark = pytest.mark.smoke

DOCTOR = "01-pytorch-basics/01_installation_setup.py"


@pytest.fixture(scope="module")
def doctor():
    return load_script(REPO / DOCTOR, "curriculum_doctor_for_tests")


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def fake_toolchain(tmp_path, monkeypatch):
    """/usr/local/bin-style wrapper nvcc -> a toolkit in cuda-13.0; a system ninja 1.11.1 on PATH; a venv ninja."""
    toolkit = tmp_path / "cuda-13.0"
    (toolkit / "include").mkdir(parents=True)
    script(toolkit / "bin" / "nvcc", f"""case "$1" in
  --version) echo "nvcc: NVIDIA (R) Cuda compiler driver"; echo "Built on a day";
             echo "Cuda compilation tools, release 13.0, V13.0.88"; echo "Build cuda_13.0.r13.0/compiler";;
  --dryrun) echo "#\\$ _HERE_={toolkit}/bin" >&2;;
esac
""")
    script(tmp_path / "local" / "bin" / "nvcc", f'exec {toolkit}/bin/nvcc "$@"\n')
    script(tmp_path / "local" / "bin" / "ninja", "echo 1.11.1\n")
    script(tmp_path / "venv" / "bin" / "ninja", "echo 1.13.2\n")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'local' / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin")
    return tmp_path, toolkit


def test_nvcc_behind_a_wrapper_and_its_version_line(doctor, fake_toolchain):
    tmp_path, toolkit = fake_toolchain
    assert doctor.torch_cuda_home() == str(tmp_path / "local"), "torch's own rule: the folder above PATH's nvcc"
    real = doctor.real_nvcc(str(tmp_path / "local" / "bin" / "nvcc"))
    assert real == toolkit / "bin" / "nvcc"
    assert doctor.nvcc_release(real) == "Cuda compilation tools, release 13.0, V13.0.88", \
        "the version line, not 'nvcc: NVIDIA (R) Cuda compiler driver'"


def test_ninja_torch_calls_and_the_venvs(doctor, fake_toolchain, capsys):
    tmp_path, _ = fake_toolchain
    on_path, is_env = doctor.report_ninja(tmp_path / "venv" / "bin")
    out = capsys.readouterr().out
    assert on_path == str(tmp_path / "local" / "bin" / "ninja") and not is_env
    assert "1.11.1" in out and "1.13.2" in out, "both ninjas are reported"
    assert f"export PATH={tmp_path / 'venv' / 'bin'}:$PATH" in out, "with the fix"


def test_report_says_cuda_home_is_wrong_and_how_to_fix_it(doctor, fake_toolchain, capsys):
    _, toolkit = fake_toolchain
    facts = doctor.report_toolchain()
    out = capsys.readouterr().out
    assert facts["nvcc_found"] == 1 and facts["cuda_home_ok"] == 0
    assert "WRONG" in out and f"export CUDA_HOME={toolkit}" in out
    assert "release 13.0, V13.0.88" in out


def test_report_says_cuda_home_is_right_when_set(doctor, fake_toolchain, monkeypatch, capsys):
    _, toolkit = fake_toolchain
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    facts = doctor.report_toolchain()
    assert facts["cuda_home_ok"] == 1 and "WRONG" not in capsys.readouterr().out


def test_a_requirements_file_that_is_not_there_or_not_text_gets_one_line(doctor, tmp_path, capsys):
    """--requirements with a typo is argparse's usage error (not a silent fall-back to the core list); a file that
    is not UTF-8 text ends the run with one line, not a traceback."""
    with pytest.raises(SystemExit) as err:
        doctor.parse_args(["--requirements", str(tmp_path / "typo.txt")])
    assert err.value.code == 2 and "no such file" in capsys.readouterr().err
    binary = tmp_path / "requirements.txt"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(SystemExit) as err:
        doctor.read_pins(binary)
    assert "cannot read" in str(err.value.code)

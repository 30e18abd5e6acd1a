"""The test suite with `--device cuda`, on a machine with no GPU, under tests/tools/fakecuda.py.

    .venv/bin/python tests/tools/fake_cuda_pytest.py [--kind mps] [PYTEST ARGS ...]    # default: -n 2 -q -rf tests/

What `pytest --device cuda` on a GPU (or, with --kind mps, `pytest --device mps` on a Mac) would run, as far as
fakecuda can follow: lessons run in-process and in the subprocesses the tests (and lessons, e.g. 09/04's workers)
start. A failure is a device bug in a lesson, a test that only holds on the CPU (e.g. one that pins `--device cpu`
and is then checked against cuda), or one of fakecuda's limits (its docstring lists them). Development tool: about
9 minutes on 2 cores; not part of the README's test command.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fake_cuda_smoke import SITECUSTOMIZE  # installs fakecuda of the kind FAKECUDA_KIND names

REPO = Path(__file__).resolve().parents[2]
# harness.subprocess_env points a lesson subprocess's PYTHONPATH at tests/_netblock; point it here instead
PLUGIN = """from pathlib import Path


def pytest_configure(config):
    import harness

    harness.NETBLOCK = Path(__file__).resolve().parent
"""


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="fakecuda-pytest-"))
    # one sitecustomize for pytest, its workers and every child: the network block the tests rely on, then fakecuda
    netblock = (REPO / "tests" / "_netblock" / "sitecustomize.py").read_text()
    (work / "sitecustomize.py").write_text(netblock + "\n" + SITECUSTOMIZE)
    (work / "fakecuda_plugin.py").write_text(PLUGIN)
    args = sys.argv[1:]
    kind = "cuda"
    if args[:1] == ["--kind"]:
        if args[1:2] not in (["cuda"], ["mps"]):
            print(f"usage: {Path(__file__).name} [--kind {{cuda,mps}}] [PYTEST ARGS ...]: --kind takes cuda or mps",
                  file=sys.stderr)
            return 2
        kind, args = args[1], args[2:]
    args = args or ["-n", "2", "-q", "-rf", "tests/"]
    env = dict(os.environ, PYTHONPATH=str(work), MPLBACKEND="Agg", FAKECUDA_KIND=kind)
    command = [sys.executable, "-m", "pytest", "-p", "fakecuda_plugin", "-p", "no:cacheprovider", "--device", kind,
               *args]
    print(" ".join(command), f"\n(fakecuda installed through {work}/sitecustomize.py)", flush=True)
    return subprocess.run(command, cwd=REPO, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())

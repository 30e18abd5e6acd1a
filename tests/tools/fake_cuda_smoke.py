"""Every lesson and project with `--smoke --device cuda`, on a machine with no GPU, under tests/tools/fakecuda.py.

    .venv/bin/python tests/tools/fake_cuda_smoke.py [SUBSTRING ...]     # default: all scripts of the manifest
    .venv/bin/python tests/tools/fake_cuda_smoke.py --kind mps          # --device mps, as on a Mac

A run that fails here is a device bug in the script (a CPU tensor meeting a cuda one, .numpy() on a cuda tensor,
a generator of the wrong device, ...) or one of fakecuda's known limits (see its docstring): read the log it names.
Development tool: about 3 minutes on 2 cores; not part of the README's test command.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(__file__).resolve().parent
SITECUSTOMIZE = f"""import sys
sys.path.insert(0, {str(TOOLS)!r})
import os
import fakecuda
fakecuda.install(os.environ.get("FAKECUDA_KIND", "cuda"))
"""


def scripts(patterns: list[str]) -> list[str]:
    listed = [line.split("\t")[0] for line in (REPO / "tests" / "curriculum-files.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    runnable = [s for s in listed if not s.endswith("exercises.py") and (REPO / s).is_file()]
    return [s for s in runnable if not patterns or any(p in s for p in patterns)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patterns", nargs="*", help="run only scripts whose path contains one of these")
    parser.add_argument("--jobs", type=int, default=2, choices=range(1, 33), metavar="N")
    parser.add_argument("--kind", choices=("cuda", "mps"), default="cuda",
                        help="the device to fake: cuda, or mps (no float64, spawned DataLoader workers, as on a Mac)")
    args = parser.parse_args()
    chosen = scripts(args.patterns)
    if not chosen:
        parser.error(f"no script matches {args.patterns}")
    work = Path(tempfile.mkdtemp(prefix="fakecuda-"))
    (work / "site").mkdir()
    (work / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)  # every python process the script starts, too
    env = dict(os.environ, PYTHONPATH=str(work / "site"), OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONUNBUFFERED="1", FAKECUDA_KIND=args.kind)

    def run(script: str):
        name = script.replace("/", "__").removesuffix(".py")
        command = [sys.executable, str(REPO / script), "--smoke", "--device", args.kind, "--out-dir", str(work / name)]
        try:
            done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=600)
            rc, text = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as stop:
            rc, text = "timeout", f"{stop}"
        log = work / f"{name}.log"
        log.write_text(text)
        last = [line for line in text.splitlines() if line.strip()][-1:] if rc != 0 else []
        return script, rc, log, last

    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        for script, rc, log, last in pool.map(run, chosen):
            failed += rc != 0
            print(f"{'ok' if rc == 0 else f'rc={rc}':>8}  {script}", flush=True)
            if rc != 0:
                print(f"          {(last or ['(no output)'])[0][:200]}\n          log: {log}", flush=True)
    print(f"{len(chosen) - failed} of {len(chosen)} ran under fake {args.kind}; logs in {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

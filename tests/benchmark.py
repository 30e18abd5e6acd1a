"""Speed, measured instead of asserted: every lesson's smoke run, optionally its default run, and the README's test
command, each timed against its budget, as a sorted table and as JSON.

    .venv/bin/python tests/benchmark.py                    # every built lesson and project: --smoke, 1 thread
    .venv/bin/python tests/benchmark.py --default-runs     # also the default (full, offline) runs, 2 threads
    .venv/bin/python tests/benchmark.py --only 06-cnn      # lessons whose path contains 06-cnn (repeatable)
    .venv/bin/python tests/benchmark.py --suite            # also the README's test command as a whole

Run it from anywhere; lessons are found in tests/curriculum-files.txt (a module joins once its folder exists;
10-projects' scripts are timed the same way). Each run is a fresh `python <script>` with its own new --out-dir, the
network blocked exactly as the test suite blocks it (tests/_netblock) and the thread count set explicitly
(OMP_NUM_THREADS / MKL_NUM_THREADS, which torch's intra-op pool follows): 1 for smoke runs, 2 for default runs. Runs go
one at a time, so they do not compete with each other; other work on the machine still slows them, so the header
prints the load average, and the budgets are meant for an idle machine.

Where a run starts: as a learner works, module by module in the manifest's order, from one folder. The lessons of a
module share a fresh working directory (so its default data/ folder), so what one lesson caches for the next (08's
stand-in backbone, made by 01_pretrained_models.py) is there when the next runs, and its one-time cost is timed in
the lesson that makes it. --isolated gives every run its own empty directory instead: each lesson then also pays
for what an earlier lesson would have cached (08/02, 03 and 06 run 01 to make the stand-in).

Budgets:

    smoke run of a lesson              <= 5 s     (one idle core)
    smoke run of a project             <= 10 s    (one idle core: train, evaluate, predict and checkpoints in one run)
    default offline run of a lesson    <= 60 s    (2 idle cores)
    default run of a project (demo)    <= 180 s   (2 idle cores)
    the README's test command          <= 300 s   (2 cores)

A row over its budget is marked OVER; a run that exits non-zero is marked FAILED. The exit status is 1 when a run
failed (or, with --strict, when a row is over budget), else 0. Results go to outputs/benchmark/benchmark.json by
default (--json PATH). The test suite never asserts wall time: this is where speed is looked at.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REPO, built_lessons, subprocess_env  # noqa: E402

BUDGETS_S = {"smoke": 5.0, "project-smoke": 10.0, "default": 60.0, "project-default": 180.0, "suite": 300.0}
THREADS = {"smoke": 1, "project-smoke": 1, "default": 2, "project-default": 2, "suite": None}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="time only scripts whose path contains PATTERN (repeat for several)")
    parser.add_argument("--default-runs", action="store_true", help="also time each script's default run")
    parser.add_argument("--no-smoke", action="store_true", help="skip the smoke runs")
    parser.add_argument("--suite", action="store_true", help="also time the README's test command as a whole")
    parser.add_argument("--json", type=Path, default=REPO / "outputs" / "benchmark" / "benchmark.json",
                        help="where to write the results")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds after which a run is stopped and reported as failed (a hang guard)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any row is over its budget")
    parser.add_argument("--isolated", action="store_true",
                        help="a fresh working directory for every run, not one per module (nothing cached between "
                             "lessons: first-run costs show in every row)")
    args = parser.parse_args(argv)
    if args.no_smoke and not (args.default_runs or args.suite):
        parser.error("--no-smoke leaves nothing to time: add --default-runs or --suite")
    return args


def scripts(only: list[str]) -> list[str]:
    found = [p for p in built_lessons() if not only or any(pattern in p for pattern in only)]
    return found


def readme_test_command() -> list[str]:
    """The README's test command (as .ci/run holds it), with this interpreter in place of .venv/bin/python."""
    ci = (REPO / ".ci" / "run").read_text()
    match = re.search(r"^TEST_COMMAND='(.+)'$", ci, re.M)
    if not match:
        raise SystemExit(".ci/run defines no TEST_COMMAND='...': nothing to time for --suite")
    words = shlex.split(match.group(1))
    if words and words[0].endswith("python"):
        words[0] = sys.executable
    return words


def time_run(command: list[str], cwd: Path, env: dict, timeout: float) -> tuple[float, int, str]:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        code, tail = done.returncode, (done.stderr or done.stdout)[-2000:]
    except subprocess.TimeoutExpired:
        code, tail = -1, f"stopped after {timeout:.0f} s"
    return time.perf_counter() - start, code, tail


def time_script(path: str, kind: str, timeout: float, workdir: Path) -> dict:
    """One run of `python <path>` started in `workdir` (so --data-dir's default, data/, is there), output to a new
    --out-dir of its own."""
    threads = THREADS[kind]
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="benchmark-out-") as out:
        out_dir = Path(out) / "out"
        flags = ["--device", "cpu", "--seed", "0", "--out-dir", str(out_dir)]
        if kind.endswith("smoke"):
            flags.append("--smoke")
        wall, code, tail = time_run([sys.executable, str(REPO / path), *flags], workdir,
                                    subprocess_env(threads=threads), timeout)
        metrics_file = out_dir / "metrics.json"
        lesson_wall = None
        if code == 0 and metrics_file.is_file():
            lesson_wall = json.loads(metrics_file.read_text()).get("wall_time_s")
    row = {
        "script": path,
        "kind": kind,
        "threads": threads,
        "wall_s": round(wall, 2),
        "lesson_wall_s": None if lesson_wall is None else round(float(lesson_wall), 2),
        "budget_s": BUDGETS_S[kind],
        "returncode": code,
    }
    row["over_budget"] = code == 0 and wall > row["budget_s"]
    if code != 0:
        row["error_tail"] = tail
    return row


def time_suite(timeout: float) -> dict:
    command = readme_test_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    wall, code, tail = time_run(command, REPO, env, timeout)
    summary = [line for line in tail.splitlines() if re.search(r"\b(passed|failed|error)", line)]
    row = {
        "script": " ".join(shlex.quote(w) for w in command),
        "kind": "suite",
        "threads": None,
        "wall_s": round(wall, 2),
        "lesson_wall_s": None,
        "budget_s": BUDGETS_S["suite"],
        "returncode": code,
        "summary": summary[-1].strip("= ") if summary else "",
    }
    row["over_budget"] = code == 0 and wall > row["budget_s"]
    if code != 0:
        row["error_tail"] = tail
    return row


def machine() -> dict:
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def import_baseline_s() -> float:
    """What every row pays before a lesson's first line runs: a fresh interpreter importing torch (1 thread)."""
    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        wall, _, _ = time_run([sys.executable, "-c", "import torch"], Path(tmp), subprocess_env(threads=1), 600)
    return round(wall, 2)


def mark(row: dict) -> str:
    return "FAILED" if row["returncode"] != 0 else "OVER" if row["over_budget"] else "ok"


def print_table(rows: list[dict]) -> None:
    width = max([len(r["script"]) for r in rows if r["kind"] != "suite"] + [30])
    print(f"\n{'run':<{width}}  {'kind':<15} {'threads':>7} {'wall s':>8} {'lesson s':>9} {'budget s':>9}  status")
    for r in sorted(rows, key=lambda r: -r["wall_s"]):
        lesson = "" if r["lesson_wall_s"] is None else f"{r['lesson_wall_s']:.2f}"
        name = r["script"] if r["kind"] != "suite" else "README test command"
        threads = "" if r["threads"] is None else str(r["threads"])
        print(f"{name:<{width}}  {r['kind']:<15} {threads:>7} {r['wall_s']:>8.2f} {lesson:>9} "
              f"{r['budget_s']:>9.0f}  {mark(r)}")
    print("\nwall s: the whole `python script` process (interpreter start and imports included), what a learner "
          "waits for;\nlesson s: the wall_time_s the lesson wrote to metrics.json (its main() alone). Budgets hold "
          "for wall s on an idle machine.")


def main(argv=None) -> dict:
    args = parse_args(argv)
    info = machine()
    chosen = scripts(args.only)
    if not chosen and not args.suite:
        raise SystemExit(f"no built lesson matches {args.only}")
    info["import_torch_s"] = import_baseline_s()
    print(f"benchmark: {len(chosen)} script(s), {info['cpu_count']} cores, load average {info['load_average']}, "
          f"torch {info['torch']}; `python -c 'import torch'` takes {info['import_torch_s']:.2f} s here")
    if info["load_average"] and info["load_average"][0] > 0.5:
        print("  the machine is not idle: these figures are upper bounds of what an idle machine gives")
    kinds = ([] if args.no_smoke else ["smoke"]) + (["default"] if args.default_runs else [])
    info["working_directories"] = "one per run" if args.isolated else "one per module, lessons in manifest order"
    print(f"  working directory: {info['working_directories']}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        for kind in kinds:
            for path in chosen:
                this_kind = f"project-{kind}" if path.startswith("10-projects/") else kind
                workdir = Path(tmp) / kind / (path if args.isolated else path.split("/")[0])
                row = time_script(path, this_kind, args.timeout, workdir)
                rows.append(row)
                print(f"  {this_kind:<15} {path:<60} {row['wall_s']:>8.2f} s  {mark(row)}", flush=True)
    if args.suite:
        print("  timing the README test command (minutes)...", flush=True)
        row = time_suite(args.timeout)
        rows.append(row)
        print(f"  suite           {row['script']:<60} {row['wall_s']:>8.2f} s  {mark(row)}  {row['summary']}")
    print_table(rows)
    result = {"machine": info, "budgets_s": BUDGETS_S, "threads": THREADS, "runs": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, args.json)
    failed = sum(r["returncode"] != 0 for r in rows)
    over = sum(r["over_budget"] for r in rows)
    print(f"\n{len(rows)} runs, {over} over budget, {failed} failed. JSON: {args.json}")
    return {"runs": len(rows), "over_budget": over, "failed": failed, "strict": args.strict}


if __name__ == "__main__":
    summary = main()
    sys.exit(1 if summary["failed"] or (summary["strict"] and summary["over_budget"]) else 0)

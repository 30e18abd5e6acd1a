"""Distributed training for real: two processes, torch.distributed, DDP, DistributedSampler and FSDP2.

Sections:
1. The launch. With no launcher around it, this script is its own small torchrun: it finds a free port on
   127.0.0.1 (bind to port 0), starts 2 copies of itself with RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
   MASTER_PORT in their environment, waits for them with a timeout and kills the rest if one fails. Under
   torchrun those variables are already set, so the same script runs as one of torchrun's workers.
2. The process group: init_process_group with an explicit timeout (a timedelta), gloo on CPU, NCCL when there is
   one GPU per process (two or more GPUs), and destroy_process_group on the way out.
3. Collectives, checked on every rank: all_reduce (sum), broadcast (from rank 0), all_gather.
4. DistributedDataParallel: the gradients of two processes that each see half a batch equal one process's
   gradients on the full batch (max abs difference printed); then a few epochs of DDP training on real
   handwritten digits (scikit-learn's load_digits) against one process replaying the same global batches.
5. DistributedSampler: each rank's shard, disjoint and covering the dataset; set_epoch reshuffles; forgetting it
   repeats the same order every epoch; padding when the dataset does not divide evenly.
6. FSDP2 (torch.distributed.fsdp.fully_shard): every rank stores half of each weight (DTensor shards), and the
   sharded model trains to the same weights as the unsharded reference. It runs on CPU with gloo, too.
7. The torchrun command lines: one machine, and several machines with a c10d rendezvous.

Run it:
    python 09-custom-models/04_distributed_basics.py
    torchrun --standalone --nproc_per_node=2 09-custom-models/04_distributed_basics.py
    python 09-custom-models/04_distributed_basics.py --fail-rank 1      # what a crashing worker looks like

Takes about 8 seconds on an idle 2-core CPU, much of it starting the worker processes (each one imports torch, a
second or two of CPU), which no --smoke can make shorter; --smoke about 4 s. What to look for: "all_reduce exact: True",
a DDP gradient difference around 1e-8, shards that are disjoint and cover the data, FSDP2 matching the reference,
and the torchrun lines to copy onto a cluster.
"""

import argparse
import copy
import datetime
import gc
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

LAUNCHER_ENV = "CURRICULUM_DIST_LAUNCHER"  # set by this script's own launcher, so a worker knows who started it


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. The one place a lesson decides where tensors live."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="cuda with >= 2 GPUs: one GPU per process and NCCL; anything else: CPU workers, gloo")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random (same on every rank)")
    parser.add_argument("--smoke", action="store_true", help="one epoch of DDP training, one of FSDP2: seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/09-custom-models/04_distributed_basics"),
                        help="where metrics.json and the workers' logs go")
    parser.add_argument("--nproc", type=int, default=2, help="worker processes this script starts (without torchrun)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of DDP training on the digits")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per rank per step (global: x nproc)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds: the process group's timeout, and how long the launcher waits for workers")
    parser.add_argument("--fail-rank", type=int, default=-1,
                        help="make this rank raise an error after joining the group (shows the launcher's message)")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # NumPy's seed range (torch takes any 64-bit integer)
        parser.error(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    for flag in ("--out-dir", "--data-dir"):  # a file where a folder must be (or be made): one line, no traceback
        path = getattr(args, flag[2:].replace("-", "_"), None)
        existing = next((p for p in (Path(path), *Path(path).parents) if p.exists()), None) if path else None
        if existing is not None and not existing.is_dir():
            parser.error(f"{flag} {path}: {existing} is a file, not a folder")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the CUDA section of the README)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if not 2 <= args.nproc <= 8:
        parser.error("--nproc must be between 2 and 8 (a collective needs at least two processes to mean anything)")
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.timeout <= 0:
        parser.error("need --epochs >= 1, --batch-size >= 1, --lr > 0 and --timeout > 0")
    if args.fail_rank >= args.nproc:
        parser.error(f"--fail-rank {args.fail_rank}: ranks run from 0 to {args.nproc - 1}")
    return args


def write_json(path: Path, obj) -> None:
    """Atomic: a reader never sees half a file (temp file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def free_port() -> int:
    """Ask the OS for a free TCP port on loopback (port 0 = any), then release it for rank 0's TCPStore."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_lines(nproc: int) -> list[str]:
    script = "09-custom-models/04_distributed_basics.py"
    return [
        f"torchrun --standalone --nproc_per_node={nproc} {script}",
        f"torchrun --nnodes=2 --nproc_per_node=8 --node-rank=0 --rdzv-backend=c10d "
        f"--rdzv-endpoint=HOST_OF_NODE0:29500 --rdzv-id=job42 {script}",
        "   (the same line on node 1 with --node-rank=1; HOST_OF_NODE0 is a name or IP both nodes can reach)",
    ]


# ---------------------------------------------------------------- the launcher: what torchrun does, in 40 lines
def launch(args, argv: list[str], device: torch.device) -> dict:
    section("1. Launch: this script starts its own workers (what torchrun does)")
    port = free_port()
    log_dir = args.out_dir / "workers"
    log_dir.mkdir(parents=True, exist_ok=True)
    result_file = log_dir / "rank0_results.json"
    for stale in [result_file, *log_dir.glob("rank*.error.json")]:
        stale.unlink(missing_ok=True)
    print(f"MASTER_ADDR=127.0.0.1 MASTER_PORT={port} (a free port: bind(('127.0.0.1', 0))), WORLD_SIZE={args.nproc}")
    print(f"starting {args.nproc} processes: python {Path(__file__).name} with RANK/LOCAL_RANK set; each imports "
          "torch and scikit-learn first (2-3 s of CPU each)")
    threads = max(1, (os.cpu_count() or 1) // args.nproc)  # the cores are shared: no oversubscription
    procs, logs = [], []
    t0 = time.perf_counter()
    for rank in range(args.nproc):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(args.nproc),
                   LOCAL_WORLD_SIZE=str(args.nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", **{LAUNCHER_ENV: str(result_file)})
        log = open(log_dir / f"rank{rank}.log", "w")  # noqa: SIM115 (closed below, whatever happens)
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        failure = wait_for(procs, args.timeout)
        if failure is not None:  # the others usually fail within a moment (their peer vanished): let them report
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.05)
    finally:
        for p in procs:  # never leave a worker behind: kill whatever still runs, then reap it
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
    launch_s = time.perf_counter() - t0
    if failure is not None:
        sys.exit(failure_message(failure, log_dir, args.nproc))
    print((log_dir / "rank0.log").read_text(), end="")  # rank 0 speaks for everyone; the other logs are beside it
    metrics = json.loads(result_file.read_text())
    metrics.update({"launched_by_torchrun": 0, "launch_s": launch_s})
    print(f"\nall {args.nproc} workers exited with code 0 after {launch_s:.1f} s (process start included)")
    return metrics


def wait_for(procs: list, timeout: float):
    """Poll every worker; return None when all exited 0, else (rank, what happened) for the first failure."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        for rank, code in enumerate(codes):
            if code not in (None, 0):
                return rank, f"exited with code {code}"
        if all(code == 0 for code in codes):
            return None
        if time.monotonic() > deadline:
            rank = next(r for r, c in enumerate(codes) if c is None)
            return rank, f"was still running after --timeout {timeout:g} s (a hang: killed)"
        time.sleep(0.05)


def failure_message(failure, log_dir: Path, nproc: int) -> str:
    """One clear paragraph: which rank failed first and why (what torchrun calls the root cause)."""
    rank, why = failure
    errors = {}
    for r in range(nproc):  # each failing worker wrote rank<r>.error.json: when, and what it raised
        path = log_dir / f"rank{r}.error.json"
        if path.is_file():
            errors[r] = json.loads(path.read_text())
    if errors:
        first = min(errors, key=lambda r: errors[r]["time"])
        lines = [f"distributed run failed: worker rank {first} raised {errors[first]['error']} (the first failure)"]
        lines += [f"  then rank {r} failed too: {e['error']}" for r, e in sorted(errors.items()) if r != first]
    else:  # killed by a signal, or the timeout: nothing was written
        log = (log_dir / f"rank{rank}.log").read_text(errors="replace").strip().splitlines()
        lines = [f"distributed run failed: worker rank {rank} {why}; its last line: {log[-1] if log else '-'}"]
    lines.append(f"the other workers were stopped; full logs in {log_dir}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the worker: one process of the group
class Reporter:
    """Rank 0 prints; every rank computes. Printing from every rank interleaves N copies of the same story."""

    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self, *parts) -> None:
        if self.rank == 0:
            print(*parts, flush=True)

    def section(self, title: str) -> None:
        if self.rank == 0:
            section(title)


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)  # every rank builds identical weights (DDP also broadcasts rank 0's at wrap time)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def real_digits():
    """scikit-learn's 1,797 real handwritten digits (load_digits, 43 writers): images (1797, 8, 8) float32 in 0-16
    and labels (1797,). Read from the file load_digits() reads (sklearn/datasets/data/digits.csv.gz: 64 pixels,
    then the label) without importing scikit-learn, which takes about 0.7 s; load_digits() if the file is not there."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return torch.tensor(digits.images, dtype=torch.float32), torch.tensor(digits.target)
    table = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.float32))  # (1797, 65)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].long()


def load_digits_tensors(seed: int):
    """1,797 real 8x8 handwritten digits shipped with scikit-learn: x (N, 64) in [0, 1], y (N,) in 0..9."""
    images, y = real_digits()
    x = images.flatten(1) / 16.0
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def all_ranks_agree(flag: bool, device) -> bool:
    """True only if `flag` is True on every rank (all_reduce with MIN)."""
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def max_over_ranks(value: float, device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def note_failure(err: Exception) -> None:
    """Leave the launcher a note: when this rank failed, and with what (torchrun's @record does the same)."""
    result_file = os.environ.get(LAUNCHER_ENV)
    if not result_file:
        return
    path = Path(result_file).with_name(f"rank{os.environ['RANK']}.error.json")
    if not path.exists():  # the first note wins: it is written where the error happened
        first_line = (str(err).strip().splitlines() or [""])[0][:160]
        write_json(path, {"time": time.time(), "error": f"{type(err).__name__}: {first_line}"})


def worker(args) -> dict:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    by_torchrun = LAUNCHER_ENV not in os.environ
    say = Reporter(rank)
    start = time.perf_counter()
    asked = pick_device(args.device)
    use_nccl = asked.type == "cuda" and torch.cuda.device_count() >= world and dist.is_nccl_available()
    if use_nccl:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)  # NCCL works on the current device: set it before the first collective
    else:
        device = torch.device("cpu")  # threads: OMP_NUM_THREADS, set by torchrun or by this script's launcher
    backend = "nccl" if use_nccl else "gloo"

    if by_torchrun:
        say.section("1. Launch: started by torchrun")
        say("torchrun set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in each worker's environment")
    say.section("2. Process group")
    t0 = time.perf_counter()
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout))  # env:// rendezvous
    init_s = time.perf_counter() - t0
    try:
        gpus = torch.cuda.device_count()
        say(f"backend {backend} on {device.type}; rank {rank} of {world} (LOCAL_RANK {local_rank}, "
            f"MASTER {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}); joined in {init_s:.2f} s; "
            f"timeout {args.timeout:g} s")
        if not use_nccl:
            say(f"NCCL not used: it needs one GPU per process ({world} processes, {gpus} GPU(s) visible"
                f"{'' if asked.type == 'cuda' else ', --device is not cuda'}); gloo runs the same program on CPU")
        if rank == args.fail_rank:
            raise RuntimeError(f"simulated failure on rank {rank} (--fail-rank {args.fail_rank})")
        metrics = {"world_size": world, "nccl": int(use_nccl), "init_s": init_s}
        metrics.update(collectives(rank, world, device, say))
        metrics.update(ddp_section(args, rank, world, device, say))
        metrics.update(sampler_section(args, rank, world, device, say))
        metrics.update(fsdp_section(args, rank, world, device, say))
        metrics["worker_s"] = time.perf_counter() - start
        dist.barrier()
    except Exception as err:
        note_failure(err)  # before destroy_process_group: closing the sockets is what makes the peers fail
        raise
    finally:
        # FSDP's modules, hooks and DTensors form reference cycles that only the garbage collector frees. Left to
        # the interpreter's exit, their teardown races with it: a gloo worker thread then waits for the GIL that
        # Python is giving up, and the process aborts ("terminate called without an active exception": 4 runs in
        # 17 under torchrun on this lesson's CPU machine, 0 in 28 with this line). Free them while the group exists.
        gc.collect()
        dist.destroy_process_group()  # frees the sockets / NCCL communicators; skipping it warns at exit
    return metrics


def collectives(rank: int, world: int, device, say) -> dict:
    say.section("3. Collectives (checked on every rank)")
    # all_reduce: every rank holds (rank + 1) * [0, 1, 2, 3]; afterwards every rank holds the sum over ranks
    t = (rank + 1) * torch.arange(4.0, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)  # in place, on every rank
    expected = sum(r + 1 for r in range(world)) * torch.arange(4.0, device=device)
    reduce_ok = all_ranks_agree(torch.equal(t, expected), device)
    say(f"all_reduce(SUM) of (rank+1)*[0,1,2,3] -> {t.tolist()}; exact on every rank: {reduce_ok}")
    # broadcast: each rank draws different numbers; after broadcast(src=0) all hold rank 0's
    b = torch.randn(3, generator=torch.Generator().manual_seed(100 + rank)).to(device)
    dist.broadcast(b, src=0)
    rank0 = torch.randn(3, generator=torch.Generator().manual_seed(100)).to(device)
    broadcast_ok = all_ranks_agree(torch.equal(b, rank0), device)
    say(f"broadcast(src=0): every rank now holds {[round(v, 4) for v in b.tolist()]}; equal to rank 0's: "
        f"{broadcast_ok}")
    # all_gather: each rank contributes [rank, rank^2]; every rank receives the list of all contributions
    parts = [torch.empty(2, device=device) for _ in range(world)]
    dist.all_gather(parts, torch.tensor([rank, rank**2], dtype=torch.float32, device=device))
    gather_ok = all_ranks_agree(all(p.tolist() == [r, r * r] for r, p in enumerate(parts)), device)
    say(f"all_gather([rank, rank^2]) -> {[p.tolist() for p in parts]}; in rank order on every rank: {gather_ok}")
    return {"all_reduce_exact": int(reduce_ok), "broadcast_ok": int(broadcast_ok), "all_gather_ok": int(gather_ok)}


def ddp_section(args, rank: int, world: int, device, say) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    say.section("4. DistributedDataParallel")
    (x_train, y_train), (x_test, y_test) = load_digits_tensors(args.seed)
    x_train, y_train, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_test, y_test))
    model = make_model(args.seed).to(device)
    reference = copy.deepcopy(model)  # one process, no DDP: the answer DDP must reproduce
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    # one step: rank r sees rows [r*B, (r+1)*B) of a global batch of world*B rows; the reference sees all of it
    b = args.batch_size
    xg, yg = x_train[: world * b], y_train[: world * b]  # (world*B, 64), (world*B,)
    F.cross_entropy(ddp(xg[rank * b:(rank + 1) * b]), yg[rank * b:(rank + 1) * b]).backward()  # averaged by DDP
    F.cross_entropy(reference(xg), yg).backward()
    grad_diff = max((p.grad - q.grad).abs().max().item() for p, q in zip(model.parameters(), reference.parameters()))
    grad_diff = max_over_ranks(grad_diff, device)
    say(f"rank grads after DDP's all_reduce(mean) vs one process on the full {world * b}-row batch: "
        f"max abs difference {grad_diff:.2e}")
    say("  (each rank's loss is the mean over its B rows; DDP sums the ranks' gradients and divides by "
        f"{world}, which is the gradient of the mean over all {world * b} rows)")

    # training: DistributedSampler shards every epoch; the reference replays the same global batches alone
    epochs = 1 if args.smoke else args.epochs
    dataset = TensorDataset(x_train, y_train)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=b, sampler=sampler)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=args.lr, momentum=0.9)
    opt.zero_grad(set_to_none=True)
    ref_opt.zero_grad(set_to_none=True)
    step_s, steps = 0.0, 0
    drift = []  # this rank's max |DDP weight - replay weight| after each step: how a difference grows, if it does
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same one on every rank
        shards = []  # the reference rebuilds every rank's shard for this epoch, to replay the global batches
        for r in range(world):
            other = DistributedSampler(dataset, num_replicas=world, rank=r, shuffle=True, seed=args.seed)
            other.set_epoch(epoch)
            shards.append(list(other))
        for k, (xb, yb) in enumerate(loader):
            t0 = time.perf_counter()
            loss = F.cross_entropy(ddp(xb), yb)
            loss.backward()  # gradient all_reduce overlaps with backward, bucket by bucket
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_s += time.perf_counter() - t0
            steps += 1
            idx = torch.tensor([i for r in range(world) for i in shards[r][k * b:(k + 1) * b]], device=device)
            F.cross_entropy(reference(x_train[idx]), y_train[idx]).backward()
            ref_opt.step()
            ref_opt.zero_grad(set_to_none=True)
            drift.append(max((p - q).abs().max().item() for p, q in zip(model.parameters(), reference.parameters())))
    param_diff = max_over_ranks(drift[-1], device)
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        ref_acc = (reference(x_test).argmax(1) == y_test).float().mean().item()
    say(f"{epochs} epoch(s), {steps} steps of {world} x {b} rows: weights vs the single-process replay: max abs "
        f"difference {param_diff:.2e}; test accuracy DDP {acc:.2%}, single process {ref_acc:.2%} (chance 10%); "
        f"{1e3 * step_s / steps:.1f} ms per DDP step")
    note = drift_note(drift, param_diff, world, b, args.lr)
    if note:
        say(note)
    return {"ddp_grad_max_abs_diff": grad_diff, "ddp_param_max_abs_diff": param_diff, "ddp_test_acc": acc,
            "single_process_test_acc": ref_acc, "ddp_steps": steps, "ddp_step_ms": 1e3 * step_s / steps,
            "ddp_first_step_param_diff": drift[0], "ddp_drifted": int(note is not None)}


DRIFT_LIMIT = 1e-3  # weights further apart than this after training are no longer "the same model up to rounding"


def drift_note(drift: list[float], final: float, world: int, b: int, lr: float) -> str | None:
    """None when DDP and the replay end with the same weights up to rounding; else the sentence that says what
    happened, with the numbers: where the difference started, when it passed 1e-4, where it ended.

    The cause, found by replaying both sides in one process: DDP averages the ranks' gradients, the replay takes
    the gradient of the mean over all rows; the two differ by float32 rounding (~1e-8). Steps that swing the
    weights far (tiny global batches at this --lr) magnify any such difference step after step, in float64 too,
    until the two runs are different models. DDP computes the right gradient; the training is too noisy to replay.
    """
    if final <= DRIFT_LIMIT:
        return None
    crossed = next((k + 1 for k, d in enumerate(drift) if d > 1e-4), len(drift))
    return (f"  the weights drifted apart: {drift[0]:.1e} after step 1 (float rounding: the ranks' averaged "
            f"gradients vs the full batch's, summed in another order), past 1e-4 by step {crossed}, {final:.2f} "
            f"after step {len(drift)}. Each step's gradient agrees to rounding (the one-step check above), but "
            f"steps of {world} x {b} rows at --lr {lr:g} jump so far that they magnify tiny differences step after "
            "step: this training is too noisy to replay, not DDP going wrong. Try the default --batch-size 32 or "
            "a smaller --lr.")


def sampler_section(args, rank: int, world: int, device, say) -> dict:
    say.section("5. DistributedSampler and set_epoch")
    n = 12
    data = list(range(n))
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    mine = {}
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        mine[epoch] = list(sampler)
    no_reset = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    repeats = list(no_reset) == list(no_reset)  # set_epoch never called: every epoch the same order
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)  # every rank's shards, on every rank (pickled Python objects)
    odd = DistributedSampler(list(range(n + 1)), num_replicas=world, rank=rank, shuffle=False)
    odd_sizes = [None] * world
    dist.all_gather_object(odd_sizes, list(odd))
    disjoint, covers = True, True
    for epoch in (0, 1):
        shards = [g[epoch] for g in gathered]
        say(f"epoch {epoch}: " + "; ".join(f"rank {r} {s}" for r, s in enumerate(shards)))
        union = [i for s in shards for i in s]
        disjoint &= len(union) == len(set(union))
        covers &= sorted(union) == data
    differ = all(g[0] != g[1] for g in gathered)
    flat_odd = [i for s in odd_sizes for i in s]
    padded = len(flat_odd) - len(set(flat_odd))
    say(f"shards disjoint: {disjoint}; together they cover all {n} items: {covers}; each rank's shard differs "
        f"between epochs: {differ}")
    say(f"without set_epoch the order repeats every epoch: {all_ranks_agree(repeats, device)}")
    say(f"{n + 1} items on {world} ranks: shard sizes {[len(s) for s in odd_sizes]}, {padded} item(s) repeated "
        "as padding (drop_last=True drops the tail instead)")
    return {"sampler_disjoint": int(disjoint), "sampler_covers": int(covers), "sampler_epochs_differ": int(differ),
            "sampler_repeats_without_set_epoch": int(repeats), "sampler_padded_items": padded}


def fsdp_section(args, rank: int, world: int, device, say) -> dict:
    say.section("6. FSDP2: fully_shard")
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
    except ImportError as err:  # FSDP2 is public from torch 2.6 on
        say(f"FSDP2 unavailable in torch {torch.__version__} ({err}); skipped")
        return {"fsdp_ran": 0}
    (x_train, y_train), _ = load_digits_tensors(args.seed)
    x_train, y_train = x_train.to(device), y_train.to(device)
    model = make_model(args.seed).to(device)
    reference = copy.deepcopy(model)
    mesh = init_device_mesh(device.type, (world,))  # explicit: the default mesh would pick cuda whenever it exists
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)  # each Linear its own unit: gathered just before use, freed after
    fully_shard(model, mesh=mesh)
    w = model[0].weight  # a DTensor: the full (64, 64) logical shape, rows split across ranks
    local = sum(p.to_local().numel() for p in model.parameters())
    full = sum(p.numel() for p in model.parameters())
    say(f"model[0].weight is a {type(w).__name__} of shape {tuple(w.shape)}; rank {rank} stores "
        f"{tuple(w.to_local().shape)}; parameters stored per rank: {local:,} of {full:,}")
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=args.lr, momentum=0.9)
    b = args.batch_size
    steps = 3 if args.smoke else 20
    t0 = time.perf_counter()
    for k in range(steps):
        rows = torch.arange(k * world * b, (k + 1) * world * b, device=device) % len(x_train)  # global batch
        mine = rows[rank * b:(rank + 1) * b]
        F.cross_entropy(model(x_train[mine]), y_train[mine]).backward()  # all-gather weights, reduce-scatter grads
        opt.step()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(reference(x_train[rows]), y_train[rows]).backward()
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)
    fsdp_s = time.perf_counter() - t0
    # full_tensor() all-gathers a DTensor: a collective, so every rank calls it
    diff = max((p.full_tensor() - q).abs().max().item() for p, q in zip(model.parameters(), reference.parameters()))
    diff = max_over_ranks(diff, device)
    say(f"{steps} steps on {device.type} with {dist.get_backend()}: weights vs the unsharded reference: max abs "
        f"difference {diff:.2e}")
    return {"fsdp_ran": 1, "fsdp_param_max_abs_diff": diff, "fsdp_local_param_fraction": local / full,
            "fsdp_train_s": fsdp_s}


# ---------------------------------------------------------------- main: launcher or worker
def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    in_worker = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if in_worker:
        result_file = os.environ.get(LAUNCHER_ENV)
        try:
            metrics = worker(args)
        except Exception as err:
            note_failure(err)
            raise
        if int(os.environ["RANK"]) != 0:
            return metrics
        if result_file:  # started by this script's launcher: hand the results to it
            write_json(Path(result_file), metrics)
            return metrics
        metrics["launched_by_torchrun"] = 1
    else:
        metrics = launch(args, argv, device)

    section("7. On a cluster: torchrun")
    for line in torchrun_lines(metrics["world_size"]):
        print(line)
    print("torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT for each worker and restarts them on "
          "failure (--max-restarts); this script reads the same variables, whoever set them")

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    write_json(args.out_dir / "metrics.json", record)
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- One program, N processes: rank and world size come from the environment; rank 0 does the talking.")
    print("- DDP = same initial weights + averaged gradients, so N half-batches give the full batch's gradient.")
    if metrics.get("ddp_drifted"):
        print(f"  (up to float rounding, which this run's tiny noisy steps magnified until the trained weights "
              f"differed by {metrics['ddp_param_max_abs_diff']:.2f}: see section 4)")
    print("- DistributedSampler needs set_epoch(epoch) every epoch, or every epoch sees the same order.")
    print("- FSDP2 keeps 1/N of every weight per rank and gathers the rest just in time: same training, less memory.")
    print("- Always a timeout and destroy_process_group: a dead worker must not leave the others waiting forever.")
    return metrics


if __name__ == "__main__":
    main()

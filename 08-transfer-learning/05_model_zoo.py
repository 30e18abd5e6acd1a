"""torchvision's model zoo, read from the library itself: what exists, what it costs, and how to choose.

Sections:
1. What is there: torchvision.models.list_models() (all tasks, or one module such as detection), with include
   filters; get_model_weights(name) lists each architecture's published weights.
2. The table: for every classification weights entry its parameter count, GFLOPs (meta["_ops"]), file size and
   ImageNet top-1 accuracy, all from weights.meta: no download needed.
3. Measured latency: a representative set of architectures built with get_model(name, weights=None) (random
   weights cost the same time as trained ones), timed on the CPU, and on CUDA when present (synchronised).
4. Accuracy against cost: a scatter of every entry, the Pareto front (no other model is both cheaper and more
   accurate) marked, saved as a PNG.
5. timm: timm.list_models with a pattern and pretrained=True, and a model's pretrained_cfg (input size, mean/std,
   crop, where its weights come from). timm.create_model(name, pretrained=True) loads them when online.
6. Choosing a backbone for a budget (GFLOPs, or measured milliseconds), computed from the table.
7. The metadata against a real file: when a weights file is in the cache under --data-dir (or downloadable, not
   with --smoke/--offline), it is loaded through get_model(weights=...) and its parameter count checked against
   meta["num_params"].

Run it:
    python 08-transfer-learning/05_model_zoo.py
    python 08-transfer-learning/05_model_zoo.py --smoke     # two tiny models timed, seconds

Takes about 6 seconds on a 2-core CPU (timing eight architectures); --smoke a few seconds. What to look for: the
Pareto front (mobilenets, efficientnets, regnets ... up to the large ViTs); how far apart GFLOPs and measured
latency rank the same models; the best model under each budget.
"""

import argparse
import contextlib
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
from matplotlib.figure import Figure
from torchvision.models import get_model, get_model_weights, list_models

TIMED = ("mobilenet_v3_small", "shufflenet_v2_x1_0", "regnet_y_400mf", "efficientnet_b0", "resnet18",
         "mobilenet_v3_large", "resnet50", "convnext_tiny")
TIMED_SMOKE = ("mobilenet_v3_small", "shufflenet_v2_x0_5")
BUDGETS_GFLOPS = (0.5, 2.0, 5.0, 20.0)
DEPTHWISE = ("mobilenet", "shufflenet", "efficientnet", "regnet", "mnasnet", "convnext")  # depthwise/grouped convs


def section(title: str) -> None:
    print(f"\n== {title} ==")


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
                        help="the accelerator timed besides the CPU; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="two tiny models at 112 px, few repeats; no network")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/08-transfer-learning/05_model_zoo"),
                        help="where metrics.json and the plot are written")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="weights cache (<data-dir>/hub/checkpoints) for section 7")
    parser.add_argument("--offline", action="store_true", help="never download (section 7 uses the cache only)")
    parser.add_argument("--resolution", type=int, default=224, help="input side for the latency measurements")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per model (median reported)")
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
    if args.resolution < 32 or args.repeats < 1:
        parser.error("--resolution must be >= 32 and --repeats >= 1")
    return args


@contextlib.contextmanager
def torch_home(path: Path):
    """TORCH_HOME=path inside the block (torch.hub.get_dir() is then <path>/hub, so get_model(weights=...) uses
    <path>/hub/checkpoints), put back after; torch.hub.set_dir instead would pin the folder for the whole process."""
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(Path(path).resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = previous


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def latency_ms(model, device, side: int, repeats: int) -> float:
    """Median wall time of one batch-1 forward pass, after a warm-up, synchronised on accelerators."""
    x = torch.randn(1, 3, side, side, device=device)
    model = model.to(device).eval()
    times = []
    with torch.inference_mode():
        model(x)  # warm-up: allocations, kernel choice
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            model(x)
            sync(device)
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def ranking_verdict(gflops: dict, ms: dict) -> tuple[int, str]:
    """How many positions the GFLOPs order and the measured order share, and one sentence true for these numbers:
    which models ran slower than their GFLOPs rank says, or that this run's two orders are the same."""
    by_flops, by_ms = sorted(gflops, key=gflops.get), sorted(ms, key=ms.get)
    agree, n = sum(a == b for a, b in zip(by_flops, by_ms)), len(by_ms)
    if agree == n:
        return agree, (f"{n}/{n} positions agree: in this run GFLOPs ordered these {n} models' CPU latency correctly; "
                       "another machine, batch size or set of models can order them otherwise")
    slower = [name for name in by_ms if by_ms.index(name) > by_flops.index(name)]
    why = ("; depthwise convs and memory traffic cost more than their FLOPs say"
           if any(name.startswith(DEPTHWISE) for name in slower) else "")
    return agree, (f"{agree}/{n} positions agree: FLOPs are not latency; {', '.join(slower)} ran slower than "
                   f"{'its' if len(slower) == 1 else 'their'} GFLOPs rank says{why}")


def pareto_front(points):
    """Indices of (cost, accuracy) points that no other point beats on both: cheaper-or-equal and more accurate."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -1.0
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    side = 112 if args.smoke else args.resolution
    repeats = 2 if args.smoke else args.repeats
    metrics = {}

    section("1. What is in the zoo")
    everything = list_models()
    tasks = {"classification": torchvision.models, "detection": torchvision.models.detection,
             "segmentation": torchvision.models.segmentation, "video": torchvision.models.video,
             "optical_flow": torchvision.models.optical_flow}
    counts = {task: len(list_models(module=module)) for task, module in tasks.items()}
    print(f"list_models(): {len(everything)} architectures; by task: {counts}")
    print(f"list_models(include='resnet*'): {list_models(include='resnet*')}")
    print(f"get_model_weights('resnet50'): {[w.name for w in get_model_weights('resnet50')]}")
    metrics.update(zoo_models=len(everything), zoo_classification_models=counts["classification"])

    section("2. Every classification weights entry, from .meta")
    rows = []
    for name in list_models(module=torchvision.models):
        for w in get_model_weights(name):
            m = w.meta
            if "ImageNet-1K" in m.get("_metrics", {}):
                rows.append({"weights": f"{name}.{w.name}", "model": name, "params_m": m["num_params"] / 1e6,
                             "gflops": m["_ops"], "size_mb": m["_file_size"],
                             "acc1": m["_metrics"]["ImageNet-1K"]["acc@1"]})
    print(f"{len(rows)} weights entries with ImageNet-1K results; a sample, sorted by GFLOPs:")
    print(f"{'weights':52s} {'params':>8s} {'GFLOPs':>7s} {'MB':>7s} {'acc@1':>6s}")
    for r in sorted(rows, key=lambda r: r["gflops"])[:: max(1, len(rows) // 12)]:
        print(f"{r['weights']:52s} {r['params_m']:7.1f}M {r['gflops']:7.2f} {r['size_mb']:7.1f} {r['acc1']:6.2f}")
    metrics.update(weights_entries=len(rows), best_acc1=max(r["acc1"] for r in rows),
                   min_gflops=min(r["gflops"] for r in rows))

    section("3. Measured latency (weights=None: the same cost as trained weights)")
    timed = TIMED_SMOKE if args.smoke else TIMED
    cpu = torch.device("cpu")
    measured = {}
    for name in timed:
        model = get_model(name, weights=None)
        measured[name] = {"cpu_ms": latency_ms(model, cpu, side, repeats)}
        if device.type != "cpu":
            measured[name]["accel_ms"] = latency_ms(model, device, side, repeats)
        meta = get_model_weights(name).DEFAULT.meta
        measured[name].update(gflops=meta["_ops"] * (side / 224) ** 2, acc1=meta["_metrics"]["ImageNet-1K"]["acc@1"])
        extra = f", {device.type} {measured[name]['accel_ms']:7.2f} ms" if "accel_ms" in measured[name] else ""
        print(f"{name:22s} {measured[name]['gflops']:6.2f} GFLOPs at {side}px: cpu {measured[name]['cpu_ms']:7.2f} ms"
              f"{extra} (median of {repeats}, batch 1, {torch.get_num_threads()} threads)")
    gflops = {n: v["gflops"] for n, v in measured.items()}
    cpu_ms = {n: v["cpu_ms"] for n, v in measured.items()}
    agree, verdict = ranking_verdict(gflops, cpu_ms)
    print(f"ranked by GFLOPs: {sorted(gflops, key=gflops.get)}\nranked by CPU ms: {sorted(cpu_ms, key=cpu_ms.get)}"
          f"  ({verdict})")
    for name, v in measured.items():
        metrics[f"{name}_cpu_ms"] = v["cpu_ms"]
        if "accel_ms" in v:
            metrics[f"{name}_{device.type}_ms"] = v["accel_ms"]
    metrics["timed_models"] = len(measured)

    section("4. Accuracy against cost, Pareto front")
    points = [(r["gflops"], r["acc1"]) for r in rows]
    front = pareto_front(points)
    fig = Figure(figsize=(9, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, c="tab:gray", alpha=0.6,
               label="a torchvision weights entry")
    fx, fy = [points[i][0] for i in front], [points[i][1] for i in front]
    ax.plot(fx, fy, "o-", c="tab:red", ms=5, label="Pareto front: nothing cheaper is more accurate")
    for i in front:
        ax.annotate(rows[i]["weights"].split(".")[0], points[i], fontsize=7, xytext=(3, -8), textcoords="offset points")
    ax.set(xscale="log", xlabel="GFLOPs per 224x224 image (meta['_ops'], log scale)", ylabel="ImageNet top-1 (%)",
           title="torchvision classification weights: accuracy against cost")
    ax.legend(loc="lower right")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot = args.out_dir / "accuracy_vs_cost.png"
    fig.savefig(plot, dpi=120, bbox_inches="tight")
    print(f"{len(front)} of {len(rows)} entries are on the front: {[rows[i]['weights'] for i in front][:6]} ...")
    print(f"plot: {plot}")
    metrics["pareto_front_size"] = len(front)

    section("5. timm: list_models and pretrained_cfg")
    timm_all, timm_pre = timm.list_models(), timm.list_models(pretrained=True)
    effnets = timm.list_models("efficientnet_b*", pretrained=True)
    print(f"timm.list_models(): {len(timm_all)} architectures; with pretrained tags: {len(timm_pre)}")
    print(f"timm.list_models('efficientnet_b*', pretrained=True)[:4] = {effnets[:4]}")
    tm = timm.create_model("resnet18", pretrained=False, num_classes=0)  # pretrained=True downloads (from the HF hub)
    cfg = tm.pretrained_cfg
    keys = ("input_size", "mean", "std", "crop_pct", "interpolation", "hf_hub_id")
    print("timm.create_model('resnet18', pretrained=False, num_classes=0).pretrained_cfg:")
    for k in keys:
        print(f"  {k:14s} {cfg.get(k)}")
    feats = tm(torch.randn(1, 3, 64, 64))
    print(f"num_classes=0 removes the head: output {tuple(feats.shape)} (features), "
          f"tm.num_features = {tm.num_features}")
    metrics.update(timm_models=len(timm_all), timm_pretrained_tags=len(timm_pre), timm_num_features=tm.num_features)

    section("6. Choosing a backbone for a budget")
    for budget in BUDGETS_GFLOPS:
        fits = [r for r in rows if r["gflops"] <= budget]
        best = max(fits, key=lambda r: r["acc1"])
        print(f"<= {budget:5.1f} GFLOPs: {best['weights']:48s} {best['acc1']:.2f}% at {best['gflops']:.2f} GFLOPs")
        metrics[f"best_acc1_under_{str(budget).replace('.', 'p')}_gflops"] = best["acc1"]
    fastest = min(v["cpu_ms"] for v in measured.values())
    ms_budget = 2 * fastest
    within = [n for n in measured if measured[n]["cpu_ms"] <= ms_budget]
    pick = max(within, key=lambda n: measured[n]["acc1"])
    print(f"measured budget {ms_budget:.1f} ms on this CPU (twice the fastest): {pick} "
          f"({measured[pick]['acc1']:.2f}%), from {within}")
    print("FLOPs rank models on paper; measure on your own hardware and batch size before you commit.")

    section("7. The metadata against a real weights file")
    weights = get_model_weights("resnet18").DEFAULT
    cached = args.data_dir / "hub" / "checkpoints" / Path(weights.url).name
    loaded_params = 0
    if cached.is_file() or not (args.smoke or args.offline):
        try:
            with torch_home(args.data_dir):  # the file is <data_dir>/hub/checkpoints/<name>
                model = get_model("resnet18", weights=weights)
            loaded_params = sum(p.numel() for p in model.parameters())
            print(f"loaded {weights} from {cached}: {loaded_params:,} parameters, meta says "
                  f"{weights.meta['num_params']:,}; file {cached.stat().st_size / 2**20:.1f} MB, meta says "
                  f"{weights.meta['_file_size']} MB")
        except Exception as err:
            print(f"resnet18 weights unavailable ({type(err).__name__}: {' '.join(str(err).split())[:70]}); skipped")
    else:
        print(f"{cached} is not cached and --smoke/--offline forbids a download: skipped")
    metrics.update(loaded_weights=int(loaded_params > 0),
                   loaded_params_match_meta=int(loaded_params == weights.meta["num_params"]))

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Every number in the table came from weights.meta: choose on paper before downloading anything.")
    print("- The Pareto front is short: most entries are beaten by something cheaper and at least as accurate.")
    if agree < len(measured):
        print("- GFLOPs and milliseconds disagree; timm adds hundreds more backbones, each with its pretrained_cfg.")
    else:
        print(f"- GFLOPs and milliseconds ranked these {len(measured)} models alike in this run"
              f"{' (the default run times ' + str(len(TIMED)) + ')' if args.smoke else ''}; timm adds hundreds more "
              "backbones, each with its pretrained_cfg.")
    return metrics


if __name__ == "__main__":
    main()

"""A frozen pretrained backbone as a feature extractor: which layer, which classifier, and what the features look like.

Sections:
1. The backbone and the target task. The backbone is the stand-in of 01_pretrained_models.py (a small ResNet
   pretrained on 52 rendered letters, loaded from --data-dir or re-created there). The target task is real: the
   1,797 handwritten digits that scikit-learn ships (43 writers), shown at 32x32 in random ink and paper colours,
   with only --train-per-class labelled images per digit.
2. Two ways to read inner layers: torchvision.models.feature_extraction (get_graph_node_names lists the nodes,
   create_feature_extractor returns the ones you ask for) and forward hooks (register_forward_hook on modules);
   they give the same tensors (max abs difference printed).
3. Features computed once: the backbone is frozen, so each image's features never change; they are extracted in
   one pass (eval mode, inference_mode), cached to a file, and every classifier after that trains in milliseconds.
4. Two classifiers on the cached features: a linear probe (logistic regression by AdamW) and k-nearest neighbours
   (cosine similarity, majority vote).
5. Which depth transfers best: the same two classifiers on layer1, layer2, layer3 and the pooled output, and the
   pooled output of a randomly initialised backbone as a control. A table.
6. A 2-D picture: PCA of the features by torch.pca_lowrank, coloured by digit, saved as a PNG.

Run it:
    python 08-transfer-learning/02_feature_extraction.py
    python 08-transfer-learning/02_feature_extraction.py --train-per-class 10

Takes about 15 seconds on a 2-core CPU the first time (pretraining the stand-in), a few seconds after that;
--smoke a few seconds. What to look for: "max abs diff 0" between the two extractors; the table (a middle layer
with spatial detail often beats the pooled output on digits; every pretrained row beats the random backbone);
digits forming clusters in the PCA plot.
"""

import argparse
import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from torchvision.models.resnet import BasicBlock

DEPTHS = ("layer1", "layer2", "layer3", "avgpool")


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
                        help="where the backbone runs; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random (the split, colours)")
    parser.add_argument("--smoke", action="store_true", help="fewer test images, short stand-in pretraining if none")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/08-transfer-learning/02_feature_extraction"),
                        help="where metrics.json, the feature cache and the plot are written")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where the stand-in backbone is cached")
    parser.add_argument("--train-per-class", type=int, default=20, help="labelled training images per digit")
    parser.add_argument("--knn-k", type=int, default=5, help="neighbours that vote in k-NN")
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
    if not 1 <= args.train_per_class <= 100:
        parser.error("--train-per-class must be between 1 and 100 (each digit has about 180 images)")
    if not 1 <= args.knn_k <= args.train_per_class * 10:
        parser.error("--knn-k must be between 1 and the number of training images")
    return args


# ---- The stand-in backbone. 01_pretrained_models.py defines, pretrains and explains it and caches its state dict;
# this file keeps the architecture (a state dict needs its class, as resnet18's file needs torchvision's ResNet) and
# the loader, and asks 01 to make the file when it is absent. ----
STANDIN_MEAN, STANDIN_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # its normalisation, as ImageNet's is resnet18's


def tiny_resnet(num_classes: int = 52, width: int = 16) -> nn.Sequential:
    """01's stand-in: torchvision's ResNet names (conv1, bn1, relu, layer1-3, avgpool, fc), one torchvision
    BasicBlock per stage, widths 16-32-64. (B, 3, 32, 32) -> (B, num_classes)."""
    def stage(cin: int) -> BasicBlock:  # halves the resolution, doubles the width
        block = BasicBlock(cin, 2 * cin, stride=2)
        block.downsample = nn.Sequential(nn.Conv2d(cin, 2 * cin, 1, 2, bias=False), nn.BatchNorm2d(2 * cin))
        return block

    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, width, 3, 2, 1, bias=False), bn1=nn.BatchNorm2d(width), relu=nn.ReLU(),
        layer1=BasicBlock(width, width), layer2=stage(width), layer3=stage(2 * width),  # (B, 64, 4, 4)
        avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(4 * width, num_classes)))


def standin_backbone(data_dir: Path, device, smoke: bool, out_dir: Path, made: bool = False) -> nn.Module:
    """01's cached stand-in (<name>-<sha256 prefix>.pt, hash checked as torch.hub does, weights_only=True; --smoke
    also takes 01's short smoke version). When there is none, 01 makes it: `01_pretrained_models.py --standin-only`,
    its metrics.json under this lesson's <out_dir>/standin (nothing written under the current directory)."""
    names = ["standin_glyphs_tinyresnet"] + (["standin_glyphs_tinyresnet_smoke"] if smoke else [])
    for path in [p for name in names for p in sorted(Path(data_dir).glob(f"{name}-*.pt"))]:
        if hashlib.sha256(path.read_bytes()).hexdigest().startswith(path.stem.rsplit("-", 1)[-1]):
            model = tiny_resnet().to(device)
            model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
            print(f"stand-in backbone loaded from {path} (sha256 checked)")
            if "_smoke-" in path.name:
                print(f"  01's short --smoke version: its features transfer far less than the full stand-in's; "
                      f"`01_pretrained_models.py --standin-only --data-dir {data_dir}` makes that once (~10 s)")
            return model.eval()
    command = [sys.executable, str(Path(__file__).with_name("01_pretrained_models.py")), "--standin-only",
               "--data-dir", str(data_dir), "--out-dir", str(Path(out_dir) / "standin"),
               "--device", device.type] + (["--smoke"] if smoke else [])
    if made:  # 01 ran and still left no intact file
        raise SystemExit(f"could not make the stand-in under {data_dir} with 01_pretrained_models.py --standin-only")
    print(f"no intact stand-in under {data_dir}: making it with {' '.join(command[1:])}")
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"could not make the stand-in under {data_dir} with 01_pretrained_models.py --standin-only")
    return standin_backbone(data_dir, device, smoke, out_dir, made=True)  # cached now
# ---- end of the stand-in ----


def colourise(ink: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(n, 1, s, s) ink in [0, 1] -> (n, 3, s, s): random ink and paper colours (kept apart), a little noise."""
    n, s = ink.shape[0], ink.shape[-1]
    fg, bg = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
    bg = torch.where((fg - bg).abs().mean(1, keepdim=True) < 0.35, 1 - fg, bg)
    return (bg + (fg - bg) * ink + 0.05 * torch.randn(n, 3, s, s, generator=g)).clamp(0, 1)


def real_digits():
    """scikit-learn's 1,797 real handwritten digits: (1797, 8, 8) float32 in 0-16 and their labels. Read from the
    file sklearn.datasets.load_digits() reads (digits.csv.gz: 64 pixels, then the label) without importing
    scikit-learn, which would take about a second; load_digits itself if that file is not where it is expected."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return torch.tensor(digits.images, dtype=torch.float32), torch.tensor(digits.target)
    table = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.float32))  # (1797, 65)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].long()


def coloured_digits(g: torch.Generator):
    """scikit-learn's real handwritten digits (8x8, 0-16) as (1797, 3, 32, 32) colour images, and their labels."""
    images, labels = real_digits()
    ink = images[:, None] / 16  # (1797, 1, 8, 8)
    ink = F.interpolate(ink, size=32, mode="bilinear", align_corners=False).clamp(0, 1)
    x = colourise(ink, g)
    x = (x - torch.tensor(STANDIN_MEAN).view(1, 3, 1, 1)) / torch.tensor(STANDIN_STD).view(1, 3, 1, 1)
    return x, labels


def split(y: torch.Tensor, per_class: int, g: torch.Generator):
    """Stratified: per_class training indices of each class, the rest for testing."""
    train, test = [], []
    for c in range(int(y.max()) + 1):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        train.append(idx[:per_class])
        test.append(idx[per_class:])
    test = torch.cat(test)
    return torch.cat(train), test[torch.randperm(len(test), generator=g)]  # shuffled: halves hold every class


def pool(f: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4C): a 2x2 average keeps a little of where things are; avgpool's (N, C, 1, 1) -> (N, C)."""
    return F.adaptive_avg_pool2d(f, 2).flatten(1) if f.shape[-1] > 1 else f.flatten(1)


def linear_probe(f_train, y_train, f_test, y_test, steps: int = 300) -> float:
    """Logistic regression on standardised features, full-batch AdamW; test accuracy."""
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    torch.manual_seed(0)  # the same initial head for every set of features
    head = nn.Linear(f_train.shape[1], int(y_train.max()) + 1).to(f_train.device)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        loss = F.cross_entropy(head((f_train - mu) / sd), y_train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (head((f_test - mu) / sd).argmax(1) == y_test).float().mean().item()


def knn(f_train, y_train, f_test, y_test, k: int) -> float:
    """k nearest neighbours by cosine similarity, majority vote (ties to the lower class)."""
    sim = F.normalize(f_test, dim=1) @ F.normalize(f_train, dim=1).T  # (N_test, N_train)
    votes = y_train[sim.topk(k, dim=1).indices]  # (N_test, k)
    pred = F.one_hot(votes, int(y_train.max()) + 1).sum(1).argmax(1)
    return (pred == y_test).float().mean().item()


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    metrics = {}

    section("1. A frozen backbone and a new task")
    backbone = standin_backbone(args.data_dir, device, args.smoke, args.out_dir).eval()
    backbone.requires_grad_(False)
    g = torch.Generator().manual_seed(args.seed)
    x, y = coloured_digits(g)
    train_idx, test_idx = split(y, args.train_per_class, g)
    if args.smoke:
        test_idx = test_idx[torch.randperm(len(test_idx), generator=g)[:500]]
    print(f"target: scikit-learn's handwritten digits in random colours, {len(train_idx)} labelled training images "
          f"({args.train_per_class} per digit), {len(test_idx)} test images; chance 10%")

    section("2. Inner layers: create_feature_extractor and forward hooks")
    train_nodes, eval_nodes = get_graph_node_names(backbone)
    print(f"get_graph_node_names: {len(eval_nodes)} nodes, e.g. {eval_nodes[:4]} ... {eval_nodes[-3:]}")
    extractor = create_feature_extractor(backbone, return_nodes={d: d for d in DEPTHS})
    captured, handles = {}, []
    for d in DEPTHS:
        hook = (lambda name: lambda module, inputs, output: captured.__setitem__(name, output))(d)
        handles.append(getattr(backbone, d).register_forward_hook(hook))
    probe_batch = x[:64].to(device)
    with torch.inference_mode():
        fx_out = extractor(probe_batch)
        backbone(probe_batch)
    for h in handles:
        h.remove()  # hooks stay until removed: forgetting this slows down and leaks memory in every later call
    diff = max((fx_out[d] - captured[d]).abs().max().item() for d in DEPTHS)
    for d in DEPTHS:
        print(f"  {d:8s} {tuple(fx_out[d].shape)}")
    print(f"create_feature_extractor vs forward hooks: max abs diff {diff:.1e} over {len(DEPTHS)} layers")
    metrics.update(graph_nodes=len(eval_nodes), hook_vs_fx_max_abs_diff=diff)

    section("3. Features computed once, cached")
    t0 = time.perf_counter()
    feats = {d: [] for d in DEPTHS}
    with torch.inference_mode():
        for i in range(0, len(x), 256):
            out = extractor(x[i:i + 256].to(device))
            for d in DEPTHS:
                feats[d].append(pool(out[d]).cpu())
    feats = {d: torch.cat(v) for d, v in feats.items()}
    extract_s = time.perf_counter() - t0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cache = args.out_dir / "features.pt"
    torch.save({"features": feats, "labels": y}, cache.with_name("features.pt.tmp"))
    os.replace(cache.with_name("features.pt.tmp"), cache)
    feats = torch.load(cache, weights_only=True)["features"]
    print(f"one pass over {len(x)} images in {extract_s:.2f} s; saved {cache} "
          f"({cache.stat().st_size / 2**20:.1f} MB): every classifier below reads these tensors, not the images")
    metrics["extract_s"] = extract_s

    section("4. A linear probe and k-NN on the pooled features")
    t0 = time.perf_counter()
    f = feats["avgpool"]
    probe_acc = linear_probe(f[train_idx], y[train_idx], f[test_idx], y[test_idx])
    probe_s = time.perf_counter() - t0
    knn_acc = knn(f[train_idx], y[train_idx], f[test_idx], y[test_idx], args.knn_k)
    print(f"linear probe: {probe_acc:.1%} (trained in {probe_s:.2f} s on cached features); "
          f"{args.knn_k}-NN: {knn_acc:.1%}")
    metrics.update(probe_acc=probe_acc, knn_acc=knn_acc, probe_train_s=probe_s)

    section("5. Which depth transfers best")
    torch.manual_seed(args.seed)
    random_net = tiny_resnet().to(device).eval()  # same architecture, never trained: the control
    with torch.inference_mode():
        rand_feats = torch.cat([random_net.avgpool(random_net.layer3(random_net.layer2(random_net.layer1(
            random_net.relu(random_net.bn1(random_net.conv1(x[i:i + 256].to(device)))))))).flatten(1).cpu()
            for i in range(0, len(x), 256)])
    rows = [(d, feats[d]) for d in DEPTHS] + [("random avgpool", rand_feats)]  # avgpool: the probe of section 4
    print(f"{'features':16s} {'dims':>5s} {'probe':>7s} {f'{args.knn_k}-NN':>7s}")
    table = {}
    for name, fe in rows:
        p = linear_probe(fe[train_idx], y[train_idx], fe[test_idx], y[test_idx])
        k = knn(fe[train_idx], y[train_idx], fe[test_idx], y[test_idx], args.knn_k)
        table[name] = (p, k)
        print(f"{name:16s} {fe.shape[1]:5d} {p:7.1%} {k:7.1%}")
        metrics[f"probe_acc_{name.replace(' ', '_')}"] = p
        metrics[f"knn_acc_{name.replace(' ', '_')}"] = k
    best = max(DEPTHS, key=lambda d: table[d][0])
    margin = table["avgpool"][0] - table["random avgpool"][0]
    print(f"best layer for a linear probe: {best} ({table[best][0]:.1%}); pretrained pooled features beat the "
          f"random backbone's by {margin:+.1%}")
    metrics.update(best_depth_index=DEPTHS.index(best), pretrained_minus_random_probe=margin)

    section("6. The features in 2-D (PCA by torch.pca_lowrank)")
    ft = feats[best][test_idx]
    ft = (ft - ft.mean(0)) / (ft.std(0) + 1e-6)
    U, S, V = torch.pca_lowrank(ft, q=2, center=True, niter=4)  # ft ~ U diag(S) V^T
    xy = (ft - ft.mean(0)) @ V[:, :2]  # (N, 2)
    explained = (S[:2] ** 2).sum().item() / ((ft - ft.mean(0)) ** 2).sum().item()
    knn_2d = knn(xy[: len(xy) // 2], y[test_idx][: len(xy) // 2], xy[len(xy) // 2:], y[test_idx][len(xy) // 2:], 5)
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=y[test_idx], cmap="tab10", s=8)
    fig.colorbar(sc, ax=ax, label="digit")
    ax.set(xlabel="principal component 1", ylabel="principal component 2",
           title=f"{best} features of the test digits, 2-D PCA ({explained:.0%} of variance)")
    plot = args.out_dir / "pca_features.png"
    fig.savefig(plot, dpi=120, bbox_inches="tight")
    print(f"2 components hold {explained:.1%} of the variance; 5-NN in that plane alone: {knn_2d:.1%}; plot: {plot}")
    metrics.update(pca_explained_2d=explained, knn_acc_pca_2d=knn_2d)

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- create_feature_extractor and hooks read the same tensors; the extractor needs no manual bookkeeping.")
    print("- A frozen backbone's features are computed once; the classifier on top then trains in a blink.")
    print("- The best layer for a new task is not always the last: compare depths, and always a random control.")
    return metrics


if __name__ == "__main__":
    main()

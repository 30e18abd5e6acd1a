"""Exporting to ONNX and serving with onnxruntime: parity, speed, int8, and the pitfalls, shown.

Sections:
1. A model worth exporting: a small CNN (Conv, BatchNorm, ReLU, MaxPool, Dropout, Linear) trained on 1,797 real
   8x8 handwritten digits (scikit-learn's load_digits).
2. torch.onnx.export(model, args, dynamo=True) with a dynamic batch dimension (dynamic_shapes with
   torch.export.Dim), onnx.checker.check_model, and the graph's operators counted by type.
3. onnxruntime's outputs against eager PyTorch at several batch sizes (max abs difference), and test accuracy.
4. Latency at batch 1 and 32, eager vs onnxruntime, with the thread counts set explicitly on both sides and the
   median of many runs.
5. Dynamic int8 quantisation (onnxruntime.quantization.quantize_dynamic): file size, latency and accuracy.
6. Pitfalls, each made to happen: exporting in train mode, the external-data file that must travel with the
   .onnx, and a batch size the exporter fixed silently because no dimension was declared dynamic.

Run it:
    python 09-custom-models/06_onnx_export.py
    python 09-custom-models/06_onnx_export.py --threads 2 --epochs 12

Takes about 8 seconds on an idle 2-core CPU, and --smoke still about 7 s: importing onnxscript and the first
torch.export trace cost seconds each, and the lesson exports three times. Offline; everything is written
under --out-dir. What to look for: ORT == eager to a few 1e-6, onnxruntime several times faster than eager at batch 1
(eager pays Python and dispatch overhead per layer), the int8 file about 3x smaller with the accuracy nearly
unchanged, and the three pitfalls' errors and mismatches.
"""

import argparse
import importlib.util
import json
import logging
import random
import shutil
import statistics
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn


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
                        help="where the CNN trains; export, onnxruntime and the timings run on the CPU")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="2 epochs and fewer timing repeats")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/09-custom-models/06_onnx_export"),
                        help="where the .onnx files and metrics.json go")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs before export")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for both eager PyTorch and onnxruntime during the timings")
    parser.add_argument("--repeats", type=int, default=200, help="timed runs per measurement (the median is kept)")
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
    if args.epochs < 1 or args.threads < 1 or args.repeats < 5:
        parser.error("need --epochs >= 1, --threads >= 1 and --repeats >= 5")
    return args


class DigitsCNN(nn.Module):
    """(B, 1, 8, 8) images -> (B, 10) logits. BatchNorm and Dropout behave differently in train and eval mode."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),  # (B, 16, 8, 8)
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),  # (B, 32, 8, 8)
            nn.MaxPool2d(2), nn.Flatten(),  # (B, 512)
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.head(self.features(x))


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


def load_digits_images(seed: int):
    images, y = real_digits()
    x = images.unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return (x[:1300], y[:1300]), (x[1300:], y[1300:])


def train(model, x, y, epochs: int, device, seed: int) -> float:
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return loss.item()


def session(path: Path, threads: int, optimize: bool = True) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # explicit: the default is one thread per core
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_ort(sess, x: torch.Tensor) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def median_ms(fn, repeats: int) -> float:
    for _ in range(max(3, repeats // 10)):  # warm-up: allocations, caches, lazy initialisation
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)  # the median ignores the odd run a busy machine slows down


def export(model, example, dynamic: bool):
    """torch.onnx.export with the dynamo exporter; returns the ONNXProgram (saved by the caller)."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    return torch.onnx.export(model, (example,), dynamo=True, input_names=["image"], output_names=["logits"],
                             dynamic_shapes={"x": {0: batch}} if dynamic else None, verbose=False)


def one_line(err: Exception) -> str:
    return f"{type(err).__name__}: " + " ".join(str(err).split())[:200]


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    out = args.out_dir
    shutil.rmtree(out / "onnx", ignore_errors=True)  # a rerun starts clean
    onnx_dir = out / "onnx"
    onnx_dir.mkdir(parents=True)
    saved_threads = torch.get_num_threads()
    quiet = logging.getLogger()  # quantize_dynamic logs a pre-processing suggestion on the root logger
    saved_level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch.export internals, not the learner's
            metrics = run(args, device, onnx_dir)
    finally:
        torch.set_num_threads(saved_threads)
        quiet.setLevel(saved_level)

    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (out / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {out / 'metrics.json'}")

    section("What to notice")
    print("- model.eval() before export, declare every dimension that varies, and check the file with onnx.checker "
          "and against eager outputs at several shapes before shipping it.")
    print("- onnxruntime wins most where eager PyTorch pays per-op Python overhead: small batches, small models.")
    print("- quantize_dynamic stores Linear/MatMul weights in int8: a smaller file, usually a small accuracy change; "
          "measure both on your own data.")
    print("- An ONNX model is a .onnx file plus, often, a .onnx.data file: ship both.")
    return metrics


def run(args, device, onnx_dir: Path) -> dict:
    section("1. A model worth exporting")
    (x_train, y_train), (x_test, y_test) = load_digits_images(args.seed)
    model = DigitsCNN()
    final_loss = train(model, x_train, y_train, 2 if args.smoke else args.epochs, device, args.seed)
    model = model.to("cpu").eval()  # export and compare on the CPU, where onnxruntime runs here
    with torch.inference_mode():
        eager_test = model(x_test)
    eager_acc = (eager_test.argmax(1) == y_test).float().mean().item()
    print(f"trained on {device} ({len(x_train)} digits): last batch loss {final_loss:.4f}, test accuracy "
          f"{eager_acc:.2%} (chance 10%)")

    section("2. Export with dynamo=True and a dynamic batch dimension")
    t0 = time.perf_counter()
    program = export(model, x_test[:4], dynamic=True)
    export_s = time.perf_counter() - t0
    path = onnx_dir / "digits.onnx"
    program.save(str(path), external_data=False)  # weights inside the .onnx (fine below 2 GB)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)  # raises on an invalid graph
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    ops = Counter(node.op_type for node in proto.graph.node)
    print(f"exported in {export_s:.1f} s to {path} ({path.stat().st_size / 1e3:.0f} kB, opset "
          f"{proto.opset_import[0].version}); onnx.checker: valid; input 'image' shape {dims}")
    print("operators: " + ", ".join(f"{op} x{n}" for op, n in sorted(ops.items())))
    bn_nodes = ops.get("BatchNormalization", 0)
    print(f"BatchNormalization nodes: {bn_nodes} (the exporter's optimiser folds eval-mode BatchNorm into the Conv "
          "weights); Dropout nodes: " + str(ops.get("Dropout", 0)))

    section("3. onnxruntime vs eager")
    sess = session(path, args.threads)
    worst = 0.0
    for b in (1, 7, 32, 256):
        xb = x_test[:b]
        with torch.inference_mode():
            diff = float(np.abs(run_ort(sess, xb) - model(xb).numpy()).max())
        worst = max(worst, diff)
        print(f"  batch {b:>3}: max abs difference {diff:.2e}")
    ort_test = torch.from_numpy(run_ort(sess, x_test))
    ort_acc = (ort_test.argmax(1) == y_test).float().mean().item()
    print(f"worst {worst:.2e} (goal <= 1e-4); test accuracy eager {eager_acc:.2%}, onnxruntime {ort_acc:.2%}")

    repeats = 30 if args.smoke else args.repeats
    section(f"4. Latency: {args.threads} thread(s) each, median of {repeats} runs")
    torch.set_num_threads(args.threads)
    timings = {}
    for b in (1, 32):
        xb = x_test[:b].contiguous()
        feed = {"image": xb.numpy()}

        def eager(xb=xb):
            with torch.inference_mode():
                model(xb)

        timings[b] = (median_ms(eager, repeats), median_ms(lambda feed=feed: sess.run(None, feed), repeats))
        e, o = timings[b]
        print(f"  batch {b:>2}: eager {e:.3f} ms, onnxruntime {o:.3f} ms -> onnxruntime / eager = {o / e:.2f}")
    ratio1 = timings[1][1] / timings[1][0]
    print(f"goal at batch 1: onnxruntime <= 0.8x eager; measured {ratio1:.2f}x "
          f"({'met' if ratio1 <= 0.8 else 'not met on this machine'})")

    section("5. Dynamic int8 quantisation")
    q_path = onnx_dir / "digits_int8.onnx"
    try:
        quantize_dynamic(path, q_path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        print("quantize_dynamic on the exported file: ok")
    except Exception as err:  # the exporter's value_info for the weights can trip the quantizer's shape inference
        print(f"quantize_dynamic on the exported file failed: {one_line(err)}")
        clean = onnx.load(str(path))
        del clean.graph.value_info[:]  # drop the stored intermediate shapes; the quantizer re-infers them
        clean_path = onnx_dir / "digits_no_value_info.onnx"
        onnx.save(clean, str(clean_path))
        quantize_dynamic(clean_path, q_path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        print("  after deleting graph.value_info (stale shapes the quantizer re-infers): ok")
    q_ops = Counter(node.op_type for node in onnx.load(str(q_path)).graph.node)
    q_sess = session(q_path, args.threads)
    q_test = torch.from_numpy(run_ort(q_sess, x_test))
    q_acc = (q_test.argmax(1) == y_test).float().mean().item()
    agree = (q_test.argmax(1) == ort_test.argmax(1)).float().mean().item()
    q_diff = (q_test - ort_test).abs().max().item()
    size_fp32, size_int8 = path.stat().st_size, q_path.stat().st_size
    q_ms = {b: median_ms(lambda b=b: q_sess.run(None, {"image": x_test[:b].numpy()}), repeats) for b in (1, 32)}
    print(f"Gemm -> {q_ops.get('MatMulInteger', 0)} MatMulInteger + DynamicQuantizeLinear (activations quantised "
          "per batch at run time, weights stored int8)")
    print(f"  size: {size_fp32 / 1e3:.0f} kB -> {size_int8 / 1e3:.0f} kB ({size_fp32 / size_int8:.1f}x smaller)")
    print(f"  latency: batch 1 {timings[1][1]:.3f} -> {q_ms[1]:.3f} ms, batch 32 {timings[32][1]:.3f} -> "
          f"{q_ms[32]:.3f} ms")
    print(f"  test accuracy {ort_acc:.2%} -> {q_acc:.2%}; predictions agree on {agree:.2%}; logits max abs change "
          f"{q_diff:.3f}")

    section("6. Pitfalls, made to happen")
    train_mode = pitfall_train_mode(model, x_test, onnx_dir, args.threads)
    external = pitfall_external_data(program, x_test, onnx_dir, args.threads)
    fixed = pitfall_fixed_batch(model, x_test, onnx_dir, args.threads)

    return {"eager_test_acc": eager_acc, "ort_test_acc": ort_acc, "ort_max_abs_diff": worst,
            "onnx_nodes": sum(ops.values()), "onnx_conv_nodes": ops.get("Conv", 0),
            "onnx_batchnorm_nodes": bn_nodes, "input_batch_dynamic": int(isinstance(dims[0], str)),
            "export_s": export_s, "eager_b1_ms": timings[1][0], "ort_b1_ms": timings[1][1],
            "eager_b32_ms": timings[32][0], "ort_b32_ms": timings[32][1], "ort_vs_eager_b1_speedup": 1 / ratio1,
            "int8_b1_ms": q_ms[1], "int8_b32_ms": q_ms[32], "fp32_onnx_bytes": size_fp32,
            "int8_onnx_bytes": size_int8, "int8_test_acc": q_acc, "int8_agreement": agree,
            "int8_logit_max_abs_change": q_diff, "int8_matmulinteger_nodes": q_ops.get("MatMulInteger", 0),
            **train_mode, **external, **fixed}


def pitfall_train_mode(model, x_test, onnx_dir: Path, threads: int) -> dict:
    print("(a) exported in train mode")
    model.train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        program = export(model, x_test[:4], dynamic=True)
    model.eval()
    said = [str(w.message).split(".")[0] for w in caught if "training mode" in str(w.message)]
    path = onnx_dir / "digits_train_mode.onnx"
    program.save(str(path), external_data=False)
    nodes = onnx.load(str(path)).graph.node
    dropout = [n for n in nodes if n.op_type == "Dropout"]
    x = x_test[:64]
    with torch.inference_mode():
        reference = model(x).numpy()  # what the deployed model should compute: eval mode
    default = float(np.abs(run_ort(session(path, threads), x) - reference).max())
    raw = session(path, threads, optimize=False)  # a runtime that executes the graph as written
    first, second = run_ort(raw, x), run_ort(raw, x)
    raw_diff = float(np.abs(first - reference).max())
    repeat_diff = float(np.abs(first - second).max())
    print(f"    torch warned: {said[0] if said else '(no warning)'}")
    print(f"    the graph holds {len(dropout)} Dropout node(s) with training_mode=True (eval export: none)")
    print(f"    onnxruntime, default optimisations: max abs difference from eval-mode eager {default:.2e} "
          "(its optimiser happens to delete Dropout nodes)")
    print(f"    onnxruntime with ORT_DISABLE_ALL (the graph as written, as another runtime would run it): "
          f"{raw_diff:.3f}, and two calls on the same input differ by {repeat_diff:.3f}: random outputs")
    return {"train_export_dropout_nodes": len(dropout), "train_export_default_ort_matches": int(default < 1e-4),
            "train_export_mismatch": int(raw_diff > 0.01), "train_export_nondeterministic": int(repeat_diff > 0.01)}


def pitfall_external_data(program, x_test, onnx_dir: Path, threads: int) -> dict:
    print("(b) the external-data file")
    folder = onnx_dir / "with_external_data"
    folder.mkdir()
    path = folder / "digits.onnx"
    program.save(str(path), external_data=True)  # torch.onnx.export(model, args, f) defaults to external_data=True
    files = sorted(p.name for p in folder.iterdir())
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e3:.1f} kB" for p in sorted(folder.iterdir()))
    print(f"    program.save(..., external_data=True) wrote {sizes}: the graph in one, the weights in the other")
    copied = onnx_dir / "copied_without_data"
    copied.mkdir()
    shutil.copy(path, copied / path.name)  # someone ships only the .onnx
    try:
        session(copied / path.name, threads)
        error = ""
    except Exception as err:
        error = one_line(err)
    print(f"    only the .onnx copied elsewhere: {error or 'loaded (unexpected)'}")
    both = float(np.abs(run_ort(session(path, threads), x_test[:8]) - run_ort(session(onnx_dir / "digits.onnx",
                                                                                       threads), x_test[:8])).max())
    print(f"    with both files side by side: loads, and equals the single-file model (max abs difference {both:.1e})")
    return {"external_data_files": len(files), "load_without_data_fails": int(bool(error)),
            "external_data_max_abs_diff": both}


def pitfall_fixed_batch(model, x_test, onnx_dir: Path, threads: int) -> dict:
    print("(c) a batch size fixed silently")
    program = export(model, x_test[:1], dynamic=False)  # traced at batch 1, no dynamic_shapes
    path = onnx_dir / "digits_fixed_batch.onnx"
    program.save(str(path), external_data=False)
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    sess = session(path, threads)
    run_ort(sess, x_test[:1])
    try:
        run_ort(sess, x_test[:32])
        error = ""
    except Exception as err:
        error = one_line(err)
    print(f"    exported with an example of batch 1 and no dynamic_shapes: input shape {dims}; batch 1 runs;")
    print(f"    batch 32: {error or 'ran (unexpected)'}")
    return {"fixed_batch_dim": int(dims[0]) if isinstance(dims[0], int) else -1,
            "fixed_batch_32_fails": int(bool(error))}


if __name__ == "__main__":
    main()

"""Autograd basics: requires_grad, grad_fn, leaves, .grad, retain_grad, detach, no_grad and inference_mode.

Autograd records every operation on tensors that require gradients and, on `.backward()`, walks that record
backwards applying the chain rule. This lesson shows each switch that controls the record, with numbers:
a first derivative checked against the calculus answer, leaf versus non-leaf tensors (only leaves keep `.grad`
unless you ask with `retain_grad()`), gradients that *accumulate* in `.grad` until you clear them, the graph that
is freed after one backward unless `retain_graph=True`, `detach()` as a stop-gradient, and `torch.no_grad()`
versus `torch.inference_mode()`.

Run it:
    python 03-autograd-backprop/01_autograd_basics.py
    python 03-autograd-backprop/01_autograd_basics.py --device cpu --smoke

Takes about 2 s on a 2-core CPU. What to look for: autograd's derivative equals the hand-derived one, the
second backward without retain_graph raises, .grad doubles when you forget to clear it, and the forward timings with
grad enabled, under no_grad and under inference_mode (the last two skip the recording).
"""

import argparse
import json
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch


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
                        help="where the tensors live; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the whole lesson in a few seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/03-autograd-backprop/01_autograd_basics"),
                        help="where metrics.json is written")
    parser.add_argument("--size", type=int, default=512, help="matrix size for the no_grad/inference_mode timing")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # NumPy's seed range (torch takes any 64-bit integer)
        parser.error(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    for flag in ("--out-dir", "--data-dir"):  # a file where a folder must be (or be made): one line, no traceback
        path = getattr(args, flag[2:].replace("-", "_"), None)
        existing = next((p for p in (Path(path), *Path(path).parents) if p.exists()), None) if path else None
        if existing is not None and not existing.is_dir():
            parser.error(f"{flag} {path}: {existing} is a file, not a folder")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if args.size < 2:
        parser.error("--size must be at least 2")
    return args


def sync(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize()  # GPU work (CUDA, MPS) is asynchronous: wait before reading the clock


def time_forward(model: torch.nn.Module, x: torch.Tensor, context, repeats: int, device: torch.device) -> float:
    """Mean milliseconds of one forward pass of `model` inside `context()`."""
    with context():
        model(x)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        with context():
            model(x)
    sync(device)
    return (time.perf_counter() - start) / repeats * 1e3


def saved_for_backward_bytes(model: torch.nn.Module, x: torch.Tensor, context) -> int:
    """Bytes of the tensors autograd saves for backward during one forward inside `context()`."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), context():
        model(x)
    return total


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")

    section("A first derivative: y = x^3 + 2x at x = 1.5")
    x = torch.tensor(1.5, device=device, requires_grad=True)  # a leaf: created by you, not by an operation
    y = x**3 + 2 * x
    y.backward()  # fills x.grad with dy/dx
    by_hand = 3 * 1.5**2 + 2
    print(f"autograd dy/dx = {x.grad.item():.6f}   by hand 3x^2 + 2 = {by_hand:.6f}")
    print(f"y.grad_fn = {type(y.grad_fn).__name__} (the last operation; x.grad_fn = {x.grad_fn})")
    first_derivative = x.grad.item()
    first_derivative_error = abs(first_derivative - by_hand)

    section("Leaf versus non-leaf tensors, and retain_grad()")
    w = torch.randn(3, device=device, requires_grad=True)  # (3,) leaf
    h = w * 2  # (3,) non-leaf: produced by an operation, has a grad_fn
    h.retain_grad()  # ask autograd to keep this intermediate's gradient too
    g = w * 3  # (3,) non-leaf, no retain_grad
    loss = (h * g).sum()
    loss.backward()
    print(f"w.is_leaf={w.is_leaf}  h.is_leaf={h.is_leaf}  g.is_leaf={g.is_leaf}")
    print(f"w.grad = {w.grad.tolist()}   (d/dw of 6 w^2 summed = 12 w)")
    print(f"h.grad (retained) = {h.grad.tolist()}   (d loss/dh = g)")
    with warnings.catch_warnings(record=True):  # reading .grad of a non-leaf warns: that warning is the lesson
        warnings.simplefilter("ignore")
        g_grad_is_none = g.grad is None
    print(f"g.grad is None: {g_grad_is_none}  (non-leaves free their gradient unless you call retain_grad())")
    leaf_grad_error = (w.grad - 12 * w.detach()).abs().max().item()
    retained_grad_error = (h.grad - g.detach()).abs().max().item()

    section("Gradients accumulate in .grad until you clear them")
    p = torch.tensor([1.0, -2.0], device=device, requires_grad=True)
    (p**2).sum().backward()
    once = p.grad.clone()
    (p**2).sum().backward()  # no clearing in between: the new gradient is ADDED
    twice = p.grad.clone()
    print(f"after one backward: {once.tolist()}   after a second: {twice.tolist()}")
    accumulation_ratio = (twice / once).mean().item()
    p.grad = None  # what optimizer.zero_grad() does by default (set_to_none=True)
    (p**2).sum().backward()
    print(f"after p.grad = None and a third backward: {p.grad.tolist()}")
    cleared_grad_error = (p.grad - once).abs().max().item()

    section("The graph is freed after backward, unless retain_graph=True")
    a = torch.tensor(2.0, device=device, requires_grad=True)
    out = a.exp() * a  # exp saves its result for backward; backward frees saved tensors
    out.backward()
    try:
        out.backward()
        second_backward_raised = False
    except RuntimeError as err:
        second_backward_raised = True
        print(f"second backward raised RuntimeError: {str(err).splitlines()[0][:90]}...")
    a.grad = None
    out = a.exp() * a
    out.backward(retain_graph=True)
    out.backward()  # allowed: the buffers were kept; the two gradients add up
    expected = 2 * (a.exp() * (1 + a)).item()
    retain_graph_error = abs(a.grad.item() - expected)
    print(f"with retain_graph=True two backwards give {a.grad.item():.5f} = 2 * e^a (1 + a) = {expected:.5f}")

    section("detach(): a stop-gradient")
    x = torch.tensor(3.0, device=device, requires_grad=True)
    (x * x).backward()
    full = x.grad.item()
    x.grad = None
    (x * x.detach()).backward()  # the detached factor is a constant to autograd
    stopped = x.grad.item()
    d = x.detach()
    print(f"d/dx (x * x) = {full}   d/dx (x * x.detach()) = {stopped}   (2x versus x)")
    print(f"x.detach(): requires_grad={d.requires_grad}, shares memory with x: {d.data_ptr() == x.data_ptr()}")

    section("detach() versus the old .data: in-place edits")
    a = torch.tensor([1.0, 2.0], device=device, requires_grad=True)
    out = a.exp()  # ExpBackward saves its output: d e^a / da = e^a
    out.detach().zero_()  # shares storage with out, and autograd's version counter sees the change
    try:
        out.sum().backward()
        detach_inplace_raised = False
    except RuntimeError as err:
        detach_inplace_raised = True
        print(f"after out.detach().zero_(), backward raised: {str(err).splitlines()[0][:80]}...")
    out = a.exp()
    out.data.zero_()  # .data (the pre-0.4 Variable idiom) hides the edit from autograd
    out.sum().backward()
    data_silent_grad = a.grad.abs().max().item()
    print(f"after out.data.zero_(), backward ran and gave grad {a.grad.tolist()}; the truth is "
          f"e^a = {[round(v, 4) for v in a.detach().exp().tolist()]}: silently wrong. Use detach().")

    section("torch.no_grad() versus torch.inference_mode()")
    n = 64 if args.smoke else args.size
    model = torch.nn.Sequential(torch.nn.Linear(n, n), torch.nn.ReLU(), torch.nn.Linear(n, n)).to(device)
    inputs = torch.randn(n, n, device=device)  # (batch, features)
    with torch.no_grad():
        out_no_grad = model(inputs)
    with torch.inference_mode():
        out_inference = model(inputs)
    print(f"no_grad output: requires_grad={out_no_grad.requires_grad}, is_inference={out_no_grad.is_inference()}")
    print(f"inference_mode output: requires_grad={out_inference.requires_grad}, "
          f"is_inference={out_inference.is_inference()}")
    try:
        (out_inference * model[0].weight.sum()).sum().backward()
        inference_tensor_in_autograd_raised = False
    except RuntimeError as err:
        inference_tensor_in_autograd_raised = True
        print(f"using the inference tensor in autograd later raised: {str(err).splitlines()[0][:80]}...")
    (out_no_grad * model[0].weight.sum()).sum().backward()  # a no_grad result is an ordinary constant
    print("the no_grad result can still be used as a constant in a later graph (backward ran)")
    saved_grad = saved_for_backward_bytes(model, inputs, torch.enable_grad)
    saved_no_grad = saved_for_backward_bytes(model, inputs, torch.no_grad)
    print(f"tensors saved for backward by one forward: {saved_grad / 2**10:.1f} KiB with grad enabled, "
          f"{saved_no_grad} bytes under no_grad (the real saving is memory)")
    repeats = 5 if args.smoke else 20
    enabled_ms = time_forward(model, inputs, torch.enable_grad, repeats, device)
    no_grad_ms = time_forward(model, inputs, torch.no_grad, repeats, device)
    inference_ms = time_forward(model, inputs, torch.inference_mode, repeats, device)
    print(f"forward of a {n}x{n} MLP: grad enabled {enabled_ms:.3f} ms, no_grad {no_grad_ms:.3f} ms, "
          f"inference_mode {inference_ms:.3f} ms")

    metrics = {
        "first_derivative": first_derivative,
        "first_derivative_error": first_derivative_error,
        "leaf_grad_error": leaf_grad_error,
        "retained_grad_error": retained_grad_error,
        "nonleaf_grad_is_none": g_grad_is_none,
        "accumulation_ratio": accumulation_ratio,
        "cleared_grad_error": cleared_grad_error,
        "second_backward_raised": second_backward_raised,
        "retain_graph_error": retain_graph_error,
        "grad_x_times_x": full,
        "grad_x_times_detached_x": stopped,
        "detach_inplace_raised": detach_inplace_raised,
        "data_inplace_silent_grad": data_silent_grad,
        "inference_tensor_in_autograd_raised": inference_tensor_in_autograd_raised,
        "no_grad_output_requires_grad": out_no_grad.requires_grad,
        "saved_for_backward_bytes_grad": saved_grad,
        "saved_for_backward_bytes_no_grad": saved_no_grad,
        "forward_grad_enabled_ms": enabled_ms,
        "forward_no_grad_ms": no_grad_ms,
        "forward_inference_mode_ms": inference_ms,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- requires_grad=True on a leaf starts the record; every result of an operation gets a grad_fn.")
    print("- Only leaves keep .grad; call retain_grad() on an intermediate you want to inspect.")
    print("- .grad accumulates: clear it (optimizer.zero_grad() / p.grad = None) before each new backward.")
    print("- backward frees the graph; retain_graph=True keeps it, for a second backward through the same graph.")
    print("- Tensors replaced the old torch.autograd.Variable wrapper; detach() replaces .data, which hides edits.")
    print("- detach() cuts the graph; no_grad records nothing; inference_mode also marks tensors as never-autograd,")
    print("  which saves a little bookkeeping but forbids using them in a graph later.")
    return metrics


if __name__ == "__main__":
    main()

"""Computing gradients: checking them with finite differences, Jacobians, Hessians and per-sample gradients.

Autograd's gradient is exact up to rounding, and you can *prove* it on any function with central finite
differences, (f(x + eps) - f(x - eps)) / 2 eps, in float64. Beyond one gradient of a scalar, the same machinery
gives vector-Jacobian products (`backward(v)` on a non-scalar output), full Jacobians and Hessians, and gradients
per example of a batch. The current tools for these are the composable transforms of `torch.func` (`grad`,
`jacrev`, `jacfwd`, `hessian`, `vmap`); the older `torch.autograd.functional.jacobian/hessian` and Python loops
are shown beside them as the reference they must match.

Run it:
    python 03-autograd-backprop/03_gradient_computation.py
    python 03-autograd-backprop/03_gradient_computation.py --device cpu --smoke --batch 32

Takes about 4 s on a 2-core CPU. What to look for: errors against finite differences near 1e-10 in float64
(and far worse in float32, which is why gradient checks use float64), agreement of torch.func with the references
near 1e-15, and vmap computing the same per-sample gradients as a Python loop, faster at the default batch size.
"""

import argparse
import contextlib
import json
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, vmap


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
                        help="where the tensors live; auto picks cuda, then mps, then cpu (float64 needs cuda or cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="small batch: the whole lesson in a few seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/03-autograd-backprop/03_gradient_computation"),
                        help="where metrics.json is written")
    parser.add_argument("--batch", type=int, default=256, help="examples for the per-sample gradients")
    parser.add_argument("--eps", type=float, default=1e-6, help="step of the central finite differences")
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
    if args.batch < 1 or args.eps <= 0:
        parser.error("--batch must be >= 1 and --eps > 0")
    return args


def finite_difference_grad(f, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Central differences, one coordinate at a time: error O(eps^2) plus rounding O(machine eps / eps)."""
    g = torch.zeros_like(x)
    flat, gflat = x.view(-1), g.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        up = f(x).item()
        flat[i] = old - eps
        down = f(x).item()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def mlp_loss(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A 2-layer MLP's mean squared error, written with plain tensors so every weight is an input."""
    h = torch.tanh(x @ params["w1"] + params["b1"])  # (N, H)
    pred = h @ params["w2"] + params["b2"]  # (N, 1)
    return ((pred - y) ** 2).mean()


@contextlib.contextmanager
def quiet_torch_internals():
    """Forward mode (jacfwd, hessian) first loads torch-internal decompositions that still call the deprecated
    torch.jit.script; that DeprecationWarning is about torch's own code, not yours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=DeprecationWarning)
        yield


def fd_check_verdict(error: float, eps: float, dtype: torch.dtype) -> str:
    """Why a finite-difference check of a correct gradient is off. Central differences carry a truncation error
    (~eps^2 x the third derivative) and a rounding error (~machine eps / eps); the two balance near
    eps = machine eps ** (1/3), about 6e-6 in float64. Empty when the check is as close as it should be."""
    if error < (1e-6 if dtype == torch.float64 else 1e-3):
        return ""
    balanced = torch.finfo(dtype).eps ** (1 / 3)
    if eps > balanced:
        cause = (f"eps {eps:g} is a wide step, so central differences are off by their truncation error "
                 "(~eps^2 x the third derivative)")
    else:
        cause = f"eps {eps:g} is a tiny step, so rounding (~machine eps / eps) swamps the difference"
    return (f"error {error:.2e} from the check itself, not from autograd: {cause}; "
            f"a step near {balanced:.0e} balances the two")


def float32_verdict(error32: float, error: float, dtype: torch.dtype) -> str:
    """The comment on the float32 check, from the two measured errors."""
    if dtype != torch.float64:
        return "  <- the check above is float32 too (no float64 on this device)"
    if error32 > 10 * error:
        return "  <- rounding swamps the check; use float64"
    return (f"  <- no worse than the float64 check above ({error:.2e}) in this run: that one's error comes from "
            "its step, not from float64")


def time_ms(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    if device.type != "cpu":
        torch.accelerator.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type != "cpu":
        torch.accelerator.synchronize()  # kernels (CUDA, MPS) run asynchronously: wait before reading the clock
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    eps = args.eps if dtype == torch.float64 else max(args.eps, 1e-3)  # float32's rounding needs a larger step
    print(f"device: {device}, checking in {dtype}" + (f" (eps {eps:g}: float32's rounding swamps a smaller step)"
                                                      if eps != args.eps else ""))

    section("Autograd against central finite differences")
    x = torch.randn(8, 3, device=device, dtype=dtype)  # (N, D)
    y = torch.randn(8, 1, device=device, dtype=dtype)  # (N, 1)
    params = {"w1": torch.randn(3, 5), "b1": torch.randn(5), "w2": torch.randn(5, 1), "b2": torch.randn(1)}
    params = {k: v.to(device, dtype) for k, v in params.items()}
    errors = {}
    for name in params:
        p = params[name].clone().requires_grad_(True)
        p_params = {**params, name: p}
        (auto,) = torch.autograd.grad(mlp_loss(p_params, x, y), p)

        def f(value, name=name):
            return mlp_loss({**params, name: value}, x, y)

        fd = finite_difference_grad(f, params[name].clone(), eps)
        errors[name] = (auto - fd).abs().max().item()
        print(f"  {name:<3} {tuple(p.shape)!s:<7} max |autograd - finite diff| = {errors[name]:.2e}")
    fd_error = max(errors.values())
    if verdict := fd_check_verdict(fd_error, eps, dtype):
        print(f"  <- {verdict}")
    x32, y32 = x.float(), y.float()
    params32 = {k: v.float() for k, v in params.items()}
    w1 = params32["w1"].clone().requires_grad_(True)
    (auto32,) = torch.autograd.grad(mlp_loss({**params32, "w1": w1}, x32, y32), w1)
    fd32 = finite_difference_grad(lambda v: mlp_loss({**params32, "w1": v}, x32, y32), params32["w1"].clone(), 1e-3)
    fd_error_float32 = (auto32 - fd32).abs().max().item()
    print(f"same check in float32 (eps=1e-3): {fd_error_float32:.2e}"
          + float32_verdict(fd_error_float32, fd_error, dtype))

    section("Non-scalar outputs: backward(v) is a vector-Jacobian product")
    A = torch.randn(4, 3, device=device, dtype=dtype)  # (m, n)

    def vec_fn(u):  # R^3 -> R^4
        return torch.tanh(A @ u) * u.sum()

    u = torch.randn(3, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(4, device=device, dtype=dtype)
    vec_fn(u).backward(v)  # without v, a (4,) output raises "grad can be implicitly created only for scalar outputs"
    jac_reference = torch.autograd.functional.jacobian(vec_fn, u.detach())  # (4, 3), the older API
    vjp_error = (u.grad - v @ jac_reference).abs().max().item()
    print(f"u.grad after backward(v) vs v @ J: max abs diff {vjp_error:.2e}")

    section("Jacobians: torch.func.jacrev / jacfwd against torch.autograd.functional.jacobian")
    J_rev = jacrev(vec_fn)(u.detach())  # (4, 3): one vector-Jacobian product per output row
    with quiet_torch_internals():
        J_fwd = jacfwd(vec_fn)(u.detach())  # (4, 3): one Jacobian-vector product per input column
    jacobian_error = max((J_rev - jac_reference).abs().max().item(), (J_fwd - jac_reference).abs().max().item())
    print(f"J shape {tuple(J_rev.shape)}; jacrev and jacfwd vs the reference: max abs diff {jacobian_error:.2e}")
    print("  jacrev costs ~m backward passes, jacfwd ~n forward passes: pick the smaller side")

    section("Hessians: torch.func.hessian against torch.autograd.functional.hessian and by hand")
    B = torch.randn(3, 3, device=device, dtype=dtype)
    B = B @ B.T  # (3, 3) symmetric

    def scalar_fn(w):  # 0.5 w^T B w + sum(w^4): Hessian = B + diag(12 w^2)
        return 0.5 * w @ B @ w + (w**4).sum()

    w = torch.randn(3, device=device, dtype=dtype)
    with quiet_torch_internals():
        H = hessian(scalar_fn)(w)  # (3, 3), jacfwd(jacrev(f)) under the hood
    H_ref = torch.autograd.functional.hessian(scalar_fn, w)
    H_hand = B + torch.diag(12 * w**2)
    hessian_error = max((H - H_ref).abs().max().item(), (H - H_hand).abs().max().item())
    wg = w.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(scalar_fn(wg), wg, create_graph=True)  # keep the graph of the gradient itself
    (row0,) = torch.autograd.grad(g1[0], wg)  # differentiate it again: first row of H
    double_backward_error = (row0 - H_hand[0]).abs().max().item()
    print(f"torch.func.hessian vs functional.hessian and B + diag(12 w^2): max abs diff {hessian_error:.2e}")
    print(f"a row by double backward (create_graph=True): max abs diff {double_backward_error:.2e}")

    section("Per-sample gradients: vmap(grad(...)) against a Python loop")
    n = min(args.batch, 32) if args.smoke else args.batch
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).to(device, dtype)
    weights = {k: v.detach() for k, v in model.named_parameters()}
    xs = torch.randn(n, 10, device=device, dtype=dtype)  # (N, 10)
    ys = torch.randn(n, 1, device=device, dtype=dtype)  # (N, 1)

    def loss_one(weights, x, y):  # one example: x (10,), y (1,)
        pred = functional_call(model, weights, (x.unsqueeze(0),))  # (1, 1): the model expects a batch
        return ((pred.squeeze(0) - y) ** 2).mean()

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))  # weights shared, x and y batched on dim 0

    def loop():
        out = []
        for i in range(n):
            model.zero_grad(set_to_none=True)
            ((model(xs[i : i + 1]) - ys[i : i + 1]) ** 2).mean().backward()
            out.append(model[0].weight.grad.clone())
        return torch.stack(out)  # (N, 32, 10)

    vmapped = per_sample(weights, xs, ys)["0.weight"]  # (N, 32, 10)
    looped = loop()
    per_sample_error = (vmapped - looped).abs().max().item()
    mean_error = (vmapped.mean(0) - torch.func.grad(
        lambda wts: ((functional_call(model, wts, (xs,)) - ys) ** 2).mean())(weights)["0.weight"]).abs().max().item()
    print(f"{n} examples, first layer: per-sample gradients {tuple(vmapped.shape)}; vmap vs loop max abs diff "
          f"{per_sample_error:.2e}")
    print(f"their mean is the batch gradient: max abs diff {mean_error:.2e}")
    repeats = 2 if args.smoke else 5
    loop_ms = time_ms(loop, device, repeats)
    vmap_ms = time_ms(lambda: per_sample(weights, xs, ys), device, repeats)
    faster, ratio = ("vmap", loop_ms / vmap_ms) if vmap_ms < loop_ms else ("the loop", vmap_ms / loop_ms)
    print(f"loop {loop_ms:.2f} ms, vmap {vmap_ms:.2f} ms: {faster} is {ratio:.1f}x faster at {n} examples "
          "(the loop's cost grows with the batch, vmap's is mostly a fixed overhead)")

    metrics = {
        "max_abs_error_vs_finite_differences": fd_error,
        "max_abs_error_vs_finite_differences_float32": fd_error_float32,
        "vjp_error": vjp_error,
        "jacobian_error": jacobian_error,
        "hessian_error": hessian_error,
        "double_backward_error": double_backward_error,
        "per_sample_grad_error": per_sample_error,
        "per_sample_mean_vs_batch_grad_error": mean_error,
        "per_sample_loop_ms": loop_ms,
        "per_sample_vmap_ms": vmap_ms,
        "vmap_speedup": loop_ms / vmap_ms,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- A gradient you wrote (or a custom backward) is trusted only after a float64 finite-difference check.")
    print("- backward() needs a scalar; for a vector output, pass v and get v^T J, never J itself.")
    print("- torch.func composes: jacrev/jacfwd for Jacobians, hessian = jacfwd(jacrev), vmap(grad) per example.")
    print("- Per-sample gradients (for clipping in DP-SGD, influence, ...) come from one vmapped call, not a loop.")
    return metrics


if __name__ == "__main__":
    main()

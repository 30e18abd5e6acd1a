"""Gradient accumulation: the gradient of a big batch from several small ones, and the scaling that makes it exact.

When a batch does not fit in memory, you split it into micro-batches, call `backward()` on each (gradients add up
in `.grad`), and step the optimizer once. With a mean-reduced loss, each micro-batch's loss must be scaled by its
share of the batch (`len(micro) / len(batch)`, which is `1 / accumulation_steps` when the pieces are equal): then the
accumulated gradient *is* the full-batch gradient. This lesson proves it to float rounding, shows the two common
mistakes in numbers (no scaling: a gradient `accumulation_steps` times too large, i.e. a silently multiplied learning
rate; `1 / steps` with an uneven last piece: a biased gradient), trains with both and compares the parameters, and
shows the case where accumulation cannot be exact: BatchNorm, whose statistics depend on the micro-batch.
It ends with the other way to trade compute for memory, activation checkpointing (torch.utils.checkpoint): the
forward of each block is rerun during backward instead of keeping its activations, and the memory saved for
backward is measured (bytes of the tensors autograd keeps, via torch.autograd.graph.saved_tensors_hooks, on any
device; the allocator's peak too on CUDA) beside what accumulation saves, with gradients equal to the plain run.

Run it:
    python 03-autograd-backprop/06_gradient_accumulation.py
    python 03-autograd-backprop/06_gradient_accumulation.py --device cpu --smoke --batch 30 --micro 8

Takes about 3 s on a 2-core CPU. What to look for: accumulated versus full-batch gradient max abs diff
<= 1e-6, the unscaled gradient exactly accumulation_steps times too large (equal pieces), the two training runs
ending on the same parameters, and checkpointing keeping a fraction of the activation bytes for the same gradient.
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


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
    parser.add_argument("--smoke", action="store_true", help="fewer training steps: a few seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/03-autograd-backprop/06_gradient_accumulation"),
                        help="where metrics.json is written")
    parser.add_argument("--batch", type=int, default=64, help="the full batch size")
    parser.add_argument("--micro", type=int, default=16, help="micro-batch size (the last piece may be smaller)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of the training comparison")
    parser.add_argument("--lr", type=float, default=0.05,
                        help="SGD learning rate (at most 0.2: larger steps diverge on small batches here)")
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
    if args.batch < 2 or not 1 <= args.micro < args.batch or args.steps < 1 or not 0 < args.lr <= 0.2:
        parser.error("need --batch >= 2, 1 <= --micro < --batch, --steps >= 1, 0 < --lr <= 0.2")
    return args


def make_model(seed: int, device, batchnorm: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)  # the same initial weights every time it is called
    layers = [torch.nn.Linear(10, 32)]
    if batchnorm:
        layers.append(torch.nn.BatchNorm1d(32))
    layers += [torch.nn.Tanh(), torch.nn.Linear(32, 1)]
    return torch.nn.Sequential(*layers).to(device)


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def norm(gs: list[torch.Tensor]) -> float:
    return torch.sqrt(sum((g**2).sum() for g in gs)).item()


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return (sum((x * y).sum() for x, y in zip(a, b, strict=True)) / (norm(a) * norm(b))).item()


def saved_activation_bytes(loss_fn, params) -> tuple[torch.Tensor, int]:
    """Run loss_fn() and add up the bytes of the distinct storages autograd saves for backward, parameters
    excluded (they exist anyway): the activation memory the graph holds until backward frees it."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    storages = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in param_ptrs:
            storages[st.data_ptr()] = st.nbytes()  # a tensor saved twice (or two views of one) counts once
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    return loss, sum(storages.values())


def checkpoint_comparison(seed: int, device, batch: int, micro: int) -> dict:
    """Saved-activation bytes (and time, and the CUDA peak) of a block MLP, plain and with checkpointed blocks."""
    torch.manual_seed(seed)
    blocks = torch.nn.ModuleList(
        torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)) for _ in range(4)
    ).to(device)
    xb = torch.randn(batch, 64, device=device)  # (B, 64)

    calls = [0]

    def run(block, h):  # counts block forwards (module hooks do not fire when checkpoint reruns a block)
        calls[0] += 1
        return block(h)

    def loss_of(inputs, use_checkpoint: bool):
        h = inputs
        for block in blocks:  # checkpoint(): keep only the block's input, rerun its forward during backward
            h = h + (checkpoint(run, block, h, use_reentrant=False) if use_checkpoint else run(block, h))  # (B, 64)
        return h.pow(2).mean()

    for use in (False, True):  # warm-up: first calls pay one-off costs that would distort the timing
        loss_of(xb, use).backward()
    out = {}
    for name, use in (("plain", False), ("checkpoint", True)):
        calls[0] = 0
        loss_of(xb, use).backward()
        out[f"{name}_forwards"] = calls[0]  # block forwards in one forward + backward
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            loss_of(xb, use).backward()
            if device.type != "cpu":
                torch.accelerator.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        out[f"{name}_ms"] = sorted(times)[2]  # the median of 5
        blocks.zero_grad()
        peak = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        loss, out[f"{name}_bytes"] = saved_activation_bytes(lambda u=use: loss_of(xb, u), blocks.parameters())
        loss.backward()
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) - base
        out[f"cuda_{name}_peak"] = peak
        out[f"{name}_grads"] = grads(blocks)
    piece = xb[:micro].clone()  # its own storage, as a DataLoader batch would be (a view would pin all of xb)
    _, out["micro_bytes"] = saved_activation_bytes(lambda: loss_of(piece, False), blocks.parameters())
    out["grad_diff"] = max_abs_diff(out.pop("plain_grads"), out.pop("checkpoint_grads"))
    return out


def full_batch_grad(model, x, y) -> list[torch.Tensor]:
    model.zero_grad()
    F.mse_loss(model(x), y).backward()  # mean over the whole batch
    return grads(model)


def accumulated_grad(model, x, y, micro: int, scaling: str) -> list[torch.Tensor]:
    """scaling: 'share' (len(piece) / len(batch), always right), 'steps' (1 / number of pieces), 'none'."""
    model.zero_grad()
    pieces = list(zip(x.split(micro), y.split(micro), strict=True))  # the last piece may be smaller
    for xm, ym in pieces:
        loss = F.mse_loss(model(xm), ym)  # mean over the micro-batch
        if scaling == "share":
            loss = loss * (len(xm) / len(x))
        elif scaling == "steps":
            loss = loss / len(pieces)
        loss.backward()  # adds into .grad
    return grads(model)


def train(model, x, y, steps: int, lr: float, micro: int | None, zero_grad: bool = True) -> list[float]:
    """SGD on one fixed batch, full-batch (micro=None) or accumulated; returns the full-batch loss before each step
    and after the last one (steps + 1 values)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        with torch.no_grad():
            losses.append(F.mse_loss(model(x), y).item())
        if zero_grad:
            opt.zero_grad()
        if micro is None:
            F.mse_loss(model(x), y).backward()
        else:
            for xm, ym in zip(x.split(micro), y.split(micro), strict=True):
                (F.mse_loss(model(xm), ym) * (len(xm) / len(x))).backward()
        opt.step()
    with torch.no_grad():
        losses.append(F.mse_loss(model(x), y).item())
    return losses


def forgot_zero_grad_note(steps: int) -> str:
    """What forgetting zero_grad does over `steps` optimizer steps."""
    if steps == 1:
        return ("  (one step: there is no earlier gradient to re-apply yet, so forgetting zero_grad changes nothing "
                "here;\n  from the second step on, each step would re-apply every earlier gradient too)")
    return ("  (without zero_grad each step re-applies every earlier gradient too: a different optimizer from the\n"
            "  one you configured, like momentum with beta = 1; whatever its loss does, it is not this SGD)")


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    steps = min(args.steps, 20) if args.smoke else args.steps
    n_pieces = -(-args.batch // args.micro)
    print(f"device: {device}; batch {args.batch} = {n_pieces} micro-batches of <= {args.micro}")

    x = torch.randn(args.batch, 10, device=device)  # (B, 10)
    y = torch.sin(x[:, :1] * 2) + 0.5 * x[:, 1:2]  # (B, 1): a smooth target to regress
    model = make_model(args.seed, device)

    section("Full batch versus accumulated micro-batches, loss scaled by each piece's share")
    g_full = full_batch_grad(model, x, y)
    g_share = accumulated_grad(model, x, y, args.micro, "share")
    correct_diff = max_abs_diff(g_share, g_full)
    print(f"max abs diff to the full-batch gradient: {correct_diff:.2e}  (float rounding: sums in another order)")

    section("Mistake 1: no scaling (each micro-batch loss is already a mean)")
    sizes = [len(p) for p in x.split(args.micro)]
    g_none = accumulated_grad(model, x, y, args.micro, "none")
    wrong_ratio = norm(g_none) / norm(g_full)
    wrong_diff = max_abs_diff(g_none, g_full)
    wrong_cos = cosine(g_none, g_full)
    print(f"pieces {sizes}: |g_unscaled| / |g_full| = {wrong_ratio:.4f}, cosine to g_full {wrong_cos:.6f}, "
          f"max abs diff {wrong_diff:.2e}")
    multiple_diff = max_abs_diff([g / n_pieces for g in g_none], g_full)
    if len(set(sizes)) == 1:
        print(f"  equal pieces: g_unscaled / {n_pieces} matches g_full to {multiple_diff:.2e}, so the unscaled "
              f"gradient is {n_pieces} times the right one:")
        print(f"  the same as training with a learning rate {n_pieces} times larger, without meaning to")
    else:
        print(f"  uneven pieces: not even a multiple of g_full (g_unscaled / {n_pieces} differs by "
              f"{multiple_diff:.2e}): a larger step in a different direction")

    section("Mistake 2: dividing by the number of pieces when the last piece is smaller")
    # a batch whose last piece is smaller: this one if it already splits unevenly, else a few examples fewer
    uneven_batch = args.batch if args.batch % args.micro else args.batch - args.micro // 2
    xu, yu = x[:uneven_batch], y[:uneven_batch]
    u_sizes = [len(p) for p in xu.split(args.micro)]
    gu_full = full_batch_grad(model, xu, yu)
    uneven_share_diff = max_abs_diff(accumulated_grad(model, xu, yu, args.micro, "share"), gu_full)
    uneven_steps_diff = max_abs_diff(accumulated_grad(model, xu, yu, args.micro, "steps"), gu_full)
    equal_steps_diff = max_abs_diff(accumulated_grad(model, x, y, args.micro, "steps"), g_full)
    # with 1/steps scaling an example in a piece of size s weighs 1 / (steps * s) instead of 1 / batch
    weights = [uneven_batch / (len(u_sizes) * size) for size in u_sizes]
    if len(set(u_sizes)) == 1:
        print(f"--micro {args.micro}: every split into pieces of {args.micro} is even, so 1/steps is always each "
              f"piece's share (here {uneven_steps_diff:.2e}); nothing to go wrong")
    else:
        biased = uneven_steps_diff > 100 * max(uneven_share_diff, 1e-9)
        print(f"pieces {u_sizes}: scale by share -> {uneven_share_diff:.2e}; scale by 1/{len(u_sizes)} -> "
              f"{uneven_steps_diff:.2e}")
        print(f"  with 1/{len(u_sizes)} each example of the last piece counts {weights[-1]:.3f} times its share and "
              f"the others {weights[0]:.3f} times: " + ("a biased gradient" if biased else
                                                         "a difference this small is within rounding here"))
    if args.batch % args.micro == 0:
        print(f"with equal pieces ({args.batch} / {args.micro}) 1/{n_pieces} is the share: {equal_steps_diff:.2e}")

    section(f"Training {steps} SGD steps: full batch versus accumulation")
    full_model = make_model(args.seed, device)
    accum_model = make_model(args.seed, device)
    forgot_model = make_model(args.seed, device)
    full_losses = train(full_model, x, y, steps, args.lr, None)
    accum_losses = train(accum_model, x, y, steps, args.lr, args.micro)
    forgot_losses = train(forgot_model, x, y, steps, args.lr, args.micro, zero_grad=False)
    train_diff = max_abs_diff(list(full_model.parameters()), list(accum_model.parameters()))
    forgot_diff = max_abs_diff(list(full_model.parameters()), list(forgot_model.parameters()))
    print(f"full batch:          loss {full_losses[0]:.4f} -> {full_losses[-1]:.4f}")
    print(f"accumulated:         loss {accum_losses[0]:.4f} -> {accum_losses[-1]:.4f}; "
          f"parameters max abs diff {train_diff:.2e}")
    forgot_diverged = not all(np.isfinite(forgot_losses)) or not np.isfinite(forgot_diff)
    if forgot_diverged:
        print("accumulated, no zero_grad between steps: diverged (the loss became inf/nan): the gradients kept "
              "piling up")
    else:
        print(f"accumulated, no zero_grad between steps: loss -> {forgot_losses[-1]:.4f}; "
              f"parameters max abs diff {forgot_diff:.2e}")
    print(forgot_zero_grad_note(steps))

    section("Where accumulation cannot be exact: BatchNorm")
    bn_model = make_model(args.seed, device, batchnorm=True)
    bn_full = full_batch_grad(bn_model, x, y)
    try:
        bn_accum = accumulated_grad(bn_model, x, y, args.micro, "share")
    except ValueError as err:  # training-mode BatchNorm on a piece of one example: no variance to normalise by
        bn_diff = bn_rel = None
        print(f"a piece of {min(sizes)} example: BatchNorm1d raises ValueError: {str(err).splitlines()[0]}")
        print("in training mode it normalises each feature over the batch, and one example has no spread: with")
        print("BatchNorm every micro-batch needs at least 2 examples (in practice dozens), or use LayerNorm/GroupNorm")
    else:
        bn_diff = max_abs_diff(bn_accum, bn_full)
        bn_rel = norm([a - b for a, b in zip(bn_accum, bn_full, strict=True)]) / norm(bn_full)
        print(f"with BatchNorm1d the accumulated gradient differs by {bn_diff:.2e} (max abs), {bn_rel:.1%} of the "
              f"gradient's norm,")
        print(f"against {correct_diff:.1e} without it: each micro-batch of <= {args.micro} is normalised with its own")
        print("mean and variance, so the forward itself is different. How much that matters is this relative size:")
        print("it shrinks as micro-batches grow; LayerNorm/GroupNorm do not mix examples and accumulate exactly.")

    section("Activation checkpointing: recompute instead of store")
    ck = checkpoint_comparison(args.seed, device, args.batch, args.micro)
    print(f"a 4-block MLP (64 -> 256 -> 64 per block), batch {args.batch}: bytes of activations autograd saves for "
          "backward")
    print(f"  plain, full batch:                 {ck['plain_bytes'] / 1024:9.1f} KiB")
    print(f"  plain, one micro-batch of {args.micro:<4}:    {ck['micro_bytes'] / 1024:9.1f} KiB  "
          f"({ck['micro_bytes'] / ck['plain_bytes']:.2f} x, for {args.micro}/{args.batch} = "
          f"{args.micro / args.batch:.2f} of the examples)")
    print(f"  checkpointed blocks, full batch:   {ck['checkpoint_bytes'] / 1024:9.1f} KiB  "
          f"({ck['checkpoint_bytes'] / ck['plain_bytes']:.2f} x: only each block's input is kept)")
    print(f"gradients, checkpointed vs plain: max abs diff {ck['grad_diff']:.2e} (the same ops rerun on the same "
          "inputs)")
    ratio = ck["checkpoint_ms"] / ck["plain_ms"]
    print(f"the price: block forwards per training step {ck['plain_forwards']} plain, {ck['checkpoint_forwards']} "
          "checkpointed (each block reruns during backward);")
    print(f"  forward + backward, median of 5: {ck['checkpoint_ms']:.2f} ms against {ck['plain_ms']:.2f} ms "
          f"({ratio:.2f} x" + ("" if ratio > 1.05 else "; at this size the rerun is lost in the timing noise") + ")")
    if ck["cuda_plain_peak"] is not None:
        print(f"CUDA allocator peak above the start, forward + backward: plain {ck['cuda_plain_peak'] / 2**20:.2f} "
              f"MiB, checkpointed {ck['cuda_checkpoint_peak'] / 2**20:.2f} MiB")
    else:
        print(f"(on {device.type} the allocator's peak is not measured here; the saved-tensor bytes above are what "
              "checkpointing changes, on every device)")

    metrics = {
        "pieces": n_pieces,
        "correct_scaling_max_abs_diff": correct_diff,
        "no_scaling_norm_ratio": wrong_ratio,
        "no_scaling_max_abs_diff": wrong_diff,
        "uneven_share_scaling_max_abs_diff": uneven_share_diff,
        "uneven_steps_scaling_max_abs_diff": uneven_steps_diff,
        "full_batch_steps_scaling_max_abs_diff": equal_steps_diff,
        "full_batch_initial_loss": full_losses[0],
        "full_batch_final_loss": full_losses[-1],
        "accumulated_final_loss": accum_losses[-1],
        "training_params_max_abs_diff": train_diff,
        "forgot_zero_grad_diverged": forgot_diverged,
        "no_scaling_cosine": wrong_cos,
        "no_scaling_over_pieces_max_abs_diff": multiple_diff,
        "uneven_pieces": len(set(u_sizes)) > 1,
        "last_piece_example_weight": weights[-1],
        "batchnorm_single_example_raised": bn_diff is None,
        "checkpoint_plain_saved_bytes": ck["plain_bytes"],
        "checkpoint_micro_saved_bytes": ck["micro_bytes"],
        "checkpoint_saved_bytes": ck["checkpoint_bytes"],
        "checkpoint_grad_max_abs_diff": ck["grad_diff"],
        "plain_block_forwards": ck["plain_forwards"],
        "checkpoint_block_forwards": ck["checkpoint_forwards"],
        "checkpoint_plain_ms": ck["plain_ms"],
        "checkpoint_recompute_ms": ck["checkpoint_ms"],
    }
    if not forgot_diverged:
        metrics["forgot_zero_grad_params_max_abs_diff"] = forgot_diff
    if bn_diff is not None:
        metrics.update({"batchnorm_max_abs_diff": bn_diff, "batchnorm_relative_diff": bn_rel})
    if ck["cuda_plain_peak"] is not None:
        metrics.update({"cuda_plain_peak_bytes": ck["cuda_plain_peak"],
                        "cuda_checkpoint_peak_bytes": ck["cuda_checkpoint_peak"]})
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- backward() adds into .grad; accumulation is just not calling zero_grad() between micro-batches.")
    print("- Scale each mean loss by len(micro) / len(batch) (1/steps only when the pieces are equal), or sum the")
    print("  losses with reduction='sum' and divide once by the batch size.")
    print("- zero_grad() once per optimizer step, after step(), not once per micro-batch and not never.")
    print("- Memory for activations scales with the micro-batch; the gradient is the big batch's. Only layers")
    print("  that mix examples (BatchNorm) tell the difference.")
    print("- Checkpointing keeps the batch and trades a second forward for activation memory; the two combine.")
    return metrics


if __name__ == "__main__":
    main()

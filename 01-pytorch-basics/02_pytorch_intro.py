"""Your first PyTorch program: the whole workflow, end to end, on tiny generated data.

Every PyTorch project, from this toy to a large language model, is the same seven steps:
tensors -> model -> loss -> optimizer -> training loop -> evaluation (model.eval() + torch.no_grad()) ->
save the state_dict and load it back (torch.load(..., weights_only=True)). This lesson runs all seven on 2-D points
of three classes, measures that the loss falls, checks that the reloaded model predicts exactly the same, and then
practises the debugging habits that save hours later: shape checks, printing gradients, catching NaNs (with
torch.autograd.detect_anomaly naming the operation that made one) and seeding for reproducibility.

Run it:
    python 01-pytorch-basics/02_pytorch_intro.py
    python 01-pytorch-basics/02_pytorch_intro.py --steps 500 --lr 0.01 --device cpu

Takes about 5 s on a 2-core CPU. What to look for: the loss falling from about ln(3) = 1.10 by a large factor,
test accuracy far above the 33% of guessing, "max |difference| 0" after reloading, the NaN that the forward pass
hides and detect_anomaly catches, and two runs with one seed giving bit-identical losses.
"""

import argparse
import json
import math
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from matplotlib.figure import Figure
from torch import nn

NUM_CLASSES = 3
CENTRES = ((0.0, 2.5), (-2.2, -1.2), (2.2, -1.2))  # one blob of points per class
COLOURS = ("tab:blue", "tab:red", "tab:green")  # one per class in the plot


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
                        help="where the model trains; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="fewer points and steps: the whole lesson in a second")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/01-pytorch-basics/02_pytorch_intro"),
                        help="where metrics.json, the saved weights and the plot go")
    parser.add_argument("--steps", type=int, default=300, help="full-batch training steps (--smoke uses 40)")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate, in (0, 1]")
    parser.add_argument("--points", type=int, default=1200, help="generated points, 3/4 train, 1/4 test")
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
    if args.steps < 1 or args.points < 40 or not 0 < args.lr <= 1:
        parser.error("--steps must be >= 1, --points >= 40 and 0 < --lr <= 1")
    return args


def make_blobs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n points around CENTRES with Gaussian noise; label = which centre. Made on the CPU with an explicit generator,
    so the data are the same on every device."""
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)  # (N,) int64
    centres = torch.tensor(CENTRES)  # (3, 2) float32
    points = centres[labels] + 0.8 * torch.randn(n, 2, generator=generator)  # (N, 2)
    return points, labels


def make_model() -> nn.Module:
    # Dropout makes train mode and eval mode really differ, so forgetting model.eval() is visible below.
    return nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, NUM_CLASSES))


def train(model, x, y, steps: int, lr: float) -> list[float]:
    """Full-batch training: the five lines at the heart of every training loop."""
    loss_fn = nn.CrossEntropyLoss()  # takes raw logits; it applies log-softmax itself
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()  # gradients accumulate by default: clear last step's
        loss = loss_fn(model(x), y)  # forward: (N, 2) -> (N, 3) logits -> scalar
        loss.backward()  # fills p.grad for every parameter
        optimizer.step()  # p -= update(p.grad)
        losses.append(loss.item())  # .item() copies one number to Python (and waits for the device)
    return losses


@torch.no_grad()  # no graph is recorded: less memory, faster, and outputs cannot be backpropagated by accident
def accuracy(model, x, y) -> float:
    model.eval()  # dropout off (batch norm would use its running statistics)
    return (model(x).argmax(dim=1) == y).float().mean().item()


def save_plot(losses, x, y, model, path: Path) -> None:
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_data = fig.subplots(1, 2)
    ax_loss.plot(losses)
    ax_loss.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="training loss")
    grid = torch.stack(torch.meshgrid(torch.linspace(-5, 5, 200), torch.linspace(-5, 5, 200), indexing="xy"), -1)
    with torch.no_grad():
        model.eval()
        regions = model(grid.reshape(-1, 2).to(x.device)).argmax(1).reshape(200, 200).cpu()  # (200, 200)
    ax_data.contourf(grid[..., 0], grid[..., 1], regions, alpha=0.2, levels=[-0.5, 0.5, 1.5, 2.5], colors=COLOURS)
    ax_data.scatter(x[:, 0].cpu(), x[:, 1].cpu(), c=[COLOURS[i] for i in y.tolist()], s=6)
    ax_data.set(title="test points and learned regions", xlabel="feature x[0]", ylabel="feature x[1]",
                xlim=(-5, 5), ylim=(-5, 5))
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def anomaly_demo() -> dict:
    """The classic hidden NaN: torch.where picks the safe branch in the forward pass, but the backward pass still
    differentiates sqrt at a negative number, and 0 * NaN = NaN poisons the gradient."""
    x = torch.tensor([-1.0, 4.0], requires_grad=True)
    y = torch.where(x > 0, torch.sqrt(x), torch.zeros_like(x)).sum()
    y.backward()
    print(f"forward value {y.item():.1f} (finite), gradient {x.grad.tolist()}  <- NaN from nowhere?")
    caught = ""
    x.grad = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # detect_anomaly warns that it is slow: that is why it is not left on
        try:
            with torch.autograd.detect_anomaly():
                torch.where(x > 0, torch.sqrt(x), torch.zeros_like(x)).sum().backward()
        except RuntimeError as err:
            caught = str(err).splitlines()[0]
    print(f"with torch.autograd.detect_anomaly(): RuntimeError: {caught}")
    x.grad = None
    torch.where(x > 0, torch.sqrt(x.clamp_min(1e-12)), torch.zeros_like(x)).sum().backward()  # the fix
    print(f"fix, sqrt of x.clamp_min(1e-12) so both branches are finite: gradient {x.grad.tolist()}")
    return {"hidden_nan_forward_finite": int(math.isfinite(y.item())), "anomaly_caught": int("nan" in caught),
            "anomaly_names_sqrt": int("Sqrt" in caught), "fixed_grad_finite": int(bool(x.grad.isfinite().all()))}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    steps, n = (40, 240) if args.smoke else (args.steps, args.points)
    demo_steps = 10 if args.smoke else 20

    section("1. Tensors: generated data, moved to the device once")
    gen = torch.Generator().manual_seed(args.seed)
    points, labels = make_blobs(n, gen)
    n_train = 3 * n // 4
    x_train, y_train = points[:n_train].to(device), labels[:n_train].to(device)  # (N_train, 2), (N_train,)
    x_test, y_test = points[n_train:].to(device), labels[n_train:].to(device)
    print(f"x_train {tuple(x_train.shape)} {x_train.dtype} on {x_train.device}; y_train {tuple(y_train.shape)} "
          f"{y_train.dtype}; test {len(x_test)} points; class counts {torch.bincount(labels).tolist()}")

    section("2. Model, loss, optimizer")
    model = make_model().to(device)  # .to() on a module moves its parameters in place and returns the module
    n_params = sum(p.numel() for p in model.parameters())
    print(model)
    print(f"{n_params} parameters; loss nn.CrossEntropyLoss (raw logits in); optimizer Adam(lr={args.lr})")

    section("3. Debugging habit: check shapes before training")
    logits = model(x_train[:5])  # (5, 3)
    assert logits.shape == (5, NUM_CLASSES), logits.shape  # cheap, and it fails at the line that is wrong
    print(f"model(x_train[:5]).shape = {tuple(logits.shape)}, expected (5, {NUM_CLASSES}): ok")
    print("a common silent bug: labels of shape (N, 1) instead of (N,); CrossEntropyLoss wants (N,) int64 classes")

    section("4. Debugging habit: print the gradients of one step")
    nn.CrossEntropyLoss()(model(x_train), y_train).backward()
    grad_norms = {}
    for name, p in model.named_parameters():
        grad_norms[name] = p.grad.norm().item()
        print(f"  {name:<10} shape {str(tuple(p.shape)):<9} grad norm {grad_norms[name]:.4f}")
    print("all zero would mean a detached graph; NaN or huge numbers, a bad loss or lr.")
    model.zero_grad()

    section("5. Training loop: the loss falls, measured")
    initial_train_acc = accuracy(model, x_train, y_train)  # the test points wait until training is over
    losses = train(model, x_train, y_train, steps, args.lr)
    loss_drop = losses[0] / max(losses[-1], 1e-12)  # a loss can reach exactly 0 in float32
    for i in sorted({0, steps // 4, steps // 2, steps - 1}):
        print(f"  step {i + 1:>4}: loss {losses[i]:.4f}")
    print(f"loss {'fell' if losses[-1] < losses[0] else 'did not fall'} from {losses[0]:.4f} (ln 3 = "
          f"{math.log(3):.4f} is guessing) to {losses[-1]:.4f}: a factor of {loss_drop:.1f}")
    nan_steps = sum(not math.isfinite(v) for v in losses)
    print(f"debugging habit, NaN check on every recorded loss: {nan_steps} non-finite")

    section("6. Evaluation: model.eval() and torch.no_grad()")
    test_acc = accuracy(model, x_test, y_test)
    train_acc = accuracy(model, x_train, y_train)
    print(f"train accuracy {initial_train_acc:.1%} with the random initial weights, {train_acc:.1%} after training; "
          f"test accuracy, measured once now: {test_acc:.1%}; chance is {1 / NUM_CLASSES:.1%}")
    model.train()
    with torch.no_grad():
        train_mode_differs = int(not torch.equal(model(x_test), model(x_test)))
        model.eval()
        eval_out = model(x_test)
        eval_mode_differs = int(not torch.equal(eval_out, model(x_test)))
    print(f"two forward passes in train mode differ (dropout): {bool(train_mode_differs)}; in eval mode: "
          f"{bool(eval_mode_differs)}")
    print(f"outputs made under no_grad require grad: {eval_out.requires_grad} (no graph kept)")

    section("7. Save the state_dict, load it into a fresh model")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    weights = args.out_dir / "model.pt"
    torch.save(model.state_dict(), weights)  # a dict of tensors: portable, safe to load
    reloaded = make_model().to(device)
    reloaded.load_state_dict(torch.load(weights, map_location=device, weights_only=True))  # no arbitrary pickle
    reloaded.eval()
    with torch.no_grad():
        reload_diff = (reloaded(x_test) - eval_out).abs().max().item()
    print(f"saved {weights} ({weights.stat().st_size} bytes); reloaded model vs trained model: "
          f"max |difference| {reload_diff}")

    section("8. Debugging habit: a NaN that the forward pass hides")
    anomaly = anomaly_demo()

    section("9. Debugging habit: seeding makes runs reproducible")
    runs = []
    for seed in (args.seed, args.seed, args.seed + 1):
        torch.manual_seed(seed)
        runs.append(train(make_model().to(device), x_train, y_train, demo_steps, args.lr)[-1])
    print(f"final loss after {demo_steps} steps: seed {args.seed}: {runs[0]!r}, seed {args.seed} again: {runs[1]!r}, "
          f"seed {args.seed + 1}: {runs[2]!r}")
    print(f"same seed bit-identical: {runs[0] == runs[1]}; other seed differs: {runs[0] != runs[2]} (on a GPU, "
          "bit-identical runs are guaranteed only with torch.use_deterministic_algorithms(True))")

    section("10. The ecosystem you just used")
    print(f"torch {torch.__version__}: torch.nn (layers, losses), torch.optim (Adam), torch.autograd (backward)")
    print(f"torchvision {torchvision.__version__} adds datasets, models and image transforms (module 05 onwards)")
    plot = args.out_dir / "training.png"
    save_plot(losses, x_test, y_test, model, plot)
    print(f"plot saved to {plot}")

    metrics = {
        "num_parameters": n_params, "initial_loss": losses[0], "final_loss": losses[-1], "loss_drop_factor": loss_drop,
        "nonfinite_losses": nan_steps, "initial_train_accuracy": initial_train_acc, "test_accuracy": test_acc,
        "train_accuracy": train_acc, "train_mode_outputs_differ": train_mode_differs,
        "eval_mode_outputs_differ": eval_mode_differs, "reload_max_abs_diff": reload_diff,
        "first_grad_norm_total": math.sqrt(sum(v * v for v in grad_norms.values())),
        **anomaly, "same_seed_identical": int(runs[0] == runs[1]),
        "same_seed_abs_diff": abs(runs[0] - runs[1]), "other_seed_differs": int(runs[0] != runs[2]),
    }
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- The workflow is always: data tensors -> model -> loss -> optimizer -> loop -> eval -> save/load.")
    print("- zero_grad, forward, loss, backward, step: forget zero_grad and gradients add up across steps.")
    print("- Evaluate with model.eval() *and* torch.no_grad(): the first changes layers, the second saves memory.")
    print("- Save state_dicts and load with weights_only=True; the reloaded model predicts identically.")
    print("- Check shapes early, look at gradients, watch for NaN; detect_anomaly names the op that made it.")
    return metrics


if __name__ == "__main__":
    main()

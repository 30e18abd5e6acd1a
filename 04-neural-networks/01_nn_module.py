"""nn.Module from the inside: parameters, buffers, submodules, state_dict, hooks, train/eval.

Builds one small custom module and inspects everything torch.nn.Module does for you: which tensors it registers as
parameters (trained) or buffers (saved, not trained), how submodules nest, why a plain Python list of layers
silently loses its parameters, how a state_dict round-trips through torch.save / torch.load(weights_only=True),
how forward and backward hooks see inside a model (a table of each layer's activation and gradient mean and std,
the first thing to print when training misbehaves), and what model.train() / model.eval() switch.

Run it:
    python 04-neural-networks/01_nn_module.py

Takes about 2 s on a 2-core CPU. What to look for: the parameter count by hand equals the one PyTorch
reports, the plain-list model has 0 parameters, the reloaded model's outputs differ by exactly 0, and two forward
passes differ in train mode (dropout) but are identical in eval mode.
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
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
                        help="where the model runs; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="tiny batch (the lesson is fast anyway)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/04-neural-networks/01_nn_module"),
                        help="where metrics.json and the saved state_dict go")
    parser.add_argument("--batch-size", type=int, default=64, help="rows in the example batch")
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
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


class TinyNet(nn.Module):
    """Two hidden layers, a learnable output temperature, and a buffer that counts forward calls."""

    def __init__(self, d_in: int = 8, d_hidden: int = 16, d_out: int = 3, p_drop: float = 0.5):
        super().__init__()  # must come first: it creates the registries assigned to below
        self.body = nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(p_drop))  # a submodule
        self.blocks = nn.ModuleList([nn.Linear(d_hidden, d_hidden) for _ in range(2)])  # registered, unlike a list
        self.head = nn.Linear(d_hidden, d_out)
        self.log_temperature = nn.Parameter(torch.zeros(()))  # a parameter not inside any layer
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))  # saved in state_dict, never trained
        self.register_buffer("scratch", torch.zeros(d_hidden), persistent=False)  # moves with .to(), not saved

    def forward(self, x):  # x: (B, d_in)
        self.calls += 1
        h = self.body(x)  # (B, d_hidden)
        for block in self.blocks:
            h = torch.relu(block(h)) + h  # (B, d_hidden), residual
        return self.head(h) / self.log_temperature.exp()  # (B, d_out)


class PlainListNet(nn.Module):
    """The classic bug: layers in a plain list are invisible to .parameters(), .to() and state_dict."""

    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(8, 16), nn.Linear(16, 3)]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    batch = 8 if args.smoke else args.batch_size
    model = TinyNet().to(device)  # .to moves parameters and buffers together
    x = torch.randn(batch, 8, device=device)  # (B, 8)

    section("Parameters: the tensors an optimizer trains")
    for name, p in model.named_parameters():
        print(f"  {name:<22} {str(tuple(p.shape)):<10} requires_grad={p.requires_grad}")
    n_params = sum(p.numel() for p in model.parameters())
    by_hand = (8 * 16 + 16) + 2 * (16 * 16 + 16) + (16 * 3 + 3) + 1  # weight in*out + bias out, per Linear
    print(f"PyTorch counts {n_params} parameters; by hand (in*out + out per Linear, +1 temperature): {by_hand}")

    section("Buffers: state that is saved and moved but not trained")
    for name, b in model.named_buffers():
        print(f"  {name:<10} {str(tuple(b.shape)):<8} dtype={b.dtype} device={b.device}")
    print("'calls' is persistent (in state_dict); 'scratch' was registered with persistent=False (not saved).")

    section("Submodules: a tree, walked by named_modules()")
    for name, module in model.named_modules():
        print(f"  {name or '(root)':<10} {type(module).__name__}")
    n_modules = sum(1 for _ in model.modules())
    plain = PlainListNet()
    plain_params = sum(p.numel() for p in plain.parameters())
    print(f"PlainListNet keeps two Linear layers in a Python list: .parameters() finds {plain_params} of them "
          f"(an optimizer would train nothing). nn.ModuleList registers them.")

    section("state_dict: save, reload, same outputs")
    model.eval()  # dropout off, so outputs are comparable
    with torch.no_grad():
        before = model(x)  # (B, 3)
    state = model.state_dict()
    print(f"state_dict has {len(state)} entries: {', '.join(state)}")
    path = args.out_dir / "tiny_net.pt"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    fresh = TinyNet().to(device)
    result = fresh.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    print(f"loaded {path} into a fresh TinyNet: missing={result.missing_keys} unexpected={result.unexpected_keys}")
    fresh.eval()
    with torch.no_grad():
        after = fresh(x)
    reload_diff = (after - before).abs().max().item()
    print(f"max |output(original) - output(reloaded)| = {reload_diff:.1e}; calls buffer came back as "
          f"{int(state['calls'])} (then +1 for the forward pass just made: {int(fresh.calls)})")

    section("Hooks: per-layer activation and gradient statistics, without editing forward()")
    captured, grads = {}, {}

    def save_output(name):
        def hook(module, inputs, output):
            captured[name] = output.detach()
        return hook

    def save_grad(name):
        def hook(module, grad_input, grad_output):
            grads[name] = grad_output[0].detach()  # dLoss/d(output of this module), shaped like the output
        return hook

    handles = [m.register_forward_hook(save_output(n)) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    handles += [m.register_full_backward_hook(save_grad(n)) for n, m in model.named_modules()
                if isinstance(m, nn.Linear)]
    model.eval()
    out = model(x.clone().requires_grad_())  # an input that requires grad gives full backward hooks a grad_input
    out.square().mean().backward()
    for h in handles:
        h.remove()  # hooks stay until removed; forgetting this leaks memory in long runs
    print(f"  {'layer':<9} {'output':<8} {'act mean':>10} {'act std':>9} {'grad mean':>11} {'grad std':>10}")
    for name in captured:
        act, grad = captured[name], grads[name]
        print(f"  {name:<9} {str(tuple(act.shape)):<8} {act.mean().item():>+10.4f} {act.std().item():>9.4f} "
              f"{grad.mean().item():>+11.2e} {grad.std().item():>10.2e}")
    print("a healthy network keeps activation std of order 1 and gradients neither vanishing nor exploding from")
    print("layer to layer; a std of 0 (dead layer), NaN, or a factor of 100 between neighbours is what to look for")
    with torch.no_grad():
        head_by_hand = model.head(_block_out(model, x))  # (B, 3), before the temperature
        temperature = model.log_temperature.exp()
        # loss = mean((head / T)^2) over B*3 numbers, so dloss/dhead = 2 * head / T^2 / (B * 3)
        grad_by_hand = 2 * head_by_hand / temperature**2 / head_by_hand.numel()
    hook_diff = (captured["head"] - head_by_hand).abs().max().item()
    hook_grad_diff = (grads["head"] - grad_by_hand).abs().max().item()
    print(f"hook's copy of head's output vs recomputing it by hand: max abs diff {hook_diff:.1e}; its gradient vs "
          f"2 head / (T^2 B 3): {hook_grad_diff:.1e}")

    section("train() and eval(): what they switch")
    model.train()
    training_flags = sum(m.training for m in model.modules())
    with torch.no_grad():
        a, b = model(x), model(x)
    train_diff = (a - b).abs().max().item()
    model.eval()
    eval_flags = sum(m.training for m in model.modules())
    with torch.no_grad():
        a, b = model(x), model(x)
    eval_diff = (a - b).abs().max().item()
    print(f"train(): {training_flags}/{n_modules} modules have .training=True; two passes differ by up to "
          f"{train_diff:.4f} (dropout samples a new mask each time)")
    print(f"eval():  {eval_flags}/{n_modules} modules have .training=True; two passes differ by {eval_diff:.1e}")
    print("eval() does not turn off autograd: pair it with torch.no_grad() for evaluation (lesson 06).")

    metrics = {
        "n_parameters": n_params, "n_parameters_by_hand": by_hand, "n_buffers": len(list(model.buffers())),
        "state_dict_entries": len(state), "n_modules": n_modules, "plain_list_parameters": plain_params,
        "reload_max_abs_diff": reload_diff, "hooked_layers": len(captured), "hook_max_abs_diff": hook_diff,
        "hook_grad_max_abs_diff": hook_grad_diff,
        "train_mode_pass_diff": train_diff, "eval_mode_pass_diff": eval_diff,
        "train_mode_flags": training_flags, "eval_mode_flags": eval_flags,
    }
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Assigning an nn.Module or nn.Parameter to self registers it; plain lists and tensors are not registered.")
    print("- Buffers (running statistics, counters) travel in state_dict and with .to(device) but get no gradient.")
    print("- Save state_dicts, not pickled models, and load them with torch.load(..., weights_only=True).")
    print("- Hooks read activations and gradients of any layer; remove their handles when done.")
    print("- train()/eval() only flip .training (dropout, batch norm); gradients are a separate switch.")
    return metrics


def _block_out(model: TinyNet, x: torch.Tensor) -> torch.Tensor:
    """The input of model.head, recomputed by hand (eval mode): body, then the two residual blocks."""
    h = model.body(x)
    for block in model.blocks:
        h = torch.relu(block(h)) + h
    return h


if __name__ == "__main__":
    main()

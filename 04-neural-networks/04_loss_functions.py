"""Loss functions by hand: MSE, L1, Huber, BCE, BCEWithLogits, CrossEntropy, NLL, KL, and their options.

Every loss in torch.nn is a short formula. The lesson computes each one by hand next to the nn version and prints
the difference; then it shows why BCEWithLogitsLoss exists (BCELoss on a sigmoid breaks at extreme logits: the
loss is clamped and the gradient vanishes), that CrossEntropyLoss is log_softmax followed by NLLLoss (so it wants
raw logits, not probabilities), and what label_smoothing, class weights and the reduction argument compute.

Run it:
    python 04-neural-networks/04_loss_functions.py

Takes about 2 s on a 2-core CPU. What to look for: every "by hand" difference ~1e-7; at logit 50 with label 0
BCELoss reports 100 (clamped; the truth is 50) with gradient 0, while BCEWithLogitsLoss gives 50 and gradient 1.
"""

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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
                        help="where the losses are computed; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="smaller batches (the lesson is fast anyway)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/04-neural-networks/04_loss_functions"),
                        help="where metrics.json goes")
    parser.add_argument("--batch-size", type=int, default=256, help="rows in each example batch")
    parser.add_argument("--classes", type=int, default=5, help="classes in the classification examples")
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
    if args.batch_size < 2 or args.classes < 2:
        parser.error("--batch-size and --classes must be at least 2")
    return args


def softmaxed_ce_floor(k: int) -> float:
    """CE of a perfect one-hot probability vector fed as logits: -log(e / (e + K - 1)) = log(1 + (K - 1) / e)."""
    return math.log(1 + (k - 1) / math.e)


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    n, k = (16 if args.smoke else args.batch_size), args.classes
    m = {}

    section("Regression losses")
    pred, target = torch.randn(n, 3, device=device), torch.randn(n, 3, device=device)  # (B, 3)
    err = pred - target
    huber_by_hand = torch.where(err.abs() < 1.0, 0.5 * err**2, err.abs() - 0.5).mean()  # delta = 1
    rows = [
        ("MSELoss", nn.MSELoss()(pred, target), (err**2).mean(), "mean((p - y)^2)"),
        ("L1Loss", nn.L1Loss()(pred, target), err.abs().mean(), "mean(|p - y|)"),
        ("HuberLoss(delta=1)", nn.HuberLoss(delta=1.0)(pred, target), huber_by_hand,
         "0.5 e^2 if |e|<1 else |e| - 0.5"),
    ]
    for name, torch_value, hand, formula in rows:
        print(f"  {name:<20} {torch_value.item():.6f}  by hand {hand.item():.6f}  diff {diff(torch_value, hand):.1e}"
              f"   {formula}")
        m[f"{name.split('(')[0].lower()}_max_abs_error"] = diff(torch_value, hand)
    print("MSE punishes large errors quadratically (outliers dominate); L1 linearly; Huber is MSE near 0, L1 far out.")

    section("Binary classification: BCELoss and BCEWithLogitsLoss")
    logits = torch.randn(n, device=device) * 3  # (B,) raw scores
    labels = torch.randint(0, 2, (n,), device=device).float()  # (B,) 0 or 1
    p = torch.sigmoid(logits)
    bce_hand = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    # the stable form: log(1 + e^z) - y z, written so that exp never overflows
    logits_hand = (logits.clamp(min=0) - logits * labels + torch.log1p(torch.exp(-logits.abs()))).mean()
    m["bce_max_abs_error"] = diff(nn.BCELoss()(p, labels), bce_hand)
    m["bce_with_logits_max_abs_error"] = diff(nn.BCEWithLogitsLoss()(logits, labels), logits_hand)
    print(f"  BCELoss(sigmoid(z), y)      diff from -mean(y log p + (1-y) log(1-p)): {m['bce_max_abs_error']:.1e}")
    print(f"  BCEWithLogitsLoss(z, y)     diff from mean(max(z,0) - z y + log(1 + e^-|z|)): "
          f"{m['bce_with_logits_max_abs_error']:.1e}")

    section("Why BCEWithLogitsLoss: extreme logits, label 0 (the true loss is softplus(z) ~ z)")
    print(f"{'logit':>7} {'true loss':>10} {'BCELoss':>10} {'WithLogits':>11} {'grad BCE':>10} {'grad WithLogits':>16}")
    worst_plain, worst_logits = 0.0, 0.0
    for z in (5.0, 20.0, 50.0, 200.0):
        zt = torch.tensor([z], device=device, requires_grad=True)
        y0 = torch.zeros(1, device=device)
        plain = nn.BCELoss()(torch.sigmoid(zt), y0)
        (g_plain,) = torch.autograd.grad(plain, zt)
        stable = nn.BCEWithLogitsLoss()(zt, y0)
        (g_stable,) = torch.autograd.grad(stable, zt)
        truth = F.softplus(torch.tensor(z, dtype=torch.float64)).item()  # log(1 + e^z), exact in float64
        worst_plain = max(worst_plain, abs(plain.item() - truth))
        worst_logits = max(worst_logits, abs(stable.item() - truth))
        print(f"{z:>7.0f} {truth:>10.4f} {plain.item():>10.4f} {stable.item():>11.4f} {g_plain.item():>10.4f} "
              f"{g_stable.item():>16.4f}")
        if z == 50.0:
            m["bce_loss_at_logit_50"], m["bce_grad_at_logit_50"] = plain.item(), g_plain.item()
            m["bce_logits_loss_at_logit_50"], m["bce_logits_grad_at_logit_50"] = stable.item(), g_stable.item()
    m["bce_extreme_max_abs_error"], m["bce_logits_extreme_max_abs_error"] = worst_plain, worst_logits
    print("In float32 sigmoid(z) rounds to exactly 1.0 beyond z ~ 17, so log(1 - p) = log(0); BCELoss clamps log at")
    print("-100 (loss stuck at 100) and its gradient is 0: a confidently wrong model stops learning. Worst error:")
    print(f"BCELoss {worst_plain:.2f}, BCEWithLogitsLoss {worst_logits:.1e}. Its gradient sigmoid(z) - y stays 1.")

    section("CrossEntropyLoss = log_softmax + NLLLoss")
    logits_k = torch.randn(n, k, device=device) * 2  # (B, K)
    targets = torch.randint(0, k, (n,), device=device)  # (B,) class indices
    ce = nn.CrossEntropyLoss()(logits_k, targets)
    log_probs = logits_k - logits_k.logsumexp(dim=1, keepdim=True)  # (B, K) log_softmax by hand
    picked = log_probs[torch.arange(n, device=device), targets]  # (B,) log p(correct class)
    m["cross_entropy_max_abs_error"] = diff(ce, -picked.mean())
    m["ce_vs_log_softmax_nll_max_abs_error"] = diff(ce, F.nll_loss(F.log_softmax(logits_k, dim=1), targets))
    print(f"  CE {ce.item():.6f}; -mean(log_softmax[target]) by hand: diff {m['cross_entropy_max_abs_error']:.1e}; "
          f"NLLLoss(log_softmax): diff {m['ce_vs_log_softmax_nll_max_abs_error']:.1e}")
    double = nn.CrossEntropyLoss()(torch.softmax(logits_k, dim=1), targets)
    m["softmax_before_ce_loss"], m["cross_entropy_loss"] = double.item(), ce.item()
    print(f"  the classic bug, softmax before CrossEntropyLoss: {double.item():.4f} instead of {ce.item():.4f}; the")
    print(f"  inputs are squeezed into [0, 1], so the loss can never go below "
          f"{softmaxed_ce_floor(k):.4f} (K={k}) however right the model is.")
    soft = torch.softmax(torch.randn(n, k, device=device), dim=1)  # (B, K) probability targets
    m["soft_target_ce_max_abs_error"] = diff(nn.CrossEntropyLoss()(logits_k, soft), -(soft * log_probs).sum(1).mean())
    print(f"  probability targets (B, K): CE = -mean(sum_k q_k log p_k): diff {m['soft_target_ce_max_abs_error']:.1e}")

    section("CrossEntropyLoss options: label_smoothing, weight, reduction, ignore_index")
    eps = 0.1
    smooth_hand = ((1 - eps) * -picked - eps * log_probs.mean(dim=1)).mean()  # mix with the uniform distribution
    m["label_smoothing_max_abs_error"] = diff(nn.CrossEntropyLoss(label_smoothing=eps)(logits_k, targets), smooth_hand)
    print(f"  label_smoothing={eps}: (1-eps) * NLL + eps * mean_k(-log p_k): "
          f"diff {m['label_smoothing_max_abs_error']:.1e}")
    w = torch.linspace(0.5, 2.0, k, device=device)  # (K,) up-weight rare classes
    weighted_hand = (w[targets] * -picked).sum() / w[targets].sum()  # a weighted MEAN: divides by sum of weights
    m["class_weight_max_abs_error"] = diff(nn.CrossEntropyLoss(weight=w)(logits_k, targets), weighted_hand)
    print(f"  weight=w: sum(w_y * l) / sum(w_y) (not / B): diff {m['class_weight_max_abs_error']:.1e}")
    none = nn.CrossEntropyLoss(reduction="none")(logits_k, targets)  # (B,)
    total = nn.CrossEntropyLoss(reduction="sum")(logits_k, targets)
    m["reduction_max_abs_error"] = max(diff(none, -picked), diff(total / n, none.sum() / n), diff(ce, none.mean()))
    print(f"  reduction='none' gives shape {tuple(none.shape)}; 'sum' = its sum; 'mean' = its mean (sums / B): "
          f"diff {m['reduction_max_abs_error']:.1e}")
    masked = targets.clone()
    masked[: n // 2] = -100  # padding positions (sequence models): ignored, and left out of the mean
    m["ignore_index_max_abs_error"] = diff(nn.CrossEntropyLoss()(logits_k, masked), -picked[n // 2:].mean())
    print(f"  targets of -100 (ignore_index) are skipped and not counted: diff {m['ignore_index_max_abs_error']:.1e}")

    section("KL divergence")
    log_q = F.log_softmax(torch.randn(n, k, device=device), dim=1)  # model, as log-probabilities
    p_t = torch.softmax(torch.randn(n, k, device=device), dim=1)  # target distribution
    kl_hand = (p_t * (p_t.log() - log_q)).sum(dim=1).mean()
    m["kl_div_max_abs_error"] = diff(nn.KLDivLoss(reduction="batchmean")(log_q, p_t), kl_hand)
    print(f"  KLDivLoss(log q, p, reduction='batchmean') = mean_b sum_k p (log p - log q): "
          f"diff {m['kl_div_max_abs_error']:.1e}  (input is LOG-probs, target probs; 'mean' would divide by B*K)")

    m["worst_by_hand_error"] = max(v for key, v in m.items() if key.endswith("_max_abs_error")
                                   and not key.startswith("bce_extreme"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": m, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    (args.out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\nworst by-hand difference: {m['worst_by_hand_error']:.1e}")
    print(f"metrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- Give CrossEntropyLoss raw logits (B, K) and class indices (B,); it applies log_softmax itself.")
    print("- Give BCEWithLogitsLoss raw logits; sigmoid + BCELoss loses precision and gradient at extreme scores.")
    print("- Class weights make 'mean' a weighted mean; ignore_index drops positions from numerator and denominator.")
    print("- reduction='none' keeps one loss per example: useful for masking, weighting or finding hard examples.")
    return m


if __name__ == "__main__":
    main()

"""Forecasting a time series honestly: chronological splits, train-only statistics, windows, and baselines to beat.

Sections:
1. Two series. A generated one (trend + two seasonal harmonics of period 12 + autocorrelated noise) where a model
   has something to learn, and a real one that matplotlib ships: the S&P 500 index, monthly, 1990-2022
   (matplotlib.cbook.get_sample_data('Stocks.csv')), close to a random walk.
2. The split is chronological (train, then validation, then test; never shuffled), the normalisation statistics
   come from the training part only, and sliding windows never let a target fall inside its own input or cross
   into the next split. The model reads differences (y_t - y_{t-1}), so a trend that leaves the training range is
   no problem, and its forecasts are added to the last observed value.
3. An LSTM forecaster against the two baselines every forecast must beat: naive (tomorrow = today) and seasonal
   naive (next month = the same month last year). Test error is printed as a ratio to each (below 1 = better).
4. Multi-step forecasts over --horizon steps: recursive (one-step model fed its own predictions) and direct (one
   model with --horizon outputs), against the same baselines.
5. forecast.png: forecasts against the truth on the test part of both series.

Run it:
    python 07-rnn-sequences/05_time_series.py
    python 07-rnn-sequences/05_time_series.py --window 36 --horizon 6 --epochs 60

Takes about ten seconds on a laptop CPU. What to look for: on the generated series, error ratios well below 1
against both baselines; on the S&P 500, a ratio to naive close to 1 (monthly index moves are nearly unpredictable
from their own past: say so, do not hide it) and seasonal naive doing worse than naive.
"""

import argparse
import copy
import csv
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib import cbook
from matplotlib.figure import Figure

PERIOD = 12  # both series: monthly data, yearly season


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


def write_metrics(out_dir: Path, record: dict) -> Path:
    """metrics.json written atomically: a temporary file renamed over the old one, never half-written."""
    path = out_dir / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)
    return path


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where the models train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="a shorter generated series and fewer epochs: seconds")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/07-rnn-sequences/05_time_series"),
                        help="where metrics.json and forecast.png are written")
    parser.add_argument("--length", type=int, default=1000, help="points in the generated series")
    parser.add_argument("--window", type=int, default=24, help="past steps the model reads")
    parser.add_argument("--horizon", type=int, default=12, help="steps ahead for the multi-step forecasts")
    parser.add_argument("--epochs", type=int, default=40, help="passes over the training windows")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per step")
    parser.add_argument("--hidden", type=int, default=32, help="LSTM hidden size")
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
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
    if min(args.epochs, args.batch_size, args.hidden) < 1 or args.lr <= 0:
        parser.error("need --epochs, --batch-size, --hidden >= 1 and --lr > 0")
    if not 1 <= args.horizon <= PERIOD:
        parser.error(f"--horizon must be 1..{PERIOD} (the seasonal-naive baseline looks back one period)")
    if not 2 <= args.window <= 60:
        parser.error("--window must be 2..60 (the S&P 500 series has about 360 months)")
    if args.length < 20 * (args.window + args.horizon):
        parser.error("--length must be at least 20 * (window + horizon) for three usable splits")
    return args


def generated_series(n: int, seed: int) -> np.ndarray:
    """Trend + yearly season (two harmonics) + AR(1) noise: learnable, but never perfectly predictable."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    season = 2.0 * np.sin(2 * np.pi * t / PERIOD) + 0.8 * np.sin(4 * np.pi * t / PERIOD + 1.0)
    noise = np.zeros(n)
    shocks = rng.normal(0, 0.4, n)
    for i in range(1, n):
        noise[i] = 0.5 * noise[i - 1] + shocks[i]  # today's noise remembers half of yesterday's
    return 10 + 0.02 * t + season + noise


def sp500_series() -> tuple[np.ndarray, str]:
    """Monthly S&P 500 closes from matplotlib's sample data (log scale: multiplicative moves become additive)."""
    path = cbook.get_sample_data("Stocks.csv", asfileobj=False)
    dates, values = [], []
    with open(path, newline="") as fh:
        rows = [line for line in fh if not line.startswith("#")]
    for row in csv.DictReader(rows):
        if row.get("^GSPC"):  # a few rows are empty
            dates.append(row["Date"])
            values.append(float(row["^GSPC"]))
    return np.log(np.array(values)), f"{dates[0]} to {dates[-1]}"


def make_windows(dy: np.ndarray, window: int, horizon: int, lo: int, hi: int):
    """Origins t (last observed step) whose whole target span t+1..t+horizon lies in [lo, hi).

    Input: dy[t-window+1 .. t]; target: dy[t+1 .. t+horizon]. Inputs may reach back before lo (the past is known);
    targets never leave the split. dy[t] = y[t] - y[t-1], so dy[0] is undefined and inputs start at 1.
    """
    origins = [t for t in range(max(window, lo - 1), hi - horizon) if t + 1 >= lo]
    x = np.stack([dy[t - window + 1:t + 1] for t in origins])  # (N, window)
    y = np.stack([dy[t + 1:t + 1 + horizon] for t in origins])  # (N, horizon)
    return np.array(origins), x, y


class Forecaster(nn.Module):
    def __init__(self, hidden: int, outputs: int):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):  # x (B, window) normalised differences
        out, _ = self.lstm(x.unsqueeze(-1))  # (B, window, H)
        return self.head(out[:, -1])  # (B, outputs): the next `outputs` normalised differences


def fit(outputs, data, args, epochs, device):
    """Train on train windows, keep the epoch with the lowest validation loss."""
    (x_tr, y_tr), (x_va, y_va) = data
    torch.manual_seed(args.seed)
    model = Forecaster(args.hidden, outputs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    best, best_state, best_epoch = float("inf"), None, 0
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_tr), generator=gen).split(args.batch_size):
            loss = F.mse_loss(model(x_tr[idx]), y_tr[idx, :outputs])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = F.mse_loss(model(x_va), y_va[:, :outputs]).item()
        if val < best:
            best, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch + 1
    model.load_state_dict(best_state)
    model.eval()
    return model, best, best_epoch


def experiment(name, y, args, epochs, device):
    """The whole honest pipeline on one series; returns test errors, forecasts for the plot and split sizes."""
    n, w, hz = len(y), args.window, args.horizon
    n_tr, n_va = int(0.7 * n), int(0.85 * n)  # chronological: train [0, n_tr), val [n_tr, n_va), test [n_va, n)
    dy = np.concatenate([[np.nan], np.diff(y)])  # dy[t] = y[t] - y[t-1]
    mean, std = dy[1:n_tr].mean(), dy[1:n_tr].std()  # training part only: the future is not known yet
    z = (dy - mean) / std
    splits = [make_windows(z, w, hz, lo, hi) for lo, hi in ((1, n_tr), (n_tr, n_va), (n_va, n))]
    to_t = lambda a: torch.tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    (o_tr, x_tr, t_tr), (o_va, x_va, t_va), (o_te, x_te, t_te) = splits
    print(f"{name}: {n} points -> train {n_tr} / validation {n_va - n_tr} / test {n - n_va} (chronological); "
          f"windows {len(o_tr)} / {len(o_va)} / {len(o_te)}; diff mean {mean:+.4f}, std {std:.4f} (train only)")
    assert o_tr.max() + hz < n_tr and o_va.min() + 1 >= n_tr and o_va.max() + hz < n_va and o_te.min() + 1 >= n_va
    data = ((to_t(x_tr), to_t(t_tr)), (to_t(x_va), to_t(t_va)))
    one_step, val1, ep1 = fit(1, data, args, epochs, device)
    direct, valh, eph = fit(hz, data, args, epochs, device)
    print(f"  one-step model: best validation MSE {val1:.4f} at epoch {ep1}; direct {hz}-step model "
          f"{valh:.4f} at epoch {eph}")

    xt = to_t(x_te)
    with torch.no_grad():
        step1 = one_step(xt)[:, 0].cpu().numpy() * std + mean  # predicted dy[t+1]
        direct_d = direct(xt).cpu().numpy() * std + mean  # (N, hz) predicted dy[t+1..t+hz]
        window, rec = xt.clone(), []
        for _ in range(hz):  # recursive: append each prediction to the window and predict again
            nxt = one_step(window)  # (N, 1), normalised
            rec.append(nxt[:, 0])
            window = torch.cat([window[:, 1:], nxt], dim=1)
        rec_d = torch.stack(rec, 1).cpu().numpy() * std + mean  # (N, hz)
    last = y[o_te]  # y[t] at each origin
    steps = np.arange(1, hz + 1)
    truth = np.stack([y[o_te + h] for h in steps], 1)  # (N, hz)
    forecasts = {
        "model": last + step1, "naive": last, "seasonal naive": y[o_te + 1 - PERIOD],
        "recursive": last[:, None] + np.cumsum(rec_d, 1), "direct": last[:, None] + np.cumsum(direct_d, 1),
        "naive multi": np.repeat(last[:, None], hz, 1),
        "seasonal multi": np.stack([y[o_te + h - PERIOD] for h in steps], 1),
    }
    mae = {k: float(np.abs(v - (truth[:, 0] if v.ndim == 1 else truth)).mean()) for k, v in forecasts.items()}
    print(f"  one-step test MAE: LSTM {mae['model']:.4f}, naive {mae['naive']:.4f}, seasonal naive "
          f"{mae['seasonal naive']:.4f} -> ratio to naive {mae['model'] / mae['naive']:.3f}, to seasonal naive "
          f"{mae['model'] / mae['seasonal naive']:.3f}")
    print(f"  {hz}-step test MAE (mean over horizons): recursive {mae['recursive']:.4f}, direct {mae['direct']:.4f}, "
          f"naive {mae['naive multi']:.4f}, seasonal naive {mae['seasonal multi']:.4f}")
    return {"mae": mae, "origins": o_te, "truth": truth, "forecasts": forecasts, "n_test_windows": len(o_te)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    epochs = min(args.epochs, 12) if args.smoke else args.epochs
    length = 20 * (args.window + args.horizon) if args.smoke else args.length

    section("1-2. Series, chronological splits, train-only normalisation, windows")
    gen = generated_series(length, args.seed)
    sp, span = sp500_series()
    print(f"generated: {length} monthly points, trend 0.02/step, period {PERIOD}, AR(1) noise (innovation std 0.4)")
    print(f"S&P 500 (matplotlib's Stocks.csv, column ^GSPC): {len(sp)} monthly closes, {span}, modelled as log price")
    print(f"window {args.window} past differences -> next difference (one-step) or next {args.horizon} (direct)")

    section("3-4. LSTM vs naive and seasonal naive, one-step and multi-step")
    results = {"generated": experiment("generated", gen, args, epochs, device),
               "sp500": experiment("S&P 500 (log)", sp, args, epochs, device)}
    g, s = results["generated"]["mae"], results["sp500"]["mae"]
    to_naive, to_seasonal = g["model"] / g["naive"], g["model"] / g["seasonal naive"]
    if to_seasonal < 0.95:  # seasonal naive already knows the season: beating it takes the noise's memory too
        verdict = "it learned the season AND the noise's memory"
    elif to_naive < 0.95:
        verdict = "it beats repeating the last value, not repeating last season's: the season is not learned yet"
    else:
        verdict = "no better than either naive forecast: it has not learned the series in this run (more --epochs?)"
    print(f"\ngenerated series: the LSTM's one-step error is {to_naive:.2f} x naive and {to_seasonal:.2f} x seasonal "
          f"naive: {verdict}.")
    print(f"S&P 500: {s['model'] / s['naive']:.2f} x naive, {s['model'] / s['seasonal naive']:.2f} x seasonal naive. "
          "Monthly index moves are close to a random walk: last month's level is the best simple guess, there is")
    print("no yearly season to copy, and a ratio near 1 is the honest result. What a model CAN learn there is the "
          "drift and the size of the moves (risk), not their direction.")

    section("5. Forecast vs truth")
    fig = Figure(figsize=(11, 8))
    r = results["generated"]
    ax = fig.add_subplot(3, 1, 1)
    idx = r["origins"] + 1
    ax.plot(idx, r["truth"][:, 0], "k-", lw=1.5, label="truth")
    ax.plot(idx, r["forecasts"]["model"], label="LSTM one-step")
    ax.plot(idx, r["forecasts"]["seasonal naive"], "--", lw=0.8, label="seasonal naive")
    ax.set_title("Generated series, test part: one-step forecasts")
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(3, 1, 2)
    k = 0  # the first test origin: forecast the next `horizon` steps from there
    hz = np.arange(1, args.horizon + 1) + r["origins"][k]
    ax.plot(np.arange(r["origins"][k] - 24, r["origins"][k] + 1), gen[r["origins"][k] - 24:r["origins"][k] + 1],
            "k-", lw=1.5, label="history")
    ax.plot(hz, r["truth"][k], "k:", lw=1.5, label="truth")
    for name in ("recursive", "direct", "seasonal multi", "naive multi"):
        ax.plot(hz, r["forecasts"][name][k], marker=".", label=name)
    ax.set_title(f"Generated series: {args.horizon}-step forecasts from one test origin")
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.legend(fontsize=8)
    r = results["sp500"]
    ax = fig.add_subplot(3, 1, 3)
    ax.plot(r["origins"] + 1, np.exp(r["truth"][:, 0]), "k-", lw=1.5, label="truth")
    ax.plot(r["origins"] + 1, np.exp(r["forecasts"]["model"]), label="LSTM one-step")
    ax.plot(r["origins"] + 1, np.exp(r["forecasts"]["naive"]), "--", lw=0.8, label="naive (last month)")
    ax.set_title("S&P 500, test part: one-step forecasts")
    ax.set_xlabel("month index")
    ax.set_ylabel("index level")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = args.out_dir / "forecast.png"
    fig.savefig(png, dpi=90)
    print(f"plot: {png}")

    metrics = {"generated_length": length, "epochs": epochs, "window": args.window, "horizon": args.horizon}
    for key, r in results.items():
        m = r["mae"]
        metrics.update({
            f"{key}_test_windows": r["n_test_windows"], f"{key}_mae_model": m["model"], f"{key}_mae_naive": m["naive"],
            f"{key}_mae_seasonal_naive": m["seasonal naive"], f"{key}_ratio_to_naive": m["model"] / m["naive"],
            f"{key}_ratio_to_seasonal_naive": m["model"] / m["seasonal naive"],
            f"{key}_mae_recursive": m["recursive"], f"{key}_mae_direct": m["direct"],
            f"{key}_mae_naive_multi": m["naive multi"], f"{key}_mae_seasonal_multi": m["seasonal multi"],
        })
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    print(f"\nmetrics written to {write_metrics(args.out_dir, record)}")

    section("What to notice")
    print("- Split by time, fit statistics on the past only, keep targets out of their inputs: anything else leaks "
          "the future and flatters the model.")
    print("- Always print the naive and seasonal-naive errors beside the model's: a ratio, not a bare number.")
    print(f"- Multi-step: recursive feeds its own errors back in; direct learns each horizon separately "
          f"(here {g['recursive']:.3f} vs {g['direct']:.3f} MAE on the generated series).")
    return metrics


if __name__ == "__main__":
    main()

"""Project: forecast the next steps of your own time series, with honest baselines and measured intervals.

Point it at a CSV with a time column and one or more numeric columns, one row per time step, oldest first. The time
column holds ISO dates or datetimes (2022-01-31, 2022-01-31 14:00), quarters (2022-Q1), numbers, or dates in a format
you name with --time-format (e.g. '%m/%d/%Y' for 01/31/2022): the rows' order is checked, and a warning says when the
steps between them are not all equal. It trains an LSTM that reads the last `--window` rows (every numeric column is an
input) and forecasts the next `--horizon` values of `--target`, as three quantiles (10%, 50%, 90%): a median forecast
and an 80% prediction interval, trained with the quantile (pinball) loss. Everything a forecaster must do honestly is
done here:
- chronological train / validation / test splits (no shuffling across time), normalisation fitted on the training
  part only, windows whose targets never cross into a later split;
- the model forecasts the correction to the seasonal-naive forecast (or, with no season, to the last value): it
  starts from the baseline it must beat and learns what the baseline misses (this also lets it follow a level it
  never saw in training, as prices do);
- rolling-origin evaluation on the test part: a forecast from every origin, each using only the rows before it,
  scored with MAE, RMSE and MASE against the naive (last value) and seasonal-naive (same time last season)
  baselines, and the interval's coverage measured (80% is the goal);
- early stopping on the validation loss, the best checkpoint kept, `--resume` continuing an interrupted run.

Run it:
    python 10-projects/project_time_series.py                  # the demo: writes two CSVs, trains, evaluates, predicts
    python 10-projects/project_time_series.py train --csv my.csv --target sales --horizon 14 --ckpt-dir ckpt
    python 10-projects/project_time_series.py evaluate --csv my.csv --ckpt-dir ckpt
    python 10-projects/project_time_series.py predict --csv my.csv --ckpt-dir ckpt --output next.csv

The demo takes about 10 s on an idle 2-core laptop CPU (--smoke: a few seconds). It forecasts two series written under
--data-dir in the same CSV layout: a generated hourly load with trend, daily and weekly seasonality, a temperature
input and autocorrelated noise, where the model must beat seasonal-naive; and the real monthly S&P 500 index
(matplotlib ships it as sample data), where the naive forecast is famously hard to beat: the project reports the
ratio, whatever it is. On a GPU the LSTM trains there; mixed precision does not pay for a model this small.
What to look for: MASE below 1 and a ratio below 1 against seasonal-naive on the generated series; the interval
coverage near 0.80; the forecast plot; the three commands printed at the end for your own data.
"""

import argparse
import calendar
import csv
import json
import math
import os
import random
import re
import shlex
import sys
import tempfile
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from types import NoneType

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

PROJECT = "project_time_series"
FORMAT_VERSION = 1
QUANTILES = (0.1, 0.5, 0.9)  # the 10%-90% band is an 80% prediction interval


class ProjectError(Exception):
    """Bad data, a bad flag combination or an unusable checkpoint: a message meant for a person, one line."""


def section(title: str) -> None:
    print(f"\n== {title} ==")


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. The one place the project decides where tensors live."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp creates 0600; a saved file gets the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------------------------------------------- data


def read_series(path: Path, time_col: str | None, target: str | None, features: list[str] | None,
                time_format: str | None = None) -> dict:
    """Read a CSV into times (strings) and a float matrix; every problem becomes one ProjectError line. The times must
    parse (ISO dates, numbers, or `time_format`) so their order can be checked; unequal steps give data['warning']."""
    if not path.is_file():
        raise ProjectError(f"no such CSV file: {path}")
    old_limit = csv.field_size_limit(2**31 - 1)   # the default caps a field at 131,072 characters (a long note)
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:   # -sig: Excel's "CSV UTF-8" starts with a BOM
            reader = csv.reader("\n" if line.startswith("#") else line for line in f)  # a comment is a blank line
            rows = [(reader.line_num, r) for r in reader if r]   # (line number in the file, fields)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        where = f" (line {reader.line_num})" if isinstance(err, csv.Error) and reader is not None else ""
        raise ProjectError(f"{path} is not a readable CSV file{where}: {err}") from None
    finally:
        csv.field_size_limit(old_limit)           # a process-wide setting: put it back
    if len(rows) < 2:
        raise ProjectError(f"{path} has no data rows (a header line and one row per time step are expected)")
    header = [h.strip() for h in rows[0][1]]
    body = rows[1:]
    time_col = time_col or header[0]
    if time_col not in header:
        raise ProjectError(f"time column {time_col!r} is not in {path} (columns: {', '.join(header)})")
    numeric = features or [h for h in header if h != time_col]
    if not numeric and not target:
        raise ProjectError(f"{path} has no value column beside the time column {time_col!r}")
    target = target or numeric[0]
    for col in [target, *numeric]:
        if col not in header:
            raise ProjectError(f"column {col!r} is not in {path} (columns: {', '.join(header)})")
    if target not in numeric:
        numeric = [target, *numeric]
    numeric = [target] + [c for c in numeric if c != target]  # the target is input column 0
    idx = [header.index(c) for c in numeric]
    t_idx = header.index(time_col)
    values = np.empty((len(body), len(numeric)), dtype=np.float64)
    times = []
    for k, (line_no, row) in enumerate(body):
        if len(row) != len(header):
            raise ProjectError(f"{path} line {line_no}: {len(row)} fields, the header has {len(header)}")
        times.append(row[t_idx].strip())
        for j, i in enumerate(idx):
            try:
                values[k, j] = float(row[i])
            except ValueError:
                raise ProjectError(not_a_number(path, line_no, numeric[j], row[i], header, body, time_col,
                                                target, features)) from None
    if not np.isfinite(values).all():
        raise ProjectError(f"{path}: column values must be finite numbers (found inf or nan)")
    lines = [line_no for line_no, _ in body]
    parsed = parse_times(path, times, lines, time_col, time_format, header, body)
    for k, (a, b) in enumerate(zip(parsed, parsed[1:])):
        if b == a:
            clock = isinstance(b, datetime) and b.tzinfo is None and (b.hour, b.minute, b.second) != (0, 0, 0)
            dst = ("; local clock times repeat an hour when daylight saving time ends: write the times in UTC or "
                   "with their offset (2022-10-30T02:00+01:00)") if clock else ""
            raise ProjectError(f"{path} line {lines[k + 1]}: time {times[k + 1]!r} repeats line {lines[k]}: "
                               f"one row per time step (remove or merge the duplicate){dst}")
        if b < a:
            raise ProjectError(f"{path} line {lines[k + 1]}: time {times[k + 1]!r} does not come after "
                               f"{times[k]!r}: sort the rows by {time_col!r}{time_col_hint(header, body, time_col)}")
    return {"times": times, "values": values, "columns": numeric, "time_col": time_col, "target": target,
            "warning": uneven_steps(path, times, parsed, lines)}


def _parse_time(text: str, time_format: str | None = None):
    """A number, an ISO date/datetime, or with `time_format` a strptime datetime; None when it is none of these."""
    if time_format:
        try:
            return datetime.strptime(text, time_format)
        except ValueError:
            return None
    try:
        value = float(text)
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    if m := _QUARTER.fullmatch(text.strip()):               # 2000-Q1, 2000Q1: the quarter's first day
        return datetime(int(m[1]), 3 * int(m[4]) - 2, 1)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


_QUARTER = re.compile(r"(\d{4})(\s*-?\s*)([Qq])([1-4])")   # year, separator, Q, quarter


# 01/31/2022, 31.01.2022, 2022/01/31, 31-01-22, optionally followed by a time of day (14:00 or 14:00:05)
_DATE_SHAPE = re.compile(r"(\d{1,4})([/.\-])(\d{1,2})\2(\d{1,4})(?:([ T])\d{1,2}:\d{2}(:\d{2})?)?")


def guess_time_format(texts: list[str]) -> tuple[str | None, str | None]:
    """A strptime format that fits the shape of these values, and the other reading when day and month could be
    either way round (no day above 12 seen). (None, None) when the values have no date shape."""
    shapes = [m for t in texts if (m := _DATE_SHAPE.fullmatch(t))]
    if not shapes:
        return None, None
    m, sep = shapes[0], shapes[0][2]
    clock = f"{m[5]}%H:%M{':%S' if m[6] else ''}" if m[5] else ""
    if len(m[1]) == 4:                                     # year first: 2022/01/31
        return f"%Y{sep}%m{sep}%d{clock}", None
    if len(m[1]) > 2 or len(m[4]) not in (2, 4):
        return None, None
    year = "%Y" if len(m[4]) == 4 else "%y"
    day_first, month_first = f"%d{sep}%m{sep}{year}{clock}", f"%m{sep}%d{sep}{year}{clock}"
    if any(int(s[1]) > 12 for s in shapes):
        fmt, other = day_first, None
    elif any(int(s[3]) > 12 for s in shapes):
        fmt, other = month_first, None
    else:                                                  # 01/02/2022: US; 01.02.2022: European
        fmt, other = (month_first, day_first) if sep == "/" else (day_first, month_first)
    try:
        datetime.strptime(m[0], fmt)                       # 12.34.56 has a date's shape but no month 34
    except ValueError:
        return None, None
    return fmt, other


def format_hint(texts: list[str]) -> str:
    fmt, other = guess_time_format(texts)
    if fmt is None:
        return "--time-format with its strptime codes, e.g. '%m/%d/%Y' or '%d.%m.%Y %H:%M'"
    either = f" (or '{other}' if the {'day' if other.startswith('%d') else 'month'} comes first)" if other else ""
    return f"--time-format '{fmt}'{either}"


def time_col_hint(header: list[str], body: list, time_col: str) -> str:
    """'; if the time is in column X, add --time-col X' when another column's first value is a date."""
    first = body[0][1]
    for i, name in enumerate(header):
        if name != time_col and i < len(first):
            text = first[i].strip()
            if isinstance(_parse_time(text), datetime) or guess_time_format([text])[0]:
                return f"; if the time is in column {name!r}, add --time-col {shlex.quote(name)}"
    return ""


def parse_times(path: Path, times: list[str], lines: list[int], time_col: str, time_format: str | None,
                header: list[str], body: list) -> list:
    """Every time parsed, all of one kind (numbers, dates, dates with a time zone), or one ProjectError line."""
    parsed = [_parse_time(t, time_format) for t in times]
    if None in parsed:
        k = parsed.index(None)
        where = f"{path} line {lines[k]}: time column {time_col!r} holds {times[k]!r}"
        if time_format:
            fmt, _ = guess_time_format(times)
            looks = f"; it looks like --time-format '{fmt}'" if fmt and fmt != time_format else ""
            raise ProjectError(f"{where}, which does not match --time-format {time_format!r}{looks}")
        other_col = time_col_hint(header, body, time_col)
        if other_col and not _DATE_SHAPE.fullmatch(times[k]):    # 'S1' in the first column, dates in another
            raise ProjectError(f"{where}, not a time{other_col}")
        raise ProjectError(f"{where}, neither an ISO date (2022-01-31, 2022-01-31 14:00), a quarter (2022-Q1) nor a "
                           f"number, so the rows' order cannot be checked; give its format: {format_hint(times)}")
    kinds = ["number" if isinstance(p, float) else "date with a time zone" if p.tzinfo else "date" for p in parsed]
    if len(set(kinds)) > 1:
        k = next(i for i, kind in enumerate(kinds) if kind != kinds[0])
        raise ProjectError(f"{path} line {lines[k]}: time column {time_col!r} holds {times[k]!r}, a {kinds[k]}, "
                           f"where line {lines[0]} holds a {kinds[0]}: one kind of time per column")
    return parsed


def _step_text(step: float, unit: str) -> str:
    if unit == "month":
        return f"{step:g} month{'s' if step != 1 else ''}"
    if unit == "number":
        return f"{step:g}"
    size, name = next((size, name) for size, name in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))
                      if step % size == 0 or size == 1)
    return f"{step / size:g} {name}{'s' if step != size else ''}"


def uneven_steps(path: Path, times: list[str], parsed: list, lines: list[int]) -> str | None:
    """One warning line when the steps between rows are not all equal (missing days, say), else None. Monthly data
    steps by months (28-31 days is one step); weekday-only data may skip Saturday and Sunday."""
    if len(parsed) < 3:
        return None
    if isinstance(parsed[0], float):
        unit, steps = "number", [float(f"{b - a:.6g}") for a, b in zip(parsed, parsed[1:])]
    else:
        seconds = [(b - a).total_seconds() for a, b in zip(parsed, parsed[1:])]
        if len(set(seconds)) == 1:                   # every step the same: regular, whatever its size (28 days too)
            return None
        if np.median(seconds) / 86400 >= 27:         # monthly or longer: a step is a number of calendar months, on
            unit, steps = "month", [float((b.year - a.year) * 12 + b.month - a.month)   # any day (first business day)
                                    for a, b in zip(parsed, parsed[1:])]
        else:
            unit, steps = "seconds", seconds
    common = Counter(steps).most_common(1)[0][0]
    weekdays_only = unit == "seconds" and common == 86400 and all(p.weekday() < 5 for p in parsed)
    weekend = [weekdays_only and s == 3 * 86400 and parsed[k].weekday() == 4   # Friday to Monday
               for k, s in enumerate(steps)]
    odd = [k for k, s in enumerate(steps) if s != common and not weekend[k]]
    if not odd:
        return None
    k = odd[0]
    return (f"{path.name}: the time steps are not all equal: {len(odd)} of {len(steps)} differ from the most common "
            f"step ({_step_text(common, unit)}), first at line {lines[k + 1]} ({times[k]} -> {times[k + 1]}); "
            "--window, --horizon and the season count rows, so they assume equal steps: one row per step, no gaps")


def not_a_number(path: Path, line_no: int, col: str, text: str, header: list[str], body: list, time_col: str,
                 target: str, features: list[str] | None) -> str:
    """The message for a value column cell that is not a number, with the flag that fixes it."""
    if not text.strip():
        return f"{path} line {line_no}: column {col!r} is empty (fill it in or remove the row)"
    where = f"{path} line {line_no}: column {col!r} is {text!r}, not a number"
    text = text.strip()
    if isinstance(_parse_time(text), datetime) or guess_time_format([text])[0]:
        fmt = "" if isinstance(_parse_time(text), datetime) else f" {format_hint([text])}"
        return f"{where}; it holds times: make it the time column with --time-col {shlex.quote(col)}{fmt}"

    def numeric_throughout(name: str) -> bool:
        i = header.index(name)
        try:
            return all(math.isfinite(float(row[i])) for _, row in body if len(row) == len(header))
        except ValueError:
            return False

    i = header.index(col)
    cells = [row[i] for _, row in body if len(row) == len(header) and row[i].strip()]
    parses = sum(1 for c in cells if _is_float(c))
    if parses >= len(cells) / 2:    # a numeric column with a stray cell: the cell is the problem
        return f"{where} (the column holds numbers elsewhere: fix that cell)"
    numbers = [h for h in header if h != time_col and numeric_throughout(h)]
    if not numbers:
        return (f"{where}, and no column beside the time holds only numbers (a thousands separator as in 1,234 or a "
                "unit as in 5kg is not a number)")
    quoted = " ".join(shlex.quote(h) for h in numbers)
    fixes = []
    if col == target:
        fixes.append(f"forecast a numeric column with --target (numeric columns here: {', '.join(numbers)})")
    if col != target or features is None or col in features:   # another --target leaves it an input
        fixes.append(f"choose numeric inputs with --features {quoted}")
    return f"{where}; {' and '.join(fixes)}"


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def future_times(times: list[str], n: int, time_format: str | None = None) -> list[str]:
    """The next n time stamps after the last one: numbers step on, month starts add months, dates add the median step.
    With a time_format the new dates are written in it (01/31/2022 goes on as 02/01/2022), else in ISO form."""
    parsed = [_parse_time(t, time_format) for t in times[-10:]]
    if len(parsed) < 2 or any(p is None for p in parsed):
        return [f"{times[-1]}+{k}" for k in range(1, n + 1)]
    last = parsed[-1]
    if isinstance(last, float):
        step = float(np.median(np.diff(parsed)))
        return [f"{last + k * step:g}" for k in range(1, n + 1)]
    days = float(np.median([(b - a).total_seconds() / 86400 for a, b in zip(parsed, parsed[1:])]))
    if m := _QUARTER.fullmatch(times[-1].strip()):  # quarters go on in the CSV's own spelling: 2000-Q4, 2001-Q1
        q = int(m[1]) * 4 + int(m[4]) - 1
        return [f"{(q + k) // 4}{m[2]}{m[3]}{(q + k) % 4 + 1}" for k in range(1, n + 1)]
    if 27 <= days <= 32:  # monthly data: months are not a fixed number of days, so step the month itself
        out = []
        for k in range(1, n + 1):
            m = last.month - 1 + k
            y, m = last.year + m // 12, m % 12 + 1
            day = date(y, m, min(last.day, calendar.monthrange(y, m)[1]))
            out.append(datetime.combine(day, last.timetz()).strftime(time_format) if time_format else day.isoformat())
        return out
    step = timedelta(seconds=float(np.median([(b - a).total_seconds() for a, b in zip(parsed, parsed[1:])])))
    if time_format:
        return [(last + k * step).strftime(time_format) for k in range(1, n + 1)]
    fmt = (lambda d: d.date().isoformat()) if step.total_seconds() % 86400 == 0 else (lambda d: d.isoformat())
    return [fmt(last + k * step) for k in range(1, n + 1)]


def split_points(n: int, val_frac: float, test_frac: float, window: int, horizon: int) -> tuple[int, int]:
    """Row indices where validation and test start. Each split must hold at least one whole target window."""
    test_start = n - max(int(round(n * test_frac)), horizon)
    val_start = test_start - max(int(round(n * val_frac)), horizon)
    if val_start - window - horizon < 1:
        need = window + 3 * horizon + 1
        raise ProjectError(
            f"the series has {n} rows: too short for --window {window} and --horizon {horizon} with the "
            f"train/validation/test splits (at least about {need} rows, more for a useful model)")
    return val_start, test_start


def base_forecast(y: np.ndarray, origins, horizon: int, season: int) -> np.ndarray:
    """(N, horizon) baseline forecasts from each origin: seasonal-naive (the value one season earlier) when the series
    has a season, else naive (the last value). The model forecasts the correction to this, so it starts there."""
    o = np.asarray(list(origins))[:, None]                   # (N, 1)
    h = np.arange(horizon)[None, :]                          # (1, horizon)
    if season:
        return y[o + h - season * (h // season + 1)]
    return np.repeat(y[o - 1], horizon, axis=1)


def first_origin(window: int, horizon: int, season: int) -> int:
    """The earliest origin whose input window and seasonal baseline both lie inside the series."""
    return max(window, season * ((horizon - 1) // season + 1) if season else 1)


def window_inputs(z: np.ndarray, origins, window: int, season: int) -> np.ndarray:
    """(N, window, 2C): the `window` rows before each origin minus the last of them (the model sees shapes, not
    levels, so a trend or a price that leaves the training range does not push its inputs somewhere new), and each
    row's difference from one season earlier (how far this cycle runs above or below the last one; zero with no
    season). Rows before the start of the series count as equal to the first row."""
    zp = np.concatenate([np.repeat(z[:1], season, axis=0), z]) if season else z
    seasonal_diff = zp[season:] - zp[:len(z)] if season else np.zeros_like(z)
    x = np.stack([np.concatenate([z[o - window:o] - z[o - 1], seasonal_diff[o - window:o]], axis=1)
                  for o in origins])
    return x.astype(np.float32)


def make_windows(z: np.ndarray, origins: range, window: int, horizon: int, season: int):
    """Inputs z[o-window:o] (all columns) and targets: the next `horizon` target values minus the baseline forecast."""
    x = window_inputs(z, origins, window, season)                                     # (N, window, 2C)
    truth = np.stack([z[o:o + horizon, 0] for o in origins])                          # (N, horizon)
    y = (truth - base_forecast(z[:, 0], origins, horizon, season)).astype(np.float32)  # (N, horizon)
    return x, y


def guess_season(series: np.ndarray, max_lag: int) -> int:
    """The shortest lag (>= 2) whose autocorrelation of the differenced training series is near the highest."""
    d = np.diff(series)
    d = d - d.mean()
    denom = float((d * d).sum()) or 1.0
    lags = range(2, min(max_lag, len(d) // 3) + 1)
    r = {lag: float((d[lag:] * d[:-lag]).sum()) / denom for lag in lags}
    if not r or max(r.values()) < 0.3:  # below this, call it no seasonality
        return 0
    top = max(r.values())
    peaks = [lag for lag, v in r.items() if v >= 0.9 * top and v >= r.get(lag - 1, -1) and v >= r.get(lag + 1, -1)]
    return min(peaks)  # the first clear peak: 24 rather than its multiple 48


# --------------------------------------------------------------------------------------------------------------- model


class Forecaster(nn.Module):
    """Corrections to the baseline forecast, (B, horizon, Q), from two paths added together:
    - an LSTM over the window: shapes, cycles, the effect of the other input columns;
    - a linear "highway" from the window's last values of the target (LSTNet's idea): the autoregressive part,
      which a linear layer learns in a few epochs while the LSTM takes many."""

    def __init__(self, n_inputs: int, hidden: int, horizon: int, n_quantiles: int, window: int):
        super().__init__()
        self.horizon, self.n_quantiles = horizon, n_quantiles
        self.ar_steps = min(window, 24)
        self.lstm = nn.LSTM(n_inputs, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon * n_quantiles)
        self.highway = nn.Linear(self.ar_steps * n_inputs, horizon * n_quantiles)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)                                     # (B, window, hidden)
        q = self.head(out[:, -1])                                 # (B, horizon * Q)
        q = q + self.highway(x[:, -self.ar_steps:].flatten(1))   # (B, horizon * Q)
        q = q.view(-1, self.horizon, self.n_quantiles)            # (B, horizon, Q)
        # sort along Q so the 10% quantile never lies above the median (no crossing intervals)
        return torch.sort(q, dim=-1).values


def pinball_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Quantile loss: under-forecasts cost q, over-forecasts cost 1-q; its minimiser is the q-quantile."""
    q = torch.tensor(QUANTILES, device=pred.device)        # (Q,)
    err = target.unsqueeze(-1) - pred                      # (B, horizon, Q)
    return torch.maximum(q * err, (q - 1) * err).mean()


# ----------------------------------------------------------------------------------------------------- checkpointing


def save_checkpoint(ckpt_dir: Path, model: nn.Module, config: dict) -> None:
    atomic_write(ckpt_dir / "model.pt", lambda p: torch.save(model.state_dict(), p))
    atomic_write(ckpt_dir / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))


CONFIG_KEYS = {"project": str, "format_version": int, "time_col": str, "target": str, "columns": list, "window": int,
               "horizon": int, "season": int, "hidden": int, "mean": list, "std": list, "rows": int, "val_start": int,
               "test_start": int}


def load_config(ckpt_dir: Path) -> dict:
    path = ckpt_dir / "config.json"
    if not path.is_file():
        raise ProjectError(f"no checkpoint in {ckpt_dir} (config.json is missing): run `train` first")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ProjectError(f"{path} is not valid JSON ({err.__class__.__name__}): the checkpoint is damaged") from None
    if not isinstance(config, dict):
        raise ProjectError(f"{path} holds a JSON {type(config).__name__}, not a checkpoint config (an object)")
    if config.get("project") != PROJECT:
        raise ProjectError(f"{ckpt_dir} holds a checkpoint of {config.get('project', 'something else')!r}, "
                           f"not of {PROJECT}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ProjectError(f"{ckpt_dir}: checkpoint format {config.get('format_version')!r}, this script reads "
                           f"{FORMAT_VERSION} (train again with this script)")
    bad = [k for k, t in CONFIG_KEYS.items() if not isinstance(config.get(k), t) or isinstance(config.get(k), bool)]
    bad += ["time_format"] if not isinstance(config.get("time_format"), (str, NoneType)) else []
    if bad:
        raise ProjectError(f"{path} lacks or mistypes {', '.join(bad)}: the checkpoint is damaged")
    return config


def load_train_state(path: Path) -> dict:
    """train_state.pt of THIS project with the keys --resume reads, or one ProjectError line."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ProjectError(f"--resume: {path} is unreadable ({err.__class__.__name__})") from None
    if not isinstance(saved, dict) or saved.get("project") != PROJECT:
        who = saved.get("project") if isinstance(saved, dict) else None
        why = (f" (it belongs to {who})" if isinstance(who, str) else
               " (an earlier version of this script wrote it, before train states named their project)"
               if isinstance(saved, dict) and "state" in saved and "config" in saved else "")
        raise ProjectError(f"--resume: {path} is not a train state of {PROJECT}{why}; use a new --ckpt-dir to start "
                           "afresh")
    if saved.get("format_version") != FORMAT_VERSION:
        raise ProjectError(f"--resume: {path} has format {saved.get('format_version')!r}, this script reads "
                           f"{FORMAT_VERSION}; use a new --ckpt-dir to start afresh")
    try:
        ok = isinstance(saved["config"], dict) and isinstance(saved["model"], dict) \
            and isinstance(saved["optimizer"], dict) and isinstance(saved["loader_rng"], torch.Tensor) \
            and isinstance(saved["torch_rng"], torch.Tensor) and isinstance(json.loads(saved["state"]), dict)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ProjectError(f"--resume: {path} lacks the keys a train state holds: the file is damaged")
    return saved


def load_model(ckpt_dir: Path, config: dict, device: torch.device) -> nn.Module:
    model = Forecaster(2 * len(config["columns"]), config["hidden"], config["horizon"], len(QUANTILES),
                       config["window"])
    try:
        state = torch.load(ckpt_dir / "model.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ProjectError(f"{ckpt_dir / 'model.pt'} is missing: the checkpoint is incomplete") from None
    except Exception as err:  # truncated or not a PyTorch file: one line, not a traceback
        raise ProjectError(f"{ckpt_dir / 'model.pt'} is damaged or not a PyTorch checkpoint "
                           f"({str(err).splitlines()[0].split('. ')[0]}): train again") from None
    try:
        model.load_state_dict(state)
    except Exception as err:  # another model's weights: one line, not a traceback
        raise ProjectError(f"{ckpt_dir / 'model.pt'} cannot be loaded into this model "
                           f"({str(err).splitlines()[0].split('. ')[0]})") from None
    return model.to(device).eval()


def data_for_checkpoint(csv_path: Path, config: dict, time_format: str | None, quiet: bool) -> dict:
    """The CSV read as the checkpoint was trained (its columns; its --time-format unless another is given)."""
    data = read_series(csv_path, config["time_col"], config["target"], config["columns"],
                       time_format or config.get("time_format"))
    if data["warning"] and not quiet:
        print(f"warning: {data['warning']}")
    if data["columns"] != config["columns"]:
        raise ProjectError(f"the checkpoint was trained on columns {config['columns']}; {csv_path} gives "
                           f"{data['columns']}")
    return data


# ------------------------------------------------------------------------------------------------------------ train


def diverged(epoch: int, what: str, lr: float, ckpt_dir: Path) -> ProjectError:
    """Training blew up: stop before a diverged model or train state is saved over the last good one."""
    return ProjectError(f"training diverged in epoch {epoch} ({what}): try a lower --lr than {lr:g}; nothing "
                        f"from this epoch was saved ({ckpt_dir} keeps its last good checkpoint and train state)")


def weight_norm(model: nn.Module) -> float:
    """The L2 norm of all the weights: training changes it a little; a step that blows the model up multiplies it."""
    return math.sqrt(sum(p.detach().float().pow(2).sum().item() for p in model.parameters()))


# the train flags --resume takes from the checkpoint unless given again, and the types they must have there
RESUMABLE = {"time_col": (str, NoneType), "target": (str, NoneType), "features": (list, NoneType),
             "time_format": (str, NoneType), "window": int, "horizon": int, "season": (int, NoneType), "hidden": int,
             "epochs": int, "patience": int, "batch_size": int, "lr": float, "val_frac": float, "test_frac": float}


def settings_from_checkpoint(args, saved: dict, path: Path) -> dict:
    """--resume: every train flag the user did not type again takes the value the checkpoint was trained with.
    Returns the flags whose value changed that way. A flag typed again keeps its value (and a clash is refused)."""
    old = saved["config"]
    settings = old.get("settings")
    if not isinstance(settings, dict):   # a checkpoint from before settings were saved: what its config holds
        settings = {k: old[k] for k in ("time_col", "target", "window", "horizon", "season", "hidden") if k in old}
    explicit = getattr(args, "explicit", set())
    taken = {}
    for key, value in settings.items():
        if key not in RESUMABLE or key in explicit:
            continue
        if not isinstance(value, RESUMABLE[key]) or isinstance(value, bool):
            raise ProjectError(f"--resume: {path} holds {key}={value!r}, not a {key} setting: the file is damaged")
        if getattr(args, key, None) != value:
            taken[key] = value
            setattr(args, key, value)
    return taken


def train(args, device: torch.device, csv_path: Path, ckpt_dir: Path, quiet: bool = False) -> dict:
    state_path = ckpt_dir / "train_state.pt"
    saved = None
    if args.resume:
        if not state_path.is_file():
            raise ProjectError(f"--resume: no {state_path} to resume from (train without --resume first)")
        saved = load_train_state(state_path)
        args = argparse.Namespace(**vars(args))
        taken = settings_from_checkpoint(args, saved, state_path)
        if taken and not quiet:
            print("--resume: as the checkpoint was trained: "
                  + ", ".join(f"--{k.replace('_', '-')} {v if not isinstance(v, list) else ' '.join(v)}"
                              for k, v in taken.items()))
    data = read_series(csv_path, args.time_col, args.target, args.features, args.time_format)
    values = data["values"]
    n = len(values)
    val_start, test_start = split_points(n, args.val_frac, args.test_frac, args.window, args.horizon)
    mean, std = values[:val_start].mean(0), values[:val_start].std(0) + 1e-8   # the training part only
    z = (values - mean) / std
    season = args.season if args.season is not None else guess_season(values[:val_start, 0], 2 * args.window)
    config = {
        "project": PROJECT, "format_version": FORMAT_VERSION, "csv": str(csv_path),
        "time_col": data["time_col"], "target": data["target"], "columns": data["columns"],
        "window": args.window, "horizon": args.horizon, "season": season, "hidden": args.hidden,
        "mean": mean.tolist(), "std": std.tolist(), "quantiles": list(QUANTILES),
        "rows": n, "val_start": val_start, "test_start": test_start, "time_format": args.time_format,
        "settings": {"time_col": args.time_col, "target": args.target, "features": args.features,  # flags as given
                     "time_format": args.time_format, "window": args.window, "horizon": args.horizon,
                     "season": args.season, "hidden": args.hidden, "epochs": args.epochs, "patience": args.patience,
                     "batch_size": args.batch_size, "lr": float(args.lr), "val_frac": float(args.val_frac),
                     "test_frac": float(args.test_frac)},
    }
    first = first_origin(args.window, args.horizon, season)
    if val_start - args.horizon + 1 - first < 8:
        raise ProjectError(f"{csv_path}: only {max(val_start - args.horizon + 1 - first, 0)} training windows for "
                           f"--window {args.window}, --horizon {args.horizon}, season {season}: use a shorter window "
                           "or horizon, or more rows")
    x_tr, y_tr = make_windows(z, range(first, val_start - args.horizon + 1), args.window, args.horizon, season)
    x_va, y_va = make_windows(z, range(val_start, test_start - args.horizon + 1), args.window, args.horizon, season)
    if not quiet:
        if data["warning"]:
            print(f"warning: {data['warning']}")
        print(f"{csv_path.name}: {n} rows, inputs {data['columns']}, target {data['target']!r}; "
              f"train rows 0-{val_start - 1}, validation {val_start}-{test_start - 1}, test {test_start}-{n - 1}")
        print(f"windows: {len(x_tr)} train, {len(x_va)} validation; season {season or 'none found'}"
              f"{' (detected)' if args.season is None else ''}")

    torch.manual_seed(args.seed)
    model = Forecaster(2 * len(data["columns"]), args.hidden, args.horizon, len(QUANTILES), args.window).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
                        batch_size=args.batch_size, shuffle=True, generator=gen)
    xv, yv = torch.from_numpy(x_va).to(device), torch.from_numpy(y_va).to(device)
    state = {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": []}

    if saved is not None:
        old = saved["config"]
        for key in ("columns", "target", "window", "horizon", "season", "hidden", "rows", "val_start", "test_start"):
            if old.get(key) != config.get(key):
                raise ProjectError(f"--resume: the checkpoint was trained with {key}={old.get(key)!r}, this run "
                                   f"has {config.get(key)!r}; use a new --ckpt-dir to start afresh")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for group in optimizer.param_groups:         # the run's --lr (the checkpoint's unless typed again)
            group["lr"] = args.lr
        gen.set_state(saved["loader_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state = json.loads(saved["state"])
        config["season"] = old["season"]
        if state["epoch"] >= args.epochs or state["bad_epochs"] >= args.patience:
            why = "early stopping had already ended it" if state["bad_epochs"] >= args.patience else \
                f"it already ran {state['epoch']} of --epochs {args.epochs}"
            print(f"--resume: nothing to do, {why} (best epoch {state['best_epoch']}); raise --epochs to go on")
            return {"epochs_run": 0, "best_epoch": state["best_epoch"], "best_val_loss": state["best_val"]}
        print(f"--resume: continuing after epoch {state['epoch']} (best so far {state['best_val']:.4f} "
              f"at epoch {state['best_epoch']})")

    start, first_epoch, first_loss = time.perf_counter(), state["epoch"] + 1, None
    start_norm = weight_norm(model)
    bar = tqdm(range(first_epoch, args.epochs + 1), desc="train", unit="epoch", leave=False,
               disable=quiet or not sys.stderr.isatty(), file=sys.stderr, dynamic_ncols=True)  # a bar in a terminal
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = pinball_loss(model(xb), yb)
            first_loss = loss.item() if first_loss is None else first_loss
            if not math.isfinite(loss.item()) or loss.item() > 1000 * first_loss:   # NaN/inf, or blown up
                raise diverged(epoch, f"loss {loss.item():.3g}", args.lr, ckpt_dir)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total, count = total + loss.item() * len(xb), count + len(xb)
        norm = weight_norm(model)
        if not math.isfinite(norm) or norm > 100 * start_norm:  # the last step can blow up the weights: check them
            raise diverged(epoch, f"weight norm {start_norm:.3g} -> {norm:.3g}", args.lr, ckpt_dir)
        model.eval()
        with torch.inference_mode():
            val = pinball_loss(model(xv), yv).item()
        if not math.isfinite(val):
            raise diverged(epoch, f"validation loss {val:.3g}", args.lr, ckpt_dir)
        state["epoch"] = epoch
        state["history"].append([total / count, val])
        if val < state["best_val"] - 1e-6:
            state.update(best_val=val, best_epoch=epoch, bad_epochs=0)
            config.update(best_epoch=epoch, best_val_loss=val)
            save_checkpoint(ckpt_dir, model, config)      # the best model, ready for evaluate/predict
        else:
            state["bad_epochs"] += 1
        bar.set_postfix(train=f"{total / count:.4f}", val=f"{val:.4f}", best=state["best_epoch"])
        if bar.disable and not quiet:  # no terminal (a log file, a notebook): one line per epoch instead of the bar
            print(f"  epoch {epoch:>3}/{args.epochs}: train {total / count:.4f}  validation {val:.4f}"
                  f"{'  (best, saved)' if state['best_epoch'] == epoch else ''}")
        atomic_write(state_path, lambda p: torch.save({
            "project": PROJECT, "format_version": FORMAT_VERSION, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "config": config,
            "loader_rng": gen.get_state(), "torch_rng": torch.get_rng_state(), "state": json.dumps(state)}, p))
        if state["bad_epochs"] >= args.patience:
            if not quiet:
                print(f"early stopping after epoch {epoch}: no validation improvement for {args.patience} epochs")
            break
    bar.close()
    seconds = time.perf_counter() - start
    if not quiet:
        print(f"trained epochs {first_epoch}-{state['epoch']} in {seconds:.1f} s; best validation pinball loss "
              f"{state['best_val']:.4f} at epoch {state['best_epoch']}; checkpoint: {ckpt_dir}")
    return {"epochs_run": state["epoch"] - first_epoch + 1, "best_epoch": state["best_epoch"],
            "best_val_loss": state["best_val"], "train_time_s": seconds, "history": state["history"]}


# --------------------------------------------------------------------------------------------------------- evaluate


def forecast(model: nn.Module, config: dict, values: np.ndarray, origins, device) -> np.ndarray:
    """Quantile forecasts in the data's units, (N, horizon, Q), each from the `window` rows before its origin."""
    mean, std = np.array(config["mean"]), np.array(config["std"])
    z = (values - mean) / std
    x = window_inputs(z, origins, config["window"], config["season"])
    with torch.inference_mode():
        delta = model(torch.from_numpy(x).to(device)).float().cpu().numpy()     # (N, horizon, Q)
    base = base_forecast(z[:, 0], origins, config["horizon"], config["season"])[..., None]
    return (base + delta) * std[0] + mean[0]


def baselines(values: np.ndarray, origins, horizon: int, season: int) -> dict:
    y = values[:, 0]
    return {"naive": base_forecast(y, origins, horizon, 0),
            "seasonal_naive": base_forecast(y, origins, horizon, season)}


def evaluate(args, device: torch.device, csv_path: Path, ckpt_dir: Path, out_dir: Path, prefix: str = "",
             quiet: bool = False) -> dict:
    config = load_config(ckpt_dir)
    data = data_for_checkpoint(csv_path, config, getattr(args, "time_format", None), quiet)
    model = load_model(ckpt_dir, config, device)
    values, h, season = data["values"], config["horizon"], config["season"]
    n = len(values)
    test_frac = getattr(args, "eval_test_frac", None)
    if n == config["rows"] and test_frac is not None:
        raise ProjectError(f"--test-frac: {csv_path} has the {n} rows the checkpoint was trained on, so its test part "
                           f"is the one train held out (rows {config['test_start']}-{n - 1}); drop --test-frac")
    test_start = config["test_start"] if n == config["rows"] else n - max(int(round(n * (test_frac or 0.15))), h)
    first = first_origin(config["window"], h, season)
    origins = list(range(max(test_start, first), n - h + 1, args.stride))   # rolling origins in test
    if not origins:
        raise ProjectError(f"{csv_path}: no test origin leaves room for a {h}-step forecast")
    truth = np.stack([values[o:o + h, 0] for o in origins])                     # (N, horizon)
    q = forecast(model, config, values, origins, device)
    preds = {"model": q[..., 1], **baselines(values, origins, h, season)}
    # MASE scales every error by the in-sample one-step error of the (seasonal) naive forecast on the training part
    y_train, lag = values[:config["val_start"], 0], season or 1
    scale = float(np.mean(np.abs(y_train[lag:] - y_train[:-lag]))) or 1.0
    scores = {}
    for name, p in preds.items():
        err = p - truth
        scores[name] = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
                        "mase": float(np.abs(err).mean() / scale)}
    inside = (truth >= q[..., 0]) & (truth <= q[..., 2])
    coverage, width = float(inside.mean()), float((q[..., 2] - q[..., 0]).mean())
    if not quiet:
        print(f"rolling-origin evaluation on the test part: {len(origins)} forecasts of {h} steps "
              f"(origins {origins[0]}-{origins[-1]}, every {args.stride}); season {season or 'none'}")
        print(f"  {'forecast':<16}{'MAE':>12}{'RMSE':>12}{'MASE':>8}")
        for name, s in scores.items():
            print(f"  {name:<16}{s['mae']:>12.4g}{s['rmse']:>12.4g}{s['mase']:>8.3f}")
        best_base = min(("naive", "seasonal_naive"), key=lambda k: scores[k]["mae"])
        ratio = scores["model"]["mae"] / scores[best_base]["mae"]
        verdict = "beats" if ratio < 1 else "does not beat"
        print(f"  the model {verdict} the best baseline ({best_base}): MAE ratio {ratio:.3f}")
        print(f"  80% interval: covers {coverage:.1%} of the test values (goal 80%), mean width {width:.4g}")
    path = out_dir / f"{prefix}forecast.png"
    plot_forecast(path, data, origins, truth, q, config, csv_path.name)
    if not quiet:
        print(f"  plot: {path}")
    return {"scores": scores, "coverage": coverage, "interval_width": width, "forecasts": len(origins)}


def plot_forecast(path: Path, data: dict, origins, truth, q, config, title: str) -> None:
    """The test part with three forecasts from different origins and their 80% bands."""
    y, h = data["values"][:, 0], config["horizon"]
    lo = max(origins[0] - 3 * h, 0)
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot()
    ax.plot(range(lo, len(y)), y[lo:], color="black", linewidth=1, label=f"observed {config['target']}")
    for k, i in enumerate(np.linspace(0, len(origins) - 1, 3).astype(int)):
        t = np.arange(origins[i], origins[i] + h)
        ax.fill_between(t, q[i, :, 0], q[i, :, 2], alpha=0.25, color=f"C{k}")
        ax.plot(t, q[i, :, 1], color=f"C{k}", label=f"median forecast from step {origins[i]}, 80% band")
    ax.axvline(origins[0], color="grey", linestyle=":", label="test part starts")
    ax.set(title=f"{title}: forecasts of the next {h} steps", xlabel="row (time step)", ylabel=config["target"])
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------------------------- predict


def predict(args, device: torch.device, csv_path: Path, ckpt_dir: Path, output: Path, quiet: bool = False) -> dict:
    config = load_config(ckpt_dir)
    data = data_for_checkpoint(csv_path, config, getattr(args, "time_format", None), quiet)
    need = first_origin(config["window"], config["horizon"], config["season"])
    if len(data["values"]) < need:
        raise ProjectError(f"{csv_path} has {len(data['values'])} rows; a forecast needs at least {need}: the model "
                           f"reads the last {config['window']} and the seasonal baseline the values one season "
                           f"({config['season']} rows) before each forecast step")
    model = load_model(ckpt_dir, config, device)
    q = forecast(model, config, data["values"], [len(data["values"])], device)[0]     # (horizon, Q)
    time_format = getattr(args, "time_format", None) or config.get("time_format")
    times = future_times(data["times"], config["horizon"], time_format)   # continuing the CSV's own date format

    def write(p: Path) -> None:
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([config["time_col"], f"{config['target']}_p10", f"{config['target']}_median",
                        f"{config['target']}_p90"])
            for t, row in zip(times, q):
                w.writerow([t, *(f"{v:.6g}" for v in row)])

    atomic_write(output, write)
    if not quiet:
        print(f"next {config['horizon']} steps of {config['target']!r} after {data['times'][-1]} "
              f"(median and 80% interval):")
        for t, row in list(zip(times, q))[:6]:
            print(f"  {t:<22}{row[1]:>12.5g}   [{row[0]:.5g}, {row[2]:.5g}]")
        if len(times) > 6:
            print(f"  ... {len(times) - 6} more rows")
        print(f"written: {output}")
    return {"steps": len(times), "first_median": float(q[0, 1])}


# ------------------------------------------------------------------------------------------------------------- demo


def write_generated_csv(path: Path, n: int, seed: int) -> None:
    """Hourly load: trend + daily and weekly cycles + a temperature effect + AR(1) noise. Same layout as yours."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    temperature = 12 + 8 * np.sin(2 * np.pi * (t - 6) / 24) + np.cumsum(rng.normal(0, 0.3, n)) * 0.2
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = 0.85 * noise[i - 1] + rng.normal(0, 1.0)
    load = (50 + 0.01 * t + 6 * np.sin(2 * np.pi * t / 24) + 3 * np.sin(2 * np.pi * t / 168)
            + 0.4 * (temperature - 12) + noise)
    start = datetime(2024, 1, 1)

    def write(p: Path) -> None:
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time", "load", "temperature"])
            for i in range(n):
                w.writerow([(start + timedelta(hours=i)).isoformat(), f"{load[i]:.4f}", f"{temperature[i]:.3f}"])

    atomic_write(path, write)


def write_sp500_csv(path: Path) -> int:
    """The monthly S&P 500 close (1990 on) from matplotlib's sample data, as date,sp500: one row per month start (the
    file ends with a partial month, 2022-06-28, which would break the equal steps the model assumes)."""
    from matplotlib.cbook import get_sample_data

    with open(get_sample_data("Stocks.csv", asfileobj=False), newline="") as f:
        rows = [r for r in csv.reader(line for line in f if not line.startswith("#"))]
    col = rows[0].index("^GSPC")
    kept = [(r[0], r[col]) for r in rows[1:] if len(r) > col and r[col] and r[0].endswith("-01")]

    def write(p: Path) -> None:
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["date", "sp500"])
            w.writerows(kept)

    atomic_write(path, write)
    return len(kept)


def run_demo(args, device: torch.device) -> dict:
    demo_dir = args.data_dir / "time_series"
    out, metrics = args.out_dir, {}
    cases = [
        ("generated", demo_dir / "generated_hourly.csv",
         dict(time_col="time", target="load", window=48, horizon=24, season=None)),
        ("sp500", demo_dir / "sp500_monthly.csv",
         dict(time_col="date", target="sp500", window=24, horizon=6, season=None)),
    ]
    section("Demo data, written in the CSV layout your own data uses")
    write_generated_csv(cases[0][1], 700 if args.smoke else 2000, args.seed)
    n_sp = write_sp500_csv(cases[1][1])
    print(f"{cases[0][1]}: generated hourly load and temperature")
    print(f"{cases[1][1]}: {n_sp} months of the real S&P 500 index (matplotlib sample data, Yahoo Finance)")
    for name, path, overrides in cases:
        run_args = argparse.Namespace(**{**vars(args), **overrides, "features": None, "resume": False})
        if args.smoke:
            run_args.epochs, run_args.hidden = 8, 16
        ckpt = out / f"checkpoint_{name}"
        section(f"{name}: train")
        trained = train(run_args, device, path, ckpt)
        section(f"{name}: evaluate (rolling origins over the test part)")
        ev = evaluate(run_args, device, path, ckpt, out, prefix=f"{name}_")
        section(f"{name}: predict the next {run_args.horizon} steps")
        pr = predict(run_args, device, path, ckpt, out / f"{name}_forecast.csv")
        s = ev["scores"]
        metrics.update({
            f"{name}_mae_model": s["model"]["mae"], f"{name}_mae_naive": s["naive"]["mae"],
            f"{name}_mae_seasonal_naive": s["seasonal_naive"]["mae"], f"{name}_mase_model": s["model"]["mase"],
            f"{name}_ratio_vs_naive": s["model"]["mae"] / s["naive"]["mae"],
            f"{name}_ratio_vs_seasonal_naive": s["model"]["mae"] / s["seasonal_naive"]["mae"],
            f"{name}_coverage_80": ev["coverage"], f"{name}_best_epoch": trained["best_epoch"],
            f"{name}_epochs_run": trained["epochs_run"], f"{name}_train_time_s": trained["train_time_s"],
            f"{name}_forecast_rows": pr["steps"],
        })
        plot_history(out / f"{name}_loss.png", trained["history"], name)
        print(f"loss curves: {out / f'{name}_loss.png'}")

    section("What to notice")
    g, r = metrics["generated_ratio_vs_seasonal_naive"], metrics["sp500_ratio_vs_naive"]
    print(f"- Generated series: the model's MAE is {g:.2f}x seasonal-naive's "
          f"({'better' if g < 1 else 'not better'}), its 80% interval covered "
          f"{metrics['generated_coverage_80']:.0%} of the test values.")
    print(f"- S&P 500: the model's MAE is {r:.2f}x the naive forecast's. Monthly index levels are close to a "
          f"random walk: {'even a small edge is rare there' if r < 1 else 'the last value is the forecast to beat'}.")
    print("- Both baselines are printed beside the model: a forecaster that does not beat them is not worth using.")
    section("Your own data: the same three steps")
    me = "python 10-projects/project_time_series.py"
    print(f"{me} train    --csv my.csv --time-col date --target sales --horizon 14 --ckpt-dir ckpt")
    print(f"{me} evaluate --csv my.csv --ckpt-dir ckpt")
    print(f"{me} predict  --csv my.csv --ckpt-dir ckpt --output next.csv")
    return metrics


def print_next_commands(args, ckpt_dir: Path) -> None:
    """After train: the evaluate and predict commands for the same CSV and checkpoint, ready to paste."""
    here = os.path.relpath(Path(__file__).resolve())
    me = f"python {shlex.quote(here if not here.startswith('..') else str(Path(__file__).resolve()))}"
    out = f" --out-dir {shlex.quote(str(args.out_dir))}" if "out_dir" in args.explicit else ""
    common = f"--csv {shlex.quote(str(args.csv))} --ckpt-dir {shlex.quote(str(ckpt_dir))}{out}"
    section("Next: score the model on the test part, then forecast past the end of the CSV")
    print(f"{me} evaluate {common}")
    print(f"{me} predict  {common}    # writes {args.out_dir / 'forecast.csv'} (or give --output)")


def plot_history(path: Path, history: list, name: str) -> None:
    h = np.array(history)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    epochs = np.arange(1, len(h) + 1)
    ax.plot(epochs, h[:, 0], label="train")
    ax.plot(epochs, h[:, 1], label="validation")
    ax.set(title=f"{name}: pinball loss per epoch", xlabel="epoch", ylabel="pinball loss (normalised units)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------------------------------------- the CLI


def add_common(parser: argparse.ArgumentParser, sub: bool, defaults: bool = True) -> None:
    """The common flags, on the main parser and (without defaults) after each subcommand too."""
    d = (lambda v: argparse.SUPPRESS) if sub or not defaults else (lambda v: v)
    parser.add_argument("--device", default=d("auto"), choices=["auto", "cpu", "cuda", "mps"],
                        help="where to train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=d(0), help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", default=d(False),
                        help="the demo in tiny form: a few seconds on a CPU")
    parser.add_argument("--out-dir", type=Path, default=d(Path("outputs/10-projects/project_time_series")),
                        help="where metrics.json, plots, forecasts and the default checkpoint go")
    parser.add_argument("--data-dir", type=Path, default=d(Path("data")),
                        help="where the demo writes its CSV files")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"must be between 0 and 0.5, got {value}")
    return value


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The command line. defaults=False leaves every default out, so parsing gives only the flags typed."""
    D = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common(parser, sub=False, defaults=defaults)
    subs = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict}",
                                 help="with no command: the whole demo")
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p_train = subs.add_parser("train", help="train on a CSV and keep the best checkpoint", formatter_class=fmt)
    p_eval = subs.add_parser("evaluate", help="rolling-origin test scores and a forecast plot", formatter_class=fmt)
    p_pred = subs.add_parser("predict", help="forecast the steps after the end of a CSV", formatter_class=fmt)
    for p in (p_train, p_eval, p_pred):
        add_common(p, sub=True)
        p.add_argument("--csv", type=Path, required=True, help="a CSV file: a time column and numeric columns")
        p.add_argument("--ckpt-dir", type=Path, default=D(None),
                       help="checkpoint folder (default <out-dir>/checkpoint)")
        p.add_argument("--time-format", default=D(None), metavar="FORMAT",
                       help="strptime format of the time column when it is not ISO (2022-01-31) or a number, "
                            "e.g. '%%m/%%d/%%Y' for 01/31/2022 or '%%d.%%m.%%Y %%H:%%M' for 31.01.2022 14:00; train "
                            "saves it in the checkpoint for evaluate and predict")
    p_train.add_argument("--time-col", default=D(None), help="name of the time column (default: the first column)")
    p_train.add_argument("--target", default=D(None), help="column to forecast (default: the first numeric column)")
    p_train.add_argument("--features", nargs="+", default=D(None),
                         help="numeric input columns (default: every column but the time)")
    p_train.add_argument("--test-frac", type=fraction, default=D(0.15), help="last fraction of rows held out as test")
    p_eval.add_argument("--test-frac", type=fraction, default=D(None), dest="eval_test_frac",
                        help="last fraction of rows scored, for a CSV other than the one trained on (default 0.15); "
                             "the CSV trained on is scored on the test part train held out")
    p_eval.add_argument("--stride", type=positive_int, default=D(1), help="steps between rolling forecast origins")
    p_pred.add_argument("--output", type=Path, default=D(None), help="forecast CSV (default <out-dir>/forecast.csv)")
    p_train.add_argument("--val-frac", type=fraction, default=D(0.15), help="fraction of rows before the test part")
    p_train.add_argument("--resume", action="store_true", default=D(False),
                         help="continue the run saved in --ckpt-dir; a flag not given again takes the value that "
                              "run was trained with")
    # training hyperparameters; the demo uses the same defaults
    for p in (parser, p_train):
        dd = (lambda v: argparse.SUPPRESS) if p is p_train or not defaults else (lambda v: v)
        p.add_argument("--window", type=positive_int, default=dd(48), help="past rows the model reads")
        p.add_argument("--horizon", type=positive_int, default=dd(24), help="future steps forecast at once")
        p.add_argument("--season", type=int, default=dd(None),
                       help="seasonal period in rows for seasonal-naive (default: detected; 0 = none)")
        p.add_argument("--epochs", type=positive_int, default=dd(40),
                       help="most epochs (early stopping may end sooner)")
        p.add_argument("--patience", type=positive_int, default=dd(6),
                       help="epochs without improvement before stopping")
        p.add_argument("--batch-size", type=positive_int, default=dd(64), help="windows per batch")
        p.add_argument("--lr", type=float, default=dd(3e-3), help="AdamW learning rate")
        p.add_argument("--hidden", type=positive_int, default=dd(64), help="LSTM width")
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit = set(vars(build_parser(defaults=False).parse_args(argv)))   # the flags typed, for --resume
    if not 0 <= args.seed < 2**32:  # NumPy's seed range (torch takes any 64-bit integer)
        parser.error(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the README's GPU section)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    for flag, path in (("--out-dir", args.out_dir), ("--ckpt-dir", getattr(args, "ckpt_dir", None)),
                       ("--data-dir", getattr(args, "data_dir", None))):
        existing = next((p for p in (path, *path.parents) if p.exists()), None) if path is not None else None
        if existing is not None and not existing.is_dir():  # a file where a folder must be (or be made)
            parser.error(f"{flag} {path} is a file: it must be a folder" if existing == path else
                         f"{flag} {path}: {existing} is a file, so no folder can be made there")
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.season is not None and args.season < 0:
        parser.error(f"--season must be 0 (none) or a period in rows, got {args.season}")
    if args.command != "train":
        for name, default in (("test_frac", 0.15), ("val_frac", 0.15), ("stride", 1), ("features", None),
                              ("time_col", None), ("target", None), ("time_format", None)):
            if not hasattr(args, name):
                setattr(args, name, default)
    args.resume = getattr(args, "resume", False)
    if args.command == "predict" and args.output is not None and args.output.is_dir():
        parser.error(f"--output {args.output} is a folder; give a file name such as {args.output / 'forecast.csv'}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.device)
    seed_everything(args.seed)
    start = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{PROJECT}: device {device}, seed {args.seed}{', smoke' if args.smoke else ''}, torch {torch.__version__}")
    try:
        if args.command is None:
            metrics = run_demo(args, device)
        else:
            ckpt_dir = args.ckpt_dir or args.out_dir / "checkpoint"
            if args.command == "train":
                r = train(args, device, args.csv, ckpt_dir)
                metrics = {k: v for k, v in r.items() if k != "history"}
                print_next_commands(args, ckpt_dir)
            elif args.command == "evaluate":
                r = evaluate(args, device, args.csv, ckpt_dir, args.out_dir)
                metrics = {f"{n}_{k}": v for n, s in r["scores"].items() for k, v in s.items()}
                metrics.update(coverage_80=r["coverage"], forecasts=r["forecasts"])
            else:
                r = predict(args, device, args.csv, ckpt_dir, args.output or args.out_dir / "forecast.csv")
                metrics = r
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "command": args.command or "demo", "wall_time_s": time.perf_counter() - start}
    atomic_write(args.out_dir / "metrics.json", lambda p: p.write_text(json.dumps(record, indent=2)))
    print(f"\nmetrics: {args.out_dir / 'metrics.json'}  ({record['wall_time_s']:.1f} s)")
    return metrics


if __name__ == "__main__":
    main()

"""Project: a DCGAN that draws handwritten digits, with its quality measured rather than eyeballed.

A generator (transposed convolutions, BatchNorm) turns 64 random numbers into a 28x28 digit; a discriminator
(strided convolutions with spectral norm) tells generated digits from real ones. The stable-training habits are all
here: the non-saturating loss with one-sided label smoothing (real targets 0.9), Adam with betas (0.5, 0.999),
BatchNorm in G, spectral norm in D. Both are small (--width 16), so one CPU thread trains an epoch of the stand-in
digits in under a second (--threads: a second thread made steps 5-7x slower on a busy machine). The data: real MNIST
when it is in --data-dir (its four files in <data-dir>/MNIST/raw, unpacked or as the official .gz files, which are
unpacked there, offline too) or downloadable (not with --smoke or --offline); the demo then trains on 6,000 of its
images (--train-images). Otherwise scikit-learn's load_digits, 1,797 real 8x8 handwritten digits upsampled to 28x28.

Quality, measured: a small classifier trained on the real training digits (the judge; cached in the checkpoint folder
with the sha256 of its data and weights, so evaluate reuses the very judge train used) scores samples:
- class coverage: how many of the 10 digits make up at least 2% of the samples (a collapsed generator draws few);
- mean confidence: how sure the judge is that a sample is some digit (blobs score low);
- a Frechet distance between the judge's penultimate features of real and generated digits (the idea of FID,
  on a digit classifier instead of Inception): ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)), computed here.
  It is printed beside the same distance for an untrained generator, for uniform noise images, and for real digits
  against other real digits (the floor).
Samples are drawn with a fixed set of latent vectors during training, so the saved grids show one run improving; the
Frechet distance on the validation digits picks the checkpoint kept (early stopping on it).

A 2-D demo first shows mode collapse and its cure on the standard benchmark: eight Gaussians (std 0.05) on a ring of
radius 2. A plain GAN (small MLPs, the non-saturating loss, Adam at lr 2e-3, no tricks) usually collapses: its
samples huddle in one small clump that wanders between the modes. PacGAN (Lin, Khetan, Fanti, Oh, "PacGAN: the power
of two samples in generative adversarial networks", NeurIPS 2018) changes one thing: D judges two samples at once,
concatenated, so a generator whose samples all look alike is easy to catch. Counted as in VEEGAN (Srivastava et al.
2017) and PacGAN: modes covered, and the share of high-quality samples (within 3 standard deviations of a mode).
Measured at 1,500 steps on a CPU, seeds 0-4: plain 0, 1, 0, 0, 0 of 8 modes; PacGAN 8, 5, 8, 6, 8 (24-67% high-
quality samples). Seeds 5-9: plain 1, 0, 0, 0, 7; PacGAN 8 each. So a plain GAN does not always collapse (seed 9):
the printed verdict follows the counts of the run at hand.

Run it:
    python 10-projects/project_simple_gan.py                  # the demo: the ring, then train, evaluate, sample
    python 10-projects/project_simple_gan.py train --epochs 60 --ckpt-dir ckpt       # MNIST if in --data-dir
    python 10-projects/project_simple_gan.py evaluate --ckpt-dir ckpt
    python 10-projects/project_simple_gan.py sample --n 64 --ckpt-dir ckpt --output samples.png

The demo takes about half a minute on an idle 2-core CPU (offline, the scikit-learn digits; --smoke: about 5 s, and
its digits are still blobs). What to look for: modes covered and high-quality samples, plain against PacGAN; the digit
GAN's Frechet distance far below the untrained generator's and the noise's, all ten digits covered, the judge's
confidence well above the untrained generator's (its confidence on real digits is the ceiling); the sample grids
getting sharper (samples_epoch_*.png). On a GPU the digits train there; the 2-D demo stays on the CPU, where its
tiny MLPs run faster and count the same on every machine.
"""

import argparse
import gzip
import hashlib
import importlib.util
import json
import math
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from tqdm import tqdm

PROJECT = "project_simple_gan"
FORMAT_VERSION = 1
Z_DIM = 64


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


# ------------------------------------------------------------------------------------------------------- data


def real_digits():
    """scikit-learn's 1,797 real handwritten digits (load_digits): images (1797, 8, 8) float32 in 0-16 and labels.
    Read from the file load_digits() reads (sklearn/datasets/data/digits.csv.gz: 64 pixels, then the label) without
    importing scikit-learn, which takes about 0.7 s; load_digits() if the file is not there."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return torch.tensor(digits.images, dtype=torch.float32), torch.tensor(digits.target)
    table = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.float32))  # (1797, 65)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].long()


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def mnist_header(path: Path, name: str) -> bytes | None:
    """The first 4 bytes of an unpacked MNIST file if they are what MNIST's idx files start with (00 00 08 03 for the
    images, 00 00 08 01 for the labels), else None."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head if head == bytes([0, 0, 8, 3 if "images" in name else 1]) else None


def unpack_mnist(raw: Path) -> list[str]:
    """Unpack MNIST's four official .gz files found in raw (downloaded by hand, copied from another machine) beside
    themselves, under the names torchvision's datasets.MNIST reads: it unpacks them only when it downloads them
    itself, and so ignores them offline. Returns the files that are there neither unpacked nor as .gz."""
    missing, unpacked = [], []
    for name in MNIST_FILES:
        target, packed = raw / name, raw / f"{name}.gz"
        if not packed.is_file():
            if not target.is_file():
                missing.append(name)
            continue
        if target.is_file() and mnist_header(target, name):
            continue    # unpacked before: read as it is (a copy may date it before its .gz; a mount may be read-only)
        try:
            with gzip.open(packed, "rb") as f:
                data = f.read()
        except (OSError, EOFError) as err:                       # gzip.BadGzipFile is an OSError
            raise ProjectError(f"{packed} is not a complete gzip file ({type(err).__name__}: {err}): download it "
                               "again") from None
        try:
            atomic_write(target, lambda p, data=data: p.write_bytes(data))
        except OSError as err:
            raise ProjectError(f"cannot unpack {packed} in {raw} ({err.strerror or err}): unpack the .gz files there "
                               f"yourself (gunzip -k {raw}/*.gz), or copy the MNIST folder somewhere writable and "
                               "give that --data-dir") from None
        unpacked.append(packed.name)
    if unpacked:
        print(f"data: unpacked {', '.join(unpacked)} in {raw} (torchvision reads MNIST's files unpacked)")
    return missing


def read_mnist(data_dir: Path, offline: bool, local: bool):
    """datasets.MNIST's train and test sets, through torchvision (which downloads them unless offline), checked: 28x28
    digits with labels 0-9. local: all four files are on disk, so a failure means they are damaged: one ProjectError
    line."""
    from torchvision import datasets

    raw = data_dir / "MNIST" / "raw"
    for name in MNIST_FILES if local else ():
        if not mnist_header(raw / name, name):
            with open(raw / name, "rb") as f:
                head = f.read(4)
            gz = raw / f"{name}.gz"
            what = f"{gz} unpacks to" if gz.is_file() else f"{raw / name} is"
            raise ProjectError(f"{what} no MNIST file (it starts {head.hex(' ') or 'empty'}; MNIST's {name} starts "
                               f"00 00 08 0{3 if 'images' in name else 1}): download it again, or remove the MNIST "
                               "files to train on scikit-learn's digits")
    try:
        train = datasets.MNIST(data_dir, train=True, download=not offline)
        test = datasets.MNIST(data_dir, train=False, download=not offline)
        ok = all(d.data.ndim == 3 and tuple(d.data.shape[1:]) == (28, 28) and len(d.data) == len(d.targets) > 0
                 and 0 <= int(d.targets.min()) and int(d.targets.max()) <= 9 for d in (train, test))
        why = "" if ok else "not 28x28 digits with labels 0-9"
    except Exception as err:
        if not local:
            raise
        why = " ".join(str(err).split())[:120] or type(err).__name__
    if why:
        raise ProjectError(f"{raw} holds MNIST's four files, but they are damaged or not MNIST ({why}): download "
                           "them again, or remove them to train on scikit-learn's digits")
    return train, test


def load_digit_images(data_dir: Path, source: str, offline: bool) -> dict:
    """Real digits as (N, 1, 28, 28) floats in [-1, 1] with labels, split train / validation / test (fixed seed).
    MNIST is read from <data_dir>/MNIST/raw: its four files, unpacked or as the official .gz files."""
    raw = data_dir / "MNIST" / "raw"
    missing = unpack_mnist(raw) if source in ("auto", "mnist") and raw.is_dir() else list(MNIST_FILES)
    if source == "auto" and offline and missing:
        where = (f"no MNIST in {data_dir}" if len(missing) == len(MNIST_FILES) else
                 f"MNIST in {raw} lacks {', '.join(missing)} (or its .gz)")
        print(f"data: {where} (offline); using scikit-learn's load_digits (1,797 real 8x8 digits, upsampled to "
              "28x28)")
    elif source in ("auto", "mnist"):
        try:
            train, test = read_mnist(data_dir, offline, local=not missing)
            x = train.data.float().div(127.5).sub(1).unsqueeze(1)              # (60000, 1, 28, 28)
            xt = test.data.float().div(127.5).sub(1).unsqueeze(1)
            g = torch.Generator().manual_seed(0)
            perm = torch.randperm(len(x), generator=g)
            n_val = min(5000, len(x) // 10)                                   # 5,000 of MNIST's 60,000
            if n_val < 2:
                raise ProjectError(f"{raw} holds {len(x)} training digits: too few to keep a tenth (at least 2) for "
                                   "validation, where the Frechet distance is measured; add digits, or remove the "
                                   "MNIST files to train on scikit-learn's digits")
            val, tr = perm[:n_val], perm[n_val:]
            print(f"data: MNIST from {data_dir} ({len(tr)} train, {len(val)} validation, {len(xt)} test)")
            return {"source": "mnist", "train": (x[tr], train.targets[tr]), "val": (x[val], train.targets[val]),
                    "test": (xt, test.targets)}
        except ProjectError:
            raise
        except Exception as err:  # not there and not downloadable: say so in one line, use the stand-in
            if source == "mnist":
                lacks = f" (lacks {', '.join(missing)}, or their .gz)" if missing else ""
                why = "--offline" if offline else str(err).splitlines()[0][:100]
                raise ProjectError(f"MNIST is not in {raw}{lacks} and could not be downloaded ({why})") from None
            why = "offline" if offline else str(err).splitlines()[0][:80]
            print(f"data: MNIST not available ({why}); using scikit-learn's load_digits (1,797 real 8x8 digits, "
                  "upsampled to 28x28)")
    images, y = real_digits()
    x = images.div(16).unsqueeze(1)                                          # (1797, 1, 8, 8) in [0, 1]
    x = F.pad(x, (1, 1, 1, 1))                                              # a blank border, as MNIST has
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1).mul(2).sub(1)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    te, va, tr = perm[:300], perm[300:500], perm[500:]
    return {"source": "digits", "train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}


def limit_train(data: dict, n: int) -> dict:
    """At most n training images (0: all). The split is already shuffled, so the first n are a random subset."""
    if n and len(data["train"][0]) > n:
        print(f"data: training on {n} of the {len(data['train'][0])} training images (--train-images)")
        data = {**data, "train": (data["train"][0][:n], data["train"][1][:n])}
    return data


# ----------------------------------------------------------------------------------------------------- models


class Generator(nn.Module):
    """z (B, Z) -> (B, 2w, 7, 7) -> (B, w, 14, 14) -> (B, 1, 28, 28) in [-1, 1]; w = --width (16: 0.1 M parameters)."""

    def __init__(self, z_dim: int = Z_DIM, width: int = 16):
        super().__init__()
        self.width = width
        self.fc = nn.Sequential(nn.Linear(z_dim, 2 * width * 49, bias=False), nn.BatchNorm1d(2 * width * 49),
                                nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(-1, 2 * self.width, 7, 7))


class Discriminator(nn.Module):
    """(B, 1, 28, 28) -> one logit per image; spectral norm keeps each layer 1-Lipschitz, so D cannot overpower G."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(1, width, 4, 2, 1)), nn.LeakyReLU(0.2),              # (B, w, 14, 14)
            spectral_norm(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),      # (B, 2w, 7, 7)
            nn.Flatten(), spectral_norm(nn.Linear(2 * width * 49, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class DigitClassifier(nn.Module):
    """The judge: a small CNN trained on real digits; `features` is its penultimate layer (64 numbers). It looks at the
    digit at 14x14 (average-pooled first): enough to tell digits apart, and four times cheaper than 28x28."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.AvgPool2d(2),                                                               # (B, 1, 14, 14)
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),                    # (B, 16, 7, 7)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),                   # (B, 32, 3, 3)
            nn.Flatten(), nn.Linear(32 * 9, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


# ------------------------------------------------------------------------------------------- the judge, FID


JUDGE_SEED = 0        # the judge is a measuring instrument: the same one whatever --seed, so runs compare
JUDGE_VERSION = 2     # bump when DigitClassifier or its training changes: a cached judge of another version retrains


def train_classifier(data: dict, device, epochs: int) -> DigitClassifier:
    torch.manual_seed(JUDGE_SEED)
    clf = DigitClassifier().to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    x, y = data["train"]
    g = torch.Generator().manual_seed(JUDGE_SEED)
    for _ in range(epochs):
        clf.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            xb = x[idx].to(device)
            xb = torch.roll(xb, shifts=tuple(torch.randint(-2, 3, (2,), generator=g).tolist()), dims=(2, 3))
            loss = F.cross_entropy(clf(xb), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return clf.eval()


def data_fingerprint(data: dict) -> str:
    """sha256 of the judge's training images and labels: a cached judge is reused only for exactly this data."""
    h = hashlib.sha256()
    for t in data["train"]:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def get_classifier(ckpt_dir: Path, data: dict, device, epochs: int,
                   any_epochs: bool = False) -> tuple[DigitClassifier, float]:
    """Load the judge cached in the checkpoint folder when it was trained on this very data (same fingerprint, same
    judge version and epochs, weights file intact); train and cache it otherwise. evaluate passes any_epochs=True:
    it reuses the judge train used, however many epochs that one had."""
    path, meta_path = ckpt_dir / "classifier.pt", ckpt_dir / "classifier.json"
    key = {"version": JUDGE_VERSION, "data": data_fingerprint(data), "epochs": epochs}
    if path.is_file() and meta_path.is_file():
        if any_epochs:
            try:
                key["epochs"] = json.loads(meta_path.read_text()).get("epochs")
            except (OSError, json.JSONDecodeError):
                pass
        try:
            meta = json.loads(meta_path.read_text())
            if {k: meta.get(k) for k in key} == key and meta.get("sha256") == file_sha256(path):
                clf = DigitClassifier()
                clf.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                print(f"judge: cached classifier {path} (test accuracy {meta['test_accuracy']:.3f})")
                return clf.to(device).eval(), meta["test_accuracy"]
            print(f"judge: {path} was trained on other data or settings (or is damaged); training a new one")
        except Exception:
            print(f"judge: {path} is unreadable; training a new one")
    start = time.process_time()
    clf = train_classifier(data, device, epochs)
    acc = accuracy(clf, *data["test"], device)
    atomic_write(path, lambda p: torch.save(clf.state_dict(), p))
    meta = {**key, "source": data["source"], "test_accuracy": acc, "sha256": file_sha256(path)}
    atomic_write(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2)))
    name = {"mnist": "MNIST", "digits": "scikit-learn"}[data["source"]]
    seconds = time.process_time() - start
    print(f"judge: a classifier trained on the real {name} digits ({epochs} epochs, {seconds:.1f} s "
          f"of CPU time), test accuracy {acc:.3f}; cached in {path}")
    return clf, acc


@torch.inference_mode()
def accuracy(clf, x, y, device) -> float:
    return float((torch.cat([clf(b.to(device)).argmax(1).cpu() for b in x.split(512)]) == y).float().mean())


@torch.inference_mode()
def judge(clf, x: torch.Tensor, device) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features (N, 64) and class probabilities (N, 10), in float64 for the statistics."""
    feats, probs = [], []
    for b in x.split(512):
        f = clf.features(b.to(device))
        feats.append(f.cpu().double())  # to the CPU first: MPS has no float64
        probs.append(torch.softmax(clf.head(f), 1).cpu().double())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). (S1 S2)^(1/2) has the trace of (A S2 A)^(1/2) with A = S1^(1/2),
    a symmetric matrix, so an eigendecomposition does it: no complex square roots, no scipy needed."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    a = sqrtm_psd(s1)
    covmean_trace = np.trace(sqrtm_psd(a @ s2 @ a))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * covmean_trace)


@torch.inference_mode()
def generate(gen: Generator, n: int, device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, Z_DIM, generator=g)
    gen.eval()
    return torch.cat([gen(b.to(device)).float().cpu() for b in z.split(512)])


def score_samples(clf, samples: torch.Tensor, real_feats: np.ndarray, device) -> dict:
    feats, probs = judge(clf, samples, device)
    counts = np.bincount(probs.argmax(1), minlength=10)
    return {"fid": frechet_distance(real_feats, feats), "confidence": float(probs.max(1).mean()),
            "coverage": int((counts >= 0.02 * len(samples)).sum()), "counts": counts}


# ----------------------------------------------------------------------------------------------- checkpoints


CONFIG_KEYS = {"project": str, "format_version": int, "z_dim": int, "width": int, "source": str, "train_images": int}


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
        raise ProjectError(f"{ckpt_dir} holds a checkpoint of {config.get('project')!r}, not {PROJECT}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ProjectError(f"{ckpt_dir}: checkpoint format {config.get('format_version')!r}, this script reads "
                           f"{FORMAT_VERSION} (train again with this script)")
    bad = [k for k, t in CONFIG_KEYS.items() if not isinstance(config.get(k), t) or isinstance(config.get(k), bool)]
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
        ok = all(isinstance(saved[k], dict) for k in ("generator", "discriminator", "opt_g", "opt_d")) \
            and isinstance(saved["loader_rng"], torch.Tensor) and isinstance(saved["torch_rng"], torch.Tensor) \
            and isinstance(json.loads(saved["state"]), dict) and isinstance(json.loads(saved["config"]), dict)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ProjectError(f"--resume: {path} lacks the keys a train state holds: the file is damaged")
    return saved


def load_generator(ckpt_dir: Path, config: dict, device) -> Generator:
    gen = Generator(config["z_dim"], config["width"])
    path = ckpt_dir / "generator.pt"
    try:
        gen.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except FileNotFoundError:
        raise ProjectError(f"{path} is missing: the checkpoint is incomplete") from None
    except Exception as err:
        raise ProjectError(f"{path} cannot be loaded into this generator ({str(err).splitlines()[0][:120]})") from None
    return gen.to(device).eval()


def save_grid(path: Path, images: torch.Tensor, title: str) -> None:
    n = len(images)
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.ones((rows * 29 + 1, cols * 29 + 1))
    for i, img in enumerate(images[:, 0].clamp(-1, 1).add(1).div(2).numpy()):
        r, c = divmod(i, cols)
        grid[1 + r * 29: 1 + r * 29 + 28, 1 + c * 29: 1 + c * 29 + 28] = 1 - img   # dark ink on white
    fig = Figure(figsize=(cols * 0.45 + 0.4, rows * 0.45 + 0.6))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))


# ---------------------------------------------------------------------------------------------------- train


def diverged(epoch: int, what: str, lr: float, ckpt_dir: Path) -> ProjectError:
    """Training blew up: stop before a diverged generator or train state is saved over the last good one."""
    return ProjectError(f"training diverged in epoch {epoch} ({what}): try a lower --lr than {lr:g}; nothing from this "
                        f"epoch was saved ({ckpt_dir} keeps its last good checkpoint and train state)")


def train(args, device, ckpt_dir: Path, out_dir: Path) -> dict:
    data = load_digit_images(args.data_dir, args.source, args.offline or args.smoke)
    data = limit_train(data, args.train_images or 0)
    x_train = data["train"][0]
    if len(x_train) < args.batch_size:
        raise ProjectError(f"{len(x_train)} training images, fewer than --batch-size {args.batch_size}")
    config = {"project": PROJECT, "format_version": FORMAT_VERSION, "z_dim": Z_DIM, "width": args.width,
              "source": data["source"], "n_train": len(x_train), "train_images": args.train_images or 0,
              "image_size": 28, "pixel_range": [-1, 1]}
    state_path = ckpt_dir / "train_state.pt"
    if args.resume:  # checked before the judge is trained and saved in ckpt_dir: a refused --resume writes nothing
        if not state_path.is_file():
            raise ProjectError(f"--resume: no {state_path} to resume from (train without --resume first)")
        saved = load_train_state(state_path)
        old = json.loads(saved["config"])
        for key in ("width", "source", "n_train"):
            if old.get(key) != config.get(key):
                raise ProjectError(f"--resume: the checkpoint was trained with {key}={old.get(key)!r}, this run has "
                                   f"{config.get(key)!r}; use a new --ckpt-dir to start afresh")
    clf, clf_acc = get_classifier(ckpt_dir, data, device, args.classifier_epochs)
    n_eval = min(len(data["val"][0]), 500)
    val_feats, _ = judge(clf, data["val"][0][:n_eval], device)
    torch.manual_seed(args.seed)
    gen, disc = Generator(Z_DIM, args.width).to(device), Discriminator(args.width).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.999))
    loader_gen = torch.Generator().manual_seed(args.seed)
    state = {"epoch": 0, "best_fid": math.inf, "best_epoch": 0, "bad_evals": 0, "history": [], "fid_history": []}
    if args.resume:
        gen.load_state_dict(saved["generator"])
        disc.load_state_dict(saved["discriminator"])
        opt_g.load_state_dict(saved["opt_g"])
        opt_d.load_state_dict(saved["opt_d"])
        loader_gen.set_state(saved["loader_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state = json.loads(saved["state"])
        if state["epoch"] >= args.epochs or state["bad_evals"] >= args.patience:
            print(f"--resume: nothing to do, the run already ended at epoch {state['epoch']} (best epoch "
                  f"{state['best_epoch']}); raise --epochs to go on")
            return {"epochs_run": 0, "best_epoch": state["best_epoch"], "best_val_fid": state["best_fid"],
                    "classifier_test_accuracy": clf_acc, "train_time_s": 0.0, "history": state["history"],
                    "fid_history": state["fid_history"], "source": data["source"]}
        print(f"--resume: continuing after epoch {state['epoch']}")
    fixed_z = torch.randn(64, Z_DIM, generator=torch.Generator().manual_seed(args.seed + 1)).to(device)
    real_target = 0.9                                              # one-sided label smoothing: fakes stay at 0
    start, first_epoch = time.perf_counter(), state["epoch"] + 1
    bar = tqdm(range(first_epoch, args.epochs + 1), desc="GAN", unit="epoch", leave=False,
               disable=not sys.stderr.isatty(), file=sys.stderr, dynamic_ncols=True)
    for epoch in bar:
        gen.train()
        d_total = g_total = 0.0
        steps = 0
        for idx in torch.randperm(len(x_train), generator=loader_gen).split(args.batch_size):
            if len(idx) < args.batch_size:
                continue                                            # BatchNorm dislikes ragged last batches
            real = x_train[idx].to(device)
            z = torch.randn(len(idx), Z_DIM, device=device)
            fake = gen(z)
            # D step: real -> 0.9, fake -> 0 (fake detached: this step trains D only); one pass over both halves
            d_real, d_fake = disc(torch.cat([real, fake.detach()])).split(len(idx))
            d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.full_like(d_real, real_target))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # G step, non-saturating: maximise log D(G(z)) instead of minimising log(1 - D(G(z)))
            g_out = disc(fake)
            g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            if not (math.isfinite(d_loss.item()) and math.isfinite(g_loss.item())):
                raise diverged(epoch, f"D {d_loss.item()}, G {g_loss.item()}", args.lr, ckpt_dir)
            d_total, g_total, steps = d_total + d_loss.item(), g_total + g_loss.item(), steps + 1
        state["epoch"] = epoch
        state["history"].append([d_total / steps, g_total / steps])
        line = f"D loss {d_total / steps:.3f}  G loss {g_total / steps:.3f}"
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            fid = score_samples(clf, generate(gen, n_eval, device, args.seed + 2), val_feats, device)["fid"]
            if not math.isfinite(fid):
                raise diverged(epoch, f"Frechet distance {fid}", args.lr, ckpt_dir)
            state["fid_history"].append([epoch, fid])
            line += f"  validation Frechet distance {fid:.2f}"
            if fid < state["best_fid"]:
                state.update(best_fid=fid, best_epoch=epoch, bad_evals=0)
                atomic_write(ckpt_dir / "generator.pt", lambda p: torch.save(gen.state_dict(), p))
                best = {**config, "best_epoch": epoch, "best_val_fid": fid}
                atomic_write(ckpt_dir / "config.json", lambda p, best=best: p.write_text(json.dumps(best, indent=2)))
                line += "  (best, saved)"
            else:
                state["bad_evals"] += 1
            gen.eval()
            with torch.inference_mode():
                grid = gen(fixed_z).float().cpu()
            save_grid(out_dir / f"samples_epoch_{epoch:03d}.png", grid, f"epoch {epoch}: the same 64 latent vectors")
        bar.set_postfix(d=f"{d_total / steps:.3f}", g=f"{g_total / steps:.3f}")
        if bar.disable:
            print(f"  epoch {epoch:>3}/{args.epochs}: {line}")
        atomic_write(state_path, lambda p: torch.save({
            "generator": gen.state_dict(), "discriminator": disc.state_dict(), "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(), "loader_rng": loader_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "state": json.dumps(state), "config": json.dumps(config), "project": PROJECT,
            "format_version": FORMAT_VERSION}, p))
        if state["bad_evals"] >= args.patience:
            print(f"early stopping after epoch {epoch}: the validation Frechet distance has not improved in "
                  f"{args.patience} evaluations")
            break
    bar.close()
    seconds = time.perf_counter() - start
    print(f"trained epochs {first_epoch}-{state['epoch']} in {seconds:.1f} s; best validation Frechet distance "
          f"{state['best_fid']:.2f} at epoch {state['best_epoch']}; sample grids: {out_dir}/samples_epoch_*.png")
    return {"epochs_run": state["epoch"] - first_epoch + 1, "best_epoch": state["best_epoch"],
            "best_val_fid": state["best_fid"], "classifier_test_accuracy": clf_acc, "train_time_s": seconds,
            "history": state["history"], "fid_history": state["fid_history"], "source": data["source"]}


def plot_losses(path: Path, history: list, fid_history: list) -> None:
    h = np.array(history)
    fig = Figure(figsize=(10, 3.5))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    epochs = np.arange(1, len(h) + 1)
    ax1.plot(epochs, h[:, 0], label="discriminator (real->0.9, fake->0)")
    ax1.plot(epochs, h[:, 1], label="generator (non-saturating)")
    ax1.set(title="GAN losses per epoch", xlabel="epoch", ylabel="binary cross-entropy")
    ax1.legend(fontsize=8)
    f = np.array(fid_history)
    ax2.plot(f[:, 0], f[:, 1], marker="o", label="generated vs validation digits")
    ax2.set(title="Frechet distance on the judge's features", xlabel="epoch", ylabel="distance (lower is better)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))


# ------------------------------------------------------------------------------------------------- evaluate


def evaluate(args, device, ckpt_dir: Path, n: int) -> dict:
    config = load_config(ckpt_dir)
    given = getattr(args, "source_given", None)
    if given not in (None, "auto", config["source"]):
        raise ProjectError(f"--source {given}: {ckpt_dir} was trained on {config['source']}, and evaluate scores "
                           f"against that data's test digits; drop --source")
    gen = load_generator(ckpt_dir, config, device)
    data = limit_train(load_digit_images(args.data_dir, config["source"], args.offline or args.smoke),
                       config.get("train_images", 0))
    clf, clf_acc = get_classifier(ckpt_dir, data, device, args.classifier_epochs, any_epochs=True)
    x_test = data["test"][0][:n]                                   # up to n real test digits (the stand-in has 300)
    real_feats, real_probs = judge(clf, x_test, device)
    other_feats, _ = judge(clf, data["train"][0][:len(x_test)], device)
    fake = generate(gen, n, device, args.seed + 3)
    trained = score_samples(clf, fake, real_feats, device)
    torch.manual_seed(args.seed)
    fake_untrained = generate(Generator(config["z_dim"], config["width"]).to(device), n, device, args.seed + 3)
    untrained = score_samples(clf, fake_untrained, real_feats, device)
    # mean ink (pixel value in 0..1, 1 = ink): the first thing a generator learns, and a check that does not need
    # the judge; a generator that never took a step stays about where it started
    ink = {k: float(x.float().cpu().add(1).div(2).mean()) for k, x in
           (("trained", fake), ("untrained", fake_untrained), ("real", x_test))}
    noise = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed + 4)).mul(2).sub(1)
    noisy = score_samples(clf, noise, real_feats, device)            # the crudest baseline: uniform pixel noise
    floor = frechet_distance(real_feats, other_feats)
    real_conf = float(real_probs.max(1).mean())
    print(f"{n} samples against {len(x_test)} real test digits ({config['source']}); the judge's test accuracy "
          f"{clf_acc:.3f}")
    print(f"  {'':<26}{'Frechet distance':>18}{'classes covered':>17}{'mean confidence':>17}")
    print(f"  {'trained generator':<26}{trained['fid']:>18.2f}{trained['coverage']:>14}/10"
          f"{trained['confidence']:>17.3f}")
    print(f"  {'untrained generator':<26}{untrained['fid']:>18.2f}{untrained['coverage']:>14}/10"
          f"{untrained['confidence']:>17.3f}")
    print(f"  {'uniform noise images':<26}{noisy['fid']:>18.2f}{noisy['coverage']:>14}/10{noisy['confidence']:>17.3f}")
    real_cov = int((np.bincount(real_probs.argmax(1), minlength=10) >= 0.02 * len(real_probs)).sum())
    print(f"  {'real digits (train, test)':<26}{floor:>18.2f}{real_cov:>14}/10{real_conf:>17.3f}")
    print(f"  samples per class (trained): {trained['counts'].tolist()}")
    print(f"  mean ink (0 = blank, 1 = all ink): real {ink['real']:.3f}, trained {ink['trained']:.3f} (off by "
          f"{abs(ink['trained'] - ink['real']):.3f}), untrained {ink['untrained']:.3f} (off by "
          f"{abs(ink['untrained'] - ink['real']):.3f})")
    return {"fid": trained["fid"], "fid_untrained": untrained["fid"], "fid_real_vs_real": floor,
            "coverage": trained["coverage"], "coverage_untrained": untrained["coverage"],
            "confidence": trained["confidence"], "confidence_untrained": untrained["confidence"],
            "confidence_real": real_conf, "classifier_test_accuracy": clf_acc, "fid_noise": noisy["fid"],
            "fid_ratio_untrained_over_trained": untrained["fid"] / trained["fid"],
            "ink_gap": abs(ink["trained"] - ink["real"]), "ink_gap_untrained": abs(ink["untrained"] - ink["real"])}


def sample(args, device, ckpt_dir: Path, n: int, output: Path) -> dict:
    config = load_config(ckpt_dir)
    gen = load_generator(ckpt_dir, config, device)
    images = generate(gen, n, device, args.seed)
    save_grid(output, images, f"{n} samples from {ckpt_dir} (seed {args.seed})")
    print(f"{n} samples: {output}")
    return {"samples": n, "mean_ink": float(images.add(1).div(2).mean())}


# ---------------------------------------------------------------------------------------- 2-D mode collapse


RING = {"modes": 8, "radius": 2.0, "std": 0.05}


def ring_data(n: int, gen: torch.Generator) -> torch.Tensor:
    """n points from 8 Gaussians (std 0.05) evenly spaced on a circle of radius 2."""
    k = torch.randint(0, RING["modes"], (n,), generator=gen)
    angle = 2 * math.pi * k / RING["modes"]
    centers = torch.stack([RING["radius"] * torch.cos(angle), RING["radius"] * torch.sin(angle)], 1)
    return centers + RING["std"] * torch.randn(n, 2, generator=gen)


def mlp(inputs: int, hidden: int, outputs: int, layers: int) -> nn.Sequential:
    sizes = [inputs] + [hidden] * layers
    body = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*body, nn.Linear(sizes[-1], outputs))


def ring_gan(pack: int, steps: int, seed: int, device, batch: int = 128, lr: float = 2e-3) -> np.ndarray:
    """A plain GAN on the ring (pack=1) or PacGAN (pack=m: D judges m samples at once, concatenated). Everything else
    is the same: MLPs of 64 units, the non-saturating loss, Adam with lr 2e-3 and betas (0.5, 0.999), no other trick.
    Returns 2,000 generated points."""
    torch.manual_seed(seed)
    gen = mlp(2, 64, 2, 3).to(device)                                 # z (B, 2) -> point (B, 2)
    disc = mlp(2 * pack, 64, 1, 2).to(device)                         # m points (B, 2m) -> one logit
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    data_gen = torch.Generator().manual_seed(seed)
    ones, zeros = torch.ones(batch, 1, device=device), torch.zeros(batch, 1, device=device)
    for _ in range(steps):
        real = ring_data(batch * pack, data_gen).to(device).view(batch, 2 * pack)   # packs of m real points
        fake = gen(torch.randn(batch * pack, 2, device=device)).view(batch, 2 * pack)
        d_loss = (F.binary_cross_entropy_with_logits(disc(real), ones)
                  + F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(disc(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    with torch.inference_mode():
        z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(seed + 1)).to(device)
        return gen(z).cpu().numpy()


def count_modes(points: np.ndarray) -> tuple[int, float]:
    """The ring benchmark's two numbers (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018): a sample is
    high-quality when it lies within 3 standard deviations of a mode's centre; a mode is covered when at least 1% of
    the samples are high-quality samples of it. Returns (modes covered, share of high-quality samples)."""
    angle = 2 * np.pi * np.arange(RING["modes"]) / RING["modes"]
    centers = RING["radius"] * np.stack([np.cos(angle), np.sin(angle)], 1)
    d = np.linalg.norm(points[:, None] - centers[None], axis=2)                  # (N, modes)
    near = d.min(1) < 3 * RING["std"]
    counts = np.bincount(d.argmin(1)[near], minlength=RING["modes"])
    return int((counts >= 0.01 * len(points)).sum()), float(near.mean())


def spread(points: np.ndarray) -> float:
    """The mean standard deviation of the two coordinates: about 1.41 for the ring, small for a collapsed generator."""
    return float(points.std(0).mean())


def ring_demo(args, out_dir: Path) -> dict:
    steps = 200 if args.smoke else args.ring_steps
    real = ring_data(2000, torch.Generator().manual_seed(args.seed)).numpy()
    results, points = {}, {}
    for name, pack in (("plain", 1), ("packed", 2)):
        start = time.process_time()
        # on the CPU whatever --device: layers of 64 units run faster there than a GPU launches kernels, and the
        # counts are then the same on every machine
        pts = ring_gan(pack, steps, args.seed, torch.device("cpu"))
        modes, quality = count_modes(pts)
        results[name] = {"modes": modes, "quality": quality, "spread": spread(pts)}
        points[name] = pts
        label = "plain GAN" if pack == 1 else f"PacGAN, m={pack}"
        print(f"  {label:<14} modes covered {modes}/8, high-quality samples {quality:6.1%}, spread "
              f"{results[name]['spread']:.2f}  ({steps} steps, {time.process_time() - start:.1f} s of CPU time)")
    print(f"  {'real data':<14} modes covered {count_modes(real)[0]}/8, high-quality samples "
          f"{count_modes(real)[1]:6.1%}, spread {spread(real):.2f}")
    fig = Figure(figsize=(9, 4.5))
    for k, name in enumerate(points):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.scatter(real[:, 0], real[:, 1], s=4, alpha=0.3, color="grey", label="real (8 Gaussians)")
        ax.scatter(points[name][:, 0], points[name][:, 1], s=4, alpha=0.5, color=f"C{k}", label="generated")
        r = results[name]
        ax.set_title(f"{'plain GAN' if name == 'plain' else 'PacGAN (D sees 2 samples at once)'}\n{r['modes']}/8 modes "
                     f"covered, {r['quality']:.0%} of samples high-quality", fontsize=10)
        ax.set(xlabel="x1", ylabel="x2", xlim=(-3, 3), ylim=(-3, 3), aspect="equal")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path = out_dir / "ring_modes.png"
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    print(f"  scatter plot: {path}")
    return {f"ring_{key}_{name}": value for name, r in results.items() for key, value in r.items()} | {
        "ring_spread_real": spread(real)}


def ring_verdict(m: dict) -> str:
    """One sentence that follows the counts of this run: collapse and cure are claimed only when measured."""
    p, c = m["ring_modes_plain"], m["ring_modes_packed"]
    few = p <= 3
    clump = m["ring_spread_plain"] < 0.5 * m["ring_spread_real"]
    cured = c >= 5 and c >= p + 3 and m["ring_quality_packed"] > max(2 * m["ring_quality_plain"], 0.1)
    text = (f"- Ring: the plain GAN covered {p}/8 modes ({m['ring_quality_plain']:.0%} high-quality samples, spread "
            f"{m['ring_spread_plain']:.2f} against the data's {m['ring_spread_real']:.2f}); PacGAN covered {c}/8 "
            f"({m['ring_quality_packed']:.0%} high-quality, spread {m['ring_spread_packed']:.2f}).")
    if few and clump:
        text += " The plain GAN collapsed: its samples huddle in one small clump."
    elif few:
        text += " The plain GAN missed most modes (its samples spread out, but off the modes)."
    else:
        return text + " The plain GAN did not collapse in this run."
    if cured:
        return text + " Packing cured it: D sees two samples at once, and two look-alikes give a generator away."
    return text + " Packing did not cure it in this run."


# ----------------------------------------------------------------------------------------------------- demo


def run_demo(args, device) -> dict:
    out = args.out_dir
    section("2-D: mode collapse on a ring of 8 Gaussians, counted (on the CPU)")
    metrics = ring_demo(args, out)
    if args.smoke:
        args.epochs, args.classifier_epochs, args.eval_every = 3, 5, 3
    if args.train_images is None:
        args.train_images = DEMO_TRAIN_IMAGES              # MNIST's 55,000 would take the demo past its 3 minutes
    ckpt = out / "checkpoint"
    section("Digits: train the DCGAN")
    trained = train(args, device, ckpt, out)
    plot_losses(out / "losses.png", trained["history"], trained["fid_history"])
    print(f"loss curves: {out / 'losses.png'}")
    section("Evaluate: the judge scores generated digits against real test digits")
    ev = evaluate(args, device, ckpt, 300 if args.smoke else 1000)
    section("Sample a grid from the checkpoint")
    sm = sample(args, device, ckpt, 64, out / "samples.png")
    metrics.update({f"digits_{k}": v for k, v in ev.items()})
    metrics.update(epochs_run=trained["epochs_run"], best_epoch=trained["best_epoch"],
                   train_time_s=trained["train_time_s"], samples=sm["samples"],
                   data_is_mnist=trained["source"] == "mnist")
    section("What to notice")
    print(ring_verdict(metrics) + (" (--smoke: 200 steps, too few for either GAN to learn the ring; the demo runs "
                                    f"{args.ring_steps})" if args.smoke else ""))
    print(f"- Digits: Frechet distance {ev['fid']:.2f} for the trained generator, {ev['fid_untrained']:.2f} untrained "
          f"({ev['fid_ratio_untrained_over_trained']:.1f}x), {ev['fid_real_vs_real']:.2f} between two sets of real "
          f"digits; {ev['coverage']}/10 digits drawn, mean judge confidence {ev['confidence']:.3f}.")
    print("- The losses do not fall as in supervised training: D and G play a game; the Frechet distance is the "
          "curve that says whether the samples got better.")
    section("Your own run: the same three steps")
    me = "python 10-projects/project_simple_gan.py"
    print(f"{me} train    --ckpt-dir ckpt --epochs 60       # MNIST from --data-dir when it is there")
    print(f"{me} evaluate --ckpt-dir ckpt")
    print(f"{me} sample   --ckpt-dir ckpt --n 64 --output samples.png")
    return metrics


# -------------------------------------------------------------------------------------------------- the CLI


def add_common(parser: argparse.ArgumentParser, sub: bool) -> None:
    """The common flags, on the main parser and (without defaults) after each subcommand too."""
    d = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)
    parser.add_argument("--device", default=d("auto"), choices=["auto", "cpu", "cuda", "mps"],
                        help="where to train; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=d(0), help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", default=d(False),
                        help="the demo in tiny form: a few seconds on a CPU, never the network")
    parser.add_argument("--offline", action="store_true", default=d(False), help="never try to download MNIST")
    parser.add_argument("--out-dir", type=Path, default=d(Path("outputs/10-projects/project_simple_gan")),
                        help="where metrics.json, plots, sample grids and the default checkpoint go")
    parser.add_argument("--data-dir", type=Path, default=d(Path("data")), help="where MNIST is looked for")
    parser.add_argument("--threads", type=positive_int, default=d(1),
                        help="CPU threads for torch. These nets are small: a second thread gains little, and on a busy "
                             "machine it made training steps 5-7x slower (measured); raise it on an idle many-core CPU")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


DEMO_TRAIN_IMAGES = 6000
MIN_EVAL_N = 50
TRAIN_DEFAULTS = {"epochs": 60, "patience": 4, "batch_size": 64, "lr": 5e-4, "width": 16, "eval_every": 5,
                  "classifier_epochs": 15, "source": "auto", "resume": False, "ring_steps": 1500,
                  "train_images": None}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common(parser, sub=False)
    subs = parser.add_subparsers(dest="command", metavar="{train,evaluate,sample}",
                                 help="with no command: the whole demo")
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p_train = subs.add_parser("train", help="train the DCGAN, keep the best generator", formatter_class=fmt)
    p_eval = subs.add_parser("evaluate", help="coverage, confidence and Frechet distance", formatter_class=fmt)
    p_sample = subs.add_parser("sample", help="write a grid of samples from a checkpoint", formatter_class=fmt)
    for p in (p_train, p_eval, p_sample):
        add_common(p, sub=True)
        p.add_argument("--ckpt-dir", type=Path, default=None, help="checkpoint folder (default <out-dir>/checkpoint)")
    p_eval.add_argument("--n", type=positive_int, default=1000,
                        help=f"samples scored, against as many real test digits (or all there are, if fewer); at "
                             f"least {MIN_EVAL_N}")
    p_sample.add_argument("--n", type=positive_int, default=64, help="samples in the grid")
    p_sample.add_argument("--output", type=Path, default=None, help="PNG file (default <out-dir>/samples.png)")
    p_train.add_argument("--resume", action="store_true", help="continue the run saved in --ckpt-dir")
    for p in (p_train, p_eval):
        dd = (lambda v: argparse.SUPPRESS)
        p.add_argument("--source", choices=["auto", "mnist", "digits"], default=dd("auto"),
                       help="auto: MNIST when available, else scikit-learn's digits")
        p.add_argument("--classifier-epochs", type=positive_int, default=dd(TRAIN_DEFAULTS["classifier_epochs"]),
                       help="epochs for the judge")
    for p in (parser, p_train):
        dd = (lambda v: argparse.SUPPRESS) if p is p_train else (lambda v: v)
        p.add_argument("--epochs", type=positive_int, default=dd(60),
                       help="most epochs (early stopping may end sooner)")
        p.add_argument("--patience", type=positive_int, default=dd(4),
                       help="evaluations without a better Frechet distance before stopping")
        p.add_argument("--eval-every", type=positive_int, default=dd(5), help="epochs between Frechet evaluations")
        p.add_argument("--batch-size", type=positive_int, default=dd(64), help="images per batch")
        p.add_argument("--lr", type=float, default=dd(5e-4), help="Adam learning rate for G and D")
        p.add_argument("--width", type=positive_int, default=dd(16),
                       help="channels of G's last hidden layer and D's first (the other is twice that)")
        p.add_argument("--train-images", type=positive_int, default=dd(None),
                       help=f"use at most this many training images (default: all for train, {DEMO_TRAIN_IMAGES} "
                            "for the demo)")
    parser.add_argument("--ring-steps", type=positive_int, default=1500,
                        help="training steps of each 2-D GAN (plain and PacGAN)")
    args = parser.parse_args(argv)
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
    args.source_given = getattr(args, "source", None)      # evaluate refuses a --source other than the checkpoint's
    for key, value in TRAIN_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if args.train_images is not None and args.train_images < args.batch_size:
        parser.error(f"--train-images {args.train_images} is below --batch-size {args.batch_size}")
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.batch_size < 2:
        parser.error("--batch-size must be at least 2 (BatchNorm needs a batch)")
    if args.command == "evaluate" and args.n < MIN_EVAL_N:
        parser.error(f"--n {args.n}: a Frechet distance needs the mean and covariance of many samples; use at least "
                     f"{MIN_EVAL_N}")
    if args.command == "sample" and args.output is not None and args.output.is_dir():
        parser.error(f"--output {args.output} is a folder; give a file name such as {args.output / 'samples.png'}")
    return args


def print_next_commands(args, ckpt_dir: Path) -> None:
    """After `train`: evaluate and sample with this run's --ckpt-dir (and --data-dir: evaluate scores against the
    same data's test digits), ready to paste."""
    script = Path(__file__).resolve()
    try:
        script = script.relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    me, q = f"python {shlex.quote(str(script))}", lambda p: shlex.quote(str(p))
    offline = " --offline" if args.offline or args.smoke else ""
    print("\nnext: the judge's scores on the test digits, then a grid of samples:")
    print(f"  {me} evaluate --ckpt-dir {q(ckpt_dir)} --data-dir {q(args.data_dir)}{offline}")
    print(f"  {me} sample --ckpt-dir {q(ckpt_dir)} --n 64 --output {q(args.out_dir / 'samples.png')}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.device)
    seed_everything(args.seed)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    print(f"{PROJECT}: device {device}, seed {args.seed}{', smoke' if args.smoke else ''}, torch {torch.__version__}"
          f"{f', {args.threads} CPU thread(s)' if device.type == 'cpu' else ''}")
    try:
        ckpt_dir = getattr(args, "ckpt_dir", None) or args.out_dir / "checkpoint"
        if args.command is None:
            metrics = run_demo(args, device)
        elif args.command == "train":
            r = train(args, device, ckpt_dir, args.out_dir)
            plot_losses(args.out_dir / "losses.png", r["history"], r["fid_history"] or [[0, float("nan")]])
            print(f"loss curves: {args.out_dir / 'losses.png'}")
            metrics = {k: v for k, v in r.items() if k not in ("history", "fid_history", "source")}
            print_next_commands(args, ckpt_dir)
        elif args.command == "evaluate":
            metrics = evaluate(args, device, ckpt_dir, args.n)
        else:
            metrics = sample(args, device, ckpt_dir, args.n, args.output or args.out_dir / "samples.png")
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        torch.set_num_threads(threads)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "command": args.command or "demo", "wall_time_s": time.perf_counter() - start}
    atomic_write(args.out_dir / "metrics.json", lambda p: p.write_text(json.dumps(record, indent=2)))
    print(f"\nmetrics: {args.out_dir / 'metrics.json'}  ({record['wall_time_s']:.1f} s)")
    return metrics


if __name__ == "__main__":
    main()

"""10-projects/project_simple_gan.py: the Frechet distance and mode counting checked against references, the demo,
train / evaluate / sample as a learner runs them, resume, bad checkpoints."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from harness import REPO, load_script, run_subprocess

pytestmark = pytest.mark.smoke

PROJECT = "10-projects/project_simple_gan.py"


@pytest.fixture(scope="module")
def project():
    return load_script(REPO / PROJECT)


def test_frechet_distance_matches_scipy(project):
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) * 0.5 + 1.0
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert project.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert project.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    assert project.frechet_distance(a, a + 2.0) == pytest.approx(6 * 4.0, rel=1e-6), "a shift adds ||d||^2"


def test_count_modes(project):
    rng = np.random.default_rng(0)
    angle = 2 * np.pi * np.array([0, 1, 5]) / 8
    centers = 2 * np.stack([np.cos(angle), np.sin(angle)], 1)
    pts = centers[rng.integers(0, 3, 600)] + rng.normal(0, 0.05, (600, 2))
    pts = np.concatenate([pts, rng.normal(0, 0.3, (400, 2))])          # 40% off the ring
    modes, quality = project.count_modes(pts)
    assert modes == 3
    assert quality == pytest.approx(0.6, abs=0.03)
    one_clump = centers[0] + rng.normal(0, 0.05, (1000, 2))
    assert project.count_modes(one_clump) == (1, pytest.approx(0.99, abs=0.01)), "a collapsed generator: one mode"
    assert project.spread(one_clump) < 0.1 and project.spread(pts) > 0.3, "a clump has no spread; three modes do"


def test_ring_verdict_follows_the_counts(project):
    base = {"ring_spread_real": 1.41, "ring_spread_packed": 1.4}
    collapse = project.ring_verdict({**base, "ring_modes_plain": 1, "ring_quality_plain": 0.02,
                                     "ring_spread_plain": 0.2, "ring_modes_packed": 8, "ring_quality_packed": 0.5})
    assert "collapsed" in collapse and "Packing cured it" in collapse
    no_collapse = project.ring_verdict({**base, "ring_modes_plain": 8, "ring_quality_plain": 0.5,
                                        "ring_spread_plain": 1.4, "ring_modes_packed": 8, "ring_quality_packed": 0.5})
    assert "did not collapse" in no_collapse and "cure" not in no_collapse


def test_judge_runs_on_mps_which_has_no_float64():
    """`--device auto` picks MPS on a Mac, and `.double()` on an MPS tensor raises: the judge's float64 statistics
    must be made on the CPU. Checked under tests/tools/fakecuda.py's MPS stand-in, which refuses float64 as MPS does."""
    code = f"""import sys
sys.path[:0] = [{str(REPO / "tests" / "tools")!r}, {str(REPO / "tests")!r}]
import fakecuda
fakecuda.install("mps")
import torch
from harness import REPO, load_script
project = load_script(REPO / {PROJECT!r})
mps = torch.device("mps")
clf = project.DigitClassifier().to(mps).eval()
feats, probs = project.judge(clf, torch.rand(5, 1, 28, 28), mps)
print(feats.dtype, feats.shape, probs.dtype, probs.shape, round(float(probs.sum()), 6))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["float64", "(5,", "64)", "float64", "(5,", "10)", "5.0"]


def test_demo_smoke(run_lesson):
    m = run_lesson(PROJECT)
    assert not m["data_is_mnist"], "--smoke never downloads: scikit-learn's digits"
    assert m["digits_classifier_test_accuracy"] > 0.8, "the judge must recognise real digits"
    assert m["digits_confidence_real"] > 0.7
    assert m["digits_fid_real_vs_real"] < m["digits_fid_untrained"] / 10, "real digits are close to real digits"
    assert m["digits_coverage_untrained"] <= 3, "an untrained generator draws noise the judge files under few digits"
    # the generator was trained: its ink moved toward real digits' (gaps 0.18-0.20 against 0.42 untrained over seeds
    # 0-2; a train() whose generator never steps stays at 0.45-0.49, and its FID is no help at this size)
    assert m["digits_ink_gap"] < m["digits_ink_gap_untrained"] - 0.1, "training must move the generator"
    assert m["samples"] == 64
    assert m["ring_spread_real"] == pytest.approx(1.41, abs=0.03), "the ring's own spread, measured"


@pytest.mark.default_run
def test_default_demo_meets_the_bars(run_lesson):
    """The full default demo (offline: scikit-learn's digits). The bars: the 2-D plain GAN collapses and PacGAN cures
    it; the DCGAN draws all ten digits, the judge is confident about them, and their Frechet distance is far below an
    untrained generator's."""
    m = run_lesson(PROJECT, smoke=False)
    assert m["ring_modes_plain"] <= 2 and m["ring_spread_plain"] < 0.5 * m["ring_spread_real"], "plain GAN collapses"
    assert m["ring_modes_packed"] >= 7 and m["ring_quality_packed"] > 0.3, "PacGAN covers the ring"
    assert m["digits_classifier_test_accuracy"] > 0.95, "a judge that recognises real digits"
    assert m["digits_coverage"] == 10, "all ten digits drawn"
    assert m["digits_confidence"] > 0.7 > 0.4 > m["digits_confidence_untrained"]
    assert m["digits_fid"] < m["digits_fid_untrained"] / 8, "far below an untrained generator"
    assert m["digits_fid"] < 6 * m["digits_fid_real_vs_real"] + 20


def run_cli(tmp_path, *args):
    return run_subprocess(PROJECT, ["--device", "cpu", "--offline", *map(str, args)], tmp_path)


def test_train_evaluate_sample_as_a_learner(tmp_path):
    ckpt = tmp_path / "ckpt"
    done = run_cli(tmp_path, "train", "--ckpt-dir", ckpt, "--epochs", 2, "--eval-every", 1, "--classifier-epochs", 2,
                   "--width", 16, "--out-dir", tmp_path / "tr")
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((ckpt / "config.json").read_text())
    assert config["project"] == "project_simple_gan" and config["source"] == "digits" and config["width"] == 16
    assert (ckpt / "classifier.pt").is_file(), "the judge is cached beside the generator"
    assert (tmp_path / "tr" / "samples_epoch_002.png").stat().st_size > 5_000
    assert (tmp_path / "tr" / "losses.png").stat().st_size > 10_000

    done = run_cli(tmp_path, "evaluate", "--ckpt-dir", ckpt, "--n", 200, "--out-dir", tmp_path / "ev")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cached classifier" in done.stdout, "evaluate reuses the judge trained with the generator"
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert m["fid_real_vs_real"] < m["fid_untrained"] / 10
    assert m["classifier_test_accuracy"] > 0.5

    out = tmp_path / "grid.png"
    done = run_cli(tmp_path, "sample", "--ckpt-dir", ckpt, "--n", 16, "--output", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.stat().st_size > 3_000


def test_resume_continues_and_then_has_nothing_to_do(tmp_path, project):
    common = ["--device", "cpu", "--offline", "--out-dir", str(tmp_path / "o")]
    train = ["train", "--ckpt-dir", str(tmp_path / "ck"), "--width", "8", "--classifier-epochs", "1", "--patience",
             "50", "--eval-every", "1"]
    assert project.main(common + train + ["--epochs", "1"])["epochs_run"] == 1
    assert project.main(common + train + ["--epochs", "2", "--resume"])["epochs_run"] == 1, "resume goes on at 2"
    assert project.main(common + train + ["--epochs", "2", "--resume"])["epochs_run"] == 0, "nothing left to do"


def test_bad_checkpoints_get_one_line_and_write_nothing(tmp_path, project, capsys):
    def fails(*args) -> str:
        with pytest.raises(SystemExit) as info:
            project.main(["--device", "cpu", "--offline", "--out-dir", str(tmp_path / "o"), *map(str, args)])
        assert info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error: "), f"one line, no traceback: {err!r}"
        return err

    out = tmp_path / "grid.png"
    assert "run `train` first" in fails("sample", "--ckpt-dir", tmp_path / "nothing", "--output", out)
    ckpt = tmp_path / "ck"
    project.main(["--device", "cpu", "--offline", "--out-dir", str(tmp_path / "o"), "train", "--ckpt-dir",
                  str(ckpt), "--epochs", "1", "--width", "8", "--classifier-epochs", "1"])
    config = json.loads((ckpt / "config.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**config, "project": "project_time_series"}))
    assert "project_time_series" in fails("sample", "--ckpt-dir", other, "--output", out)
    weights = (ckpt / "generator.pt").read_bytes()
    (ckpt / "generator.pt").write_bytes(weights[: len(weights) // 2])
    assert "cannot be loaded" in fails("sample", "--ckpt-dir", ckpt, "--output", out)
    (ckpt / "generator.pt").write_bytes(weights)
    judge = ckpt / "classifier.pt"
    judge.write_bytes(judge.read_bytes()[:-8] + bytes(8))                 # a damaged cached judge: its sha256 differs
    capsys.readouterr()
    project.main(["--device", "cpu", "--offline", "--out-dir", str(tmp_path / "o"), "evaluate", "--ckpt-dir",
                  str(ckpt), "--n", "50"])
    assert "training a new one" in capsys.readouterr().out, "a cached judge is used only when its hash checks out"
    (ckpt / "config.json").write_text(json.dumps({**config, "width": 16}))
    assert "cannot be loaded" in fails("sample", "--ckpt-dir", ckpt, "--output", out), "a width mismatch"
    assert "MNIST is not in" in fails("train", "--source", "mnist", "--data-dir", tmp_path / "empty",
                                      "--ckpt-dir", tmp_path / "ck2")
    assert not out.exists(), "a failed sample writes no grid"


def test_train_state_config_divergence_and_flags_get_one_line(tmp_path, project, capsys, monkeypatch):
    import torch

    def fails(*args, code=1) -> str:
        with pytest.raises(SystemExit) as info:
            project.main(["--device", "cpu", "--offline", "--out-dir", str(tmp_path / "o"), *map(str, args)])
        assert info.value.code == code
        err = capsys.readouterr().err.strip()
        if code == 1:
            assert err.count("\n") == 0 and err.startswith("error: "), f"one line, no traceback: {err!r}"
        return err

    ckpt = tmp_path / "ck"
    train = ["train", "--ckpt-dir", ckpt, "--width", 8, "--classifier-epochs", 1, "--eval-every", 1]
    project.main(["--device", "cpu", "--offline", "--out-dir", str(tmp_path / "o"), *map(str, train), "--epochs", "1"])
    umask = os.umask(0)
    os.umask(umask)
    assert (ckpt / "generator.pt").stat().st_mode & 0o777 == 0o666 & ~umask, "saved files get the usual permissions"
    weights, state = (ckpt / "generator.pt").read_bytes(), (ckpt / "train_state.pt").read_bytes()
    with monkeypatch.context() as mp:                 # a run whose Frechet distance turns NaN: it diverged
        mp.setattr(project, "frechet_distance", lambda a, b: float("nan"))
        assert "diverged" in fails(*train, "--epochs", 2, "--resume")
    assert (ckpt / "generator.pt").read_bytes() == weights and (ckpt / "train_state.pt").read_bytes() == state
    for foreign in ({"config": {}, "epoch": 3}, "a string", {"project": "project_sentiment_analysis"}):
        torch.save(foreign, ckpt / "train_state.pt")
        assert "not a train state of project_simple_gan" in fails(*train, "--epochs", 2, "--resume")
    (ckpt / "train_state.pt").write_bytes(weights)   # the generator's weights copied over the train state
    assert "not a train state" in fails(*train, "--epochs", 2, "--resume")
    fresh = tmp_path / "fresh"  # a refused --resume writes nothing: the judge used to be trained and saved first
    assert "to resume from" in fails("train", "--ckpt-dir", fresh, "--width", 8, "--classifier-epochs", 1, "--resume")
    assert not fresh.exists() or not any(fresh.iterdir()), sorted(fresh.iterdir())

    assert "drop --source" in fails("evaluate", "--ckpt-dir", ckpt, "--source", "mnist", "--n", 50)
    assert "at least 50" in fails("evaluate", "--ckpt-dir", ckpt, "--n", 1, code=2)
    assert "is a folder" in fails("sample", "--ckpt-dir", ckpt, "--output", ckpt, code=2)
    config = json.loads((ckpt / "config.json").read_text())
    out = tmp_path / "grid.png"
    for bad, why in (([], "JSON list"), ({"project": "project_simple_gan", "format_version": 1}, "lacks"),
                     ({**config, "format_version": 99}, "format 99"), ({**config, "width": "8"}, "width")):
        (ckpt / "config.json").write_text(json.dumps(bad))
        assert why in fails("sample", "--ckpt-dir", ckpt, "--output", out)
    assert not out.exists()


def write_mnist_gz(raw, project, n_train=300, n_test=60):
    """MNIST's four official .gz files, in MNIST's idx format (big-endian header, then uint8 pixels or labels), holding
    scikit-learn's real digits upscaled to 28x28: a small MNIST, as a learner downloads it by hand. Returns the
    train and test labels."""
    import gzip
    import struct

    import torch
    import torch.nn.functional as F

    images, labels = project.real_digits()
    x = F.interpolate(images[:, None] / 16, size=(28, 28), mode="bilinear").squeeze(1).mul(255).round().byte()
    raw.mkdir(parents=True, exist_ok=True)
    for name, lo, hi in (("train", 0, n_train), ("t10k", n_train, n_train + n_test)):
        pixels = x[lo:hi].numpy().tobytes()
        (raw / f"{name}-images-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">IIII", 0x803, hi - lo, 28, 28)
                                                                         + pixels))
        (raw / f"{name}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">II", 0x801, hi - lo)
                                                                         + labels[lo:hi].byte().numpy().tobytes()))
    return torch.as_tensor(labels[:n_train]), torch.as_tensor(labels[n_train:n_train + n_test])


def test_mnist_gz_files_are_unpacked_and_used_offline(tmp_path, project, capsys):
    """MNIST's four .gz files in <data-dir>/MNIST/raw: torchvision unpacks them only when it downloads them; this
    project unpacks them itself, so that they are used offline too. Files that are not MNIST: one line."""
    import gzip
    import shlex

    raw = tmp_path / "data" / "MNIST" / "raw"
    train_labels, test_labels = write_mnist_gz(raw, project)
    common = ["--device", "cpu", "--offline", "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "o")]
    project.main([*common, "train", "--ckpt-dir", str(tmp_path / "ck"), "--epochs", "1", "--width", "8",
                  "--classifier-epochs", "1", "--batch-size", "32"])
    out = capsys.readouterr().out
    assert "data: MNIST from" in out and "270 train, 30 validation, 60 test" in out, out[:600]
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["source"] == "mnist"
    assert all((raw / name).is_file() for name in project.MNIST_FILES), "unpacked beside the .gz files"
    data = project.load_digit_images(tmp_path / "data", "auto", offline=True)
    assert sorted(data["train"][1].tolist() + data["val"][1].tolist()) == sorted(train_labels.tolist())
    assert data["test"][1].tolist() == test_labels.tolist(), "the digits written, in order"
    printed = [shlex.split(x.split(".py ", 1)[1]) for x in out.splitlines() if x.startswith("  python ")]
    assert [c[0] for c in printed] == ["evaluate", "sample"], "train prints the next commands for its run"
    assert project.main(["--device", "cpu", "--out-dir", str(tmp_path / "ev"), *printed[0], "--n", "60"])["fid"] > 0

    def fails(*args) -> str:
        with pytest.raises(SystemExit) as info:
            project.main([*common, "train", "--ckpt-dir", str(tmp_path / "ck2"), "--epochs", "1", *args])
        assert info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error: "), f"one line, no traceback: {err!r}"
        return err

    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"x\n"))  # a newer .gz beside a valid unpacked
    os.utime(raw / "t10k-labels-idx1-ubyte", (1, 1))                          # file (a copy, a read-only mount): the
    data = project.load_digit_images(tmp_path / "data", "auto", offline=True)  # unpacked file is read as it is
    assert data["test"][1].tolist() == test_labels.tolist(), "a valid unpacked file is used, not unpacked again"
    (raw / "t10k-labels-idx1-ubyte").unlink()                               # only the placeholder .gz: refused
    err = fails()
    assert "t10k-labels-idx1-ubyte.gz unpacks to no MNIST file" in err and "download it again" in err, err
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(100))[:20])
    assert "not a complete gzip file" in fails("--source", "mnist"), "unpacked again: the unpacked file is no MNIST"
    gz = gzip.compress(b"\x00\x00\x08\x01" + (60).to_bytes(4, "big") + test_labels.byte().numpy().tobytes())
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gz)                     # the right file, copied with an old
    os.utime(raw / "t10k-labels-idx1-ubyte.gz", (1, 1))                     # date (cp -p): still unpacked again
    data = project.load_digit_images(tmp_path / "data", "auto", offline=True)
    assert data["test"][1].tolist() == test_labels.tolist()


def test_an_mnist_set_too_small_to_validate_is_refused(tmp_path, project, capsys):
    """15 training digits keep 1 for validation, where the Frechet distance (NaN on one image) decides what is kept:
    one line saying the set is too small, not a 'diverged' blamed on the learning rate."""
    write_mnist_gz(tmp_path / "data" / "MNIST" / "raw", project, n_train=15, n_test=20)
    with pytest.raises(SystemExit) as info:
        project.main(["--device", "cpu", "--offline", "--data-dir", str(tmp_path / "data"), "--out-dir",
                      str(tmp_path / "o"), "train", "--ckpt-dir", str(tmp_path / "ck"), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and err.count("\n") == 0, err
    assert "15 training digits: too few" in err and not (tmp_path / "ck").exists(), err

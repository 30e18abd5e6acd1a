"""10-projects/project_image_classifier.py: the demo, the three subcommands as a learner runs them, the stratified
split, resume, the stand-in cache check, ONNX export, bad inputs."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import REPO, check_foreign_train_states, check_odd_image_formats, load_script, run_subprocess

pytestmark = pytest.mark.smoke

PROJECT = "10-projects/project_image_classifier.py"
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


def write_image_folder(root, per_class=(12, 8, 5), side=32, seed=0, first=0):
    """root/<colour>/<n>.png (n from `first`): noisy images whose dominant colour is the class (learnable in a few
    steps)."""
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(seed)
    for (name, rgb), n in zip(COLOURS.items(), per_class):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) + 50 * torch.randn(3, side, side, generator=g)
            write_png(img.clamp(0, 255).to(torch.uint8), str(folder / f"{first + i:03d}.png"))
    return root


@pytest.fixture(scope="module")
def project():
    return load_script(REPO / PROJECT)


def test_demo_smoke(run_lesson):
    m = run_lesson(PROJECT)
    assert m["used_pretrained_weights"] == 0, "--smoke never downloads: the stand-in backbone is used"
    assert m["test_images"] >= 12 and m["chance_accuracy"] == 0.25
    assert m["test_accuracy"] >= 0.5, "crops of four different photos: far above the 25% of chance"
    assert m["test_balanced_accuracy"] >= 0.4
    assert m["sklearn_max_diff"] < 1e-9, "per-class precision/recall/F1 must agree with scikit-learn"
    assert m["predicted_images"] == 4


@pytest.mark.subprocess
def test_demo_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(PROJECT)
    assert m["test_accuracy"] >= 2 * m["chance_accuracy"], "the demo from another folder learns as in-process"


def test_stratified_split_is_disjoint_deterministic_and_keeps_every_class(tmp_path, project):
    root = write_image_folder(tmp_path / "d", per_class=(20, 10, 4))
    a = project.find_splits(root, 0.15, 0.15, seed=3)
    b = project.find_splits(root, 0.15, 0.15, seed=3)
    assert a == b, "same seed, same split"
    files = {s: {p for p, _ in a[s]} for s in ("train", "val", "test")}
    assert not (files["train"] & files["val"] or files["train"] & files["test"] or files["val"] & files["test"])
    assert sum(map(len, files.values())) == 34
    for s in ("val", "test"):
        assert sorted({y for _, y in a[s]}) == [0, 1, 2], f"every class has images in {s}"
    assert [y for _, y in a["test"]].count(2) == 3, "red: 20 images x 0.15 -> 3 in the test split"
    assert a["classes"] == ["blue", "green", "red"]
    c = project.find_splits(root, 0.15, 0.15, seed=4)
    assert {p for p, _ in c["test"]} != files["test"], "another seed, another split"


def test_explicit_split_folders_are_used(tmp_path, project):
    write_image_folder(tmp_path / "d" / "train", per_class=(6, 6, 6))
    write_image_folder(tmp_path / "d" / "test", per_class=(2, 2, 2), seed=1)
    s = project.find_splits(tmp_path / "d", 0.15, 0.15, seed=0)
    assert len(s["test"]) == 6 and all("/test/" in str(p) for p, _ in s["test"])
    assert len(s["val"]) == 3 and len(s["train"]) == 15, "val carved from train/, one per class"


def run_cli(tmp_path, *args):
    return run_subprocess(PROJECT, ["--device", "cpu", *map(str, args)], tmp_path)


def test_train_evaluate_predict_as_a_learner(tmp_path):
    data = write_image_folder(tmp_path / "colours", per_class=(16, 12, 8))
    ckpt = tmp_path / "ckpt"
    done = run_cli(tmp_path, "train", "--data", data, "--epochs", 10, "--image-size", 32, "--ckpt-dir", ckpt,
                   "--smoke", "--data-dir", tmp_path / "cache")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "offline stand-in" in done.stdout, "one line says which backbone weights were used"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["project"] == "project_image_classifier" and config["classes"] == ["blue", "green", "red"]
    assert config["weights"] == "standin" and config["crop_size"] == 32
    assert (ckpt / "train_state.pt").is_file()

    done = run_cli(tmp_path, "evaluate", "--data", data, "--ckpt-dir", ckpt, "--out-dir", tmp_path / "ev")
    assert done.returncode == 0, done.stderr[-2000:]
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    carved = sum(max(round(0.15 * n), 1) for n in (16, 12, 8))  # 2 + 2 + 1
    assert m["images"] == carved == 5, "the test split the training run carved (15% of 16, 12, 8, rounded per class)"
    assert m["accuracy"] >= 5 / 6, "colours are easy: the test images must be classified"
    assert (tmp_path / "ev" / "confusion_matrix.png").stat().st_size > 5_000
    assert (tmp_path / "ev" / "worst_mistakes.png").is_file()

    out = tmp_path / "preds.csv"
    done = run_cli(tmp_path, "predict", "--images", data / "red" / "000.png", data / "blue" / "001.png",
                   "--ckpt-dir", ckpt, "--output", out, "--top-k", 2)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert [r["top1"] for r in rows] == ["red", "blue"]
    assert list(rows[0]) == ["file", "top1", "top2", "p1", "p2"]
    assert all(1 >= float(r["p1"]) >= float(r["p2"]) >= 0 for r in rows)
    out_json = tmp_path / "preds.json"
    done = run_cli(tmp_path, "predict", "--images", data / "green", "--ckpt-dir", ckpt, "--output", out_json)
    assert done.returncode == 0, done.stderr[-2000:]
    preds = json.loads(out_json.read_text())
    assert len(preds) == 12 and sum(p["top1"] == "green" for p in preds) >= 10


def train_args(tmp_path, data, *extra):
    return ["--device", "cpu", "--out-dir", str(tmp_path / "o"), "--data-dir", str(tmp_path / "cache"), "train",
            "--data", str(data), "--image-size", "32", "--smoke", "--patience", "50", "--ckpt-dir",
            str(tmp_path / "ck"), *extra]


def test_resume_continues_and_then_has_nothing_to_do(tmp_path, project):
    data = write_image_folder(tmp_path / "d", per_class=(8, 8, 8))
    assert project.main(train_args(tmp_path, data, "--epochs", "1"))["epochs_run"] == 1
    assert project.main(train_args(tmp_path, data, "--epochs", "2", "--resume"))["epochs_run"] == 1
    assert project.main(train_args(tmp_path, data, "--epochs", "2", "--resume"))["epochs_run"] == 0


def test_standin_cache_is_hash_checked_and_recreated(tmp_path, project, capsys):
    import argparse

    args = argparse.Namespace(smoke=True, seed=0, data_dir=tmp_path)
    first = project.standin_backbone("resnet18", args, 32, torch.device("cpu"))
    cache = next((tmp_path / "standins").glob("*.pt"))
    assert "cached it at" in capsys.readouterr().out
    project.standin_backbone("resnet18", args, 32, torch.device("cpu"))
    assert "SHA-256 checked" in capsys.readouterr().out, "the second run loads the cache"
    cache.write_bytes(cache.read_bytes()[:1000])
    again = project.standin_backbone("resnet18", args, 32, torch.device("cpu"))
    assert "damaged" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values())), \
        "re-created with the same seed: the same weights"


def test_onnx_export_after_train_or_with_evaluate_and_the_next_commands(tmp_path, project, capsys):
    """--export-onnx, which the top-level --help lists, works after train and with evaluate; train prints the
    evaluate and predict commands for this run, and they run as printed."""
    import shlex

    data = write_image_folder(tmp_path / "d", per_class=(6, 6, 6))
    m = project.main(train_args(tmp_path, data, "--epochs", "1", "--model", "mobilenet_v3_small", "--export-onnx"))
    assert m["onnx_max_abs_diff"] <= 1e-4 and (tmp_path / "ck" / "model.onnx").stat().st_size > 100_000
    out = capsys.readouterr().out
    lines = {line.split(".py ", 1)[1].split()[0]: shlex.split(line.split(".py ", 1)[1])
             for line in out.splitlines() if line.startswith("  python ")}
    assert list(lines) == ["evaluate", "predict"], out[-600:]
    (tmp_path / "ck" / "model.onnx").unlink()
    m = project.main(["--device", "cpu", "--out-dir", str(tmp_path / "ev"), *lines["evaluate"], "--export-onnx"])
    assert m["onnx_max_abs_diff"] <= 1e-4 and (tmp_path / "ck" / "model.onnx").stat().st_size > 100_000
    assert m["images"] == 3, "the printed evaluate command finds the test split the training run held out"
    assert project.main(["--device", "cpu", "--out-dir", str(tmp_path / "pr"), *lines["predict"]])["images"] == 1


@pytest.fixture
def fails(tmp_path, capsys, project):
    def run(*args) -> str:
        with pytest.raises(SystemExit) as info:
            project.main(["--device", "cpu", "--out-dir", str(tmp_path / "o"), "--data-dir", str(tmp_path / "cache"),
                          *map(str, args)])
        assert info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error: "), f"one line, no traceback: {err!r}"
        return err

    return run


def test_bad_data_gets_one_line(tmp_path, fails):
    assert "no such dataset folder" in fails("train", "--data", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "no class folders" in fails("train", "--data", tmp_path / "empty")
    write_image_folder(tmp_path / "one", per_class=(5,))
    assert "at least two" in fails("train", "--data", tmp_path / "one")
    data = tmp_path / "bad"
    write_image_folder(data / "train", per_class=(6, 6, 6))
    write_image_folder(data / "test", per_class=(2, 2, 2))
    broken = data / "train" / "red" / "999.jpg"                  # train/ or the val split carved from it
    broken.write_bytes(b"this is not a JPEG")
    err = fails("train", "--data", data, "--smoke", "--epochs", "1", "--image-size", "32", "--ckpt-dir",
                tmp_path / "ck")
    assert "cannot read image" in err and str(broken) in err, "the unreadable file is named"
    assert not (tmp_path / "ck" / "model.pt").exists(), "nothing written half"


def test_bad_checkpoints_get_one_line_and_write_nothing(tmp_path, fails, project):
    data = write_image_folder(tmp_path / "d", per_class=(6, 6, 6))
    project.main(train_args(tmp_path, data, "--epochs", "1"))
    ckpt, out = tmp_path / "ck", tmp_path / "preds.csv"
    image = data / "red" / "000.png"
    assert "run `train` first" in fails("predict", "--images", image, "--ckpt-dir", tmp_path / "nothing")
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((ckpt / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "project": "project_time_series"}))
    assert "project_time_series" in fails("predict", "--images", image, "--ckpt-dir", other, "--output", out)
    weights = (ckpt / "model.pt").read_bytes()
    (ckpt / "model.pt").write_bytes(weights[: len(weights) // 2])
    assert "is damaged or not a PyTorch checkpoint" in fails("predict", "--images", image, "--ckpt-dir", ckpt,
                                                              "--output", out)
    (ckpt / "model.pt").write_bytes(weights)
    assert "no such image" in fails("predict", "--images", tmp_path / "nope.jpg", "--ckpt-dir", ckpt, "--output", out)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    assert "broken.png" in fails("predict", "--images", tmp_path / "broken.png", "--ckpt-dir", ckpt, "--output", out)
    assert not out.exists(), "a failed predict writes no predictions file"
    write_image_folder(tmp_path / "more", per_class=(4, 4, 4))
    (tmp_path / "more" / "purple").mkdir()
    (tmp_path / "more" / "purple" / "x.png").write_bytes((data / "red" / "000.png").read_bytes())
    assert "does not know: purple" in fails("evaluate", "--data", tmp_path / "more", "--ckpt-dir", ckpt)


@pytest.mark.default_run
def test_demo_default_run(run_lesson):
    """The issue's demo bar at full size: accuracy far above chance on the held-out test split."""
    m = run_lesson(PROJECT, smoke=False)
    assert m["test_accuracy"] >= 0.85 and m["test_accuracy"] >= 3 * m["chance_accuracy"]
    assert m["test_balanced_accuracy"] >= 0.8, "the minority class is not sacrificed to the majority"
    assert m["sklearn_max_diff"] < 1e-9


# ------------------------------------------------------------------ one small checkpoint, copied by the tests below


@pytest.fixture(scope="module")
def trained(tmp_path_factory, project):
    """A one-epoch --smoke checkpoint on 6 images per colour (test split: one per class), trained once per module."""
    base = tmp_path_factory.mktemp("ic_trained")
    data = write_image_folder(base / "d", per_class=(6, 6, 6))
    project.main(train_args(base, data, "--epochs", "1"))
    return base


@pytest.fixture
def copied(tmp_path, trained):
    """tmp_path/d (the data) and tmp_path/ck (the checkpoint): a copy of `trained` a test may change."""
    for name in ("d", "ck", "cache"):
        shutil.copytree(trained / name, tmp_path / name)
    return tmp_path / "d", tmp_path / "ck"


def test_evaluate_uses_exactly_the_test_files_training_held_out(tmp_path, copied, project, capsys, fails):
    data, ckpt = copied
    write_image_folder(data, per_class=(14, 14, 14), seed=7, first=100)   # the folder grows after training
    m = project.main(["--device", "cpu", "--out-dir", str(tmp_path / "ev"), "evaluate", "--data", str(data),
                      "--ckpt-dir", str(ckpt)])
    out = capsys.readouterr().out
    assert m["images"] == 3, "re-carving 20 images per class would give 9 test images, most of them trained on"
    held = json.loads((ckpt / "config.json").read_text())["split_files"]["test"]
    assert len(held) == 3 and {c for _, c in held} == {"blue", "green", "red"}, "one test image per class"
    assert "held out" in out and "differ from those the model was trained on" in out
    (data / held[0][0]).unlink()
    err = fails("evaluate", "--data", data, "--ckpt-dir", ckpt)
    assert "gone" in err and held[0][0] in err, "a held-out test image that vanished is named"


def test_files_are_written_with_ordinary_permissions(trained):
    umask = os.umask(0)
    os.umask(umask)
    for f in ("model.pt", "config.json", "train_state.pt"):
        assert (trained / "ck" / f).stat().st_mode & 0o777 == 0o666 & ~umask, f"{f}: not 0600 as mkstemp made it"


def test_foreign_or_reshaped_train_state_gets_one_line(tmp_path, copied, fails):
    data, ckpt = copied
    resume = ["train", "--data", data, "--image-size", "32", "--smoke", "--epochs", "2", "--ckpt-dir", ckpt,
              "--resume"]
    check_foreign_train_states(fails, resume, ckpt, "project_image_classifier", other="project_simple_gan")


def test_wrongly_shaped_config_gets_one_line(tmp_path, copied, fails):
    data, ckpt = copied
    image = data / "red" / "000.png"
    config = json.loads((ckpt / "config.json").read_text())
    for content, expected in (([], "JSON list"), ({"project": "project_image_classifier", "format_version": 2},
                                                   "lacks model"),
                              ({**config, "format_version": 99}, "format 99"),
                              ({**config, "classes": "red"}, "lacks classes")):
        (ckpt / "config.json").write_text(json.dumps(content))
        assert expected in fails("predict", "--images", image, "--ckpt-dir", ckpt, "--output", tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def test_diverged_run_exits_nonzero_and_keeps_the_checkpoint(tmp_path, copied, fails):
    data, ckpt = copied
    before = {f: (ckpt / f).read_bytes() for f in ("model.pt", "config.json", "train_state.pt")}
    err = fails("train", "--data", data, "--image-size", "32", "--smoke", "--epochs", "2", "--ckpt-dir", ckpt,
                "--lr", "1e9")
    assert "diverged" in err and "--lr" in err
    assert {f: (ckpt / f).read_bytes() for f in before} == before, "the good checkpoint is not overwritten"
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_output_that_is_a_folder_gets_one_line(tmp_path, copied, fails):
    data, ckpt = copied
    (tmp_path / "adir").mkdir()
    assert "is a folder" in fails("predict", "--images", data / "red", "--ckpt-dir", ckpt, "--output",
                                  tmp_path / "adir")
    assert list((tmp_path / "adir").iterdir()) == []


def test_gif_16bit_png_bmp_and_tiff_are_read(tmp_path, copied, project):
    """An animated GIF gives its first frame, a 16-bit PNG is scaled to 8 bits, BMP and TIFF go through Pillow."""
    from PIL import Image

    data, ckpt = copied
    folder = tmp_path / "imgs"
    folder.mkdir()
    check_odd_image_formats(project.read_image, np.array(Image.open(data / "red" / "000.png").convert("RGB")), folder)
    m = project.main(["--device", "cpu", "--out-dir", str(tmp_path / "o"), "predict", "--images", str(folder),
                      "--ckpt-dir", str(ckpt), "--output", str(tmp_path / "p.csv")])
    assert m["images"] == 4
    rows = {Path(r["file"]).name: r["top1"] for r in csv.DictReader((tmp_path / "p.csv").open())}
    assert rows["a.bmp"] == rows["a.tif"] == "red"


def test_models_that_need_another_input_size_get_one_line(tmp_path, fails):
    data = write_image_folder(tmp_path / "d", per_class=(4, 4, 4))
    err = fails("train", "--data", data, "--model", "vit_b_16", "--image-size", "32", "--smoke", "--epochs", "1")
    assert "cannot take 32x32" in err and "--image-size 224" in err
    err = fails("train", "--data", data, "--model", "inception_v3", "--image-size", "48", "--smoke", "--epochs", "1")
    assert "cannot take 48x48" in err


def test_demo_data_is_written_afresh(tmp_path, project):
    root = tmp_path / "demo"
    project.write_demo_dataset(root, {"china": 5, "flower": 4}, side=16, seed=0)
    (root / "china" / "stray.jpg").write_bytes((root / "china" / "0000.jpg").read_bytes())
    project.write_demo_dataset(root, {"china": 2, "flower": 3}, side=16, seed=0)
    assert sorted(p.name for p in (root / "china").iterdir()) == ["0000.jpg", "0001.jpg"]
    assert len(list((root / "flower").iterdir())) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


# ------------------------------------------------------------------ a learner's messy folders (EXIF, macOS files)


def write_tagged_photo(path, orientation=6):
    """A 40x20 (width x height) photo whose left quarter is white, stored with an EXIF orientation tag: 6 means
    'turn 90 degrees clockwise to show', so a viewer shows it 20 wide and 40 high with the white band on top."""
    from PIL import Image

    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif)
    return path


def test_exif_orientation_is_applied_as_viewers_show_the_photo(tmp_path, project):
    # torchvision's decoder (JPEG); Pillow's (TIFF, and WebP, which torchvision reads but does not turn)
    for name in ("phone.jpg", "scan.tif", "web.webp"):
        img = project.read_image(write_tagged_photo(tmp_path / name))
        assert img.shape == (3, 40, 20), f"{name}: a portrait, as viewers show it (the stored pixels are landscape)"
        assert img[:, :8].float().mean() > 200 and img[:, -20:].float().mean() < 50, f"{name}: white band on top"
    for name in ("phone.jpg", "web.webp"):
        assert project.read_image(tmp_path / name, orient=False).shape == (3, 20, 40), f"{name}, orient=False: stored"


def test_hidden_files_are_skipped_and_unreadable_files_say_why(tmp_path, project):
    data = write_image_folder(tmp_path / "d", per_class=(4, 4, 4))
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)
    (data / "red" / "._000.png").write_bytes(apple_double)    # what macOS leaves on a USB stick or in a zip
    (data / "red" / ".DS_Store").write_bytes(b"Bud1" + bytes(32))
    (data / "blue" / ".thumbnails").mkdir()
    (data / "blue" / ".thumbnails" / "000.png").write_bytes(b"not a thumbnail")
    s = project.find_splits(data, 0.15, 0.15, seed=0)
    files = [f for split in ("train", "val", "test") for f, _ in s[split]]
    assert len(files) == 12 and not any("/." in f.as_posix() for f in files), "hidden files are not images"

    (tmp_path / "copied.jpg").write_bytes(apple_double)       # the same file under an ordinary name: a clear reason
    (tmp_path / "notes.jpg").write_text("my holiday notes, not a photo")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, why in (("copied.jpg", "AppleDouble"), ("notes.jpg", "not an image in any format"),
                      ("empty.png", "the file is empty")):
        with pytest.raises(project.ProjectError) as info:
            project.read_image(tmp_path / name)
        message = str(info.value)
        assert why in message and str(tmp_path / name) in message and message.endswith(")"), message
        assert "supported" not in message, f"torchvision's 'only jpeg, png, webp and gif' is wrong here: {message}"
    good = (data / "red" / "000.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(project.ProjectError, match=r"damaged or truncated PNG file: .*\)$"):
        project.read_image(tmp_path / "cut.png")


def test_predict_names_files_by_their_path_inside_the_folder_given(tmp_path, copied, project, capsys):
    data, ckpt = copied
    (data / "red" / "._000.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    m = project.main(["--device", "cpu", "--out-dir", str(tmp_path / "o"), "predict", "--images", str(data),
                      "--ckpt-dir", str(ckpt), "--output", str(tmp_path / "p.csv")])
    out = capsys.readouterr().out
    assert m["images"] == 18, "6 images per colour; the hidden ._000.png is skipped"
    for name in ("blue/000.png", "green/000.png"):                # the first ten are printed
        assert f"  {name}: " in out, f"{name}: the 000.png files of each class must be told apart"


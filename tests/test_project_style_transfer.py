"""10-projects/project_style_transfer.py: the demo (style transferred with random filters, measured on a held-out
network), the command as a learner runs it on images the test writes, evaluate, bad inputs."""

import json

import numpy as np
import pytest
from harness import REPO, load_script, run_subprocess

pytestmark = pytest.mark.smoke

PROJECT = "10-projects/project_style_transfer.py"


def write_images(folder):
    """A smooth content picture (a disc on a gradient) and a stripy, colourful style image, 80x60 and 64x64."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:60, 0:80]
    disc = ((x - 40) ** 2 + (y - 30) ** 2 < 15 ** 2).astype(float)
    content = np.stack([x / 80, 0.3 + 0.4 * disc, 1 - y / 60], axis=2)
    Image.fromarray((content * 255).astype(np.uint8)).save(folder / "content.png")
    y, x = np.mgrid[0:64, 0:64]
    stripes = (np.sin(x / 2.0 + y / 3.0) > 0).astype(float)
    style = np.stack([stripes, 1 - stripes, 0.5 + 0.5 * np.sin(y / 4.0)], axis=2)
    Image.fromarray((style * 255).astype(np.uint8)).save(folder / "style.jpg")
    return folder / "content.png", folder / "style.jpg"


def test_gram_matrix():
    import torch

    project = load_script(REPO / PROJECT)
    f = torch.randn(2, 3, 4, 5)
    g = project.gram(f)
    assert g.shape == (2, 3, 3)
    expected = torch.einsum("bchw,bdhw->bcd", f, f) / (3 * 4 * 5)
    assert torch.allclose(g, expected, atol=1e-6)
    shuffled = f.flatten(2)[..., torch.randperm(20)].view_as(f)
    assert torch.allclose(project.gram(shuffled), g, atol=1e-5), "a Gram matrix forgets where things are"


def test_demo_smoke(run_lesson):
    m = run_lesson(PROJECT)
    assert not m["features_are_vgg19"], "--smoke never downloads: random filters"
    assert m["style_loss_final"] < m["style_loss_first"] / 10, "the style loss must fall by a large factor"
    assert m["random_style_reduction"] > 10
    assert m["heldout_random_style_reduction"] > 5, "a network never optimised against sees the style too"
    assert m["evaluate_heldout_reduction"] == pytest.approx(m["heldout_random_style_reduction"], rel=0.05), \
        "the saved PNG scores as the image in memory did (8-bit rounding aside)"
    assert m["colour_dist_result"] < m["colour_dist_content"], "the result's colours move towards the style's"
    assert m["content_loss_final"] < 1.0, "the result still resembles the photo's features"


def test_stylize_and_evaluate_as_a_learner(tmp_path):
    content, style = write_images(tmp_path / "images")
    out = tmp_path / "result.png"
    done = run_subprocess(PROJECT, ["--device", "cpu", "--content", str(content), "--style", str(style), "--size",
                                    "40", "--steps", "30", "--output", str(out), "--offline"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    from PIL import Image

    assert Image.open(out).size == (40, 30), "the longer side is --size, the aspect ratio kept"
    assert (tmp_path / "result_side_by_side.png").is_file() and (tmp_path / "result_losses.png").is_file()
    m = json.loads((tmp_path / "outputs/10-projects/project_style_transfer/metrics.json").read_text())["metrics"]
    assert m["style_loss_final"] < m["style_loss_first"] / 3

    done = run_subprocess(PROJECT, ["evaluate", "--content", str(content), "--style", str(style), "--result",
                                    str(out), "--size", "40", "--device", "cpu", "--out-dir", str(tmp_path / "ev"),
                                    "--offline"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert ev["random_style_reduction"] > 2 and ev["heldout_random_style_reduction"] > 1.5
    assert "closer to the style" in done.stdout


def test_bad_images_get_one_line_and_write_nothing(tmp_path, capsys):
    project = load_script(REPO / PROJECT)
    content, style = write_images(tmp_path / "images")
    (tmp_path / "notes.jpg").write_text("not an image")
    out = tmp_path / "out.png"

    def fails(*args):
        with pytest.raises(SystemExit) as info:
            project.main(["--device", "cpu", "--out-dir", str(tmp_path / "o"), "--size", "32", "--steps", "2",
                          *map(str, args)])
        assert info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error: "), f"one line, no traceback: {err!r}"
        return err

    assert "no such image" in fails("--content", tmp_path / "missing.jpg", "--style", style, "--output", out)
    assert "not a readable image" in fails("--content", content, "--style", tmp_path / "notes.jpg", "--output", out)
    assert "not a readable image" in fails("stylize", "--content", tmp_path / "notes.jpg", "--style", style)
    assert not out.exists() and not (tmp_path / "o" / "stylized.png").exists()
    with pytest.raises(SystemExit) as info:
        project.main(["--content", str(content), "--out-dir", str(tmp_path / "o")])
    assert info.value.code == 2, "--content without --style is a usage error"


@pytest.mark.default_run
def test_demo_default_run(run_lesson):
    """The demo at full size: the style distance falls by a large factor, also under a network never optimised
    against, and the result keeps the photo's content."""
    m = run_lesson(PROJECT, smoke=False)
    assert m["random_style_reduction"] > 20
    assert m["heldout_random_style_reduction"] > 5
    assert m["colour_dist_result"] < m["colour_dist_content"]
    assert m["content_loss_final"] < 1.0


def test_thin_images_with_vgg_and_an_output_folder_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """VGG-19 pools four times: a side under 16 px after resizing is refused in one line, before the optimisation
    (checked with the random network standing in for VGG-19, whose weights are not here offline)."""
    import os

    from PIL import Image

    project = load_script(REPO / PROJECT)
    content, style = write_images(tmp_path / "images")
    out = tmp_path / "out.png"
    project.main(["--device", "cpu", "--out-dir", str(tmp_path / "o"), "--size", "32", "--steps", "2", "--offline",
                  "--content", str(content), "--style", str(style), "--output", str(out)])
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask, "saved files get the usual permissions"

    thin = tmp_path / "thin.png"
    Image.new("RGB", (400, 20), (200, 120, 40)).save(thin)          # 128x6 px at --size 128
    monkeypatch.setattr(project, "feature_network",
                        lambda args, device: (project.RandomFeatures(args.seed).to(device).eval(), "vgg19"))
    monkeypatch.setattr(project, "stylize", lambda *a, **k: pytest.fail("the optimisation must not start"))
    for argv in (["stylize", "--content", thin, "--style", style, "--output", tmp_path / "thin_out.png"],
                 ["evaluate", "--content", content, "--style", style, "--result", thin]):
        with pytest.raises(SystemExit) as info:
            project.main(["--device", "cpu", "--out-dir", str(tmp_path / "o"), *map(str, argv)])
        assert info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "VGG-19 needs both sides at least 16 px" in err, err
    assert not (tmp_path / "thin_out.png").exists()
    with pytest.raises(SystemExit) as info:                         # --output a folder: a usage error, no work done
        project.main(["--device", "cpu", "--content", str(content), "--style", str(style), "--output", str(tmp_path)])
    assert info.value.code == 2


def test_phone_photos_transparency_and_the_output_format(tmp_path, capsys):
    """A phone portrait (stored landscape plus EXIF orientation 6) is stylised as the portrait viewers show; a
    transparent image is laid on white, not black; --output's suffix picks JPEG or PNG, an unknown one is refused
    before any work; the evaluate command printed afterwards runs as printed."""
    import shlex

    import torch
    from PIL import Image

    project = load_script(REPO / PROJECT)
    content, style = write_images(tmp_path / "images")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(content).save(tmp_path / "phone.jpg", exif=exif)     # stored 80x60, shown 60x80
    assert project.load_image(tmp_path / "phone.jpg", 40).shape == (1, 3, 40, 30), "upright: 30 wide, 40 high"
    logo = np.zeros((32, 32, 4), dtype=np.uint8)                     # transparent black, an opaque red square
    logo[8:24, 8:24] = (220, 30, 30, 255)
    Image.fromarray(logo).save(tmp_path / "logo.png")
    img = project.load_image(tmp_path / "logo.png", 32)[0]
    assert img[:, :4, :4].min() > 0.99 and torch.allclose(img[:, 16, 16], torch.tensor([220, 30, 30]) / 255.0)

    out = tmp_path / "out.jpg"
    base = ["--device", "cpu", "--out-dir", str(tmp_path / "o"), "--size", "40", "--steps", "2", "--offline"]
    made = project.main([*base, "--content", str(tmp_path / "phone.jpg"), "--style", str(style), "--output", str(out)])
    with Image.open(out) as result:
        assert result.format == "JPEG" and result.size == (30, 40), "JPEG bytes in a .jpg file, the portrait kept"
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  python "))
    m = project.main(["--device", "cpu", "--out-dir", str(tmp_path / "ev"), *shlex.split(line.split(".py ", 1)[1])])
    for key in ("random_style_reduction", "heldout_random_style_reduction"):  # stylize scored the file it saved
        assert m[key] == pytest.approx(made[key], rel=1e-5), f"{key}: the printed evaluate gives stylize's figure"
    for name in ("out.gif", "out"):
        with pytest.raises(SystemExit) as info:
            project.main([*base, "--content", str(content), "--style", str(style), "--output", str(tmp_path / name)])
        assert info.value.code == 2 and "ending in .png, .jpg or .jpeg" in capsys.readouterr().err
        assert not (tmp_path / name).exists()

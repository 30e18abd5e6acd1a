"""Smoke runs of module 08 with assertions that prove each lesson did its job.

The stand-in backbone (taught in 01) is pretrained once per test session, in its full form, into a shared cache
directory that the lessons get as --data-dir: the smoke runs then load it (hash checked) instead of each pretraining
its own. One test runs 01 without that cache, so the short smoke pretraining is exercised too.
"""

import pytest
import torch
from harness import REPO, load_script

pytestmark = pytest.mark.smoke

PRETRAINED = "08-transfer-learning/01_pretrained_models.py"
FEATURES = "08-transfer-learning/02_feature_extraction.py"
FINE_TUNING = "08-transfer-learning/03_fine_tuning.py"
DOMAIN = "08-transfer-learning/04_domain_adaptation.py"
ZOO = "08-transfer-learning/05_model_zoo.py"
PRACTICAL = "08-transfer-learning/06_practical_transfer.py"


@pytest.fixture(scope="session")
def standin_cache(tmp_path_factory):
    """A data dir holding the fully pretrained stand-in, created once per session by 01's own function."""
    root = tmp_path_factory.mktemp("m08_weights")
    lesson = load_script(REPO / PRETRAINED, "m08_standin_for_cache")
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is as fast, and a busy machine is not oversubscribed
    try:
        lesson.standin_backbone(root, torch.device("cpu"), smoke=False)
    finally:
        torch.set_rng_state(state)
        torch.set_num_threads(threads)
    assert len(list(root.glob("standin_glyphs_tinyresnet-*.pt"))) == 1
    return root


def fake_torchvision_weights(data_dir, name: str = "resnet18"):
    """A randomly initialised state dict saved where torch.hub looks for the real file: <data>/hub/checkpoints/
    <the URL's file name>. load_state_dict_from_url finds it and never touches the network."""
    from torchvision.models import get_model, get_model_weights

    weights = get_model_weights(name).DEFAULT
    path = data_dir / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(get_model(name, weights=None).state_dict(), path)
    return path


def assert_hub_dir_not_pinned(tmp_path):
    """After a lesson loaded real weights, torch.hub still follows TORCH_HOME: the lesson put its cache folder back
    instead of pinning one with torch.hub.set_dir (which would leave TORCH_HOME ignored for the whole process)."""
    home = tmp_path / "another_torch_home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        assert torch.hub.get_dir() == str(home / "hub"), "the lesson left torch.hub's folder pinned"


def test_01_pretrained_models(run_lesson, standin_cache):
    m = run_lesson(PRETRAINED, "--data-dir", str(standin_cache))
    assert m["used_pretrained_weights"] == 0 and m["num_categories"] == 52 and m["standin_source_classes"] == 52
    assert m["standin_source_acc"] > 0.6  # the cached stand-in really learned its 52 letters (chance 1.9%)
    assert m["prob_sum_error"] < 1e-5
    assert m["topk_prob_mass"] > 0.5  # a trained network is sure even of a photo; uniform over 52: 5/52 = 0.1
    assert m["eval_vs_train_max_abs_diff"] > 1e-4  # BatchNorm in train mode changes the prediction
    assert m["output_is_inference"] == 1
    assert m["reload_max_abs_diff"] < 1e-5 and m["strict_mismatch_raised"] == 1
    assert m["missing_keys"] == 2 and m["unexpected_keys"] == 1  # fc.weight/fc.bias; the extra tensor
    assert m["weights_only_refused_pickle"] == 1 and m["hash_check_caught_corruption"] == 1
    assert m["hub_dir_follows_torch_home"] == 1


@pytest.mark.subprocess
def test_01_pretrained_models_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(PRETRAINED)  # no cache: the short smoke pretraining on 12 letters
    assert m["standin_source_classes"] == 12 and m["standin_source_acc"] > 0.3  # chance 8%
    assert m["missing_keys"] == 2


def test_01_pretrained_models_online_path(run_lesson, tmp_path):
    fake_torchvision_weights(tmp_path / "data")
    m = run_lesson(PRETRAINED, "--data-dir", str(tmp_path / "data"), smoke=False)
    assert m["used_pretrained_weights"] == 1 and m["num_categories"] == 1000  # weights.meta["categories"]
    assert m["num_params"] == 11689512 and m["state_dict_entries"] == 122
    assert m["prob_sum_error"] < 1e-4 and m["missing_keys"] == 2 and m["reload_max_abs_diff"] < 1e-4
    assert m["hub_dir_follows_torch_home"] == 1  # section 1's download did not pin torch.hub's folder
    assert_hub_dir_not_pinned(tmp_path)


def test_01_pretrained_models_recreates_a_corrupt_cache(run_lesson, standin_cache, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    good = next(standin_cache.glob("standin_glyphs_tinyresnet-*.pt"))
    (data / good.name).write_bytes(good.read_bytes()[:-100])  # truncated: its sha256 no longer matches the name
    m = run_lesson(PRETRAINED, "--data-dir", str(data))
    assert "does not match its name" in capsys.readouterr().out
    assert m["standin_source_acc"] > 0.3  # re-created by the smoke pretraining


def test_02_feature_extraction(run_lesson, standin_cache):
    m = run_lesson(FEATURES, "--data-dir", str(standin_cache))
    assert m["hook_vs_fx_max_abs_diff"] == 0.0  # the same tensors, by two routes
    assert m["graph_nodes"] > 20
    assert m["probe_acc"] > 0.4 and m["knn_acc"] > 0.3  # 10 digits, 20 labels each: chance is 0.10
    best = max(m[f"probe_acc_{d}"] for d in ("layer1", "layer2", "layer3", "avgpool"))
    assert best > 0.6 and m["probe_acc_layer2"] > m["probe_acc_layer1"]
    assert m["pretrained_minus_random_probe"] > 0.2  # pretrained features, not just any features
    assert m["knn_acc_pca_2d"] > 0.15 and 0 < m["pca_explained_2d"] < 1


def test_03_fine_tuning(run_lesson, standin_cache, capsys):
    m = run_lesson(FINE_TUNING, "--data-dir", str(standin_cache))
    assert "every way of reusing the backbone beat the same network" in capsys.readouterr().out
    transfer = [m[k] for k in ("linear_probe_acc", "full_fine-tune_bn_eval_acc", "full_fine-tune_bn_train_acc",
                               "gradual_unfreezing_acc", "discriminative_lrs_acc")]
    assert min(transfer) > m["scratch_acc"] + 0.15, "every transfer strategy must beat scratch at 20 per digit"
    assert m["best_transfer_minus_scratch"] > 0.25 and max(transfer) > 0.38  # 24 steps of 16 only: chance is 0.10
    assert m["transfer_acc_5_shots"] > m["scratch_acc_5_shots"] + 0.15  # transfer pays at small data


def test_03_what_to_notice_follows_the_figures():
    """Each claim is printed only when the run's figures show it: a learner's `01 --smoke` then `03 --smoke` left
    every row at chance (measured: transfer 9.7-11.7%, scratch 11.3%), and the lesson must say so, not the opposite."""
    lesson = load_script(REPO / FINE_TUNING, "m08_notice_03")
    names = [n for n in lesson.STRATEGIES if n != "scratch"]
    at_chance = dict(zip(names, (0.117, 0.11, 0.11, 0.10, 0.097)), scratch=0.113)
    text = "\n".join(lesson.notice(at_chance, [5, 20], [0.007, -0.017], 20, REPO / "data"))
    assert "beat the same network" not in text and "did not transfer" in text and "--standin-only" in text, text
    # the smoke run's gap fell from +0.7% to -1.7%: inside the 5-point margin, and said so with both numbers
    assert "paid most" not in text and "moved by less than 5 points" in text and "-1.7% at 20" in text, text
    good = dict(zip(names, (0.5, 0.55, 0.45, 0.52, 0.6)), scratch=0.2)
    text = "\n".join(lesson.notice(good, [5, 20, 100], [0.35, 0.3, 0.1], 20, REPO / "data"))
    assert "every way of reusing the backbone beat the same network" in text and "paid most" in text, text
    mixed = dict(good, **{"linear probe": 0.21})
    assert "Not every way" in "\n".join(lesson.notice(mixed, [5, 20, 100], [0.35, 0.3, 0.1], 20, REPO / "data"))


def test_03_gap_and_best_row_follow_their_signs():
    """`--shots 1` printed "-0.3% over scratch"; `--curve-shots 1` "the gap at 1 per digit is -1.0%, at 1 it is
    -1.0%"; the smoke run "did not shrink" for a gap that fell 2.4 points. Each phrase now follows the numbers."""
    lesson = load_script(REPO / FINE_TUNING, "m08_gap_03")
    assert lesson.versus_scratch(-0.003) == "0.3% below scratch"
    assert lesson.versus_scratch(0.25) == "+25.0% over scratch" and lesson.versus_scratch(0.0) == "level with scratch"
    one = lesson.gap_trend([1], [-0.01])
    assert "One point" in one and "at 1 it is" not in one and "-1.0%" in one, one
    assert "grew with more labels" in lesson.gap_trend([5, 20], [0.0, 0.2])
    behind = lesson.gap_trend([5, 100], [0.02, -0.2])  # fell by 22 points, but transfer never led: not "paid most"
    assert "paid most" not in behind and "scratch pulled ahead" in behind, behind
    assert "paid most" in lesson.gap_trend([5, 100], [0.3, 0.1])


def test_03_shots_limited_to_what_every_digit_has():
    """split() keeps n_test images of each digit for testing and trains on at most the rest of the rarest digit
    (174 eights): --shots above that would print a per-digit count the run never had."""
    lesson = load_script(REPO / FINE_TUNING, "m08_shots_03")
    labels = lesson.real_digits()[1]
    for smoke, most in ((False, 114), (True, 144)):
        flags = ["--smoke"] if smoke else []
        assert lesson.parse_args([*flags, "--shots", str(most)]).shots == most
        for bad in (["--shots", str(most + 1)], ["--curve-shots", "5", str(most + 1)]):
            with pytest.raises(SystemExit):
                lesson.parse_args([*flags, *bad])
        train, _ = lesson.split(labels, most, lesson.test_per_digit(smoke), torch.Generator().manual_seed(0))
        assert torch.equal(torch.bincount(labels[train], minlength=10), torch.full((10,), most)), "really `most` each"


def test_04_domain_adaptation(run_lesson, capsys):
    m = run_lesson(DOMAIN)
    assert m["source_test_acc"] > 0.8 and m["source_only_target_acc"] < m["source_test_acc"] - 0.2  # a real gap
    assert m["grad_reverse_grad"] == -0.5 and m["adabn_weights_unchanged"] == 1 and m["adabn_bn_mean_shift"] > 0.05
    # 60 steps: AdaBN gains about 20 points (seed 0); DANN and self-training are scored with AdaBN's statistics, so
    # that gain is in theirs, and over AdaBN alone neither adds reliably in so short a training (DANN +0.6, self-
    # training -5.2 at seed 0): the default run asserts what they add (test_04_domain_adaptation_default_run)
    assert m["adabn_gain"] > 0.1, "AdaBN must raise the short-trained model's target accuracy"
    assert m["rescanned_source_only_acc"] < m["source_only_target_acc"] - 0.2, "the scanner shift costs accuracy"
    assert m["adabn_gain_rescanned"] > 0.3, "recomputed BatchNorm statistics undo an affine pixel shift"
    assert m["domain_probe_adabn"] < m["domain_probe_before"] - 0.1  # per-domain statistics alone align a lot
    assert m["pseudo_label_acc"] > 0.8 and m["pseudo_labels_kept"] >= 10 and m["selftrain_ran"] == 1
    # self-training really trained on its pseudo-labels (without the training step the two losses are equal)
    assert m["pseudo_label_loss_after"] < 0.5 * m["pseudo_label_loss_before"]
    out = capsys.readouterr().out
    claims_hiding = "hid the domain beyond what the statistics do" in out
    assert claims_hiding == (m["domain_probe_after"] < m["domain_probe_adabn"] - 0.01
                             and m["dann_gain_over_adabn"] >= 0.01), "DANN's claim must follow this run's figures"
    assert ("it added" in out) == (m["selftrain_gain_over_adabn"] >= 0.01), "self-training's claim likewise"
    assert "over AdaBN alone" in out and "vs AdaBN" in out  # each method's gain is also given over the fair baseline


def test_04_what_to_notice_follows_the_figures():
    """The review's control run (`--dann-weight 0 --threshold 0.99999`: no gradient reversal, no pseudo-labels) once
    printed "the reversed gradient made the features hide their domain" and "Self-training on 0 confident
    pseudo-labels: +20.6%". The claims come from these two functions, and only when the figures show them."""
    lesson = load_script(REPO / DOMAIN, "m08_notice_04")
    no_reversal = "\n".join(lesson.notice_dann(0.0, 0.169, -0.037, 0.86, 0.64, 0.64))
    assert "no gradient reversal" in no_reversal and "hid the domain" not in no_reversal, no_reversal
    smoke_like = "\n".join(lesson.notice_dann(1.0, 0.211, 0.006, 0.894, 0.648, 0.608))  # seed 0's smoke figures
    assert "hid the domain" not in smoke_like and "+0.6% over AdaBN alone" in smoke_like, smoke_like
    # it printed "did not rise above AdaBN's" beside that +0.6%: a rise, under the 1-point margin, said as one
    assert "did not rise" not in smoke_like and "rose only +0.6% over AdaBN's, under the 1-point" in smoke_like
    fell = "\n".join(lesson.notice_dann(1.0, 0.16, -0.02, 0.9, 0.65, 0.6))
    assert "did not rise above AdaBN's (-2.0%)" in fell, fell
    no_drop = "\n".join(lesson.notice_dann(1.0, 0.3, 0.1, 0.8, 0.7, 0.7))
    assert "did not fall below AdaBN's" in no_drop and "hid the domain" not in no_drop, no_drop
    works = "\n".join(lesson.notice_dann(1.0, 0.16, 0.15, 0.8, 0.75, 0.7))
    assert "hid the domain beyond what the statistics do" in works, works
    none_kept = "\n".join(lesson.notice_selftrain(0, 0.0, 0.206, 0.0, 0.99999))
    assert "did not run" in none_kept and "+20.6%" not in none_kept, none_kept
    assert "did not beat AdaBN alone" in "\n".join(lesson.notice_selftrain(20, 1.0, 0.154, -0.052, 0.9))
    assert "it added +4.0% to AdaBN alone" in "\n".join(lesson.notice_selftrain(300, 0.97, 0.05, 0.04, 0.9))


def test_05_model_zoo(run_lesson):
    m = run_lesson(ZOO)
    assert m["zoo_models"] > 100 and m["weights_entries"] > 100  # read from torchvision itself
    assert m["timed_models"] == 2
    assert 5 <= m["pareto_front_size"] < m["weights_entries"] / 2
    assert m["best_acc1_under_0p5_gflops"] < m["best_acc1_under_5p0_gflops"] <= m["best_acc1"]
    assert m["timm_models"] > 500 and m["timm_num_features"] == 512
    assert m["loaded_weights"] == 0  # --smoke, nothing cached: no download


def test_05_ranking_verdict_follows_the_timings():
    """`--repeats 1` once printed "(2/2 positions agree: FLOPs are not latency; ...)": the conclusion ignored the
    count. Same order: no "not latency" claim; a different order names the models that ran slower than FLOPs say."""
    lesson = load_script(REPO / ZOO, "m08_verdict_05")
    gflops = {"shufflenet_v2_x0_5": 0.01, "mobilenet_v3_small": 0.015}
    agree, same = lesson.ranking_verdict(gflops, {"shufflenet_v2_x0_5": 7.5, "mobilenet_v3_small": 9.8})
    assert agree == 2 and "not latency" not in same and "ordered these 2 models' CPU latency correctly" in same, same
    agree, swapped = lesson.ranking_verdict(gflops, {"shufflenet_v2_x0_5": 7.6, "mobilenet_v3_small": 7.0})
    assert agree == 0 and "FLOPs are not latency; shufflenet_v2_x0_5 ran slower than its GFLOPs rank" in swapped
    assert "depthwise" in swapped, swapped
    agree, dense = lesson.ranking_verdict({"resnet18": 1.8, "resnet50": 4.1, "vgg11": 7.6},
                                          {"resnet18": 1.0, "resnet50": 9.0, "vgg11": 5.0})
    assert agree == 1 and "resnet50 ran slower" in dense and "depthwise" not in dense, dense  # no depthwise conv here


def test_05_model_zoo_checks_meta_against_a_cached_file(run_lesson, tmp_path):
    fake_torchvision_weights(tmp_path / "data")
    m = run_lesson(ZOO, "--data-dir", str(tmp_path / "data"))
    assert m["loaded_weights"] == 1 and m["loaded_params_match_meta"] == 1
    assert_hub_dir_not_pinned(tmp_path)


def test_06_practical_transfer(run_lesson, standin_cache, tmp_path, capsys):
    m = run_lesson(PRACTICAL, "--data-dir", str(standin_cache))
    assert m["used_pretrained_weights"] == 0 and m["num_classes"] == 3 and m["imbalance_ratio"] == 4.0
    assert m["stratified_split_ok"] == 1  # every class in train, val and test
    assert m["balanced_mean_recall"] > 0.5  # mean per-class recall; 3 classes: chance (or one class for all) 0.33
    assert 1 <= m["best_epoch"] <= m["epochs_run"]
    assert m["predict_reload_max_abs_diff"] < 1e-5  # best.pt + best.json rebuild the same model
    image = next((standin_cache / "demo_photos_smoke" / "flower").glob("*.jpg"))
    capsys.readouterr()
    p = run_lesson(PRACTICAL, "--predict", str(image), str(image), "--topk", "2")  # the same --out-dir: best.pt
    assert p["predicted_files"] == 2 and p["num_classes"] == 3
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{image}: ")]
    assert len(lines) == 2 and lines[0] == lines[1], lines
    # the printed top 2 against the saved model, rebuilt here from best.pt/best.json and run on the same file
    import json

    lesson, out = load_script(REPO / PRACTICAL, "m08_predict_06"), tmp_path / "out"
    meta = json.loads((out / "best.json").read_text())
    model = lesson.build_model(meta, len(meta["classes"]))
    model.load_state_dict(torch.load(out / "best.pt", weights_only=True))
    with torch.no_grad():
        probs = model.eval()(lesson.eval_transform(meta)(lesson.open_image(image))[None]).softmax(1)[0]
    top = probs.topk(2)
    expected = ", ".join(f"{meta['classes'][i]} {v:.1%}" for v, i in zip(top.values.tolist(), top.indices.tolist()))
    assert lines[0] == f"{image}: {expected}"
    assert abs(p["top1_prob_mean"] - top.values[0].item()) < 1e-5


def test_06_practical_transfer_online_path(run_lesson, tmp_path):
    """Real torchvision code path (get_model with weights=, weights.transforms()) on a tiny folder of the test's own."""
    from PIL import Image

    fake_torchvision_weights(tmp_path / "data")
    for c, colour in enumerate(("red", "green")):
        (tmp_path / "imgs" / f"class_{c}").mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (40, 30), colour).save(tmp_path / "imgs" / f"class_{c}" / f"{k}.png")
    m = run_lesson(PRACTICAL, "--data-dir", str(tmp_path / "data"), "--images", str(tmp_path / "imgs"),
                   "--epochs", "1", smoke=False)
    assert m["used_pretrained_weights"] == 1 and m["num_classes"] == 2 and m["num_images"] == 6
    assert m["predict_reload_max_abs_diff"] < 1e-4
    assert_hub_dir_not_pinned(tmp_path)


@pytest.mark.parametrize("damage", ["empty", "class_without_images", "unreadable_image", "missing_checkpoint"])
def test_06_practical_transfer_bad_data_gives_one_clear_line(run_lesson, tmp_path, damage):
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    if damage != "empty":
        for c in ("cat", "dog"):
            (root / c).mkdir()
            for k in range(3):
                Image.new("RGB", (8, 8), "white").save(root / c / f"{k}.png")
    if damage == "class_without_images":
        (root / "bird").mkdir()
    if damage == "unreadable_image":
        (root / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    flags = ("--predict", str(root / "cat" / "0.png")) if damage == "missing_checkpoint" else ("--images", str(root))
    with pytest.raises(SystemExit) as exit_info:
        run_lesson(PRACTICAL, *flags)
    message = str(exit_info.value.code)
    assert "\n" not in message and exit_info.value.code not in (0, None), message
    expected = {"empty": ("bad data:", "no class folders"), "class_without_images": ("bad data:", "bird"),
                "unreadable_image": ("bad data:", "broken.jpg"), "missing_checkpoint": ("cannot predict:", "best.pt")}
    assert all(part in message for part in expected[damage]), message


def test_real_digits_are_load_digits():
    """02, 03 and 04 read scikit-learn's digits file directly (importing sklearn costs a second): the same data."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for path in (FEATURES, FINE_TUNING, DOMAIN):
        images, labels = load_script(REPO / path, f"m08_digits_{path[21:23]}").real_digits()
        assert images.shape == (1797, 8, 8) and torch.equal(images, torch.tensor(digits.images, dtype=torch.float32))
        assert torch.equal(labels, torch.tensor(digits.target))


def test_standin_made_by_01_when_absent(tmp_path, monkeypatch):
    """02, 03 and 06 keep only the stand-in's class and loader: from an empty --data-dir they run 01 with
    --standin-only (the smoke recipe under --smoke) and load the file it writes, hash checked. 01's metrics.json goes
    under the lesson's own --out-dir (it once went to outputs/... under the current directory, whatever --out-dir)."""
    import hashlib

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # 01 runs as a child process: it inherits this directory
    reference = load_script(REPO / PRETRAINED, "m08_standin_01").tiny_resnet().state_dict()
    for path in (FEATURES, FINE_TUNING, PRACTICAL):
        lesson = load_script(REPO / path, f"m08_standin_{path[21:23]}")
        out = tmp_path / f"out_{path[21:23]}"
        model = lesson.standin_backbone(tmp_path / path[21:23], torch.device("cpu"), True, out)
        assert (out / "standin" / "metrics.json").is_file(), f"{path}: 01's metrics.json belongs in <out-dir>/standin"
        assert not any((tmp_path / "cwd").iterdir()), f"{path}: 01 wrote under the current directory"
        files = list((tmp_path / path[21:23]).glob("*.pt"))
        assert [f.name.split("-")[0] for f in files] == ["standin_glyphs_tinyresnet_smoke"], (path, files)
        assert hashlib.sha256(files[0].read_bytes()).hexdigest().startswith(files[0].stem.split("-")[1])
        saved = torch.load(files[0], weights_only=True)
        assert saved.keys() == reference.keys(), "the lesson's tiny_resnet must have 01's layout"
        assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items()), "loaded what 01 saved"
        assert not model.training, "a loaded backbone comes back in eval mode"


def test_a_corrupt_standin_is_remade(tmp_path):
    """A weights file whose sha256 does not match its name is not loaded: 01 deletes it and pretrains anew."""
    bad = tmp_path / "standin_glyphs_tinyresnet_smoke-00000000.pt"
    bad.write_bytes(b"not a state dict")
    lesson = load_script(REPO / FEATURES, "m08_standin_corrupt")
    lesson.standin_backbone(tmp_path, torch.device("cpu"), True, tmp_path / "out")
    files = [p.name for p in tmp_path.glob("*.pt")]
    assert bad.name not in files and len(files) == 1, files


# ---- The default-run tier (pytest --default-runs -m default_run): each lesson's full offline run and the issue's
# thresholds for it. 02, 03 and 06 get the session's stand-in cache, as after a learner's first run of 01. ----


@pytest.mark.default_run
def test_02_feature_extraction_default_run(run_lesson, standin_cache):
    m = run_lesson(FEATURES, "--data-dir", str(standin_cache), smoke=False)
    assert m["probe_acc"] > 0.5 and m["knn_acc"] > 0.4  # 10 digits, 20 labels each: chance 0.10
    assert max(m[f"probe_acc_{d}"] for d in ("layer1", "layer2", "layer3", "avgpool")) > 0.6
    assert m["pretrained_minus_random_probe"] > 0.2


@pytest.mark.default_run
def test_03_fine_tuning_default_run(run_lesson, standin_cache):
    m = run_lesson(FINE_TUNING, "--data-dir", str(standin_cache), smoke=False)
    transfer = [m[k] for k in ("linear_probe_acc", "full_fine-tune_bn_eval_acc", "full_fine-tune_bn_train_acc",
                               "gradual_unfreezing_acc", "discriminative_lrs_acc")]
    assert min(transfer) > m["scratch_acc"] + 0.15, "every transfer strategy must beat scratch at 20 per digit"
    assert max(transfer) > 0.5  # chance 0.10
    assert m["transfer_acc_5_shots"] > m["scratch_acc_5_shots"] + 0.2, "transfer must pay at 5 per digit"
    assert m["gap_smallest_shots"] > m["gap_largest_shots"], "the gap must shrink as labels grow"


@pytest.mark.default_run
def test_04_domain_adaptation_default_run(run_lesson, capsys):
    m = run_lesson(DOMAIN, smoke=False)
    assert m["source_test_acc"] > 0.95 and m["source_only_target_acc"] < m["source_test_acc"] - 0.1
    # DANN and self-training are scored with AdaBN's per-domain statistics: what each adds is measured over AdaBN
    # alone (measured, seed 0: DANN +15.4 points, self-training +3.8 on 524 pseudo-labels; AdaBN +0.9 over source only)
    assert m["dann_gain_over_adabn"] > 0.08, "DANN must raise target accuracy over AdaBN alone"
    assert m["selftrain_ran"] == 1 and m["selftrain_gain_over_adabn"] > 0.02, "self-training must beat AdaBN alone"
    assert m["pseudo_label_acc"] > 0.8 and m["pseudo_labels_kept"] > 200
    # per-domain statistics alone make the domains less separable (79.6% -> 71.2%); DANN's probe was not lower than
    # AdaBN's in the measured run (74.0%), so the lesson must not claim that the reversed gradient hid the domain
    assert m["domain_probe_adabn"] < m["domain_probe_before"] - 0.05
    claims_hiding = "hid the domain beyond what the statistics do" in capsys.readouterr().out
    assert claims_hiding == (m["domain_probe_after"] < m["domain_probe_adabn"] - 0.01
                             and m["dann_gain_over_adabn"] >= 0.01)
    assert m["adabn_gain_rescanned"] > 0.3, "AdaBN's own kind of shift: statistics, recovered without labels"


@pytest.mark.default_run
def test_06_practical_transfer_default_run(run_lesson, standin_cache):
    m = run_lesson(PRACTICAL, "--data-dir", str(standin_cache), smoke=False)
    assert m["used_pretrained_weights"] == 0 and m["num_classes"] == 3  # offline: the stand-in
    assert m["balanced_mean_recall"] > 0.6 and m["balanced_test_acc"] > 0.6  # chance 0.33
    assert m["balanced_minority_recall"] > 0.3

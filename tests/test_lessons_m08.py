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
    assert m["prob_sum_error"] < 1e-5 and 0 < m["topk_prob_mass"] <= 1 + 1e-6
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


def test_03_fine_tuning(run_lesson, standin_cache):
    m = run_lesson(FINE_TUNING, "--data-dir", str(standin_cache))
    transfer = [m[k] for k in ("linear_probe_acc", "full_fine-tune_bn_eval_acc", "full_fine-tune_bn_train_acc",
                               "gradual_unfreezing_acc", "discriminative_lrs_acc")]
    assert min(transfer) > m["scratch_acc"] + 0.15, "every transfer strategy must beat scratch at 20 per digit"
    assert m["best_transfer_minus_scratch"] > 0.25 and max(transfer) > 0.38  # 24 steps of 16 only: chance is 0.10
    assert m["transfer_acc_5_shots"] > m["scratch_acc_5_shots"] + 0.15  # transfer pays at small data


def test_04_domain_adaptation(run_lesson):
    m = run_lesson(DOMAIN)
    assert m["source_test_acc"] > 0.8 and m["source_only_target_acc"] < m["source_test_acc"] - 0.2  # a real gap
    assert m["grad_reverse_grad"] == -0.5 and m["adabn_weights_unchanged"] == 1 and m["adabn_bn_mean_shift"] > 0.05
    # 60 steps: each method gains about 20 points here (the default run: test_04_domain_adaptation_default_run)
    assert m["dann_gain"] > 0.1, "DANN must raise target accuracy over source-only"
    assert m["selftrain_gain"] > 0.1, "self-training must raise target accuracy over source-only"
    assert m["adabn_gain"] > 0.1, "AdaBN must raise the short-trained model's target accuracy"
    assert m["rescanned_source_only_acc"] < m["source_only_target_acc"] - 0.2, "the scanner shift costs accuracy"
    assert m["adabn_gain_rescanned"] > 0.3, "recomputed BatchNorm statistics undo an affine pixel shift"
    assert m["domain_probe_after"] < m["domain_probe_before"] - 0.1  # the features were aligned
    assert m["pseudo_label_acc"] > 0.8 and m["pseudo_labels_kept"] >= 10


def test_05_model_zoo(run_lesson):
    m = run_lesson(ZOO)
    assert m["zoo_models"] > 100 and m["weights_entries"] > 100  # read from torchvision itself
    assert m["timed_models"] == 2 and m["mobilenet_v3_small_cpu_ms"] > 0
    assert 5 <= m["pareto_front_size"] < m["weights_entries"] / 2
    assert m["best_acc1_under_0p5_gflops"] < m["best_acc1_under_5p0_gflops"] <= m["best_acc1"]
    assert m["timm_models"] > 500 and m["timm_num_features"] == 512
    assert m["loaded_weights"] == 0  # --smoke, nothing cached: no download


def test_05_model_zoo_checks_meta_against_a_cached_file(run_lesson, tmp_path):
    fake_torchvision_weights(tmp_path / "data")
    m = run_lesson(ZOO, "--data-dir", str(tmp_path / "data"))
    assert m["loaded_weights"] == 1 and m["loaded_params_match_meta"] == 1
    assert_hub_dir_not_pinned(tmp_path)


def test_06_practical_transfer(run_lesson, standin_cache, tmp_path):
    m = run_lesson(PRACTICAL, "--data-dir", str(standin_cache))
    assert m["used_pretrained_weights"] == 0 and m["num_classes"] == 3 and m["imbalance_ratio"] == 4.0
    assert m["stratified_split_ok"] == 1  # every class in train, val and test
    assert m["balanced_mean_recall"] > 0.5  # mean per-class recall; 3 classes: chance (or one class for all) 0.33
    assert 1 <= m["best_epoch"] <= m["epochs_run"]
    assert m["predict_reload_max_abs_diff"] < 1e-5  # best.pt + best.json rebuild the same model
    image = next((standin_cache / "demo_photos_smoke" / "flower").glob("*.jpg"))
    p = run_lesson(PRACTICAL, "--predict", str(image), str(image), "--topk", "2")  # the same --out-dir: best.pt
    assert p["predicted_files"] == 2 and p["num_classes"] == 3 and 1 / 3 < p["top1_prob_mean"] <= 1


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


def test_standin_made_by_01_when_absent(tmp_path):
    """02, 03 and 06 keep only the stand-in's class and loader: from an empty --data-dir they run 01 with
    --standin-only (the smoke recipe under --smoke) and load the file it writes, hash checked."""
    import hashlib

    reference = load_script(REPO / PRETRAINED, "m08_standin_01").tiny_resnet().state_dict()
    for path in (FEATURES, FINE_TUNING, PRACTICAL):
        lesson = load_script(REPO / path, f"m08_standin_{path[21:23]}")
        model = lesson.standin_backbone(tmp_path / path[21:23], torch.device("cpu"), smoke=True)
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
    lesson.standin_backbone(tmp_path, torch.device("cpu"), smoke=True)
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
def test_04_domain_adaptation_default_run(run_lesson):
    m = run_lesson(DOMAIN, smoke=False)
    assert m["source_test_acc"] > 0.95 and m["source_only_target_acc"] < m["source_test_acc"] - 0.1
    # the two adaptations the lesson claims (AdaBN alone is reported, and gains nothing in this configuration)
    assert m["dann_gain"] > 0.08, "DANN must raise target accuracy over source-only"
    assert m["selftrain_gain"] > 0.03, "self-training must raise target accuracy over source-only"
    assert m["domain_probe_after"] < m["domain_probe_before"] - 0.05  # 79% -> 71% in the measured run
    assert m["adabn_gain_rescanned"] > 0.3, "AdaBN's own kind of shift: statistics, recovered without labels"


@pytest.mark.default_run
def test_06_practical_transfer_default_run(run_lesson, standin_cache):
    m = run_lesson(PRACTICAL, "--data-dir", str(standin_cache), smoke=False)
    assert m["used_pretrained_weights"] == 0 and m["num_classes"] == 3  # offline: the stand-in
    assert m["balanced_mean_recall"] > 0.6 and m["balanced_test_acc"] > 0.6  # chance 0.33
    assert m["balanced_minority_recall"] > 0.3

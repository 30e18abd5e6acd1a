"""Smoke runs of module 06 with assertions that prove each lesson did its job."""

import struct

import pytest
import torch
from harness import REPO, load_script, run_inprocess

pytestmark = pytest.mark.smoke

CONV = "06-cnn-image-processing/01_conv_layers.py"
LENET = "06-cnn-image-processing/03_lenet.py"
CLASSIFY = "06-cnn-image-processing/04_image_classification.py"
TRANSFER = "06-cnn-image-processing/08_resnet_transfer.py"
DATASETS = "06-cnn-image-processing/05_torchvision_datasets.py"


def write_idx(path, array: torch.Tensor) -> None:
    """The MNIST idx format: 0, 0, dtype code 8 (ubyte), number of dims, big-endian int32 dims, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.dim()]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.to(torch.uint8).contiguous().numpy().tobytes())


def write_tiny_mnist(root, n_train: int, n_test: int) -> None:
    """<root>/MNIST/raw/*-ubyte holding synthetic digits, read back by the real torchvision.datasets.MNIST code."""
    lesson = load_script(REPO / LENET, "m06_lenet_for_idx_files")
    g = torch.Generator().manual_seed(123)
    raw = root / "MNIST" / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = lesson.synthetic_digits(n, g)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


def test_01_conv_layers(run_lesson, device):
    m = run_lesson(CONV)
    assert m["unfold_conv_max_abs_diff"] < 1e-5  # unfold + matmul == nn.Conv2d, groups and dilation included
    assert m["formula_mismatches"] == 0 and m["formula_configs_checked"] >= 200
    assert m["naive_formula_wrong"] > 0  # forgetting padding/dilation is caught by the grid
    # small integers are exact in float32 on the CPU; cuDNN may pick a Winograd/FFT algorithm, exact only to rounding
    tol = 0.0 if device == "cpu" else 1e-5
    assert abs(m["sobel_x_step_max"] - 4.0) <= tol and m["sobel_y_step_max_abs"] <= tol
    assert m["blur_mean_change"] < 0.01 and m["tv_after_blur"] < m["tv_before_blur"]
    assert m["laplacian_flat_max_abs"] < 1e-6
    assert m["unfold_memory_blowup"] == 9  # a 3x3 kernel: one copy of the input per tap


@pytest.mark.subprocess
def test_01_conv_layers_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(CONV)
    assert m["unfold_conv_max_abs_diff"] < 1e-5 and m["formula_mismatches"] == 0


def test_02_pooling_layers(run_lesson):
    m = run_lesson("06-cnn-image-processing/02_pooling_layers.py")
    assert m["maxpool_max_abs_diff"] == 0.0  # max pooling by hand is exact
    assert m["avgpool_max_abs_diff"] < 1e-6 and m["adaptive_max_abs_diff"] < 1e-6
    assert m["adaptive_vs_plain_max_abs_diff"] == 0.0 and m["gap_max_abs_diff"] < 1e-6
    assert m["gap_any_size_ok"] == 1
    assert m["receptive_field_predicted"] == m["receptive_field_measured"] == 28
    assert m["receptive_field_jump"] == 4
    assert 0.2 < m["unpool_nonzero_fraction"] < 0.3  # one winner per 2x2 window


def test_03_lenet_synthetic_digits(run_lesson, capsys):
    m = run_lesson(LENET)
    assert m["used_real_mnist"] == 0  # --smoke never downloads; nothing on disk here
    assert m["lenet_params"] == 61706
    assert m["vgg16_params"] == 138357544 and m["alexnet_params"] == 61100840
    assert m["val_acc_last_epoch"] > 0.4 > m["val_acc_before"] + 0.2  # chance is 10% before two tiny epochs
    assert m["test_acc"] > 0.4
    assert m["test_mistakes"] == round((1 - m["test_acc"]) * m["test_images"]), "the figure's mistakes are the misses"
    out = capsys.readouterr().out
    assert "these were synthetic digits" in out and "real handwritten" not in out


def test_03_lenet_reads_real_mnist_files(run_lesson, tmp_path, capsys):
    write_tiny_mnist(tmp_path / "mnist_root", n_train=3000, n_test=500)
    m = run_lesson(LENET, "--data-dir", str(tmp_path / "mnist_root"))
    assert m["used_real_mnist"] == 1, "idx files on disk must be read through torchvision.datasets.MNIST"
    # validation comes from the end of the training files, disjoint from the images trained on
    assert m["train_images"] == 2500 and m["val_images"] == 500 and m["test_images"] == 500
    assert m["test_acc"] > 0.4
    out = capsys.readouterr().out
    assert "real MNIST from" in out and "real handwritten digits" in out
    assert "synthetic digits" not in out, "the text must follow the branch that ran"


def test_03_lenet_verdict_follows_the_numbers():
    """--lr 1 diverged (epoch 1 loss 767,370) and ended at chance; the lesson still claimed high accuracy."""
    lesson = load_script(REPO / LENET, "m06_lenet_verdict")
    learned, text = lesson.training_verdict(0.096, 0.784, [1.91, 1.03], 2e-3, 2e-3)
    assert learned and text == ""
    learned, text = lesson.training_verdict(0.096, 0.096, [767370.7, 2.346], 1.0, 2e-3)
    assert not learned and "diverged at --lr 1" in text and "767,370.7" in text and "--lr 0.002" in text
    learned, text = lesson.training_verdict(0.096, 0.096, [2.3025, 2.3025], 1e-7, 2e-3)
    assert not learned and "did not learn" in text and "diverged" not in text
    learned, text = lesson.training_verdict(0.096, 0.90, [float("nan"), 0.5], 0.1, 2e-3)
    assert learned and "diverged" in text  # a non-finite epoch is named even when accuracy recovered
    assert lesson.smoke_note({}, lesson.SMOKE_SIZES) == ""
    assert lesson.smoke_note({"epochs": 1, "batch_size": 64}, lesson.SMOKE_SIZES) == \
        "--smoke uses its own sizes: --epochs 1 -> 2"


def test_03_lenet_says_when_it_did_not_learn(run_lesson, capsys):
    m = run_lesson(LENET, "--lr", "1", "--epochs", "1")
    out = capsys.readouterr().out
    assert m["val_acc_last_epoch"] < 0.2
    assert "training diverged at --lr 1" in out and "reach high accuracy because" not in out
    assert "real learning" not in out
    assert "--smoke uses its own sizes: --epochs 1 -> 2" in out


def test_04_image_classification(run_lesson):
    m = run_lesson(CLASSIFY)
    assert m["used_real_cifar10"] == 0
    assert m["test_acc"] > 0.18  # 10 classes: chance is 0.10; the tiny smoke run already beats it clearly
    assert m["final_train_loss"] < 2.3
    # the recipe, measured: augmentation changes images, OneCycle warms up and anneals, NHWC inputs, smoothing
    assert m["augmented_fraction"] > 0.9
    assert m["lr_peak"] == pytest.approx(0.1, rel=0.01) and m["lr_first"] < 0.1 * m["lr_peak"] and m["lr_last"] < 1e-3
    assert m["inputs_channels_last"] == 1
    assert m["confident_loss_floor"] > 1.0, "label smoothing 0.1 keeps even a certain, correct prediction's loss up"


def test_04_image_classification_flags_turn_the_recipe_off(run_lesson):
    m = run_lesson(CLASSIFY, "--no-augment", "--no-onecycle", "--no-channels-last", "--no-amp",
                   "--label-smoothing", "0")
    assert m["augmented_fraction"] == 0, "--no-augment: the training images come out unchanged"
    assert m["lr_first"] == m["lr_peak"] == m["lr_last"], "--no-onecycle: one constant learning rate"
    assert m["inputs_channels_last"] == 0 and m["bf16_logits"] == 0
    assert m["confident_loss_floor"] < 1e-6, "no smoothing: a certain, correct prediction costs nothing"
    assert m["test_acc"] > 0.18


def test_04_image_classification_train_size_below_batch_size(tmp_path, capsys):
    args = ["--device", "cpu", "--offline", "--out-dir", str(tmp_path / "out"), "--train-size", "50"]
    with pytest.raises(SystemExit) as exit_info:  # batch size 128 > 50 images: drop_last would leave no batch
        run_inprocess(CLASSIFY, args, tmp_path)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--train-size (50) must be at least --batch-size (128)" in err and "Traceback" not in err


def test_04_image_classification_one_batch_one_epoch(tmp_path):
    args = ["--device", "cpu", "--offline", "--out-dir", str(tmp_path / "out"), "--train-size", "40",
            "--batch-size", "32", "--epochs", "1", "--width", "4", "--workers", "0", "--no-onecycle"]
    m = run_inprocess(CLASSIFY, args, tmp_path)[0]
    assert m["steps"] == 1 and m["train_images"] == 40  # 40 images, batches of 32, the last 8 dropped


def test_04_smoke_says_which_typed_flags_it_replaced():
    """--smoke --workers 1 --epochs 1 ran 0 workers and 2 epochs without a word."""
    lesson = load_script(REPO / CLASSIFY, "m06_classify_smoke_note")
    args = lesson.parse_args(["--smoke", "--workers", "1", "--epochs", "2", "--device", "cpu"])
    assert args.set_by_learner == {"workers": 1, "epochs": 2}, "typed flags, even one equal to its default"
    used = {"train_size": 800, "width": 8, "epochs": 2, "batch_size": 32, "workers": 0}
    assert lesson.smoke_note(args.set_by_learner, used) == "--smoke uses its own sizes: --workers 1 -> 0"
    assert lesson.smoke_note(lesson.parse_args(["--smoke"]).set_by_learner, used) == ""


def test_05_torchvision_datasets(run_lesson):
    m = run_lesson(DATASETS)
    assert m["datasets_loaded"] == 0 and m["datasets_failed"] == 3  # --smoke: nothing on disk, no download
    assert m["imagefolder_images"] == 12 and m["imagefolder_classes"] == 3 and m["imagefolder_labels_match"] == 1
    assert m["imagefolder_files_on_disk"] == 12
    assert m["fakedata_batch_size"] == 8 and m["fakedata_side"] == 32 and m["fakedata_repeatable"] == 1
    assert m["transform_output_channels"] == 3 and m["transform_output_side"] == 32


def test_05_torchvision_datasets_reads_mnist_from_disk(run_lesson, tmp_path):
    write_tiny_mnist(tmp_path / "root", n_train=40, n_test=20)
    m = run_lesson(DATASETS, "--data-dir", str(tmp_path / "root"))
    assert m["datasets_loaded"] == 1 and m["mnist_train_len"] == 40
    assert m["mnist_files_on_disk"] == 4  # the four raw idx files


def test_06_data_loaders(run_lesson):
    m = run_lesson("06-cnn-image-processing/06_data_loaders.py")
    assert m["loader_rows_all_images"] == 1, "every configuration delivers every image once per epoch"
    assert m["loader_rows_same_order"] == 1, "one seeded generator: the same order whatever num_workers"
    assert m["uint8_batch_is_uint8"] == 1, "default_collate keeps the uint8 that __getitem__ returns"
    assert m["float32_batch_bytes"] == 4 * m["uint8_batch_bytes"]
    assert m["batched_crop_identity_max_abs_diff"] < 1e-5, "the batched crop with scale 1 and no flip is the identity"
    assert m["minority_fraction_before"] < 0.05
    assert 0.25 < m["minority_fraction_sampled"] < 0.42  # rebalanced to about a third
    assert 0.25 < m["majority_fraction_sampled"] < 0.42


def test_06_workers_claim_follows_the_table():
    """Workers were slower than the main process in every reviewed run, yet 'Workers pay off' was printed."""
    lesson = load_script(REPO / "06-cnn-image-processing/06_data_loaders.py", "m06_loader_verdict")

    def row(rate, first_ms=50.0):
        return {"images_per_s": rate, "epoch1_first_batch_ms": first_ms}

    slow = {"workers=0 (main process)": row(4217, 4.0), "workers=1": row(1309, 58.0), "workers=2": row(1156),
            "workers=2 persistent": row(2687), "workers=2 persistent float32 in __getitem__": row(5000)}
    text = lesson.workers_verdict(slow, 96)
    assert "did not pay off" in text and "4,217" in text and "2,687" in text, "the float32 row is not a worker row"
    fast = {"workers=0 (main process)": row(1000), "workers=2 persistent": row(2500)}
    assert lesson.workers_verdict(fast, 4000).startswith("- Workers pay off") and "2,500" in lesson.workers_verdict(
        fast, 4000)
    alone = lesson.workers_verdict({"workers=0 (main process)": row(4700),
                                    "workers=0 float32 in __getitem__": row(4776)}, 96)
    assert "--max-workers 0" in alone and "did not pay off" not in alone


def test_06_max_workers_0_tries_no_worker(tmp_path, capsys):
    """--max-workers 0 printed 'workers tried up to 0' and then timed a workers=1 row."""
    args = ["--smoke", "--device", "cpu", "--max-workers", "0", "--out-dir", str(tmp_path / "out")]
    m = run_inprocess("06-cnn-image-processing/06_data_loaders.py", args, tmp_path)[0]
    assert m["loader_configs"] == 2 and not any(k.startswith("workers1") for k in m)
    assert "workers=1" not in capsys.readouterr().out


def test_07_custom_datasets(run_lesson):
    m = run_lesson("06-cnn-image-processing/07_custom_datasets.py")
    assert m["files_written"] == m["dataset_len"] == 24 and m["sample_channels"] == 3
    assert m["split_disjoint"] == 1 and m["split_covers_all"] == 1 and m["split_train"] + m["split_val"] == 24
    assert m["iterable_workers"] == 2
    assert m["sharded_exactly_once"] == 1 and m["sharded_duplicates"] == 0 and m["sharded_missing"] == 0
    assert m["sharded_samples_yielded"] == 24
    assert m["naive_samples_yielded"] == 48  # without sharding every worker yields everything


def test_08_resnet_transfer(run_lesson, device, capsys):
    m = run_lesson(TRANSFER)
    assert m["used_imagenet_weights"] == 0 and m["standin_cache_recreated"] == 0
    assert m["block_vs_torchvision_max_abs_diff"] < (1e-6 if device == "cpu" else 1e-3)
    assert m["block_shapes_ok"] == 1
    assert m["grad_growth_plain"] > 10 * m["grad_growth_residual"], "without shortcuts the gradient runs away"
    assert m["feature_map_side"] == 4 and m["imagenet_stem_map_side_on_small_images"] == 1  # 16 px smoke images
    assert m["trainable_params_frozen"] == m["feature_dim"] * 3 + 3 < m["all_params"] / 100, "only the new head"
    assert m["frozen_head_acc"] - m["scratch_acc"] > 0.08, "the pretrained backbone must beat training from scratch"
    assert m["best_transfer_minus_scratch"] > 0.08
    out = capsys.readouterr().out
    assert "without forgetting" not in out
    verdict = "raised" if m["finetune_minus_frozen"] > 0 else "LOWERED" if m["finetune_minus_frozen"] < 0 else "left"
    assert f"fine-tuning {verdict}" in out, "the fine-tuning sentence must follow the measured accuracies"


def test_08_resnet_transfer_recreates_a_corrupt_cache(run_lesson, tmp_path, capsys, device):
    first = run_lesson(TRANSFER)
    cache = next((tmp_path / "cwd" / "data").glob("standin_*.pt"))
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])  # a truncated file, as a crash would leave
    capsys.readouterr()
    second = run_lesson(TRANSFER)
    out = capsys.readouterr().out
    assert "cache corrupt, re-creating" in out and second["standin_cache_recreated"] == 1
    third = run_lesson(TRANSFER)
    assert third["standin_cache_loaded"] == 1 and "loaded the cached stand-in" in capsys.readouterr().out
    assert not list(cache.parent.glob("*.tmp")), "no temporary file left behind"
    if device == "cpu":  # re-created or loaded, the backbone is the same: so are the results
        for key in ("scratch_acc", "frozen_head_acc", "finetune_acc"):
            assert first[key] == second[key] == third[key], key

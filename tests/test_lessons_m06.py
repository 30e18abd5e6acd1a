"""Smoke runs of module 06 with assertions that prove each lesson did its job."""

import struct

import pytest
import torch
from harness import REPO, load_script

pytestmark = pytest.mark.smoke

CONV = "06-cnn-image-processing/01_conv_layers.py"
LENET = "06-cnn-image-processing/03_lenet.py"
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
    assert m["nn_conv_ms"] > 0 and m["unfold_conv_ms"] > 0 and m["unfold_memory_blowup"] == 9


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


def test_03_lenet_synthetic_digits(run_lesson):
    m = run_lesson(LENET)
    assert m["used_real_mnist"] == 0  # --smoke never downloads; nothing on disk here
    assert m["lenet_params"] == 61706
    assert m["vgg16_params"] == 138357544 and m["alexnet_params"] == 61100840
    assert m["test_acc"] > 0.4 > m["test_acc_before"] + 0.2  # far above the 10% of chance after two tiny epochs
    assert m["train_images_per_s"] > 0


def test_03_lenet_reads_real_mnist_files(run_lesson, tmp_path):
    write_tiny_mnist(tmp_path / "mnist_root", n_train=3000, n_test=500)
    m = run_lesson(LENET, "--data-dir", str(tmp_path / "mnist_root"))
    assert m["used_real_mnist"] == 1, "idx files on disk must be read through torchvision.datasets.MNIST"
    assert m["train_images"] == 3000 and m["test_images"] == 500
    assert m["test_acc"] > 0.4


def test_04_image_classification(run_lesson):
    m = run_lesson("06-cnn-image-processing/04_image_classification.py")
    assert m["used_real_cifar10"] == 0
    assert m["test_acc"] > 0.18  # 10 classes: chance is 0.10; the tiny smoke run already beats it clearly
    assert m["augment"] == 1 and m["onecycle"] == 1 and m["channels_last"] == 1
    assert m["train_images_per_s"] > 0 and m["final_train_loss"] < 2.3


def test_04_image_classification_flags_turn_the_recipe_off(run_lesson):
    m = run_lesson("06-cnn-image-processing/04_image_classification.py", "--no-augment", "--no-onecycle",
                   "--no-channels-last", "--no-amp", "--label-smoothing", "0")
    assert (m["augment"], m["onecycle"], m["channels_last"], m["bf16_autocast"]) == (0, 0, 0, 0)


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
    assert m["loader_configs"] >= 2
    assert m["workers0_images_per_s"] > 0 and m["on_device_images_per_s"] > 0
    assert m["minority_fraction_before"] < 0.05
    assert 0.25 < m["minority_fraction_sampled"] < 0.42  # rebalanced to about a third
    assert 0.25 < m["majority_fraction_sampled"] < 0.42


def test_07_custom_datasets(run_lesson):
    m = run_lesson("06-cnn-image-processing/07_custom_datasets.py")
    assert m["files_written"] == m["dataset_len"] == 24 and m["sample_channels"] == 3
    assert m["split_disjoint"] == 1 and m["split_covers_all"] == 1 and m["split_train"] + m["split_val"] == 24
    assert m["iterable_workers"] == 2
    assert m["sharded_exactly_once"] == 1 and m["sharded_duplicates"] == 0 and m["sharded_missing"] == 0
    assert m["sharded_samples_yielded"] == 24
    assert m["naive_samples_yielded"] == 48  # without sharding every worker yields everything


def test_08_resnet_transfer(run_lesson):
    m = run_lesson("06-cnn-image-processing/08_resnet_transfer.py")
    assert m["used_imagenet_weights"] == 0
    assert m["trainable_params_frozen"] == 512 * 3 + 3  # only the new head trains while frozen
    assert m["frozen_head_acc"] - m["scratch_acc"] > 0.08, "the pretrained backbone must beat training from scratch"
    assert m["best_transfer_minus_scratch"] > 0.08

"""Smoke runs of module 05 with assertions that prove each lesson did its job."""

import pytest
from harness import run_inprocess

pytestmark = pytest.mark.smoke

SCHEDULING = "05-training-optimization/01_learning_rate_scheduling.py"
CHECKPOINTING = "05-training-optimization/05_checkpointing.py"


def test_01_learning_rate_scheduling(run_lesson):
    m = run_lesson(SCHEDULING)
    assert m["cosine_closed_form_max_abs_diff"] < 1e-9, "CosineAnnealingLR must follow its closed form"
    assert m["warmup_first_lr"] == pytest.approx(0.1 * m["base_lr"]), "LinearLR warm-up starts at start_factor * lr"
    assert m["warmup_peak_lr"] == pytest.approx(m["base_lr"])
    assert m["onecycle_peak_lr"] == pytest.approx(m["base_lr"], rel=0.05)
    assert m["onecycle_last_lr"] < 1e-3 * m["base_lr"]
    for name in ("constant", "step", "multistep", "exponential", "cosine", "cosine_restarts", "onecycle",
                 "warmup_cosine"):
        assert m[f"final_loss_{name}"] < m["initial_loss"], f"{name}: the loss must fall"
        assert m[f"val_acc_{name}"] > 0.4, f"{name}: accuracy far above chance (0.25)"


@pytest.mark.subprocess
def test_01_learning_rate_scheduling_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(SCHEDULING)
    assert m["cosine_closed_form_max_abs_diff"] < 1e-9


def test_02_batch_normalization(run_lesson):
    m = run_lesson("05-training-optimization/02_batch_normalization.py")
    for dim in ("bn1d", "bn2d"):
        for part in ("train", "eval", "running_mean", "running_var"):
            assert m[f"{dim}_{part}_max_abs_diff"] < 1e-5, f"{dim} {part}: hand-written BN must equal nn.BatchNorm"
    assert m["running_var_vs_unbiased_max_abs_diff"] < 1e-6, "running_var is updated with the unbiased variance"
    assert m["loss_final_with_bn"] < m["loss_first_with_bn"]
    assert m["loss_final_with_bn"] < m["loss_final_without_bn"], "BN converges faster at the same lr and steps"


def test_03_data_augmentation(run_lesson):
    m = run_lesson("05-training-optimization/03_data_augmentation.py")
    assert m["flip_max_abs_diff"] == 0
    assert m["mixup_label_row_sum_max"] == pytest.approx(1.0)
    assert m["cutmix_label_vs_pixels_gap"] < 1e-3, "CutMix's label weight is the fraction of pixels kept"
    assert m["spec_freq_bins_masked"] >= 0 and m["spec_frames_masked"] >= 0
    assert m["spec_freq_bins_masked"] + m["spec_frames_masked"] > 0, "SpecAugment must mask something"
    assert m["acc_no_augmentation"] > 0.2 and m["acc_augmentation"] > 0.2, "both runs far above chance (0.1)"
    assert m["augmentation_gain"] == pytest.approx(m["acc_augmentation"] - m["acc_no_augmentation"])


def test_04_early_stopping(run_lesson, device):
    m = run_lesson("05-training-optimization/04_early_stopping.py")
    assert m["stopped_early"] and m["stop_epoch"] < m["max_epochs"] - 1, "must stop before the epoch limit"
    assert m["stop_epoch"] - m["best_epoch"] == m["patience"], "stops exactly `patience` epochs after the best"
    assert m["restored_vs_best_epoch_max_abs_diff"] == 0, "restored weights are the best epoch's, exactly"
    assert m["restored_vs_last_epoch_max_abs_diff"] > 0
    # the same weights give the same loss: bit for bit on the CPU; a GPU's kernels promise it only to rounding
    assert m["restored_val_loss"] == pytest.approx(m["best_val_loss"], rel=0 if device == "cpu" else 1e-6, abs=0)
    assert m["restored_val_loss"] < m["last_val_loss"]
    assert m["train_loss_at_stop"] < m["train_loss_at_best"], "overfitting: train loss kept falling"
    assert m["val_loss_at_limit_without_stopping"] > m["restored_val_loss"], "training to the limit overfits"
    assert m["epochs_saved"] > 0


def test_05_checkpointing(run_lesson, device):
    m = run_lesson(CHECKPOINTING)
    if device == "cpu":
        assert m["resume_max_abs_diff"] == 0 and m["resume_bit_identical"], "resumed run must be bit-identical"
    else:
        assert m["resume_max_abs_diff"] < 1e-4
    assert m["no_rng_resume_max_abs_diff"] > 0, "without the RNG states the resumed run drifts"
    assert m["no_optimizer_resume_max_abs_diff"] > 0, "without the optimizer state the resumed run drifts"
    assert m["missing_checkpoint_clear_message"] and m["corrupt_checkpoint_clear_message"]


def _checkpointing(tmp_path, *flags):
    args = ["--smoke", "--device", "cpu", "--out-dir", str(tmp_path / "out"), *flags]
    return run_inprocess(CHECKPOINTING, args, tmp_path)[0]


def test_05_checkpointing_resume_continues_the_demo_checkpoint(tmp_path):
    demo = _checkpointing(tmp_path)
    resumed = _checkpointing(tmp_path, "--resume", "--epochs", str(demo["epochs"] + 2))
    assert resumed["resumed_from_epoch"] == demo["epochs"]
    assert resumed["final_epoch"] == demo["epochs"] + 2


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_05_checkpointing_bad_checkpoint_gives_a_clear_message(tmp_path, capsys, damage):
    ckpt = tmp_path / "out" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    if damage == "garbage":
        ckpt.write_bytes(b"\x00garbage, not a zip archive\xff" * 20)
    with pytest.raises(SystemExit) as exit_info:
        _checkpointing(tmp_path, "--resume")
    message = str(exit_info.value.code)
    assert exit_info.value.code != 0 and message.startswith("cannot resume:"), message
    assert ("corrupt" if damage == "garbage" else "no checkpoint at") in message
    assert str(ckpt) in message, "the message names the file"
    assert "Traceback" not in capsys.readouterr().err


def test_06_tensorboard(run_lesson):
    m = run_lesson("05-training-optimization/06_tensorboard.py")
    assert m["scalar_tags"] >= 4 and m["histogram_tags"] >= 2 and m["image_tags"] >= 1
    assert m["graph_found"] and m["hparams_found"] and m["hparam_metric_tags"] >= 1
    assert m["pr_curve_tags"] == 4
    assert m["embedding_files"] >= 3  # tensors.tsv, metadata.tsv, projector_config.pbtxt (+ sprite.png)
    assert m["runs_found"] == 2
    assert m["scalar_readback_max_abs_diff"] < 1e-6
    assert m["best_val_accuracy"] > 0.5, "chance is 0.25"


def test_07_hyperparameter_tuning(run_lesson):
    m = run_lesson("05-training-optimization/07_hyperparameter_tuning.py")
    for name in ("grid", "random", "successive_halving"):
        assert m[f"best_val_acc_{name}"] > m["worst_val_acc"], f"{name} found a config better than the worst"
    assert m["epochs_spent_grid"] == m["epochs_spent_random"] == m["epochs_spent_successive_halving"]
    assert m["trials_successive_halving"] > m["trials_random"]
    assert m["test_acc_best_config"] > m["test_acc_worst_config"]
    assert m["test_acc_best_config"] > 0.35, "chance is 0.2"

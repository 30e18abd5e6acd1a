"""Smoke runs of module 04 (neural networks) with assertions that prove each lesson did its job."""

import struct

import numpy as np
import pytest
from harness import REPO, load_script

pytestmark = pytest.mark.smoke

NN_MODULE = "04-neural-networks/01_nn_module.py"
LINEAR = "04-neural-networks/02_linear_layers.py"
ACTIVATIONS = "04-neural-networks/03_activations.py"
LOSSES = "04-neural-networks/04_loss_functions.py"
OPTIMIZERS = "04-neural-networks/05_optimizers.py"
TRAINING_LOOP = "04-neural-networks/06_training_loop.py"
MLP = "04-neural-networks/07_mlp_classification.py"
REGULARIZATION = "04-neural-networks/08_regularization.py"


def test_01_nn_module(run_lesson):
    m = run_lesson(NN_MODULE)
    assert m["n_parameters"] == m["n_parameters_by_hand"] == 740
    assert m["plain_list_parameters"] == 0  # layers in a Python list are invisible to .parameters()
    assert m["n_buffers"] == 2 and m["state_dict_entries"] == 10  # the non-persistent buffer is not saved
    assert m["reload_max_abs_diff"] == 0.0
    assert m["hooked_layers"] == 4 and m["hook_max_abs_diff"] < 1e-6 and m["hook_grad_max_abs_diff"] < 1e-7
    assert m["train_mode_pass_diff"] > 1e-3  # dropout: two passes differ
    assert m["eval_mode_pass_diff"] == 0.0
    assert m["train_mode_flags"] == m["n_modules"] and m["eval_mode_flags"] == 0


@pytest.mark.subprocess
def test_01_nn_module_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(NN_MODULE)
    assert m["n_parameters"] == m["n_parameters_by_hand"]
    assert m["reload_max_abs_diff"] == 0.0


def test_02_linear_layers(run_lesson):
    m = run_lesson(LINEAR)
    assert m["linear_max_abs_error"] < 1e-5 and m["functional_max_abs_error"] < 1e-5
    assert m["batched_max_abs_error"] < 1e-5
    assert m["n_parameters_linear_5_3"] == 18
    assert m["default_init_max_abs_weight"] <= m["default_init_bound"] + 1e-7
    # across depth: tiny init vanishes, unit-variance init explodes, Kaiming keeps ReLU activations of order 1
    assert m["final_std_small_normal"] < 1e-6
    assert m["final_std_unit_normal"] > 1e3
    assert 0.2 < m["final_std_kaiming_relu"] < 5
    assert m["final_std_pytorch_default"] < m["final_std_kaiming_relu"] / 10
    assert 0.05 < m["final_std_xavier_tanh"] < 1


def test_03_activations(run_lesson):
    m = run_lesson(ACTIVATIONS)
    assert m["derivative_max_abs_error"] < 1e-5  # autograd equals the textbook formulas
    assert m["max_derivative_sigmoid"] == pytest.approx(0.25, abs=1e-4)
    assert m["max_derivative_tanh"] == pytest.approx(1.0, abs=1e-4)
    assert m["linear_collapse_max_abs_error"] < 1e-5
    # vanishing gradients, in numbers: the first sigmoid layer gets a tiny fraction of the last layer's gradient
    assert m["grad_ratio_first_to_last_sigmoid"] < 1e-3
    assert m["grad_ratio_first_to_last_relu"] > 0.05 and m["grad_ratio_first_to_last_gelu"] > 0.05
    assert m["grad_ratio_first_to_last_relu"] > 1000 * m["grad_ratio_first_to_last_sigmoid"]


def test_04_loss_functions(run_lesson):
    m = run_lesson(LOSSES)
    assert m["worst_by_hand_error"] < 1e-5  # every loss equals its formula
    assert m["cross_entropy_max_abs_error"] < 1e-5 and m["ce_vs_log_softmax_nll_max_abs_error"] < 1e-5
    assert m["label_smoothing_max_abs_error"] < 1e-5 and m["class_weight_max_abs_error"] < 1e-5
    assert m["reduction_max_abs_error"] < 1e-4 and m["ignore_index_max_abs_error"] < 1e-5
    # at logit 50 with label 0: BCELoss on a sigmoid is clamped at 100 with zero gradient; with logits it is right
    assert m["bce_loss_at_logit_50"] == pytest.approx(100.0) and m["bce_grad_at_logit_50"] == 0.0
    assert m["bce_logits_loss_at_logit_50"] == pytest.approx(50.0) and m["bce_logits_grad_at_logit_50"] == 1.0
    assert m["bce_extreme_max_abs_error"] > 10 and m["bce_logits_extreme_max_abs_error"] < 1e-4
    assert m["softmax_before_ce_loss"] != pytest.approx(m["cross_entropy_loss"])


def test_05_optimizers(run_lesson):
    m = run_lesson(OPTIMIZERS)
    for name in ("sgd", "sgd_momentum", "adam", "adamw"):
        assert m[f"{name}_max_abs_diff"] <= 1e-6, name  # hand-written == torch.optim, step for step
    assert m["rosenbrock_adam_loss"] < m["rosenbrock_sgd_loss"]
    assert m["rosenbrock_sgd_momentum_loss"] < m["rosenbrock_sgd_loss"]
    # AdamW decays a weight with no gradient by exactly 1 - (1 - lr wd)^T; Adam's L2 decay depends on the gradient
    assert m["adamw_decay_no_grad"] == pytest.approx(m["adamw_decay_expected"], rel=1e-4)
    assert m["adam_decay_no_grad"] > 3 * m["adamw_decay_no_grad"]
    assert m["adam_decay_large_grad"] < m["adamw_decay_large_grad"]
    # gradient clipping: the returned norm is the total norm before clipping; afterwards max_norm, same direction
    assert m["clip_norm_before"] == pytest.approx(m["clip_norm_by_hand"], rel=1e-5) and m["clip_norm_before"] > 10
    assert m["clip_norm_after"] == pytest.approx(1.0, rel=1e-4) and m["clip_direction_cosine"] > 1 - 1e-5
    assert m["clean_loss_after_unclipped_step"] > 2 * m["clean_loss_before"]  # the outlier wrecks one plain step
    assert m["clean_loss_after_clipped_step"] < 1.1 * m["clean_loss_before"]


def test_06_training_loop(run_lesson):
    m = run_lesson(TRAINING_LOOP)
    assert m["n_train"] + m["n_val"] + m["n_test"] == 600
    assert m["last_epoch_train_loss"] < 0.5 * m["first_epoch_train_loss"]
    assert m["test_accuracy"] > 0.8 > 2 * m["chance_accuracy"]
    assert m["best_val_accuracy"] == m["reloaded_val_accuracy"]  # the checkpoint holds the best epoch's weights
    assert 1 <= m["best_epoch"] <= m["epochs"]
    assert m["train_mode_pass_diff"] > 1e-3 and m["eval_mode_pass_diff"] == 0.0  # dropout on, then off
    assert m["no_grad_output_requires_grad"] == 0
    assert m["reproducibility_max_abs_diff"] == 0.0
    # overfit one batch first: the wired loop memorises it, the mis-wired optimizer does not move the loss
    assert m["overfit_batch_final_loss"] < 0.05 < 0.5 * m["overfit_batch_first_loss"]
    assert m["overfit_batch_broken_final_loss"] > 0.95 * m["overfit_batch_first_loss"]


def test_06_training_loop_tiny_data_and_a_batch_larger_than_it(run_lesson):
    m = run_lesson(TRAINING_LOOP, "--epochs", "1", "--points", "60", "--batch-size", "1000", smoke=False)
    assert (m["n_train"], m["n_val"], m["n_test"]) == (42, 9, 9)  # one batch of 42 per epoch
    assert m["best_epoch"] == 1 and m["best_val_accuracy"] == m["reloaded_val_accuracy"]
    assert m["eval_mode_pass_diff"] == 0.0


def test_07_mlp_classification_offline_stand_in(run_lesson, tmp_path, capsys):
    m = run_lesson(MLP)  # no MNIST under the temporary cwd's data/: synthetic digits
    assert "(summation order only)" in capsys.readouterr().out  # the difference judged against the logits' size
    assert m["used_real_mnist"] == 0
    assert m["n_train"] + m["n_val"] == 1500 and m["n_val"] == 150  # validation held out of the training images
    assert m["last_epoch_train_loss"] < m["first_epoch_train_loss"]
    assert m["last_epoch_val_accuracy"] > 0.35 and m["test_accuracy"] > 0.35  # chance is 0.10
    # blind to pixel order: permuted W1 columns give the same logits, and training on shuffled pixels the same model
    assert m["permuted_weights_max_abs_diff"] < 1e-4
    assert abs(m["shuffled_pixels_test_accuracy"] - m["test_accuracy"]) < 0.03
    assert m["shuffled_pixels_prediction_agreement"] > 0.95
    for name in ("test_predictions.png", "training_curves.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000, name


def test_07_mlp_classification_batch_larger_than_data(run_lesson):
    m = run_lesson(MLP, "--offline", "--epochs", "1", "--batch-size", "100000", "--synthetic-train", "20",
                   "--synthetic-test", "10", "--hidden", "1", smoke=False)
    assert m["n_train"] == 18 and m["n_val"] == 2 and m["batch_size"] == 18 and m["epochs"] == 1


def write_idx_mnist(root, n_train: int = 300, n_test: int = 100) -> None:
    """Tiny files in MNIST's on-disk idx format under <root>/MNIST/raw: digit k is a bright bar at rows 2k+4..2k+5
    on dim noise, so the real loading code is exercised on data that can be learned."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label + 4: 2 * label + 6, 4:24] = 255
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def test_07_mlp_classification_reads_real_mnist_files(run_lesson, tmp_path):
    write_idx_mnist(tmp_path / "mnist_root")
    # --smoke never downloads but uses MNIST files that are already on disk, through torchvision.datasets.MNIST
    m = run_lesson(MLP, "--data-dir", str(tmp_path / "mnist_root"))
    assert m["used_real_mnist"] == 1
    assert m["n_train"] == 270 and m["n_val"] == 30 and m["n_test"] == 100
    assert m["test_accuracy"] > 0.5


def test_07_mlp_classification_offline_flag_uses_files_on_disk(run_lesson, tmp_path):
    write_idx_mnist(tmp_path / "mnist_root")
    m = run_lesson(MLP, "--data-dir", str(tmp_path / "mnist_root"), "--offline", "--epochs", "3", smoke=False)
    assert m["used_real_mnist"] == 1 and m["epochs"] == 3
    assert m["test_accuracy"] > 0.8


def test_08_regularization(run_lesson):
    m = run_lesson(REGULARIZATION)
    assert m["baseline_train_acc"] >= 0.99  # memorised, noisy labels included
    assert m["baseline_gap"] > 0.15 and m["baseline_loss_gap"] > 0.5
    for key in ("dropout", "weight_decay", "l1", "early_stopping", "dropout_weight_decay"):
        assert m[f"{key}_gap"] < m["baseline_gap"], key  # every regularizer shrinks the train-validation gap
        assert m[f"{key}_loss_gap"] < 0.5 * m["baseline_loss_gap"], key
        assert m[f"{key}_val_loss"] < m["baseline_val_loss"], key
    assert m["early_stopping_epochs_run"] < m["baseline_epochs_run"]


def test_08_regularization_notes_follow_the_table():
    lesson = load_script(REPO / REGULARIZATION)
    base = {"train_acc": 1.0, "val_acc": 0.720, "gap": 0.280, "train_loss": 0.0136, "val_loss": 1.6424}
    good = {"train_acc": 0.830, "val_acc": 0.743, "gap": 0.087, "train_loss": 0.3962, "val_loss": 0.5658}
    assert lesson.regularizer_notes(base, {"dropout 0.7": good}) == [], "the default table needs no note"
    weak = {"train_acc": 1.0, "val_acc": 0.719, "gap": 0.281, "train_loss": 0.0219, "val_loss": 1.4401}
    strong = {"train_acc": 0.525, "val_acc": 0.503, "gap": 0.022, "train_loss": 0.6919, "val_loss": 0.6942}
    notes = lesson.regularizer_notes(base, {"dropout 0.0": dict(base), "weight decay 1.0": weak, "L1 1": strong,
                                            "dropout 0.7": good})
    assert len(notes) == 3
    assert "changed nothing" in notes[0] and "too weak" in notes[1] and "too strong" in notes[2]

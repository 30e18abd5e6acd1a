"""Smoke runs of module 03 (autograd and backpropagation) with assertions that prove each lesson did its job."""

import pytest
import torch
from harness import REPO, load_script

pytestmark = pytest.mark.smoke

BASICS = "03-autograd-backprop/01_autograd_basics.py"
GRAPHS = "03-autograd-backprop/02_computational_graphs.py"
GRADIENTS = "03-autograd-backprop/03_gradient_computation.py"
CUSTOM = "03-autograd-backprop/04_custom_autograd.py"
DESCENT = "03-autograd-backprop/05_gradient_descent.py"
ACCUMULATION = "03-autograd-backprop/06_gradient_accumulation.py"


def test_01_autograd_basics(run_lesson):
    m = run_lesson(BASICS)
    assert m["first_derivative"] == pytest.approx(8.75)  # d/dx (x^3 + 2x) at 1.5
    assert m["first_derivative_error"] < 1e-5
    assert m["leaf_grad_error"] < 1e-5 and m["retained_grad_error"] < 1e-6
    assert m["nonleaf_grad_is_none"] is True
    assert m["accumulation_ratio"] == pytest.approx(2.0)  # a second backward adds the same gradient again
    assert m["cleared_grad_error"] == 0.0
    assert m["second_backward_raised"] is True
    assert m["retain_graph_error"] < 1e-4
    assert m["grad_x_times_x"] == pytest.approx(6.0) and m["grad_x_times_detached_x"] == pytest.approx(3.0)
    assert m["detach_inplace_raised"] is True  # autograd notices an edit through detach()
    assert m["data_inplace_silent_grad"] == 0.0  # ... but not through .data: a silently wrong gradient
    assert m["inference_tensor_in_autograd_raised"] is True
    assert m["no_grad_output_requires_grad"] is False
    # --smoke: a 64x64 MLP on a (64, 64) batch; backward needs at least the input and the hidden activation
    assert m["saved_for_backward_bytes_grad"] >= 2 * 64 * 64 * 4 and m["saved_for_backward_bytes_no_grad"] == 0


@pytest.mark.subprocess
def test_01_autograd_basics_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(BASICS)
    assert m["second_backward_raised"] is True
    assert m["accumulation_ratio"] == pytest.approx(2.0)


def test_02_computational_graphs(run_lesson, tmp_path):
    m = run_lesson(GRAPHS)
    assert m["graph_png_written"] is True and any(p.stat().st_size > 10_000 for p in (tmp_path / "out").glob("*.png"))
    assert m["graph_leaves"] == 2  # W and b; the constants x and c add no node
    assert m["graph_nodes"] == 11
    assert m["max_abs_diff_manual_vs_autograd_W"] < 1e-5
    assert m["max_abs_diff_manual_vs_autograd_b"] < 1e-5
    assert m["hook_grad_error"] < 1e-5
    assert m["nodes_loop_1"] < m["nodes_loop_2"] < m["nodes_loop_4"]  # define-by-run: the loop shapes the graph


def test_03_gradient_computation(run_lesson, device):
    m = run_lesson(GRADIENTS)
    tol = 1e-3 if device == "mps" else 1e-6  # MPS has no float64
    assert m["max_abs_error_vs_finite_differences"] < tol
    if device != "mps":
        # float32 finite differences are far worse: why gradient checks use float64
        assert m["max_abs_error_vs_finite_differences_float32"] > 100 * m["max_abs_error_vs_finite_differences"]
    for key in ("vjp_error", "jacobian_error", "hessian_error", "double_backward_error", "per_sample_grad_error",
                "per_sample_mean_vs_batch_grad_error"):
        assert m[key] < tol, key


def test_03_gradient_computation_verdicts_follow_the_errors():
    lesson = load_script(REPO / GRADIENTS)
    f64 = torch.float64
    assert lesson.fd_check_verdict(7.4e-10, 1e-6, f64) == "", "the default check needs no comment"
    assert "truncation" in lesson.fd_check_verdict(1.27, 1.0, f64)  # --eps 1: a wide step
    assert "rounding" in lesson.fd_check_verdict(4e-2, 1e-14, f64)  # --eps 1e-14: a tiny step
    assert "rounding swamps" in lesson.float32_verdict(2.65e-4, 7.4e-10, f64)
    wide = lesson.float32_verdict(2.65e-4, 1.27, f64)  # --eps 1: float32 came out closer
    assert "rounding swamps" not in wide and "no worse" in wide


def test_04_custom_autograd(run_lesson):
    m = run_lesson(CUSTOM)
    assert m["gradcheck_softplus"] is True and m["gradcheck_logsumexp"] is True
    assert m["gradgradcheck_softplus"] is True
    assert m["gradcheck_wrong_backward"] is False  # the sign error is caught
    assert m["softplus_vs_builtin_error"] < 1e-8 and m["logsumexp_vs_builtin_error"] < 1e-10
    assert m["naive_nonfinite_count"] >= 4 and m["custom_nonfinite_count"] == 0
    assert m["torch_func_error"] < 1e-10
    # reason 3, measured: the custom Functions keep about the input; autograd's op-by-op version twice that
    for name in ("softplus", "logsumexp"):
        assert m[f"{name}_custom_saved_bytes"] <= 1.01 * m["saved_input_bytes"], name
        assert m[f"{name}_autograd_saved_bytes"] >= 1.9 * m[f"{name}_custom_saved_bytes"], name
    assert m["round_max_grad"] == 0.0 and m["ste_max_grad"] == 3.0  # d round(3x)/dx: 0 truly, 3 straight-through
    assert m["round_fit_final_loss"] > 1.0 and m["ste_fit_final_loss"] < 0.01 * m["ste_fit_first_loss"]
    assert m["ste_fit_weight"] == pytest.approx(2.75)


def test_05_gradient_descent(run_lesson, device):
    m = run_lesson(DESCENT)
    # bitwise on CPU; a GPU SGD kernel may fuse p + (-lr) * g into one FMA (one rounding, not two), so the by-hand
    # p -= lr * p.grad can differ by an ulp per step: parameters of size ~3 have ulps of ~2.4e-7
    tol = 1e-6 if device == "cpu" else 1e-5
    assert m["linear_manual_vs_sgd_max_abs_diff"] <= tol
    assert m["logistic_manual_vs_sgd_max_abs_diff"] <= tol
    assert m["linear_final_loss"] < 0.05 * m["linear_initial_loss"]
    assert m["linear_gap_to_least_squares"] < 1e-2
    assert m["linear_grad_formula_error"] < 1e-5
    assert m["logistic_final_loss"] < 0.5 * m["logistic_initial_loss"]
    assert m["logistic_accuracy"] > 0.85  # two well-separated blobs; chance is 0.5
    # the sweep: a good lr beats a tiny one early, and past 2 / lam_max the loss grows
    assert m["loss_at_step_10_lr_good"] < m["loss_at_step_10_lr_tiny"]
    assert m["final_loss_lr_too_big"] > m["linear_initial_loss"] > m["final_loss_lr_edge"]


def test_04_05_losses_end_after_the_last_update():
    """--steps 1 printed 'loss 11.7987 -> 11.7987': the last loss was the one before the last update."""
    torch.manual_seed(0)
    custom = load_script(REPO / CUSTOM)
    x = torch.linspace(-1, 1, 16)
    first, last, _ = custom.fit_quantised(custom.RoundSTE.apply, x, 2.7 * x, 1, lr=0.5)
    assert last < first, "one STE step already lowers the loss"
    descent = load_script(REPO / DESCENT)
    X = torch.randn(32, 3)
    y = X @ torch.tensor([2.0, -3.0, 0.5])
    _, losses = descent.descend_by_hand(descent.linear_loss, X, y, 0.1, 1)
    assert len(losses) == 2 and losses[1] < losses[0], "losses[k] is the loss after k updates"
    _, diverged = descent.descend_by_hand(descent.linear_loss, X, y, 1e6, 50)
    assert diverged[-1] > 1e20 and len(diverged) < 51, "a divergence still stops before the numbers overflow"


def test_06_gradient_accumulation(run_lesson):
    m = run_lesson(ACCUMULATION)  # batch 64 = 4 pieces of 16
    assert m["correct_scaling_max_abs_diff"] <= 1e-6
    assert m["no_scaling_norm_ratio"] == pytest.approx(m["pieces"], rel=1e-4)  # pieces times too large
    assert m["no_scaling_over_pieces_max_abs_diff"] <= 1e-6 and m["no_scaling_cosine"] == pytest.approx(1, abs=1e-6)
    assert m["no_scaling_max_abs_diff"] > 1e-2
    assert m["uneven_pieces"] and m["last_piece_example_weight"] == pytest.approx(56 / (4 * 8))  # 16+16+16+8
    assert m["uneven_share_scaling_max_abs_diff"] <= 1e-6
    assert m["uneven_steps_scaling_max_abs_diff"] > 1e-3
    assert m["training_params_max_abs_diff"] <= 1e-5
    assert m["full_batch_final_loss"] < 0.8 * m["full_batch_initial_loss"]
    assert m["forgot_zero_grad_params_max_abs_diff"] > 1e-2
    assert not m["batchnorm_single_example_raised"] and m["batchnorm_relative_diff"] > 0.01
    # checkpointing: a fraction of the activation bytes, every block run twice, the same gradient
    assert m["checkpoint_saved_bytes"] < 0.25 * m["checkpoint_plain_saved_bytes"]
    assert m["checkpoint_micro_saved_bytes"] == pytest.approx(m["checkpoint_plain_saved_bytes"] / 4, rel=1e-6)
    assert m["checkpoint_block_forwards"] == 2 * m["plain_block_forwards"] == 8
    assert m["checkpoint_grad_max_abs_diff"] <= 1e-6


def test_06_gradient_accumulation_forgot_zero_grad_note_and_final_loss():
    lesson = load_script(REPO / ACCUMULATION)
    one_step = lesson.forgot_zero_grad_note(1)
    assert "changes nothing" in one_step and "not this SGD" not in one_step
    assert "not this SGD" in lesson.forgot_zero_grad_note(20)
    # the losses end with the loss after the last update: one step already moves it
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    losses = lesson.train(model, x, y, 1, 0.1, None)
    assert len(losses) == 2 and losses[1] < losses[0]


def test_06_gradient_accumulation_uneven_flags(run_lesson):
    m = run_lesson(ACCUMULATION, "--batch", "30", "--micro", "8")
    assert m["pieces"] == 4
    assert m["correct_scaling_max_abs_diff"] <= 1e-6
    assert m["full_batch_steps_scaling_max_abs_diff"] > 1e-3  # 30 = 8 + 8 + 8 + 6: 1/4 is not each piece's share
    # unscaled uneven pieces: not a multiple of the full gradient, so neither 4 times it nor parallel to it
    assert abs(m["no_scaling_norm_ratio"] - 4) > 1e-3 and m["no_scaling_over_pieces_max_abs_diff"] > 1e-3
    assert m["uneven_pieces"] and m["last_piece_example_weight"] == pytest.approx(30 / (4 * 6))


def test_06_gradient_accumulation_pieces_of_one_example(run_lesson):
    m = run_lesson(ACCUMULATION, "--micro", "1")  # 64 pieces of one: BatchNorm cannot train on them
    assert m["pieces"] == 64 and m["correct_scaling_max_abs_diff"] <= 1e-6
    assert m["batchnorm_single_example_raised"] and "batchnorm_max_abs_diff" not in m
    assert not m["uneven_pieces"]  # pieces of one are always even: 1/steps is the share
    assert m["uneven_steps_scaling_max_abs_diff"] <= 1e-6
    assert m["checkpoint_micro_saved_bytes"] < m["checkpoint_plain_saved_bytes"] / 32


def test_06_gradient_accumulation_last_piece_of_one(run_lesson):
    m = run_lesson(ACCUMULATION, "--batch", "9", "--micro", "2")  # 2 + 2 + 2 + 2 + 1
    assert m["batchnorm_single_example_raised"]
    assert m["uneven_pieces"] and m["last_piece_example_weight"] == pytest.approx(9 / 5)
    assert m["uneven_steps_scaling_max_abs_diff"] > 1e-3 and m["uneven_share_scaling_max_abs_diff"] <= 1e-6

"""Smoke runs of module 09's first three lessons (custom architectures, ensembles, mixed precision) with
assertions that prove each lesson did its job."""

import pytest
import torch
from harness import REPO, load_script

pytestmark = pytest.mark.smoke

ARCH = "09-custom-models/01_custom_architectures.py"
ENSEMBLES = "09-custom-models/02_model_ensembles.py"
AMP = "09-custom-models/03_mixed_precision.py"

BLOCK_KEYS = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
              "bn1.num_batches_tracked", "conv2.weight", "bn2.weight", "bn2.bias", "bn2.running_mean",
              "bn2.running_var", "bn2.num_batches_tracked", "se.fc1.weight", "se.fc1.bias", "se.fc2.weight",
              "se.fc2.bias"]


def test_01_custom_architectures(run_lesson):
    m = run_lesson(ARCH)
    # buffers: persistent ones are saved, the non-persistent counter is not
    assert m["pixel_mean_in_state_dict"] == 1 and m["exit_counts_in_state_dict"] == 0
    assert m["state_dict_entries"] == m["buffers"] - 1 + 27  # 27 parameter tensors at depth 2 in --smoke
    assert m["init_identity_max_abs_diff"] == 0.0  # zero-initialised residual branches: blocks start as identity
    assert m["pre_hook_rejected_bad_shape"] == 1 and m["hook_calls_after_remove"] == 0
    assert m["test_acc"] > 0.6 and m["early_head_test_acc"] > 0.5  # chance is 10%
    assert 0.0 < m["early_exit_fraction"] < 1.0  # some digits leave early, some go deeper: the data decides
    assert m["noisy_early_exit_fraction"] < m["early_exit_fraction"]  # noisy digits go deeper more often
    # weight tying: one Parameter counted once, the state_dict lists it twice, gradients of both uses summed
    v, d = m["tying_vocab"], m["tying_dim"]
    assert m["tied_is_same_object"] == 1 and m["untied_params"] - m["tied_params"] == v * d
    assert m["tied_state_dict_numel"] == m["untied_params"]
    assert m["tied_grad_vs_sum_max_abs_diff"] < 1e-6
    # partial load: 14 keys of the new block (BatchNorm fills in num_batches_tracked itself), the re-made early head
    # and the parity head missing; the digit head unexpected
    assert m["partial_missing_keys"] == 14 + 2 + 2 and m["partial_unexpected_keys"] == 2
    assert m["partial_shape_mismatch_keys"] == 2 and m["strict_false_size_mismatch_raised"] == 1
    assert m["parity_transfer_test_acc"] > 0.7  # chance is 50%
    assert m["compiled_max_abs_diff"] < 1e-4 and m["compile_backend_code"] == 2  # aot_eager in --smoke


def test_01_exit_verdict_claims_only_what_the_counts_show():
    lesson = load_script(REPO / ARCH, "m09_arch_for_exits")
    # the --smoke run: 58 clean digits of 360 leave early, 11 noisy ones; 47 only when clean
    claim = lesson.exit_verdict(58 / 360, 11 / 360, 47, 0, 360, 0.5)
    assert claim == "noisy digits leave early 3% of the time vs 16%, less often: harder inputs get more computation"
    # --lr 1: one clean digit of 360 left early, no noisy one; both round to 0%
    close = lesson.exit_verdict(1 / 360, 0.0, 1, 0, 360, 0.5)
    assert "0 of 360 vs 1 of 360" in close and "too close to say" in close and "less often" not in close
    none = lesson.exit_verdict(0.0, 0.0, 0, 0, 360, 1.0)
    assert "no test digit leaves early" in none and "never reaches 1 " in none
    more = lesson.exit_verdict(20 / 360, 60 / 360, 0, 40, 360, 0.5)
    assert "more often" in more and "did not get more computation" in more


def test_01_explicit_flags_are_honoured_under_smoke():
    lesson = load_script(REPO / ARCH, "m09_arch_for_flags")
    assert lesson.parse_args(["--smoke", "--exit-threshold", "1"]).exit_threshold == 1.0  # was lowered to 0.5
    assert lesson.parse_args(["--smoke"]).exit_threshold == 0.5 and lesson.parse_args([]).exit_threshold == 0.95
    smoke = lesson.parse_args(["--smoke"])
    assert smoke.compile_backend == "aot_eager" and not smoke.compile_backend_given
    assert lesson.parse_args(["--compile-backend", "eager"]).compile_backend_given
    with pytest.raises(SystemExit) as exc:
        lesson.parse_args(["--exit-threshold", "0"])
    assert exc.value.code == 2


def test_01_compile_report_has_figures_only_for_a_compile_that_ran():
    """--compile-backend none used to print a compile time, an agreement and a 1.00x speedup for a compile that
    never happened; an explicit eager/aot_eager was told to drop --smoke to see inductor."""
    lesson = load_script(REPO / ARCH, "m09_arch_for_compile")
    [none] = lesson.compile_report("none", True, 1024, 5, 79.5)
    assert none.startswith("--compile-backend none: nothing compiled") and "79.50 ms" in none
    assert "compile" not in none.replace("--compile-backend", "").replace("nothing compiled", "")
    smoke = lesson.compile_report("aot_eager", False, 1024, 5, 80.0, 1.5, 0.0, 40.0)
    assert "-> 2.00x" in smoke[1] and "run without --smoke, or with --compile-backend inductor" in smoke[2]
    explicit = lesson.compile_report("eager", True, 1024, 5, 80.0, 1.5, 0.0, 40.0)
    assert "--compile-backend inductor measures that" in explicit[2] and "--smoke" not in explicit[2]
    assert len(lesson.compile_report("inductor", True, 1024, 5, 80.0, 20.0, 1e-6, 30.0)) == 2


def test_02_ensemble_note_follows_the_numbers():
    lesson = load_script(REPO / ENSEMBLES, "m09_ensembles_for_note")
    good = lesson.ensemble_note({"nll": 0.290, "ece": 0.028}, {"nll": 0.268, "ece": 0.021})
    assert good.startswith("- Averaging members that disagree on hard digits: test NLL 0.290 (best member) -> 0.268")
    worse = lesson.ensemble_note({"nll": 1.776, "ece": 0.563}, {"nll": 1.790, "ece": 0.601})  # --weight-decay 1
    assert "did not help" in worse and "both worse" in worse and "disagree on hard digits:" not in worse
    mixed = lesson.ensemble_note({"nll": 2.143, "ece": 0.050}, {"nll": 2.083, "ece": 0.062})  # --hidden 1
    assert "NLL better, ECE worse" in mixed


def test_03_scaler_note_follows_the_flushed_counts():
    lesson = load_script(REPO / AMP, "m09_amp_for_scaler")
    assert "so those values stay above fp16's floor" in lesson.scaler_note((0, 0, 0))
    lr1 = lesson.scaler_note((0, 15, 7))  # --lr 1: the GradScaler row still had zeros
    assert "stay above" not in lr1 and "did not lift all of them" in lr1
    assert "0 activation gradients (15 with loss / 16) and 7 parameter gradients still reached 0" in lr1


def test_01_partial_load_reports_exact_keys():
    lesson = load_script(REPO / ARCH, "m09_arch_for_keys")
    trained = lesson.DigitNet(8, 2)
    bigger = lesson.initialise(lesson.DigitNet(8, 3, task="parity", num_classes=2))
    report = lesson.transfer_load(bigger, trained.state_dict())
    # BatchNorm fills in a missing num_batches_tracked itself (old checkpoints lack it), so those are not reported
    expected_missing = {f"blocks.2.{k}" for k in BLOCK_KEYS if "num_batches" not in k} | {
        "heads.early.weight", "heads.early.bias", "heads.parity.weight", "heads.parity.bias"}
    assert set(report["missing"]) == expected_missing, sorted(set(report["missing"]) ^ expected_missing)
    assert len(report["missing"]) == len(expected_missing)
    assert sorted(report["unexpected"]) == ["heads.digit.bias", "heads.digit.weight"]
    assert report["shape_mismatch"] == ["heads.early.bias", "heads.early.weight"]
    loaded = {k: v for k, v in trained.state_dict().items() if k.startswith(("stem.", "blocks.0.", "blocks.1."))}
    assert all(torch.equal(bigger.state_dict()[k], v) for k, v in loaded.items())  # what fits was really copied


@pytest.mark.subprocess
def test_01_custom_architectures_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(ARCH)
    assert m["init_identity_max_abs_diff"] == 0.0 and m["partial_unexpected_keys"] == 2


def test_02_model_ensembles(run_lesson, device):
    m = run_lesson(ENSEMBLES)
    for name in ("independent", "bagging", "snapshot"):
        assert m[f"{name}_ensemble_test_acc"] > 0.8, name  # chance is 10%
        # a classifier above 80% with softmax probabilities is roughly calibrated: a broken ECE (unweighted bins,
        # the true class's probability) or confidences from the wrong axis land far above this
        for which in ("best_member", "ensemble"):
            assert m[f"{name}_{which}_test_ece"] < 0.1, (name, which)
    # the ensemble of independently trained members beats its best member (chosen on validation) on NLL
    assert m["independent_ensemble_test_nll"] < m["independent_best_member_test_nll"]
    for name in ("independent", "bagging", "snapshot"):  # -log is convex: averaged probs never lose to the mean
        assert m[f"{name}_ensemble_test_nll"] <= m[f"{name}_mean_member_test_nll"] + 1e-6, name
    # calibration: at least as good as the best member's, within the noise of ECE on 809 test digits (~0.01)
    assert m["independent_ensemble_test_ece"] <= m["independent_best_member_test_ece"] + 0.02
    assert m["independent_vote_test_acc"] > 0.8 and m["independent_logits_avg_test_acc"] > 0.8
    # vmap over stacked weights computes what the Python loop computes (TF32 is off for fp32 matmuls by default)
    assert m["vmap_vs_loop_max_abs_diff"] < 1e-5
    # SWA: one model; update_bn recomputes its BatchNorm statistics (AveragedModel copied them from the start model
    # and never updates them), so they must move
    assert m["swa_test_acc"] > 0.8 and m["swa_test_nll"] < 1.0
    assert m["swa_update_bn_max_stat_change"] > 1e-3


def test_02_ece_by_hand():
    lesson = load_script(REPO / ENSEMBLES, "m09_ensembles_for_ece")
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = torch.tensor([0, 1, 0, 0])
    # bin of 0.9: accuracy 1/2, confidence 0.9 -> |0.5 - 0.9| x 2/4; bin of 0.6: accuracy 1, confidence 0.6
    value, table = lesson.ece(probs, y)
    assert abs(value - (0.5 * 0.4 + 0.5 * 0.4)) < 1e-6 and len(table) == 2
    assert lesson.ece(torch.eye(3), torch.arange(3))[0] == 0.0  # certain and right: perfectly calibrated
    logits = torch.randn(4, 6, 3)
    assert torch.allclose(lesson.combine(logits, "probs"), logits.softmax(-1).mean(0))
    assert torch.allclose(lesson.combine(logits, "vote").sum(-1), torch.ones(6))


def test_03_mixed_precision(run_lesson, device):
    m = run_lesson(AMP)
    assert m["fp16_overflows_70000"] == 1 and m["bf16_keeps_70000"] == 1 and m["fp16_underflows_1e-8"] == 1
    assert m["bf16_rel_error_third"] > 4 * m["fp16_rel_error_third"]  # 7 vs 10 mantissa bits
    assert m["tf32_rel_error_third"] == m["fp16_rel_error_third"]  # TF32 keeps fp16's 10 mantissa bits
    assert m["bf16_running_sum_1000x0.01"] < 5  # stuck at 4: the case for fp32 accumulation
    assert m["channels_last_stride_c"] == 1
    # autocast, read off this device: matmul and conv in the low type, losses in float32
    for low in ("bf16", "fp16"):
        if m[f"{low}_available"]:
            assert m[f"autocast_{low}_matmul_low"] == 1 and m[f"autocast_{low}_conv2d_low"] == 1
            assert m[f"autocast_{low}_cross_entropy_low"] == 0 and m[f"autocast_{low}_h_plus_fp32_tensor_low"] == 0
            assert m[f"autocast_{low}_relu_low"] == 1
            if device == "cuda":  # CUDA's float32 list; the CPU's list keeps these in the low type
                for op in ("softmax", "log_softmax", "layer_norm", "sum", "exp"):
                    assert m[f"autocast_{low}_{op}_low"] == 0, op
    if device == "cpu":
        assert m["bf16_available"] == 1 and m["fp16_available"] == 1  # torch 2.11's CPU autocast has both
    # the table: every row trains the same net to the same accuracy within noise
    assert m["fp32_test_acc"] > 0.5  # chance is 10%
    tf32_row = int(device == "cuda")  # bf16 rows need native bf16 (Ampere+): a T4 skips them
    assert m["table_rows"] == 1 + tf32_row + 2 * m["bf16_available"] + m["fp16_available"]
    assert m["max_acc_diff_vs_fp32"] <= max(m["acc_noise_2se"], 0.1)
    # fp16 without loss scaling flushes small gradients to zero; the scaler keeps (almost) all of them
    if m["fp16_available"]:
        assert m["zero_act_grads_fp16_accum"] >= m["zero_act_grads_fp16"] >= 1
        assert m["zero_act_grads_fp16_accum"] > max(10, 10 * m["zero_act_grads_fp16_gradscaler_accum"])
        assert m["act_grads_below_fp16_min_accum"] > m["act_grads_below_fp16_min"]
    if m["bf16_available"]:
        assert m["zero_act_grads_bf16_accum"] < 0.01 * m["nonzero_act_grads_fp32"]  # fp32's range: no underflow
        # bf16's zeroed parameter gradients are lost precision, not underflow: none is below bf16's smallest normal
        assert m["zero_param_grads_bf16_below_bf16_min"] == 0
        if m["zero_param_grads_bf16"]:
            assert m["zero_param_grads_bf16_max_rel_to_tensor"] < 2**-8


def test_03_tf32_rounding_by_hand():
    lesson = load_script(REPO / AMP, "m09_amp_for_tf32")
    x = torch.tensor([1.0, 1 + 2**-10, 1 + 2**-11, 1 + 2**-12, 3.0e38, -2.5])
    out = lesson.round_to_tf32(x)
    assert out[0] == 1.0 and out[1] == 1 + 2**-10  # representable: unchanged
    assert out[2] == 1 + 2**-10  # a tie rounds away from zero
    assert out[3] == 1.0 and out[5] == -2.5 and torch.isfinite(out[4])


@pytest.mark.default_run
def test_03_mixed_precision_default_run(run_lesson):
    """The full run (it once crashed where the smoke run did not: a GradScaler reused across two unscale_ calls)."""
    m = run_lesson(AMP, smoke=False)
    assert m["fp32_test_acc"] > 0.9 and m["max_acc_diff_vs_fp32"] <= m["acc_noise_2se"], "same accuracy within noise"
    assert m["zero_act_grads_fp16"] > 0 and m["zero_act_grads_fp16_accum"] > m["zero_act_grads_fp16"], \
        "fp16 without scaling loses small gradients, more of them when the loss is divided for accumulation"
    assert m["zero_act_grads_fp16_gradscaler"] == 0 == m["zero_act_grads_fp16_gradscaler_accum"], \
        "the scaler saves them"


@pytest.mark.parametrize("name", ["01_custom_architectures", "02_model_ensembles", "03_mixed_precision",
                                  "04_distributed_basics", "05_pytorch_lightning", "06_onnx_export"])
def test_real_digits_are_load_digits(name):
    """01-06 read scikit-learn's digits file directly (importing sklearn costs 0.7 s per process): the same data,
    and load_digits itself when the file is not where it is expected."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    lesson = load_script(REPO / "09-custom-models" / f"{name}.py", f"m09_digits_{name[:2]}")
    images, labels = lesson.real_digits()
    assert images.shape == (1797, 8, 8) and torch.equal(images, torch.tensor(digits.images, dtype=torch.float32))
    assert labels.dtype == torch.long and torch.equal(labels, torch.tensor(digits.target))
    with pytest.MonkeyPatch.context() as mp:  # the fallback: no such file inside the installed package
        mp.setattr(lesson.importlib.util, "find_spec", lambda name: None)
        fallback_images, fallback_labels = lesson.real_digits()
    assert torch.equal(fallback_images, images) and torch.equal(fallback_labels, labels)

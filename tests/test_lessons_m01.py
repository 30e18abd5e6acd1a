"""Smoke runs of module 01 with assertions that prove each lesson did its job."""

import math

import pytest
from harness import REPO, load_script, run_inprocess

pytestmark = pytest.mark.smoke

SETUP = "01-pytorch-basics/01_installation_setup.py"


def test_01_installation_setup(run_lesson, device):
    m = run_lesson(SETUP)
    assert m["packages_missing"] == 0 and m["packages_mismatch"] == 0, "the suite runs on the pinned versions"
    pins = [line for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line.split("#")[0]]
    assert m["packages_ok"] == len(pins), "every pinned package is found at its pinned version"
    import torch

    assert m["cpu_threads"] == torch.get_num_threads(), "the doctor reports torch's own intra-op thread count"
    if device == "cuda":
        assert m["cuda_available"] == 1 and m["cuda_devices"] >= 1
    assert m["matmul_rel_error"] < 1e-3  # float32 (or TF32) against float64: agreement, measured


@pytest.mark.subprocess
def test_01_installation_setup_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(SETUP)
    assert m["packages_missing"] == 0


def test_01_installation_setup_exits_1_when_a_package_is_missing(tmp_path):
    pins = tmp_path / "requirements.txt"
    pins.write_text((REPO / "requirements.txt").read_text() + "no-such-package-xyz==1.0\n")
    args = ["--smoke", "--device", "cpu", "--requirements", str(pins), "--out-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        run_inprocess(SETUP, args, tmp_path)
    assert exit_info.value.code == 1


def test_02_pytorch_intro(run_lesson, device):
    m = run_lesson("01-pytorch-basics/02_pytorch_intro.py")
    assert m["initial_loss"] == pytest.approx(math.log(3), abs=0.5), "an untrained 3-class model starts near ln 3"
    assert m["loss_drop_factor"] > 10 and m["nonfinite_losses"] == 0, "the loss must fall by a large factor"
    assert m["test_accuracy"] > 0.85, "far above the 1/3 of guessing"
    assert m["reload_max_abs_diff"] == 0.0, "the reloaded state_dict must predict exactly the same"
    assert m["train_mode_outputs_differ"] == 1 and m["eval_mode_outputs_differ"] == 0
    assert m["hidden_nan_forward_finite"] == 1 and m["anomaly_caught"] == 1 and m["anomaly_names_sqrt"] == 1
    assert m["fixed_grad_finite"] == 1
    assert m["same_seed_abs_diff"] < 1e-6 and m["other_seed_differs"] == 1
    if device == "cpu":  # GPUs are bit-identical too only with deterministic algorithms (module 09)
        assert m["same_seed_identical"] == 1


def test_03_tensor_basics(run_lesson):
    m = run_lesson("01-pytorch-basics/03_tensor_basics.py")
    assert m["int_default_is_int64"] == 1 and m["float_default_is_float32"] == 1 and m["like_keeps_dtype"] == 1
    assert m["matmul_00"] == 7.0 and m["broadcast_sum"] == 70.0 and m["int_div_is_float"] == 1
    assert m["slice_writes_through"] == 1 and m["fancy_index_copies"] == 1 and m["mask_count"] == 5
    assert m["view_shares_memory"] == 1 and m["transpose_contiguous"] == 0 and m["view_of_transpose_raises"] == 1
    assert m["stack_ndim"] == 3 and m["cat_rows"] == 4
    assert m["sum_all"] == 21.0 and m["sum_dim0_first"] == 5.0 and m["argmax_flat"] == 5
    assert m["centred_row_mean_abs"] < 1e-6
    assert m["inplace_keeps_memory"] == 1 and m["inplace_leaf_raises"] == 1 and m["weight_after_nograd_update"] == 2.0


def test_04_numpy_vs_pytorch(run_lesson, device):
    m = run_lesson("01-pytorch-basics/04_numpy_vs_pytorch.py")
    # shared memory, shown two ways: a mutation seen on the other side, and the same address
    assert m["from_numpy_sees_mutation"] == 1 and m["from_numpy_shares_address"] == 1
    assert m["numpy_sees_mutation"] == 1 and m["numpy_shares_address"] == 1
    assert m["as_tensor_sees_mutation"] == 1 and m["as_tensor_shares_address"] == 1
    assert m["tensor_sees_mutation"] == 0 and m["tensor_shares_address"] == 0, "torch.tensor copies"
    assert m["numpy_float_bits"] == 64 and m["torch_float_bits"] == 32 and m["from_numpy_float_bits"] == 64
    assert m["numpy_int_bits"] == 64 and m["torch_int_bits"] == 64
    assert m["float64_into_float32_layer_raises"] == 1 and m["requires_grad_numpy_raises"] == 1
    assert m["detach_cpu_numpy_ok"] == 1
    if device != "cpu":
        assert m["device_numpy_raises"] == 1
    assert m["matmul_size"] == 128  # --smoke
    for lib in ("numpy", "torch"):  # GFLOP/s is 2 n^3 over the median time, not some other count
        assert m[f"{lib}_matmul_gflops"] == pytest.approx(2 * 128**3 / (m[f"{lib}_matmul_ms"] * 1e-3) / 1e9), lib
    assert m["torch_over_numpy_speedup"] == pytest.approx(m["numpy_matmul_ms"] / m["torch_matmul_ms"])
    assert m["matmul_rel_diff"] < 1e-4, "NumPy and torch compute the same product"


def test_04_numpy_vs_pytorch_threads_flag(run_lesson):
    m = run_lesson("01-pytorch-basics/04_numpy_vs_pytorch.py", "--threads", "1", "--size", "32", smoke=False)
    assert m["torch_threads"] == 1 and m["matmul_size"] == 32  # torch.get_num_threads() read back after the flag


def check_matmul_table(m: dict, prefix: str, dtype: str, sizes: list[int]) -> None:
    """The table holds exactly the requested sizes, each GFLOP/s is 2 n^3 over the median time, and best = max."""
    gflops = {k for k in m if k.startswith(f"{prefix}_{dtype}_n") and k.endswith("_gflops")}
    assert gflops == {f"{prefix}_{dtype}_n{n}_gflops" for n in sizes}, sorted(gflops)
    for n in sizes:
        ms = m[f"{prefix}_{dtype}_n{n}_ms"]
        assert m[f"{prefix}_{dtype}_n{n}_gflops"] == pytest.approx(2 * n**3 / (ms * 1e-3) / 1e9, rel=1e-9), n
    assert m[f"{prefix}_{dtype}_best_gflops"] == max(m[f"{prefix}_{dtype}_n{n}_gflops"] for n in sizes)


def test_05_gpu_acceleration(run_lesson, device):
    m = run_lesson("01-pytorch-basics/05_gpu_acceleration.py")
    assert m["gpu_present"] == int(device != "cpu")
    check_matmul_table(m, "cpu", "fp32", [64, 128])  # --smoke sizes
    assert m["module_to_returns_self"] == 1 and m["tensor_to_returns_new"] == 1 and m["output_on_device"] == 1
    gpu_keys = [k for k in m if k.startswith(("gpu_", "h2d_", "cuda_", "pinned_")) and k != "gpu_present"]
    if device == "cpu":
        assert not gpu_keys, f"a CPU run reports CPU figures only, got {gpu_keys}"
    else:
        for dtype in ("fp32", "bf16", "fp16"):
            check_matmul_table(m, "gpu", dtype, [128, 256])
        assert m["gpu_over_cpu_fp32_speedup"] == pytest.approx(m["gpu_fp32_best_gflops"] / m["cpu_fp32_best_gflops"])
    if device == "cuda":
        # which copy is faster is measured, never asserted (a busy machine can flip it); the ratio must be the
        # ratio of the two bandwidths the lesson printed
        assert m["pinned_over_pageable_speedup"] == pytest.approx(m["h2d_pinned_gbps"] / m["h2d_pageable_gbps"])


def test_05_gpu_acceleration_sizes_flag(run_lesson):
    m = run_lesson("01-pytorch-basics/05_gpu_acceleration.py", "--device", "cpu", "--sizes", "48", "16", "16",
                   smoke=False)
    check_matmul_table(m, "cpu", "fp32", [16, 48])  # sorted, duplicates dropped


def test_05_gpu_acceleration_throughput_note_follows_the_table():
    lesson = load_script(REPO / "01-pytorch-basics/05_gpu_acceleration.py")
    # the --smoke CPU run measured n=64 faster than n=128: the note must not say small matmuls leave the CPU idle
    slower = lesson.throughput_note({"cpu_fp32_n64_gflops": 79.1, "cpu_fp32_n128_gflops": 51.1}, "cpu", "CPU")
    assert "0.65 times" in slower and "not faster" in slower and "leave most of it idle" not in slower
    faster = lesson.throughput_note({"gpu_fp32_n128_gflops": 900.0, "gpu_fp32_n4096_gflops": 40000.0,
                                     "gpu_bf16_n4096_gflops": 1e6}, "gpu", "cuda")
    assert "n=4096 reached 44.4 times the GFLOP/s of n=128" in faster
    assert "give --sizes" in lesson.throughput_note({"cpu_fp32_n64_gflops": 79.1}, "cpu", "CPU")

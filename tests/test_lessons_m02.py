"""Smoke runs of module 02 with assertions that prove each lesson did its job."""

import pytest

pytestmark = pytest.mark.smoke

CREATION = "02-tensors-operations/01_tensor_creation.py"


def test_01_tensor_creation(run_lesson, tmp_path):
    m = run_lesson(CREATION)
    assert (tmp_path / "out" / "distributions.png").stat().st_size > 10_000
    assert m["tensor_copies_data"] and m["from_numpy_shares_memory"] and m["as_tensor_dtype_change_copies"]
    assert m["int_list_is_int64"] and m["float_list_is_float32"]
    assert m["factories_keep_dtype_device"]
    assert m["arange_numel"] == 10 and m["linspace_numel"] == 11 and m["linspace_last"] == 1.0
    assert m["arange_float_step_numel"] == 4  # the "excluded" end crept in
    assert m["float16_element_size"] == 2
    assert m["generator_reproducible"] and m["different_seed_differs"] and m["manual_seed_reproducible"]
    assert abs(m["randn_mean"]) < 0.15 and abs(m["randn_std"] - 1) < 0.1
    assert abs(m["rand_mean"] - 0.5) < 0.05 and m["randint_max"] <= 9 and m["randperm_is_permutation"]
    assert m["kaiming_std_rel_error"] < 0.05
    assert m["xavier_within_bound"] and m["linear_default_within_bound"]


@pytest.mark.subprocess
def test_01_tensor_creation_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(CREATION)
    assert m["from_numpy_shares_memory"] and m["generator_reproducible"]


def test_02_indexing_slicing(run_lesson):
    m = run_lesson("02-tensors-operations/02_indexing_slicing.py")
    assert m["basic_indexing_all_views"] and m["write_through_view_visible"]
    assert not m["advanced_indexing_any_view"] and m["copy_write_not_visible"]
    assert m["mask_assignment_in_place"]
    assert m["select_gather_are_copies"]
    assert m["gather_matches_loop"] and m["scatter_add_matches_loop"] and m["one_hot_roundtrip"]
    assert m["naive_duplicate_index_count"] < m["index_count"]  # x[idx] += 1 dropped the repeats
    assert m["where_matches_loop"] and m["where_returns_copy"]


def test_03_math_operations(run_lesson):
    m = run_lesson("02-tensors-operations/03_math_operations.py")
    assert m["operator_equals_function"] and m["int_true_div_is_float"]
    assert m["floor_div_of_minus7"] == -4 and m["trunc_div_of_minus7"] == -3
    assert m["keepdim_row_sum_max_error"] < 1e-6 and m["no_keepdim_row_sum_max_error"] > 1e-2
    assert abs(m["var_unbiased"] - 5 / 3) < 1e-6 and m["var_biased"] == 1.25
    for key in ("einsum", "bmm", "loop", "at"):
        assert m[f"{key}_vs_matmul_max_abs_diff"] < 1e-5, key
    assert m["matmul_vs_float64_max_abs_diff"] < 1e-4
    assert m["naive_logsumexp_is_inf"] and m["logsumexp_abs_error"] < 1e-3
    assert m["naive_softmax_has_nan"] and abs(m["softmax_sum"] - 1) < 1e-6
    assert m["log1p_rel_error"] < 1e-6
    assert m["promotion_table_matches"] and m["uint8_wraparound_value"] == 4
    assert m["inplace_promotion_error_raised"]


def test_04_broadcasting(run_lesson):
    m = run_lesson("02-tensors-operations/04_broadcasting.py")
    assert m["rule_cases_agreeing"] == m["rule_cases"] >= 6
    assert m["mismatch_error_raised"] and m["unsqueeze_fix_row_sums_ok"]
    assert m["expand_stride0"] and m["expand_shares_storage"]
    assert m["expand_storage_bytes"] * 1000 == m["repeat_storage_bytes"]
    assert m["outer_vs_loop_max_abs_diff"] < 1e-6 and m["centred_max_abs_col_mean"] < 1e-5
    assert m["pairwise_vs_cdist_max_abs_diff"] < 1e-3
    assert m["silent_bug_numel"] == 64 * 64 and m["silent_bug_mse"] > 10 * m["true_mse"]
    assert abs(m["true_mse"] - 0.01) < 1e-5 and m["mse_loss_warned"] and m["inplace_broadcast_error_raised"]


def test_05_reshaping_views(run_lesson):
    m = run_lesson("02-tensors-operations/05_reshaping_views.py")
    assert m["views_share_storage"] and m["write_through_transpose_visible"]
    assert m["view_on_transpose_raised"] and not m["transpose_is_contiguous"]
    assert m["contiguous_copies"] and m["contiguous_noop_when_contiguous"]
    assert m["reshape_contiguous_is_view"] and m["reshape_sliced_same_shape_is_view"]
    assert m["reshape_transposed_copies"] and m["reshape_sliced_flatten_copies"]
    assert m["reshape_differs_from_transpose"]
    assert m["nhwc_pixel_matches"] and m["heads_round_trip_exact"] and m["heads_reshape_without_transpose_wrong"]
    assert m["channels_last_equal_values"]


def test_06_memory_management(run_lesson, device):
    m = run_lesson("02-tensors-operations/06_memory_management.py")
    assert m["bytes_equal_numel_times_element_size"]
    assert m["big_storage_bytes"] == 2**20  # --smoke: 1 MiB of float32
    assert m["view_storage_bytes_after_del"] == m["big_storage_bytes"]  # the 10-element view pins it all
    assert m["view_shares_big_storage"] and not m["clone_shares_big_storage"]
    assert m["clone_storage_bytes"] == 10 * 4
    assert m["inplace_keeps_data_ptr"] and m["outofplace_new_data_ptr"] and m["out_buffer_reused"]
    assert m["version_after_three_inplace_ops"] == 3 and m["version_counter"] == 5
    assert m["inplace_autograd_error_raised"] and m["inplace_autograd_error_mentions_version"]
    assert m["outofplace_grad_max_abs_error"] < 1e-6 and m["leaf_inplace_error_raised"]
    assert m["outofplace_new_storages"] == 3 and m["inplace_new_storages"] == 0 and m["tensor_bytes"] == 2**20
    # the allocator is queried wherever torch.accelerator reports it (CUDA here); a CPU has no such counter
    if device in ("cpu", "cuda"):
        assert m["allocator_measured"] == m["peak_measured"] == (device == "cuda")
    if m["allocator_measured"]:
        assert m["device_bytes_held_by_view"] >= m["big_storage_bytes"]
        assert m["device_bytes_after_view_deleted"] < m["big_storage_bytes"] // 100
    if m["peak_measured"]:
        assert m["outofplace_peak_extra_bytes"] >= 1.5 * m["tensor_bytes"]
        assert m["inplace_peak_extra_bytes"] < 0.1 * m["tensor_bytes"]

"""Smoke runs of module 07 with assertions that prove each lesson did its job."""

import csv

import pytest
import torch

pytestmark = pytest.mark.smoke

RNN = "07-rnn-sequences/01_rnn_basics.py"
TEXT = "07-rnn-sequences/04_sequence_classification.py"


def by_hand_tol(device: str) -> float:
    """float32 rounding on the CPU (~1e-7); cuDNN's fused RNN and fused attention kernels sum in another order."""
    return 1e-5 if device == "cpu" else 1e-4


def test_01_rnn_basics(run_lesson, device):
    m = run_lesson(RNN)
    tol = by_hand_tol(device)
    assert m["layouts_checked"] == 8  # 1-2 layers x uni/bidirectional x batch_first on/off
    assert m["rnncell_by_hand_max_abs_diff"] < tol
    assert m["rnn_by_hand_output_max_abs_diff"] < tol and m["rnn_by_hand_h_n_max_abs_diff"] < tol
    assert m["by_hand_within_tolerance"] == 1
    assert m["packed_vs_alone_max_abs_diff"] < tol, "packing must give each sequence's own final state"
    assert m["unpacked_vs_alone_max_abs_diff"] > 1e-2, "without packing the padding leaks into the final state"
    assert m["packed_output_padding_max_abs"] == 0.0
    assert m["vanishing_grad_ratio_first_over_last"] < 1e-6, "tanh + small W_hh: the gradient must vanish"
    assert m["exploding_grad_ratio_first_over_last"] > 1e3, "ReLU + large W_hh: the gradient must explode"
    assert m["grad_norm_before_clip"] > 100 * m["max_norm"]
    assert m["grad_norm_after_clip"] == pytest.approx(m["max_norm"], rel=1e-4)


def test_01_clipping_claim_follows_the_run(run_lesson, capsys):
    # --hidden 1: over 30 steps the float32 norm overflowed to inf (metrics.json held Infinity, the clip zeroed the
    # gradient); the demo shortens the sequence until the norm is finite, and run_lesson checks every metric is
    m = run_lesson(RNN, "--hidden", "1")
    assert m["grad_norm_before_clip"] > 100 * m["max_norm"]
    assert m["grad_norm_after_clip"] == pytest.approx(m["max_norm"], rel=1e-4)
    assert "Clipping fixes the exploding part" in capsys.readouterr().out
    # a --max-norm above the gradient's norm: nothing is clipped, and the lesson must not claim it was
    m = run_lesson(RNN, "--max-norm", "1e12")
    assert m["grad_norm_after_clip"] == pytest.approx(m["grad_norm_before_clip"], rel=1e-5)
    out = capsys.readouterr().out
    assert "Clipping fixes" not in out and "Clipping had nothing to do here" in out


def test_01_refuses_steps_whose_gradients_leave_float64():
    from harness import REPO, load_script

    lesson = load_script(REPO / RNN, "m07_rnn_long_steps")
    for flags in (["--steps", "1200"], ["--max-norm", "1e-30"]):  # 1e-30: the clipped norm underflows to 0
        with pytest.raises(SystemExit) as err:
            lesson.parse_args(flags)
        assert err.value.code == 2, flags  # argparse's usage error, before any work


def test_01_02_float64_demos_leave_mps_for_the_cpu():
    """MPS has no float64: the float64 gradient demos of 01 and 02 must run on the CPU there, and stay put elsewhere."""
    from harness import REPO, load_script

    for path in (RNN, "07-rnn-sequences/02_lstm.py"):
        lesson = load_script(REPO / path, "m07_f64_" + path.split("/")[1][:2])
        assert lesson.float64_device(torch.device("mps")) == torch.device("cpu")
        for kept in ("cpu", "cuda"):
            assert lesson.float64_device(torch.device(kept)) == torch.device(kept)


@pytest.mark.subprocess
def test_01_rnn_basics_as_a_learner_runs_it(run_lesson_subprocess):
    m = run_lesson_subprocess(RNN)
    assert m["by_hand_within_tolerance"] == 1 and m["packed_vs_alone_max_abs_diff"] < 1e-4


def test_02_lstm(run_lesson, device):
    m = run_lesson("07-rnn-sequences/02_lstm.py")
    assert m["lstm_layouts_checked"] == 8 and m["lstm_by_hand_max_abs_diff"] < by_hand_tol(device)
    assert m["gradient_flow_steps"] >= 100
    assert m["rnn_grad_ratio_first_over_last"] < 1e-10, "120 steps back the RNN's gradient has vanished"
    assert m["lstm_grad_ratio_first_over_last"] > 1e-3, "an open forget gate carries the gradient"
    assert m["lstm_grad_ratio_first_over_last"] > 1e6 * m["rnn_grad_ratio_first_over_last"]
    assert m["lstm_default_bias_grad_ratio_first_over_last"] < m["lstm_grad_ratio_first_over_last"]
    # smoke: 100 steps at a gap of 20 prove learning (chance 0.25); the RNN-vs-LSTM gap needs the default run
    assert m["lstm_acc"] > 0.8, "the LSTM must learn the memory task"
    assert m["forget_gate_mean"] > 0.9


def test_02_highway_claim_follows_the_ratios():
    """--forget-bias 0/1 and --hidden 1 left the LSTM's gradient at 2e-28..1e-15; the lesson still said 'highway'."""
    from harness import REPO, load_script

    lesson = load_script(REPO / "07-rnn-sequences/02_lstm.py", "m07_lstm_highway")
    open_gate = lesson.highway_notes(3.4e-44, 2.0e-25, 0.14, 5.0, 0.5)
    assert open_gate[0].endswith("that is the highway.") and "default 0 the factor was 2e-25" in open_gate[1]
    for fb, ratio in ((0.0, 1.7e-28), (1.0, 5.6e-13)):
        closed = lesson.highway_notes(3.4e-44, 2.0e-25, ratio, fb, 0.5)
        assert "no highway" in closed[0] and "that is the highway" not in closed[0]
        assert f"sigmoid({fb:g})" in closed[1], "a closed gate: the bias is the cause"
    saturated = lesson.highway_notes(2.5e-177, 2.4e-42, 1.5e-15, 5.0, 2.4e-15)
    assert "no highway" in saturated[0] and "saturated" in saturated[1] and "2e-15" in saturated[1]


def test_03_gru(run_lesson, device, tmp_path):
    m = run_lesson("07-rnn-sequences/03_gru.py")
    assert (tmp_path / "out" / "comparison.png").is_file(), "--out-dir's help promises comparison.png"
    assert m["gru_layouts_checked"] == 8 and m["gru_by_hand_max_abs_diff"] < by_hand_tol(device)
    assert m["gru_paper_variant_min_abs_diff"] > 1e-2, "the paper's reset-before-product GRU is not nn.GRU"
    assert m["param_formula_mismatches"] == 0
    assert (m["rnn_params_128"], m["gru_params_128"], m["lstm_params_128"]) == (33024, 99072, 132096)
    head = 32 * 4 + 4  # Linear(hidden 32, 4 symbols) on top of each recurrent layer
    assert (m["gru_params"] - head) * 4 == (m["lstm_params"] - head) * 3, "GRU = 3/4 of the LSTM at the same size"
    assert m["lstm_test_acc"] > 0.9 and m["gru_test_acc"] > 0.9, "both gated models learn the task"
    assert m["lstm_test_acc"] > m["chance_acc"] + 0.5


def test_03_gru_text_follows_the_run(run_lesson, capsys):
    """--length 1 trained on 2-symbol sequences under a header saying 'gap 20'; 'train equally well' was never run."""
    m = run_lesson("07-rnn-sequences/03_gru.py", "--length", "5", "--train-size", "64", "--epochs", "1")
    out = capsys.readouterr().out
    assert m["memory_length"] == 5 and "on the same task and budget (gap 5)" in out
    assert "equally well" not in out


def test_03_batch_larger_than_the_smoke_training_set_is_a_usage_error():
    from harness import REPO, load_script

    lesson = load_script(REPO / "07-rnn-sequences/03_gru.py", "m07_gru_batch")
    with pytest.raises(SystemExit) as err:  # --smoke cuts the training set to 1600: no full batch of 2000
        lesson.parse_args(["--smoke", "--batch-size", "2000"])
    assert err.value.code == 2
    assert lesson.parse_args(["--batch-size", "2000"]).batch_size == 2000  # the default run has 3200


def order_claimed(out: str, m: dict) -> bool:
    """Whether 04's 'What to notice' claims order matters; it may only when the LSTM won by its stated margin."""
    margin = max(0.02, 1.5 / m["n_test"] ** 0.5)
    claimed = "- Order matters:" in out
    assert claimed == (m["lstm_test_acc"] > m["bow_test_acc"] + margin), \
        f"'Order matters' printed={claimed} with LSTM {m['lstm_test_acc']:.3f} vs bag of words {m['bow_test_acc']:.3f}"
    return claimed


def test_04_sequence_classification_generated(run_lesson, capsys):
    m = run_lesson(TEXT)
    assert order_claimed(capsys.readouterr().out, m)
    assert m["used_real_data"] == 0
    assert m["pad_embedding_max_abs"] == 0.0, "padding_idx keeps <pad>'s vector at zero"
    assert m["vocab_size"] > 20 and 0 < m["test_unk_rate"] < 0.2, "rare words must become <unk>"
    # a mirrored twin has the same bag of words: any bag-of-words model gets exactly one of each pair right
    assert m["bow_contrast_acc"] == pytest.approx(0.5, abs=0.02)
    assert m["bow_test_acc"] <= m["bow_upper_bound"] + 1e-9
    assert m["lstm_test_acc"] > m["bow_test_acc"] + 0.15, "the order-aware model must win"
    assert m["lstm_contrast_acc"] > 0.6


def test_04_predict_flag(run_lesson):
    m = run_lesson(TEXT, "--predict", "the plot was not good", "--predict", "zzz unknown words")
    assert "demo_correct_lstm" not in m  # the learner's sentences replace the demo ones
    assert m["n_test"] > 0


def _write_fixture_texts():
    good = ["a wonderful heartfelt film", "great acting and a superb story", "i loved it , brilliant",
            "delightful and moving", "superb wonderful great"]
    bad = ["a terrible boring film", "awful acting and a dreadful story", "i hated it , dull",
           "tedious and lifeless", "awful terrible boring"]
    return good, bad


def test_04_reads_aclimdb_folders(run_lesson, tmp_path, capsys):
    good, bad = _write_fixture_texts()
    for split in ("train", "test"):
        for label, texts in (("pos", good), ("neg", bad)):
            folder = tmp_path / "data" / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(30 if split == "train" else 10):
                (folder / f"{i}_7.txt").write_text(texts[i % 5] + " <br /> " + texts[(i + 2) % 5])
    m = run_lesson(TEXT, "--data-dir", str(tmp_path / "data"))
    assert m["used_real_data"] == 1
    assert m["n_train"] + m["n_val"] == 60 and m["n_test"] == 20
    # both models score 0.900 on these 20 texts: the lesson must not claim that order mattered
    assert not order_claimed(capsys.readouterr().out, m)
    assert "bow_upper_bound" not in m  # the twin-pair bound belongs to the generated corpus only


def test_04_reads_csv(run_lesson, tmp_path):
    good, bad = _write_fixture_texts()
    for split, n in (("train", 40), ("test", 12)):
        with (tmp_path / f"{split}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            for i in range(n):
                w.writerow([good[i % 5], "pos"] if i % 2 else [bad[i % 5], "0"])
    m = run_lesson(TEXT, "--data-dir", str(tmp_path))
    assert m["used_real_data"] == 1 and m["n_test"] == 12 and m["n_train"] + m["n_val"] == 40


def test_04_reads_an_excel_csv_with_a_bom(run_lesson, tmp_path):
    good, bad = _write_fixture_texts()
    for split, n in (("train", 40), ("test", 12)):
        with (tmp_path / f"{split}.csv").open("w", newline="", encoding="utf-8-sig") as fh:  # Excel's "CSV UTF-8"
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            for i in range(n):
                w.writerow([good[i % 5], "pos"] if i % 2 else [bad[i % 5], "neg"])
    assert (tmp_path / "train.csv").read_bytes().startswith(b"\xef\xbb\xbftext,label")
    m = run_lesson(TEXT, "--data-dir", str(tmp_path))
    assert m["used_real_data"] == 1 and m["n_test"] == 12 and m["n_train"] + m["n_val"] == 40


def test_04_bad_csv_is_one_clear_error(tmp_path, capsys):
    from harness import REPO, load_script

    (tmp_path / "train.csv").write_text("review,stars\nnice,5\n")
    (tmp_path / "test.csv").write_text("text,label\nnice,pos\n")
    lesson = load_script(REPO / TEXT, "m07_text_bad_csv")
    with pytest.raises(SystemExit) as err:
        lesson.main(["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out"), "--device", "cpu", "--smoke"])
    assert "text,label" in str(err.value.code)
    assert not (tmp_path / "out" / "metrics.json").exists()


SERIES = "07-rnn-sequences/05_time_series.py"
SEASON_AND_NOISE = "it learned the season AND the noise's memory"


def test_05_time_series(run_lesson, capsys):
    m = run_lesson(SERIES)
    assert SEASON_AND_NOISE in capsys.readouterr().out
    assert m["generated_ratio_to_naive"] < 0.8, "the LSTM must beat the naive forecast on the generated series"
    assert m["generated_ratio_to_seasonal_naive"] < 0.95, "and the seasonal-naive one"
    assert m["generated_mae_direct"] < m["generated_mae_naive_multi"]
    assert m["generated_mae_recursive"] < m["generated_mae_naive_multi"]
    # the S&P 500 is close to a random walk: the lesson reports the ratio, whatever it is; seasonal naive is worse
    assert 0.5 < m["sp500_ratio_to_naive"] < 2.0
    assert m["sp500_mae_seasonal_naive"] > m["sp500_mae_naive"]
    assert m["sp500_test_windows"] > 20


SEQ2SEQ = "07-rnn-sequences/06_seq2seq.py"
# smoke: the lesson is 9-13 points above the input-blind ceiling (seeds 0-2), a zeroed encoder 1 below
YEAR_MARGIN = 0.07


def test_05_claim_follows_the_ratio(run_lesson, capsys):
    # an untrained LSTM (1 epoch at lr 1e-5) is worse than seasonal naive: the lesson printed the same claim anyway
    m = run_lesson(SERIES, "--epochs", "1", "--lr", "1e-5")
    assert m["generated_ratio_to_seasonal_naive"] > 1.0
    out = capsys.readouterr().out
    assert SEASON_AND_NOISE not in out and "no better than either naive forecast" in out


def test_06_seq2seq(run_lesson):
    m = run_lesson(SEQ2SEQ)
    # position priors alone reach ~50% per character, so a bare char-accuracy threshold passes an encoder that
    # ignores its input; the year's four characters are what only the input can decide
    assert m["year_acc_teacher_forced"] > m["year_acc_input_blind_ceiling"] + YEAR_MARGIN, \
        "the decoder must read the year from the encoder, beyond what ignoring the input can expect"
    assert 0.4 < m["year_acc_input_blind_ceiling"] < 0.5 and 0.5 < m["char_acc_input_blind_ceiling"] < 0.6
    assert m["test_pairs"] > 0 and m["train_pairs"] > 1000


def test_06_seq2seq_assertion_fails_an_encoder_that_ignores_its_input(tmp_path):
    """The check above, against the reviewer's broken copy: an encode() returning zeros must fall short of it."""
    from harness import REPO, load_script

    lesson = load_script(REPO / SEQ2SEQ, "m07_seq2seq_blind")
    real_encode = lesson.Seq2Seq.encode
    lesson.Seq2Seq.encode = lambda self, src, lengths: torch.zeros_like(real_encode(self, src, lengths))
    m = lesson.main(["--smoke", "--device", "cpu", "--seed", "0", "--tf-steps", "1", "--out-dir", str(tmp_path)])
    assert m["year_acc_teacher_forced"] <= m["year_acc_input_blind_ceiling"] + YEAR_MARGIN
    assert m["char_acc_teacher_forced"] > 0.4  # the old assertion, which this broken model passed


def test_06_batch_larger_than_the_training_set_is_a_usage_error():
    from harness import REPO, load_script

    lesson = load_script(REPO / SEQ2SEQ, "m07_seq2seq_batch")
    with pytest.raises(SystemExit) as err:
        lesson.parse_args(["--smoke", "--batch-size", "6000"])  # the smoke run has 5000 training pairs
    assert err.value.code == 2
    assert lesson.parse_args(["--batch-size", "6000"]).batch_size == 6000  # the default run has 20000


def test_07_attention(run_lesson, device):
    m = run_lesson("07-rnn-sequences/07_attention.py")
    tol = by_hand_tol(device)
    assert m["sdpa_by_hand_max_abs_diff"] < tol and m["mha_by_hand_max_abs_diff"] < tol
    assert m["transformer_padding_leak"] < tol, "src_key_padding_mask: padding must not change the real outputs"
    assert m["exact_acc_attention"] > m["exact_acc_no_attention"] + 0.2
    assert m["long_exact_acc_attention"] > m["long_exact_acc_no_attention"] + 0.3, "the bottleneck shows on length"
    assert m["attention_alignment"] > 0.7, "reversal: output step t attends to input position L-1-t"


def test_07_attention_verdicts_follow_the_numbers():
    """--batch-size 1 ended at 0% vs 0% on the longest strings, and the lesson still claimed attention's win."""
    from harness import REPO, load_script

    lesson = load_script(REPO / "07-rnn-sequences/07_attention.py", "m07_attention_verdicts")
    assert "a look-up over all encoder states can" in lesson.bottleneck_verdict(0.0, 0.54, 1.18, 0.34)
    lost = lesson.bottleneck_verdict(0.0, 0.0, 1.97, 1.76)
    assert "neither model learned" in lost and "1.97" in lost and "look-up" not in lost
    assert "one vector still holds" in lesson.bottleneck_verdict(0.95, 0.97, 0.01, 0.01)
    assert "no clear gain" in lesson.bottleneck_verdict(0.6, 0.55, 0.5, 0.6)
    assert "it is the anti-diagonal" in lesson.alignment_verdict(1.0)
    weak = lesson.alignment_verdict(0.29)
    assert "it is the anti-diagonal" not in weak and "29%" in weak
    assert [lesson.token_str(t) for t in (3, 12, lesson.EOS)] == ["0", "9", "<eos>"]


# ---- the default-run tier (pytest --default-runs -m default_run): the thresholds at full size ----

@pytest.mark.default_run
def test_02_lstm_default_run(run_lesson):
    m = run_lesson("07-rnn-sequences/02_lstm.py", smoke=False)
    assert m["memory_length"] >= 60
    assert m["rnn_acc"] < 0.35, "a gap of 60: the plain RNN stays near the 25% of chance"
    assert m["lstm_acc"] > 0.95, "the LSTM with an open forget gate solves it with the same size and steps"


@pytest.mark.default_run
def test_03_gru_default_run(run_lesson):
    m = run_lesson("07-rnn-sequences/03_gru.py", smoke=False)
    assert m["gru_test_acc"] > 0.95 and m["lstm_test_acc"] > 0.95, "both gated models solve a gap of 30"
    assert m["rnn_test_acc"] < min(m["gru_test_acc"], m["lstm_test_acc"]), "the plain RNN trails them"


@pytest.mark.default_run
def test_04_sequence_classification_default_run(run_lesson):
    m = run_lesson(TEXT, smoke=False)
    assert m["bow_test_acc"] <= m["bow_upper_bound"] + 1e-9
    assert m["lstm_test_acc"] > m["bow_upper_bound"] + 0.05, "order-aware beats ANY bag-of-words model"
    assert m["lstm_test_acc"] > 0.9 and m["lstm_contrast_acc"] > 0.8


@pytest.mark.default_run
def test_05_time_series_default_run(run_lesson):
    m = run_lesson("07-rnn-sequences/05_time_series.py", smoke=False)
    assert m["generated_ratio_to_naive"] < 0.8 and m["generated_ratio_to_seasonal_naive"] < 0.95, \
        "the LSTM beats both baselines on the generated series' test split"
    assert m["generated_mae_direct"] < m["generated_mae_naive_multi"]
    assert m["generated_mae_recursive"] < m["generated_mae_naive_multi"]
    assert 0.5 < m["sp500_ratio_to_naive"] < 2.0  # near a random walk: reported honestly, whatever it is


@pytest.mark.default_run
def test_06_seq2seq_default_run(run_lesson):
    m = run_lesson(SEQ2SEQ, smoke=False)
    assert m["exact_acc"] > 0.9, "exact-sequence accuracy well above 90% on held-out dates"
    assert m["char_acc_teacher_forced"] > m["char_acc_input_blind_ceiling"] + 0.3
    assert m["tf1_exact_acc"] > m["tf0_exact_acc"] + 0.1, \
        "same short budget: full teacher forcing learns measurably faster than none (about 52% vs 31% exact)"


@pytest.mark.default_run
def test_07_attention_default_run(run_lesson):
    m = run_lesson("07-rnn-sequences/07_attention.py", smoke=False)
    assert m["exact_acc_attention"] > 0.9
    assert m["long_exact_acc_attention"] > m["long_exact_acc_no_attention"] + 0.3, "the bottleneck shows on length"
    assert m["attention_alignment"] > 0.8

"""Tests for omni_tf.metrics: corpus-level WER/CER against hand counts."""
import pytest

from omni_tf import metrics


def test_corpus_wer_is_total_errors_over_total_words():
    refs = ["the cat sat", "a b c d e f g h i j"]
    hyps = ["the cat", "a b c d e f g h i j"]
    # 1 deletion over 13 words, not the mean of per-utterance rates (1/3 + 0)/2.
    assert metrics.wer(refs, hyps) == pytest.approx(1 / 13)


def test_counts_split_by_kind():
    c = metrics.corpus_counts(["one two three"], ["one too three four"])
    assert (c.substitutions, c.deletions, c.insertions, c.reference_units) == (1, 0, 1, 3)


def test_cer_counts_characters_including_spaces():
    # "ab cd" -> "ab cx": one substitution over 5 characters.
    assert metrics.cer(["ab cd"], ["ab cx"]) == pytest.approx(1 / 5)
    assert metrics.cer(["ab"], [""]) == pytest.approx(1.0)


def test_normalisation_and_empty_hypothesis():
    assert metrics.wer(["Hello  World"], ["hello world"]) == 0.0
    assert metrics.wer(["hello world"], [""]) == 1.0
    assert metrics.utterance_counts("", "extra", "word").rate == float("inf")


def test_per_utterance_rows():
    rows = metrics.per_utterance(["u1", "u2"], ["a b", "c"], ["a", "c"])
    assert rows[0]["word_errors"] == 1 and rows[0]["wer"] == 0.5
    assert rows[1]["wer"] == 0.0 and rows[1]["cer"] == 0.0


def test_errors():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        metrics.wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unit"):
        metrics.utterance_counts("a", "a", "phone")


def test_token_error_rate_counts_ids_not_digits():
    # [1 2 3] -> [1 3 3 4]: one substitution + one insertion over 3 reference tokens.
    assert metrics.token_error_rate([[1, 2, 3]], [[1, 3, 3, 4]]) == pytest.approx(2 / 3)
    # id 12 vs ids 1, 2: one substitution + one insertion, not a digit-level match.
    assert metrics.token_error_rate([[12], []], [[1, 2], []]) == pytest.approx(2.0)
    assert metrics.token_error_rate([[5, 6]], [[]]) == 1.0


def test_bootstrap_identical_systems_give_a_zero_interval():
    refs = ["the cat sat", "a dog", "on the mat today"]
    hyps = ["the cat sad", "a dog", "on mat today"]
    assert metrics.bootstrap_wer_diff(refs, hyps, list(hyps), n=200, seed=1) == (0.0, 0.0, 0.0)


def test_bootstrap_constant_per_word_difference_is_exact():
    # Every utterance: 2 reference words, A has 1 error, B none -> every resample's difference is 0.5.
    refs = ["one two", "three four", "five six", "seven eight"]
    a = ["one too", "tree four", "five sex", "seven ate"]
    diff, lo, hi = metrics.bootstrap_wer_diff(refs, a, refs, n=300, seed=0)
    assert diff == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)


def test_bootstrap_matches_numpy_reference_and_sign():
    import numpy as np

    refs = ["a b c d", "e f", "g h i", "j", "k l m n o"]
    a = ["a x c d", "e f", "g i", "q", "k l m n o"]  # errors 1, 0, 1, 1, 0
    b = ["a b c d", "e y", "g h i", "j", "k l m n"]  # errors 0, 1, 0, 0, 1
    diff, lo, hi = metrics.bootstrap_wer_diff(refs, a, b, n=500, seed=7)
    err_a, err_b, words = np.array([1, 0, 1, 1, 0]), np.array([0, 1, 0, 0, 1]), np.array([4, 2, 3, 1, 5])
    idx = np.random.default_rng(7).integers(0, 5, size=(500, 5))
    want = (err_a[idx].sum(1) - err_b[idx].sum(1)) / words[idx].sum(1)
    assert diff == pytest.approx(1 / 15)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(want, [2.5, 97.5])))
    assert lo < diff < hi
    swapped = metrics.bootstrap_wer_diff(refs, b, a, n=500, seed=7)
    assert swapped == pytest.approx((-diff, -hi, -lo))


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="references but"):
        metrics.bootstrap_wer_diff(["a"], ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        metrics.bootstrap_wer_diff([], [], [])

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

"""Word, character and token error rates (jiwer), corpus-level and per utterance; paired bootstrap
intervals.

The project's only error-rate implementation: training evaluation, the search, export parity
(``tflite_export/parity.py``) and REPORT.md all count through this module, so every WER column means the same
thing. Corpus WER is total word errors (substitutions + deletions + insertions) over total reference words,
not the mean of per-utterance rates. Text is compared after light normalisation (lower case, collapsed
whitespace); token-id sequences (``token_error_rate``) are compared as they are.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jiwer
import numpy as np


@dataclass(frozen=True)
class ErrorCounts:
    """Edit counts of hypotheses against references at one unit (words or characters)."""

    substitutions: int
    deletions: int
    insertions: int
    reference_units: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Errors over reference units; 0 for an empty reference with no hypothesis, else inf if none."""
        if self.reference_units == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_units


def normalize(text: str) -> str:
    """Lower case, whitespace collapsed to single spaces, ends stripped."""
    return " ".join(text.lower().split())


def _check(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")


def _words(text: str) -> list[str]:
    return normalize(text).split()


def _chars(text: str) -> list[str]:
    return list(normalize(text))


def _counts(ref_units: list[str], hyp_units: list[str]) -> ErrorCounts:
    if not ref_units:
        return ErrorCounts(0, 0, len(hyp_units), 0)
    if not hyp_units:
        return ErrorCounts(0, len(ref_units), 0, len(ref_units))
    # jiwer aligns whitespace-separated tokens; units are joined with a separator they cannot contain.
    out = jiwer.process_words(" ".join(ref_units), " ".join(hyp_units))
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, len(ref_units))


def _encode_chars(units: list[str]) -> list[str]:
    return ["<sp>" if c == " " else c for c in units]


def utterance_counts(reference: str, hypothesis: str, unit: str = "word") -> ErrorCounts:
    """Edit counts for one utterance; ``unit`` is "word" or "char" (spaces count as characters)."""
    if unit == "word":
        return _counts(_words(reference), _words(hypothesis))
    if unit == "char":
        return _counts(_encode_chars(_chars(reference)), _encode_chars(_chars(hypothesis)))
    raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")


def _sum(counts: Iterable[ErrorCounts]) -> ErrorCounts:
    s = d = i = n = 0
    for c in counts:
        s, d, i, n = s + c.substitutions, d + c.deletions, i + c.insertions, n + c.reference_units
    return ErrorCounts(s, d, i, n)


def corpus_counts(references: Sequence[str], hypotheses: Sequence[str], unit: str = "word") -> ErrorCounts:
    """Summed edit counts over a corpus."""
    _check(references, hypotheses)
    return _sum(utterance_counts(r, h, unit) for r, h in zip(references, hypotheses, strict=True))


def token_error_rate(references: Sequence[Sequence[int]], hypotheses: Sequence[Sequence[int]]) -> float:
    """Corpus error rate between token-id sequences (e.g. Keras vs TFLite greedy hypotheses): total token
    edits over total reference tokens, counted like ``wer`` (``ErrorCounts.rate`` for empty references)."""
    _check(references, hypotheses)
    return _sum(_counts([str(int(t)) for t in r], [str(int(t)) for t in h])
                for r, h in zip(references, hypotheses, strict=True)).rate


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate: total word errors / total reference words."""
    return corpus_counts(references, hypotheses, "word").rate


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus character error rate: total character errors / total reference characters."""
    return corpus_counts(references, hypotheses, "char").rate


def per_utterance(
    ids: Sequence[str], references: Sequence[str], hypotheses: Sequence[str]
) -> list[dict]:
    """One row per utterance: id, ref, hyp, word errors, ref words, wer, char errors, ref chars, cer."""
    _check(references, hypotheses)
    if len(ids) != len(references):
        raise ValueError(f"{len(ids)} ids but {len(references)} references")
    rows = []
    for uid, ref, hyp in zip(ids, references, hypotheses, strict=True):
        w, c = utterance_counts(ref, hyp, "word"), utterance_counts(ref, hyp, "char")
        rows.append({
            "id": uid, "ref": ref, "hyp": hyp,
            "word_errors": w.errors, "ref_words": w.reference_units, "wer": w.rate,
            "char_errors": c.errors, "ref_chars": c.reference_units, "cer": c.rate,
        })
    return rows


def bootstrap_wer_diff(references: Sequence[str], hypotheses_a: Sequence[str], hypotheses_b: Sequence[str],
                       n: int = 1000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """Corpus WER of system A minus system B, with a paired bootstrap interval over utterances.

    Paired bootstrap (Koehn 2004, "Statistical Significance Tests for Machine Translation Evaluation";
    Bisani & Ney 2004 for ASR): draw ``n`` resamples of the test utterances with replacement (the same
    utterances for both systems), recompute both corpus WERs on each (word errors summed over the resample
    over its reference words, per-utterance counts from jiwer) and take the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` percentiles of the differences. An interval that contains 0 is a tie at that
    confidence. Resample indices: ``np.random.default_rng(seed).integers(0, N, size=(n, N))``.

    Returns ``(diff, lo, hi)`` as fractions (0.05 = 5 WER points); ``diff`` is on the full set. Raises
    ValueError for empty or mismatched inputs, ``n < 1`` or a confidence outside (0, 1).
    """
    _check(references, hypotheses_a)
    _check(references, hypotheses_b)
    if not references:
        raise ValueError("bootstrap_wer_diff needs at least one utterance")
    if n < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_wer_diff wants n >= 1 and 0 < confidence < 1, got {n}, {confidence}")
    counts = [(utterance_counts(r, a), utterance_counts(r, b))
              for r, a, b in zip(references, hypotheses_a, hypotheses_b, strict=True)]
    err_a = np.array([a.errors for a, _ in counts], np.float64)
    err_b = np.array([b.errors for _, b in counts], np.float64)
    words = np.array([a.reference_units for a, _ in counts], np.float64)
    diff = float((err_a.sum() - err_b.sum()) / max(words.sum(), 1.0))
    idx = np.random.default_rng(seed).integers(0, len(references), size=(n, len(references)))
    diffs = (err_a[idx].sum(1) - err_b[idx].sum(1)) / np.maximum(words[idx].sum(1), 1.0)
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(diffs, [tail, 100.0 - tail])
    return diff, float(lo), float(hi)

"""Evaluation and tier search on a trained supernet, as library calls (recipes and the demo use these).

Both take a restored ``omni_tf.supernet.Supernet`` (``Supernet(config).restore(workdir)``).
- ``evaluate_levels(...)``: WER / CER (greedy, or beam) for every uniform level and for given per-kernel
  configs, with size estimates; writes ``<out_dir>/eval_<split>.json`` and ``.md``.
- ``search_tiers(...)``: per budget (``size.py`` metric), evolutionary search (``sparsity/search.py``) of
  per-kernel levels with dev-subset RNN-T loss (fast) or WER as fitness (population, generations, mutation,
  seed from ``config.sparsity.search_*``); the best config per tier is compared
  with the uniform config of the same budget; writes ``tier_<name>.json`` + ``search.json`` / ``search.md``.
- ``choose_tiers(...)``: per searched tier, greedy WER of the searched and the uniform config on held-out
  (dev) batches with a paired bootstrap interval; the tier keeps the searched config only when it is better
  (``sparsity/search.py`` ``choose_config``); writes ``choice.json`` / ``choice.md``.
References are the decoded label tokens of each batch (the pipeline carries tokens, not text).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from omni_tf import decoding, fileio, metrics
from omni_tf.losses.rnnt import rnnt_loss
from omni_tf.sparsity import search, size
from omni_tf.supernet import Supernet

Batch = dict[str, np.ndarray]


def load_batches(dataset: tf.data.Dataset, max_batches: int = 0) -> list[Batch]:
    """Materialises (the first ``max_batches``, 0 = all) batches as numpy dicts, reused across configs."""
    ds = dataset.take(max_batches) if max_batches > 0 else dataset
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def _texts(tokenizer, batch: Batch) -> list[str]:
    toks = [row[:n].tolist() for row, n in zip(batch["tokens"], batch["token_lengths"], strict=True)]
    return decoding.detokenize(tokenizer, toks)


def utterance_ids(batch: Batch) -> list[str]:
    """The utterance ids of ``batch`` (its ``ids`` entry, bytes or str) as str."""
    return [i.decode() if isinstance(i, bytes) else str(i) for i in batch["ids"]]


def transcribe(model, batches: Sequence[Batch], tokenizer, beam: int = 0) -> tuple[list, list, list]:
    """(ids, references, hypotheses) over ``batches`` with the model's current masks."""
    ids, refs, hyps = [], [], []
    for b in batches:
        feats, lens = tf.constant(b["features"]), tf.constant(b["feature_lengths"])
        out = decoding.beam_search(model, feats, lens, beam)[0] if beam > 0 else \
            decoding.greedy_search(model, feats, lens)
        ids += utterance_ids(b)
        refs += _texts(tokenizer, b)
        hyps += decoding.detokenize(tokenizer, out)
    return ids, refs, hyps


class LossEvaluator:
    """Mean per-utterance RNN-T loss over fixed batches with the current masks (one trace, reused)."""

    def __init__(self, model, batches: Sequence[Batch]):
        self.model, self.batches = model, list(batches)
        self._fn = tf.function(self._loss, reduce_retracing=True, autograph=False)

    def _loss(self, batch):
        logits, lengths = self.model(batch, training=False)
        return tf.reduce_sum(rnnt_loss(logits, batch["tokens"], lengths, batch["token_lengths"]))

    def __call__(self) -> float:
        total = sum(float(self._fn({k: tf.constant(v) for k, v in b.items() if k != "ids"}))
                    for b in self.batches)
        return total / max(1, sum(len(b["ids"]) for b in self.batches))


def _row(name: str, config: Mapping[str, int], masks, sizes: size.SizeModel, model, batches, tokenizer,
         beam: int) -> dict[str, Any]:
    if masks is not None:
        masks.apply(config)
    ids, refs, hyps = transcribe(model, batches, tokenizer, beam)
    w, c = metrics.corpus_counts(refs, hyps, "word"), metrics.corpus_counts(refs, hyps, "char")
    return {"name": name, "wer": w.rate, "cer": c.rate, "word_errors": w.errors,
            "ref_words": w.reference_units, "utterances": len(ids), **sizes.report(config)}


def evaluate_levels(supernet: Supernet, batches: Sequence[Batch], tokenizer,
                    configs: Mapping[str, Mapping[str, int]] | None = None, beam: int = 0,
                    out_dir: str | None = None, split: str = "dev") -> list[dict[str, Any]]:
    """One row per uniform level (``uniform_<sparsity>``; mode dense: ``uniform_0.00``, the model as is) and
    per named config: WER, CER, sizes. Raises ValueError for a config that is not a valid tier.
    """
    model, masks = supernet.model, supernet.masks
    sizes = supernet.size_model()
    configs = {name: supernet.tier(cfg) for name, cfg in (configs or {}).items()}
    levels = supernet.levels or (0.0,)
    named = {f"uniform_{levels[k]:.2f}": sizes.uniform_config(k) for k in range(len(levels))}
    named.update(configs)
    rows = [_row(n, cfg, masks, sizes, model, batches, tokenizer, beam) for n, cfg in named.items()]
    if masks is not None:
        masks.apply_uniform(0)
    if out_dir:
        write_table(rows, out_dir, f"eval_{split}", ["name", "wer", "cer", "utterances", "nonzero_params",
                                                     "int8_sparse_bytes"])
    return rows


def search_tiers(supernet: Supernet, batches: Sequence[Batch], budgets: Mapping[str, float], metric: str,
                 fitness: str = "loss", tokenizer=None, out_dir: str | None = None
                 ) -> dict[str, dict[str, Any]]:
    """Best per-kernel config per ``{tier: budget}`` (in ``metric`` units) and its uniform baseline.

    The search's population, generations, mutation probability and seed are the supernet's
    ``settings.search_*`` (``config.sparsity``).
    """
    model, masks = supernet.model, supernet.masks
    if masks is None:
        raise ValueError("search_tiers needs a supernet with levels (mode omni or pruned), not mode dense")
    if fitness == "loss":
        evaluate = LossEvaluator(model, batches)
    elif fitness == "wer":
        if tokenizer is None:
            raise ValueError("fitness='wer' needs a tokenizer")

        def evaluate() -> float:
            _, refs, hyps = transcribe(model, batches, tokenizer)
            return metrics.wer(refs, hyps)
    else:
        raise ValueError(f"fitness must be 'loss' or 'wer', got {fitness!r}")
    results = search.search_budgets(search.masked_fitness(masks, evaluate), supernet.size_model(), budgets,
                                    metric=metric, **supernet.settings.search_kwargs())
    masks.apply_uniform(0)
    out = {tier: {**r.to_dict(), "fitness_kind": fitness} for tier, r in results.items()}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        for tier, r in out.items():
            fileio.write_json(os.path.join(out_dir, f"tier_{tier}.json"), r["config"])
        rows = [{"tier": t, "budget": r["budget"], "size": r["size"], "fitness": r["fitness"],
                 "uniform_size": r["uniform_size"], "uniform_fitness": r["uniform_fitness"]}
                for t, r in out.items()]
        write_table(rows, out_dir, "search", list(rows[0]) if rows else [], full=out)
    return out


def choose_tiers(supernet: Supernet, batches: Sequence[Batch], tokenizer,
                 found: Mapping[str, Mapping[str, Any]], out_dir: str | None = None, resamples: int = 1000,
                 seed: int = 0) -> dict[str, dict[str, Any]]:
    """Searched vs uniform config per tier of ``found`` (``search_tiers`` output) on ``batches``.

    Returns ``{tier: {"choice", "reason", "config" (the chosen one), "searched_wer", "uniform_wer", "diff",
    "lo", "hi", "utterances"}}``; differences are searched - uniform (fractions), 95 % intervals.
    """
    model, masks = supernet.model, supernet.masks
    hyps: dict[tuple, tuple[list, list]] = {}

    def decode(config: Mapping[str, int]) -> tuple[list, list]:
        key = tuple(sorted(config.items()))
        if key not in hyps:
            masks.apply(config)
            _, refs, out = transcribe(model, batches, tokenizer)
            hyps[key] = (refs, out)
        return hyps[key]

    chosen = {}
    for tier, r in found.items():
        refs, searched = decode(r["config"])
        _, uniform = decode(r["uniform_config"])
        interval = metrics.bootstrap_wer_diff(refs, searched, uniform, n=resamples, seed=seed)
        same = dict(r["config"]) == dict(r["uniform_config"])
        choice, reason = search.choose_config(interval, same_config=same)
        chosen[tier] = {"choice": choice, "reason": reason,
                        "config": dict(r["config"] if choice == search.SEARCHED else r["uniform_config"]),
                        "searched_wer": metrics.wer(refs, searched),
                        "uniform_wer": metrics.wer(refs, uniform),
                        "diff": interval[0], "lo": interval[1], "hi": interval[2], "utterances": len(refs)}
    masks.apply_uniform(0)
    if out_dir:
        rows = [{"tier": t, **{k: v for k, v in c.items() if k != "config"}} for t, c in chosen.items()]
        write_table(rows, out_dir, "choice", list(rows[0]) if rows else [], full=chosen)
    return chosen


def write_table(rows: list[dict], out_dir: str, stem: str, columns: list[str], full: Any = None) -> None:
    """``<stem>.json`` (``full`` or the rows) and a Markdown table ``<stem>.md`` of ``columns``, each written
    atomically (``fileio.write_json`` / ``write_text``: whole or absent)."""
    os.makedirs(out_dir, exist_ok=True)
    fileio.write_json(os.path.join(out_dir, f"{stem}.json"), full if full is not None else rows)

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    fileio.write_text(os.path.join(out_dir, f"{stem}.md"), "\n".join(lines) + "\n")

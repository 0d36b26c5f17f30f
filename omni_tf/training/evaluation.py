"""Evaluation and tier search on a trained supernet, as library calls (recipes and the demo use these).

- ``restore_supernet(config, workdir)`` -> (model, masks) from the latest ``<workdir>/ckpt``.
- ``evaluate_levels(...)``: WER / CER (greedy, or beam) for every uniform level and for given per-kernel
  configs, with size estimates; writes ``<out_dir>/eval_<split>.json`` and ``.md``.
- ``search_tiers(...)``: per budget (``size.py`` metric), evolutionary search (``sparsity/search.py``) of
  per-kernel levels with dev-subset RNN-T loss (fast) or WER as fitness; the best config per tier is compared
  with the uniform config of the same budget; writes ``tier_<name>.json`` + ``search.json`` / ``search.md``.
- ``choose_tiers(...)``: per searched tier, greedy WER of the searched and the uniform config on held-out
  (dev) batches with a paired bootstrap interval; the tier keeps the searched config only when it is better
  (``sparsity/search.py`` ``choose_config``); writes ``choice.json`` / ``choice.md``.
References are the decoded label tokens of each batch (the pipeline carries tokens, not text).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf

from omni_tf import decoding, metrics
from omni_tf.losses.rnnt import rnnt_loss
from omni_tf.model import build_model
from omni_tf.sparsity import search, size
from omni_tf.sparsity.masking import SupernetMasks
from omni_tf.training.checkpoint import CKPT_SUBDIR, resolve_checkpoint

Batch = dict[str, np.ndarray]


def supernet_levels(config: ml_collections.ConfigDict) -> tuple[float, ...]:
    """The level set the checkpoint's survival tensors index: ``(0, target)`` for mode pruned."""
    if config.training.mode == "pruned":
        return (0.0, float(config.sparsity.target_sparsity))
    return tuple(config.sparsity.levels)


def restore_supernet(config: ml_collections.ConfigDict, workdir: str, checkpoint: str | None = None):
    """(model, masks) with weights and survival levels of ``checkpoint`` (default: the newest readable one in
    ``<workdir>/ckpt``, see ``checkpoint.resolve_checkpoint``: FileNotFoundError / CheckpointError)."""
    path = resolve_checkpoint(checkpoint or os.path.join(workdir, CKPT_SUBDIR))
    model = build_model(config.model)
    model.build()
    masks = SupernetMasks.from_config(model, config.sparsity, supernet_levels(config))
    tf.train.Checkpoint(model=model, masks=masks).restore(path).expect_partial()
    return model, masks


def load_batches(dataset: tf.data.Dataset, max_batches: int = 0) -> list[Batch]:
    """Materialises (the first ``max_batches``, 0 = all) batches as numpy dicts, reused across configs."""
    ds = dataset.take(max_batches) if max_batches > 0 else dataset
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def _texts(tokenizer, batch: Batch) -> list[str]:
    toks = [row[:n].tolist() for row, n in zip(batch["tokens"], batch["token_lengths"], strict=True)]
    return decoding.detokenize(tokenizer, toks)


def transcribe(model, batches: Sequence[Batch], tokenizer, beam: int = 0) -> tuple[list, list, list]:
    """(ids, references, hypotheses) over ``batches`` with the model's current masks."""
    ids, refs, hyps = [], [], []
    for b in batches:
        feats, lens = tf.constant(b["features"]), tf.constant(b["feature_lengths"])
        out = decoding.beam_search(model, feats, lens, beam)[0] if beam > 0 else \
            decoding.greedy_search(model, feats, lens)
        ids += [i.decode() if isinstance(i, bytes) else str(i) for i in b["ids"]]
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


def size_model_of(model, masks: SupernetMasks) -> size.SizeModel:
    return size.SizeModel.from_masks(masks, size.count_other_params(model))


def _row(name: str, config: Mapping[str, int], masks, sizes: size.SizeModel, model, batches, tokenizer,
         beam: int) -> dict[str, Any]:
    masks.apply(config)
    ids, refs, hyps = transcribe(model, batches, tokenizer, beam)
    w, c = metrics.corpus_counts(refs, hyps, "word"), metrics.corpus_counts(refs, hyps, "char")
    return {"name": name, "wer": w.rate, "cer": c.rate, "word_errors": w.errors,
            "ref_words": w.reference_units, "utterances": len(ids), **sizes.report(config)}


def evaluate_levels(model, masks: SupernetMasks, batches: Sequence[Batch], tokenizer,
                    configs: Mapping[str, Mapping[str, int]] | None = None, beam: int = 0,
                    out_dir: str | None = None, split: str = "dev") -> list[dict[str, Any]]:
    """One row per uniform level (``uniform_<sparsity>``) and per named config: WER, CER, sizes."""
    sizes = size_model_of(model, masks)
    named = {f"uniform_{masks.levels[k]:.2f}": sizes.uniform_config(k) for k in range(masks.num_levels)}
    named.update(configs or {})
    rows = [_row(n, cfg, masks, sizes, model, batches, tokenizer, beam) for n, cfg in named.items()]
    masks.apply_uniform(0)
    if out_dir:
        write_table(rows, out_dir, f"eval_{split}", ["name", "wer", "cer", "utterances", "nonzero_params",
                                                     "int8_sparse_bytes"])
    return rows


def search_tiers(model, masks: SupernetMasks, batches: Sequence[Batch], budgets: Mapping[str, float],
                 metric: str = "int8_sparse_bytes", fitness: str = "loss", tokenizer=None,
                 out_dir: str | None = None, **search_kwargs: Any) -> dict[str, dict[str, Any]]:
    """Best per-kernel config per ``{tier: budget}`` (in ``metric`` units) and its uniform baseline."""
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
    sizes = size_model_of(model, masks)
    results = search.search_budgets(search.masked_fitness(masks, evaluate), sizes, budgets, metric=metric,
                                    **search_kwargs)
    masks.apply_uniform(0)
    out = {tier: {**r.to_dict(), "fitness_kind": fitness} for tier, r in results.items()}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        for tier, r in out.items():
            with open(os.path.join(out_dir, f"tier_{tier}.json"), "w") as f:
                json.dump(r["config"], f, indent=1)
        rows = [{"tier": t, "budget": r["budget"], "size": r["size"], "fitness": r["fitness"],
                 "uniform_size": r["uniform_size"], "uniform_fitness": r["uniform_fitness"]}
                for t, r in out.items()]
        write_table(rows, out_dir, "search", list(rows[0]) if rows else [], full=out)
    return out


def choose_tiers(model, masks: SupernetMasks, batches: Sequence[Batch], tokenizer,
                 found: Mapping[str, Mapping[str, Any]], out_dir: str | None = None, resamples: int = 1000,
                 seed: int = 0) -> dict[str, dict[str, Any]]:
    """Searched vs uniform config per tier of ``found`` (``search_tiers`` output) on ``batches``.

    Returns ``{tier: {"choice", "reason", "config" (the chosen one), "searched_wer", "uniform_wer", "diff",
    "lo", "hi", "utterances"}}``; differences are searched - uniform (fractions), 95 % intervals.
    """
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
    """``<stem>.json`` (``full`` or the rows) and a Markdown table ``<stem>.md`` of ``columns``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
        json.dump(full if full is not None else rows, f, indent=1)

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")

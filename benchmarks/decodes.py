"""Cached greedy decodes of training checkpoints at uniform sparsity levels, and the verdict of a paired
bootstrap interval: the pieces ``benchmarks/omni_vs_pruned.py`` and ``benchmarks/compare_runs.py`` share.

``Results`` is a JSON file of finished runs and evaluations, rewritten after each one so an interrupted
benchmark skips them on the next run; ``decode_levels`` restores a checkpoint (or loads a shipped dense
bundle: ``bundle_supernet``) only when a level it is asked for is not in it yet.
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

import omni_tf  # noqa: F401
from omni_tf import fileio, metrics
from omni_tf.supernet import Supernet
from omni_tf.training import evaluation, pretrained
from recipes import end_to_end as e2e


class Results:
    """A JSON file ``{"runs": {name: {...}}, "evals": {key: {...}}}`` (e.g. ``omni_vs_pruned``'s
    ``results.json``), rewritten atomically after every finished item so an interrupted benchmark skips it
    on the next run."""

    def __init__(self, path: str):
        self.path = path
        self.data: dict[str, Any] = {"runs": {}, "evals": {}}
        if os.path.exists(path):
            with open(path) as f:
                self.data = json.load(f)

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.data[kind].get(key)

    def put(self, kind: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
        self.data[kind][key] = value
        fileio.write_json(self.path, self.data)
        return value


def test_batches(config: ml_collections.ConfigDict, manifest: str, max_utterances: int) -> tuple[list, Any]:
    """Materialised batches of (the first ``max_utterances`` of) the test ``manifest`` and its tokenizer."""
    c = copy.deepcopy(config)
    with c.unlocked():
        c.paths.test_manifest = manifest
    return e2e.split_batches(c, "test", max_utterances)


def bundle_supernet(config: ml_collections.ConfigDict, path: str) -> Supernet:
    """A fresh supernet of ``config`` holding the shipped dense bundle ``path``'s weights
    (``pretrained.load_weights``); with masks (mode omni / pruned) every level is ranked by those weights'
    magnitudes (``update_rankings`` to the final levels: one-shot magnitude pruning of the dense model, Zhu &
    Gupta 2017 without the gradual schedule). Raises what ``load_weights`` raises."""
    supernet = Supernet(config)
    pretrained.load_weights(supernet.model, path)
    if supernet.masks is not None:
        supernet.masks.update_rankings()
    return supernet


def decode_levels(results: Results, workdir: str, key: str, config: ml_collections.ConfigDict,
                  levels: Mapping[str, float], data: tuple[list, Any] | None, bundle: str = ""
                  ) -> dict[str, dict[str, Any]]:
    """Greedy hypotheses and WER of ``workdir``'s latest checkpoint (or, with ``bundle``, of that shipped
    dense bundle's weights: ``bundle_supernet``) at each ``{name: uniform sparsity}``.

    Cached in ``results`` as evals ``<key>/<name>``: ``{wer, ids, refs, hyps, utterances}``; the checkpoint
    is restored, and ``data`` (``test_batches``: batches and tokenizer) read, only when one is missing. With
    ``data`` given, a cached evaluation of other utterances (e.g. an earlier ``--eval_utterances``) counts as
    missing and is decoded again on ``data``'s. A run of mode dense has only sparsity 0 (the model as is).
    Raises ValueError for a sparsity that is not a level of the supernet.
    """
    expected = None if data is None else [i for b in data[0] for i in evaluation.utterance_ids(b)]

    def cached(tier: str) -> bool:
        found = results.get("evals", f"{key}/{tier}")
        return found is not None and (expected is None or found["ids"] == expected)

    todo = {t: s for t, s in levels.items() if not cached(t)}
    if todo:
        if bundle:
            supernet = bundle_supernet(config, bundle)
        else:
            supernet = Supernet(config)
            supernet.restore(workdir)
        model, masks = supernet.model, supernet.masks
        have = supernet.levels or (0.0,)
        batches, tokenizer = data
        for tier, s in todo.items():
            k = min(range(len(have)), key=lambda i: abs(have[i] - s))
            if abs(have[k] - s) > 1e-6:
                raise ValueError(f"{key}: sparsity {s} of {tier} is not a level of {have}")
            if masks is not None:
                masks.apply_uniform(k)
            ids, refs, hyps = evaluation.transcribe(model, batches, tokenizer)
            results.put("evals", f"{key}/{tier}", {"wer": metrics.wer(refs, hyps), "ids": ids, "refs": refs,
                                                   "hyps": hyps, "utterances": len(ids)})
    return {t: results.get("evals", f"{key}/{t}") for t in levels}


def verdict(lo: float, hi: float, a: str = "omni", b: str = "pruned") -> str:
    """``<a> better`` / ``<b> better`` when the 95 % interval ``[lo, hi]`` of WER a - b excludes 0 (an
    error-rate difference: below 0 means ``a`` makes fewer errors), else ``tie``."""
    return f"{a} better" if hi < 0 else f"{b} better" if lo > 0 else "tie"

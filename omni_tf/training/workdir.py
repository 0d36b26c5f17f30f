"""A training workdir has one writer and one configuration: ``claim`` takes its lock and checks its config.

``claim(workdir, config)`` (used by ``recipes/librispeech/train.py`` and ``recipes/end_to_end.py``) takes the
exclusive directory lock (``omni_tf.fileio.DirLock``: a second process fails at once, naming the holder) and
compares ``config`` with the ``config.json`` recorded by the run that made the workdir's checkpoint. A field
that changes the trained result differs -> ``ConfigChanged`` naming the fields, unless
``allow_config_change``. Fields that do not change the result (``RESULT_NEUTRAL``: logging and checkpoint
cadence, checkpoints kept, where the data is, the ``preset`` / ``variants`` record, whose fields are compared
themselves) and the budget (``BUDGET``: ``max_steps``, ``max_minutes``; a larger one continues the run) may
differ. A field added later (``ADDED_FIELDS``) at the value that reproduces older runs counts as absent.
Then ``config.json`` is (re)written atomically.

``result_fields(config)`` is the same rule as a flat dict, for stage keys (``recipes/stages.py``).
``with_added_fields(recorded)`` completes a recorded config written before an ``ADDED_FIELDS`` field existed
with that field's neutral value, so code that reads the field can run it (``benchmarks/compare_runs.py``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from omni_tf import fileio

CONFIG_FILE = "config.json"
# Dotted config fields that do not change what training computes.
RESULT_NEUTRAL = ("training.log_every", "training.summary_every", "training.checkpoint_every",
                  "training.keep_checkpoints", "training.device", "paths", "preset", "variants",
                  "sparsity.search_metric", "sparsity.search_population", "sparsity.search_generations",
                  "sparsity.search_mutation_prob", "sparsity.search_seed")
# The budget: a larger one continues training from the checkpoint.
BUDGET = ("training.max_steps", "training.max_minutes")
# Fields added after configs were recorded without them, with the value that trains what those configs
# trained: at that value a field is left out of ``result_fields``, so the recorded configs of older workdirs,
# stage keys and benchmark digests (``benchmarks/omni_vs_pruned.config_digest``) still match.
ADDED_FIELDS = {"sparsity.per_level_norm": False}


class ConfigChanged(ValueError):
    """The workdir's recorded config differs from this run's in fields that change the result."""


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def _skipped(key: str, skip: tuple[str, ...]) -> bool:
    return any(key == s or key.startswith(s + ".") for s in skip)


def result_fields(config: ml_collections.ConfigDict | Mapping[str, Any], budget: bool = False
                  ) -> dict[str, Any]:
    """``{dotted field: value}`` of the fields that change the trained result (and the budget if asked)."""
    d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
    skip = RESULT_NEUTRAL if budget else RESULT_NEUTRAL + BUDGET
    flat = _flatten(json.loads(json.dumps(d, default=str)))
    return {k: v for k, v in flat.items()
            if not _skipped(k, skip) and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}


def with_added_fields(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested ``recorded`` config dict with every ``ADDED_FIELDS`` field it lacks set to the
    value that reproduces what it trained (a config written before the field existed). Raises KeyError
    when the field's section is missing (not an experiment config)."""
    out = json.loads(json.dumps(recorded, default=str))
    for dotted, neutral in ADDED_FIELDS.items():
        *sections, name = dotted.split(".")
        node = out
        for section in sections:
            node = node[section]
        node.setdefault(name, neutral)
    return out


def config_changes(recorded: Mapping[str, Any], config: ml_collections.ConfigDict | Mapping[str, Any]
                   ) -> list[str]:
    """Result fields that differ between ``recorded`` and ``config``, as "dotted.name: a -> b"."""
    old, new = result_fields(recorded), result_fields(config)
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _has_checkpoint(workdir: str) -> bool:
    ckpt = os.path.join(workdir, "ckpt")
    return os.path.isdir(ckpt) and any(n.endswith(".index") for n in os.listdir(ckpt))


def _is_chief() -> bool:
    """False for a non-chief multi-worker process (TF_CONFIG), which shares the chief's workdir."""
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    except ValueError:
        return True
    kind, index = task.get("type"), int(task.get("index", 0))
    return kind in (None, "chief") or (kind == "worker" and index == 0)


def claim(workdir: str, config: ml_collections.ConfigDict, allow_config_change: bool = False
          ) -> fileio.DirLock | None:
    """Locks ``workdir`` (returns the held lock; None for non-chief workers) and records ``config``.

    Raises:
      fileio.DirLocked: another process writes ``workdir`` (the message names its pid, command and host).
      ConfigChanged: the workdir holds a checkpoint trained with a config that differs in result fields.
    """
    lock = fileio.DirLock(workdir).acquire() if _is_chief() else None
    try:
        path = os.path.join(workdir, CONFIG_FILE)
        if os.path.isfile(path) and _has_checkpoint(workdir):
            with open(path, encoding="utf-8") as f:
                recorded = json.load(f)
            changed = config_changes(recorded, config)
            if changed and not allow_config_change:
                raise ConfigChanged(f"{workdir} holds a checkpoint trained with another config ({path}); "
                                    f"differing fields: {'; '.join(changed)}. Use another workdir, or pass "
                                    "--allow_config_change to continue it with the new values")
        if lock is not None:
            fileio.write_text(path, config.to_json_best_effort(indent=1))
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock

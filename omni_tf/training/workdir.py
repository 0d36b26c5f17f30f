"""A training workdir has one writer and one configuration: ``claim`` takes its lock and checks its config.

``claim(workdir, config)`` (used by ``recipes/librispeech/train.py`` and ``recipes/end_to_end.py``) takes the
exclusive directory lock (``omni_tf.fileio.DirLock``: a second process fails at once, naming the holder) and
compares ``config`` with the ``config.json`` recorded by the run that made the workdir's checkpoint. A field
that changes the trained result differs -> ``ConfigChanged`` naming the fields, unless
``allow_config_change``. Fields that do not change the result (``RESULT_NEUTRAL``: logging and checkpoint
cadence, checkpoints kept, where the data is, the ``preset`` / ``variants`` record, whose fields are compared
themselves) and the budget (``BUDGET``: ``max_steps``, ``max_minutes``; a larger one continues the run) may
differ. A field added later (``ADDED_FIELDS``) at the value that reproduces older runs counts as absent, and
a removed field that never changed the result (``REMOVED_FIELDS``) is ignored. Then ``config.json`` is
(re)written atomically.

``result_fields(config)`` is the same rule as a flat dict, for stage keys (``recipes/stages.py``) and
benchmark digests, except that the ``ADDED_FIELDS`` those hashes held before the field was registered
(``HASHED_ADDED_FIELDS``) stay in it, so recorded keys and digests still match.
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
# Fields older configs recorded that no code read (removed from the config later): ignored when compared.
REMOVED_FIELDS = ("training.eval_every",)
# Dotted config fields that do not change what training computes.
RESULT_NEUTRAL = ("training.log_every", "training.summary_every", "training.checkpoint_every",
                  "training.keep_checkpoints", "training.device", "paths", "preset", "variants",
                  "sparsity.search_metric", "sparsity.search_population", "sparsity.search_generations",
                  "sparsity.search_mutation_prob", "sparsity.search_seed") + REMOVED_FIELDS
# The budget: a larger one continues training from the checkpoint.
BUDGET = ("training.max_steps", "training.max_minutes")
# Fields added after configs were recorded without them, with the value that computes what the code before
# the field computed: at that value a field counts as absent when a recorded config is compared
# (``config_changes``), so the config.json of an older workdir still matches. Where the default is not
# that value (search_dev_utterances: the search used 64 dev utterances before the field), an older
# workdir resumes only with the old value. One entry per line, sorted.
ADDED_FIELDS = {
    "sparsity.distill_mode": "add",  # distillation was label + w * KD
    "sparsity.distill_norm": "nodes",  # KD was the mean KL per lattice node
    "sparsity.granularity": "weights",
    "sparsity.per_level_norm": False,
    "sparsity.search_dev_utterances": 64,  # the end-to-end search's fitness subset
    "sparsity.search_fitness": "loss",
    "sparsity.tier_weights": (),  # every subnet weighs 1: the plain mean over subnets
    "sparsity.train_levels": (0.6, 0.75, 0.9),  # read only by the tiers samplers, added with it
    "training.adam_epsilon": 1e-9,
    "training.ctc_weight": 0.0,
    "training.eden_progress": 0.3,  # read only by decay=eden, added with it
    "training.eden_steps": 5000,
    "training.init_from": "",
    "training.max_consecutive_skips": 50,  # older code never stopped; a run that finishes is the same
}
# The ADDED_FIELDS that stage keys (``recipes/end_to_end.train_stage``) and benchmark digests
# (``benchmarks/omni_vs_pruned.config_digest``) hashed, at their value, before they were registered: they stay
# in those hashes so that recorded keys and digests still match. A field registered when it is added is not
# listed (it is left out of hashes at its neutral value from the start). One entry per line, sorted.
HASHED_ADDED_FIELDS = (
    "sparsity.distill_mode",
    "sparsity.distill_norm",
    "sparsity.granularity",
    "sparsity.search_dev_utterances",
    "sparsity.search_fitness",
    "sparsity.train_levels",
    "training.adam_epsilon",
    "training.ctc_weight",
    "training.eden_progress",
    "training.eden_steps",
    "training.init_from",
    "training.max_consecutive_skips",
)


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


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def unhashed_added_fields() -> dict[str, Any]:
    """The ``ADDED_FIELDS`` left out of stage keys and digests at their neutral value (JSON form: lists)."""
    return {k: _jsonable(v) for k, v in ADDED_FIELDS.items() if k not in HASHED_ADDED_FIELDS}


def _result_fields(config: ml_collections.ConfigDict | Mapping[str, Any], budget: bool,
                   neutral: Mapping[str, Any]) -> dict[str, Any]:
    d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
    skip = RESULT_NEUTRAL if budget else RESULT_NEUTRAL + BUDGET
    flat = _flatten(_jsonable(d))
    return {k: v for k, v in flat.items() if not _skipped(k, skip) and not (k in neutral and v == neutral[k])}


def result_fields(config: ml_collections.ConfigDict | Mapping[str, Any], budget: bool = False
                  ) -> dict[str, Any]:
    """``{dotted field: value}`` of the fields that change the trained result (and the budget if asked), as
    stage keys hash them: an ``ADDED_FIELDS`` field at its neutral value is left out unless listed in
    ``HASHED_ADDED_FIELDS``."""
    return _result_fields(config, budget, unhashed_added_fields())


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
    """Result fields that differ between ``recorded`` and ``config``, as "dotted.name: a -> b"; a field of
    ``ADDED_FIELDS`` at its neutral value on one side and absent on the other is no difference."""
    neutral = {k: _jsonable(v) for k, v in ADDED_FIELDS.items()}
    old, new = _result_fields(recorded, False, neutral), _result_fields(config, False, neutral)
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

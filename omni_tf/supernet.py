"""The supernet as one object built from an experiment config: the seam between the config and its users.

Training, evaluation, search, export and the benchmarks all ask a ``Supernet`` for the same five things,
built here from the same fields (every ``config.sparsity`` field is read once, in ``SparsitySettings``):

- the level set: ``sparsity.levels`` (mode omni), ``(0, target_sparsity)`` (mode pruned: the individually
  pruned baseline of Omni-sparsity DNN, Wu et al. 2021, Sec. 4), none (mode dense);
- the masks (``SupernetMasks``: block, norm, granularity), the schedule (``LevelSchedule``), the sampler
  (kind, random kind, subnets per step) and the size model (``SizeModel``);
- what goes into a checkpoint (``checkpoint_objects``: the model, the survival levels, the level set
  itself and, with ``sparsity.per_level_norm``, the per-level LayerNorm parameters) and
  ``restore(workdir)``: the only restore path, through ``training/checkpoint.py``. A checkpoint trained
  with another level set (even of the same count: a tier called 0.6 would silently be 0.8 sparse) raises
  ``LevelSetMismatch`` naming both sets;
- tiers: ``TierSpec`` (one syntax for every recipe's ``--tiers``: ``name=sparsity:0.75``,
  ``name=bytes:0.35`` = fraction of the dense int8 model's bytes, ``name=level:3`` = index into the level
  set), ``tier(spec)`` -> a validated per-kernel level config, ``budget(spec, metric)`` -> a size budget;
  ``with_tier_levels(config, tiers)`` makes every ``sparsity:S`` tier a level of the set (and the tiers the
  ``tiers`` samplers' ``train_levels``) before training; with such a sampler it raises ValueError for a tier
  it would not train (a ``bytes:`` tier without ``--config.sparsity.train_levels``, or a given
  ``train_levels`` lacking a tier's level).

Usage::

    supernet = Supernet(config)                 # model built, masks / schedule / sampler from config
    supernet.restore(workdir)                   # latest checkpoint of <workdir>/ckpt (level set checked)
    supernet.masks.apply(supernet.tier(TierSpec("level", 3)))
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from omni_tf.model import build_model
from omni_tf.sparsity import levels as lv
from omni_tf.sparsity import sampling
from omni_tf.sparsity import size as size_lib
from omni_tf.sparsity.level_norms import LevelNorms
from omni_tf.sparsity.masking import SupernetMasks
from omni_tf.sparsity.schedule import LevelSchedule
from omni_tf.sparsity.structured import StructuredSizeModel
from omni_tf.training.checkpoint import CheckpointKeeper

MODES = ("dense", "pruned", "omni")
TIER_KINDS = ("sparsity", "bytes", "level")
# The size a tier's budget limits per export quantization (``size.py`` metrics), used when
# ``sparsity.search_metric`` is "auto". Only float32 files are written sparse-encoded by default
# (tflite_export/convert.py: with LiteRT 2.3.0 sparse float16 files output NaN and sparse int8 files compute
# wrong values), so only their bytes shrink with sparsity; the other modes count nonzero parameters (what a
# runtime with working sparse kernels would store).
BUDGET_METRIC = {"float32": "float32_sparse_bytes", "float16": "nonzero_params",
                 "dynamic_int8": "nonzero_params", "weight_only_int8": "nonzero_params",
                 "dynamic_int4": "nonzero_params", "int8": "nonzero_params", "auto": "nonzero_params"}
# The storage format a file of each export quantization has, for the size model's "bytes on disk" of a level
# that was not exported (the report's Pareto plot). The size model counts prunable kernels at 1 byte
# (int8) with float32 per-channel scales and everything else at float32 (dynamic-range int8), so
# ``DISK_BYTES_APPROXIMATE`` modes are estimates: dynamic_int4 stores kernels in half a byte, "auto" picks a
# mode per tier.
DISK_BYTES_FORMAT = {"float32": "float32", "float16": "float16", "dynamic_int8": "int8",
                     "weight_only_int8": "int8", "dynamic_int4": "int8", "int8": "int8", "auto": "int8"}
DISK_BYTES_APPROXIMATE = frozenset({"dynamic_int4", "auto"})


class LevelSetMismatch(ValueError):
    """A checkpoint's stored level set differs from the config's."""


# ---------------------------------------------------------------------------------------------------------
# Settings: every config.sparsity field, read once


@dataclasses.dataclass(frozen=True)
class SparsitySettings:
    """``config.sparsity`` as typed values (see ``omni_tf/configs/sparsity.py`` for each field's meaning).
    Raises ValueError for ``tier_weights`` that do not fit the sampler and ``train_levels``
    (``sampling.check_tier_weights``), so a config that sets them wrong fails wherever it is used."""

    levels: tuple[float, ...]
    block: str
    norm: str
    granularity: str
    begin_step: int
    end_step: int
    frequency: int
    power: float
    dense_warmup: bool
    sampler: str
    subnets_per_step: int
    random_kind: str
    train_levels: tuple[float, ...]
    tier_weights: tuple[float, ...]
    distill_weight: float
    distill_mode: str
    distill_norm: str
    per_level_norm: bool
    target_sparsity: float
    search_metric: str
    search_population: int
    search_generations: int
    search_mutation_prob: float
    search_seed: int
    search_fitness: str
    search_dev_utterances: int

    def __post_init__(self):
        sampling.check_tier_weights(self.sampler, self.train_levels, self.tier_weights)

    @classmethod
    def from_config(cls, sp: ml_collections.ConfigDict) -> SparsitySettings:
        return cls(
            levels=tuple(float(s) for s in sp.levels), block=str(sp.block), norm=str(sp.norm),
            granularity=sp.granularity,
            begin_step=int(sp.begin_step), end_step=int(sp.end_step), frequency=int(sp.frequency),
            power=float(sp.power), dense_warmup=bool(sp.dense_warmup), sampler=str(sp.sampler),
            subnets_per_step=int(sp.subnets_per_step), random_kind=str(sp.random_kind),
            train_levels=tuple(float(s) for s in sp.train_levels), tier_weights=tuple(sp.tier_weights),
            distill_weight=float(sp.distill_weight),
            distill_mode=str(sp.distill_mode), distill_norm=str(sp.distill_norm),
            per_level_norm=bool(sp.per_level_norm), target_sparsity=float(sp.target_sparsity),
            search_metric=str(sp.search_metric), search_population=int(sp.search_population),
            search_generations=int(sp.search_generations),
            search_mutation_prob=float(sp.search_mutation_prob), search_seed=int(sp.search_seed),
            search_fitness=str(sp.search_fitness), search_dev_utterances=int(sp.search_dev_utterances))

    def search_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``omni_tf.sparsity.search.evolutionary_search``."""
        return {"population": self.search_population, "generations": self.search_generations,
                "mutation_prob": self.search_mutation_prob, "seed": self.search_seed}


def level_set(mode: str, levels: Sequence[float], target_sparsity: float) -> tuple[float, ...]:
    """The level set the survival tensors index: ``levels`` (omni), ``(0, target)`` (pruned), ``()`` (dense).

    Raises ValueError for an unknown mode or an invalid set.
    """
    if mode not in MODES:
        raise ValueError(f"training.mode must be one of {MODES}, got {mode!r}")
    if mode == "dense":
        return ()
    if mode == "pruned":
        return lv.validate_levels((0.0, float(target_sparsity)))
    return lv.validate_levels(levels)


class _LevelRecord(tf.Module):
    """The level set as a checkpointed variable (float32 ``[K]``, any K on restore)."""

    def __init__(self, levels: Sequence[float], name: str = "level_set"):
        super().__init__(name=name)
        self.levels = tf.Variable(tf.constant(list(levels), tf.float32, shape=[len(levels)]),
                                  shape=tf.TensorShape([None]), trainable=False, name="levels")

    def value(self) -> tuple[float, ...]:
        return tuple(round(float(s), 6) for s in self.levels.numpy())


# ---------------------------------------------------------------------------------------------------------
# Tier specs


@dataclasses.dataclass(frozen=True)
class TierSpec:
    """One tier: ``kind`` (``sparsity`` | ``bytes`` | ``level``) and its value.

    sparsity: the sparsity of a uniform config, in [0, 1); bytes: a fraction of the dense dynamic-range int8
    model's bytes, > 0; level: an index into the supernet's level set, an int >= 0.
    """

    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in TIER_KINDS:
            raise ValueError(f"tier kind {self.kind!r} unknown; choose one of {TIER_KINDS}")
        v = self.value
        if self.kind == "sparsity" and not 0.0 <= v < 1.0:
            raise ValueError(f"tier sparsity must be in [0, 1), got {v}")
        if self.kind == "bytes" and not v > 0.0:
            raise ValueError(f"tier bytes (fraction of the dense int8 bytes) must be > 0, got {v}")
        if self.kind == "level" and (v < 0 or not float(v).is_integer()):
            raise ValueError(f"tier level must be an integer >= 0, got {v}")

    def __str__(self) -> str:
        return f"{self.kind}:{int(self.value) if self.kind == 'level' else self.value:g}"


def parse_tiers(items: Sequence[str], kinds: Sequence[str] = TIER_KINDS) -> dict[str, TierSpec]:
    """``["phone=sparsity:0.75", "watch=bytes:0.2"]`` -> ``{name: TierSpec}``, in order.

    Raises ValueError naming the item for a missing ``=`` or ``:``, an unknown or (for this caller) not
    accepted kind, a bad value, or a repeated name.
    """
    out: dict[str, TierSpec] = {}
    for item in items:
        name, eq, rest = item.partition("=")
        kind, colon, value = rest.partition(":")
        if not eq or not colon or not name:
            raise ValueError(f"tier {item!r}: expected name=kind:value with kind one of {tuple(kinds)}, "
                             "e.g. phone=sparsity:0.75, phone=bytes:0.35 (fraction of the dense int8 "
                             "bytes) or phone=level:3")
        if kind not in kinds:
            raise ValueError(f"tier {item!r}: kind {kind!r} is not accepted here; use one of {tuple(kinds)}")
        if name in out:
            raise ValueError(f"tier {item!r}: name {name!r} given twice")
        try:
            out[name] = TierSpec(kind, float(value))
        except ValueError as e:
            raise ValueError(f"tier {item!r}: {e}") from None
    return out


TIER_SAMPLERS = sampling.TIER_SAMPLERS  # the samplers that train ``sparsity.train_levels``
TRAIN_LEVELS_FLAG = "--config.sparsity.train_levels"


def with_tier_levels(config: ml_collections.ConfigDict, tiers: Mapping[str, TierSpec],
                     keep: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose supernet trains the tiers' sparsities as levels of their own.

    ``sparsity.levels`` gets every ``sparsity:S`` tier's S (the set sorted ascending, a value already there
    not repeated), so such a tier is a uniform level of the supernet, trained and evaluated as itself, not
    a per-layer mix of the levels around it. A ``level:K`` tier indexes the level set *after* the additions.
    ``sparsity.train_levels`` (the tiers to train every step for the ``tiers`` / ``tiers_random`` samplers)
    becomes the tiers' sparsities, sorted, when every tier is a ``sparsity:S`` or ``level:K`` tier (the
    latter's sparsity: level K of the extended set), unless ``keep`` (dotted config fields given explicitly:
    the command line's ``--config.*``, ``recipes.end_to_end.config_overrides``) names
    ``sparsity.train_levels``: then it is left as given. With a ``bytes:`` tier, or a ``level:K`` outside
    the set, it is left as it is (a bytes tier's config is only known after the search).
    Used by the end-to-end recipes (``recipes/end_to_end.run_recipe``) and ``benchmarks/omni_vs_pruned.py``
    for the omni run; ``config`` is not modified.

    With a tiers sampler (``TIER_SAMPLERS``) every tier must get its training, so this raises ValueError
    naming the tier (and ``--config.sparsity.train_levels``) when
    - a ``bytes:`` tier (or a ``level:K`` outside the set) is given and ``sparsity.train_levels`` is not
      in ``keep``: it has no level before the search, and the config's default ``train_levels`` would be
      trained in its place; give the sparsities to train for it with ``--config.sparsity.train_levels``
      (e.g. the uniform sparsity whose size is about the budget), or make it a ``sparsity:`` tier;
    - an explicit ``train_levels`` (in ``keep``) lacks the sparsity of a ``sparsity:`` / ``level:`` tier.
    With any sampler it raises ValueError (``SparsitySettings``) when ``sparsity.tier_weights`` does not fit
    the resulting ``train_levels`` (one weight per entry, in its order: ascending when made from the tiers).
    """
    sparsities = sorted({float(spec.value) for spec in tiers.values() if spec.kind == "sparsity"})
    c = copy.deepcopy(config)
    with c.unlocked():
        c.sparsity.levels = tuple(sorted({*(float(s) for s in c.sparsity.levels), *sparsities}))
        levels = c.sparsity.levels
        known = {t: float(spec.value) if spec.kind == "sparsity" else levels[int(spec.value)]
                 for t, spec in tiers.items()
                 if spec.kind == "sparsity" or (spec.kind == "level" and int(spec.value) < len(levels))}
        explicit = "sparsity.train_levels" in keep
        if not explicit and tiers and len(known) == len(tiers):
            c.sparsity.train_levels = tuple(sorted(set(known.values())))
    SparsitySettings.from_config(c.sparsity)  # sparsity.tier_weights against the final train_levels
    if c.sparsity.sampler not in TIER_SAMPLERS:
        return c
    unknown = [f"{t}={spec}" for t, spec in tiers.items() if t not in known]
    if unknown and not explicit:
        raise ValueError(f"tier {', '.join(unknown)} has no sparsity level before the search, so "
                         f"sparsity.sampler={c.sparsity.sampler} would not train it (it would train the "
                         f"config's train_levels {tuple(c.sparsity.train_levels)} instead): give the "
                         f"sparsities to train with {TRAIN_LEVELS_FLAG}=..., use a sparsity: tier, or "
                         "another sampler")
    trained = [float(s) for s in c.sparsity.train_levels]
    missing = [f"{t}={known[t]:g}" for t in tiers if t in known
               and not any(abs(known[t] - s) < 1e-9 for s in trained)]
    if missing:
        raise ValueError(f"{TRAIN_LEVELS_FLAG}={tuple(trained)} lacks the level of tier "
                         f"{', '.join(missing)}: sparsity.sampler={c.sparsity.sampler} trains only "
                         "train_levels; add it, or drop the flag (the tiers' sparsities are then used)")
    return c


def budget_metric(search_metric: str, quantization: str) -> str:
    """The size metric of tier budgets: ``search_metric``, or for "auto" the one of the export mode."""
    if search_metric != "auto":
        if search_metric not in size_lib.METRICS:
            raise ValueError(f"sparsity.search_metric {search_metric!r} unknown; choose 'auto' or one of "
                             f"{size_lib.METRICS}")
        return search_metric
    if quantization not in BUDGET_METRIC:
        raise ValueError(f"quantization {quantization!r} unknown; choose one of {sorted(BUDGET_METRIC)}")
    return BUDGET_METRIC[quantization]


def disk_bytes_metric(quantization: str, sparse: str = "auto") -> str:
    """The size-model metric (``size.METRICS``) equal to a file's bytes on disk in an export ``quantization``
    with sparse tensor encoding ``sparse`` (auto | never | always; auto encodes float32 files only,
    ``BUDGET_METRIC``'s note). Weight masks: a dense-encoded file is the dense size whatever the sparsity;
    structured (sliced) models: the ``*_bytes`` of the sliced model. Raises ValueError for an unknown
    ``quantization`` or ``sparse``."""
    if quantization not in DISK_BYTES_FORMAT:
        raise ValueError(f"quantization {quantization!r} unknown; choose one of {sorted(DISK_BYTES_FORMAT)}")
    if sparse not in ("auto", "never", "always"):
        raise ValueError(f"sparse {sparse!r} unknown; choose auto, never or always")
    fmt = DISK_BYTES_FORMAT[quantization]
    encoded = sparse == "always" or (sparse == "auto" and fmt == "float32")
    return f"{fmt}_sparse_bytes" if encoded else f"{fmt}_bytes"


# ---------------------------------------------------------------------------------------------------------
# The supernet


class Supernet:
    """Model + masks + schedule + sampler + size model of one experiment config.

    Args:
      config: an experiment config (``omni_tf.configs.experiment.get_config``).
      strategy: build the model (not the masks) under this strategy's scope (training).

    Attributes: ``mode``, ``settings`` (``SparsitySettings``), ``levels`` (the level set; ``()`` for dense),
    ``model`` (built), ``masks`` / ``schedule`` / ``sampler`` (None in mode dense), ``distill_weight``
    (0 unless mode omni), ``level_norms`` (``sparsity/level_norms.LevelNorms`` with
    ``sparsity.per_level_norm``, not in mode dense; else None).
    Raises ValueError for an unknown mode, sampler, norm, block or an invalid level set.
    """

    def __init__(self, config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy | None = None):
        self.mode = str(config.training.mode)
        self.seed = int(config.training.seed)
        self.settings = s = SparsitySettings.from_config(config.sparsity)
        self.levels = level_set(self.mode, s.levels, s.target_sparsity)
        self.model_config = config.model
        keras.utils.set_random_seed(self.seed)  # same initial weights in every process and on restart
        if strategy is not None:
            with strategy.scope():
                self.model = build_model(config.model)
                self.model.build()
        else:
            self.model = build_model(config.model)
            self.model.build()
        # Survival levels and the level record are plain local variables, outside the strategy scope:
        # MultiWorkerMirrored cannot broadcast int8 initial values; every worker computes the same rankings.
        self._record = _LevelRecord(self.levels)
        self.masks: SupernetMasks | None = None
        self.schedule: LevelSchedule | None = None
        self.sampler: sampling.Sampler | None = None
        self.distill_weight = s.distill_weight if self.mode == "omni" else 0.0
        self.level_norms: LevelNorms | None = None  # sparsity.per_level_norm (not in mode dense)
        if self.mode == "dense":
            return
        self.level_norms = self._make_level_norms(strategy) if s.per_level_norm else None
        self.masks = SupernetMasks(self.model, self.levels, s.block, s.norm, s.granularity,
                                   self.level_norms.selector_pairs() if self.level_norms else ())
        self.schedule = LevelSchedule(self.levels, s.begin_step, s.end_step, s.frequency, s.power,
                                      s.dense_warmup)
        n, k = self.masks.num_kernels, self.masks.num_levels
        if self.mode == "pruned":  # always the target level (after the dense warm-up)
            self.sampler = sampling.make_sampler("fixed", n, k, self.seed, target_level=1)
        else:
            self.sampler = sampling.make_sampler(s.sampler, n, k, self.seed, s.subnets_per_step,
                                                 random_kind=s.random_kind, levels=self.levels,
                                                 train_levels=s.train_levels, tier_weights=s.tier_weights)

    def _make_level_norms(self, strategy: tf.distribute.Strategy | None) -> LevelNorms:
        """Per-level gamma/beta of the model's LayerNorms (``sparsity/level_norms.py``), built where the
        model was. Raises ValueError for structured granularity."""
        if self.settings.granularity != "weights":
            raise ValueError("sparsity.per_level_norm needs sparsity.granularity=weights (structured tiers "
                             "slice the conv LayerNorm's channels; not supported)")
        if strategy is None:
            return LevelNorms(self.model, len(self.levels))
        with strategy.scope():
            return LevelNorms(self.model, len(self.levels))

    @property
    def kernel_names(self) -> tuple[str, ...]:
        """Entries of a tier config: prunable kernels, or unit groups (granularity structured)."""
        if self.masks is not None:
            return tuple(self.masks.names)
        return tuple(n for n, _ in self.model.prunable_kernels())

    # -- checkpoint --------------------------------------------------------------------------------------
    def checkpoint_objects(self) -> dict[str, Any]:
        """What a checkpoint holds of the supernet: model, survival levels (if any), the level set."""
        objs: dict[str, Any] = {"model": self.model, "level_set": self._record}
        if self.masks is not None:
            objs["masks"] = self.masks
        if self.level_norms is not None:
            objs["level_norms"] = self.level_norms
        return objs

    def restore(self, workdir: str, extra: Mapping[str, Any] | None = None, max_to_keep: int = 3,
                strategy: tf.distribute.Strategy | None = None, required: bool = True,
                read_extra: Mapping[str, Any] | None = None) -> tuple[str | None, CheckpointKeeper]:
        """Restores the latest checkpoint of ``<workdir>/ckpt`` into this supernet (and ``extra`` objects,
        e.g. the optimizer and counters of a training state; ``read_extra``: restore only these of them, e.g.
        from a checkpoint older than one of them).

        Returns ``(path or None, keeper)``; the keeper saves all objects (training). Discovery and reading go
        through ``training.checkpoint.CheckpointKeeper``. Without ``extra`` (evaluation, search, export) the
        checkpoint's training state (optimizer, counters) is skipped on purpose and without warnings; every
        variable of the model must still be in the checkpoint.
        Raises:
          FileNotFoundError: no checkpoint and ``required``.
          LevelSetMismatch: the checkpoint was trained with another level set (both sets named).
          ValueError: with ``sparsity.per_level_norm`` and ``extra`` (a training resume), a checkpoint
            written without the option; without the option, a checkpoint written with it.
        With ``sparsity.per_level_norm``, a checkpoint without per-level LayerNorm parameters (written without
        the option) restores the rest, and every level starts from the restored gamma/beta.
          ValueError: the checkpoint does not match the model (``CheckpointKeeper``).
        """
        objects = {**self.checkpoint_objects(), **(extra or {})}
        keeper = CheckpointKeeper(workdir, objects, max_to_keep, strategy)
        stored = _LevelRecord(())
        try:
            probe = CheckpointKeeper(workdir, {"level_set": stored}, 1, strategy)
            found = probe.restore_or_initialize(partial=True)
            has_record = True
        except ValueError as e:  # written before level sets were stored
            # str(e): a log record holding the exception would keep its frames (the restore) alive
            logging.warning("%s; assuming it was trained with the config's level set %s", str(e), self.levels)
            found, has_record = keeper.latest, False
        if found is None:
            if required:
                raise FileNotFoundError(f"no checkpoint in {keeper.read_directory}")
            return None, keeper
        if has_record and stored.value() != tuple(round(s, 6) for s in self.levels):
            raise LevelSetMismatch(
                f"checkpoint {found} was trained with level set {stored.value()} (mode dense if empty), "
                f"but the config gives {self.levels} (mode {self.mode}); use the training run's "
                "--config (sparsity.levels, training.mode, sparsity.target_sparsity)")
        # written without sparsity.per_level_norm: every level starts from the restored gamma/beta
        has_level_norms = any(name.startswith("level_norms/") for name, _ in tf.train.list_variables(found))
        shared_norms = self.level_norms is not None and not has_level_norms
        if has_level_norms and self.level_norms is None:  # its sparse levels would silently use level 0's
            raise ValueError(f"checkpoint {found} was trained with sparsity.per_level_norm=true, but the "
                             "config gives false: its sparse levels need their own LayerNorm parameters; use "
                             "the training run's --config (sparsity.per_level_norm)")
        if shared_norms and extra:
            raise ValueError(f"checkpoint {found} was written without sparsity.per_level_norm; a run "
                             "cannot resume with it turned on (its optimizer has no state for the per-level "
                             "parameters): use a new workdir (e.g. training.init_from) or drop the option")
        reader = keeper
        if not has_record or read_extra is not None or shared_norms:
            read = {**self.checkpoint_objects(), **((extra or {}) if read_extra is None else read_extra)}
            read = {k: v for k, v in read.items() if (has_record or k != "level_set")
                    and not (shared_norms and k == "level_norms")}
            reader = CheckpointKeeper(workdir, read, max_to_keep, strategy)
        path = reader.restore_or_initialize(partial=not extra)
        if shared_norms:
            self.level_norms.copy_from_shared()
            logging.warning("checkpoint %s has no per-level LayerNorm parameters (written without "
                            "sparsity.per_level_norm): every level starts from its gamma/beta", path)
        return path, keeper

    # -- sizes and tiers ---------------------------------------------------------------------------------
    def budget_metric(self, quantization: str) -> str:
        """The size metric of tier budgets for an export ``quantization`` (``sparsity.search_metric``)."""
        return budget_metric(self.settings.search_metric, quantization)

    def size_model(self) -> size_lib.SizeModel:
        """Exact counts from the survival levels (after ranking/restoring); analytic for mode dense."""
        other = size_lib.count_other_params(self.model)
        if self.masks is not None:
            return size_lib.SizeModel.from_masks(self.masks, other)
        return size_lib.SizeModel.from_model(self.model, (0.0,), self.settings.block)

    def _uniform_size(self, sparsity: float, metric: str) -> float:
        for k, level in enumerate(self.levels):
            if abs(level - sparsity) < 1e-9:  # a level of the set: its exact size
                sizes = self.size_model()
                return sizes.measure(sizes.uniform_config(k), metric)
        if self.masks is not None and self.masks.granularity == "structured":  # round(U (1 - s)) units kept
            analytic = StructuredSizeModel.from_masks(self.masks, levels=(0.0, float(sparsity)))
            return analytic.measure(analytic.uniform_config(1), metric)
        kernels = self.model.prunable_kernels()
        analytic = size_lib.SizeModel([n for n, _ in kernels], [tuple(v.shape) for _, v in kernels],
                                      size_lib.count_other_params(self.model), levels=(0.0, float(sparsity)),
                                      block=self.settings.block)
        return analytic.measure(analytic.uniform_config(1), metric)

    def budget(self, spec: TierSpec, metric: str, dense_file_bytes: float | None = None,
               overhead_bytes: float | None = None) -> float:
        """A tier's budget in ``metric`` units.

        sparsity: the size of a uniform config at that sparsity (exact for a level of the set, analytic
        otherwise); bytes: the fraction F of the dense int8 model's bytes (whatever ``metric``; raises
        ValueError unless ``metric`` is a bytes metric); level: the size of that uniform level.

        ``dense_file_bytes``: the measured size (bytes) of the dense model's dynamic-int8 TFLite file. A file
        holds the tensor bytes the size model counts plus an overhead c (flatbuffer graph, signatures,
        quantization parameters; 64-86 KB for the tiny model, a little larger for sliced models than for the
        dense one, docs/RESULTS.md section 3), so a bytes tier's file fits F x ``dense_file_bytes`` when its
        counted size is at most F x ``dense_file_bytes`` - c. ``overhead_bytes``: c (default: the dense
        file's, ``dense_file_bytes`` - the counted dense size). Without ``dense_file_bytes`` the budget is
        F x the counted dense size, and files can exceed F x the dense file by about c (1-5 %).
        """
        if spec.kind == "sparsity":
            return self._uniform_size(spec.value, metric)
        if spec.kind == "bytes":
            if not metric.endswith("_bytes"):
                raise ValueError(f"tier {spec}: a bytes budget needs a bytes size metric, not {metric!r} "
                                 "(set --config.sparsity.search_metric, e.g. int8_sparse_bytes)")
            counted = self.size_model().dense_int8_bytes()
            if dense_file_bytes is None:
                return float(spec.value) * counted
            overhead = float(dense_file_bytes) - counted if overhead_bytes is None else float(overhead_bytes)
            return float(spec.value) * float(dense_file_bytes) - overhead
        sizes = self.size_model()
        return sizes.measure(self.tier(spec), metric)

    def tier(self, spec: TierSpec | int | Mapping[str, int]) -> dict[str, int]:
        """A validated per-kernel level config ``{kernel_name: level index}`` (every kernel).

        ``spec``: a level index, a ``TierSpec`` of kind level or sparsity (a sparsity must be one of the
        level set), or a per-kernel config (every kernel named, levels in range).
        Raises ValueError naming the level set / the kernels at fault.
        """
        names, k = self.kernel_names, max(len(self.levels), 1)
        if isinstance(spec, Mapping):
            return lv.vector_to_config(lv.config_to_vector(spec, names, k), names)
        if isinstance(spec, TierSpec):
            if spec.kind == "bytes":
                raise ValueError(f"tier {spec}: a bytes budget is resolved by a search, not by a level; "
                                 "use sparsity: or level:, or the recipe's --budgets")
            index = lv.level_index(self.levels, spec.value) if spec.kind == "sparsity" else int(spec.value)
        elif isinstance(spec, int | np.integer):
            index = int(spec)
        else:
            raise TypeError(f"tier {spec!r}: give a level index, a TierSpec or a per-kernel config")
        if not 0 <= index < k:
            raise ValueError(f"tier level {index} outside the level set {self.levels} (mode {self.mode})")
        return {n: index for n in names}

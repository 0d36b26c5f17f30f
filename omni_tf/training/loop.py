"""Supernet training: ``train(config, workdir) -> metrics`` for modes dense / pruned / omni.

Phases: strategy -> state (model, Adam, masks, counters, progress clock; restored from ``<workdir>/ckpt``
when present) -> loop (per step: re-rank on the sparsity schedule, sample subnets keyed on (seed, step), one
``TrainStep``, advance the progress clock, log, summarise, checkpoint) -> final checkpoint + metrics.
Restarting the same command resumes exactly: weights, optimizer moments, survival levels, step, data
position (epoch, batches consumed) and the progress clock come from the checkpoint, subnet sampling is a
pure function of (seed, step), and the data source is deterministic per epoch, so the resumed epoch is
re-built and the consumed batches skipped.

Schedules run on the progress clock (``omni_tf.training.progress``): the learning rate, the sparsity ramp
and the dense warm-up read the *schedule step*, which is the step unless ``max_minutes`` binds first, then
runs ahead of it so that the rate has decayed and the masks are frozen and fine-tuned when the budget ends,
on a machine of any speed. ``max_minutes`` counts the training time of every invocation of the workdir.

Modes: ``dense`` (no masks), ``pruned`` (levels ``(0, target_sparsity)``, always the target level after the
dense warm-up: the individually pruned baseline), ``omni`` (the supernet; ``config.sparsity.sampler``).
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import ml_collections
import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from omni_tf import fileio
from omni_tf.losses.ctc import CtcHead
from omni_tf.losses.rnnt import rnnt_loss
from omni_tf.sparsity import sampling
from omni_tf.supernet import Supernet
from omni_tf.training import optim, pretrained, summaries
from omni_tf.training.checkpoint import CheckpointKeeper, TrainCounters
from omni_tf.training.progress import TrainingProgress
from omni_tf.training.sources import ManifestSource
from omni_tf.training.step import TrainStep

STRATEGIES = ("one_device", "mirrored", "multi_worker")


class DataSource(Protocol):
    """Deterministic batches per epoch: ``dataset(epoch, skip_batches)`` -> ``tf.data.Dataset`` of global
    batches (dicts: features, feature_lengths, tokens, token_lengths, ids) of epoch ``epoch`` from batch
    ``skip_batches`` on, identical on every call and every worker."""

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset: ...


# -- phase 1: strategy --------------------------------------------------------------------------------------
def make_strategy(training_config: ml_collections.ConfigDict) -> tf.distribute.Strategy:
    """one_device (``device`` or GPU:0 else CPU:0), mirrored (all local GPUs, else CPU), or multi_worker
    (MultiWorkerMirroredStrategy from ``TF_CONFIG``)."""
    kind = training_config.strategy
    if kind == "one_device":
        device = training_config.device or ("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")
        return tf.distribute.OneDeviceStrategy(device)
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("training.strategy=multi_worker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"training.strategy must be one of {STRATEGIES}, got {kind!r}")


# -- phase 2: state -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """The ``config.training`` fields the loop itself reads (the optimizer's are read by ``optim``, the
    strategy's by ``make_strategy``, mode and seed by ``Supernet``)."""

    max_steps: int
    max_minutes: float
    clip_norm: float
    grad_accum_steps: int
    mixed_precision: bool
    checkpoint_every: int
    keep_checkpoints: int
    summary_every: int
    log_every: int
    max_consecutive_skips: int
    ctc_weight: float
    init_from: str

    @classmethod
    def from_config(cls, t: ml_collections.ConfigDict) -> LoopSettings:
        return cls(max_steps=int(t.max_steps), max_minutes=float(t.max_minutes), clip_norm=float(t.clip_norm),
                   grad_accum_steps=max(1, int(t.grad_accum_steps)), mixed_precision=bool(t.mixed_precision),
                   checkpoint_every=max(1, int(t.checkpoint_every)), keep_checkpoints=int(t.keep_checkpoints),
                   summary_every=max(1, int(t.summary_every)), log_every=max(1, int(t.log_every)),
                   max_consecutive_skips=int(t.max_consecutive_skips), ctc_weight=float(t.ctc_weight),
                   init_from=str(t.init_from))


class TrainState:
    """Everything a checkpoint holds: the ``Supernet`` (model, survival levels, level set) plus optimizer,
    counters, progress clock and the training-only CTC head; model, head and optimizer are built under the
    strategy scope."""

    def __init__(self, config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy):
        self.settings = s = LoopSettings.from_config(config.training)
        self.mixed = s.mixed_precision and bool(tf.config.list_logical_devices("GPU"))
        if s.mixed_precision and not self.mixed:
            logging.warning("training.mixed_precision ignored: no GPU (float16 is off on CPU)")
        keras.mixed_precision.set_global_policy("mixed_float16" if self.mixed else "float32")
        self.supernet = Supernet(config, strategy)
        self.model, self.masks = self.supernet.model, self.supernet.masks
        self.schedule, self.sampler = self.supernet.schedule, self.supernet.sampler
        self.ctc_weight = s.ctc_weight
        norms = self.supernet.level_norms  # sparsity.per_level_norm: trained after the model and the head
        self.level_norm_variables = norms.variables_to_train() if norms is not None else []
        with strategy.scope():
            # Training-only auxiliary CTC head (omni_tf/losses/ctc.py), built after the model so the model's
            # seeded initial weights are the same with and without it.
            self.ctc_head = (CtcHead(config.model.d_model, config.model.vocab_size) if self.ctc_weight
                             else None)
            head_vars = []
            if self.ctc_head is not None:
                self.ctc_head.build()
                head_vars = self.ctc_head.trainable_variables
            self.progress = TrainingProgress(s.max_steps, s.max_minutes)
            self.optimizer = optim.make_optimizer(config.training, self.progress, loss_scale=self.mixed)
            self.optimizer.build(self.model.trainable_variables + head_vars + self.level_norm_variables)
            self.counters = TrainCounters()

    def extra_objects(self) -> dict[str, Any]:
        """The checkpointed objects beyond the supernet's. A LossScaleOptimizer saves like its Adam plus a
        "loss_scale" child (current scale, good steps)."""
        objs = {"optimizer": self.optimizer, "counters": self.counters, "progress": self.progress}
        if self.ctc_head is not None:
            objs["ctc_head"] = self.ctc_head
        return objs

    def trackables(self) -> dict[str, Any]:
        return {**self.supernet.checkpoint_objects(), **self.extra_objects()}


def sample_levels(sampler: sampling.Sampler | None, step: int, warmup: bool, distill: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(level matrix ``[S, N]`` int32, loss weights ``[S]`` float32) of the subnets trained at ``step``; a
    pure function of (config, step), so a resumed run replays both.

    Dense mode: one ignored row. During the dense warm-up: only the dense subnet. With distillation the
    dense subnet (the teacher) is prepended unless row 0 already is dense. The weights are the sampler's
    ``row_weights`` (``sparsity.tier_weights`` for the tiers samplers, else all 1); a prepended teacher row
    and the warm-up's dense row weigh 1.
    """
    if sampler is None:
        return np.zeros([1, 1], np.int32), np.ones([1], np.float32)
    if warmup:
        return np.zeros([1, sampler.num_kernels], np.int32), np.ones([1], np.float32)
    rows = sampler(step).numpy().astype(np.int32)
    weights = sampler.row_weights(step).numpy().astype(np.float32)
    if distill and (rows[0] != 0).any():
        rows = np.concatenate([np.zeros([1, sampler.num_kernels], np.int32), rows])
        weights = np.concatenate([np.ones([1], np.float32), weights])
    return rows, weights


# -- phase 3: loop ------------------------------------------------------------------------------------------
class _Batches:
    """Iterates distributed global batches across epochs from a saved position (epoch, batches consumed)."""

    def __init__(self, source: DataSource, strategy: tf.distribute.Strategy, counters: TrainCounters):
        self.source, self.strategy, self.counters = source, strategy, counters
        self._it = None
        self.element_spec = None

    def _open(self) -> None:
        epoch, skip = int(self.counters.epoch.numpy()), int(self.counters.batches_in_epoch.numpy())
        ds = self.source.dataset(epoch, skip)
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dist = self.strategy.experimental_distribute_dataset(ds.with_options(opts))
        self.element_spec = dist.element_spec
        self._it = iter(dist)

    def next(self) -> Any:
        for _ in range(2):
            if self._it is None:
                self._open()
            try:
                batch = next(self._it)
                self.counters.batches_in_epoch.assign_add(1)
                return batch
            except StopIteration:
                self._it = None
                self.counters.epoch.assign_add(1)
                self.counters.batches_in_epoch.assign(0)
        raise ValueError("data source yielded an empty epoch")


class NonFiniteError(RuntimeError):
    """``training.max_consecutive_skips`` consecutive updates were skipped for NaN/Inf loss or gradients."""


def _log_nonfinite(out: dict[str, Any], step: int) -> list[str]:
    """Warns naming the utterances with a non-finite loss in this step's batches (this worker's); returns
    their ids."""
    bad = []
    for losses, ids in zip(out["per_utt_loss"], out["ids"], strict=True):
        for l_rep, id_rep in zip(losses, ids, strict=True):
            mask = ~np.isfinite(l_rep.numpy())
            bad += [i.decode() if isinstance(i, bytes) else str(i) for i in id_rep.numpy()[mask]]
    logging.warning("step %d: non-finite loss/gradients, update skipped; utterances: %s", step,
                    ", ".join(bad) if bad else "(none non-finite on this worker: gradient overflow)")
    return bad


CTC_INFEASIBLE_WARN = 0.1  # warn once when more than this fraction of utterances cannot be CTC-aligned


def _warn_ctc_infeasible(infeasible: int, utts: int, subsampling_factor: int) -> bool:
    """Logs a warning (and returns True) when more than ``CTC_INFEASIBLE_WARN`` of the ``utts`` utterances
    seen so far had fewer encoder frames than their labels need, i.e. the auxiliary CTC loss is 0 for them and
    ``training.ctc_weight`` buys little but its cost; else returns False. The cure is denser encoder frames
    (a lower ``model.subsampling_factor``) or fewer, larger label pieces (a bigger vocabulary)."""
    fraction = infeasible / max(utts, 1)
    if fraction <= CTC_INFEASIBLE_WARN:
        return False
    logging.warning("auxiliary CTC: %d of %d utterances so far (%.0f %%) have fewer encoder frames (one per "
                    "%d feature frames) than their labels need, so their CTC loss is 0; lower "
                    "model.subsampling_factor, use larger pieces, or set training.ctc_weight=0",
                    infeasible, utts, 100.0 * fraction, subsampling_factor)
    return True


def _stop_after_skips(max_skips: int, skipped: list[tuple[int, list[str]]]) -> None:
    """Raises ``NonFiniteError`` when the last ``max_skips`` (> 0) steps were all skipped; ``skipped`` holds
    (step, utterance ids) of the current run of consecutive skips."""
    if max_skips <= 0 or len(skipped) < max_skips:
        return
    ids = sorted({i for _, bad in skipped for i in bad})
    named = ", ".join(ids[:20]) + (f" ... ({len(ids)} in all)" if len(ids) > 20 else "") if ids else \
        "none non-finite on this worker (gradient overflow or divergence)"
    raise NonFiniteError(
        f"{len(skipped)} consecutive updates skipped (steps {skipped[0][0]}-{skipped[-1][0]}) for a "
        f"non-finite loss or gradient (training.max_consecutive_skips={max_skips}); utterances with a "
        f"non-finite loss: {named}. Check those inputs (prepare reports non_finite audio), cmvn.json and "
        "the learning rate.")


def run(config: ml_collections.ConfigDict, workdir: str, source: DataSource,
        on_step: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Trains until ``max_steps`` or ``max_minutes``; see ``train``."""
    strategy = make_strategy(config.training)
    state = TrainState(config, strategy)
    t = state.settings
    if t.init_from and isinstance(source, ManifestSource):  # labels/features the shipped weights know
        pretrained.check_data_files(pretrained.bundle_dir(t.init_from), source.spm_path, source.cmvn_path)
    restored, keeper = _restore(workdir, state, strategy)
    if restored is None and t.init_from:  # a fresh run from shipped dense weights; resume wins
        n = pretrained.load_weights(state.model, pretrained.bundle_dir(t.init_from))
        if state.supernet.level_norms is not None:  # a bundle has one gamma/beta per norm: every level's
            state.supernet.level_norms.copy_from_shared()
        logging.info("initialised %d variables from the shipped model %s", n, t.init_from)
    chief = keeper.chief
    counters, masks, clock = state.counters, state.masks, state.progress
    if restored:
        logging.info("resumed from %s at %s", restored, counters.as_dict())
    sp = state.supernet.settings
    step_fn = TrainStep(state.model, state.optimizer, strategy, rnnt_loss, counters, masks,
                        state.supernet.distill_weight, t.clip_norm, seed=state.supernet.seed,
                        ctc_head=state.ctc_head, ctc_weight=state.ctc_weight, distill_mode=sp.distill_mode,
                        distill_norm=sp.distill_norm, extra_variables=state.level_norm_variables)
    writer = summaries.SummaryWriter(workdir, enabled=chief)
    batches = _Batches(source, strategy, counters)
    # meter: the recent rate (reset at every log line and after this invocation's first step, whose time is
    # tracing plus the one-off feature-cache build); total_meter: every step, for the final metrics.
    meter, total_meter = summaries.RateMeter(), summaries.RateMeter()
    start, out = time.monotonic(), None
    seconds_before = float(clock.seconds.numpy())  # trained by earlier invocations of this workdir

    def trained_seconds() -> float:
        return _agree(strategy, seconds_before + time.monotonic() - start)

    sampler = state.sampler
    distill = state.supernet.distill_weight > 0
    level_norms = state.supernet.level_norms  # sparsity.per_level_norm
    step = last_saved = first_step = int(counters.step.numpy())
    skipped: list[tuple[int, list[str]]] = []  # the current run of consecutive skipped updates
    ctc_infeasible = 0  # utterances (this run) whose CTC loss was masked: too few encoder frames
    ctc_utts, ctc_warned = 0, False
    clock.update(step, trained_seconds())
    while (stopped_by := clock.done(step)) is None:
        schedule_step = int(clock.schedule_step.numpy())
        warmup = False
        if state.schedule is not None:
            targets = state.schedule.ranking_targets(schedule_step).numpy()
            if not np.array_equal(targets, masks.current_sparsities.numpy()):
                masks.update_rankings(targets)
            warmup = bool(state.schedule.in_warmup(schedule_step))
        levels, weights = sample_levels(sampler, step, warmup, distill)
        if level_norms is not None and not warmup and level_norms.start_levels():
            logging.info("step %d: per-level LayerNorms start from the dense gamma/beta", step)
        micro = [batches.next() for _ in range(t.grad_accum_steps)]
        step_fn.element_spec = step_fn.element_spec or batches.element_spec
        out = step_fn(micro, levels, weights)
        step += 1
        clock.update(step, trained_seconds())
        applied = bool(out["applied"])
        skipped = [] if applied else [*skipped, (step, _log_nonfinite(out, step))]
        _stop_after_skips(t.max_consecutive_skips, skipped)
        utts, frames = int(out["utts"]), int(out["frames"])
        ctc_infeasible += int(out["ctc_infeasible"])
        ctc_utts += int(out["utts"])
        if state.ctc_head is not None and not ctc_warned and step % t.log_every == 0:
            ctc_warned = _warn_ctc_infeasible(ctc_infeasible, ctc_utts, config.model.subsampling_factor)
        meter.add(1, utts, frames)
        total_meter.add(1, utts, frames)
        if step == first_step + 1:
            meter.reset()
        if on_step is not None:
            on_step(step, out)
        if chief and step % t.summary_every == 0:
            _write_summaries(writer, step, out, levels, state, meter.rates())
        if chief and step % t.log_every == 0:
            r = meter.rates()
            logging.info(summaries.progress_line(
                step, t.max_steps, float(out["loss"]), _current_lr(state), r["steps_per_s"], r["utts_per_s"],
                float(clock.seconds.numpy()), budget_s=60.0 * t.max_minutes, progress=clock.value))
            meter.reset()
        if step % t.checkpoint_every == 0 and step < t.max_steps:
            keeper.save(step)
            last_saved = step
    finalized = _finalize_rankings(state, step)
    path = keeper.save(step) if step != last_saved or restored is None or finalized else None
    writer.flush()
    rates = total_meter.rates()
    metrics = {"step": step, "stopped_by": stopped_by, "elapsed_s": time.monotonic() - start,
               "trained_s": float(clock.seconds.numpy()), "schedule_step": int(clock.schedule_step.numpy()),
               "skipped_nonfinite": int(counters.skipped_nonfinite.numpy()),
               "optimizer_iterations": int(state.optimizer.iterations.numpy()),
               "loss": float(out["loss"]) if out is not None else float("nan"),
               "checkpoint": path or keeper.latest, "restored_from": restored, **rates}
    if state.ctc_head is not None:
        metrics["ctc_infeasible_utterances"] = ctc_infeasible
        metrics["ctc_infeasible_fraction"] = ctc_infeasible / max(ctc_utts, 1)
        if ctc_infeasible:
            logging.warning("%d utterance passes had fewer encoder frames than CTC needs; their CTC loss "
                            "was 0 (RNN-T loss unaffected)", ctc_infeasible)
    if chief:
        fileio.write_json(os.path.join(workdir, "train_metrics.json"), metrics)
    keras.mixed_precision.set_global_policy("float32")
    return metrics


def _restore(workdir: str, state: TrainState, strategy: tf.distribute.Strategy
             ) -> tuple[str | None, CheckpointKeeper]:
    """``Supernet.restore`` with the training objects (level set checked); one written before the progress
    clock existed restores without it, and the clock starts at the restored step (its training time is
    unknown: counted as 0). Returns (path or None, the keeper that saves every object)."""
    extra = state.extra_objects()
    path = CheckpointKeeper(workdir, {}, 1, strategy).latest
    legacy = path is not None and not any(name.startswith("progress/")
                                          for name, _ in tf.train.list_variables(path))
    read = {k: v for k, v in extra.items() if k != "progress"} if legacy else None
    restored, keeper = state.supernet.restore(workdir, extra, state.settings.keep_checkpoints, strategy,
                                              required=False, read_extra=read)
    if legacy:
        state.progress.schedule_step.assign(state.counters.step)
        logging.warning("checkpoint %s has no progress clock (written by an older version): schedules "
                        "continue from step %d, the time budget from 0", restored,
                        int(state.counters.step.numpy()))
    return restored, keeper


def _agree(strategy: tf.distribute.Strategy, seconds: float) -> float:
    """The same training time on every worker (their mean), so that all take the same schedule step and stop
    at the same step; the local time with a single worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return seconds
    per_replica = strategy.run(lambda: tf.constant(seconds, tf.float32))
    return float(strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None))


def _current_lr(state: TrainState) -> float:
    return float(tf.convert_to_tensor(state.optimizer.learning_rate))


def _finalize_rankings(state: TrainState, step: int) -> bool:
    """Ranks at the final targets when training stopped before the schedule ranked at them.

    Without it a run cut short (``max_minutes``, or ``max_steps <= end_step``) would leave survival levels at
    ramping targets, and every level's mask would be denser than its name says.
    """
    schedule = state.schedule
    if schedule is None:
        return False
    final = schedule.sparsities(schedule.end_step)
    if np.allclose(state.masks.current_sparsities.numpy(), np.asarray(final), atol=1e-6):
        return False
    logging.warning("stopped at step %d before the sparsity schedule ranked at its final targets (end_step "
                    "%d): ranking at them now (the sparse levels were not fine-tuned at them)", step,
                    schedule.end_step)
    state.masks.update_rankings(final)
    return True


def _write_summaries(writer: summaries.SummaryWriter, step: int, out: dict, levels: np.ndarray,
                     state: TrainState, rates: dict[str, float]) -> None:
    values = {"loss/step": float(out["loss"]), "lr": _current_lr(state),
              "grad_norm": float(out["grad_norm"]), **{f"rate/{k}": v for k, v in rates.items()}}
    for row, loss in zip(levels, out["subnet_loss"].numpy(), strict=True):
        tag = f"level_{int(row[0])}" if (row == row[0]).all() else "per_layer"
        values[f"loss/{tag}"] = float(loss)
    if state.masks is not None:
        values.update(summaries.kernel_sparsity_scalars(state.masks.sparsity_report()))
    values["skipped_nonfinite"] = float(state.counters.skipped_nonfinite.numpy())
    if state.ctc_head is not None:
        values["ctc_infeasible"] = float(out["ctc_infeasible"])
    writer.scalars(step, values)


def train(config: ml_collections.ConfigDict, workdir: str,
          source: DataSource | None = None) -> dict[str, Any]:
    """Trains (or resumes) in ``workdir``; returns final metrics (also written to train_metrics.json).

    ``source`` defaults to the train manifest named in ``config.paths`` (``ManifestSource``). With
    ``training.init_from`` and a ``ManifestSource``, its SentencePiece model and CMVN must be the bundle's
    (``pretrained.check_data_files``: ValueError naming both files otherwise, before any step, fresh or
    resumed run).
    """
    os.makedirs(workdir, exist_ok=True)
    return run(config, workdir, source if source is not None else ManifestSource(config))

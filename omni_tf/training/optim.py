"""Optimizer pieces: learning-rate schedules on the training progress, Adam, loss scaling for float16.

Every schedule is a Keras ``LearningRateSchedule`` of one argument, the 1-based index of the update being
made on the *schedule step* of ``omni_tf.training.progress`` (equal to the step unless a ``max_minutes``
budget binds, then ahead of it so that the decay ends with the budget). ``ProgressSchedule`` feeds the
optimizer from the checkpointed ``TrainingProgress`` instead of ``optimizer.iterations``, so the rate is a
pure function of the progress and a restored checkpoint resumes at the same rate.

``training.decay``:
- ``cosine``: tf_keras ``CosineDecay`` with its linear warm-up (0 -> ``learning_rate`` over
  ``warmup_steps``), then a half cosine down to ``learning_rate * min_lr_ratio`` at ``max_steps``.
- ``eden``: icefall's Eden schedule (``Eden`` below), which needs no step horizon.
- ``constant``: the warm-up, then ``learning_rate``.

Loss scaling for mixed float16 is tf_keras' ``LossScaleOptimizer`` (dynamic scale: halved on non-finite
gradients, doubled after 2000 finite steps). Gradient clipping is done by the train step (after the
cross-replica sum and the finite check), so the optimizer is built without ``clipnorm``.
"""
from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from omni_tf.training.progress import TrainingProgress

DECAYS = ("cosine", "eden", "constant")


class Eden(keras.optimizers.schedules.LearningRateSchedule):
    """Eden learning rate (icefall, ``egs/librispeech/ASR/zipformer/optim.py``, D. Povey 2022).

        lr(s) = peak * ((s^2 + S^2) / S^2)^-0.25 * ((p^2 + P^2) / P^2)^-0.25 * min(s / warmup_steps, 1)

    ``s`` is the 1-based update index (schedule step), ``S = lr_steps`` the step count after which the rate
    falls noticeably; the decay is a power law in the step and needs no horizon. icefall's second factor runs
    on epochs and its documentation allows any measure of the data seen instead, set to a fraction of the
    run; here it runs on the training progress ``p = s / max_steps`` with ``P = lr_progress`` (0 turns the
    factor off, leaving the step term alone). The warm-up is linear from 0, like the cosine schedule's
    (icefall's starts at half the rate).

    Raises ValueError for a non-positive ``peak_lr``, ``lr_steps`` or ``max_steps``, or negative
    ``warmup_steps`` / ``lr_progress``.
    """

    def __init__(self, peak_lr: float, lr_steps: float, warmup_steps: int, max_steps: int,
                 lr_progress: float = 0.0):
        super().__init__()
        if peak_lr <= 0 or lr_steps <= 0 or max_steps < 1 or warmup_steps < 0 or lr_progress < 0:
            raise ValueError(f"bad Eden schedule: peak_lr={peak_lr} lr_steps={lr_steps} "
                             f"warmup_steps={warmup_steps} max_steps={max_steps} lr_progress={lr_progress}")
        self.peak_lr, self.lr_steps, self.warmup_steps = float(peak_lr), float(lr_steps), int(warmup_steps)
        self.max_steps, self.lr_progress = int(max_steps), float(lr_progress)

    def __call__(self, step):
        s = tf.cast(step, tf.float32)
        lr = self.peak_lr * ((s**2 + self.lr_steps**2) / self.lr_steps**2) ** -0.25
        if self.lr_progress > 0:
            p, big_p = s / self.max_steps, self.lr_progress
            lr *= ((p**2 + big_p**2) / big_p**2) ** -0.25
        if self.warmup_steps > 0:
            lr *= tf.minimum(s / self.warmup_steps, 1.0)
        return lr

    def get_config(self) -> dict:
        return {"peak_lr": self.peak_lr, "lr_steps": self.lr_steps, "warmup_steps": self.warmup_steps,
                "max_steps": self.max_steps, "lr_progress": self.lr_progress}


class ProgressSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The optimizer's rate: ``inner(schedule_step + 1)`` read from a ``TrainingProgress``.

    The optimizer's own ``iterations`` argument is ignored (skipped updates and time budgets do not move
    it the same way); the inner schedule sees the 1-based index of the update being made, so the first
    update has a nonzero warm-up rate.
    """

    def __init__(self, inner: keras.optimizers.schedules.LearningRateSchedule, progress: TrainingProgress):
        super().__init__()
        self.inner, self.progress = inner, progress

    def __call__(self, step):
        del step  # the progress, not the optimizer's iteration count, drives the schedule
        return self.inner(tf.cast(self.progress.schedule_step, tf.float32) + 1.0)

    def get_config(self) -> dict:
        return {"inner": keras.optimizers.schedules.serialize(self.inner)}


def make_schedule(training_config: Mapping) -> keras.optimizers.schedules.LearningRateSchedule:
    """The step -> rate schedule named by ``training.decay`` (see module docstring).

    Raises ValueError for an unknown decay or a bad rate / step count.
    """
    t = training_config
    peak, warmup, total = float(t["learning_rate"]), int(t["warmup_steps"]), int(t["max_steps"])
    if t["decay"] not in DECAYS:
        raise ValueError(f"training.decay must be one of {DECAYS}, got {t['decay']!r}")
    if peak <= 0 or warmup < 0 or total < 1 or not 0 <= t["min_lr_ratio"] <= 1:
        raise ValueError(f"bad schedule: learning_rate={peak} warmup_steps={warmup} max_steps={total} "
                         f"min_lr_ratio={t['min_lr_ratio']}")
    eden_steps, eden_progress = t["eden_steps"], t["eden_progress"]  # read for every decay (coverage)
    if t["decay"] == "eden":
        return Eden(peak, eden_steps, warmup, total, eden_progress)
    decay_steps = max(total - warmup, 1) if t["decay"] == "cosine" else 1
    alpha = float(t["min_lr_ratio"]) if t["decay"] == "cosine" else 1.0  # constant: floor = peak
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps, alpha=alpha, warmup_target=peak,
                                                  warmup_steps=warmup)


def make_optimizer(training_config: Mapping, progress: TrainingProgress,
                   loss_scale: bool = False) -> keras.optimizers.Optimizer:
    """Adam on ``ProgressSchedule(make_schedule(...), progress)``; decoupled weight decay when
    ``weight_decay > 0``; wrapped in a dynamic ``keras.mixed_precision.LossScaleOptimizer`` when
    ``loss_scale`` (mixed float16)."""
    wd = float(training_config["weight_decay"])
    adam = keras.optimizers.Adam(
        learning_rate=ProgressSchedule(make_schedule(training_config), progress), beta_1=0.9, beta_2=0.98,
        epsilon=float(training_config["adam_epsilon"]), weight_decay=wd if wd > 0 else None)
    return keras.mixed_precision.LossScaleOptimizer(adam) if loss_scale else adam


def inner_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The Adam inside a ``LossScaleOptimizer`` (the optimizer itself otherwise)."""
    return getattr(optimizer, "inner_optimizer", optimizer)

"""Optimizer pieces: warm-up + decay learning-rate schedule, Adam, dynamic loss scale for mixed precision.

Gradient clipping is done by the train step (after the cross-replica sum and the finite check), so the
optimizer here is built without ``clipnorm``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

DECAYS = ("cosine", "noam", "constant")


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak_lr`` over ``warmup_steps``, then cosine, noam (1/sqrt) or constant decay.

    cosine: from peak to ``peak_lr * min_lr_ratio`` at ``total_steps``; noam: ``peak * sqrt(warmup / step)``
    floored at ``peak_lr * min_lr_ratio``. ``step`` counts applied updates from 0.
    """

    def __init__(self, peak_lr: float, warmup_steps: int, total_steps: int, decay: str = "cosine",
                 min_lr_ratio: float = 0.05):
        super().__init__()
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        if peak_lr <= 0 or warmup_steps < 0 or total_steps < 1 or not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"bad schedule: peak_lr={peak_lr} warmup_steps={warmup_steps} "
                             f"total_steps={total_steps} min_lr_ratio={min_lr_ratio}")
        self.peak_lr, self.warmup_steps = float(peak_lr), int(warmup_steps)
        self.total_steps = int(total_steps)
        self.decay, self.min_lr_ratio = decay, float(min_lr_ratio)

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + 1.0  # the first update uses a nonzero rate
        peak, floor = self.peak_lr, self.peak_lr * self.min_lr_ratio
        warm = float(max(self.warmup_steps, 1))
        warmup_lr = peak * tf.minimum(step / warm, 1.0)
        if self.decay == "constant":
            decayed = tf.constant(peak)
        elif self.decay == "noam":
            decayed = tf.maximum(peak * tf.sqrt(warm / tf.maximum(step, warm)), floor)
        else:
            span = float(max(self.total_steps - self.warmup_steps, 1))
            frac = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            decayed = floor + 0.5 * (peak - floor) * (1.0 + tf.cos(math.pi * frac))
        return tf.where(step <= self.warmup_steps, warmup_lr, decayed)

    def get_config(self) -> dict:
        return {"peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "decay": self.decay, "min_lr_ratio": self.min_lr_ratio}


def make_schedule(training_config: Mapping) -> WarmupDecay:
    t = training_config
    return WarmupDecay(t["learning_rate"], t["warmup_steps"], t["max_steps"], t["decay"], t["min_lr_ratio"])


def make_optimizer(training_config: Mapping) -> keras.optimizers.Adam:
    """Adam on the warm-up schedule; decoupled weight decay when ``weight_decay > 0``."""
    wd = float(training_config["weight_decay"])
    return keras.optimizers.Adam(
        learning_rate=make_schedule(training_config), beta_1=0.9, beta_2=0.98,
        epsilon=float(training_config.get("adam_epsilon", 1e-9)),
        weight_decay=wd if wd > 0 else None)


class DynamicLossScale(tf.Module):
    """Loss scale for float16: halves on non-finite gradients, doubles after ``growth_interval`` good steps.

    Variables are created in the caller's strategy scope and checkpointed with the optimizer.
    """

    def __init__(self, initial: float = 2.0**15, growth_interval: int = 2000, name: str = "loss_scale"):
        super().__init__(name=name)
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.scale = tf.Variable(initial, trainable=False, dtype=tf.float32, aggregation=agg)
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, aggregation=agg)
        self.growth_interval = growth_interval

    def update(self, finite: tf.Tensor) -> None:
        """Cross-replica update after a step whose gradients were (not) all finite."""
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_interval)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale * 0.5, 1.0)))
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                                        self.good_steps + 1, tf.zeros_like(self.good_steps)))

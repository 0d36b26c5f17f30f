"""LevelSchedule: the ramp of every level's current target and the re-ranking cadence.

Each level ``s_k`` of the set ``S`` gets its own tfmot ``PolynomialDecay`` (Zhu & Gupta 2017) from 0 to
``s_k`` between ``begin_step`` and ``end_step``:

    p(t)     = clip((t - begin_step) / (end_step - begin_step), 0, 1)
    s_k(t)   = s_k * (1 - (1 - p(t)) ** power)

so all levels ramp by the same factor and stay ordered. Rankings are recomputed when
``begin_step <= t <= end_step`` and ``(t - begin_step) % frequency == 0`` (tfmot's rule), and also at
``t == end_step`` even when ``frequency`` does not divide the window, so the frozen ranking always uses the
final targets; after ``end_step`` they stay frozen. With ``dense_warmup`` the trainer trains only the dense
model before ``begin_step`` (every subnet is dense then anyway: all current targets are 0).

The trainer drives the schedule with the *schedule step* of ``omni_tf.training.progress`` (the step, or ahead
of it when a time budget binds), which may advance by more than one per train step; it therefore asks for
``ranking_targets(t)`` (the targets of the last ranking point at or before ``t``) and re-ranks when they
differ from the masks' current targets, so no ranking point is skipped for good and ``end_step`` is never
missed.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
from tensorflow_model_optimization.sparsity.keras import PolynomialDecay

from omni_tf.sparsity import levels as lv


class LevelSchedule:
    """Per-level polynomial ramp + update cadence. ``__call__(step) -> (update_now, sparsities [K])``.

    Args:
      levels: the final sparsity set ``S`` (validated).
      begin_step: first step of the ramp (and of the re-rankings), >= 0.
      end_step: step at which the targets reach ``S`` and the rankings freeze, > begin_step.
      frequency: re-rank every ``frequency`` steps within the window, > 0.
      power: exponent of the polynomial (3 = Zhu & Gupta cubic), > 0.
      dense_warmup: train only the dense model before ``begin_step``.
    """

    def __init__(self, levels: Sequence[float] = lv.DEFAULT_LEVELS, begin_step: int = 0, end_step: int = 1000,
                 frequency: int = 100, power: float = 3, dense_warmup: bool = True):
        self.levels = lv.validate_levels(levels)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)
        self.power = float(power)
        self.dense_warmup = bool(dense_warmup)
        if self.begin_step < 0:
            raise ValueError(f"LevelSchedule: begin_step must be >= 0, got {begin_step}")
        if self.end_step <= self.begin_step:
            raise ValueError(f"LevelSchedule: end_step ({end_step}) must be > begin_step ({begin_step})")
        if self.frequency <= 0:
            raise ValueError(f"LevelSchedule: frequency must be > 0, got {frequency}")
        if self.power <= 0:
            raise ValueError(f"LevelSchedule: power must be > 0, got {power}")
        self._decays = [
            PolynomialDecay(initial_sparsity=0.0, final_sparsity=s, begin_step=self.begin_step,
                            end_step=self.end_step, power=self.power, frequency=self.frequency)
            for s in self.levels
        ]

    def sparsities(self, step: int | tf.Tensor) -> tf.Tensor:
        """Current targets float32 ``[K]`` at ``step`` (0 before ``begin_step``, ``S`` from ``end_step``)."""
        step = tf.cast(step, tf.int64)
        return tf.stack([tf.cast(d(step)[1], tf.float32) for d in self._decays])

    def should_update(self, step: int | tf.Tensor) -> tf.Tensor:
        """Bool scalar: re-rank at ``step`` (tfmot cadence within the window, plus ``end_step``)."""
        step = tf.cast(step, tf.int64)
        on_grid = self._decays[0](step)[0]
        return tf.logical_or(on_grid, tf.equal(step, self.end_step))

    def __call__(self, step: int | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(update_now bool [], current sparsities float32 [K])`` - tfmot's ``(should_prune, sparsity)``."""
        return self.should_update(step), self.sparsities(step)

    def ranking_step(self, step: int) -> int:
        """The last ranking point ``<= step``: ``begin_step + k * frequency`` inside the window,
        ``end_step`` from it on, and -1 before ``begin_step`` (no ranking yet)."""
        step = int(step)
        if step < self.begin_step:
            return -1
        if step >= self.end_step:
            return self.end_step
        return self.begin_step + (step - self.begin_step) // self.frequency * self.frequency

    def ranking_targets(self, step: int) -> tf.Tensor:
        """float32 ``[K]``: the targets the rankings should hold at ``step`` (``sparsities`` at
        ``ranking_step(step)``; zeros before ``begin_step``, the final set ``S`` from ``end_step``)."""
        return self.sparsities(max(self.ranking_step(step), 0))

    def in_warmup(self, step: int | tf.Tensor) -> tf.Tensor:
        """Bool scalar: dense-only training at ``step`` (``dense_warmup`` and ``step < begin_step``)."""
        step = tf.cast(step, tf.int64)
        return tf.logical_and(tf.constant(self.dense_warmup), step < self.begin_step)

    def is_frozen(self, step: int | tf.Tensor) -> tf.Tensor:
        """Bool scalar: rankings are final (``step >= end_step``)."""
        return tf.cast(step, tf.int64) >= self.end_step

    def get_config(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "begin_step": self.begin_step, "end_step": self.end_step,
                "frequency": self.frequency, "power": self.power, "dense_warmup": self.dense_warmup}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LevelSchedule:
        return cls(**config)

"""Subnet samplers: which level every kernel uses in each forward pass of a training step.

Dimension key: ``M`` subnets per step (static per sampler), ``N`` prunable kernels, ``K`` levels.

A sampler is called with the global step and returns int32 ``[M, N]`` level indices (row ``m`` is one
subnet, to apply with ``SupernetMasks.apply_levels(row)``); ``row_weights(step)`` gives the rows' loss
weights, float32 ``[M]`` (all 1 except with ``tier_weights``, below). Randomness is stateless:
``tf.random.stateless_uniform(seed=[seed, step])``, so the draw at a step depends only on ``(seed, step)``
and a resumed run replays exactly. Names (``make_sampler``):

- ``sandwich``: densest (all level 0), sparsest (all level ``K-1``) and ``num_random`` random subnets
  (``random_kind`` ``per_layer`` or ``uniform``); the trainer accumulates gradients over the rows.
- ``uniform``: ``num_random`` subnets, each one random level for all kernels.
- ``per_layer``: ``num_random`` subnets, each kernel draws its own level (the omni search space).
- ``fixed``: one subnet, ``level`` everywhere (mode ``pruned``, the individually-pruned baseline).
- ``dense``: one subnet, level 0 everywhere (mode ``dense``; dense only if ``s_0 == 0``, else use
  ``SupernetMasks.apply_dense``).
- ``tiers``: the sandwich over the deployed tiers: the dense subnet and every tier's subnet, every step, so
  each tier gets as many updates as its individually pruned model would (``sparsity.train_levels``); with
  distillation, the config variant ``tier_sandwich`` (``run_demo --init=shipped``'s default; the
  ``librispeech`` variant applies it too).
- ``tiers_random``: dense, the sparsest tier and one other tier drawn at random (3 subnets per step
  whatever the number of tiers; the sandwich rule of Yu & Huang 2019, Sec. 3.2, over the tiers).
  A tier sparsity ``s`` that is a level is that uniform level; one between two levels ``lo < s < hi`` is a
  per-kernel mix: each kernel takes ``hi`` with probability ``(s - lo) / (hi - lo)`` (drawn from
  ``(seed, step)``), a subnet of about the tier's size in the space the per-layer search explores.

Tier loss weights (``sparsity.tier_weights``, ``tiers`` / ``tiers_random`` only): one positive weight per
``train_levels`` entry, the dense row weighing 1; ``row_weights`` gives each row its tier's weight, and the
train step scales subnet ``s``'s loss by ``w_s / sum(w)`` over the rows of that step
(``omni_tf/training/step.py``) instead of ``1 / M``, so a tier can get more of every update than the mean
over subnets gives it. The idea is the per-subnet loss weighting of weight-sharing supernet training (a
weighted instead of a plain sum of the sampled subnets' losses); the default ``()`` is the plain mean.

In-place distillation (Yu & Huang 2019): the densest subnet learns from the labels and serves as the teacher;
every other subnet learns from the labels and ``KL(teacher || student)`` (``sparsity.distill_mode``,
``omni_tf/training/distill.py``). ``distill_weights(levels, w)`` returns the per-row weight, 0 for rows that
are the dense subnet itself. With a sampler whose first row is not dense (``uniform``, ``per_layer``) the
training loop prepends the dense teacher row (``omni_tf.training.loop.sample_levels``): one more subnet per
step.
"""
from __future__ import annotations

import math

import tensorflow as tf

SAMPLERS = ("sandwich", "uniform", "per_layer", "fixed", "dense", "tiers", "tiers_random")
RANDOM_KINDS = ("per_layer", "uniform")
TIER_SAMPLERS = ("tiers", "tiers_random")  # the samplers that train ``sparsity.train_levels``


def check_tier_weights(sampler: str, train_levels: tuple[float, ...], tier_weights: tuple[float, ...]
                       ) -> dict[float, float]:
    """``{tier sparsity: loss weight}`` of ``sparsity.tier_weights`` (one weight per ``train_levels``
    entry, same order; ``()``: ``{}``, every row weighs 1).

    Raises ValueError naming ``sparsity.tier_weights`` and the bad value when weights are given with a
    sampler other than ``tiers`` / ``tiers_random``, their count is not that of ``train_levels``, one is
    not a finite number > 0, or one tier sparsity is listed twice with two different weights.
    """
    weights = tuple(tier_weights)
    if not weights:
        return {}
    if sampler not in TIER_SAMPLERS:
        raise ValueError(f"sparsity.tier_weights={weights} needs sparsity.sampler one of {TIER_SAMPLERS}, "
                         f"got {sampler!r}; use () with this sampler")
    if len(weights) != len(train_levels):
        raise ValueError(f"sparsity.tier_weights={weights} has {len(weights)} weights, but "
                         f"sparsity.train_levels={tuple(train_levels)} has {len(train_levels)} tiers: give "
                         "one weight per tier, in the same order")
    table: dict[float, float] = {}
    for level, w in zip(train_levels, weights, strict=True):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"sparsity.tier_weights={weights}: weight {w!r} of tier {level} must be a "
                             "finite number > 0")
        if float(level) in table and table[float(level)] != float(w):
            raise ValueError(f"sparsity.tier_weights={weights}: tier {level} is listed twice in "
                             f"sparsity.train_levels={tuple(train_levels)} with different weights")
        table[float(level)] = float(w)
    return table


class Sampler:
    """Base: ``__call__(step) -> int32 [num_subnets, num_kernels]``."""

    def __init__(self, num_kernels: int, num_levels: int, seed: int = 0):
        if num_kernels <= 0 or num_levels <= 0:
            raise ValueError(f"sampler needs num_kernels, num_levels > 0, got {num_kernels}, {num_levels}")
        self.num_kernels = int(num_kernels)
        self.num_levels = int(num_levels)
        self.seed = int(seed)

    @property
    def num_subnets(self) -> int:
        raise NotImplementedError

    def __call__(self, step: int | tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def row_weights(self, step: int | tf.Tensor) -> tf.Tensor:
        """Loss weight float32 ``[num_subnets]`` of each row of ``self(step)``: all 1 (the plain mean)."""
        del step
        return tf.ones([self.num_subnets], tf.float32)

    def _random(self, step: int | tf.Tensor, count: int, kind: str, salt: int = 0) -> tf.Tensor:
        """``count`` random subnets int32 ``[count, N]`` from the stateless seed ``(seed + salt, step)``."""
        seed = tf.stack([tf.constant(self.seed + salt, tf.int64), tf.cast(step, tf.int64)])
        width = self.num_kernels if kind == "per_layer" else 1
        draw = tf.random.stateless_uniform([count, width], seed=seed, minval=0, maxval=self.num_levels,
                                           dtype=tf.int32)
        return tf.broadcast_to(draw, [count, self.num_kernels])

    def _constant_row(self, level: int) -> tf.Tensor:
        return tf.fill([1, self.num_kernels], tf.constant(level, tf.int32))


class SandwichSampler(Sampler):
    """Rows: densest, sparsest, then ``num_random`` random subnets of ``random_kind``."""

    def __init__(self, num_kernels: int, num_levels: int, seed: int = 0, num_random: int = 1,
                 random_kind: str = "per_layer"):
        super().__init__(num_kernels, num_levels, seed)
        if num_random < 0:
            raise ValueError(f"sandwich num_random must be >= 0, got {num_random}")
        if random_kind not in RANDOM_KINDS:
            raise ValueError(f"random_kind must be one of {RANDOM_KINDS}, got {random_kind!r}")
        self.num_random = int(num_random)
        self.random_kind = random_kind

    @property
    def num_subnets(self) -> int:
        return 2 + self.num_random

    def __call__(self, step: int | tf.Tensor) -> tf.Tensor:
        rows = [self._constant_row(0), self._constant_row(self.num_levels - 1)]
        if self.num_random:
            rows.append(self._random(step, self.num_random, self.random_kind))
        return tf.concat(rows, axis=0)


class RandomSampler(Sampler):
    """``num_subnets`` random subnets per step, ``kind`` ``uniform`` or ``per_layer``."""

    def __init__(self, num_kernels: int, num_levels: int, seed: int = 0, num_subnets: int = 1,
                 kind: str = "uniform"):
        super().__init__(num_kernels, num_levels, seed)
        if num_subnets < 1:
            raise ValueError(f"{kind} sampler needs num_subnets >= 1, got {num_subnets}")
        if kind not in RANDOM_KINDS:
            raise ValueError(f"kind must be one of {RANDOM_KINDS}, got {kind!r}")
        self._num_subnets = int(num_subnets)
        self.kind = kind

    @property
    def num_subnets(self) -> int:
        return self._num_subnets

    def __call__(self, step: int | tf.Tensor) -> tf.Tensor:
        return self._random(step, self._num_subnets, self.kind)


class FixedSampler(Sampler):
    """One subnet with ``level`` for every kernel, every step."""

    def __init__(self, num_kernels: int, num_levels: int, level: int = 0, seed: int = 0):
        super().__init__(num_kernels, num_levels, seed)
        if not 0 <= level < num_levels:
            raise ValueError(f"fixed sampler level {level} outside [0, {num_levels})")
        self.level = int(level)

    @property
    def num_subnets(self) -> int:
        return 1

    def __call__(self, step: int | tf.Tensor) -> tf.Tensor:
        del step
        return self._constant_row(self.level)


class TierSampler(Sampler):
    """Rows: dense (level 0), then every tier (``tiers``) or the sparsest tier + one random other tier
    (``tiers_random``). ``levels``: the supernet's sparsities (ascending); ``train_levels``: tier sparsities
    within ``[levels[0], levels[-1]]``; ``tier_weights``: their loss weights (``check_tier_weights``; ``()``:
    all 1). Raises ValueError for an empty or out-of-range ``train_levels`` or bad ``tier_weights``."""

    def __init__(self, num_kernels: int, levels: tuple[float, ...], train_levels: tuple[float, ...],
                 seed: int = 0, random_tier: bool = False, tier_weights: tuple[float, ...] = ()):
        super().__init__(num_kernels, len(levels), seed)
        table = check_tier_weights("tiers_random" if random_tier else "tiers", train_levels, tier_weights)
        self.levels = tuple(float(x) for x in levels)
        tiers = sorted({float(x) for x in train_levels})
        if not tiers:
            raise ValueError("tiers samplers need sparsity.train_levels (the tiers' sparsities)")
        for t in tiers:
            if not self.levels[0] <= t <= self.levels[-1]:
                raise ValueError(f"sparsity.train_levels value {t} outside the level range "
                                 f"[{self.levels[0]}, {self.levels[-1]}]")
        self.train_levels = tuple(tiers)
        self.tier_weights = tuple(table.get(t, 1.0) for t in tiers)  # in train_levels' (sorted) order
        self.random_tier = bool(random_tier)

    @property
    def num_subnets(self) -> int:
        return 1 + (min(2, len(self.train_levels)) if self.random_tier else len(self.train_levels))

    def bracket(self, sparsity: float) -> tuple[int, int, float]:
        """(lo index, hi index, probability of hi) of a tier sparsity; lo == hi for a level itself."""
        for k, level in enumerate(self.levels):
            if abs(level - sparsity) < 1e-9:
                return k, k, 0.0
        hi = next(k for k, level in enumerate(self.levels) if level > sparsity)
        lo = hi - 1
        return lo, hi, (sparsity - self.levels[lo]) / (self.levels[hi] - self.levels[lo])

    def _tier_row(self, step: int | tf.Tensor, index: int) -> tf.Tensor:
        lo, hi, p_hi = self.bracket(self.train_levels[index])
        if lo == hi:
            return self._constant_row(lo)
        seed = tf.stack([tf.constant(self.seed + 1000 + index, tf.int64), tf.cast(step, tf.int64)])
        take_hi = tf.random.stateless_uniform([1, self.num_kernels], seed=seed) < p_hi
        return tf.where(take_hi, tf.constant(hi, tf.int32), tf.constant(lo, tf.int32))

    def tier_indices(self, step: int | tf.Tensor) -> tf.Tensor:
        """Indices int32 ``[num_subnets - 1]`` into ``train_levels`` of the tiers trained at ``step``
        (a pure function of (seed, step))."""
        n = len(self.train_levels)
        if not self.random_tier:
            return tf.range(n, dtype=tf.int32)
        if n == 1:
            return tf.zeros([1], tf.int32)
        seed = tf.stack([tf.constant(self.seed + 2000, tf.int64), tf.cast(step, tf.int64)])
        other = tf.random.stateless_uniform([1], seed=seed, minval=0, maxval=n - 1, dtype=tf.int32)
        return tf.concat([tf.constant([n - 1], tf.int32), other], axis=0)

    def __call__(self, step: int | tf.Tensor) -> tf.Tensor:
        tiers = tf.concat([self._tier_row(step, i) for i in range(len(self.train_levels))], axis=0)
        return tf.concat([self._constant_row(0), tf.gather(tiers, self.tier_indices(step))], axis=0)

    def row_weights(self, step: int | tf.Tensor) -> tf.Tensor:
        """float32 ``[num_subnets]``: 1 for the dense row, then the weight of each tier ``self(step)`` trains
        (``tier_weights``; a pure function of (seed, step), like the rows)."""
        tiers = tf.constant(self.tier_weights, tf.float32)
        return tf.concat([tf.ones([1], tf.float32), tf.gather(tiers, self.tier_indices(step))], axis=0)


def make_sampler(name: str, num_kernels: int, num_levels: int, seed: int = 0, subnets_per_step: int = 1,
                 target_level: int = 0, random_kind: str = "per_layer", levels: tuple[float, ...] = (),
                 train_levels: tuple[float, ...] = (), tier_weights: tuple[float, ...] = ()) -> Sampler:
    """Sampler by name (see module docstring). ``subnets_per_step`` is the number of random subnets
    (on top of densest + sparsest for ``sandwich``); ``target_level`` is the ``fixed`` level; ``levels``
    (the supernet's sparsities, ``num_levels`` of them), ``train_levels`` and ``tier_weights`` feed
    ``tiers*`` (ValueError from ``check_tier_weights`` for weights with another sampler)."""
    if name not in TIER_SAMPLERS:  # a TierSampler checks its own weights
        check_tier_weights(name, train_levels, tier_weights)
    if name in TIER_SAMPLERS:
        if len(levels) != num_levels:
            raise ValueError(f"sampler {name!r} needs the {num_levels} level sparsities, got {levels!r}")
        return TierSampler(num_kernels, levels, train_levels, seed, random_tier=name == "tiers_random",
                           tier_weights=tier_weights)
    if name == "sandwich":
        return SandwichSampler(num_kernels, num_levels, seed, subnets_per_step, random_kind)
    if name in ("uniform", "per_layer"):
        return RandomSampler(num_kernels, num_levels, seed, subnets_per_step, name)
    if name == "fixed":
        return FixedSampler(num_kernels, num_levels, target_level, seed)
    if name == "dense":
        return FixedSampler(num_kernels, num_levels, 0, seed)
    raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")


def distill_weights(level_matrix: tf.Tensor, distill_weight: float | tf.Tensor) -> tf.Tensor:
    """Per-subnet weight of the KL-to-dense term, float32 ``[M]``: ``distill_weight`` for every row of
    ``level_matrix [M, N]`` with some level > 0, 0 for the all-level-0 (teacher) rows."""
    sparse_row = tf.reduce_any(tf.convert_to_tensor(level_matrix) > 0, axis=1)
    return tf.cast(sparse_row, tf.float32) * tf.cast(distill_weight, tf.float32)

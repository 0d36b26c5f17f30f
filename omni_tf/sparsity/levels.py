"""The sparsity set S and per-kernel survival levels (nested magnitude masks by construction).

Dimension key: ``I`` kernel input dim (Keras kernel axis 0), ``O`` output dim, ``b`` block size,
``NB = ceil(I / b)`` blocks per output column, ``U = NB * O`` ranking units, ``K`` number of levels.

A kernel ``W [I, O]`` is cut into units of ``b`` consecutive weights along the input dim (TFLite stores a
FULLY_CONNECTED weight as ``[O, I]`` and its block-sparse kernels use 1x4 (float) / 1x16 (int8) blocks along
``I``; ``b = 1`` is unstructured). Unit score = ``|w|`` for ``b = 1``, else the L2 (or L1) norm of the unit.
When ``I % b != 0`` the last unit of each column is a partial block of ``I % b`` weights, scored by the
norm of its real weights (it competes like any other unit; it simply tends to score lower).

One descending ranking of the ``U`` scores (ties: lower flat index ``nb * O + o`` ranks first) serves
every level. With ``C_j`` the number of weights in the units ranked before unit ``j`` and ``n_j`` its size,
level ``k`` keeps unit ``j`` iff its midpoint lies within the target, ``2 C_j + n_j <= 2 I O (1 - s_k)``
(exact integer arithmetic, ``s_k`` resolved to 1e-6). With whole blocks (``I % b == 0``) that keeps exactly
``keep_k = floor(U (1 - s_k) + 0.5)`` units; with a partial last block the kept weight count is within
``b / 2`` of ``I O (1 - s_k)``. Because the ranking is shared and the target is non-increasing in ``k``, the
kept set of a sparser level is a subset of every denser level's. The survival tensor stores, per weight,
the highest ``k`` at which it is kept (``-1`` if even level 0 drops it, possible only when ``s_0 > 0``);
the mask at level ``k`` is ``survival >= k``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

DEFAULT_LEVELS: tuple[float, ...] = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
_MAX_LEVELS = 127  # survival is int8
_NORMS = ("l2", "l1")
_MICRO = 1_000_000  # sparsities are resolved to 1e-6


def validate_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """``levels`` as a float tuple; ValueError unless ``0 <= s < 1`` and strictly increasing."""
    out = tuple(float(s) for s in levels)
    if not out:
        raise ValueError("sparsity levels must not be empty")
    if len(out) > _MAX_LEVELS:
        raise ValueError(f"at most {_MAX_LEVELS} sparsity levels (int8 survival), got {len(out)}")
    for s in out:
        if not 0.0 <= s < 1.0:
            raise ValueError(f"sparsity level {s} outside [0, 1) in {out}")
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"sparsity levels must be strictly increasing, got {out}")
    return out


def parse_block(block: int | str) -> int:
    """Block size along the input dim from ``4``, ``"4"`` or ``"1x4"``; must be >= 1."""
    if isinstance(block, str):
        text = block.strip().lower()
        if "x" in text:
            rows, _, cols = text.partition("x")
            if rows.strip() != "1":
                raise ValueError(f"only 1xN blocks (along the input dim) are supported, got {block!r}")
            text = cols
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"cannot parse block {block!r}; use an int or '1xN'") from None
    else:
        value = int(block)
    if value < 1:
        raise ValueError(f"block must be >= 1, got {block!r}")
    return value


def level_index(levels: Sequence[float], sparsity: float, tol: float = 1e-6) -> int:
    """Index of ``sparsity`` in ``levels``; ValueError naming the set if absent."""
    for k, s in enumerate(levels):
        if abs(s - sparsity) <= tol:
            return k
    raise ValueError(f"sparsity {sparsity} is not one of the levels {tuple(levels)}")


def num_units(shape: Sequence[int], block: int) -> int:
    """Ranking units ``U = ceil(I / b) * O`` of a kernel of ``shape [I, O]``."""
    in_dim, out_dim = int(shape[0]), int(shape[1])
    return -(-in_dim // block) * out_dim


def keep_counts(n_units: int, sparsities: Sequence[float]) -> np.ndarray:
    """Units kept per level when all units are whole blocks: ``floor(U * (1 - s_k) + 0.5)``, int64 [K].

    Exact integer arithmetic on ``s_k`` rounded to 6 decimals, so float32 and float64 inputs give the same
    count (``survival_levels`` computes the same).
    """
    micro = np.round(np.asarray(sparsities, dtype=np.float64) * _MICRO).astype(np.int64)
    return (n_units * (_MICRO - micro) + _MICRO // 2) // _MICRO


def unit_scores(kernel: tf.Tensor, block: int | str, norm: str = "l2") -> tf.Tensor:
    """Scores ``[NB, O]`` of the units of ``kernel [I, O]`` (zero-padded partial last block)."""
    block = parse_block(block)
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    kernel = tf.convert_to_tensor(kernel, tf.float32)
    if kernel.shape.rank != 2:
        raise ValueError(f"kernel must be 2-D [in, out], got shape {kernel.shape}")
    if block == 1:
        return tf.abs(kernel)
    in_dim, out_dim = int(kernel.shape[0]), int(kernel.shape[1])
    n_blocks = -(-in_dim // block)
    padded = tf.pad(kernel, [[0, n_blocks * block - in_dim], [0, 0]])
    blocks = tf.reshape(padded, [n_blocks, block, out_dim])
    if norm == "l1":
        return tf.reduce_sum(tf.abs(blocks), axis=1)
    return tf.sqrt(tf.reduce_sum(tf.square(blocks), axis=1))


def survival_levels(
    kernel: tf.Tensor, sparsities: Sequence[float] | tf.Tensor, block: int | str = 1, norm: str = "l2"
) -> tf.Tensor:
    """Highest level index at which each weight survives: int8 ``[I, O]``.

    Args:
      kernel: float ``[I, O]``.
      sparsities: float ``[K]``, non-decreasing in ``[0, 1)`` - the final levels or the current (ramping)
        targets of the schedule; may be a tensor inside ``tf.function``.
      block: unit size along ``I`` (1, 4, 16, ... or ``"1x4"``).
      norm: unit score for ``block > 1``: ``"l2"`` or ``"l1"``.
    """
    kernel = tf.convert_to_tensor(kernel, tf.float32)
    block = parse_block(block)
    scores = unit_scores(kernel, block, norm)  # [NB, O]
    n_blocks, out_dim = int(scores.shape[0]), int(scores.shape[1])
    in_dim = int(kernel.shape[0])
    n = n_blocks * out_dim
    # top_k returns equal values lower-index first: a deterministic tie break.
    _, order = tf.math.top_k(tf.reshape(scores, [-1]), k=n, sorted=True)
    rank = tf.math.invert_permutation(order)  # [U]: 0 = best unit
    row_sizes = [block] * (n_blocks - 1) + [in_dim - block * (n_blocks - 1)]
    sizes = tf.constant(np.repeat(np.asarray(row_sizes, np.int64), out_dim))  # [U], flat order
    ranked_sizes = tf.gather(sizes, order)
    midpoint2 = 2 * tf.cumsum(ranked_sizes, exclusive=True) + ranked_sizes  # [U] by rank
    midpoint2 = tf.gather(midpoint2, rank)  # [U] by unit
    micro = tf.cast(tf.round(tf.cast(tf.convert_to_tensor(sparsities), tf.float64) * _MICRO), tf.int64)
    limit = 2 * in_dim * out_dim * (_MICRO - micro)  # [K]
    survives = tf.cast(midpoint2[:, None] * _MICRO <= limit[None, :], tf.int32)  # [U, K]
    survival = tf.reduce_sum(survives, axis=1) - 1  # [U], nested: limit is non-increasing
    survival = tf.reshape(survival, scores.shape)  # [NB, O]
    if block > 1:
        survival = tf.repeat(survival, block, axis=0)[: int(kernel.shape[0])]
    return tf.cast(survival, tf.int8)


def mask_at(survival: tf.Tensor, k: int | tf.Tensor) -> tf.Tensor:
    """Float32 mask of level ``k``: ``survival >= k``."""
    return tf.cast(survival >= tf.cast(k, survival.dtype), tf.float32)


def config_to_vector(config: Mapping[str, int], names: Sequence[str], num_levels: int) -> np.ndarray:
    """``{kernel_name: level_index}`` -> int32 ``[num_kernels]`` in ``names`` order (all names required)."""
    missing = [n for n in names if n not in config]
    unknown = sorted(set(config) - set(names))
    if missing or unknown:
        raise ValueError(f"sparsity config mismatch: missing {missing[:5]}, unknown {unknown[:5]}")
    vec = np.asarray([int(config[n]) for n in names], dtype=np.int32)
    bad = [(n, int(v)) for n, v in zip(names, vec, strict=True) if not 0 <= v < num_levels]
    if bad:
        raise ValueError(f"level index out of range [0, {num_levels}) for {bad[:5]}")
    return vec


def vector_to_config(vector: Sequence[int] | np.ndarray, names: Sequence[str]) -> dict[str, int]:
    """int ``[num_kernels]`` -> ``{kernel_name: level_index}``."""
    values = np.asarray(vector).reshape(-1)
    if len(values) != len(names):
        raise ValueError(f"level vector has {len(values)} entries, expected {len(names)} kernels")
    return {n: int(v) for n, v in zip(names, values, strict=True)}

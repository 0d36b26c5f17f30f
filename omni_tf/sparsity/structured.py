"""Structured omni-sparsity: nested masks over whole units (heads, hidden units, channels) and sliced sizes.

Dimension key: ``G`` unit groups (search genes), ``U`` units of a family, ``K`` levels, ``w`` a unit's width
along one axis of a variable, ``r`` repeats (the unit's slice appears ``r`` times along that axis).

Why: the unstructured and 1xN-block masks of the Omni-sparsity paper (Yang et al., "Omni-sparsity DNN: fast
sparsity optimization for on-device streaming E2E ASR via supernet", ICASSP 2022) only shrink a file that
runtime kernels read sparse; int8 TFLite files stay dense on a phone. Removing whole units instead is the
route of slimmable networks (Yu et al., "Slimmable neural networks", ICLR 2019: one set of weights runs at
several widths; Yu & Huang, "Universally slimmable networks and improved training techniques", ICCV 2019:
any width, sandwich rule and in-place distillation, both used by our sampler) and of TODM (Meta, 2023: one
supernet for on-device ASR whose subnets shrink layer widths - feed-forward size, attention heads - and are
exported as smaller dense models). Here the widths are per unit group and nested by magnitude ranking, so
a tier is a smaller *dense* model: fewer heads, narrower feed-forwards, fewer conv channels, a smaller
decoder.

Units (``Family``; each layer lists its own through ``unit_groups``):

- feed-forward hidden unit j: column j of the first kernel (+ bias j), row j of the second;
- attention head h: the head's ``w = d_k`` columns of the query, key and value kernels (+ biases) and its
  ``d_k`` rows of the output projection;
- conv-module channel c: pointwise-in output c of both GLU halves (``r = 2``, + biases), depthwise channel c,
  the conv LayerNorm's gamma/beta c and channel mask c, pointwise-out row c;
- decoder: LSTM hidden unit h of predictor layer l (its 4 gate columns of the input and recurrent kernels,
  ``r = 4``, + biases; recurrent row h; row h of the next layer's input kernel or of the joiner's predictor
  projection) and joiner hidden unit j (column of the encoder and predictor projections, row of the output).

A ``Group`` is one search gene: one level per group in a config ``{group_name: level}`` (``encoder/block_i/
{mhsa,conv,ffn}``, ``decoder``). The predictor and the joiner form one group because the joiner's predictor
projection is sliced along both of its axes (predictor units x joiner units): within one group its sliced
size depends on one level only, so every size stays ``const + sum_g table[g, level_g]``.

Ranking (one per family, recomputed on the schedule): unit score = RMS of the unit's weights over all its
kernels, ``sqrt(sum of squares / count)`` (the group L2 norm of group-lasso / filter pruning, normalised by
the unit's weight count). All units of a family have the same count, so the normalisation does not change
the order; it makes scores of different families comparable in logs. Only kernels are scored (biases, norms
and depthwise weights are a small share and do not decide a unit's size of contribution). The survival
level of every unit comes from ``levels.survival_levels`` on the ``[1, U]`` score row (so level ``k`` keeps
``floor(U (1 - s_k) + 0.5)`` units), except that the best unit survives every level: a family never loses
all its units (a layer without heads cannot be exported). Nesting holds by construction.

Masks: a kernel's mask is the product over its memberships of the unit keep vector, repeated ``w`` times,
tiled ``r`` times and broadcast along the other axis. A dropped unit's kernels are all zero (every paired
kernel at once), so with its outgoing rows zero the unit contributes nothing: the masked model equals the
sliced model (with structured masks the conv module's LayerNorm normalises over its kept channels only,
see ``layers/transformer.py``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from omni_tf.sparsity import levels as lv
from omni_tf.sparsity import size as size_lib

GRANULARITIES = ("weights", "structured")


def validate_granularity(granularity: str) -> str:
    """``granularity`` if one of ``GRANULARITIES``; ValueError naming the choices otherwise."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"sparsity granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return granularity


@dataclasses.dataclass(frozen=True, eq=False)
class Member:
    """One variable's share of a family: units along ``axis`` of ``variable``, each ``width`` wide, the
    whole ``[U * width]`` block tiled ``repeats`` times (GLU halves, LSTM gates). ``mask`` is the kernel's
    mask variable (None for biases, norms, depthwise weights); ``is_unit_mask`` marks a layer's own unit mask
    (written like a kernel mask, never counted as a parameter)."""

    variable: tf.Variable
    axis: int
    width: int = 1
    repeats: int = 1
    mask: tf.Variable | None = None
    is_unit_mask: bool = False

    @property
    def is_kernel(self) -> bool:
        return self.mask is not None


@dataclasses.dataclass(frozen=True, eq=False)
class Family:
    """``num_units`` units ranked together; ``config_key`` names the model config field of its width
    (``("layer_ff_dim", i)``: list entry ``i``; ``("joint_dim", None)``: a scalar)."""

    name: str
    num_units: int
    members: tuple[Member, ...]
    config_key: tuple[str, int | None]


@dataclasses.dataclass(frozen=True, eq=False)
class Group:
    """One search gene: its families share one level in a config."""

    name: str
    families: tuple[Family, ...]


def check_groups(groups: Sequence[Group]) -> None:
    """ValueError unless names are unique, shapes match ``U * width * repeats``, and every variable's
    families sit in one group."""
    seen_groups, seen_families, var_group = set(), set(), {}
    for g in groups:
        if g.name in seen_groups:
            raise ValueError(f"duplicate unit group {g.name!r}")
        seen_groups.add(g.name)
        for f in g.families:
            if f.name in seen_families:
                raise ValueError(f"duplicate unit family {f.name!r}")
            seen_families.add(f.name)
            if f.num_units < 1:
                raise ValueError(f"unit family {f.name}: needs >= 1 unit, got {f.num_units}")
            for m in f.members:
                dim = int(m.variable.shape[m.axis])
                if dim != f.num_units * m.width * m.repeats:
                    raise ValueError(f"unit family {f.name}: {m.variable.name} axis {m.axis} has {dim}, "
                                     f"expected {f.num_units} units x {m.width} x {m.repeats}")
                other = var_group.setdefault(id(m.variable), g.name)
                if other != g.name:
                    raise ValueError(f"{m.variable.name} is in unit groups {other} and {g.name}: a "
                                     "variable's units must share one group (sizes stay additive)")


# ---------------------------------------------------------------------------------------------------------
# Ranking and masks (tensor ops: tf.function-safe)


def unit_scores(family: Family) -> tf.Tensor:
    """RMS of every unit's kernel weights over all kernels of ``family``: float32 ``[U]``."""
    total, count = tf.zeros([family.num_units], tf.float32), 0
    for m in family.members:
        if not m.is_kernel:
            continue
        v = tf.convert_to_tensor(m.variable, tf.float32)
        moved = tf.experimental.numpy.moveaxis(v, m.axis, 0)  # [r * U * w, ...]
        sq = tf.reshape(tf.square(moved), [m.repeats, family.num_units, -1])
        total += tf.reduce_sum(sq, axis=[0, 2])
        count += int(np.prod(v.shape)) // family.num_units
    if not count:
        raise ValueError(f"unit family {family.name} has no kernel to rank by")
    return tf.sqrt(total / float(count))


def unit_survival(scores: tf.Tensor, sparsities: Sequence[float] | tf.Tensor) -> tf.Tensor:
    """int8 ``[U]``: highest level keeping each unit (``levels.survival_levels`` on the score row); the
    best unit survives every level."""
    scores = tf.convert_to_tensor(scores, tf.float32)
    surv = tf.cast(lv.survival_levels(scores[None, :], sparsities, 1)[0], tf.int32)
    top = tf.shape(tf.convert_to_tensor(sparsities))[0] - 1
    best = tf.argmax(scores, output_type=tf.int32)
    surv = tf.tensor_scatter_nd_update(surv, [[best]], [top])
    return tf.cast(surv, tf.int8)


def expand_keep(keep: tf.Tensor, member: Member) -> tf.Tensor:
    """Unit keep vector ``[U]`` -> the member variable's mask factor, broadcastable to its shape."""
    vec = tf.tile(tf.repeat(tf.cast(keep, tf.float32), member.width), [member.repeats])
    rank = member.variable.shape.rank
    shape = [1] * rank
    shape[member.axis] = -1
    return tf.reshape(vec, shape)


# ---------------------------------------------------------------------------------------------------------
# Kept units, sliced config and weights (numpy: export time)


def kept_units(groups: Sequence[Group], survival: Mapping[str, np.ndarray], config: Mapping[str, int]
               ) -> dict[str, np.ndarray]:
    """``{family: sorted kept unit indices}`` of a config ``{group: level}`` (all groups required)."""
    missing = [g.name for g in groups if g.name not in config]
    unknown = sorted(set(config) - {g.name for g in groups})
    if missing or unknown:
        raise ValueError(f"structured config mismatch: missing groups {missing[:5]}, unknown {unknown[:5]}")
    out = {}
    for g in groups:
        for f in g.families:
            out[f.name] = np.flatnonzero(np.asarray(survival[f.name]) >= int(config[g.name]))
    return out


def slice_indices(member: Member, num_units: int, kept: np.ndarray) -> np.ndarray:
    """Indices along ``member.axis`` of the kept units, in the sliced model's layout."""
    per_unit = (kept[:, None] * member.width + np.arange(member.width)[None, :]).reshape(-1)
    block = num_units * member.width
    return np.concatenate([r * block + per_unit for r in range(member.repeats)])


def sliced_model_config(model_config: Mapping[str, Any], groups: Sequence[Group],
                        kept: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The model config of the sliced model: every family's width field set to its kept count (per-layer
    fields such as ``layer_ff_dim`` become full lists, one entry per layer)."""
    cfg = dict(model_config)
    lists: dict[str, dict[int, int]] = {}
    for g in groups:
        for f in g.families:
            key, index = f.config_key
            n = int(len(kept[f.name]))
            if index is None:
                cfg[key] = n
            else:
                lists.setdefault(key, {})[int(index)] = n
    for key, entries in lists.items():
        if sorted(entries) != list(range(len(entries))):
            raise ValueError(f"unit families give {key} entries {sorted(entries)}, not 0..{len(entries) - 1}")
        cfg[key] = [entries[i] for i in range(len(entries))]
    return cfg


def copy_sliced_weights(src_groups: Sequence[Group], src_variables: Sequence[tf.Variable],
                        dst_variables: Sequence[tf.Variable], kept: Mapping[str, np.ndarray]) -> None:
    """Assigns every ``dst`` variable the kept slices of the same-position ``src`` variable.

    ``src_variables`` / ``dst_variables``: the full and sliced models' parameters without masks (same
    structure, same order). ValueError on a count or shape mismatch.
    """
    if len(src_variables) != len(dst_variables):
        raise ValueError(f"sliced model has {len(dst_variables)} variables, full model {len(src_variables)}")
    cuts: dict[int, list[tuple[int, np.ndarray]]] = {}
    for g in src_groups:
        for f in g.families:
            for m in f.members:
                cuts.setdefault(id(m.variable), []).append((m.axis, slice_indices(m, f.num_units,
                                                                                  kept[f.name])))
    for s, d in zip(src_variables, dst_variables, strict=True):
        value = s.numpy()
        for axis, idx in cuts.get(id(s), []):
            value = np.take(value, idx, axis=axis)
        if value.shape != tuple(d.shape):
            raise ValueError(f"slicing {s.name}: got {value.shape}, sliced model has {tuple(d.shape)}")
        d.assign(value)


# ---------------------------------------------------------------------------------------------------------
# Size of the sliced model


class StructuredSizeModel(size_lib.SizeModel):
    """Exact sizes of the sliced model per group config (same interface as ``size.SizeModel``).

    Per variable: params = its element count with every sliced axis at the kept width. Prunable kernels
    (``MaskedDense``) are int8 in dynamic-range int8 (1 byte + 12 bytes per output channel: float32 scale and
    int64 zero point); everything else stays float32 there (4 bytes). float32 / float16: 4 / 2 bytes per
    param. ``*_sparse_bytes`` equal the dense ones: a sliced tier is a dense model. Masks are not params.
    A group's table entry at level ``k`` is the sum over its variables (each variable's units belong to one
    group), so ``size(config) = const + sum_g table[g, level_g]``.

    Args:
      groups: the model's unit groups.
      kernels: every prunable kernel variable ``[I, O]`` of the model (in groups or not).
      other_variables: every other non-mask variable of the model (biases, norms, embeddings...).
      levels: the sparsity set.
      kept_counts: ``{family: int [K]}`` kept units per level.
    """

    def __init__(self, groups: Sequence[Group], kernels: Sequence[tf.Variable],
                 other_variables: Sequence[tf.Variable], levels: Sequence[float],
                 kept_counts: Mapping[str, Sequence[int]]):
        self.names = tuple(g.name for g in groups)
        if not self.names:
            raise ValueError("StructuredSizeModel: no unit groups")
        self.levels = lv.validate_levels(levels)
        n_levels = len(self.levels)
        self.kept_counts = {k: np.asarray(v, np.int64).reshape(n_levels) for k, v in kept_counts.items()}
        kernel_ids = {id(k) for k in kernels}
        cuts: dict[int, list[tuple[int, Family]]] = {}
        owner: dict[int, int] = {}
        for gi, g in enumerate(groups):
            for f in g.families:
                for m in f.members:
                    if not m.is_unit_mask:
                        cuts.setdefault(id(m.variable), []).append((m.axis, f))
                        owner[id(m.variable)] = gi
        const = dict.fromkeys(("params", "kernel", "quant", "float"), 0.0)
        per_group = {k: np.zeros([len(self.names), n_levels]) for k in const}
        for v in [*kernels, *other_variables]:
            shape = np.asarray([int(d) for d in v.shape], np.int64)
            dims = np.repeat(shape[None, :], n_levels, axis=0)  # [K, rank]
            for axis, f in cuts.get(id(v), []):
                dims[:, axis] = shape[axis] // f.num_units * self.kept_counts[f.name]
            params = dims.prod(axis=1).astype(np.float64)
            is_kernel = id(v) in kernel_ids
            parts = {"params": params, "kernel": params if is_kernel else 0 * params,
                     "quant": dims[:, -1].astype(np.float64) * 12 if is_kernel else 0 * params,
                     "float": 0 * params if is_kernel else params}
            if id(v) in owner:
                for k, val in parts.items():
                    per_group[k][owner[id(v)]] += val
            else:
                for k, val in parts.items():
                    const[k] += float(val[0])
        self.total_params = int(const["params"] + per_group["params"][:, 0].sum())
        self._tables = {"nonzero_params": (const["params"], per_group["params"])}
        for fmt, e in (("float32", 4), ("float16", 2)):
            table = (e * const["params"], e * per_group["params"])
            self._tables[f"{fmt}_bytes"] = self._tables[f"{fmt}_sparse_bytes"] = table
        int8 = (const["kernel"] + const["quant"] + 4 * const["float"],
                per_group["kernel"] + per_group["quant"] + 4 * per_group["float"])
        self._tables["int8_bytes"] = self._tables["int8_sparse_bytes"] = int8

    @classmethod
    def from_masks(cls, masks: Any, levels: Sequence[float] | None = None) -> StructuredSizeModel:
        """From a structured ``SupernetMasks``: exact kept counts of its survival levels, or (``levels``
        given) the analytic counts ``max(1, floor(U (1 - s) + 0.5))`` at those sparsities."""
        if levels is None:
            levels = masks.levels
            counts = {f: [(s >= k).sum() for k in range(len(levels))]
                      for f, s in masks.survival_arrays().items()}
        else:
            counts = {f.name: np.maximum(1, lv.keep_counts(f.num_units, lv.validate_levels(levels)))
                      for g in masks.groups for f in g.families}
        kernels = masks.all_kernels()
        return cls(masks.groups, kernels, masks.other_variables(), levels, counts)

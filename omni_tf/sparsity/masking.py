"""SupernetMasks: the survival tensors of all prunable kernels (or unit groups) and the writes of their masks.

Dimension key: ``N`` number of config entries (prunable kernels, or unit groups with granularity
``structured``), ``K`` number of levels, ``[I, O]`` one kernel, ``U`` units of a family.

The model exposes ``prunable_kernels()`` and ``kernel_masks()`` (same order and names, masks float32 of the
kernel's shape, ``x @ (kernel * mask)`` in the layer). This module needs nothing else from it: it keeps one
int8 survival variable per kernel (see ``levels.survival_levels``), re-ranks on demand, and assigns
``mask = survival >= k`` for a requested level per kernel. Every method that writes is tf.function-safe
with tensor arguments (level vectors ``int32 [N]``, sparsities ``float32 [K]``), so a trainer can sample a
subnet per step without retracing.

Granularity ``"weights"`` (default): one ranking per kernel over its weights or 1xN blocks (``levels.py``);
a config is ``{kernel_name: level}``. Granularity ``"structured"``: one ranking per unit family of the
model's ``unit_groups()`` (``structured.py``: heads, hidden units, channels); a config is
``{group_name: level}``, the survival tensors are ``int8 [U]`` per family, and a write sets every paired
kernel's mask (and the layers' unit masks) from the kept units. Samplers, search and size model see only
names and levels either way.

Per-level LayerNorms (``sparsity.per_level_norm``, ``level_norms.py``): ``norm_selectors`` pairs a norm's
one-hot level selector with the kernel whose level it follows; every write of masks writes the selectors
too, so a norm's parameters always belong to the masks in use.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from omni_tf.sparsity import levels as lv
from omni_tf.sparsity import structured as st


class _Untracked:
    """Holds references without tf.Module / checkpoint tracking."""

    def __init__(self, kernels: list[tf.Variable], masks: list[tf.Variable]):
        self.kernels = kernels
        self.masks = masks


class SupernetMasks(tf.Module):
    """Survival levels + mask writes for every prunable kernel of ``model``.

    Args:
      model: object with ``prunable_kernels()`` and ``kernel_masks()`` -> ``[(name, tf.Variable)]`` (and
        ``unit_groups()`` -> ``[structured.Group]`` and ``weights`` for granularity ``structured``).
      levels: the sparsity set ``S`` (validated, strictly increasing).
      block: ranking unit along the kernel input dim (``1``, ``4``, ``"1x16"`` ...); granularity weights.
      norm: block score, ``"l2"`` or ``"l1"``; granularity weights.
      granularity: ``"weights"`` (kernels, blocks) or ``"structured"`` (unit groups).
      norm_selectors: ``[(kernel name, selector float32 [K])]``: one-hot level selectors of per-level
        LayerNorms (``level_norms.LevelNorms.selector_pairs``), set to the named kernel's level whenever
        masks are written; granularity weights only.

    Tracked state (``tf.train.Checkpoint(masks=this)``): ``survival[name]`` int8 ``[I, O]`` per kernel
    (structured: int8 ``[U]`` per unit family) and ``current_sparsities`` float32 ``[K]`` (the targets of
    the last re-ranking). Before the first ``update_rankings`` every weight survives every level (all
    subnets dense).
    """

    def __init__(self, model: Any, levels: Sequence[float] = lv.DEFAULT_LEVELS, block: int | str = 1,
                 norm: str = "l2", granularity: str = "weights",
                 norm_selectors: Sequence[tuple[str, tf.Variable]] = (), name: str = "supernet_masks"):
        super().__init__(name=name)
        self.levels = lv.validate_levels(levels)
        self.block = lv.parse_block(block)
        if norm not in ("l2", "l1"):
            raise ValueError(f"SupernetMasks: norm must be 'l2' or 'l1', got {norm!r}")
        self.norm = norm
        self.granularity = st.validate_granularity(granularity)
        kernels = list(model.prunable_kernels())
        masks = list(model.kernel_masks())
        if not kernels:
            raise ValueError("SupernetMasks: model.prunable_kernels() is empty")
        kernel_names = [n for n, _ in kernels]
        if kernel_names != [n for n, _ in masks]:
            raise ValueError("SupernetMasks: prunable_kernels() and kernel_masks() names/order differ")
        if len(set(kernel_names)) != len(kernel_names):
            raise ValueError("SupernetMasks: duplicate kernel names")
        for (name_, k), (_, m) in zip(kernels, masks, strict=True):
            if k.shape.rank != 2 or k.shape != m.shape:
                raise ValueError(f"SupernetMasks: {name_}: kernel {k.shape} / mask {m.shape}: need equal 2-D")
        self.kernel_names: tuple[str, ...] = tuple(kernel_names)
        self.names: tuple[str, ...] = tuple(kernel_names)
        # The model's variables sit in a plain object so tf.Module does not track them as ours.
        self._model_vars = _Untracked([k for _, k in kernels], [m for _, m in masks])
        self._model_vars.groups = []
        self._model_vars.weights = []
        shapes = {n: k.shape for n, k in kernels}
        if self.granularity == "structured":
            groups = list(model.unit_groups())
            if not groups:
                raise ValueError("SupernetMasks: granularity structured but model.unit_groups() is empty")
            st.check_groups(groups)
            self._model_vars.groups = groups
            self._model_vars.weights = list(model.weights)
            self.names = tuple(g.name for g in groups)
            shapes = {f.name: (f.num_units,) for g in groups for f in g.families}
        self._model_vars.norm_selectors = self._check_selectors(norm_selectors)
        top = len(self.levels) - 1
        self.survival = {
            n: tf.Variable(tf.fill(shape, tf.constant(top, tf.int8)), trainable=False,
                           name=f"survival_{i}", aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            for i, (n, shape) in enumerate(shapes.items())
        }
        self.current_sparsities = tf.Variable(tf.zeros([len(self.levels)], tf.float32), trainable=False,
                                              name="current_sparsities",
                                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def _check_selectors(self, pairs: Sequence[tuple[str, tf.Variable]]) -> list[tuple[int, tf.Variable]]:
        """``[(kernel index, selector)]``; ValueError for structured granularity, an unknown kernel or a
        selector that is not ``[K]``."""
        pairs = list(pairs)
        if pairs and self.granularity != "weights":
            raise ValueError("SupernetMasks: per-level LayerNorms need granularity 'weights' (structured "
                             "masks slice the conv LayerNorm's channels)")
        out = []
        for kernel, selector in pairs:
            if kernel not in self.kernel_names:
                raise ValueError(f"SupernetMasks: norm selector follows unknown kernel {kernel!r}")
            if tuple(selector.shape) != (len(self.levels),):
                raise ValueError(f"SupernetMasks: norm selector of {kernel} has shape "
                                 f"{tuple(selector.shape)}, need ({len(self.levels)},)")
            out.append((self.kernel_names.index(kernel), selector))
        return out

    def _write_selectors(self, vec: tf.Tensor) -> None:
        for i, selector in self._model_vars.norm_selectors:
            selector.assign(tf.one_hot(vec[i], self.num_levels, dtype=selector.dtype))

    @property
    def num_kernels(self) -> int:
        """Entries of a level vector: kernels, or unit groups (structured)."""
        return len(self.names)

    @property
    def groups(self) -> list[st.Group]:
        """The model's unit groups (structured granularity; empty otherwise)."""
        return self._model_vars.groups

    def all_kernels(self) -> list[tf.Variable]:
        """Every prunable kernel variable of the model, model order."""
        return list(self._model_vars.kernels)

    def other_variables(self) -> list[tf.Variable]:
        """The model's trainable variables that are not prunable kernels (structured granularity)."""
        skip = {id(v) for v in self._model_vars.kernels} | {id(v) for v in self._model_vars.masks}
        skip |= {id(m.variable) for g in self.groups for f in g.families for m in f.members if m.is_unit_mask}
        return [v for v in self._model_vars.weights if id(v) not in skip and v.trainable]

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def kernel_shapes(self) -> dict[str, tuple[int, int]]:
        kernels = self._model_vars.kernels
        return {n: tuple(int(d) for d in k.shape) for n, k in zip(self.kernel_names, kernels, strict=True)}

    # -- ranking ----------------------------------------------------------------------------------------
    def update_rankings(self, current_sparsities: Sequence[float] | tf.Tensor | None = None) -> None:
        """Re-ranks every kernel by its current magnitudes against ``current_sparsities [K]`` (default: the
        final levels). Masks are not touched; call ``apply*`` afterwards."""
        if current_sparsities is None:
            current_sparsities = self.levels
        s = tf.cast(tf.convert_to_tensor(current_sparsities), tf.float32)
        s.shape.assert_is_compatible_with([self.num_levels])
        if self.granularity == "structured":
            for g in self.groups:
                for f in g.families:
                    self.survival[f.name].assign(st.unit_survival(st.unit_scores(f), s))
        else:
            for n, k in zip(self.names, self._model_vars.kernels, strict=True):
                self.survival[n].assign(lv.survival_levels(k, s, self.block, self.norm))
        self.current_sparsities.assign(s)

    # -- masks ------------------------------------------------------------------------------------------
    def level_vector(self, config: Mapping[str, int] | Sequence[int] | np.ndarray | tf.Tensor) -> tf.Tensor:
        """``{name: level}`` (all names) or a ``[N]`` sequence/tensor -> int32 tensor ``[N]``."""
        if isinstance(config, Mapping):
            return tf.constant(lv.config_to_vector(config, self.names, self.num_levels))
        vec = tf.cast(tf.convert_to_tensor(config), tf.int32)
        vec.shape.assert_is_compatible_with([self.num_kernels])
        return vec

    def apply_levels(self, level_vector: tf.Tensor) -> None:
        """Writes ``mask_i = survival_i >= level_vector[i]`` for all kernels (and every norm selector to
        the one-hot of its kernel's level); ``level_vector`` int ``[N]``."""
        vec = self.level_vector(level_vector)
        self._write_selectors(vec)
        if self.granularity == "structured":
            for mask_var, value in self._structured_masks(vec):
                mask_var.assign(value)
            return
        for i, (n, m) in enumerate(zip(self.names, self._model_vars.masks, strict=True)):
            m.assign(lv.mask_at(self.survival[n], vec[i]))

    def _structured_masks(self, vec: tf.Tensor) -> list[tuple[Any, tf.Tensor]]:
        """``[(mask variable, value)]`` of every kernel mask / unit mask in a unit group, for levels ``vec``
        ``[G]``; a kernel's mask is the product of its memberships' expanded keep vectors."""
        out: dict[Any, tf.Tensor] = {}
        targets: dict[int, Any] = {}
        for i, g in enumerate(self.groups):
            for f in g.families:
                keep = lv.mask_at(self.survival[f.name], vec[i])  # [U]
                for m in f.members:
                    target = m.mask if m.is_kernel else (m.variable if m.is_unit_mask else None)
                    if target is None:
                        continue
                    factor = st.expand_keep(keep, m)
                    key = id(target)
                    targets[key] = target
                    prev = out.get(key)
                    out[key] = factor * tf.ones(target.shape) if prev is None else prev * factor
        return [(targets[k], v) for k, v in out.items()]

    def apply(self, config: Mapping[str, int] | Sequence[int] | tf.Tensor) -> None:
        """Applies a sparsity config (``{name: level_index}``) or a level vector ``[N]``."""
        self.apply_levels(self.level_vector(config))

    def apply_uniform(self, k: int | tf.Tensor) -> None:
        """Level ``k`` for every kernel."""
        self.apply_levels(tf.fill([self.num_kernels], tf.cast(k, tf.int32)))

    def apply_dense(self) -> None:
        """All masks to ones (dense even if ``s_0 > 0``); per-level LayerNorms at level 0."""
        self._write_selectors(tf.zeros([self.num_kernels], tf.int32))
        units = [m.variable for g in self.groups for f in g.families for m in f.members if m.is_unit_mask]
        for m in [*self._model_vars.masks, *units]:
            m.assign(tf.ones_like(m))

    # -- reading ----------------------------------------------------------------------------------------
    def sparsity_report(self) -> dict[str, float]:
        """Fraction of zeros of every current mask (eager); structured: of every group's kernel masks."""
        masks = self._model_vars.masks
        if self.granularity == "structured":
            out = {}
            for g in self.groups:
                ms = [m.mask for f in g.families for m in f.members if m.is_kernel]
                zeros = sum(float(tf.reduce_sum(1.0 - m).numpy()) for m in ms)
                out[g.name] = zeros / sum(int(np.prod(m.shape)) for m in ms)
            return out
        return {n: float(1.0 - tf.reduce_mean(m).numpy()) for n, m in zip(self.names, masks, strict=True)}

    def survival_arrays(self) -> dict[str, np.ndarray]:
        """``{name: int8 [I, O]}`` numpy copies of the survival levels (structured: ``{family: int8
        [U]}``)."""
        return {n: v.numpy() for n, v in self.survival.items()}

    def masked_kernel_values(self, config: Mapping[str, int] | Sequence[int]) -> dict[str, np.ndarray]:
        """``{name: kernel * mask_at(level)}`` float32 numpy, for baking zeros into an export. Pure: the
        model's masks are not changed."""
        vec = lv.config_to_vector(config, self.names, self.num_levels) if isinstance(config, Mapping) \
            else np.asarray(config, np.int32).reshape(-1)
        if len(vec) != self.num_kernels:
            raise ValueError(f"masked_kernel_values: {len(vec)} levels for {self.num_kernels} kernels")
        if self.granularity == "structured":
            values = {id(m): v for m, v in self._structured_masks(tf.constant(vec, tf.int32))}
            return {n: (k * values.get(id(m), 1.0)).numpy() for n, k, m in
                    zip(self.kernel_names, self._model_vars.kernels, self._model_vars.masks, strict=True)}
        return {
            n: (k * lv.mask_at(self.survival[n], int(v))).numpy()
            for n, k, v in zip(self.names, self._model_vars.kernels, vec, strict=True)
        }

"""Clean streaming inference module for one device tier: masks baked in, state explicit.

From a Transducer (in memory; a trained one through ``bake_supernet`` of a restored
``omni_tf.supernet.Supernet``) and a tier spec, builds a
``tf.Module`` with three ``tf.function`` signatures (batch 1; D = d_model, P = predictor hidden, V = vocab):

- ``encode(features_chunk [1, chunk_frames + lookahead_frames, 80], cache_<k>...)``
  -> ``{"encoder_frames": [1, chunk_enc, D], "new_cache_<k>": ...}``
- ``predict(token [1, 1] int32, state_<k>...)`` -> ``{"pred_out": [1, P], "new_state_<k>": ...}``
- ``join(encoder_frame [1, D], pred_out [1, P])`` -> ``{"log_probs": [1, V]}``

``<k>`` is the model's state-dict key with non-alphanumerics replaced by ``_`` (``encoder_initial_state`` /
``predictor_initial_state``); every initial state is zeros-shaped, read from the model, and recorded in
``StateSpec`` so the recognizer and manifest need no model. Masks are baked: every prunable kernel is
replaced by ``kernel * mask`` and its mask by ones, so the frozen graph folds to one constant with exact
zeros.
The tier model is a fresh ``build_model`` copy; the caller's model is never modified. With per-level
LayerNorms (``sparsity.per_level_norm``, ``omni_tf/sparsity/level_norms.py``) the copy's plain LayerNorms get
the tier's gamma/beta (each norm at its producer kernel's level), so the file has the layout of a model
without the option and that tier's parameters as constants.

Structured tiers (``survival`` a ``SupernetMasks`` of granularity ``structured``): instead of baking masks,
``slice_model`` builds a smaller dense model with the tier's kept units only (per-layer heads, feed-forward
widths, conv channels, predictor and joiner widths; the attention and conv caches shrink with them) and
copies the kept slices of every weight. It computes what the masked full model computes.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

import omni_tf  # noqa: F401

TierSpec = int | float | Mapping[str, int] | None


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """One flattened state tensor: model dict key, TFLite input/output names, shape, dtype, initial value."""

    key: str
    input_name: str
    output_name: str
    shape: tuple[int, ...]
    dtype: str
    init: np.ndarray = dataclasses.field(repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "input": self.input_name, "output": self.output_name,
                "shape": list(self.shape), "dtype": self.dtype,
                "init_zero": bool(not np.any(self.init))}


def sanitize(key: str) -> str:
    """``encoder/block_0/k`` -> ``encoder_block_0_k`` (TFLite signature names must be identifiers)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", key).strip("_")


def _state_specs(state: Mapping[str, tf.Tensor], prefix: str) -> list[StateSpec]:
    specs = []
    for key in sorted(state):
        value = np.asarray(state[key])
        name = f"{prefix}_{sanitize(key)}"
        specs.append(StateSpec(key, name, f"new_{name}", tuple(value.shape), value.dtype.name, value))
    if len({s.input_name for s in specs}) != len(specs):
        raise ValueError(f"state keys collide after sanitizing: {sorted(state)}")
    return specs


# ---------------------------------------------------------------------------------------------------------
# Tier masks


def kernel_masks_for_tier(model, tier: TierSpec, levels: tuple[float, ...] | None = None,
                          survival: Mapping[str, np.ndarray] | None = None,
                          block: int = 1) -> dict[str, np.ndarray]:
    """Binary masks {kernel_name: float32 [in, out]} for a tier.

    Args:
      model: a Transducer (``prunable_kernels()`` / ``kernel_masks()``).
      tier: None -> the model's current ``kernel_mask`` values (whatever was last applied); an int -> uniform
        level index; a dict -> per-kernel level index (missing kernels: level 0).
      levels: the sparsity set (needed when ``survival`` must be recomputed).
      survival: {kernel_name: int [in, out]} survival levels (from the supernet checkpoint). When absent
        they are recomputed from kernel magnitudes with ``omni_tf.sparsity.levels.survival_levels``, which
        equals the training ranking only if kernels did not move after the masks froze.
      block: 1, 4 or 16 (block size along the input dim) for the recomputation.
    """
    names = [n for n, _ in model.prunable_kernels()]
    if tier is None:
        return {n: np.asarray(m.numpy(), np.float32) for n, m in model.kernel_masks()}
    if isinstance(tier, float) and not float(tier).is_integer():
        raise TypeError(f"tier {tier!r}: pass a level index (int) or a per-kernel dict, not a sparsity")
    config = {n: int(tier) for n in names} if not isinstance(tier, Mapping) else dict(tier)
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise KeyError(f"tier config names unknown kernels: {unknown[:5]} (model has {len(names)} kernels)")
    if survival is None:
        if levels is None:
            raise ValueError("need `levels` (sparsity set) to recompute survival levels")
        from omni_tf.sparsity import levels as levels_lib  # noqa: PLC0415 (optional at import time)

        survival = {n: np.asarray(levels_lib.survival_levels(k, tuple(levels), block))
                    for n, k in model.prunable_kernels()}
    return {n: (np.asarray(survival[n]) >= config.get(n, 0)).astype(np.float32) for n in names}


def clone_with_masks(model, model_config, masks: Mapping[str, np.ndarray]):
    """A fresh ``build_model(model_config)`` with ``model``'s weights; kernels = kernel * mask, masks = 1."""
    from omni_tf.model import build_model  # noqa: PLC0415

    clone = build_model(model_config)
    _ensure_built(clone)
    _ensure_built(model)
    src, dst = list(model.weights), list(clone.weights)
    if len(src) != len(dst):
        raise ValueError(f"weight count mismatch: model {len(src)} vs rebuilt {len(dst)} (config differs?)")
    for s_var, d_var in zip(src, dst, strict=True):
        if tuple(s_var.shape) != tuple(d_var.shape):
            raise ValueError(f"weight {s_var.name} {tuple(s_var.shape)} != rebuilt {d_var.name} "
                             f"{tuple(d_var.shape)}")
        d_var.assign(s_var)
    bake_masks(clone, masks)
    return clone


def slice_model(model, model_config, masks, tier: TierSpec):
    """A fresh, smaller ``build_model`` with only the units ``tier`` keeps, weights sliced from ``model``.

    Args:
      model: the trained Transducer (not modified).
      model_config: its model preset.
      masks: its structured ``SupernetMasks`` (ranked: survival levels from the checkpoint).
      tier: a uniform level index or ``{group_name: level}`` (every group).
    The result's masks are ones (its kernels are the kept units) and ``sliced_from`` records the full
    model's parameter counts for ``sparsity_summary``. Raises ValueError on a bad tier.
    """
    from omni_tf.model import build_model  # noqa: PLC0415
    from omni_tf.sparsity import structured  # noqa: PLC0415

    if tier is None or (isinstance(tier, float) and not float(tier).is_integer()):
        raise ValueError(f"structured tier {tier!r}: pass a level index or a {{group: level}} config")
    groups = masks.groups
    config = dict(tier) if isinstance(tier, Mapping) else {g.name: int(tier) for g in groups}
    kept = structured.kept_units(groups, masks.survival_arrays(), config)
    cfg = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    sliced = build_model(structured.sliced_model_config(cfg, groups, kept))
    _ensure_built(sliced)
    _ensure_built(model)
    structured.copy_sliced_weights(groups, _parameters(model), _parameters(sliced), kept)
    full = sparsity_summary(model)
    sliced.sliced_from = {"prunable_params": full["prunable_params"], "params": full["params"]}
    return sliced


def _parameters(model) -> list:
    """``model.weights`` without masks (kernel masks, a non-prunable embedding's mask, unit masks)."""
    return [v for v in model.weights if v.trainable]


def bake_masks(model, masks: Mapping[str, np.ndarray]) -> None:
    """In place: kernel <- kernel * mask (exact zeros), kernel_mask <- ones."""
    for (name, kernel), (mname, mask_var) in zip(model.prunable_kernels(), model.kernel_masks(), strict=True):
        if name != mname:
            raise ValueError(f"prunable_kernels/kernel_masks order differs: {name} vs {mname}")
        mask = np.asarray(masks[name], np.float32)
        if mask.shape != tuple(kernel.shape):
            raise ValueError(f"mask for {name}: shape {mask.shape} != kernel {tuple(kernel.shape)}")
        kernel.assign(kernel.numpy() * mask)
        mask_var.assign(np.ones_like(mask))


def _block_size(block: int | str) -> int:
    from omni_tf.sparsity.levels import parse_block  # noqa: PLC0415

    return parse_block(block)


def _ensure_built(model) -> None:
    """Runs one streaming step so every variable exists (lazy Keras builds)."""
    if model.built and model.weights:
        return
    enc_state = model.encoder_initial_state(1)
    frames = model.chunk_frames + model.lookahead_frames
    enc, _ = model.encode_chunk(tf.zeros([1, frames, _num_mel(model)]), enc_state)
    pred, _ = model.predictor_step(tf.zeros([1], tf.int32), model.predictor_initial_state(1))
    model.join_step(enc[:, 0], pred)


def _num_mel(model) -> int:
    cfg = getattr(model, "model_config", None)
    if isinstance(cfg, Mapping):
        return int(cfg.get("num_mel_bins", 80))
    return int(getattr(cfg, "num_mel_bins", 80))


def sparsity_summary(model) -> dict[str, Any]:
    """Nonzero / total prunable params, overall sparsity and per-kernel sparsity of the (baked) model; of a
    sliced model (``slice_model``) totals and sparsity are relative to the full model."""
    per, nnz, total = {}, 0, 0
    for name, kernel in model.prunable_kernels():
        k = kernel.numpy()
        z = int(np.count_nonzero(k))
        per[name] = round(1.0 - z / k.size, 4)
        nnz, total = nnz + z, total + k.size
    all_params = int(sum(np.prod(v.shape) for v in model.weights if "mask" not in v.name))
    zeros = total - nnz
    full = getattr(model, "sliced_from", None)
    if full is not None:  # a sliced structured tier: sparsity relative to the full model it came from
        removed = full["prunable_params"] - nnz
        return {"prunable_params": full["prunable_params"], "prunable_nonzero": nnz,
                "prunable_sparsity": round(removed / max(full["prunable_params"], 1), 4),
                "params": full["params"], "nonzero_params": all_params - zeros, "per_kernel_sparsity": per,
                "sliced_params": all_params}
    return {"prunable_params": total, "prunable_nonzero": nnz,
            "prunable_sparsity": round(zeros / max(total, 1), 4), "params": all_params,
            "nonzero_params": all_params - zeros, "per_kernel_sparsity": per}


# ---------------------------------------------------------------------------------------------------------
# The module


class _Untracked:
    """Keeps an object out of tf.Module's dependency tracking."""

    def __init__(self, value):
        self.value = value


class StreamingInferenceModule(tf.Module):
    """encode / predict / join as batch-1 ``tf.function``s with flat, named state (see module docstring)."""

    def __init__(self, model, name: str = "streaming_transducer"):
        super().__init__(name=name)
        _ensure_built(model)
        # SavedModel export must not serialize the Keras model itself (it has no traced call): track its
        # variables only and keep the model behind a plain holder.
        self._holder = _Untracked(model)
        self.model_variables = list(model.variables)
        self.num_mel_bins = _num_mel(model)
        self.chunk_frames = int(model.chunk_frames)
        self.lookahead_frames = int(model.lookahead_frames)
        self.chunk_enc = int(model.chunk_enc)
        self.encoder_state = _state_specs(model.encoder_initial_state(1), "cache")
        self.predictor_state = _state_specs(model.predictor_initial_state(1), "state")
        enc, _ = model.encode_chunk(tf.zeros([1, self.input_frames, self.num_mel_bins]),
                                    model.encoder_initial_state(1))
        pred, _ = model.predictor_step(tf.zeros([1], tf.int32), model.predictor_initial_state(1))
        self.encoder_dim, self.pred_dim = int(enc.shape[-1]), int(pred.shape[-1])
        self.vocab_size = int(model.join_step(enc[:, 0], pred).shape[-1])

        def spec(s: StateSpec) -> tf.TensorSpec:
            return tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.input_name)

        self.encode = tf.function(self._encode, input_signature=[
            tf.TensorSpec([1, self.input_frames, self.num_mel_bins], tf.float32, name="features_chunk"),
            *[spec(s) for s in self.encoder_state]])
        self.predict = tf.function(self._predict, input_signature=[
            tf.TensorSpec([1, 1], tf.int32, name="token"), *[spec(s) for s in self.predictor_state]])
        self.join = tf.function(self._join, input_signature=[
            tf.TensorSpec([1, self.encoder_dim], tf.float32, name="encoder_frame"),
            tf.TensorSpec([1, self.pred_dim], tf.float32, name="pred_out")])

    @property
    def model(self):
        return self._holder.value

    @property
    def input_frames(self) -> int:
        return self.chunk_frames + self.lookahead_frames

    def _encode(self, features_chunk, *caches):
        state = {s.key: c for s, c in zip(self.encoder_state, caches, strict=True)}
        enc, new = self.model.encode_chunk(features_chunk, state)
        out = {"encoder_frames": tf.identity(enc, name="encoder_frames")}
        out.update({s.output_name: new[s.key] for s in self.encoder_state})
        return out

    def _predict(self, token, *states):
        state = {s.key: v for s, v in zip(self.predictor_state, states, strict=True)}
        pred, new = self.model.predictor_step(tf.reshape(token, [1]), state)
        out = {"pred_out": pred}
        out.update({s.output_name: new[s.key] for s in self.predictor_state})
        return out

    def _join(self, encoder_frame, pred_out):
        return {"log_probs": self.model.join_step(encoder_frame, pred_out)}

    def signatures(self) -> dict[str, Any]:
        """{"encode": ConcreteFunction, "predict": ..., "join": ...} for SavedModel / the converter."""
        return {name: getattr(self, name).get_concrete_function() for name in ("encode", "predict", "join")}

    def initial_state(self, which: str) -> dict[str, np.ndarray]:
        """{input_name: initial value} for ``"encode"`` or ``"predict"``."""
        specs = self.encoder_state if which == "encode" else self.predictor_state
        return {s.input_name: s.init.copy() for s in specs}

    def describe(self) -> dict[str, Any]:
        """Signature layout for the manifest (names, shapes) and the frame bookkeeping."""
        return {"chunk_frames": self.chunk_frames, "lookahead_frames": self.lookahead_frames,
                "chunk_enc": self.chunk_enc, "num_mel_bins": self.num_mel_bins,
                "encoder_dim": self.encoder_dim, "pred_dim": self.pred_dim, "vocab_size": self.vocab_size,
                "encoder_state": [s.as_json() for s in self.encoder_state],
                "predictor_state": [s.as_json() for s in self.predictor_state]}


@dataclasses.dataclass(frozen=True)
class BakedTier:
    """What ``bundle.export_tier`` exports: the tier module plus what its manifest records.

    ``tier``: None (the masks applied when baked), a uniform level index, or ``{kernel_name: level}``;
    ``levels``: the level set (None if unknown); ``block``: the ranking block (e.g. "1x4").
    """

    module: StreamingInferenceModule
    model_config: Mapping[str, Any]
    tier: TierSpec
    levels: tuple[float, ...] | None
    block: str


def bake(model, model_config, tier: TierSpec = None, levels: tuple[float, ...] | None = None,
         survival: Mapping[str, np.ndarray] | None = None, block: int | str = 1,
         clone: bool = True, norms: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> BakedTier:
    """``build_inference_module`` plus the facts a manifest needs (see ``BakedTier``)."""
    module = build_inference_module(model, model_config, tier, levels, survival, block, clone, norms)
    return BakedTier(module, dict(model_config), tier, tuple(levels) if levels else None, str(block))


def bake_supernet(supernet, tier) -> BakedTier:
    """The tier module of a (restored) ``omni_tf.supernet.Supernet``.

    ``tier``: a level index, a ``TierSpec`` (level, or sparsity of the level set) or ``{kernel: level}``,
    validated by ``Supernet.tier``; the survival levels are the supernet's (as trained, not recomputed).
    A mode-dense supernet has one tier: its model as is.
    """
    if supernet.masks is None:
        supernet.tier(tier)  # validates: level 0 only
        return bake(supernet.model, supernet.model_config, None, block=supernet.settings.block)
    config = supernet.tier(tier)
    norms = supernet.level_norms.params_at(config) if supernet.level_norms is not None else None
    if not isinstance(tier, Mapping):  # uniform: recorded as a level index in the manifest
        config = next(iter(config.values()))
    structured = supernet.masks.granularity == "structured"  # sliced: the masks object, not its arrays
    return bake(supernet.model, supernet.model_config, config, supernet.levels,
                supernet.masks if structured else supernet.masks.survival_arrays(), supernet.settings.block,
                norms=norms)


def build_inference_module(model, model_config, tier: TierSpec = None,
                           levels: tuple[float, ...] | None = None,
                           survival: Mapping[str, np.ndarray] | None = None, block: int | str = 1,
                           clone: bool = True,
                           norms: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
                           ) -> StreamingInferenceModule:
    """Tier module from a Transducer; ``tier`` as in ``kernel_masks_for_tier``.

    ``norms``: the tier's per-level LayerNorm parameters (``LevelNorms.params_at``, with
    ``sparsity.per_level_norm``), written into the clone's plain LayerNorms so the file holds that tier's
    gamma/beta as constants; needs ``clone``. Raises ValueError for ``norms`` without ``clone``, or for a
    model with per-level LayerNorms attached and no ``norms``.

    ``survival`` may also be a ``SupernetMasks`` (its ``survival_arrays()`` are used); one of granularity
    ``structured`` makes a sliced tier (``slice_model``; ``tier`` is a level index or ``{group: level}``).
    To export a trained checkpoint, restore it with ``omni_tf.supernet.Supernet.restore`` and use
    ``bake_supernet``.
    """
    if getattr(survival, "granularity", "weights") == "structured":
        return StreamingInferenceModule(slice_model(model, model_config, survival, tier))
    if survival is not None and hasattr(survival, "survival_arrays"):
        survival = survival.survival_arrays()
    _ensure_built(model)
    masks = kernel_masks_for_tier(model, tier, levels=levels, survival=survival, block=_block_size(block))
    if norms and not clone:
        raise ValueError("per-level LayerNorm parameters are written into a clone: pass clone=True")
    if not norms and any(layer.num_levels for _, layer, _ in model.level_norms()):
        # the clone's LayerNorms would hold level 0's gamma/beta whatever the tier
        raise ValueError("the model has per-level LayerNorms (sparsity.per_level_norm): pass the tier's "
                         "norms (LevelNorms.params_at), or use bake_supernet")
    if clone:
        model = clone_with_masks(model, model_config, masks)
        if norms:
            from omni_tf.sparsity.level_norms import assign_params  # noqa: PLC0415

            assign_params(model, norms)
    else:
        bake_masks(model, masks)
    return StreamingInferenceModule(model)

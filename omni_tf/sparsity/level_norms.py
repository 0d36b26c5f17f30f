"""Per-level LayerNorm parameters of the weight-mask supernet (``sparsity.per_level_norm``).

Dimension key: K levels, D a LayerNorm's dim, N prunable kernels.

Why and source: a sparse subnet's features have other statistics than the dense one's; slimmable networks
(Yu et al., ICLR 2019, Sec. 3.2, "switchable batch normalization") give every width its own normalisation
parameters for that reason. LayerNorm keeps no running statistics, so the transformer analogue is a private
gamma/beta per supernet level for every LayerNorm whose input comes from masked computation.

Which level a LayerNorm uses (the rule; ``Transducer.level_norms`` lists each norm with its kernel): the
level of the masked kernel that *produced* its input, the last prunable kernel before it on the path:

| LayerNorm | producer kernel |
|---|---|
| ``encoder/block_i/mhsa_norm`` | ``encoder/block_{i-1}/ffn/dense_out`` (block 0: ``subsampling/proj``) |
| ``encoder/block_i/conv_norm`` | ``encoder/block_i/mhsa/output`` |
| ``encoder/block_i/conv/norm`` | ``encoder/block_i/conv/pointwise_in`` |
| ``encoder/block_i/ffn_norm`` | ``encoder/block_i/conv/pointwise_out`` (no pointwise conv: ``mhsa/output``) |
| ``encoder/final_norm`` | ``encoder/block_{L-1}/ffn/dense_out`` |

With a uniform config every norm is at that level; with a per-layer (searched) config each norm follows its
producer. ``SupernetMasks`` writes the selectors in the same call that writes the masks (``apply_levels``,
``apply``, ``apply_uniform``; ``apply_dense`` selects level 0), so the norms follow the masks in training,
evaluation, search and export.

State: for each norm, ``gamma_rest`` / ``beta_rest`` ``[K-1, D]`` (levels 1..K-1, trainable; level 0 is the
layer's own gamma/beta, so the dense subnet's parameters are the model's) and ``selector [K]`` (one-hot,
float32, not trainable). They live in this module (checkpoint key ``level_norms``), not in the model: the
model's variables, shipped bundles and exported tiers are those of the model without the option. Added
parameters: ``(K-1) x 2 x D`` per LayerNorm (the table is ``K x 2 x D``, level 0 being the model's own).
At creation, and after restoring weights that have no per-level parameters (a checkpoint written without
the option, a shipped bundle: ``copy_from_shared``), every level holds the layer's gamma/beta, so the
model computes exactly what it computes without the option at every level. Training copies them once more
when the sparse levels first train (``start_levels``: after the dense warm-up, in which only level 0 learns).
Decoupled weight decay (``training.weight_decay``) shrinks every row, trained in a step or not.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf


class LevelNorms(tf.Module):
    """The per-level gamma/beta of every ``LevelLayerNorm`` of ``model.level_norms()``.

    Args:
      model: a built Transducer (``level_norms()`` -> ``[(name, LevelLayerNorm, producer kernel name)]``).
      num_levels: K, the supernet's level count (>= 1).
    Create it under the strategy scope the model was built in (training). Raises ValueError for K < 1 or a
    model without LayerNorms to attach.
    """

    def __init__(self, model: Any, num_levels: int, name: str = "level_norms"):
        super().__init__(name=name)
        k = int(num_levels)
        if k < 1:
            raise ValueError(f"LevelNorms: num_levels must be >= 1, got {num_levels}")
        entries = list(model.level_norms())
        if not entries:
            raise ValueError("LevelNorms: model.level_norms() is empty")
        self.num_levels = k
        self.names: tuple[str, ...] = tuple(n for n, _, _ in entries)
        self.producers: tuple[str, ...] = tuple(p for _, _, p in entries)
        self._layers = _Layers([layer for _, layer, _ in entries])
        self.gamma_rest, self.beta_rest, self.selectors = [], [], []
        self.started = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="started",
                                   aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        onehot0 = tf.one_hot(0, k)
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
        for i, layer in enumerate(self._layers.items):
            g = tf.Variable(_tile(layer.gamma, k - 1), name=f"gamma_rest_{i}")
            b = tf.Variable(_tile(layer.beta, k - 1), name=f"beta_rest_{i}")
            s = tf.Variable(onehot0, trainable=False, name=f"selector_{i}", aggregation=agg)
            layer.attach_levels(g, b, s)
            self.gamma_rest.append(g)
            self.beta_rest.append(b)
            self.selectors.append(s)

    @property
    def layers(self) -> list[Any]:
        return list(self._layers.items)

    def variables_to_train(self) -> list[tf.Variable]:
        """The added trainable variables (``gamma_rest``, ``beta_rest`` of every norm, norm order)."""
        return [v for pair in zip(self.gamma_rest, self.beta_rest, strict=True) for v in pair]

    def selector_pairs(self) -> list[tuple[str, tf.Variable]]:
        """``[(producer kernel name, selector [K])]`` for ``SupernetMasks(norm_selectors=...)``."""
        return list(zip(self.producers, self.selectors, strict=True))

    def copy_from_shared(self) -> None:
        """Every level's gamma/beta <- the layer's own (level 0): after loading weights without levels."""
        for layer, g, b in zip(self._layers.items, self.gamma_rest, self.beta_rest, strict=True):
            g.assign(_tile(layer.gamma, self.num_levels - 1))
            b.assign(_tile(layer.beta, self.num_levels - 1))

    def start_levels(self) -> bool:
        """Once per run (``started``, checkpointed): every level's gamma/beta <- the layer's own, when the
        sparse levels first train. During a dense warm-up only level 0 learns, so the other levels start
        from the warmed-up dense parameters, not from their initial values. True when it copied now."""
        if int(self.started.numpy()):
            return False
        self.copy_from_shared()
        self.started.assign(1)
        return True

    def params_at(self, levels: Mapping[str, int] | int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{norm name: (gamma [D], beta [D])}`` of a tier: a uniform level index or ``{kernel: level}``
        (a kernel missing from it: level 0). Pure: the selectors are not changed."""
        out = {}
        for name, producer, layer, g, b in zip(self.names, self.producers, self._layers.items,
                                               self.gamma_rest, self.beta_rest, strict=True):
            k = int(levels) if not isinstance(levels, Mapping) else int(levels.get(producer, 0))
            if not 0 <= k < self.num_levels:
                raise ValueError(f"LevelNorms: level {k} of {name} outside [0, {self.num_levels})")
            gamma = layer.gamma.numpy() if k == 0 else g.numpy()[k - 1]
            beta = layer.beta.numpy() if k == 0 else b.numpy()[k - 1]
            out[name] = (np.array(gamma, np.float32), np.array(beta, np.float32))
        return out


def assign_params(model: Any, params: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Writes ``params`` (``LevelNorms.params_at``) into the own gamma/beta of ``model``'s LayerNorms of
    those names (a plain model, e.g. a tier's export clone). Raises KeyError naming an unknown norm."""
    layers = {n: layer for n, layer, _ in model.level_norms()}
    unknown = sorted(set(params) - set(layers))
    if unknown:
        raise KeyError(f"LayerNorms {unknown[:3]} are not in the model ({len(layers)} norms)")
    for name, (gamma, beta) in params.items():
        layers[name].gamma.assign(gamma)
        layers[name].beta.assign(beta)


def _tile(v: tf.Variable, n: int) -> tf.Tensor:
    return tf.tile(tf.convert_to_tensor(v)[None], [n, 1])


class _Layers:
    """Keeps the model's layers out of tf.Module tracking (the model is checkpointed on its own)."""

    def __init__(self, items: Sequence[Any]):
        self.items = list(items)

"""LevelLayerNorm: Keras's LayerNormalization that can take its gamma/beta from a per-level table.

Dimension key: K supernet levels, D normalised dim.

Without ``attach_levels`` the layer is ``keras.layers.LayerNormalization`` unchanged (same variables, same
checkpoint keys, same arithmetic). ``attach_levels(gamma_rest [K-1, D], beta_rest [K-1, D], selector [K])``
(``omni_tf.sparsity.level_norms.LevelNorms`` does it for ``sparsity.per_level_norm``) makes the layer use
row ``k`` of the table ``[gamma; gamma_rest]`` / ``[beta; beta_rest]`` where ``selector`` is the one-hot of
``k``: level 0 is the layer's own gamma/beta, levels 1..K-1 the attached rows. The selection is
``selector @ table``, exact for a 0/1 one-hot, so level k's output is bit-identical to a plain LayerNorm
holding row k; the attached variables are not tracked by the layer (they live in the ``LevelNorms`` module
and its checkpoint key), so the model's variables are the same with and without them.

Source: switchable batch normalization of slimmable networks (Yu et al., ICLR 2019, Sec. 3.2): each width
of one network keeps private normalisation parameters because its features' statistics differ; a
LayerNorm has no running statistics, so only the affine gamma/beta are private here.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)


class _Attached:
    """Holds the attached variables without Keras / tf.Module tracking."""

    def __init__(self, gamma_rest: tf.Variable, beta_rest: tf.Variable, selector: tf.Variable):
        self.gamma_rest, self.beta_rest, self.selector = gamma_rest, beta_rest, selector


class LevelLayerNorm(keras.layers.LayerNormalization):
    """``[..., D] -> [..., D]`` LayerNorm over the last axis; per-level gamma/beta once ``attach_levels``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._attached: _Attached | None = None

    @property
    def num_levels(self) -> int:
        """K of the attached table; 0 when the layer is a plain LayerNorm."""
        return 0 if self._attached is None else int(self._attached.selector.shape[0])

    def attach_levels(self, gamma_rest: tf.Variable, beta_rest: tf.Variable, selector: tf.Variable) -> None:
        """Use ``[gamma; gamma_rest]`` / ``[beta; beta_rest]`` ``[K, D]`` at the level ``selector [K]``
        (one-hot, float32) picks. Raises ValueError on shapes that do not fit the built layer."""
        d = int(self.gamma.shape[-1])
        k = int(selector.shape[0])
        for name, v in (("gamma_rest", gamma_rest), ("beta_rest", beta_rest)):
            if tuple(v.shape) != (k - 1, d):
                raise ValueError(f"{self.name}: {name} {tuple(v.shape)} should be {(k - 1, d)}")
        self._attached = _Attached(gamma_rest, beta_rest, selector)

    def level_params(self) -> tuple[tf.Tensor, tf.Tensor]:
        """``(gamma [D], beta [D])`` in use: the selected level's, or the layer's own when not attached."""
        a = self._attached
        if a is None:
            return tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta)
        gamma = tf.concat([self.gamma[None], a.gamma_rest], axis=0)
        beta = tf.concat([self.beta[None], a.beta_rest], axis=0)
        return tf.linalg.matvec(gamma, a.selector, transpose_a=True), \
            tf.linalg.matvec(beta, a.selector, transpose_a=True)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        if self._attached is None:
            return super().call(inputs)
        if self._fused_can_be_used(inputs.shape.rank) or self.axis != [inputs.shape.rank - 1]:
            raise ValueError(f"{self.name}: per-level gamma/beta need epsilon < 1.001e-5 over the last axis")
        # Keras's unfused path (epsilon 1e-5 is below its fused threshold) with the selected gamma/beta
        x = tf.cast(inputs, self.compute_dtype)
        x32 = tf.cast(x, tf.float32) if x.dtype in (tf.float16, tf.bfloat16) else x
        mean, variance = tf.nn.moments(x32, self.axis, keepdims=True)
        gamma, beta = self.level_params()
        y = tf.nn.batch_normalization(x32, mean, variance, offset=beta, scale=gamma,
                                      variance_epsilon=self.epsilon)
        y = tf.cast(y, x.dtype)
        y.set_shape(x.shape)
        return y

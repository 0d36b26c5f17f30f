"""MaskedDense: the one prunable weight mechanism of omni_tf.

Every prunable weight matrix is a trainable ``kernel [in, out]`` next to a non-trainable float32
``kernel_mask`` of the same shape (initialised to ones). The forward pass uses ``kernel * kernel_mask``; the
sparsity code (``omni_tf.sparsity``) writes the masks, layers never compute them.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)


def add_kernel_and_mask(
    layer: keras.layers.Layer,
    shape: tuple[int, int],
    initializer: str | keras.initializers.Initializer = "glorot_uniform",
    name: str = "kernel",
) -> tuple[tf.Variable, tf.Variable]:
    """Adds a trainable kernel and its non-trainable ``<name>_mask`` (ones) to ``layer``."""
    kernel = layer.add_weight(name, shape=shape, initializer=initializer, trainable=True, dtype=tf.float32)
    mask = layer.add_weight(
        f"{name}_mask",
        shape=shape,
        initializer="ones",
        trainable=False,
        dtype=tf.float32,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )
    return kernel, mask


def build_child(layer: keras.layers.Layer, input_shape) -> None:
    """Builds a sublayer eagerly under its own name scope (variables named like ``parent/child/kernel``)."""
    if not layer.built:
        with tf.name_scope(layer.name):
            layer.build(input_shape)


def matmul_last(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """``x [..., in] @ kernel [in, out] -> [..., out]`` via a 2-D matmul (TFLite FULLY_CONNECTED friendly)."""
    if x.shape.rank == 2:
        return tf.matmul(x, kernel)
    lead = tf.shape(x)[:-1]
    y = tf.matmul(tf.reshape(x, [-1, kernel.shape[0]]), kernel)
    y = tf.reshape(y, tf.concat([lead, [kernel.shape[1]]], axis=0))
    if x.shape.rank is not None:
        y.set_shape(x.shape[:-1].concatenate([kernel.shape[1]]))
    return y


class MaskedDense(keras.layers.Layer):
    """Dense layer with a pruning mask: ``y = x @ (kernel * kernel_mask) + bias``.

    Args:
      units: output dim.
      use_bias: add a (never masked) bias.
      activation: optional Keras activation name.
      kernel_initializer: initializer of ``kernel [in, units]``.

    Shapes: ``x [..., in] -> y [..., units]``.
    """

    def __init__(
        self,
        units: int,
        use_bias: bool = True,
        activation: str | None = None,
        kernel_initializer: str = "glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if units <= 0:
            raise ValueError(f"MaskedDense units must be positive, got {units}")
        self.units = int(units)
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self._activation_name = activation
        self.kernel_initializer = kernel_initializer

    def build(self, input_shape):
        in_dim = int(input_shape[-1])
        self.kernel, self.kernel_mask = add_kernel_and_mask(
            self, (in_dim, self.units), keras.initializers.get(self.kernel_initializer)
        )
        self.bias = (
            self.add_weight("bias", shape=(self.units,), initializer="zeros", trainable=True)
            if self.use_bias
            else None
        )
        super().build(input_shape)

    def masked_kernel(self) -> tf.Tensor:
        return self.kernel * self.kernel_mask

    def call(self, x: tf.Tensor) -> tf.Tensor:
        y = matmul_last(x, self.masked_kernel())
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y) if self._activation_name else y

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units,
            use_bias=self.use_bias,
            activation=self._activation_name,
            kernel_initializer=self.kernel_initializer,
        )
        return config

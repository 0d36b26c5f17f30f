"""One streaming encoder block: pre-LN chunked MHSA, optional causal conv module, pre-LN FFN.

Dimension key: B batch, T time (encoder frames), C chunk size, D model dim, F ff dim, K conv kernel.

``x -> x + MHSA(LN(x)) -> x + Conv(LN(x)) -> x + FFN(LN(x))``. The conv module (pointwise D->2D, GLU, causal
depthwise conv K, LayerNorm, swish, pointwise D->D) is the block's positional signal: attention has no
position encoding, and the causal conv makes frames order-aware in both the training and the streaming path.
LayerNorm (not BatchNorm) keeps the conv module free of batch statistics, so streaming equals training.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from omni_tf.layers.attention import ChunkedMultiHeadAttention
from omni_tf.layers.dropout import SeededDropout
from omni_tf.layers.masked_dense import MaskedDense, build_child


def residual_add(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """``x + y`` named ``residual/...`` (TFLite int8 export can keep the residual stream float by name)."""
    with tf.name_scope("residual"):
        return tf.add(x, y)


class FeedForward(keras.layers.Layer):
    """``[B,T,D] -> [B,T,D]``: MaskedDense(D->F), swish, dropout, MaskedDense(F->D)."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.ff_dim, self.dropout = int(d_model), int(ff_dim), float(dropout)
        self.dense_in = MaskedDense(self.ff_dim, activation="swish", name="dense_in")
        self.dense_out = MaskedDense(self.d_model, name="dense_out")
        self.drop = SeededDropout(self.dropout)

    def build(self, input_shape):
        build_child(self.dense_in, (None, None, self.d_model))
        build_child(self.dense_out, (None, None, self.ff_dim))
        super().build(input_shape)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.dense_out(self.drop(self.dense_in(x), training=training))

    def named_kernels(self, prefix: str) -> list[tuple[str, MaskedDense]]:
        return [(f"{prefix}/dense_in", self.dense_in), (f"{prefix}/dense_out", self.dense_out)]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(d_model=self.d_model, ff_dim=self.ff_dim, dropout=self.dropout)
        return config


class CausalConvModule(keras.layers.Layer):
    """Causal depthwise conv module. ``call(x [B,T,D])``; ``stream(x [B,C,D], {"conv": [B,K-1,D]})``.

    ``pointwise=False`` is the light variant (no pointwise/GLU/norm: only the causal depthwise conv)
    used by the paper preset to keep the Emformer-scale parameter budget while giving positional information.
    The state holds the last ``K-1`` GLU outputs (zeros at the utterance start, matching the training path's
    left zero padding).
    """

    def __init__(self, d_model: int, kernel_size: int, pointwise: bool = True, **kwargs):
        super().__init__(**kwargs)
        if kernel_size < 1:
            raise ValueError(f"CausalConvModule kernel_size must be >= 1, got {kernel_size}")
        self.d_model, self.kernel_size, self.pointwise = int(d_model), int(kernel_size), bool(pointwise)
        if self.pointwise:
            self.pointwise_in = MaskedDense(2 * self.d_model, name="pointwise_in")
            self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
            self.pointwise_out = MaskedDense(self.d_model, name="pointwise_out")

    def build(self, input_shape):
        if self.pointwise:
            build_child(self.pointwise_in, (None, None, self.d_model))
            build_child(self.norm, (None, None, self.d_model))
            build_child(self.pointwise_out, (None, None, self.d_model))
        self.depthwise = self.add_weight(
            "depthwise",
            shape=(1, self.kernel_size, self.d_model, 1),
            initializer="glorot_uniform",
            trainable=True,
        )
        super().build(input_shape)

    def _glu(self, x: tf.Tensor) -> tf.Tensor:
        if not self.pointwise:
            return x
        a, g = tf.split(self.pointwise_in(x), 2, axis=-1)
        return a * tf.sigmoid(g)

    def _after_glu(self, padded: tf.Tensor) -> tf.Tensor:
        """padded [B, K-1+T, D] (left context first) -> [B, T, D]."""
        # expand_dims/squeeze become RESHAPEs in TFLite; indexing ([:, None], [:, 0]) became STRIDED_SLICEs
        # with new/shrink-axis masks, which XNNPACK does not delegate (one delegate partition per block)
        y = tf.nn.depthwise_conv2d(
            tf.expand_dims(padded, 1), self.depthwise, strides=[1, 1, 1, 1], padding="VALID"
        )
        y = tf.squeeze(y, axis=1)
        return self.pointwise_out(tf.nn.swish(self.norm(y))) if self.pointwise else y

    def call(self, x: tf.Tensor) -> tf.Tensor:
        h = self._glu(x)
        return self._after_glu(tf.pad(h, [[0, 0], [self.kernel_size - 1, 0], [0, 0]]))

    def initial_state(self, batch: int) -> dict[str, tf.Tensor]:
        return {"conv": tf.zeros([batch, self.kernel_size - 1, self.d_model])}

    def stream(self, x: tf.Tensor, state: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        padded = tf.concat([state["conv"], self._glu(x)], axis=1)
        new_conv = padded[:, tf.shape(padded)[1] - (self.kernel_size - 1) :]
        new_conv.set_shape([None, self.kernel_size - 1, self.d_model])
        return self._after_glu(padded), {"conv": new_conv}

    def named_kernels(self, prefix: str) -> list[tuple[str, MaskedDense]]:
        if not self.pointwise:
            return []
        return [
            (f"{prefix}/pointwise_in", self.pointwise_in),
            (f"{prefix}/pointwise_out", self.pointwise_out),
        ]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(d_model=self.d_model, kernel_size=self.kernel_size, pointwise=self.pointwise)
        return config


class TransformerBlock(keras.layers.Layer):
    """Pre-LN streaming block. ``call(x [B,T,D]) -> [B,T,D]``; ``stream(x [B,C,D], state) -> (y, state)``.

    State: ``{"key", "value", "valid"}`` from the attention plus ``{"conv"}`` when ``conv_kernel > 0``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ff_dim: int,
        chunk_size: int,
        left_chunks: int,
        conv_kernel: int = 15,
        conv_pointwise: bool = True,
        dropout: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.ff_dim = int(d_model), int(num_heads), int(ff_dim)
        self.chunk_size, self.left_chunks = int(chunk_size), int(left_chunks)
        self.conv_kernel, self.dropout = int(conv_kernel), float(dropout)
        self.mhsa_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="mhsa_norm")
        self.mhsa = ChunkedMultiHeadAttention(
            d_model, num_heads, chunk_size, left_chunks, dropout, name="mhsa"
        )
        self.conv_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="conv_norm")
        self.conv_pointwise = bool(conv_pointwise)
        self.conv = (
            CausalConvModule(d_model, conv_kernel, conv_pointwise, name="conv") if conv_kernel > 0 else None
        )
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="ffn_norm")
        self.ffn = FeedForward(d_model, ff_dim, dropout, name="ffn")
        self.drop = SeededDropout(self.dropout)

    def build(self, input_shape):
        shape = (None, None, self.d_model)
        for layer in (self.mhsa_norm, self.mhsa, self.conv_norm, self.ffn_norm, self.ffn):
            build_child(layer, shape)
        if self.conv is not None:
            build_child(self.conv, shape)
        super().build(input_shape)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        x = x + self.drop(self.mhsa(self.mhsa_norm(x), training=training), training=training)
        if self.conv is not None:
            x = x + self.drop(self.conv(self.conv_norm(x)), training=training)
        return x + self.drop(self.ffn(self.ffn_norm(x), training=training), training=training)

    def initial_state(self, batch: int) -> dict[str, tf.Tensor]:
        state = self.mhsa.initial_state(batch)
        if self.conv is not None:
            state.update(self.conv.initial_state(batch))
        return state

    def stream(self, x: tf.Tensor, state: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        y, new_state = self.mhsa.stream(self.mhsa_norm(x), {k: state[k] for k in ("key", "value", "valid")})
        x = residual_add(x, y)
        if self.conv is not None:
            y, conv_state = self.conv.stream(self.conv_norm(x), {"conv": state["conv"]})
            x = residual_add(x, y)
            new_state.update(conv_state)
        return residual_add(x, self.ffn(self.ffn_norm(x))), new_state

    def named_kernels(self, prefix: str) -> list[tuple[str, MaskedDense]]:
        kernels = self.mhsa.named_kernels(f"{prefix}/mhsa")
        if self.conv is not None:
            kernels += self.conv.named_kernels(f"{prefix}/conv")
        return kernels + self.ffn.named_kernels(f"{prefix}/ffn")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            d_model=self.d_model,
            num_heads=self.num_heads,
            ff_dim=self.ff_dim,
            chunk_size=self.chunk_size,
            left_chunks=self.left_chunks,
            conv_kernel=self.conv_kernel,
            conv_pointwise=self.conv_pointwise,
            dropout=self.dropout,
        )
        return config

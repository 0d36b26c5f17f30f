"""Frame-stacking 4x subsampling with input lookahead.

Encoder frame ``t`` stacks feature frames ``[f*t, f*t + f + lookahead)`` (``f`` = factor) and projects them
to ``d_model`` with a MaskedDense. The lookahead of the whole encoder lives here: attention downstream is
strictly chunk-causal, so an encoder chunk depends only on frames up to the chunk end + ``lookahead_frames``.

The same ``call`` serves training and streaming: it maps ``T = f*T' + lookahead_frames`` feature frames to
``T'`` encoder frames without any state, because the streaming caller re-feeds the lookahead frames with the
next chunk (see ``omni_tf.model.Transducer.encode_chunk``).
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from omni_tf.layers.dropout import SeededDropout
from omni_tf.layers.masked_dense import MaskedDense, build_child


def stack_frames(x: tf.Tensor, factor: int, window: int) -> tf.Tensor:
    """Windows of ``window`` frames every ``factor`` frames.

    Args:
      x: ``[B, T, F]`` with ``T = factor * T' + (window - factor)``.
    Returns:
      ``[B, T', window * F]``; row t is frames ``[factor*t, factor*t + window)`` concatenated in time order.
    Only strided slices, reshapes and one concat (TFLite builtins).
    """
    feat = x.shape[-1]
    num_out = (tf.shape(x)[1] - (window - factor)) // factor
    num_pieces = math.ceil(window / factor)
    extra = factor * (num_pieces - 1) - (window - factor)  # frames only the sliced-off tail would read
    if extra:
        x = tf.pad(x, [[0, 0], [0, extra], [0, 0]])
    pieces = []
    for j in range(num_pieces):
        part = x[:, factor * j : factor * j + factor * num_out]
        pieces.append(tf.reshape(part, [tf.shape(x)[0], num_out, factor * feat]))
    stacked = tf.concat(pieces, axis=-1) if len(pieces) > 1 else pieces[0]
    return stacked[..., : window * feat]


class StackingSubsampling(keras.layers.Layer):
    """Stacks ``factor + lookahead_frames`` feature frames every ``factor`` frames, projects to ``d_model``.

    Shapes: ``features [B, factor*T' + lookahead_frames, F] -> [B, T', d_model]``.
    """

    def __init__(
        self, d_model: int, factor: int = 4, lookahead_frames: int = 4, dropout: float = 0.0, **kwargs
    ):
        super().__init__(**kwargs)
        if factor < 1 or lookahead_frames < 0:
            raise ValueError(f"bad subsampling factor={factor} / lookahead_frames={lookahead_frames}")
        self.d_model = int(d_model)
        self.factor = int(factor)
        self.lookahead_frames = int(lookahead_frames)
        self.dropout = float(dropout)
        self.window = self.factor + self.lookahead_frames
        self.proj = MaskedDense(self.d_model, name="proj")
        self.drop = SeededDropout(self.dropout)

    def build(self, input_shape):
        build_child(self.proj, (None, None, self.window * int(input_shape[-1])))
        super().build(input_shape)

    def call(self, features: tf.Tensor, training: bool = False) -> tf.Tensor:
        stacked = stack_frames(features, self.factor, self.window)
        return self.drop(self.proj(stacked), training=training)

    def named_kernels(self, prefix: str) -> list[tuple[str, MaskedDense]]:
        return [(f"{prefix}/proj", self.proj)]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            d_model=self.d_model,
            factor=self.factor,
            lookahead_frames=self.lookahead_frames,
            dropout=self.dropout,
        )
        return config

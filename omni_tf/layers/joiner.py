"""Transducer joiner: ``Dense_V(tanh(enc_proj(enc) + pred_proj(pred)))``, all MaskedDense.

Dimension key: B batch, T' encoder frames, U+1 predictor steps, D encoder dim, P predictor dim, J joint dim,
V vocab. The projections run before broadcasting (on [B,T',D] and [B,U+1,P]), so the [B,T',U+1,J] tensor
is touched only by one add, one tanh and one matmul - the memory hot spot of RNN-T training.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from omni_tf.layers.masked_dense import MaskedDense, build_child
from omni_tf.sparsity.structured import Family, Member


class Joiner(keras.layers.Layer):
    """``call(enc [..., D], pred [..., P]) -> logits [..., V]`` (inputs broadcast against each other,
    e.g. enc [B,T',1,D] with pred [B,1,U+1,P], or enc [B,D] with pred [B,P])."""

    def __init__(self, enc_dim: int, pred_dim: int, joint_dim: int, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.enc_dim, self.pred_dim = int(enc_dim), int(pred_dim)
        self.joint_dim, self.vocab_size = int(joint_dim), int(vocab_size)
        self.enc_proj = MaskedDense(self.joint_dim, name="enc_proj")
        self.pred_proj = MaskedDense(self.joint_dim, use_bias=False, name="pred_proj")
        self.output_dense = MaskedDense(self.vocab_size, name="output")

    def build(self, input_shape=None):
        build_child(self.enc_proj, (None, self.enc_dim))
        build_child(self.pred_proj, (None, self.pred_dim))
        build_child(self.output_dense, (None, self.joint_dim))
        super().build(input_shape)

    def call(self, enc: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
        enc_proj, pred_proj = self.enc_proj(enc), self.pred_proj(pred)
        with tf.name_scope("joint_activation"):  # named: int8 export may keep it float
            hidden = tf.tanh(enc_proj + pred_proj)
        return self.output_dense(hidden)

    def named_kernels(self, prefix: str) -> list[tuple[str, MaskedDense]]:
        return [
            (f"{prefix}/enc_proj", self.enc_proj),
            (f"{prefix}/pred_proj", self.pred_proj),
            (f"{prefix}/output", self.output_dense),
        ]

    def unit_family(self, prefix: str) -> Family:
        """Joint hidden unit j: column j of both projections (+ the encoder projection's bias j), row j of
        the output kernel. Config key ``("joint_dim", None)``."""
        members = (Member(self.enc_proj.kernel, 1, mask=self.enc_proj.kernel_mask),
                   Member(self.enc_proj.bias, 0),
                   Member(self.pred_proj.kernel, 1, mask=self.pred_proj.kernel_mask),
                   Member(self.output_dense.kernel, 0, mask=self.output_dense.kernel_mask))
        return Family(f"{prefix}/joint", self.joint_dim, members, ("joint_dim", None))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            enc_dim=self.enc_dim, pred_dim=self.pred_dim, joint_dim=self.joint_dim, vocab_size=self.vocab_size
        )
        return config

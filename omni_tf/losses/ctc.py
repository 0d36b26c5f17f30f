"""Auxiliary CTC loss on the encoder output (training only).

Dimension key: B batch, T' encoder frames, D encoder dim (d_model), U labels, V vocab (blank = 0).

A transducer's encoder gets its gradient only through the joiner. An extra linear head on the encoder
frames trained with CTC (Graves et al. 2006) gives the encoder a direct, alignment-free signal; icefall's
pruned-transducer recipes (``egs/librispeech/ASR/zipformer/train.py``: ``--use-ctc``, ``--ctc-loss-scale``
0.2) add it to the transducer loss with a weight around 0.1-0.3, which ``training.ctc_weight`` mirrors
(0 = off). The head is *not* part of ``Transducer``: it is built and checkpointed next to the model by the
training loop (``ctc_head`` in the checkpoint), so the exported tiers, their streaming signatures and
parity are exactly those of the model without it, and its kernel is not among ``prunable_kernels()``.

CTC needs ``T'_b >= U_b + r_b`` frames (``r_b``: adjacent repeated labels, which need a blank between
them). With 8x subsampling (80 ms frames) and character-level pieces fast speech can break that; such an
utterance has an infinite CTC loss, which ``ctc_loss`` replaces by 0 and counts (``ctc_infeasible``) rather
than letting it skip the whole update.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401


class CtcHead(keras.layers.Layer):
    """``call(enc [B, T', D]) -> logits [B, T', V]``: one dense layer (blank = index 0)."""

    def __init__(self, enc_dim: int, vocab_size: int, **kwargs):
        kwargs.setdefault("name", "ctc_head")
        super().__init__(**kwargs)
        self.enc_dim, self.vocab_size = int(enc_dim), int(vocab_size)
        self.dense = keras.layers.Dense(self.vocab_size, name="output")

    def build(self, input_shape=None):
        self.dense.build((None, self.enc_dim))
        self.built = True

    def call(self, enc: tf.Tensor) -> tf.Tensor:
        return self.dense(enc)

    def get_config(self) -> dict:
        return {**super().get_config(), "enc_dim": self.enc_dim, "vocab_size": self.vocab_size}


def min_frames(tokens: tf.Tensor, token_lengths: tf.Tensor) -> tf.Tensor:
    """Frames CTC needs per utterance, int32 ``[B]``: ``U_b`` + adjacent repeats within ``U_b``."""
    tokens = tf.convert_to_tensor(tokens, tf.int32)
    lengths = tf.convert_to_tensor(token_lengths, tf.int32)
    valid = tf.sequence_mask(lengths, tf.shape(tokens)[1])
    repeat = tf.logical_and(tf.equal(tokens[:, 1:], tokens[:, :-1]), valid[:, 1:])
    return lengths + tf.reduce_sum(tf.cast(repeat, tf.int32), axis=1)


def ctc_loss(logits: tf.Tensor, logit_lengths: tf.Tensor, tokens: tf.Tensor, token_lengths: tf.Tensor
             ) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-utterance CTC negative log-likelihood (nats) via ``tf.nn.ctc_loss`` (blank 0).

    Args: logits ``[B, T', V]`` (unnormalized), logit_lengths ``[B]``, tokens ``[B, U]`` (padded, ids >= 1),
    token_lengths ``[B]``. Returns ``(loss [B] float32, infeasible [B] bool)``; infeasible utterances
    (fewer frames than ``min_frames``) get loss 0 and no gradient.
    """
    logits = tf.cast(logits, tf.float32)
    logit_lengths = tf.cast(logit_lengths, tf.int32)
    token_lengths = tf.cast(token_lengths, tf.int32)
    infeasible = logit_lengths < min_frames(tokens, token_lengths)
    # An empty label sequence is always feasible: infeasible rows get a finite loss (and gradient) to mask.
    safe_lengths = tf.where(infeasible, tf.zeros_like(token_lengths), token_lengths)
    loss = tf.nn.ctc_loss(labels=tf.cast(tokens, tf.int32), logits=logits,
                          label_length=safe_lengths, logit_length=logit_lengths,
                          logits_time_major=False, blank_index=0)
    bad = tf.logical_or(infeasible, tf.logical_not(tf.math.is_finite(loss)))
    return tf.where(bad, tf.zeros_like(loss), loss), bad

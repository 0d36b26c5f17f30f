"""Chunked multi-head self-attention (strictly chunk-causal).

Dimension key: B batch, T time (encoder frames), C chunk size (encoder frames), L left_chunks, D model dim,
H heads, K head dim (default D / H), A = H * K attention width (D unless heads were sliced out).

A query in chunk ``c`` sees every key of chunk ``c`` (both directions inside the chunk) and of chunks
``c-L .. c-1``; never a later chunk. Training (``call``) runs the whole utterance with an additive mask;
streaming (``stream``) runs one chunk with a fixed-shape cache of the previous ``L*C`` projected keys/values
and a validity vector (0 for cache slots before the utterance start). Both paths share the projections:
query, key and value are three ``MaskedDense`` layers (three prunable kernels, masks and checkpoint entries),
computed as one matmul with their masked kernels side by side (``[D, 3D]``, the query part pre-multiplied by
``K^-0.5``), so the frozen TFLite graph has one FULLY_CONNECTED for the three instead of three plus a MUL.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from omni_tf.layers.dropout import SeededDropout
from omni_tf.layers.masked_dense import MaskedDense, build_child, matmul_last
from omni_tf.sparsity.structured import Family, Member

# Added to masked scores before the softmax. exp(LARGE_NEGATIVE + s - max) underflows to exactly 0 in float32
# for any realistic score s (|s| << 1e9), and the row max is always an allowed score (>= 1 allowed key), so
# masked weights are exactly 0. The huge range is harmless for full-int8 export: every op of the
# ``masked_softmax`` name scope stays float (tflite_export/convert.py INT8_FLOAT_GROUPS "softmax").
LARGE_NEGATIVE = -1e9


def masked_softmax(scores: tf.Tensor, allowed: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis of ``scores`` restricted to ``allowed`` (1 = visible, 0 = weight exactly 0).

    ``scores [..., Tk]``, ``allowed`` broadcastable to it; every row must allow at least one key. One builtin
    SOFTMAX in TFLite (plus the bias: 4 ops in all, was 8).
    """
    with tf.name_scope("masked_softmax"):  # the name lets TFLite export keep these ops float in int8 mode
        scores = tf.convert_to_tensor(scores)
        negative = max(LARGE_NEGATIVE, scores.dtype.min)  # finite in float16 too (0 * -inf would be NaN)
        bias = (1.0 - tf.cast(allowed, scores.dtype)) * negative
        return tf.nn.softmax(scores + bias, axis=-1)


def chunk_mask(num_frames: tf.Tensor, chunk_size: int, left_chunks: int) -> tf.Tensor:
    """``[T, T]`` float mask, 1 where query i may attend key j (same chunk or up to L chunks back)."""
    chunk = tf.range(num_frames) // chunk_size
    diff = chunk[:, None] - chunk[None, :]
    return tf.cast((diff >= 0) & (diff <= left_chunks), tf.float32)


def split_heads(x: tf.Tensor, num_heads: int) -> tf.Tensor:
    """``[B, T, D] -> [B, H, T, D/H]``."""
    b, t = tf.shape(x)[0], tf.shape(x)[1]
    return tf.transpose(tf.reshape(x, [b, t, num_heads, x.shape[-1] // num_heads]), [0, 2, 1, 3])


def merge_heads(x: tf.Tensor) -> tf.Tensor:
    """``[B, H, T, K] -> [B, T, H*K]``."""
    x = tf.transpose(x, [0, 2, 1, 3])
    return tf.reshape(x, [tf.shape(x)[0], tf.shape(x)[1], x.shape[2] * x.shape[3]])


class ChunkedMultiHeadAttention(keras.layers.Layer):
    """Multi-head self-attention restricted to the own chunk and ``left_chunks`` previous chunks.

    Shapes: ``call(x [B,T,D]) -> [B,T,D]``; ``stream(x [B,C,D], state) -> ([B,C,D], state)`` with state
    ``{"key": [B, L*C, A], "value": [B, L*C, A], "valid": [B, L*C]}``.

    ``head_dim`` (default ``D / H``) is given when a sliced tier keeps fewer heads than the trained layer
    (``structured.py``): the head width stays, the attention width ``A = H * K`` shrinks.
    """

    def __init__(
        self, d_model: int, num_heads: int, chunk_size: int, left_chunks: int, dropout: float = 0.0,
        head_dim: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        if head_dim is None and d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        if num_heads < 1 or (head_dim is not None and head_dim < 1):
            raise ValueError(f"bad num_heads={num_heads} / head_dim={head_dim}")
        if chunk_size < 1 or left_chunks < 0:
            raise ValueError(f"bad chunk_size={chunk_size} / left_chunks={left_chunks}")
        self.d_model, self.num_heads = int(d_model), int(num_heads)
        self.head_dim = int(head_dim) if head_dim is not None else self.d_model // self.num_heads
        self.chunk_size, self.left_chunks = int(chunk_size), int(left_chunks)
        self.dropout = float(dropout)
        width = self.attention_width
        self.query = MaskedDense(width, name="query")
        self.key = MaskedDense(width, name="key")
        self.value = MaskedDense(width, name="value")
        self.out = MaskedDense(d_model, name="output")
        self.attn_drop = SeededDropout(self.dropout)

    @property
    def attention_width(self) -> int:
        """``A = H * K``: the width of the query/key/value projections and of the caches."""
        return self.num_heads * self.head_dim

    def build(self, input_shape):
        for dense in (self.query, self.key, self.value):
            build_child(dense, (None, None, self.d_model))
        build_child(self.out, (None, None, self.attention_width))
        super().build(input_shape)

    @property
    def cache_size(self) -> int:
        return self.left_chunks * self.chunk_size

    def project_qkv(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``x [B,T,D] -> (q * K^-0.5, k, v)``, each ``[B,T,A]``, by one ``[D, 3A]`` matmul + bias.

        Same values as ``query(x) * K^-0.5, key(x), value(x)`` up to float rounding.
        """
        scale = self.head_dim ** -0.5
        parts = ((self.query, scale), (self.key, 1.0), (self.value, 1.0))
        with tf.name_scope("qkv"):  # TFLite tensor names "qkv/..." (was query/, key/, value/)
            kernel = tf.concat([d.masked_kernel() * w for d, w in parts], axis=1)
            bias = tf.concat([self.query.bias * scale, self.key.bias, self.value.bias], axis=0)
            return tuple(tf.split(matmul_last(x, kernel) + bias, 3, axis=-1))

    def _attend(
        self, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, allowed: tf.Tensor, training: bool
    ) -> tf.Tensor:
        """q [B,Tq,A] (pre-scaled by K^-0.5), k/v [B,Tk,A], allowed broadcastable to [B,1,Tq,Tk]
        (1 = visible) -> [B,Tq,D]."""
        qh, kh, vh = (split_heads(t, self.num_heads) for t in (q, k, v))
        with tf.name_scope("attention_scores"):  # named: int8 export may keep it float (see masked_softmax)
            scores = tf.matmul(qh, kh, transpose_b=True)
        probs = self.attn_drop(masked_softmax(scores, allowed), training=training)
        return self.out(merge_heads(tf.matmul(probs, vh)))

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        allowed = chunk_mask(tf.shape(x)[1], self.chunk_size, self.left_chunks)[None, None]
        return self._attend(*self.project_qkv(x), allowed, training)

    def initial_state(self, batch: int) -> dict[str, tf.Tensor]:
        return {
            "key": tf.zeros([batch, self.cache_size, self.attention_width]),
            "value": tf.zeros([batch, self.cache_size, self.attention_width]),
            "valid": tf.zeros([batch, self.cache_size]),
        }

    def stream(self, x: tf.Tensor, state: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """One chunk ``x [B, C, D]`` (C == chunk_size) with the left-context cache."""
        q, k, v = self.project_qkv(x)
        keys = tf.concat([state["key"], k], axis=1)
        values = tf.concat([state["value"], v], axis=1)
        valid = tf.concat([state["valid"], tf.ones_like(x[:, :, 0])], axis=1)
        y = self._attend(q, keys, values, valid[:, None, None, :], training=False)
        n = self.cache_size
        new_state = {
            "key": keys[:, -n:] if n else state["key"],
            "value": values[:, -n:] if n else state["value"],
            "valid": valid[:, -n:] if n else state["valid"],
        }
        return y, new_state

    def named_kernels(self, prefix: str) -> list[tuple[str, MaskedDense]]:
        return [
            (f"{prefix}/{n}", d)
            for n, d in (
                ("query", self.query),
                ("key", self.key),
                ("value", self.value),
                ("output", self.out),
            )
        ]

    def unit_family(self, prefix: str, config_key: tuple[str, int | None]) -> Family:
        """The heads as structured units: each head's ``K`` columns of query/key/value (+ biases) and its
        ``K`` rows of the output projection."""
        k = self.head_dim
        members = [Member(d.kernel, 1, k, mask=d.kernel_mask) for d in (self.query, self.key, self.value)]
        members += [Member(d.bias, 0, k) for d in (self.query, self.key, self.value)]
        members.append(Member(self.out.kernel, 0, k, mask=self.out.kernel_mask))
        return Family(f"{prefix}/heads", self.num_heads, tuple(members), config_key)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            d_model=self.d_model,
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            chunk_size=self.chunk_size,
            left_chunks=self.left_chunks,
            dropout=self.dropout,
        )
        return config

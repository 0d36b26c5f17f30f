"""Streaming transformer encoder: stacking subsampling (with lookahead) + chunk-causal blocks + final LN.

Dimension key: B batch, T feature frames, T' encoder frames, D model dim, f subsampling factor (4),
CF = chunk_frames = f * chunk_enc feature frames per chunk, LA = lookahead_frames, N = num_layers.

Padding rule (the reason streaming equals training exactly): features past ``lengths`` are zeroed and the
utterance is zero-padded to ``n*CF + LA`` frames with ``n = ceil(T / CF)``. Encoder frame t stacks feature
frames ``[f*t, f*t + f + LA)``; attention never looks into later chunks, so chunk c depends only on feature
frames ``< (c+1)*CF + LA``. A streaming caller that feeds the same zero-padded signal window by window
(``encode_chunk``) reproduces every frame. Frames past a sequence's own length inside its last chunk are
visible to its valid frames in both paths (zeros in both), never a different value.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from omni_tf.layers.level_norm import LevelLayerNorm
from omni_tf.layers.masked_dense import build_child
from omni_tf.layers.subsampling import StackingSubsampling
from omni_tf.layers.transformer import TransformerBlock


class StreamingEncoder(keras.layers.Layer):
    """``call(features [B,T,F], lengths [B]) -> (enc [B, n*chunk_enc, D], enc_lengths [B])``;
    ``stream(features [B, CF+LA, F], state) -> (enc [B, chunk_enc, D], state)``.

    State keys: ``block_{i}/key``, ``block_{i}/value`` ``[B, L*chunk_enc, A_i]``, ``block_{i}/valid``
    ``[B, L*chunk_enc]`` and (with conv) ``block_{i}/conv`` ``[B, conv_kernel-1, W_i]``; ``A_i = H_i * K``
    and ``W_i`` are D unless a sliced tier keeps fewer heads / conv channels in block i.

    ``num_heads``, ``ff_dim`` and ``conv_channels`` are an int (every block) or one value per block (a sliced
    structured tier); ``head_dim`` defaults to ``d_model // num_heads`` (the trained model's).
    """

    def __init__(
        self,
        num_mel_bins: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        ff_dim: int,
        chunk_enc: int,
        left_chunks: int,
        lookahead_frames: int,
        subsampling_factor: int = 4,
        conv_kernel: int = 15,
        dropout: float = 0.1,
        conv_pointwise: bool = True,
        head_dim: int | None = None,
        conv_channels: int | list[int] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_mel_bins, self.d_model, self.num_layers = int(num_mel_bins), int(d_model), int(num_layers)
        self.num_heads, self.ff_dim = _per_layer(num_heads, num_layers), _per_layer(ff_dim, num_layers)
        self.conv_channels = _per_layer(conv_channels if conv_channels is not None else d_model, num_layers)
        self.head_dim = int(head_dim) if head_dim is not None else None
        self.chunk_enc = int(chunk_enc)
        self.left_chunks, self.lookahead_frames = int(left_chunks), int(lookahead_frames)
        self.conv_pointwise = bool(conv_pointwise)
        self.subsampling_factor, self.conv_kernel, self.dropout = (
            int(subsampling_factor),
            int(conv_kernel),
            float(dropout),
        )
        self.subsampling = StackingSubsampling(
            d_model, subsampling_factor, lookahead_frames, dropout, name="subsampling"
        )
        self.blocks = [
            TransformerBlock(
                d_model,
                self.num_heads[i],
                self.ff_dim[i],
                chunk_enc,
                left_chunks,
                conv_kernel=conv_kernel,
                conv_pointwise=conv_pointwise,
                dropout=dropout,
                head_dim=self.head_dim,
                conv_channels=self.conv_channels[i] if conv_pointwise else None,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_norm = LevelLayerNorm(epsilon=1e-5, name="final_norm")

    @property
    def chunk_frames(self) -> int:
        return self.chunk_enc * self.subsampling_factor

    def build(self, input_shape=None):
        build_child(self.subsampling, (None, None, self.num_mel_bins))
        for block in self.blocks:
            build_child(block, (None, None, self.d_model))
        build_child(self.final_norm, (None, None, self.d_model))
        super().build(input_shape)

    def pad_features(self, features: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """Zeroes frames past ``lengths`` and zero-pads ``[B,T,F]`` to ``[B, n*CF + LA, F]``."""
        t = tf.shape(features)[1]
        valid = tf.sequence_mask(lengths, t, dtype=features.dtype)
        n = tf.maximum((t + self.chunk_frames - 1) // self.chunk_frames, 1)
        extra = n * self.chunk_frames + self.lookahead_frames - t
        return tf.pad(features * valid[:, :, None], [[0, 0], [0, extra], [0, 0]])

    def call(self, features: tf.Tensor, lengths: tf.Tensor, training: bool = False):
        lengths = tf.cast(lengths, tf.int32)
        x = self.subsampling(self.pad_features(features, lengths), training=training)
        for block in self.blocks:
            x = block(x, training=training)
        f = self.subsampling_factor
        return self.final_norm(x), (lengths + f - 1) // f

    def initial_state(self, batch: int) -> dict[str, tf.Tensor]:
        state = {}
        for i, block in enumerate(self.blocks):
            state.update({f"block_{i}/{k}": v for k, v in block.initial_state(batch).items()})
        return state

    def stream(
        self, features: tf.Tensor, state: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        expected = self.chunk_frames + self.lookahead_frames
        if features.shape[1] is not None and features.shape[1] != expected:
            raise ValueError(
                f"encode_chunk expects {expected} feature frames (chunk {self.chunk_frames} + "
                f"lookahead {self.lookahead_frames}), got {features.shape[1]}"
            )
        x = self.subsampling(features, training=False)
        new_state = {}
        for i, block in enumerate(self.blocks):
            prefix = f"block_{i}/"
            block_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            x, block_state = block.stream(x, block_state)
            new_state.update({prefix + k: v for k, v in block_state.items()})
        return self.final_norm(x), new_state

    def named_kernels(self, prefix: str) -> list:
        kernels = self.subsampling.named_kernels(f"{prefix}/subsampling")
        for i, block in enumerate(self.blocks):
            kernels += block.named_kernels(f"{prefix}/block_{i}")
        return kernels

    def level_norms(self, prefix: str) -> list:
        """``[(name, LayerNorm, producer kernel name)]`` of every block and the final norm, in model order
        (the rule: ``omni_tf/sparsity/level_norms.py``)."""
        out, previous = [], f"{prefix}/subsampling/proj"
        for i, block in enumerate(self.blocks):
            out += block.level_norms(f"{prefix}/block_{i}", previous)
            previous = f"{prefix}/block_{i}/ffn/dense_out"
        return [*out, (f"{prefix}/final_norm", self.final_norm, previous)]

    def unit_groups(self, prefix: str) -> list:
        """Structured unit groups of every block (``TransformerBlock.unit_groups``)."""
        return [g for i, b in enumerate(self.blocks) for g in b.unit_groups(f"{prefix}/block_{i}", i)]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_mel_bins=self.num_mel_bins,
            d_model=self.d_model,
            num_layers=self.num_layers,
            num_heads=_compact(self.num_heads),
            ff_dim=_compact(self.ff_dim),
            chunk_enc=self.chunk_enc,
            left_chunks=self.left_chunks,
            lookahead_frames=self.lookahead_frames,
            subsampling_factor=self.subsampling_factor,
            conv_kernel=self.conv_kernel,
            dropout=self.dropout,
            conv_pointwise=self.conv_pointwise,
            head_dim=self.head_dim,
            conv_channels=_compact(self.conv_channels),
        )
        return config


def _compact(values: list[int]) -> int | list[int]:
    """The int when every layer has the same width, else the per-layer list (config round trip)."""
    return values[0] if len(set(values)) == 1 else list(values)


def _per_layer(value: int | list[int], num_layers: int) -> list[int]:
    """An int for every layer, or a list of ``num_layers`` ints -> list of ints; ValueError otherwise."""
    if isinstance(value, int | float):
        return [int(value)] * num_layers
    values = [int(v) for v in value]
    if len(values) != num_layers:
        raise ValueError(f"per-layer widths {values} do not match num_layers={num_layers}")
    return values

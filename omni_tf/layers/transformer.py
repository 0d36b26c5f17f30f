"""One streaming encoder block: pre-LN chunked MHSA, optional causal conv module, pre-LN FFN.

Dimension key: B batch, T time (encoder frames), C chunk size, D model dim, F ff dim, K conv kernel, W conv
channels (D unless channels were sliced out), H heads.

``x -> x + MHSA(LN(x)) -> x + Conv(LN(x)) -> x + FFN(LN(x))``. The conv module (pointwise D->2D, GLU, causal
depthwise conv K, LayerNorm, swish, pointwise D->D) is the block's positional signal: attention has no
position encoding, and the causal conv makes frames order-aware in both the training and the streaming path.
LayerNorm (not BatchNorm) keeps the conv module free of batch statistics, so streaming equals training.

Structured sparsity (``omni_tf/sparsity/structured.py``): ``unit_groups`` lists the block's heads, conv
channels and feed-forward hidden units; per-block widths (``num_heads``, ``ff_dim``, ``conv_channels``,
``head_dim``) build the sliced tier. Structured masks add a ``channel_mask`` to the conv module
(``add_channel_mask``); its LayerNorm then normalises over the kept channels only, so a masked channel does
not move the statistics of the kept ones and the masked model equals the sliced one. Without it (weight
masks, sliced tiers) the LayerNorm is Keras's, unchanged.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from omni_tf.layers.attention import ChunkedMultiHeadAttention
from omni_tf.layers.dropout import SeededDropout
from omni_tf.layers.level_norm import LevelLayerNorm
from omni_tf.layers.masked_dense import MaskedDense, build_child
from omni_tf.sparsity.structured import Family, Group, Member


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

    def unit_family(self, prefix: str, config_key: tuple[str, int | None]) -> Family:
        """Hidden unit j: column j of ``dense_in`` (+ bias j), row j of ``dense_out``."""
        members = (Member(self.dense_in.kernel, 1, mask=self.dense_in.kernel_mask),
                   Member(self.dense_in.bias, 0),
                   Member(self.dense_out.kernel, 0, mask=self.dense_out.kernel_mask))
        return Family(f"{prefix}/hidden", self.ff_dim, members, config_key)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(d_model=self.d_model, ff_dim=self.ff_dim, dropout=self.dropout)
        return config


def masked_layer_norm(x: tf.Tensor, norm: keras.layers.LayerNormalization, mask: tf.Tensor) -> tf.Tensor:
    """LayerNorm of ``x [..., W]`` over the channels where ``mask [W]`` is 1, with ``norm``'s gamma, beta
    and epsilon; equals ``norm(x)`` when the mask is all ones (up to float rounding)."""
    with tf.name_scope("norm"):  # the name keeps it in TFLite int8 export's float "layer_norm" group
        x32 = tf.cast(x, tf.float32)
        count = tf.reduce_sum(mask)
        mean = tf.reduce_sum(x32 * mask, axis=-1, keepdims=True) / count
        centered = x32 - mean
        var = tf.reduce_sum(tf.square(centered) * mask, axis=-1, keepdims=True) / count
        y = centered * tf.math.rsqrt(var + norm.epsilon) * norm.gamma + norm.beta
        return tf.cast(y, x.dtype)


class CausalConvModule(keras.layers.Layer):
    """Causal depthwise conv module. ``call(x [B,T,D])``; ``stream(x [B,C,D], {"conv": [B,K-1,W]})``.

    ``pointwise=False`` is the light variant (no pointwise/GLU/norm: only the causal depthwise conv)
    used by the paper preset to keep the Emformer-scale parameter budget while giving positional information.
    The state holds the last ``K-1`` GLU outputs (zeros at the utterance start, matching the training path's
    left zero padding). ``channels`` (W, default D; pointwise variant only) is the inner width between the
    pointwise convolutions. ``add_channel_mask()`` (structured masks only) adds a non-trainable
    ``channel_mask [W]`` (ones) that restricts the LayerNorm statistics to the kept channels.
    """

    def __init__(self, d_model: int, kernel_size: int, pointwise: bool = True, channels: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if kernel_size < 1:
            raise ValueError(f"CausalConvModule kernel_size must be >= 1, got {kernel_size}")
        self.d_model, self.kernel_size, self.pointwise = int(d_model), int(kernel_size), bool(pointwise)
        if channels is not None and not self.pointwise and int(channels) != self.d_model:
            raise ValueError("CausalConvModule: channels != d_model needs the pointwise variant")
        self.channels = int(channels) if channels is not None else self.d_model
        if self.channels < 1:
            raise ValueError(f"CausalConvModule channels must be >= 1, got {channels}")
        if self.pointwise:
            self.pointwise_in = MaskedDense(2 * self.channels, name="pointwise_in")
            self.norm = LevelLayerNorm(epsilon=1e-5, name="norm")
            self.pointwise_out = MaskedDense(self.d_model, name="pointwise_out")
        self.channel_mask = None

    def add_channel_mask(self) -> tf.Variable:
        """Creates (once) and returns ``channel_mask [W]`` (ones); pointwise variant only. Models without it
        (weight masks, sliced tiers) keep Keras's LayerNorm and their checkpoints stay as they were."""
        if not self.pointwise:
            raise ValueError("CausalConvModule: the depthwise-only variant has no channels to mask")
        if self.channel_mask is None:
            self.channel_mask = self.add_weight(
                "channel_mask", shape=(self.channels,), initializer="ones", trainable=False,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        return self.channel_mask

    def build(self, input_shape):
        if self.pointwise:
            build_child(self.pointwise_in, (None, None, self.d_model))
            build_child(self.norm, (None, None, self.channels))
            build_child(self.pointwise_out, (None, None, self.channels))
        self.depthwise = self.add_weight(
            "depthwise",
            shape=(1, self.kernel_size, self.channels, 1),
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
        if not self.pointwise:
            return y
        y = self.norm(y) if self.channel_mask is None else masked_layer_norm(y, self.norm, self.channel_mask)
        return self.pointwise_out(tf.nn.swish(y))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        h = self._glu(x)
        return self._after_glu(tf.pad(h, [[0, 0], [self.kernel_size - 1, 0], [0, 0]]))

    def initial_state(self, batch: int) -> dict[str, tf.Tensor]:
        return {"conv": tf.zeros([batch, self.kernel_size - 1, self.channels])}

    def stream(self, x: tf.Tensor, state: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        padded = tf.concat([state["conv"], self._glu(x)], axis=1)
        new_conv = padded[:, tf.shape(padded)[1] - (self.kernel_size - 1) :]
        new_conv.set_shape([None, self.kernel_size - 1, self.channels])
        return self._after_glu(padded), {"conv": new_conv}

    def named_kernels(self, prefix: str) -> list[tuple[str, MaskedDense]]:
        if not self.pointwise:
            return []
        return [
            (f"{prefix}/pointwise_in", self.pointwise_in),
            (f"{prefix}/pointwise_out", self.pointwise_out),
        ]

    def unit_family(self, prefix: str, config_key: tuple[str, int | None]) -> Family | None:
        """Channel c: pointwise-in output c of both GLU halves (+ biases), depthwise channel c, norm
        gamma/beta c, channel mask c (created here), pointwise-out row c. None for the depthwise-only variant
        (its channels are the residual stream's)."""
        if not self.pointwise:
            return None
        members = (Member(self.pointwise_in.kernel, 1, repeats=2, mask=self.pointwise_in.kernel_mask),
                   Member(self.pointwise_in.bias, 0, repeats=2),
                   Member(self.depthwise, 2),
                   Member(self.norm.gamma, 0), Member(self.norm.beta, 0),
                   Member(self.add_channel_mask(), 0, is_unit_mask=True),
                   Member(self.pointwise_out.kernel, 0, mask=self.pointwise_out.kernel_mask))
        return Family(f"{prefix}/channels", self.channels, members, config_key)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(d_model=self.d_model, kernel_size=self.kernel_size, pointwise=self.pointwise,
                      channels=self.channels)
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
        head_dim: int | None = None,
        conv_channels: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.ff_dim = int(d_model), int(num_heads), int(ff_dim)
        self.chunk_size, self.left_chunks = int(chunk_size), int(left_chunks)
        self.conv_kernel, self.dropout = int(conv_kernel), float(dropout)
        self.mhsa_norm = LevelLayerNorm(epsilon=1e-5, name="mhsa_norm")
        self.mhsa = ChunkedMultiHeadAttention(
            d_model, num_heads, chunk_size, left_chunks, dropout, head_dim=head_dim, name="mhsa"
        )
        self.head_dim = self.mhsa.head_dim
        self.conv_norm = LevelLayerNorm(epsilon=1e-5, name="conv_norm")
        self.conv_pointwise = bool(conv_pointwise)
        self.conv = (
            CausalConvModule(d_model, conv_kernel, conv_pointwise, conv_channels, name="conv")
            if conv_kernel > 0 else None
        )
        self.conv_channels = self.conv.channels if self.conv is not None else None
        self.ffn_norm = LevelLayerNorm(epsilon=1e-5, name="ffn_norm")
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

    def level_norms(self, prefix: str, previous: str) -> list[tuple[str, LevelLayerNorm, str]]:
        """``[(name, LayerNorm, producer kernel name)]`` of the block (``omni_tf/sparsity/level_norms.py``):
        each norm with the last prunable kernel before it; ``previous`` is the one before the block."""
        out = [(f"{prefix}/mhsa_norm", self.mhsa_norm, previous)]
        last = f"{prefix}/mhsa/output"
        if self.conv is not None:
            out.append((f"{prefix}/conv_norm", self.conv_norm, last))
            if self.conv.pointwise:
                out.append((f"{prefix}/conv/norm", self.conv.norm, f"{prefix}/conv/pointwise_in"))
                last = f"{prefix}/conv/pointwise_out"
        return [*out, (f"{prefix}/ffn_norm", self.ffn_norm, last)]

    def unit_groups(self, prefix: str, index: int) -> list[Group]:
        """Structured unit groups ``<prefix>/mhsa`` (heads), ``<prefix>/conv`` (channels, pointwise conv
        only), ``<prefix>/ffn`` (hidden units); ``index`` is the block's entry in the ``layer_*`` lists."""
        heads = self.mhsa.unit_family(f"{prefix}/mhsa", ("layer_num_heads", index))
        conv = self.conv.unit_family(f"{prefix}/conv", ("layer_conv_channels", index)) if self.conv else None
        ffn = self.ffn.unit_family(f"{prefix}/ffn", ("layer_ff_dim", index))
        groups = [Group(f"{prefix}/mhsa", (heads,))]
        if conv is not None:
            groups.append(Group(f"{prefix}/conv", (conv,)))
        return [*groups, Group(f"{prefix}/ffn", (ffn,))]

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
            head_dim=self.head_dim,
            conv_channels=self.conv_channels,
        )
        return config

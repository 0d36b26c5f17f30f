"""Transducer predictor: token embedding + stacked LSTMs with masked kernels and explicit state.

Dimension key: B batch, U label length, E embed dim, H hidden (= P, the predictor output dim), V vocab.

Blank/SOS: id 0 (the RNN-T blank) is prepended as start-of-sequence, so ``call(labels [B,U])`` returns
``[B, U+1, H]``; output u is the prediction after seeing ``labels[:, :u]``. Row 0 of the embedding is learned
like any other row (it is only ever used as SOS). Each LSTM has an input kernel ``[in, 4H]`` (with bias) and a
recurrent kernel ``[H, 4H]``, both MaskedDense, gate order (i, f, g, o). The training path precomputes the
input projections for all steps with one matmul and runs only the recurrence in ``tf.scan``.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from omni_tf.layers.dropout import SeededDropout
from omni_tf.layers.masked_dense import MaskedDense, add_kernel_and_mask, build_child
from omni_tf.sparsity.structured import Family, Member


class MaskedEmbedding(keras.layers.Layer):
    """Embedding table ``kernel [V, E]`` with a ``kernel_mask`` (prunable only if the model says so)."""

    def __init__(self, vocab_size: int, embed_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embed_dim = int(vocab_size), int(embed_dim)

    def build(self, input_shape):
        self.kernel, self.kernel_mask = add_kernel_and_mask(
            self, (self.vocab_size, self.embed_dim), keras.initializers.RandomNormal(stddev=1.0)
        )
        super().build(input_shape)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.kernel * self.kernel_mask, ids)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, embed_dim=self.embed_dim)
        return config


def lstm_gates(z: tf.Tensor, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Pre-activations ``z [B, 4H]`` (i, f, g, o) and cell ``c [B, H]`` -> (h, c)."""
    with tf.name_scope("lstm_cell"):  # named: int8 TFLite export keeps the cell state float
        i, f, g, o = tf.split(z, 4, axis=-1)
        c = tf.sigmoid(f + 1.0) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c


class MaskedLSTM(keras.layers.Layer):
    """One LSTM layer. ``call(x [B,U,in]) -> [B,U,H]`` from zero state; ``step(x [B,in], h, c) -> (h, c)``."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.input_dense = MaskedDense(4 * self.units, name="input")
        self.recurrent = MaskedDense(
            4 * self.units, use_bias=False, kernel_initializer="orthogonal", name="recurrent"
        )

    def build(self, input_shape):
        build_child(self.input_dense, (None, int(input_shape[-1])))
        build_child(self.recurrent, (None, self.units))
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        xz = tf.transpose(self.input_dense(x), [1, 0, 2])  # [U, B, 4H]
        w_rec = self.recurrent.masked_kernel()
        zeros = tf.zeros([tf.shape(x)[0], self.units])

        def body(carry, z_t):
            h, c = carry
            return lstm_gates(z_t + tf.matmul(h, w_rec), c)

        hs, _ = tf.scan(body, xz, initializer=(zeros, zeros))
        return tf.transpose(hs, [1, 0, 2])

    def step(self, x: tf.Tensor, h: tf.Tensor, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return lstm_gates(self.input_dense(x) + self.recurrent(h), c)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(units=self.units)
        return config


class Predictor(keras.layers.Layer):
    """Embedding + ``num_layers`` MaskedLSTM (dropout between layers).

    ``call(labels [B,U] int) -> [B, U+1, H]`` (SOS=0 prepended); ``step(token [B], state) -> ([B,H], state)``
    with state ``{"h_0": [B,H_0], "c_0": [B,H_0], ...}``. ``hidden`` is an int (every layer) or one width
    per layer (a sliced structured tier); the output width ``H`` is the last layer's.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"Predictor needs num_layers >= 1, got {num_layers}")
        self.vocab_size, self.embed_dim = int(vocab_size), int(embed_dim)
        self.num_layers, self.dropout = int(num_layers), float(dropout)
        widths = ([int(hidden)] * self.num_layers if isinstance(hidden, int | float)
                  else [int(h) for h in hidden])
        if len(widths) != self.num_layers or min(widths) < 1:
            raise ValueError(f"Predictor hidden {hidden} does not give {self.num_layers} positive widths")
        self.hidden_sizes = widths
        self.hidden = widths[-1]
        self.embedding = MaskedEmbedding(self.vocab_size, self.embed_dim, name="embedding")
        self.lstms = [MaskedLSTM(h, name=f"lstm_{i}") for i, h in enumerate(widths)]
        self.drop = SeededDropout(self.dropout)

    def build(self, input_shape):
        build_child(self.embedding, (None,))
        dim = self.embed_dim
        for lstm in self.lstms:
            build_child(lstm, (None, None, dim))
            dim = lstm.units
        super().build(input_shape)

    def call(self, labels: tf.Tensor, training: bool = False) -> tf.Tensor:
        labels = tf.cast(labels, tf.int32)
        ids = tf.concat([tf.zeros_like(labels[:, :1]), labels], axis=1)
        x = self.drop(self.embedding(ids), training=training)
        for lstm in self.lstms:
            x = self.drop(lstm(x), training=training)
        return x

    def initial_state(self, batch: int) -> dict[str, tf.Tensor]:
        state = {}
        for i, lstm in enumerate(self.lstms):
            state[f"h_{i}"] = tf.zeros([batch, lstm.units])
            state[f"c_{i}"] = tf.zeros([batch, lstm.units])
        return state

    def step(self, token: tf.Tensor, state: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        x = self.embedding(tf.cast(token, tf.int32))
        new_state = {}
        for i, lstm in enumerate(self.lstms):
            x, c = lstm.step(x, state[f"h_{i}"], state[f"c_{i}"])
            new_state[f"h_{i}"], new_state[f"c_{i}"] = x, c
        return x, new_state

    def named_kernels(
        self, prefix: str, include_embedding: bool = False
    ) -> list[tuple[str, keras.layers.Layer]]:
        kernels = [(f"{prefix}/embedding", self.embedding)] if include_embedding else []
        for i, lstm in enumerate(self.lstms):
            kernels += [
                (f"{prefix}/lstm_{i}/input", lstm.input_dense),
                (f"{prefix}/lstm_{i}/recurrent", lstm.recurrent),
            ]
        return kernels

    def unit_families(self, prefix: str, output_kernel: MaskedDense) -> list[Family]:
        """LSTM hidden unit h of layer l: its 4 gate columns of the input and recurrent kernels (+ input
        bias), recurrent row h, and row h of the next consumer (layer l+1's input kernel, or
        ``output_kernel``, the joiner's predictor projection). Config key ``("layer_pred_hidden", l)``."""
        families = []
        for i, lstm in enumerate(self.lstms):
            nxt = self.lstms[i + 1].input_dense if i + 1 < len(self.lstms) else output_kernel
            members = (Member(lstm.input_dense.kernel, 1, repeats=4, mask=lstm.input_dense.kernel_mask),
                       Member(lstm.input_dense.bias, 0, repeats=4),
                       Member(lstm.recurrent.kernel, 1, repeats=4, mask=lstm.recurrent.kernel_mask),
                       Member(lstm.recurrent.kernel, 0, mask=lstm.recurrent.kernel_mask),
                       Member(nxt.kernel, 0, mask=nxt.kernel_mask))
            families.append(Family(f"{prefix}/lstm_{i}", lstm.units, members, ("layer_pred_hidden", i)))
        return families

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            embed_dim=self.embed_dim,
            hidden=self.hidden_sizes if len(set(self.hidden_sizes)) > 1 else self.hidden,
            num_layers=self.num_layers,
            dropout=self.dropout,
        )
        return config

"""Transducer: streaming transformer encoder + LSTM predictor + joiner, built from a model ConfigDict.

Dimension key: B batch, T feature frames (10 ms), T' encoder frames (40 ms), U labels, D d_model,
P pred_hidden, V vocab, CF chunk_frames, LA lookahead_frames.

Streaming contract (``encode_chunk``): zero-pad the utterance's features ``[T, 80]`` to ``n*CF + LA`` frames
(``n = ceil(T/CF)``, at least 1); call ``c`` (0-based) feeds frames ``[c*CF, c*CF + CF + LA)``, i.e. CF new
frames plus the LA lookahead frames that are fed again at the start of the next call. The first call gets
frames ``[0, CF+LA)`` with ``encoder_initial_state``; the last call's window ends with the zero padding. The
concatenated outputs (``n*chunk_enc`` frames) equal ``encode`` on the same utterance; the first
``ceil(T/4)`` of them are valid. Usage::

    model = build_model(omni_tf.configs.model.get_preset("tiny"))

Per-layer widths (a sliced structured tier, ``omni_tf/sparsity/structured.py``): optional model config lists
``layer_num_heads``, ``layer_ff_dim``, ``layer_conv_channels`` (one entry per encoder block) and
``layer_pred_hidden`` (one per predictor layer) override ``num_heads``, ``ff_dim``, ``d_model`` (conv
channels) and ``pred_hidden`` per layer; the head width stays ``d_model // num_heads``. Usage continued::
    logits, logit_lengths = model(batch, training=True)     # batch: features, feature_lengths, tokens
    state = model.encoder_initial_state(1)
    enc, state = model.encode_chunk(window, state)           # window [1, CF+LA, 80]
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections
import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from omni_tf.layers.encoder import StreamingEncoder
from omni_tf.layers.joiner import Joiner
from omni_tf.layers.masked_dense import build_child
from omni_tf.layers.predictor import Predictor

FRAME_MS = 10  # feature hop; see omni_tf.configs.data


def _stream_geometry(cfg: Mapping) -> tuple[int, int]:
    """(chunk_enc, lookahead_frames) from chunk_ms / lookahead_ms; raises ValueError on misaligned values."""
    enc_ms = FRAME_MS * cfg["subsampling_factor"]
    if cfg["chunk_ms"] <= 0 or cfg["chunk_ms"] % enc_ms:
        raise ValueError(
            f"model config chunk_ms={cfg['chunk_ms']} must be a positive multiple of {enc_ms} ms"
        )
    if cfg["lookahead_ms"] < 0 or cfg["lookahead_ms"] % FRAME_MS:
        raise ValueError(
            f"model config lookahead_ms={cfg['lookahead_ms']} must be a multiple of {FRAME_MS} ms"
        )
    return cfg["chunk_ms"] // enc_ms, cfg["lookahead_ms"] // FRAME_MS


class Transducer(keras.Model):
    """RNN-T with a chunk-streaming encoder. ``model_config`` is a model preset (dict or ConfigDict)."""

    def __init__(self, model_config: Mapping, **kwargs):
        kwargs.setdefault("name", "transducer")
        super().__init__(**kwargs)
        cfg = (
            model_config.to_dict()
            if isinstance(model_config, ml_collections.ConfigDict)
            else dict(model_config)
        )
        self.model_config = cfg
        chunk_enc, lookahead = _stream_geometry(cfg)
        self.encoder = StreamingEncoder(
            cfg["num_mel_bins"],
            cfg["d_model"],
            cfg["num_layers"],
            cfg.get("layer_num_heads") or cfg["num_heads"],
            cfg.get("layer_ff_dim") or cfg["ff_dim"],
            chunk_enc,
            cfg["left_chunks"],
            lookahead,
            cfg["subsampling_factor"],
            cfg["conv_kernel"],
            cfg["dropout"],
            conv_pointwise=cfg.get("conv_pointwise", True),
            head_dim=cfg["d_model"] // cfg["num_heads"],
            conv_channels=cfg.get("layer_conv_channels"),
            name="encoder",
        )
        self.predictor = Predictor(
            cfg["vocab_size"],
            cfg["pred_embed_dim"],
            cfg.get("layer_pred_hidden") or cfg["pred_hidden"],
            cfg["pred_layers"],
            cfg["dropout"],
            name="predictor",
        )
        self.joiner = Joiner(
            cfg["d_model"], self.predictor.hidden, cfg["joint_dim"], cfg["vocab_size"], name="joiner"
        )

    # --- geometry -------------------------------------------------------------------------------------------
    @property
    def chunk_frames(self) -> int:
        return self.encoder.chunk_frames

    @property
    def lookahead_frames(self) -> int:
        return self.encoder.lookahead_frames

    @property
    def chunk_enc(self) -> int:
        return self.encoder.chunk_enc

    @property
    def vocab_size(self) -> int:
        return self.model_config["vocab_size"]

    def build(self, input_shape=None):
        build_child(self.encoder, None)
        build_child(self.predictor, (None, None))
        build_child(self.joiner, None)
        self.built = True

    # --- training path --------------------------------------------------------------------------------------
    def call(self, batch: Mapping[str, tf.Tensor], training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """batch: features [B,T,80], feature_lengths [B], tokens [B,U] -> (logits [B,T',U+1,V], [B])."""
        logits, enc_lengths, _ = self.forward(batch, training=training)
        return logits, enc_lengths

    def forward(self, batch: Mapping[str, tf.Tensor], training: bool = False
                ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``call`` that also returns the encoder output: (logits [B,T',U+1,V], enc_lengths [B],
        enc [B,T',D]); training-only heads (``omni_tf/losses/ctc.py``) read ``enc``."""
        enc, enc_lengths = self.encode(batch["features"], batch["feature_lengths"], training=training)
        pred = self.predictor_forward(batch["tokens"], training=training)
        return self.join(enc[:, :, None, :], pred[:, None, :, :]), enc_lengths, enc

    def encode(self, features: tf.Tensor, feature_lengths: tf.Tensor, training: bool = False):
        """features [B,T,80], lengths [B] -> (enc [B, ceil(T/CF)*chunk_enc, D], enc_lengths = ceil(len/4))."""
        return self.encoder(features, feature_lengths, training=training)

    def predictor_forward(self, labels: tf.Tensor, training: bool = False) -> tf.Tensor:
        """labels [B,U] -> [B, U+1, P] (blank 0 prepended as SOS)."""
        return self.predictor(labels, training=training)

    def join(self, enc: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
        """enc [B,T',1,D] + pred [B,1,U+1,P] -> [B,T',U+1,V], or [B,D] + [B,P] -> [B,V]; unnormalized."""
        return self.joiner(enc, pred)

    # --- streaming path -------------------------------------------------------------------------------------
    def encoder_initial_state(self, batch: int) -> dict[str, tf.Tensor]:
        return self.encoder.initial_state(batch)

    def encode_chunk(self, features_chunk: tf.Tensor, state: dict[str, tf.Tensor]):
        """features_chunk [B, CF+LA, 80], state -> (enc [B, chunk_enc, D], state). See module docstring."""
        return self.encoder.stream(features_chunk, state)

    def predictor_initial_state(self, batch: int) -> dict[str, tf.Tensor]:
        return self.predictor.initial_state(batch)

    def predictor_step(self, token: tf.Tensor, state: dict[str, tf.Tensor]):
        """token [B] int32 (0 = blank/SOS), state -> (pred [B,P], state)."""
        return self.predictor.step(token, state)

    def join_step(self, enc_frame: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
        """enc_frame [B,D], pred [B,P] -> log_probs [B,V]."""
        logits = self.joiner(enc_frame, pred)
        with tf.name_scope("output_log_softmax"):  # named: int8 export keeps it float (int8 saturates at -16)
            return tf.nn.log_softmax(logits, axis=-1)

    # --- sparsity interface ---------------------------------------------------------------------------------
    def _named_kernel_layers(self) -> list:
        return (
            self.encoder.named_kernels("encoder")
            + self.predictor.named_kernels("predictor", self.model_config["prune_embeddings"])
            + self.joiner.named_kernels("joiner")
        )

    def prunable_kernels(self) -> list[tuple[str, tf.Variable]]:
        """Every prunable weight matrix as (stable name, kernel variable [in, out])."""
        return [(name, layer.kernel) for name, layer in self._named_kernel_layers()]

    def kernel_masks(self) -> list[tuple[str, tf.Variable]]:
        """The masks of ``prunable_kernels()``, same order and names."""
        return [(name, layer.kernel_mask) for name, layer in self._named_kernel_layers()]

    def level_norms(self) -> list:
        """``[(name, LevelLayerNorm, producer kernel name)]``: every LayerNorm whose input comes from masked
        computation, with the prunable kernel whose level it takes under ``sparsity.per_level_norm``
        (``omni_tf/sparsity/level_norms.py`` states the rule)."""
        return self.encoder.level_norms("encoder")

    def unit_groups(self) -> list:
        """Structured unit groups (``omni_tf.sparsity.structured.Group``): per encoder block ``mhsa``
        (heads), ``conv`` (channels), ``ffn`` (hidden units), and ``decoder`` (predictor LSTM hidden units
        and joiner hidden units, one group: the joiner's predictor projection is sliced by both). Adds the
        conv modules' ``channel_mask`` variables (once): call it before building a checkpoint."""
        from omni_tf.sparsity.structured import Group  # noqa: PLC0415

        with self.distribute_strategy.scope():  # the conv channel masks are created here, like the model's
            encoder = self.encoder.unit_groups("encoder")
        decoder = (*self.predictor.unit_families("decoder", self.joiner.pred_proj),
                   self.joiner.unit_family("decoder"))
        return [*encoder, Group("decoder", decoder)]

    def unit_masks(self) -> list[tf.Variable]:
        """Layer masks over units that are not kernel masks (the conv modules' ``channel_mask``, once
        ``unit_groups()`` created them)."""
        return [b.conv.channel_mask for b in self.encoder.blocks
                if b.conv is not None and b.conv.channel_mask is not None]

    def get_config(self) -> dict:
        return {"model_config": dict(self.model_config), "name": self.name}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> Transducer:
        return cls(**config)


def build_model(model_config: Mapping, seed: int | None = None) -> Transducer:
    """The one model factory (train, evaluate, search, export); variables exist on return.

    ``seed``: when given, ``keras.utils.set_random_seed(seed)`` first, so the initial weights are the same in
    every run (``tf.random.set_seed`` alone leaves Keras initializers seeded per process, not per seed).
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = Transducer(model_config)
    build_child(model, None)
    return model


def count_params(model: Transducer) -> int:
    return int(sum(v.shape.num_elements() for v in model.trainable_variables))

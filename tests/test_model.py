"""Tests for omni_tf.model: streaming == full-utterance parity, contract shapes, masks, presets, configs."""

import inspect

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from omni_tf.configs import model as model_configs
from omni_tf.model import Transducer, build_model, count_params


def small_config(**overrides):
    c = model_configs.tiny()
    c.d_model, c.num_layers, c.num_heads, c.ff_dim, c.conv_kernel = 16, 2, 2, 32, 5
    c.vocab_size, c.pred_embed_dim, c.pred_hidden, c.joint_dim, c.dropout = 11, 8, 12, 10, 0.0
    for key, value in overrides.items():
        setattr(c, key, value)
    return c


def stream_encode(model, features, length):
    """Feeds one utterance [1,T,80] through encode_chunk as documented in omni_tf.model."""
    cf, la = model.chunk_frames, model.lookahead_frames
    padded = model.encoder.pad_features(features, tf.constant([length]))
    state = model.encoder_initial_state(1)
    encode_chunk = tf.function(model.encode_chunk)  # the export path runs it as a graph too
    outs = []
    for c in range((padded.shape[1] - la) // cf):
        enc, state = encode_chunk(padded[:, c * cf : c * cf + cf + la], state)
        assert enc.shape == (1, model.chunk_enc, model.model_config["d_model"])
        outs.append(enc)
    return tf.concat(outs, axis=1).numpy()


@pytest.mark.parametrize(
    "chunk_ms,lookahead_ms,left_chunks,conv_pointwise",
    [(40, 0, 1, True), (80, 30, 2, True), (160, 40, 1, False), (120, 40, 3, True)],
)
def test_streaming_equals_full_utterance(chunk_ms, lookahead_ms, left_chunks, conv_pointwise):
    model = build_model(
        small_config(
            chunk_ms=chunk_ms,
            lookahead_ms=lookahead_ms,
            left_chunks=left_chunks,
            conv_pointwise=conv_pointwise,
        )
    )
    rng = np.random.default_rng(chunk_ms)
    lengths = [97, 64, 13]  # not multiples of the chunk, a multiple of 16, shorter than one 160 ms chunk
    features = tf.constant(rng.normal(size=[3, 97, 80]), tf.float32)
    full, enc_lengths = model.encode(features, tf.constant(lengths))
    full = full.numpy()
    np.testing.assert_array_equal(enc_lengths.numpy(), [(n + 3) // 4 for n in lengths])
    for b, n in enumerate(lengths):
        streamed = stream_encode(model, features[b : b + 1], n)
        valid = (n + 3) // 4
        assert streamed.shape[1] >= valid
        np.testing.assert_allclose(streamed[0, :valid], full[b, :valid], atol=1e-4)


def test_stream_state_matters():
    """A reset cache in the middle changes the output (the parity test is not vacuous)."""
    model = build_model(small_config(chunk_ms=40, lookahead_ms=0, left_chunks=2))
    x = tf.random.normal([1, 16, 80], seed=1)
    state = model.encoder_initial_state(1)
    _, state = model.encode_chunk(x[:, :4], state)
    carried, _ = model.encode_chunk(x[:, 4:8], state)
    reset, _ = model.encode_chunk(x[:, 4:8], model.encoder_initial_state(1))
    assert np.abs(carried.numpy() - reset.numpy()).max() > 1e-3


def test_encode_chunk_rejects_wrong_window():
    model = build_model(small_config())
    with pytest.raises(ValueError, match="feature frames"):
        model.encode_chunk(tf.zeros([1, model.chunk_frames, 80]), model.encoder_initial_state(1))


def test_call_shapes_and_heads_agree():
    model = build_model(small_config())
    batch = {
        "features": tf.random.normal([2, 50, 80], seed=2),
        "feature_lengths": tf.constant([50, 21]),
        "tokens": tf.constant([[3, 4, 5], [6, 0, 0]]),
        "token_lengths": tf.constant([3, 1]),
    }
    logits, logit_lengths = model(batch, training=False)
    assert logits.shape == (2, 16, 4, 11)  # ceil(50/16)=4 chunks of 4 encoder frames
    np.testing.assert_array_equal(logit_lengths.numpy(), [13, 6])
    enc, _ = model.encode(batch["features"], batch["feature_lengths"])
    pred = model.predictor_forward(batch["tokens"])
    state = model.predictor_initial_state(2)
    p0, state = model.predictor_step(tf.zeros([2], tf.int32), state)
    p1, _ = model.predictor_step(batch["tokens"][:, 0], state)
    np.testing.assert_allclose(p1.numpy(), pred[:, 1].numpy(), atol=1e-5)
    log_probs = model.join_step(enc[:, 5], p0).numpy()
    np.testing.assert_allclose(log_probs, tf.nn.log_softmax(logits[:, 5, 0]).numpy(), atol=1e-4)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-5)


def test_dropout_only_in_training():
    model = build_model(small_config(dropout=0.5))
    x = tf.random.normal([1, 20, 80], seed=3)
    a, _ = model.encode(x, tf.constant([20]))
    b, _ = model.encode(x, tf.constant([20]))
    c, _ = model.encode(x, tf.constant([20]), training=True)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(a.numpy() - c.numpy()).max() > 1e-3


def test_prunable_kernels_names_and_masks():
    model = build_model(small_config(pred_layers=2))
    kernels, masks = model.prunable_kernels(), model.kernel_masks()
    names = [n for n, _ in kernels]
    assert names == [n for n, _ in masks] and len(set(names)) == len(names)
    assert names[0] == "encoder/subsampling/proj"
    for name in (
        "encoder/block_1/mhsa/query",
        "encoder/block_0/mhsa/output",
        "encoder/block_0/conv/pointwise_in",
        "encoder/block_1/ffn/dense_out",
        "predictor/lstm_1/recurrent",
        "predictor/lstm_0/input",
        "joiner/enc_proj",
        "joiner/pred_proj",
        "joiner/output",
    ):
        assert name in names, name
    assert "predictor/embedding" not in names
    for (_, k), (_, m) in zip(kernels, masks, strict=True):
        assert k.shape == m.shape and k.trainable and not m.trainable
    # every weight matrix of the model is prunable; the rest are biases, norms, depthwise conv, embedding
    listed = {id(k) for _, k in kernels} | {id(model.predictor.embedding.kernel)}
    assert [v.shape for v in model.trainable_variables if v.shape.rank == 2 and id(v) not in listed] == []
    assert build_model(small_config(pred_layers=2)).prunable_kernels()[5][0] == names[5]
    with_emb = build_model(small_config(prune_embeddings=True))
    assert "predictor/embedding" in [n for n, _ in with_emb.prunable_kernels()]


def test_zero_mask_equals_zero_kernel():
    model = build_model(small_config())
    batch = {
        "features": tf.random.normal([1, 30, 80], seed=4),
        "feature_lengths": tf.constant([30]),
        "tokens": tf.constant([[2, 3]]),
    }
    chosen = {
        "encoder/block_0/mhsa/value",
        "encoder/block_1/ffn/dense_in",
        "joiner/pred_proj",
        "predictor/lstm_0/input",
    }
    for name, mask in model.kernel_masks():
        if name in chosen:
            mask.assign(tf.zeros_like(mask))
    masked, _ = model(batch)
    for (name, kernel), (_, mask) in zip(model.prunable_kernels(), model.kernel_masks(), strict=True):
        if name in chosen:
            mask.assign(tf.ones_like(mask))
            kernel.assign(tf.zeros_like(kernel))
    zeroed, _ = model(batch)
    np.testing.assert_allclose(masked.numpy(), zeroed.numpy(), atol=1e-6)


def test_config_round_trip():
    model = build_model(small_config())
    config = model.get_config()
    assert set(inspect.signature(Transducer.__init__).parameters) - {"self", "kwargs"} <= set(config)
    clone = Transducer.from_config(config)
    clone.build()
    assert clone.get_config() == config
    assert [n for n, _ in clone.prunable_kernels()] == [n for n, _ in model.prunable_kernels()]


def test_bad_geometry_raises():
    with pytest.raises(ValueError, match="chunk_ms"):
        build_model(small_config(chunk_ms=100))
    with pytest.raises(ValueError, match="lookahead_ms"):
        build_model(small_config(lookahead_ms=15))


@pytest.mark.parametrize(
    "preset,low,high", [("tiny", 2e6, 4e6), ("small", 8e6, 12e6), ("base", 25e6, 35e6), ("paper", 65e6, 85e6)]
)
def test_presets_build(preset, low, high):
    config = model_configs.get_preset(preset)
    model = build_model(config)
    assert low <= count_params(model) <= high
    assert model.chunk_frames == config.chunk_ms // 10 and model.lookahead_frames == config.lookahead_ms // 10
    if preset == "tiny":
        batch = {
            "features": tf.zeros([1, 40, 80]),
            "feature_lengths": tf.constant([40]),
            "tokens": tf.constant([[5]]),
        }
        logits, _ = model(batch)
        assert logits.shape == (1, 12, 2, config.vocab_size)


def test_transducer_overrides_only_keras_model_hooks():
    """Transducer's own methods never shadow a keras.Model API (``predict`` / ``predict_step`` once did:
    ``model.predict(dataset)`` then ran the predictor network instead of Keras inference)."""
    hooks = {"__init__", "__doc__", "__module__", "build", "call", "get_config", "from_config"}
    assert {n for n in vars(Transducer) if hasattr(keras.Model, n)} <= hooks


def test_build_model_with_a_seed_has_the_same_weights_every_time():
    cfg = model_configs.get_preset("tiny")
    cfg.num_layers, cfg.d_model, cfg.ff_dim, cfg.vocab_size = 1, 32, 64, 16
    first = [v.numpy() for v in build_model(cfg, seed=5).trainable_variables]
    tf.random.set_seed(5)  # what benchmarks/overfit.py did: it leaves the Keras initializers' draws free
    build_model(cfg)
    again = [v.numpy() for v in build_model(cfg, seed=5).trainable_variables]
    other = [v.numpy() for v in build_model(cfg, seed=6).trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))

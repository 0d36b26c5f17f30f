"""Tests for omni_tf.layers: config round trips, masks, reference values, stream == call per layer."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.layers.attention import ChunkedMultiHeadAttention, chunk_mask
from omni_tf.layers.encoder import StreamingEncoder
from omni_tf.layers.joiner import Joiner
from omni_tf.layers.masked_dense import MaskedDense
from omni_tf.layers.predictor import MaskedEmbedding, MaskedLSTM, Predictor
from omni_tf.layers.subsampling import StackingSubsampling, stack_frames
from omni_tf.layers.transformer import CausalConvModule, FeedForward, TransformerBlock

LAYERS = [
    (MaskedDense, dict(units=5, use_bias=False, activation="relu", kernel_initializer="zeros")),
    (StackingSubsampling, dict(d_model=8, factor=4, lookahead_frames=3, dropout=0.2)),
    (ChunkedMultiHeadAttention, dict(d_model=8, num_heads=2, chunk_size=3, left_chunks=2, dropout=0.1)),
    (FeedForward, dict(d_model=8, ff_dim=16, dropout=0.1)),
    (CausalConvModule, dict(d_model=8, kernel_size=5, pointwise=False)),
    (
        TransformerBlock,
        dict(
            d_model=8,
            num_heads=2,
            ff_dim=16,
            chunk_size=2,
            left_chunks=1,
            conv_kernel=3,
            conv_pointwise=False,
            dropout=0.3,
        ),
    ),
    (
        StreamingEncoder,
        dict(
            num_mel_bins=6,
            d_model=8,
            num_layers=2,
            num_heads=2,
            ff_dim=16,
            chunk_enc=2,
            left_chunks=1,
            lookahead_frames=2,
            subsampling_factor=4,
            conv_kernel=3,
            dropout=0.0,
            conv_pointwise=True,
        ),
    ),
    (MaskedEmbedding, dict(vocab_size=7, embed_dim=3)),
    (MaskedLSTM, dict(units=6)),
    (Predictor, dict(vocab_size=7, embed_dim=4, hidden=6, num_layers=2, dropout=0.1)),
    (Joiner, dict(enc_dim=8, pred_dim=6, joint_dim=5, vocab_size=7)),
]


@pytest.mark.parametrize("cls,kwargs", LAYERS, ids=[c.__name__ for c, _ in LAYERS])
def test_config_round_trip(cls, kwargs):
    layer = cls(**kwargs, name="x")
    config = layer.get_config()
    for key, value in kwargs.items():
        assert config[key] == value, key
    init_args = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    assert init_args <= set(config), init_args - set(config)
    assert cls.from_config(config).get_config() == config


def test_masked_dense_mask_zeroes_contributions():
    layer = MaskedDense(4, use_bias=True)
    x = tf.random.normal([3, 2, 5], seed=1)
    layer(x)
    assert layer.kernel_mask.trainable is False
    assert layer.kernel_mask.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA
    np.testing.assert_array_equal(layer.kernel_mask.numpy(), np.ones([5, 4]))
    layer.bias.assign(tf.range(4, dtype=tf.float32))
    mask = np.ones([5, 4], np.float32)
    mask[1, :] = 0
    mask[:, 2] = 0
    layer.kernel_mask.assign(mask)
    expected = np.einsum("abi,io->abo", x.numpy(), layer.kernel.numpy() * mask) + np.arange(4)
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)
    layer.kernel_mask.assign(np.zeros([5, 4], np.float32))
    np.testing.assert_allclose(layer(x).numpy(), np.broadcast_to(np.arange(4.0), [3, 2, 4]))


def test_masked_dense_rejects_bad_units():
    with pytest.raises(ValueError, match="units"):
        MaskedDense(0)


def test_stack_frames_reference():
    x = tf.reshape(tf.range(2 * 11 * 1, dtype=tf.float32), [2, 11, 1])  # T = 4*2 + 3
    y = stack_frames(x, factor=4, window=7).numpy()
    assert y.shape == (2, 2, 7)
    np.testing.assert_array_equal(y[0, 0], np.arange(0, 7))
    np.testing.assert_array_equal(y[0, 1], np.arange(4, 11))
    np.testing.assert_array_equal(y[1, 1], np.arange(15, 22))


def test_chunk_mask_reference():
    m = chunk_mask(tf.constant(6), chunk_size=2, left_chunks=1).numpy()
    expected = np.array(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
        ],
        np.float32,
    )
    np.testing.assert_array_equal(m, expected)


def _stream_all(layer, x, chunk):
    """Runs ``layer.stream`` chunk by chunk (the layer must already be built by a ``call``)."""
    assert layer.built
    state = layer.initial_state(x.shape[0])
    outs = []
    for start in range(0, x.shape[1], chunk):
        y, state = layer.stream(x[:, start : start + chunk], state)
        outs.append(y)
    return tf.concat(outs, axis=1).numpy()


@pytest.mark.parametrize("left_chunks", [0, 1, 3])
def test_attention_stream_equals_call(left_chunks):
    layer = ChunkedMultiHeadAttention(8, 2, chunk_size=3, left_chunks=left_chunks)
    x = tf.random.normal([2, 15, 8], seed=2)
    y = layer(x).numpy()
    np.testing.assert_allclose(_stream_all(layer, x, 3), y, atol=1e-5)


def test_attention_is_chunk_causal():
    layer = ChunkedMultiHeadAttention(8, 2, chunk_size=3, left_chunks=1)
    x = tf.random.normal([1, 12, 8], seed=3)
    x2 = tf.concat([x[:, :6], x[:, 6:] + 1.0], axis=1)  # change chunks 2, 3
    y, y2 = layer(x).numpy(), layer(x2).numpy()
    np.testing.assert_allclose(y[:, :6], y2[:, :6], atol=1e-6)
    assert np.abs(y[:, 6:] - y2[:, 6:]).max() > 1e-3
    x3 = tf.concat([x[:, :3] + 1.0, x[:, 3:]], axis=1)  # chunk 0 is out of chunk 2's left context
    np.testing.assert_allclose(layer(x3).numpy()[:, 6:], y[:, 6:], atol=1e-6)


@pytest.mark.parametrize("pointwise", [True, False])
def test_conv_module_stream_equals_call_and_is_causal(pointwise):
    layer = CausalConvModule(8, kernel_size=4, pointwise=pointwise)
    x = tf.random.normal([2, 10, 8], seed=4)
    y = layer(x).numpy()
    np.testing.assert_allclose(_stream_all(layer, x, 2), y, atol=1e-5)
    x2 = tf.concat([x[:, :5], x[:, 5:] * 2.0], axis=1)
    np.testing.assert_allclose(layer(x2).numpy()[:, :5], y[:, :5], atol=1e-6)


def test_transformer_block_stream_equals_call():
    layer = TransformerBlock(8, 2, 16, chunk_size=2, left_chunks=2, conv_kernel=3, dropout=0.0)
    x = tf.random.normal([2, 12, 8], seed=5)
    y = layer(x).numpy()
    np.testing.assert_allclose(_stream_all(layer, x, 2), y, atol=1e-5)


def test_lstm_step_equals_scan():
    lstm = MaskedLSTM(6)
    x = tf.random.normal([2, 5, 3], seed=6)
    seq = lstm(x).numpy()
    h = c = tf.zeros([2, 6])
    for t in range(5):
        h, c = lstm.step(x[:, t], h, c)
        np.testing.assert_allclose(h.numpy(), seq[:, t], atol=1e-5)


def test_predictor_prepends_sos_and_step_matches():
    pred = Predictor(vocab_size=7, embed_dim=4, hidden=6, num_layers=2)
    labels = tf.constant([[3, 5, 2], [1, 4, 6]])
    seq = pred(labels).numpy()
    assert seq.shape == (2, 4, 6)
    state = pred.initial_state(2)
    tokens = tf.concat([tf.zeros([2, 1], tf.int32), labels], axis=1)
    for u in range(4):
        out, state = pred.step(tokens[:, u], state)
        np.testing.assert_allclose(out.numpy(), seq[:, u], atol=1e-5)


def test_predictor_recurrent_mask_zeroes_contributions():
    pred = Predictor(vocab_size=7, embed_dim=4, hidden=6, num_layers=1)
    labels = tf.constant([[3, 5, 2]])
    pred(labels)
    lstm = pred.lstms[0]
    lstm.recurrent.kernel_mask.assign(tf.zeros_like(lstm.recurrent.kernel))
    masked = pred(labels).numpy()
    lstm.recurrent.kernel_mask.assign(tf.ones_like(lstm.recurrent.kernel))
    lstm.recurrent.kernel.assign(tf.zeros_like(lstm.recurrent.kernel))
    np.testing.assert_allclose(masked, pred(labels).numpy(), atol=1e-6)


def test_joiner_broadcast_equals_pointwise():
    joiner = Joiner(enc_dim=8, pred_dim=6, joint_dim=5, vocab_size=7)
    enc, pred = tf.random.normal([2, 3, 8], seed=7), tf.random.normal([2, 4, 6], seed=8)
    grid = joiner(enc[:, :, None], pred[:, None]).numpy()
    assert grid.shape == (2, 3, 4, 7)
    np.testing.assert_allclose(joiner(enc[:, 2], pred[:, 1]).numpy(), grid[:, 2, 1], atol=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="divisible"):
        ChunkedMultiHeadAttention(10, 3, 2, 1)
    with pytest.raises(ValueError, match="kernel_size"):
        CausalConvModule(8, 0)
    with pytest.raises(ValueError, match="num_layers"):
        Predictor(7, 4, 6, num_layers=0)


@pytest.mark.parametrize("shift", [0.0, -1e4, -1e6])
def test_masked_softmax_is_exact(shift):
    from omni_tf.layers.attention import masked_softmax

    # shift: every score very negative (allowed ones included); masked keys still get exactly 0
    scores = tf.constant([[-80.0, -75.0, 60.0, 3.0], [5.0, 100.0, -2.0, 0.0]]) + shift
    allowed = tf.constant([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0]])
    probs = masked_softmax(scores, allowed).numpy()
    s64, keep = scores.numpy().astype(np.float64), allowed.numpy() > 0
    ref = np.zeros_like(s64)
    for r in range(2):  # softmax over the allowed keys only
        e = np.exp(s64[r, keep[r]] - s64[r, keep[r]].max())
        ref[r, keep[r]] = e / e.sum()
    np.testing.assert_allclose(probs, ref, rtol=1e-5, atol=1e-7)
    assert probs[0, 2] == 0.0 and probs[0, 3] == 0.0 and probs[1, 1] == 0.0  # exactly 0, even at 60/100

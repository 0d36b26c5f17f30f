"""Tests for omni_tf.decoding: streaming greedy == offline greedy, beam >= greedy, scores, detokenize."""

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf import decoding
from omni_tf.configs import model as model_configs
from omni_tf.model import build_model


def small_model(vocab_size=6, output_scale=1.0, seed=0, **overrides):
    tf.keras.utils.set_random_seed(seed)  # fixed weights: the beam-vs-greedy margin is a property of them
    c = model_configs.tiny()
    c.d_model, c.num_layers, c.num_heads, c.ff_dim, c.conv_kernel = 16, 2, 2, 32, 5
    c.vocab_size, c.pred_embed_dim, c.pred_hidden, c.joint_dim, c.dropout = vocab_size, 8, 12, 10, 0.0
    for key, value in overrides.items():
        setattr(c, key, value)
    model = build_model(c)
    kernel = model.joiner.output_dense.kernel
    kernel.assign(kernel * output_scale)
    return model


@pytest.fixture(scope="module")
def model():
    return small_model(chunk_ms=80, lookahead_ms=40, left_chunks=1)


FEATURES = tf.constant(np.random.default_rng(11).standard_normal((3, 70, 80)), tf.float32)
LENGTHS = tf.constant([70, 41, 9])


def test_streaming_greedy_equals_offline_greedy(model):
    offline = decoding.greedy_search(model, FEATURES, LENGTHS, max_symbols_per_frame=2)
    assert sum(len(h) for h in offline) > 5  # a random model emits plenty; the comparison is not vacuous
    for b in range(3):
        n = int(LENGTHS[b])
        assert (
            decoding.streaming_greedy_search(model, FEATURES[b : b + 1, :n], max_symbols_per_frame=2)
            == offline[b]
        )


def test_greedy_batch_equals_single(model):
    batched = decoding.greedy_search(model, FEATURES, LENGTHS)
    single = decoding.greedy_search(model, FEATURES[1:2, :41], LENGTHS[1:2])
    assert single[0] == batched[1]


def test_greedy_score_is_sum_of_chosen_log_probs(model):
    hyps, scores = decoding.greedy_search(
        model, FEATURES[2:3, :9], LENGTHS[2:3], max_symbols_per_frame=1, return_scores=True
    )
    enc, enc_lengths = model.encode(FEATURES[2:3, :9], LENGTHS[2:3])
    pred, state = model.predictor_step(tf.zeros([1], tf.int32), model.predictor_initial_state(1))
    total, tokens = 0.0, []
    for t in range(int(enc_lengths[0])):  # reference: plain python greedy, one symbol per frame
        log_probs = model.join_step(enc[:, t], pred).numpy()[0]
        k = int(log_probs.argmax())
        total += log_probs[k]
        if k != 0:
            tokens.append(k)
            pred, state = model.predictor_step(tf.constant([k]), state)
    assert hyps[0] == tokens
    np.testing.assert_allclose(scores[0], total, rtol=1e-5)


def test_beam_log_prob_at_least_greedy():
    flat = small_model(output_scale=0.3, chunk_ms=80, lookahead_ms=40)  # flat posteriors: real search
    greedy, greedy_scores = decoding.greedy_search(
        flat, FEATURES, LENGTHS, max_symbols_per_frame=1, return_scores=True
    )
    hyps, beam_scores = decoding.beam_search(flat, FEATURES, LENGTHS, beam=4)
    assert len(hyps) == 3 and all(all(t > 0 for t in h) for h in hyps)
    assert np.all(beam_scores >= greedy_scores - 1e-4), (beam_scores, greedy_scores)
    assert np.any(beam_scores > greedy_scores + 1e-3)  # merging/search finds strictly better on a flat model
    one, one_scores = decoding.beam_search(flat, FEATURES[2:3, :9], LENGTHS[2:3], beam=1)
    assert one[0] == greedy[2]  # beam 1 is greedy with one symbol per frame
    np.testing.assert_allclose(one_scores[0], greedy_scores[2], atol=1e-4)


def test_bad_inputs_raise(model):
    with pytest.raises(ValueError, match="beam"):
        decoding.beam_search(model, FEATURES, LENGTHS, beam=0)
    with pytest.raises(ValueError, match=r"\[1, T, 80\]"):
        decoding.streaming_greedy_search(model, FEATURES)


def test_detokenize_uses_decode():
    class Fake:
        def decode(self, ids):
            return "-".join(map(str, ids))

    assert decoding.detokenize(Fake(), [[3, 4], []]) == ["3-4", ""]

"""omni_tf.training.distill: the student loss of every mode against a numpy hand computation, and a train
step whose student row is that loss."""
import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.losses.rnnt import rnnt_loss
from omni_tf.training import distill, loop, sources
from omni_tf.training.step import TrainStep
from tests.training_helpers import tiny_config


def _np_kl(student, teacher):
    p = np.exp(teacher) / np.exp(teacher).sum(-1, keepdims=True)
    q = np.exp(student) / np.exp(student).sum(-1, keepdims=True)
    return (p * (np.log(p) - np.log(q))).sum(-1)


@pytest.mark.parametrize("mode,weight,norm", [("add", 0.5, "nodes"), ("replace", 2.0, "sequence"),
                                              ("mix", 0.25, "sequence")])
def test_student_loss_matches_numpy(mode, weight, norm):
    rng = np.random.default_rng(3)
    s_join, t_join = rng.standard_normal((2, 2, 2, 2, 3)).astype(np.float32)  # [B=2, T'=2, U+1=2, V=3] each
    s_ctc, t_ctc = rng.standard_normal((2, 2, 2, 3)).astype(np.float32)  # [B, T', V]
    label = np.array([4.0, 7.0], np.float32)
    t_len, u_len = np.array([2, 1]), np.array([1, 0])
    got = distill.student_loss(label, (s_join, s_ctc), (t_join, t_ctc), t_len, u_len, mode, weight, norm,
                               ctc_weight=0.3).numpy()
    kl, fkl = _np_kl(s_join, t_join), _np_kl(s_ctc, t_ctc)
    # Valid lattice nodes: utterance 0 has t < 2, u <= 1 (4 nodes); utterance 1 has t < 1, u <= 0 (1 node).
    node_mean = np.array([kl[0].mean(), kl[1, 0, 0]])
    frame_mean = np.array([fkl[0].mean(), fkl[1, 0]])
    if norm == "sequence":
        node_mean, frame_mean = node_mean * (t_len + u_len), frame_mean * t_len
    kd = node_mean + 0.3 * frame_mean
    label_w = {"add": 1.0, "replace": 0.0, "mix": 1.0 - weight}[mode]
    np.testing.assert_allclose(got, label_w * label + weight * kd, rtol=1e-5)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="distill_mode"):
        distill.check("swap", 0.1, "nodes")
    with pytest.raises(ValueError, match="mix wants"):
        distill.check("mix", 1.5, "nodes")
    with pytest.raises(ValueError, match="distill_norm"):
        distill.check("add", 0.1, "frames")


def test_replace_step_student_learns_only_from_teacher():
    config = tiny_config("omni")
    strategy = loop.make_strategy(config.training)
    state = loop.TrainState(config, strategy)
    state.masks.update_rankings(state.masks.levels)
    batch = sources.RandomFeatureSource(16, batch_size=2).batch(0, 0)
    feed = {k: tf.constant(v) for k, v in batch.items()}
    n = state.masks.num_kernels
    state.masks.apply_levels(tf.zeros([n], tf.int32))
    teacher, lengths = state.model(feed, training=True)
    dense_loss = rnnt_loss(teacher, feed["tokens"], lengths, feed["token_lengths"])
    state.masks.apply_levels(tf.fill([n], 2))
    student, _ = state.model(feed, training=True)
    kd = distill.distillation_kl(student, teacher, lengths, feed["token_lengths"])
    fn = TrainStep(state.model, state.optimizer, strategy, rnnt_loss, state.counters, state.masks,
                   distill_weight=0.7, distill_mode="replace")
    ds = tf.data.Dataset.from_tensors(feed)
    out = fn([next(iter(strategy.experimental_distribute_dataset(ds)))],
             np.array([[0] * n, [2] * n], np.int32))
    want = [float(tf.reduce_mean(dense_loss)), 0.7 * float(tf.reduce_mean(kd))]
    np.testing.assert_allclose(out["subnet_loss"].numpy(), want, rtol=1e-4)

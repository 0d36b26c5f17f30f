"""omni_tf.losses.ctc: the loss against a brute-force path sum, infeasible utterances, and that the auxiliary
head is training-only (exported tiers are identical with and without it)."""
import itertools
import os

import numpy as np
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.losses.ctc import CtcHead, ctc_loss, min_frames
from omni_tf.losses.rnnt import rnnt_loss
from omni_tf.supernet import Supernet
from omni_tf.training import loop, sources
from omni_tf.training.checkpoint import CheckpointKeeper
from omni_tf.training.step import TrainStep
from tests.training_helpers import tiny_config
from tflite_export import convert, inference_model


def _brute_force_nll(logits: np.ndarray, labels: list[int]) -> float:
    """-log P(labels): every frame path enumerated and collapsed (repeats merged, then blanks removed)."""
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    total = 0.0
    for path in itertools.product(range(logits.shape[1]), repeat=logits.shape[0]):
        collapsed = [k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k)]
        if collapsed == labels:
            total += np.prod([probs[t, k] for t, k in enumerate(path)])
    return -np.log(total)


def test_ctc_loss_matches_path_enumeration_and_masks_infeasible():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 4, 3)).astype(np.float32)  # B=3, T'=4, V=3 (blank 0)
    tokens = np.array([[1, 2, 0], [2, 2, 0], [1, 2, 1]], np.int32)
    token_lengths = np.array([2, 2, 3], np.int32)
    logit_lengths = np.array([4, 3, 4], np.int32)
    np.testing.assert_array_equal(min_frames(tokens, token_lengths).numpy(), [2, 3, 3])
    loss, bad = ctc_loss(logits, logit_lengths, tokens, token_lengths)
    want = [_brute_force_nll(logits[0], [1, 2]), _brute_force_nll(logits[1, :3], [2, 2]),
            _brute_force_nll(logits[2], [1, 2, 1])]
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-5)
    assert not bad.numpy().any()
    # [2, 2] needs 3 frames (a blank between the repeats): with 2 the loss is masked to 0, gradient finite.
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss, bad = ctc_loss(x, np.array([4, 2, 4], np.int32), tokens, token_lengths)
        total = tf.reduce_sum(loss)
    np.testing.assert_array_equal(bad.numpy(), [False, True, False])
    assert loss.numpy()[1] == 0.0
    grad = tape.gradient(total, x).numpy()
    assert np.isfinite(grad).all() and np.all(grad[1] == 0.0)


def _state(ctc_weight: float):
    config = tiny_config("omni")
    config.training.ctc_weight = ctc_weight
    strategy = loop.make_strategy(config.training)
    return config, strategy, loop.TrainState(config, strategy)


def _dist(strategy, batch):
    ds = tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in batch.items()})
    return next(iter(strategy.experimental_distribute_dataset(ds)))


def test_step_loss_is_rnnt_plus_weighted_ctc_and_head_learns():
    config, strategy, state = _state(0.3)
    head_names = {v.name for v in state.ctc_head.trainable_variables}
    assert head_names and not head_names & {v.name for _, v in state.model.prunable_kernels()}
    assert not head_names & {v.name for _, v in state.model.kernel_masks()}
    assert state.masks.num_kernels == len(state.model.prunable_kernels())
    batch = sources.RandomFeatureSource(16, batch_size=3, min_frames=60, max_frames=90).batch(0, 0)
    feed = {k: tf.constant(v) for k, v in batch.items()}
    logits, lengths, enc = state.model.forward(feed, training=True)
    rnnt = rnnt_loss(logits, feed["tokens"], lengths, feed["token_lengths"])
    ctc, _ = ctc_loss(state.ctc_head(enc), lengths, feed["tokens"], feed["token_lengths"])
    want = float(tf.reduce_mean(rnnt + 0.3 * ctc))
    before = [v.numpy().copy() for v in state.ctc_head.trainable_variables]
    fn = TrainStep(state.model, state.optimizer, strategy, rnnt_loss, state.counters, state.masks,
                   ctc_head=state.ctc_head, ctc_weight=state.ctc_weight)
    out = fn([_dist(strategy, batch)], np.zeros([1, state.masks.num_kernels], np.int32))
    assert bool(out["applied"]) and float(out["ctc_infeasible"]) == 0.0
    np.testing.assert_allclose(float(out["loss"]), want, rtol=1e-4)
    after = [v.numpy() for v in state.ctc_head.trainable_variables]
    assert not all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_exported_tier_is_identical_with_and_without_ctc_head(tmp_path):
    modules = {}
    reference = None
    for name, weight in (("with", 0.3), ("without", 0.0)):
        config, strategy, state = _state(weight)
        assert (state.ctc_head is not None) == (weight > 0)
        if reference is None:
            reference = state.model.get_weights()
        state.model.set_weights(reference)
        state.masks.update_rankings(state.masks.levels)
        workdir = str(tmp_path / name)
        CheckpointKeeper(workdir, state.trackables(), 1, strategy).save(1)
        keys = tf.train.load_checkpoint(os.path.join(workdir, "ckpt")).get_variable_to_shape_map()
        assert any(k.startswith("ctc_head/") for k in keys) == (weight > 0)
        restored = Supernet(config)  # the export's restore path (ignores the training-only head)
        restored.restore(workdir)
        modules[name] = inference_model.bake_supernet(restored, 1).module
    a, b = modules["with"], modules["without"]
    assert a.describe() == b.describe()
    rng = np.random.default_rng(1)
    layout = a.describe()
    chunk = rng.standard_normal([1, a.input_frames, layout["num_mel_bins"]]).astype(np.float32)
    caches = [tf.zeros(s["shape"]) for s in layout["encoder_state"]]
    for key, value in a.encode(chunk, *caches).items():
        np.testing.assert_array_equal(value.numpy(), b.encode(chunk, *caches)[key].numpy())
    files = {k: convert.convert_module(m, "float32", sparse="never").content for k, m in modules.items()}
    runners = {k: convert.make_interpreter(c) for k, c in files.items()}
    assert runners["with"].get_signature_list() == runners["without"].get_signature_list()
    for sig in runners["with"].get_signature_list():
        ra, rb = runners["with"].get_signature_runner(sig), runners["without"].get_signature_runner(sig)
        feeds = {k: rng.standard_normal(d["shape"]).astype(d["dtype"]) if d["dtype"] == np.float32
                 else np.ones(d["shape"], d["dtype"]) for k, d in ra.get_input_details().items()}
        oa, ob = ra(**feeds), rb(**feeds)
        assert oa.keys() == ob.keys()
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k])


def test_ctc_head_config_round_trip():
    head = CtcHead(8, 5)
    again = CtcHead.from_config(head.get_config())
    assert (again.enc_dim, again.vocab_size) == (8, 5)


def test_training_warns_once_when_most_utterances_cannot_be_ctc_aligned():
    warnings = []
    original = loop.logging.warning
    loop.logging.warning = lambda msg, *args: warnings.append(msg % args)
    try:
        assert not loop._warn_ctc_infeasible(10, 100, 8)  # 10 %: at the threshold, no warning
        assert not warnings
        assert loop._warn_ctc_infeasible(82, 100, 8)
        assert not loop._warn_ctc_infeasible(0, 0, 4)  # nothing seen yet
    finally:
        loop.logging.warning = original
    assert len(warnings) == 1
    assert "82 of 100 utterances so far (82 %)" in warnings[0] and "one per 8 feature frames" in warnings[0]
    assert "training.ctc_weight=0" in warnings[0]


def test_training_loop_reports_the_infeasible_fraction_and_warns_early(tmp_path):
    warnings = []
    original = loop.logging.warning
    loop.logging.warning = lambda msg, *args: warnings.append(msg % args)
    try:
        results = {}
        # 4x subsampling: 8-12 feature frames give 2-3 encoder frames, too few for most 1-6 labels; 200+
        # frames are always enough for one label
        for name, frames, labels in (("short", (8, 12), 6), ("long", (200, 220), 1)):
            config = tiny_config("dense")
            config.training.ctc_weight, config.training.max_steps, config.training.log_every = 0.3, 2, 1
            source = sources.RandomFeatureSource(16, num_batches=2, min_frames=frames[0],
                                                 max_frames=frames[1], max_labels=labels)
            results[name] = loop.train(config, str(tmp_path / name), source)
            results[name + "_warnings"] = len(warnings)
    finally:
        loop.logging.warning = original
    short, long = results["short"], results["long"]
    assert short["ctc_infeasible_fraction"] == short["ctc_infeasible_utterances"] / 8 > 0.1
    assert long["ctc_infeasible_utterances"] == 0 and long["ctc_infeasible_fraction"] == 0.0
    early = [w for w in warnings if w.startswith("auxiliary CTC:")]
    assert len(early) == 1 and "one per 4 feature frames" in early[0]  # once, from the short run only
    assert results["short_warnings"] == results["long_warnings"]

